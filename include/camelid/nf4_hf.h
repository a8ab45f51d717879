/* Hugging Face folders in the bitsandbytes 4-bit layout (FACTS 4.3), as transformers saves a model loaded with
 * BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"): each quantized linear W is stored as
 *   W.weight                                   U8 [(out*in + 1) / 2, 1]  packed NF4 codes
 *   W.weight.absmax                            U8 [n_blocks] (double quantization) or F32 [n_blocks]
 *   W.weight.quant_map                         F32 [16]   the NF4 values
 *   W.weight.nested_absmax                     F32 [ceil(n_blocks / 256)]       (double quantization)
 *   W.weight.nested_quant_map                  F32 [256]  the 8-bit dynamic map (double quantization)
 *   W.weight.quant_state.bitsandbytes__nf4     U8 [len]   JSON: quant_type, blocksize, dtype, shape, and
 *                                                         nested_blocksize, nested_dtype, nested_offset
 * with `quantization_config` in config.json. camelid opens such folders with cm_model_open (every linear may be
 * NF4 or 16/32-bit; the token embedding may not be NF4) and writes them with cm_model_save_nf4. */
#ifndef CAMELID_NF4_HF_H
#define CAMELID_NF4_HF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/model.h"
#include "camelid/status.h"
#include "camelid/tokenizer.h"

/* The JSON of W.weight.quant_state.bitsandbytes__nf4. */
typedef struct cm_nf4_quant_state {
    int blocksize;
    int64_t shape[2]; /* [out, in] */
    char dtype[16];   /* what was quantized and what dequantization gives: float32, float16 or bfloat16 */
    bool nested;      /* double quantization: the three nested_ fields below */
    int nested_blocksize;
    float nested_offset;
} cm_nf4_quant_state;

/* Parse the quant state (`len` bytes, not NUL-terminated). Strict, as bitsandbytes' QuantState.from_dict is:
 * an object with quant_type "nf4" (FP4 is refused by name), a valid blocksize, a float dtype, a 2-D shape of
 * positive sizes, the three nested fields all or none (nested_dtype "float32", a finite offset), no other key.
 * `what` names the tensor in the one-line errors. */
cm_status cm_nf4_quant_state_parse(const void *json, size_t len, const char *what, cm_nf4_quant_state *out);
/* The quant state as bitsandbytes writes it (json.dumps: ", " and ": " separators, the offset as Python's
 * repr of the float). A heap string. */
cm_status cm_nf4_quant_state_json(const cm_nf4_quant_state *qs, char **out);

typedef struct cm_nf4_save_stats {
    int n_nf4;    /* linears written as NF4 */
    int n_16bit;  /* tensors written as BF16 (embedding, head, norms) */
    uint64_t bytes; /* model.safetensors */
} cm_nf4_save_stats;

/* Write `m` as a bitsandbytes NF4 folder at `dir`: config.json (with quantization_config and torch_dtype
 * bfloat16), generation_config.json, model.safetensors with the seven linears of every decoder block in NF4
 * (blocks of 64, and with `double_quant` the scales double-quantized) and the embedding, head and norms in
 * BF16, and the tokenizer: with `tok`, files made from it; without, the input folder's tokenizer files
 * (tokenizer.json, tokenizer.model, tokenizer_config.json, special_tokens_map.json, ...) copied as they are.
 * Streams: a linear's rows are read a slice at a time from the (mapped) input, twice (its block scales first,
 * for the f32 tensors that come first in the file; then its codes, written as they are made), so a model larger
 * than memory can be quantized. Tensors are stored by alignment (f32, then BF16, then bytes), as the safetensors
 * library orders them. Rows are quantized on `n_threads`. q/k rows go to HF's
 * rotate-half order first when the input is interleaved (GGUF, llama2.c). `stats` may be NULL. */
cm_status cm_model_save_nf4(const cm_model *m, const cm_tokenizer *tok, const char *dir, bool double_quant,
                            int n_threads, cm_nf4_save_stats *stats);

#endif
