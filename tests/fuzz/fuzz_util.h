/* Helpers shared by the libFuzzer targets (header-only: every tests/fuzz/fuzz_*.c is its own executable). A
 * broken invariant traps, so libFuzzer keeps the input that broke it. */
#ifndef CAMELID_FUZZ_UTIL_H
#define CAMELID_FUZZ_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/tokenizer.h"

/* A safetensors file made from a bare header `{...}` optionally followed by a decimal data size (at most 64
 * KiB): the 8-byte length prefix, the header and that many zero bytes, so the fuzzer reaches the deeper
 * header checks without having to guess the prefix. malloc'd (NULL when out of memory); its size in *total.
 */
static inline uint8_t *fuzz_wrap_safetensors(const uint8_t *data, size_t size, size_t *total) {
    size_t j = size;
    while (j > 0 && data[j - 1] != '}') j--;
    if (j == 0) j = size;
    size_t dlen = 0;
    for (size_t k = j; k < size && data[k] >= '0' && data[k] <= '9' && dlen < (1u << 16); k++)
        dlen = dlen * 10 + (size_t)(data[k] - '0');
    if (dlen > (1u << 16)) dlen = 1u << 16;
    *total = 8 + j + dlen;
    uint8_t *buf = calloc(*total, 1);
    if (!buf) return NULL;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)j >> (8 * i));
    memcpy(buf + 8, data, j);
    return buf;
}

/* A tiny SentencePiece vocabulary: <unk> <s> </s>, the 256 byte-fallback pieces <0xXX>, then `words` (at most
 * 64), then `last` if given. Word i of the whole vocabulary scores -((i * score_mul) % score_mod); the others
 * 0. */
static inline cm_tokenizer *fuzz_tiny_spm(const char *const *words, int n_words, const char *last,
                                          int score_mul, int score_mod) {
    enum { MAX = 3 + 256 + 64 + 1 };
    static char bytes[256][7];
    const char *pieces[MAX];
    size_t lens[MAX];
    float scores[MAX];
    if (n_words > 64) __builtin_trap();
    int n = 3 + 256 + n_words + (last != NULL);
    pieces[0] = "<unk>", pieces[1] = "<s>", pieces[2] = "</s>";
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        pieces[3 + b] = bytes[b];
    }
    for (int i = 0; i < n_words; i++) pieces[259 + i] = words[i];
    if (last) pieces[n - 1] = last;
    for (int i = 0; i < n; i++) {
        lens[i] = strlen(pieces[i]);
        scores[i] = i < 259 ? 0.0f : -(float)((i * score_mul) % score_mod);
    }
    cm_tokenizer *t = NULL;
    if (cm_tokenizer_from_pieces(pieces, lens, scores, NULL, n, 1, 2, 0, &t) != CM_OK) __builtin_trap();
    return t;
}

/* Decode `ids` one at a time into a buffer of the documented minimum size: the pushed pieces and then the
 * final flush must spell want[0..wlen) exactly. Returns how many bytes the flush gave. */
static inline size_t fuzz_check_streamed(const cm_tokenizer *t, const int32_t *ids, size_t n,
                                         const char *want, size_t wlen) {
    size_t cap = 64 + cm_tokenizer_max_piece_len(t), total = 0;
    char *chunk = malloc(cap);
    if (!chunk) __builtin_trap();
    cm_detokenizer d;
    cm_detokenizer_init(&d, t);
    for (size_t i = 0; i < n; i++) {
        size_t k = cm_detokenizer_push(&d, ids[i], chunk, cap);
        if (total + k > wlen || memcmp(want + total, chunk, k) != 0) __builtin_trap();
        total += k;
    }
    size_t k = cm_detokenizer_flush(&d, chunk, cap);
    if (total + k != wlen || memcmp(want + total, chunk, k) != 0) __builtin_trap();
    free(chunk);
    return k;
}

/* If `text` encodes (BOS as asked), its ids must decode. */
static inline void fuzz_encode_decode(const cm_tokenizer *t, const char *text, size_t len, bool add_bos) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (cm_tokenizer_encode(t, text, len, add_bos, false, &ids, &n) == CM_OK) {
        char *out = NULL;
        size_t olen = 0;
        if (cm_tokenizer_decode(t, ids, n, &out, &olen) != CM_OK) __builtin_trap();
        free(out);
    }
    free(ids);
}

#endif
