/* libFuzzer: llama2.c tokenizer.bin parser (read to the end of the file, and with a small vocab size). */
#include <stdint.h>
#include <stdlib.h>

#include "camelid/tokenizer.h"
#include "fuzz_util.h"

static void exercise(cm_tokenizer *t) {
    static const char text[] = "Once upon a time, 中文 🦙";
    fuzz_encode_decode(t, text, sizeof text - 1, false);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cm_tokenizer *t = NULL;
    if (cm_tokenizer_parse_llama2c(data, size, 0, "fuzz.bin", &t) == CM_OK) {
        exercise(t);
        cm_tokenizer_close(t);
    }
    if (cm_tokenizer_parse_llama2c(data, size, 3, "fuzz3.bin", &t) == CM_OK) {
        exercise(t);
        cm_tokenizer_close(t);
    }
    return 0;
}
