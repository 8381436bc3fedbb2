/* lora_cli.h - the command line's LoRA options, shared by `sdxl generate`
 * and `sdxl lora ls`:
 *
 *   --lora SPEC         SPEC = NAME[:WEIGHT] or FILE[:WEIGHT] (weight 1 by default). A
 *                       SPEC naming an existing file (or containing '/') is used as that
 *                       file; anything else is a name resolved in the LoRA directories
 *   --lora-dir DIR      a LoRA directory (repeatable; category from sub-folders, or from
 *                       DIR's own name when it is a category folder such as styles/)
 *   --config FILE       the worker config JSON ({"lora_config": {...}}, see worker/request.h)
 *   --global-weight X   multiplies every adapter's weight
 */
#ifndef SDXL_CLI_LORA_CLI_H
#define SDXL_CLI_LORA_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "lora/worker.h"

/* The worker config from --config (may be NULL) plus --lora-dir entries.
 * Prints the error and returns false on a bad file. */
bool sdxl_cli_lora_config(const char *config_path, const char *const *dirs, int n_dirs, sdxl_lora_worker_config *cfg);

/* Append one --lora SPEC to spec (enabled). false (message printed) when
 * the spec is malformed or there are too many. */
bool sdxl_cli_lora_add(sdxl_lora_spec *spec, const char *arg);

/* One line per adapter on `f`: status, weights, type, modules, cache, why. */
void sdxl_cli_lora_print_report(FILE *f, const sdxl_lora_report *rep);

#endif
