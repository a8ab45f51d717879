/* Arena ratings (elo.h) against an independent computation (scripts/golden/arena_golden.py: FastChat's
 * compute_elo loop and a scipy L-BFGS-B Bradley–Terry fit on tests/data/arena/battles.json), plus the
 * bootstrap intervals, the separable-data prior and the battle-file parser's errors. */
#include <jansson.h>
#include <stdbool.h>

#include "camelid/elo.h"
#include "check.h"

typedef struct {
    char name[64];
    double elo, bt, bt_tight, lo, hi;
    int battles, wins;
} golden_row;

static const char *testdata(const char *rel) {
    static char buf[4][4096];
    static int k;
    const char *root = getenv("CAMELID_TESTDATA");
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "%s/%s", root ? root : "tests/data", rel);
    return b;
}

static int read_golden(golden_row *g, int cap) {
    FILE *f = fopen(testdata("arena/golden.tsv"), "r");
    if (!f) return 0;
    char line[1024];
    int n = 0;
    while (n < cap && fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        char *save, *tok = strtok_r(line, "\t\n", &save);
        snprintf(g[n].name, sizeof g[n].name, "%s", tok);
        double *d[] = {&g[n].elo, &g[n].bt, &g[n].bt_tight, &g[n].lo, &g[n].hi};
        for (int i = 0; i < 5; i++) *d[i] = strtod(strtok_r(NULL, "\t\n", &save), NULL);
        g[n].battles = atoi(strtok_r(NULL, "\t\n", &save));
        g[n].wins = atoi(strtok_r(NULL, "\t\n", &save));
        n++;
    }
    fclose(f);
    return n;
}

static int model_index(const cm_battles *b, const char *name) {
    for (size_t i = 0; i < b->n_models; i++)
        if (!strcmp(b->models[i], name)) return (int)i;
    return -1;
}

static const cm_leaderboard_row *lb_row(const cm_leaderboard *lb, const char *name) {
    for (size_t i = 0; i < lb->n; i++)
        if (!strcmp(lb->rows[i].model, name)) return &lb->rows[i];
    return NULL;
}

static void test_golden(void) {
    golden_row g[16];
    int ng = read_golden(g, 16);
    CHECK(ng == 8);
    cm_battles b;
    cm_battles_init(&b);
    CHECK_OK(cm_battles_read(testdata("arena/battles.json"), &b));
    CHECK(b.n == 2000 && b.n_models == 8);
    cm_rating_params p = cm_rating_defaults();
    double elo[16], bt[16], bt0[16];
    cm_elo_online(&b, &p, elo);
    CHECK_OK(cm_bt_fit(&b, &p, bt));
    cm_rating_params plain = p;
    plain.prior = 0;
    CHECK_OK(cm_bt_fit(&b, &plain, bt0));
    double max_bt = 0, max_prior = 0, mean = 0;
    for (int i = 0; i < ng; i++) {
        int k = model_index(&b, g[i].name);
        CHECK(k >= 0);
        if (k < 0) continue;
        /* online Elo: the same doubles as FastChat's loop, bit for bit */
        if (elo[k] != g[i].elo) {
            fprintf(stderr, "elo %s: %.17g vs golden %.17g\n", g[i].name, elo[k], g[i].elo);
            check_failures++;
        }
        CHECK_NEAR(bt[k], g[i].bt, 0.5);
        max_bt = fmax(max_bt, fabs(bt[k] - g[i].bt_tight));
        max_prior = fmax(max_prior, fabs(bt[k] - bt0[k]));
        mean += bt[k] / ng;
    }
    printf("golden: Elo exact; BT max |camelid - scipy| = %.3g points; the prior moves ratings by %.3g\n",
           max_bt, max_prior);
    CHECK(max_bt < 1e-3);    /* both are converged MLEs */
    CHECK(max_prior < 0.01); /* documented in elo.h: the prior is negligible on non-separable data */
    CHECK_NEAR(mean, 1000.0, 1e-6);

    cm_leaderboard lb;
    CHECK_OK(cm_leaderboard_compute(&b, &p, &lb));
    CHECK(lb.n == 8 && lb.n_battles == 2000);
    for (size_t i = 0; i + 1 < lb.n; i++) CHECK(lb.rows[i].bt >= lb.rows[i + 1].bt);
    double max_end = 0;
    for (int i = 0; i < ng; i++) {
        const cm_leaderboard_row *r = lb_row(&lb, g[i].name);
        CHECK(r != NULL);
        if (!r) continue;
        CHECK(r->battles == (uint64_t)g[i].battles && r->wins == (uint64_t)g[i].wins);
        CHECK(r->elo == g[i].elo);
        CHECK_NEAR(r->bt, g[i].bt, 0.5);
        /* the raw bootstrap quantiles hold the point here, before any widening */
        CHECK(r->boot_lo < r->bt && r->bt < r->boot_hi);
        CHECK(r->bt_lo == r->boot_lo && r->bt_hi == r->boot_hi);
        /* FastChat draws its resamples from numpy's generator, camelid from its own: the interval ends
         * agree within the bootstrap's own noise (a few points on intervals ~45 points wide) */
        max_end = fmax(max_end, fmax(fabs(r->boot_lo - g[i].lo), fabs(r->boot_hi - g[i].hi)));
        CHECK(fabs(r->boot_lo - g[i].lo) < 0.25 * (g[i].hi - g[i].lo));
        CHECK(fabs(r->boot_hi - g[i].hi) < 0.25 * (g[i].hi - g[i].lo));
    }
    printf("bootstrap: interval ends within %.2f points of FastChat's\n", max_end);

    /* reproducible: the same seed gives the same intervals; another seed different ones */
    cm_leaderboard again, other;
    CHECK_OK(cm_leaderboard_compute(&b, &p, &again));
    cm_rating_params p2 = p;
    p2.seed = 1;
    CHECK_OK(cm_leaderboard_compute(&b, &p2, &other));
    bool same = true, differ = false;
    for (size_t i = 0; i < lb.n; i++) {
        same &= lb.rows[i].bt_lo == again.rows[i].bt_lo && lb.rows[i].bt_hi == again.rows[i].bt_hi;
        differ |= lb.rows[i].bt_lo != other.rows[i].bt_lo;
    }
    CHECK(same && differ);
    cm_leaderboard_free(&again);
    cm_leaderboard_free(&other);

    /* intervals shrink as battles grow: the first 200 battles against all 2000 */
    cm_battles few;
    cm_battles_init(&few);
    for (size_t i = 0; i < 200; i++)
        CHECK_OK(cm_battles_add(&few, b.models[b.items[i].a], b.models[b.items[i].b], b.items[i].winner));
    cm_leaderboard lbf;
    CHECK_OK(cm_leaderboard_compute(&few, &p, &lbf));
    double wf = 0, wa = 0;
    for (size_t i = 0; i < lbf.n; i++) {
        const cm_leaderboard_row *a = lb_row(&lb, lbf.rows[i].model), *f = &lbf.rows[i];
        CHECK(a != NULL);
        if (!a) continue;
        CHECK(f->bt_lo <= f->bt && f->bt <= f->bt_hi);
        CHECK(a->bt_hi - a->bt_lo < f->bt_hi - f->bt_lo);
        wf += (f->bt_hi - f->bt_lo) / lbf.n;
        wa += (a->bt_hi - a->bt_lo) / lbf.n;
    }
    printf("mean interval width: %.1f points with 200 battles, %.1f with 2000\n", wf, wa);
    CHECK(wa < 0.5 * wf); /* ~1/sqrt(10) expected */
    cm_leaderboard_free(&lbf);
    cm_battles_free(&few);

    char *json = cm_leaderboard_json(&lb);
    json_error_t je;
    json_t *o = json ? json_loads(json, 0, &je) : NULL;
    CHECK(o && json_integer_value(json_object_get(o, "n_battles")) == 2000);
    json_t *m0 = json_array_get(json_object_get(o, "models"), 0);
    CHECK(json_is_string(json_object_get(m0, "model")) && json_is_real(json_object_get(m0, "elo")) &&
          json_is_real(json_object_get(m0, "bt")) && json_is_real(json_object_get(m0, "bt_lo")) &&
          json_is_real(json_object_get(m0, "bt_hi")) && json_is_integer(json_object_get(m0, "battles")) &&
          json_is_integer(json_object_get(m0, "wins")));
    CHECK(json_real_value(json_object_get(m0, "bt")) == lb.rows[0].bt);
    json_decref(o);
    free(json);
    cm_leaderboard_free(&lb);
    cm_battles_free(&b);
}

static void test_separable(void) {
    cm_battles b;
    cm_battles_init(&b);
    CHECK_OK(cm_battles_read(testdata("arena/separable.jsonl"), &b));
    CHECK(b.n == 60 && b.n_models == 4);
    cm_rating_params p = cm_rating_defaults();
    cm_rating_params plain = p;
    plain.prior = 0;
    double r[8];
    CHECK_FAIL(cm_bt_fit(&b, &plain, r), "no finite maximum");
    cm_leaderboard lb;
    CHECK_OK(cm_leaderboard_compute(&b, &p, &lb));
    CHECK(lb.n == 4 && !strcmp(lb.rows[0].model, "champion"));
    double mean = 0;
    for (size_t i = 0; i < lb.n; i++) {
        const cm_leaderboard_row *x = &lb.rows[i];
        CHECK(isfinite(x->elo) && isfinite(x->bt) && isfinite(x->bt_lo) && isfinite(x->bt_hi));
        CHECK(x->bt_lo <= x->bt && x->bt <= x->bt_hi);
        mean += x->bt / lb.n;
    }
    printf("separable: champion at %.1f (next %.1f), interval [%.1f, %.1f]\n", lb.rows[0].bt, lb.rows[1].bt,
           lb.rows[0].bt_lo, lb.rows[0].bt_hi);
    CHECK(lb.rows[0].bt > lb.rows[1].bt + 400 && lb.rows[0].bt < 1e5);
    CHECK_NEAR(mean, 1000.0, 1e-6);
    char *json = cm_leaderboard_json(&lb);
    CHECK(json && !strstr(json, "nan") && !strstr(json, "inf"));
    free(json);
    cm_leaderboard_free(&lb);

    /* one loss for the champion makes the MLE finite: then the prior moves nothing */
    cm_battles near;
    cm_battles_init(&near);
    for (size_t i = 0; i < b.n; i++)
        CHECK_OK(cm_battles_add(&near, b.models[b.items[i].a], b.models[b.items[i].b], b.items[i].winner));
    CHECK_OK(cm_battles_add(&near, "m-two", "champion", CM_VOTE_A));
    double with_prior[8], without[8], strong[8];
    cm_rating_params big = p;
    big.prior = 10;
    CHECK_OK(cm_bt_fit(&near, &p, with_prior));
    CHECK_OK(cm_bt_fit(&near, &plain, without));
    CHECK_OK(cm_bt_fit(&near, &big, strong));
    for (size_t i = 0; i < near.n_models; i++) {
        CHECK(fabs(with_prior[i] - without[i]) < 1e-9 && fabs(strong[i] - without[i]) < 1e-9);
        CHECK(isfinite(without[i]));
    }
    int champ = model_index(&near, "champion");
    CHECK(champ >= 0);
    if (champ < 0) champ = 0;
    printf("one loss: champion at %.1f (the plain MLE, whatever the prior)\n", without[champ]);
    /* on separable data the prior is what keeps the ratings finite, and it decides where they end */
    CHECK_OK(cm_bt_fit(&b, &big, strong));
    CHECK_OK(cm_bt_fit(&b, &p, with_prior));
    CHECK(strong[champ] < with_prior[champ] - 100);
    cm_battles_free(&near);

    /* every vote for one side, two models only: still finite */
    cm_battles two;
    cm_battles_init(&two);
    for (int i = 0; i < 1000; i++) CHECK_OK(cm_battles_add(&two, "x", "y", CM_VOTE_A));
    CHECK_OK(cm_leaderboard_compute(&two, &p, &lb));
    CHECK(lb.n == 2 && isfinite(lb.rows[0].bt) && isfinite(lb.rows[0].bt_hi) && lb.rows[0].bt > 1400);
    cm_leaderboard_free(&lb);
    cm_battles_free(&two);
    cm_battles_free(&b);
}

static void test_small_cases(void) {
    cm_rating_params p = cm_rating_defaults();
    cm_battles b;
    cm_battles_init(&b);
    cm_leaderboard lb;
    CHECK_OK(cm_leaderboard_compute(&b, &p, &lb));
    char *json = cm_leaderboard_json(&lb);
    CHECK(json && !strcmp(json, "{\"n_battles\":0,\"models\":[]}"));
    free(json);
    cm_leaderboard_free(&lb);
    /* one win each way and a tie: the two are equal; Elo moves by K/2 on the first vote */
    CHECK_OK(cm_battles_add(&b, "p", "q", CM_VOTE_A));
    double e[2];
    cm_elo_online(&b, &p, e);
    CHECK(e[0] == 1002.0 && e[1] == 998.0);
    CHECK_OK(cm_battles_add(&b, "q", "p", CM_VOTE_A));
    CHECK_OK(cm_battles_add(&b, "p", "q", CM_VOTE_BOTHBAD));
    double r[2];
    CHECK_OK(cm_bt_fit(&b, &p, r));
    CHECK_NEAR(r[0], 1000.0, 1e-9);
    CHECK_NEAR(r[1], 1000.0, 1e-9);
    CHECK_OK(cm_battles_add(&b, "p", "q", CM_VOTE_A));
    CHECK_OK(cm_battles_add(&b, "q", "p", CM_VOTE_B));
    CHECK_OK(cm_bt_fit(&b, &p, r));
    /* p: 3 wins + half a tie out of 5 -> p = 3.5/5 -> r_p - r_q = log10(3.5/1.5) */
    CHECK_NEAR(r[0] - r[1], 400.0 * log10(3.5 / 1.5), 1e-4);
    CHECK_FAIL(cm_battles_add(&b, "p", "p", CM_VOTE_A), "cannot battle itself");
    CHECK_FAIL(cm_battles_add(&b, "", "p", CM_VOTE_A), "empty");
    cm_battles_free(&b);
}

static cm_status parse(const char *text, cm_battles *b) {
    cm_battles_free(b);
    cm_battles_init(b);
    return cm_battles_parse(text, strlen(text), "votes.json", b);
}

static void test_parser(void) {
    cm_battles b;
    cm_battles_init(&b);
    /* the JSON array and JSON Lines forms read the same battles */
    CHECK_OK(parse("[{\"model_a\":\"x\",\"model_b\":\"y\",\"winner\":\"model_a\"},\n"
                   " {\"model_a\":\"y\",\"model_b\":\"z\",\"winner\":\"tie (bothbad)\",\"extra\":[1,\"]\"]}]",
                   &b));
    CHECK(b.n == 2 && b.n_models == 3 && b.items[1].winner == CM_VOTE_BOTHBAD);
    CHECK_OK(parse("\xEF\xBB\xBF{\"model_a\":\"x\",\"model_b\":\"y\",\"winner\":\"model_b\"}\n\n"
                   "{\"model_a\":\"y\",\"model_b\":\"z\",\"winner\":\"tie\"}\r\n",
                   &b));
    CHECK(b.n == 2 && b.items[0].winner == CM_VOTE_B && b.items[1].winner == CM_VOTE_TIE);
    CHECK_OK(parse("  \n ", &b));
    CHECK(b.n == 0);
    CHECK_OK(parse("[ ]", &b));
    CHECK(b.n == 0);
    /* bad rows are named by file and line */
    CHECK_FAIL(parse("{\"model_a\":\"x\",\"model_b\":\"y\",\"winner\":\"model_a\"}\n"
                     "{\"model_a\":\"x\",\"model_b\":\"y\"}\n",
                     &b),
               "votes.json:2: battle 2: \"winner\" is missing");
    CHECK_FAIL(parse("[\n{\"model_a\":\"x\",\"model_b\":\"y\",\"winner\":\"model_a\"},\n\n"
                     "{\"model_a\":\"x\",\"model_b\":\"y\",\"winner\":\"a\"}\n]",
                     &b),
               "votes.json:4: battle 2: \"winner\" must be");
    CHECK_FAIL(parse("[{\"model_a\":\"x\",\n\"model_b\":\"x\",\"winner\":\"tie\"}]", &b),
               "votes.json:1: battle 1: model_a and model_b are both");
    CHECK_FAIL(parse("{\"model_a\":1,\"model_b\":\"y\",\"winner\":\"tie\"}", &b), "must be a string, got");
    CHECK_FAIL(parse("\n\n{\"model_a\":\"x\",\"model_b\":\"y\",\"winner\":\"tie\"", &b),
               "votes.json:3: battle 1: invalid JSON");
    CHECK_FAIL(parse("[{\"model_a\":\"x\",\"model_b\":\"y\",\"winner\":\"tie\"},]", &b), "trailing ','");
    CHECK_FAIL(parse("[{\"model_a\":\"x\",\"model_b\":\"y\",\"winner\":\"tie\"}", &b), "not closed");
    CHECK_FAIL(parse("[{\"model_a\":\"x\",\"model_b\":\"y\",\"winner\":\"tie\"}] x", &b), "text after");
    CHECK_FAIL(parse("[\n\n[1,2]]", &b), "votes.json:3: battle 1: a battle must be an object");
    CHECK_FAIL(parse("[{\"model_a\":\"x\",\"model_b\":\"y\",\"winner\":\"tie\",\"winner\":\"tie\"}]", &b),
               "invalid JSON");
    CHECK_FAIL(parse("{\"model_a\":\"x\\u0000\",\"model_b\":\"y\",\"winner\":\"tie\"}", &b), "NUL");
    cm_battles_free(&b);
    cm_battles_init(&b);
    CHECK_FAIL(cm_battles_read("/nonexistent/battles.json", &b), "/nonexistent/battles.json");
    cm_battles_free(&b);
}

int main(void) {
    test_golden();
    test_separable();
    test_small_cases();
    test_parser();
    CHECK_DONE();
}
