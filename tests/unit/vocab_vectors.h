/* llama.cpp's tokenizer test vectors (FACTS 2.4) for the tokenizer tests: X.inp holds the cases separated by
 * "\n__ggml_vocab_test__\n", X.out one line of ids per case (no BOS). Included by one test file each. */
#ifndef CAMELID_VOCAB_VECTORS_H
#define CAMELID_VOCAB_VECTORS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/tokenizer.h"
#include "check.h"

#define MAX_CASES 64

typedef struct {
    int n;
    char *text[MAX_CASES];
    size_t len[MAX_CASES];
    int32_t *ids[MAX_CASES];
    size_t n_ids[MAX_CASES];
    char *inp, *out;
} vectors;

/* Does ids decode back to text (the caller's notion: whole, streamed, ...)? */
typedef bool (*decode_check)(const cm_tokenizer *t, const int32_t *ids, size_t n, const char *text,
                             size_t len);

static size_t parse_ids(const char *s, const char *end, int32_t **ids) {
    size_t cap = 16, n = 0;
    *ids = malloc(cap * sizeof **ids);
    while (s < end) {
        while (s < end && (*s == ' ' || *s == '\t')) s++;
        if (s >= end || *s == '\n') break;
        char *e;
        long v = strtol(s, &e, 10);
        if (e == s) break;
        if (n == cap) *ids = realloc(*ids, (cap *= 2) * sizeof **ids);
        (*ids)[n++] = (int32_t)v;
        s = e;
    }
    return n;
}

static void load_vectors(vectors *v, const char *inp, const char *out) {
    memset(v, 0, sizeof *v);
    size_t isz = 0, osz = 0;
    CHECK_OK(cm_read_file(inp, 1 << 20, &v->inp, &isz));
    CHECK_OK(cm_read_file(out, 1 << 20, &v->out, &osz));
    if (!v->inp || !v->out) return;
    static const char sep[] = "\n__ggml_vocab_test__\n";
    char *p = v->inp, *end = v->inp + isz;
    while (p < end && v->n < MAX_CASES) {
        char *q = strstr(p, sep);
        if (!q) break;
        v->text[v->n] = p;
        v->len[v->n] = (size_t)(q - p);
        v->n++;
        p = q + strlen(sep);
    }
    char *o = v->out, *oend = v->out + osz;
    for (int i = 0; i < v->n; i++) {
        char *nl = memchr(o, '\n', (size_t)(oend - o));
        if (!nl) nl = oend;
        v->n_ids[i] = parse_ids(o, nl, &v->ids[i]);
        o = nl < oend ? nl + 1 : oend;
    }
}

static void free_vectors(vectors *v) {
    for (int i = 0; i < v->n; i++) free(v->ids[i]);
    free(v->inp);
    free(v->out);
}

static bool same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

static void print_ids(const char *what, const int32_t *a, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", a[i]);
    fprintf(stderr, "\n");
}

/* Are `got` and `want` the same ids? If not, print the printf-style message (which case) and both lists. */
__attribute__((format(printf, 5, 6))) static inline bool
ids_match(const int32_t *got, size_t n, const int32_t *want, size_t nw, const char *fmt, ...) {
    if (same_ids(got, n, want, nw)) return true;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    print_ids("expected", want, nw);
    print_ids("got", got, n);
    return false;
}

/* `text` (with BOS if asked, no EOS) must encode to want[0..nw); a difference counts as one failure. */
static inline void expect_encode(const cm_tokenizer *t, const char *text, bool bos, const int32_t *want,
                                 size_t nw) {
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(cm_tokenizer_encode(t, text, strlen(text), bos, false, &ids, &n));
    if (!ids_match(ids, n, want, nw, "encode \"%s\" differs", text)) check_failures++;
    free(ids);
}

/* A whole-sequence decode that must give the text back. */
static inline bool decodes_whole(const cm_tokenizer *t, const int32_t *ids, size_t n, const char *text,
                                 size_t len) {
    char *back = NULL;
    size_t blen = 0;
    CHECK_OK(cm_tokenizer_decode(t, ids, n, &back, &blen));
    bool ok = back && blen == len && memcmp(back, text, len) == 0;
    if (back && !ok) fprintf(stderr, "decoded: \"%s\"\n", back);
    free(back);
    return ok;
}

/* Every case encodes (no BOS) to its ids, and, with a decode check, decodes back. */
static void check_vectors(const cm_tokenizer *t, const vectors *v, const char *source,
                          decode_check decodes_to) {
    int bad = 0;
    for (int i = 0; i < v->n; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(cm_tokenizer_encode(t, v->text[i], v->len[i], false, false, &ids, &n));
        if (!ids_match(ids, n, v->ids[i], v->n_ids[i], "%s: vector %d (\"%.*s\") differs", source, i,
                       (int)v->len[i], v->text[i]))
            bad++;
        if (decodes_to && !decodes_to(t, ids, n, v->text[i], v->len[i])) {
            fprintf(stderr, "%s: vector %d does not decode back\n", source, i);
            bad++;
        }
        free(ids);
    }
    CHECK(bad == 0);
    CHECK(v->n == 46);
}

/* xorshift for seeded random test strings */
static inline uint32_t test_rand(uint64_t *state) {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return (uint32_t)(*state >> 11);
}

/* Encode code point cp as UTF-8 into o; returns its length. */
static inline size_t put_cp(char *o, uint32_t cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

#endif
