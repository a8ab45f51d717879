/* libFuzzer target: FastChat battle files (JSON array or JSON Lines) and the ratings computed from them.
 * Every accepted input gives a leaderboard with finite numbers, intervals around the point, and counts
 * that add up; a rejected one names a line. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/elo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cm_battles b;
    cm_battles_init(&b);
    if (cm_battles_parse((const char *)data, size, "fuzz.json", &b) != CM_OK) {
        if (!strstr(cm_last_error(), "fuzz.json:")) abort();
        cm_battles_free(&b);
        return 0;
    }
    for (size_t i = 0; i < b.n; i++)
        if (b.items[i].a >= b.n_models || b.items[i].b >= b.n_models || b.items[i].a == b.items[i].b) abort();
    cm_rating_params p = cm_rating_defaults();
    p.rounds = 3; /* enough to exercise the bootstrap */
    cm_leaderboard lb;
    if (b.n_models <= 64 && cm_leaderboard_compute(&b, &p, &lb) == CM_OK) {
        uint64_t battles = 0;
        for (size_t i = 0; i < lb.n; i++) {
            const cm_leaderboard_row *r = &lb.rows[i];
            if (!isfinite(r->elo) || !isfinite(r->bt) || !(r->bt_lo <= r->bt && r->bt <= r->bt_hi)) abort();
            if (r->wins > r->battles) abort();
            battles += r->battles;
        }
        if (battles != 2 * b.n || lb.n != b.n_models) abort();
        char *json = cm_leaderboard_json(&lb);
        if (!json) abort();
        free(json);
        cm_leaderboard_free(&lb);
    }
    cm_battles_free(&b);
    return 0;
}
