/* `sdxl generate --init-image --strength` (img2img) on the demo model against
 * diffusers' StableDiffusionXLImg2ImgPipeline (tests/data/refs/img2img/
 * demo_blue_star.png, tools/refs/make_img2img_refs.py: init image
 * init_red_circle.png, "a blue star on a yellow background", 10 Euler steps,
 * guidance 6, seed 5, strength 0.6). Bound as the txt2img CLI test: max 2
 * levels, mean 0.02 levels per channel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/alloc.h"
#include "image/png.h"
#include "test.h"

#ifndef SDXL_BINARY_DIR
#define SDXL_BINARY_DIR "build"
#endif
#ifndef SDXL_SOURCE_DIR
#define SDXL_SOURCE_DIR "."
#endif

TEST(img2img_cli_matches_diffusers_image) {
    static char out[65536];
    char args[4096], png[512], init[512], ref[512];
    snprintf(png, sizeof png, "%s/img2img_blue_star.png", sdxl_test_tmpdir());
    snprintf(init, sizeof init, "%s", sdxl_test_data("refs/img2img/init_red_circle.png"));
    snprintf(ref, sizeof ref, "%s", sdxl_test_data("refs/img2img/demo_blue_star.png"));
    snprintf(args, sizeof args,
             "generate --model %s/demo/model --prompt 'a blue star on a yellow background' --seed 5 --steps 10 "
             "--cfg 6 --init-image %s --strength 0.6 -q -o %s",
             SDXL_SOURCE_DIR, init, png);
    int rc = sdxl_test_run_cli(args, out, sizeof out);
    CHECK_MSG(rc == 0, "exit %d: %s", rc, out);
    if (rc) return;
    sdxl_error err = {0};
    uint8_t *a = NULL, *b = NULL;
    int w, h, w2, h2;
    if (sdxl_png_read(png, &a, &w, &h, &err) || sdxl_png_read(ref, &b, &w2, &h2, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "%s", err.msg);
        sdxl_free(a);
        return;
    }
    CHECK(w == w2 && h == h2);
    if (w == w2 && h == h2) {
        int mx = 0;
        long sum = 0;
        const int n = w * h * 3;
        for (int i = 0; i < n; i++) {
            int d = abs((int)a[i] - (int)b[i]);
            mx = d > mx ? d : mx;
            sum += d;
        }
        CHECK_MSG(mx <= 2 && sum <= 0.02 * n, "max diff %d, mean %.4f", mx, (double)sum / n);
        printf("    img2img CLI vs diffusers: max diff %d, mean %.4f levels\n", mx, (double)sum / n);
    }
    sdxl_free(a);
    sdxl_free(b);
    char *p = NULL;
    if (sdxl_png_read_text(png, "parameters", &p, &err) == SDXL_STATUS_OK) {
        CHECK(strstr(p, "Denoising strength: 0.6") != NULL);
        sdxl_free(p);
    } else {
        sdxl_test_fail(__FILE__, __LINE__, "%s", err.msg);
    }
}

TEST(img2img_cli_rejects_bad_arguments) {
    static char out[65536];
    char args[4096], png[512], init[512];
    snprintf(png, sizeof png, "%s/img2img_never.png", sdxl_test_tmpdir());
    snprintf(init, sizeof init, "%s", sdxl_test_data("refs/img2img/init_red_circle.png"));
    const char *bad[] = {"--strength 0", "--strength 1.5", "--width 128", "--init-latents x.safetensors",
                         "--steps 2 --strength 0.3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, "generate --model %s/demo/model --prompt x --init-image %s %s -q -o %s",
                 SDXL_SOURCE_DIR, init, bad[i], png);
        int rc = sdxl_test_run_cli(args, out, sizeof out);
        CHECK_MSG(rc == 1 || rc == 2, "%s: exit %d", bad[i], rc);
        CHECK_MSG(strstr(out, "generate:") != NULL, "%s: no message: %s", bad[i], out);
        FILE *f = fopen(png, "rb");
        CHECK_MSG(f == NULL, "%s: wrote a file", bad[i]);
        if (f) fclose(f), remove(png);
    }
    snprintf(args, sizeof args, "generate --model %s/demo/model --prompt x --init-image %s/nonexistent.png -q -o %s",
             SDXL_SOURCE_DIR, sdxl_test_tmpdir(), png);
    int rc = sdxl_test_run_cli(args, out, sizeof out);
    CHECK_MSG(rc == 1, "missing init image: exit %d", rc);
}
