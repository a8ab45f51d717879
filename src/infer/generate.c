#include "camelid/generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "camelid/strbuf.h"

const char *cm_stop_reason_name(cm_stop_reason r) {
    switch (r) {
    case CM_STOP_LENGTH:
        return "length";
    case CM_STOP_EOS:
        return "eos";
    case CM_STOP_STRING:
        return "stop string";
    case CM_STOP_CONTEXT:
        return "context full";
    case CM_STOP_CALLER:
        return "caller";
    }
    return "?";
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Generated text waits here until it cannot be the start of a stop string. */
typedef cm_strbuf pending_text;

static cm_status pending_append(pending_text *p, const char *s, size_t n) {
    cm_strbuf_append(p, s, n);
    return p->failed ? cm_error(CM_ERR_NOMEM, "out of memory") : CM_OK;
}

long cm_stop_find(const char *text, size_t len, const char *const *stop, int n_stop) {
    long best = -1;
    for (int i = 0; i < n_stop; i++) {
        size_t sl = strlen(stop[i]);
        if (sl == 0 || sl > len) continue;
        for (size_t at = 0; at + sl <= len && (best < 0 || (long)at < best); at++) {
            if (memcmp(text + at, stop[i], sl) == 0) {
                best = (long)at;
                break;
            }
        }
    }
    return best;
}

size_t cm_stop_held_back(const char *text, size_t len, const char *const *stop, int n_stop) {
    size_t hold = 0;
    for (int i = 0; i < n_stop; i++) {
        size_t sl = strlen(stop[i]);
        for (size_t k = sl > 0 ? sl - 1 : 0; k > hold; k--) {
            if (k <= len && memcmp(text + len - k, stop[i], k) == 0) {
                hold = k;
                break;
            }
        }
    }
    return hold;
}

/* Emit what is final; returns 1 if the callback asked to stop. */
static int pending_emit(pending_text *p, size_t n, cm_text_callback cb, void *user) {
    int stop = 0;
    if (n > 0 && cb) stop = cb(user, p->buf, n);
    memmove(p->buf, p->buf + n, p->len - n);
    p->len -= n;
    return stop;
}

cm_status cm_generate(const cm_model *m, const cm_tokenizer *tok, cm_state *state, cm_sampler *sampler,
                      const int32_t *prompt, int n_prompt, const cm_generate_params *gp,
                      cm_text_callback on_text, void *user, cm_generate_result *result) {
    memset(result, 0, sizeof *result);
    int ctx = cm_state_ctx_len(state), vocab = m->cfg.vocab_size;
    if (n_prompt <= 0) return cm_error(CM_ERR_ARG, "generate: the prompt is empty (not even BOS)");
    if (n_prompt > ctx)
        return cm_error(CM_ERR_ARG, "generate: the prompt is %d tokens, longer than the context of %d",
                        n_prompt, ctx);
    int max_new = gp->n_predict < 0 ? ctx : gp->n_predict;
    int32_t *history = malloc((size_t)(n_prompt + max_new + 1) * sizeof *history);
    float *logits = malloc((size_t)vocab * sizeof *logits);
    size_t piece_cap = 64 + cm_tokenizer_max_piece_len(tok);
    char *piece = malloc(piece_cap);
    pending_text pending = {0};
    cm_status st = CM_OK;
    if (!history || !logits || !piece) {
        st = cm_error(CM_ERR_NOMEM, "out of memory");
        goto done;
    }
    memcpy(history, prompt, (size_t)n_prompt * sizeof *history);
    result->n_prompt = n_prompt;

    cm_detokenizer detok;
    cm_detokenizer_init(&detok, tok);
    int caller_stop = 0;
    if (gp->echo_prompt) {
        for (int i = 0; i < n_prompt && !caller_stop; i++) {
            size_t n = cm_detokenizer_push(&detok, prompt[i], piece, piece_cap);
            if (n && on_text) caller_stop = on_text(user, piece, n);
        }
    } else {
        for (int i = 0; i < n_prompt; i++) cm_detokenizer_push(&detok, prompt[i], piece, piece_cap);
        detok.n_pending = 0; /* the prompt's unfinished bytes are not ours to print */
    }

    double t0 = now_seconds();
    /* the last prompt token always runs again: its logits are needed */
    int cached = gp->n_cached < 0 ? 0 : gp->n_cached > n_prompt - 1 ? n_prompt - 1 : gp->n_cached;
    st = cm_forward(m, state, prompt + cached, n_prompt - cached, cached, logits, false);
    if (st != CM_OK) goto done;
    double t1 = now_seconds();
    result->prompt_seconds = t1 - t0;
    int pos = n_prompt, n_hist = n_prompt;
    result->stop = CM_STOP_LENGTH;
    if (caller_stop) result->stop = CM_STOP_CALLER;
    while (!caller_stop && result->n_generated < max_new) {
        int next = cm_sampler_sample(sampler, logits, history, n_hist);
        int bos = cm_tokenizer_bos(tok);
        bool stop_token = false;
        for (int i = 0; i < gp->n_stop_tokens; i++) stop_token |= next == gp->stop_tokens[i];
        if (stop_token || cm_tokenizer_is_eog(tok, next) || (bos >= 0 && next == bos)) {
            result->stop = CM_STOP_EOS;
            break;
        }
        history[n_hist++] = next;
        result->n_generated++;
        size_t n = cm_detokenizer_push(&detok, next, piece, piece_cap);
        if ((st = pending_append(&pending, piece, n)) != CM_OK) goto done;
        long at = cm_stop_find(pending.buf, pending.len, gp->stop, gp->n_stop);
        if (at >= 0) {
            pending_emit(&pending, (size_t)at, on_text, user);
            pending.len = 0;
            result->stop = CM_STOP_STRING;
            break;
        }
        size_t final = pending.len - cm_stop_held_back(pending.buf, pending.len, gp->stop, gp->n_stop);
        if (pending_emit(&pending, final, on_text, user)) {
            result->stop = CM_STOP_CALLER;
            break;
        }
        if (result->n_generated == max_new) break;
        if (pos >= ctx) {
            result->stop = CM_STOP_CONTEXT;
            break;
        }
        st = cm_forward(m, state, &history[n_hist - 1], 1, pos, logits, false);
        if (st != CM_OK) goto done;
        pos++;
    }
    if (result->stop != CM_STOP_STRING) {
        size_t n = cm_detokenizer_flush(&detok, piece, piece_cap);
        if (n && (st = pending_append(&pending, piece, n)) != CM_OK) goto done;
        pending_emit(&pending, pending.len, on_text, user);
    }
    result->generate_seconds = now_seconds() - t1;
    result->n_cached = pos;
    result->tokens = malloc((size_t)(result->n_generated ? result->n_generated : 1) * sizeof *result->tokens);
    if (!result->tokens) {
        st = cm_error(CM_ERR_NOMEM, "out of memory");
        goto done;
    }
    memcpy(result->tokens, history + n_prompt, (size_t)result->n_generated * sizeof *result->tokens);
done:
    free(history);
    free(logits);
    free(piece);
    free(pending.buf);
    return st;
}
