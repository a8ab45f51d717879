/* Matmuls of Q8_0 / Q4_0 / Q6_K weights: the activations are quantized to Q8_0 once (the same bytes as
 * cm_quantize_row_q8_0), then every weight row is dotted with them in integers, block by block, as ggml does.
 *
 * Paths, chosen per call by cm_isa_active():
 *   scalar  the reference dots (cm_vec_dot_*_ref), one (row, token) pair at a time;
 *   avx2    quant_avx2.c: tiles of 4 rows x 2 tokens, pmaddubsw/pmaddwd; batches of 8 tokens or more of
 *           Q8_0 / Q4_0 weights take the AVX2 panel kernel (quant_avx2_panel.c, 8 rows x 8 tokens);
 *   avx512  quant_avx512.c: tiles of 4 rows x 4 tokens, vpdpbusd (needs AVX-512 VNNI; without it, avx2);
 *           batches of 8 tokens or more of Q8_0 / Q4_0 weights take the panel kernel (16 rows x 8 tokens
 *           with whole blocks in int32 lanes, quant_internal.h).
 * The integer dot of every 32-element block is exact in every path; only the order of the fp32 sums of
 * (integer x d_w x d_x) differs (tests/unit/test_quant.c states the tolerance). Rows are split across the
 * pool's threads in whole tiles; the activations are quantized in parallel over tokens first. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/isa.h"
#include "camelid/kernels.h"
#include "camelid/nf4.h"
#include "camelid/quant.h"
#include "kernels/quant_internal.h"
#include "kernels/simd.h"

int cm_matmul_is_int8(cm_dtype t) {
    return t == CM_DTYPE_Q8_0 || t == CM_DTYPE_Q4_0 || t == CM_DTYPE_Q6_K;
}

void *cm_quantize_activations_q8_0(const float *x, int n, int cols) {
    size_t blocks = (size_t)cols / CM_QK8_0;
    cm_block_q8_0 *xq = malloc((size_t)n * blocks * sizeof *xq + 1);
    if (!xq) return NULL;
    for (int t = 0; t < n; t++) cm_quantize_row_q8_0(x + (size_t)t * cols, xq + t * blocks, (size_t)cols);
    return xq;
}

/* ---- scalar reference path ---- */

typedef struct {
    float *y;
    const cm_block_q8_0 *xq;
    int n, rows, cols;
    const void *w;
    cm_dtype wtype;
} ref_job;

static void ref_worker(void *arg, int thread, int n_threads) {
    const ref_job *j = arg;
    int r0, r1;
    cm_split_range(j->rows, n_threads, thread, &r0, &r1);
    size_t row_bytes = cm_row_bytes(j->wtype, (size_t)j->cols), xq_blocks = (size_t)j->cols / CM_QK8_0;
    for (int r = r0; r < r1; r++) {
        const void *wrow = (const char *)j->w + (size_t)r * row_bytes;
        for (int t = 0; t < j->n; t++) {
            const cm_block_q8_0 *xr = j->xq + t * xq_blocks;
            float v;
            switch (j->wtype) {
            case CM_DTYPE_Q8_0:
                v = cm_vec_dot_q8_0_q8_0_ref(wrow, xr, (size_t)j->cols);
                break;
            case CM_DTYPE_Q4_0:
                v = cm_vec_dot_q4_0_q8_0_ref(wrow, xr, (size_t)j->cols);
                break;
            default:
                v = cm_vec_dot_q6_K_q8_0_ref(wrow, xr, (size_t)j->cols);
                break;
            }
            j->y[(size_t)t * j->rows + r] = v;
        }
    }
}

static void matmul_scalar(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols,
                          cm_pool *pool) {
    cm_block_q8_0 *xq = cm_quantize_activations_q8_0(x, n, cols);
    if (!xq) {
        cm_matmul_ref(y, x, n, w, wtype, rows, cols); /* no memory for the fast path */
        return;
    }
    ref_job job = {y, xq, n, rows, cols, w, wtype};
    cm_pool_run(pool, ref_worker, &job);
    free(xq);
}

/* ---- SIMD paths ---- */

typedef struct {
    cm_qact act;
    const float *x;
    float *y;
    const void *w;
    cm_dtype wtype;
    size_t row_bytes;
    int rows;
    bool avx512;
    uint8_t *xp; /* the prefill panels' activation groups (quant_internal.h), or NULL: the tile path */
} simd_job;

/* Tokens [t0, t1) of a into the panel kernel's groups of 8 tokens: per block the 32 quants of each token, its
 * scale and its correction (the sum of the block's 8 corr lanes). */
static void panel_acts(const cm_qact *a, uint8_t *xp, int t0, int t1) {
    const int nb = a->cols / CM_QK8_0;
    const size_t qstride = (size_t)a->nchunk * CM_QCHUNK, sstride = (size_t)a->nchunk * 16;
    for (int t = t0; t < t1; t++) {
        const int j = t % CM_QPANEL_TOKENS;
        uint8_t *g = xp + (size_t)(t / CM_QPANEL_TOKENS) * nb * CM_QPANEL_XBYTES;
        for (int b = 0; b < nb; b++) {
            uint8_t *dst = g + (size_t)b * CM_QPANEL_XBYTES;
            memcpy(dst + 32 * j, a->qs + t * qstride + (size_t)b * CM_QK8_0, CM_QK8_0);
            memcpy(dst + 256 + 4 * j, a->dx + t * sstride + (size_t)b * 8, 4);
            int32_t sum = 0; /* no corr (Q8_0 on AVX2, the sign trick): 0 */
            if (a->corr) {
                const int32_t *c = a->corr + t * sstride + (size_t)b * 8;
                for (int l = 0; l < 8; l++) sum += c[l];
            }
            memcpy(dst + 288 + 4 * j, &sum, 4);
        }
    }
}

static void fill_worker(void *arg, int thread, int n_threads) {
    simd_job *j = arg;
    int t0, t1;
    cm_split_range(j->act.n, n_threads, thread, &t0, &t1);
    if (t0 >= t1) return;
    if (j->avx512)
        cm_qact_fill_avx512(&j->act, j->x, t0, t1);
    else
        cm_qact_fill_avx2(&j->act, j->x, t0, t1);
    if (j->xp) panel_acts(&j->act, j->xp, t0, t1);
}

/* Whole panels (16 rows on AVX-512, 8 on AVX2) per thread, repacked one at a time into this thread's
 * scratch. */
static void panel_worker(const simd_job *j, int thread, int n_threads) {
    const int pr = j->avx512 ? CM_QPANEL_ROWS : CM_QPANEL2_ROWS;
    int b, e;
    cm_split_range((j->rows + pr - 1) / pr, n_threads, thread, &b, &e);
    int r0 = pr * b, r1 = pr * e < j->rows ? pr * e : j->rows;
    if (r0 >= r1) return;
    size_t bytes =
        j->avx512 ? cm_qpanel_bytes(j->wtype, j->act.cols) : cm_qpanel_bytes_avx2(j->wtype, j->act.cols);
    void *pk = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!pk) { /* no memory for the panel: the tile kernel, same rows */
        if (j->avx512)
            cm_qgemm_avx512(j->wtype, j->w, j->row_bytes, r0, r1, &j->act, j->y, (size_t)j->rows);
        else
            cm_qgemm_avx2(j->wtype, j->w, j->row_bytes, r0, r1, &j->act, j->y, (size_t)j->rows);
        return;
    }
    if (j->avx512)
        cm_qgemm_panels_avx512(j->wtype, j->w, j->row_bytes, r0, r1, &j->act, j->xp, j->y, (size_t)j->rows,
                               pk);
    else
        cm_qgemm_panels_avx2(j->wtype, j->w, j->row_bytes, r0, r1, &j->act, j->xp, j->y, (size_t)j->rows, pk);
    free(pk);
}

static void gemm_worker(void *arg, int thread, int n_threads) {
    const simd_job *j = arg;
    if (j->xp) {
        panel_worker(j, thread, n_threads);
        return;
    }
    int b, e;
    cm_split_range((j->rows + 3) / 4, n_threads, thread, &b, &e); /* whole tiles of 4 rows */
    int r0 = 4 * b, r1 = 4 * e < j->rows ? 4 * e : j->rows;
    if (r0 >= r1) return;
    if (j->avx512)
        cm_qgemm_avx512(j->wtype, j->w, j->row_bytes, r0, r1, &j->act, j->y, (size_t)j->rows);
    else
        cm_qgemm_avx2(j->wtype, j->w, j->row_bytes, r0, r1, &j->act, j->y, (size_t)j->rows);
}

/* The weights of one multi-matmul, each split across the threads in whole tiles of 4 rows. */
typedef struct {
    simd_job *j;
    int count;
    float *const *y;
    const void *const *w;
    const int *rows;
} multi_job;

static void multi_worker(void *arg, int thread, int n_threads) {
    const multi_job *m = arg;
    simd_job j = *m->j;
    for (int k = 0; k < m->count; k++) {
        j.y = m->y[k];
        j.w = m->w[k];
        j.rows = m->rows[k];
        gemm_worker(&j, thread, n_threads);
    }
}

/* count weights of one type and width against the same activations: quantized once, one pool run. */
static void matmul_int8_multi(float *const *y, const float *x, int n, const void *const *w, cm_dtype wtype,
                              const int *rows, int cols, int count, cm_pool *pool) {
    size_t work = 0;
    for (int k = 0; k < count; k++) work += (size_t)rows[k] * cols * n;
    if (work < 16384) pool = NULL; /* not worth waking threads for */
    cm_isa isa = cm_isa_active();
    if (isa == CM_ISA_SCALAR) {
        for (int k = 0; k < count; k++) matmul_scalar(y[k], x, n, w[k], wtype, rows[k], cols, pool);
        return;
    }
    simd_job j;
    memset(&j, 0, sizeof j);
    j.avx512 = isa == CM_ISA_AVX512 && cm_cpu_features_get()->avx512vnni;
    j.x = x;
    j.y = y[0];
    j.w = w[0];
    j.wtype = wtype;
    j.row_bytes = cm_row_bytes(wtype, (size_t)cols);
    j.rows = rows[0];
    cm_qact *a = &j.act;
    a->n = n;
    a->cols = cols;
    a->nchunk = (cols + CM_QCHUNK - 1) / CM_QCHUNK;
    /* vpdpbusd multiplies unsigned by signed bytes: the AVX-512 path makes every weight type unsigned (Q4_0
     * q + 8, Q6_K q + 32, Q8_0 q + 128) and subtracts offset x sum(x), kept per activation chunk, so a weight
     * chunk costs one vpdpbusd whatever its type (decode uses each weight chunk once) */
    a->corr_shift = wtype == CM_DTYPE_Q4_0 ? 3 : wtype == CM_DTYPE_Q6_K ? 5 : j.avx512 ? 7 : -1;
    size_t per = (size_t)a->nchunk * CM_QCHUNK, qs_bytes = (size_t)n * per,
           sc_bytes = (size_t)n * a->nchunk * 64;
    char *buf = aligned_alloc(64, qs_bytes + 2 * sc_bytes);
    if (!buf) {
        for (int k = 0; k < count; k++) matmul_scalar(y[k], x, n, w[k], wtype, rows[k], cols, pool);
        return;
    }
    a->qs = (int8_t *)buf;
    a->dx = (float *)(buf + qs_bytes);
    a->corr = a->corr_shift >= 0 ? (int32_t *)(buf + qs_bytes + sc_bytes) : NULL;
    /* batches of 8 tokens or more with Q8_0 / Q4_0: the panel kernel (quant_internal.h), VNNI or AVX2 */
    if (n >= CM_QPANEL_TOKENS && (wtype == CM_DTYPE_Q8_0 || wtype == CM_DTYPE_Q4_0)) {
        size_t groups = (size_t)(n + CM_QPANEL_TOKENS - 1) / CM_QPANEL_TOKENS,
               gbytes = (size_t)(cols / CM_QK8_0) * CM_QPANEL_XBYTES;
        j.xp = aligned_alloc(64, groups * gbytes);
        /* the last group's missing tokens are zeros (computed, never stored) */
        if (j.xp) memset(j.xp + (groups - 1) * gbytes, 0, gbytes);
    }
    cm_pool_run(n > 1 ? pool : NULL, fill_worker, &j);
    if (count == 1) {
        cm_pool_run(pool, gemm_worker, &j);
    } else {
        multi_job m = {&j, count, y, w, rows};
        cm_pool_run(pool, multi_worker, &m);
    }
    free(j.xp);
    free(buf);
}

void cm_matmul_int8(float *y, const float *x, int n, const void *w, cm_dtype wtype, int rows, int cols,
                    cm_pool *pool) {
    matmul_int8_multi(&y, x, n, &w, wtype, &rows, cols, 1, pool);
}

void cm_matmul_multi(float *const *y, const float *x, int n, const void *const *w, cm_dtype wtype,
                     const int *rows, int cols, int count, cm_pool *pool) {
    if (wtype == CM_DTYPE_NF4) {
        cm_matmul_nf4_multi(y, x, n, (const cm_nf4_weight *const *)w, count, pool);
        return;
    }
    if (cm_matmul_is_int8(wtype)) {
        matmul_int8_multi(y, x, n, w, wtype, rows, cols, count, pool);
        return;
    }
    size_t work = 0;
    for (int k = 0; k < count; k++) work += (size_t)rows[k] * cols * n;
    cm_isa isa = cm_isa_active();
    if (isa != CM_ISA_SCALAR &&
        cm_gemv_float_multi(y, x, n, w, wtype, rows, cols, count, work < 16384 ? NULL : pool, isa) == 0)
        return;
    for (int k = 0; k < count; k++) cm_matmul(y[k], x, n, w[k], wtype, rows[k], cols, pool);
}
