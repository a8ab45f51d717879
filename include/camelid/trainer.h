/* The training loop: token shards -> batches -> forward -> backward -> clip -> AdamW, with periodic
 * validation, atomic checkpoints (HF folder + optimizer sidecar) that resume bit-exactly, a JSONL log and an
 * HTML report. The library never prints: progress goes through a callback. */
#ifndef CAMELID_TRAINER_H
#define CAMELID_TRAINER_H

#include <stdbool.h>
#include <stdint.h>

#include "camelid/dist.h"
#include "camelid/optim.h"
#include "camelid/tokenizer.h"
#include "camelid/train.h"

typedef struct cm_train_progress {
    int step, steps;   /* the step just finished (from 1) and the horizon */
    int first_step;    /* the first step of this run (> 1 after a resume) */
    double loss;       /* mean training loss of the step */
    double val_loss;   /* NAN unless this step evaluated */
    float lr;
    double grad_norm;
    double tokens_per_s;
    double elapsed_s; /* since this run started */
    const char *checkpoint; /* the checkpoint folder written after this step, or NULL */
} cm_train_progress;

typedef struct cm_train_options {
    const char *data_dir; /* shards from tokenize-corpus: split "train", and "val" when eval_every > 0 */
    const char *out_dir;  /* RUN_DIR: log.jsonl, report.html, checkpoints/, latest, model/ */
    const cm_tokenizer *tokenizer; /* saved with every checkpoint (may be NULL) */
    int batch, seq, grad_accum;
    int steps;      /* total horizon (also when resuming) */
    int stop_after; /* end after this step with a checkpoint, as an interruption would (0 = run to steps) */
    int eval_every; /* 0 = never (the last step still evaluates when there is a val split) */
    int eval_batches;
    int ckpt_every; /* 0 = only at the last step */
    cm_lr_schedule lr;
    cm_adamw_config adamw;
    float clip; /* global grad-norm clip, 0 = off */
    uint64_t seed;
    bool resume;
    bool bf16; /* forward and backward see bf16-rounded weights; the f32 master copy is updated */
    int threads;
    /* Data parallelism: with a group of R ranks (every rank calls cm_train_run with the same options), each
     * rank runs rows [r B/R, (r+1) B/R) of every micro-batch (batch must be a multiple of R), gradients are
     * summed over the ranks, and rank 0 alone writes the log, the checkpoints and the model and calls
     * `progress`. NULL: one process. */
    cm_dist *dist;
    /* 1: ZeRO stage 1, each rank keeps AdamW moments for its contiguous shard of the parameters only
     * (reduce-scatter the gradients, update the shard, all-gather the parameters); 0: every rank updates all. */
    int zero;
    /* Called after every step; a nonzero return stops the run after writing a checkpoint. */
    int (*progress)(void *user, const cm_train_progress *p);
    void *user;
} cm_train_options;

/* Defaults: batch 8, seq 256, grad_accum 1, steps 1000, eval_every 100, eval_batches 8, ckpt_every 0,
 * cosine lr 1e-3 with 0 warm-up and min 0.1x, AdamW defaults, clip 1.0, seed 1337, 1 thread. */
void cm_train_options_defaults(cm_train_options *o);

/* Train `params` in place (initial weights; with resume they are replaced by the checkpoint's, whose config
 * must equal params->cfg). With a group of ranks, rank 0's initial weights are broadcast, checkpoints hold
 * the whole optimizer state (gathered to rank 0), so a run written by R ranks resumes on any number, and
 * an error on any rank ends every rank's call with that error. */
cm_status cm_train_run(const cm_train_options *o, cm_params *params);

/* Bytes of AdamW moments (m and v) the largest rank holds for n_params parameters under these options: all of
 * them, or with ZeRO-1 its shard (about 1/R). */
size_t cm_train_optimizer_bytes(const cm_train_options *o, size_t n_params);

/* The checkpoint folder RUN_DIR/latest points to (heap string), or CM_ERR_NOT_FOUND. */
cm_status cm_train_latest_checkpoint(const char *out_dir, char **ckpt_dir);

/* The tokenizer a data folder was made with (manifest.json "tokenizer", a heap string) and its vocabulary
 * size (0 if the manifest does not say). */
cm_status cm_train_data_tokenizer(const char *data_dir, char **path, int *vocab_size);

/* Write RUN_DIR/report.html from RUN_DIR/log.jsonl: training and validation loss curves as inline SVG. */
cm_status cm_train_report(const char *out_dir, const char *title);

#endif
