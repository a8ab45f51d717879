#include "camelid/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define CM_ERROR_CAP 1024

static _Thread_local char error_message[CM_ERROR_CAP];

cm_status cm_error(cm_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    return code;
}

cm_status cm_error_prefix(cm_status code, const char *fmt, ...) {
    char prefix[CM_ERROR_CAP], old[CM_ERROR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, error_message, sizeof old);
    /* truncation is fine: the message stays a readable prefix */
    size_t n = strlen(prefix);
    if (n > CM_ERROR_CAP - 3) n = CM_ERROR_CAP - 3;
    memcpy(error_message, prefix, n);
    memcpy(error_message + n, ": ", 2);
    size_t rest = CM_ERROR_CAP - n - 3, m = strlen(old);
    if (m > rest) m = rest;
    memcpy(error_message + n + 2, old, m);
    error_message[n + 2 + m] = 0;
    return code;
}

const char *cm_last_error(void) {
    return error_message;
}

void cm_clear_error(void) {
    error_message[0] = 0;
}

const char *cm_status_name(cm_status code) {
    switch (code) {
    case CM_OK:
        return "ok";
    case CM_ERR_IO:
        return "I/O error";
    case CM_ERR_FORMAT:
        return "format error";
    case CM_ERR_NOMEM:
        return "out of memory";
    case CM_ERR_ARG:
        return "invalid argument";
    case CM_ERR_UNSUPPORTED:
        return "unsupported";
    case CM_ERR_NOT_FOUND:
        return "not found";
    }
    return "unknown error";
}
