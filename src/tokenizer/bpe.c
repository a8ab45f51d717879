/* Byte-level BPE (FACTS 2.3): GPT-2's bytes_to_unicode alphabet, merges ranked by their order in merges.txt,
 * pre-tokenization with the model's regex (PCRE2, UTF + UCP), merging by lowest rank over a priority queue,
 * and loading from vocab.json + merges.txt. The vocabulary itself (pieces, types, piece -> id hash) is the
 * one SentencePiece uses (spm_internal.h); t->bpe holds the rest. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/tokenizer.h"
#include "tokenizer/bpe_internal.h"
#include "tokenizer/spm_internal.h"

/* FACTS 2.3. */
static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char llama3_regex[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

#define N_ALPHABET 324 /* bytes_to_unicode uses code points 0..323 */

struct cm_bpe {
    cm_bpe_pre pre;
    bool ignore_merges; /* a pre-token that is itself a token is emitted as it is (Llama 3) */
    pcre2_code *re;
    int byte_tok[256];               /* id of each byte's one-character piece, -1 if absent */
    unsigned char byte_utf8[256][2]; /* that character in UTF-8 */
    uint8_t byte_utf8_len[256];      /* 1 or 2 */
    int16_t cp_byte[N_ALPHABET];     /* inverse: code point -> byte, -1 if none */
    size_t n_merges, max_merges;     /* merges[rank] */
    int32_t *m_left, *m_right, *m_result;
    int32_t *mslots; /* open addressing: (left, right) -> rank; -1 empty */
    size_t mmask;
    int32_t *special; /* CONTROL and USER_DEFINED ids, longest piece first */
    size_t n_special;
    bool special_first[256]; /* can a special piece start with this byte? */
};

const char *cm_bpe_regex(cm_bpe_pre pre) {
    return pre == CM_BPE_PRE_LLAMA3 ? llama3_regex : gpt2_regex;
}

int cm_bpe_pre_from_name(const char *s, size_t len) {
    if ((len == 4 && memcmp(s, "gpt2", 4) == 0) || (len == 5 && memcmp(s, "gpt-2", 5) == 0))
        return CM_BPE_PRE_GPT2;
    if ((len == 6 && memcmp(s, "llama3", 6) == 0) || (len == 9 && memcmp(s, "llama-bpe", 9) == 0))
        return CM_BPE_PRE_LLAMA3;
    return -1;
}

void cm_bpe_free(struct cm_bpe *b) {
    if (!b) return;
    pcre2_code_free(b->re);
    free(b->m_left);
    free(b->m_right);
    free(b->m_result);
    free(b->mslots);
    free(b->special);
    free(b);
}

cm_bpe_pre cm_bpe_pre_of(const cm_tokenizer *t) {
    return t->bpe->pre;
}

bool cm_bpe_ignore_merges(const cm_tokenizer *t) {
    return t->bpe->ignore_merges;
}

void cm_bpe_set_ignore_merges(cm_tokenizer *t, bool on) {
    t->bpe->ignore_merges = on;
}

size_t cm_bpe_n_merges(const cm_tokenizer *t) {
    return t->bpe->n_merges;
}

void cm_bpe_merge(const cm_tokenizer *t, size_t rank, int32_t *left, int32_t *right) {
    *left = t->bpe->m_left[rank];
    *right = t->bpe->m_right[rank];
}

static bool b2u_printable(int b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

size_t cm_bpe_byte_to_unicode(unsigned char byte, char out[2]) {
    /* the printable bytes map to themselves; the others, in byte order, to 256, 257, ... */
    int cp = byte;
    if (!b2u_printable(byte)) {
        cp = 256;
        for (int c = 0; c < byte; c++) cp += !b2u_printable(c);
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

static inline size_t merge_hash(int32_t l, int32_t r) {
    uint64_t h = ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h ^ (h >> 31));
}

static int32_t find_merge(const struct cm_bpe *b, int32_t l, int32_t r) {
    for (size_t i = merge_hash(l, r) & b->mmask;; i = (i + 1) & b->mmask) {
        int32_t k = b->mslots[i];
        if (k < 0) return -1;
        if (b->m_left[k] == l && b->m_right[k] == r) return k;
    }
}

static int cmp_special_len(const void *x, const void *y, void *ctx) {
    const cm_tokenizer *t = ctx;
    int a = *(const int32_t *)x, b = *(const int32_t *)y;
    size_t la = t->offset[a + 1] - t->offset[a], lb = t->offset[b + 1] - t->offset[b];
    if (la != lb) return la > lb ? -1 : 1;
    return a < b ? -1 : a > b;
}

cm_status cm_bpe_setup(cm_tokenizer *t, cm_bpe_pre pre, size_t max_merges, const char *name) {
    if (max_merges > CM_BPE_MAX_MERGES)
        return cm_error(CM_ERR_FORMAT, "%s: %zu merges is more than the %d supported", name, max_merges,
                        CM_BPE_MAX_MERGES);
    struct cm_bpe *b = calloc(1, sizeof *b);
    if (!b) return cm_error(CM_ERR_NOMEM, "%s: out of memory", name);
    b->pre = pre;
    b->ignore_merges = pre == CM_BPE_PRE_LLAMA3;
    size_t nslots = 16;
    while (nslots < max_merges * 2) nslots *= 2;
    size_t cap = max_merges ? max_merges : 1;
    b->m_left = malloc(cap * sizeof *b->m_left);
    b->m_right = malloc(cap * sizeof *b->m_right);
    b->m_result = malloc(cap * sizeof *b->m_result);
    b->mslots = malloc(nslots * sizeof *b->mslots);
    b->special = malloc((size_t)t->n_vocab * sizeof *b->special);
    if (!b->m_left || !b->m_right || !b->m_result || !b->mslots || !b->special) {
        cm_bpe_free(b);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory for %zu merges", name, max_merges);
    }
    memset(b->mslots, 0xff, nslots * sizeof *b->mslots);
    b->mmask = nslots - 1;
    b->max_merges = max_merges;

    int errcode;
    PCRE2_SIZE erroff;
    const char *rx = cm_bpe_regex(pre);
    b->re = pcre2_compile((PCRE2_SPTR)rx, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &errcode, &erroff, NULL);
    if (!b->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof msg);
        cm_bpe_free(b);
        return cm_error(CM_ERR_UNSUPPORTED, "%s: the pre-tokenizer regex does not compile at %zu: %s", name,
                        (size_t)erroff, (const char *)msg);
    }
    (void)pcre2_jit_compile(b->re, PCRE2_JIT_COMPLETE); /* optional: the interpreter is used without JIT */

    for (int i = 0; i < N_ALPHABET; i++) b->cp_byte[i] = -1;
    int extra = 0;
    for (int c = 0; c < 256; c++) {
        int cp = b2u_printable(c) ? c : 256 + extra++;
        b->cp_byte[cp] = (int16_t)c;
        if (cp < 0x80) {
            b->byte_utf8[c][0] = (unsigned char)cp;
            b->byte_utf8_len[c] = 1;
        } else {
            b->byte_utf8[c][0] = (unsigned char)(0xC0 | (cp >> 6));
            b->byte_utf8[c][1] = (unsigned char)(0x80 | (cp & 0x3F));
            b->byte_utf8_len[c] = 2;
        }
        b->byte_tok[c] = cm_spm_lookup(t, (const char *)b->byte_utf8[c], b->byte_utf8_len[c]);
    }
    for (int id = 0; id < t->n_vocab; id++)
        if (t->type[id] == CM_TOKEN_CONTROL || t->type[id] == CM_TOKEN_USER_DEFINED) {
            b->special[b->n_special++] = id;
            b->special_first[(unsigned char)t->blob[t->offset[id]]] = true;
        }
    qsort_r(b->special, b->n_special, sizeof *b->special, cmp_special_len, t);
    t->kind = CM_TOKENIZER_BPE;
    t->add_dummy_prefix = false;
    t->escape_whitespaces = false;
    t->remove_extra_whitespaces = false;
    t->words_independent = false;
    cm_bpe_free(t->bpe);
    t->bpe = b;
    return CM_OK;
}

cm_status cm_bpe_add_merge(cm_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                           const char *where) {
    struct cm_bpe *m = t->bpe;
    if (m->n_merges >= m->max_merges)
        return cm_error(CM_ERR_FORMAT, "%s: more merges than the %zu expected", where, m->max_merges);
    int ia = cm_spm_lookup(t, a, alen), ib = cm_spm_lookup(t, b, blen);
    if (ia < 0 || ib < 0) {
        const char *u = ia < 0 ? a : b;
        size_t ulen = ia < 0 ? alen : blen;
        return cm_error(CM_ERR_FORMAT, "%s: merge \"%.*s %.*s\" names an unknown token \"%.*s\"", where,
                        (int)(alen > 64 ? 64 : alen), a, (int)(blen > 64 ? 64 : blen), b,
                        (int)(ulen > 64 ? 64 : ulen), u);
    }
    char buf[2 * CM_SPM_MAX_PIECE_LEN];
    int res = -1;
    if (alen + blen <= t->max_piece_len) {
        memcpy(buf, a, alen);
        memcpy(buf + alen, b, blen);
        res = cm_spm_lookup(t, buf, alen + blen);
    }
    if (res < 0)
        return cm_error(CM_ERR_FORMAT,
                        "%s: merge \"%.*s %.*s\": the merged token \"%.*s%.*s\" is not in the vocabulary",
                        where, (int)(alen > 64 ? 64 : alen), a, (int)(blen > 64 ? 64 : blen), b,
                        (int)(alen > 64 ? 64 : alen), a, (int)(blen > 64 ? 64 : blen), b);
    int32_t rank = (int32_t)m->n_merges++;
    m->m_left[rank] = ia;
    m->m_right[rank] = ib;
    m->m_result[rank] = res;
    for (size_t i = merge_hash(ia, ib) & m->mmask;; i = (i + 1) & m->mmask) {
        int32_t k = m->mslots[i];
        if (k < 0) {
            m->mslots[i] = rank;
            break;
        }
        if (m->m_left[k] == ia && m->m_right[k] == ib) break; /* a duplicate: the lower rank stays */
    }
    return CM_OK;
}

cm_status cm_bpe_add_merges_text(cm_tokenizer *t, const char *text, size_t len, const char *name) {
    char where[1100];
    size_t line = 0, added = 0;
    for (size_t pos = 0; pos < len;) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        line++;
        if (n > 0 && s[n - 1] == '\r') n--;
        if (line == 1 && n >= 8 && memcmp(s, "#version", 8) == 0) continue;
        if (n == 0) continue;
        snprintf(where, sizeof where, "%.1000s:%zu", name, line);
        const char *sp = memchr(s, ' ', n);
        if (!sp || sp == s || sp + 1 == s + n || memchr(sp + 1, ' ', (size_t)(s + n - sp - 1)))
            return cm_error(CM_ERR_FORMAT,
                            "%s: expected a merge \"A B\" (two tokens and one space), found \"%.*s\"", where,
                            (int)(n > 64 ? 64 : n), s);
        CM_TRY(cm_bpe_add_merge(t, s, (size_t)(sp - s), sp + 1, (size_t)(s + n - sp - 1), where));
        added++;
    }
    if (added == 0)
        return cm_error(CM_ERR_FORMAT, "%.1000s:%zu: no merges (the file is empty)", name, line ? line : 1);
    return CM_OK;
}

/* ---------------------------------------------------------------------------------------------------------
 * Loading vocab.json + merges.txt */

static bool is_special_piece(const char *s, size_t n) {
    return n >= 4 && s[0] == '<' && s[1] == '|' && s[n - 2] == '|' && s[n - 1] == '>';
}

static size_t count_lines(const char *s, size_t n) {
    size_t k = 1;
    for (const char *p = s; (p = memchr(p, '\n', (size_t)(s + n - p))) != NULL; p++) k++;
    return k;
}

/* The names of Llama 3.1+'s special tokens 128000..128255 (Meta's tokenizer): a few named ones, the rest
 * reserved_special_token_N. */
static void llama3_special_name(int k, char *out, size_t cap) {
    static const char *const named[] = {"<|begin_of_text|>",
                                        "<|end_of_text|>",
                                        "<|reserved_special_token_0|>",
                                        "<|reserved_special_token_1|>",
                                        "<|finetune_right_pad_id|>",
                                        "<|reserved_special_token_2|>",
                                        "<|start_header_id|>",
                                        "<|end_header_id|>",
                                        "<|eom_id|>",
                                        "<|eot_id|>",
                                        "<|python_tag|>"};
    if (k < (int)(sizeof named / sizeof *named))
        snprintf(out, cap, "%s", named[k]);
    else
        snprintf(out, cap, "<|reserved_special_token_%d|>", k - 8);
}

cm_status cm_tokenizer_parse_bpe(const char *vocab_json, size_t vocab_len, const char *vocab_name,
                                 const char *merges, size_t merges_len, const char *merges_name,
                                 const char *pre, cm_tokenizer **out) {
    *out = NULL;
    if (!vocab_name) vocab_name = "vocab.json";
    if (!merges_name) merges_name = "merges.txt";
    if ((!vocab_json && vocab_len) || (!merges && merges_len))
        return cm_error(CM_ERR_ARG, "parse BPE: a buffer is NULL");
    int pre_id = -1;
    if (pre) {
        pre_id = cm_bpe_pre_from_name(pre, strlen(pre));
        if (pre_id < 0)
            return cm_error(CM_ERR_ARG, "unknown pre-tokenizer \"%.64s\" (expected gpt2 or llama3)", pre);
    }
    json_error_t err;
    json_t *root = json_loadb(vocab_json ? vocab_json : "", vocab_len, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return cm_error(CM_ERR_FORMAT, "%s:%d: invalid JSON: %s", vocab_name, err.line > 0 ? err.line : 1,
                        err.text);
    cm_status st = CM_OK;
    const char **piece = NULL;
    size_t *plen = NULL;
    cm_tokenizer *t = NULL;
    if (!json_is_object(root)) {
        st = cm_error(CM_ERR_FORMAT, "%s:1: expected a JSON object mapping tokens to ids", vocab_name);
        goto done;
    }
    size_t n = json_object_size(root);
    if (n == 0 || n > CM_SPM_MAX_VOCAB) {
        st = cm_error(CM_ERR_FORMAT, "%s: the vocabulary has %zu tokens", vocab_name, n);
        goto done;
    }
    piece = calloc(n, sizeof *piece);
    plen = calloc(n, sizeof *plen);
    if (!piece || !plen) {
        st = cm_error(CM_ERR_NOMEM, "%s: out of memory for %zu tokens", vocab_name, n);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        size_t klen = strlen(key);
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= (json_int_t)n) {
            st = cm_error(CM_ERR_FORMAT, "%s: token \"%.64s\": the id should be an integer in 0..%zu",
                          vocab_name, key, n - 1);
            goto done;
        }
        size_t id = (size_t)json_integer_value(val);
        if (piece[id]) {
            st = cm_error(CM_ERR_FORMAT, "%s: id %zu is given to both \"%.64s\" and \"%.64s\"", vocab_name,
                          id, piece[id], key);
            goto done;
        }
        piece[id] = key;
        plen[id] = klen;
    }
    /* n distinct ids in 0..n-1: every id is present */
    if (pre_id < 0) pre_id = n >= 128000 ? CM_BPE_PRE_LLAMA3 : CM_BPE_PRE_GPT2;
    /* Llama 3's encoder.json holds the 128,000 regular tokens only; its 256 special tokens follow them */
    size_t extra = pre_id == CM_BPE_PRE_LLAMA3 && n == 128000 ? 256 : 0;
    if ((st = cm_spm_alloc(n + extra, vocab_name, &t))) goto done;
    for (size_t i = 0; i < n && !st; i++)
        st = cm_spm_set_piece(t, (int)i, piece[i], plen[i], 0.0f,
                              is_special_piece(piece[i], plen[i]) ? CM_TOKEN_CONTROL : CM_TOKEN_NORMAL,
                              vocab_name);
    for (size_t k = 0; k < extra && !st; k++) {
        char name[48];
        llama3_special_name((int)k, name, sizeof name);
        st = cm_spm_set_piece(t, (int)(n + k), name, strlen(name), 0.0f, CM_TOKEN_CONTROL, vocab_name);
    }
    if (st) goto done;
    json_decref(root);
    root = NULL;
    t->add_bos = false;
    t->add_eos = false;
    st = cm_spm_finish(t, vocab_name);
    if (st) {
        t = NULL; /* freed by cm_spm_finish */
        goto done;
    }
    if (pre_id == CM_BPE_PRE_LLAMA3) {
        t->bos = cm_spm_lookup(t, "<|begin_of_text|>", 17);
        t->eos = cm_spm_lookup(t, "<|end_of_text|>", 15);
        t->eot = cm_spm_lookup(t, "<|eot_id|>", 10);
        t->eom = cm_spm_lookup(t, "<|eom_id|>", 10);
        t->add_bos = t->bos >= 0;
    } else {
        t->bos = t->eos = cm_spm_lookup(t, "<|endoftext|>", 13);
    }
    st = cm_bpe_setup(t, (cm_bpe_pre)pre_id, count_lines(merges, merges_len), vocab_name);
    if (!st) st = cm_bpe_add_merges_text(t, merges ? merges : "", merges_len, merges_name);
done:
    json_decref(root);
    free(piece);
    free(plen);
    if (st) {
        cm_tokenizer_close(t);
        return st;
    }
    *out = t;
    return CM_OK;
}

/* ---------------------------------------------------------------------------------------------------------
 * Encoding */

typedef struct {
    int32_t prev, next, id; /* id -1: merged away (or a byte without a token) */
} bpe_sym;

typedef struct {
    int32_t rank, left, right;
} bpe_pair;

typedef struct {
    const cm_tokenizer *t;
    const struct cm_bpe *b;
    int32_t *ids;
    size_t n_ids, cap_ids;
    bpe_sym *sym;
    bpe_pair *heap;
    size_t n_heap, cap_sym;
    char *map;
    pcre2_match_data *md;
} enc_ctx;

static inline bool pair_before(const bpe_pair *x, const bpe_pair *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->left < y->left);
}

static void heap_push(enc_ctx *c, bpe_pair p) {
    size_t i = c->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &c->heap[parent])) break;
        c->heap[i] = c->heap[parent];
        i = parent;
    }
    c->heap[i] = p;
}

static bpe_pair heap_pop(enc_ctx *c) {
    bpe_pair top = c->heap[0], last = c->heap[--c->n_heap];
    size_t i = 0;
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= c->n_heap) break;
        if (k + 1 < c->n_heap && pair_before(&c->heap[k + 1], &c->heap[k])) k++;
        if (!pair_before(&c->heap[k], &last)) break;
        c->heap[i] = c->heap[k];
        i = k;
    }
    if (c->n_heap > 0) c->heap[i] = last;
    return top;
}

static cm_status push_id(enc_ctx *c, int32_t id) {
    if (c->n_ids == c->cap_ids) {
        size_t cap = c->cap_ids ? c->cap_ids * 2 : 64;
        int32_t *a = realloc(c->ids, cap * sizeof *a);
        if (!a) return cm_error(CM_ERR_NOMEM, "encode: out of memory for %zu tokens", cap);
        c->ids = a;
        c->cap_ids = cap;
    }
    c->ids[c->n_ids++] = id;
    return CM_OK;
}

static void try_pair(enc_ctx *c, int32_t l) {
    if (l < 0) return;
    int32_t r = c->sym[l].next;
    if (r < 0 || c->sym[l].id < 0 || c->sym[r].id < 0) return;
    int32_t rank = find_merge(c->b, c->sym[l].id, c->sym[r].id);
    if (rank >= 0) heap_push(c, (bpe_pair){.rank = rank, .left = l, .right = r});
}

static cm_status emit_byte(enc_ctx *c, unsigned char byte) {
    int id = c->b->byte_tok[byte];
    if (id < 0) id = c->t->unk;
    return id >= 0 ? push_id(c, id) : CM_OK; /* a vocabulary without this byte and no unk: nothing to emit */
}

/* One pre-token: bytes s[0..n). */
static cm_status bpe_word(enc_ctx *c, const unsigned char *s, size_t n) {
    const struct cm_bpe *b = c->b;
    if (n == 0) return CM_OK;
    if (n == 1) return emit_byte(c, s[0]);
    if (n > INT32_MAX / 4) return cm_error(CM_ERR_ARG, "encode: a pre-token of %zu bytes is too long", n);
    if (n > c->cap_sym) {
        size_t cap = n < 64 ? 64 : n;
        bpe_sym *sym = realloc(c->sym, cap * sizeof *sym);
        if (sym) c->sym = sym;
        bpe_pair *heap = realloc(c->heap, 3 * cap * sizeof *heap);
        if (heap) c->heap = heap;
        char *map = realloc(c->map, 2 * cap);
        if (map) c->map = map;
        if (!sym || !heap || !map) return cm_error(CM_ERR_NOMEM, "encode: out of memory for %zu bytes", n);
        c->cap_sym = cap;
    }
    if (b->ignore_merges && n * 2 <= 2 * c->t->max_piece_len) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(c->map + m, b->byte_utf8[s[i]], b->byte_utf8_len[s[i]]);
            m += b->byte_utf8_len[s[i]];
        }
        int id = cm_spm_lookup(c->t, c->map, m);
        if (id >= 0) return push_id(c, id);
    }
    bpe_sym *sym = c->sym;
    for (size_t i = 0; i < n; i++)
        sym[i] = (bpe_sym){
            .prev = (int32_t)i - 1, .next = i + 1 < n ? (int32_t)i + 1 : -1, .id = b->byte_tok[s[i]]};
    c->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) try_pair(c, (int32_t)i);
    while (c->n_heap > 0) {
        bpe_pair p = heap_pop(c);
        bpe_sym *l = &sym[p.left], *r = &sym[p.right];
        if (l->next != p.right || l->id != b->m_left[p.rank] || r->id != b->m_right[p.rank])
            continue; /* stale */
        l->id = b->m_result[p.rank];
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = p.left;
        r->id = -1;
        r->next = -1;
        try_pair(c, l->prev);
        try_pair(c, p.left);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) {
        if (sym[i].id >= 0)
            CM_TRY(push_id(c, sym[i].id));
        else
            CM_TRY(emit_byte(c, s[i])); /* a byte without a token: unk or nothing */
    }
    return CM_OK;
}

/* Text without special tokens: split with the regex, BPE each piece. Bytes the regex does not cover (invalid
 * UTF-8) are pre-tokens of their own. */
static cm_status encode_segment(enc_ctx *c, const unsigned char *s, size_t n) {
    size_t off = 0;
    while (off < n) {
        int rc = pcre2_match(c->b->re, (PCRE2_SPTR)s, n, off, 0, c->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) return bpe_word(c, s + off, n - off);
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return cm_error(CM_ERR_ARG, "encode: pre-tokenizer regex failed at byte %zu: %s", off,
                            (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t ms = ov[0], me = ov[1];
        if (ms < off || me < ms || me > n) return cm_error(CM_ERR_ARG, "encode: bad regex match");
        if (ms > off) CM_TRY(bpe_word(c, s + off, ms - off));
        if (me == ms) me = ms + 1; /* an empty match cannot happen with these patterns: step over a byte */
        CM_TRY(bpe_word(c, s + ms, me - ms));
        off = me;
    }
    return CM_OK;
}

cm_status cm_bpe_encode(const cm_tokenizer *t, const char *text, size_t len, bool add_bos, bool add_eos,
                        bool parse_special, int32_t **ids, size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len > 0) return cm_error(CM_ERR_ARG, "encode: text is NULL");
    if (add_bos && t->bos < 0)
        return cm_error(CM_ERR_ARG, "encode: BOS requested but the vocabulary has none");
    if (add_eos && t->eos < 0)
        return cm_error(CM_ERR_ARG, "encode: EOS requested but the vocabulary has none");
    const struct cm_bpe *b = t->bpe;
    enc_ctx c = {.t = t, .b = b};
    c.md = pcre2_match_data_create_from_pattern(b->re, NULL);
    cm_status st = CM_OK;
    if (!c.md) {
        st = cm_error(CM_ERR_NOMEM, "encode: out of memory");
        goto done;
    }
    if (add_bos && (st = push_id(&c, t->bos))) goto done;
    const unsigned char *s = (const unsigned char *)text;
    for (size_t pos = 0; pos < len;) {
        size_t next = len, slen = 0;
        int32_t sid = -1;
        if (parse_special && b->n_special > 0) {
            for (size_t p = pos; p < len && sid < 0; p++) {
                if (!b->special_first[s[p]]) continue;
                for (size_t k = 0; k < b->n_special; k++) {
                    int32_t id = b->special[k];
                    size_t pl = t->offset[id + 1] - t->offset[id];
                    if (pl <= len - p && memcmp(s + p, t->blob + t->offset[id], pl) == 0) {
                        sid = id;
                        next = p;
                        slen = pl;
                        break;
                    }
                }
            }
        }
        if ((st = encode_segment(&c, s + pos, next - pos))) goto done;
        if (sid < 0) break;
        if ((st = push_id(&c, sid))) goto done;
        pos = next + slen;
    }
    if (add_eos && (st = push_id(&c, t->eos))) goto done;
    if (!c.ids && !(c.ids = malloc(sizeof *c.ids))) { /* a non-NULL result even when empty */
        st = cm_error(CM_ERR_NOMEM, "encode: out of memory");
        goto done;
    }
    *ids = c.ids;
    *n_ids = c.n_ids;
    c.ids = NULL;
done:
    pcre2_match_data_free(c.md);
    free(c.ids);
    free(c.sym);
    free(c.heap);
    free(c.map);
    return st;
}

static inline bool printable_ascii(char c) {
    return c > ' ' && c < 0x7F;
}

size_t cm_tokenizer_split_point(const cm_tokenizer *t, const char *text, size_t len, size_t from) {
    if (t->kind != CM_TOKENIZER_BPE) return len;
    /* "x\ny" with x, y printable: every pre-token ends at x or at the line break (GPT-2: "\n" alone, as
     * \s+(?!\S) fails before y and \s+ takes it; Llama 3: "\n" alone or punctuation + "\n"), and the text
     * cut after the line break scans the same way, since at its end (?!\S) sees nothing, as it sees y */
    for (size_t p = from < 2 ? 2 : from; p < len; p++) {
        const char *nl = memchr(text + p - 1, '\n', len - p);
        if (!nl) return len;
        p = (size_t)(nl - text) + 1;
        if (p >= 2 && p < len && printable_ascii(text[p - 2]) && printable_ascii(text[p])) return p;
    }
    return len;
}

/* ---------------------------------------------------------------------------------------------------------
 * Decoding */

size_t cm_bpe_piece_bytes(const cm_tokenizer *t, int id, unsigned char *out) {
    const unsigned char *p = (const unsigned char *)t->blob + t->offset[id];
    size_t n = t->offset[id + 1] - t->offset[id], m = 0;
    if (t->type[id] == CM_TOKEN_USER_DEFINED) { /* added tokens are stored as plain text */
        memcpy(out, p, n);
        return n;
    }
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0x110000;
        size_t k = 1;
        if (p[i] < 0x80) {
            cp = p[i];
        } else if ((p[i] & 0xE0) == 0xC0 && i + 1 < n && (p[i + 1] & 0xC0) == 0x80) {
            cp = (uint32_t)(p[i] & 0x1F) << 6 | (p[i + 1] & 0x3F);
            k = 2;
        }
        if (cp < N_ALPHABET && t->bpe->cp_byte[cp] >= 0) {
            out[m++] = (unsigned char)t->bpe->cp_byte[cp];
        } else {
            memcpy(out + m, p + i, k); /* not in the alphabet: as stored */
            m += k;
        }
        i += k;
    }
    return m;
}
