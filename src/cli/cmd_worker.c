/* cmd_worker.c - `sdxl worker`: the worker service as a child process
 * speaking JSON lines on stdin/stdout (worker/stdio.h). Logs go to stderr.
 *
 *   sdxl worker --model PATH [--config WORKER.json] [--lora-dir DIR]... [--output-dir DIR]
 *               [--queue N] [--timeout S] [--threads N] [--memory-budget MB]
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/lora_cli.h"
#include "worker/engine.h"
#include "worker/stdio.h"

static void usage(FILE *f) {
    fprintf(f, "usage: sdxl worker --model PATH [--config WORKER.json] [--lora-dir DIR]... [--output-dir DIR]\n"
               "                   [--queue N] [--timeout S] [--threads N] [--memory-budget MB]\n"
               "  reads one JSON request per line on stdin, writes queued/progress/result/error lines on stdout\n"
               "  (see docs/api.md); images go to --output-dir (default outputs) unless a request asks for base64\n");
}

int sdxl_cmd_worker(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", 1, 0, 'm'},   {"config", 1, 0, 'C'},  {"lora-dir", 1, 0, 'D'},      {"output-dir", 1, 0, 'o'},
        {"queue", 1, 0, 'q'},   {"timeout", 1, 0, 't'}, {"threads", 1, 0, 'T'},       {"memory-budget", 1, 0, 'M'},
        {"help", 0, 0, 'h'},    {0, 0, 0, 0}};
    const char *model = "demo/model", *config = NULL, *outdir = "outputs", *dirs[SDXL_LORA_WORKER_MAX_DIRS];
    int nd = 0, ch, threads = 0;
    long queue = 64;
    double timeout = 0, budget_mb = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (ch) {
        case 'm': model = optarg; break;
        case 'C': config = optarg; break;
        case 'D':
            if (nd == SDXL_LORA_WORKER_MAX_DIRS) return fprintf(stderr, "worker: too many --lora-dir\n"), 2;
            dirs[nd++] = optarg;
            break;
        case 'o': outdir = optarg; break;
        case 'q': queue = strtol(optarg, &end, 10); break;
        case 't': timeout = strtod(optarg, &end); break;
        case 'T': threads = (int)strtol(optarg, &end, 10); break;
        case 'M': budget_mb = strtod(optarg, &end); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (end && *end) return fprintf(stderr, "worker: '%s' is not a number\n", optarg), 2;
    }
    if (queue < 1 || queue > 100000 || timeout < 0 || budget_mb < 0)
        return fprintf(stderr, "worker: --queue must be in 1..100000, --timeout and --memory-budget >= 0\n"), 2;
    sdxl_engine_config cfg = sdxl_engine_default_config();
    if (!sdxl_cli_lora_config(config, dirs, nd, &cfg.lora)) return 2;
    snprintf(cfg.default_model, sizeof cfg.default_model, "%s", model);
    snprintf(cfg.output_dir, sizeof cfg.output_dir, "%s", outdir);
    cfg.threads = threads;
    cfg.memory_budget = (size_t)(budget_mb * 1048576.0);
    sdxl_error err = {0};
    sdxl_engine *e = NULL;
    if (sdxl_engine_create(&cfg, &e, &err)) {
        fprintf(stderr, "worker: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "worker: model %s loaded; reading requests on stdin\n", sdxl_engine_default_model_name(e));
    sdxl_stdio_params sp = sdxl_stdio_default_params();
    sp.queue_capacity = (size_t)queue;
    sp.timeout_s = timeout;
    int rc = sdxl_stdio_worker_run(e, stdin, stdout, &sp);
    sdxl_engine_free(e);
    return rc;
}
