/* camelid train: resolve the model (a named shape, a config.json, or an existing model's shape or weights)
 * and the options, then hand the loop to the library (cm_train_run). */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "camelid/file.h"
#include "camelid/model.h"
#include "camelid/trainer.h"
#include "commands.h"
#include "train_progress.h"

static const char *help =
    "usage: camelid train --config SHAPE|config.json|MODEL --data DIR --out RUN_DIR [options]\n"
    "\n"
    "Train a LLaMA model on token shards (from `camelid tokenize-corpus`) with AdamW. Writes RUN_DIR/log.jsonl\n"
    "(one object per step: step, loss, lr, grad_norm, tokens_per_s, and val_loss on evaluation steps),\n"
    "RUN_DIR/report.html (loss curves), atomic checkpoints in RUN_DIR/checkpoints/ (RUN_DIR/latest names the\n"
    "newest) and, at the last step, the model as an HF folder in RUN_DIR/model.\n"
    "\n"
    "model:\n"
    "  --config X         a named shape (stories260K, stories15M, stories42M, stories110M, smollm-135m,\n"
    "                     tinyllama-1.1b, llama2-7b), an HF config.json, or a model whose shape to use;\n"
    "                     weights start random (N(0, 0.02), seeded by --seed)\n"
    "  --init-from MODEL  start from this model's weights instead (continued pre-training)\n"
    "  --tokenizer FILE   tokenizer saved with the checkpoints (default: the one the data was made with)\n"
    "data and schedule:\n"
    "  --data DIR         token shards and manifest.json (split train; val for val_loss)\n"
    "  --out RUN_DIR      the run's folder\n"
    "  --steps N          total optimizer steps, also when resuming (default 1000)\n"
    "  --stop-after K     end after step K with a checkpoint, as an interruption would\n"
    "  --batch B          sequences per micro-batch (default 8)\n"
    "  --seq T            tokens per sequence (default 256)\n"
    "  --grad-accum G     micro-batches per optimizer step (default 1)\n"
    "  --lr LR            peak learning rate (default 1e-3)\n"
    "  --lr-schedule S    constant or cosine (default cosine, to 0.1 x LR at --steps)\n"
    "  --warmup W         linear warm-up steps (default 0)\n"
    "  --weight-decay WD  AdamW decoupled weight decay on matrices (default 0.1)\n"
    "  --clip C           clip the global gradient norm to C (default 1.0; 0 = off)\n"
    "  --bf16             forward and backward on bf16-rounded weights, f32 master copy updated\n"
    "  --seed S           seed of the initial weights and of the data order (default 1337)\n"
    "  --eval-every K     validation loss every K steps and at the last (default 100; 0 = last only)\n"
    "  --eval-batches N   batches of the val split per evaluation (default 8)\n"
    "  --ckpt-every K     checkpoint every K steps (default: only at the last step)\n"
    "  --resume           continue RUN_DIR from its latest checkpoint (same --batch, --seq, --seed)\n"
    "  -t, --threads N    threads (default: all cores)\n"
    "  -h, --help         this help\n"
    "data parallel (mpirun -np R camelid train ...):\n"
    "  --zero 1           ZeRO-1: shard the AdamW moments over the ranks (default 0: every rank holds all)\n"
    "  --batch is the global batch: each rank runs B/R rows of every micro-batch (B must be a multiple of R) and\n"
    "  the gradients are summed over the ranks; rank 0 writes the log and the checkpoints, which resume on any\n"
    "  number of ranks. Give each rank its own cores (-t 1 for one thread each on a small machine).\n";

/* Under mpirun, a rank that dies makes the launcher end the others with SIGTERM: say so in one line (written
 * beforehand, as a signal handler may only write()) instead of vanishing. Checkpoints are written atomically,
 * so the one RUN_DIR/latest names stays whole. */
static char term_note[1024];
static size_t term_note_len;
static void on_sigterm(int sig) {
    (void)sig;
    if (write(2, term_note, term_note_len) < 0) _exit(143);
    _exit(143);
}

/* --config: a named shape, else a config.json, else the shape of a model. */
static int resolve_config(const char *what, cm_config *c) {
    if (cm_config_from_shape(what, c) == CM_OK) return 0;
    if (cm_path_has_suffix(what, ".json") && !cm_path_is_dir(what)) {
        if (cm_config_load_hf(what, c) != CM_OK) return cli_fail_status();
        return 0;
    }
    if (!cm_path_exists(what))
        return cli_fail("--config %s: not a named shape (%s), a config.json or a model", what,
                        cm_config_shape_names());
    cm_model *m;
    if (cm_model_open(what, &m) != CM_OK) return cli_fail_status();
    *c = m->cfg;
    cm_model_close(m);
    return 0;
}

static int train_main(int argc, char **argv, cm_dist **dist);

int cmd_train(int argc, char **argv) {
    cm_dist *dist = NULL;
    int rc = train_main(argc, argv, &dist);
    return cm_dist_close(dist, rc);
}

/* Parse (no MPI yet: a bad argument ends every rank alike without a job), join the group, build the model and
 * train. Errors before cm_train_run are this rank's own (printed here); cm_train_run's are agreed by every
 * rank and printed by rank 0. */
static int train_main(int argc, char **argv, cm_dist **dist) {
    cm_train_options o;
    cm_train_options_defaults(&o);
    const char *config = NULL, *init_from = NULL, *tok_path = NULL, *schedule = "cosine";
    float lr = 1e-3f, wd = o.adamw.weight_decay;
    int warmup = 0;
    int threads = cli_default_threads();
    arg_spec specs[] = {
        {"config", 0, ARG_STRING, &config, NULL},
        {"init-from", 0, ARG_STRING, &init_from, NULL},
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL},
        {"data", 0, ARG_STRING, &o.data_dir, NULL},
        {"out", 'o', ARG_STRING, &o.out_dir, NULL},
        {"steps", 0, ARG_INT, &o.steps, NULL},
        {"stop-after", 0, ARG_INT, &o.stop_after, NULL},
        {"batch", 'b', ARG_INT, &o.batch, NULL},
        {"seq", 0, ARG_INT, &o.seq, NULL},
        {"grad-accum", 0, ARG_INT, &o.grad_accum, NULL},
        {"lr", 0, ARG_FLOAT, &lr, NULL},
        {"lr-schedule", 0, ARG_STRING, &schedule, NULL},
        {"warmup", 0, ARG_INT, &warmup, NULL},
        {"weight-decay", 0, ARG_FLOAT, &wd, NULL},
        {"clip", 0, ARG_FLOAT, &o.clip, NULL},
        {"bf16", 0, ARG_FLAG, &o.bf16, NULL},
        {"seed", 's', ARG_U64, &o.seed, NULL},
        {"eval-every", 0, ARG_INT, &o.eval_every, NULL},
        {"eval-batches", 0, ARG_INT, &o.eval_batches, NULL},
        {"ckpt-every", 0, ARG_INT, &o.ckpt_every, NULL},
        {"resume", 0, ARG_FLAG, &o.resume, NULL},
        {"zero", 0, ARG_INT, &o.zero, NULL},
    };
    const char *pos[1];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 1);
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (pos[0]) return cli_fail("train takes no positional argument, got \"%s\" (see camelid train --help)", pos[0]);
    if (!o.data_dir || !o.out_dir) return cli_fail("train needs --data DIR and --out RUN_DIR (see camelid train --help)");
    if (!config && !init_from) return cli_fail("train needs --config SHAPE|config.json|MODEL or --init-from MODEL");
    if (!strcmp(schedule, "cosine"))
        o.lr.kind = CM_LR_COSINE;
    else if (!strcmp(schedule, "constant"))
        o.lr.kind = CM_LR_CONSTANT;
    else
        return cli_fail("--lr-schedule must be constant or cosine, not \"%s\"", schedule);
    if (warmup < 0) return cli_fail("--warmup must be >= 0");
    if (!(wd >= 0)) return cli_fail("--weight-decay must be >= 0");
    o.lr.lr = lr;
    o.lr.warmup = warmup;
    o.lr.steps = o.steps;
    o.adamw.weight_decay = wd;
    o.threads = threads;
    if (o.zero != 0 && o.zero != 1) return cli_fail("--zero must be 0 or 1 (ZeRO stage 1 shards the AdamW moments)");
    if (cm_dist_open(dist) != CM_OK) return cli_fail_status();
    o.dist = *dist;
    int rank = cm_dist_rank(*dist);

    /* the model: random weights of a shape, or an existing model's */
    cm_model *m = NULL;
    cm_config c;
    if (init_from) {
        if (cm_model_open(init_from, &m) != CM_OK) return cli_fail_status();
        c = m->cfg;
        if (config) {
            cm_config want;
            if (resolve_config(config, &want)) return cm_model_close(m), 1;
            if (want.dim != c.dim || want.n_layers != c.n_layers || want.vocab_size != c.vocab_size ||
                want.hidden_dim != c.hidden_dim || want.n_heads != c.n_heads || want.n_kv_heads != c.n_kv_heads) {
                cm_model_close(m);
                return cli_fail("--init-from %s does not have the shape --config %s names", init_from, config);
            }
        }
    } else {
        if (resolve_config(config, &c)) return 1;
        if (cm_model_init_random(&c, o.seed, &m) != CM_OK) return cli_fail_status();
    }
    cm_params *params = NULL;
    if (cm_params_from_model(m, &params) != CM_OK) {
        cm_model_close(m);
        return cli_fail_status();
    }
    /* the tokenizer saved with checkpoints: --tokenizer, the model's own, or the one the data names */
    cm_tokenizer *owned_tok = NULL;
    const cm_tokenizer *tok = NULL;
    char *manifest_tok = NULL;
    int tok_vocab = 0; /* the vocabulary the tokenizer file has, when the manifest says */
    if (!tok_path && !(init_from && m->tokenizer)) {
        if (cm_train_data_tokenizer(o.data_dir, &manifest_tok, &tok_vocab) == CM_OK) tok_path = manifest_tok;
    }
    if (tok_path) {
        if (cm_tokenizer_open(tok_path, tok_vocab > 0 ? tok_vocab : c.vocab_size, &owned_tok) != CM_OK) {
            free(manifest_tok);
            cm_params_close(params);
            cm_model_close(m);
            return cli_fail_status();
        }
        if (cm_tokenizer_vocab_size(owned_tok) > c.vocab_size) {
            int n = cm_tokenizer_vocab_size(owned_tok);
            cm_tokenizer_close(owned_tok);
            free(manifest_tok);
            cm_params_close(params);
            cm_model_close(m);
            return cli_fail("%s has %d tokens, more than the model's vocabulary of %d", tok_path, n, c.vocab_size);
        }
        tok = owned_tok;
    } else if (init_from) {
        tok = m->tokenizer;
    }
    o.tokenizer = tok;

    int ranks = cm_dist_size(*dist);
    if (rank == 0 && (ranks > 1 || o.zero) && o.batch % ranks == 0) {
        /* the split, and what each rank holds of the optimizer state (the figure ZeRO-1 lowers) */
        size_t all = 2 * params->n * sizeof(float), mine = cm_train_optimizer_bytes(&o, params->n);
        fprintf(stderr,
                "camelid: train: %d rank%s on %d row%s each of the global batch of %d; AdamW moments %.2f MB per "
                "rank (%s of %.2f MB)\n",
                ranks, ranks > 1 ? "s" : "", o.batch / ranks, o.batch / ranks == 1 ? "" : "s", o.batch, mine / 1e6,
                o.zero && ranks > 1 ? "ZeRO-1: a shard" : "all", all / 1e6);
    }
    if (ranks > 1) {
        int n = snprintf(term_note, sizeof term_note,
                         "camelid: error: train: rank %d of %d (%s) stopped by the launcher (SIGTERM): another rank "
                         "failed or the job was cancelled; %s/latest names the last complete checkpoint (continue "
                         "with --resume, on any number of ranks)\n",
                         rank, ranks, cm_dist_host(*dist), o.out_dir);
        term_note_len = n < 0 ? 0 : (size_t)n < sizeof term_note ? (size_t)n : sizeof term_note - 1;
        signal(SIGTERM, on_sigterm);
    }
    train_progress pc = {.tty = isatty(2) && rank == 0};
    o.progress = rank == 0 ? train_progress_update : NULL;
    o.user = &pc;
    train_progress_catch_sigint(true);
    cm_status st = cm_train_run(&o, params);
    train_progress_catch_sigint(false);
    /* the run is over: a SIGTERM from the launcher now (another rank exiting first) is no failure to report */
    signal(SIGTERM, SIG_DFL);
    int ret = 0;
    if (st != CM_OK) {
        if (pc.tty) fputc('\n', stderr);
        /* every rank has the same (agreed) error: rank 0 says it */
        ret = rank == 0 ? cli_fail_status() : 1;
    } else if (rank == 0) {
        char *latest = NULL, *model_dir = cm_path_join(o.out_dir, "model");
        cm_train_latest_checkpoint(o.out_dir, &latest);
        printf("%s: checkpoint %s, log %s/log.jsonl, report %s/report.html", train_progress_interrupted() ? "interrupted" : "trained",
               latest ? latest : "(none)", o.out_dir, o.out_dir);
        if (model_dir && cm_path_is_dir(model_dir)) printf(", model %s", model_dir);
        putchar('\n');
        free(latest);
        free(model_dir);
    }
    cm_tokenizer_close(owned_tok);
    free(manifest_tok);
    cm_params_close(params);
    cm_model_close(m);
    return ret;
}
