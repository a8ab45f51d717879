/* The training forward and backward against PyTorch (float64 goldens made by scripts/golden/train_grads.py,
 * tests/data/train-grad/README.md): logits, loss and every parameter gradient of tiny LLaMA models (GQA, MHA,
 * tied and untied heads, ignored targets, packed documents), per tensor within
 * max|g - ref| <= 1e-4 max|ref| + 1e-6. The same model converted to the interleaved RoPE layout (GGUF) must
 * give the same numbers once its q/k gradient rows are permuted back (run with per-layer activation
 * recomputation). LoRA adapters on a frozen base, f32 or NF4 (QLoRA): their gradients in both layouts. Then
 * 10 AdamW steps with clipping reproduce torch's losses. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/model.h"
#include "camelid/nf4.h"
#include "camelid/optim.h"
#include "camelid/safetensors.h"
#include "camelid/train.h"
#include "check.h"
#include "model/model_internal.h"

static const cm_tensor *need(const cm_safetensors *st, const char *name) {
    const cm_tensor *t = cm_safetensors_find(st, name);
    if (!t) {
        fprintf(stderr, "golden file lacks %s\n", name);
        exit(1);
    }
    return t;
}

/* max |a - b| relative to max |b| must be within the tolerance */
static int compare(const char *what, const float *got, const float *ref, size_t n, double rel, double abs_tol) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)got[i] - ref[i]));
        scale = fmax(scale, fabs(ref[i]));
    }
    if (!(worst <= rel * scale + abs_tol)) {
        fprintf(stderr, "%s: max |diff| %.3g exceeds %.3g (max |ref| %.3g)\n", what, worst, rel * scale + abs_tol,
                scale);
        return 1;
    }
    return 0;
}

/* Rows of a q/k projection move between HF and interleaved RoPE order in groups of its heads: how many heads
 * the tensor `name` has, or 0 for a tensor the conversion leaves alone. */
static int qk_heads(const cm_config *c, const char *name) {
    if (strstr(name, "q_proj")) return c->n_heads;
    if (strstr(name, "k_proj")) return c->n_kv_heads;
    return 0;
}

/* The files of the golden case tests/data/train-grad/<name> and, given gguf_name, a fresh temporary path for
 * its GGUF copy. */
typedef struct {
    char model[600], adapter[600], golden[600], gguf[600];
} case_files;

static void case_files_of(const char *name, const char *gguf_name, case_files *f) {
    char rel[200];
    snprintf(rel, sizeof rel, "train-grad/%s", name);
    const char *dir = cm_test_data(rel);
    snprintf(f->model, sizeof f->model, "%s/model", dir);
    snprintf(f->adapter, sizeof f->adapter, "%s/adapter/adapter_model.safetensors", dir);
    snprintf(f->golden, sizeof f->golden, "%s/golden.safetensors", dir);
    f->gguf[0] = 0;
    if (gguf_name) {
        char *tmp = cm_test_tmpdir(); /* heap string */
        snprintf(f->gguf, sizeof f->gguf, "%s/train-golden-%s.gguf", tmp, gguf_name);
        free(tmp);
    }
}

/* The model at `model` written as an F32 GGUF, which stores its q/k rows in the interleaved RoPE layout. */
static void save_interleaved(const char *model, const char *gguf) {
    cm_model *m = NULL;
    CHECK_OK(cm_model_open(model, &m));
    if (m) CHECK_OK(cm_model_save_gguf(m, NULL, gguf, CM_DTYPE_F32));
    cm_model_close(m);
}

typedef struct {
    cm_params *p, *g;
    double loss;
    int counted;
    float *logits;
} result;

/* Forward + backward of the golden batch on the model at `path`. */
static void run_model(const char *path, const cm_safetensors *gold, result *r, bool recompute) {
    cm_model *m;
    CHECK_OK(cm_model_open(path, &m));
    CHECK_OK(cm_params_from_model(m, &r->p));
    cm_model_close(m);
    CHECK_OK(cm_params_open(&r->p->cfg, &r->g));
    const cm_tensor *tok = need(gold, "tokens");
    int B = (int)tok->shape[0], T = (int)tok->shape[1];
    const cm_tensor *pos = cm_safetensors_find(gold, "positions"), *doc = cm_safetensors_find(gold, "doc_ids");
    cm_train_batch b = {B, T, tok->data, need(gold, "targets")->data, pos ? pos->data : NULL, doc ? doc->data : NULL};
    cm_pool *pool;
    CHECK_OK(cm_pool_open(2, &pool));
    cm_lm_train *t;
    CHECK_OK(cm_lm_train_open_ex(&r->p->cfg, B, T, recompute, pool, &t));
    CHECK_OK(cm_lm_forward(t, r->p, &b, &r->loss, &r->counted));
    size_t nl = (size_t)B * T * r->p->cfg.vocab_size;
    r->logits = malloc(nl * sizeof(float));
    memcpy(r->logits, cm_lm_logits(t), nl * sizeof(float));
    CHECK_OK(cm_lm_backward(t, r->p, r->g, (float)(1.0 / r->counted)));
    cm_lm_train_close(t);
    cm_pool_close(pool);
}

static void free_result(result *r) {
    cm_params_close(r->p);
    cm_params_close(r->g);
    free(r->logits);
}

/* Compare a result with the golden; `interleaved` results have their q/k gradient rows in the other layout. */
static void compare_result(const char *name, const result *r, const cm_safetensors *gold, bool interleaved) {
    const cm_tensor *logits = need(gold, "logits");
    check_failures += compare(name, r->logits, logits->data, (size_t)cm_tensor_numel(logits), 1e-5, 1e-5);
    CHECK_NEAR(r->loss / r->counted, ((const float *)need(gold, "loss")->data)[0], 1e-5);
    const cm_config *c = &r->p->cfg;
    for (int i = 0; i < r->p->n_tensors; i++) {
        const cm_param_tensor *pt = &r->p->tensors[i];
        char gname[128], what[200];
        snprintf(gname, sizeof gname, "grad.%s", pt->name);
        snprintf(what, sizeof what, "%s %s%s", name, gname, interleaved ? " (interleaved RoPE)" : "");
        const cm_tensor *ref = need(gold, gname);
        size_t n = (size_t)pt->rows * pt->cols;
        CHECK((size_t)cm_tensor_numel(ref) == n);
        const float *got = r->g->data + pt->offset;
        float *tmp = NULL;
        int heads = interleaved ? qk_heads(c, pt->name) : 0;
        if (heads) {
            tmp = malloc(n * sizeof(float));
            cm_permute_qk_rows(got, tmp, heads, c->head_dim, (size_t)pt->cols * sizeof(float), true);
            got = tmp;
        }
        check_failures += compare(what, got, ref->data, n, 1e-4, 1e-6);
        free(tmp);
    }
}

static void test_case(const char *name) {
    case_files f;
    case_files_of(name, name, &f);
    cm_safetensors *gold;
    CHECK_OK(cm_safetensors_open(f.golden, &gold));
    if (!gold) return;
    result r = {0};
    run_model(f.model, gold, &r, false);
    compare_result(name, &r, gold, false);

    /* the same weights in the interleaved layout (GGUF permutes q/k rows) */
    save_interleaved(f.model, f.gguf);
    result ri = {0};
    run_model(f.gguf, gold, &ri, true); /* and with activation recomputation */
    CHECK(ri.p->cfg.rope_layout == CM_ROPE_INTERLEAVED);
    compare_result(name, &ri, gold, true);
    free_result(&ri);
    free_result(&r);
    cm_safetensors_close(gold);
}

/* 10 AdamW steps with clipping on the same batch: the losses follow torch's. */
static void test_adamw(void) {
    case_files f;
    case_files_of("gqa_untied", NULL, &f);
    json_error_t je;
    json_t *j = json_load_file(cm_test_data("train-grad/gqa_untied/adamw.json"), 0, &je);
    CHECK(j != NULL);
    if (!j) return;
    cm_adamw_config ac = {(float)json_number_value(json_object_get(j, "beta1")),
                          (float)json_number_value(json_object_get(j, "beta2")),
                          (float)json_number_value(json_object_get(j, "eps")),
                          (float)json_number_value(json_object_get(j, "weight_decay"))};
    float lr = (float)json_number_value(json_object_get(j, "lr"));
    float max_norm = (float)json_number_value(json_object_get(j, "max_grad_norm"));
    json_t *losses = json_object_get(j, "losses"), *norms = json_object_get(j, "grad_norms");

    cm_safetensors *gold;
    CHECK_OK(cm_safetensors_open(f.golden, &gold));
    cm_model *m;
    CHECK_OK(cm_model_open(f.model, &m));
    cm_params *p, *g;
    CHECK_OK(cm_params_from_model(m, &p));
    cm_model_close(m);
    CHECK_OK(cm_params_open(&p->cfg, &g));
    const cm_tensor *tok = need(gold, "tokens");
    int B = (int)tok->shape[0], T = (int)tok->shape[1];
    cm_train_batch b = {B, T, tok->data, need(gold, "targets")->data, NULL, NULL};
    cm_lm_train *t;
    CHECK_OK(cm_lm_train_open(&p->cfg, B, T, NULL, &t));
    float *mom = calloc(p->n, sizeof(float)), *vel = calloc(p->n, sizeof(float));
    for (int step = 1; step <= 10; step++) {
        double loss;
        int n;
        cm_params_zero(g);
        CHECK_OK(cm_lm_forward(t, p, &b, &loss, &n));
        CHECK_OK(cm_lm_backward(t, p, g, (float)(1.0 / n)));
        double norm = sqrt(cm_grad_sumsq(g, 0, g->n));
        double want = json_number_value(json_array_get(losses, step - 1));
        double want_norm = json_number_value(json_array_get(norms, step - 1));
        if (fabs(loss / n - want) > 1e-4 * fabs(want) || fabs(norm - want_norm) > 1e-4 * want_norm) {
            fprintf(stderr, "AdamW step %d: loss %.9g (torch %.9g), grad norm %.9g (torch %.9g)\n", step, loss / n,
                    want, norm, want_norm);
            check_failures++;
        }
        cm_grad_clip(g, norm, max_norm);
        cm_adamw_update(&ac, lr, step, p, g, mom, vel, 0, p->n);
    }
    double loss;
    int n;
    CHECK_OK(cm_lm_forward(t, p, &b, &loss, &n));
    CHECK_NEAR(loss / n, json_number_value(json_object_get(j, "loss_after")), 1e-4);
    free(mom), free(vel);
    cm_lm_train_close(t);
    cm_params_close(p);
    cm_params_close(g);
    cm_safetensors_close(gold);
    json_decref(j);
}

/* LoRA forward and backward (with recomputation) of the golden batch on base m: logits, loss and every A/B
 * gradient against the golden; on an interleaved base the q/k lora_B gradient rows are permuted back to HF order
 * first. `label` prefixes the messages. */
static void check_lora_run(const char *label, const cm_model *m, const cm_lora_params *lora, cm_lora_params *dlora,
                           const cm_safetensors *gold, bool interleaved, cm_pool *pool) {
    const cm_config *c = &m->cfg;
    const char *suffix = interleaved ? " (interleaved base)" : "";
    const cm_tensor *tok = need(gold, "tokens");
    int B = (int)tok->shape[0], T = (int)tok->shape[1];
    cm_train_batch b = {B, T, tok->data, need(gold, "targets")->data, NULL, NULL};
    cm_lm_train *t;
    CHECK_OK(cm_lm_train_open_ex(c, B, T, true, pool, &t));
    if (!t) return;
    double loss;
    int n;
    CHECK_OK(cm_lm_forward_lora(t, m, lora, 7, &b, &loss, &n));
    const cm_tensor *logits = need(gold, "logits");
    char what[260];
    snprintf(what, sizeof what, "%s logits%s", label, suffix);
    check_failures += compare(what, cm_lm_logits(t), logits->data, (size_t)cm_tensor_numel(logits), 1e-5, 1e-5);
    CHECK_NEAR(loss / n, ((const float *)need(gold, "loss")->data)[0], 1e-5);
    CHECK_OK(cm_lm_backward_lora(t, m, lora, dlora, (float)(1.0 / n)));
    for (int i = 0; i < dlora->n_tensors; i++) {
        const cm_param_tensor *pt = &dlora->tensors[i];
        char gname[160];
        snprintf(gname, sizeof gname, "grad.%s", pt->name);
        snprintf(what, sizeof what, "%s %s%s", label, gname, suffix);
        size_t cnt = (size_t)pt->rows * pt->cols;
        float *got = malloc(cnt * sizeof(float));
        int heads = interleaved && strstr(pt->name, "lora_B") ? qk_heads(c, pt->name) : 0;
        if (heads)
            cm_permute_qk_rows(dlora->data + pt->offset, got, heads, c->head_dim, (size_t)pt->cols * sizeof(float),
                               true);
        else
            memcpy(got, dlora->data + pt->offset, cnt * sizeof(float));
        check_failures += compare(what, got, need(gold, gname)->data, cnt, 1e-4, 1e-6);
        free(got);
    }
    cm_lm_train_close(t);
}

/* LoRA parameters (rank 4, alpha 8, all seven linears) holding the adapter file's A and B, and gradients of the
 * same shape; for an interleaved base the q/k lora_B rows are permuted as the base's rows were. Exits the test
 * when either cannot be opened. */
static void open_adapter(const cm_config *c, const char *adapter, bool interleaved, cm_lora_params **lora,
                         cm_lora_params **dlora) {
    *lora = *dlora = NULL;
    CHECK_OK(cm_lora_params_open(c, 4, 8.0f, 0.0f, 0x7f, lora));
    CHECK_OK(cm_lora_params_open(c, 4, 8.0f, 0.0f, 0x7f, dlora));
    cm_safetensors *ad = NULL;
    CHECK_OK(cm_safetensors_open(adapter, &ad));
    if (!*lora || !*dlora || !ad) exit(1);
    for (int i = 0; i < (*lora)->n_tensors; i++) {
        const cm_param_tensor *pt = &(*lora)->tensors[i];
        const cm_tensor *x = need(ad, pt->name);
        CHECK((size_t)cm_tensor_numel(x) == (size_t)pt->rows * pt->cols);
        float *dst = (*lora)->data + pt->offset;
        int heads = interleaved && strstr(pt->name, "lora_B") ? qk_heads(c, pt->name) : 0;
        if (heads)
            cm_permute_qk_rows(x->data, dst, heads, c->head_dim, (size_t)pt->cols * sizeof(float), false);
        else
            memcpy(dst, x->data, x->nbytes);
    }
    cm_safetensors_close(ad);
}

/* LoRA on all seven linears of a frozen base: logits, loss and the A/B gradients against torch, on the HF
 * base and on its interleaved (GGUF) copy with the q/k lora_B rows permuted the same way as the base. */
static void lora_run(const char *model_path, const char *adapter, const cm_safetensors *gold, bool interleaved) {
    cm_model *m;
    CHECK_OK(cm_model_open(model_path, &m));
    if (!m) return;
    const cm_config *c = &m->cfg;
    cm_lora_params *lora, *dlora;
    open_adapter(c, adapter, interleaved, &lora, &dlora);
    check_lora_run("lora", m, lora, dlora, gold, interleaved, NULL);
    cm_lora_params_close(lora);
    cm_lora_params_close(dlora);
    cm_model_close(m);
}

static void test_lora(void) {
    case_files f;
    case_files_of("lora", "lora-base", &f);
    cm_safetensors *gold;
    CHECK_OK(cm_safetensors_open(f.golden, &gold));
    if (!gold) return;
    lora_run(f.model, f.adapter, gold, false);
    save_interleaved(f.model, f.gguf);
    lora_run(f.gguf, f.adapter, gold, true);
    cm_safetensors_close(gold);
}

/* QLoRA: the LoRA case again over the same base with every decoder linear (the seven of each layer) quantized to
 * NF4 with double quantization in memory, as camelid finetune --mode qlora does (src/train/finetune.c). The golden
 * (tests/data/train-grad/qlora) holds torch's float64 logits, loss and A/B gradients over the dequantized base
 * its generator computed independently (scripts/golden/nf4_golden.py), plus every linear's codes and scales and
 * one dequantized weight: the weights are proved identical first, then the gradients are compared. */
static const char *const qlora_linears[CM_LORA_N_TARGETS] = {"self_attn.q_proj", "self_attn.k_proj",
                                                             "self_attn.v_proj", "self_attn.o_proj",
                                                             "mlp.gate_proj",    "mlp.up_proj",
                                                             "mlp.down_proj"};

static cm_weight *qlora_slot(cm_model *m, int l, int k) {
    cm_layer *B = &m->layers[l];
    cm_weight *ws[CM_LORA_N_TARGETS] = {&B->wq, &B->wk, &B->wv, &B->wo, &B->w_gate, &B->w_up, &B->w_down};
    return ws[k];
}

/* The f32 rows of w (any dtype), [rows, cols]. */
static float *qlora_dense(const cm_weight *w) {
    float *d = malloc((size_t)w->rows * w->cols * sizeof(float));
    for (int64_t r = 0; d && r < w->rows; r++) cm_weight_row_to_f32(w, r, d + (size_t)r * w->cols);
    return d;
}

/* The weight's codes and scales must be the golden's, bit for bit. */
static void qlora_check_nf4(const cm_nf4_weight *q, const cm_safetensors *gold, int l, int k, const char *label) {
    char name[200];
    size_t n = (size_t)q->rows * q->cols, nb = cm_nf4_n_blocks(n, q->blocksize);
    snprintf(name, sizeof name, "nf4.model.layers.%d.%s.weight.packed", l, qlora_linears[k]);
    const cm_tensor *packed = need(gold, name);
    snprintf(name, sizeof name, "nf4.model.layers.%d.%s.weight.absmax", l, qlora_linears[k]);
    const cm_tensor *absmax = need(gold, name);
    if (q->blocksize != CM_NF4_BLOCKSIZE || packed->nbytes != (n + 1) / 2 || absmax->nbytes != nb * sizeof(float) ||
        memcmp(packed->data, q->packed, packed->nbytes) != 0 || memcmp(absmax->data, q->absmax, absmax->nbytes) != 0) {
        fprintf(stderr, "%s: layer %d %s: NF4 codes or scales differ from the golden's\n", label, l,
                qlora_linears[k]);
        check_failures++;
    }
}

/* The interleaved (GGUF) copy of an HF-order NF4 q/k weight. Quantizing the interleaved f32 rows is not
 * comparable: blocks of 64 run over the flattened weight, here two rows of 32, and the conversion moves row p
 * of a head next to row p + head_dim/2, so the blocks, their absmax and the codes would all differ. The same
 * codes and scales are instead regrouped in blocks of 32 (each block of 64 gives its scale to both halves; a
 * row of a multiple of 32 values is whole blocks) and their rows moved as the conversion moves the f32 rows:
 * the result dequantizes exactly to the HF-order NF4 weight with its rows permuted, and runs on the same
 * kernels (any valid block size). One allocation, freed with free(). */
static cm_nf4_weight *qlora_interleaved(const cm_nf4_weight *q, int n_heads, int head_dim) {
    if (q->blocksize != 64 || q->cols % 32 != 0) return NULL;
    size_t n = (size_t)q->rows * q->cols, nb = n / 32, per_row = (size_t)q->cols / 32;
    char *buf = malloc(sizeof(cm_nf4_weight) + nb * sizeof(float) + n / 2);
    if (!buf) return NULL;
    float *absmax = (float *)(buf + sizeof(cm_nf4_weight)), *scales32 = malloc(nb * sizeof(float));
    uint8_t *packed = (uint8_t *)(absmax + nb);
    if (!scales32) {
        free(buf);
        return NULL;
    }
    for (size_t j = 0; j < nb; j++) scales32[j] = q->absmax[j / 2];
    cm_permute_qk_rows(q->packed, packed, n_heads, head_dim, (size_t)q->cols / 2, false);
    cm_permute_qk_rows(scales32, absmax, n_heads, head_dim, per_row * sizeof(float), false);
    free(scales32);
    cm_nf4_weight *w = (cm_nf4_weight *)buf;
    *w = (cm_nf4_weight){q->rows, q->cols, 32, packed, absmax};
    return w;
}

/* lora_run's comparison on a base whose linears are already NF4, forward and backward with recomputation. */
static void qlora_run(const cm_model *m, const char *adapter, const cm_safetensors *gold, bool interleaved) {
    const cm_config *c = &m->cfg;
    cm_lora_params *lora, *dlora;
    open_adapter(c, adapter, interleaved, &lora, &dlora);
    cm_pool *pool;
    CHECK_OK(cm_pool_open(2, &pool));
    check_lora_run("qlora", m, lora, dlora, gold, interleaved, pool);
    cm_pool_close(pool);
    cm_lora_params_close(lora);
    cm_lora_params_close(dlora);
}

static void test_qlora(void) {
    case_files f;
    case_files_of("qlora", "qlora-base", &f);
    cm_safetensors *gold;
    CHECK_OK(cm_safetensors_open(f.golden, &gold));
    cm_model *m, *mi;
    CHECK_OK(cm_model_open(f.model, &m));
    if (!gold || !m) exit(1);
    /* the interleaved copy of the f32 base, written before the HF base turns NF4 */
    CHECK_OK(cm_model_save_gguf(m, NULL, f.gguf, CM_DTYPE_F32));
    CHECK_OK(cm_model_open(f.gguf, &mi));
    if (!mi) exit(1);
    CHECK(mi->cfg.rope_layout == CM_ROPE_INTERLEAVED);
    const cm_config *c = &m->cfg;
    int L = c->n_layers, nq = L * CM_LORA_N_TARGETS;
    cm_nf4_weight **q = calloc((size_t)nq, sizeof *q), **qi = calloc((size_t)nq, sizeof *qi);
    for (int l = 0; l < L; l++)
        for (int k = 0; k < CM_LORA_N_TARGETS; k++) {
            cm_weight *w = qlora_slot(m, l, k), *wi = qlora_slot(mi, l, k);
            int i = l * CM_LORA_N_TARGETS + k;
            float *dense = qlora_dense(w);
            CHECK_OK(cm_nf4_weight_quantize(dense, w->rows, w->cols, true, &q[i]));
            free(dense);
            if (!q[i]) exit(1);
            qlora_check_nf4(q[i], gold, l, k, "HF base");
            if (k == 0 || k == 1) { /* q, k: the HF-order codes regrouped and permuted */
                int heads = k == 0 ? c->n_heads : c->n_kv_heads;
                qi[i] = qlora_interleaved(q[i], heads, c->head_dim);
                CHECK(qi[i] != NULL);
                if (!qi[i]) exit(1);
                /* it dequantizes to the HF-order NF4 weight's rows, permuted, bit for bit */
                cm_weight hf = {CM_DTYPE_NF4, w->rows, w->cols, q[i]}, il = {CM_DTYPE_NF4, w->rows, w->cols, qi[i]};
                float *a = qlora_dense(&hf), *b = qlora_dense(&il), *want = malloc((size_t)w->rows * w->cols * 4);
                cm_permute_qk_rows(a, want, heads, c->head_dim, (size_t)w->cols * sizeof(float), false);
                char what[160];
                snprintf(what, sizeof what, "qlora interleaved layer %d %s dequantized", l, qlora_linears[k]);
                check_failures += compare(what, b, want, (size_t)w->rows * w->cols, 0, 0);
                free(a), free(b), free(want);
            } else { /* rows the conversion leaves alone quantize to the same blocks */
                float *di = qlora_dense(wi);
                CHECK_OK(cm_nf4_weight_quantize(di, wi->rows, wi->cols, true, &qi[i]));
                free(di);
                if (!qi[i]) exit(1);
                qlora_check_nf4(qi[i], gold, l, k, "interleaved base");
            }
            w->dtype = wi->dtype = CM_DTYPE_NF4;
            w->data = q[i];
            wi->data = qi[i];
        }

    /* camelid's dequantization (cm_weight_row_to_f32) of layer 0's q_proj is the golden's, bit for bit */
    const cm_tensor *dq = need(gold, "dequant.model.layers.0.self_attn.q_proj.weight");
    size_t ndq = (size_t)m->layers[0].wq.rows * m->layers[0].wq.cols;
    CHECK((size_t)cm_tensor_numel(dq) == ndq);
    if ((size_t)cm_tensor_numel(dq) != ndq) exit(1);
    float *got = qlora_dense(&m->layers[0].wq);
    check_failures += compare("qlora dequantized q_proj", got, dq->data, ndq, 0, 0);
    free(got);

    qlora_run(m, f.adapter, gold, false);
    qlora_run(mi, f.adapter, gold, true);

    cm_model_close(m);
    cm_model_close(mi);
    for (int i = 0; i < nq; i++) {
        cm_nf4_weight_free(q[i]);
        free(qi[i]);
    }
    free(q), free(qi);
    cm_safetensors_close(gold);
}

int main(void) {
    static const char *const cases[] = {"gqa_untied", "gqa_tied", "mha_untied", "masked", "packed"};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) test_case(cases[i]);
    test_adamw();
    test_lora();
    test_qlora();
    CHECK_DONE();
}
