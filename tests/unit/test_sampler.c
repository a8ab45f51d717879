#include "camelid/sampler.h"
#include "check.h"

#define V 6

static int draw(cm_sampler_params p, const float *logits_in, const int32_t *hist, int n_hist) {
    cm_sampler *s;
    if (cm_sampler_open(&p, V, &s) != CM_OK) return -1;
    float logits[V];
    memcpy(logits, logits_in, sizeof logits);
    int t = cm_sampler_sample(s, logits, hist, n_hist);
    cm_sampler_close(s);
    return t;
}

int main(void) {
    const float logits[V] = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f, 2.9f};
    cm_sampler_params p = cm_sampler_defaults();
    CHECK(p.temperature == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f);

    /* greedy */
    p.temperature = 0.0f;
    CHECK(draw(p, logits, NULL, 0) == 1);
    /* repetition penalty divides a positive logit: 3.0 / 2 = 1.5 < 2.9 */
    p.repeat_penalty = 2.0f;
    int32_t hist[1] = {1};
    CHECK(draw(p, logits, hist, 1) == 5);
    p.repeat_last_n = 0; /* off */
    CHECK(draw(p, logits, hist, 1) == 1);

    /* top-k 1 is greedy whatever the seed */
    p = cm_sampler_defaults();
    p.top_k = 1;
    for (uint64_t seed = 1; seed < 50; seed++) {
        p.seed = seed;
        CHECK(draw(p, logits, NULL, 0) == 1);
    }
    /* min-p 0.9 keeps only tokens within 10% of the top probability: ids 1 (3.0) and 5 (2.9) */
    p = cm_sampler_defaults();
    p.min_p = 0.9f;
    p.top_p = 1.0f;
    int seen1 = 0, seen5 = 0;
    for (uint64_t seed = 1; seed < 200; seed++) {
        p.seed = seed;
        int t = draw(p, logits, NULL, 0);
        CHECK(t == 1 || t == 5);
        seen1 += t == 1;
        seen5 += t == 5;
    }
    CHECK(seen1 > 0 && seen5 > 0);
    /* top-p 0.5: softmax of the logits puts 0.33 on id 1 and 0.30 on id 5; together they exceed 0.5 */
    p.min_p = 0.0f;
    p.top_p = 0.5f;
    for (uint64_t seed = 1; seed < 200; seed++) {
        p.seed = seed;
        int t = draw(p, logits, NULL, 0);
        CHECK(t == 1 || t == 5);
    }
    /* the same seed gives the same draw; the stage order is parsed and validated */
    p = cm_sampler_defaults();
    p.seed = 1234;
    CHECK(draw(p, logits, NULL, 0) == draw(p, logits, NULL, 0));
    CHECK_OK(cm_sampler_parse_order("temperature;top_p", &p));
    CHECK(p.n_order == 2 && p.order[0] == CM_SAMPLE_TEMPERATURE && p.order[1] == CM_SAMPLE_TOP_P);
    CHECK_OK(cm_sampler_parse_order("top-k,min-p,temp", &p));
    CHECK(p.n_order == 3 && p.order[1] == CM_SAMPLE_MIN_P);
    CHECK_FAIL(cm_sampler_parse_order("top_k;typical", &p), "typical");
    p = cm_sampler_defaults();
    p.top_p = 1.5f;
    CHECK_FAIL(cm_sampler_params_validate(&p), "top-p");

    /* llama2.c's xorshift*: the first draws from seed 42, as run.c's random_f32 gives them */
    uint64_t state = 42;
    float a = cm_rng_f32(&state), b = cm_rng_f32(&state);
    CHECK(a >= 0.0f && a < 1.0f && b >= 0.0f && b < 1.0f && a != b);
    CHECK_DONE();
}
