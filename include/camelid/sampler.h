/* Sampling the next token from logits, with llama.cpp's chain order (FACTS 3):
 * repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw. Temperature <= 0 is greedy (argmax).
 * The random source is llama2.c's xorshift* (one coin per draw), so a seed reproduces llama2.c's samples
 * where the settings coincide (top-k 0, min-p 0, temperature 1). */
#ifndef CAMELID_SAMPLER_H
#define CAMELID_SAMPLER_H

#include <stdint.h>

#include "camelid/status.h"

typedef struct cm_sampler_params {
    float temperature;    /* default 0.8; <= 0 greedy */
    int top_k;            /* default 40; <= 0 off */
    float top_p;          /* default 0.95; >= 1 off */
    float min_p;          /* default 0.05; <= 0 off */
    float repeat_penalty; /* default 1.0 (off) */
    int repeat_last_n;    /* default 64; 0 off, -1 the whole history */
    uint64_t seed;
} cm_sampler_params;

cm_sampler_params cm_sampler_defaults(void);
cm_status cm_sampler_params_validate(const cm_sampler_params *p);

typedef struct cm_sampler cm_sampler;
cm_status cm_sampler_open(const cm_sampler_params *p, int vocab_size, cm_sampler **out);
void cm_sampler_close(cm_sampler *s);
/* Pick the next token. `logits` (vocab_size) is modified. `history` holds the tokens so far (for the
 * repetition penalty). */
int cm_sampler_sample(cm_sampler *s, float *logits, const int32_t *history, int n_history);
/* llama2.c's generator, exposed for tests: next float in [0, 1). */
float cm_rng_f32(uint64_t *state);

#endif
