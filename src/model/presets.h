/* presets.h - built-in SDXL model configurations, as the diffusers config
 * files they would be in a model folder.
 *
 * A preset is the text of model_index.json, unet/config.json,
 * vae/config.json, text_encoder/config.json, text_encoder_2/config.json and
 * scheduler/scheduler_config.json. That text is the one source of truth:
 * sdxl_model_preset_config turns it into an sdxl_model_config with the same
 * parsers that read a folder (config.h), and `sdxl make-model --layout
 * diffusers` writes it out verbatim, so a preset and a folder written from it
 * cannot disagree, and there is no second config format.
 *
 *   sdxl-base  Stable Diffusion XL base 1.0, the real sizes: UNet 320/640/1280,
 *              2 resnets per block, transformer depth 1/2/10 (mid 10), heads
 *              5/10/20, cross-attention 2048, add-time 256, add-embedding
 *              input 2816 (2.57 B parameters); VAE 128/256/512/512, 2 resnets,
 *              scaling 0.13025; text_encoder CLIP ViT-L (768, 12 layers, 12
 *              heads, 3072, quick_gelu); text_encoder_2 OpenCLIP bigG (1280,
 *              32 layers, 20 heads, 5120, gelu, projection 1280); vocab 49408;
 *              force_zeros_for_empty_prompt; EulerDiscrete as SDXL base.
 *   tiny       SDXL in miniature (6.3 M parameters, half in the two token
 *              tables) for quick tests: the same block pattern (UNet levels
 *              32/64/64 with attention at levels 1 and 2, VAE with 4 levels so
 *              the latent is 1/8 of the image), quick_gelu / gelu encoders of
 *              different depths, a non-square text_projection (32 -> 16), and
 *              the full CLIP vocabulary so prompts tokenize as in SDXL and a
 *              single file loads with the standard tokenizers.
 *
 * Thread-safety: presets are static constant data.
 */
#ifndef SDXL_MODEL_PRESETS_H
#define SDXL_MODEL_PRESETS_H

#include <stddef.h>

#include "core/status.h"
#include "model/config.h"

typedef struct sdxl_model_preset {
    const char *name;    /* "sdxl-base", "tiny" */
    const char *summary; /* one line, for --help */
    const char *model_index_json;
    const char *unet_json, *vae_json, *te1_json, *te2_json; /* the four config.json */
    const char *scheduler_json;                             /* scheduler/scheduler_config.json */
} sdxl_model_preset;

size_t sdxl_model_preset_count(void);
const sdxl_model_preset *sdxl_model_preset_at(size_t i);           /* NULL if out of range */
const sdxl_model_preset *sdxl_model_preset_find(const char *name); /* exact name; NULL if none */

/* Parse a preset's text into *cfg (which must not own anything; zeroed on
 * failure) and validate it. scheduler_json becomes the preset's scheduler
 * text. Errors: INVALID_ARG (NULL), BAD_INPUT / UNSUPPORTED (a preset that
 * does not parse: a bug, reported like a bad folder), OUT_OF_MEMORY. */
sdxl_status sdxl_model_preset_config(const sdxl_model_preset *p, sdxl_model_config *cfg, sdxl_error *err);

#endif
