/* Reports over the SQLite store (include/camelid/eval_store.h): runs as columns, task/metric as rows. */
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "camelid/eval_store.h"
#include "camelid/file.h"
#include "camelid/strbuf.h"

typedef struct {
    int64_t id;
    double date;
    char *model, *sha, *status;
} run_info;

typedef struct {
    char *task, *metric;
    double *values; /* per run, NAN when absent */
} metric_row;

typedef struct {
    run_info *runs;
    size_t n_runs;
    metric_row *rows;
    size_t n_rows;
} report;

static void report_free(report *r) {
    for (size_t i = 0; i < r->n_runs; i++)
        free(r->runs[i].model), free(r->runs[i].sha), free(r->runs[i].status);
    for (size_t i = 0; i < r->n_rows; i++)
        free(r->rows[i].task), free(r->rows[i].metric), free(r->rows[i].values);
    free(r->runs);
    free(r->rows);
}

static char *col_dup(sqlite3_stmt *s, int i) {
    const unsigned char *t = sqlite3_column_text(s, i);
    return strdup(t ? (const char *)t : "");
}

static cm_status load(const char *path, report *r) {
    memset(r, 0, sizeof *r);
    if (!cm_path_exists(path)) return cm_error(CM_ERR_NOT_FOUND, "%s: no such store", path);
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    cm_status st = CM_OK;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        st = cm_error(CM_ERR_IO, "%s: cannot open the store: %s", path, db ? sqlite3_errmsg(db) : "?");
        goto out;
    }
    if (sqlite3_prepare_v2(db, "SELECT id, date, model, model_sha256, status FROM runs ORDER BY id", -1, &s,
                           NULL) != SQLITE_OK) {
        st = cm_error(CM_ERR_FORMAT, "%s: not a camelid store (%s)", path, sqlite3_errmsg(db));
        goto out;
    }
    while (sqlite3_step(s) == SQLITE_ROW) {
        run_info *nr = realloc(r->runs, (r->n_runs + 1) * sizeof *nr);
        if (!nr) {
            st = cm_error(CM_ERR_NOMEM, "out of memory");
            goto out;
        }
        r->runs = nr;
        run_info *ri = &r->runs[r->n_runs++];
        ri->id = sqlite3_column_int64(s, 0);
        ri->date = sqlite3_column_double(s, 1);
        ri->model = col_dup(s, 2);
        ri->sha = col_dup(s, 3);
        ri->status = col_dup(s, 4);
    }
    sqlite3_finalize(s);
    s = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT run_id, task, metric, value FROM results ORDER BY task, metric, run_id",
                           -1, &s, NULL) != SQLITE_OK) {
        st = cm_error(CM_ERR_FORMAT, "%s: not a camelid store (%s)", path, sqlite3_errmsg(db));
        goto out;
    }
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *task = (const char *)sqlite3_column_text(s, 1),
                   *metric = (const char *)sqlite3_column_text(s, 2);
        if (!task || !metric) continue;
        metric_row *row = r->n_rows ? &r->rows[r->n_rows - 1] : NULL;
        if (!row || strcmp(row->task, task) || strcmp(row->metric, metric)) {
            metric_row *nr = realloc(r->rows, (r->n_rows + 1) * sizeof *nr);
            if (!nr) {
                st = cm_error(CM_ERR_NOMEM, "out of memory");
                goto out;
            }
            r->rows = nr;
            row = &r->rows[r->n_rows++];
            row->task = strdup(task);
            row->metric = strdup(metric);
            row->values = malloc((r->n_runs + 1) * sizeof *row->values);
            if (!row->values) {
                st = cm_error(CM_ERR_NOMEM, "out of memory");
                goto out;
            }
            for (size_t i = 0; i < r->n_runs; i++) row->values[i] = NAN;
        }
        int64_t id = sqlite3_column_int64(s, 0);
        for (size_t i = 0; i < r->n_runs; i++)
            if (r->runs[i].id == id && sqlite3_column_type(s, 3) != SQLITE_NULL)
                row->values[i] = sqlite3_column_double(s, 3);
    }
out:
    sqlite3_finalize(s);
    sqlite3_close(db);
    if (st != CM_OK) report_free(r);
    return st;
}

static cm_status finish(cm_strbuf *b, char **out) {
    char *text = cm_strbuf_take(b);
    if (!text) return cm_error(CM_ERR_NOMEM, "out of memory for the report");
    *out = text;
    return CM_OK;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    if (s && !s[1]) { /* a folder with a trailing slash */
        while (s > p && s[-1] != '/') s--;
        return s;
    }
    return s ? s + 1 : p;
}

static void fmt_date(double d, char *buf, size_t cap) {
    time_t t = (time_t)d;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%d %H:%M", &tm);
}

static bool hidden_metric(const char *m) {
    return !strcmp(m, "score"); /* the preferred metric is shown under its own name */
}

cm_status cm_eval_report_text(const char *db_path, char **text) {
    report r;
    CM_TRY(load(db_path, &r));
    cm_strbuf b = {0};
    cm_strbuf_printf(&b, "runs in %s:\n", db_path);
    for (size_t i = 0; i < r.n_runs; i++) {
        char d[32];
        fmt_date(r.runs[i].date, d, sizeof d);
        cm_strbuf_printf(&b, "  #%-4lld %s UTC  %-32s sha256 %.12s  %s\n", (long long)r.runs[i].id, d,
                         base_name(r.runs[i].model), r.runs[i].sha, r.runs[i].status);
    }
    cm_strbuf_printf(&b, "\n%-36s %-24s", "task", "metric");
    for (size_t i = 0; i < r.n_runs; i++) {
        char h[16];
        snprintf(h, sizeof h, "#%lld", (long long)r.runs[i].id);
        cm_strbuf_printf(&b, " %10s", h);
    }
    cm_strbuf_printf(&b, "\n");
    for (size_t k = 0; k < r.n_rows; k++) {
        if (hidden_metric(r.rows[k].metric)) continue;
        cm_strbuf_printf(&b, "%-36s %-24s", r.rows[k].task, r.rows[k].metric);
        for (size_t i = 0; i < r.n_runs; i++) {
            double v = r.rows[k].values[i];
            if (isnan(v))
                cm_strbuf_printf(&b, " %10s", "-");
            else
                cm_strbuf_printf(&b, " %10.4f", v);
        }
        cm_strbuf_printf(&b, "\n");
    }
    report_free(&r);
    return finish(&b, text);
}

static void html_escape(cm_strbuf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<':
            cm_strbuf_printf(b, "&lt;");
            break;
        case '>':
            cm_strbuf_printf(b, "&gt;");
            break;
        case '&':
            cm_strbuf_printf(b, "&amp;");
            break;
        case '"':
            cm_strbuf_printf(b, "&quot;");
            break;
        default:
            cm_strbuf_printf(b, "%c", *s);
        }
    }
}

cm_status cm_eval_report_html(const char *db_path, char **html) {
    report r;
    CM_TRY(load(db_path, &r));
    cm_strbuf b = {0};
    cm_strbuf_printf(
        &b,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>camelid evaluation report</title>\n"
        "<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td.l,th.l{text-align:left}"
        "h2{margin-top:1.5em;font-size:1.1em}</style></head><body>\n<h1>camelid evaluation report</h1>\n");
    cm_strbuf_printf(&b, "<p>Store: <code>");
    html_escape(&b, db_path);
    cm_strbuf_printf(
        &b, "</code></p>\n<table><tr><th>run</th><th class=\"l\">date (UTC)</th><th class=\"l\">model</th>"
            "<th class=\"l\">sha256</th><th class=\"l\">status</th></tr>\n");
    for (size_t i = 0; i < r.n_runs; i++) {
        char d[32];
        fmt_date(r.runs[i].date, d, sizeof d);
        cm_strbuf_printf(&b, "<tr><td>#%lld</td><td class=\"l\">%s</td><td class=\"l\">",
                         (long long)r.runs[i].id, d);
        html_escape(&b, r.runs[i].model);
        cm_strbuf_printf(&b, "</td><td class=\"l\"><code>%.12s</code></td><td class=\"l\">", r.runs[i].sha);
        html_escape(&b, r.runs[i].status);
        cm_strbuf_printf(&b, "</td></tr>\n");
    }
    cm_strbuf_printf(&b, "</table>\n");
    static const char *const colors[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948"};
    for (size_t k = 0; k < r.n_rows; k++) {
        if (hidden_metric(r.rows[k].metric)) continue;
        double mx = 0;
        for (size_t i = 0; i < r.n_runs; i++)
            if (!isnan(r.rows[k].values[i]) && fabs(r.rows[k].values[i]) > mx) mx = fabs(r.rows[k].values[i]);
        if (mx == 0) mx = 1;
        cm_strbuf_printf(&b, "<h2>");
        html_escape(&b, r.rows[k].task);
        cm_strbuf_printf(&b, " &mdash; ");
        html_escape(&b, r.rows[k].metric);
        int bar_h = 18, gap = 4, label_w = 260, plot_w = 360;
        int h = (int)r.n_runs * (bar_h + gap) + gap;
        cm_strbuf_printf(
            &b, "</h2>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" role=\"img\">\n",
            label_w + plot_w + 90, h);
        for (size_t i = 0; i < r.n_runs; i++) {
            double v = r.rows[k].values[i];
            int y = gap + (int)i * (bar_h + gap);
            cm_strbuf_printf(&b, "<text x=\"0\" y=\"%d\" font-size=\"12\">#%lld ", y + 13,
                             (long long)r.runs[i].id);
            html_escape(&b, base_name(r.runs[i].model));
            cm_strbuf_printf(&b, "</text>");
            if (isnan(v)) {
                cm_strbuf_printf(&b, "<text x=\"%d\" y=\"%d\" font-size=\"12\" fill=\"#999\">n/a</text>\n",
                                 label_w, y + 13);
                continue;
            }
            int w = (int)(plot_w * fabs(v) / mx + 0.5);
            cm_strbuf_printf(&b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"/>", label_w,
                             y, w, bar_h, colors[i % 6]);
            cm_strbuf_printf(&b, "<text x=\"%d\" y=\"%d\" font-size=\"12\">%.4g</text>\n", label_w + w + 4,
                             y + 13, v);
        }
        cm_strbuf_printf(&b, "</svg>\n");
    }
    cm_strbuf_printf(&b, "</body></html>\n");
    report_free(&r);
    return finish(&b, html);
}
