#include "camelid/bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "camelid/kernels.h"
#include "camelid/llama.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t next_rand(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

static double weight_bytes(const cm_weight *w) { return (double)cm_weight_nbytes(w); }

static void mean_sd(const double *seconds, int reps, int tokens, double *mean, double *sd) {
    double s = 0, s2 = 0;
    for (int i = 0; i < reps; i++) {
        double tps = tokens / seconds[i];
        s += tps;
        s2 += tps * tps;
    }
    *mean = s / reps;
    *sd = reps > 1 ? sqrt(fmax(0.0, (s2 - s * s / reps) / (reps - 1))) : 0.0;
}

cm_status cm_bench_run(const cm_model *m, const cm_bench_params *p, cm_bench_result *r) {
    memset(r, 0, sizeof *r);
    const cm_config *c = &m->cfg;
    if (p->reps < 1 || p->reps > CM_BENCH_MAX_REPS)
        return cm_error(CM_ERR_ARG, "bench: repetitions must be 1..%d", CM_BENCH_MAX_REPS);
    if (p->n_prompt < 0 || p->n_gen < 0) return cm_error(CM_ERR_ARG, "bench: negative token counts");
    int ctx = (p->n_prompt > p->n_gen ? p->n_prompt : p->n_gen) + 1;
    cm_state *s;
    CM_TRY(cm_state_open(m, ctx, p->n_prompt > 0 ? p->n_prompt : 1, p->threads, &s));
    int32_t *tokens = malloc((size_t)ctx * sizeof *tokens);
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    if (!tokens || !logits) {
        free(tokens);
        free(logits);
        cm_state_close(s);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    uint64_t rng = p->seed ? p->seed : 0x9E3779B97F4A7C15ull;
    cm_status st = CM_OK;
    /* pp: one warm-up, then the timed repetitions, each from an empty cache (position 0) */
    for (int rep = -1; st == CM_OK && p->n_prompt > 0 && rep < p->reps; rep++) {
        for (int i = 0; i < p->n_prompt; i++) tokens[i] = (int32_t)(next_rand(&rng) % (uint64_t)c->vocab_size);
        if (p->bos >= 0) tokens[0] = p->bos;
        double t0 = now();
        st = cm_forward(m, s, tokens, p->n_prompt, 0, logits, false);
        if (rep >= 0) r->pp_seconds[rep] = now() - t0;
    }
    /* tg: single tokens, each decode waited for, random ids, from an empty cache */
    for (int rep = -1; st == CM_OK && p->n_gen > 0 && rep < p->reps; rep++) {
        int n = rep < 0 ? 1 : p->n_gen;
        int32_t tok = p->bos >= 0 ? p->bos : (int32_t)(next_rand(&rng) % (uint64_t)c->vocab_size);
        double t0 = now();
        for (int i = 0; st == CM_OK && i < n; i++) {
            st = cm_forward(m, s, &tok, 1, i, logits, false);
            tok = (int32_t)(next_rand(&rng) % (uint64_t)c->vocab_size);
        }
        if (rep >= 0) r->tg_seconds[rep] = now() - t0;
    }
    free(tokens);
    free(logits);
    cm_state_close(s);
    CM_TRY(st);

    /* what one decode step reads, and what one pp run computes */
    double layer_bytes = 0, layer_params = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const cm_layer *L = &m->layers[l];
        const cm_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof *ws; i++) {
            layer_bytes += weight_bytes(ws[i]);
            layer_params += (double)ws[i]->rows * (double)ws[i]->cols;
        }
    }
    r->weight_bytes = layer_bytes + weight_bytes(&m->output);
    /* tg's steps read the keys and values of every position so far: (n_gen + 1) / 2 on average */
    r->kv_bytes = p->n_gen > 0 ? (double)c->n_layers * 2.0 * c->n_kv_heads * c->head_dim * sizeof(float) *
                                     (p->n_gen + 1) / 2.0
                               : 0.0;
    double q_dim = (double)c->n_heads * c->head_dim, n = p->n_prompt;
    /* per token: 2 x weights; attention: QK^T and AV over the positions so far; the head for the last token */
    r->pp_flop = n * 2.0 * layer_params + c->n_layers * 4.0 * q_dim * n * (n + 1) / 2.0 +
                 2.0 * (double)m->output.rows * (double)m->output.cols;
    if (p->n_prompt > 0) {
        mean_sd(r->pp_seconds, p->reps, p->n_prompt, &r->pp_tps_mean, &r->pp_tps_sd);
        double t = 0;
        for (int i = 0; i < p->reps; i++) t += r->pp_seconds[i];
        r->pp_gflop_per_s = r->pp_flop / (t / p->reps) / 1e9;
    }
    if (p->n_gen > 0) {
        mean_sd(r->tg_seconds, p->reps, p->n_gen, &r->tg_tps_mean, &r->tg_tps_sd);
        r->tg_gb_per_s = (r->weight_bytes + r->kv_bytes) * r->tg_tps_mean / 1e9;
    }
    return CM_OK;
}
