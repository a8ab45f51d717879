/* NF4: QLoRA's NormalFloat-4 with double quantization, exactly as bitsandbytes stores it (FACTS 4.2), and the
 * matmuls that run it on a CPU.
 *
 * Format. A weight W [rows, cols] is flattened row-major and cut into blocks of `blocksize` (64) values; the
 * last block may be short. Per block absmax = max|w|; each value w is scaled by the reciprocal,
 * s = clamp(w * (1 / max(absmax, 1e-38)), -1, 1), and coded as the nearest of the 16 NF4 values, a value on a
 * midpoint going to the lower code. Two codes per byte, the even flat index in the HIGH nibble; an odd count
 * pads the last low nibble with the code of 0.0. Dequantization is code[q] * absmax in fp32.
 * Double quantization stores the absmax array itself in 8 bits: offset = mean(absmax); absmax - offset is
 * quantized in blocks of 256 with the same absmax scaling to the nearest value of the signed 8-bit dynamic map
 * (ties to the lower code), and dequantized as map[q] * nested_absmax[i / 256] + offset, in fp32.
 *
 * In memory a weight is a cm_nf4_weight: the packed codes and one f32 scale per block (double quantization
 * already undone), which is what the kernels read. The kernels never build a dequantized W: decode and prefill
 * look the 16 codes up in a register (AVX-512 vpermps, AVX2 two vpermps and a blend) and apply the scale per
 * block; a scalar reference of each is here for tests.
 *
 * Kernels know nothing of models; reading and writing bitsandbytes safetensors folders is in
 * src/format/nf4_hf.c (include/camelid/quantize.h). */
#ifndef CAMELID_NF4_H
#define CAMELID_NF4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/pool.h"
#include "camelid/status.h"

#define CM_NF4_BLOCKSIZE 64         /* what camelid writes and bitsandbytes defaults to */
#define CM_NF4_NESTED_BLOCKSIZE 256 /* blocks of the double quantization */

/* The 16 NF4 values, code 0..15 (bitsandbytes get_4bit_type("nf4")). */
extern const float cm_nf4_code[16];
/* bitsandbytes' signed 8-bit dynamic map (create_dynamic_map(signed=True, max_exponent_bits=7,
 * total_bits=8)): 256 sorted float32 values, -0.99296874 .. 1.0, one exact 0.0. */
extern const float cm_nf4_dynamic_map[256];

/* Block sizes bitsandbytes accepts for 4-bit quantization: 32, 64, ..., 4096. */
bool cm_nf4_blocksize_valid(int64_t blocksize);
/* Number of blocks of `blocksize` over n values (the last one may be short). */
size_t cm_nf4_n_blocks(size_t n, int blocksize);

/* The code of a scaled value in [-1, 1]: the nearest NF4 value, a midpoint going to the lower code. */
uint8_t cm_nf4_quantize_scaled(float s);
/* The code of a scaled value in the 256-value sorted map: nearest value, a midpoint to the lower code. */
uint8_t cm_nf4_quantize_map(const float map[256], float s);

/* Quantize n flat values: absmax[cm_nf4_n_blocks(n, blocksize)], packed[(n + 1) / 2]. Blocks are
 * independent: a tensor can be quantized a slice at a time when every slice but the last starts and ends on a
 * block boundary (then at packed + first / 2 and absmax + first / blocksize). */
void cm_nf4_quantize(const float *x, size_t n, int blocksize, uint8_t *packed, float *absmax);
/* Only the block absmax values of cm_nf4_quantize (a first pass, when the scales must be known before the
 * codes are written). */
void cm_nf4_absmax(const float *x, size_t n, int blocksize, float *absmax);
/* out[i] = code[q_i] * absmax[i / blocksize] for the n values from flat index `first` of a packed tensor. */
void cm_nf4_dequantize(const uint8_t *packed, const float *absmax, int blocksize, size_t first, size_t n,
                       float *out);

/* Double quantization of nb block scales: q[nb], nested_absmax[cm_nf4_n_blocks(nb, 256)], *offset. */
void cm_nf4_double_quant(const float *absmax, size_t nb, uint8_t *q, float *nested_absmax, float *offset);
/* absmax[i] = map[q[i]] * nested_absmax[i / nested_blocksize] + offset (two fp32 roundings, as
 * bitsandbytes: the product, then the sum). */
void cm_nf4_double_dequant(const uint8_t *q, const float *nested_absmax, const float map[256], float offset,
                           size_t nb, int nested_blocksize, float *absmax);

/* A weight W [rows, cols] in NF4 as the kernels read it. */
typedef struct cm_nf4_weight {
    int64_t rows, cols;
    int blocksize;
    const uint8_t *packed; /* (rows * cols + 1) / 2 bytes */
    const float *absmax;   /* cm_nf4_n_blocks(rows * cols, blocksize) scales */
} cm_nf4_weight;

/* Quantize an f32 matrix in memory (for QLoRA over a non-NF4 base, layer by layer): blocks of 64, and with
 * `double_quant` the scales go through the double quantization, so the weight is exactly what a round trip
 * through a bitsandbytes file gives. One allocation: free with cm_nf4_weight_free. */
cm_status cm_nf4_weight_quantize(const float *w, int64_t rows, int64_t cols, bool double_quant,
                                 cm_nf4_weight **out);
void cm_nf4_weight_free(cm_nf4_weight *w);

/* Row r of W as f32 [cols]. */
void cm_nf4_row_to_f32(const cm_nf4_weight *w, int64_t r, float *dst);
/* Bytes the kernels read for W: the packed codes and the f32 scales. */
size_t cm_nf4_weight_bytes(const cm_nf4_weight *w);

/* (a) y[t, r] = sum_c x[t, c] W[r, c] for t < n: decode (n = 1..5: matrix-vector, each weight read once per
 * token group) and prefill (GEMM over panels of tokens). Rows are split across the pool (may be NULL).
 * cm_matmul(..., CM_DTYPE_NF4, ...) comes here. */
void cm_matmul_nf4(float *y, const float *x, int n, const cm_nf4_weight *w, cm_pool *pool);
/* count weights of the same width against the same x in one pool run (q/k/v, gate/up). */
void cm_matmul_nf4_multi(float *const *y, const float *x, int n, const cm_nf4_weight *const *w, int count,
                         cm_pool *pool);
/* (b) The transpose product, the backward of (a) for the input: dx[t, c] (+)= sum_r dy[t, r] W[r, c], t < n,
 * dx [n, cols], dy [n, rows]; `accumulate` adds to dx instead of overwriting it. Columns are split across the
 * pool. No weight gradient: the base is frozen (FACTS 4.2). */
void cm_matmul_nf4_t(float *dx, const float *dy, int n, const cm_nf4_weight *w, bool accumulate,
                     cm_pool *pool);
/* Plain single-threaded references of (a) and (b) (f64 sums of the dequantized weights). */
void cm_matmul_nf4_ref(float *y, const float *x, int n, const cm_nf4_weight *w);
void cm_matmul_nf4_t_ref(float *dx, const float *dy, int n, const cm_nf4_weight *w, bool accumulate);

#endif
