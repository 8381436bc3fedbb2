/* config.h - architecture sizes of an SDXL model: UNet, VAE, both CLIP text
 * encoders, pipeline flags and the raw scheduler config.
 *
 * ARCHITECTURE rule 2: model code reads every size from these structs, never
 * from constants, so the tiny test models and the 2.6 B-parameter UNet run
 * through the same lines. The structs hold what diffusers' configs say, in
 * a form the model code can use directly (per-level arrays, up blocks
 * already reversed, head counts resolved).
 *
 * Two sources:
 *
 * (a) A diffusers folder: model_index.json + unet/, vae/, text_encoder/,
 *     text_encoder_2/ config.json (+ scheduler/scheduler_config.json).
 *     Parsed defensively: a wrong type, an out-of-range value, a list of the
 *     wrong length or a setting this engine does not implement is an error
 *     naming the file and the field (BAD_INPUT / UNSUPPORTED).
 *
 * (b) A Stability "SGM" single-file checkpoint. It has no config, so the
 *     sizes are INFERRED from tensor shapes (sdxl_model_config_infer_sgm),
 *     like ComfyUI's model detection; what shapes cannot tell comes from, in
 *     this order of precedence: caller hints > the sidecar yaml
 *     (<checkpoint stem>.yaml, A1111 style) > the file's __metadata__ >
 *     SDXL defaults. The rules, with K = "model.diffusion_model.":
 *
 *     UNet
 *       model_channels C0, in_channels, conv_in kernel  <- K input_blocks.0.0.weight [C0,in,k,k]
 *       out_channels, conv_out kernel                   <- K out.2.weight
 *       layers_per_block N   = (index of the first input_blocks.*.0.op) - 1,
 *                              or (number of input_blocks - 1) with one level
 *       levels L             = number of input_blocks / (N+1) (must divide)
 *       block_out_channels[l]<- K input_blocks.(1+l(N+1)).0.out_layers.3.weight [C,..]
 *       attention at level l <- presence of ...input_blocks.(1+l(N+1)).1.proj_in.weight
 *                               (up blocks: output_blocks.(i(N+1)).1.proj_in.weight)
 *       transformer depth    <- number of transformer_blocks.* of each attention
 *                               (must be equal within a level; mid block separately)
 *       cross_attention_dim  <- attn2.to_k.weight [C, ctx] of the first attention
 *       use_linear_projection<- proj_in.weight is 2-D (4-D: 1x1 conv)
 *       time_embed_dim       <- K time_embed.0.weight [T, C0]
 *       projection_class_embeddings_input_dim <- K label_emb.0.0.weight [T, adm]
 *       addition_time_embed_dim = (adm - TE2 projection_dim) / 6 (must divide;
 *                               the yaml's ConcatTimestepEmbedderND outdim is
 *                               cross-checked)
 *       heads per level      = C[l] / num_head_channels; num_head_channels is
 *                               64 (SDXL) unless a hint / the yaml / the
 *                               metadata says (num_head_channels, or num_heads
 *                               when num_head_channels is -1 or absent, as
 *                               SGM's UNetModel; or the hint
 *                               unet.num_heads); it must divide the channels
 *                               of every level with attention (else BAD_INPUT
 *                               asking for a yaml or hint); levels without
 *                               attention get max(1, C/hc)
 *       fixed by the SGM UNetModel code: norm_num_groups 32, norm_eps 1e-5,
 *       flip_sin_to_cos, freq_shift 0, silu, no upcast, 6 time ids (groups
 *       and upcast can be restated: nonstandard block / hints below);
 *       sample_size 128 (SDXL's; not stored in the file)
 *     VAE (first_stage_model.)
 *       levels               = number of encoder.down.*
 *       block_out_channels[i]<- encoder.down.i.block.0.conv1.weight [C,..]
 *       layers_per_block     = number of encoder.down.0.block.*
 *       latent_channels      <- decoder.conv_in.weight [C, lat, ..]
 *       in / out channels    <- encoder.conv_in / decoder.conv_out
 *       scaling_factor       <- hint > yaml model.params.scale_factor >
 *                               metadata "scaling_factor" > 0.13025 (SDXL)
 *       norm_num_groups 32, force_upcast true (SDXL's VAE overflows in f16)
 *     TE1 (conditioner.embedders.0.transformer.text_model.: HF CLIP names)
 *     TE2 (conditioner.embedders.1.model.: OpenCLIP names)
 *       vocab, hidden        <- token_embedding.weight [V,H]
 *       max positions        <- position_embedding.weight / positional_embedding [P,H]
 *       layers               = number of encoder.layers.* / transformer.resblocks.*
 *       intermediate         <- mlp.fc1.weight / mlp.c_fc.weight [I,H]
 *       projection_dim (TE2) <- text_projection [H, proj] (stored transposed), or
 *                               text_projection.weight [proj, H] (Linear form)
 *       heads                = hint > yaml (our extension key
 *                              num_attention_heads in the embedder's params)
 *                              > H/64 when H >= 512 and 64 | H (every real
 *                              CLIP text tower) > 4 when 4 | H (the
 *                              convention of the tiny CLIP test models)
 *       hidden_act           = hint > yaml (extension key hidden_act) >
 *                              quick_gelu (TE1, real CLIP-L) / gelu (TE2, bigG)
 *       hidden_state_index   = yaml layer_idx (TE1) > layers-1 (penultimate)
 *       eps 1e-5, bos 0 / eos 2 / pad 1 (CLIP's config: eos 2 => argmax pooling)
 *     Values the yaml states that the shapes also determine (model_channels,
 *     channel_mult, num_res_blocks, transformer_depth(_middle), context_dim,
 *     adm_in_channels, ddconfig ch / ch_mult / num_res_blocks / z_channels)
 *     are cross-checked: a disagreement is BAD_INPUT naming both values.
 *
 *     Extension: a top-level `nonstandard:` block in the sidecar yaml (SGM
 *     ignores unknown top-level keys) states what SGM's format cannot; the
 *     test variants (tests/data/refs/variants) carry one. Its values sit at
 *     the yaml's precedence level and go through the same parsing and
 *     validation as the hints below; those the shapes determine are
 *     cross-checked (BAD_INPUT naming file, line and both values):
 *       nonstandard:
 *         unet_norm_num_groups: 8          -> hint unet.norm_num_groups
 *         unet_upcast_attention: true      -> hint unet.upcast_attention
 *         unet_heads_per_level: [2, 1]     -> per-level heads (wins over
 *                                             num_heads / num_head_channels,
 *                                             which must agree on every
 *                                             level with attention); an int
 *                                             is one value for all levels
 *         unet_addition_time_embed_dim: 4  cross-checked with the shapes
 *         vae_norm_num_groups: 8           -> hint vae.norm_num_groups
 *         vae_scaling_factor: 0.5          -> hint scaling_factor (must equal
 *                                             model.params.scale_factor if
 *                                             both are given)
 *         vae_shift_factor: 0.1            -> hint shift_factor
 *         text_encoder: {...}              TE1, transformers' CLIPTextConfig
 *         text_encoder_2: {...}            names: vocab_size, hidden_size,
 *               intermediate_size, num_hidden_layers, max_position_embeddings,
 *               projection_dim (TE2 only; TE1 has none) are cross-checked;
 *               num_attention_heads, hidden_act, layer_norm_eps,
 *               bos_token_id, eos_token_id, pad_token_id, hidden_state_index
 *               -> hints te1.* / te2.*
 *     Other keys in the block (comment, ...) are ignored.
 *
 * Hints ("key", "value" pairs; the same keys are read from __metadata__):
 *   scaling_factor, shift_factor           VAE latent scale / shift
 *   unet.num_head_channels                 one head width for every level
 *   unet.num_heads                         "20" or a per-level list "5,10,20"
 *   te1.hidden_act, te2.hidden_act         gelu | quick_gelu | gelu_new | gelu_pytorch_tanh
 *   te1.num_attention_heads, te2.num_attention_heads
 *   te1.hidden_state_index, te2.hidden_state_index
 *   te1.layer_norm_eps, te2.layer_norm_eps  in (0, 0.5)
 *   te1.bos_token_id, te1.eos_token_id, te1.pad_token_id (and te2.*)
 *                                          integers; eos_token_id also sets the
 *                                          pooling rule (legacy iff 2)
 *   unet.norm_num_groups, vae.norm_num_groups  GroupNorm groups (SGM: 32)
 *   unet.upcast_attention                  true | false
 *   force_zeros_for_empty_prompt           true | false
 * sdxl_weights_write_single_file writes all of these (but shift_factor only
 * when set) into __metadata__, so a single file of ours describes itself
 * without a yaml.
 * A caller hint that is not one of these, or has a bad value, is
 * INVALID_ARG; a bad value in metadata/yaml is BAD_INPUT naming its source.
 * Unknown metadata keys are ignored (files carry all sorts of metadata).
 *
 * Thread-safety: all functions are reentrant; a config is plain data.
 */
#ifndef SDXL_MODEL_CONFIG_H
#define SDXL_MODEL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

typedef struct sdxl_st_file sdxl_st_file;

#define SDXL_MAX_LEVELS 8
#define SDXL_MAX_LATENT_CHANNELS 64

/* ---- caps against absurd values (sizes from untrusted files) ------------- */
#define SDXL_CFG_MAX_CHANNELS 16384
#define SDXL_CFG_MAX_LAYERS_PER_BLOCK 16
#define SDXL_CFG_MAX_TRANSFORMER_LAYERS 64
#define SDXL_CFG_MAX_TE_LAYERS 128
#define SDXL_CFG_MAX_TE_HIDDEN 16384
#define SDXL_CFG_MAX_TE_INTERMEDIATE 65536
#define SDXL_CFG_MAX_VOCAB (1 << 20)
#define SDXL_CFG_MAX_POSITIONS 8192
#define SDXL_CFG_MAX_SAMPLE_SIZE 65536

typedef enum sdxl_act {
    SDXL_ACT_GELU = 0,   /* exact erf GELU ("gelu") */
    SDXL_ACT_QUICK_GELU, /* x * sigmoid(1.702 x) (real CLIP-L) */
    SDXL_ACT_GELU_TANH,  /* tanh approximation ("gelu_new", "gelu_pytorch_tanh") */
    SDXL_ACT_SILU,       /* x * sigmoid(x) (UNet/VAE act_fn) */
    SDXL_ACT_COUNT_
} sdxl_act;

/* "gelu", "quick_gelu", "gelu_tanh", "silu". */
const char *sdxl_act_name(sdxl_act a);
/* HF / diffusers spelling -> enum ("gelu_new" and "gelu_pytorch_tanh" ->
 * GELU_TANH, "swish" -> SILU); false if unknown. */
bool sdxl_act_from_name(const char *s, sdxl_act *out);

/* UNet2DConditionModel, SDXL flavour (addition_embed_type "text_time").
 * Levels l = 0..num_levels-1 run from the full-resolution one down. Up block
 * i (diffusers' up_blocks.i) works on level num_levels-1-i; its arrays below
 * are indexed by i and already reversed. */
typedef struct sdxl_unet_config {
    int in_channels, out_channels;
    int num_levels;
    int block_out_channels[SDXL_MAX_LEVELS];
    int layers_per_block;                         /* resnets per down block; up blocks have one more */
    bool down_has_attn[SDXL_MAX_LEVELS];          /* CrossAttnDownBlock2D vs DownBlock2D */
    int down_transformer_layers[SDXL_MAX_LEVELS]; /* BasicTransformerBlocks per attention (0 without) */
    int down_num_heads[SDXL_MAX_LEVELS];          /* heads; head dim = channels / heads */
    bool up_has_attn[SDXL_MAX_LEVELS];            /* by up block */
    int up_transformer_layers[SDXL_MAX_LEVELS];   /* by up block */
    int up_num_heads[SDXL_MAX_LEVELS];            /* by up block */
    int mid_transformer_layers;                   /* UNetMidBlock2DCrossAttn (diffusers: the last level's) */
    int mid_num_heads;
    int cross_attention_dim;    /* context width = TE1 hidden + TE2 hidden */
    bool use_linear_projection; /* proj_in/out Linear [C,C] (else 1x1 conv) */
    bool upcast_attention;
    int ff_mult;        /* GEGLU inner = ff_mult*C; always 4 in diffusers */
    int time_proj_dim;  /* sinusoidal timestep width = block_out_channels[0] */
    int time_embed_dim; /* time_embedding out (4*block_out_channels[0] unless set) */
    bool flip_sin_to_cos;
    double freq_shift;
    int addition_time_embed_dim;               /* width of each time-id embedding (SDXL 256) */
    int num_time_ids;                          /* 6: orig h,w, crop top,left, target h,w */
    int projection_class_embeddings_input_dim; /* num_time_ids*addition_time_embed_dim + TE2 proj */
    int norm_num_groups;
    double norm_eps;
    int conv_in_kernel, conv_out_kernel;
    sdxl_act act_fn; /* silu */
    int sample_size; /* default latent size (height/8) */
} sdxl_unet_config;

/* AutoencoderKL. Encoder level i = down_blocks.i; decoder up block i works on
 * level num_levels-1-i. Both have a mid block with one attention. */
typedef struct sdxl_vae_config {
    int in_channels, out_channels, latent_channels;
    int num_levels;
    int block_out_channels[SDXL_MAX_LEVELS];
    int layers_per_block; /* encoder; the decoder has one more */
    int norm_num_groups;
    double norm_eps;       /* 1e-6 (fixed in diffusers' VAE blocks) */
    double scaling_factor; /* latents = posterior * scaling_factor */
    bool has_shift_factor;
    double shift_factor; /* latents = (posterior - shift) * scale, if set */
    bool has_latents_mean_std;
    double latents_mean[SDXL_MAX_LATENT_CHANNELS], latents_std[SDXL_MAX_LATENT_CHANNELS];
    bool force_upcast;            /* run in f32 even for an f16 model */
    bool mid_block_add_attention; /* always true for SDXL */
    sdxl_act act_fn;
    int sample_size;
} sdxl_vae_config;

/* CLIPTextModel (TE1) / CLIPTextModelWithProjection (TE2). */
typedef struct sdxl_te_config {
    int hidden_size, intermediate_size, num_layers, num_heads;
    int max_position_embeddings, vocab_size;
    sdxl_act hidden_act;
    double layer_norm_eps;
    int projection_dim;   /* text_projection [proj, hidden] (TE2) */
    bool with_projection; /* TE2: has text_projection */
    int bos_token_id, eos_token_id, pad_token_id;
    /* Pooling rule of transformers' CLIPTextTransformer: eos_token_id == 2
     * (every real CLIP config) => the row at argmax(input_ids) ("legacy");
     * else the first position holding eos_token_id. */
    bool legacy_pooling;
    /* Which hidden state the SDXL conditioning reads: index into
     * hidden_states (0 = embeddings, i = after layer i, no final LN). SDXL:
     * num_layers-1, i.e. hidden_states[-2]. */
    int hidden_state_index;
} sdxl_te_config;

typedef struct sdxl_pipeline_config {
    bool force_zeros_for_empty_prompt; /* absent negative prompt -> zero embeds and pooled */
} sdxl_pipeline_config;

typedef struct sdxl_model_config {
    sdxl_unet_config unet;
    sdxl_vae_config vae;
    sdxl_te_config te[2]; /* [0] = text_encoder (CLIP-L), [1] = text_encoder_2 (bigG) */
    sdxl_pipeline_config pipeline;
    /* scheduler/scheduler_config.json verbatim (sdxl_malloc; freed by
     * sdxl_model_config_clear). For a single file, SDXL base's scheduler
     * config, and scheduler_is_default is true. */
    char *scheduler_json;
    bool scheduler_is_default;
} sdxl_model_config;

/* Release what a config owns (scheduler_json) and zero it. NULL-safe. */
void sdxl_model_config_clear(sdxl_model_config *cfg);

/* Deep copy (dst must not own anything; on failure dst is zeroed). */
sdxl_status sdxl_model_config_copy(sdxl_model_config *dst, const sdxl_model_config *src, sdxl_error *err);

/* Load a diffusers folder's configs. *cfg is overwritten (it must not own
 * anything); on failure it is left zeroed. Errors: NOT_FOUND (no
 * model_index.json / config.json; the message says which), BAD_INPUT
 * (malformed JSON, wrong type or range: names file and field), UNSUPPORTED
 * (a pipeline or block type this engine does not implement), OUT_OF_MEMORY. */
sdxl_status sdxl_model_config_load_diffusers(const char *dir, sdxl_model_config *cfg, sdxl_error *err);

/* Parse one component's config.json text (exposed for tests and tools).
 * `where` names the source in messages. */
sdxl_status sdxl_unet_config_parse_json(const char *json, size_t len, const char *where,
                                        sdxl_unet_config *out, sdxl_error *err);
sdxl_status sdxl_vae_config_parse_json(const char *json, size_t len, const char *where, sdxl_vae_config *out,
                                       sdxl_error *err);
sdxl_status sdxl_te_config_parse_json(const char *json, size_t len, const char *where, bool with_projection,
                                      sdxl_te_config *out, sdxl_error *err);

/* Infer the config of an SGM single file from its tensor shapes (rules
 * above). `yaml_path`: the sidecar to read, or NULL for none (the caller
 * decides whether <stem>.yaml applies; see sdxl_model_config_sidecar_path).
 * `hints`: NULL or "key", "value", ..., NULL (caller hints). *cfg must not
 * own anything; on failure it is zeroed. Errors: BAD_INPUT (a tensor the
 * rules need is absent or inconsistent, the yaml disagrees with the shapes,
 * a metadata/yaml value is malformed: the message names tensor / file /
 * key), INVALID_ARG (bad caller hint), NOT_FOUND/IO (yaml_path unreadable),
 * OUT_OF_MEMORY. */
sdxl_status sdxl_model_config_infer_sgm(const sdxl_st_file *f, const char *yaml_path,
                                        const char *const *hints, sdxl_model_config *cfg, sdxl_error *err);

/* "<dir>/<stem>.yaml" for a checkpoint path "<dir>/<stem>.<ext>" into buf;
 * false if it does not fit. Does not check that the file exists. */
bool sdxl_model_config_sidecar_path(const char *checkpoint, char *buf, size_t cap);

/* Apply caller hints to a config (used for diffusers folders too, where only
 * the non-shape keys make sense: acts, heads, scaling/shift factor, ...).
 * INVALID_ARG naming the hint on an unknown key or bad value. */
sdxl_status sdxl_model_config_apply_hints(sdxl_model_config *cfg, const char *const *hints, sdxl_error *err);

/* Range and consistency checks shared by both sources: positive sizes under
 * the caps above, GroupNorm groups dividing every normalised width, heads
 * dividing channels, cross_attention_dim == TE1 hidden + TE2 hidden,
 * projection_class_embeddings_input_dim == num_time_ids *
 * addition_time_embed_dim + TE2 projection_dim, hidden_state_index in range.
 * `where` prefixes messages. BAD_INPUT on failure. */
sdxl_status sdxl_model_config_validate(const sdxl_model_config *cfg, const char *where, sdxl_error *err);

/* True if a and b describe the same architecture and settings (every field
 * but the sample_size defaults, which a single file does not carry; the
 * scheduler text is ignored). On a difference, writes the first differing
 * field's name into `what` (may be NULL). */
bool sdxl_model_config_equal(const sdxl_model_config *a, const sdxl_model_config *b, char *what, size_t cap);

/* SDXL base 1.0's scheduler_config.json (EulerDiscreteScheduler, scaled_linear
 * 0.00085..0.012, leading, steps_offset 1, epsilon). Static string. */
const char *sdxl_model_config_default_scheduler_json(void);

#endif
