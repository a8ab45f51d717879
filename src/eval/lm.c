/* The local implementation of the model interface (include/camelid/eval_lm.h). */
#include "camelid/eval_lm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "camelid/generate.h"
#include "camelid/llama.h"
#include "camelid/sampler.h"
#include "camelid/strbuf.h"
#include "eval_internal.h"

struct cm_lm {
    const cm_model *m;
    const cm_tokenizer *tok;
    cm_state *state;
    cm_sampler *sampler;
    uint64_t seed;
    int ctx, vocab;
    int32_t *cached; /* the tokens whose keys/values the cache holds, [0, n_cached) */
    int n_cached;
    /* logits rows of positions [saved_lo, saved_hi) for the tokens in `cached` */
    float *saved, *spare;
    int saved_lo, saved_hi, rows_cap;
    int32_t *inp; /* scratch: one request's model input */
    cm_lm_stats stats;
    ev_tape *tape; /* when set, calls go to the tape (recorded or replayed) instead of the model (shard.c) */
};

void ev_lm_set_tape(cm_lm *lm, ev_tape *t) {
    lm->tape = t;
}

void ev_lm_set_stats(cm_lm *lm, const cm_lm_stats *s) {
    lm->stats = *s;
}

void ev_lm_add_stats(cm_lm *lm, const cm_lm_stats *s) {
    lm->stats.n_requests += s->n_requests;
    lm->stats.n_truncated += s->n_truncated;
    lm->stats.tokens_scored += s->tokens_scored;
    lm->stats.tokens_forwarded += s->tokens_forwarded;
    lm->stats.tokens_requested += s->tokens_requested;
    lm->stats.forward_seconds += s->forward_seconds;
    lm->stats.n_generated += s->n_generated;
    lm->stats.generate_seconds += s->generate_seconds;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

cm_status cm_lm_open_local(const cm_model *m, const cm_tokenizer *tok, int ctx_len, int n_threads,
                           uint64_t seed, cm_lm **out) {
    *out = NULL;
    if (ctx_len <= 0 || ctx_len > m->cfg.seq_len) ctx_len = m->cfg.seq_len;
    cm_lm *lm = calloc(1, sizeof *lm);
    if (!lm) return cm_error(CM_ERR_NOMEM, "out of memory");
    lm->m = m;
    lm->tok = tok;
    lm->seed = seed;
    lm->ctx = ctx_len;
    lm->vocab = m->cfg.vocab_size;
    lm->cached = malloc((size_t)(ctx_len + 1) * sizeof *lm->cached);
    lm->inp = malloc((size_t)(ctx_len + 1) * sizeof *lm->inp);
    if (!lm->cached || !lm->inp) {
        cm_lm_close(lm);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    cm_sampler_params sp = cm_sampler_defaults();
    sp.temperature = 0;
    sp.seed = seed;
    cm_status st = cm_state_open(m, ctx_len, ctx_len < 512 ? ctx_len : 512, n_threads, &lm->state);
    if (st == CM_OK) st = cm_sampler_open(&sp, lm->vocab, &lm->sampler);
    if (st != CM_OK) {
        cm_lm_close(lm);
        return st;
    }
    *out = lm;
    return CM_OK;
}

void cm_lm_close(cm_lm *lm) {
    if (!lm) return;
    cm_state_close(lm->state);
    cm_sampler_close(lm->sampler);
    free(lm->cached);
    free(lm->inp);
    free(lm->saved);
    free(lm->spare);
    free(lm);
}

int cm_lm_ctx_len(const cm_lm *lm) {
    return lm->ctx;
}
int cm_lm_vocab_size(const cm_lm *lm) {
    return lm->vocab;
}
const cm_tokenizer *cm_lm_tokenizer(const cm_lm *lm) {
    return lm->tok;
}
const cm_lm_stats *cm_lm_get_stats(const cm_lm *lm) {
    return &lm->stats;
}

/* The model input of a request after lm-eval's left truncation: (ctx+cont)[start : F-1]. */
static int request_input(const cm_ll_request *r, int ctx_len, int32_t *inp, bool *truncated) {
    int F = r->n_ctx + r->n_cont, start = F > ctx_len + 1 ? F - (ctx_len + 1) : 0;
    *truncated = start > 0;
    int n = 0;
    for (int i = start; i < F - 1; i++) inp[n++] = i < r->n_ctx ? r->ctx[i] : r->cont[i - r->n_ctx];
    return n;
}

static cm_status ensure_rows(cm_lm *lm, int rows) {
    if (rows <= lm->rows_cap) return CM_OK;
    size_t bytes;
    if (cm_mul_size((size_t)rows, (size_t)lm->vocab * sizeof(float), &bytes))
        return cm_error(CM_ERR_NOMEM, "logits buffer size overflows");
    float *a = realloc(lm->saved, bytes);
    if (!a) return cm_error(CM_ERR_NOMEM, "out of memory for %d rows of logits", rows);
    lm->saved = a;
    float *b = realloc(lm->spare, bytes);
    if (!b) return cm_error(CM_ERR_NOMEM, "out of memory for %d rows of logits", rows);
    lm->spare = b;
    lm->rows_cap = rows;
    return CM_OK;
}

/* log p(token | row) in double, and whether token is the row's (first) argmax. */
static double row_logprob(const float *row, int vocab, int token, bool *greedy) {
    int best = 0;
    float mx = row[0];
    for (int i = 1; i < vocab; i++)
        if (row[i] > mx) mx = row[i], best = i;
    double sum = 0;
    for (int i = 0; i < vocab; i++) sum += exp((double)row[i] - mx);
    *greedy = best == token;
    return (double)row[token] - mx - log(sum);
}

/* The checks a request must pass; sets its truncation flag and returns the model input's length in *N. */
static cm_status check_request(const cm_lm *lm, cm_ll_request *r, int32_t *inp, int *N) {
    if (r->n_cont < 1) return cm_error(CM_ERR_ARG, "loglikelihood: empty continuation");
    if (r->n_cont > lm->ctx)
        return cm_error(CM_ERR_ARG,
                        "loglikelihood: a continuation of %d tokens is longer than the context of %d",
                        r->n_cont, lm->ctx);
    *N = request_input(r, lm->ctx, inp, &r->truncated);
    if (*N < 1) return cm_error(CM_ERR_ARG, "loglikelihood: a request without context (not even BOS)");
    return CM_OK;
}

cm_status ev_lm_check_request(cm_lm *lm, cm_ll_request *r) {
    int N;
    return check_request(lm, r, lm->inp, &N);
}

static cm_status score_one(cm_lm *lm, cm_ll_request *r) {
    int N;
    CM_TRY(check_request(lm, r, lm->inp, &N));
    const int32_t *inp = lm->inp;
    int q = N - r->n_cont; /* logits rows [q, N) predict the continuation */
    int l = 0;
    while (l < lm->n_cached && l < N && lm->cached[l] == inp[l]) l++;
    int reuse = l;
    if (reuse > q && !(lm->saved_lo <= q && reuse <= lm->saved_hi)) reuse = q;
    CM_TRY(ensure_rows(lm, r->n_cont));
    double t0 = now_seconds();
    float *rows = lm->spare;
    size_t V = (size_t)lm->vocab;
    int from = reuse > q ? reuse : q;
    if (reuse < q && N - q == 1) {
        /* one row wanted (a one-token continuation): a single forward that computes only the last logits */
        CM_TRY(cm_forward(lm->m, lm->state, inp + reuse, N - reuse, reuse, rows, false));
    } else {
        /* the prefix without the output head, then the rows wanted; rows [q, from) come from the saved logits
         */
        if (reuse < q) CM_TRY(cm_forward(lm->m, lm->state, inp + reuse, q - reuse, reuse, NULL, false));
        if (from > q)
            memcpy(rows, lm->saved + (size_t)(q - lm->saved_lo) * V, (size_t)(from - q) * V * sizeof(float));
        if (from < N)
            CM_TRY(cm_forward(lm->m, lm->state, inp + from, N - from, from, rows + (size_t)(from - q) * V,
                              true));
    }
    lm->stats.forward_seconds += now_seconds() - t0;
    memcpy(lm->cached, inp, (size_t)N * sizeof *inp);
    lm->n_cached = N;
    lm->spare = lm->saved;
    lm->saved = rows;
    lm->saved_lo = q;
    lm->saved_hi = N;
    r->logprob = 0;
    r->is_greedy = true;
    for (int i = 0; i < r->n_cont; i++) {
        bool g;
        double lp = row_logprob(rows + (size_t)i * V, lm->vocab, r->cont[i], &g);
        if (r->token_logprobs) r->token_logprobs[i] = lp;
        r->logprob += lp;
        r->is_greedy = r->is_greedy && g;
    }
    lm->stats.n_requests++;
    lm->stats.n_truncated += r->truncated;
    lm->stats.tokens_scored += r->n_cont;
    lm->stats.tokens_forwarded += N - (reuse < q ? reuse : from);
    lm->stats.tokens_requested += N;
    return CM_OK;
}

/* Requests are served in the lexicographic order of their tokens (ctx then cont), so that those sharing a
 * prefix are neighbours; the order is a function of the batch only, so results are reproducible. */
typedef struct {
    cm_ll_request *r;
    size_t index;
} ordered_request;

static int token_at(const cm_ll_request *r, int i) {
    return i < r->n_ctx ? r->ctx[i] : r->cont[i - r->n_ctx];
}

static int cmp_requests(const void *a, const void *b) {
    const ordered_request *oa = a, *ob = b;
    const cm_ll_request *ra = oa->r, *rb = ob->r;
    int na = ra->n_ctx + ra->n_cont, nb = rb->n_ctx + rb->n_cont;
    for (int i = 0; i < na && i < nb; i++) {
        int x = token_at(ra, i), y = token_at(rb, i);
        if (x != y) return x < y ? -1 : 1;
    }
    if (na != nb) return na > nb ? -1 : 1; /* the longer first: its logits serve the shorter */
    return oa->index < ob->index ? -1 : oa->index > ob->index;
}

cm_status cm_lm_loglikelihood(cm_lm *lm, cm_ll_request *reqs, size_t n) {
    if (n == 0) return CM_OK;
    if (lm->tape) return ev_tape_loglikelihood(lm->tape, lm, reqs, n);
    ordered_request *order = malloc(n * sizeof *order);
    if (!order) return cm_error(CM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) order[i] = (ordered_request){&reqs[i], i};
    qsort(order, n, sizeof *order, cmp_requests);
    cm_status st = CM_OK;
    for (size_t k = 0; k < n && st == CM_OK; k++) st = score_one(lm, order[k].r);
    free(order);
    return st;
}

static bool is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

cm_status cm_lm_encode_pair(const cm_lm *lm, const char *ctx, size_t ctx_len, const char *cont,
                            size_t cont_len, int32_t **ctx_ids, int *n_ctx, int32_t **cont_ids, int *n_cont) {
    *ctx_ids = *cont_ids = NULL;
    *n_ctx = *n_cont = 0;
    size_t keep = ctx_len;
    while (keep > 0 && is_space((unsigned char)ctx[keep - 1])) keep--;
    size_t whole_len = ctx_len + cont_len;
    char *whole = malloc(whole_len + 1);
    if (!whole) return cm_error(CM_ERR_NOMEM, "out of memory");
    memcpy(whole, ctx, ctx_len);
    memcpy(whole + ctx_len, cont, cont_len);
    whole[whole_len] = 0;
    bool bos = cm_tokenizer_add_bos(lm->tok) && cm_tokenizer_bos(lm->tok) >= 0;
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    cm_status st = cm_tokenizer_encode(lm->tok, whole, keep, bos, false, &a, &na);
    if (st == CM_OK) st = cm_tokenizer_encode(lm->tok, whole, whole_len, bos, false, &b, &nb);
    free(whole);
    if (st != CM_OK) {
        free(a);
        free(b);
        return st;
    }
    if (na == 0) { /* no BOS and an empty context: condition on the first token */
        free(a);
        free(b);
        return cm_error(CM_ERR_ARG, "loglikelihood: the context is empty and the tokenizer has no BOS");
    }
    if (nb <= na) {
        free(a);
        free(b);
        return cm_error(CM_ERR_ARG, "loglikelihood: the continuation adds no tokens to the context");
    }
    int32_t *c = malloc((nb - na) * sizeof *c);
    if (!c) {
        free(a);
        free(b);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    memcpy(c, b + na, (nb - na) * sizeof *c);
    free(b);
    *ctx_ids = a;
    *n_ctx = (int)na;
    *cont_ids = c;
    *n_cont = (int)(nb - na);
    return CM_OK;
}

static int collect_text(void *user, const char *text, size_t len) {
    cm_strbuf *s = user;
    cm_strbuf_append(s, text, len);
    return s->failed ? 1 : 0;
}

cm_status ev_lm_check_generation(const cm_lm *lm, int n_prompt, const cm_lm_gen_params *p) {
    if (p->max_tokens < 1 || p->max_tokens >= lm->ctx)
        return cm_error(CM_ERR_ARG, "generate: max tokens %d must be in 1..%d", p->max_tokens, lm->ctx - 1);
    if (n_prompt < 1) return cm_error(CM_ERR_ARG, "generate: the prompt is empty (not even BOS)");
    return CM_OK;
}

cm_status cm_lm_generate_tokens(cm_lm *lm, const int32_t *prompt, int n_prompt, const cm_lm_gen_params *p,
                                char **text) {
    *text = NULL;
    CM_TRY(ev_lm_check_generation(lm, n_prompt, p));
    if (lm->tape) return ev_tape_generate(lm->tape, lm, prompt, n_prompt, p, text);
    int room = lm->ctx - p->max_tokens;
    if (n_prompt > room) {
        prompt += n_prompt - room;
        n_prompt = room;
        lm->stats.n_truncated++;
    }
    int l = 0;
    while (l < lm->n_cached && l < n_prompt && lm->cached[l] == prompt[l]) l++;
    cm_generate_params gp = {.n_predict = p->max_tokens, .stop = p->stop, .n_stop = p->n_stop, .n_cached = l};
    cm_strbuf sink = {0};
    cm_generate_result res;
    double t0 = now_seconds();
    cm_status st =
        cm_generate(lm->m, lm->tok, lm->state, lm->sampler, prompt, n_prompt, &gp, collect_text, &sink, &res);
    lm->saved_lo = lm->saved_hi = 0;
    lm->n_cached = 0;
    if (st != CM_OK) {
        cm_strbuf_free(&sink);
        return st;
    }
    if (sink.failed) {
        cm_strbuf_free(&sink);
        free(res.tokens);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    lm->stats.generate_seconds += now_seconds() - t0;
    lm->stats.n_generated += res.n_generated;
    /* the cache now holds the prompt and the generated tokens that were run */
    int n = res.n_cached < lm->ctx ? res.n_cached : lm->ctx;
    for (int i = 0; i < n; i++) lm->cached[i] = i < n_prompt ? prompt[i] : res.tokens[i - n_prompt];
    lm->n_cached = n;
    free(res.tokens);
    *text = cm_strbuf_take(&sink); /* "" when nothing was generated */
    return *text ? CM_OK : cm_error(CM_ERR_NOMEM, "out of memory");
}

cm_status cm_lm_generate(cm_lm *lm, const char *prompt, size_t prompt_len, const cm_lm_gen_params *p,
                         char **text) {
    bool bos = cm_tokenizer_add_bos(lm->tok) && cm_tokenizer_bos(lm->tok) >= 0;
    int32_t *ids = NULL;
    size_t n = 0;
    CM_TRY(cm_tokenizer_encode(lm->tok, prompt, prompt_len, bos, false, &ids, &n));
    cm_status st = cm_lm_generate_tokens(lm, ids, (int)n, p, text);
    free(ids);
    return st;
}
