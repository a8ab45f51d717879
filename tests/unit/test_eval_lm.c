/* The model interface (eval_lm.h) against direct forwards on stories260K: per-request log-likelihoods and
 * is_greedy equal a fresh forward of the same tokens, whatever the batch order and prefix sharing; lm-eval's
 * left truncation for a prompt longer than 512 tokens; the request encoding; greedy generation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/eval_lm.h"
#include "camelid/llama.h"
#include "check.h"

#define REQ(c, nc, x, nx)                                                                                    \
    { (c), (nc), (x), (nx), NULL, 0, false, false }

static cm_model *model;
static cm_tokenizer *tok;

/* Sum of log p(cont | ctx) and greediness from one fresh forward of (ctx+cont)[-(ctx_len+1):][:-1]. */
static double direct(const int32_t *ctx, int n_ctx, const int32_t *cont, int n_cont, int ctx_len,
                     bool *greedy) {
    int F = n_ctx + n_cont, start = F > ctx_len + 1 ? F - (ctx_len + 1) : 0, N = F - 1 - start;
    int32_t *full = malloc((size_t)F * sizeof *full);
    memcpy(full, ctx, (size_t)n_ctx * sizeof *full);
    memcpy(full + n_ctx, cont, (size_t)n_cont * sizeof *full);
    int V = model->cfg.vocab_size;
    float *logits = malloc((size_t)N * V * sizeof *logits);
    cm_state *s;
    CHECK_OK(cm_state_open(model, ctx_len, 64, 1, &s));
    CHECK_OK(cm_forward(model, s, full + start, N, 0, logits, true));
    double sum = 0;
    *greedy = true;
    for (int i = 0; i < n_cont; i++) {
        const float *row = logits + (size_t)(N - n_cont + i) * V;
        int best = 0;
        for (int j = 1; j < V; j++)
            if (row[j] > row[best]) best = j;
        double mx = row[best], z = 0;
        for (int j = 0; j < V; j++) z += exp(row[j] - mx);
        sum += row[cont[i]] - mx - log(z);
        *greedy = *greedy && best == cont[i];
    }
    cm_state_close(s);
    free(logits);
    free(full);
    return sum;
}

static int32_t *encode(const char *text, bool bos, int *n) {
    int32_t *ids;
    size_t k;
    CHECK_OK(cm_tokenizer_encode(tok, text, strlen(text), bos, false, &ids, &k));
    *n = (int)k;
    return ids;
}

static void test_batch(void) {
    cm_lm *lm;
    CHECK_OK(cm_lm_open_local(model, tok, 0, 2, 1, &lm));
    int nc1, nc2, na, nb, nc, nd, nlong;
    int32_t *c1 = encode("Once upon a time, there was a little girl", true, &nc1);
    int32_t *c2 = encode("Once upon a time, there was a big dog", true, &nc2);
    int32_t *a = encode(" A", false, &na), *b = encode(" B", false, &nb), *c = encode(" C", false, &nc),
            *d = encode(" D", false, &nd);
    /* the continuation as it tokenizes after the context (no dummy-prefix space of its own) */
    int32_t *lng, *ctx_tmp;
    int n_tmp;
    const char *p = "Once upon a time, there was a little girl",
               *cont = " named Lily. She loved to play outside in the park.";
    CHECK_OK(cm_lm_encode_pair(lm, p, strlen(p), cont, strlen(cont), &ctx_tmp, &n_tmp, &lng, &nlong));
    CHECK(n_tmp == nc1 && !memcmp(ctx_tmp, c1, (size_t)nc1 * 4));
    free(ctx_tmp);
    cm_ll_request reqs[] = {
        REQ(c1, nc1, a, na),      REQ(c1, nc1, b, nb),         REQ(c1, nc1, c, nc), REQ(c1, nc1, d, nd),
        REQ(c2, nc2, lng, nlong), REQ(c1, nc1, lng, nlong),    REQ(c2, nc2, a, na), REQ(c1, nc1, lng, 3),
        REQ(c2, 5, lng, nlong),   REQ(c1, 1, c1 + 1, nc1 - 1),
    };
    size_t n = sizeof reqs / sizeof *reqs;
    CHECK_OK(cm_lm_loglikelihood(lm, reqs, n));
    for (size_t i = 0; i < n; i++) {
        bool g;
        double want = direct(reqs[i].ctx, reqs[i].n_ctx, reqs[i].cont, reqs[i].n_cont, 512, &g);
        CHECK_NEAR(reqs[i].logprob, want, 1e-4);
        CHECK(reqs[i].is_greedy == g);
        CHECK(!reqs[i].truncated);
    }
    /* " named Lily. She loved to play outside in the park." is stories260K's greedy continuation */
    CHECK(reqs[5].is_greedy);
    CHECK(!reqs[0].is_greedy || !reqs[1].is_greedy);
    const cm_lm_stats *st = cm_lm_get_stats(lm);
    CHECK(st->n_requests == (int64_t)n);
    CHECK(st->tokens_forwarded < st->tokens_requested); /* the shared contexts ran once */
    /* the same batch again (now fully cached) gives the same numbers */
    double first[16];
    for (size_t i = 0; i < n; i++) first[i] = reqs[i].logprob;
    CHECK_OK(cm_lm_loglikelihood(lm, reqs, n));
    for (size_t i = 0; i < n; i++) CHECK_NEAR(reqs[i].logprob, first[i], 1e-5);

    /* truncation: a context of 600+ tokens keeps its last tokens; the continuation is never cut */
    char *text = malloc(20000);
    text[0] = 0;
    while (strlen(text) < 3000) strcat(text, "The cat sat on the mat and looked at the big red ball. ");
    int nt;
    int32_t *t = encode(text, true, &nt);
    CHECK(nt > 600);
    cm_ll_request tr[] = {REQ(t, nt, lng, nlong), REQ(t, nt - 100, lng, nlong), REQ(t, 400, lng, nlong)};
    CHECK_OK(cm_lm_loglikelihood(lm, tr, 3));
    for (int i = 0; i < 3; i++) {
        bool g;
        double want = direct(tr[i].ctx, tr[i].n_ctx, tr[i].cont, tr[i].n_cont, 512, &g);
        CHECK_NEAR(tr[i].logprob, want, 1e-4);
        CHECK(tr[i].is_greedy == g);
    }
    CHECK(tr[0].truncated && tr[1].truncated && !tr[2].truncated);
    CHECK(cm_lm_get_stats(lm)->n_truncated == 2);
    /* a continuation longer than the context is refused */
    cm_ll_request too_long = REQ(t, 1, t, 513);
    CHECK_FAIL(cm_lm_loglikelihood(lm, &too_long, 1), "longer than the context");
    free(t);
    free(text);
    free(c1), free(c2), free(a), free(b), free(c), free(d), free(lng);
    cm_lm_close(lm);
}

static void test_encode_pair(void) {
    cm_lm *lm;
    CHECK_OK(cm_lm_open_local(model, tok, 0, 1, 1, &lm));
    int32_t *x, *y, *x2, *y2;
    int nx, ny, nx2, ny2;
    const char *ctx = "Once upon a time:", *ctx_sp = "Once upon a time: ";
    CHECK_OK(cm_lm_encode_pair(lm, ctx, strlen(ctx), " A", 2, &x, &nx, &y, &ny));
    /* trailing whitespace moves into the continuation */
    CHECK_OK(cm_lm_encode_pair(lm, ctx_sp, strlen(ctx_sp), "A", 1, &x2, &nx2, &y2, &ny2));
    CHECK(nx == nx2 && ny == ny2 && !memcmp(x, x2, (size_t)nx * 4) && !memcmp(y, y2, (size_t)ny * 4));
    int nw;
    int32_t *w = encode("Once upon a time: A", true, &nw);
    CHECK(x[0] == 1 && nw == nx + ny && !memcmp(w, x, (size_t)nx * 4) && !memcmp(w + nx, y, (size_t)ny * 4));
    free(x), free(y), free(x2), free(y2), free(w);
    CHECK_FAIL(cm_lm_encode_pair(lm, ctx, strlen(ctx), "", 0, &x, &nx, &y, &ny), "adds no tokens");
    cm_lm_close(lm);
}

static void test_generate(void) {
    cm_lm *lm;
    CHECK_OK(cm_lm_open_local(model, tok, 0, 1, 1, &lm));
    const char *p = "Once upon a time, there was a little girl";
    cm_lm_gen_params gp = {.max_tokens = 30};
    char *out;
    CHECK_OK(cm_lm_generate(lm, p, strlen(p), &gp, &out));
    CHECK(strncmp(out, " named Lily. She loved to play outside in the park.", 51) == 0);
    free(out);
    const char *stop[] = {"park"};
    cm_lm_gen_params gs = {.max_tokens = 30, .stop = stop, .n_stop = 1};
    CHECK_OK(cm_lm_generate(lm, p, strlen(p), &gs, &out));
    CHECK(strcmp(out, " named Lily. She loved to play outside in the ") == 0);
    free(out);
    /* log-likelihoods after a generation (the cache was reused) are still exact */
    int nc, nl;
    int32_t *c, *l;
    CHECK_OK(cm_lm_encode_pair(lm, p, strlen(p), " named Lily.", 12, &c, &nc, &l, &nl));
    cm_ll_request r = REQ(c, nc, l, nl);
    CHECK_OK(cm_lm_loglikelihood(lm, &r, 1));
    bool g;
    CHECK_NEAR(r.logprob, direct(c, nc, l, nl, 512, &g), 1e-4);
    CHECK(r.is_greedy && g);
    free(c), free(l);
    cm_lm_close(lm);
}

int main(void) {
    const char *dir = cm_test_shared("models/stories260K/stories260K.bin");
    CHECK_OK(cm_model_open(dir, &model));
    CHECK_OK(cm_tokenizer_open(cm_test_shared("models/stories260K/tok512.bin"), 512, &tok));
    if (!model || !tok) CHECK_DONE();
    test_batch();
    test_encode_pair();
    test_generate();
    cm_tokenizer_close(tok);
    cm_model_close(model);
    CHECK_DONE();
}
