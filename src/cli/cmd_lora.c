/* cmd_lora.c - `sdxl lora ls [--json] [--lora-dir DIR]... [--config WORKER.json] [--no-hash]`:
 * the LoRA index (registry.h) as a table or JSON: name, category, size,
 * type, rank, base model, A1111/addnet short hash, trigger words. Hashes
 * read every file once (then cached for the process); --no-hash skips
 * them. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli/commands.h"
#include "cli/lora_cli.h"
#include "core/alloc.h"
#include "lora/registry.h"

static void usage(FILE *f) {
    fprintf(f, "usage: sdxl lora ls [--json] [--lora-dir DIR]... [--config WORKER.json] [--no-hash]\n"
               "  lists the LoRA files of the directories (from --lora-dir and the config's lora_directories)\n");
}

static void size_text(uint64_t b, char *buf, size_t n) {
    if (b >= (1u << 20)) snprintf(buf, n, "%.1f MiB", (double)b / 1048576.0);
    else snprintf(buf, n, "%.1f KiB", (double)b / 1024.0);
}

static int list(const char *config, const char *const *dirs, int n_dirs, bool json, bool hash) {
    sdxl_lora_worker_config cfg;
    if (!sdxl_cli_lora_config(config, dirs, n_dirs, &cfg)) return 2;
    if (cfg.n_dirs == 0) {
        fprintf(stderr, "lora ls: no directory (give --lora-dir DIR or --config with lora_directories)\n");
        return 2;
    }
    sdxl_lora_dir d[SDXL_LORA_WORKER_MAX_DIRS];
    for (size_t i = 0; i < cfg.n_dirs; i++) {
        d[i].path = cfg.dir_path[i];
        d[i].category = cfg.dir_category[i][0] ? cfg.dir_category[i] : NULL;
    }
    sdxl_error err = {0};
    sdxl_lora_registry *reg = NULL;
    if (sdxl_lora_registry_create(d, cfg.n_dirs, NULL, &reg, &err)) {
        fprintf(stderr, "lora ls: %s\n", err.msg);
        return 1;
    }
    sdxl_lora_info *info = sdxl_malloc(sizeof *info);
    cJSON *arr = json ? cJSON_CreateArray() : NULL;
    if (!info || (json && !arr)) {
        fprintf(stderr, "lora ls: out of memory\n");
        sdxl_free(info);
        sdxl_lora_registry_free(reg);
        return 1;
    }
    size_t n = sdxl_lora_registry_count(reg);
    if (!json)
        printf("%-28s %-10s %10s %-12s %5s %-16s %-12s %s\n", "name", "category", "size", "type", "rank", "base model",
               "hash", "trigger words");
    for (size_t i = 0; i < n; i++) {
        if (sdxl_lora_registry_get(reg, i, info, &err)) continue;
        if (hash && !info->error[0])
            sdxl_lora_registry_hash(reg, info->path, SDXL_LORA_HASH_SHORT, info->short_hash, sizeof info->short_hash,
                                    &err);
        char triggers[1024] = "";
        for (int k = 0; k < info->n_triggers; k++) {
            size_t l = strlen(triggers);
            snprintf(triggers + l, sizeof triggers - l, "%s%s", k ? ", " : "", info->triggers[k]);
        }
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", info->name);
            cJSON_AddStringToObject(o, "category", info->category);
            cJSON_AddStringToObject(o, "path", info->path);
            cJSON_AddStringToObject(o, "rel_path", info->rel_path);
            cJSON_AddNumberToObject(o, "size", (double)info->size);
            cJSON_AddStringToObject(o, "container", info->container);
            cJSON_AddStringToObject(o, "type", info->adapter);
            cJSON_AddNumberToObject(o, "rank", (double)info->rank);
            cJSON_AddStringToObject(o, "base_model", info->base_model);
            cJSON_AddStringToObject(o, "output_name", info->output_name);
            cJSON_AddStringToObject(o, "hash", info->short_hash);
            cJSON *tw = cJSON_AddArrayToObject(o, "trigger_words");
            for (int k = 0; k < info->n_triggers; k++) cJSON_AddItemToArray(tw, cJSON_CreateString(info->triggers[k]));
            cJSON_AddStringToObject(o, "error", info->error);
            cJSON_AddItemToArray(arr, o);
        } else {
            char sz[32], rank[16];
            size_text(info->size, sz, sizeof sz);
            snprintf(rank, sizeof rank, "%lld", (long long)info->rank);
            printf("%-28s %-10s %10s %-12s %5s %-16s %-12s %s%s%s\n", info->name, info->category[0] ? info->category : "-",
                   sz, info->adapter[0] ? info->adapter : "?", info->rank ? rank : "?",
                   info->base_model[0] ? info->base_model : "-", info->short_hash[0] ? info->short_hash : "-", triggers,
                   info->error[0] ? "  [" : "", info->error[0] ? info->error : "");
            if (info->error[0]) printf("]\n");
        }
    }
    if (json) {
        char *s = cJSON_Print(arr);
        if (s) printf("%s\n", s);
        free(s);
        cJSON_Delete(arr);
    } else {
        printf("%zu adapter files in %zu director%s\n", n, cfg.n_dirs, cfg.n_dirs == 1 ? "y" : "ies");
    }
    sdxl_free(info);
    sdxl_lora_registry_free(reg);
    return 0;
}

int sdxl_cmd_lora(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "ls") != 0) {
        usage(argc >= 2 && !strcmp(argv[1], "--help") ? stdout : stderr);
        return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : 2;
    }
    argc--, argv++;
    static const struct option opts[] = {{"json", 0, 0, 'j'},    {"lora-dir", 1, 0, 'D'}, {"config", 1, 0, 'C'},
                                         {"no-hash", 0, 0, 'n'}, {"help", 0, 0, 'h'},     {0, 0, 0, 0}};
    const char *dirs[64], *config = NULL;
    int nd = 0, ch;
    bool json = false, hash = true;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'j': json = true; break;
        case 'D':
            if (nd == 64) return fprintf(stderr, "lora ls: too many --lora-dir\n"), 2;
            dirs[nd++] = optarg;
            break;
        case 'C': config = optarg; break;
        case 'n': hash = false; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) return fprintf(stderr, "lora ls: unexpected '%s'\n", argv[optind]), 2;
    return list(config, dirs, nd, json, hash);
}
