/* vae - SDXL VAE decode / encode: seconds, arena block, peak RSS; tiled and
 * untiled.
 *
 *   build/bench/sdxl_bench_vae                  arena plan of the SDXL VAE config
 *                                               (128/256/512/512, 2 layers) for
 *                                               several sizes; no weights needed
 *   build/bench/sdxl_bench_vae MODEL [options]  time decode (and encode) on MODEL
 *       --size N | --height H --width W   image size (default 1024x1024)
 *       --tile T --overlap O              tiled pass (latent px; default: the library's)
 *       --threads N                       CPU threads (default: all)
 *       --only-tiled | --only-untiled     skip the other pass
 *       --no-encode                       decode only
 *       --reps N                          best of N (default 1)
 *
 * MODEL is anything sdxl_weights_load takes (a diffusers folder, a single
 * file); only its VAE is used. Inputs are fixed pseudo-random latents (std 1)
 * and a smooth analytic image. Peak RSS is VmHWM, reset before each pass
 * (/proc/self/clear_refs), so each figure is that pass's own peak: weights
 * mapped so far + arena + the back end's op scratch + inputs/outputs.
 * Times are wall seconds of the whole call (planning, transfers, blending).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "model/vae.h"
#include "model/weights.h"

/* diffusers' stabilityai/stable-diffusion-xl-base-1.0 vae/config.json */
static const char SDXL_VAE_JSON[] =
    "{\"_class_name\": \"AutoencoderKL\", \"act_fn\": \"silu\", \"block_out_channels\": [128, 256, 512, 512],"
    " \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\","
    " \"DownEncoderBlock2D\"], \"force_upcast\": true, \"in_channels\": 3, \"latent_channels\": 4,"
    " \"layers_per_block\": 2, \"norm_num_groups\": 32, \"out_channels\": 3, \"sample_size\": 1024,"
    " \"scaling_factor\": 0.13025, \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\","
    " \"UpDecoderBlock2D\", \"UpDecoderBlock2D\"]}";

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double gib(size_t b) {
    return (double)b / (double)(1u << 30);
}

/* VmHWM in bytes (0 if unknown). */
static size_t peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = strtoull(line + 6, NULL, 10);
    fclose(f);
    return kb * 1024;
}

static void reset_peak(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

static void print_plan_row(const char *what, const sdxl_vae_plan *p, int H, int W, int f) {
    printf("  %-6s %5dx%-5d  untiled %7.2f GiB | default: %-7s %7.2f GiB", what, W, H, gib(p->untiled_bytes),
           p->tiled ? "tiled" : "untiled", gib(p->arena_bytes));
    if (p->tiled) {
        double work = (double)p->tile_h * p->tile_w * p->tiles_y * p->tiles_x;
        printf("  %dx%d tiles of %dx%d latent px (work x%.2f)", p->tiles_x, p->tiles_y, p->tile_w, p->tile_h,
               work / ((double)(H / f) * (W / f)));
    }
    printf("\n");
}

static int plan_only(void) {
    sdxl_vae_config cfg;
    sdxl_error err = {0};
    if (sdxl_vae_config_parse_json(SDXL_VAE_JSON, strlen(SDXL_VAE_JSON), "SDXL vae config", &cfg, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    sdxl_vae_params p = sdxl_vae_default_params();
    printf(
        "SDXL VAE (128/256/512/512, 2 layers/block), batch 1, f32 activations.\n"
        "Arena block per call; default params: tile %d, overlap %d latent px, AUTO above %.2f GiB untiled.\n",
        p.tile, p.overlap, gib(p.auto_max_bytes));
    static const int sizes[][2] = {{512, 512},   {768, 768},   {1024, 1024}, {1216, 832},
                                   {1344, 768},  {1536, 640},  {1152, 1152}, {1280, 1280},
                                   {1536, 1536}, {2048, 2048}, {3072, 3072}, {4096, 4096}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        int W = sizes[i][0], H = sizes[i][1];
        sdxl_vae_plan d, e;
        if (sdxl_vae_plan_decode(&cfg, &p, 1, H, W, &d, &err) ||
            sdxl_vae_plan_encode(&cfg, &p, 1, H, W, &e, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        print_plan_row("decode", &d, H, W, sdxl_vae_factor(&cfg));
        print_plan_row("encode", &e, H, W, sdxl_vae_factor(&cfg));
    }
    printf("Tile size against arena (decode, one tile; overlap does not change it):\n");
    static const int tiles[] = {32, 48, 64, 96, 128, 160, 192};
    for (size_t i = 0; i < sizeof tiles / sizeof *tiles; i++) {
        sdxl_vae_plan d, e;
        int s = tiles[i] * 8;
        sdxl_vae_params q = p;
        q.tiling = SDXL_VAE_TILING_OFF;
        if (sdxl_vae_plan_decode(&cfg, &q, 1, s, s, &d, &err) ||
            sdxl_vae_plan_encode(&cfg, &q, 1, s, s, &e, &err))
            return 1;
        printf("  tile %3d (%4d px): decode %.3f GiB, encode %.3f GiB\n", tiles[i], s, gib(d.arena_bytes),
               gib(e.arena_bytes));
    }
    return 0;
}

static void randn(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (size_t i = 0; i < n; i += 2) {
        double u[2];
        for (int k = 0; k < 2; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            u[k] = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
        }
        double r = sqrt(-2 * log(u[0]));
        x[i] = (float)(r * cos(6.283185307179586 * u[1]));
        if (i + 1 < n) x[i + 1] = (float)(r * sin(6.283185307179586 * u[1]));
    }
}

typedef struct run_result {
    double seconds;
    size_t arena, rss;
    sdxl_vae_plan plan;
} run_result;

/* One call (best of reps). */
static int run(sdxl_backend *be, const sdxl_weights *w, const sdxl_vae_params *p, bool decode,
               const float *in, int H, int W, float *out, float *out2, int reps, run_result *r) {
    const sdxl_vae_config *v = &sdxl_weights_config(w)->vae;
    int f = sdxl_vae_factor(v);
    sdxl_error err = {0};
    reset_peak();
    if ((decode ? sdxl_vae_plan_decode : sdxl_vae_plan_encode)(v, p, 1, H, W, &r->plan, &err)) {
        fprintf(stderr, "plan: %s\n", err.msg);
        return 1;
    }
    sdxl_arena *a = sdxl_arena_create(r->plan.arena_bytes);
    if (!a) {
        fprintf(stderr, "cannot allocate an arena of %zu bytes\n", r->plan.arena_bytes);
        return 1;
    }
    r->seconds = 1e30;
    for (int i = 0; i < reps; i++) {
        double t0 = now();
        sdxl_status st = decode ? sdxl_vae_decode(be, w, p, in, 1, H / f, W / f, a, out, &err)
                                : sdxl_vae_encode(be, w, p, in, 1, H, W, a, out, out2, &err);
        double t = now() - t0;
        if (st) {
            fprintf(stderr, "%s: %s\n", decode ? "decode" : "encode", err.msg);
            sdxl_arena_free(a);
            return 1;
        }
        if (t < r->seconds) r->seconds = t;
    }
    r->arena = r->plan.arena_bytes;
    r->rss = peak_rss();
    sdxl_arena_free(a);
    return 0;
}

static void report(const char *what, const run_result *r, int H, int W) {
    printf("%-16s %5dx%-5d %8.2f s  %6.2f s/MP  arena %6.2f GiB  peak RSS %6.2f GiB", what, W, H, r->seconds,
           r->seconds / ((double)H * W / 1e6), gib(r->arena), gib(r->rss));
    if (r->plan.tiled)
        printf("  (%dx%d tiles of %dx%d)", r->plan.tiles_x, r->plan.tiles_y, r->plan.tile_w, r->plan.tile_h);
    else if (strstr(what, "tiled") && !strstr(what, "untiled"))
        printf("  (one tile covers the image: --tile smaller to force several)");
    printf("\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *model = NULL;
    int H = 1024, W = 1024, threads = 0, reps = 1;
    bool tiled = true, untiled = true, encode = true;
    sdxl_vae_params tp = sdxl_vae_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "--size") && more)
            H = W = atoi(argv[++i]);
        else if (!strcmp(a, "--height") && more)
            H = atoi(argv[++i]);
        else if (!strcmp(a, "--width") && more)
            W = atoi(argv[++i]);
        else if (!strcmp(a, "--tile") && more)
            tp.tile = atoi(argv[++i]);
        else if (!strcmp(a, "--overlap") && more)
            tp.overlap = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && more)
            threads = atoi(argv[++i]);
        else if (!strcmp(a, "--reps") && more)
            reps = atoi(argv[++i]);
        else if (!strcmp(a, "--only-tiled"))
            untiled = false;
        else if (!strcmp(a, "--only-untiled"))
            tiled = false;
        else if (!strcmp(a, "--no-encode"))
            encode = false;
        else if (a[0] != '-' && !model)
            model = a;
        else {
            fprintf(stderr,
                    "usage: %s [MODEL [--size N | --height H --width W] [--tile T] [--overlap O] "
                    "[--threads N] [--reps N] [--only-tiled | --only-untiled] [--no-encode]]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!model) return plan_only();
    if (reps < 1) reps = 1;

    sdxl_error err = {0};
    sdxl_backend_params bp = sdxl_backend_default_params();
    bp.n_threads = threads;
    sdxl_backend *be = sdxl_backend_create(&bp, &err);
    sdxl_weights *w = NULL;
    if (!be || sdxl_weights_load(model, NULL, &w, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const sdxl_vae_config *v = &sdxl_weights_config(w)->vae;
    int f = sdxl_vae_factor(v), C = v->latent_channels;
    if (H % f || W % f) {
        fprintf(stderr, "size must be a multiple of %d\n", f);
        return 1;
    }
    printf("model %s: VAE levels %d, channels", model, v->num_levels);
    for (int l = 0; l < v->num_levels; l++)
        printf(" %d", v->block_out_channels[l]);
    printf(", %d layers/block; back end %s, %d threads\n", v->layers_per_block, sdxl_backend_ops_of(be)->name,
           sdxl_backend_threads(be));
    size_t nl = (size_t)C * (H / f) * (W / f), ni = (size_t)v->out_channels * H * W;
    float *lat = sdxl_malloc(nl * 4), *img = sdxl_malloc(ni * 4), *img2 = sdxl_malloc(ni * 4);
    float *x = sdxl_malloc((size_t)v->in_channels * H * W * 4), *mean = sdxl_malloc(nl * 4),
          *logvar = sdxl_malloc(nl * 4);
    if (!lat || !img || !img2 || !x || !mean || !logvar) return 1;
    randn(lat, nl, 1);
    for (int c = 0; c < v->in_channels; c++)
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++) {
                double u = -1 + 2.0 * xx / (W - 1), t = -1 + 2.0 * y / (H - 1);
                x[((size_t)c * H + y) * W + xx] = (float)sin((c + 2) * u + (3 - c) * t);
            }
    sdxl_vae_params up = sdxl_vae_default_params();
    up.tiling = SDXL_VAE_TILING_OFF;
    tp.tiling = SDXL_VAE_TILING_ON;
    run_result r;
    if (tiled) {
        if (run(be, w, &tp, true, lat, H, W, img2, NULL, reps, &r)) return 1;
        report("decode tiled", &r, H, W);
    }
    if (untiled) {
        if (run(be, w, &up, true, lat, H, W, img, NULL, reps, &r)) return 1;
        report("decode untiled", &r, H, W);
    }
    if (tiled && untiled) {
        double m = 0;
        for (size_t i = 0; i < ni; i++)
            m = fmax(m, fabs((double)img[i] - img2[i]));
        printf("  tiled vs untiled: max |diff| %.3g (random weights: not a quality figure)\n", m);
    }
    if (encode) {
        if (tiled) {
            if (run(be, w, &tp, false, x, H, W, mean, logvar, reps, &r)) return 1;
            report("encode tiled", &r, H, W);
        }
        if (untiled) {
            if (run(be, w, &up, false, x, H, W, mean, logvar, reps, &r)) return 1;
            report("encode untiled", &r, H, W);
        }
    }
    sdxl_free(lat), sdxl_free(img), sdxl_free(img2), sdxl_free(x), sdxl_free(mean), sdxl_free(logvar);
    sdxl_weights_free(w);
    sdxl_backend_free(be);
    return 0;
}
