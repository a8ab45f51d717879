#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/bench.h"
#include "camelid/isa.h"
#include "camelid/model.h"
#include "camelid/probe.h"
#include "commands.h"

static const char *help =
    "usage: camelid bench MODEL [options]\n"
    "\n"
    "Measure prompt processing (pp) and token generation (tg) speed as llama-bench does: random tokens, one\n"
    "warm-up, an empty cache for every repetition, tokens/s as mean +- standard deviation. Also probes this\n"
    "machine's read bandwidth and fp32 FMA peak with the same threads, and shows the achieved GB/s (tg: the\n"
    "weights and KV cache read per token) and GFLOP/s (pp: 2 x weights per prompt token plus attention) as a\n"
    "fraction of them.\n"
    "\n"
    "options:\n"
    "  -p, --n-prompt N   prompt tokens for pp (default 128; 0 skips pp)\n"
    "  -n, --n-gen N      generated tokens for tg (default 64; 0 skips tg)\n"
    "  -r, --repetitions N  repetitions (default 5)\n"
    "  --seed S           seed of the random tokens (default 1)\n"
    "  --no-probe         skip the bandwidth and FMA probes\n"
    "  --json             print exactly one JSON object on stdout\n"
    "  -t, --threads N    threads (default: all cores)\n"
    "  -h, --help         this help\n";

static json_t *samples_ns(const double *seconds, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer((json_int_t)(seconds[i] * 1e9)));
    return a;
}

int cmd_bench(int argc, char **argv) {
    int n_prompt = 128, n_gen = 64, reps = 5, threads = cli_default_threads();
    uint64_t seed = 1;
    bool json = false, no_probe = false;
    arg_spec specs[] = {
        {"n-prompt", 'p', ARG_INT, &n_prompt, NULL}, {"n-gen", 'n', ARG_INT, &n_gen, NULL},
        {"repetitions", 'r', ARG_INT, &reps, NULL},  {"seed", 0, ARG_U64, &seed, NULL},
        {"json", 0, ARG_FLAG, &json, NULL},          {"no-probe", 0, ARG_FLAG, &no_probe, NULL},
    };
    const char *pos[2];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 2);
    const char *path = pos[0], *extra = pos[1];
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (!path) return cli_fail("bench needs a MODEL (see camelid bench --help)");
    if (extra) return cli_fail("bench takes one MODEL, got an extra argument \"%s\"", extra);
    if (n_prompt < 0 || n_gen < 0 || (n_prompt == 0 && n_gen == 0))
        return cli_fail("-p and -n must be >= 0 and not both 0");
    if (reps < 1 || reps > CM_BENCH_MAX_REPS) return cli_fail("-r must be 1..%d", CM_BENCH_MAX_REPS);
    cm_model *m;
    if (cm_model_open(path, &m) != CM_OK) return cli_fail_status();
    int bos = m->tokenizer && cm_tokenizer_add_bos(m->tokenizer) ? cm_tokenizer_bos(m->tokenizer) : -1;
    cm_bench_params bp = {n_prompt, n_gen, reps, threads, seed, bos};
    cm_bench_result r;
    if (cm_bench_run(m, &bp, &r) != CM_OK) {
        cm_model_close(m);
        return cli_fail_status();
    }
    double peak_gb = 0, peak_gflop = 0;
    if (!no_probe) {
        cm_pool *pool;
        if (cm_pool_open(threads, &pool) == CM_OK) {
            peak_gb = cm_probe_read_bandwidth(pool, (size_t)512 << 20);
            peak_gflop = cm_probe_fma_peak(pool);
            cm_pool_close(pool);
        }
    }
    const char *wtype = cm_dtype_name(m->layers[0].wq.dtype);
    double params = (double)cm_model_n_params(m);
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "model", json_string(path));
        json_object_set_new(o, "weights", json_string(wtype));
        json_object_set_new(o, "params", json_integer((json_int_t)params));
        json_object_set_new(o, "threads", json_integer(threads));
        json_object_set_new(o, "isa", json_string(cm_isa_name(cm_isa_active())));
        json_object_set_new(o, "n_prompt", json_integer(n_prompt));
        json_object_set_new(o, "n_gen", json_integer(n_gen));
        json_object_set_new(o, "repetitions", json_integer(reps));
        json_object_set_new(o, "pp_tokens_per_s", json_real(r.pp_tps_mean));
        json_object_set_new(o, "pp_tokens_per_s_sd", json_real(r.pp_tps_sd));
        json_object_set_new(o, "tg_tokens_per_s", json_real(r.tg_tps_mean));
        json_object_set_new(o, "tg_tokens_per_s_sd", json_real(r.tg_tps_sd));
        json_object_set_new(o, "tg_gb_per_s", json_real(r.tg_gb_per_s));
        json_object_set_new(o, "pp_gflop_per_s", json_real(r.pp_gflop_per_s));
        json_object_set_new(o, "peak_gb_per_s", json_real(peak_gb));
        json_object_set_new(o, "peak_gflop_per_s", json_real(peak_gflop));
        json_object_set_new(o, "weight_bytes", json_real(r.weight_bytes));
        json_object_set_new(o, "kv_bytes", json_real(r.kv_bytes));
        json_object_set_new(o, "pp_flop", json_real(r.pp_flop));
        json_object_set_new(o, "pp_samples_ns", samples_ns(r.pp_seconds, n_prompt ? reps : 0));
        json_object_set_new(o, "tg_samples_ns", samples_ns(r.tg_seconds, n_gen ? reps : 0));
        char *text = json_dumps(o, JSON_REAL_PRECISION(6));
        json_decref(o);
        if (text) puts(text);
        free(text);
    } else {
        printf("model: %s (%.1fM parameters, %s weights), %d thread(s), %s kernels\n", path, params / 1e6,
               wtype, threads, cm_isa_name(cm_isa_active()));
        if (n_prompt > 0) {
            printf("pp%-5d %9.2f +- %7.2f tok/s   %7.1f GFLOP/s", n_prompt, r.pp_tps_mean, r.pp_tps_sd,
                   r.pp_gflop_per_s);
            if (peak_gflop > 0)
                printf(" = %4.1f%% of the %.0f GFLOP/s FMA peak", 100 * r.pp_gflop_per_s / peak_gflop,
                       peak_gflop);
            printf("\n");
        }
        if (n_gen > 0) {
            printf("tg%-5d %9.2f +- %7.2f tok/s   %7.1f GB/s", n_gen, r.tg_tps_mean, r.tg_tps_sd,
                   r.tg_gb_per_s);
            if (peak_gb > 0)
                printf("     = %4.1f%% of the %.1f GB/s read bandwidth", 100 * r.tg_gb_per_s / peak_gb,
                       peak_gb);
            printf("\n");
        }
    }
    cm_model_close(m);
    if (fflush(stdout) != 0) return cli_fail("stdout: write failed");
    return 0;
}
