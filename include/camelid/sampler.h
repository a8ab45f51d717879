/* Sampling the next token from logits. The repetition penalty comes first, then the stages in `order`
 * (llama.cpp's default chain, FACTS 3: top-k -> top-p -> min-p -> temperature), then one draw. Temperature
 * <= 0 is greedy (argmax). The random source is llama2.c's xorshift* (one coin per draw) and top-p keeps
 * llama2.c's arithmetic, so a seed reproduces llama2.c's samples with the order "temperature;top_p" and
 * top-k / min-p off. */
#ifndef CAMELID_SAMPLER_H
#define CAMELID_SAMPLER_H

#include <stdint.h>

#include "camelid/status.h"

typedef enum {
    CM_SAMPLE_TOP_K = 0,
    CM_SAMPLE_TOP_P,
    CM_SAMPLE_MIN_P,
    CM_SAMPLE_TEMPERATURE,
} cm_sample_stage;

#define CM_MAX_SAMPLE_STAGES 8

typedef struct cm_sampler_params {
    float temperature;    /* default 0.8; <= 0 greedy */
    int top_k;            /* default 40; <= 0 off */
    float top_p;          /* default 0.95; >= 1 off */
    float min_p;          /* default 0.05; <= 0 off */
    float repeat_penalty; /* default 1.0 (off) */
    int repeat_last_n;    /* default 64; 0 off, -1 the whole history */
    uint64_t seed;
    cm_sample_stage order[CM_MAX_SAMPLE_STAGES]; /* default: top-k, top-p, min-p, temperature */
    int n_order;
} cm_sampler_params;

/* Parse an order such as "top_k;top_p;min_p;temperature" (',' or ';' between names; llama.cpp's spellings
 * top_k/top-k, top_p/top-p, min_p/min-p, temperature/temp). */
cm_status cm_sampler_parse_order(const char *text, cm_sampler_params *p);

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
