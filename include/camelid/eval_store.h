/* Evaluation results kept across runs: an SQLite store (one row per run, one per task x metric) and the
 * report that compares runs and models (a text table, and an HTML page with inline SVG bar charts). */
#ifndef CAMELID_EVAL_STORE_H
#define CAMELID_EVAL_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/status.h"

/* One metric of one task, from a results document (counts such as tokens or windows left out). */
typedef struct cm_eval_summary_row {
    char *task, *metric;
    double value, stderr_value;
    bool has_value, has_stderr; /* null (non-finite) values have has_value false */
} cm_eval_summary_row;

cm_status cm_eval_summarize(const char *results_json, cm_eval_summary_row **rows, size_t *n);
void cm_eval_summary_free(cm_eval_summary_row *rows, size_t n);

/* Add a results document (cm_eval_to_json) to the store at `db_path` (created if missing). */
cm_status cm_eval_store_save(const char *db_path, const char *results_json, int64_t *run_id);

/* The comparison across every run in the store: runs as columns, task/metric as rows. Malloc'd text. Fails
 * if the store does not exist or is not a camelid store. */
cm_status cm_eval_report_text(const char *db_path, char **text);
cm_status cm_eval_report_html(const char *db_path, char **html);

#endif
