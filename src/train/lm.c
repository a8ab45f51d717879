/* The training forward and backward of a LLaMA model over (B, T) batches (see include/camelid/train.h).
 * Reads like the inference forward, with every intermediate the backward needs kept per layer:
 *   x0 = embed(tokens)
 *   per layer: xn1 = rmsnorm(x); q,k,v = lin(xn1); rope(q,k); a = attention(q,k,v); x += lin_o(a)
 *              xn2 = rmsnorm(x); h = silu(lin_gate(xn2)) * lin_up(xn2); x += lin_down(h)
 *   xf = rmsnorm(x); logits = lin_head(xf); loss = cross-entropy(logits, targets)
 * The backward walks the same steps in reverse, one op's backward at a time.
 *
 * A "lin" is one linear as training sees it: an f32 weight that is trained (full training), or a frozen
 * weight of any dtype (fine-tuning), plus optionally a LoRA branch. Both entry points (cm_lm_forward for
 * cm_params, cm_lm_forward_lora for a frozen model + adapters) describe their weights as lins and share one
 * forward and one backward. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/kernels.h"
#include "camelid/nf4.h"
#include "camelid/train.h"
#include "camelid/train_ops.h"
#include "train/train_internal.h"

enum { N_LIN = CM_LORA_N_TARGETS }; /* q, k, v, o, gate, up, down */

typedef struct lin {
    const float *w;          /* f32 [out, in], or NULL when `frozen` holds the weight */
    const cm_weight *frozen; /* a weight of any dtype, never trained */
    float *dw;               /* NULL: no gradient for the weight */
    const float *a, *b;      /* LoRA A [r, in], B [out, r], or NULL */
    float *da, *db;
    int in, out;
} lin;

/* The weights one forward/backward reads, whatever they came from. */
typedef struct view {
    const float *embed;        /* f32 [V, D], or NULL: embed_w */
    const cm_weight *embed_w;
    float *dembed;             /* NULL = frozen */
    const float **attn_norm, **ffn_norm; /* [L] */
    float **dattn_norm, **dffn_norm;     /* [L], entries NULL = frozen */
    const float *out_norm;
    float *dout_norm;
    lin *lins; /* [L * N_LIN] */
    lin head;
    int r;
    float scale, dropout;
    uint64_t seed;
} view;

typedef struct layer_acts {
    float *x_in;        /* [BT, D] the residual stream entering the layer */
    float *xn1, *rstd1; /* attention norm out, its 1/rms */
    float *q, *k, *v;   /* after RoPE */
    float *probs;       /* [B, H, T, T] */
    float *att;         /* [BT, H*hd] attention output before Wo */
    float *x_mid;       /* residual after attention */
    float *xn2, *rstd2;
    float *gate, *up, *h; /* [BT, F] */
    float *u[N_LIN];      /* LoRA: dropout(x) A^T [BT, r] per linear */
} layer_acts;

struct cm_lm_train {
    cm_config cfg;
    int B, T;
    bool recompute;
    cm_pool *pool;
    cm_rope_table rope;
    float *arena; /* every activation below lives in it */
    size_t arena_floats;
    layer_acts *layers; /* L entries; with recompute all but x_in point into one shared set */
    float *x_final, *xnf, *rstdf, *logits, *lse;
    /* backward scratch */
    float *dx, *dxn, *dq, *dk, *dv, *datt, *dgate, *dup, *dh;
    /* LoRA and frozen-weight scratch, sized on first use */
    float *lora_arena, *xdrop, *g_r, *tmp_in, *tile;
    int lora_r;
    size_t tile_floats;
    /* the view of the last forward */
    view v;
    const float **norm_ptrs;
    float **dnorm_ptrs;
    lin *lins;
    /* the batch of the last forward */
    int32_t *tokens, *targets, *positions, *seg_start;
    int cur_B;
    bool have_forward;
};

const char *cm_lora_target_name(cm_lora_target t) {
    static const char *const names[N_LIN] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    return (unsigned)t < N_LIN ? names[t] : "?";
}

/* ---- set-up ---- */

static void layer_sizes(const cm_config *c, size_t BT, size_t *D, size_t *F, size_t *QD, size_t *KD) {
    (void)BT;
    *D = c->dim;
    *F = c->hidden_dim;
    *QD = (size_t)c->n_heads * c->head_dim;
    *KD = (size_t)c->n_kv_heads * c->head_dim;
}

cm_status cm_lm_train_open_ex(const cm_config *c, int B, int T, bool recompute, cm_pool *pool, cm_lm_train **out) {
    *out = NULL;
    if (B < 1 || T < 1) return cm_error(CM_ERR_ARG, "a training batch needs B >= 1 and T >= 1 (got %d x %d)", B, T);
    cm_lm_train *t = calloc(1, sizeof *t);
    if (!t) return cm_error(CM_ERR_NOMEM, "out of memory");
    t->cfg = *c;
    t->B = B;
    t->T = T;
    t->recompute = recompute;
    t->pool = pool;
    size_t BT = (size_t)B * T, V = c->vocab_size, D, F, QD, KD;
    layer_sizes(c, BT, &D, &F, &QD, &KD);
    size_t P = (size_t)B * c->n_heads * T * T;
    size_t body = BT * (D * 3 + QD * 2 + KD * 2 + F * 3 + 2) + P; /* a layer's activations but x_in */
    size_t n_bodies = recompute ? 1 : (size_t)c->n_layers;
    size_t total = BT * D * c->n_layers + body * n_bodies + BT * (D * 2 + V + 2) + BT * (D * 2 + QD * 2 + KD * 2 + F * 3);
    t->arena_floats = total;
    t->arena = malloc(total * sizeof(float));
    t->layers = calloc((size_t)c->n_layers, sizeof *t->layers);
    t->tokens = malloc(BT * sizeof(int32_t));
    t->targets = malloc(BT * sizeof(int32_t));
    t->positions = malloc(BT * sizeof(int32_t));
    t->seg_start = malloc(BT * sizeof(int32_t));
    t->norm_ptrs = calloc((size_t)c->n_layers * 2, sizeof *t->norm_ptrs);
    t->dnorm_ptrs = calloc((size_t)c->n_layers * 2, sizeof *t->dnorm_ptrs);
    t->lins = calloc((size_t)c->n_layers * N_LIN, sizeof *t->lins);
    if (!t->arena || !t->layers || !t->tokens || !t->targets || !t->positions || !t->seg_start || !t->norm_ptrs ||
        !t->dnorm_ptrs || !t->lins) {
        cm_lm_train_close(t);
        return cm_error(CM_ERR_NOMEM, "out of memory for the activations of a %d x %d training batch (%.1f GiB)", B,
                        T, (double)total * sizeof(float) / (1 << 30));
    }
    float *a = t->arena;
#define TAKE(n) (a += (n), a - (n))
    for (int l = 0; l < c->n_layers; l++) {
        layer_acts *L = &t->layers[l];
        L->x_in = TAKE(BT * D);
        if (recompute && l > 0) { /* share the first layer's body */
            float *x_in = L->x_in;
            *L = t->layers[0];
            L->x_in = x_in;
            continue;
        }
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

cm_status cm_lm_train_open(const cm_config *c, int B, int T, cm_pool *pool, cm_lm_train **out) {
    return cm_lm_train_open_ex(c, B, T, false, pool, out);
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
    free(t->norm_ptrs);
    free(t->dnorm_ptrs);
    free(t->lins);
    free(t->lora_arena);
    free(t->tile);
    free(t);
}

size_t cm_lm_train_bytes(const cm_lm_train *t) {
    size_t n = t->arena_floats * sizeof(float);
    if (t->lora_arena) {
        size_t BT = (size_t)t->B * t->T, widest = t->cfg.hidden_dim > t->cfg.dim ? t->cfg.hidden_dim : t->cfg.dim;
        size_t layers = t->recompute ? 1 : (size_t)t->cfg.n_layers;
        n += (BT * t->lora_r * (N_LIN * layers + 1) + 2 * BT * widest) * sizeof(float);
    }
    return n + t->tile_floats * sizeof(float);
}

/* LoRA intermediates for rank r: u per layer and linear, and scratch for dropout(x), dy B and g A. */
static cm_status ensure_lora(cm_lm_train *t, int r) {
    if (t->lora_arena && t->lora_r == r) return CM_OK;
    free(t->lora_arena);
    t->lora_arena = NULL;
    const cm_config *c = &t->cfg;
    size_t BT = (size_t)t->B * t->T, widest = c->hidden_dim > c->dim ? c->hidden_dim : c->dim;
    size_t layers = t->recompute ? 1 : (size_t)c->n_layers;
    size_t total = BT * r * (N_LIN * layers + 1) + 2 * BT * widest;
    t->lora_arena = malloc(total * sizeof(float));
    if (!t->lora_arena) return cm_error(CM_ERR_NOMEM, "out of memory for the LoRA activations");
    t->lora_r = r;
    float *a = t->lora_arena;
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < N_LIN; k++) {
            if (t->recompute && l > 0) {
                t->layers[l].u[k] = t->layers[0].u[k];
                continue;
            }
            t->layers[l].u[k] = a;
            a += BT * r;
        }
    t->g_r = a;
    a += BT * r;
    t->xdrop = a;
    a += BT * widest;
    t->tmp_in = a;
    return CM_OK;
}

/* ---- the batch ---- */

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

/* ---- linears ---- */

/* Rows [r0, r0 + n) of a weight of any dtype as f32 [n, cols]. */
static void weight_rows_f32(const cm_weight *w, int64_t r0, int64_t n, float *dst) {
    for (int64_t r = 0; r < n; r++) cm_weight_row_to_f32(w, r0 + r, dst + (size_t)r * w->cols);
}

/* The tile of frozen rows dequantized at a time by the backward (never the whole matrix). */
enum { TILE_ROWS = 64 };

static cm_status ensure_tile(cm_lm_train *t, size_t floats) {
    if (t->tile_floats >= floats) return CM_OK;
    float *p = realloc(t->tile, floats * sizeof(float));
    if (!p) return cm_error(CM_ERR_NOMEM, "out of memory for a weight tile");
    t->tile = p;
    t->tile_floats = floats;
    return CM_OK;
}

/* A hash-derived keep mask: element i of linear `key`'s input is kept with probability 1 - p. */
static void dropout_apply(float *dst, const float *x, size_t n, float p, uint64_t key) {
    /* 16 bits of one hash per element, four elements per hash: p resolved to 1/65536 */
    uint32_t threshold = (uint32_t)((double)p * 65536.0 + 0.5);
    float keep_scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i += 4) {
        uint64_t h = cm_train_mix64(key ^ (i >> 2));
        for (size_t k = 0; k < 4 && i + k < n; k++, h >>= 16)
            dst[i + k] = (uint32_t)(h & 0xffff) >= threshold ? x[i + k] * keep_scale : 0.0f;
    }
}

static uint64_t lin_key(const view *v, int layer, int k) {
    return cm_train_mix64(v->seed ^ cm_train_mix64(((uint64_t)layer << 8 | (uint64_t)k) + 1));
}

/* y[n, out] = x L^T (+ LoRA), saving u = dropout(x) A^T. */
static cm_status lin_forward(cm_lm_train *t, const view *v, const lin *L, float *y, const float *x, float *u, int n,
                             uint64_t key) {
    if (L->w)
        cm_linear_forward(y, x, L->w, n, L->in, L->out, t->pool);
    else if (L->frozen->dtype == CM_DTYPE_F32)
        cm_linear_forward(y, x, L->frozen->data, n, L->in, L->out, t->pool);
    else
        cm_matmul(y, x, n, L->frozen->data, L->frozen->dtype, L->out, L->in, t->pool);
    if (L->a) {
        const float *xd = x;
        if (v->dropout > 0) {
            dropout_apply(t->xdrop, x, (size_t)n * L->in, v->dropout, key);
            xd = t->xdrop;
        }
        cm_linear_forward(u, xd, L->a, n, L->in, v->r, t->pool);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, L->out, v->r, v->scale, u, v->r, L->b, v->r, 1.0f, y,
                    L->out);
    }
    return CM_OK;
}

/* dx += dy L (dx may be NULL), dW += dy^T x, and the LoRA gradients. */
static cm_status lin_backward(cm_lm_train *t, const view *v, const lin *L, float *dx, const float *dy,
                              const float *x, const float *u, int n, uint64_t key) {
    if (L->w) {
        cm_linear_backward(dx, L->dw, dy, x, L->w, n, L->in, L->out, t->pool);
    } else if (dx && L->frozen->dtype == CM_DTYPE_F32) {
        cm_linear_backward(dx, NULL, dy, x, L->frozen->data, n, L->in, L->out, t->pool);
    } else if (dx && L->frozen->dtype == CM_DTYPE_NF4) { /* the NF4 kernel's transpose product */
        cm_matmul_nf4_t(dx, dy, n, L->frozen->data, true, t->pool);
    } else if (dx) { /* dx += dy[:, rows] W[rows, :], one dequantized tile of rows at a time */
        CM_TRY(ensure_tile(t, (size_t)TILE_ROWS * L->in));
        for (int r0 = 0; r0 < L->out; r0 += TILE_ROWS) {
            int rows = L->out - r0 < TILE_ROWS ? L->out - r0 : TILE_ROWS;
            weight_rows_f32(L->frozen, r0, rows, t->tile);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, L->in, rows, 1.0f, dy + r0, L->out, t->tile,
                        L->in, 1.0f, dx, L->in);
        }
    }
    if (L->a) {
        int r = v->r;
        /* g = dy B [n, r]; dB += s dy^T u; dA += s g^T dropout(x); dx += s (g A) * mask / (1 - p) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, r, L->out, 1.0f, dy, L->out, L->b, r, 0.0f, t->g_r,
                    r);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L->out, r, n, v->scale, dy, L->out, u, r, 1.0f, L->db, r);
        const float *xd = x;
        if (v->dropout > 0) {
            dropout_apply(t->xdrop, x, (size_t)n * L->in, v->dropout, key);
            xd = t->xdrop;
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, L->in, n, v->scale, t->g_r, r, xd, L->in, 1.0f, L->da,
                    L->in);
        if (dx) {
            if (v->dropout > 0) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, L->in, r, v->scale, t->g_r, r, L->a, L->in,
                            0.0f, t->tmp_in, L->in);
                /* the mask again: a kept element is scaled by 1 / (1 - p), a dropped one passes nothing */
                dropout_apply(t->tmp_in, t->tmp_in, (size_t)n * L->in, v->dropout, key);
                for (size_t i = 0; i < (size_t)n * L->in; i++) dx[i] += t->tmp_in[i];
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, L->in, r, v->scale, t->g_r, r, L->a, L->in,
                            1.0f, dx, L->in);
            }
        }
    }
    return CM_OK;
}

/* ---- forward ---- */

static cm_status layer_forward(cm_lm_train *t, const view *v, int l, float *x_out) {
    const cm_config *c = &t->cfg;
    layer_acts *L = &t->layers[l];
    const lin *W = &v->lins[(size_t)l * N_LIN];
    int BT = t->cur_B * t->T, D = c->dim, F = c->hidden_dim;
    cm_attn_shape as = {t->cur_B, t->T, c->n_heads, c->n_kv_heads, c->head_dim};
    cm_pool *pool = t->pool;
    cm_rmsnorm_forward(L->xn1, L->rstd1, L->x_in, v->attn_norm[l], BT, D, c->norm_eps, pool);
    CM_TRY(lin_forward(t, v, &W[CM_LORA_Q], L->q, L->xn1, L->u[CM_LORA_Q], BT, lin_key(v, l, CM_LORA_Q)));
    CM_TRY(lin_forward(t, v, &W[CM_LORA_K], L->k, L->xn1, L->u[CM_LORA_K], BT, lin_key(v, l, CM_LORA_K)));
    CM_TRY(lin_forward(t, v, &W[CM_LORA_V], L->v, L->xn1, L->u[CM_LORA_V], BT, lin_key(v, l, CM_LORA_V)));
    cm_rope_forward(L->q, t->positions, BT, c->n_heads, &t->rope);
    cm_rope_forward(L->k, t->positions, BT, c->n_kv_heads, &t->rope);
    cm_attention_forward(L->att, L->probs, L->q, L->k, L->v, t->seg_start, as, pool);
    CM_TRY(lin_forward(t, v, &W[CM_LORA_O], L->x_mid, L->att, L->u[CM_LORA_O], BT, lin_key(v, l, CM_LORA_O)));
    for (size_t i = 0; i < (size_t)BT * D; i++) L->x_mid[i] += L->x_in[i];
    cm_rmsnorm_forward(L->xn2, L->rstd2, L->x_mid, v->ffn_norm[l], BT, D, c->norm_eps, pool);
    CM_TRY(lin_forward(t, v, &W[CM_LORA_GATE], L->gate, L->xn2, L->u[CM_LORA_GATE], BT, lin_key(v, l, CM_LORA_GATE)));
    CM_TRY(lin_forward(t, v, &W[CM_LORA_UP], L->up, L->xn2, L->u[CM_LORA_UP], BT, lin_key(v, l, CM_LORA_UP)));
    cm_swiglu_forward(L->h, L->gate, L->up, (size_t)BT * F, pool);
    CM_TRY(lin_forward(t, v, &W[CM_LORA_DOWN], x_out, L->h, L->u[CM_LORA_DOWN], BT, lin_key(v, l, CM_LORA_DOWN)));
    for (size_t i = 0; i < (size_t)BT * D; i++) x_out[i] += L->x_mid[i];
    return CM_OK;
}

static cm_status forward(cm_lm_train *t, const view *v, const cm_train_batch *b, double *loss_sum, int *n_counted) {
    const cm_config *c = &t->cfg;
    CM_TRY(take_batch(t, b));
    int BT = t->cur_B * t->T, D = c->dim, V = c->vocab_size;
    if (v->embed)
        cm_embedding_forward(t->layers[0].x_in, t->tokens, v->embed, BT, D);
    else
        for (int i = 0; i < BT; i++) cm_weight_row_to_f32(v->embed_w, t->tokens[i], t->layers[0].x_in + (size_t)i * D);
    for (int l = 0; l < c->n_layers; l++)
        CM_TRY(layer_forward(t, v, l, l + 1 < c->n_layers ? t->layers[l + 1].x_in : t->x_final));
    cm_rmsnorm_forward(t->xnf, t->rstdf, t->x_final, v->out_norm, BT, D, c->norm_eps, t->pool);
    CM_TRY(lin_forward(t, v, &v->head, t->logits, t->xnf, NULL, BT, 0));
    *loss_sum = cm_cross_entropy_forward(t->lse, t->logits, t->targets, BT, V, n_counted, t->pool);
    t->have_forward = true;
    return CM_OK;
}

/* ---- backward ---- */

static cm_status layer_backward(cm_lm_train *t, const view *v, int l) {
    const cm_config *c = &t->cfg;
    layer_acts *L = &t->layers[l];
    const lin *W = &v->lins[(size_t)l * N_LIN];
    int BT = t->cur_B * t->T, D = c->dim, F = c->hidden_dim, QD = c->n_heads * c->head_dim,
        KD = c->n_kv_heads * c->head_dim;
    cm_attn_shape as = {t->cur_B, t->T, c->n_heads, c->n_kv_heads, c->head_dim};
    cm_pool *pool = t->pool;
    size_t nD = (size_t)BT * D;
    if (t->recompute && l + 1 < c->n_layers) {
        /* later layers overwrote this layer's activations: make them again (the output, which the layer above
         * no longer needs, lands in scratch) */
        CM_TRY(layer_forward(t, v, l, t->dxn));
    }
    /* x_out = x_mid + lin_down(h): dx flows to x_mid unchanged, and through the MLP */
    memset(t->dh, 0, (size_t)BT * F * sizeof(float));
    CM_TRY(lin_backward(t, v, &W[CM_LORA_DOWN], t->dh, t->dx, L->h, L->u[CM_LORA_DOWN], BT, lin_key(v, l, CM_LORA_DOWN)));
    memset(t->dgate, 0, (size_t)BT * F * sizeof(float));
    memset(t->dup, 0, (size_t)BT * F * sizeof(float));
    cm_swiglu_backward(t->dgate, t->dup, t->dh, L->gate, L->up, (size_t)BT * F, pool);
    memset(t->dxn, 0, nD * sizeof(float));
    CM_TRY(lin_backward(t, v, &W[CM_LORA_GATE], t->dxn, t->dgate, L->xn2, L->u[CM_LORA_GATE], BT,
                        lin_key(v, l, CM_LORA_GATE)));
    CM_TRY(lin_backward(t, v, &W[CM_LORA_UP], t->dxn, t->dup, L->xn2, L->u[CM_LORA_UP], BT, lin_key(v, l, CM_LORA_UP)));
    cm_rmsnorm_backward(t->dx, v->dffn_norm[l], t->dxn, L->x_mid, v->ffn_norm[l], L->rstd2, BT, D, pool);
    /* x_mid = x_in + lin_o(att) */
    memset(t->datt, 0, (size_t)BT * QD * sizeof(float));
    CM_TRY(lin_backward(t, v, &W[CM_LORA_O], t->datt, t->dx, L->att, L->u[CM_LORA_O], BT, lin_key(v, l, CM_LORA_O)));
    memset(t->dq, 0, (size_t)BT * QD * sizeof(float));
    memset(t->dk, 0, (size_t)BT * KD * sizeof(float));
    memset(t->dv, 0, (size_t)BT * KD * sizeof(float));
    cm_attention_backward(t->dq, t->dk, t->dv, t->datt, L->probs, L->q, L->k, L->v, t->seg_start, as, pool);
    cm_rope_backward(t->dq, t->positions, BT, c->n_heads, &t->rope);
    cm_rope_backward(t->dk, t->positions, BT, c->n_kv_heads, &t->rope);
    memset(t->dxn, 0, nD * sizeof(float));
    CM_TRY(lin_backward(t, v, &W[CM_LORA_Q], t->dxn, t->dq, L->xn1, L->u[CM_LORA_Q], BT, lin_key(v, l, CM_LORA_Q)));
    CM_TRY(lin_backward(t, v, &W[CM_LORA_K], t->dxn, t->dk, L->xn1, L->u[CM_LORA_K], BT, lin_key(v, l, CM_LORA_K)));
    CM_TRY(lin_backward(t, v, &W[CM_LORA_V], t->dxn, t->dv, L->xn1, L->u[CM_LORA_V], BT, lin_key(v, l, CM_LORA_V)));
    cm_rmsnorm_backward(t->dx, v->dattn_norm[l], t->dxn, L->x_in, v->attn_norm[l], L->rstd1, BT, D, pool);
    return CM_OK;
}

static cm_status backward(cm_lm_train *t, const view *v, float dloss) {
    if (!t->have_forward) return cm_error(CM_ERR_ARG, "backward without a forward");
    t->have_forward = false;
    const cm_config *c = &t->cfg;
    int BT = t->cur_B * t->T, D = c->dim, V = c->vocab_size;
    size_t nD = (size_t)BT * D;
    /* head: logits become dlogits; dx (= d x_final) starts from the final norm's backward */
    cm_cross_entropy_backward(t->logits, t->lse, t->targets, BT, V, dloss, t->pool);
    memset(t->dxn, 0, nD * sizeof(float));
    CM_TRY(lin_backward(t, v, &v->head, t->dxn, t->logits, t->xnf, NULL, BT, 0));
    memset(t->dx, 0, nD * sizeof(float));
    cm_rmsnorm_backward(t->dx, v->dout_norm, t->dxn, t->x_final, v->out_norm, t->rstdf, BT, D, t->pool);
    for (int l = c->n_layers - 1; l >= 0; l--) CM_TRY(layer_backward(t, v, l));
    if (v->dembed) cm_embedding_backward(v->dembed, t->dx, t->tokens, BT, D);
    return CM_OK;
}

/* ---- the two kinds of weights ---- */

static void view_reset(cm_lm_train *t) {
    int L = t->cfg.n_layers;
    memset(&t->v, 0, sizeof t->v);
    memset(t->lins, 0, (size_t)L * N_LIN * sizeof *t->lins);
    t->v.lins = t->lins;
    t->v.attn_norm = t->norm_ptrs;
    t->v.ffn_norm = t->norm_ptrs + L;
    t->v.dattn_norm = t->dnorm_ptrs;
    t->v.dffn_norm = t->dnorm_ptrs + L;
}

static lin lin_f32(const float *w, float *dw, int in, int out) { return (lin){.w = w, .dw = dw, .in = in, .out = out}; }

/* Full training: every weight f32 and trained (g NULL when only the forward runs). */
static void view_params(cm_lm_train *t, const cm_params *p, cm_params *g) {
    const cm_config *c = &t->cfg;
    int D = c->dim, F = c->hidden_dim, QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    view_reset(t);
    view *v = &t->v;
    v->embed = p->embed;
    v->dembed = g ? g->embed : NULL;
    v->out_norm = p->out_norm;
    v->dout_norm = g ? g->out_norm : NULL;
    v->head = lin_f32(p->output, g ? g->output : NULL, D, c->vocab_size);
    for (int l = 0; l < c->n_layers; l++) {
        const cm_layer_params *P = &p->layers[l];
        cm_layer_params *G = g ? &g->layers[l] : NULL;
        v->attn_norm[l] = P->attn_norm;
        v->ffn_norm[l] = P->ffn_norm;
        v->dattn_norm[l] = G ? G->attn_norm : NULL;
        v->dffn_norm[l] = G ? G->ffn_norm : NULL;
        lin *W = &v->lins[(size_t)l * N_LIN];
        W[CM_LORA_Q] = lin_f32(P->wq, G ? G->wq : NULL, D, QD);
        W[CM_LORA_K] = lin_f32(P->wk, G ? G->wk : NULL, D, KD);
        W[CM_LORA_V] = lin_f32(P->wv, G ? G->wv : NULL, D, KD);
        W[CM_LORA_O] = lin_f32(P->wo, G ? G->wo : NULL, QD, D);
        W[CM_LORA_GATE] = lin_f32(P->w_gate, G ? G->w_gate : NULL, D, F);
        W[CM_LORA_UP] = lin_f32(P->w_up, G ? G->w_up : NULL, D, F);
        W[CM_LORA_DOWN] = lin_f32(P->w_down, G ? G->w_down : NULL, F, D);
    }
}

static cm_status check_params(const cm_lm_train *t, const cm_config *pc) {
    const cm_config *c = &t->cfg;
    if (c->dim != pc->dim || c->n_layers != pc->n_layers || c->vocab_size != pc->vocab_size ||
        c->hidden_dim != pc->hidden_dim || c->n_heads != pc->n_heads || c->n_kv_heads != pc->n_kv_heads)
        return cm_error(CM_ERR_ARG, "the weights and the training state are of different shapes");
    return CM_OK;
}

cm_status cm_lm_forward(cm_lm_train *t, const cm_params *p, const cm_train_batch *b, double *loss_sum,
                        int *n_counted) {
    CM_TRY(check_params(t, &p->cfg));
    view_params(t, p, NULL);
    return forward(t, &t->v, b, loss_sum, n_counted);
}

const float *cm_lm_logits(const cm_lm_train *t) { return t->logits; }

cm_status cm_lm_backward(cm_lm_train *t, const cm_params *p, cm_params *g, float dloss) {
    CM_TRY(check_params(t, &p->cfg));
    view_params(t, p, g);
    return backward(t, &t->v, dloss);
}

/* Fine-tuning: the base frozen in its own dtype, LoRA on the targeted linears. */
static void view_lora(cm_lm_train *t, const cm_model *m, const cm_lora_params *lora, cm_lora_params *dl,
                      uint64_t seed) {
    const cm_config *c = &t->cfg;
    view_reset(t);
    view *v = &t->v;
    if (m->tok_embd.dtype == CM_DTYPE_F32)
        v->embed = m->tok_embd.data;
    else
        v->embed_w = &m->tok_embd;
    v->out_norm = m->out_norm;
    v->head = (lin){.frozen = &m->output, .in = c->dim, .out = c->vocab_size};
    v->r = lora ? lora->r : 0;
    v->scale = lora ? lora->scale : 0;
    v->dropout = lora ? lora->dropout : 0;
    v->seed = seed;
    for (int l = 0; l < c->n_layers; l++) {
        const cm_layer *B = &m->layers[l];
        v->attn_norm[l] = B->attn_norm;
        v->ffn_norm[l] = B->ffn_norm;
        const cm_weight *ws[N_LIN] = {&B->wq, &B->wk, &B->wv, &B->wo, &B->w_gate, &B->w_up, &B->w_down};
        for (int k = 0; k < N_LIN; k++) {
            lin *W = &v->lins[(size_t)l * N_LIN + k];
            *W = (lin){.frozen = ws[k], .in = (int)ws[k]->cols, .out = (int)ws[k]->rows};
            size_t idx = (size_t)l * N_LIN + k;
            if (lora && lora->a[idx]) {
                W->a = lora->a[idx];
                W->b = lora->b[idx];
                W->da = dl ? dl->a[idx] : NULL;
                W->db = dl ? dl->b[idx] : NULL;
            }
        }
    }
}

cm_status cm_lm_forward_lora(cm_lm_train *t, const cm_model *base, const cm_lora_params *lora, uint64_t dropout_seed,
                             const cm_train_batch *b, double *loss_sum, int *n_counted) {
    CM_TRY(check_params(t, &base->cfg));
    if (lora) {
        CM_TRY(check_params(t, &lora->cfg));
        CM_TRY(ensure_lora(t, lora->r));
    }
    view_lora(t, base, lora, NULL, dropout_seed);
    return forward(t, &t->v, b, loss_sum, n_counted);
}

cm_status cm_lm_backward_lora(cm_lm_train *t, const cm_model *base, const cm_lora_params *lora, cm_lora_params *dlora,
                              float dloss) {
    CM_TRY(check_params(t, &base->cfg));
    if (!lora || !dlora) return cm_error(CM_ERR_ARG, "a LoRA backward needs the adapters and their gradients");
    uint64_t seed = t->v.seed;
    view_lora(t, base, lora, dlora, seed);
    return backward(t, &t->v, dloss);
}
