/* RFC 4180 CSV (the MMLU file format, FACTS 9.1): fields separated by commas, records by LF or CRLF (a lone
 * CR also ends a record); a field may be quoted, and then holds commas, line breaks and "" for a quote. A
 * quote inside an unquoted field is kept as a character (as Python's csv does). Empty lines are skipped.
 * Errors name the file and line: an unterminated quoted field, text after a closing quote, a NUL byte. */
#ifndef CAMELID_EVAL_CSV_H
#define CAMELID_EVAL_CSV_H

#include <stddef.h>

#include "camelid/status.h"

typedef struct cm_csv_row {
    char **fields; /* NUL-terminated copies (a field may contain newlines) */
    size_t *lens;
    int n_fields;
    int line; /* 1-based line on which the record starts */
} cm_csv_row;

typedef struct cm_csv {
    cm_csv_row *rows;
    size_t n_rows;
} cm_csv;

/* Parse `len` bytes; `name` is used in errors ("name:line: ..."). */
cm_status cm_csv_parse(const char *data, size_t len, const char *name, cm_csv **out);
/* Read and parse a file (at most 1 GiB). */
cm_status cm_csv_read(const char *path, cm_csv **out);
void cm_csv_free(cm_csv *c);

#endif
