/* A growing heap string for building text (prompts, reports, JSON bodies). Out of memory is sticky: the first
 * failed append sets `failed`, later appends do nothing, and cm_strbuf_take gives NULL, so a builder checks
 * once at the end instead of after every piece. A zeroed cm_strbuf is empty and ready. */
#ifndef CAMELID_STRBUF_H
#define CAMELID_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *buf; /* NUL-terminated once anything was appended; NULL before */
    size_t len, cap;
    bool failed;
} cm_strbuf;

void cm_strbuf_append(cm_strbuf *b, const char *s, size_t n);
void cm_strbuf_puts(cm_strbuf *b, const char *s);
void cm_strbuf_printf(cm_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The text (heap, the caller frees; "" when nothing was appended), or NULL after a failure; b is emptied. */
char *cm_strbuf_take(cm_strbuf *b);
void cm_strbuf_free(cm_strbuf *b);

#endif
