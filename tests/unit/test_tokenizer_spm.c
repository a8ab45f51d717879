/* SentencePiece BPE tokenizer: llama.cpp's llama-spm vectors from three sources (GGUF, tokenizer.model,
 * tokenizer.bin), FACTS 2.2 examples, tok512, decode and streaming, the tokenizer.model and GGUF writers, a
 * randomized golden file from python3-sentencepiece, and malformed inputs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/gguf.h"
#include "camelid/tokenizer.h"
#include "check.h"
#include "vocab_vectors.h"

static void test_facts_examples(const cm_tokenizer *t) {
    const int32_t a[] = {1, 306, 4658, 278, 6593, 310, 2834, 338};
    expect_encode(t, "I believe the meaning of life is", true, a, 8);
    const int32_t b[] = {1, 3439, 17632, 1925, 29892, 278, 6368, 310, 14215, 537, 5922, 393, 29871};
    expect_encode(t, "Simply put, the theory of relativity states that ", true, b, 13);
    const int32_t c[] = {15043, 3186};
    expect_encode(t, "Hello world", false, c, 2);
    expect_encode(t, "", false, NULL, 0);
    const int32_t bos_only[] = {1};
    expect_encode(t, "", true, bos_only, 1);
    int32_t *ids;
    size_t n;
    CHECK_OK(cm_tokenizer_encode(t, "Hello world", 11, true, true, &ids, &n));
    CHECK(n == 4 && ids[0] == 1 && ids[3] == 2);
    free(ids);
    CHECK(cm_tokenizer_vocab_size(t) == 32000);
    CHECK(cm_tokenizer_bos(t) == 1 && cm_tokenizer_eos(t) == 2 && cm_tokenizer_unk(t) == 0);
    CHECK(cm_tokenizer_add_bos(t));
    CHECK(cm_tokenizer_is_eog(t, 2) && !cm_tokenizer_is_eog(t, 1));
    CHECK(cm_tokenizer_type(t, 0) == CM_TOKEN_UNKNOWN && cm_tokenizer_type(t, 1) == CM_TOKEN_CONTROL &&
          cm_tokenizer_type(t, 3) == CM_TOKEN_BYTE && cm_tokenizer_type(t, 15043) == CM_TOKEN_NORMAL);
    size_t len;
    const char *p = cm_tokenizer_piece(t, 15043, &len);
    CHECK(len == 8 && memcmp(p, "\xE2\x96\x81Hello", 8) == 0);
    p = cm_tokenizer_piece(t, 1, &len);
    CHECK(len == 3 && memcmp(p, "<s>", 3) == 0);
    p = cm_tokenizer_piece(t, 3 + 0x0A, &len);
    CHECK(len == 6 && memcmp(p, "<0x0A>", 6) == 0);
    CHECK(cm_tokenizer_piece(t, 32000, &len) == NULL && len == 0);
    CHECK(cm_tokenizer_max_piece_len(t) >= 16);
}

/* Feed ids one by one; every chunk must end on a character boundary, and the whole must equal decode(). */
static void check_stream_ex(const cm_tokenizer *t, const int32_t *ids, size_t n, const char *want,
                            bool valid) {
    cm_detokenizer d;
    cm_detokenizer_init(&d, t);
    size_t cap = 64 + cm_tokenizer_max_piece_len(t);
    char *chunk = malloc(cap), all[4096];
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = cm_detokenizer_push(&d, ids[i], chunk, cap);
        /* a chunk never ends inside a character: its last lead byte is complete */
        size_t j = k;
        while (j > 0 && ((unsigned char)chunk[j - 1] & 0xC0) == 0x80) j--;
        if (valid && j > 0) {
            unsigned char lead = (unsigned char)chunk[j - 1];
            size_t need = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
            CHECK(k - (j - 1) == need);
        }
        memcpy(all + total, chunk, k);
        total += k;
    }
    total += cm_detokenizer_flush(&d, all + total, sizeof all - total);
    CHECK(total == strlen(want) && memcmp(all, want, total) == 0);
    char *text;
    size_t len;
    CHECK_OK(cm_tokenizer_decode(t, ids, n, &text, &len));
    CHECK(len == strlen(want) && strcmp(text, want) == 0);
    free(text);
    free(chunk);
}

static void check_stream(const cm_tokenizer *t, const int32_t *ids, size_t n, const char *want) {
    check_stream_ex(t, ids, n, want, true);
}

static void test_decode(const cm_tokenizer *t) {
    /* 🦙 (F0 9F A6 99) and 中 (E4 B8 AD) as byte pieces */
    const int32_t emoji[] = {1,        29871, 3 + 0xF0, 3 + 0x9F, 3 + 0xA6,
                             3 + 0x99, 15043, 3 + 0xE4, 3 + 0xB8, 3 + 0xAD};
    check_stream(t, emoji, 10, "\xF0\x9F\xA6\x99 Hello\xE4\xB8\xAD");
    /* leading "▁" dropped only at the very start (control tokens do not count) */
    const int32_t lead[] = {1, 15043, 3186};
    check_stream(t, lead, 3, "Hello world");
    const int32_t two[] = {29871, 29871, 15043};
    check_stream(t, two, 3, "  Hello");
    const int32_t mid_bos[] = {15043, 1, 15043};
    check_stream(t, mid_bos, 3, "Hello Hello");
    const int32_t unk[] = {0, 15043};
    check_stream(t, unk, 2, " \xE2\x81\x87  Hello");
    /* an invalid sequence comes out as it is once proven invalid; a dangling lead byte at flush */
    const int32_t bad[] = {3 + 0xE4, 3 + 0x41, 3 + 0xF0, 3 + 0x9F};
    check_stream_ex(t, bad, 4,
                    "\xE4"
                    "A\xF0\x9F",
                    false);
    const int32_t cont[] = {3 + 0x80, 3 + 0xC0, 3 + 0xED, 3 + 0xA0, 3 + 0x80};
    check_stream_ex(t, cont, 5, "\x80\xC0\xED\xA0\x80", false);
    /* out-of-range ids are ignored */
    const int32_t oob[] = {-5, 15043, 999999};
    check_stream(t, oob, 3, "Hello");
    /* encode -> stream: CJK, Cyrillic and emoji through byte fallback */
    const char *text = "こんにちは 世界 🦙🦙 Привет ⁇ 𠀋";
    int32_t *ids;
    size_t n;
    CHECK_OK(cm_tokenizer_encode(t, text, strlen(text), true, true, &ids, &n));
    check_stream(t, ids, n, text);
    free(ids);
}

static void test_tok512(void) {
    cm_tokenizer *t = NULL;
    CHECK_OK(cm_tokenizer_open(cm_test_shared("models/stories260K/tok512.bin"), 512, &t));
    if (!t) return;
    const int32_t want[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421};
    expect_encode(t, "Once upon a time, there was a little girl", true, want, 13);
    CHECK(cm_tokenizer_vocab_size(t) == 512);
    char *text;
    size_t len;
    CHECK_OK(cm_tokenizer_decode(t, want, 13, &text, &len));
    CHECK(text && strcmp(text, "Once upon a time, there was a little girl") == 0);
    free(text);
    cm_tokenizer_close(t);
    /* read to the end of the file without a hint */
    CHECK_OK(cm_tokenizer_open(cm_test_shared("models/stories260K/tok512.bin"), 0, &t));
    if (t) CHECK(cm_tokenizer_vocab_size(t) == 512);
    cm_tokenizer_close(t);
}

static void check_same_tokenization(const cm_tokenizer *a, const cm_tokenizer *b, const vectors *v) {
    CHECK(cm_tokenizer_vocab_size(a) == cm_tokenizer_vocab_size(b));
    CHECK(cm_tokenizer_bos(a) == cm_tokenizer_bos(b) && cm_tokenizer_eos(a) == cm_tokenizer_eos(b) &&
          cm_tokenizer_unk(a) == cm_tokenizer_unk(b));
    int diff = 0;
    for (int id = 0; id < cm_tokenizer_vocab_size(a); id++) {
        size_t la, lb;
        const char *pa = cm_tokenizer_piece(a, id, &la), *pb = cm_tokenizer_piece(b, id, &lb);
        if (la != lb || memcmp(pa, pb, la) != 0 || cm_tokenizer_score(a, id) != cm_tokenizer_score(b, id) ||
            cm_tokenizer_type(a, id) != cm_tokenizer_type(b, id))
            diff++;
    }
    CHECK(diff == 0);
    for (int i = 0; i < v->n; i++) {
        int32_t *x, *y;
        size_t nx, ny;
        CHECK_OK(cm_tokenizer_encode(a, v->text[i], v->len[i], true, false, &x, &nx));
        CHECK_OK(cm_tokenizer_encode(b, v->text[i], v->len[i], true, false, &y, &ny));
        CHECK(same_ids(x, nx, y, ny));
        free(x);
        free(y);
    }
}

static void test_writers(const cm_tokenizer *t, const vectors *v, const char *tmp) {
    char path[4200];
    cm_tokenizer *none = NULL;
    CHECK(cm_tokenizer_open(tmp, 0, &none) == CM_ERR_NOT_FOUND); /* a folder without tokenizer.model */
    CHECK(strstr(cm_last_error(), "no tokenizer.model") != NULL);
    snprintf(path, sizeof path, "%s/tokenizer.model", tmp);
    CHECK_OK(cm_tokenizer_save_spm_model(t, path));
    cm_tokenizer *r = NULL;
    CHECK_OK(cm_tokenizer_open(tmp, 0, &r)); /* a folder means <folder>/tokenizer.model */
    if (r) check_same_tokenization(t, r, v);
    cm_tokenizer_close(r);

    /* tok512 (from tokenizer.bin) -> tokenizer.model -> the same tokens */
    cm_tokenizer *small = NULL, *back = NULL;
    CHECK_OK(cm_tokenizer_open(cm_test_shared("models/stories260K/tok512.bin"), 512, &small));
    snprintf(path, sizeof path, "%s/tok512.model", tmp);
    if (small) CHECK_OK(cm_tokenizer_save_spm_model(small, path));
    CHECK_OK(cm_tokenizer_open(path, 0, &back));
    if (small && back) check_same_tokenization(small, back, v);
    cm_tokenizer_close(back);

    /* GGUF: write the tokenizer keys, read them back */
    snprintf(path, sizeof path, "%s/vocab.gguf", tmp);
    cm_gguf_writer *w = NULL;
    CHECK_OK(cm_gguf_writer_open(path, &w));
    if (w) {
        CHECK_OK(cm_gguf_writer_set_str(w, "general.architecture", "llama"));
        CHECK_OK(cm_tokenizer_write_gguf(small ? small : t, w));
        CHECK_OK(cm_gguf_writer_commit(w));
        back = NULL;
        CHECK_OK(cm_tokenizer_open(path, 0, &back));
        if (small && back) check_same_tokenization(small, back, v);
        if (back) CHECK(cm_tokenizer_add_bos(back));
        cm_tokenizer_close(back);
    }
    cm_tokenizer_close(small);
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static size_t unhex(const char *s, const char *end, char *out) {
    size_t n = 0;
    while (s + 1 < end && hexval(s[0]) >= 0 && hexval(s[1]) >= 0) {
        out[n++] = (char)(hexval(s[0]) * 16 + hexval(s[1]));
        s += 2;
    }
    return n;
}

/* tests/data/spm_random_golden.tsv from scripts/golden/spm_golden.py (python3-sentencepiece). */
static void test_golden(const cm_tokenizer *t) {
    char *data = NULL;
    size_t size = 0;
    CHECK_OK(cm_read_file(cm_test_data("spm_random_golden.tsv"), 1 << 22, &data, &size));
    if (!data) return;
    int n_enc = 0, n_dec = 0, bad = 0, line_no = 0;
    char *buf = malloc(size + 1);
    for (char *line = data, *end = data + size; line < end;) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl) nl = end;
        line_no++;
        char *tab1 = memchr(line, '\t', (size_t)(nl - line));
        char *tab2 = tab1 ? memchr(tab1 + 1, '\t', (size_t)(nl - tab1 - 1)) : NULL;
        if (line[0] != '#' && tab1 && tab2) {
            int32_t *want, *got = NULL;
            if (line[0] == 'E') {
                size_t len = unhex(tab1 + 1, tab2, buf), nw = parse_ids(tab2 + 1, nl, &want), ng = 0;
                CHECK_OK(cm_tokenizer_encode(t, buf, len, false, false, &got, &ng));
                if (!same_ids(got, ng, want, nw)) {
                    fprintf(stderr, "golden line %d: encode of \"%.*s\" differs\n", line_no, (int)len, buf);
                    print_ids("expected", want, nw);
                    print_ids("got", got, ng);
                    bad++;
                }
                n_enc++;
            } else if (line[0] == 'D') {
                size_t nw = parse_ids(tab1 + 1, tab2, &want), len = unhex(tab2 + 1, nl, buf);
                char *text = NULL;
                size_t tlen = 0;
                CHECK_OK(cm_tokenizer_decode(t, want, nw, &text, &tlen));
                if (!text || tlen != len || memcmp(text, buf, len) != 0) {
                    fprintf(stderr, "golden line %d: decode gives \"%s\", expected \"%.*s\"\n", line_no,
                            text ? text : "", (int)len, buf);
                    bad++;
                }
                free(text);
                n_dec++;
            } else {
                want = NULL;
            }
            free(want);
            free(got);
        }
        line = nl + 1;
    }
    CHECK(bad == 0);
    CHECK(n_enc >= 300 && n_dec >= 100);
    free(buf);
    free(data);
}

/* ---------------------------------------------------------------------------------------------------------
 * Malformed inputs */

static size_t put_u32(uint8_t *p, uint32_t v) {
    memcpy(p, &v, 4);
    return 4;
}

static size_t put_rec(uint8_t *p, float score, int32_t len, const char *s) {
    memcpy(p, &score, 4);
    memcpy(p + 4, &len, 4);
    if (len > 0 && s) memcpy(p + 8, s, (size_t)len);
    return 8 + (len > 0 && s ? (size_t)len : 0);
}

static void test_bad_llama2c(void) {
    cm_tokenizer *t = NULL;
    uint8_t b[256] = {0};
    CHECK_FAIL(cm_tokenizer_parse_llama2c(b, 0, 0, "empty.bin", &t), "too short");
    CHECK_FAIL(cm_tokenizer_parse_llama2c(b, 3, 0, "short.bin", &t), "short.bin");
    size_t n = put_u32(b, 8);
    CHECK_FAIL(cm_tokenizer_parse_llama2c(b, n, 0, "none.bin", &t), "no tokens");
    size_t n1 = n + put_rec(b + n, 0, 5, "<unk>");
    n = n1 + put_rec(b + n1, 0, -3, NULL);
    CHECK_FAIL(cm_tokenizer_parse_llama2c(b, n, 0, "neg.bin", &t),
               "token 1 at byte offset 17: negative length -3");
    n = n1 + put_rec(b + n1, 0, 0, NULL);
    CHECK_FAIL(cm_tokenizer_parse_llama2c(b, n, 0, "zero.bin", &t), "empty piece");
    n = n1 + put_rec(b + n1, 0, 100, NULL);
    CHECK_FAIL(cm_tokenizer_parse_llama2c(b, n, 0, "past.bin", &t), "runs past the end");
    CHECK_FAIL(cm_tokenizer_parse_llama2c(b, n1 + 5, 0, "trunc.bin", &t), "record truncated");
    CHECK_FAIL(cm_tokenizer_parse_llama2c(b, n1, 3, "few.bin", &t), "expected 3 tokens");
    CHECK_OK(cm_tokenizer_parse_llama2c(b, n1, 0, "one.bin", &t));
    cm_tokenizer_close(t);
    t = NULL;
    char path[64] = "/nonexistent/tokenizer.bin";
    CHECK_FAIL(cm_tokenizer_open(path, 0, &t), "/nonexistent/tokenizer.bin");
    CHECK(t == NULL);
}

/* A tiny valid tokenizer.model built with the writer (no byte pieces: unknown characters become unk). */
static void tiny_model(uint8_t **data, size_t *size) {
    const char *pieces[] = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "\342\226\201a", "ab"};
    size_t lens[8];
    float scores[8];
    for (int i = 0; i < 8; i++) lens[i] = strlen(pieces[i]), scores[i] = -(float)i;
    cm_tokenizer *t = NULL;
    CHECK_OK(cm_tokenizer_from_pieces(pieces, lens, scores, NULL, 8, 1, 2, 0, &t));
    *data = NULL;
    if (t) CHECK_OK(cm_tokenizer_serialize_spm_model(t, data, size));
    cm_tokenizer_close(t);
}

/* Partial byte fallback works in camelid, but sentencepiece could not load it, so the writer refuses it;
 * so does it a duplicate piece. */
static void test_partial_bytes(void) {
    const char *pieces[] = {"<unk>", "<s>", "</s>",          "<0x41>", "\xE2\x96\x81",
                            "a",     "b",   "\342\226\201a", "ab",     "a"};
    size_t lens[10];
    for (int i = 0; i < 10; i++) lens[i] = strlen(pieces[i]);
    cm_tokenizer *t = NULL;
    CHECK_OK(cm_tokenizer_from_pieces(pieces, lens, NULL, NULL, 9, 1, 2, 0, &t));
    if (!t) return;
    const int32_t want[] = {1, 7, 6, 4, 3, 0}; /* "▁a" "b" "▁" <0x41> unk (Z has no byte piece) */
    expect_encode(t, "ab AZ", true, want, 6);
    CHECK(cm_tokenizer_type(t, 3) == CM_TOKEN_BYTE);
    uint8_t *data;
    size_t size;
    CHECK_FAIL(cm_tokenizer_serialize_spm_model(t, &data, &size), "needs all 256");
    cm_tokenizer_close(t);
    CHECK_OK(cm_tokenizer_from_pieces(pieces, lens, NULL, NULL, 10, 1, 2, 0, &t));
    if (!t) return;
    const int32_t first[] = {4, 6, 5}; /* "▁" "b" "a": the duplicate "a" resolves to its first id */
    expect_encode(t, "ba", false, first, 3);
    CHECK_FAIL(cm_tokenizer_save_spm_model(t, "/nonexistent/x.model"),
               "token 9 repeats the piece \"a\" of token 5");
    cm_tokenizer_close(t);
}

static void test_bad_model(void) {
    cm_tokenizer *t = NULL;
    uint8_t *good;
    size_t size;
    tiny_model(&good, &size);
    if (!good) return;
    CHECK_OK(cm_tokenizer_parse_spm_model(good, size, "tiny.model", &t));
    if (t) {
        const int32_t want[] = {1, 6, 5, 3,
                                0}; /* as sentencepiece: "▁a" "b" "▁" unk (one for the run "AZ") */
        expect_encode(t, "ab AZ", true, want, 5);
        const int32_t want2[] = {3, 0, 3, 0, 4, 0}; /* "▁" unk "▁" unk "a" unk */
        expect_encode(t,
                      "xy zz\xC3\xA9"
                      "a\xF0\x9F\xA6\x99",
                      false, want2, 6);
    }
    cm_tokenizer_close(t);
    t = NULL;
    CHECK_FAIL(cm_tokenizer_parse_spm_model(good, 0, "empty.model", &t), "empty");
    /* every truncation fails cleanly (or, at a message boundary, parses fewer pieces) */
    int failures = 0;
    for (size_t cut = 1; cut < size; cut++) {
        uint8_t *copy = malloc(cut);
        memcpy(copy, good, cut);
        cm_status st = cm_tokenizer_parse_spm_model(copy, cut, "cut.model", &t);
        if (st) {
            failures++;
            CHECK(strstr(cm_last_error(), "cut.model") != NULL);
        }
        cm_tokenizer_close(t);
        t = NULL;
        free(copy);
    }
    CHECK(failures > (int)size / 2);
    /* a length past the end */
    uint8_t past[] = {0x0A, 0x50, 0x0A, 0x01, 'a'};
    CHECK_FAIL(cm_tokenizer_parse_spm_model(past, sizeof past, "past.model", &t),
               "byte offset 1: length 80 runs past");
    /* a bad varint: 11 continuation bytes */
    uint8_t varint[] = {0x0A, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    CHECK_FAIL(cm_tokenizer_parse_spm_model(varint, sizeof varint, "varint.model", &t), "varint");
    uint8_t varint2[] = {0x0A, 0x80};
    CHECK_FAIL(cm_tokenizer_parse_spm_model(varint2, sizeof varint2, "varint2.model", &t),
               "varint runs past");
    /* an empty piece */
    uint8_t empty_piece[] = {0x0A, 0x02, 0x0A, 0x00, 0x12, 0x02, 0x18, 0x02};
    CHECK_FAIL(cm_tokenizer_parse_spm_model(empty_piece, sizeof empty_piece, "e.model", &t),
               "empty or missing piece");
    /* a unigram model */
    uint8_t unigram[] = {0x0A, 0x03, 0x0A, 0x01, 'a', 0x12, 0x02, 0x18, 0x01};
    CHECK_FAIL(cm_tokenizer_parse_spm_model(unigram, sizeof unigram, "u.model", &t), "unigram");
    CHECK(cm_tokenizer_parse_spm_model(unigram, sizeof unigram, "u.model", &t) == CM_ERR_UNSUPPORTED);
    /* wrong wire type for the score */
    uint8_t wire[] = {0x0A, 0x05, 0x0A, 0x01, 'a', 0x10, 0x01, 0x12, 0x02, 0x18, 0x02};
    CHECK_FAIL(cm_tokenizer_parse_spm_model(wire, sizeof wire, "w.model", &t),
               "score (field 2) has wire type 0");
    /* a bad token type */
    uint8_t type[] = {0x0A, 0x05, 0x0A, 0x01, 'a', 0x18, 0x09, 0x12, 0x02, 0x18, 0x02};
    CHECK_FAIL(cm_tokenizer_parse_spm_model(type, sizeof type, "t.model", &t), "unknown token type 9");
    /* a special id out of range */
    uint8_t bos[] = {0x0A, 0x03, 0x0A, 0x01, 'a', 0x12, 0x05, 0x18, 0x02, 0xC8, 0x02, 0x07};
    CHECK_FAIL(cm_tokenizer_parse_spm_model(bos, sizeof bos, "b.model", &t), "BOS id 7");
    /* group wire types are not protobuf 3 */
    uint8_t group[] = {0x0B};
    CHECK_FAIL(cm_tokenizer_parse_spm_model(group, sizeof group, "g.model", &t), "wire type 3");
    free(good);
    CHECK(t == NULL);
}

static void test_bad_text(const cm_tokenizer *t) {
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_FAIL(cm_tokenizer_encode(t, "ab\xC3", 3, false, false, &ids, &n), "byte offset 2");
    CHECK_FAIL(cm_tokenizer_encode(t, "abc\xC0\xAF", 5, false, false, &ids, &n), "byte offset 3");
    CHECK_FAIL(cm_tokenizer_encode(t, "\xED\xA0\x80", 3, false, false, &ids, &n), "not valid UTF-8");
    CHECK_FAIL(cm_tokenizer_encode(t, "x\xF4\x90\x80\x80", 5, false, false, &ids, &n), "byte offset 1");
    CHECK_FAIL(cm_tokenizer_encode(t, "\xFF", 1, false, false, &ids, &n), "0xFF");
    CHECK(ids == NULL && n == 0);
    /* NUL is an ordinary character */
    CHECK_OK(cm_tokenizer_encode(t, "a\0b", 3, false, false, &ids, &n));
    free(ids);
}

static void test_gguf_errors(const char *tmp) {
    char path[4200];
    snprintf(path, sizeof path, "%s/novocab.gguf", tmp);
    cm_gguf_writer *w = NULL;
    cm_tokenizer *t = NULL;
    CHECK_OK(cm_gguf_writer_open(path, &w));
    if (!w) return;
    CHECK_OK(cm_gguf_writer_set_str(w, "general.architecture", "llama"));
    CHECK_OK(cm_gguf_writer_commit(w));
    CHECK(cm_tokenizer_open(path, 0, &t) == CM_ERR_NOT_FOUND);
    CHECK(strstr(cm_last_error(), "no vocabulary") != NULL);
    snprintf(path, sizeof path, "%s/novocab2.gguf", tmp);
    CHECK_OK(cm_gguf_writer_open(path, &w));
    CHECK_OK(cm_gguf_writer_set_str(w, "tokenizer.ggml.model", "no_vocab"));
    CHECK_OK(cm_gguf_writer_commit(w));
    CHECK(cm_tokenizer_open(path, 0, &t) == CM_ERR_NOT_FOUND);
    /* byte-level BPE opens (tested in test_tokenizer_bpe.c), but cannot be written as a SentencePiece model
     */
    CHECK_OK(
        cm_tokenizer_open(cm_test_shared("tokenizers/llamacpp-vocab-tests/ggml-vocab-gpt-2.gguf"), 0, &t));
    CHECK(t && cm_tokenizer_kind_of(t) == CM_TOKENIZER_BPE);
    if (t) {
        uint8_t *data = NULL;
        size_t size = 0;
        CHECK_FAIL(cm_tokenizer_serialize_spm_model(t, &data, &size), "only a SentencePiece tokenizer");
        CHECK(data == NULL);
    }
    cm_tokenizer_close(t);
}

/* Long input: the priority-queue merge must stay fast (llama2.c's rescans are quadratic). */
static void test_long(const cm_tokenizer *t) {
    size_t n = 1 << 20;
    char *s = malloc(n);
    const char *words[] = {"hello ", "world ", "tokenizer ", "ünïcödé ", "中文 ", "🦙 ", "aaaa", "  "};
    size_t k = 0;
    for (unsigned i = 0; k + 16 < n; i = i * 1103515245u + 12345u) {
        const char *w = words[(i >> 16) % 8];
        memcpy(s + k, w, strlen(w));
        k += strlen(w);
    }
    int32_t *ids;
    size_t m;
    CHECK_OK(cm_tokenizer_encode(t, s, k, false, false, &ids, &m));
    /* The same vocabulary plus a piece spanning a word start (invalid UTF-8, so it never matches) turns off
     * word-by-word merging; the tokens must not change. */
    int nv = cm_tokenizer_vocab_size(t);
    const char **pieces = malloc((size_t)(nv + 1) * sizeof *pieces);
    size_t *lens = malloc((size_t)(nv + 1) * sizeof *lens);
    float *scores = malloc((size_t)(nv + 1) * sizeof *scores);
    cm_token_type *types = malloc((size_t)(nv + 1) * sizeof *types);
    for (int i = 0; i < nv; i++) {
        pieces[i] = cm_tokenizer_piece(t, i, &lens[i]);
        scores[i] = cm_tokenizer_score(t, i);
        types[i] = cm_tokenizer_type(t, i);
    }
    pieces[nv] = "\xFF\xE2\x96\x81";
    lens[nv] = 4;
    scores[nv] = 0.0f;
    types[nv] = CM_TOKEN_NORMAL;
    cm_tokenizer *whole = NULL;
    CHECK_OK(cm_tokenizer_from_pieces(pieces, lens, scores, types, (size_t)nv + 1, 1, 2, 0, &whole));
    if (whole) {
        int32_t *ids2;
        size_t m2;
        CHECK_OK(cm_tokenizer_encode(whole, s, k, false, false, &ids2, &m2));
        CHECK(same_ids(ids, m, ids2, m2));
        free(ids2);
    }
    cm_tokenizer_close(whole);
    free(pieces);
    free(lens);
    free(scores);
    free(types);
    char *text;
    size_t len;
    CHECK_OK(cm_tokenizer_decode(t, ids, m, &text, &len));
    CHECK(len == k && memcmp(text, s, k) == 0);
    free(text);
    free(ids);
    /* one long run of a single letter */
    memset(s, 'a', n);
    CHECK_OK(cm_tokenizer_encode(t, s, n, false, false, &ids, &m));
    CHECK(m > 0 && m < n / 2);
    free(ids);
    free(s);
}

int main(void) {
    vectors v;
    load_vectors(&v, cm_test_shared("tokenizers/llamacpp-vocab-tests/ggml-vocab-llama-spm.gguf.inp"),
                 cm_test_shared("tokenizers/llamacpp-vocab-tests/ggml-vocab-llama-spm.gguf.out"));
    char *tmp = cm_test_tmpdir();

    cm_tokenizer *from_model = NULL, *from_bin = NULL, *from_bin0 = NULL, *from_gguf = NULL;
    CHECK_OK(
        cm_tokenizer_open(cm_test_shared("tokenizers/llama2-sentencepiece/tokenizer.model"), 0, &from_model));
    CHECK_OK(
        cm_tokenizer_open(cm_test_shared("tokenizers/llama2-sentencepiece/tokenizer.bin"), 32000, &from_bin));
    CHECK_OK(
        cm_tokenizer_open(cm_test_shared("tokenizers/llama2-sentencepiece/tokenizer.bin"), 0, &from_bin0));
    CHECK_OK(cm_tokenizer_open(cm_test_shared("tokenizers/llamacpp-vocab-tests/ggml-vocab-llama-spm.gguf"), 0,
                               &from_gguf));
    if (from_model) check_vectors(from_model, &v, "tokenizer.model", decodes_whole);
    if (from_bin) check_vectors(from_bin, &v, "tokenizer.bin", decodes_whole);
    if (from_bin0) CHECK(cm_tokenizer_vocab_size(from_bin0) == 32000);
    if (from_gguf) check_vectors(from_gguf, &v, "ggml-vocab-llama-spm.gguf", decodes_whole);
    if (from_model) {
        test_facts_examples(from_model);
        test_decode(from_model);
        test_golden(from_model);
        test_bad_text(from_model);
        test_long(from_model);
        test_writers(from_model, &v, tmp);
    }
    if (from_bin) test_facts_examples(from_bin);
    if (from_gguf) test_facts_examples(from_gguf);
    if (from_bin) test_golden(from_bin);
    test_tok512();
    test_bad_llama2c();
    test_bad_model();
    test_partial_bytes();
    test_gguf_errors(tmp);

    cm_tokenizer_close(from_model);
    cm_tokenizer_close(from_bin);
    cm_tokenizer_close(from_bin0);
    cm_tokenizer_close(from_gguf);
    free_vectors(&v);
    const char *made[] = {"tokenizer.model", "tok512.model", "vocab.gguf", "novocab.gguf", "novocab2.gguf"};
    for (int i = 0; i < 5; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", tmp, made[i]);
        remove(path);
    }
    remove(tmp);
    free(tmp);
    CHECK_DONE();
}
