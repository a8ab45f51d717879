/* The SQLite store of evaluation runs (include/camelid/eval_store.h). */
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/eval_store.h"
#include "camelid/file.h"

static const char *const schema =
    "CREATE TABLE IF NOT EXISTS runs ("
    " id INTEGER PRIMARY KEY,"
    " date REAL, model TEXT, model_sha256 TEXT, dtype TEXT, seed INTEGER, status TEXT,"
    " config TEXT, document TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS results ("
    " run_id INTEGER NOT NULL REFERENCES runs(id), task TEXT NOT NULL, metric TEXT NOT NULL,"
    " value REAL, stderr REAL, n INTEGER, PRIMARY KEY (run_id, task, metric));";

/* Keys of a task's results that are counts or labels, not metrics. */
static bool is_count_key(const char *k) {
    static const char *const skip[] = {"alias",         "tokens",   "words",     "bytes",           "windows",
                                       "loglikelihood", "subjects", "truncated", "preferred_score", "score"};
    for (size_t i = 0; i < sizeof skip / sizeof *skip; i++)
        if (!strcmp(k, skip[i])) return true;
    size_t l = strlen(k);
    return l > 7 && !strcmp(k + l - 7, "_stderr");
}

cm_status cm_eval_summarize(const char *json, cm_eval_summary_row **rows, size_t *n) {
    *rows = NULL;
    *n = 0;
    json_error_t err;
    json_t *doc = json_loads(json, 0, &err);
    if (!doc) return cm_error(CM_ERR_FORMAT, "results JSON:%d: %s", err.line, err.text);
    json_t *results = json_object_get(doc, "results");
    size_t cap = 0;
    const char *task;
    json_t *r;
    cm_status st = CM_OK;
    json_object_foreach(results, task, r) {
        const char *k;
        json_t *v;
        json_object_foreach(r, k, v) {
            if (is_count_key(k) || !(json_is_number(v) || json_is_null(v))) continue;
            if (*n == cap) {
                cap = cap ? cap * 2 : 16;
                cm_eval_summary_row *nr = realloc(*rows, cap * sizeof *nr);
                if (!nr) {
                    st = cm_error(CM_ERR_NOMEM, "out of memory");
                    goto out;
                }
                *rows = nr;
            }
            cm_eval_summary_row *row = &(*rows)[*n];
            memset(row, 0, sizeof *row);
            row->task = strdup(task);
            row->metric = strdup(k);
            (*n)++;
            if (!row->task || !row->metric) {
                st = cm_error(CM_ERR_NOMEM, "out of memory");
                goto out;
            }
            row->has_value = json_is_number(v);
            row->value = json_number_value(v);
            char sk[256];
            snprintf(sk, sizeof sk, "%s_stderr", k);
            json_t *se = json_object_get(r, sk);
            row->has_stderr = json_is_number(se);
            row->stderr_value = json_number_value(se);
        }
    }
out:
    json_decref(doc);
    if (st != CM_OK) {
        cm_eval_summary_free(*rows, *n);
        *rows = NULL;
        *n = 0;
    }
    return st;
}

void cm_eval_summary_free(cm_eval_summary_row *rows, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(rows[i].task);
        free(rows[i].metric);
    }
    free(rows);
}

static cm_status sql_fail(sqlite3 *db, const char *path, const char *what) {
    return cm_error(CM_ERR_IO, "%s: %s: %s", path, what, db ? sqlite3_errmsg(db) : "cannot open");
}

static void bind_text_or_null(sqlite3_stmt *s, int i, json_t *v) {
    if (json_is_string(v))
        sqlite3_bind_text(s, i, json_string_value(v), -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

cm_status cm_eval_store_save(const char *path, const char *json, int64_t *run_id) {
    json_error_t err;
    json_t *doc = json_loads(json, 0, &err);
    if (!doc) return cm_error(CM_ERR_FORMAT, "results JSON:%d: %s", err.line, err.text);
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    cm_status st = CM_OK;
    char *cfg = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK) {
        st = sql_fail(db, path, "cannot open the store");
        goto out;
    }
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_exec(db, schema, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        st = sql_fail(db, path, "not a camelid store");
        goto out;
    }
    if (sqlite3_prepare_v2(
            db,
            "INSERT INTO runs (date, model, model_sha256, dtype, seed, status, config, document) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            -1, &s, NULL) != SQLITE_OK) {
        st = sql_fail(db, path, "prepare");
        goto rollback;
    }
    json_t *camelid = json_object_get(doc, "camelid");
    sqlite3_bind_double(s, 1, json_number_value(json_object_get(doc, "date")));
    bind_text_or_null(s, 2, json_object_get(doc, "model_name"));
    bind_text_or_null(s, 3, json_object_get(doc, "model_sha256"));
    bind_text_or_null(s, 4, json_object_get(doc, "model_dtype"));
    sqlite3_bind_int64(s, 5, json_integer_value(json_object_get(doc, "seed")));
    bind_text_or_null(s, 6, json_object_get(camelid, "status"));
    cfg = json_dumps(json_object_get(doc, "config"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (cfg)
        sqlite3_bind_text(s, 7, cfg, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, 7);
    sqlite3_bind_text(s, 8, json, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(s) != SQLITE_DONE) {
        st = sql_fail(db, path, "insert run");
        goto rollback;
    }
    sqlite3_finalize(s);
    s = NULL;
    int64_t id = sqlite3_last_insert_rowid(db);
    if (sqlite3_prepare_v2(
            db, "INSERT INTO results (run_id, task, metric, value, stderr, n) VALUES (?,?,?,?,?,?)", -1, &s,
            NULL) != SQLITE_OK) {
        st = sql_fail(db, path, "prepare");
        goto rollback;
    }
    cm_eval_summary_row *rows;
    size_t n;
    if ((st = cm_eval_summarize(json, &rows, &n)) != CM_OK) goto rollback;
    json_t *ns = json_object_get(doc, "n-samples");
    for (size_t i = 0; i < n && st == CM_OK; i++) {
        sqlite3_reset(s);
        sqlite3_bind_int64(s, 1, id);
        sqlite3_bind_text(s, 2, rows[i].task, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, rows[i].metric, -1, SQLITE_TRANSIENT);
        if (rows[i].has_value)
            sqlite3_bind_double(s, 4, rows[i].value);
        else
            sqlite3_bind_null(s, 4);
        if (rows[i].has_stderr)
            sqlite3_bind_double(s, 5, rows[i].stderr_value);
        else
            sqlite3_bind_null(s, 5);
        json_t *eff = json_object_get(json_object_get(ns, rows[i].task), "effective");
        if (json_is_integer(eff))
            sqlite3_bind_int64(s, 6, json_integer_value(eff));
        else
            sqlite3_bind_null(s, 6);
        if (sqlite3_step(s) != SQLITE_DONE) st = sql_fail(db, path, "insert result");
    }
    cm_eval_summary_free(rows, n);
    if (st != CM_OK) goto rollback;
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        st = sql_fail(db, path, "commit");
        goto rollback;
    }
    if (run_id) *run_id = id;
    goto out;
rollback:
    sqlite3_finalize(s);
    s = NULL;
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
out:
    free(cfg);
    sqlite3_finalize(s);
    sqlite3_close(db);
    json_decref(doc);
    return st;
}
