/* a1111.h - AUTOMATIC1111/stable-diffusion-webui's API (the /sdapi/v1
 * subset that clients use) mapped onto the native request and result. No
 * sockets here: http.c routes to these functions; tests can call them
 * directly.
 *
 * ---- txt2img / img2img --------------------------------------------------------
 *
 * The body is A1111's StableDiffusionProcessingTxt2Img/Img2Img API model
 * (A1111 1.10 field set, A1111 defaults: steps 50, cfg_scale 7, 512x512,
 * sampler "Euler" via sampler_index, seed -1 = random, batch_size 1, n_iter
 * 1, denoising_strength 0.75). Implemented: prompt, negative_prompt, seed,
 * sampler_name / sampler_index (A1111 names and aliases: "Euler a",
 * "k_euler_a", "DPM++ 2M", "DPM++ 2M Karras", diffusers class names...),
 * scheduler ("Automatic" / "automatic": the sampler's default, Karras for
 * DPM++ 2M as in A1111 >= 1.9; "Karras"; "Uniform"), batch_size, n_iter, steps,
 * cfg_scale, width, height, send_images, save_images (PNGs written under the
 * engine's output_dir, in txt2img-images/ or img2img-images/),
 * force_task_id (the request id), disable_extra_networks (<lora:...> tags are
 * removed but not applied), override_settings.sd_model_checkpoint /
 * .randn_source / .CLIP_stop_at_last_layers (1) / .samples_format ("png") /
 * .eta_noise_seed_delta (0); img2img: init_images[0] (base64 PNG or JPEG,
 * a "data:image/...;base64," prefix allowed), denoising_strength,
 * include_init_images. `<lora:name:w>` / `<lora:name:te:unet>` tags in the
 * prompt select adapters (resolved like the native "lora" block, statuses in
 * the engine's report).
 *
 * Every other A1111 field is accepted with its A1111 type, and named in a
 * warning (the response's "warnings" list and the log) when its value would
 * change A1111's output: styles, subseed/subseed_strength, seed_resize_*,
 * restore_faces, tiling, eta (other than the sampler's default), s_churn,
 * s_tmin, s_tmax, s_noise, s_min_uncond, refiner_*, enable_hr (and so the hr_*
 * and firstphase_* fields), script_name/script_args, alwayson_scripts,
 * infotext, firstpass_image, other override_settings keys; img2img: mask
 * (no inpainting), initial_noise_multiplier, latent_mask,
 * resize_mode (the init image is resized to width x height either way),
 * more than one init image. Fields A1111 does not define are ignored with
 * a warning (pydantic ignores them silently). Wrong JSON types and
 * out-of-range values are errors (BAD_INPUT, the message starts with the
 * field path: "steps: expected an integer, got a string"), an unknown
 * sampler NOT_FOUND (A1111's 404 "Sampler not found").
 *
 * The response (sdxl_a1111_result_json): {"images": [base64 PNG, ...],
 * "parameters": {the request with every A1111 field, defaults filled in, as
 * A1111 echoes it}, "info": "<JSON text: prompt, all_prompts,
 * negative_prompt, all_negative_prompts, seed, all_seeds, subseed,
 * all_subseeds, subseed_strength, width, height, sampler_name, cfg_scale,
 * steps, batch_size, restore_faces, face_restoration_model, sd_model_name,
 * sd_model_hash, sd_vae_name, sd_vae_hash, seed_resize_from_w/h,
 * denoising_strength, extra_generation_params, index_of_first_image,
 * infotexts, styles, job_timestamp, clip_skip,
 * is_using_inpainting_conditioning, version>", "warnings": [...]}. The PNGs
 * carry the infotext as their `parameters` text chunk.
 *
 * RNG: A1111's default randn_source is "GPU"; txt2img then uses the
 * CUDA-Philox generator (A1111's "NV", the same numbers as A1111 on an
 * NVIDIA GPU), "CPU" torch's CPU generator. img2img always uses the CPU one.
 *
 * Thread-safety: every function is reentrant; options are the caller's to
 * guard.
 */
#ifndef SDXL_WORKER_A1111_H
#define SDXL_WORKER_A1111_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "core/status.h"
#include "worker/engine.h"
#include "worker/request.h"

typedef enum sdxl_a1111_kind {
    SDXL_A1111_TXT2IMG = 0,
    SDXL_A1111_IMG2IMG,
} sdxl_a1111_kind;

/* The server-wide options (/sdapi/v1/options). */
typedef struct sdxl_a1111_options {
    char model[128]; /* sd_model_checkpoint: a configured model's name; "" = the engine's default */
    bool randn_cpu;  /* randn_source "CPU"; false: "GPU" (A1111's default) */
} sdxl_a1111_options;

sdxl_a1111_options sdxl_a1111_default_options(void);

/* What a txt2img/img2img call needs besides the native request to answer. */
typedef struct sdxl_a1111_call {
    sdxl_a1111_kind kind;
    cJSON *parameters; /* the echo (owned) */
    bool send_images;
    char *prompt, *negative_prompt; /* as the client wrote them (tags included); malloc'd */
    char sampler_name[64];          /* A1111's display name: "DPM++ 2M" */
    char schedule[32];              /* "Karras" or "" (A1111's "Schedule type" when not automatic) */
    bool karras;
    double cfg_scale, denoising_strength, subseed_strength;
    int steps, width, height, batch_size, n_iter;
    int64_t subseed;
    int seed_resize_w, seed_resize_h;
    char **styles;
    int n_styles;
    char **warnings; /* malloc'd strings */
    int n_warnings;
    char job_timestamp[16]; /* YYYYmmddHHMMSS, when parsed */
} sdxl_a1111_call;

/* Parse a txt2img/img2img body into a native request (*req, free with
 * sdxl_request_free) and *call (free with sdxl_a1111_call_free). The
 * request comes out with output "base64" (or "path" under
 * txt2img-images/ / img2img-images/ for save_images), the options' model
 * and RNG, request_id = force_task_id or `default_id`. Errors: BAD_INPUT
 * (message "field.path: why"), NOT_FOUND (sampler), OUT_OF_MEMORY; on
 * error both outputs are left empty. */
sdxl_status sdxl_a1111_call_parse(const char *json, size_t len, sdxl_a1111_kind kind,
                                  const sdxl_a1111_options *opt, const sdxl_engine *engine,
                                  const sdxl_request_limits *lim, const char *default_id, sdxl_request *req,
                                  sdxl_a1111_call *call, sdxl_error *err);
void sdxl_a1111_call_free(sdxl_a1111_call *call); /* NULL-safe; leaves it zeroed */

/* The txt2img/img2img response (malloc'd JSON text; NULL on out of memory).
 * res may hold fewer images than planned (interrupted). */
char *sdxl_a1111_result_json(const sdxl_a1111_call *call, const sdxl_request *req,
                             const sdxl_engine_result *res);

/* A1111's error bodies (malloc'd): FastAPI's 422 {"detail": [{"loc": ["body",
 * ...path], "msg", "type"}]} from a "path: why" message, and the
 * {"error", "detail", "body", "errors"} of A1111's exception handler. */
char *sdxl_a1111_validation_error_json(const char *msg);
char *sdxl_a1111_error_json(const char *error_type, const char *detail);

/* GET /sdapi/v1/progress. */
typedef struct sdxl_a1111_progress {
    bool active;     /* a job is running */
    const char *job; /* "scripts_txt2img", "scripts_img2img", "generate" */
    int job_no, job_count, sampling_step, sampling_steps;
    double elapsed_s;
    bool interrupted;
    char job_timestamp[16];
    int queued; /* jobs waiting (not an A1111 field: "queued" in state) */
} sdxl_a1111_progress;
char *sdxl_a1111_progress_json(const sdxl_a1111_progress *p);

/* Listings (malloc'd JSON text). */
/* [{"name", "alias", "path", "metadata"}], one entry per name as A1111 keys
 * them (the file a <lora:name> tag resolves to); metadata holds the ss_*
 * keys the registry reads (output name, base model, network module/dim/alpha). */
char *sdxl_a1111_loras_json(sdxl_lora_registry *reg);
char *sdxl_a1111_samplers_json(void); /* [{"name", "aliases", "options"}] */
char *
sdxl_a1111_schedulers_json(void); /* [{"name", "label", "aliases", "default_rho", "need_inner_model"}] */
char *sdxl_a1111_sd_models_json(
    const sdxl_engine *e); /* [{"title", "model_name", "hash", "sha256", "filename", "config"}] */
char *sdxl_a1111_options_json(const sdxl_engine *e, const sdxl_a1111_options *opt);

/* POST /sdapi/v1/options: applies sd_model_checkpoint (a configured model:
 * NOT_FOUND otherwise) and randn_source ("CPU", "GPU", "NV"; BAD_INPUT
 * otherwise); other keys are accepted and named in *warnings (malloc'd
 * strings, *n_warnings; free with sdxl_a1111_warnings_free). opt changes
 * only when everything is valid. */
sdxl_status sdxl_a1111_options_set(const char *json, size_t len, const sdxl_engine *e,
                                   sdxl_a1111_options *opt, char ***warnings, int *n_warnings,
                                   sdxl_error *err);
void sdxl_a1111_warnings_free(char **warnings, int n);

/* The configured model matching an A1111 checkpoint title ("name", "name
 * [hash]", "name.safetensors"); "" for the engine's default. false when
 * none matches. */
bool sdxl_a1111_find_model(const sdxl_engine *e, const char *title, char *name, size_t n);

#endif
