/* Random-weight models for benchmarks and training from scratch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/model_internal.h"

/* splitmix64: a small, well-mixed, seedable generator */
static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return ((double)(next_u64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

/* Box-Muller, two normals per pair of uniforms */
static void fill_normal(float *x, size_t n, float std, uint64_t *s) {
    for (size_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(uniform01(s))), a = 2.0 * M_PI * uniform01(s);
        x[i] = (float)(r * cos(a)) * std;
        if (i + 1 < n) x[i + 1] = (float)(r * sin(a)) * std;
    }
}

static cm_status random_weight(cm_model *m, int64_t rows, int64_t cols, uint64_t *s, cm_weight *w) {
    size_t n = (size_t)rows * (size_t)cols;
    float *data = malloc(n * sizeof(float));
    if (!data) return cm_error(CM_ERR_NOMEM, "out of memory for a %lld x %lld weight", (long long)rows, (long long)cols);
    fill_normal(data, n, 0.02f, s);
    CM_TRY(cm_model_keep(m, data));
    *w = (cm_weight){CM_DTYPE_F32, rows, cols, data};
    return CM_OK;
}

static cm_status ones(cm_model *m, int n, const float **out) {
    float *v = malloc((size_t)n * sizeof(float));
    if (!v) return cm_error(CM_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) v[i] = 1.0f;
    CM_TRY(cm_model_keep(m, v));
    *out = v;
    return CM_OK;
}

cm_status cm_model_init_random(const cm_config *c, uint64_t seed, cm_model **out) {
    *out = NULL;
    CM_TRY(cm_config_validate(c, "init"));
    cm_model *m;
    CM_TRY(cm_model_alloc(&m, "(random)", CM_FORMAT_LLAMA2C));
    m->cfg = *c;
    uint64_t s = seed;
    int64_t dim = c->dim, q_dim = (int64_t)c->n_heads * c->head_dim, kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    cm_status st = CM_OK;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) st = cm_error(CM_ERR_NOMEM, "out of memory");
    if (!st) st = random_weight(m, c->vocab_size, dim, &s, &m->tok_embd);
    for (int l = 0; !st && l < c->n_layers; l++) {
        cm_layer *L = &m->layers[l];
        if (!st) st = ones(m, c->dim, &L->attn_norm);
        if (!st) st = random_weight(m, q_dim, dim, &s, &L->wq);
        if (!st) st = random_weight(m, kv_dim, dim, &s, &L->wk);
        if (!st) st = random_weight(m, kv_dim, dim, &s, &L->wv);
        if (!st) st = random_weight(m, dim, q_dim, &s, &L->wo);
        if (!st) st = ones(m, c->dim, &L->ffn_norm);
        if (!st) st = random_weight(m, c->hidden_dim, dim, &s, &L->w_gate);
        if (!st) st = random_weight(m, c->hidden_dim, dim, &s, &L->w_up);
        if (!st) st = random_weight(m, dim, c->hidden_dim, &s, &L->w_down);
    }
    if (!st) st = ones(m, c->dim, &m->out_norm);
    if (!st) {
        if (c->tie_embeddings) m->output = m->tok_embd;
        else st = random_weight(m, c->vocab_size, dim, &s, &m->output);
    }
    if (st != CM_OK) {
        cm_model_close(m);
        return st;
    }
    *out = m;
    return CM_OK;
}
