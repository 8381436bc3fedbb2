/* commands.h - the `sdxl` command's sub-commands, one file each (cmd_*.c).
 * Each returns the process exit status: 0 ok, 1 failure, 2 usage error. */
#ifndef SDXL_CLI_COMMANDS_H
#define SDXL_CLI_COMMANDS_H

int sdxl_cmd_encode(int argc, char **argv);     /* cmd_encode.c */
int sdxl_cmd_generate(int argc, char **argv);   /* cmd_generate.c */
int sdxl_cmd_inspect(int argc, char **argv);    /* cmd_inspect.c */
int sdxl_cmd_lora(int argc, char **argv);       /* cmd_lora.c */
int sdxl_cmd_make_model(int argc, char **argv); /* cmd_make_model.c */
int sdxl_cmd_serve(int argc, char **argv);      /* cmd_serve.c */
int sdxl_cmd_smoke(int argc, char **argv);      /* cmd_smoke.c */
int sdxl_cmd_worker(int argc, char **argv);     /* cmd_worker.c */

/* cmd_smoke.c: write the one-stage smoke model (`make-model --smoke`). */
int sdxl__smoke_make_model(const char *out, unsigned long long seed, const char *dtype);

#endif
