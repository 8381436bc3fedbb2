/* `sdxl worker`: the JSON-lines protocol through a real pipe (the built
 * binary, stdin from a file, stdout parsed line by line) on the demo model:
 * queued / progress / result lines tagged with request_id, malformed lines
 * answered with errors while the worker goes on, EOF → clean exit, and the
 * image identical to diffusers' (the same bound as the generate tests). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "image/png.h"
#include "io/base64.h"
#include "test.h"

#define DEMO SDXL_SOURCE_DIR "/demo"

typedef struct {
    cJSON *lines[64];
    int n;
} lines_t;

static void lines_free(lines_t *l) {
    for (int i = 0; i < l->n; i++) cJSON_Delete(l->lines[i]);
    l->n = 0;
}

/* Run the worker with `input` on stdin; parse every stdout line that is JSON. */
static int run_worker(const char *input, const char *extra, lines_t *out) {
    char in[1024], outp[1024], odir[1024], args[4096];
    snprintf(in, sizeof in, "%s/worker-in.jsonl", sdxl_test_tmpdir());
    snprintf(outp, sizeof outp, "%s/worker-out.jsonl", sdxl_test_tmpdir());
    snprintf(odir, sizeof odir, "%s/worker-images", sdxl_test_tmpdir());
    FILE *f = fopen(in, "w");
    if (!f) return -1;
    fputs(input, f);
    fclose(f);
    snprintf(args, sizeof args, "worker --model " DEMO "/model --output-dir %s %s < %s > %s", odir, extra ? extra : "",
             in, outp);
    static char buf[65536];
    int rc = sdxl_test_run_cli(args, buf, sizeof buf);
    memset(out, 0, sizeof *out);
    f = fopen(outp, "r");
    if (!f) return -1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) > 0 && out->n < 64) {
        if (line[0] != '{') continue; /* stderr shares the file in this harness */
        cJSON *j = cJSON_Parse(line);
        if (!j) {
            sdxl_test_fail(__FILE__, __LINE__, "a stdout line is not JSON: %s", line);
            continue;
        }
        out->lines[out->n++] = j;
    }
    free(line);
    fclose(f);
    return rc;
}

static const char *str(const cJSON *j, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static const cJSON *find(const lines_t *l, const char *type, const char *id) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(str(l->lines[i], "type"), type) && !strcmp(str(l->lines[i], "request_id"), id)) return l->lines[i];
    return NULL;
}

TEST(stdio_worker_protocol) {
    const char *input =
        "{\"request_id\": \"a\", \"prompt\": \"a red circle on a blue background\", \"seed\": 2, \"steps\": 20,"
        " \"guidance_scale\": 6, \"width\": 64, \"height\": 64, \"output\": \"base64\"}\n"
        "this is not json\n"
        "{\"request_id\": \"b\", \"prompt\": \"x\", \"steps\": \"many\"}\n"
        "{\"request_id\": \"c\", \"prompt\": \"a blue star on a yellow background\", \"seed\": 2, \"steps\": 3,"
        " \"width\": 64, \"height\": 64, \"model\": \"nosuch\"}\n"
        "\n"
        "{\"prompt\": \"a green triangle on a white background\", \"seed\": 1, \"steps\": 3, \"width\": 64,"
        " \"height\": 64}\n";
    lines_t l;
    int rc = run_worker(input, NULL, &l);
    CHECK_MSG(rc == 0, "exit %d", rc);
    /* a: queued, progress 1..20, result with the image */
    CHECK(find(&l, "queued", "a") != NULL);
    int progress = 0;
    for (int i = 0; i < l.n; i++)
        if (!strcmp(str(l.lines[i], "type"), "progress") && !strcmp(str(l.lines[i], "request_id"), "a")) progress++;
    CHECK_MSG(progress == 20, "%d progress lines for a", progress);
    const cJSON *ra = find(&l, "result", "a");
    REQUIRE(ra != NULL);
    CHECK(!strcmp(str(ra, "status"), "ok"));
    const cJSON *im = cJSON_GetArrayItem(cJSON_GetObjectItem(ra, "images"), 0);
    const char *b64 = str(im, "image");
    uint8_t *png = NULL, *rgb = NULL, *ref = NULL;
    size_t plen = 0;
    sdxl_error err = {0};
    REQUIRE_OK(sdxl_base64_decode_alloc(b64, strlen(b64), (size_t)16 << 20, &png, &plen, &err), &err);
    int w = 0, h = 0, w2, h2;
    REQUIRE_OK(sdxl_png_decode(png, plen, 1 << 20, &rgb, &w, &h, &err), &err);
    REQUIRE_OK(sdxl_png_read(DEMO "/reference/base_red_circle.png", &ref, &w2, &h2, &err), &err);
    CHECK(w == 64 && h == 64 && w2 == 64 && h2 == 64);
    int mx = 0;
    for (int i = 0; i < 64 * 64 * 3; i++) mx = abs(rgb[i] - ref[i]) > mx ? abs(rgb[i] - ref[i]) : mx;
    CHECK_MSG(mx <= 2, "worker image vs diffusers: max diff %d", mx);
    CHECK(strstr(str(ra, "parameters"), "Seed: 2, Size: 64x64") != NULL);
    sdxl_free(png);
    sdxl_free(rgb);
    sdxl_free(ref);
    /* the malformed line, the bad field, the unknown model: errors, and the worker went on */
    bool saw_malformed = false;
    for (int i = 0; i < l.n; i++)
        if (!strcmp(str(l.lines[i], "type"), "error") && !strcmp(str(l.lines[i], "request_id"), ""))
            saw_malformed = strstr(str(cJSON_GetObjectItem(l.lines[i], "error"), "message"), "malformed JSON") != NULL;
    CHECK(saw_malformed);
    const cJSON *eb = find(&l, "error", "b");
    CHECK(eb && strstr(str(cJSON_GetObjectItem(eb, "error"), "message"), "steps: expected a number"));
    CHECK(eb && !strcmp(str(cJSON_GetObjectItem(eb, "error"), "code"), "invalid_type"));
    const cJSON *ec = find(&l, "error", "c");
    CHECK(ec && !strcmp(str(cJSON_GetObjectItem(ec, "error"), "code"), "not_found"));
    /* no request_id: one is made up and every line of the job carries it */
    const cJSON *rd = find(&l, "result", "req-5");
    CHECK_MSG(rd != NULL, "the last request's result (request_id req-5)");
    CHECK(find(&l, "queued", "req-5") != NULL);
    lines_free(&l);
    /* empty input: clean exit, nothing written */
    rc = run_worker("", NULL, &l);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(l.n, 0);
    lines_free(&l);
}

/* The seed's request verbatim through the worker, against LoRA folders named
 * as in the seed's config (copies of the demo LoRAs). */
TEST(stdio_worker_seed_request) {
    char root[1024], cmd[8192], cfg[1100 + 1024];
    snprintf(root, sizeof root, "%s/stdio-seed", sdxl_test_tmpdir());
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/styles %s/characters %s/lighting && "
             "cp " DEMO "/loras/styles/outline_style.safetensors %s/styles/anime_style_v2.safetensors && "
             "cp " DEMO "/loras/characters/smiley_face.safetensors %s/characters/girl_character_lora.safetensors && "
             "cp " DEMO "/loras/lighting/night_lighting.pt %s/lighting/simple_lora_name.pt",
             root, root, root, root, root, root);
    REQUIRE(system(cmd) == 0);
    snprintf(cfg, sizeof cfg, "%s/worker.json", root);
    FILE *f = fopen(cfg, "w");
    REQUIRE(f != NULL);
    fprintf(f, "{\"lora_config\": {\"lora_directories\": [\"styles\", \"characters\", \"lighting\"], "
               "\"memory_limit_mb\": 2048, \"enable_caching\": true, \"cache_size\": 8, "
               "\"enable_memory_monitoring\": true}}");
    fclose(f);
    const char *input =
        "{\"prompt\": \"A beautiful anime girl warrior in golden hour lighting\", \"lora\": {\"enabled\": true, "
        "\"global_weight\": 1.1, \"models\": [{\"name\": \"anime_style_v2\", \"weight\": 0.8, \"category\": "
        "\"style\"}, {\"name\": \"girl_character_lora\", \"weight\": 0.7, \"category\": \"character\"}, "
        "\"simple_lora_name\"]}, \"steps\": 2}\n";
    char extra[2300];
    snprintf(extra, sizeof extra, "--config %s", cfg);
    lines_t l;
    int rc = run_worker(input, extra, &l);
    CHECK_MSG(rc == 0, "exit %d", rc);
    const cJSON *r = find(&l, "result", "req-1");
    REQUIRE(r != NULL);
    const cJSON *ads = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "lora"), "adapters");
    CHECK_EQ_INT(cJSON_GetArraySize(ads), 3);
    for (int i = 0; i < cJSON_GetArraySize(ads); i++)
        CHECK_MSG(!strcmp(str(cJSON_GetArrayItem(ads, i), "status"), "applied"), "%s: %s",
                  str(cJSON_GetArrayItem(ads, i), "name"), str(cJSON_GetArrayItem(ads, i), "status"));
    const cJSON *im = cJSON_GetArrayItem(cJSON_GetObjectItem(r, "images"), 0);
    FILE *pf = fopen(str(im, "path"), "rb");
    CHECK_MSG(pf != NULL, "image %s", str(im, "path"));
    if (pf) fclose(pf);
    CHECK(strstr(str(r, "parameters"), "Lora hashes: \"anime_style_v2: 52cb1e252d57, girl_character_lora: ") != NULL);
    lines_free(&l);
}
