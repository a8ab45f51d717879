/* The float kernels on every ISA path the CPU has (forced with cm_isa_force) against the plain-C references:
 *  - cm_matmul (F32, F16, BF16, Q6_K weights): |y - ref| <= 1e-5 * sum_c |W[r,c] x[t,c]| (+ 1e-30), ref being
 *    cm_matmul_ref's f64 sum over the same widened weights; odd shapes (cols not a multiple of 8/16/64, rows
 *    not a multiple of the 12/6/4-row blocks, n = 1, 3, 17, 128: both the GEMV and the GEMM paths, full and
 *    partial token panels); 1 and 2 threads give bit-identical results (rows never split a dot product).
 *  - dot, axpy: within 1e-5 of the sum of |products|; softmax: each value within 2e-6 relative + 1e-9 of the
 *    reference; SwiGLU: within 2e-6 relative + 1e-30. */
#include <stdint.h>

#include "camelid/isa.h"
#include "camelid/kernels.h"
#include "camelid/pool.h"
#include "camelid/quant.h"
#include "check.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) & 0xffffff) / (float)(1 << 23) - 1.0f;
}

/* W [rows, cols] of dtype t from f32 values; also the widened values it holds (for the error bound). */
static void *make_weights(cm_dtype t, int rows, int cols, float **widened) {
    float *src = malloc((size_t)rows * cols * sizeof(float));
    for (size_t i = 0; i < (size_t)rows * cols; i++) src[i] = frand();
    size_t rb = cm_row_bytes(t, (size_t)cols);
    char *w = malloc(rb * rows);
    for (int r = 0; r < rows; r++) {
        const float *s = src + (size_t)r * cols;
        char *d = w + rb * r;
        switch (t) {
        case CM_DTYPE_F32:
            memcpy(d, s, (size_t)cols * 4);
            break;
        case CM_DTYPE_F16:
            for (int c = 0; c < cols; c++) ((uint16_t *)d)[c] = cm_f32_to_f16(s[c]);
            break;
        case CM_DTYPE_BF16:
            for (int c = 0; c < cols; c++) ((uint16_t *)d)[c] = cm_f32_to_bf16(s[c]);
            break;
        default:
            cm_quantize_row_q6_K(s, (cm_block_q6_K *)d, (size_t)cols);
            break;
        }
        cm_row_to_f32(t, d, src + (size_t)r * cols, (size_t)cols);
    }
    *widened = src;
    return w;
}

static int matmul_failures = 0;

static void check_matmul(cm_dtype t, int n, int rows, int cols, cm_pool *pool2) {
    float *wf;
    void *w = make_weights(t, rows, cols, &wf);
    float *x = malloc((size_t)n * cols * sizeof(float));
    for (size_t i = 0; i < (size_t)n * cols; i++) x[i] = frand();
    float *ref = malloc((size_t)n * rows * sizeof(float)), *y1 = malloc((size_t)n * rows * sizeof(float)),
          *y2 = malloc((size_t)n * rows * sizeof(float));
    cm_matmul_ref(ref, x, n, w, t, rows, cols);
    for (int isa = CM_ISA_SCALAR; isa <= (int)cm_isa_best(); isa++) {
        cm_isa_force(isa);
        cm_matmul(y1, x, n, w, t, rows, cols, NULL);
        cm_matmul(y2, x, n, w, t, rows, cols, pool2);
        double worst = 0;
        for (int tk = 0; tk < n; tk++)
            for (int r = 0; r < rows; r++) {
                double mag = 0;
                for (int c = 0; c < cols; c++)
                    mag += fabs((double)wf[(size_t)r * cols + c] * x[(size_t)tk * cols + c]);
                double e =
                    fabs((double)y1[(size_t)tk * rows + r] - ref[(size_t)tk * rows + r]) / (mag + 1e-30);
                if (!(e <= worst)) worst = e;
            }
        int same = memcmp(y1, y2, (size_t)n * rows * sizeof(float)) == 0;
        if (!(worst <= 1e-5) || !same) {
            fprintf(stderr, "matmul %s %s n=%d rows=%d cols=%d: error %.3g of sum|products|, threads %s\n",
                    cm_isa_name((cm_isa)isa), cm_dtype_name(t), n, rows, cols, worst,
                    same ? "agree" : "DISAGREE");
            matmul_failures++;
        }
        CHECK(worst <= 1e-5);
        CHECK(same);
    }
    cm_isa_force(-1);
    free(w);
    free(wf);
    free(x);
    free(ref);
    free(y1);
    free(y2);
}

static void test_matmul(void) {
    cm_pool *pool;
    CHECK_OK(cm_pool_open(2, &pool));
    static const int ns[] = {1, 2, 3, 5, 6, 17, 33, 128};
    static const int rows_list[] = {1, 5, 13, 37, 64};
    static const int cols_list[] = {1, 7, 16, 17, 33, 64, 100, 257};
    static const cm_dtype types[] = {CM_DTYPE_F32, CM_DTYPE_F16, CM_DTYPE_BF16};
    for (size_t ti = 0; ti < 3; ti++)
        for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
            for (size_t b = 0; b < sizeof rows_list / sizeof rows_list[0]; b++)
                for (size_t c = 0; c < sizeof cols_list / sizeof cols_list[0]; c++)
                    check_matmul(types[ti], ns[a], rows_list[b], cols_list[c], pool);
    /* model-like widths: a power-of-two row length, several K chunks, many row blocks per thread */
    for (size_t ti = 0; ti < 3; ti++) {
        check_matmul(types[ti], 128, 100, 1024, pool);
        check_matmul(types[ti], 40, 77, 2048 + 3, pool);
        check_matmul(types[ti], 1, 301, 768, pool);
        check_matmul(types[ti], 4, 64, 1000, pool);
    }
    if (!cm_matmul_is_int8(CM_DTYPE_Q6_K)) {
        check_matmul(CM_DTYPE_Q6_K, 1, 13, 512, pool);
        check_matmul(CM_DTYPE_Q6_K, 3, 13, 256, pool);
        check_matmul(CM_DTYPE_Q6_K, 17, 29, 512, pool);
    }
    printf("matmul: %d failing configuration(s) over ISA paths up to %s\n", matmul_failures,
           cm_isa_name(cm_isa_best()));
    cm_pool_close(pool);
}

static void test_vec_ops(void) {
    static const int sizes[] = {1, 2, 7, 8, 15, 16, 17, 31, 64, 65, 100, 129, 1000};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int n = sizes[si];
        float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4), *r1 = malloc((size_t)n * 4),
              *r2 = malloc((size_t)n * 4);
        for (int i = 0; i < n; i++) {
            a[i] = 8.0f * frand();
            b[i] = 8.0f * frand();
        }
        double mag = 0;
        for (int i = 0; i < n; i++) mag += fabs((double)a[i] * b[i]);
        cm_isa_force(CM_ISA_SCALAR);
        cm_vec_ops ref;
        cm_vec_ops_get(&ref);
        float dref = ref.dot(a, b, n);
        for (int isa = CM_ISA_SCALAR; isa <= (int)cm_isa_best(); isa++) {
            cm_isa_force(isa);
            cm_vec_ops ops;
            cm_vec_ops_get(&ops);
            CHECK_NEAR(ops.dot(a, b, n), dref, 1e-5 * mag + 1e-30);
            CHECK_NEAR(cm_dot_f32(a, b, n), dref, 1e-5 * mag + 1e-30);

            memcpy(r1, b, (size_t)n * 4);
            memcpy(r2, b, (size_t)n * 4);
            ref.axpy(r1, 0.37f, a, n);
            ops.axpy(r2, 0.37f, a, n);
            for (int i = 0; i < n; i++) CHECK_NEAR(r2[i], r1[i], 1e-6 * (fabs(b[i]) + fabs(0.37 * a[i])));

            /* softmax over a wide range, including one very negative entry */
            for (int i = 0; i < n; i++) r1[i] = r2[i] = 4.0f * a[i];
            if (n > 3) r1[3] = r2[3] = -200.0f;
            ref.softmax(r1, n);
            ops.softmax(r2, n);
            for (int i = 0; i < n; i++) CHECK_NEAR(r2[i], r1[i], 2e-6 * fabs(r1[i]) + 1e-9);

            memcpy(r1, a, (size_t)n * 4);
            memcpy(r2, a, (size_t)n * 4);
            if (n > 2) r1[1] = r2[1] = -120.0f, r1[2] = r2[2] = 95.0f;
            ref.swiglu(r1, b, n);
            ops.swiglu(r2, b, n);
            for (int i = 0; i < n; i++) CHECK_NEAR(r2[i], r1[i], 2e-6 * fabs(r1[i]) + 1e-30);
        }
        cm_isa_force(-1);
        free(a);
        free(b);
        free(r1);
        free(r2);
    }
}

int main(void) {
    printf("ISA paths: up to %s\n", cm_isa_name(cm_isa_best()));
    test_matmul();
    test_vec_ops();
    CHECK_DONE();
}
