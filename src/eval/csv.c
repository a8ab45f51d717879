/* RFC 4180 CSV reader (include/camelid/eval_csv.h). */
#include "camelid/eval_csv.h"

#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"

typedef struct {
    char *buf;
    size_t len, cap;
} grow_buf;

static int buf_put(grow_buf *b, char c) {
    if (b->len + 2 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        char *p = realloc(b->buf, cap);
        if (!p) return -1;
        b->buf = p;
        b->cap = cap;
    }
    b->buf[b->len++] = c;
    b->buf[b->len] = 0;
    return 0;
}

void cm_csv_free(cm_csv *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_rows; i++) {
        for (int j = 0; j < c->rows[i].n_fields; j++) free(c->rows[i].fields[j]);
        free(c->rows[i].fields);
        free(c->rows[i].lens);
    }
    free(c->rows);
    free(c);
}

/* Append the field in `f` to `row` (takes the buffer). */
static int row_add(cm_csv_row *row, grow_buf *f) {
    if (!f->buf && buf_put(f, 0) == 0) f->len = 0; /* an empty field still gets a string */
    if (!f->buf) return -1;
    char **fields = realloc(row->fields, (size_t)(row->n_fields + 1) * sizeof *fields);
    if (!fields) return -1;
    row->fields = fields;
    size_t *lens = realloc(row->lens, (size_t)(row->n_fields + 1) * sizeof *lens);
    if (!lens) return -1;
    row->lens = lens;
    row->fields[row->n_fields] = f->buf;
    row->lens[row->n_fields] = f->len;
    row->n_fields++;
    *f = (grow_buf){0};
    return 0;
}

static int csv_add(cm_csv *c, size_t *cap, cm_csv_row *row) {
    if (c->n_rows == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        cm_csv_row *r = realloc(c->rows, nc * sizeof *r);
        if (!r) return -1;
        c->rows = r;
        *cap = nc;
    }
    c->rows[c->n_rows++] = *row;
    *row = (cm_csv_row){0};
    return 0;
}

cm_status cm_csv_parse(const char *data, size_t len, const char *name, cm_csv **out) {
    *out = NULL;
    cm_csv *c = calloc(1, sizeof *c);
    if (!c) return cm_error(CM_ERR_NOMEM, "out of memory");
    size_t cap = 0, i = 0;
    int line = 1;
    cm_csv_row row = {0};
    grow_buf f = {0};
    cm_status st = CM_OK;
    while (i < len) {
        /* one record */
        row.line = line;
        if (data[i] == '\n' || data[i] == '\r') { /* an empty line */
            i += (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n') ? 2 : 1;
            line++;
            continue;
        }
        for (;;) {
            /* one field, starting at data[i] (i may be len: an empty last field) */
            if (i < len && data[i] == '"') {
                int open_line = line;
                i++;
                for (;;) {
                    if (i >= len) {
                        st =
                            cm_error(CM_ERR_FORMAT, "%s:%d: unterminated quoted field (the quote opens here)",
                                     name, open_line);
                        goto fail;
                    }
                    char ch = data[i];
                    if (ch == 0) {
                        st = cm_error(CM_ERR_FORMAT, "%s:%d: NUL byte", name, line);
                        goto fail;
                    }
                    if (ch == '"') {
                        if (i + 1 < len && data[i + 1] == '"') {
                            if (buf_put(&f, '"')) goto nomem;
                            i += 2;
                            continue;
                        }
                        i++;
                        break;
                    }
                    if (ch == '\n' || (ch == '\r' && !(i + 1 < len && data[i + 1] == '\n'))) line++;
                    if (buf_put(&f, ch)) goto nomem;
                    i++;
                }
                if (i < len && data[i] != ',' && data[i] != '\n' && data[i] != '\r') {
                    st = cm_error(CM_ERR_FORMAT,
                                  "%s:%d: unexpected character after a closing quote (expected , or "
                                  "the end of the line)",
                                  name, line);
                    goto fail;
                }
            } else {
                while (i < len && data[i] != ',' && data[i] != '\n' && data[i] != '\r') {
                    if (data[i] == 0) {
                        st = cm_error(CM_ERR_FORMAT, "%s:%d: NUL byte", name, line);
                        goto fail;
                    }
                    if (buf_put(&f, data[i])) goto nomem;
                    i++;
                }
            }
            if (row_add(&row, &f)) goto nomem;
            if (i < len && data[i] == ',') {
                i++;
                continue;
            }
            break;
        }
        if (i < len) { /* the record ends at a line break */
            i += (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n') ? 2 : 1;
            line++;
        }
        if (csv_add(c, &cap, &row)) goto nomem;
    }
    *out = c;
    return CM_OK;
nomem:
    st = cm_error(CM_ERR_NOMEM, "%s: out of memory", name);
fail:
    free(f.buf);
    for (int j = 0; j < row.n_fields; j++) free(row.fields[j]);
    free(row.fields);
    free(row.lens);
    cm_csv_free(c);
    return st;
}

cm_status cm_csv_read(const char *path, cm_csv **out) {
    char *data;
    size_t size;
    CM_TRY(cm_read_file(path, (size_t)1 << 30, &data, &size));
    cm_status st = cm_csv_parse(data, size, path, out);
    free(data);
    return st;
}
