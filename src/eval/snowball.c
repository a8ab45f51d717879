/* Snowballed Hallucination sets (FACTS 9.4, arXiv:2305.13534): a JSON array whose items are questions, either
 * objects {"question": ..., "answer": true|false} (gold Yes for true) or plain strings (gold No). The model
 * answers greedily (the question as "Question: {q}\nAnswer:" or, with a chat template, as the user's turn);
 * the first "yes" or "no" word of the answer (case-insensitive) is its verdict. acc counts an answer without
 * a verdict as wrong; no_answer is the share of such answers; yes_rate the share of Yes verdicts. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/eval_metrics.h"
#include "camelid/file.h"
#include "eval_internal.h"
#include "format/json_util.h"

static bool word_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* 1 = yes, 0 = no, -1 = neither (the first of the two words found). */
int ev_first_yes_no(const char *s);
int ev_first_yes_no(const char *s) {
    for (size_t i = 0; s[i]; i++) {
        if (i > 0 && word_char(s[i - 1])) continue;
        if (!strncasecmp(s + i, "yes", 3) && !word_char(s[i + 3])) return 1;
        if (!strncasecmp(s + i, "no", 2) && !word_char(s[i + 2])) return 0;
    }
    return -1;
}

static void publish(cm_eval *ev, const char *key, const char *path, const double *acc, size_t done, int none,
                    int yes, size_t n_orig, int truncated) {
    json_t *r = json_object();
    json_object_set_new(r, "alias", json_string(key));
    json_object_set_new(r, "acc", ev_real(cm_metric_mean(acc, done)));
    json_object_set_new(r, "acc_stderr", ev_real(cm_metric_stderr(acc, done)));
    json_object_set_new(r, "no_answer", ev_real(done ? (double)none / (double)done : NAN));
    json_object_set_new(r, "yes_rate", ev_real(done ? (double)yes / (double)done : NAN));
    json_object_set_new(r, "truncated", json_integer(truncated));
    json_t *c = json_object();
    json_object_set_new(c, "task", json_string(key));
    json_object_set_new(c, "data_file", json_string(path));
    json_object_set_new(c, "output_type", json_string("generate_until"));
    json_object_set_new(c, "max_gen_tokens", json_integer(ev->opt.max_gen_tokens));
    json_t *h = json_object();
    json_object_set_new(h, "acc", json_true());
    json_object_set_new(h, "no_answer", json_false());
    ev_set_task(ev, key, r, c, 0, 0, h, (json_int_t)n_orig, (json_int_t)done);
}

cm_status cm_eval_snowball(cm_eval *ev, cm_lm *lm, const char *path) {
    char *text;
    size_t size;
    CM_TRY(cm_read_file(path, (size_t)1 << 28, &text, &size));
    json_error_t jerr;
    json_t *root = json_loadb(text, size, 0, &jerr);
    cm_status st = CM_OK;
    double *acc = NULL;
    char key[600];
    if (!root) {
        st = cm_error(CM_ERR_FORMAT, "%s:%d: %s", path, jerr.line, jerr.text);
        goto out;
    }
    if (!json_is_array(root) || json_array_size(root) == 0) {
        st = cm_error(CM_ERR_FORMAT, "%s:1: expected a non-empty JSON array of questions", path);
        goto out;
    }
    size_t n = json_array_size(root);
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(root, i);
        bool ok =
            json_is_string(it) || (json_is_object(it) && json_is_string(json_object_get(it, "question")) &&
                                   json_is_boolean(json_object_get(it, "answer")));
        if (!ok) {
            st = cm_error(CM_ERR_FORMAT,
                          "%s:%d: item %zu must be a question string or {\"question\": string, \"answer\": "
                          "true|false}, got %s",
                          path, ev_json_elem_line(text, size, "", i), i, cm_json_kind(it));
            goto out;
        }
    }
    char *stem = ev_stem(path);
    snprintf(key, sizeof key, "snowball_%s", stem ? stem : "data");
    free(stem);
    size_t n_items = n;
    if (ev->opt.limit > 0 && n_items > (size_t)ev->opt.limit) n_items = (size_t)ev->opt.limit;
    acc = malloc((n_items + 1) * sizeof *acc);
    if (!acc) {
        st = cm_error(CM_ERR_NOMEM, "out of memory");
        goto out;
    }
    json_t *samples = ev_samples(ev, key);
    ev_begin(ev, key, (int64_t)n_items);
    int none = 0, yes = 0;
    int64_t trunc0 = cm_lm_get_stats(lm)->n_truncated;
    size_t done = 0;
    for (size_t i = 0; i < n_items; i++) {
        json_t *it = json_array_get(root, i);
        const char *q =
            json_is_string(it) ? json_string_value(it) : json_string_value(json_object_get(it, "question"));
        int gold = json_is_string(it) ? 0 : json_is_true(json_object_get(it, "answer"));
        int32_t *ids = NULL;
        int nids = 0;
        char *out = NULL;
        cm_lm_gen_params gp = {ev->opt.max_gen_tokens, NULL, 0};
        st = ev_generation_prompt(ev, lm, q, &ids, &nids);
        if (st == CM_OK) st = cm_lm_generate_tokens(lm, ids, nids, &gp, &out);
        free(ids);
        if (st != CM_OK) {
            cm_error_prefix(st, "%s: item %zu", path, i);
            break;
        }
        int v = ev_first_yes_no(out);
        acc[done] = v == gold;
        none += v < 0;
        yes += v == 1;
        done++;
        if (samples) {
            json_t *o = json_object();
            json_object_set_new(o, "doc_id", json_integer((json_int_t)i));
            json_object_set_new(o, "question", json_string(q));
            json_object_set_new(o, "target", json_string(gold ? "Yes" : "No"));
            json_object_set_new(o, "output", json_string(out));
            json_object_set_new(o, "verdict", v < 0 ? json_null() : json_string(v ? "Yes" : "No"));
            json_object_set_new(o, "acc", json_real(acc[done - 1]));
            json_array_append_new(samples, o);
        }
        free(out);
        if (ev_tick(ev, (int64_t)done)) break;
        if (ev_checkpoint_due(ev)) {
            publish(ev, key, path, acc, done, none, yes, n, (int)(cm_lm_get_stats(lm)->n_truncated - trunc0));
            ev_checkpoint(ev);
        }
    }
    if (st == CM_OK && done > 0)
        publish(ev, key, path, acc, done, none, yes, n, (int)(cm_lm_get_stats(lm)->n_truncated - trunc0));
    if (st == CM_OK && ev->interrupted) st = ev_stop(ev);
out:
    free(acc);
    json_decref(root);
    free(text);
    return st;
}
