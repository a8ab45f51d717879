/* The evaluation harness (DESIGN.md "Evaluation"): task file -> requests (loglikelihood / generate) -> the
 * model interface (eval_lm.h) -> metrics -> a results document shaped like lm-evaluation-harness 0.4's JSON.
 *
 * Tasks are named by a spec "KIND:DATA":
 *   mmlu:DIR[:SUBJECT]   the original CSV layout: DIR/test/<subject>_test.csv, shots from
 * DIR/dev/<subject>_dev.csv perplexity:FILE      a text file (one document) or a .jsonl of {"text": ...}
 * documents bigbench:TASK.json   a BIG-bench JSON task snowball:FILE.json   a Snowballed Hallucination set
 * (FACTS 9.4) The library never prints: progress goes through a callback, and the caller decides when to
 * write the document (a checkpoint callback says when it changed). */
#ifndef CAMELID_EVAL_H
#define CAMELID_EVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/chat.h"
#include "camelid/dist.h"
#include "camelid/eval_lm.h"
#include "camelid/status.h"

typedef enum {
    CM_PPL_LM_EVAL = 0, /* lm-eval's rolling windows (FACTS 9.2) */
    CM_PPL_LLAMACPP,    /* llama-perplexity: disjoint n_ctx chunks, BOS first, the second half scored */
} cm_ppl_mode;

typedef struct cm_eval_options {
    int limit;          /* items per task (per MMLU subject, documents for perplexity); <= 0: all */
    int shots;          /* < 0: each task's default (MMLU 5, BIG-bench 0) */
    uint64_t seed;      /* recorded; BIG-bench few-shot examples are picked with it */
    int max_gen_tokens; /* for generation tasks (default 128) */
    bool log_samples;   /* keep per-item records under "samples" */
    cm_ppl_mode ppl_mode;
    bool use_template; /* generation prompts go through a chat template */
    cm_template_id template_id;
    /* A group of ranks (every rank runs the same tasks with the same options): each task's requests are split
     * over the ranks in contiguous shares, and rank 0's document gets every result, the same as one process
     * computes (only the stats of prefix sharing differ). NULL: one process. */
    struct cm_dist *dist;
} cm_eval_options;

cm_eval_options cm_eval_defaults(void);

/* What identifies the model in the results (copied). */
typedef struct cm_eval_model_info {
    const char *path;
    const char *sha256; /* of the weights file(s), hex */
    const char *format; /* "llama2c", "gguf", ... */
    const char *dtype;  /* "F32", ... */
    const char *tokenizer;
    const char *const *adapters;
    int n_adapters;
    int64_t n_params;
    int ctx_len;
    int n_threads;
} cm_eval_model_info;

typedef struct cm_eval_progress {
    const char *task; /* the task running (its results key, e.g. "mmlu" or "perplexity_input") */
    int64_t done, total;
    double elapsed; /* seconds since the task started */
} cm_eval_progress;

typedef struct cm_eval_hooks {
    /* Called after every item; return nonzero to stop (e.g. on ^C): the task then ends with
     * cm_eval_interrupted() true and what was computed is kept. May be NULL. */
    int (*progress)(void *user, const cm_eval_progress *p);
    /* The document changed (at most about once a second, and at the end of every task). May be NULL. */
    void (*checkpoint)(void *user);
    void *user;
} cm_eval_hooks;

typedef struct cm_eval cm_eval;

cm_status cm_eval_open(const cm_eval_model_info *model, const cm_eval_options *opt, cm_eval **out);
void cm_eval_close(cm_eval *ev);

/* Check a spec's syntax without reading data: a known kind, a non-empty data part, the path exists. */
cm_status cm_eval_check_spec(const char *spec);
/* Run one task against `lm`; its results join the document. On error the document keeps every earlier
 * result (and this task's, when it was stopped part-way by the progress callback). */
cm_status cm_eval_run_task(cm_eval *ev, cm_lm *lm, const char *spec, const cm_eval_hooks *hooks);
bool cm_eval_interrupted(const cm_eval *ev);

/* Mark the run ("running" until then): "complete", "interrupted" or "failed" with an error message. */
void cm_eval_finish(cm_eval *ev, const char *status, const char *error);
/* Record the model interface's throughput figures (cm_lm_stats) in the document. */
void cm_eval_set_lm_stats(cm_eval *ev, const cm_lm_stats *st, double wall_seconds);

/* The document as strict JSON (NaN/Inf written as null), malloc'd, NUL-terminated. Keys in a fixed order;
 * only "date" and the timing figures under "camelid" change between identical runs. */
cm_status cm_eval_to_json(const cm_eval *ev, char **json, size_t *len);
/* Write it atomically (temp file, fsync, rename). */
cm_status cm_eval_write(const cm_eval *ev, const char *path);

/* The MMLU prompt of one test row (FACTS 9.1): the description line for `subject` (underscores as spaces),
 * the first `shots` rows of `dev` with their answers, then the row's question ending in "Answer:". Malloc'd.
 */
struct cm_csv;
struct cm_csv_row;
cm_status cm_eval_mmlu_prompt(const char *subject, const struct cm_csv *dev, int shots,
                              const struct cm_csv_row *row, char **out);

/* SHA-256 of a file (hex, 65 bytes with the NUL) and of a model's weights: the file itself for a single-file
 * format, the *.safetensors files of an HF folder in name order, hashed as one stream. */
cm_status cm_sha256_file(const char *path, char hex[65]);
cm_status cm_sha256_model_weights(const char *path, char hex[65]);
void cm_sha256_buffer(const void *data, size_t len, char hex[65]);

#endif
