/* Errors: every fallible call returns a cm_status; the message that explains it (naming the file, the place
 * and the problem) is kept in a thread-local buffer, read with cm_last_error(). */
#ifndef CAMELID_STATUS_H
#define CAMELID_STATUS_H

#include <stddef.h>

typedef enum {
    CM_OK = 0,
    CM_ERR_IO,          /* open/read/write/mmap failed */
    CM_ERR_FORMAT,      /* input is malformed */
    CM_ERR_NOMEM,       /* allocation failed or a size overflowed */
    CM_ERR_ARG,         /* the caller asked for something invalid */
    CM_ERR_UNSUPPORTED, /* well-formed, but camelid does not handle it (yet) */
    CM_ERR_NOT_FOUND,   /* a named item (tensor, key, file) is absent */
} cm_status;

/* Record a message (printf-style) for the current thread and return `code`. */
cm_status cm_error(cm_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with "<prefix>: " (adds context as an error travels up). Returns `code`. */
cm_status cm_error_prefix(cm_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The last message recorded on this thread ("" if none). */
const char *cm_last_error(void);
void cm_clear_error(void);
const char *cm_status_name(cm_status code);

/* Overflow-checked size arithmetic: return 0 on success, nonzero on overflow. */
static inline int cm_mul_size(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out);
}
static inline int cm_add_size(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out);
}

#define CM_TRY(expr)                                                                                         \
    do {                                                                                                     \
        cm_status cm_try_status_ = (expr);                                                                   \
        if (cm_try_status_ != CM_OK) return cm_try_status_;                                                  \
    } while (0)

#endif
