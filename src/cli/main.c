/* main.c - `sdxl`: dispatch to a sub-command. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "core/cpu.h"
#include "sdxl.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
    {"encode", sdxl_cmd_encode, "tokenize and encode a prompt (token rows, conditioning tensors)"},
    {"generate", sdxl_cmd_generate, "prompt to images (samplers, CFG, seeds as torch's CPU generator, PNG)"},
    {"inspect", sdxl_cmd_inspect, "print a safetensors file's metadata and tensors"},
    {"lora", sdxl_cmd_lora, "LoRA directories: `lora ls [--json]` lists the adapters found, with hashes"},
    {"make-model", sdxl_cmd_make_model, "write an SDXL model of any config with seeded random weights"},
    {"serve", sdxl_cmd_serve, "the HTTP server: native /v1 API and A1111's /sdapi/v1 (port 7860)"},
    {"worker", sdxl_cmd_worker, "the worker service on stdin/stdout: one JSON request per line, JSON lines back"},
    {"smoke", sdxl_cmd_smoke, "run the engine's ops on a small model and report timings"},
};

static void usage(FILE *f) {
    fprintf(f, "sdxl %s - SDXL image generation with LoRA adapters\n\nusage: sdxl <command> [options]\n\n",
            SDXL_VERSION_STRING);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n`sdxl <command> --help` describes a command. CPU kernels: %s.\n",
            sdxl_isa_name(sdxl_cpu_isa()));
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("sdxl %s\n", SDXL_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "sdxl: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
