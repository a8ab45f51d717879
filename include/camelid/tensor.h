/* A tensor view: a name, an element type, a row-major shape (outermost dimension first, as PyTorch and
 * safetensors write it; GGUF's ne[] is reversed into this order) and a pointer to its bytes. A view never
 * owns its data: the file or model it came from does. */
#ifndef CAMELID_TENSOR_H
#define CAMELID_TENSOR_H

#include <stdint.h>

#include "camelid/dtype.h"

#define CM_MAX_DIMS 8

typedef struct cm_tensor {
    const char *name;
    cm_dtype dtype;
    int ndim;
    int64_t shape[CM_MAX_DIMS];
    const void *data;
    size_t nbytes;
} cm_tensor;

static inline int64_t cm_tensor_numel(const cm_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

#endif
