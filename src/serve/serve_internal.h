/* Pieces of the server shared between its files. */
#ifndef CAMELID_SERVE_INTERNAL_H
#define CAMELID_SERVE_INTERNAL_H

#include <stdbool.h>

#include "camelid/status.h"

/* The request log: one row per API request in a SQLite table serve_requests. */
typedef struct serve_db serve_db;

typedef struct serve_db_row {
    double created; /* unix time */
    const char *route, *model, *finish;
    int status;
    int prompt_tokens, completion_tokens;
    double ttft_seconds, total_seconds;
    bool stream;
} serve_db_row;

cm_status serve_db_open(const char *path, serve_db **out);
/* Thread-safe. */
cm_status serve_db_log(serve_db *db, const serve_db_row *row);
void serve_db_close(serve_db *db);

#endif
