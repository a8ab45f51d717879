/* Byte-level BPE training (see include/camelid/bpe_train.h).
 *
 * Phase 1 (cm_bpe_trainer_add): the text is cut at special tokens and pre-tokenized with the GPT-2 regex
 * exactly as the encoder does it (bpe.c: bytes the regex skips, i.e. invalid UTF-8, are pre-tokens of their
 * own); distinct pre-tokens ("words") are counted in a hash map.
 * Phase 2 (cm_bpe_trainer_run): every word becomes a run of token ids (its bytes). Pair counts are kept
 * exactly: pair -> count (weighted by word frequency, overlapping occurrences counted, as a from-scratch
 * recount would) and pair -> the words that hold it (appended to, never pruned: a stale entry is simply found
 * not to hold the pair). An indexed max-heap orders the pairs by (count, raw bytes of left, raw bytes of
 * right). A merge rewrites only the words listed for its pair, left to right without overlap, and moves the
 * counts of the neighbouring pairs as HF tokenizers' Word::merge does, so the heap always holds the counts a
 * recount would give. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/bpe_train.h"
#include "camelid/file.h"
#include "tokenizer/bpe_internal.h"
#include "tokenizer/spm_internal.h"

#define NAME "train-tokenizer"
#define EMPTY UINT32_MAX
/* A pre-token longer than this is refused (symbol positions are 32-bit). */
#define MAX_WORD_LEN ((size_t)1 << 30)

typedef struct {
    int32_t *v;
    uint32_t n, cap;
} ivec;

typedef struct {
    int32_t a, b;
    int32_t heap_pos; /* -1: not in the heap (count 0, or banned) */
    bool banned;      /* its token would be too long: never merged */
    int64_t count;
    ivec words;
} bpe_pair;

struct cm_bpe_trainer {
    int vocab_max, n_specials, bos, eos;
    char **special;
    size_t *special_len;
    pcre2_code *re;
    pcre2_match_data *md;
    /* words: distinct pre-tokens */
    uint8_t *wbytes;
    size_t wbytes_n, wbytes_cap;
    uint64_t *w_off, *w_hash;
    uint32_t *w_len;
    int64_t *w_count;
    size_t n_words, cap_words;
    uint32_t *wslots;
    size_t wmask;
    uint64_t n_bytes;
    bool ran;
    /* tokens: specials, the 256 bytes, then one per new merge result */
    uint8_t *tbytes;
    size_t tbytes_n, tbytes_cap;
    size_t *t_off;
    uint32_t *t_len;
    int n_tokens, cap_tokens;
    uint32_t *tslots; /* bytes -> id over the byte and learned tokens */
    size_t tmask;
    int32_t *m_left, *m_right, *m_result;
    int n_merges, cap_merges;
};

/* ---------------------------------------------------------------------------------------------------------
 * Small helpers */

static uint64_t hash_bytes(const uint8_t *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t k;
        memcpy(&k, s + i, 8);
        h = (h ^ k) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
    }
    uint64_t k = 0;
    for (size_t j = 0; i + j < n; j++) k |= (uint64_t)s[i + j] << (8 * j);
    h = (h ^ k) * 0xC4CEB9FE1A85EC53ull;
    return h ^ (h >> 29);
}

static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

static bool ivec_push(ivec *v, int32_t x) {
    if (v->n == v->cap) {
        uint32_t c = v->cap ? v->cap * 2 : 4;
        int32_t *q = realloc(v->v, c * sizeof *q);
        if (!q) return false;
        v->v = q;
        v->cap = c;
    }
    v->v[v->n++] = x;
    return true;
}

static bool valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (k == 0 || i + k > n) return false;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return false;
        if (k == 3 && ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F))) return false;
        if (k == 4 && ((c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] > 0x8F))) return false;
        i += k;
    }
    return true;
}

/* ---------------------------------------------------------------------------------------------------------
 * Open / close */

void cm_bpe_trainer_close(cm_bpe_trainer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_specials; i++) free(t->special[i]);
    free(t->special);
    free(t->special_len);
    pcre2_match_data_free(t->md);
    pcre2_code_free(t->re);
    free(t->wbytes);
    free(t->w_off);
    free(t->w_hash);
    free(t->w_len);
    free(t->w_count);
    free(t->wslots);
    free(t->tbytes);
    free(t->t_off);
    free(t->t_len);
    free(t->tslots);
    free(t->m_left);
    free(t->m_right);
    free(t->m_result);
    free(t);
}

cm_status cm_bpe_trainer_open(const cm_bpe_train_opts *o, cm_bpe_trainer **out) {
    *out = NULL;
    if (!o || o->n_specials < 0 || (o->n_specials > 0 && !o->specials))
        return cm_error(CM_ERR_ARG, NAME ": bad options");
    if (o->n_specials > 1 << 20) return cm_error(CM_ERR_ARG, NAME ": %d special tokens is too many", o->n_specials);
    int min_vocab = o->n_specials + 256;
    if (o->vocab_size < min_vocab)
        return cm_error(CM_ERR_ARG,
                        NAME ": a vocabulary of %d is too small: the %d special token(s) and the 256 bytes "
                             "need %d",
                        o->vocab_size, o->n_specials, min_vocab);
    if (o->vocab_size > CM_SPM_MAX_VOCAB)
        return cm_error(CM_ERR_ARG, NAME ": a vocabulary of %d is more than the %d supported", o->vocab_size,
                        CM_SPM_MAX_VOCAB);
    if (o->bos < -1 || o->bos >= o->n_specials || o->eos < -1 || o->eos >= o->n_specials)
        return cm_error(CM_ERR_ARG, NAME ": BOS/EOS must name one of the special tokens");
    for (int i = 0; i < o->n_specials; i++) {
        const char *s = o->specials[i];
        size_t n = s ? strlen(s) : 0;
        if (n == 0) return cm_error(CM_ERR_ARG, NAME ": special token %d is empty", i);
        if (n > CM_SPM_MAX_PIECE_LEN)
            return cm_error(CM_ERR_ARG, NAME ": special token %d is longer than %d bytes", i,
                            CM_SPM_MAX_PIECE_LEN);
        if (!valid_utf8((const unsigned char *)s, n))
            return cm_error(CM_ERR_ARG, NAME ": special token %d is not valid UTF-8", i);
        for (int j = 0; j < i; j++)
            if (strcmp(o->specials[j], s) == 0)
                return cm_error(CM_ERR_ARG, NAME ": special token \"%.64s\" is given twice", s);
    }
    cm_bpe_trainer *t = calloc(1, sizeof *t);
    if (!t) return cm_error(CM_ERR_NOMEM, NAME ": out of memory");
    t->vocab_max = o->vocab_size;
    t->bos = o->bos;
    t->eos = o->eos;
    t->special = calloc((size_t)o->n_specials + 1, sizeof *t->special);
    t->special_len = calloc((size_t)o->n_specials + 1, sizeof *t->special_len);
    if (!t->special || !t->special_len) goto nomem;
    for (int i = 0; i < o->n_specials; i++) {
        if (!(t->special[i] = strdup(o->specials[i]))) goto nomem;
        t->special_len[i] = strlen(o->specials[i]);
        t->n_specials++;
    }
    int errcode;
    PCRE2_SIZE erroff;
    t->re = pcre2_compile((PCRE2_SPTR)cm_bpe_regex(CM_BPE_PRE_GPT2), PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &errcode, &erroff, NULL);
    if (!t->re) {
        cm_bpe_trainer_close(t);
        return cm_error(CM_ERR_UNSUPPORTED, NAME ": the GPT-2 regex does not compile");
    }
    (void)pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* optional: the interpreter works without it */
    t->md = pcre2_match_data_create_from_pattern(t->re, NULL);
    t->wmask = (1u << 16) - 1;
    t->wslots = malloc((t->wmask + 1) * sizeof *t->wslots);
    if (!t->md || !t->wslots) goto nomem;
    memset(t->wslots, 0xff, (t->wmask + 1) * sizeof *t->wslots);
    *out = t;
    return CM_OK;
nomem:
    cm_bpe_trainer_close(t);
    return cm_error(CM_ERR_NOMEM, NAME ": out of memory");
}

/* ---------------------------------------------------------------------------------------------------------
 * Phase 1: counting pre-tokens */

static cm_status rehash_words(cm_bpe_trainer *t) {
    size_t n = (t->wmask + 1) * 2;
    uint32_t *s = malloc(n * sizeof *s);
    if (!s) return cm_error(CM_ERR_NOMEM, NAME ": out of memory for %zu words", t->n_words);
    memset(s, 0xff, n * sizeof *s);
    for (size_t w = 0; w < t->n_words; w++) {
        size_t i = (size_t)t->w_hash[w] & (n - 1);
        while (s[i] != EMPTY) i = (i + 1) & (n - 1);
        s[i] = (uint32_t)w;
    }
    free(t->wslots);
    t->wslots = s;
    t->wmask = n - 1;
    return CM_OK;
}

static cm_status count_word(cm_bpe_trainer *t, const uint8_t *s, size_t n) {
    if (n == 0) return CM_OK;
    if (n > MAX_WORD_LEN) return cm_error(CM_ERR_ARG, NAME ": a pre-token of %zu bytes is too long", n);
    t->n_bytes += n;
    uint64_t h = hash_bytes(s, n);
    size_t i = (size_t)h & t->wmask;
    for (;; i = (i + 1) & t->wmask) {
        uint32_t w = t->wslots[i];
        if (w == EMPTY) break;
        if (t->w_hash[w] == h && t->w_len[w] == n && memcmp(t->wbytes + t->w_off[w], s, n) == 0) {
            t->w_count[w]++;
            return CM_OK;
        }
    }
    if (t->n_words >= EMPTY - 1) return cm_error(CM_ERR_NOMEM, NAME ": too many distinct pre-tokens");
    size_t need = t->n_words + 1, c = t->cap_words;
    if (need > c) {
        size_t c2 = c;
        if (!grow((void **)&t->w_off, &c2, need, sizeof *t->w_off)) goto nomem;
        c2 = c;
        if (!grow((void **)&t->w_hash, &c2, need, sizeof *t->w_hash)) goto nomem;
        c2 = c;
        if (!grow((void **)&t->w_len, &c2, need, sizeof *t->w_len)) goto nomem;
        c2 = c;
        if (!grow((void **)&t->w_count, &c2, need, sizeof *t->w_count)) goto nomem;
        t->cap_words = c2;
    }
    if (!grow((void **)&t->wbytes, &t->wbytes_cap, t->wbytes_n + n, 1)) goto nomem;
    size_t w = t->n_words++;
    memcpy(t->wbytes + t->wbytes_n, s, n);
    t->w_off[w] = t->wbytes_n;
    t->wbytes_n += n;
    t->w_len[w] = (uint32_t)n;
    t->w_hash[w] = h;
    t->w_count[w] = 1;
    t->wslots[i] = (uint32_t)w;
    if (t->n_words * 2 > t->wmask + 1) CM_TRY(rehash_words(t));
    return CM_OK;
nomem:
    return cm_error(CM_ERR_NOMEM, NAME ": out of memory for %zu pre-tokens", t->n_words);
}

/* Text without special tokens, pre-tokenized as bpe.c's encode_segment does. */
static cm_status count_segment(cm_bpe_trainer *t, const uint8_t *s, size_t n) {
    size_t off = 0;
    while (off < n) {
        int rc = pcre2_match(t->re, (PCRE2_SPTR)s, n, off, 0, t->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) return count_word(t, s + off, n - off);
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return cm_error(CM_ERR_ARG, NAME ": the pre-tokenizer regex failed at byte %zu: %s", off,
                            (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
        size_t ms = ov[0], me = ov[1];
        if (ms < off || me < ms || me > n) return cm_error(CM_ERR_ARG, NAME ": bad regex match");
        if (ms > off) CM_TRY(count_word(t, s + off, ms - off));
        if (me == ms) me = ms + 1;
        CM_TRY(count_word(t, s + ms, me - ms));
        off = me;
    }
    return CM_OK;
}

cm_status cm_bpe_trainer_add(cm_bpe_trainer *t, const char *text, size_t len) {
    if (t->ran) return cm_error(CM_ERR_ARG, NAME ": text added after training");
    if (!text && len) return cm_error(CM_ERR_ARG, NAME ": text is NULL");
    const uint8_t *s = (const uint8_t *)text;
    if (t->n_specials == 0) return count_segment(t, s, len);
    /* next occurrence of each special at or after pos (len: none) */
    size_t *next = malloc((size_t)t->n_specials * sizeof *next);
    if (!next) return cm_error(CM_ERR_NOMEM, NAME ": out of memory");
    size_t pos = 0;
    cm_status st = CM_OK;
    for (int k = 0; k < t->n_specials; k++) {
        const void *p = memmem(s, len, t->special[k], t->special_len[k]);
        next[k] = p ? (size_t)((const uint8_t *)p - s) : len;
    }
    while (pos <= len) {
        int best = -1;
        for (int k = 0; k < t->n_specials; k++) {
            if (next[k] < pos) { /* passed over (inside a special taken before): look again */
                const void *p = memmem(s + pos, len - pos, t->special[k], t->special_len[k]);
                next[k] = p ? (size_t)((const uint8_t *)p - s) : len;
            }
            if (next[k] >= len) continue;
            /* the earliest; at one place, the longest (as CS336 orders its alternation) */
            if (best < 0 || next[k] < next[best] ||
                (next[k] == next[best] && t->special_len[k] > t->special_len[best]))
                best = k;
        }
        size_t end = best < 0 ? len : next[best];
        if ((st = count_segment(t, s + pos, end - pos))) break;
        if (best < 0) break;
        pos = end + t->special_len[best];
    }
    free(next);
    return st;
}

size_t cm_bpe_trainer_n_words(const cm_bpe_trainer *t) {
    return t->n_words;
}

uint64_t cm_bpe_trainer_n_bytes(const cm_bpe_trainer *t) {
    return t->n_bytes;
}

/* ---------------------------------------------------------------------------------------------------------
 * Tokens */

static int token_lookup(const cm_bpe_trainer *t, const uint8_t *s, size_t n) {
    for (size_t i = (size_t)hash_bytes(s, n) & t->tmask;; i = (i + 1) & t->tmask) {
        uint32_t id = t->tslots[i];
        if (id == EMPTY) return -1;
        if (t->t_len[id] == n && memcmp(t->tbytes + t->t_off[id], s, n) == 0) return (int)id;
    }
}

static void token_index(cm_bpe_trainer *t, int id) {
    size_t i = (size_t)hash_bytes(t->tbytes + t->t_off[id], t->t_len[id]) & t->tmask;
    while (t->tslots[i] != EMPTY) i = (i + 1) & t->tmask;
    t->tslots[i] = (uint32_t)id;
}

static cm_status token_add(cm_bpe_trainer *t, const uint8_t *s, size_t n, bool indexed) {
    if (t->n_tokens >= t->cap_tokens) return cm_error(CM_ERR_ARG, NAME ": vocabulary overflow");
    if (!grow((void **)&t->tbytes, &t->tbytes_cap, t->tbytes_n + n, 1))
        return cm_error(CM_ERR_NOMEM, NAME ": out of memory for tokens");
    int id = t->n_tokens++;
    memcpy(t->tbytes + t->tbytes_n, s, n);
    t->t_off[id] = t->tbytes_n;
    t->t_len[id] = (uint32_t)n;
    t->tbytes_n += n;
    if (indexed) token_index(t, id);
    return CM_OK;
}

const uint8_t *cm_bpe_trainer_token(const cm_bpe_trainer *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_tokens) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->t_len[id];
    return t->tbytes + t->t_off[id];
}

int cm_bpe_trainer_vocab_size(const cm_bpe_trainer *t) {
    return t->n_tokens;
}

int cm_bpe_trainer_n_merges(const cm_bpe_trainer *t) {
    return t->n_merges;
}

void cm_bpe_trainer_merge(const cm_bpe_trainer *t, int i, int *left, int *right, int *result) {
    bool ok = i >= 0 && i < t->n_merges;
    if (left) *left = ok ? t->m_left[i] : -1;
    if (right) *right = ok ? t->m_right[i] : -1;
    if (result) *result = ok ? t->m_result[i] : -1;
}

/* ---------------------------------------------------------------------------------------------------------
 * Phase 2: merging */

typedef struct {
    cm_bpe_trainer *t;
    bpe_pair *pairs;
    size_t n_pairs, cap_pairs;
    int32_t *pslots; /* (a, b) -> pair index, -1 empty */
    size_t pmask;
    int32_t *heap; /* each pair at most once */
    size_t n_heap, heap_cap;
    int32_t *sym;      /* every word's tokens, at the word's byte offset */
    uint32_t *cur_len; /* tokens in each word now */
    uint32_t *stamp;   /* last merge that rewrote each word (+1) */
    bool oom;
} run_state;

static inline size_t pair_hash(int32_t a, int32_t b) {
    uint64_t h = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h ^ (h >> 29));
}

/* Raw-byte order of two tokens: memcmp, then the shorter first (Python's bytes ordering). */
static int token_cmp(const cm_bpe_trainer *t, int32_t x, int32_t y) {
    if (x == y) return 0;
    size_t lx = t->t_len[x], ly = t->t_len[y];
    int c = memcmp(t->tbytes + t->t_off[x], t->tbytes + t->t_off[y], lx < ly ? lx : ly);
    if (c) return c;
    return (lx > ly) - (lx < ly);
}

/* Does pair p go before pair q: more frequent, then the greater (left, right) in raw bytes. */
static bool pair_before(const run_state *r, int32_t p, int32_t q) {
    const bpe_pair *x = &r->pairs[p], *y = &r->pairs[q];
    if (x->count != y->count) return x->count > y->count;
    int c = token_cmp(r->t, x->a, y->a);
    if (c) return c > 0;
    return token_cmp(r->t, x->b, y->b) > 0;
}

static void heap_set(run_state *r, size_t i, int32_t p) {
    r->heap[i] = p;
    r->pairs[p].heap_pos = (int32_t)i;
}

static void sift_up(run_state *r, size_t i) {
    int32_t p = r->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(r, p, r->heap[parent])) break;
        heap_set(r, i, r->heap[parent]);
        i = parent;
    }
    heap_set(r, i, p);
}

static void sift_down(run_state *r, size_t i) {
    int32_t p = r->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= r->n_heap) break;
        if (c + 1 < r->n_heap && pair_before(r, r->heap[c + 1], r->heap[c])) c++;
        if (!pair_before(r, r->heap[c], p)) break;
        heap_set(r, i, r->heap[c]);
        i = c;
    }
    heap_set(r, i, p);
}

static void heap_remove(run_state *r, int32_t p) {
    size_t i = (size_t)r->pairs[p].heap_pos;
    r->pairs[p].heap_pos = -1;
    int32_t last = r->heap[--r->n_heap];
    if (i == r->n_heap) return;
    heap_set(r, i, last);
    sift_up(r, i);
    sift_down(r, (size_t)r->pairs[last].heap_pos);
}

static bool rehash_pairs(run_state *r) {
    size_t n = (r->pmask + 1) * 2;
    int32_t *s = malloc(n * sizeof *s);
    if (!s) return false;
    memset(s, 0xff, n * sizeof *s);
    for (size_t p = 0; p < r->n_pairs; p++) {
        size_t i = pair_hash(r->pairs[p].a, r->pairs[p].b) & (n - 1);
        while (s[i] >= 0) i = (i + 1) & (n - 1);
        s[i] = (int32_t)p;
    }
    free(r->pslots);
    r->pslots = s;
    r->pmask = n - 1;
    return true;
}

/* The index of pair (a, b), created with count 0 if new; -1 when out of memory. */
static int32_t pair_get(run_state *r, int32_t a, int32_t b) {
    size_t i = pair_hash(a, b) & r->pmask;
    for (;; i = (i + 1) & r->pmask) {
        int32_t p = r->pslots[i];
        if (p < 0) break;
        if (r->pairs[p].a == a && r->pairs[p].b == b) return p;
    }
    if (r->n_pairs >= INT32_MAX - 1 ||
        !grow((void **)&r->pairs, &r->cap_pairs, r->n_pairs + 1, sizeof *r->pairs))
        return -1;
    int32_t p = (int32_t)r->n_pairs++;
    r->pairs[p] = (bpe_pair){.a = a, .b = b, .heap_pos = -1};
    r->pslots[i] = p;
    if (r->n_pairs * 2 > r->pmask + 1 && !rehash_pairs(r)) return -1;
    return p;
}

/* Move pair (a, b)'s count by delta (the frequency of word w); a gain records w in the pair's word list. */
static void pair_move(run_state *r, int32_t a, int32_t b, int64_t delta, int32_t w) {
    int32_t p = pair_get(r, a, b);
    if (p < 0) {
        r->oom = true;
        return;
    }
    bpe_pair *x = &r->pairs[p];
    x->count += delta;
    if (delta > 0 && (x->words.n == 0 || x->words.v[x->words.n - 1] != w) && !ivec_push(&x->words, w))
        r->oom = true;
    if (x->banned) return;
    if (x->count > 0) {
        if (x->heap_pos < 0) {
            if (!grow((void **)&r->heap, &r->heap_cap, r->n_heap + 1, sizeof *r->heap)) {
                r->oom = true;
                return;
            }
            r->heap[r->n_heap] = p;
            x->heap_pos = (int32_t)r->n_heap++;
            sift_up(r, (size_t)x->heap_pos);
        } else if (delta > 0) {
            sift_up(r, (size_t)x->heap_pos);
        } else {
            sift_down(r, (size_t)x->heap_pos);
        }
    } else if (x->heap_pos >= 0) {
        heap_remove(r, p);
    }
}

/* Rewrite word w with (a, b) -> c, left to right without overlap, moving the pair counts. */
static void merge_word(run_state *r, int32_t w, int32_t a, int32_t b, int32_t c) {
    const cm_bpe_trainer *t = r->t;
    int32_t *s = r->sym + t->w_off[w];
    uint32_t n = r->cur_len[w], o = 0;
    int64_t f = t->w_count[w];
    for (uint32_t i = 0; i < n;) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            pair_move(r, a, b, -f, w);
            if (o > 0) { /* the left neighbour as it is now (possibly c, from the previous match) */
                pair_move(r, s[o - 1], a, -f, w);
                pair_move(r, s[o - 1], c, f, w);
            }
            if (i + 2 < n) { /* the right neighbour, not yet rewritten */
                pair_move(r, b, s[i + 2], -f, w);
                pair_move(r, c, s[i + 2], f, w);
            }
            s[o++] = c;
            i += 2;
        } else {
            s[o++] = s[i++];
        }
    }
    r->cur_len[w] = o;
}

static void run_free(run_state *r) {
    for (size_t p = 0; p < r->n_pairs; p++) free(r->pairs[p].words.v);
    free(r->pairs);
    free(r->pslots);
    free(r->heap);
    free(r->sym);
    free(r->cur_len);
    free(r->stamp);
}

cm_status cm_bpe_trainer_run(cm_bpe_trainer *t, cm_bpe_train_progress progress, void *user) {
    if (t->ran) return cm_error(CM_ERR_ARG, NAME ": already trained");
    t->ran = true;
    /* the vocabulary: specials, then the 256 bytes */
    t->cap_tokens = t->vocab_max;
    int max_merges = t->vocab_max - t->n_specials - 256;
    t->t_off = malloc((size_t)t->cap_tokens * sizeof *t->t_off);
    t->t_len = malloc((size_t)t->cap_tokens * sizeof *t->t_len);
    size_t nslots = 16;
    while (nslots < (size_t)t->cap_tokens * 2) nslots *= 2;
    t->tslots = malloc(nslots * sizeof *t->tslots);
    t->tmask = nslots - 1;
    /* merges can outnumber new tokens (a merge may remake an existing token); each removes at least one
     * token from the words, so there are at most as many as the corpus has bytes */
    t->cap_merges = max_merges > 0 ? max_merges : 1;
    t->m_left = malloc((size_t)t->cap_merges * sizeof *t->m_left);
    t->m_right = malloc((size_t)t->cap_merges * sizeof *t->m_right);
    t->m_result = malloc((size_t)t->cap_merges * sizeof *t->m_result);
    if (!t->t_off || !t->t_len || !t->tslots || !t->m_left || !t->m_right || !t->m_result)
        return cm_error(CM_ERR_NOMEM, NAME ": out of memory for a vocabulary of %d", t->vocab_max);
    memset(t->tslots, 0xff, nslots * sizeof *t->tslots);
    for (int i = 0; i < t->n_specials; i++)
        CM_TRY(token_add(t, (const uint8_t *)t->special[i], t->special_len[i], false));
    for (int b = 0; b < 256; b++) {
        uint8_t byte = (uint8_t)b;
        CM_TRY(token_add(t, &byte, 1, true));
    }
    const int32_t base = (int32_t)t->n_specials;

    run_state r = {.t = t, .pmask = (1u << 16) - 1};
    cm_status st = CM_OK;
    r.pslots = malloc((r.pmask + 1) * sizeof *r.pslots);
    r.sym = malloc((t->wbytes_n ? t->wbytes_n : 1) * sizeof *r.sym);
    r.cur_len = malloc((t->n_words ? t->n_words : 1) * sizeof *r.cur_len);
    r.stamp = calloc(t->n_words ? t->n_words : 1, sizeof *r.stamp);
    if (!r.pslots || !r.sym || !r.cur_len || !r.stamp) goto nomem;
    memset(r.pslots, 0xff, (r.pmask + 1) * sizeof *r.pslots);
    for (size_t i = 0; i < t->wbytes_n; i++) r.sym[i] = base + t->wbytes[i];
    for (size_t w = 0; w < t->n_words; w++) {
        r.cur_len[w] = t->w_len[w];
        const int32_t *s = r.sym + t->w_off[w];
        for (uint32_t i = 0; i + 1 < t->w_len[w]; i++) {
            int32_t p = pair_get(&r, s[i], s[i + 1]);
            if (p < 0) goto nomem;
            bpe_pair *x = &r.pairs[p];
            x->count += t->w_count[w];
            if ((x->words.n == 0 || x->words.v[x->words.n - 1] != (int32_t)w) && !ivec_push(&x->words, (int32_t)w))
                goto nomem;
        }
    }
    if (!grow((void **)&r.heap, &r.heap_cap, r.n_pairs + 1, sizeof *r.heap)) goto nomem;
    for (size_t p = 0; p < r.n_pairs; p++)
        if (r.pairs[p].count > 0) {
            r.heap[r.n_heap] = (int32_t)p;
            r.pairs[p].heap_pos = (int32_t)r.n_heap++;
        }
    for (size_t i = r.n_heap / 2; i-- > 0;) sift_down(&r, i);

    uint8_t *buf = NULL;
    size_t buf_cap = 0;
    while (t->n_tokens < t->vocab_max && r.n_heap > 0) {
        int32_t p = r.heap[0];
        int32_t a = r.pairs[p].a, b = r.pairs[p].b;
        size_t la = t->t_len[a], lb = t->t_len[b];
        if (la + lb > CM_BPE_TRAIN_MAX_TOKEN_BYTES) {
            /* its bytes_to_unicode form could pass the longest piece a tokenizer may hold: skip the pair */
            r.pairs[p].banned = true;
            heap_remove(&r, p);
            continue;
        }
        if (!grow((void **)&buf, &buf_cap, la + lb, 1)) goto nomem_buf;
        memcpy(buf, t->tbytes + t->t_off[a], la);
        memcpy(buf + la, t->tbytes + t->t_off[b], lb);
        int c = token_lookup(t, buf, la + lb);
        if (c < 0) {
            c = t->n_tokens;
            if ((st = token_add(t, buf, la + lb, true))) break;
        }
        if (t->n_merges == t->cap_merges) {
            int cap = t->cap_merges * 2;
            int32_t *l = realloc(t->m_left, (size_t)cap * sizeof *l);
            if (l) t->m_left = l;
            int32_t *rr = realloc(t->m_right, (size_t)cap * sizeof *rr);
            if (rr) t->m_right = rr;
            int32_t *res = realloc(t->m_result, (size_t)cap * sizeof *res);
            if (res) t->m_result = res;
            if (!l || !rr || !res) goto nomem_buf;
            t->cap_merges = cap;
        }
        t->m_left[t->n_merges] = a;
        t->m_right[t->n_merges] = b;
        t->m_result[t->n_merges] = c;
        t->n_merges++;
        ivec words = r.pairs[p].words; /* (a, b) never gains a word again: c is neither a nor b */
        r.pairs[p].words = (ivec){0};
        uint32_t mark = (uint32_t)t->n_merges;
        for (uint32_t k = 0; k < words.n && !r.oom; k++) {
            int32_t w = words.v[k];
            if (r.stamp[w] == mark) continue;
            r.stamp[w] = mark;
            merge_word(&r, w, a, b, c);
        }
        free(words.v);
        if (r.oom) goto nomem_buf;
        if (r.pairs[p].heap_pos >= 0) heap_remove(&r, p); /* its count is 0 now; never reached otherwise */
        if (progress && (t->n_merges % 64 == 0)) progress(user, t->n_merges, max_merges);
    }
    free(buf);
    if (!st && progress) progress(user, t->n_merges, max_merges);
    run_free(&r);
    return st;
nomem_buf:
    free(buf);
nomem:
    run_free(&r);
    return cm_error(CM_ERR_NOMEM, NAME ": out of memory while training (%zu pairs)", r.n_pairs);
}

/* ---------------------------------------------------------------------------------------------------------
 * The tokenizer and its files */

/* Token id in bytes_to_unicode form, into buf (room for 2 x its bytes). */
static size_t b2u_piece(const cm_bpe_trainer *t, int id, char *buf) {
    size_t m = 0;
    const uint8_t *s = t->tbytes + t->t_off[id];
    for (uint32_t i = 0; i < t->t_len[id]; i++) m += cm_bpe_byte_to_unicode(s[i], buf + m);
    return m;
}

cm_status cm_bpe_trainer_tokenizer(const cm_bpe_trainer *t, cm_tokenizer **out) {
    *out = NULL;
    if (!t->ran) return cm_error(CM_ERR_ARG, NAME ": not trained yet");
    cm_tokenizer *tok;
    CM_TRY(cm_spm_alloc((size_t)t->n_tokens, NAME, &tok));
    char *buf = malloc(2 * CM_SPM_MAX_PIECE_LEN + 2);
    cm_status st = buf ? CM_OK : cm_error(CM_ERR_NOMEM, NAME ": out of memory");
    for (int id = 0; id < t->n_tokens && !st; id++) {
        if (id < t->n_specials)
            st = cm_spm_set_piece(tok, id, t->special[id], t->special_len[id], 0.0f, CM_TOKEN_CONTROL, NAME);
        else
            st = cm_spm_set_piece(tok, id, buf, b2u_piece(t, id, buf), 0.0f, CM_TOKEN_NORMAL, NAME);
    }
    if (st) {
        free(buf);
        cm_tokenizer_close(tok);
        return st;
    }
    if ((st = cm_spm_finish(tok, NAME))) { /* frees tok */
        free(buf);
        return st;
    }
    /* a special spelled like a learned token (in bytes_to_unicode form) would make two ids for one string */
    for (int id = 0; id < t->n_tokens && !st; id++) {
        size_t n;
        const char *p = cm_tokenizer_piece(tok, id, &n);
        if (cm_spm_lookup(tok, p, n) != id)
            st = cm_error(CM_ERR_ARG,
                          NAME ": special token \"%.64s\" is also the bytes_to_unicode form of a learned token; "
                               "choose another",
                          id < t->n_specials ? t->special[id] : t->special[cm_spm_lookup(tok, p, n)]);
    }
    if (!st) {
        tok->bos = t->bos;
        tok->eos = t->eos;
        tok->add_bos = t->bos >= 0;
        tok->add_eos = false;
        st = cm_bpe_setup(tok, CM_BPE_PRE_GPT2, (size_t)t->n_merges, NAME);
    }
    char where[64];
    for (int i = 0; i < t->n_merges && !st; i++) {
        size_t la = b2u_piece(t, t->m_left[i], buf);
        size_t lb = b2u_piece(t, t->m_right[i], buf + la);
        snprintf(where, sizeof where, NAME ": merge %d", i + 1);
        st = cm_bpe_add_merge(tok, buf, la, buf + la, lb, where);
    }
    free(buf);
    if (st) {
        cm_tokenizer_close(tok);
        return st;
    }
    *out = tok;
    return CM_OK;
}

static json_t *special_or_null(const cm_bpe_trainer *t, int k) {
    return k >= 0 ? json_stringn(t->special[k], t->special_len[k]) : json_null();
}

cm_status cm_bpe_trainer_save(const cm_bpe_trainer *t, const char *path) {
    cm_tokenizer *tok;
    CM_TRY(cm_bpe_trainer_tokenizer(t, &tok));
    cm_status st = cm_tokenizer_save_hf_json(tok, path);
    cm_tokenizer_close(tok);
    if (st) return st;
    /* tokenizer_config.json: how camelid and transformers learn BOS/EOS and that BOS leads every text */
    json_t *cfg = json_object(), *dec = json_object();
    json_object_set_new(cfg, "add_bos_token", json_boolean(t->bos >= 0));
    json_object_set_new(cfg, "add_eos_token", json_false());
    for (int k = 0; k < t->n_specials; k++) {
        json_t *e = json_object();
        json_object_set_new(e, "content", json_stringn(t->special[k], t->special_len[k]));
        json_object_set_new(e, "lstrip", json_false());
        json_object_set_new(e, "normalized", json_false());
        json_object_set_new(e, "rstrip", json_false());
        json_object_set_new(e, "single_word", json_false());
        json_object_set_new(e, "special", json_true());
        char key[16];
        snprintf(key, sizeof key, "%d", k);
        json_object_set_new(dec, key, e);
    }
    json_object_set_new(cfg, "added_tokens_decoder", dec);
    json_object_set_new(cfg, "bos_token", special_or_null(t, t->bos));
    json_object_set_new(cfg, "eos_token", special_or_null(t, t->eos));
    json_object_set_new(cfg, "clean_up_tokenization_spaces", json_false());
    json_object_set_new(cfg, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(cfg);
    char *dir = cm_path_dirname(path);
    char *cfg_path = dir ? cm_path_join(dir, "tokenizer_config.json") : NULL;
    if (!text || !cfg_path) {
        st = cm_error(CM_ERR_NOMEM, "%s: out of memory", path);
    } else {
        size_t n = strlen(text);
        text[n] = '\n'; /* over the NUL: written with its length */
        st = cm_write_file_atomic(cfg_path, text, n + 1);
    }
    free(text);
    free(dir);
    free(cfg_path);
    return st;
}
