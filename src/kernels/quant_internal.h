/* Internals of the integer matmul path (src/kernels/matmul_int8.c) shared with its SIMD variants
 * (quant_avx2.c, quant_avx512.c). Not a public interface.
 *
 * Activations are quantized to Q8_0 (exactly as cm_quantize_row_q8_0 does) and laid out for SIMD in "chunks"
 * of 64 elements (two Q8_0 blocks; the row is zero-padded to a whole chunk):
 *   qs[64]   the int8 quants, in element order
 *   dx[16]   the block scale (fp16 -> f32) for each group of 4 elements: lanes 0-7 block 2c, 8-15 block 2c+1
 *   corr[16] for weights whose quants are taken with an offset to make them unsigned (Q4_0: q+8, Q6_K: q+32,
 *            Q8_0 on AVX-512: q+128), minus offset times the sum of each group of 4 activation quants; the
 *            integer dot of the unsigned weight quants with the activations, started from corr, is then
 *            exactly the dot of the signed quants.
 * A 32-bit lane of a 512-bit vector holds one group of 4 elements, so dx and corr line up with the int32
 * lanes of vpdpbusd / pmaddubsw+pmaddwd results. */
#ifndef CAMELID_QUANT_INTERNAL_H
#define CAMELID_QUANT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "camelid/dtype.h"
#include "camelid/quant.h"

#define CM_QCHUNK 64

typedef struct cm_qact {
    int n, cols, nchunk; /* tokens, elements per token, chunks per token */
    int corr_shift;      /* corr = -(sum4 << corr_shift); -1: no corr */
    int8_t *qs;          /* [n][nchunk * 64] */
    float *dx;           /* [n][nchunk * 16] */
    int32_t *corr;       /* [n][nchunk * 16], or NULL */
} cm_qact;

/* Quantize tokens [t0, t1) of x [n, cols] into a (scalar reference; the SIMD variants give the same bytes).
 */
void cm_qact_fill_ref(cm_qact *a, const float *x, int t0, int t1);
void cm_qact_fill_avx2(cm_qact *a, const float *x, int t0, int t1);
void cm_qact_fill_avx512(cm_qact *a, const float *x, int t0, int t1);

/* y[t * ldy + r] = dot(W row r, activation t) for r in [r0, r1), every t < a->n. W is Q8_0, Q4_0 or Q6_K with
 * rows of row_bytes. r0 is a multiple of 4 unless r0 = r1. */
void cm_qgemm_avx2(cm_dtype wt, const void *w, size_t row_bytes, int r0, int r1, const cm_qact *a, float *y,
                   size_t ldy);
void cm_qgemm_avx512(cm_dtype wt, const void *w, size_t row_bytes, int r0, int r1, const cm_qact *a, float *y,
                     size_t ldy);

#endif
