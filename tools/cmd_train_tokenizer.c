/* camelid train-tokenizer: byte-level BPE training (library: camelid/bpe_train.h) over text and JSONL files
 * (camelid/corpus.h), written as HF tokenizer.json + tokenizer_config.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "camelid/bpe_train.h"
#include "camelid/corpus.h"
#include "camelid/file.h"
#include "commands.h"

static const char *help =
    "usage: camelid train-tokenizer --vocab-size N [--special TOKEN]... [--bos TOKEN] [--eos TOKEN]\n"
    "                               IN... --out FILE\n"
    "\n"
    "Train a byte-level BPE tokenizer (GPT-2 pre-tokenizer regex) on text and write it as a Hugging Face\n"
    "tokenizer.json, with tokenizer_config.json beside it. The vocabulary is the special tokens (ids 0, 1,\n"
    "...), the 256 bytes, then one token per merge; the most frequent pair is merged first, ties going to the\n"
    "greater pair in raw bytes (as Stanford CS336's reference trainer does).\n"
    "\n"
    "IN is a text file (read whole; the special tokens in it split it and are never merged) or a .jsonl file\n"
    "(one {\"text\": ...} document per line).\n"
    "\n"
    "options:\n"
    "  --vocab-size N   vocabulary size: specials + 256 + merges (training stops early if no pair is left)\n"
    "  --special TOKEN  a special token (repeatable, ids in the order given)\n"
    "  --bos TOKEN      the special token put before every document, BOS (default: the first --special)\n"
    "  --eos TOKEN      the special token that ends generation, EOS (default: the first --special)\n"
    "  --out FILE       where to write: a file named tokenizer.json, or a folder to write it into\n"
    "                   (tokenizer_config.json goes beside it; folders are created)\n"
    "  -t, --threads N  threads (accepted for uniformity)\n"
    "  -h, --help       this help\n";

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    cm_bpe_trainer *t;
    size_t docs;
} feed_ctx;

static cm_status feed_doc(void *user, const char *text, size_t len) {
    feed_ctx *f = user;
    f->docs++;
    return cm_bpe_trainer_add(f->t, text, len);
}

static void on_progress(void *user, int done, int max) {
    (void)user;
    fprintf(stderr, "\r\033[Kcamelid: merges %d/%d", done, max);
    fflush(stderr);
}

static int special_index(const string_list *sp, const char *name, const char *opt) {
    for (int i = 0; i < sp->n; i++)
        if (strcmp(sp->items[i], name) == 0) return i;
    return cli_fail("%s \"%s\" is not one of the --special tokens", opt, name), -2;
}

int cmd_train_tokenizer(int argc, char **argv) {
    int vocab = 0, threads = 1;
    const char *out = NULL, *bos = NULL, *eos = NULL;
    string_list specials = {0};
    arg_spec specs[] = {
        {"vocab-size", 0, ARG_INT, &vocab, NULL}, {"special", 0, ARG_STRINGS, &specials, NULL},
        {"bos", 0, ARG_STRING, &bos, NULL},       {"eos", 0, ARG_STRING, &eos, NULL},
        {"out", 'o', ARG_STRING, &out, NULL},
    };
    const char **in = calloc((size_t)argc + 1, sizeof *in);
    if (!in) return cli_fail("out of memory");
    int n_in = 0, rc = 1;
    cm_bpe_trainer *t = NULL;
    char *path = NULL;
    int prc = cli_parse(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, in, &n_in);
    if (prc != 0) {
        rc = prc < 0 ? 1 : 0;
        goto done;
    }
    if (vocab <= 0) {
        cli_fail("train-tokenizer needs --vocab-size N");
        goto done;
    }
    if (!out) {
        cli_fail("train-tokenizer needs --out FILE (tokenizer.json, or a folder)");
        goto done;
    }
    if (n_in == 0) {
        cli_fail("train-tokenizer needs at least one input file");
        goto done;
    }
    /* camelid and transformers find tokenizer_config.json beside a file named exactly tokenizer.json */
    size_t ol = strlen(out);
    bool is_dir = cm_path_is_dir(out) || (ol > 0 && out[ol - 1] == '/');
    const char *base = strrchr(out, '/') ? strrchr(out, '/') + 1 : out;
    if (!is_dir && strcmp(base, "tokenizer.json") != 0) {
        cli_fail("--out %s: name the file tokenizer.json (its tokenizer_config.json, with BOS/EOS, is read from "
                 "beside it) or give a folder",
                 out);
        goto done;
    }
    path = is_dir ? cm_path_join(out, "tokenizer.json") : strdup(out);
    char *dir = path ? cm_path_dirname(path) : NULL;
    cm_status mk = dir ? cm_mkdir_p(dir) : cm_error(CM_ERR_NOMEM, "out of memory");
    free(dir);
    if (mk) {
        cli_fail_status();
        goto done;
    }
    int bos_i = specials.n ? 0 : -1, eos_i = specials.n ? 0 : -1;
    if (bos && (bos_i = special_index(&specials, bos, "--bos")) < -1) goto done;
    if (eos && (eos_i = special_index(&specials, eos, "--eos")) < -1) goto done;
    cm_bpe_train_opts o = {.vocab_size = vocab, .specials = specials.items, .n_specials = specials.n,
                           .bos = bos_i, .eos = eos_i};
    if (cm_bpe_trainer_open(&o, &t) != CM_OK) {
        cli_fail_status();
        goto done;
    }
    bool tty = isatty(STDERR_FILENO);
    double t0 = now();
    feed_ctx f = {.t = t};
    for (int i = 0; i < n_in; i++) {
        if (tty) fprintf(stderr, "\r\033[Kcamelid: reading %s", in[i]);
        /* a text file is one document: its special tokens split it inside the trainer */
        if (cm_corpus_read(in[i], NULL, feed_doc, &f) != CM_OK) {
            if (tty) fputc('\n', stderr);
            cli_fail_status();
            goto done;
        }
    }
    double t1 = now();
    if (tty) fputs("\r\033[K", stderr);
    fprintf(stderr, "camelid: %.2f MB in %zu document(s) from %d file(s): %zu distinct pre-tokens (%.2f s)\n",
            (double)cm_bpe_trainer_n_bytes(t) / 1e6, f.docs, n_in, cm_bpe_trainer_n_words(t), t1 - t0);
    if (cm_bpe_trainer_run(t, tty ? on_progress : NULL, NULL) != CM_OK) {
        if (tty) fputc('\n', stderr);
        cli_fail_status();
        goto done;
    }
    if (tty) fputs("\r\033[K", stderr);
    double t2 = now();
    if (cm_bpe_trainer_save(t, path) != CM_OK) {
        cli_fail_status();
        goto done;
    }
    int n_tok = cm_bpe_trainer_vocab_size(t), n_merges = cm_bpe_trainer_n_merges(t);
    if (n_tok < vocab)
        fprintf(stderr,
                "camelid: note: no pair was left to merge (tokens are at most %d bytes): the vocabulary has %d "
                "tokens, not %d\n",
                CM_BPE_TRAIN_MAX_TOKEN_BYTES, n_tok, vocab);
    fprintf(stderr, "camelid: wrote %s: %d tokens (%d special, 256 bytes, %d merges) in %.2f s", path, n_tok,
            specials.n, n_merges, t2 - t1);
    if (bos_i >= 0) fprintf(stderr, "; BOS %s = %d, EOS %s = %d", specials.items[bos_i], bos_i,
                            specials.items[eos_i], eos_i);
    fputc('\n', stderr);
    rc = 0;
done:
    cm_bpe_trainer_close(t);
    free(path);
    free(in);
    string_list_free(&specials);
    return rc;
}
