/* bench/unet.c - one SDXL UNet forward (batch 2 = classifier-free guidance):
 * seconds, arena size and peak RSS.
 *
 *   sdxl_bench_unet [MODEL] [--size WxH]... [--batch B] [--tokens T] [--threads N] [--reps R]
 *                   [--convert f16|f32]
 *
 * MODEL is a diffusers folder or a single .safetensors checkpoint (any
 * config: `sdxl make-model` writes a full-size random one). Sizes are image
 * pixels; the latent is size / the VAE's factor (2^(levels-1): 8 for SDXL).
 * Default sizes: 512x512 and 1024x1024 for an SDXL-shaped model (VAE factor
 * 8), else the model's own sample_size. Without MODEL only the arena plan of
 * SDXL base 1.0's UNet is printed (no weights needed).
 *
 * Inputs are fixed pseudo-random values (the UNet's cost does not depend on
 * them). The time is the best of --reps runs (default 1: a full-size forward
 * on a CPU takes minutes; the first run also faults the mapped weights in,
 * so use --reps 2 for a steady-state figure); peak RSS (getrusage) includes
 * the touched pages of the mapped weight files. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "model/unet.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
}

/* SDXL base 1.0's unet/config.json (stabilityai/stable-diffusion-xl-base-1.0). */
static const char SDXL_BASE_UNET_JSON[] =
    "{\"_class_name\": \"UNet2DConditionModel\", \"act_fn\": \"silu\", \"addition_embed_type\": "
    "\"text_time\","
    "\"addition_embed_type_num_heads\": 64, \"addition_time_embed_dim\": 256, \"attention_head_dim\": [5, "
    "10, 20],"
    "\"block_out_channels\": [320, 640, 1280], \"center_input_sample\": false, \"cross_attention_dim\": 2048,"
    "\"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\"],"
    "\"downsample_padding\": 1, \"dual_cross_attention\": false, \"flip_sin_to_cos\": true, \"freq_shift\": "
    "0,"
    "\"in_channels\": 4, \"layers_per_block\": 2, \"mid_block_scale_factor\": 1, \"norm_eps\": 1e-05,"
    "\"norm_num_groups\": 32, \"out_channels\": 4, \"projection_class_embeddings_input_dim\": 2816,"
    "\"sample_size\": 128, \"transformer_layers_per_block\": [1, 2, 10],"
    "\"up_block_types\": [\"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"UpBlock2D\"],"
    "\"upcast_attention\": false, \"use_linear_projection\": true}";

/* Deterministic values in [-a, a). */
static void fill(float *x, size_t n, float a, uint32_t *s) {
    for (size_t i = 0; i < n; i++) {
        *s = *s * 1664525u + 1013904223u;
        x[i] = a * ((float)(*s >> 8) / 8388608.0f - 1.0f);
    }
}

typedef struct {
    int w, h;
} px_size;

static void usage(void) {
    fprintf(stderr, "usage: sdxl_bench_unet [MODEL] [--size WxH]... [--batch B] [--tokens T] [--threads N] "
                    "[--reps R] [--convert f16|f32]\n");
}

int main(int argc, char **argv) {
    const char *model = NULL;
    px_size sizes[16];
    int n_sizes = 0, batch = 2, tokens = 77, threads = 0, reps = 1;
    const char *convert = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--size") && i + 1 < argc && n_sizes < 16) {
            if (sscanf(argv[++i], "%dx%d", &sizes[n_sizes].w, &sizes[n_sizes].h) != 2) return usage(), 2;
            n_sizes++;
        } else if (!strcmp(a, "--batch") && i + 1 < argc) {
            batch = atoi(argv[++i]);
        } else if (!strcmp(a, "--tokens") && i + 1 < argc) {
            tokens = atoi(argv[++i]);
        } else if (!strcmp(a, "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(a, "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(a, "--convert") && i + 1 < argc) {
            convert = argv[++i];
        } else if (a[0] == '-' || model) {
            return usage(), 2;
        } else {
            model = a;
        }
    }
    if (reps < 1) reps = 1;
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress shows even when piped to a file */
    sdxl_error err = {0};

    if (!model) { /* plan only */
        sdxl_unet_config u;
        if (sdxl_unet_config_parse_json(SDXL_BASE_UNET_JSON, sizeof SDXL_BASE_UNET_JSON - 1, "SDXL base", &u,
                                        &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        if (!n_sizes) {
            sizes[n_sizes++] = (px_size){512, 512};
            sizes[n_sizes++] = (px_size){1024, 1024};
        }
        printf("SDXL base 1.0 UNet (no weights: arena plan only), batch %d, %d context tokens\n", batch,
               tokens);
        for (int s = 0; s < n_sizes; s++) {
            sdxl_unet_shape sh = {batch, sizes[s].h / 8, sizes[s].w / 8, tokens};
            size_t bytes = 0;
            if (sdxl_unet_arena_bytes(&u, &sh, &bytes, &err)) {
                printf("  %dx%d: %s\n", sizes[s].w, sizes[s].h, err.msg);
                continue;
            }
            printf("  %5dx%-5d latent %dx%d: arena %.1f MiB\n", sizes[s].w, sizes[s].h, sh.width, sh.height,
                   (double)bytes / 1048576.0);
        }
        return 0;
    }

    sdxl_backend_params bp = sdxl_backend_default_params();
    bp.n_threads = threads;
    sdxl_backend *be = sdxl_backend_create(&bp, &err);
    if (!be) {
        fprintf(stderr, "backend: %s\n", err.msg);
        return 1;
    }
    sdxl_weights_params wp = sdxl_weights_default_params();
    if (convert) {
        wp.convert = true;
        wp.dtype = !strcmp(convert, "f16") ? SDXL_DTYPE_F16 : SDXL_DTYPE_F32;
    }
    sdxl_weights *w = NULL;
    double t0 = now_s();
    if (sdxl_weights_load(model, &wp, &w, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        sdxl_backend_free(be);
        return 1;
    }
    const double t_load = now_s() - t0;
    const sdxl_model_config *cfg = sdxl_weights_config(w);
    const sdxl_unet_config *u = &cfg->unet;
    int64_t params = 0;
    sdxl_dtype wdt = SDXL_DTYPE_F32;
    for (size_t i = 0; i < sdxl_weights_count(w); i++) {
        const sdxl_weight *x = sdxl_weights_at(w, i);
        if (x->entry->comp != SDXL_COMP_UNET) continue;
        params += sdxl_tensor_nelem(&x->tensor);
        wdt = x->tensor.dtype;
    }
    const int factor = 1 << (cfg->vae.num_levels - 1);
    if (!n_sizes) {
        if (factor == 8) {
            sizes[n_sizes++] = (px_size){512, 512};
            sizes[n_sizes++] = (px_size){1024, 1024};
        } else {
            sizes[n_sizes++] = (px_size){u->sample_size * factor, u->sample_size * factor};
        }
    }
    printf("model %s: UNet %.3f B parameters (%s), %d levels %d..%d channels; loaded in %.2f s\n", model,
           (double)params / 1e9, sdxl_dtype_name(wdt), u->num_levels, u->block_out_channels[0],
           u->block_out_channels[u->num_levels - 1], t_load);
    printf("backend %s, %d threads; batch %d, %d context tokens, best of %d\n", sdxl_backend_ops_of(be)->name,
           sdxl_backend_threads(be), batch, tokens, reps);

    const int A = u->addition_time_embed_dim, nid = u->num_time_ids;
    const int proj = u->projection_class_embeddings_input_dim - nid * A;
    int rc = 0;
    for (int s = 0; s < n_sizes; s++) {
        const int lh = sizes[s].h / factor, lw = sizes[s].w / factor;
        sdxl_unet_shape sh = {batch, lh, lw, tokens};
        size_t bytes = 0;
        if (sdxl_unet_arena_bytes(u, &sh, &bytes, &err)) {
            printf("  %dx%d: %s\n", sizes[s].w, sizes[s].h, err.msg);
            rc = 1;
            continue;
        }
        const size_t n_sample = (size_t)batch * u->in_channels * lh * lw;
        const size_t n_out = (size_t)batch * u->out_channels * lh * lw;
        const size_t n_ctx = (size_t)batch * tokens * u->cross_attention_dim;
        float *sample = malloc(n_sample * 4), *out = malloc(n_out * 4), *ctx = malloc(n_ctx * 4);
        float *text = malloc((size_t)batch * proj * 4), *ids = malloc((size_t)batch * nid * 4);
        sdxl_arena *arena = sdxl_arena_create(bytes);
        if (!sample || !out || !ctx || !text || !ids || !arena) {
            printf("  %dx%d: out of memory (arena %.1f MiB)\n", sizes[s].w, sizes[s].h,
                   (double)bytes / 1048576.0);
            rc = 1;
        } else {
            uint32_t seed = 1234;
            fill(sample, n_sample, 1.0f, &seed);
            fill(ctx, n_ctx, 1.0f, &seed);
            fill(text, (size_t)batch * proj, 1.0f, &seed);
            for (int b = 0; b < batch; b++) {
                const float v[6] = {(float)sizes[s].h, (float)sizes[s].w, 0, 0,
                                    (float)sizes[s].h, (float)sizes[s].w};
                for (int k = 0; k < nid; k++)
                    ids[b * nid + k] = v[k % 6];
            }
            const float t = 500.0f;
            sdxl_unet_inputs in = {sh, sample, &t, 1, ctx, text, ids};
            double best = INFINITY;
            for (int r = 0; r < reps; r++) {
                double t1 = now_s();
                if (sdxl_unet_forward(be, w, &in, arena, out, NULL, &err)) {
                    printf("  %dx%d: %s\n", sizes[s].w, sizes[s].h, err.msg);
                    rc = 1;
                    break;
                }
                double dt = now_s() - t1;
                if (dt < best) best = dt;
            }
            if (isfinite(best)) {
                double sum = 0;
                for (size_t i = 0; i < n_out; i++)
                    sum += fabs(out[i]);
                printf("  %5dx%-5d latent %dx%d: forward %.3f s, arena %.1f MiB, peak RSS %.1f MiB "
                       "(mean |noise_pred| %.4f)\n",
                       sizes[s].w, sizes[s].h, lw, lh, best, (double)bytes / 1048576.0, peak_rss_mib(),
                       sum / (double)n_out);
            }
        }
        sdxl_arena_free(arena);
        free(sample);
        free(out);
        free(ctx);
        free(text);
        free(ids);
    }
    sdxl_weights_free(w);
    sdxl_backend_free(be);
    return rc;
}
