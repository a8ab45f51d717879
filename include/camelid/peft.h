/* PEFT LoRA adapters on disk (FACTS 6), for the adapters camelid trains: adapter_config.json and
 * adapter_model.safetensors exactly as PEFT writes them (keys base_model.model.model.layers.N.<module>.lora_A/B
 * .weight, F32, metadata {"format": "pt"}), in HF row order: on a base stored with interleaved RoPE the q_proj /
 * k_proj lora_B rows are permuted (FACTS 1.4) on save and back on load. (Merging an adapter into a model for
 * inference is cm_model_merge_adapter in camelid/lora.h.) */
#ifndef CAMELID_PEFT_H
#define CAMELID_PEFT_H

#include "camelid/train.h"

/* Write l into folder `dir` (created): adapter_config.json (r, lora_alpha, lora_dropout, target_modules, ...;
 * base_model_name_or_path = `base_name`) and adapter_model.safetensors, each atomically. */
cm_status cm_peft_save(const cm_lora_params *l, const char *base_name, const char *dir);
/* Read the tensors of a PEFT adapter folder into l (whose config, rank and targets must match the file's:
 * a tensor missing, extra or of another shape is an error naming it). */
cm_status cm_peft_load(cm_lora_params *l, const char *dir);
/* Parse targets "q_proj,k_proj,..." (or "all") into a cm_lora_target bit mask. */
cm_status cm_lora_parse_targets(const char *list, unsigned *mask);

#endif
