/* AVX-512 VNNI variants of the integer matmul path (quant_internal.h): activations quantized to Q8_0 with the
 * same bytes as the reference, and a blocked kernel that holds a tile of 4 weight rows x 4 tokens of fp32
 * accumulators, so every weight chunk is decoded once and used against 4 tokens (prefill) and every
 * activation chunk against 4 rows. Per 64 elements and (row, token) pair: one vpdpbusd (u8 x s8 -> int32,
 * exact), one int -> float conversion, one multiply of the two scales and one FMA. Compiled with per-function
 * target attributes only; chosen at run time (matmul_int8.c). */
#include "kernels/quant_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
#define INLINE512 T512 static inline __attribute__((always_inline))

/* roundf (half away from zero), exactly: truncate, then step away from zero where the dropped part >= 0.5 */
INLINE512 __m512 round_away(__m512 v) {
    const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_sub_ps(v, t);
    const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(r), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    const __m512 one = _mm512_castsi512_ps(
        _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int)0x80000000u)),
                        _mm512_castps_si512(_mm512_set1_ps(1.0f))));
    return _mm512_mask_add_ps(t, up, t, one);
}

T512 void cm_qact_fill_avx512(cm_qact *a, const float *x, int t0, int t1) {
    const int nb = a->cols / CM_QK8_0;
    const __m512i ones = _mm512_set1_epi8(1);
    for (int t = t0; t < t1; t++) {
        int8_t *qs = a->qs + (size_t)t * a->nchunk * CM_QCHUNK;
        float *dx = a->dx + (size_t)t * a->nchunk * 16;
        const float *xt = x + (size_t)t * a->cols;
        memset(qs + nb * CM_QK8_0, 0, (size_t)(a->nchunk * CM_QCHUNK - nb * CM_QK8_0));
        memset(dx + nb * 8, 0, (size_t)(a->nchunk * 16 - nb * 8) * sizeof(float));
        for (int b = 0; b < nb; b++) {
            const __m512 v0 = _mm512_loadu_ps(xt + b * CM_QK8_0),
                         v1 = _mm512_loadu_ps(xt + b * CM_QK8_0 + 16);
            const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            const float d = amax / 127.0f;
            const float id = d ? 1.0f / d : 0.0f;
            const __m512 vid = _mm512_set1_ps(id);
            __m512i q0 = _mm512_cvttps_epi32(round_away(_mm512_mul_ps(v0, vid)));
            __m512i q1 = _mm512_cvttps_epi32(round_away(_mm512_mul_ps(v1, vid)));
            __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtepi32_epi8(q0)),
                                                _mm512_cvtepi32_epi8(q1), 1);
            _mm256_storeu_si256((__m256i *)(qs + b * CM_QK8_0), q);
            const float dq = cm_f16_to_f32(cm_f32_to_f16(d));
            _mm256_storeu_ps(dx + b * 8, _mm256_set1_ps(dq));
        }
        if (a->corr) {
            int32_t *corr = a->corr + (size_t)t * a->nchunk * 16;
            for (int c = 0; c < a->nchunk; c++) {
                const __m512i s =
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, _mm512_loadu_si512(qs + c * CM_QCHUNK));
                _mm512_storeu_si512(corr + c * 16, _mm512_sub_epi32(_mm512_setzero_si512(),
                                                                    _mm512_slli_epi32(s, a->corr_shift)));
            }
        }
    }
}

/* Scales of two 32-element blocks (fp16 at p0 and p1; p1 NULL: none) as 16 lanes: 8 x d0, 8 x d1. */
INLINE512 __m512 two_scales(const uint16_t *p0, const uint16_t *p1) {
    uint16_t h1 = 0;
    if (p1) memcpy(&h1, p1, 2);
    uint16_t h0;
    memcpy(&h0, p0, 2);
    const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)h0 | ((uint32_t)h1 << 16))));
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(f));
}

enum { W_Q8_0, W_Q4_0, W_Q6_K };

/* Chunk c (64 elements) of a weight row: quants as unsigned bytes (q + 128 / q + 8 / q + 32 for Q8_0 / Q4_0 /
 * Q6_K; the activations' corr removes the offset) and the per-lane weight scale. */
INLINE512 void decode(const int wt, const uint8_t *row, int c, int nb, __m512i *wv, __m512 *ws) {
    if (wt == W_Q8_0) {
        const cm_block_q8_0 *b = (const cm_block_q8_0 *)row + 2 * c;
        const bool two = 2 * c + 1 < nb;
        const __m256i lo = _mm256_loadu_si256((const __m256i *)b[0].qs);
        *wv = two ? _mm512_inserti64x4(_mm512_castsi256_si512(lo),
                                       _mm256_loadu_si256((const __m256i *)b[1].qs), 1)
                  : _mm512_zextsi256_si512(lo);
        *ws = two_scales(&b[0].d, two ? &b[1].d : NULL);
        *wv = _mm512_xor_si512(*wv, _mm512_set1_epi8((char)0x80)); /* q + 128 as unsigned */
    } else if (wt == W_Q4_0) {
        const cm_block_q4_0 *b = (const cm_block_q4_0 *)row + 2 * c;
        const bool two = 2 * c + 1 < nb;
        const __m128i q0 = _mm_loadu_si128((const __m128i *)b[0].qs);
        const __m128i q1 = two ? _mm_loadu_si128((const __m128i *)b[1].qs) : _mm_setzero_si128();
        const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
        const __m512i z =
            _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1),
                             _mm512_set1_epi8(0x0F));
        /* [lo0, lo1, hi0, hi1] -> [lo0, hi0, lo1, hi1]: element order within each block */
        *wv = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
        *ws = two_scales(&b[0].d, two ? &b[1].d : NULL);
    } else {
        const cm_block_q6_K *b = (const cm_block_q6_K *)row + c / 4;
        const int k = c % 4, half = k / 2, part = k % 2;
        const __m512i ql = _mm512_loadu_si512(b->ql + 64 * half);
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * half));
        const __m512i qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
        __m512i lo, hi;
        if (part == 0) {
            lo = _mm512_and_si512(ql, _mm512_set1_epi8(0x0F));
            hi = _mm512_and_si512(_mm512_slli_epi16(qh2, 4), _mm512_set1_epi8(0x30));
        } else {
            lo = _mm512_and_si512(_mm512_srli_epi16(ql, 4), _mm512_set1_epi8(0x0F));
            hi = _mm512_and_si512(qh2, _mm512_set1_epi8(0x30));
        }
        *wv = _mm512_or_si512(lo, hi);
        int32_t sc4;
        memcpy(&sc4, b->scales + 4 * k, 4);
        const __m512i idx = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
        const __m512i sc =
            _mm512_permutexvar_epi32(idx, _mm512_castsi128_si512(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(sc4))));
        uint16_t hd;
        memcpy(&hd, &b->d, 2);
        const float d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(hd)));
        *ws = _mm512_mul_ps(_mm512_cvtepi32_ps(sc), _mm512_set1_ps(d));
    }
}

/* A tile of RT rows (from r) x TT tokens (from t0): RT <= 4 with TT <= 4, or RT = 8 with TT = 1 (decode: more
 * rows in flight). Every (row, token) pair sums its chunks in the same order whatever the tile shape. */
INLINE512 void tile(const int wt, const int RT, const int TT, const uint8_t *w, size_t row_bytes, int r,
                    int t0, const cm_qact *a, float *y, size_t ldy, int nb) {
    const size_t pf = (RT == 8 ? 16 : 8) * row_bytes;
    __m512 acc[8][4];
    for (int i = 0; i < RT; i++)
        for (int j = 0; j < TT; j++) acc[i][j] = _mm512_setzero_ps();
    const size_t qstride = (size_t)a->nchunk * CM_QCHUNK, sstride = (size_t)a->nchunk * 16;
    const int8_t *qs = a->qs + (size_t)t0 * qstride;
    const float *dx = a->dx + (size_t)t0 * sstride;
    const int32_t *corr = a->corr ? a->corr + (size_t)t0 * sstride : NULL;
    for (int c = 0; c < a->nchunk; c++) {
        for (int i = 0; i < RT; i++) {
            __m512i wv;
            __m512 ws;
            const uint8_t *row = w + (size_t)(r + i) * row_bytes;
            /* the rows 8 (16 for decode tiles) ahead, into L2: decode (one token) streams weights faster than
             * the hardware prefetcher alone fetches them */
            const size_t at = wt == W_Q8_0   ? (size_t)c * 68
                              : wt == W_Q4_0 ? (size_t)c * 36
                                             : (size_t)(c / 4) * 210 + (c % 4) * 64;
            _mm_prefetch((const char *)row + pf + at, _MM_HINT_T1);
            decode(wt, row, c, nb, &wv, &ws);
            for (int j = 0; j < TT; j++) {
                const __m512i xv = _mm512_loadu_si512(qs + j * qstride + c * CM_QCHUNK);
                const __m512 sc = _mm512_mul_ps(ws, _mm512_loadu_ps(dx + j * sstride + c * 16));
                const __m512i dp =
                    _mm512_dpbusd_epi32(_mm512_loadu_si512(corr + j * sstride + c * 16), wv, xv);
                acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), sc, acc[i][j]);
            }
        }
    }
    for (int i = 0; i < RT; i++)
        for (int j = 0; j < TT; j++) y[(size_t)(t0 + j) * ldy + r + i] = _mm512_reduce_add_ps(acc[i][j]);
}

#define TILES(wt)                                                                                            \
    T512 static void tiles_##wt(const uint8_t *w, size_t row_bytes, int r0, int r1, const cm_qact *a,        \
                                float *y, size_t ldy, int nb) {                                              \
        int r = r0;                                                                                          \
        if (a->n == 1)                                                                                       \
            for (; r + 8 <= r1; r += 8) tile(wt, 8, 1, w, row_bytes, r, 0, a, y, ldy, nb);                   \
        for (; r + 4 <= r1; r += 4) {                                                                        \
            int t = 0;                                                                                       \
            for (; t + 4 <= a->n; t += 4) tile(wt, 4, 4, w, row_bytes, r, t, a, y, ldy, nb);                 \
            switch (a->n - t) {                                                                              \
            case 3:                                                                                          \
                tile(wt, 4, 3, w, row_bytes, r, t, a, y, ldy, nb);                                           \
                break;                                                                                       \
            case 2:                                                                                          \
                tile(wt, 4, 2, w, row_bytes, r, t, a, y, ldy, nb);                                           \
                break;                                                                                       \
            case 1:                                                                                          \
                tile(wt, 4, 1, w, row_bytes, r, t, a, y, ldy, nb);                                           \
                break;                                                                                       \
            default:                                                                                         \
                break;                                                                                       \
            }                                                                                                \
        }                                                                                                    \
        for (; r < r1; r++) {                                                                                \
            int t = 0;                                                                                       \
            for (; t + 4 <= a->n; t += 4) tile(wt, 1, 4, w, row_bytes, r, t, a, y, ldy, nb);                 \
            for (; t < a->n; t++) tile(wt, 1, 1, w, row_bytes, r, t, a, y, ldy, nb);                         \
        }                                                                                                    \
    }
TILES(W_Q8_0)
TILES(W_Q4_0)
TILES(W_Q6_K)

T512 void cm_qgemm_avx512(cm_dtype wt, const void *w, size_t row_bytes, int r0, int r1, const cm_qact *a,
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

/* ---- prefill panels (quant_internal.h) ---- */

size_t cm_qpanel_bytes(cm_dtype wt, int cols) {
    return (size_t)(cols / CM_QK8_0) * (64 + (wt == CM_DTYPE_Q8_0 ? 8 : 4) * 64);
}

/* Rows r..r+count-1 (count <= 16) of W into the panel layout: every 4-byte group of the 16 rows is one gather
 * (missing rows read as zero, so their scale is 0). */
INLINE512 void pack_panel(const int q4, const uint8_t *w, size_t row_bytes, int r, int count, int nb,
                          uint8_t *pk) {
    const int bb = q4 ? (int)sizeof(cm_block_q4_0) : (int)sizeof(cm_block_q8_0), qv = q4 ? 4 : 8;
    const __mmask16 m = (__mmask16)((1u << count) - 1);
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                           _mm512_set1_epi32((int)row_bytes));
    const uint8_t *base = w + (size_t)r * row_bytes;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = base + (size_t)b * bb;
        uint8_t *dst = pk + (size_t)b * (64 + 64 * qv);
        /* the fp16 scale is the first 2 bytes of the block (the gather's upper 2 bytes are quants) */
        const __m512i d = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, blk, 1);
        _mm512_store_ps(dst, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(d)));
        for (int k = 0; k < qv; k++) {
            __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, blk + 2 + 4 * k, 1);
            if (!q4) v = _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80)); /* q + 128 as unsigned */
            _mm512_store_si512(dst + 64 + 64 * k, v);
        }
    }
}

INLINE512 __m512i bcast32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

INLINE512 __m512 bcastf(const uint8_t *p) {
    float v;
    memcpy(&v, p, 4);
    return _mm512_set1_ps(v);
}

/* 16 panel rows x 8 tokens (one activation group): per block, 8 int32 chains (one per token) of 8 vpdpbusd
 * each, then one conversion, multiply by the token's scale and FMA with the rows' scales per token. */
INLINE512 void panel_tile(const int q4, const uint8_t *pk, const uint8_t *xg, int nb, float *y, size_t ldy,
                          int ntok, __mmask16 m) {
    const int qv = q4 ? 4 : 8;
    const size_t pb = 64 + 64 * (size_t)qv;
    __m512 acc[CM_QPANEL_TOKENS];
    for (int j = 0; j < CM_QPANEL_TOKENS; j++) acc[j] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *wb = pk + (size_t)b * pb, *xb = xg + (size_t)b * CM_QPANEL_XBYTES;
        __m512i dot[CM_QPANEL_TOKENS];
        for (int j = 0; j < CM_QPANEL_TOKENS; j++) dot[j] = bcast32(xb + 288 + 4 * j);
        for (int k = 0; k < qv; k++) {
            const __m512i v = _mm512_load_si512(wb + 64 + 64 * k);
            if (q4) {
                const __m512i lo = _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
                const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0F));
                for (int j = 0; j < CM_QPANEL_TOKENS; j++) {
                    dot[j] = _mm512_dpbusd_epi32(dot[j], lo, bcast32(xb + 32 * j + 4 * k));
                    dot[j] = _mm512_dpbusd_epi32(dot[j], hi, bcast32(xb + 32 * j + 16 + 4 * k));
                }
            } else {
                for (int j = 0; j < CM_QPANEL_TOKENS; j++)
                    dot[j] = _mm512_dpbusd_epi32(dot[j], v, bcast32(xb + 32 * j + 4 * k));
            }
        }
        const __m512 dw = _mm512_load_ps(wb);
        for (int j = 0; j < CM_QPANEL_TOKENS; j++)
            acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot[j]), bcastf(xb + 256 + 4 * j)), dw,
                                     acc[j]);
    }
    for (int j = 0; j < ntok; j++) _mm512_mask_storeu_ps(y + (size_t)j * ldy, m, acc[j]);
}

#define PANELS(name, q4)                                                                                     \
    T512 static void name(const uint8_t *w, size_t row_bytes, int r0, int r1, const cm_qact *a,              \
                          const uint8_t *xp, float *y, size_t ldy, uint8_t *pk) {                            \
        const int nb = a->cols / CM_QK8_0;                                                                   \
        for (int r = r0; r < r1; r += CM_QPANEL_ROWS) {                                                      \
            const int count = r1 - r < CM_QPANEL_ROWS ? r1 - r : CM_QPANEL_ROWS;                             \
            pack_panel(q4, w, row_bytes, r, count, nb, pk);                                                  \
            const __mmask16 m = (__mmask16)((1u << count) - 1);                                              \
            for (int t = 0; t < a->n; t += CM_QPANEL_TOKENS)                                                 \
                panel_tile(q4, pk, xp + (size_t)(t / CM_QPANEL_TOKENS) * nb * CM_QPANEL_XBYTES, nb,          \
                           y + (size_t)t * ldy + r, ldy,                                                     \
                           a->n - t < CM_QPANEL_TOKENS ? a->n - t : CM_QPANEL_TOKENS, m);                    \
        }                                                                                                    \
    }
PANELS(panels_q8_0, 0)
PANELS(panels_q4_0, 1)

T512 void cm_qgemm_panels_avx512(cm_dtype wt, const void *w, size_t row_bytes, int r0, int r1,
                                 const cm_qact *a, const uint8_t *xp, float *y, size_t ldy, void *scratch) {
    if (wt == CM_DTYPE_Q4_0)
        panels_q4_0(w, row_bytes, r0, r1, a, xp, y, ldy, scratch);
    else if (wt == CM_DTYPE_Q8_0)
        panels_q8_0(w, row_bytes, r0, r1, a, xp, y, ldy, scratch);
}

#else
/* Not x86-64: never chosen (cm_isa_active() is scalar), present so the library links. */
void cm_qact_fill_avx512(cm_qact *a, const float *x, int t0, int t1) {
    cm_qact_fill_ref(a, x, t0, t1);
}
void cm_qgemm_avx512(cm_dtype wt, const void *w, size_t row_bytes, int r0, int r1, const cm_qact *a, float *y,
                     size_t ldy) {
    (void)wt, (void)w, (void)row_bytes, (void)r0, (void)r1, (void)a, (void)y, (void)ldy;
}
size_t cm_qpanel_bytes(cm_dtype wt, int cols) {
    return (size_t)(cols / CM_QK8_0) * (64 + (wt == CM_DTYPE_Q8_0 ? 8 : 4) * 64);
}
void cm_qgemm_panels_avx512(cm_dtype wt, const void *w, size_t row_bytes, int r0, int r1, const cm_qact *a,
                            const uint8_t *xp, float *y, size_t ldy, void *scratch) {
    (void)wt, (void)w, (void)row_bytes, (void)r0, (void)r1, (void)a, (void)xp, (void)y, (void)ldy,
        (void)scratch;
}
#endif
