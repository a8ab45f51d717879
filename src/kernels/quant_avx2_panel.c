/* AVX2 prefill panels for Q8_0 / Q4_0 weights (quant_internal.h): the layout of the AVX-512 VNNI panel at 256
 * bits, for CPUs without VNNI. 8 weight rows sit in the 8 int32 lanes (4 consecutive elements of one row per
 * lane) and 4 activation bytes of one token are broadcast, so a lane sums a whole 32-element block of one
 * (row, token) pair in integers and the int -> float conversion, the scale multiply and the FMA are paid once
 * per block for 8 pairs (the tile kernel pays them per 32 elements and pair). Integer dots are exact:
 *   Q4_0  pmaddubsw(w + 8 in 0..15, x): a pair is at most 2 * 15 * 127 = 3810, so the 8 steps of a block are
 *         summed in int16 lanes (8 pairs, at most 30480 < 32767) and widened once per block by pmaddwd;
 *         the activation's corr (-8 x the block's sum) removes the offset, as in the tile kernel.
 *   Q8_0  the tile kernel's sign trick, pmaddubsw(|w|, x * sign(w)): a pair reaches 2 * 128 * 127 = 32512,
 *         so every step is widened at once (pmaddwd with ones) and summed in int32.
 * The per-block float step is the AVX-512 panel's (acc = fma(float(dot) * dx, dw, acc), blocks in order), so
 * a (row, token) value is the same bytes as there. */
#include "kernels/quant_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <string.h>

#define T256 __attribute__((target("avx2,fma,f16c")))
#define INLINE256 T256 static inline __attribute__((always_inline))

/* Panel bytes per block: 8 row scales, then 8 vectors of 32 bytes (vector k: elements 4k..4k+3 of row i in
 * lane i; Q8_0 the signed quants, Q4_0 the unpacked nibbles q + 8 in 0..15). */
#define PB (32 + 8 * 32)

size_t cm_qpanel_bytes_avx2(cm_dtype wt, int cols) {
    (void)wt;
    return (size_t)(cols / CM_QK8_0) * PB;
}

INLINE256 float half_to_f32(const void *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

/* Rows r..r+count-1 (count <= 8) of W into the panel: per block, each row's 32 quants as one vector in
 * element order, then an 8 x 8 transpose of 32-bit groups. Missing rows are zeros with scale 0. */
INLINE256 void pack_panel(const int q4, const uint8_t *w, size_t row_bytes, int r, int count, int nb,
                          uint8_t *pk) {
    const size_t bb = q4 ? sizeof(cm_block_q4_0) : sizeof(cm_block_q8_0);
    const uint8_t *base = w + (size_t)r * row_bytes;
    for (int b = 0; b < nb; b++) {
        uint8_t *dst = pk + (size_t)b * PB;
        __m256i v[8];
        float d[8];
        for (int i = 0; i < 8; i++) {
            if (i >= count) {
                v[i] = _mm256_setzero_si256();
                d[i] = 0.0f;
                continue;
            }
            const uint8_t *blk = base + (size_t)i * row_bytes + (size_t)b * bb;
            d[i] = half_to_f32(blk);
            if (q4) { /* byte j: element j in the low nibble, element 16 + j in the high one */
                const __m128i q = _mm_loadu_si128((const __m128i *)(blk + 2));
                const __m128i m = _mm_set1_epi8(0x0F);
                v[i] = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
            } else {
                v[i] = _mm256_loadu_si256((const __m256i *)(blk + 2));
            }
        }
        _mm256_store_ps((float *)dst, _mm256_loadu_ps(d));
        __m256i t[8], u[8];
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_epi32(v[i], v[i + 1]);
            t[i + 1] = _mm256_unpackhi_epi32(v[i], v[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {
            u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
            u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
            u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
            u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
        }
        for (int k = 0; k < 4; k++) {
            _mm256_store_si256((__m256i *)(dst + 32 + 32 * k),
                               _mm256_permute2x128_si256(u[k], u[k + 4], 0x20));
            _mm256_store_si256((__m256i *)(dst + 32 + 32 * (k + 4)),
                               _mm256_permute2x128_si256(u[k], u[k + 4], 0x31));
        }
    }
}

INLINE256 __m256i bcast32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

INLINE256 __m256 bcastf(const uint8_t *p) {
    float v;
    memcpy(&v, p, 4);
    return _mm256_set1_ps(v);
}

/* The 8 panel rows x TT tokens j0..j0+TT-1 of one activation group (16 registers: TT = 4 keeps the integer
 * and float accumulators of every token in registers). */
INLINE256 void panel_tile(const int q4, const int TT, const uint8_t *pk, const uint8_t *xg, int nb, int j0,
                          float *y, size_t ldy, int ntok, __m256i store_mask) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4];
    for (int j = 0; j < TT; j++) acc[j] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *wb = pk + (size_t)b * PB, *xb = xg + (size_t)b * CM_QPANEL_XBYTES + 32 * j0;
        __m256i dot[4];
        for (int j = 0; j < TT; j++) dot[j] = _mm256_setzero_si256();
        for (int k = 0; k < 8; k++) {
            const __m256i v = _mm256_load_si256((const __m256i *)(wb + 32 + 32 * k));
            if (q4) {
                for (int j = 0; j < TT; j++)
                    dot[j] = _mm256_add_epi16(dot[j], _mm256_maddubs_epi16(v, bcast32(xb + 32 * j + 4 * k)));
            } else {
                const __m256i av = _mm256_abs_epi8(v);
                for (int j = 0; j < TT; j++)
                    dot[j] = _mm256_add_epi32(
                        dot[j], _mm256_madd_epi16(_mm256_maddubs_epi16(
                                                      av, _mm256_sign_epi8(bcast32(xb + 32 * j + 4 * k), v)),
                                                  ones));
            }
        }
        const __m256 dw = _mm256_load_ps((const float *)wb);
        const uint8_t *xs = xg + (size_t)b * CM_QPANEL_XBYTES;
        for (int j = 0; j < TT; j++) {
            __m256i d = dot[j];
            if (q4) d = _mm256_add_epi32(_mm256_madd_epi16(d, ones), bcast32(xs + 288 + 4 * (j0 + j)));
            acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(d), bcastf(xs + 256 + 4 * (j0 + j))),
                                     dw, acc[j]);
        }
    }
    for (int j = 0; j < TT && j0 + j < ntok; j++)
        _mm256_maskstore_ps(y + (size_t)(j0 + j) * ldy, store_mask, acc[j]);
}

#define PANELS(name, q4)                                                                                     \
    T256 static void name(const uint8_t *w, size_t row_bytes, int r0, int r1, const cm_qact *a,              \
                          const uint8_t *xp, float *y, size_t ldy, uint8_t *pk) {                            \
        const int nb = a->cols / CM_QK8_0;                                                                   \
        for (int r = r0; r < r1; r += CM_QPANEL2_ROWS) {                                                     \
            const int count = r1 - r < CM_QPANEL2_ROWS ? r1 - r : CM_QPANEL2_ROWS;                           \
            pack_panel(q4, w, row_bytes, r, count, nb, pk);                                                  \
            const __m256i m =                                                                                \
                _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));     \
            for (int t = 0; t < a->n; t += CM_QPANEL_TOKENS) {                                               \
                const uint8_t *xg = xp + (size_t)(t / CM_QPANEL_TOKENS) * nb * CM_QPANEL_XBYTES;             \
                const int ntok = a->n - t < CM_QPANEL_TOKENS ? a->n - t : CM_QPANEL_TOKENS;                  \
                float *yt = y + (size_t)t * ldy + r;                                                         \
                panel_tile(q4, 4, pk, xg, nb, 0, yt, ldy, ntok, m);                                          \
                if (ntok > 4) panel_tile(q4, 4, pk, xg, nb, 4, yt, ldy, ntok, m);                            \
            }                                                                                                \
        }                                                                                                    \
    }
PANELS(panels_q8_0, 0)
PANELS(panels_q4_0, 1)

T256 void cm_qgemm_panels_avx2(cm_dtype wt, const void *w, size_t row_bytes, int r0, int r1, const cm_qact *a,
                               const uint8_t *xp, float *y, size_t ldy, void *scratch) {
    if (wt == CM_DTYPE_Q4_0)
        panels_q4_0(w, row_bytes, r0, r1, a, xp, y, ldy, scratch);
    else if (wt == CM_DTYPE_Q8_0)
        panels_q8_0(w, row_bytes, r0, r1, a, xp, y, ldy, scratch);
}

#else
/* Not x86-64: never chosen (cm_isa_active() is scalar), present so the library links. */
size_t cm_qpanel_bytes_avx2(cm_dtype wt, int cols) {
    (void)wt;
    return (size_t)(cols / CM_QK8_0) * (32 + 8 * 32);
}
void cm_qgemm_panels_avx2(cm_dtype wt, const void *w, size_t row_bytes, int r0, int r1, const cm_qact *a,
                          const uint8_t *xp, float *y, size_t ldy, void *scratch) {
    (void)wt, (void)w, (void)row_bytes, (void)r0, (void)r1, (void)a, (void)xp, (void)y, (void)ldy,
        (void)scratch;
}
#endif
