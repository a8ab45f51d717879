/* Helpers for the tests that run a model (check.h holds the harness itself). Header-only: every
 * tests/unit/test_*.c is its own executable, so a shared .c would need its own rule in tests/CMakeLists.txt.
 */
#ifndef CAMELID_TEST_UTIL_H
#define CAMELID_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "camelid/llama.h"
#include "camelid/model.h"
#include "check.h"

/* Mean log-likelihood per predicted token of `ids` (windows of the model's context, each from position 0):
 * the measure by which test_quant and test_nf4 bound how much quantization moves a model. */
static inline double cm_test_mean_loglik(const cm_model *m, const int32_t *ids, int n) {
    const int ctx = m->cfg.seq_len, V = m->cfg.vocab_size;
    cm_state *s;
    CHECK_OK(cm_state_open(m, ctx, ctx, 2, &s));
    float *logits = malloc((size_t)ctx * V * sizeof(float));
    double sum = 0;
    long count = 0;
    for (int w0 = 0; w0 < n; w0 += ctx) {
        int len = n - w0 < ctx ? n - w0 : ctx;
        CHECK_OK(cm_forward(m, s, ids + w0, len, 0, logits, true));
        for (int t = 0; t + 1 < len; t++) {
            const float *l = logits + (size_t)t * V;
            double mx = l[0], z = 0;
            for (int v = 1; v < V; v++) mx = fmax(mx, l[v]);
            for (int v = 0; v < V; v++) z += exp(l[v] - mx);
            sum += l[ids[w0 + t + 1]] - mx - log(z);
            count++;
        }
    }
    free(logits);
    cm_state_close(s);
    return sum / (double)count;
}

#endif
