/* scheduler.h - diffusers' schedulers ("samplers"), step for step.
 *
 * Usage (what the pipeline does, see pipeline/denoise.h):
 *
 *   sdxl_sched_config cfg;  sdxl_sched_config_parse(model_cfg.scheduler_json, len, &cfg, err);
 *   sdxl_sampler_kind kind; bool karras;
 *   sdxl_sampler_parse_name("DPM++ 2M Karras", &kind, &karras, err);
 *   if (karras) cfg.use_karras_sigmas = true;   // CLI --karras / --timestep-spacing edit cfg too
 *   sdxl_sampler *s;  sdxl_sampler_create(kind, &cfg, steps, n_latent_floats, &s, err);
 *   x *= sdxl_sampler_init_noise_sigma(s);
 *   for i in 0..steps-1:
 *       sdxl_sampler_scale_model_input(s, i, x, x_in, n);     // UNet input
 *       eps = UNet(x_in, sdxl_sampler_timestep(s, i)) ...     // after CFG
 *       sdxl_sampler_step(s, i, eps, x, n, rng);              // x updated in place
 *   sdxl_sampler_free(s);
 *
 * Implemented (diffusers 0.27.2 classes, their defaults for keys the
 * model's scheduler_config.json lacks, as from_config does):
 *   EULER      EulerDiscreteScheduler (interpolation linear, s_churn 0; Karras optional)
 *   EULER_A    EulerAncestralDiscreteScheduler (noise from the rng, one randn per step)
 *   DPMPP_2M   DPMSolverMultistepScheduler, algorithm dpmsolver++, solver_order 2,
 *              solver_type midpoint, lower_order_final, final_sigmas_type zero|sigma_min,
 *              Karras optional (then the timesteps come from the Karras sigmas)
 *   DDIM       DDIMScheduler, eta 0 (clip_sample, set_alpha_to_one honoured)
 *   HEUN       HeunDiscreteScheduler (Karras optional). Second order: diffusers
 *              repeats every timestep but the first, so a schedule of `steps`
 *              inference steps is 2·steps-1 model calls; sdxl_sampler_steps()
 *              returns the number of calls, timestep(i)/sigmas are per call
 *              (diffusers' scheduler.timesteps / .sigmas, 2·steps entries),
 *              and the loop above is unchanged. sdxl_sampler_order() = 2:
 *              img2img's begin index is order·t_start (diffusers' get_timesteps).
 *   DPMPP_2M_SDE  DPMSolverMultistepScheduler, algorithm sde-dpmsolver++,
 *              solver_order 2, midpoint (Karras optional); one randn of the
 *              latent size from the rng at every step (the last one too).
 *   LCM        LCMScheduler (original_inference_steps, timestep_scaling; strength 1
 *              schedule, steps <= original_inference_steps); one randn per step
 *              except the last, as diffusers draws them.
 *   UNIPC      UniPCMultistepScheduler, bh2, predict_x0, solver_order 2,
 *              lower_order_final, no disabled corrector (Karras optional;
 *              final sigma σ_min, or the last Karras sigma repeated, as diffusers).
 * prediction_type epsilon and v_prediction for all.
 *
 * Sampler names (case-insensitive; spaces, '-' and '_' are not ignored):
 *   Euler:     EulerDiscreteScheduler, Euler, euler
 *   Euler a:   EulerAncestralDiscreteScheduler, Euler a, euler_ancestral, euler_a
 *   DPM++ 2M:  DPMSolverMultistepScheduler, DPM++ 2M, dpmpp_2m;
 *              DPM++ 2M Karras (sets *karras)
 *   DDIM:      DDIMScheduler, DDIM, ddim
 *   Heun:      HeunDiscreteScheduler, Heun, heun; Heun Karras
 *   DPM++ 2M SDE: DPM++ 2M SDE, dpmpp_2m_sde, sde-dpmsolver++; DPM++ 2M SDE Karras,
 *              dpmpp_2m_sde_karras (diffusers form: DPMSolverMultistepScheduler
 *              with algorithm_type sde-dpmsolver++ in the config is not a class
 *              of its own, hence the A1111 / ComfyUI names)
 *   LCM:       LCMScheduler, LCM, lcm
 *   UniPC:     UniPCMultistepScheduler, UniPC, uni_pc, uni_pc_bh2; UniPC Karras
 * "X Karras" is accepted for every kind that takes Karras sigmas (Euler,
 * DPM++ 2M). Unknown name -> NOT_FOUND listing the valid names.
 *
 * Memory: create allocates everything (schedule + multistep state for n
 * floats); step and scale_model_input never allocate. One sampler per
 * generation (it holds the multistep history); not thread-safe.
 */
#ifndef SDXL_SAMPLE_SCHEDULER_H
#define SDXL_SAMPLE_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "sample/rng.h"

typedef enum sdxl_sampler_kind {
    SDXL_SAMPLER_EULER = 0,
    SDXL_SAMPLER_EULER_A,
    SDXL_SAMPLER_DPMPP_2M,
    SDXL_SAMPLER_DDIM,
    SDXL_SAMPLER_HEUN,         /* 2nd order: 2·steps-1 model calls */
    SDXL_SAMPLER_DPMPP_2M_SDE, /* stochastic */
    SDXL_SAMPLER_LCM,          /* stochastic (except the last step) */
    SDXL_SAMPLER_UNIPC,
    SDXL_SAMPLER_COUNT_
} sdxl_sampler_kind;

typedef enum sdxl_beta_schedule {
    SDXL_BETA_SCALED_LINEAR = 0, /* linspace(√start, √end, N)² */
    SDXL_BETA_LINEAR,            /* linspace(start, end, N) */
} sdxl_beta_schedule;

typedef enum sdxl_timestep_spacing {
    SDXL_SPACING_LEADING = 0,
    SDXL_SPACING_TRAILING,
    SDXL_SPACING_LINSPACE,
} sdxl_timestep_spacing;

typedef enum sdxl_prediction_type {
    SDXL_PREDICT_EPSILON = 0,
    SDXL_PREDICT_V,
} sdxl_prediction_type;

typedef enum sdxl_final_sigmas {
    SDXL_FINAL_SIGMA_ZERO = 0,
    SDXL_FINAL_SIGMA_MIN,
} sdxl_final_sigmas;

/* The scheduler_config.json keys that matter (diffusers names). */
typedef struct sdxl_sched_config {
    int num_train_timesteps;        /* 1000 */
    double beta_start, beta_end;    /* 0.00085, 0.012 */
    sdxl_beta_schedule beta_schedule;
    int steps_offset;               /* SDXL: 1 */
    sdxl_timestep_spacing timestep_spacing;
    sdxl_prediction_type prediction_type;
    bool use_karras_sigmas;
    bool clip_sample;               /* DDIM only */
    double clip_sample_range;       /* 1.0 */
    bool set_alpha_to_one;          /* DDIM only */
    sdxl_final_sigmas final_sigmas_type; /* DPM++ only */
    bool lower_order_final;         /* DPM++ only, true */
    bool euler_at_final;            /* DPM++ only, false */
    int original_inference_steps;   /* LCM only, 50 */
    double timestep_scaling;        /* LCM only, 10.0 */
} sdxl_sched_config;

/* SDXL base 1.0's values, with the diffusers defaults for the rest
 * (clip_sample false, set_alpha_to_one false as SDXL base carries them). */
void sdxl_sched_config_default(sdxl_sched_config *cfg);

/* Parse scheduler_config.json text (sdxl_model_config.scheduler_json):
 * starts from sdxl_sched_config_default, then every known key present
 * overrides it; unknown keys are ignored. BAD_INPUT naming the key for a
 * wrong type or value (e.g. an unknown beta_schedule), UNSUPPORTED for a
 * prediction_type / beta_schedule / spacing this engine lacks. */
sdxl_status sdxl_sched_config_parse(const char *json, size_t len, sdxl_sched_config *cfg, sdxl_error *err);

/* Name -> kind (see the list above). *karras (may be NULL) is set true for
 * a "... Karras" name, false otherwise. NOT_FOUND lists the valid names. */
sdxl_status sdxl_sampler_parse_name(const char *name, sdxl_sampler_kind *kind, bool *karras, sdxl_error *err);
/* A1111-style display name ("Euler", "Euler a", "DPM++ 2M", "DDIM", "Heun",
 * "DPM++ 2M SDE", "LCM", "UniPC"). */
const char *sdxl_sampler_kind_name(sdxl_sampler_kind kind);
/* Whether the kind takes Karras sigmas / needs the rng in step. */
bool sdxl_sampler_kind_supports_karras(sdxl_sampler_kind kind);
bool sdxl_sampler_kind_is_stochastic(sdxl_sampler_kind kind);

typedef struct sdxl_sampler sdxl_sampler;

/* Schedule for `steps` inference steps (1..1000). n: latent floats per
 * step (B·C·h·w) for the multistep state; 0 is allowed for a schedule-only
 * sampler (step then fails with INVALID_ARG). Karras with DDIM, LCM (or Euler
 * a) -> UNSUPPORTED. INVALID_ARG for steps out of range (LCM: more than
 * cfg.original_inference_steps). */
sdxl_status sdxl_sampler_create(sdxl_sampler_kind kind, const sdxl_sched_config *cfg, int steps, int64_t n,
                                sdxl_sampler **out, sdxl_error *err);
void sdxl_sampler_free(sdxl_sampler *s); /* NULL-safe */

sdxl_sampler_kind sdxl_sampler_get_kind(const sdxl_sampler *s);
/* Number of model calls = length of the timestep list (steps for every
 * kind but Heun, 2·steps-1 for Heun). */
int sdxl_sampler_steps(const sdxl_sampler *s);
/* The `steps` given to create (inference steps). */
int sdxl_sampler_inference_steps(const sdxl_sampler *s);
/* Model calls per inference step in diffusers' sense (scheduler.order):
 * 2 for Heun, 1 otherwise. */
int sdxl_sampler_order(const sdxl_sampler *s);
/* timesteps[i], the value fed to the UNet at step i (diffusers'
 * scheduler.timesteps; integral except Euler + Karras). */
double sdxl_sampler_timestep(const sdxl_sampler *s, int i);
/* sigmas[0..steps] (steps+1 values, last is the final sigma) for the
 * sigma-based kinds (Euler, Euler a, DPM++, Heun: per model call);
 * NULL for DDIM and LCM. */
const double *sdxl_sampler_sigmas(const sdxl_sampler *s);
/* The factor the initial noise is multiplied by (scheduler.init_noise_sigma). */
double sdxl_sampler_init_noise_sigma(const sdxl_sampler *s);
/* The full training alphas_cumprod [num_train_timesteps] (float32, as torch). */
const float *sdxl_sampler_alphas_cumprod(const sdxl_sampler *s);

/* out[0..n) = scheduler.scale_model_input(x, timesteps[i]); out may be x.
 * Never fails for a valid i (asserts otherwise). */
void sdxl_sampler_scale_model_input(const sdxl_sampler *s, int i, const float *x, float *out, int64_t n);

/* One update: x (n floats, the current latents, in place) from the model
 * output at step i (after CFG). Steps must be taken in order 0, 1, ...
 * (multistep history); rng is needed for stochastic kinds (Euler a,
 * DPM++ 2M SDE, LCM), NULL
 * otherwise. INVALID_ARG for out-of-order i, n different from create's,
 * or a missing rng. */
sdxl_status sdxl_sampler_step(sdxl_sampler *s, int i, const float *model_output, float *x, int64_t n,
                              sdxl_rng *rng, sdxl_error *err);

/* Start over at step 0 (clears the multistep history), same schedule. */
void sdxl_sampler_reset(sdxl_sampler *s);
/* After reset: the first step taken will be `i` (img2img starts part-way,
 * diffusers' set_begin_index). 0 <= i < steps. */
void sdxl_sampler_set_begin_index(sdxl_sampler *s, int i);

#endif
