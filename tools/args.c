#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const arg_spec *find_long(const arg_spec *specs, const char *name, size_t len) {
    for (const arg_spec *s = specs; s->name; s++)
        if (strlen(s->name) == len && strncmp(s->name, name, len) == 0) return s;
    return NULL;
}

static const arg_spec *find_short(const arg_spec *specs, char c) {
    for (const arg_spec *s = specs; s->name; s++)
        if (s->short_name == c) return s;
    return NULL;
}

static int set_value(const arg_spec *s, const char *v, char *err, size_t cap) {
    char *end;
    errno = 0;
    switch (s->kind) {
    case ARG_INT: {
        long x = strtol(v, &end, 10);
        if (*v == 0 || *end || errno || x < -2147483647L || x > 2147483647L) {
            snprintf(err, cap, "--%s expects an integer, got \"%s\"", s->name, v);
            return -1;
        }
        *(int *)s->target = (int)x;
        break;
    }
    case ARG_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (*v == 0 || *v == '-' || *end || errno) {
            snprintf(err, cap, "--%s expects a non-negative integer, got \"%s\"", s->name, v);
            return -1;
        }
        *(uint64_t *)s->target = x;
        break;
    }
    case ARG_FLOAT: {
        float x = strtof(v, &end);
        if (*v == 0 || *end || errno || !isfinite(x)) {
            snprintf(err, cap, "--%s expects a number, got \"%s\"", s->name, v);
            return -1;
        }
        *(float *)s->target = x;
        break;
    }
    case ARG_STRING:
        *(const char **)s->target = v;
        break;
    case ARG_STRINGS: {
        string_list *l = s->target;
        const char **items = realloc(l->items, (size_t)(l->n + 1) * sizeof *items);
        if (!items) {
            snprintf(err, cap, "out of memory");
            return -1;
        }
        l->items = items;
        l->items[l->n++] = v;
        break;
    }
    case ARG_FLAG:
        *(bool *)s->target = true;
        break;
    }
    if (s->seen) *s->seen = true;
    return 0;
}

int args_parse(int argc, char **argv, const arg_spec *specs, const char **positional, int *n_positional,
               char *err, size_t cap) {
    *n_positional = 0;
    bool only_positional = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || a[1] == 0) {
            positional[(*n_positional)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_positional = true;
            continue;
        }
        const arg_spec *s;
        const char *value = NULL;
        if (a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            s = find_long(specs, name, len);
            if (!s) {
                snprintf(err, cap, "unknown option --%.*s (see --help)", (int)len, name);
                return -1;
            }
            if (eq) {
                if (s->kind == ARG_FLAG) {
                    snprintf(err, cap, "--%s takes no value", s->name);
                    return -1;
                }
                value = eq + 1;
            }
        } else {
            /* a negative number is a positional argument only where no short option matches */
            s = a[2] == 0 ? find_short(specs, a[1]) : NULL;
            if (!s) {
                snprintf(err, cap, "unknown option %s (see --help)", a);
                return -1;
            }
        }
        if (s->kind == ARG_FLAG) {
            set_value(s, NULL, err, cap);
            continue;
        }
        if (!value) {
            if (i + 1 >= argc) {
                snprintf(err, cap, "--%s needs a value", s->name);
                return -1;
            }
            value = argv[++i];
        }
        if (set_value(s, value, err, cap) != 0) return -1;
    }
    return 0;
}

void string_list_free(string_list *l) {
    free(l->items);
    l->items = NULL;
    l->n = 0;
}
