/* The progress line `camelid train` and `camelid finetune` draw on a terminal, and their ^C: a SIGINT sets a
 * flag the progress callback returns, so the library ends the run after writing a checkpoint. */
#ifndef CAMELID_TRAIN_PROGRESS_H
#define CAMELID_TRAIN_PROGRESS_H

#include <stdbool.h>

#include "camelid/trainer.h"

typedef struct train_progress {
    bool tty; /* draw only on a terminal: piped, the command stays quiet */
    double last_draw;
} train_progress;

/* The cm_train_options / cm_finetune_options progress callback (user = a train_progress): redraws at most
 * every 0.1 s, and always at evaluations, checkpoints and the last step (which end the line). Returns
 * nonzero once ^C was pressed. */
int train_progress_update(void *user, const cm_train_progress *p);
/* Route SIGINT to the flag (on) or back to the default (off). */
void train_progress_catch_sigint(bool on);
bool train_progress_interrupted(void);

#endif
