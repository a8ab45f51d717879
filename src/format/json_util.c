#include "format/json_util.h"

#include <string.h>

const char *cm_json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

const char *cm_json_show(const char *s, char *buf, size_t cap) {
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && k + 5 < cap; p++) {
        if (k > 60) {
            memcpy(buf + k, "...", 3);
            k += 3;
            break;
        }
        if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\') {
            static const char hex[] = "0123456789abcdef";
            buf[k++] = '\\';
            buf[k++] = 'x';
            buf[k++] = hex[*p >> 4];
            buf[k++] = hex[*p & 15];
        } else {
            buf[k++] = (char)*p;
        }
    }
    buf[k] = 0;
    return buf;
}
