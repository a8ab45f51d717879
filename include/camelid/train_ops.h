/* The operations of a LLaMA block as forward/backward pairs over plain row-major arrays (llm.c style), for
 * training. Rows are tokens: a batch of B sequences of T tokens is BT = B*T rows. Backward functions
 * ACCUMULATE into the gradients they are given (the caller zeroes them once per step), except where a comment
 * says "writes". Each op is checked against finite differences and, as a whole model, against PyTorch
 * (tests/unit/test_train_ops.c, test_train_golden.c). The pool may be NULL (single thread). */
#ifndef CAMELID_TRAIN_OPS_H
#define CAMELID_TRAIN_OPS_H

#include <stdint.h>

#include "camelid/config.h"
#include "camelid/pool.h"

/* out[t] = table[tokens[t]] (writes); backward: dtable[tokens[t]] += dout[t]. */
void cm_embedding_forward(float *out, const int32_t *tokens, const float *table, int n, int dim);
void cm_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int n, int dim);

/* out = x * rstd * w with rstd = 1/sqrt(mean(x^2) + eps), per row of dim; rstd[t] saved for backward
 * (writes out and rstd). backward: dx += ..., dw += ... (dw NULL: a frozen weight) */
void cm_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int n, int dim, float eps,
                        cm_pool *pool);
void cm_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                         const float *rstd, int n, int dim, cm_pool *pool);

/* y[n, out] = x[n, in] W[out, in]^T (writes). backward: dx[n, in] += dy W (skipped when dx is NULL),
 * dW += dy^T x (skipped when dW is NULL, i.e. a frozen weight). BLAS sgemm underneath, the pool splitting
 * rows (BLAS's own threads are held at one meanwhile). */
void cm_linear_forward(float *y, const float *x, const float *w, int n, int in, int out, cm_pool *pool);
void cm_linear_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int n, int in,
                        int out, cm_pool *pool);

/* RoPE tables for positions [0, n_pos): cos/sin[pos * (head_dim/2) + i] of pos * inv_freq(i) (the config's
 * scaling included), computed in double. */
typedef struct cm_rope_table {
    int n_pos, half;
    cm_rope_layout layout;
    float *cos, *sin;
} cm_rope_table;
cm_status cm_rope_table_init(cm_rope_table *t, const cm_config *c, int n_pos);
void cm_rope_table_free(cm_rope_table *t);
/* Rotate, in place, each of n rows of n_heads heads of head_dim by its position (positions[t]). backward
 * rotates the gradient by the opposite angle (in place): d(x) from d(rope(x)). */
void cm_rope_forward(float *x, const int32_t *positions, int n, int n_heads, const cm_rope_table *t);
void cm_rope_backward(float *dx, const int32_t *positions, int n, int n_heads, const cm_rope_table *t);

/* Causal GQA attention over B sequences of T tokens. q [BT, H*hd], k and v [BT, KV*hd] (RoPE applied),
 * out [BT, H*hd] (writes), probs [B, H, T, T] (writes: row i holds the softmax over the keys it sees, zeros
 * elsewhere). seg_start[bt] is the first row (0-based, within its sequence) that token bt may attend to: 0 for
 * plain causal attention, the start of its document for packed sequences (NULL = all 0). backward accumulates
 * dq, dk, dv. */
typedef struct cm_attn_shape {
    int B, T, n_heads, n_kv_heads, head_dim;
} cm_attn_shape;
void cm_attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                          const int32_t *seg_start, cm_attn_shape s, cm_pool *pool);
void cm_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *probs,
                           const float *q, const float *k, const float *v, const int32_t *seg_start,
                           cm_attn_shape s, cm_pool *pool);

/* h = silu(gate) * up (writes); backward: dgate += ..., dup += ... */
void cm_swiglu_forward(float *h, const float *gate, const float *up, size_t n, cm_pool *pool);
void cm_swiglu_backward(float *dgate, float *dup, const float *dh, const float *gate, const float *up, size_t n,
                        cm_pool *pool);

/* Cross-entropy of n rows of logits [n, V] against targets (< 0 = ignored). forward writes lse[t] (the
 * row's log-sum-exp) and returns the SUM of -log p(target) over the counted rows (*n_counted of them).
 * backward turns logits into dlogits in place: (softmax - onehot(target)) * dloss, zero on ignored rows. */
double cm_cross_entropy_forward(float *lse, const float *logits, const int32_t *targets, int n, int V,
                                int *n_counted, cm_pool *pool);
void cm_cross_entropy_backward(float *logits, const float *lse, const int32_t *targets, int n, int V, float dloss,
                               cm_pool *pool);

/* The number of threads BLAS may use (OpenBLAS keeps its own threads). */
void cm_train_blas_threads(int n);

#endif
