#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/chat.h"
#include "chat_messages.h"
#include "commands.h"

static const char *help =
    "usage: camelid template NAME [options] < messages.json\n"
    "\n"
    "Print the prompt a chat template makes of an OpenAI-style message list\n"
    "[{\"role\": \"system\"|\"user\"|\"assistant\", \"content\": \"...\"}, ...], ending with the "
    "assistant's\n"
    "opening: exactly the text the model is fed (markers such as <s> or <|im_start|> spelled out).\n"
    "NAME is one of llama2, vicuna, alpaca, guanaco, chatml, llama3.\n"
    "\n"
    "options:\n"
    "  --system TEXT      system prompt (when the messages have none; else the template's default, if any)\n"
    "  -f, --file FILE    read the messages from FILE instead of stdin\n"
    "  --tokenizer FILE   also print the token ids (markers as the vocabulary's special ids) on stderr\n"
    "  -t, --threads N    threads (accepted for uniformity)\n"
    "  -h, --help         this help\n";

int cmd_template(int argc, char **argv) {
    const char *system = NULL, *file = NULL, *tok_path = NULL;
    int threads = 1;
    arg_spec specs[] = {
        {"system", 0, ARG_STRING, &system, NULL},
        {"file", 'f', ARG_STRING, &file, NULL},
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL},
    };
    const char *pos[2];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 2);
    const char *name = pos[0], *extra = pos[1];
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (!name) return cli_fail("template needs a NAME (llama2, vicuna, alpaca, guanaco, chatml, llama3)");
    if (extra) return cli_fail("template takes one NAME, got an extra argument \"%s\"", extra);
    cm_template_id id;
    if (cm_template_from_name(name, &id) != CM_OK) return cli_fail_status();
    char *text;
    size_t len;
    if (cli_read_input(file, &text, &len) != 0) return 1;
    chat_messages msgs;
    if (chat_messages_parse(text, len, file ? file : "stdin", &msgs) != CM_OK) {
        free(text);
        return cli_fail_status();
    }
    free(text);
    int status = 1;
    cm_tokenizer *tok = NULL;
    cm_chat_rendered r = {0};
    if (system && chat_messages_set_system(&msgs, system) != CM_OK) {
        cli_fail_status();
        goto out;
    }
    if (cm_chat_render(id, msgs.items, msgs.n, true, &r) != CM_OK) {
        cli_fail("%s: %s", file ? file : "stdin", cm_last_error());
        goto out;
    }
    char *prompt = cm_chat_rendered_text(&r);
    if (!prompt) {
        cli_fail("out of memory");
        goto out;
    }
    fputs(prompt, stdout);
    free(prompt);
    if (tok_path) {
        int32_t *ids;
        size_t n;
        if (cm_tokenizer_open(tok_path, 0, &tok) != CM_OK || cm_chat_tokenize(&r, tok, &ids, &n) != CM_OK) {
            cli_fail_status();
            goto out;
        }
        for (size_t i = 0; i < n; i++) fprintf(stderr, i ? " %d" : "%d", ids[i]);
        fputc('\n', stderr);
        free(ids);
    }
    if (fflush(stdout) != 0) {
        cli_fail("stdout: write failed");
        goto out;
    }
    status = 0;
out:
    cm_chat_rendered_free(&r);
    cm_tokenizer_close(tok);
    chat_messages_free(&msgs);
    return status;
}
