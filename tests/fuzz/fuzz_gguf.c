/* libFuzzer target: parse arbitrary bytes as GGUF, then touch every KV (through the typed getters) and every
 * tensor's bytes, so that a view pointing outside the input shows up under AddressSanitizer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/gguf.h"

static volatile uint8_t sink;

static void touch(const void *p, size_t n) {
    const uint8_t *b = p;
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) acc ^= b[i];
    sink ^= acc;
}

static void touch_kv(const cm_gguf *g, size_t i) {
    const char *key = cm_gguf_kv_key(g, i);
    if (cm_gguf_find(g, key) != (int64_t)i) abort(); /* keys are unique and findable */
    uint32_t u;
    int64_t v;
    float f;
    double d;
    bool b;
    const char *s;
    size_t n;
    cm_gguf_type et;
    uint64_t count;
    const void *data;
    (void)cm_gguf_get_u32(g, key, &u);
    (void)cm_gguf_get_i64(g, key, &v);
    (void)cm_gguf_get_f32(g, key, &f);
    (void)cm_gguf_get_f64(g, key, &d);
    (void)cm_gguf_get_bool(g, key, &b);
    if (cm_gguf_get_str(g, key, &s, &n) == CM_OK) touch(s, n);
    if (cm_gguf_get_arr(g, key, &et, &count) != CM_OK) return;
    if (et == CM_GGUF_STRING) {
        for (uint64_t j = 0; j < count; j++)
            if (cm_gguf_get_arr_str(g, key, j, &s, &n) == CM_OK) touch(s, n);
        (void)cm_gguf_get_arr_str(g, key, count, &s, &n); /* out of range: must fail cleanly */
    } else if (cm_gguf_get_arr_data(g, key, &data) == CM_OK) {
        static const size_t esz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        if ((unsigned)et < sizeof esz / sizeof esz[0]) touch(data, (size_t)count * esz[et]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cm_gguf *g = NULL;
    if (cm_gguf_parse(data, size, "fuzz.gguf", &g) != CM_OK) return 0;
    (void)cm_gguf_version(g);
    (void)cm_gguf_alignment(g);
    for (size_t i = 0; i < cm_gguf_kv_count(g); i++) {
        (void)cm_gguf_kv_type(g, i);
        touch_kv(g, i);
    }
    for (size_t i = 0; i < cm_gguf_tensor_count(g); i++) {
        const cm_tensor *t = cm_gguf_tensor(g, i);
        if (cm_gguf_find_tensor(g, t->name) != t) abort();
        (void)cm_ggml_type_name(cm_gguf_tensor_ggml_type(g, i));
        (void)cm_tensor_numel(t);
        touch(t->data, t->nbytes);
    }
    cm_gguf_close(g);
    return 0;
}
