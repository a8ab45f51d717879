#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/file.h"
#include "camelid/tokenizer.h"
#include "commands.h"

static const char *help =
    "usage: camelid tokenize --tokenizer FILE [options]\n"
    "\n"
    "Tokenize all of stdin (or -f FILE) byte for byte, as one text: no newline is stripped.\n"
    "\n"
    "options:\n"
    "  --tokenizer FILE   tokenizer.model, a llama2.c tokenizer.bin, a .gguf, a byte-level BPE pair\n"
    "                     (vocab.json + merges.txt or encoder.json + vocab.bpe: give either file), or a "
    "folder\n"
    "                     holding one\n"
    "  --pre NAME         byte-level BPE pre-tokenizer: gpt2 (GPT-2 regex) or llama3 (Llama 3 regex and\n"
    "                     ignore_merges); default: from the GGUF, else llama3 for 128,000+ tokens, else "
    "gpt2\n"
    "  -f, --file FILE    read the text from FILE instead of stdin\n"
    "  --ids              print the ids space-separated on one line (an empty text prints an empty line)\n"
    "                     instead of one \"id<TAB>piece\" line per token\n"
    "  --no-bos           do not add BOS (the SentencePiece dummy prefix is still added)\n"
    "  -t, --threads N    threads (accepted for uniformity)\n"
    "  -h, --help         this help\n";

#define MAX_TEXT_BYTES ((size_t)1 << 30)

int cli_read_input(const char *path, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    if (path && strcmp(path, "-") != 0) {
        if (cm_read_file(path, MAX_TEXT_BYTES, data, len) != CM_OK) return cli_fail_status();
        return 0;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return cli_fail("out of memory");
    for (;;) {
        if (n + 1 >= cap) {
            if (cap >= MAX_TEXT_BYTES) {
                free(buf);
                return cli_fail("stdin: more than %zu bytes", MAX_TEXT_BYTES);
            }
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                return cli_fail("out of memory");
            }
            buf = b;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, stdin);
        n += got;
        if (got == 0) break;
    }
    if (ferror(stdin)) {
        free(buf);
        return cli_fail("stdin: read failed");
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    const char *tok_path = NULL, *file = NULL, *pre = NULL;
    bool ids_only = false, no_bos = false;
    int threads = 1;
    arg_spec specs[] = {
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL},
        {"file", 'f', ARG_STRING, &file, NULL},
        {"ids", 0, ARG_FLAG, &ids_only, NULL},
        {"no-bos", 0, ARG_FLAG, &no_bos, NULL},
        {"pre", 0, ARG_STRING, &pre, NULL},
    };
    const char *pos[1];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 1);
    const char *extra = pos[0];
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (extra)
        return cli_fail("tokenize takes no positional argument (got \"%s\"); use --tokenizer and -f", extra);
    if (!tok_path) return cli_fail("tokenize needs --tokenizer FILE");
    cm_tokenizer *tok;
    if ((pre ? cm_tokenizer_open_bpe(tok_path, pre, &tok) : cm_tokenizer_open(tok_path, 0, &tok)) != CM_OK)
        return cli_fail_status();
    char *text;
    size_t len;
    if (cli_read_input(file, &text, &len) != 0) {
        cm_tokenizer_close(tok);
        return 1;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    bool add_bos = !no_bos && cm_tokenizer_add_bos(tok) && cm_tokenizer_bos(tok) >= 0;
    if (cm_tokenizer_encode(tok, text, len, add_bos, false, &ids, &n) != CM_OK) {
        int r = cli_fail("%s: %s", file ? file : "stdin", cm_last_error());
        free(text);
        cm_tokenizer_close(tok);
        return r;
    }
    if (ids_only) {
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        putchar('\n');
    } else {
        for (size_t i = 0; i < n; i++) {
            size_t plen;
            const char *piece = cm_tokenizer_piece(tok, ids[i], &plen);
            printf("%d\t", ids[i]);
            fwrite(piece, 1, plen, stdout);
            putchar('\n');
        }
    }
    free(ids);
    free(text);
    cm_tokenizer_close(tok);
    if (fflush(stdout) != 0) return cli_fail("stdout: write failed");
    return 0;
}
