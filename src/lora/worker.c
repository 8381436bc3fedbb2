/* worker.c - the LoRA worker (see worker.h). */
#include "lora/worker.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

struct sdxl_lora_worker {
    sdxl_lora_worker_config cfg;
    sdxl_weights *w;
    sdxl_backend *be;
    sdxl_lora_registry *reg;
    sdxl_lora_cache *cache;
    sdxl_lora_merger *merger;
};

sdxl_lora_worker_config sdxl_lora_worker_default_config(void) {
    sdxl_lora_worker_config c;
    memset(&c, 0, sizeof c);
    c.memory_limit_mb = 2048;
    c.enable_caching = true;
    c.cache_size = 8;
    c.enable_memory_monitoring = true;
    return c;
}

/* Folder names that are categories themselves (the seed's layout lists
 * "models/lora/styles" as a directory). */
static bool known_category_folder(const char *name, char *cat, size_t n) {
    static const char *const known[] = {"style", "character", "lighting", "concept", "pose",
                                        "clothing", "background", "effect", "object", "detail"};
    char norm[SDXL_LORA_NAME_MAX];
    if (!sdxl_lora_category_normalize(name, norm, sizeof norm)) return false;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(norm, known[i]) == 0) {
            snprintf(cat, n, "%s", norm);
            return true;
        }
    return false;
}

sdxl_status sdxl_lora_worker_config_add_dir(sdxl_lora_worker_config *cfg, const char *path, const char *category,
                                            sdxl_error *err) {
    if (!cfg || !path || !*path) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora_directories: empty path");
    if (cfg->n_dirs == SDXL_LORA_WORKER_MAX_DIRS)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora_directories: more than %d directories",
                              SDXL_LORA_WORKER_MAX_DIRS);
    if (strlen(path) >= SDXL_LORA_PATH_MAX)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora_directories: path too long");
    size_t i = cfg->n_dirs;
    snprintf(cfg->dir_path[i], sizeof cfg->dir_path[i], "%s", path);
    cfg->dir_category[i][0] = 0;
    if (category) {
        if (strlen(category) >= SDXL_LORA_NAME_MAX)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora_directories: category too long");
        sdxl_lora_category_normalize(category, cfg->dir_category[i], sizeof cfg->dir_category[i]);
    } else {
        /* last path component */
        char tmp[SDXL_LORA_PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s", path);
        size_t len = strlen(tmp);
        while (len > 1 && tmp[len - 1] == '/') tmp[--len] = 0;
        const char *base = strrchr(tmp, '/');
        base = base ? base + 1 : tmp;
        known_category_folder(base, cfg->dir_category[i], sizeof cfg->dir_category[i]);
    }
    cfg->n_dirs++;
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_lora_spec_add(sdxl_lora_spec *spec, const char *name, const char *category, float weight,
                               sdxl_error *err) {
    if (!spec || !name) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora: NULL argument");
    if (spec->n == SDXL_LORA_MAX_PER_REQUEST)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora: more than %d adapters in one request",
                              SDXL_LORA_MAX_PER_REQUEST);
    if (strlen(name) >= SDXL_LORA_REQUEST_MAX || (category && strlen(category) >= SDXL_LORA_NAME_MAX))
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora: name or category too long");
    sdxl_lora_entry *e = &spec->entries[spec->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->category, sizeof e->category, "%s", category ? category : "");
    e->weight = weight;
    return SDXL_STATUS_OK;
}

const char *sdxl_lora_status_name(sdxl_lora_status s) {
    static const char *const names[SDXL_LORA_STATUS_COUNT_] = {
        "applied", "not_found", "invalid_name", "invalid_file", "too_large", "no_matching_keys", "load_failed",
        "skipped"};
    return (unsigned)s < SDXL_LORA_STATUS_COUNT_ ? names[s] : "?";
}

void sdxl_lora_report_free(sdxl_lora_report *rep) {
    if (!rep) return;
    sdxl_free(rep->items);
    memset(rep, 0, sizeof *rep);
}

sdxl_status sdxl_lora_worker_create(const sdxl_lora_worker_config *cfg, sdxl_weights *w, sdxl_backend *be,
                                    sdxl_lora_worker **out, sdxl_error *err) {
    if (!cfg || !w || !be || !out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora worker: NULL argument");
    *out = NULL;
    if (cfg->n_dirs > SDXL_LORA_WORKER_MAX_DIRS)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora worker: too many directories");
    if (cfg->memory_limit_mb > ((size_t)1 << 24))
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora_config.memory_limit_mb: %zu is out of range",
                              cfg->memory_limit_mb);
    sdxl_lora_worker *lw = sdxl_calloc(1, sizeof *lw);
    if (!lw) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora worker: out of memory");
    lw->cfg = *cfg;
    lw->w = w;
    lw->be = be;
    sdxl_lora_dir dirs[SDXL_LORA_WORKER_MAX_DIRS];
    for (size_t i = 0; i < cfg->n_dirs; i++) {
        dirs[i].path = lw->cfg.dir_path[i];
        dirs[i].category = lw->cfg.dir_category[i][0] ? lw->cfg.dir_category[i] : NULL;
    }
    sdxl_lora_cache_params cp = sdxl_lora_cache_default_params();
    cp.enabled = cfg->enable_caching;
    cp.max_entries = cfg->cache_size;
    cp.max_bytes = cfg->memory_limit_mb << 20;
    sdxl_status st;
    if ((st = sdxl_lora_registry_create(dirs, cfg->n_dirs, NULL, &lw->reg, err)) ||
        (st = sdxl_lora_cache_create(&cp, sdxl_weights_naming(w), &lw->cache, err)) ||
        (st = sdxl_lora_merger_create(w, be, &lw->merger, err))) {
        sdxl_lora_worker_free(lw);
        return st;
    }
    *out = lw;
    return SDXL_STATUS_OK;
}

void sdxl_lora_worker_free(sdxl_lora_worker *lw) {
    if (!lw) return;
    sdxl_lora_merger_free(lw->merger);
    sdxl_lora_cache_free(lw->cache);
    sdxl_lora_registry_free(lw->reg);
    sdxl_free(lw);
}

void sdxl_lora_worker_restore(sdxl_lora_worker *lw) {
    if (lw) sdxl_lora_merger_restore(lw->merger, NULL);
}

sdxl_lora_registry *sdxl_lora_worker_registry(sdxl_lora_worker *lw) { return lw ? lw->reg : NULL; }
sdxl_lora_cache *sdxl_lora_worker_cache(sdxl_lora_worker *lw) { return lw ? lw->cache : NULL; }
const sdxl_lora_worker_config *sdxl_lora_worker_get_config(const sdxl_lora_worker *lw) {
    return lw ? &lw->cfg : NULL;
}

static int64_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    long long size = 0, res = 0;
    int ok = fscanf(f, "%lld %lld", &size, &res) == 2;
    fclose(f);
    return ok ? res * (int64_t)sysconf(_SC_PAGESIZE) : -1;
}

/* strlcpy: copy what fits, always terminated */
static void copy_str(char *dst, size_t n, const char *src) {
    size_t l = strnlen(src, n - 1);
    memcpy(dst, src, l);
    dst[l] = 0;
}

static void stem_of(const char *path, char *out, size_t n) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    copy_str(out, n, b);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = 0;
}

static float part_weight(const sdxl_lora_entry *e, bool unet) {
    if (unet && e->has_unet_weight) return e->unet_weight;
    if (!unet && e->has_te_weight) return e->te_weight;
    return e->weight;
}

sdxl_status sdxl_lora_worker_apply(sdxl_lora_worker *lw, const sdxl_lora_spec *spec, sdxl_lora_report *rep,
                                   sdxl_error *err) {
    if (!lw || !spec || !rep) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora worker: NULL argument");
    memset(rep, 0, sizeof *rep);
    double t0 = sdxl_now_s();
    int n = spec->enabled ? spec->n : 0;
    if (n < 0 || n > SDXL_LORA_MAX_PER_REQUEST)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora worker: %d entries", n);
    float global = spec->global_weight;
    if (!isfinite(global)) global = 1.0f;
    rep->items = sdxl_calloc(n ? (size_t)n : 1, sizeof *rep->items);
    sdxl_lora_handle **handles = sdxl_calloc(n ? (size_t)n : 1, sizeof *handles);
    sdxl_lora_apply *set = sdxl_calloc(n ? (size_t)n : 1, sizeof *set);
    sdxl_lora_resolution *res = sdxl_malloc(sizeof *res);
    if (!rep->items || !handles || !set || !res) {
        sdxl_free(handles);
        sdxl_free(set);
        sdxl_free(res);
        sdxl_lora_report_free(rep);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora worker: out of memory");
    }
    size_t nset = 0;
    double resolve_ms = 0, load_ms = 0;
    for (int i = 0; i < n; i++) {
        const sdxl_lora_entry *e = &spec->entries[i];
        sdxl_lora_outcome *o = &rep->items[rep->n];
        memset(o, 0, sizeof *o);
        snprintf(o->name, sizeof o->name, "%s", e->name);
        o->unet_weight = part_weight(e, true) * global;
        o->te_weight = part_weight(e, false) * global;
        sdxl_error lerr = {0};
        /* resolve */
        double tr = sdxl_now_s();
        if (e->is_path) {
            struct stat sb;
            char *real = stat(e->name, &sb) == 0 ? realpath(e->name, NULL) : NULL;
            if (!real) {
                o->status = SDXL_LORA_NOT_FOUND;
                snprintf(o->message, sizeof o->message, "%s: no such file", e->name);
                rep->n++;
                continue;
            }
            snprintf(o->path, sizeof o->path, "%s", real);
            free(real);
        } else {
            sdxl_status st = sdxl_lora_registry_resolve(lw->reg, e->name, e->category[0] ? e->category : NULL, res,
                                                        &lerr);
            resolve_ms += sdxl_ms_since(tr);
            if (st) {
                o->status = st == SDXL_STATUS_NOT_FOUND ? SDXL_LORA_NOT_FOUND
                            : st == SDXL_STATUS_INVALID_ARG ? SDXL_LORA_INVALID_NAME
                                                             : SDXL_LORA_LOAD_FAILED;
                snprintf(o->message, sizeof o->message, "%s", lerr.msg);
                if (st == SDXL_STATUS_NOT_FOUND) {
                    o->n_suggestions = res->n_suggestions;
                    memcpy(o->suggestions, res->suggestions, sizeof o->suggestions);
                }
                rep->n++;
                continue;
            }
            snprintf(o->path, sizeof o->path, "%s", res->entry.path);
            snprintf(o->category, sizeof o->category, "%s", res->entry.category);
            if (res->warning[0]) snprintf(o->message, sizeof o->message, "%s", res->warning);
        }
        stem_of(o->path, o->stem, sizeof o->stem);
        /* the same file twice: one entry, weights added */
        bool dup = false;
        for (size_t k = 0; k < rep->n; k++) {
            sdxl_lora_outcome *p = &rep->items[k];
            if (p->path[0] && strcmp(p->path, o->path) == 0) {
                p->unet_weight += o->unet_weight;
                p->te_weight += o->te_weight;
                size_t l = strlen(p->message);
                snprintf(p->message + l, sizeof p->message - l, "%slisted more than once ('%s'): weights added",
                         l ? "; " : "", e->name);
                for (size_t q = 0; q < nset; q++)
                    if (handles[q] && strcmp(sdxl_lora_adapter_label(sdxl_lora_handle_adapter(handles[q])),
                                             p->path) == 0) {
                        set[q].unet_weight = p->unet_weight;
                        set[q].te_weight = p->te_weight;
                    }
                SDXL_LOG_W("lora: %s listed more than once: weights added", p->path);
                dup = true;
                break;
            }
        }
        if (dup) continue;
        rep->n++;
        /* load (through the cache) */
        sdxl_lora_handle *h = NULL;
        sdxl_lora_load_info li = {0};
        sdxl_status st = sdxl_lora_cache_get(lw->cache, o->path, &h, &li, &lerr);
        o->cache_hit = li.hit;
        o->load_ms = li.load_ms;
        o->bytes = li.bytes;
        load_ms += li.load_ms;
        if (st) {
            o->status = li.too_large                    ? SDXL_LORA_TOO_LARGE
                        : st == SDXL_STATUS_NOT_FOUND   ? SDXL_LORA_NOT_FOUND
                        : st == SDXL_STATUS_BAD_INPUT || st == SDXL_STATUS_UNSUPPORTED ? SDXL_LORA_INVALID_FILE
                                                                                       : SDXL_LORA_LOAD_FAILED;
            snprintf(o->message, sizeof o->message, "%s", lerr.msg);
            continue;
        }
        const sdxl_lora_adapter *a = sdxl_lora_handle_adapter(h);
        o->modules = sdxl_lora_adapter_module_count(a);
        o->unmatched_keys = sdxl_lora_adapter_unmatched_count(a);
        snprintf(o->adapter_type, sizeof o->adapter_type, "%s", sdxl_lora_type_name(sdxl_lora_adapter_main_type(a)));
        if (o->modules == 0) {
            const char *k = "", *why = "";
            sdxl_lora_adapter_unmatched_at(a, 0, &k, &why);
            o->status = SDXL_LORA_NO_MATCHING_KEYS;
            snprintf(o->message, sizeof o->message, "no key of the file fits a module of this model (%zu keys; %s: %s)",
                     o->unmatched_keys, k, why);
            sdxl_lora_cache_release(lw->cache, h);
            continue;
        }
        if (o->unmatched_keys) {
            size_t l = strlen(o->message);
            snprintf(o->message + l, sizeof o->message - l, "%s%zu keys match no module of this model",
                     l ? "; " : "", o->unmatched_keys);
        }
        handles[nset] = h;
        set[nset] = (sdxl_lora_apply){a, o->unet_weight, o->te_weight};
        nset++;
        o->status = SDXL_LORA_APPLIED; /* provisional: the merge decides */
    }
    /* strength 0 on both parts: nothing to apply */
    for (size_t k = 0; k < rep->n; k++) {
        sdxl_lora_outcome *o = &rep->items[k];
        if (o->status == SDXL_LORA_APPLIED && o->unet_weight == 0 && o->te_weight == 0) {
            o->status = SDXL_LORA_SKIPPED;
            size_t l = strlen(o->message);
            snprintf(o->message + l, sizeof o->message - l, "%sweight 0", l ? "; " : "");
        }
    }
    double tm = sdxl_now_s();
    sdxl_status st = sdxl_lora_merger_apply(lw->merger, set, nset, 1.0f, &rep->merge, err);
    rep->merge_ms = sdxl_ms_since(tm);
    for (size_t k = 0; k < rep->n; k++) {
        sdxl_lora_outcome *o = &rep->items[k];
        if (o->status != SDXL_LORA_APPLIED) continue;
        if (st) {
            o->status = SDXL_LORA_LOAD_FAILED;
            snprintf(o->message, sizeof o->message, "merge failed: %s", err ? err->msg : "out of memory");
            continue;
        }
        rep->applied++;
        if (!o->path[0]) continue;
        sdxl_error herr = {0};
        if (sdxl_lora_registry_hash(lw->reg, o->path, SDXL_LORA_HASH_SHORT, o->short_hash, sizeof o->short_hash,
                                    &herr))
            o->short_hash[0] = 0; /* a file outside the index (a --lora path): no hash */
    }
    for (size_t q = 0; q < nset; q++) sdxl_lora_cache_release(lw->cache, handles[q]);
    sdxl_free(handles);
    sdxl_free(set);
    sdxl_free(res);
    rep->resolve_ms = resolve_ms;
    rep->load_ms = load_ms;
    sdxl_lora_cache_stats_get(lw->cache, &rep->cache);
    if (lw->cfg.enable_memory_monitoring) {
        sdxl_mem_stats ms;
        sdxl_mem_get_stats(&ms);
        rep->memory_monitored = true;
        rep->rss_bytes = rss_bytes();
        rep->engine_live_bytes = ms.live_bytes;
        rep->engine_peak_bytes = ms.peak_bytes;
        rep->mapped_bytes = ms.mapped_bytes;
    }
    SDXL_LOG_D("lora worker: %zu of %d applied in %.1f ms", rep->applied, n, sdxl_ms_since(t0));
    return st;
}

void sdxl_lora_report_hashes(const sdxl_lora_report *rep, char *buf, size_t n) {
    if (!buf || !n) return;
    buf[0] = 0;
    size_t at = 0;
    for (size_t i = 0; rep && i < rep->n; i++) {
        const sdxl_lora_outcome *o = &rep->items[i];
        if (o->status != SDXL_LORA_APPLIED || !o->short_hash[0]) continue;
        int w = snprintf(buf + at, n - at, "%s%s: %s", at ? ", " : "", o->stem, o->short_hash);
        if (w < 0 || (size_t)w >= n - at) {
            buf[at] = 0;
            return;
        }
        at += (size_t)w;
    }
}

/* ---- <lora:...> prompt tags ---------------------------------------------------------- */

static bool parse_float(const char *s, size_t len, float *out) {
    char tmp[64];
    if (len == 0 || len >= sizeof tmp) return false;
    memcpy(tmp, s, len);
    tmp[len] = 0;
    char *end;
    double v = strtod(tmp, &end);
    if (*end || !isfinite(v) || fabs(v) > 1e4) return false;
    *out = (float)v;
    return true;
}

/* One tag body "NAME[:a[:b]]" or with unet=/te= keys; false if malformed. */
static bool parse_tag(const char *body, size_t len, sdxl_lora_entry *e) {
    memset(e, 0, sizeof *e);
    e->weight = 1.0f;
    const char *end = body + len, *p = body;
    const char *c = memchr(p, ':', len);
    size_t nl = c ? (size_t)(c - p) : len;
    while (nl && isspace((unsigned char)p[nl - 1])) nl--;
    while (nl && isspace((unsigned char)*p)) p++, nl--;
    if (nl == 0 || nl >= sizeof e->name) return false;
    memcpy(e->name, p, nl);
    e->name[nl] = 0;
    int pos = 0;
    while (c && c < end) {
        const char *f = c + 1;
        const char *nc = memchr(f, ':', (size_t)(end - f));
        const char *fe = nc ? nc : end;
        const char *eq = memchr(f, '=', (size_t)(fe - f));
        float v;
        if (eq) {
            size_t kl = (size_t)(eq - f);
            if (!parse_float(eq + 1, (size_t)(fe - eq - 1), &v)) return false;
            if (kl == 4 && !strncmp(f, "unet", 4)) e->has_unet_weight = true, e->unet_weight = v;
            else if (kl == 2 && !strncmp(f, "te", 2)) e->has_te_weight = true, e->te_weight = v;
            else if (kl == 3 && !strncmp(f, "dyn", 3)) { /* A1111's dynamic-dim: ignored */
            } else return false;
        } else {
            if (!parse_float(f, (size_t)(fe - f), &v)) return false;
            if (pos == 0) e->weight = v; /* A1111: first = te multiplier, and unet too unless given */
            else if (pos == 1) e->has_unet_weight = true, e->unet_weight = v, e->has_te_weight = true,
                               e->te_weight = e->weight;
            else if (pos == 2) { /* dyn dim: ignored */
            } else return false;
            pos++;
        }
        c = nc;
    }
    return true;
}

sdxl_status sdxl_lora_extract_prompt_tags(const char *prompt, char *clean, size_t n, sdxl_lora_spec *spec,
                                          char *warning, size_t warning_n, sdxl_error *err) {
    if (!prompt || !clean || !n || !spec) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora tags: NULL argument");
    if (warning && warning_n) warning[0] = 0;
    size_t o = 0;
    const char *p = prompt;
    while (*p) {
        const char *tag = NULL;
        size_t plen = 0;
        if (!strncmp(p, "<lora:", 6)) tag = p + 6, plen = 6;
        else if (!strncmp(p, "<lyco:", 6)) tag = p + 6, plen = 6;
        const char *close = tag ? strchr(tag, '>') : NULL;
        if (tag && close) {
            sdxl_lora_entry e;
            if (parse_tag(tag, (size_t)(close - tag), &e)) {
                if (spec->n == SDXL_LORA_MAX_PER_REQUEST)
                    return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora tags: more than %d adapters",
                                          SDXL_LORA_MAX_PER_REQUEST);
                spec->entries[spec->n++] = e;
                spec->enabled = true;
                p = close + 1;
                continue;
            }
            if (warning && warning_n && !warning[0])
                snprintf(warning, warning_n, "malformed tag '%.*s' left in the prompt", (int)(close + 1 - p), p);
            (void)plen;
        }
        if (o + 1 >= n) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora tags: prompt too long");
        clean[o++] = *p++;
    }
    clean[o] = 0;
    return SDXL_STATUS_OK;
}
