/* The NF4 matmuls on AVX-512 and AVX2: y[t, r] = sum_c x[t, c] W[r, c], W NF4 (include/camelid/nf4.h).
 *
 * Lookup. A dword of packed codes holds 8 nibbles; shifted right by 4m, its low 4 bits are nibble m, which is
 * the value at index 8L + (m ^ 1) of its 8 (even flat index in the high nibble). vpermps reads only the low 4
 * bits of each index lane, so one load of 64 bytes (128 values, 16 dwords) and its 8 shifts, each through one
 * vpermps of the 16 codes held in a register, give all 128 values with no masking or unpacking; AVX2 looks the
 * 3 low bits up in two 8-code registers and blends on bit 3. The values come out in "lane order": vector m of
 * a group of G = 8V values (V lanes: 16 on AVX-512, 8 on AVX2) holds the values 8L + (m ^ 1), L < V. Rather
 * than reorder the weights, both paths put x (or its panels) in the same order once per call, so a dot
 * product is a sum of whole vectors. A short last group (a row of 64 mod 128 values on AVX-512) loads 8 lanes
 * and pads x with zeros.
 *
 * Scales. Blocks are a multiple of 64 values and rows a multiple of 64, so the 8-lane half of a group (64
 * values) lies in one block: per group one scale vector (two scales on AVX-512, lanes 0-7 and 8-15) multiplies
 * the group's partial sum (decode) or the decoded values (prefill).
 *
 * Decode (a few tokens): each thread streams its band of rows, every group read once and used for every
 * token; the next rows are prefetched into L2. Prefill: a block of R rows is decoded (scaled) into a small
 * buffer, then an R x P register tile (AVX-512 12 x 32, AVX2 6 x 16) runs over panels of P tokens packed in
 * lane order, as the float GEMM does: the weights are decoded once per block and used by all the tokens,
 * never stored whole. Every (row, token) value is the same whichever band, block or thread computes it. */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/nf4_internal.h"

bool cm_nf4_simd_ok(const cm_nf4_weight *w, int64_t cols) {
    return w->cols == cols && cols > 0 && cols % 64 == 0 && cols <= (1 << 24) && w->rows > 0 &&
           w->rows <= INT_MAX && w->blocksize % 64 == 0;
}

#if defined(__x86_64__)
#include <immintrin.h>

#define T_AVX2 __attribute__((target("avx2,fma")))
#define T_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define INLINE static inline __attribute__((always_inline))

/* Batches of at least this many tokens take the GEMM path. */
#define GEMM_MIN_TOKENS 6
/* Decode prefetches the group this many rows ahead into L2. */
#define PF_ROWS 8

typedef struct {
    float *const *y;
    const float *x;
    const cm_nf4_weight *const *w;
    int n, count, cols, colsp; /* colsp: cols rounded up to whole groups */
    int lanes;                 /* V: 16 (AVX-512) or 8 (AVX2) */
    int panel;                 /* P: tokens per panel (GEMM) */
    float *xq;                 /* GEMV: n rows of colsp in lane order; GEMM: panels [colsp][P] */
    float *scratch;            /* GEMM: per thread a block of decoded rows */
    size_t scratch_floats, ld;
    int kc;                    /* GEMM: columns per chunk (a multiple of the group) */
    float *part;               /* GEMM with chunks: per thread the partial tiles of its band */
    size_t part_floats;
} nf4_job;

/* x in the lane order: position g*G + m*V + L holds value g*G + 8L + (m ^ 1) (zero past the row). */
static void permute_row(const float *x, int cols, int colsp, int lanes, float *out) {
    const int G = 8 * lanes;
    for (int g0 = 0; g0 < colsp; g0 += G)
        for (int m = 0; m < 8; m++)
            for (int L = 0; L < lanes; L++) {
                int src = g0 + 8 * L + (m ^ 1);
                out[g0 + m * lanes + L] = src < cols ? x[src] : 0.0f;
            }
}

/* The rows [r0, r1) of a thread: whole blocks of `block` rows; the last thread also takes the leftover rows. */
static void row_band(int rows, int block, int thread, int n_threads, int *r0, int *r1) {
    int b0, b1;
    cm_split_range(rows / block, n_threads, thread, &b0, &b1);
    *r0 = b0 * block;
    *r1 = thread == n_threads - 1 ? rows : b1 * block;
}

/* aligned_alloc wants a multiple of the alignment */
static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

static int log2i(int v) {
    int k = 0;
    while ((1 << k) < v) k++;
    return k;
}

/* ================================================================ AVX-512 */

/* The group's scale vector: lanes 0-7 from the block of value f, lanes 8-15 from the block of f + 64. */
T_AVX512 INLINE __m512 scale512(const float *absmax, size_t f, int shift, int half) {
    __m512 a = _mm512_set1_ps(absmax[f >> shift]);
    if (half) return a;
    return _mm512_mask_broadcastss_ps(a, 0xFF00, _mm_load_ss(absmax + ((f + 64) >> shift)));
}

T_AVX512 INLINE __m512i load_group512(const uint8_t *p, int half) {
    return half ? _mm512_maskz_loadu_epi32(0x00FF, p) : _mm512_loadu_si512(p);
}

/* vector m of a group: the 16 codes of nibble m of each dword */
#define NIB512(d, m, codes) _mm512_permutexvar_ps((m) ? _mm512_srli_epi32(d, 4 * (m)) : (d), codes)

/* y for rows r .. r+R-1 and T tokens (x in lane order, colsp apart), summing each group's products and then
 * scaling the group's sum. */
T_AVX512 INLINE void gemv512(const nf4_job *j, const cm_nf4_weight *w, float *y, int r, const int R, const int T) {
    const __m512 codes = _mm512_loadu_ps(cm_nf4_code);
    const int cols = j->cols, groups = (cols + 127) / 128, shift = log2i(w->blocksize);
    const size_t row_bytes = (size_t)cols / 2;
    const uint8_t *base = w->packed + (size_t)r * row_bytes;
    const uint8_t *pf_end = w->packed + (size_t)w->rows * row_bytes;
    __m512 acc[4][5];
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) acc[i][t] = _mm512_setzero_ps();
    for (int g = 0; g < groups; g++) {
        const int half = g * 128 + 64 >= cols;
        /* the group's x, loaded once for the R rows (loads, not arithmetic, limit this loop) */
        __m512 xv[5][8];
        for (int t = 0; t < T; t++)
            for (int m = 0; m < 8; m++)
                xv[t][m] = _mm512_load_ps(j->xq + (size_t)t * j->colsp + (size_t)g * 128 + (size_t)m * 16);
        for (int i = 0; i < R; i++) {
            const uint8_t *p = base + (size_t)i * row_bytes + (size_t)g * 64;
            const uint8_t *pf = p + PF_ROWS * row_bytes;
            if (pf < pf_end) _mm_prefetch((const char *)pf, _MM_HINT_T1);
            __m512i d = load_group512(p, half);
            __m512 s[5];
            for (int m = 0; m < 8; m++) {
                __m512 v = NIB512(d, m, codes);
                for (int t = 0; t < T; t++) s[t] = m ? _mm512_fmadd_ps(v, xv[t][m], s[t]) : _mm512_mul_ps(v, xv[t][m]);
            }
            __m512 sc = scale512(w->absmax, (size_t)(r + i) * cols + (size_t)g * 128, shift, half);
            for (int t = 0; t < T; t++) acc[i][t] = _mm512_fmadd_ps(s[t], sc, acc[i][t]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) y[(size_t)t * w->rows + r + i] = _mm512_reduce_add_ps(acc[i][t]);
}

T_AVX512 static void gemv_band512(const nf4_job *j, const cm_nf4_weight *w, float *y, int r0, int r1) {
    int r = r0;
    switch (j->n) {
    case 1:
        for (; r + 4 <= r1; r += 4) gemv512(j, w, y, r, 4, 1);
        for (; r < r1; r++) gemv512(j, w, y, r, 1, 1);
        break;
    case 2:
        for (; r + 2 <= r1; r += 2) gemv512(j, w, y, r, 2, 2);
        for (; r < r1; r++) gemv512(j, w, y, r, 1, 2);
        break;
    case 3:
        for (; r < r1; r++) gemv512(j, w, y, r, 1, 3);
        break;
    case 4:
        for (; r < r1; r++) gemv512(j, w, y, r, 1, 4);
        break;
    default:
        for (; r < r1; r++) gemv512(j, w, y, r, 1, 5);
        break;
    }
}

/* Groups [g0, g1) of rows r .. r+R-1 decoded and scaled into wb (row i at wb + i * ld), in lane order. */
T_AVX512 static void decode512(const cm_nf4_weight *w, int cols, int r, int R, int g0, int g1, float *wb,
                               size_t ld) {
    const __m512 codes = _mm512_loadu_ps(cm_nf4_code);
    const int shift = log2i(w->blocksize);
    const size_t row_bytes = (size_t)cols / 2;
    for (int i = 0; i < R; i++) {
        const uint8_t *p = w->packed + (size_t)(r + i) * row_bytes;
        float *dst = wb + (size_t)i * ld - (size_t)g0 * 128;
        for (int g = g0; g < g1; g++) {
            const int half = g * 128 + 64 >= cols;
            __m512i d = load_group512(p + (size_t)g * 64, half);
            __m512 sc = scale512(w->absmax, (size_t)(r + i) * cols + (size_t)g * 128, shift, half);
            for (int m = 0; m < 8; m++)
                _mm512_store_ps(dst + (size_t)g * 128 + m * 16, _mm512_mul_ps(NIB512(d, m, codes), sc));
        }
    }
}

/* The R x (16 G) tile of decoded weights against one panel of 32 tokens (xp at the chunk's first column),
 * continuing the partial sums in `tile` unless `first`; the sums are left in `tile`. Weight (i, k) is at
 * wb[i * si + k * sk]: rows of W (si = the buffer's stride, sk = 1), or columns of W for the transpose product
 * (si = 1, sk = the stride). */
T_AVX512 INLINE void tile512(const float *wb, size_t si, size_t sk, const float *xp, int kn, float *tile, int first,
                             const int R, const int G) {
    __m512 acc[12][2];
    for (int i = 0; i < R; i++)
        for (int g = 0; g < G; g++)
            acc[i][g] = first ? _mm512_setzero_ps() : _mm512_load_ps(tile + i * 32 + g * 16);
    for (int k = 0; k < kn; k++) {
        __m512 x0 = _mm512_load_ps(xp + (size_t)k * 32);
        __m512 x1 = G > 1 ? _mm512_load_ps(xp + (size_t)k * 32 + 16) : x0;
        for (int i = 0; i < R; i++) {
            __m512 b = _mm512_set1_ps(wb[(size_t)i * si + (size_t)k * sk]);
            acc[i][0] = _mm512_fmadd_ps(b, x0, acc[i][0]);
            if (G > 1) acc[i][1] = _mm512_fmadd_ps(b, x1, acc[i][1]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int g = 0; g < G; g++) _mm512_store_ps(tile + i * 32 + g * 16, acc[i][g]);
}

#define TILE512(R, G)                                                                                        \
    T_AVX512 static void tile512_##R##x##G(const float *wb, size_t si, size_t sk, const float *xp, int kn,    \
                                           float *tile, int first) {                                         \
        tile512(wb, si, sk, xp, kn, tile, first, R, G);                                                      \
    }
TILE512(12, 2)
TILE512(12, 1)
TILE512(4, 2)
TILE512(4, 1)
TILE512(1, 2)
TILE512(1, 1)
#undef TILE512

/* Scatter an R x P tile (row-major, stride P) into y[t][r]. */
static void store_tile(float *y, int rows, int r, const float *tile, int P, int R, int t0, int valid) {
    for (int t = 0; t < valid; t++) {
        float *dst = y + (size_t)(t0 + t) * rows + r;
        for (int i = 0; i < R; i++) dst[i] = tile[i * P + t];
    }
}

/* Long rows are cut into chunks of kc columns, every block of the band advancing one chunk at a time, so the
 * chunk of the panels stays in L2; partial tiles wait in `part`. The lanes' sums are the same either way. */
T_AVX512 static void gemm_band512(const nf4_job *j, const cm_nf4_weight *w, float *y, int r0, int r1, float *wb,
                                  float *part) {
    const int rows = (int)w->rows, panels = (j->n + 31) / 32;
    float tile_local[12 * 32] __attribute__((aligned(64)));
    for (int k0 = 0; k0 < j->colsp; k0 += j->kc) {
        const int kn = j->colsp - k0 < j->kc ? j->colsp - k0 : j->kc, first = k0 == 0, last = k0 + kn == j->colsp;
        int R;
        for (int r = r0, block = 0; r < r1; r += R, block++) {
            R = r1 - r >= 12 ? 12 : r1 - r >= 4 ? 4 : 1;
            decode512(w, j->cols, r, R, k0 / 128, (k0 + kn) / 128, wb, j->ld);
            /* the next block's codes come from memory while this one computes */
            if (r + R < r1) {
                const char *next = (const char *)w->packed + (size_t)(r + R) * (size_t)(j->cols / 2) + k0 / 2;
                int next_rows = r1 - (r + R) < 12 ? r1 - (r + R) : 12;
                for (int i = 0; i < next_rows; i++)
                    for (int b = 0; b < kn / 2; b += 64) _mm_prefetch(next + (size_t)i * (j->cols / 2) + b, _MM_HINT_T1);
            }
            for (int p = 0; p < panels; p++) {
                const int t0 = p * 32, valid = j->n - t0 < 32 ? j->n - t0 : 32;
                const float *xp = j->xq + ((size_t)p * j->colsp + (size_t)k0) * 32;
                float *tile = part ? part + ((size_t)block * panels + p) * (12 * 32) : tile_local;
                if (valid > 16) {
                    if (R == 12)
                        tile512_12x2(wb, j->ld, 1, xp, kn, tile, first);
                    else if (R == 4)
                        tile512_4x2(wb, j->ld, 1, xp, kn, tile, first);
                    else
                        tile512_1x2(wb, j->ld, 1, xp, kn, tile, first);
                } else {
                    if (R == 12)
                        tile512_12x1(wb, j->ld, 1, xp, kn, tile, first);
                    else if (R == 4)
                        tile512_4x1(wb, j->ld, 1, xp, kn, tile, first);
                    else
                        tile512_1x1(wb, j->ld, 1, xp, kn, tile, first);
                }
                if (last) store_tile(y, rows, r, tile, 32, R, t0, valid);
            }
        }
    }
}

/* ================================================================ AVX2 */

T_AVX2 INLINE __m256 nib256(__m256i d, int m, __m256 lo, __m256 hi) {
    __m256i idx = m ? _mm256_srli_epi32(d, 4 * m) : d;
    __m256 a = _mm256_permutevar8x32_ps(lo, idx), b = _mm256_permutevar8x32_ps(hi, idx);
    /* bit 3 of the nibble picks the upper eight codes */
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

T_AVX2 INLINE float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* As gemv512 with groups of 64 values (one block each). */
T_AVX2 INLINE void gemv256(const nf4_job *j, const cm_nf4_weight *w, float *y, int r, const int R, const int T) {
    const __m256 lo = _mm256_loadu_ps(cm_nf4_code), hi = _mm256_loadu_ps(cm_nf4_code + 8);
    const int cols = j->cols, groups = cols / 64, shift = log2i(w->blocksize);
    const size_t row_bytes = (size_t)cols / 2;
    const uint8_t *base = w->packed + (size_t)r * row_bytes;
    const uint8_t *pf_end = w->packed + (size_t)w->rows * row_bytes;
    __m256 acc[4][5];
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) acc[i][t] = _mm256_setzero_ps();
    for (int g = 0; g < groups; g++) {
        __m256 xv[5][8];
        for (int t = 0; t < T; t++)
            for (int m = 0; m < 8; m++)
                xv[t][m] = _mm256_load_ps(j->xq + (size_t)t * j->colsp + (size_t)g * 64 + (size_t)m * 8);
        for (int i = 0; i < R; i++) {
            const uint8_t *p = base + (size_t)i * row_bytes + (size_t)g * 32;
            const uint8_t *pf = p + PF_ROWS * row_bytes;
            if (g % 2 == 0 && pf < pf_end) _mm_prefetch((const char *)pf, _MM_HINT_T1);
            __m256i d = _mm256_loadu_si256((const __m256i *)p);
            __m256 s[5];
            for (int m = 0; m < 8; m++) {
                __m256 v = nib256(d, m, lo, hi);
                for (int t = 0; t < T; t++) s[t] = m ? _mm256_fmadd_ps(v, xv[t][m], s[t]) : _mm256_mul_ps(v, xv[t][m]);
            }
            __m256 sc = _mm256_set1_ps(w->absmax[((size_t)(r + i) * cols + (size_t)g * 64) >> shift]);
            for (int t = 0; t < T; t++) acc[i][t] = _mm256_fmadd_ps(s[t], sc, acc[i][t]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) y[(size_t)t * w->rows + r + i] = hsum256(acc[i][t]);
}

T_AVX2 static void gemv_band256(const nf4_job *j, const cm_nf4_weight *w, float *y, int r0, int r1) {
    int r = r0;
    switch (j->n) {
    case 1:
        for (; r + 4 <= r1; r += 4) gemv256(j, w, y, r, 4, 1);
        for (; r < r1; r++) gemv256(j, w, y, r, 1, 1);
        break;
    case 2:
        for (; r + 2 <= r1; r += 2) gemv256(j, w, y, r, 2, 2);
        for (; r < r1; r++) gemv256(j, w, y, r, 1, 2);
        break;
    case 3:
        for (; r < r1; r++) gemv256(j, w, y, r, 1, 3);
        break;
    case 4:
        for (; r < r1; r++) gemv256(j, w, y, r, 1, 4);
        break;
    default:
        for (; r < r1; r++) gemv256(j, w, y, r, 1, 5);
        break;
    }
}

T_AVX2 static void decode256(const cm_nf4_weight *w, int cols, int r, int R, int g0, int g1, float *wb, size_t ld) {
    const __m256 lo = _mm256_loadu_ps(cm_nf4_code), hi = _mm256_loadu_ps(cm_nf4_code + 8);
    const int shift = log2i(w->blocksize);
    const size_t row_bytes = (size_t)cols / 2;
    for (int i = 0; i < R; i++) {
        const uint8_t *p = w->packed + (size_t)(r + i) * row_bytes;
        float *dst = wb + (size_t)i * ld - (size_t)g0 * 64;
        for (int g = g0; g < g1; g++) {
            __m256i d = _mm256_loadu_si256((const __m256i *)(p + (size_t)g * 32));
            __m256 sc = _mm256_set1_ps(w->absmax[((size_t)(r + i) * cols + (size_t)g * 64) >> shift]);
            for (int m = 0; m < 8; m++)
                _mm256_store_ps(dst + (size_t)g * 64 + m * 8, _mm256_mul_ps(nib256(d, m, lo, hi), sc));
        }
    }
}

T_AVX2 INLINE void tile256(const float *wb, size_t si, size_t sk, const float *xp, int kn, float *tile, int first,
                           const int R, const int G) {
    __m256 acc[6][2];
    for (int i = 0; i < R; i++)
        for (int g = 0; g < G; g++) acc[i][g] = first ? _mm256_setzero_ps() : _mm256_load_ps(tile + i * 16 + g * 8);
    for (int k = 0; k < kn; k++) {
        __m256 x0 = _mm256_load_ps(xp + (size_t)k * 16);
        __m256 x1 = G > 1 ? _mm256_load_ps(xp + (size_t)k * 16 + 8) : x0;
        for (int i = 0; i < R; i++) {
            __m256 b = _mm256_broadcast_ss(wb + (size_t)i * si + (size_t)k * sk);
            acc[i][0] = _mm256_fmadd_ps(b, x0, acc[i][0]);
            if (G > 1) acc[i][1] = _mm256_fmadd_ps(b, x1, acc[i][1]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int g = 0; g < G; g++) _mm256_store_ps(tile + i * 16 + g * 8, acc[i][g]);
}

#define TILE256(R, G)                                                                                        \
    T_AVX2 static void tile256_##R##x##G(const float *wb, size_t si, size_t sk, const float *xp, int kn,      \
                                         float *tile, int first) {                                           \
        tile256(wb, si, sk, xp, kn, tile, first, R, G);                                                      \
    }
TILE256(6, 2)
TILE256(6, 1)
TILE256(1, 2)
TILE256(1, 1)
#undef TILE256

T_AVX2 static void gemm_band256(const nf4_job *j, const cm_nf4_weight *w, float *y, int r0, int r1, float *wb,
                                float *part) {
    const int rows = (int)w->rows, panels = (j->n + 15) / 16;
    float tile_local[6 * 16] __attribute__((aligned(32))) = {0};
    for (int k0 = 0; k0 < j->colsp; k0 += j->kc) {
        const int kn = j->colsp - k0 < j->kc ? j->colsp - k0 : j->kc, first = k0 == 0, last = k0 + kn == j->colsp;
        int R;
        for (int r = r0, block = 0; r < r1; r += R, block++) {
            R = r1 - r >= 6 ? 6 : 1;
            decode256(w, j->cols, r, R, k0 / 64, (k0 + kn) / 64, wb, j->ld);
            for (int p = 0; p < panels; p++) {
                const int t0 = p * 16, valid = j->n - t0 < 16 ? j->n - t0 : 16;
                const float *xp = j->xq + ((size_t)p * j->colsp + (size_t)k0) * 16;
                float *tile = part ? part + ((size_t)block * panels + p) * (6 * 16) : tile_local;
                if (valid > 8) {
                    if (R == 6)
                        tile256_6x2(wb, j->ld, 1, xp, kn, tile, first);
                    else
                        tile256_1x2(wb, j->ld, 1, xp, kn, tile, first);
                } else {
                    if (R == 6)
                        tile256_6x1(wb, j->ld, 1, xp, kn, tile, first);
                    else
                        tile256_1x1(wb, j->ld, 1, xp, kn, tile, first);
                }
                if (last) store_tile(y, rows, r, tile, 16, R, t0, valid);
            }
        }
    }
}

/* ================================================================ entry */

static void gemv_worker(void *arg, int thread, int n_threads) {
    const nf4_job *j = arg;
    for (int k = 0; k < j->count; k++) {
        int r0, r1;
        row_band((int)j->w[k]->rows, 4, thread, n_threads, &r0, &r1);
        if (r0 >= r1) continue;
        if (j->lanes == 16)
            gemv_band512(j, j->w[k], j->y[k], r0, r1);
        else
            gemv_band256(j, j->w[k], j->y[k], r0, r1);
    }
}

static void gemm_worker(void *arg, int thread, int n_threads) {
    const nf4_job *j = arg;
    float *wb = j->scratch + (size_t)thread * j->scratch_floats;
    float *part = j->part ? j->part + (size_t)thread * j->part_floats : NULL;
    for (int k = 0; k < j->count; k++) {
        int r0, r1;
        row_band((int)j->w[k]->rows, j->lanes == 16 ? 12 : 6, thread, n_threads, &r0, &r1);
        if (r0 >= r1) continue;
        if (j->lanes == 16)
            gemm_band512(j, j->w[k], j->y[k], r0, r1, wb, part);
        else
            gemm_band256(j, j->w[k], j->y[k], r0, r1, wb, part);
    }
}

/* x in lane order: GEMV one row per token; GEMM panels of P tokens, [colsp][P] each (zero past n). */
static void pack_worker(void *arg, int thread, int n_threads) {
    const nf4_job *j = arg;
    if (!j->panel) {
        int t0, t1;
        cm_split_range(j->n, n_threads, thread, &t0, &t1);
        for (int t = t0; t < t1; t++)
            permute_row(j->x + (size_t)t * j->cols, j->cols, j->colsp, j->lanes, j->xq + (size_t)t * j->colsp);
        return;
    }
    int P = j->panel, panels = (j->n + P - 1) / P, p0, p1;
    cm_split_range(panels, n_threads, thread, &p0, &p1);
    for (int p = p0; p < p1; p++) {
        float *dst = j->xq + (size_t)p * j->colsp * P;
        int valid = j->n - p * P < P ? j->n - p * P : P;
        const float *src = j->x + (size_t)p * P * j->cols;
        /* a group of columns at a time: its G x P block stays in L1 while the tokens' rows stream */
        const int G = 8 * j->lanes;
        for (int g0 = 0; g0 < j->colsp; g0 += G) {
            float *d = dst + (size_t)g0 * P;
            for (int t = 0; t < P; t++)
                for (int m = 0; m < 8; m++)
                    for (int L = 0; L < j->lanes; L++) {
                        int s = g0 + 8 * L + (m ^ 1);
                        d[(size_t)(m * j->lanes + L) * P + t] = s < j->cols && t < valid ? src[(size_t)t * j->cols + s] : 0.0f;
                    }
        }
    }
}

int cm_nf4_matmul_simd(float *const *y, const float *x, int n, const cm_nf4_weight *const *w, int count,
                       cm_pool *pool, cm_isa isa) {
    if (isa != CM_ISA_AVX2 && isa != CM_ISA_AVX512) return -1;
    nf4_job j;
    memset(&j, 0, sizeof j);
    j.y = y;
    j.x = x;
    j.w = w;
    j.n = n;
    j.count = count;
    j.cols = (int)w[0]->cols;
    j.lanes = isa == CM_ISA_AVX512 ? 16 : 8;
    int G = 8 * j.lanes;
    j.colsp = (j.cols + G - 1) / G * G;
    int threads = cm_pool_size(pool);
    if (n < GEMM_MIN_TOKENS) {
        j.xq = aligned_alloc(64, round64((size_t)n * j.colsp * sizeof(float)));
        if (!j.xq) return -1;
        cm_pool_run(n > 1 ? pool : NULL, pack_worker, &j);
        cm_pool_run(pool, gemv_worker, &j);
        free(j.xq);
        return 0;
    }
    j.panel = j.lanes == 16 ? 32 : 16;
    int panels = (n + j.panel - 1) / j.panel, block = j.lanes == 16 ? 12 : 6;
    size_t xq_bytes = (size_t)panels * j.colsp * j.panel * sizeof(float);
    j.xq = aligned_alloc(64, round64(xq_bytes));
    /* panels beyond ~512 KB (a core's share of L2) are walked in chunks of ~256 KB of columns */
    j.kc = j.colsp;
    if (xq_bytes > ((size_t)512 << 10)) {
        size_t kc = ((size_t)256 << 10) / ((size_t)panels * j.panel * sizeof(float)) / (size_t)G * (size_t)G;
        if (kc < (size_t)G) kc = (size_t)G;
        if (kc < (size_t)j.colsp) j.kc = (int)kc;
    }
    if (j.kc < j.colsp) {
        int max_rows = 0;
        for (int k = 0; k < count; k++)
            if ((int)w[k]->rows > max_rows) max_rows = (int)w[k]->rows;
        /* a band: its share of whole blocks, one more, and up to 5 small blocks of leftover rows */
        j.part_floats = ((size_t)max_rows / block / threads + 8) * panels * (size_t)(block * j.panel);
        j.part = aligned_alloc(64, round64((size_t)threads * j.part_floats * sizeof(float)));
    }
    /* a padded stride: a power-of-two row length would put the rows' column k in one L1 set */
    j.ld = (size_t)j.kc + 16;
    j.scratch_floats = (size_t)block * j.ld;
    j.scratch = aligned_alloc(64, round64((size_t)threads * j.scratch_floats * sizeof(float)));
    if (!j.xq || !j.scratch || (j.kc < j.colsp && !j.part)) {
        free(j.xq);
        free(j.scratch);
        free(j.part);
        return -1;
    }
    cm_pool_run(panels > 1 ? pool : NULL, pack_worker, &j);
    cm_pool_run(pool, gemm_worker, &j);
    free(j.xq);
    free(j.scratch);
    free(j.part);
    return 0;
}

/* ================================================================ the transpose product */

/* dx[t, c] (+)= sum_r dy[t, r] W[r, c]: the same register tiles with the roles turned: the "rows" of a tile are
 * 12 (6) columns of W, its k runs over W's rows, and the panels hold dy. Each thread owns a band of W's column
 * groups: it decodes a chunk of W's rows across its band (lane order, scaled) and runs the tiles down the
 * columns of that buffer; a tile's outputs go to the columns the lane order maps them to. */
typedef struct {
    float *dx;
    const float *dy;
    const cm_nf4_weight *w;
    int n, rows, cols, colsp, lanes, panel, kc;
    bool accumulate;
    float *dyp; /* panels [rows][P] of dy */
    float *scratch, *part;
    size_t scratch_floats, part_floats;
} t_job;

static void t_pack_worker(void *arg, int thread, int n_threads) {
    const t_job *j = arg;
    int P = j->panel, panels = (j->n + P - 1) / P, p0, p1;
    cm_split_range(panels, n_threads, thread, &p0, &p1);
    for (int p = p0; p < p1; p++) {
        float *dst = j->dyp + (size_t)p * j->rows * P;
        int valid = j->n - p * P < P ? j->n - p * P : P;
        for (int k0 = 0; k0 < j->rows; k0 += 16) {
            int kn = j->rows - k0 < 16 ? j->rows - k0 : 16;
            for (int t = 0; t < P; t++)
                for (int k = 0; k < kn; k++)
                    dst[(size_t)(k0 + k) * P + t] = t < valid ? j->dy[(size_t)(p * P + t) * j->rows + k0 + k] : 0.0f;
        }
    }
}

/* the column of W at lane-order position pos */
static int lane_column(int pos, int lanes) {
    int G = 8 * lanes, g = pos / G, m = pos % G / lanes, L = pos % lanes;
    return g * G + 8 * L + (m ^ 1);
}

static void t_store(const t_job *j, const float *tile, int P, int R, int pos0, int t0, int valid) {
    for (int i = 0; i < R; i++) {
        int c = lane_column(pos0 + i, j->lanes);
        if (c >= j->cols) continue;
        for (int t = 0; t < valid; t++) {
            float *d = j->dx + (size_t)(t0 + t) * j->cols + c;
            *d = j->accumulate ? *d + tile[i * P + t] : tile[i * P + t];
        }
    }
}

T_AVX512 static void t_band512(const t_job *j, int g0, int g1, float *buf, float *part) {
    const int P = 32, panels = (j->n + P - 1) / P, bw = (g1 - g0) * 128;
    const size_t ld = (size_t)bw + 16;
    float tile_local[12 * 32] __attribute__((aligned(64)));
    for (int k0 = 0; k0 < j->rows; k0 += j->kc) {
        const int kn = j->rows - k0 < j->kc ? j->rows - k0 : j->kc, first = k0 == 0, last = k0 + kn == j->rows;
        decode512(j->w, j->cols, k0, kn, g0, g1, buf, ld);
        int R;
        for (int b = 0, block = 0; b < bw; b += R, block++) {
            R = bw - b >= 12 ? 12 : bw - b >= 4 ? 4 : 1;
            for (int p = 0; p < panels; p++) {
                const int t0 = p * P, valid = j->n - t0 < P ? j->n - t0 : P;
                const float *xp = j->dyp + ((size_t)p * j->rows + (size_t)k0) * P;
                float *tile = part ? part + ((size_t)block * panels + p) * (12 * 32) : tile_local;
                if (valid > 16) {
                    if (R == 12)
                        tile512_12x2(buf + b, 1, ld, xp, kn, tile, first);
                    else if (R == 4)
                        tile512_4x2(buf + b, 1, ld, xp, kn, tile, first);
                    else
                        tile512_1x2(buf + b, 1, ld, xp, kn, tile, first);
                } else {
                    if (R == 12)
                        tile512_12x1(buf + b, 1, ld, xp, kn, tile, first);
                    else if (R == 4)
                        tile512_4x1(buf + b, 1, ld, xp, kn, tile, first);
                    else
                        tile512_1x1(buf + b, 1, ld, xp, kn, tile, first);
                }
                if (last) t_store(j, tile, P, R, g0 * 128 + b, t0, valid);
            }
        }
    }
}

T_AVX2 static void t_band256(const t_job *j, int g0, int g1, float *buf, float *part) {
    const int P = 16, panels = (j->n + P - 1) / P, bw = (g1 - g0) * 64;
    const size_t ld = (size_t)bw + 16;
    float tile_local[6 * 16] __attribute__((aligned(32))) = {0};
    for (int k0 = 0; k0 < j->rows; k0 += j->kc) {
        const int kn = j->rows - k0 < j->kc ? j->rows - k0 : j->kc, first = k0 == 0, last = k0 + kn == j->rows;
        decode256(j->w, j->cols, k0, kn, g0, g1, buf, ld);
        int R;
        for (int b = 0, block = 0; b < bw; b += R, block++) {
            R = bw - b >= 6 ? 6 : 1;
            for (int p = 0; p < panels; p++) {
                const int t0 = p * P, valid = j->n - t0 < P ? j->n - t0 : P;
                const float *xp = j->dyp + ((size_t)p * j->rows + (size_t)k0) * P;
                float *tile = part ? part + ((size_t)block * panels + p) * (6 * 16) : tile_local;
                if (valid > 8) {
                    if (R == 6)
                        tile256_6x2(buf + b, 1, ld, xp, kn, tile, first);
                    else
                        tile256_1x2(buf + b, 1, ld, xp, kn, tile, first);
                } else {
                    if (R == 6)
                        tile256_6x1(buf + b, 1, ld, xp, kn, tile, first);
                    else
                        tile256_1x1(buf + b, 1, ld, xp, kn, tile, first);
                }
                if (last) t_store(j, tile, P, R, g0 * 64 + b, t0, valid);
            }
        }
    }
}

static void t_worker(void *arg, int thread, int n_threads) {
    const t_job *j = arg;
    int G = 8 * j->lanes, g0, g1;
    cm_split_range(j->colsp / G, n_threads, thread, &g0, &g1);
    if (g0 >= g1) return;
    float *buf = j->scratch + (size_t)thread * j->scratch_floats;
    float *part = j->part ? j->part + (size_t)thread * j->part_floats : NULL;
    if (j->lanes == 16)
        t_band512(j, g0, g1, buf, part);
    else
        t_band256(j, g0, g1, buf, part);
}

int cm_nf4_matmul_t_simd(float *dx, const float *dy, int n, const cm_nf4_weight *w, bool accumulate, cm_pool *pool,
                         cm_isa isa) {
    if (isa != CM_ISA_AVX2 && isa != CM_ISA_AVX512) return -1;
    t_job j;
    memset(&j, 0, sizeof j);
    j.dx = dx;
    j.dy = dy;
    j.w = w;
    j.n = n;
    j.rows = (int)w->rows;
    j.cols = (int)w->cols;
    j.accumulate = accumulate;
    j.lanes = isa == CM_ISA_AVX512 ? 16 : 8;
    j.panel = j.lanes == 16 ? 32 : 16;
    int G = 8 * j.lanes, groups = (j.cols + G - 1) / G, threads = cm_pool_size(pool);
    if (threads > groups) threads = 1, pool = NULL; /* too narrow to share: one group */
    j.colsp = groups * G;
    int panels = (n + j.panel - 1) / j.panel, block = j.lanes == 16 ? 12 : 6;
    int band = (groups + threads - 1) / threads * G; /* the widest band */
    size_t ld = (size_t)band + 16;
    /* W's rows in chunks: the decoded chunk of a band about 256 KB, the chunk of the dy panels beside it */
    j.kc = (int)(((size_t)64 << 10) / ld);
    if (j.kc < 16) j.kc = 16;
    if (j.kc > j.rows) j.kc = j.rows;
    j.scratch_floats = ((size_t)j.kc * ld + 15) & ~(size_t)15;
    if (j.kc < j.rows) {
        j.part_floats = ((size_t)band / block + 2) * panels * (size_t)(block * j.panel);
        j.part = aligned_alloc(64, round64((size_t)threads * j.part_floats * sizeof(float)));
    }
    j.dyp = aligned_alloc(64, round64((size_t)panels * j.rows * j.panel * sizeof(float)));
    j.scratch = aligned_alloc(64, round64((size_t)threads * j.scratch_floats * sizeof(float)));
    if (!j.dyp || !j.scratch || (j.kc < j.rows && !j.part)) {
        free(j.dyp);
        free(j.scratch);
        free(j.part);
        return -1;
    }
    cm_pool_run(panels > 1 ? pool : NULL, t_pack_worker, &j);
    cm_pool_run(pool, t_worker, &j);
    free(j.dyp);
    free(j.scratch);
    free(j.part);
    return 0;
}

#else /* not x86-64: the generic path only */

int cm_nf4_matmul_simd(float *const *y, const float *x, int n, const cm_nf4_weight *const *w, int count,
                       cm_pool *pool, cm_isa isa) {
    (void)y, (void)x, (void)n, (void)w, (void)count, (void)pool, (void)isa;
    return -1;
}

int cm_nf4_matmul_t_simd(float *dx, const float *dy, int n, const cm_nf4_weight *w, bool accumulate, cm_pool *pool,
                         cm_isa isa) {
    (void)dx, (void)dy, (void)n, (void)w, (void)accumulate, (void)pool, (void)isa;
    return -1;
}

#endif
