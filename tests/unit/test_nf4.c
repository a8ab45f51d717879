/* NF4 with double quantization (include/camelid/nf4.h, src/format/nf4_hf.c):
 *  - the code table and its float32 midpoints, the 8-bit dynamic map against the torch-made golden;
 *  - bit-exactness against an independent implementation of FACTS 4.2 (scripts/golden/nf4_golden.py ->
 *    tests/data/nf4): packed codes (values exactly on every midpoint and one float32 step either side, at an
 *    exact and an inexact scale; a zero block, a subnormal absmax, blocks that cross rows, an odd count),
 *    block absmax, the double-quantized codes, nested absmax and offset, the dequantized absmax and weights;
 *    quantizing a slice of rows at a time gives the same bytes;
 *  - the round trip of N(0, 0.02^2) weights: relative RMS error about 0.092;
 *  - the matmul (decode and prefill shapes, every ISA path, 1 and 2 threads bit-identical, blocks of 64, 128,
 *    256 and 32, rows of 64 mod 128, a row length that is not a multiple of 64) and the transpose product
 *    against the f64 references, within 1e-5 of sum |products|;
 *  - bitsandbytes folders: camelid's writer read back, and malformed files (shapes, block counts, quant-state
 *    JSON) each a one-line error naming the tensor. */
#include <stdint.h>

#include "camelid/isa.h"
#include "camelid/kernels.h"
#include "camelid/nf4.h"
#include "camelid/pool.h"
#include "check.h"

static uint64_t rng = 0x243F6A8885A308D3ull;
static double urand(void) { /* uniform in (0, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}
static float gauss(double sd) { return (float)(sd * sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand())); }

static void *read_golden(const char *name, const char *ext, size_t *size) {
    char rel[256];
    snprintf(rel, sizeof rel, "nf4/%s.%s", name, ext);
    char *data;
    if (cm_read_file(cm_test_data(rel), (size_t)1 << 24, &data, size) != CM_OK) {
        fprintf(stderr, "%s\n", cm_last_error());
        exit(1);
    }
    return data;
}

static void test_tables(void) {
    static const float facts[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                                    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                                    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f,
                                    0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
                                    0.7229568362236023f, 1.0f};
    CHECK(memcmp(facts, cm_nf4_code, sizeof facts) == 0);
    for (int i = 0; i < 15; i++) {
        volatile float a = cm_nf4_code[i], b = cm_nf4_code[i + 1];
        float mid = (a + b) / 2;
        /* a midpoint goes to the lower code, one step above it to the upper */
        CHECK(cm_nf4_quantize_scaled(mid) == i);
        CHECK(cm_nf4_quantize_scaled(nextafterf(mid, 2.0f)) == i + 1);
        CHECK(cm_nf4_quantize_scaled(nextafterf(mid, -2.0f)) == i);
        CHECK(cm_nf4_quantize_scaled(cm_nf4_code[i]) == i);
    }
    CHECK(cm_nf4_quantize_scaled(1.0f) == 15 && cm_nf4_quantize_scaled(-1.0f) == 0);
    size_t size;
    float *map = read_golden("dynamic_map", "f32", &size);
    CHECK(size == 256 * sizeof(float) && memcmp(map, cm_nf4_dynamic_map, size) == 0);
    int zeros = 0;
    for (int i = 0; i < 256; i++) {
        zeros += cm_nf4_dynamic_map[i] == 0.0f;
        if (i) CHECK(cm_nf4_dynamic_map[i - 1] < cm_nf4_dynamic_map[i]);
    }
    CHECK(zeros == 1 && cm_nf4_dynamic_map[255] == 1.0f);
    CHECK_NEAR(cm_nf4_dynamic_map[0], -0.99297, 1e-5);
    for (int i = 0; i < 255; i++) {
        volatile float a = cm_nf4_dynamic_map[i], b = cm_nf4_dynamic_map[i + 1];
        float mid = (a + b) / 2;
        CHECK(cm_nf4_quantize_map(cm_nf4_dynamic_map, mid) == i);
        CHECK(cm_nf4_quantize_map(cm_nf4_dynamic_map, nextafterf(mid, 2.0f)) == i + 1);
    }
    free(map);
    CHECK(cm_nf4_blocksize_valid(64) && cm_nf4_blocksize_valid(32) && cm_nf4_blocksize_valid(4096));
    CHECK(!cm_nf4_blocksize_valid(16) && !cm_nf4_blocksize_valid(96) && !cm_nf4_blocksize_valid(8192));
}

/* Every golden case: the whole pipeline byte for byte. */
static void test_golden(void) {
    char *index;
    size_t index_len;
    CHECK_OK(cm_read_file(cm_test_data("nf4/cases.txt"), 1 << 16, &index, &index_len));
    int cases = 0;
    char *save = NULL;
    for (char *line = strtok_r(index, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[64];
        int rows, cols;
        if (sscanf(line, "%63s %d %d", name, &rows, &cols) != 3) continue;
        cases++;
        size_t n = (size_t)rows * cols, nb = cm_nf4_n_blocks(n, 64), nn = cm_nf4_n_blocks(nb, 256), sz;
        float *in = read_golden(name, "in.f32", &sz);
        CHECK(sz == n * 4);
        uint8_t *packed_g = read_golden(name, "packed.u8", &sz);
        CHECK(sz == (n + 1) / 2);
        float *absmax_g = read_golden(name, "absmax.f32", &sz);
        CHECK(sz == nb * 4);
        uint8_t *dq_g = read_golden(name, "dq.u8", &sz);
        CHECK(sz == nb);
        float *nested_g = read_golden(name, "nested.f32", &sz);
        CHECK(sz == (nn + 1) * 4);
        float *absmax_dq_g = read_golden(name, "absmax_dq.f32", &sz);
        float *deq_g = read_golden(name, "deq.f32", &sz);

        uint8_t *packed = malloc((n + 1) / 2), *dq = malloc(nb);
        float *absmax = malloc(nb * 4), *nested = malloc(nn * 4), *absmax_dq = malloc(nb * 4), offset;
        float *deq = malloc(n * 4);
        cm_nf4_quantize(in, n, 64, packed, absmax);
        int packed_same = memcmp(packed, packed_g, (n + 1) / 2) == 0;
        if (!packed_same)
            for (size_t i = 0; i < (n + 1) / 2; i++)
                if (packed[i] != packed_g[i]) {
                    fprintf(stderr, "%s: byte %zu is %02x, golden %02x (values %.9g %.9g)\n", name, i, packed[i],
                            packed_g[i], in[2 * i], 2 * i + 1 < n ? in[2 * i + 1] : 0.0);
                    break;
                }
        CHECK(packed_same);
        CHECK(memcmp(absmax, absmax_g, nb * 4) == 0);
        cm_nf4_double_quant(absmax, nb, dq, nested, &offset);
        CHECK(memcmp(dq, dq_g, nb) == 0);
        CHECK(memcmp(nested, nested_g, nn * 4) == 0);
        CHECK(memcmp(&offset, nested_g + nn, 4) == 0);
        cm_nf4_double_dequant(dq, nested, cm_nf4_dynamic_map, offset, nb, 256, absmax_dq);
        CHECK(memcmp(absmax_dq, absmax_dq_g, nb * 4) == 0);
        /* the formula, spelled out: map[q] * nested_absmax[i / 256] + offset in float32 */
        for (size_t i = 0; i < nb; i++) {
            volatile float prod = cm_nf4_dynamic_map[dq[i]] * nested[i / 256];
            volatile float sum = prod + offset;
            CHECK(sum == absmax_dq[i]);
        }
        cm_nf4_dequantize(packed, absmax_dq, 64, 0, n, deq);
        CHECK(memcmp(deq, deq_g, n * 4) == 0);
        /* slices of whole blocks give the same bytes */
        if (n % 128 == 0 && n >= 256) {
            uint8_t *p2 = malloc(n / 2);
            float *a2 = malloc(nb * 4);
            size_t cut = n / 128 / 2 * 128;
            cm_nf4_quantize(in, cut, 64, p2, a2);
            cm_nf4_quantize(in + cut, n - cut, 64, p2 + cut / 2, a2 + cut / 64);
            CHECK(memcmp(p2, packed_g, n / 2) == 0 && memcmp(a2, absmax_g, nb * 4) == 0);
            free(p2);
            free(a2);
        }
        /* the in-memory weight: codes from the true absmax, scales through the double quantization */
        cm_nf4_weight *w;
        CHECK_OK(cm_nf4_weight_quantize(in, rows, cols, true, &w));
        if (w) {
            CHECK(memcmp(w->packed, packed_g, (n + 1) / 2) == 0);
            CHECK(memcmp(w->absmax, absmax_dq_g, nb * 4) == 0);
            float *row = malloc((size_t)cols * 4);
            cm_nf4_row_to_f32(w, rows - 1, row);
            CHECK(memcmp(row, deq_g + n - cols, (size_t)cols * 4) == 0);
            free(row);
            cm_nf4_weight_free(w);
        }
        CHECK_OK(cm_nf4_weight_quantize(in, rows, cols, false, &w));
        if (w) {
            CHECK(memcmp(w->absmax, absmax_g, nb * 4) == 0);
            cm_nf4_weight_free(w);
        }
        free(in), free(packed_g), free(absmax_g), free(dq_g), free(nested_g), free(absmax_dq_g), free(deq_g);
        free(packed), free(dq), free(absmax), free(nested), free(absmax_dq), free(deq);
    }
    CHECK(cases == 6);
    free(index);
}

static void test_round_trip(void) {
    const int rows = 1024, cols = 1024;
    float *w = malloc((size_t)rows * cols * 4), *row = malloc((size_t)cols * 4);
    for (size_t i = 0; i < (size_t)rows * cols; i++) w[i] = gauss(0.02);
    for (int dq = 0; dq < 2; dq++) {
        cm_nf4_weight *q;
        CHECK_OK(cm_nf4_weight_quantize(w, rows, cols, dq, &q));
        double err = 0, ref = 0;
        for (int r = 0; r < rows; r++) {
            cm_nf4_row_to_f32(q, r, row);
            for (int c = 0; c < cols; c++) {
                double d = (double)row[c] - w[(size_t)r * cols + c];
                err += d * d;
                ref += (double)w[(size_t)r * cols + c] * w[(size_t)r * cols + c];
            }
        }
        double rel = sqrt(err / ref);
        fprintf(stderr, "NF4 round trip of N(0, 0.02^2), %s: relative RMS error %.4f\n",
                dq ? "double quant" : "f32 absmax", rel);
        CHECK(rel > 0.085 && rel < 0.10);
        CHECK(cm_nf4_weight_bytes(q) == (size_t)rows * cols / 2 + (size_t)rows * cols / 64 * 4);
        cm_nf4_weight_free(q);
    }
    free(w);
    free(row);
}

/* A weight with a chosen block size (the writer only makes 64; files may hold others). */
static cm_nf4_weight *make_weight(int rows, int cols, int blocksize, float **dense) {
    size_t n = (size_t)rows * cols, nb = cm_nf4_n_blocks(n, blocksize);
    float *src = malloc(n * 4);
    for (size_t i = 0; i < n; i++) src[i] = gauss(1.0);
    cm_nf4_weight *w = calloc(1, sizeof *w);
    uint8_t *packed = malloc((n + 1) / 2);
    float *absmax = malloc(nb * 4);
    cm_nf4_quantize(src, n, blocksize, packed, absmax);
    *w = (cm_nf4_weight){rows, cols, blocksize, packed, absmax};
    cm_nf4_dequantize(packed, absmax, blocksize, 0, n, src);
    *dense = src;
    return w;
}

static void free_weight(cm_nf4_weight *w) {
    free((void *)w->packed);
    free((void *)w->absmax);
    free(w);
}

static int matmul_failures = 0;

static void check_matmul(int n, int rows, int cols, int blocksize, cm_pool *pool2) {
    float *wf;
    cm_nf4_weight *w = make_weight(rows, cols, blocksize, &wf);
    float *x = malloc((size_t)n * cols * 4), *ref = malloc((size_t)n * rows * 4), *y1 = malloc((size_t)n * rows * 4),
          *y2 = malloc((size_t)n * rows * 4);
    for (size_t i = 0; i < (size_t)n * cols; i++) x[i] = gauss(1.0);
    cm_matmul_nf4_ref(ref, x, n, w);
    for (int isa = CM_ISA_SCALAR; isa <= (int)cm_isa_best(); isa++) {
        cm_isa_force(isa);
        cm_matmul_nf4(y1, x, n, w, NULL);
        cm_matmul(y2, x, n, w, CM_DTYPE_NF4, rows, cols, pool2);
        double worst = 0;
        for (int t = 0; t < n; t++)
            for (int r = 0; r < rows; r++) {
                double mag = 0;
                for (int c = 0; c < cols; c++) mag += fabs((double)wf[(size_t)r * cols + c] * x[(size_t)t * cols + c]);
                double e = fabs((double)y1[(size_t)t * rows + r] - ref[(size_t)t * rows + r]) / (mag + 1e-30);
                if (!(e <= worst)) worst = e;
            }
        int same = memcmp(y1, y2, (size_t)n * rows * 4) == 0;
        if (!(worst <= 1e-5) || !same) {
            fprintf(stderr, "nf4 matmul %s n=%d rows=%d cols=%d block=%d: error %.3g of sum|products|, threads %s\n",
                    cm_isa_name((cm_isa)isa), n, rows, cols, blocksize, worst, same ? "agree" : "DIFFER");
            matmul_failures++;
        }
    }
    cm_isa_force(-1);
    /* multi: the same values as one call per weight */
    float *wf2;
    cm_nf4_weight *w2 = make_weight(rows / 2 + 1, cols, blocksize, &wf2);
    float *z1 = malloc((size_t)n * w2->rows * 4), *z2 = malloc((size_t)n * w2->rows * 4);
    float *const ys[2] = {y2, z2};
    const cm_nf4_weight *const ws[2] = {w, w2};
    cm_matmul_nf4(y1, x, n, w, pool2);
    cm_matmul_nf4(z1, x, n, w2, pool2);
    cm_matmul_nf4_multi(ys, x, n, ws, 2, pool2);
    if (memcmp(y1, y2, (size_t)n * rows * 4) || memcmp(z1, z2, (size_t)n * w2->rows * 4)) {
        fprintf(stderr, "nf4 multi matmul n=%d rows=%d cols=%d differs from single calls\n", n, rows, cols);
        matmul_failures++;
    }
    free(z1), free(z2), free(wf2), free_weight(w2);
    free(x), free(ref), free(y1), free(y2), free(wf), free_weight(w);
}

static void check_transpose(int n, int rows, int cols, cm_pool *pool2) {
    float *wf;
    cm_nf4_weight *w = make_weight(rows, cols, 64, &wf);
    size_t nx = (size_t)n * cols;
    float *dy = malloc((size_t)n * rows * 4), *ref = malloc(nx * 4), *d1 = malloc(nx * 4), *d2 = malloc(nx * 4),
          *base = malloc(nx * 4);
    for (size_t i = 0; i < (size_t)n * rows; i++) dy[i] = gauss(1.0);
    for (size_t i = 0; i < nx; i++) base[i] = gauss(1.0);
    for (int acc = 0; acc < 2; acc++) {
        memcpy(ref, base, nx * 4);
        memcpy(d1, base, nx * 4);
        memcpy(d2, base, nx * 4);
        cm_matmul_nf4_t_ref(ref, dy, n, w, acc);
        cm_matmul_nf4_t(d1, dy, n, w, acc, NULL);
        cm_matmul_nf4_t(d2, dy, n, w, acc, pool2);
        double worst = 0;
        for (int t = 0; t < n; t++)
            for (int c = 0; c < cols; c++) {
                double mag = acc ? fabs(base[(size_t)t * cols + c]) : 0;
                for (int r = 0; r < rows; r++) mag += fabs((double)wf[(size_t)r * cols + c] * dy[(size_t)t * rows + r]);
                double e = fabs((double)d1[(size_t)t * cols + c] - ref[(size_t)t * cols + c]) / (mag + 1e-30);
                if (!(e <= worst)) worst = e;
            }
        if (!(worst <= 1e-5) || memcmp(d1, d2, nx * 4)) {
            fprintf(stderr, "nf4 transpose n=%d rows=%d cols=%d accumulate=%d: error %.3g, threads %s\n", n, rows,
                    cols, acc, worst, memcmp(d1, d2, nx * 4) ? "DIFFER" : "agree");
            matmul_failures++;
        }
    }
    free(dy), free(ref), free(d1), free(d2), free(base), free(wf), free_weight(w);
}

static void test_matmul(void) {
    cm_pool *pool2;
    CHECK_OK(cm_pool_open(2, &pool2));
    static const int tokens[] = {1, 2, 3, 5, 6, 17, 40};
    for (size_t i = 0; i < sizeof tokens / sizeof *tokens; i++) {
        int n = tokens[i];
        check_matmul(n, 29, 256, 64, pool2);  /* rows not a multiple of the 4/6/12-row blocks */
        check_matmul(n, 13, 192, 64, pool2);  /* a half group at the end of each AVX-512 row */
        check_matmul(n, 16, 64, 64, pool2);   /* one group */
        check_matmul(n, 9, 172, 64, pool2);   /* blocks cross rows: the generic path */
        check_matmul(n, 7, 384, 128, pool2);  /* larger blocks */
        check_matmul(n, 5, 320, 256, pool2);  /* blocks of 256 cross rows of 320 */
        check_matmul(n, 6, 96, 32, pool2);    /* blocks of 32: the generic path */
    }
    check_matmul(128, 40, 768, 64, pool2);
    check_matmul(33, 25, 2048, 64, pool2);
    check_transpose(1, 32, 64, pool2);
    check_transpose(7, 45, 300, pool2);
    check_transpose(40, 70, 640, pool2);
    CHECK(matmul_failures == 0);
    cm_pool_close(pool2);
}

int main(void) {
    test_tables();
    test_golden();
    test_round_trip();
    test_matmul();
    CHECK_DONE();
}
