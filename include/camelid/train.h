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

/* LoRA adapters under training (FACTS 6): for each targeted linear of each layer, A [r, in] and B [out, r]
 * in one f32 allocation with a table of PEFT-named tensors
 * ("base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight", ...). B rows follow the base model's
 * RoPE layout (q/k rows permuted when the base is interleaved; the PEFT writer permutes them back to HF
 * order). y = x W^T + scale * (dropout(x) A^T) B^T, scale = alpha / r. */
typedef enum {
    CM_LORA_Q = 0, CM_LORA_K, CM_LORA_V, CM_LORA_O, CM_LORA_GATE, CM_LORA_UP, CM_LORA_DOWN, CM_LORA_N_TARGETS
} cm_lora_target;
/* "q_proj", "k_proj", ... */
const char *cm_lora_target_name(cm_lora_target t);

typedef struct cm_lora_params {
    cm_config cfg;
    int r;
    float alpha, scale, dropout;
    unsigned targets; /* bit (1 << cm_lora_target) per targeted linear */
    float *data;
    size_t n;
    float **a, **b; /* [n_layers * CM_LORA_N_TARGETS], NULL where not targeted */
    cm_param_tensor *tensors;
    int n_tensors;
} cm_lora_params;

/* Zeroed adapters (tensor table in PEFT order: per layer, per target, A then B). */
cm_status cm_lora_params_open(const cm_config *c, int r, float alpha, float dropout, unsigned targets,
                              cm_lora_params **out);
void cm_lora_params_close(cm_lora_params *l);
void cm_lora_params_zero(cm_lora_params *l);

/* The activations of a training forward for batches of up to B x T, and the scratch of the backward. With
 * `recompute`, only each layer's input is kept and the backward recomputes the layer's forward (activation
 * checkpointing per layer): memory for one layer's activations instead of all of them, for about a third more
 * compute. */
typedef struct cm_lm_train cm_lm_train;

cm_status cm_lm_train_open(const cm_config *c, int B, int T, cm_pool *pool, cm_lm_train **out);
cm_status cm_lm_train_open_ex(const cm_config *c, int B, int T, bool recompute, cm_pool *pool, cm_lm_train **out);
void cm_lm_train_close(cm_lm_train *t);
/* Bytes of activations and scratch held. */
size_t cm_lm_train_bytes(const cm_lm_train *t);

/* Forward over the batch with parameters p, keeping what the backward needs. Returns in *loss_sum the sum
 * of the token losses (nats) over the *n_counted trained targets. Token ids must be below the vocabulary. */
cm_status cm_lm_forward(cm_lm_train *t, const cm_params *p, const cm_train_batch *b, double *loss_sum,
                        int *n_counted);
/* The logits of the last forward, [B*T, vocab] (valid until cm_lm_backward, which overwrites them). */
const float *cm_lm_logits(const cm_lm_train *t);
/* Backward of the last forward: grads += d(dloss * loss_sum)/d(params), i.e. dloss = 1/(tokens counted in
 * the whole optimizer step) gives the gradient of the mean loss. */
cm_status cm_lm_backward(cm_lm_train *t, const cm_params *p, cm_params *grads, float dloss);

/* Fine-tuning with a frozen base: the base model's weights in their own dtype (F32, F16, BF16, Q8_0, NF4,
 * ...: read tile by tile, never dequantized whole) and trainable adapters. The dropout mask of each LoRA
 * input comes from a counter-based hash of (dropout_seed, layer, linear, element), so the backward
 * regenerates it instead of storing it; pass a new seed per micro-batch. */
cm_status cm_lm_forward_lora(cm_lm_train *t, const cm_model *base, const cm_lora_params *lora, uint64_t dropout_seed,
                             const cm_train_batch *b, double *loss_sum, int *n_counted);
/* Gradients of the adapters only (dlora += ...); the base gets none. */
cm_status cm_lm_backward_lora(cm_lm_train *t, const cm_model *base, const cm_lora_params *lora,
                              cm_lora_params *dlora, float dloss);

#endif
