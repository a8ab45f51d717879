/* The trainer's golden files (tests/data/train-grad, made by scripts/golden/train_grads.py) are what they
 * claim: each model/ opens with camelid's loader, golden.safetensors opens with the safetensors reader and
 * its tensors have the shapes the model implies (a gradient for every parameter, or for every LoRA tensor),
 * the stored loss is the mean cross-entropy of the stored logits over the non-ignored targets, and camelid's
 * inference forward reproduces the stored logits. That last check ties torch's float64 model to camelid's
 * math, so a trainer that disagrees with a golden cannot blame the golden. */
#include <jansson.h>

#include "camelid/file.h"
#include "camelid/llama.h"
#include "camelid/lora.h"
#include "camelid/model.h"
#include "camelid/safetensors.h"
#include "check.h"

#define IGNORE_INDEX (-100)
#define LOGIT_TOL 1e-4

typedef struct golden_case {
    const char *name;
    int lora;   /* adapter/ holds the trainable tensors */
    int packed; /* doc_ids present: attention stays inside a document */
    int masked; /* some targets are -100 */
} golden_case;

static const golden_case cases[] = {
    {"gqa_untied", 0, 0, 0}, {"gqa_tied", 0, 0, 0}, {"mha_untied", 0, 0, 0},
    {"masked", 0, 0, 1},     {"packed", 0, 1, 1},   {"lora", 1, 0, 0},
};

static const char *case_path(const char *name, const char *rel) {
    static char buf[8][4096];
    static int k = 0;
    char *b = buf[k++ & 7];
    snprintf(b, sizeof buf[0], "%s/%s/%s", cm_test_data("train-grad"), name, rel);
    return b;
}

/* The tensor `name` with dtype `dt` and shape dims[0..ndim); NULL (and a failure) otherwise. */
static const cm_tensor *expect_tensor(const cm_safetensors *st, const char *name, cm_dtype dt, int ndim,
                                      const int64_t *dims) {
    const cm_tensor *t = cm_safetensors_find(st, name);
    if (!t) {
        fprintf(stderr, "%s: no tensor %s\n", cm_safetensors_path(st), name);
        check_failures++;
        return NULL;
    }
    int ok = t->dtype == dt && t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == dims[i];
    if (!ok) {
        fprintf(stderr, "%s: %s has dtype %s, %d dims [%lld, ...], expected %s with %d dims [%lld, ...]\n",
                cm_safetensors_path(st), name, cm_dtype_name(t->dtype), t->ndim, (long long)t->shape[0],
                cm_dtype_name(dt), ndim, (long long)dims[0]);
        check_failures++;
        return NULL;
    }
    return t;
}

/* A gradient tensor must exist with its parameter's shape, be finite and not all zero. */
static void expect_grad(const cm_safetensors *st, const char *param, int ndim, const int64_t *shape) {
    char name[512];
    snprintf(name, sizeof name, "grad.%s", param);
    const cm_tensor *g = expect_tensor(st, name, CM_DTYPE_F32, ndim, shape);
    if (!g) return;
    const float *v = g->data;
    int64_t n = cm_tensor_numel(g), nonzero = 0;
    for (int64_t i = 0; i < n; i++) {
        CHECK(isfinite(v[i]));
        nonzero += v[i] != 0;
    }
    if (!nonzero) fprintf(stderr, "%s is all zero\n", name);
    CHECK(nonzero > 0);
}

typedef struct grad_visit {
    const cm_safetensors *golden;
    int n;
} grad_visit;

static int visit_param(void *user, const char *name, const char *dtype_name, int ndim, const int64_t *shape,
                       size_t nbytes) {
    (void)dtype_name;
    (void)nbytes;
    grad_visit *v = user;
    expect_grad(v->golden, name, ndim, shape);
    v->n++;
    return 0;
}

static int count_grads(const cm_safetensors *st) {
    int n = 0;
    for (size_t i = 0; i < cm_safetensors_count(st); i++)
        n += strncmp(cm_safetensors_get(st, i)->name, "grad.", 5) == 0;
    return n;
}

/* Mean cross-entropy of logits [n, V] over the targets that are not -100, in double. */
static double mean_ce(const float *logits, const int32_t *targets, int n, int V, int *kept) {
    double sum = 0;
    *kept = 0;
    for (int i = 0; i < n; i++) {
        if (targets[i] == IGNORE_INDEX) continue;
        const float *row = logits + (size_t)i * V;
        double mx = row[0], z = 0;
        for (int j = 1; j < V; j++)
            if (row[j] > mx) mx = row[j];
        for (int j = 0; j < V; j++) z += exp((double)row[j] - mx);
        sum += mx + log(z) - row[targets[i]];
        ++*kept;
    }
    return *kept ? sum / *kept : 0;
}

/* The batch's bookkeeping: token ids in range; targets are the next token of the row or -100 (only where
 * the case ignores some); positions count from 0 (restarting at each document when packed); a packed target
 * is -100 exactly where the next token starts another document. */
static void check_batch(const golden_case *gc, const int32_t *tok, const int32_t *tgt, const int32_t *pos,
                        const int32_t *doc, int B, int T, int V) {
    int ignored = 0;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            int i = b * T + t;
            CHECK(tok[i] >= 0 && tok[i] < V);
            CHECK(tgt[i] == IGNORE_INDEX || (tgt[i] >= 0 && tgt[i] < V));
            ignored += tgt[i] == IGNORE_INDEX;
            int new_doc = doc && t > 0 && doc[i] != doc[i - 1];
            if (doc && t > 0) CHECK(doc[i] == doc[i - 1] || doc[i] == doc[i - 1] + 1);
            CHECK(pos[i] == (t == 0 || new_doc ? 0 : pos[i - 1] + 1));
            if (t + 1 < T) {
                if (doc && doc[i + 1] != doc[i])
                    CHECK(tgt[i] == IGNORE_INDEX);
                else if (tgt[i] != IGNORE_INDEX || !gc->masked)
                    CHECK(tgt[i] == tok[i + 1]);
            }
        }
    }
    CHECK(gc->masked ? ignored > 0 && ignored < B * T : ignored == 0);
}

/* Logits of tokens[0..n) at positions 0..n-1 as one fresh sequence. */
static void forward_seq(const cm_model *m, cm_state *s, const int32_t *tokens, int n, float *out) {
    CHECK_OK(cm_forward(m, s, tokens, n, 0, out, true));
}

/* camelid's inference forward against the golden logits, one sequence at a time (each document of a packed
 * row on its own, at positions from 0). Returns the max abs difference. For a packed case, *crossing gets
 * the difference when whole rows run as single sequences: it must be large, or the packing is not tested. */
static double forward_diff(const cm_model *m, const int32_t *tok, const int32_t *doc, const float *ref, int B,
                           int T, double *crossing) {
    int V = m->cfg.vocab_size;
    cm_state *s = NULL;
    CHECK_OK(cm_state_open(m, 0, T, 1, &s));
    if (!s) return INFINITY;
    float *got = calloc((size_t)B * T * V, sizeof *got);
    for (int b = 0; b < B; b++) {
        for (int t0 = 0; t0 < T;) {
            int t1 = t0 + 1;
            while (doc && t1 < T && doc[b * T + t1] == doc[b * T + t0]) t1++;
            if (!doc) t1 = T;
            forward_seq(m, s, tok + b * T + t0, t1 - t0, got + ((size_t)b * T + t0) * V);
            t0 = t1;
        }
    }
    double d = cm_test_max_diff(got, ref, (size_t)B * T * V);
    if (crossing) {
        for (int b = 0; b < B; b++) forward_seq(m, s, tok + b * T, T, got + (size_t)b * T * V);
        *crossing = cm_test_max_diff(got, ref, (size_t)B * T * V);
    }
    free(got);
    cm_state_close(s);
    return d;
}

/* adamw.json: the hyper-parameters, the decay split over exactly the model's tensors (2-D ones decayed), ten
 * finite losses of which the first is the golden loss. */
static void check_adamw(const cm_model *m, const cm_safetensors *golden, double loss) {
    json_error_t err;
    json_t *j = json_load_file(case_path("gqa_untied", "adamw.json"), 0, &err);
    if (!j) {
        fprintf(stderr, "adamw.json: %s (line %d)\n", err.text, err.line);
        check_failures++;
        return;
    }
    CHECK_NEAR(json_number_value(json_object_get(j, "lr")), 1e-3, 1e-15);
    CHECK_NEAR(json_number_value(json_object_get(j, "beta1")), 0.9, 1e-15);
    CHECK_NEAR(json_number_value(json_object_get(j, "beta2")), 0.999, 1e-15);
    CHECK_NEAR(json_number_value(json_object_get(j, "eps")), 1e-8, 1e-20);
    CHECK_NEAR(json_number_value(json_object_get(j, "weight_decay")), 0.1, 1e-15);
    CHECK_NEAR(json_number_value(json_object_get(j, "max_grad_norm")), 1.0, 1e-15);
    json_t *losses = json_object_get(j, "losses");
    CHECK(json_array_size(losses) == 10);
    for (size_t i = 0; i < json_array_size(losses); i++)
        CHECK(isfinite(json_number_value(json_array_get(losses, i))));
    CHECK_NEAR(json_number_value(json_array_get(losses, 0)), loss, 1e-6);
    CHECK(json_array_size(json_object_get(j, "grad_norms")) == 10);
    CHECK(isfinite(json_number_value(json_object_get(j, "loss_after"))));

    json_t *decay = json_object_get(j, "decay_tensors"), *no_decay = json_object_get(j, "no_decay_tensors");
    size_t n_decay = json_array_size(decay), n_no = json_array_size(no_decay);
    /* every name is a parameter of the model (its gradient exists) with the right rank */
    for (size_t i = 0; i < n_decay + n_no; i++) {
        const char *name =
            json_string_value(i < n_decay ? json_array_get(decay, i) : json_array_get(no_decay, i - n_decay));
        char g[512];
        snprintf(g, sizeof g, "grad.%s", name ? name : "");
        const cm_tensor *t = cm_safetensors_find(golden, g);
        CHECK(t != NULL);
        if (t) CHECK(t->ndim == (i < n_decay ? 2 : 1));
    }
    /* 2 norms per layer + final norm; the rest are matrices */
    CHECK(n_no == (size_t)(2 * m->cfg.n_layers + 1));
    CHECK((int)(n_decay + n_no) == count_grads(golden));
    json_decref(j);
}

static void check_case(const golden_case *gc) {
    cm_model *m = NULL;
    CHECK_OK(cm_model_open(case_path(gc->name, "model"), &m));
    if (!m) return;
    if (gc->lora) CHECK_OK(cm_model_merge_adapter(m, case_path(gc->name, "adapter")));
    cm_safetensors *st = NULL;
    CHECK_OK(cm_safetensors_open(case_path(gc->name, "golden.safetensors"), &st));
    if (!st) {
        cm_model_close(m);
        return;
    }
    int V = m->cfg.vocab_size;
    const cm_tensor *tt = cm_safetensors_find(st, "tokens");
    CHECK(tt && tt->ndim == 2);
    if (!tt || tt->ndim != 2) goto done;
    int B = (int)tt->shape[0], T = (int)tt->shape[1];
    CHECK(B >= 1 && T >= 2 && T <= m->cfg.seq_len);
    int64_t bt[2] = {B, T}, btv[3] = {B, T, V}, one[1] = {1};
    const cm_tensor *tok = expect_tensor(st, "tokens", CM_DTYPE_I32, 2, bt);
    const cm_tensor *tgt = expect_tensor(st, "targets", CM_DTYPE_I32, 2, bt);
    const cm_tensor *pos = expect_tensor(st, "positions", CM_DTYPE_I32, 2, bt);
    const cm_tensor *doc = gc->packed ? expect_tensor(st, "doc_ids", CM_DTYPE_I32, 2, bt) : NULL;
    const cm_tensor *logits = expect_tensor(st, "logits", CM_DTYPE_F32, 3, btv);
    const cm_tensor *loss = expect_tensor(st, "loss", CM_DTYPE_F32, 1, one);
    CHECK(gc->packed || !cm_safetensors_find(st, "doc_ids"));
    if (!tok || !tgt || !pos || !logits || !loss || (gc->packed && !doc)) goto done;
    const int32_t *docs = doc ? doc->data : NULL;
    check_batch(gc, tok->data, tgt->data, pos->data, docs, B, T, V);

    int kept;
    double ce = mean_ce(logits->data, tgt->data, B * T, V, &kept);
    double stored = *(const float *)loss->data;
    CHECK_NEAR(ce, stored, 1e-5);
    const char *loss64 = cm_safetensors_metadata(st, "loss_f64"),
               *n_tgt = cm_safetensors_metadata(st, "n_targets");
    CHECK(loss64 && n_tgt);
    if (loss64) CHECK_NEAR(strtod(loss64, NULL), stored, 1e-6);
    if (n_tgt) CHECK(atoi(n_tgt) == kept);

    /* gradients: one per trainable tensor, nothing else */
    if (gc->lora) {
        cm_safetensors *ad = NULL;
        CHECK_OK(cm_safetensors_open(case_path(gc->name, "adapter/adapter_model.safetensors"), &ad));
        if (ad) {
            /* seven linears per layer, A and B each */
            CHECK(cm_safetensors_count(ad) == (size_t)(14 * m->cfg.n_layers));
            for (size_t i = 0; i < cm_safetensors_count(ad); i++) {
                const cm_tensor *t = cm_safetensors_get(ad, i);
                CHECK(t->dtype == CM_DTYPE_F32 && t->ndim == 2);
                expect_grad(st, t->name, t->ndim, t->shape);
            }
            CHECK((size_t)count_grads(st) == cm_safetensors_count(ad));
            cm_safetensors_close(ad);
        }
    } else {
        grad_visit v = {st, 0};
        cm_model_visit_tensors(m, visit_param, &v);
        CHECK(v.n == 9 * m->cfg.n_layers + 2 + !m->cfg.tie_embeddings);
        CHECK(count_grads(st) == v.n);
        CHECK(m->cfg.tie_embeddings == !cm_safetensors_find(st, "grad.lm_head.weight"));
    }

    double crossing = 0;
    double d = forward_diff(m, tok->data, docs, logits->data, B, T, gc->packed ? &crossing : NULL);
    fprintf(stderr, "train-grad/%s: loss %.6f over %d targets, camelid forward vs golden logits %.2e\n",
            gc->name, stored, kept, d);
    CHECK(d <= LOGIT_TOL);
    if (gc->packed) {
        fprintf(stderr, "train-grad/%s: rows run across document boundaries miss by %.3f\n", gc->name,
                crossing);
        CHECK(crossing > 0.1);
    }
    if (!strcmp(gc->name, "gqa_untied")) check_adamw(m, st, stored);
done:
    cm_safetensors_close(st);
    cm_model_close(m);
}

int main(void) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i]);
    CHECK_DONE();
}
