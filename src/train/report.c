/* RUN_DIR/report.html: the run's loss curves (training loss per step, validation loss where evaluated) as
 * inline SVG, with a summary table, made from RUN_DIR/log.jsonl. Self-contained: no scripts, no CDN. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/trainer.h"

typedef struct {
    int n, cap;
    double *step, *loss, *val, *tps, *lr;
} series;

static int series_push(series *s, double step, double loss, double val, double tps, double lr) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 256;
        double **arrs[5] = {&s->step, &s->loss, &s->val, &s->tps, &s->lr};
        for (int i = 0; i < 5; i++) {
            double *p = realloc(*arrs[i], (size_t)cap * sizeof(double));
            if (!p) return -1;
            *arrs[i] = p;
        }
        s->cap = cap;
    }
    s->step[s->n] = step;
    s->loss[s->n] = loss;
    s->val[s->n] = val;
    s->tps[s->n] = tps;
    s->lr[s->n] = lr;
    s->n++;
    return 0;
}

static void html_escape(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

/* A line chart of y (and of y2 as dots joined, where not NaN) against x. */
static void svg_chart(FILE *f, const series *s, const double *y, const double *y2, const char *label,
                      const char *label2) {
    const int W = 720, H = 300, L = 60, R = 20, T = 20, B = 40;
    double x0 = s->step[0], x1 = s->step[s->n - 1], lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < s->n; i++) {
        if (isfinite(y[i])) lo = fmin(lo, y[i]), hi = fmax(hi, y[i]);
        if (y2 && isfinite(y2[i])) lo = fmin(lo, y2[i]), hi = fmax(hi, y2[i]);
    }
    if (!isfinite(lo)) lo = 0, hi = 1;
    if (hi - lo < 1e-9) hi = lo + 1;
    if (x1 <= x0) x1 = x0 + 1;
    double pad = (hi - lo) * 0.05;
    lo -= pad, hi += pad;
#define PX(x) (L + ((x) - x0) / (x1 - x0) * (W - L - R))
#define PY(v) (T + (hi - (v)) / (hi - lo) * (H - T - B))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" role=\"img\">\n", W, H);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>\n", L, T, W - L - R,
            H - T - B);
    for (int k = 0; k <= 4; k++) {
        double v = lo + (hi - lo) * k / 4;
        fprintf(f,
                "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/><text x=\"%d\" y=\"%.1f\" "
                "font-size=\"11\" text-anchor=\"end\">%.3g</text>\n",
                L, W - R, PY(v), PY(v), L - 4, PY(v) + 4, v);
        double xv = x0 + (x1 - x0) * k / 4;
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%.0f</text>\n", PX(xv),
                H - B + 16, xv);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">step</text>\n", (L + W - R) / 2,
            H - 6);
    fputs("<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"", f);
    for (int i = 0; i < s->n; i++)
        if (isfinite(y[i])) fprintf(f, "%.1f,%.1f ", PX(s->step[i]), PY(y[i]));
    fputs("\"/>\n", f);
    if (y2) {
        fputs("<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\" points=\"", f);
        for (int i = 0; i < s->n; i++)
            if (isfinite(y2[i])) fprintf(f, "%.1f,%.1f ", PX(s->step[i]), PY(y2[i]));
        fputs("\"/>\n", f);
        for (int i = 0; i < s->n; i++)
            if (isfinite(y2[i]))
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>\n", PX(s->step[i]), PY(y2[i]));
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" fill=\"#1f77b4\">%s</text>\n", L + 8, T + 14, label);
    if (label2) fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" fill=\"#d62728\">%s</text>\n", L + 8, T + 28, label2);
    fputs("</svg>\n", f);
#undef PX
#undef PY
}

cm_status cm_train_report(const char *out_dir, const char *title) {
    char *log_path = cm_path_join(out_dir, "log.jsonl"), *html_path = cm_path_join(out_dir, "report.html");
    char *text = NULL, *html = NULL;
    size_t len = 0, html_len = 0;
    series s = {0};
    cm_status st = (!log_path || !html_path) ? cm_error(CM_ERR_NOMEM, "out of memory") : CM_OK;
    if (!st) st = cm_read_file(log_path, (size_t)1 << 30, &text, &len);
    for (size_t i = 0; !st && i < len;) {
        char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) + 1 : len;
        json_t *j = json_loadb(text + i, end - i, 0, NULL);
        json_t *loss = j ? json_object_get(j, "loss") : NULL, *val_only = j ? json_object_get(j, "val_loss") : NULL;
        if (j && !loss && val_only && s.n > 0 &&
            (double)json_integer_value(json_object_get(j, "step")) == s.step[s.n - 1]) {
            s.val[s.n - 1] = json_number_value(val_only); /* an evaluation line of the step just logged */
        } else if (j && loss && json_is_integer(json_object_get(j, "step"))) {
            json_t *v = json_object_get(j, "val_loss");
            if (series_push(&s, (double)json_integer_value(json_object_get(j, "step")),
                            json_number_value(json_object_get(j, "loss")), v ? json_number_value(v) : NAN,
                            json_number_value(json_object_get(j, "tokens_per_s")),
                            json_number_value(json_object_get(j, "lr"))) != 0)
                st = cm_error(CM_ERR_NOMEM, "out of memory");
        }
        json_decref(j);
        i = end;
    }
    FILE *f = st ? NULL : open_memstream(&html, &html_len);
    if (!st && !f) st = cm_error(CM_ERR_NOMEM, "out of memory");
    if (!st) {
        fputs("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>camelid training: ", f);
        html_escape(f, title);
        fputs("</title>\n<style>body{font-family:sans-serif;margin:2em;max-width:800px}"
              "td,th{padding:2px 10px;text-align:right}th{text-align:left}</style></head><body>\n<h1>Training: ",
              f);
        html_escape(f, title);
        fputs("</h1>\n", f);
        if (s.n == 0) {
            fputs("<p>No steps logged yet.</p>\n", f);
        } else {
            double last_val = NAN, tps_sum = 0;
            for (int i = 0; i < s.n; i++) {
                if (isfinite(s.val[i])) last_val = s.val[i];
                tps_sum += s.tps[i];
            }
            fprintf(f,
                    "<table><tr><th>steps logged</th><td>%d (to step %.0f)</td></tr><tr><th>first loss</th>"
                    "<td>%.4f</td></tr><tr><th>last loss</th><td>%.4f</td></tr><tr><th>last validation "
                    "loss</th><td>%.4f</td></tr><tr><th>mean tokens/s</th><td>%.0f</td></tr></table>\n",
                    s.n, s.step[s.n - 1], s.loss[0], s.loss[s.n - 1], last_val, tps_sum / s.n);
            fputs("<h2>Loss</h2>\n", f);
            svg_chart(f, &s, s.loss, s.val, "training loss", "validation loss");
            fputs("<h2>Learning rate</h2>\n", f);
            svg_chart(f, &s, s.lr, NULL, "learning rate", NULL);
        }
        fputs("</body></html>\n", f);
        if (fclose(f) != 0) st = cm_error(CM_ERR_NOMEM, "out of memory writing the report");
    }
    if (!st) st = cm_write_file_atomic(html_path, html, html_len);
    free(s.step), free(s.loss), free(s.val), free(s.tps), free(s.lr);
    free(text), free(html), free(log_path), free(html_path);
    return st;
}
