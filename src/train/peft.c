/* PEFT adapter folders for trained LoRA parameters (see include/camelid/peft.h). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/peft.h"
#include "camelid/safetensors.h"
#include "model/model_internal.h"

/* Is tensor i of l a q_proj or k_proj lora_B (rows in RoPE order), and over how many heads? */
static int qk_heads(const cm_lora_params *l, const cm_param_tensor *t) {
    if (!strstr(t->name, "lora_B")) return 0;
    if (strstr(t->name, ".q_proj.")) return l->cfg.n_heads;
    if (strstr(t->name, ".k_proj.")) return l->cfg.n_kv_heads;
    return 0;
}

cm_status cm_lora_parse_targets(const char *list, unsigned *mask) {
    *mask = 0;
    if (!strcmp(list, "all") || !strcmp(list, "all-linear")) {
        *mask = (1u << CM_LORA_N_TARGETS) - 1;
        return CM_OK;
    }
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        int found = -1;
        for (int k = 0; k < CM_LORA_N_TARGETS; k++)
            if (strlen(cm_lora_target_name(k)) == n && !strncmp(p, cm_lora_target_name(k), n)) found = k;
        if (found < 0)
            return cm_error(CM_ERR_ARG,
                            "unknown LoRA target \"%.*s\" (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                            "down_proj, or all)",
                            (int)n, p);
        *mask |= 1u << found;
        p += n;
        if (*p == ',') p++;
    }
    if (!*mask) return cm_error(CM_ERR_ARG, "no LoRA target given");
    return CM_OK;
}

cm_status cm_peft_save(const cm_lora_params *l, const char *base_name, const char *dir) {
    CM_TRY(cm_mkdir_p(dir));
    /* adapter_config.json, with PEFT's fields and defaults */
    json_t *cfg = json_object(), *targets = json_array();
    for (int k = 0; k < CM_LORA_N_TARGETS; k++)
        if (l->targets & (1u << k)) json_array_append_new(targets, json_string(cm_lora_target_name(k)));
    json_object_set_new(cfg, "alpha_pattern", json_object());
    json_object_set_new(cfg, "auto_mapping", json_null());
    json_object_set_new(cfg, "base_model_name_or_path", base_name ? json_string(base_name) : json_null());
    json_object_set_new(cfg, "bias", json_string("none"));
    json_object_set_new(cfg, "fan_in_fan_out", json_false());
    json_object_set_new(cfg, "inference_mode", json_true());
    json_object_set_new(cfg, "init_lora_weights", json_true());
    json_object_set_new(cfg, "layers_pattern", json_null());
    json_object_set_new(cfg, "layers_to_transform", json_null());
    json_object_set_new(cfg, "lora_alpha", json_real(l->alpha));
    json_object_set_new(cfg, "lora_dropout", json_real(l->dropout));
    json_object_set_new(cfg, "modules_to_save", json_null());
    json_object_set_new(cfg, "peft_type", json_string("LORA"));
    json_object_set_new(cfg, "r", json_integer(l->r));
    json_object_set_new(cfg, "rank_pattern", json_object());
    json_object_set_new(cfg, "revision", json_null());
    json_object_set_new(cfg, "target_modules", targets);
    json_object_set_new(cfg, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(cfg, "use_dora", json_false());
    json_object_set_new(cfg, "use_rslora", json_false());
    char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
    json_decref(cfg);
    char *cfg_path = cm_path_join(dir, "adapter_config.json"), *st_path = cm_path_join(dir, "adapter_model.safetensors");
    cm_status st = (!text || !cfg_path || !st_path) ? cm_error(CM_ERR_NOMEM, "out of memory") : CM_OK;
    if (!st) st = cm_write_file_atomic(cfg_path, text, strlen(text));
    cm_safetensors_writer *w = NULL;
    if (!st) st = cm_safetensors_writer_open(st_path, &w);
    if (!st) st = cm_safetensors_writer_set_metadata(w, "format", "pt");
    for (int i = 0; !st && i < l->n_tensors; i++) {
        const cm_param_tensor *t = &l->tensors[i];
        size_t bytes = (size_t)t->rows * t->cols * sizeof(float);
        int64_t shape[2] = {t->rows, t->cols};
        int heads = l->cfg.rope_layout == CM_ROPE_INTERLEAVED ? qk_heads(l, t) : 0;
        if (heads) { /* HF row order on disk */
            float *buf = malloc(bytes);
            if (!buf) {
                st = cm_error(CM_ERR_NOMEM, "out of memory");
                break;
            }
            cm_permute_qk_rows(l->data + t->offset, buf, heads, l->cfg.head_dim, (size_t)t->cols * sizeof(float), true);
            st = cm_safetensors_writer_add_owned(w, t->name, CM_DTYPE_F32, 2, shape, buf, bytes);
        } else {
            st = cm_safetensors_writer_add(w, t->name, CM_DTYPE_F32, 2, shape, l->data + t->offset, bytes);
        }
    }
    if (w) {
        if (st)
            cm_safetensors_writer_abort(w);
        else
            st = cm_safetensors_writer_commit(w);
    }
    free(text), free(cfg_path), free(st_path);
    return st;
}

cm_status cm_peft_load(cm_lora_params *l, const char *dir) {
    char *st_path = cm_path_join(dir, "adapter_model.safetensors");
    if (!st_path) return cm_error(CM_ERR_NOMEM, "out of memory");
    cm_safetensors *st;
    cm_status rc = cm_safetensors_open(st_path, &st);
    if (rc) {
        free(st_path);
        return rc;
    }
    if (cm_safetensors_count(st) != (size_t)l->n_tensors)
        rc = cm_error(CM_ERR_FORMAT, "%s: %zu tensors, this run's adapters have %d (another rank or targets?)",
                      st_path, cm_safetensors_count(st), l->n_tensors);
    for (int i = 0; !rc && i < l->n_tensors; i++) {
        const cm_param_tensor *t = &l->tensors[i];
        const cm_tensor *x = cm_safetensors_find(st, t->name);
        size_t n = (size_t)t->rows * t->cols;
        if (!x) {
            rc = cm_error(CM_ERR_FORMAT, "%s: tensor %s is missing", st_path, t->name);
            break;
        }
        if (x->dtype != CM_DTYPE_F32 || x->ndim != 2 || x->shape[0] != t->rows || x->shape[1] != t->cols) {
            rc = cm_error(CM_ERR_FORMAT, "%s: %s should be F32 [%lld, %lld]", st_path, t->name, (long long)t->rows,
                          (long long)t->cols);
            break;
        }
        int heads = l->cfg.rope_layout == CM_ROPE_INTERLEAVED ? qk_heads(l, t) : 0;
        if (heads)
            cm_permute_qk_rows(x->data, l->data + t->offset, heads, l->cfg.head_dim, (size_t)t->cols * sizeof(float),
                               false);
        else
            memcpy(l->data + t->offset, x->data, n * sizeof(float));
    }
    cm_safetensors_close(st);
    free(st_path);
    return rc;
}
