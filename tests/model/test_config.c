/* Tests of model/config: the diffusers config of the tiny reference model
 * read field by field; hostile config.json files (wrong types, absurd sizes,
 * wrong list lengths, unsupported settings, broken JSON, missing files), each
 * an error naming file and field; the sidecar-yaml reader (more of it, and
 * the single-file configs of the variants, in test_config_yaml.c); hints;
 * equality; allocation failure. Single-file inference is exercised in test_weights.c
 * (it needs checkpoint files). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "model/config.h"
#include "model/config_yaml.h"
#include "test.h"

#define REQUIRE_ST(expr, errp)                                                                               \
    do {                                                                                                     \
        sdxl_error *ep_ = (errp);                                                                            \
        REQUIRE_OK(expr, ep_);                                                                               \
    } while (0)

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
    s[n] = 0;
    fclose(f);
    return s;
}

static bool spit(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

static const char *const cfg_files[6] = {
    "model_index.json",         "unet/config.json",           "vae/config.json",
    "text_encoder/config.json", "text_encoder_2/config.json", "scheduler/scheduler_config.json"};

/* A copy of the tiny model's configs (no weights) in tmp/<name>, with
 * field `field` of file `file` replaced by the JSON `value` (NULL: removed;
 * file NULL: no change). Returns the folder path (static buffer). */
static const char *cfg_dir(const char *name, const char *file, const char *field, const char *value) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", sdxl_test_tmpdir(), name);
    mkdir(dir, 0700);
    static const char *const subs[5] = {"unet", "vae", "text_encoder", "text_encoder_2", "scheduler"};
    for (int i = 0; i < 5; i++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, subs[i]);
        mkdir(p, 0700);
    }
    for (int i = 0; i < 6; i++) {
        char src[1200], dst[1200];
        snprintf(src, sizeof src, "refs/tiny-sdxl/%s", cfg_files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, cfg_files[i]);
        char *text = slurp(sdxl_test_data(src));
        if (!text) return NULL;
        if (file && strcmp(file, cfg_files[i]) == 0) {
            cJSON *root = cJSON_Parse(text);
            cJSON_DeleteItemFromObjectCaseSensitive(root, field);
            if (value) cJSON_AddItemToObject(root, field, cJSON_Parse(value));
            free(text);
            text = cJSON_Print(root);
            cJSON_Delete(root);
            bool ok = spit(dst, text);
            cJSON_free(text);
            if (!ok) return NULL;
            continue;
        }
        bool ok = spit(dst, text);
        free(text);
        if (!ok) return NULL;
    }
    return dir;
}

TEST(config_tiny_diffusers_fields) {
    sdxl_error err = {0};
    sdxl_model_config c;
    REQUIRE_ST(sdxl_model_config_load_diffusers(sdxl_test_data("refs/tiny-sdxl"), &c, &err), &err);
    const sdxl_unet_config *u = &c.unet;
    CHECK_EQ_INT(u->num_levels, 2);
    CHECK_EQ_INT(u->block_out_channels[0], 32);
    CHECK_EQ_INT(u->block_out_channels[1], 64);
    CHECK_EQ_INT(u->layers_per_block, 2);
    CHECK(!u->down_has_attn[0] && u->down_has_attn[1]);
    CHECK(u->up_has_attn[0] && !u->up_has_attn[1]);
    CHECK_EQ_INT(u->down_transformer_layers[0], 0);
    CHECK_EQ_INT(u->down_transformer_layers[1], 2);
    CHECK_EQ_INT(u->up_transformer_layers[0], 2); /* (1,2) reversed -> up block 0 gets 2 */
    CHECK_EQ_INT(u->up_transformer_layers[1], 0);
    CHECK_EQ_INT(u->mid_transformer_layers, 2);
    CHECK_EQ_INT(u->down_num_heads[0], 2);
    CHECK_EQ_INT(u->down_num_heads[1], 4);
    CHECK_EQ_INT(u->up_num_heads[0], 4);
    CHECK_EQ_INT(u->up_num_heads[1], 2);
    CHECK_EQ_INT(u->mid_num_heads, 4);
    CHECK_EQ_INT(u->cross_attention_dim, 64);
    CHECK(u->use_linear_projection && !u->upcast_attention);
    CHECK_EQ_INT(u->addition_time_embed_dim, 8);
    CHECK_EQ_INT(u->projection_class_embeddings_input_dim, 80);
    CHECK_EQ_INT(u->time_proj_dim, 32);
    CHECK_EQ_INT(u->time_embed_dim, 128);
    CHECK_EQ_INT(u->norm_num_groups, 32);
    CHECK_NEAR(u->norm_eps, 1e-5, 0);
    CHECK(u->flip_sin_to_cos);
    CHECK_NEAR(u->freq_shift, 0, 0);
    CHECK_EQ_INT(u->sample_size, 32);
    CHECK(u->act_fn == SDXL_ACT_SILU);
    const sdxl_vae_config *v = &c.vae;
    CHECK_EQ_INT(v->num_levels, 2);
    CHECK_EQ_INT(v->block_out_channels[1], 64);
    CHECK_EQ_INT(v->layers_per_block, 1);
    CHECK_EQ_INT(v->latent_channels, 4);
    CHECK_EQ_INT(v->in_channels, 3);
    CHECK_NEAR(v->scaling_factor, 0.13025, 0);
    CHECK(!v->has_shift_factor && !v->has_latents_mean_std && v->force_upcast);
    for (int k = 0; k < 2; k++) {
        const sdxl_te_config *t = &c.te[k];
        CHECK_EQ_INT(t->hidden_size, 32);
        CHECK_EQ_INT(t->intermediate_size, 37);
        CHECK_EQ_INT(t->num_layers, 5);
        CHECK_EQ_INT(t->num_heads, 4);
        CHECK_EQ_INT(t->vocab_size, 1000);
        CHECK_EQ_INT(t->max_position_embeddings, 77);
        CHECK(t->hidden_act == SDXL_ACT_GELU);
        CHECK_EQ_INT(t->projection_dim, 32);
        CHECK(t->with_projection == (k == 1));
        CHECK_EQ_INT(t->eos_token_id, 2);
        CHECK(t->legacy_pooling);
        CHECK_EQ_INT(t->hidden_state_index, 4);
    }
    CHECK(c.pipeline.force_zeros_for_empty_prompt);
    REQUIRE(c.scheduler_json);
    CHECK(strstr(c.scheduler_json, "EulerDiscreteScheduler") != NULL);
    CHECK(!c.scheduler_is_default);

    /* copy and equality */
    sdxl_model_config d;
    REQUIRE_ST(sdxl_model_config_copy(&d, &c, &err), &err);
    char what[64];
    CHECK(sdxl_model_config_equal(&c, &d, what, sizeof what));
    CHECK(d.scheduler_json != c.scheduler_json && strcmp(d.scheduler_json, c.scheduler_json) == 0);
    d.te[1].num_heads = 8;
    CHECK(!sdxl_model_config_equal(&c, &d, what, sizeof what));
    CHECK(strcmp(what, "te[k].num_heads") == 0);
    d.te[1].num_heads = 4;
    d.unet.up_transformer_layers[0] = 3;
    CHECK(!sdxl_model_config_equal(&c, &d, what, sizeof what));
    CHECK(strstr(what, "up_transformer_layers") != NULL);
    sdxl_model_config_clear(&d);
    sdxl_model_config_clear(&c);
    sdxl_model_config_clear(NULL);
}

typedef struct {
    const char *file, *field, *value;
    sdxl_status st;
    const char *msg1, *msg2; /* substrings the message must hold */
} bad_case;

TEST(config_hostile_json) {
    static const bad_case cases[] = {
        {"unet/config.json", "block_out_channels", "\"32\"", SDXL_STATUS_BAD_INPUT, "unet/config.json",
         "\"block_out_channels\""},
        {"unet/config.json", "block_out_channels", "[32, 1000000000]", SDXL_STATUS_BAD_INPUT,
         "block_out_channels", "entry 1"},
        {"unet/config.json", "block_out_channels", "[32, -64]", SDXL_STATUS_BAD_INPUT, "block_out_channels",
         "entry 1"},
        {"unet/config.json", "block_out_channels", "[]", SDXL_STATUS_BAD_INPUT, "block_out_channels",
         "0 entries"},
        {"unet/config.json", "block_out_channels", "[32,64,64,64,64,64,64,64,64]", SDXL_STATUS_BAD_INPUT,
         "block_out_channels", "9 entries"},
        {"unet/config.json", "block_out_channels", NULL, SDXL_STATUS_BAD_INPUT, "block_out_channels",
         "got nothing"},
        {"unet/config.json", "down_block_types", "[\"DownBlock2D\",\"CrossAttnDownBlock2D\",\"DownBlock2D\"]",
         SDXL_STATUS_BAD_INPUT, "down_block_types", "list of 2"},
        {"unet/config.json", "down_block_types", "[\"DownBlock2D\",\"AttnDownBlock2D\"]",
         SDXL_STATUS_UNSUPPORTED, "down_block_types", "AttnDownBlock2D"},
        {"unet/config.json", "up_block_types", "[\"CrossAttnUpBlock2D\", 7]", SDXL_STATUS_BAD_INPUT,
         "up_block_types", "entry 1"},
        {"unet/config.json", "norm_num_groups", "7", SDXL_STATUS_BAD_INPUT, "norm_num_groups 7",
         "block_out_channels[0]"},
        {"unet/config.json", "addition_embed_type", "null", SDXL_STATUS_UNSUPPORTED, "addition_embed_type",
         "text_time"},
        {"unet/config.json", "transformer_layers_per_block", "[1, 2, 3]", SDXL_STATUS_BAD_INPUT,
         "transformer_layers_per_block", "3 entries"},
        {"unet/config.json", "transformer_layers_per_block", "[[1], [2, 3]]", SDXL_STATUS_UNSUPPORTED,
         "transformer_layers_per_block", "per layer"},
        {"unet/config.json", "transformer_layers_per_block", "1000", SDXL_STATUS_BAD_INPUT,
         "transformer_layers_per_block", "[1, 64]"},
        {"unet/config.json", "attention_head_dim", "[2, 5]", SDXL_STATUS_BAD_INPUT, "5 heads", "64 channels"},
        {"unet/config.json", "layers_per_block", "1.5", SDXL_STATUS_BAD_INPUT, "layers_per_block", "1.5"},
        {"unet/config.json", "layers_per_block", "true", SDXL_STATUS_BAD_INPUT, "layers_per_block",
         "a boolean"},
        {"unet/config.json", "cross_attention_dim", "65", SDXL_STATUS_BAD_INPUT, "cross_attention_dim 65",
         "32 + 32"},
        {"unet/config.json", "projection_class_embeddings_input_dim", "81", SDXL_STATUS_BAD_INPUT,
         "projection_class_embeddings_input_dim 81", "6 time ids"},
        {"unet/config.json", "addition_time_embed_dim", NULL, SDXL_STATUS_BAD_INPUT,
         "addition_time_embed_dim", "missing"},
        {"unet/config.json", "class_embed_type", "\"timestep\"", SDXL_STATUS_UNSUPPORTED, "class_embed_type",
         "timestep"},
        {"unet/config.json", "resnet_time_scale_shift", "\"scale_shift\"", SDXL_STATUS_UNSUPPORTED,
         "resnet_time_scale_shift", "scale_shift"},
        {"unet/config.json", "norm_eps", "0", SDXL_STATUS_BAD_INPUT, "norm_eps", "outside"},
        {"unet/config.json", "in_channels", "5", SDXL_STATUS_BAD_INPUT, "in/out channels 5/4",
         "latent_channels 4"},
        {"unet/config.json", "_class_name", "\"UNet2DModel\"", SDXL_STATUS_UNSUPPORTED, "_class_name",
         "UNet2DModel"},
        {"vae/config.json", "latent_channels", "0", SDXL_STATUS_BAD_INPUT, "vae/config.json",
         "latent_channels"},
        {"vae/config.json", "scaling_factor", "\"x\"", SDXL_STATUS_BAD_INPUT, "scaling_factor", "a string"},
        {"vae/config.json", "latents_mean", "[0.1, 0.2, 0.3, 0.4]", SDXL_STATUS_BAD_INPUT, "latents_std",
         "together"},
        {"vae/config.json", "up_block_types", "[\"UpDecoderBlock2D\"]", SDXL_STATUS_BAD_INPUT,
         "up_block_types", "list of 2"},
        {"text_encoder/config.json", "hidden_act", "\"relu\"", SDXL_STATUS_UNSUPPORTED,
         "text_encoder/config.json", "\"hidden_act\""},
        {"text_encoder/config.json", "num_hidden_layers", "1e9", SDXL_STATUS_BAD_INPUT, "num_hidden_layers",
         "[1, 128]"},
        {"text_encoder/config.json", "hidden_size", "[32]", SDXL_STATUS_BAD_INPUT, "hidden_size", "a list"},
        {"text_encoder_2/config.json", "num_attention_heads", "5", SDXL_STATUS_BAD_INPUT, "text encoder 2",
         "5 heads"},
        {"text_encoder_2/config.json", "vocab_size", "2000000000", SDXL_STATUS_BAD_INPUT, "vocab_size",
         "[1, 1048576]"},
        {"model_index.json", "text_encoder", "[null, null]", SDXL_STATUS_UNSUPPORTED, "model_index.json",
         "refiner"},
        {"model_index.json", "_class_name", "\"StableDiffusionPipeline\"", SDXL_STATUS_UNSUPPORTED,
         "_class_name", "StableDiffusionPipeline"},
        {"model_index.json", "_class_name", NULL, SDXL_STATUS_BAD_INPUT, "_class_name",
         "not a diffusers pipeline"},
        {"model_index.json", "unet", "[\"diffusers\", \"UNet2DModel\"]", SDXL_STATUS_UNSUPPORTED, "\"unet\"",
         "UNet2DModel"},
        {"model_index.json", "force_zeros_for_empty_prompt", "\"yes\"", SDXL_STATUS_BAD_INPUT,
         "force_zeros_for_empty_prompt", "true or false"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_case *c = &cases[i];
        char name[32];
        snprintf(name, sizeof name, "cfg_bad_%zu", i);
        const char *dir = cfg_dir(name, c->file, c->field, c->value);
        REQUIRE(dir);
        sdxl_model_config cfg;
        sdxl_error err = {0};
        sdxl_status st = sdxl_model_config_load_diffusers(dir, &cfg, &err);
        CHECK_MSG(st == c->st, "case %zu (%s %s): status %d, expected %d: %s", i, c->file, c->field, st,
                  c->st, err.msg);
        CHECK_MSG(strstr(err.msg, c->msg1) && strstr(err.msg, c->msg2),
                  "case %zu: message \"%s\" lacks \"%s\"/\"%s\"", i, err.msg, c->msg1, c->msg2);
        CHECK(cfg.scheduler_json == NULL && cfg.unet.num_levels == 0);
    }
    /* an unchanged copy loads */
    const char *dir = cfg_dir("cfg_good", NULL, NULL, NULL);
    sdxl_model_config cfg;
    sdxl_error err = {0};
    REQUIRE_ST(sdxl_model_config_load_diffusers(dir, &cfg, &err), &err);
    sdxl_model_config_clear(&cfg);
}

TEST(config_hostile_files) {
    sdxl_model_config cfg;
    sdxl_error err = {0};
    char path[1200];
    /* broken JSON: names file, line and column */
    const char *dir = cfg_dir("cfg_broken", NULL, NULL, NULL);
    snprintf(path, sizeof path, "%s/vae/config.json", dir);
    REQUIRE(spit(path, "{\n  \"block_out_channels\": [32, 64\n}\n"));
    CHECK(sdxl_model_config_load_diffusers(dir, &cfg, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK(strstr(err.msg, "vae/config.json") && strstr(err.msg, "malformed JSON near line 3"));
    REQUIRE(spit(path, "[1, 2]"));
    CHECK(sdxl_model_config_load_diffusers(dir, &cfg, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK(strstr(err.msg, "JSON object"));
    REQUIRE(spit(path, ""));
    CHECK(sdxl_model_config_load_diffusers(dir, &cfg, &err) == SDXL_STATUS_BAD_INPUT);
    /* missing component config */
    unlink(path);
    CHECK(sdxl_model_config_load_diffusers(dir, &cfg, &err) == SDXL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "vae/config.json") && strstr(err.msg, "missing"));
    /* missing model_index.json */
    dir = cfg_dir("cfg_noindex", NULL, NULL, NULL);
    snprintf(path, sizeof path, "%s/model_index.json", dir);
    unlink(path);
    CHECK(sdxl_model_config_load_diffusers(dir, &cfg, &err) == SDXL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "model_index.json is missing") != NULL);
    /* a folder that is not a model at all */
    snprintf(path, sizeof path, "%s/cfg_empty", sdxl_test_tmpdir());
    mkdir(path, 0700);
    CHECK(sdxl_model_config_load_diffusers(path, &cfg, &err) == SDXL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "not a diffusers model folder") != NULL);
    snprintf(path, sizeof path, "%s/cfg_nothing_here", sdxl_test_tmpdir());
    CHECK(sdxl_model_config_load_diffusers(path, &cfg, &err) == SDXL_STATUS_NOT_FOUND);
    CHECK(sdxl_model_config_load_diffusers(sdxl_test_data("refs/tiny-sdxl/model_index.json"), &cfg, &err) ==
          SDXL_STATUS_INVALID_ARG);
    /* a missing scheduler falls back to SDXL's */
    dir = cfg_dir("cfg_nosched", NULL, NULL, NULL);
    snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", dir);
    unlink(path);
    REQUIRE_ST(sdxl_model_config_load_diffusers(dir, &cfg, &err), &err);
    CHECK(cfg.scheduler_is_default && strstr(cfg.scheduler_json, "\"steps_offset\": 1"));
    sdxl_model_config_clear(&cfg);
    /* the default scheduler text is valid JSON */
    cJSON *j = cJSON_Parse(sdxl_model_config_default_scheduler_json());
    CHECK(j != NULL);
    cJSON_Delete(j);
}

TEST(config_component_parsers) {
    sdxl_error err = {0};
    sdxl_te_config t;
    const char *j =
        "{\"hidden_size\": 768, \"num_attention_heads\": 12, \"hidden_act\": \"gelu_pytorch_tanh\","
        " \"eos_token_id\": 49407}";
    REQUIRE_ST(sdxl_te_config_parse_json(j, strlen(j), "x", false, &t, &err), &err);
    CHECK(t.hidden_act == SDXL_ACT_GELU_TANH);
    CHECK(!t.legacy_pooling); /* eos != 2: first-eos pooling */
    CHECK_EQ_INT(t.num_layers, 12);
    CHECK_EQ_INT(t.intermediate_size, 2048);
    sdxl_unet_config u;
    j = "{\"block_out_channels\": [32], \"down_block_types\": [\"CrossAttnDownBlock2D\"],"
        "\"up_block_types\": [\"CrossAttnUpBlock2D\"], \"addition_embed_type\": \"text_time\","
        "\"addition_time_embed_dim\": 4, \"projection_class_embeddings_input_dim\": 40,"
        "\"num_attention_heads\": 8, \"attention_head_dim\": 3, \"transformer_layers_per_block\": [[2, 2]]}";
    REQUIRE_ST(sdxl_unet_config_parse_json(j, strlen(j), "u", &u, &err), &err);
    CHECK_EQ_INT(u.down_num_heads[0], 8); /* num_attention_heads wins over attention_head_dim */
    CHECK_EQ_INT(u.down_transformer_layers[0], 2);
    CHECK_EQ_INT(u.mid_transformer_layers, 2);
    CHECK_EQ_INT(u.time_embed_dim, 128);
    j = "{\"block_out_channels\": [32, 64], \"down_block_types\": [\"DownBlock2D\", "
        "\"CrossAttnDownBlock2D\"],"
        "\"up_block_types\": [\"CrossAttnUpBlock2D\", \"UpBlock2D\"], \"addition_embed_type\": \"text_time\","
        "\"addition_time_embed_dim\": 4, \"projection_class_embeddings_input_dim\": 40,"
        "\"transformer_layers_per_block\": [1, 3], \"reverse_transformer_layers_per_block\": [[5], [1]]}";
    REQUIRE_ST(sdxl_unet_config_parse_json(j, strlen(j), "u", &u, &err), &err);
    CHECK_EQ_INT(u.up_transformer_layers[0], 5);
    CHECK_EQ_INT(u.up_transformer_layers[1], 0);
    CHECK_EQ_INT(u.mid_transformer_layers, 3);
    sdxl_vae_config v;
    j = "{\"block_out_channels\": [32], \"latent_channels\": 2, \"latents_mean\": [0.5, -1],"
        "\"latents_std\": [2, 3], \"shift_factor\": 0.1159}";
    REQUIRE_ST(sdxl_vae_config_parse_json(j, strlen(j), "v", &v, &err), &err);
    CHECK(v.has_latents_mean_std && v.latents_std[1] == 3 && v.has_shift_factor);
    CHECK_NEAR(v.scaling_factor, 0.18215, 0); /* diffusers' default when absent */
    j = "{\"block_out_channels\": [32], \"latent_channels\": 2, \"latents_mean\": [0.5, -1], "
        "\"latents_std\": [2, 0]}";
    CHECK(sdxl_vae_config_parse_json(j, strlen(j), "v", &v, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK(strstr(err.msg, "latents_std") != NULL);
    CHECK(sdxl_vae_config_parse_json(NULL, 0, "v", &v, &err) == SDXL_STATUS_INVALID_ARG);
    sdxl_act a;
    CHECK(sdxl_act_from_name("quick_gelu", &a) && a == SDXL_ACT_QUICK_GELU);
    CHECK(!sdxl_act_from_name("relu", &a));
    CHECK(strcmp(sdxl_act_name(SDXL_ACT_GELU_TANH), "gelu_tanh") == 0);
}

TEST(config_hints) {
    sdxl_error err = {0};
    sdxl_model_config c;
    REQUIRE_ST(sdxl_model_config_load_diffusers(sdxl_test_data("refs/tiny-sdxl"), &c, &err), &err);
    const char *ok[] = {"te1.hidden_act",
                        "quick_gelu",
                        "unet.num_heads",
                        "1,2",
                        "scaling_factor",
                        "0.5",
                        "te2.num_attention_heads",
                        "8",
                        "force_zeros_for_empty_prompt",
                        "false",
                        NULL};
    REQUIRE_ST(sdxl_model_config_apply_hints(&c, ok, &err), &err);
    CHECK(c.te[0].hidden_act == SDXL_ACT_QUICK_GELU);
    CHECK_EQ_INT(c.unet.down_num_heads[1], 2);
    CHECK_EQ_INT(c.unet.up_num_heads[0], 2);
    CHECK_EQ_INT(c.unet.mid_num_heads, 2);
    CHECK_NEAR(c.vae.scaling_factor, 0.5, 0);
    CHECK_EQ_INT(c.te[1].num_heads, 8);
    CHECK(!c.pipeline.force_zeros_for_empty_prompt);
    const char *hc[] = {"unet.num_head_channels", "16", NULL};
    REQUIRE_ST(sdxl_model_config_apply_hints(&c, hc, &err), &err);
    CHECK_EQ_INT(c.unet.down_num_heads[1], 4);
    const char *bad1[] = {"te3.hidden_act", "gelu", NULL};
    CHECK(sdxl_model_config_apply_hints(&c, bad1, &err) == SDXL_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "unknown hint \"te3.hidden_act\"") != NULL);
    const char *bad2[] = {"te1.hidden_act", "silu", NULL};
    CHECK(sdxl_model_config_apply_hints(&c, bad2, &err) == SDXL_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "te1.hidden_act") != NULL);
    const char *bad3[] = {"unet.num_heads", "1,2,3", NULL};
    CHECK(sdxl_model_config_apply_hints(&c, bad3, &err) == SDXL_STATUS_INVALID_ARG);
    CHECK(strstr(err.msg, "3 values") != NULL);
    const char *bad4[] = {"scaling_factor", "-1", NULL};
    CHECK(sdxl_model_config_apply_hints(&c, bad4, &err) == SDXL_STATUS_INVALID_ARG);
    const char *bad5[] = {"te2.num_attention_heads", "5", NULL}; /* valid value, invalid model */
    CHECK(sdxl_model_config_apply_hints(&c, bad5, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK(strstr(err.msg, "5 heads") != NULL);
    const char *bad6[] = {"te1.hidden_state_index", NULL};
    CHECK(sdxl_model_config_apply_hints(&c, bad6, &err) == SDXL_STATUS_INVALID_ARG);
    sdxl_model_config_clear(&c);

    char buf[64];
    CHECK(sdxl_model_config_sidecar_path("/a/b.c/model.safetensors", buf, sizeof buf) &&
          strcmp(buf, "/a/b.c/model.yaml") == 0);
    CHECK(sdxl_model_config_sidecar_path("/a/b.c/model", buf, sizeof buf) &&
          strcmp(buf, "/a/b.c/model.yaml") == 0);
    CHECK(sdxl_model_config_sidecar_path("x.safetensors", buf, sizeof buf) && strcmp(buf, "x.yaml") == 0);
    CHECK(!sdxl_model_config_sidecar_path("/a/very/long/path/to/a/checkpoint/that/does/not/fit.safetensors",
                                          buf, 16));
}

static const char yaml_text[] = "# an SGM-style config\n"
                                "model:\n"
                                "  target: sgm.models.diffusion.DiffusionEngine\n"
                                "  params:\n"
                                "    scale_factor: 0.13025   # trailing comment\n"
                                "    network_config:\n"
                                "      params:\n"
                                "        channel_mult: [1, 2, 4]\n"
                                "        transformer_depth:\n"
                                "        - 0\n"
                                "        - 2\n"
                                "        name: \"quoted # not a comment\"\n"
                                "        other: 'it''s'\n"
                                "        flow_map: {a: 1}\n"
                                "    conditioner_config:\n"
                                "      params:\n"
                                "        emb_models:\n"
                                "          - input_key: txt\n"
                                "            target: a.FrozenCLIPEmbedder\n"
                                "            params:\n"
                                "              layer: hidden\n"
                                "              layer_idx: 11\n"
                                "          - input_key: txt2\n"
                                "            target: b\n"
                                "        empty:\n"
                                "    script: |\n"
                                "      line one\n"
                                "      line: two\n"
                                "    after: 1\n"
                                "---\n"
                                "second: document\n";

TEST(config_yaml_reader) {
    sdxl_error err = {0};
    sdxl__yaml *y = NULL;
    REQUIRE_ST(sdxl__yaml_parse(yaml_text, strlen(yaml_text), "t.yaml", &y, &err), &err);
    int line = 0;
    const char *v = sdxl__yaml_get(y, "model.params.scale_factor", &line);
    CHECK(v && strcmp(v, "0.13025") == 0 && line == 5);
    v = sdxl__yaml_get(y, "model.target", NULL);
    CHECK(v && strcmp(v, "sgm.models.diffusion.DiffusionEngine") == 0);
    CHECK_EQ_INT(sdxl__yaml_seq_len(y, "model.params.network_config.params.channel_mult"), 3);
    v = sdxl__yaml_get(y, "model.params.network_config.params.channel_mult.2", NULL);
    CHECK(v && strcmp(v, "4") == 0);
    CHECK_EQ_INT(sdxl__yaml_seq_len(y, "model.params.network_config.params.transformer_depth"), 2);
    v = sdxl__yaml_get(y, "model.params.network_config.params.transformer_depth.1", NULL);
    CHECK(v && strcmp(v, "2") == 0);
    v = sdxl__yaml_get(y, "model.params.network_config.params.name", NULL);
    CHECK(v && strcmp(v, "quoted # not a comment") == 0);
    v = sdxl__yaml_get(y, "model.params.network_config.params.other", NULL);
    CHECK(v && strcmp(v, "it's") == 0);
    CHECK(sdxl__yaml_get(y, "model.params.network_config.params.flow_map", NULL) == NULL); /* a mapping */
    v = sdxl__yaml_get(y, "model.params.network_config.params.flow_map.a", NULL);
    CHECK(v && strcmp(v, "1") == 0);
    CHECK_EQ_INT(sdxl__yaml_seq_len(y, "model.params.conditioner_config.params.emb_models"), 2);
    v = sdxl__yaml_getf(y, NULL, "model.params.conditioner_config.params.emb_models.%d.params.layer_idx", 0);
    CHECK(v && strcmp(v, "11") == 0);
    v = sdxl__yaml_get(y, "model.params.conditioner_config.params.emb_models.1.target", NULL);
    CHECK(v && strcmp(v, "b") == 0);
    v = sdxl__yaml_get(y, "model.params.conditioner_config.params.empty", NULL);
    CHECK(v && strcmp(v, "") == 0);
    CHECK(sdxl__yaml_get(y, "model.params.script.line", NULL) == NULL);
    v = sdxl__yaml_get(y, "model.params.after", NULL);
    CHECK(v && strcmp(v, "1") == 0);
    CHECK(sdxl__yaml_get(y, "second", NULL) == NULL); /* only the first document */
    CHECK(sdxl__yaml_get(y, "model.params", NULL) == NULL);
    CHECK(sdxl__yaml_count(y) > 10);
    sdxl__yaml_free(y);
    sdxl__yaml_free(NULL);

    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"a:\n\tb: 1\n", "line 2: tab"},
        {"a: 1\n  b: 2\n", "line 2: bad indentation"},
        {"- x\na: 1\n", "line 2: expected a '- '"},
        {"just a line\n", "line 1: expected 'key: value'"},
        {"a:\n  - x\n  b: 1\n", "line 3"},
        {"a: 1\nb\0: 2\n", "NUL"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = strlen(bad[i].text);
        if (i == 5) len = 12;
        y = (sdxl__yaml *)1;
        CHECK(sdxl__yaml_parse(bad[i].text, len, "bad.yaml", &y, &err) == SDXL_STATUS_BAD_INPUT);
        CHECK(y == NULL);
        CHECK_MSG(strstr(err.msg, "bad.yaml") && strstr(err.msg, bad[i].msg), "case %zu: %s", i, err.msg);
    }
    CHECK(sdxl__yaml_load("/nonexistent/x.yaml", &y, &err) == SDXL_STATUS_NOT_FOUND);
    const char bom[] = "\xEF\xBB\xBF"
                       "a:\r\n  b: [x, 'y, z']\r\n";
    REQUIRE_ST(sdxl__yaml_parse(bom, strlen(bom), "bom.yaml", &y, &err), &err);
    v = sdxl__yaml_get(y, "a.b.1", NULL);
    CHECK(v && strcmp(v, "y, z") == 0);
    sdxl__yaml_free(y);
}

TEST(config_alloc_failures) {
    sdxl_mem_stats s0, s1;
    sdxl_mem_get_stats(&s0);
    int fails = 0;
    for (int64_t k = 1; k < 1000; k++) {
        sdxl__alloc_fail_at(k);
        sdxl_model_config c;
        sdxl_error err = {0};
        sdxl_status st = sdxl_model_config_load_diffusers(sdxl_test_data("refs/tiny-sdxl"), &c, &err);
        sdxl__yaml *y = NULL;
        sdxl_status st2 = SDXL_STATUS_OK;
        if (!st) st2 = sdxl__yaml_parse(yaml_text, strlen(yaml_text), "t.yaml", &y, &err);
        sdxl__alloc_fail_at(0);
        sdxl__yaml_free(y);
        sdxl_model_config_clear(&c);
        if (st == SDXL_STATUS_OK && st2 == SDXL_STATUS_OK) break;
        fails++;
        CHECK_MSG((st ? st : st2) == SDXL_STATUS_OUT_OF_MEMORY, "alloc %lld: %s", (long long)k, err.msg);
        sdxl_mem_get_stats(&s1);
        CHECK_MSG(s1.live_bytes == s0.live_bytes, "alloc %lld: leaked %lld bytes", (long long)k,
                  (long long)(s1.live_bytes - s0.live_bytes));
    }
    CHECK(fails > 10);
}
