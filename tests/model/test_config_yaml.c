/* Tests of the sidecar-yaml reader's YAML 1.2 constructs beyond the basic
 * block subset (multi-line plain scalars, flow collections nested and over
 * several lines, multi-line quoted scalars), its errors on malformed input
 * (file and line named) and allocation failure; and of the single-file
 * config inference from the variants' SGM checkpoints with their sidecar
 * yaml (the `nonstandard:` block) and from metadata alone. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "model/config.h"
#include "model/config_yaml.h"
#include "model/weights.h"
#include "test.h"

static const char *const variants[] = {"v1_convproj", "v2_sdxl3lvl", "v3_nonsquare", "v4_midattn"};

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

static sdxl__yaml *parse_ok(const char *text) {
    sdxl_error err = {0};
    sdxl__yaml *y = NULL;
    sdxl_status st = sdxl__yaml_parse(text, strlen(text), "t.yaml", &y, &err);
    CHECK_MSG(st == SDXL_STATUS_OK, "parse: %s", err.msg);
    return y;
}

static bool val_is(const sdxl__yaml *y, const char *path, const char *want, int want_line) {
    int line = 0;
    const char *v = sdxl__yaml_get(y, path, &line);
    if (!v || strcmp(v, want) != 0 || (want_line && line != want_line)) {
        printf("    %s = \"%s\" (line %d); want \"%s\" (line %d)\n", path, v ? v : "(absent)", line, want,
               want_line);
        return false;
    }
    return true;
}

TEST(config_yaml_multiline_plain_scalars) {
    sdxl__yaml *y = parse_ok("top:\n"
                             "  comment: Values SGM's config format cannot state (SGM hard-codes\n"
                             "    shapes from the pretrained CLIP-L / OpenCLIP bigG definitions,\n"
                             "      deeper still - fine)\n"
                             "  next: 1\n"
                             "  para: first\n"
                             "\n"
                             "\n"
                             "    second\n"
                             "  list:\n"
                             "  - item one\n"
                             "    continued\n"
                             "  - key: v1\n"
                             "      v2\n"
                             "    other: x\n"
                             "  below:\n"
                             "    on its own\n"
                             "    two lines\n"
                             "  ended: a # a comment ends a plain scalar\n"
                             "  url: http://x.org/a:b\n"
                             "last: z\n");
    REQUIRE(y);
    CHECK(
        val_is(y, "top.comment",
               "Values SGM's config format cannot state (SGM hard-codes shapes from the pretrained CLIP-L / "
               "OpenCLIP bigG definitions, deeper still - fine)",
               2));
    CHECK(val_is(y, "top.next", "1", 5));
    CHECK(val_is(y, "top.para", "first\n\nsecond", 6)); /* two empty lines: two newlines... */
    CHECK(val_is(y, "top.list.0", "item one continued", 11));
    CHECK(val_is(y, "top.list.1.key", "v1 v2", 13));
    CHECK(val_is(y, "top.list.1.other", "x", 15));
    CHECK(val_is(y, "top.below", "on its own two lines", 17));
    CHECK(val_is(y, "top.ended", "a", 0));
    CHECK(val_is(y, "top.url", "http://x.org/a:b", 0));
    CHECK(val_is(y, "last", "z", 21));
    sdxl__yaml_free(y);
    /* one empty line folds into one newline */
    y = parse_ok("a: x\n\n  y\n");
    REQUIRE(y);
    CHECK(val_is(y, "a", "x\ny", 1));
    sdxl__yaml_free(y);
}

TEST(config_yaml_flow_collections) {
    sdxl__yaml *y = parse_ok(
        "nonstandard:\n"
        "  text_encoder: {vocab_size: 914, hidden_size: 8, num_attention_heads: 2, hidden_act: quick_gelu,\n"
        "    max_position_embeddings: 77, layer_norm_eps: 1.0e-05, eos_token_id: 2}\n"
        "  nested: {a: [1, [2, 3], {b: c}], 'q k': \"v, w\", \"j\":1, empty: , nul, trail: 1,}\n"
        "  seq: [x: 1, plain words here, 'it''s', \"esc\\\"aped\"]\n"
        "  spread: [\n"
        "    1,   # a comment inside\n"
        "\n"
        "    2, {deep: [\n"
        "        3]}\n"
        "  ]\n"
        "  spread_map:\n"
        "    {a: 1,\n"
        "     b: multi\n"
        "       word}\n"
        "  quoted: \"one\n"
        "    two\"\n"
        "  empties: {e1: [], e2: {}}\n"
        "after: 1\n"
        "top_close: [a,\n"
        "]\n");
    REQUIRE(y);
    CHECK(sdxl__yaml_get(y, "nonstandard.text_encoder", NULL) == NULL);
    CHECK(val_is(y, "nonstandard.text_encoder.vocab_size", "914", 2));
    CHECK(val_is(y, "nonstandard.text_encoder.hidden_act", "quick_gelu", 2));
    CHECK(val_is(y, "nonstandard.text_encoder.max_position_embeddings", "77", 3)); /* its own line */
    CHECK(val_is(y, "nonstandard.text_encoder.layer_norm_eps", "1.0e-05", 3));
    CHECK(val_is(y, "nonstandard.text_encoder.eos_token_id", "2", 3));
    CHECK(val_is(y, "nonstandard.nested.a.0", "1", 4));
    CHECK(val_is(y, "nonstandard.nested.a.1.1", "3", 4));
    CHECK(val_is(y, "nonstandard.nested.a.2.b", "c", 4));
    CHECK(val_is(y, "nonstandard.nested.q k", "v, w", 4));
    CHECK(val_is(y, "nonstandard.nested.j", "1", 4));
    CHECK(val_is(y, "nonstandard.nested.empty", "", 4));
    CHECK(val_is(y, "nonstandard.nested.nul", "", 4));
    CHECK(val_is(y, "nonstandard.nested.trail", "1", 4));
    CHECK_EQ_INT(sdxl__yaml_seq_len(y, "nonstandard.nested.a"), 3);
    CHECK(val_is(y, "nonstandard.seq.0.x", "1", 5));
    CHECK(val_is(y, "nonstandard.seq.1", "plain words here", 5));
    CHECK(val_is(y, "nonstandard.seq.2", "it's", 5));
    CHECK(val_is(y, "nonstandard.seq.3", "esc\"aped", 5));
    CHECK(val_is(y, "nonstandard.spread.0", "1", 7));
    CHECK(val_is(y, "nonstandard.spread.1", "2", 9));
    CHECK(val_is(y, "nonstandard.spread.2.deep.0", "3", 10));
    CHECK_EQ_INT(sdxl__yaml_seq_len(y, "nonstandard.spread"), 3);
    CHECK(val_is(y, "nonstandard.spread_map.a", "1", 13));
    CHECK(val_is(y, "nonstandard.spread_map.b", "multi word", 14));
    CHECK(val_is(y, "nonstandard.quoted", "one two", 16));
    CHECK(sdxl__yaml_get(y, "nonstandard.empties.e1", NULL) == NULL);
    CHECK(sdxl__yaml_get(y, "nonstandard.empties.e2", NULL) == NULL);
    CHECK(val_is(y, "after", "1", 19));
    CHECK(val_is(y, "top_close.0", "a", 20));
    sdxl__yaml_free(y);

    /* every variant's sidecar parses, nonstandard block included */
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "refs/variants/%s/model-single-file/%s.yaml", variants[i], variants[i]);
        sdxl_error err = {0};
        y = NULL;
        CHECK_MSG(sdxl__yaml_load(sdxl_test_data(rel), &y, &err) == SDXL_STATUS_OK, "%s: %s", variants[i],
                  err.msg);
        if (!y) continue;
        CHECK(sdxl__yaml_get(y, "nonstandard.text_encoder_2.max_position_embeddings", NULL) != NULL);
        CHECK(sdxl__yaml_get(y, "nonstandard.vae_scaling_factor", NULL) != NULL);
        const char *c = sdxl__yaml_get(y, "nonstandard.comment", NULL);
        CHECK(c && strstr(c, "hard-codes GroupNorm(32) in the UNet and VAE, takes") && !strchr(c, '\n'));
        CHECK(
            sdxl__yaml_get(y, "model.params.conditioner_config.params.emb_models.0.params.layer_idx", NULL));
        sdxl__yaml_free(y);
    }
}

TEST(config_yaml_malformed) {
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"a: 1\n  b: 2\n", "line 2: bad indentation"},
        {"a: x # comment\n  more\n", "line 2: bad indentation"},
        {"a: x\n# comment\n  more\n", "line 3: bad indentation"},
        {"a: [1, 2\nb: 3\n", "line 2: unterminated flow sequence opened at line 1"},
        {"a:\n  b: {x: 1,\n  y: 2}\n", "line 3: unterminated flow mapping opened at line 2"},
        {"a: [1, 2,\n   3\n", "line 1: unterminated flow sequence (end of input"},
        {"a: {x: 1\n", "line 1: unterminated flow mapping"},
        {"a: 'abc\n", "line 1: unterminated quoted scalar"},
        {"a: \"abc\n  def\n", "line 1: unterminated quoted scalar"},
        {"a: [1, , 2]\n", "line 1: empty entry in a flow sequence"},
        {"a: {x: 1, , y: 2}\n", "line 1: empty entry in a flow mapping"},
        {"a: {: 1}\n", "line 1: empty key"},
        {"a: {x: 1 y: 2}\n", "line 1: expected ',' or '}'"},
        {"a: [1, 2}\n", "line 1: expected ',' or ']'"},
        {"a: [1,\n  2]]\n", "line 2: unexpected text after"},
        {"a: [1] x\n", "line 1: unexpected text after"},
        {"a: \"q\" x\n", "line 1: unexpected text after"},
        {"a: {[1]: 2}\n", "line 1: a collection as a mapping key"},
        {"a: [\n\t1]\n", "line 2: tab"},
        {"a: [1,\n---\n", "line 2: unterminated"},
    };
    sdxl_error err = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sdxl__yaml *y = (sdxl__yaml *)1;
        sdxl_status st = sdxl__yaml_parse(bad[i].text, strlen(bad[i].text), "bad.yaml", &y, &err);
        CHECK_MSG(st == SDXL_STATUS_BAD_INPUT, "case %zu: status %d", i, st);
        CHECK(y == NULL);
        CHECK_MSG(strstr(err.msg, "bad.yaml: ") && strstr(err.msg, bad[i].msg), "case %zu: %s", i, err.msg);
    }
    /* bounded: flow nesting, the length of one value, in one flow node */
    char *deep = malloc(4096);
    REQUIRE(deep);
    int o = sprintf(deep, "a: ");
    for (int i = 0; i < 200; i++)
        deep[o++] = '[';
    for (int i = 0; i < 200; i++)
        deep[o++] = ']';
    strcpy(deep + o, "\n");
    sdxl__yaml *y = NULL;
    CHECK(sdxl__yaml_parse(deep, strlen(deep), "deep.yaml", &y, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "deep.yaml: line 1: nesting too deep"), "%s", err.msg);
    free(deep);
    size_t big = 3 * (size_t)SDXL__YAML_MAX_VALUE_BYTES; /* > the cap after indentation goes */
    char *longv = malloc(big + 64);
    REQUIRE(longv);
    o = sprintf(longv, "a: [");
    for (size_t i = 0; i + 8 < big; i += 4)
        o += sprintf(longv + o, "1,\n ");
    strcpy(longv + o, "1]\n");
    CHECK(sdxl__yaml_parse(longv, strlen(longv), "long.yaml", &y, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "long.yaml: line ") && strstr(err.msg, "opened at line 1 is longer than"), "%s",
              err.msg);
    o = sprintf(longv, "a: x\n");
    for (size_t i = 0; i + 8 < big; i += 4)
        o += sprintf(longv + o, "  y\n");
    CHECK(sdxl__yaml_parse(longv, strlen(longv), "long.yaml", &y, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "multi-line scalar of line 1 is longer than"), "%s", err.msg);
    free(longv);
}

TEST(config_yaml_alloc_failures) {
    static const char text[] = "a: {b: [1, 2,\n  3], c: \"x\n  y\"}\n"
                               "d: plain\n  more\n  and more\n"
                               "e:\n  - [p, {q: r}]\n";
    sdxl_mem_stats s0, s1;
    sdxl_mem_get_stats(&s0);
    int fails = 0;
    for (int64_t k = 1; k < 1000; k++) {
        sdxl__alloc_fail_at(k);
        sdxl_error err = {0};
        sdxl__yaml *y = NULL;
        sdxl_status st = sdxl__yaml_parse(text, strlen(text), "t.yaml", &y, &err);
        sdxl__alloc_fail_at(0);
        if (st == SDXL_STATUS_OK) {
            CHECK(val_is(y, "a.b.2", "3", 2) && val_is(y, "a.c", "x y", 2) &&
                  val_is(y, "d", "plain more and more", 4) && val_is(y, "e.0.1.q", "r", 8));
            sdxl__yaml_free(y);
            break;
        }
        fails++;
        CHECK_MSG(st == SDXL_STATUS_OUT_OF_MEMORY, "alloc %lld: %s", (long long)k, err.msg);
        CHECK(y == NULL);
        sdxl_mem_get_stats(&s1);
        CHECK_MSG(s1.live_bytes == s0.live_bytes, "alloc %lld: leaked %lld bytes", (long long)k,
                  (long long)(s1.live_bytes - s0.live_bytes));
    }
    CHECK(fails > 5);
}

/* ---- single-file configs of the variants ----------------------------------------------- */

static void variant_paths(const char *name, char *folder, char *single, char *yaml, size_t cap) {
    char root[900];
    snprintf(root, sizeof root, "%s", sdxl_test_data("refs/variants"));
    snprintf(folder, cap, "%s/%.40s/model", root, name);
    snprintf(single, cap, "%s/%.40s/model-single-file/%.40s.safetensors", root, name, name);
    snprintf(yaml, cap, "%s/%.40s/model-single-file/%.40s.yaml", root, name, name);
}

/* Acceptance: each variant's single file, loaded as a user would (no
 * params: the sidecar is found next to it), has its diffusers folder's
 * config. */
TEST(config_single_file_variants_match_folders) {
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        char folder[1024], single[1024], yaml[1024], what[128];
        variant_paths(variants[i], folder, single, yaml, sizeof folder);
        sdxl_error err = {0};
        sdxl_model_config dc;
        sdxl_weights *w = NULL;
        if (sdxl_model_config_load_diffusers(folder, &dc, &err)) {
            sdxl_test_fail(__FILE__, __LINE__, "%s: folder: %s", variants[i], err.msg);
            continue;
        }
        if (sdxl_weights_load(single, NULL, &w, &err)) {
            sdxl_test_fail(__FILE__, __LINE__, "%s: single file: %s", variants[i], err.msg);
        } else {
            CHECK_MSG(sdxl_model_config_equal(sdxl_weights_config(w), &dc, what, sizeof what),
                      "%s: single-file config differs from the folder's in %s", variants[i], what);
            CHECK_MSG(sdxl_model_config_equal(&dc, sdxl_weights_config(w), what, sizeof what),
                      "%s: (reversed) differs in %s", variants[i], what);
            printf("    %-14s single file + sidecar == folder config\n", variants[i]);
        }
        sdxl_weights_free(w);
        w = NULL;
        /* the sidecar is what makes it so: without it (the file's metadata
         * is diffusers' own, not our hints) the config cannot be right */
        sdxl_weights_params p = sdxl_weights_default_params();
        p.ignore_sidecar = true;
        if (!sdxl_weights_load(single, &p, &w, &err))
            CHECK_MSG(!sdxl_model_config_equal(sdxl_weights_config(w), &dc, NULL, 0),
                      "%s: equal even without the sidecar", variants[i]);
        sdxl_weights_free(w);
        sdxl_model_config_clear(&dc);
    }
}

/* Our own writer's single file describes itself in __metadata__: loaded
 * without any yaml it has the folder's config. */
TEST(config_single_file_metadata_route) {
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        char folder[1024], single[1024], yaml[1024], out[1200], what[128];
        variant_paths(variants[i], folder, single, yaml, sizeof folder);
        snprintf(out, sizeof out, "%s/meta_%s.safetensors", sdxl_test_tmpdir(), variants[i]);
        sdxl_error err = {0};
        sdxl_weights *w = NULL, *s = NULL;
        if (sdxl_weights_load(folder, NULL, &w, &err) || sdxl_weights_write_single_file(w, out, NULL, &err) ||
            sdxl_weights_load(out, NULL, &s, &err)) {
            sdxl_test_fail(__FILE__, __LINE__, "%s: %s", variants[i], err.msg);
        } else {
            const sdxl_model_config *a = sdxl_weights_config(s), *b = sdxl_weights_config(w);
            CHECK_MSG(sdxl_model_config_equal(a, b, what, sizeof what),
                      "%s: self-described single file differs from the folder in %s", variants[i], what);
        }
        sdxl_weights_free(s);
        sdxl_weights_free(w);
        unlink(out);
    }
}

/* The nonstandard block: values the shapes determine are cross-checked
 * (BAD_INPUT naming file, line and both values), the rest validated like
 * hints; caller hints beat it. */
TEST(config_single_file_nonstandard_checks) {
    char folder[1024], single[1024], yaml[1024], tmp[1200];
    variant_paths("v1_convproj", folder, single, yaml, sizeof folder);
    snprintf(tmp, sizeof tmp, "%s/v1_edit.yaml", sdxl_test_tmpdir());
    char *orig = slurp(yaml);
    REQUIRE(orig);
    static const struct {
        const char *from, *to, *msg1, *msg2;
    } cases[] = {
        {"text_encoder: {vocab_size: 914, hidden_size: 8,", "text_encoder: {vocab_size: 914, hidden_size: 9,",
         "nonstandard.text_encoder.hidden_size is 9", "give 8"},
        {"intermediate_size: 40", "intermediate_size: 41",
         "nonstandard.text_encoder_2.intermediate_size is 41", "give 40"},
        {"    max_position_embeddings: 77, layer_norm_eps: 1.0e-05, projection_dim: 8, eos_token_id: 2}\n"
         "  text_encoder_2",
         "    max_position_embeddings: 78, layer_norm_eps: 1.0e-05, projection_dim: 8, eos_token_id: 2}\n"
         "  text_encoder_2",
         "line 86: nonstandard.text_encoder.max_position_embeddings is 78", "give 77"},
        {"hidden_act: gelu, max_position_embeddings: 77, layer_norm_eps: 1.0e-05, projection_dim: 8",
         "hidden_act: gelu, max_position_embeddings: 77, layer_norm_eps: 1.0e-05, projection_dim: 6",
         "nonstandard.text_encoder_2.projection_dim is 6", "give 8"},
        {"unet_addition_time_embed_dim: 4", "unet_addition_time_embed_dim: 6",
         "line 82: nonstandard.unet_addition_time_embed_dim is 6", "give 4"},
        {"unet_heads_per_level: [2, 1]", "unet_heads_per_level: [2, 2]",
         "line 79: nonstandard.unet_heads_per_level.1 is 2", "line 26: num_heads gives 1"},
        {"unet_heads_per_level: [2, 1]", "unet_heads_per_level: [2, 1, 1]",
         "unet_heads_per_level (length) is 3", "give 2"},
        {"vae_scaling_factor: 0.5", "vae_scaling_factor: 0.25",
         "line 84: nonstandard.vae_scaling_factor is 0.25", "line 6: model.params.scale_factor is 0.5"},
        {"unet_norm_num_groups: 8", "unet_norm_num_groups: eight",
         "line 78: nonstandard.unet_norm_num_groups", "expected a positive integer"},
        {"unet_norm_num_groups: 8", "unet_norm_num_groups: 3", "norm_num_groups 3 does not divide", ""},
        {"unet_upcast_attention: true", "unet_upcast_attention: maybe",
         "line 81: nonstandard.unet_upcast_attention", "expected true or false"},
        {"hidden_act: quick_gelu,", "hidden_act: relu,", "nonstandard.text_encoder.hidden_act", "relu"},
        {"eos_token_id: 2}\n  text_encoder_2", "eos_token_id: x}\n  text_encoder_2",
         "nonstandard.text_encoder.eos_token_id", "expected an integer"},
        {"num_attention_heads: 2, hidden_act: quick_gelu", "num_attention_heads: 3, hidden_act: quick_gelu",
         "text encoder 1: width 8 is not divisible by 3 heads", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *at = strstr(orig, cases[i].from);
        if (!at) {
            sdxl_test_fail(__FILE__, __LINE__, "case %zu: text not found in the yaml", i);
            continue;
        }
        size_t pre = (size_t)(at - orig), fl = strlen(cases[i].from), tl = strlen(cases[i].to);
        char *e = malloc(strlen(orig) + tl + 1);
        memcpy(e, orig, pre);
        memcpy(e + pre, cases[i].to, tl);
        strcpy(e + pre + tl, at + fl);
        REQUIRE(spit(tmp, e));
        free(e);
        sdxl_weights_params p = sdxl_weights_default_params();
        p.yaml_path = tmp;
        sdxl_weights *w = NULL;
        sdxl_error err = {0};
        sdxl_status st = sdxl_weights_load(single, &p, &w, &err);
        CHECK_MSG(st == SDXL_STATUS_BAD_INPUT, "case %zu: status %d", i, st);
        CHECK_MSG(strstr(err.msg, "v1_edit.yaml") || strstr(err.msg, "v1_convproj.safetensors"),
                  "case %zu: %s", i, err.msg);
        CHECK_MSG(strstr(err.msg, cases[i].msg1) && strstr(err.msg, cases[i].msg2), "case %zu: %s", i,
                  err.msg);
        sdxl_weights_free(w);
    }

    /* precedence: caller hints > yaml (nonstandard) > metadata > defaults */
    const char *hints[] = {
        "scaling_factor", "0.75", "unet.norm_num_groups", "4", "te2.eos_token_id", "7", NULL};
    sdxl_weights_params p = sdxl_weights_default_params();
    p.hints = hints;
    sdxl_weights *w = NULL;
    sdxl_error err = {0};
    REQUIRE_OK(sdxl_weights_load(single, &p, &w, &err), &err);
    const sdxl_model_config *c = sdxl_weights_config(w);
    CHECK_NEAR(c->vae.scaling_factor, 0.75, 0);
    CHECK_EQ_INT(c->unet.norm_num_groups, 4);
    CHECK_EQ_INT(c->vae.norm_num_groups, 8); /* from the yaml */
    CHECK(c->unet.upcast_attention);
    CHECK_EQ_INT(c->te[1].eos_token_id, 7);
    CHECK(!c->te[1].legacy_pooling);
    CHECK(c->te[0].legacy_pooling);
    CHECK(c->te[0].hidden_act == SDXL_ACT_QUICK_GELU);
    sdxl_weights_free(w);

    /* a yaml without the nonstandard block: SGM's fixed GroupNorm(32) does not fit */
    char *cut = strdup(orig);
    char *ns = strstr(cut, "\nnonstandard:");
    REQUIRE(ns);
    ns[1] = 0;
    REQUIRE(spit(tmp, cut));
    free(cut);
    p = sdxl_weights_default_params();
    p.yaml_path = tmp;
    w = NULL;
    CHECK(sdxl_weights_load(single, &p, &w, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK_MSG(strstr(err.msg, "norm_num_groups 32"), "%s", err.msg);
    sdxl_weights_free(w);
    unlink(tmp);
    free(orig);
}

/* The hint keys added for the facts SGM cannot state. */
TEST(config_hints_extended_keys) {
    sdxl_error err = {0};
    sdxl_model_config c;
    REQUIRE_OK(sdxl_model_config_load_diffusers(sdxl_test_data("refs/tiny-sdxl"), &c, &err), &err);
    const char *ok[] = {"unet.norm_num_groups",
                        "16",
                        "vae.norm_num_groups",
                        "16",
                        "unet.upcast_attention",
                        "true",
                        "te1.layer_norm_eps",
                        "1e-6",
                        "te2.eos_token_id",
                        "5",
                        "te2.bos_token_id",
                        "3",
                        "te1.pad_token_id",
                        "9",
                        NULL};
    REQUIRE_OK(sdxl_model_config_apply_hints(&c, ok, &err), &err);
    CHECK_EQ_INT(c.unet.norm_num_groups, 16);
    CHECK_EQ_INT(c.vae.norm_num_groups, 16);
    CHECK(c.unet.upcast_attention);
    CHECK_NEAR(c.te[0].layer_norm_eps, 1e-6, 0);
    CHECK_EQ_INT(c.te[1].eos_token_id, 5);
    CHECK(!c.te[1].legacy_pooling);
    CHECK_EQ_INT(c.te[1].bos_token_id, 3);
    CHECK_EQ_INT(c.te[0].pad_token_id, 9);
    static const char *const bad[][2] = {
        {"unet.norm_num_groups", "0"}, {"vae.norm_num_groups", "x"}, {"unet.upcast_attention", "yes"},
        {"te1.layer_norm_eps", "0.7"}, {"te3.eos_token_id", "2"},    {"te2.eos_token_id", "2.5"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *kv[] = {bad[i][0], bad[i][1], NULL};
        CHECK_MSG(sdxl_model_config_apply_hints(&c, kv, &err) == SDXL_STATUS_INVALID_ARG, "case %zu", i);
        CHECK_MSG(strstr(err.msg, bad[i][0]), "case %zu: %s", i, err.msg);
    }
    const char *nodiv[] = {"unet.norm_num_groups", "7", NULL}; /* valid value, invalid model */
    CHECK(sdxl_model_config_apply_hints(&c, nodiv, &err) == SDXL_STATUS_BAD_INPUT);
    sdxl_model_config_clear(&c);

    /* the metadata writer emits them */
    REQUIRE_OK(sdxl_model_config_load_diffusers(sdxl_test_data("refs/tiny-sdxl"), &c, &err), &err);
    const char **kv = NULL;
    REQUIRE_OK(sdxl_weights_single_file_metadata(&c, NULL, &kv, &err), &err);
    static const char *const want[] = {"unet.norm_num_groups", "unet.upcast_attention", "vae.norm_num_groups",
                                       "te1.layer_norm_eps",   "te2.eos_token_id",      "te1.bos_token_id",
                                       "te2.pad_token_id"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        bool found = false;
        for (size_t j = 0; kv[j]; j += 2)
            found |= strcmp(kv[j], want[i]) == 0;
        CHECK_MSG(found, "metadata lacks %s", want[i]);
    }
    sdxl_free(kv);
    sdxl_model_config_clear(&c);
}
