/* The serving scheduler: continuous batching of generation requests over one model. One thread owns the
 * model state and one KV cache per slot; each step it admits queued jobs into free slots (running each new
 * prompt as its own batch, as `generate` does), then runs one batched forward with the next token of every
 * decoding sequence and samples each with its own sampler. Text is handed to the job as soon as it is final
 * (never inside a UTF-8 character or a possible stop string), with the same stop rules as cm_generate, so a
 * greedy job's text equals `camelid generate`'s for the same prompt tokens. */
#ifndef CAMELID_SERVE_SCHED_H
#define CAMELID_SERVE_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/model.h"
#include "camelid/sampler.h"
#include "camelid/tokenizer.h"

typedef struct cm_sched cm_sched;
typedef struct cm_job cm_job;

typedef struct cm_sched_params {
    int parallel;    /* slots decoding together (default 4) */
    int ctx;         /* context per slot (<= 0: the model's) */
    int threads;     /* compute threads */
    int queue_depth; /* jobs that may wait beyond the slots (default 64) */
} cm_sched_params;

/* Start the scheduler thread. `m` and `tok` must outlive it. */
cm_status cm_sched_open(const cm_model *m, const cm_tokenizer *tok, const cm_sched_params *p, cm_sched **out);
/* Stop the thread; every job still queued or running ends CM_FINISH_CANCELLED, later submissions get
 * CM_SUBMIT_CLOSED. Safe while other threads still hold jobs or call cm_sched_submit. */
void cm_sched_stop(cm_sched *s);
/* Stop (if not yet) and free. No thread may use `s` any more. */
void cm_sched_close(cm_sched *s);
int cm_sched_ctx(const cm_sched *s);

typedef struct cm_job_params {
    const int32_t *prompt; /* copied */
    int n_prompt;          /* 1 .. ctx-1 */
    int max_tokens;        /* new tokens at most; < 0: until the context is full */
    cm_sampler_params sampling;
    const char *const *stop; /* stop strings (copied) */
    int n_stop;
    const int32_t *stop_tokens; /* further end-of-generation ids (copied, at most 8) */
    int n_stop_tokens;
    bool trim_leading; /* drop leading spaces/newlines of the reply (as `camelid chat` prints it) */
} cm_job_params;

typedef enum {
    CM_SUBMIT_OK = 0,
    CM_SUBMIT_FULL,    /* the wait queue is full */
    CM_SUBMIT_CLOSED,  /* the scheduler is stopping */
    CM_SUBMIT_INVALID, /* bad parameters or out of memory (cm_last_error() says which) */
} cm_submit_result;

/* Queue a job (FIFO). On CM_SUBMIT_OK the caller holds a reference and must cm_job_release() it. */
cm_submit_result cm_sched_submit(cm_sched *s, const cm_job_params *p, cm_job **out);

typedef enum {
    CM_FINISH_NONE = 0, /* still running */
    CM_FINISH_STOP,     /* EOS, a stop token or a stop string */
    CM_FINISH_LENGTH,   /* max_tokens or the end of the context */
    CM_FINISH_CANCELLED,
    CM_FINISH_ERROR,
} cm_finish;

typedef struct cm_job_update {
    char *text; /* new text since the last update (malloc'd, NUL-terminated, caller frees), or NULL */
    size_t len;
    cm_finish finish; /* set once the job is over; all its text has then been handed out */
    int n_prompt, n_generated;
    char error[256]; /* CM_FINISH_ERROR: what went wrong */
} cm_job_update;

/* Wait up to timeout_ms (0: do not wait) for new text or the end. Returns true when the update carries
 * text or the finish. */
bool cm_job_wait(cm_job *j, int timeout_ms, cm_job_update *u);
/* Ask the scheduler to drop the job (its slot is freed at the next step). */
void cm_job_cancel(cm_job *j);
/* Drop the caller's reference (cancelling the job if it still runs). */
void cm_job_release(cm_job *j);
/* Seconds from submission to the first generated token (< 0 before it). */
double cm_job_ttft(const cm_job *j);

typedef struct cm_sched_stats {
    uint64_t jobs_total, jobs_cancelled;
    uint64_t prompt_tokens_total, generated_tokens_total;
    double prompt_seconds_total, decode_seconds_total; /* time spent in prefill / decode forwards */
    int queued, busy, parallel;
    int decode_batch_max; /* the most sequences ever decoded together in one forward */
} cm_sched_stats;
void cm_sched_get_stats(cm_sched *s, cm_sched_stats *out);

#endif
