/* Training throughput: tokens/s of full optimizer steps (forward, backward, clip, AdamW) on a named shape with
 * random weights and random tokens, the achieved GFLOP/s counted as 6 N tokens/s (N = parameters, tied head
 * once, as PyTorch's and llm.c's MFU figures count) and its fraction of this machine's fp32 FMA peak, and a
 * split of the step time. Usage: bench_train [SHAPE] [BATCH] [SEQ] [THREADS] [STEPS] (defaults stories15M 4
 * 256 2 5). PyTorch 1.13 CPU on this machine, same shapes, B 4, T 256, 2 threads: about 560 tokens/s
 * (stories15M) and 108 (stories110M) (issue 7). Prints figures; it is not a test. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "camelid/optim.h"
#include "camelid/probe.h"
#include "camelid/train.h"
#include "camelid/train_ops.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const char *shape = argc > 1 ? argv[1] : "stories15M";
    int B = argc > 2 ? atoi(argv[2]) : 4, T = argc > 3 ? atoi(argv[3]) : 256;
    int threads = argc > 4 ? atoi(argv[4]) : 2, steps = argc > 5 ? atoi(argv[5]) : 5;
    cm_config c;
    cm_model *m;
    cm_params *p, *g;
    cm_pool *pool;
    cm_lm_train *t;
    if (cm_config_from_shape(shape, &c) || cm_model_init_random(&c, 1, &m) || cm_params_from_model(m, &p) ||
        cm_params_open(&c, &g) || cm_pool_open(threads, &pool) || cm_lm_train_open(&c, B, T, pool, &t)) {
        fprintf(stderr, "bench_train: %s\n", cm_last_error());
        return 1;
    }
    cm_model_close(m);
    cm_train_blas_threads(threads);
    int64_t n_params = (int64_t)p->n;
    int32_t *tokens = malloc((size_t)B * T * sizeof(int32_t)), *targets = malloc((size_t)B * T * sizeof(int32_t));
    uint64_t s = 42;
    for (int i = 0; i < B * T; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tokens[i] = (int32_t)((s >> 33) % (uint64_t)c.vocab_size);
        targets[i] = (int32_t)((s >> 13) % (uint64_t)c.vocab_size);
    }
    cm_train_batch b = {B, T, tokens, targets, NULL, NULL};
    float *mom = calloc(p->n, sizeof(float)), *vel = calloc(p->n, sizeof(float));
    cm_adamw_config ac = cm_adamw_defaults();
    double *step_s = calloc((size_t)steps + 1, sizeof(double)), fwd = 0, bwd = 0, opt = 0;
    for (int k = 0; k <= steps; k++) { /* step 0 warms up */
        double t0 = now(), loss;
        int n;
        cm_params_zero(g);
        if (cm_lm_forward(t, p, &b, &loss, &n)) return fprintf(stderr, "%s\n", cm_last_error()), 1;
        double t1 = now();
        cm_lm_backward(t, p, g, 1.0f / n);
        double t2 = now();
        double norm = sqrt(cm_grad_sumsq_pool(g, 0, g->n, pool));
        cm_grad_clip(g, norm, 1.0f);
        cm_adamw_update_pool(&ac, 1e-4f, k + 1, p, g, mom, vel, 0, p->n, pool);
        double t3 = now();
        if (k > 0) {
            step_s[k - 1] = t3 - t0;
            fwd += t1 - t0, bwd += t2 - t1, opt += t3 - t2;
        }
    }
    qsort(step_s, (size_t)steps, sizeof(double), cmp_double);
    double med = step_s[steps / 2], tps = (double)B * T / med;
    double gflops = 6.0 * (double)n_params * tps / 1e9, peak = cm_probe_fma_peak(pool);
    double total = fwd + bwd + opt;
    printf("shape %s (%.1fM parameters), batch %d x seq %d, %d threads, %d steps\n", shape, n_params / 1e6, B, T,
           threads, steps);
    printf("step %.3f s (median)   %.1f tokens/s   %.1f GFLOP/s (6 N tokens/s) = %.0f%% of the %.0f GFLOP/s FMA peak\n",
           med, tps, gflops, 100.0 * gflops / peak, peak);
    printf("time split: forward %.0f%%, backward %.0f%%, clip + AdamW %.0f%%\n", 100 * fwd / total,
           100 * bwd / total, 100 * opt / total);
    free(tokens), free(targets), free(mom), free(vel), free(step_s);
    cm_lm_train_close(t);
    cm_pool_close(pool);
    cm_params_close(p);
    cm_params_close(g);
    return 0;
}
