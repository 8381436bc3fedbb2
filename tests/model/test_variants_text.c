/* Tokenizers, text encoders and encode_prompt on the four variant models of
 * tests/data/refs/variants (other widths, depths, heads, activations, a
 * 1-layer TE1 whose penultimate is the embedding output, a TE2 with
 * eos_token_id 913 pooling at the first eos), against diffusers 0.27.2 /
 * transformers 4.38.2 (see that folder's README). Tolerance atol 1e-5 as
 * for the shipped tiny model. */
#include <string.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "io/safetensors.h"
#include "model/conditioning.h"
#include "model/model.h"
#include "test.h"

static const char *const VARIANTS[] = {"v1_convproj", "v2_sdxl3lvl", "v3_nonsquare", "v4_midattn"};
static const char *const PROMPTS[2] = {"a photo of a cat",
                                       "A Photo of an ASTRONAUT, riding a Horse on MARS!!! (8k, ultra-detailed)"};
static const char *const NEG = "blurry, low quality";

static double dref(const sdxl_st_file *ref, const char *name, size_t row, const float *got, size_t n) {
    const sdxl_st_tensor *t = sdxl_st_find(ref, name);
    if (!t || t->dtype != SDXL_ST_F32 || t->nbytes < (row + 1) * n * 4) return 1e30;
    return sdxl_test_max_abs_diff(got, (const float *)t->data + row * n, (long)n);
}

static sdxl_cond_request diffusers_req(const char *p, const char *neg) {
    sdxl_cond_request r = {.prompt = p, .negative = neg, .force_zeros_for_empty_prompt = true};
    r.prompt_params = sdxl_prompt_default_params();
    r.prompt_params.syntax = SDXL_PROMPT_PLAIN;
    r.prompt_params.long_mode = SDXL_LONG_TRUNCATE;
    return r;
}

static void check_variant(const char *v) {
    char rel[128], dir[1024], refp[1024];
    snprintf(rel, sizeof rel, "refs/variants/%s/model", v);
    snprintf(dir, sizeof dir, "%s", sdxl_test_data(rel));
    snprintf(rel, sizeof rel, "refs/variants/%s/ref.safetensors", v);
    snprintf(refp, sizeof refp, "%s", sdxl_test_data(rel));
    sdxl_error err = {0};
    sdxl_backend *be = sdxl_backend_create(NULL, &err);
    sdxl_model *m = NULL;
    sdxl_st_file *ref = NULL;
    if (!be || sdxl_model_load(dir, NULL, &m, &err) || sdxl_st_open(refp, &ref, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: %s", v, err.msg);
        goto done;
    }
    const sdxl_model_config *cfg = sdxl_weights_config(m->weights);
    /* tokens */
    sdxl_prompt_params pp = diffusers_req("", NULL).prompt_params;
    for (int e = 0; e < 2; e++) {
        char name[64];
        snprintf(name, sizeof name, "tok%d.input_ids", e + 1);
        const sdxl_st_tensor *t = sdxl_st_find(ref, name);
        if (!t || t->nbytes != 2 * 77 * 8) {
            sdxl_test_fail(__FILE__, __LINE__, "%s: %s missing", v, name);
            continue;
        }
        for (int p = 0; p < 2; p++) {
            sdxl_token_batch b;
            if (sdxl_tokenize_prompt(m->tok[e], PROMPTS[p], &pp, &b, &err)) {
                sdxl_test_fail(__FILE__, __LINE__, "%s: %s", v, err.msg);
                continue;
            }
            int bad = 0;
            for (int i = 0; i < 77; i++) {
                int64_t want;
                memcpy(&want, (const char *)t->data + 8 * (p * 77 + i), 8);
                bad += b.ids[i] != want;
            }
            CHECK_MSG(bad == 0, "%s %s prompt %d: %d ids differ", v, name, p, bad);
            sdxl_token_batch_free(&b);
        }
    }
    /* encode_prompt, both cases (covers both encoders' penultimate and pooled) */
    for (int c = 0; c < 2; c++) {
        const char *cs = c ? "encode_prompt.negText" : "encode_prompt.negNone";
        int rows = c ? 1 : 2;
        for (int row = 0; row < rows; row++) {
            sdxl_cond_request r = diffusers_req(PROMPTS[row], c ? NEG : NULL);
            sdxl_cond pos, neg;
            if (sdxl_encode_prompts(be, m->weights, m->tok[0], m->tok[1], &r, &pos, &neg, &err)) {
                sdxl_test_fail(__FILE__, __LINE__, "%s %s: %s", v, cs, err.msg);
                continue;
            }
            size_t ne = (size_t)77 * (size_t)pos.dim, np = (size_t)pos.pooled_dim;
            CHECK_EQ_INT(pos.dim, cfg->unet.cross_attention_dim);
            const struct { const char *s; const float *p; size_t n; } o[] = {
                {"prompt_embeds", pos.embeds, ne}, {"pooled_prompt_embeds", pos.pooled, np},
                {"negative_prompt_embeds", neg.embeds, ne}, {"negative_pooled_prompt_embeds", neg.pooled, np}};
            for (int i = 0; i < 4; i++) {
                char name[128];
                snprintf(name, sizeof name, "%s.%s", cs, o[i].s);
                double d = dref(ref, name, (size_t)row, o[i].p, o[i].n);
                CHECK_MSG(d <= 1e-5, "%s %s row %d: max diff %.3g", v, name, row, d);
            }
            sdxl_cond_free(&pos);
            sdxl_cond_free(&neg);
        }
    }
done:
    sdxl_st_close(ref);
    sdxl_model_free(m);
    sdxl_backend_free(be);
}

TEST(variants_tokens_text_encoders_encode_prompt) {
    for (size_t i = 0; i < sizeof VARIANTS / sizeof VARIANTS[0]; i++) check_variant(VARIANTS[i]);
}
