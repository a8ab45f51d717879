/* SentencePiece BPE with byte fallback (FACTS 2.2): the vocabulary (pieces, scores, types, a hash from piece
 * to id), encoding by highest-score merges over a priority queue, and decoding (whole or streamed). */
#include <stdlib.h>
#include <string.h>

#include "camelid/tokenizer.h"
#include "tokenizer/bpe_internal.h"
#include "tokenizer/spm_internal.h"

#define SPACE_SYMBOL "\xE2\x96\x81" /* U+2581 "▁" */
#define SPACE_SYMBOL_LEN 3
#define UNK_SURFACE " \xE2\x81\x87 " /* " ⁇ ", sentencepiece's default unk_surface */
#define UNK_SURFACE_LEN 5

/* ---------------------------------------------------------------------------------------------------------
 * Vocabulary */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

int cm_spm_byte_piece_value(const char *piece, size_t len) {
    static const char hex[] = "0123456789ABCDEF";
    if (len != 6 || memcmp(piece, "<0x", 3) != 0 || piece[5] != '>') return -1;
    const char *hi = memchr(hex, piece[3], 16), *lo = memchr(hex, piece[4], 16);
    if (!hi || !lo || !piece[3] || !piece[4]) return -1;
    return (int)((hi - hex) * 16 + (lo - hex));
}

cm_status cm_spm_alloc(size_t n, const char *name, cm_tokenizer **out) {
    *out = NULL;
    if (n == 0) return cm_error(CM_ERR_FORMAT, "%s: the vocabulary is empty", name);
    if (n > CM_SPM_MAX_VOCAB)
        return cm_error(CM_ERR_FORMAT, "%s: %zu pieces is more than the %d supported", name, n,
                        CM_SPM_MAX_VOCAB);
    cm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return cm_error(CM_ERR_NOMEM, "%s: out of memory for the tokenizer", name);
    t->kind = CM_TOKENIZER_SPM;
    t->n_vocab = (int)n;
    t->offset = calloc(n + 1, sizeof *t->offset);
    t->score = calloc(n, sizeof *t->score);
    t->type = calloc(n, sizeof *t->type);
    t->blob_cap = n * 8 + 64;
    t->blob = malloc(t->blob_cap);
    if (!t->offset || !t->score || !t->type || !t->blob) {
        cm_tokenizer_close(t);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory for %zu pieces", name, n);
    }
    t->bos = t->eos = t->unk = t->pad = t->eot = t->eom = -1;
    t->add_bos = true;
    t->add_eos = false;
    t->add_dummy_prefix = true;
    t->remove_extra_whitespaces = false;
    t->escape_whitespaces = true;
    *out = t;
    return CM_OK;
}

cm_status cm_spm_set_piece(cm_tokenizer *t, int id, const char *piece, size_t len, float score, int type,
                           const char *name) {
    if (id != t->n_set || id >= t->n_vocab)
        return cm_error(CM_ERR_ARG, "%s: piece %d set out of order (expected %d)", name, id, t->n_set);
    if (len == 0) return cm_error(CM_ERR_FORMAT, "%s: token %d: empty piece", name, id);
    if (len > CM_SPM_MAX_PIECE_LEN)
        return cm_error(CM_ERR_FORMAT, "%s: token %d: piece of %zu bytes is longer than the %d supported",
                        name, id, len, CM_SPM_MAX_PIECE_LEN);
    if (type < CM_TOKEN_NORMAL || type > CM_TOKEN_BYTE)
        return cm_error(CM_ERR_FORMAT, "%s: token %d: unknown token type %d", name, id, type);
    if (t->blob_size + len > UINT32_MAX)
        return cm_error(CM_ERR_FORMAT, "%s: token %d: the pieces add up to more than 4 GiB", name, id);
    if (t->blob_size + len > t->blob_cap) {
        size_t cap = t->blob_cap * 2;
        while (cap < t->blob_size + len) cap *= 2;
        char *b = realloc(t->blob, cap);
        if (!b) return cm_error(CM_ERR_NOMEM, "%s: out of memory for pieces", name);
        t->blob = b;
        t->blob_cap = cap;
    }
    memcpy(t->blob + t->blob_size, piece, len);
    t->offset[id] = (uint32_t)t->blob_size;
    t->blob_size += len;
    t->offset[id + 1] = (uint32_t)t->blob_size;
    t->score[id] = score;
    t->type[id] = (uint8_t)type;
    t->n_set++;
    return CM_OK;
}

static inline const char *piece_of(const cm_tokenizer *t, int id, size_t *len) {
    *len = t->offset[id + 1] - t->offset[id];
    return t->blob + t->offset[id];
}

int cm_spm_lookup(const cm_tokenizer *t, const char *s, size_t len) {
    if (len == 0 || len > t->max_piece_len) return -1;
    size_t i = (size_t)hash_bytes(s, len) & t->slot_mask;
    for (;;) {
        int32_t id = t->slots[i];
        if (id < 0) return -1;
        size_t n;
        const char *p = piece_of(t, id, &n);
        if (n == len && memcmp(p, s, len) == 0) return id;
        i = (i + 1) & t->slot_mask;
    }
}

static cm_status check_special(const cm_tokenizer *t, int *id, const char *what, const char *name) {
    if (*id < -1 || *id >= t->n_vocab)
        return cm_error(CM_ERR_FORMAT, "%s: %s id %d is outside the vocabulary of %d", name, what, *id,
                        t->n_vocab);
    return CM_OK;
}

cm_status cm_spm_finish(cm_tokenizer *t, const char *name) {
    cm_status st = CM_OK;
    if (t->n_set != t->n_vocab) {
        st = cm_error(CM_ERR_ARG, "%s: only %d of %d pieces were set", name, t->n_set, t->n_vocab);
        goto fail;
    }
    size_t nslots = 16;
    while (nslots < (size_t)t->n_vocab * 2) nslots *= 2;
    t->slots = malloc(nslots * sizeof *t->slots);
    if (!t->slots) {
        st = cm_error(CM_ERR_NOMEM, "%s: out of memory for the piece index", name);
        goto fail;
    }
    memset(t->slots, 0xff, nslots * sizeof *t->slots);
    t->slot_mask = nslots - 1;
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    t->max_piece_len = 0;
    for (int id = 0; id < t->n_vocab; id++) {
        size_t n;
        const char *p = piece_of(t, id, &n);
        if (n > t->max_piece_len) t->max_piece_len = n;
        if (t->type[id] == CM_TOKEN_BYTE) {
            int v = cm_spm_byte_piece_value(p, n);
            if (v < 0) {
                st =
                    cm_error(CM_ERR_FORMAT, "%s: token %d has type BYTE but its piece \"%.*s\" is not <0xXX>",
                             name, id, (int)(n > 32 ? 32 : n), p);
                goto fail;
            }
            if (t->byte_id[v] < 0) t->byte_id[v] = id;
        }
        size_t i = (size_t)hash_bytes(p, n) & t->slot_mask;
        for (;;) {
            int32_t other = t->slots[i];
            if (other < 0) {
                t->slots[i] = id;
                break;
            }
            size_t m;
            const char *q = piece_of(t, other, &m);
            if (m == n && memcmp(p, q, n) == 0) break; /* duplicate: the first id keeps the piece */
            i = (i + 1) & t->slot_mask;
        }
    }
    /* Words can be merged independently if no piece holds a "▁" after another byte (Llama's vocabulary
     * has none: "▁" starts pieces, or runs of it make whitespace pieces). */
    t->words_independent = t->escape_whitespaces;
    for (int id = 0; id < t->n_vocab && t->words_independent; id++) {
        size_t n;
        const char *p = piece_of(t, id, &n);
        for (size_t k = 1; k + SPACE_SYMBOL_LEN <= n; k++)
            if (memcmp(p + k, SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0 &&
                (k < SPACE_SYMBOL_LEN ||
                 memcmp(p + k - SPACE_SYMBOL_LEN, SPACE_SYMBOL, SPACE_SYMBOL_LEN) != 0)) {
                t->words_independent = false;
                break;
            }
    }
    if ((st = check_special(t, &t->bos, "BOS", name)) || (st = check_special(t, &t->eos, "EOS", name)) ||
        (st = check_special(t, &t->unk, "unk", name)) || (st = check_special(t, &t->pad, "pad", name)) ||
        (st = check_special(t, &t->eot, "EOT", name)) || (st = check_special(t, &t->eom, "EOM", name)))
        goto fail;
    return CM_OK;
fail:
    cm_tokenizer_close(t);
    return st;
}

cm_status cm_tokenizer_from_pieces(const char *const *pieces, const size_t *lens, const float *scores,
                                   const cm_token_type *types, size_t n, int bos, int eos, int unk,
                                   cm_tokenizer **out) {
    static const char *name = "tokenizer from pieces";
    *out = NULL;
    if (!pieces || !lens) return cm_error(CM_ERR_ARG, "%s: pieces and lengths are required", name);
    if (n > CM_SPM_MAX_VOCAB) return cm_error(CM_ERR_ARG, "%s: %zu pieces is too many", name, n);
    cm_tokenizer *t;
    CM_TRY(cm_spm_alloc(n, name, &t));
    for (size_t i = 0; i < n; i++) {
        int id = (int)i, type = CM_TOKEN_NORMAL;
        if (types)
            type = types[i];
        else if (id == unk)
            type = CM_TOKEN_UNKNOWN;
        else if (id == bos || id == eos)
            type = CM_TOKEN_CONTROL;
        else if (cm_spm_byte_piece_value(pieces[i], lens[i]) >= 0)
            type = CM_TOKEN_BYTE;
        cm_status st = cm_spm_set_piece(t, id, pieces[i], lens[i], scores ? scores[i] : 0.0f, type, name);
        if (st) {
            cm_tokenizer_close(t);
            return st;
        }
    }
    t->bos = bos;
    t->eos = eos;
    t->unk = unk;
    CM_TRY(cm_spm_finish(t, name));
    *out = t;
    return CM_OK;
}

void cm_tokenizer_close(cm_tokenizer *t) {
    if (!t) return;
    free(t->blob);
    free(t->offset);
    free(t->score);
    free(t->type);
    free(t->slots);
    cm_bpe_free(t->bpe);
    free(t->chat_template);
    free(t);
}

cm_tokenizer_kind cm_tokenizer_kind_of(const cm_tokenizer *t) {
    return t->kind;
}
int cm_tokenizer_vocab_size(const cm_tokenizer *t) {
    return t->n_vocab;
}
int cm_tokenizer_bos(const cm_tokenizer *t) {
    return t->bos;
}
int cm_tokenizer_eos(const cm_tokenizer *t) {
    return t->eos;
}
int cm_tokenizer_unk(const cm_tokenizer *t) {
    return t->unk;
}
bool cm_tokenizer_add_bos(const cm_tokenizer *t) {
    return t->add_bos;
}
size_t cm_tokenizer_max_piece_len(const cm_tokenizer *t) {
    return t->max_piece_len;
}

const char *cm_tokenizer_piece(const cm_tokenizer *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    size_t n;
    const char *p = piece_of(t, id, &n);
    if (len) *len = n;
    return p;
}

float cm_tokenizer_score(const cm_tokenizer *t, int id) {
    return id >= 0 && id < t->n_vocab ? t->score[id] : 0.0f;
}

cm_token_type cm_tokenizer_type(const cm_tokenizer *t, int id) {
    return id >= 0 && id < t->n_vocab ? (cm_token_type)t->type[id] : CM_TOKEN_UNUSED;
}

bool cm_tokenizer_is_eog(const cm_tokenizer *t, int id) {
    return id >= 0 && (id == t->eos || id == t->eot || id == t->eom);
}

/* ---------------------------------------------------------------------------------------------------------
 * UTF-8 */

/* Length of the character a lead byte starts: 1..4, or 0 if it cannot start one. */
static int utf8_len(unsigned char b) {
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) return 3;
    if (b >= 0xF0 && b <= 0xF4) return 4;
    return 0;
}

/* May `b` be byte number `pos` (1..3) of a character starting with `lead`? (No overlongs, no surrogates, no
 * code points past U+10FFFF.) */
static bool utf8_cont_ok(unsigned char lead, int pos, unsigned char b) {
    if (pos == 1) {
        if (lead == 0xE0) return b >= 0xA0 && b <= 0xBF;
        if (lead == 0xED) return b >= 0x80 && b <= 0x9F;
        if (lead == 0xF0) return b >= 0x90 && b <= 0xBF;
        if (lead == 0xF4) return b >= 0x80 && b <= 0x8F;
    }
    return b >= 0x80 && b <= 0xBF;
}

/* Length of the valid character at s[0..n), or 0 if there is none. */
static size_t utf8_valid_char(const unsigned char *s, size_t n) {
    int len = utf8_len(s[0]);
    if (len == 0 || (size_t)len > n) return 0;
    for (int k = 1; k < len; k++)
        if (!utf8_cont_ok(s[0], k, s[k])) return 0;
    return (size_t)len;
}

/* ---------------------------------------------------------------------------------------------------------
 * Encoding */

typedef struct {
    size_t start; /* byte offset in the normalized text */
    size_t len;   /* 0 once merged into its left neighbour */
    int32_t prev, next;
    int32_t id; /* piece id, or -1: an unknown character, emitted as byte pieces (never merged) */
} spm_symbol;

typedef struct {
    float score;
    int32_t left, right;
    int32_t id; /* left + right must still add up to this piece's length, or the pair is stale */
} spm_pair;

typedef struct {
    spm_pair *a;
    size_t n, cap;
} spm_heap;

/* Higher score first; on ties the leftmost pair (as llama2.c's left-to-right scan and sentencepiece do). */
static inline bool pair_before(const spm_pair *x, const spm_pair *y) {
    return x->score > y->score || (x->score == y->score && x->left < y->left);
}

static void heap_push(spm_heap *h, spm_pair p) {
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &h->a[parent])) break;
        h->a[i] = h->a[parent];
        i = parent;
    }
    h->a[i] = p;
}

static spm_pair heap_pop(spm_heap *h) {
    spm_pair top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && pair_before(&h->a[c + 1], &h->a[c])) c++;
        if (!pair_before(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n > 0) h->a[i] = last;
    return top;
}

static inline bool mergeable(const cm_tokenizer *t, int id) {
    return id >= 0 && (t->type[id] == CM_TOKEN_NORMAL || t->type[id] == CM_TOKEN_USER_DEFINED);
}

static void try_pair(const cm_tokenizer *t, const char *text, const spm_symbol *sym, int32_t l, spm_heap *h) {
    if (l < 0) return;
    int32_t r = sym[l].next;
    if (r < 0 || sym[l].id < 0 || sym[r].id < 0) return;
    size_t size = sym[l].len + sym[r].len;
    if (size > t->max_piece_len) return;
    int id = cm_spm_lookup(t, text + sym[l].start, size);
    if (!mergeable(t, id)) return;
    heap_push(h, (spm_pair){.score = t->score[id], .left = l, .right = r, .id = id});
}

/* Does a word start at byte `at` of the normalized text: a "▁" that follows something other than "▁"? */
static inline bool word_starts(const char *text, size_t at) {
    return at > 0 && memcmp(text + at, SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0 &&
           (at < SPACE_SYMBOL_LEN ||
            memcmp(text + at - SPACE_SYMBOL_LEN, SPACE_SYMBOL, SPACE_SYMBOL_LEN) != 0);
}

/* The normalized text: optional whitespace cleanup, dummy prefix, ' ' -> "▁". */
static cm_status normalize(const cm_tokenizer *t, const char *text, size_t len, char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    size_t begin = 0, end = len;
    if (t->remove_extra_whitespaces) {
        while (begin < end && text[begin] == ' ') begin++;
        while (end > begin && text[end - 1] == ' ') end--;
    }
    if (begin == end) return CM_OK;
    size_t cap;
    if (cm_mul_size(end - begin, SPACE_SYMBOL_LEN, &cap) || cm_add_size(cap, SPACE_SYMBOL_LEN + 1, &cap))
        return cm_error(CM_ERR_NOMEM, "encode: text of %zu bytes is too long", len);
    char *buf = malloc(cap);
    if (!buf) return cm_error(CM_ERR_NOMEM, "encode: out of memory for %zu bytes of text", len);
    size_t n = 0;
    if (t->add_dummy_prefix) {
        memcpy(buf, SPACE_SYMBOL, SPACE_SYMBOL_LEN);
        n = SPACE_SYMBOL_LEN;
    }
    for (size_t i = begin; i < end; i++) {
        char c = text[i];
        if (c == ' ') {
            if (t->remove_extra_whitespaces && i > begin && text[i - 1] == ' ') continue;
            if (t->escape_whitespaces) {
                memcpy(buf + n, SPACE_SYMBOL, SPACE_SYMBOL_LEN);
                n += SPACE_SYMBOL_LEN;
                continue;
            }
        }
        buf[n++] = c;
    }
    *out = buf;
    *out_len = n;
    return CM_OK;
}

cm_status cm_tokenizer_encode(const cm_tokenizer *t, const char *text, size_t len, bool add_bos, bool add_eos,
                              int32_t **ids, size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    if (t->kind == CM_TOKENIZER_BPE) return cm_bpe_encode(t, text, len, add_bos, add_eos, false, ids, n_ids);
    if (!text && len > 0) return cm_error(CM_ERR_ARG, "encode: text is NULL");
    for (size_t i = 0; i < len;) {
        size_t k = utf8_valid_char((const unsigned char *)text + i, len - i);
        if (!k)
            return cm_error(CM_ERR_ARG, "encode: text is not valid UTF-8 at byte offset %zu (byte 0x%02X)", i,
                            (unsigned char)text[i]);
        i += k;
    }
    if (add_bos && t->bos < 0)
        return cm_error(CM_ERR_ARG, "encode: BOS requested but the vocabulary has none");
    if (add_eos && t->eos < 0)
        return cm_error(CM_ERR_ARG, "encode: EOS requested but the vocabulary has none");

    char *norm;
    size_t n;
    CM_TRY(normalize(t, text, len, &norm, &n));
    if (n > INT32_MAX / 4) {
        free(norm);
        return cm_error(CM_ERR_ARG, "encode: text of %zu bytes is too long", len);
    }
    /* n symbols at most; at most n - 1 initial pairs and 2 more per merge (n - 1 merges). */
    spm_symbol *sym = malloc((n + 1) * sizeof *sym);
    spm_heap heap = {.a = malloc((3 * n + 1) * sizeof *heap.a), .n = 0, .cap = 3 * n + 1};
    int32_t *res = NULL;
    cm_status st = CM_OK;
    if (!sym || !heap.a) {
        st = cm_error(CM_ERR_NOMEM, "encode: out of memory for %zu bytes of text", len);
        goto done;
    }

    int32_t n_sym = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_valid_char((const unsigned char *)norm + i, n - i);
        if (!k) k = 1; /* cannot happen: the input was checked and "▁" is valid */
        int id = cm_spm_lookup(t, norm + i, k);
        sym[n_sym] = (spm_symbol){
            .start = i, .len = k, .prev = n_sym - 1, .next = -1, .id = mergeable(t, id) ? id : -1};
        if (n_sym > 0) sym[n_sym - 1].next = n_sym;
        n_sym++;
        i += k;
    }
    /* Merge chunk by chunk: where no piece can span a word start (a "▁" after another character), the
     * words are independent and a small per-word heap gives the same merges as one over the whole text. */
    for (int32_t s0 = 0, s1; s0 < n_sym; s0 = s1) {
        for (s1 = s0 + 1; s1 < n_sym && !(t->words_independent && word_starts(norm, sym[s1].start)); s1++) {
        }
        for (int32_t i = s0; i + 1 < s1; i++) try_pair(t, norm, sym, i, &heap);
        while (heap.n > 0) {
            spm_pair p = heap_pop(&heap);
            spm_symbol *l = &sym[p.left], *r = &sym[p.right];
            if (l->len == 0 || r->len == 0 || l->next != p.right ||
                l->len + r->len != t->offset[p.id + 1] - t->offset[p.id])
                continue; /* stale */
            l->len += r->len;
            l->id = p.id;
            l->next = r->next;
            if (r->next >= 0) sym[r->next].prev = p.left;
            r->len = 0;
            try_pair(t, norm, sym, l->prev, &heap);
            try_pair(t, norm, sym, p.left, &heap);
        }
    }

    size_t count = (add_bos ? 1 : 0) + (add_eos ? 1 : 0);
    for (int32_t i = n_sym > 0 ? 0 : -1; i >= 0; i = sym[i].next) count += sym[i].id >= 0 ? 1 : sym[i].len;
    res = malloc((count ? count : 1) * sizeof *res);
    if (!res) {
        st = cm_error(CM_ERR_NOMEM, "encode: out of memory for %zu tokens", count);
        goto done;
    }
    size_t m = 0;
    if (add_bos) res[m++] = t->bos;
    bool prev_unk = false;
    for (int32_t i = n_sym > 0 ? 0 : -1; i >= 0; i = sym[i].next) {
        if (sym[i].id >= 0) {
            res[m++] = sym[i].id;
            prev_unk = false;
            continue;
        }
        bool all_bytes = true;
        for (size_t k = 0; k < sym[i].len; k++)
            if (t->byte_id[(unsigned char)norm[sym[i].start + k]] < 0) all_bytes = false;
        if (all_bytes) {
            for (size_t k = 0; k < sym[i].len; k++)
                res[m++] = t->byte_id[(unsigned char)norm[sym[i].start + k]];
            prev_unk = false;
        } else if (t->unk >= 0) {
            /* a run of unknown characters is one unk, as sentencepiece (and HF's fuse_unk) do */
            if (!prev_unk) res[m++] = t->unk;
            prev_unk = true;
            continue;
        } else {
            st = cm_error(
                CM_ERR_ARG,
                "encode: the character \"%.*s\" has no piece, no byte pieces and there is no unk token",
                (int)sym[i].len, norm + sym[i].start);
            goto done;
        }
    }
    if (add_eos) res[m++] = t->eos;
    *ids = res;
    *n_ids = m;
    res = NULL;
done:
    free(res);
    free(norm);
    free(sym);
    free(heap.a);
    return st;
}

cm_status cm_tokenizer_encode_special(const cm_tokenizer *t, const char *text, size_t len, bool add_bos,
                                      bool add_eos, bool parse_special, int32_t **ids, size_t *n_ids) {
    if (t->kind == CM_TOKENIZER_BPE)
        return cm_bpe_encode(t, text, len, add_bos, add_eos, parse_special, ids, n_ids);
    return cm_tokenizer_encode(t, text, len, add_bos, add_eos, ids, n_ids);
}

/* ---------------------------------------------------------------------------------------------------------
 * Decoding */

typedef struct {
    char *out;
    size_t cap, n;
} emitter;

static inline void emit(emitter *e, const unsigned char *s, size_t n) {
    size_t room = e->cap > e->n ? e->cap - e->n : 0;
    if (n > room) n = room; /* the caller gave less than the documented capacity: truncate, never overrun */
    memcpy(e->out + e->n, s, n);
    e->n += n;
}

/* Pass one output byte through the UTF-8 hold-back. */
static void feed_byte(cm_detokenizer *d, emitter *e, unsigned char b) {
    for (;;) {
        if (d->n_pending == 0) {
            int len = utf8_len(b);
            if (len <= 1) { /* ASCII, or a byte that cannot start a character: out as it is */
                emit(e, &b, 1);
            } else {
                d->pending[0] = b;
                d->n_pending = 1;
            }
            return;
        }
        unsigned char lead = d->pending[0];
        if (utf8_cont_ok(lead, d->n_pending, b)) {
            d->pending[d->n_pending++] = b;
            if (d->n_pending == utf8_len(lead)) {
                emit(e, d->pending, (size_t)d->n_pending);
                d->n_pending = 0;
            }
            return;
        }
        /* proven invalid: release what was held as it is, then look at b afresh */
        emit(e, d->pending, (size_t)d->n_pending);
        d->n_pending = 0;
    }
}

static void feed(cm_detokenizer *d, emitter *e, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) feed_byte(d, e, (unsigned char)s[i]);
}

void cm_detokenizer_init(cm_detokenizer *d, const cm_tokenizer *t) {
    memset(d, 0, sizeof *d);
    d->tok = t;
    d->prev = -1;
    d->at_start = true;
}

size_t cm_detokenizer_push(cm_detokenizer *d, int id, char *out, size_t cap) {
    const cm_tokenizer *t = d->tok;
    emitter e = {.out = out, .cap = cap, .n = 0};
    if (id < 0 || id >= t->n_vocab) return 0;
    d->prev = id;
    if (t->kind == CM_TOKENIZER_BPE) {
        if (t->type[id] == CM_TOKEN_CONTROL) return 0;
        unsigned char bytes[CM_SPM_MAX_PIECE_LEN];
        size_t n = cm_bpe_piece_bytes(t, id, bytes);
        feed(d, &e, (const char *)bytes, n);
        d->at_start = false;
        return e.n;
    }
    switch ((cm_token_type)t->type[id]) {
    case CM_TOKEN_CONTROL:
        return 0; /* <s>, </s>: no text, and the start is still the start */
    case CM_TOKEN_UNKNOWN:
        feed(d, &e, UNK_SURFACE, UNK_SURFACE_LEN);
        break;
    case CM_TOKEN_BYTE:
        feed_byte(d, &e, (unsigned char)cm_spm_byte_piece_value(t->blob + t->offset[id], 6));
        break;
    default: {
        size_t n;
        const char *p = piece_of(t, id, &n);
        if (d->at_start && n >= SPACE_SYMBOL_LEN && memcmp(p, SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0) {
            p += SPACE_SYMBOL_LEN;
            n -= SPACE_SYMBOL_LEN;
        }
        size_t run = 0; /* bytes since the last "▁" */
        for (size_t i = 0; i < n;) {
            if (n - i >= SPACE_SYMBOL_LEN && memcmp(p + i, SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0) {
                feed(d, &e, p + i - run, run);
                feed_byte(d, &e, ' ');
                i += SPACE_SYMBOL_LEN;
                run = 0;
            } else {
                i++;
                run++;
            }
        }
        feed(d, &e, p + n - run, run);
        break;
    }
    }
    d->at_start = false;
    return e.n;
}

size_t cm_detokenizer_flush(cm_detokenizer *d, char *out, size_t cap) {
    emitter e = {.out = out, .cap = cap, .n = 0};
    emit(&e, d->pending, (size_t)d->n_pending);
    d->n_pending = 0;
    return e.n;
}

cm_status cm_tokenizer_decode(const cm_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len) {
    *text = NULL;
    if (len) *len = 0;
    if (!ids && n > 0) return cm_error(CM_ERR_ARG, "decode: ids is NULL");
    size_t cap = 8;
    for (size_t i = 0; i < n; i++) {
        size_t plen = 0;
        if (ids[i] >= 0 && ids[i] < t->n_vocab) plen = t->offset[ids[i] + 1] - t->offset[ids[i]];
        if (cm_add_size(cap, plen + 8, &cap)) return cm_error(CM_ERR_NOMEM, "decode: output too large");
    }
    char *buf = malloc(cap);
    if (!buf) return cm_error(CM_ERR_NOMEM, "decode: out of memory for %zu bytes", cap);
    cm_detokenizer d;
    cm_detokenizer_init(&d, t);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += cm_detokenizer_push(&d, ids[i], buf + m, cap - 1 - m);
    m += cm_detokenizer_flush(&d, buf + m, cap - 1 - m);
    buf[m] = 0;
    *text = buf;
    if (len) *len = m;
    return CM_OK;
}
