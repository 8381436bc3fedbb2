/* request.c - the seed's request JSON, the worker config, the result JSON
 * (see request.h). */
#include "worker/request.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"
#include "core/alloc.h"

sdxl_request_limits sdxl_request_default_limits(void) {
    return (sdxl_request_limits){.max_side = 4096, .max_steps = 1000, .max_batch = 64, .max_prompt = 65536};
}

/* ---- field access with the field's path in every message ---------------------- */


static sdxl_status bad(sdxl_error *err, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static sdxl_status bad(sdxl_error *err, const char *path, const char *fmt, ...) {
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: %s", path, why);
}

/* Every member of obj must be in `known` (NULL-terminated). */
static sdxl_status only_known(const cJSON *obj, const char *prefix, const char *const *known, sdxl_error *err) {
    for (const cJSON *it = obj->child; it; it = it->next) {
        bool ok = false;
        for (int i = 0; known[i]; i++) ok = ok || (it->string && strcmp(it->string, known[i]) == 0);
        if (!ok) {
            char path[300];
            snprintf(path, sizeof path, "%s%.200s", prefix, it->string ? it->string : "?");
            return bad(err, path, "unknown field");
        }
    }
    return SDXL_STATUS_OK;
}

static sdxl_status get_num(const cJSON *obj, const char *key, const char *prefix, double lo, double hi, bool integer,
                           double *out, bool *present, sdxl_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (present) *present = v != NULL;
    if (!v) return SDXL_STATUS_OK;
    char path[300];
    snprintf(path, sizeof path, "%s%s", prefix, key);
    if (!cJSON_IsNumber(v)) return bad(err, path, "expected a number, got %s", sdxl_json_type_name(v));
    double d = v->valuedouble;
    if (!isfinite(d)) return bad(err, path, "not a finite number");
    if (integer && d != floor(d)) return bad(err, path, "expected an integer, got %g", d);
    if (d < lo || d > hi) return bad(err, path, "%g is out of range [%g, %g]", d, lo, hi);
    *out = d;
    return SDXL_STATUS_OK;
}

static sdxl_status get_str(const cJSON *obj, const char *key, const char *prefix, size_t max, const char **out,
                           sdxl_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return SDXL_STATUS_OK;
    char path[300];
    snprintf(path, sizeof path, "%s%s", prefix, key);
    if (!cJSON_IsString(v)) return bad(err, path, "expected a string, got %s", sdxl_json_type_name(v));
    if (strlen(v->valuestring) > max) return bad(err, path, "longer than %zu bytes", max);
    *out = v->valuestring;
    return SDXL_STATUS_OK;
}

static sdxl_status get_bool(const cJSON *obj, const char *key, const char *prefix, bool *out, sdxl_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return SDXL_STATUS_OK;
    char path[300];
    snprintf(path, sizeof path, "%s%s", prefix, key);
    if (!cJSON_IsBool(v)) return bad(err, path, "expected true or false, got %s", sdxl_json_type_name(v));
    *out = cJSON_IsTrue(v);
    return SDXL_STATUS_OK;
}

/* ---- the lora block ------------------------------------------------------------- */

#define MAX_WEIGHT 100.0

static sdxl_status parse_lora(const cJSON *lo, sdxl_lora_spec *spec, sdxl_error *err) {
    memset(spec, 0, sizeof *spec);
    spec->global_weight = 1.0f;
    if (!lo || cJSON_IsNull(lo)) return SDXL_STATUS_OK;
    if (!cJSON_IsObject(lo)) return bad(err, "lora", "expected an object, got %s", sdxl_json_type_name(lo));
    static const char *const known[] = {"enabled", "global_weight", "models", NULL};
    sdxl_status st;
    double g = 1.0;
    if ((st = only_known(lo, "lora.", known, err)) || (st = get_bool(lo, "enabled", "lora.", &spec->enabled, err)) ||
        (st = get_num(lo, "global_weight", "lora.", -MAX_WEIGHT, MAX_WEIGHT, false, &g, NULL, err)))
        return st;
    spec->global_weight = (float)g;
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(lo, "models");
    if (!models || cJSON_IsNull(models)) return SDXL_STATUS_OK;
    if (!cJSON_IsArray(models)) return bad(err, "lora.models", "expected a list, got %s", sdxl_json_type_name(models));
    int n = cJSON_GetArraySize(models);
    if (n > SDXL_LORA_MAX_PER_REQUEST)
        return bad(err, "lora.models", "%d entries (at most %d)", n, SDXL_LORA_MAX_PER_REQUEST);
    int i = 0;
    for (const cJSON *m = models->child; m; m = m->next, i++) {
        char pre[64], path[80];
        snprintf(pre, sizeof pre, "lora.models[%d].", i);
        snprintf(path, sizeof path, "lora.models[%d]", i);
        const char *name = NULL, *cat = NULL;
        if (cJSON_IsString(m)) {
            name = m->valuestring;
            if (strlen(name) >= SDXL_LORA_REQUEST_MAX) return bad(err, path, "name longer than %d bytes",
                                                                  SDXL_LORA_REQUEST_MAX - 1);
        } else if (cJSON_IsObject(m)) {
            static const char *const mk[] = {"name", "weight", "category", "unet_weight", "te_weight", NULL};
            if ((st = only_known(m, pre, mk, err)) ||
                (st = get_str(m, "name", pre, SDXL_LORA_REQUEST_MAX - 1, &name, err)) ||
                (st = get_str(m, "category", pre, SDXL_LORA_NAME_MAX - 1, &cat, err)))
                return st;
            if (!name) return bad(err, path, "\"name\" is required");
        } else {
            return bad(err, path, "expected a name or an object, got %s", sdxl_json_type_name(m));
        }
        if (!*name) return bad(err, path, "empty name");
        if ((st = sdxl_lora_spec_add(spec, name, cat, 1.0f, err))) return st;
        sdxl_lora_entry *e = &spec->entries[spec->n - 1];
        if (cJSON_IsObject(m)) {
            double w = 1.0, uw = 0, tw = 0;
            bool hu = false, ht = false;
            if ((st = get_num(m, "weight", pre, -MAX_WEIGHT, MAX_WEIGHT, false, &w, NULL, err)) ||
                (st = get_num(m, "unet_weight", pre, -MAX_WEIGHT, MAX_WEIGHT, false, &uw, &hu, err)) ||
                (st = get_num(m, "te_weight", pre, -MAX_WEIGHT, MAX_WEIGHT, false, &tw, &ht, err)))
                return st;
            e->weight = (float)w;
            e->has_unet_weight = hu;
            e->unet_weight = (float)uw;
            e->has_te_weight = ht;
            e->te_weight = (float)tw;
        }
    }
    return SDXL_STATUS_OK;
}

/* ---- the request -------------------------------------------------------------------- */

void sdxl_request_free(sdxl_request *r) {
    if (!r) return;
    sdxl_free(r->prompt);
    sdxl_free(r->negative_prompt);
    memset(r, 0, sizeof *r);
}

sdxl_status sdxl_request_parse(const char *json, size_t len, const sdxl_request_limits *lim_in, sdxl_request *out,
                               sdxl_error *err) {
    if (!json || !out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "request: NULL argument");
    memset(out, 0, sizeof *out);
    sdxl_request_limits lim = lim_in ? *lim_in : sdxl_request_default_limits();
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= json && at <= json + len ? (long)(at - json) : -1;
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "request: malformed JSON (near byte %ld)", off);
    }
    sdxl_status st = SDXL_STATUS_OK;
    if (!cJSON_IsObject(root)) {
        st = bad(err, "request", "expected an object, got %s", sdxl_json_type_name(root));
        goto done;
    }
    static const char *const known[] = {"request_id", "prompt", "negative_prompt", "width", "height", "steps",
                                        "guidance_scale", "scheduler", "seed", "rng", "batch_size", "output_dir",
                                        "lora", NULL};
    const char *rid = NULL, *prompt = NULL, *neg = NULL, *sched = NULL, *rng = NULL, *odir = NULL;
    double w = 0, h = 0, steps = 20, cfg = 5.0, seed = -1, batch = 1;
    if ((st = only_known(root, "", known, err)) || (st = get_str(root, "request_id", "", 127, &rid, err)) ||
        (st = get_str(root, "prompt", "", lim.max_prompt, &prompt, err)) ||
        (st = get_str(root, "negative_prompt", "", lim.max_prompt, &neg, err)) ||
        (st = get_str(root, "scheduler", "", 63, &sched, err)) || (st = get_str(root, "rng", "", 8, &rng, err)) ||
        (st = get_str(root, "output_dir", "", 1023, &odir, err)) ||
        (st = get_num(root, "width", "", 8, lim.max_side, true, &w, NULL, err)) ||
        (st = get_num(root, "height", "", 8, lim.max_side, true, &h, NULL, err)) ||
        (st = get_num(root, "steps", "", 1, lim.max_steps, true, &steps, NULL, err)) ||
        (st = get_num(root, "guidance_scale", "", 0, 100, false, &cfg, NULL, err)) ||
        (st = get_num(root, "seed", "", -1, 18446744073709551615.0, true, &seed, NULL, err)) ||
        (st = get_num(root, "batch_size", "", 1, lim.max_batch, true, &batch, NULL, err)))
        goto done;
    if (!prompt) {
        st = bad(err, "prompt", "is required");
        goto done;
    }
    if (((int)w % 8) || ((int)h % 8)) {
        st = bad(err, (int)w % 8 ? "width" : "height", "must be a multiple of 8");
        goto done;
    }
    if (rng && strcmp(rng, "cpu") != 0 && strcmp(rng, "cuda") != 0) {
        st = bad(err, "rng", "must be \"cpu\" or \"cuda\", got \"%s\"", rng);
        goto done;
    }
    if (seed > 9007199254740992.0) { /* beyond exact doubles: JSON numbers cannot say it */
        st = bad(err, "seed", "larger than 2^53 cannot be given exactly as a JSON number");
        goto done;
    }
    if ((st = parse_lora(cJSON_GetObjectItemCaseSensitive(root, "lora"), &out->lora, err))) goto done;
    snprintf(out->request_id, sizeof out->request_id, "%s", rid ? rid : "");
    out->prompt = sdxl_strdup(prompt);
    out->negative_prompt = neg ? sdxl_strdup(neg) : NULL;
    if (!out->prompt || (neg && !out->negative_prompt)) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "request: out of memory");
        goto done;
    }
    out->width = (int)w;
    out->height = (int)h;
    out->steps = (int)steps;
    out->guidance_scale = cfg;
    snprintf(out->scheduler, sizeof out->scheduler, "%s", sched ? sched : "euler");
    out->seed = (int64_t)seed;
    out->rng_cuda = rng && strcmp(rng, "cuda") == 0;
    out->batch_size = (int)batch;
    snprintf(out->output_dir, sizeof out->output_dir, "%s", odir ? odir : ".");
done:
    cJSON_Delete(root);
    if (st) sdxl_request_free(out);
    return st;
}

/* ---- the worker config ------------------------------------------------------------------ */

sdxl_status sdxl_worker_config_parse(const char *json, size_t len, const char *base_dir, sdxl_lora_worker_config *cfg,
                                     sdxl_error *err) {
    if (!json || !cfg) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "config: NULL argument");
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "config: malformed JSON");
    sdxl_status st = SDXL_STATUS_OK;
    const cJSON *lc = root;
    const char *pre = "";
    if (!cJSON_IsObject(root)) {
        st = bad(err, "config", "expected an object, got %s", sdxl_json_type_name(root));
        goto done;
    }
    if (cJSON_GetObjectItemCaseSensitive(root, "lora_config")) {
        static const char *const top[] = {"lora_config", NULL};
        if ((st = only_known(root, "", top, err))) goto done;
        lc = cJSON_GetObjectItemCaseSensitive(root, "lora_config");
        pre = "lora_config.";
        if (!cJSON_IsObject(lc)) {
            st = bad(err, "lora_config", "expected an object, got %s", sdxl_json_type_name(lc));
            goto done;
        }
    }
    static const char *const known[] = {"lora_directories", "memory_limit_mb", "enable_caching", "cache_size",
                                        "enable_memory_monitoring", NULL};
    double mem = (double)cfg->memory_limit_mb, cs = (double)cfg->cache_size;
    if ((st = only_known(lc, pre, known, err)) ||
        (st = get_num(lc, "memory_limit_mb", pre, 1, 1 << 24, true, &mem, NULL, err)) ||
        (st = get_num(lc, "cache_size", pre, 0, 100000, true, &cs, NULL, err)) ||
        (st = get_bool(lc, "enable_caching", pre, &cfg->enable_caching, err)) ||
        (st = get_bool(lc, "enable_memory_monitoring", pre, &cfg->enable_memory_monitoring, err)))
        goto done;
    cfg->memory_limit_mb = (size_t)mem;
    cfg->cache_size = (size_t)cs;
    const cJSON *dirs = cJSON_GetObjectItemCaseSensitive(lc, "lora_directories");
    if (dirs) {
        char path[300];
        snprintf(path, sizeof path, "%slora_directories", pre);
        if (!cJSON_IsArray(dirs)) {
            st = bad(err, path, "expected a list, got %s", sdxl_json_type_name(dirs));
            goto done;
        }
        int i = 0;
        for (const cJSON *d = dirs->child; d; d = d->next, i++) {
            char ip[340], dp[SDXL_LORA_PATH_MAX];
            snprintf(ip, sizeof ip, "%s[%d]", path, i);
            const char *p = NULL, *cat = NULL;
            if (cJSON_IsString(d)) {
                p = d->valuestring;
            } else if (cJSON_IsObject(d)) {
                static const char *const dk[] = {"path", "category", NULL};
                char ipre[360];
                snprintf(ipre, sizeof ipre, "%s.", ip);
                if ((st = only_known(d, ipre, dk, err)) ||
                    (st = get_str(d, "path", ipre, SDXL_LORA_PATH_MAX - 1, &p, err)) ||
                    (st = get_str(d, "category", ipre, SDXL_LORA_NAME_MAX - 1, &cat, err)))
                    goto done;
            }
            if (!p || !*p) {
                st = bad(err, ip, "expected a path or {\"path\": ..., \"category\": ...}");
                goto done;
            }
            if (p[0] != '/' && base_dir && *base_dir)
                snprintf(dp, sizeof dp, "%s/%s", base_dir, p);
            else
                snprintf(dp, sizeof dp, "%s", p);
            if ((st = sdxl_lora_worker_config_add_dir(cfg, dp, cat, err))) goto done;
        }
    }
done:
    cJSON_Delete(root);
    return st;
}

/* ---- result JSON ------------------------------------------------------------------------ */

static void add_num(cJSON *o, const char *k, double v) { cJSON_AddItemToObject(o, k, cJSON_CreateNumber(v)); }

/* a float as the shortest decimal that reads back to it (1.1f is 1.1, not
 * 1.100000023841858) */
static void add_float(cJSON *o, const char *k, float v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.9g", (double)v);
    for (int p = 1; p <= 9; p++) {
        char t[32];
        snprintf(t, sizeof t, "%.*g", p, (double)v);
        if (strtof(t, NULL) == v) {
            memcpy(buf, t, sizeof t);
            break;
        }
    }
    add_num(o, k, strtod(buf, NULL));
}

char *sdxl_result_json(const sdxl_request *req, const sdxl_result_image *images, size_t n_images,
                       const sdxl_lora_report *rep, const sdxl_result_timings *t, const char *const *warnings,
                       size_t n_warnings) {
    cJSON *r = cJSON_CreateObject();
    if (!r) return NULL;
    cJSON_AddStringToObject(r, "request_id", req ? req->request_id : "");
    cJSON_AddStringToObject(r, "status", "ok");
    cJSON *imgs = cJSON_AddArrayToObject(r, "images");
    for (size_t i = 0; i < n_images; i++) {
        cJSON *im = cJSON_CreateObject();
        cJSON_AddStringToObject(im, "path", images[i].path);
        add_num(im, "seed", (double)images[i].seed);
        cJSON_AddItemToArray(imgs, im);
    }
    cJSON *lo = cJSON_AddObjectToObject(r, "lora");
    cJSON_AddBoolToObject(lo, "enabled", req ? req->lora.enabled : rep && rep->n > 0);
    add_float(lo, "global_weight", req ? req->lora.global_weight : 1.0f);
    add_num(lo, "applied", rep ? (double)rep->applied : 0);
    cJSON *ads = cJSON_AddArrayToObject(lo, "adapters");
    for (size_t i = 0; rep && i < rep->n; i++) {
        const sdxl_lora_outcome *o = &rep->items[i];
        cJSON *a = cJSON_CreateObject();
        cJSON_AddStringToObject(a, "name", o->name);
        cJSON_AddStringToObject(a, "status", sdxl_lora_status_name(o->status));
        cJSON_AddStringToObject(a, "message", o->message);
        cJSON_AddStringToObject(a, "category", o->category);
        cJSON_AddStringToObject(a, "path", o->path);
        add_float(a, "unet_weight", o->unet_weight);
        add_float(a, "te_weight", o->te_weight);
        cJSON_AddStringToObject(a, "hash", o->short_hash);
        cJSON_AddStringToObject(a, "type", o->adapter_type);
        add_num(a, "modules", (double)o->modules);
        add_num(a, "unmatched_keys", (double)o->unmatched_keys);
        cJSON_AddBoolToObject(a, "cache_hit", o->cache_hit);
        add_num(a, "load_ms", o->load_ms);
        add_num(a, "bytes", (double)o->bytes);
        cJSON *sg = cJSON_AddArrayToObject(a, "suggestions");
        for (int k = 0; k < o->n_suggestions; k++) cJSON_AddItemToArray(sg, cJSON_CreateString(o->suggestions[k]));
        cJSON_AddItemToArray(ads, a);
    }
    cJSON *tm = cJSON_AddObjectToObject(r, "timings");
    if (t) {
        add_num(tm, "lora_ms", t->lora_ms);
        add_num(tm, "encode_ms", t->encode_ms);
        add_num(tm, "denoise_ms", t->denoise_ms);
        add_num(tm, "decode_ms", t->decode_ms);
        add_num(tm, "total_ms", t->total_ms);
    }
    cJSON *mt = cJSON_AddObjectToObject(r, "metrics");
    if (rep) {
        cJSON *ml = cJSON_AddObjectToObject(mt, "lora");
        add_num(ml, "resolve_ms", rep->resolve_ms);
        add_num(ml, "load_ms", rep->load_ms);
        add_num(ml, "merge_ms", rep->merge_ms);
        add_num(ml, "weights_merged", (double)rep->merge.merged);
        add_num(ml, "weights_restored", (double)rep->merge.restored);
        add_num(ml, "weights_kept", (double)rep->merge.kept);
        add_num(ml, "merged_bytes", (double)rep->merge.bytes);
        cJSON *mc = cJSON_AddObjectToObject(mt, "cache");
        add_num(mc, "entries", (double)rep->cache.entries);
        add_num(mc, "bytes", (double)rep->cache.bytes);
        add_num(mc, "hits", (double)rep->cache.hits);
        add_num(mc, "misses", (double)rep->cache.misses);
        add_num(mc, "evictions", (double)rep->cache.evictions);
        add_num(mc, "too_large", (double)rep->cache.too_large);
        add_num(mc, "load_ms_total", rep->cache.load_ms_total);
        if (rep->memory_monitored) {
            cJSON *mm = cJSON_AddObjectToObject(mt, "memory");
            add_num(mm, "rss_bytes", (double)rep->rss_bytes);
            add_num(mm, "engine_live_bytes", (double)rep->engine_live_bytes);
            add_num(mm, "engine_peak_bytes", (double)rep->engine_peak_bytes);
            add_num(mm, "mapped_bytes", (double)rep->mapped_bytes);
        }
    }
    cJSON *wa = cJSON_AddArrayToObject(r, "warnings");
    for (size_t i = 0; i < n_warnings; i++) cJSON_AddItemToArray(wa, cJSON_CreateString(warnings[i]));
    char *s = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    return s;
}

char *sdxl_error_json(const char *request_id, const char *code, const char *message) {
    cJSON *r = cJSON_CreateObject();
    if (!r) return NULL;
    cJSON_AddStringToObject(r, "request_id", request_id ? request_id : "");
    cJSON_AddStringToObject(r, "status", "error");
    cJSON *e = cJSON_AddObjectToObject(r, "error");
    cJSON_AddStringToObject(e, "code", code ? code : "error");
    cJSON_AddStringToObject(e, "message", message ? message : "");
    char *s = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    return s;
}
