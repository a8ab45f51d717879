/* Growing heap strings (include/camelid/strbuf.h). */
#include "camelid/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* room for n more bytes and the NUL */
static bool reserve(cm_strbuf *b, size_t n) {
    if (b->failed) return false;
    if (n > (size_t)-1 / 2 - b->len - 1) {
        b->failed = true;
        return false;
    }
    if (b->len + n + 1 <= b->cap) return true;
    size_t cap = (b->len + n + 1) * 2;
    char *p = realloc(b->buf, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->buf = p;
    b->cap = cap;
    return true;
}

void cm_strbuf_append(cm_strbuf *b, const char *s, size_t n) {
    if (!reserve(b, n)) return;
    if (n) memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

void cm_strbuf_puts(cm_strbuf *b, const char *s) {
    cm_strbuf_append(b, s, strlen(s));
}

void cm_strbuf_printf(cm_strbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if (!reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

char *cm_strbuf_take(cm_strbuf *b) {
    char *s = b->failed ? NULL : b->buf ? b->buf : strdup("");
    if (b->failed) free(b->buf);
    *b = (cm_strbuf){0};
    return s;
}

void cm_strbuf_free(cm_strbuf *b) {
    free(b->buf);
    *b = (cm_strbuf){0};
}
