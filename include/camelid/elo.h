/* Chatbot-Arena ratings from pairwise votes (FACTS 9.6), computed as FastChat's elo_analysis does:
 *   - online Elo: K = 4, scale 400, base 10, initial 1000, one pass over the battles in log order;
 *   - Bradley–Terry: the maximum-likelihood ratings (a tie counts half a win for each side), shown as
 *     400 r + 1000 with the r averaging 0, so the ratings average 1000;
 *   - 95% intervals: the 2.5 / 97.5 % quantiles (numpy's linear rule) of BT refits on 100 bootstrap
 *     resamples of the battles, drawn from a fixed seed, so a leaderboard is reproducible.
 * Separable data (a model that never loses, or a group that never scores against the rest) has no finite
 * MLE: FastChat's L-BFGS-B stops wherever its tolerance or iteration limit leaves it. camelid tests Ford's
 * condition (the digraph "won or tied against" is strongly connected) and, only when it fails, maximises the
 * likelihood times a Gaussian prior on r with precision `prior` (default 1e-3: a standard deviation of ~32 in
 * r, about 12,600 rating points), which keeps every rating finite. Data with a finite MLE gets the plain MLE,
 * so the prior moves no rating there at all. */
#ifndef CAMELID_ELO_H
#define CAMELID_ELO_H

#include <stddef.h>
#include <stdint.h>

#include "camelid/status.h"

/* A vote, in FastChat's words. */
typedef enum {
    CM_VOTE_A = 0,   /* "model_a" */
    CM_VOTE_B,       /* "model_b" */
    CM_VOTE_TIE,     /* "tie" */
    CM_VOTE_BOTHBAD, /* "tie (bothbad)": a tie for the ratings */
} cm_vote;

/* "model_a", "model_b", "tie", "tie (bothbad)". */
const char *cm_vote_name(cm_vote v);
/* Parse FastChat's winner names; false if `s` is none of them. */
int cm_vote_parse(const char *s, cm_vote *out);

typedef struct cm_battle {
    uint32_t a, b; /* indices into cm_battles.models; a != b */
    cm_vote winner;
} cm_battle;

/* Battles in log order, with the model names interned. */
typedef struct cm_battles {
    char **models; /* n_models names, in order of first appearance */
    size_t n_models;
    cm_battle *items;
    size_t n;
    /* private: capacities and the name index */
    size_t cap_models, cap, index_cap;
    uint32_t *index;
} cm_battles;

#define CM_BATTLE_MAX_NAME 256 /* bytes in a model name */

void cm_battles_init(cm_battles *b);
void cm_battles_free(cm_battles *b);
/* Append one battle. Names must be 1..256 bytes and differ. */
cm_status cm_battles_add(cm_battles *b, const char *model_a, const char *model_b, cm_vote winner);

/* Parse FastChat's battle format: a JSON array of objects, or JSON Lines (one object per line, blank lines
 * skipped), each with "model_a", "model_b" (strings) and "winner" ("model_a", "model_b", "tie" or
 * "tie (bothbad)"); other fields are ignored. A bad row fails the whole parse with a message naming
 * `name`, the row's line and what is wrong. Appends to `out` (initialised by the caller). */
cm_status cm_battles_parse(const char *text, size_t len, const char *name, cm_battles *out);
/* cm_battles_parse of a file (mapped, not copied). */
cm_status cm_battles_read(const char *path, cm_battles *out);

typedef struct cm_rating_params {
    double k;      /* online Elo step (4) */
    double scale;  /* 400 */
    double base;   /* 10 */
    double init;   /* 1000 */
    int rounds;    /* bootstrap rounds (100); 0 = no intervals (they equal the point) */
    uint64_t seed; /* bootstrap seed (0) */
    double prior;  /* precision of the prior on r used for separable data (1e-3); 0 = none (an error then) */
} cm_rating_params;

cm_rating_params cm_rating_defaults(void);

#define CM_BT_MAX_MODELS 4096 /* models in one Bradley–Terry fit */

/* Online Elo in log order: ratings[i] for models[i]. Exactly FastChat's compute_elo arithmetic. */
void cm_elo_online(const cm_battles *b, const cm_rating_params *p, double *ratings);

/* Bradley–Terry fit: ratings[i] = scale * r_i + init, by Newton's method to a gradient of ~1e-10 per
 * battle. Without a finite MLE (see above) it uses the prior, or fails (CM_ERR_ARG) when prior is 0. */
cm_status cm_bt_fit(const cm_battles *b, const cm_rating_params *p, double *ratings);

typedef struct cm_leaderboard_row {
    char *model;
    double elo;              /* online Elo */
    double bt;               /* Bradley–Terry MLE on all battles */
    double bt_lo, bt_hi;     /* the bootstrap's 2.5 / 97.5 % quantiles, widened to hold bt if they miss it */
    double boot_lo, boot_hi; /* the quantiles as computed */
    uint64_t battles, wins;
} cm_leaderboard_row;

typedef struct cm_leaderboard {
    cm_leaderboard_row *rows; /* by bt, highest first (ties by name) */
    size_t n;
    size_t n_battles;
} cm_leaderboard;

cm_status cm_leaderboard_compute(const cm_battles *b, const cm_rating_params *p, cm_leaderboard *out);
void cm_leaderboard_free(cm_leaderboard *lb);
/* {"n_battles": N, "models": [{"model","elo","bt","bt_lo","bt_hi","battles","wins"}...]} as a malloc'd
 * string (NULL if out of memory); numbers in full double precision. */
char *cm_leaderboard_json(const cm_leaderboard *lb);

#endif
