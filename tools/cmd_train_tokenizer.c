/* Placeholder until the command lands: it refuses rather than pretends. */
#include "commands.h"

int cmd_train_tokenizer(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_fail("train-tokenizer is not implemented yet");
}
