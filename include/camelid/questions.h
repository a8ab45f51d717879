/* Question files: the prompts of FastChat's benchmarks, one JSON object per line (JSON Lines):
 * MT-bench / Vicuna-bench `question.jsonl` ({"question_id", "category", "turns": [...]}), the legacy
 * Vicuna-80 table ({"question_id", "text", "category"}) or plain {"prompt": "..."} rows. Used to generate
 * answers for offline battles and judging. */
#ifndef CAMELID_QUESTIONS_H
#define CAMELID_QUESTIONS_H

#include <stddef.h>

#include "camelid/status.h"

#define CM_QUESTION_MAX_TURNS 64

typedef struct cm_question {
    char *id_json;  /* "question_id" as JSON text (a number or a string), or the line number */
    char *category; /* NULL when absent */
    char **turns;   /* the user turns, in order (at least one, none empty) */
    size_t n_turns;
    size_t line;
} cm_question;

typedef struct cm_questions {
    cm_question *items;
    size_t n;
} cm_questions;

/* Parse JSON Lines (blank lines skipped). Each row needs "turns" (an array of 1..64 strings), "text" or
 * "prompt" (a string); strings must not hold NUL. A bad row fails naming `name` and its line. */
cm_status cm_questions_parse(const char *text, size_t len, const char *name, cm_questions *out);
cm_status cm_questions_read(const char *path, cm_questions *out);
void cm_questions_free(cm_questions *q);

#endif
