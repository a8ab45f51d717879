/* Documents from text and JSONL files (see include/camelid/corpus.h). */
#include <jansson.h>
#include <string.h>

#include "camelid/corpus.h"
#include "camelid/file.h"

bool cm_corpus_is_jsonl(const char *path) {
    return cm_path_has_suffix(path, ".jsonl") || cm_path_has_suffix(path, ".ndjson");
}

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

cm_status cm_corpus_split_text(const char *data, size_t len, const char *sep, cm_corpus_doc_fn fn, void *user) {
    if (!data && len) return cm_error(CM_ERR_ARG, "corpus: text is NULL");
    size_t sl = sep ? strlen(sep) : 0;
    const char *hit = sl ? memmem(data, len, sep, sl) : NULL;
    if (!hit) return len ? fn(user, data, len) : CM_OK; /* the whole file, as it is */
    size_t pos = 0;
    for (;;) {
        size_t end = hit ? (size_t)(hit - data) : len;
        size_t a = pos, b = end;
        while (a < b && is_space(data[a])) a++;
        while (b > a && is_space(data[b - 1])) b--;
        if (b > a) CM_TRY(fn(user, data + a, b - a));
        if (!hit) return CM_OK;
        pos = end + sl;
        hit = memmem(data + pos, len - pos, sep, sl);
    }
}

cm_status cm_corpus_parse_jsonl(const char *data, size_t len, const char *name, cm_corpus_doc_fn fn,
                                void *user) {
    if (!data && len) return cm_error(CM_ERR_ARG, "%s: the buffer is NULL", name);
    size_t line = 0;
    for (size_t pos = 0; pos < len;) {
        const char *s = data + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        line++;
        size_t k = 0;
        while (k < n && is_space(s[k])) k++;
        if (k == n) continue; /* a blank line */
        json_error_t err;
        /* NUL (\u0000) is allowed: documents are bytes to the tokenizer */
        json_t *v = json_loadb(s, n, JSON_ALLOW_NUL, &err);
        if (!v) return cm_error(CM_ERR_FORMAT, "%s:%zu: invalid JSON: %s", name, line, err.text);
        cm_status st = CM_OK;
        json_t *text = json_object_get(v, "text");
        if (!json_is_object(v))
            st = cm_error(CM_ERR_FORMAT, "%s:%zu: expected a JSON object with a \"text\" string", name, line);
        else if (!text)
            st = cm_error(CM_ERR_FORMAT, "%s:%zu: the object has no \"text\" member", name, line);
        else if (!json_is_string(text))
            st = cm_error(CM_ERR_FORMAT, "%s:%zu: \"text\" should be a string", name, line);
        else if (json_string_length(text) > 0)
            st = fn(user, json_string_value(text), json_string_length(text));
        json_decref(v);
        if (st) return st;
    }
    return CM_OK;
}

cm_status cm_corpus_read(const char *path, const char *sep, cm_corpus_doc_fn fn, void *user) {
    cm_mmap *m;
    CM_TRY(cm_mmap_open(path, &m));
    const char *data = (const char *)m->data;
    cm_status st = cm_corpus_is_jsonl(path) ? cm_corpus_parse_jsonl(data, m->size, path, fn, user)
                                             : cm_corpus_split_text(data, m->size, sep, fn, user);
    cm_mmap_close(m);
    return st;
}
