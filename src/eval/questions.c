/* Question files (questions.h). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/questions.h"
#include "format/json_util.h"

void cm_questions_free(cm_questions *q) {
    for (size_t i = 0; i < q->n; i++) {
        cm_question *x = &q->items[i];
        free(x->id_json);
        free(x->category);
        for (size_t k = 0; k < x->n_turns; k++) free(x->turns[k]);
        free(x->turns);
    }
    free(q->items);
    q->items = NULL;
    q->n = 0;
}

/* A non-empty string without NUL, copied. */
static cm_status take_string(json_t *v, const char *field, char **out) {
    if (!json_is_string(v))
        return cm_error(CM_ERR_FORMAT, "\"%s\" must be a string, got %s", field, cm_json_kind(v));
    if (strlen(json_string_value(v)) != json_string_length(v))
        return cm_error(CM_ERR_FORMAT, "\"%s\" holds a NUL character", field);
    if (json_string_length(v) == 0) return cm_error(CM_ERR_FORMAT, "\"%s\" is empty", field);
    *out = strdup(json_string_value(v));
    return *out ? CM_OK : cm_error(CM_ERR_NOMEM, "out of memory");
}

static cm_status parse_row(json_t *o, size_t line, cm_question *q) {
    memset(q, 0, sizeof *q);
    q->line = line;
    if (!json_is_object(o))
        return cm_error(CM_ERR_FORMAT, "a question must be an object, got %s", cm_json_kind(o));
    json_t *id = json_object_get(o, "question_id");
    if (id && !json_is_integer(id) && !json_is_string(id))
        return cm_error(CM_ERR_FORMAT, "\"question_id\" must be an integer or a string, got %s",
                        cm_json_kind(id));
    if (id) {
        q->id_json = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
    } else {
        char buf[32];
        snprintf(buf, sizeof buf, "%zu", line);
        q->id_json = strdup(buf);
    }
    if (!q->id_json) return cm_error(CM_ERR_NOMEM, "out of memory");
    json_t *cat = json_object_get(o, "category");
    if (cat && !json_is_null(cat)) CM_TRY(take_string(cat, "category", &q->category));
    json_t *turns = json_object_get(o, "turns"), *text = json_object_get(o, "text"),
           *prompt = json_object_get(o, "prompt");
    if (turns) {
        if (!json_is_array(turns))
            return cm_error(CM_ERR_FORMAT, "\"turns\" must be an array of strings, got %s",
                            cm_json_kind(turns));
        size_t n = json_array_size(turns);
        if (n == 0 || n > CM_QUESTION_MAX_TURNS)
            return cm_error(CM_ERR_FORMAT, "\"turns\" has %zu entries (1..%d)", n, CM_QUESTION_MAX_TURNS);
        q->turns = calloc(n, sizeof *q->turns);
        if (!q->turns) return cm_error(CM_ERR_NOMEM, "out of memory");
        for (size_t k = 0; k < n; k++) {
            char field[32];
            snprintf(field, sizeof field, "turns[%zu]", k);
            CM_TRY(take_string(json_array_get(turns, k), field, &q->turns[k]));
            q->n_turns++;
        }
        return CM_OK;
    }
    json_t *one = text ? text : prompt;
    if (!one) return cm_error(CM_ERR_FORMAT, "the question has no \"turns\", \"text\" or \"prompt\"");
    q->turns = calloc(1, sizeof *q->turns);
    if (!q->turns) return cm_error(CM_ERR_NOMEM, "out of memory");
    CM_TRY(take_string(one, text ? "text" : "prompt", &q->turns[0]));
    q->n_turns = 1;
    return CM_OK;
}

cm_status cm_questions_parse(const char *text, size_t len, const char *name, cm_questions *out) {
    out->items = NULL;
    out->n = 0;
    size_t cap = 0, line = 0;
    for (size_t i = 0; i < len;) {
        size_t end = i;
        while (end < len && text[end] != '\n') end++;
        line++;
        size_t k = i;
        while (k < end && (text[k] == ' ' || text[k] == '\t' || text[k] == '\r')) k++;
        if (k < end) {
            json_error_t je;
            json_t *o =
                json_loadb(text + i, end - i, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
            cm_status st;
            if (out->n == cap) {
                size_t ncap = cap ? cap * 2 : 64, bytes;
                cm_question *items =
                    cm_mul_size(ncap, sizeof *items, &bytes) ? NULL : realloc(out->items, bytes);
                if (!items) {
                    json_decref(o);
                    cm_questions_free(out);
                    return cm_error(CM_ERR_NOMEM, "out of memory");
                }
                out->items = items;
                cap = ncap;
            }
            if (!o) {
                st = cm_error(CM_ERR_FORMAT, "invalid JSON: %s", je.text);
            } else {
                st = parse_row(o, line, &out->items[out->n]);
                out->n++; /* freed with the rest, also when half filled */
            }
            json_decref(o);
            if (st != CM_OK) {
                cm_questions_free(out);
                return cm_error_prefix(st, "%s:%zu", name, line);
            }
        }
        i = end + 1;
    }
    return CM_OK;
}

cm_status cm_questions_read(const char *path, cm_questions *out) {
    out->items = NULL;
    out->n = 0;
    cm_mmap *m;
    CM_TRY(cm_mmap_open(path, &m));
    cm_status st = cm_questions_parse((const char *)m->data, m->size, path, out);
    cm_mmap_close(m);
    return st;
}
