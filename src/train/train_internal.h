/* Shared inside src/train: checkpoints and small helpers of the training loop. */
#ifndef CAMELID_TRAIN_INTERNAL_H
#define CAMELID_TRAIN_INTERNAL_H

#include <stdint.h>
#include <time.h>

#include "camelid/tokenizer.h"
#include "camelid/train.h"

/* Write RUN_DIR/checkpoints/step-NNNNNN atomically (see checkpoint.c) and point RUN_DIR/latest at it;
 * *written (may be NULL) receives the folder's path. */
cm_status cm_train_checkpoint_save(const char *out_dir, int step, const cm_params *p, const float *m,
                                   const float *v, const cm_tokenizer *tok, const char *state_json,
                                   char **written);
/* Load a checkpoint into p (whose config must match), m and v; *state_json gets trainer_state.json. */
cm_status cm_train_checkpoint_load(const char *ckpt_dir, cm_params *p, float *m, float *v, char **state_json);
/* The pieces of a checkpoint write, for loops that store other things (adapters): begin makes an empty
 * RUN_DIR/checkpoints/step-NNNNNN.tmp (*tmp, heap); the caller writes its files there; commit adds
 * trainer_state.json, fsyncs, renames it into place and points RUN_DIR/latest at it. */
cm_status cm_train_checkpoint_begin(const char *out_dir, int step, char **tmp);
cm_status cm_train_checkpoint_commit(const char *out_dir, int step, const char *state_json, char **written);
/* AdamW moments as optimizer.safetensors ("m.<tensor>", "v.<tensor>", F32), and back (every tensor checked). */
cm_status cm_train_write_moments(const char *path, const cm_param_tensor *tensors, int n_tensors, const float *m,
                                 const float *v);
cm_status cm_train_read_moments(const char *path, const cm_param_tensor *tensors, int n_tensors, float *m, float *v);
/* On resume: keep the log lines up to `last_step` (the steps that run again go), rewritten atomically. */
cm_status cm_train_truncate_log(const char *path, int last_step);
/* rm -r of a folder of plain files. */
cm_status cm_train_remove_dir(const char *dir);

/* trainer_state.json, the record of a run in each checkpoint (run_state.c). `settings` are the integers that
 * must match for a resume to continue the same run (each named by its key in the file and its CLI flag). */
typedef struct {
    const char *key, *flag;
    long long value;
} cm_run_setting;
typedef struct {
    const char *format; /* "camelid-train-state", "camelid-finetune-state" */
    const char *mode;   /* NULL, or the fine-tuning mode, which must match on resume */
    int steps;          /* the run's horizon */
    double lr;          /* the peak learning rate, for the record */
    cm_rope_layout rope;
    int check_rope; /* the optimizer state is in the model's RoPE layout, so a resume must have the same */
    cm_run_setting settings[6];
    int n_settings;
} cm_run_state;
/* The file's text for a checkpoint at `step` (heap; NULL when out of memory). */
char *cm_run_state_json(const cm_run_state *rs, int step, double loss);
/* Check a checkpoint's trainer_state.json (`text`, from the folder `ckpt`) against this run and give its step:
 * a setting, the mode or the RoPE layout that differs is refused with the flag to fix. */
cm_status cm_run_state_check(const cm_run_state *rs, const char *text, const char *ckpt, int *step);

/* splitmix64's finalizer: the counter-based hash behind the stateless data order, the shuffles' and dropout's
 * seeds. */
static inline uint64_t cm_train_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Monotonic seconds, for tokens/s and step times. */
static inline double cm_train_now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#endif
