/* cmd_inspect.c - `sdxl inspect FILE [--json]`: what a safetensors file holds.
 *
 * Human output: metadata (long values cut), one row per tensor in data order,
 * totals per dtype. --json: the same, complete, as one JSON object (for
 * scripts). A file the reader rejects prints the reader's message on stderr
 * and exits 1; a usage error exits 2.
 *
 * Names and metadata come from an untrusted file: control bytes are escaped
 * before they reach the terminal.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "io/safetensors.h"

#define META_VALUE_MAX 100 /* bytes of a metadata value shown without --json */
#define NAME_COL_MAX 64    /* the name column grows to this, longer names push the row */

static void usage(FILE *f) {
    fprintf(f, "usage: sdxl inspect FILE [--json]\n"
               "\n"
               "Print a safetensors file's metadata and tensors (name, dtype, shape, bytes),\n"
               "then totals per dtype. The file is checked in full first; if it is malformed\n"
               "the reason goes to stderr and the exit status is 1.\n"
               "\n"
               "  --json     everything as one JSON object, metadata values not shortened\n"
               "  -h, --help this text\n");
}

/* Print at most `max` bytes of s (cut on a UTF-8 character boundary) with
 * control bytes escaped; returns the number of display columns used
 * (approximated by bytes) and whether it was cut. */
static size_t print_safe(FILE *out, const char *s, size_t max, bool *cut) {
    size_t n = strlen(s), used = 0;
    if (cut) *cut = n > max;
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--; /* s[n] continues a character */
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            used += (size_t)fprintf(out, "\\n");
        else if (c == '\t')
            used += (size_t)fprintf(out, "\\t");
        else if (c < 0x20 || c == 0x7f)
            used += (size_t)fprintf(out, "\\x%02x", c);
        else {
            fputc(c, out);
            used++;
        }
    }
    return used;
}

static void shape_str(const sdxl_st_tensor *t, char *buf, size_t n) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

typedef struct {
    size_t count[SDXL_ST_DTYPE_COUNT_];
    uint64_t bytes[SDXL_ST_DTYPE_COUNT_];
    uint64_t total;
} totals;

static totals count_totals(const sdxl_st_file *f) {
    totals t = {0};
    for (size_t i = 0; i < sdxl_st_count(f); i++) {
        const sdxl_st_tensor *x = sdxl_st_at(f, i);
        t.count[x->dtype]++;
        t.bytes[x->dtype] += x->nbytes;
        t.total += x->nbytes;
    }
    return t;
}

static int print_human(const sdxl_st_file *f) {
    size_t n = sdxl_st_count(f), n_meta = sdxl_st_metadata_count(f);
    totals tot = count_totals(f);
    printf("file      %s\n", sdxl_st_path(f));
    printf("header    %llu bytes\n", (unsigned long long)sdxl_st_header_size(f));
    printf("data      %llu bytes\n", (unsigned long long)sdxl_st_data_size(f));

    printf("\nmetadata (%zu)\n", n_meta);
    for (size_t i = 0; i < n_meta; i++) {
        const char *k, *v;
        sdxl_st_metadata_at(f, i, &k, &v);
        bool cut;
        printf("  ");
        print_safe(stdout, k, 200, NULL);
        printf(" = ");
        print_safe(stdout, v, META_VALUE_MAX, &cut);
        if (cut) printf("... (%zu bytes; --json shows all)", strlen(v));
        printf("\n");
    }

    size_t w = 4;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(sdxl_st_at(f, i)->name);
        if (l > w) w = l < NAME_COL_MAX ? l : NAME_COL_MAX;
    }
    printf("\ntensors (%zu)\n", n);
    if (n) printf("  %-*s  %-7s  %-22s  %12s\n", (int)w, "name", "dtype", "shape", "bytes");
    for (size_t i = 0; i < n; i++) {
        const sdxl_st_tensor *t = sdxl_st_at(f, i);
        char sh[200];
        shape_str(t, sh, sizeof sh);
        printf("  ");
        bool cut;
        size_t used = print_safe(stdout, t->name, 4096, &cut);
        if (cut) used += (size_t)printf("...");
        printf("%*s  %-7s  %-22s  %12zu\n", (int)(used < w ? w - used : 0), "", sdxl_st_dtype_name(t->dtype),
               sh, t->nbytes);
    }

    printf("\ntotal     %zu tensors, %llu bytes (%.2f MiB)\n", n, (unsigned long long)tot.total,
           (double)tot.total / (1024.0 * 1024.0));
    printf("by dtype ");
    bool any = false;
    for (int d = 0; d < SDXL_ST_DTYPE_COUNT_; d++) {
        if (!tot.count[d]) continue;
        printf("%s %s: %zu (%llu bytes)", any ? "," : "", sdxl_st_dtype_name((sdxl_st_dtype)d), tot.count[d],
               (unsigned long long)tot.bytes[d]);
        any = true;
    }
    printf("%s\n", any ? "" : " -");
    return ferror(stdout) ? 1 : 0;
}

/* cJSON numbers are doubles: exact for every size below 2^53, which the
 * reader guarantees for offsets and dims. */
static int print_json(const sdxl_st_file *f) {
    totals tot = count_totals(f);
    cJSON *root = cJSON_CreateObject(), *meta = NULL, *tensors = NULL, *total = NULL, *by = NULL;
    bool ok = root && cJSON_AddStringToObject(root, "file", sdxl_st_path(f)) &&
              cJSON_AddNumberToObject(root, "header_bytes", (double)sdxl_st_header_size(f)) &&
              cJSON_AddNumberToObject(root, "data_bytes", (double)sdxl_st_data_size(f)) &&
              (meta = cJSON_AddObjectToObject(root, "metadata")) &&
              (tensors = cJSON_AddArrayToObject(root, "tensors")) &&
              (total = cJSON_AddObjectToObject(root, "total")) &&
              cJSON_AddNumberToObject(total, "tensors", (double)sdxl_st_count(f)) &&
              cJSON_AddNumberToObject(total, "bytes", (double)tot.total) &&
              (by = cJSON_AddObjectToObject(total, "by_dtype"));
    for (size_t i = 0; ok && i < sdxl_st_metadata_count(f); i++) {
        const char *k, *v;
        sdxl_st_metadata_at(f, i, &k, &v);
        ok = cJSON_AddStringToObject(meta, k, v) != NULL;
    }
    for (size_t i = 0; ok && i < sdxl_st_count(f); i++) {
        const sdxl_st_tensor *t = sdxl_st_at(f, i);
        cJSON *o = cJSON_CreateObject(), *shape = NULL;
        ok = o && cJSON_AddItemToArray(tensors, o) && cJSON_AddStringToObject(o, "name", t->name) &&
             cJSON_AddStringToObject(o, "dtype", sdxl_st_dtype_name(t->dtype)) &&
             (shape = cJSON_AddArrayToObject(o, "shape")) &&
             cJSON_AddNumberToObject(o, "offset", (double)t->offset) &&
             cJSON_AddNumberToObject(o, "bytes", (double)t->nbytes);
        for (int d = 0; ok && d < t->ndim; d++) {
            cJSON *num = cJSON_CreateNumber((double)t->shape[d]);
            ok = num && cJSON_AddItemToArray(shape, num);
        }
    }
    for (int d = 0; ok && d < SDXL_ST_DTYPE_COUNT_; d++) {
        if (!tot.count[d]) continue;
        cJSON *o = cJSON_AddObjectToObject(by, sdxl_st_dtype_name((sdxl_st_dtype)d));
        ok = o && cJSON_AddNumberToObject(o, "count", (double)tot.count[d]) &&
             cJSON_AddNumberToObject(o, "bytes", (double)tot.bytes[d]);
    }
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) {
        fprintf(stderr, "sdxl inspect: out of memory building the JSON output\n");
        return 1;
    }
    puts(text);
    cJSON_free(text);
    return ferror(stdout) ? 1 : 0;
}

int sdxl_cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    bool json = false, only_files = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!only_files && (!strcmp(a, "-h") || !strcmp(a, "--help"))) {
            usage(stdout);
            return 0;
        } else if (!only_files && !strcmp(a, "--json")) {
            json = true;
        } else if (!only_files && !strcmp(a, "--")) {
            only_files = true;
        } else if (!only_files && a[0] == '-' && a[1]) {
            fprintf(stderr, "sdxl inspect: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (path) {
            fprintf(stderr, "sdxl inspect: one FILE only (got '%s' and '%s')\n", path, a);
            return 2;
        } else {
            path = a;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }

    sdxl_st_file *f = NULL;
    sdxl_error err;
    sdxl_error_clear(&err);
    if (sdxl_st_open(path, &f, &err) != SDXL_STATUS_OK) {
        fprintf(stderr, "sdxl inspect: %s\n", err.msg);
        return 1;
    }
    int rc = json ? print_json(f) : print_human(f);
    sdxl_st_close(f);
    return rc;
}
