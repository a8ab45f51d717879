/* HF config.json for LlamaForCausalLM / MistralForCausalLM (FACTS 1.2): read (v4 rope_theta + rope_scaling,
 * or v5 rope_parameters) and write. Missing keys take transformers' LlamaConfig defaults; a key of the wrong
 * JSON type is an error naming the key. */
#include "format/json_util.h"
#include "camelid/config.h"

#include <jansson.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"

#define HF_CONFIG_MAX_BYTES ((size_t)16 << 20)

/* Key lookups: `pre` is the enclosing object's name for messages ("" at the top level). Absent keys leave
 * *dst alone. *is_null (if not NULL) reports an explicit null, which is otherwise an error. */
static cm_status get_int(const char *path, json_t *obj, const char *pre, const char *key, int *dst,
                         bool *is_null) {
    json_t *v = json_object_get(obj, key);
    if (is_null) *is_null = false;
    if (!v) return CM_OK;
    if (json_is_null(v) && is_null) {
        *is_null = true;
        return CM_OK;
    }
    if (!json_is_integer(v))
        return cm_error(CM_ERR_FORMAT, "%s: \"%s%s\" must be an integer, got %s", path, pre, key,
                        cm_json_kind(v));
    json_int_t x = json_integer_value(v);
    if (x < INT_MIN || x > INT_MAX)
        return cm_error(CM_ERR_FORMAT, "%s: \"%s%s\" = %lld is out of range", path, pre, key, (long long)x);
    *dst = (int)x;
    return CM_OK;
}

static cm_status get_float(const char *path, json_t *obj, const char *pre, const char *key, float *dst) {
    json_t *v = json_object_get(obj, key);
    if (!v) return CM_OK;
    if (!json_is_number(v))
        return cm_error(CM_ERR_FORMAT, "%s: \"%s%s\" must be a number, got %s", path, pre, key,
                        cm_json_kind(v));
    double d = json_number_value(v);
    if (!(fabs(d) <= FLT_MAX))
        return cm_error(CM_ERR_FORMAT, "%s: \"%s%s\" = %g is out of range for a float", path, pre, key, d);
    *dst = (float)d;
    return CM_OK;
}

static cm_status get_bool(const char *path, json_t *obj, const char *key, bool *dst) {
    json_t *v = json_object_get(obj, key);
    if (!v) return CM_OK;
    if (!json_is_boolean(v))
        return cm_error(CM_ERR_FORMAT, "%s: \"%s\" must be true or false, got %s", path, key,
                        cm_json_kind(v));
    *dst = json_is_true(v);
    return CM_OK;
}

static cm_status require(const char *path, json_t *obj, const char *pre, const char *key) {
    if (!json_object_get(obj, key)) return cm_error(CM_ERR_FORMAT, "%s: \"%s\" needs \"%s\"", path, pre, key);
    return CM_OK;
}

/* rope_scaling (v4) or rope_parameters (v5): {"rope_type"|"type": ..., "factor": ..., ...}. */
static cm_status parse_rope(const char *path, json_t *obj, const char *name, bool v5, cm_config *c) {
    char pre[64], tb[96];
    snprintf(pre, sizeof pre, "%s.", name);
    if (!json_is_object(obj))
        return cm_error(CM_ERR_FORMAT, "%s: \"%s\" must be an object or null, got %s", path, name,
                        cm_json_kind(obj));
    if (v5) CM_TRY(get_float(path, obj, pre, "rope_theta", &c->rope_theta));
    json_t *jt = json_object_get(obj, "rope_type");
    const char *tkey = "rope_type";
    if (!jt || json_is_null(jt)) {
        jt = json_object_get(obj, "type");
        tkey = "type";
    }
    const char *type = "default";
    if (jt && !json_is_null(jt)) {
        if (!json_is_string(jt))
            return cm_error(CM_ERR_FORMAT, "%s: \"%s%s\" must be a string, got %s", path, pre, tkey,
                            cm_json_kind(jt));
        type = json_string_value(jt);
    } else if (!v5) {
        return cm_error(CM_ERR_FORMAT, "%s: \"%s\" has no \"rope_type\" (or \"type\")", path, name);
    }
    if (strcmp(type, "default") == 0) {
        c->rope_scaling = CM_ROPE_SCALING_NONE;
    } else if (strcmp(type, "linear") == 0) {
        CM_TRY(require(path, obj, name, "factor"));
        CM_TRY(get_float(path, obj, pre, "factor", &c->rope_factor));
        c->rope_scaling = CM_ROPE_SCALING_LINEAR;
    } else if (strcmp(type, "llama3") == 0) {
        static const char *const keys[] = {"factor", "low_freq_factor", "high_freq_factor",
                                           "original_max_position_embeddings"};
        for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) CM_TRY(require(path, obj, name, keys[i]));
        CM_TRY(get_float(path, obj, pre, "factor", &c->rope_factor));
        CM_TRY(get_float(path, obj, pre, "low_freq_factor", &c->rope_low_freq_factor));
        CM_TRY(get_float(path, obj, pre, "high_freq_factor", &c->rope_high_freq_factor));
        CM_TRY(get_int(path, obj, pre, "original_max_position_embeddings", &c->rope_original_max_pos, NULL));
        c->rope_scaling = CM_ROPE_SCALING_LLAMA3;
    } else if (!strcmp(type, "dynamic") || !strcmp(type, "yarn") || !strcmp(type, "longrope") ||
               !strcmp(type, "su")) {
        return cm_error(CM_ERR_UNSUPPORTED,
                        "%s: \"%s%s\" is \"%s\": this RoPE scaling is not supported (camelid reads default, "
                        "linear and llama3)",
                        path, pre, tkey, type);
    } else {
        return cm_error(
            CM_ERR_UNSUPPORTED,
            "%s: \"%s%s\" is \"%s\": unknown RoPE type (camelid reads default, linear and llama3)", path, pre,
            tkey, cm_json_show(type, tb, sizeof tb));
    }
    return CM_OK;
}

static bool llama_like_arch(const char *a) {
    return strncmp(a, "Llama", 5) == 0 || strncmp(a, "Mistral", 7) == 0;
}

static cm_status check_family(const char *path, json_t *root) {
    char b[96];
    json_t *mt = json_object_get(root, "model_type");
    if (mt && !json_is_null(mt)) {
        if (!json_is_string(mt))
            return cm_error(CM_ERR_FORMAT, "%s: \"model_type\" must be a string, got %s", path,
                            cm_json_kind(mt));
        const char *t = json_string_value(mt);
        if (strcmp(t, "llama") != 0 && strcmp(t, "mistral") != 0)
            return cm_error(CM_ERR_UNSUPPORTED,
                            "%s: \"model_type\" is \"%s\", not a LLaMA-family model (camelid reads llama and "
                            "mistral)",
                            path, cm_json_show(t, b, sizeof b));
    }
    json_t *ar = json_object_get(root, "architectures");
    if (ar && !json_is_null(ar)) {
        if (!json_is_array(ar))
            return cm_error(CM_ERR_FORMAT, "%s: \"architectures\" must be a list of strings, got %s", path,
                            cm_json_kind(ar));
        size_t n = json_array_size(ar);
        bool ok = n == 0;
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(ar, i);
            if (!json_is_string(e))
                return cm_error(CM_ERR_FORMAT, "%s: \"architectures\"[%zu] must be a string, got %s", path, i,
                                cm_json_kind(e));
            if (llama_like_arch(json_string_value(e))) ok = true;
        }
        if (!ok)
            return cm_error(CM_ERR_UNSUPPORTED,
                            "%s: \"architectures\" is [\"%s\"%s], not a LLaMA-family model (expected "
                            "LlamaForCausalLM or MistralForCausalLM)",
                            path, cm_json_show(json_string_value(json_array_get(ar, 0)), b, sizeof b),
                            n > 1 ? ", ..." : "");
    }
    return CM_OK;
}

static cm_status parse_eos(const char *path, json_t *root, cm_config *c) {
    json_t *v = json_object_get(root, "eos_token_id");
    if (!v) return CM_OK;
    if (json_is_null(v)) {
        c->n_eos = 0;
        return CM_OK;
    }
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < 0 || x > INT_MAX)
            return cm_error(CM_ERR_FORMAT, "%s: \"eos_token_id\" = %lld is out of range", path, (long long)x);
        c->eos_ids[0] = (int)x;
        c->n_eos = 1;
        return CM_OK;
    }
    if (!json_is_array(v))
        return cm_error(CM_ERR_FORMAT,
                        "%s: \"eos_token_id\" must be an integer or a list of integers, got %s", path,
                        cm_json_kind(v));
    size_t n = json_array_size(v);
    if (n > CM_MAX_EOS)
        return cm_error(CM_ERR_UNSUPPORTED, "%s: \"eos_token_id\" lists %zu ids, more than the %d supported",
                        path, n, CM_MAX_EOS);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e))
            return cm_error(CM_ERR_FORMAT, "%s: \"eos_token_id\"[%zu] must be an integer, got %s", path, i,
                            cm_json_kind(e));
        json_int_t x = json_integer_value(e);
        if (x < 0 || x > INT_MAX)
            return cm_error(CM_ERR_FORMAT, "%s: \"eos_token_id\"[%zu] = %lld is out of range", path, i,
                            (long long)x);
        c->eos_ids[i] = (int)x;
    }
    c->n_eos = (int)n;
    return CM_OK;
}

static cm_status parse_root(const char *path, json_t *root, cm_config *c) {
    if (!json_is_object(root))
        return cm_error(CM_ERR_FORMAT, "%s: config must be a JSON object, got %s", path, cm_json_kind(root));
    CM_TRY(check_family(path, root));

    CM_TRY(get_int(path, root, "", "hidden_size", &c->dim, NULL));
    CM_TRY(get_int(path, root, "", "intermediate_size", &c->hidden_dim, NULL));
    CM_TRY(get_int(path, root, "", "num_hidden_layers", &c->n_layers, NULL));
    CM_TRY(get_int(path, root, "", "num_attention_heads", &c->n_heads, NULL));
    CM_TRY(get_int(path, root, "", "vocab_size", &c->vocab_size, NULL));
    CM_TRY(get_int(path, root, "", "max_position_embeddings", &c->seq_len, NULL));
    bool kv_null = true, hd_null = true, isnull;
    CM_TRY(get_int(path, root, "", "num_key_value_heads", &c->n_kv_heads, &isnull));
    if (json_object_get(root, "num_key_value_heads") && !isnull) kv_null = false;
    CM_TRY(get_int(path, root, "", "head_dim", &c->head_dim, &isnull));
    if (json_object_get(root, "head_dim") && !isnull) hd_null = false;
    CM_TRY(get_float(path, root, "", "rms_norm_eps", &c->norm_eps));

    json_t *theta = json_object_get(root, "rope_theta");
    if (theta && !json_is_null(theta)) CM_TRY(get_float(path, root, "", "rope_theta", &c->rope_theta));
    json_t *rs = json_object_get(root, "rope_scaling");
    if (rs && !json_is_null(rs)) CM_TRY(parse_rope(path, rs, "rope_scaling", false, c));
    json_t *rp = json_object_get(root, "rope_parameters");
    if (rp && !json_is_null(rp)) {
        c->rope_scaling = CM_ROPE_SCALING_NONE; /* v5 replaces rope_scaling */
        CM_TRY(parse_rope(path, rp, "rope_parameters", true, c));
    }

    CM_TRY(get_bool(path, root, "tie_word_embeddings", &c->tie_embeddings));
    json_t *bos = json_object_get(root, "bos_token_id");
    if (bos && json_is_null(bos))
        c->bos_id = -1;
    else
        CM_TRY(get_int(path, root, "", "bos_token_id", &c->bos_id, NULL));
    CM_TRY(parse_eos(path, root, c));

    json_t *act = json_object_get(root, "hidden_act");
    if (act) {
        char b[96];
        if (!json_is_string(act))
            return cm_error(CM_ERR_FORMAT, "%s: \"hidden_act\" must be a string, got %s", path,
                            cm_json_kind(act));
        const char *a = json_string_value(act);
        if (strcmp(a, "silu") != 0 && strcmp(a, "swish") != 0)
            return cm_error(CM_ERR_UNSUPPORTED,
                            "%s: \"hidden_act\" is \"%s\"; camelid's MLP is SwiGLU (\"silu\")", path,
                            cm_json_show(a, b, sizeof b));
    }
    bool attn_bias = false, mlp_bias = false;
    CM_TRY(get_bool(path, root, "attention_bias", &attn_bias));
    CM_TRY(get_bool(path, root, "mlp_bias", &mlp_bias));
    if (attn_bias)
        return cm_error(CM_ERR_UNSUPPORTED,
                        "%s: \"attention_bias\" is true; biased projections are not supported", path);
    if (mlp_bias)
        return cm_error(CM_ERR_UNSUPPORTED,
                        "%s: \"mlp_bias\" is true; biased MLP projections are not supported", path);
    /* sliding_window (mistral), pad_token_id, torch_dtype, pretraining_tp, ... are accepted and ignored. */

    /* canonical form: scaling fields that the chosen kind does not use keep their defaults */
    cm_config d;
    cm_config_defaults_hf(&d);
    if (c->rope_scaling == CM_ROPE_SCALING_NONE) c->rope_factor = d.rope_factor;
    if (c->rope_scaling != CM_ROPE_SCALING_LLAMA3) {
        c->rope_low_freq_factor = d.rope_low_freq_factor;
        c->rope_high_freq_factor = d.rope_high_freq_factor;
        c->rope_original_max_pos = d.rope_original_max_pos;
    }
    if (kv_null) c->n_kv_heads = c->n_heads;
    if (hd_null) {
        if (c->n_heads <= 0)
            return cm_error(CM_ERR_FORMAT, "%s: \"num_attention_heads\" = %d must be positive", path,
                            c->n_heads);
        if (c->dim % c->n_heads != 0)
            return cm_error(
                CM_ERR_FORMAT,
                "%s: \"hidden_size\" = %d is not divisible by \"num_attention_heads\" = %d (and there "
                "is no \"head_dim\")",
                path, c->dim, c->n_heads);
        c->head_dim = c->dim / c->n_heads;
    }
    c->rope_layout = CM_ROPE_HALF;
    return cm_config_validate(c, path);
}

cm_status cm_config_parse_hf_json(const char *json, size_t len, const char *path, cm_config *out) {
    if (!path) path = "config.json";
    if (!json && len) return cm_error(CM_ERR_ARG, "%s: NULL buffer", path);
    if (len > HF_CONFIG_MAX_BYTES)
        return cm_error(CM_ERR_FORMAT, "%s: %zu bytes is too large for a config.json (limit %zu)", path, len,
                        HF_CONFIG_MAX_BYTES);
    json_error_t err;
    json_t *root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return cm_error(CM_ERR_FORMAT, "%s: invalid JSON at line %d, column %d (byte %d): %s", path, err.line,
                        err.column, err.position, err.text);
    cm_config c;
    cm_config_defaults_hf(&c);
    cm_status rc = parse_root(path, root, &c);
    json_decref(root);
    if (rc == CM_OK) *out = c;
    return rc;
}

cm_status cm_config_load_hf(const char *config_json_path, cm_config *out) {
    char *text;
    size_t n;
    CM_TRY(cm_read_file(config_json_path, HF_CONFIG_MAX_BYTES, &text, &n));
    cm_status rc = cm_config_parse_hf_json(text, n, config_json_path, out);
    free(text);
    return rc;
}

/* ---- writing ---- */

/* The shortest decimal that reads back as the same float, as a double (so 1e-5f prints as 1e-05). */
static json_t *real_of_float(float f) {
    char buf[40];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

static int set(json_t *o, const char *k, json_t *v) {
    return v ? json_object_set_new(o, k, v) : -1;
}

cm_status cm_config_to_hf_json(const cm_config *c, const char *torch_dtype, char **out) {
    *out = NULL;
    if (!torch_dtype) torch_dtype = "float32";
    if (strcmp(torch_dtype, "float32") && strcmp(torch_dtype, "float16") && strcmp(torch_dtype, "bfloat16"))
        return cm_error(CM_ERR_ARG, "config.json: torch_dtype \"%s\" must be float32, float16 or bfloat16",
                        torch_dtype);
    CM_TRY(cm_config_validate(c, "config.json"));
    json_t *o = json_object(), *arch = json_array();
    int bad = !o || !arch || json_array_append_new(arch, json_string("LlamaForCausalLM"));
    bad |= set(o, "architectures", arch);
    arch = NULL;
    bad |= set(o, "model_type", json_string("llama"));
    bad |= set(o, "hidden_size", json_integer(c->dim));
    bad |= set(o, "intermediate_size", json_integer(c->hidden_dim));
    bad |= set(o, "num_hidden_layers", json_integer(c->n_layers));
    bad |= set(o, "num_attention_heads", json_integer(c->n_heads));
    bad |= set(o, "num_key_value_heads", json_integer(c->n_kv_heads));
    bad |= set(o, "head_dim", json_integer(c->head_dim));
    bad |= set(o, "vocab_size", json_integer(c->vocab_size));
    bad |= set(o, "max_position_embeddings", json_integer(c->seq_len));
    bad |= set(o, "rms_norm_eps", real_of_float(c->norm_eps));
    bad |= set(o, "rope_theta", real_of_float(c->rope_theta));
    json_t *rs = NULL;
    if (c->rope_scaling == CM_ROPE_SCALING_NONE) {
        rs = json_null();
    } else if ((rs = json_object())) {
        bad |= set(rs, "factor", real_of_float(c->rope_factor));
        if (c->rope_scaling == CM_ROPE_SCALING_LLAMA3) {
            bad |= set(rs, "low_freq_factor", real_of_float(c->rope_low_freq_factor));
            bad |= set(rs, "high_freq_factor", real_of_float(c->rope_high_freq_factor));
            bad |= set(rs, "original_max_position_embeddings", json_integer(c->rope_original_max_pos));
        }
        bad |= set(rs, "rope_type",
                   json_string(c->rope_scaling == CM_ROPE_SCALING_LLAMA3 ? "llama3" : "linear"));
    }
    bad |= set(o, "rope_scaling", rs);
    bad |= set(o, "tie_word_embeddings", json_boolean(c->tie_embeddings));
    bad |= set(o, "bos_token_id", c->bos_id < 0 ? json_null() : json_integer(c->bos_id));
    json_t *eos;
    if (c->n_eos == 0) {
        eos = json_null();
    } else if (c->n_eos == 1) {
        eos = json_integer(c->eos_ids[0]);
    } else if ((eos = json_array())) {
        for (int i = 0; i < c->n_eos; i++) bad |= json_array_append_new(eos, json_integer(c->eos_ids[i]));
    }
    bad |= set(o, "eos_token_id", eos);
    bad |= set(o, "hidden_act", json_string("silu"));
    bad |= set(o, "attention_bias", json_false());
    bad |= set(o, "mlp_bias", json_false());
    bad |= set(o, "initializer_range", json_real(0.02));
    bad |= set(o, "pretraining_tp", json_integer(1));
    bad |= set(o, "use_cache", json_true());
    bad |= set(o, "torch_dtype", json_string(torch_dtype));
    bad |= set(o, "transformers_version", json_string("4.46.0"));
    char *s = bad ? NULL : json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!s) return cm_error(CM_ERR_NOMEM, "config.json: out of memory");
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (!t) {
        free(s);
        return cm_error(CM_ERR_NOMEM, "config.json: out of memory");
    }
    t[n] = '\n';
    t[n + 1] = 0;
    *out = t;
    return CM_OK;
}
