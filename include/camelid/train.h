/* Training a LLaMA model: its parameters as one f32 allocation with a table of named tensors (gradients and
 * optimizer moments share the layout), the training forward over (B, T) batches that saves activations, and
 * the backward that walks them in reverse (FACTS 5, llm.c conventions). */
#ifndef CAMELID_TRAIN_H
#define CAMELID_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/config.h"
#include "camelid/model.h"
#include "camelid/pool.h"

/* One named tensor inside a parameter buffer (HF names, e.g. "model.layers.0.self_attn.q_proj.weight"). */
typedef struct cm_param_tensor {
    char name[80];
    int64_t rows, cols; /* cols = 1 for vectors */
    size_t offset;      /* in floats */
    bool is_matrix;     /* 2-D: weight decay applies */
} cm_param_tensor;

typedef struct cm_layer_params {
    float *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm, *w_gate, *w_up, *w_down;
} cm_layer_params;

/* All parameters of a model of config `cfg` in f32, in the model's RoPE layout (q/k rows as the config
 * says). The tied head has no tensor of its own: `output` aliases `embed`. */
typedef struct cm_params {
    cm_config cfg;
    float *data;
    size_t n; /* floats */
    float *embed, *out_norm, *output;
    cm_layer_params *layers;
    cm_param_tensor *tensors;
    int n_tensors;
} cm_params;

/* Zeroed parameters of shape c. */
cm_status cm_params_open(const cm_config *c, cm_params **out);
void cm_params_close(cm_params *p);
void cm_params_zero(cm_params *p);
/* Copy a model's weights (any float dtype) into new parameters of its config and layout. */
cm_status cm_params_from_model(const cm_model *m, cm_params **out);
/* A model whose weights are views of p (F32), for saving (cm_model_save_hf) or inference; p must outlive
 * it. */
cm_status cm_params_as_model(const cm_params *p, cm_model **out);
/* The tensor called `name`, or NULL. */
const cm_param_tensor *cm_params_find(const cm_params *p, const char *name);

/* One batch: B rows of T tokens and their targets (< 0 = not trained on). positions (NULL = 0..T-1 in every
 * row) and doc_ids (NULL = one document per row) describe packed rows: a token attends only to earlier
 * tokens of its own document (doc ids are contiguous runs within a row). */
typedef struct cm_train_batch {
    int B, T;
    const int32_t *tokens, *targets;
    const int32_t *positions, *doc_ids;
} cm_train_batch;

/* The activations of a training forward for batches of up to B x T, and the scratch of the backward. */
typedef struct cm_lm_train cm_lm_train;

cm_status cm_lm_train_open(const cm_config *c, int B, int T, cm_pool *pool, cm_lm_train **out);
void cm_lm_train_close(cm_lm_train *t);

/* Forward over the batch with parameters p, keeping what the backward needs. Returns in *loss_sum the sum
 * of the token losses (nats) over the *n_counted trained targets. Token ids must be below the vocabulary. */
cm_status cm_lm_forward(cm_lm_train *t, const cm_params *p, const cm_train_batch *b, double *loss_sum,
                        int *n_counted);
/* The logits of the last forward, [B*T, vocab] (valid until cm_lm_backward, which overwrites them). */
const float *cm_lm_logits(const cm_lm_train *t);
/* Backward of the last forward: grads += d(dloss * loss_sum)/d(params), i.e. dloss = 1/(tokens counted in
 * the whole optimizer step) gives the gradient of the mean loss. */
cm_status cm_lm_backward(cm_lm_train *t, const cm_params *p, cm_params *grads, float dloss);

#endif
