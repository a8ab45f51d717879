/* The arena's store: battles (two anonymous models answering one prompt) and the votes on them, in SQLite
 * (WAL; each vote one transaction with synchronous=FULL, committed before it is acknowledged, so a vote
 * the server answered survives `kill -9` and power loss). Tables:
 *   arena_battles (id TEXT PRIMARY KEY, created, model_a, model_b, prompt, system, answer_a, answer_b)
 *   arena_votes   (id INTEGER PRIMARY KEY, battle_id TEXT UNIQUE, created, model_a, model_b, winner)
 * with winner in FastChat's words ("model_a", "model_b", "tie", "tie (bothbad)"); the votes' id order is
 * the log order online Elo runs in. The UNIQUE battle_id makes "one vote per battle" hold even between
 * processes sharing the file. Thread-safe. */
#ifndef CAMELID_ARENA_H
#define CAMELID_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "camelid/elo.h"
#include "camelid/status.h"

typedef struct cm_arena cm_arena;

/* Open (creating the tables) `path`, or an in-memory store when path is NULL. With `must_exist`, a
 * missing file is an error instead of a new database. */
cm_status cm_arena_open(const char *path, bool must_exist, cm_arena **out);
void cm_arena_close(cm_arena *a);

/* Pick two different models out of n (>= 2) at random, in random order. */
void cm_arena_pick(cm_arena *a, int n, int *first, int *second);

/* Record a new battle before its answers are generated (so a vote on it is accepted however the
 * generation ends). */
cm_status cm_arena_add_battle(cm_arena *a, const char *id, const char *model_a, const char *model_b,
                              const char *prompt, const char *system);
/* Store the two answers (for judging or export later). */
cm_status cm_arena_set_answers(cm_arena *a, const char *id, const char *answer_a, const char *answer_b);

typedef enum {
    CM_ARENA_VOTED = 0,
    CM_ARENA_UNKNOWN_BATTLE,
    CM_ARENA_ALREADY_VOTED,
} cm_arena_vote_result;

/* Vote on battle `id` in one transaction. On CM_OK, *result says what happened; when the vote counted
 * (or the battle had one already), model_a / model_b (cap bytes each) get the battle's models. */
cm_status cm_arena_vote(cm_arena *a, const char *id, cm_vote winner, cm_arena_vote_result *result,
                        char *model_a, char *model_b, size_t cap);

/* Every vote, in log order, appended to `out` (initialised by the caller). */
cm_status cm_arena_read_votes(cm_arena *a, cm_battles *out);

/* The leaderboard JSON (elo.h's cm_leaderboard_json) of every vote so far. It is cached and recomputed
 * only when votes were added (by anyone writing the file). Malloc'd; NULL with an error set. */
char *cm_arena_leaderboard_json(cm_arena *a, const cm_rating_params *p);

#endif
