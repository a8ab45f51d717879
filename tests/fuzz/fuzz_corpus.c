/* libFuzzer target: the corpus reader. Arbitrary bytes as {"text"} JSONL (every document is a non-empty
 * string that fits in the input) and as text split at "<|endoftext|>" (documents are non-empty, carry no
 * separator and no whitespace at their ends, and lie inside the input in order). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/corpus.h"

typedef struct {
    const char *base;
    size_t size, last_end, n;
    int split;
} ctx;

static int space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static cm_status on_doc(void *user, const char *text, size_t len) {
    ctx *c = user;
    if (len == 0) __builtin_trap();
    c->n++;
    if (c->split) {
        if (text < c->base || text + len > c->base + c->size) __builtin_trap();
        size_t start = (size_t)(text - c->base);
        if (start < c->last_end) __builtin_trap();
        c->last_end = start + len;
        if (len < c->size) { /* split at a separator: trimmed and separator-free */
            if (space(text[0]) || space(text[len - 1])) __builtin_trap();
            if (memmem(text, len, "<|endoftext|>", 13)) __builtin_trap();
        }
    } else if (len > c->size) {
        __builtin_trap();
    }
    return CM_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ctx c = {.base = (const char *)data, .size = size};
    (void)cm_corpus_parse_jsonl((const char *)data, size, "fuzz.jsonl", on_doc, &c);
    ctx s = {.base = (const char *)data, .size = size, .split = 1};
    if (cm_corpus_split_text((const char *)data, size, "<|endoftext|>", on_doc, &s) != CM_OK) __builtin_trap();
    return 0;
}
