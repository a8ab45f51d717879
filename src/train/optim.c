/* AdamW, gradient clipping and the learning-rate schedule (see include/camelid/optim.h). */
#include <math.h>

#include "camelid/optim.h"

cm_adamw_config cm_adamw_defaults(void) { return (cm_adamw_config){0.9f, 0.999f, 1e-8f, 0.1f}; }

void cm_adamw_update(const cm_adamw_config *c, float lr, long t, cm_params *p, const cm_params *g, float *m,
                     float *v, size_t begin, size_t end) {
    /* torch: p *= 1 - lr wd; p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps) */
    double bc1 = 1.0 - pow(c->beta1, (double)t), bc2 = 1.0 - pow(c->beta2, (double)t);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    for (int k = 0; k < p->n_tensors; k++) {
        const cm_param_tensor *tt = &p->tensors[k];
        size_t t0 = tt->offset, t1 = t0 + (size_t)tt->rows * tt->cols;
        if (t1 <= begin || t0 >= end) continue;
        if (t0 < begin) t0 = begin;
        if (t1 > end) t1 = end;
        float decay = tt->is_matrix ? 1.0f - lr * c->weight_decay : 1.0f;
        float *pp = p->data, *gg = g->data;
        for (size_t i = t0; i < t1; i++) {
            float gi = gg[i];
            m[i] = c->beta1 * m[i] + (1.0f - c->beta1) * gi;
            v[i] = c->beta2 * v[i] + (1.0f - c->beta2) * gi * gi;
            pp[i] = pp[i] * decay - step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + c->eps);
        }
    }
}

typedef struct {
    const cm_adamw_config *c;
    float lr;
    long t;
    cm_params *p;
    const cm_params *g;
    float *m, *v;
    size_t begin, end;
} adamw_job;

static void adamw_worker(void *arg, int thread, int n_threads) {
    adamw_job *j = arg;
    size_t n = j->end - j->begin, chunk = (n + n_threads - 1) / n_threads;
    size_t b = j->begin + chunk * (size_t)thread, e = b + chunk;
    if (b >= j->end) return;
    if (e > j->end) e = j->end;
    cm_adamw_update(j->c, j->lr, j->t, j->p, j->g, j->m, j->v, b, e);
}

void cm_adamw_update_pool(const cm_adamw_config *c, float lr, long t, cm_params *p, const cm_params *g, float *m,
                          float *v, size_t begin, size_t end, cm_pool *pool) {
    if (end <= begin) return;
    adamw_job j = {c, lr, t, p, g, m, v, begin, end};
    cm_pool_run(pool, adamw_worker, &j);
}

typedef struct {
    const float *g;
    size_t begin, end;
    double part[64];
} sumsq_job;

static void sumsq_worker(void *arg, int thread, int n_threads) {
    sumsq_job *j = arg;
    size_t n = j->end - j->begin, chunk = (n + n_threads - 1) / n_threads;
    size_t b = j->begin + chunk * (size_t)thread, e = b + chunk < j->end ? b + chunk : j->end;
    double s = 0;
    for (size_t i = b; i < e; i++) s += (double)j->g[i] * j->g[i];
    j->part[thread] = s;
}

double cm_grad_sumsq_pool(const cm_params *g, size_t begin, size_t end, cm_pool *pool) {
    if (end > g->n) end = g->n;
    if (end <= begin) return 0;
    if (cm_pool_size(pool) > 64) pool = NULL;
    sumsq_job j = {.g = g->data, .begin = begin, .end = end};
    cm_pool_run(pool, sumsq_worker, &j);
    double s = 0;
    for (int t = 0; t < cm_pool_size(pool); t++) s += j.part[t]; /* fixed order: the same sum every run */
    return s;
}

double cm_grad_sumsq(const cm_params *g, size_t begin, size_t end) {
    double s = 0;
    for (size_t i = begin; i < end && i < g->n; i++) s += (double)g->data[i] * g->data[i];
    return s;
}

float cm_grad_clip(cm_params *g, double norm, float max_norm) {
    if (max_norm <= 0 || !(norm > max_norm)) return 1.0f;
    float f = (float)(max_norm / (norm + 1e-6)); /* torch adds 1e-6 */
    for (size_t i = 0; i < g->n; i++) g->data[i] *= f;
    return f;
}

float cm_lr_at(const cm_lr_schedule *s, int step) {
    if (s->warmup > 0 && step < s->warmup) return s->lr * (float)(step + 1) / (float)s->warmup;
    if (s->kind == CM_LR_CONSTANT || s->steps <= s->warmup) return s->lr;
    double progress = (double)(step - s->warmup) / (double)(s->steps - s->warmup);
    if (progress > 1.0) progress = 1.0;
    double lo = s->lr * s->min_frac;
    return (float)(lo + 0.5 * (s->lr - lo) * (1.0 + cos(M_PI * progress)));
}
