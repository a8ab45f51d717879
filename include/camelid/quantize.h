/* Quantizing a model's weights to ggml block types (FACTS 4.1), with llama-quantize's choice of types per
 * tensor, so that `camelid quantize` writes the same tensor bytes llama-quantize does. */
#ifndef CAMELID_QUANTIZE_H
#define CAMELID_QUANTIZE_H

#include <stdbool.h>

#include "camelid/dtype.h"
#include "camelid/model.h"

/* The type a 2-D weight gets when a model is quantized to `type` (Q8_0 or Q4_0):
 *  - pure: `type` for every weight whose rows (cols) are a multiple of 32;
 *  - else llama-quantize's default mix: the output head (or, when tied, the token embedding that serves as
 * it) becomes Q6_K for Q4_0 when its rows are a multiple of 256 (else Q8_0), and stays Q8_0 for Q8_0; every
 *    other weight gets `type`.
 * A weight whose rows are not a multiple of the chosen block keeps `current` (llama-quantize refuses such a
 * tensor; camelid leaves it as it is, e.g. stories260K's ffn_down with rows of 172). */
cm_dtype cm_quantize_choose(cm_dtype type, bool pure, bool is_output, int64_t cols, cm_dtype current);

typedef struct cm_quantize_stats {
    int n_q8_0, n_q4_0, n_q6_K, n_kept; /* weights per resulting type; kept = left as they were */
} cm_quantize_stats;

/* Quantize every 2-D weight of `m` in memory (new buffers owned by the model) to the types
 * cm_quantize_choose gives; weights already of that type are left alone, quantized ones of another type are
 * dequantized first. Rows are spread over `n_threads`. `stats` may be NULL. */
cm_status cm_model_quantize(cm_model *m, cm_dtype type, bool pure, int n_threads, cm_quantize_stats *stats);

#endif
