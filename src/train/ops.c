/* Forward/backward pairs of the LLaMA block's operations (see include/camelid/train_ops.h). The code is plain
 * C over rows; matrix products go to BLAS, attention uses the SIMD dot/axpy of the active ISA, and the
 * row-wise ops are split across the pool by rows. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/kernels.h"
#include "camelid/train_ops.h"

/* OpenBLAS's own thread count (declared by its cblas.h). */
void cm_train_blas_threads(int n) { openblas_set_num_threads(n < 1 ? 1 : n); }

void cm_embedding_forward(float *out, const int32_t *tokens, const float *table, int n, int dim) {
    for (int t = 0; t < n; t++) memcpy(out + (size_t)t * dim, table + (size_t)tokens[t] * dim, dim * sizeof(float));
}

void cm_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int n, int dim) {
    for (int t = 0; t < n; t++) {
        float *row = dtable + (size_t)tokens[t] * dim;
        const float *d = dout + (size_t)t * dim;
        for (int i = 0; i < dim; i++) row[i] += d[i];
    }
}

/* ---- RMSNorm ---- */

typedef struct {
    float *out, *rstd, *dx;
    const float *x, *w, *dout, *rstd_in;
    float *dw_parts; /* per thread partial dw [threads, dim], or NULL to accumulate into dw (one thread) */
    float *dw;
    int n, dim;
    float eps;
} norm_job;

static void rmsnorm_fwd_worker(void *arg, int thread, int n_threads) {
    norm_job *j = arg;
    int t0, t1;
    cm_split_range(j->n, n_threads, thread, &t0, &t1);
    for (int t = t0; t < t1; t++) {
        const float *x = j->x + (size_t)t * j->dim;
        float *o = j->out + (size_t)t * j->dim;
        double ss = 0;
        for (int i = 0; i < j->dim; i++) ss += (double)x[i] * x[i];
        float r = (float)(1.0 / sqrt(ss / j->dim + j->eps));
        j->rstd[t] = r;
        for (int i = 0; i < j->dim; i++) o[i] = x[i] * r * j->w[i];
    }
}

void cm_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int n, int dim, float eps,
                        cm_pool *pool) {
    norm_job j = {.out = out, .rstd = rstd, .x = x, .w = w, .n = n, .dim = dim, .eps = eps};
    cm_pool_run(pool, rmsnorm_fwd_worker, &j);
}

/* y = x r w, r = (mean(x^2) + eps)^-1/2: dx_i = r (dy_i w_i) - x_i r^3 / dim * sum_k dy_k w_k x_k;
 * dw_i = sum_t dy_i x_i r. */
static void rmsnorm_bwd_worker(void *arg, int thread, int n_threads) {
    norm_job *j = arg;
    int t0, t1;
    cm_split_range(j->n, n_threads, thread, &t0, &t1);
    float *dw = j->dw; /* NULL: a frozen weight */
    if (j->dw_parts) {
        dw = j->dw_parts + (size_t)thread * j->dim;
        memset(dw, 0, j->dim * sizeof(float));
    }
    for (int t = t0; t < t1; t++) {
        const float *x = j->x + (size_t)t * j->dim, *dy = j->dout + (size_t)t * j->dim;
        float *dx = j->dx + (size_t)t * j->dim;
        float r = j->rstd_in[t];
        double dot = 0;
        for (int i = 0; i < j->dim; i++) dot += (double)dy[i] * j->w[i] * x[i];
        float c = (float)(dot * r * r * r / j->dim);
        for (int i = 0; i < j->dim; i++) dx[i] += r * dy[i] * j->w[i] - c * x[i];
        if (dw)
            for (int i = 0; i < j->dim; i++) dw[i] += dy[i] * x[i] * r;
    }
}

void cm_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                         const float *rstd, int n, int dim, cm_pool *pool) {
    int threads = cm_pool_size(pool);
    float *parts = dw ? malloc((size_t)threads * dim * sizeof(float)) : NULL;
    if (dw && !parts) pool = NULL; /* no memory for per-thread partials: one thread accumulates into dw directly */
    norm_job j = {.dx = dx, .x = x, .w = w, .dout = dout, .rstd_in = rstd, .dw_parts = parts, .dw = dw, .n = n,
                  .dim = dim};
    cm_pool_run(pool, rmsnorm_bwd_worker, &j);
    if (!parts) return;
    for (int p = 0; p < threads; p++)
        for (int i = 0; i < dim; i++) dw[i] += parts[(size_t)p * dim + i];
    free(parts);
}

/* ---- linear ----
 * One threading system: the pool splits each product and every part is a single-threaded BLAS call, so BLAS's
 * own threads never compete with the pool's. Each product is split along the dimension that keeps the larger
 * operand from being packed by every thread. The split does not change any element's sum. */

typedef struct {
    float *y, *dx, *dw;
    const float *x, *w, *dy;
    int n, in, out;
} lin_job;

static void lin_fwd_worker(void *arg, int thread, int n_threads) {
    lin_job *j = arg;
    int a, b;
    if (j->out > j->n) { /* split W's rows: each thread packs its part of the larger W and all of x */
        cm_split_range(j->out, n_threads, thread, &a, &b);
        if (b > a)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, b - a, j->in, 1.0f, j->x, j->in,
                        j->w + (size_t)a * j->in, j->in, 0.0f, j->y + a, j->out);
        return;
    }
    cm_split_range(j->n, n_threads, thread, &a, &b); /* split x's rows */
    if (b > a)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b - a, j->out, j->in, 1.0f, j->x + (size_t)a * j->in,
                    j->in, j->w, j->in, 0.0f, j->y + (size_t)a * j->out, j->out);
}

static void lin_bwd_worker(void *arg, int thread, int n_threads) {
    lin_job *j = arg;
    int r0, r1;
    if (j->dw && j->in > j->out) { /* dW[:, c0:c1] += dy^T x[:, c0:c1]: each thread packs its columns of x */
        cm_split_range(j->in, n_threads, thread, &r0, &r1);
        if (r1 > r0)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j->out, r1 - r0, j->n, 1.0f, j->dy, j->out, j->x + r0,
                        j->in, 1.0f, j->dw + r0, j->in);
    } else if (j->dw) { /* dW[r0:r1] += dy[:, r0:r1]^T x: each thread packs its columns of dy */
        cm_split_range(j->out, n_threads, thread, &r0, &r1);
        if (r1 > r0)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1 - r0, j->in, j->n, 1.0f, j->dy + r0, j->out, j->x,
                        j->in, 1.0f, j->dw + (size_t)r0 * j->in, j->in);
    }
    if (j->dx && j->in > j->n) {
        /* W is the larger operand: dx[:, c0:c1] += dy W[:, c0:c1], each thread packing its columns of W */
        cm_split_range(j->in, n_threads, thread, &r0, &r1);
        if (r1 > r0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, j->n, r1 - r0, j->out, 1.0f, j->dy, j->out,
                        j->w + r0, j->in, 1.0f, j->dx + r0, j->in);
    } else if (j->dx) { /* dx[t0:t1] += dy[t0:t1] W */
        cm_split_range(j->n, n_threads, thread, &r0, &r1);
        if (r1 > r0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, j->in, j->out, 1.0f,
                        j->dy + (size_t)r0 * j->out, j->out, j->w, j->in, 1.0f, j->dx + (size_t)r0 * j->in, j->in);
    }
}

/* Run a worker that makes BLAS calls on the pool, with BLAS single-threaded inside it. */
static void blas_pool_run(cm_pool *pool, cm_pool_fn fn, void *arg) {
    if (cm_pool_size(pool) <= 1) {
        fn(arg, 0, 1);
        return;
    }
    int blas_threads = openblas_get_num_threads();
    if (blas_threads != 1) openblas_set_num_threads(1);
    cm_pool_run(pool, fn, arg);
    if (blas_threads != 1) openblas_set_num_threads(blas_threads);
}

void cm_linear_forward(float *y, const float *x, const float *w, int n, int in, int out, cm_pool *pool) {
    lin_job j = {.y = y, .x = x, .w = w, .n = n, .in = in, .out = out};
    blas_pool_run(pool, lin_fwd_worker, &j);
}

void cm_linear_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int n, int in,
                        int out, cm_pool *pool) {
    lin_job j = {.dx = dx, .dw = dw, .dy = dy, .x = x, .w = w, .n = n, .in = in, .out = out};
    blas_pool_run(pool, lin_bwd_worker, &j);
}

/* ---- RoPE ---- */

cm_status cm_rope_table_init(cm_rope_table *t, const cm_config *c, int n_pos) {
    memset(t, 0, sizeof *t);
    t->n_pos = n_pos;
    t->half = c->head_dim / 2;
    t->layout = c->rope_layout;
    size_t n = (size_t)n_pos * t->half;
    t->cos = malloc(n * sizeof(float));
    t->sin = malloc(n * sizeof(float));
    if (!t->cos || !t->sin) {
        cm_rope_table_free(t);
        return cm_error(CM_ERR_NOMEM, "out of memory for the RoPE table");
    }
    for (int i = 0; i < t->half; i++) {
        double f = cm_config_rope_inv_freq(c, i);
        for (int p = 0; p < n_pos; p++) {
            /* the angle in f32 as inference computes it, then cos/sin in double */
            float a = (float)p * (float)f;
            t->cos[(size_t)p * t->half + i] = (float)cos(a);
            t->sin[(size_t)p * t->half + i] = (float)sin(a);
        }
    }
    return CM_OK;
}

void cm_rope_table_free(cm_rope_table *t) {
    free(t->cos);
    free(t->sin);
    t->cos = t->sin = NULL;
}

/* Rotate pairs (a, b) by the angle (sign -1 rotates back: the transpose of the rotation). */
static void rope_rows(float *x, const int32_t *positions, int n, int n_heads, const cm_rope_table *t, float sign) {
    int half = t->half, hd = 2 * half;
    for (int r = 0; r < n; r++) {
        const float *cs = t->cos + (size_t)positions[r] * half, *sn = t->sin + (size_t)positions[r] * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)r * n_heads + h) * hd;
            for (int i = 0; i < half; i++) {
                int ia = t->layout == CM_ROPE_INTERLEAVED ? 2 * i : i;
                int ib = t->layout == CM_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
                float c = cs[i], s = sign * sn[i], a = v[ia], b = v[ib];
                v[ia] = a * c - b * s;
                v[ib] = a * s + b * c;
            }
        }
    }
}

void cm_rope_forward(float *x, const int32_t *positions, int n, int n_heads, const cm_rope_table *t) {
    rope_rows(x, positions, n, n_heads, t, 1.0f);
}

void cm_rope_backward(float *dx, const int32_t *positions, int n, int n_heads, const cm_rope_table *t) {
    rope_rows(dx, positions, n, n_heads, t, -1.0f);
}

/* ---- attention ----
 * Per (sequence, head), as small matrix products: S = Q K^T (the whole square; the masked half is cheaper to
 * compute than to skip at these sizes), row-wise masked softmax into probs, O = P V. Each pool thread runs its
 * own heads with single-threaded BLAS calls (BLAS's own threads are held at one meanwhile). */

typedef struct {
    float *out, *probs, *dq, *dk, *dv;
    const float *q, *k, *v, *dout, *probs_in;
    const int32_t *seg_start;
    cm_attn_shape s;
    cm_vec_ops ops;
    float *scratch; /* per thread [T, T] */
} attn_job;

static void attn_fwd_worker(void *arg, int thread, int n_threads) {
    attn_job *j = arg;
    cm_attn_shape s = j->s;
    int T = s.T, hd = s.head_dim, QD = s.n_heads * hd, KD = s.n_kv_heads * hd, group = s.n_heads / s.n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    int i0, i1;
    cm_split_range(s.B * s.n_heads, n_threads, thread, &i0, &i1);
    for (int bh = i0; bh < i1; bh++) {
        int b = bh / s.n_heads, h = bh % s.n_heads, kvh = h / group;
        const float *q = j->q + (size_t)b * T * QD + (size_t)h * hd;
        const float *k = j->k + (size_t)b * T * KD + (size_t)kvh * hd;
        const float *v = j->v + (size_t)b * T * KD + (size_t)kvh * hd;
        float *P = j->probs + ((size_t)b * s.n_heads + h) * T * T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, q, QD, k, KD, 0.0f, P, T);
        for (int i = 0; i < T; i++) {
            float *p = P + (size_t)i * T;
            int start = j->seg_start ? j->seg_start[(size_t)b * T + i] : 0;
            for (int t = 0; t < start; t++) p[t] = 0.0f;
            for (int t = i + 1; t < T; t++) p[t] = 0.0f;
            j->ops.softmax(p + start, i - start + 1);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, P, T, v, KD, 0.0f,
                    j->out + (size_t)b * T * QD + (size_t)h * hd, QD);
    }
}

void cm_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                          const int32_t *seg_start, cm_attn_shape s, cm_pool *pool) {
    attn_job j = {.out = out, .probs = probs, .q = q, .k = k, .v = v, .seg_start = seg_start, .s = s};
    cm_vec_ops_get(&j.ops);
    blas_pool_run(pool, attn_fwd_worker, &j);
}

/* Per (sequence, KV head), so that the query heads sharing a KV head update its dk/dv from one thread.
 * O = P V, P = softmax(S), S = Q K^T scale: dV += P^T dO; dP = dO V^T; dS = P (dP - rowsum(P dP));
 * dQ += scale dS K; dK += scale dS^T Q. */
static void attn_bwd_worker(void *arg, int thread, int n_threads) {
    attn_job *j = arg;
    cm_attn_shape s = j->s;
    int T = s.T, hd = s.head_dim, QD = s.n_heads * hd, KD = s.n_kv_heads * hd, group = s.n_heads / s.n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    float *dS = j->scratch + (size_t)thread * T * T;
    int i0, i1;
    cm_split_range(s.B * s.n_kv_heads, n_threads, thread, &i0, &i1);
    for (int bk = i0; bk < i1; bk++) {
        int b = bk / s.n_kv_heads, kvh = bk % s.n_kv_heads;
        const float *k = j->k + (size_t)b * T * KD + (size_t)kvh * hd;
        const float *v = j->v + (size_t)b * T * KD + (size_t)kvh * hd;
        float *dk = j->dk + (size_t)b * T * KD + (size_t)kvh * hd;
        float *dv = j->dv + (size_t)b * T * KD + (size_t)kvh * hd;
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            const float *P = j->probs_in + ((size_t)b * s.n_heads + h) * T * T;
            const float *q = j->q + (size_t)b * T * QD + (size_t)h * hd;
            const float *dO = j->dout + (size_t)b * T * QD + (size_t)h * hd;
            float *dq = j->dq + (size_t)b * T * QD + (size_t)h * hd;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, P, T, dO, QD, 1.0f, dv, KD);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dO, QD, v, KD, 0.0f, dS, T);
            for (int i = 0; i < T; i++) {
                const float *p = P + (size_t)i * T;
                float *d = dS + (size_t)i * T;
                int start = j->seg_start ? j->seg_start[(size_t)b * T + i] : 0;
                float dot = 0.0f;
                for (int t = start; t <= i; t++) dot += p[t] * d[t];
                for (int t = 0; t < start; t++) d[t] = 0.0f;
                for (int t = start; t <= i; t++) d[t] = p[t] * (d[t] - dot) * scale;
                for (int t = i + 1; t < T; t++) d[t] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, dS, T, k, KD, 1.0f, dq, QD);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, dS, T, q, QD, 1.0f, dk, KD);
        }
    }
}

void cm_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                           const float *q, const float *k, const float *v, const int32_t *seg_start,
                           cm_attn_shape s, cm_pool *pool) {
    float *scratch = malloc((size_t)cm_pool_size(pool) * s.T * s.T * sizeof(float));
    if (!scratch) { /* one thread's worth, then */
        pool = NULL;
        scratch = malloc((size_t)s.T * s.T * sizeof(float));
        if (!scratch) return;
    }
    attn_job j = {.dq = dq, .dk = dk, .dv = dv, .dout = dout, .probs_in = probs, .q = q, .k = k, .v = v,
                  .seg_start = seg_start, .s = s, .scratch = scratch};
    blas_pool_run(pool, attn_bwd_worker, &j);
    free(scratch);
}

/* ---- SwiGLU ---- */

typedef struct {
    float *h, *dgate, *dup;
    const float *gate, *up, *dh;
    size_t n;
    cm_vec_ops ops;
} swiglu_job;

static void swiglu_fwd_worker(void *arg, int thread, int n_threads) {
    swiglu_job *j = arg;
    size_t chunk = (j->n + n_threads - 1) / n_threads, i0 = chunk * thread, i1 = i0 + chunk;
    if (i1 > j->n) i1 = j->n;
    if (i1 <= i0) return;
    /* h = gate, then the vectorized silu(h) * up in place, in int-sized pieces */
    memcpy(j->h + i0, j->gate + i0, (i1 - i0) * sizeof(float));
    for (size_t i = i0; i < i1; i += 1 << 20) {
        size_t len = i1 - i < (1u << 20) ? i1 - i : (1u << 20);
        j->ops.swiglu(j->h + i, j->up + i, (int)len);
    }
}

void cm_swiglu_forward(float *h, const float *gate, const float *up, size_t n, cm_pool *pool) {
    swiglu_job j = {.h = h, .gate = gate, .up = up, .n = n};
    cm_vec_ops_get(&j.ops);
    cm_pool_run(pool, swiglu_fwd_worker, &j);
}

/* silu(g) = g s(g); silu'(g) = s(g) (1 + g (1 - s(g))) */
static void swiglu_bwd_worker(void *arg, int thread, int n_threads) {
    swiglu_job *j = arg;
    size_t chunk = (j->n + n_threads - 1) / n_threads, i0 = chunk * thread, i1 = i0 + chunk;
    if (i1 > j->n) i1 = j->n;
    for (size_t i = i0; i < i1; i++) {
        float g = j->gate[i], sg = 1.0f / (1.0f + expf(-g)), d = j->dh[i];
        j->dgate[i] += d * j->up[i] * sg * (1.0f + g * (1.0f - sg));
        j->dup[i] += d * g * sg;
    }
}

void cm_swiglu_backward(float *dgate, float *dup, const float *dh, const float *gate, const float *up, size_t n,
                        cm_pool *pool) {
    swiglu_job j = {.dgate = dgate, .dup = dup, .dh = dh, .gate = gate, .up = up, .n = n};
    cm_pool_run(pool, swiglu_bwd_worker, &j);
}

/* ---- cross-entropy ----
 * The vectorized softmax of the active ISA does the exponentials (a V-wide row per token, V = 32000 for
 * Llama 2: scalar expf here would cost as much as a layer's matrix products). The forward takes
 * -log softmax(z)[y] from a copy of the row; a probability that underflows falls back to log-sum-exp in
 * double. The backward makes the row its softmax in place. */

typedef struct {
    float *logits, *lse, *scratch;
    const float *logits_in;
    const int32_t *targets;
    int n, V;
    float dloss;
    cm_vec_ops ops;
    double loss[64];
    int counted[64];
} ce_job;

static void ce_fwd_worker(void *arg, int thread, int n_threads) {
    ce_job *j = arg;
    int t0, t1;
    cm_split_range(j->n, n_threads, thread, &t0, &t1);
    float *p = j->scratch + (size_t)thread * j->V;
    double loss = 0;
    int counted = 0;
    for (int t = t0; t < t1; t++) {
        const float *z = j->logits_in + (size_t)t * j->V;
        int y = j->targets[t];
        if (y < 0) {
            j->lse[t] = 0.0f;
            continue;
        }
        memcpy(p, z, (size_t)j->V * sizeof(float));
        j->ops.softmax(p, j->V);
        double nll;
        if (p[y] > 1e-30f) {
            nll = -log((double)p[y]);
        } else { /* the target's probability underflowed: exact log-sum-exp */
            float mx = z[0];
            for (int i = 1; i < j->V; i++) mx = z[i] > mx ? z[i] : mx;
            double sum = 0;
            for (int i = 0; i < j->V; i++) sum += exp((double)z[i] - mx);
            nll = mx + log(sum) - z[y];
        }
        j->lse[t] = (float)(nll + z[y]);
        loss += nll;
        counted++;
    }
    j->loss[thread] = loss;
    j->counted[thread] = counted;
}

double cm_cross_entropy_forward(float *lse, const float *logits, const int32_t *targets, int n, int V,
                                int *n_counted, cm_pool *pool) {
    if (cm_pool_size(pool) > 64) pool = NULL;
    float *scratch = malloc((size_t)cm_pool_size(pool) * V * sizeof(float));
    if (!scratch) {
        pool = NULL;
        scratch = malloc((size_t)V * sizeof(float));
    }
    ce_job j = {.lse = lse, .scratch = scratch, .logits_in = logits, .targets = targets, .n = n, .V = V};
    cm_vec_ops_get(&j.ops);
    if (!scratch) j.ops.softmax = NULL;
    double loss = 0;
    int counted = 0;
    if (scratch) {
        cm_pool_run(pool, ce_fwd_worker, &j);
        for (int p = 0; p < cm_pool_size(pool); p++) {
            loss += j.loss[p];
            counted += j.counted[p];
        }
    } else { /* no memory even for one row: the plain double loop */
        for (int t = 0; t < n; t++) {
            const float *z = logits + (size_t)t * V;
            if (targets[t] < 0) continue;
            float mx = z[0];
            for (int i = 1; i < V; i++) mx = z[i] > mx ? z[i] : mx;
            double sum = 0;
            for (int i = 0; i < V; i++) sum += exp((double)z[i] - mx);
            lse[t] = (float)(mx + log(sum));
            loss += mx + log(sum) - z[targets[t]];
            counted++;
        }
    }
    free(scratch);
    *n_counted = counted;
    return loss;
}

static void ce_bwd_worker(void *arg, int thread, int n_threads) {
    ce_job *j = arg;
    int t0, t1;
    cm_split_range(j->n, n_threads, thread, &t0, &t1);
    for (int t = t0; t < t1; t++) {
        float *z = j->logits + (size_t)t * j->V;
        int y = j->targets[t];
        if (y < 0) {
            memset(z, 0, (size_t)j->V * sizeof(float));
            continue;
        }
        j->ops.softmax(z, j->V);
        for (int i = 0; i < j->V; i++) z[i] *= j->dloss;
        z[y] -= j->dloss;
    }
}

void cm_cross_entropy_backward(float *logits, const float *lse, const int32_t *targets, int n, int V, float dloss,
                               cm_pool *pool) {
    (void)lse; /* the softmax is recomputed from the logits, in place */
    ce_job j = {.logits = logits, .targets = targets, .n = n, .V = V, .dloss = dloss};
    cm_vec_ops_get(&j.ops);
    cm_pool_run(pool, ce_bwd_worker, &j);
}
