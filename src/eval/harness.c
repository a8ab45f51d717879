/* The evaluation run: the results document, progress and checkpoints, and dispatch of task specs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "camelid/file.h"
#include "eval_internal.h"
#include "format/json_util.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

cm_eval_options cm_eval_defaults(void) {
    cm_eval_options o = {0};
    o.limit = 0;
    o.shots = -1;
    o.seed = 1234;
    o.max_gen_tokens = 128;
    o.ppl_mode = CM_PPL_LM_EVAL;
    return o;
}

json_t *ev_real(double x) {
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *str_or_null(const char *s) {
    return s ? json_string(s) : json_null();
}

cm_status cm_eval_open(const cm_eval_model_info *mi, const cm_eval_options *opt, cm_eval **out) {
    *out = NULL;
    cm_eval *ev = calloc(1, sizeof *ev);
    if (!ev) return cm_error(CM_ERR_NOMEM, "out of memory");
    ev->opt = *opt;
    ev->doc = json_object();
    ev->results = json_object();
    ev->group_subtasks = json_object();
    ev->configs = json_object();
    ev->versions = json_object();
    ev->n_shot = json_object();
    ev->higher = json_object();
    ev->n_samples = json_object();
    ev->camelid = json_object();
    if (!ev->doc || !ev->results || !ev->group_subtasks || !ev->configs || !ev->versions || !ev->n_shot ||
        !ev->higher || !ev->n_samples || !ev->camelid) {
        json_decref(ev->results), json_decref(ev->group_subtasks), json_decref(ev->configs);
        json_decref(ev->versions), json_decref(ev->n_shot), json_decref(ev->higher);
        json_decref(ev->n_samples), json_decref(ev->camelid), json_decref(ev->doc);
        free(ev);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    json_object_set_new(ev->doc, "results", ev->results);
    json_object_set_new(ev->doc, "group_subtasks", ev->group_subtasks);
    json_object_set_new(ev->doc, "configs", ev->configs);
    json_object_set_new(ev->doc, "versions", ev->versions);
    json_object_set_new(ev->doc, "n-shot", ev->n_shot);
    json_object_set_new(ev->doc, "higher_is_better", ev->higher);
    json_object_set_new(ev->doc, "n-samples", ev->n_samples);
    if (opt->log_samples) {
        ev->samples = json_object();
        json_object_set_new(ev->doc, "samples", ev->samples);
    }
    json_t *adapters = json_array();
    for (int i = 0; i < mi->n_adapters; i++) json_array_append_new(adapters, json_string(mi->adapters[i]));
    json_t *cfg = json_object();
    json_object_set_new(cfg, "model", json_string("camelid"));
    json_object_set_new(cfg, "model_args", str_or_null(mi->path));
    json_object_set_new(cfg, "model_path", str_or_null(mi->path));
    json_object_set_new(cfg, "model_sha256", str_or_null(mi->sha256));
    json_object_set_new(cfg, "model_format", str_or_null(mi->format));
    json_object_set_new(cfg, "model_dtype", str_or_null(mi->dtype));
    json_object_set_new(cfg, "model_num_parameters", json_integer(mi->n_params));
    json_object_set_new(cfg, "tokenizer", str_or_null(mi->tokenizer));
    json_object_set_new(cfg, "adapters", adapters);
    json_object_set_new(cfg, "chat_template",
                        opt->use_template ? json_string(cm_template_name(opt->template_id)) : json_null());
    json_object_set_new(cfg, "max_length", json_integer(mi->ctx_len));
    json_object_set_new(cfg, "batch_size", json_string("auto (prefix-shared)"));
    json_object_set_new(cfg, "limit", opt->limit > 0 ? json_integer(opt->limit) : json_null());
    json_object_set_new(cfg, "num_fewshot", opt->shots >= 0 ? json_integer(opt->shots) : json_null());
    json_object_set_new(cfg, "max_gen_tokens", json_integer(opt->max_gen_tokens));
    json_object_set_new(cfg, "ppl_mode",
                        json_string(opt->ppl_mode == CM_PPL_LLAMACPP ? "llamacpp" : "lm-eval"));
    json_object_set_new(cfg, "random_seed", json_integer((json_int_t)opt->seed));
    json_object_set_new(cfg, "threads", json_integer(mi->n_threads));
    json_object_set_new(cfg, "ranks", json_integer(cm_dist_size(opt->dist)));
    json_object_set_new(ev->doc, "config", cfg);
    json_object_set_new(ev->doc, "model_name", str_or_null(mi->path));
    json_object_set_new(ev->doc, "model_sha256", str_or_null(mi->sha256));
    json_object_set_new(ev->doc, "model_dtype", str_or_null(mi->dtype));
    json_object_set_new(ev->doc, "seed", json_integer((json_int_t)opt->seed));
    json_object_set_new(ev->doc, "date", json_real((double)time(NULL)));
    json_object_set_new(ev->doc, "camelid", ev->camelid);
    json_object_set_new(ev->camelid, "version", json_string("0.1.0"));
    json_object_set_new(ev->camelid, "status", json_string("running"));
    *out = ev;
    return CM_OK;
}

void cm_eval_close(cm_eval *ev) {
    if (!ev) return;
    json_decref(ev->doc);
    free(ev);
}

bool cm_eval_interrupted(const cm_eval *ev) {
    return ev->interrupted;
}

void cm_eval_finish(cm_eval *ev, const char *status, const char *error) {
    json_object_set_new(ev->camelid, "status", json_string(status));
    if (error) json_object_set_new(ev->camelid, "error", json_string(error));
}

void cm_eval_set_lm_stats(cm_eval *ev, const cm_lm_stats *st, double wall) {
    json_t *o = json_object();
    json_object_set_new(o, "requests", json_integer(st->n_requests));
    json_object_set_new(o, "truncated", json_integer(st->n_truncated));
    json_object_set_new(o, "tokens_scored", json_integer(st->tokens_scored));
    json_object_set_new(o, "tokens_forwarded", json_integer(st->tokens_forwarded));
    json_object_set_new(o, "tokens_requested", json_integer(st->tokens_requested));
    json_object_set_new(o, "tokens_generated", json_integer(st->n_generated));
    json_object_set_new(ev->camelid, "lm", o);
    /* timings differ from run to run: kept apart so that the rest compares equal */
    json_t *t = json_object();
    json_object_set_new(t, "wall_seconds", ev_real(wall));
    json_object_set_new(t, "forward_seconds", ev_real(st->forward_seconds));
    json_object_set_new(t, "forward_tokens_per_second",
                        ev_real(st->forward_seconds > 0 ? st->tokens_forwarded / st->forward_seconds : NAN));
    json_object_set_new(t, "generate_seconds", ev_real(st->generate_seconds));
    json_object_set_new(ev->camelid, "timing", t);
}

cm_status cm_eval_to_json(const cm_eval *ev, char **json, size_t *len) {
    char *s = json_dumps(ev->doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    if (!s) return cm_error(CM_ERR_NOMEM, "out of memory for the results JSON");
    *json = s;
    *len = strlen(s);
    return CM_OK;
}

cm_status cm_eval_write(const cm_eval *ev, const char *path) {
    char *s = NULL;
    size_t n = 0;
    CM_TRY(cm_eval_to_json(ev, &s, &n));
    char *t = malloc(n + 2);
    if (!t) {
        free(s);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    memcpy(t, s, n);
    t[n] = '\n';
    free(s);
    cm_status st = cm_write_file_atomic(path, t, n + 1);
    free(t);
    return st;
}

void ev_begin(cm_eval *ev, const char *task, int64_t total) {
    ev->task = task;
    ev->total = total;
    ev->task_t0 = now_seconds();
    if (ev->last_checkpoint == 0) ev->last_checkpoint = ev->task_t0;
    if (ev->hooks && ev->hooks->progress) {
        cm_eval_progress p = {task, 0, total, 0};
        if (ev->hooks->progress(ev->hooks->user, &p)) ev->interrupted = true;
    }
}

void ev_checkpoint(cm_eval *ev) {
    ev->last_checkpoint = now_seconds();
    if (ev->hooks && ev->hooks->checkpoint) ev->hooks->checkpoint(ev->hooks->user);
}

bool ev_checkpoint_due(const cm_eval *ev) {
    return ev->hooks && ev->hooks->checkpoint && now_seconds() - ev->last_checkpoint >= 1.0;
}

int ev_tick(cm_eval *ev, int64_t done) {
    double t = now_seconds();
    if (ev->hooks && ev->hooks->progress) {
        cm_eval_progress p = {ev->task, done, ev->total, t - ev->task_t0};
        if (ev->hooks->progress(ev->hooks->user, &p)) ev->interrupted = true;
    }
    return ev->interrupted;
}

cm_status ev_stop(cm_eval *ev) {
    ev->interrupted = true;
    return cm_error(CM_ERR_ARG, "interrupted");
}

/* Replace key in o, moving it to the end: the document's key order then depends only on the order in which
 * tasks publish their final results, never on when checkpoints happened. */
static void set_last(json_t *o, const char *key, json_t *v) {
    json_object_del(o, key);
    json_object_set_new(o, key, v);
}

void ev_set_task(cm_eval *ev, const char *name, json_t *result, json_t *config, int version, int n_shot,
                 json_t *higher, int64_t n_original, int64_t n_effective) {
    set_last(ev->results, name, result);
    if (config) set_last(ev->configs, name, config);
    set_last(ev->versions, name, json_integer(version));
    set_last(ev->n_shot, name, json_integer(n_shot));
    if (higher) set_last(ev->higher, name, higher);
    json_t *ns = json_object();
    json_object_set_new(ns, "original", json_integer(n_original));
    json_object_set_new(ns, "effective", json_integer(n_effective));
    set_last(ev->n_samples, name, ns);
}

json_t *ev_samples(cm_eval *ev, const char *name) {
    if (!ev->samples) return NULL;
    json_t *a = json_object_get(ev->samples, name);
    if (!a) {
        a = json_array();
        json_object_set_new(ev->samples, name, a);
    }
    return a;
}

char *ev_stem(const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    const char *dot = strrchr(b, '.');
    size_t n = dot && dot != b ? (size_t)(dot - b) : strlen(b);
    char *s = malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, b, n);
    s[n] = 0;
    return s;
}

const char *ev_show(const char *s, char *buf, size_t cap) {
    return cm_json_show(s, buf, cap);
}

/* Skip a JSON string starting at text[i] == '"'; returns the index after it. */
static size_t skip_string(const char *t, size_t len, size_t i, int *line) {
    for (i++; i < len; i++) {
        if (t[i] == '\\') {
            i++;
            continue;
        }
        if (t[i] == '\n') (*line)++;
        if (t[i] == '"') return i + 1;
    }
    return len;
}

static size_t skip_ws(const char *t, size_t len, size_t i, int *line) {
    while (i < len && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) {
        if (t[i] == '\n') (*line)++;
        i++;
    }
    return i;
}

/* Skip one JSON value at t[i]. */
static size_t skip_value(const char *t, size_t len, size_t i, int *line) {
    int depth = 0;
    while (i < len) {
        char c = t[i];
        if (c == '"') {
            i = skip_string(t, len, i, line);
            if (depth == 0) return i;
            continue;
        }
        if (c == '\n') (*line)++;
        if (c == '{' || c == '[') depth++;
        if (c == '}' || c == ']') {
            depth--;
            if (depth <= 0) return i + 1;
        }
        if (depth == 0 && (c == ',' || c == ' ' || c == '\n' || c == '\r' || c == '\t')) return i;
        i++;
    }
    return len;
}

int ev_json_elem_line(const char *t, size_t len, const char *key, size_t index) {
    int line = 1;
    size_t i = skip_ws(t, len, 0, &line);
    if (key[0]) { /* find key among the top-level object's members */
        if (i >= len || t[i] != '{') return 0;
        i++;
        size_t klen = strlen(key);
        for (;;) {
            i = skip_ws(t, len, i, &line);
            if (i >= len || t[i] != '"') return 0;
            size_t ks = i + 1, ke = skip_string(t, len, i, &line);
            bool match = ke - ks - 1 == klen && memcmp(t + ks, key, klen) == 0;
            i = skip_ws(t, len, ke, &line);
            if (i >= len || t[i] != ':') return 0;
            i = skip_ws(t, len, i + 1, &line);
            if (match) break;
            i = skip_ws(t, len, skip_value(t, len, i, &line), &line);
            if (i >= len || t[i] != ',') return 0;
            i++;
        }
    }
    if (i >= len || t[i] != '[') return 0;
    i++;
    for (size_t k = 0;; k++) {
        i = skip_ws(t, len, i, &line);
        if (i >= len || t[i] == ']') return 0;
        if (k == index) return line;
        i = skip_ws(t, len, skip_value(t, len, i, &line), &line);
        if (i >= len || t[i] != ',') return 0;
        i++;
    }
}

cm_status ev_generation_prompt(cm_eval *ev, cm_lm *lm, const char *question, int32_t **ids, int *n) {
    const cm_tokenizer *tok = cm_lm_tokenizer(lm);
    size_t k = 0;
    if (ev->opt.use_template) {
        cm_chat_message msg = {"user", question};
        cm_chat_rendered r;
        CM_TRY(cm_chat_render(ev->opt.template_id, &msg, 1, true, &r));
        cm_status st = cm_chat_tokenize(&r, tok, ids, &k);
        cm_chat_rendered_free(&r);
        CM_TRY(st);
    } else {
        size_t ql = strlen(question);
        char *p = malloc(ql + 32);
        if (!p) return cm_error(CM_ERR_NOMEM, "out of memory");
        int pl = snprintf(p, ql + 32, "Question: %s\nAnswer:", question);
        bool bos = cm_tokenizer_add_bos(tok) && cm_tokenizer_bos(tok) >= 0;
        cm_status st = cm_tokenizer_encode(tok, p, (size_t)pl, bos, false, ids, &k);
        free(p);
        CM_TRY(st);
    }
    *n = (int)k;
    return CM_OK;
}

static const char *const kinds[] = {"mmlu", "perplexity", "bigbench", "snowball"};

cm_status cm_eval_check_spec(const char *spec) {
    const char *colon = strchr(spec, ':');
    size_t kl = colon ? (size_t)(colon - spec) : strlen(spec);
    int kind = -1;
    for (int i = 0; i < 4; i++)
        if (strlen(kinds[i]) == kl && !strncmp(spec, kinds[i], kl)) kind = i;
    char buf[128];
    if (kind < 0)
        return cm_error(CM_ERR_ARG,
                        "--tasks: unknown task \"%s\" (known: mmlu:DIR[:SUBJECT], perplexity:FILE, "
                        "bigbench:TASK.json, snowball:FILE.json)",
                        ev_show(spec, buf, sizeof buf));
    if (!colon || !colon[1])
        return cm_error(CM_ERR_ARG, "--tasks: \"%s\" needs its data, e.g. %s:PATH",
                        ev_show(spec, buf, sizeof buf), kinds[kind]);
    const char *data = colon + 1;
    if (kind == 0) {
        if (cm_path_is_dir(data)) return CM_OK;
        const char *last = strrchr(data, ':');
        if (last) {
            char *dir = strndup(data, (size_t)(last - data));
            if (!dir) return cm_error(CM_ERR_NOMEM, "out of memory");
            int ok = cm_path_is_dir(dir);
            free(dir);
            if (ok) return CM_OK;
        }
        return cm_error(CM_ERR_NOT_FOUND, "--tasks: %s: no such folder (mmlu:DIR[:SUBJECT])", data);
    }
    if (!cm_path_exists(data) || cm_path_is_dir(data))
        return cm_error(CM_ERR_NOT_FOUND, "--tasks: %s: no such file", data);
    return CM_OK;
}

cm_status ev_dispatch(cm_eval *ev, cm_lm *lm, const char *spec) {
    const char *data = strchr(spec, ':') + 1;
    if (!strncmp(spec, "mmlu:", 5)) return cm_eval_mmlu(ev, lm, data);
    if (!strncmp(spec, "perplexity:", 11)) return cm_eval_perplexity(ev, lm, data);
    if (!strncmp(spec, "bigbench:", 9)) return cm_eval_bigbench(ev, lm, data);
    return cm_eval_snowball(ev, lm, data);
}

cm_status cm_eval_run_task(cm_eval *ev, cm_lm *lm, const char *spec, const cm_eval_hooks *hooks) {
    CM_TRY(cm_eval_check_spec(spec));
    if (cm_dist_size(ev->opt.dist) > 1) return ev_run_task_sharded(ev, lm, spec, hooks);
    ev->hooks = hooks;
    cm_status st = ev_dispatch(ev, lm, spec);
    ev_checkpoint(ev);
    ev->hooks = NULL;
    return st;
}
