/* LoRA adapters under training: one f32 allocation, PEFT-named tensors (see include/camelid/train.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/train.h"

cm_status cm_lora_params_open(const cm_config *c, int r, float alpha, float dropout, unsigned targets,
                              cm_lora_params **out) {
    *out = NULL;
    if (r < 1) return cm_error(CM_ERR_ARG, "LoRA rank must be >= 1 (got %d)", r);
    if (!(alpha > 0)) return cm_error(CM_ERR_ARG, "LoRA alpha must be > 0");
    if (!(dropout >= 0 && dropout < 1)) return cm_error(CM_ERR_ARG, "LoRA dropout must be in [0, 1)");
    if (!(targets & ((1u << CM_LORA_N_TARGETS) - 1))) return cm_error(CM_ERR_ARG, "LoRA needs at least one target");
    cm_lora_params *l = calloc(1, sizeof *l);
    if (!l) return cm_error(CM_ERR_NOMEM, "out of memory");
    l->cfg = *c;
    l->r = r;
    l->alpha = alpha;
    l->scale = alpha / (float)r;
    l->dropout = dropout;
    l->targets = targets;
    size_t slots = (size_t)c->n_layers * CM_LORA_N_TARGETS;
    l->a = calloc(slots, sizeof *l->a);
    l->b = calloc(slots, sizeof *l->b);
    l->tensors = calloc(slots * 2, sizeof *l->tensors);
    if (!l->a || !l->b || !l->tensors) {
        cm_lora_params_close(l);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    int64_t D = c->dim, F = c->hidden_dim, QD = (int64_t)c->n_heads * c->head_dim,
            KD = (int64_t)c->n_kv_heads * c->head_dim;
    const int64_t ins[CM_LORA_N_TARGETS] = {D, D, D, QD, D, D, F};
    const int64_t outs[CM_LORA_N_TARGETS] = {QD, KD, KD, D, F, F, D};
    size_t offset = 0;
    for (int layer = 0; layer < c->n_layers; layer++)
        for (int k = 0; k < CM_LORA_N_TARGETS; k++) {
            if (!(targets & (1u << k))) continue;
            const char *group = k <= CM_LORA_O ? "self_attn" : "mlp";
            for (int ab = 0; ab < 2; ab++) {
                cm_param_tensor *t = &l->tensors[l->n_tensors++];
                snprintf(t->name, sizeof t->name, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer,
                         group, cm_lora_target_name(k), ab ? 'B' : 'A');
                t->rows = ab ? outs[k] : r;
                t->cols = ab ? r : ins[k];
                t->offset = offset;
                t->is_matrix = true;
                offset += (size_t)t->rows * t->cols;
            }
        }
    l->n = offset;
    l->data = calloc(offset, sizeof(float));
    if (!l->data) {
        cm_lora_params_close(l);
        return cm_error(CM_ERR_NOMEM, "out of memory for %zu LoRA parameters", offset);
    }
    int i = 0;
    for (int layer = 0; layer < c->n_layers; layer++)
        for (int k = 0; k < CM_LORA_N_TARGETS; k++) {
            if (!(targets & (1u << k))) continue;
            size_t slot = (size_t)layer * CM_LORA_N_TARGETS + k;
            l->a[slot] = l->data + l->tensors[i++].offset;
            l->b[slot] = l->data + l->tensors[i++].offset;
        }
    *out = l;
    return CM_OK;
}

void cm_lora_params_close(cm_lora_params *l) {
    if (!l) return;
    free(l->data);
    free(l->a);
    free(l->b);
    free(l->tensors);
    free(l);
}

void cm_lora_params_zero(cm_lora_params *l) { memset(l->data, 0, l->n * sizeof(float)); }
