/* Evaluation throughput: MMLU items/s through the harness, and the model interface's log-likelihood tokens/s
 * against the engine's own prefill speed (one batched forward of the same number of tokens, no prefix
 * sharing). Usage: bench_eval MODEL MMLU_DIR [THREADS] [LIMIT] [TOKENIZER] (defaults 2 threads, 10 items per
 * subject, 0 shots). Prints figures and the ratio; it is not a test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "camelid/eval.h"
#include "camelid/llama.h"
#include "camelid/model.h"
#include "camelid/sampler.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int items_done;
static int count_items(void *user, const cm_eval_progress *p) {
    (void)user;
    items_done = (int)p->done;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_eval MODEL MMLU_DIR [THREADS] [LIMIT] [TOKENIZER]\n");
        return 2;
    }
    const char *model_path = argv[1], *mmlu = argv[2], *tok_path = argc > 5 ? argv[5] : NULL;
    int threads = argc > 3 ? atoi(argv[3]) : 2, limit = argc > 4 ? atoi(argv[4]) : 10;
    cm_model *m;
    const cm_tokenizer *tok;
    cm_tokenizer *owned = NULL;
    if (cm_model_open(model_path, &m) != CM_OK || cm_model_tokenizer(m, tok_path, &tok, &owned) != CM_OK) {
        fprintf(stderr, "%s\n", cm_last_error());
        return 1;
    }
    int ctx = m->cfg.seq_len < 512 ? m->cfg.seq_len : 512;
    /* prefill: one batched forward of ctx random tokens, logits of the last only (best of 3) */
    cm_state *s;
    if (cm_state_open(m, ctx, ctx, threads, &s) != CM_OK) return 1;
    int32_t *toks = malloc((size_t)ctx * sizeof *toks);
    float *logits = malloc((size_t)m->cfg.vocab_size * sizeof *logits);
    uint64_t rng = 42;
    for (int i = 0; i < ctx; i++) toks[i] = (int32_t)(cm_rng_f32(&rng) * (float)(m->cfg.vocab_size - 1));
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        cm_forward(m, s, toks, ctx, 0, logits, false);
        if (now() - t0 < best) best = now() - t0;
    }
    double pp = ctx / best;
    cm_state_close(s);
    /* MMLU through the harness */
    cm_lm *lm;
    cm_eval *ev;
    cm_eval_options opt = cm_eval_defaults();
    opt.limit = limit;
    opt.shots = 0;
    cm_eval_model_info mi = {.path = model_path, .ctx_len = ctx, .n_threads = threads};
    if (cm_lm_open_local(m, tok, ctx, threads, 1, &lm) != CM_OK || cm_eval_open(&mi, &opt, &ev) != CM_OK)
        return 1;
    char spec[4096];
    snprintf(spec, sizeof spec, "mmlu:%s", mmlu);
    cm_eval_hooks hooks = {count_items, NULL, NULL};
    double t0 = now();
    if (cm_eval_run_task(ev, lm, spec, &hooks) != CM_OK) {
        fprintf(stderr, "%s\n", cm_last_error());
        return 1;
    }
    double wall = now() - t0;
    const cm_lm_stats *st = cm_lm_get_stats(lm);
    double ll_tps = st->tokens_forwarded / st->forward_seconds;
    printf("model %s (%.1fM parameters), %d thread(s), context %d\n", model_path, cm_model_n_params(m) / 1e6,
           threads, ctx);
    printf("prefill (pp%d, one batch)          %9.1f tok/s\n", ctx, pp);
    printf("MMLU 0-shot, %d items              %9.2f items/s (%.2f s)\n", items_done, items_done / wall,
           wall);
    printf("log-likelihood forward              %9.1f tok/s (%lld tokens run of %lld requested)\n", ll_tps,
           (long long)st->tokens_forwarded, (long long)st->tokens_requested);
    printf("ratio log-likelihood / prefill      %9.2f\n", ll_tps / pp);
    printf("effective (requested tokens / wall) %9.1f tok/s\n", st->tokens_requested / wall);
    cm_eval_close(ev);
    cm_lm_close(lm);
    free(toks);
    free(logits);
    cm_tokenizer_close(owned);
    cm_model_close(m);
    return 0;
}
