/* The hyper-parameters of a LLaMA-family model, whatever file they came from, and their HF config.json
 * form (FACTS 1.2). */
#ifndef CAMELID_CONFIG_H
#define CAMELID_CONFIG_H

#include <stdbool.h>

#include "camelid/status.h"

/* Which pairs of a head's dimensions RoPE rotates (FACTS 1.4). */
typedef enum {
    CM_ROPE_INTERLEAVED = 0, /* (2i, 2i+1): Meta, llama2.c, GGUF llama */
    CM_ROPE_HALF = 1,        /* (i, i + hd/2): HF transformers (rotate_half) */
} cm_rope_layout;

typedef enum {
    CM_ROPE_SCALING_NONE = 0,
    CM_ROPE_SCALING_LINEAR,
    CM_ROPE_SCALING_LLAMA3,
} cm_rope_scaling;

#define CM_MAX_EOS 8

typedef struct cm_config {
    int dim;        /* hidden_size */
    int hidden_dim; /* intermediate_size */
    int n_layers;   /* num_hidden_layers */
    int n_heads;    /* num_attention_heads */
    int n_kv_heads; /* num_key_value_heads */
    int head_dim;   /* dim / n_heads unless set */
    int vocab_size; /* rows of the embedding */
    int seq_len;    /* max_position_embeddings */
    float norm_eps; /* rms_norm_eps */
    float rope_theta;
    cm_rope_scaling rope_scaling;
    float rope_factor;          /* linear and llama3 */
    float rope_low_freq_factor; /* llama3 */
    float rope_high_freq_factor;
    int rope_original_max_pos;
    cm_rope_layout rope_layout;
    bool tie_embeddings;
    int bos_id; /* -1 if none */
    int eos_ids[CM_MAX_EOS];
    int n_eos;
} cm_config;

/* transformers' LlamaConfig defaults (FACTS 1.2). */
void cm_config_defaults_hf(cm_config *c);
/* Check that the sizes are plausible and consistent (nonzero heads, dim divisible, ...); `what` names the
 * source (file) in the error. */
cm_status cm_config_validate(const cm_config *c, const char *what);

/* Parse an HF config.json text (LlamaForCausalLM / model_type "llama" or "mistral"); `path` names it in
 * errors. Sets rope_layout to CM_ROPE_HALF. Reads rope_theta / rope_scaling (v4) or rope_parameters (v5). */
cm_status cm_config_parse_hf_json(const char *json, size_t len, const char *path, cm_config *out);
cm_status cm_config_load_hf(const char *config_json_path, cm_config *out);
/* Render the config.json transformers needs (FACTS 1.2), with torch_dtype `torch_dtype` ("float32",
 * "float16", "bfloat16"). Returns a heap string. */
cm_status cm_config_to_hf_json(const cm_config *c, const char *torch_dtype, char **out);

/* The named shapes of FACTS 1.7 (stories260K, stories15M, stories42M, stories110M, smollm-135m,
 * tinyllama-1.1b, llama2-7b): RMSNorm eps 1e-5, RoPE theta 10000, interleaved layout, BOS 1 / EOS 2 (smollm:
 * 0 / 0). CM_ERR_ARG naming the known shapes for any other name. */
cm_status cm_config_from_shape(const char *name, cm_config *out);
/* Comma-separated list of the shape names. */
const char *cm_config_shape_names(void);

/* The RoPE inverse frequency for pair i of a head (0 <= i < head_dim/2), with the configured scaling. */
float cm_config_rope_inv_freq(const cm_config *c, int i);

#endif
