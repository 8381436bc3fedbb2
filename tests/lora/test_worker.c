/* The LoRA worker: the seed's request against a directory tree built here,
 * every adapter status, request semantics (global weight, duplicates,
 * enabled), 16 stacked adapters, prompt tags, the request and config
 * schemas, the result JSON. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "io/sha256.h"
#include "lora/worker.h"
#include "model/weights.h"
#include "test.h"
#include "worker/request.h"

static bool copy_file(const char *from, const char *to) {
    char *buf = NULL;
    size_t len = 0;
    sdxl_error err = {0};
    if (sdxl_read_file(from, (size_t)64 << 20, &buf, &len, &err)) return false;
    FILE *f = fopen(to, "wb");
    bool ok = f && fwrite(buf, 1, len, f) == len;
    if (f) ok = fclose(f) == 0 && ok;
    sdxl_free(buf);
    return ok;
}

#define PATHN 3072 /* room for any root (1024) + relative part: no truncation */

static void mk(const char *root, const char *rel) {
    char p[PATHN];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    mkdir(p, 0777);
}

static void put(const char *root, const char *rel, const char *data_rel) {
    char to[2 * PATHN], from[PATHN];
    snprintf(to, sizeof to, "%s/%s", root, rel);
    snprintf(from, sizeof from, "%s", sdxl_test_data(data_rel));
    if (!copy_file(from, to)) sdxl_test_fail(__FILE__, __LINE__, "copy %s -> %s", from, to);
}

/* The seed's layout: models/lora/{styles,characters,lighting} as three
 * directories, plus files the statuses need. */
static const char *make_tree(void) {
    static char root[1024];
    snprintf(root, sizeof root, "%s/worker-tree", sdxl_test_tmpdir());
    mkdir(root, 0777);
    mk(root, "styles");
    mk(root, "characters");
    mk(root, "lighting");
    mk(root, "lighting/nested");
    put(root, "styles/anime_style_v2.safetensors", "lora/lora_a_kohya.safetensors");
    put(root, "styles/shared_name.safetensors", "lora/loha_kohya.safetensors");
    put(root, "characters/girl_character_lora.safetensors", "lora/lora_c_kohya_sgm_fp16.safetensors");
    put(root, "characters/shared_name.safetensors", "lora/lokr_sgm_fp16.safetensors");
    put(root, "lighting/simple_lora_name.pt", "lora/lora_a_kohya.pt");
    put(root, "lighting/nested/dramatic_lighting.safetensors", "lora/locon_mid_bf16.safetensors");
    char big[PATHN];
    snprintf(big, sizeof big, "%s/lighting/big_one.safetensors", root);
    char demo[PATHN];
    snprintf(demo, sizeof demo, "%s/demo/loras/lighting/night_lighting.safetensors", SDXL_SOURCE_DIR);
    copy_file(demo, big); /* 1.4 MB: over a 1 MB limit */
    char junk[PATHN];
    snprintf(junk, sizeof junk, "%s/styles/broken.safetensors", root);
    FILE *f = fopen(junk, "wb");
    static const char bad[] = "\x10\0\0\0\0\0\0\0{\"a\": oops}   "; /* header of 16 bytes, not JSON */
    if (f) fwrite(bad, 1, sizeof bad - 1, f), fclose(f);
    return root;
}

typedef struct {
    sdxl_backend *be;
    sdxl_weights *w;
    sdxl_lora_worker *lw;
} wfix;

static bool wfix_open(wfix *f, size_t memory_limit_mb) {
    sdxl_error err = {0};
    memset(f, 0, sizeof *f);
    const char *root = make_tree();
    sdxl_lora_worker_config cfg = sdxl_lora_worker_default_config();
    cfg.memory_limit_mb = memory_limit_mb;
    char d[3][PATHN];
    const char *sub[3] = {"styles", "characters", "lighting"};
    bool ok = (f->be = sdxl_backend_create(NULL, &err)) != NULL &&
              !sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &f->w, &err);
    for (int i = 0; ok && i < 3; i++) {
        snprintf(d[i], sizeof d[i], "%s/%s", root, sub[i]);
        ok = !sdxl_lora_worker_config_add_dir(&cfg, d[i], NULL, &err);
    }
    ok = ok && !sdxl_lora_worker_create(&cfg, f->w, f->be, &f->lw, &err);
    if (!ok) sdxl_test_fail(__FILE__, __LINE__, "fixture: %s", err.msg);
    return ok;
}

static void wfix_close(wfix *f) {
    sdxl_lora_worker_free(f->lw);
    sdxl_weights_free(f->w);
    sdxl_backend_free(f->be);
}

static void weights_hash(const sdxl_weights *w, uint8_t out[32]) {
    sdxl_sha256 h;
    sdxl_sha256_init(&h);
    for (size_t i = 0; i < sdxl_weights_count(w); i++) {
        const sdxl_tensor *t = &sdxl_weights_at(w, i)->tensor;
        sdxl_sha256_update(&h, t->data, sdxl_tensor_nbytes(t));
    }
    sdxl_sha256_final(&h, out);
}

static const sdxl_lora_outcome *find(const sdxl_lora_report *rep, const char *name) {
    for (size_t i = 0; i < rep->n; i++)
        if (!strcmp(rep->items[i].name, name)) return &rep->items[i];
    return NULL;
}

TEST(lora_worker_seed_request_verbatim) {
    wfix f;
    if (!wfix_open(&f, 2048)) return;
    sdxl_error err = {0};
    sdxl_request req;
    REQUIRE_OK(sdxl_request_parse(sdxl_test_seed_request, strlen(sdxl_test_seed_request), NULL, &req, &err), &err);
    CHECK(req.lora.enabled && req.lora.n == 3 && fabsf(req.lora.global_weight - 1.1f) < 1e-7f);
    sdxl_lora_report rep;
    REQUIRE_OK(sdxl_lora_worker_apply(f.lw, &req.lora, &rep, &err), &err);
    CHECK_EQ_INT((int)rep.n, 3);
    CHECK_EQ_INT((int)rep.applied, 3);
    const sdxl_lora_outcome *a = find(&rep, "anime_style_v2"), *g = find(&rep, "girl_character_lora"),
                            *s = find(&rep, "simple_lora_name");
    REQUIRE(a && g && s);
    CHECK(a->status == SDXL_LORA_APPLIED && !strcmp(a->category, "style"));
    CHECK(g->status == SDXL_LORA_APPLIED && !strcmp(g->category, "character"));
    CHECK(s->status == SDXL_LORA_APPLIED && !strcmp(s->category, "lighting"));
    /* effective weight = weight x global_weight; a plain string is weight 1 */
    CHECK(fabsf(a->unet_weight - 0.8f * 1.1f) < 1e-6f && fabsf(a->te_weight - 0.8f * 1.1f) < 1e-6f);
    CHECK(fabsf(g->unet_weight - 0.7f * 1.1f) < 1e-6f);
    CHECK(fabsf(s->unet_weight - 1.1f) < 1e-6f);
    CHECK(strlen(a->short_hash) == 12 && strlen(s->short_hash) == 12);
    CHECK(!a->cache_hit && a->load_ms > 0 && a->bytes > 0 && a->modules == 237);
    CHECK(rep.memory_monitored && rep.rss_bytes > 0 && rep.engine_live_bytes > 0);
    CHECK_EQ_INT((int)rep.cache.misses, 3);
    /* Lora hashes as A1111 writes them, in request order */
    char hashes[512], want[512];
    sdxl_lora_report_hashes(&rep, hashes, sizeof hashes);
    snprintf(want, sizeof want, "anime_style_v2: %s, girl_character_lora: %s, simple_lora_name: %s", a->short_hash,
             g->short_hash, s->short_hash);
    CHECK_MSG(!strcmp(hashes, want), "hashes '%s'", hashes);
    /* the result JSON carries statuses and metrics */
    sdxl_result_timings tm = {1, 2, 3, 4, 10};
    sdxl_result_image im = {"x.png", 7};
    char *js = sdxl_result_json(&req, &im, 1, &rep, &tm, NULL, 0);
    cJSON *j = js ? cJSON_Parse(js) : NULL;
    REQUIRE(j != NULL);
    const cJSON *ads = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "lora"), "adapters");
    CHECK_EQ_INT(cJSON_GetArraySize(ads), 3);
    CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(ads, 0), "status")->valuestring, "applied"));
    CHECK(cJSON_GetObjectItem(cJSON_GetArrayItem(ads, 0), "unet_weight")->valuedouble == (double)strtof("0.88", NULL) ||
          fabs(cJSON_GetObjectItem(cJSON_GetArrayItem(ads, 0), "unet_weight")->valuedouble - 0.88) < 1e-6);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "lora"), "global_weight")->valuedouble == 1.1);
    const cJSON *mem = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "metrics"), "memory");
    CHECK(mem && cJSON_GetObjectItem(mem, "rss_bytes")->valuedouble > 0);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "metrics"), "cache"), "misses")->valuedouble ==
          3);
    cJSON_Delete(j);
    free(js);
    sdxl_lora_report_free(&rep);
    /* the same request again: all cached, nothing re-merged */
    REQUIRE_OK(sdxl_lora_worker_apply(f.lw, &req.lora, &rep, &err), &err);
    CHECK(rep.items[0].cache_hit && rep.items[1].cache_hit && rep.items[2].cache_hit);
    CHECK_EQ_INT((int)rep.merge.merged, 0);
    CHECK(rep.merge.kept > 0);
    sdxl_lora_report_free(&rep);
    sdxl_request_free(&req);
    wfix_close(&f);
}

TEST(lora_worker_every_status_and_never_blocking) {
    wfix f;
    if (!wfix_open(&f, 1)) return; /* 1 MB: big_one (1.4 MB) is too large */
    sdxl_error err = {0};
    /* a file that matches nothing in this model */
    char nomatch[PATHN];
    snprintf(nomatch, sizeof nomatch, "%s/worker-tree/styles/sd15_only.safetensors", sdxl_test_tmpdir());
    float v[8] = {0};
    int64_t shape[2] = {2, 4};
    sdxl_st_write_entry e[2] = {{"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", SDXL_ST_F32, 2, shape, v},
                                {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", SDXL_ST_F32, 2, shape, v}};
    REQUIRE_OK(sdxl_st_write(nomatch, e, 2, NULL, &err), &err);
    /* found by a refresh (a miss rescans too, but at most once a second) */
    REQUIRE_OK(sdxl_lora_registry_refresh(sdxl_lora_worker_registry(f.lw), true, NULL, &err), &err);
    sdxl_lora_spec spec = {.enabled = true, .global_weight = 1.0f};
    sdxl_lora_spec_add(&spec, "anime_style_v3", NULL, 1.0f, &err);       /* not_found, suggests v2 */
    sdxl_lora_spec_add(&spec, "../../etc/passwd", NULL, 1.0f, &err);     /* invalid_name */
    sdxl_lora_spec_add(&spec, "/etc/passwd", NULL, 1.0f, &err);          /* invalid_name */
    sdxl_lora_spec_add(&spec, "broken", NULL, 1.0f, &err);               /* invalid_file */
    sdxl_lora_spec_add(&spec, "big_one", NULL, 1.0f, &err);              /* too_large */
    sdxl_lora_spec_add(&spec, "sd15_only", NULL, 1.0f, &err);            /* no_matching_keys */
    sdxl_lora_spec_add(&spec, "dramatic_lighting", NULL, 0.0f, &err);    /* skipped */
    sdxl_lora_spec_add(&spec, "ANIME_STYLE_V2", NULL, 0.5f, &err);       /* applied (case-insensitive) */
    sdxl_lora_spec_add(&spec, "styles/anime_style_v2", NULL, 0.25f, &err); /* the same file: merged */
    sdxl_lora_spec_add(&spec, "shared_name", "character", 0.6f, &err);   /* category decides */
    sdxl_lora_report rep;
    REQUIRE_OK(sdxl_lora_worker_apply(f.lw, &spec, &rep, &err), &err);
    static const struct { const char *name; sdxl_lora_status st; } want[] = {
        {"anime_style_v3", SDXL_LORA_NOT_FOUND},      {"../../etc/passwd", SDXL_LORA_INVALID_NAME},
        {"/etc/passwd", SDXL_LORA_INVALID_NAME},      {"broken", SDXL_LORA_INVALID_FILE},
        {"big_one", SDXL_LORA_TOO_LARGE},             {"sd15_only", SDXL_LORA_NO_MATCHING_KEYS},
        {"dramatic_lighting", SDXL_LORA_SKIPPED},     {"ANIME_STYLE_V2", SDXL_LORA_APPLIED},
        {"shared_name", SDXL_LORA_APPLIED},
    };
    CHECK_EQ_INT((int)rep.n, (int)(sizeof want / sizeof want[0])); /* the duplicate merged away */
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const sdxl_lora_outcome *o = find(&rep, want[i].name);
        CHECK_MSG(o && o->status == want[i].st, "%s: %s (%s)", want[i].name,
                  o ? sdxl_lora_status_name(o->status) : "missing", o ? o->message : "");
        if (o && o->status != SDXL_LORA_APPLIED) CHECK_MSG(o->message[0] != 0, "%s: no message", want[i].name);
    }
    const sdxl_lora_outcome *nf = find(&rep, "anime_style_v3");
    CHECK(nf && nf->n_suggestions > 0 && strstr(nf->suggestions[0], "anime_style_v2"));
    const sdxl_lora_outcome *dup = find(&rep, "ANIME_STYLE_V2");
    CHECK(dup && fabsf(dup->unet_weight - 0.75f) < 1e-6f && strstr(dup->message, "more than once"));
    const sdxl_lora_outcome *sh = find(&rep, "shared_name");
    CHECK(sh && !strcmp(sh->category, "character") && !strcmp(sh->adapter_type, "lokr"));
    CHECK_EQ_INT((int)rep.applied, 2);
    sdxl_lora_report_free(&rep);
    /* enabled false: no adapters, the model is its base again, bit for bit */
    uint8_t h0[32], h1[32];
    sdxl_lora_worker_restore(f.lw);
    weights_hash(f.w, h0);
    REQUIRE_OK(sdxl_lora_worker_apply(f.lw, &spec, &rep, &err), &err);
    sdxl_lora_report_free(&rep);
    spec.enabled = false;
    REQUIRE_OK(sdxl_lora_worker_apply(f.lw, &spec, &rep, &err), &err);
    CHECK_EQ_INT((int)rep.n, 0);
    weights_hash(f.w, h1);
    CHECK(memcmp(h0, h1, 32) == 0);
    sdxl_lora_report_free(&rep);
    wfix_close(&f);
}

/* 16 copies of one adapter under 16 names stacked with weights w_i merge to
 * the single adapter at sum(w_i) (one f32 rounding per term: 1e-6). */
TEST(lora_worker_stacks_16_adapters) {
    wfix f;
    if (!wfix_open(&f, 2048)) return;
    sdxl_error err = {0};
    char root[PATHN];
    snprintf(root, sizeof root, "%s/worker-tree/styles", sdxl_test_tmpdir());
    sdxl_lora_spec spec = {.enabled = true, .global_weight = 1.0f};
    float sum = 0;
    for (int i = 0; i < 16; i++) {
        char rel[64], name[32];
        snprintf(name, sizeof name, "copy_%02d", i);
        snprintf(rel, sizeof rel, "copy_%02d.safetensors", i);
        put(root, rel, "lora/lora_a_kohya.safetensors");
        float w = (i % 2 ? -0.05f : 0.1f) * (float)(1 + i % 3);
        sum += w;
        sdxl_lora_spec_add(&spec, name, NULL, w, &err);
    }
    REQUIRE_OK(sdxl_lora_registry_refresh(sdxl_lora_worker_registry(f.lw), true, NULL, &err), &err);
    sdxl_lora_report rep;
    REQUIRE_OK(sdxl_lora_worker_apply(f.lw, &spec, &rep, &err), &err);
    CHECK_EQ_INT((int)rep.applied, 16);
    sdxl_lora_report_free(&rep);
    const sdxl_tensor *t = sdxl_weights_get(f.w, "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight");
    REQUIRE(t && t->dtype == SDXL_DTYPE_F32);
    size_t n = (size_t)sdxl_tensor_nelem(t);
    float *stacked = malloc(n * 4);
    memcpy(stacked, t->data, n * 4);
    sdxl_lora_spec one = {.enabled = true, .global_weight = 1.0f};
    sdxl_lora_spec_add(&one, "copy_00", NULL, sum, &err);
    REQUIRE_OK(sdxl_lora_worker_apply(f.lw, &one, &rep, &err), &err);
    sdxl_lora_report_free(&rep);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)stacked[i] - ((float *)t->data)[i]));
        scale = fmax(scale, fabs(((float *)t->data)[i]));
    }
    CHECK_MSG(worst <= 1e-6 * scale, "16 stacked vs one at the sum: %.3g of %.3g", worst, scale);
    free(stacked);
    wfix_close(&f);
}

TEST(lora_prompt_tags) {
    sdxl_error err = {0};
    sdxl_lora_spec spec = {.global_weight = 1.0f};
    char clean[256], warn[128];
    REQUIRE_OK(sdxl_lora_extract_prompt_tags("a cat <lora:style_a:0.5>, <lyco:b:0.3:0.7> on <lora:c:unet=1:te=0.2>"
                                             "<lora:plain> <lora:bad:xx> end",
                                             clean, sizeof clean, &spec, warn, sizeof warn, &err),
               &err);
    CHECK(spec.enabled);
    CHECK_EQ_INT(spec.n, 4);
    CHECK(!strcmp(spec.entries[0].name, "style_a") && spec.entries[0].weight == 0.5f && !spec.entries[0].has_unet_weight);
    /* A1111's positional form: te multiplier, then unet */
    CHECK(!strcmp(spec.entries[1].name, "b") && spec.entries[1].te_weight == 0.3f && spec.entries[1].unet_weight == 0.7f);
    CHECK(spec.entries[2].has_unet_weight && spec.entries[2].unet_weight == 1.0f && spec.entries[2].te_weight == 0.2f);
    CHECK(!strcmp(spec.entries[3].name, "plain") && spec.entries[3].weight == 1.0f);
    CHECK_MSG(!strcmp(clean, "a cat ,  on  <lora:bad:xx> end"), "clean '%s'", clean);
    CHECK(strstr(warn, "<lora:bad:xx>") != NULL);
    /* too small an output buffer is an error, not an overflow */
    CHECK(sdxl_lora_extract_prompt_tags("abcdef", clean, 4, &spec, NULL, 0, &err) == SDXL_STATUS_INVALID_ARG);
}

TEST(request_schema_rules) {
    static const struct { const char *json, *want; } bad[] = {
        {"{", "malformed JSON"},
        {"[]", "expected an object"},
        {"{\"negative_prompt\": \"x\"}", "prompt: is required"},
        {"{\"prompt\": 3}", "prompt: expected a string"},
        {"{\"prompt\": \"x\", \"colour\": 1}", "colour: unknown field"},
        {"{\"prompt\": \"x\", \"width\": 1000000}", "width: 1e+06 is out of range"},
        {"{\"prompt\": \"x\", \"width\": 100}", "width: must be a multiple of 8"},
        {"{\"prompt\": \"x\", \"steps\": 2.5}", "steps: expected an integer"},
        {"{\"prompt\": \"x\", \"steps\": 0}", "steps: 0 is out of range"},
        {"{\"prompt\": \"x\", \"batch_size\": 65}", "batch_size: 65 is out of range"},
        {"{\"prompt\": \"x\", \"rng\": \"gpu\"}", "rng: must be"},
        {"{\"prompt\": \"x\", \"seed\": 1e30}", "seed: 1e+30 is out of range"},
        {"{\"prompt\": \"x\", \"lora\": []}", "lora: expected an object"},
        {"{\"prompt\": \"x\", \"lora\": {\"enabled\": 1}}", "lora.enabled: expected true or false"},
        {"{\"prompt\": \"x\", \"lora\": {\"models\": {}}}", "lora.models: expected a list"},
        {"{\"prompt\": \"x\", \"lora\": {\"models\": [3]}}", "lora.models[0]: expected a name or an object"},
        {"{\"prompt\": \"x\", \"lora\": {\"models\": [{\"weight\": 1}]}}", "lora.models[0]: \"name\" is required"},
        {"{\"prompt\": \"x\", \"lora\": {\"models\": [\"a\", {\"name\": \"b\", \"weight\": \"hi\"}]}}",
         "lora.models[1].weight: expected a number"},
        {"{\"prompt\": \"x\", \"lora\": {\"models\": [{\"name\": \"b\", \"strength\": 1}]}}",
         "lora.models[0].strength: unknown field"},
        {"{\"prompt\": \"x\", \"lora\": {\"global_weight\": 1e9}}", "lora.global_weight: 1e+09 is out of range"},
        {"{\"prompt\": \"x\", \"lora\": {\"models\": [\"\"]}}", "lora.models[0]: empty name"},
        {"{\"prompt\": \"x\", \"request_id\": \"../../etc/x\"}", "request_id: only letters"},
        {"{\"prompt\": \"x\", \"request_id\": \".hidden\"}", "request_id: only letters"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sdxl_error err = {0};
        sdxl_request r;
        sdxl_status st = sdxl_request_parse(bad[i].json, strlen(bad[i].json), NULL, &r, &err);
        CHECK_MSG(st == SDXL_STATUS_BAD_INPUT && strstr(err.msg, bad[i].want), "%s -> %d '%s' (want '%s')", bad[i].json,
                  st, err.msg, bad[i].want);
        CHECK(r.prompt == NULL);
    }
    /* defaults and the seed's rule: no "enabled" means no adapters */
    sdxl_error err = {0};
    sdxl_request r;
    const char *ok = "{\"prompt\": \"p\", \"lora\": {\"models\": [\"a\"]}}";
    REQUIRE_OK(sdxl_request_parse(ok, strlen(ok), NULL, &r, &err), &err);
    CHECK(!r.lora.enabled && r.lora.n == 1 && r.lora.global_weight == 1.0f);
    CHECK(r.steps == 20 && r.guidance_scale == 5.0 && r.seed == -1 && r.batch_size == 1 && !r.rng_cuda);
    CHECK(!strcmp(r.scheduler, "euler") && r.width == 0 && r.negative_prompt == NULL);
    sdxl_request_free(&r);
}

TEST(worker_config_schema) {
    sdxl_error err = {0};
    sdxl_lora_worker_config cfg = sdxl_lora_worker_default_config();
    CHECK(cfg.memory_limit_mb == 2048 && cfg.enable_caching && cfg.cache_size == 8 && cfg.enable_memory_monitoring);
    const char *js = "{\"lora_config\": {\"lora_directories\": [\"models/lora/styles\", \"models/lora/characters\","
                     " \"models/lora/lighting\", {\"path\": \"/abs/x\", \"category\": \"Poses\"}, \"misc\"],"
                     " \"memory_limit_mb\": 512, \"enable_caching\": false, \"cache_size\": 3,"
                     " \"enable_memory_monitoring\": false}}";
    REQUIRE_OK(sdxl_worker_config_parse(js, strlen(js), "/base", &cfg, &err), &err);
    CHECK_EQ_INT((int)cfg.n_dirs, 5);
    CHECK(!strcmp(cfg.dir_path[0], "/base/models/lora/styles") && !strcmp(cfg.dir_category[0], "style"));
    CHECK(!strcmp(cfg.dir_category[1], "character") && !strcmp(cfg.dir_category[2], "lighting"));
    CHECK(!strcmp(cfg.dir_path[3], "/abs/x") && !strcmp(cfg.dir_category[3], "pose"));
    CHECK(!strcmp(cfg.dir_category[4], "")); /* categories from its sub-folders */
    CHECK(cfg.memory_limit_mb == 512 && !cfg.enable_caching && cfg.cache_size == 3 && !cfg.enable_memory_monitoring);
    static const char *bad[] = {"{\"lora_config\": {\"cache_size\": -1}}", "{\"lora_config\": {\"dirs\": []}}",
                                "{\"lora_config\": {\"lora_directories\": [3]}}", "{\"other\": 1, \"lora_config\": {}}",
                                "{\"lora_config\": {\"memory_limit_mb\": \"big\"}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg = sdxl_lora_worker_default_config();
        CHECK_MSG(sdxl_worker_config_parse(bad[i], strlen(bad[i]), NULL, &cfg, &err) == SDXL_STATUS_BAD_INPUT, "%s",
                  bad[i]);
    }
}
