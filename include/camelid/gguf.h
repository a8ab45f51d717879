/* GGUF v2/v3 (FACTS 1.5): a hardened reader over a memory map (metadata + zero-copy tensor views) and an
 * atomic writer. Tensor shapes are exposed row-major (GGUF's ne[] reversed), like every other cm_tensor. */
#ifndef CAMELID_GGUF_H
#define CAMELID_GGUF_H

#include <stdbool.h>

#include "camelid/file.h"
#include "camelid/tensor.h"

typedef enum {
    CM_GGUF_UINT8 = 0,
    CM_GGUF_INT8 = 1,
    CM_GGUF_UINT16 = 2,
    CM_GGUF_INT16 = 3,
    CM_GGUF_UINT32 = 4,
    CM_GGUF_INT32 = 5,
    CM_GGUF_FLOAT32 = 6,
    CM_GGUF_BOOL = 7,
    CM_GGUF_STRING = 8,
    CM_GGUF_ARRAY = 9,
    CM_GGUF_UINT64 = 10,
    CM_GGUF_INT64 = 11,
    CM_GGUF_FLOAT64 = 12,
} cm_gguf_type;

/* ggml tensor types camelid knows the block size of (the file may hold others; they are reported). */
typedef enum {
    CM_GGML_F32 = 0,
    CM_GGML_F16 = 1,
    CM_GGML_Q4_0 = 2,
    CM_GGML_Q4_1 = 3,
    CM_GGML_Q5_0 = 6,
    CM_GGML_Q5_1 = 7,
    CM_GGML_Q8_0 = 8,
    CM_GGML_Q8_1 = 9,
    CM_GGML_Q2_K = 10,
    CM_GGML_Q3_K = 11,
    CM_GGML_Q4_K = 12,
    CM_GGML_Q5_K = 13,
    CM_GGML_Q6_K = 14,
    CM_GGML_Q8_K = 15,
    CM_GGML_BF16 = 30,
} cm_ggml_type;

typedef struct cm_gguf cm_gguf;

cm_status cm_gguf_open(const char *path, cm_gguf **out);
/* Validate a caller-owned buffer (outlives the result); `name` is used in errors. Drives the fuzz target. */
cm_status cm_gguf_parse(const void *data, size_t size, const char *name, cm_gguf **out);
void cm_gguf_close(cm_gguf *g);

const char *cm_gguf_path(const cm_gguf *g);
uint32_t cm_gguf_version(const cm_gguf *g);
size_t cm_gguf_alignment(const cm_gguf *g);

/* Metadata. Index of `key` or -1. */
int64_t cm_gguf_find(const cm_gguf *g, const char *key);
size_t cm_gguf_kv_count(const cm_gguf *g);
const char *cm_gguf_kv_key(const cm_gguf *g, size_t i);
cm_gguf_type cm_gguf_kv_type(const cm_gguf *g, size_t i);
/* Typed getters for key `key`: CM_ERR_NOT_FOUND if absent (message names the key and file), CM_ERR_FORMAT if
 * the stored type does not fit (integers convert among themselves when the value fits; floats accept
 * FLOAT32/FLOAT64). */
cm_status cm_gguf_get_u32(const cm_gguf *g, const char *key, uint32_t *out);
cm_status cm_gguf_get_i64(const cm_gguf *g, const char *key, int64_t *out);
cm_status cm_gguf_get_f32(const cm_gguf *g, const char *key, float *out);
cm_status cm_gguf_get_f64(const cm_gguf *g, const char *key, double *out); /* FLOAT32/FLOAT64, exact */
cm_status cm_gguf_get_bool(const cm_gguf *g, const char *key, bool *out);
/* String values point into the file (not NUL-terminated): pointer + length. */
cm_status cm_gguf_get_str(const cm_gguf *g, const char *key, const char **s, size_t *len);
/* Arrays: element type and count; numeric elements are a raw little-endian array inside the file;
 * string elements are read one by one. */
cm_status cm_gguf_get_arr(const cm_gguf *g, const char *key, cm_gguf_type *elem_type, uint64_t *count);
cm_status cm_gguf_get_arr_data(const cm_gguf *g, const char *key, const void **data); /* numeric only */
cm_status cm_gguf_get_arr_str(const cm_gguf *g, const char *key, uint64_t j, const char **s, size_t *len);

/* Tensors, in file order. `ggml_type` is the raw type; the cm_tensor's dtype is set for F32/F16/BF16 and
 * to CM_DTYPE_COUNT for types without a cm_dtype (yet). */
size_t cm_gguf_tensor_count(const cm_gguf *g);
const cm_tensor *cm_gguf_tensor(const cm_gguf *g, size_t i);
uint32_t cm_gguf_tensor_ggml_type(const cm_gguf *g, size_t i);
const cm_tensor *cm_gguf_find_tensor(const cm_gguf *g, const char *name); /* NULL if absent */
const char *cm_ggml_type_name(uint32_t ggml_type); /* "F32", "Q8_0", ...; NULL for an unknown type */
/* Block geometry of a ggml type: returns 1 and sets elements/bytes per block if the type is known, else 0. */
int cm_ggml_type_block(uint32_t ggml_type, size_t *block_elems, size_t *block_bytes);

/* Writer (v3, alignment 32). Values are copied when set; tensor data must stay valid until commit. */
typedef struct cm_gguf_writer cm_gguf_writer;
cm_status cm_gguf_writer_open(const char *path, cm_gguf_writer **out);
cm_status cm_gguf_writer_set_u32(cm_gguf_writer *w, const char *key, uint32_t v);
cm_status cm_gguf_writer_set_i32(cm_gguf_writer *w, const char *key, int32_t v);
cm_status cm_gguf_writer_set_f32(cm_gguf_writer *w, const char *key, float v);
cm_status cm_gguf_writer_set_bool(cm_gguf_writer *w, const char *key, bool v);
cm_status cm_gguf_writer_set_str(cm_gguf_writer *w, const char *key, const char *s);
cm_status cm_gguf_writer_set_arr_str(cm_gguf_writer *w, const char *key, const char *const *s,
                                     const size_t *lens, size_t n);
cm_status cm_gguf_writer_set_arr(cm_gguf_writer *w, const char *key, cm_gguf_type elem_type, const void *data,
                                 size_t n);
/* Any non-string, non-array type; `value` points to the matching C type (uint8_t ... double, bool). */
cm_status cm_gguf_writer_set_scalar(cm_gguf_writer *w, const char *key, cm_gguf_type type, const void *value);
/* Copy KV `i` of a reader verbatim (any type, arrays included). */
cm_status cm_gguf_writer_copy_kv(cm_gguf_writer *w, const cm_gguf *g, size_t i);
/* Setting general.alignment (UINT32, a power of two) changes the writer's alignment; otherwise it is 32 and
 * the key is not written (llama.cpp's default). */
/* `shape` row-major (written reversed as ne[]); dtype F32/F16/BF16. */
cm_status cm_gguf_writer_add_tensor(cm_gguf_writer *w, const char *name, cm_dtype dtype, int ndim,
                                    const int64_t *shape, const void *data, size_t nbytes);
cm_status cm_gguf_writer_add_tensor_owned(cm_gguf_writer *w, const char *name, cm_dtype dtype, int ndim,
                                          const int64_t *shape, void *data, size_t nbytes);
/* Any ggml type camelid knows the block size of (quantized blocks copied as they are). */
cm_status cm_gguf_writer_add_tensor_ggml(cm_gguf_writer *w, const char *name, uint32_t ggml_type, int ndim,
                                         const int64_t *shape, const void *data, size_t nbytes);
cm_status cm_gguf_writer_commit(cm_gguf_writer *w); /* frees w */
void cm_gguf_writer_abort(cm_gguf_writer *w);

#endif
