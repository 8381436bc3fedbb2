/* commands.h - the `sdxl` command's sub-commands, one file each (cmd_*.c).
 * Each returns the process exit status: 0 ok, 1 failure, 2 usage error. */
#ifndef SDXL_CLI_COMMANDS_H
#define SDXL_CLI_COMMANDS_H

int sdxl_cmd_inspect(int argc, char **argv);    /* cmd_inspect.c */
int sdxl_cmd_make_model(int argc, char **argv); /* cmd_smoke.c */
int sdxl_cmd_smoke(int argc, char **argv);      /* cmd_smoke.c */

#endif
