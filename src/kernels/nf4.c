/* NF4 with double quantization (include/camelid/nf4.h): the format's reference code (quantize, dequantize,
 * double quantization), the in-memory weight, the plain references of the two matmuls, and the dispatch of
 * cm_matmul_nf4 / cm_matmul_nf4_t between the SIMD kernels (nf4_simd.c) and a generic path for the shapes
 * those do not take (a row length that is not a multiple of 64, blocks of 32, the scalar ISA).
 *
 * Bit-exactness with bitsandbytes (FACTS 4.2): every scale is a float32 reciprocal, 1 / max(absmax, 1e-38),
 * times the value, clamped to [-1, 1]; a code is the number of float32 midpoints strictly below the scaled
 * value (the midpoint of two neighbours goes to the lower one, as torch.bucketize does in bitsandbytes'
 * reference backend; its CUDA decision tree compares against the same float32 midpoints). The offset of the
 * double quantization is the mean of the block absmax values summed in double and rounded once. The 8-bit
 * tie rule follows the same bucketize; bitsandbytes' CUDA binary search sends an exact midpoint to the even
 * code instead, which no real weight hits. */
#include "camelid/nf4.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/isa.h"
#include "camelid/kernels.h"
#include "kernels/nf4_internal.h"

const float cm_nf4_code[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

/* The float32 midpoints of neighbouring codes: float constant expressions, folded in float32 (C11 with
 * FLT_EVAL_METHOD 0), equal to (code[i] + code[i + 1]) / 2 computed at run time (tests/unit/test_nf4.c). */
#define NF4_MID(a, b) (((a) + (b)) / 2)
static const float nf4_mid[15] = {
    NF4_MID(-1.0f, -0.6961928009986877f),
    NF4_MID(-0.6961928009986877f, -0.5250730514526367f),
    NF4_MID(-0.5250730514526367f, -0.39491748809814453f),
    NF4_MID(-0.39491748809814453f, -0.28444138169288635f),
    NF4_MID(-0.28444138169288635f, -0.18477343022823334f),
    NF4_MID(-0.18477343022823334f, -0.09105003625154495f),
    NF4_MID(-0.09105003625154495f, 0.0f),
    NF4_MID(0.0f, 0.07958029955625534f),
    NF4_MID(0.07958029955625534f, 0.16093020141124725f),
    NF4_MID(0.16093020141124725f, 0.24611230194568634f),
    NF4_MID(0.24611230194568634f, 0.33791524171829224f),
    NF4_MID(0.33791524171829224f, 0.44070982933044434f),
    NF4_MID(0.44070982933044434f, 0.5626170039176941f),
    NF4_MID(0.5626170039176941f, 0.7229568362236023f),
    NF4_MID(0.7229568362236023f, 1.0f),
};
#undef NF4_MID

/* Made by torch's float32 linspace as bitsandbytes' create_dynamic_map does (scripts/golden/nf4_golden.py
 * writes the same values to tests/data/nf4/dynamic_map.f32, which the unit test compares). */
const float cm_nf4_dynamic_map[256] = {
    -0x1.fc6666p-1f, -0x1.f53332p-1f, -0x1.ee0000p-1f, -0x1.e6ccccp-1f,
    -0x1.df9998p-1f, -0x1.d86666p-1f, -0x1.d13334p-1f, -0x1.ca0000p-1f,
    -0x1.c2ccccp-1f, -0x1.bb9998p-1f, -0x1.b46666p-1f, -0x1.ad3332p-1f,
    -0x1.a60000p-1f, -0x1.9eccccp-1f, -0x1.979998p-1f, -0x1.906666p-1f,
    -0x1.893334p-1f, -0x1.820000p-1f, -0x1.7acccep-1f, -0x1.73999ap-1f,
    -0x1.6c6668p-1f, -0x1.653334p-1f, -0x1.5e0000p-1f, -0x1.56cccep-1f,
    -0x1.4f999ap-1f, -0x1.486666p-1f, -0x1.413334p-1f, -0x1.3a0000p-1f,
    -0x1.32ccccp-1f, -0x1.2b999ap-1f, -0x1.246668p-1f, -0x1.1d3334p-1f,
    -0x1.160000p-1f, -0x1.0eccccp-1f, -0x1.07999ap-1f, -0x1.006666p-1f,
    -0x1.f26668p-2f, -0x1.e40000p-2f, -0x1.d59998p-2f, -0x1.c73334p-2f,
    -0x1.b8ccccp-2f, -0x1.aa6664p-2f, -0x1.9c0000p-2f, -0x1.8d9998p-2f,
    -0x1.7f3334p-2f, -0x1.70ccccp-2f, -0x1.626664p-2f, -0x1.540000p-2f,
    -0x1.459998p-2f, -0x1.373334p-2f, -0x1.28ccccp-2f, -0x1.1a6668p-2f,
    -0x1.0c0000p-2f, -0x1.fb3334p-3f, -0x1.de6668p-3f, -0x1.c1999ap-3f,
    -0x1.a4ccccp-3f, -0x1.880000p-3f, -0x1.6b3332p-3f, -0x1.4e6666p-3f,
    -0x1.31999ap-3f, -0x1.14ccccp-3f, -0x1.f00000p-4f, -0x1.b66668p-4f,
    -0x1.93d70ap-4f, -0x1.8851eap-4f, -0x1.7ccccep-4f, -0x1.7147aep-4f,
    -0x1.65c290p-4f, -0x1.5a3d70p-4f, -0x1.4eb850p-4f, -0x1.433334p-4f,
    -0x1.37ae14p-4f, -0x1.2c28f6p-4f, -0x1.20a3d6p-4f, -0x1.151ebap-4f,
    -0x1.09999ap-4f, -0x1.fc28f4p-5f, -0x1.e51ebap-5f, -0x1.ce147ap-5f,
    -0x1.b70a3ep-5f, -0x1.a00000p-5f, -0x1.88f5c2p-5f, -0x1.71eb86p-5f,
    -0x1.5ae146p-5f, -0x1.43d70ap-5f, -0x1.2ccccep-5f, -0x1.15c28ep-5f,
    -0x1.fd70a4p-6f, -0x1.cf5c26p-6f, -0x1.a147aep-6f, -0x1.733334p-6f,
    -0x1.451eb8p-6f, -0x1.170a3ep-6f, -0x1.d1eb86p-7f, -0x1.75c290p-7f,
    -0x1.3e76c8p-7f, -0x1.2c0830p-7f, -0x1.19999ap-7f, -0x1.072b02p-7f,
    -0x1.e978d4p-8f, -0x1.c49ba6p-8f, -0x1.9fbe76p-8f, -0x1.7ae148p-8f,
    -0x1.56041ap-8f, -0x1.3126e8p-8f, -0x1.0c49bap-8f, -0x1.ced914p-9f,
    -0x1.851eb8p-9f, -0x1.3b645ap-9f, -0x1.e353f8p-10f, -0x1.4fdf3ap-10f,
    -0x1.eecbfep-11f, -0x1.b3d07cp-11f, -0x1.78d500p-11f, -0x1.3dd982p-11f,
    -0x1.02de02p-11f, -0x1.8fc506p-12f, -0x1.19ce0ap-12f, -0x1.47ae16p-13f,
    -0x1.743e96p-14f, -0x1.15df66p-14f, -0x1.6f0068p-15f, -0x1.64840cp-16f,
    -0x1.040bfep-17f, -0x1.b43528p-19f, -0x1.27476ep-21f, 0x0.0p+0f,
    0x1.27476ep-21f, 0x1.b43528p-19f, 0x1.040bfep-17f, 0x1.64840cp-16f,
    0x1.6f0068p-15f, 0x1.15df66p-14f, 0x1.743e96p-14f, 0x1.47ae16p-13f,
    0x1.19ce0ap-12f, 0x1.8fc506p-12f, 0x1.02de02p-11f, 0x1.3dd982p-11f,
    0x1.78d500p-11f, 0x1.b3d07cp-11f, 0x1.eecbfep-11f, 0x1.4fdf3ap-10f,
    0x1.e353f8p-10f, 0x1.3b645ap-9f, 0x1.851eb8p-9f, 0x1.ced914p-9f,
    0x1.0c49bap-8f, 0x1.3126e8p-8f, 0x1.56041ap-8f, 0x1.7ae148p-8f,
    0x1.9fbe76p-8f, 0x1.c49ba6p-8f, 0x1.e978d4p-8f, 0x1.072b02p-7f,
    0x1.19999ap-7f, 0x1.2c0830p-7f, 0x1.3e76c8p-7f, 0x1.75c290p-7f,
    0x1.d1eb86p-7f, 0x1.170a3ep-6f, 0x1.451eb8p-6f, 0x1.733334p-6f,
    0x1.a147aep-6f, 0x1.cf5c26p-6f, 0x1.fd70a4p-6f, 0x1.15c28ep-5f,
    0x1.2ccccep-5f, 0x1.43d70ap-5f, 0x1.5ae146p-5f, 0x1.71eb86p-5f,
    0x1.88f5c2p-5f, 0x1.a00000p-5f, 0x1.b70a3ep-5f, 0x1.ce147ap-5f,
    0x1.e51ebap-5f, 0x1.fc28f4p-5f, 0x1.09999ap-4f, 0x1.151ebap-4f,
    0x1.20a3d6p-4f, 0x1.2c28f6p-4f, 0x1.37ae14p-4f, 0x1.433334p-4f,
    0x1.4eb850p-4f, 0x1.5a3d70p-4f, 0x1.65c290p-4f, 0x1.7147aep-4f,
    0x1.7ccccep-4f, 0x1.8851eap-4f, 0x1.93d70ap-4f, 0x1.b66668p-4f,
    0x1.f00000p-4f, 0x1.14ccccp-3f, 0x1.31999ap-3f, 0x1.4e6666p-3f,
    0x1.6b3332p-3f, 0x1.880000p-3f, 0x1.a4ccccp-3f, 0x1.c1999ap-3f,
    0x1.de6668p-3f, 0x1.fb3334p-3f, 0x1.0c0000p-2f, 0x1.1a6668p-2f,
    0x1.28ccccp-2f, 0x1.373334p-2f, 0x1.459998p-2f, 0x1.540000p-2f,
    0x1.626664p-2f, 0x1.70ccccp-2f, 0x1.7f3334p-2f, 0x1.8d9998p-2f,
    0x1.9c0000p-2f, 0x1.aa6664p-2f, 0x1.b8ccccp-2f, 0x1.c73334p-2f,
    0x1.d59998p-2f, 0x1.e40000p-2f, 0x1.f26668p-2f, 0x1.006666p-1f,
    0x1.07999ap-1f, 0x1.0eccccp-1f, 0x1.160000p-1f, 0x1.1d3334p-1f,
    0x1.246668p-1f, 0x1.2b999ap-1f, 0x1.32ccccp-1f, 0x1.3a0000p-1f,
    0x1.413334p-1f, 0x1.486666p-1f, 0x1.4f999ap-1f, 0x1.56cccep-1f,
    0x1.5e0000p-1f, 0x1.653334p-1f, 0x1.6c6668p-1f, 0x1.73999ap-1f,
    0x1.7acccep-1f, 0x1.820000p-1f, 0x1.893334p-1f, 0x1.906666p-1f,
    0x1.979998p-1f, 0x1.9eccccp-1f, 0x1.a60000p-1f, 0x1.ad3332p-1f,
    0x1.b46666p-1f, 0x1.bb9998p-1f, 0x1.c2ccccp-1f, 0x1.ca0000p-1f,
    0x1.d13334p-1f, 0x1.d86666p-1f, 0x1.df9998p-1f, 0x1.e6ccccp-1f,
    0x1.ee0000p-1f, 0x1.f53332p-1f, 0x1.fc6666p-1f, 0x1.000000p+0f,
};

bool cm_nf4_blocksize_valid(int64_t blocksize) {
    for (int64_t b = 32; b <= 4096; b *= 2)
        if (blocksize == b) return true;
    return false;
}

size_t cm_nf4_n_blocks(size_t n, int blocksize) { return n / (size_t)blocksize + (n % (size_t)blocksize != 0); }

uint8_t cm_nf4_quantize_scaled(float s) {
    /* the count of midpoints below s: branch-free, so a block's loop vectorizes */
    int q = 0;
    for (int i = 0; i < 15; i++) q += s > nf4_mid[i];
    return (uint8_t)q;
}

/* The count of the 255 midpoints of `mid` strictly below s (a lower bound search). */
static uint8_t search_mid(const float *mid, float s) {
    int lo = 0, hi = 255; /* the answer is in [lo, hi] */
    while (lo < hi) {
        int m = (lo + hi) / 2;
        if (mid[m] < s)
            lo = m + 1;
        else
            hi = m;
    }
    return (uint8_t)lo;
}

static void map_midpoints(const float map[256], float mid[255]) {
    for (int i = 0; i < 255; i++) mid[i] = (map[i] + map[i + 1]) / 2;
}

uint8_t cm_nf4_quantize_map(const float map[256], float s) {
    float mid[255];
    map_midpoints(map, mid);
    return search_mid(mid, s);
}

/* bitsandbytes' scaling of a block: the reciprocal of the absmax clamped to 1e-38 (a float32 subnormal, as
 * torch's clamp(min=1e-38) makes it), then clamp(x * r, -1, 1). NaN stays NaN (and takes code 0). */
static float block_reciprocal(float absmax) { return 1.0f / (absmax > 1e-38f ? absmax : 1e-38f); }

static float clamp1(float s) { return s > 1.0f ? 1.0f : s < -1.0f ? -1.0f : s; }

static float block_absmax(const float *x, size_t n) {
    float a = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float v = fabsf(x[i]);
        if (v > a || v != v) a = v; /* a NaN is the maximum, as torch's max makes it */
    }
    return a;
}

void cm_nf4_quantize(const float *x, size_t n, int blocksize, uint8_t *packed, float *absmax) {
    size_t nb = cm_nf4_n_blocks(n, blocksize);
    uint8_t q[4096];
    for (size_t b = 0; b < nb; b++) {
        size_t first = b * (size_t)blocksize, len = n - first < (size_t)blocksize ? n - first : (size_t)blocksize;
        float a = block_absmax(x + first, len), r = block_reciprocal(a);
        absmax[b] = a;
        for (size_t i = 0; i < len; i++) q[i] = cm_nf4_quantize_scaled(clamp1(x[first + i] * r));
        /* blocks start at even flat indices (the block size is even): whole bytes, high nibble first */
        uint8_t *out = packed + first / 2;
        for (size_t i = 0; i + 1 < len; i += 2) out[i / 2] = (uint8_t)(q[i] << 4 | q[i + 1]);
        if (len % 2) out[len / 2] = (uint8_t)(q[len - 1] << 4 | cm_nf4_quantize_scaled(0.0f));
    }
}

void cm_nf4_absmax(const float *x, size_t n, int blocksize, float *absmax) {
    size_t nb = cm_nf4_n_blocks(n, blocksize);
    for (size_t b = 0; b < nb; b++) {
        size_t first = b * (size_t)blocksize, len = n - first < (size_t)blocksize ? n - first : (size_t)blocksize;
        absmax[b] = block_absmax(x + first, len);
    }
}

void cm_nf4_dequantize(const uint8_t *packed, const float *absmax, int blocksize, size_t first, size_t n,
                       float *out) {
    size_t i = first, end = first + n, bs = (size_t)blocksize;
    float *o = out;
    while (i < end) {
        /* one block (or the part of it in range) at a time: its scale read once */
        size_t b = i / bs, stop = (b + 1) * bs < end ? (b + 1) * bs : end;
        float a = absmax[b];
        if (i % 2 && i < stop) {
            *o++ = cm_nf4_code[packed[i / 2] & 15] * a;
            i++;
        }
        for (; i + 1 < stop; i += 2) {
            uint8_t byte = packed[i / 2];
            *o++ = cm_nf4_code[byte >> 4] * a;
            *o++ = cm_nf4_code[byte & 15] * a;
        }
        if (i < stop) {
            *o++ = cm_nf4_code[packed[i / 2] >> 4] * a;
            i++;
        }
    }
}

void cm_nf4_double_quant(const float *absmax, size_t nb, uint8_t *q, float *nested_absmax, float *offset) {
    double sum = 0;
    for (size_t i = 0; i < nb; i++) sum += absmax[i];
    float off = nb ? (float)(sum / (double)nb) : 0.0f;
    *offset = off;
    float mid[255];
    map_midpoints(cm_nf4_dynamic_map, mid);
    size_t nn = cm_nf4_n_blocks(nb, CM_NF4_NESTED_BLOCKSIZE);
    for (size_t b = 0; b < nn; b++) {
        size_t first = b * CM_NF4_NESTED_BLOCKSIZE,
               len = nb - first < CM_NF4_NESTED_BLOCKSIZE ? nb - first : CM_NF4_NESTED_BLOCKSIZE;
        float centred[CM_NF4_NESTED_BLOCKSIZE];
        for (size_t i = 0; i < len; i++) centred[i] = absmax[first + i] - off;
        float a = block_absmax(centred, len), r = block_reciprocal(a);
        nested_absmax[b] = a;
        for (size_t i = 0; i < len; i++) q[first + i] = search_mid(mid, clamp1(centred[i] * r));
    }
}

void cm_nf4_double_dequant(const uint8_t *q, const float *nested_absmax, const float map[256], float offset,
                           size_t nb, int nested_blocksize, float *absmax) {
    for (size_t i = 0; i < nb; i++) {
        /* two statements: a float product, then a float sum, never one fused multiply-add */
        float scaled = map[q[i]] * nested_absmax[i / (size_t)nested_blocksize];
        absmax[i] = scaled + offset;
    }
}

/* ---- the in-memory weight ---- */

cm_status cm_nf4_weight_quantize(const float *w, int64_t rows, int64_t cols, bool double_quant,
                                 cm_nf4_weight **out) {
    *out = NULL;
    uint64_t n;
    if (rows <= 0 || cols <= 0 || __builtin_mul_overflow((uint64_t)rows, (uint64_t)cols, &n) ||
        n > ((uint64_t)1 << 50))
        return cm_error(CM_ERR_ARG, "NF4: cannot quantize a [%lld, %lld] weight", (long long)rows,
                        (long long)cols);
    size_t nb = cm_nf4_n_blocks((size_t)n, CM_NF4_BLOCKSIZE), packed_bytes = ((size_t)n + 1) / 2;
    size_t head = (sizeof(cm_nf4_weight) + 63) & ~(size_t)63, scales = (nb * sizeof(float) + 63) & ~(size_t)63;
    char *buf = aligned_alloc(64, head + scales + ((packed_bytes + 63) & ~(size_t)63));
    if (!buf)
        return cm_error(CM_ERR_NOMEM, "NF4: out of memory quantizing a [%lld, %lld] weight", (long long)rows,
                        (long long)cols);
    cm_nf4_weight *q = (cm_nf4_weight *)buf;
    float *absmax = (float *)(buf + head);
    uint8_t *packed = (uint8_t *)(buf + head + scales);
    cm_nf4_quantize(w, (size_t)n, CM_NF4_BLOCKSIZE, packed, absmax);
    if (double_quant) {
        uint8_t *codes = malloc(nb);
        float *nested = malloc(cm_nf4_n_blocks(nb, CM_NF4_NESTED_BLOCKSIZE) * sizeof(float)), offset;
        if (!codes || !nested) {
            free(codes);
            free(nested);
            free(buf);
            return cm_error(CM_ERR_NOMEM, "NF4: out of memory for the double quantization");
        }
        cm_nf4_double_quant(absmax, nb, codes, nested, &offset);
        cm_nf4_double_dequant(codes, nested, cm_nf4_dynamic_map, offset, nb, CM_NF4_NESTED_BLOCKSIZE, absmax);
        free(codes);
        free(nested);
    }
    *q = (cm_nf4_weight){rows, cols, CM_NF4_BLOCKSIZE, packed, absmax};
    *out = q;
    return CM_OK;
}

void cm_nf4_weight_free(cm_nf4_weight *w) { free(w); }

void cm_nf4_row_to_f32(const cm_nf4_weight *w, int64_t r, float *dst) {
    cm_nf4_dequantize(w->packed, w->absmax, w->blocksize, (size_t)r * (size_t)w->cols, (size_t)w->cols, dst);
}

size_t cm_nf4_weight_bytes(const cm_nf4_weight *w) {
    size_t n = (size_t)w->rows * (size_t)w->cols;
    return (n + 1) / 2 + cm_nf4_n_blocks(n, w->blocksize) * sizeof(float);
}

/* ---- references ---- */

void cm_matmul_nf4_ref(float *y, const float *x, int n, const cm_nf4_weight *w) {
    int rows = (int)w->rows, cols = (int)w->cols;
    float *row = malloc((size_t)cols * sizeof(float));
    for (int r = 0; row && r < rows; r++) {
        cm_nf4_row_to_f32(w, r, row);
        for (int t = 0; t < n; t++) {
            double s = 0;
            for (int c = 0; c < cols; c++) s += (double)row[c] * x[(size_t)t * cols + c];
            y[(size_t)t * rows + r] = (float)s;
        }
    }
    free(row);
}

void cm_matmul_nf4_t_ref(float *dx, const float *dy, int n, const cm_nf4_weight *w, bool accumulate) {
    int rows = (int)w->rows, cols = (int)w->cols;
    double *acc = calloc((size_t)n * cols + 1, sizeof(double));
    float *row = malloc((size_t)cols * sizeof(float));
    for (int r = 0; acc && row && r < rows; r++) {
        cm_nf4_row_to_f32(w, r, row);
        for (int t = 0; t < n; t++) {
            double g = dy[(size_t)t * rows + r];
            for (int c = 0; c < cols; c++) acc[(size_t)t * cols + c] += g * row[c];
        }
    }
    for (size_t i = 0; acc && row && i < (size_t)n * cols; i++)
        dx[i] = accumulate ? (float)(dx[i] + acc[i]) : (float)acc[i];
    free(acc);
    free(row);
}

/* ---- the generic path: a row decoded to f32, then the active ISA's dot products ---- */

typedef struct {
    float *const *y;
    const float *x;
    const cm_nf4_weight *const *w;
    int n, count;
    cm_vec_ops ops;
} generic_job;

static void generic_worker(void *arg, int thread, int n_threads) {
    const generic_job *j = arg;
    int cols = (int)j->w[0]->cols;
    float stack_row[4096];
    float *row = cols <= 4096 ? stack_row : malloc((size_t)cols * sizeof(float));
    if (!row) return; /* only for rows past 4096 without memory; the caller checked the heap beforehand */
    for (int k = 0; k < j->count; k++) {
        const cm_nf4_weight *w = j->w[k];
        int r0, r1;
        cm_split_range((int)w->rows, n_threads, thread, &r0, &r1);
        for (int r = r0; r < r1; r++) {
            cm_nf4_row_to_f32(w, r, row);
            for (int t = 0; t < j->n; t++)
                j->y[k][(size_t)t * w->rows + r] = j->ops.dot(row, j->x + (size_t)t * cols, cols);
        }
    }
    if (row != stack_row) free(row);
}

static void matmul_generic(float *const *y, const float *x, int n, const cm_nf4_weight *const *w, int count,
                           cm_pool *pool) {
    generic_job j = {y, x, w, n, count, {0}};
    cm_vec_ops_get(&j.ops);
    if (w[0]->cols > 4096) {
        /* rows wider than the stack buffer: check that the heap can give every thread one */
        void *probe = malloc((size_t)w[0]->cols * sizeof(float) * (size_t)cm_pool_size(pool));
        if (!probe) {
            for (int k = 0; k < count; k++) cm_matmul_nf4_ref(y[k], x, n, w[k]);
            return;
        }
        free(probe);
    }
    cm_pool_run(pool, generic_worker, &j);
}

void cm_matmul_nf4_multi(float *const *y, const float *x, int n, const cm_nf4_weight *const *w, int count,
                         cm_pool *pool) {
    if (n <= 0 || count <= 0) return;
    size_t work = 0;
    for (int k = 0; k < count; k++) work += (size_t)w[k]->rows * (size_t)w[k]->cols * (size_t)n;
    if (work < 16384) pool = NULL; /* not worth waking threads for */
    cm_isa isa = cm_isa_active();
    bool simd = isa != CM_ISA_SCALAR;
    for (int k = 0; k < count && simd; k++) simd = cm_nf4_simd_ok(w[k], w[0]->cols);
    if (simd && cm_nf4_matmul_simd(y, x, n, w, count, pool, isa) == 0) return;
    matmul_generic(y, x, n, w, count, pool);
}

void cm_matmul_nf4(float *y, const float *x, int n, const cm_nf4_weight *w, cm_pool *pool) {
    cm_matmul_nf4_multi(&y, x, n, &w, 1, pool);
}

/* ---- the transpose product: the generic path (nf4_simd.c has the register-tiled one) ---- */

/* Each thread owns a range of dx's columns: it decodes that slice of a panel of W's rows once, then adds the
 * panel's rows into every token's slice of dx (which stays in L1 across the panel). */
#define T_PANEL_ROWS 16
#define T_SLICE 256

typedef struct {
    float *dx;
    const float *dy;
    const cm_nf4_weight *w;
    int n;
    bool accumulate;
    cm_vec_ops ops;
} t_job;

static void t_worker(void *arg, int thread, int n_threads) {
    const t_job *j = arg;
    const cm_nf4_weight *w = j->w;
    int rows = (int)w->rows, cols = (int)w->cols, s0, s1;
    cm_split_range((cols + T_SLICE - 1) / T_SLICE, n_threads, thread, &s0, &s1);
    float panel[T_PANEL_ROWS * T_SLICE];
    for (int s = s0; s < s1; s++) {
        int c0 = s * T_SLICE, len = cols - c0 < T_SLICE ? cols - c0 : T_SLICE;
        if (!j->accumulate)
            for (int t = 0; t < j->n; t++) memset(j->dx + (size_t)t * cols + c0, 0, (size_t)len * sizeof(float));
        for (int r0 = 0; r0 < rows; r0 += T_PANEL_ROWS) {
            int pr = rows - r0 < T_PANEL_ROWS ? rows - r0 : T_PANEL_ROWS;
            for (int i = 0; i < pr; i++)
                cm_nf4_dequantize(w->packed, w->absmax, w->blocksize, (size_t)(r0 + i) * cols + c0, (size_t)len,
                                  panel + i * T_SLICE);
            for (int t = 0; t < j->n; t++) {
                float *d = j->dx + (size_t)t * cols + c0;
                const float *g = j->dy + (size_t)t * rows + r0;
                for (int i = 0; i < pr; i++) j->ops.axpy(d, g[i], panel + i * T_SLICE, len);
            }
        }
    }
}

void cm_matmul_nf4_t(float *dx, const float *dy, int n, const cm_nf4_weight *w, bool accumulate,
                     cm_pool *pool) {
    if (n <= 0) return;
    if ((size_t)w->rows * (size_t)w->cols * (size_t)n < 16384) pool = NULL;
    cm_isa isa = cm_isa_active();
    if (isa != CM_ISA_SCALAR && cm_nf4_simd_ok(w, w->cols) &&
        cm_nf4_matmul_t_simd(dx, dy, n, w, accumulate, pool, isa) == 0)
        return;
    t_job j = {dx, dy, w, n, accumulate, {0}};
    cm_vec_ops_get(&j.ops);
    cm_pool_run(pool, t_worker, &j);
}
