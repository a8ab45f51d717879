/* Placeholder until the command lands: it refuses rather than pretends. */
#include "commands.h"

int cmd_arena(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_fail("arena is not implemented yet");
}
