/* Text generation: the `generate(prompt tokens, sampling, stop rules) -> streamed text` half of the model
 * interface every client (CLI, server, evaluation) uses. */
#ifndef CAMELID_GENERATE_H
#define CAMELID_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "camelid/llama.h"
#include "camelid/sampler.h"
#include "camelid/tokenizer.h"

typedef struct cm_generate_params {
    int n_predict;           /* new tokens at most; < 0: until the context is full */
    const char *const *stop; /* stop strings (the text before the first match is kept) */
    int n_stop;
    bool echo_prompt; /* stream the prompt's text first */
    /* Leading prompt tokens already in the state's cache (a chat's earlier turns): only the rest is run. */
    int n_cached;
    const int32_t *stop_tokens; /* further end-of-generation ids (e.g. a template's <|eot_id|>) */
    int n_stop_tokens;
} cm_generate_params;

/* Stop strings over streamed text (the generation loop and the server's scheduler hold text back with these):
 * the offset of the earliest match of any of `stop` in text[0, len), or -1; and how many bytes at the end of
 * the text could still grow into one (so they must not be emitted yet). Empty stop strings never match. */
long cm_stop_find(const char *text, size_t len, const char *const *stop, int n_stop);
size_t cm_stop_held_back(const char *text, size_t len, const char *const *stop, int n_stop);

typedef enum {
    CM_STOP_LENGTH = 0, /* n_predict reached */
    CM_STOP_EOS,        /* an end-of-generation token (or BOS, as llama2.c) was sampled */
    CM_STOP_STRING,     /* a stop string appeared */
    CM_STOP_CONTEXT,    /* the context is full */
    CM_STOP_CALLER,     /* the callback asked to stop */
} cm_stop_reason;

typedef struct cm_generate_result {
    int n_prompt, n_generated;
    int n_cached;    /* positions of the state's cache that now hold valid keys/values */
    int32_t *tokens; /* the generated ids (n_generated), malloc'd: the caller frees */
    double prompt_seconds, generate_seconds;
    cm_stop_reason stop;
} cm_generate_result;

/* Receives text as soon as it is final (never inside a UTF-8 character, never part of a stop string);
 * return nonzero to stop. */
typedef int (*cm_text_callback)(void *user, const char *text, size_t len);

const char *cm_stop_reason_name(cm_stop_reason r);

/* Run the prompt (positions n_cached..n_prompt-1; the cache holds the first n_cached), then sample until a
 * stop rule fires. */
cm_status cm_generate(const cm_model *m, const cm_tokenizer *tok, cm_state *state, cm_sampler *sampler,
                      const int32_t *prompt, int n_prompt, const cm_generate_params *params,
                      cm_text_callback on_text, void *user, cm_generate_result *result);

#endif
