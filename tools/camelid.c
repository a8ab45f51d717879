/* camelid — the command-line interface. It parses arguments and calls the library, nothing more. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "camelid/file.h"
#include "camelid/generate.h"
#include "camelid/gguf.h"
#include "camelid/llama.h"
#include "camelid/model.h"
#include "camelid/sampler.h"
#include "camelid/tokenizer.h"
#include "commands.h"

#define MAX_INPUT_BYTES ((size_t)1 << 30)

int cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("camelid: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_fail_status(void) {
    return cli_fail("%s", cm_last_error());
}

/* Parse argv for a command with the options every command shares (-t/--threads, -h/--help). Returns -1 on
 * error (already reported), 1 if help was printed, 0 to go on. */
int cli_parse(int argc, char **argv, arg_spec *specs, size_t n_specs, const char *help, int *threads,
              const char **positional, int *n_positional) {
    bool want_help = false;
    arg_spec *all = calloc(n_specs + 3, sizeof *all);
    if (!all) return cli_fail("out of memory"), -1;
    memcpy(all, specs, n_specs * sizeof *all);
    all[n_specs] = (arg_spec){"threads", 't', ARG_INT, threads, NULL};
    all[n_specs + 1] = (arg_spec){"help", 'h', ARG_FLAG, &want_help, NULL};
    char err[512];
    int rc = args_parse(argc, argv, all, positional, n_positional, err, sizeof err);
    free(all);
    if (rc != 0) return cli_fail("%s", err), -1;
    if (want_help) {
        fputs(help, stdout);
        return 1;
    }
    if (*threads < 1) return cli_fail("--threads must be at least 1"), -1;
    return 0;
}

int cli_open_model(const char *path, const char *tok_path, bool optional_tokenizer, cm_model **m,
                   const cm_tokenizer **tok, cm_tokenizer **owned_tok) {
    *m = NULL;
    *tok = NULL;
    *owned_tok = NULL;
    if (cm_model_open(path, m) != CM_OK) return cli_fail_status();
    cm_status st = cm_model_tokenizer(*m, tok_path, tok, owned_tok);
    if (st == CM_ERR_NOT_FOUND && !tok_path && optional_tokenizer) {
        fprintf(stderr, "camelid: no tokenizer found; writing the model without one\n");
        return 0;
    }
    if (st != CM_OK) {
        cm_model_close(*m);
        *m = NULL;
        return cli_fail_status();
    }
    return 0;
}

int cli_parse_fixed(int argc, char **argv, arg_spec *specs, size_t n_specs, const char *help, int *threads,
                    const char **slots, int n_slots) {
    for (int i = 0; i < n_slots; i++) slots[i] = NULL;
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    if (!pos) return cli_fail("out of memory"), -1;
    int n_pos = 0;
    int rc = cli_parse(argc, argv, specs, n_specs, help, threads, pos, &n_pos);
    for (int i = 0; i < n_slots && i < n_pos; i++) slots[i] = pos[i];
    free(pos);
    return rc;
}

int cli_default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static const char *main_help =
    "usage: camelid <command> [options]\n"
    "\n"
    "commands:\n"
    "  generate   generate text from a model (HF folder, .safetensors, .gguf, llama2.c .bin)\n"
    "  tokenize   print the tokens of a text\n"
    "  convert    convert a model to a Hugging Face folder or a GGUF file\n"
    "  inspect    show a model's or tokenizer's config, tensors and vocabulary\n"
    "  template   print the prompt a chat template makes of a conversation\n"
    "  chat       talk with a model, turn by turn, through its chat template\n"
    "  init       write a random-weight model of a named shape (benchmarks, training from scratch)\n"
    "  quantize   quantize a model to a Q8_0 or Q4_0 GGUF file (llama-quantize's bytes)\n"
    "  bench      measure prompt and generation speed (llama-bench methodology) against the machine's peak\n"
    "  eval       evaluate a model: MMLU, perplexity, BIG-bench, snowball (lm-eval-style results + store)\n"
    "  eval-report compare the runs kept in an evaluation store (text table, HTML with SVG bars)\n"
    "  serve      serve models over an OpenAI-compatible HTTP API (streaming, continuous batching)\n"
    "  arena      pit two models against each other offline; print the Elo / Bradley-Terry leaderboard\n"
    "  train-tokenizer  train a byte-level BPE tokenizer (HF tokenizer.json) on text files\n"
    "  tokenize-corpus  turn text or JSONL files into token shards for training\n"
    "  train      train a model from scratch or continue one (AdamW, checkpoints, exact resume)\n"
    "  finetune   supervised fine-tuning: full, LoRA or QLoRA (NF4), PEFT adapters\n"
    "  merge      merge a LoRA adapter into its base model (HF folder)\n"
    "\n"
    "Every command accepts -t/--threads N and -h/--help. Run `camelid <command> --help` for its options.\n";

int main(int argc, char **argv) {
    /* a closed pipe (camelid ... | head) is a write error to report, not a signal to die of */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        fputs(main_help, stderr);
        return 1;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(main_help, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        puts("camelid 0.1.0");
        return 0;
    }
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - 2, argv + 2);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 2, argv + 2);
    if (!strcmp(cmd, "convert")) return cmd_convert(argc - 2, argv + 2);
    if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(cmd, "template")) return cmd_template(argc - 2, argv + 2);
    if (!strcmp(cmd, "chat")) return cmd_chat(argc - 2, argv + 2);
    if (!strcmp(cmd, "init")) return cmd_init(argc - 2, argv + 2);
    if (!strcmp(cmd, "quantize")) return cmd_quantize(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(cmd, "eval-report")) return cmd_eval_report(argc - 2, argv + 2);
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 2, argv + 2);
    if (!strcmp(cmd, "arena")) return cmd_arena(argc - 2, argv + 2);
    if (!strcmp(cmd, "train-tokenizer")) return cmd_train_tokenizer(argc - 2, argv + 2);
    if (!strcmp(cmd, "tokenize-corpus")) return cmd_tokenize_corpus(argc - 2, argv + 2);
    if (!strcmp(cmd, "train")) return cmd_train(argc - 2, argv + 2);
    if (!strcmp(cmd, "finetune")) return cmd_finetune(argc - 2, argv + 2);
    if (!strcmp(cmd, "merge")) return cmd_merge(argc - 2, argv + 2);
    return cli_fail("unknown command \"%s\" (see camelid --help)", cmd);
}
