/* Byte-level BPE tokenizer: llama.cpp's gpt-2 vectors from the GGUF and from vocab.json + merges.txt, the
 * llama-bpe vectors from Llama 3's encoder.json + vocab.bpe, special tokens, invalid UTF-8, random round
 * trips (GPT-2, Llama 3 and the SentencePiece Llama 2 tokenizer), streamed decoding and malformed files. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/tokenizer.h"
#include "check.h"
#include "vocab_vectors.h"

/* Decode whole and streamed (into the documented minimum buffer); both must give `want`. */
static bool decodes_to(const cm_tokenizer *t, const int32_t *ids, size_t n, const char *want, size_t wlen) {
    char *text = NULL;
    size_t tlen = 0;
    bool ok = cm_tokenizer_decode(t, ids, n, &text, &tlen) == CM_OK && tlen == wlen &&
              (wlen == 0 || memcmp(text, want, wlen) == 0);
    free(text);
    size_t cap = 64 + cm_tokenizer_max_piece_len(t), total = 0;
    char *chunk = malloc(cap);
    cm_detokenizer d;
    cm_detokenizer_init(&d, t);
    for (size_t i = 0; i < n && ok; i++) {
        size_t k = cm_detokenizer_push(&d, ids[i], chunk, cap);
        if (total + k > wlen || memcmp(want + total, chunk, k) != 0) ok = false;
        total += k;
    }
    size_t k = cm_detokenizer_flush(&d, chunk, cap);
    if (ok && (total + k != wlen || memcmp(want + total, chunk, k) != 0)) ok = false;
    free(chunk);
    return ok;
}

/* ---------------------------------------------------------------------------------------------------------
 * Random UTF-8 */

static uint64_t rng_state = 0x243F6A8885A308D3ull;
static uint32_t rnd(void) {
    return test_rand(&rng_state);
}

/* Up to 40 characters: ASCII words, spaces, newlines, digits, apostrophes, Latin-1, Cyrillic, CJK, emoji. */
static size_t random_text(char *o) {
    static const uint32_t ranges[][2] = {{'a', 'z'},      {'A', 'Z'},       {'0', '9'},         {' ', ' '},
                                         {'\n', '\n'},    {'\'', '\''},     {'!', '/'},         {0xC0, 0xFF},
                                         {0x400, 0x44F},  {0x4E00, 0x4FFF}, {0x1F600, 0x1F64F}, {'\t', '\t'},
                                         {0x3000, 0x3000}};
    size_t n = 0, count = rnd() % 41;
    for (size_t i = 0; i < count; i++) {
        const uint32_t *r = ranges[rnd() % (sizeof ranges / sizeof ranges[0])];
        n += put_cp(o + n, r[0] + rnd() % (r[1] - r[0] + 1));
    }
    return n;
}

static void check_round_trips(const cm_tokenizer *t, const char *what, int count) {
    int bad = 0;
    char buf[256];
    for (int i = 0; i < count; i++) {
        size_t n = random_text(buf);
        int32_t *ids = NULL;
        size_t n_ids = 0;
        CHECK_OK(cm_tokenizer_encode(t, buf, n, false, false, &ids, &n_ids));
        if (!decodes_to(t, ids, n_ids, buf, n)) {
            if (bad < 3) fprintf(stderr, "%s: \"%.*s\" does not round-trip\n", what, (int)n, buf);
            bad++;
        }
        free(ids);
    }
    CHECK(bad == 0);
}

/* ---------------------------------------------------------------------------------------------------------
 * Cases */

static void expect(const cm_tokenizer *t, const char *text, bool parse_special, const int32_t *want,
                   size_t nw) {
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_OK(cm_tokenizer_encode_special(t, text, strlen(text), false, false, parse_special, &ids, &n));
    if (!ids_match(ids, n, want, nw, "encode \"%s\" (parse_special %d) differs", text, parse_special))
        check_failures++;
    free(ids);
}

static void test_gpt2(void) {
    vectors v;
    load_vectors(&v, cm_test_shared("tokenizers/llamacpp-vocab-tests/ggml-vocab-gpt-2.gguf.inp"),
                 cm_test_shared("tokenizers/llamacpp-vocab-tests/ggml-vocab-gpt-2.gguf.out"));
    cm_tokenizer *g = NULL, *j = NULL, *m = NULL;
    CHECK_OK(
        cm_tokenizer_open(cm_test_shared("tokenizers/llamacpp-vocab-tests/ggml-vocab-gpt-2.gguf"), 0, &g));
    CHECK_OK(cm_tokenizer_open(cm_test_shared("tokenizers/gpt2-bpe/vocab.json"), 0, &j));
    CHECK_OK(cm_tokenizer_open_bpe(cm_test_shared("tokenizers/gpt2-bpe/merges.txt"), "gpt2", &m));
    const cm_tokenizer *all[] = {g, j, m};
    const char *names[] = {"gpt-2 gguf", "gpt-2 vocab.json", "gpt-2 merges.txt"};
    for (int k = 0; k < 3; k++) {
        const cm_tokenizer *t = all[k];
        if (!t) continue;
        CHECK(cm_tokenizer_kind_of(t) == CM_TOKENIZER_BPE);
        CHECK(cm_tokenizer_vocab_size(t) == 50257);
        CHECK(cm_tokenizer_eos(t) == 50256);
        CHECK(cm_tokenizer_is_eog(t, 50256));
        CHECK(cm_tokenizer_type(t, 50256) == CM_TOKEN_CONTROL);
        size_t plen;
        const char *p = cm_tokenizer_piece(t, 995, &plen);
        CHECK(p && plen == 7 && memcmp(p, "\xC4\xA0world", 7) == 0); /* "Ġworld" */
        check_vectors(t, &v, names[k], decodes_to);
        expect(t, "Hello world", false, (const int32_t[]){15496, 995}, 2);
        expect(t, "<|endoftext|>Hello", true, (const int32_t[]){50256, 15496}, 2);
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(cm_tokenizer_encode(t, "<|endoftext|>", 13, false, false, &ids, &n));
        for (size_t i = 0; i < n; i++) CHECK(ids[i] != 50256);
        free(ids);
        /* invalid UTF-8 survives as byte tokens */
        static const char bad[] = "a\xFF\xFE b\xC3 \xE4\xB8 c\x80";
        CHECK_OK(cm_tokenizer_encode(t, bad, sizeof bad - 1, false, false, &ids, &n));
        CHECK(decodes_to(t, ids, n, bad, sizeof bad - 1));
        free(ids);
        /* special ids decode to nothing; empty text gives no ids */
        char *text = NULL;
        CHECK_OK(cm_tokenizer_decode(t, (const int32_t[]){50256, 15496, 50256}, 3, &text, NULL));
        CHECK(text && strcmp(text, "Hello") == 0);
        free(text);
        CHECK_OK(cm_tokenizer_encode(t, "", 0, false, true, &ids, &n));
        CHECK(n == 1 && ids && ids[0] == 50256);
        free(ids);
    }
    if (g) check_round_trips(g, "gpt-2", 300);
    CHECK(g && !cm_tokenizer_add_bos(g));
    cm_tokenizer *bad = NULL;
    CHECK_FAIL(cm_tokenizer_open_bpe(cm_test_shared("tokenizers/gpt2-bpe/vocab.json"), "gpt3", &bad), "gpt3");
    CHECK(bad == NULL);
    cm_tokenizer_close(g);
    cm_tokenizer_close(j);
    cm_tokenizer_close(m);
    free_vectors(&v);
}

static void test_llama3(void) {
    vectors v;
    load_vectors(&v, cm_test_shared("tokenizers/llamacpp-vocab-tests/ggml-vocab-gpt-2.gguf.inp"),
                 cm_test_data("llama3-bpe-golden/cases.out"));
    cm_tokenizer *t = NULL, *t2 = NULL;
    CHECK_OK(cm_tokenizer_open_bpe(cm_test_shared("tokenizers/llama3-bpe/encoder.json"), "llama3", &t));
    CHECK_OK(
        cm_tokenizer_open(cm_test_shared("tokenizers/llama3-bpe/vocab.bpe"), 0, &t2)); /* llama3 by size */
    if (t) {
        CHECK(cm_tokenizer_vocab_size(t) == 128256);
        CHECK(cm_tokenizer_bos(t) == 128000);
        CHECK(cm_tokenizer_eos(t) == 128001);
        CHECK(cm_tokenizer_add_bos(t));
        CHECK(cm_tokenizer_type(t, 128000) == CM_TOKEN_CONTROL);
        /* the 256 specials follow Meta's names; <|eot_id|> ends a turn */
        size_t plen;
        const char *p = cm_tokenizer_piece(t, 128009, &plen);
        CHECK(plen == 10 && memcmp(p, "<|eot_id|>", 10) == 0);
        CHECK(cm_tokenizer_is_eog(t, 128009) && cm_tokenizer_is_eog(t, 128008));
        p = cm_tokenizer_piece(t, 128255, &plen);
        CHECK(plen == strlen("<|reserved_special_token_247|>") &&
              memcmp(p, "<|reserved_special_token_247|>", plen) == 0);
        check_vectors(t, &v, "llama3 encoder.json", decodes_to);
        check_round_trips(t, "llama3", 300);
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(cm_tokenizer_encode(t, "Hello world", 11, true, false, &ids, &n));
        CHECK(n == 3 && ids && ids[0] == 128000 && ids[1] == 9906 && ids[2] == 1917);
        free(ids);
        expect(t, "<|begin_of_text|>Hello", true, (const int32_t[]){128000, 9906}, 2);
    }
    if (t2) check_vectors(t2, &v, "llama3 vocab.bpe", decodes_to);
    cm_tokenizer_close(t);
    cm_tokenizer_close(t2);
    free_vectors(&v);
}

static void test_spm_round_trips(void) {
    cm_tokenizer *t = NULL;
    CHECK_OK(cm_tokenizer_open(cm_test_shared("tokenizers/llama2-sentencepiece/tokenizer.model"), 0, &t));
    /* the dummy prefix is dropped again by the decoder's leading-space rule, so the text comes back as it was
     * (random_text never produces U+2581, which would read as a space) */
    if (t) check_round_trips(t, "llama2 spm", 300);
    cm_tokenizer_close(t);
}

static void test_bad_files(void) {
    char *dir = cm_test_tmpdir();
    char path[4200];
    cm_tokenizer *t = NULL;
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    static const char merges[] = "#version: 0.2\na b\nab c\n";
    static const char vocab[] = "{\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"abc\": 4}";

    /* truncated vocab.json */
    cm_test_write_file(dir, "vocab.json", "{\"a\": 0,\n \"b\": 1,\n \"c\"");
    cm_test_write_file(dir, "merges.txt", merges);
    CHECK_FAIL(cm_tokenizer_open(path, 0, &t), "vocab.json:3: invalid JSON");
    /* not JSON at all */
    cm_test_write_file(dir, "vocab.json", "\n\nhello");
    CHECK_FAIL(cm_tokenizer_open(path, 0, &t), "vocab.json:3: invalid JSON");
    cm_test_write_file(dir, "vocab.json", "[1, 2]");
    CHECK_FAIL(cm_tokenizer_open(path, 0, &t), "vocab.json:1: expected a JSON object");
    cm_test_write_file(dir, "vocab.json", "{\"a\": 0, \"b\": 5}");
    CHECK_FAIL(cm_tokenizer_open(path, 0, &t), "the id should be an integer");
    cm_test_write_file(dir, "vocab.json", "{\"a\": 0, \"b\": \"x\"}");
    CHECK_FAIL(cm_tokenizer_open(path, 0, &t), "\"b\"");
    cm_test_write_file(dir, "vocab.json", "{\"a\": 0, \"b\": 0}");
    CHECK_FAIL(cm_tokenizer_open(path, 0, &t), "id 0 is given to both");
    /* a good pair works */
    cm_test_write_file(dir, "vocab.json", vocab);
    CHECK_OK(cm_tokenizer_open(path, 0, &t));
    if (t) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(cm_tokenizer_encode(t, "abc", 3, false, false, &ids, &n));
        CHECK(n == 1 && ids && ids[0] == 4);
        free(ids);
        cm_tokenizer_close(t);
        t = NULL;
    }
    CHECK_OK(cm_tokenizer_open(dir, 0, &t)); /* a folder with vocab.json + merges.txt */
    cm_tokenizer_close(t);
    t = NULL;
    /* a merge naming an unknown token, with and without the version line */
    cm_test_write_file(dir, "merges.txt", "#version: 0.2\na b\nab z\n");
    CHECK_FAIL(cm_tokenizer_open(path, 0, &t), "merges.txt:3: merge \"ab z\" names an unknown token \"z\"");
    cm_test_write_file(dir, "merges.txt", "a b\nb z\n");
    CHECK_FAIL(cm_tokenizer_open(path, 0, &t), "merges.txt:2:");
    cm_test_write_file(dir, "merges.txt", "a b\nb c\n");
    CHECK_FAIL(cm_tokenizer_open(path, 0, &t), "merges.txt:2: merge \"b c\": the merged token");
    cm_test_write_file(dir, "merges.txt", "a b\nabc\n");
    CHECK_FAIL(cm_tokenizer_open(path, 0, &t), "merges.txt:2: expected a merge");
    /* empty merges */
    cm_test_write_file(dir, "merges.txt", "");
    CHECK_FAIL(cm_tokenizer_open(path, 0, &t), "merges.txt:1: no merges");
    cm_test_write_file(dir, "merges.txt", "#version: 0.2\n");
    CHECK_FAIL(cm_tokenizer_open(path, 0, &t), "merges.txt:");
    /* a missing partner */
    snprintf(path, sizeof path, "%s/encoder.json", dir);
    cm_test_write_file(dir, "encoder.json", vocab);
    CHECK_FAIL(cm_tokenizer_open(path, 0, &t), "vocab.bpe");
    /* in-memory parse names the buffers */
    CHECK_FAIL(cm_tokenizer_parse_bpe("{", 1, "v.json", merges, sizeof merges - 1, "m.txt", NULL, &t),
               "v.json:1: invalid JSON");
    CHECK(t == NULL);
    CHECK(cm_test_rmtree(dir));
    free(dir);
}

int main(void) {
    test_gpt2();
    test_llama3();
    test_spm_round_trips();
    test_bad_files();
    CHECK_DONE();
}
