/* Shared by the format loaders: binding named tensors to a cm_model's weight slots with shape checks. */
#ifndef CAMELID_MODEL_INTERNAL_H
#define CAMELID_MODEL_INTERNAL_H

#include "camelid/model.h"
#include "camelid/tensor.h"

/* Tensor names of one naming scheme; layer names are printf formats taking the layer index. */
typedef struct cm_tensor_names {
    const char *embd, *norm, *output;
    const char *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm, *w_gate, *w_up, *w_down;
} cm_tensor_names;

extern const cm_tensor_names cm_names_hf;
extern const cm_tensor_names cm_names_gguf;

typedef const cm_tensor *(*cm_tensor_lookup)(void *ctx, const char *name);

/* Bind every weight of m (whose cfg is set) through `lookup`, checking dtype and shape; `what` names the
 * source in errors. With `output_optional`, a missing output tensor means a tied head. */
cm_status cm_model_bind(cm_model *m, const cm_tensor_names *names, cm_tensor_lookup lookup, void *ctx,
                        const char *what);

/* A bitsandbytes 4-bit linear (FACTS 4.3: `name` packed U8 plus `name.absmax`, `.quant_map`,
 * `.nested_absmax`, `.nested_quant_map`, `.quant_state.bitsandbytes__nf4`), checked against [rows, cols] and
 * bound as an NF4 weight whose scales are dequantized into a buffer kept by m (src/format/nf4_hf.c). *bound is
 * false, and nothing is done, when `name` has no quantization state; a state where none may be (`nf4_ok`
 * false), FP4, or any inconsistency is an error naming the tensor. */
cm_status cm_model_bind_nf4(cm_model *m, cm_tensor_lookup lookup, void *ctx, const char *name, int64_t rows,
                            int64_t cols, bool nf4_ok, const char *what, cm_weight *w, bool *bound);
/* config.json's quantization_config, if any, must be bitsandbytes 4-bit NF4 (src/format/nf4_hf.c). */
cm_status cm_nf4_check_config(const char *config_path);

/* HF writing shared with the NF4 writer (src/format/hf_model.c): the config as config.json should state it
 * (rotate-half RoPE, a GGUF's rope_freqs as llama3 scaling), and the tokenizer files for `tok`. */
cm_status cm_hf_config_for_save(const cm_model *m, cm_config *out);
cm_status cm_hf_write_tokenizer_files(const cm_model *m, const cm_tokenizer *tok, const char *dir);
cm_status cm_hf_write_generation_config(const cm_model *m, const char *dir);

/* Keep a memory map / parsed file alive as long as the model. */
struct cm_mmap;
struct cm_gguf;
struct cm_safetensors;
cm_status cm_model_keep_mmap(cm_model *m, struct cm_mmap *map);
cm_status cm_model_keep_gguf(cm_model *m, struct cm_gguf *g);
cm_status cm_model_keep_safetensors(cm_model *m, struct cm_safetensors *st);

/* Copy a float vector of any float dtype into an owned f32 buffer. */
cm_status cm_model_f32_copy(cm_model *m, const void *data, cm_dtype dtype, size_t n, const float **out);

/* Reorder q/k rows of one weight between RoPE layouts (FACTS 1.4): `rows_per_head` = head_dim, over
 * `n_heads` heads, each row `row_bytes` long. to_half: interleaved -> rotate-half (HF); else the reverse. */
void cm_permute_qk_rows(const void *src, void *dst, int n_heads, int head_dim, size_t row_bytes,
                        bool to_half);

/* The bytes of a weight as a writer should store them: converted to `dtype`, and with q/k rows permuted
 * (FACTS 1.4) over `permute_heads` heads when that is > 0. Returns the source pointer when nothing changes
 * (*owned NULL), else a malloc'd buffer in *owned. */
cm_status cm_model_export_weight(const cm_weight *w, cm_dtype dtype, int permute_heads, int head_dim,
                                 bool to_half, const void **data, void **owned, size_t *nbytes);
/* "float32", "float16", "bfloat16" */
const char *cm_torch_dtype_name(cm_dtype t);

#endif
