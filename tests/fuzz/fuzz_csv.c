/* libFuzzer target: the RFC 4180 CSV reader. Every accepted input has records whose fields, written back with
 * quoting, parse to the same fields (line numbers aside). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/eval_csv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cm_csv *c;
    if (cm_csv_parse((const char *)data, size, "fuzz.csv", &c) != CM_OK) return 0;
    /* re-encode: every field quoted, quotes doubled, records ended by \n */
    size_t cap = 16;
    for (size_t i = 0; i < c->n_rows; i++)
        for (int j = 0; j < c->rows[i].n_fields; j++) cap += 2 * c->rows[i].lens[j] + 3;
    char *out = malloc(cap);
    size_t n = 0;
    for (size_t i = 0; i < c->n_rows; i++) {
        if (c->rows[i].n_fields < 1 || c->rows[i].line < 1) abort();
        for (int j = 0; j < c->rows[i].n_fields; j++) {
            if (j) out[n++] = ',';
            out[n++] = '"';
            for (size_t k = 0; k < c->rows[i].lens[j]; k++) {
                if (c->rows[i].fields[j][k] == '"') out[n++] = '"';
                out[n++] = c->rows[i].fields[j][k];
            }
            out[n++] = '"';
        }
        out[n++] = '\n';
    }
    cm_csv *back;
    if (cm_csv_parse(out, n, "re-encoded", &back) != CM_OK) abort();
    if (back->n_rows != c->n_rows) abort();
    for (size_t i = 0; i < c->n_rows; i++) {
        if (back->rows[i].n_fields != c->rows[i].n_fields) abort();
        for (int j = 0; j < c->rows[i].n_fields; j++)
            if (back->rows[i].lens[j] != c->rows[i].lens[j] ||
                memcmp(back->rows[i].fields[j], c->rows[i].fields[j], c->rows[i].lens[j]))
                abort();
    }
    cm_csv_free(back);
    cm_csv_free(c);
    free(out);
    return 0;
}
