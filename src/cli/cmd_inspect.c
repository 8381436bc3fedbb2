/* STUB */
#include <stdio.h>
#include "cli/commands.h"
int sdxl_cmd_inspect(int argc, char **argv) { fprintf(stderr, "inspect: not implemented\n"); return 1; }
