/* ggml's block-quantized formats (FACTS 4.1), byte-compatible with GGUF: Q8_0, Q4_0 and Q6_K. Quantization
 * follows ggml's reference code exactly (the reciprocal of d, the same rounding), so the bytes equal
 * llama-quantize's. These are the plain-C references; faster paths must agree with them. */
#ifndef CAMELID_QUANT_H
#define CAMELID_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "camelid/dtype.h"

#define CM_QK8_0 32
#define CM_QK4_0 32
#define CM_QK_K 256

typedef struct {
    uint16_t d; /* fp16 scale */
    int8_t qs[CM_QK8_0];
} cm_block_q8_0;

typedef struct {
    uint16_t d;
    uint8_t qs[CM_QK4_0 / 2]; /* element j: low nibble of byte j; element j + 16: its high nibble */
} cm_block_q4_0;

typedef struct {
    uint8_t ql[CM_QK_K / 2];
    uint8_t qh[CM_QK_K / 4];
    int8_t scales[CM_QK_K / 16];
    uint16_t d;
} cm_block_q6_K;

_Static_assert(sizeof(cm_block_q8_0) == 34, "Q8_0 block is 34 bytes");
_Static_assert(sizeof(cm_block_q4_0) == 18, "Q4_0 block is 18 bytes");
_Static_assert(sizeof(cm_block_q6_K) == 210, "Q6_K block is 210 bytes");

/* n must be a multiple of the block size. */
void cm_quantize_row_q8_0(const float *x, cm_block_q8_0 *y, size_t n);
void cm_quantize_row_q4_0(const float *x, cm_block_q4_0 *y, size_t n);
void cm_dequantize_row_q8_0(const cm_block_q8_0 *x, float *y, size_t n);
void cm_dequantize_row_q4_0(const cm_block_q4_0 *x, float *y, size_t n);
void cm_dequantize_row_q6_K(const cm_block_q6_K *x, float *y, size_t n);
/* Q6_K as ggml's quantize_row_q6_K_ref (no importance weights): per 16 elements a least-squares scale search,
 * int8 sub-block scales under an fp16 super-scale. Byte-identical to ggml's (same float operations). */
void cm_quantize_row_q6_K(const float *x, cm_block_q6_K *y, size_t n);
/* Quantize `n` elements (a multiple of the type's block) of a row to Q8_0, Q4_0 or Q6_K; 0 on success, -1 for
 * another type. */
int cm_quantize_row(cm_dtype t, const float *x, void *y, size_t n);

/* Dot products of one weight row with activations quantized to Q8_0 (n elements), reference versions. */
float cm_vec_dot_q8_0_q8_0_ref(const cm_block_q8_0 *w, const cm_block_q8_0 *x, size_t n);
float cm_vec_dot_q4_0_q8_0_ref(const cm_block_q4_0 *w, const cm_block_q8_0 *x, size_t n);
/* Q6_K weights against Q8_0 activations (n a multiple of 256): per 32 elements the integer sum of
 * scale x q6 x q8 over its two 16-element sub-blocks, times d * d_x. */
float cm_vec_dot_q6_K_q8_0_ref(const cm_block_q6_K *w, const cm_block_q8_0 *x, size_t n);

#endif
