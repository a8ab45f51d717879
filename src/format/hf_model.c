/* Hugging Face model folders (FACTS 1.1-1.3): config.json + model.safetensors or shards listed in
 * model.safetensors.index.json, tensors named as transformers' LlamaForCausalLM names them, RoPE in the
 * rotate-half layout. Reading maps the shards (zero-copy); writing produces a folder transformers loads. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/safetensors.h"
#include "model/model_internal.h"

#define MAX_INDEX_BYTES ((size_t)64 << 20)
#define MAX_CONFIG_BYTES ((size_t)4 << 20)

typedef struct {
    cm_safetensors **shards;
    size_t n;
} shard_set;

static const cm_tensor *shard_lookup(void *ctx, const char *name) {
    const shard_set *s = ctx;
    for (size_t i = 0; i < s->n; i++) {
        const cm_tensor *t = cm_safetensors_find(s->shards[i], name);
        if (t) return t;
    }
    return NULL;
}

/* Shard file names from the index's weight_map, each once, checked to stay inside the folder. */
static cm_status read_index(const char *index_path, char ***files, size_t *n_files) {
    *files = NULL;
    *n_files = 0;
    char *text;
    size_t len;
    CM_TRY(cm_read_file(index_path, MAX_INDEX_BYTES, &text, &len));
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) return cm_error(CM_ERR_FORMAT, "%s: line %d: bad JSON: %s", index_path, jerr.line, jerr.text);
    cm_status st = CM_OK;
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map)) {
        st = cm_error(CM_ERR_FORMAT, "%s: \"weight_map\" is missing or not an object", index_path);
        goto done;
    }
    char **list = calloc(json_object_size(map) + 1, sizeof *list);
    if (!list) {
        st = cm_error(CM_ERR_NOMEM, "out of memory");
        goto done;
    }
    *files = list;
    const char *key;
    json_t *value;
    json_object_foreach(map, key, value) {
        const char *file = json_string_value(value);
        if (!file) {
            st = cm_error(CM_ERR_FORMAT, "%s: weight_map[\"%s\"] is not a string", index_path, key);
            goto done;
        }
        if (!*file || strchr(file, '/') || strstr(file, "..")) {
            st = cm_error(CM_ERR_FORMAT, "%s: weight_map[\"%s\"] = \"%s\" is not a file name in the folder",
                          index_path, key, file);
            goto done;
        }
        bool seen = false;
        for (size_t i = 0; i < *n_files && !seen; i++) seen = strcmp(list[i], file) == 0;
        if (seen) continue;
        if (!(list[*n_files] = strdup(file))) {
            st = cm_error(CM_ERR_NOMEM, "out of memory");
            goto done;
        }
        (*n_files)++;
    }
    if (*n_files == 0) st = cm_error(CM_ERR_FORMAT, "%s: weight_map is empty", index_path);
done:
    json_decref(root);
    return st;
}

static void free_list(char **list, size_t n) {
    for (size_t i = 0; i < n; i++) free(list[i]);
    free(list);
}

static cm_status open_shards(cm_model *m, const char *dir, const char *single_file, shard_set *set) {
    char **files = NULL;
    size_t n_files = 0;
    char *index = cm_path_join(dir, "model.safetensors.index.json");
    if (!index) return cm_error(CM_ERR_NOMEM, "out of memory");
    cm_status st = CM_OK;
    if (single_file) {
        files = calloc(1, sizeof *files);
        if (files && (files[0] = strdup(single_file)))
            n_files = 1;
        else
            st = cm_error(CM_ERR_NOMEM, "out of memory");
    } else if (cm_path_exists(index)) {
        st = read_index(index, &files, &n_files);
    } else {
        char *single = cm_path_join(dir, "model.safetensors");
        if (single && cm_path_exists(single)) {
            files = calloc(1, sizeof *files);
            if (files && (files[0] = strdup("model.safetensors")))
                n_files = 1;
            else
                st = cm_error(CM_ERR_NOMEM, "out of memory");
        } else {
            st = cm_error(CM_ERR_NOT_FOUND, "%s: no model.safetensors or model.safetensors.index.json", dir);
        }
        free(single);
    }
    free(index);
    if (st == CM_OK) {
        set->shards = calloc(n_files, sizeof *set->shards);
        if (!set->shards) st = cm_error(CM_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; st == CM_OK && i < n_files; i++) {
        char *path = single_file ? strdup(files[i]) : cm_path_join(dir, files[i]);
        cm_safetensors *sf;
        if (!path)
            st = cm_error(CM_ERR_NOMEM, "out of memory");
        else if ((st = cm_safetensors_open(path, &sf)) == CM_OK &&
                 (st = cm_model_keep_safetensors(m, sf)) == CM_OK)
            set->shards[set->n++] = sf;
        free(path);
    }
    free_list(files, n_files);
    return st;
}

cm_status cm_model_open_hf(const char *path, cm_model **out) {
    *out = NULL;
    bool is_dir = cm_path_is_dir(path);
    char *dir = is_dir ? strdup(path) : cm_path_dirname(path);
    char *config_path = dir ? cm_path_join(dir, "config.json") : NULL;
    if (!config_path) {
        free(dir);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    cm_model *m = NULL;
    shard_set set = {0};
    cm_status st;
    if (!cm_path_exists(config_path)) {
        st = cm_error(CM_ERR_NOT_FOUND, "%s: no config.json %s", path,
                      is_dir ? "in the folder" : "beside the file");
        goto fail;
    }
    if ((st = cm_model_alloc(&m, path, is_dir ? CM_FORMAT_HF : CM_FORMAT_SAFETENSORS)) != CM_OK) goto fail;
    if ((st = cm_config_load_hf(config_path, &m->cfg)) != CM_OK) goto fail;
    if ((st = cm_nf4_check_config(config_path)) != CM_OK) goto fail;
    if ((st = open_shards(m, dir, is_dir ? NULL : path, &set)) != CM_OK) goto fail;
    /* a tied model may still store lm_head; an untied one must */
    if ((st = cm_model_bind(m, &cm_names_hf, shard_lookup, &set, path)) != CM_OK) goto fail;
    /* the folder's tokenizer (tokenizer.json, else tokenizer.model, + tokenizer_config.json) */
    char *tok_json = cm_path_join(dir, "tokenizer.json"), *tok_model = cm_path_join(dir, "tokenizer.model");
    if ((tok_json && cm_path_exists(tok_json)) || (tok_model && cm_path_exists(tok_model)))
        st = cm_tokenizer_open(dir, m->cfg.vocab_size, &m->tokenizer);
    free(tok_json);
    free(tok_model);
    if (st != CM_OK) goto fail;
    free(set.shards);
    free(config_path);
    free(dir);
    *out = m;
    return CM_OK;
fail:
    free(set.shards);
    free(config_path);
    free(dir);
    cm_model_close(m);
    return st;
}

/* ---- writing ---- */

static cm_status add_weight(cm_safetensors_writer *w, const char *name, const cm_weight *wt, cm_dtype dtype,
                            int permute_heads, int head_dim) {
    const void *data;
    void *owned;
    size_t nbytes;
    cm_dtype out = dtype == CM_DTYPE_COUNT ? wt->dtype : dtype;
    /* safetensors has no ggml block types; NF4 goes to bitsandbytes folders only (camelid quantize) */
    if (cm_dtype_is_quant(out) || out == CM_DTYPE_NF4) out = CM_DTYPE_F32;
    CM_TRY(cm_model_export_weight(wt, out, permute_heads, head_dim, true, &data, &owned, &nbytes));
    int64_t shape[2] = {wt->rows, wt->cols};
    if (owned) return cm_safetensors_writer_add_owned(w, name, out, 2, shape, owned, nbytes);
    return cm_safetensors_writer_add(w, name, out, 2, shape, data, nbytes);
}

static cm_status add_norm(cm_safetensors_writer *w, const char *name, const float *v, int dim,
                          cm_dtype dtype) {
    size_t nbytes = (size_t)dim * cm_dtype_block_bytes(dtype);
    void *buf = malloc(nbytes);
    if (!buf) return cm_error(CM_ERR_NOMEM, "out of memory");
    cm_convert_from_f32(dtype, v, buf, (size_t)dim);
    int64_t shape[1] = {dim};
    return cm_safetensors_writer_add_owned(w, name, dtype, 1, shape, buf, nbytes);
}

static cm_status write_json(const char *dir, const char *name, json_t *obj) {
    char *text = json_dumps(obj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(obj);
    char *path = cm_path_join(dir, name);
    cm_status st = CM_OK;
    if (!text || !path)
        st = cm_error(CM_ERR_NOMEM, "out of memory");
    else {
        size_t n = strlen(text);
        text[n] = '\n';
        st = cm_write_file_atomic(path, text, n + 1);
    }
    free(text);
    free(path);
    return st;
}

static json_t *piece_json(const cm_tokenizer *tok, int id) {
    if (id < 0 || id >= cm_tokenizer_vocab_size(tok)) return json_null();
    size_t len;
    const char *p = cm_tokenizer_piece(tok, id, &len);
    return json_stringn(p, len);
}

cm_status cm_hf_write_tokenizer_files(const cm_model *m, const cm_tokenizer *tok, const char *dir) {
    bool spm = cm_tokenizer_kind_of(tok) == CM_TOKENIZER_SPM;
    char *path = cm_path_join(dir, "tokenizer.json");
    if (!path) return cm_error(CM_ERR_NOMEM, "out of memory");
    cm_status st = cm_tokenizer_save_hf_json(tok, path);
    free(path);
    CM_TRY(st);
    if (spm) {
        path = cm_path_join(dir, "tokenizer.model");
        if (!path) return cm_error(CM_ERR_NOMEM, "out of memory");
        st = cm_tokenizer_save_spm_model(tok, path);
        free(path);
        CM_TRY(st);
    }
    json_t *cfg = json_object();
    json_object_set_new(cfg, "add_bos_token", json_boolean(cm_tokenizer_add_bos(tok)));
    json_object_set_new(cfg, "add_eos_token", json_false());
    json_object_set_new(cfg, "bos_token", piece_json(tok, cm_tokenizer_bos(tok)));
    json_object_set_new(cfg, "eos_token", piece_json(tok, cm_tokenizer_eos(tok)));
    json_object_set_new(cfg, "unk_token", piece_json(tok, cm_tokenizer_unk(tok)));
    json_object_set_new(cfg, "pad_token", json_null());
    json_object_set_new(cfg, "clean_up_tokenization_spaces", json_false());
    if (spm) json_object_set_new(cfg, "legacy", json_true());
    json_object_set_new(cfg, "model_max_length", json_integer(m->cfg.seq_len));
    if (spm) json_object_set_new(cfg, "sp_model_kwargs", json_object());
    if (cm_tokenizer_chat_template(tok))
        json_object_set_new(cfg, "chat_template", json_string(cm_tokenizer_chat_template(tok)));
    /* transformers' LlamaTokenizerFast reads tokenizer.json alone; LlamaTokenizer needs tokenizer.model */
    json_object_set_new(cfg, "tokenizer_class", json_string(spm ? "LlamaTokenizer" : "LlamaTokenizerFast"));
    CM_TRY(write_json(dir, "tokenizer_config.json", cfg));
    json_t *special = json_object();
    json_object_set_new(special, "bos_token", piece_json(tok, cm_tokenizer_bos(tok)));
    json_object_set_new(special, "eos_token", piece_json(tok, cm_tokenizer_eos(tok)));
    json_object_set_new(special, "unk_token", piece_json(tok, cm_tokenizer_unk(tok)));
    return write_json(dir, "special_tokens_map.json", special);
}

/* config.json cannot hold per-frequency RoPE divisors (a GGUF's rope_freqs.weight); Llama 3.1 files carry
 * the llama3 scaling with the published parameters, so recognise those and refuse anything else. */
static cm_status llama3_from_factors(const cm_model *m, cm_config *c) {
    float max = 0.0f;
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++)
        if (m->rope_freq_factors[i] > max) max = m->rope_freq_factors[i];
    cm_config guess = *c;
    guess.rope_scaling = CM_ROPE_SCALING_LLAMA3;
    guess.rope_factor = max;
    guess.rope_low_freq_factor = 1.0f;
    guess.rope_high_freq_factor = 4.0f;
    guess.rope_original_max_pos = 8192;
    for (int i = 0; i < half; i++) {
        double base = 1.0 / pow((double)c->rope_theta, (double)(2 * i) / c->head_dim);
        double factor = base / cm_config_rope_inv_freq(&guess, i);
        if (fabs(factor - m->rope_freq_factors[i]) > 1e-3 * factor)
            return cm_error(
                CM_ERR_UNSUPPORTED,
                "%s: rope_freqs.weight does not match llama3 scaling (factor %g, 1, 4, 8192), and "
                "config.json has no other way to express it",
                m->path, max);
    }
    *c = guess;
    return CM_OK;
}

cm_status cm_hf_config_for_save(const cm_model *m, cm_config *out) {
    *out = m->cfg;
    out->rope_layout = CM_ROPE_HALF;
    if (m->rope_freq_factors) CM_TRY(llama3_from_factors(m, out));
    return CM_OK;
}

cm_status cm_hf_write_generation_config(const cm_model *m, const char *dir) {
    const cm_config *c = &m->cfg;
    json_t *gen = json_object();
    if (c->bos_id >= 0) json_object_set_new(gen, "bos_token_id", json_integer(c->bos_id));
    if (c->n_eos == 1)
        json_object_set_new(gen, "eos_token_id", json_integer(c->eos_ids[0]));
    else if (c->n_eos > 1) {
        json_t *arr = json_array();
        for (int i = 0; i < c->n_eos; i++) json_array_append_new(arr, json_integer(c->eos_ids[i]));
        json_object_set_new(gen, "eos_token_id", arr);
    }
    json_object_set_new(gen, "_from_model_config", json_true());
    return write_json(dir, "generation_config.json", gen);
}

cm_status cm_model_save_hf(const cm_model *m, const cm_tokenizer *tok, const char *dir, cm_dtype dtype) {
    const cm_config *c = &m->cfg;
    CM_TRY(cm_mkdir_p(dir));
    cm_dtype main_dtype = dtype == CM_DTYPE_COUNT ? m->tok_embd.dtype : dtype;
    if (cm_dtype_is_quant(main_dtype) || main_dtype == CM_DTYPE_NF4) main_dtype = CM_DTYPE_F32;
    bool permute = c->rope_layout == CM_ROPE_INTERLEAVED;

    char *config_text;
    cm_config hf;
    CM_TRY(cm_hf_config_for_save(m, &hf));
    CM_TRY(cm_config_to_hf_json(&hf, cm_torch_dtype_name(main_dtype), &config_text));
    char *config_path = cm_path_join(dir, "config.json");
    cm_status st = config_path ? cm_write_file_atomic(config_path, config_text, strlen(config_text))
                               : cm_error(CM_ERR_NOMEM, "out of memory");
    free(config_path);
    free(config_text);
    CM_TRY(st);

    CM_TRY(cm_hf_write_generation_config(m, dir));

    char *st_path = cm_path_join(dir, "model.safetensors");
    if (!st_path) return cm_error(CM_ERR_NOMEM, "out of memory");
    cm_safetensors_writer *w;
    st = cm_safetensors_writer_open(st_path, &w);
    free(st_path);
    CM_TRY(st);
    char name[256];
    st = add_weight(w, cm_names_hf.embd, &m->tok_embd, dtype, 0, 0);
    for (int l = 0; st == CM_OK && l < c->n_layers; l++) {
        const cm_layer *L = &m->layers[l];
#define N(fmt) (snprintf(name, sizeof name, fmt, l), name)
        if (st == CM_OK) st = add_norm(w, N(cm_names_hf.attn_norm), L->attn_norm, c->dim, main_dtype);
        if (st == CM_OK)
            st = add_weight(w, N(cm_names_hf.wq), &L->wq, dtype, permute ? c->n_heads : 0, c->head_dim);
        if (st == CM_OK)
            st = add_weight(w, N(cm_names_hf.wk), &L->wk, dtype, permute ? c->n_kv_heads : 0, c->head_dim);
        if (st == CM_OK) st = add_weight(w, N(cm_names_hf.wv), &L->wv, dtype, 0, 0);
        if (st == CM_OK) st = add_weight(w, N(cm_names_hf.wo), &L->wo, dtype, 0, 0);
        if (st == CM_OK) st = add_norm(w, N(cm_names_hf.ffn_norm), L->ffn_norm, c->dim, main_dtype);
        if (st == CM_OK) st = add_weight(w, N(cm_names_hf.w_gate), &L->w_gate, dtype, 0, 0);
        if (st == CM_OK) st = add_weight(w, N(cm_names_hf.w_up), &L->w_up, dtype, 0, 0);
        if (st == CM_OK) st = add_weight(w, N(cm_names_hf.w_down), &L->w_down, dtype, 0, 0);
#undef N
    }
    if (st == CM_OK) st = add_norm(w, cm_names_hf.norm, m->out_norm, c->dim, main_dtype);
    if (st == CM_OK && !c->tie_embeddings) st = add_weight(w, cm_names_hf.output, &m->output, dtype, 0, 0);
    if (st != CM_OK) {
        cm_safetensors_writer_abort(w);
        return st;
    }
    CM_TRY(cm_safetensors_writer_commit(w));
    if (tok) CM_TRY(cm_hf_write_tokenizer_files(m, tok, dir));
    return CM_OK;
}
