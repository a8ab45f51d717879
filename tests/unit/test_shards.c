/* Token shards: writer -> reader round trips (uint16 and uint32, several shards, val cut at the end of the
 * stream, reads across shard boundaries), corrupt shards and manifests (each one error naming the file),
 * replacing a data set, abort; the corpus reader (separators, JSONL errors with lines); and
 * cm_tokenizer_split_point (encoding in pieces gives the whole text's ids). */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "camelid/corpus.h"
#include "camelid/file.h"
#include "camelid/shards.h"
#include "camelid/tokenizer.h"
#include "check.h"

static uint64_t rng = 88172645463325252ull;
static uint32_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static char *path_in(const char *dir, const char *name) {
    return cm_path_join(dir, name);
}

/* Write n_docs random documents; returns the whole stream (BOS included) in *stream. */
static int64_t write_set(const char *dir, int64_t vocab, int32_t bos, int64_t shard_tokens, int n_docs,
                         int64_t val, int32_t **stream, cm_shards_summary *sum) {
    cm_shards_writer_opts o = {.tokenizer = "/abs/tokenizer.json", .vocab_size = vocab, .bos_id = bos,
                               .shard_tokens = shard_tokens};
    cm_shards_writer *w;
    CHECK_OK(cm_shards_writer_open(dir, &o, &w));
    int32_t *all = malloc(100000 * sizeof *all);
    int64_t n = 0;
    for (int d = 0; d < n_docs; d++) {
        int32_t doc[64];
        int len = (int)(next_rand() % 40);
        for (int i = 0; i < len; i++) doc[i] = (int32_t)(next_rand() % (uint32_t)vocab);
        if (d == 0 && len > 0) doc[0] = (int32_t)vocab - 1; /* the largest id appears */
        all[n++] = bos;
        memcpy(all + n, doc, (size_t)len * sizeof *doc);
        n += len;
        if (d % 2) {
            CHECK_OK(cm_shards_writer_add_document(w, doc, (size_t)len));
        } else { /* in pieces */
            CHECK_OK(cm_shards_writer_begin_document(w));
            CHECK_OK(cm_shards_writer_append(w, doc, (size_t)(len / 2)));
            CHECK_OK(cm_shards_writer_append(w, doc + len / 2, (size_t)(len - len / 2)));
        }
    }
    CHECK(cm_shards_writer_n_tokens(w) == n);
    CHECK_OK(cm_shards_writer_commit(w, val, sum));
    *stream = all;
    return n;
}

static void check_split(const char *dir, const char *split, const int32_t *want, int64_t n, int64_t vocab) {
    cm_shards *s;
    CHECK_OK(cm_shards_open(dir, split, &s));
    if (!s) return;
    CHECK(cm_shards_n_tokens(s) == n);
    CHECK(cm_shards_vocab_size(s) == vocab);
    CHECK(strcmp(cm_shards_tokenizer(s), "/abs/tokenizer.json") == 0);
    uint32_t mx = 0;
    for (int64_t i = 0; i < n; i++) mx = (uint32_t)want[i] > mx ? (uint32_t)want[i] : mx;
    CHECK(cm_shards_max_token(s) == mx);
    int32_t *got = malloc((size_t)(n + 1) * sizeof *got);
    CHECK_OK(cm_shards_read(s, 0, (int)n, got));
    CHECK(memcmp(got, want, (size_t)n * sizeof *got) == 0);
    /* random windows across shard boundaries */
    for (int k = 0; k < 200; k++) {
        int64_t off = next_rand() % (uint64_t)n;
        int len = (int)(next_rand() % (uint32_t)(n - off + 1));
        CHECK_OK(cm_shards_read(s, off, len, got));
        CHECK(memcmp(got, want + off, (size_t)len * sizeof *got) == 0);
    }
    CHECK_FAIL(cm_shards_read(s, n - 2, 3, got), "outside");
    CHECK_FAIL(cm_shards_read(s, -1, 1, got), "outside");
    CHECK_OK(cm_shards_read(s, n, 0, got));
    free(got);
    cm_shards_close(s);
}

static void test_round_trip(void) {
    char *dir = cm_test_tmpdir();
    int32_t *stream;
    cm_shards_summary sum;
    int64_t n = write_set(dir, 1000, 3, 97, 200, 150, &stream, &sum);
    CHECK(sum.dtype == 2 && sum.documents == 200);
    CHECK(sum.train_tokens == n - 150 && sum.val_tokens == 150);
    CHECK(sum.train_shards == (int)((n - 150 + 96) / 97) && sum.val_shards == 2);
    check_split(dir, "train", stream, n - 150, 1000);
    check_split(dir, "val", stream + n - 150, 150, 1000);
    cm_shards *s;
    CHECK_OK(cm_shards_open(dir, "train", &s));
    CHECK(cm_shards_bos(s) == 3);
    cm_shards_close(s);
    CHECK_FAIL(cm_shards_open(dir, "test", &s), "unknown split");
    /* a shard is header + count x 2 bytes */
    char *p = path_in(dir, "train_00000.bin");
    struct stat st;
    CHECK(stat(p, &st) == 0 && st.st_size == 32 + 97 * 2);
    free(p);
    free(stream);

    /* replaced by a smaller set without val: the old shards go, nothing temporary stays */
    n = write_set(dir, 70000, 69999, 0, 20, 0, &stream, &sum);
    CHECK(sum.dtype == 4 && sum.train_shards == 1 && sum.val_shards == 0);
    check_split(dir, "train", stream, n, 70000);
    CHECK_FAIL(cm_shards_open(dir, "val", &s), "no val tokens");
    int files = 0;
    char *cmd = malloc(strlen(dir) + 64);
    sprintf(cmd, "ls -A %s | wc -l", dir);
    FILE *f = popen(cmd, "r");
    if (f && fscanf(f, "%d", &files) == 1) CHECK(files == 2); /* manifest.json, train_00000.bin */
    if (f) pclose(f);

    /* abort leaves the data set as it was */
    cm_shards_writer_opts o = {.tokenizer = "x", .vocab_size = 10, .bos_id = 0};
    cm_shards_writer *w;
    CHECK_OK(cm_shards_writer_open(dir, &o, &w));
    int32_t doc[3] = {1, 2, 3};
    CHECK_OK(cm_shards_writer_add_document(w, doc, 3));
    cm_shards_writer_abort(w);
    check_split(dir, "train", stream, n, 70000);
    free(stream);
    f = popen(cmd, "r");
    if (f && fscanf(f, "%d", &files) == 1) CHECK(files == 2);
    if (f) pclose(f);
    free(cmd);

    /* writer errors */
    CHECK_OK(cm_shards_writer_open(dir, &o, &w));
    int32_t bad[2] = {1, 10};
    CHECK_FAIL(cm_shards_writer_add_document(w, bad, 2), "outside the vocabulary");
    CHECK_FAIL(cm_shards_writer_append(w, bad, 2), "before any document");
    CHECK_OK(cm_shards_writer_add_document(w, doc, 3));
    CHECK_FAIL(cm_shards_writer_commit(w, 4, NULL), "leaves no training tokens");
    o.bos_id = 10;
    CHECK_FAIL(cm_shards_writer_open(dir, &o, &w), "BOS");
    free(dir);
}

/* ---- corruption: each case one error that names the file ---- */

static void patch(const char *path, long off, const void *bytes, size_t n) {
    FILE *f = fopen(path, "r+b");
    fseek(f, off, SEEK_SET);
    fwrite(bytes, 1, n, f);
    fclose(f);
}

static void expect_open_fail(const char *dir, const char *needle, const char *file) {
    cm_shards *s = NULL;
    CHECK_FAIL(cm_shards_open(dir, "train", &s), needle);
    if (!strstr(cm_last_error(), file)) {
        fprintf(stderr, "message \"%s\" does not name %s\n", cm_last_error(), file);
        check_failures++;
    }
    if (strchr(cm_last_error(), '\n')) {
        fprintf(stderr, "message \"%s\" is more than one line\n", cm_last_error());
        check_failures++;
    }
}

static void fresh(const char *dir) {
    int32_t *stream;
    cm_shards_summary sum;
    write_set(dir, 1000, 0, 50, 20, 0, &stream, &sum);
    free(stream);
}

static void test_corrupt(void) {
    char *dir = cm_test_tmpdir();
    char *shard = path_in(dir, "train_00000.bin");
    /* bytes written over a fresh shard (header: magic at 0, version 8, dtype 12, token count 16, reserved 24) */
    static const struct {
        long at;
        uint8_t bytes[8];
        size_t n;
        const char *needle;
    } patches[] = {
        {0, {'X', 'M', 'T', 'O', 'K', 'S', 'H', 'D'}, 8, "magic"},
        {16, {49}, 8, "manifest.json says 50"},
        /* token 7 becomes 1000, the vocabulary size */
        {32 + 7 * 2, {0xE8, 0x03}, 2, "token 1000 at position 7 is not below the vocabulary size 1000"},
        {8, {2}, 4, "version 2"},
        {12, {4}, 4, "manifest.json says 2"},
        {24, {1}, 1, "reserved"},
    };
    for (size_t i = 0; i < sizeof patches / sizeof *patches; i++) {
        fresh(dir);
        patch(shard, patches[i].at, patches[i].bytes, patches[i].n);
        expect_open_fail(dir, patches[i].needle, "train_00000.bin");
    }
    fresh(dir);
    CHECK(truncate(shard, 32 + 49 * 2) == 0);
    expect_open_fail(dir, "truncated or padded", "train_00000.bin");
    fresh(dir);
    CHECK(truncate(shard, 20) == 0);
    expect_open_fail(dir, "shorter than the 32-byte header", "train_00000.bin");
    fresh(dir);
    unlink(shard);
    expect_open_fail(dir, "cannot open", "train_00000.bin");

    /* manifests */
    static const char *const bad[][2] = {
        {"{", "invalid JSON"},
        {"[]", "expected a JSON object"},
        {"{\"format\": \"x\"}", "format"},
        {"{\"format\": \"camelid-token-shards\", \"version\": 2}", "version 2"},
        {"{\"format\": \"camelid-token-shards\", \"version\": 1, \"vocab_size\": 0}", "vocab_size"},
        {"{\"format\": \"camelid-token-shards\", \"version\": 1, \"vocab_size\": 70000, \"bos_id\": 0, \"dtype\": "
         "\"uint16\"}",
         "cannot hold"},
        {"{\"format\": \"camelid-token-shards\", \"version\": 1, \"vocab_size\": 10, \"bos_id\": 10}", "bos_id"},
        {"{\"format\": \"camelid-token-shards\", \"version\": 1, \"vocab_size\": 10, \"bos_id\": 0, \"dtype\": "
         "\"uint16\", \"tokenizer\": \"t\", \"documents\": 1, \"train\": {\"tokens\": 5, \"shards\": [{\"file\": "
         "\"../x.bin\", \"tokens\": 5}]}}",
         "plain file name"},
        {"{\"format\": \"camelid-token-shards\", \"version\": 1, \"vocab_size\": 10, \"bos_id\": 0, \"dtype\": "
         "\"uint16\", \"tokenizer\": \"t\", \"documents\": 1, \"train\": {\"tokens\": 6, \"shards\": [{\"file\": "
         "\"a.bin\", \"tokens\": 5}]}}",
         "add up to 5"},
        {"{\"format\": \"camelid-token-shards\", \"version\": 1, \"vocab_size\": 10, \"bos_id\": 0, \"dtype\": "
         "\"uint16\", \"tokenizer\": \"t\", \"documents\": 1, \"train\": {\"tokens\": 10, \"shards\": [{\"file\": "
         "\"a.bin\", \"tokens\": 5}, {\"file\": \"a.bin\", \"tokens\": 5}]}}",
         "listed twice"},
        {"{\"format\": \"camelid-token-shards\", \"version\": 1, \"vocab_size\": 10, \"bos_id\": 0, \"dtype\": "
         "\"uint16\", \"tokenizer\": \"t\", \"documents\": 1, \"val\": {\"tokens\": 0, \"shards\": []}}",
         "no train tokens"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cm_test_write_file(dir, "manifest.json", bad[i][0]);
        expect_open_fail(dir, bad[i][1], "manifest.json");
    }
    char *m = path_in(dir, "manifest.json");
    unlink(m);
    expect_open_fail(dir, "cannot open", "manifest.json");
    free(m);
    free(shard);
    free(dir);
}

/* ---- the corpus reader ---- */

typedef struct {
    char docs[16][64];
    int n;
} doc_list;

static cm_status collect(void *user, const char *text, size_t len) {
    doc_list *l = user;
    if (l->n < 16) snprintf(l->docs[l->n], sizeof l->docs[0], "%.*s", (int)len, text);
    l->n++;
    return CM_OK;
}

static void test_corpus(void) {
    doc_list l = {0};
    const char t1[] = "one\n<|endoftext|>\n two \n\n<|endoftext|><|endoftext|>\nthree<|endoftext|>\n  \n";
    CHECK_OK(cm_corpus_split_text(t1, sizeof t1 - 1, "<|endoftext|>", collect, &l));
    CHECK(l.n == 3 && !strcmp(l.docs[0], "one") && !strcmp(l.docs[1], "two") && !strcmp(l.docs[2], "three"));
    memset(&l, 0, sizeof l);
    const char t2[] = "  no separator here\n\n";
    CHECK_OK(cm_corpus_split_text(t2, sizeof t2 - 1, "<|endoftext|>", collect, &l));
    CHECK(l.n == 1 && !strcmp(l.docs[0], t2)); /* whole, byte for byte */
    memset(&l, 0, sizeof l);
    CHECK_OK(cm_corpus_split_text(t1, sizeof t1 - 1, NULL, collect, &l));
    CHECK(l.n == 1);
    memset(&l, 0, sizeof l);
    const char j[] = "{\"text\": \"a\", \"id\": 1}\n\n  \n{\"text\": \"b\\u0000c\"}\r\n{\"text\": \"\"}\n{\"text\":\"d\"}";
    CHECK_OK(cm_corpus_parse_jsonl(j, sizeof j - 1, "x.jsonl", collect, &l));
    CHECK(l.n == 3 && !strcmp(l.docs[0], "a") && l.docs[1][0] == 'b' && !strcmp(l.docs[2], "d"));
    CHECK_FAIL(cm_corpus_parse_jsonl("{\"text\": \"a\"}\n{\"text\": 1}\n", 26, "x.jsonl", collect, &l),
               "x.jsonl:2: \"text\" should be a string");
    CHECK_FAIL(cm_corpus_parse_jsonl("\n\n{\"txt\": \"a\"}", 14, "x.jsonl", collect, &l), "x.jsonl:3: the object has no");
    CHECK_FAIL(cm_corpus_parse_jsonl("[1]", 3, "x.jsonl", collect, &l), "x.jsonl:1: expected a JSON object");
    CHECK_FAIL(cm_corpus_parse_jsonl("{\"text\": \"a\"", 12, "x.jsonl", collect, &l), "x.jsonl:1: invalid JSON");
    CHECK_FAIL(cm_corpus_parse_jsonl("{\"text\": \"a\"} x", 15, "x.jsonl", collect, &l), "x.jsonl:1: invalid JSON");
    CHECK(cm_corpus_is_jsonl("a/b.JSONL") && !cm_corpus_is_jsonl("a.json"));
    CHECK_FAIL(cm_corpus_read("/nonexistent/file.txt", NULL, collect, &l), "/nonexistent/file.txt");
}

/* ---- encoding in pieces at cm_tokenizer_split_point ---- */

static void check_split_points(const cm_tokenizer *t, const char *text, size_t len, const char *what) {
    int32_t *whole;
    size_t nw;
    CHECK_OK(cm_tokenizer_encode(t, text, len, false, false, &whole, &nw));
    int32_t *parts = malloc((nw + len + 1) * sizeof *parts);
    size_t np = 0, pieces = 0;
    for (size_t pos = 0; pos < len;) {
        size_t end = cm_tokenizer_split_point(t, text, len, pos + 1 + next_rand() % 64);
        CHECK(end > pos && end <= len);
        int32_t *ids;
        size_t n;
        CHECK_OK(cm_tokenizer_encode(t, text + pos, end - pos, false, false, &ids, &n));
        memcpy(parts + np, ids, n * sizeof *ids);
        np += n;
        free(ids);
        pos = end;
        pieces++;
    }
    if (np != nw || memcmp(parts, whole, nw * sizeof *whole) != 0) {
        fprintf(stderr, "%s: encoding in %zu pieces differs from the whole\n", what, pieces);
        check_failures++;
    }
    free(parts);
    free(whole);
}

static void test_split_point(void) {
    const char *toks[] = {"tokenizers/gpt2-bpe/vocab.json", "tokenizers/llama3-bpe/encoder.json"};
    static const char alphabet[] = "aZ9 .,!'\n\n\r\t-\"(s";
    for (int k = 0; k < 2; k++) {
        cm_tokenizer *t;
        CHECK_OK(cm_tokenizer_open(cm_test_shared(toks[k]), 0, &t));
        if (!t) continue;
        for (int round = 0; round < 300; round++) {
            char text[400];
            size_t n = 50 + next_rand() % 300;
            for (size_t i = 0; i < n; i++) {
                uint32_t r = next_rand() % 40;
                text[i] = r < sizeof alphabet - 1 ? alphabet[r] : (char)('a' + r % 26);
                if (r == 39) text[i] = (char)0xC3; /* a stray UTF-8 lead byte now and then */
            }
            check_split_points(t, text, n, toks[k]);
        }
        size_t len;
        char *wp;
        CHECK_OK(cm_read_file(cm_test_shared("corpora/tinyshakespeare/input.txt"), 1 << 22, &wp, &len));
        check_split_points(t, wp, len > 200000 ? 200000 : len, "tinyshakespeare");
        free(wp);
        cm_tokenizer_close(t);
    }
    cm_tokenizer *spm;
    CHECK_OK(cm_tokenizer_open(cm_test_shared("models/stories260K/tok512.bin"), 0, &spm));
    CHECK(cm_tokenizer_split_point(spm, "ab\ncd", 5, 1) == 5);
    cm_tokenizer_close(spm);
}

int main(void) {
    test_round_trip();
    test_corrupt();
    test_corpus();
    test_split_point();
    CHECK_DONE();
}
