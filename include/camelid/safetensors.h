/* safetensors (FACTS 1.1): a hardened reader over a memory map (tensors are zero-copy views into it) and a
 * writer that produces files every other reader accepts (format=pt metadata, header padded to 8, tensors
 * contiguous from offset 0 in header order, written atomically). */
#ifndef CAMELID_SAFETENSORS_H
#define CAMELID_SAFETENSORS_H

#include "camelid/file.h"
#include "camelid/tensor.h"

typedef struct cm_safetensors cm_safetensors;

/* Map and validate `path`. Every problem is an error naming the file and what is wrong. */
cm_status cm_safetensors_open(const char *path, cm_safetensors **out);
/* Validate a buffer that stays owned by the caller (and must outlive the result); `name` is used in errors.
 * This is what the fuzz target drives. */
cm_status cm_safetensors_parse(const void *data, size_t size, const char *name, cm_safetensors **out);
void cm_safetensors_close(cm_safetensors *st);

size_t cm_safetensors_count(const cm_safetensors *st);
/* Tensors in the order of their data offsets. */
const cm_tensor *cm_safetensors_get(const cm_safetensors *st, size_t i);
const cm_tensor *cm_safetensors_find(const cm_safetensors *st, const char *name); /* NULL if absent */
/* __metadata__ value for `key`, or NULL. */
const char *cm_safetensors_metadata(const cm_safetensors *st, const char *key);
const char *cm_safetensors_path(const cm_safetensors *st);

/* Writer: collect tensors, then commit writes the file atomically. */
typedef struct cm_safetensors_writer cm_safetensors_writer;
cm_status cm_safetensors_writer_open(const char *path, cm_safetensors_writer **out);
cm_status cm_safetensors_writer_set_metadata(cm_safetensors_writer *w, const char *key, const char *value);
/* `data` (nbytes must match dtype x shape) must stay valid until commit. */
cm_status cm_safetensors_writer_add(cm_safetensors_writer *w, const char *name, cm_dtype dtype, int ndim,
                                    const int64_t *shape, const void *data, size_t nbytes);
/* Same, but the writer takes ownership of `data` (malloc'd) and frees it. */
cm_status cm_safetensors_writer_add_owned(cm_safetensors_writer *w, const char *name, cm_dtype dtype,
                                          int ndim, const int64_t *shape, void *data, size_t nbytes);
/* Streaming, for files larger than memory: `header_bytes` (rounded up to a multiple of 8) are reserved in
 * front of the data, which is written as it is made; commit writes the header into the reserve, padded with
 * spaces (an error if it does not fit: reserve generously, ~name length + 128 per tensor). A tensor is declared
 * with stream_begin and its dtype x shape bytes follow in any number of stream_write calls; writer_add and
 * add_owned write a whole tensor at once (the data need not outlive the call). Tensors are stored in the order
 * declared. */
cm_status cm_safetensors_stream_open(const char *path, size_t header_bytes, cm_safetensors_writer **out);
cm_status cm_safetensors_stream_begin(cm_safetensors_writer *w, const char *name, cm_dtype dtype, int ndim,
                                      const int64_t *shape);
cm_status cm_safetensors_stream_write(cm_safetensors_writer *w, const void *data, size_t n);
/* Writes header ("format": "pt" unless set otherwise) and data; frees w in all cases. */
cm_status cm_safetensors_writer_commit(cm_safetensors_writer *w);
void cm_safetensors_writer_abort(cm_safetensors_writer *w);

#endif
