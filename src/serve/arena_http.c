/* The arena's HTTP routes (serve_internal.h): a battle sends one prompt to two different served models
 * chosen at random, generating both answers at once (each model's own scheduler) and streaming them side by
 * side; a vote is stored (arena.h) before it is acknowledged; the leaderboard is the ratings of all votes.
 *
 * POST /v1/arena/battles {"prompt", "system"?, "max_tokens"?, "temperature"?, "top_p"?, "seed"?, "stream"?}
 *   -> {"battle_id", "a", "b", "finish_reason": {"a", "b"}}; streamed, SSE events {"battle_id", "a", "b"}
 *   carrying each side's new text (either may be ""), the last one with "finish_reason", then [DONE].
 * POST /v1/arena/battles/{id}/vote {"winner": "a"|"b"|"tie"|"bothbad"}
 *   -> {"battle_id", "winner", "model_a", "model_b"}; 404 unknown battle, 409 a second vote.
 * GET /v1/arena/leaderboard -> elo.h's leaderboard JSON. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "serve/serve_internal.h"

#define ARENA_DEFAULT_MAX_TOKENS 512

/* One battle from its jobs' submission until its reply is done. */
typedef struct {
    cm_server *s;
    served_model *sm[2];
    cm_job *job[2];
    bool done[2];
    const char *finish[2];
    cm_strbuf text[2];
    int n_prompt[2], n_generated[2];
    char id[48];
    int fd;
    double t_start, deadline;
    bool stream;
    sse_out out; /* streaming */
    int status;
    char error[256];
} duel;

typedef enum { DUEL_UPDATE, DUEL_GONE, DUEL_TIMEOUT } duel_wait_result;

/* Take one job update: its text, and whether (and how) it ended. Returns false when the job failed. */
static bool take_update(duel *d, int k, cm_job_update *u, cm_strbuf *delta) {
    if (u->text) {
        cm_strbuf_append(&d->text[k], u->text, u->len);
        cm_strbuf_append(&delta[k], u->text, u->len);
    }
    free(u->text);
    u->text = NULL;
    d->n_prompt[k] = u->n_prompt;
    d->n_generated[k] = u->n_generated;
    if (u->finish == CM_FINISH_NONE) return true;
    d->done[k] = true;
    d->finish[k] = srv_finish_name(u->finish);
    if (d->finish[k]) return true;
    snprintf(d->error, sizeof d->error, "%s", u->error[0] ? u->error : "the request was cancelled");
    return false;
}

/* Wait for news from either side; `delta` gets each side's new text. */
static duel_wait_result duel_wait(duel *d, cm_strbuf *delta, bool *failed) {
    for (;;) {
        if (srv_client_gone(d->fd)) return DUEL_GONE;
        bool any = false;
        for (int k = 0; k < 2; k++) {
            cm_job_update u;
            if (!d->done[k] && cm_job_wait(d->job[k], 0, &u)) {
                any = true;
                if (!take_update(d, k, &u, delta)) *failed = true;
            }
        }
        if (any) return DUEL_UPDATE;
        /* nothing yet: sleep on one side briefly (the other is looked at again within 20 ms) */
        int k = d->done[0] ? 1 : 0;
        cm_job_update u;
        if (cm_job_wait(d->job[k], 20, &u)) {
            if (!take_update(d, k, &u, delta)) *failed = true;
            return DUEL_UPDATE;
        }
        if (srv_now() > d->deadline) return DUEL_TIMEOUT;
    }
}

static void duel_log(duel *d) {
    double total = srv_now() - d->t_start;
    char models[2 * 96];
    snprintf(models, sizeof models, "%s vs %s", d->sm[0]->id, d->sm[1]->id);
    srv_log(d->s, "/v1/arena/battles %s %s %d prompt=%d/%d completion=%d/%d finish=%s/%s total=%.3fs%s",
            d->id, models, d->status, d->n_prompt[0], d->n_prompt[1], d->n_generated[0], d->n_generated[1],
            d->finish[0] ? d->finish[0] : "-", d->finish[1] ? d->finish[1] : "-", total,
            d->stream ? " stream" : "");
    serve_db_row row = {.created = (double)time(NULL),
                        .route = "/v1/arena/battles",
                        .model = models,
                        .finish = d->finish[0] && d->finish[1] ? "stop" : NULL,
                        .status = d->status,
                        .prompt_tokens = d->n_prompt[0] + d->n_prompt[1],
                        .completion_tokens = d->n_generated[0] + d->n_generated[1],
                        .ttft_seconds = -1,
                        .total_seconds = total,
                        .stream = d->stream};
    if (serve_db_log(d->s->db, &row) != CM_OK) srv_log(d->s, "%s", cm_last_error());
}

/* Both answers are in: keep them with the battle. */
static void duel_save(duel *d) {
    if (cm_arena_set_answers(d->s->arena, d->id, d->text[0].buf ? d->text[0].buf : "",
                             d->text[1].buf ? d->text[1].buf : "") != CM_OK)
        srv_log(d->s, "%s", cm_last_error());
}

static void duel_free(duel *d) {
    for (int k = 0; k < 2; k++) {
        if (d->job[k]) cm_job_release(d->job[k]);
        free(d->text[k].buf);
    }
    free(d->out.buf.buf);
    free(d);
}

static json_t *text_json(const char *s, size_t len) {
    size_t n;
    char *clean = cm_utf8_sanitize(s ? s : "", s ? len : 0, &n);
    json_t *v = clean ? json_stringn(clean, n) : NULL;
    free(clean);
    return v;
}

/* {"battle_id", "a", "b"[, "finish_reason": {"a", "b"}]} */
static char *duel_json(const duel *d, const cm_strbuf *ab, bool with_finish) {
    json_t *o = json_object();
    json_object_set_new(o, "battle_id", json_string(d->id));
    json_object_set_new(o, "a", text_json(ab[0].buf, ab[0].len));
    json_object_set_new(o, "b", text_json(ab[1].buf, ab[1].len));
    if (with_finish) {
        json_t *f = json_object();
        json_object_set_new(f, "a", json_string(d->finish[0] ? d->finish[0] : "stop"));
        json_object_set_new(f, "b", json_string(d->finish[1] ? d->finish[1] : "stop"));
        json_object_set_new(o, "finish_reason", f);
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static void cancel_both(duel *d) {
    for (int k = 0; k < 2; k++)
        if (!d->done[k]) cm_job_cancel(d->job[k]);
}

/* The next events of a streamed battle: both sides' new text, or how it ended. False when the client is
 * gone. */
static bool duel_more(void *cls) {
    duel *d = cls;
    cm_strbuf delta[2] = {{0}, {0}};
    bool failed = false, present = true;
    duel_wait_result w = duel_wait(d, delta, &failed);
    if (w == DUEL_GONE) {
        d->status = 499;
        cancel_both(d);
        present = false;
    } else if (w == DUEL_TIMEOUT) {
        cancel_both(d);
        d->status = 504;
        srv_sse_error(&d->out, 504, "timeout_error", "the battle took longer than the server's --timeout");
    } else if (failed) {
        cancel_both(d);
        d->status = 500;
        srv_sse_error(&d->out, 500, "server_error", d->error);
    } else {
        bool finished = d->done[0] && d->done[1];
        if (delta[0].len || delta[1].len || finished) srv_sse_event(&d->out, duel_json(d, delta, finished));
        if (finished) {
            duel_save(d);
            srv_sse_done(&d->out);
        }
    }
    free(delta[0].buf);
    free(delta[1].buf);
    return present;
}

static void duel_stream_free(void *cls) {
    duel *d = cls;
    d->status = srv_sse_finish(d->s, ROUTE_ARENA_BATTLES, &d->out, d->status);
    duel_log(d);
    duel_free(d);
}

/* Submit side k's job: the prompt through its model's template, its stops, the shared sampling. */
static bool submit_side(cm_server *s, duel *d, int k, const cm_api_request *req, int max_tokens,
                        cm_api_error *err) {
    served_model *sm = d->sm[k];
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (!srv_build_prompt(sm, req, &ids, &n_ids, err)) return false;
    int ctx = cm_sched_ctx(sm->sched);
    if (n_ids >= (size_t)ctx) {
        cm_api_error_set(err, 400, "invalid_request_error", "context_length_exceeded", "prompt",
                         "The prompt is %zu tokens for one of the models, whose context is %d tokens", n_ids,
                         ctx);
        free(ids);
        return false;
    }
    /* an arena prompt gets as much of the answer as the context holds, up to max_tokens */
    int room = ctx - (int)n_ids;
    int n_new = max_tokens < room ? max_tokens : room;
    const char *stops[SRV_MAX_STOPS];
    int n_stops = 0, n_stop_ids = 0;
    int32_t stop_ids[8];
    srv_chat_stops(sm, req, stops, &n_stops, stop_ids, &n_stop_ids);
    cm_job_params jp = {.prompt = ids,
                        .n_prompt = (int)n_ids,
                        .max_tokens = n_new,
                        .sampling = srv_sampling(req, d->id),
                        .stop = stops,
                        .n_stop = n_stops,
                        .stop_tokens = stop_ids,
                        .n_stop_tokens = n_stop_ids,
                        .trim_leading = true};
    cm_submit_result sr = cm_sched_submit(sm->sched, &jp, &d->job[k]);
    free(ids);
    if (sr == CM_SUBMIT_OK) return true;
    d->job[k] = NULL;
    srv_submit_error(sr, err);
    return false;
}

enum MHD_Result srv_arena_battle(cm_server *s, struct MHD_Connection *c, conn_ctx *cc) {
    const route_id r = ROUTE_ARENA_BATTLES;
    if (s->n_models < 2)
        return srv_reply_simple_error(s, c, r, 409, "invalid_request_error", "arena_needs_two_models",
                                      "The arena needs at least two served models and this server has %d; "
                                      "start camelid serve with two or more MODELs (--alias names them)",
                                      s->n_models);
    cm_api_request req;
    cm_api_error err;
    if (!cm_api_parse_request(CM_API_ARENA_BATTLE, cc->body, cc->len, &req, &err))
        return srv_reply_error(s, c, r, &err);
    duel *d = calloc(1, sizeof *d);
    if (!d) {
        cm_api_request_free(&req);
        return srv_reply(s, c, r, 500, "application/json", NULL);
    }
    d->s = s;
    int i, j;
    cm_arena_pick(s->arena, s->n_models, &i, &j);
    d->sm[0] = &s->models[i];
    d->sm[1] = &s->models[j];
    d->fd = srv_connection_fd(c);
    d->t_start = cc->t_start;
    d->deadline = cc->t_start + s->p.timeout;
    d->stream = req.stream;
    d->status = 200;
    srv_make_id(s, "battle-", d->id, sizeof d->id);
    int max_tokens = req.max_tokens > 0 ? req.max_tokens : ARENA_DEFAULT_MAX_TOKENS;
    const char *system = req.n_messages == 2 ? req.messages[0].content : NULL;
    const char *prompt = req.messages[req.n_messages - 1].content;
    bool ok = submit_side(s, d, 0, &req, max_tokens, &err) && submit_side(s, d, 1, &req, max_tokens, &err);
    /* the battle is on record before any answer, so that a vote is accepted however generation ends */
    if (ok && cm_arena_add_battle(s->arena, d->id, d->sm[0]->id, d->sm[1]->id, prompt, system) != CM_OK) {
        srv_log(s, "%s", cm_last_error());
        cm_api_error_set(&err, 500, "server_error", NULL, NULL, "the arena could not record the battle: %s",
                         cm_last_error());
        ok = false;
    }
    cm_api_request_free(&req);
    if (!ok) {
        duel_free(d); /* releasing a job cancels it */
        return srv_reply_error(s, c, r, &err);
    }
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)s->p.timeout + 5u);

    if (d->stream) {
        cm_strbuf none[2] = {{0}, {0}};
        srv_sse_event(&d->out, duel_json(d, none, false)); /* the id at once, before any text */
        return srv_reply_sse(s, c, &d->out, duel_more, duel_stream_free, d);
    }

    enum MHD_Result ret = MHD_YES;
    for (;;) {
        cm_strbuf delta[2] = {{0}, {0}};
        bool failed = false;
        duel_wait_result w = duel_wait(d, delta, &failed);
        free(delta[0].buf);
        free(delta[1].buf);
        if (w == DUEL_GONE) {
            d->status = 499;
            cancel_both(d);
            ret = MHD_NO;
            break;
        }
        if (w == DUEL_TIMEOUT || failed) {
            cancel_both(d);
            d->status = w == DUEL_TIMEOUT ? 504 : 500;
            ret = w == DUEL_TIMEOUT
                      ? srv_reply_simple_error(s, c, r, 504, "timeout_error", NULL,
                                               "the battle took longer than the server's --timeout of %d s",
                                               s->p.timeout)
                      : srv_reply_simple_error(s, c, r, 500, "server_error", NULL, "%s", d->error);
            break;
        }
        if (!(d->done[0] && d->done[1])) continue;
        if (d->text[0].failed || d->text[1].failed) {
            d->status = 500;
            ret = srv_reply(s, c, r, 500, "application/json", NULL);
            break;
        }
        duel_save(d);
        ret = srv_reply(s, c, r, 200, "application/json", duel_json(d, d->text, true));
        break;
    }
    duel_log(d);
    duel_free(d);
    return ret;
}

/* Battle ids are ours ("battle-" and hex digits); anything else cannot name one. */
static bool plausible_id(const char *id) {
    size_t n = strlen(id);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_'))
            return false;
    }
    return true;
}

enum MHD_Result srv_arena_vote(cm_server *s, struct MHD_Connection *c, conn_ctx *cc) {
    const route_id r = ROUTE_ARENA_VOTE;
    cm_api_request req;
    cm_api_error err;
    if (!cm_api_parse_request(CM_API_ARENA_VOTE, cc->body, cc->len, &req, &err))
        return srv_reply_error(s, c, r, &err);
    cm_vote winner = (cm_vote)req.winner;
    cm_api_request_free(&req);
    if (!plausible_id(cc->arena_id))
        return srv_reply_simple_error(s, c, r, 404, "invalid_request_error", "battle_not_found",
                                      "No such battle (battle ids come from POST /v1/arena/battles)");
    char ma[512], mb[512];
    cm_arena_vote_result res;
    if (cm_arena_vote(s->arena, cc->arena_id, winner, &res, ma, mb, sizeof ma) != CM_OK) {
        srv_log(s, "%s", cm_last_error());
        return srv_reply_simple_error(s, c, r, 500, "server_error", NULL, "the vote was not stored: %s",
                                      cm_last_error());
    }
    if (res == CM_ARENA_UNKNOWN_BATTLE)
        return srv_reply_simple_error(s, c, r, 404, "invalid_request_error", "battle_not_found",
                                      "No battle %s (battle ids come from POST /v1/arena/battles)",
                                      cc->arena_id);
    if (res == CM_ARENA_ALREADY_VOTED)
        return srv_reply_simple_error(s, c, r, 409, "invalid_request_error", "already_voted",
                                      "Battle %s has its vote already (one vote per battle)", cc->arena_id);
    static const char *short_names[] = {"a", "b", "tie", "bothbad"};
    srv_log(s, "/v1/arena/battles/%s/vote %s (%s vs %s)", cc->arena_id, short_names[winner], ma, mb);
    json_t *o = json_object();
    json_object_set_new(o, "battle_id", json_string(cc->arena_id));
    json_object_set_new(o, "winner", json_string(short_names[winner]));
    json_object_set_new(o, "model_a", json_string(ma));
    json_object_set_new(o, "model_b", json_string(mb));
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return srv_reply(s, c, r, 200, "application/json", body);
}

enum MHD_Result srv_arena_leaderboard(cm_server *s, struct MHD_Connection *c) {
    cm_rating_params p = cm_rating_defaults();
    char *json = cm_arena_leaderboard_json(s->arena, &p);
    if (!json)
        return srv_reply_simple_error(s, c, ROUTE_ARENA_LEADERBOARD, 500, "server_error", NULL, "%s",
                                      cm_last_error());
    return srv_reply(s, c, ROUTE_ARENA_LEADERBOARD, 200, "application/json", json);
}
