/* Supervised fine-tuning (Alpaca / Vicuna / Guanaco style): a base model, a chat-templated dataset with the
 * loss on assistant tokens (camelid/sft_data.h), and one of three ways to train it:
 *   full   every weight, f32 AdamW, the result an HF folder;
 *   lora   the base frozen in its own dtype, LoRA adapters on the chosen linears (PEFT init: A Kaiming-uniform,
 *          B zero), the result a PEFT adapter;
 *   qlora  the same over a base whose decoder linears are NF4 with double quantization (an NF4 folder as it is,
 *          any other base quantized as it loads, layer by layer), per-layer activation recomputation.
 * Data order is stateless (row g of the run is row g mod rows-per-epoch of epoch g / rows-per-epoch, each epoch
 * shuffled by its seed), so checkpoints resume bit for bit. */
#ifndef CAMELID_FINETUNE_H
#define CAMELID_FINETUNE_H

#include <stdbool.h>
#include <stdint.h>

#include "camelid/model.h"
#include "camelid/optim.h"
#include "camelid/sft_data.h"
#include "camelid/trainer.h"

typedef enum { CM_FT_FULL = 0, CM_FT_LORA, CM_FT_QLORA } cm_ft_mode;

typedef struct cm_finetune_options {
    cm_ft_mode mode;
    const char *out_dir;
    const char *base_name; /* adapter_config.json's base_model_name_or_path */
    const cm_tokenizer *tokenizer; /* saved with a full fine-tune */
    const cm_sft_dataset *data;
    int batch, grad_accum;
    int steps;  /* optimizer steps in total (also when resuming); 0 = from epochs */
    int epochs; /* default 1 */
    int stop_after; /* end after this step with a checkpoint, as an interruption would (0 = run to the end) */
    cm_lr_schedule lr;
    cm_adamw_config adamw;
    float clip;
    int lora_r;
    float lora_alpha, lora_dropout;
    unsigned lora_targets;
    int eval_every; /* 0: only at the last step (when there is a val split) */
    int eval_batches;
    int ckpt_every; /* 0: only at the last step */
    uint64_t seed;
    bool resume;
    int threads;
    int (*progress)(void *user, const cm_train_progress *p);
    void *user;
} cm_finetune_options;

/* Defaults of `camelid finetune`: LoRA r 8, alpha 16, dropout 0.05, all seven targets, lr 2e-4 constant after
 * 3% warm-up, batch 4, 1 epoch, AdamW (0.9, 0.999, 1e-8) without weight decay, clip 1.0, seed 1337. */
void cm_finetune_options_defaults(cm_finetune_options *o);

/* The number of optimizer steps the options give for this dataset (steps, or epochs x rows / (batch x accum),
 * rounded up). */
int cm_finetune_steps(const cm_finetune_options *o);

/* Fine-tune `base` (for qlora its non-NF4 linears are replaced by NF4 copies the run owns, until it returns). */
cm_status cm_finetune_run(const cm_finetune_options *o, cm_model *base);

#endif
