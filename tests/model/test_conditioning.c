/* encode_prompt against diffusers (tests/data/refs/tiny-sdxl-ref/encode_prompt.safetensors,
 * CPU fp32). diffusers reads prompts literally and truncates to 77, so these run with
 * PLAIN syntax and TRUNCATE mode. Tolerance atol 1e-5 (refs README: text encoders). */
#include <string.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "io/safetensors.h"
#include "model/conditioning.h"
#include "test.h"

#define TOL 1e-5

static const char *const P[4] = {
    "a photo of an astronaut riding a horse on mars",
    "",
    "a beautiful landscape with mountains and a lake at sunset, golden hour, cinematic lighting, highly "
    "detailed, a castle on a hill under a blue sky with white clouds, a ship sailing on the ocean during a "
    "storm, digital art of a dragon flying over the sea, fantasy, epic, dramatic, masterpiece, best quality, "
    "illustration, studio lighting, sharp, vivid colors, the moon and the stars over the desert, night sky",
    "A Photo of an ASTRONAUT, riding a Horse on MARS!!! (8k, ultra-detailed) h\xc3\xa9llo w\xc3\xb6rld 12.5% "
    "<|endoftext|> cat",
};
static const char *const NEG = "blurry, low quality, bad anatomy, watermark";

typedef struct {
    sdxl_backend *be;
    sdxl_weights *w;
    sdxl_tokenizer *t1, *t2;
    sdxl_st_file *ref;
} cond_fixture;

static bool cfix(cond_fixture *f) {
    sdxl_error err = {0};
    memset(f, 0, sizeof *f);
    char d1[512], d2[512];
    snprintf(d1, sizeof d1, "%s", sdxl_test_data("refs/tiny-sdxl/tokenizer"));
    snprintf(d2, sizeof d2, "%s", sdxl_test_data("refs/tiny-sdxl/tokenizer_2"));
    if (!(f->be = sdxl_backend_create(NULL, &err)) ||
        sdxl_weights_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &f->w, &err) ||
        sdxl_tokenizer_load_dir(d1, &f->t1, &err) || sdxl_tokenizer_load_dir(d2, &f->t2, &err) ||
        sdxl_st_open(sdxl_test_data("refs/tiny-sdxl-ref/encode_prompt.safetensors"), &f->ref, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "fixture: %s", err.msg);
        return false;
    }
    return true;
}

static void cfix_free(cond_fixture *f) {
    sdxl_st_close(f->ref);
    sdxl_tokenizer_free(f->t1);
    sdxl_tokenizer_free(f->t2);
    sdxl_weights_free(f->w);
    sdxl_backend_free(f->be);
}

/* max |got - ref[row]| for a reference tensor [B, ...] */
static double dref(const cond_fixture *f, const char *name, int row, const float *got, size_t n) {
    const sdxl_st_tensor *t = sdxl_st_find(f->ref, name);
    if (!t || t->nbytes < (size_t)(row + 1) * n * 4) return 1e30;
    return sdxl_test_max_abs_diff(got, (const float *)t->data + (size_t)row * n, (long)n);
}

static sdxl_cond_request diffusers_req(const char *p, const char *p2, const char *neg) {
    sdxl_cond_request r = {.prompt = p, .prompt_2 = p2, .negative = neg, .force_zeros_for_empty_prompt = true};
    r.prompt_params = sdxl_prompt_default_params();
    r.prompt_params.syntax = SDXL_PROMPT_PLAIN;
    r.prompt_params.long_mode = SDXL_LONG_TRUNCATE;
    return r;
}

static void check_case(cond_fixture *f, const char *cs, int row, const sdxl_cond_request *r) {
    sdxl_error err = {0};
    sdxl_cond pos, neg;
    if (sdxl_encode_prompts(f->be, f->w, f->t1, f->t2, r, &pos, &neg, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s: %s", cs, err.msg);
        return;
    }
    CHECK_EQ_INT(pos.n_tokens, 77);
    CHECK_EQ_INT(pos.dim, 64);
    char n[128];
    const struct { const char *suffix; const float *p; size_t n; } outs[] = {
        {"prompt_embeds", pos.embeds, 77 * 64}, {"pooled_prompt_embeds", pos.pooled, 32},
        {"negative_prompt_embeds", neg.embeds, 77 * 64}, {"negative_pooled_prompt_embeds", neg.pooled, 32}};
    for (int i = 0; i < 4; i++) {
        snprintf(n, sizeof n, "%s.%s", cs, outs[i].suffix);
        double d = dref(f, n, row, outs[i].p, outs[i].n);
        CHECK_MSG(d <= TOL, "%s row %d: max diff %.3g", n, row, d);
    }
    sdxl_cond_free(&pos);
    sdxl_cond_free(&neg);
}

TEST(cond_encode_prompt_matches_diffusers) {
    cond_fixture f;
    if (!cfix(&f)) return cfix_free(&f);
    sdxl_cond_request r = diffusers_req(P[0], NULL, NEG);
    check_case(&f, "p0_negText", 0, &r);
    r = diffusers_req(P[0], NULL, "");
    check_case(&f, "p0_negEmptyString", 0, &r);
    r = diffusers_req(P[0], "oil painting, highly detailed", NULL);
    check_case(&f, "p0_prompt2", 0, &r);
    for (int i = 0; i < 4; i++) { /* absent negative: exact zeros (force_zeros_for_empty_prompt) */
        r = diffusers_req(P[i], NULL, NULL);
        check_case(&f, "batch4_negNone", i, &r);
    }
    cfix_free(&f);
}

/* Long prompts in CHUNK mode: 104 tokens → 2 chunks of 77 for both sides (the negative is
 * padded with an empty chunk); the first chunk's pooled vector is the truncated prompt's. */
TEST(cond_long_prompt_chunks_and_pads_negative) {
    cond_fixture f;
    if (!cfix(&f)) return cfix_free(&f);
    sdxl_error err = {0};
    sdxl_cond_request r = diffusers_req(P[2], NULL, NEG);
    r.prompt_params.long_mode = SDXL_LONG_CHUNK;
    sdxl_cond pos, neg;
    REQUIRE_OK(sdxl_encode_prompts(f.be, f.w, f.t1, f.t2, &r, &pos, &neg, &err), &err);
    CHECK_EQ_INT(pos.n_tokens, 154);
    CHECK_EQ_INT(neg.n_tokens, 154);
    /* negative's first chunk is the plain NEG encoding (p0_negText's negative) */
    CHECK(dref(&f, "p0_negText.negative_prompt_embeds", 0, neg.embeds, 77 * 64) <= TOL);
    /* the second (padding) chunk of the negative is the encoding of "" (p0_negEmptyString) */
    CHECK(dref(&f, "p0_negEmptyString.negative_prompt_embeds", 0, neg.embeds + 77 * 64, 77 * 64) <= TOL);
    /* pooled from the first chunk = the truncated encoding (batch4 row 2) */
    CHECK(dref(&f, "batch4_negNone.pooled_prompt_embeds", 2, pos.pooled, 32) <= TOL);
    sdxl_cond_free(&pos);
    sdxl_cond_free(&neg);
    cfix_free(&f);
}

/* A1111 emphasis: weighted tokens scale their rows, then the row mean is restored; with
 * all weights 1 the result is exactly the plain encoding. */
TEST(cond_emphasis_scales_tokens_and_keeps_mean) {
    cond_fixture f;
    if (!cfix(&f)) return cfix_free(&f);
    sdxl_error err = {0};
    sdxl_cond_request r = diffusers_req("a photo of an astronaut", NULL, NULL);
    r.prompt_params.syntax = SDXL_PROMPT_A1111;
    sdxl_cond plain, pz, emph, ez;
    REQUIRE_OK(sdxl_encode_prompts(f.be, f.w, f.t1, f.t2, &r, &plain, &pz, &err), &err);
    r.prompt = "a photo of an (astronaut:1.5)";
    REQUIRE_OK(sdxl_encode_prompts(f.be, f.w, f.t1, f.t2, &r, &emph, &ez, &err), &err);
    double s0 = 0, s1 = 0;
    for (int i = 0; i < 77 * 32; i++) s0 += plain.embeds[(i / 32) * 64 + i % 32], s1 += emph.embeds[(i / 32) * 64 + i % 32];
    CHECK_NEAR(s1, s0, 1e-3 * (1 + fabs(s0))); /* TE1 half: mean kept */
    /* token 5 ("astronaut", after bos a photo of an) is scaled relative to token 1 ("a") */
    double ratio_plain = plain.embeds[5 * 64 + 3] / plain.embeds[1 * 64 + 3];
    double ratio_emph = emph.embeds[5 * 64 + 3] / emph.embeds[1 * 64 + 3];
    CHECK_NEAR(ratio_emph / ratio_plain, 1.5, 1e-3);
    CHECK(memcmp(plain.pooled, emph.pooled, 32 * 4) == 0); /* pooled never weighted */
    sdxl_cond_free(&plain), sdxl_cond_free(&pz), sdxl_cond_free(&emph), sdxl_cond_free(&ez);
    cfix_free(&f);
}

/* The single-file form of the same model (written through the naming table in reverse: TE2
 * q/k/v stacked into in_proj, text_projection transposed) gives bit-identical conditioning. */
TEST(cond_single_file_matches_folder_bit_for_bit) {
    cond_fixture f;
    if (!cfix(&f)) return cfix_free(&f);
    sdxl_error err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/cond_single.safetensors", sdxl_test_tmpdir());
    REQUIRE_OK(sdxl_weights_write_single_file(f.w, path, NULL, &err), &err);
    sdxl_weights *ws = NULL;
    REQUIRE_OK(sdxl_weights_load(path, NULL, &ws, &err), &err);
    CHECK(sdxl_weights_layout(ws) == SDXL_LAYOUT_SGM);
    sdxl_cond_request r = diffusers_req(P[3], "oil painting", NEG);
    sdxl_cond a, an, b, bn;
    REQUIRE_OK(sdxl_encode_prompts(f.be, f.w, f.t1, f.t2, &r, &a, &an, &err), &err);
    REQUIRE_OK(sdxl_encode_prompts(f.be, ws, f.t1, f.t2, &r, &b, &bn, &err), &err);
    CHECK(memcmp(a.embeds, b.embeds, (size_t)a.n_tokens * a.dim * 4) == 0);
    CHECK(memcmp(a.pooled, b.pooled, (size_t)a.pooled_dim * 4) == 0);
    CHECK(memcmp(an.embeds, bn.embeds, (size_t)an.n_tokens * an.dim * 4) == 0);
    sdxl_cond_free(&a), sdxl_cond_free(&an), sdxl_cond_free(&b), sdxl_cond_free(&bn);
    sdxl_weights_free(ws);
    cfix_free(&f);
}
