/* AVX2 variants of the integer matmul path (quant_internal.h), for CPUs without AVX-512 VNNI. Same data
 * layout as the AVX-512 kernel; a 64-element chunk is two 256-bit halves (one Q8_0 block each). Integer dots
 * by pmaddubsw (u8 x s8 -> s16 pairs, which cannot saturate here: |w| <= 128 and |x| <= 127 for Q8_0 by the
 * sign trick, w <= 63 for Q4_0/Q6_K) and pmaddwd. Tiles of 4 rows x 2 tokens (16 ymm registers), 8 rows x 1
 * token for decode; one-token Q4_0 and Q6_K have their own kernels (q4_0_decode, q6_K_decode) that take whole
 * blocks per row step. Prefill batches of Q8_0 / Q4_0 take quant_avx2_panel.c instead. */
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

/* Q4_0 decode (one token): a whole chunk (two blocks) of a row per step. The two blocks' 16 quant bytes share
 * one register, so one and/shift pair unpacks 64 nibbles, and the token's bytes are loaded in the matching
 * order (block 2c's elements 0-15 | block 2c+1's 0-15, then 16-31 | 16-31): int32 lanes 0-3 hold block 2c,
 * 4-7 block 2c+1, and their scales come from two broadcast fp16 words and one conversion. Every row sums the
 * same way whatever RT (8, 4 or 1), so the rows a thread's split puts in a smaller tile give the same bytes;
 * the final per-row sums are one transpose-add tree, lanes (0+4)+(1+5) + (2+6)+(3+7) for every row. */
/* y[0..RT) = the lane sums of acc[0..RT) (the others zero), as one transpose-add tree: lanes (0+4)+(1+5) +
 * (2+6)+(3+7) for every row, so a row's sum does not depend on RT. */
INLINE256 void store_sums(const int RT, const __m256 *acc, float *y) {
    __m256 s[4];
    for (int i = 0; i < 4; i++)
        s[i] = _mm256_add_ps(_mm256_permute2f128_ps(acc[i], acc[i + 4], 0x20),
                             _mm256_permute2f128_ps(acc[i], acc[i + 4], 0x31));
    const __m256 sums = _mm256_hadd_ps(_mm256_hadd_ps(s[0], s[1]), _mm256_hadd_ps(s[2], s[3]));
    if (RT == 8)
        _mm256_storeu_ps(y, sums);
    else if (RT == 4)
        _mm_storeu_ps(y, _mm256_castps256_ps128(sums));
    else
        y[0] = _mm256_cvtss_f32(sums);
}

/* One chunk c of RT rows into acc; tail: chunk c holds only the row's odd last block. */
INLINE256 void q4_0_chunk(const int RT, const bool tail, const uint8_t *w, size_t row_bytes, int r,
                          const cm_qact *a, int c, __m256 *acc) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const int8_t *xc = a->qs + (size_t)c * CM_QCHUNK;
    const __m256i xlo = _mm256_loadu2_m128i((const __m128i *)(xc + 32), (const __m128i *)xc);
    const __m256i xhi = _mm256_loadu2_m128i((const __m128i *)(xc + 48), (const __m128i *)(xc + 16));
    const __m256 dxv = _mm256_loadu2_m128(a->dx + c * 16 + 8, a->dx + c * 16);
    /* corr lane k of a half covers its elements 4k..4k+3; lane m here covers m and m + 4 of one block */
    const __m256i c0 = _mm256_loadu_si256((const __m256i *)(a->corr + c * 16)),
                  c1 = _mm256_loadu_si256((const __m256i *)(a->corr + c * 16 + 8));
    const __m256i corrv =
        _mm256_add_epi32(_mm256_permute2x128_si256(c0, c1, 0x20), _mm256_permute2x128_si256(c0, c1, 0x31));
    for (int i = 0; i < RT; i++) {
        const uint8_t *p = w + (size_t)(r + i) * row_bytes + (size_t)c * 2 * sizeof(cm_block_q4_0);
        /* decode streams every weight once: the hardware prefetcher alone falls behind 8 rows */
        if (RT == 8) _mm_prefetch((const char *)p + 16 * row_bytes, _MM_HINT_T1);
        const cm_block_q4_0 *b = (const cm_block_q4_0 *)p;
        __m256i q;
        __m128i dw16 = _mm_set1_epi16((short)b[0].d);
        if (tail) {
            q = _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)b[0].qs));
            dw16 = _mm_blend_epi32(dw16, _mm_setzero_si128(), 0xC);
        } else {
            q = _mm256_loadu2_m128i((const __m128i *)b[1].qs, (const __m128i *)b[0].qs);
            dw16 = _mm_blend_epi32(dw16, _mm_set1_epi16((short)b[1].d), 0xC);
        }
        const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi));
        const __m256i dp = _mm256_add_epi32(_mm256_madd_epi16(s16, ones), corrv);
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), _mm256_mul_ps(_mm256_cvtph_ps(dw16), dxv), acc[i]);
    }
}

INLINE256 void q4_0_decode(const int RT, const uint8_t *w, size_t row_bytes, int r, const cm_qact *a, float *y,
                           int nb) {
    __m256 acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    for (int c = 0; c < nb / 2; c++) q4_0_chunk(RT, false, w, row_bytes, r, a, c, acc);
    if (nb & 1) q4_0_chunk(RT, true, w, row_bytes, r, a, nb / 2, acc);
    store_sums(RT, acc, y + r);
}

/* Q6_K decode (one token): a whole 256-element block of a row per step, the quants of each 128 built from its
 * 64 ql and 32 qh bytes by shifts and masks (no variable shift), the -32 offset taken off the int16 pair sums
 * (maddubs of 32 and the token's bytes, once per tile; the pairs stay within +-8128) and the int8 scales
 * applied by pmaddwd: one pshufb puts scale g (words 0-7) and g+1 (words 8-15) in the high byte of each word,
 * i.e. scale x 256, which the block's fp16 scale takes back (a power of two: exact). */
INLINE256 void q6_K_decode(const int RT, const uint8_t *w, size_t row_bytes, int r, const cm_qact *a, float *y,
                           int nblk) {
    __m256 acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30), k32 = _mm256_set1_epi8(32);
    for (int j = 0; j < nblk; j++) {
        const int8_t *xj = a->qs + (size_t)j * 256;
        const float *dxj = a->dx + (size_t)j * 64; /* x block 8j + k: 8 equal lanes at dxj + 8k */
        __m256i off[8];
        for (int k = 0; k < 8; k++)
            off[k] = _mm256_maddubs_epi16(k32, _mm256_loadu_si256((const __m256i *)(xj + 32 * k)));
        for (int i = 0; i < RT; i++) {
            const uint8_t *p = w + (size_t)(r + i) * row_bytes + (size_t)j * sizeof(cm_block_q6_K);
            /* decode streams every weight once: the hardware prefetcher alone falls behind 8 rows */
            if (RT == 8)
                for (int o = 0; o < 4; o++)
                    _mm_prefetch((const char *)p + 16 * row_bytes + (o < 3 ? 64 * o : 209), _MM_HINT_T1);
            const cm_block_q6_K *b = (const cm_block_q6_K *)p;
            const __m256i sc = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)b->scales));
            __m256 bacc = _mm256_setzero_ps();
            for (int n = 0; n < 2; n++) {
                const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * n)),
                              ql1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * n + 32)),
                              qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * n));
                for (int part = 0; part < 4; part++) {
                    const __m256i lo = part < 2 ? _mm256_and_si256(part ? ql1 : ql0, m4)
                                                : _mm256_and_si256(_mm256_srli_epi16(part == 3 ? ql1 : ql0, 4), m4);
                    const __m256i hq = part == 0   ? _mm256_slli_epi16(qh, 4)
                                       : part == 1 ? _mm256_slli_epi16(qh, 2)
                                       : part == 2 ? qh
                                                   : _mm256_srli_epi16(qh, 2);
                    const __m256i q = _mm256_or_si256(lo, _mm256_and_si256(hq, m30));
                    const int k = 4 * n + part, g = 2 * k; /* x block 8j + k, scales g and g + 1 */
                    const __m256i x = _mm256_loadu_si256((const __m256i *)(xj + 32 * k));
                    const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(q, x), off[k]);
                    const __m256i scw = _mm256_shuffle_epi8(
                        sc, _mm256_setr_epi8(-128, g, -128, g, -128, g, -128, g, -128, g, -128, g, -128, g, -128, g,
                                             -128, g + 1, -128, g + 1, -128, g + 1, -128, g + 1, -128, g + 1,
                                             -128, g + 1, -128, g + 1, -128, g + 1));
                    bacc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p16, scw)),
                                           _mm256_loadu_ps(dxj + 8 * k), bacc);
                }
            }
            acc[i] = _mm256_fmadd_ps(bacc, _mm256_set1_ps(half_to_f32(&b->d) * (1.0f / 256)), acc[i]);
        }
    }
    store_sums(RT, acc, y + r);
}

T256 static void tiles_q6_K_decode(const uint8_t *w, size_t row_bytes, int r0, int r1, const cm_qact *a,
                                   float *y, int nblk) {
    int r = r0;
    for (; r + 8 <= r1; r += 8) q6_K_decode(8, w, row_bytes, r, a, y, nblk);
    for (; r + 4 <= r1; r += 4) q6_K_decode(4, w, row_bytes, r, a, y, nblk);
    for (; r < r1; r++) q6_K_decode(1, w, row_bytes, r, a, y, nblk);
}

T256 static void tiles_q4_0_decode(const uint8_t *w, size_t row_bytes, int r0, int r1, const cm_qact *a,
                                   float *y, int nb) {
    int r = r0;
    for (; r + 8 <= r1; r += 8) q4_0_decode(8, w, row_bytes, r, a, y, nb);
    for (; r + 4 <= r1; r += 4) q4_0_decode(4, w, row_bytes, r, a, y, nb);
    for (; r < r1; r++) q4_0_decode(1, w, row_bytes, r, a, y, nb);
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
        if (a->n == 1)
            tiles_q4_0_decode(w, row_bytes, r0, r1, a, y, nb);
        else
            tiles_W_Q4_0(w, row_bytes, r0, r1, a, y, ldy, nb);
        break;
    case CM_DTYPE_Q6_K:
        if (a->n == 1)
            tiles_q6_K_decode(w, row_bytes, r0, r1, a, y, a->cols / 256);
        else
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
