/* The float matmul y[t, r] = sum_c x[t, c] * W[r, c] on AVX2 and AVX-512, W in F32, F16, BF16 (converted on
 * the fly) or Q6_K (dequantized a block of rows at a time).
 *
 * GEMV (a few tokens, decode): each thread streams its band of W rows four at a time, every row read once
 * from memory, F16/BF16 widened in registers. Per row: two vector accumulators over the columns, then a
 * horizontal sum; the four-row and one-row kernels do exactly the same operations per row.
 *
 * GEMM (batches): x is packed into panels of P tokens, k-major ([k][P], P = 32 on AVX-512, 16 on AVX2), so
 * one vector holds one column of up to 16 (8) tokens. The micro-kernel keeps an R x P tile of y in registers
 * (12 x 32 on AVX-512: 24 zmm; 6 x 16 on AVX2: 12 ymm) and, per column k, loads the panel's column and
 * broadcasts each of the R weights W[r, k] from memory: every y[t, r] is one lane summing its products in
 * column order, the same whichever block, panel or thread it falls in. */
#include "simd.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define T_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))

/* Batches of at least this many tokens take the GEMM path. */
#define GEMM_MIN_TOKENS 6

int cm_gemm_float_supported(cm_isa isa, cm_dtype t) {
    if (isa != CM_ISA_AVX2 && isa != CM_ISA_AVX512) return 0;
    return t == CM_DTYPE_F32 || t == CM_DTYPE_F16 || t == CM_DTYPE_BF16 || t == CM_DTYPE_Q6_K;
}

typedef struct {
    float *y;
    const float *x;
    float *xp;      /* packed panels, GEMM only */
    float *scratch; /* per thread: a block of converted rows (GEMM) or one row (GEMV of Q6_K) */
    size_t scratch_floats;
    float *part; /* per thread: the partial tiles of a band when the columns are chunked (AVX-512 GEMM) */
    size_t part_floats;
    int kc; /* columns per chunk */
    int n, rows, cols;
    const void *w;
    cm_dtype wt;
    size_t row_bytes;
    int panel; /* P */
} gemm_job;

/* ---------------------------------------------------------------- packing x (shared by both paths) */

/* Panel p holds tokens p*P .. p*P+P-1 as xp[(p * cols + k) * P + j] = x[p*P + j][k], zero past n. */
static void pack_worker(void *arg, int thread, int n_threads) {
    const gemm_job *j = arg;
    int P = j->panel, panels = (j->n + P - 1) / P, p0, p1;
    cm_split_range(panels, n_threads, thread, &p0, &p1);
    for (int p = p0; p < p1; p++) {
        int t0 = p * P, valid = j->n - t0 < P ? j->n - t0 : P;
        float *dst = j->xp + (size_t)p * j->cols * P;
        const float *src = j->x + (size_t)t0 * j->cols;
        /* 16 columns at a time: the 16 x P destination block stays in L1 while the tokens' rows stream */
        for (int k0 = 0; k0 < j->cols; k0 += 16) {
            int kn = j->cols - k0 < 16 ? j->cols - k0 : 16;
            float *d = dst + (size_t)k0 * P;
            for (int t = 0; t < valid; t++) {
                const float *s = src + (size_t)t * j->cols + k0;
                for (int k = 0; k < kn; k++) d[k * P + t] = s[k];
            }
            for (int k = 0; k < kn; k++)
                for (int t = valid; t < P; t++) d[k * P + t] = 0.0f;
        }
    }
}

/* The rows [r0, r1) of a thread: whole blocks of `block` rows; the last thread also takes the leftover rows.
 */
static void row_band(int rows, int block, int thread, int n_threads, int *r0, int *r1) {
    int b0, b1;
    cm_split_range(rows / block, n_threads, thread, &b0, &b1);
    *r0 = b0 * block;
    *r1 = thread == n_threads - 1 ? rows : b1 * block;
}

/* Scatter an R x P tile (row-major, stride P) into y[t][r]. */
static void store_tile(const gemm_job *j, const float *tile, int P, int R, int r0, int t0, int valid) {
    for (int t = 0; t < valid; t++) {
        float *dst = j->y + (size_t)(t0 + t) * j->rows + r0;
        for (int i = 0; i < R; i++) dst[i] = tile[i * P + t];
    }
}

/* ================================================================ AVX-512 */

T_AVX512 INLINE __m512 load_w512(const void *row, int k, cm_dtype wt) {
    if (wt == CM_DTYPE_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + k)));
    if (wt == CM_DTYPE_BF16) {
        __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + k)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    }
    return _mm512_loadu_ps((const float *)row + k);
}

T_AVX512 INLINE __m512 load_w512_mask(const void *row, int k, __mmask16 m, cm_dtype wt) {
    if (wt == CM_DTYPE_F16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + k));
    if (wt == CM_DTYPE_BF16) {
        __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + k));
        return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    }
    return _mm512_maskz_loadu_ps(m, (const float *)row + k);
}

/* One row of W (F32/F16/BF16) widened to f32. */
T_AVX512 static void row_to_f32_avx512(const void *row, cm_dtype wt, float *dst, int cols) {
    int k = 0;
    for (; k + 16 <= cols; k += 16) _mm512_storeu_ps(dst + k, load_w512(row, k, wt));
    if (k < cols) {
        __mmask16 m = (__mmask16)((1u << (cols - k)) - 1);
        _mm512_mask_storeu_ps(dst + k, m, load_w512_mask(row, k, m, wt));
    }
}

/* out[i] = W[i] . x for RR rows starting at `row` (row_bytes apart). */
T_AVX512 INLINE void dot_rows512(float *out, const char *row, size_t row_bytes, const float *x, int cols,
                                 const int RR, cm_dtype wt) {
    __m512 a0[4], a1[4];
    for (int i = 0; i < RR; i++) a0[i] = a1[i] = _mm512_setzero_ps();
    int k = 0;
    const int esize = wt == CM_DTYPE_F32 ? 4 : 2;
    for (; k + 32 <= cols; k += 32) {
        __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
        /* the same columns of the rows 4 blocks on (they follow in memory), into L2: one stream ahead */
        for (int i = 0; i < RR; i++)
            for (int b = 0; b < 32 * esize; b += 64)
                _mm_prefetch(row + (size_t)(4 * RR + i) * row_bytes + (size_t)k * esize + b, _MM_HINT_T1);
        for (int i = 0; i < RR; i++) {
            a0[i] = _mm512_fmadd_ps(load_w512(row + i * row_bytes, k, wt), x0, a0[i]);
            a1[i] = _mm512_fmadd_ps(load_w512(row + i * row_bytes, k + 16, wt), x1, a1[i]);
        }
    }
    if (k + 16 <= cols) {
        __m512 x0 = _mm512_loadu_ps(x + k);
        for (int i = 0; i < RR; i++)
            a0[i] = _mm512_fmadd_ps(load_w512(row + i * row_bytes, k, wt), x0, a0[i]);
        k += 16;
    }
    if (k < cols) {
        __mmask16 m = (__mmask16)((1u << (cols - k)) - 1);
        __m512 x1 = _mm512_maskz_loadu_ps(m, x + k);
        for (int i = 0; i < RR; i++)
            a1[i] = _mm512_fmadd_ps(load_w512_mask(row + i * row_bytes, k, m, wt), x1, a1[i]);
    }
    for (int i = 0; i < RR; i++) out[i] = _mm512_reduce_add_ps(_mm512_add_ps(a0[i], a1[i]));
}

T_AVX512 INLINE void gemv_band512(const gemm_job *j, int r0, int r1, cm_dtype wt) {
    const char *w = j->w;
    float out[4];
    int r = r0;
    for (; r + 4 <= r1; r += 4)
        for (int t = 0; t < j->n; t++) {
            dot_rows512(out, w + (size_t)r * j->row_bytes, j->row_bytes, j->x + (size_t)t * j->cols, j->cols,
                        4, wt);
            for (int i = 0; i < 4; i++) j->y[(size_t)t * j->rows + r + i] = out[i];
        }
    for (; r < r1; r++)
        for (int t = 0; t < j->n; t++) {
            dot_rows512(out, w + (size_t)r * j->row_bytes, j->row_bytes, j->x + (size_t)t * j->cols, j->cols,
                        1, wt);
            j->y[(size_t)t * j->rows + r] = out[0];
        }
}

T_AVX512 static void gemv_worker512(void *arg, int thread, int n_threads) {
    const gemm_job *j = arg;
    int r0, r1;
    row_band(j->rows, 4, thread, n_threads, &r0, &r1);
    float *scratch = j->scratch ? j->scratch + (size_t)thread * j->scratch_floats : NULL;
    switch (j->wt) {
    case CM_DTYPE_F32:
        gemv_band512(j, r0, r1, CM_DTYPE_F32);
        break;
    case CM_DTYPE_F16:
        gemv_band512(j, r0, r1, CM_DTYPE_F16);
        break;
    case CM_DTYPE_BF16:
        gemv_band512(j, r0, r1, CM_DTYPE_BF16);
        break;
    default: /* other row formats: one row at a time through the scratch row */
        for (int r = r0; r < r1; r++) {
            cm_row_to_f32(j->wt, (const char *)j->w + (size_t)r * j->row_bytes, scratch, (size_t)j->cols);
            for (int t = 0; t < j->n; t++) {
                float out;
                dot_rows512(&out, (const char *)scratch, 0, j->x + (size_t)t * j->cols, j->cols, 1,
                            CM_DTYPE_F32);
                j->y[(size_t)t * j->rows + r] = out;
            }
        }
        break;
    }
}

/* The R x (16 G) tile of rows w[0..R) (stride ldw floats) against a panel of 32 tokens. */
T_AVX512 INLINE void tile512(float *tile, const float *w, size_t ldw, const float *xp, int cols, int first,
                             const int R, const int G) {
    __m512 acc[12][2];
    for (int i = 0; i < R; i++)
        for (int g = 0; g < G; g++)
            acc[i][g] = first ? _mm512_setzero_ps() : _mm512_load_ps(tile + i * 32 + g * 16);
    for (int k = 0; k < cols; k++) {
        __m512 x0 = _mm512_load_ps(xp + (size_t)k * 32);
        __m512 x1 = G > 1 ? _mm512_load_ps(xp + (size_t)k * 32 + 16) : x0;
        for (int i = 0; i < R; i++) {
            __m512 b = _mm512_set1_ps(w[(size_t)i * ldw + k]);
            acc[i][0] = _mm512_fmadd_ps(b, x0, acc[i][0]);
            if (G > 1) acc[i][1] = _mm512_fmadd_ps(b, x1, acc[i][1]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int g = 0; g < G; g++) _mm512_store_ps(tile + i * 32 + g * 16, acc[i][g]);
}

T_AVX512 static void tile512_12x2(float *t, const float *w, size_t ld, const float *xp, int cols, int first) {
    tile512(t, w, ld, xp, cols, first, 12, 2);
}
T_AVX512 static void tile512_12x1(float *t, const float *w, size_t ld, const float *xp, int cols, int first) {
    tile512(t, w, ld, xp, cols, first, 12, 1);
}
T_AVX512 static void tile512_4x2(float *t, const float *w, size_t ld, const float *xp, int cols, int first) {
    tile512(t, w, ld, xp, cols, first, 4, 2);
}
T_AVX512 static void tile512_4x1(float *t, const float *w, size_t ld, const float *xp, int cols, int first) {
    tile512(t, w, ld, xp, cols, first, 4, 1);
}
T_AVX512 static void tile512_1x2(float *t, const float *w, size_t ld, const float *xp, int cols, int first) {
    tile512(t, w, ld, xp, cols, first, 1, 2);
}
T_AVX512 static void tile512_1x1(float *t, const float *w, size_t ld, const float *xp, int cols, int first) {
    tile512(t, w, ld, xp, cols, first, 1, 1);
}

/* Long rows are cut into chunks of kc columns, all of the band's tiles advancing one chunk at a time, so the
 * chunk of the panels stays in L2; partial tiles wait in j->part. The lanes' sums are the same either way. */
T_AVX512 static void gemm_worker512(void *arg, int thread, int n_threads) {
    const gemm_job *j = arg;
    int r0, r1;
    row_band(j->rows, 12, thread, n_threads, &r0, &r1);
    float *wbuf = j->scratch + (size_t)thread * j->scratch_floats;
    float *part = j->part ? j->part + (size_t)thread * j->part_floats : NULL;
    float tile_local[12 * 32] __attribute__((aligned(64)));
    int panels = (j->n + 31) / 32, esize = j->wt == CM_DTYPE_F32 ? 4 : 2;
    for (int k0 = 0; k0 < j->cols; k0 += j->kc) {
        int kn = j->cols - k0 < j->kc ? j->cols - k0 : j->kc, first = k0 == 0, last = k0 + kn == j->cols;
        size_t ld = (size_t)kn + 16;
        int R;
        for (int r = r0, block = 0; r < r1; r += R, block++) {
            R = r1 - r >= 12 ? 12 : r1 - r >= 4 ? 4 : 1;
            /* the block's rows, widened, at a padded stride (a power-of-two row length would put the R rows'
             * column k in one L1 set) */
            for (int i = 0; i < R; i++) {
                const char *src = (const char *)j->w + (size_t)(r + i) * j->row_bytes;
                if (j->wt == CM_DTYPE_F32 || j->wt == CM_DTYPE_F16 || j->wt == CM_DTYPE_BF16)
                    row_to_f32_avx512(src + (size_t)k0 * esize, j->wt, wbuf + (size_t)i * ld, kn);
                else
                    cm_row_to_f32(j->wt, src, wbuf + (size_t)i * ld, (size_t)j->cols); /* kc = cols */
            }
            /* the next block's rows come from memory while this one computes: prefetch a share per panel */
            int next_rows = r1 - (r + R) < 12 ? r1 - (r + R) : 12;
            size_t seg_bytes = (size_t)kn * esize, lines = (seg_bytes + 63) / 64;
            for (int p = 0; p < panels; p++) {
                int t0 = p * 32, valid = j->n - t0 < 32 ? j->n - t0 : 32;
                const float *xp = j->xp + ((size_t)p * j->cols + k0) * 32;
                for (int i = 0; i < next_rows; i++) {
                    const char *nx =
                        (const char *)j->w + (size_t)(r + R + i) * j->row_bytes + (size_t)k0 * esize;
                    for (size_t l = lines * p / panels; l < lines * (p + 1) / panels; l++)
                        _mm_prefetch(nx + l * 64, _MM_HINT_T1);
                }
                float *tile = part ? part + ((size_t)block * panels + p) * (12 * 32) : tile_local;
                if (valid > 16) {
                    if (R == 12)
                        tile512_12x2(tile, wbuf, ld, xp, kn, first);
                    else if (R == 4)
                        tile512_4x2(tile, wbuf, ld, xp, kn, first);
                    else
                        tile512_1x2(tile, wbuf, ld, xp, kn, first);
                } else {
                    if (R == 12)
                        tile512_12x1(tile, wbuf, ld, xp, kn, first);
                    else if (R == 4)
                        tile512_4x1(tile, wbuf, ld, xp, kn, first);
                    else
                        tile512_1x1(tile, wbuf, ld, xp, kn, first);
                }
                if (last) store_tile(j, tile, 32, R, r, t0, valid);
            }
        }
    }
}

/* ================================================================ AVX2 */

T_AVX2 INLINE __m256 load_w256(const void *row, int k, cm_dtype wt) {
    if (wt == CM_DTYPE_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + k)));
    if (wt == CM_DTYPE_BF16) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + k)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    }
    return _mm256_loadu_ps((const float *)row + k);
}

INLINE float load_w1(const void *row, int k, cm_dtype wt) {
    if (wt == CM_DTYPE_F16) return cm_f16_to_f32(((const uint16_t *)row)[k]);
    if (wt == CM_DTYPE_BF16) {
        uint32_t bits = (uint32_t)((const uint16_t *)row)[k] << 16;
        float f;
        memcpy(&f, &bits, 4);
        return f;
    }
    return ((const float *)row)[k];
}

T_AVX2 INLINE float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

T_AVX2 static void row_to_f32_avx2(const void *row, cm_dtype wt, float *dst, int cols) {
    int k = 0;
    for (; k + 8 <= cols; k += 8) _mm256_storeu_ps(dst + k, load_w256(row, k, wt));
    for (; k < cols; k++) dst[k] = load_w1(row, k, wt);
}

T_AVX2 INLINE void dot_rows256(float *out, const char *row, size_t row_bytes, const float *x, int cols,
                               const int RR, cm_dtype wt) {
    __m256 a0[4], a1[4];
    for (int i = 0; i < RR; i++) a0[i] = a1[i] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 16 <= cols; k += 16) {
        __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
        for (int i = 0; i < RR; i++) {
            a0[i] = _mm256_fmadd_ps(load_w256(row + i * row_bytes, k, wt), x0, a0[i]);
            a1[i] = _mm256_fmadd_ps(load_w256(row + i * row_bytes, k + 8, wt), x1, a1[i]);
        }
    }
    if (k + 8 <= cols) {
        __m256 x0 = _mm256_loadu_ps(x + k);
        for (int i = 0; i < RR; i++)
            a0[i] = _mm256_fmadd_ps(load_w256(row + i * row_bytes, k, wt), x0, a0[i]);
        k += 8;
    }
    for (int i = 0; i < RR; i++) {
        float s = hsum256(_mm256_add_ps(a0[i], a1[i]));
        for (int c = k; c < cols; c++) s += load_w1(row + i * row_bytes, c, wt) * x[c];
        out[i] = s;
    }
}

T_AVX2 INLINE void gemv_band256(const gemm_job *j, int r0, int r1, cm_dtype wt) {
    const char *w = j->w;
    float out[4];
    int r = r0;
    for (; r + 4 <= r1; r += 4)
        for (int t = 0; t < j->n; t++) {
            dot_rows256(out, w + (size_t)r * j->row_bytes, j->row_bytes, j->x + (size_t)t * j->cols, j->cols,
                        4, wt);
            for (int i = 0; i < 4; i++) j->y[(size_t)t * j->rows + r + i] = out[i];
        }
    for (; r < r1; r++)
        for (int t = 0; t < j->n; t++) {
            dot_rows256(out, w + (size_t)r * j->row_bytes, j->row_bytes, j->x + (size_t)t * j->cols, j->cols,
                        1, wt);
            j->y[(size_t)t * j->rows + r] = out[0];
        }
}

T_AVX2 static void gemv_worker256(void *arg, int thread, int n_threads) {
    const gemm_job *j = arg;
    int r0, r1;
    row_band(j->rows, 4, thread, n_threads, &r0, &r1);
    switch (j->wt) {
    case CM_DTYPE_F32:
        gemv_band256(j, r0, r1, CM_DTYPE_F32);
        break;
    case CM_DTYPE_F16:
        gemv_band256(j, r0, r1, CM_DTYPE_F16);
        break;
    case CM_DTYPE_BF16:
        gemv_band256(j, r0, r1, CM_DTYPE_BF16);
        break;
    default: {
        float *scratch = j->scratch + (size_t)thread * j->scratch_floats;
        for (int r = r0; r < r1; r++) {
            cm_row_to_f32(j->wt, (const char *)j->w + (size_t)r * j->row_bytes, scratch, (size_t)j->cols);
            for (int t = 0; t < j->n; t++) {
                float out;
                dot_rows256(&out, (const char *)scratch, 0, j->x + (size_t)t * j->cols, j->cols, 1,
                            CM_DTYPE_F32);
                j->y[(size_t)t * j->rows + r] = out;
            }
        }
        break;
    }
    }
}

/* The R x (8 G) tile against a panel of 16 tokens. */
T_AVX2 INLINE void tile256(float *tile, const float *w, size_t ldw, const float *xp, int cols, const int R,
                           const int G) {
    __m256 acc[6][2];
    for (int i = 0; i < R; i++)
        for (int g = 0; g < G; g++) acc[i][g] = _mm256_setzero_ps();
    for (int k = 0; k < cols; k++) {
        __m256 x0 = _mm256_load_ps(xp + (size_t)k * 16);
        __m256 x1 = G > 1 ? _mm256_load_ps(xp + (size_t)k * 16 + 8) : x0;
        for (int i = 0; i < R; i++) {
            __m256 b = _mm256_broadcast_ss(w + (size_t)i * ldw + k);
            acc[i][0] = _mm256_fmadd_ps(b, x0, acc[i][0]);
            if (G > 1) acc[i][1] = _mm256_fmadd_ps(b, x1, acc[i][1]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int g = 0; g < G; g++) _mm256_store_ps(tile + i * 16 + g * 8, acc[i][g]);
}

T_AVX2 static void tile256_6x2(float *t, const float *w, size_t ld, const float *xp, int cols) {
    tile256(t, w, ld, xp, cols, 6, 2);
}
T_AVX2 static void tile256_6x1(float *t, const float *w, size_t ld, const float *xp, int cols) {
    tile256(t, w, ld, xp, cols, 6, 1);
}
T_AVX2 static void tile256_1x2(float *t, const float *w, size_t ld, const float *xp, int cols) {
    tile256(t, w, ld, xp, cols, 1, 2);
}
T_AVX2 static void tile256_1x1(float *t, const float *w, size_t ld, const float *xp, int cols) {
    tile256(t, w, ld, xp, cols, 1, 1);
}

T_AVX2 static void gemm_worker256(void *arg, int thread, int n_threads) {
    const gemm_job *j = arg;
    int r0, r1;
    row_band(j->rows, 6, thread, n_threads, &r0, &r1);
    float *wbuf = j->scratch + (size_t)thread * j->scratch_floats;
    float tile[6 * 16] __attribute__((aligned(32)));
    size_t ld = (size_t)j->cols + 16;
    int panels = (j->n + 15) / 16;
    for (int r = r0; r < r1;) {
        int R = r1 - r >= 6 ? 6 : 1;
        /* the block's rows, widened, at a padded stride (a power-of-two row length would put the R rows'
         * column k in one L1 set) */
        for (int i = 0; i < R; i++) {
            const char *src = (const char *)j->w + (size_t)(r + i) * j->row_bytes;
            if (j->wt == CM_DTYPE_F32 || j->wt == CM_DTYPE_F16 || j->wt == CM_DTYPE_BF16)
                row_to_f32_avx2(src, j->wt, wbuf + (size_t)i * ld, j->cols);
            else
                cm_row_to_f32(j->wt, src, wbuf + (size_t)i * ld, (size_t)j->cols);
        }
        const float *wb = wbuf;
        for (int p = 0; p < panels; p++) {
            int t0 = p * 16, valid = j->n - t0 < 16 ? j->n - t0 : 16;
            const float *xp = j->xp + (size_t)p * j->cols * 16;
            if (valid > 8) {
                if (R == 6)
                    tile256_6x2(tile, wb, ld, xp, j->cols);
                else
                    tile256_1x2(tile, wb, ld, xp, j->cols);
            } else {
                if (R == 6)
                    tile256_6x1(tile, wb, ld, xp, j->cols);
                else
                    tile256_1x1(tile, wb, ld, xp, j->cols);
            }
            store_tile(j, tile, 16, R, r, t0, valid);
        }
        r += R;
    }
}

/* ================================================================ entry */

/* Several GEMVs against the same x in one pool run (F32/F16/BF16 weights, a few tokens). */
typedef struct {
    gemm_job *jobs;
    int count;
    bool avx512;
} gemv_multi_job;

static void gemv_multi_worker(void *arg, int thread, int n_threads) {
    const gemv_multi_job *m = arg;
    for (int k = 0; k < m->count; k++)
        (m->avx512 ? gemv_worker512 : gemv_worker256)(&m->jobs[k], thread, n_threads);
}

int cm_gemv_float_multi(float *const *y, const float *x, int n, const void *const *w, cm_dtype wtype,
                        const int *rows, int cols, int count, cm_pool *pool, cm_isa isa) {
    if (!cm_gemm_float_supported(isa, wtype) || wtype == CM_DTYPE_Q6_K || n <= 0 || n >= GEMM_MIN_TOKENS ||
        cols <= 0 || count <= 0 || count > 4)
        return -1;
    gemm_job jobs[4];
    for (int k = 0; k < count; k++) {
        if (rows[k] <= 0) return -1;
        jobs[k] = (gemm_job){y[k], x, NULL,    NULL, 0,    NULL,  0,
                             cols, n, rows[k], cols, w[k], wtype, cm_row_bytes(wtype, (size_t)cols),
                             0};
    }
    gemv_multi_job m = {jobs, count, isa == CM_ISA_AVX512};
    cm_pool_run(pool, gemv_multi_worker, &m);
    return 0;
}

int cm_gemm_float(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols,
                  cm_pool *pool, cm_isa isa) {
    if (!cm_gemm_float_supported(isa, wtype) || n <= 0 || rows <= 0 || cols <= 0) return -1;
    int threads = cm_pool_size(pool);
    bool avx512 = isa == CM_ISA_AVX512;
    gemm_job j = {
        y, x, NULL, NULL, 0, NULL, 0, cols, n, rows, cols, w, wtype, cm_row_bytes(wtype, (size_t)cols), 0};
    if (n < GEMM_MIN_TOKENS) {
        if (wtype == CM_DTYPE_Q6_K) {
            j.scratch_floats = ((size_t)cols + 15) & ~(size_t)15;
            j.scratch = malloc((size_t)threads * j.scratch_floats * sizeof(float));
            if (!j.scratch) return -1;
        }
        cm_pool_run(pool, avx512 ? gemv_worker512 : gemv_worker256, &j);
        free(j.scratch);
        return 0;
    }
    j.panel = avx512 ? 32 : 16;
    int panels = (n + j.panel - 1) / j.panel;
    size_t xp_bytes = (size_t)panels * cols * j.panel * sizeof(float);
    j.xp = aligned_alloc(64, (xp_bytes + 63) & ~(size_t)63);
    /* panels beyond ~512 KB (a core's share of L2) are walked in chunks of columns of ~256 KB */
    if (avx512 && xp_bytes > ((size_t)512 << 10) && wtype != CM_DTYPE_Q6_K) {
        size_t kc = ((size_t)256 << 10) / ((size_t)panels * 32 * sizeof(float)) & ~(size_t)15;
        j.kc = kc < 64 ? 64 : (int)kc;
    }
    if (j.kc < cols) {
        j.part_floats = ((size_t)rows / 12 / threads + 8) * panels * (12 * 32);
        j.part = aligned_alloc(64, (size_t)threads * j.part_floats * sizeof(float));
    }
    j.scratch_floats = (size_t)(avx512 ? 12 : 6) * ((size_t)j.kc + 16);
    j.scratch = malloc((size_t)threads * j.scratch_floats * sizeof(float));
    if (!j.xp || !j.scratch || (j.kc < cols && !j.part)) {
        free(j.xp);
        free(j.scratch);
        free(j.part);
        return -1;
    }
    cm_pool_run(panels > 1 ? pool : NULL, pack_worker, &j);
    cm_pool_run(pool, avx512 ? gemm_worker512 : gemm_worker256, &j);
    free(j.xp);
    free(j.scratch);
    free(j.part);
    return 0;
}

#else /* not x86-64: the scalar reference only */

int cm_gemm_float_supported(cm_isa isa, cm_dtype t) {
    (void)isa;
    (void)t;
    return 0;
}

int cm_gemm_float(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols,
                  cm_pool *pool, cm_isa isa) {
    return -1;
}

int cm_gemv_float_multi(float *const *y, const float *x, int n, const void *const *w, cm_dtype wtype,
                        const int *rows, int cols, int count, cm_pool *pool, cm_isa isa) {
    return -1;
}

#endif
