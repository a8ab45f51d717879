/* camelid finetune: open the base, the tokenizer and the dataset, then hand the loop to the library
 * (cm_finetune_run). */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "camelid/file.h"
#include "camelid/finetune.h"
#include "camelid/peft.h"
#include "commands.h"
#include "train_progress.h"

static const char *help =
    "usage: camelid finetune BASE --data FILE --template NAME --out DIR [--lora | --qlora] [options]\n"
    "\n"
    "Supervised fine-tuning on a chat dataset (Alpaca JSON/JSONL, ShareGPT/Vicuna conversations, OpenAI\n"
    "messages, prompt/completion), rendered through a chat template with the loss on the assistant's tokens.\n"
    "Without --lora/--qlora every weight is trained and DIR gets an HF folder; with them the base stays frozen\n"
    "and DIR gets a PEFT adapter (adapter_config.json + adapter_model.safetensors). DIR also holds log.jsonl\n"
    "(one line per optimizer step: step, loss, lr, tokens_per_s; evaluation lines: step, val_loss),\n"
    "report.html and checkpoints/ (atomic, resumable with --resume).\n"
    "\n"
    "BASE is any model camelid runs: HF folder, NF4 folder from `camelid quantize --type nf4`, GGUF, llama2.c .bin.\n"
    "\n"
    "options:\n"
    "  --data FILE           the dataset (FILE:LINE: problem on any malformed record, before training)\n"
    "  --template NAME       alpaca, vicuna, llama2, guanaco, chatml, llama3\n"
    "  --out DIR             output folder\n"
    "  --tokenizer FILE      tokenizer (default: the base's own or the one beside it)\n"
    "  --lora                LoRA on a frozen base\n"
    "  --qlora               LoRA on a base frozen in NF4 with double quantization (a non-NF4 base is\n"
    "                        quantized as it loads, layer by layer); activations recomputed per layer\n"
    "  --lora-r R            adapter rank (default 8)\n"
    "  --lora-alpha A        scale alpha / r (default 16)\n"
    "  --lora-dropout P      dropout on the adapters' input (default 0.05)\n"
    "  --lora-targets LIST   q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj (default: all seven)\n"
    "  --steps N             optimizer steps in total, also when resuming (wins over --epochs)\n"
    "  --epochs E            passes over the training rows (default 1)\n"
    "  --stop-after K        end after step K with a checkpoint, as an interruption would\n"
    "  --lr LR               learning rate, constant after a 3% linear warm-up (default 2e-4)\n"
    "  --batch B             rows per micro-batch (default 4)\n"
    "  --grad-accum G        micro-batches per optimizer step (default 1)\n"
    "  --seq T               tokens per row (default 512)\n"
    "  --val-frac F          share of the examples held out for val_loss (default 0.02)\n"
    "  --eval-every K        val_loss every K steps (default: at the last step)\n"
    "  --ckpt-every K        checkpoint every K steps (default: at the last step)\n"
    "  --train-on-prompt     loss on every token, not only the responses\n"
    "  --no-packing          one example per row (default: rows packed with whole examples)\n"
    "  --keep-status S       keep only records whose \"status\" is S (Alpaca-Libre: ok)\n"
    "  --system TEXT         system prompt for records that have none\n"
    "  --weight-decay WD     AdamW decoupled weight decay on matrices (default 0)\n"
    "  --clip C              global gradient-norm clip (default 1.0; 0 = off)\n"
    "  --seed S              seed of the split, the shuffles, the adapter init and dropout (default 1337)\n"
    "  --resume              continue DIR from its latest checkpoint\n"
    "  -t, --threads N       threads (default: all cores)\n"
    "  -h, --help            this help\n";

int cmd_finetune(int argc, char **argv) {
    cm_finetune_options o;
    cm_finetune_options_defaults(&o);
    const char *data = NULL, *template_name = NULL, *tok_path = NULL, *targets = NULL, *keep_status = NULL,
               *system = NULL;
    bool lora = false, qlora = false, train_on_prompt = false, no_packing = false;
    float lr = 2e-4f, wd = 0.0f, val_frac = 0.02f;
    int seq = 512;
    int threads = cli_default_threads();
    arg_spec specs[] = {
        {"data", 0, ARG_STRING, &data, NULL},
        {"template", 0, ARG_STRING, &template_name, NULL},
        {"out", 'o', ARG_STRING, &o.out_dir, NULL},
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL},
        {"lora", 0, ARG_FLAG, &lora, NULL},
        {"qlora", 0, ARG_FLAG, &qlora, NULL},
        {"lora-r", 0, ARG_INT, &o.lora_r, NULL},
        {"lora-alpha", 0, ARG_FLOAT, &o.lora_alpha, NULL},
        {"lora-dropout", 0, ARG_FLOAT, &o.lora_dropout, NULL},
        {"lora-targets", 0, ARG_STRING, &targets, NULL},
        {"steps", 0, ARG_INT, &o.steps, NULL},
        {"epochs", 0, ARG_INT, &o.epochs, NULL},
        {"stop-after", 0, ARG_INT, &o.stop_after, NULL},
        {"lr", 0, ARG_FLOAT, &lr, NULL},
        {"batch", 'b', ARG_INT, &o.batch, NULL},
        {"grad-accum", 0, ARG_INT, &o.grad_accum, NULL},
        {"seq", 0, ARG_INT, &seq, NULL},
        {"val-frac", 0, ARG_FLOAT, &val_frac, NULL},
        {"eval-every", 0, ARG_INT, &o.eval_every, NULL},
        {"ckpt-every", 0, ARG_INT, &o.ckpt_every, NULL},
        {"train-on-prompt", 0, ARG_FLAG, &train_on_prompt, NULL},
        {"keep-status", 0, ARG_STRING, &keep_status, NULL},
        {"system", 0, ARG_STRING, &system, NULL},
        {"no-packing", 0, ARG_FLAG, &no_packing, NULL},
        {"weight-decay", 0, ARG_FLOAT, &wd, NULL},
        {"clip", 0, ARG_FLOAT, &o.clip, NULL},
        {"seed", 's', ARG_U64, &o.seed, NULL},
        {"resume", 0, ARG_FLAG, &o.resume, NULL},
    };
    const char *pos[2];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 2);
    if (rc != 0) return rc < 0 ? 1 : 0;
    const char *base_path = pos[0];
    if (!base_path) return cli_fail("finetune needs a BASE model (see camelid finetune --help)");
    if (pos[1]) return cli_fail("finetune takes one BASE, got an extra argument \"%s\"", pos[1]);
    if (!data || !template_name || !o.out_dir) return cli_fail("finetune needs --data FILE, --template NAME and --out DIR");
    if (lora && qlora) return cli_fail("choose one of --lora and --qlora");
    o.mode = qlora ? CM_FT_QLORA : lora ? CM_FT_LORA : CM_FT_FULL;
    if (targets && cm_lora_parse_targets(targets, &o.lora_targets) != CM_OK) return cli_fail_status();
    if (!(lr > 0)) return cli_fail("--lr must be > 0");
    if (!(wd >= 0)) return cli_fail("--weight-decay must be >= 0");
    if (o.epochs < 1) return cli_fail("--epochs must be >= 1");
    if (o.steps < 0) return cli_fail("--steps must be >= 1");
    o.lr.lr = lr;
    o.adamw.weight_decay = wd;
    o.threads = threads;
    o.base_name = base_path;

    cm_sft_options so;
    cm_sft_options_defaults(&so);
    if (cm_template_from_name(template_name, &so.template_id) != CM_OK) return cli_fail_status();
    so.seq = seq;
    so.val_frac = val_frac;
    so.seed = o.seed;
    so.train_on_prompt = train_on_prompt;
    so.no_packing = no_packing;
    so.keep_status = keep_status;
    so.system = system;

    cm_model *m;
    const cm_tokenizer *tok;
    cm_tokenizer *owned_tok;
    if (cli_open_model(base_path, tok_path, false, &m, &tok, &owned_tok)) return 1;
    cm_sft_dataset *ds = NULL;
    int ret = 0;
    cm_pool *tok_pool = NULL; /* tokenizing the dataset runs on every thread */
    if (threads > 1 && cm_pool_open(threads, &tok_pool) == CM_OK) so.pool = tok_pool;
    cm_status ds_st = cm_sft_open(data, tok, &so, &ds);
    cm_pool_close(tok_pool);
    if (ds_st != CM_OK) {
        ret = cli_fail_status();
    } else {
        o.data = ds;
        o.tokenizer = tok;
        int steps = cm_finetune_steps(&o);
        o.lr.warmup = (int)ceil(0.03 * steps);
        const cm_sft_stats *all = cm_sft_stats_of(ds, CM_SFT_ALL);
        fprintf(stderr,
                "camelid: %zu examples (%zu truncated, %zu skipped as longer than --seq %d), %zu train rows, %zu val "
                "rows; %d steps\n",
                all->examples, all->truncated, all->skipped, seq, cm_sft_rows(ds, CM_SFT_TRAIN),
                cm_sft_rows(ds, CM_SFT_VAL), steps);
        train_progress pc = {.tty = isatty(2)};
        o.progress = train_progress_update;
        o.user = &pc;
        train_progress_catch_sigint(true);
        cm_status st = cm_finetune_run(&o, m);
        train_progress_catch_sigint(false);
        if (st != CM_OK) {
            if (pc.tty) fputc('\n', stderr);
            ret = cli_fail_status();
        } else {
            printf("%s: %s in %s, log %s/log.jsonl, report %s/report.html\n", train_progress_interrupted() ? "interrupted" : "fine-tuned",
                   o.mode == CM_FT_FULL ? "HF folder" : "PEFT adapter", o.out_dir, o.out_dir, o.out_dir);
        }
    }
    cm_sft_close(ds);
    cm_tokenizer_close(owned_tok);
    cm_model_close(m);
    return ret;
}
