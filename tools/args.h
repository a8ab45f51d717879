/* A small command-line parser for the CLI: GNU-style long options (--name value, --name=value), short
 * options (-n value), flags, repeatable options; the last occurrence of an option wins. */
#ifndef CAMELID_ARGS_H
#define CAMELID_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { ARG_FLAG, ARG_INT, ARG_FLOAT, ARG_STRING, ARG_STRINGS, ARG_U64 } arg_kind;

typedef struct arg_spec {
    const char *name; /* long name without dashes */
    char short_name;  /* 0 if none */
    arg_kind kind;
    void *target; /* bool*, int*, float*, const char**, string_list*, uint64_t* */
    bool *seen;   /* optional: set when given */
} arg_spec;

typedef struct string_list {
    const char **items;
    int n;
} string_list;

/* Parse argv[0..argc) against specs (terminated by a spec with name NULL). Positional arguments are
 * collected into `positional` (caller-provided array of argc entries). Returns 0, or -1 with a one-line
 * message in `err`. */
int args_parse(int argc, char **argv, const arg_spec *specs, const char **positional, int *n_positional,
               char *err, size_t err_cap);
void string_list_free(string_list *l);

#endif
