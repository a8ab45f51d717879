/* camelid eval: run evaluation tasks against a model and keep the results (JSON file + SQLite store). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "camelid/chat.h"
#include "camelid/eval.h"
#include "camelid/eval_store.h"
#include "camelid/model.h"
#include "commands.h"

static const char *help =
    "usage: camelid eval MODEL --tasks LIST [options]\n"
    "\n"
    "Evaluate a model the way lm-evaluation-harness does and keep the results. LIST is comma-separated:\n"
    "  mmlu:DIR[:SUBJECT]    MMLU CSVs: DIR/test/<subject>_test.csv, shots from DIR/dev/<subject>_dev.csv\n"
    "  perplexity:FILE       token/word/byte perplexity and bits per byte of a text (or .jsonl {\"text\"})\n"
    "  bigbench:TASK.json    a BIG-bench JSON task (multiple_choice_grade / exact_str_match)\n"
    "  snowball:FILE.json    a Snowballed Hallucination set (yes/no accuracy)\n"
    "\n"
    "options:\n"
    "  --tokenizer FILE        tokenizer file or folder (default: the model's own)\n"
    "  --template NAME         chat template for generation prompts (llama2, vicuna, alpaca, guanaco, "
    "chatml,\n"
    "                          llama3; default none: \"Question: ...\\nAnswer:\")\n"
    "  --adapter DIR           merge a PEFT LoRA adapter first (repeatable)\n"
    "  --limit N               at most N items per task (per MMLU subject; documents for perplexity)\n"
    "  --shots K               few-shot examples (default: MMLU 5, BIG-bench 0)\n"
    "  --seed S                seed recorded with the results (default 1234)\n"
    "  --max-gen-tokens N      new tokens for generation tasks (default 128)\n"
    "  -c, --ctx-size N        context length (default: the model's)\n"
    "  --ppl-mode MODE         lm-eval (rolling windows, default) or llamacpp (as llama-perplexity)\n"
    "  --log-samples           keep every item's prompt, log-likelihoods and output in the JSON\n"
    "  --out FILE              results JSON, rewritten as results come in (default results.json)\n"
    "  --store DB              SQLite store the run is added to (default camelid.db; \"\" for none)\n"
    "  --no-progress           no progress bar (it is drawn only when stderr is a terminal)\n"
    "  -t, --threads N         threads (default: all cores)\n"
    "  -h, --help              this help\n"
    "\n"
    "A bad task file stops the run with a one-line error naming the file and line; results computed until "
    "then\n"
    "stay in --out and the store. ^C stops too, keeping what was computed (exit status 130).\n"
    "\n"
    "Under mpirun (mpirun -np R camelid eval ...) each task's requests are split over the ranks in contiguous\n"
    "shares and rank 0 gathers the answers: the results are those of one process, and only rank 0 writes --out,\n"
    "the store and the table. Every rank needs the model and the task files at the same paths.\n";

static volatile sig_atomic_t stop_requested = 0;

static void on_sigint(int sig) {
    (void)sig;
    stop_requested = 1;
}

typedef struct {
    const cm_eval *ev;
    const char *out;
    bool tty;
    double last_draw;
    int write_failed;
} run_ctx;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int on_progress(void *user, const cm_eval_progress *p) {
    run_ctx *rc = user;
    if (rc->tty) {
        double t = now();
        if (t - rc->last_draw >= 0.1 || p->done == p->total) {
            rc->last_draw = t;
            double rate = p->elapsed > 0 ? (double)p->done / p->elapsed : 0;
            double eta = rate > 0 ? (double)(p->total - p->done) / rate : 0;
            int width = 30, fill = p->total > 0 ? (int)(width * p->done / p->total) : 0;
            char bar[64];
            for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
            bar[width] = 0;
            fprintf(stderr, "\r\033[K%-24.24s [%s] %lld/%lld  %.1f items/s  ETA %d:%02d", p->task, bar,
                    (long long)p->done, (long long)p->total, rate, (int)(eta / 60), (int)eta % 60);
            if (p->done == p->total) fputc('\n', stderr);
            fflush(stderr);
        }
    }
    return stop_requested;
}

static void on_checkpoint(void *user) {
    run_ctx *rc = user;
    if (rc->out && rc->out[0] && cm_eval_write(rc->ev, rc->out) != CM_OK && !rc->write_failed) {
        rc->write_failed = 1;
        fprintf(stderr, "\ncamelid: warning: %s\n", cm_last_error());
    }
}

/* lm-eval's summary table on stdout. */
static void print_table(const char *json) {
    cm_eval_summary_row *rows = NULL;
    size_t n = 0;
    if (cm_eval_summarize(json, &rows, &n) != CM_OK) return;
    printf("| %-40s | %-22s | %10s | %10s |\n", "Task", "Metric", "Value", "Stderr");
    printf("|%.*s|%.*s|%.*s|%.*s|\n", 42, "------------------------------------------", 24,
           "------------------------", 12, "------------", 12, "------------");
    for (size_t i = 0; i < n; i++) {
        char se[32] = "";
        if (rows[i].has_stderr) snprintf(se, sizeof se, "%.4f", rows[i].stderr_value);
        if (rows[i].has_value)
            printf("| %-40s | %-22s | %10.4f | %10s |\n", rows[i].task, rows[i].metric, rows[i].value, se);
        else
            printf("| %-40s | %-22s | %10s | %10s |\n", rows[i].task, rows[i].metric, "null", se);
    }
    cm_eval_summary_free(rows, n);
}

static int eval_main(int argc, char **argv, cm_dist **dist);

int cmd_eval(int argc, char **argv) {
    cm_dist *dist = NULL;
    int rc = eval_main(argc, argv, &dist);
    return cm_dist_close(dist, rc);
}

/* Arguments and task specs are checked before joining the group (a bad one ends every rank alike, without a
 * job); after that, errors of a task are agreed by every rank and printed by rank 0. */
static int eval_main(int argc, char **argv, cm_dist **dist) {
    const char *tok_path = NULL, *tasks = NULL, *template_name = NULL, *out = "results.json",
               *store = "camelid.db", *ppl_mode = "lm-eval";
    string_list adapters = {0};
    int threads = cli_default_threads(), limit = 0, shots = -1, max_gen = 128, ctx = 0;
    uint64_t seed = 1234;
    bool log_samples = false, no_progress = false;
    arg_spec specs[] = {
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL},
        {"tasks", 0, ARG_STRING, &tasks, NULL},
        {"template", 0, ARG_STRING, &template_name, NULL},
        {"adapter", 0, ARG_STRINGS, &adapters, NULL},
        {"limit", 0, ARG_INT, &limit, NULL},
        {"shots", 0, ARG_INT, &shots, NULL},
        {"seed", 's', ARG_U64, &seed, NULL},
        {"max-gen-tokens", 0, ARG_INT, &max_gen, NULL},
        {"ctx-size", 'c', ARG_INT, &ctx, NULL},
        {"ppl-mode", 0, ARG_STRING, &ppl_mode, NULL},
        {"log-samples", 0, ARG_FLAG, &log_samples, NULL},
        {"out", 'o', ARG_STRING, &out, NULL},
        {"store", 0, ARG_STRING, &store, NULL},
        {"no-progress", 0, ARG_FLAG, &no_progress, NULL},
    };
    const char *pos[2];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 2);
    if (rc != 0) {
        string_list_free(&adapters);
        return rc < 0 ? 1 : 0;
    }
    const char *model_path = pos[0], *extra = pos[1];
    cm_model *m = NULL;
    cm_tokenizer *owned_tok = NULL;
    const cm_tokenizer *tok = NULL;
    cm_lm *lm = NULL;
    cm_eval *ev = NULL;
    char *list = NULL, *json = NULL;
    char **specs_list = NULL;
    int n_specs = 0, status = 1;
    cm_eval_options opt = cm_eval_defaults();

    if (cli_one_model("eval", model_path, extra) != 0) goto done;
    if (!tasks || !tasks[0]) {
        cli_fail("eval needs --tasks (e.g. --tasks mmlu:DIR,perplexity:FILE)");
        goto done;
    }
    if (limit < 0 || shots < -1 || max_gen < 1 || ctx < 0) {
        cli_fail("%s", limit < 0     ? "--limit must be 0 or more"
                       : shots < -1  ? "--shots must be 0 or more"
                       : max_gen < 1 ? "--max-gen-tokens must be at least 1"
                                     : "--ctx-size must be positive");
        goto done;
    }
    if (!strcmp(ppl_mode, "llamacpp") || !strcmp(ppl_mode, "llama.cpp"))
        opt.ppl_mode = CM_PPL_LLAMACPP;
    else if (strcmp(ppl_mode, "lm-eval") && strcmp(ppl_mode, "lm_eval")) {
        cli_fail("--ppl-mode must be lm-eval or llamacpp, got \"%s\"", ppl_mode);
        goto done;
    }
    if (template_name) {
        if (cm_template_from_name(template_name, &opt.template_id) != CM_OK) {
            cli_fail_status();
            goto done;
        }
        opt.use_template = true;
    }
    opt.limit = limit;
    opt.shots = shots;
    opt.seed = seed;
    opt.max_gen_tokens = max_gen;
    opt.log_samples = log_samples;
    /* split and check every task spec before loading the model */
    list = strdup(tasks);
    specs_list = calloc(strlen(tasks) + 1, sizeof *specs_list);
    if (!list || !specs_list) {
        cli_fail("out of memory");
        goto done;
    }
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (cm_eval_check_spec(t) != CM_OK) {
            cli_fail_status();
            goto done;
        }
        specs_list[n_specs++] = t;
    }
    if (n_specs == 0) {
        cli_fail("--tasks is empty");
        goto done;
    }
    if (cm_dist_open(dist) != CM_OK) {
        cli_fail_status();
        goto done;
    }
    opt.dist = *dist;
    int rank = cm_dist_rank(*dist);
    if (rank != 0) out = store = NULL; /* rank 0 writes the results */
    if (cli_open_model(model_path, tok_path, false, &m, &tok, &owned_tok) != 0) goto done;
    if (cli_merge_adapters(m, &adapters) != 0) goto done;
    char sha[65] = "";
    if (rank == 0 && cm_sha256_model_weights(model_path, sha) != CM_OK) {
        cli_fail_status();
        goto done;
    }
    if (cm_lm_open_local(m, tok, ctx, threads, seed, &lm) != CM_OK) {
        cli_fail_status();
        goto done;
    }
    cm_eval_model_info mi = {
        .path = model_path,
        .sha256 = sha,
        .format = cm_model_format_name(m->format),
        .dtype = cm_dtype_name(m->layers[0].wq.dtype),
        .tokenizer = tok_path,
        .adapters = adapters.items,
        .n_adapters = adapters.n,
        .n_params = cm_model_n_params(m),
        .ctx_len = cm_lm_ctx_len(lm),
        .n_threads = threads,
    };
    if (cm_eval_open(&mi, &opt, &ev) != CM_OK) {
        cli_fail_status();
        goto done;
    }
    run_ctx rctx = {.ev = ev, .out = out, .tty = rank == 0 && !no_progress && isatty(STDERR_FILENO)};
    cm_eval_hooks hooks = {on_progress, on_checkpoint, &rctx};
    struct sigaction sa = {0}, old_sa;
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, &old_sa);
    double t0 = now();
    char *error = NULL;
    for (int i = 0; i < n_specs && !error; i++) {
        if (cm_eval_run_task(ev, lm, specs_list[i], &hooks) != CM_OK) {
            if (rctx.tty) fputc('\n', stderr);
            error = strdup(cm_last_error());
        }
    }
    sigaction(SIGINT, &old_sa, NULL);
    double wall = now() - t0;
    bool interrupted = cm_eval_interrupted(ev);
    cm_eval_set_lm_stats(ev, cm_lm_get_stats(lm), wall);
    cm_eval_finish(ev,
                   interrupted ? "interrupted"
                   : error     ? "failed"
                               : "complete",
                   interrupted ? NULL : error);
    size_t json_len;
    if (cm_eval_to_json(ev, &json, &json_len) != CM_OK) {
        free(error);
        cli_fail_status();
        goto done;
    }
    if (out && out[0] && cm_eval_write(ev, out) != CM_OK) {
        free(error);
        cli_fail_status();
        goto done;
    }
    if (store && store[0]) {
        int64_t run_id;
        if (cm_eval_store_save(store, json, &run_id) != CM_OK) {
            free(error);
            cli_fail_status();
            goto done;
        }
    }
    if (rank != 0) { /* the others computed their shares; rank 0 reports */
        free(error);
        status = error && !interrupted ? 1 : interrupted ? 130 : 0;
        goto done;
    }
    print_table(json);
    fflush(stdout);
    if (error && !interrupted) {
        cli_fail("%s", error);
        free(error);
        goto done;
    }
    const cm_lm_stats *st = cm_lm_get_stats(lm);
    fprintf(stderr,
            "camelid: eval: %lld requests, %lld tokens scored, %lld generated; forward %lld tokens (%.1f%% "
            "of %lld "
            "requested: prefix sharing) in %.2f s = %.0f tok/s; wall %.2f s\n",
            (long long)st->n_requests, (long long)st->tokens_scored, (long long)st->n_generated,
            (long long)st->tokens_forwarded,
            st->tokens_requested ? 100.0 * (double)st->tokens_forwarded / (double)st->tokens_requested : 0.0,
            (long long)st->tokens_requested, st->forward_seconds,
            st->forward_seconds > 0 ? (double)st->tokens_forwarded / st->forward_seconds : 0.0, wall);
    if (interrupted) {
        fprintf(stderr, "camelid: interrupted; the results so far are in %s\n",
                out && out[0] ? out : "the store");
        free(error);
        status = 130;
        goto done;
    }
    status = 0;
done:
    free(json);
    free(list);
    free(specs_list);
    cm_eval_close(ev);
    cm_lm_close(lm);
    cm_tokenizer_close(owned_tok);
    cm_model_close(m);
    string_list_free(&adapters);
    return status;
}
