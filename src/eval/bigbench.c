/* BIG-bench JSON tasks (FACTS 9.3), formatted as BIG-bench's json_task and lm-eval's BigBenchJsonTask do:
 *   task_prefix + [shots joined by few_shot_example_separator ("\n")] + example_input_prefix ("\nQ: ") +
 * input
 *   [+ choice_prefix ("\n  choice: ") + choices joined by it, when append_choices_to_input (default true)]
 *   + example_output_prefix ("\nA: ")
 * Choices are the keys of target_scores in file order. multiple_choice_grade = mean target_scores[the choice
 * of highest log-likelihood] (ties: the first); exact_str_match = the greedy output (cut at stop_string, then
 * the first match of output_regex, default [^\.\?\!\;\n]+) equals one of target. Duplicate examples are
 * dropped (as lm-eval does); few-shot examples for item i are the next k distinct examples after it, in file
 * order. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/eval_metrics.h"
#include "camelid/file.h"
#include "camelid/strbuf.h"
#include "eval_internal.h"
#include "format/json_util.h"

typedef struct {
    json_t *ex;
    size_t index; /* in the file's examples array */
    int line;
} example;

typedef struct {
    const char *task_prefix, *input_prefix, *output_prefix, *choice_prefix, *separator, *stop_string, *regex;
    bool append_choices;
} bb_format;

static const char *str_member(json_t *o, const char *key, const char *dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

static void doc_to_text(cm_strbuf *b, const bb_format *f, json_t *ex) {
    cm_strbuf_puts(b, f->input_prefix);
    cm_strbuf_puts(b, json_string_value(json_object_get(ex, "input")));
    json_t *ts = json_object_get(ex, "target_scores");
    if (ts && f->append_choices) {
        const char *k;
        json_t *v;
        json_object_foreach(ts, k, v) {
            cm_strbuf_puts(b, f->choice_prefix);
            cm_strbuf_puts(b, k);
        }
    }
    cm_strbuf_puts(b, f->output_prefix);
}

/* The first choice with the highest score (MC), else the first target. */
static const char *best_answer(json_t *ex, size_t *gold) {
    json_t *ts = json_object_get(ex, "target_scores");
    if (ts) {
        const char *best = NULL, *k;
        double bs = -INFINITY;
        size_t i = 0;
        json_t *v;
        json_object_foreach(ts, k, v) {
            if (json_number_value(v) > bs) bs = json_number_value(v), best = k, *gold = i;
            i++;
        }
        return best;
    }
    json_t *t = json_object_get(ex, "target");
    return json_is_string(t) ? json_string_value(t) : json_string_value(json_array_get(t, 0));
}

static cm_status check_example(json_t *ex, const char *path, int line, size_t i, bool need_mc,
                               bool need_target) {
    if (!json_is_object(ex))
        return cm_error(CM_ERR_FORMAT, "%s:%d: examples[%zu] is %s, expected an object", path, line, i,
                        cm_json_kind(ex));
    if (!json_is_string(json_object_get(ex, "input")))
        return cm_error(CM_ERR_FORMAT, "%s:%d: examples[%zu] has no string \"input\"", path, line, i);
    json_t *ts = json_object_get(ex, "target_scores"), *t = json_object_get(ex, "target");
    if (ts) {
        if (!json_is_object(ts) || json_object_size(ts) == 0)
            return cm_error(CM_ERR_FORMAT, "%s:%d: examples[%zu].target_scores must be a non-empty object",
                            path, line, i);
        const char *k;
        json_t *v;
        json_object_foreach(ts, k, v) {
            if (!json_is_number(v))
                return cm_error(CM_ERR_FORMAT, "%s:%d: examples[%zu].target_scores values must be numbers",
                                path, line, i);
        }
    } else if (need_mc) {
        return cm_error(CM_ERR_FORMAT,
                        "%s:%d: examples[%zu] has no \"target_scores\" (multiple_choice_grade needs "
                        "them)",
                        path, line, i);
    }
    if (t) {
        bool ok = json_is_string(t) || (json_is_array(t) && json_array_size(t) > 0);
        for (size_t j = 0; ok && json_is_array(t) && j < json_array_size(t); j++)
            ok = json_is_string(json_array_get(t, j));
        if (!ok)
            return cm_error(CM_ERR_FORMAT,
                            "%s:%d: examples[%zu].target must be a string or a list of strings", path, line,
                            i);
    } else if (need_target || !ts) {
        return cm_error(CM_ERR_FORMAT, "%s:%d: examples[%zu] has no \"target\"%s", path, line, i,
                        ts ? " (exact_str_match needs it)" : " or \"target_scores\"");
    }
    return CM_OK;
}

/* output: cut at stop_string, first regex match, then compare with targets (both stripped) */
static bool exact_match(const char *out, json_t *ex, const bb_format *f, pcre2_code *re, char **shown) {
    size_t n = strlen(out);
    if (f->stop_string && f->stop_string[0]) {
        const char *s = strstr(out, f->stop_string);
        if (s) n = (size_t)(s - out);
    }
    size_t ms = 0, me = n;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (md && pcre2_match(re, (PCRE2_SPTR)out, n, 0, 0, md, NULL) >= 0) {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        ms = ov[0], me = ov[1];
    } else {
        ms = me = 0; /* no match: an empty answer */
    }
    pcre2_match_data_free(md);
    while (ms < me && (out[ms] == ' ' || out[ms] == '\n' || out[ms] == '\t' || out[ms] == '\r')) ms++;
    while (me > ms &&
           (out[me - 1] == ' ' || out[me - 1] == '\n' || out[me - 1] == '\t' || out[me - 1] == '\r'))
        me--;
    *shown = strndup(out + ms, me - ms);
    if (!*shown) return false;
    json_t *t = json_object_get(ex, "target");
    size_t nt = json_is_array(t) ? json_array_size(t) : 1;
    for (size_t j = 0; j < nt; j++) {
        const char *s = json_is_array(t) ? json_string_value(json_array_get(t, j)) : json_string_value(t);
        if (!s) continue;
        while (*s == ' ' || *s == '\n') s++;
        size_t sl = strlen(s);
        while (sl > 0 && (s[sl - 1] == ' ' || s[sl - 1] == '\n')) sl--;
        if (sl == strlen(*shown) && !memcmp(s, *shown, sl)) return true;
    }
    return false;
}

typedef struct {
    double *mcg, *esm;
    size_t n_mc, n_em;
    cm_calibration cal;
    int truncated;
} bb_acc;

static void publish(cm_eval *ev, const char *key, const char *path, const char *preferred, bool do_mc,
                    bool do_em, const bb_acc *a, size_t n_orig, size_t done, int shots) {
    json_t *r = json_object(), *h = json_object();
    json_object_set_new(r, "alias", json_string(key));
    double score = NAN;
    if (do_mc) {
        double m = cm_metric_mean(a->mcg, a->n_mc);
        json_object_set_new(r, "multiple_choice_grade", ev_real(m));
        json_object_set_new(r, "multiple_choice_grade_stderr", ev_real(cm_metric_stderr(a->mcg, a->n_mc)));
        json_object_set_new(r, "ece", ev_real(cm_calibration_ece(&a->cal)));
        json_object_set_new(r, "brier", ev_real(cm_calibration_brier(&a->cal)));
        json_object_set_new(h, "multiple_choice_grade", json_true());
        json_object_set_new(h, "ece", json_false());
        json_object_set_new(h, "brier", json_false());
        if (!strcmp(preferred, "multiple_choice_grade")) score = m;
    }
    if (do_em) {
        double m = cm_metric_mean(a->esm, a->n_em);
        json_object_set_new(r, "exact_str_match", ev_real(m));
        json_object_set_new(r, "exact_str_match_stderr", ev_real(cm_metric_stderr(a->esm, a->n_em)));
        json_object_set_new(h, "exact_str_match", json_true());
        if (!strcmp(preferred, "exact_str_match")) score = m;
    }
    json_object_set_new(r, "preferred_score", json_string(preferred));
    json_object_set_new(r, "score", ev_real(score));
    json_object_set_new(r, "truncated", json_integer(a->truncated));
    json_t *c = json_object();
    json_object_set_new(c, "task", json_string(key));
    json_object_set_new(c, "task_file", json_string(path));
    json_object_set_new(c, "output_type",
                        json_string(do_mc && do_em ? "multiple_choice+generate_until"
                                    : do_mc        ? "multiple_choice"
                                                   : "generate_until"));
    json_object_set_new(c, "num_fewshot", json_integer(shots));
    ev_set_task(ev, key, r, c, 0, shots, h, (json_int_t)n_orig, (json_int_t)done);
}

cm_status cm_eval_bigbench(cm_eval *ev, cm_lm *lm, const char *path) {
    char *text;
    size_t size;
    CM_TRY(cm_read_file(path, (size_t)1 << 28, &text, &size));
    json_error_t jerr;
    json_t *root = json_loadb(text, size, JSON_DECODE_INT_AS_REAL, &jerr);
    cm_status st = CM_OK;
    example *exs = NULL;
    size_t n_ex = 0;
    pcre2_code *re = NULL;
    bb_acc acc = {0};
    char key[600];
    if (!root) {
        st = cm_error(CM_ERR_FORMAT, "%s:%d: %s", path, jerr.line, jerr.text);
        goto out;
    }
    if (!json_is_object(root)) {
        st = cm_error(CM_ERR_FORMAT, "%s:1: the task must be a JSON object", path);
        goto out;
    }
    json_t *name = json_object_get(root, "name"), *examples = json_object_get(root, "examples");
    if (!examples && json_object_get(root, "subtasks")) {
        st = cm_error(CM_ERR_UNSUPPORTED, "%s:1: a task with \"subtasks\" (give one subtask's task.json)",
                      path);
        goto out;
    }
    if (!json_is_string(name)) {
        st = cm_error(CM_ERR_FORMAT, "%s:1: missing the string field \"name\"", path);
        goto out;
    }
    if (!json_is_array(examples) || json_array_size(examples) == 0) {
        st = cm_error(CM_ERR_FORMAT, "%s:%d: missing a non-empty \"examples\" list", path,
                      examples ? ev_json_elem_line(text, size, "examples", 0) : 1);
        goto out;
    }
    json_t *metrics = json_object_get(root, "metrics");
    const char *preferred = str_member(root, "preferred_score", NULL);
    if (!preferred && json_is_array(metrics)) preferred = json_string_value(json_array_get(metrics, 0));
    if (!preferred) {
        st = cm_error(CM_ERR_FORMAT, "%s:1: missing \"preferred_score\" and \"metrics\"", path);
        goto out;
    }
    bool do_mc = !strcmp(preferred, "multiple_choice_grade"), do_em = !strcmp(preferred, "exact_str_match");
    if (!do_mc && !do_em) {
        st = cm_error(CM_ERR_UNSUPPORTED,
                      "%s: preferred_score \"%s\" (camelid scores multiple_choice_grade and "
                      "exact_str_match)",
                      path, preferred);
        goto out;
    }
    for (size_t i = 0; json_is_array(metrics) && i < json_array_size(metrics); i++) {
        const char *m = json_string_value(json_array_get(metrics, i));
        if (m && !strcmp(m, "multiple_choice_grade")) do_mc = true;
        if (m && !strcmp(m, "exact_str_match")) do_em = true;
    }
    bb_format f = {
        .task_prefix = str_member(root, "task_prefix", ""),
        .input_prefix = str_member(root, "example_input_prefix", "\nQ: "),
        .output_prefix = str_member(root, "example_output_prefix", "\nA: "),
        .choice_prefix = str_member(root, "choice_prefix", "\n  choice: "),
        .separator = str_member(root, "few_shot_example_separator", "\n"),
        .stop_string = str_member(root, "stop_string", NULL),
        .regex = str_member(root, "output_regex", "[^\\.\\?\\!\\;\\n]+"),
        .append_choices = !json_is_false(json_object_get(root, "append_choices_to_input")),
    };
    /* distinct examples, validated */
    exs = calloc(json_array_size(examples), sizeof *exs);
    if (!exs) {
        st = cm_error(CM_ERR_NOMEM, "out of memory");
        goto out;
    }
    char **dumps = calloc(json_array_size(examples), sizeof *dumps);
    for (size_t i = 0; dumps && i < json_array_size(examples); i++) {
        json_t *ex = json_array_get(examples, i);
        int line = ev_json_elem_line(text, size, "examples", i);
        bool need_mc = !strcmp(preferred, "multiple_choice_grade"),
             need_t = !strcmp(preferred, "exact_str_match");
        if ((st = check_example(ex, path, line, i, need_mc, need_t)) != CM_OK) break;
        char *d = json_dumps(ex, JSON_COMPACT | JSON_PRESERVE_ORDER);
        bool dup = false;
        for (size_t j = 0; d && j < n_ex && !dup; j++) dup = !strcmp(dumps[j], d);
        if (dup) {
            free(d);
            continue;
        }
        dumps[n_ex] = d;
        exs[n_ex++] = (example){ex, i, line};
    }
    for (size_t j = 0; dumps && j < n_ex; j++) free(dumps[j]);
    free(dumps);
    if (st != CM_OK) goto out;
    /* the metrics the data allows */
    for (size_t i = 0; i < n_ex; i++) {
        if (!json_object_get(exs[i].ex, "target_scores"))
            do_mc = do_mc && !strcmp(preferred, "multiple_choice_grade");
        if (!json_object_get(exs[i].ex, "target")) do_em = do_em && !strcmp(preferred, "exact_str_match");
    }
    if (do_em) {
        int ec;
        PCRE2_SIZE eo;
        re = pcre2_compile((PCRE2_SPTR)f.regex, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec, &eo, NULL);
        if (!re) {
            st = cm_error(CM_ERR_FORMAT, "%s: output_regex does not compile (at offset %zu)", path,
                          (size_t)eo);
            goto out;
        }
    }
    int shots = ev->opt.shots < 0 ? 0 : ev->opt.shots;
    if ((size_t)shots >= n_ex) {
        st = cm_error(CM_ERR_ARG, "%s: %zu distinct examples, too few for %d shots", path, n_ex, shots);
        goto out;
    }
    snprintf(key, sizeof key, "bigbench_%s", json_string_value(name));
    size_t n_items = n_ex;
    if (ev->opt.limit > 0 && n_items > (size_t)ev->opt.limit) n_items = (size_t)ev->opt.limit;
    acc.mcg = malloc((n_items + 1) * sizeof *acc.mcg);
    acc.esm = malloc((n_items + 1) * sizeof *acc.esm);
    if (!acc.mcg || !acc.esm) {
        st = cm_error(CM_ERR_NOMEM, "out of memory");
        goto out;
    }
    json_t *samples = ev_samples(ev, key);
    ev_begin(ev, key, (int64_t)n_items);
    size_t done = 0;
    for (size_t i = 0; i < n_items && st == CM_OK; i++) {
        json_t *ex = exs[i].ex;
        cm_strbuf b = {0};
        cm_strbuf_puts(&b, f.task_prefix);
        for (int k = 1; k <= shots; k++) {
            json_t *sh = exs[(i + (size_t)k) % n_ex].ex;
            size_t g;
            doc_to_text(&b, &f, sh);
            cm_strbuf_puts(&b, best_answer(sh, &g));
            cm_strbuf_puts(&b, f.separator);
        }
        doc_to_text(&b, &f, ex);
        if (b.failed) {
            free(b.buf);
            st = cm_error(CM_ERR_NOMEM, "out of memory");
            break;
        }
        json_t *sample = samples ? json_object() : NULL;
        if (sample) {
            json_object_set_new(sample, "doc_id", json_integer((json_int_t)exs[i].index));
            json_object_set_new(sample, "line", json_integer(exs[i].line));
            json_object_set_new(sample, "prompt", json_string(b.buf));
        }
        json_t *ts = json_object_get(ex, "target_scores");
        if (do_mc && ts) {
            size_t nc = json_object_size(ts);
            cm_ll_request *req = calloc(nc, sizeof *req);
            double *ll = calloc(nc, sizeof *ll), *p = calloc(nc, sizeof *p);
            int32_t **ids = calloc(2 * nc, sizeof *ids);
            if (!req || !ll || !p || !ids) st = cm_error(CM_ERR_NOMEM, "out of memory");
            const char *k;
            json_t *v;
            size_t c = 0;
            json_object_foreach(ts, k, v) {
                if (st != CM_OK) break;
                st = cm_lm_encode_pair(lm, b.buf, b.len, k, strlen(k), &ids[2 * c], &req[c].n_ctx,
                                       &ids[2 * c + 1], &req[c].n_cont);
                if (st != CM_OK) cm_error_prefix(st, "%s:%d: examples[%zu]", path, exs[i].line, exs[i].index);
                req[c].ctx = ids[2 * c];
                req[c].cont = ids[2 * c + 1];
                c++;
            }
            if (st == CM_OK) st = cm_lm_loglikelihood(lm, req, nc);
            if (st == CM_OK) {
                size_t pred = 0, gold = 0, j = 0;
                bool trunc = false;
                for (j = 0; j < nc; j++) {
                    ll[j] = req[j].logprob;
                    if (ll[j] > ll[pred]) pred = j;
                    trunc = trunc || req[j].truncated;
                }
                best_answer(ex, &gold);
                double score = 0;
                j = 0;
                json_object_foreach(ts, k, v) {
                    if (j++ == pred) score = json_number_value(v);
                }
                cm_metric_softmax(ll, nc, p);
                cm_calibration_add(&acc.cal, p, nc, pred, gold);
                acc.mcg[acc.n_mc++] = score;
                acc.truncated += trunc;
                if (sample) {
                    json_t *resps = json_array();
                    for (j = 0; j < nc; j++) {
                        json_t *pair = json_array();
                        json_array_append_new(pair, ev_real(ll[j]));
                        json_array_append_new(pair, json_boolean(req[j].is_greedy));
                        json_array_append_new(resps, pair);
                    }
                    json_object_set_new(sample, "resps", resps);
                    json_object_set_new(sample, "pred", json_integer((json_int_t)pred));
                    json_object_set_new(sample, "target", json_integer((json_int_t)gold));
                    json_object_set_new(sample, "multiple_choice_grade", ev_real(score));
                }
            }
            for (size_t j = 0; ids && j < 2 * nc; j++) free(ids[j]);
            free(ids), free(req), free(ll), free(p);
        }
        if (st == CM_OK && do_em && json_object_get(ex, "target")) {
            const char *stops[1] = {f.stop_string};
            cm_lm_gen_params gp = {ev->opt.max_gen_tokens, stops, f.stop_string && f.stop_string[0] ? 1 : 0};
            char *out = NULL, *shown = NULL;
            int32_t *pids = NULL;
            size_t np = 0;
            const cm_tokenizer *tok = cm_lm_tokenizer(lm);
            st = cm_tokenizer_encode(tok, b.buf, b.len,
                                     cm_tokenizer_add_bos(tok) && cm_tokenizer_bos(tok) >= 0, false, &pids,
                                     &np);
            if (st == CM_OK) st = cm_lm_generate_tokens(lm, pids, (int)np, &gp, &out);
            if (st == CM_OK) {
                bool m = exact_match(out, ex, &f, re, &shown);
                acc.esm[acc.n_em++] = m;
                if (sample) {
                    json_object_set_new(sample, "output", json_string(out));
                    json_object_set_new(sample, "answer", shown ? json_string(shown) : json_null());
                    json_object_set_new(sample, "exact_str_match", json_real(m));
                }
            }
            free(pids), free(out), free(shown);
        }
        free(b.buf);
        if (st != CM_OK) {
            json_decref(sample);
            break;
        }
        if (sample) json_array_append_new(samples, sample);
        done++;
        if (ev_tick(ev, (int64_t)done)) break;
        if (ev_checkpoint_due(ev)) {
            publish(ev, key, path, preferred, do_mc, do_em, &acc, n_ex, done, shots);
            ev_checkpoint(ev);
        }
    }
    if (st == CM_OK && done > 0) publish(ev, key, path, preferred, do_mc, do_em, &acc, n_ex, done, shots);
    if (st == CM_OK && ev->interrupted) st = ev_stop(ev);
out:
    pcre2_code_free(re);
    free(acc.mcg);
    free(acc.esm);
    free(exs);
    json_decref(root);
    free(text);
    return st;
}
