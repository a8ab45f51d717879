/* One evaluation task with its requests split over the ranks of a group (see eval_internal.h).
 *
 * 1. Record: every rank runs the task on a scratch document with the model interface answering from a tape:
 *    each call (a batch of log-likelihood requests, or one generation) is copied with placeholder answers.
 *    The calls a task makes depend only on its data, never on the answers, so every rank records the same
 *    list (lm-evaluation-harness builds all requests before running any, for the same reason).
 * 2. Compute: rank r runs calls [bound[r], bound[r+1]) for real, in order, so within a share the KV-cache
 *    prefix sharing works as in one process; the shares are contiguous and balanced by an estimate of the
 *    tokens each call runs.
 * 3. Gather: the answers (log-probs, greedy flags, per-token log-probs, generated texts) and each rank's
 *    throughput counters go to rank 0.
 * 4. Replay: rank 0 runs the task again on the real document with the tape answering in order (each call
 *    checked against the recorded one, and adding to the counters what computing it added), so metrics,
 *    samples, checkpoints and counters come out as one process makes them (but for the prefix sharing lost
 *    at the shares' edges).
 * A failure on any rank is agreed (cm_dist_agree), so every rank returns the same error. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/strbuf.h"
#include "eval_internal.h"

typedef struct tape_req {
    int32_t *tokens; /* ctx then cont */
    int n_ctx, n_cont;
    bool want_lp;
    /* answers */
    double logprob;
    bool is_greedy, truncated;
    double *token_lp; /* n_cont, when want_lp */
} tape_req;

typedef struct tape_call {
    bool gen;
    size_t req0, n_req; /* log-likelihood: requests [req0, req0 + n_req) */
    int32_t *prompt;    /* generation */
    int n_prompt, max_tokens, n_stop;
    char **stop;
    char *text;        /* its answer */
    cm_lm_stats stats; /* what computing it added to the model interface's counters */
    uint64_t hash;
    double cost;
} tape_call;

enum { TAPE_RECORD, TAPE_REPLAY };

struct ev_tape {
    int mode;
    tape_call *calls;
    size_t n_calls, cap_calls;
    tape_req *reqs;
    size_t n_reqs, cap_reqs;
    size_t pos;       /* replay: the next call */
    size_t available; /* replay: calls [0, available) have answers */
    int32_t *prev;    /* record: the last request's tokens, for the cost estimate (prefix sharing) */
    int n_prev;
};

static void tape_free(ev_tape *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_reqs; i++) free(t->reqs[i].tokens), free(t->reqs[i].token_lp);
    for (size_t i = 0; i < t->n_calls; i++) {
        tape_call *c = &t->calls[i];
        free(c->prompt);
        for (int k = 0; k < c->n_stop; k++) free(c->stop[k]);
        free(c->stop);
        free(c->text);
    }
    free(t->reqs);
    free(t->calls);
    free(t->prev);
    free(t);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t hash_ll(const cm_ll_request *reqs, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        int hdr[2] = {reqs[i].n_ctx, reqs[i].n_cont};
        h = fnv(h, hdr, sizeof hdr);
        h = fnv(h, reqs[i].ctx, (size_t)reqs[i].n_ctx * sizeof(int32_t));
        h = fnv(h, reqs[i].cont, (size_t)reqs[i].n_cont * sizeof(int32_t));
        h = fnv(h, &(bool){reqs[i].token_logprobs != NULL}, sizeof(bool));
    }
    return h;
}

static uint64_t hash_gen(const int32_t *prompt, int n_prompt, const cm_lm_gen_params *p) {
    uint64_t h = 0xcbf29ce484222325ull;
    int hdr[3] = {n_prompt, p->max_tokens, p->n_stop};
    h = fnv(h, hdr, sizeof hdr);
    h = fnv(h, prompt, (size_t)n_prompt * sizeof(int32_t));
    for (int k = 0; k < p->n_stop; k++) h = fnv(h, p->stop[k], strlen(p->stop[k]) + 1);
    return h;
}

static tape_call *new_call(ev_tape *t) {
    if (t->n_calls == t->cap_calls) {
        size_t cap = t->cap_calls ? 2 * t->cap_calls : 256;
        tape_call *c = realloc(t->calls, cap * sizeof *c);
        if (!c) return NULL;
        t->calls = c;
        t->cap_calls = cap;
    }
    tape_call *c = &t->calls[t->n_calls];
    memset(c, 0, sizeof *c);
    return c;
}

/* Tokens the model would run for this input after the previous one: those past their common prefix. */
static double new_tokens(ev_tape *t, const int32_t *tok, int n) {
    int l = 0;
    while (l < t->n_prev && l < n && t->prev[l] == tok[l]) l++;
    int32_t *p = realloc(t->prev, (size_t)(n ? n : 1) * sizeof *p);
    if (p) {
        memcpy(p, tok, (size_t)n * sizeof *p);
        t->prev = p;
        t->n_prev = n;
    }
    return (double)(n - l);
}

static cm_status record_ll(ev_tape *t, cm_lm *lm, cm_ll_request *reqs, size_t n) {
    for (size_t i = 0; i < n; i++) CM_TRY(ev_lm_check_request(lm, &reqs[i]));
    tape_call *c = new_call(t);
    if (!c || t->n_reqs + n > t->cap_reqs) {
        size_t cap = t->cap_reqs ? 2 * t->cap_reqs : 1024;
        while (cap < t->n_reqs + n) cap *= 2;
        tape_req *r = c ? realloc(t->reqs, cap * sizeof *r) : NULL;
        if (!r) return cm_error(CM_ERR_NOMEM, "out of memory recording the requests");
        t->reqs = r;
        t->cap_reqs = cap;
    }
    c->req0 = t->n_reqs;
    c->hash = hash_ll(reqs, n);
    for (size_t i = 0; i < n; i++) {
        tape_req *r = &t->reqs[t->n_reqs];
        memset(r, 0, sizeof *r);
        size_t len = (size_t)reqs[i].n_ctx + (size_t)reqs[i].n_cont;
        r->tokens = malloc(len * sizeof *r->tokens);
        if (!r->tokens) return cm_error(CM_ERR_NOMEM, "out of memory recording the requests");
        memcpy(r->tokens, reqs[i].ctx, (size_t)reqs[i].n_ctx * sizeof(int32_t));
        memcpy(r->tokens + reqs[i].n_ctx, reqs[i].cont, (size_t)reqs[i].n_cont * sizeof(int32_t));
        r->n_ctx = reqs[i].n_ctx;
        r->n_cont = reqs[i].n_cont;
        r->want_lp = reqs[i].token_logprobs != NULL;
        t->n_reqs++;
        c->n_req++;
        c->cost += new_tokens(t, r->tokens, (int)len);
        /* placeholders: the recording pass's metrics are thrown away */
        reqs[i].logprob = 0;
        reqs[i].is_greedy = false;
        if (reqs[i].token_logprobs)
            for (int k = 0; k < reqs[i].n_cont; k++) reqs[i].token_logprobs[k] = 0;
    }
    t->n_calls++;
    return CM_OK;
}

static cm_status tape_ran_out(const ev_tape *t) {
    return cm_error(CM_ERR_ARG, "interrupted (after %zu of %zu calls to the model)", t->available, t->n_calls);
}

static cm_status replay_ll(ev_tape *t, cm_lm *lm, cm_ll_request *reqs, size_t n) {
    if (t->pos >= t->available) return tape_ran_out(t);
    tape_call *c = &t->calls[t->pos];
    if (c->gen || c->n_req != n || c->hash != hash_ll(reqs, n))
        return cm_error(CM_ERR_ARG, "evaluation over ranks: call %zu of the task differs from the one recorded "
                                    "(a task whose requests depend on earlier answers cannot be split)",
                        t->pos);
    for (size_t i = 0; i < n; i++) {
        const tape_req *r = &t->reqs[c->req0 + i];
        reqs[i].logprob = r->logprob;
        reqs[i].is_greedy = r->is_greedy;
        reqs[i].truncated = r->truncated;
        if (reqs[i].token_logprobs)
            memcpy(reqs[i].token_logprobs, r->token_lp, (size_t)r->n_cont * sizeof(double));
    }
    ev_lm_add_stats(lm, &c->stats);
    t->pos++;
    return CM_OK;
}

cm_status ev_tape_loglikelihood(ev_tape *t, cm_lm *lm, cm_ll_request *reqs, size_t n) {
    return t->mode == TAPE_RECORD ? record_ll(t, lm, reqs, n) : replay_ll(t, lm, reqs, n);
}

cm_status ev_tape_generate(ev_tape *t, cm_lm *lm, const int32_t *prompt, int n_prompt, const cm_lm_gen_params *p,
                           char **text) {
    *text = NULL;
    if (t->mode == TAPE_REPLAY) {
        if (t->pos >= t->available) return tape_ran_out(t);
        tape_call *c = &t->calls[t->pos];
        if (!c->gen || c->hash != hash_gen(prompt, n_prompt, p))
            return cm_error(CM_ERR_ARG, "evaluation over ranks: call %zu of the task differs from the one recorded",
                            t->pos);
        if (!(*text = strdup(c->text ? c->text : ""))) return cm_error(CM_ERR_NOMEM, "out of memory");
        ev_lm_add_stats(lm, &c->stats);
        t->pos++;
        return CM_OK;
    }
    tape_call *c = new_call(t);
    if (!c) return cm_error(CM_ERR_NOMEM, "out of memory recording the requests");
    c->gen = true;
    c->n_prompt = n_prompt;
    c->max_tokens = p->max_tokens;
    c->hash = hash_gen(prompt, n_prompt, p);
    c->prompt = malloc((size_t)n_prompt * sizeof *c->prompt);
    c->stop = calloc((size_t)(p->n_stop ? p->n_stop : 1), sizeof *c->stop);
    t->n_calls++; /* owned by the tape from here, freed with it */
    if (!c->prompt || !c->stop) return cm_error(CM_ERR_NOMEM, "out of memory recording the requests");
    memcpy(c->prompt, prompt, (size_t)n_prompt * sizeof *prompt);
    for (int k = 0; k < p->n_stop; k++, c->n_stop++)
        if (!(c->stop[k] = strdup(p->stop[k]))) return cm_error(CM_ERR_NOMEM, "out of memory");
    /* a decoded token costs about as much as a few prompt tokens run together */
    c->cost = new_tokens(t, prompt, n_prompt) + 4.0 * p->max_tokens;
    t->n_prev = 0; /* generation leaves the cache in a state the estimate does not follow */
    if (!(*text = strdup(""))) return cm_error(CM_ERR_NOMEM, "out of memory");
    return CM_OK;
}

/* The answers are binary records in a cm_strbuf (it only appends bytes; the NUL it keeps after them is not
 * sent). */
static void put(cm_strbuf *o, const void *p, size_t n) { cm_strbuf_append(o, p, n); }

static cm_lm_stats stats_minus(const cm_lm_stats *a, const cm_lm_stats *b) {
    return (cm_lm_stats){a->n_requests - b->n_requests,
                         a->n_truncated - b->n_truncated,
                         a->tokens_scored - b->tokens_scored,
                         a->tokens_forwarded - b->tokens_forwarded,
                         a->tokens_requested - b->tokens_requested,
                         a->forward_seconds - b->forward_seconds,
                         a->n_generated - b->n_generated,
                         a->generate_seconds - b->generate_seconds};
}

static cm_status compute_one(ev_tape *t, cm_lm *lm, tape_call *c, cm_strbuf *out);

/* Run call i for real and append [its counters][its answers]. */
static cm_status compute_call(ev_tape *t, cm_lm *lm, size_t i, cm_strbuf *out) {
    cm_lm_stats before = *cm_lm_get_stats(lm);
    size_t at = out->len;
    cm_lm_stats zero = {0};
    put(out, &zero, sizeof zero);
    CM_TRY(compute_one(t, lm, &t->calls[i], out));
    if (out->failed) return cm_error(CM_ERR_NOMEM, "out of memory");
    cm_lm_stats delta = stats_minus(cm_lm_get_stats(lm), &before);
    memcpy(out->buf + at, &delta, sizeof delta);
    return CM_OK;
}

static cm_status compute_one(ev_tape *t, cm_lm *lm, tape_call *c, cm_strbuf *out) {
    if (c->gen) {
        cm_lm_gen_params p = {c->max_tokens, (const char *const *)c->stop, c->n_stop};
        char *text = NULL;
        CM_TRY(cm_lm_generate_tokens(lm, c->prompt, c->n_prompt, &p, &text));
        uint64_t len = strlen(text);
        put(out, &len, sizeof len);
        put(out, text, len);
        free(text);
        return out->failed ? cm_error(CM_ERR_NOMEM, "out of memory") : CM_OK;
    }
    cm_ll_request *reqs = calloc(c->n_req, sizeof *reqs);
    if (!reqs) return cm_error(CM_ERR_NOMEM, "out of memory");
    cm_status st = CM_OK;
    for (size_t k = 0; k < c->n_req && !st; k++) {
        tape_req *r = &t->reqs[c->req0 + k];
        reqs[k].ctx = r->tokens;
        reqs[k].n_ctx = r->n_ctx;
        reqs[k].cont = r->tokens + r->n_ctx;
        reqs[k].n_cont = r->n_cont;
        if (r->want_lp && !(reqs[k].token_logprobs = malloc((size_t)r->n_cont * sizeof(double))))
            st = cm_error(CM_ERR_NOMEM, "out of memory");
    }
    if (!st) st = cm_lm_loglikelihood(lm, reqs, c->n_req);
    for (size_t k = 0; k < c->n_req && !st; k++) {
        unsigned char flags = (unsigned char)(reqs[k].is_greedy | reqs[k].truncated << 1);
        put(out, &reqs[k].logprob, sizeof(double));
        put(out, &flags, 1);
        if (reqs[k].token_logprobs) put(out, reqs[k].token_logprobs, (size_t)reqs[k].n_cont * sizeof(double));
    }
    for (size_t k = 0; k < c->n_req; k++) free(reqs[k].token_logprobs);
    free(reqs);
    if (!st && out->failed) st = cm_error(CM_ERR_NOMEM, "out of memory");
    return st;
}

/* Bounded reader of a rank's answers. */
typedef struct {
    const char *p;
    size_t n, at;
} reader;

static bool get(reader *r, void *dst, size_t n) {
    if (n > r->n - r->at) return false;
    memcpy(dst, r->p + r->at, n);
    r->at += n;
    return true;
}

/* Rank k's answers ([u64 calls done], then per call of its share in order [cm_lm_stats][answers]) into the
 * tape. */
static cm_status load_answers(ev_tape *t, int k, size_t c0, size_t c1, const char *p, size_t n, uint64_t *done) {
    reader r = {p, n, 0};
    if (!get(&r, done, sizeof *done) || *done > c1 - c0)
        return cm_error(CM_ERR_FORMAT, "evaluation over ranks: rank %d sent a malformed answer header", k);
    for (size_t i = c0; i < c0 + *done; i++) {
        tape_call *c = &t->calls[i];
        if (!get(&r, &c->stats, sizeof c->stats))
            return cm_error(CM_ERR_FORMAT, "evaluation over ranks: rank %d's answer to call %zu is cut", k, i);
        if (c->gen) {
            uint64_t len;
            if (!get(&r, &len, sizeof len) || len > r.n - r.at || !(c->text = malloc((size_t)len + 1)))
                return cm_error(CM_ERR_FORMAT, "evaluation over ranks: rank %d's answer to call %zu is cut", k, i);
            get(&r, c->text, (size_t)len);
            c->text[len] = 0;
            continue;
        }
        for (size_t j = 0; j < c->n_req; j++) {
            tape_req *q = &t->reqs[c->req0 + j];
            unsigned char flags;
            if (!get(&r, &q->logprob, sizeof(double)) || !get(&r, &flags, 1))
                return cm_error(CM_ERR_FORMAT, "evaluation over ranks: rank %d's answer to call %zu is cut", k, i);
            q->is_greedy = flags & 1;
            q->truncated = (flags >> 1) & 1;
            if (q->want_lp) {
                if (!(q->token_lp = malloc((size_t)q->n_cont * sizeof(double))) ||
                    !get(&r, q->token_lp, (size_t)q->n_cont * sizeof(double)))
                    return cm_error(CM_ERR_FORMAT, "evaluation over ranks: rank %d's answer to call %zu is cut", k, i);
            }
        }
    }
    if (r.at != r.n) return cm_error(CM_ERR_FORMAT, "evaluation over ranks: rank %d sent %zu bytes too many", k, r.n - r.at);
    return CM_OK;
}

/* Contiguous shares of the calls with about equal estimated cost: bound[0] = 0 .. bound[R] = n_calls. */
static void split_calls(const ev_tape *t, int R, size_t *bound) {
    double total = 0, acc = 0;
    for (size_t i = 0; i < t->n_calls; i++) total += t->calls[i].cost + 1;
    bound[0] = 0;
    size_t i = 0;
    for (int k = 1; k < R; k++) {
        double want = total * k / R;
        while (i < t->n_calls && acc + t->calls[i].cost + 1 <= want) acc += t->calls[i++].cost + 1;
        bound[k] = i;
    }
    bound[R] = t->n_calls;
}

/* The replay's progress: the user's callback draws, and the task stops where the answers end (a share that
 * was interrupted). */
typedef struct {
    const cm_eval_hooks *user;
    ev_tape *tape;
} replay_ctx;

static int replay_progress(void *u, const cm_eval_progress *p) {
    replay_ctx *c = u;
    if (c->user && c->user->progress) c->user->progress(c->user->user, p);
    return c->tape->available < c->tape->n_calls && c->tape->pos >= c->tape->available;
}

static void replay_checkpoint(void *u) {
    replay_ctx *c = u;
    if (c->user && c->user->checkpoint) c->user->checkpoint(c->user->user);
}

cm_status ev_run_task_sharded(cm_eval *ev, cm_lm *lm, const char *spec, const cm_eval_hooks *hooks) {
    cm_dist *d = ev->opt.dist;
    int rank = cm_dist_rank(d), R = cm_dist_size(d);
    ev_tape *t = calloc(1, sizeof *t);
    size_t *bound = calloc((size_t)R + 1, sizeof *bound);
    size_t *lens = calloc((size_t)R, sizeof *lens);
    cm_status st = !t || !bound || !lens ? cm_error(CM_ERR_NOMEM, "out of memory") : CM_OK;

    /* 1. record, on a scratch document */
    cm_status st_rec = CM_OK;
    char *rec_msg = NULL;
    if (!st) {
        cm_eval_model_info none = {0};
        cm_eval *scratch = NULL;
        st = cm_eval_open(&none, &ev->opt, &scratch);
        if (!st) {
            t->mode = TAPE_RECORD;
            ev_lm_set_tape(lm, t);
            st_rec = ev_dispatch(scratch, lm, spec);
            ev_lm_set_tape(lm, NULL);
            if (st_rec && !(rec_msg = strdup(cm_last_error()))) st = cm_error(CM_ERR_NOMEM, "out of memory");
            cm_eval_close(scratch);
        }
    }
    /* (a recording that failed part-way still has the calls before the failure; the replay fails there too) */

    /* 2-3. compute this rank's share */
    cm_strbuf out = {0};
    uint64_t done = 0;
    cm_lm_stats before = *cm_lm_get_stats(lm);
    if (!st) {
        split_calls(t, R, bound);
        size_t c0 = bound[rank], c1 = bound[rank + 1];
        put(&out, &done, sizeof done);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(strchr(spec, ':') - spec), spec);
        bool show = rank == 0 && hooks && hooks->progress;
        cm_eval_progress pr = {name, 0, (int64_t)(c1 - c0), 0};
        for (size_t i = c0; i < c1 && !st; i++) {
            st = compute_call(t, lm, i, &out);
            if (st) break;
            done++;
            pr.done = (int64_t)done;
            /* ^C on rank 0 ends its share here; the replay then stops where the answers end */
            if (show && hooks->progress(hooks->user, &pr)) break;
        }
        if (!st && out.failed) st = cm_error(CM_ERR_NOMEM, "out of memory");
        if (!st) memcpy(out.buf, &done, sizeof done);
    }
    /* the replay adds each call's counters back as the task meets it, as in one process */
    ev_lm_set_stats(lm, &before);
    st = cm_dist_agree(d, st);

    /* 4. gather to rank 0, which replays the task on the real document */
    char *all = NULL;
    cm_status st_rep = CM_OK;
    if (!st) st = cm_dist_gather_bytes(d, out.buf, out.len, 0, &all, lens);
    if (!st && rank == 0) {
        size_t off = 0;
        t->available = t->n_calls;
        bool cut = false;
        for (int k = 0; k < R && !st; k++) {
            uint64_t k_done = 0;
            st = load_answers(t, k, bound[k], bound[k + 1], all + off, lens[k], &k_done);
            off += lens[k];
            if (st) break;
            if (!cut && bound[k] + k_done < bound[k + 1]) {
                t->available = bound[k] + k_done;
                cut = true;
            }
        }
        if (!st) {
            t->mode = TAPE_REPLAY;
            replay_ctx rc = {hooks, t};
            cm_eval_hooks rh = {replay_progress, replay_checkpoint, &rc};
            ev->hooks = &rh;
            ev_lm_set_tape(lm, t);
            st_rep = ev_dispatch(ev, lm, spec);
            ev_lm_set_tape(lm, NULL);
            ev_checkpoint(ev);
            ev->hooks = NULL;
        }
    }
    st = cm_dist_agree(d, st);
    if (!st) {
        int interrupted = ev->interrupted;
        st = cm_dist_bcast(d, &interrupted, sizeof interrupted, 0);
        ev->interrupted = interrupted;
    }
    /* 5. the task's outcome: the replay's on rank 0 (it reproduces a recording error at the same item), the
     * recording's elsewhere; agreed, so that every rank goes on or stops alike */
    if (!st) {
        cm_status mine = rank == 0 ? st_rep : st_rec;
        if (rank != 0 && st_rec) cm_error(st_rec, "%s", rec_msg ? rec_msg : "");
        st = cm_dist_agree(d, mine);
    }
    free(all);
    cm_strbuf_free(&out);
    free(rec_msg);
    free(bound);
    free(lens);
    tape_free(t);
    return st;
}
