/* Placeholder until the command lands: it refuses rather than pretends. */
#include "commands.h"

int cmd_merge(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_fail("merge is not implemented yet");
}
