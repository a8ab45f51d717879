/* NF4 with double quantization (include/camelid/nf4.h, src/format/nf4_hf.c):
 *  - the code table and its float32 midpoints, the 8-bit dynamic map against the torch-made golden;
 *  - bit-exactness against an independent implementation of FACTS 4.2 (scripts/golden/nf4_golden.py ->
 *    tests/data/nf4): packed codes (values exactly on every midpoint and one float32 step either side, at an
 *    exact and an inexact scale; a zero block, a subnormal absmax, blocks that cross rows, an odd count),
 *    block absmax, the double-quantized codes, nested absmax and offset, the dequantized absmax and weights;
 *    quantizing a slice of rows at a time gives the same bytes;
 *  - the round trip of N(0, 0.02^2) weights: relative RMS error about 0.092;
 *  - the matmul (decode and prefill shapes, every ISA path, 1 and 2 threads bit-identical, blocks of 64, 128,
 *    256 and 32, rows of 64 mod 128, a row length that is not a multiple of 64, prefill panels walked in
 *    chunks of columns) and the transpose product
 *    against the f64 references, within 1e-5 of sum |products|;
 *  - bitsandbytes folders: camelid's writer read back, and malformed files (shapes, block counts, quant-state
 *    JSON) each a one-line error naming the tensor. */
#include <stdint.h>

#include "camelid/isa.h"
#include "camelid/kernels.h"
#include "camelid/llama.h"
#include "camelid/model.h"
#include "camelid/nf4.h"
#include "camelid/nf4_hf.h"
#include "camelid/pool.h"
#include "camelid/safetensors.h"
#include "check.h"
#include "test_util.h"

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
        /* any slice, from an odd or even index, across block boundaries */
        int slices_ok = 1;
        for (size_t first = 0; first < n && first < 200; first++) {
            static const size_t lens[] = {1, 2, 3, 63, 64, 65, 130};
            for (size_t k = 0; k < sizeof lens / sizeof *lens; k++) {
                size_t len = lens[k] < n - first ? lens[k] : n - first;
                float part[130];
                cm_nf4_dequantize(packed, absmax_dq, 64, first, len, part);
                slices_ok &= memcmp(part, deq_g + first, len * 4) == 0;
            }
        }
        CHECK(slices_ok);
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
    check_matmul(70, 29, 2048, 64, pool2); /* panels past 512 KB: chunks of columns with partial tiles */
    check_matmul(100, 40, 1472, 128, pool2); /* chunks, and a half group at the end of each row */
    check_transpose(1, 32, 64, pool2);
    check_transpose(7, 45, 300, pool2);
    check_transpose(40, 70, 640, pool2);
    check_transpose(20, 600, 128, pool2); /* W's rows in chunks, partial tiles */
    check_transpose(70, 500, 448, pool2); /* a half group at the end of the rows, chunks */
    check_transpose(3, 13, 64, pool2);    /* one group: one thread */
    CHECK(matmul_failures == 0);
    cm_pool_close(pool2);
}

/* ---------------------------------------------------------------- files */

static void test_quant_state_json(void) {
    static const struct {
        uint32_t bits;
        const char *repr;
    } cases[] = {
        {0x3c4a4587u, "0.012345678173005581"}, {0x3727c5acu, "9.999999747378752e-06"},
        {0x4ceb79a3u, "123456792.0"},          {0x5a0e1bcau, "1.0000000272564224e+16"},
        {0x3fc00000u, "1.5"},                  {0xb99d4952u, "-0.0003000000142492354"},
        {0x38d1b717u, "9.999999747378752e-05"}, {0x38000000u, "3.0517578125e-05"},
        {0x3eaaaaabu, "0.3333333432674408"},    {0x00000000u, "0.0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cm_nf4_quant_state qs = {64, {64, 172}, "float32", true, 256, 0.0f};
        memcpy(&qs.nested_offset, &cases[i].bits, 4);
        char *json;
        CHECK_OK(cm_nf4_quant_state_json(&qs, &json));
        char want[512];
        snprintf(want, sizeof want,
                 "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [64, 172], "
                 "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": %s}",
                 cases[i].repr);
        if (strcmp(json, want)) fprintf(stderr, "quant state JSON:\n  %s\nexpected\n  %s\n", json, want);
        CHECK(strcmp(json, want) == 0);
        cm_nf4_quant_state back;
        CHECK_OK(cm_nf4_quant_state_parse(json, strlen(json), "t", &back));
        CHECK(back.nested && back.blocksize == 64 && back.shape[0] == 64 && back.shape[1] == 172 &&
              memcmp(&back.nested_offset, &qs.nested_offset, 4) == 0 && !strcmp(back.dtype, "float32"));
        free(json);
    }
    cm_nf4_quant_state plain = {64, {3, 5}, "bfloat16", false, 0, 0.0f}, back;
    char *json;
    CHECK_OK(cm_nf4_quant_state_json(&plain, &json));
    CHECK(!strcmp(json, "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [3, 5]}"));
    CHECK_OK(cm_nf4_quant_state_parse(json, strlen(json), "t", &back));
    CHECK(!back.nested && !strcmp(back.dtype, "bfloat16"));
    free(json);
    static const struct {
        const char *json, *needle;
    } bad[] = {
        {"", "not valid JSON"},
        {"[1]", "must be a JSON object"},
        {"{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [2, 2]}", "FP4"},
        {"{\"quant_type\": \"nf5\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [2, 2]}", "expected \"nf4\""},
        {"{\"quant_type\": \"nf4\", \"blocksize\": 48, \"dtype\": \"float32\", \"shape\": [2, 2]}", "blocksize"},
        {"{\"quant_type\": \"nf4\", \"blocksize\": \"64\", \"dtype\": \"float32\", \"shape\": [2, 2]}", "integer"},
        {"{\"quant_type\": \"nf4\", \"dtype\": \"float32\", \"shape\": [2, 2]}", "no \"blocksize\""},
        {"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"int8\", \"shape\": [2, 2]}", "\"dtype\""},
        {"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [2]}", "shape"},
        {"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [2, -2]}", "shape"},
        {"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [2, 2], \"x\": 1}",
         "unknown key"},
        {"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [2, 2], "
         "\"nested_blocksize\": 256}",
         "1 of the 3 nested"},
        {"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [2, 2], "
         "\"nested_blocksize\": 256, \"nested_dtype\": \"float16\", \"nested_offset\": 0.1}",
         "nested_dtype"},
        {"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [2, 2], "
         "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": 1e300}",
         "finite"},
        {"{\"quant_type\": \"nf4\", \"quant_type\": \"nf4\"}", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_FAIL(cm_nf4_quant_state_parse(bad[i].json, strlen(bad[i].json), "W", &back), bad[i].needle);
        CHECK(!strchr(cm_last_error(), '\n'));
    }
}

static char *join(const char *dir, const char *name) {
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

/* The same linears from two models: NF4 codes and scales byte for byte. */
static int same_linears(const cm_model *a, const cm_model *b) {
    int same = 1;
    for (int l = 0; l < a->cfg.n_layers; l++) {
        const cm_weight *wa[] = {&a->layers[l].wq, &a->layers[l].wk, &a->layers[l].wv, &a->layers[l].wo,
                                 &a->layers[l].w_gate, &a->layers[l].w_up, &a->layers[l].w_down};
        const cm_weight *wb[] = {&b->layers[l].wq, &b->layers[l].wk, &b->layers[l].wv, &b->layers[l].wo,
                                 &b->layers[l].w_gate, &b->layers[l].w_up, &b->layers[l].w_down};
        for (int i = 0; i < 7; i++) {
            if (wa[i]->dtype != CM_DTYPE_NF4 || wb[i]->dtype != CM_DTYPE_NF4) return 0;
            const cm_nf4_weight *x = wa[i]->data, *y = wb[i]->data;
            size_t n = (size_t)x->rows * x->cols;
            same &= x->rows == y->rows && x->cols == y->cols && memcmp(x->packed, y->packed, (n + 1) / 2) == 0 &&
                    memcmp(x->absmax, y->absmax, cm_nf4_n_blocks(n, 64) * 4) == 0;
        }
    }
    return same;
}

/* stories260K written as a bitsandbytes folder (from the .bin, its GGUF and an HF conversion) and read back:
 * every linear's codes and scales equal the in-memory quantization of the (rotate-half) source weights; the
 * file does not depend on the thread count; the 4,096-token log-likelihood moves by less than 10%. */
static char *nf4_dir; /* kept for the malformed-file tests */

static void test_folder(const char *tmp) {
    const char *bin = cm_test_shared("models/stories260K/stories260K.bin");
    const char *gguf = cm_test_shared("models/stories260K-gguf/stories260K.gguf");
    cm_tokenizer *tok;
    CHECK_OK(cm_tokenizer_open(cm_test_shared("models/stories260K/tok512.bin"), 512, &tok));
    cm_model *src;
    CHECK_OK(cm_model_open(bin, &src));
    nf4_dir = join(tmp, "nf4");
    char *nf4_1 = join(tmp, "nf4-t1"), *hf = join(tmp, "hf"), *nf4_hf = join(tmp, "nf4-from-hf"),
         *nf4_gguf = join(tmp, "nf4-from-gguf"), *back = join(tmp, "back-f32");
    cm_nf4_save_stats stats;
    CHECK_OK(cm_model_save_nf4(src, tok, nf4_dir, true, 2, &stats));
    CHECK(stats.n_nf4 == 35 && stats.n_16bit == 12 && stats.bytes > 0);
    CHECK_OK(cm_model_save_nf4(src, tok, nf4_1, true, 1, NULL));
    char *a = join(nf4_dir, "model.safetensors"), *b = join(nf4_1, "model.safetensors"), *da, *db;
    size_t la, lb;
    CHECK_OK(cm_read_file(a, 1 << 24, &da, &la));
    CHECK_OK(cm_read_file(b, 1 << 24, &db, &lb));
    CHECK(la == lb && memcmp(da, db, la) == 0);
    free(da), free(db), free(a), free(b);

    cm_model *q;
    CHECK_OK(cm_model_open(nf4_dir, &q));
    if (!q) return;
    CHECK(q->tok_embd.dtype == CM_DTYPE_BF16 && q->layers[0].wq.dtype == CM_DTYPE_NF4 &&
          q->layers[4].w_down.dtype == CM_DTYPE_NF4 && q->cfg.rope_layout == CM_ROPE_HALF);
    /* each linear: the source rows (q/k in HF order) quantized in memory give the same bytes */
    const cm_config *c = &src->cfg;
    int same = 1;
    for (int l = 0; l < c->n_layers; l++) {
        const cm_weight *ws[] = {&src->layers[l].wq, &src->layers[l].wk, &src->layers[l].w_down};
        const cm_weight *wq[] = {&q->layers[l].wq, &q->layers[l].wk, &q->layers[l].w_down};
        const int heads[] = {c->n_heads, c->n_kv_heads, 0};
        for (int i = 0; i < 3; i++) {
            int64_t rows = ws[i]->rows, cols = ws[i]->cols, hd = c->head_dim;
            float *dense = malloc((size_t)rows * cols * 4);
            for (int64_t r = 0; r < rows; r++) {
                int64_t src_row = r;
                if (heads[i]) {
                    int64_t h = r / hd, j = r % hd;
                    src_row = h * hd + (j < hd / 2 ? 2 * j : 2 * (j - hd / 2) + 1);
                }
                cm_weight_row_to_f32(ws[i], src_row, dense + (size_t)r * cols);
            }
            cm_nf4_weight *mem;
            CHECK_OK(cm_nf4_weight_quantize(dense, rows, cols, true, &mem));
            const cm_nf4_weight *file = wq[i]->data;
            size_t n = (size_t)rows * cols;
            same &= memcmp(mem->packed, file->packed, (n + 1) / 2) == 0 &&
                    memcmp(mem->absmax, file->absmax, cm_nf4_n_blocks(n, 64) * 4) == 0;
            cm_nf4_weight_free(mem);
            free(dense);
        }
    }
    CHECK(same);
    /* the same file from the GGUF and from an HF conversion (rotate-half: no permutation at quantization) */
    cm_model *g, *h, *q2;
    CHECK_OK(cm_model_open(gguf, &g));
    CHECK_OK(cm_model_save_nf4(g, NULL, nf4_gguf, true, 2, NULL));
    CHECK_OK(cm_model_save_hf(src, tok, hf, CM_DTYPE_COUNT));
    CHECK_OK(cm_model_open(hf, &h));
    CHECK_OK(cm_model_save_nf4(h, NULL, nf4_hf, true, 2, NULL));
    CHECK_OK(cm_model_open(nf4_gguf, &q2));
    CHECK(q2 && same_linears(q, q2));
    cm_model_close(q2);
    CHECK_OK(cm_model_open(nf4_hf, &q2));
    CHECK(q2 && same_linears(q, q2));
    /* the HF input's tokenizer files were copied byte for byte */
    char *t1 = join(hf, "tokenizer_config.json"), *t2 = join(nf4_hf, "tokenizer_config.json"), *d1, *d2;
    size_t l1, l2;
    CHECK_OK(cm_read_file(t1, 1 << 20, &d1, &l1));
    CHECK_OK(cm_read_file(t2, 1 << 20, &d2, &l2));
    CHECK(l1 == l2 && !memcmp(d1, d2, l1));
    CHECK(q2 && q2->tokenizer);
    free(d1), free(d2), free(t1), free(t2);
    cm_model_close(q2), cm_model_close(g), cm_model_close(h);
    /* exported back to F32: the dequantized values */
    CHECK_OK(cm_model_save_hf(q, NULL, back, CM_DTYPE_COUNT));
    cm_model *f;
    CHECK_OK(cm_model_open(back, &f));
    if (f) {
        float *r1 = malloc(172 * 4), *r2 = malloc(172 * 4);
        cm_weight_row_to_f32(&q->layers[2].w_down, 33, r1);
        cm_weight_row_to_f32(&f->layers[2].w_down, 33, r2);
        CHECK(f->layers[2].w_down.dtype == CM_DTYPE_F32 && memcmp(r1, r2, 172 * 4) == 0);
        free(r1), free(r2);
        cm_model_close(f);
    }

    /* quality: the first 4,096 tokens of the TinyStories validation sample */
    char *text;
    size_t len;
    CHECK_OK(cm_read_file(cm_test_shared("corpora/tinystories-valid-sample/tinystories_val.txt"), (size_t)1 << 26,
                          &text, &len));
    int32_t *ids = NULL;
    size_t n_ids = 0;
    CHECK_OK(cm_tokenizer_encode(tok, text, len < 40000 ? len : 40000, true, false, &ids, &n_ids));
    CHECK(n_ids >= 4096);
    if (n_ids >= 4096) {
        double base = cm_test_mean_loglik(src, ids, 4096), nf4 = cm_test_mean_loglik(q, ids, 4096);
        printf("stories260K, 4096 tokens: mean log-likelihood F32 %.5f, NF4 %.5f (%+.2f%%, limit 10%%)\n", base, nf4,
               100.0 * (nf4 - base) / fabs(base));
        CHECK(fabs(nf4 - base) / fabs(base) < 0.10);
    }
    free(ids), free(text);
    cm_model_close(q);
    cm_model_close(src);
    cm_tokenizer_close(tok);
    free(nf4_1), free(hf), free(nf4_hf), free(nf4_gguf), free(back);
}

/* Copy the NF4 folder's model.safetensors into `dir` with tensor `target` dropped (data NULL, len 0), replaced
 * (dtype/shape/data), or renamed; config.json copied (or replaced by `config`). */
static void rewrite(const char *dir, const char *target, const char *rename, cm_dtype dt, int64_t n,
                    const void *data, const char *config) {
    cm_mkdir_p(dir);
    char *src = join(nf4_dir, "model.safetensors"), *dst = join(dir, "model.safetensors");
    cm_safetensors *st;
    CHECK_OK(cm_safetensors_open(src, &st));
    cm_safetensors_writer *w;
    CHECK_OK(cm_safetensors_writer_open(dst, &w));
    for (size_t i = 0; i < cm_safetensors_count(st); i++) {
        const cm_tensor *t = cm_safetensors_get(st, i);
        if (target && !strcmp(t->name, target)) {
            if (rename) {
                CHECK_OK(cm_safetensors_writer_add(w, rename, t->dtype, t->ndim, t->shape, t->data, t->nbytes));
            } else if (data) {
                int64_t shape[2] = {n, 1};
                int nd = !strcmp(t->name + strlen(t->name) - 7, ".weight") && t->ndim == 2 ? 2 : 1;
                CHECK_OK(cm_safetensors_writer_add(w, t->name, dt, nd, shape, data, (size_t)n * cm_dtype_block_bytes(dt)));
            }
            continue;
        }
        CHECK_OK(cm_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes));
    }
    CHECK_OK(cm_safetensors_writer_commit(w));
    cm_safetensors_close(st);
    char *cfg_src = join(nf4_dir, "config.json"), *cfg_dst = join(dir, "config.json"), *text;
    size_t len;
    CHECK_OK(cm_read_file(cfg_src, 1 << 20, &text, &len));
    CHECK_OK(cm_write_file_atomic(cfg_dst, config ? config : text, config ? strlen(config) : len));
    free(text), free(cfg_src), free(cfg_dst), free(src), free(dst);
}

static void expect_open_fails(const char *dir, const char *needle) {
    cm_model *m = NULL;
    CHECK_FAIL(cm_model_open(dir, &m), needle);
    if (m) fprintf(stderr, "  (expected an error with \"%s\")\n", needle);
    CHECK(!strchr(cm_last_error(), '\n'));
    if (m) cm_model_close(m);
}

static void test_bad_folders(const char *tmp) {
    if (!nf4_dir) return;
    char *dir = join(tmp, "bad");
    const char *W = "model.layers.1.mlp.down_proj.weight";
    char name[256];
#define NAME(suffix) (snprintf(name, sizeof name, "%s%s", W, suffix), name)
#define QS(json) rewrite(dir, NAME(".quant_state.bitsandbytes__nf4"), NULL, CM_DTYPE_U8, (int64_t)strlen(json), json, NULL)
    const char *qs_ok_head = "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", ";
    char json[512];
    QS("{not json");
    expect_open_fails(dir, "quant state is not valid JSON");
    snprintf(json, sizeof json, "%s\"shape\": [172, 64], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", "
                                "\"nested_offset\": 0.5}", qs_ok_head);
    QS(json);
    expect_open_fails(dir, "quant state shape is [172, 64], expected [64, 172]");
    snprintf(json, sizeof json, "%s\"shape\": [64, 172], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\"}",
             qs_ok_head);
    QS(json);
    expect_open_fails(dir, "nested fields");
    snprintf(json, sizeof json,
             "{\"quant_type\": \"nf4\", \"blocksize\": 128, \"dtype\": \"float32\", \"shape\": [64, 172], "
             "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": 0.5}");
    QS(json);
    expect_open_fails(dir, ".absmax\" has 1 dimension(s) and 172 values, expected [86]"); /* block count */
    snprintf(json, sizeof json, "%s\"shape\": [64, 172]}", qs_ok_head);
    QS(json);
    expect_open_fails(dir, "no double quantization"); /* nested tensors present, state not nested */
    uint8_t bytes[6000] = {0};
    rewrite(dir, NAME(".absmax"), NULL, CM_DTYPE_U8, 171, bytes, NULL);
    expect_open_fails(dir, "expected [172]");
    rewrite(dir, NAME(".absmax"), NULL, CM_DTYPE_F32, 172, bytes, NULL);
    expect_open_fails(dir, "has dtype F32, expected U8");
    rewrite(dir, W, NULL, CM_DTYPE_U8, 5503, bytes, NULL);
    expect_open_fails(dir, "packed 4-bit weight holds 5503 bytes");
    rewrite(dir, NAME(".nested_absmax"), NULL, CM_DTYPE_U8, 0, NULL, NULL);
    expect_open_fails(dir, "nested_absmax\" is missing");
    rewrite(dir, NAME(".quant_map"), NULL, CM_DTYPE_F32, 16, bytes, NULL);
    expect_open_fails(dir, "not the NF4 table");
    float nan_scale = NAN;
    rewrite(dir, NAME(".nested_absmax"), NULL, CM_DTYPE_F32, 1, &nan_scale, NULL);
    expect_open_fails(dir, "non-finite");
    rewrite(dir, NAME(".quant_state.bitsandbytes__nf4"), NULL, CM_DTYPE_U8, 0, NULL, NULL);
    expect_open_fails(dir, ".absmax\" is present but");
    char fp4[256];
    snprintf(fp4, sizeof fp4, "%s.quant_state.bitsandbytes__fp4", W);
    rewrite(dir, NAME(".quant_state.bitsandbytes__nf4"), fp4, 0, 0, NULL, NULL);
    expect_open_fails(dir, "FP4");
    rewrite(dir, "model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4",
            "model.embed_tokens.weight.quant_state.bitsandbytes__nf4", 0, 0, NULL, NULL);
    expect_open_fails(dir, "\"model.embed_tokens.weight\" is 4-bit quantized");
    /* config.json */
    char *cfg_path = join(nf4_dir, "config.json"), *cfg;
    size_t len;
    CHECK_OK(cm_read_file(cfg_path, 1 << 20, &cfg, &len));
    static const struct {
        const char *from, *to, *needle;
    } edits[] = {
        {"\"quant_method\": \"bitsandbytes\"", "\"quant_method\": \"gptq\"", "quant_method \"gptq\" is not supported"},
        {"\"bnb_4bit_quant_type\": \"nf4\"", "\"bnb_4bit_quant_type\": \"fp4\"", "fp4 is not supported"},
        {"\"load_in_8bit\": false", "\"load_in_8bit\": true", "8-bit"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof *edits; i++) {
        char *at = strstr(cfg, edits[i].from);
        CHECK(at != NULL);
        if (!at) continue;
        char edited[8192];
        snprintf(edited, sizeof edited, "%.*s%s%s", (int)(at - cfg), cfg, edits[i].to, at + strlen(edits[i].from));
        rewrite(dir, NULL, NULL, 0, 0, NULL, edited);
        expect_open_fails(dir, edits[i].needle);
    }
    /* untouched, the rewritten folder opens */
    rewrite(dir, NULL, NULL, 0, 0, NULL, NULL);
    cm_model *m;
    CHECK_OK(cm_model_open(dir, &m));
    cm_model_close(m);
    free(cfg), free(cfg_path), free(dir);
#undef QS
#undef NAME
}

int main(void) {
    test_tables();
    test_golden();
    test_round_trip();
    test_matmul();
    test_quant_state_json();
    char *tmp = cm_test_tmpdir();
    test_folder(tmp);
    test_bad_folders(tmp);
    if (!cm_test_rmtree(tmp)) fprintf(stderr, "could not remove %s\n", tmp);
    free(tmp);
    free(nf4_dir);
    CHECK_DONE();
}
