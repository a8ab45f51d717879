/* Model hyper-parameters: transformers' LlamaConfig defaults, sanity checks, and RoPE frequencies. */
#include "camelid/config.h"

#include <math.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* Upper bounds well above any real LLaMA-family model; they keep later size arithmetic far from overflow. */
#define CM_CFG_MAX_DIM (1 << 20)
#define CM_CFG_MAX_HIDDEN (1 << 22)
#define CM_CFG_MAX_LAYERS 4096
#define CM_CFG_MAX_HEADS 4096
#define CM_CFG_MAX_HEAD_DIM (1 << 14)
#define CM_CFG_MAX_VOCAB (1 << 24)
#define CM_CFG_MAX_SEQ (1 << 24)

void cm_config_defaults_hf(cm_config *c) {
    memset(c, 0, sizeof *c);
    c->dim = 4096;
    c->hidden_dim = 11008;
    c->n_layers = 32;
    c->n_heads = 32;
    c->n_kv_heads = 32;
    c->head_dim = 128;
    c->vocab_size = 32000;
    c->seq_len = 2048;
    c->norm_eps = 1e-6f;
    c->rope_theta = 10000.0f;
    c->rope_scaling = CM_ROPE_SCALING_NONE;
    c->rope_factor = 1.0f;
    /* the published llama3 values; only used when rope_scaling is LLAMA3 */
    c->rope_low_freq_factor = 1.0f;
    c->rope_high_freq_factor = 4.0f;
    c->rope_original_max_pos = 8192;
    c->rope_layout = CM_ROPE_HALF;
    c->tie_embeddings = false;
    c->bos_id = 1;
    c->eos_ids[0] = 2;
    c->n_eos = 1;
}

static cm_status bad(const char *what, const char *field, long long v, const char *why) {
    return cm_error(CM_ERR_FORMAT, "%s: %s = %lld %s", what, field, v, why);
}

static cm_status check_range(const char *what, const char *field, long long v, long long lo, long long hi) {
    if (v < lo || v > hi)
        return cm_error(CM_ERR_FORMAT, "%s: %s = %lld is out of range (expected %lld..%lld)", what, field, v,
                        lo, hi);
    return CM_OK;
}

static cm_status check_positive(const char *what, const char *field, float v) {
    if (!(v > 0.0f) || !isfinite(v))
        return cm_error(CM_ERR_FORMAT, "%s: %s = %g must be a positive finite number", what, field,
                        (double)v);
    return CM_OK;
}

cm_status cm_config_validate(const cm_config *c, const char *what) {
    if (!what) what = "config";
    CM_TRY(check_range(what, "dim (hidden_size)", c->dim, 1, CM_CFG_MAX_DIM));
    CM_TRY(check_range(what, "hidden_dim (intermediate_size)", c->hidden_dim, 1, CM_CFG_MAX_HIDDEN));
    CM_TRY(check_range(what, "n_layers (num_hidden_layers)", c->n_layers, 1, CM_CFG_MAX_LAYERS));
    CM_TRY(check_range(what, "n_heads (num_attention_heads)", c->n_heads, 1, CM_CFG_MAX_HEADS));
    CM_TRY(check_range(what, "n_kv_heads (num_key_value_heads)", c->n_kv_heads, 1, c->n_heads));
    if (c->n_heads % c->n_kv_heads != 0)
        return cm_error(CM_ERR_FORMAT, "%s: n_heads = %d is not a multiple of n_kv_heads = %d", what,
                        c->n_heads, c->n_kv_heads);
    CM_TRY(check_range(what, "head_dim", c->head_dim, 2, CM_CFG_MAX_HEAD_DIM));
    if (c->head_dim % 2 != 0) return bad(what, "head_dim", c->head_dim, "must be even for RoPE");
    if ((long long)c->n_heads * c->head_dim > CM_CFG_MAX_HIDDEN)
        return cm_error(CM_ERR_FORMAT, "%s: n_heads x head_dim = %lld is too large", what,
                        (long long)c->n_heads * c->head_dim);
    CM_TRY(check_range(what, "vocab_size", c->vocab_size, 1, CM_CFG_MAX_VOCAB));
    CM_TRY(check_range(what, "seq_len (max_position_embeddings)", c->seq_len, 1, CM_CFG_MAX_SEQ));
    CM_TRY(check_positive(what, "norm_eps (rms_norm_eps)", c->norm_eps));
    if (c->norm_eps >= 1.0f)
        return cm_error(CM_ERR_FORMAT, "%s: norm_eps = %g is implausibly large", what, (double)c->norm_eps);
    CM_TRY(check_positive(what, "rope_theta", c->rope_theta));
    switch (c->rope_scaling) {
    case CM_ROPE_SCALING_NONE:
        break;
    case CM_ROPE_SCALING_LINEAR:
        CM_TRY(check_positive(what, "rope_scaling.factor", c->rope_factor));
        break;
    case CM_ROPE_SCALING_LLAMA3:
        CM_TRY(check_positive(what, "rope_scaling.factor", c->rope_factor));
        CM_TRY(check_positive(what, "rope_scaling.low_freq_factor", c->rope_low_freq_factor));
        CM_TRY(check_positive(what, "rope_scaling.high_freq_factor", c->rope_high_freq_factor));
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return cm_error(CM_ERR_FORMAT,
                            "%s: rope_scaling.high_freq_factor = %g must exceed low_freq_factor = %g", what,
                            (double)c->rope_high_freq_factor, (double)c->rope_low_freq_factor);
        CM_TRY(check_range(what, "rope_scaling.original_max_position_embeddings", c->rope_original_max_pos, 1,
                           CM_CFG_MAX_SEQ));
        break;
    default:
        return bad(what, "rope_scaling", (long long)c->rope_scaling, "is not a known kind");
    }
    if (c->rope_layout != CM_ROPE_INTERLEAVED && c->rope_layout != CM_ROPE_HALF)
        return bad(what, "rope_layout", (long long)c->rope_layout, "is not a known layout");
    CM_TRY(check_range(what, "bos_id (bos_token_id)", c->bos_id, -1, c->vocab_size - 1));
    CM_TRY(check_range(what, "number of eos ids", c->n_eos, 0, CM_MAX_EOS));
    for (int i = 0; i < c->n_eos; i++)
        CM_TRY(check_range(what, "eos id (eos_token_id)", c->eos_ids[i], 0, c->vocab_size - 1));
    return CM_OK;
}

float cm_config_rope_inv_freq(const cm_config *c, int i) {
    double inv = 1.0 / pow((double)c->rope_theta, (2.0 * i) / (double)c->head_dim);
    switch (c->rope_scaling) {
    case CM_ROPE_SCALING_LINEAR:
        inv /= (double)c->rope_factor;
        break;
    case CM_ROPE_SCALING_LLAMA3: {
        /* transformers modeling_rope_utils.py::_compute_llama3_parameters */
        double factor = c->rope_factor, low = c->rope_low_freq_factor, high = c->rope_high_freq_factor;
        double orig = c->rope_original_max_pos;
        double low_freq_wavelen = orig / low, high_freq_wavelen = orig / high;
        double wavelen = 2.0 * M_PI / inv;
        if (wavelen > low_freq_wavelen) {
            inv = inv / factor;
        } else if (wavelen < high_freq_wavelen) {
            /* high frequency: unchanged */
        } else {
            double smooth = (orig / wavelen - low) / (high - low);
            inv = (1.0 - smooth) * inv / factor + smooth * inv;
        }
        break;
    }
    default:
        break;
    }
    return (float)inv;
}
