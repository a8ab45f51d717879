/* Byte-level BPE training: CS336's reference merges and vocabulary (corpus.en, vocab 500, <|endoftext|>), the
 * incremental counts against a from-scratch recount on random corpora (ties, overlaps, remade tokens), the
 * raw-byte tie rule, the written tokenizer.json + tokenizer_config.json as cm_tokenizer_open loads them
 * (BOS/EOS, encode -> decode round trips) and bad options. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/bpe_train.h"
#include "camelid/file.h"
#include "camelid/tokenizer.h"
#include "check.h"

static char *slurp(const char *path, size_t *n) {
    char *d;
    if (cm_read_file(path, (size_t)1 << 26, &d, n) != CM_OK) {
        fprintf(stderr, "%s\n", cm_last_error());
        exit(1);
    }
    return d;
}

static cm_bpe_trainer *train(const char *text, size_t len, int vocab, const char *const *specials, int n_sp) {
    cm_bpe_train_opts o = {.vocab_size = vocab, .specials = specials, .n_specials = n_sp,
                           .bos = n_sp ? 0 : -1, .eos = n_sp ? 0 : -1};
    cm_bpe_trainer *t = NULL;
    CHECK_OK(cm_bpe_trainer_open(&o, &t));
    if (!t) exit(1);
    CHECK_OK(cm_bpe_trainer_add(t, text, len));
    CHECK_OK(cm_bpe_trainer_run(t, NULL, NULL));
    return t;
}

/* encode -> decode gives the text back */
static void check_round_trip(const cm_tokenizer *tok, const char *text, size_t len, const char *what) {
    int32_t *ids;
    size_t n;
    char *back;
    size_t blen;
    bool bos = cm_tokenizer_bos(tok) >= 0;
    CHECK_OK(cm_tokenizer_encode(tok, text, len, bos, false, &ids, &n));
    CHECK_OK(cm_tokenizer_decode(tok, ids, n, &back, &blen));
    if (blen != len || memcmp(back, text, len) != 0) {
        fprintf(stderr, "round trip of %s differs (%zu -> %zu bytes)\n", what, len, blen);
        check_failures++;
    }
    if (n > 0 && bos) CHECK(ids[0] == cm_tokenizer_bos(tok));
    free(ids);
    free(back);
}

static void test_cs336_reference(void) {
    const char *dir = "tokenizers/cs336-bpe-train-reference";
    char p[512];
    snprintf(p, sizeof p, "%s/corpus.en", dir);
    size_t len;
    char *corpus = slurp(cm_test_shared(p), &len);
    const char *sp[] = {"<|endoftext|>"};
    cm_bpe_trainer *t = train(corpus, len, 500, sp, 1);
    CHECK(cm_bpe_trainer_vocab_size(t) == 500);
    CHECK(cm_bpe_trainer_n_merges(t) == 243);
    cm_tokenizer *tok = NULL;
    CHECK_OK(cm_bpe_trainer_tokenizer(t, &tok));
    char *json;
    size_t jlen;
    CHECK_OK(cm_tokenizer_serialize_hf_json(tok, &json, &jlen));
    json_error_t err;
    json_t *root = json_loads(json, 0, &err);
    CHECK(root != NULL);
    json_t *merges = json_object_get(json_object_get(root, "model"), "merges");
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");

    /* merges: the same list in the same order */
    snprintf(p, sizeof p, "%s/train-bpe-reference-merges.txt", dir);
    size_t mlen;
    char *ref = slurp(cm_test_shared(p), &mlen);
    size_t line = 0, bad = 0;
    for (char *s = ref, *nl; *s; s = nl + 1, line++) {
        nl = strchr(s, '\n');
        if (!nl) nl = s + strlen(s);
        const char *got = json_string_value(json_array_get(merges, line));
        if (!got || strlen(got) != (size_t)(nl - s) || memcmp(got, s, (size_t)(nl - s)) != 0) {
            if (bad++ < 5)
                fprintf(stderr, "merge %zu: got \"%s\", reference \"%.*s\"\n", line + 1, got ? got : "(none)",
                        (int)(nl - s), s);
        }
        if (!*nl) break;
    }
    CHECK(bad == 0);
    CHECK(line == json_array_size(merges));

    /* vocab: the same entries (the reference numbers the 256 bytes in bytes_to_unicode order, camelid in
     * byte order, so bytes compare as a set; specials and merged tokens have the same ids) */
    snprintf(p, sizeof p, "%s/train-bpe-reference-vocab.json", dir);
    json_t *rv = json_load_file(cm_test_shared(p), 0, &err);
    CHECK(rv && json_object_size(rv) == 500 && json_object_size(vocab) == 500);
    const char *key;
    json_t *val;
    size_t missing = 0;
    json_object_foreach(rv, key, val) {
        json_t *mine = json_object_get(vocab, key);
        json_int_t want = json_integer_value(val);
        if (!mine || (want > 256 && json_integer_value(mine) != want) ||
            (want <= 256 && (json_integer_value(mine) > 256)))
            if (missing++ < 5)
                fprintf(stderr, "vocab \"%s\": reference id %lld, got %lld\n", key, (long long)want,
                        mine ? (long long)json_integer_value(mine) : -1LL);
    }
    CHECK(missing == 0);
    CHECK(json_integer_value(json_object_get(vocab, "<|endoftext|>")) == 0);

    /* round trips with the trained tokenizer */
    check_round_trip(tok, corpus, len, "corpus.en");
    const char *others[] = {"tinystories_sample.txt", "address.txt", "german.txt"};
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/%s", dir, others[k]);
        size_t n;
        char *text = slurp(cm_test_shared(p), &n);
        check_round_trip(tok, text, n, others[k]);
        free(text);
    }
    const char weird[] = "\xff\xfe invalid \xc3( UTF-8 \xe2\x82 and a NUL \0 inside, emoji \xf0\x9f\x98\x80 tab\t";
    check_round_trip(tok, weird, sizeof weird - 1, "invalid UTF-8");

    json_decref(rv);
    json_decref(root);
    free(json);
    free(ref);
    cm_tokenizer_close(tok);
    cm_bpe_trainer_close(t);
    free(corpus);
}

/* ---- a from-scratch reference: symbols are byte strings, every pair recounted after every merge ---- */

typedef struct {
    char **sym;
    int n;
    int count;
} naive_word;

static int naive_cmp(const char *x, const char *y) {
    size_t lx = strlen(x), ly = strlen(y);
    int c = memcmp(x, y, lx < ly ? lx : ly);
    return c ? c : (lx > ly) - (lx < ly);
}

/* Words of a text of lowercase letters and single spaces: the GPT-2 regex gives "w" then " w" ... */
static int naive_words(const char *text, naive_word **out) {
    naive_word *w = NULL;
    int n = 0;
    for (const char *s = text; *s;) {
        const char *e = s + 1;
        while (*e && *e != ' ') e++;
        int k;
        for (k = 0; k < n; k++) {
            int len = 0;
            for (int i = 0; i < w[k].n; i++) len += (int)strlen(w[k].sym[i]);
            if (len != e - s) continue;
            int same = 1;
            for (int i = 0; i < w[k].n; i++)
                if (w[k].sym[i][0] != s[i]) same = 0;
            if (same) break;
        }
        if (k < n) {
            w[k].count++;
        } else {
            w = realloc(w, (size_t)(n + 1) * sizeof *w);
            w[n].n = (int)(e - s);
            w[n].count = 1;
            w[n].sym = malloc((size_t)w[n].n * sizeof(char *));
            for (int i = 0; i < w[n].n; i++) {
                w[n].sym[i] = calloc(2, 1);
                w[n].sym[i][0] = s[i];
            }
            n++;
        }
        s = e;
    }
    *out = w;
    return n;
}

static void test_against_recount(void) {
    uint64_t rng = 12345;
    for (int round = 0; round < 30; round++) {
        /* random words over a tiny alphabet: many ties, runs like "aaaa", remade tokens */
        char text[3000];
        size_t n = 0;
        int alphabet = 2 + round % 3;
        int n_words = 50 + round * 7;
        for (int k = 0; k < n_words; k++) {
            if (k) text[n++] = ' ';
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            int wl = 1 + (int)((rng >> 33) % 7);
            for (int i = 0; i < wl; i++) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                text[n++] = (char)('a' + (rng >> 33) % (uint64_t)alphabet);
            }
        }
        text[n] = 0;
        int want_vocab = 257 + 30;
        cm_bpe_trainer *t = train(text, n, want_vocab, (const char *const[]){"<|x|>"}, 1);

        naive_word *w;
        int nw = naive_words(text, &w);
        char **vocab = NULL; /* learned strings, to know when a merge remakes one */
        int n_vocab = 257, n_learned = 0, m = 0, bad = 0;
        while (n_vocab < want_vocab) {
            const char *ba = NULL, *bb = NULL;
            long best = 0;
            for (int k = 0; k < nw; k++)
                for (int i = 0; i + 1 < w[k].n; i++) {
                    const char *a = w[k].sym[i], *b = w[k].sym[i + 1];
                    long c = 0;
                    for (int k2 = 0; k2 < nw; k2++)
                        for (int j = 0; j + 1 < w[k2].n; j++)
                            if (!strcmp(w[k2].sym[j], a) && !strcmp(w[k2].sym[j + 1], b)) c += w[k2].count;
                    int cmp = ba ? naive_cmp(a, ba) : 1;
                    if (!cmp) cmp = naive_cmp(b, bb);
                    if (c > best || (c == best && cmp > 0)) {
                        best = c;
                        ba = a;
                        bb = b;
                    }
                }
            if (!ba) break;
            char *merged = malloc(strlen(ba) + strlen(bb) + 1);
            strcpy(merged, ba);
            strcat(merged, bb);
            /* the trainer's merge m must be (ba, bb) */
            int l, r, res;
            cm_bpe_trainer_merge(t, m, &l, &r, &res);
            size_t ll, lr, lres;
            const uint8_t *pl = cm_bpe_trainer_token(t, l, &ll), *pr = cm_bpe_trainer_token(t, r, &lr);
            const uint8_t *pres = cm_bpe_trainer_token(t, res, &lres);
            if (!pl || !pr || !pres || ll != strlen(ba) || memcmp(pl, ba, ll) || lr != strlen(bb) ||
                memcmp(pr, bb, lr) || lres != strlen(merged) || memcmp(pres, merged, lres)) {
                if (!bad++)
                    fprintf(stderr, "round %d merge %d: recount says \"%s\" \"%s\" (count %ld)\n", round, m, ba,
                            bb, best);
            }
            m++;
            int known = 0;
            for (int v = 0; v < n_learned; v++)
                if (!strcmp(vocab[v], merged)) known = 1;
            if (!known) {
                vocab = realloc(vocab, (size_t)(n_learned + 1) * sizeof *vocab);
                vocab[n_learned++] = strdup(merged);
                n_vocab++;
            }
            char *a = strdup(ba), *b = strdup(bb);
            for (int k = 0; k < nw; k++) {
                int o = 0;
                for (int i = 0; i < w[k].n;) {
                    if (i + 1 < w[k].n && !strcmp(w[k].sym[i], a) && !strcmp(w[k].sym[i + 1], b)) {
                        free(w[k].sym[i]);
                        free(w[k].sym[i + 1]);
                        w[k].sym[o++] = strdup(merged);
                        i += 2;
                    } else {
                        w[k].sym[o++] = w[k].sym[i++];
                    }
                }
                w[k].n = o;
            }
            free(a);
            free(b);
            free(merged);
        }
        CHECK(bad == 0);
        CHECK(m == cm_bpe_trainer_n_merges(t));
        CHECK(n_vocab == cm_bpe_trainer_vocab_size(t));
        for (int k = 0; k < nw; k++) {
            for (int i = 0; i < w[k].n; i++) free(w[k].sym[i]);
            free(w[k].sym);
        }
        free(w);
        for (int v = 0; v < n_learned; v++) free(vocab[v]);
        free(vocab);
        cm_bpe_trainer_close(t);
    }
}

/* Ties go to the greater pair in raw bytes: ('z','a') beats (' ','a'), though "Ġ" > "z" in bytes_to_unicode. */
static void test_tie_raw_bytes(void) {
    const char text[] = "za a";
    cm_bpe_trainer *t = train(text, sizeof text - 1, 257, NULL, 0);
    CHECK(cm_bpe_trainer_n_merges(t) == 1);
    int l, r;
    cm_bpe_trainer_merge(t, 0, &l, &r, NULL);
    CHECK(l == 'z' && r == 'a');
    cm_bpe_trainer_close(t);
    /* overlapping pairs count twice ("aaa" has two (a,a)), merged left to right */
    const char runs[] = "aaa bb bb";
    t = train(runs, sizeof runs - 1, 259, NULL, 0);
    /* (a,a) 2 = (' ',b) 2 = (b,b) 2: (b,b) is the greatest; then (' ',bb) 2 = (a,a) 2: (a,a) */
    cm_bpe_trainer_merge(t, 0, &l, &r, NULL);
    CHECK(l == 'b' && r == 'b');
    cm_bpe_trainer_merge(t, 1, &l, &r, NULL);
    CHECK(l == 'a' && r == 'a');
    cm_bpe_trainer_close(t);
}

/* Specials split the text and are never merged; the written files load with BOS/EOS. */
static void test_files_and_specials(void) {
    const char text[] = "hello<|bos|>hello world<|eos|>hel<|bos|>lo world world";
    const char *sp[] = {"<|bos|>", "<|eos|>"};
    cm_bpe_train_opts o = {.vocab_size = 280, .specials = sp, .n_specials = 2, .bos = 0, .eos = 1};
    cm_bpe_trainer *t;
    CHECK_OK(cm_bpe_trainer_open(&o, &t));
    CHECK_OK(cm_bpe_trainer_add(t, text, sizeof text - 1));
    CHECK(cm_bpe_trainer_n_words(t) == 4); /* "hello", " world", "hel", "lo": nothing spans a special */
    CHECK_OK(cm_bpe_trainer_run(t, NULL, NULL));
    for (int i = 0; i < cm_bpe_trainer_n_merges(t); i++) {
        int l, r, res;
        cm_bpe_trainer_merge(t, i, &l, &r, &res);
        CHECK(l >= 2 && r >= 2 && res >= 2 + 256);
        size_t n;
        const uint8_t *p = cm_bpe_trainer_token(t, res, &n);
        CHECK(p && !memmem(p, n, "<|", 2)); /* nothing learned across a special */
    }
    char *dir = cm_test_tmpdir();
    char *path = cm_path_join(dir, "tokenizer.json");
    CHECK_OK(cm_bpe_trainer_save(t, path));
    cm_tokenizer *tok;
    CHECK_OK(cm_tokenizer_open(path, 0, &tok));
    CHECK(cm_tokenizer_kind_of(tok) == CM_TOKENIZER_BPE);
    CHECK(cm_tokenizer_vocab_size(tok) == cm_bpe_trainer_vocab_size(t));
    CHECK(cm_tokenizer_bos(tok) == 0);
    CHECK(cm_tokenizer_eos(tok) == 1);
    CHECK(cm_tokenizer_add_bos(tok));
    CHECK(cm_tokenizer_type(tok, 1) == CM_TOKEN_CONTROL);
    check_round_trip(tok, "hello world, hello!", 19, "hello");
    /* the same ids as the tokenizer built in memory */
    cm_tokenizer *mem;
    CHECK_OK(cm_bpe_trainer_tokenizer(t, &mem));
    int32_t *a, *b;
    size_t na, nb;
    CHECK_OK(cm_tokenizer_encode(tok, text, sizeof text - 1, true, false, &a, &na));
    CHECK_OK(cm_tokenizer_encode(mem, text, sizeof text - 1, true, false, &b, &nb));
    CHECK(na == nb && !memcmp(a, b, na * sizeof *a));
    free(a);
    free(b);
    /* special text in a document is parsed only when asked */
    CHECK_OK(cm_tokenizer_encode_special(tok, "x<|eos|>", 8, false, false, true, &a, &na));
    CHECK(na == 2 && a[1] == 1);
    free(a);
    /* without tokenizer_config.json, tokenizer.json alone still gives BOS (its post-processor) */
    char *cfg = cm_path_join(dir, "tokenizer_config.json");
    CHECK(cm_path_exists(cfg));
    remove(cfg);
    cm_tokenizer *bare;
    CHECK_OK(cm_tokenizer_open(path, 0, &bare));
    CHECK(cm_tokenizer_bos(bare) == 0 && cm_tokenizer_add_bos(bare));
    cm_tokenizer_close(bare);
    remove(path);
    remove(dir);
    free(cfg);
    free(path);
    free(dir);
    cm_tokenizer_close(mem);
    cm_tokenizer_close(tok);
    cm_bpe_trainer_close(t);
}

static void test_bad_options(void) {
    cm_bpe_trainer *t;
    const char *sp[] = {"<s>", "<s>"};
    cm_bpe_train_opts o = {.vocab_size = 256, .specials = sp, .n_specials = 1, .bos = 0, .eos = 0};
    CHECK_FAIL(cm_bpe_trainer_open(&o, &t), "too small");
    o.vocab_size = 1000;
    o.n_specials = 2;
    CHECK_FAIL(cm_bpe_trainer_open(&o, &t), "twice");
    const char *bad[] = {"\xff"};
    o.specials = bad;
    o.n_specials = 1;
    CHECK_FAIL(cm_bpe_trainer_open(&o, &t), "UTF-8");
    o.specials = sp;
    o.bos = 3;
    CHECK_FAIL(cm_bpe_trainer_open(&o, &t), "BOS/EOS");
    /* a special spelled as a learned token's bytes_to_unicode form */
    const char *clash[] = {"Ġa"};
    cm_bpe_train_opts c = {.vocab_size = 300, .specials = clash, .n_specials = 1, .bos = 0, .eos = 0};
    CHECK_OK(cm_bpe_trainer_open(&c, &t));
    CHECK_OK(cm_bpe_trainer_add(t, " a a a", 6));
    CHECK_OK(cm_bpe_trainer_run(t, NULL, NULL));
    cm_tokenizer *tok;
    CHECK_FAIL(cm_bpe_trainer_tokenizer(t, &tok), "choose another");
    CHECK_FAIL(cm_bpe_trainer_add(t, "x", 1), "after training");
    cm_bpe_trainer_close(t);
}

/* A long repetitive run: merges stop where a token would pass CM_BPE_TRAIN_MAX_TOKEN_BYTES. */
static void test_token_length_limit(void) {
    size_t n = 3 * CM_BPE_TRAIN_MAX_TOKEN_BYTES;
    char *text = malloc(n);
    memset(text, 'a', n);
    cm_bpe_trainer *t = train(text, n, 400, NULL, 0);
    size_t longest = 0;
    for (int id = 0; id < cm_bpe_trainer_vocab_size(t); id++) {
        size_t len;
        cm_bpe_trainer_token(t, id, &len);
        longest = len > longest ? len : longest;
    }
    CHECK(longest == CM_BPE_TRAIN_MAX_TOKEN_BYTES); /* a, aa, aaaa, ... 2048 */
    CHECK(cm_bpe_trainer_vocab_size(t) == 256 + 11);
    cm_tokenizer *tok;
    CHECK_OK(cm_bpe_trainer_tokenizer(t, &tok));
    check_round_trip(tok, text, n, "a run of a");
    cm_tokenizer_close(tok);
    cm_bpe_trainer_close(t);
    free(text);
}

int main(void) {
    test_cs336_reference();
    test_against_recount();
    test_tie_raw_bytes();
    test_files_and_specials();
    test_bad_options();
    test_token_length_limit();
    CHECK_DONE();
}
