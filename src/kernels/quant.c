#include "camelid/quant.h"

#include <math.h>
#include <string.h>

#include "camelid/dtype.h"
#include "kernels/quant_internal.h"

void cm_quantize_row_q8_0(const float *x, cm_block_q8_0 *y, size_t n) {
    for (size_t b = 0; b < n / CM_QK8_0; b++, x += CM_QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < CM_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d ? 1.0f / d : 0.0f; /* ggml multiplies by the reciprocal */
        y[b].d = cm_f32_to_f16(d);
        for (int j = 0; j < CM_QK8_0; j++) y[b].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

void cm_quantize_row_q4_0(const float *x, cm_block_q4_0 *y, size_t n) {
    for (size_t b = 0; b < n / CM_QK4_0; b++, x += CM_QK4_0) {
        float amax = 0.0f, max = 0.0f; /* the element of largest magnitude, with its sign; first wins ties */
        for (int j = 0; j < CM_QK4_0; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8.0f;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = cm_f32_to_f16(d);
        for (int j = 0; j < CM_QK4_0 / 2; j++) {
            const float x0 = x[j] * id, x1 = x[CM_QK4_0 / 2 + j] * id;
            int q0 = (int8_t)(x0 + 8.5f), q1 = (int8_t)(x1 + 8.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void cm_dequantize_row_q8_0(const cm_block_q8_0 *x, float *y, size_t n) {
    for (size_t b = 0; b < n / CM_QK8_0; b++) {
        const float d = cm_f16_to_f32(x[b].d);
        for (int j = 0; j < CM_QK8_0; j++) y[b * CM_QK8_0 + j] = (float)x[b].qs[j] * d;
    }
}

void cm_dequantize_row_q4_0(const cm_block_q4_0 *x, float *y, size_t n) {
    for (size_t b = 0; b < n / CM_QK4_0; b++) {
        const float d = cm_f16_to_f32(x[b].d);
        for (int j = 0; j < CM_QK4_0 / 2; j++) {
            y[b * CM_QK4_0 + j] = (float)((x[b].qs[j] & 0x0F) - 8) * d;
            y[b * CM_QK4_0 + j + CM_QK4_0 / 2] = (float)((x[b].qs[j] >> 4) - 8) * d;
        }
    }
}

void cm_dequantize_row_q6_K(const cm_block_q6_K *x, float *y, size_t n) {
    for (size_t b = 0; b < n / CM_QK_K; b++) {
        const float d = cm_f16_to_f32(x[b].d);
        const uint8_t *ql = x[b].ql, *qh = x[b].qh;
        const int8_t *sc = x[b].scales;
        /* two halves of 128: four 32-element groups each, 6-bit values from ql nibbles + qh bit pairs */
        for (int half = 0; half < 2; half++) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = (int8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

float cm_vec_dot_q8_0_q8_0_ref(const cm_block_q8_0 *w, const cm_block_q8_0 *x, size_t n) {
    float sum = 0.0f;
    for (size_t b = 0; b < n / CM_QK8_0; b++) {
        int acc = 0;
        for (int j = 0; j < CM_QK8_0; j++) acc += w[b].qs[j] * x[b].qs[j];
        sum += (float)acc * (cm_f16_to_f32(w[b].d) * cm_f16_to_f32(x[b].d));
    }
    return sum;
}

float cm_vec_dot_q4_0_q8_0_ref(const cm_block_q4_0 *w, const cm_block_q8_0 *x, size_t n) {
    float sum = 0.0f;
    for (size_t b = 0; b < n / CM_QK4_0; b++) {
        int acc = 0;
        for (int j = 0; j < CM_QK4_0 / 2; j++) {
            acc += ((w[b].qs[j] & 0x0F) - 8) * x[b].qs[j];
            acc += ((w[b].qs[j] >> 4) - 8) * x[b].qs[j + CM_QK4_0 / 2];
        }
        sum += (float)acc * (cm_f16_to_f32(w[b].d) * cm_f16_to_f32(x[b].d));
    }
    return sum;
}

/* ---- Q6_K quantization (ggml's quantize_row_q6_K_ref, learned from its behaviour) ---- */

/* Round to nearest, ties to even, through the float mantissa: what ggml's quantizers use (not roundf). */
static inline int nearest_int(float fval) {
    float val = fval + 12582912.f;
    int32_t i;
    memcpy(&i, &val, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

#define GROUP_EPS 1e-15f

/* The scale of 16 values as ggml's make_qx_quants(n, nmax, x, L, rmse_type = 1, no weights): start from
 * -nmax / max, then try 18 nearby scales and keep the best weighted least-squares fit (weights x^2). Every
 * float operation is in ggml's order, so the result is bit-identical. */
static float q6_scale(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = nearest_int(iscale * x[i]);
                l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
                L[i] = (int8_t)(nmax + l);
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

void cm_quantize_row_q6_K(const float *x, cm_block_q6_K *y, size_t n) {
    int8_t L[CM_QK_K];
    float scales[CM_QK_K / 16];
    for (size_t i = 0; i < n / CM_QK_K; i++, x += CM_QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < CM_QK_K / 16; ++ib) {
            const float scale = q6_scale(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            const float abs_scale = fabsf(scale);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        if (max_abs_scale < GROUP_EPS) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float iscale = -128.f / max_scale;
        y[i].d = cm_f32_to_f16(1 / iscale);
        for (int ib = 0; ib < CM_QK_K / 16; ++ib) {
            int s = nearest_int(iscale * scales[ib]);
            y[i].scales[ib] = (int8_t)(s < 127 ? s : 127);
        }
        for (int j = 0; j < CM_QK_K / 16; ++j) {
            float d = cm_f16_to_f32(y[i].d) * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ++ii) {
                int l = nearest_int(x[16 * j + ii] / d); /* a division here, as ggml */
                l = l < -32 ? -32 : l > 31 ? 31 : l;
                L[16 * j + ii] = (int8_t)(l + 32);
            }
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < CM_QK_K; j += 128) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                  ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
            }
            ql += 64;
            qh += 32;
        }
    }
}

int cm_quantize_row(cm_dtype t, const float *x, void *y, size_t n) {
    switch (t) {
    case CM_DTYPE_Q8_0:
        cm_quantize_row_q8_0(x, y, n);
        return 0;
    case CM_DTYPE_Q4_0:
        cm_quantize_row_q4_0(x, y, n);
        return 0;
    case CM_DTYPE_Q6_K:
        cm_quantize_row_q6_K(x, y, n);
        return 0;
    default:
        return -1;
    }
}

/* The 6-bit quant (0..63, i.e. q + 32) of element e (0..255) of a Q6_K block. */
static inline int q6_at(const cm_block_q6_K *b, int e) {
    int half = e / 128, r = e % 128, part = r / 32, l = r % 32;
    const uint8_t *ql = b->ql + 64 * half, *qh = b->qh + 32 * half;
    int lo = part == 0   ? ql[l] & 0xF
             : part == 1 ? ql[l + 32] & 0xF
             : part == 2 ? ql[l] >> 4
                         : ql[l + 32] >> 4;
    return lo | (((qh[l] >> (2 * part)) & 3) << 4);
}

float cm_vec_dot_q6_K_q8_0_ref(const cm_block_q6_K *w, const cm_block_q8_0 *x, size_t n) {
    float sum = 0.0f;
    for (size_t b = 0; b < n / CM_QK_K; b++) {
        const float d = cm_f16_to_f32(w[b].d);
        for (int k = 0; k < CM_QK_K / CM_QK8_0; k++) {
            const cm_block_q8_0 *xb = &x[b * (CM_QK_K / CM_QK8_0) + k];
            int acc = 0;
            for (int s = 0; s < 2; s++) {
                int sub = 0;
                for (int j = 0; j < 16; j++)
                    sub += (q6_at(&w[b], 32 * k + 16 * s + j) - 32) * xb->qs[16 * s + j];
                acc += w[b].scales[2 * k + s] * sub;
            }
            sum += (float)acc * (d * cm_f16_to_f32(xb->d));
        }
    }
    return sum;
}

/* ---- activations for the SIMD matmul (quant_internal.h) ---- */

void cm_qact_fill_ref(cm_qact *a, const float *x, int t0, int t1) {
    const int nb = a->cols / CM_QK8_0;
    for (int t = t0; t < t1; t++) {
        int8_t *qs = a->qs + (size_t)t * a->nchunk * CM_QCHUNK;
        float *dx = a->dx + (size_t)t * a->nchunk * 16;
        memset(qs, 0, (size_t)a->nchunk * CM_QCHUNK);
        memset(dx, 0, (size_t)a->nchunk * 16 * sizeof(float));
        for (int b = 0; b < nb; b++) {
            cm_block_q8_0 blk;
            cm_quantize_row_q8_0(x + (size_t)t * a->cols + (size_t)b * CM_QK8_0, &blk, CM_QK8_0);
            memcpy(qs + b * CM_QK8_0, blk.qs, CM_QK8_0);
            const float d = cm_f16_to_f32(blk.d);
            for (int j = 0; j < 8; j++) dx[b * 8 + j] = d;
        }
        if (a->corr) {
            int32_t *corr = a->corr + (size_t)t * a->nchunk * 16;
            for (int g = 0; g < a->nchunk * 16; g++) {
                int s = qs[4 * g] + qs[4 * g + 1] + qs[4 * g + 2] + qs[4 * g + 3];
                corr[g] = -s * (1 << a->corr_shift);
            }
        }
    }
}
