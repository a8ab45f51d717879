/* Pieces of the server shared between its files: the server's state (http.c owns its lifecycle), the
 * reply helpers every route uses, the request log, the arena routes and the embedded web pages. */
#ifndef CAMELID_SERVE_INTERNAL_H
#define CAMELID_SERVE_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/arena.h"
#include "camelid/serve.h"
#include "camelid/serve_api.h"
#include "camelid/serve_sched.h"
#include "camelid/status.h"
#include "camelid/strbuf.h"

#define MAX_MODELS 16
#define WAIT_SLICE_MS 100
#define SHUTDOWN_MESSAGE "the server is shutting down"

/* The request log: one row per API request in a SQLite table serve_requests. */
typedef struct serve_db serve_db;

typedef struct serve_db_row {
    double created; /* unix time */
    const char *route, *model, *finish;
    int status;
    int prompt_tokens, completion_tokens;
    double ttft_seconds, total_seconds;
    bool stream;
} serve_db_row;

cm_status serve_db_open(const char *path, serve_db **out);
/* Thread-safe. */
cm_status serve_db_log(serve_db *db, const serve_db_row *row);
void serve_db_close(serve_db *db);

typedef enum {
    ROUTE_HEALTH = 0,
    ROUTE_METRICS,
    ROUTE_MODELS,
    ROUTE_CHAT,
    ROUTE_COMPLETIONS,
    ROUTE_TOKENIZE,
    ROUTE_DETOKENIZE,
    ROUTE_PAGE,
    ROUTE_ARENA_BATTLES,
    ROUTE_ARENA_VOTE,
    ROUTE_ARENA_LEADERBOARD,
    ROUTE_OTHER,
    ROUTE_COUNT
} route_id;

#define N_CODES 10 /* statuses counted one by one in /metrics (http.c's status_codes) */

typedef struct {
    char *id;
    const cm_model *m;
    const cm_tokenizer *tok;
    cm_template_id tmpl;
    cm_sched *sched;
} served_model;

struct cm_server {
    cm_server_params p;
    struct MHD_Daemon *daemon;
    int port;
    served_model models[MAX_MODELS];
    int n_models;
    serve_db *db;
    cm_arena *arena;    /* battles and votes: the --db file, else memory */
    pthread_mutex_t mu; /* state, counters, id generator */
    int state;          /* 0 loading, 1 ready, 2 stopping */
    bool shut_down;
    uint64_t requests[ROUTE_COUNT][N_CODES + 1];
    uint64_t id_counter;
    double started_at;
};

/* One request while its headers and body come in. */
typedef struct {
    route_id route;
    bool post;
    char *body;
    size_t len, cap;
    bool too_big;
    double t_start;
    char arena_id[72]; /* ROUTE_ARENA_VOTE: the battle id from the path */
    char page[64];     /* ROUTE_PAGE: the asset's name */
} conn_ctx;

double srv_now(void); /* monotonic seconds */
void srv_log(cm_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int srv_state(cm_server *s);
void srv_count_request(cm_server *s, route_id r, int status);
/* prefix + 24 hex digits, unique per process */
void srv_make_id(cm_server *s, const char *prefix, char *out, size_t cap);
void srv_keep_alive(cm_server *s, struct MHD_Response *resp);
/* Queue a whole reply (`body` is taken over; NULL answers 500 out of memory) and count it. */
enum MHD_Result srv_reply(cm_server *s, struct MHD_Connection *c, route_id r, int status,
                          const char *content_type, char *body);
enum MHD_Result srv_reply_error(cm_server *s, struct MHD_Connection *c, route_id r, const cm_api_error *e);
enum MHD_Result srv_reply_simple_error(cm_server *s, struct MHD_Connection *c, route_id r, int status,
                                       const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
/* The answer to a job the scheduler refused (busy, shutting down, bad parameters). */
void srv_submit_error(cm_submit_result sr, cm_api_error *err);

/* sse.c: a streamed reply's bytes on their way out. Events are appended to `buf`; srv_reply_sse hands
 * them to libmicrohttpd and asks for more once all are sent. */
typedef struct {
    cm_strbuf buf;
    size_t off; /* bytes of buf already handed over */
    bool ended; /* the last event ([DONE]) is in buf */
} sse_out;

/* "data: JSON" (`json` is taken over; NULL marks the stream out of memory). */
void srv_sse_event(sse_out *o, char *json);
/* "data: [DONE]": the stream ends once it is sent. */
void srv_sse_done(sse_out *o);
/* An error event, then [DONE]. */
void srv_sse_error(sse_out *o, int status, const char *type, const char *message);
/* Queue a 200 event stream of `o`: whenever all of it is sent, `more(cls)` waits for news and appends
 * events (false when the client is gone, which ends the reply with an error). `done(cls)` runs when the
 * reply is over, or at once when it cannot be made. */
enum MHD_Result srv_reply_sse(cm_server *s, struct MHD_Connection *c, sse_out *o, bool (*more)(void *cls),
                              void (*done)(void *cls), void *cls);
/* For a stream's `done`: its final status (499 when it was cut before its end while all was well), counted
 * for route r. */
int srv_sse_finish(cm_server *s, route_id r, const sse_out *o, int status);

/* Has the peer closed or reset the connection? */
bool srv_client_gone(int fd);
int srv_connection_fd(struct MHD_Connection *c);
/* The served model called `id` (the first when id is NULL), or NULL with a 404 model_not_found in err. */
served_model *srv_find_model(cm_server *s, const char *id, cm_api_error *err);
/* The request's prompt tokens: chat messages through the model's template, or a completion's prompt. */
bool srv_build_prompt(served_model *sm, const cm_api_request *req, int32_t **ids, size_t *n,
                      cm_api_error *err);
/* "stop", "length", or NULL for a job that did not finish normally. */
const char *srv_finish_name(cm_finish f);
/* Sampling for a request: llama.cpp's server defaults overridden by its fields; without a seed, one
 * derived from the request id. */
cm_sampler_params srv_sampling(const cm_api_request *req, const char *id);
/* A chat's stop strings (the request's, then the template's) and the template's stop tokens. */
void srv_chat_stops(const served_model *sm, const cm_api_request *req, const char **stops, int *n_stops,
                    int32_t *stop_ids, int *n_stop_ids);
#define SRV_MAX_STOPS (CM_API_MAX_STOP + 8)

/* arena_http.c: POST /v1/arena/battles, POST /v1/arena/battles/{id}/vote, GET /v1/arena/leaderboard */
enum MHD_Result srv_arena_battle(cm_server *s, struct MHD_Connection *c, conn_ctx *cc);
enum MHD_Result srv_arena_vote(cm_server *s, struct MHD_Connection *c, conn_ctx *cc);
enum MHD_Result srv_arena_leaderboard(cm_server *s, struct MHD_Connection *c);

/* web.c: the pages (GET /, /arena, /leaderboard, /static/NAME) from the assets embedded at build time */
typedef struct serve_asset {
    const char *name; /* file name under src/serve/web */
    const unsigned char *data;
    size_t size;
} serve_asset;
extern const serve_asset serve_assets[];
extern const size_t serve_n_assets;
/* The asset a GET path names ("" when the path is no page), written into `name` (cap bytes). */
bool srv_page_for_path(const char *url, char *name, size_t cap);
enum MHD_Result srv_page(cm_server *s, struct MHD_Connection *c, const char *name);

#endif
