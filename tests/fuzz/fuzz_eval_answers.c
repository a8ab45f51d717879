/* libFuzzer target: the answers one rank sends rank 0 during a distributed evaluation (src/eval/shard.c,
 * load_answers), against a tape of four recorded calls (a log-likelihood batch of two requests, one wanting
 * per-token log-probs; a generation; another batch). Every input is either taken whole (calls done within
 * the share, every answer present, no byte left over) or refused with a message naming the rank; nothing
 * is read past the buffer. The file includes shard.c itself to reach its static parser. */
#include "eval/shard.c"

static void add_req(ev_tape *t, int n_ctx, int n_cont, bool want_lp) {
    tape_req *r = &t->reqs[t->n_reqs++];
    memset(r, 0, sizeof *r);
    r->tokens = calloc((size_t)(n_ctx + n_cont), sizeof *r->tokens);
    r->n_ctx = n_ctx;
    r->n_cont = n_cont;
    r->want_lp = want_lp;
}

static ev_tape *sample_tape(void) {
    ev_tape *t = calloc(1, sizeof *t);
    t->cap_reqs = 8;
    t->reqs = calloc(t->cap_reqs, sizeof *t->reqs);
    t->cap_calls = 8;
    t->calls = calloc(t->cap_calls, sizeof *t->calls);
    tape_call *c = &t->calls[t->n_calls++];
    c->req0 = t->n_reqs;
    c->n_req = 2;
    add_req(t, 3, 1, false);
    add_req(t, 2, 4, true);
    c = &t->calls[t->n_calls++];
    c->gen = true;
    c = &t->calls[t->n_calls++];
    c->req0 = t->n_reqs;
    c->n_req = 1;
    add_req(t, 1, 2, true);
    c = &t->calls[t->n_calls++];
    c->gen = true;
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ev_tape *t = sample_tape();
    uint64_t done = 0;
    /* this rank's share: calls [1, 4) */
    cm_status st = load_answers(t, 1, 1, 4, (const char *)data, size, &done);
    if (st == CM_OK) {
        if (done > 3) abort();
        for (size_t i = 1; i < 1 + done; i++)
            if (t->calls[i].gen && !t->calls[i].text) abort();
    } else if (!strstr(cm_last_error(), "rank 1")) {
        abort();
    }
    tape_free(t);
    return 0;
}
