/* Tests of model/naming: the expected tensor set of a config and its
 * diffusers / SGM / kohya aliases.
 *   - tiny reference model: the expected set equals, name for name and
 *     shape for shape, the tensors of the diffusers files (428/124/84/85);
 *   - full-size SDXL base: the expected set equals both key lists of
 *     tests/data/refs/sdxl-base-keys-{diffusers,sgm}.tsv (2641 / 2513 keys,
 *     with shapes), from a config written here field by field;
 *   - all 1052 kohya modules of sdxl-lora-keys-kohya.tsv resolve, in both
 *     spellings and by SGM path, to the module the TSV names, with its shape;
 *   - lookups, kinds, allocation failure. */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/naming.h"
#include "test.h"

#define REQUIRE_ST(expr, errp)                                                                               \
    do {                                                                                                     \
        sdxl_error *ep_ = (errp);                                                                            \
        REQUIRE_OK(expr, ep_);                                                                               \
    } while (0)

/* SDXL base 1.0, stated independently of the JSON parser and the
 * single-file inference. */
static void sdxl_base_config(sdxl_model_config *c) {
    memset(c, 0, sizeof *c);
    sdxl_unet_config *u = &c->unet;
    u->in_channels = u->out_channels = 4;
    u->num_levels = 3;
    int boc[3] = {320, 640, 1280}, heads[3] = {5, 10, 20}, depth[3] = {0, 2, 10};
    for (int l = 0; l < 3; l++) {
        u->block_out_channels[l] = boc[l];
        u->down_has_attn[l] = l > 0;
        u->down_transformer_layers[l] = depth[l];
        u->down_num_heads[l] = heads[l];
        u->up_has_attn[l] = l < 2;
        u->up_transformer_layers[l] = depth[2 - l];
        u->up_num_heads[l] = heads[2 - l];
    }
    u->layers_per_block = 2;
    u->mid_transformer_layers = 10;
    u->mid_num_heads = 20;
    u->cross_attention_dim = 2048;
    u->use_linear_projection = true;
    u->ff_mult = 4;
    u->time_proj_dim = 320;
    u->time_embed_dim = 1280;
    u->flip_sin_to_cos = true;
    u->addition_time_embed_dim = 256;
    u->num_time_ids = 6;
    u->projection_class_embeddings_input_dim = 2816;
    u->norm_num_groups = 32;
    u->norm_eps = 1e-5;
    u->conv_in_kernel = u->conv_out_kernel = 3;
    u->act_fn = SDXL_ACT_SILU;
    u->sample_size = 128;
    sdxl_vae_config *v = &c->vae;
    v->in_channels = v->out_channels = 3;
    v->latent_channels = 4;
    v->num_levels = 4;
    int vb[4] = {128, 256, 512, 512};
    memcpy(v->block_out_channels, vb, sizeof vb);
    v->layers_per_block = 2;
    v->norm_num_groups = 32;
    v->norm_eps = 1e-6;
    v->scaling_factor = 0.13025;
    v->force_upcast = true;
    v->mid_block_add_attention = true;
    v->act_fn = SDXL_ACT_SILU;
    v->sample_size = 1024;
    int hid[2] = {768, 1280}, lay[2] = {12, 32}, hd[2] = {12, 20};
    for (int k = 0; k < 2; k++) {
        sdxl_te_config *t = &c->te[k];
        t->hidden_size = hid[k];
        t->intermediate_size = 4 * hid[k];
        t->num_layers = lay[k];
        t->num_heads = hd[k];
        t->max_position_embeddings = 77;
        t->vocab_size = 49408;
        t->hidden_act = k ? SDXL_ACT_GELU : SDXL_ACT_QUICK_GELU;
        t->layer_norm_eps = 1e-5;
        t->projection_dim = k ? 1280 : 768;
        t->with_projection = k == 1;
        t->eos_token_id = 2;
        t->pad_token_id = 1;
        t->legacy_pooling = true;
        t->hidden_state_index = lay[k] - 1;
    }
    c->pipeline.force_zeros_for_empty_prompt = true;
}

/* ---- TSV reading ---------------------------------------------------------- */

typedef struct {
    char *buf;
    char **rows; /* each row: fields separated by '\0' after splitting */
    char ***fields;
    int *nf;
    int n;
} tsv;

static bool tsv_load(const char *path, tsv *t) {
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    t->buf = malloc((size_t)len + 1);
    if (fread(t->buf, 1, (size_t)len, f) != (size_t)len) len = 0;
    fclose(f);
    t->buf[len] = 0;
    int lines = 0;
    for (long i = 0; i < len; i++)
        lines += t->buf[i] == '\n';
    t->fields = calloc((size_t)lines + 1, sizeof *t->fields);
    t->nf = calloc((size_t)lines + 1, sizeof *t->nf);
    char *save = NULL;
    bool header = true;
    for (char *line = strtok_r(t->buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (header) {
            header = false;
            continue;
        }
        char **fs = calloc(8, sizeof *fs);
        int k = 0;
        fs[k++] = line;
        for (char *p = line; *p && k < 8; p++) {
            if (*p == '\t') {
                *p = 0;
                fs[k++] = p + 1;
            }
        }
        t->fields[t->n] = fs;
        t->nf[t->n++] = k;
    }
    return true;
}

static void tsv_free(tsv *t) {
    for (int i = 0; i < t->n; i++)
        free(t->fields[i]);
    free(t->fields);
    free(t->nf);
    free(t->buf);
}

/* "[1280,2816]" -> dims */
static int parse_shape(const char *s, int64_t *d) {
    int n = 0;
    if (*s == '[') s++;
    while (*s && *s != ']' && n < 8) {
        d[n++] = strtoll(s, (char **)&s, 10);
        while (*s == ',' || *s == ' ')
            s++;
    }
    return n;
}

static bool same_shape(int n1, const int64_t *a, int n2, const int64_t *b) {
    if (n1 != n2) return false;
    for (int i = 0; i < n1; i++)
        if (a[i] != b[i]) return false;
    return true;
}

/* ---- tests ------------------------------------------------------------------ */

TEST(naming_tiny_matches_diffusers_files) {
    sdxl_error err = {0};
    sdxl_model_config cfg;
    REQUIRE_ST(sdxl_model_config_load_diffusers(sdxl_test_data("refs/tiny-sdxl"), &cfg, &err), &err);
    sdxl_naming *n = NULL;
    REQUIRE_ST(sdxl_naming_create(&cfg, &n, &err), &err);
    CHECK_EQ_INT(sdxl_naming_count_component(n, SDXL_COMP_UNET), 428);
    CHECK_EQ_INT(sdxl_naming_count_component(n, SDXL_COMP_VAE), 124);
    CHECK_EQ_INT(sdxl_naming_count_component(n, SDXL_COMP_TE1), 84);
    CHECK_EQ_INT(sdxl_naming_count_component(n, SDXL_COMP_TE2), 85);
    CHECK_EQ_INT(sdxl_naming_count(n), 428 + 124 + 84 + 85);
    static const char *const files[4] = {"refs/tiny-sdxl/unet/diffusion_pytorch_model.safetensors",
                                         "refs/tiny-sdxl/vae/diffusion_pytorch_model.safetensors",
                                         "refs/tiny-sdxl/text_encoder/model.safetensors",
                                         "refs/tiny-sdxl/text_encoder_2/model.safetensors"};
    for (int c = 0; c < 4; c++) {
        sdxl_st_file *f = NULL;
        REQUIRE_ST(sdxl_st_open(sdxl_test_data(files[c]), &f, &err), &err);
        size_t matched = 0;
        for (size_t i = 0; i < sdxl_st_count(f); i++) {
            const sdxl_st_tensor *t = sdxl_st_at(f, i);
            const sdxl_name_entry *e =
                sdxl_naming_find_source(n, SDXL_LAYOUT_DIFFUSERS, (sdxl_component)c, t->name);
            CHECK_MSG(e != NULL, "%s: %s not in the expected set", files[c], t->name);
            if (!e) continue;
            CHECK(e->comp == (sdxl_component)c);
            CHECK_MSG(same_shape(t->ndim, t->shape, e->ndim, e->shape), "%s: shape differs", e->name);
            CHECK(strcmp(e->src[SDXL_LAYOUT_DIFFUSERS].key, t->name) == 0);
            matched++;
        }
        CHECK_EQ_INT(matched, sdxl_naming_count_component(n, (sdxl_component)c));
        sdxl_st_close(f);
    }
    sdxl_naming_free(n);
    sdxl_model_config_clear(&cfg);
}

TEST(naming_sdxl_base_matches_diffusers_keys) {
    sdxl_model_config cfg;
    sdxl_base_config(&cfg);
    sdxl_error err = {0};
    sdxl_naming *n = NULL;
    REQUIRE_ST(sdxl_naming_create(&cfg, &n, &err), &err);
    tsv t;
    REQUIRE(tsv_load(sdxl_test_data("refs/sdxl-base-keys-diffusers.tsv"), &t));
    CHECK_EQ_INT(t.n, 2641);
    CHECK_EQ_INT(sdxl_naming_count(n), 2641);
    int found = 0;
    for (int i = 0; i < t.n; i++) {
        const char *file = t.fields[i][0], *key = t.fields[i][1];
        sdxl_component c = !strncmp(file, "unet/", 5)            ? SDXL_COMP_UNET
                           : !strncmp(file, "vae/", 4)           ? SDXL_COMP_VAE
                           : !strncmp(file, "text_encoder/", 13) ? SDXL_COMP_TE1
                                                                 : SDXL_COMP_TE2;
        const sdxl_name_entry *e = sdxl_naming_find_source(n, SDXL_LAYOUT_DIFFUSERS, c, key);
        CHECK_MSG(e != NULL, "%s %s: not expected", file, key);
        if (!e) continue;
        int64_t d[8];
        int nd = parse_shape(t.fields[i][2], d);
        CHECK_MSG(same_shape(nd, d, e->ndim, e->shape), "%s: shape %s differs", e->name, t.fields[i][2]);
        found++;
    }
    CHECK_EQ_INT(found, 2641);
    CHECK_EQ_INT(sdxl_naming_count_component(n, SDXL_COMP_UNET), 1680);
    CHECK_EQ_INT(sdxl_naming_count_component(n, SDXL_COMP_VAE), 248);
    CHECK_EQ_INT(sdxl_naming_count_component(n, SDXL_COMP_TE1), 196);
    CHECK_EQ_INT(sdxl_naming_count_component(n, SDXL_COMP_TE2), 517);
    tsv_free(&t);
    sdxl_naming_free(n);
}

TEST(naming_sdxl_base_matches_sgm_keys) {
    sdxl_model_config cfg;
    sdxl_base_config(&cfg);
    sdxl_error err = {0};
    sdxl_naming *n = NULL;
    REQUIRE_ST(sdxl_naming_create(&cfg, &n, &err), &err);
    tsv t;
    REQUIRE(tsv_load(sdxl_test_data("refs/sdxl-base-keys-sgm.tsv"), &t));
    CHECK_EQ_INT(t.n, 2513);
    int found = 0;
    for (int i = 0; i < t.n; i++) {
        const char *key = t.fields[i][0];
        const sdxl_name_entry *e = sdxl_naming_find_source(n, SDXL_LAYOUT_SGM, SDXL_COMP_UNET, key);
        CHECK_MSG(e != NULL, "%s: not expected", key);
        if (!e) continue;
        const sdxl_name_source *s = &e->src[SDXL_LAYOUT_SGM];
        int64_t d[8];
        int nd = parse_shape(t.fields[i][1], d);
        CHECK_MSG(same_shape(nd, d, s->ndim, s->shape), "%s: shape %s differs", key, t.fields[i][1]);
        found++;
    }
    CHECK_EQ_INT(found, 2513);
    /* and nothing else: the unique SGM keys of the naming are exactly these */
    int unique = 0;
    for (size_t i = 0; i < sdxl_naming_count(n); i++) {
        const sdxl_name_entry *e = sdxl_naming_at(n, i);
        if (sdxl_naming_find_source(n, SDXL_LAYOUT_SGM, 0, e->src[SDXL_LAYOUT_SGM].key) == e) unique++;
    }
    CHECK_EQ_INT(unique, 2513);
    /* spot checks of the rules */
    const sdxl_name_entry *e =
        sdxl_naming_find(n, "te2.text_model.encoder.layers.31.self_attn.v_proj.weight");
    REQUIRE(e);
    CHECK(strcmp(e->src[SDXL_LAYOUT_SGM].key,
                 "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight") == 0);
    CHECK(e->src[SDXL_LAYOUT_SGM].xform == SDXL_XFORM_ROWS);
    CHECK_EQ_INT(e->src[SDXL_LAYOUT_SGM].row_begin, 2560);
    CHECK_EQ_INT(e->src[SDXL_LAYOUT_SGM].row_end, 3840);
    e = sdxl_naming_find(n, "te2.text_projection.weight");
    REQUIRE(e);
    CHECK(e->src[SDXL_LAYOUT_SGM].xform == SDXL_XFORM_TRANSPOSE);
    e = sdxl_naming_find(n, "vae.decoder.up_blocks.0.upsamplers.0.conv.weight");
    REQUIRE(e);
    CHECK(strcmp(e->src[SDXL_LAYOUT_SGM].key, "first_stage_model.decoder.up.3.upsample.conv.weight") == 0);
    e = sdxl_naming_find(n, "vae.encoder.mid_block.attentions.0.to_out.0.weight");
    REQUIRE(e);
    CHECK(strcmp(e->src[SDXL_LAYOUT_SGM].key, "first_stage_model.encoder.mid.attn_1.proj_out.weight") == 0);
    CHECK(e->src[SDXL_LAYOUT_SGM].xform == SDXL_XFORM_RESHAPE);
    CHECK_EQ_INT(e->src[SDXL_LAYOUT_SGM].ndim, 4);
    e = sdxl_naming_find(n, "unet.up_blocks.2.resnets.2.conv_shortcut.weight");
    REQUIRE(e);
    CHECK(strcmp(e->src[SDXL_LAYOUT_SGM].key,
                 "model.diffusion_model.output_blocks.8.0.skip_connection.weight") == 0);
    CHECK_EQ_INT(e->shape[1], 640); /* 320 + skip 320 */
    tsv_free(&t);
    sdxl_naming_free(n);
}

TEST(naming_kohya_all_modules) {
    sdxl_model_config cfg;
    sdxl_base_config(&cfg);
    sdxl_error err = {0};
    sdxl_naming *n = NULL;
    REQUIRE_ST(sdxl_naming_create(&cfg, &n, &err), &err);
    tsv t;
    REQUIRE(tsv_load(sdxl_test_data("refs/sdxl-lora-keys-kohya.tsv"), &t));
    CHECK_EQ_INT(t.n, 1052);
    int ok = 0, unet = 0;
    for (int i = 0; i < t.n; i++) {
        if (t.nf[i] < 6) {
            CHECK_MSG(false, "row %d: %d fields", i, t.nf[i]);
            continue;
        }
        const char *kohya = t.fields[i][0], *comp = t.fields[i][1], *dmod = t.fields[i][2],
                   *smod = t.fields[i][3];
        const char *prefix = !strcmp(comp, "unet") ? "unet" : !strcmp(comp, "text_encoder") ? "te1" : "te2";
        char path[512], flat[512];
        snprintf(path, sizeof path, "%s.%s", prefix, dmod);
        const sdxl_name_module *m = sdxl_naming_module_by_kohya(n, kohya);
        CHECK_MSG(m != NULL, "%s: no module", kohya);
        if (!m) continue;
        CHECK_MSG(strcmp(m->path, path) == 0, "%s -> %s, expected %s", kohya, m->path, path);
        CHECK(sdxl_naming_module(n, path) == m);
        /* the diffusers-style spelling */
        snprintf(flat, sizeof flat, "lora_%s_%s", !strcmp(prefix, "unet") ? "unet" : prefix, dmod);
        for (char *p = flat; *p; p++)
            if (*p == '.') *p = '_';
        CHECK_MSG(sdxl_naming_module_by_kohya(n, flat) == m, "%s: diffusers spelling %s", kohya, flat);
        if (!strcmp(comp, "unet")) {
            unet++;
            CHECK_MSG(sdxl_naming_module_by_sgm(n, smod) == m, "%s: SGM path %s", kohya, smod);
            CHECK(m->kohya_sgm && strcmp(m->kohya_sgm, kohya) == 0);
        }
        int64_t d[8];
        int nd = parse_shape(t.fields[i][5], d);
        const sdxl_name_entry *w = sdxl_naming_at(n, (size_t)m->weight);
        CHECK_MSG(same_shape(nd, d, w->ndim, w->shape), "%s: base shape %s differs", kohya, t.fields[i][5]);
        const char *kind = t.fields[i][4];
        CHECK_MSG((strcmp(kind, "linear") == 0) == (m->kind == SDXL_MODULE_LINEAR), "%s: kind %s", kohya,
                  kind);
        ok++;
    }
    CHECK_EQ_INT(ok, 1052);
    CHECK_EQ_INT(unet, 788);
    tsv_free(&t);
    sdxl_naming_free(n);
}

TEST(naming_lookups_and_kinds) {
    sdxl_error err = {0};
    sdxl_model_config cfg;
    REQUIRE_ST(sdxl_model_config_load_diffusers(sdxl_test_data("refs/tiny-sdxl"), &cfg, &err), &err);
    sdxl_naming *n = NULL;
    REQUIRE_ST(sdxl_naming_create(&cfg, &n, &err), &err);
    /* tiny: layers_per_block 2, level 0 without attention */
    const sdxl_name_module *m =
        sdxl_naming_module_by_sgm(n, "input_blocks.4.1.transformer_blocks.0.attn1.to_q");
    REQUIRE(m);
    CHECK(strcmp(m->path, "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q") == 0);
    CHECK(m->kind == SDXL_MODULE_LINEAR && m->bias < 0);
    CHECK(sdxl_naming_module_by_sgm(
              n, "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q") == m);
    m = sdxl_naming_module_by_sgm(n, "output_blocks.2.2.conv"); /* upsampler after an attention */
    REQUIRE(m);
    CHECK(strcmp(m->path, "unet.up_blocks.0.upsamplers.0.conv") == 0);
    CHECK(m->kind == SDXL_MODULE_CONV && m->bias >= 0);
    m = sdxl_naming_module_by_sgm(n, "input_blocks.3.0.op");
    REQUIRE(m);
    CHECK(strcmp(m->path, "unet.down_blocks.0.downsamplers.0.conv") == 0);
    m = sdxl_naming_module_by_sgm(n, "middle_block.2.emb_layers.1");
    REQUIRE(m);
    CHECK(strcmp(m->path, "unet.mid_block.resnets.1.time_emb_proj") == 0);
    CHECK(sdxl_naming_module_by_kohya(n, "lora_unet_middle_block_2_emb_layers_1") == m);
    CHECK(sdxl_naming_module_by_kohya(n, "lora_unet_mid_block_resnets_1_time_emb_proj") == m);
    m = sdxl_naming_module(n, "te2.text_model.encoder.layers.0.self_attn.k_proj");
    REQUIRE(m);
    CHECK(m->sgm_path == NULL); /* a row slice of in_proj */
    CHECK(sdxl_naming_module_by_kohya(n, "lora_te2_text_model_encoder_layers_0_self_attn_k_proj") == m);
    m = sdxl_naming_module(n, "te1.text_model.embeddings.token_embedding");
    REQUIRE(m);
    CHECK(m->kind == SDXL_MODULE_EMBEDDING);
    m = sdxl_naming_module(n, "vae.decoder.mid_block.attentions.0.group_norm");
    REQUIRE(m);
    CHECK(m->kind == SDXL_MODULE_NORM && m->kohya == NULL);
    CHECK(strcmp(m->sgm_path, "first_stage_model.decoder.mid.attn_1.norm") == 0);
    m = sdxl_naming_module(n, "te2.text_projection");
    REQUIRE(m);
    CHECK(m->bias < 0 && strcmp(m->sgm_path, "conditioner.embedders.1.model.text_projection") == 0);
    /* absent names */
    CHECK(sdxl_naming_find(n, "unet.down_blocks.0.attentions.0.proj_in.weight") == NULL);
    CHECK(sdxl_naming_find(n, NULL) == NULL);
    CHECK(sdxl_naming_module_by_sgm(n, "input_blocks.99.0.op") == NULL);
    CHECK(sdxl_naming_module_by_kohya(n, "lora_unet_nothing") == NULL);
    CHECK(sdxl_naming_find_source(n, SDXL_LAYOUT_DIFFUSERS, SDXL_COMP_VAE, "conv_in.weight") == NULL);
    /* the vae decoder's up.(L-1-i) rule for 2 levels */
    const sdxl_name_entry *e = sdxl_naming_find(n, "vae.decoder.up_blocks.1.resnets.1.conv2.weight");
    REQUIRE(e);
    CHECK(strcmp(e->src[SDXL_LAYOUT_SGM].key, "first_stage_model.decoder.up.0.block.1.conv2.weight") == 0);
    CHECK(sdxl_naming_index(n, e) >= 0 && sdxl_naming_at(n, (size_t)sdxl_naming_index(n, e)) == e);
    CHECK(sdxl_naming_at(n, sdxl_naming_count(n)) == NULL);
    CHECK_EQ_INT(sdxl_naming_count(NULL), 0);
    /* module <-> entry consistency */
    for (size_t i = 0; i < sdxl_naming_count(n); i++) {
        const sdxl_name_entry *x = sdxl_naming_at(n, i);
        const sdxl_name_module *xm = sdxl_naming_module_at(n, (size_t)x->module);
        REQUIRE(xm);
        CHECK((size_t)xm->weight == i || (size_t)xm->bias == i);
    }
    sdxl_naming_free(n);
    sdxl_naming_free(NULL);
    sdxl_model_config_clear(&cfg);
}

TEST(naming_rejects_invalid_config) {
    sdxl_model_config cfg;
    sdxl_base_config(&cfg);
    cfg.unet.block_out_channels[1] = 650; /* not divisible by 32 groups */
    sdxl_error err = {0};
    sdxl_naming *n = (sdxl_naming *)1;
    CHECK(sdxl_naming_create(&cfg, &n, &err) == SDXL_STATUS_INVALID_ARG);
    CHECK(n == NULL);
    CHECK(strstr(err.msg, "block_out_channels[1]") != NULL);
}

TEST(naming_alloc_failures) {
    sdxl_model_config cfg;
    sdxl_base_config(&cfg);
    sdxl_mem_stats s0, s1;
    sdxl_mem_get_stats(&s0);
    int fails = 0;
    for (int64_t k = 1; k < 10000; k++) {
        sdxl__alloc_fail_at(k);
        sdxl_naming *n = NULL;
        sdxl_error err = {0};
        sdxl_status st = sdxl_naming_create(&cfg, &n, &err);
        sdxl__alloc_fail_at(0);
        if (st == SDXL_STATUS_OK) {
            CHECK(sdxl_naming_count(n) == 2641);
            sdxl_naming_free(n);
            break;
        }
        fails++;
        CHECK_MSG(st == SDXL_STATUS_OUT_OF_MEMORY, "alloc %lld: status %d (%s)", (long long)k, st, err.msg);
        CHECK(n == NULL);
        sdxl_mem_get_stats(&s1);
        CHECK_MSG(s1.live_bytes == s0.live_bytes, "alloc %lld: leaked %lld bytes", (long long)k,
                  (long long)(s1.live_bytes - s0.live_bytes));
    }
    CHECK(fails > 5);
}
