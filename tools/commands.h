/* The CLI's commands and the helpers they share. */
#ifndef CAMELID_COMMANDS_H
#define CAMELID_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>

#include "args.h"
#include "camelid/chat.h"

int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_template(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_eval_report(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_arena(int argc, char **argv);
int cmd_train_tokenizer(int argc, char **argv);
int cmd_tokenize_corpus(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_finetune(int argc, char **argv);
int cmd_merge(int argc, char **argv);

/* Print "camelid: error: ..." (one line) to stderr and return 1. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* cli_fail with the library's last error message. */
int cli_fail_status(void);
int cli_parse(int argc, char **argv, arg_spec *specs, size_t n_specs, const char *help, int *threads,
              const char **positional, int *n_positional);
/* cli_parse for a command with a fixed number of positional arguments: the first n_slots go into slots
 * (NULL where absent), so slot n_slots - 1 holds the first extra argument a command can reject. */
int cli_parse_fixed(int argc, char **argv, arg_spec *specs, size_t n_specs, const char *help, int *threads,
                    const char **slots, int n_slots);
int cli_default_threads(void);
struct cm_model;
struct cm_tokenizer;
/* Open MODEL and the tokenizer to use with it (--tokenizer, else its own or one beside it). Without a
 * tokenizer the call fails, unless `optional_tokenizer` (then *tok is NULL and a note goes to stderr).
 * Reports errors; returns 0 or 1. *owned_tok is closed by the caller (NULL when the model's own is used). */
int cli_open_model(const char *path, const char *tok_path, bool optional_tokenizer, struct cm_model **m,
                   const struct cm_tokenizer **tok, struct cm_tokenizer **owned_tok);
/* Read a whole file ("-" = stdin) byte for byte. */
int cli_read_input(const char *path, char **data, size_t *len);

/* commands.c */
/* A model's default name: its file or folder name without the extension (heap; NULL out of memory). */
char *cli_model_name(const char *path);
/* The chat template a model gets: --template's (`named`) when template_name is given, else the model's own
 * chat_template when camelid recognises it, else chatml. */
cm_template_id cli_chat_template(const char *template_name, cm_template_id named,
                                 const struct cm_tokenizer *tok);
/* Merge every --adapter folder into m, in order. Reports errors; returns 0 or 1. */
int cli_merge_adapters(struct cm_model *m, const string_list *adapters);
/* A copy of s without the spaces, tabs and newlines around it (heap; NULL out of memory). */
char *cli_trim_copy(const char *s);
/* For a command that takes one MODEL: fail unless model_path is given and extra (the next argument) is not.
 * Returns 0 or 1. */
int cli_one_model(const char *command, const char *model_path, const char *extra);
struct sampling_opts;
/* The options of a command that chats with a model (chat, arena battle): -n, -c, the sampling options and
 * --template (its id into *tmpl). Reports the first bad one; returns 0 or 1. */
int cli_check_chat_opts(int n_predict, int ctx, struct sampling_opts *so, const char *template_name,
                        cm_template_id *tmpl);

#endif
