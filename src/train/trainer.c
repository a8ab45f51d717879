/* The training loop (see include/camelid/trainer.h).
 *
 * Data order is stateless: the window of row r of micro-batch k of step s starts at a hash of (seed, s, k, r),
 * so a resumed run, or R data-parallel ranks each taking a slice of the rows, draw exactly the windows one
 * uninterrupted process would. With that, a checkpoint needs only the weights, the AdamW moments and the
 * step to continue bit for bit.
 *
 * Data parallelism (options.dist with R > 1 ranks): rank r runs rows [r B/R, (r+1) B/R) of every micro-batch,
 * with dloss = 1 / (targets of the whole global step), so the sum of the ranks' gradients (one all-reduce) is
 * the single-process gradient up to the order of the additions. The loss sums and counts are all-reduced
 * too, and every rank applies the same update to its identical copy of the weights. With ZeRO-1 the summed
 * gradient is reduce-scattered instead: rank r keeps only its contiguous shard of it and of the AdamW
 * moments, clips with the all-reduced norm, updates its shard of the weights, and the shards are
 * all-gathered. Every place where one rank can fail ends with cm_dist_agree, so a failure stops every rank
 * with its message rather than leaving the others waiting in a collective. */
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

/* Start of the window of global row `row` of micro-batch `micro` of step `step` (from 1). */
static int64_t window_start(uint64_t seed, int step, int micro, int row, int64_t n_windows) {
    uint64_t h = cm_train_mix64(cm_train_mix64(cm_train_mix64(seed) ^ (uint64_t)step) ^ ((uint64_t)micro << 32 | (uint32_t)row));
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
    float *m, *v;                      /* AdamW moments: all parameters, or this rank's shard with ZeRO-1 */
    cm_dist *dist;
    int rank, ranks;
    int rows, row0; /* this rank's rows of each micro-batch: global rows [row0, row0 + rows) */
    bool zero;      /* ZeRO-1 with more than one rank */
    size_t *counts; /* ZeRO-1: the shard size (floats) of every rank */
    size_t shard0, shard_n; /* this rank's shard of the flat parameters: [shard0, shard0 + shard_n) */
    float *gshard;          /* ZeRO-1: this rank's shard of the summed gradient */
    cm_param_tensor *shard_tensors;
    cm_params pview, gview; /* the shard of the weights and of the gradient, as parameters for AdamW */
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
    cm_status st = CM_OK;
    for (int64_t w = 0; w < n_windows && !st; w += B) {
        int rows = (int)(n_windows - w < B ? n_windows - w : B);
        size_t b0, b1; /* this rank's rows of the batch */
        cm_dist_share((size_t)rows, r->ranks, r->rank, &b0, &b1);
        int mine = (int)(b1 - b0);
        if (mine == 0) continue;
        for (int i = 0; i < mine && i < 4096; i++) starts[i] = (w + (int64_t)b0 + i) * T;
        cm_train_batch b;
        double loss;
        int n;
        st = load_rows(r, r->val, starts, mine, &b);
        if (!st) st = cm_lm_forward(r->lm, r->work, &b, &loss, &n);
        if (!st) {
            sum += loss;
            count += n;
        }
    }
    if (r->ranks > 1) {
        CM_TRY(cm_dist_agree(r->dist, st));
        double red[2] = {sum, (double)count};
        CM_TRY(cm_dist_allreduce_f64(r->dist, red, 2));
        sum = red[0];
        count = (long)red[1];
    }
    CM_TRY(st);
    *val_loss = count ? sum / count : NAN;
    return CM_OK;
}

/* What a checkpoint records of this run; a resume must have the same batch, seq, accumulation and seed (they
 * decide the data order) and the same RoPE layout (the optimizer moments are stored in it). */
static cm_run_state run_state(const cm_train_options *o, cm_rope_layout rope) {
    return (cm_run_state){.format = "camelid-train-state",
                          .steps = o->steps,
                          .lr = o->lr.lr,
                          .rope = rope,
                          .check_rope = 1,
                          .settings = {{"batch", "--batch", o->batch},
                                       {"seq", "--seq", o->seq},
                                       {"grad_accum", "--grad-accum", o->grad_accum},
                                       {"seed", "--seed", (long long)o->seed}},
                          .n_settings = 4};
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

/* Rank 0 writes the checkpoint; with ZeRO-1 the moments' shards are gathered to it first, so a checkpoint is
 * the same whatever the number of ranks that wrote it. */
static cm_status save_checkpoint(run *r, int step, double loss, char **written) {
    cm_status st = CM_OK;
    float *m = r->m, *v = r->v, *full = NULL;
    size_t n = r->params->n;
    if (r->zero) {
        if (r->rank == 0 && !(full = malloc(2 * n * sizeof(float))))
            st = cm_error(CM_ERR_NOMEM, "out of memory for gathering the optimizer state (%zu floats)", 2 * n);
        CM_TRY(cm_dist_agree(r->dist, st));
        m = full;
        v = full ? full + n : NULL;
        st = cm_dist_gather_f32(r->dist, r->m, m, r->counts, 0);
        if (!st) st = cm_dist_gather_f32(r->dist, r->v, v, r->counts, 0);
    }
    if (!st && r->rank == 0) {
        cm_run_state rs = run_state(r->o, r->params->cfg.rope_layout);
        char *state = cm_run_state_json(&rs, step, loss);
        if (!state) st = cm_error(CM_ERR_NOMEM, "out of memory");
        if (!st && r->log) {
            fflush(r->log);
            fsync(fileno(r->log)); /* the log is never behind the checkpoint */
        }
        if (!st)
            st = cm_train_checkpoint_save(r->o->out_dir, step, r->params, m, v, r->o->tokenizer, state, written);
        free(state);
        if (!st && step == r->o->steps) st = save_final_model(r);
        if (!st) st = cm_train_report(r->o->out_dir, r->o->out_dir);
    }
    free(full);
    return r->ranks > 1 ? cm_dist_agree(r->dist, st) : st;
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
    int ranks = cm_dist_size(o->dist);
    if (o->batch % ranks != 0)
        return cm_error(CM_ERR_ARG,
                        "--batch %d is the global batch and must split evenly over the %d ranks (use a multiple of "
                        "%d; each rank runs batch / ranks rows of every micro-batch)",
                        o->batch, ranks, ranks);
    if (o->zero < 0 || o->zero > 1) return cm_error(CM_ERR_ARG, "--zero must be 0 or 1, not %d", o->zero);
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
    free(r->counts);
    free(r->gshard);
    free(r->shard_tensors);
}

size_t cm_train_optimizer_bytes(const cm_train_options *o, size_t n_params) {
    int ranks = cm_dist_size(o->dist);
    size_t b = 0, e = n_params;
    if (o->zero == 1 && ranks > 1) cm_dist_share(n_params, ranks, 0, &b, &e); /* rank 0's is the largest */
    return 2 * (e - b) * sizeof(float);
}

/* ZeRO-1: this rank's contiguous shard of the flat parameters, and views of it (weights and gradient) whose
 * tensor table is cut to the shard and rebased, so that AdamW sees each tensor's part with its own weight
 * decay rule. */
static cm_status open_shard(run *r) {
    const cm_params *p = r->params;
    r->counts = malloc((size_t)r->ranks * sizeof *r->counts);
    r->shard_tensors = calloc((size_t)p->n_tensors, sizeof *r->shard_tensors);
    if (!r->counts || !r->shard_tensors) return cm_error(CM_ERR_NOMEM, "out of memory");
    for (int k = 0; k < r->ranks; k++) {
        size_t b, e;
        cm_dist_share(p->n, r->ranks, k, &b, &e);
        r->counts[k] = e - b;
        if (k == r->rank) r->shard0 = b, r->shard_n = e - b;
    }
    r->gshard = malloc((r->shard_n ? r->shard_n : 1) * sizeof(float));
    if (!r->gshard) return cm_error(CM_ERR_NOMEM, "out of memory");
    int nt = 0;
    size_t lo = r->shard0, hi = r->shard0 + r->shard_n;
    for (int i = 0; i < p->n_tensors; i++) {
        const cm_param_tensor *t = &p->tensors[i];
        size_t t0 = t->offset, t1 = t0 + (size_t)t->rows * (size_t)t->cols;
        if (t1 <= lo || t0 >= hi) continue;
        if (t0 < lo) t0 = lo;
        if (t1 > hi) t1 = hi;
        cm_param_tensor *s = &r->shard_tensors[nt++];
        *s = *t;
        s->offset = t0 - lo;
        s->rows = (int64_t)(t1 - t0);
        s->cols = 1;
    }
    r->pview = (cm_params){.cfg = p->cfg, .data = p->data + lo, .n = r->shard_n, .tensors = r->shard_tensors,
                           .n_tensors = nt};
    r->gview = r->pview;
    r->gview.data = r->gshard;
    return CM_OK;
}

static cm_status run_open(run *r, const cm_train_options *o, cm_params *params) {
    r->o = o;
    r->params = r->work = params;
    r->dist = o->dist;
    r->rank = cm_dist_rank(o->dist);
    r->ranks = cm_dist_size(o->dist);
    r->rows = o->batch / r->ranks;
    r->row0 = r->rank * r->rows;
    r->zero = o->zero == 1 && r->ranks > 1;
    r->shard_n = params->n;
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
    CM_TRY(cm_lm_train_open(c, r->rows, o->seq, r->pool, &r->lm));
    CM_TRY(cm_params_open(c, &r->grads));
    if (o->bf16) CM_TRY(cm_params_open(c, &r->work));
    if (r->zero) CM_TRY(open_shard(r));
    r->m = calloc(r->shard_n ? r->shard_n : 1, sizeof(float));
    r->v = calloc(r->shard_n ? r->shard_n : 1, sizeof(float));
    r->window = malloc((size_t)(o->seq + 1) * sizeof(int32_t));
    r->tokens = malloc((size_t)o->batch * o->seq * sizeof(int32_t));
    r->targets = malloc((size_t)o->batch * o->seq * sizeof(int32_t));
    if (!r->m || !r->v || !r->window || !r->tokens || !r->targets)
        return cm_error(CM_ERR_NOMEM, "out of memory for the optimizer state");
    if (r->rank == 0) CM_TRY(cm_mkdir_p(o->out_dir));
    r->log_path = cm_path_join(o->out_dir, "log.jsonl");
    if (!r->log_path) return cm_error(CM_ERR_NOMEM, "out of memory");
    return CM_OK;
}

/* One optimizer step: grad_accum micro-batches of `batch` rows (this rank's share of them); returns the mean
 * loss and the grad norm before clipping, over all ranks. Afterwards r->grads (r->gview with ZeRO-1) holds
 * the summed gradient. */
static cm_status train_step(run *r, int step, double *loss, double *grad_norm) {
    const cm_train_options *o = r->o;
    int64_t n_windows = cm_shards_n_tokens(r->train) - o->seq;
    double dloss = 1.0 / ((double)o->batch * o->seq * o->grad_accum); /* every target counts in pretraining */
    cm_params_zero(r->grads);
    double sum = 0;
    long counted = 0;
    int64_t starts[4096];
    cm_status st = CM_OK;
    for (int k = 0; k < o->grad_accum && !st; k++) {
        for (int i = 0; i < r->rows; i++) starts[i] = window_start(o->seed, step, k, r->row0 + i, n_windows);
        cm_train_batch b;
        double l;
        int n;
        st = load_rows(r, r->train, starts, r->rows, &b);
        if (!st) st = cm_lm_forward(r->lm, r->work, &b, &l, &n);
        if (!st) st = cm_lm_backward(r->lm, r->work, r->grads, (float)dloss);
        if (!st) {
            sum += l;
            counted += n;
        }
    }
    if (r->ranks == 1) {
        CM_TRY(st);
        *loss = sum / (double)counted;
        *grad_norm = sqrt(cm_grad_sumsq_pool(r->grads, 0, r->grads->n, r->pool));
        return CM_OK;
    }
    CM_TRY(cm_dist_agree(r->dist, st));
    double red[3] = {sum, (double)counted, 0};
    if (r->zero) {
        CM_TRY(cm_dist_reduce_scatter_f32(r->dist, r->grads->data, r->gshard, r->counts));
        red[2] = cm_grad_sumsq_pool(&r->gview, 0, r->shard_n, r->pool);
    } else {
        CM_TRY(cm_dist_allreduce_f32(r->dist, r->grads->data, r->grads->n));
    }
    CM_TRY(cm_dist_allreduce_f64(r->dist, red, 3));
    *loss = red[0] / red[1];
    *grad_norm = sqrt(r->zero ? red[2] : cm_grad_sumsq_pool(r->grads, 0, r->grads->n, r->pool));
    return CM_OK;
}

/* Clip and update: every weight here, or this rank's shard then the all-gather of the shards. */
static cm_status update(run *r, int step, float lr, double grad_norm) {
    const cm_train_options *o = r->o;
    if (!r->zero) {
        cm_grad_clip(r->grads, grad_norm, o->clip);
        cm_adamw_update_pool(&o->adamw, lr, step, r->params, r->grads, r->m, r->v, 0, r->params->n, r->pool);
        return CM_OK;
    }
    cm_grad_clip(&r->gview, grad_norm, o->clip);
    cm_adamw_update_pool(&o->adamw, lr, step, &r->pview, &r->gview, r->m, r->v, 0, r->shard_n, r->pool);
    return cm_dist_allgather_f32(r->dist, r->params->data, r->counts);
}

/* Resume: rank 0 reads the checkpoint; the step and the weights are broadcast, the moments broadcast (or
 * scattered by shard with ZeRO-1), so the checkpoint may come from any number of ranks. */
static cm_status resume(run *r, int *step) {
    const cm_train_options *o = r->o;
    cm_params *params = r->params;
    size_t n = params->n;
    char *ckpt = NULL, *state = NULL;
    float *full = NULL, *m = r->m, *v = r->v;
    cm_status st = CM_OK;
    if (r->rank == 0) {
        if (r->zero && !(full = malloc(2 * n * sizeof(float))))
            st = cm_error(CM_ERR_NOMEM, "out of memory for the optimizer state (%zu floats)", 2 * n);
        if (full) m = full, v = full + n;
        if (!st) st = cm_train_latest_checkpoint(o->out_dir, &ckpt);
        if (st == CM_ERR_NOT_FOUND) cm_error_prefix(st, "nothing to resume (run without --resume to start)");
        if (!st) st = cm_train_checkpoint_load(ckpt, params, m, v, &state);
        cm_run_state rs = run_state(o, params->cfg.rope_layout);
        if (!st) st = cm_run_state_check(&rs, state, ckpt, step);
        if (!st) st = cm_train_truncate_log(r->log_path, *step);
    }
    if (r->ranks > 1) {
        st = cm_dist_agree(r->dist, st);
        if (!st) st = cm_dist_bcast(r->dist, step, sizeof *step, 0);
        if (!st) st = cm_dist_bcast(r->dist, params->data, n * sizeof(float), 0);
        if (!st && r->zero) st = cm_dist_scatter_f32(r->dist, m, r->m, r->counts, 0);
        if (!st && r->zero) st = cm_dist_scatter_f32(r->dist, v, r->v, r->counts, 0);
        if (!st && !r->zero) st = cm_dist_bcast(r->dist, r->m, n * sizeof(float), 0);
        if (!st && !r->zero) st = cm_dist_bcast(r->dist, r->v, n * sizeof(float), 0);
    }
    free(full);
    free(ckpt);
    free(state);
    return st;
}

/* With several ranks: whether every rank has the validation split (else none uses it), after an agreement
 * that every rank opened its run. */
static cm_status agree_open(run *r, cm_status st) {
    if (r->ranks == 1) return st;
    CM_TRY(cm_dist_agree(r->dist, st));
    double have_val = r->val != NULL;
    CM_TRY(cm_dist_allreduce_f64(r->dist, &have_val, 1));
    if (have_val < r->ranks && r->val) {
        cm_shards_close(r->val);
        r->val = NULL;
    }
    return CM_OK;
}

cm_status cm_train_run(const cm_train_options *o, cm_params *params) {
    run r;
    memset(&r, 0, sizeof r);
    r.dist = o->dist;
    r.rank = cm_dist_rank(o->dist);
    r.ranks = cm_dist_size(o->dist);
    cm_status st = check_options(o);
    if (!st) st = run_open(&r, o, params);
    st = agree_open(&r, st);
    int step = 0;
    if (!st && o->resume) {
        st = resume(&r, &step);
    } else if (!st) {
        /* a fresh run replaces the log of an earlier one in the same folder */
        if (r.rank == 0) st = cm_write_file_atomic(r.log_path, "", 0);
        /* every rank starts from rank 0's weights */
        if (r.ranks > 1) st = cm_dist_agree(r.dist, st);
        if (!st) st = cm_dist_bcast(r.dist, params->data, params->n * sizeof(float), 0);
    }
    if (!st && step >= o->steps)
        st = cm_error(CM_ERR_ARG, "the checkpoint in %s is at step %d, already at the horizon of --steps %d",
                      o->out_dir, step, o->steps);
    if (!st && r.rank == 0) {
        r.log = fopen(r.log_path, "a");
        if (!r.log) st = cm_error(CM_ERR_IO, "%s: cannot open for appending", r.log_path);
    }
    if (r.ranks > 1) st = cm_dist_agree(r.dist, st);
    int last = o->stop_after > 0 && o->stop_after < o->steps ? o->stop_after : o->steps;
    int first = step + 1;
    double t_start = cm_train_now_s(), loss = NAN;
    char *written = NULL;
    for (int s = first; !st && s <= last; s++) {
        double t0 = cm_train_now_s(), comm0 = cm_dist_comm_seconds(r.dist), grad_norm;
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
        float lr = cm_lr_at(&o->lr, s - 1);
        st = update(&r, s, lr, grad_norm);
        if (st) break;
        double dt = cm_train_now_s() - t0, comm = cm_dist_comm_seconds(r.dist) - comm0;
        double val = NAN;
        bool last_step = s == last;
        if (r.val && ((o->eval_every > 0 && s % o->eval_every == 0) || s == o->steps)) {
            refresh_work(&r);
            st = evaluate(&r, &val);
            if (st) break;
        }
        double tps = (double)o->batch * o->seq * o->grad_accum / dt;
        if (r.rank == 0) {
            fprintf(r.log, "{\"step\": %d, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, \"tokens_per_s\": %.1f",
                    s, loss, lr, grad_norm, tps);
            if (!isnan(val)) fprintf(r.log, ", \"val_loss\": %.9g", val);
            if (r.ranks > 1) fprintf(r.log, ", \"comm_s\": %.6f", comm);
            fputs("}\n", r.log);
            if (fflush(r.log) != 0) st = cm_error(CM_ERR_IO, "%s: write failed (disk full?)", r.log_path);
        }
        if (r.ranks > 1) st = cm_dist_agree(r.dist, st);
        if (st) break;
        int stop = 0;
        cm_train_progress p = {s, o->steps, first, loss, val, lr, grad_norm, tps, cm_train_now_s() - t_start, NULL};
        bool want_ckpt = last_step || (o->ckpt_every > 0 && s % o->ckpt_every == 0);
        /* rank 0 decides whether to stop (its progress callback sees ^C); the others follow */
        if (o->progress && !want_ckpt && r.rank == 0) stop = o->progress(o->user, &p);
        if (r.ranks > 1 && (st = cm_dist_bcast(r.dist, &stop, sizeof stop, 0))) break;
        if (want_ckpt || stop) {
            free(written);
            written = NULL;
            st = save_checkpoint(&r, s, loss, &written);
            if (st) break;
            p.checkpoint = written;
            if (o->progress && want_ckpt && r.rank == 0) stop = o->progress(o->user, &p);
            if (r.ranks > 1 && (st = cm_dist_bcast(r.dist, &stop, sizeof stop, 0))) break;
        }
        if (stop) break;
    }
    free(written);
    run_close(&r);
    /* a NaN stops every rank alike; agreeing on it tells the group the failure is known everywhere */
    if (r.ranks > 1) st = cm_dist_agree(r.dist, st);
    return st;
}
