/* The arena's battles and votes in SQLite (arena.h). */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "camelid/arena.h"

struct cm_arena {
    sqlite3 *db;
    char *path;
    pthread_mutex_t mu; /* one statement at a time on the connection; the pairing generator */
    uint64_t rng;
    /* the last leaderboard, for the votes (count, last id) it was computed from */
    char *lb_json;
    int64_t lb_count, lb_last;
    bool lb_valid;
};

static const char *schema =
    "CREATE TABLE IF NOT EXISTS arena_battles ("
    " id TEXT PRIMARY KEY, created REAL NOT NULL, model_a TEXT NOT NULL, model_b TEXT NOT NULL,"
    " prompt TEXT NOT NULL, system TEXT, answer_a TEXT, answer_b TEXT);"
    "CREATE TABLE IF NOT EXISTS arena_votes ("
    " id INTEGER PRIMARY KEY, battle_id TEXT NOT NULL UNIQUE, created REAL NOT NULL,"
    " model_a TEXT NOT NULL, model_b TEXT NOT NULL,"
    " winner TEXT NOT NULL CHECK (winner IN ('model_a', 'model_b', 'tie', 'tie (bothbad)')));";

static cm_status db_error(cm_arena *a, const char *what) {
    return cm_error(CM_ERR_IO, "%s: arena %s: %s", a->path, what, sqlite3_errmsg(a->db));
}

cm_status cm_arena_open(const char *path, bool must_exist, cm_arena **out) {
    *out = NULL;
    cm_arena *a = calloc(1, sizeof *a);
    if (!a) return cm_error(CM_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&a->mu, NULL);
    a->path = strdup(path ? path : ":memory:");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    a->rng = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 32);
    cm_status st = a->path ? CM_OK : cm_error(CM_ERR_NOMEM, "out of memory");
    if (st == CM_OK && path && must_exist && access(path, F_OK) != 0)
        st = cm_error(CM_ERR_NOT_FOUND, "%s: no such database (camelid serve --db FILE writes one)", path);
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | (must_exist ? 0 : SQLITE_OPEN_CREATE);
    if (st == CM_OK && sqlite3_open_v2(a->path, &a->db, flags, NULL) != SQLITE_OK)
        st = cm_error(CM_ERR_IO, "%s: cannot open the arena database: %s", a->path,
                      a->db ? sqlite3_errmsg(a->db) : "out of memory");
    /* WAL lets the leaderboard read while votes are written; synchronous=FULL syncs the WAL at every
     * commit, so an acknowledged vote is on disk */
    if (st == CM_OK && (sqlite3_busy_timeout(a->db, 10000) != SQLITE_OK ||
                        sqlite3_exec(a->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL,
                                     NULL) != SQLITE_OK))
        st = db_error(a, "setup");
    if (st == CM_OK && !must_exist && sqlite3_exec(a->db, schema, NULL, NULL, NULL) != SQLITE_OK)
        st = db_error(a, "schema");
    if (st != CM_OK) {
        cm_arena_close(a);
        return st;
    }
    *out = a;
    return CM_OK;
}

void cm_arena_close(cm_arena *a) {
    if (!a) return;
    sqlite3_close(a->db);
    pthread_mutex_destroy(&a->mu);
    free(a->lb_json);
    free(a->path);
    free(a);
}

static uint64_t next_random(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void cm_arena_pick(cm_arena *a, int n, int *first, int *second) {
    pthread_mutex_lock(&a->mu);
    /* uniform over ordered pairs: the first of n, the second of the other n - 1 */
    int i = (int)(next_random(&a->rng) % (uint64_t)n);
    int j = (int)(next_random(&a->rng) % (uint64_t)(n - 1));
    pthread_mutex_unlock(&a->mu);
    *first = i;
    *second = j >= i ? j + 1 : j;
}

static double unix_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bind_text_or_null(sqlite3_stmt *s, int i, const char *v) {
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

cm_status cm_arena_add_battle(cm_arena *a, const char *id, const char *model_a, const char *model_b,
                              const char *prompt, const char *system) {
    pthread_mutex_lock(&a->mu);
    sqlite3_stmt *s = NULL;
    cm_status st = CM_OK;
    if (sqlite3_prepare_v2(a->db,
                           "INSERT INTO arena_battles (id, created, model_a, model_b, prompt, system)"
                           " VALUES (?,?,?,?,?,?)",
                           -1, &s, NULL) != SQLITE_OK) {
        st = db_error(a, "add battle");
    } else {
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_double(s, 2, unix_now());
        sqlite3_bind_text(s, 3, model_a, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 4, model_b, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 5, prompt, -1, SQLITE_TRANSIENT);
        bind_text_or_null(s, 6, system);
        if (sqlite3_step(s) != SQLITE_DONE) st = db_error(a, "add battle");
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&a->mu);
    return st;
}

cm_status cm_arena_set_answers(cm_arena *a, const char *id, const char *answer_a, const char *answer_b) {
    pthread_mutex_lock(&a->mu);
    sqlite3_stmt *s = NULL;
    cm_status st = CM_OK;
    if (sqlite3_prepare_v2(a->db, "UPDATE arena_battles SET answer_a = ?, answer_b = ? WHERE id = ?", -1, &s,
                           NULL) != SQLITE_OK) {
        st = db_error(a, "store answers");
    } else {
        bind_text_or_null(s, 1, answer_a);
        bind_text_or_null(s, 2, answer_b);
        sqlite3_bind_text(s, 3, id, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(s) != SQLITE_DONE) st = db_error(a, "store answers");
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&a->mu);
    return st;
}

static void copy_column(sqlite3_stmt *s, int col, char *out, size_t cap) {
    const unsigned char *t = sqlite3_column_text(s, col);
    snprintf(out, cap, "%s", t ? (const char *)t : "");
}

cm_status cm_arena_vote(cm_arena *a, const char *id, cm_vote winner, cm_arena_vote_result *result,
                        char *model_a, char *model_b, size_t cap) {
    pthread_mutex_lock(&a->mu);
    sqlite3_stmt *find = NULL, *ins = NULL;
    cm_status st = CM_OK;
    bool in_tx = false;
    *result = CM_ARENA_UNKNOWN_BATTLE;
    /* BEGIN IMMEDIATE takes the write lock first, so the check and the insert see the same database */
    if (sqlite3_exec(a->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        st = db_error(a, "vote");
        goto done;
    }
    in_tx = true;
    if (sqlite3_prepare_v2(a->db,
                           "SELECT b.model_a, b.model_b, v.id FROM arena_battles b"
                           " LEFT JOIN arena_votes v ON v.battle_id = b.id WHERE b.id = ?",
                           -1, &find, NULL) != SQLITE_OK) {
        st = db_error(a, "vote");
        goto done;
    }
    sqlite3_bind_text(find, 1, id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(find);
    if (rc == SQLITE_DONE) goto done; /* no such battle */
    if (rc != SQLITE_ROW) {
        st = db_error(a, "vote");
        goto done;
    }
    copy_column(find, 0, model_a, cap);
    copy_column(find, 1, model_b, cap);
    if (sqlite3_column_type(find, 2) != SQLITE_NULL) {
        *result = CM_ARENA_ALREADY_VOTED;
        goto done;
    }
    if (sqlite3_prepare_v2(a->db,
                           "INSERT INTO arena_votes (battle_id, created, model_a, model_b, winner)"
                           " VALUES (?,?,?,?,?)",
                           -1, &ins, NULL) != SQLITE_OK) {
        st = db_error(a, "vote");
        goto done;
    }
    sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(ins, 2, unix_now());
    sqlite3_bind_text(ins, 3, model_a, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(ins, 4, model_b, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(ins, 5, cm_vote_name(winner), -1, SQLITE_STATIC);
    if (sqlite3_step(ins) != SQLITE_DONE) {
        st = db_error(a, "vote");
        goto done;
    }
    sqlite3_finalize(find);
    find = NULL;
    if (sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        st = db_error(a, "vote commit");
        goto done;
    }
    in_tx = false;
    *result = CM_ARENA_VOTED;
done:
    sqlite3_finalize(find);
    sqlite3_finalize(ins);
    if (in_tx) sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&a->mu);
    return st;
}

/* Does the file have the votes table (a database the server never wrote to has not)? */
static bool has_votes_table(cm_arena *a) {
    sqlite3_stmt *s = NULL;
    bool yes = false;
    if (sqlite3_prepare_v2(a->db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'arena_votes'",
                           -1, &s, NULL) == SQLITE_OK)
        yes = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
    return yes;
}

static cm_status read_votes_locked(cm_arena *a, cm_battles *out) {
    if (!has_votes_table(a)) return CM_OK;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(a->db, "SELECT id, model_a, model_b, winner FROM arena_votes ORDER BY id", -1, &s,
                           NULL) != SQLITE_OK)
        return db_error(a, "read votes");
    cm_status st = CM_OK;
    int rc;
    while (st == CM_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *ma = (const char *)sqlite3_column_text(s, 1),
                   *mb = (const char *)sqlite3_column_text(s, 2),
                   *w = (const char *)sqlite3_column_text(s, 3);
        cm_vote v;
        if (!ma || !mb || !w || !cm_vote_parse(w, &v))
            st = cm_error(CM_ERR_FORMAT, "%s: arena vote %lld is malformed", a->path,
                          (long long)sqlite3_column_int64(s, 0));
        else if (cm_battles_add(out, ma, mb, v) != CM_OK)
            st = cm_error_prefix(CM_ERR_FORMAT, "%s: arena vote %lld", a->path,
                                 (long long)sqlite3_column_int64(s, 0));
    }
    if (st == CM_OK && rc != SQLITE_DONE) st = db_error(a, "read votes");
    sqlite3_finalize(s);
    return st;
}

cm_status cm_arena_read_votes(cm_arena *a, cm_battles *out) {
    pthread_mutex_lock(&a->mu);
    cm_status st = read_votes_locked(a, out);
    pthread_mutex_unlock(&a->mu);
    return st;
}

char *cm_arena_leaderboard_json(cm_arena *a, const cm_rating_params *p) {
    pthread_mutex_lock(&a->mu);
    int64_t count = 0, last = 0;
    sqlite3_stmt *s = NULL;
    if (has_votes_table(a) &&
        sqlite3_prepare_v2(a->db, "SELECT count(*), coalesce(max(id), 0) FROM arena_votes", -1, &s, NULL) ==
            SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
        count = sqlite3_column_int64(s, 0);
        last = sqlite3_column_int64(s, 1);
    }
    sqlite3_finalize(s);
    char *json = NULL;
    if (!(a->lb_valid && a->lb_count == count && a->lb_last == last)) {
        /* a vote may land between the count and the read: then the cache key is stale and the next
         * request recomputes, never the other way round */
        cm_battles b;
        cm_battles_init(&b);
        cm_leaderboard lb;
        if (read_votes_locked(a, &b) == CM_OK && cm_leaderboard_compute(&b, p, &lb) == CM_OK) {
            char *fresh = cm_leaderboard_json(&lb);
            cm_leaderboard_free(&lb);
            if (fresh) {
                free(a->lb_json);
                a->lb_json = fresh;
                a->lb_count = count;
                a->lb_last = last;
                a->lb_valid = true;
            } else {
                cm_error(CM_ERR_NOMEM, "out of memory");
            }
        }
        cm_battles_free(&b);
        if (!(a->lb_valid && a->lb_count == count && a->lb_last == last)) {
            pthread_mutex_unlock(&a->mu);
            return NULL;
        }
    }
    json = strdup(a->lb_json);
    pthread_mutex_unlock(&a->mu);
    if (!json) cm_error(CM_ERR_NOMEM, "out of memory");
    return json;
}
