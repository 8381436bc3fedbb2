"""Configurations of the tiny SDXL test variants made by make_variant.py.

Every variant is a valid diffusers StableDiffusionXLPipeline. They differ from the shipped tiny model
(shared/refs/tiny-sdxl: UNet (32,64) lpb 2, heads (2,4) -> head dim 16, linear proj, groups 32, add-time 8,
TEs hidden 32 x 5 layers gelu, VAE [32,64] lpb 1, scaling 0.13025, 64x64 image) and from each other in every
value a loader must read from the configs. Widths are tiny so that a variant (weights twice: diffusers +
single file, plus references) stays near 1.5 MB.

Keys:
  seed        base seed (UNet: seed, VAE: seed+1, TE1 then TE2: seed+2, perturbation: seed+3)
  image       (H, W) in pixels used for every reference (latent = image / vae_scale_factor)
  unet/vae/te1/te2   constructor arguments; derived values are filled in by make_variant.derive()
  scheduler   overrides of SDXL base's EulerDiscreteScheduler config
"""

D, C = "DownBlock2D", "CrossAttnDownBlock2D"

VARIANTS = {
    # SD1.5-style 1x1-conv proj_in/proj_out inside an SDXL-conditioned UNet; upcast_attention; quick_gelu TE1.
    "v1_convproj": dict(
        seed=101,
        image=(16, 16),
        summary="2-level UNet (8,16), conv proj_in/out (use_linear_projection false), upcast_attention, groups 8, "
                "head dim 16; TE1 quick_gelu 8-wide, TE2 16-wide with projection 8; 2-level VAE, scaling 0.5",
        unet=dict(block_out_channels=[8, 16], layers_per_block=1, down_block_types=[D, C],
                  transformer_layers_per_block=[1, 2], attention_head_dim=[2, 1], use_linear_projection=False,
                  upcast_attention=True, norm_num_groups=8, addition_time_embed_dim=4),
        vae=dict(block_out_channels=[8, 8], layers_per_block=1, norm_num_groups=8, scaling_factor=0.5),
        te1=dict(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                 hidden_act="quick_gelu", vocab_size=914),
        te2=dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=40,
                 hidden_act="gelu", projection_dim=8, vocab_size=914),
        scheduler={},
    ),
    # The real SDXL block structure: 3 levels, DownBlock2D + 2x CrossAttnDownBlock2D, lpb 2, constant head size,
    # 4-level VAE (factor 8), TE1 quick_gelu (CLIP-L), TE2 gelu with projection_dim == hidden (bigG).
    "v2_sdxl3lvl": dict(
        seed=202,
        image=(64, 64),
        summary="3-level UNet (4,8,12) like real SDXL (DownBlock2D + 2x CrossAttnDownBlock2D), lpb 2, transformer layers "
                "(1,1,2) (mid uses the last: 2), heads (1,2,3) -> constant head dim 4 (SDXL: heads (5,10,20), dim 64), "
                "groups 4; 4-level VAE, scaling 0.18215",
        unet=dict(block_out_channels=[4, 8, 12], layers_per_block=2, down_block_types=[D, C, C],
                  transformer_layers_per_block=[1, 1, 2], attention_head_dim=[1, 2, 3], use_linear_projection=True,
                  upcast_attention=False, norm_num_groups=4, addition_time_embed_dim=8),
        vae=dict(block_out_channels=[4, 4, 8, 8], layers_per_block=1, norm_num_groups=4, scaling_factor=0.18215),
        te1=dict(hidden_size=12, num_hidden_layers=3, num_attention_heads=3, intermediate_size=32,
                 hidden_act="quick_gelu", vocab_size=1000),
        te2=dict(hidden_size=8, num_hidden_layers=2, num_attention_heads=1, intermediate_size=16,
                 hidden_act="gelu", projection_dim=8, vocab_size=1000),
        scheduler={},
    ),
    # Non-square 32x48 image, attention at level 0 only (SD1.5-like placement), lpb 3, scalar (int) heads and
    # transformer layers, 3-level VAE, "trailing" timestep spacing, TE2 with eos_token_id = the real eos id.
    "v3_nonsquare": dict(
        seed=303,
        image=(32, 48),
        summary="non-square 32x48 image (latent 8x12), UNet (8,16) with attention at level 0 (CrossAttnDownBlock2D + "
                "DownBlock2D), lpb 3, int transformer_layers_per_block 1 and int attention_head_dim 1 (head dim 8 at "
                "level 0, 16 in the mid block), groups 2; 3-level VAE, scaling 0.3; Euler 'trailing' spacing",
        unet=dict(block_out_channels=[8, 16], layers_per_block=3, down_block_types=[C, D],
                  transformer_layers_per_block=1, attention_head_dim=1, use_linear_projection=True,
                  upcast_attention=False, norm_num_groups=2, addition_time_embed_dim=6),
        vae=dict(block_out_channels=[4, 8, 8], layers_per_block=1, norm_num_groups=2, scaling_factor=0.3),
        te1=dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=1, intermediate_size=32,
                 hidden_act="gelu", vocab_size=914),
        te2=dict(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
                 hidden_act="quick_gelu", projection_dim=12, vocab_size=914, eos_token_id=913),
        scheduler=dict(timestep_spacing="trailing"),
    ),
    # Attention only in the mid block (both levels DownBlock2D), head dim 24 (not a power of two); TE1 with ONE layer, so the
    # "penultimate" hidden state SDXL uses is the embedding output; latent 12x12 (6x6 = 36 tokens in the mid block).
    "v4_midattn": dict(
        seed=404,
        image=(24, 24),
        summary="UNet (8,24) with no attention in the down/up blocks (DownBlock2D x2), only the mid block: 1 head of "
                "dim 24, groups 1, add-time dim 10; TE1 has 1 layer (penultimate = embeddings); latent 12x12; "
                "2-level VAE lpb 2, scaling 0.25",
        unet=dict(block_out_channels=[8, 24], layers_per_block=1, down_block_types=[D, D],
                  transformer_layers_per_block=[1, 1], attention_head_dim=[4, 1], use_linear_projection=True,
                  upcast_attention=False, norm_num_groups=1, addition_time_embed_dim=10),
        vae=dict(block_out_channels=[4, 8], layers_per_block=2, norm_num_groups=4, scaling_factor=0.25),
        te1=dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=16,
                 hidden_act="gelu", vocab_size=1000),
        te2=dict(hidden_size=8, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
                 hidden_act="quick_gelu", projection_dim=16, vocab_size=914),
        scheduler={},
    ),
}

# Made only when named (--variant v5_hd32): head dim 32 needs a 32-channel level, and with it the variant is about
# 1.9 MB (the UNet alone is 152k parameters, stored twice), over the ~1.5 MB budget of tests/data.
EXTRA_VARIANTS = {
    "v5_hd32": dict(VARIANTS["v4_midattn"], seed=505,
                    summary="v4_midattn with UNet (8,32): mid-block attention with 1 head of dim 32",
                    unet=dict(VARIANTS["v4_midattn"]["unet"], block_out_channels=[8, 32])),
}

# SDXL base's scheduler config (the shipped tiny-sdxl uses the same).
SDXL_EULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  trained_betas=None, prediction_type="epsilon", interpolation_type="linear", use_karras_sigmas=False,
                  sigma_min=None, sigma_max=None, timestep_spacing="leading", timestep_type="discrete", steps_offset=1,
                  rescale_betas_zero_snr=False)

PROMPTS = ["a photo of a cat",
           "A Photo of an ASTRONAUT, riding a Horse on MARS!!! (8k, ultra-detailed)"]
NEGATIVE = "blurry, low quality"

SEEDS = dict(unet_latent=1234, vae_latent=4321, pipeline_latent=2024)
TIMESTEP = 501.0
GUIDANCE = 5.0
PIPELINE_STEPS = 3
