/* bitsandbytes NF4 folders (include/camelid/nf4_hf.h, FACTS 4.3): the quant-state JSON, config.json's
 * quantization_config, binding a quantized linear into a model (every tensor of it checked against the
 * config's shape, the block counts and each other), and the streaming writer behind
 * `camelid quantize --type nf4`. */
#include "camelid/nf4_hf.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/kernels.h"
#include "camelid/nf4.h"
#include "camelid/pool.h"
#include "camelid/safetensors.h"
#include "format/json_util.h"
#include "model/model_internal.h"

#define QS_MAX_BYTES 4096
#define CONFIG_MAX_BYTES ((size_t)16 << 20)
#define QS_SUFFIX ".quant_state.bitsandbytes__nf4"

/* ---------------------------------------------------------------- the quant state */

static const char *const qs_keys[] = {"quant_type",       "blocksize",    "dtype",        "shape",
                                      "nested_blocksize", "nested_dtype", "nested_offset"};

/* A JSON string equal to `s` (embedded NULs make it differ). */
static bool json_str_is(const json_t *v, const char *s) {
    return json_is_string(v) && json_string_length(v) == strlen(s) && strcmp(json_string_value(v), s) == 0;
}

static cm_status qs_int(const char *what, json_t *root, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    json_t *v = json_object_get(root, key);
    if (!v) return cm_error(CM_ERR_FORMAT, "%s: quant state has no \"%s\"", what, key);
    if (!json_is_integer(v))
        return cm_error(CM_ERR_FORMAT, "%s: quant state \"%s\" must be an integer, got %s", what, key,
                        cm_json_kind(v));
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return cm_error(CM_ERR_FORMAT, "%s: quant state \"%s\" = %lld is out of range (%lld..%lld)", what, key,
                        (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return CM_OK;
}

static cm_status qs_parse_root(json_t *root, const char *what, cm_nf4_quant_state *out) {
    char buf[96];
    if (!json_is_object(root))
        return cm_error(CM_ERR_FORMAT, "%s: quant state must be a JSON object, got %s", what, cm_json_kind(root));
    const char *key;
    json_t *v;
    int nested_keys = 0;
    json_object_foreach(root, key, v) {
        size_t k = 0, n = sizeof qs_keys / sizeof *qs_keys;
        while (k < n && strcmp(key, qs_keys[k]) != 0) k++;
        if (k == n)
            return cm_error(CM_ERR_FORMAT, "%s: quant state has an unknown key \"%s\"", what,
                            cm_json_show(key, buf, sizeof buf));
        nested_keys += k >= 4;
    }
    v = json_object_get(root, "quant_type");
    if (!json_is_string(v))
        return cm_error(CM_ERR_FORMAT, "%s: quant state \"quant_type\" must be a string, got %s", what,
                        v ? cm_json_kind(v) : "nothing");
    if (json_str_is(v, "fp4"))
        return cm_error(CM_ERR_UNSUPPORTED, "%s: bitsandbytes FP4 weights are not supported (NF4 only)", what);
    if (!json_str_is(v, "nf4"))
        return cm_error(CM_ERR_FORMAT, "%s: quant state \"quant_type\" is \"%s\", expected \"nf4\"", what,
                        cm_json_show(json_string_value(v), buf, sizeof buf));
    int64_t x;
    CM_TRY(qs_int(what, root, "blocksize", 1, 1 << 20, &x));
    if (!cm_nf4_blocksize_valid(x))
        return cm_error(CM_ERR_FORMAT, "%s: quant state \"blocksize\" is %lld (32, 64, ..., 4096 allowed)", what,
                        (long long)x);
    out->blocksize = (int)x;
    v = json_object_get(root, "dtype");
    if (!json_str_is(v, "float32") && !json_str_is(v, "float16") && !json_str_is(v, "bfloat16"))
        return cm_error(CM_ERR_FORMAT, "%s: quant state \"dtype\" must be \"float32\", \"float16\" or \"bfloat16\"",
                        what);
    snprintf(out->dtype, sizeof out->dtype, "%s", json_string_value(v));
    v = json_object_get(root, "shape");
    if (!json_is_array(v) || json_array_size(v) != 2)
        return cm_error(CM_ERR_FORMAT, "%s: quant state \"shape\" must be [out, in]", what);
    for (int d = 0; d < 2; d++) {
        json_t *e = json_array_get(v, (size_t)d);
        if (!json_is_integer(e) || json_integer_value(e) <= 0 || json_integer_value(e) > ((json_int_t)1 << 31))
            return cm_error(CM_ERR_FORMAT, "%s: quant state \"shape\"[%d] must be a positive integer up to 2^31",
                            what, d);
        out->shape[d] = json_integer_value(e);
    }
    if (nested_keys != 0 && nested_keys != 3)
        return cm_error(CM_ERR_FORMAT,
                        "%s: quant state has %d of the 3 nested fields (nested_blocksize, nested_dtype, "
                        "nested_offset)",
                        what, nested_keys);
    out->nested = nested_keys == 3;
    if (out->nested) {
        CM_TRY(qs_int(what, root, "nested_blocksize", 1, 1 << 20, &x));
        if (!cm_nf4_blocksize_valid(x))
            return cm_error(CM_ERR_FORMAT, "%s: quant state \"nested_blocksize\" is %lld (32, ..., 4096 allowed)",
                            what, (long long)x);
        out->nested_blocksize = (int)x;
        if (!json_str_is(json_object_get(root, "nested_dtype"), "float32"))
            return cm_error(CM_ERR_FORMAT, "%s: quant state \"nested_dtype\" must be \"float32\"", what);
        v = json_object_get(root, "nested_offset");
        if (!json_is_number(v) || !(fabs(json_number_value(v)) <= FLT_MAX))
            return cm_error(CM_ERR_FORMAT, "%s: quant state \"nested_offset\" must be a finite number", what);
        out->nested_offset = (float)json_number_value(v);
    }
    return CM_OK;
}

cm_status cm_nf4_quant_state_parse(const void *json, size_t len, const char *what, cm_nf4_quant_state *out) {
    memset(out, 0, sizeof *out);
    if (len > QS_MAX_BYTES)
        return cm_error(CM_ERR_FORMAT, "%s: quant state of %zu bytes (at most %d)", what, len, QS_MAX_BYTES);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return cm_error(CM_ERR_FORMAT, "%s: quant state is not valid JSON: %s", what, jerr.text);
    cm_status st = qs_parse_root(root, what, out);
    json_decref(root);
    return st;
}

/* Python's repr of a float (what json.dumps writes): the shortest digits that read back to the same double,
 * positional for exponents -4..15, else d.ddde+XX; integral values keep ".0". */
static void py_repr(double d, char *out, size_t cap) {
    if (d == 0) {
        snprintf(out, cap, "%s", signbit(d) ? "-0.0" : "0.0");
        return;
    }
    char sci[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(sci, sizeof sci, "%.*e", p - 1, d);
        if (strtod(sci, NULL) == d) break;
    }
    /* sci is [-]D[.DDD]e[+-]XX */
    const char *s = sci;
    bool neg = *s == '-';
    if (neg) s++;
    char digits[24];
    size_t nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s != '.') digits[nd++] = *s;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    int exp10 = atoi(s + 1), decpt = exp10 + 1;
    size_t k = 0;
    if (neg) out[k++] = '-';
    if (decpt <= -4 || decpt > 16) {
        out[k++] = digits[0];
        if (nd > 1) {
            out[k++] = '.';
            memcpy(out + k, digits + 1, nd - 1);
            k += nd - 1;
        }
        snprintf(out + k, cap - k, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
        return;
    }
    if (decpt <= 0) {
        k += (size_t)snprintf(out + k, cap - k, "0.");
        for (int i = 0; i < -decpt; i++) out[k++] = '0';
        snprintf(out + k, cap - k, "%s", digits);
    } else if ((size_t)decpt >= nd) {
        k += (size_t)snprintf(out + k, cap - k, "%s", digits);
        for (size_t i = nd; i < (size_t)decpt; i++) out[k++] = '0';
        snprintf(out + k, cap - k, ".0");
    } else {
        memcpy(out + k, digits, (size_t)decpt);
        k += (size_t)decpt;
        snprintf(out + k, cap - k, ".%s", digits + decpt);
    }
}

cm_status cm_nf4_quant_state_json(const cm_nf4_quant_state *qs, char **out) {
    char buf[512], offset[40];
    int n = snprintf(buf, sizeof buf,
                     "{\"quant_type\": \"nf4\", \"blocksize\": %d, \"dtype\": \"%s\", \"shape\": [%lld, %lld]",
                     qs->blocksize, qs->dtype, (long long)qs->shape[0], (long long)qs->shape[1]);
    if (qs->nested) {
        py_repr((double)qs->nested_offset, offset, sizeof offset);
        n += snprintf(buf + n, sizeof buf - (size_t)n,
                      ", \"nested_blocksize\": %d, \"nested_dtype\": \"float32\", \"nested_offset\": %s",
                      qs->nested_blocksize, offset);
    }
    snprintf(buf + n, sizeof buf - (size_t)n, "}");
    *out = strdup(buf);
    return *out ? CM_OK : cm_error(CM_ERR_NOMEM, "out of memory");
}

/* ---------------------------------------------------------------- config.json */

cm_status cm_nf4_check_config(const char *config_path) {
    char *text;
    size_t len;
    CM_TRY(cm_read_file(config_path, CONFIG_MAX_BYTES, &text, &len));
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!root) return cm_error(CM_ERR_FORMAT, "%s: line %d: bad JSON: %s", config_path, jerr.line, jerr.text);
    cm_status st = CM_OK;
    char buf[96];
    json_t *q = json_is_object(root) ? json_object_get(root, "quantization_config") : NULL;
    if (!q || json_is_null(q)) goto done;
    if (!json_is_object(q)) {
        st = cm_error(CM_ERR_FORMAT, "%s: \"quantization_config\" must be an object, got %s", config_path,
                      cm_json_kind(q));
        goto done;
    }
    json_t *method = json_object_get(q, "quant_method");
    if (method && !json_str_is(method, "bitsandbytes")) {
        st = cm_error(CM_ERR_UNSUPPORTED,
                      "%s: quantization_config.quant_method %s%s%s is not supported (bitsandbytes NF4 only)",
                      config_path, json_is_string(method) ? "\"" : "",
                      json_is_string(method) ? cm_json_show(json_string_value(method), buf, sizeof buf)
                                             : cm_json_kind(method),
                      json_is_string(method) ? "\"" : "");
        goto done;
    }
    if (json_is_true(json_object_get(q, "load_in_8bit"))) {
        st = cm_error(CM_ERR_UNSUPPORTED, "%s: bitsandbytes 8-bit (LLM.int8) weights are not supported (NF4 only)",
                      config_path);
        goto done;
    }
    json_t *type = json_object_get(q, "bnb_4bit_quant_type");
    if (json_is_true(json_object_get(q, "load_in_4bit")) && type && !json_str_is(type, "nf4")) {
        st = cm_error(CM_ERR_UNSUPPORTED, "%s: quantization_config.bnb_4bit_quant_type %s is not supported (nf4 only)",
                      config_path,
                      json_is_string(type) ? cm_json_show(json_string_value(type), buf, sizeof buf) : cm_json_kind(type));
        goto done;
    }
done:
    json_decref(root);
    return st;
}

/* ---------------------------------------------------------------- binding a quantized linear */

static const cm_tensor *lookup_suffix(cm_tensor_lookup lookup, void *ctx, const char *name, const char *suffix) {
    char key[512];
    if ((size_t)snprintf(key, sizeof key, "%s%s", name, suffix) >= sizeof key) return NULL;
    return lookup(ctx, key);
}

/* A tensor of dtype `dt` and exactly the 1-D shape [n]. */
static cm_status expect_tensor(const cm_tensor *t, const char *what, const char *name, const char *suffix,
                               cm_dtype dt, uint64_t n) {
    if (!t) return cm_error(CM_ERR_FORMAT, "%s: \"%s%s\" is missing (needed by its 4-bit weight)", what, name, suffix);
    if (t->dtype != dt)
        return cm_error(CM_ERR_FORMAT, "%s: \"%s%s\" has dtype %s, expected %s", what, name, suffix,
                        cm_dtype_name(t->dtype), cm_dtype_name(dt));
    if (!(t->ndim == 1 && (uint64_t)t->shape[0] == n))
        return cm_error(CM_ERR_FORMAT, "%s: \"%s%s\" has %d dimension(s) and %lld values, expected [%llu]", what, name,
                        suffix, t->ndim, t->ndim ? (long long)cm_tensor_numel(t) : 1LL, (unsigned long long)n);
    return CM_OK;
}

static bool all_finite(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return false;
    return true;
}

cm_status cm_model_bind_nf4(cm_model *m, cm_tensor_lookup lookup, void *ctx, const char *name, int64_t rows,
                            int64_t cols, bool nf4_ok, const char *what, cm_weight *w, bool *bound) {
    *bound = false;
    const cm_tensor *qs_t = lookup_suffix(lookup, ctx, name, QS_SUFFIX);
    const cm_tensor *fp4 = lookup_suffix(lookup, ctx, name, ".quant_state.bitsandbytes__fp4");
    const cm_tensor *absmax_t = lookup_suffix(lookup, ctx, name, ".absmax");
    if (!qs_t && !fp4 && !absmax_t) return CM_OK;
    if (fp4)
        return cm_error(CM_ERR_UNSUPPORTED, "%s: \"%s\" is bitsandbytes FP4; camelid reads NF4 only", what, name);
    if (!qs_t)
        return cm_error(CM_ERR_FORMAT, "%s: \"%s.absmax\" is present but \"%s%s\" is missing", what, name, name,
                        QS_SUFFIX);
    if (!nf4_ok)
        return cm_error(CM_ERR_UNSUPPORTED, "%s: \"%s\" is 4-bit quantized; camelid reads it only as F32, F16 or BF16",
                        what, name);
    char where[600];
    snprintf(where, sizeof where, "%s: \"%s\"", what, name);
    if (qs_t->dtype != CM_DTYPE_U8 || qs_t->ndim != 1)
        return cm_error(CM_ERR_FORMAT, "%s: \"%s%s\" must be a 1-D U8 tensor", what, name, QS_SUFFIX);
    cm_nf4_quant_state qs;
    CM_TRY(cm_nf4_quant_state_parse(qs_t->data, qs_t->nbytes, where, &qs));
    if (qs.shape[0] != rows || qs.shape[1] != cols)
        return cm_error(CM_ERR_FORMAT, "%s: quant state shape is [%lld, %lld], expected [%lld, %lld]", where,
                        (long long)qs.shape[0], (long long)qs.shape[1], (long long)rows, (long long)cols);
    uint64_t n = (uint64_t)rows * (uint64_t)cols; /* both <= 2^31 */
    size_t nb = cm_nf4_n_blocks((size_t)n, qs.blocksize);

    /* the packed codes: (n + 1) / 2 bytes as [k, 1]; a quant_storage wider than U8 only changes the element */
    const cm_tensor *wt = lookup(ctx, name);
    if (!wt) return cm_error(CM_ERR_NOT_FOUND, "%s: required tensor \"%s\" is missing", what, name);
    if (!(wt->ndim == 2 && wt->shape[1] == 1) || wt->nbytes != (n + 1) / 2 || cm_dtype_block_elems(wt->dtype) != 1)
        return cm_error(CM_ERR_FORMAT, "%s: packed 4-bit weight holds %zu bytes%s, expected [%llu, 1] U8 for [%lld, %lld]",
                        where, wt->nbytes, wt->ndim == 2 && wt->shape[1] == 1 ? "" : " (not [k, 1])",
                        (unsigned long long)((n + 1) / 2), (long long)rows, (long long)cols);

    const cm_tensor *qmap = lookup_suffix(lookup, ctx, name, ".quant_map");
    CM_TRY(expect_tensor(qmap, what, name, ".quant_map", CM_DTYPE_F32, 16));
    /* bitsandbytes decodes NF4 with its own table and keeps this one for the record: it must be NF4's (an FP4
     * or other map means the codes are not NF4), to float rounding */
    float code[16];
    memcpy(code, qmap->data, sizeof code);
    for (int i = 0; i < 16; i++)
        if (!(fabsf(code[i] - cm_nf4_code[i]) <= 1e-6f))
            return cm_error(CM_ERR_FORMAT, "%s: \".quant_map\" is not the NF4 table (value %d is %g, not %g)", where,
                            i, (double)code[i], (double)cm_nf4_code[i]);

    const cm_tensor *nested_absmax = lookup_suffix(lookup, ctx, name, ".nested_absmax");
    const cm_tensor *nested_map = lookup_suffix(lookup, ctx, name, ".nested_quant_map");
    if (!qs.nested && (nested_absmax || nested_map))
        return cm_error(CM_ERR_FORMAT, "%s: nested tensors are present but the quant state has no double quantization",
                        where);
    CM_TRY(expect_tensor(absmax_t, what, name, ".absmax", qs.nested ? CM_DTYPE_U8 : CM_DTYPE_F32, nb));

    /* the struct and the f32 scales in one buffer kept by the model */
    size_t head = (sizeof(cm_nf4_weight) + 63) & ~(size_t)63;
    char *buf = aligned_alloc(64, (head + nb * sizeof(float) + 63) & ~(size_t)63);
    if (!buf) return cm_error(CM_ERR_NOMEM, "%s: out of memory for %zu block scales", where, nb);
    CM_TRY(cm_model_keep(m, buf));
    cm_nf4_weight *q = (cm_nf4_weight *)buf;
    float *absmax = (float *)(buf + head);
    if (qs.nested) {
        size_t nn = cm_nf4_n_blocks(nb, qs.nested_blocksize);
        CM_TRY(expect_tensor(nested_absmax, what, name, ".nested_absmax", CM_DTYPE_F32, nn));
        CM_TRY(expect_tensor(nested_map, what, name, ".nested_quant_map", CM_DTYPE_F32, 256));
        float map[256], *nested = malloc(nn * sizeof(float));
        if (!nested) return cm_error(CM_ERR_NOMEM, "%s: out of memory", where);
        /* the file's bytes need not be aligned: copy before reading as floats */
        memcpy(map, nested_map->data, sizeof map);
        memcpy(nested, nested_absmax->data, nn * sizeof(float));
        bool ok = all_finite(map, 256) && all_finite(nested, nn);
        if (ok) cm_nf4_double_dequant(absmax_t->data, nested, map, qs.nested_offset, nb, qs.nested_blocksize, absmax);
        free(nested);
        if (!ok) return cm_error(CM_ERR_FORMAT, "%s: the nested scales or map hold a non-finite value", where);
    } else {
        memcpy(absmax, absmax_t->data, nb * sizeof(float));
    }
    if (!all_finite(absmax, nb)) return cm_error(CM_ERR_FORMAT, "%s: a block scale is not finite", where);
    *q = (cm_nf4_weight){rows, cols, qs.blocksize, wt->data, absmax};
    *w = (cm_weight){CM_DTYPE_NF4, rows, cols, q};
    *bound = true;
    return CM_OK;
}

/* ---------------------------------------------------------------- writing */

typedef enum { ITEM_MATRIX, ITEM_VECTOR, ITEM_NF4 } item_kind;

typedef struct {
    item_kind kind;
    char name[192];
    const cm_weight *w;
    const float *vec;
    int permute_heads; /* > 0: q/k rows from the interleaved layout to rotate-half, over that many heads */
} item;

typedef struct {
    const cm_model *m;
    cm_safetensors_writer *st;
    cm_pool *pool;
    bool double_quant;
    float *offsets;             /* per item: the double quantization's offset, for its quant state */
    char **qs_names, **qs_json; /* quant-state blobs, written after all the data */
    int n_qs;
    cm_nf4_save_stats stats;
} saver;

/* The input row that becomes output row r. */
static int64_t source_row(const item *it, int64_t r) {
    if (it->permute_heads <= 0) return r;
    int64_t hd = it->w->rows / it->permute_heads, h = r / hd, j = r % hd, half = hd / 2;
    return h * hd + (j < half ? 2 * j : 2 * (j - half) + 1);
}

/* Rows [r0, r0 + nrows) of an item as f32, split across the pool, then (for NF4) the slice's blocks. */
typedef struct {
    const item *it;
    int64_t r0;
    int nrows;
    float *x;
    uint8_t *packed;
    float *absmax; /* the slice's first block */
    size_t n;      /* values in the slice */
    bool scales_only;
} slice_job;

static void rows_worker(void *arg, int thread, int n_threads) {
    const slice_job *j = arg;
    int a, b;
    cm_split_range(j->nrows, n_threads, thread, &a, &b);
    for (int i = a; i < b; i++)
        cm_weight_row_to_f32(j->it->w, source_row(j->it, j->r0 + i), j->x + (size_t)i * (size_t)j->it->w->cols);
}

static void quant_worker(void *arg, int thread, int n_threads) {
    const slice_job *j = arg;
    int blocks = (int)cm_nf4_n_blocks(j->n, CM_NF4_BLOCKSIZE), a, b;
    cm_split_range(blocks, n_threads, thread, &a, &b);
    if (a >= b) return;
    size_t first = (size_t)a * CM_NF4_BLOCKSIZE, end = (size_t)b * CM_NF4_BLOCKSIZE;
    if (end > j->n) end = j->n;
    if (j->scales_only)
        cm_nf4_absmax(j->x + first, end - first, CM_NF4_BLOCKSIZE, j->absmax + a);
    else
        cm_nf4_quantize(j->x + first, end - first, CM_NF4_BLOCKSIZE, j->packed + first / 2, j->absmax + a);
}

/* Rows per slice: about 4 MB of f32, and a whole number of 64-value blocks per slice (so that every slice but
 * the last starts on a block and byte boundary). */
static int slice_rows(int64_t cols) {
    int64_t g = cols, b = CM_NF4_BLOCKSIZE;
    while (b) {
        int64_t t = g % b;
        g = b;
        b = t;
    }
    int64_t unit = CM_NF4_BLOCKSIZE / g, want = ((int64_t)1 << 20) / cols / unit * unit;
    return (int)(want > unit ? want : unit);
}

static cm_status write_matrix(saver *s, const item *it) {
    const cm_weight *w = it->w;
    int64_t shape[2] = {w->rows, w->cols};
    CM_TRY(cm_safetensors_stream_begin(s->st, it->name, CM_DTYPE_BF16, 2, shape));
    int per = slice_rows(w->cols);
    float *x = malloc((size_t)per * (size_t)w->cols * sizeof(float));
    uint16_t *h = malloc((size_t)per * (size_t)w->cols * sizeof(uint16_t));
    cm_status st = x && h ? CM_OK : cm_error(CM_ERR_NOMEM, "out of memory writing \"%s\"", it->name);
    for (int64_t r0 = 0; st == CM_OK && r0 < w->rows; r0 += per) {
        int nrows = (int)(w->rows - r0 < per ? w->rows - r0 : per);
        slice_job j = {it, r0, nrows, x, NULL, NULL, 0, false};
        cm_pool_run(s->pool, rows_worker, &j);
        size_t n = (size_t)nrows * (size_t)w->cols;
        cm_convert_from_f32(CM_DTYPE_BF16, x, h, n);
        st = cm_safetensors_stream_write(s->st, h, n * sizeof(uint16_t));
    }
    free(x);
    free(h);
    if (st == CM_OK) s->stats.n_16bit++;
    return st;
}

static cm_status write_vector(saver *s, const item *it) {
    int dim = s->m->cfg.dim;
    uint16_t *h = malloc((size_t)dim * sizeof(uint16_t));
    if (!h) return cm_error(CM_ERR_NOMEM, "out of memory");
    cm_convert_from_f32(CM_DTYPE_BF16, it->vec, h, (size_t)dim);
    int64_t shape[1] = {dim};
    cm_status st = cm_safetensors_writer_add(s->st, it->name, CM_DTYPE_BF16, 1, shape, h, (size_t)dim * 2);
    free(h);
    if (st == CM_OK) s->stats.n_16bit++;
    return st;
}

static cm_status add_named(saver *s, const char *base, const char *suffix, cm_dtype dt, int64_t n, const void *data) {
    char name[256];
    snprintf(name, sizeof name, "%s%s", base, suffix);
    int64_t shape[1] = {n};
    return cm_safetensors_writer_add(s->st, name, dt, 1, shape, data,
                                     (size_t)n * cm_dtype_block_bytes(dt));
}

/* One pass over a linear's rows, a slice at a time: the block absmax values (scales_only), or also the codes,
 * each slice's written to the file as it is made. */
static cm_status nf4_pass(saver *s, const item *it, float *absmax, bool scales_only) {
    const cm_weight *w = it->w;
    int per = slice_rows(w->cols);
    float *x = malloc((size_t)per * (size_t)w->cols * sizeof(float));
    uint8_t *packed = scales_only ? NULL : malloc((size_t)per * (size_t)w->cols / 2 + 1);
    cm_status st = x && (scales_only || packed) ? CM_OK
                                                : cm_error(CM_ERR_NOMEM, "out of memory quantizing \"%s\"", it->name);
    for (int64_t r0 = 0; st == CM_OK && r0 < w->rows; r0 += per) {
        int nrows = (int)(w->rows - r0 < per ? w->rows - r0 : per);
        size_t first = (size_t)r0 * (size_t)w->cols;
        slice_job j = {it,     r0, nrows, x, packed, absmax + first / CM_NF4_BLOCKSIZE, (size_t)nrows * (size_t)w->cols,
                       scales_only};
        cm_pool_run(s->pool, rows_worker, &j);
        cm_pool_run(s->pool, quant_worker, &j);
        if (!scales_only) st = cm_safetensors_stream_write(s->st, packed, (j.n + 1) / 2);
    }
    free(x);
    free(packed);
    return st;
}

/* A linear's f32 tensors: its scales (the nested ones with double quantization, after a first pass over the
 * weight), quant_map and nested_quant_map. */
static cm_status write_nf4_f32(saver *s, const item *it, float *offset) {
    const cm_weight *w = it->w;
    size_t n = (size_t)w->rows * (size_t)w->cols, nb = cm_nf4_n_blocks(n, CM_NF4_BLOCKSIZE),
           nn = cm_nf4_n_blocks(nb, CM_NF4_NESTED_BLOCKSIZE);
    float *absmax = malloc(nb * sizeof(float)), *nested = malloc(nn * sizeof(float));
    uint8_t *q = malloc(nb);
    cm_status st = absmax && nested && q ? CM_OK : cm_error(CM_ERR_NOMEM, "out of memory quantizing \"%s\"", it->name);
    if (st == CM_OK) st = nf4_pass(s, it, absmax, true);
    if (st == CM_OK && s->double_quant) {
        cm_nf4_double_quant(absmax, nb, q, nested, offset);
        st = add_named(s, it->name, ".nested_absmax", CM_DTYPE_F32, (int64_t)nn, nested);
        if (st == CM_OK) st = add_named(s, it->name, ".nested_quant_map", CM_DTYPE_F32, 256, cm_nf4_dynamic_map);
    } else if (st == CM_OK) {
        st = add_named(s, it->name, ".absmax", CM_DTYPE_F32, (int64_t)nb, absmax);
    }
    if (st == CM_OK) st = add_named(s, it->name, ".quant_map", CM_DTYPE_F32, 16, cm_nf4_code);
    free(absmax), free(nested), free(q);
    return st;
}

/* A linear's bytes: the packed codes, streamed from a second pass, then (double quantization) the 8-bit scales,
 * which that pass also gives; the quant state is kept for the end. */
static cm_status write_nf4_u8(saver *s, const item *it, float offset) {
    const cm_weight *w = it->w;
    size_t n = (size_t)w->rows * (size_t)w->cols, nb = cm_nf4_n_blocks(n, CM_NF4_BLOCKSIZE),
           nn = cm_nf4_n_blocks(nb, CM_NF4_NESTED_BLOCKSIZE);
    int64_t shape[2] = {(int64_t)((n + 1) / 2), 1};
    CM_TRY(cm_safetensors_stream_begin(s->st, it->name, CM_DTYPE_U8, 2, shape));
    float *absmax = malloc(nb * sizeof(float)), *nested = malloc(nn * sizeof(float)), again;
    uint8_t *q = malloc(nb);
    cm_status st = absmax && nested && q ? CM_OK : cm_error(CM_ERR_NOMEM, "out of memory quantizing \"%s\"", it->name);
    if (st == CM_OK) st = nf4_pass(s, it, absmax, false);
    if (st == CM_OK && s->double_quant) {
        cm_nf4_double_quant(absmax, nb, q, nested, &again);
        /* the first pass saw the same weights: the same scales, bit for bit */
        if (memcmp(&again, &offset, sizeof offset) != 0)
            st = cm_error(CM_ERR_IO, "\"%s\": the input changed while it was being quantized", it->name);
        if (st == CM_OK) st = add_named(s, it->name, ".absmax", CM_DTYPE_U8, (int64_t)nb, q);
    }
    free(absmax), free(nested), free(q);
    cm_nf4_quant_state qs = {CM_NF4_BLOCKSIZE, {w->rows, w->cols}, "", s->double_quant, 0, 0.0f};
    snprintf(qs.dtype, sizeof qs.dtype, "%s", cm_torch_dtype_name(w->dtype));
    if (s->double_quant) {
        qs.nested_blocksize = CM_NF4_NESTED_BLOCKSIZE;
        qs.nested_offset = offset;
    }
    char *json = NULL, *qs_name = malloc(strlen(it->name) + sizeof QS_SUFFIX);
    if (st == CM_OK) st = qs_name ? cm_nf4_quant_state_json(&qs, &json) : cm_error(CM_ERR_NOMEM, "out of memory");
    if (st != CM_OK) {
        free(qs_name);
        return st;
    }
    sprintf(qs_name, "%s%s", it->name, QS_SUFFIX);
    s->qs_names[s->n_qs] = qs_name;
    s->qs_json[s->n_qs++] = json;
    s->stats.n_nf4++;
    return CM_OK;
}

/* The input folder's tokenizer files, byte for byte (and its generation_config.json, else one made from the
 * config). */
static cm_status copy_tokenizer_files(const cm_model *m, const char *dir) {
    static const char *const files[] = {"tokenizer.json",   "tokenizer.model", "tokenizer_config.json",
                                        "special_tokens_map.json", "added_tokens.json", "vocab.json",
                                        "merges.txt",       "generation_config.json"};
    char *src_dir = m->format == CM_FORMAT_HF ? strdup(m->path) : cm_path_dirname(m->path);
    if (!src_dir) return cm_error(CM_ERR_NOMEM, "out of memory");
    cm_status st = CM_OK;
    bool have_gen = false;
    for (size_t i = 0; st == CM_OK && i < sizeof files / sizeof *files; i++) {
        char *from = cm_path_join(src_dir, files[i]), *to = cm_path_join(dir, files[i]);
        if (!from || !to) {
            st = cm_error(CM_ERR_NOMEM, "out of memory");
        } else if (m->format != CM_FORMAT_LLAMA2C && m->format != CM_FORMAT_GGUF && cm_path_exists(from)) {
            char *data;
            size_t len;
            st = cm_read_file(from, (size_t)1 << 30, &data, &len);
            if (st == CM_OK) {
                st = cm_write_file_atomic(to, data, len);
                free(data);
            }
            have_gen |= i == sizeof files / sizeof *files - 1;
        }
        free(from);
        free(to);
    }
    free(src_dir);
    if (st == CM_OK && !have_gen) st = cm_hf_write_generation_config(m, dir);
    return st;
}

static cm_status write_config(const cm_model *m, const char *dir, bool double_quant) {
    cm_config hf;
    CM_TRY(cm_hf_config_for_save(m, &hf));
    char *text;
    CM_TRY(cm_config_to_hf_json(&hf, "bfloat16", &text));
    json_t *root = json_loads(text, 0, NULL);
    free(text);
    if (!root) return cm_error(CM_ERR_NOMEM, "out of memory writing config.json");
    /* as transformers' BitsAndBytesConfig.to_dict() writes it */
    json_t *q = json_object();
    json_object_set_new(q, "_load_in_4bit", json_true());
    json_object_set_new(q, "_load_in_8bit", json_false());
    json_object_set_new(q, "bnb_4bit_compute_dtype", json_string("bfloat16"));
    json_object_set_new(q, "bnb_4bit_quant_storage", json_string("uint8"));
    json_object_set_new(q, "bnb_4bit_quant_type", json_string("nf4"));
    json_object_set_new(q, "bnb_4bit_use_double_quant", json_boolean(double_quant));
    json_object_set_new(q, "llm_int8_enable_fp32_cpu_offload", json_false());
    json_object_set_new(q, "llm_int8_has_fp16_weight", json_false());
    json_object_set_new(q, "llm_int8_skip_modules", json_null());
    json_object_set_new(q, "llm_int8_threshold", json_real(6.0));
    json_object_set_new(q, "load_in_4bit", json_true());
    json_object_set_new(q, "load_in_8bit", json_false());
    json_object_set_new(q, "quant_method", json_string("bitsandbytes"));
    json_object_set_new(root, "quantization_config", q);
    char *out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    char *path = cm_path_join(dir, "config.json");
    cm_status st = out && path ? CM_OK : cm_error(CM_ERR_NOMEM, "out of memory");
    if (st == CM_OK) {
        size_t len = strlen(out);
        out[len] = '\n'; /* json_dumps leaves room for the NUL, which the file does not need */
        st = cm_write_file_atomic(path, out, len + 1);
    }
    free(out);
    free(path);
    return st;
}

cm_status cm_model_save_nf4(const cm_model *m, const cm_tokenizer *tok, const char *dir, bool double_quant,
                            int n_threads, cm_nf4_save_stats *stats) {
    const cm_config *c = &m->cfg;
    if (m->tok_embd.dtype == CM_DTYPE_NF4)
        return cm_error(CM_ERR_UNSUPPORTED, "%s: the token embedding is NF4", m->path);
    size_t max_items = 3 + (size_t)c->n_layers * 9;
    item *items = calloc(max_items, sizeof *items);
    saver s = {m, NULL, NULL, double_quant, NULL, NULL, NULL, 0, {0, 0, 0}};
    s.qs_names = calloc((size_t)c->n_layers * 7 + 2, sizeof *s.qs_names);
    s.qs_json = calloc((size_t)c->n_layers * 7 + 2, sizeof *s.qs_json);
    s.offsets = calloc(max_items, sizeof *s.offsets);
    cm_status st = items && s.qs_names && s.qs_json && s.offsets ? CM_OK : cm_error(CM_ERR_NOMEM, "out of memory");
    size_t n_items = 0;
    bool interleaved = c->rope_layout == CM_ROPE_INTERLEAVED;
#define ADD(kind_, w_, vec_, heads_, ...)                                                                    \
    do {                                                                                                     \
        item *it_ = &items[n_items++];                                                                       \
        *it_ = (item){kind_, "", w_, vec_, heads_};                                                          \
        snprintf(it_->name, sizeof it_->name, __VA_ARGS__);                                                  \
    } while (0)
    if (st == CM_OK) {
        ADD(ITEM_MATRIX, &m->tok_embd, NULL, 0, "model.embed_tokens.weight");
        for (int l = 0; l < c->n_layers; l++) {
            const cm_layer *L = &m->layers[l];
            const char *p = "model.layers";
            ADD(ITEM_VECTOR, NULL, L->attn_norm, 0, "%s.%d.input_layernorm.weight", p, l);
            ADD(ITEM_NF4, &L->wq, NULL, interleaved ? c->n_heads : 0, "%s.%d.self_attn.q_proj.weight", p, l);
            ADD(ITEM_NF4, &L->wk, NULL, interleaved ? c->n_kv_heads : 0, "%s.%d.self_attn.k_proj.weight", p, l);
            ADD(ITEM_NF4, &L->wv, NULL, 0, "%s.%d.self_attn.v_proj.weight", p, l);
            ADD(ITEM_NF4, &L->wo, NULL, 0, "%s.%d.self_attn.o_proj.weight", p, l);
            ADD(ITEM_VECTOR, NULL, L->ffn_norm, 0, "%s.%d.post_attention_layernorm.weight", p, l);
            ADD(ITEM_NF4, &L->w_gate, NULL, 0, "%s.%d.mlp.gate_proj.weight", p, l);
            ADD(ITEM_NF4, &L->w_up, NULL, 0, "%s.%d.mlp.up_proj.weight", p, l);
            ADD(ITEM_NF4, &L->w_down, NULL, 0, "%s.%d.mlp.down_proj.weight", p, l);
        }
        ADD(ITEM_VECTOR, NULL, m->out_norm, 0, "model.norm.weight");
        if (!c->tie_embeddings) ADD(ITEM_MATRIX, &m->output, NULL, 0, "lm_head.weight");
    }
#undef ADD
    if (st == CM_OK) st = cm_mkdir_p(dir);
    if (st == CM_OK) st = write_config(m, dir, double_quant);
    if (st == CM_OK) st = tok ? cm_hf_write_tokenizer_files(m, tok, dir) : copy_tokenizer_files(m, dir);
    if (st == CM_OK && tok) st = cm_hf_write_generation_config(m, dir);
    if (st == CM_OK && n_threads > 1) st = cm_pool_open(n_threads, &s.pool);
    char *st_path = st == CM_OK ? cm_path_join(dir, "model.safetensors") : NULL;
    if (st == CM_OK && !st_path) st = cm_error(CM_ERR_NOMEM, "out of memory");
    if (st == CM_OK) {
        /* every tensor's header entry: its name (and the NF4 suffixes) plus ~128 bytes of dtype, shape, offsets */
        size_t reserve = 1024;
        for (size_t i = 0; i < n_items; i++) reserve += (strlen(items[i].name) + 128) * (items[i].kind == ITEM_NF4 ? 7 : 1);
        st = cm_safetensors_stream_open(st_path, reserve, &s.st);
    }
    /* by alignment, as the safetensors library orders a file, so that every tensor starts at a multiple of its
     * element size: the f32 scales and maps, then the BF16 tensors, then the bytes */
    for (size_t i = 0; st == CM_OK && i < n_items; i++)
        if (items[i].kind == ITEM_NF4) st = write_nf4_f32(&s, &items[i], &s.offsets[i]);
    for (size_t i = 0; st == CM_OK && i < n_items; i++) {
        if (items[i].kind == ITEM_MATRIX) st = write_matrix(&s, &items[i]);
        if (items[i].kind == ITEM_VECTOR) st = write_vector(&s, &items[i]);
    }
    for (size_t i = 0; st == CM_OK && i < n_items; i++)
        if (items[i].kind == ITEM_NF4) st = write_nf4_u8(&s, &items[i], s.offsets[i]);
    for (int i = 0; st == CM_OK && i < s.n_qs; i++) {
        size_t len = strlen(s.qs_json[i]);
        int64_t shape[1] = {(int64_t)len};
        st = cm_safetensors_writer_add(s.st, s.qs_names[i], CM_DTYPE_U8, 1, shape, s.qs_json[i], len);
    }
    if (s.st) {
        if (st == CM_OK)
            st = cm_safetensors_writer_commit(s.st);
        else
            cm_safetensors_writer_abort(s.st);
    }
    if (st == CM_OK) {
        FILE *f = fopen(st_path, "rb");
        if (f && fseek(f, 0, SEEK_END) == 0) s.stats.bytes = (uint64_t)ftell(f);
        if (f) fclose(f);
    }
    for (int i = 0; i < s.n_qs; i++) {
        free(s.qs_names[i]);
        free(s.qs_json[i]);
    }
    free(s.qs_names);
    free(s.qs_json);
    free(s.offsets);
    free(items);
    free(st_path);
    cm_pool_close(s.pool);
    if (st == CM_OK && stats) *stats = s.stats;
    return st;
}
