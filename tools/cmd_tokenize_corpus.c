/* camelid tokenize-corpus: documents from text / JSONL files (camelid/corpus.h), encoded in parallel batches
 * with any tokenizer camelid reads, written in order as token shards (camelid/shards.h). */
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "camelid/corpus.h"
#include "camelid/file.h"
#include "camelid/pool.h"
#include "camelid/shards.h"
#include "camelid/tokenizer.h"
#include "commands.h"

static const char *help =
    "usage: camelid tokenize-corpus --tokenizer FILE IN... --out DIR [--val-frac F] [--seq T] [--doc-sep TEXT]\n"
    "                               [--shard-tokens N] [-t N]\n"
    "\n"
    "Tokenize text into the token shards `camelid train` reads: DIR/train_NNNNN.bin, DIR/val_NNNNN.bin and\n"
    "DIR/manifest.json. Every document is written as BOS followed by its tokens (no EOS), in input order.\n"
    "The val split is the last tokens of that stream.\n"
    "\n"
    "IN is a .jsonl file (one {\"text\": ...} document per line) or a text file, split into documents at\n"
    "every --doc-sep (the whitespace around a separator is dropped, empty documents are skipped); a text\n"
    "file without the separator is one document, byte for byte. Special-token text inside a document is\n"
    "encoded as plain text.\n"
    "\n"
    "options:\n"
    "  --tokenizer FILE    any tokenizer `camelid tokenize` reads; it must have a BOS token\n"
    "  --out DIR           the data folder (created; a data set already there is replaced)\n"
    "  --val-frac F        share of the tokens for the val split (default 0.05; 0: no val split)\n"
    "  --seq T             the training sequence length: the val split gets at least T + 1 tokens, and so\n"
    "                      must the train split (default 1024)\n"
    "  --doc-sep TEXT      document separator in text files (default \"<|endoftext|>\"; \"\" for none)\n"
    "  --shard-tokens N    tokens per shard at most (default 67108864 = 2^26)\n"
    "  -t, --threads N     threads for encoding (default: all cores)\n"
    "  -h, --help          this help\n";

/* ^C / SIGTERM: stop between batches, so the half-written data set is removed and DIR stays as it was */
static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A batch of pieces of documents, encoded in parallel, then written in order. A document longer than
 * PIECE_BYTES is cut where the tokenizer says the cut changes nothing (byte-level BPE; SentencePiece
 * documents stay whole), so a big single-document file is encoded in parallel and in bounded memory. */
#define BATCH_BYTES ((size_t)8 << 20)
#define BATCH_DOCS 16384
#define PIECE_BYTES ((size_t)1 << 20)

typedef struct {
    const cm_tokenizer *tok;
    char *text;
    size_t len, cap;
    size_t *off; /* n + 1 */
    bool *starts; /* does piece i begin a document */
    size_t n;
    int32_t **ids;
    size_t *n_ids;
    char **err; /* per document: NULL or the encoder's message */
    atomic_size_t next;
} batch;

typedef struct {
    batch b;
    cm_pool *pool;
    cm_shards_writer *w;
    const char *file, *out;
    int64_t doc_in_file; /* documents of this file already written */
    uint64_t bytes_done, bytes_total;
    bool tty;
    double t0, last_draw;
} run_ctx;

static void encode_part(void *arg, int thread, int n_threads) {
    (void)thread;
    (void)n_threads;
    batch *b = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&b->next, 1);
        if (i >= b->n) return;
        if (cm_tokenizer_encode(b->tok, b->text + b->off[i], b->off[i + 1] - b->off[i], false, false, &b->ids[i],
                                &b->n_ids[i]) != CM_OK) {
            b->ids[i] = NULL;
            b->err[i] = strdup(cm_last_error());
            if (!b->err[i]) b->err[i] = strdup("out of memory");
        }
    }
}

static void progress(run_ctx *r, bool final) {
    if (!r->tty) return;
    double t = now();
    if (!final && t - r->last_draw < 0.2) return;
    r->last_draw = t;
    double mb = (double)r->bytes_done / 1e6, el = t - r->t0;
    fprintf(stderr, "\r\033[Kcamelid: %.1f/%.1f MB, %lld tokens, %.2f MB/s", mb, (double)r->bytes_total / 1e6,
            (long long)cm_shards_writer_n_tokens(r->w), el > 0 ? mb / el : 0.0);
    if (final) fputs("\r\033[K", stderr);
    fflush(stderr);
}

/* Encode the batch and append its documents to the shards. */
static cm_status flush_batch(run_ctx *r) {
    batch *b = &r->b;
    if (stop_requested) return cm_error(CM_ERR_IO, "interrupted; %s is left as it was", r->out);
    if (b->n == 0) return CM_OK;
    atomic_store(&b->next, 0);
    cm_pool_run(r->pool, encode_part, b);
    cm_status st = CM_OK;
    for (size_t i = 0; i < b->n; i++) {
        if (b->starts[i]) r->doc_in_file++;
        if (!st && b->err[i])
            st = cm_error(CM_ERR_FORMAT, "%s: document %lld: %s", r->file, (long long)r->doc_in_file, b->err[i]);
        if (!st && b->starts[i]) st = cm_shards_writer_begin_document(r->w);
        if (!st) st = cm_shards_writer_append(r->w, b->ids[i], b->n_ids[i]);
        free(b->ids[i]);
        free(b->err[i]);
        b->ids[i] = NULL;
        b->err[i] = NULL;
    }
    r->bytes_done += b->len;
    b->n = 0;
    b->len = 0;
    progress(r, false);
    return st;
}

static cm_status add_piece(run_ctx *r, const char *text, size_t len, bool starts) {
    batch *b = &r->b;
    if (b->len + len > b->cap) {
        size_t cap = b->cap;
        while (cap < b->len + len) cap *= 2;
        char *t = realloc(b->text, cap);
        if (!t) return cm_error(CM_ERR_NOMEM, "%s: out of memory for a document of %zu bytes", r->file, len);
        b->text = t;
        b->cap = cap;
    }
    memcpy(b->text + b->len, text, len);
    b->off[b->n] = b->len;
    b->starts[b->n] = starts;
    b->len += len;
    b->off[++b->n] = b->len;
    if (b->n == BATCH_DOCS || b->len >= BATCH_BYTES) return flush_batch(r);
    return CM_OK;
}

static cm_status on_doc(void *user, const char *text, size_t len) {
    run_ctx *r = user;
    if (stop_requested) return flush_batch(r);
    for (size_t pos = 0; pos < len || pos == 0;) {
        size_t end = len - pos > PIECE_BYTES ? cm_tokenizer_split_point(r->b.tok, text, len, pos + PIECE_BYTES) : len;
        CM_TRY(add_piece(r, text + pos, end - pos, pos == 0));
        pos = end;
    }
    return CM_OK;
}

int cmd_tokenize_corpus(int argc, char **argv) {
    const char *tok_path = NULL, *out = NULL, *sep = "<|endoftext|>";
    float val_frac = 0.05f;
    int seq = 1024, threads = cli_default_threads();
    uint64_t shard_tokens = (uint64_t)CM_SHARDS_DEFAULT_SHARD_TOKENS;
    arg_spec specs[] = {
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL}, {"out", 'o', ARG_STRING, &out, NULL},
        {"val-frac", 0, ARG_FLOAT, &val_frac, NULL},   {"seq", 0, ARG_INT, &seq, NULL},
        {"doc-sep", 0, ARG_STRING, &sep, NULL},        {"shard-tokens", 0, ARG_U64, &shard_tokens, NULL},
    };
    const char **in = calloc((size_t)argc + 1, sizeof *in);
    if (!in) return cli_fail("out of memory");
    int n_in = 0, rc = 1;
    run_ctx r = {0};
    cm_tokenizer *tok = NULL;
    char *abs_tok = NULL;
    int prc = cli_parse(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, in, &n_in);
    if (prc != 0) {
        rc = prc < 0 ? 1 : 0;
        goto done;
    }
    if (!tok_path) {
        cli_fail("tokenize-corpus needs --tokenizer FILE");
        goto done;
    }
    if (!out) {
        cli_fail("tokenize-corpus needs --out DIR");
        goto done;
    }
    if (n_in == 0) {
        cli_fail("tokenize-corpus needs at least one input file");
        goto done;
    }
    if (!(val_frac >= 0.0f && val_frac < 1.0f)) {
        cli_fail("--val-frac must be at least 0 and below 1 (got %g)", (double)val_frac);
        goto done;
    }
    if (seq < 1) {
        cli_fail("--seq must be at least 1");
        goto done;
    }
    if (shard_tokens < 1 || shard_tokens > (uint64_t)INT64_MAX / 4) {
        cli_fail("--shard-tokens must be at least 1");
        goto done;
    }
    for (int i = 0; i < n_in; i++) { /* fail on a missing file before any work */
        struct stat sb;
        if (stat(in[i], &sb) != 0 || !S_ISREG(sb.st_mode)) {
            cli_fail("%s: not a readable file", in[i]);
            goto done;
        }
        r.bytes_total += (uint64_t)sb.st_size;
    }
    /* from here on ^C stops cleanly (before, it kills the process while nothing is written yet) */
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (cm_tokenizer_open(tok_path, 0, &tok) != CM_OK) {
        cli_fail_status();
        goto done;
    }
    int bos = cm_tokenizer_bos(tok);
    if (bos < 0) {
        cli_fail("%s: the tokenizer has no BOS token to separate documents (train one with --special)", tok_path);
        goto done;
    }
    abs_tok = realpath(tok_path, NULL);
    cm_shards_writer_opts wo = {.tokenizer = abs_tok ? abs_tok : tok_path,
                                .vocab_size = cm_tokenizer_vocab_size(tok),
                                .bos_id = bos,
                                .shard_tokens = (int64_t)shard_tokens};
    if (cm_pool_open(threads, &r.pool) != CM_OK || cm_shards_writer_open(out, &wo, &r.w) != CM_OK) {
        cli_fail_status();
        goto done;
    }
    r.b.tok = tok;
    r.b.cap = 1 << 20;
    r.b.text = malloc(r.b.cap);
    r.b.off = calloc(BATCH_DOCS + 1, sizeof *r.b.off);
    r.b.starts = calloc(BATCH_DOCS, sizeof *r.b.starts);
    r.b.ids = calloc(BATCH_DOCS, sizeof *r.b.ids);
    r.b.n_ids = calloc(BATCH_DOCS, sizeof *r.b.n_ids);
    r.b.err = calloc(BATCH_DOCS, sizeof *r.b.err);
    if (!r.b.text || !r.b.off || !r.b.starts || !r.b.ids || !r.b.n_ids || !r.b.err) {
        cli_fail("out of memory");
        goto done;
    }
    r.tty = isatty(STDERR_FILENO);
    r.out = out;
    r.t0 = now();
    for (int i = 0; i < n_in; i++) {
        r.file = in[i];
        r.doc_in_file = 0;
        cm_status st = cm_corpus_read(in[i], sep, on_doc, &r);
        if (!st) st = flush_batch(&r);
        if (st) {
            if (r.tty) fputc('\n', stderr);
            cli_fail_status();
            if (stop_requested) rc = 130;
            goto done;
        }
    }
    progress(&r, true);
    if (stop_requested) {
        rc = 130;
        cli_fail("interrupted; %s is left as it was", out);
        goto done;
    }
    double el = now() - r.t0;
    int64_t total = cm_shards_writer_n_tokens(r.w), val = 0;
    if (val_frac > 0) {
        val = (int64_t)ceil((double)val_frac * (double)total);
        if (val < (int64_t)seq + 1) val = (int64_t)seq + 1;
    }
    if (total - val < (int64_t)seq + 1) {
        cli_fail("the corpus has %lld tokens: too few for a train split of at least --seq + 1 = %d tokens%s", (long long)total,
                 seq + 1, val ? " and a val split of as many" : "");
        goto done;
    }
    cm_shards_summary sum;
    cm_shards_writer *w = r.w;
    r.w = NULL;
    if (cm_shards_writer_commit(w, val, &sum) != CM_OK) {
        cli_fail_status();
        goto done;
    }
    fprintf(stderr,
            "camelid: wrote %s: %lld documents, %lld tokens (%s): train %lld in %d shard(s), val %lld in %d shard(s); "
            "%.2f MB in %.2f s (%.2f MB/s, %d thread(s))\n",
            out, (long long)sum.documents, (long long)(sum.train_tokens + sum.val_tokens),
            sum.dtype == 2 ? "uint16" : "uint32", (long long)sum.train_tokens, sum.train_shards,
            (long long)sum.val_tokens, sum.val_shards, (double)r.bytes_total / 1e6, el,
            el > 0 ? (double)r.bytes_total / 1e6 / el : 0.0, cm_pool_size(r.pool));
    rc = 0;
done:
    if (r.b.ids)
        for (size_t i = 0; i < r.b.n; i++) {
            free(r.b.ids[i]);
            free(r.b.err[i]);
        }
    cm_shards_writer_abort(r.w);
    cm_pool_close(r.pool);
    free(r.b.text);
    free(r.b.off);
    free(r.b.starts);
    free(r.b.ids);
    free(r.b.n_ids);
    free(r.b.err);
    cm_tokenizer_close(tok);
    free(abs_tok);
    free(in);
    return rc;
}
