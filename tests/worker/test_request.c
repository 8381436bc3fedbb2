/* The request schema: every rule with its code and field path, defaults,
 * init images (PNG, JPEG, data URLs, corrupt, huge), limits, the JSON
 * Schema file and the docs' examples against the parser. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "image/png.h"
#include "image/testimg.h"
#include "io/base64.h"
#include "test.h"
#include "worker/request.h"

#ifndef SDXL_SOURCE_DIR
#define SDXL_SOURCE_DIR "."
#endif

static sdxl_status parse(const char *json, const sdxl_request_limits *lim, sdxl_request *r, sdxl_request_error *re,
                         sdxl_error *err) {
    return sdxl_request_parse_ex(json, strlen(json), lim, r, re, err);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t k = fread(b, 1, (size_t)n, f);
    b[k] = 0;
    fclose(f);
    return b;
}

/* {"prompt": "p", "init_image": "<prefix><b64>"<extra>} (malloc'd) */
static char *with_image(const uint8_t *file, size_t len, const char *prefix, const char *extra) {
    char *b64 = sdxl_test_base64(file, len, prefix);
    size_t n = strlen(b64) + strlen(extra) + 64;
    char *js = malloc(n);
    snprintf(js, n, "{\"prompt\": \"p\", \"init_image\": \"%s\"%s}", b64, extra);
    free(b64);
    return js;
}

/* smooth gradients (a JPEG keeps them within a few levels) */
static uint8_t *test_rgb(int w, int h) {
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = px + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(40 + x * 160 / w), p[1] = (uint8_t)(200 - y * 150 / h), p[2] = (uint8_t)(90 + (x + y) % 7);
        }
    return px;
}

/* ---- defaults and the full request ---------------------------------------------- */

TEST(request_seed_verbatim_and_defaults) {
    sdxl_request r;
    sdxl_request_error re;
    sdxl_error err = {0};
    REQUIRE_OK(parse(sdxl_test_seed_request, NULL, &r, &re, &err), &err);
    CHECK(re.code[0] == 0 && re.field[0] == 0);
    CHECK(!strcmp(r.prompt, "A beautiful anime girl warrior in golden hour lighting"));
    CHECK(r.lora.enabled && r.lora.n == 3 && r.lora.global_weight == 1.1f);
    CHECK(!strcmp(r.lora.entries[0].name, "anime_style_v2") && r.lora.entries[0].weight == 0.8f);
    CHECK(!strcmp(r.lora.entries[0].category, "style"));
    CHECK(!strcmp(r.lora.entries[2].name, "simple_lora_name") && r.lora.entries[2].weight == 1.0f);
    /* every default */
    CHECK(r.request_id[0] == 0 && r.negative_prompt == NULL && r.prompt_2 == NULL && r.negative_prompt_2 == NULL);
    CHECK(r.width == 0 && r.height == 0 && r.steps == 20 && r.batch_size == 1 && r.n_iter == 1);
    CHECK(r.guidance_scale == 5.0 && r.guidance_rescale == 0.0 && !strcmp(r.scheduler, "euler"));
    CHECK(r.seed == -1 && !r.rng_cuda && !r.prompt_plain && !r.long_truncate);
    CHECK(r.init_rgb == NULL && r.init_width == 0 && r.init_height == 0 && r.strength == 0.3);
    CHECK(r.output == SDXL_OUTPUT_PATH && r.model[0] == 0 && r.timeout_s == 0 && !strcmp(r.output_dir, "."));
    sdxl_request_free(&r);
    CHECK(r.prompt == NULL);
    sdxl_request_free(NULL);
}

TEST(request_every_field) {
    const char *js = "{\"request_id\": \"r-1\", \"prompt\": \"a\", \"negative_prompt\": \"b\", \"prompt_2\": \"c\","
                     " \"negative_prompt_2\": \"d\", \"width\": 832, \"height\": 1216, \"steps\": 30,"
                     " \"guidance_scale\": 7.5, \"guidance_rescale\": 0.7, \"scheduler\": \"DPM++ 2M Karras\","
                     " \"seed\": 9007199254740992, \"rng\": \"cuda\", \"batch_size\": 4, \"n_iter\": 3,"
                     " \"strength\": 1, \"prompt_syntax\": \"plain\", \"long_prompts\": \"truncate\","
                     " \"output\": \"base64\", \"output_dir\": \"runs/today\", \"model\": \"sdxl-base_1.0\","
                     " \"timeout_s\": 90.5, \"lora\": {\"enabled\": true, \"models\": [{\"name\": \"x\","
                     " \"unet_weight\": 0.5, \"te_weight\": 0.25}]}}";
    sdxl_request r;
    sdxl_request_error re;
    sdxl_error err = {0};
    REQUIRE_OK(parse(js, NULL, &r, &re, &err), &err);
    CHECK(!strcmp(r.request_id, "r-1") && !strcmp(r.prompt, "a") && !strcmp(r.negative_prompt, "b"));
    CHECK(!strcmp(r.prompt_2, "c") && !strcmp(r.negative_prompt_2, "d"));
    CHECK(r.width == 832 && r.height == 1216 && r.steps == 30 && r.guidance_scale == 7.5);
    CHECK(r.guidance_rescale == 0.7 && !strcmp(r.scheduler, "DPM++ 2M Karras"));
    CHECK(r.seed == 9007199254740992LL && r.rng_cuda && r.batch_size == 4 && r.n_iter == 3 && r.strength == 1.0);
    CHECK(r.prompt_plain && r.long_truncate && r.output == SDXL_OUTPUT_BASE64);
    CHECK(!strcmp(r.output_dir, "runs/today") && !strcmp(r.model, "sdxl-base_1.0") && r.timeout_s == 90.5);
    CHECK(r.lora.n == 1 && r.lora.entries[0].has_unet_weight && r.lora.entries[0].unet_weight == 0.5f);
    CHECK(r.lora.entries[0].has_te_weight && r.lora.entries[0].te_weight == 0.25f);
    sdxl_request_free(&r);
    /* the other word of each choice, and null as "not given" */
    const char *js2 = "{\"prompt\": \"a\", \"rng\": \"cpu\", \"prompt_syntax\": \"a1111\", \"long_prompts\": \"chunk\","
                      " \"output\": \"path\", \"negative_prompt\": null, \"steps\": null, \"seed\": null,"
                      " \"model\": null, \"init_image\": null, \"lora\": null, \"scheduler\": \"euler_a\"}";
    REQUIRE_OK(parse(js2, NULL, &r, &re, &err), &err);
    CHECK(!r.rng_cuda && !r.prompt_plain && !r.long_truncate && r.output == SDXL_OUTPUT_PATH);
    CHECK(r.negative_prompt == NULL && r.steps == 20 && r.seed == -1 && r.init_rgb == NULL && r.lora.n == 0);
    sdxl_request_free(&r);
}

/* ---- every rule: status, code, field path, message ------------------------------------ */

TEST(request_rules_codes_and_paths) {
    static const struct {
        const char *json, *code, *field, *why;
    } bad[] = {
        /* the document */
        {"{", "invalid_json", "", "malformed JSON (near byte"},
        {"", "invalid_json", "", "malformed JSON"},
        {"{\"prompt\": \"a\"} x", "invalid_json", "", "malformed JSON"},
        {"[]", "invalid_type", "", "expected an object, got a list"},
        {"\"prompt\"", "invalid_type", "", "expected an object, got a string"},
        {"{\"prompt\": \"a\", \"prompt\": \"b\"}", "invalid_json", "prompt", "given twice"},
        {"{\"prompt\": \"a\", \"colour\": 1}", "unknown_field", "colour", "unknown field"},
        {"{\"prompt\": \"a\", \"Prompt\": \"b\"}", "unknown_field", "Prompt", "unknown field"},
        /* prompts */
        {"{}", "missing_field", "prompt", "is required"},
        {"{\"prompt\": null}", "missing_field", "prompt", "is required"},
        {"{\"prompt\": 3}", "invalid_type", "prompt", "expected a string, got a number"},
        {"{\"prompt\": \"a\", \"negative_prompt\": []}", "invalid_type", "negative_prompt", "expected a string"},
        {"{\"prompt\": \"a\", \"prompt_2\": true}", "invalid_type", "prompt_2", "expected a string, got a boolean"},
        {"{\"prompt\": \"a\", \"negative_prompt_2\": {}}", "invalid_type", "negative_prompt_2", "got an object"},
        {"{\"prompt\": \"a\", \"request_id\": 7}", "invalid_type", "request_id", "expected a string"},
        /* sizes */
        {"{\"prompt\": \"a\", \"width\": \"1024\"}", "invalid_type", "width", "expected a number, got a string"},
        {"{\"prompt\": \"a\", \"width\": 1000000}", "out_of_range", "width", "1e+06 is out of range [8, 4096]"},
        {"{\"prompt\": \"a\", \"width\": 0}", "out_of_range", "width", "out of range"},
        {"{\"prompt\": \"a\", \"width\": 100}", "invalid_value", "width", "must be a multiple of 8"},
        {"{\"prompt\": \"a\", \"width\": 512.5}", "invalid_type", "width", "expected an integer"},
        {"{\"prompt\": \"a\", \"height\": 4104}", "out_of_range", "height", "out of range"},
        {"{\"prompt\": \"a\", \"height\": 516}", "invalid_value", "height", "must be a multiple of 8"},
        /* steps, guidance */
        {"{\"prompt\": \"a\", \"steps\": 0}", "out_of_range", "steps", "0 is out of range"},
        {"{\"prompt\": \"a\", \"steps\": 1001}", "out_of_range", "steps", "out of range"},
        {"{\"prompt\": \"a\", \"steps\": 2.5}", "invalid_type", "steps", "expected an integer"},
        {"{\"prompt\": \"a\", \"guidance_scale\": -1}", "out_of_range", "guidance_scale", "out of range [0, 100]"},
        {"{\"prompt\": \"a\", \"guidance_scale\": \"7\"}", "invalid_type", "guidance_scale", "expected a number"},
        {"{\"prompt\": \"a\", \"guidance_scale\": 1e400}", "out_of_range", "guidance_scale", "not a finite number"},
        {"{\"prompt\": \"a\", \"guidance_rescale\": 1.5}", "out_of_range", "guidance_rescale", "out of range [0, 1]"},
        {"{\"prompt\": \"a\", \"guidance_rescale\": -0.1}", "out_of_range", "guidance_rescale", "out of range"},
        /* scheduler */
        {"{\"prompt\": \"a\", \"scheduler\": \"warp\"}", "invalid_value", "scheduler", "unknown sampler \"warp\""},
        {"{\"prompt\": \"a\", \"scheduler\": 1}", "invalid_type", "scheduler", "expected a string"},
        /* seed, rng */
        {"{\"prompt\": \"a\", \"seed\": 1e30}", "out_of_range", "seed", "1e+30 is out of range"},
        {"{\"prompt\": \"a\", \"seed\": -2}", "out_of_range", "seed", "out of range"},
        {"{\"prompt\": \"a\", \"seed\": 9007199254740994}", "out_of_range", "seed", "out of range"},
        {"{\"prompt\": \"a\", \"seed\": 1.5}", "invalid_type", "seed", "expected an integer"},
        {"{\"prompt\": \"a\", \"seed\": \"42\"}", "invalid_type", "seed", "expected a number"},
        {"{\"prompt\": \"a\", \"rng\": \"gpu\"}", "invalid_value", "rng", "must be \"cpu\" or \"cuda\", got \"gpu\""},
        {"{\"prompt\": \"a\", \"rng\": false}", "invalid_type", "rng", "expected a string"},
        /* batch, n_iter */
        {"{\"prompt\": \"a\", \"batch_size\": 65}", "out_of_range", "batch_size", "65 is out of range [1, 64]"},
        {"{\"prompt\": \"a\", \"batch_size\": 0}", "out_of_range", "batch_size", "out of range"},
        {"{\"prompt\": \"a\", \"n_iter\": 0}", "out_of_range", "n_iter", "0 is out of range [1, 100]"},
        {"{\"prompt\": \"a\", \"n_iter\": 101}", "out_of_range", "n_iter", "out of range"},
        {"{\"prompt\": \"a\", \"n_iter\": \"2\"}", "invalid_type", "n_iter", "expected a number"},
        /* img2img */
        {"{\"prompt\": \"a\", \"strength\": 0}", "out_of_range", "strength", "0 is out of range (0, 1]"},
        {"{\"prompt\": \"a\", \"strength\": 1.01}", "out_of_range", "strength", "out of range"},
        {"{\"prompt\": \"a\", \"strength\": \"0.5\"}", "invalid_type", "strength", "expected a number"},
        {"{\"prompt\": \"a\", \"init_image\": 5}", "invalid_type", "init_image", "expected a string"},
        {"{\"prompt\": \"a\", \"init_image\": \"\"}", "invalid_image", "init_image", "empty"},
        {"{\"prompt\": \"a\", \"init_image\": \"iVBO*w0K\"}", "invalid_image", "init_image",
         "not valid base64: invalid base64 character '*' at offset 4"},
        {"{\"prompt\": \"a\", \"init_image\": \"aGVsbG8gd29ybGQ=\"}", "invalid_image", "init_image",
         "not a PNG or JPEG image"},
        {"{\"prompt\": \"a\", \"init_image\": \"data:image/gif;base64,R0lGODlh\"}", "invalid_image", "init_image",
         "unsupported data URL"},
        {"{\"prompt\": \"a\", \"init_image\": \"data:image/png;base64,\"}", "invalid_image", "init_image", "empty"},
        /* choices */
        {"{\"prompt\": \"a\", \"prompt_syntax\": \"A1111\"}", "invalid_value", "prompt_syntax",
         "must be \"a1111\" or \"plain\""},
        {"{\"prompt\": \"a\", \"prompt_syntax\": 1}", "invalid_type", "prompt_syntax", "expected a string"},
        {"{\"prompt\": \"a\", \"long_prompts\": \"wrap\"}", "invalid_value", "long_prompts",
         "must be \"chunk\" or \"truncate\""},
        {"{\"prompt\": \"a\", \"output\": \"png\"}", "invalid_value", "output", "must be \"path\" or \"base64\""},
        {"{\"prompt\": \"a\", \"output\": null, \"output\": 1}", "invalid_json", "output", "given twice"},
        /* where images go, which model, how long */
        {"{\"prompt\": \"a\", \"output_dir\": \"/etc\"}", "invalid_value", "output_dir", "must be relative"},
        {"{\"prompt\": \"a\", \"output_dir\": \"../up\"}", "invalid_value", "output_dir", "\"..\" component"},
        {"{\"prompt\": \"a\", \"output_dir\": \"a/../../b\"}", "invalid_value", "output_dir", "\"..\" component"},
        {"{\"prompt\": \"a\", \"output_dir\": \"a/..\"}", "invalid_value", "output_dir", "\"..\" component"},
        {"{\"prompt\": \"a\", \"output_dir\": \"..\"}", "invalid_value", "output_dir", "\"..\" component"},
        {"{\"prompt\": \"a\", \"output_dir\": \"a//..//b\"}", "invalid_value", "output_dir", "\"..\" component"},
        {"{\"prompt\": \"a\", \"output_dir\": 1}", "invalid_type", "output_dir", "expected a string"},
        {"{\"prompt\": \"a\", \"model\": \"../x\"}", "invalid_value", "model", "only letters, digits"},
        {"{\"prompt\": \"a\", \"model\": \"a/b\"}", "invalid_value", "model", "only letters, digits"},
        {"{\"prompt\": \"a\", \"model\": \"a b\"}", "invalid_value", "model", "only letters, digits"},
        {"{\"prompt\": \"a\", \"model\": \"..\"}", "invalid_value", "model", "not a model name"},
        {"{\"prompt\": \"a\", \"model\": 3}", "invalid_type", "model", "expected a string"},
        {"{\"prompt\": \"a\", \"timeout_s\": -1}", "out_of_range", "timeout_s", "out of range [0, 86400]"},
        {"{\"prompt\": \"a\", \"timeout_s\": 86401}", "out_of_range", "timeout_s", "out of range"},
        {"{\"prompt\": \"a\", \"timeout_s\": \"60\"}", "invalid_type", "timeout_s", "expected a number"},
        /* lora */
        {"{\"prompt\": \"a\", \"lora\": []}", "invalid_type", "lora", "expected an object"},
        {"{\"prompt\": \"a\", \"lora\": {\"enabled\": 1}}", "invalid_type", "lora.enabled", "expected true or false"},
        {"{\"prompt\": \"a\", \"lora\": {\"on\": true}}", "unknown_field", "lora.on", "unknown field"},
        {"{\"prompt\": \"a\", \"lora\": {\"global_weight\": 1e9}}", "out_of_range", "lora.global_weight",
         "1e+09 is out of range"},
        {"{\"prompt\": \"a\", \"lora\": {\"models\": {}}}", "invalid_type", "lora.models", "expected a list"},
        {"{\"prompt\": \"a\", \"lora\": {\"models\": [3]}}", "invalid_type", "lora.models[0]",
         "expected a name or an object"},
        {"{\"prompt\": \"a\", \"lora\": {\"models\": [{\"weight\": 1}]}}", "missing_field", "lora.models[0]",
         "\"name\" is required"},
        {"{\"prompt\": \"a\", \"lora\": {\"models\": [\"a\", {\"name\": \"b\", \"weight\": \"hi\"}]}}", "invalid_type",
         "lora.models[1].weight", "expected a number"},
        {"{\"prompt\": \"a\", \"lora\": {\"models\": [{\"name\": \"b\", \"strength\": 1}]}}", "unknown_field",
         "lora.models[0].strength", "unknown field"},
        {"{\"prompt\": \"a\", \"lora\": {\"models\": [\"\"]}}", "invalid_value", "lora.models[0]", "empty name"},
        {"{\"prompt\": \"a\", \"lora\": {\"models\": [{\"name\": \"b\", \"te_weight\": 101}]}}", "out_of_range",
         "lora.models[0].te_weight", "out of range"},
        {"{\"prompt\": \"a\", \"lora\": {\"models\": [{\"name\": \"b\", \"category\": 2}]}}", "invalid_type",
         "lora.models[0].category", "expected a string"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sdxl_error err = {0};
        sdxl_request r;
        sdxl_request_error re;
        sdxl_status st = parse(bad[i].json, NULL, &r, &re, &err);
        char lead[300]; /* "<path>: " ("request: " for the whole document), then the why */
        snprintf(lead, sizeof lead, "%s: ", bad[i].field[0] ? bad[i].field : "request");
        CHECK_MSG(st == SDXL_STATUS_BAD_INPUT && !strcmp(re.code, bad[i].code) && !strcmp(re.field, bad[i].field) &&
                      !strncmp(err.msg, lead, strlen(lead)) && strstr(err.msg + strlen(lead), bad[i].why),
                  "%s -> %d [%s] (%s) '%s'; want [%s] (%s) '%s...%s'", bad[i].json, st, re.code, re.field, err.msg,
                  bad[i].code, bad[i].field, lead, bad[i].why);
        CHECK(r.prompt == NULL && r.init_rgb == NULL); /* nothing kept */
        /* the plain entry point says the same */
        sdxl_error err2 = {0};
        CHECK(sdxl_request_parse(bad[i].json, strlen(bad[i].json), NULL, &r, &err2) == st &&
              !strcmp(err.msg, err2.msg));
    }
}

TEST(request_length_caps) {
    sdxl_request_limits lim = sdxl_request_default_limits();
    lim.max_prompt = 10;
    static const char *const fields[] = {"prompt", "negative_prompt", "prompt_2", "negative_prompt_2"};
    for (size_t i = 0; i < 4; i++) {
        char js[200];
        snprintf(js, sizeof js, "{\"prompt\": \"p\", \"%s\": \"0123456789a\"}", fields[i]);
        if (i == 0) snprintf(js, sizeof js, "{\"prompt\": \"0123456789a\"}");
        sdxl_request r;
        sdxl_request_error re;
        sdxl_error err = {0};
        CHECK(parse(js, &lim, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.code, "out_of_range") &&
              !strcmp(re.field, fields[i]) && strstr(err.msg, "longer than 10 bytes"));
        snprintf(js, sizeof js, "{\"prompt\": \"p\", \"%s\": \"0123456789\"}", fields[i]);
        if (i == 0) snprintf(js, sizeof js, "{\"prompt\": \"0123456789\"}");
        CHECK(parse(js, &lim, &r, &re, &err) == SDXL_STATUS_OK);
        sdxl_request_free(&r);
    }
    char js[600];
    snprintf(js, sizeof js, "{\"prompt\": \"p\", \"request_id\": \"%0128d\"}", 0);
    sdxl_request r;
    sdxl_request_error re;
    sdxl_error err = {0};
    CHECK(parse(js, NULL, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.field, "request_id"));
    snprintf(js, sizeof js, "{\"prompt\": \"p\", \"model\": \"%0128d\"}", 0);
    CHECK(parse(js, NULL, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.field, "model") &&
          !strcmp(re.code, "out_of_range"));
    /* 65 adapters */
    char big[2000] = "{\"prompt\": \"p\", \"lora\": {\"models\": [";
    for (int i = 0; i < 65; i++) strcat(big, i ? ",\"x\"" : "\"x\"");
    strcat(big, "]}}");
    CHECK(parse(big, NULL, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.field, "lora.models") &&
          !strcmp(re.code, "out_of_range"));
}

TEST(request_limits_are_configurable) {
    sdxl_request_limits lim = sdxl_request_default_limits();
    CHECK(lim.max_side == 4096 && lim.max_steps == 1000 && lim.max_batch == 64 && lim.max_n_iter == 100);
    CHECK(lim.max_init_image_bytes == (size_t)64 << 20 && !lim.output_dir_any_path);
    lim.max_side = 1024, lim.max_steps = 50, lim.max_batch = 2, lim.max_n_iter = 4;
    static const struct { const char *json, *field; } over[] = {
        {"{\"prompt\": \"a\", \"width\": 1032}", "width"},  {"{\"prompt\": \"a\", \"height\": 1032}", "height"},
        {"{\"prompt\": \"a\", \"steps\": 51}", "steps"},    {"{\"prompt\": \"a\", \"batch_size\": 3}", "batch_size"},
        {"{\"prompt\": \"a\", \"n_iter\": 5}", "n_iter"},
    };
    for (size_t i = 0; i < sizeof over / sizeof over[0]; i++) {
        sdxl_request r;
        sdxl_request_error re;
        sdxl_error err = {0};
        CHECK_MSG(parse(over[i].json, &lim, &r, &re, &err) == SDXL_STATUS_BAD_INPUT &&
                      !strcmp(re.code, "out_of_range") && !strcmp(re.field, over[i].field),
                  "%s: %s", over[i].json, err.msg);
        CHECK(parse(over[i].json, NULL, &r, &re, &err) == SDXL_STATUS_OK); /* within the defaults */
        sdxl_request_free(&r);
    }
    /* new limits left 0 (a caller's older initializer) mean their defaults */
    sdxl_request_limits old = {.max_side = 4096, .max_steps = 1000, .max_batch = 64, .max_prompt = 65536};
    sdxl_request r;
    sdxl_error err = {0};
    const char *js = "{\"prompt\": \"a\", \"n_iter\": 100}";
    REQUIRE_OK(sdxl_request_parse(js, strlen(js), &old, &r, &err), &err);
    CHECK(r.n_iter == 100);
    sdxl_request_free(&r);
    /* output_dir_any_path: the command line's own files may name any folder */
    lim = sdxl_request_default_limits();
    lim.output_dir_any_path = true;
    js = "{\"prompt\": \"a\", \"output_dir\": \"/tmp/../x\"}";
    REQUIRE_OK(sdxl_request_parse(js, strlen(js), &lim, &r, &err), &err);
    CHECK(!strcmp(r.output_dir, "/tmp/../x"));
    sdxl_request_free(&r);
}

TEST(request_output_dir_and_model_accepted_forms) {
    static const char *const dirs[] = {"out", "a/b/c", "./a", "a..b", "..a", "a/.../b", "a/", ".", ""};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char js[200];
        snprintf(js, sizeof js, "{\"prompt\": \"a\", \"output_dir\": \"%s\"}", dirs[i]);
        sdxl_request r;
        sdxl_error err = {0};
        CHECK_MSG(sdxl_request_parse(js, strlen(js), NULL, &r, &err) == SDXL_STATUS_OK, "%s: %s", dirs[i], err.msg);
        CHECK(!strcmp(r.output_dir, dirs[i][0] ? dirs[i] : "."));
        sdxl_request_free(&r);
    }
    static const char *const models[] = {"sdxl", "sd_xl_base_1.0", "A-b.C_9", ""};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        char js[200];
        snprintf(js, sizeof js, "{\"prompt\": \"a\", \"model\": \"%s\"}", models[i]);
        sdxl_request r;
        sdxl_error err = {0};
        CHECK_MSG(sdxl_request_parse(js, strlen(js), NULL, &r, &err) == SDXL_STATUS_OK, "%s: %s", models[i], err.msg);
        CHECK(!strcmp(r.model, models[i]));
        sdxl_request_free(&r);
    }
}

/* ---- init_image ---------------------------------------------------------------- */

TEST(request_init_image_png_and_jpeg) {
    enum { W = 24, H = 16 };
    uint8_t *px = test_rgb(W, H);
    sdxl_error err = {0};
    uint8_t *png = NULL;
    size_t plen = 0;
    REQUIRE_OK(sdxl_png_encode(px, W, H, NULL, &png, &plen, &err), &err);
    size_t jlen = 0;
    uint8_t *jpg = sdxl_test_jpeg(px, W, H, 3, 95, false, &jlen);
    REQUIRE(jpg);
    static const char *const prefixes[] = {"", "data:image/png;base64,", "data:image/jpeg;base64,"};
    for (int kind = 0; kind < 2; kind++)
        for (int p = 0; p < 2; p++) {
            const char *prefix = p == 0 ? prefixes[0] : prefixes[1 + kind];
            char *js = with_image(kind ? jpg : png, kind ? jlen : plen, prefix, ", \"strength\": 0.55");
            sdxl_request r;
            sdxl_request_error re;
            sdxl_status st = parse(js, NULL, &r, &re, &err);
            CHECK_MSG(st == SDXL_STATUS_OK, "%s %s: %s", kind ? "JPEG" : "PNG", prefix, err.msg);
            if (!st) {
                CHECK(r.init_rgb && r.init_width == W && r.init_height == H && r.strength == 0.55);
                CHECK(r.width == W && r.height == H); /* the image's size is the size */
                if (!kind) CHECK(!memcmp(r.init_rgb, px, (size_t)W * H * 3)); /* PNG: lossless */
                int maxd = 0;
                for (int i = 0; i < W * H * 3; i++) {
                    int d = abs((int)r.init_rgb[i] - (int)px[i]);
                    maxd = d > maxd ? d : maxd;
                }
                if (kind) CHECK_MSG(maxd <= 12, "JPEG max difference %d", maxd); /* lossy */
            }
            sdxl_request_free(&r);
            free(js);
        }
    /* a data URL that names the other format */
    char *js = with_image(jpg, jlen, prefixes[1], "");
    sdxl_request r;
    sdxl_request_error re;
    CHECK(parse(js, NULL, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.code, "invalid_image") &&
          strstr(err.msg, "init_image: the data URL says image/png but the data is a JPEG"));
    free(js);
    js = with_image(png, plen, prefixes[2], "");
    CHECK(parse(js, NULL, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.code, "invalid_image") &&
          strstr(err.msg, "says image/jpeg but the data is a PNG"));
    free(js);
    /* width/height, when given, must be the image's */
    js = with_image(png, plen, "", ", \"width\": 24, \"height\": 16");
    CHECK(parse(js, NULL, &r, &re, &err) == SDXL_STATUS_OK);
    sdxl_request_free(&r);
    free(js);
    js = with_image(png, plen, "", ", \"width\": 32");
    CHECK(parse(js, NULL, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.code, "invalid_value") &&
          !strcmp(re.field, "width") && strstr(err.msg, "width: 32 does not match init_image's width 24"));
    CHECK(r.init_rgb == NULL);
    free(js);
    js = with_image(png, plen, "", ", \"height\": 8");
    CHECK(parse(js, NULL, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.field, "height"));
    free(js);
    /* base64 wrapped over lines (as MIME encoders write it) is fine */
    char *b64 = sdxl_test_base64(png, plen, NULL);
    size_t n = strlen(b64);
    char *wrapped = malloc(n * 2 + 100), *o = wrapped;
    o += sprintf(o, "{\"prompt\": \"p\", \"init_image\": \"");
    for (size_t i = 0; i < n; i++) {
        *o++ = b64[i];
        if (i % 76 == 75) *o++ = '\\', *o++ = 'n';
    }
    strcpy(o, "\"}");
    CHECK(parse(wrapped, NULL, &r, &re, &err) == SDXL_STATUS_OK && r.init_width == W);
    sdxl_request_free(&r);
    free(wrapped);
    free(b64);
    free(jpg);
    sdxl_free(png);
    free(px);
}

TEST(request_init_image_formats_convert_to_rgb8) {
    /* grey+alpha 16-bit PNG and a greyscale JPEG become RGB8 */
    enum { W = 16, H = 8 };
    uint8_t rows[W * H * 4];
    for (int i = 0; i < W * H * 4; i++) rows[i] = (uint8_t)(i * 3);
    size_t len = 0;
    uint8_t *png = sdxl_test_png(rows, W, H, 4 /* PNG_COLOR_TYPE_GRAY_ALPHA */, 16, false, NULL, 0, NULL, 0, &len);
    REQUIRE(png);
    char *js = with_image(png, len, "", "");
    sdxl_request r;
    sdxl_request_error re;
    sdxl_error err = {0};
    REQUIRE_OK(parse(js, NULL, &r, &re, &err), &err);
    CHECK(r.init_width == W && r.init_height == H);
    CHECK(r.init_rgb[0] == rows[0] && r.init_rgb[1] == rows[0] && r.init_rgb[2] == rows[0]); /* high byte of grey */
    CHECK(r.init_rgb[3] == rows[4]);
    sdxl_request_free(&r);
    free(js);
    free(png);
    uint8_t grey[W * H];
    memset(grey, 77, sizeof grey);
    uint8_t *jpg = sdxl_test_jpeg(grey, W, H, 1, 90, true, &len);
    js = with_image(jpg, len, "data:image/jpeg;base64,", "");
    REQUIRE_OK(parse(js, NULL, &r, &re, &err), &err);
    CHECK(abs(r.init_rgb[0] - 77) <= 1 && r.init_rgb[0] == r.init_rgb[1] && r.init_rgb[1] == r.init_rgb[2]);
    sdxl_request_free(&r);
    free(js);
    free(jpg);
    /* a JPEG with EXIF orientation 6 (rotate 90°): the upright size is the size */
    FILE *f = fopen(sdxl_test_data("images/orient_6.jpg"), "rb");
    REQUIRE(f);
    uint8_t buf[4096];
    len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    js = with_image(buf, len, "", ", \"width\": 16, \"height\": 24");
    REQUIRE_OK(parse(js, NULL, &r, &re, &err), &err);
    CHECK(r.init_width == 16 && r.init_height == 24 && r.width == 16 && r.height == 24);
    sdxl_request_free(&r);
    free(js);
}

TEST(request_init_image_rejections) {
    sdxl_error err = {0};
    sdxl_request r;
    sdxl_request_error re;
    /* not a multiple of 8; too small */
    uint8_t *px = test_rgb(20, 16);
    uint8_t *png = NULL;
    size_t plen = 0;
    REQUIRE_OK(sdxl_png_encode(px, 20, 16, NULL, &png, &plen, &err), &err);
    char *js = with_image(png, plen, "", "");
    CHECK(parse(js, NULL, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.code, "invalid_value") &&
          !strcmp(re.field, "init_image") && strstr(err.msg, "init_image: a PNG of 20x16: width and height must be"));
    CHECK(r.init_rgb == NULL);
    free(js);
    sdxl_free(png);
    REQUIRE_OK(sdxl_png_encode(px, 8, 4, NULL, &png, &plen, &err), &err);
    js = with_image(png, plen, "", "");
    CHECK(parse(js, NULL, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.code, "out_of_range") &&
          strstr(err.msg, "at least 8 a side"));
    free(js);
    sdxl_free(png);
    /* corrupt: a PNG cut short, a PNG with a broken IDAT, a JPEG cut short */
    REQUIRE_OK(sdxl_png_encode(px, 16, 16, NULL, &png, &plen, &err), &err);
    js = with_image(png, plen - 20, "", "");
    CHECK(parse(js, NULL, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.code, "invalid_image") &&
          !strcmp(re.field, "init_image") && strstr(err.msg, "init_image: not a valid PNG"));
    free(js);
    png[plen / 2] ^= 0x55;
    js = with_image(png, plen, "", "");
    CHECK(parse(js, NULL, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.code, "invalid_image"));
    free(js);
    sdxl_free(png);
    size_t jlen = 0;
    uint8_t *jpg = sdxl_test_jpeg(px, 16, 16, 3, 90, false, &jlen);
    js = with_image(jpg, jlen / 2, "", "");
    CHECK(parse(js, NULL, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.code, "invalid_image") &&
          strstr(err.msg, "init_image: not a valid JPEG"));
    free(js);
    free(jpg);
    /* corrupt base64: bad padding, a lone last character, url-safe alphabet */
    static const char *const b64s[] = {"iVBORw0KGgo=A", "iVBORw0KGgoAAAAAA", "iVBORw0K_go"};
    for (int i = 0; i < 3; i++) {
        char j2[200];
        snprintf(j2, sizeof j2, "{\"prompt\": \"a\", \"init_image\": \"%s\"}", b64s[i]);
        CHECK_MSG(parse(j2, NULL, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.code, "invalid_image") &&
                      strstr(err.msg, "init_image: not valid base64"),
                  "%s: %s", b64s[i], err.msg);
    }
    free(px);
}

/* A PNG header claiming a huge image is refused from the header: out_of_range
 * and no pixel buffer (peak memory does not move). */
TEST(request_init_image_huge_refused_without_allocating) {
    uint8_t hdr[33];
    static const uint32_t sizes[][2] = {{65536, 65536}, {4104, 8}, {16384, 16384}, {8, 4104}};
    for (int k = 0; k < 4; k++) {
        memcpy(hdr, "\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16);
        for (int i = 0; i < 4; i++)
            hdr[16 + i] = (uint8_t)(sizes[k][0] >> (24 - 8 * i)), hdr[20 + i] = (uint8_t)(sizes[k][1] >> (24 - 8 * i));
        hdr[24] = 8, hdr[25] = 2, hdr[26] = hdr[27] = hdr[28] = 0;
        memset(hdr + 29, 0, 4); /* CRC: never reached */
        char *js = with_image(hdr, sizeof hdr, "", "");
        sdxl_mem_stats s0, s1;
        sdxl_mem_get_stats(&s0);
        sdxl_mem_reset_peak();
        sdxl_request r;
        sdxl_request_error re;
        sdxl_error err = {0};
        CHECK_MSG(parse(js, NULL, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.code, "out_of_range") &&
                      !strcmp(re.field, "init_image") && strstr(err.msg, "at most 4096 a side"),
                  "%ux%u: [%s] %s", sizes[k][0], sizes[k][1], re.code, err.msg);
        sdxl_mem_get_stats(&s1);
        CHECK_MSG(s1.peak_bytes - s0.live_bytes < (int64_t)strlen(js) + 65536, "peak +%lld bytes",
                  (long long)(s1.peak_bytes - s0.live_bytes));
        free(js);
    }
    /* more file bytes than max_init_image_bytes: refused before decoding */
    sdxl_request_limits lim = sdxl_request_default_limits();
    lim.max_init_image_bytes = 16;
    char *js = with_image(hdr, sizeof hdr, "", "");
    sdxl_request r;
    sdxl_request_error re;
    sdxl_error err = {0};
    CHECK(parse(js, &lim, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.code, "out_of_range") &&
          strstr(err.msg, "init_image: an image file of more than 16 bytes"));
    free(js);
    /* a smaller max_side caps the pixels decoded too */
    uint8_t *px = test_rgb(64, 64), *png = NULL;
    size_t plen = 0;
    REQUIRE_OK(sdxl_png_encode(px, 64, 64, NULL, &png, &plen, &err), &err);
    lim = sdxl_request_default_limits();
    lim.max_side = 32;
    js = with_image(png, plen, "", "");
    CHECK(parse(js, &lim, &r, &re, &err) == SDXL_STATUS_BAD_INPUT && !strcmp(re.code, "out_of_range") &&
          strstr(err.msg, "a PNG of 64x64; at most 32 a side"));
    free(js);
    sdxl_free(png);
    free(px);
}

/* Every allocation of a parse with an init image, failed in turn: a clean
 * OUT_OF_MEMORY with the code, nothing leaked. */
TEST(request_allocation_failures) {
    uint8_t *px = test_rgb(16, 16), *png = NULL;
    size_t plen = 0;
    sdxl_error err = {0};
    REQUIRE_OK(sdxl_png_encode(px, 16, 16, NULL, &png, &plen, &err), &err);
    char *js = with_image(png, plen, "", ", \"negative_prompt\": \"n\", \"prompt_2\": \"q\"");
    sdxl_mem_stats s0, s1;
    sdxl_mem_get_stats(&s0);
    int failures = 0;
    for (int64_t k = 1; k < 100; k++) {
        sdxl__alloc_fail_at(k);
        sdxl_request r;
        sdxl_request_error re;
        sdxl_status st = parse(js, NULL, &r, &re, &err);
        sdxl__alloc_fail_at(0);
        if (st == SDXL_STATUS_OK) {
            sdxl_request_free(&r);
            break;
        }
        failures++;
        CHECK_MSG(st == SDXL_STATUS_OUT_OF_MEMORY && !strcmp(re.code, "out_of_memory"), "alloc %lld: %d [%s] %s",
                  (long long)k, st, re.code, err.msg);
        CHECK(r.prompt == NULL && r.init_rgb == NULL);
        sdxl_mem_get_stats(&s1);
        CHECK_MSG(s1.live_bytes == s0.live_bytes, "alloc %lld: leaked %lld bytes", (long long)k,
                  (long long)(s1.live_bytes - s0.live_bytes));
    }
    CHECK(failures >= 4); /* base64 buffer, pixels, rows, prompts */
    free(js);
    sdxl_free(png);
    free(px);
}

/* ---- the JSON Schema and the docs ----------------------------------------------- */

static bool same_names(const cJSON *props, const char *const *names, const char *what) {
    bool ok = true;
    int n = 0;
    for (; names[n]; n++)
        if (!cJSON_GetObjectItemCaseSensitive(props, names[n])) {
            sdxl_test_fail(__FILE__, __LINE__, "%s: the parser's \"%s\" is not in the schema", what, names[n]);
            ok = false;
        }
    for (const cJSON *p = props ? props->child : NULL; p; p = p->next) {
        bool found = false;
        for (int i = 0; names[i]; i++) found = found || !strcmp(names[i], p->string);
        if (!found) {
            sdxl_test_fail(__FILE__, __LINE__, "%s: the schema's \"%s\" is not a parser field", what, p->string);
            ok = false;
        }
    }
    return ok && cJSON_GetArraySize(props) == n;
}

static double schema_num(const cJSON *props, const char *field, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(props, field), key);
    return cJSON_IsNumber(v) ? v->valuedouble : -12345;
}

TEST(request_json_schema_matches_parser) {
    char *text = read_text(SDXL_SOURCE_DIR "/docs/request.schema.json");
    REQUIRE(text);
    cJSON *s = cJSON_Parse(text);
    free(text);
    REQUIRE(s); /* valid JSON */
    CHECK(!strcmp(cJSON_GetObjectItem(s, "$schema")->valuestring, "https://json-schema.org/draft/2020-12/schema"));
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(s, "additionalProperties")));
    const cJSON *req = cJSON_GetObjectItem(s, "required");
    CHECK(cJSON_GetArraySize(req) == 1 && !strcmp(cJSON_GetArrayItem(req, 0)->valuestring, "prompt"));
    const cJSON *props = cJSON_GetObjectItem(s, "properties");
    CHECK(same_names(props, sdxl_request_field_names(""), "request"));
    /* the lora block and an adapter object (through $defs) */
    const cJSON *defs = cJSON_GetObjectItem(s, "$defs");
    const cJSON *lora = cJSON_GetObjectItem(defs, "lora"), *model = cJSON_GetObjectItem(defs, "lora_model");
    REQUIRE(lora && model);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(lora, "additionalProperties")));
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(model, "additionalProperties")));
    CHECK(same_names(cJSON_GetObjectItem(lora, "properties"), sdxl_request_field_names("lora"), "lora"));
    CHECK(same_names(cJSON_GetObjectItem(model, "properties"), sdxl_request_field_names("lora.models[]"),
                     "lora.models[]"));
    CHECK(sdxl_request_field_names("nothing") == NULL);
    /* the default caps, as published */
    sdxl_request_limits lim = sdxl_request_default_limits();
    CHECK(schema_num(props, "width", "maximum") == lim.max_side && schema_num(props, "height", "maximum") == lim.max_side);
    CHECK(schema_num(props, "width", "minimum") == 8 && schema_num(props, "width", "multipleOf") == 8);
    CHECK(schema_num(props, "steps", "maximum") == lim.max_steps && schema_num(props, "steps", "minimum") == 1);
    CHECK(schema_num(props, "batch_size", "maximum") == lim.max_batch);
    CHECK(schema_num(props, "n_iter", "maximum") == lim.max_n_iter);
    CHECK(schema_num(props, "prompt", "maxLength") == (double)lim.max_prompt);
    CHECK(schema_num(props, "seed", "minimum") == -1 && schema_num(props, "seed", "maximum") == 9007199254740992.0);
    CHECK(schema_num(props, "guidance_rescale", "maximum") == 1 && schema_num(props, "timeout_s", "maximum") == 86400);
    CHECK(schema_num(props, "strength", "exclusiveMinimum") == 0 && schema_num(props, "strength", "maximum") == 1);
    cJSON_Delete(s);
}

/* Every ```json block of docs/api.md is valid JSON; the requests among them
 * (no "status" member) parse. */
TEST(request_docs_examples_parse) {
    char *md = read_text(SDXL_SOURCE_DIR "/docs/api.md");
    REQUIRE(md);
    int requests = 0, responses = 0;
    bool first = true;
    for (char *p = strstr(md, "```json\n"); p; p = strstr(p, "```json\n")) {
        p += 8;
        char *end = strstr(p, "```");
        REQUIRE(end);
        *end = 0;
        cJSON *j = cJSON_Parse(p);
        CHECK_MSG(j != NULL, "docs/api.md: not JSON: %.80s", p);
        if (j && cJSON_GetObjectItem(j, "status")) {
            responses++;
        } else if (j) {
            sdxl_request r;
            sdxl_error err = {0};
            sdxl_status st = sdxl_request_parse(p, strlen(p), NULL, &r, &err);
            CHECK_MSG(st == SDXL_STATUS_OK, "docs/api.md example %d: %s", requests + 1, err.msg);
            if (first) { /* the seed's request comes first, verbatim */
                CHECK_MSG(!strcmp(p, sdxl_test_seed_request), "the first example is not the seed's request verbatim");
                first = false;
            }
            sdxl_request_free(&r);
            requests++;
        }
        cJSON_Delete(j);
        p = end + 3;
    }
    CHECK(requests >= 3 && responses >= 2);
    free(md);
}
