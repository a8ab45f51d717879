/* libFuzzer target: the bitsandbytes 4-bit parsing (src/format/nf4_hf.c).
 *
 * Input forms, by the first byte:
 *   'J'  the rest is a quant-state JSON: parsed; an accepted state must format back to JSON that parses to the
 *        same state.
 *   else bytes 1-2 and 3-4 are the expected [rows, cols] (little-endian, 1..512), the rest a safetensors file
 *        (or, starting with '{', a bare header plus an optional decimal data size, wrapped as fuzz_safetensors
 *        does) holding a linear named "w" with its .absmax, .quant_map, .nested_* and quant-state tensors. It is
 *        bound as the model loader binds it; an accepted weight is dequantized row by row and multiplied, so
 *        every offset it implies must lie inside the buffers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/model.h"
#include "camelid/nf4.h"
#include "camelid/nf4_hf.h"
#include "camelid/safetensors.h"
#include "fuzz_util.h"
#include "model/model_internal.h"

static const cm_tensor *lookup(void *ctx, const char *name) { return cm_safetensors_find(ctx, name); }

static void check_json(const uint8_t *data, size_t size) {
    cm_nf4_quant_state qs, back;
    if (cm_nf4_quant_state_parse(data, size, "fuzz", &qs) != CM_OK) return;
    char *json;
    if (cm_nf4_quant_state_json(&qs, &json) != CM_OK) abort();
    if (cm_nf4_quant_state_parse(json, strlen(json), "fuzz", &back) != CM_OK) abort();
    if (back.blocksize != qs.blocksize || back.shape[0] != qs.shape[0] || back.shape[1] != qs.shape[1] ||
        back.nested != qs.nested || strcmp(back.dtype, qs.dtype) != 0)
        abort();
    if (qs.nested && (back.nested_blocksize != qs.nested_blocksize ||
                      memcmp(&back.nested_offset, &qs.nested_offset, sizeof(float)) != 0))
        abort();
    free(json);
}

static void check_file(const uint8_t *file, size_t size, int64_t rows, int64_t cols) {
    cm_safetensors *st;
    if (cm_safetensors_parse(file, size, "fuzz.safetensors", &st) != CM_OK) return;
    cm_model *m;
    if (cm_model_alloc(&m, "fuzz", CM_FORMAT_HF) != CM_OK) abort();
    cm_weight w;
    bool bound = false;
    if (cm_model_bind_nf4(m, lookup, st, "w", rows, cols, true, "fuzz", &w, &bound) == CM_OK && bound) {
        const cm_nf4_weight *q = w.data;
        if (w.dtype != CM_DTYPE_NF4 || q->rows != rows || q->cols != cols) abort();
        float *row = malloc((size_t)cols * sizeof(float)), *x = calloc((size_t)cols, sizeof(float)),
              *y = malloc((size_t)rows * sizeof(float));
        if (!row || !x || !y) abort();
        for (int64_t r = 0; r < rows; r++) cm_nf4_row_to_f32(q, r, row);
        for (int64_t c = 0; c < cols; c++) x[c] = (float)(c % 7) - 3.0f;
        cm_matmul_nf4(y, x, 1, q, NULL);
        free(row), free(x), free(y);
    }
    cm_model_close(m);
    cm_safetensors_close(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] == 'J') {
        check_json(data + 1, size - 1);
        return 0;
    }
    if (size < 5) return 0;
    int64_t rows = 1 + (int64_t)((data[1] | data[2] << 8) % 512), cols = 1 + (int64_t)((data[3] | data[4] << 8) % 512);
    data += 5, size -= 5;
    if (size == 0 || data[0] != '{') {
        check_file(data, size, rows, cols);
        return 0;
    }
    /* a bare header: wrapped into a file with the stated number of zero data bytes */
    size_t total;
    uint8_t *buf = fuzz_wrap_safetensors(data, size, &total);
    if (!buf) return 0;
    check_file(buf, total, rows, cols);
    free(buf);
    return 0;
}
