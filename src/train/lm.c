/* The training forward and backward of a LLaMA model over (B, T) batches (see include/camelid/train.h).
 * Reads like the inference forward, with every intermediate the backward needs kept per layer:
 *   x0 = embed(tokens)
 *   per layer: xn1 = rmsnorm(x); q,k,v = xn1 W^T; rope(q,k); a = attention(q,k,v); x += a Wo^T
 *              xn2 = rmsnorm(x); h = silu(xn2 Wg^T) * (xn2 Wu^T); x += h Wd^T
 *   xf = rmsnorm(x); logits = xf Wout^T; loss = cross-entropy(logits, targets)
 * The backward walks the same steps in reverse, one op's backward at a time. */
#include <stdlib.h>
#include <string.h>

#include "camelid/train.h"
#include "camelid/train_ops.h"

typedef struct layer_acts {
    float *x_in;       /* [BT, D] the residual stream entering the layer */
    float *xn1, *rstd1; /* attention norm out, its 1/rms */
    float *q, *k, *v;   /* after RoPE */
    float *probs;       /* [B, H, T, T] */
    float *att;         /* [BT, H*hd] attention output before Wo */
    float *x_mid;       /* residual after attention */
    float *xn2, *rstd2;
    float *gate, *up, *h; /* [BT, F] */
} layer_acts;

struct cm_lm_train {
    cm_config cfg;
    int B, T;
    cm_pool *pool;
    cm_rope_table rope;
    float *arena; /* every activation below lives in it */
    layer_acts *layers;
    float *x_final, *xnf, *rstdf, *logits, *lse;
    /* backward scratch */
    float *dx, *dxn, *dq, *dk, *dv, *datt, *dgate, *dup, *dh;
    /* the batch of the last forward */
    int32_t *tokens, *targets, *positions, *seg_start;
    int cur_B;
    bool have_forward;
};

cm_status cm_lm_train_open(const cm_config *c, int B, int T, cm_pool *pool, cm_lm_train **out) {
    *out = NULL;
    if (B < 1 || T < 1) return cm_error(CM_ERR_ARG, "a training batch needs B >= 1 and T >= 1 (got %d x %d)", B, T);
    cm_lm_train *t = calloc(1, sizeof *t);
    if (!t) return cm_error(CM_ERR_NOMEM, "out of memory");
    t->cfg = *c;
    t->B = B;
    t->T = T;
    t->pool = pool;
    size_t BT = (size_t)B * T, D = c->dim, F = c->hidden_dim, V = c->vocab_size;
    size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    size_t P = (size_t)B * c->n_heads * T * T;
    size_t per_layer = BT * (D * 4 + QD * 2 + KD * 2 + F * 3 + 2) + P;
    size_t total = per_layer * c->n_layers + BT * (D * 2 + V + 2) + BT * (D * 2 + QD * 2 + KD * 2 + F * 3);
    t->arena = malloc(total * sizeof(float));
    t->layers = calloc((size_t)c->n_layers, sizeof *t->layers);
    t->tokens = malloc(BT * sizeof(int32_t));
    t->targets = malloc(BT * sizeof(int32_t));
    t->positions = malloc(BT * sizeof(int32_t));
    t->seg_start = malloc(BT * sizeof(int32_t));
    if (!t->arena || !t->layers || !t->tokens || !t->targets || !t->positions || !t->seg_start) {
        cm_lm_train_close(t);
        return cm_error(CM_ERR_NOMEM, "out of memory for the activations of a %d x %d training batch (%.1f GiB)", B,
                        T, (double)total * sizeof(float) / (1 << 30));
    }
    float *a = t->arena;
#define TAKE(n) (a += (n), a - (n))
    for (int l = 0; l < c->n_layers; l++) {
        layer_acts *L = &t->layers[l];
        L->x_in = TAKE(BT * D);
        L->xn1 = TAKE(BT * D);
        L->rstd1 = TAKE(BT);
        L->q = TAKE(BT * QD);
        L->k = TAKE(BT * KD);
        L->v = TAKE(BT * KD);
        L->probs = TAKE(P);
        L->att = TAKE(BT * QD);
        L->x_mid = TAKE(BT * D);
        L->xn2 = TAKE(BT * D);
        L->rstd2 = TAKE(BT);
        L->gate = TAKE(BT * F);
        L->up = TAKE(BT * F);
        L->h = TAKE(BT * F);
    }
    t->x_final = TAKE(BT * D);
    t->xnf = TAKE(BT * D);
    t->rstdf = TAKE(BT);
    t->logits = TAKE(BT * V);
    t->lse = TAKE(BT);
    t->dx = TAKE(BT * D);
    t->dxn = TAKE(BT * D);
    t->dq = TAKE(BT * QD);
    t->dk = TAKE(BT * KD);
    t->dv = TAKE(BT * KD);
    t->datt = TAKE(BT * QD);
    t->dgate = TAKE(BT * F);
    t->dup = TAKE(BT * F);
    t->dh = TAKE(BT * F);
#undef TAKE
    cm_status st = cm_rope_table_init(&t->rope, c, T);
    if (st != CM_OK) {
        cm_lm_train_close(t);
        return st;
    }
    *out = t;
    return CM_OK;
}

void cm_lm_train_close(cm_lm_train *t) {
    if (!t) return;
    cm_rope_table_free(&t->rope);
    free(t->arena);
    free(t->layers);
    free(t->tokens);
    free(t->targets);
    free(t->positions);
    free(t->seg_start);
    free(t);
}

const float *cm_lm_logits(const cm_lm_train *t) { return t->logits; }

/* Copy and check the batch: ids in range, positions below T, documents as contiguous runs. */
static cm_status take_batch(cm_lm_train *t, const cm_train_batch *b) {
    const cm_config *c = &t->cfg;
    if (b->B < 1 || b->B > t->B || b->T != t->T)
        return cm_error(CM_ERR_ARG, "training batch %d x %d does not fit the %d x %d it was set up for", b->B, b->T,
                        t->B, t->T);
    for (int r = 0; r < b->B; r++) {
        int start = 0;
        for (int i = 0; i < b->T; i++) {
            size_t bt = (size_t)r * b->T + i;
            int32_t tok = b->tokens[bt], tgt = b->targets[bt];
            if (tok < 0 || tok >= c->vocab_size)
                return cm_error(CM_ERR_ARG, "token id %d at row %d, position %d is outside the vocabulary (%d)", tok,
                                r, i, c->vocab_size);
            if (tgt >= c->vocab_size)
                return cm_error(CM_ERR_ARG, "target id %d at row %d, position %d is outside the vocabulary (%d)",
                                tgt, r, i, c->vocab_size);
            if (b->doc_ids && i > 0 && b->doc_ids[bt] != b->doc_ids[bt - 1]) start = i;
            int32_t pos = b->positions ? b->positions[bt] : i;
            if (pos < 0 || pos >= t->T)
                return cm_error(CM_ERR_ARG, "position %d at row %d is outside [0, %d)", pos, r, t->T);
            t->tokens[bt] = tok;
            t->targets[bt] = tgt < 0 ? -1 : tgt;
            t->positions[bt] = pos;
            t->seg_start[bt] = start;
        }
    }
    t->cur_B = b->B;
    return CM_OK;
}

cm_status cm_lm_forward(cm_lm_train *t, const cm_params *p, const cm_train_batch *b, double *loss_sum,
                        int *n_counted) {
    const cm_config *c = &t->cfg;
    if (c->dim != p->cfg.dim || c->n_layers != p->cfg.n_layers || c->vocab_size != p->cfg.vocab_size)
        return cm_error(CM_ERR_ARG, "parameters and training state are of different shapes");
    CM_TRY(take_batch(t, b));
    int BT = t->cur_B * t->T, D = c->dim, F = c->hidden_dim, V = c->vocab_size;
    int QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    cm_attn_shape as = {t->cur_B, t->T, c->n_heads, c->n_kv_heads, c->head_dim};
    cm_pool *pool = t->pool;

    cm_embedding_forward(t->layers[0].x_in, t->tokens, p->embed, BT, D);
    for (int l = 0; l < c->n_layers; l++) {
        layer_acts *L = &t->layers[l];
        const cm_layer_params *W = &p->layers[l];
        float *x_out = l + 1 < c->n_layers ? t->layers[l + 1].x_in : t->x_final;
        cm_rmsnorm_forward(L->xn1, L->rstd1, L->x_in, W->attn_norm, BT, D, c->norm_eps, pool);
        cm_linear_forward(L->q, L->xn1, W->wq, BT, D, QD);
        cm_linear_forward(L->k, L->xn1, W->wk, BT, D, KD);
        cm_linear_forward(L->v, L->xn1, W->wv, BT, D, KD);
        cm_rope_forward(L->q, t->positions, BT, c->n_heads, &t->rope);
        cm_rope_forward(L->k, t->positions, BT, c->n_kv_heads, &t->rope);
        cm_attention_forward(L->att, L->probs, L->q, L->k, L->v, t->seg_start, as, pool);
        cm_linear_forward(L->x_mid, L->att, W->wo, BT, QD, D);
        for (size_t i = 0; i < (size_t)BT * D; i++) L->x_mid[i] += L->x_in[i];
        cm_rmsnorm_forward(L->xn2, L->rstd2, L->x_mid, W->ffn_norm, BT, D, c->norm_eps, pool);
        cm_linear_forward(L->gate, L->xn2, W->w_gate, BT, D, F);
        cm_linear_forward(L->up, L->xn2, W->w_up, BT, D, F);
        cm_swiglu_forward(L->h, L->gate, L->up, (size_t)BT * F, pool);
        cm_linear_forward(x_out, L->h, W->w_down, BT, F, D);
        for (size_t i = 0; i < (size_t)BT * D; i++) x_out[i] += L->x_mid[i];
    }
    cm_rmsnorm_forward(t->xnf, t->rstdf, t->x_final, p->out_norm, BT, D, c->norm_eps, pool);
    cm_linear_forward(t->logits, t->xnf, p->output, BT, D, V);
    *loss_sum = cm_cross_entropy_forward(t->lse, t->logits, t->targets, BT, V, n_counted, pool);
    t->have_forward = true;
    return CM_OK;
}

cm_status cm_lm_backward(cm_lm_train *t, const cm_params *p, cm_params *g, float dloss) {
    if (!t->have_forward) return cm_error(CM_ERR_ARG, "backward without a forward");
    t->have_forward = false;
    const cm_config *c = &t->cfg;
    int BT = t->cur_B * t->T, D = c->dim, F = c->hidden_dim, V = c->vocab_size;
    int QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    cm_attn_shape as = {t->cur_B, t->T, c->n_heads, c->n_kv_heads, c->head_dim};
    cm_pool *pool = t->pool;
    size_t nD = (size_t)BT * D;

    /* head: logits become dlogits; dx (= d x_final) starts from the final norm's backward */
    cm_cross_entropy_backward(t->logits, t->lse, t->targets, BT, V, dloss, pool);
    memset(t->dxn, 0, nD * sizeof(float));
    cm_linear_backward(t->dxn, g->output, t->logits, t->xnf, p->output, BT, D, V);
    memset(t->dx, 0, nD * sizeof(float));
    cm_rmsnorm_backward(t->dx, g->out_norm, t->dxn, t->x_final, p->out_norm, t->rstdf, BT, D, pool);

    for (int l = c->n_layers - 1; l >= 0; l--) {
        layer_acts *L = &t->layers[l];
        const cm_layer_params *W = &p->layers[l];
        cm_layer_params *G = &g->layers[l];
        /* x_out = x_mid + h Wd^T: dx flows to x_mid unchanged, and through the MLP */
        memset(t->dh, 0, (size_t)BT * F * sizeof(float));
        cm_linear_backward(t->dh, G->w_down, t->dx, L->h, W->w_down, BT, F, D);
        memset(t->dgate, 0, (size_t)BT * F * sizeof(float));
        memset(t->dup, 0, (size_t)BT * F * sizeof(float));
        cm_swiglu_backward(t->dgate, t->dup, t->dh, L->gate, L->up, (size_t)BT * F, pool);
        memset(t->dxn, 0, nD * sizeof(float));
        cm_linear_backward(t->dxn, G->w_gate, t->dgate, L->xn2, W->w_gate, BT, D, F);
        cm_linear_backward(t->dxn, G->w_up, t->dup, L->xn2, W->w_up, BT, D, F);
        cm_rmsnorm_backward(t->dx, G->ffn_norm, t->dxn, L->x_mid, W->ffn_norm, L->rstd2, BT, D, pool);
        /* x_mid = x_in + att Wo^T */
        memset(t->datt, 0, (size_t)BT * QD * sizeof(float));
        cm_linear_backward(t->datt, G->wo, t->dx, L->att, W->wo, BT, QD, D);
        memset(t->dq, 0, (size_t)BT * QD * sizeof(float));
        memset(t->dk, 0, (size_t)BT * KD * sizeof(float));
        memset(t->dv, 0, (size_t)BT * KD * sizeof(float));
        cm_attention_backward(t->dq, t->dk, t->dv, t->datt, L->probs, L->q, L->k, L->v, t->seg_start, as, pool);
        cm_rope_backward(t->dq, t->positions, BT, c->n_heads, &t->rope);
        cm_rope_backward(t->dk, t->positions, BT, c->n_kv_heads, &t->rope);
        memset(t->dxn, 0, nD * sizeof(float));
        cm_linear_backward(t->dxn, G->wq, t->dq, L->xn1, W->wq, BT, D, QD);
        cm_linear_backward(t->dxn, G->wk, t->dk, L->xn1, W->wk, BT, D, KD);
        cm_linear_backward(t->dxn, G->wv, t->dv, L->xn1, W->wv, BT, D, KD);
        cm_rmsnorm_backward(t->dx, G->attn_norm, t->dxn, L->x_in, W->attn_norm, L->rstd1, BT, D, pool);
    }
    cm_embedding_backward(g->embed, t->dx, t->tokens, BT, D);
    return CM_OK;
}
