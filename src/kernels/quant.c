#include "camelid/quant.h"

#include <math.h>

#include "camelid/dtype.h"

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
