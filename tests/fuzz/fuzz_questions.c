/* libFuzzer target: question files (JSON Lines of FastChat questions). Accepted files have questions with
 * 1..64 non-empty turns and an id; rejected ones name the file and a line. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/questions.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cm_questions q;
    if (cm_questions_parse((const char *)data, size, "fuzz.jsonl", &q) != CM_OK) {
        if (strncmp(cm_last_error(), "fuzz.jsonl:", 11) != 0) abort();
        return 0;
    }
    for (size_t i = 0; i < q.n; i++) {
        const cm_question *x = &q.items[i];
        if (!x->id_json || x->n_turns < 1 || x->n_turns > CM_QUESTION_MAX_TURNS || x->line < 1) abort();
        for (size_t k = 0; k < x->n_turns; k++)
            if (!x->turns[k] || !x->turns[k][0]) abort();
    }
    cm_questions_free(&q);
    return 0;
}
