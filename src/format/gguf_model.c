/* LLaMA models in GGUF (FACTS 1.5): hyper-parameters from the `llama.*` keys, tensors named token_embd /
 * blk.N.* / output, RoPE interleaved, the tokenizer from tokenizer.ggml.*. Writing produces files llama.cpp
 * loads. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/gguf.h"
#include "model/model_internal.h"

static const cm_tensor *gguf_lookup(void *ctx, const char *name) {
    return cm_gguf_find_tensor(ctx, name);
}

/* Read an optional integer key `<arch>.<suffix>`; keeps *out when absent. */
static cm_status opt_u32(const cm_gguf *g, const char *arch, const char *suffix, int *out) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (cm_gguf_find(g, key) < 0) return CM_OK;
    uint32_t v;
    CM_TRY(cm_gguf_get_u32(g, key, &v));
    if (v > (uint32_t)INT32_MAX)
        return cm_error(CM_ERR_FORMAT, "%s: key %s = %u is too large", cm_gguf_path(g), key, v);
    *out = (int)v;
    return CM_OK;
}

static cm_status req_u32(const cm_gguf *g, const char *arch, const char *suffix, int *out) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (cm_gguf_find(g, key) < 0)
        return cm_error(CM_ERR_FORMAT, "%s: required key %s is missing", cm_gguf_path(g), key);
    return opt_u32(g, arch, suffix, out);
}

static cm_status opt_f32(const cm_gguf *g, const char *arch, const char *suffix, float *out) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (cm_gguf_find(g, key) < 0) return CM_OK;
    return cm_gguf_get_f32(g, key, out);
}

static cm_status read_config(const cm_gguf *g, cm_config *c) {
    const char *path = cm_gguf_path(g), *arch_s;
    size_t arch_len;
    if (cm_gguf_get_str(g, "general.architecture", &arch_s, &arch_len) != CM_OK)
        return cm_error(CM_ERR_FORMAT, "%s: general.architecture is missing", path);
    char arch[64];
    if (arch_len >= sizeof arch) return cm_error(CM_ERR_FORMAT, "%s: general.architecture is too long", path);
    memcpy(arch, arch_s, arch_len);
    arch[arch_len] = 0;
    if (strcmp(arch, "llama") != 0)
        return cm_error(CM_ERR_UNSUPPORTED, "%s: architecture \"%s\" is not supported (only llama)", path,
                        arch);
    memset(c, 0, sizeof *c);
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->rope_layout = CM_ROPE_INTERLEAVED;
    c->seq_len = 2048;
    CM_TRY(req_u32(g, arch, "embedding_length", &c->dim));
    CM_TRY(req_u32(g, arch, "feed_forward_length", &c->hidden_dim));
    CM_TRY(req_u32(g, arch, "block_count", &c->n_layers));
    CM_TRY(req_u32(g, arch, "attention.head_count", &c->n_heads));
    c->n_kv_heads = c->n_heads;
    CM_TRY(opt_u32(g, arch, "attention.head_count_kv", &c->n_kv_heads));
    CM_TRY(opt_u32(g, arch, "context_length", &c->seq_len));
    CM_TRY(opt_f32(g, arch, "attention.layer_norm_rms_epsilon", &c->norm_eps));
    CM_TRY(opt_f32(g, arch, "rope.freq_base", &c->rope_theta));
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    CM_TRY(opt_u32(g, arch, "attention.key_length", &c->head_dim));
    int rope_dims = c->head_dim;
    CM_TRY(opt_u32(g, arch, "rope.dimension_count", &rope_dims));
    if (rope_dims != c->head_dim)
        return cm_error(CM_ERR_UNSUPPORTED,
                        "%s: %s.rope.dimension_count %d differs from the head size %d (partial "
                        "rotary embeddings are not supported)",
                        path, arch, rope_dims, c->head_dim);
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (cm_gguf_find(g, key) >= 0) {
        const char *s;
        size_t n;
        CM_TRY(cm_gguf_get_str(g, key, &s, &n));
        if (n == 6 && !memcmp(s, "linear", 6)) {
            c->rope_scaling = CM_ROPE_SCALING_LINEAR;
            c->rope_factor = 1.0f;
            CM_TRY(opt_f32(g, arch, "rope.scaling.factor", &c->rope_factor));
        } else if (!(n == 4 && !memcmp(s, "none", 4))) {
            return cm_error(CM_ERR_UNSUPPORTED, "%s: %s \"%.*s\" is not supported", path, key, (int)n, s);
        }
    }
    /* camelid records llama3-style scaling by its parameters too (llama.cpp reads only rope_freqs.weight), so
     * that a GGUF converts back to an HF config.json without loss */
    if (cm_gguf_find(g, "camelid.rope.llama3.factor") >= 0) {
        c->rope_scaling = CM_ROPE_SCALING_LLAMA3;
        CM_TRY(cm_gguf_get_f32(g, "camelid.rope.llama3.factor", &c->rope_factor));
        CM_TRY(cm_gguf_get_f32(g, "camelid.rope.llama3.low_freq_factor", &c->rope_low_freq_factor));
        CM_TRY(cm_gguf_get_f32(g, "camelid.rope.llama3.high_freq_factor", &c->rope_high_freq_factor));
        uint32_t orig;
        CM_TRY(cm_gguf_get_u32(g, "camelid.rope.llama3.original_context_length", &orig));
        c->rope_original_max_pos = (int)orig;
    }
    float scale_linear = 0.0f;
    CM_TRY(opt_f32(g, arch, "rope.scale_linear", &scale_linear));
    if (scale_linear > 0.0f && scale_linear != 1.0f) {
        c->rope_scaling = CM_ROPE_SCALING_LINEAR;
        c->rope_factor = scale_linear;
    }
    if (c->rope_scaling == CM_ROPE_SCALING_LINEAR && !(c->rope_factor > 0.0f))
        return cm_error(CM_ERR_FORMAT, "%s: rope scaling factor %g is not positive", path, c->rope_factor);
    /* vocabulary: llama.vocab_size, else the embedding's rows */
    const cm_tensor *embd = cm_gguf_find_tensor(g, "token_embd.weight");
    c->vocab_size = embd && embd->ndim == 2 ? (int)embd->shape[0] : 0;
    CM_TRY(opt_u32(g, arch, "vocab_size", &c->vocab_size));
    c->tie_embeddings = cm_gguf_find_tensor(g, "output.weight") == NULL;
    c->bos_id = -1;
    uint32_t id;
    if (cm_gguf_find(g, "tokenizer.ggml.bos_token_id") >= 0) {
        CM_TRY(cm_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &id));
        c->bos_id = (int)id;
    }
    if (cm_gguf_find(g, "tokenizer.ggml.eos_token_id") >= 0) {
        CM_TRY(cm_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &id));
        c->eos_ids[c->n_eos++] = (int)id;
    }
    if (cm_gguf_find(g, "tokenizer.ggml.eot_token_id") >= 0 &&
        cm_gguf_get_u32(g, "tokenizer.ggml.eot_token_id", &id) == CM_OK && c->n_eos < CM_MAX_EOS &&
        (c->n_eos == 0 || c->eos_ids[0] != (int)id))
        c->eos_ids[c->n_eos++] = (int)id;
    return cm_config_validate(c, path);
}

cm_status cm_model_open_gguf(const char *path, cm_model **out) {
    *out = NULL;
    cm_gguf *g;
    CM_TRY(cm_gguf_open(path, &g));
    cm_model *m;
    cm_status st = cm_model_alloc(&m, path, CM_FORMAT_GGUF);
    if (st != CM_OK) {
        cm_gguf_close(g);
        return st;
    }
    if ((st = cm_model_keep_gguf(m, g)) != CM_OK) goto fail;
    if ((st = read_config(g, &m->cfg)) != CM_OK) goto fail;
    if (cm_gguf_tensor_count(g) == 0) {
        st = cm_error(CM_ERR_FORMAT,
                      "%s: the file holds no tensors (a vocabulary-only GGUF is a tokenizer, not a "
                      "model)",
                      path);
        goto fail;
    }
    if ((st = cm_model_bind(m, &cm_names_gguf, gguf_lookup, g, path)) != CM_OK) goto fail;
    const cm_tensor *rf = cm_gguf_find_tensor(g, "rope_freqs.weight");
    if (rf && m->cfg.rope_scaling != CM_ROPE_SCALING_LLAMA3) {
        if (!(rf->ndim == 1 && rf->shape[0] == m->cfg.head_dim / 2 && cm_dtype_is_float(rf->dtype))) {
            st = cm_error(CM_ERR_FORMAT, "%s: rope_freqs.weight must be a float vector of %d", path,
                          m->cfg.head_dim / 2);
            goto fail;
        }
        if ((st = cm_model_f32_copy(m, rf->data, rf->dtype, (size_t)rf->shape[0], &m->rope_freq_factors)) !=
            CM_OK)
            goto fail;
    }
    st = cm_tokenizer_from_gguf(g, &m->tokenizer);
    if (st == CM_ERR_NOT_FOUND) st = CM_OK;
    if (st != CM_OK) goto fail;
    *out = m;
    return CM_OK;
fail:
    cm_model_close(m);
    return st;
}

/* ---- writing ---- */

static cm_status add_weight(cm_gguf_writer *w, const char *name, const cm_weight *wt, cm_dtype dtype,
                            int permute_heads, int head_dim) {
    const void *data;
    void *owned;
    size_t nbytes;
    cm_dtype out = dtype == CM_DTYPE_COUNT ? wt->dtype : dtype;
    if (out == CM_DTYPE_NF4) out = CM_DTYPE_F32; /* GGUF has no NF4: its dequantized values, exactly */
    CM_TRY(cm_model_export_weight(wt, out, permute_heads, head_dim, false, &data, &owned, &nbytes));
    int64_t shape[2] = {wt->rows, wt->cols};
    if (owned) return cm_gguf_writer_add_tensor_owned(w, name, out, 2, shape, owned, nbytes);
    return cm_gguf_writer_add_tensor(w, name, out, 2, shape, data, nbytes);
}

static cm_status add_f32_vector(cm_gguf_writer *w, const char *name, const float *v, int n) {
    int64_t shape[1] = {n};
    return cm_gguf_writer_add_tensor(w, name, CM_DTYPE_F32, 1, shape, v, (size_t)n * sizeof(float));
}

/* llama_ftype: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q8_0 7, MOSTLY_Q6_K 18, MOSTLY_BF16 32 */
static uint32_t file_type_of(cm_dtype t) {
    switch (t) {
    case CM_DTYPE_F16: return 1;
    case CM_DTYPE_BF16: return 32;
    case CM_DTYPE_Q4_0: return 2;
    case CM_DTYPE_Q8_0: return 7;
    case CM_DTYPE_Q6_K: return 18;
    default: return 0;
    }
}

cm_status cm_model_save_gguf(const cm_model *m, const cm_tokenizer *tok, const char *path, cm_dtype dtype) {
    const cm_config *c = &m->cfg;
    bool permute = c->rope_layout == CM_ROPE_HALF;
    cm_gguf_writer *w;
    CM_TRY(cm_gguf_writer_open(path, &w));
    cm_status st = CM_OK;
    float *rope_factors = NULL;
    char name[256];
#define TRY(expr)                                                                                            \
    do {                                                                                                     \
        if ((st = (expr)) != CM_OK) goto fail;                                                               \
    } while (0)
    TRY(cm_gguf_writer_set_str(w, "general.architecture", "llama"));
    TRY(cm_gguf_writer_set_str(w, "general.name", "camelid export"));
    /* the file type names the bulk of the weights: a layer's (a quantized file's head may differ) */
    cm_dtype bulk = c->n_layers > 0 ? m->layers[0].w_gate.dtype : m->tok_embd.dtype;
    TRY(cm_gguf_writer_set_u32(w, "general.file_type", file_type_of(dtype == CM_DTYPE_COUNT ? bulk : dtype)));
    if (cm_dtype_is_quant(dtype == CM_DTYPE_COUNT ? bulk : dtype))
        TRY(cm_gguf_writer_set_u32(w, "general.quantization_version", 2));
    TRY(cm_gguf_writer_set_u32(w, "llama.vocab_size", (uint32_t)c->vocab_size));
    TRY(cm_gguf_writer_set_u32(w, "llama.context_length", (uint32_t)c->seq_len));
    TRY(cm_gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)c->dim));
    TRY(cm_gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)c->hidden_dim));
    TRY(cm_gguf_writer_set_u32(w, "llama.block_count", (uint32_t)c->n_layers));
    TRY(cm_gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)c->n_heads));
    TRY(cm_gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads));
    TRY(cm_gguf_writer_set_u32(w, "llama.rope.dimension_count", (uint32_t)c->head_dim));
    if (c->head_dim * c->n_heads != c->dim) {
        TRY(cm_gguf_writer_set_u32(w, "llama.attention.key_length", (uint32_t)c->head_dim));
        TRY(cm_gguf_writer_set_u32(w, "llama.attention.value_length", (uint32_t)c->head_dim));
    }
    TRY(cm_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps));
    TRY(cm_gguf_writer_set_f32(w, "llama.rope.freq_base", c->rope_theta));
    if (c->rope_scaling == CM_ROPE_SCALING_LINEAR) {
        TRY(cm_gguf_writer_set_str(w, "llama.rope.scaling.type", "linear"));
        TRY(cm_gguf_writer_set_f32(w, "llama.rope.scaling.factor", c->rope_factor));
    }
    if (tok) {
        TRY(cm_tokenizer_write_gguf(tok, w));
    } else {
        TRY(cm_gguf_writer_set_str(w, "tokenizer.ggml.model", "no_vocab"));
    }

    TRY(add_weight(w, cm_names_gguf.embd, &m->tok_embd, dtype, 0, 0));
    TRY(add_f32_vector(w, cm_names_gguf.norm, m->out_norm, c->dim));
    if (!c->tie_embeddings) TRY(add_weight(w, cm_names_gguf.output, &m->output, dtype, 0, 0));
    /* llama3-style scaling has no GGUF key: llama.cpp reads it as per-frequency divisors */
    int half = c->head_dim / 2;
    if (c->rope_scaling == CM_ROPE_SCALING_LLAMA3 || m->rope_freq_factors) {
        rope_factors = malloc((size_t)half * sizeof(float));
        if (!rope_factors) {
            st = cm_error(CM_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (int i = 0; i < half; i++) {
            double base = 1.0 / pow((double)c->rope_theta, (double)(2 * i) / c->head_dim);
            double scaled = c->rope_scaling == CM_ROPE_SCALING_LLAMA3 ? cm_config_rope_inv_freq(c, i) : base;
            double extra = m->rope_freq_factors ? m->rope_freq_factors[i] : 1.0;
            rope_factors[i] = (float)(base / scaled * extra);
        }
        TRY(add_f32_vector(w, "rope_freqs.weight", rope_factors, half));
    }
    if (c->rope_scaling == CM_ROPE_SCALING_LLAMA3) {
        TRY(cm_gguf_writer_set_f32(w, "camelid.rope.llama3.factor", c->rope_factor));
        TRY(cm_gguf_writer_set_f32(w, "camelid.rope.llama3.low_freq_factor", c->rope_low_freq_factor));
        TRY(cm_gguf_writer_set_f32(w, "camelid.rope.llama3.high_freq_factor", c->rope_high_freq_factor));
        TRY(cm_gguf_writer_set_u32(w, "camelid.rope.llama3.original_context_length",
                                   (uint32_t)c->rope_original_max_pos));
    }
    for (int l = 0; l < c->n_layers; l++) {
        const cm_layer *L = &m->layers[l];
#define N(fmt) (snprintf(name, sizeof name, fmt, l), name)
        TRY(add_f32_vector(w, N(cm_names_gguf.attn_norm), L->attn_norm, c->dim));
        TRY(add_weight(w, N(cm_names_gguf.wq), &L->wq, dtype, permute ? c->n_heads : 0, c->head_dim));
        TRY(add_weight(w, N(cm_names_gguf.wk), &L->wk, dtype, permute ? c->n_kv_heads : 0, c->head_dim));
        TRY(add_weight(w, N(cm_names_gguf.wv), &L->wv, dtype, 0, 0));
        TRY(add_weight(w, N(cm_names_gguf.wo), &L->wo, dtype, 0, 0));
        TRY(add_f32_vector(w, N(cm_names_gguf.ffn_norm), L->ffn_norm, c->dim));
        TRY(add_weight(w, N(cm_names_gguf.w_gate), &L->w_gate, dtype, 0, 0));
        TRY(add_weight(w, N(cm_names_gguf.w_up), &L->w_up, dtype, 0, 0));
        TRY(add_weight(w, N(cm_names_gguf.w_down), &L->w_down, dtype, 0, 0));
#undef N
    }
#undef TRY
    st = cm_gguf_writer_commit(w);
    free(rope_factors);
    return st;
fail:
    cm_gguf_writer_abort(w);
    free(rope_factors);
    return st;
}
