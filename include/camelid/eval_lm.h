/* The model interface every evaluation client talks to (DESIGN.md "The one idea"):
 *
 *     loglikelihood(context tokens, continuation tokens) -> (sum log-prob, is_greedy)
 *     generate(prompt, max tokens, stop strings)          -> text
 *
 * The local implementation runs a cm_model through one reused cm_state. A batch of log-likelihood requests is
 * served in token order so that requests sharing a prefix share the work: the KV cache keeps the tokens it
 * holds, each request runs only the tokens past its longest common prefix with them, and the logits of the
 * last forward are kept, so the four MMLU requests (ctx, " A") .. (ctx, " D") cost one forward of ctx and
 * consecutive few-shot prompts run only their new question. Requests longer than the context are
 * left-truncated as lm-eval does (FACTS 9.1): the model sees (ctx+cont)[-(n_ctx+1):][:-1]; the continuation
 * is never cut. */
#ifndef CAMELID_EVAL_LM_H
#define CAMELID_EVAL_LM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/model.h"
#include "camelid/tokenizer.h"

typedef struct cm_ll_request {
    const int32_t *ctx; /* context tokens (BOS included when the model wants it); may be empty */
    int n_ctx;
    const int32_t *cont; /* continuation tokens, at least one */
    int n_cont;
    double *token_logprobs; /* optional: receives the n_cont per-token log-probs */
    /* results */
    double logprob; /* sum of log p(cont[i] | everything before) */
    bool is_greedy; /* every continuation token is the argmax of its row */
    bool truncated; /* the context was left-truncated to fit */
} cm_ll_request;

typedef struct cm_lm_stats {
    int64_t n_requests, n_truncated;
    int64_t tokens_scored;    /* continuation tokens scored */
    int64_t tokens_forwarded; /* tokens actually run through the model */
    int64_t tokens_requested; /* tokens the requests would run without prefix sharing */
    double forward_seconds;   /* time inside cm_forward for log-likelihoods */
    int64_t n_generated;
    double generate_seconds;
} cm_lm_stats;

typedef struct cm_lm_gen_params {
    int max_tokens;          /* new tokens at most (> 0) */
    const char *const *stop; /* stop strings: the text before the first match is kept */
    int n_stop;
} cm_lm_gen_params;

typedef struct cm_lm cm_lm;

/* A local model. `ctx_len` <= 0: the model's seq_len. Generation is greedy (temperature 0), so `seed` only
 * matters for samplers that draw; it is kept for the record. `m` and `tok` must outlive the lm. */
cm_status cm_lm_open_local(const cm_model *m, const cm_tokenizer *tok, int ctx_len, int n_threads,
                           uint64_t seed, cm_lm **out);
void cm_lm_close(cm_lm *lm);
int cm_lm_ctx_len(const cm_lm *lm);
int cm_lm_vocab_size(const cm_lm *lm);
const cm_tokenizer *cm_lm_tokenizer(const cm_lm *lm);
const cm_lm_stats *cm_lm_get_stats(const cm_lm *lm);

/* Score a batch of requests (results written into each). */
cm_status cm_lm_loglikelihood(cm_lm *lm, cm_ll_request *reqs, size_t n);

/* lm-eval's request encoding (FACTS 9.1): trailing whitespace of `ctx` moves to the front of `cont`; ctx+cont
 * is tokenized as one text (BOS first when the tokenizer adds it) and the continuation is the tokens past
 * len(tok(ctx)). An empty context becomes [BOS]. Both arrays are malloc'd (caller frees). Fails if the
 * continuation comes out empty. */
cm_status cm_lm_encode_pair(const cm_lm *lm, const char *ctx, size_t ctx_len, const char *cont,
                            size_t cont_len, int32_t **ctx_ids, int *n_ctx, int32_t **cont_ids, int *n_cont);

/* Greedy generation from a text prompt (BOS first when the tokenizer adds it; prompts longer than the
 * context keep their last ctx - max_tokens tokens). `*text` is malloc'd, NUL-terminated. */
cm_status cm_lm_generate(cm_lm *lm, const char *prompt, size_t prompt_len, const cm_lm_gen_params *p,
                         char **text);
/* The same from tokens. */
cm_status cm_lm_generate_tokens(cm_lm *lm, const int32_t *prompt, int n_prompt, const cm_lm_gen_params *p,
                                char **text);

#endif
