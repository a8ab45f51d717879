/* The fine-tuning loop (see include/camelid/finetune.h): SFT rows -> forward (full, or frozen base + LoRA)
 * -> masked loss -> backward -> clip -> AdamW -> log, evaluation, atomic checkpoints, report. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "camelid/file.h"
#include "camelid/finetune.h"
#include "camelid/nf4.h"
#include "camelid/peft.h"
#include "camelid/train_ops.h"
#include "train/train_internal.h"

void cm_finetune_options_defaults(cm_finetune_options *o) {
    memset(o, 0, sizeof *o);
    o->mode = CM_FT_LORA;
    o->batch = 4;
    o->grad_accum = 1;
    o->epochs = 1;
    o->lr = (cm_lr_schedule){CM_LR_CONSTANT, 2e-4f, 0, 0, 0.0f};
    o->adamw = (cm_adamw_config){0.9f, 0.999f, 1e-8f, 0.0f};
    o->clip = 1.0f;
    o->lora_r = 8;
    o->lora_alpha = 16.0f;
    o->lora_dropout = 0.05f;
    o->lora_targets = (1u << CM_LORA_N_TARGETS) - 1;
    o->eval_every = 0;
    o->eval_batches = 8;
    o->seed = 1337;
    o->threads = 1;
}

int cm_finetune_steps(const cm_finetune_options *o) {
    if (o->steps > 0) return o->steps;
    size_t rows = cm_sft_rows(o->data, CM_SFT_TRAIN), per_step = (size_t)o->batch * o->grad_accum;
    size_t steps = (rows * (size_t)(o->epochs > 0 ? o->epochs : 1) + per_step - 1) / per_step;
    return steps > 0 ? (int)steps : 1;
}

typedef struct ft {
    const cm_finetune_options *o;
    cm_model *base;
    int steps, T;
    /* full fine-tuning */
    cm_params *params, *grads;
    /* LoRA */
    cm_lora_params *lora, *dlora;
    cm_params pview, gview; /* the adapters seen as parameters by the optimizer */
    cm_params *opt_p, *opt_g;
    float *m, *v;
    cm_lm_train *lm;
    cm_pool *pool;
    cm_sft_epoch *epoch;
    uint64_t epoch_index;
    int32_t *tokens, *targets, *positions, *doc_ids; /* grad_accum x batch rows */
    cm_nf4_weight **owned_nf4;
    int n_owned_nf4;
    FILE *log;
    char *log_path;
} ft;

/* The train rows of micro-batch k of step s: row g = ((s - 1) * accum + k) * batch + i of the run is row
 * g mod R of epoch g / R (R rows per epoch). */
static cm_status fill_rows(ft *f, int step, size_t *trained) {
    const cm_finetune_options *o = f->o;
    size_t R = cm_sft_rows(o->data, CM_SFT_TRAIN), T = (size_t)f->T;
    *trained = 0;
    for (int k = 0; k < o->grad_accum; k++)
        for (int i = 0; i < o->batch; i++) {
            uint64_t g = ((uint64_t)(step - 1) * o->grad_accum + k) * o->batch + i;
            uint64_t epoch = g / R, row = g % R;
            if (!f->epoch || f->epoch_index != epoch) {
                cm_sft_epoch_close(f->epoch);
                f->epoch = NULL;
                CM_TRY(cm_sft_epoch_open(o->data, CM_SFT_TRAIN, o->seed, epoch, &f->epoch));
                f->epoch_index = epoch;
            }
            size_t at = ((size_t)k * o->batch + i) * T, n = 0;
            CM_TRY(cm_sft_epoch_fill(f->epoch, row, 1, f->tokens + at, f->targets + at, f->positions + at,
                                     f->doc_ids + at, &n));
            *trained += n;
        }
    return CM_OK;
}

static cm_status run_forward(ft *f, const cm_train_batch *b, uint64_t dropout_seed, double *loss, int *n) {
    if (f->params) return cm_lm_forward(f->lm, f->params, b, loss, n);
    return cm_lm_forward_lora(f->lm, f->base, f->lora, dropout_seed, b, loss, n);
}

static cm_status train_step(ft *f, int step, double *loss, double *grad_norm, size_t *trained_out) {
    const cm_finetune_options *o = f->o;
    size_t trained;
    CM_TRY(fill_rows(f, step, &trained));
    *trained_out = trained;
    if (trained == 0) return cm_error(CM_ERR_ARG, "step %d has no trained token (every target masked)", step);
    float dloss = (float)(1.0 / (double)trained);
    cm_params_zero(f->opt_g);
    double sum = 0;
    size_t T = (size_t)f->T;
    for (int k = 0; k < o->grad_accum; k++) {
        size_t at = (size_t)k * o->batch * T;
        cm_train_batch b = {o->batch, f->T, f->tokens + at, f->targets + at, f->positions + at, f->doc_ids + at};
        uint64_t seed = cm_train_mix64(cm_train_mix64(o->seed ^ 0x5eed) ^ ((uint64_t)step << 16 | (uint64_t)k));
        double l;
        int n;
        CM_TRY(run_forward(f, &b, seed, &l, &n));
        if (f->params)
            CM_TRY(cm_lm_backward(f->lm, f->params, f->grads, dloss));
        else
            CM_TRY(cm_lm_backward_lora(f->lm, f->base, f->lora, f->dlora, dloss));
        sum += l;
    }
    *loss = sum / (double)trained;
    *grad_norm = sqrt(cm_grad_sumsq_pool(f->opt_g, 0, f->opt_g->n, f->pool));
    return CM_OK;
}

/* Mean masked loss over the first eval_batches x batch rows of the val split (no dropout). */
static cm_status evaluate(ft *f, double *val_loss) {
    const cm_finetune_options *o = f->o;
    size_t rows = cm_sft_rows(o->data, CM_SFT_VAL), want = (size_t)o->eval_batches * o->batch;
    if (rows > want) rows = want;
    cm_sft_epoch *e;
    CM_TRY(cm_sft_epoch_open(o->data, CM_SFT_VAL, o->seed, 0, &e));
    double sum = 0;
    long count = 0;
    cm_status st = CM_OK;
    float keep_dropout = f->lora ? f->lora->dropout : 0;
    if (f->lora) f->lora->dropout = 0;
    for (size_t r = 0; !st && r < rows; r += (size_t)o->batch) {
        int n_rows = (int)(rows - r < (size_t)o->batch ? rows - r : (size_t)o->batch);
        st = cm_sft_epoch_fill(e, r, n_rows, f->tokens, f->targets, f->positions, f->doc_ids, NULL);
        cm_train_batch b = {n_rows, f->T, f->tokens, f->targets, f->positions, f->doc_ids};
        double l;
        int n;
        if (!st) st = run_forward(f, &b, 0, &l, &n);
        if (!st) sum += l, count += n;
    }
    if (f->lora) f->lora->dropout = keep_dropout;
    cm_sft_epoch_close(e);
    *val_loss = count ? sum / count : NAN;
    return st;
}

/* PEFT's initialization: A ~ Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)); B = 0. */
static void init_lora(cm_lora_params *l, uint64_t seed) {
    uint64_t s = cm_train_mix64(seed ^ 0x10a1);
    cm_lora_params_zero(l);
    for (int i = 0; i < l->n_tensors; i++) {
        const cm_param_tensor *t = &l->tensors[i];
        if (!strstr(t->name, "lora_A")) continue;
        float bound = 1.0f / sqrtf((float)t->cols);
        float *a = l->data + t->offset;
        for (size_t j = 0; j < (size_t)t->rows * t->cols; j++) {
            s = cm_train_mix64(s);
            a[j] = (float)(((double)(s >> 11) / 9007199254740992.0) * 2.0 - 1.0) * bound;
        }
    }
}

/* QLoRA over a base that is not NF4: quantize its decoder linears one at a time (double quantization), so
 * only one f32 matrix is ever held. */
static cm_status quantize_base(ft *f) {
    cm_model *m = f->base;
    int L = m->cfg.n_layers;
    f->owned_nf4 = calloc((size_t)L * CM_LORA_N_TARGETS, sizeof *f->owned_nf4);
    if (!f->owned_nf4) return cm_error(CM_ERR_NOMEM, "out of memory");
    for (int l = 0; l < L; l++) {
        cm_layer *B = &m->layers[l];
        cm_weight *ws[CM_LORA_N_TARGETS] = {&B->wq, &B->wk, &B->wv, &B->wo, &B->w_gate, &B->w_up, &B->w_down};
        for (int k = 0; k < CM_LORA_N_TARGETS; k++) {
            cm_weight *w = ws[k];
            if (w->dtype == CM_DTYPE_NF4) continue;
            float *dense = malloc((size_t)w->rows * w->cols * sizeof(float));
            if (!dense) return cm_error(CM_ERR_NOMEM, "out of memory quantizing layer %d", l);
            for (int64_t r = 0; r < w->rows; r++) cm_weight_row_to_f32(w, r, dense + (size_t)r * w->cols);
            cm_nf4_weight *q;
            cm_status st = cm_nf4_weight_quantize(dense, w->rows, w->cols, true, &q);
            free(dense);
            CM_TRY(st);
            f->owned_nf4[f->n_owned_nf4++] = q;
            w->dtype = CM_DTYPE_NF4;
            w->data = q;
        }
    }
    return CM_OK;
}

/* What a checkpoint records of this run; a resume must have the same mode, batch, accumulation and seed (the
 * data order) and LoRA rank (the adapter's shapes). The adapter and its moments are in HF row order whatever
 * the base's RoPE layout, so the layout is recorded but not checked. */
static cm_run_state run_state(const ft *f) {
    static const char *const modes[3] = {"full", "lora", "qlora"};
    const cm_finetune_options *o = f->o;
    return (cm_run_state){.format = "camelid-finetune-state",
                          .mode = modes[o->mode],
                          .steps = f->steps,
                          .lr = o->lr.lr,
                          .rope = f->base->cfg.rope_layout,
                          .settings = {{"batch", "--batch", o->batch},
                                       {"grad_accum", "--grad-accum", o->grad_accum},
                                       {"seed", "--seed", (long long)o->seed},
                                       {"lora_r", "--lora-r", o->mode == CM_FT_FULL ? 0 : o->lora_r}},
                          .n_settings = 4};
}

static cm_status save_checkpoint(ft *f, int step, double loss) {
    const cm_finetune_options *o = f->o;
    cm_run_state rs = run_state(f);
    char *state = cm_run_state_json(&rs, step, loss);
    if (!state) return cm_error(CM_ERR_NOMEM, "out of memory");
    if (f->log) {
        fflush(f->log);
        fsync(fileno(f->log));
    }
    cm_status st;
    if (f->params) {
        st = cm_train_checkpoint_save(o->out_dir, step, f->params, f->m, f->v, o->tokenizer, state, NULL);
    } else {
        char *tmp = NULL, *opt = NULL;
        st = cm_train_checkpoint_begin(o->out_dir, step, &tmp);
        if (!st) st = cm_peft_save(f->lora, o->base_name, tmp);
        if (!st && !(opt = cm_path_join(tmp, "optimizer.safetensors"))) st = cm_error(CM_ERR_NOMEM, "out of memory");
        if (!st) st = cm_train_write_moments(opt, f->lora->tensors, f->lora->n_tensors, f->m, f->v);
        if (!st) st = cm_train_checkpoint_commit(o->out_dir, step, state, NULL);
        free(tmp);
        free(opt);
    }
    free(state);
    /* the result itself at the horizon: the adapter (or the HF folder) in RUN_DIR */
    if (!st && step == f->steps) {
        if (f->params) {
            cm_model *view = NULL;
            st = cm_params_as_model(f->params, &view);
            if (!st) st = cm_model_save_hf(view, o->tokenizer, o->out_dir, CM_DTYPE_F32);
            cm_model_close(view);
        } else {
            st = cm_peft_save(f->lora, o->base_name, o->out_dir);
        }
    }
    if (!st) st = cm_train_report(o->out_dir, o->out_dir);
    return st;
}

static cm_status resume(ft *f, int *step) {
    const cm_finetune_options *o = f->o;
    char *ckpt = NULL, *text = NULL, *opt = NULL, *state_path = NULL;
    size_t len;
    cm_status st = cm_train_latest_checkpoint(o->out_dir, &ckpt);
    if (st == CM_ERR_NOT_FOUND) cm_error_prefix(st, "nothing to resume (run without --resume to start)");
    if (!st && !(state_path = cm_path_join(ckpt, "trainer_state.json"))) st = cm_error(CM_ERR_NOMEM, "out of memory");
    if (!st) st = cm_read_file(state_path, 1 << 20, &text, &len);
    cm_run_state rs = run_state(f);
    if (!st) st = cm_run_state_check(&rs, text, ckpt, step);
    if (!st && f->params) {
        st = cm_train_checkpoint_load(ckpt, f->params, f->m, f->v, &opt);
        free(opt);
        opt = NULL;
    } else if (!st) {
        st = cm_peft_load(f->lora, ckpt);
        if (!st && !(opt = cm_path_join(ckpt, "optimizer.safetensors"))) st = cm_error(CM_ERR_NOMEM, "out of memory");
        if (!st) st = cm_train_read_moments(opt, f->lora->tensors, f->lora->n_tensors, f->m, f->v);
    }
    if (!st) st = cm_train_truncate_log(f->log_path, *step);
    free(ckpt), free(text), free(opt), free(state_path);
    return st;
}

static cm_status ft_open(ft *f, const cm_finetune_options *o, cm_model *base) {
    memset(f, 0, sizeof *f);
    f->o = o;
    f->base = base;
    f->T = cm_sft_seq(o->data);
    f->steps = cm_finetune_steps(o);
    const cm_config *c = &base->cfg;
    if (o->batch < 1 || o->grad_accum < 1) return cm_error(CM_ERR_ARG, "batch and grad-accum must be >= 1");
    if (cm_sft_rows(o->data, CM_SFT_TRAIN) == 0) return cm_error(CM_ERR_ARG, "the dataset has no training rows");
    if (o->mode == CM_FT_QLORA) CM_TRY(quantize_base(f));
    CM_TRY(cm_pool_open(o->threads, &f->pool));
    cm_train_blas_threads(o->threads);
    CM_TRY(cm_lm_train_open_ex(c, o->batch, f->T, o->mode == CM_FT_QLORA, f->pool, &f->lm));
    if (o->mode == CM_FT_FULL) {
        CM_TRY(cm_params_from_model(base, &f->params));
        CM_TRY(cm_params_open(c, &f->grads));
        f->opt_p = f->params;
        f->opt_g = f->grads;
    } else {
        CM_TRY(cm_lora_params_open(c, o->lora_r, o->lora_alpha, o->lora_dropout, o->lora_targets, &f->lora));
        CM_TRY(cm_lora_params_open(c, o->lora_r, o->lora_alpha, o->lora_dropout, o->lora_targets, &f->dlora));
        init_lora(f->lora, o->seed);
        f->pview = (cm_params){.cfg = *c, .data = f->lora->data, .n = f->lora->n, .tensors = f->lora->tensors,
                               .n_tensors = f->lora->n_tensors};
        f->gview = f->pview;
        f->gview.data = f->dlora->data;
        f->opt_p = &f->pview;
        f->opt_g = &f->gview;
    }
    f->m = calloc(f->opt_p->n, sizeof(float));
    f->v = calloc(f->opt_p->n, sizeof(float));
    size_t cells = (size_t)o->grad_accum * o->batch * f->T;
    f->tokens = malloc(cells * sizeof(int32_t));
    f->targets = malloc(cells * sizeof(int32_t));
    f->positions = malloc(cells * sizeof(int32_t));
    f->doc_ids = malloc(cells * sizeof(int32_t));
    if (!f->m || !f->v || !f->tokens || !f->targets || !f->positions || !f->doc_ids)
        return cm_error(CM_ERR_NOMEM, "out of memory for the optimizer state");
    CM_TRY(cm_mkdir_p(o->out_dir));
    if (!(f->log_path = cm_path_join(o->out_dir, "log.jsonl"))) return cm_error(CM_ERR_NOMEM, "out of memory");
    return CM_OK;
}

static void ft_close(ft *f) {
    if (f->log) fclose(f->log);
    free(f->log_path);
    cm_sft_epoch_close(f->epoch);
    cm_lm_train_close(f->lm);
    cm_pool_close(f->pool);
    cm_params_close(f->params);
    cm_params_close(f->grads);
    cm_lora_params_close(f->lora);
    cm_lora_params_close(f->dlora);
    free(f->m), free(f->v), free(f->tokens), free(f->targets), free(f->positions), free(f->doc_ids);
    /* the base keeps pointers to the NF4 copies until here: give it back its state of "no weights" rather
     * than dangling ones */
    for (int i = 0; i < f->n_owned_nf4; i++) cm_nf4_weight_free(f->owned_nf4[i]);
    if (f->n_owned_nf4) {
        for (int l = 0; l < f->base->cfg.n_layers; l++) {
            cm_layer *B = &f->base->layers[l];
            cm_weight *ws[CM_LORA_N_TARGETS] = {&B->wq, &B->wk, &B->wv, &B->wo, &B->w_gate, &B->w_up, &B->w_down};
            for (int k = 0; k < CM_LORA_N_TARGETS; k++)
                for (int i = 0; i < f->n_owned_nf4; i++)
                    if (ws[k]->data == f->owned_nf4[i]) ws[k]->data = NULL;
        }
    }
    free(f->owned_nf4);
}

cm_status cm_finetune_run(const cm_finetune_options *o, cm_model *base) {
    ft f;
    cm_status st = ft_open(&f, o, base);
    int step = 0;
    if (!st && o->resume)
        st = resume(&f, &step);
    else if (!st)
        st = cm_write_file_atomic(f.log_path, "", 0);
    if (!st && step >= f.steps)
        st = cm_error(CM_ERR_ARG, "the checkpoint in %s is at step %d, already at the horizon of %d steps", o->out_dir,
                      step, f.steps);
    if (!st && !(f.log = fopen(f.log_path, "a"))) st = cm_error(CM_ERR_IO, "%s: cannot open for appending", f.log_path);
    cm_lr_schedule sched = o->lr;
    sched.steps = f.steps;
    int first = step + 1;
    double t_start = cm_train_now_s(), loss = NAN;
    int last = o->stop_after > 0 && o->stop_after < f.steps ? o->stop_after : f.steps;
    for (int s = first; !st && s <= last; s++) {
        double t0 = cm_train_now_s(), grad_norm;
        size_t trained;
        st = train_step(&f, s, &loss, &grad_norm, &trained);
        if (st) break;
        if (!isfinite(loss) || !isfinite(grad_norm)) {
            st = cm_error(CM_ERR_ARG, "the %s became NaN or infinite at step %d; stopped without updating",
                          isfinite(loss) ? "gradient" : "loss", s);
            break;
        }
        cm_grad_clip(f.opt_g, grad_norm, o->clip);
        float lr = cm_lr_at(&sched, s - 1);
        cm_adamw_update_pool(&o->adamw, lr, s, f.opt_p, f.opt_g, f.m, f.v, 0, f.opt_p->n, f.pool);
        double dt = cm_train_now_s() - t0, tps = (double)o->batch * o->grad_accum * f.T / dt;
        fprintf(f.log, "{\"step\": %d, \"loss\": %.9g, \"lr\": %.9g, \"tokens_per_s\": %.1f}\n", s, loss, lr, tps);
        double val = NAN;
        if (cm_sft_rows(o->data, CM_SFT_VAL) > 0 && ((o->eval_every > 0 && s % o->eval_every == 0) || s == f.steps)) {
            st = evaluate(&f, &val);
            if (st) break;
            fprintf(f.log, "{\"step\": %d, \"val_loss\": %.9g}\n", s, val);
        }
        if (fflush(f.log) != 0) {
            st = cm_error(CM_ERR_IO, "%s: write failed (disk full?)", f.log_path);
            break;
        }
        cm_train_progress p = {.step = s, .steps = f.steps, .first_step = first, .loss = loss, .val_loss = val, .lr = lr,
                               .grad_norm = grad_norm, .tokens_per_s = tps, .elapsed_s = cm_train_now_s() - t_start};
        bool want_ckpt = s == last || (o->ckpt_every > 0 && s % o->ckpt_every == 0);
        int stop = o->progress && !want_ckpt ? o->progress(o->user, &p) : 0;
        if (want_ckpt || stop) {
            st = save_checkpoint(&f, s, loss);
            if (st) break;
            if (o->progress && want_ckpt) stop = o->progress(o->user, &p);
        }
        if (stop) break;
    }
    ft_close(&f);
    return st;
}
