/* SentencePiece tokenizer.model: a protobuf ModelProto, read with a small bounded wire-format reader and
 * written back with the fields sentencepiece needs to load it.
 *
 *   ModelProto      1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec
 *   SentencePiece   1 piece (string), 2 score (float), 3 type (enum, default NORMAL)
 *   TrainerSpec     3 model_type (UNIGRAM 1 by default, BPE 2), 4 vocab_size, 35 byte_fallback,
 *                   40 unk_id (0), 41 bos_id (1), 42 eos_id (2), 43 pad_id (-1), 45..48 unk/bos/eos/pad piece
 *   NormalizerSpec  1 name, 2 precompiled_charsmap, 3 add_dummy_prefix (true), 4 remove_extra_whitespaces
 *                   (true), 5 escape_whitespaces (true) */
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/tokenizer.h"
#include "tokenizer/spm_internal.h"

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

typedef struct {
    const uint8_t *base; /* start of the file, for offsets in messages */
    const uint8_t *p, *end;
    const char *name;
} pb_reader;

static size_t pb_offset(const pb_reader *r, const uint8_t *p) {
    return (size_t)(p - r->base);
}

static cm_status pb_varint(pb_reader *r, uint64_t *v) {
    const uint8_t *start = r->p;
    uint64_t x = 0;
    *v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end)
            return cm_error(CM_ERR_FORMAT, "%s: byte offset %zu: varint runs past the end of its message",
                            r->name, pb_offset(r, start));
        uint8_t b = *r->p++;
        if (shift == 63 && b > 1)
            return cm_error(CM_ERR_FORMAT, "%s: byte offset %zu: varint overflows 64 bits", r->name,
                            pb_offset(r, start));
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return CM_OK;
        }
    }
    return cm_error(CM_ERR_FORMAT, "%s: byte offset %zu: varint longer than 10 bytes", r->name,
                    pb_offset(r, start));
}

/* Next field key; *more = false at the end of the message. */
static cm_status pb_key(pb_reader *r, uint32_t *field, int *wire, bool *more) {
    *field = 0;
    *wire = 0;
    *more = r->p < r->end;
    if (!*more) return CM_OK;
    const uint8_t *start = r->p;
    uint64_t k;
    CM_TRY(pb_varint(r, &k));
    *field = (uint32_t)(k >> 3);
    *wire = (int)(k & 7);
    if (k >> 3 == 0 || k >> 3 > 536870911u)
        return cm_error(CM_ERR_FORMAT, "%s: byte offset %zu: invalid field number %llu", r->name,
                        pb_offset(r, start), (unsigned long long)(k >> 3));
    return CM_OK;
}

static cm_status pb_bytes(pb_reader *r, const uint8_t **p, size_t *n) {
    const uint8_t *start = r->p;
    uint64_t len = 0;
    *p = NULL;
    *n = 0;
    CM_TRY(pb_varint(r, &len));
    if (len > (uint64_t)(r->end - r->p))
        return cm_error(CM_ERR_FORMAT, "%s: byte offset %zu: length %llu runs past the end (%zu bytes left)",
                        r->name, pb_offset(r, start), (unsigned long long)len, (size_t)(r->end - r->p));
    *p = r->p;
    *n = (size_t)len;
    r->p += len;
    return CM_OK;
}

static cm_status pb_skip(pb_reader *r, uint32_t field, int wire) {
    const uint8_t *start = r->p;
    uint64_t v;
    const uint8_t *p;
    size_t n;
    switch (wire) {
    case WIRE_VARINT:
        return pb_varint(r, &v);
    case WIRE_LEN:
        return pb_bytes(r, &p, &n);
    case WIRE_I64:
    case WIRE_I32:
        n = wire == WIRE_I64 ? 8 : 4;
        if ((size_t)(r->end - r->p) < n)
            return cm_error(CM_ERR_FORMAT, "%s: byte offset %zu: field %u runs past the end", r->name,
                            pb_offset(r, start), field);
        r->p += n;
        return CM_OK;
    default:
        return cm_error(CM_ERR_FORMAT, "%s: byte offset %zu: field %u has unsupported wire type %d", r->name,
                        pb_offset(r, start), field, wire);
    }
}

static cm_status pb_expect(pb_reader *r, uint32_t field, int wire, int want, const char *what) {
    if (wire == want) return CM_OK;
    return cm_error(CM_ERR_FORMAT, "%s: byte offset %zu: %s (field %u) has wire type %d, expected %d",
                    r->name, pb_offset(r, r->p), what, field, wire, want);
}

static cm_status pb_int32(pb_reader *r, uint32_t field, int wire, const char *what, int32_t *out) {
    CM_TRY(pb_expect(r, field, wire, WIRE_VARINT, what));
    uint64_t v;
    CM_TRY(pb_varint(r, &v));
    *out = (int32_t)(uint32_t)v; /* int32 fields sign-extend to 64 bits on the wire */
    return CM_OK;
}

static cm_status pb_bool(pb_reader *r, uint32_t field, int wire, const char *what, bool *out) {
    CM_TRY(pb_expect(r, field, wire, WIRE_VARINT, what));
    uint64_t v;
    CM_TRY(pb_varint(r, &v));
    *out = v != 0;
    return CM_OK;
}

static pb_reader pb_sub(const pb_reader *r, const uint8_t *p, size_t n) {
    return (pb_reader){.base = r->base, .p = p, .end = p + n, .name = r->name};
}

typedef struct {
    int32_t model_type, vocab_size, unk_id, bos_id, eos_id, pad_id;
    bool byte_fallback;
} trainer_spec;

static cm_status parse_trainer(pb_reader r, trainer_spec *ts) {
    for (;;) {
        uint32_t f;
        int w;
        bool more;
        CM_TRY(pb_key(&r, &f, &w, &more));
        if (!more) return CM_OK;
        switch (f) {
        case 3:
            CM_TRY(pb_int32(&r, f, w, "trainer_spec.model_type", &ts->model_type));
            break;
        case 4:
            CM_TRY(pb_int32(&r, f, w, "trainer_spec.vocab_size", &ts->vocab_size));
            break;
        case 35:
            CM_TRY(pb_bool(&r, f, w, "trainer_spec.byte_fallback", &ts->byte_fallback));
            break;
        case 40:
            CM_TRY(pb_int32(&r, f, w, "trainer_spec.unk_id", &ts->unk_id));
            break;
        case 41:
            CM_TRY(pb_int32(&r, f, w, "trainer_spec.bos_id", &ts->bos_id));
            break;
        case 42:
            CM_TRY(pb_int32(&r, f, w, "trainer_spec.eos_id", &ts->eos_id));
            break;
        case 43:
            CM_TRY(pb_int32(&r, f, w, "trainer_spec.pad_id", &ts->pad_id));
            break;
        default:
            CM_TRY(pb_skip(&r, f, w));
            break;
        }
    }
}

typedef struct {
    const uint8_t *name;
    size_t name_len, charsmap_len;
    bool add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
} normalizer_spec;

static cm_status parse_normalizer(pb_reader r, normalizer_spec *ns) {
    for (;;) {
        uint32_t f;
        int w;
        bool more;
        const uint8_t *p;
        CM_TRY(pb_key(&r, &f, &w, &more));
        if (!more) return CM_OK;
        switch (f) {
        case 1:
            CM_TRY(pb_expect(&r, f, w, WIRE_LEN, "normalizer_spec.name"));
            CM_TRY(pb_bytes(&r, &ns->name, &ns->name_len));
            break;
        case 2:
            CM_TRY(pb_expect(&r, f, w, WIRE_LEN, "normalizer_spec.precompiled_charsmap"));
            CM_TRY(pb_bytes(&r, &p, &ns->charsmap_len));
            break;
        case 3:
            CM_TRY(pb_bool(&r, f, w, "normalizer_spec.add_dummy_prefix", &ns->add_dummy_prefix));
            break;
        case 4:
            CM_TRY(
                pb_bool(&r, f, w, "normalizer_spec.remove_extra_whitespaces", &ns->remove_extra_whitespaces));
            break;
        case 5:
            CM_TRY(pb_bool(&r, f, w, "normalizer_spec.escape_whitespaces", &ns->escape_whitespaces));
            break;
        default:
            CM_TRY(pb_skip(&r, f, w));
            break;
        }
    }
}

static cm_status parse_piece(pb_reader r, int id, cm_tokenizer *t) {
    const uint8_t *piece = NULL;
    size_t piece_len = 0;
    float score = 0.0f;
    int32_t type = CM_TOKEN_NORMAL;
    const uint8_t *start = r.p;
    for (;;) {
        uint32_t f;
        int w;
        bool more;
        CM_TRY(pb_key(&r, &f, &w, &more));
        if (!more) break;
        switch (f) {
        case 1:
            CM_TRY(pb_expect(&r, f, w, WIRE_LEN, "piece"));
            CM_TRY(pb_bytes(&r, &piece, &piece_len));
            break;
        case 2: {
            CM_TRY(pb_expect(&r, f, w, WIRE_I32, "score"));
            if (r.end - r.p < 4)
                return cm_error(CM_ERR_FORMAT, "%s: byte offset %zu: score runs past the end", r.name,
                                pb_offset(&r, r.p));
            uint32_t bits =
                (uint32_t)r.p[0] | (uint32_t)r.p[1] << 8 | (uint32_t)r.p[2] << 16 | (uint32_t)r.p[3] << 24;
            memcpy(&score, &bits, 4);
            r.p += 4;
            break;
        }
        case 3:
            CM_TRY(pb_int32(&r, f, w, "type", &type));
            break;
        default:
            CM_TRY(pb_skip(&r, f, w));
            break;
        }
    }
    if (piece_len == 0)
        return cm_error(CM_ERR_FORMAT, "%s: byte offset %zu: token %d: empty or missing piece", r.name,
                        pb_offset(&r, start), id);
    cm_status st = cm_spm_set_piece(t, id, (const char *)piece, piece_len, score, type, r.name);
    if (st) return cm_error_prefix(st, "byte offset %zu", pb_offset(&r, start));
    return CM_OK;
}

static cm_status parse_model(const uint8_t *data, size_t size, const char *name, cm_tokenizer **out) {
    pb_reader r = {.base = data, .p = data, .end = data + size, .name = name};
    size_t n_pieces = 0;
    const uint8_t *tsp = NULL, *nsp = NULL;
    size_t ts_len = 0, ns_len = 0;
    /* first pass: count pieces, find the specs (the last occurrence wins, as protobuf merges them) */
    for (;;) {
        uint32_t f;
        int w;
        bool more;
        const uint8_t *p = NULL;
        size_t n = 0;
        CM_TRY(pb_key(&r, &f, &w, &more));
        if (!more) break;
        if (f == 1 || f == 2 || f == 3) {
            CM_TRY(pb_expect(&r, f, w, WIRE_LEN,
                             f == 1   ? "pieces"
                             : f == 2 ? "trainer_spec"
                                      : "normalizer_spec"));
            CM_TRY(pb_bytes(&r, &p, &n));
            if (f == 1) n_pieces++;
            if (f == 2) tsp = p, ts_len = n;
            if (f == 3) nsp = p, ns_len = n;
        } else {
            CM_TRY(pb_skip(&r, f, w));
        }
    }
    if (size == 0) return cm_error(CM_ERR_FORMAT, "%s: the file is empty", name);
    trainer_spec ts = {.model_type = 1, .unk_id = 0, .bos_id = 1, .eos_id = 2, .pad_id = -1};
    normalizer_spec ns = {
        .add_dummy_prefix = true, .remove_extra_whitespaces = true, .escape_whitespaces = true};
    if (tsp) CM_TRY(parse_trainer(pb_sub(&r, tsp, ts_len), &ts));
    if (nsp) CM_TRY(parse_normalizer(pb_sub(&r, nsp, ns_len), &ns));
    if (ts.model_type != 2) {
        const char *kind = ts.model_type == 1   ? "a unigram model"
                           : ts.model_type == 3 ? "a word model"
                           : ts.model_type == 4 ? "a char model"
                                                : "an unknown model type";
        return cm_error(
            CM_ERR_UNSUPPORTED,
            "%s: trainer_spec.model_type %d is %s%s; only BPE (2) SentencePiece models are supported", name,
            ts.model_type, kind, tsp ? "" : " (the default: no trainer_spec)");
    }
    if (ns.charsmap_len > 0)
        return cm_error(CM_ERR_UNSUPPORTED,
                        "%s: normalizer \"%.*s\" uses a precompiled charsmap (%zu bytes); only the identity "
                        "normalizer is supported",
                        name, (int)(ns.name_len > 64 ? 64 : ns.name_len),
                        ns.name ? (const char *)ns.name : "", ns.charsmap_len);
    if (n_pieces == 0) return cm_error(CM_ERR_FORMAT, "%s: the model has no pieces", name);

    cm_tokenizer *t;
    CM_TRY(cm_spm_alloc(n_pieces, name, &t));
    r.p = data;
    int id = 0;
    for (;;) {
        uint32_t f;
        int w;
        bool more;
        const uint8_t *p = NULL;
        size_t n = 0;
        cm_status st = pb_key(&r, &f, &w, &more);
        if (!st && more) st = w == WIRE_LEN ? pb_bytes(&r, &p, &n) : pb_skip(&r, f, w);
        if (!st && more && f == 1) st = parse_piece(pb_sub(&r, p, n), id++, t);
        if (st) {
            cm_tokenizer_close(t);
            return st;
        }
        if (!more) break;
    }
    int unk = -1;
    for (int i = 0; i < t->n_vocab && unk < 0; i++)
        if (t->type[i] == CM_TOKEN_UNKNOWN) unk = i;
    t->unk = unk >= 0 ? unk : ts.unk_id;
    t->bos = ts.bos_id;
    t->eos = ts.eos_id;
    t->pad = ts.pad_id;
    /* sentencepiece treats a negative id as "none"; -1 is the usual spelling */
    if (t->unk < 0) t->unk = -1;
    if (t->bos < 0) t->bos = -1;
    if (t->eos < 0) t->eos = -1;
    if (t->pad < 0) t->pad = -1;
    t->add_dummy_prefix = ns.add_dummy_prefix;
    t->remove_extra_whitespaces = ns.remove_extra_whitespaces;
    t->escape_whitespaces = ns.escape_whitespaces;
    t->add_bos = t->bos >= 0;
    t->add_eos = false;
    CM_TRY(cm_spm_finish(t, name));
    *out = t;
    return CM_OK;
}

cm_status cm_tokenizer_parse_spm_model(const void *data, size_t size, const char *name, cm_tokenizer **out) {
    *out = NULL;
    if (!name) name = "tokenizer.model";
    if (!data && size > 0) return cm_error(CM_ERR_ARG, "%s: data is NULL", name);
    if (size == 0) return cm_error(CM_ERR_FORMAT, "%s: the file is empty", name);
    return parse_model(data, size, name, out);
}

/* ---------------------------------------------------------------------------------------------------------
 * Writer */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    bool oom;
} pb_buf;

static void buf_put(pb_buf *b, const void *s, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void put_varint(pb_buf *b, uint64_t v) {
    uint8_t tmp[10];
    size_t n = 0;
    do {
        tmp[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) tmp[n] |= 0x80;
        n++;
    } while (v);
    buf_put(b, tmp, n);
}

static void put_key(pb_buf *b, uint32_t field, int wire) {
    put_varint(b, (uint64_t)field << 3 | (uint64_t)wire);
}
static void put_int(pb_buf *b, uint32_t field, int64_t v) {
    put_key(b, field, WIRE_VARINT);
    put_varint(b, (uint64_t)v); /* negative int32 values sign-extend to ten bytes, as protobuf does */
}
static void put_bytes(pb_buf *b, uint32_t field, const void *s, size_t n) {
    put_key(b, field, WIRE_LEN);
    put_varint(b, n);
    buf_put(b, s, n);
}
static void put_float(pb_buf *b, uint32_t field, float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint8_t le[4] = {(uint8_t)bits, (uint8_t)(bits >> 8), (uint8_t)(bits >> 16), (uint8_t)(bits >> 24)};
    put_key(b, field, WIRE_I32);
    buf_put(b, le, 4);
}
static void put_message(pb_buf *b, uint32_t field, const pb_buf *m) {
    put_bytes(b, field, m->p, m->n);
}

cm_status cm_tokenizer_serialize_spm_model(const cm_tokenizer *t, uint8_t **data, size_t *size) {
    *data = NULL;
    *size = 0;
    if (t->kind != CM_TOKENIZER_SPM)
        return cm_error(CM_ERR_UNSUPPORTED,
                        "tokenizer.model: only a SentencePiece tokenizer can be written so");
    int unk = -1, n_bytes = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        size_t n = t->offset[i + 1] - t->offset[i];
        if (t->type[i] == CM_TOKEN_UNKNOWN && unk < 0) unk = i;
        if (t->type[i] == CM_TOKEN_BYTE) n_bytes++;
        if (cm_spm_lookup(t, t->blob + t->offset[i], n) != i)
            return cm_error(CM_ERR_ARG,
                            "save tokenizer.model: token %d repeats the piece \"%.*s\" of token %d, "
                            "which sentencepiece refuses",
                            i, (int)(n > 32 ? 32 : n), t->blob + t->offset[i],
                            cm_spm_lookup(t, t->blob + t->offset[i], n));
    }
    if (unk < 0)
        return cm_error(CM_ERR_ARG, "save tokenizer.model: the vocabulary has no UNKNOWN piece, which "
                                    "sentencepiece requires");
    if (n_bytes != 0 && n_bytes != 256)
        return cm_error(CM_ERR_ARG,
                        "save tokenizer.model: the vocabulary has %d byte pieces; sentencepiece "
                        "needs all 256 (byte fallback) or none",
                        n_bytes);
    bool has_bytes = n_bytes == 256;
    pb_buf out = {0}, m = {0};
    for (int i = 0; i < t->n_vocab; i++) {
        size_t n = t->offset[i + 1] - t->offset[i];
        m.n = 0;
        put_bytes(&m, 1, t->blob + t->offset[i], n);
        put_float(&m, 2, t->score[i]);
        if (t->type[i] != CM_TOKEN_NORMAL) put_int(&m, 3, t->type[i]);
        put_message(&out, 1, &m);
    }
    m.n = 0;
    put_int(&m, 3, 2); /* BPE */
    put_int(&m, 4, t->n_vocab);
    put_int(&m, 35, has_bytes);
    put_int(&m, 40, unk);
    put_int(&m, 41, t->bos);
    put_int(&m, 42, t->eos);
    put_int(&m, 43, t->pad);
    const int ids[4] = {unk, t->bos, t->eos, t->pad};
    for (int k = 0; k < 4; k++)
        if (ids[k] >= 0)
            put_bytes(&m, 45 + (uint32_t)k, t->blob + t->offset[ids[k]],
                      t->offset[ids[k] + 1] - t->offset[ids[k]]);
    put_message(&out, 2, &m);
    m.n = 0;
    put_bytes(&m, 1, "identity", 8);
    put_int(&m, 3, t->add_dummy_prefix);
    put_int(&m, 4, t->remove_extra_whitespaces);
    put_int(&m, 5, t->escape_whitespaces);
    put_message(&out, 3, &m);
    bool oom = out.oom || m.oom;
    free(m.p);
    if (oom) {
        free(out.p);
        return cm_error(CM_ERR_NOMEM, "save tokenizer.model: out of memory");
    }
    *data = out.p;
    *size = out.n;
    return CM_OK;
}

cm_status cm_tokenizer_save_spm_model(const cm_tokenizer *t, const char *path) {
    uint8_t *data;
    size_t size;
    CM_TRY(cm_tokenizer_serialize_spm_model(t, &data, &size));
    cm_status st = cm_write_file_atomic(path, data, size);
    free(data);
    return st;
}
