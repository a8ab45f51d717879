#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "camelid/chat.h"
#include "camelid/model.h"
#include "camelid/serve.h"
#include "commands.h"

static const char *help =
    "usage: camelid serve MODEL [MODEL...] [options]\n"
    "\n"
    "Serve models over an OpenAI-compatible HTTP API: POST /v1/chat/completions, POST /v1/completions\n"
    "(streamed as server-sent events with \"stream\": true), GET /v1/models, GET /health, GET /metrics\n"
    "(Prometheus), POST /tokenize, POST /detokenize. Up to --parallel requests per model decode together\n"
    "(continuous batching); more wait in a FIFO queue, and a full queue answers 503. SIGTERM or SIGINT "
    "stops\n"
    "accepting, lets running requests finish (10 s at most), then exits 0.\n"
    "\n"
    "Web pages (no key needed): GET / (chat), GET /arena (one prompt, two anonymous models, a vote) and\n"
    "GET /leaderboard. Arena API: POST /v1/arena/battles, POST /v1/arena/battles/ID/vote, GET\n"
    "/v1/arena/leaderboard (ratings as `camelid arena leaderboard`); the arena needs two or more models and\n"
    "keeps its battles and votes in the --db file (in memory without one).\n"
    "\n"
    "A model's id is its file or folder name without extension, unless --alias names it (the n-th --alias\n"
    "names the n-th MODEL). Chats use --template NAME if given, else the model's own chat_template when\n"
    "camelid recognises it, else chatml (as `camelid chat`).\n"
    "\n"
    "options:\n"
    "  --alias NAME            the id of the next MODEL in order (repeatable)\n"
    "  --host ADDR             address to listen on (default 127.0.0.1, loopback only)\n"
    "  --port N                port (default 8080; 0 = any free port, printed at start)\n"
    "  --parallel N            requests decoding together per model (default 4)\n"
    "  --ctx T                 context per request (default: min(4096, the model's))\n"
    "  --api-key KEY           require \"Authorization: Bearer KEY\" (default: $CAMELID_API_KEY, else none)\n"
    "  --tokenizer FILE        tokenizer file or folder (default: the model's own, or one beside it)\n"
    "  --template NAME         chat template: llama2, vicuna, alpaca, guanaco, chatml or llama3\n"
    "  --adapter DIR           merge a LoRA adapter (PEFT folder) into every model (repeatable)\n"
    "  --db FILE               SQLite file for the request log (table serve_requests) and the arena's\n"
    "                          battles and votes (arena_battles, arena_votes)\n"
    "  --max-body BYTES        request body limit (default 1048576); larger bodies get 413\n"
    "  --timeout S             seconds a request may take, queueing included (default 600)\n"
    "  --queue-depth N         requests that may wait beyond the slots (default 64)\n"
    "  --idle-timeout S        seconds a client may stay silent while sending its request (default 30)\n"
    "  --max-connections N     concurrent connections (default 256)\n"
    "  -t, --threads N         compute threads per model (default: all cores)\n"
    "  -h, --help              this help\n";

static void log_line(void *user, const char *line) {
    (void)user;
    fprintf(stderr, "camelid: %s\n", line);
}

int cmd_serve(int argc, char **argv) {
    cm_server_params sp = cm_server_defaults();
    const char *tok_path = NULL, *template_name = NULL, *api_key = getenv("CAMELID_API_KEY");
    string_list aliases = {0}, adapters = {0};
    int threads = cli_default_threads(), ctx = 0;
    uint64_t max_body = sp.max_body;
    arg_spec specs[] = {
        {"alias", 0, ARG_STRINGS, &aliases, NULL},
        {"host", 0, ARG_STRING, &sp.host, NULL},
        {"port", 0, ARG_INT, &sp.port, NULL},
        {"parallel", 0, ARG_INT, &sp.parallel, NULL},
        {"ctx", 0, ARG_INT, &ctx, NULL},
        {"api-key", 0, ARG_STRING, &api_key, NULL},
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL},
        {"template", 0, ARG_STRING, &template_name, NULL},
        {"adapter", 0, ARG_STRINGS, &adapters, NULL},
        {"db", 0, ARG_STRING, &sp.db_path, NULL},
        {"max-body", 0, ARG_U64, &max_body, NULL},
        {"timeout", 0, ARG_INT, &sp.timeout, NULL},
        {"queue-depth", 0, ARG_INT, &sp.queue_depth, NULL},
        {"idle-timeout", 0, ARG_INT, &sp.idle_timeout, NULL},
        {"max-connections", 0, ARG_INT, &sp.max_connections, NULL},
    };
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    int n_pos = 0;
    int rc =
        pos ? cli_parse(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, &n_pos) : -1;
    cm_template_id tmpl = CM_TEMPLATE_CHATML;
    int early = -1;
    if (rc != 0)
        early = rc < 0 ? 1 : 0;
    else if (n_pos == 0)
        early = cli_fail("serve needs a MODEL (see camelid serve --help)");
    else if (n_pos > 16)
        early = cli_fail("serve takes at most 16 models, got %d", n_pos);
    else if (aliases.n > n_pos)
        early = cli_fail("%d --alias for %d model(s)", aliases.n, n_pos);
    else if (sp.port < 0 || sp.port > 65535)
        early = cli_fail("--port must be 0..65535");
    else if (sp.parallel < 1 || sp.parallel > 1024)
        early = cli_fail("--parallel must be 1..1024");
    else if (ctx < 0)
        early = cli_fail("--ctx must be positive");
    else if (max_body < 1 || max_body > ((uint64_t)1 << 31))
        early = cli_fail("--max-body must be 1..2147483648");
    else if (sp.timeout < 1 || sp.idle_timeout < 1)
        early = cli_fail("--timeout and --idle-timeout must be at least 1 second");
    else if (sp.queue_depth < 0)
        early = cli_fail("--queue-depth must not be negative");
    else if (sp.max_connections < 1)
        early = cli_fail("--max-connections must be at least 1");
    else if (template_name && cm_template_from_name(template_name, &tmpl) != CM_OK)
        early = cli_fail_status();
    if (early >= 0) {
        free(pos);
        string_list_free(&aliases);
        string_list_free(&adapters);
        return early;
    }
    sp.ctx = ctx;
    sp.threads = threads;
    sp.api_key = api_key;
    sp.max_body = (size_t)max_body;
    sp.log = log_line;

    /* signals are taken by this thread alone (sigwait); every thread started from here inherits the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    int status = 1, n_models = 0;
    cm_model *models[16] = {0};
    cm_tokenizer *owned[16] = {0};
    cm_server *srv = NULL;
    if (cm_server_open(&sp, &srv) != CM_OK) {
        cli_fail_status();
        goto out;
    }
    fprintf(stderr, "camelid: listening on http://%s%s%s:%d (loading)\n", strchr(sp.host, ':') ? "[" : "",
            sp.host, strchr(sp.host, ':') ? "]" : "", cm_server_port(srv));
    for (int i = 0; i < n_pos; i++) {
        const cm_tokenizer *tok;
        if (cli_open_model(pos[i], tok_path, false, &models[i], &tok, &owned[i]) != 0) goto out;
        n_models = i + 1;
        if (cli_merge_adapters(models[i], &adapters) != 0) goto out;
        cm_template_id t = cli_chat_template(template_name, tmpl, tok);
        char *id = i < aliases.n ? strdup(aliases.items[i]) : cli_model_name(pos[i]);
        cm_status st =
            id ? cm_server_add_model(srv, id, models[i], tok, t) : cm_error(CM_ERR_NOMEM, "out of memory");
        if (st == CM_OK)
            fprintf(stderr, "camelid: model \"%s\" from %s (chat template %s)\n", id, pos[i],
                    cm_template_name(t));
        free(id);
        if (st != CM_OK) {
            cli_fail_status();
            goto out;
        }
    }
    if (cm_server_start(srv) != CM_OK) {
        cli_fail_status();
        goto out;
    }
    fprintf(stderr, "camelid: ready: %d model(s), %d slot(s) each, %s\n", n_models, sp.parallel,
            api_key && *api_key ? "API key required" : "no API key");
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "camelid: %s: shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    cm_server_shutdown(srv, 10.0);
    status = 0;
out:
    cm_server_close(srv);
    for (int i = 0; i < n_models; i++) {
        cm_tokenizer_close(owned[i]);
        cm_model_close(models[i]);
    }
    free(pos);
    string_list_free(&aliases);
    string_list_free(&adapters);
    if (status == 0) fprintf(stderr, "camelid: stopped\n");
    return status;
}
