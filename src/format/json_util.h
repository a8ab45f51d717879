/* Small helpers shared by the JSON-based parsers (config.json, safetensors headers) for their messages. */
#ifndef CAMELID_JSON_UTIL_H
#define CAMELID_JSON_UTIL_H

#include <jansson.h>
#include <stddef.h>

/* "an object", "a string", ... for "must be an integer, got a string" messages. */
const char *cm_json_kind(const json_t *v);
/* A printable, bounded copy of an untrusted string for one-line messages: control characters, quotes and
 * backslashes as \xNN, cut after about 60 bytes. Returns buf. */
const char *cm_json_show(const char *s, char *buf, size_t cap);

#endif
