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

/* Run tokens[0..n) at positions pos..pos+n-1 (the cache must hold positions < pos). Writes the logits of
 * every token (logits: n x vocab) with all_logits, else only of the last one (logits: vocab). */
cm_status cm_forward(const cm_model *m, cm_state *s, const int32_t *tokens, int n, int pos, float *logits,
                     bool all_logits);

#endif
