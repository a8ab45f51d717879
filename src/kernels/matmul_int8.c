/* Matmuls of Q8_0 / Q4_0 weights: the activations are quantized to Q8_0 rows once, then every weight row is
 * dotted with them in integers, block by block, as ggml does. */
#include <stdlib.h>

#include "camelid/kernels.h"
#include "camelid/quant.h"

int cm_matmul_is_int8(cm_dtype t) { return t == CM_DTYPE_Q8_0 || t == CM_DTYPE_Q4_0; }

void *cm_quantize_activations_q8_0(const float *x, int n, int cols) {
    size_t blocks = (size_t)cols / CM_QK8_0;
    cm_block_q8_0 *xq = malloc((size_t)n * blocks * sizeof *xq + 1);
    if (!xq) return NULL;
    for (int t = 0; t < n; t++) cm_quantize_row_q8_0(x + (size_t)t * cols, xq + t * blocks, (size_t)cols);
    return xq;
}

typedef struct {
    float *y;
    const cm_block_q8_0 *xq;
    int n, rows, cols;
    const void *w;
    cm_dtype wtype;
} int8_job;

static void int8_worker(void *arg, int thread, int n_threads) {
    const int8_job *j = arg;
    int r0, r1;
    cm_split_range(j->rows, n_threads, thread, &r0, &r1);
    size_t row_bytes = cm_row_bytes(j->wtype, (size_t)j->cols), xq_blocks = (size_t)j->cols / CM_QK8_0;
    for (int r = r0; r < r1; r++) {
        const void *wrow = (const char *)j->w + (size_t)r * row_bytes;
        for (int t = 0; t < j->n; t++) {
            const cm_block_q8_0 *xr = j->xq + t * xq_blocks;
            j->y[(size_t)t * j->rows + r] = j->wtype == CM_DTYPE_Q8_0
                                                ? cm_vec_dot_q8_0_q8_0_ref(wrow, xr, (size_t)j->cols)
                                                : cm_vec_dot_q4_0_q8_0_ref(wrow, xr, (size_t)j->cols);
        }
    }
}

void cm_matmul_int8(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols,
                    cm_pool *pool) {
    cm_block_q8_0 *xq = cm_quantize_activations_q8_0(x, n, cols);
    if (!xq) {
        cm_matmul_ref(y, x, n, w, wtype, rows, cols); /* no memory for the fast path */
        return;
    }
    int8_job job = {y, xq, n, rows, cols, w, wtype};
    if ((size_t)rows * cols * n < 16384) pool = NULL;
    cm_pool_run(pool, int8_worker, &job);
    free(xq);
}
