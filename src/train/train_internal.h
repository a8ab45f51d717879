/* Shared inside src/train: checkpoints and small helpers of the training loop. */
#ifndef CAMELID_TRAIN_INTERNAL_H
#define CAMELID_TRAIN_INTERNAL_H

#include "camelid/tokenizer.h"
#include "camelid/train.h"

/* Write RUN_DIR/checkpoints/step-NNNNNN atomically (see checkpoint.c) and point RUN_DIR/latest at it;
 * *written (may be NULL) receives the folder's path. */
cm_status cm_train_checkpoint_save(const char *out_dir, int step, const cm_params *p, const float *m,
                                   const float *v, const cm_tokenizer *tok, const char *state_json,
                                   char **written);
/* Load a checkpoint into p (whose config must match), m and v; *state_json gets trainer_state.json. */
cm_status cm_train_checkpoint_load(const char *ckpt_dir, cm_params *p, float *m, float *v, char **state_json);
/* rm -r of a folder of plain files. */
cm_status cm_train_remove_dir(const char *dir);

#endif
