/* lora_cli.c - LoRA options of the command line (see lora_cli.h). */
#include "cli/lora_cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "io/file.h"
#include "worker/request.h"

bool sdxl_cli_lora_config(const char *config_path, const char *const *dirs, int n_dirs, sdxl_lora_worker_config *cfg) {
    *cfg = sdxl_lora_worker_default_config();
    sdxl_error err = {0};
    if (config_path) {
        char *json = NULL;
        size_t len = 0;
        if (sdxl_read_file(config_path, 1 << 20, &json, &len, &err)) {
            fprintf(stderr, "config: %s\n", err.msg);
            return false;
        }
        char base[4096];
        snprintf(base, sizeof base, "%s", config_path);
        char *slash = strrchr(base, '/');
        if (slash) *slash = 0;
        else snprintf(base, sizeof base, ".");
        sdxl_status st = sdxl_worker_config_parse(json, len, base, cfg, &err);
        sdxl_free(json);
        if (st) {
            fprintf(stderr, "config %s: %s\n", config_path, err.msg);
            return false;
        }
    }
    for (int i = 0; i < n_dirs; i++) {
        if (sdxl_lora_worker_config_add_dir(cfg, dirs[i], NULL, &err)) {
            fprintf(stderr, "--lora-dir %s: %s\n", dirs[i], err.msg);
            return false;
        }
    }
    return true;
}

bool sdxl_cli_lora_add(sdxl_lora_spec *spec, const char *arg) {
    char name[SDXL_LORA_REQUEST_MAX];
    if (strlen(arg) >= sizeof name) {
        fprintf(stderr, "--lora: '%.60s...' is too long\n", arg);
        return false;
    }
    snprintf(name, sizeof name, "%s", arg);
    float w = 1.0f;
    char *colon = strrchr(name, ':');
    if (colon && colon != name) { /* the weight is what follows the last ':' when that is a number */
        char *end;
        double v = strtod(colon + 1, &end);
        if (end != colon + 1 && !*end) {
            if (!isfinite(v) || fabs(v) > 100) {
                fprintf(stderr, "--lora %s: the weight must be a number in [-100, 100]\n", arg);
                return false;
            }
            w = (float)v;
            *colon = 0;
        }
    }
    sdxl_error err = {0};
    if (sdxl_lora_spec_add(spec, name, NULL, w, &err)) {
        fprintf(stderr, "--lora %s: %s\n", arg, err.msg);
        return false;
    }
    struct stat sb;
    spec->entries[spec->n - 1].is_path = strchr(name, '/') != NULL || stat(name, &sb) == 0;
    spec->enabled = true;
    return true;
}

void sdxl_cli_lora_print_report(FILE *f, const sdxl_lora_report *rep) {
    for (size_t i = 0; i < rep->n; i++) {
        const sdxl_lora_outcome *o = &rep->items[i];
        if (o->status == SDXL_LORA_APPLIED) {
            fprintf(f, "lora %s: applied, unet %g te %g, %s, %zu modules%s%s, %s %.0f ms%s%s\n", o->name,
                    o->unet_weight, o->te_weight, o->adapter_type, o->modules, o->category[0] ? ", category " : "",
                    o->category, o->cache_hit ? "cached," : "loaded in", o->cache_hit ? 0.0 : o->load_ms,
                    o->message[0] ? "; " : "", o->message);
        } else {
            fprintf(f, "lora %s: %s: %s", o->name, sdxl_lora_status_name(o->status), o->message);
            for (int k = 0; k < o->n_suggestions; k++)
                fprintf(f, "%s%s", k ? ", " : " (did you mean: ", o->suggestions[k]);
            fprintf(f, "%s\n", o->n_suggestions ? ")" : "");
        }
    }
    if (rep->n)
        fprintf(f, "lora: %zu of %zu applied; %zu weights merged, %zu restored, %zu kept in %.0f ms (%.1f MiB merged)\n",
                rep->applied, rep->n, rep->merge.merged, rep->merge.restored, rep->merge.kept, rep->merge_ms,
                (double)rep->merge.bytes / 1048576.0);
}
