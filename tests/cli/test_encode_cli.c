/* `sdxl encode`: the two prompt switches reach the library through the CLI. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "test.h"

#ifndef SDXL_BINARY_DIR
#define SDXL_BINARY_DIR "build"
#endif


TEST(cli_encode_prompt_syntax_switch) {
    static char out[65536];
    char args[2048];
    snprintf(args, sizeof args, "encode --model %s --prompt 'a (photo:1.5) of [an] astronaut' --tokens",
             sdxl_test_data("refs/tiny-sdxl"));
    REQUIRE(sdxl_test_run_cli(args, out, sizeof out) == 0);
    CHECK(strstr(out, "tokenizer: 1 chunk(s), 5 tokens") != NULL); /* brackets are syntax */
    CHECK(strstr(out, "(1.5)") != NULL);                          /* weighted token */
    CHECK(strstr(out, "(0.909)") != NULL);                        /* [an] = 1/1.1 */
    strncat(args, " --prompt-syntax plain", sizeof args - strlen(args) - 1);
    REQUIRE(sdxl_test_run_cli(args, out, sizeof out) == 0);
    CHECK(strstr(out, "tokenizer: 1 chunk(s), 13 tokens") != NULL); /* brackets are text */
    CHECK(strstr(out, "(1.5)") == NULL);
    snprintf(args, sizeof args, "encode --model %s --prompt x --prompt-syntax bogus", sdxl_test_data("refs/tiny-sdxl"));
    CHECK(sdxl_test_run_cli(args, out, sizeof out) == 2);
    CHECK(strstr(out, "a1111 or plain") != NULL);
}

TEST(cli_encode_long_prompts_switch) {
    static char out[65536];
    char args[4096], path[512];
    const char *longp = "a beautiful landscape with mountains and a lake at sunset, golden hour, cinematic lighting, "
                        "highly detailed, a castle on a hill under a blue sky with white clouds, a ship sailing on "
                        "the ocean during a storm, digital art of a dragon flying over the sea, fantasy, epic, dramatic, "
                        "masterpiece, best quality, illustration, studio lighting, sharp, vivid colors, the moon "
                        "and the stars over the desert, night sky"; /* 104 tokens with the tiny vocabulary */
    snprintf(path, sizeof path, "%s/enc.safetensors", sdxl_test_tmpdir());
    snprintf(args, sizeof args, "encode --model %s --prompt '%s' --negative blurry -o %s",
             sdxl_test_data("refs/tiny-sdxl"), longp, path);
    REQUIRE(sdxl_test_run_cli(args, out, sizeof out) == 0);
    sdxl_error err = {0};
    sdxl_st_file *f = NULL;
    REQUIRE_OK(sdxl_st_open(path, &f, &err), &err);
    const sdxl_st_tensor *pe = sdxl_st_find(f, "prompt_embeds"), *ne = sdxl_st_find(f, "negative_prompt_embeds");
    REQUIRE(pe && ne);
    CHECK(pe->shape[1] > 77 && pe->shape[1] % 77 == 0); /* chunked: several rows of 77 */
    CHECK(ne->shape[1] == pe->shape[1]);                /* negative padded to the same length */
    sdxl_st_close(f);
    strncat(args, " --long-prompts truncate", sizeof args - strlen(args) - 1);
    REQUIRE(sdxl_test_run_cli(args, out, sizeof out) == 0);
    REQUIRE_OK(sdxl_st_open(path, &f, &err), &err);
    pe = sdxl_st_find(f, "prompt_embeds");
    CHECK(pe && pe->shape[1] == 77);
    CHECK(sdxl_st_metadata(f, "long_prompts") && !strcmp(sdxl_st_metadata(f, "long_prompts"), "truncate"));
    sdxl_st_close(f);
}
