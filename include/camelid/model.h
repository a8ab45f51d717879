/* A LLaMA-family model: its config and views of its weights, whatever format they came from (HF folder,
 * single .safetensors, GGUF, llama2.c .bin). Weights stay in the file's dtype (F32/F16/BF16) and, where the
 * file allows, are zero-copy views into a memory map. Norm vectors are converted to f32 at load. */
#ifndef CAMELID_MODEL_H
#define CAMELID_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "camelid/config.h"
#include "camelid/dtype.h"
#include "camelid/tokenizer.h"

/* A 2-D weight in PyTorch orientation: `rows` = out features, `cols` = in features, row-major; for
 * CM_DTYPE_NF4 `data` is a `const cm_nf4_weight *` (camelid/nf4.h: the packed codes and f32 block scales). */
typedef struct cm_weight {
    cm_dtype dtype;
    int64_t rows, cols;
    const void *data;
} cm_weight;

/* Row r of a weight of any dtype (NF4 included) as f32 [cols]. */
void cm_weight_row_to_f32(const cm_weight *w, int64_t r, float *dst);
/* The bytes a matmul reads for the weight (NF4: the packed codes and the f32 block scales). */
size_t cm_weight_nbytes(const cm_weight *w);

typedef struct cm_layer {
    const float *attn_norm; /* [dim] */
    cm_weight wq, wk, wv, wo;
    const float *ffn_norm; /* [dim] */
    cm_weight w_gate, w_up, w_down;
} cm_layer;

typedef enum {
    CM_FORMAT_LLAMA2C = 0,
    CM_FORMAT_GGUF,
    CM_FORMAT_HF,          /* a folder: config.json + *.safetensors */
    CM_FORMAT_SAFETENSORS, /* one .safetensors file, config.json beside it */
} cm_model_format;

typedef struct cm_model_storage cm_model_storage;

typedef struct cm_model {
    cm_config cfg;
    cm_model_format format;
    char *path;
    cm_weight tok_embd; /* [vocab, dim] */
    const float *out_norm;
    cm_weight output; /* [vocab, dim]; equals tok_embd when tied */
    cm_layer *layers; /* n_layers */
    /* Per-frequency RoPE divisors [head_dim/2] (GGUF rope_freqs.weight, Llama 3.1), or NULL. */
    const float *rope_freq_factors;
    /* The tokenizer the model carries (GGUF) or that sits beside it (tokenizer.model in the folder); NULL if
     * none was found. Owned by the model. */
    cm_tokenizer *tokenizer;
    cm_model_storage *storage; /* maps and buffers behind the views */
} cm_model;

const char *cm_model_format_name(cm_model_format f);

/* Open a model file or HF folder; the format is detected from the path and its contents. Every required
 * tensor is checked against the config's shapes. */
cm_status cm_model_open(const char *path, cm_model **out);
void cm_model_close(cm_model *m);

/* Format-specific loaders (cm_model_open dispatches to these). */
cm_status cm_model_open_llama2c(const char *path, cm_model **out);
cm_status cm_model_open_gguf(const char *path, cm_model **out);
cm_status cm_model_open_hf(const char *path, cm_model **out); /* folder or .safetensors file */
/* Parse a llama2.c checkpoint held in a caller-owned buffer (the fuzz target's entry). */
cm_status cm_model_parse_llama2c(const void *data, size_t size, const char *name, cm_model **out);

/* Writers. `tok` may be NULL (no tokenizer written; GGUF then says tokenizer.ggml.model = "no_vocab").
 * `dtype` is the weight dtype to write (F32/F16/BF16), or CM_DTYPE_COUNT to keep each tensor's own.
 * q/k rows are permuted between RoPE layouts as needed (FACTS 1.4). */
cm_status cm_model_save_hf(const cm_model *m, const cm_tokenizer *tok, const char *dir, cm_dtype dtype);
cm_status cm_model_save_gguf(const cm_model *m, const cm_tokenizer *tok, const char *path, cm_dtype dtype);

/* The tokenizer to use with `m`: the file or folder `path` if given, else the one `m` carries, else a
 * tokenizer.model or tokenizer.bin beside the model file. Fails if none is found or if its vocabulary does
 * not fit the model's. `*owned` receives a tokenizer the caller must close (NULL when `*tok` is m's own). */
cm_status cm_model_tokenizer(const cm_model *m, const char *path, const cm_tokenizer **tok,
                             cm_tokenizer **owned);

/* Every tensor of the model as stored in its file(s): name, dtype (with the format's own type name, e.g.
 * GGUF "Q8_0"), row-major shape and bytes. The callback returns nonzero to stop. */
typedef int (*cm_tensor_visitor)(void *user, const char *name, const char *dtype_name, int ndim,
                                 const int64_t *shape, size_t nbytes);
void cm_model_visit_tensors(const cm_model *m, cm_tensor_visitor visit, void *user);

/* A model of shape `c` with random F32 weights: N(0, 0.02) matrices (a seeded generator), norms 1.0, in
 * the interleaved RoPE layout (so q/k are permuted like any llama2.c/GGUF model when written to HF). */
cm_status cm_model_init_random(const cm_config *c, uint64_t seed, cm_model **out);

/* Parameter count (tied head counted once) and bytes of weights. */
int64_t cm_model_n_params(const cm_model *m);

/* Internal helpers shared by the loaders. */
/* Take ownership of a malloc'd buffer: freed with the model. */
cm_status cm_model_keep(cm_model *m, void *buffer);
/* Allocate an empty model with storage. */
cm_status cm_model_alloc(cm_model **out, const char *path, cm_model_format format);

#endif
