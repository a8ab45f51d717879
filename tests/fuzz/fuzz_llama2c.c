/* libFuzzer target: llama2.c checkpoints (v0 and v1 headers, sizes, classifier flag). A file that parses must
 * also run one forward step without faults. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/llama.h"
#include "camelid/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* the parser hands out float views into the buffer: give it an aligned copy as a mapped file would */
    void *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    cm_model *m;
    if (cm_model_parse_llama2c(copy, size, "fuzz.bin", &m) == CM_OK) {
        cm_state *s;
        if ((int64_t)m->cfg.dim * m->cfg.vocab_size < (1 << 22) && m->cfg.seq_len <= 4096 &&
            cm_state_open(m, 4, 2, 1, &s) == CM_OK) {
            float *logits = malloc((size_t)m->cfg.vocab_size * sizeof(float));
            int32_t tok[2] = {0, m->cfg.vocab_size - 1};
            if (logits) cm_forward(m, s, tok, 2, 0, logits, false);
            free(logits);
            cm_state_close(s);
        }
        cm_model_close(m);
    }
    free(copy);
    return 0;
}
