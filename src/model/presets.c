/* presets.c - the built-in model configurations (see presets.h), kept as the
 * diffusers JSON they stand for. The sdxl-base text follows the files of
 * stabilityai/stable-diffusion-xl-base-1.0 (fields this engine ignores, such
 * as dropout or initializer_range, are kept so that diffusers and
 * transformers read the folders make-model writes exactly as they read
 * SDXL's own). */
#include "model/presets.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"

/* ---- shared pieces ---------------------------------------------------------- */

#define MODEL_INDEX_JSON                                                                                     \
    "{\n"                                                                                                    \
    "  \"_class_name\": \"StableDiffusionXLPipeline\",\n"                                                    \
    "  \"_diffusers_version\": \"0.19.0.dev0\",\n"                                                           \
    "  \"force_zeros_for_empty_prompt\": true,\n"                                                            \
    "  \"scheduler\": [\"diffusers\", \"EulerDiscreteScheduler\"],\n"                                        \
    "  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"                                           \
    "  \"text_encoder_2\": [\"transformers\", \"CLIPTextModelWithProjection\"],\n"                           \
    "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n"                                              \
    "  \"tokenizer_2\": [\"transformers\", \"CLIPTokenizer\"],\n"                                            \
    "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"                                               \
    "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n"                                                        \
    "}\n"

/* The UNet2DConditionModel fields every SDXL config shares; the sizes are
 * spliced in around it. */
#define UNET_COMMON_JSON                                                                                     \
    "  \"_class_name\": \"UNet2DConditionModel\",\n"                                                         \
    "  \"_diffusers_version\": \"0.19.0.dev0\",\n"                                                           \
    "  \"act_fn\": \"silu\",\n"                                                                              \
    "  \"addition_embed_type\": \"text_time\",\n"                                                            \
    "  \"addition_embed_type_num_heads\": 64,\n"                                                             \
    "  \"center_input_sample\": false,\n"                                                                    \
    "  \"class_embed_type\": null,\n"                                                                        \
    "  \"class_embeddings_concat\": false,\n"                                                                \
    "  \"conv_in_kernel\": 3,\n"                                                                             \
    "  \"conv_out_kernel\": 3,\n"                                                                            \
    "  \"cross_attention_norm\": null,\n"                                                                    \
    "  \"downsample_padding\": 1,\n"                                                                         \
    "  \"dual_cross_attention\": false,\n"                                                                   \
    "  \"encoder_hid_dim\": null,\n"                                                                         \
    "  \"encoder_hid_dim_type\": null,\n"                                                                    \
    "  \"flip_sin_to_cos\": true,\n"                                                                         \
    "  \"freq_shift\": 0,\n"                                                                                 \
    "  \"in_channels\": 4,\n"                                                                                \
    "  \"mid_block_only_cross_attention\": null,\n"                                                          \
    "  \"mid_block_scale_factor\": 1,\n"                                                                     \
    "  \"mid_block_type\": \"UNetMidBlock2DCrossAttn\",\n"                                                   \
    "  \"norm_eps\": 1e-05,\n"                                                                               \
    "  \"norm_num_groups\": 32,\n"                                                                           \
    "  \"num_attention_heads\": null,\n"                                                                     \
    "  \"num_class_embeds\": null,\n"                                                                        \
    "  \"only_cross_attention\": false,\n"                                                                   \
    "  \"out_channels\": 4,\n"                                                                               \
    "  \"resnet_out_scale_factor\": 1.0,\n"                                                                  \
    "  \"resnet_skip_time_act\": false,\n"                                                                   \
    "  \"resnet_time_scale_shift\": \"default\",\n"                                                          \
    "  \"time_cond_proj_dim\": null,\n"                                                                      \
    "  \"time_embedding_act_fn\": null,\n"                                                                   \
    "  \"time_embedding_dim\": null,\n"                                                                      \
    "  \"time_embedding_type\": \"positional\",\n"                                                           \
    "  \"timestep_post_act\": null,\n"                                                                       \
    "  \"upcast_attention\": false,\n"                                                                       \
    "  \"use_linear_projection\": true,\n"

#define VAE_COMMON_JSON                                                                                      \
    "  \"_class_name\": \"AutoencoderKL\",\n"                                                                \
    "  \"_diffusers_version\": \"0.20.0.dev0\",\n"                                                           \
    "  \"act_fn\": \"silu\",\n"                                                                              \
    "  \"force_upcast\": true,\n"                                                                            \
    "  \"in_channels\": 3,\n"                                                                                \
    "  \"latent_channels\": 4,\n"                                                                            \
    "  \"norm_num_groups\": 32,\n"                                                                           \
    "  \"out_channels\": 3,\n"                                                                               \
    "  \"scaling_factor\": 0.13025,\n"

#define TE_COMMON_JSON                                                                                       \
    "  \"attention_dropout\": 0.0,\n"                                                                        \
    "  \"bos_token_id\": 0,\n"                                                                               \
    "  \"dropout\": 0.0,\n"                                                                                  \
    "  \"eos_token_id\": 2,\n"                                                                               \
    "  \"initializer_factor\": 1.0,\n"                                                                       \
    "  \"initializer_range\": 0.02,\n"                                                                       \
    "  \"layer_norm_eps\": 1e-05,\n"                                                                         \
    "  \"max_position_embeddings\": 77,\n"                                                                   \
    "  \"model_type\": \"clip_text_model\",\n"                                                               \
    "  \"pad_token_id\": 1,\n"                                                                               \
    "  \"transformers_version\": \"4.32.0.dev0\",\n"                                                         \
    "  \"vocab_size\": 49408\n"

/* ---- sdxl-base ----------------------------------------------------------------- */

static const char sdxl_base_unet[] =
    "{\n" UNET_COMMON_JSON "  \"addition_time_embed_dim\": 256,\n"
    "  \"attention_head_dim\": [5, 10, 20],\n"
    "  \"block_out_channels\": [320, 640, 1280],\n"
    "  \"cross_attention_dim\": 2048,\n"
    "  \"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\"],\n"
    "  \"layers_per_block\": 2,\n"
    "  \"projection_class_embeddings_input_dim\": 2816,\n"
    "  \"sample_size\": 128,\n"
    "  \"transformer_layers_per_block\": [1, 2, 10],\n"
    "  \"up_block_types\": [\"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"UpBlock2D\"]\n"
    "}\n";

static const char sdxl_base_vae[] =
    "{\n" VAE_COMMON_JSON "  \"block_out_channels\": [128, 256, 512, 512],\n"
    "  \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\", "
    "\"DownEncoderBlock2D\"],\n"
    "  \"layers_per_block\": 2,\n"
    "  \"sample_size\": 1024,\n"
    "  \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", "
    "\"UpDecoderBlock2D\"]\n"
    "}\n";

static const char sdxl_base_te1[] = "{\n"
                                    "  \"architectures\": [\"CLIPTextModel\"],\n"
                                    "  \"hidden_act\": \"quick_gelu\",\n"
                                    "  \"hidden_size\": 768,\n"
                                    "  \"intermediate_size\": 3072,\n"
                                    "  \"num_attention_heads\": 12,\n"
                                    "  \"num_hidden_layers\": 12,\n"
                                    "  \"projection_dim\": 768,\n" TE_COMMON_JSON "}\n";

static const char sdxl_base_te2[] = "{\n"
                                    "  \"architectures\": [\"CLIPTextModelWithProjection\"],\n"
                                    "  \"hidden_act\": \"gelu\",\n"
                                    "  \"hidden_size\": 1280,\n"
                                    "  \"intermediate_size\": 5120,\n"
                                    "  \"num_attention_heads\": 20,\n"
                                    "  \"num_hidden_layers\": 32,\n"
                                    "  \"projection_dim\": 1280,\n" TE_COMMON_JSON "}\n";

/* ---- tiny ------------------------------------------------------------------------ */

/* Head counts 1/2/4 give head widths 32/32/16; the mid block takes the last
 * level's depth (2) and heads (4), as in diffusers. cross_attention_dim 64 =
 * 32 + 32 (both encoders); add-embedding input 6 x 8 + 16 (TE2 projection). */
static const char tiny_unet[] =
    "{\n" UNET_COMMON_JSON "  \"addition_time_embed_dim\": 8,\n"
    "  \"attention_head_dim\": [1, 2, 4],\n"
    "  \"block_out_channels\": [32, 64, 64],\n"
    "  \"cross_attention_dim\": 64,\n"
    "  \"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\"],\n"
    "  \"layers_per_block\": 1,\n"
    "  \"projection_class_embeddings_input_dim\": 64,\n"
    "  \"sample_size\": 32,\n"
    "  \"transformer_layers_per_block\": [1, 1, 2],\n"
    "  \"up_block_types\": [\"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"UpBlock2D\"]\n"
    "}\n";

static const char tiny_vae[] =
    "{\n" VAE_COMMON_JSON "  \"block_out_channels\": [32, 32, 64, 64],\n"
    "  \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", \"DownEncoderBlock2D\", "
    "\"DownEncoderBlock2D\"],\n"
    "  \"layers_per_block\": 1,\n"
    "  \"sample_size\": 256,\n"
    "  \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", "
    "\"UpDecoderBlock2D\"]\n"
    "}\n";

static const char tiny_te1[] = "{\n"
                               "  \"architectures\": [\"CLIPTextModel\"],\n"
                               "  \"hidden_act\": \"quick_gelu\",\n"
                               "  \"hidden_size\": 32,\n"
                               "  \"intermediate_size\": 64,\n"
                               "  \"num_attention_heads\": 2,\n"
                               "  \"num_hidden_layers\": 2,\n"
                               "  \"projection_dim\": 32,\n" TE_COMMON_JSON "}\n";

static const char tiny_te2[] = "{\n"
                               "  \"architectures\": [\"CLIPTextModelWithProjection\"],\n"
                               "  \"hidden_act\": \"gelu\",\n"
                               "  \"hidden_size\": 32,\n"
                               "  \"intermediate_size\": 64,\n"
                               "  \"num_attention_heads\": 2,\n"
                               "  \"num_hidden_layers\": 3,\n"
                               "  \"projection_dim\": 16,\n" TE_COMMON_JSON "}\n";

/* ---- table ------------------------------------------------------------------------ */

/* scheduler_json NULL: SDXL base's EulerDiscrete config, whose text config.c
 * already holds (sdxl_model_config_default_scheduler_json). */
static const sdxl_model_preset presets[] = {
    {"sdxl-base", "Stable Diffusion XL base 1.0 sizes (UNet 2.57 B, ~7 GB in f16)", MODEL_INDEX_JSON,
     sdxl_base_unet, sdxl_base_vae, sdxl_base_te1, sdxl_base_te2, NULL},
    {"tiny", "SDXL in miniature for quick tests (6.3 M parameters)", MODEL_INDEX_JSON, tiny_unet, tiny_vae,
     tiny_te1, tiny_te2, NULL},
};

size_t sdxl_model_preset_count(void) {
    return sizeof presets / sizeof presets[0];
}

const sdxl_model_preset *sdxl_model_preset_at(size_t i) {
    return i < sdxl_model_preset_count() ? &presets[i] : NULL;
}

const sdxl_model_preset *sdxl_model_preset_find(const char *name) {
    for (size_t i = 0; name && i < sdxl_model_preset_count(); i++)
        if (!strcmp(presets[i].name, name)) return &presets[i];
    return NULL;
}

/* model_index.json says nothing config.c's component parsers read except
 * force_zeros_for_empty_prompt (diffusers' default: true). A folder written
 * from the preset is read back by sdxl_model_config_load_diffusers, and the
 * round-trip test compares the two configs, so this cannot drift. */
static sdxl_status preset_force_zeros(const sdxl_model_preset *p, bool *out, sdxl_error *err) {
    cJSON *root = cJSON_Parse(p->model_index_json);
    if (!root)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "preset %s: model_index.json does not parse",
                              p->name);
    const cJSON *fz = cJSON_GetObjectItemCaseSensitive(root, "force_zeros_for_empty_prompt");
    *out = !cJSON_IsFalse(fz);
    cJSON_Delete(root);
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_model_preset_config(const sdxl_model_preset *p, sdxl_model_config *cfg, sdxl_error *err) {
    if (!p || !cfg)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_model_preset_config: NULL argument");
    memset(cfg, 0, sizeof *cfg);
    char where[96];
    sdxl_status st;
    snprintf(where, sizeof where, "preset %s: unet/config.json", p->name);
    if ((st = sdxl_unet_config_parse_json(p->unet_json, strlen(p->unet_json), where, &cfg->unet, err)))
        goto fail;
    snprintf(where, sizeof where, "preset %s: vae/config.json", p->name);
    if ((st = sdxl_vae_config_parse_json(p->vae_json, strlen(p->vae_json), where, &cfg->vae, err))) goto fail;
    snprintf(where, sizeof where, "preset %s: text_encoder/config.json", p->name);
    if ((st = sdxl_te_config_parse_json(p->te1_json, strlen(p->te1_json), where, false, &cfg->te[0], err)))
        goto fail;
    snprintf(where, sizeof where, "preset %s: text_encoder_2/config.json", p->name);
    if ((st = sdxl_te_config_parse_json(p->te2_json, strlen(p->te2_json), where, true, &cfg->te[1], err)))
        goto fail;
    if ((st = preset_force_zeros(p, &cfg->pipeline.force_zeros_for_empty_prompt, err))) goto fail;
    cfg->scheduler_json =
        sdxl_strdup(p->scheduler_json ? p->scheduler_json : sdxl_model_config_default_scheduler_json());
    if (!cfg->scheduler_json) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "preset %s: out of memory", p->name);
        goto fail;
    }
    snprintf(where, sizeof where, "preset %s", p->name);
    if ((st = sdxl_model_config_validate(cfg, where, err))) goto fail;
    return SDXL_STATUS_OK;
fail:
    sdxl_model_config_clear(cfg);
    return st;
}
