/* The LLaMA forward pass over a batch of tokens with a KV cache (FACTS 1.3, 3):
 * embed -> L x [rmsnorm -> attention (RoPE, GQA, KV cache) -> residual -> rmsnorm -> SwiGLU -> residual]
 * -> rmsnorm -> logits. Compute is f32 whatever the weights' dtype. */
#ifndef CAMELID_LLAMA_H
#define CAMELID_LLAMA_H

#include <stdbool.h>
#include <stdint.h>

#include "camelid/model.h"

/* Per-sequence state: the KV cache and the scratch buffers for batches of up to `max_batch` tokens. */
typedef struct cm_state cm_state;

/* ctx_len <= 0 means the model's seq_len. */
cm_status cm_state_open(const cm_model *m, int ctx_len, int max_batch, int n_threads, cm_state **out);
void cm_state_close(cm_state *s);
int cm_state_ctx_len(const cm_state *s);
cm_status cm_state_set_threads(cm_state *s, int n_threads);

/* A KV cache for one sequence (cm_state has its own, which cm_forward uses; a server keeps one per slot). */
typedef struct cm_kv cm_kv;
/* ctx_len <= 0 means the model's seq_len. */
cm_status cm_kv_open(const cm_model *m, int ctx_len, cm_kv **out);
void cm_kv_close(cm_kv *kv);
int cm_kv_ctx_len(const cm_kv *kv);
/* The state's own cache. */
cm_kv *cm_state_kv(cm_state *s);

/* One token of a batch that may mix sequences: its id, its position in its sequence, that sequence's cache,
 * and whether its logits are wanted. */
typedef struct cm_batch_token {
    int32_t token;
    int pos;
    cm_kv *kv;
    bool logits;
} cm_batch_token;

/* Run tokens of one or more sequences together (continuous batching): the matmuls see all of them at once,
 * each token attends over its own cache up to its position (tokens of one sequence in position order). The
 * logits of the tokens that want them are written in order, one vocab-sized row each. Positions must be below
 * both the cache's and the state's context. */
cm_status cm_forward_batch(const cm_model *m, cm_state *s, const cm_batch_token *items, int n, float *logits);

/* Run tokens[0..n) at positions pos..pos+n-1 (the cache must hold positions < pos). Writes the logits of
 * every token (logits: n x vocab) with all_logits, else only of the last one (logits: vocab). */
cm_status cm_forward(const cm_model *m, cm_state *s, const int32_t *tokens, int n, int pos, float *logits,
                     bool all_logits);

#endif
