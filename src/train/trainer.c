/* The training loop (see include/camelid/trainer.h).
 *
 * Data order is stateless: the window of row r of micro-batch k of step s starts at a hash of (seed, s, k, r),
 * so a resumed run, or R data-parallel ranks each taking a slice of the rows, draw exactly the windows one
 * uninterrupted process would. With that, a checkpoint needs only the weights, the AdamW moments and the
 * step to continue bit for bit. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "camelid/file.h"
#include "camelid/shards.h"
#include "camelid/train_ops.h"
#include "camelid/trainer.h"
#include "train/train_internal.h"

void cm_train_options_defaults(cm_train_options *o) {
    memset(o, 0, sizeof *o);
    o->batch = 8;
    o->seq = 256;
    o->grad_accum = 1;
    o->steps = 1000;
    o->eval_every = 100;
    o->eval_batches = 8;
    o->lr = (cm_lr_schedule){CM_LR_COSINE, 1e-3f, 0, 1000, 0.1f};
    o->adamw = cm_adamw_defaults();
    o->clip = 1.0f;
    o->seed = 1337;
    o->threads = 1;
}

cm_status cm_train_data_tokenizer(const char *data_dir, char **path, int *vocab_size) {
    *path = NULL;
    *vocab_size = 0;
    char *manifest = cm_path_join(data_dir, "manifest.json");
    if (!manifest) return cm_error(CM_ERR_NOMEM, "out of memory");
    json_error_t je;
    json_t *j = json_load_file(manifest, 0, &je);
    json_t *t = j ? json_object_get(j, "tokenizer") : NULL;
    cm_status st = CM_OK;
    if (!j)
        st = cm_error(CM_ERR_FORMAT, "%s:%d: %s", manifest, je.line, je.text);
    else if (!json_is_string(t))
        st = cm_error(CM_ERR_NOT_FOUND, "%s: no \"tokenizer\" entry", manifest);
    else if (!(*path = strdup(json_string_value(t))))
        st = cm_error(CM_ERR_NOMEM, "out of memory");
    else if (json_is_integer(json_object_get(j, "vocab_size")))
        *vocab_size = (int)json_integer_value(json_object_get(j, "vocab_size"));
    json_decref(j);
    free(manifest);
    return st;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Start of the window of global row `row` of micro-batch `micro` of step `step` (from 1). */
static int64_t window_start(uint64_t seed, int step, int micro, int row, int64_t n_windows) {
    uint64_t h = mix64(mix64(mix64(seed) ^ (uint64_t)step) ^ ((uint64_t)micro << 32 | (uint32_t)row));
    return (int64_t)(h % (uint64_t)n_windows);
}

/* Round to the nearest bf16 (ties to even), kept in f32. */
static float round_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

typedef struct run {
    const cm_train_options *o;
    cm_params *params, *work, *grads; /* work = params, or their bf16 rounding */
    float *m, *v;
    cm_lm_train *lm;
    cm_pool *pool;
    cm_shards *train, *val;
    int32_t *window, *tokens, *targets;
    FILE *log;
    char *log_path;
} run;

static cm_status load_rows(run *r, const cm_shards *s, const int64_t *starts, int rows, cm_train_batch *b) {
    int T = r->o->seq;
    for (int i = 0; i < rows; i++) {
        CM_TRY(cm_shards_read(s, starts[i], T + 1, r->window));
        memcpy(r->tokens + (size_t)i * T, r->window, T * sizeof(int32_t));
        memcpy(r->targets + (size_t)i * T, r->window + 1, T * sizeof(int32_t));
    }
    *b = (cm_train_batch){.B = rows, .T = T, .tokens = r->tokens, .targets = r->targets};
    return CM_OK;
}

/* Mean loss over the first eval_batches x batch non-overlapping windows of the val split. */
static cm_status evaluate(run *r, double *val_loss) {
    int T = r->o->seq, B = r->o->batch;
    int64_t n_windows = (cm_shards_n_tokens(r->val) - 1) / T, want = (int64_t)r->o->eval_batches * B;
    if (n_windows > want) n_windows = want;
    double sum = 0;
    long count = 0;
    int64_t starts[4096];
    for (int64_t w = 0; w < n_windows; w += B) {
        int rows = (int)(n_windows - w < B ? n_windows - w : B);
        for (int i = 0; i < rows && i < 4096; i++) starts[i] = (w + i) * T;
        cm_train_batch b;
        CM_TRY(load_rows(r, r->val, starts, rows, &b));
        double loss;
        int n;
        CM_TRY(cm_lm_forward(r->lm, r->work, &b, &loss, &n));
        sum += loss;
        count += n;
    }
    *val_loss = count ? sum / count : NAN;
    return CM_OK;
}

static char *state_json(const cm_train_options *o, int step, double loss, cm_rope_layout rope) {
    char *s = NULL;
    const char *layout = rope == CM_ROPE_HALF ? "half" : "interleaved";
    if (asprintf(&s,
                 "{\n  \"format\": \"camelid-train-state\",\n  \"version\": 1,\n  \"step\": %d,\n  \"steps\": %d,\n"
                 "  \"batch\": %d,\n  \"seq\": %d,\n  \"grad_accum\": %d,\n  \"seed\": %llu,\n  \"lr\": %.9g,\n"
                 "  \"loss\": %.9g,\n  \"rope_layout\": \"%s\",\n  \"moments_layout\": \"as rope_layout\"\n}\n",
                 step, o->steps, o->batch, o->seq, o->grad_accum, (unsigned long long)o->seed, o->lr.lr, loss,
                 layout) < 0)
        return NULL;
    return s;
}

/* The checkpoint's step, after checking that it was made with this run's batch, seq, accumulation and seed
 * (anything else would not continue the same run). */
static cm_status parse_state(const char *text, const char *ckpt, const cm_train_options *o, cm_rope_layout rope,
                             int *step) {
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j) return cm_error(CM_ERR_FORMAT, "%s/trainer_state.json:%d: %s", ckpt, je.line, je.text);
    cm_status st = CM_OK;
    json_t *s = json_object_get(j, "step");
    if (!json_is_integer(s) || json_integer_value(s) < 0)
        st = cm_error(CM_ERR_FORMAT, "%s/trainer_state.json: \"step\" should be a non-negative integer", ckpt);
    else
        *step = (int)json_integer_value(s);
    static const char *const keys[4] = {"batch", "seq", "grad_accum", "seed"};
    long long want[4] = {o->batch, o->seq, o->grad_accum, (long long)o->seed};
    static const char *const flags[4] = {"--batch", "--seq", "--grad-accum", "--seed"};
    for (int i = 0; i < 4 && !st; i++) {
        json_t *v = json_object_get(j, keys[i]);
        if (!json_is_integer(v))
            st = cm_error(CM_ERR_FORMAT, "%s/trainer_state.json: \"%s\" should be an integer", ckpt, keys[i]);
        else if (json_integer_value(v) != want[i])
            st = cm_error(CM_ERR_ARG, "%s was made with %s %lld; resume with the same value (this run has %lld)", ckpt,
                          flags[i], (long long)json_integer_value(v), want[i]);
    }
    json_t *layout = json_object_get(j, "rope_layout");
    const char *want_layout = rope == CM_ROPE_HALF ? "half" : "interleaved";
    if (!st && (!json_is_string(layout) || strcmp(json_string_value(layout), want_layout) != 0))
        st = cm_error(CM_ERR_ARG,
                      "%s: its optimizer state is in the %s RoPE layout, this run's model in the %s one (start "
                      "the run from the same --config or --init-from)",
                      ckpt, json_is_string(layout) ? json_string_value(layout) : "(unknown)", want_layout);
    json_decref(j);
    return st;
}

/* On resume, drop log lines past the checkpoint (steps that will run again). */
static cm_status truncate_log(const char *path, int last_step) {
    if (!cm_path_exists(path)) return CM_OK;
    char *text;
    size_t len;
    CM_TRY(cm_read_file(path, (size_t)1 << 30, &text, &len));
    size_t keep = 0;
    for (size_t i = 0; i < len;) {
        char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) + 1 : len;
        json_t *j = json_loadb(text + i, end - i, 0, NULL);
        json_t *s = j ? json_object_get(j, "step") : NULL;
        bool ok = nl && s && json_is_integer(s) && json_integer_value(s) <= last_step;
        json_decref(j);
        if (!ok) break;
        keep = end;
        i = end;
    }
    cm_status st = cm_write_file_atomic(path, text, keep);
    free(text);
    return st;
}

/* RUN_DIR/model: the trained model as an HF folder, replaced whole (written beside, then renamed). */
static cm_status save_final_model(run *r) {
    char *dir = cm_path_join(r->o->out_dir, "model"), *tmp = cm_path_join(r->o->out_dir, "model.tmp"),
         *old = cm_path_join(r->o->out_dir, "model.old");
    cm_model *view = NULL;
    cm_status st = (!dir || !tmp || !old) ? cm_error(CM_ERR_NOMEM, "out of memory") : CM_OK;
    if (!st) st = cm_train_remove_dir(tmp);
    if (!st) st = cm_params_as_model(r->params, &view);
    if (!st) st = cm_model_save_hf(view, r->o->tokenizer, tmp, CM_DTYPE_F32);
    if (!st) st = cm_train_remove_dir(old);
    if (!st && cm_path_exists(dir) && rename(dir, old) != 0) st = cm_error(CM_ERR_IO, "%s: cannot move aside", dir);
    if (!st && rename(tmp, dir) != 0) st = cm_error(CM_ERR_IO, "%s: cannot rename into place", dir);
    if (!st) st = cm_train_remove_dir(old);
    cm_model_close(view);
    free(dir), free(tmp), free(old);
    return st;
}

static cm_status save_checkpoint(run *r, int step, double loss, char **written) {
    char *state = state_json(r->o, step, loss, r->params->cfg.rope_layout);
    if (!state) return cm_error(CM_ERR_NOMEM, "out of memory");
    if (r->log) {
        fflush(r->log);
        fsync(fileno(r->log)); /* the log is never behind the checkpoint */
    }
    cm_status st = cm_train_checkpoint_save(r->o->out_dir, step, r->params, r->m, r->v, r->o->tokenizer, state,
                                            written);
    free(state);
    if (!st && step == r->o->steps) st = save_final_model(r);
    if (!st) st = cm_train_report(r->o->out_dir, r->o->out_dir);
    return st;
}

static void refresh_work(run *r) {
    if (r->work == r->params) return;
    for (size_t i = 0; i < r->params->n; i++) r->work->data[i] = round_bf16(r->params->data[i]);
}

static cm_status check_options(const cm_train_options *o) {
    if (!o->data_dir || !o->out_dir) return cm_error(CM_ERR_ARG, "training needs a data folder and an output folder");
    if (o->batch < 1 || o->seq < 2 || o->grad_accum < 1 || o->steps < 1)
        return cm_error(CM_ERR_ARG, "training needs batch >= 1, seq >= 2, grad-accum >= 1 and steps >= 1");
    if (o->batch > 4096) return cm_error(CM_ERR_ARG, "batch %d is above the limit of 4096 rows", o->batch);
    if (o->stop_after < 0 || o->eval_every < 0 || o->ckpt_every < 0 || o->eval_batches < 1)
        return cm_error(CM_ERR_ARG, "stop-after, eval-every and ckpt-every must be >= 0, eval-batches >= 1");
    if (!(o->lr.lr > 0) || !isfinite(o->lr.lr)) return cm_error(CM_ERR_ARG, "the learning rate must be > 0");
    return CM_OK;
}

static void run_close(run *r) {
    if (r->log) fclose(r->log);
    free(r->log_path);
    cm_shards_close(r->train);
    cm_shards_close(r->val);
    cm_lm_train_close(r->lm);
    cm_pool_close(r->pool);
    if (r->work != r->params) cm_params_close(r->work);
    cm_params_close(r->grads);
    free(r->m);
    free(r->v);
    free(r->window);
    free(r->tokens);
    free(r->targets);
}

static cm_status run_open(run *r, const cm_train_options *o, cm_params *params) {
    memset(r, 0, sizeof *r);
    r->o = o;
    r->params = r->work = params;
    const cm_config *c = &params->cfg;
    CM_TRY(cm_shards_open(o->data_dir, "train", &r->train));
    if (cm_shards_max_token(r->train) >= (uint32_t)c->vocab_size)
        return cm_error(CM_ERR_ARG, "%s: token id %u is outside the model's vocabulary of %d", o->data_dir,
                        cm_shards_max_token(r->train), c->vocab_size);
    if (cm_shards_n_tokens(r->train) < o->seq + 1)
        return cm_error(CM_ERR_ARG, "%s: the train split has %lld tokens, fewer than seq + 1 = %d", o->data_dir,
                        (long long)cm_shards_n_tokens(r->train), o->seq + 1);
    if (cm_shards_open(o->data_dir, "val", &r->val) != CM_OK) {
        r->val = NULL; /* no validation split: no val_loss */
        cm_clear_error();
    } else if (cm_shards_n_tokens(r->val) < o->seq + 1 || cm_shards_max_token(r->val) >= (uint32_t)c->vocab_size) {
        cm_shards_close(r->val);
        r->val = NULL;
    }
    CM_TRY(cm_pool_open(o->threads, &r->pool));
    cm_train_blas_threads(o->threads);
    CM_TRY(cm_lm_train_open(c, o->batch, o->seq, r->pool, &r->lm));
    CM_TRY(cm_params_open(c, &r->grads));
    if (o->bf16) CM_TRY(cm_params_open(c, &r->work));
    r->m = calloc(params->n, sizeof(float));
    r->v = calloc(params->n, sizeof(float));
    r->window = malloc((size_t)(o->seq + 1) * sizeof(int32_t));
    r->tokens = malloc((size_t)o->batch * o->seq * sizeof(int32_t));
    r->targets = malloc((size_t)o->batch * o->seq * sizeof(int32_t));
    if (!r->m || !r->v || !r->window || !r->tokens || !r->targets)
        return cm_error(CM_ERR_NOMEM, "out of memory for the optimizer state");
    CM_TRY(cm_mkdir_p(o->out_dir));
    r->log_path = cm_path_join(o->out_dir, "log.jsonl");
    if (!r->log_path) return cm_error(CM_ERR_NOMEM, "out of memory");
    return CM_OK;
}

/* One optimizer step: grad_accum micro-batches of `batch` rows; returns the mean loss and the grad norm
 * before clipping. */
static cm_status train_step(run *r, int step, double *loss, double *grad_norm) {
    const cm_train_options *o = r->o;
    int64_t n_windows = cm_shards_n_tokens(r->train) - o->seq;
    double dloss = 1.0 / ((double)o->batch * o->seq * o->grad_accum); /* every target counts in pretraining */
    cm_params_zero(r->grads);
    double sum = 0;
    long counted = 0;
    int64_t starts[4096];
    for (int k = 0; k < o->grad_accum; k++) {
        for (int i = 0; i < o->batch; i++) starts[i] = window_start(o->seed, step, k, i, n_windows);
        cm_train_batch b;
        CM_TRY(load_rows(r, r->train, starts, o->batch, &b));
        double l;
        int n;
        CM_TRY(cm_lm_forward(r->lm, r->work, &b, &l, &n));
        CM_TRY(cm_lm_backward(r->lm, r->work, r->grads, (float)dloss));
        sum += l;
        counted += n;
    }
    *loss = sum / (double)counted;
    *grad_norm = sqrt(cm_grad_sumsq(r->grads, 0, r->grads->n));
    return CM_OK;
}

cm_status cm_train_run(const cm_train_options *o, cm_params *params) {
    CM_TRY(check_options(o));
    run r;
    cm_status st = run_open(&r, o, params);
    int step = 0;
    char *ckpt = NULL, *state = NULL;
    if (!st && o->resume) {
        st = cm_train_latest_checkpoint(o->out_dir, &ckpt);
        if (st == CM_ERR_NOT_FOUND)
            cm_error_prefix(st, "nothing to resume (run without --resume to start)");
        if (!st) st = cm_train_checkpoint_load(ckpt, params, r.m, r.v, &state);
        if (!st) st = parse_state(state, ckpt, o, params->cfg.rope_layout, &step);
        if (!st) st = truncate_log(r.log_path, step);
    } else if (!st) {
        /* a fresh run replaces the log of an earlier one in the same folder */
        st = cm_write_file_atomic(r.log_path, "", 0);
    }
    if (!st && step >= o->steps)
        st = cm_error(CM_ERR_ARG, "the checkpoint in %s is at step %d, already at the horizon of --steps %d",
                      o->out_dir, step, o->steps);
    if (!st) {
        r.log = fopen(r.log_path, "a");
        if (!r.log) st = cm_error(CM_ERR_IO, "%s: cannot open for appending", r.log_path);
    }
    free(ckpt);
    free(state);
    int last = o->stop_after > 0 && o->stop_after < o->steps ? o->stop_after : o->steps;
    int first = step + 1;
    double t_start = now_s(), loss = NAN;
    char *written = NULL;
    for (int s = first; !st && s <= last; s++) {
        double t0 = now_s(), grad_norm;
        refresh_work(&r);
        st = train_step(&r, s, &loss, &grad_norm);
        if (st) break;
        if (!isfinite(loss) || !isfinite(grad_norm)) {
            char *prev = NULL;
            cm_train_latest_checkpoint(o->out_dir, &prev);
            st = cm_error(CM_ERR_ARG, "the %s became NaN or infinite at step %d (loss %g, grad norm %g); stopped without updating. %s%s",
                          isfinite(loss) ? "gradient" : "loss", s, loss, grad_norm,
                          prev ? "The last good checkpoint is " : "No checkpoint was written yet.", prev ? prev : "");
            free(prev);
            break;
        }
        cm_grad_clip(r.grads, grad_norm, o->clip);
        float lr = cm_lr_at(&o->lr, s - 1);
        cm_adamw_update(&o->adamw, lr, s, params, r.grads, r.m, r.v, 0, params->n);
        double dt = now_s() - t0;
        double val = NAN;
        bool last_step = s == last;
        if (r.val && ((o->eval_every > 0 && s % o->eval_every == 0) || s == o->steps)) {
            refresh_work(&r);
            st = evaluate(&r, &val);
            if (st) break;
        }
        double tps = (double)o->batch * o->seq * o->grad_accum / dt;
        fprintf(r.log, "{\"step\": %d, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, \"tokens_per_s\": %.1f", s,
                loss, lr, grad_norm, tps);
        if (!isnan(val)) fprintf(r.log, ", \"val_loss\": %.9g", val);
        fputs("}\n", r.log);
        if (fflush(r.log) != 0) {
            st = cm_error(CM_ERR_IO, "%s: write failed (disk full?)", r.log_path);
            break;
        }
        int stop = 0;
        cm_train_progress p = {s, o->steps, first, loss, val, lr, grad_norm, tps, now_s() - t_start, NULL};
        bool want_ckpt = last_step || (o->ckpt_every > 0 && s % o->ckpt_every == 0);
        if (o->progress && !want_ckpt) stop = o->progress(o->user, &p);
        if (want_ckpt || stop) {
            free(written);
            written = NULL;
            st = save_checkpoint(&r, s, loss, &written);
            if (st) break;
            p.checkpoint = written;
            if (o->progress && want_ckpt) stop = o->progress(o->user, &p);
        }
        if (stop) break;
    }
    free(written);
    run_close(&r);
    return st;
}
