#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "camelid/generate.h"
#include "camelid/model.h"
#include "commands.h"
#include "sampling_opts.h"

static const char *help =
    "usage: camelid generate MODEL [options]\n"
    "\n"
    "Generate text. MODEL is a Hugging Face folder, a .safetensors file (config.json beside it), a .gguf "
    "file\n"
    "or a llama2.c .bin checkpoint. stdout gets the prompt's text followed by the continuation; statistics "
    "go\n"
    "to stderr.\n"
    "\n"
    "options:\n"
    "  --tokenizer FILE        tokenizer file or folder (default: the model's own, or tokenizer.model /\n"
    "                          tokenizer.bin beside it)\n"
    "  --adapter DIR           merge a LoRA adapter (PEFT folder: adapter_config.json +\n"
    "                          adapter_model.safetensors) into the model's weights (repeatable)\n"
    "  -p, --prompt TEXT       the prompt (default: none, generation starts from BOS)\n"
    "  -f, --file FILE         read the prompt from FILE\n"
    "  -n, --n-predict N       new tokens to generate (default 256; -1: until the context is full)\n"
    "  -c, --ctx-size N        context length (default: the model's)\n" SAMPLING_OPTS_HELP
    "  --stop STR              stop before STR appears (repeatable)\n"
    "  --no-echo               print only the continuation, not the prompt\n"
    "  -t, --threads N         threads (default: all cores)\n"
    "  -h, --help              this help\n"
    "\n"
    "Generation stops after N tokens, at the end of the context, at an end-of-generation token (EOS, or BOS\n"
    "as llama2.c does) or at a stop string.\n";

static int write_text(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return ferror(stdout) ? 1 : 0;
}

int cmd_generate(int argc, char **argv) {
    const char *tok_path = NULL, *prompt = NULL, *prompt_file = NULL;
    string_list adapters = {0};
    int n_predict = 256, ctx = 0, threads = cli_default_threads();
    bool no_echo = false;
    sampling_opts so;
    sampling_opts_init(&so);
    string_list stops = {0};
    arg_spec specs[] = {
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL}, {"prompt", 'p', ARG_STRING, &prompt, NULL},
        {"file", 'f', ARG_STRING, &prompt_file, NULL}, {"n-predict", 'n', ARG_INT, &n_predict, NULL},
        {"ctx-size", 'c', ARG_INT, &ctx, NULL},        {"stop", 0, ARG_STRINGS, &stops, NULL},
        {"no-echo", 0, ARG_FLAG, &no_echo, NULL},      {"adapter", 0, ARG_STRINGS, &adapters, NULL},
        [8 + SAMPLING_OPTS_N_SPECS - 1] = {0},
    };
    sampling_opts_specs(&so, specs + 8);
    const char *pos[2];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 2);
    if (rc != 0) {
        string_list_free(&stops);
        string_list_free(&adapters);
        return rc < 0 ? 1 : 0;
    }
    const char *model_path = pos[0], *extra = pos[1];
    cm_model *m = NULL;
    cm_tokenizer *owned_tok = NULL;
    const cm_tokenizer *tok = NULL;
    cm_state *state = NULL;
    cm_sampler *sampler = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    char *file_prompt = NULL;
    int status = 1;

    if (cli_one_model("generate", model_path, extra) != 0) goto out;
    if (n_predict < -1) {
        cli_fail("--n-predict must be -1 or more");
        goto out;
    }
    if (ctx < 0) {
        cli_fail("--ctx-size must be positive");
        goto out;
    }
    if (sampling_opts_resolve(&so) != 0) goto out;
    const cm_sampler_params sp = so.params;
    if (prompt_file) {
        size_t len;
        if (cli_read_input(prompt_file, &file_prompt, &len) != 0) goto out;
        if (strlen(file_prompt) != len) {
            cli_fail("%s: the prompt contains a NUL byte", prompt_file);
            goto out;
        }
        prompt = file_prompt;
    }
    if (cli_open_model(model_path, tok_path, false, &m, &tok, &owned_tok) != 0) goto out;
    if (cli_merge_adapters(m, &adapters) != 0) goto out;
    if (ctx == 0) ctx = m->cfg.seq_len;
    const char *text = prompt ? prompt : "";
    bool add_bos = cm_tokenizer_add_bos(tok) && cm_tokenizer_bos(tok) >= 0;
    if (cm_tokenizer_encode(tok, text, strlen(text), add_bos, false, &ids, &n_ids) != CM_OK) {
        cli_fail("prompt: %s", cm_last_error());
        goto out;
    }
    if (n_ids == 0) {
        cli_fail("the prompt is empty and the tokenizer has no BOS token to start from");
        goto out;
    }
    if (n_ids > (size_t)ctx) {
        cli_fail("the prompt is %zu tokens, longer than the context of %d", n_ids, ctx);
        goto out;
    }
    if (cm_state_open(m, ctx, (int)n_ids < 512 ? (int)n_ids : 512, threads, &state) != CM_OK ||
        cm_sampler_open(&sp, m->cfg.vocab_size, &sampler) != CM_OK) {
        cli_fail_status();
        goto out;
    }
    cm_generate_params gp = {
        .n_predict = n_predict, .stop = stops.items, .n_stop = stops.n, .echo_prompt = !no_echo};
    cm_generate_result res;
    if (cm_generate(m, tok, state, sampler, ids, (int)n_ids, &gp, write_text, NULL, &res) != CM_OK) {
        fputc('\n', stdout);
        cli_fail_status();
        goto out;
    }
    free(res.tokens);
    fputc('\n', stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_fail("stdout: write failed");
        goto out;
    }
    fprintf(stderr,
            "camelid: prompt %d tokens (%.1f tok/s), generated %d tokens (%.1f tok/s), stop: %s, seed %llu\n",
            res.n_prompt, res.prompt_seconds > 0 ? res.n_prompt / res.prompt_seconds : 0.0, res.n_generated,
            res.generate_seconds > 0 ? res.n_generated / res.generate_seconds : 0.0,
            cm_stop_reason_name(res.stop), (unsigned long long)sp.seed);
    status = 0;
out:
    free(ids);
    free(file_prompt);
    cm_sampler_close(sampler);
    cm_state_close(state);
    cm_tokenizer_close(owned_tok);
    cm_model_close(m);
    string_list_free(&stops);
    string_list_free(&adapters);
    return status;
}
