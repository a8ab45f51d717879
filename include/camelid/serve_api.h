/* The OpenAI-compatible API's JSON (FACTS 10): request bodies parsed and validated into plain structs, and
 * the response, stream-chunk and error bodies built, shapes as OpenAI documents them. No sockets here: the
 * HTTP glue (serve.h) and the fuzz target drive these functions. */
#ifndef CAMELID_SERVE_API_H
#define CAMELID_SERVE_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/chat.h"

typedef enum {
    CM_API_CHAT = 0,     /* POST /v1/chat/completions */
    CM_API_COMPLETION,   /* POST /v1/completions */
    CM_API_TOKENIZE,     /* POST /tokenize */
    CM_API_DETOKENIZE,   /* POST /detokenize */
    CM_API_ARENA_BATTLE, /* POST /v1/arena/battles: {"prompt", "system"?, sampling fields, "stream"} */
    CM_API_ARENA_VOTE,   /* POST /v1/arena/battles/{id}/vote: {"winner": "a"|"b"|"tie"|"bothbad"} */
} cm_api_kind;

/* An error as the API reports it: HTTP status and {"error":{"message","type","param","code"}}. */
typedef struct cm_api_error {
    int status;
    const char *type; /* "invalid_request_error", "authentication_error", "server_error", ... */
    const char *code; /* NULL (JSON null) or e.g. "model_not_found" */
    char param[64];   /* "" = null */
    char message[512];
} cm_api_error;

void cm_api_error_set(cm_api_error *e, int status, const char *type, const char *code, const char *param,
                      const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* {"error":{...}} as a malloc'd NUL-terminated string (NULL if out of memory). */
char *cm_api_error_json(const cm_api_error *e);

#define CM_API_MAX_STOP 16

typedef struct cm_api_request {
    cm_api_kind kind;
    char *model; /* NULL when absent or null */
    /* chat and arena battles (an optional system message, then the prompt as the user's): the messages,
     * roles normalised to system/user/assistant ("developer" -> "system"), contents
     * made strings (text parts joined) */
    cm_chat_message *messages;
    size_t n_messages;
    /* completions: the prompt text (or prompt_tokens when the prompt is an id array); tokenize: content */
    char *prompt;
    int32_t *tokens; /* completions with an id-array prompt; detokenize's tokens */
    size_t n_tokens;
    bool has_tokens;
    int max_tokens; /* max_completion_tokens or max_tokens; -1 when not given */
    bool has_temperature, has_top_p, has_top_k, has_min_p, has_seed;
    double temperature, top_p, min_p;
    int top_k;
    uint64_t seed;
    char *stop[CM_API_MAX_STOP];
    int n_stop;
    bool stream, include_usage;
    bool add_special; /* tokenize: add BOS as the model would */
    int winner;       /* arena vote: a cm_vote (elo.h) */
} cm_api_request;

/* Parse and validate a request body. On failure fills `err` (status 400, param named) and returns false;
 * `out` is then empty. Unknown fields are ignored. Bounds: messages <= 4096, stop strings <= 16 of
 * <= 256 bytes each, token arrays <= 1,048,576 ids. */
bool cm_api_parse_request(cm_api_kind kind, const char *body, size_t len, cm_api_request *out,
                          cm_api_error *err);
void cm_api_request_free(cm_api_request *r);

typedef struct cm_api_usage {
    int prompt_tokens, completion_tokens;
} cm_api_usage;

/* A whole chat.completion / text_completion (non-streamed). `finish_reason` is "stop" or "length". Text
 * that is not valid UTF-8 has its bad bytes replaced by U+FFFD. Malloc'd, NULL if out of memory. */
char *cm_api_response_json(cm_api_kind kind, const char *id, long long created, const char *model,
                           const char *text, size_t len, const char *finish_reason,
                           const cm_api_usage *usage);

/* One streamed chunk (the JSON after "data: "): chat.completion.chunk or text_completion. `role_start`
 * makes chat's first delta {"role":"assistant","content":""}; `finish_reason` non-NULL makes the last
 * (chat delta {}); `usage` non-NULL makes the usage-only chunk (choices []). With `usage_null`, the other
 * chunks carry "usage": null, as OpenAI's do when include_usage is set. */
char *cm_api_chunk_json(cm_api_kind kind, const char *id, long long created, const char *model,
                        const char *text, size_t len, bool role_start, const char *finish_reason,
                        const cm_api_usage *usage, bool usage_null);

/* GET /v1/models: {"object":"list","data":[{"id","object":"model","created","owned_by"}...]}. */
char *cm_api_models_json(const char *const *ids, size_t n, long long created);

/* Copy `len` bytes into a malloc'd NUL-terminated string with every invalid UTF-8 sequence (and NUL)
 * replaced by U+FFFD (NUL bytes are kept: JSON spells them \u0000); `*out_len` gets its length. */
char *cm_utf8_sanitize(const char *s, size_t len, size_t *out_len);

#endif
