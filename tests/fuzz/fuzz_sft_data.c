/* libFuzzer target: SFT datasets. The first byte picks the options (template, format, seq, packing,
 * train_on_prompt, validation share), the rest is the file. Whatever is accepted must hold together: examples
 * no longer than seq, statistics that add up, and rows whose documents, positions and targets are
 * consistent, with every trained target inside its document. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/sft_data.h"
#include "fuzz_util.h"

#define S "\xE2\x96\x81" /* "▁" */

static cm_tokenizer *tiny(void) {
    static const char *const words[] = {S,
                                        "a",
                                        "e",
                                        "o",
                                        "s",
                                        S "a",
                                        "in",
                                        "###",
                                        ":",
                                        S "USER",
                                        S "ASSISTANT",
                                        "<|im_start|>",
                                        "<|im_end|>",
                                        "<|eot_id|>",
                                        "[INST]",
                                        "\n\n"};
    return fuzz_tiny_spm(words, (int)(sizeof words / sizeof words[0]), NULL, 1, 5);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static cm_tokenizer *tok;
    if (!tok) tok = tiny();
    if (size < 1) return 0;
    uint8_t k = data[0];
    cm_sft_options o;
    cm_sft_options_defaults(&o);
    o.template_id = (cm_template_id)(k % CM_TEMPLATE_COUNT);
    o.format = (cm_sft_format)((k / 6) % CM_SFT_FORMAT_COUNT);
    static const int seqs[] = {2, 7, 64, 300};
    o.seq = seqs[(k >> 5) & 3];
    o.no_packing = (k >> 7) & 1;
    o.train_on_prompt = (k % 7) == 0;
    o.val_frac = (k % 3) * 0.25;
    o.keep_status = (k % 11) == 0 ? "ok" : NULL;
    cm_sft_dataset *ds;
    if (cm_sft_open_buffer((const char *)data + 1, size - 1, "fuzz.json", tok, &o, &ds) != CM_OK) {
        if (!*cm_last_error()) __builtin_trap(); /* every failure explains itself */
        return 0;
    }
    const int T = cm_sft_seq(ds);
    const cm_sft_stats *all = cm_sft_stats_of(ds, CM_SFT_ALL);
    if (all->examples != cm_sft_examples(ds, CM_SFT_ALL) || all->examples == 0) __builtin_trap();
    if (all->records !=
        all->filtered + cm_sft_stats_of(ds, CM_SFT_TRAIN)->records + cm_sft_stats_of(ds, CM_SFT_VAL)->records)
        __builtin_trap();
    int32_t *tk = malloc((size_t)T * 4 * sizeof *tk), *tg = tk + T, *ps = tk + 2 * T, *dc = tk + 3 * T;
    uint8_t *tr = malloc((size_t)T);
    size_t tokens = 0;
    for (size_t i = 0; i < all->examples; i++) {
        size_t n = cm_sft_example(ds, CM_SFT_ALL, i, tk, tr, NULL);
        if (n == 0 || n > (size_t)T) __builtin_trap();
        tokens += n;
    }
    if (tokens != all->tokens) __builtin_trap();
    for (int sp = 0; sp < 2; sp++) {
        cm_sft_epoch *e;
        if (cm_sft_epoch_open(ds, (cm_sft_split)sp, 5, 1, &e) != CM_OK) __builtin_trap();
        size_t rows = cm_sft_epoch_rows(e), trained_sum = 0;
        if (rows != cm_sft_rows(ds, (cm_sft_split)sp)) __builtin_trap();
        for (size_t r = 0; r < rows; r++) {
            size_t trained;
            if (cm_sft_epoch_fill(e, r, 1, tk, tg, ps, dc, &trained) != CM_OK) __builtin_trap();
            trained_sum += trained;
            for (int t = 0; t < T; t++) {
                bool starts = t == 0 || dc[t] != dc[t - 1];
                if (starts ? ps[t] != 0 : ps[t] != ps[t - 1] + 1) __builtin_trap();
                if (tg[t] >= 0 && (t + 1 >= T || dc[t + 1] != dc[t] || tg[t] != tk[t + 1])) __builtin_trap();
            }
        }
        if (trained_sum != cm_sft_stats_of(ds, (cm_sft_split)sp)->trained_tokens) __builtin_trap();
        cm_sft_epoch_close(e);
    }
    free(tk);
    free(tr);
    cm_sft_close(ds);
    return 0;
}
