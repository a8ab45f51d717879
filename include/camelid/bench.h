/* Inference benchmarks with llama-bench's methodology (FACTS 11): pp N = N random tokens (BOS first if the
 * vocabulary adds it) in one batch from an empty cache; tg N = N single-token decodes of random tokens from an
 * empty cache; one warm-up of each, then `reps` repetitions; tokens/s as mean and sample standard deviation. */
#ifndef CAMELID_BENCH_H
#define CAMELID_BENCH_H

#include <stdint.h>

#include "camelid/model.h"

#define CM_BENCH_MAX_REPS 64

typedef struct cm_bench_params {
    int n_prompt; /* 0 skips pp */
    int n_gen;    /* 0 skips tg */
    int reps;
    int threads;
    uint64_t seed;
    int bos; /* BOS id to put first in pp, or -1 */
} cm_bench_params;

typedef struct cm_bench_result {
    double pp_tps_mean, pp_tps_sd; /* tokens per second */
    double tg_tps_mean, tg_tps_sd;
    double pp_seconds[CM_BENCH_MAX_REPS], tg_seconds[CM_BENCH_MAX_REPS];
    double weight_bytes;     /* bytes of matrices one decode step reads (NF4: codes and f32 block scales) */
    double kv_bytes;         /* bytes of KV cache one tg step reads, on average over the tg run */
    double pp_flop;          /* floating-point operations of one pp run */
    double tg_gb_per_s;      /* (weight_bytes + kv_bytes) x tg tokens/s */
    double pp_gflop_per_s;   /* pp_flop / mean pp time */
} cm_bench_result;

cm_status cm_bench_run(const cm_model *m, const cm_bench_params *p, cm_bench_result *r);

#endif
