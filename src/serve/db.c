/* The server's request log in SQLite (serve_internal.h). */
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdlib.h>

#include "serve/serve_internal.h"

struct serve_db {
    sqlite3 *db;
    sqlite3_stmt *insert;
    pthread_mutex_t mu;
};

static const char *schema = "CREATE TABLE IF NOT EXISTS serve_requests ("
                            " id INTEGER PRIMARY KEY, created REAL NOT NULL, route TEXT NOT NULL, model TEXT,"
                            " status INTEGER NOT NULL, stream INTEGER NOT NULL, prompt_tokens INTEGER,"
                            " completion_tokens INTEGER, finish_reason TEXT, ttft_seconds REAL,"
                            " total_seconds REAL);";

cm_status serve_db_open(const char *path, serve_db **out) {
    *out = NULL;
    serve_db *d = calloc(1, sizeof *d);
    if (!d) return cm_error(CM_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&d->mu, NULL);
    cm_status st = CM_OK;
    if (sqlite3_open(path, &d->db) != SQLITE_OK)
        st = cm_error(CM_ERR_IO, "%s: cannot open the database: %s", path, sqlite3_errmsg(d->db));
    else if (sqlite3_busy_timeout(d->db, 5000) != SQLITE_OK ||
             sqlite3_exec(d->db, "PRAGMA journal_mode=WAL;", NULL, NULL, NULL) != SQLITE_OK ||
             sqlite3_exec(d->db, schema, NULL, NULL, NULL) != SQLITE_OK ||
             sqlite3_prepare_v2(
                 d->db,
                 "INSERT INTO serve_requests (created, route, model, status, stream,"
                 " prompt_tokens, completion_tokens, finish_reason, ttft_seconds, total_seconds)"
                 " VALUES (?,?,?,?,?,?,?,?,?,?)",
                 -1, &d->insert, NULL) != SQLITE_OK)
        st = cm_error(CM_ERR_IO, "%s: %s", path, sqlite3_errmsg(d->db));
    if (st != CM_OK) {
        serve_db_close(d);
        return st;
    }
    *out = d;
    return CM_OK;
}

cm_status serve_db_log(serve_db *d, const serve_db_row *r) {
    if (!d) return CM_OK;
    pthread_mutex_lock(&d->mu);
    sqlite3_stmt *s = d->insert;
    sqlite3_bind_double(s, 1, r->created);
    sqlite3_bind_text(s, 2, r->route, -1, SQLITE_TRANSIENT);
    if (r->model)
        sqlite3_bind_text(s, 3, r->model, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, 3);
    sqlite3_bind_int(s, 4, r->status);
    sqlite3_bind_int(s, 5, r->stream);
    sqlite3_bind_int(s, 6, r->prompt_tokens);
    sqlite3_bind_int(s, 7, r->completion_tokens);
    if (r->finish)
        sqlite3_bind_text(s, 8, r->finish, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, 8);
    if (r->ttft_seconds >= 0)
        sqlite3_bind_double(s, 9, r->ttft_seconds);
    else
        sqlite3_bind_null(s, 9);
    sqlite3_bind_double(s, 10, r->total_seconds);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    cm_status st = rc == SQLITE_DONE ? CM_OK : cm_error(CM_ERR_IO, "request log: %s", sqlite3_errmsg(d->db));
    pthread_mutex_unlock(&d->mu);
    return st;
}

void serve_db_close(serve_db *d) {
    if (!d) return;
    sqlite3_finalize(d->insert);
    sqlite3_close(d->db);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
