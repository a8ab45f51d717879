/* Placeholder until the command lands: it refuses rather than pretends. */
#include "commands.h"

int cmd_finetune(int argc, char **argv) {
    (void)argc;
    (void)argv;
    return cli_fail("finetune is not implemented yet");
}
