#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/kernels.h"
#include "camelid/llama.h"
#include "camelid/pool.h"

struct cm_kv {
    int ctx_len, kv_dim, n_layers;
    float *key_cache, *value_cache; /* [layer][ctx_len][kv_dim] */
};

struct cm_state {
    int ctx_len, max_batch, n_threads;
    cm_pool *pool;
    int q_dim, kv_dim;
    cm_kv *kv;                  /* the cache cm_forward uses */
    cm_batch_token *items;      /* [B]: cm_forward's batch */
    float *x;                   /* residual stream [B][dim] */
    float *xb;                  /* normed input [B][dim] */
    float *q;                   /* [B][q_dim] */
    float *k, *v;               /* [B][kv_dim] */
    float *att_out;             /* [B][q_dim] */
    float *proj;                /* [B][dim] */
    float *hb, *hb2;            /* [B][hidden] */
    float *scores;              /* [threads][ctx_len] */
    float *rope_cos, *rope_sin; /* [ctx_len][head_dim/2] */
    float *logits_tmp;          /* [vocab] */
};

static float *alloc_floats(size_t n, int *failed) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) *failed = 1;
    return p;
}

cm_status cm_kv_open(const cm_model *m, int ctx_len, cm_kv **out) {
    *out = NULL;
    const cm_config *c = &m->cfg;
    if (ctx_len <= 0) ctx_len = c->seq_len;
    cm_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return cm_error(CM_ERR_NOMEM, "out of memory for a KV cache");
    kv->ctx_len = ctx_len;
    kv->kv_dim = c->n_kv_heads * c->head_dim;
    kv->n_layers = c->n_layers;
    size_t n = (size_t)c->n_layers * (size_t)ctx_len * (size_t)kv->kv_dim;
    /* calloc: pages of positions never used are never touched */
    kv->key_cache = calloc(n ? n : 1, sizeof(float));
    kv->value_cache = calloc(n ? n : 1, sizeof(float));
    if (!kv->key_cache || !kv->value_cache) {
        cm_kv_close(kv);
        return cm_error(CM_ERR_NOMEM, "out of memory for a KV cache of %d positions", ctx_len);
    }
    *out = kv;
    return CM_OK;
}

void cm_kv_close(cm_kv *kv) {
    if (!kv) return;
    free(kv->key_cache);
    free(kv->value_cache);
    free(kv);
}

int cm_kv_ctx_len(const cm_kv *kv) {
    return kv->ctx_len;
}

cm_kv *cm_state_kv(cm_state *s) {
    return s->kv;
}

void cm_state_close(cm_state *s) {
    if (!s) return;
    cm_pool_close(s->pool);
    cm_kv_close(s->kv);
    free(s->items);
    free(s->x);
    free(s->xb);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att_out);
    free(s->proj);
    free(s->hb);
    free(s->hb2);
    free(s->scores);
    free(s->rope_cos);
    free(s->rope_sin);
    free(s->logits_tmp);
    free(s);
}

int cm_state_ctx_len(const cm_state *s) {
    return s->ctx_len;
}

cm_status cm_state_set_threads(cm_state *s, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads == s->n_threads) return CM_OK;
    /* the scores scratch is per thread */
    float *scores = realloc(s->scores, (size_t)n_threads * s->ctx_len * sizeof(float));
    if (!scores) return cm_error(CM_ERR_NOMEM, "out of memory");
    s->scores = scores;
    cm_pool *pool;
    CM_TRY(cm_pool_open(n_threads, &pool));
    cm_pool_close(s->pool);
    s->pool = pool;
    s->n_threads = n_threads;
    return CM_OK;
}

/* Precompute the rotation of every position: angle = pos * inv_freq[i], in float as run.c and torch do. */
static void rope_tables(const cm_model *m, cm_state *s) {
    const cm_config *c = &m->cfg;
    int half = c->head_dim / 2;
    float *inv = malloc((size_t)half * sizeof(float));
    if (!inv) return;
    for (int i = 0; i < half; i++) {
        if (c->rope_scaling == CM_ROPE_SCALING_NONE)
            inv[i] = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_dim);
        else
            inv[i] = cm_config_rope_inv_freq(c, i);
        if (m->rope_freq_factors) inv[i] /= m->rope_freq_factors[i];
    }
    for (int p = 0; p < s->ctx_len; p++) {
        for (int i = 0; i < half; i++) {
            float angle = (float)p * inv[i];
            s->rope_cos[(size_t)p * half + i] = cosf(angle);
            s->rope_sin[(size_t)p * half + i] = sinf(angle);
        }
    }
    free(inv);
}

cm_status cm_state_open(const cm_model *m, int ctx_len, int max_batch, int n_threads, cm_state **out) {
    *out = NULL;
    const cm_config *c = &m->cfg;
    if (ctx_len <= 0) ctx_len = c->seq_len;
    if (max_batch <= 0) max_batch = 1;
    if (n_threads <= 0) n_threads = 1;
    cm_state *s = calloc(1, sizeof *s);
    if (!s) return cm_error(CM_ERR_NOMEM, "out of memory for the model state");
    s->ctx_len = ctx_len;
    s->max_batch = max_batch;
    s->n_threads = n_threads;
    s->q_dim = c->n_heads * c->head_dim;
    s->kv_dim = c->n_kv_heads * c->head_dim;
    size_t B = (size_t)max_batch;
    int failed = 0;
    s->items = calloc(B, sizeof *s->items);
    if (!s->items) failed = 1;
    s->x = alloc_floats(B * c->dim, &failed);
    s->xb = alloc_floats(B * c->dim, &failed);
    s->q = alloc_floats(B * s->q_dim, &failed);
    s->k = alloc_floats(B * s->kv_dim, &failed);
    s->v = alloc_floats(B * s->kv_dim, &failed);
    s->att_out = alloc_floats(B * s->q_dim, &failed);
    s->proj = alloc_floats(B * c->dim, &failed);
    s->hb = alloc_floats(B * c->hidden_dim, &failed);
    s->hb2 = alloc_floats(B * c->hidden_dim, &failed);
    s->scores = alloc_floats((size_t)n_threads * ctx_len, &failed);
    s->rope_cos = alloc_floats((size_t)ctx_len * (c->head_dim / 2), &failed);
    s->rope_sin = alloc_floats((size_t)ctx_len * (c->head_dim / 2), &failed);
    s->logits_tmp = alloc_floats((size_t)c->vocab_size, &failed);
    if (failed) {
        cm_state_close(s);
        return cm_error(CM_ERR_NOMEM, "out of memory for a KV cache of %d positions", ctx_len);
    }
    cm_status st = cm_pool_open(n_threads, &s->pool);
    if (st == CM_OK) st = cm_kv_open(m, ctx_len, &s->kv);
    if (st != CM_OK) {
        cm_state_close(s);
        return st;
    }
    rope_tables(m, s);
    *out = s;
    return CM_OK;
}

static void rope_apply(float *vec, int n_heads, int head_dim, const float *cos, const float *sin,
                       cm_rope_layout layout) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = vec + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            /* the two dimensions of pair i: adjacent (interleaved) or half a head apart (rotate-half) */
            int a = layout == CM_ROPE_INTERLEAVED ? 2 * i : i;
            int b = layout == CM_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
            float v0 = v[a], v1 = v[b];
            v[a] = v0 * cos[i] - v1 * sin[i];
            v[b] = v0 * sin[i] + v1 * cos[i];
        }
    }
}

static void matmul(cm_state *s, float *y, const float *x, int n, const cm_weight *w) {
    cm_matmul(y, x, n, w->data, w->dtype, (int)w->rows, (int)w->cols, s->pool);
}

/* Two or three weights against the same input (q/k/v, gate/up; w2 may be NULL): one pool run when they share
 * a type and width. */
static void matmul3(cm_state *s, float *y0, float *y1, float *y2, const float *x, int n, const cm_weight *w0,
                    const cm_weight *w1, const cm_weight *w2) {
    int count = w2 ? 3 : 2;
    if (w1->dtype != w0->dtype || w1->cols != w0->cols ||
        (w2 && (w2->dtype != w0->dtype || w2->cols != w0->cols))) {
        matmul(s, y0, x, n, w0);
        matmul(s, y1, x, n, w1);
        if (w2) matmul(s, y2, x, n, w2);
        return;
    }
    float *const y[3] = {y0, y1, y2};
    const void *const w[3] = {w0->data, w1->data, w2 ? w2->data : NULL};
    const int rows[3] = {(int)w0->rows, (int)w1->rows, w2 ? (int)w2->rows : 0};
    cm_matmul_multi(y, x, n, w, w0->dtype, rows, (int)w0->cols, count, s->pool);
}

typedef struct {
    const cm_config *c;
    cm_state *s;
    const cm_batch_token *items;
    int layer, n;
    cm_vec_ops ops;
} attention_job;

/* Causal attention of the batch's queries, each over its own sequence's cache (which already holds this
 * batch's keys/values) up to its position; the (token, head) pairs are dealt round-robin to the threads. */
static void attention_worker(void *arg, int thread, int n_threads) {
    const attention_job *j = arg;
    const cm_config *c = j->c;
    cm_state *s = j->s;
    int hd = c->head_dim, group = c->n_heads / c->n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    float *att = s->scores + (size_t)thread * s->ctx_len;
    for (int job = thread; job < j->n * c->n_heads; job += n_threads) {
        int t = job / c->n_heads, h = job % c->n_heads, kvh = h / group, p = j->items[t].pos;
        const cm_kv *kv = j->items[t].kv;
        const float *kc = kv->key_cache + (size_t)j->layer * kv->ctx_len * s->kv_dim;
        const float *vc = kv->value_cache + (size_t)j->layer * kv->ctx_len * s->kv_dim;
        const float *q = s->q + (size_t)t * s->q_dim + (size_t)h * hd;
        for (int k = 0; k <= p; k++)
            att[k] = j->ops.dot(q, kc + (size_t)k * s->kv_dim + (size_t)kvh * hd, hd) * scale;
        j->ops.softmax(att, p + 1);
        float *o = s->att_out + (size_t)t * s->q_dim + (size_t)h * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int k = 0; k <= p; k++)
            j->ops.axpy(o, att[k], vc + (size_t)k * s->kv_dim + (size_t)kvh * hd, hd);
    }
}

static void attention(const cm_config *c, cm_state *s, const cm_batch_token *items, int layer, int n) {
    attention_job job = {c, s, items, layer, n, {0}};
    cm_vec_ops_get(&job.ops);
    size_t work = 0;
    for (int t = 0; t < n; t++) work += (size_t)c->n_heads * (size_t)(items[t].pos + 1) * (size_t)c->head_dim;
    /* short contexts of a single token are cheaper on one thread than a wake-up */
    cm_pool_run(work >= 16384 ? s->pool : NULL, attention_worker, &job);
}

/* The per-token steps between the matmuls, split by token rows across the pool: every row is computed by
 * the same code whichever thread runs it, so the results do not depend on the thread count. */
typedef enum {
    ROWS_NORM,       /* xb = rmsnorm(x) * norm */
    ROWS_RESID_NORM, /* x += proj; then, with a norm, xb = rmsnorm(x) * norm */
    ROWS_ROPE_KV,    /* RoPE of q and k, k and v into each token's cache */
    ROWS_SWIGLU,     /* hb = silu(hb) * hb2 */
} rows_step;

typedef struct {
    const cm_config *c;
    cm_state *s;
    const cm_batch_token *items;
    int layer, n;
    rows_step step;
    const float *norm;
    cm_vec_ops ops;
} rows_job;

static void rows_range(const rows_job *j, int t0, int t1) {
    const cm_config *c = j->c;
    cm_state *s = j->s;
    int dim = c->dim, hid = c->hidden_dim, half = c->head_dim / 2;
    for (int t = t0; t < t1; t++) {
        float *x = s->x + (size_t)t * dim, *xb = s->xb + (size_t)t * dim;
        switch (j->step) {
        case ROWS_RESID_NORM: {
            const float *proj = s->proj + (size_t)t * dim;
            for (int i = 0; i < dim; i++) x[i] += proj[i];
            if (j->norm) cm_rmsnorm(xb, x, j->norm, dim, c->norm_eps);
            break;
        }
        case ROWS_NORM:
            cm_rmsnorm(xb, x, j->norm, dim, c->norm_eps);
            break;
        case ROWS_ROPE_KV: {
            int pos = j->items[t].pos;
            cm_kv *kv = j->items[t].kv;
            const float *cs = s->rope_cos + (size_t)pos * half, *sn = s->rope_sin + (size_t)pos * half;
            rope_apply(s->q + (size_t)t * s->q_dim, c->n_heads, c->head_dim, cs, sn, c->rope_layout);
            rope_apply(s->k + (size_t)t * s->kv_dim, c->n_kv_heads, c->head_dim, cs, sn, c->rope_layout);
            size_t at = ((size_t)j->layer * kv->ctx_len + (size_t)pos) * s->kv_dim;
            memcpy(kv->key_cache + at, s->k + (size_t)t * s->kv_dim, (size_t)s->kv_dim * 4);
            memcpy(kv->value_cache + at, s->v + (size_t)t * s->kv_dim, (size_t)s->kv_dim * 4);
            break;
        }
        case ROWS_SWIGLU:
            j->ops.swiglu(s->hb + (size_t)t * hid, s->hb2 + (size_t)t * hid, hid);
            break;
        }
    }
}

static void rows_worker(void *arg, int thread, int n_threads) {
    const rows_job *j = arg;
    int t0, t1;
    cm_split_range(j->n, n_threads, thread, &t0, &t1);
    rows_range(j, t0, t1);
}

static void run_rows(rows_job *j, rows_step step, const float *norm) {
    j->step = step;
    j->norm = norm;
    /* a few tokens are cheaper on one thread than a wake-up */
    cm_pool_run(j->n >= 4 ? j->s->pool : NULL, rows_worker, j);
}

/* One batch of at most max_batch tokens, from any sequences. */
static void forward_items(const cm_model *m, cm_state *s, const cm_batch_token *items, int n, float *logits) {
    const cm_config *c = &m->cfg;
    int dim = c->dim;
    size_t row_bytes = cm_row_bytes(m->tok_embd.dtype, (size_t)dim);
    for (int t = 0; t < n; t++)
        cm_row_to_f32(m->tok_embd.dtype, (const char *)m->tok_embd.data + (size_t)items[t].token * row_bytes,
                      s->x + (size_t)t * dim, (size_t)dim);

    rows_job rj = {c, s, items, 0, n, ROWS_NORM, NULL, {0}};
    cm_vec_ops_get(&rj.ops);
    if (c->n_layers > 0) run_rows(&rj, ROWS_NORM, m->layers[0].attn_norm);
    for (int l = 0; l < c->n_layers; l++) {
        const cm_layer *L = &m->layers[l];
        rj.layer = l;
        /* xb holds rmsnorm(x) * attn_norm here */
        matmul3(s, s->q, s->k, s->v, s->xb, n, &L->wq, &L->wk, &L->wv);
        run_rows(&rj, ROWS_ROPE_KV, NULL);
        attention(c, s, items, l, n);
        matmul(s, s->proj, s->att_out, n, &L->wo);
        run_rows(&rj, ROWS_RESID_NORM, L->ffn_norm);

        matmul3(s, s->hb, s->hb2, NULL, s->xb, n, &L->w_gate, &L->w_up, NULL);
        run_rows(&rj, ROWS_SWIGLU, NULL);
        matmul(s, s->proj, s->hb, n, &L->w_down);
        /* the residual, and the next layer's input norm in the same pass */
        run_rows(&rj, ROWS_RESID_NORM, l + 1 < c->n_layers ? m->layers[l + 1].attn_norm : NULL);
    }

    /* the head only for the tokens whose logits are wanted */
    int rows = 0;
    for (int t = 0; t < n; t++)
        if (items[t].logits)
            cm_rmsnorm(s->xb + (size_t)(rows++) * dim, s->x + (size_t)t * dim, m->out_norm, dim, c->norm_eps);
    if (rows > 0 && logits) matmul(s, logits, s->xb, rows, &m->output);
}

static cm_status check_items(const cm_model *m, const cm_state *s, const cm_batch_token *items, int n) {
    for (int t = 0; t < n; t++) {
        const cm_batch_token *it = &items[t];
        if (it->token < 0 || it->token >= m->cfg.vocab_size)
            return cm_error(CM_ERR_ARG, "forward: token id %d is outside the vocabulary (0..%d)", it->token,
                            m->cfg.vocab_size - 1);
        if (!it->kv) return cm_error(CM_ERR_ARG, "forward: batch item %d has no KV cache", t);
        int ctx = it->kv->ctx_len < s->ctx_len ? it->kv->ctx_len : s->ctx_len;
        if (it->pos < 0 || it->pos >= ctx)
            return cm_error(CM_ERR_ARG, "forward: position %d exceeds the context of %d", it->pos, ctx);
    }
    return CM_OK;
}

cm_status cm_forward_batch(const cm_model *m, cm_state *s, const cm_batch_token *items, int n,
                           float *logits) {
    if (n <= 0) return cm_error(CM_ERR_ARG, "forward: empty batch");
    CM_TRY(check_items(m, s, items, n));
    for (int done = 0; done < n;) {
        int chunk = n - done < s->max_batch ? n - done : s->max_batch;
        int rows = 0;
        for (int t = 0; t < done; t++) rows += items[t].logits;
        forward_items(m, s, items + done, chunk, logits ? logits + (size_t)rows * m->cfg.vocab_size : NULL);
        done += chunk;
    }
    return CM_OK;
}

cm_status cm_forward(const cm_model *m, cm_state *s, const int32_t *tokens, int n, int pos, float *logits,
                     bool all_logits) {
    if (n <= 0) return cm_error(CM_ERR_ARG, "forward: empty batch");
    if (pos < 0 || pos + n > s->ctx_len)
        return cm_error(CM_ERR_ARG, "forward: positions %d..%d exceed the context of %d", pos, pos + n - 1,
                        s->ctx_len);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= m->cfg.vocab_size)
            return cm_error(CM_ERR_ARG, "forward: token id %d is outside the vocabulary (0..%d)", tokens[t],
                            m->cfg.vocab_size - 1);
    for (int done = 0; done < n; done += s->max_batch) {
        int chunk = n - done < s->max_batch ? n - done : s->max_batch;
        for (int t = 0; t < chunk; t++)
            s->items[t] =
                (cm_batch_token){tokens[done + t], pos + done + t, s->kv, all_logits || done + t == n - 1};
        CM_TRY(check_items(m, s, s->items, chunk));
        float *out = NULL;
        if (all_logits)
            out = logits + (size_t)done * m->cfg.vocab_size;
        else if (done + chunk == n)
            out = logits;
        forward_items(m, s, s->items, chunk, out);
    }
    return CM_OK;
}
