/* Finite-difference checks of every training op's backward (include/camelid/train_ops.h): for a scalar
 * L = sum(out * r) with fixed random r, each analytic gradient is compared with central differences of L
 * computed in double over the f32 op. The whole-model gradients are checked against PyTorch in
 * test_train_golden.c. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/train_ops.h"
#include "check.h"

static uint64_t rng = 0x1234;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}
static float *rand_vec(size_t n, float scale) {
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}
static double weighted(const float *out, const float *r, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * r[i];
    return s;
}

/* Each op under test: run the forward from the current inputs and return L. */
typedef double (*loss_fn)(void *ctx);

/* Compare analytic gradient g of `x` (n entries) with central differences of f; every entry when n is small,
 * else a spread of 40. */
static int fd_check(const char *what, loss_fn f, void *ctx, float *x, const float *g, size_t n, float h,
                    double tol) {
    size_t step = n <= 64 ? 1 : n / 40;
    double worst = 0, scale = 1e-3;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(g[i]));
    for (size_t i = 0; i < n; i += step) {
        float keep = x[i];
        x[i] = keep + h;
        double lp = f(ctx);
        x[i] = keep - h;
        double lm = f(ctx);
        x[i] = keep;
        double fd = (lp - lm) / (2.0 * h);
        double err = fabs(fd - g[i]) / scale;
        if (err > worst) worst = err;
    }
    if (worst > tol) {
        fprintf(stderr, "%s: finite differences differ from the backward by %.3g (relative to max |g|)\n", what,
                worst);
        return 1;
    }
    return 0;
}

/* ---- rmsnorm ---- */
typedef struct {
    int n, dim;
    float *x, *w, *out, *rstd, *r;
} norm_ctx;
static double norm_loss(void *p) {
    norm_ctx *c = p;
    cm_rmsnorm_forward(c->out, c->rstd, c->x, c->w, c->n, c->dim, 1e-5f, NULL);
    return weighted(c->out, c->r, (size_t)c->n * c->dim);
}
static void test_rmsnorm(cm_pool *pool) {
    norm_ctx c = {.n = 5, .dim = 24};
    size_t N = (size_t)c.n * c.dim;
    c.x = rand_vec(N, 1.0f);
    c.w = rand_vec(c.dim, 1.0f);
    c.out = malloc(N * 4);
    c.rstd = malloc(c.n * 4);
    c.r = rand_vec(N, 1.0f);
    float *dx = calloc(N, 4), *dw = calloc(c.dim, 4);
    norm_loss(&c);
    cm_rmsnorm_backward(dx, dw, c.r, c.x, c.w, c.rstd, c.n, c.dim, pool);
    check_failures += fd_check("rmsnorm dx", norm_loss, &c, c.x, dx, N, 1e-2f, 2e-3);
    check_failures += fd_check("rmsnorm dw", norm_loss, &c, c.w, dw, c.dim, 1e-2f, 2e-3);
    /* backward accumulates: a second call doubles */
    float *dx2 = malloc(N * 4);
    memcpy(dx2, dx, N * 4);
    cm_rmsnorm_backward(dx2, dw, c.r, c.x, c.w, c.rstd, c.n, c.dim, pool);
    CHECK_NEAR(dx2[7], 2 * dx[7], 1e-5);
    free(c.x), free(c.w), free(c.out), free(c.rstd), free(c.r), free(dx), free(dw), free(dx2);
}

/* ---- linear ---- */
typedef struct {
    int n, in, out;
    float *x, *w, *y, *r;
    cm_pool *pool;
} lin_ctx;
static double lin_loss(void *p) {
    lin_ctx *c = p;
    cm_linear_forward(c->y, c->x, c->w, c->n, c->in, c->out, c->pool);
    return weighted(c->y, c->r, (size_t)c->n * c->out);
}
static void test_linear(cm_pool *pool) {
    lin_ctx c = {.n = 6, .in = 10, .out = 7, .pool = pool};
    c.x = rand_vec((size_t)c.n * c.in, 1.0f);
    c.w = rand_vec((size_t)c.out * c.in, 1.0f);
    c.y = malloc((size_t)c.n * c.out * 4);
    c.r = rand_vec((size_t)c.n * c.out, 1.0f);
    float *dx = calloc((size_t)c.n * c.in, 4), *dw = calloc((size_t)c.out * c.in, 4);
    lin_loss(&c);
    cm_linear_backward(dx, dw, c.r, c.x, c.w, c.n, c.in, c.out, c.pool);
    check_failures += fd_check("linear dx", lin_loss, &c, c.x, dx, (size_t)c.n * c.in, 1e-2f, 1e-3);
    check_failures += fd_check("linear dw", lin_loss, &c, c.w, dw, (size_t)c.out * c.in, 1e-2f, 1e-3);
    free(c.x), free(c.w), free(c.y), free(c.r), free(dx), free(dw);
}

/* ---- embedding ---- */
static void test_embedding(void) {
    int V = 9, D = 4, n = 6;
    int32_t tok[6] = {3, 1, 3, 8, 0, 3};
    float *table = rand_vec((size_t)V * D, 1.0f), *out = malloc((size_t)n * D * 4), *r = rand_vec((size_t)n * D, 1);
    float *dt = calloc((size_t)V * D, 4);
    cm_embedding_forward(out, tok, table, n, D);
    CHECK(out[D * 3 + 2] == table[8 * D + 2]);
    cm_embedding_backward(dt, r, tok, n, D);
    /* row 3 appears three times */
    CHECK_NEAR(dt[3 * D + 1], r[0 * D + 1] + r[2 * D + 1] + r[5 * D + 1], 1e-6);
    CHECK(dt[2 * D] == 0.0f);
    free(table), free(out), free(r), free(dt);
}

/* ---- rope ---- */
typedef struct {
    int n, heads;
    float *x, *y, *r;
    int32_t *pos;
    cm_rope_table *t;
} rope_ctx;
static double rope_loss(void *p) {
    rope_ctx *c = p;
    size_t N = (size_t)c->n * c->heads * c->t->half * 2;
    memcpy(c->y, c->x, N * 4);
    cm_rope_forward(c->y, c->pos, c->n, c->heads, c->t);
    return weighted(c->y, c->r, N);
}
static void test_rope(cm_rope_layout layout) {
    cm_config cfg = {0};
    cfg.head_dim = 8;
    cfg.rope_theta = 10000.0f;
    cfg.rope_layout = layout;
    cm_rope_table t;
    CHECK_OK(cm_rope_table_init(&t, &cfg, 16));
    int32_t pos[5] = {0, 3, 15, 7, 1};
    rope_ctx c = {.n = 5, .heads = 3, .pos = pos, .t = &t};
    size_t N = (size_t)c.n * c.heads * 8;
    c.x = rand_vec(N, 1.0f);
    c.y = malloc(N * 4);
    c.r = rand_vec(N, 1.0f);
    rope_loss(&c);
    CHECK_NEAR(c.y[0], c.x[0], 1e-6); /* position 0 does not rotate */
    float *dx = malloc(N * 4);
    memcpy(dx, c.r, N * 4);
    cm_rope_backward(dx, pos, c.n, c.heads, &t);
    check_failures += fd_check(layout == CM_ROPE_HALF ? "rope (half) dx" : "rope (interleaved) dx", rope_loss, &c,
                               c.x, dx, N, 1e-2f, 1e-3);
    cm_rope_table_free(&t);
    free(c.x), free(c.y), free(c.r), free(dx);
}

/* ---- attention ---- */
typedef struct {
    cm_attn_shape s;
    float *q, *k, *v, *out, *probs, *r;
    const int32_t *seg;
} attn_ctx;
static double attn_loss(void *p) {
    attn_ctx *c = p;
    cm_attention_forward(c->out, c->probs, c->q, c->k, c->v, c->seg, c->s, NULL);
    return weighted(c->out, c->r, (size_t)c->s.B * c->s.T * c->s.n_heads * c->s.head_dim);
}
static void test_attention(cm_pool *pool, bool packed) {
    cm_attn_shape s = {2, 6, 4, 2, 4};
    int32_t seg[12] = {0, 0, 0, 3, 3, 3, 0, 1, 1, 1, 1, 5};
    attn_ctx c = {.s = s, .seg = packed ? seg : NULL};
    size_t BT = (size_t)s.B * s.T, QN = BT * s.n_heads * s.head_dim, KN = BT * s.n_kv_heads * s.head_dim;
    c.q = rand_vec(QN, 1.0f);
    c.k = rand_vec(KN, 1.0f);
    c.v = rand_vec(KN, 1.0f);
    c.out = malloc(QN * 4);
    c.probs = malloc((size_t)s.B * s.n_heads * s.T * s.T * 4);
    c.r = rand_vec(QN, 1.0f);
    attn_loss(&c);
    /* the first token of a document attends to itself only */
    if (packed) CHECK_NEAR(c.probs[((size_t)0 * s.T + 3) * s.T + 3], 1.0, 1e-6);
    float *dq = calloc(QN, 4), *dk = calloc(KN, 4), *dv = calloc(KN, 4);
    cm_attention_backward(dq, dk, dv, c.r, c.probs, c.q, c.k, c.v, c.seg, s, pool);
    check_failures += fd_check("attention dq", attn_loss, &c, c.q, dq, QN, 1e-2f, 2e-3);
    check_failures += fd_check("attention dk", attn_loss, &c, c.k, dk, KN, 1e-2f, 2e-3);
    check_failures += fd_check("attention dv", attn_loss, &c, c.v, dv, KN, 1e-2f, 2e-3);
    free(c.q), free(c.k), free(c.v), free(c.out), free(c.probs), free(c.r), free(dq), free(dk), free(dv);
}

/* ---- swiglu ---- */
typedef struct {
    size_t n;
    float *g, *u, *h, *r;
} swi_ctx;
static double swi_loss(void *p) {
    swi_ctx *c = p;
    cm_swiglu_forward(c->h, c->g, c->u, c->n, NULL);
    return weighted(c->h, c->r, c->n);
}
static void test_swiglu(cm_pool *pool) {
    swi_ctx c = {.n = 37};
    c.g = rand_vec(c.n, 3.0f);
    c.u = rand_vec(c.n, 1.0f);
    c.h = malloc(c.n * 4);
    c.r = rand_vec(c.n, 1.0f);
    float *dg = calloc(c.n, 4), *du = calloc(c.n, 4);
    swi_loss(&c);
    cm_swiglu_backward(dg, du, c.r, c.g, c.u, c.n, pool);
    check_failures += fd_check("swiglu dgate", swi_loss, &c, c.g, dg, c.n, 1e-2f, 1e-3);
    check_failures += fd_check("swiglu dup", swi_loss, &c, c.u, du, c.n, 1e-2f, 1e-3);
    free(c.g), free(c.u), free(c.h), free(c.r), free(dg), free(du);
}

/* ---- cross-entropy ---- */
typedef struct {
    int n, V;
    float *z, *lse;
    int32_t *y;
} ce_ctx;
static double ce_loss(void *p) {
    ce_ctx *c = p;
    int counted;
    return cm_cross_entropy_forward(c->lse, c->z, c->y, c->n, c->V, &counted, NULL);
}
static void test_cross_entropy(cm_pool *pool) {
    int32_t y[4] = {2, -1, 0, 10};
    ce_ctx c = {.n = 4, .V = 11, .y = y};
    c.z = rand_vec((size_t)c.n * c.V, 3.0f);
    c.lse = malloc(c.n * 4);
    int counted;
    double loss = cm_cross_entropy_forward(c.lse, c.z, c.y, c.n, c.V, &counted, pool);
    CHECK(counted == 3);
    /* direct: -log softmax */
    double ref = 0;
    for (int t = 0; t < c.n; t++) {
        if (y[t] < 0) continue;
        double s = 0;
        for (int i = 0; i < c.V; i++) s += exp(c.z[t * c.V + i]);
        ref += log(s) - c.z[t * c.V + y[t]];
    }
    CHECK_NEAR(loss, ref, 1e-5);
    float *d = malloc((size_t)c.n * c.V * 4);
    memcpy(d, c.z, (size_t)c.n * c.V * 4);
    cm_cross_entropy_backward(d, c.lse, c.y, c.n, c.V, 1.0f, pool);
    CHECK(d[1 * c.V + 3] == 0.0f); /* an ignored row has no gradient */
    check_failures += fd_check("cross-entropy dlogits", ce_loss, &c, c.z, d, (size_t)c.n * c.V, 1e-2f, 1e-3);
    free(c.z), free(c.lse), free(d);
}

int main(void) {
    cm_pool *pool;
    CHECK_OK(cm_pool_open(2, &pool));
    cm_train_blas_threads(2);
    test_embedding();
    test_rmsnorm(pool);
    test_linear(NULL);
    test_linear(pool);
    test_rope(CM_ROPE_INTERLEAVED);
    test_rope(CM_ROPE_HALF);
    test_attention(pool, false);
    test_attention(pool, true);
    test_attention(NULL, true);
    test_swiglu(pool);
    test_cross_entropy(pool);
    cm_pool_close(pool);
    CHECK_DONE();
}
