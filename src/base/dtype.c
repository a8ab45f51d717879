#include "camelid/dtype.h"

#include <strings.h>

static const struct {
    const char *name;
    size_t bytes;
    size_t elems; /* per block */
} dtype_info[CM_DTYPE_COUNT] = {
    [CM_DTYPE_F32] = {"F32", 4, 1},   [CM_DTYPE_F16] = {"F16", 2, 1}, [CM_DTYPE_BF16] = {"BF16", 2, 1},
    [CM_DTYPE_F64] = {"F64", 8, 1},   [CM_DTYPE_U8] = {"U8", 1, 1},   [CM_DTYPE_I8] = {"I8", 1, 1},
    [CM_DTYPE_I16] = {"I16", 2, 1},   [CM_DTYPE_U16] = {"U16", 2, 1}, [CM_DTYPE_I32] = {"I32", 4, 1},
    [CM_DTYPE_U32] = {"U32", 4, 1},   [CM_DTYPE_I64] = {"I64", 8, 1}, [CM_DTYPE_U64] = {"U64", 8, 1},
    [CM_DTYPE_BOOL] = {"BOOL", 1, 1},
    [CM_DTYPE_Q8_0] = {"Q8_0", 34, 32},
    [CM_DTYPE_Q4_0] = {"Q4_0", 18, 32},
    [CM_DTYPE_Q6_K] = {"Q6_K", 210, 256},
    /* the packed codes only (64 per 32 bytes); the f32 block scales live beside them (camelid/nf4.h) */
    [CM_DTYPE_NF4] = {"NF4", 32, 64},
};

size_t cm_dtype_block_elems(cm_dtype t) {
    if ((unsigned)t >= CM_DTYPE_COUNT) return 0;
    return dtype_info[t].elems;
}

size_t cm_dtype_block_bytes(cm_dtype t) {
    return (unsigned)t < CM_DTYPE_COUNT ? dtype_info[t].bytes : 0;
}

cm_status cm_dtype_nbytes(cm_dtype t, uint64_t n, size_t *out) {
    size_t be = cm_dtype_block_elems(t), bb = cm_dtype_block_bytes(t);
    if (!be) return cm_error(CM_ERR_FORMAT, "unknown dtype %d", (int)t);
    if (n % be)
        return cm_error(CM_ERR_FORMAT, "%llu elements is not a multiple of the %s block of %zu",
                        (unsigned long long)n, cm_dtype_name(t), be);
    if ((uint64_t)(size_t)n != n || cm_mul_size((size_t)(n / be), bb, out))
        return cm_error(CM_ERR_FORMAT, "tensor of %llu %s elements is too large", (unsigned long long)n,
                        cm_dtype_name(t));
    return CM_OK;
}

const char *cm_dtype_name(cm_dtype t) {
    return (unsigned)t < CM_DTYPE_COUNT ? dtype_info[t].name : "?";
}

int cm_dtype_from_name(const char *name, cm_dtype *out) {
    /* plain element types only: safetensors has no block types */
    for (int i = 0; i <= CM_DTYPE_BOOL; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            *out = (cm_dtype)i;
            return 0;
        }
    }
    return -1;
}

int cm_dtype_is_float(cm_dtype t) {
    return t == CM_DTYPE_F32 || t == CM_DTYPE_F16 || t == CM_DTYPE_BF16;
}

void cm_convert_to_f32(cm_dtype t, const void *src, float *dst, size_t n) {
    const uint16_t *h = src;
    switch (t) {
    case CM_DTYPE_F32:
        memcpy(dst, src, n * 4);
        break;
    case CM_DTYPE_F16:
        for (size_t i = 0; i < n; i++) dst[i] = cm_f16_to_f32(h[i]);
        break;
    case CM_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = cm_bf16_to_f32(h[i]);
        break;
    default:
        memset(dst, 0, n * 4);
        break;
    }
}

void cm_convert_from_f32(cm_dtype t, const float *src, void *dst, size_t n) {
    uint16_t *h = dst;
    switch (t) {
    case CM_DTYPE_F32:
        memcpy(dst, src, n * 4);
        break;
    case CM_DTYPE_F16:
        for (size_t i = 0; i < n; i++) h[i] = cm_f32_to_f16(src[i]);
        break;
    case CM_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) h[i] = cm_f32_to_bf16(src[i]);
        break;
    default:
        break;
    }
}

int cm_dtype_is_quant(cm_dtype t) { return t == CM_DTYPE_Q8_0 || t == CM_DTYPE_Q4_0 || t == CM_DTYPE_Q6_K; }
