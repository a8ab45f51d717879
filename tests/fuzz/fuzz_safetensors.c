/* libFuzzer target: the safetensors parser on arbitrary bytes. Every accepted file must describe tensors
 * that lie inside the buffer, tile the data section in offset order, and be findable by name.
 *
 * Two input forms: a raw file; or, when the input starts with '{', a bare header `{...}` optionally followed
 * by a decimal data size, which the target wraps into a file (length prefix + header + that many zero bytes),
 * so the fuzzer can reach the deeper header checks without having to guess the 8-byte length. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/safetensors.h"
#include "fuzz_util.h"

static void check(const uint8_t *data, size_t size) {
    cm_safetensors *st = NULL;
    if (cm_safetensors_parse(data, size, "fuzz.safetensors", &st) != CM_OK) return;
    size_t n = cm_safetensors_count(st);
    const uint8_t *end = data + size, *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        const cm_tensor *t = cm_safetensors_get(st, i);
        const uint8_t *p = t->data;
        if (p < data || p > end || t->nbytes > (size_t)(end - p)) abort();
        if (prev && p != prev) abort();
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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0 || data[0] != '{') {
        check(data, size);
        return 0;
    }
    size_t total;
    uint8_t *buf = fuzz_wrap_safetensors(data, size, &total);
    if (!buf) return 0;
    check(buf, total);
    free(buf);
    return 0;
}
