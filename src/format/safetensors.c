/* safetensors reader and writer (FACTS 1.1).
 *
 * Reader: the file is `u64 LE N`, N bytes of JSON, then the data section. Every length and offset is
 * checked against the bytes actually present, every product for overflow, and the tensors must tile the
 * data section exactly (no overlap, no gap, no trailing byte), as the reference parser demands. Anything
 * else is rejected with a one-line message naming the file, the tensor or byte offset, and the problem.
 *
 * Writer: tensors are streamed from the caller's pointers into an atomic file, in the order added, after a
 * header padded with spaces to a multiple of 8. */
#include "format/json_util.h"
#include "camelid/safetensors.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* The reference implementation refuses headers over 100 MB; so do we. */
#define ST_MAX_HEADER ((uint64_t)100000000)

typedef struct {
    char *key;
    char *value;
} st_meta;

struct cm_safetensors {
    char *path;         /* the name used in messages */
    cm_mmap *map;       /* NULL when parsing a caller-owned buffer */
    cm_tensor *tensors; /* sorted by data offset */
    size_t n;
    const cm_tensor **by_name; /* sorted by name */
    st_meta *meta;
    size_t n_meta;
};

void cm_safetensors_close(cm_safetensors *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n; i++) free((char *)st->tensors[i].name);
    for (size_t i = 0; i < st->n_meta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    free(st->tensors);
    free(st->by_name);
    free(st->meta);
    free(st->path);
    cm_mmap_close(st->map);
    free(st);
}

/* One parsed tensor entry before sorting: its offsets and its position in the header. */
typedef struct {
    uint64_t begin, end;
    size_t order;
} st_range;

static int cmp_range(const void *a, const void *b) {
    const st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const cm_tensor *const *)a)->name, (*(const cm_tensor *const *)b)->name);
}

static cm_status parse_metadata(cm_safetensors *st, json_t *obj) {
    char b1[96];
    if (!json_is_object(obj))
        return cm_error(CM_ERR_FORMAT, "%s: \"__metadata__\" must be an object of strings, got %s", st->path,
                        cm_json_kind(obj));
    size_t n = json_object_size(obj);
    st->meta = calloc(n ? n : 1, sizeof *st->meta);
    if (!st->meta) return cm_error(CM_ERR_NOMEM, "%s: out of memory", st->path);
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (!json_is_string(v))
            return cm_error(CM_ERR_FORMAT, "%s: __metadata__ \"%s\": value must be a string, got %s",
                            st->path, cm_json_show(key, b1, sizeof b1), cm_json_kind(v));
        st_meta *m = &st->meta[st->n_meta];
        m->key = strdup(key);
        m->value = strdup(json_string_value(v));
        if (!m->key || !m->value) {
            free(m->key);
            free(m->value);
            return cm_error(CM_ERR_NOMEM, "%s: out of memory", st->path);
        }
        st->n_meta++;
    }
    return CM_OK;
}

/* Parse one tensor entry `name: {...}` into t (name not yet set) and r. */
static cm_status parse_entry(const cm_safetensors *st, const char *name, json_t *obj, uint64_t data_size,
                             cm_tensor *t, st_range *r) {
    char nb[96], kb[96];
    const char *shown = cm_json_show(name, nb, sizeof nb);
    if (!json_is_object(obj))
        return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\": entry must be an object, got %s", st->path, shown,
                        cm_json_kind(obj));
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\": unexpected key \"%s\"", st->path, shown,
                            cm_json_show(key, kb, sizeof kb));
    }
    json_t *jd = json_object_get(obj, "dtype"), *js = json_object_get(obj, "shape"),
           *jo = json_object_get(obj, "data_offsets");
    if (!jd) return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\": missing \"dtype\"", st->path, shown);
    if (!js) return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\": missing \"shape\"", st->path, shown);
    if (!jo) return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\": missing \"data_offsets\"", st->path, shown);

    if (!json_is_string(jd))
        return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\": \"dtype\" must be a string, got %s", st->path,
                        shown, cm_json_kind(jd));
    if (cm_dtype_from_name(json_string_value(jd), &t->dtype) != 0)
        return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\": unknown dtype \"%s\"", st->path, shown,
                        cm_json_show(json_string_value(jd), kb, sizeof kb));

    if (!json_is_array(js))
        return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\": \"shape\" must be an array, got %s", st->path,
                        shown, cm_json_kind(js));
    size_t ndim = json_array_size(js);
    if (ndim > CM_MAX_DIMS)
        return cm_error(CM_ERR_FORMAT,
                        "%s: tensor \"%s\": shape has %zu dimensions, more than the %d supported", st->path,
                        shown, ndim, CM_MAX_DIMS);
    t->ndim = (int)ndim;
    uint64_t numel = 1;
    bool numel_overflow = false;
    for (size_t d = 0; d < ndim; d++) {
        json_t *e = json_array_get(js, d);
        if (!json_is_integer(e))
            return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\": shape[%zu] must be an integer, got %s",
                            st->path, shown, d, cm_json_kind(e));
        json_int_t x = json_integer_value(e);
        if (x < 0)
            return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\": shape[%zu] is negative (%lld)", st->path,
                            shown, d, (long long)x);
        t->shape[d] = (int64_t)x;
        if (__builtin_mul_overflow(numel, (uint64_t)x, &numel)) numel_overflow = true;
    }
    /* a zero dimension makes the count 0 whatever overflowed before it */
    for (size_t d = 0; d < ndim; d++)
        if (t->shape[d] == 0) numel = 0, numel_overflow = false;
    size_t esize = cm_dtype_block_bytes(t->dtype);
    uint64_t nbytes;
    if (numel_overflow || __builtin_mul_overflow(numel, (uint64_t)esize, &nbytes) || nbytes > SIZE_MAX)
        return cm_error(CM_ERR_FORMAT,
                        "%s: tensor \"%s\": shape is too large (element count x %zu bytes overflows)",
                        st->path, shown, esize);

    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return cm_error(CM_ERR_FORMAT,
                        "%s: tensor \"%s\": \"data_offsets\" must be an array [begin, end], got %s", st->path,
                        shown, json_is_array(jo) ? "an array of another length" : cm_json_kind(jo));
    json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
    if (!json_is_integer(jb) || !json_is_integer(je))
        return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\": data_offsets must be integers", st->path, shown);
    json_int_t b = json_integer_value(jb), e = json_integer_value(je);
    if (b < 0 || e < 0)
        return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%lld, %lld] are negative", st->path,
                        shown, (long long)b, (long long)e);
    if (b > e)
        return cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%lld, %lld] end before they begin",
                        st->path, shown, (long long)b, (long long)e);
    if ((uint64_t)e > data_size)
        return cm_error(CM_ERR_FORMAT,
                        "%s: tensor \"%s\": data_offsets [%lld, %lld] run past the end of the %llu-byte data "
                        "section (file truncated?)",
                        st->path, shown, (long long)b, (long long)e, (unsigned long long)data_size);
    if ((uint64_t)(e - b) != nbytes) {
        char shp[CM_MAX_DIMS * 22 + 4];
        size_t k = 0;
        shp[k++] = '[';
        for (int d = 0; d < t->ndim; d++)
            k += (size_t)snprintf(shp + k, sizeof shp - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        snprintf(shp + k, sizeof shp - k, "]");
        return cm_error(CM_ERR_FORMAT,
                        "%s: tensor \"%s\": data_offsets [%lld, %lld] but %s %s needs %llu bytes", st->path,
                        shown, (long long)b, (long long)e, cm_dtype_name(t->dtype), shp,
                        (unsigned long long)nbytes);
    }
    t->nbytes = (size_t)nbytes;
    r->begin = (uint64_t)b;
    r->end = (uint64_t)e;
    return CM_OK;
}

static cm_status parse_header(cm_safetensors *st, const uint8_t *bytes, size_t size) {
    if (size == 0) return cm_error(CM_ERR_FORMAT, "%s: file is empty", st->path);
    if (size < 8)
        return cm_error(CM_ERR_FORMAT, "%s: file is %zu bytes, too short for the 8-byte header length",
                        st->path, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | bytes[i];
    if (hlen > size - 8)
        return cm_error(
            CM_ERR_FORMAT,
            "%s: header length %llu at byte 0 runs past the end of the file (%zu bytes; truncated?)",
            st->path, (unsigned long long)hlen, size);
    if (hlen > ST_MAX_HEADER)
        return cm_error(CM_ERR_FORMAT, "%s: header length %llu is over the %llu-byte limit", st->path,
                        (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
    if (hlen < 2)
        return cm_error(CM_ERR_FORMAT, "%s: header length %llu is too short for a JSON object", st->path,
                        (unsigned long long)hlen);
    const char *header = (const char *)bytes + 8;
    if (header[0] != '{')
        return cm_error(CM_ERR_FORMAT,
                        "%s: header at byte 8 does not start with '{' (not a safetensors file?)", st->path);
    const char *nul = memchr(header, 0, (size_t)hlen);
    if (nul)
        return cm_error(CM_ERR_FORMAT, "%s: header has a NUL byte at byte %zu", st->path,
                        (size_t)(nul - header) + 8);
    uint64_t data_size = size - 8 - hlen;

    json_error_t jerr;
    json_t *root = json_loadb(header, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return cm_error(CM_ERR_FORMAT, "%s: header JSON is invalid at byte %llu: %s", st->path,
                        (unsigned long long)(8 + (jerr.position > 0 ? (uint64_t)jerr.position : 0)),
                        jerr.text);
    cm_status rc = CM_OK;
    st_range *ranges = NULL;
    if (!json_is_object(root)) {
        rc =
            cm_error(CM_ERR_FORMAT, "%s: header must be a JSON object, got %s", st->path, cm_json_kind(root));
        goto done;
    }
    size_t cap = json_object_size(root);
    st->tensors = calloc(cap ? cap : 1, sizeof *st->tensors);
    ranges = calloc(cap ? cap : 1, sizeof *ranges);
    st->by_name = calloc(cap ? cap : 1, sizeof *st->by_name);
    if (!st->tensors || !ranges || !st->by_name) {
        rc = cm_error(CM_ERR_NOMEM, "%s: out of memory for %zu header entries", st->path, cap);
        goto done;
    }
    /* parse into a scratch array in header order, then place by offset */
    cm_tensor *scratch = calloc(cap ? cap : 1, sizeof *scratch);
    if (!scratch) {
        rc = cm_error(CM_ERR_NOMEM, "%s: out of memory", st->path);
        goto done;
    }
    size_t n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            rc = parse_metadata(st, v);
        } else {
            rc = parse_entry(st, key, v, data_size, &scratch[n], &ranges[n]);
            if (rc == CM_OK) {
                ranges[n].order = n;
                if (!(scratch[n].name = strdup(key)))
                    rc = cm_error(CM_ERR_NOMEM, "%s: out of memory", st->path);
                else
                    n++;
            }
        }
        if (rc != CM_OK) break;
    }
    if (rc != CM_OK) {
        for (size_t i = 0; i < n; i++) free((char *)scratch[i].name);
        free(scratch);
        goto done;
    }
    qsort(ranges, n, sizeof *ranges, cmp_range);
    for (size_t i = 0; i < n; i++) st->tensors[i] = scratch[ranges[i].order];
    st->n = n;
    free(scratch);

    /* the tensors must tile the data section: no overlap, no gap, no trailing byte */
    uint64_t expect = 0;
    for (size_t i = 0; i < n && rc == CM_OK; i++) {
        const st_range *r = &ranges[i];
        char b1[96], b2[96];
        if (r->begin < expect) {
            rc = cm_error(CM_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%llu, %llu] overlap tensor \"%s\"",
                          st->path, cm_json_show(st->tensors[i].name, b1, sizeof b1),
                          (unsigned long long)r->begin, (unsigned long long)r->end,
                          cm_json_show(st->tensors[i - 1].name, b2, sizeof b2));
        } else if (r->begin > expect) {
            rc = cm_error(
                CM_ERR_FORMAT,
                "%s: tensor \"%s\": data_offsets [%llu, %llu] leave a gap: bytes [%llu, %llu) of the "
                "data section belong to no tensor",
                st->path, cm_json_show(st->tensors[i].name, b1, sizeof b1), (unsigned long long)r->begin,
                (unsigned long long)r->end, (unsigned long long)expect, (unsigned long long)r->begin);
        }
        expect = r->end;
        st->tensors[i].data = bytes + 8 + hlen + r->begin;
    }
    if (rc == CM_OK && expect != data_size)
        rc = cm_error(
            CM_ERR_FORMAT,
            "%s: data section is %llu bytes but the tensors cover %llu: %llu trailing bytes at byte %llu",
            st->path, (unsigned long long)data_size, (unsigned long long)expect,
            (unsigned long long)(data_size - expect), (unsigned long long)(8 + hlen + expect));
    if (rc != CM_OK) goto done;

    for (size_t i = 0; i < n; i++) st->by_name[i] = &st->tensors[i];
    qsort(st->by_name, n, sizeof *st->by_name, cmp_name);

done:
    free(ranges);
    json_decref(root);
    return rc;
}

static cm_status parse_into(cm_safetensors *st, const void *data, size_t size, cm_safetensors **out) {
    cm_status rc = parse_header(st, data, size);
    if (rc != CM_OK) {
        cm_safetensors_close(st);
        return rc;
    }
    *out = st;
    return CM_OK;
}

cm_status cm_safetensors_parse(const void *data, size_t size, const char *name, cm_safetensors **out) {
    *out = NULL;
    if (!name) name = "<buffer>";
    if (!data && size) return cm_error(CM_ERR_ARG, "%s: NULL buffer", name);
    cm_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(name))) {
        free(st);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory", name);
    }
    return parse_into(st, data, size, out);
}

cm_status cm_safetensors_open(const char *path, cm_safetensors **out) {
    *out = NULL;
    cm_mmap *m;
    CM_TRY(cm_mmap_open(path, &m));
    cm_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        cm_mmap_close(m);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory", path);
    }
    st->map = m;
    return parse_into(st, m->data, m->size, out);
}

size_t cm_safetensors_count(const cm_safetensors *st) {
    return st->n;
}

const cm_tensor *cm_safetensors_get(const cm_safetensors *st, size_t i) {
    return i < st->n ? &st->tensors[i] : NULL;
}

const cm_tensor *cm_safetensors_find(const cm_safetensors *st, const char *name) {
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const cm_tensor *t = st->by_name[mid];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *cm_safetensors_metadata(const cm_safetensors *st, const char *key) {
    for (size_t i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
    return NULL;
}

const char *cm_safetensors_path(const cm_safetensors *st) {
    return st->path;
}

/* ---- writer ---- */

typedef struct {
    char *name;
    cm_dtype dtype;
    int ndim;
    int64_t shape[CM_MAX_DIMS];
    const void *data;
    size_t nbytes;
    bool owned;
} st_entry;

struct cm_safetensors_writer {
    char *path;
    cm_atomic_file *file;
    st_entry *e;
    size_t n, cap;
    st_meta *meta;
    size_t n_meta, cap_meta;
    /* streaming: the bytes reserved for the header in front of the data (0: not streaming), and how much of
     * the last declared tensor's data has been written */
    size_t reserve, written;
};

cm_status cm_safetensors_writer_open(const char *path, cm_safetensors_writer **out) {
    *out = NULL;
    cm_safetensors_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory", path);
    }
    cm_status rc = cm_atomic_open(path, &w->file);
    if (rc != CM_OK) {
        free(w->path);
        free(w);
        return rc;
    }
    *out = w;
    return CM_OK;
}

void cm_safetensors_writer_abort(cm_safetensors_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) {
        free(w->e[i].name);
        if (w->e[i].owned) free((void *)w->e[i].data);
    }
    for (size_t i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->e);
    free(w->meta);
    if (w->file) cm_atomic_abort(w->file);
    free(w->path);
    free(w);
}

cm_status cm_safetensors_writer_set_metadata(cm_safetensors_writer *w, const char *key, const char *value) {
    char kb[96];
    if (!key || !value) return cm_error(CM_ERR_ARG, "%s: metadata key and value must not be NULL", w->path);
    json_t *probe_k = json_string(key), *probe_v = json_string(value);
    bool ok = probe_k && probe_v;
    json_decref(probe_k);
    json_decref(probe_v);
    if (!ok)
        return cm_error(CM_ERR_ARG, "%s: metadata \"%s\": key and value must be valid UTF-8", w->path,
                        cm_json_show(key, kb, sizeof kb));
    for (size_t i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta[i].key, key) == 0) {
            char *v = strdup(value);
            if (!v) return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->path);
            free(w->meta[i].value);
            w->meta[i].value = v;
            return CM_OK;
        }
    }
    if (w->n_meta == w->cap_meta) {
        size_t nc = w->cap_meta ? 2 * w->cap_meta : 4;
        st_meta *m = realloc(w->meta, nc * sizeof *m);
        if (!m) return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->path);
        w->meta = m;
        w->cap_meta = nc;
    }
    st_meta *m = &w->meta[w->n_meta];
    m->key = strdup(key);
    m->value = strdup(value);
    if (!m->key || !m->value) {
        free(m->key);
        free(m->value);
        return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->path);
    }
    w->n_meta++;
    return CM_OK;
}

static cm_status writer_add(cm_safetensors_writer *w, const char *name, cm_dtype dtype, int ndim,
                            const int64_t *shape, const void *data, size_t nbytes, bool owned, bool stream) {
    char nb[96];
    if (!name) return cm_error(CM_ERR_ARG, "%s: tensor name must not be NULL", w->path);
    const char *shown = cm_json_show(name, nb, sizeof nb);
    if (strcmp(name, "__metadata__") == 0)
        return cm_error(CM_ERR_ARG, "%s: \"__metadata__\" is reserved and cannot name a tensor", w->path);
    json_t *probe = json_string(name);
    if (!probe) return cm_error(CM_ERR_ARG, "%s: tensor \"%s\": name is not valid UTF-8", w->path, shown);
    json_decref(probe);
    if ((unsigned)dtype >= CM_DTYPE_COUNT || cm_dtype_block_elems(dtype) != 1)
        return cm_error(CM_ERR_ARG, "%s: tensor \"%s\": dtype %d cannot be stored in safetensors", w->path,
                        shown, (int)dtype);
    if (ndim < 0 || ndim > CM_MAX_DIMS)
        return cm_error(CM_ERR_ARG, "%s: tensor \"%s\": %d dimensions (0..%d allowed)", w->path, shown, ndim,
                        CM_MAX_DIMS);
    uint64_t numel = 1;
    bool over = false;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return cm_error(CM_ERR_ARG, "%s: tensor \"%s\": shape[%d] is negative (%lld)", w->path, shown, d,
                            (long long)shape[d]);
        if (__builtin_mul_overflow(numel, (uint64_t)shape[d], &numel)) over = true;
    }
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0) numel = 0, over = false;
    uint64_t need;
    if (over || __builtin_mul_overflow(numel, (uint64_t)cm_dtype_block_bytes(dtype), &need))
        return cm_error(CM_ERR_ARG, "%s: tensor \"%s\": shape is too large", w->path, shown);
    if (need != nbytes)
        return cm_error(CM_ERR_ARG, "%s: tensor \"%s\": %zu bytes given but %s of %llu elements needs %llu",
                        w->path, shown, nbytes, cm_dtype_name(dtype), (unsigned long long)numel,
                        (unsigned long long)need);
    if (nbytes && !data && !stream) return cm_error(CM_ERR_ARG, "%s: tensor \"%s\": NULL data", w->path, shown);
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->e[i].name, name) == 0)
            return cm_error(CM_ERR_ARG, "%s: tensor \"%s\" added twice", w->path, shown);
    if (w->n == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 16;
        st_entry *e = realloc(w->e, nc * sizeof *e);
        if (!e) return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->path);
        w->e = e;
        w->cap = nc;
    }
    st_entry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = strdup(name))) return cm_error(CM_ERR_NOMEM, "%s: out of memory", w->path);
    e->dtype = dtype;
    e->ndim = ndim;
    for (int d = 0; d < ndim; d++) e->shape[d] = shape[d];
    e->data = data;
    e->nbytes = nbytes;
    e->owned = owned;
    w->n++;
    return CM_OK;
}

/* In a stream the last declared tensor must be complete before the next one starts. */
static cm_status stream_check_complete(cm_safetensors_writer *w) {
    if (w->n && w->written != w->e[w->n - 1].nbytes) {
        char nb[96];
        return cm_error(CM_ERR_ARG, "%s: tensor \"%s\": %zu of its %zu bytes were written", w->path,
                        cm_json_show(w->e[w->n - 1].name, nb, sizeof nb), w->written, w->e[w->n - 1].nbytes);
    }
    return CM_OK;
}

cm_status cm_safetensors_writer_add(cm_safetensors_writer *w, const char *name, cm_dtype dtype, int ndim,
                                    const int64_t *shape, const void *data, size_t nbytes) {
    if (!w->reserve) return writer_add(w, name, dtype, ndim, shape, data, nbytes, false, false);
    CM_TRY(stream_check_complete(w));
    CM_TRY(writer_add(w, name, dtype, ndim, shape, NULL, nbytes, false, true));
    w->written = 0;
    return cm_safetensors_stream_write(w, data, nbytes);
}

cm_status cm_safetensors_stream_open(const char *path, size_t header_bytes, cm_safetensors_writer **out) {
    header_bytes = (header_bytes + 7) / 8 * 8;
    if (header_bytes < 16 || header_bytes > ST_MAX_HEADER)
        return cm_error(CM_ERR_ARG, "%s: %zu bytes reserved for the header (16..%llu allowed)", path, header_bytes,
                        (unsigned long long)ST_MAX_HEADER);
    CM_TRY(cm_safetensors_writer_open(path, out));
    cm_safetensors_writer *w = *out;
    w->reserve = header_bytes;
    /* the header's place, filled at commit */
    char *blank = malloc(header_bytes);
    cm_status st = blank ? CM_OK : cm_error(CM_ERR_NOMEM, "%s: out of memory", path);
    if (blank) {
        memset(blank, ' ', header_bytes);
        st = cm_atomic_write(w->file, blank, header_bytes);
        free(blank);
    }
    if (st != CM_OK) {
        cm_safetensors_writer_abort(w);
        *out = NULL;
    }
    return st;
}

cm_status cm_safetensors_stream_begin(cm_safetensors_writer *w, const char *name, cm_dtype dtype, int ndim,
                                      const int64_t *shape) {
    if (!w->reserve) return cm_error(CM_ERR_ARG, "%s: not a streaming writer", w->path);
    CM_TRY(stream_check_complete(w));
    /* the size follows from dtype x shape; writer_add checks it (and the shape) */
    uint64_t numel = 1;
    for (int d = 0; d < ndim && d < CM_MAX_DIMS; d++)
        if (shape[d] < 0 || __builtin_mul_overflow(numel, (uint64_t)shape[d], &numel)) numel = UINT64_MAX;
    uint64_t nbytes;
    if (numel == UINT64_MAX || __builtin_mul_overflow(numel, (uint64_t)cm_dtype_block_bytes(dtype), &nbytes) ||
        nbytes > SIZE_MAX)
        nbytes = SIZE_MAX;
    CM_TRY(writer_add(w, name, dtype, ndim, shape, NULL, (size_t)nbytes, false, true));
    w->written = 0;
    return CM_OK;
}

cm_status cm_safetensors_stream_write(cm_safetensors_writer *w, const void *data, size_t n) {
    if (!w->reserve || !w->n) return cm_error(CM_ERR_ARG, "%s: no tensor to write into", w->path);
    const st_entry *e = &w->e[w->n - 1];
    if (n > e->nbytes - w->written) {
        char nb[96];
        return cm_error(CM_ERR_ARG, "%s: tensor \"%s\": %zu more bytes than its %zu", w->path,
                        cm_json_show(e->name, nb, sizeof nb), n - (e->nbytes - w->written), e->nbytes);
    }
    CM_TRY(cm_atomic_write(w->file, data, n));
    w->written += n;
    return CM_OK;
}

/* Ownership passes to the writer even when the call fails (the buffer is then freed at once), so callers
 * never leak on an error path. */
cm_status cm_safetensors_writer_add_owned(cm_safetensors_writer *w, const char *name, cm_dtype dtype,
                                          int ndim, const int64_t *shape, void *data, size_t nbytes) {
    if (w->reserve) {
        cm_status rc = cm_safetensors_writer_add(w, name, dtype, ndim, shape, data, nbytes);
        free(data);
        return rc;
    }
    cm_status rc = writer_add(w, name, dtype, ndim, shape, data, nbytes, true, false);
    if (rc != CM_OK) free(data);
    return rc;
}

/* The header JSON (unpadded) as a heap string. */
static cm_status writer_header(cm_safetensors_writer *w, char **out) {
    *out = NULL;
    json_t *root = json_object(), *meta = json_object();
    bool ok = root && meta;
    bool has_format = false;
    for (size_t i = 0; ok && i < w->n_meta; i++) {
        if (strcmp(w->meta[i].key, "format") == 0) has_format = true;
        ok = json_object_set_new(meta, w->meta[i].key, json_string(w->meta[i].value)) == 0;
    }
    if (ok && !has_format) {
        /* "format" first, as torch writers put it */
        json_t *m2 = json_object();
        ok = m2 && json_object_set_new(m2, "format", json_string("pt")) == 0 &&
             json_object_update(m2, meta) == 0;
        json_decref(meta);
        meta = m2;
    }
    if (ok) {
        ok = json_object_set(root, "__metadata__", meta) == 0;
    }
    uint64_t off = 0;
    for (size_t i = 0; ok && i < w->n; i++) {
        const st_entry *e = &w->e[i];
        json_t *t = json_object(), *shape = json_array(), *offs = json_array();
        ok = t && shape && offs;
        for (int d = 0; ok && d < e->ndim; d++)
            ok = json_array_append_new(shape, json_integer(e->shape[d])) == 0;
        uint64_t end = off;
        if (ok && (__builtin_add_overflow(off, (uint64_t)e->nbytes, &end) || end > (uint64_t)INT64_MAX)) {
            json_decref(t);
            json_decref(shape);
            json_decref(offs);
            json_decref(root);
            json_decref(meta);
            return cm_error(CM_ERR_ARG, "%s: total tensor data exceeds 2^63 bytes", w->path);
        }
        ok = ok && json_array_append_new(offs, json_integer((json_int_t)off)) == 0 &&
             json_array_append_new(offs, json_integer((json_int_t)end)) == 0 &&
             json_object_set_new(t, "dtype", json_string(cm_dtype_name(e->dtype))) == 0 &&
             json_object_set(t, "shape", shape) == 0 && json_object_set(t, "data_offsets", offs) == 0 &&
             json_object_set(root, e->name, t) == 0;
        json_decref(shape);
        json_decref(offs);
        json_decref(t);
        off = end;
    }
    char *s = ok ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(meta);
    json_decref(root);
    if (!s) return cm_error(CM_ERR_NOMEM, "%s: out of memory building the header", w->path);
    *out = s;
    return CM_OK;
}

/* A stream's header goes into the space reserved in front of the data, padded with spaces. */
static cm_status stream_finish(cm_safetensors_writer *w, const char *json) {
    CM_TRY(stream_check_complete(w));
    size_t jlen = strlen(json);
    if (jlen > w->reserve - 8)
        return cm_error(CM_ERR_ARG, "%s: the header needs %zu bytes but only %zu were reserved", w->path, jlen,
                        w->reserve - 8);
    FILE *f = cm_atomic_stream(w->file);
    if (fflush(f) != 0 || fseek(f, 0, SEEK_SET) != 0)
        return cm_error(CM_ERR_IO, "%s: cannot seek back to the header", w->path);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)(w->reserve - 8) >> (8 * i));
    CM_TRY(cm_atomic_write(w->file, len8, 8));
    return cm_atomic_write(w->file, json, jlen); /* the rest of the reserve already holds spaces */
}

cm_status cm_safetensors_writer_commit(cm_safetensors_writer *w) {
    char *json;
    cm_status rc = writer_header(w, &json);
    if (rc != CM_OK) {
        cm_safetensors_writer_abort(w);
        return rc;
    }
    if (w->reserve) {
        rc = stream_finish(w, json);
        free(json);
        if (rc != CM_OK) {
            cm_safetensors_writer_abort(w);
            return rc;
        }
        cm_atomic_file *f = w->file;
        w->file = NULL;
        rc = cm_atomic_commit(f);
        cm_safetensors_writer_abort(w);
        return rc;
    }
    size_t jlen = strlen(json), padded = (jlen + 7) / 8 * 8;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";
    rc = cm_atomic_write(w->file, len8, 8);
    if (rc == CM_OK) rc = cm_atomic_write(w->file, json, jlen);
    if (rc == CM_OK) rc = cm_atomic_write(w->file, spaces, padded - jlen);
    free(json);
    for (size_t i = 0; rc == CM_OK && i < w->n; i++)
        rc = cm_atomic_write(w->file, w->e[i].data, w->e[i].nbytes);
    if (rc != CM_OK) {
        cm_safetensors_writer_abort(w);
        return rc;
    }
    cm_atomic_file *f = w->file;
    w->file = NULL;
    rc = cm_atomic_commit(f);
    cm_safetensors_writer_abort(w); /* frees the rest; the file is already committed */
    return rc;
}
