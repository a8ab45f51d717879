/* AVX2 variants of the integer matmul path (quant_internal.h), for CPUs without AVX-512 VNNI. Same data
 * layout as the AVX-512 kernel; a 64-element chunk is two 256-bit halves (one Q8_0 block each). Integer dots
 * by pmaddubsw (u8 x s8 -> s16 pairs, which cannot saturate here: |w| <= 128 and |x| <= 127 for Q8_0 by the
 * sign trick, w <= 63 for Q4_0/Q6_K) and pmaddwd. Tiles of 4 rows x 2 tokens (16 ymm registers), 8 rows x 1
 * token for decode. Prefill batches of Q8_0 / Q4_0 take quant_avx2_panel.c instead. */
#include "kernels/quant_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#define T256 __attribute__((target("avx2,fma,f16c")))
#define INLINE256 T256 static inline __attribute__((always_inline))

INLINE256 __m256 round_away(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_sub_ps(v, t);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 up = _mm256_cmp_ps(_mm256_andnot_ps(sign, r), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(t, _mm256_and_ps(up, one));
}

INLINE256 float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

INLINE256 float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* sum of each 4 int8 (as int32 lanes) */
INLINE256 __m256i sum4(__m256i q) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
}

T256 void cm_qact_fill_avx2(cm_qact *a, const float *x, int t0, int t1) {
    const int nb = a->cols / CM_QK8_0;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int t = t0; t < t1; t++) {
        int8_t *qs = a->qs + (size_t)t * a->nchunk * CM_QCHUNK;
        float *dx = a->dx + (size_t)t * a->nchunk * 16;
        const float *xt = x + (size_t)t * a->cols;
        memset(qs + nb * CM_QK8_0, 0, (size_t)(a->nchunk * CM_QCHUNK - nb * CM_QK8_0));
        memset(dx + nb * 8, 0, (size_t)(a->nchunk * 16 - nb * 8) * sizeof(float));
        for (int b = 0; b < nb; b++) {
            __m256 v[4];
            for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(xt + b * CM_QK8_0 + 8 * k);
            __m256 m =
                _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                              _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
            const float amax = hmax(m);
            const float d = amax / 127.0f;
            const float id = d ? 1.0f / d : 0.0f;
            const __m256 vid = _mm256_set1_ps(id);
            __m256i q[4];
            for (int k = 0; k < 4; k++) q[k] = _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v[k], vid)));
            const __m256i p =
                _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            __m256i bytes = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(qs + b * CM_QK8_0), bytes);
            _mm256_storeu_ps(dx + b * 8, _mm256_set1_ps(cm_f16_to_f32(cm_f32_to_f16(d))));
        }
        if (a->corr) {
            int32_t *corr = a->corr + (size_t)t * a->nchunk * 16;
            for (int h = 0; h < a->nchunk * 2; h++) {
                const __m256i s = sum4(_mm256_loadu_si256((const __m256i *)(qs + h * 32)));
                _mm256_storeu_si256(
                    (__m256i *)(corr + h * 8),
                    _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(s, a->corr_shift)));
            }
        }
    }
}

INLINE256 float half_to_f32(const uint16_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

enum { W_Q8_0, W_Q4_0, W_Q6_K };

/* Half h (32 elements) of chunk c of a weight row: quants (Q8_0: |w|, with the signs in *wsgn), lane scales.
 * Returns false past the row's last block. */
INLINE256 bool decode(const int wt, const uint8_t *row, int c, int h, int nb, __m256i *wv, __m256i *wsgn,
                      __m256 *ws) {
    if (wt == W_Q8_0) {
        if (2 * c + h >= nb) return false;
        const cm_block_q8_0 *b = (const cm_block_q8_0 *)row + 2 * c + h;
        *wsgn = _mm256_loadu_si256((const __m256i *)b->qs);
        *wv = _mm256_abs_epi8(*wsgn);
        *ws = _mm256_set1_ps(half_to_f32(&b->d));
    } else if (wt == W_Q4_0) {
        if (2 * c + h >= nb) return false;
        const cm_block_q4_0 *b = (const cm_block_q4_0 *)row + 2 * c + h;
        const __m128i q = _mm_loadu_si128((const __m128i *)b->qs);
        *wv = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1),
                               _mm256_set1_epi8(0x0F));
        *ws = _mm256_set1_ps(half_to_f32(&b->d));
    } else {
        const cm_block_q6_K *b = (const cm_block_q6_K *)row + c / 4;
        const int k = c % 4, half = k / 2, part = k % 2;
        const __m256i ql = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * half + 32 * h));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * half));
        const __m256i lo = _mm256_and_si256(part ? _mm256_srli_epi16(ql, 4) : ql, _mm256_set1_epi8(0x0F));
        const __m256i hb = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * (2 * part + h))),
                                            _mm256_set1_epi8(0x03));
        *wv = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 4));
        const int s = 4 * k + 2 * h;
        const float d = half_to_f32(&b->d);
        *ws = _mm256_setr_m128(_mm_set1_ps(d * b->scales[s]), _mm_set1_ps(d * b->scales[s + 1]));
    }
    return true;
}

/* A tile of RT rows (from r) x TT tokens (from t0): RT <= 4 with TT <= 2, or RT = 8 with TT = 1 (decode: more
 * rows in flight, each prefetching 16 rows ahead). Every (row, token) pair sums its blocks in the same order
 * whatever the tile shape. */
INLINE256 void tile(const int wt, const int RT, const int TT, const uint8_t *w, size_t row_bytes, int r,
                    int t0, const cm_qact *a, float *y, size_t ldy, int nb) {
    __m256 acc[8][2];
    for (int i = 0; i < RT; i++)
        for (int j = 0; j < TT; j++) acc[i][j] = _mm256_setzero_ps();
    const size_t qstride = (size_t)a->nchunk * CM_QCHUNK, sstride = (size_t)a->nchunk * 16;
    const int8_t *qs = a->qs + (size_t)t0 * qstride;
    const float *dx = a->dx + (size_t)t0 * sstride;
    const int32_t *corr = a->corr ? a->corr + (size_t)t0 * sstride : NULL;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int c = 0; c < a->nchunk; c++) {
        for (int h = 0; h < 2; h++) {
            for (int i = 0; i < RT; i++) {
                __m256i wv, wsgn = _mm256_setzero_si256();
                __m256 ws;
                const uint8_t *row = w + (size_t)(r + i) * row_bytes;
                /* decode streams every weight once: the hardware prefetcher alone falls behind 8 rows */
                if (RT == 8 && h == 0)
                    _mm_prefetch((const char *)row + 16 * row_bytes +
                                     (wt == W_Q8_0   ? (size_t)c * 68
                                      : wt == W_Q4_0 ? (size_t)c * 36
                                                     : (size_t)(c / 4) * 210 + (c % 4) * 64),
                                 _MM_HINT_T1);
                if (!decode(wt, row, c, h, nb, &wv, &wsgn, &ws)) continue;
                for (int j = 0; j < TT; j++) {
                    const __m256i xv =
                        _mm256_loadu_si256((const __m256i *)(qs + j * qstride + c * CM_QCHUNK + 32 * h));
                    const __m256 sc = _mm256_mul_ps(ws, _mm256_loadu_ps(dx + j * sstride + c * 16 + 8 * h));
                    __m256i dp;
                    if (wt == W_Q8_0) {
                        dp = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, _mm256_sign_epi8(xv, wsgn)), ones);
                    } else {
                        dp = _mm256_add_epi32(
                            _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xv), ones),
                            _mm256_loadu_si256((const __m256i *)(corr + j * sstride + c * 16 + 8 * h)));
                    }
                    acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), sc, acc[i][j]);
                }
            }
        }
    }
    for (int i = 0; i < RT; i++)
        for (int j = 0; j < TT; j++) y[(size_t)(t0 + j) * ldy + r + i] = hsum(acc[i][j]);
}

#define TILES(wt)                                                                                            \
    T256 static void tiles_##wt(const uint8_t *w, size_t row_bytes, int r0, int r1, const cm_qact *a,        \
                                float *y, size_t ldy, int nb) {                                              \
        int r = r0;                                                                                          \
        if (a->n == 1)                                                                                       \
            for (; r + 8 <= r1; r += 8) tile(wt, 8, 1, w, row_bytes, r, 0, a, y, ldy, nb);                   \
        for (; r + 4 <= r1; r += 4) {                                                                        \
            int t = 0;                                                                                       \
            for (; t + 2 <= a->n; t += 2) tile(wt, 4, 2, w, row_bytes, r, t, a, y, ldy, nb);                 \
            if (t < a->n) tile(wt, 4, 1, w, row_bytes, r, t, a, y, ldy, nb);                                 \
        }                                                                                                    \
        for (; r < r1; r++) {                                                                                \
            int t = 0;                                                                                       \
            for (; t + 2 <= a->n; t += 2) tile(wt, 1, 2, w, row_bytes, r, t, a, y, ldy, nb);                 \
            if (t < a->n) tile(wt, 1, 1, w, row_bytes, r, t, a, y, ldy, nb);                                 \
        }                                                                                                    \
    }
TILES(W_Q8_0)
TILES(W_Q4_0)
TILES(W_Q6_K)

T256 void cm_qgemm_avx2(cm_dtype wt, const void *w, size_t row_bytes, int r0, int r1, const cm_qact *a,
                        float *y, size_t ldy) {
    const int nb = a->cols / CM_QK8_0;
    switch (wt) {
    case CM_DTYPE_Q8_0:
        tiles_W_Q8_0(w, row_bytes, r0, r1, a, y, ldy, nb);
        break;
    case CM_DTYPE_Q4_0:
        tiles_W_Q4_0(w, row_bytes, r0, r1, a, y, ldy, nb);
        break;
    case CM_DTYPE_Q6_K:
        tiles_W_Q6_K(w, row_bytes, r0, r1, a, y, ldy, nb);
        break;
    default:
        break;
    }
}

#else
void cm_qact_fill_avx2(cm_qact *a, const float *x, int t0, int t1) {
    cm_qact_fill_ref(a, x, t0, t1);
}
void cm_qgemm_avx2(cm_dtype wt, const void *w, size_t row_bytes, int r0, int r1, const cm_qact *a, float *y,
                   size_t ldy) {
    (void)wt, (void)w, (void)row_bytes, (void)r0, (void)r1, (void)a, (void)y, (void)ldy;
}
#endif
