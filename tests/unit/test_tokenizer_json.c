/* HF tokenizer.json and tokenizer_config.json: each family (GPT-2, Llama 3, Llama 2 SentencePiece) written as
 * tokenizer.json and read back gives llama.cpp's 46 vectors and the same ids as the original on random text;
 * merges as strings and as pairs; chat templates from tokenizer_config.json (string and list) and GGUF;
 * byte-level BPE GGUF round trips; malformed files. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/gguf.h"
#include "camelid/model.h"
#include "camelid/tokenizer.h"
#include "check.h"
#include "vocab_vectors.h"
#include "tokenizer/bpe_internal.h"

/* ---------------------------------------------------------------------------------------------------------
 * Random text: the same ids from both tokenizers */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    return test_rand(&rng_state);
}

/* Up to 40 characters: mostly words (so merges matter), spaces, digits, punctuation, other scripts. */
static size_t random_text(char *o) {
    static const char *const words[] = {"the",  " the",   "hello", " world", "ing", " token", "izer", "ation",
                                        " and", "Simply", " put",  "'s",     "'ll", " ",      "  ",   "\n"};
    static const uint32_t ranges[][2] = {{'a', 'z'},     {'0', '9'},       {'!', '/'},         {0xC0, 0xFF},
                                         {0x400, 0x44F}, {0x4E00, 0x4FFF}, {0x1F600, 0x1F64F}, {'\t', '\t'}};
    size_t n = 0, count = rnd() % 24;
    for (size_t i = 0; i < count; i++) {
        if (rnd() % 3) {
            const char *w = words[rnd() % (sizeof words / sizeof words[0])];
            memcpy(o + n, w, strlen(w));
            n += strlen(w);
        } else {
            const uint32_t *r = ranges[rnd() % (sizeof ranges / sizeof ranges[0])];
            n += put_cp(o + n, r[0] + rnd() % (r[1] - r[0] + 1));
        }
    }
    return n;
}

static void check_same_ids(const cm_tokenizer *a, const cm_tokenizer *b, const char *what, int count) {
    int bad = 0;
    char buf[512];
    for (int i = 0; i < count; i++) {
        size_t n = random_text(buf);
        int32_t *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        CHECK_OK(cm_tokenizer_encode(a, buf, n, false, false, &x, &nx));
        CHECK_OK(cm_tokenizer_encode(b, buf, n, false, false, &y, &ny));
        if (!same_ids(x, nx, y, ny)) {
            if (bad < 3) {
                fprintf(stderr, "%s: \"%.*s\" differs\n", what, (int)n, buf);
                print_ids("original", x, nx);
                print_ids("tokenizer.json", y, ny);
            }
            bad++;
        }
        free(x);
        free(y);
    }
    CHECK(bad == 0);
}

/* Same pieces, types and special ids. */
static void check_same_vocab(const cm_tokenizer *a, const cm_tokenizer *b, const char *what) {
    CHECK(cm_tokenizer_kind_of(a) == cm_tokenizer_kind_of(b));
    CHECK(cm_tokenizer_vocab_size(a) == cm_tokenizer_vocab_size(b));
    CHECK(cm_tokenizer_bos(a) == cm_tokenizer_bos(b));
    CHECK(cm_tokenizer_eos(a) == cm_tokenizer_eos(b));
    CHECK(cm_tokenizer_unk(a) == cm_tokenizer_unk(b));
    CHECK(cm_tokenizer_add_bos(a) == cm_tokenizer_add_bos(b));
    int bad = 0, n = cm_tokenizer_vocab_size(a);
    for (int id = 0; id < n && id < cm_tokenizer_vocab_size(b); id++) {
        size_t la, lb;
        const char *pa = cm_tokenizer_piece(a, id, &la), *pb = cm_tokenizer_piece(b, id, &lb);
        if (la != lb || memcmp(pa, pb, la) != 0 || cm_tokenizer_type(a, id) != cm_tokenizer_type(b, id)) {
            if (bad < 3)
                fprintf(stderr, "%s: token %d differs (\"%.*s\" type %d vs \"%.*s\" type %d)\n", what, id,
                        (int)la, pa, cm_tokenizer_type(a, id), (int)lb, pb, cm_tokenizer_type(b, id));
            bad++;
        }
    }
    CHECK(bad == 0);
}

/* ---------------------------------------------------------------------------------------------------------
 * Files */

static void remove_dir(char *dir) {
    CHECK(cm_test_rmtree(dir));
    free(dir);
}

/* Write t as tokenizer.json into a fresh folder, read it back (file and folder), check the second write is
 * the same text. */
static cm_tokenizer *json_round_trip(const cm_tokenizer *t, const char *what) {
    char *dir = cm_test_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    cm_tokenizer *back = NULL, *folder = NULL;
    CHECK_OK(cm_tokenizer_save_hf_json(t, path));
    CHECK_OK(cm_tokenizer_open(path, 0, &back));
    CHECK_OK(cm_tokenizer_open(dir, 0, &folder));
    if (back && folder) check_same_vocab(back, folder, what);
    char *first = NULL, *second = NULL;
    size_t n1 = 0, n2 = 0;
    CHECK_OK(cm_tokenizer_serialize_hf_json(t, &first, &n1));
    if (back) CHECK_OK(cm_tokenizer_serialize_hf_json(back, &second, &n2));
    CHECK(first && second && n1 == n2 && memcmp(first, second, n1) == 0);
    free(first);
    free(second);
    cm_tokenizer_close(folder);
    remove_dir(dir);
    return back;
}

/* ---------------------------------------------------------------------------------------------------------
 * Families */

static void test_llama2_spm(void) {
    vectors v;
    load_vectors(&v, cm_test_shared("tokenizers/llamacpp-vocab-tests/ggml-vocab-llama-spm.gguf.inp"),
                 cm_test_shared("tokenizers/llamacpp-vocab-tests/ggml-vocab-llama-spm.gguf.out"));
    cm_tokenizer *t = NULL;
    CHECK_OK(cm_tokenizer_open(cm_test_shared("tokenizers/llama2-sentencepiece/tokenizer.model"), 0, &t));
    if (!t) return;
    check_vectors(t, &v, "llama2 tokenizer.model", NULL);
    cm_tokenizer *j = json_round_trip(t, "llama2 tokenizer.json");
    if (j) {
        CHECK(cm_tokenizer_kind_of(j) == CM_TOKENIZER_SPM);
        check_same_vocab(t, j, "llama2 tokenizer.json");
        CHECK(cm_tokenizer_type(j, 0) == CM_TOKEN_UNKNOWN);
        CHECK(cm_tokenizer_type(j, 1) == CM_TOKEN_CONTROL);
        CHECK(cm_tokenizer_type(j, 3) == CM_TOKEN_BYTE);
        check_vectors(j, &v, "llama2 tokenizer.json", NULL);
        check_same_ids(t, j, "llama2 tokenizer.json", 2000);
        int32_t *ids = NULL;
        size_t n = 0;
        static const char text[] = "I believe the meaning of life is";
        CHECK_OK(cm_tokenizer_encode(j, text, sizeof text - 1, true, false, &ids, &n));
        CHECK(same_ids(ids, n, (const int32_t[]){1, 306, 4658, 278, 6593, 310, 2834, 338}, 8));
        free(ids);
    }
    cm_tokenizer_close(j);
    cm_tokenizer_close(t);
    free_vectors(&v);
}

static void test_gpt2(void) {
    vectors v;
    load_vectors(&v, cm_test_shared("tokenizers/llamacpp-vocab-tests/ggml-vocab-gpt-2.gguf.inp"),
                 cm_test_shared("tokenizers/llamacpp-vocab-tests/ggml-vocab-gpt-2.gguf.out"));
    cm_tokenizer *t = NULL;
    CHECK_OK(cm_tokenizer_open(cm_test_shared("tokenizers/gpt2-bpe/vocab.json"), 0, &t));
    if (!t) return;
    cm_tokenizer *j = json_round_trip(t, "gpt-2 tokenizer.json");
    if (j) {
        check_same_vocab(t, j, "gpt-2 tokenizer.json");
        CHECK(cm_tokenizer_kind_of(j) == CM_TOKENIZER_BPE);
        CHECK(cm_tokenizer_eos(j) == 50256);
        CHECK(!cm_tokenizer_add_bos(j));
        CHECK(!cm_bpe_ignore_merges(j));
        CHECK(cm_bpe_n_merges(j) == 50000);
        check_vectors(j, &v, "gpt-2 tokenizer.json", NULL);
        check_same_ids(t, j, "gpt-2 tokenizer.json", 1000);
    }
    cm_tokenizer_close(j);
    cm_tokenizer_close(t);
    free_vectors(&v);
}

static void test_llama3(void) {
    vectors v;
    load_vectors(&v, cm_test_shared("tokenizers/llamacpp-vocab-tests/ggml-vocab-gpt-2.gguf.inp"),
                 cm_test_data("llama3-bpe-golden/cases.out"));
    cm_tokenizer *t = NULL;
    CHECK_OK(cm_tokenizer_open_bpe(cm_test_shared("tokenizers/llama3-bpe/encoder.json"), "llama3", &t));
    if (!t) return;
    cm_tokenizer *j = json_round_trip(t, "llama3 tokenizer.json");
    if (j) {
        check_same_vocab(t, j, "llama3 tokenizer.json");
        CHECK(cm_tokenizer_bos(j) == 128000);
        CHECK(cm_tokenizer_add_bos(j));
        CHECK(cm_bpe_ignore_merges(j));
        CHECK(cm_bpe_pre_of(j) == CM_BPE_PRE_LLAMA3);
        check_vectors(j, &v, "llama3 tokenizer.json", NULL);
        check_same_ids(t, j, "llama3 tokenizer.json", 1000);
    }
    cm_tokenizer_close(j);
    cm_tokenizer_close(t);
    free_vectors(&v);
}

/* ---------------------------------------------------------------------------------------------------------
 * Small hand-written files */

static cm_tokenizer *parse(const char *json) {
    cm_tokenizer *t = NULL;
    CHECK_OK(cm_tokenizer_parse_hf_json(json, strlen(json), "t.json", &t));
    return t;
}

#define SMALL_BPE(PRE, MERGES)                                                                               \
    "{\"added_tokens\": [{\"id\": 6, \"content\": \"<|end|>\", \"special\": true}],"                         \
    " \"normalizer\": null, \"pre_tokenizer\": " PRE ", \"model\": {\"type\": \"BPE\","                      \
    " \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"abc\": 4, \"\\u0120\": 5}, \"merges\": " MERGES \
    "}}"

static void test_small(void) {
    static const char bl[] = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}";
    static const char split_cpp[] =
        "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": "
        "\"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|"
        "\\\\p{N}{1,3}| "
        "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}, "
        "\"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"use_regex\": false}]}";
    char buf[4096];
    /* merges as strings and as pairs give the same tokenizer */
    snprintf(buf, sizeof buf, SMALL_BPE("%s", "[\"a b\", \"ab c\"]"), bl);
    cm_tokenizer *s = parse(buf);
    snprintf(buf, sizeof buf, SMALL_BPE("%s", "[[\"a\", \"b\"], [\"ab\", \"c\"]]"), bl);
    cm_tokenizer *p = parse(buf);
    snprintf(buf, sizeof buf, SMALL_BPE("%s", "[[\"a\", \"b\"], [\"ab\", \"c\"]]"), split_cpp);
    cm_tokenizer *l3 = parse(buf);
    const cm_tokenizer *all[] = {s, p, l3};
    for (int k = 0; k < 3; k++) {
        if (!all[k]) continue;
        CHECK(cm_tokenizer_kind_of(all[k]) == CM_TOKENIZER_BPE);
        CHECK(cm_tokenizer_vocab_size(all[k]) == 7);
        CHECK(cm_tokenizer_type(all[k], 6) == CM_TOKEN_CONTROL);
        CHECK(cm_bpe_n_merges(all[k]) == 2);
        expect_encode(all[k], "abc cab", false, (const int32_t[]){4, 5, 2, 3}, 4);
    }
    if (l3) CHECK(cm_bpe_pre_of(l3) == CM_BPE_PRE_LLAMA3);
    cm_tokenizer_close(s);
    cm_tokenizer_close(p);
    cm_tokenizer_close(l3);

    /* SentencePiece style with a Metaspace pre-tokenizer (older Llama tokenizer.json) */
    static const char meta[] =
        "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true}, {\"id\": 1, "
        "\"content\": "
        "\"<s>\", \"special\": true}], \"normalizer\": null, \"pre_tokenizer\": {\"type\": \"Metaspace\", "
        "\"replacement\": \"\\u2581\", \"add_prefix_space\": true}, \"post_processor\": {\"type\": "
        "\"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, "
        "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}]}, \"model\": {\"type\": \"BPE\", \"unk_token\": "
        "\"<unk>\", \"byte_fallback\": true, \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"<0x21>\": 2, "
        "\"\\u2581\": 3, "
        "\"a\": 4, \"b\": 5, \"\\u2581a\": 6, \"\\u2581ab\": 7, \"ab\": 8}, \"merges\": [\"\\u2581 a\", \"a "
        "b\", "
        "\"\\u2581a b\"]}}";
    cm_tokenizer *m = parse(meta);
    if (m) {
        CHECK(cm_tokenizer_kind_of(m) == CM_TOKENIZER_SPM);
        CHECK(cm_tokenizer_bos(m) == 1 && cm_tokenizer_add_bos(m));
        CHECK(cm_tokenizer_unk(m) == 0 && cm_tokenizer_type(m, 0) == CM_TOKEN_UNKNOWN);
        CHECK(cm_tokenizer_type(m, 2) == CM_TOKEN_BYTE);
        /* "ab ab!z": ▁ab ▁ab <0x21> <unk> */
        expect_encode(m, "ab ab!z", false, (const int32_t[]){7, 7, 2, 0}, 4);
        CHECK(cm_tokenizer_score(m, 6) > cm_tokenizer_score(m, 8));
    }
    cm_tokenizer_close(m);
}

/* ---------------------------------------------------------------------------------------------------------
 * tokenizer_config.json and chat templates */

static void test_config(void) {
    char *dir = cm_test_tmpdir();
    cm_tokenizer *t = NULL, *src = NULL;
    CHECK_OK(cm_tokenizer_open(cm_test_shared("tokenizers/llama2-sentencepiece/tokenizer.model"), 0, &src));
    if (!src) return;
    CHECK(cm_tokenizer_chat_template(src) == NULL);
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    CHECK_OK(cm_tokenizer_save_spm_model(src, path));

    /* string form; tokens as strings and as objects */
    cm_test_write_file(dir, "tokenizer_config.json",
                       "{\"bos_token\": {\"content\": \"<s>\", \"lstrip\": false}, \"eos_token\": \"</s>\",\n"
                       " \"add_bos_token\": false, \"add_eos_token\": true,\n"
                       " \"chat_template\": \"{% for m in messages %}{{ m.content }}{% endfor %}\"}");
    CHECK_OK(cm_tokenizer_open(dir, 0, &t));
    if (t) {
        CHECK(cm_tokenizer_chat_template(t) &&
              strcmp(cm_tokenizer_chat_template(t), "{% for m in messages %}{{ m.content }}{% endfor %}") ==
                  0);
        CHECK(!cm_tokenizer_add_bos(t));
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK_OK(cm_tokenizer_encode(t, "Hello", 5, false, true, &ids, &n));
        CHECK(n == 2 && ids && ids[1] == 2);
        free(ids);
    }
    cm_tokenizer_close(t);
    t = NULL;
    /* opening the file itself applies the config beside it too */
    CHECK_OK(cm_tokenizer_open(path, 0, &t));
    CHECK(t && cm_tokenizer_chat_template(t) && !cm_tokenizer_add_bos(t));
    cm_tokenizer_close(t);
    t = NULL;

    /* list form: "default" is taken */
    cm_test_write_file(dir, "tokenizer_config.json",
                       "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"},\n"
                       " {\"name\": \"default\", \"template\": \"D\"}], \"eos_token\": null}");
    CHECK_OK(cm_tokenizer_open(dir, 0, &t));
    CHECK(t && cm_tokenizer_chat_template(t) && strcmp(cm_tokenizer_chat_template(t), "D") == 0);
    CHECK(t && cm_tokenizer_eos(t) == 2 && cm_tokenizer_add_bos(t));

    /* GGUF: the template is written and read back, for both families */
    char gpath[4200];
    snprintf(gpath, sizeof gpath, "%s/vocab.gguf", dir);
    cm_tokenizer *bpe = NULL;
    CHECK_OK(cm_tokenizer_open(cm_test_shared("tokenizers/gpt2-bpe/vocab.json"), 0, &bpe));
    if (bpe) CHECK_OK(cm_tokenizer_set_chat_template(bpe, "{{ bos_token }}G"));
    cm_tokenizer *fam[] = {t, bpe};
    const char *want[] = {"D", "{{ bos_token }}G"};
    for (int k = 0; k < 2; k++) {
        if (!fam[k]) continue;
        cm_gguf_writer *w = NULL;
        CHECK_OK(cm_gguf_writer_open(gpath, &w));
        if (!w) continue;
        CHECK_OK(cm_gguf_writer_set_str(w, "general.architecture", "llama"));
        CHECK_OK(cm_tokenizer_write_gguf(fam[k], w));
        CHECK_OK(cm_gguf_writer_commit(w));
        cm_tokenizer *back = NULL;
        CHECK_OK(cm_tokenizer_open(gpath, 0, &back));
        CHECK(back && cm_tokenizer_chat_template(back) &&
              strcmp(cm_tokenizer_chat_template(back), want[k]) == 0);
        if (back) check_same_vocab(fam[k], back, "gguf");
        cm_tokenizer_close(back);
    }
    CHECK_OK(cm_tokenizer_set_chat_template(bpe, NULL));
    CHECK(cm_tokenizer_chat_template(bpe) == NULL);
    cm_tokenizer_close(bpe);
    cm_tokenizer_close(t);
    t = NULL;

    /* bad configs name the file */
    cm_test_write_file(dir, "tokenizer_config.json", "{\"eos_token\": \"<nope>\"}");
    CHECK_FAIL(cm_tokenizer_open(dir, 0, &t),
               "tokenizer_config.json: eos_token \"<nope>\" is not in the vocabulary");
    cm_test_write_file(dir, "tokenizer_config.json", "{\n\"add_bos_token\": 1}");
    CHECK_FAIL(cm_tokenizer_open(dir, 0, &t), "tokenizer_config.json: add_bos_token should be true or false");
    cm_test_write_file(dir, "tokenizer_config.json", "{\n\"chat_template\": [1]}");
    CHECK_FAIL(cm_tokenizer_open(dir, 0, &t), "tokenizer_config.json: chat_template[0]");
    cm_test_write_file(dir, "tokenizer_config.json", "{\n\"chat_template\": \"x\",\n");
    CHECK_FAIL(cm_tokenizer_open(dir, 0, &t), "tokenizer_config.json:3: invalid JSON");
    CHECK(t == NULL);
    cm_tokenizer_close(src);
    remove_dir(dir);
}

/* A folder holding tokenizer.json and tokenizer.model prefers tokenizer.json. */
static void test_folder_preference(void) {
    char *dir = cm_test_tmpdir();
    char path[4200];
    cm_tokenizer *g = NULL, *s = NULL, *t = NULL;
    CHECK_OK(cm_tokenizer_open(cm_test_shared("tokenizers/gpt2-bpe/vocab.json"), 0, &g));
    CHECK_OK(cm_tokenizer_open(cm_test_shared("tokenizers/llama2-sentencepiece/tokenizer.model"), 0, &s));
    if (g && s) {
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        CHECK_OK(cm_tokenizer_save_hf_json(g, path));
        snprintf(path, sizeof path, "%s/tokenizer.model", dir);
        CHECK_OK(cm_tokenizer_save_spm_model(s, path));
        CHECK_OK(cm_tokenizer_open(dir, 0, &t));
        CHECK(t && cm_tokenizer_kind_of(t) == CM_TOKENIZER_BPE);
    }
    cm_tokenizer_close(t);
    cm_tokenizer_close(g);
    cm_tokenizer_close(s);
    remove_dir(dir);
}

/* Byte-level BPE GGUF: written and read back, the same vocabulary, merges and vectors. */
static void test_bpe_gguf(void) {
    char *dir = cm_test_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/bpe.gguf", dir);
    vectors v;
    load_vectors(&v, cm_test_shared("tokenizers/llamacpp-vocab-tests/ggml-vocab-gpt-2.gguf.inp"),
                 cm_test_data("llama3-bpe-golden/cases.out"));
    cm_tokenizer *t = NULL;
    CHECK_OK(cm_tokenizer_open_bpe(cm_test_shared("tokenizers/llama3-bpe/encoder.json"), "llama3", &t));
    cm_gguf_writer *w = NULL;
    if (t) CHECK_OK(cm_gguf_writer_open(path, &w));
    if (w) {
        CHECK_OK(cm_gguf_writer_set_str(w, "general.architecture", "llama"));
        CHECK_OK(cm_tokenizer_write_gguf(t, w));
        CHECK_OK(cm_gguf_writer_commit(w));
        cm_tokenizer *back = NULL;
        CHECK_OK(cm_tokenizer_open(path, 0, &back));
        if (back) {
            check_same_vocab(t, back, "llama3 gguf");
            CHECK(cm_bpe_pre_of(back) == CM_BPE_PRE_LLAMA3);
            CHECK(cm_bpe_n_merges(back) == cm_bpe_n_merges(t));
            bool same = true;
            for (size_t i = 0; i < cm_bpe_n_merges(t) && same; i++) {
                int32_t a, b, c, d;
                cm_bpe_merge(t, i, &a, &b);
                cm_bpe_merge(back, i, &c, &d);
                same = a == c && b == d;
            }
            CHECK(same);
            check_vectors(back, &v, "llama3 gguf", NULL);
        }
        cm_tokenizer_close(back);
    }
    cm_tokenizer_close(t);
    free_vectors(&v);
    remove_dir(dir);
}

/* convert --to hf with a byte-level tokenizer: tokenizer.json (no tokenizer.model) and a
 * tokenizer_config.json with the chat template and LlamaTokenizerFast; the folder loads back with the same
 * tokenizer. */
static void test_save_hf(void) {
    cm_model *m = NULL;
    cm_tokenizer *t = NULL;
    CHECK_OK(cm_model_open(cm_test_data("hf-tiny/gqa-f32"), &m));
    CHECK_OK(cm_tokenizer_open(cm_test_shared("tokenizers/gpt2-bpe/vocab.json"), 0, &t));
    if (!m || !t) return;
    CHECK_OK(cm_tokenizer_set_chat_template(t, "{{ messages[0].content }}"));
    char *dir = cm_test_tmpdir();
    char path[4200];
    CHECK_OK(cm_model_save_hf(m, t, dir, CM_DTYPE_COUNT));
    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    CHECK(!cm_path_exists(path));
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    char *cfg = NULL;
    size_t n = 0;
    CHECK_OK(cm_read_file(path, 1 << 20, &cfg, &n));
    CHECK(cfg && strstr(cfg, "\"tokenizer_class\": \"LlamaTokenizerFast\""));
    CHECK(cfg && strstr(cfg, "\"chat_template\": \"{{ messages[0].content }}\""));
    free(cfg);
    cm_tokenizer *back = NULL;
    CHECK_OK(cm_tokenizer_open(dir, 0, &back));
    if (back) {
        check_same_vocab(t, back, "saved hf folder");
        CHECK(cm_tokenizer_chat_template(back) &&
              strcmp(cm_tokenizer_chat_template(back), "{{ messages[0].content }}") == 0);
    }
    cm_tokenizer_close(back);
    cm_tokenizer_close(t);
    cm_model_close(m);
    remove_dir(dir);
}

/* ---------------------------------------------------------------------------------------------------------
 * Malformed files */

static void expect_bad(const char *json, cm_status code, const char *needle) {
    cm_tokenizer *t = NULL;
    cm_status st = cm_tokenizer_parse_hf_json(json, strlen(json), "bad/tokenizer.json", &t);
    if (st != code || !strstr(cm_last_error(), needle) || strchr(cm_last_error(), '\n') ||
        strncmp(cm_last_error(), "bad/tokenizer.json", 18) != 0) {
        fprintf(stderr, "parse %.60s: status %d, message \"%s\" (wanted %d, \"%s\")\n", json, st,
                cm_last_error(), code, needle);
        check_failures++;
    }
    CHECK(t == NULL);
    cm_tokenizer_close(t);
}

static void test_bad(void) {
    static const char bl[] = "{\"type\": \"ByteLevel\"}";
    char buf[2048];
    expect_bad("{\n\"model\": {\n\"type\": \"BPE\",\n", CM_ERR_FORMAT, "bad/tokenizer.json:4: invalid JSON");
    expect_bad("[]", CM_ERR_FORMAT, "expected a JSON object");
    expect_bad("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}", CM_ERR_UNSUPPORTED,
               "model.type \"Unigram\" is not supported");
    expect_bad("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", CM_ERR_UNSUPPORTED,
               "model.type \"WordPiece\" is not supported");
    expect_bad("{\"model\": 3}", CM_ERR_FORMAT, "\"model\" should be an object");
    snprintf(buf, sizeof buf, SMALL_BPE("%s", "[\"a b\", \"ab z\"]"), bl);
    expect_bad(buf, CM_ERR_FORMAT, "model.merges[1]: merge \"ab z\" names an unknown token \"z\"");
    snprintf(buf, sizeof buf, SMALL_BPE("%s", "[\"a b\", \"b c\"]"), bl);
    expect_bad(buf, CM_ERR_FORMAT, "model.merges[1]: merge \"b c\": the merged token");
    snprintf(buf, sizeof buf, SMALL_BPE("%s", "[\"a b\", \"abc\"]"), bl);
    expect_bad(buf, CM_ERR_FORMAT, "model.merges[1]: expected \"A B\"");
    snprintf(buf, sizeof buf, SMALL_BPE("%s", "[\"a b\", [\"ab\"]]"), bl);
    expect_bad(buf, CM_ERR_FORMAT, "model.merges[1]: expected");
    snprintf(buf, sizeof buf, SMALL_BPE("%s", "{}"), bl);
    expect_bad(buf, CM_ERR_FORMAT, "model.merges should be a list");
    snprintf(buf, sizeof buf, SMALL_BPE("%s", "[]"),
             "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": "
             "\"\\\\w+\"},"
             " \"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\", \"use_regex\": false}]}");
    expect_bad(buf, CM_ERR_UNSUPPORTED, "the Split regex \"\\w+\" is not supported");
    snprintf(buf, sizeof buf, SMALL_BPE("%s", "[]"), "{\"type\": \"Whitespace\"}");
    expect_bad(buf, CM_ERR_UNSUPPORTED, "pre_tokenizer \"Whitespace\" is not supported");
    snprintf(buf, sizeof buf, SMALL_BPE("%s", "[]"), "null");
    expect_bad(buf, CM_ERR_UNSUPPORTED, "neither a byte-level BPE");
    expect_bad("{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"vocab\": {\"a\": 0, \"b\": 2}}}",
               CM_ERR_FORMAT, "ids run to 2");
    expect_bad(
        "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"vocab\": {\"a\": 0, \"b\": -1}}}",
        CM_ERR_FORMAT, "token \"b\": the id should be an integer");
    expect_bad("{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"vocab\": {\"a\": 0, \"b\": 0}}}",
               CM_ERR_FORMAT, "id 0 is given to both");
    expect_bad(
        "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"added_tokens\": [{\"id\": 0, \"content\": \"x\"}],"
        " \"model\": {\"vocab\": {\"a\": 0}}}",
        CM_ERR_FORMAT, "added_tokens[0]: id 0 is \"x\" but the vocabulary has \"a\"");
    expect_bad("{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"vocab\": {}}}", CM_ERR_FORMAT,
               "the vocabulary is empty");
    expect_bad(
        "{\"normalizer\": {\"type\": \"NFKC\"}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": "
        "{\"vocab\": {\"a\": 0}}}",
        CM_ERR_UNSUPPORTED, "normalizer \"NFKC\" is not supported");
    /* SentencePiece style: merges are checked too */
    expect_bad(
        "{\"model\": {\"byte_fallback\": true, \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a q\"]}}",
        CM_ERR_FORMAT, "model.merges[0]: merge \"a q\" names an unknown token \"q\"");
    /* a file on disk names its path */
    char *dir = cm_test_tmpdir();
    cm_test_write_file(dir, "tokenizer.json", "{\"model\": {\"type\": \"Unigram\"}}");
    cm_tokenizer *t = NULL;
    CHECK(cm_tokenizer_open(dir, 0, &t) == CM_ERR_UNSUPPORTED);
    CHECK(strstr(cm_last_error(), "tokenizer.json: model.type \"Unigram\"") != NULL);
    CHECK(t == NULL);
    remove_dir(dir);
}

int main(void) {
    test_small();
    test_bad();
    test_config();
    test_folder_preference();
    test_gpt2();
    test_llama3();
    test_llama2_spm();
    test_bpe_gguf();
    test_save_hf();
    CHECK_DONE();
}
