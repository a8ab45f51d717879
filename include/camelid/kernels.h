/* Numeric kernels over plain arrays. Each has a plain-C reference; faster variants must agree with it
 * within stated tolerances (tests/unit/test_kernels.c). Kernels know nothing of models. */
#ifndef CAMELID_KERNELS_H
#define CAMELID_KERNELS_H

#include <stddef.h>

#include "camelid/dtype.h"
#include "camelid/pool.h"

/* y[t, r] = sum_c x[t, c] * W[r, c] for t < n, r < rows: a batch of n activations times W^T, W [rows, cols]
 * in dtype F32/F16/BF16/Q8_0/Q4_0/Q6_K, or NF4 (then w is a const cm_nf4_weight *: cm_matmul_nf4, nf4.h).
 * For Q8_0 and Q4_0 the activations are quantized to Q8_0 first and the dot products are integer, as ggml
 * does. Rows are split across the pool's threads (pool may be NULL). */
void cm_matmul(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols,
               cm_pool *pool);
/* cm_matmul of count weights W[k] [rows[k], cols], all of type wtype, against the same x: y[k] = x W[k]^T,
 * the same values as count cm_matmul calls; the int8 path quantizes x once and runs one pool job for them
 * all. */
void cm_matmul_multi(float *const *y, const float *x, int n, const void *const *w, cm_dtype wtype,
                     const int *rows, int cols, int count, cm_pool *pool);
/* Weights whose matmul runs in integers against Q8_0 activations (Q8_0, Q4_0): src/kernels/matmul_int8.c. */
int cm_matmul_is_int8(cm_dtype t);
void cm_matmul_int8(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols,
                    cm_pool *pool);
/* Activations [n, cols] quantized to Q8_0 rows (malloc'd, caller frees; NULL without memory). */
void *cm_quantize_activations_q8_0(const float *x, int n, int cols);

/* One row of n elements of any row-major weight dtype (not NF4: cm_weight_row_to_f32 in model.h) as f32;
 * bytes of such a row. */
void cm_row_to_f32(cm_dtype t, const void *src, float *dst, size_t n);
size_t cm_row_bytes(cm_dtype t, size_t n);
/* The plain single-threaded reference of cm_matmul (f64 accumulation over the same quantized values). */
void cm_matmul_ref(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols);

/* The vector kernels below as function pointers for the active ISA path (cm_isa_active): fetch once before a
 * loop that calls them many times (the public functions look the path up on every call). */
typedef struct cm_vec_ops {
    float (*dot)(const float *a, const float *b, int n);
    void (*axpy)(float *y, float a, const float *x, int n);
    void (*softmax)(float *x, int n);
    void (*swiglu)(float *a, const float *b, int n);
} cm_vec_ops;
void cm_vec_ops_get(cm_vec_ops *ops);

/* out = x * rsqrt(mean(x^2) + eps) * weight, over n elements (out may alias x). */
void cm_rmsnorm(float *out, const float *x, const float *weight, int n, float eps);
/* In-place softmax over n elements (n >= 1). */
void cm_softmax(float *x, int n);
/* a[i] = silu(a[i]) * b[i] */
void cm_swiglu(float *a, const float *b, int n);
float cm_dot_f32(const float *a, const float *b, int n);
/* y[i] += a * x[i] */
void cm_axpy_f32(float *y, float a, const float *x, int n);

#endif
