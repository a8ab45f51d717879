/* GGUF v2/v3 reader and writer (FACTS 1.5).
 *
 * Reader: one pass over the bytes (a memory map or a caller's buffer). Every length and offset is checked
 * against the bytes that remain before it is used, every product is overflow-checked, and every count is
 * checked against the smallest number of bytes its items could occupy before anything is allocated. Keys and
 * tensor names are copied (NUL-terminated); string values, arrays and tensor data stay in the file.
 *
 * Writer: values are serialized when set; on commit the header, KVs and tensor infos are written, then each
 * tensor's bytes are streamed from the caller's pointer and padded to the alignment, into an atomic file. */
#include "camelid/gguf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "camelid's GGUF code assumes a little-endian host"
#endif

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_WRITE_DIMS 4 /* GGML_MAX_DIMS: llama.cpp rejects more */
#define GGUF_MAX_NAME 64      /* GGML_MAX_NAME: llama.cpp rejects names of 64 bytes or more */
/* Smallest encodings: a KV is key length (8) + type (4) + a 1-byte value; a tensor info is name length (8) +
 * n_dims (4) + type (4) + offset (8). */
#define GGUF_MIN_KV_BYTES 13
#define GGUF_MIN_TENSOR_BYTES 24
#define GGUF_HEADER_BYTES 24

/* ---- ggml types ---- */

typedef struct {
    const char *name;
    uint32_t blck;
    uint32_t size;
} ggml_type_info;

static const ggml_type_info ggml_types[] = {
    [0] = {"F32", 1, 4},         [1] = {"F16", 1, 2},         [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},      [6] = {"Q5_0", 32, 22},      [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},      [9] = {"Q8_1", 32, 36},      [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},   [12] = {"Q4_K", 256, 144},   [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},   [15] = {"Q8_K", 256, 292},   [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74},  [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},   [21] = {"IQ3_S", 256, 110},  [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},         [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},        [27] = {"I64", 1, 8},        [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},   [30] = {"BF16", 1, 2},       [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},
};

static const ggml_type_info *ggml_info(uint32_t t) {
    if (t >= sizeof ggml_types / sizeof ggml_types[0] || !ggml_types[t].name) return NULL;
    return &ggml_types[t];
}

const char *cm_ggml_type_name(uint32_t ggml_type) {
    const ggml_type_info *ti = ggml_info(ggml_type);
    return ti ? ti->name : NULL;
}

int cm_ggml_type_block(uint32_t ggml_type, size_t *block_elems, size_t *block_bytes) {
    const ggml_type_info *ti = ggml_info(ggml_type);
    if (!ti) return 0;
    if (block_elems) *block_elems = ti->blck;
    if (block_bytes) *block_bytes = ti->size;
    return 1;
}

static cm_dtype ggml_to_dtype(uint32_t t) {
    switch (t) {
    case 0:
        return CM_DTYPE_F32;
    case 1:
        return CM_DTYPE_F16;
    case 30:
        return CM_DTYPE_BF16;
    case 24:
        return CM_DTYPE_I8;
    case 25:
        return CM_DTYPE_I16;
    case 26:
        return CM_DTYPE_I32;
    case 27:
        return CM_DTYPE_I64;
    case 28:
        return CM_DTYPE_F64;
    case 8:
        return CM_DTYPE_Q8_0;
    case 2:
        return CM_DTYPE_Q4_0;
    case 14:
        return CM_DTYPE_Q6_K;
    default:
        return CM_DTYPE_COUNT;
    }
}

static int dtype_to_ggml(cm_dtype d, uint32_t *out) {
    switch (d) {
    case CM_DTYPE_F32:
        *out = 0;
        return 1;
    case CM_DTYPE_F16:
        *out = 1;
        return 1;
    case CM_DTYPE_BF16:
        *out = 30;
        return 1;
    case CM_DTYPE_I8:
        *out = 24;
        return 1;
    case CM_DTYPE_I16:
        *out = 25;
        return 1;
    case CM_DTYPE_I32:
        *out = 26;
        return 1;
    case CM_DTYPE_I64:
        *out = 27;
        return 1;
    case CM_DTYPE_F64:
        *out = 28;
        return 1;
    case CM_DTYPE_Q8_0:
        *out = 8;
        return 1;
    case CM_DTYPE_Q4_0:
        *out = 2;
        return 1;
    case CM_DTYPE_Q6_K:
        *out = 14;
        return 1;
    default:
        return 0;
    }
}

/* Bytes of a tensor with GGUF dims ne[0..n): ne0/blck * size * ne1 * ... Returns a message on failure. */
static const char *ggml_nbytes(const ggml_type_info *ti, uint32_t n, const int64_t *ne, size_t *out) {
    /* The product of the nonzero dims must fit int64, so that any partial product (cm_tensor_numel multiplies
     * in row-major order) fits too. */
    uint64_t numel = 1;
    for (uint32_t i = 0; i < n; i++) {
        if (ne[i] < 0) return "a dimension is negative";
        if (ne[i] == 0) continue;
        if (__builtin_mul_overflow(numel, (uint64_t)ne[i], &numel) || numel > (uint64_t)INT64_MAX)
            return "the element count overflows";
    }
    uint64_t ne0 = n > 0 ? (uint64_t)ne[0] : 1;
    if (ne0 % ti->blck != 0) return "ne[0] is not a multiple of the type's block size";
    size_t rows = 1, bytes;
    for (uint32_t i = 1; i < n; i++) rows *= (size_t)ne[i]; /* bounded by the product above (or 0) */
    if (cm_mul_size((size_t)(ne0 / ti->blck), ti->size, &bytes) || cm_mul_size(bytes, rows, &bytes))
        return "the byte size overflows";
    *out = bytes;
    return NULL;
}

static const char *gguf_type_name(uint32_t t) {
    static const char *names[] = {"UINT8", "INT8",   "UINT16", "INT16",  "UINT32", "INT32",  "FLOAT32",
                                  "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64",  "FLOAT64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "invalid";
}

/* Size of one element of a fixed-size GGUF type, 0 for STRING/ARRAY/invalid. */
static size_t gguf_scalar_size(uint32_t t) {
    switch (t) {
    case CM_GGUF_UINT8:
    case CM_GGUF_INT8:
    case CM_GGUF_BOOL:
        return 1;
    case CM_GGUF_UINT16:
    case CM_GGUF_INT16:
        return 2;
    case CM_GGUF_UINT32:
    case CM_GGUF_INT32:
    case CM_GGUF_FLOAT32:
        return 4;
    case CM_GGUF_UINT64:
    case CM_GGUF_INT64:
    case CM_GGUF_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

static int gguf_is_int(cm_gguf_type t) {
    return t == CM_GGUF_UINT8 || t == CM_GGUF_INT8 || t == CM_GGUF_UINT16 || t == CM_GGUF_INT16 ||
           t == CM_GGUF_UINT32 || t == CM_GGUF_INT32 || t == CM_GGUF_UINT64 || t == CM_GGUF_INT64;
}

static int gguf_is_signed(cm_gguf_type t) {
    return t == CM_GGUF_INT8 || t == CM_GGUF_INT16 || t == CM_GGUF_INT32 || t == CM_GGUF_INT64;
}

/* Decode a little-endian scalar of type t at p into integer (sign-extended) and float forms. */
static void gguf_decode_scalar(uint32_t t, const uint8_t *p, uint64_t *u, double *f) {
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64 = 0;
    float f32;
    *f = 0;
    switch (t) {
    case CM_GGUF_UINT8:
    case CM_GGUF_BOOL:
        u64 = p[0];
        break;
    case CM_GGUF_INT8:
        memcpy(&u8, p, 1), u64 = (uint64_t)(int64_t)(int8_t)u8;
        break;
    case CM_GGUF_UINT16:
        memcpy(&u16, p, 2), u64 = u16;
        break;
    case CM_GGUF_INT16:
        memcpy(&u16, p, 2), u64 = (uint64_t)(int64_t)(int16_t)u16;
        break;
    case CM_GGUF_UINT32:
        memcpy(&u32, p, 4), u64 = u32;
        break;
    case CM_GGUF_INT32:
        memcpy(&u32, p, 4), u64 = (uint64_t)(int64_t)(int32_t)u32;
        break;
    case CM_GGUF_FLOAT32:
        memcpy(&f32, p, 4), *f = f32;
        break;
    case CM_GGUF_UINT64:
    case CM_GGUF_INT64:
        memcpy(&u64, p, 8);
        break;
    case CM_GGUF_FLOAT64:
        memcpy(f, p, 8);
        break;
    default:
        break;
    }
    *u = u64;
}

/* ---- name hash (keys and tensor names) ---- */

typedef struct {
    size_t *slots; /* index + 1; 0 = empty */
    size_t mask;
} name_table;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int table_init(name_table *t, size_t n) {
    size_t cap = 8;
    while (cap < 2 * n) cap *= 2; /* n is bounded by the file size, so this cannot overflow */
    t->slots = calloc(cap, sizeof *t->slots);
    t->mask = cap - 1;
    return t->slots != NULL;
}

/* Find `name`, or insert index `idx` if absent (idx == SIZE_MAX: lookup only). Returns the existing index or
 * SIZE_MAX. `names(i)` is read through a stride into an array of structs whose first field is the name. */
static size_t table_find(const name_table *t, const char *name, const void *items, size_t stride,
                         size_t idx) {
    if (!t->slots) return SIZE_MAX;
    size_t h = (size_t)hash_str(name) & t->mask;
    for (;;) {
        size_t s = t->slots[h];
        if (s == 0) {
            if (idx != SIZE_MAX) t->slots[h] = idx + 1;
            return SIZE_MAX;
        }
        const char *other = *(const char *const *)((const char *)items + (s - 1) * stride);
        if (strcmp(other, name) == 0) return s - 1;
        h = (h + 1) & t->mask;
    }
}

/* ---- reader ---- */

typedef struct {
    char *key;
    cm_gguf_type type;
    size_t val_off;     /* file offset of the value (after the type field) */
    size_t val_len;     /* its encoded size */
    uint64_t u;         /* integer scalars (sign-extended for signed types), bools */
    double f;           /* float scalars */
    const uint8_t *str; /* STRING: bytes; ARRAY: first element */
    uint64_t len;       /* STRING: length; ARRAY: count */
    cm_gguf_type elem;  /* ARRAY: element type */
    size_t *str_offs;   /* ARRAY of STRING: file offset of each element's length field */
} gguf_kv;

typedef struct {
    char *name; /* first field: read by table_find */
    uint32_t ggml_type;
    uint64_t offset; /* relative to the data blob */
    size_t info_off; /* file offset of the tensor info (for messages) */
} gguf_tinfo;

struct cm_gguf {
    char *path;
    cm_mmap *map; /* NULL for cm_gguf_parse */
    const uint8_t *data;
    size_t size;
    uint32_t version;
    size_t alignment;
    size_t data_off;
    gguf_kv *kvs;
    size_t n_kv;
    gguf_tinfo *tinfo;
    cm_tensor *tensors;
    size_t n_tensors;
    name_table kv_table, t_table;
};

typedef struct {
    const uint8_t *d;
    size_t size, pos;
    const char *name;
    char ctx[192]; /* "key 3 'general.name'" / "tensor 5 'output.weight'" */
} reader;

/* Copy a name into buf for a message: printable ASCII kept, other bytes as '?', long names cut. */
static const char *printable(const uint8_t *s, size_t n, char *buf, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < cap; i++) buf[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    if (k < n && k + 4 <= cap) buf[k++] = '.', buf[k++] = '.', buf[k++] = '.';
    buf[k] = 0;
    return buf;
}

static cm_status fail_at(const reader *r, size_t off, cm_status code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static cm_status fail_at(const reader *r, size_t off, cm_status code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cm_error(code, "%s: offset %zu: %s%s%s", r->name, off, r->ctx, r->ctx[0] ? ": " : "", msg);
}

static cm_status need(const reader *r, size_t n, const char *what) {
    if (r->size - r->pos < n)
        return fail_at(r, r->pos, CM_ERR_FORMAT, "file ends inside the %s (%zu bytes needed, %zu left)", what,
                       n, r->size - r->pos);
    return CM_OK;
}

static cm_status rd_u32(reader *r, const char *what, uint32_t *out) {
    CM_TRY(need(r, 4, what));
    memcpy(out, r->d + r->pos, 4);
    r->pos += 4;
    return CM_OK;
}

static cm_status rd_u64(reader *r, const char *what, uint64_t *out) {
    CM_TRY(need(r, 8, what));
    memcpy(out, r->d + r->pos, 8);
    r->pos += 8;
    return CM_OK;
}

/* A GGUF string: uint64 length + bytes. `what` names it in messages ("string", "key", "tensor name"). */
static cm_status rd_str(reader *r, const char *what, const uint8_t **s, uint64_t *len) {
    size_t at = r->pos;
    char lw[64];
    snprintf(lw, sizeof lw, "%s length", what);
    CM_TRY(rd_u64(r, lw, len));
    if (*len > r->size - r->pos)
        return fail_at(r, at, CM_ERR_FORMAT, "%s length %llu runs past the end of the file (%zu bytes)", what,
                       (unsigned long long)*len, r->size);
    *s = r->d + r->pos;
    r->pos += (size_t)*len;
    return CM_OK;
}

/* A key or tensor name: no NUL bytes (they could not be looked up), copied NUL-terminated. */
static cm_status rd_name(reader *r, const char *what, char **out) {
    size_t at = r->pos;
    const uint8_t *s = NULL;
    uint64_t len = 0;
    CM_TRY(rd_str(r, what, &s, &len));
    if (memchr(s, 0, (size_t)len)) return fail_at(r, at, CM_ERR_FORMAT, "%s contains a NUL byte", what);
    char *p = malloc((size_t)len + 1);
    if (!p) return fail_at(r, at, CM_ERR_NOMEM, "out of memory");
    memcpy(p, s, (size_t)len);
    p[len] = 0;
    *out = p;
    return CM_OK;
}

/* The value of KV `kv` (type already read), at r->pos. */
static cm_status rd_value(reader *r, gguf_kv *kv) {
    size_t at = r->pos;
    kv->val_off = at;
    uint32_t t = kv->type;
    size_t sz = gguf_scalar_size(t);
    if (sz) {
        CM_TRY(need(r, sz, "value"));
        gguf_decode_scalar(t, r->d + r->pos, &kv->u, &kv->f);
        if (t == CM_GGUF_BOOL && kv->u > 1)
            return fail_at(r, at, CM_ERR_FORMAT, "bool value %llu is not 0 or 1", (unsigned long long)kv->u);
        r->pos += sz;
    } else if (t == CM_GGUF_STRING) {
        CM_TRY(rd_str(r, "string", &kv->str, &kv->len));
    } else if (t == CM_GGUF_ARRAY) {
        uint32_t et = 0;
        CM_TRY(rd_u32(r, "array element type", &et));
        if (et == CM_GGUF_ARRAY) return fail_at(r, at, CM_ERR_UNSUPPORTED, "nested arrays are not supported");
        if (et > CM_GGUF_FLOAT64)
            return fail_at(r, at, CM_ERR_FORMAT, "array element type %u is not a GGUF type (0..12)", et);
        kv->elem = (cm_gguf_type)et;
        CM_TRY(rd_u64(r, "array count", &kv->len));
        size_t left = r->size - r->pos;
        size_t esz = gguf_scalar_size(et);
        if (esz) {
            if (kv->len > left / esz)
                return fail_at(r, at, CM_ERR_FORMAT,
                               "array of %llu %s elements runs past the end of the file (%zu bytes)",
                               (unsigned long long)kv->len, gguf_type_name(et), r->size);
            kv->str = r->d + r->pos;
            if (et == CM_GGUF_BOOL) {
                for (size_t j = 0; j < (size_t)kv->len; j++)
                    if (kv->str[j] > 1)
                        return fail_at(r, r->pos + j, CM_ERR_FORMAT,
                                       "bool array element %zu is %u, not 0 or 1", j, kv->str[j]);
            }
            r->pos += (size_t)kv->len * esz;
        } else { /* strings: each at least its 8-byte length */
            if (kv->len > left / 8)
                return fail_at(r, at, CM_ERR_FORMAT,
                               "array of %llu strings runs past the end of the file (%zu bytes)",
                               (unsigned long long)kv->len, r->size);
            kv->str = r->d + r->pos;
            if (kv->len > 0 && !(kv->str_offs = malloc((size_t)kv->len * sizeof *kv->str_offs)))
                return fail_at(r, at, CM_ERR_NOMEM, "out of memory for %llu strings",
                               (unsigned long long)kv->len);
            for (size_t j = 0; j < (size_t)kv->len; j++) {
                kv->str_offs[j] = r->pos;
                const uint8_t *s = NULL;
                uint64_t n = 0;
                char what[48];
                snprintf(what, sizeof what, "string %zu", j);
                CM_TRY(rd_str(r, what, &s, &n));
            }
        }
    } else {
        return fail_at(r, at - 4, CM_ERR_FORMAT, "value type %u is not a GGUF type (0..12)", t);
    }
    kv->val_len = r->pos - at;
    return CM_OK;
}

/* Keys whose type every reader relies on. */
static cm_status check_known_key(reader *r, const gguf_kv *kv, size_t at) {
    static const struct {
        const char *key;
        cm_gguf_type type, elem;
    } known[] = {
        {"general.alignment", CM_GGUF_UINT32, 0},
        {"general.architecture", CM_GGUF_STRING, 0},
        {"tokenizer.ggml.tokens", CM_GGUF_ARRAY, CM_GGUF_STRING},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (strcmp(kv->key, known[i].key) != 0) continue;
        if (kv->type != known[i].type)
            return fail_at(r, at, CM_ERR_FORMAT, "has type %s, expected %s", gguf_type_name(kv->type),
                           gguf_type_name(known[i].type));
        if (kv->type == CM_GGUF_ARRAY && kv->elem != known[i].elem)
            return fail_at(r, at, CM_ERR_FORMAT, "is an array of %s, expected an array of %s",
                           gguf_type_name(kv->elem), gguf_type_name(known[i].elem));
    }
    return CM_OK;
}

static int cmp_by_offset(const void *a, const void *b, void *ctx) {
    const gguf_tinfo *ti = ctx;
    uint64_t x = ti[*(const size_t *)a].offset, y = ti[*(const size_t *)b].offset;
    return x < y ? -1 : x > y;
}

/* qsort_r is not C11; a small merge sort keeps this portable and O(n log n) for fuzzed counts. */
static void sort_indices(size_t *idx, size_t *tmp, size_t n, const gguf_tinfo *ti) {
    if (n < 2) return;
    size_t h = n / 2;
    sort_indices(idx, tmp, h, ti);
    sort_indices(idx + h, tmp, n - h, ti);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = cmp_by_offset(&idx[j], &idx[i], (void *)ti) < 0 ? idx[j++] : idx[i++];
    while (i < h) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, n * sizeof *idx);
}

static cm_status parse_header(reader *r, cm_gguf *g, uint64_t *n_kv, uint64_t *n_t) {
    if (r->size < 4 || memcmp(r->d, "GGUF", 4) != 0) {
        char buf[24];
        return fail_at(r, 0, CM_ERR_FORMAT, "not a GGUF file (magic \"%s\", expected \"GGUF\")",
                       printable(r->d, r->size < 4 ? r->size : 4, buf, sizeof buf));
    }
    r->pos = 4;
    CM_TRY(rd_u32(r, "version", &g->version));
    if (g->version == 1)
        return fail_at(r, 4, CM_ERR_UNSUPPORTED, "GGUF version 1 is not supported (only 2 and 3)");
    if (g->version != 2 && g->version != 3) {
        if ((g->version & 0xffff) == 0 && (g->version >> 24) <= 3)
            return fail_at(r, 4, CM_ERR_UNSUPPORTED, "big-endian GGUF files are not supported");
        return fail_at(r, 4, CM_ERR_UNSUPPORTED, "GGUF version %u is not supported (only 2 and 3)",
                       g->version);
    }
    CM_TRY(rd_u64(r, "tensor count", n_t));
    CM_TRY(rd_u64(r, "KV count", n_kv));
    size_t body = r->size - GGUF_HEADER_BYTES;
    if ((int64_t)*n_t < 0)
        return fail_at(r, 8, CM_ERR_FORMAT, "tensor count %lld is negative", (long long)(int64_t)*n_t);
    if ((int64_t)*n_kv < 0)
        return fail_at(r, 16, CM_ERR_FORMAT, "KV count %lld is negative", (long long)(int64_t)*n_kv);
    if (*n_kv > body / GGUF_MIN_KV_BYTES)
        return fail_at(r, 16, CM_ERR_FORMAT, "KV count %llu is more than a file of %zu bytes could hold",
                       (unsigned long long)*n_kv, r->size);
    if (*n_t > (body - (size_t)*n_kv * GGUF_MIN_KV_BYTES) / GGUF_MIN_TENSOR_BYTES)
        return fail_at(r, 8, CM_ERR_FORMAT, "tensor count %llu is more than a file of %zu bytes could hold",
                       (unsigned long long)*n_t, r->size);
    return CM_OK;
}

static cm_status parse_kvs(reader *r, cm_gguf *g, size_t n_kv) {
    if (!(g->kvs = calloc(n_kv ? n_kv : 1, sizeof *g->kvs)) || !table_init(&g->kv_table, n_kv))
        return fail_at(r, r->pos, CM_ERR_NOMEM, "out of memory for %zu KVs", n_kv);
    for (size_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &g->kvs[i];
        size_t at = r->pos;
        snprintf(r->ctx, sizeof r->ctx, "key %zu", i);
        CM_TRY(rd_name(r, "key", &kv->key));
        g->n_kv = i + 1; /* owns kv->key from here on */
        char pb[96];
        snprintf(r->ctx, sizeof r->ctx, "key %zu '%s'", i,
                 printable((const uint8_t *)kv->key, strlen(kv->key), pb, sizeof pb));
        size_t first = table_find(&g->kv_table, kv->key, g->kvs, sizeof *g->kvs, i);
        if (first != SIZE_MAX)
            return fail_at(r, at, CM_ERR_FORMAT, "duplicate key (first defined as key %zu)", first);
        uint32_t t = 0;
        CM_TRY(rd_u32(r, "value type", &t));
        kv->type = (cm_gguf_type)t;
        CM_TRY(rd_value(r, kv));
        CM_TRY(check_known_key(r, kv, at));
    }
    r->ctx[0] = 0;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = cm_gguf_find(g, "general.alignment");
    if (ai >= 0) {
        const gguf_kv *kv = &g->kvs[ai];
        if (kv->u == 0 || (kv->u & (kv->u - 1)) != 0) {
            snprintf(r->ctx, sizeof r->ctx, "key %lld 'general.alignment'", (long long)ai);
            return fail_at(r, kv->val_off, CM_ERR_FORMAT, "alignment %llu is not a nonzero power of two",
                           (unsigned long long)kv->u);
        }
        g->alignment = (size_t)kv->u;
    }
    return CM_OK;
}

static cm_status parse_tensor_infos(reader *r, cm_gguf *g, size_t n_t) {
    if (!(g->tinfo = calloc(n_t ? n_t : 1, sizeof *g->tinfo)) ||
        !(g->tensors = calloc(n_t ? n_t : 1, sizeof *g->tensors)) || !table_init(&g->t_table, n_t))
        return fail_at(r, r->pos, CM_ERR_NOMEM, "out of memory for %zu tensors", n_t);
    for (size_t i = 0; i < n_t; i++) {
        gguf_tinfo *ti = &g->tinfo[i];
        cm_tensor *t = &g->tensors[i];
        size_t at = r->pos;
        ti->info_off = at;
        snprintf(r->ctx, sizeof r->ctx, "tensor %zu", i);
        CM_TRY(rd_name(r, "tensor name", &ti->name));
        g->n_tensors = i + 1;
        t->name = ti->name;
        char pb[96];
        snprintf(r->ctx, sizeof r->ctx, "tensor %zu '%s'", i,
                 printable((const uint8_t *)ti->name, strlen(ti->name), pb, sizeof pb));
        size_t first = table_find(&g->t_table, ti->name, g->tinfo, sizeof *g->tinfo, i);
        if (first != SIZE_MAX)
            return fail_at(r, at, CM_ERR_FORMAT, "duplicate tensor name (first defined as tensor %zu)",
                           first);
        size_t dims_at = r->pos;
        uint32_t n_dims = 0;
        CM_TRY(rd_u32(r, "dimension count", &n_dims));
        if (n_dims > CM_MAX_DIMS)
            return fail_at(r, dims_at, CM_ERR_FORMAT, "has %u dimensions, more than the %d supported", n_dims,
                           CM_MAX_DIMS);
        int64_t ne[CM_MAX_DIMS];
        for (uint32_t d = 0; d < n_dims; d++) {
            size_t ne_at = r->pos;
            CM_TRY(rd_u64(r, "dimensions", (uint64_t *)&ne[d]));
            if (ne[d] < 0)
                return fail_at(r, ne_at, CM_ERR_FORMAT, "ne[%u] = %lld is negative", d, (long long)ne[d]);
        }
        size_t type_at = r->pos;
        CM_TRY(rd_u32(r, "ggml type", &ti->ggml_type));
        const ggml_type_info *gt = ggml_info(ti->ggml_type);
        if (!gt) return fail_at(r, type_at, CM_ERR_UNSUPPORTED, "unknown ggml type %u", ti->ggml_type);
        CM_TRY(rd_u64(r, "data offset", &ti->offset));
        const char *why = ggml_nbytes(gt, n_dims, ne, &t->nbytes);
        if (why) {
            char shape[160];
            size_t k = 0;
            for (uint32_t d = 0; d < n_dims && k < sizeof shape; d++)
                k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%lld", d ? "," : "", (long long)ne[d]);
            return fail_at(r, dims_at, CM_ERR_FORMAT, "%s type with ne [%s]: %s (block of %u elements)",
                           gt->name, shape, why, gt->blck);
        }
        t->dtype = ggml_to_dtype(ti->ggml_type);
        t->ndim = (int)n_dims;
        for (uint32_t d = 0; d < n_dims; d++) t->shape[n_dims - 1 - d] = ne[d];
    }
    r->ctx[0] = 0;
    return CM_OK;
}

static cm_status place_tensors(reader *r, cm_gguf *g) {
    size_t n = g->n_tensors;
    size_t a = g->alignment;
    if (r->pos > SIZE_MAX - (a - 1))
        return fail_at(r, r->pos, CM_ERR_FORMAT, "data section offset overflows with alignment %zu", a);
    g->data_off = (r->pos + a - 1) & ~(a - 1);
    if (n > 0 && g->data_off > r->size)
        return fail_at(
            r, r->pos, CM_ERR_FORMAT,
            "data section would start at %zu (alignment %zu), past the end of the file (%zu bytes)",
            g->data_off, a, r->size);
    size_t blob = n > 0 ? r->size - g->data_off : 0;
    for (size_t i = 0; i < n; i++) {
        const gguf_tinfo *ti = &g->tinfo[i];
        cm_tensor *t = &g->tensors[i];
        char pb[96];
        snprintf(r->ctx, sizeof r->ctx, "tensor %zu '%s'", i,
                 printable((const uint8_t *)ti->name, strlen(ti->name), pb, sizeof pb));
        if (ti->offset % a != 0)
            return fail_at(r, ti->info_off, CM_ERR_FORMAT,
                           "data offset %llu is not a multiple of the alignment %zu",
                           (unsigned long long)ti->offset, a);
        if (ti->offset > blob || t->nbytes > blob - ti->offset)
            return fail_at(
                r, ti->info_off, CM_ERR_FORMAT,
                "data (%zu bytes at data offset %llu, file offset %llu) runs past the end of the file "
                "(%zu bytes)",
                t->nbytes, (unsigned long long)ti->offset,
                (unsigned long long)g->data_off + (unsigned long long)ti->offset, r->size);
        t->data = t->nbytes ? r->d + g->data_off + ti->offset : NULL;
    }
    r->ctx[0] = 0;
    if (n < 2) return CM_OK;
    size_t *idx = malloc(n * sizeof *idx), *tmp = malloc(n * sizeof *tmp);
    if (!idx || !tmp) {
        free(idx);
        free(tmp);
        return fail_at(r, r->pos, CM_ERR_NOMEM, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (g->tensors[i].nbytes) idx[k++] = i;
    sort_indices(idx, tmp, k, g->tinfo);
    cm_status st = CM_OK;
    for (size_t j = 1; j < k && st == CM_OK; j++) {
        const gguf_tinfo *p = &g->tinfo[idx[j - 1]], *q = &g->tinfo[idx[j]];
        uint64_t end = p->offset + g->tensors[idx[j - 1]].nbytes; /* both bounded by the blob size */
        if (end > q->offset) {
            char pb[96], qb[96];
            st = fail_at(r, q->info_off, CM_ERR_FORMAT,
                         "tensor '%s' data [%llu, %llu) overlaps tensor '%s' data starting at %llu",
                         printable((const uint8_t *)q->name, strlen(q->name), qb, sizeof qb),
                         (unsigned long long)q->offset,
                         (unsigned long long)(q->offset + g->tensors[idx[j]].nbytes),
                         printable((const uint8_t *)p->name, strlen(p->name), pb, sizeof pb),
                         (unsigned long long)p->offset);
        }
    }
    free(idx);
    free(tmp);
    return st;
}

static cm_status gguf_parse(cm_gguf *g) {
    reader r = {.d = g->data, .size = g->size, .name = g->path};
    uint64_t n_kv = 0, n_t = 0;
    CM_TRY(parse_header(&r, g, &n_kv, &n_t));
    CM_TRY(parse_kvs(&r, g, (size_t)n_kv));
    CM_TRY(parse_tensor_infos(&r, g, (size_t)n_t));
    return place_tensors(&r, g);
}

static cm_status gguf_new(const char *name, cm_gguf **out) {
    cm_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(name ? name : "<buffer>"))) {
        free(g);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory", name ? name : "<buffer>");
    }
    *out = g;
    return CM_OK;
}

cm_status cm_gguf_parse(const void *data, size_t size, const char *name, cm_gguf **out) {
    *out = NULL;
    cm_gguf *g = NULL;
    CM_TRY(gguf_new(name, &g));
    g->data = size ? data : NULL;
    g->size = data ? size : 0;
    cm_status st = gguf_parse(g);
    if (st != CM_OK) {
        cm_gguf_close(g);
        return st;
    }
    *out = g;
    return CM_OK;
}

cm_status cm_gguf_open(const char *path, cm_gguf **out) {
    *out = NULL;
    cm_gguf *g = NULL;
    CM_TRY(gguf_new(path, &g));
    cm_status st = cm_mmap_open(path, &g->map);
    if (st == CM_OK) {
        g->data = g->map->data;
        g->size = g->map->size;
        st = gguf_parse(g);
    }
    if (st != CM_OK) {
        cm_gguf_close(g);
        return st;
    }
    *out = g;
    return CM_OK;
}

void cm_gguf_close(cm_gguf *g) {
    if (!g) return;
    for (size_t i = 0; i < g->n_kv; i++) {
        free(g->kvs[i].key);
        free(g->kvs[i].str_offs);
    }
    for (size_t i = 0; i < g->n_tensors; i++) free(g->tinfo[i].name);
    free(g->kvs);
    free(g->tinfo);
    free(g->tensors);
    free(g->kv_table.slots);
    free(g->t_table.slots);
    cm_mmap_close(g->map);
    free(g->path);
    free(g);
}

const char *cm_gguf_path(const cm_gguf *g) {
    return g->path;
}
uint32_t cm_gguf_version(const cm_gguf *g) {
    return g->version;
}
size_t cm_gguf_alignment(const cm_gguf *g) {
    return g->alignment;
}

int64_t cm_gguf_find(const cm_gguf *g, const char *key) {
    size_t i = table_find(&g->kv_table, key, g->kvs, sizeof *g->kvs, SIZE_MAX);
    return i == SIZE_MAX ? -1 : (int64_t)i;
}

size_t cm_gguf_kv_count(const cm_gguf *g) {
    return g->n_kv;
}
const char *cm_gguf_kv_key(const cm_gguf *g, size_t i) {
    return i < g->n_kv ? g->kvs[i].key : NULL;
}
cm_gguf_type cm_gguf_kv_type(const cm_gguf *g, size_t i) {
    return i < g->n_kv ? g->kvs[i].type : (cm_gguf_type)-1;
}

static cm_status get_kv(const cm_gguf *g, const char *key, const gguf_kv **out) {
    int64_t i = cm_gguf_find(g, key);
    if (i < 0) return cm_error(CM_ERR_NOT_FOUND, "%s: key '%s' not found", g->path, key);
    *out = &g->kvs[i];
    return CM_OK;
}

static cm_status wrong_type(const cm_gguf *g, const gguf_kv *kv, const char *want) {
    return cm_error(CM_ERR_FORMAT, "%s: key '%s' has type %s, expected %s", g->path, kv->key,
                    gguf_type_name(kv->type), want);
}

cm_status cm_gguf_get_u32(const cm_gguf *g, const char *key, uint32_t *out) {
    const gguf_kv *kv = NULL;
    CM_TRY(get_kv(g, key, &kv));
    if (!gguf_is_int(kv->type)) return wrong_type(g, kv, "an integer");
    if (gguf_is_signed(kv->type) && ((int64_t)kv->u < 0 || (int64_t)kv->u > (int64_t)UINT32_MAX))
        return cm_error(CM_ERR_FORMAT, "%s: key '%s' value %lld does not fit in uint32", g->path, key,
                        (long long)kv->u);
    if (!gguf_is_signed(kv->type) && kv->u > UINT32_MAX)
        return cm_error(CM_ERR_FORMAT, "%s: key '%s' value %llu does not fit in uint32", g->path, key,
                        (unsigned long long)kv->u);
    *out = (uint32_t)kv->u;
    return CM_OK;
}

cm_status cm_gguf_get_i64(const cm_gguf *g, const char *key, int64_t *out) {
    const gguf_kv *kv = NULL;
    CM_TRY(get_kv(g, key, &kv));
    if (!gguf_is_int(kv->type)) return wrong_type(g, kv, "an integer");
    if (!gguf_is_signed(kv->type) && kv->u > (uint64_t)INT64_MAX)
        return cm_error(CM_ERR_FORMAT, "%s: key '%s' value %llu does not fit in int64", g->path, key,
                        (unsigned long long)kv->u);
    *out = (int64_t)kv->u;
    return CM_OK;
}

cm_status cm_gguf_get_f64(const cm_gguf *g, const char *key, double *out) {
    const gguf_kv *kv = NULL;
    CM_TRY(get_kv(g, key, &kv));
    if (kv->type != CM_GGUF_FLOAT32 && kv->type != CM_GGUF_FLOAT64)
        return wrong_type(g, kv, "FLOAT32 or FLOAT64");
    *out = kv->f;
    return CM_OK;
}

cm_status cm_gguf_get_f32(const cm_gguf *g, const char *key, float *out) {
    double d = 0;
    CM_TRY(cm_gguf_get_f64(g, key, &d));
    *out = (float)d;
    return CM_OK;
}

cm_status cm_gguf_get_bool(const cm_gguf *g, const char *key, bool *out) {
    const gguf_kv *kv = NULL;
    CM_TRY(get_kv(g, key, &kv));
    if (kv->type != CM_GGUF_BOOL) return wrong_type(g, kv, "BOOL");
    *out = kv->u != 0;
    return CM_OK;
}

cm_status cm_gguf_get_str(const cm_gguf *g, const char *key, const char **s, size_t *len) {
    const gguf_kv *kv = NULL;
    CM_TRY(get_kv(g, key, &kv));
    if (kv->type != CM_GGUF_STRING) return wrong_type(g, kv, "STRING");
    *s = (const char *)kv->str;
    *len = (size_t)kv->len;
    return CM_OK;
}

cm_status cm_gguf_get_arr(const cm_gguf *g, const char *key, cm_gguf_type *elem_type, uint64_t *count) {
    const gguf_kv *kv = NULL;
    CM_TRY(get_kv(g, key, &kv));
    if (kv->type != CM_GGUF_ARRAY) return wrong_type(g, kv, "ARRAY");
    *elem_type = kv->elem;
    *count = kv->len;
    return CM_OK;
}

cm_status cm_gguf_get_arr_data(const cm_gguf *g, const char *key, const void **data) {
    const gguf_kv *kv = NULL;
    CM_TRY(get_kv(g, key, &kv));
    if (kv->type != CM_GGUF_ARRAY) return wrong_type(g, kv, "ARRAY");
    if (kv->elem == CM_GGUF_STRING)
        return cm_error(CM_ERR_FORMAT, "%s: key '%s' is an array of strings, not of numbers", g->path, key);
    *data = kv->str;
    return CM_OK;
}

cm_status cm_gguf_get_arr_str(const cm_gguf *g, const char *key, uint64_t j, const char **s, size_t *len) {
    const gguf_kv *kv = NULL;
    CM_TRY(get_kv(g, key, &kv));
    if (kv->type != CM_GGUF_ARRAY) return wrong_type(g, kv, "ARRAY");
    if (kv->elem != CM_GGUF_STRING)
        return cm_error(CM_ERR_FORMAT, "%s: key '%s' is an array of %s, not of strings", g->path, key,
                        gguf_type_name(kv->elem));
    if (j >= kv->len)
        return cm_error(CM_ERR_ARG, "%s: key '%s': index %llu is past the %llu elements", g->path, key,
                        (unsigned long long)j, (unsigned long long)kv->len);
    uint64_t n;
    memcpy(&n, g->data + kv->str_offs[j], 8);
    *s = (const char *)g->data + kv->str_offs[j] + 8;
    *len = (size_t)n;
    return CM_OK;
}

size_t cm_gguf_tensor_count(const cm_gguf *g) {
    return g->n_tensors;
}
const cm_tensor *cm_gguf_tensor(const cm_gguf *g, size_t i) {
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}
uint32_t cm_gguf_tensor_ggml_type(const cm_gguf *g, size_t i) {
    return i < g->n_tensors ? g->tinfo[i].ggml_type : UINT32_MAX;
}

const cm_tensor *cm_gguf_find_tensor(const cm_gguf *g, const char *name) {
    size_t i = table_find(&g->t_table, name, g->tinfo, sizeof *g->tinfo, SIZE_MAX);
    return i == SIZE_MAX ? NULL : &g->tensors[i];
}

/* ---- writer ---- */

typedef struct {
    char *key;
    uint32_t type;
    uint8_t *val; /* the encoded value, exactly as it goes after the type field */
    size_t len;
} wkv;

typedef struct {
    char *name;
    uint32_t ggml_type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_WRITE_DIMS];
    const void *data;
    void *owned;
    size_t nbytes;
} wtensor;

struct cm_gguf_writer {
    char *path;
    cm_atomic_file *file;
    wkv *kvs;
    size_t n_kv, cap_kv;
    wtensor *ts;
    size_t n_t, cap_t;
    size_t alignment;
};

cm_status cm_gguf_writer_open(const char *path, cm_gguf_writer **out) {
    *out = NULL;
    cm_gguf_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory", path);
    }
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    cm_status st = cm_atomic_open(path, &w->file);
    if (st != CM_OK) {
        free(w->path);
        free(w);
        return st;
    }
    *out = w;
    return CM_OK;
}

static void writer_free(cm_gguf_writer *w) {
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->ts[i].name);
        free(w->ts[i].owned);
    }
    free(w->kvs);
    free(w->ts);
    free(w->path);
    free(w);
}

void cm_gguf_writer_abort(cm_gguf_writer *w) {
    if (!w) return;
    cm_atomic_abort(w->file);
    writer_free(w);
}

/* Store key = (type, encoded value); takes ownership of `val` in every case. */
static cm_status writer_put(cm_gguf_writer *w, const char *key, uint32_t type, uint8_t *val, size_t len) {
    if (!key) {
        free(val);
        return cm_error(CM_ERR_ARG, "%s: KV key is NULL", w->path);
    }
    if (strcmp(key, "general.alignment") == 0) {
        uint32_t a = 0;
        if (type == CM_GGUF_UINT32) memcpy(&a, val, 4);
        if (type != CM_GGUF_UINT32 || a == 0 || (a & (a - 1)) != 0) {
            free(val);
            return cm_error(CM_ERR_ARG, "%s: general.alignment must be a UINT32 power of two", w->path);
        }
        w->alignment = a;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, key) != 0) continue;
        free(w->kvs[i].val);
        w->kvs[i].type = type;
        w->kvs[i].val = val;
        w->kvs[i].len = len;
        return CM_OK;
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        wkv *k = realloc(w->kvs, cap * sizeof *k);
        if (!k) {
            free(val);
            return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->path);
        }
        w->kvs = k;
        w->cap_kv = cap;
    }
    char *kc = strdup(key);
    if (!kc) {
        free(val);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->path);
    }
    w->kvs[w->n_kv++] = (wkv){kc, type, val, len};
    return CM_OK;
}

static cm_status writer_put_copy(cm_gguf_writer *w, const char *key, uint32_t type, const void *val,
                                 size_t len) {
    uint8_t *v = malloc(len ? len : 1);
    if (!v) return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->path);
    memcpy(v, val, len);
    return writer_put(w, key, type, v, len);
}

cm_status cm_gguf_writer_set_scalar(cm_gguf_writer *w, const char *key, cm_gguf_type type,
                                    const void *value) {
    size_t sz = gguf_scalar_size(type);
    if (!sz)
        return cm_error(CM_ERR_ARG, "%s: key '%s': %s is not a scalar type", w->path, key ? key : "(null)",
                        gguf_type_name(type));
    uint8_t b;
    if (type == CM_GGUF_BOOL) {
        b = *(const bool *)value ? 1 : 0;
        value = &b;
    }
    return writer_put_copy(w, key, type, value, sz);
}

cm_status cm_gguf_writer_set_u32(cm_gguf_writer *w, const char *key, uint32_t v) {
    return cm_gguf_writer_set_scalar(w, key, CM_GGUF_UINT32, &v);
}
cm_status cm_gguf_writer_set_i32(cm_gguf_writer *w, const char *key, int32_t v) {
    return cm_gguf_writer_set_scalar(w, key, CM_GGUF_INT32, &v);
}
cm_status cm_gguf_writer_set_f32(cm_gguf_writer *w, const char *key, float v) {
    return cm_gguf_writer_set_scalar(w, key, CM_GGUF_FLOAT32, &v);
}
cm_status cm_gguf_writer_set_bool(cm_gguf_writer *w, const char *key, bool v) {
    return cm_gguf_writer_set_scalar(w, key, CM_GGUF_BOOL, &v);
}

cm_status cm_gguf_writer_set_str(cm_gguf_writer *w, const char *key, const char *s) {
    if (!s) return cm_error(CM_ERR_ARG, "%s: key '%s': string is NULL", w->path, key ? key : "(null)");
    uint64_t n = strlen(s);
    uint8_t *v = malloc(8 + (size_t)n);
    if (!v) return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->path);
    memcpy(v, &n, 8);
    memcpy(v + 8, s, (size_t)n);
    return writer_put(w, key, CM_GGUF_STRING, v, 8 + (size_t)n);
}

cm_status cm_gguf_writer_set_arr_str(cm_gguf_writer *w, const char *key, const char *const *s,
                                     const size_t *lens, size_t n) {
    size_t total = 12, len;
    if (!key) return cm_error(CM_ERR_ARG, "%s: KV key is NULL", w->path);
    for (size_t i = 0; i < n; i++) {
        if (!s[i]) return cm_error(CM_ERR_ARG, "%s: key '%s': string %zu is NULL", w->path, key, i);
        len = lens ? lens[i] : strlen(s[i]);
        if (cm_add_size(total, 8, &total) || cm_add_size(total, len, &total))
            return cm_error(CM_ERR_NOMEM, "%s: key '%s': array too large", w->path, key);
    }
    uint8_t *v = malloc(total), *p = v;
    if (!v) return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->path);
    uint32_t et = CM_GGUF_STRING;
    uint64_t cnt = n;
    memcpy(p, &et, 4), p += 4;
    memcpy(p, &cnt, 8), p += 8;
    for (size_t i = 0; i < n; i++) {
        uint64_t l = lens ? lens[i] : strlen(s[i]);
        memcpy(p, &l, 8), p += 8;
        memcpy(p, s[i], (size_t)l), p += l;
    }
    return writer_put(w, key, CM_GGUF_ARRAY, v, total);
}

cm_status cm_gguf_writer_set_arr(cm_gguf_writer *w, const char *key, cm_gguf_type elem_type, const void *data,
                                 size_t n) {
    size_t esz = gguf_scalar_size(elem_type), bytes, total;
    if (!esz)
        return cm_error(CM_ERR_ARG,
                        "%s: key '%s': arrays of %s need cm_gguf_writer_set_arr_str or are not allowed",
                        w->path, key ? key : "(null)", gguf_type_name(elem_type));
    if (cm_mul_size(esz, n, &bytes) || cm_add_size(bytes, 12, &total))
        return cm_error(CM_ERR_NOMEM, "%s: key '%s': array too large", w->path, key ? key : "(null)");
    uint8_t *v = malloc(total);
    if (!v) return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->path);
    uint32_t et = elem_type;
    uint64_t cnt = n;
    memcpy(v, &et, 4);
    memcpy(v + 4, &cnt, 8);
    if (bytes) memcpy(v + 12, data, bytes);
    if (elem_type == CM_GGUF_BOOL) /* bool arrays are given as C bool (one byte, 0/1) */
        for (size_t i = 0; i < n; i++) v[12 + i] = v[12 + i] ? 1 : 0;
    return writer_put(w, key, CM_GGUF_ARRAY, v, total);
}

cm_status cm_gguf_writer_copy_kv(cm_gguf_writer *w, const cm_gguf *g, size_t i) {
    if (i >= g->n_kv)
        return cm_error(CM_ERR_ARG, "%s: KV index %zu is past the %zu KVs", g->path, i, g->n_kv);
    const gguf_kv *kv = &g->kvs[i];
    return writer_put_copy(w, kv->key, kv->type, g->data + kv->val_off, kv->val_len);
}

static cm_status writer_add(cm_gguf_writer *w, const char *name, uint32_t ggml_type, int ndim,
                            const int64_t *shape, const void *data, void *owned, size_t nbytes) {
    const ggml_type_info *gt = ggml_info(ggml_type);
    if (!name) return cm_error(CM_ERR_ARG, "%s: tensor name is NULL", w->path);
    if (!gt) return cm_error(CM_ERR_ARG, "%s: tensor '%s': unknown ggml type %u", w->path, name, ggml_type);
    if (strlen(name) >= GGUF_MAX_NAME)
        return cm_error(CM_ERR_ARG, "%s: tensor '%s': name is longer than the %d bytes llama.cpp accepts",
                        w->path, name, GGUF_MAX_NAME - 1);
    if (ndim < 0 || ndim > GGUF_MAX_WRITE_DIMS)
        return cm_error(CM_ERR_ARG, "%s: tensor '%s': %d dimensions (GGUF allows 0..%d)", w->path, name, ndim,
                        GGUF_MAX_WRITE_DIMS);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->ts[i].name, name) == 0)
            return cm_error(CM_ERR_ARG, "%s: tensor '%s' added twice", w->path, name);
    wtensor t = {.ggml_type = ggml_type, .n_dims = (uint32_t)ndim, .data = data, .owned = owned};
    for (int d = 0; d < ndim; d++) t.ne[d] = shape[ndim - 1 - d];
    size_t want;
    const char *why = ggml_nbytes(gt, t.n_dims, t.ne, &want);
    if (why) return cm_error(CM_ERR_ARG, "%s: tensor '%s': %s", w->path, name, why);
    if (want != nbytes)
        return cm_error(CM_ERR_ARG, "%s: tensor '%s': %zu bytes given, its %s shape needs %zu", w->path, name,
                        nbytes, gt->name, want);
    if (nbytes && !data) return cm_error(CM_ERR_ARG, "%s: tensor '%s': data is NULL", w->path, name);
    t.nbytes = nbytes;
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? 2 * w->cap_t : 16;
        wtensor *p = realloc(w->ts, cap * sizeof *p);
        if (!p) return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->path);
        w->ts = p;
        w->cap_t = cap;
    }
    if (!(t.name = strdup(name))) return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->path);
    w->ts[w->n_t++] = t;
    return CM_OK;
}

cm_status cm_gguf_writer_add_tensor_ggml(cm_gguf_writer *w, const char *name, uint32_t ggml_type, int ndim,
                                         const int64_t *shape, const void *data, size_t nbytes) {
    return writer_add(w, name, ggml_type, ndim, shape, data, NULL, nbytes);
}

cm_status cm_gguf_writer_add_tensor(cm_gguf_writer *w, const char *name, cm_dtype dtype, int ndim,
                                    const int64_t *shape, const void *data, size_t nbytes) {
    uint32_t gt;
    if (!dtype_to_ggml(dtype, &gt))
        return cm_error(CM_ERR_ARG, "%s: tensor '%s': dtype %s has no GGUF type", w->path,
                        name ? name : "(null)", cm_dtype_name(dtype));
    return writer_add(w, name, gt, ndim, shape, data, NULL, nbytes);
}

/* The writer owns `data` from this call on (it is freed even if the call fails). */
cm_status cm_gguf_writer_add_tensor_owned(cm_gguf_writer *w, const char *name, cm_dtype dtype, int ndim,
                                          const int64_t *shape, void *data, size_t nbytes) {
    uint32_t gt;
    cm_status st;
    if (!dtype_to_ggml(dtype, &gt))
        st = cm_error(CM_ERR_ARG, "%s: tensor '%s': dtype %s has no GGUF type", w->path,
                      name ? name : "(null)", cm_dtype_name(dtype));
    else
        st = writer_add(w, name, gt, ndim, shape, data, data, nbytes);
    if (st != CM_OK) free(data);
    return st;
}

static cm_status put_bytes(cm_gguf_writer *w, const void *p, size_t n, size_t *pos) {
    *pos += n;
    return cm_atomic_write(w->file, p, n);
}

static cm_status put_str(cm_gguf_writer *w, const char *s, size_t *pos) {
    uint64_t n = strlen(s);
    CM_TRY(put_bytes(w, &n, 8, pos));
    return put_bytes(w, s, (size_t)n, pos);
}

static cm_status put_pad(cm_gguf_writer *w, size_t *pos) {
    static const uint8_t zeros[256];
    size_t pad = (w->alignment - *pos % w->alignment) % w->alignment;
    while (pad) {
        size_t n = pad < sizeof zeros ? pad : sizeof zeros;
        CM_TRY(put_bytes(w, zeros, n, pos));
        pad -= n;
    }
    return CM_OK;
}

static cm_status writer_emit(cm_gguf_writer *w) {
    size_t pos = 0;
    uint32_t version = 3;
    uint64_t n_t = w->n_t, n_kv = w->n_kv;
    CM_TRY(put_bytes(w, "GGUF", 4, &pos));
    CM_TRY(put_bytes(w, &version, 4, &pos));
    CM_TRY(put_bytes(w, &n_t, 8, &pos));
    CM_TRY(put_bytes(w, &n_kv, 8, &pos));
    for (size_t i = 0; i < w->n_kv; i++) {
        CM_TRY(put_str(w, w->kvs[i].key, &pos));
        CM_TRY(put_bytes(w, &w->kvs[i].type, 4, &pos));
        CM_TRY(put_bytes(w, w->kvs[i].val, w->kvs[i].len, &pos));
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->ts[i];
        CM_TRY(put_str(w, t->name, &pos));
        CM_TRY(put_bytes(w, &t->n_dims, 4, &pos));
        CM_TRY(put_bytes(w, t->ne, 8 * (size_t)t->n_dims, &pos));
        CM_TRY(put_bytes(w, &t->ggml_type, 4, &pos));
        CM_TRY(put_bytes(w, &off, 8, &pos));
        uint64_t padded = ((uint64_t)t->nbytes + w->alignment - 1) / w->alignment * w->alignment;
        if (__builtin_add_overflow(off, padded, &off))
            return cm_error(CM_ERR_NOMEM, "%s: tensor data size overflows", w->path);
    }
    CM_TRY(put_pad(w, &pos));
    for (size_t i = 0; i < w->n_t; i++) {
        CM_TRY(put_bytes(w, w->ts[i].data, w->ts[i].nbytes, &pos));
        CM_TRY(put_pad(w, &pos));
    }
    return CM_OK;
}

cm_status cm_gguf_writer_commit(cm_gguf_writer *w) {
    cm_status st = writer_emit(w);
    if (st != CM_OK) {
        cm_atomic_abort(w->file);
    } else {
        st = cm_atomic_commit(w->file);
    }
    writer_free(w);
    return st;
}
