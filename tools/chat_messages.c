#include "chat_messages.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

cm_status chat_messages_add(chat_messages *m, const char *role, const char *content) {
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 8;
        cm_chat_message *p = realloc(m->items, cap * sizeof *p);
        if (!p) return cm_error(CM_ERR_NOMEM, "out of memory");
        m->items = p;
        m->cap = cap;
    }
    char *r = strdup(role), *c = strdup(content);
    if (!r || !c) {
        free(r);
        free(c);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    m->items[m->n++] = (cm_chat_message){r, c};
    return CM_OK;
}

static void free_message(cm_chat_message *msg) {
    free((char *)msg->role);
    free((char *)msg->content);
}

cm_status chat_messages_set_system(chat_messages *m, const char *system) {
    if (m->n > 0 && strcmp(m->items[0].role, "system") == 0) {
        char *c = strdup(system);
        if (!c) return cm_error(CM_ERR_NOMEM, "out of memory");
        free((char *)m->items[0].content);
        m->items[0].content = c;
        return CM_OK;
    }
    CM_TRY(chat_messages_add(m, "system", system));
    cm_chat_message sys = m->items[m->n - 1];
    memmove(m->items + 1, m->items, (m->n - 1) * sizeof *m->items);
    m->items[0] = sys;
    return CM_OK;
}

static size_t first_turn(const chat_messages *m) {
    return m->n > 0 && !strcmp(m->items[0].role, "system") ? 1 : 0;
}

void chat_messages_clear_turns(chat_messages *m) {
    size_t keep = first_turn(m);
    for (size_t i = keep; i < m->n; i++) free_message(&m->items[i]);
    m->n = keep;
}

void chat_messages_drop_oldest_turn(chat_messages *m) {
    size_t f = first_turn(m), drop = m->n - f >= 2 ? 2 : m->n - f;
    for (size_t i = f; i < f + drop; i++) free_message(&m->items[i]);
    memmove(m->items + f, m->items + f + drop, (m->n - f - drop) * sizeof *m->items);
    m->n -= drop;
}

cm_status chat_messages_parse(const char *json, size_t len, const char *name, chat_messages *out) {
    memset(out, 0, sizeof *out);
    json_error_t e;
    json_t *root = json_loadb(json, len, 0, &e);
    if (!root) return cm_error(CM_ERR_FORMAT, "%s: line %d: invalid JSON: %s", name, e.line, e.text);
    cm_status st = CM_OK;
    json_t *list = json_is_object(root) ? json_object_get(root, "messages") : root;
    if (!json_is_array(list)) {
        st = cm_error(CM_ERR_FORMAT, "%s: expected a list of {\"role\", \"content\"} messages", name);
        goto done;
    }
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item) {
        const char *role = json_string_value(json_object_get(item, "role"));
        const char *content = json_string_value(json_object_get(item, "content"));
        if (!role || !content) {
            st =
                cm_error(CM_ERR_FORMAT, "%s: message %zu needs string \"role\" and \"content\"", name, i + 1);
            goto done;
        }
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")) {
            st = cm_error(CM_ERR_FORMAT, "%s: message %zu: unknown role \"%s\"", name, i + 1, role);
            goto done;
        }
        if ((st = chat_messages_add(out, role, content)) != CM_OK) goto done;
    }
done:
    json_decref(root);
    if (st != CM_OK) chat_messages_free(out);
    return st;
}

void chat_messages_free(chat_messages *m) {
    for (size_t i = 0; i < m->n; i++) free_message(&m->items[i]);
    free(m->items);
    memset(m, 0, sizeof *m);
}
