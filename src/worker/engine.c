/* engine.c - the request runner: models, LoRA workers, generate (see engine.h). */
#include "worker/engine.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "image/png.h"
#include "io/base64.h"
#include "model/model.h"
#include "pipeline/generate.h"

typedef struct loaded {
    int index;             /* into e->names (0 = the default model) */
    sdxl_model *model;
    sdxl_lora_worker *lora;
    size_t bytes;          /* file bytes of its weights */
    uint64_t last_used;
    char hash[11];         /* AutoV2, "" for folders */
} loaded;

struct sdxl_engine {
    sdxl_engine_config cfg;
    sdxl_backend *be;
    sdxl_engine_model_entry names[SDXL_ENGINE_MAX_MODELS + 1]; /* [0] = default */
    int n_names;
    loaded models[SDXL_ENGINE_MAX_MODELS + 1];
    int n_loaded;
    uint64_t tick;
    pthread_mutex_t mu; /* guards the model table and stats against the query functions */
    uint64_t runs, failures, cancels;
};

sdxl_engine_config sdxl_engine_default_config(void) {
    sdxl_engine_config c;
    memset(&c, 0, sizeof c);
    c.lora = sdxl_lora_worker_default_config();
    c.limits = sdxl_request_default_limits();
    snprintf(c.output_dir, sizeof c.output_dir, "outputs");
    return c;
}

static const char *base_name(const char *path, char *buf, size_t n) {
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    size_t b = len;
    while (b > 0 && path[b - 1] != '/') b--;
    snprintf(buf, n, "%.*s", (int)(len - b), path + b);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf && (!strcmp(dot, ".safetensors") || !strcmp(dot, ".ckpt"))) *dot = 0;
    return buf;
}

static size_t weights_bytes(const sdxl_weights *w) {
    size_t b = 0;
    for (size_t i = 0; i < sdxl_weights_file_count(w); i++) {
        struct stat sb;
        if (stat(sdxl_weights_file_path(w, i), &sb) == 0) b += (size_t)sb.st_size;
    }
    return b;
}

static void unload(sdxl_engine *e, int slot) { /* e->mu held */
    loaded *l = &e->models[slot];
    SDXL_LOG_I("engine: unloading model %s", e->names[l->index].name);
    sdxl_lora_worker_free(l->lora);
    sdxl_model_free(l->model);
    e->models[slot] = e->models[--e->n_loaded];
}

/* The loaded slot of model `index`, loading it (and evicting the least
 * recently used others past the memory bound) when needed. */
static sdxl_status ensure_loaded(sdxl_engine *e, int index, loaded **out, sdxl_error *err) {
    pthread_mutex_lock(&e->mu);
    for (int i = 0; i < e->n_loaded; i++)
        if (e->models[i].index == index) {
            e->models[i].last_used = ++e->tick;
            *out = &e->models[i];
            pthread_mutex_unlock(&e->mu);
            return SDXL_STATUS_OK;
        }
    pthread_mutex_unlock(&e->mu);
    double t0 = sdxl_now_s();
    loaded l = {.index = index};
    sdxl_status st = sdxl_model_load(e->names[index].path, NULL, &l.model, err);
    if (!st) st = sdxl_lora_worker_create(&e->cfg.lora, l.model->weights, e->be, &l.lora, err);
    if (st) {
        sdxl_model_free(l.model);
        sdxl_error_prefix(err, "model %s", e->names[index].name);
        return st;
    }
    l.bytes = weights_bytes(l.model->weights);
    sdxl_model_autov2_hash(e->names[index].path, l.model->weights, l.hash);
    SDXL_LOG_I("engine: model %s loaded in %.1f s (%.0f MB)", e->names[index].name, sdxl_ms_since(t0) / 1e3,
               (double)l.bytes / 1e6);
    pthread_mutex_lock(&e->mu);
    /* evict least recently used models while over the bound */
    size_t limit = e->cfg.model_memory_mb << 20;
    while (limit && e->n_loaded > 0) {
        size_t total = l.bytes;
        int lru = -1;
        for (int i = 0; i < e->n_loaded; i++) {
            total += e->models[i].bytes;
            if (lru < 0 || e->models[i].last_used < e->models[lru].last_used) lru = i;
        }
        if (total <= limit) break;
        unload(e, lru);
    }
    l.last_used = ++e->tick;
    e->models[e->n_loaded] = l;
    *out = &e->models[e->n_loaded++];
    pthread_mutex_unlock(&e->mu);
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_engine_create(const sdxl_engine_config *cfg, sdxl_engine **out, sdxl_error *err) {
    if (!cfg || !out || !cfg->default_model[0])
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "engine: no default model");
    *out = NULL;
    if (cfg->n_models < 0 || cfg->n_models > SDXL_ENGINE_MAX_MODELS)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "engine: %d models (at most %d)", cfg->n_models,
                              SDXL_ENGINE_MAX_MODELS);
    sdxl_engine *e = sdxl_calloc(1, sizeof *e);
    if (!e) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "engine: out of memory");
    e->cfg = *cfg;
    pthread_mutex_init(&e->mu, NULL);
    char nb[128];
    snprintf(e->names[0].name, sizeof e->names[0].name, "%s", base_name(cfg->default_model, nb, sizeof nb));
    snprintf(e->names[0].path, sizeof e->names[0].path, "%s", cfg->default_model);
    e->n_names = 1;
    for (int i = 0; i < cfg->n_models; i++) {
        if (!strcmp(cfg->models[i].path, cfg->default_model)) {
            snprintf(e->names[0].name, sizeof e->names[0].name, "%s", cfg->models[i].name);
            continue;
        }
        e->names[e->n_names++] = cfg->models[i];
    }
    sdxl_backend_params bp = sdxl_backend_default_params();
    bp.n_threads = cfg->threads;
    loaded *l;
    sdxl_status st = SDXL_STATUS_OK;
    if (!(e->be = sdxl_backend_create(&bp, err))) st = err ? err->status : SDXL_STATUS_OUT_OF_MEMORY;
    if (!st) st = ensure_loaded(e, 0, &l, err);
    if (st) {
        sdxl_engine_free(e);
        return st;
    }
    *out = e;
    return SDXL_STATUS_OK;
}

void sdxl_engine_free(sdxl_engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    while (e->n_loaded) unload(e, e->n_loaded - 1);
    pthread_mutex_unlock(&e->mu);
    sdxl_backend_free(e->be);
    pthread_mutex_destroy(&e->mu);
    sdxl_free(e);
}

void sdxl_engine_result_free(sdxl_engine_result *res) {
    if (!res) return;
    for (size_t i = 0; i < res->n_images; i++) {
        sdxl_free(res->images[i].png);
        sdxl_free(res->images[i].infotext);
    }
    sdxl_free(res->images);
    sdxl_lora_report_free(&res->lora);
    memset(res, 0, sizeof *res);
}

static void warn(sdxl_engine_result *r, const char *fmt, const char *arg) {
    if (r->n_warnings < 8) snprintf(r->warnings[r->n_warnings++], sizeof r->warnings[0], fmt, arg);
}

/* ---- one run ------------------------------------------------------------------ */

typedef struct {
    sdxl_engine *e;
    const sdxl_request *req;
    const sdxl_engine_callbacks *cb;
    sdxl_engine_result *res;
    sdxl_gen_params *gp;
    sdxl_gen_stats *gs;
    const char *model_name, *model_hash, *lora_hashes;
    char dir[2200];
    double round_t0;
    int last_round;
} run_ctx;

static bool on_step(void *ud, int round, int step, int total) {
    run_ctx *c = ud;
    if (round != c->last_round || step == 1) c->round_t0 = sdxl_now_s(), c->last_round = round;
    double el = sdxl_now_s() - c->round_t0;
    double its = el > 0 ? step / el : 0;
    if (!c->cb || !c->cb->on_progress) return true;
    return c->cb->on_progress(c->cb->user_data, round, c->gp->n_iter, step, total, its);
}

static sdxl_status on_image(void *ud, const sdxl_gen_image *img, sdxl_error *err) {
    run_ctx *c = ud;
    sdxl_engine_result *r = c->res;
    size_t total = (size_t)c->gp->batch * (size_t)c->gp->n_iter;
    if (!r->images && !(r->images = sdxl_calloc(total, sizeof *r->images)))
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "result images");
    sdxl_engine_image *im = &r->images[r->n_images];
    char text[8192];
    sdxl_gen_infotext(text, sizeof text, c->gp, c->gs, img, c->req->prompt, c->model_name, c->model_hash,
                      c->lora_hashes);
    im->infotext = sdxl_strdup(text);
    if (!im->infotext) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "infotext");
    const char *chunks[] = {"parameters", text, NULL};
    sdxl_status st = sdxl_png_encode(img->rgb, img->width, img->height, chunks, &im->png, &im->png_len, err);
    if (st) {
        sdxl_free(im->infotext);
        im->infotext = NULL;
        return st;
    }
    im->seed = img->seed;
    im->width = img->width;
    im->height = img->height;
    r->n_images++;
    if (c->req->output == SDXL_OUTPUT_PATH) {
        char id[128]; /* the parser allows only [A-Za-z0-9._-]; a caller that built the request itself may not */
        snprintf(id, sizeof id, "%s", c->req->request_id[0] ? c->req->request_id : "image");
        for (char *q = id; *q; q++)
            if (*q == '/' || *q == '\\') *q = '_';
        if (id[0] == '.') id[0] = '_';
        snprintf(im->path, sizeof im->path, "%s/%s-%d.png", c->dir, id, img->number);
        /* atomic: a temp file renamed into place */
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", im->path);
        FILE *f = fopen(tmp, "wb");
        bool ok = f && fwrite(im->png, 1, im->png_len, f) == im->png_len;
        if (f) ok = (fclose(f) == 0) && ok;
        if (!ok || rename(tmp, im->path) != 0) {
            unlink(tmp);
            return sdxl_error_set(err, SDXL_STATUS_IO, "writing %s: %s", im->path, strerror(errno));
        }
    }
    return SDXL_STATUS_OK;
}

static int mkdirs(const char *path) {
    char p[2200];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) return -1;
        *s = '/';
    }
    return mkdir(p, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

sdxl_status sdxl_engine_run(sdxl_engine *e, const sdxl_request *req, const sdxl_engine_callbacks *cb,
                            sdxl_engine_result *res, sdxl_error *err) {
    if (!res) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "engine: NULL result");
    memset(res, 0, sizeof *res);
    if (!e || !req || !req->prompt) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "engine: NULL argument");
    double t_begin = sdxl_now_s();
    /* the model */
    int index = 0;
    if (req->model[0]) {
        index = -1;
        for (int i = 0; i < e->n_names; i++)
            if (!strcmp(e->names[i].name, req->model)) index = i;
        if (index < 0) return sdxl_error_set(err, SDXL_STATUS_NOT_FOUND, "model: no model named '%s'", req->model);
    }
    loaded *l;
    sdxl_status st = ensure_loaded(e, index, &l, err);
    if (st) return st;
    snprintf(res->model, sizeof res->model, "%s", e->names[index].name);
    /* LoRA: the request's list plus <lora:...> tags of the prompt */
    size_t plen = strlen(req->prompt) + 1;
    char *clean = sdxl_malloc(plen);
    sdxl_lora_spec *spec = sdxl_malloc(sizeof *spec);
    if (!clean || !spec) {
        sdxl_free(clean);
        sdxl_free(spec);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "engine: out of memory");
    }
    *spec = req->lora;
    char tag_warning[256];
    if ((st = sdxl_lora_extract_prompt_tags(req->prompt, clean, plen, spec, tag_warning, sizeof tag_warning, err)))
        goto done;
    if (tag_warning[0]) warn(res, "%s", tag_warning);
    double tl = sdxl_now_s();
    if ((st = sdxl_lora_worker_apply(l->lora, spec, &res->lora, err))) goto done;
    res->timings.lora_ms = sdxl_ms_since(tl);
    char lora_hashes[2048];
    sdxl_lora_report_hashes(&res->lora, lora_hashes, sizeof lora_hashes);

    run_ctx c = {.e = e, .req = req, .cb = cb, .res = res, .model_name = e->names[index].name,
                 .model_hash = l->hash, .lora_hashes = lora_hashes, .last_round = -1};
    if (req->output == SDXL_OUTPUT_PATH) {
        const char *sub = req->output_dir[0] && strcmp(req->output_dir, ".") ? req->output_dir : "";
        snprintf(c.dir, sizeof c.dir, "%s%s%s", e->cfg.output_dir, *sub ? "/" : "", sub);
        if (mkdirs(c.dir) != 0) {
            st = sdxl_error_set(err, SDXL_STATUS_IO, "output_dir %s: %s", c.dir, strerror(errno));
            goto done;
        }
        /* the folder must really be inside the configured one (a symlink may point elsewhere) */
        char *rbase = realpath(e->cfg.output_dir, NULL), *rdir = realpath(c.dir, NULL);
        size_t bl = rbase ? strlen(rbase) : 0;
        bool inside = rbase && rdir && strncmp(rdir, rbase, bl) == 0 && (rdir[bl] == 0 || rdir[bl] == '/');
        free(rbase);
        free(rdir);
        if (!inside) {
            st = sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "output_dir: %s leaves the output folder %s",
                                req->output_dir, e->cfg.output_dir);
            goto done;
        }
    }
    sdxl_gen_params gp = sdxl_gen_default_params();
    gp.prompt = clean;
    gp.prompt_2 = req->prompt_2;
    gp.negative = req->negative_prompt;
    gp.negative_2 = req->negative_prompt_2;
    gp.prompt_params.syntax = req->prompt_plain ? SDXL_PROMPT_PLAIN : SDXL_PROMPT_A1111;
    gp.prompt_params.long_mode = req->long_truncate ? SDXL_LONG_TRUNCATE : SDXL_LONG_CHUNK;
    gp.width = req->width;
    gp.height = req->height;
    gp.steps = req->steps;
    gp.batch = req->batch_size;
    gp.n_iter = req->n_iter > 0 ? req->n_iter : 1;
    gp.cfg = req->guidance_scale;
    gp.guidance_rescale = req->guidance_rescale;
    gp.sampler = req->scheduler[0] ? req->scheduler : "euler";
    gp.seed = req->seed;
    gp.rng_cuda = req->rng_cuda;
    gp.init_rgb = req->init_rgb;
    gp.init_width = req->init_width;
    gp.init_height = req->init_height;
    if (req->init_rgb) gp.strength = req->strength;
    gp.memory_budget = e->cfg.memory_budget;
    gp.on_step = on_step;
    gp.on_image = on_image;
    gp.user_data = &c;
    sdxl_gen_stats gs;
    c.gp = &gp;
    c.gs = &gs;
    st = sdxl_generate(e->be, l->model, &gp, &gs, err);
    res->seed = gs.seed;
    res->width = gs.width;
    res->height = gs.height;
    res->timings.encode_ms = gs.encode_ms;
    res->timings.denoise_ms = gs.denoise_ms;
    res->timings.decode_ms = gs.decode_ms;
    res->cancelled = st == SDXL_STATUS_CANCELLED;
done:
    res->timings.total_ms = sdxl_ms_since(t_begin);
    {
        sdxl_mem_stats ms;
        sdxl_mem_get_stats(&ms);
        res->engine_live_bytes = ms.live_bytes;
        res->engine_peak_bytes = ms.peak_bytes;
        res->rss_bytes = res->lora.rss_bytes;
    }
    pthread_mutex_lock(&e->mu);
    e->runs++;
    if (st == SDXL_STATUS_CANCELLED) e->cancels++;
    else if (st) e->failures++;
    pthread_mutex_unlock(&e->mu);
    sdxl_free(clean);
    sdxl_free(spec);
    return st;
}

/* ---- response JSON --------------------------------------------------------------- */

struct cJSON *sdxl_engine_result_cjson(const sdxl_request *req, const sdxl_engine_result *res) {
    sdxl_result_image *imgs = sdxl_calloc(res->n_images ? res->n_images : 1, sizeof *imgs);
    if (!imgs) return NULL;
    for (size_t i = 0; i < res->n_images; i++) {
        snprintf(imgs[i].path, sizeof imgs[i].path, "%s", res->images[i].path);
        imgs[i].seed = res->images[i].seed;
    }
    const char *w[8];
    for (int i = 0; i < res->n_warnings; i++) w[i] = res->warnings[i];
    cJSON *j = sdxl_result_cjson(req, imgs, res->n_images, &res->lora, &res->timings, w, (size_t)res->n_warnings);
    sdxl_free(imgs);
    if (!j) return NULL;
    cJSON_AddStringToObject(j, "model", res->model);
    cJSON_AddNumberToObject(j, "seed", (double)res->seed);
    cJSON_AddStringToObject(j, "parameters", res->n_images ? res->images[0].infotext : "");
    if (res->cancelled) cJSON_ReplaceItemInObject(j, "status", cJSON_CreateString("cancelled"));
    cJSON *arr = cJSON_GetObjectItem(j, "images");
    for (size_t i = 0; arr && i < res->n_images; i++) {
        cJSON *im = cJSON_GetArrayItem(arr, (int)i);
        cJSON_AddNumberToObject(im, "width", res->images[i].width);
        cJSON_AddNumberToObject(im, "height", res->images[i].height);
        if (req && req->output == SDXL_OUTPUT_BASE64) {
            char *b64 = sdxl_base64_encode_alloc(res->images[i].png, res->images[i].png_len, NULL);
            if (!b64) {
                cJSON_Delete(j);
                return NULL;
            }
            cJSON_AddStringToObject(im, "image", b64);
            sdxl_free(b64);
            cJSON_DeleteItemFromObject(im, "path");
        }
    }
    return j;
}

char *sdxl_engine_result_json(const sdxl_request *req, const sdxl_engine_result *res) {
    cJSON *j = sdxl_engine_result_cjson(req, res);
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return s;
}

/* ---- queries ---------------------------------------------------------------------- */

int sdxl_engine_model_count(const sdxl_engine *e) { return e ? e->n_names : 0; }

bool sdxl_engine_model_at(const sdxl_engine *e, int i, sdxl_engine_model_entry *out, bool *is_loaded) {
    if (!e || i < 0 || i >= e->n_names) return false;
    pthread_mutex_lock((pthread_mutex_t *)&e->mu);
    if (out) *out = e->names[i];
    if (is_loaded) {
        *is_loaded = false;
        for (int k = 0; k < e->n_loaded; k++) *is_loaded = *is_loaded || e->models[k].index == i;
    }
    pthread_mutex_unlock((pthread_mutex_t *)&e->mu);
    return true;
}

const char *sdxl_engine_default_model_name(const sdxl_engine *e) { return e ? e->names[0].name : NULL; }

bool sdxl_engine_model_hash(const sdxl_engine *e, int i, char out[11]) {
    bool found = false;
    if (!e || !out) return false;
    out[0] = 0;
    pthread_mutex_lock((pthread_mutex_t *)&e->mu);
    for (int k = 0; k < e->n_loaded; k++)
        if (e->models[k].index == i && e->models[k].hash[0]) {
            memcpy(out, e->models[k].hash, 11);
            found = true;
        }
    pthread_mutex_unlock((pthread_mutex_t *)&e->mu);
    return found;
}

sdxl_lora_registry *sdxl_engine_lora_registry(sdxl_engine *e) {
    if (!e) return NULL;
    pthread_mutex_lock(&e->mu);
    sdxl_lora_registry *r = NULL;
    for (int k = 0; k < e->n_loaded && !r; k++)
        if (e->models[k].index == 0) r = sdxl_lora_worker_registry(e->models[k].lora);
    if (!r && e->n_loaded) r = sdxl_lora_worker_registry(e->models[0].lora);
    pthread_mutex_unlock(&e->mu);
    return r;
}

const sdxl_engine_config *sdxl_engine_get_config(const sdxl_engine *e) { return e ? &e->cfg : NULL; }

void sdxl_engine_stats_get(sdxl_engine *e, sdxl_engine_stats *out) {
    memset(out, 0, sizeof *out);
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    out->runs = e->runs;
    out->failures = e->failures;
    out->cancels = e->cancels;
    out->models_loaded = (size_t)e->n_loaded;
    for (int k = 0; k < e->n_loaded; k++) {
        out->model_bytes += e->models[k].bytes;
        sdxl_lora_cache_stats cs;
        sdxl_lora_cache_stats_get(sdxl_lora_worker_cache(e->models[k].lora), &cs);
        out->lora_cache.hits += cs.hits;
        out->lora_cache.misses += cs.misses;
        out->lora_cache.loads += cs.loads;
        out->lora_cache.evictions += cs.evictions;
        out->lora_cache.too_large += cs.too_large;
        out->lora_cache.entries += cs.entries;
        out->lora_cache.bytes += cs.bytes;
        out->lora_cache.load_ms_total += cs.load_ms_total;
    }
    pthread_mutex_unlock(&e->mu);
    sdxl_mem_stats ms;
    sdxl_mem_get_stats(&ms);
    out->engine_live_bytes = ms.live_bytes;
    out->engine_peak_bytes = ms.peak_bytes;
    out->mapped_bytes = ms.mapped_bytes;
    FILE *f = fopen("/proc/self/statm", "r");
    long long size = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%lld %lld", &size, &rss) == 2) out->rss_bytes = rss * (int64_t)sysconf(_SC_PAGESIZE);
        fclose(f);
    }
}
