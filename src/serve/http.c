/* The HTTP side of `camelid serve` (serve.h) on libmicrohttpd: routing, authentication, body limits,
 * OpenAI requests turned into scheduler jobs, SSE streaming, metrics. One thread per connection: a handler
 * may block waiting for its job, polling its socket so that a client that leaves is noticed at once. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "camelid/serve.h"
#include "camelid/serve_api.h"
#include "camelid/serve_sched.h"
#include "serve/serve_internal.h"

static const char *route_names[ROUTE_COUNT] = {"/health",
                                               "/metrics",
                                               "/v1/models",
                                               "/v1/chat/completions",
                                               "/v1/completions",
                                               "/tokenize",
                                               "/detokenize",
                                               "/ (pages)",
                                               "/v1/arena/battles",
                                               "/v1/arena/battles/{id}/vote",
                                               "/v1/arena/leaderboard",
                                               "other"};
static const int status_codes[N_CODES] = {200, 400, 401, 404, 405, 409, 413, 500, 503, 504};

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void srv_log(cm_server *s, const char *fmt, ...) {
    if (!s->p.log) return;
    char line[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->p.log(s->p.log_user, line);
}

cm_server_params cm_server_defaults(void) {
    cm_server_params p = {0};
    p.host = "127.0.0.1";
    p.port = 8080;
    p.parallel = 4;
    p.threads = 1;
    p.queue_depth = 64;
    p.max_body = (size_t)1 << 20;
    p.timeout = 600;
    p.idle_timeout = 30;
    p.max_connections = 256;
    return p;
}

void srv_count_request(cm_server *s, route_id r, int status) {
    int k = N_CODES;
    for (int i = 0; i < N_CODES; i++)
        if (status_codes[i] == status) k = i;
    pthread_mutex_lock(&s->mu);
    s->requests[r][k]++;
    pthread_mutex_unlock(&s->mu);
}

int srv_state(cm_server *s) {
    pthread_mutex_lock(&s->mu);
    int st = s->state;
    pthread_mutex_unlock(&s->mu);
    return st;
}

/* "chatcmpl-" + 24 hex digits, unique per process and unpredictable enough for logs. */
void srv_make_id(cm_server *s, const char *prefix, char *out, size_t cap) {
    pthread_mutex_lock(&s->mu);
    uint64_t c = ++s->id_counter;
    pthread_mutex_unlock(&s->mu);
    uint64_t z = c * 0x9E3779B97F4A7C15ull ^ (uint64_t)time(NULL) ^ ((uint64_t)(srv_now() * 1e9) << 17);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    snprintf(out, cap, "%s%016llx%08llx", prefix, (unsigned long long)z,
             (unsigned long long)(c & 0xffffffffu));
}

/* ------------------------------------------------------------------------------------------ replies */

/* Tell clients how long an idle connection stays open, so that they do not reuse one the server is
 * closing (HTTP clients honour "Keep-Alive: timeout=N"). */
void srv_keep_alive(cm_server *s, struct MHD_Response *resp) {
    char v[32];
    snprintf(v, sizeof v, "timeout=%d", s->p.idle_timeout);
    MHD_add_response_header(resp, "Keep-Alive", v);
}

enum MHD_Result srv_reply(cm_server *s, struct MHD_Connection *c, route_id r, int status,
                          const char *content_type, char *body) {
    if (!body) {
        status = 500;
        content_type = "application/json";
        body = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,"
                      "\"code\":null}}");
        if (!body) return MHD_NO;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", content_type);
    srv_keep_alive(s, resp);
    if (status == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    srv_count_request(s, r, status);
    return ret;
}

enum MHD_Result srv_reply_error(cm_server *s, struct MHD_Connection *c, route_id r, const cm_api_error *e) {
    return srv_reply(s, c, r, e->status, "application/json", cm_api_error_json(e));
}

enum MHD_Result srv_reply_simple_error(cm_server *s, struct MHD_Connection *c, route_id r, int status,
                                       const char *type, const char *code, const char *fmt, ...) {
    cm_api_error e;
    cm_api_error_set(&e, status, type, code, NULL, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    return srv_reply_error(s, c, r, &e);
}

void srv_submit_error(cm_submit_result sr, cm_api_error *err) {
    if (sr == CM_SUBMIT_FULL)
        cm_api_error_set(err, 503, "server_error", NULL, NULL,
                         "The server is busy: every slot is taken and the wait queue is full; retry later");
    else if (sr == CM_SUBMIT_CLOSED)
        cm_api_error_set(err, 503, "server_error", NULL, NULL, SHUTDOWN_MESSAGE);
    else
        cm_api_error_set(err, 400, "invalid_request_error", NULL, NULL, "%s", cm_last_error());
}

/* Has the peer closed the connection (or reset it)? */
bool srv_client_gone(int fd) {
    if (fd < 0) return false;
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return true;
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

int srv_connection_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? (int)ci->connect_fd : -1;
}

/* ------------------------------------------------------------------------------- simple routes */

static enum MHD_Result handle_health(cm_server *s, struct MHD_Connection *c) {
    int st = srv_state(s);
    if (st == 0)
        return srv_reply(
            s, c, ROUTE_HEALTH, 503, "application/json",
            strdup(
                "{\"error\":{\"code\":503,\"message\":\"Loading model\",\"type\":\"unavailable_error\"}}"));
    if (st == 2)
        return srv_reply(
            s, c, ROUTE_HEALTH, 503, "application/json",
            strdup(
                "{\"error\":{\"code\":503,\"message\":\"Shutting down\",\"type\":\"unavailable_error\"}}"));
    return srv_reply(s, c, ROUTE_HEALTH, 200, "application/json", strdup("{\"status\":\"ok\"}"));
}

static enum MHD_Result handle_models(cm_server *s, struct MHD_Connection *c) {
    const char *ids[MAX_MODELS];
    for (int i = 0; i < s->n_models; i++) ids[i] = s->models[i].id;
    return srv_reply(s, c, ROUTE_MODELS, 200, "application/json",
                     cm_api_models_json(ids, (size_t)s->n_models, (long long)time(NULL)));
}

static enum MHD_Result handle_metrics(cm_server *s, struct MHD_Connection *c) {
    cm_strbuf b = {0};
    uint64_t req[ROUTE_COUNT][N_CODES + 1];
    pthread_mutex_lock(&s->mu);
    memcpy(req, s->requests, sizeof req);
    pthread_mutex_unlock(&s->mu);
    cm_strbuf_printf(&b, "# HELP camelid_requests_total HTTP requests answered, by route and status.\n"
                         "# TYPE camelid_requests_total counter\n");
    for (int r = 0; r < ROUTE_COUNT; r++)
        for (int k = 0; k <= N_CODES; k++)
            if (req[r][k])
                cm_strbuf_printf(&b, "camelid_requests_total{route=\"%s\",code=\"%s%d\"} %llu\n",
                                 route_names[r], k == N_CODES ? "other" : "",
                                 k == N_CODES ? 0 : status_codes[k], (unsigned long long)req[r][k]);
    static const struct {
        const char *name, *type, *help;
    } fams[] = {
        {"camelid_jobs_total", "counter", "Generation requests that reached a scheduler."},
        {"camelid_jobs_cancelled_total", "counter", "Generation requests cancelled (client gone, timeout)."},
        {"camelid_prompt_tokens_total", "counter", "Prompt tokens processed."},
        {"camelid_tokens_predicted_total", "counter", "Tokens generated."},
        {"camelid_prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s."},
        {"camelid_predicted_tokens_seconds", "gauge",
         "Average generation throughput in tokens/s (all slots)."},
        {"camelid_requests_deferred", "gauge", "Requests waiting in the queue."},
        {"camelid_requests_processing", "gauge", "Busy slots."},
        {"camelid_slots", "gauge", "Slots (--parallel)."},
        {"camelid_decode_batch_max", "gauge", "The most sequences decoded together in one forward so far."},
    };
    for (size_t f = 0; f < sizeof fams / sizeof *fams; f++) {
        cm_strbuf_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", fams[f].name, fams[f].help, fams[f].name,
                         fams[f].type);
        for (int i = 0; i < s->n_models; i++) {
            cm_sched_stats st = {0};
            if (s->models[i].sched) cm_sched_get_stats(s->models[i].sched, &st);
            double v = 0;
            switch (f) {
            case 0:
                v = (double)st.jobs_total;
                break;
            case 1:
                v = (double)st.jobs_cancelled;
                break;
            case 2:
                v = (double)st.prompt_tokens_total;
                break;
            case 3:
                v = (double)st.generated_tokens_total;
                break;
            case 4:
                v = st.prompt_seconds_total > 0 ? st.prompt_tokens_total / st.prompt_seconds_total : 0;
                break;
            case 5:
                v = st.decode_seconds_total > 0 ? st.generated_tokens_total / st.decode_seconds_total : 0;
                break;
            case 6:
                v = st.queued;
                break;
            case 7:
                v = st.busy;
                break;
            case 8:
                v = st.parallel;
                break;
            default:
                v = st.decode_batch_max;
                break;
            }
            cm_strbuf_printf(&b, "%s{model=\"%s\"} %.17g\n", fams[f].name, s->models[i].id, v);
        }
    }
    return srv_reply(s, c, ROUTE_METRICS, 200, "text/plain; version=0.0.4; charset=utf-8",
                     cm_strbuf_take(&b));
}

served_model *srv_find_model(cm_server *s, const char *id, cm_api_error *err) {
    if (!id) return &s->models[0];
    for (int i = 0; i < s->n_models; i++)
        if (!strcmp(s->models[i].id, id)) return &s->models[i];
    char show[96];
    size_t n = strlen(id);
    snprintf(show, sizeof show, "%.80s%s", id, n > 80 ? "..." : "");
    cm_api_error_set(err, 404, "invalid_request_error", "model_not_found", "model",
                     "The model `%s` does not exist (see GET /v1/models)", show);
    return NULL;
}

static enum MHD_Result handle_tokenize(cm_server *s, struct MHD_Connection *c, route_id r, conn_ctx *cc) {
    cm_api_request req;
    cm_api_error err;
    cm_api_kind kind = r == ROUTE_TOKENIZE ? CM_API_TOKENIZE : CM_API_DETOKENIZE;
    if (!cm_api_parse_request(kind, cc->body, cc->len, &req, &err)) return srv_reply_error(s, c, r, &err);
    served_model *sm = srv_find_model(s, req.model, &err);
    if (!sm) {
        cm_api_request_free(&req);
        return srv_reply_error(s, c, r, &err);
    }
    json_t *root = json_object();
    int status = 200;
    if (kind == CM_API_TOKENIZE) {
        int32_t *ids = NULL;
        size_t n = 0;
        bool bos = req.add_special && cm_tokenizer_add_bos(sm->tok) && cm_tokenizer_bos(sm->tok) >= 0;
        if (cm_tokenizer_encode(sm->tok, req.prompt, strlen(req.prompt), bos, false, &ids, &n) != CM_OK) {
            cm_api_error_set(&err, 400, "invalid_request_error", NULL, "content", "%s", cm_last_error());
            status = 400;
        } else {
            json_t *arr = json_array();
            for (size_t i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
            json_object_set_new(root, "tokens", arr);
        }
        free(ids);
    } else {
        int vocab = cm_tokenizer_vocab_size(sm->tok);
        for (size_t i = 0; i < req.n_tokens && status == 200; i++) {
            if (req.tokens[i] >= vocab) {
                cm_api_error_set(&err, 400, "invalid_request_error", NULL, "tokens",
                                 "token id %d is outside the vocabulary (0..%d)", req.tokens[i], vocab - 1);
                status = 400;
            }
        }
        char *text = NULL;
        size_t len = 0;
        if (status == 200 && cm_tokenizer_decode(sm->tok, req.tokens, req.n_tokens, &text, &len) != CM_OK) {
            cm_api_error_set(&err, 500, "server_error", NULL, NULL, "%s", cm_last_error());
            status = 500;
        }
        if (status == 200) {
            size_t cl;
            char *clean = cm_utf8_sanitize(text, len, &cl);
            json_object_set_new(root, "content", clean ? json_stringn(clean, cl) : json_null());
            free(clean);
        }
        free(text);
    }
    cm_api_request_free(&req);
    if (status != 200) {
        json_decref(root);
        return srv_reply_error(s, c, r, &err);
    }
    char *body = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return srv_reply(s, c, r, 200, "application/json", body);
}

/* -------------------------------------------------------------------------------- completions */

/* A generation request from the moment it has a job until its srv_reply is sent. */
typedef struct {
    cm_server *s;
    served_model *sm;
    route_id route;
    cm_api_kind kind;
    cm_job *job;
    int fd;
    double t_start, deadline;
    char id[48];
    long long created;
    bool include_usage;
    sse_out out; /* streaming */
    /* results */
    int n_prompt, n_generated;
    const char *finish;
    int status;
} gen_ctx;

const char *srv_finish_name(cm_finish f) {
    return f == CM_FINISH_STOP ? "stop" : f == CM_FINISH_LENGTH ? "length" : NULL;
}

static void gen_log(gen_ctx *g, bool stream) {
    double total = srv_now() - g->t_start, ttft = g->job ? cm_job_ttft(g->job) : -1;
    srv_log(g->s, "%s %s %d prompt=%d completion=%d finish=%s ttft=%.3fs total=%.3fs%s",
            route_names[g->route], g->sm->id, g->status, g->n_prompt, g->n_generated,
            g->finish ? g->finish : "-", ttft, total, stream ? " stream" : "");
    serve_db_row row = {.created = (double)time(NULL),
                        .route = route_names[g->route],
                        .model = g->sm->id,
                        .finish = g->finish,
                        .status = g->status,
                        .prompt_tokens = g->n_prompt,
                        .completion_tokens = g->n_generated,
                        .ttft_seconds = ttft,
                        .total_seconds = total,
                        .stream = stream};
    if (serve_db_log(g->s->db, &row) != CM_OK) srv_log(g->s, "%s", cm_last_error());
}

typedef enum { WAIT_UPDATE, WAIT_GONE, WAIT_TIMEOUT } wait_result;

static wait_result gen_wait(gen_ctx *g, cm_job_update *u) {
    for (;;) {
        /* the socket is checked before every update too: while tokens keep coming the wait never times
         * out, and a client that left must free its slot at once, not when the srv_reply is done */
        if (srv_client_gone(g->fd)) return WAIT_GONE;
        if (cm_job_wait(g->job, WAIT_SLICE_MS, u)) return WAIT_UPDATE;
        if (srv_now() > g->deadline) return WAIT_TIMEOUT;
    }
}

/* The next events of a stream: its job's new text, or how it ended. False when the client is gone. */
static bool stream_more(void *cls) {
    gen_ctx *g = cls;
    cm_job_update u;
    wait_result w = gen_wait(g, &u);
    if (w == WAIT_GONE) {
        g->status = 499; /* client closed request */
        cm_job_cancel(g->job);
        return false;
    }
    if (w == WAIT_TIMEOUT) {
        cm_job_cancel(g->job);
        g->status = 504;
        srv_sse_error(&g->out, 504, "timeout_error", "the request took longer than the server's --timeout");
        return true;
    }
    g->n_prompt = u.n_prompt;
    g->n_generated = u.n_generated;
    if (u.text)
        srv_sse_event(&g->out, cm_api_chunk_json(g->kind, g->id, g->created, g->sm->id, u.text, u.len, false,
                                                 NULL, NULL, g->include_usage));
    free(u.text);
    if (u.finish == CM_FINISH_NONE) return true;
    g->finish = srv_finish_name(u.finish);
    if (!g->finish) {
        g->status = 500;
        srv_sse_error(&g->out, u.finish == CM_FINISH_CANCELLED ? 503 : 500, "server_error",
                      u.error[0] ? u.error : "the request was cancelled");
        return true;
    }
    srv_sse_event(&g->out, cm_api_chunk_json(g->kind, g->id, g->created, g->sm->id, "", 0, false, g->finish,
                                             NULL, g->include_usage));
    if (g->include_usage) {
        cm_api_usage usage = {u.n_prompt, u.n_generated};
        srv_sse_event(&g->out, cm_api_chunk_json(g->kind, g->id, g->created, g->sm->id, NULL, 0, false, NULL,
                                                 &usage, false));
    }
    srv_sse_done(&g->out);
    return true;
}

static void stream_free(void *cls) {
    gen_ctx *g = cls;
    g->status = srv_sse_finish(g->s, g->route, &g->out, g->status);
    gen_log(g, true);
    cm_job_release(g->job);
    free(g->out.buf.buf);
    free(g);
}

/* Tokens of the request's prompt: the chat rendered through the model's template, or the completion's
 * text encoded as `camelid generate` encodes a prompt (BOS first when the tokenizer adds one). */
bool srv_build_prompt(served_model *sm, const cm_api_request *req, int32_t **ids, size_t *n,
                      cm_api_error *err) {
    *ids = NULL;
    *n = 0;
    if (req->kind == CM_API_CHAT || req->kind == CM_API_ARENA_BATTLE) {
        const char *param = req->kind == CM_API_CHAT ? "messages" : "prompt";
        cm_chat_rendered r;
        if (cm_chat_render(sm->tmpl, req->messages, req->n_messages, true, &r) != CM_OK) {
            cm_chat_rendered_free(&r);
            cm_api_error_set(err, 400, "invalid_request_error", NULL, param, "%s", cm_last_error());
            return false;
        }
        cm_status st = cm_chat_tokenize(&r, sm->tok, ids, n);
        cm_chat_rendered_free(&r);
        if (st != CM_OK) {
            cm_api_error_set(err, 400, "invalid_request_error", NULL, param, "%s", cm_last_error());
            return false;
        }
    } else if (req->has_tokens) {
        int vocab = sm->m->cfg.vocab_size;
        for (size_t i = 0; i < req->n_tokens; i++) {
            if (req->tokens[i] >= vocab) {
                cm_api_error_set(err, 400, "invalid_request_error", NULL, "prompt",
                                 "token id %d is outside the vocabulary (0..%d)", req->tokens[i], vocab - 1);
                return false;
            }
        }
        *ids = malloc((req->n_tokens ? req->n_tokens : 1) * sizeof **ids);
        if (!*ids) {
            cm_api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
            return false;
        }
        memcpy(*ids, req->tokens, req->n_tokens * sizeof **ids);
        *n = req->n_tokens;
    } else {
        bool bos = cm_tokenizer_add_bos(sm->tok) && cm_tokenizer_bos(sm->tok) >= 0;
        if (cm_tokenizer_encode(sm->tok, req->prompt, strlen(req->prompt), bos, false, ids, n) != CM_OK) {
            cm_api_error_set(err, 400, "invalid_request_error", NULL, "prompt", "%s", cm_last_error());
            return false;
        }
    }
    if (*n == 0) {
        free(*ids);
        *ids = NULL;
        cm_api_error_set(err, 400, "invalid_request_error", NULL,
                         req->kind == CM_API_CHAT ? "messages" : "prompt",
                         "the prompt is empty and the tokenizer has no BOS token to start from");
        return false;
    }
    return true;
}

cm_sampler_params srv_sampling(const cm_api_request *req, const char *id) {
    /* llama.cpp's server defaults, overridden by the request's fields */
    cm_sampler_params sp = cm_sampler_defaults();
    if (req->has_temperature) sp.temperature = (float)req->temperature;
    if (req->has_top_p) sp.top_p = (float)req->top_p;
    if (req->has_top_k) sp.top_k = req->top_k;
    if (req->has_min_p) sp.min_p = (float)req->min_p;
    if (req->has_seed) {
        sp.seed = req->seed;
    } else {
        uint64_t z = 0;
        for (const char *p = id; *p; p++) z = z * 1099511628211ull ^ (unsigned char)*p;
        sp.seed = z;
    }
    return sp;
}

void srv_chat_stops(const served_model *sm, const cm_api_request *req, const char **stops, int *n_stops,
                    int32_t *stop_ids, int *n_stop_ids) {
    int n = 0;
    for (int i = 0; i < req->n_stop; i++) stops[n++] = req->stop[i];
    const char *const *ts;
    size_t nt = cm_template_stop_strings(sm->tmpl, &ts);
    for (size_t i = 0; i < nt && n < SRV_MAX_STOPS; i++) stops[n++] = ts[i];
    *n_stops = n;
    *n_stop_ids = (int)cm_template_stop_tokens(sm->tmpl, sm->tok, stop_ids, 8);
}

static enum MHD_Result handle_generate(cm_server *s, struct MHD_Connection *c, route_id r, conn_ctx *cc) {
    cm_api_kind kind = r == ROUTE_CHAT ? CM_API_CHAT : CM_API_COMPLETION;
    cm_api_request req;
    cm_api_error err;
    if (!cm_api_parse_request(kind, cc->body, cc->len, &req, &err)) return srv_reply_error(s, c, r, &err);
    served_model *sm = srv_find_model(s, req.model, &err);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (!sm || !srv_build_prompt(sm, &req, &ids, &n_ids, &err)) {
        cm_api_request_free(&req);
        return srv_reply_error(s, c, r, &err);
    }
    int ctx = cm_sched_ctx(sm->sched);
    int max_tokens = req.max_tokens >= 0 ? req.max_tokens : kind == CM_API_COMPLETION ? 16 : -1;
    const char *what = kind == CM_API_CHAT ? "messages" : "prompt";
    if (n_ids >= (size_t)ctx || (max_tokens > 0 && n_ids + (size_t)max_tokens > (size_t)ctx)) {
        if (max_tokens > 0)
            cm_api_error_set(&err, 400, "invalid_request_error", "context_length_exceeded", what,
                             "This model's maximum context length is %d tokens. However, you requested %zu "
                             "tokens (%zu in the %s, %d in the completion).",
                             ctx, n_ids + (size_t)max_tokens, n_ids, what, max_tokens);
        else
            cm_api_error_set(&err, 400, "invalid_request_error", "context_length_exceeded", what,
                             "This model's maximum context length is %d tokens. However, your %s resulted in "
                             "%zu tokens (at least one more is needed for the completion).",
                             ctx, what, n_ids);
        free(ids);
        cm_api_request_free(&req);
        return srv_reply_error(s, c, r, &err);
    }
    /* sampling: llama.cpp's server defaults, overridden by the request's fields */
    char id[48];
    srv_make_id(s, kind == CM_API_CHAT ? "chatcmpl-" : "cmpl-", id, sizeof id);
    cm_sampler_params sp = srv_sampling(&req, id);
    const char *stops[SRV_MAX_STOPS];
    int n_stops = 0, n_stop_ids = 0;
    int32_t stop_ids[8];
    if (kind == CM_API_CHAT) {
        srv_chat_stops(sm, &req, stops, &n_stops, stop_ids, &n_stop_ids);
    } else {
        for (int i = 0; i < req.n_stop; i++) stops[n_stops++] = req.stop[i];
    }
    cm_job_params jp = {.prompt = ids,
                        .n_prompt = (int)n_ids,
                        .max_tokens = max_tokens,
                        .sampling = sp,
                        .stop = stops,
                        .n_stop = n_stops,
                        .stop_tokens = stop_ids,
                        .n_stop_tokens = n_stop_ids,
                        .trim_leading = kind == CM_API_CHAT};
    cm_job *job = NULL;
    cm_submit_result sr = cm_sched_submit(sm->sched, &jp, &job);
    free(ids);
    bool stream = req.stream, include_usage = req.include_usage;
    cm_api_request_free(&req);
    if (sr != CM_SUBMIT_OK) {
        srv_submit_error(sr, &err);
        return srv_reply_error(s, c, r, &err);
    }

    /* from here the connection may stay quiet while the job queues and runs */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)s->p.timeout + 5u);
    gen_ctx *g = calloc(1, sizeof *g);
    if (!g) {
        cm_job_release(job);
        return srv_reply(s, c, r, 500, "application/json", NULL);
    }
    g->s = s;
    g->sm = sm;
    g->route = r;
    g->kind = kind;
    g->job = job;
    g->fd = srv_connection_fd(c);
    g->t_start = cc->t_start;
    g->deadline = cc->t_start + s->p.timeout;
    snprintf(g->id, sizeof g->id, "%s", id);
    g->created = (long long)time(NULL);
    g->include_usage = include_usage;
    g->status = 200;
    g->n_prompt = (int)n_ids;

    if (stream) {
        if (kind == CM_API_CHAT)
            srv_sse_event(&g->out, cm_api_chunk_json(kind, g->id, g->created, sm->id, "", 0, true, NULL, NULL,
                                                     include_usage));
        return srv_reply_sse(s, c, &g->out, stream_more, stream_free, g);
    }

    cm_strbuf text = {0};
    cm_job_update u;
    enum MHD_Result ret = MHD_YES;
    for (;;) {
        wait_result w = gen_wait(g, &u);
        if (w == WAIT_GONE) {
            g->status = 499;
            cm_job_cancel(job);
            ret = MHD_NO;
            break;
        }
        if (w == WAIT_TIMEOUT) {
            cm_job_cancel(job);
            g->status = 504;
            ret = srv_reply_simple_error(s, c, r, 504, "timeout_error", NULL,
                                         "the request took longer than the server's --timeout of %d s",
                                         s->p.timeout);
            break;
        }
        if (u.text) cm_strbuf_append(&text, u.text, u.len);
        free(u.text);
        g->n_prompt = u.n_prompt;
        g->n_generated = u.n_generated;
        if (u.finish == CM_FINISH_NONE) continue;
        g->finish = srv_finish_name(u.finish);
        if (!g->finish || text.failed) {
            g->status = u.finish == CM_FINISH_CANCELLED ? 503 : 500;
            ret = srv_reply_simple_error(s, c, r, g->status, "server_error", NULL, "%s",
                                         text.failed  ? "out of memory"
                                         : u.error[0] ? u.error
                                                      : "the request was cancelled");
            break;
        }
        cm_api_usage usage = {u.n_prompt, u.n_generated};
        ret = srv_reply(s, c, r, 200, "application/json",
                        cm_api_response_json(kind, g->id, g->created, sm->id, text.buf ? text.buf : "",
                                             text.len, g->finish, &usage));
        break;
    }
    gen_log(g, false);
    free(text.buf);
    cm_job_release(job);
    free(g);
    return ret;
}

/* ------------------------------------------------------------------------------------- dispatch */

/* The route a path names; the arena's vote path carries the battle id, a page path the asset's name. */
static route_id match_route(const char *url, bool *post_route, conn_ctx *cc) {
    static const struct {
        const char *path;
        route_id r;
        bool post;
    } table[] = {
        {"/health", ROUTE_HEALTH, false},
        {"/v1/health", ROUTE_HEALTH, false},
        {"/metrics", ROUTE_METRICS, false},
        {"/v1/models", ROUTE_MODELS, false},
        {"/models", ROUTE_MODELS, false},
        {"/v1/chat/completions", ROUTE_CHAT, true},
        {"/chat/completions", ROUTE_CHAT, true},
        {"/v1/completions", ROUTE_COMPLETIONS, true},
        {"/completions", ROUTE_COMPLETIONS, true},
        {"/tokenize", ROUTE_TOKENIZE, true},
        {"/detokenize", ROUTE_DETOKENIZE, true},
        {"/v1/arena/battles", ROUTE_ARENA_BATTLES, true},
        {"/v1/arena/leaderboard", ROUTE_ARENA_LEADERBOARD, false},
    };
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
        if (!strcmp(url, table[i].path)) {
            *post_route = table[i].post;
            return table[i].r;
        }
    }
    *post_route = false;
    static const char vote_prefix[] = "/v1/arena/battles/", vote_suffix[] = "/vote";
    size_t n = strlen(url), np = sizeof vote_prefix - 1, ns = sizeof vote_suffix - 1;
    if (n > np + ns && !strncmp(url, vote_prefix, np) && !strcmp(url + n - ns, vote_suffix)) {
        /* any id goes to the vote handler, which answers 404 for one it does not know */
        size_t len = n - np - ns;
        snprintf(cc->arena_id, sizeof cc->arena_id, "%.*s", (int)(len < sizeof cc->arena_id ? len : 0),
                 url + np);
        *post_route = true;
        return ROUTE_ARENA_VOTE;
    }
    if (srv_page_for_path(url, cc->page, sizeof cc->page)) return ROUTE_PAGE;
    return ROUTE_OTHER;
}

static bool authorized(cm_server *s, struct MHD_Connection *c) {
    const char *key = s->p.api_key;
    if (!key || !*key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    while (*h == ' ') h++;
    size_t a = strlen(h), b = strlen(key);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < a && i < b; i++) diff |= (unsigned)(h[i] ^ key[i]);
    return diff == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    cm_server *s = cls;
    (void)version;
    conn_ctx *cc = *con_cls;
    if (!cc) {
        /* the headers are in: decide what can be decided before reading a body */
        cc = calloc(1, sizeof *cc);
        if (!cc) return MHD_NO;
        *con_cls = cc;
        cc->t_start = srv_now();
        bool post_route;
        cc->route = match_route(url, &post_route, cc);
        cc->post = !strcmp(method, "POST");
        route_id r = cc->route;
        if (r == ROUTE_OTHER)
            return srv_reply_simple_error(s, c, r, 404, "invalid_request_error", "not_found",
                                          "Unknown request URL: %s %.200s", method, url);
        if (post_route != cc->post && !(!post_route && !strcmp(method, "HEAD")))
            return srv_reply_simple_error(s, c, r, 405, "invalid_request_error", "method_not_allowed",
                                          "%s %s is not allowed; use %s", method, url,
                                          post_route ? "POST" : "GET");
        /* pages are public (a browser cannot send the key when it navigates); their scripts send it */
        if (r != ROUTE_HEALTH && r != ROUTE_PAGE && !authorized(s, c))
            return srv_reply_simple_error(
                s, c, r, 401, "invalid_request_error", "invalid_api_key",
                "Incorrect API key provided. Send it as \"Authorization: Bearer KEY\".");
        if (cc->post) {
            const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl) {
                char *end;
                errno = 0;
                unsigned long long n = strtoull(cl, &end, 10);
                if (errno || end == cl || n > s->p.max_body)
                    return srv_reply_simple_error(s, c, r, 413, "invalid_request_error", "request_too_large",
                                                  "The request body is %s bytes; the limit is %zu", cl,
                                                  s->p.max_body);
            }
            return MHD_YES; /* read the body */
        }
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (cc->too_big || cc->len + n > s->p.max_body) {
            cc->too_big = true;
            return MHD_NO; /* a chunked body past the limit: drop the connection */
        }
        if (cc->len + n + 1 > cc->cap) {
            size_t cap = (cc->len + n + 1) * 2;
            if (cap > s->p.max_body + 1) cap = s->p.max_body + 1;
            char *b = realloc(cc->body, cap);
            if (!b) return MHD_NO;
            cc->body = b;
            cc->cap = cap;
        }
        memcpy(cc->body + cc->len, upload_data, n);
        cc->len += n;
        cc->body[cc->len] = 0;
        return MHD_YES;
    }
    route_id r = cc->route;
    int st = srv_state(s);
    if (r == ROUTE_HEALTH) return handle_health(s, c);
    if (r == ROUTE_PAGE) return srv_page(s, c, cc->page);
    if (st != 1)
        return srv_reply_simple_error(s, c, r, 503, "server_error", NULL, "%s",
                                      st == 0 ? "Loading model" : SHUTDOWN_MESSAGE);
    switch (r) {
    case ROUTE_METRICS:
        return handle_metrics(s, c);
    case ROUTE_MODELS:
        return handle_models(s, c);
    case ROUTE_TOKENIZE:
    case ROUTE_DETOKENIZE:
        return handle_tokenize(s, c, r, cc);
    case ROUTE_CHAT:
    case ROUTE_COMPLETIONS:
        return handle_generate(s, c, r, cc);
    case ROUTE_ARENA_BATTLES:
        return srv_arena_battle(s, c, cc);
    case ROUTE_ARENA_VOTE:
        return srv_arena_vote(s, c, cc);
    case ROUTE_ARENA_LEADERBOARD:
        return srv_arena_leaderboard(s, c);
    default:
        return MHD_NO;
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    conn_ctx *cc = *con_cls;
    if (!cc) return;
    free(cc->body);
    free(cc);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    cm_server *s = cls;
    if (!s->p.log) return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && line[n - 1] == '\n') line[--n] = 0;
    s->p.log(s->p.log_user, line);
}

/* ------------------------------------------------------------------------------------- lifecycle */

cm_status cm_server_open(const cm_server_params *p, cm_server **out) {
    *out = NULL;
    if (p->parallel < 1 || p->queue_depth < 0 || p->timeout < 1 || p->idle_timeout < 1 ||
        p->max_connections < 1 || p->port < 0 || p->port > 65535 || p->max_body < 1)
        return cm_error(CM_ERR_ARG, "serve: bad server parameters");
    cm_server *s = calloc(1, sizeof *s);
    if (!s) return cm_error(CM_ERR_NOMEM, "out of memory");
    s->p = *p;
    if (!s->p.host) s->p.host = "127.0.0.1";
    pthread_mutex_init(&s->mu, NULL);
    s->started_at = srv_now();
    cm_status st = CM_OK;
    if (p->db_path && (st = serve_db_open(p->db_path, &s->db)) != CM_OK) {
        cm_server_close(s);
        return st;
    }
    /* the arena keeps its votes in the same file (its own connection and tables), else in memory */
    if ((st = cm_arena_open(p->db_path, false, &s->arena)) != CM_OK) {
        cm_server_close(s);
        return st;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    char port[16];
    snprintf(port, sizeof port, "%d", p->port);
    int gai = getaddrinfo(s->p.host, port, &hints, &ai);
    if (gai != 0 || !ai) {
        cm_server_close(s);
        return cm_error(CM_ERR_ARG, "serve: cannot resolve host \"%s\": %s", p->host, gai_strerror(gai));
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    s->daemon =
        MHD_start_daemon(flags, (uint16_t)p->port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER,
                         mhd_log, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_TIMEOUT,
                         (unsigned)p->idle_timeout, MHD_OPTION_CONNECTION_LIMIT, (unsigned)p->max_connections,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_THREAD_STACK_SIZE,
                         (size_t)1 << 20, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        int e = errno;
        cm_server_close(s);
        return cm_error(CM_ERR_IO, "serve: cannot listen on %s port %d: %s", p->host, p->port,
                        e ? strerror(e) : "libmicrohttpd refused to start");
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : p->port;
    *out = s;
    return CM_OK;
}

int cm_server_port(const cm_server *s) {
    return s->port;
}

cm_status cm_server_add_model(cm_server *s, const char *id, const cm_model *m, const cm_tokenizer *tok,
                              cm_template_id tmpl) {
    if (srv_state(s) != 0) return cm_error(CM_ERR_ARG, "serve: models are added before the server starts");
    if (s->n_models == MAX_MODELS) return cm_error(CM_ERR_ARG, "serve: at most %d models", MAX_MODELS);
    for (int i = 0; i < s->n_models; i++)
        if (!strcmp(s->models[i].id, id))
            return cm_error(CM_ERR_ARG, "serve: two models are called \"%s\" (use --alias)", id);
    served_model *sm = &s->models[s->n_models];
    if (!(sm->id = strdup(id))) return cm_error(CM_ERR_NOMEM, "out of memory");
    sm->m = m;
    sm->tok = tok;
    sm->tmpl = tmpl;
    s->n_models++;
    return CM_OK;
}

cm_status cm_server_start(cm_server *s) {
    if (s->n_models == 0) return cm_error(CM_ERR_ARG, "serve: no model to serve");
    for (int i = 0; i < s->n_models; i++) {
        served_model *sm = &s->models[i];
        int ctx = s->p.ctx > 0 ? s->p.ctx : sm->m->cfg.seq_len < 4096 ? sm->m->cfg.seq_len : 4096;
        cm_sched_params sp = {s->p.parallel, ctx, s->p.threads, s->p.queue_depth};
        CM_TRY(cm_sched_open(sm->m, sm->tok, &sp, &sm->sched));
    }
    pthread_mutex_lock(&s->mu);
    s->state = 1;
    pthread_mutex_unlock(&s->mu);
    return CM_OK;
}

void cm_server_shutdown(cm_server *s, double grace_seconds) {
    if (s->shut_down) return;
    s->shut_down = true;
    if (s->daemon) {
        MHD_socket ls = MHD_quiesce_daemon(s->daemon);
        if (ls != MHD_INVALID_SOCKET) close(ls);
    }
    /* let what runs finish, then cancel the rest */
    double until = srv_now() + grace_seconds;
    for (;;) {
        int pending = 0;
        for (int i = 0; i < s->n_models; i++) {
            cm_sched_stats st;
            if (!s->models[i].sched) continue;
            cm_sched_get_stats(s->models[i].sched, &st);
            pending += st.busy + st.queued;
        }
        if (pending == 0 || srv_now() >= until) break;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&s->mu);
    s->state = 2;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_models; i++) cm_sched_stop(s->models[i].sched);
    if (s->daemon) {
        MHD_stop_daemon(s->daemon);
        s->daemon = NULL;
    }
}

void cm_server_close(cm_server *s) {
    if (!s) return;
    cm_server_shutdown(s, 0);
    for (int i = 0; i < s->n_models; i++) {
        cm_sched_close(s->models[i].sched);
        free(s->models[i].id);
    }
    serve_db_close(s->db);
    cm_arena_close(s->arena);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
