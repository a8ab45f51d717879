/* Tokenizer throughput: encode a 3 MB novel with the GPT-2, Llama 3 and Llama 2 vocabularies and decode it
 * back. Usage: bench_tokenize [SHARED_DIR] (default ../shared). Prints MB/s and tokens/s, best of 3 runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "camelid/file.h"
#include "camelid/tokenizer.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench(const char *label, const char *tok_path, const char *pre, const char *text, size_t len) {
    cm_tokenizer *t;
    cm_status st = pre ? cm_tokenizer_open_bpe(tok_path, pre, &t) : cm_tokenizer_open(tok_path, 0, &t);
    if (st != CM_OK) {
        fprintf(stderr, "%s: %s\n", label, cm_last_error());
        return 1;
    }
    double best_enc = 1e30, best_dec = 1e30;
    size_t n = 0;
    int roundtrip = 1;
    for (int rep = 0; rep < 3; rep++) {
        int32_t *ids;
        double t0 = now();
        if (cm_tokenizer_encode(t, text, len, false, false, &ids, &n) != CM_OK) {
            fprintf(stderr, "%s: %s\n", label, cm_last_error());
            cm_tokenizer_close(t);
            return 1;
        }
        double t1 = now();
        char *back;
        size_t back_len;
        if (cm_tokenizer_decode(t, ids, n, &back, &back_len) == CM_OK) {
            roundtrip = back_len == len && memcmp(back, text, len) == 0;
            free(back);
        }
        double t2 = now();
        if (t1 - t0 < best_enc) best_enc = t1 - t0;
        if (t2 - t1 < best_dec) best_dec = t2 - t1;
        free(ids);
    }
    printf("%-28s %9zu tokens  encode %6.3f s = %6.1f MB/s = %9.0f tok/s   decode %6.3f s   round trip %s\n",
           label, n, best_enc, (double)len / best_enc / 1e6, (double)n / best_enc, best_dec,
           roundtrip ? "exact" : "DIFFERS");
    cm_tokenizer_close(t);
    return 0;
}

int main(int argc, char **argv) {
    const char *shared = argc > 1 ? argv[1] : "../shared";
    char path[4096];
    snprintf(path, sizeof path, "%s/data/corpora/war-and-peace/war-and-peace.txt", shared);
    char *text;
    size_t len;
    if (cm_read_file(path, (size_t)1 << 30, &text, &len) != CM_OK) {
        fprintf(stderr, "%s\n", cm_last_error());
        return 1;
    }
    printf("war-and-peace.txt: %zu bytes\n", len);
    char a[4096], b[4096], c[4096];
    snprintf(a, sizeof a, "%s/data/tokenizers/gpt2-bpe/vocab.json", shared);
    snprintf(b, sizeof b, "%s/data/tokenizers/llama3-bpe/encoder.json", shared);
    snprintf(c, sizeof c, "%s/data/tokenizers/llama2-sentencepiece/tokenizer.model", shared);
    int rc = bench("GPT-2 (byte-level BPE)", a, "gpt2", text, len);
    rc |= bench("Llama 3 (byte-level BPE)", b, "llama3", text, len);
    rc |= bench("Llama 2 (SentencePiece)", c, NULL, text, len);
    free(text);
    return rc;
}
