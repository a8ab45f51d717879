/* MMLU as lm-eval's default task does it (FACTS 9.1): subjects are DIR/test/<subject>_test.csv, shots the
 * first k rows of DIR/dev/<subject>_dev.csv; the prompt The following are multiple choice questions (with
 * answers) about {subject}.\n\n {shot question}\nA. ..\nB. ..\nC. ..\nD. ..\nAnswer: {letter}\n\n  (k times)
 *   {question}\nA. ..\nB. ..\nC. ..\nD. ..\nAnswer:
 * and four log-likelihood requests (prompt, " A") .. (prompt, " D"). */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/eval_csv.h"
#include "camelid/eval_metrics.h"
#include "camelid/file.h"
#include "camelid/strbuf.h"
#include "eval_internal.h"

static bool ascii_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* question.strip() + "\nA. " + A + ... + "\nAnswer:" */
static void format_question(cm_strbuf *b, const cm_csv_row *r) {
    const char *q = r->fields[0];
    size_t n = r->lens[0];
    while (n > 0 && ascii_space(*q)) q++, n--;
    while (n > 0 && ascii_space(q[n - 1])) n--;
    cm_strbuf_append(b, q, n);
    static const char *const letters[] = {"\nA. ", "\nB. ", "\nC. ", "\nD. "};
    for (int i = 0; i < 4; i++) {
        cm_strbuf_puts(b, letters[i]);
        cm_strbuf_append(b, r->fields[1 + i], r->lens[1 + i]);
    }
    cm_strbuf_puts(b, "\nAnswer:");
}

static cm_status check_rows(const cm_csv *c, const char *path) {
    char buf[80];
    for (size_t i = 0; i < c->n_rows; i++) {
        const cm_csv_row *r = &c->rows[i];
        if (r->n_fields != 6)
            return cm_error(CM_ERR_FORMAT, "%s:%d: expected 6 fields (question,A,B,C,D,answer), got %d", path,
                            r->line, r->n_fields);
        const char *a = r->fields[5];
        if (r->lens[5] != 1 || a[0] < 'A' || a[0] > 'D')
            return cm_error(CM_ERR_FORMAT, "%s:%d: the answer must be A, B, C or D, got \"%s\"", path,
                            r->line, ev_show(a, buf, sizeof buf));
    }
    return CM_OK;
}

cm_status cm_eval_mmlu_prompt(const char *subject, const cm_csv *dev, int shots, const cm_csv_row *row,
                              char **out) {
    cm_strbuf b = {0};
    cm_strbuf_puts(&b, "The following are multiple choice questions (with answers) about ");
    for (const char *s = subject; *s; s++) cm_strbuf_append(&b, *s == '_' ? " " : s, 1);
    cm_strbuf_puts(&b, ".\n\n");
    for (int k = 0; k < shots; k++) {
        const cm_csv_row *d = &dev->rows[k];
        format_question(&b, d);
        cm_strbuf_puts(&b, " ");
        cm_strbuf_append(&b, d->fields[5], 1);
        cm_strbuf_puts(&b, "\n\n");
    }
    format_question(&b, row);
    if (b.failed) {
        free(b.buf);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    *out = b.buf;
    return CM_OK;
}

typedef struct {
    char *name; /* subject */
    char *test_path, *dev_path;
    cm_csv *test, *dev;
    size_t n_items; /* after --limit */
    double *acc, *acc_norm;
    size_t done;
    cm_calibration cal;
    int truncated;
} subject;

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Subject names under dir/test (sorted). */
static cm_status list_subjects(const char *dir, char ***names, size_t *n) {
    *names = NULL;
    *n = 0;
    char *test = cm_path_join(dir, "test");
    if (!test) return cm_error(CM_ERR_NOMEM, "out of memory");
    DIR *d = opendir(test);
    if (!d) {
        cm_status st =
            cm_error(CM_ERR_NOT_FOUND, "%s: no such folder (MMLU wants DIR/test/*_test.csv)", test);
        free(test);
        return st;
    }
    struct dirent *e;
    cm_status st = CM_OK;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l <= 9 || strcmp(e->d_name + l - 9, "_test.csv") != 0) continue;
        char **nn = realloc(*names, (*n + 1) * sizeof *nn);
        if (!nn) {
            st = cm_error(CM_ERR_NOMEM, "out of memory");
            break;
        }
        *names = nn;
        if (!(nn[*n] = strndup(e->d_name, l - 9))) {
            st = cm_error(CM_ERR_NOMEM, "out of memory");
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (st == CM_OK && *n == 0) st = cm_error(CM_ERR_NOT_FOUND, "%s: no *_test.csv files", test);
    free(test);
    if (st == CM_OK) qsort(*names, *n, sizeof **names, cmp_str);
    return st;
}

static void free_subjects(subject *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(s[i].name);
        free(s[i].test_path);
        free(s[i].dev_path);
        cm_csv_free(s[i].test);
        cm_csv_free(s[i].dev);
        free(s[i].acc);
        free(s[i].acc_norm);
    }
    free(s);
}

static json_t *higher_acc(void) {
    json_t *h = json_object();
    json_object_set_new(h, "acc", json_true());
    json_object_set_new(h, "acc_norm", json_true());
    json_object_set_new(h, "ece", json_false());
    json_object_set_new(h, "brier", json_false());
    return h;
}

/* Write the results of every subject with items done, and the group. */
static json_t *subject_config(const char *key, const char *dir, const subject *s, int shots) {
    json_t *c = json_object();
    json_object_set_new(c, "task", json_string(key));
    json_object_set_new(c, "group", json_string("mmlu"));
    json_object_set_new(c, "dataset_path", json_string(dir));
    json_object_set_new(c, "test_file", json_string(s->test_path));
    json_object_set_new(c, "fewshot_file", shots > 0 ? json_string(s->dev_path) : json_null());
    json_object_set_new(c, "output_type", json_string("multiple_choice"));
    json_object_set_new(
        c, "description",
        json_string("The following are multiple choice questions (with answers) about {subject}.\n\n"));
    json_object_set_new(c, "target_delimiter", json_string(" "));
    json_object_set_new(c, "fewshot_delimiter", json_string("\n\n"));
    json_object_set_new(c, "num_fewshot", json_integer(shots));
    return c;
}

/* Write the group and then every subject with items done (the group first, as lm-eval lists it). */
static void publish(cm_eval *ev, const char *dir, subject *subs, size_t n_subs, int shots) {
    size_t total = 0, n_with = 0, orig = 0;
    for (size_t i = 0; i < n_subs; i++) total += subs[i].done, orig += subs[i].test->n_rows;
    double *acc = malloc((total ? total : 1) * sizeof *acc),
           *accn = malloc((total ? total : 1) * sizeof *accn);
    json_t *names = json_array();
    if (!acc || !accn || !names || total == 0) {
        free(acc);
        free(accn);
        json_decref(names);
        return;
    }
    cm_calibration cal = {0};
    double macro = 0;
    size_t k = 0;
    int truncated = 0;
    for (size_t i = 0; i < n_subs; i++) {
        subject *s = &subs[i];
        if (s->done == 0) continue;
        char key[512];
        snprintf(key, sizeof key, "mmlu_%s", s->name);
        json_array_append_new(names, json_string(key));
        memcpy(acc + k, s->acc, s->done * sizeof *acc);
        memcpy(accn + k, s->acc_norm, s->done * sizeof *accn);
        k += s->done;
        for (int b = 0; b < 10; b++) {
            cal.bin_conf[b] += s->cal.bin_conf[b];
            cal.bin_acc[b] += s->cal.bin_acc[b];
            cal.bin_n[b] += s->cal.bin_n[b];
        }
        cal.brier_sum += s->cal.brier_sum;
        cal.n += s->cal.n;
        macro += cm_metric_mean(s->acc, s->done);
        truncated += s->truncated;
        n_with++;
    }
    json_t *g = json_object();
    json_object_set_new(g, "alias", json_string("mmlu"));
    json_object_set_new(g, "acc", ev_real(cm_metric_mean(acc, k)));
    json_object_set_new(g, "acc_stderr", ev_real(cm_metric_stderr(acc, k)));
    json_object_set_new(g, "acc_norm", ev_real(cm_metric_mean(accn, k)));
    json_object_set_new(g, "acc_norm_stderr", ev_real(cm_metric_stderr(accn, k)));
    json_object_set_new(g, "acc_macro", ev_real(macro / (double)n_with));
    json_object_set_new(g, "ece", ev_real(cm_calibration_ece(&cal)));
    json_object_set_new(g, "brier", ev_real(cm_calibration_brier(&cal)));
    json_object_set_new(g, "truncated", json_integer(truncated));
    json_object_set_new(g, "subjects", json_integer((json_int_t)n_with));
    ev_set_task(ev, "mmlu", g, NULL, 1, shots, higher_acc(), (json_int_t)orig, (json_int_t)k);
    json_object_del(ev->group_subtasks, "mmlu");
    json_object_set_new(ev->group_subtasks, "mmlu", names);
    for (size_t i = 0; i < n_subs; i++) {
        subject *s = &subs[i];
        if (s->done == 0) continue;
        char key[512], alias[512];
        snprintf(key, sizeof key, "mmlu_%s", s->name);
        snprintf(alias, sizeof alias, " - %s", s->name);
        json_t *r = json_object();
        json_object_set_new(r, "alias", json_string(alias));
        json_object_set_new(r, "acc", ev_real(cm_metric_mean(s->acc, s->done)));
        json_object_set_new(r, "acc_stderr", ev_real(cm_metric_stderr(s->acc, s->done)));
        json_object_set_new(r, "acc_norm", ev_real(cm_metric_mean(s->acc_norm, s->done)));
        json_object_set_new(r, "acc_norm_stderr", ev_real(cm_metric_stderr(s->acc_norm, s->done)));
        json_object_set_new(r, "ece", ev_real(cm_calibration_ece(&s->cal)));
        json_object_set_new(r, "brier", ev_real(cm_calibration_brier(&s->cal)));
        json_object_set_new(r, "truncated", json_integer(s->truncated));
        ev_set_task(ev, key, r, subject_config(key, dir, s, shots), 1, shots, higher_acc(),
                    (json_int_t)s->test->n_rows, (json_int_t)s->done);
    }
    free(acc);
    free(accn);
}

static cm_status score_item(cm_eval *ev, cm_lm *lm, subject *s, size_t i, int shots, json_t *samples) {
    const cm_csv_row *row = &s->test->rows[i];
    char *ctx;
    CM_TRY(cm_eval_mmlu_prompt(s->name, s->dev, shots, row, &ctx));
    static const char *const conts[] = {" A", " B", " C", " D"};
    int32_t *cids[4] = {0}, *xids[4] = {0};
    cm_ll_request req[4];
    memset(req, 0, sizeof req);
    cm_status st = CM_OK;
    for (int c = 0; c < 4 && st == CM_OK; c++) {
        st = cm_lm_encode_pair(lm, ctx, strlen(ctx), conts[c], 2, &cids[c], &req[c].n_ctx, &xids[c],
                               &req[c].n_cont);
        req[c].ctx = cids[c];
        req[c].cont = xids[c];
    }
    if (st == CM_OK) st = cm_lm_loglikelihood(lm, req, 4);
    if (st == CM_OK) {
        double ll[4], norm[4], p[4];
        size_t pred = 0, pred_norm = 0, gold = (size_t)(row->fields[5][0] - 'A');
        bool trunc = false;
        for (int c = 0; c < 4; c++) {
            ll[c] = req[c].logprob;
            norm[c] = ll[c] / 2.0; /* acc_norm divides by the continuation's characters */
            if (ll[c] > ll[pred]) pred = (size_t)c;
            if (norm[c] > norm[pred_norm]) pred_norm = (size_t)c;
            trunc = trunc || req[c].truncated;
        }
        cm_metric_softmax(ll, 4, p);
        s->acc[s->done] = pred == gold;
        s->acc_norm[s->done] = pred_norm == gold;
        cm_calibration_add(&s->cal, p, 4, pred, gold);
        s->truncated += trunc;
        s->done++;
        if (samples) {
            json_t *o = json_object(), *resps = json_array(), *probs = json_array();
            for (int c = 0; c < 4; c++) {
                json_t *pair = json_array();
                json_array_append_new(pair, ev_real(ll[c]));
                json_array_append_new(pair, json_boolean(req[c].is_greedy));
                json_array_append_new(resps, pair);
                json_array_append_new(probs, ev_real(p[c]));
            }
            json_object_set_new(o, "doc_id", json_integer((json_int_t)i));
            json_object_set_new(o, "line", json_integer(row->line));
            json_object_set_new(o, "target", json_integer((json_int_t)gold));
            json_object_set_new(o, "prompt", json_string(ctx));
            json_object_set_new(o, "resps", resps);
            json_object_set_new(o, "probs", probs);
            json_object_set_new(o, "pred", json_integer((json_int_t)pred));
            json_object_set_new(o, "acc", json_real(pred == gold));
            json_object_set_new(o, "acc_norm", json_real(pred_norm == gold));
            json_object_set_new(o, "truncated", json_boolean(trunc));
            json_array_append_new(samples, o);
        }
    }
    for (int c = 0; c < 4; c++) free(cids[c]), free(xids[c]);
    free(ctx);
    return st;
}

cm_status cm_eval_mmlu(cm_eval *ev, cm_lm *lm, const char *data) {
    char *dir = strdup(data), *only = NULL;
    if (!dir) return cm_error(CM_ERR_NOMEM, "out of memory");
    if (!cm_path_is_dir(dir)) {
        char *colon = strrchr(dir, ':');
        if (colon) *colon = 0, only = colon + 1;
    }
    int shots = ev->opt.shots < 0 ? 5 : ev->opt.shots;
    char **names = NULL;
    size_t n_names = 0;
    subject *subs = NULL;
    cm_status st = CM_OK;
    if (only) {
        names = malloc(sizeof *names);
        if (!names || !(names[0] = strdup(only))) {
            st = cm_error(CM_ERR_NOMEM, "out of memory");
        } else {
            n_names = 1;
        }
    } else {
        st = list_subjects(dir, &names, &n_names);
    }
    if (st == CM_OK && !(subs = calloc(n_names, sizeof *subs))) st = cm_error(CM_ERR_NOMEM, "out of memory");
    int64_t total = 0;
    for (size_t i = 0; i < n_names && st == CM_OK; i++) {
        subject *s = &subs[i];
        s->name = names[i];
        names[i] = NULL;
        char file[1024];
        snprintf(file, sizeof file, "test/%s_test.csv", s->name);
        s->test_path = cm_path_join(dir, file);
        snprintf(file, sizeof file, "dev/%s_dev.csv", s->name);
        s->dev_path = cm_path_join(dir, file);
        if (!s->test_path || !s->dev_path) {
            st = cm_error(CM_ERR_NOMEM, "out of memory");
            break;
        }
        if (!cm_path_exists(s->test_path)) {
            st = cm_error(CM_ERR_NOT_FOUND, "%s: no such file (subject \"%s\")", s->test_path, s->name);
            break;
        }
        if ((st = cm_csv_read(s->test_path, &s->test)) != CM_OK) break;
        if ((st = check_rows(s->test, s->test_path)) != CM_OK) break;
        if (shots > 0) {
            if (!cm_path_exists(s->dev_path)) {
                st = cm_error(CM_ERR_NOT_FOUND,
                              "%s: no such file (the %d-shot examples of \"%s\"; --shots 0 runs "
                              "without)",
                              s->dev_path, shots, s->name);
                break;
            }
            if ((st = cm_csv_read(s->dev_path, &s->dev)) != CM_OK) break;
            if ((st = check_rows(s->dev, s->dev_path)) != CM_OK) break;
            if (s->dev->n_rows < (size_t)shots) {
                st = cm_error(CM_ERR_FORMAT, "%s: %zu rows, fewer than the %d shots asked for", s->dev_path,
                              s->dev->n_rows, shots);
                break;
            }
        }
        s->n_items = s->test->n_rows;
        if (ev->opt.limit > 0 && s->n_items > (size_t)ev->opt.limit) s->n_items = (size_t)ev->opt.limit;
        s->acc = malloc((s->n_items + 1) * sizeof *s->acc);
        s->acc_norm = malloc((s->n_items + 1) * sizeof *s->acc_norm);
        if (!s->acc || !s->acc_norm) {
            st = cm_error(CM_ERR_NOMEM, "out of memory");
            break;
        }
        total += (int64_t)s->n_items;
    }
    if (st == CM_OK) {
        ev_begin(ev, "mmlu", total);
        int64_t done = 0;
        for (size_t i = 0; i < n_names && st == CM_OK; i++) {
            subject *s = &subs[i];
            char key[512];
            snprintf(key, sizeof key, "mmlu_%s", s->name);
            json_t *samples = ev_samples(ev, key);
            for (size_t j = 0; j < s->n_items && st == CM_OK; j++) {
                st = score_item(ev, lm, s, j, shots, samples);
                if (st != CM_OK) break;
                done++;
                if (ev_tick(ev, done)) {
                    publish(ev, dir, subs, n_names, shots);
                    st = ev_stop(ev);
                    break;
                }
                if (ev_checkpoint_due(ev)) {
                    publish(ev, dir, subs, n_names, shots);
                    ev_checkpoint(ev);
                }
            }
        }
        if (st == CM_OK) publish(ev, dir, subs, n_names, shots);
    }
    for (size_t i = 0; i < n_names; i++) free(names ? names[i] : NULL);
    free(names);
    if (subs) free_subjects(subs, n_names);
    free(dir);
    return st;
}
