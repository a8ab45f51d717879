/* Element types of tensors, their sizes and names, and fp16/bf16 conversion. Block-quantized types
 * (added by the quantization work) have a block of `block_elems` elements stored in `block_bytes`. */
#ifndef CAMELID_DTYPE_H
#define CAMELID_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "camelid/status.h"

typedef enum {
    CM_DTYPE_F32 = 0,
    CM_DTYPE_F16,
    CM_DTYPE_BF16,
    CM_DTYPE_F64,
    CM_DTYPE_U8,
    CM_DTYPE_I8,
    CM_DTYPE_I16,
    CM_DTYPE_U16,
    CM_DTYPE_I32,
    CM_DTYPE_U32,
    CM_DTYPE_I64,
    CM_DTYPE_U64,
    CM_DTYPE_BOOL,
    /* ggml block-quantized weights (FACTS 4.1), byte-compatible with GGUF */
    CM_DTYPE_Q8_0, /* 32 elements: fp16 d, int8 qs[32] */
    CM_DTYPE_Q4_0, /* 32 elements: fp16 d, 16 bytes of nibbles */
    CM_DTYPE_Q6_K, /* 256 elements: ql[128], qh[64], int8 scales[16], fp16 d */
    /* bitsandbytes NF4 (FACTS 4.2): 4-bit codes in blocks over the flattened weight, the block scales stored
     * apart. A weight of this type is a `const cm_nf4_weight *` (camelid/nf4.h), not a row-major array: use
     * cm_weight_row_to_f32 / cm_weight_nbytes (model.h), never row arithmetic. */
    CM_DTYPE_NF4,
    CM_DTYPE_COUNT
} cm_dtype;

/* Elements per block and bytes per block (1 and the element size for plain types). */
size_t cm_dtype_block_elems(cm_dtype t);
size_t cm_dtype_block_bytes(cm_dtype t);
/* Bytes needed for `n` elements; fails (overflow, or n not a multiple of the block) with CM_ERR_FORMAT. */
cm_status cm_dtype_nbytes(cm_dtype t, uint64_t n, size_t *out);
/* safetensors-style names: "F32", "F16", "BF16", "U8", ... */
const char *cm_dtype_name(cm_dtype t);
/* Parse a safetensors dtype name; returns 0 on success. */
int cm_dtype_from_name(const char *name, cm_dtype *out);
/* F32, F16 or BF16 */
int cm_dtype_is_float(cm_dtype t);
/* One of the ggml block-quantized types (Q8_0, Q4_0, Q6_K: rows of self-contained blocks); not NF4 */
int cm_dtype_is_quant(cm_dtype t);

static inline float cm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ff;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest even, as torch and numpy do. */
static inline uint16_t cm_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffff;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 | ((absx >> 13) & 0x3ff) : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (absx < 0x38800000u) {                                  /* result is subnormal or zero */
        if (absx < 0x33000000u) return (uint16_t)sign;         /* < 2^-25: rounds to 0 */
        uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = absx + 0xfff + ((absx >> 13) & 1) - (uint32_t)((127 - 15) << 23);
    return (uint16_t)(sign | (r >> 13));
}

static inline float cm_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t cm_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* Convert `n` elements of a float type (F32/F16/BF16) to f32 / from f32 (quantized rows: cm_row_to_f32 in
 * kernels.h). */
void cm_convert_to_f32(cm_dtype t, const void *src, float *dst, size_t n);
void cm_convert_from_f32(cm_dtype t, const float *src, void *dst, size_t n);

#endif
