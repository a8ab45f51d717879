/* Placeholder until the command lands: it refuses rather than pretends. */
#include "commands.h"

int cmd_tokenize_corpus(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_fail("tokenize-corpus is not implemented yet");
}
