/* LoRA adapters at inference (FACTS 6): a PEFT folder (adapter_config.json + adapter_model.safetensors)
 * merged into a model's weights, W' = W + s * (B @ A) with s = lora_alpha / r (lora_alpha / sqrt(r) with
 * use_rslora). */
#ifndef CAMELID_LORA_H
#define CAMELID_LORA_H

#include "camelid/model.h"

/* Merge the PEFT LoRA adapter in `adapter_dir` into `m`. Adapted weights (q/k/v/o/gate/up/down of any layer)
 * become new buffers owned by the model, in the weight's own dtype (F32/F16/BF16; the product is computed in
 * f32 and rounded once); the model's files are untouched. PEFT adapters are in HF row order: on a model
 * stored with interleaved RoPE (llama2.c, GGUF) the q_proj/k_proj lora_B rows are permuted to match (FACTS
 * 1.4). Supported config: peft_type "LORA", r, lora_alpha, use_rslora, target_modules (list, regex string or
 * "all-linear"), exclude_modules, layers_to_transform, rank_pattern, alpha_pattern; bias must be "none",
 * fan_in_fan_out false, use_dora false, modules_to_save empty. Every tensor of the file must be the lora_A or
 * lora_B of a targeted module (the adapter name "default" may appear in the key) with shapes that fit the
 * model, and every targeted module must have both. Any problem is a one-line error naming the file (and key)
 * and leaves `m` unchanged. */
cm_status cm_model_merge_adapter(cm_model *m, const char *adapter_dir);

#endif
