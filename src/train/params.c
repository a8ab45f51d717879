/* Parameters as one f32 allocation with a table of HF-named tensors (see include/camelid/train.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/kernels.h"
#include "camelid/train.h"
#include "model/model_internal.h"

typedef struct {
    cm_params *p;
    size_t offset;
    int n;
} layout_builder;

/* Append a tensor to the table (and return its offset). */
static size_t add_tensor(layout_builder *b, const char *name, int64_t rows, int64_t cols, bool matrix) {
    cm_param_tensor *t = &b->p->tensors[b->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rows = rows;
    t->cols = cols;
    t->offset = b->offset;
    t->is_matrix = matrix;
    b->offset += (size_t)rows * (size_t)cols;
    return t->offset;
}

cm_status cm_params_open(const cm_config *c, cm_params **out) {
    *out = NULL;
    CM_TRY(cm_config_validate(c, "training parameters"));
    cm_params *p = calloc(1, sizeof *p);
    if (!p) return cm_error(CM_ERR_NOMEM, "out of memory");
    p->cfg = *c;
    int max_tensors = 3 + 9 * c->n_layers;
    p->tensors = calloc((size_t)max_tensors, sizeof *p->tensors);
    p->layers = calloc((size_t)c->n_layers, sizeof *p->layers);
    if (!p->tensors || !p->layers) {
        cm_params_close(p);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    int64_t dim = c->dim, q_dim = (int64_t)c->n_heads * c->head_dim, kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    layout_builder b = {p, 0, 0};
    char name[80];
    size_t off_embed = add_tensor(&b, "model.embed_tokens.weight", c->vocab_size, dim, true);
    for (int l = 0; l < c->n_layers; l++) {
        static const char *const names[9] = {
            "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
        const int64_t rows[9] = {dim, q_dim, kv_dim, kv_dim, dim, dim, c->hidden_dim, c->hidden_dim, dim};
        const int64_t cols[9] = {1, dim, dim, dim, q_dim, 1, dim, dim, c->hidden_dim};
        for (int i = 0; i < 9; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, names[i]);
            add_tensor(&b, name, rows[i], cols[i], cols[i] > 1);
        }
    }
    size_t off_norm = add_tensor(&b, "model.norm.weight", dim, 1, false);
    size_t off_head = c->tie_embeddings ? off_embed : add_tensor(&b, "lm_head.weight", c->vocab_size, dim, true);
    p->n_tensors = b.n;
    p->n = b.offset;
    p->data = calloc(p->n, sizeof(float));
    if (!p->data) {
        size_t n = p->n;
        cm_params_close(p);
        return cm_error(CM_ERR_NOMEM, "out of memory for %zu parameters", n);
    }
    p->embed = p->data + off_embed;
    p->out_norm = p->data + off_norm;
    p->output = p->data + off_head;
    for (int l = 0; l < c->n_layers; l++) {
        float **slot[9] = {&p->layers[l].attn_norm, &p->layers[l].wq, &p->layers[l].wk,
                           &p->layers[l].wv,        &p->layers[l].wo, &p->layers[l].ffn_norm,
                           &p->layers[l].w_gate,    &p->layers[l].w_up, &p->layers[l].w_down};
        for (int i = 0; i < 9; i++) *slot[i] = p->data + p->tensors[1 + 9 * l + i].offset; /* after the embedding */
    }
    *out = p;
    return CM_OK;
}

void cm_params_close(cm_params *p) {
    if (!p) return;
    free(p->data);
    free(p->tensors);
    free(p->layers);
    free(p);
}

void cm_params_zero(cm_params *p) { memset(p->data, 0, p->n * sizeof(float)); }

const cm_param_tensor *cm_params_find(const cm_params *p, const char *name) {
    for (int i = 0; i < p->n_tensors; i++)
        if (!strcmp(p->tensors[i].name, name)) return &p->tensors[i];
    return NULL;
}

static void weight_to_f32(const cm_weight *w, float *dst) {
    for (int64_t r = 0; r < w->rows; r++) cm_weight_row_to_f32(w, r, dst + (size_t)r * w->cols); /* any dtype, NF4 too */
}

cm_status cm_params_from_model(const cm_model *m, cm_params **out) {
    CM_TRY(cm_params_open(&m->cfg, out));
    cm_params *p = *out;
    const cm_config *c = &m->cfg;
    weight_to_f32(&m->tok_embd, p->embed);
    memcpy(p->out_norm, m->out_norm, (size_t)c->dim * sizeof(float));
    if (!c->tie_embeddings) weight_to_f32(&m->output, p->output);
    for (int l = 0; l < c->n_layers; l++) {
        const cm_layer *L = &m->layers[l];
        cm_layer_params *P = &p->layers[l];
        memcpy(P->attn_norm, L->attn_norm, (size_t)c->dim * sizeof(float));
        memcpy(P->ffn_norm, L->ffn_norm, (size_t)c->dim * sizeof(float));
        weight_to_f32(&L->wq, P->wq);
        weight_to_f32(&L->wk, P->wk);
        weight_to_f32(&L->wv, P->wv);
        weight_to_f32(&L->wo, P->wo);
        weight_to_f32(&L->w_gate, P->w_gate);
        weight_to_f32(&L->w_up, P->w_up);
        weight_to_f32(&L->w_down, P->w_down);
    }
    return CM_OK;
}

static cm_weight f32_view(const float *data, int64_t rows, int64_t cols) {
    return (cm_weight){CM_DTYPE_F32, rows, cols, data};
}

cm_status cm_params_as_model(const cm_params *p, cm_model **out) {
    *out = NULL;
    const cm_config *c = &p->cfg;
    cm_model *m;
    CM_TRY(cm_model_alloc(&m, "(training)", c->rope_layout == CM_ROPE_HALF ? CM_FORMAT_HF : CM_FORMAT_LLAMA2C));
    m->cfg = *c;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        cm_model_close(m);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    int64_t dim = c->dim, q_dim = (int64_t)c->n_heads * c->head_dim, kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    m->tok_embd = f32_view(p->embed, c->vocab_size, dim);
    m->output = c->tie_embeddings ? m->tok_embd : f32_view(p->output, c->vocab_size, dim);
    m->out_norm = p->out_norm;
    for (int l = 0; l < c->n_layers; l++) {
        const cm_layer_params *P = &p->layers[l];
        cm_layer *L = &m->layers[l];
        L->attn_norm = P->attn_norm;
        L->ffn_norm = P->ffn_norm;
        L->wq = f32_view(P->wq, q_dim, dim);
        L->wk = f32_view(P->wk, kv_dim, dim);
        L->wv = f32_view(P->wv, kv_dim, dim);
        L->wo = f32_view(P->wo, dim, q_dim);
        L->w_gate = f32_view(P->w_gate, c->hidden_dim, dim);
        L->w_up = f32_view(P->w_up, c->hidden_dim, dim);
        L->w_down = f32_view(P->w_down, dim, c->hidden_dim);
    }
    *out = m;
    return CM_OK;
}
