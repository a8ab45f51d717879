/* Private to src/eval: the results document and the helpers the task families share. */
#ifndef CAMELID_EVAL_INTERNAL_H
#define CAMELID_EVAL_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>

#include "camelid/eval.h"

struct cm_eval {
    json_t *doc; /* the lm-eval-shaped document; the members below are borrowed views into it */
    json_t *results, *group_subtasks, *configs, *versions, *n_shot, *higher, *n_samples, *samples, *camelid;
    cm_eval_options opt;
    bool interrupted;
    const cm_eval_hooks *hooks;
    const char *task;
    double task_t0, last_checkpoint;
    int64_t total;
};

/* A JSON number, or null when not finite (strict JSON). */
json_t *ev_real(double x);
/* Start a task's progress (total items). */
void ev_begin(cm_eval *ev, const char *task, int64_t total);
/* Report progress; returns nonzero when the caller asked to stop (the task must then save what it has and
 * return ev_stop()). Checkpoints about once a second. */
int ev_tick(cm_eval *ev, int64_t done);
cm_status ev_stop(cm_eval *ev);
/* Is a checkpoint due (a second since the last) and does anybody listen? */
bool ev_checkpoint_due(const cm_eval *ev);
/* Tell the caller the document changed now. */
void ev_checkpoint(cm_eval *ev);
/* Set a task's entries: results[name] = result (stolen), configs[name] = config (stolen), versions,
 * n-shot, higher_is_better (stolen), n-samples {original, effective}. */
void ev_set_task(cm_eval *ev, const char *name, json_t *result, json_t *config, int version, int n_shot,
                 json_t *higher, int64_t n_original, int64_t n_effective);
/* The list samples[name] (created on first use); NULL unless --log-samples. */
json_t *ev_samples(cm_eval *ev, const char *name);
/* The 1-based line where element `index` of the top-level array `key` starts ("" key: the top level is the
 * array), or 0 if it cannot be found; for messages about well-formed JSON that lacks a field. */
int ev_json_elem_line(const char *text, size_t len, const char *key, size_t index);
/* The file name without folder and extension (heap string). */
char *ev_stem(const char *path);
/* A printable, bounded copy of an untrusted string (for messages). */
const char *ev_show(const char *s, char *buf, size_t cap);

cm_status cm_eval_mmlu(cm_eval *ev, cm_lm *lm, const char *data);
cm_status cm_eval_perplexity(cm_eval *ev, cm_lm *lm, const char *path);
cm_status cm_eval_bigbench(cm_eval *ev, cm_lm *lm, const char *path);
cm_status cm_eval_snowball(cm_eval *ev, cm_lm *lm, const char *path);

/* Run a task spec's family against lm (no checks, no checkpoint). */
cm_status ev_dispatch(cm_eval *ev, cm_lm *lm, const char *spec);

/* Requests of a task split over ranks (shard.c): every rank runs the task once against a tape that records
 * the calls it makes to the model interface (answered with placeholders: the calls a task makes never depend
 * on earlier answers); each rank computes a contiguous share of the calls; rank 0 gathers the answers and runs
 * the task again with the tape replaying them in order, so the document is built exactly as one process
 * builds it. */
typedef struct ev_tape ev_tape;
cm_status ev_run_task_sharded(cm_eval *ev, cm_lm *lm, const char *spec, const cm_eval_hooks *hooks);
/* lm.c: route lm's calls to a tape (NULL: back to the model), add to (or set) its counters, and the
 * checks the model makes before a call (so that a recorded call fails where a real one would). */
void ev_lm_set_tape(cm_lm *lm, ev_tape *t);
void ev_lm_add_stats(cm_lm *lm, const cm_lm_stats *s);
void ev_lm_set_stats(cm_lm *lm, const cm_lm_stats *s);
cm_status ev_lm_check_request(cm_lm *lm, cm_ll_request *r);
cm_status ev_lm_check_generation(const cm_lm *lm, int n_prompt, const cm_lm_gen_params *p);
/* shard.c: a tape's answers to those calls. */
cm_status ev_tape_loglikelihood(ev_tape *t, cm_lm *lm, cm_ll_request *reqs, size_t n);
cm_status ev_tape_generate(ev_tape *t, cm_lm *lm, const int32_t *prompt, int n_prompt, const cm_lm_gen_params *p,
                           char **text);

/* Generation prompt for a question: through the chat template when one is set (the question as the user's
 * turn), else "Question: {q}\nAnswer:". Token ids malloc'd. */
cm_status ev_generation_prompt(cm_eval *ev, cm_lm *lm, const char *question, int32_t **ids, int *n);

#endif
