#include "camelid/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct {
    int id;
    float logit;
    float p;
} candidate;

struct cm_sampler {
    cm_sampler_params params;
    int vocab_size;
    uint64_t rng;
    candidate *cand;
};

cm_sampler_params cm_sampler_defaults(void) {
    cm_sampler_params p = {
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .seed = 0,
    };
    return p;
}

cm_status cm_sampler_params_validate(const cm_sampler_params *p) {
    if (!isfinite(p->temperature)) return cm_error(CM_ERR_ARG, "temperature must be a finite number");
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f)) return cm_error(CM_ERR_ARG, "top-p must be in [0, 1]");
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) return cm_error(CM_ERR_ARG, "min-p must be in [0, 1]");
    if (!(p->repeat_penalty > 0.0f) || !isfinite(p->repeat_penalty))
        return cm_error(CM_ERR_ARG, "repeat penalty must be positive");
    if (p->repeat_last_n < -1) return cm_error(CM_ERR_ARG, "repeat-last-n must be -1, 0 or positive");
    return CM_OK;
}

/* xorshift* as in llama2.c run.c */
static uint32_t rng_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

float cm_rng_f32(uint64_t *state) { return (float)(rng_u32(state) >> 8) / 16777216.0f; }

cm_status cm_sampler_open(const cm_sampler_params *p, int vocab_size, cm_sampler **out) {
    *out = NULL;
    CM_TRY(cm_sampler_params_validate(p));
    cm_sampler *s = calloc(1, sizeof *s);
    if (s) s->cand = malloc((size_t)vocab_size * sizeof *s->cand);
    if (!s || !s->cand) {
        if (s) free(s->cand);
        free(s);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    s->params = *p;
    s->vocab_size = vocab_size;
    /* xorshift never leaves state 0 */
    s->rng = p->seed ? p->seed : 0x9E3779B97F4A7C15ull;
    *out = s;
    return CM_OK;
}

void cm_sampler_close(cm_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s);
}

/* descending logit, then ascending id: a total order, so results never depend on the sort's stability */
static int by_logit_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->logit > y->logit) return -1;
    if (x->logit < y->logit) return 1;
    return (x->id > y->id) - (x->id < y->id);
}

static void apply_repeat_penalty(const cm_sampler_params *p, float *logits, int vocab, const int32_t *hist,
                                 int n_hist) {
    if (p->repeat_penalty == 1.0f || p->repeat_last_n == 0 || n_hist <= 0) return;
    int start = p->repeat_last_n < 0 || p->repeat_last_n >= n_hist ? 0 : n_hist - p->repeat_last_n;
    /* each distinct token is penalised once, as llama.cpp does */
    unsigned char *seen = calloc((size_t)vocab, 1);
    if (!seen) return;
    for (int i = start; i < n_hist; i++) {
        int id = hist[i];
        if (id < 0 || id >= vocab || seen[id]) continue;
        seen[id] = 1;
        logits[id] = logits[id] > 0 ? logits[id] / p->repeat_penalty : logits[id] * p->repeat_penalty;
    }
    free(seen);
}

/* softmax of the first n candidates' logits / temp into .p (not renormalised later: a draw scales its coin
 * by the kept mass instead, as llama2.c does) */
static void candidate_softmax(candidate *c, int n, float temp) {
    float max = c[0].logit;
    for (int i = 1; i < n; i++)
        if (c[i].logit > max) max = c[i].logit;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        c[i].p = expf((c[i].logit - max) / temp);
        sum += c[i].p;
    }
    for (int i = 0; i < n; i++) c[i].p /= sum;
}

int cm_sampler_sample(cm_sampler *s, float *logits, const int32_t *history, int n_history) {
    const cm_sampler_params *p = &s->params;
    int V = s->vocab_size;
    apply_repeat_penalty(p, logits, V, history, n_history);
    if (p->temperature <= 0.0f) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    candidate *c = s->cand;
    for (int i = 0; i < V; i++) c[i] = (candidate){i, logits[i], 0.0f};
    int n = V;
    bool top_k = p->top_k > 0 && p->top_k < V;
    /* top-p and min-p judge the distribution before temperature, as in llama.cpp's chain. Without top-k the
     * softmax runs over the vocabulary in id order, exactly as llama2.c computes it. */
    if (!top_k) candidate_softmax(c, n, 1.0f);
    qsort(c, (size_t)n, sizeof *c, by_logit_desc);
    if (top_k) {
        n = p->top_k;
        candidate_softmax(c, n, 1.0f);
    }
    if (p->top_p < 1.0f) {
        float cum = 0.0f;
        for (int i = 0; i < n; i++) {
            cum += c[i].p;
            if (cum > p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        float threshold = c[0].p * p->min_p;
        int keep = 1;
        while (keep < n && c[keep].p >= threshold) keep++;
        n = keep;
    }
    if (p->temperature != 1.0f) candidate_softmax(c, n, p->temperature);
    float mass = 0.0f;
    for (int i = 0; i < n; i++) mass += c[i].p;
    float r = cm_rng_f32(&s->rng) * mass, cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += c[i].p;
        if (r < cdf) return c[i].id;
    }
    return c[n - 1].id;
}
