/* Arena ratings (elo.h): battle files, online Elo, Bradley–Terry by Newton's method, bootstrap intervals,
 * the leaderboard and its JSON. */
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/elo.h"
#include "camelid/file.h"
#include "format/json_util.h"

static const char *vote_names[] = {"model_a", "model_b", "tie", "tie (bothbad)"};

const char *cm_vote_name(cm_vote v) {
    return (unsigned)v < 4 ? vote_names[v] : "?";
}

int cm_vote_parse(const char *s, cm_vote *out) {
    for (int i = 0; i < 4; i++) {
        if (!strcmp(s, vote_names[i])) {
            *out = (cm_vote)i;
            return 1;
        }
    }
    return 0;
}

/* ----------------------------------------------------------------------------------------- battles */

void cm_battles_init(cm_battles *b) {
    memset(b, 0, sizeof *b);
}

void cm_battles_free(cm_battles *b) {
    for (size_t i = 0; i < b->n_models; i++) free(b->models[i]);
    free(b->models);
    free(b->items);
    free(b->index);
    memset(b, 0, sizeof *b);
}

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The index is open addressing over model numbers + 1 (0 = empty), at most half full. */
static cm_status index_grow(cm_battles *b) {
    size_t cap = b->index_cap ? b->index_cap * 2 : 64;
    uint32_t *ix = calloc(cap, sizeof *ix);
    if (!ix) return cm_error(CM_ERR_NOMEM, "out of memory");
    for (size_t m = 0; m < b->n_models; m++) {
        size_t k = (size_t)name_hash(b->models[m]) & (cap - 1);
        while (ix[k]) k = (k + 1) & (cap - 1);
        ix[k] = (uint32_t)m + 1;
    }
    free(b->index);
    b->index = ix;
    b->index_cap = cap;
    return CM_OK;
}

static cm_status intern(cm_battles *b, const char *name, uint32_t *out) {
    if (b->index_cap) {
        size_t k = (size_t)name_hash(name) & (b->index_cap - 1);
        for (; b->index[k]; k = (k + 1) & (b->index_cap - 1)) {
            if (!strcmp(b->models[b->index[k] - 1], name)) {
                *out = b->index[k] - 1;
                return CM_OK;
            }
        }
    }
    if (b->n_models >= UINT32_MAX - 1) return cm_error(CM_ERR_NOMEM, "too many models");
    if ((b->n_models + 1) * 2 > b->index_cap) CM_TRY(index_grow(b));
    if (b->n_models == b->cap_models) {
        size_t cap = b->cap_models ? b->cap_models * 2 : 16, bytes;
        if (cm_mul_size(cap, sizeof *b->models, &bytes)) return cm_error(CM_ERR_NOMEM, "out of memory");
        char **m = realloc(b->models, bytes);
        if (!m) return cm_error(CM_ERR_NOMEM, "out of memory");
        b->models = m;
        b->cap_models = cap;
    }
    char *copy = strdup(name);
    if (!copy) return cm_error(CM_ERR_NOMEM, "out of memory");
    uint32_t id = (uint32_t)b->n_models;
    b->models[b->n_models++] = copy;
    size_t k = (size_t)name_hash(name) & (b->index_cap - 1);
    while (b->index[k]) k = (k + 1) & (b->index_cap - 1);
    b->index[k] = id + 1;
    *out = id;
    return CM_OK;
}

static cm_status check_name(const char *s, const char *field) {
    size_t n = strlen(s);
    if (n == 0) return cm_error(CM_ERR_FORMAT, "\"%s\" is empty", field);
    if (n > CM_BATTLE_MAX_NAME)
        return cm_error(CM_ERR_FORMAT, "\"%s\" is %zu bytes long (at most %d)", field, n, CM_BATTLE_MAX_NAME);
    return CM_OK;
}

cm_status cm_battles_add(cm_battles *b, const char *model_a, const char *model_b, cm_vote winner) {
    if ((unsigned)winner > CM_VOTE_BOTHBAD) return cm_error(CM_ERR_ARG, "unknown vote %d", (int)winner);
    CM_TRY(check_name(model_a, "model_a"));
    CM_TRY(check_name(model_b, "model_b"));
    char shown[96];
    if (!strcmp(model_a, model_b))
        return cm_error(CM_ERR_FORMAT, "model_a and model_b are both \"%s\" (a model cannot battle itself)",
                        cm_json_show(model_a, shown, sizeof shown));
    uint32_t a, bb;
    CM_TRY(intern(b, model_a, &a));
    CM_TRY(intern(b, model_b, &bb));
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256, bytes;
        if (cm_mul_size(cap, sizeof *b->items, &bytes)) return cm_error(CM_ERR_NOMEM, "out of memory");
        cm_battle *it = realloc(b->items, bytes);
        if (!it) return cm_error(CM_ERR_NOMEM, "out of memory");
        b->items = it;
        b->cap = cap;
    }
    b->items[b->n++] = (cm_battle){a, bb, winner};
    return CM_OK;
}

/* One row (a JSON object's text) into `out`; messages are prefixed by the caller with file and line. */
static cm_status parse_row(const char *text, size_t len, size_t *err_line, cm_battles *out) {
    json_error_t je;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
    if (!o) {
        if (je.line > 1) *err_line += (size_t)je.line - 1;
        return cm_error(CM_ERR_FORMAT, "invalid JSON: %s", je.text);
    }
    cm_status st = CM_OK;
    const char *fields[3] = {"model_a", "model_b", "winner"};
    const char *vals[3] = {0};
    if (!json_is_object(o)) {
        st = cm_error(CM_ERR_FORMAT, "a battle must be an object, got %s", cm_json_kind(o));
    } else {
        for (int i = 0; i < 3 && st == CM_OK; i++) {
            json_t *v = json_object_get(o, fields[i]);
            if (!v)
                st = cm_error(CM_ERR_FORMAT, "\"%s\" is missing", fields[i]);
            else if (!json_is_string(v))
                st = cm_error(CM_ERR_FORMAT, "\"%s\" must be a string, got %s", fields[i], cm_json_kind(v));
            else if (strlen(json_string_value(v)) != json_string_length(v))
                st = cm_error(CM_ERR_FORMAT, "\"%s\" holds a NUL character", fields[i]);
            else
                vals[i] = json_string_value(v);
        }
    }
    cm_vote w = CM_VOTE_A;
    char shown[96];
    if (st == CM_OK && !cm_vote_parse(vals[2], &w))
        st = cm_error(CM_ERR_FORMAT,
                      "\"winner\" must be \"model_a\", \"model_b\", \"tie\" or \"tie (bothbad)\", got \"%s\"",
                      cm_json_show(vals[2], shown, sizeof shown));
    if (st == CM_OK) st = cm_battles_add(out, vals[0], vals[1], w);
    json_decref(o);
    return st;
}

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The end of the JSON value starting at text[i] (an array element): the first ',' or ']' outside
 * strings and brackets. Counts newlines into *lines. Returns len if the text ends first. */
static size_t value_end(const char *text, size_t len, size_t i, size_t *lines) {
    size_t depth = 0;
    bool in_str = false;
    for (; i < len; i++) {
        char c = text[i];
        if (c == '\n') ++*lines;
        if (in_str) {
            if (c == '\\' && i + 1 < len) {
                if (text[i + 1] == '\n') ++*lines;
                i++;
            } else if (c == '"') {
                in_str = false;
            }
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return i;
            depth--;
        } else if (c == ',' && depth == 0) {
            return i;
        }
    }
    return len;
}

cm_status cm_battles_parse(const char *text, size_t len, const char *name, cm_battles *out) {
    size_t i = 0, line = 1;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) i = 3; /* a UTF-8 byte-order mark */
    while (i < len && is_space(text[i])) line += text[i++] == '\n';
    if (i == len) return CM_OK; /* no battles */
    if (text[i] != '[') {
        /* JSON Lines */
        while (i < len) {
            size_t end = i;
            while (end < len && text[end] != '\n') end++;
            size_t k = i;
            while (k < end && is_space(text[k])) k++;
            if (k < end) {
                size_t err_line = line;
                if (parse_row(text + i, end - i, &err_line, out) != CM_OK)
                    return cm_error_prefix(CM_ERR_FORMAT, "%s:%zu: battle %zu", name, err_line, out->n + 1);
            }
            i = end + 1;
            line++;
        }
        return CM_OK;
    }
    /* a JSON array: each element is cut out by bracket matching and parsed alone, so that a bad row is
     * named by its line */
    i++;
    for (size_t row = 0;; row++) {
        while (i < len && is_space(text[i])) line += text[i++] == '\n';
        if (i == len) return cm_error(CM_ERR_FORMAT, "%s:%zu: the JSON array is not closed", name, line);
        if (text[i] == ']') {
            if (row > 0) return cm_error(CM_ERR_FORMAT, "%s:%zu: ']' after ','", name, line);
            break;
        }
        size_t start = i, start_line = line;
        size_t end = value_end(text, len, i, &line);
        if (end == start)
            return cm_error(CM_ERR_FORMAT, "%s:%zu: expected a battle object, got '%c'", name, line, text[i]);
        size_t err_line = start_line;
        if (parse_row(text + start, end - start, &err_line, out) != CM_OK)
            return cm_error_prefix(CM_ERR_FORMAT, "%s:%zu: battle %zu", name, err_line, row + 1);
        i = end;
        if (i == len) return cm_error(CM_ERR_FORMAT, "%s:%zu: the JSON array is not closed", name, line);
        if (text[i] == ']') break;
        i++; /* ',' */
        while (i < len && is_space(text[i])) line += text[i++] == '\n';
        if (i < len && text[i] == ']')
            return cm_error(CM_ERR_FORMAT, "%s:%zu: a trailing ',' before ']'", name, line);
    }
    i++;
    while (i < len && is_space(text[i])) line += text[i++] == '\n';
    if (i < len) return cm_error(CM_ERR_FORMAT, "%s:%zu: text after the JSON array", name, line);
    return CM_OK;
}

cm_status cm_battles_read(const char *path, cm_battles *out) {
    cm_mmap *m;
    CM_TRY(cm_mmap_open(path, &m));
    cm_status st = cm_battles_parse((const char *)m->data, m->size, path, out);
    cm_mmap_close(m);
    return st;
}

/* ------------------------------------------------------------------------------------------ ratings */

cm_rating_params cm_rating_defaults(void) {
    return (cm_rating_params){
        .k = 4, .scale = 400, .base = 10, .init = 1000, .rounds = 100, .seed = 0, .prior = 1e-3};
}

static double vote_score(cm_vote v) {
    return v == CM_VOTE_A ? 1.0 : v == CM_VOTE_B ? 0.0 : 0.5;
}

void cm_elo_online(const cm_battles *b, const cm_rating_params *p, double *r) {
    for (size_t i = 0; i < b->n_models; i++) r[i] = p->init;
    /* FastChat's compute_elo line for line: each side's expectation from the ratings before the update,
     * and B moved by K(1 - S_A - E_B) (equal to -K(S_A - E_A) but for the last bits) */
    for (size_t i = 0; i < b->n; i++) {
        const cm_battle *t = &b->items[i];
        double ra = r[t->a], rb = r[t->b];
        double ea = 1.0 / (1.0 + pow(p->base, (rb - ra) / p->scale));
        double eb = 1.0 / (1.0 + pow(p->base, (ra - rb) / p->scale));
        double sa = vote_score(t->winner);
        r[t->a] += p->k * (sa - ea);
        r[t->b] += p->k * (1.0 - sa - eb);
    }
}

/* The battles reduced to distinct (a, b, outcome) rows with counts; the likelihood only needs these. */
typedef struct {
    uint32_t a, b;
    double y;
} bt_row;

typedef struct {
    bt_row *rows;
    size_t n_rows;
    uint32_t *row_of; /* battle -> row */
    double *count;    /* per row, all battles */
    size_t n_models;
} bt_data;

static int cmp_u64(const void *x, const void *y) {
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static void bt_data_free(bt_data *d) {
    free(d->rows);
    free(d->row_of);
    free(d->count);
}

static cm_status bt_data_build(const cm_battles *b, bt_data *d) {
    memset(d, 0, sizeof *d);
    d->n_models = b->n_models;
    size_t n = b->n ? b->n : 1;
    uint64_t *keys = malloc(n * sizeof *keys);
    d->row_of = malloc(n * sizeof *d->row_of);
    d->rows = malloc(n * sizeof *d->rows);
    d->count = calloc(n, sizeof *d->count);
    if (!keys || !d->row_of || !d->rows || !d->count) {
        free(keys);
        bt_data_free(d);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    /* key = a (27 bits) | b (27 bits) | outcome (2 bits) | nothing else: sort, dedupe, then find each
     * battle's row by binary search */
    for (size_t i = 0; i < b->n; i++) {
        const cm_battle *t = &b->items[i];
        uint64_t o = t->winner == CM_VOTE_A ? 2 : t->winner == CM_VOTE_B ? 0 : 1;
        keys[i] = ((uint64_t)t->a << 34) | ((uint64_t)t->b << 2) | o;
    }
    if (b->n_models >= ((size_t)1 << 30)) {
        free(keys);
        bt_data_free(d);
        return cm_error(CM_ERR_ARG, "too many models for a rating");
    }
    uint64_t *sorted = malloc(n * sizeof *sorted);
    if (!sorted) {
        free(keys);
        bt_data_free(d);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    memcpy(sorted, keys, b->n * sizeof *keys);
    qsort(sorted, b->n, sizeof *sorted, cmp_u64);
    size_t u = 0;
    for (size_t i = 0; i < b->n; i++)
        if (u == 0 || sorted[i] != sorted[u - 1]) sorted[u++] = sorted[i];
    for (size_t k = 0; k < u; k++)
        d->rows[k] = (bt_row){(uint32_t)(sorted[k] >> 34), (uint32_t)((sorted[k] >> 2) & 0xffffffffu),
                              (double)(sorted[k] & 3) / 2.0};
    d->n_rows = u;
    for (size_t i = 0; i < b->n; i++) {
        size_t lo = 0, hi = u;
        while (hi - lo > 1) {
            size_t mid = (lo + hi) / 2;
            if (sorted[mid] <= keys[i])
                lo = mid;
            else
                hi = mid;
        }
        d->row_of[i] = (uint32_t)lo;
        d->count[lo] += 1.0;
    }
    free(sorted);
    free(keys);
    return CM_OK;
}

/* log(1 + e^x) without overflow */
static double softplus(double x) {
    return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
}

static double sigmoid(double x) {
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* Negative log-likelihood (+ prior) at r; with g/h non-NULL also its gradient and Hessian (n x n). */
static double bt_eval(const bt_data *d, const double *w, double alpha, double prior, const double *r,
                      double *g, double *h) {
    size_t n = d->n_models;
    double f = 0;
    if (g) memset(g, 0, n * sizeof *g);
    if (h) memset(h, 0, n * n * sizeof *h);
    for (size_t k = 0; k < d->n_rows; k++) {
        if (w[k] == 0) continue;
        const bt_row *t = &d->rows[k];
        double x = alpha * (r[t->a] - r[t->b]);
        /* -[y log s + (1-y) log(1-s)] = y softplus(-x) + (1-y) softplus(x) */
        f += w[k] * (t->y * softplus(-x) + (1 - t->y) * softplus(x));
        if (g) {
            double s = sigmoid(x);
            double gi = alpha * w[k] * (s - t->y);
            g[t->a] += gi;
            g[t->b] -= gi;
            double hi = alpha * alpha * w[k] * s * (1 - s);
            h[t->a * n + t->a] += hi;
            h[t->b * n + t->b] += hi;
            h[t->a * n + t->b] -= hi;
            h[t->b * n + t->a] -= hi;
        }
    }
    for (size_t i = 0; i < n; i++) {
        f += 0.5 * prior * r[i] * r[i];
        if (g) {
            g[i] += prior * r[i];
            h[i * n + i] += prior;
        }
    }
    return f;
}

/* Solve A x = b in place (b becomes x) for a symmetric positive definite A (destroyed). */
static bool cholesky_solve(double *a, double *b, size_t n) {
    for (size_t j = 0; j < n; j++) {
        double s = a[j * n + j];
        for (size_t k = 0; k < j; k++) s -= a[j * n + k] * a[j * n + k];
        if (!(s > 0)) return false;
        double l = sqrt(s);
        a[j * n + j] = l;
        for (size_t i = j + 1; i < n; i++) {
            double t = a[i * n + j];
            for (size_t k = 0; k < j; k++) t -= a[i * n + k] * a[j * n + k];
            a[i * n + j] = t / l;
        }
    }
    for (size_t i = 0; i < n; i++) {
        double t = b[i];
        for (size_t k = 0; k < i; k++) t -= a[i * n + k] * b[k];
        b[i] = t / a[i * n + i];
    }
    for (size_t i = n; i-- > 0;) {
        double t = b[i];
        for (size_t k = i + 1; k < n; k++) t -= a[k * n + i] * b[k];
        b[i] = t / a[i * n + i];
    }
    return true;
}

/* Minimise the negative log-likelihood over r (in place; start from r's values) by Newton's method with
 * a backtracking line search. The likelihood ignores a common shift of r, so the Hessian is singular
 * along the all-ones direction; the Newton system adds 1·1ᵀ there, which leaves steps orthogonal to it
 * unchanged and keeps sum(r) where it starts (0). `work` holds 3n + n² doubles. */
static cm_status bt_newton(const bt_data *d, const double *w, double alpha, double prior, double *r,
                           double *work) {
    size_t n = d->n_models;
    double *g = work, *step = g + n, *trial = step + n, *h = trial + n;
    double total = 0;
    for (size_t k = 0; k < d->n_rows; k++) total += w[k];
    double tol = 1e-10 * (total > 1 ? total : 1);
    double f = bt_eval(d, w, alpha, prior, r, g, h);
    for (int it = 0; it < 500; it++) {
        double gmax = 0;
        for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(g[i]));
        if (gmax <= tol) return CM_OK;
        for (size_t i = 0; i < n; i++) {
            step[i] = -g[i];
            for (size_t j = 0; j < n; j++) h[i * n + j] += 1.0 / (double)n;
        }
        if (!cholesky_solve(h, step, n))
            return cm_error(CM_ERR_ARG, "Bradley-Terry: the comparison graph is not connected (no unique "
                                        "ratings without a prior)");
        double slope = 0;
        for (size_t i = 0; i < n; i++) slope += g[i] * step[i];
        double t = 1;
        double ft = f;
        bool moved = false;
        for (int ls = 0; ls < 60; ls++) {
            for (size_t i = 0; i < n; i++) trial[i] = r[i] + t * step[i];
            ft = bt_eval(d, w, alpha, prior, trial, NULL, NULL);
            if (ft <= f + 1e-4 * t * slope) {
                moved = true;
                break;
            }
            t *= 0.5;
        }
        if (!moved) return CM_OK; /* no decrease left at double precision */
        double smax = 0;
        for (size_t i = 0; i < n; i++) {
            smax = fmax(smax, fabs(trial[i] - r[i]));
            r[i] = trial[i];
        }
        f = bt_eval(d, w, alpha, prior, r, g, h);
        if (smax < 1e-13) return CM_OK;
    }
    /* Newton reaches a finite minimum in far fewer steps; what 500 steps left is at double precision */
    return CM_OK;
}

/* Does the likelihood have a finite maximum (Ford's condition)? Only when the digraph "i won or tied
 * against j at least once" is strongly connected: otherwise some group of models never scored against
 * the rest (or never met them) and its ratings run off to infinity. Every model must be reachable from
 * model 0 along the edges and against them; reachability grows by sweeps over the distinct rows (at most
 * one sweep per model, and models are few). */
static cm_status bt_has_mle(const bt_data *d, const double *w, bool *yes) {
    size_t n = d->n_models;
    *yes = true;
    if (n < 2) return CM_OK;
    uint8_t *seen = malloc(n);
    if (!seen) return cm_error(CM_ERR_NOMEM, "out of memory");
    bool ok = true;
    for (int dir = 0; dir < 2 && ok; dir++) {
        memset(seen, 0, n);
        seen[0] = 1;
        size_t reached = 1;
        for (bool grew = true; grew && reached < n;) {
            grew = false;
            for (size_t k = 0; k < d->n_rows; k++) {
                if (w[k] == 0) continue;
                const bt_row *t = &d->rows[k];
                /* a win points from the winner to the loser; a tie both ways */
                for (int e = 0; e < 2; e++) {
                    if (e == 0 ? !(t->y > 0) : !(t->y < 1)) continue;
                    uint32_t from = e == 0 ? t->a : t->b, to = e == 0 ? t->b : t->a;
                    uint32_t u = dir ? to : from, v = dir ? from : to;
                    if (seen[u] && !seen[v]) {
                        seen[v] = 1;
                        reached++;
                        grew = true;
                    }
                }
            }
        }
        ok = reached == n;
    }
    free(seen);
    *yes = ok;
    return CM_OK;
}

/* The ratings for weights w (r holds the start and gets the result): the plain MLE when it exists, so
 * the prior moves nothing then; otherwise the MLE under the prior (with prior 0, an error). */
static cm_status bt_solve(const bt_data *d, const double *w, double alpha, double prior, double *r,
                          double *work) {
    bool finite;
    CM_TRY(bt_has_mle(d, w, &finite));
    if (finite) return bt_newton(d, w, alpha, 0, r, work);
    if (prior == 0)
        return cm_error(CM_ERR_ARG, "Bradley-Terry: no finite maximum (some models never won or tied against "
                                    "the rest, or never met them); use a prior");
    return bt_newton(d, w, alpha, prior, r, work);
}

static cm_status bt_work(size_t n, double **work) {
    /* the Newton step is dense in the models: bound its memory (4096 models: 128 MiB) */
    if (n > CM_BT_MAX_MODELS)
        return cm_error(CM_ERR_UNSUPPORTED, "Bradley-Terry: %zu models, at most %d", n, CM_BT_MAX_MODELS);
    size_t nn, cells;
    if (cm_mul_size(n, n, &nn) || cm_add_size(nn, 3 * n + 1, &cells) || cm_mul_size(cells, 8, &nn))
        return cm_error(CM_ERR_NOMEM, "too many models for a rating");
    *work = malloc(nn);
    return *work ? CM_OK : cm_error(CM_ERR_NOMEM, "out of memory");
}

cm_status cm_bt_fit(const cm_battles *b, const cm_rating_params *p, double *ratings) {
    size_t n = b->n_models;
    if (n == 0) return CM_OK;
    bt_data d;
    CM_TRY(bt_data_build(b, &d));
    double *work = NULL, *r = calloc(n, sizeof *r);
    cm_status st = r ? bt_work(n, &work) : cm_error(CM_ERR_NOMEM, "out of memory");
    if (st == CM_OK) st = bt_solve(&d, d.count, log(p->base), p->prior, r, work);
    if (st == CM_OK)
        for (size_t i = 0; i < n; i++) ratings[i] = p->scale * r[i] + p->init;
    free(work);
    free(r);
    bt_data_free(&d);
    return st;
}

/* ---------------------------------------------------------------------------------------- bootstrap */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* xoshiro256** */
typedef struct {
    uint64_t s[4];
} rng256;

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng256 *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform in [0, n) (Lemire's multiply-shift with rejection: no modulo bias). */
static uint64_t rng_below(rng256 *r, uint64_t n) {
    for (;;) {
        unsigned __int128 m = (unsigned __int128)rng_next(r) * n;
        uint64_t lo = (uint64_t)m;
        if (lo >= n || lo >= (uint64_t)(-n) % n) return (uint64_t)(m >> 64);
    }
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* numpy.quantile's default (linear) rule on sorted values */
static double quantile(const double *v, size_t n, double q) {
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    if (lo + 1 >= n) return v[n - 1];
    return v[lo] + (v[lo + 1] - v[lo]) * (pos - (double)lo);
}

static int cmp_rows(const void *x, const void *y) {
    const cm_leaderboard_row *a = x, *b = y;
    if (a->bt != b->bt) return a->bt > b->bt ? -1 : 1;
    return strcmp(a->model, b->model);
}

cm_status cm_leaderboard_compute(const cm_battles *b, const cm_rating_params *p, cm_leaderboard *out) {
    memset(out, 0, sizeof *out);
    if (!(p->scale > 0) || !(p->base > 1) || !(p->prior >= 0) || p->rounds < 0)
        return cm_error(CM_ERR_ARG, "ratings: bad parameters");
    size_t n = b->n_models;
    out->n_battles = b->n;
    if (n == 0) return CM_OK;
    cm_leaderboard_row *rows = calloc(n, sizeof *rows);
    double *elo = calloc(n, sizeof *elo), *r = calloc(n, sizeof *r), *r0 = calloc(n, sizeof *r0);
    double *boot = NULL, *w = NULL, *work = NULL, *col = NULL;
    bt_data d = {0};
    cm_status st = rows && elo && r && r0 ? CM_OK : cm_error(CM_ERR_NOMEM, "out of memory");
    if (st == CM_OK) st = bt_data_build(b, &d);
    if (st == CM_OK) st = bt_work(n, &work);
    double alpha = log(p->base);
    if (st == CM_OK) st = bt_solve(&d, d.count, alpha, p->prior, r0, work);
    int rounds = p->rounds;
    if (st == CM_OK && rounds > 0) {
        size_t cells;
        if (cm_mul_size((size_t)rounds, n, &cells)) st = cm_error(CM_ERR_NOMEM, "out of memory");
        if (st == CM_OK) {
            boot = malloc(cells * sizeof *boot);
            w = malloc((d.n_rows ? d.n_rows : 1) * sizeof *w);
            col = malloc((size_t)rounds * sizeof *col);
            if (!boot || !w || !col) st = cm_error(CM_ERR_NOMEM, "out of memory");
        }
        uint64_t sm = p->seed;
        rng256 rng;
        for (int k = 0; k < 4; k++) rng.s[k] = splitmix64(&sm);
        /* each round draws n battles with replacement (a multinomial over the distinct rows) and refits,
         * starting from the full-data ratings */
        for (int round = 0; st == CM_OK && round < rounds; round++) {
            memset(w, 0, d.n_rows * sizeof *w);
            for (size_t i = 0; i < b->n; i++) w[d.row_of[rng_below(&rng, b->n)]] += 1.0;
            memcpy(r, r0, n * sizeof *r);
            st = bt_solve(&d, w, alpha, p->prior, r, work);
            for (size_t i = 0; i < n; i++) boot[(size_t)round * n + i] = p->scale * r[i] + p->init;
        }
    }
    if (st == CM_OK) {
        cm_elo_online(b, p, elo);
        for (size_t i = 0; i < n && st == CM_OK; i++) {
            rows[i].model = strdup(b->models[i]);
            if (!rows[i].model) st = cm_error(CM_ERR_NOMEM, "out of memory");
            rows[i].elo = elo[i];
            rows[i].bt = p->scale * r0[i] + p->init;
            rows[i].boot_lo = rows[i].boot_hi = rows[i].bt;
            if (rounds > 0) {
                for (int k = 0; k < rounds; k++) col[k] = boot[(size_t)k * n + i];
                qsort(col, (size_t)rounds, sizeof *col, cmp_double);
                rows[i].boot_lo = quantile(col, (size_t)rounds, 0.025);
                rows[i].boot_hi = quantile(col, (size_t)rounds, 0.975);
            }
            /* with few battles the quantiles can miss the full-data point; an interval is drawn around
             * it, so it is widened to hold it */
            rows[i].bt_lo = fmin(rows[i].boot_lo, rows[i].bt);
            rows[i].bt_hi = fmax(rows[i].boot_hi, rows[i].bt);
        }
        for (size_t i = 0; i < b->n; i++) {
            const cm_battle *t = &b->items[i];
            rows[t->a].battles++;
            rows[t->b].battles++;
            if (t->winner == CM_VOTE_A) rows[t->a].wins++;
            if (t->winner == CM_VOTE_B) rows[t->b].wins++;
        }
    }
    free(elo);
    free(r);
    free(r0);
    free(boot);
    free(w);
    free(col);
    free(work);
    bt_data_free(&d);
    if (st != CM_OK) {
        if (rows)
            for (size_t i = 0; i < n; i++) free(rows[i].model);
        free(rows);
        return st;
    }
    qsort(rows, n, sizeof *rows, cmp_rows);
    out->rows = rows;
    out->n = n;
    return CM_OK;
}

void cm_leaderboard_free(cm_leaderboard *lb) {
    for (size_t i = 0; i < lb->n; i++) free(lb->rows[i].model);
    free(lb->rows);
    memset(lb, 0, sizeof *lb);
}

char *cm_leaderboard_json(const cm_leaderboard *lb) {
    json_t *root = json_object(), *models = json_array();
    if (!root || !models) {
        json_decref(root);
        json_decref(models);
        return NULL;
    }
    json_object_set_new(root, "n_battles", json_integer((json_int_t)lb->n_battles));
    for (size_t i = 0; i < lb->n; i++) {
        const cm_leaderboard_row *r = &lb->rows[i];
        json_t *o = json_object();
        json_object_set_new(o, "model", json_string(r->model));
        json_object_set_new(o, "elo", json_real(r->elo));
        json_object_set_new(o, "bt", json_real(r->bt));
        json_object_set_new(o, "bt_lo", json_real(r->bt_lo));
        json_object_set_new(o, "bt_hi", json_real(r->bt_hi));
        json_object_set_new(o, "battles", json_integer((json_int_t)r->battles));
        json_object_set_new(o, "wins", json_integer((json_int_t)r->wins));
        json_array_append_new(models, o);
    }
    json_object_set_new(root, "models", models);
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    return s;
}
