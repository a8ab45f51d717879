/* camelid merge: a base model plus a PEFT LoRA adapter -> one HF folder with W + s B A in every adapted
 * weight (cm_model_merge_adapter), so that any engine runs it without the adapter. */
#include <stdio.h>
#include <strings.h>

#include "camelid/model.h"
#include "camelid/lora.h"
#include "commands.h"

static const char *help =
    "usage: camelid merge BASE ADAPTER OUT [--tokenizer FILE] [--dtype f32|f16|bf16]\n"
    "\n"
    "Merge the PEFT LoRA adapter folder ADAPTER (adapter_config.json + adapter_model.safetensors, as\n"
    "`camelid finetune --lora` or PEFT writes it) into BASE and write the result as an HF folder OUT, with the\n"
    "tokenizer. An adapter whose shapes do not fit BASE is refused, naming the tensor.\n"
    "\n"
    "options:\n"
    "  --tokenizer FILE   tokenizer to write with it (default: the base's own or the one beside it)\n"
    "  --dtype T          weight dtype of OUT (default: each tensor's own)\n"
    "  -t, --threads N    threads (accepted for uniformity)\n"
    "  -h, --help         this help\n";

int cmd_merge(int argc, char **argv) {
    const char *tok_path = NULL, *dtype_name = NULL;
    int threads = 1;
    arg_spec specs[] = {
        {"tokenizer", 0, ARG_STRING, &tok_path, NULL},
        {"dtype", 0, ARG_STRING, &dtype_name, NULL},
    };
    const char *pos[4];
    int rc = cli_parse_fixed(argc, argv, specs, sizeof specs / sizeof *specs, help, &threads, pos, 4);
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (!pos[0] || !pos[1] || !pos[2]) return cli_fail("merge needs BASE ADAPTER OUT (see camelid merge --help)");
    if (pos[3]) return cli_fail("merge takes three arguments, got an extra \"%s\"", pos[3]);
    cm_dtype dtype = CM_DTYPE_COUNT;
    if (dtype_name) {
        static const struct {
            const char *name;
            cm_dtype t;
        } names[] = {{"f32", CM_DTYPE_F32}, {"f16", CM_DTYPE_F16}, {"bf16", CM_DTYPE_BF16}};
        for (size_t i = 0; i < sizeof names / sizeof *names; i++)
            if (!strcasecmp(dtype_name, names[i].name)) dtype = names[i].t;
        if (dtype == CM_DTYPE_COUNT) return cli_fail("--dtype must be f32, f16 or bf16, not \"%s\"", dtype_name);
    }
    cm_model *m;
    const cm_tokenizer *tok;
    cm_tokenizer *owned;
    if (cli_open_model(pos[0], tok_path, true, &m, &tok, &owned)) return 1;
    int ret = 0;
    if (cm_model_merge_adapter(m, pos[1]) != CM_OK || cm_model_save_hf(m, tok, pos[2], dtype) != CM_OK)
        ret = cli_fail_status();
    else
        printf("merged %s into %s: %s\n", pos[1], pos[0], pos[2]);
    cm_tokenizer_close(owned);
    cm_model_close(m);
    return ret;
}
