/* Placeholder until the command lands: it refuses rather than pretends. */
#include "commands.h"

int cmd_train(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_fail("train is not implemented yet");
}
