/* STUB */
#include <stdio.h>
#include "cli/commands.h"
int sdxl_cmd_make_model(int argc, char **argv) { fprintf(stderr, "make-model: not implemented\n"); return 1; }
int sdxl_cmd_smoke(int argc, char **argv) { fprintf(stderr, "smoke: not implemented\n"); return 1; }
