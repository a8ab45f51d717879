#include "camelid/kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

float cm_dot_f32(const float *a, const float *b, int n) {
    /* eight independent partial sums: the shape the SIMD variants use, and fast even as plain C */
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Rows of W converted to f32 a few at a time, each dotted with every activation of the batch, so the
 * conversion cost is paid once per row. */
static void matmul_rows(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols,
                        int r0, int r1, float *rowbuf) {
    size_t esize = cm_dtype_block_bytes(wtype);
    for (int r = r0; r < r1; r++) {
        const float *row;
        if (wtype == CM_DTYPE_F32) {
            row = (const float *)w + (size_t)r * cols;
        } else {
            cm_convert_to_f32(wtype, (const char *)w + (size_t)r * cols * esize, rowbuf, (size_t)cols);
            row = rowbuf;
        }
        for (int t = 0; t < n; t++) y[(size_t)t * rows + r] = cm_dot_f32(row, x + (size_t)t * cols, cols);
    }
}

void cm_matmul_ref(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols) {
    float *rowbuf = wtype == CM_DTYPE_F32 ? NULL : malloc((size_t)cols * sizeof(float));
    for (int r = 0; r < rows; r++) {
        const float *row = (const float *)w + (size_t)r * cols;
        if (rowbuf) {
            cm_convert_to_f32(wtype, (const char *)w + (size_t)r * cols * cm_dtype_block_bytes(wtype), rowbuf,
                              (size_t)cols);
            row = rowbuf;
        }
        for (int t = 0; t < n; t++) {
            double s = 0;
            for (int c = 0; c < cols; c++) s += (double)row[c] * x[(size_t)t * cols + c];
            y[(size_t)t * rows + r] = (float)s;
        }
    }
    free(rowbuf);
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
    float *rowbuf = j->wtype == CM_DTYPE_F32 ? NULL : malloc((size_t)j->cols * sizeof(float));
    if (j->wtype != CM_DTYPE_F32 && !rowbuf) {
        /* no scratch: convert element by element through the reference path */
        for (int r = r0; r < r1; r++) {
            size_t es = cm_dtype_block_bytes(j->wtype);
            for (int t = 0; t < j->n; t++) {
                float s = 0.0f, v;
                for (int c = 0; c < j->cols; c++) {
                    cm_convert_to_f32(j->wtype, (const char *)j->w + ((size_t)r * j->cols + c) * es, &v, 1);
                    s += v * j->x[(size_t)t * j->cols + c];
                }
                j->y[(size_t)t * j->rows + r] = s;
            }
        }
        return;
    }
    matmul_rows(j->y, j->x, j->n, j->w, j->wtype, j->rows, j->cols, r0, r1, rowbuf);
    free(rowbuf);
}

void cm_matmul(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols,
               cm_pool *pool) {
    matmul_job job = {y, x, n, rows, cols, w, wtype};
    /* small problems are not worth waking threads for */
    if ((size_t)rows * cols * n < 16384) pool = NULL;
    cm_pool_run(pool, matmul_worker, &job);
}

void cm_rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    ss /= (float)n;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (int i = 0; i < n; i++) out[i] = weight[i] * (ss * x[i]);
}

void cm_softmax(float *x, int n) {
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

void cm_swiglu(float *a, const float *b, int n) {
    for (int i = 0; i < n; i++) {
        float v = a[i];
        v *= 1.0f / (1.0f + expf(-v));
        a[i] = v * b[i];
    }
}
