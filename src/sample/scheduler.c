/* scheduler.c - Euler, Euler ancestral, DPM++ 2M (SDE), DDIM, Heun, LCM and UniPC as diffusers
 * 0.27.2 computes them (see scheduler.h). Schedules are computed in double
 * from torch's float32 alphas_cumprod; updates apply double coefficients to
 * float latents. */
#include "sample/scheduler.h"

#include <assert.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/alloc.h"

struct sdxl_sampler {
    sdxl_sampler_kind kind;
    sdxl_sched_config cfg;
    int steps;     /* model calls (timesteps entries) */
    int inf_steps; /* inference steps given to create */
    int64_t n;
    float *alphas_cumprod; /* [num_train_timesteps] */
    double *timesteps;     /* [steps] */
    double *sigmas;        /* [steps+1], NULL for DDIM */
    double init_noise_sigma;
    int next_step;
    /* DPM++ 2M */
    float *prev_x0; /* previous data prediction [n] */
    /* Euler a */
    float *noise; /* [n] */
    int lower_order_nums;
    /* Heun: first-order state (diffusers' prev_derivative, dt, sample) */
    float *heun_d, *heun_x; /* [n] */
    double heun_dt;
    bool heun_pending;
    /* UniPC: prev_x0 = model_outputs[-1]; uni_m2 = model_outputs[-2]; last_sample */
    float *uni_m2, *uni_last; /* [n] */
    int uni_order;            /* this_order of the last predictor */
    bool uni_have_last;
};

/* ---- config ---------------------------------------------------------------- */

void sdxl_sched_config_default(sdxl_sched_config *c) {
    memset(c, 0, sizeof *c);
    c->num_train_timesteps = 1000;
    c->beta_start = 0.00085;
    c->beta_end = 0.012;
    c->beta_schedule = SDXL_BETA_SCALED_LINEAR;
    c->steps_offset = 1;
    c->timestep_spacing = SDXL_SPACING_LEADING;
    c->prediction_type = SDXL_PREDICT_EPSILON;
    c->use_karras_sigmas = false;
    c->clip_sample = false;
    c->clip_sample_range = 1.0;
    c->set_alpha_to_one = false;
    c->final_sigmas_type = SDXL_FINAL_SIGMA_ZERO;
    c->lower_order_final = true;
    c->euler_at_final = false;
    c->original_inference_steps = 50;
    c->timestep_scaling = 10.0;
}

static const cJSON *jget(const cJSON *root, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

static sdxl_status jnum(const cJSON *root, const char *key, double *out, sdxl_error *err) {
    const cJSON *v = jget(root, key);
    if (!v) return SDXL_STATUS_OK;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "scheduler config: \"%s\" must be a number", key);
    *out = v->valuedouble;
    return SDXL_STATUS_OK;
}

static sdxl_status jint(const cJSON *root, const char *key, int lo, int hi, int *out, sdxl_error *err) {
    const cJSON *v = jget(root, key);
    if (!v) return SDXL_STATUS_OK;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "scheduler config: \"%s\" must be an integer in [%d, %d]",
                              key, lo, hi);
    *out = (int)v->valuedouble;
    return SDXL_STATUS_OK;
}

static sdxl_status jbool(const cJSON *root, const char *key, bool *out, sdxl_error *err) {
    const cJSON *v = jget(root, key);
    if (!v) return SDXL_STATUS_OK;
    if (!cJSON_IsBool(v))
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "scheduler config: \"%s\" must be a boolean", key);
    *out = cJSON_IsTrue(v);
    return SDXL_STATUS_OK;
}

/* String option: index into `names` (NULL-terminated); `unsupported` names
 * known but not implemented. */
static sdxl_status jenum(const cJSON *root, const char *key, const char *const *names,
                         const char *const *unsupported, int *out, sdxl_error *err) {
    const cJSON *v = jget(root, key);
    if (!v) return SDXL_STATUS_OK;
    if (!cJSON_IsString(v))
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "scheduler config: \"%s\" must be a string", key);
    for (int i = 0; names[i]; i++)
        if (strcmp(v->valuestring, names[i]) == 0) {
            *out = i;
            return SDXL_STATUS_OK;
        }
    for (int i = 0; unsupported && unsupported[i]; i++)
        if (strcmp(v->valuestring, unsupported[i]) == 0)
            return sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED, "scheduler config: %s \"%s\" is not supported",
                                  key, v->valuestring);
    return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "scheduler config: unknown %s \"%.64s\"", key,
                          v->valuestring);
}

/* Python's json writes Infinity, -Infinity and NaN (e.g. lambda_min_clipped:
 * -Infinity); JSON has no such tokens. Copy with them replaced by null
 * (outside strings). Returns an sdxl_malloc'd string or NULL. */
static char *json_sanitize(const char *in, size_t len) {
    char *out = sdxl_malloc(len + len / 2 + 2);
    if (!out) return NULL;
    size_t o = 0;
    bool str = false;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        if (str) {
            out[o++] = ch;
            if (ch == '\\' && i + 1 < len) out[o++] = in[++i];
            else if (ch == '"') str = false;
            continue;
        }
        if (ch == '"') str = true;
        static const char *const toks[] = {"-Infinity", "Infinity", "NaN"};
        bool rep = false;
        for (int t = 0; t < 3 && !rep; t++) {
            size_t tl = strlen(toks[t]);
            if (len - i >= tl && memcmp(in + i, toks[t], tl) == 0) {
                memcpy(out + o, "null", 4);
                o += 4;
                i += tl - 1;
                rep = true;
            }
        }
        if (!rep) out[o++] = ch;
    }
    out[o] = 0;
    return out;
}

sdxl_status sdxl_sched_config_parse(const char *json, size_t len, sdxl_sched_config *cfg, sdxl_error *err) {
    if (!json || !cfg) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "scheduler config: NULL argument");
    sdxl_sched_config c;
    sdxl_sched_config_default(&c);
    char *clean = json_sanitize(json, len);
    if (!clean) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "scheduler config: out of memory");
    cJSON *root = cJSON_Parse(clean);
    sdxl_free(clean);
    if (!root) return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "scheduler config: malformed JSON");
    sdxl_status st = SDXL_STATUS_OK;
    if (!cJSON_IsObject(root)) {
        st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "scheduler config: not a JSON object");
        goto out;
    }
    static const char *const beta_names[] = {"scaled_linear", "linear", NULL};
    static const char *const beta_unsup[] = {"squaredcos_cap_v2", "sigmoid", NULL};
    static const char *const spacing_names[] = {"leading", "trailing", "linspace", NULL};
    static const char *const pred_names[] = {"epsilon", "v_prediction", NULL};
    static const char *const pred_unsup[] = {"sample", NULL};
    static const char *const final_names[] = {"zero", "sigma_min", NULL};
    static const char *const interp_names[] = {"linear", NULL};
    static const char *const interp_unsup[] = {"log_linear", NULL};
    int e, dummy = 0;
    if ((st = jint(root, "num_train_timesteps", 2, 100000, &c.num_train_timesteps, err))) goto out;
    if ((st = jnum(root, "beta_start", &c.beta_start, err))) goto out;
    if ((st = jnum(root, "beta_end", &c.beta_end, err))) goto out;
    e = (int)c.beta_schedule;
    if ((st = jenum(root, "beta_schedule", beta_names, beta_unsup, &e, err))) goto out;
    c.beta_schedule = (sdxl_beta_schedule)e;
    if ((st = jint(root, "steps_offset", 0, 100000, &c.steps_offset, err))) goto out;
    e = (int)c.timestep_spacing;
    if ((st = jenum(root, "timestep_spacing", spacing_names, NULL, &e, err))) goto out;
    c.timestep_spacing = (sdxl_timestep_spacing)e;
    e = (int)c.prediction_type;
    if ((st = jenum(root, "prediction_type", pred_names, pred_unsup, &e, err))) goto out;
    c.prediction_type = (sdxl_prediction_type)e;
    if ((st = jbool(root, "use_karras_sigmas", &c.use_karras_sigmas, err))) goto out;
    if ((st = jbool(root, "clip_sample", &c.clip_sample, err))) goto out;
    if ((st = jnum(root, "clip_sample_range", &c.clip_sample_range, err))) goto out;
    if ((st = jbool(root, "set_alpha_to_one", &c.set_alpha_to_one, err))) goto out;
    e = (int)c.final_sigmas_type;
    if ((st = jenum(root, "final_sigmas_type", final_names, NULL, &e, err))) goto out;
    c.final_sigmas_type = (sdxl_final_sigmas)e;
    if ((st = jbool(root, "lower_order_final", &c.lower_order_final, err))) goto out;
    if ((st = jbool(root, "euler_at_final", &c.euler_at_final, err))) goto out;
    if ((st = jint(root, "original_inference_steps", 1, 100000, &c.original_inference_steps, err))) goto out;
    if ((st = jnum(root, "timestep_scaling", &c.timestep_scaling, err))) goto out;
    if ((st = jenum(root, "interpolation_type", interp_names, interp_unsup, &dummy, err))) goto out;
    {
        bool b = false;
        if ((st = jbool(root, "rescale_betas_zero_snr", &b, err))) goto out;
        if (b) {
            st = sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED, "scheduler config: rescale_betas_zero_snr is not supported");
            goto out;
        }
        b = false;
        if ((st = jbool(root, "thresholding", &b, err))) goto out;
        if (b) {
            st = sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED, "scheduler config: thresholding is not supported");
            goto out;
        }
        if (jget(root, "trained_betas")) {
            st = sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED, "scheduler config: trained_betas is not supported");
            goto out;
        }
    }
    if (!(c.beta_start > 0 && c.beta_end > 0 && c.beta_start < 1 && c.beta_end < 1)) {
        st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "scheduler config: beta_start/beta_end must be in (0, 1)");
        goto out;
    }
    *cfg = c;
out:
    cJSON_Delete(root);
    return st;
}

/* ---- names ------------------------------------------------------------------ */

typedef struct {
    const char *name;
    sdxl_sampler_kind kind;
    bool karras;
} name_entry;

static const name_entry NAMES[] = {
    {"EulerDiscreteScheduler", SDXL_SAMPLER_EULER, false},
    {"Euler", SDXL_SAMPLER_EULER, false},
    {"Euler Karras", SDXL_SAMPLER_EULER, true},
    {"EulerAncestralDiscreteScheduler", SDXL_SAMPLER_EULER_A, false},
    {"Euler a", SDXL_SAMPLER_EULER_A, false},
    {"euler_ancestral", SDXL_SAMPLER_EULER_A, false},
    {"euler_a", SDXL_SAMPLER_EULER_A, false},
    {"DPMSolverMultistepScheduler", SDXL_SAMPLER_DPMPP_2M, false},
    {"DPM++ 2M", SDXL_SAMPLER_DPMPP_2M, false},
    {"DPM++ 2M Karras", SDXL_SAMPLER_DPMPP_2M, true},
    {"dpmpp_2m", SDXL_SAMPLER_DPMPP_2M, false},
    {"dpmpp_2m_karras", SDXL_SAMPLER_DPMPP_2M, true},
    {"DDIMScheduler", SDXL_SAMPLER_DDIM, false},
    {"DDIM", SDXL_SAMPLER_DDIM, false},
    {"HeunDiscreteScheduler", SDXL_SAMPLER_HEUN, false},
    {"Heun", SDXL_SAMPLER_HEUN, false},
    {"Heun Karras", SDXL_SAMPLER_HEUN, true},
    {"DPM++ 2M SDE", SDXL_SAMPLER_DPMPP_2M_SDE, false},
    {"DPM++ 2M SDE Karras", SDXL_SAMPLER_DPMPP_2M_SDE, true},
    {"dpmpp_2m_sde", SDXL_SAMPLER_DPMPP_2M_SDE, false},
    {"dpmpp_2m_sde_karras", SDXL_SAMPLER_DPMPP_2M_SDE, true},
    {"sde-dpmsolver++", SDXL_SAMPLER_DPMPP_2M_SDE, false},
    {"LCMScheduler", SDXL_SAMPLER_LCM, false},
    {"LCM", SDXL_SAMPLER_LCM, false},
    {"UniPCMultistepScheduler", SDXL_SAMPLER_UNIPC, false},
    {"UniPC", SDXL_SAMPLER_UNIPC, false},
    {"UniPC Karras", SDXL_SAMPLER_UNIPC, true},
    {"uni_pc", SDXL_SAMPLER_UNIPC, false},
    {"uni_pc_bh2", SDXL_SAMPLER_UNIPC, false},
};

static bool ieq(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return false;
    return *a == *b;
}

sdxl_status sdxl_sampler_parse_name(const char *name, sdxl_sampler_kind *kind, bool *karras, sdxl_error *err) {
    if (!name || !kind) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sampler name: NULL argument");
    for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0]; i++)
        if (ieq(name, NAMES[i].name)) {
            *kind = NAMES[i].kind;
            if (karras) *karras = NAMES[i].karras;
            return SDXL_STATUS_OK;
        }
    char list[SDXL_ERROR_MSG_MAX];
    size_t off = 0;
    list[0] = 0;
    for (size_t i = 0; i < sizeof NAMES / sizeof NAMES[0] && off < sizeof list; i++) {
        int w = snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", NAMES[i].name);
        if (w < 0) break;
        off += (size_t)w;
    }
    return sdxl_error_set(err, SDXL_STATUS_NOT_FOUND, "unknown sampler \"%.32s\"; valid (case-insensitive): %s", name,
                          list);
}

const char *sdxl_sampler_kind_name(sdxl_sampler_kind kind) {
    switch (kind) {
    case SDXL_SAMPLER_EULER: return "Euler";
    case SDXL_SAMPLER_EULER_A: return "Euler a";
    case SDXL_SAMPLER_DPMPP_2M: return "DPM++ 2M";
    case SDXL_SAMPLER_DDIM: return "DDIM";
    case SDXL_SAMPLER_HEUN: return "Heun";
    case SDXL_SAMPLER_DPMPP_2M_SDE: return "DPM++ 2M SDE";
    case SDXL_SAMPLER_LCM: return "LCM";
    case SDXL_SAMPLER_UNIPC: return "UniPC";
    default: return "?";
    }
}

bool sdxl_sampler_kind_supports_karras(sdxl_sampler_kind kind) {
    return kind == SDXL_SAMPLER_EULER || kind == SDXL_SAMPLER_DPMPP_2M || kind == SDXL_SAMPLER_HEUN ||
           kind == SDXL_SAMPLER_DPMPP_2M_SDE || kind == SDXL_SAMPLER_UNIPC;
}
bool sdxl_sampler_kind_is_stochastic(sdxl_sampler_kind kind) {
    return kind == SDXL_SAMPLER_EULER_A || kind == SDXL_SAMPLER_DPMPP_2M_SDE || kind == SDXL_SAMPLER_LCM;
}

/* ---- schedule --------------------------------------------------------------- */

/* torch.linspace(a, b, n, dtype=float32) */
static float linspace_f(double a, double b, int n, int i) {
    if (n == 1) return (float)a;
    float fa = (float)a, fb = (float)b;
    float step = (fb - fa) / (float)(n - 1);
    return (i < n / 2) ? fa + step * (float)i : fb - step * (float)(n - 1 - i);
}

static void make_alphas_cumprod(const sdxl_sched_config *c, float *ac) {
    int N = c->num_train_timesteps;
    double prod = 1.0; /* torch's CPU cumprod accumulates float in double */
    for (int i = 0; i < N; i++) {
        float beta;
        if (c->beta_schedule == SDXL_BETA_SCALED_LINEAR) {
            float r = linspace_f(sqrt(c->beta_start), sqrt(c->beta_end), N, i);
            beta = r * r;
        } else {
            beta = linspace_f(c->beta_start, c->beta_end, N, i);
        }
        prod = prod * (double)(1.0f - beta);
        ac[i] = (float)prod;
    }
}

/* σ(t) of the training schedule, float32 as numpy computes it. */
static double train_sigma(const float *ac, int t) {
    float a = ac[t];
    return (double)sqrtf((1.0f - a) / a);
}

/* np.interp(t, arange(N), sigmas) */
static double interp_sigma(const float *ac, int N, double t) {
    if (t <= 0) return train_sigma(ac, 0);
    if (t >= N - 1) return train_sigma(ac, N - 1);
    int lo = (int)floor(t);
    double w = t - lo;
    double a = train_sigma(ac, lo), b = train_sigma(ac, lo + 1);
    return a + (b - a) * w; /* numpy: slope·(x - xp[j]) + fp[j] */
}

/* diffusers' _sigma_to_t: fractional timestep of sigma by log-sigma interpolation. */
static double sigma_to_t(const float *ac, int N, double sigma) {
    double ls = log(sigma > 1e-10 ? sigma : 1e-10);
    int low = 0;
    for (int i = 0; i < N; i++)
        if (ls - (double)logf((float)train_sigma(ac, i)) >= 0) low = i;
    if (low > N - 2) low = N - 2;
    double lo = logf((float)train_sigma(ac, low)), hi = logf((float)train_sigma(ac, low + 1));
    double w = (lo - ls) / (lo - hi);
    if (w < 0) w = 0;
    if (w > 1) w = 1;
    return (1 - w) * low + w * (low + 1);
}

static void karras(double smin, double smax, int n, double *out) {
    const double rho = 7.0;
    double mn = pow(smin, 1 / rho), mx = pow(smax, 1 / rho);
    for (int i = 0; i < n; i++) {
        double ramp = n == 1 ? 0.0 : (double)i / (n - 1);
        out[i] = pow(mx + ramp * (mn - mx), rho);
    }
}

/* numpy round (half to even) */
static double round_even(double x) { return nearbyint(x); }

static void spaced_timesteps(const sdxl_sched_config *c, int steps, bool dpm, double *ts) {
    int N = c->num_train_timesteps;
    switch (c->timestep_spacing) {
    case SDXL_SPACING_LINSPACE:
        if (dpm) { /* linspace(0, N-1, steps+1).round()[::-1][:-1] */
            for (int i = 0; i < steps; i++) {
                int k = steps - i;
                ts[i] = round_even((double)(N - 1) * k / steps);
            }
        } else { /* linspace(0, N-1, steps)[::-1] (Euler keeps fractions; DDIM rounds) */
            for (int i = 0; i < steps; i++) {
                int k = steps - 1 - i;
                double v = steps == 1 ? 0.0 : (double)(N - 1) * k / (steps - 1);
                ts[i] = v;
            }
        }
        break;
    case SDXL_SPACING_LEADING: {
        /* arange(0, steps[+1]) · ratio, reversed ([:-1] for DPM), + offset */
        int ratio = dpm ? N / (steps + 1) : N / steps;
        for (int i = 0; i < steps; i++) ts[i] = (double)(dpm ? steps - i : steps - 1 - i) * ratio + c->steps_offset;
        break;
    }
    case SDXL_SPACING_TRAILING: {
        double ratio = (double)N / steps;
        for (int i = 0; i < steps; i++) ts[i] = round_even(N - i * ratio) - 1;
        break;
    }
    }
}

sdxl_status sdxl_sampler_create(sdxl_sampler_kind kind, const sdxl_sched_config *cfg, int steps, int64_t n,
                                sdxl_sampler **out, sdxl_error *err) {
    if (!cfg || !out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sampler: NULL argument");
    *out = NULL;
    if ((int)kind < 0 || kind >= SDXL_SAMPLER_COUNT_)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sampler: invalid kind %d", (int)kind);
    int N = cfg->num_train_timesteps;
    if (N < 2 || steps < 1 || steps > N)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sampler: steps %d out of range [1, %d]", steps, N);
    if (n < 0) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sampler: negative latent size");
    if (cfg->use_karras_sigmas && !sdxl_sampler_kind_supports_karras(kind))
        return sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED, "sampler: %s does not take Karras sigmas",
                              sdxl_sampler_kind_name(kind));
    if (kind == SDXL_SAMPLER_LCM) {
        int orig = cfg->original_inference_steps;
        if (orig < 1 || orig > N)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sampler: LCM original_inference_steps %d not in [1, %d]",
                                  orig, N);
        if (steps > orig)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                                  "sampler: LCM takes at most original_inference_steps = %d steps, not %d", orig, steps);
    }
    sdxl_sampler *s = sdxl_calloc(1, sizeof *s);
    if (!s) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "sampler: out of memory");
    s->kind = kind;
    s->cfg = *cfg;
    s->inf_steps = steps;
    s->steps = kind == SDXL_SAMPLER_HEUN ? 2 * steps - 1 : steps;
    s->n = n;
    s->alphas_cumprod = sdxl_malloc((size_t)N * sizeof(float));
    s->timesteps = sdxl_malloc((size_t)s->steps * sizeof(double));
    s->sigmas = sdxl_malloc((size_t)(s->steps + 1) * sizeof(double));
    bool need_prev =
        (kind == SDXL_SAMPLER_DPMPP_2M || kind == SDXL_SAMPLER_DPMPP_2M_SDE || kind == SDXL_SAMPLER_UNIPC) && n > 0;
    bool need_uni = kind == SDXL_SAMPLER_UNIPC && n > 0;
    bool need_noise = sdxl_sampler_kind_is_stochastic(kind) && n > 0;
    bool need_heun = kind == SDXL_SAMPLER_HEUN && n > 0;
    if (need_prev) s->prev_x0 = sdxl_malloc((size_t)n * sizeof(float));
    if (need_noise) s->noise = sdxl_malloc((size_t)n * sizeof(float));
    if (need_uni) {
        s->uni_m2 = sdxl_malloc((size_t)n * sizeof(float));
        s->uni_last = sdxl_malloc((size_t)n * sizeof(float));
    }
    if (need_heun) {
        s->heun_d = sdxl_malloc((size_t)n * sizeof(float));
        s->heun_x = sdxl_malloc((size_t)n * sizeof(float));
    }
    if (!s->alphas_cumprod || !s->timesteps || !s->sigmas || (need_prev && !s->prev_x0) ||
        (need_noise && !s->noise) || (need_heun && (!s->heun_d || !s->heun_x)) ||
        (need_uni && (!s->uni_m2 || !s->uni_last))) {
        sdxl_sampler_free(s);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "sampler: out of memory");
    }
    const float *ac = s->alphas_cumprod;
    make_alphas_cumprod(cfg, s->alphas_cumprod);
    switch (kind) {
    case SDXL_SAMPLER_EULER:
    case SDXL_SAMPLER_EULER_A:
    case SDXL_SAMPLER_HEUN: {
        spaced_timesteps(cfg, steps, false, s->timesteps);
        for (int i = 0; i < steps; i++) s->timesteps[i] = (float)s->timesteps[i]; /* float32 array */
        for (int i = 0; i < steps; i++) s->sigmas[i] = interp_sigma(ac, N, s->timesteps[i]);
        if (cfg->use_karras_sigmas) {
            karras(s->sigmas[steps - 1], s->sigmas[0], steps, s->sigmas);
            for (int i = 0; i < steps; i++) s->timesteps[i] = sigma_to_t(ac, N, s->sigmas[i]);
        }
        s->sigmas[steps] = 0.0;
        for (int i = 0; i <= steps; i++) s->sigmas[i] = (float)s->sigmas[i]; /* float32 like torch */
        double mx = 0;
        for (int i = 0; i <= steps; i++) mx = s->sigmas[i] > mx ? s->sigmas[i] : mx;
        s->init_noise_sigma = (cfg->timestep_spacing == SDXL_SPACING_LEADING) ? sqrt(mx * mx + 1) : mx;
        if (kind == SDXL_SAMPLER_HEUN) {
            /* diffusers: sigmas [s0, s1, s1, .., s_{n-1}, s_{n-1}, 0], timesteps [t0, t1, t1, ..]; expand the
             * first `steps` entries in place from the end (writes land at indices >= the one read) */
            s->sigmas[2 * steps - 1] = 0.0;
            for (int j = steps - 1; j >= 1; j--) {
                s->timesteps[2 * j] = s->timesteps[2 * j - 1] = s->timesteps[j];
                s->sigmas[2 * j] = s->sigmas[2 * j - 1] = s->sigmas[j];
            }
        }
        break;
    }
    case SDXL_SAMPLER_LCM: {
        /* origin timesteps k·(1..orig) - 1 reversed, picked at floor(linspace(0, orig, steps, endpoint=False)) */
        int orig = cfg->original_inference_steps, k = N / orig;
        double stp = (double)orig / steps;
        for (int i = 0; i < steps; i++) {
            int idx = (int)floor(i * stp);
            s->timesteps[i] = (double)(orig - idx) * k - 1;
        }
        sdxl_free(s->sigmas);
        s->sigmas = NULL;
        s->init_noise_sigma = 1.0;
        break;
    }
    case SDXL_SAMPLER_DPMPP_2M:
    case SDXL_SAMPLER_DPMPP_2M_SDE:
    case SDXL_SAMPLER_UNIPC: {
        if (cfg->use_karras_sigmas) {
            karras(train_sigma(ac, 0), train_sigma(ac, N - 1), steps, s->sigmas);
            for (int i = 0; i < steps; i++) s->timesteps[i] = round_even(sigma_to_t(ac, N, s->sigmas[i]));
        } else {
            spaced_timesteps(cfg, steps, true, s->timesteps);
            for (int i = 0; i < steps; i++) s->sigmas[i] = interp_sigma(ac, N, s->timesteps[i]);
        }
        s->sigmas[steps] = cfg->final_sigmas_type == SDXL_FINAL_SIGMA_MIN ? train_sigma(ac, 0) : 0.0;
        if (kind == SDXL_SAMPLER_UNIPC) /* UniPC: last Karras sigma repeated, else σ_min (no final_sigmas_type) */
            s->sigmas[steps] = cfg->use_karras_sigmas ? s->sigmas[steps - 1] : train_sigma(ac, 0);
        for (int i = 0; i <= steps; i++) s->sigmas[i] = (float)s->sigmas[i];
        s->init_noise_sigma = 1.0;
        break;
    }
    case SDXL_SAMPLER_DDIM:
        spaced_timesteps(cfg, steps, false, s->timesteps);
        for (int i = 0; i < steps; i++) s->timesteps[i] = round_even(s->timesteps[i]);
        sdxl_free(s->sigmas);
        s->sigmas = NULL;
        s->init_noise_sigma = 1.0;
        break;
    default: break;
    }
    *out = s;
    return SDXL_STATUS_OK;
}

void sdxl_sampler_free(sdxl_sampler *s) {
    if (!s) return;
    sdxl_free(s->alphas_cumprod);
    sdxl_free(s->timesteps);
    sdxl_free(s->sigmas);
    sdxl_free(s->prev_x0);
    sdxl_free(s->noise);
    sdxl_free(s->heun_d);
    sdxl_free(s->heun_x);
    sdxl_free(s->uni_m2);
    sdxl_free(s->uni_last);
    sdxl_free(s);
}

void sdxl_sampler_reset(sdxl_sampler *s) {
    s->next_step = 0;
    s->lower_order_nums = 0;
    s->heun_pending = false;
    s->uni_have_last = false;
    s->uni_order = 0;
}

void sdxl_sampler_set_begin_index(sdxl_sampler *s, int i) {
    assert(i >= 0 && i < s->steps);
    s->next_step = i;
}

sdxl_sampler_kind sdxl_sampler_get_kind(const sdxl_sampler *s) { return s->kind; }
int sdxl_sampler_steps(const sdxl_sampler *s) { return s->steps; }
int sdxl_sampler_inference_steps(const sdxl_sampler *s) { return s->inf_steps; }
int sdxl_sampler_order(const sdxl_sampler *s) { return s->kind == SDXL_SAMPLER_HEUN ? 2 : 1; }
double sdxl_sampler_timestep(const sdxl_sampler *s, int i) {
    assert(i >= 0 && i < s->steps);
    return s->timesteps[i];
}
const double *sdxl_sampler_sigmas(const sdxl_sampler *s) { return s->sigmas; }
double sdxl_sampler_init_noise_sigma(const sdxl_sampler *s) { return s->init_noise_sigma; }
const float *sdxl_sampler_alphas_cumprod(const sdxl_sampler *s) { return s->alphas_cumprod; }

void sdxl_sampler_scale_model_input(const sdxl_sampler *s, int i, const float *x, float *out, int64_t n) {
    assert(i >= 0 && i < s->steps);
    if (s->kind == SDXL_SAMPLER_EULER || s->kind == SDXL_SAMPLER_EULER_A || s->kind == SDXL_SAMPLER_HEUN) {
        float d = (float)sqrt(s->sigmas[i] * s->sigmas[i] + 1.0);
        for (int64_t k = 0; k < n; k++) out[k] = x[k] / d;
    } else if (out != x) {
        memcpy(out, x, (size_t)n * sizeof(float));
    }
}

/* ---- steps ------------------------------------------------------------------ */

static void euler_step(const sdxl_sampler *s, int i, const float *eps, float *x, int64_t n, const float *noise) {
    double sigma = s->sigmas[i], sigma_next = s->sigmas[i + 1];
    double dt = sigma_next - sigma, up = 0;
    if (noise) { /* ancestral */
        double f2 = sigma * sigma, t2 = sigma_next * sigma_next;
        up = sqrt(t2 * (f2 - t2) / f2);
        double down = sqrt(t2 - up * up);
        dt = down - sigma;
    }
    float sg = (float)sigma, fdt = (float)dt, fup = (float)up;
    bool v = s->cfg.prediction_type == SDXL_PREDICT_V;
    float cv1 = (float)(-sigma / sqrt(sigma * sigma + 1)), cv2 = (float)(1.0 / (sigma * sigma + 1));
    for (int64_t k = 0; k < n; k++) {
        float x0 = v ? eps[k] * cv1 + x[k] * cv2 : x[k] - sg * eps[k];
        float d = (x[k] - x0) / sg;
        float y = x[k] + d * fdt;
        if (noise) y = y + noise[k] * fup;
        x[k] = y;
    }
}

static void alpha_sigma(double sigma, double *a, double *s) {
    *a = 1.0 / sqrt(sigma * sigma + 1.0);
    *s = sigma * *a;
}

static void dpm_step(sdxl_sampler *s, int i, const float *out, float *x, int64_t n) {
    double a_s0, s_s0, a_t, s_t;
    alpha_sigma(s->sigmas[i], &a_s0, &s_s0);
    alpha_sigma(s->sigmas[i + 1], &a_t, &s_t);
    bool v = s->cfg.prediction_type == SDXL_PREDICT_V;
    bool last = i == s->steps - 1;
    bool lower_final = last && (s->cfg.euler_at_final || (s->cfg.lower_order_final && s->steps < 15) ||
                                s->cfg.final_sigmas_type == SDXL_FINAL_SIGMA_ZERO);
    bool first_order = s->lower_order_nums < 1 || lower_final;
    double lam_t = log(a_t) - log(s_t), lam_s0 = log(a_s0) - log(s_s0);
    double h = lam_t - lam_s0;
    double em1 = exp(-h) - 1.0;
    float c_x = (float)(s_t / s_s0), c_d0 = (float)(-a_t * em1), c_d1 = 0;
    float r_a = (float)a_s0, r_s = (float)s_s0;
    if (!first_order) {
        double a_s1, s_s1;
        alpha_sigma(s->sigmas[i - 1], &a_s1, &s_s1);
        double lam_s1 = log(a_s1) - log(s_s1);
        double r0 = (lam_s0 - lam_s1) / h;
        c_d1 = (float)(-0.5 * a_t * em1 / r0);
    }
    for (int64_t k = 0; k < n; k++) {
        float x0 = v ? r_a * x[k] - r_s * out[k] : (x[k] - r_s * out[k]) / r_a;
        float y = c_x * x[k] + c_d0 * x0;
        if (!first_order) y = y + c_d1 * (x0 - s->prev_x0[k]);
        s->prev_x0[k] = x0;
        x[k] = y;
    }
    if (s->lower_order_nums < 2) s->lower_order_nums++;
}

/* DPM++ 2M SDE (sde-dpmsolver++, midpoint): as dpm_step plus the noise term. */
static void dpm_sde_step(sdxl_sampler *s, int i, const float *out, float *x, int64_t n, const float *noise) {
    double a_s0, s_s0, a_t, s_t;
    alpha_sigma(s->sigmas[i], &a_s0, &s_s0);
    alpha_sigma(s->sigmas[i + 1], &a_t, &s_t);
    bool v = s->cfg.prediction_type == SDXL_PREDICT_V;
    bool last = i == s->steps - 1;
    bool lower_final = last && (s->cfg.euler_at_final || (s->cfg.lower_order_final && s->steps < 15) ||
                                s->cfg.final_sigmas_type == SDXL_FINAL_SIGMA_ZERO);
    bool first_order = s->lower_order_nums < 1 || lower_final;
    float c_x, c_d0, c_n, c_d1 = 0;
    if (s_t == 0.0) { /* final sigma 0: h = inf, x = x0 exactly */
        c_x = 0.0f;
        c_d0 = (float)a_t;
        c_n = 0.0f;
    } else {
        double lam_t = log(a_t) - log(s_t), lam_s0 = log(a_s0) - log(s_s0);
        double h = lam_t - lam_s0;
        double e1 = exp(-h), om = 1.0 - exp(-2.0 * h);
        c_x = (float)(s_t / s_s0 * e1);
        c_d0 = (float)(a_t * om);
        c_n = (float)(s_t * sqrt(om));
        if (!first_order) {
            double a_s1, s_s1;
            alpha_sigma(s->sigmas[i - 1], &a_s1, &s_s1);
            double lam_s1 = log(a_s1) - log(s_s1);
            double r0 = (lam_s0 - lam_s1) / h;
            c_d1 = (float)(0.5 * a_t * om / r0);
        }
    }
    float r_a = (float)a_s0, r_s = (float)s_s0;
    for (int64_t k = 0; k < n; k++) {
        float x0 = v ? r_a * x[k] - r_s * out[k] : (x[k] - r_s * out[k]) / r_a;
        float y = c_x * x[k] + c_d0 * x0;
        if (!first_order) y = y + c_d1 * (x0 - s->prev_x0[k]);
        y = y + c_n * noise[k];
        s->prev_x0[k] = x0;
        x[k] = y;
    }
    if (s->lower_order_nums < 2) s->lower_order_nums++;
}

/* Heun: a first-order (Euler) call stores derivative, dt and sample; the next
 * call averages the derivatives and redoes the step from the stored sample. */
static void heun_step(sdxl_sampler *s, int i, const float *out, float *x, int64_t n) {
    bool v = s->cfg.prediction_type == SDXL_PREDICT_V;
    bool clip = s->cfg.clip_sample;
    float cr = (float)s->cfg.clip_sample_range;
    bool first = !s->heun_pending;
    double sig_in = s->sigmas[i]; /* first call: sigma_hat = σ_i; second: sigma_next = σ_i */
    float sg = (float)sig_in;
    float cv1 = (float)(-sig_in / sqrt(sig_in * sig_in + 1)), cv2 = (float)(1.0 / (sig_in * sig_in + 1));
    float fdt;
    if (first) {
        s->heun_dt = s->sigmas[i + 1] - s->sigmas[i];
    }
    fdt = (float)s->heun_dt;
    for (int64_t k = 0; k < n; k++) {
        float x0 = v ? out[k] * cv1 + x[k] * cv2 : x[k] - sg * out[k];
        if (clip) x0 = x0 < -cr ? -cr : (x0 > cr ? cr : x0);
        float d = (x[k] - x0) / sg;
        if (first) {
            s->heun_d[k] = d;
            s->heun_x[k] = x[k];
            x[k] = x[k] + d * fdt;
        } else {
            d = (s->heun_d[k] + d) / 2.0f;
            x[k] = s->heun_x[k] + d * fdt;
        }
    }
    s->heun_pending = first;
}

/* LCM: boundary-condition scalings of the (integer) timestep, then noise to the next timestep. */
static void lcm_step(const sdxl_sampler *s, int i, const float *out, float *x, int64_t n, const float *noise) {
    int t = (int)s->timesteps[i];
    bool last = i == s->steps - 1;
    int prev = last ? t : (int)s->timesteps[i + 1];
    float a_t = s->alphas_cumprod[t], a_p = s->alphas_cumprod[prev];
    float sa = sqrtf(a_t), sb = sqrtf(1.0f - a_t), pa = sqrtf(a_p), pb = sqrtf(1.0f - a_p);
    double st = (double)t * s->cfg.timestep_scaling, sd2 = 0.25;
    float c_skip = (float)(sd2 / (st * st + sd2)), c_out = (float)(st / sqrt(st * st + sd2));
    bool v = s->cfg.prediction_type == SDXL_PREDICT_V;
    bool clip = s->cfg.clip_sample;
    float cr = (float)s->cfg.clip_sample_range;
    for (int64_t k = 0; k < n; k++) {
        float x0 = v ? sa * x[k] - sb * out[k] : (x[k] - sb * out[k]) / sa;
        if (clip) x0 = x0 < -cr ? -cr : (x0 > cr ? cr : x0);
        float den = c_out * x0 + c_skip * x[k];
        x[k] = last ? den : pa * den + pb * noise[k];
    }
}

static double lambda_of(double sigma) {
    double a, sg;
    alpha_sigma(sigma, &a, &sg);
    return log(a) - log(sg);
}

/* UniPC bh2, predict_x0, solver_order 2: corrector UniC (from the last
 * sample with the new data prediction), then predictor UniP. */
static void unipc_step(sdxl_sampler *s, int i, const float *out, float *x, int64_t n) {
    const double *sg = s->sigmas;
    bool v = s->cfg.prediction_type == SDXL_PREDICT_V;
    double a_i, s_i;
    alpha_sigma(sg[i], &a_i, &s_i);
    float r_a = (float)a_i, r_s = (float)s_i;
    /* corrector coefficients: x_c = cl·last + cm1·m1 + cd·(m2 - m1) + cx·(x0 - m1) */
    bool corr = i > 0 && s->uni_have_last;
    float cl = 0, cm1 = 0, cd = 0, cx = 0;
    if (corr) {
        double a_t = a_i, s_t = s_i, a_s0, s_s0;
        alpha_sigma(sg[i - 1], &a_s0, &s_s0);
        double h = (log(a_t) - log(s_t)) - (log(a_s0) - log(s_s0));
        double hh = -h, phi1 = expm1(hh), bh = expm1(hh);
        double k1 = phi1 / hh - 1, b1 = k1 / bh;
        double k2 = k1 / hh - 0.5, b2 = k2 * 2 / bh;
        double rho_d = 0, rho_t = 0.5;
        if (s->uni_order == 2) {
            double rk = (lambda_of(sg[i - 2]) - (log(a_s0) - log(s_s0))) / h;
            /* solve [[1, 1], [rk, 1]] · ρ = [b1, b2] */
            rho_d = (b1 - b2) / (1 - rk);
            rho_t = b1 - rho_d;
            rho_d /= rk; /* D1 = (m2 - m1) / rk */
        }
        cl = (float)(s_t / s_s0);
        cm1 = (float)(-a_t * phi1);
        cd = (float)(-a_t * bh * rho_d);
        cx = (float)(-a_t * bh * rho_t);
    }
    /* predictor */
    int order = s->cfg.lower_order_final ? (s->steps - i < 2 ? s->steps - i : 2) : 2;
    if (order > s->lower_order_nums + 1) order = s->lower_order_nums + 1;
    double a_t, s_t, a_s0 = a_i, s_s0 = s_i;
    alpha_sigma(sg[i + 1], &a_t, &s_t);
    double h = (log(a_t) - log(s_t)) - (log(a_s0) - log(s_s0));
    float px = 1, pm = 0, pd = 0;
    if (h != 0) { /* h = 0 (Karras' repeated last sigma): diffusers leaves the sample as it is */
        double hh = -h, phi1 = expm1(hh), bh = expm1(hh);
        px = (float)(s_t / s_s0);
        pm = (float)(-a_t * phi1);
        if (order == 2) {
            double rk = (lambda_of(sg[i - 1]) - (log(a_s0) - log(s_s0))) / h;
            pd = (float)(-a_t * bh * 0.5 / rk); /* D1 = (m_prev - x0) / rk, ρ_p = 0.5 */
        }
    }
    for (int64_t k = 0; k < n; k++) {
        float x0 = v ? r_a * x[k] - r_s * out[k] : (x[k] - r_s * out[k]) / r_a;
        float xc = x[k];
        if (corr) {
            float m1 = s->prev_x0[k];
            float c = cx * (x0 - m1);
            if (s->uni_order == 2) c = c + cd * (s->uni_m2[k] - m1);
            xc = cl * s->uni_last[k] + cm1 * m1 + c;
        }
        float mp = s->prev_x0[k];
        s->uni_m2[k] = mp;
        s->prev_x0[k] = x0;
        s->uni_last[k] = xc;
        float y = px * xc + pm * x0;
        if (order == 2) y = y + pd * (mp - x0);
        x[k] = y;
    }
    s->uni_order = order;
    s->uni_have_last = true;
    if (s->lower_order_nums < 2) s->lower_order_nums++;
}

static void ddim_step(const sdxl_sampler *s, int i, const float *out, float *x, int64_t n) {
    int N = s->cfg.num_train_timesteps;
    int t = (int)s->timesteps[i];
    int prev = t - N / s->steps;
    double a_t = s->alphas_cumprod[t];
    double a_prev = prev >= 0 ? s->alphas_cumprod[prev] : (s->cfg.set_alpha_to_one ? 1.0 : s->alphas_cumprod[0]);
    double b_t = 1.0 - a_t;
    float sa = (float)sqrt(a_t), sb = (float)sqrt(b_t);
    float pa = (float)sqrt(a_prev), pd = (float)sqrt(1.0 - a_prev);
    bool v = s->cfg.prediction_type == SDXL_PREDICT_V;
    float clip = (float)s->cfg.clip_sample_range;
    for (int64_t k = 0; k < n; k++) {
        float x0, e;
        if (v) {
            x0 = sa * x[k] - sb * out[k];
            e = sa * out[k] + sb * x[k];
        } else {
            x0 = (x[k] - sb * out[k]) / sa;
            e = out[k];
        }
        if (s->cfg.clip_sample) {
            x0 = x0 < -clip ? -clip : (x0 > clip ? clip : x0);
            if (!v) e = (x[k] - sa * x0) / sb; /* diffusers re-derives eps after clipping */
        }
        x[k] = pa * x0 + pd * e;
    }
}

sdxl_status sdxl_sampler_step(sdxl_sampler *s, int i, const float *model_output, float *x, int64_t n,
                              sdxl_rng *rng, sdxl_error *err) {
    if (!s || !model_output || !x) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sampler step: NULL argument");
    if (i != s->next_step || i >= s->steps)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sampler step: step %d out of order (expected %d of %d)", i,
                              s->next_step, s->steps);
    if (n != s->n || n == 0)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sampler step: %lld floats, sampler made for %lld",
                              (long long)n, (long long)s->n);
    switch (s->kind) {
    case SDXL_SAMPLER_EULER: euler_step(s, i, model_output, x, n, NULL); break;
    case SDXL_SAMPLER_EULER_A: {
        if (!rng) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sampler step: Euler a needs an rng");
        /* one randn of the whole latent tensor, as diffusers draws it */
        sdxl_rng_randn(rng, s->noise, n);
        euler_step(s, i, model_output, x, n, s->noise);
        break;
    }
    case SDXL_SAMPLER_DPMPP_2M: dpm_step(s, i, model_output, x, n); break;
    case SDXL_SAMPLER_DDIM: ddim_step(s, i, model_output, x, n); break;
    case SDXL_SAMPLER_HEUN: heun_step(s, i, model_output, x, n); break;
    case SDXL_SAMPLER_UNIPC: unipc_step(s, i, model_output, x, n); break;
    case SDXL_SAMPLER_DPMPP_2M_SDE:
    case SDXL_SAMPLER_LCM: {
        if (!rng)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sampler step: %s needs an rng",
                                  sdxl_sampler_kind_name(s->kind));
        /* diffusers draws randn(latent shape) every SDE step; LCM on all steps but the last */
        bool draw = s->kind == SDXL_SAMPLER_DPMPP_2M_SDE || i != s->steps - 1;
        if (draw) sdxl_rng_randn(rng, s->noise, n);
        if (s->kind == SDXL_SAMPLER_LCM) lcm_step(s, i, model_output, x, n, s->noise);
        else dpm_sde_step(s, i, model_output, x, n, s->noise);
        break;
    }
    default: return sdxl_error_set(err, SDXL_STATUS_INTERNAL, "sampler step: bad kind");
    }
    s->next_step++;
    return SDXL_STATUS_OK;
}
