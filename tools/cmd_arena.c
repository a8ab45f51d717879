/* `camelid arena`: the leaderboard of arena votes (from the server's database or a FastChat battle file),
 * and offline battles (two models answering a question file). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "camelid/arena.h"
#include "camelid/chat.h"
#include "camelid/elo.h"
#include "camelid/file.h"
#include "camelid/generate.h"
#include "camelid/model.h"
#include "camelid/questions.h"
#include "camelid/strbuf.h"
#include "chat_messages.h"
#include "commands.h"
#include "sampling_opts.h"

static const char *help =
    "usage: camelid arena leaderboard [--db FILE | --battles FILE] [--json] [--rounds N] [--seed S]\n"
    "       camelid arena battle MODEL_A MODEL_B --prompts FILE --out FILE [options]\n"
    "\n"
    "leaderboard: ratings of arena votes as FastChat computes them: online Elo (K 4, in vote order),\n"
    "Bradley-Terry maximum likelihood (ties count half; ratings average 1000) and its 95% interval from\n"
    "bootstrap resamples with a fixed seed. Votes come from the database `camelid serve --db FILE` writes\n"
    "(default camelid.db), or with --battles from a FastChat battle file instead: a JSON array or JSON "
    "Lines\n"
    "of {\"model_a\", \"model_b\", \"winner\"} with winner model_a, model_b, tie or \"tie (bothbad)\".\n"
    "\n"
    "  --db FILE               the server's SQLite database (default camelid.db)\n"
    "  --battles FILE          read a FastChat battle file instead of a database\n"
    "  --json                  print {\"n_battles\", \"models\": [...]} as GET /v1/arena/leaderboard does\n"
    "  --rounds N              bootstrap rounds (default 100; 0 = no intervals)\n"
    "  --seed S                bootstrap seed (default 0)\n"
    "\n"
    "battle: both models answer every question of a question file (FastChat's question.jsonl with\n"
    "\"turns\", the legacy {\"text\"} rows, or {\"prompt\"} rows; later turns see the earlier answers) "
    "through\n"
    "their chat templates. Each question becomes one JSON line in FastChat's battle format, without a\n"
    "winner: {\"question_id\", \"model_a\", \"model_b\", \"turn\", \"conversation_a\", \"conversation_b\",\n"
    "\"tstamp\"}; add \"winner\" (by hand or a judge) and `arena leaderboard --battles` rates it. The file "
    "is\n"
    "written atomically when all questions are done.\n"
    "\n"
    "  --prompts FILE          question file (JSON Lines)\n"
    "  --out FILE              battles to write (JSON Lines)\n"
    "  --alias NAME            the name of the next model in order (repeatable; default: file stems)\n"
    "  --tokenizer FILE        tokenizer for both models (default: each model's own, or one beside it)\n"
    "  --template NAME         chat template for both (default: each model's own, else chatml)\n"
    "  --system TEXT           system prompt (default: the template's own)\n"
    "  --limit N               only the first N questions\n"
    "  -n, --n-predict N       new tokens per answer at most (default 256)\n"
    "  -c, --ctx-size N        context length (default: the model's)\n" SAMPLING_OPTS_HELP
    "  -t, --threads N         threads (default: all cores)\n"
    "  -h, --help              this help\n";

static void print_table(const cm_leaderboard *lb, const char *source) {
    printf("%zu battle%s from %s\n", lb->n_battles, lb->n_battles == 1 ? "" : "s", source);
    if (lb->n == 0) return;
    int w = 5;
    for (size_t i = 0; i < lb->n; i++) {
        int n = (int)strlen(lb->rows[i].model);
        if (n > w) w = n;
    }
    printf("%4s  %-*s  %8s  %19s  %8s  %7s  %6s\n", "rank", w, "model", "bt", "95% interval", "elo",
           "battles", "wins");
    for (size_t i = 0; i < lb->n; i++) {
        const cm_leaderboard_row *r = &lb->rows[i];
        char ci[48];
        snprintf(ci, sizeof ci, "[%.1f, %.1f]", r->bt_lo, r->bt_hi);
        printf("%4zu  %-*s  %8.1f  %19s  %8.1f  %7llu  %6llu\n", i + 1, w, r->model, r->bt, ci, r->elo,
               (unsigned long long)r->battles, (unsigned long long)r->wins);
    }
}

static int leaderboard(int argc, char **argv) {
    const char *db = "camelid.db", *battles_path = NULL;
    bool json = false, db_given = false;
    int rounds = 100, threads = 1;
    uint64_t seed = 0;
    arg_spec specs[] = {
        {"db", 0, ARG_STRING, &db, &db_given}, {"battles", 0, ARG_STRING, &battles_path, NULL},
        {"json", 0, ARG_FLAG, &json, NULL},    {"rounds", 0, ARG_INT, &rounds, NULL},
        {"seed", 0, ARG_U64, &seed, NULL},
    };
    const char *pos[1];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 1);
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (pos[0]) return cli_fail("arena leaderboard takes no arguments, got \"%s\"", pos[0]);
    if (rounds < 0 || rounds > 100000) return cli_fail("--rounds must be 0..100000");
    if (db_given && battles_path) return cli_fail("give --db or --battles, not both");
    cm_battles b;
    cm_battles_init(&b);
    cm_status st;
    if (battles_path) {
        st = cm_battles_read(battles_path, &b);
    } else {
        cm_arena *a = NULL;
        st = cm_arena_open(db, true, &a);
        if (st == CM_OK) st = cm_arena_read_votes(a, &b);
        cm_arena_close(a);
    }
    cm_rating_params p = cm_rating_defaults();
    p.rounds = rounds;
    p.seed = seed;
    cm_leaderboard lb = {0};
    if (st == CM_OK) st = cm_leaderboard_compute(&b, &p, &lb);
    cm_battles_free(&b);
    if (st != CM_OK) return cli_fail_status();
    if (json) {
        char *s = cm_leaderboard_json(&lb);
        if (!s) {
            cm_leaderboard_free(&lb);
            return cli_fail("out of memory");
        }
        puts(s);
        free(s);
    } else {
        print_table(&lb, battles_path ? battles_path : db);
    }
    cm_leaderboard_free(&lb);
    if (fflush(stdout) != 0 || ferror(stdout)) return cli_fail("stdout: write failed");
    return 0;
}

/* ------------------------------------------------------------------------------------------ battle */

typedef struct {
    const char *path;
    char *name;
    cm_model *m;
    const cm_tokenizer *tok;
    cm_tokenizer *owned_tok;
    cm_template_id tmpl;
    cm_state *state;
    cm_sampler *sampler;
    int ctx;
} contender;

static int collect(void *user, const char *text, size_t len) {
    cm_strbuf *t = user;
    cm_strbuf_append(t, text, len);
    return t->failed ? 1 : 0;
}

/* One model's conversation over a question's turns; *out gets its JSON message list. */
static int converse(contender *c, const cm_question *q, const char *system, int n_predict, json_t **out) {
    chat_messages msgs = {0};
    json_t *conv = json_array();
    int status = 1;
    if (!conv || (system && chat_messages_add(&msgs, "system", system) != CM_OK)) {
        cli_fail("out of memory");
        goto out;
    }
    const char *const *stops;
    size_t n_stops = cm_template_stop_strings(c->tmpl, &stops);
    int32_t stop_ids[4];
    size_t n_stop_ids = cm_template_stop_tokens(c->tmpl, c->tok, stop_ids, 4);
    for (size_t t = 0; t < q->n_turns; t++) {
        if (chat_messages_add(&msgs, "user", q->turns[t]) != CM_OK) {
            cli_fail_status();
            goto out;
        }
        cm_chat_rendered r;
        int32_t *ids = NULL;
        size_t n_ids = 0;
        cm_status st = cm_chat_render(c->tmpl, msgs.items, msgs.n, true, &r);
        if (st == CM_OK) st = cm_chat_tokenize(&r, c->tok, &ids, &n_ids);
        cm_chat_rendered_free(&r);
        if (st != CM_OK) {
            cli_fail("question %s, turn %zu: %s", q->id_json, t + 1, cm_last_error());
            goto out;
        }
        char *answer = NULL;
        if (n_ids >= (size_t)c->ctx) {
            /* the conversation no longer fits: the answer is empty, as a context-limited model gives none */
            fprintf(stderr, "camelid: %s: question %s, turn %zu is %zu tokens, more than the context of %d\n",
                    c->name, q->id_json, t + 1, n_ids, c->ctx);
            answer = strdup("");
        } else {
            int budget = c->ctx - (int)n_ids < n_predict ? c->ctx - (int)n_ids : n_predict;
            cm_generate_params gp = {.n_predict = budget,
                                     .stop = stops,
                                     .n_stop = (int)n_stops,
                                     .stop_tokens = stop_ids,
                                     .n_stop_tokens = (int)n_stop_ids};
            cm_strbuf reply = {0};
            cm_generate_result res;
            st = cm_generate(c->m, c->tok, c->state, c->sampler, ids, (int)n_ids, &gp, collect, &reply, &res);
            free(res.tokens);
            if (st != CM_OK || reply.failed) {
                cm_strbuf_free(&reply);
                free(ids);
                cli_fail("%s: question %s: %s", c->name, q->id_json,
                         st != CM_OK ? cm_last_error() : "out of memory");
                goto out;
            }
            /* the reply without the spaces and newlines around it, as `camelid chat` keeps it */
            answer = cli_trim_copy(reply.buf ? reply.buf : "");
            cm_strbuf_free(&reply);
        }
        free(ids);
        if (!answer || chat_messages_add(&msgs, "assistant", answer) != CM_OK) {
            free(answer);
            cli_fail("out of memory");
            goto out;
        }
        free(answer);
    }
    for (size_t i = 0; i < msgs.n; i++) {
        if (!strcmp(msgs.items[i].role, "system")) continue;
        json_t *m = json_object();
        json_object_set_new(m, "role", json_string(msgs.items[i].role));
        json_object_set_new(m, "content", json_string(msgs.items[i].content));
        json_array_append_new(conv, m);
    }
    *out = conv;
    conv = NULL;
    status = 0;
out:
    json_decref(conv);
    chat_messages_free(&msgs);
    return status;
}

static int battle(int argc, char **argv) {
    const char *prompts = NULL, *out_path = NULL, *tok_path = NULL, *template_name = NULL, *system = NULL;
    string_list aliases = {0};
    int n_predict = 256, ctx = 0, limit = -1, threads = cli_default_threads();
    sampling_opts so;
    sampling_opts_init(&so);
    arg_spec specs[10 + SAMPLING_OPTS_N_SPECS] = {
        {"prompts", 0, ARG_STRING, &prompts, NULL},
        {"out", 0, ARG_STRING, &out_path, NULL},
        {"alias", 0, ARG_STRINGS, &aliases, NULL},
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL},
        {"template", 0, ARG_STRING, &template_name, NULL},
        {"system", 0, ARG_STRING, &system, NULL},
        {"limit", 0, ARG_INT, &limit, NULL},
        {"n-predict", 'n', ARG_INT, &n_predict, NULL},
        {"ctx-size", 'c', ARG_INT, &ctx, NULL},
        {"max-tokens", 0, ARG_INT, &n_predict, NULL},
    };
    sampling_opts_specs(&so, specs + 10);
    const char *pos[3];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 3);
    int early = -1;
    cm_template_id tmpl = CM_TEMPLATE_CHATML;
    if (rc != 0)
        early = rc < 0 ? 1 : 0;
    else if (!pos[0] || !pos[1])
        early = cli_fail("arena battle needs MODEL_A and MODEL_B (see camelid arena --help)");
    else if (pos[2])
        early = cli_fail("arena battle takes two models, got an extra argument \"%s\"", pos[2]);
    else if (!prompts || !out_path)
        early = cli_fail("arena battle needs --prompts FILE and --out FILE");
    else if (aliases.n > 2)
        early = cli_fail("%d --alias for 2 models", aliases.n);
    else if (cli_check_chat_opts(n_predict, ctx, &so, template_name, &tmpl) != 0)
        early = 1;
    if (early >= 0) {
        string_list_free(&aliases);
        return early;
    }
    contender cs[2] = {{0}, {0}};
    cm_questions qs = {0};
    json_t *rows = json_array();
    int status = 1;
    if (cm_questions_read(prompts, &qs) != CM_OK) {
        cli_fail_status();
        goto out;
    }
    if (qs.n == 0) {
        cli_fail("%s: no questions", prompts);
        goto out;
    }
    for (int k = 0; k < 2; k++) {
        contender *c = &cs[k];
        c->path = pos[k];
        c->name = k < aliases.n ? strdup(aliases.items[k]) : cli_model_name(pos[k]);
        if (!c->name) {
            cli_fail("out of memory");
            goto out;
        }
        if (cli_open_model(pos[k], tok_path, false, &c->m, &c->tok, &c->owned_tok) != 0) goto out;
        c->tmpl = cli_chat_template(template_name, tmpl, c->tok);
        c->ctx = ctx > 0 ? ctx : c->m->cfg.seq_len;
        if (cm_state_open(c->m, c->ctx, 512, threads, &c->state) != CM_OK ||
            cm_sampler_open(&so.params, c->m->cfg.vocab_size, &c->sampler) != CM_OK) {
            cli_fail_status();
            goto out;
        }
    }
    if (!strcmp(cs[0].name, cs[1].name)) {
        cli_fail("both models are called \"%s\" (name them with --alias)", cs[0].name);
        goto out;
    }
    size_t n = limit >= 0 && (size_t)limit < qs.n ? (size_t)limit : qs.n;
    for (size_t i = 0; i < n; i++) {
        const cm_question *q = &qs.items[i];
        json_t *conv[2] = {NULL, NULL};
        for (int k = 0; k < 2; k++) {
            if (converse(&cs[k], q, system, n_predict, &conv[k]) != 0) {
                json_decref(conv[0]);
                goto out;
            }
        }
        json_t *row = json_object();
        json_t *id = json_loads(q->id_json, JSON_DECODE_ANY, NULL);
        json_object_set_new(row, "question_id", id ? id : json_string(q->id_json));
        if (q->category) json_object_set_new(row, "category", json_string(q->category));
        json_object_set_new(row, "model_a", json_string(cs[0].name));
        json_object_set_new(row, "model_b", json_string(cs[1].name));
        json_object_set_new(row, "turn", json_integer((json_int_t)q->n_turns));
        json_object_set_new(row, "conversation_a", conv[0]);
        json_object_set_new(row, "conversation_b", conv[1]);
        json_object_set_new(row, "tstamp", json_real((double)time(NULL)));
        json_array_append_new(rows, row);
        fprintf(stderr, "camelid: question %s (%zu/%zu) answered by both\n", q->id_json, i + 1, n);
    }
    cm_atomic_file *af;
    if (cm_atomic_open(out_path, &af) != CM_OK) {
        cli_fail_status();
        goto out;
    }
    cm_status st = CM_OK;
    for (size_t i = 0; i < json_array_size(rows) && st == CM_OK; i++) {
        char *line = json_dumps(json_array_get(rows, i), JSON_COMPACT | JSON_PRESERVE_ORDER);
        st = line ? cm_atomic_write(af, line, strlen(line)) : cm_error(CM_ERR_NOMEM, "out of memory");
        if (st == CM_OK) st = cm_atomic_write(af, "\n", 1);
        free(line);
    }
    if (st == CM_OK)
        st = cm_atomic_commit(af);
    else
        cm_atomic_abort(af);
    if (st != CM_OK) {
        cli_fail_status();
        goto out;
    }
    fprintf(stderr, "camelid: wrote %zu battles (%s vs %s) to %s\n", n, cs[0].name, cs[1].name, out_path);
    status = 0;
out:
    json_decref(rows);
    cm_questions_free(&qs);
    for (int k = 0; k < 2; k++) {
        cm_sampler_close(cs[k].sampler);
        cm_state_close(cs[k].state);
        cm_tokenizer_close(cs[k].owned_tok);
        cm_model_close(cs[k].m);
        free(cs[k].name);
    }
    string_list_free(&aliases);
    return status;
}

int cmd_arena(int argc, char **argv) {
    /* argv[0] is the subcommand */
    if (argc < 1) {
        fputs(help, stderr);
        return 1;
    }
    if (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
        fputs(help, stdout);
        return 0;
    }
    if (!strcmp(argv[0], "leaderboard")) return leaderboard(argc - 1, argv + 1);
    if (!strcmp(argv[0], "battle")) return battle(argc - 1, argv + 1);
    return cli_fail("unknown arena command \"%s\" (leaderboard or battle; see camelid arena --help)",
                    argv[0]);
}
