#include "camelid/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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
    unsigned char *seen; /* scratch for the repetition penalty */
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
        .order = {CM_SAMPLE_TOP_K, CM_SAMPLE_TOP_P, CM_SAMPLE_MIN_P, CM_SAMPLE_TEMPERATURE},
        .n_order = 4,
    };
    return p;
}

cm_status cm_sampler_parse_order(const char *text, cm_sampler_params *p) {
    static const struct {
        const char *name;
        cm_sample_stage stage;
    } names[] = {{"top_k", CM_SAMPLE_TOP_K},
                 {"top-k", CM_SAMPLE_TOP_K},
                 {"top_p", CM_SAMPLE_TOP_P},
                 {"top-p", CM_SAMPLE_TOP_P},
                 {"min_p", CM_SAMPLE_MIN_P},
                 {"min-p", CM_SAMPLE_MIN_P},
                 {"temperature", CM_SAMPLE_TEMPERATURE},
                 {"temp", CM_SAMPLE_TEMPERATURE}};
    int n = 0;
    const char *s = text;
    while (*s) {
        size_t len = strcspn(s, ";,");
        if (len > 0) {
            int found = -1;
            for (size_t i = 0; i < sizeof names / sizeof *names && found < 0; i++)
                if (strlen(names[i].name) == len && strncmp(names[i].name, s, len) == 0) found = (int)i;
            if (found < 0)
                return cm_error(CM_ERR_ARG, "unknown sampler \"%.*s\" (use top_k, top_p, min_p, temperature)",
                                (int)len, s);
            if (n == CM_MAX_SAMPLE_STAGES) return cm_error(CM_ERR_ARG, "too many samplers in \"%s\"", text);
            p->order[n++] = names[found].stage;
        }
        s += len;
        if (*s) s++;
    }
    p->n_order = n;
    return CM_OK;
}

cm_status cm_sampler_params_validate(const cm_sampler_params *p) {
    if (!isfinite(p->temperature)) return cm_error(CM_ERR_ARG, "temperature must be a finite number");
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f)) return cm_error(CM_ERR_ARG, "top-p must be in [0, 1]");
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) return cm_error(CM_ERR_ARG, "min-p must be in [0, 1]");
    if (!(p->repeat_penalty > 0.0f) || !isfinite(p->repeat_penalty))
        return cm_error(CM_ERR_ARG, "repeat penalty must be positive");
    if (p->repeat_last_n < -1) return cm_error(CM_ERR_ARG, "repeat-last-n must be -1, 0 or positive");
    if (p->n_order < 0 || p->n_order > CM_MAX_SAMPLE_STAGES) return cm_error(CM_ERR_ARG, "bad sampler order");
    return CM_OK;
}

/* xorshift* as in llama2.c run.c */
static uint32_t rng_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

float cm_rng_f32(uint64_t *state) {
    return (float)(rng_u32(state) >> 8) / 16777216.0f;
}

cm_status cm_sampler_open(const cm_sampler_params *p, int vocab_size, cm_sampler **out) {
    *out = NULL;
    CM_TRY(cm_sampler_params_validate(p));
    if (vocab_size <= 0) return cm_error(CM_ERR_ARG, "sampler: vocabulary size %d", vocab_size);
    cm_sampler *s = calloc(1, sizeof *s);
    if (s) {
        s->cand = malloc((size_t)vocab_size * sizeof *s->cand);
        s->seen = malloc((size_t)vocab_size);
    }
    if (!s || !s->cand || !s->seen) {
        cm_sampler_close(s);
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
    free(s->seen);
    free(s);
}

/* descending logit, then ascending id: a total order, so results never depend on the sort's stability */
static int by_logit_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->logit > y->logit) return -1;
    if (x->logit < y->logit) return 1;
    return (x->id > y->id) - (x->id < y->id);
}

static void apply_repeat_penalty(cm_sampler *s, float *logits, const int32_t *hist, int n_hist) {
    const cm_sampler_params *p = &s->params;
    if (p->repeat_penalty == 1.0f || p->repeat_last_n == 0 || n_hist <= 0) return;
    int start = p->repeat_last_n < 0 || p->repeat_last_n >= n_hist ? 0 : n_hist - p->repeat_last_n;
    /* each distinct token is penalised once, as llama.cpp does */
    memset(s->seen, 0, (size_t)s->vocab_size);
    for (int i = start; i < n_hist; i++) {
        int id = hist[i];
        if (id < 0 || id >= s->vocab_size || s->seen[id]) continue;
        s->seen[id] = 1;
        logits[id] = logits[id] > 0 ? logits[id] / p->repeat_penalty : logits[id] * p->repeat_penalty;
    }
}

/* softmax of the first n candidates' logits into .p, in their current order */
static void candidate_softmax(candidate *c, int n) {
    float max = c[0].logit;
    for (int i = 1; i < n; i++)
        if (c[i].logit > max) max = c[i].logit;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        c[i].p = expf(c[i].logit - max);
        sum += c[i].p;
    }
    for (int i = 0; i < n; i++) c[i].p /= sum;
}

typedef struct {
    candidate *c;
    int n;
    bool sorted;  /* c[0..n) by descending logit */
    bool p_valid; /* .p proportional to softmax of the current logits */
} candidates;

static void ensure_sorted(candidates *cs) {
    if (!cs->sorted) qsort(cs->c, (size_t)cs->n, sizeof *cs->c, by_logit_desc);
    cs->sorted = true;
}

int cm_sampler_sample(cm_sampler *s, float *logits, const int32_t *history, int n_history) {
    const cm_sampler_params *p = &s->params;
    int V = s->vocab_size;
    apply_repeat_penalty(s, logits, history, n_history);
    if (p->temperature <= 0.0f) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    candidates cs = {s->cand, V, false, false};
    for (int i = 0; i < V; i++) cs.c[i] = (candidate){i, logits[i], 0.0f};
    for (int k = 0; k < p->n_order; k++) {
        switch (p->order[k]) {
        case CM_SAMPLE_TEMPERATURE:
            if (p->temperature != 1.0f) {
                for (int i = 0; i < cs.n; i++) cs.c[i].logit /= p->temperature;
                cs.p_valid = false;
            }
            break;
        case CM_SAMPLE_TOP_K:
            if (p->top_k > 0 && p->top_k < cs.n) {
                ensure_sorted(&cs);
                cs.n = p->top_k;
                cs.p_valid = false;
            }
            break;
        case CM_SAMPLE_TOP_P:
            if (p->top_p < 1.0f) {
                /* over the whole vocabulary the softmax runs in id order, exactly as llama2.c computes it;
                 * the kept probabilities are not renormalised (the draw scales its coin by their mass) */
                candidate_softmax(cs.c, cs.n);
                cs.p_valid = true;
                ensure_sorted(&cs);
                float cum = 0.0f;
                for (int i = 0; i < cs.n; i++) {
                    cum += cs.c[i].p;
                    if (cum > p->top_p) {
                        cs.n = i + 1;
                        break;
                    }
                }
            }
            break;
        case CM_SAMPLE_MIN_P:
            if (p->min_p > 0.0f) {
                if (!cs.p_valid) candidate_softmax(cs.c, cs.n);
                cs.p_valid = true;
                ensure_sorted(&cs);
                float threshold = cs.c[0].p * p->min_p;
                int keep = 1;
                while (keep < cs.n && cs.c[keep].p >= threshold) keep++;
                cs.n = keep;
            }
            break;
        }
    }
    if (!cs.p_valid) candidate_softmax(cs.c, cs.n);
    ensure_sorted(&cs);
    float mass = 0.0f;
    for (int i = 0; i < cs.n; i++) mass += cs.c[i].p;
    float r = cm_rng_f32(&s->rng) * mass, cdf = 0.0f;
    for (int i = 0; i < cs.n; i++) {
        cdf += cs.c[i].p;
        if (r < cdf) return cs.c[i].id;
    }
    return cs.c[cs.n - 1].id;
}
