#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/kernels.h"
#include "camelid/llama.h"
#include "camelid/pool.h"

struct cm_state {
    int ctx_len, max_batch, n_threads;
    cm_pool *pool;
    int q_dim, kv_dim;
    float *key_cache, *value_cache; /* [layer][ctx_len][kv_dim] */
    float *x;                       /* residual stream [B][dim] */
    float *xb;                      /* normed input [B][dim] */
    float *q;                       /* [B][q_dim] */
    float *k, *v;                   /* [B][kv_dim] */
    float *att_out;                 /* [B][q_dim] */
    float *proj;                    /* [B][dim] */
    float *hb, *hb2;                /* [B][hidden] */
    float *scores;                  /* [threads][ctx_len] */
    float *rope_cos, *rope_sin;     /* [ctx_len][head_dim/2] */
    float *logits_tmp;              /* [vocab] */
};

static float *alloc_floats(size_t n, int *failed) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) *failed = 1;
    return p;
}

void cm_state_close(cm_state *s) {
    if (!s) return;
    cm_pool_close(s->pool);
    free(s->key_cache);
    free(s->value_cache);
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
    size_t B = (size_t)max_batch, cache = (size_t)c->n_layers * ctx_len * s->kv_dim;
    int failed = 0;
    s->key_cache = alloc_floats(cache, &failed);
    s->value_cache = alloc_floats(cache, &failed);
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

typedef struct {
    const cm_config *c;
    cm_state *s;
    int layer, n, pos;
} attention_job;

/* Causal attention of the batch's queries over the cache (which already holds this batch's keys/values);
 * the (token, head) pairs are dealt round-robin to the threads. */
static void attention_worker(void *arg, int thread, int n_threads) {
    const attention_job *j = arg;
    const cm_config *c = j->c;
    cm_state *s = j->s;
    int hd = c->head_dim, group = c->n_heads / c->n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    const float *kc = s->key_cache + (size_t)j->layer * s->ctx_len * s->kv_dim;
    const float *vc = s->value_cache + (size_t)j->layer * s->ctx_len * s->kv_dim;
    float *att = s->scores + (size_t)thread * s->ctx_len;
    for (int job = thread; job < j->n * c->n_heads; job += n_threads) {
        int t = job / c->n_heads, h = job % c->n_heads, kvh = h / group, p = j->pos + t;
        const float *q = s->q + (size_t)t * s->q_dim + (size_t)h * hd;
        for (int k = 0; k <= p; k++)
            att[k] = cm_dot_f32(q, kc + (size_t)k * s->kv_dim + (size_t)kvh * hd, hd) * scale;
        cm_softmax(att, p + 1);
        float *o = s->att_out + (size_t)t * s->q_dim + (size_t)h * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int k = 0; k <= p; k++) {
            const float *v = vc + (size_t)k * s->kv_dim + (size_t)kvh * hd;
            float a = att[k];
            for (int i = 0; i < hd; i++) o[i] += a * v[i];
        }
    }
}

static void attention(const cm_config *c, cm_state *s, int layer, int n, int pos) {
    attention_job job = {c, s, layer, n, pos};
    /* short contexts of a single token are cheaper on one thread than a wake-up */
    bool parallel = (size_t)n * c->n_heads * (pos + n) * c->head_dim >= 16384;
    cm_pool_run(parallel ? s->pool : NULL, attention_worker, &job);
}

static cm_status forward_batch(const cm_model *m, cm_state *s, const int32_t *tokens, int n, int pos,
                               float *logits, bool all_logits) {
    const cm_config *c = &m->cfg;
    int dim = c->dim, hid = c->hidden_dim, half = c->head_dim / 2;
    size_t row_bytes = cm_row_bytes(m->tok_embd.dtype, (size_t)dim);
    for (int t = 0; t < n; t++)
        cm_row_to_f32(m->tok_embd.dtype, (const char *)m->tok_embd.data + (size_t)tokens[t] * row_bytes,
                          s->x + (size_t)t * dim, (size_t)dim);

    for (int l = 0; l < c->n_layers; l++) {
        const cm_layer *L = &m->layers[l];
        for (int t = 0; t < n; t++)
            cm_rmsnorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, L->attn_norm, dim, c->norm_eps);
        matmul(s, s->q, s->xb, n, &L->wq);
        matmul(s, s->k, s->xb, n, &L->wk);
        matmul(s, s->v, s->xb, n, &L->wv);
        float *kc = s->key_cache + (size_t)l * s->ctx_len * s->kv_dim;
        float *vc = s->value_cache + (size_t)l * s->ctx_len * s->kv_dim;
        for (int t = 0; t < n; t++) {
            const float *cs = s->rope_cos + (size_t)(pos + t) * half,
                        *sn = s->rope_sin + (size_t)(pos + t) * half;
            rope_apply(s->q + (size_t)t * s->q_dim, c->n_heads, c->head_dim, cs, sn, c->rope_layout);
            rope_apply(s->k + (size_t)t * s->kv_dim, c->n_kv_heads, c->head_dim, cs, sn, c->rope_layout);
            memcpy(kc + (size_t)(pos + t) * s->kv_dim, s->k + (size_t)t * s->kv_dim, (size_t)s->kv_dim * 4);
            memcpy(vc + (size_t)(pos + t) * s->kv_dim, s->v + (size_t)t * s->kv_dim, (size_t)s->kv_dim * 4);
        }
        attention(c, s, l, n, pos);
        matmul(s, s->proj, s->att_out, n, &L->wo);
        for (size_t i = 0; i < (size_t)n * dim; i++) s->x[i] += s->proj[i];

        for (int t = 0; t < n; t++)
            cm_rmsnorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, L->ffn_norm, dim, c->norm_eps);
        matmul(s, s->hb, s->xb, n, &L->w_gate);
        matmul(s, s->hb2, s->xb, n, &L->w_up);
        cm_swiglu(s->hb, s->hb2, n * hid);
        matmul(s, s->proj, s->hb, n, &L->w_down);
        for (size_t i = 0; i < (size_t)n * dim; i++) s->x[i] += s->proj[i];
    }

    if (!logits) return CM_OK;
    int first = all_logits ? 0 : n - 1;
    for (int t = first; t < n; t++)
        cm_rmsnorm(s->xb + (size_t)(t - first) * dim, s->x + (size_t)t * dim, m->out_norm, dim, c->norm_eps);
    matmul(s, logits, s->xb, n - first, &m->output);
    return CM_OK;
}

cm_status cm_forward(const cm_model *m, cm_state *s, const int32_t *tokens, int n, int pos, float *logits,
                     bool all_logits) {
    const cm_config *c = &m->cfg;
    if (n <= 0) return cm_error(CM_ERR_ARG, "forward: empty batch");
    if (pos < 0 || pos + n > s->ctx_len)
        return cm_error(CM_ERR_ARG, "forward: positions %d..%d exceed the context of %d", pos, pos + n - 1,
                        s->ctx_len);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size)
            return cm_error(CM_ERR_ARG, "forward: token id %d is outside the vocabulary (0..%d)", tokens[t],
                            c->vocab_size - 1);
    for (int done = 0; done < n; done += s->max_batch) {
        int chunk = n - done < s->max_batch ? n - done : s->max_batch;
        bool last = done + chunk == n;
        float *out = NULL;
        if (all_logits)
            out = logits + (size_t)done * c->vocab_size;
        else if (last)
            out = logits;
        CM_TRY(forward_batch(m, s, tokens + done, chunk, pos + done, out, all_logits));
    }
    return CM_OK;
}
