/* Private: the SIMD variants of the float kernels (src/kernels/gemm_f32.c, simd_ops.c), one per cm_isa path.
 * kernels.c chooses among them with cm_isa_active() and keeps the plain-C references. */
#ifndef CAMELID_KERNELS_SIMD_H
#define CAMELID_KERNELS_SIMD_H

#include "camelid/dtype.h"
#include "camelid/isa.h"
#include "camelid/pool.h"

/* Whether cm_gemm_float can run wtype on `isa` (F32, F16, BF16 and Q6_K on AVX2 / AVX-512; never scalar). */
int cm_gemm_float_supported(cm_isa isa, cm_dtype wtype);
/* cm_matmul's float path on `isa`: y[t, r] = sum_c x[t, c] * W[r, c]. Every row's value depends on n and the
 * path, never on the thread count: rows are split across threads in whole rows, each dot product whole.
 * Batches of a few tokens stream W row by row (GEMV); larger batches pack x into panels of tokens and run a
 * register-blocked kernel (GEMM). Returns 0, or -1 (unsupported, or no memory for the panels: the caller
 * falls back to the reference). */
int cm_gemm_float(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols,
                  cm_pool *pool, cm_isa isa);
/* cm_gemm_float of count (<= 4) F32/F16/BF16 weights of the same width against the same few tokens (the GEMV
 * case) in one pool run: the same values as one call per weight. -1: not that case (nothing done). */
int cm_gemv_float_multi(float *const *y, const float *x, int n, const void *const *w, cm_dtype wtype,
                        const int *rows, int cols, int count, cm_pool *pool, cm_isa isa);

/* Vector variants of the small kernels (same contracts as kernels.h). */
float cm_dot_f32_avx2(const float *a, const float *b, int n);
float cm_dot_f32_avx512(const float *a, const float *b, int n);
/* y[i] += a * x[i] */
void cm_axpy_f32_avx2(float *y, float a, const float *x, int n);
void cm_axpy_f32_avx512(float *y, float a, const float *x, int n);
void cm_softmax_avx2(float *x, int n);
void cm_softmax_avx512(float *x, int n);
void cm_swiglu_avx2(float *a, const float *b, int n);
void cm_swiglu_avx512(float *a, const float *b, int n);

#endif
