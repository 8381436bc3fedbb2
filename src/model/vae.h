/* vae.h - the SDXL VAE (diffusers' AutoencoderKL): decoder, encoder, tiling,
 * and the image conversions around them, run through the op table.
 *
 *   decode:  latents [B,lat,h,w] (pipeline space) ─► z = latents / scaling_factor (+ shift)
 *            ─► post_quant_conv (1x1) ─► decoder.conv_in (3x3)
 *            ─► mid block: resnet, attention, resnet
 *            ─► up_blocks.i, i = 0..L-1: layers_per_block+1 resnets, then (i < L-1)
 *               nearest x2 + 3x3 conv
 *            ─► GroupNorm + SiLU ─► conv_out ─► image [B,3,H,W], about [-1,1]
 *   encode:  image [B,3,H,W] in [-1,1] ─► encoder.conv_in
 *            ─► down_blocks.i: layers_per_block resnets, then (i < L-1) zero pad
 *               (right 1, bottom 1) + 3x3 stride-2 conv
 *            ─► mid block ─► GroupNorm + SiLU ─► conv_out (2·lat) ─► quant_conv (1x1)
 *            ─► posterior mean = channels [0,lat), logvar = [lat,2·lat) clamped to [-30,20]
 *
 * H = h·f, W = w·f with f = 2^(L-1) (sdxl_vae_factor; SDXL 8). Every size comes
 * from the sdxl_vae_config (ARCHITECTURE rule 2). Blocks (diffusers 0.27):
 *   resnet     h = conv1(act(GN1(x))); h = conv2(act(GN2(h))); out = shortcut(x) + h,
 *              shortcut = 1x1 conv_shortcut when channels change, else identity
 *   attention  one head of C channels over all h·w tokens of the sample:
 *              t = GN(x) as tokens [h·w, C]; out = x + to_out(softmax(q kᵀ/√C) v),
 *              q/k/v/to_out Linear [C,C] (SGM's 1x1 convs are the same weights)
 *   GroupNorm  norm_num_groups groups, eps = cfg.norm_eps (1e-6 in every VAE block)
 *
 * Latent scaling (done inside decode, so callers pass what the UNet produced):
 *   z = latents · std_c / scaling_factor + mean_c   when the config has latents_mean/std
 *   z = latents / scaling_factor + shift_factor      when it has shift_factor
 *   z = latents / scaling_factor                     otherwise (SDXL: 0.13025)
 * sdxl_vae_encode returns the posterior (mean, logvar) unscaled; for img2img
 * sdxl_vae_scale_latents maps it to pipeline space (the inverse of the rule
 * above). diffusers' img2img draws latent_dist.sample() = mean + std·ε before
 * scaling; this engine's convention is the posterior MEAN (deterministic,
 * the "argmax" mode); a caller wanting diffusers' sampling adds
 * exp(0.5·logvar)·ε to the mean before scaling.
 *
 * Precision: activations are always f32, whatever the weights' dtype (the
 * ops widen f16/bf16 weights). SDXL's VAE overflows in f16 (its config says
 * force_upcast); there is deliberately no half-precision path.
 *
 * Tiling (large images). The whole decoder runs on overlapping latent tiles
 * of at most tile x tile: per axis the fewest tiles that let neighbours
 * share `overlap` latent pixels, shrunk to the least size that still does,
 * the first and last on the image edges, the rest evenly between. Each
 * tile's output is weighted by a separable ramp that rises linearly from the
 * tile's inner edges over `overlap`·f pixels (edges on the image border do
 * not fade), the weights are normalised to sum to 1 at every pixel, and the
 * weighted tiles are summed: where one tile covers a pixel it is that tile's
 * output exactly, where two overlap it is a linear cross-fade. Encoding
 * tiles the image the same way (tile·f pixels) and blends the moments (mean
 * and logvar, before the clamp). Tiling is not exact: GroupNorm statistics
 * and the mid-block attention see one tile instead of the whole image, so
 * tiled output differs from untiled; tests/model/test_vae.c states the bound
 * measured on the test models. Modes: OFF, ON (tiles whenever the latent is
 * larger than one tile), AUTO (default: untiled while the untiled plan fits
 * in `auto_max_bytes`, else tiled). Defaults and the measurements behind
 * them: see the top of vae.c.
 *
 * Memory (ARCHITECTURE rule 5): activations come from `arena` only. A
 * planner simulates the pass (shapes only), records every buffer's size and
 * lifetime, and packs them into one block (largest first, at the lowest
 * offset free of every buffer alive at the same time); sdxl_vae_plan_*
 * report that block's size, and decode/encode take exactly one block of that
 * size from the arena (mark/reset around the call). Besides the arena only
 * the back end's own op scratch is used (documented per op in backend.h) and
 * about 70 KiB of stack (the planner's tables, and a 16 KiB buffer through
 * which host data moves with the back end's upload/download), so latents,
 * images and outputs are HOST memory on every back end. The arena is only
 * touched through ops and upload/download.
 * A measuring arena passed to decode/encode records the block and computes
 * nothing.
 *
 * Weights are looked up by internal name ("vae.decoder.up_blocks.0.resnets.1.conv1.weight")
 * on every call and never cached, so both layouts run the same lines and a
 * swapped weight (weights.h, LoRA hook) is seen by the next call.
 *
 * Thread-safety: the weights are only read; one back end and one arena per
 * concurrent call. All functions are reentrant.
 */
#ifndef SDXL_MODEL_VAE_H
#define SDXL_MODEL_VAE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/arena.h"
#include "model/config.h"
#include "model/weights.h"

/* Largest image side accepted, in pixels (a request cap is smaller). */
#define SDXL_VAE_MAX_SIDE 32768

typedef enum sdxl_vae_tiling {
    SDXL_VAE_TILING_AUTO = 0, /* untiled while the untiled plan fits auto_max_bytes */
    SDXL_VAE_TILING_OFF,      /* never tile */
    SDXL_VAE_TILING_ON,       /* tile whenever the latent is larger than one tile */
} sdxl_vae_tiling;

typedef struct sdxl_vae_params {
    sdxl_vae_tiling tiling;
    int tile;              /* tile edge in LATENT pixels (image tile = tile·f), >= 1 */
    int overlap;           /* latent pixels shared by neighbouring tiles, 0 <= 2·overlap <= tile */
    size_t auto_max_bytes; /* AUTO: the largest untiled arena block accepted */
    int batch_per_pass;    /* samples run through the network together; 0 = all of B */
    /* Called after each pass (one tile of one batch slice); returning false
     * stops the call with SDXL_STATUS_CANCELLED. NULL: none. */
    bool (*progress)(void *user_data, int passes_done, int passes_total);
    void *user_data;
} sdxl_vae_params;

/* AUTO tiling, tile 128, overlap 16, auto_max_bytes 3 GiB, 1 sample per
 * pass (the measurements behind these are in vae.c). */
sdxl_vae_params sdxl_vae_default_params(void);

/* Spatial factor image/latent: 2^(num_levels-1). */
int sdxl_vae_factor(const sdxl_vae_config *cfg);

/* What a decode or encode of B images of H x W pixels will do. */
typedef struct sdxl_vae_plan {
    size_t arena_bytes;   /* the one block taken from the arena */
    size_t untiled_bytes; /* what an untiled pass would need (for reports) */
    bool tiled;           /* false: one pass over the whole latent per batch slice */
    int tile_h, tile_w;   /* latent extent of a pass (the whole latent when untiled) */
    int tiles_y, tiles_x; /* tile grid (1 x 1 untiled) */
    int batch_per_pass;   /* samples per pass */
    int passes;           /* tiles_y · tiles_x · ceil(B / batch_per_pass) */
} sdxl_vae_plan;

/* Plan a decode / encode of B images of H x W pixels (H, W multiples of the
 * factor). params NULL: defaults. Errors: INVALID_ARG (sizes, params),
 * UNSUPPORTED (a config deeper than the planner's table). Reentrant. */
sdxl_status sdxl_vae_plan_decode(const sdxl_vae_config *cfg, const sdxl_vae_params *params, int B, int H,
                                 int W, sdxl_vae_plan *out, sdxl_error *err);
sdxl_status sdxl_vae_plan_encode(const sdxl_vae_config *cfg, const sdxl_vae_params *params, int B, int H,
                                 int W, sdxl_vae_plan *out, sdxl_error *err);

/* Decode B latents [B,lat,h,w] (pipeline space: the scaling is applied
 * inside, see above) into image [B,out_channels,h·f,w·f] (both host f32
 * NCHW, caller-owned; image values are about [-1,1], not clamped).
 * Errors: INVALID_ARG (NULL, sizes, params), OUT_OF_MEMORY (arena smaller
 * than the plan says), NOT_FOUND (a VAE weight missing), CANCELLED
 * (progress said stop; image is then incomplete), and whatever an op
 * reports. */
sdxl_status sdxl_vae_decode(sdxl_backend *be, const sdxl_weights *w, const sdxl_vae_params *params,
                            const float *latents, int B, int h, int wd, sdxl_arena *arena, float *image,
                            sdxl_error *err);

/* Encode B images [B,in_channels,H,W] (host f32, values in [-1,1]) into the
 * posterior: mean and logvar [B,lat,H/f,W/f] (host, caller-owned; logvar
 * clamped to [-30,20] as diffusers' DiagonalGaussianDistribution does).
 * logvar may be NULL when only the mean is wanted. Errors as decode. */
sdxl_status sdxl_vae_encode(sdxl_backend *be, const sdxl_weights *w, const sdxl_vae_params *params,
                            const float *image, int B, int H, int W, sdxl_arena *arena, float *mean,
                            float *logvar, sdxl_error *err);

/* Posterior values x [B,lat,h,w] (e.g. the encode mean) -> pipeline latents
 * (the inverse of decode's scaling): (x - mean_c)·scaling/std_c,
 * (x - shift)·scaling, or x·scaling. out may alias x. */
void sdxl_vae_scale_latents(const sdxl_vae_config *cfg, const float *x, int B, int h, int w, float *out);

/* Image [B,3,H,W] f32 (decoder output, about [-1,1]) -> 8-bit RGB [B,H,W,3]
 * (row-major, interleaved), exactly as diffusers' postprocess + numpy_to_pil:
 * v = clamp(x/2 + 0.5, 0, 1) in f32, then round(v·255) with round-half-to-
 * even (numpy's round), NaN -> 0. Channels beyond 3 are not read. */
void sdxl_vae_image_to_rgb8(const float *image, int B, int H, int W, uint8_t *rgb);

/* 8-bit RGB [B,H,W,3] -> image [B,3,H,W] in [-1,1] (diffusers' preprocess:
 * x/255·2 - 1), the encoder's input. */
void sdxl_vae_rgb8_to_image(const uint8_t *rgb, int B, int H, int W, float *image);

#endif
