/* AdamW with decoupled weight decay and bias correction (FACTS 5, torch.optim.AdamW semantics), global-norm
 * gradient clipping (torch.nn.utils.clip_grad_norm_) and the learning-rate schedule. The update works on a
 * range of the flat parameter buffer, so that data-parallel ranks can each update their own shard (ZeRO-1). */
#ifndef CAMELID_OPTIM_H
#define CAMELID_OPTIM_H

#include <stddef.h>

#include "camelid/pool.h"
#include "camelid/train.h"

typedef struct cm_adamw_config {
    float beta1, beta2, eps, weight_decay; /* decay applies to matrices (2-D tensors) only */
} cm_adamw_config;

/* torch's defaults with weight decay 0.1: (0.9, 0.999, 1e-8, 0.1). */
cm_adamw_config cm_adamw_defaults(void);

/* One AdamW update of parameters [begin, end) (in floats) of p with gradients g and moments m, v (same layout
 * as p; only that range is read or written). `t` is the step number, from 1, for the bias correction. */
void cm_adamw_update(const cm_adamw_config *c, float lr, long t, cm_params *p, const cm_params *g, float *m,
                     float *v, size_t begin, size_t end);

/* cm_adamw_update with the range split across the pool's threads (the same values: every element's update
 * is independent). */
void cm_adamw_update_pool(const cm_adamw_config *c, float lr, long t, cm_params *p, const cm_params *g, float *m,
                          float *v, size_t begin, size_t end, cm_pool *pool);

/* Sum of squares of the floats [begin, end) of g (in double). */
double cm_grad_sumsq(const cm_params *g, size_t begin, size_t end);
/* The same split across the pool (partial sums per thread added in thread order: deterministic for a given
 * thread count, not bitwise equal to cm_grad_sumsq). */
double cm_grad_sumsq_pool(const cm_params *g, size_t begin, size_t end, cm_pool *pool);
/* Scale every gradient so that the global norm `norm` becomes at most `max_norm` (no-op when max_norm <= 0
 * or the norm is below it). Returns the factor applied. */
float cm_grad_clip(cm_params *g, double norm, float max_norm);

typedef enum { CM_LR_CONSTANT = 0, CM_LR_COSINE } cm_lr_kind;

typedef struct cm_lr_schedule {
    cm_lr_kind kind;
    float lr;       /* peak */
    int warmup;     /* linear warm-up steps: step s < warmup uses lr * (s + 1) / warmup */
    int steps;      /* horizon of the cosine */
    float min_frac; /* the cosine decays to lr * min_frac */
} cm_lr_schedule;

/* The learning rate of optimizer step s (0-based). */
float cm_lr_at(const cm_lr_schedule *s, int step);

#endif
