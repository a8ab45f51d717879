/* Continuous batching over one model (serve_sched.h). The scheduler thread alone touches the model state,
 * the slots' caches and samplers; jobs are shared with the HTTP threads through their own mutex. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "camelid/generate.h"
#include "camelid/llama.h"
#include "camelid/serve_sched.h"

#define MAX_STOP_TOKENS 8

struct cm_job {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    /* parameters, fixed at submission */
    int32_t *prompt;
    int n_prompt, max_tokens;
    cm_sampler_params sampling;
    char **stop;
    int n_stop;
    int32_t stop_tokens[MAX_STOP_TOKENS];
    int n_stop_tokens;
    bool trim_leading;
    /* shared, under mu */
    char *out; /* text not yet taken by cm_job_wait */
    size_t out_len, out_cap;
    size_t
        *ends; /* where each emitted piece ends in out: a reader takes one piece (one SSE event) at a time */
    size_t n_ends, cap_ends;
    bool started; /* some text was emitted (leading whitespace is trimmed before) */
    bool cancelled;
    cm_finish finish;
    int n_generated;
    char error[256];
    double t_submit, t_first;
    cm_job *next; /* wait queue link, under the scheduler's mu */
};

typedef struct {
    char *buf;
    size_t len, cap;
} textbuf;

typedef struct {
    cm_kv *kv;
    cm_job *job; /* NULL: free */
    cm_sampler *sampler;
    int32_t *history; /* prompt + generated, ctx + 1 */
    int n_hist;
    int pos;      /* position at which next_token runs */
    int32_t next; /* the token to run at the next decode step */
    bool decoding;
    int max_new, n_generated;
    cm_detokenizer detok;
    textbuf pending; /* text that might still be the start of a stop string */
} slot;

struct cm_sched {
    const cm_model *m;
    const cm_tokenizer *tok;
    cm_sched_params p;
    int ctx, vocab;
    cm_state *state;
    slot *slots;
    float *logits; /* [parallel][vocab] */
    cm_batch_token *items;
    int n_items_cap;
    char *piece;
    size_t piece_cap;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    cm_job *qhead, *qtail;
    bool stopping;
    cm_sched_stats stats;
};

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------------------------------------ jobs */

static void job_free(cm_job *j) {
    free(j->prompt);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    free(j->stop);
    free(j->out);
    free(j->ends);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

static void job_unref_locked(cm_job *j) {
    bool last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (last) job_free(j);
}

void cm_job_release(cm_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    if (j->finish == CM_FINISH_NONE) j->cancelled = true;
    job_unref_locked(j);
}

void cm_job_cancel(cm_job *j) {
    pthread_mutex_lock(&j->mu);
    j->cancelled = true;
    pthread_mutex_unlock(&j->mu);
}

double cm_job_ttft(const cm_job *j) {
    cm_job *mj = (cm_job *)j;
    pthread_mutex_lock(&mj->mu);
    double t = mj->t_first > 0 ? mj->t_first - mj->t_submit : -1;
    pthread_mutex_unlock(&mj->mu);
    return t;
}

static bool job_is_cancelled(cm_job *j) {
    pthread_mutex_lock(&j->mu);
    bool c = j->cancelled;
    pthread_mutex_unlock(&j->mu);
    return c;
}

bool cm_job_wait(cm_job *j, int timeout_ms, cm_job_update *u) {
    memset(u, 0, sizeof *u);
    pthread_mutex_lock(&j->mu);
    if (j->out_len == 0 && j->finish == CM_FINISH_NONE && timeout_ms > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += timeout_ms / 1000;
        ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        while (j->out_len == 0 && j->finish == CM_FINISH_NONE)
            if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) == ETIMEDOUT) break;
    }
    if (j->out_len > 0) {
        /* the oldest piece only, so that a stream carries one event per piece however fast tokens come */
        size_t take = j->n_ends > 0 ? j->ends[0] : j->out_len;
        u->text = malloc(take + 1);
        if (u->text) {
            memcpy(u->text, j->out, take);
            u->text[take] = 0;
            u->len = take;
            memmove(j->out, j->out + take, j->out_len - take);
            j->out_len -= take;
            if (j->n_ends > 0) {
                memmove(j->ends, j->ends + 1, (j->n_ends - 1) * sizeof *j->ends);
                j->n_ends--;
                for (size_t i = 0; i < j->n_ends; i++) j->ends[i] -= take;
            }
        }
    }
    /* the finish is reported once all text has been taken */
    u->finish = j->out_len == 0 ? j->finish : CM_FINISH_NONE;
    u->n_prompt = j->n_prompt;
    u->n_generated = j->n_generated;
    memcpy(u->error, j->error, sizeof u->error);
    pthread_mutex_unlock(&j->mu);
    return u->text != NULL || u->finish != CM_FINISH_NONE;
}

/* Hand text to the job's reader (dropping the reply's leading whitespace when asked). */
static void job_emit(cm_job *j, const char *s, size_t n) {
    pthread_mutex_lock(&j->mu);
    if (j->trim_leading && !j->started) {
        while (n > 0 && (*s == ' ' || *s == '\n')) s++, n--;
    }
    if (n > 0 && !j->cancelled) {
        if (j->out_len + n + 1 > j->out_cap) {
            size_t cap = (j->out_len + n + 1) * 2;
            char *b = realloc(j->out, cap);
            if (!b) {
                j->cancelled = true;
                snprintf(j->error, sizeof j->error, "out of memory");
                pthread_mutex_unlock(&j->mu);
                return;
            }
            j->out = b;
            j->out_cap = cap;
        }
        memcpy(j->out + j->out_len, s, n);
        j->out_len += n;
        if (j->n_ends == j->cap_ends) {
            size_t cap = j->cap_ends ? 2 * j->cap_ends : 16;
            size_t *e = realloc(j->ends, cap * sizeof *e);
            if (e) {
                j->ends = e;
                j->cap_ends = cap;
            }
        }
        /* without room for the boundary, the piece joins the previous one */
        if (j->n_ends < j->cap_ends)
            j->ends[j->n_ends++] = j->out_len;
        else if (j->n_ends > 0)
            j->ends[j->n_ends - 1] = j->out_len;
        j->started = true;
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
}

/* End the job (the scheduler's reference goes with it). */
static void job_finish(cm_job *j, cm_finish f, int n_generated, const char *error) {
    pthread_mutex_lock(&j->mu);
    j->finish = f;
    j->n_generated = n_generated;
    if (error) snprintf(j->error, sizeof j->error, "%s", error);
    pthread_cond_broadcast(&j->cv);
    job_unref_locked(j);
}

cm_submit_result cm_sched_submit(cm_sched *s, const cm_job_params *p, cm_job **out) {
    *out = NULL;
    if (p->n_prompt < 1 || p->n_prompt >= s->ctx) {
        cm_error(CM_ERR_ARG, "the prompt is %d tokens; the context holds %d", p->n_prompt, s->ctx);
        return CM_SUBMIT_INVALID;
    }
    if (p->n_stop < 0 || p->n_stop_tokens < 0 || p->n_stop_tokens > MAX_STOP_TOKENS ||
        cm_sampler_params_validate(&p->sampling) != CM_OK) {
        if (p->n_stop < 0 || p->n_stop_tokens < 0 || p->n_stop_tokens > MAX_STOP_TOKENS)
            cm_error(CM_ERR_ARG, "bad stop rules");
        return CM_SUBMIT_INVALID;
    }
    for (int i = 0; i < p->n_prompt; i++) {
        if (p->prompt[i] < 0 || p->prompt[i] >= s->vocab) {
            cm_error(CM_ERR_ARG, "token id %d is outside the vocabulary (0..%d)", p->prompt[i], s->vocab - 1);
            return CM_SUBMIT_INVALID;
        }
    }
    cm_job *j = calloc(1, sizeof *j);
    if (!j) goto nomem;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 2; /* the caller's and the scheduler's */
    j->prompt = malloc((size_t)p->n_prompt * sizeof *j->prompt);
    j->stop = calloc((size_t)p->n_stop + 1, sizeof *j->stop);
    if (!j->prompt || !j->stop) goto nomem_job;
    memcpy(j->prompt, p->prompt, (size_t)p->n_prompt * sizeof *j->prompt);
    j->n_prompt = p->n_prompt;
    j->max_tokens = p->max_tokens;
    j->sampling = p->sampling;
    for (int i = 0; i < p->n_stop; i++) {
        if (!(j->stop[i] = strdup(p->stop[i]))) goto nomem_job;
        j->n_stop = i + 1;
    }
    if (p->n_stop_tokens > 0)
        memcpy(j->stop_tokens, p->stop_tokens, (size_t)p->n_stop_tokens * sizeof *j->stop_tokens);
    j->n_stop_tokens = p->n_stop_tokens;
    j->trim_leading = p->trim_leading;
    j->t_submit = now_seconds();

    pthread_mutex_lock(&s->mu);
    cm_submit_result r = CM_SUBMIT_OK;
    if (s->stopping)
        r = CM_SUBMIT_CLOSED;
    else if (s->stats.queued >= s->p.queue_depth + (s->p.parallel - s->stats.busy))
        r = CM_SUBMIT_FULL;
    if (r == CM_SUBMIT_OK) {
        if (s->qtail)
            s->qtail->next = j;
        else
            s->qhead = j;
        s->qtail = j;
        s->stats.queued++;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (r != CM_SUBMIT_OK) {
        job_free(j);
        return r;
    }
    *out = j;
    return CM_SUBMIT_OK;
nomem_job:
    job_free(j);
nomem:
    cm_error(CM_ERR_NOMEM, "out of memory");
    return CM_SUBMIT_INVALID;
}

/* ------------------------------------------------------------------------------------- stop strings */

static bool text_append(textbuf *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *b = realloc(t->buf, cap);
        if (!b) return false;
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
    return true;
}

static void emit_front(slot *sl, size_t n) {
    if (n > 0) job_emit(sl->job, sl->pending.buf, n);
    memmove(sl->pending.buf, sl->pending.buf + n, sl->pending.len - n);
    sl->pending.len -= n;
}

/* ------------------------------------------------------------------------------------------- slots */

/* End the slot's job. With `flush`, the bytes held back (an unfinished character, the start of a stop string
 * that never came) are emitted first. */
static void slot_end(cm_sched *s, slot *sl, cm_finish f, const char *error, bool flush) {
    if (flush) {
        /* the held-back bytes of an unfinished character and of a stop string that never came */
        size_t n = cm_detokenizer_flush(&sl->detok, s->piece, s->piece_cap);
        if (n) text_append(&sl->pending, s->piece, n);
        emit_front(sl, sl->pending.len);
    }
    pthread_mutex_lock(&s->mu);
    s->stats.generated_tokens_total += (uint64_t)sl->n_generated;
    if (f == CM_FINISH_CANCELLED) s->stats.jobs_cancelled++;
    s->stats.busy--;
    pthread_mutex_unlock(&s->mu);
    job_finish(sl->job, f, sl->n_generated, error);
    cm_sampler_close(sl->sampler);
    sl->sampler = NULL;
    sl->job = NULL;
    sl->decoding = false;
    sl->pending.len = 0;
}

/* Sample from `logits` and apply the stop rules, exactly as cm_generate does. */
static void slot_step(cm_sched *s, slot *sl, float *logits) {
    cm_job *j = sl->job;
    int next = cm_sampler_sample(sl->sampler, logits, sl->history, sl->n_hist);
    if (sl->n_generated == 0) {
        pthread_mutex_lock(&j->mu);
        j->t_first = now_seconds();
        pthread_mutex_unlock(&j->mu);
    }
    int bos = cm_tokenizer_bos(s->tok);
    bool stop_token = false;
    for (int i = 0; i < j->n_stop_tokens; i++) stop_token |= next == j->stop_tokens[i];
    if (stop_token || cm_tokenizer_is_eog(s->tok, next) || (bos >= 0 && next == bos)) {
        slot_end(s, sl, CM_FINISH_STOP, NULL, true);
        return;
    }
    sl->history[sl->n_hist++] = next;
    sl->n_generated++;
    size_t n = cm_detokenizer_push(&sl->detok, next, s->piece, s->piece_cap);
    if (!text_append(&sl->pending, s->piece, n)) {
        slot_end(s, sl, CM_FINISH_ERROR, "out of memory", false);
        return;
    }
    const char *const *stop = (const char *const *)j->stop;
    long at = cm_stop_find(sl->pending.buf, sl->pending.len, stop, j->n_stop);
    if (at >= 0) {
        emit_front(sl, (size_t)at);
        sl->pending.len = 0;
        /* a stop string ends the text where it starts: nothing held back is emitted */
        slot_end(s, sl, CM_FINISH_STOP, NULL, false);
        return;
    }
    emit_front(sl, sl->pending.len - cm_stop_held_back(sl->pending.buf, sl->pending.len, stop, j->n_stop));
    if (sl->n_generated == sl->max_new || sl->pos >= s->ctx) {
        slot_end(s, sl, CM_FINISH_LENGTH, NULL, true);
        return;
    }
    sl->next = next;
    sl->decoding = true;
}

/* A job enters a slot: its sampler, its history, its detokenizer primed with the prompt, then the prompt
 * run as one batch of its own (as cm_generate runs it) and the first token sampled. */
static void slot_start(cm_sched *s, slot *sl, float *logits) {
    cm_job *j = sl->job;
    if (cm_sampler_open(&j->sampling, s->vocab, &sl->sampler) != CM_OK) {
        slot_end(s, sl, CM_FINISH_ERROR, cm_last_error(), false);
        return;
    }
    memcpy(sl->history, j->prompt, (size_t)j->n_prompt * sizeof *sl->history);
    sl->n_hist = j->n_prompt;
    sl->n_generated = 0;
    sl->max_new = j->max_tokens < 0 ? s->ctx : j->max_tokens;
    sl->decoding = false;
    sl->pending.len = 0;
    cm_detokenizer_init(&sl->detok, s->tok);
    for (int i = 0; i < j->n_prompt; i++)
        cm_detokenizer_push(&sl->detok, j->prompt[i], s->piece, s->piece_cap);
    sl->detok.n_pending = 0; /* the prompt's unfinished bytes are not the reply's */
    for (int i = 0; i < j->n_prompt; i++)
        s->items[i] = (cm_batch_token){j->prompt[i], i, sl->kv, i == j->n_prompt - 1};
    double t0 = now_seconds();
    cm_status st = cm_forward_batch(s->m, s->state, s->items, j->n_prompt, logits);
    double dt = now_seconds() - t0;
    pthread_mutex_lock(&s->mu);
    s->stats.prompt_tokens_total += (uint64_t)j->n_prompt;
    s->stats.prompt_seconds_total += dt;
    pthread_mutex_unlock(&s->mu);
    if (st != CM_OK) {
        slot_end(s, sl, CM_FINISH_ERROR, cm_last_error(), false);
        return;
    }
    sl->pos = j->n_prompt;
    slot_step(s, sl, logits);
}

static void *sched_main(void *arg) {
    cm_sched *s = arg;
    int P = s->p.parallel;
    int *fresh = malloc((size_t)P * sizeof *fresh), *dec = malloc((size_t)P * sizeof *dec);
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stopping && !s->qhead && s->stats.busy == 0) pthread_cond_wait(&s->cv, &s->mu);
        if (s->stopping || !fresh || !dec) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        int n_fresh = 0;
        for (int i = 0; i < P && s->qhead; i++) {
            if (s->slots[i].job) continue;
            while (s->qhead) {
                cm_job *j = s->qhead;
                s->qhead = j->next;
                if (!s->qhead) s->qtail = NULL;
                s->stats.queued--;
                j->next = NULL;
                if (job_is_cancelled(j)) {
                    s->stats.jobs_total++;
                    s->stats.jobs_cancelled++;
                    job_finish(j, CM_FINISH_CANCELLED, 0, NULL);
                    continue;
                }
                s->stats.jobs_total++;
                s->stats.busy++;
                s->slots[i].job = j;
                fresh[n_fresh++] = i;
                break;
            }
        }
        pthread_mutex_unlock(&s->mu);

        /* a reader that went away frees its slot now */
        for (int i = 0; i < P; i++)
            if (s->slots[i].job && job_is_cancelled(s->slots[i].job))
                slot_end(s, &s->slots[i], CM_FINISH_CANCELLED, NULL, false);
        for (int k = 0; k < n_fresh; k++) {
            slot *sl = &s->slots[fresh[k]];
            if (sl->job) slot_start(s, sl, s->logits);
        }
        int n_dec = 0;
        for (int i = 0; i < P; i++) {
            slot *sl = &s->slots[i];
            if (!sl->job || !sl->decoding) continue;
            s->items[n_dec] = (cm_batch_token){sl->next, sl->pos, sl->kv, true};
            dec[n_dec++] = i;
        }
        if (n_dec == 0) continue;
        double t0 = now_seconds();
        cm_status st = cm_forward_batch(s->m, s->state, s->items, n_dec, s->logits);
        double dt = now_seconds() - t0;
        pthread_mutex_lock(&s->mu);
        s->stats.decode_seconds_total += dt;
        if (n_dec > s->stats.decode_batch_max) s->stats.decode_batch_max = n_dec;
        pthread_mutex_unlock(&s->mu);
        for (int k = 0; k < n_dec; k++) {
            slot *sl = &s->slots[dec[k]];
            if (st != CM_OK) {
                slot_end(s, sl, CM_FINISH_ERROR, cm_last_error(), false);
                continue;
            }
            sl->pos++;
            slot_step(s, sl, s->logits + (size_t)k * s->vocab);
        }
    }
    /* stopping: every job still here is cancelled */
    for (int i = 0; i < P; i++)
        if (s->slots[i].job)
            slot_end(s, &s->slots[i], CM_FINISH_CANCELLED, "the server is shutting down", false);
    pthread_mutex_lock(&s->mu);
    while (s->qhead) {
        cm_job *j = s->qhead;
        s->qhead = j->next;
        s->stats.queued--;
        job_finish(j, CM_FINISH_CANCELLED, 0, "the server is shutting down");
    }
    s->qtail = NULL;
    pthread_mutex_unlock(&s->mu);
    free(fresh);
    free(dec);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- lifecycle */

cm_status cm_sched_open(const cm_model *m, const cm_tokenizer *tok, const cm_sched_params *p,
                        cm_sched **out) {
    *out = NULL;
    if (p->parallel < 1 || p->parallel > 1024) return cm_error(CM_ERR_ARG, "parallel must be 1..1024");
    if (p->queue_depth < 0) return cm_error(CM_ERR_ARG, "the queue depth must not be negative");
    cm_sched *s = calloc(1, sizeof *s);
    if (!s) return cm_error(CM_ERR_NOMEM, "out of memory");
    s->m = m;
    s->tok = tok;
    s->p = *p;
    s->ctx = p->ctx > 0 ? p->ctx : m->cfg.seq_len;
    s->vocab = m->cfg.vocab_size;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->stats.parallel = p->parallel;
    /* prompts run in chunks of up to 512 tokens, as cm_generate runs them */
    int max_batch = s->ctx < 512 ? s->ctx : 512;
    if (max_batch < p->parallel) max_batch = p->parallel;
    s->n_items_cap = s->ctx > p->parallel ? s->ctx : p->parallel;
    s->piece_cap = 64 + cm_tokenizer_max_piece_len(tok);
    cm_status st = cm_state_open(m, s->ctx, max_batch, p->threads, &s->state);
    s->slots = calloc((size_t)p->parallel, sizeof *s->slots);
    s->logits = malloc((size_t)p->parallel * s->vocab * sizeof *s->logits);
    s->items = malloc((size_t)s->n_items_cap * sizeof *s->items);
    s->piece = malloc(s->piece_cap);
    if (st == CM_OK && (!s->slots || !s->logits || !s->items || !s->piece))
        st = cm_error(CM_ERR_NOMEM, "out of memory");
    for (int i = 0; st == CM_OK && i < p->parallel; i++) {
        st = cm_kv_open(m, s->ctx, &s->slots[i].kv);
        if (st == CM_OK && !(s->slots[i].history = malloc((size_t)(s->ctx + 1) * sizeof(int32_t))))
            st = cm_error(CM_ERR_NOMEM, "out of memory");
    }
    if (st == CM_OK && pthread_create(&s->thread, NULL, sched_main, s) != 0)
        st = cm_error(CM_ERR_NOMEM, "cannot start the scheduler thread");
    if (st != CM_OK) {
        cm_sched_close(s);
        return st;
    }
    s->thread_started = true;
    *out = s;
    return CM_OK;
}

void cm_sched_stop(cm_sched *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    bool join = s->thread_started && !s->stopping;
    s->stopping = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (join) pthread_join(s->thread, NULL);
}

void cm_sched_close(cm_sched *s) {
    if (!s) return;
    cm_sched_stop(s);
    for (int i = 0; s->slots && i < s->p.parallel; i++) {
        cm_kv_close(s->slots[i].kv);
        free(s->slots[i].history);
        free(s->slots[i].pending.buf);
        cm_sampler_close(s->slots[i].sampler);
    }
    free(s->slots);
    free(s->logits);
    free(s->items);
    free(s->piece);
    cm_state_close(s->state);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int cm_sched_ctx(const cm_sched *s) {
    return s->ctx;
}

void cm_sched_get_stats(cm_sched *s, cm_sched_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    pthread_mutex_unlock(&s->mu);
}
