#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/chat.h"
#include "camelid/pool.h"
#include "camelid/sft_data.h"
#include "chat_messages.h"
#include "commands.h"

static const char *help =
    "usage: camelid template NAME [options] < messages.json\n"
    "       camelid template NAME --data FILE --tokenizer FILE [options]\n"
    "\n"
    "Print the prompt a chat template makes of an OpenAI-style message list\n"
    "[{\"role\": \"system\"|\"user\"|\"assistant\", \"content\": \"...\"}, ...], ending with the "
    "assistant's\n"
    "opening: exactly the text the model is fed (markers such as <s> or <|im_start|> spelled out).\n"
    "NAME is one of llama2, vicuna, alpaca, guanaco, chatml, llama3.\n"
    "\n"
    "options:\n"
    "  --system TEXT      system prompt (when the messages have none; else the template's default, if any)\n"
    "  -f, --file FILE    read the messages from FILE instead of stdin\n"
    "  --tokenizer FILE   also print the token ids (markers as the vocabulary's special ids) on stderr\n"
    "\n"
    "With --data, show how a fine-tuning dataset is rendered and masked instead (needs --tokenizer): each\n"
    "example's tokens as text, the trained ones (the loss mask) between [[ and ]], special tokens spelled "
    "out.\n"
    "  --data FILE        an Alpaca / ShareGPT / messages / prompt-completion JSON or JSONL file\n"
    "  --format NAME      auto (default), alpaca, sharegpt, messages, prompt-completion\n"
    "  --seq N            the row length: longer examples are cut or skipped as in training (default 512)\n"
    "  --limit N          examples to show (default 3; 0 = all)\n"
    "  --train-on-prompt  train on every token\n"
    "  -t, --threads N    threads (tokenizing a --data file)\n"
    "  -h, --help         this help\n";

/* One example as text, trained tokens between [[ and ]]; control tokens as their pieces. */
static void show_example(const cm_tokenizer *tok, const int32_t *ids, const uint8_t *trained, size_t n) {
    size_t cap = 64 + cm_tokenizer_max_piece_len(tok);
    char *buf = malloc(cap);
    if (!buf) return;
    cm_detokenizer d;
    cm_detokenizer_init(&d, tok);
    bool in = false;
    for (size_t i = 0; i < n; i++) {
        /* trained[i]: the token is a target (predicted from the one before it) */
        if (trained[i] != in) {
            fwrite(buf, 1, cm_detokenizer_flush(&d, buf, cap), stdout);
            fputs(trained[i] ? "[[" : "]]", stdout);
            in = trained[i];
        }
        if (cm_tokenizer_type(tok, ids[i]) == CM_TOKEN_CONTROL) {
            size_t len;
            const char *p = cm_tokenizer_piece(tok, ids[i], &len);
            fwrite(buf, 1, cm_detokenizer_flush(&d, buf, cap), stdout);
            fwrite(p, 1, len, stdout);
            continue;
        }
        fwrite(buf, 1, cm_detokenizer_push(&d, ids[i], buf, cap), stdout);
    }
    fwrite(buf, 1, cm_detokenizer_flush(&d, buf, cap), stdout);
    if (in) fputs("]]", stdout);
    fputc('\n', stdout);
    free(buf);
}

static int show_dataset(cm_template_id id, const char *path, const char *tok_path, const char *format,
                        const char *system, int seq, int limit, bool train_on_prompt, int threads) {
    if (!tok_path) return cli_fail("template --data needs --tokenizer");
    if (limit < 0) return cli_fail("--limit must be 0 or more, got %d", limit);
    cm_sft_options o;
    cm_sft_options_defaults(&o);
    o.template_id = id;
    o.seq = seq;
    o.val_frac = 0;
    o.train_on_prompt = train_on_prompt;
    o.system = system;
    if (format && cm_sft_format_from_name(format, &o.format) != CM_OK) return cli_fail_status();
    cm_tokenizer *tok = NULL;
    cm_pool *pool = NULL;
    cm_sft_dataset *ds = NULL;
    int status = 1;
    if (cm_tokenizer_open(tok_path, 0, &tok) != CM_OK ||
        (threads > 1 && cm_pool_open(threads, &pool) != CM_OK)) {
        cli_fail_status();
        goto out;
    }
    o.pool = pool;
    if (cm_sft_open(path, tok, &o, &ds) != CM_OK) {
        cli_fail_status();
        goto out;
    }
    int32_t *ids = malloc((size_t)seq * sizeof *ids);
    uint8_t *trained = malloc((size_t)seq);
    if (!ids || !trained) {
        free(ids);
        free(trained);
        cli_fail("out of memory");
        goto out;
    }
    size_t n_ex = cm_sft_examples(ds, CM_SFT_TRAIN);
    for (size_t i = 0; i < n_ex && (limit == 0 || i < (size_t)limit); i++) {
        size_t line, n = cm_sft_example(ds, CM_SFT_TRAIN, i, ids, trained, &line), k = 0;
        for (size_t j = 1; j < n; j++) k += trained[j];
        printf("== %s:%zu: %zu tokens, %zu trained\n", path, line, n, k);
        show_example(tok, ids, trained, n);
    }
    free(ids);
    free(trained);
    const cm_sft_stats *s = cm_sft_stats_of(ds, CM_SFT_ALL);
    fprintf(
        stderr,
        "camelid: %zu records, %zu examples (%zu truncated, %zu skipped as their prompt does not fit in %d "
        "tokens), %zu turns dropped, %zu tokens, %zu trained, longest %zu; %zu packed rows\n",
        s->records, s->examples, s->truncated, s->skipped, seq, s->dropped_turns, s->tokens,
        s->trained_tokens, s->longest, cm_sft_rows(ds, CM_SFT_TRAIN));
    status = fflush(stdout) == 0 ? 0 : cli_fail("stdout: write failed");
out:
    cm_sft_close(ds);
    cm_pool_close(pool);
    cm_tokenizer_close(tok);
    return status;
}

int cmd_template(int argc, char **argv) {
    const char *system = NULL, *file = NULL, *tok_path = NULL, *data = NULL, *format = NULL;
    int threads = 1, seq = 512, limit = 3;
    bool train_on_prompt = false;
    arg_spec specs[] = {
        {"system", 0, ARG_STRING, &system, NULL},
        {"file", 'f', ARG_STRING, &file, NULL},
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL},
        {"data", 0, ARG_STRING, &data, NULL},
        {"format", 0, ARG_STRING, &format, NULL},
        {"seq", 0, ARG_INT, &seq, NULL},
        {"limit", 0, ARG_INT, &limit, NULL},
        {"train-on-prompt", 0, ARG_FLAG, &train_on_prompt, NULL},
    };
    const char *pos[2];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 2);
    const char *name = pos[0], *extra = pos[1];
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (!name) return cli_fail("template needs a NAME (llama2, vicuna, alpaca, guanaco, chatml, llama3)");
    if (extra) return cli_fail("template takes one NAME, got an extra argument \"%s\"", extra);
    cm_template_id id;
    if (cm_template_from_name(name, &id) != CM_OK) return cli_fail_status();
    if (data) return show_dataset(id, data, tok_path, format, system, seq, limit, train_on_prompt, threads);
    char *text;
    size_t len;
    if (cli_read_input(file, &text, &len) != 0) return 1;
    chat_messages msgs;
    if (chat_messages_parse(text, len, file ? file : "stdin", &msgs) != CM_OK) {
        free(text);
        return cli_fail_status();
    }
    free(text);
    int status = 1;
    cm_tokenizer *tok = NULL;
    cm_chat_rendered r = {0};
    if (system && chat_messages_set_system(&msgs, system) != CM_OK) {
        cli_fail_status();
        goto out;
    }
    if (cm_chat_render(id, msgs.items, msgs.n, true, &r) != CM_OK) {
        cli_fail("%s: %s", file ? file : "stdin", cm_last_error());
        goto out;
    }
    char *prompt = cm_chat_rendered_text(&r);
    if (!prompt) {
        cli_fail("out of memory");
        goto out;
    }
    fputs(prompt, stdout);
    free(prompt);
    if (tok_path) {
        int32_t *ids;
        size_t n;
        if (cm_tokenizer_open(tok_path, 0, &tok) != CM_OK || cm_chat_tokenize(&r, tok, &ids, &n) != CM_OK) {
            cli_fail_status();
            goto out;
        }
        for (size_t i = 0; i < n; i++) fprintf(stderr, i ? " %d" : "%d", ids[i]);
        fputc('\n', stderr);
        free(ids);
    }
    if (fflush(stdout) != 0) {
        cli_fail("stdout: write failed");
        goto out;
    }
    status = 0;
out:
    cm_chat_rendered_free(&r);
    cm_tokenizer_close(tok);
    chat_messages_free(&msgs);
    return status;
}
