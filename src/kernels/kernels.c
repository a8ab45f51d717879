#include "camelid/kernels.h"

#include <stdbool.h>
#include "camelid/isa.h"
#include "camelid/nf4.h"
#include "camelid/quant.h"
#include "simd.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The plain-C references; cm_isa_active() picks them or the SIMD variants of simd_ops.c / gemm_f32.c. */
static float dot_ref(const float *a, const float *b, int n) {
    /* eight independent partial sums: the shape the SIMD variants use, and fast even as plain C */
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

void cm_row_to_f32(cm_dtype t, const void *src, float *dst, size_t n) {
    switch (t) {
    case CM_DTYPE_Q8_0: cm_dequantize_row_q8_0(src, dst, n); break;
    case CM_DTYPE_Q4_0: cm_dequantize_row_q4_0(src, dst, n); break;
    case CM_DTYPE_Q6_K: cm_dequantize_row_q6_K(src, dst, n); break;
    default: cm_convert_to_f32(t, src, dst, n); break;
    }
}

size_t cm_row_bytes(cm_dtype t, size_t n) { return n / cm_dtype_block_elems(t) * cm_dtype_block_bytes(t); }

/* Rows r0..r1 of a float (F32/F16/BF16) or Q6_K W against every activation of the batch; non-F32 rows are
 * converted once per row. */
static void matmul_rows(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols, int r0,
                        int r1, float *rowbuf) {
    size_t row_bytes = cm_row_bytes(wtype, (size_t)cols);
    for (int r = r0; r < r1; r++) {
        const char *wrow = (const char *)w + (size_t)r * row_bytes;
        const float *row;
        if (wtype == CM_DTYPE_F32) {
            row = (const float *)wrow;
        } else {
            cm_row_to_f32(wtype, wrow, rowbuf, (size_t)cols);
            row = rowbuf;
        }
        for (int t = 0; t < n; t++) y[(size_t)t * rows + r] = dot_ref(row, x + (size_t)t * cols, cols);
    }
}

void cm_matmul_ref(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols) {
    if (wtype == CM_DTYPE_NF4) {
        cm_matmul_nf4_ref(y, x, n, w);
        return;
    }
    float *row = malloc((size_t)cols * sizeof(float)), *xd = NULL;
    cm_block_q8_0 *xq = NULL;
    if (cm_matmul_is_int8(wtype)) {
        /* the reference sees the same quantized activations the fast path uses */
        xq = cm_quantize_activations_q8_0(x, n, cols);
        xd = malloc((size_t)n * cols * sizeof(float));
        for (int t = 0; xq && xd && t < n; t++)
            cm_dequantize_row_q8_0(xq + (size_t)t * (cols / CM_QK8_0), xd + (size_t)t * cols, (size_t)cols);
        x = xd;
    }
    size_t row_bytes = cm_row_bytes(wtype, (size_t)cols);
    for (int r = 0; row && r < rows; r++) {
        cm_row_to_f32(wtype, (const char *)w + (size_t)r * row_bytes, row, (size_t)cols);
        for (int t = 0; t < n; t++) {
            double s = 0;
            for (int c = 0; c < cols; c++) s += (double)row[c] * x[(size_t)t * cols + c];
            y[(size_t)t * rows + r] = (float)s;
        }
    }
    free(row);
    free(xq);
    free(xd);
}

typedef struct {
    float *y;
    const float *x;
    int n, rows, cols;
    const void *w;
    cm_dtype wtype;
} matmul_job;

/* Each thread takes a contiguous band of rows: its slice of W streams through one core's caches. */
static void matmul_worker(void *arg, int thread, int n_threads) {
    const matmul_job *j = arg;
    int r0, r1;
    cm_split_range(j->rows, n_threads, thread, &r0, &r1);
    if (r0 >= r1) return;
    /* a row of scratch on the stack for moderate widths, else the heap */
    float stack_buf[4096];
    float *rowbuf = j->cols <= 4096 ? stack_buf : malloc((size_t)j->cols * sizeof(float));
    if (!rowbuf) rowbuf = stack_buf; /* widths > 4096 without memory: not reachable in practice */
    matmul_rows(j->y, j->x, j->n, j->w, j->wtype, j->rows, j->cols, r0, r1, rowbuf);
    if (rowbuf != stack_buf) free(rowbuf);
}

void cm_matmul(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols, cm_pool *pool) {
    if (wtype == CM_DTYPE_NF4) {
        cm_matmul_nf4(y, x, n, w, pool);
        return;
    }
    if (cm_matmul_is_int8(wtype)) {
        cm_matmul_int8(y, x, n, w, wtype, rows, cols, pool);
        return;
    }
    matmul_job job = {y, x, n, rows, cols, w, wtype};
    /* small problems are not worth waking threads for */
    if ((size_t)rows * cols * n < 16384) pool = NULL;
    cm_isa isa = cm_isa_active();
    if (isa != CM_ISA_SCALAR && cm_gemm_float(y, x, n, w, wtype, rows, cols, pool, isa) == 0) return;
    cm_pool_run(pool, matmul_worker, &job);
}

static void axpy_ref(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

void cm_rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    ss /= (float)n;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (int i = 0; i < n; i++) out[i] = weight[i] * (ss * x[i]);
}

static void softmax_ref(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

static void swiglu_ref(float *a, const float *b, int n) {
    for (int i = 0; i < n; i++) {
        float v = a[i];
        v *= 1.0f / (1.0f + expf(-v));
        a[i] = v * b[i];
    }
}

void cm_vec_ops_get(cm_vec_ops *ops) {
    ops->dot = dot_ref;
    ops->axpy = axpy_ref;
    ops->softmax = softmax_ref;
    ops->swiglu = swiglu_ref;
#if defined(__x86_64__)
    switch (cm_isa_active()) {
    case CM_ISA_AVX512:
        *ops = (cm_vec_ops){cm_dot_f32_avx512, cm_axpy_f32_avx512, cm_softmax_avx512, cm_swiglu_avx512};
        break;
    case CM_ISA_AVX2:
        *ops = (cm_vec_ops){cm_dot_f32_avx2, cm_axpy_f32_avx2, cm_softmax_avx2, cm_swiglu_avx2};
        break;
    case CM_ISA_SCALAR: break;
    }
#endif
}

float cm_dot_f32(const float *a, const float *b, int n) {
    cm_vec_ops ops;
    cm_vec_ops_get(&ops);
    return ops.dot(a, b, n);
}

void cm_axpy_f32(float *y, float a, const float *x, int n) {
    cm_vec_ops ops;
    cm_vec_ops_get(&ops);
    ops.axpy(y, a, x, n);
}

void cm_softmax(float *x, int n) {
    cm_vec_ops ops;
    cm_vec_ops_get(&ops);
    ops.softmax(x, n);
}

void cm_swiglu(float *a, const float *b, int n) {
    cm_vec_ops ops;
    cm_vec_ops_get(&ops);
    ops.swiglu(a, b, n);
}
