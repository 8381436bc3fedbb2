/* unet.h - the SDXL UNet (diffusers' UNet2DConditionModel with
 * addition_embed_type "text_time"), run through the op table, plus the
 * classifier-free-guidance combine.
 *
 *   t [B] ─sinusoid(block_out_channels[0])─► time_embedding (linear, act, linear) ─┐
 *   time_ids [B,6] ─sinusoid(addition_time_embed_dim) each─┐                        + ─► temb
 *   text_embeds [B,proj] ─────────────────────── concat ───┴► add_embedding MLP ───┘
 *   sample [B,in,h,w] ─conv_in─► down blocks ─► mid block ─► up blocks ─► GN, act, conv_out ─► [B,out,h,w]
 *
 *   down level l:  layers_per_block × (ResnetBlock2D [+ Transformer2DModel]) [+ conv 3×3 stride 2]
 *   mid:           resnet, transformer (mid_transformer_layers deep), resnet
 *   up block i:    (layers_per_block+1) × (concat skip, resnet [+ transformer]) [+ nearest ×2, conv 3×3]
 *   transformer:   GN (eps 1e-6), proj_in (Linear on tokens, or 1×1 conv), blocks of
 *                  LN→self-attn, LN→cross-attn(context), LN→GEGLU FF (each + residual),
 *                  proj_out, + input
 * Every size comes from the sdxl_unet_config (ARCHITECTURE rule 2): the tiny
 * test UNets and the 2.6 B-parameter SDXL UNet run through the same lines.
 *
 * Sizes: h and w must be multiples of 2^(num_levels-1) (SDXL: 4, i.e. image
 * sides multiple of 32): the upsampler is a plain nearest ×2, so every
 * downsample must halve exactly. The context may have any number of tokens
 * (77, or 154, 231, ... for long prompts).
 *
 * Memory (rule 5): every activation comes from the caller's arena; nothing
 * else is allocated. sdxl_unet_arena_bytes gives the exact size for a shape
 * (it runs the forward on a measuring arena without touching any data, so the
 * plan and the forward cannot disagree). Skip connections live until their
 * up block and are released as it consumes them; everything else is
 * transient. The feed-forward of each transformer runs in row chunks (of at
 * least 1024 rows), so at large sizes its 12·C floats per row of hidden take
 * no more memory than the attention before it.
 *
 * Thread-safety: the weights are only read; one back end and one arena per
 * concurrent forward.
 */
#ifndef SDXL_MODEL_UNET_H
#define SDXL_MODEL_UNET_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/arena.h"
#include "model/config.h"
#include "model/weights.h"

/* Caps on the run shape (beyond them a request is refused, not attempted). */
#define SDXL_UNET_MAX_BATCH 1024
#define SDXL_UNET_MAX_LATENT_SIDE 16384
#define SDXL_UNET_MAX_CONTEXT_TOKENS 65536

typedef struct sdxl_unet_shape {
    int batch;          /* B (with classifier-free guidance: 2 × images) */
    int height, width;  /* latent h, w */
    int context_tokens; /* tokens of encoder_hidden_states: 77·k */
} sdxl_unet_shape;

/* Inputs, all f32 host memory, row-major. */
typedef struct sdxl_unet_inputs {
    sdxl_unet_shape shape;
    const float *sample;    /* [B, in_channels, h, w] */
    const float *timesteps; /* [n_timesteps] */
    int n_timesteps;        /* 1 (one timestep for every row) or B */
    const float *context;   /* encoder_hidden_states [B, context_tokens, cross_attention_dim] */
    const float
        *text_embeds; /* [B, projection_class_embeddings_input_dim - num_time_ids·addition_time_embed_dim] */
    const float *time_ids; /* [B, num_time_ids]: orig h, orig w, crop top, crop left, target h, target w */
} sdxl_unet_inputs;

/* Intermediate capture. `fn` is called with the name of a module output, as
 * diffusers' forward hooks see it, and a tensor in the back end's memory
 * (read it with the back end's download; valid only during the call):
 *   time_proj [B,P], time_embedding [B,T], add_time_proj [B·6,A], add_embedding [B,T],
 *   conv_in, down_blocks.N.resnets.J, down_blocks.N.attentions.J,
 *   down_blocks.N.downsamplers.0, down_blocks.N (block output),
 *   down_blocks.N.res_samples.J (the block's skip connections, in order),
 *   mid_block.resnets.J, mid_block.attentions.0, mid_block,
 *   up_blocks.N.resnets.J, up_blocks.N.attentions.J, up_blocks.N.upsamplers.0, up_blocks.N,
 *   conv_norm_out (GroupNorm output, before the activation), conv_out   [B,C,H,W]
 *   <transformer>.proj_in ([B,h·w,C] linear, [B,C,h,w] conv projection),
 *   <transformer>.transformer_blocks.K.attn1 / .attn2 / .ff   [B,h·w,C] (before the residual add)
 * Hooks never change the result. */
typedef void (*sdxl_unet_hook_fn)(void *user_data, const char *name, const sdxl_tensor *t);
typedef struct sdxl_unet_hooks {
    sdxl_unet_hook_fn fn;
    void *user_data;
} sdxl_unet_hooks;

/* Exact arena bytes sdxl_unet_forward needs for `shape` with `cfg` (no
 * weights needed), on top of what the arena already holds when it is called
 * (the forward releases everything it allocated before it returns). INVALID_ARG for a shape out of range or
 * not divisible (message says which), BAD_INPUT for an inconsistent config, OUT_OF_MEMORY if the size does
 * not fit in size_t. */
sdxl_status sdxl_unet_arena_bytes(const sdxl_unet_config *cfg, const sdxl_unet_shape *shape, size_t *bytes,
                                  sdxl_error *err);

/* noise_pred [B, out_channels, h, w] (host) = UNet(inputs) with the UNet
 * weights of `w` (config: sdxl_weights_config(w)->unet). `hooks` may be NULL.
 * With a measuring arena nothing is computed or read (inputs and noise_pred
 * may be NULL): the arena records what the forward would use.
 * Errors: INVALID_ARG (shape, timesteps count, NULL input), OUT_OF_MEMORY
 * (arena too small: the message gives the size needed), NOT_FOUND (a weight
 * is missing), and whatever an op reports (the message names the module). */
sdxl_status sdxl_unet_forward(sdxl_backend *be, const sdxl_weights *w, const sdxl_unet_inputs *in,
                              sdxl_arena *arena, float *noise_pred, const sdxl_unet_hooks *hooks,
                              sdxl_error *err);

/* Classifier-free guidance on a batch-2B prediction, host memory, as the
 * diffusers SDXL pipeline computes it in f32:
 *   pred [2B, n] = [uncond (rows 0..B-1); cond (rows B..2B-1)]
 *   cfg = uncond + guidance · (cond − uncond)
 *   guidance_rescale > 0 (rescale_noise_cfg, arXiv 2305.08891 §3.4):
 *     cfg = r · cfg · std(cond)/std(cfg) + (1 − r) · cfg, per row, std over the
 *     row's n values with Bessel's correction (torch.std)
 * out [B, n] may be pred itself (the first half is overwritten). A row whose
 * cfg has zero spread is left unrescaled (torch would produce NaN).
 * INVALID_ARG for B < 1, n < 1 (n < 2 with rescale: no std), NULL pointers,
 * or a non-finite guidance / rescale. Thread-safe. */
sdxl_status sdxl_unet_cfg_combine(const float *pred, int B, int64_t n, double guidance,
                                  double guidance_rescale, float *out, sdxl_error *err);

#endif
