/* `camelid serve`: an OpenAI-compatible HTTP server (FACTS 10) on libmicrohttpd. Routes: POST
 * /v1/chat/completions, POST /v1/completions (streamed as SSE or not), GET /v1/models, GET /health, GET
 * /metrics (Prometheus text), POST /tokenize, POST /detokenize; the web pages GET /, /arena, /leaderboard and
 * the arena's POST /v1/arena/battles, POST /v1/arena/battles/{id}/vote, GET /v1/arena/leaderboard (votes in
 * the db_path file, arena.h). Each model has its own scheduler
 * (serve_sched.h: continuous batching over --parallel slots, a FIFO wait queue). Connections run one thread
 * each; a client that goes away is noticed within ~100 ms and frees its slot. */
#ifndef CAMELID_SERVE_H
#define CAMELID_SERVE_H

#include <stdbool.h>
#include <stddef.h>

#include "camelid/chat.h"
#include "camelid/model.h"

typedef struct cm_server cm_server;

/* One line of the access/error log (no newline). */
typedef void (*cm_server_log_fn)(void *user, const char *line);

typedef struct cm_server_params {
    const char *host;    /* address to bind (default "127.0.0.1"); "::1" etc. for IPv6 */
    int port;            /* default 8080; 0 = any free port (see cm_server_port) */
    int parallel;        /* slots per model (default 4) */
    int ctx;             /* context per slot; <= 0: min(4096, the model's) */
    int threads;         /* compute threads per model */
    int queue_depth;     /* requests that may wait beyond the slots (default 64); more answer 503 */
    const char *api_key; /* NULL or "": no authentication */
    size_t max_body;     /* request body limit in bytes (default 1 MiB); more answer 413 */
    int timeout;         /* seconds a request may take, queueing included (default 600) */
    int idle_timeout;    /* seconds a connection may stay silent while sending its request (default 30) */
    int max_connections; /* concurrent connections (default 256); more are refused */
    const char *db_path; /* NULL: no request log, arena votes in memory; else a SQLite file (serve_requests,
                          * arena_battles, arena_votes) */
    cm_server_log_fn log;
    void *log_user;
} cm_server_params;

cm_server_params cm_server_defaults(void);

/* Start listening. Until cm_server_start, /health answers 503 "Loading model" and the API 503. */
cm_status cm_server_open(const cm_server_params *p, cm_server **out);
/* The port actually bound. */
int cm_server_port(const cm_server *s);
/* Serve `m` (not owned; it must outlive the server) as model `id`, prompting chats with template `tmpl`.
 * Only before cm_server_start. */
cm_status cm_server_add_model(cm_server *s, const char *id, const cm_model *m, const cm_tokenizer *tok,
                              cm_template_id tmpl);
/* Open the models' schedulers and answer requests. */
cm_status cm_server_start(cm_server *s);
/* Stop accepting connections, let in-flight requests finish for up to `grace_seconds`, cancel the rest
 * (streams get an error event), close every connection. */
void cm_server_shutdown(cm_server *s, double grace_seconds);
/* Shut down (grace 0) if not yet, flush and close the request log, free. */
void cm_server_close(cm_server *s);

#endif
