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
    size_t j = size;
    while (j > 0 && data[j - 1] != '}') j--;
    if (j == 0) j = size;
    size_t dlen = 0;
    for (size_t k = j; k < size && data[k] >= '0' && data[k] <= '9' && dlen < (1u << 16); k++)
        dlen = dlen * 10 + (size_t)(data[k] - '0');
    if (dlen > (1u << 16)) dlen = 1u << 16;
    size_t total = 8 + j + dlen;
    uint8_t *buf = calloc(total, 1);
    if (!buf) return 0;
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)j >> (8 * i));
    memcpy(buf + 8, data, j);
    check(buf, total);
    free(buf);
    return 0;
}
