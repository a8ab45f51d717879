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
