/* Private: the SIMD NF4 matmuls (src/kernels/nf4_simd.c) behind cm_matmul_nf4 (src/kernels/nf4.c). */
#ifndef CAMELID_KERNELS_NF4_INTERNAL_H
#define CAMELID_KERNELS_NF4_INTERNAL_H

#include <stdbool.h>

#include "camelid/isa.h"
#include "camelid/nf4.h"

/* Whether the SIMD kernels take W (with every weight of the call `cols` wide): rows a multiple of 64 values
 * (whole groups of 32 bytes) and blocks a multiple of 64 (a 64-value group never straddles two blocks). */
bool cm_nf4_simd_ok(const cm_nf4_weight *w, int64_t cols);
/* y[k] = x W[k]^T for count weights of one width on isa (AVX2 or AVX-512): 0, or -1 when out of memory (the
 * caller falls back; nothing was written). */
int cm_nf4_matmul_simd(float *const *y, const float *x, int n, const cm_nf4_weight *const *w, int count,
                       cm_pool *pool, cm_isa isa);

/* The transpose product (cm_matmul_nf4_t) on isa: 0, or -1 when out of memory (nothing written). */
int cm_nf4_matmul_t_simd(float *dx, const float *dy, int n, const cm_nf4_weight *w, bool accumulate, cm_pool *pool,
                         cm_isa isa);

#endif
