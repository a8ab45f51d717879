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

/* Prefill panels (AVX-512 VNNI, Q8_0 and Q4_0 weights, batches of CM_QPANEL_TOKENS tokens or more). The tile
 * above puts the 64 elements of a chunk in the lanes of one vector, so every (row, token) pair pays one int
 * -> float conversion, scale multiply and FMA per chunk: at 128 tokens those, not vpdpbusd, bound it. The
 * panel kernel instead puts 16 weight rows in the lanes (4 consecutive elements of each row per 32-bit lane)
 * and broadcasts 4 activation bytes of one token, so a lane accumulates a whole 32-element block of one (row,
 * token) pair in int32, and the conversion, the scale multiply and the FMA are paid once per block for 16
 * pairs. Weights are repacked into that layout 16 rows at a time into a per-thread scratch panel (in cache,
 * reused by every token), the activations once per matmul into groups of 8 tokens:
 *   weight panel, per block b:  float dw[16] (row scales), then 64-byte vectors k (QV = 8 for Q8_0: row i's
 *       quants 4k..4k+3 + 128 in lane i; QV = 4 for Q4_0: row i's packed bytes 4k..4k+3 in lane i, whose low
 *       nibbles are elements 4k..4k+3 and high nibbles elements 16+4k..16+4k+3, both + 8)
 *   activation group g, per block b (CM_QPANEL_XBYTES): int8 qs[8][32], float dx[8], int32 corr[8] where
 *       corr = -(offset x the block's sum of quants) removes the weights' +128 / +8.
 * A (row, token) value depends on neither the tile position nor the thread count (whole panels per thread),
 * only on whether the batch takes this path. */
#define CM_QPANEL_ROWS 16
#define CM_QPANEL_TOKENS 8
#define CM_QPANEL_XBYTES 320
/* Bytes of one weight panel of `cols` elements (cols a multiple of 32). */
size_t cm_qpanel_bytes(cm_dtype wt, int cols);
/* Rows [r0, r1) (r0 a multiple of 16) against every token of the group layout xp (a->n tokens, padded to
 * whole groups with zeros); scratch holds cm_qpanel_bytes. Q8_0 or Q4_0 only. */
void cm_qgemm_panels_avx512(cm_dtype wt, const void *w, size_t row_bytes, int r0, int r1, const cm_qact *a,
                            const uint8_t *xp, float *y, size_t ldy, void *scratch);

/* The same panels at 256 bits for AVX2 without AVX-512 VNNI (quant_avx2_panel.c): 8 rows per panel (one row
 * per int32 lane), the same activation groups, pmaddubsw + pmaddwd instead of vpdpbusd. Weight panel, per
 * block: float dw[8], then 8 vectors of 32 bytes (vector k: elements 4k..4k+3 of row i in lane i; Q8_0 the
 * signed quants, Q4_0 the nibbles q + 8 already unpacked). Q8_0 needs no corr here (the sign trick); the
 * group's corr of a Q8_0 batch is then 0. Same float steps as the AVX-512 panel, so the same bytes. */
#define CM_QPANEL2_ROWS 8
size_t cm_qpanel_bytes_avx2(cm_dtype wt, int cols);
void cm_qgemm_panels_avx2(cm_dtype wt, const void *w, size_t row_bytes, int r0, int r1, const cm_qact *a,
                          const uint8_t *xp, float *y, size_t ldy, void *scratch);

#endif
