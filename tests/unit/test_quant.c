/* Quantized kernels: ggml-exact quantizers (hand-checked blocks and ggml's known quirks), and every SIMD path
 * of the integer matmul against the scalar reference on odd shapes, 1..128 tokens, 1 and 2 threads. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/isa.h"
#include "camelid/kernels.h"
#include "camelid/file.h"
#include "camelid/llama.h"
#include "camelid/model.h"
#include "camelid/quantize.h"
#include "camelid/tokenizer.h"
#include "camelid/pool.h"
#include "camelid/quant.h"
#include "check.h"
#include "test_util.h"
#include "kernels/quant_internal.h"

/* Blocks quantized by ggml's own quantize_row_{q8_0,q4_0,q6_K}_ref (a local llama.cpp build, called once by a
 * throw-away program; inputs as C99 hex floats so they are exact). */
static const float q8_recip_x[32] = {
    -0x1.2d3a4ap-4, 0x1.0b0e1p-2,   -0x1.136b5p-2, -0x1.237726p-2, 0x1.0daf38p-3,  -0x1.228b8p-2,
    0x1.6ac534p-7,  -0x1.2e6fe4p-4, 0x1.bc6472p-4, 0x1.d7a648p-5,  -0x1.752324p-3, 0x1.8aa2f2p-4,
    -0x1.b5e7c2p-3, 0x1.3ecbf8p-4,  0x1.88db16p-3, 0x1.04d5bp-2,   0x1.0d63fap-2,  0x1.48cc88p-4,
    0x1.259ffep-2,  0x1.1fb7f4p-3,  0x1.aafd26p-4, -0x1.1aae2cp-3, -0x1.775e92p-3, -0x1.e7b10cp-7,
    0x1.1bba5ap-3,  0x1.1b89eap-2,  0x1.19b4bcp-3, 0x1.bc8b7cp-3,  -0x1.06bae6p-2, 0x1.612d02p-3,
    0x1.14bc2ap-2,  0x1.f77a02p-8};
static const unsigned char q8_recip_q[34] = {160, 24,  223, 116, 137, 130, 58,  130, 5,   223, 48, 26,
                                             175, 43,  161, 34,  85,  113, 117, 36,  127, 62,  46, 195,
                                             175, 249, 61,  123, 61,  96,  142, 76,  120, 3};
static const float q4_tie_x[32] = {
    0x1.3b3f08p-2,  0x1.cc911ep-2,  0x1.aaf088p-4,  -0x1.0d14f8p-2, -0x1.bc8f68p-5, -0x1.8p-1,
    -0x1.efc22cp-2, 0x1.f77684p-5,  0x1.978f28p-2,  0x1.861e48p-4,  -0x1.99a6b4p-2, 0x1.00b356p-5,
    -0x1.9d33c2p-2, 0x1.d3f004p-2,  -0x1.1eeb72p-2, -0x1.046534p-4, -0x1.8ba8f2p-4, 0x1.d2c69p-2,
    0x1.a89564p-2,  -0x1.4f8956p-2, 0x1.8p-1,       -0x1.58ca32p-2, -0x1.bae564p-3, 0x1.396cf4p-6,
    -0x1.8d8da6p-2, -0x1.cfc116p-2, -0x1.5ffd94p-2, -0x1.ed676cp-2, -0x1.cbf38p-2,  0x1.b8df98p-3,
    -0x1.69ca0cp-5, -0x1.0357d4p-2};
static const unsigned char q4_tie_q[18] = {0,   46, 123, 221, 201, 85, 247, 64,  99,
                                           137, 76, 57,  68,  56,  52, 173, 133, 87};
static const float q8_f16d_x[32] = {
    0x1.1e7734p+0,  -0x1.52ab3ep-1, -0x1.4c46a8p+0, 0x1.5021c8p-1,  -0x1.77d70ep+0, 0x1.fc008ep-2,
    0x1.20035ap-1,  0x1.151e74p+0,  -0x1.8a8c82p+0, -0x1.88f088p+0, -0x1.31446ap-1, -0x1.3ac24cp+0,
    0x1.3f02fap-9,  0x1.aaddc8p-4,  -0x1.566358p+0, -0x1.850116p-1, 0x1.919202p-4,  0x1.c9d0ep-1,
    -0x1.4bcp+0,    -0x1.77a95ap-1, -0x1.5894eap+0, 0x1.4a7ca6p-8,  -0x1.5f9fccp-2, -0x1.4bf32ap-1,
    -0x1.95ddfap+0, 0x1.83e0ecp+0,  0x1.6d1d6ep-1,  -0x1.12964ap-1, 0x1.72a342p+0,  -0x1.52acb4p+0,
    0x1.1fc06p-1,   0x1.11db88p+0};
static const unsigned char q8_f16d_q[34] = {100, 34,  90,  203, 152, 53,  138, 40,  45,  87,  133, 133,
                                            208, 158, 0,   8,   149, 195, 8,   72,  152, 197, 148, 0,
                                            228, 204, 129, 121, 57,  213, 116, 150, 45,  86};
static const float q4_half_x[32] = {
    -0x1p+0,   -0x1.6p-1, -0x1p-4,   0x1p-4,   -0x1.ap-1, -0x1.4p-2, 0x0p+0,   0x1p-2,
    -0x1.4p-1, 0x1p-4,    -0x1.cp-1, -0x1p-1,  -0x1p-4,   0x1p-2,    0x1.8p-2, -0x1.8p-1,
    0x1.ep-1,  0x1p-3,    -0x1.cp-1, 0x1.ap-1, -0x1.6p-1, -0x1p-3,   0x1.8p-2, -0x1p-2,
    0x1.2p-1,  -0x1.8p-3, 0x1.8p-3,  0x1.4p-2, -0x1.4p-2, -0x1.2p-1, 0x0p+0,   -0x1.2p-1};
static const unsigned char q4_half_q[18] = {0,   48,  240, 147, 24,  249, 50, 118, 184,
                                            106, 211, 121, 161, 180, 104, 74, 139, 66};
static const float q6k_x[256] = {
    -0x1.aeca74p-8,  0x1.35be76p-7,  0x1.97f6ecp-6,  0x1.4a9cf6p-5,   0x1.c2e3cp-5,   0x1.a70164p-5,
    0x1.4dd89cp-5,   0x1.525cd6p-6,  0x1.7b1a8ap-7,  -0x1.3ff498p-15, -0x1.60111p-6,  -0x1.8263a2p-5,
    -0x1.6d1478p-5,  -0x1.dcb4fcp-5, -0x1.a78d7ap-5, -0x1.b76d4ep-6,  -0x1.3a034cp-6, -0x1.7dde7cp-11,
    0x1.18f5aap-7,   0x1.1353f8p-5,  0x1.4747acp-5,  0x1.cd1158p-5,   0x1.8324d4p-5,  0x1.4670a6p-5,
    0x1.a5c414p-6,   0x1.aec1c6p-8,  -0x1.71ba36p-7, -0x1.e317bep-6,  -0x1.861218p-5, -0x1.5c219ep-5,
    -0x1.61a446p-5,  -0x1.382598p-5, -0x1.1b55d4p-5, -0x1.8f1cccp-6,  -0x1.f902dp-8,  0x1.dbf528p-7,
    0x1.c69aep-6,    0x1.a5bbaap-5,  0x1.9b467cp-5,  0x1.9eecb2p-5,   0x1.5efe06p-5,  0x1.7f09b6p-6,
    0x1.76fb8ap-7,   -0x1.1a1956p-6, -0x1.33fb1p-6,  -0x1.7ac9c8p-5,  -0x1.9a75dp-5,  -0x1.cf928ap-5,
    -0x1.56708ap-5,  -0x1.42a1acp-5, -0x1.7fccep-7,  0x1.cbb25ap-8,   0x1.edaf6p-7,   0x1.1ac41cp-5,
    0x1.aaef22p-5,   0x1.cdc8f6p-5,  0x1.a39c62p-5,  0x1.849c7p-5,    0x1.1787dcp-5,  0x1.e08492p-7,
    -0x1.258beap-6,  -0x1.02889ep-5, -0x1.707f1ep-5, -0x1.c08768p-5,  -0x1.d92776p-5, -0x1.6c9b2p-5,
    -0x1.a92eb8p-6,  -0x1.6d8c0ap-7, 0x1.31880ep-8,  0x1.481e2ep-7,   0x1.21a05ep-5,  0x1.7d2b22p-5,
    0x1.e49724p-5,   0x1.a576fp-5,   0x1.1b046ep-5,  0x1.512072p-6,   0x1.95badcp-9,  -0x1.80dc5ep-8,
    -0x1.cc64bap-6,  -0x1.9b2f0ap-5, -0x1.6405ep-5,  -0x1.db2f32p-5,  -0x1.695db8p-5, -0x1.b722cep-6,
    -0x1.ed5a8cp-7,  -0x1.bf8f96p-8, 0x1.40ddecp-7,  0x1.6eaaa2p-5,   0x1.51772cp-5,  0x1.b4a0a8p-5,
    0x1.a970dp-5,    0x1.59c64ap-5,  0x1.1dfb28p-6,  0x1.a1f09ap-7,   -0x1.c09c08p-7, -0x1.72ca0cp-6,
    -0x1.441e84p-5,  -0x1.53eeaep-5, -0x1.af2928p-5, -0x1.8cc4d2p-5,  -0x1.36da04p-5, -0x1.7e76c4p-6,
    -0x1.7ff79cp-10, 0x1.050ab4p-6,  0x1.c23e72p-6,  0x1.478176p-5,   0x1.67b174p-5,  0x1.78f084p-5,
    0x1.41679ep-5,   0x1.2ba206p-6,  0x1.add4d2p-7,  -0x1.758f0ap-7,  -0x1.a3804p-6,  -0x1.159d66p-5,
    -0x1.c07d0cp-5,  -0x1.58e2aep-5, -0x1.b595d2p-5, -0x1.1b3164p-5,  -0x1.1322bcp-7, -0x1.52e2aep-8,
    0x1.393fp-6,     0x1.c1bdfcp-6,  0x1.59572p-5,   0x1.6c316ap-5,   0x1.894b22p-5,  0x1.4432d4p-5,
    0x1.d15cacp-6,   0x1.ccc316p-7,  -0x1.3d14c4p-6, -0x1.9f6c74p-6,  -0x1.5bd974p-5, -0x1.73a9bap-5,
    -0x1.de193p-5,   -0x1.86c43cp-5, -0x1.999efep-6, -0x1.f29248p-8,  -0x1.706afep-8, 0x1.5f3982p-6,
    0x1.fc5616p-6,   0x1.b5244cp-5,  0x1.494f1cp-5,  0x1.659cf6p-5,   0x1.13be3ep-5,  0x1.09c1aep-5,
    0x1.ce4fc6p-7,   -0x1.f9361ep-9, -0x1.6bc80ap-6, -0x1.8f9386p-5,  -0x1.a63a1p-5,  -0x1.679b4p-5,
    -0x1.52a6dep-5,  -0x1.1240fep-5, -0x1.4f0aep-7,  0x1.942f1ap-7,   0x1.6e8f4p-6,   0x1.487d24p-5,
    0x1.36281ap-5,   0x1.8d19d6p-5,  0x1.4eb22cp-5,  0x1.0cf7bcp-5,   0x1.6541a8p-6,  0x1.2380a4p-7,
    -0x1.9edc48p-7,  -0x1.03f6f2p-5, -0x1.3def6cp-5, -0x1.bdeedp-5,   -0x1.ccfacp-5,  -0x1.7e7f0ep-5,
    -0x1.18707p-5,   -0x1.5f77p-6,   0x1.0faadep-11, 0x1.2bf4dap-6,   0x1.50be0cp-5,  0x1.cac6e2p-5,
    0x1.53b644p-5,   0x1.33aca8p-5,  0x1.50fc68p-5,  0x1.f30032p-6,   0x1.6bf452p-7,  -0x1.22828cp-8,
    -0x1.300a98p-5,  -0x1.2c0e0ep-5, -0x1.538cfap-5, -0x1.cdbbfep-5,  -0x1.153ebap-5, -0x1.68fc6ap-6,
    -0x1.3868acp-6,  0x1.48a4fep-8,  0x1.94c86ep-6,  0x1.718b34p-5,   0x1.6b9b42p-5,  0x1.5dce44p-5,
    0x1.3f8b1cp-5,   0x1.200ecp-5,   0x1.a723c8p-6,  0x1.024df8p-7,   -0x1.c2cbeap-9, -0x1.1cbc0cp-5,
    -0x1.92fa8cp-5,  -0x1.974a36p-5, -0x1.681daep-5, -0x1.4a9ecap-5,  -0x1.85ce12p-6, -0x1.a3305ap-7,
    0x1.d6dc1ep-10,  0x1.83892p-6,   0x1.cff1eap-6,  0x1.2dc244p-5,   0x1.8299bap-5,  0x1.858954p-5,
    0x1.754c62p-5,   0x1.630bfp-6,   0x1.001e18p-7,  -0x1.76e53cp-7,  -0x1.9cfd16p-6, -0x1.3365a6p-5,
    -0x1.665bb8p-5,  -0x1.5742bap-5, -0x1.64fe0ap-5, -0x1.536b8ep-6,  -0x1.96986ep-8, 0x1.a54da6p-7,
    0x1.b5ec46p-6,   0x1.3569dp-5,   0x1.9eeff8p-5,  0x1.5f3f9cp-5,   0x1.30e55p-5,   0x1.199468p-5,
    0x1.abeba6p-6,   -0x1.527232p-8, -0x1.3ebc78p-6, -0x1.45f58ap-5,  -0x1.8b719p-5,  -0x1.473966p-5,
    -0x1.50d858p-5,  -0x1.768214p-5, -0x1.406602p-5, -0x1.7e5596p-6,  -0x1.46038p-8,  0x1.ffb032p-6,
    0x1.5d12p-5,     0x1.6dc4c6p-5,  0x1.d36a1ep-5,  0x1.43437p-5,    0x1.e8c51ap-6,  0x1.e726a6p-6,
    -0x1.602bfp-8,   -0x1.ed317p-7,  -0x1.62fe68p-6, -0x1.55c044p-5,  -0x1.dfdfb6p-5, -0x1.553df4p-5,
    -0x1.836f0cp-5,  -0x1.49b21ap-6, -0x1.f7776cp-7, 0x1.12eeb6p-7};
static const unsigned char q6k_q[210] = {
    252, 133, 238, 102, 222, 188, 214, 123, 6,   64,  212, 86,  232, 48,  244, 177, 155, 16,  139, 45,  137,
    192, 85,  137, 97,  220, 198, 113, 155, 120, 153, 70,  141, 114, 12,  56,  144, 45,  252, 172, 24,  141,
    182, 198, 133, 182, 132, 144, 23,  198, 6,   124, 24,  205, 179, 209, 180, 6,   157, 168, 202, 113, 25,
    142, 149, 114, 25,  87,  224, 166, 2,   12,  77,  108, 17,  141, 22,  248, 34,  130, 25,  14,  34,  34,
    176, 133, 22,  155, 218, 200, 222, 233, 71,  126, 233, 116, 12,  85,  137, 174, 251, 50,  193, 150, 253,
    148, 160, 218, 151, 255, 55,  197, 119, 129, 230, 94,  11,  11,  217, 128, 93,  164, 21,  163, 126, 89,
    137, 72,  49,  54,  38,  43,  31,  95,  79,  142, 206, 202, 201, 212, 212, 160, 160, 113, 78,  14,  9,
    20,  20,  16,  96,  112, 177, 241, 242, 247, 235, 239, 223, 159, 57,  57,  52,  32,  16,  128, 129, 193,
    193, 198, 219, 219, 239, 175, 191, 63,  206, 205, 201, 212, 208, 224, 112, 112, 113, 54,  54,  43,  43,
    95,  79,  143, 132, 119, 135, 123, 126, 130, 144, 140, 132, 146, 133, 135, 151, 102, 107, 128, 247, 128};

static void test_ggml_blocks(void) {
    unsigned char out[256];
    cm_quantize_row_q8_0(q8_recip_x, (cm_block_q8_0 *)out, 32);
    CHECK(memcmp(out, q8_recip_q, 34) == 0);
    /* the quirk that block shows: ggml multiplies by 1/d, and x/d would round differently somewhere */
    float amax = 0;
    for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(q8_recip_x[i]));
    const float d = amax / 127.0f, id = 1.0f / d;
    int differ = 0;
    for (int i = 0; i < 32; i++) differ += roundf(q8_recip_x[i] * id) != roundf(q8_recip_x[i] / d);
    CHECK(differ > 0);

    /* d is computed and used in fp32, only stored as fp16: quantizing with the stored d would differ */
    cm_quantize_row_q8_0(q8_f16d_x, (cm_block_q8_0 *)out, 32);
    CHECK(memcmp(out, q8_f16d_q, 34) == 0);

    /* Q4_0: -0.75 (element 5) and +0.75 (element 20) tie for the largest magnitude; the first wins, so
     * d = -0.75 / -8 > 0 and element 5 gets q = 0 */
    cm_quantize_row_q4_0(q4_tie_x, (cm_block_q4_0 *)out, 32);
    CHECK(memcmp(out, q4_tie_q, 18) == 0);
    const cm_block_q4_0 *b4 = (const cm_block_q4_0 *)out;
    CHECK(cm_f16_to_f32(b4->d) > 0);
    CHECK((b4->qs[5] & 0x0F) == 0);
    cm_quantize_row_q4_0(q4_half_x, (cm_block_q4_0 *)out, 32);
    CHECK(memcmp(out, q4_half_q, 18) == 0);

    cm_quantize_row_q6_K(q6k_x, (cm_block_q6_K *)out, 256);
    CHECK(memcmp(out, q6k_q, 210) == 0);
    /* and it dequantizes close to the input (6 bits: within about 1/64 of a sub-block's range) */
    float back[256];
    cm_dequantize_row_q6_K((const cm_block_q6_K *)out, back, 256);
    double err = 0;
    for (int i = 0; i < 256; i++) err = fmax(err, fabs(back[i] - q6k_x[i]));
    CHECK(err < 0.004);

    /* an all-zero block quantizes to zero scales everywhere */
    float zero[256] = {0};
    cm_quantize_row_q6_K(zero, (cm_block_q6_K *)out, 256);
    int nz = 0;
    for (int i = 0; i < 210; i++) nz += out[i] != 0;
    CHECK(nz == 0);
    CHECK(cm_quantize_row(CM_DTYPE_F32, zero, out, 32) == -1);
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t next_u32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}
static float uniform(void) {
    return (float)next_u32() / 4294967296.0f * 2.0f - 1.0f;
}

/* A weight matrix [rows, cols] of type t quantized from random floats. */
static void *random_weights(cm_dtype t, int rows, int cols, float scale) {
    size_t rb = cm_row_bytes(t, (size_t)cols);
    char *w = malloc(rb * (size_t)rows);
    float *row = malloc((size_t)cols * sizeof(float));
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) row[c] = uniform() * scale;
        cm_quantize_row(t, row, w + (size_t)r * rb, (size_t)cols);
    }
    free(row);
    return w;
}

/* The paths this CPU has, best last. */
static int n_isas(void) {
    return (int)cm_isa_best() + 1;
}

/* The SIMD activation layout equals the reference's byte for byte. */
static void test_qact_fill(void) {
    const int cols_list[] = {32, 96, 160, 256, 768};
    for (size_t ci = 0; ci < sizeof cols_list / sizeof *cols_list; ci++) {
        int cols = cols_list[ci], n = 5, nchunk = (cols + 63) / 64;
        float *x = malloc((size_t)n * cols * sizeof(float));
        for (int i = 0; i < n * cols; i++) x[i] = uniform() * (i % 3 ? 1.0f : 37.0f);
        for (int i = 0; i < 32; i++) x[cols + i] = 0; /* token 1 starts with an all-zero block */
        x[2 * cols + 3] = 0.5f * 127.0f / 127.0f;     /* some exact halves after scaling */
        /* corr shifts: none (AVX2 Q8_0), 3 (Q4_0), 5 (Q6_K), 7 (Q8_0 on AVX-512) */
        static const int shifts[] = {-1, 3, 5, 7};
        for (int variant = 0; variant < 4; variant++) {
            cm_qact ref = {n, cols, nchunk, shifts[variant], NULL, NULL, NULL};
            cm_qact got = ref;
            size_t qn = (size_t)n * nchunk * 64, sn = (size_t)n * nchunk * 16;
            ref.qs = malloc(qn), got.qs = malloc(qn);
            ref.dx = malloc(sn * 4), got.dx = malloc(sn * 4);
            if (ref.corr_shift >= 0) ref.corr = malloc(sn * 4), got.corr = malloc(sn * 4);
            cm_qact_fill_ref(&ref, x, 0, n);
            /* the reference layout holds exactly cm_quantize_row_q8_0's bytes */
            cm_block_q8_0 blk;
            cm_quantize_row_q8_0(x + cols, &blk, 32);
            for (int j = 0; j < 32; j++) CHECK(ref.qs[nchunk * 64 + j] == blk.qs[j]);
            for (int isa = 1; isa < n_isas(); isa++) {
                memset(got.qs, 0x55, qn);
                memset(got.dx, 0x55, sn * 4);
                if (isa == CM_ISA_AVX2)
                    cm_qact_fill_avx2(&got, x, 0, n);
                else if (cm_cpu_features_get()->avx512vnni)
                    cm_qact_fill_avx512(&got, x, 0, n);
                else
                    continue;
                CHECK(memcmp(ref.qs, got.qs, qn) == 0);
                CHECK(memcmp(ref.dx, got.dx, sn * 4) == 0);
                if (ref.corr) CHECK(memcmp(ref.corr, got.corr, sn * 4) == 0);
            }
            free(ref.qs), free(got.qs), free(ref.dx), free(got.dx), free(ref.corr), free(got.corr);
        }
        free(x);
    }
}

/* Every path against the f64 reference (cm_matmul_ref sees the same quantized activations). The fp32 sums
 * differ only in order: |y - ref| <= 1e-5 * (max |ref| over the output) + 1e-6. */
static void test_matmul_paths(void) {
    const cm_dtype types[] = {CM_DTYPE_Q8_0, CM_DTYPE_Q4_0, CM_DTYPE_Q6_K};
    const int rows_list[] = {1, 5, 37, 64};
    const int ns[] = {1, 3, 17, 128};
    cm_pool *pool2;
    int compared = 0;
    CHECK_OK(cm_pool_open(2, &pool2));
    for (size_t ti = 0; ti < 3; ti++) {
        cm_dtype t = types[ti];
        const int cols_q[] = {32, 96, 288, 768}, cols_k[] = {256, 512, 768, 1024};
        for (int ci = 0; ci < 4; ci++) {
            int cols = t == CM_DTYPE_Q6_K ? cols_k[ci] : cols_q[ci];
            for (size_t ri = 0; ri < 4; ri++) {
                int rows = rows_list[ri];
                void *w = random_weights(t, rows, cols, 0.05f);
                for (size_t ni = 0; ni < 4; ni++) {
                    int n = ns[ni];
                    if (n == 128 && rows > 5 && cols > 300) continue; /* keep the test fast */
                    float *x = malloc((size_t)n * cols * sizeof(float));
                    for (int i = 0; i < n * cols; i++) x[i] = uniform();
                    float *ref = malloc((size_t)n * rows * sizeof(float)),
                          *y = malloc((size_t)n * rows * sizeof(float)),
                          *y1 = malloc((size_t)n * rows * sizeof(float));
                    cm_matmul_ref(ref, x, n, w, t, rows, cols);
                    double scale = 0;
                    for (int i = 0; i < n * rows; i++) scale = fmax(scale, fabs(ref[i]));
                    for (int isa = 0; isa < n_isas(); isa++) {
                        for (int th = 1; th <= 2; th++) {
                            cm_isa_force(isa);
                            for (int i = 0; i < n * rows; i++) y[i] = NAN;
                            cm_matmul(y, x, n, w, t, rows, cols, th == 2 ? pool2 : NULL);
                            double e = cm_test_max_diff(y, ref, (size_t)n * rows);
                            compared++;
                            /* rows are split across threads whole: 2 threads give 1 thread's bytes */
                            if (th == 1)
                                memcpy(y1, y, (size_t)n * rows * sizeof(float));
                            else if (memcmp(y1, y, (size_t)n * rows * sizeof(float)) != 0) {
                                fprintf(stderr, "%s %s rows %d cols %d n %d: 2 threads differ from 1\n",
                                        cm_dtype_name(t), cm_isa_name((cm_isa)isa), rows, cols, n);
                                check_failures++;
                            }
                            if (!(e <= 1e-5 * scale + 1e-6)) {
                                fprintf(
                                    stderr, "%s %s rows %d cols %d n %d threads %d: max diff %g (scale %g)\n",
                                    cm_dtype_name(t), cm_isa_name((cm_isa)isa), rows, cols, n, th, e, scale);
                                check_failures++;
                            }
                        }
                    }
                    cm_isa_force(-1);
                    free(x), free(ref), free(y), free(y1);
                }
                free(w);
            }
        }
    }
    cm_pool_close(pool2);
    printf("matmul paths: %d comparisons against the reference\n", compared);
}

/* cm_matmul_multi gives the same bytes as one cm_matmul per weight, on every path and thread count. */
static void test_matmul_multi(void) {
    const cm_dtype types[] = {CM_DTYPE_Q8_0, CM_DTYPE_Q4_0, CM_DTYPE_Q6_K, CM_DTYPE_F32};
    const int rows[3] = {37, 5, 64}, ns[] = {1, 3, 9};
    cm_pool *pool2;
    CHECK_OK(cm_pool_open(2, &pool2));
    for (int ti = 0; ti < 4; ti++) {
        cm_dtype t = types[ti];
        int cols = t == CM_DTYPE_Q6_K ? 512 : 288;
        void *w[3];
        for (int k = 0; k < 3; k++) {
            if (t == CM_DTYPE_F32) {
                float *f = malloc((size_t)rows[k] * cols * sizeof(float));
                for (int i = 0; i < rows[k] * cols; i++) f[i] = uniform() * 0.05f;
                w[k] = f;
            } else {
                w[k] = random_weights(t, rows[k], cols, 0.05f);
            }
        }
        for (int ni = 0; ni < 3; ni++) {
            int n = ns[ni];
            float *x = malloc((size_t)n * cols * sizeof(float));
            for (int i = 0; i < n * cols; i++) x[i] = uniform();
            float *y[3], *want[3];
            for (int k = 0; k < 3; k++) {
                y[k] = malloc((size_t)n * rows[k] * sizeof(float));
                want[k] = malloc((size_t)n * rows[k] * sizeof(float));
            }
            for (int isa = 0; isa < n_isas(); isa++) {
                for (int th = 1; th <= 2; th++) {
                    cm_isa_force(isa);
                    cm_pool *p = th == 2 ? pool2 : NULL;
                    for (int k = 0; k < 3; k++) cm_matmul(want[k], x, n, w[k], t, rows[k], cols, p);
                    for (int count = 2; count <= 3; count++) {
                        cm_matmul_multi(y, x, n, (const void *const *)w, t, rows, cols, count, p);
                        for (int k = 0; k < count; k++)
                            if (memcmp(y[k], want[k], (size_t)n * rows[k] * sizeof(float)) != 0) {
                                fprintf(stderr, "multi %s %s n %d threads %d count %d: weight %d differs\n",
                                        cm_dtype_name(t), cm_isa_name((cm_isa)isa), n, th, count, k);
                                check_failures++;
                            }
                    }
                }
            }
            cm_isa_force(-1);
            free(x);
            for (int k = 0; k < 3; k++) free(y[k]), free(want[k]);
        }
        for (int k = 0; k < 3; k++) free(w[k]);
    }
    cm_pool_close(pool2);
}

/* With every scale 1 (fp16 1.0) and integer activations whose blocks reach +-127, each product is an integer
 * below 2^24, so any order of fp32 sums is exact: every path must give the exact integer dot. The first 6
 * tokens alone take the tile kernels, all 11 the AVX-512 panel kernel (a whole group of 8 and a part, 9 rows
 * of a 16-row panel). */
static void test_matmul_exact(void) {
    const int rows = 9, cols = 512, n = 11;
    int16_t *wi = malloc((size_t)rows * cols * sizeof *wi);
    float *x = malloc((size_t)n * cols * sizeof(float));
    for (int i = 0; i < n * cols; i++) x[i] = (float)((int)(next_u32() % 255) - 127);
    for (int i = 0; i < n * cols; i += 32) x[i] = i % 64 ? 127.0f : -127.0f; /* amax 127: d = 1 exactly */
    const cm_dtype types[] = {CM_DTYPE_Q8_0, CM_DTYPE_Q4_0, CM_DTYPE_Q6_K};
    for (int ti = 0; ti < 3; ti++) {
        cm_dtype t = types[ti];
        size_t rb = cm_row_bytes(t, cols);
        unsigned char *w = calloc(rows, rb);
        for (int r = 0; r < rows; r++) {
            unsigned char *row = w + (size_t)r * rb;
            if (t == CM_DTYPE_Q8_0) {
                for (int b = 0; b < cols / 32; b++) {
                    cm_block_q8_0 *blk = (cm_block_q8_0 *)row + b;
                    blk->d = 0x3C00;
                    for (int j = 0; j < 32; j++) {
                        int v = (int)(next_u32() % 256) - 128; /* including -128, which ggml never writes */
                        blk->qs[j] = (int8_t)v;
                        wi[(size_t)r * cols + b * 32 + j] = (int8_t)v;
                    }
                }
            } else if (t == CM_DTYPE_Q4_0) {
                for (int b = 0; b < cols / 32; b++) {
                    cm_block_q4_0 *blk = (cm_block_q4_0 *)row + b;
                    blk->d = 0x3C00;
                    for (int j = 0; j < 16; j++) {
                        int lo = (int)(next_u32() % 16), hi = (int)(next_u32() % 16);
                        blk->qs[j] = (uint8_t)(lo | hi << 4);
                        wi[(size_t)r * cols + b * 32 + j] = (int8_t)(lo - 8);
                        wi[(size_t)r * cols + b * 32 + j + 16] = (int8_t)(hi - 8);
                    }
                }
            } else {
                for (int b = 0; b < cols / 256; b++) {
                    cm_block_q6_K *blk = (cm_block_q6_K *)row + b;
                    blk->d = 0x3C00;
                    for (int j = 0; j < 128; j++) blk->ql[j] = (uint8_t)next_u32();
                    for (int j = 0; j < 64; j++) blk->qh[j] = (uint8_t)next_u32();
                    for (int j = 0; j < 16; j++) blk->scales[j] = (int8_t)((int)(next_u32() % 9) - 4);
                    float deq[256];
                    cm_dequantize_row_q6_K(blk, deq, 256);
                    for (int j = 0; j < 256; j++) wi[(size_t)r * cols + b * 256 + j] = (int16_t)deq[j];
                }
            }
        }
        for (int isa = 0; isa < n_isas() * 2; isa++) {
            const int nn = isa % 2 ? n : 6;
            cm_isa_force(isa / 2);
            float y[9 * 11];
            cm_matmul(y, x, nn, w, t, rows, cols, NULL);
            for (int tk = 0; tk < nn; tk++) {
                for (int r = 0; r < rows; r++) {
                    int64_t want = 0;
                    for (int c = 0; c < cols; c++)
                        want += (int64_t)wi[(size_t)r * cols + c] * (int64_t)x[(size_t)tk * cols + c];
                    if (y[tk * rows + r] != (float)want) {
                        fprintf(stderr, "%s %s n %d: token %d row %d: %.1f, want %lld\n", cm_dtype_name(t),
                                cm_isa_name((cm_isa)(isa / 2)), nn, tk, r, y[tk * rows + r], (long long)want);
                        check_failures++;
                        r = rows, tk = nn;
                    }
                }
            }
        }
        cm_isa_force(-1);
        free(w);
    }
    free(wi), free(x);
}

/* The prefill panels (batches of 8+ tokens of Q8_0 / Q4_0) sum a (row, token) pair as acc = fma(float(dot_b)
 * * dx_b, dw_b, acc) over the blocks b in order, with dot_b the exact integer dot of block b: modelled here
 * in scalar code, the AVX2 panel (CAMELID_ISA=avx2, any CPU with AVX2) and the AVX-512 VNNI one must give
 * exactly its bytes, on 1 and 2 threads (the tile kernels round differently, so this also shows the panel
 * ran). Shapes: rows not a multiple of the 8- or 16-row panel, token counts whose last group of 8 is partial
 * (up to 4 and over 4), cols with a padding chunk; plus weights and activations at their extremes (Q4_0
 * nibbles 0 / 15, Q8_0 quants -128 / 127 against +-127), where pmaddubsw's int16 pairs and the Q4_0 int16
 * block sums peak. */
static float panel_model(cm_dtype t, const void *wrow, const cm_block_q8_0 *xb, int nb) {
    float acc = 0.0f;
    for (int b = 0; b < nb; b++) {
        int32_t dot = 0;
        float dw;
        if (t == CM_DTYPE_Q8_0) {
            const cm_block_q8_0 *w = (const cm_block_q8_0 *)wrow + b;
            for (int j = 0; j < 32; j++) dot += (int32_t)w->qs[j] * xb[b].qs[j];
            dw = cm_f16_to_f32(w->d);
        } else {
            const cm_block_q4_0 *w = (const cm_block_q4_0 *)wrow + b;
            for (int j = 0; j < 16; j++)
                dot += ((w->qs[j] & 15) - 8) * xb[b].qs[j] + ((w->qs[j] >> 4) - 8) * xb[b].qs[j + 16];
            dw = cm_f16_to_f32(w->d);
        }
        const float p = (float)dot * cm_f16_to_f32(xb[b].d);
        acc = fmaf(p, dw, acc);
    }
    return acc;
}

static void test_matmul_panels(void) {
    if (cm_isa_best() < CM_ISA_AVX2) {
        printf("panels: skipped (no AVX2)\n");
        return;
    }
    const cm_dtype types[] = {CM_DTYPE_Q8_0, CM_DTYPE_Q4_0};
    const int cols_list[] = {32, 96, 288}, rows_list[] = {3, 8, 13, 24}, ns[] = {8, 12, 13, 21};
    cm_pool *pool2;
    CHECK_OK(cm_pool_open(2, &pool2));
    int compared = 0;
    for (int ti = 0; ti < 2; ti++) {
        const cm_dtype t = types[ti];
        for (int ci = 0; ci < 3; ci++) {
            const int cols = cols_list[ci], nb = cols / 32;
            const size_t rb = cm_row_bytes(t, (size_t)cols);
            for (int ri = 0; ri < 4; ri++) {
                const int rows = rows_list[ri];
                for (int extreme = 0; extreme < 2; extreme++) {
                    unsigned char *w = random_weights(t, rows, cols, 0.05f);
                    if (extreme) /* every quant at an end of its range, scales random */
                        for (int r = 0; r < rows; r++)
                            for (int b = 0; b < nb; b++) {
                                unsigned char *blk =
                                    w + (size_t)r * rb + (size_t)b * (t == CM_DTYPE_Q8_0 ? 34 : 18);
                                const int hi = (r + b) % 2;
                                if (t == CM_DTYPE_Q8_0)
                                    memset(blk + 2, hi ? 127 : 0x80, 32);
                                else
                                    memset(blk + 2, hi ? 0xFF : 0x00, 16);
                            }
                    for (int ni = 0; ni < 4; ni++) {
                        const int n = ns[ni];
                        float *x = malloc((size_t)n * cols * sizeof(float));
                        for (int i = 0; i < n * cols; i++)
                            x[i] = extreme ? ((i / 32 + i / cols) % 2 ? 1.0f : -1.0f) : uniform();
                        cm_block_q8_0 *xq = cm_quantize_activations_q8_0(x, n, cols);
                        float *want = malloc((size_t)n * rows * sizeof(float)),
                              *y = malloc((size_t)n * rows * sizeof(float));
                        for (int tk = 0; tk < n; tk++)
                            for (int r = 0; r < rows; r++)
                                want[(size_t)tk * rows + r] =
                                    panel_model(t, w + (size_t)r * rb, xq + (size_t)tk * nb, nb);
                        for (int isa = CM_ISA_AVX2; isa <= (int)cm_isa_best(); isa++) {
                            if (isa == CM_ISA_AVX512 && !cm_cpu_features_get()->avx512vnni) continue;
                            for (int th = 1; th <= 2; th++) {
                                cm_isa_force(isa);
                                for (int i = 0; i < n * rows; i++) y[i] = NAN;
                                cm_matmul(y, x, n, w, t, rows, cols, th == 2 ? pool2 : NULL);
                                compared++;
                                if (memcmp(y, want, (size_t)n * rows * sizeof(float)) != 0) {
                                    int i = 0;
                                    while (y[i] == want[i]) i++;
                                    fprintf(stderr,
                                            "panel %s %s%s rows %d cols %d n %d threads %d: token %d row %d "
                                            "%.9g, "
                                            "model %.9g\n",
                                            cm_dtype_name(t), cm_isa_name((cm_isa)isa),
                                            extreme ? " extreme" : "", rows, cols, n, th, i / rows, i % rows,
                                            y[i], want[i]);
                                    check_failures++;
                                }
                            }
                        }
                        cm_isa_force(-1);
                        free(x), free(xq), free(want), free(y);
                    }
                    free(w);
                }
            }
        }
    }
    cm_pool_close(pool2);
    printf("panels: %d comparisons with the panel model\n", compared);
}

/* stories260K quantized in memory: over the first 4,096 tokens of TinyStories validation text the mean
 * log-likelihood moves by < 0.5% (Q8_0) and < 10% (Q4_0) from F32. ffn_down (rows of 172) stays F32. */
static void test_quality(void) {
    const char *bin = cm_test_shared("models/stories260K/stories260K.bin");
    const char *tokp = cm_test_shared("models/stories260K/tok512.bin");
    char *text;
    size_t len;
    CHECK_OK(cm_read_file(cm_test_shared("corpora/tinystories-valid-sample/tinystories_val.txt"),
                          (size_t)1 << 26, &text, &len));
    cm_tokenizer *tok;
    CHECK_OK(cm_tokenizer_open(tokp, 512, &tok));
    int32_t *ids = NULL;
    size_t n_ids = 0;
    /* about 4 bytes per token: 24 KB of text is plenty for 4,096 tokens */
    CHECK_OK(cm_tokenizer_encode(tok, text, len < 40000 ? len : 40000, true, false, &ids, &n_ids));
    CHECK(n_ids >= 4096);
    const int n = 4096;
    cm_model *m;
    CHECK_OK(cm_model_open(bin, &m));
    const double base = cm_test_mean_loglik(m, ids, n);
    cm_model_close(m);
    const cm_dtype types[] = {CM_DTYPE_Q8_0, CM_DTYPE_Q4_0};
    const double limits[] = {0.005, 0.10};
    for (int i = 0; i < 2; i++) {
        CHECK_OK(cm_model_open(bin, &m));
        cm_quantize_stats st;
        CHECK_OK(cm_model_quantize(m, types[i], false, 2, &st));
        CHECK(m->layers[0].w_down.dtype == CM_DTYPE_F32 && m->layers[0].wq.dtype == types[i]);
        CHECK(st.n_kept == m->cfg.n_layers); /* the ffn_down weights */
        const double q = cm_test_mean_loglik(m, ids, n);
        const double rel = fabs(q - base) / fabs(base);
        printf("stories260K, %d tokens: mean log-likelihood F32 %.5f, %s %.5f (%+.3f%%, limit %.1f%%)\n", n,
               base, cm_dtype_name(types[i]), q, 100.0 * (q - base) / fabs(base), 100.0 * limits[i]);
        CHECK(rel < limits[i]);
        cm_model_close(m);
    }
    free(ids);
    free(text);
    cm_tokenizer_close(tok);
}

/* The per-tensor choice mirrors llama-quantize's default mix and --pure. */
static void test_choose(void) {
    CHECK(cm_quantize_choose(CM_DTYPE_Q4_0, false, true, 768, CM_DTYPE_F32) == CM_DTYPE_Q6_K);
    CHECK(cm_quantize_choose(CM_DTYPE_Q4_0, false, true, 288, CM_DTYPE_F32) == CM_DTYPE_Q8_0);
    CHECK(cm_quantize_choose(CM_DTYPE_Q4_0, true, true, 768, CM_DTYPE_F32) == CM_DTYPE_Q4_0);
    CHECK(cm_quantize_choose(CM_DTYPE_Q8_0, false, true, 768, CM_DTYPE_F32) == CM_DTYPE_Q8_0);
    CHECK(cm_quantize_choose(CM_DTYPE_Q4_0, false, false, 768, CM_DTYPE_F16) == CM_DTYPE_Q4_0);
    CHECK(cm_quantize_choose(CM_DTYPE_Q4_0, false, false, 172, CM_DTYPE_F32) == CM_DTYPE_F32);
    CHECK(cm_quantize_choose(CM_DTYPE_Q8_0, true, false, 172, CM_DTYPE_F16) == CM_DTYPE_F16);
    CHECK(cm_quantize_choose(CM_DTYPE_Q4_0, false, true, 100, CM_DTYPE_F32) == CM_DTYPE_F32);
}

int main(void) {
    printf("ISA: best %s, VNNI %s\n", cm_isa_name(cm_isa_best()),
           cm_cpu_features_get()->avx512vnni ? "yes" : "no");
    test_ggml_blocks();
    test_qact_fill();
    test_matmul_exact();
    test_matmul_paths();
    test_matmul_multi();
    test_matmul_panels();
    test_choose();
    test_quality();
    CHECK_DONE();
}
