/* The serving scheduler on stories260K: jobs decoding together (and waiting in the queue) give exactly the
 * text cm_generate gives alone; stop strings, max_tokens, cancellation and a full queue behave. */
#include "camelid/generate.h"
#include "camelid/serve_sched.h"
#include "check.h"

typedef struct {
    char *buf;
    size_t len;
} text;

static int collect(void *user, const char *s, size_t n) {
    text *t = user;
    t->buf = realloc(t->buf, t->len + n + 1);
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
    return 0;
}

static char *solo(const cm_model *m, const cm_tokenizer *tok, const int32_t *ids, int n, int n_predict,
                  const char *stop) {
    cm_state *st;
    cm_sampler *sp;
    cm_sampler_params p = cm_sampler_defaults();
    p.temperature = 0;
    CHECK_OK(cm_state_open(m, 0, n, 1, &st));
    CHECK_OK(cm_sampler_open(&p, m->cfg.vocab_size, &sp));
    const char *stops[1] = {stop};
    cm_generate_params gp = {.n_predict = n_predict, .stop = stops, .n_stop = stop ? 1 : 0};
    text t = {calloc(1, 1), 0};
    cm_generate_result r;
    CHECK_OK(cm_generate(m, tok, st, sp, ids, n, &gp, collect, &t, &r));
    free(r.tokens);
    cm_sampler_close(sp);
    cm_state_close(st);
    return t.buf;
}

static char *drain(cm_job *j, cm_finish *finish, int *n_generated) {
    text t = {calloc(1, 1), 0};
    cm_job_update u;
    for (;;) {
        if (!cm_job_wait(j, 1000, &u)) continue;
        if (u.text) collect(&t, u.text, u.len);
        free(u.text);
        if (u.finish != CM_FINISH_NONE) break;
    }
    *finish = u.finish;
    *n_generated = u.n_generated;
    return t.buf;
}

int main(void) {
    cm_model *m;
    cm_tokenizer *tok;
    CHECK_OK(cm_model_open(cm_test_shared("models/stories260K/stories260K.bin"), &m));
    CHECK_OK(cm_tokenizer_open(cm_test_shared("models/stories260K/tok512.bin"), 512, &tok));
    if (check_failures) return 1;
    const char *prompts[6] = {"Once upon a time", "The cat sat", "Tom and Sue went",
                              "A big dog",        "Lily liked",  "Ben"};
    int32_t *ids[6];
    size_t n_ids[6];
    for (int i = 0; i < 6; i++)
        CHECK_OK(cm_tokenizer_encode(tok, prompts[i], strlen(prompts[i]), true, false, &ids[i], &n_ids[i]));

    cm_sched *s;
    cm_sched_params sp = {.parallel = 4, .ctx = 0, .threads = 2, .queue_depth = 2};
    CHECK_OK(cm_sched_open(m, tok, &sp, &s));
    cm_sampler_params greedy = cm_sampler_defaults();
    greedy.temperature = 0;
    cm_job *jobs[6];
    for (int i = 0; i < 6; i++) {
        cm_job_params jp = {
            .prompt = ids[i], .n_prompt = (int)n_ids[i], .max_tokens = 60, .sampling = greedy};
        CHECK(cm_sched_submit(s, &jp, &jobs[i]) == CM_SUBMIT_OK);
    }
    /* 4 slots + 2 queued: a seventh does not fit */
    cm_job *extra = NULL;
    cm_job_params jp7 = {.prompt = ids[0], .n_prompt = (int)n_ids[0], .max_tokens = 5, .sampling = greedy};
    cm_submit_result r7 = cm_sched_submit(s, &jp7, &extra);
    CHECK(r7 == CM_SUBMIT_FULL || r7 == CM_SUBMIT_OK); /* OK only if a slot already freed */
    if (extra) cm_job_release(extra);
    for (int i = 0; i < 6; i++) {
        cm_finish f;
        int ng;
        char *got = drain(jobs[i], &f, &ng), *want = solo(m, tok, ids[i], (int)n_ids[i], 60, NULL);
        CHECK(f == CM_FINISH_LENGTH || f == CM_FINISH_STOP);
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "job %d: [%s] vs solo [%s]\n", i, got, want);
            check_failures++;
        }
        free(got);
        free(want);
        cm_job_release(jobs[i]);
    }

    /* a stop string: the text before it, as cm_generate */
    cm_job *j;
    const char *stop[1] = {"park"};
    cm_job_params js = {.prompt = ids[0],
                        .n_prompt = (int)n_ids[0],
                        .max_tokens = 200,
                        .sampling = greedy,
                        .stop = stop,
                        .n_stop = 1};
    CHECK(cm_sched_submit(s, &js, &j) == CM_SUBMIT_OK);
    cm_finish f;
    int ng;
    char *got = drain(j, &f, &ng), *want = solo(m, tok, ids[0], (int)n_ids[0], 200, "park");
    CHECK(f == CM_FINISH_STOP && !strcmp(got, want));
    free(got);
    free(want);
    cm_job_release(j);

    /* a cancelled job frees its slot; the scheduler goes on */
    cm_job_params jl = {.prompt = ids[1], .n_prompt = (int)n_ids[1], .max_tokens = -1, .sampling = greedy};
    CHECK(cm_sched_submit(s, &jl, &j) == CM_SUBMIT_OK);
    cm_job_cancel(j);
    got = drain(j, &f, &ng);
    CHECK(f == CM_FINISH_CANCELLED || f == CM_FINISH_STOP || f == CM_FINISH_LENGTH);
    free(got);
    cm_job_release(j);
    cm_sched_stats st;
    cm_sched_get_stats(s, &st);
    CHECK(st.busy == 0 && st.queued == 0 && st.jobs_total >= 8);

    /* bad submissions */
    cm_job_params bad = {.prompt = ids[0], .n_prompt = 0, .sampling = greedy};
    CHECK(cm_sched_submit(s, &bad, &j) == CM_SUBMIT_INVALID);
    int32_t oob = 9999;
    bad = (cm_job_params){.prompt = &oob, .n_prompt = 1, .sampling = greedy};
    CHECK(cm_sched_submit(s, &bad, &j) == CM_SUBMIT_INVALID);

    /* stopping cancels what runs; later submissions are refused */
    CHECK(cm_sched_submit(s, &jl, &j) == CM_SUBMIT_OK);
    cm_sched_stop(s);
    got = drain(j, &f, &ng);
    CHECK(f == CM_FINISH_CANCELLED || f == CM_FINISH_STOP || f == CM_FINISH_LENGTH);
    free(got);
    cm_job_release(j);
    cm_job *late;
    CHECK(cm_sched_submit(s, &jl, &late) == CM_SUBMIT_CLOSED);
    cm_sched_close(s);
    for (int i = 0; i < 6; i++) free(ids[i]);
    cm_tokenizer_close(tok);
    cm_model_close(m);
    CHECK_DONE();
}
