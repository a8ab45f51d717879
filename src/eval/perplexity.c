/* Perplexity of a text (FACTS 9.2). Documents: the whole file, or one per line of a .jsonl ({"text": ...}).
 * lm-eval mode: rolling windows of the model's context L; the first window is [BOS] + t[0:L-1] predicting
 * t[0:L], each later one predicts the next <= L tokens conditioned on the tokens before them in an L-token
 * window. llama.cpp mode (llama-perplexity): the whole text tokenized with BOS, cut into disjoint L-token
 * chunks (the tail dropped, at least 2 chunks), the first token of each chunk replaced by BOS, and only the
 * second half of each chunk scored (positions L/2 .. L-2 predict the next token). */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "eval_internal.h"

typedef struct {
    char **docs;
    size_t *lens;
    size_t n;
} doc_list;

static void docs_free(doc_list *d) {
    for (size_t i = 0; i < d->n; i++) free(d->docs[i]);
    free(d->docs);
    free(d->lens);
}

static cm_status docs_add(doc_list *d, const char *s, size_t len) {
    char **docs = realloc(d->docs, (d->n + 1) * sizeof *docs);
    if (!docs) return cm_error(CM_ERR_NOMEM, "out of memory");
    d->docs = docs;
    size_t *lens = realloc(d->lens, (d->n + 1) * sizeof *lens);
    if (!lens) return cm_error(CM_ERR_NOMEM, "out of memory");
    d->lens = lens;
    char *c = malloc(len + 1);
    if (!c) return cm_error(CM_ERR_NOMEM, "out of memory");
    memcpy(c, s, len);
    c[len] = 0;
    d->docs[d->n] = c;
    d->lens[d->n] = len;
    d->n++;
    return CM_OK;
}

static cm_status read_docs(const char *path, doc_list *d) {
    char *data;
    size_t size;
    CM_TRY(cm_read_file(path, (size_t)1 << 31, &data, &size));
    cm_status st = CM_OK;
    if (cm_path_has_suffix(path, ".jsonl")) {
        int line = 0;
        for (size_t i = 0; i < size && st == CM_OK;) {
            size_t j = i;
            while (j < size && data[j] != '\n') j++;
            line++;
            size_t k = i;
            while (k < j && (data[k] == ' ' || data[k] == '\t' || data[k] == '\r')) k++;
            if (k < j) {
                json_error_t err;
                json_t *o = json_loadb(data + i, j - i, 0, &err);
                json_t *t = o ? json_object_get(o, "text") : NULL;
                if (!o)
                    st = cm_error(CM_ERR_FORMAT, "%s:%d: %s", path, line, err.text);
                else if (!json_is_string(t))
                    st = cm_error(CM_ERR_FORMAT, "%s:%d: expected an object with a string \"text\"", path,
                                  line);
                else
                    st = docs_add(d, json_string_value(t), json_string_length(t));
                json_decref(o);
            }
            i = j + 1;
        }
        if (st == CM_OK && d->n == 0) st = cm_error(CM_ERR_FORMAT, "%s: no documents", path);
    } else {
        if (memchr(data, 0, size)) st = cm_error(CM_ERR_FORMAT, "%s: a NUL byte (not a text file)", path);
        if (st == CM_OK) st = docs_add(d, data, size);
    }
    free(data);
    return st;
}

/* len(re.split(r"\s+", doc)): 1 + the number of whitespace runs. */
static int64_t count_words(const char *s, size_t n) {
    int64_t w = 1;
    bool in = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool sp = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' ||
                  (c >= 0x1c && c <= 0x1f);
        if (sp && !in) w++;
        in = sp;
    }
    return w;
}

typedef struct {
    double ll, ll2;
    int64_t tokens, words, bytes, windows;
    int truncated;
} ppl_sums;

static void publish(cm_eval *ev, const char *key, const char *path, const ppl_sums *s, size_t n_docs,
                    size_t docs_done, int L, bool llamacpp) {
    json_t *r = json_object();
    json_object_set_new(r, "alias", json_string(key));
    double tp = exp(-s->ll / (double)s->tokens);
    json_object_set_new(r, "token_perplexity", ev_real(s->tokens ? tp : NAN));
    if (llamacpp) {
        /* llama-perplexity's +/-: ppl * stddev(nll) / sqrt(count - 1) */
        double av = -s->ll / (double)s->tokens, var = s->ll2 / (double)s->tokens - av * av;
        json_object_set_new(
            r, "token_perplexity_stderr",
            ev_real(s->tokens > 1 && var > 0 ? tp * sqrt(var / (double)(s->tokens - 1)) : NAN));
    } else {
        json_object_set_new(r, "word_perplexity", ev_real(exp(-s->ll / (double)s->words)));
        json_object_set_new(r, "byte_perplexity", ev_real(exp(-s->ll / (double)s->bytes)));
        json_object_set_new(r, "bits_per_byte", ev_real(-s->ll / (double)s->bytes / log(2.0)));
        json_object_set_new(r, "words", json_integer(s->words));
        json_object_set_new(r, "bytes", json_integer(s->bytes));
    }
    json_object_set_new(r, "tokens", json_integer(s->tokens));
    json_object_set_new(r, "windows", json_integer(s->windows));
    json_object_set_new(r, "loglikelihood", ev_real(s->ll));
    json_object_set_new(r, "truncated", json_integer(s->truncated));
    json_t *c = json_object();
    json_object_set_new(c, "task", json_string(key));
    json_object_set_new(c, "data_file", json_string(path));
    json_object_set_new(c, "output_type", json_string("loglikelihood_rolling"));
    json_object_set_new(c, "ppl_mode", json_string(llamacpp ? "llamacpp" : "lm-eval"));
    json_object_set_new(c, "max_length", json_integer(L));
    json_t *h = json_object();
    json_object_set_new(h, "token_perplexity", json_false());
    if (!llamacpp) {
        json_object_set_new(h, "word_perplexity", json_false());
        json_object_set_new(h, "byte_perplexity", json_false());
        json_object_set_new(h, "bits_per_byte", json_false());
    }
    ev_set_task(ev, key, r, c, 1, 0, h, (json_int_t)n_docs, (json_int_t)docs_done);
}

/* Score one request into a document's sums. */
static cm_status run_request(cm_lm *lm, cm_ll_request *r, ppl_sums *s, double *tok_lp) {
    r->token_logprobs = tok_lp;
    CM_TRY(cm_lm_loglikelihood(lm, r, 1));
    s->ll += r->logprob;
    for (int i = 0; i < r->n_cont; i++) s->ll2 += tok_lp[i] * tok_lp[i];
    s->tokens += r->n_cont;
    s->truncated += r->truncated;
    s->windows++;
    return CM_OK;
}

static void sums_add(ppl_sums *a, const ppl_sums *b) {
    a->ll += b->ll;
    a->ll2 += b->ll2;
    a->tokens += b->tokens;
    a->words += b->words;
    a->bytes += b->bytes;
    a->windows += b->windows;
    a->truncated += b->truncated;
}

cm_status cm_eval_perplexity(cm_eval *ev, cm_lm *lm, const char *path) {
    doc_list d = {0};
    CM_TRY(read_docs(path, &d));
    char *stem = ev_stem(path), key[600];
    if (!stem) {
        docs_free(&d);
        return cm_error(CM_ERR_NOMEM, "out of memory");
    }
    snprintf(key, sizeof key, "perplexity_%s", stem);
    free(stem);
    size_t n_docs = d.n;
    if (ev->opt.limit > 0 && n_docs > (size_t)ev->opt.limit) n_docs = (size_t)ev->opt.limit;
    const cm_tokenizer *tok = cm_lm_tokenizer(lm);
    int L = cm_lm_ctx_len(lm), bos = cm_tokenizer_bos(tok);
    bool llamacpp = ev->opt.ppl_mode == CM_PPL_LLAMACPP;
    if (bos < 0) {
        docs_free(&d);
        return cm_error(CM_ERR_UNSUPPORTED, "%s: perplexity needs a tokenizer with a BOS token", path);
    }
    /* tokenize everything first: the window count is the progress total */
    int32_t **toks = calloc(n_docs, sizeof *toks);
    size_t *ntok = calloc(n_docs, sizeof *ntok);
    cm_status st = toks && ntok ? CM_OK : cm_error(CM_ERR_NOMEM, "out of memory");
    int64_t total = 0;
    for (size_t i = 0; i < n_docs && st == CM_OK; i++) {
        st = cm_tokenizer_encode(tok, d.docs[i], d.lens[i], llamacpp, false, &toks[i], &ntok[i]);
        if (st != CM_OK) {
            cm_error_prefix(st, "%s", path);
            break;
        }
        if (llamacpp) {
            if (ntok[i] < 2 * (size_t)L) {
                st =
                    cm_error(CM_ERR_ARG, "%s: %zu tokens; llama.cpp mode needs at least 2 x %d (the context)",
                             path, ntok[i], L);
                break;
            }
            total += (int64_t)(ntok[i] / (size_t)L);
        } else {
            total += ntok[i] == 0 ? 0 : (int64_t)((ntok[i] + (size_t)L - 1) / (size_t)L);
        }
    }
    ppl_sums s = {0};
    json_t *samples = ev_samples(ev, key);
    if (st == CM_OK) ev_begin(ev, key, total);
    int64_t done = 0;
    int32_t *chunk = malloc(((size_t)L + 1) * sizeof *chunk);
    double *tok_lp = malloc(((size_t)L + 1) * sizeof *tok_lp);
    if ((!chunk || !tok_lp) && st == CM_OK) st = cm_error(CM_ERR_NOMEM, "out of memory");
    size_t docs_done = 0;
    for (size_t i = 0; i < n_docs && st == CM_OK && !ev->interrupted; i++) {
        const int32_t *t = toks[i];
        size_t N = ntok[i];
        ppl_sums ds = {0}; /* this document's; joins `s` when it is complete (llama.cpp mode: every chunk) */
        if (llamacpp) {
            int first = L / 2;
            size_t n_chunks = N / (size_t)L;
            for (size_t c = 0; c < n_chunks && st == CM_OK; c++) {
                memcpy(chunk, t + c * (size_t)L, (size_t)L * sizeof *chunk);
                chunk[0] = bos;
                cm_ll_request r = {chunk, first + 1, chunk + first + 1, L - first - 1, NULL, 0, false, false};
                ppl_sums cs = {0};
                if ((st = run_request(lm, &r, &cs, tok_lp)) != CM_OK) break;
                sums_add(&ds, &cs);
                sums_add(&s, &cs);
                if (ev_tick(ev, ++done)) break;
            }
        } else if (N > 0) {
            size_t pred = N < (size_t)L ? N : (size_t)L;
            chunk[L] = bos;
            cm_ll_request r0 = {&chunk[L], 1, t, (int)pred, NULL, 0, false, false};
            st = run_request(lm, &r0, &ds, tok_lp);
            size_t predicted = pred;
            if (st == CM_OK) ev_tick(ev, ++done);
            while (st == CM_OK && predicted < N && !ev->interrupted) {
                size_t wpl = N - predicted < (size_t)L ? N - predicted : (size_t)L;
                size_t end = predicted + wpl;
                /* the window t[end-L-1 : end-1] as (context, continuation) */
                size_t ctx_start = end - (size_t)L - 1;
                cm_ll_request r = {
                    t + ctx_start, (int)(end - wpl - ctx_start), t + end - wpl, (int)wpl, NULL, 0, false,
                    false};
                st = run_request(lm, &r, &ds, tok_lp);
                predicted = end;
                if (st == CM_OK) ev_tick(ev, ++done);
            }
            if (st != CM_OK || ev->interrupted) break;
            ds.words = count_words(d.docs[i], d.lens[i]);
            ds.bytes = (int64_t)d.lens[i];
            sums_add(&s, &ds);
        }
        if (st != CM_OK) break;
        if (!ev->interrupted || llamacpp) docs_done++;
        if (samples) {
            json_t *o = json_object();
            json_object_set_new(o, "doc_id", json_integer((json_int_t)i));
            json_object_set_new(o, "tokens", json_integer((json_int_t)N));
            json_object_set_new(o, "scored_tokens", json_integer(ds.tokens));
            json_object_set_new(o, "loglikelihood", ev_real(ds.ll));
            json_array_append_new(samples, o);
        }
        if (ev_checkpoint_due(ev)) {
            publish(ev, key, path, &s, d.n, docs_done, L, llamacpp);
            ev_checkpoint(ev);
        }
    }
    free(tok_lp);
    if (st == CM_OK && docs_done > 0) publish(ev, key, path, &s, d.n, docs_done, L, llamacpp);
    if (st == CM_OK && ev->interrupted) st = ev_stop(ev);
    for (size_t i = 0; toks && i < n_docs; i++) free(toks[i]);
    free(toks);
    free(ntok);
    free(chunk);
    docs_free(&d);
    return st;
}
