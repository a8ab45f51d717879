#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "camelid/chat.h"
#include "camelid/generate.h"
#include "camelid/model.h"
#include "camelid/strbuf.h"
#include "chat_messages.h"
#include "commands.h"
#include "sampling_opts.h"

static const char *help =
    "usage: camelid chat MODEL [options]\n"
    "\n"
    "Talk with a model through its chat template, keeping the conversation. On a terminal: type a message,\n"
    "^C stops a reply (at the prompt it quits), /reset forgets the conversation, /exit quits. When stdin is\n"
    "not a terminal, every line is one user turn and each reply is printed on stdout followed by a newline.\n"
    "\n"
    "The template is --template NAME if given, else the model's own chat_template when camelid recognises "
    "it\n"
    "(llama2, vicuna, alpaca, guanaco, chatml, llama3), else chatml (llama.cpp's fallback).\n"
    "\n"
    "options:\n"
    "  --tokenizer FILE        tokenizer file or folder (default: the model's own, or one beside it)\n"
    "  --template NAME         llama2, vicuna, alpaca, guanaco, chatml or llama3\n"
    "  --system TEXT           system prompt (default: the template's own, if it has one)\n"
    "  --adapter DIR           merge a LoRA adapter (PEFT folder) into the model (repeatable)\n"
    "  -n, --n-predict N       new tokens per reply at most (default 256)\n"
    "  -c, --ctx-size N        context length (default: the model's); old turns are dropped to "
    "fit\n" SAMPLING_OPTS_HELP "  -t, --threads N         threads (default: all cores)\n"
    "  -h, --help              this help\n";

static volatile sig_atomic_t interrupted = 0;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

typedef struct {
    cm_strbuf text;
    bool started; /* leading whitespace of a reply is not printed */
} reply_buffer;

static int on_reply_text(void *user, const char *text, size_t len) {
    reply_buffer *r = user;
    if (!r->started) {
        while (len > 0 && (*text == ' ' || *text == '\n')) text++, len--;
        if (len == 0) return interrupted;
        r->started = true;
    }
    cm_strbuf_append(&r->text, text, len);
    if (r->text.failed) return 1;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return interrupted || ferror(stdout);
}

/* Length of the common prefix of two token lists. */
static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb) {
    int i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

int cmd_chat(int argc, char **argv) {
    const char *tok_path = NULL, *template_name = NULL, *system = NULL;
    string_list adapters = {0};
    int n_predict = 256, ctx = 0, threads = cli_default_threads();
    sampling_opts so;
    sampling_opts_init(&so);
    arg_spec specs[6 + SAMPLING_OPTS_N_SPECS] = {
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL}, {"template", 0, ARG_STRING, &template_name, NULL},
        {"system", 0, ARG_STRING, &system, NULL},      {"adapter", 0, ARG_STRINGS, &adapters, NULL},
        {"n-predict", 'n', ARG_INT, &n_predict, NULL}, {"ctx-size", 'c', ARG_INT, &ctx, NULL},
    };
    sampling_opts_specs(&so, specs + 6);
    const char *pos[2];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 2);
    const char *model_path = pos[0], *extra = pos[1];
    int early = -1;
    cm_template_id tmpl = CM_TEMPLATE_CHATML;
    if (rc != 0)
        early = rc < 0 ? 1 : 0;
    else if (cli_one_model("chat", model_path, extra) != 0 ||
             cli_check_chat_opts(n_predict, ctx, &so, template_name, &tmpl) != 0)
        early = 1;
    if (early >= 0) {
        string_list_free(&adapters);
        return early;
    }

    cm_model *m = NULL;
    const cm_tokenizer *tok = NULL;
    cm_tokenizer *owned_tok = NULL;
    cm_state *state = NULL;
    cm_sampler *sampler = NULL;
    chat_messages msgs = {0};
    int32_t *cache = NULL; /* tokens whose keys/values the state holds */
    int n_cache = 0, status = 1;
    char *line = NULL;
    size_t line_cap = 0;
    bool tty = isatty(STDIN_FILENO);

    if (cli_open_model(model_path, tok_path, false, &m, &tok, &owned_tok) != 0) goto out;
    if (cli_merge_adapters(m, &adapters) != 0) goto out;
    tmpl = cli_chat_template(template_name, tmpl, tok);
    if (ctx == 0) ctx = m->cfg.seq_len;
    if (cm_state_open(m, ctx, 512, threads, &state) != CM_OK ||
        cm_sampler_open(&so.params, m->cfg.vocab_size, &sampler) != CM_OK ||
        (system && chat_messages_add(&msgs, "system", system) != CM_OK)) {
        cli_fail_status();
        goto out;
    }
    cache = malloc((size_t)ctx * sizeof *cache);
    if (!cache) {
        cli_fail("out of memory");
        goto out;
    }
    const char *const *stops;
    size_t n_stops = cm_template_stop_strings(tmpl, &stops);
    int32_t stop_ids[4];
    size_t n_stop_ids = cm_template_stop_tokens(tmpl, tok, stop_ids, 4);
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: ^C at the prompt ends the read */
    if (tty)
        fprintf(stderr, "camelid chat: template %s; /reset forgets, /exit or ^C at the prompt quits\n",
                cm_template_name(tmpl));

    for (;;) {
        if (tty) fputs("> ", stderr);
        interrupted = 0;
        errno = 0;
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0) {
            if (tty) fputc('\n', stderr);
            break; /* end of input, or ^C at the prompt */
        }
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
        if (got == 0) continue;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) {
            chat_messages_clear_turns(&msgs);
            n_cache = 0;
            if (tty) fputs("(conversation forgotten)\n", stderr);
            continue;
        }
        if (chat_messages_add(&msgs, "user", line) != CM_OK) {
            cli_fail_status();
            goto out;
        }
        /* render the whole conversation; drop the oldest turns while it does not fit with a full reply */
        int32_t *ids = NULL;
        size_t n_ids = 0;
        for (;;) {
            cm_chat_rendered r;
            if (cm_chat_render(tmpl, msgs.items, msgs.n, true, &r) != CM_OK ||
                cm_chat_tokenize(&r, tok, &ids, &n_ids) != CM_OK) {
                cm_chat_rendered_free(&r);
                cli_fail_status();
                goto out;
            }
            cm_chat_rendered_free(&r);
            size_t turns = msgs.n - (msgs.n && !strcmp(msgs.items[0].role, "system"));
            if (n_ids + (size_t)n_predict <= (size_t)ctx || turns <= 1) break;
            free(ids);
            chat_messages_drop_oldest_turn(&msgs);
        }
        if (n_ids >= (size_t)ctx) {
            fprintf(stderr, "camelid: this message is %zu tokens, more than the context of %d; not sent\n",
                    n_ids, ctx);
            free(ids);
            chat_messages_clear_turns(&msgs);
            n_cache = 0;
            continue;
        }
        int reuse = common_prefix(cache, n_cache, ids, (int)n_ids);
        int budget = ctx - (int)n_ids < n_predict ? ctx - (int)n_ids : n_predict;
        cm_generate_params gp = {.n_predict = budget,
                                 .stop = stops,
                                 .n_stop = (int)n_stops,
                                 .n_cached = reuse,
                                 .stop_tokens = stop_ids,
                                 .n_stop_tokens = (int)n_stop_ids};
        reply_buffer reply = {0};
        cm_generate_result res;
        cm_status st = cm_generate(m, tok, state, sampler, ids, (int)n_ids, &gp, on_reply_text, &reply, &res);
        if (st == CM_OK) {
            /* the cache now holds the prompt and the reply tokens that were run */
            memcpy(cache, ids, n_ids * sizeof *cache);
            int extra_tokens = res.n_cached - (int)n_ids;
            if (extra_tokens > 0) memcpy(cache + n_ids, res.tokens, (size_t)extra_tokens * sizeof *cache);
            n_cache = res.n_cached;
        }
        free(res.tokens);
        free(ids);
        fputc('\n', stdout);
        fflush(stdout);
        if (st != CM_OK || reply.text.failed) {
            cm_strbuf_free(&reply.text);
            cli_fail_status();
            goto out;
        }
        if (interrupted && tty) fputs("(stopped)\n", stderr);
        char *answer = cli_trim_copy(reply.text.buf ? reply.text.buf : "");
        cm_strbuf_free(&reply.text);
        if (!answer || chat_messages_add(&msgs, "assistant", answer) != CM_OK) {
            free(answer);
            cli_fail("out of memory");
            goto out;
        }
        free(answer);
        if (ferror(stdout)) {
            cli_fail("stdout: write failed");
            goto out;
        }
    }
    status = 0;
out:
    free(line);
    free(cache);
    chat_messages_free(&msgs);
    cm_sampler_close(sampler);
    cm_state_close(state);
    cm_tokenizer_close(owned_tok);
    cm_model_close(m);
    string_list_free(&adapters);
    return status;
}
