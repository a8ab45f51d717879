/* The training progress line and ^C (see train_progress.h). */
#include "train_progress.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>

static volatile sig_atomic_t interrupted = 0;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

void train_progress_catch_sigint(bool on) { signal(SIGINT, on ? on_sigint : SIG_DFL); }

bool train_progress_interrupted(void) { return interrupted != 0; }

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int train_progress_update(void *user, const cm_train_progress *p) {
    train_progress *c = user;
    if (!c->tty) return interrupted;
    double t = now_s();
    bool ends_line = p->step == p->steps || p->checkpoint || !isnan(p->val_loss);
    if (t - c->last_draw < 0.1 && !ends_line) return interrupted;
    c->last_draw = t;
    int run_steps = p->step - p->first_step + 1;
    double eta = p->elapsed_s / run_steps * (p->steps - p->step);
    int width = 24, fill = (int)((double)width * p->step / p->steps);
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r\033[Kstep %d/%d [%s] loss %.4f", p->step, p->steps, bar, p->loss);
    if (!isnan(p->val_loss)) fprintf(stderr, " val %.4f", p->val_loss);
    fprintf(stderr, "  lr %.2e  %.0f tok/s  ETA %d:%02d", p->lr, p->tokens_per_s, (int)(eta / 60), (int)eta % 60);
    if (ends_line) fputc('\n', stderr);
    fflush(stderr);
    return interrupted;
}
