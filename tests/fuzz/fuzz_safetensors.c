/* libFuzzer target: the safetensors parser on arbitrary bytes. Every accepted file must describe tensors
 * that lie inside the buffer, tile the data section in offset order, and be findable by name. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cm_safetensors *st = NULL;
    if (cm_safetensors_parse(data, size, "fuzz.safetensors", &st) != CM_OK) return 0;
    size_t n = cm_safetensors_count(st);
    const uint8_t *end = data + size, *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        const cm_tensor *t = cm_safetensors_get(st, i);
        const uint8_t *p = t->data;
        if (p < data || p > end || t->nbytes > (size_t)(end - p)) abort();
        if (prev && p < prev) abort();
        prev = p + t->nbytes;
        if (cm_safetensors_find(st, t->name) != t) abort();
        if (t->ndim < 0 || t->ndim > CM_MAX_DIMS) abort();
        volatile uint8_t sink = 0;
        if (t->nbytes) sink ^= p[0] ^ p[t->nbytes - 1];
        (void)sink;
    }
    if (n && prev != end) abort();
    (void)cm_safetensors_metadata(st, "format");
    cm_safetensors_close(st);
    return 0;
}
