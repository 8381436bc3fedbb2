/* a1111.c - A1111's /sdapi/v1 bodies onto the native request and back (see
 * a1111.h). The field table below is A1111 1.10's API models
 * (modules/api/models.py generated from modules/processing.py), with the
 * types pydantic enforces and the defaults it fills in. */
#include "worker/a1111.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/alloc.h"
#include "io/base64.h"
#include "io/json.h"
#include "lora/worker.h"
#include "sample/scheduler.h"
#include "sdxl.h"

/* ---- small helpers --------------------------------------------------------------- */

static char *dupstr(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static char *print_free(cJSON *j) {
    if (!j) return NULL;
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static sdxl_status add_warning(char ***w, int *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static sdxl_status add_warning(char ***w, int *n, const char *fmt, ...) {
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (*n >= 256) return SDXL_STATUS_OK; /* enough said */
    char **nw = realloc(*w, (size_t)(*n + 1) * sizeof *nw);
    if (!nw) return SDXL_STATUS_OUT_OF_MEMORY;
    *w = nw;
    if (!(nw[*n] = dupstr(buf))) return SDXL_STATUS_OUT_OF_MEMORY;
    (*n)++;
    return SDXL_STATUS_OK;
}

void sdxl_a1111_warnings_free(char **warnings, int n) {
    for (int i = 0; i < n; i++)
        free(warnings[i]);
    free(warnings);
}

/* a key for messages: printable ASCII only, cut */
static const char *safe_key(const char *k, char *buf, size_t n) {
    size_t o = 0;
    for (const char *p = k ? k : "?"; *p && o + 1 < n && o < 80; p++)
        buf[o++] = (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\') ? *p : '?';
    buf[o] = 0;
    return buf;
}

sdxl_a1111_options sdxl_a1111_default_options(void) {
    sdxl_a1111_options o;
    memset(&o, 0, sizeof o);
    return o;
}

/* ---- the field table ------------------------------------------------------------- */

enum { T_STR, T_INT, T_NUM, T_BOOL, T_LIST, T_DICT };
enum { K_T2I = 1, K_I2I = 2, K_ALL = 3 };

typedef struct {
    const char *name;
    int type;
    int kinds;
    const char *def; /* the default as JSON text */
} a_field;

static const a_field FIELDS[] = {
    {"prompt", T_STR, K_ALL, "\"\""},
    {"negative_prompt", T_STR, K_ALL, "\"\""},
    {"styles", T_LIST, K_ALL, "null"},
    {"seed", T_INT, K_ALL, "-1"},
    {"subseed", T_INT, K_ALL, "-1"},
    {"subseed_strength", T_NUM, K_ALL, "0"},
    {"seed_resize_from_h", T_INT, K_ALL, "-1"},
    {"seed_resize_from_w", T_INT, K_ALL, "-1"},
    {"sampler_name", T_STR, K_ALL, "null"},
    {"scheduler", T_STR, K_ALL, "null"},
    {"batch_size", T_INT, K_ALL, "1"},
    {"n_iter", T_INT, K_ALL, "1"},
    {"steps", T_INT, K_ALL, "50"},
    {"cfg_scale", T_NUM, K_ALL, "7.0"},
    {"width", T_INT, K_ALL, "512"},
    {"height", T_INT, K_ALL, "512"},
    {"restore_faces", T_BOOL, K_ALL, "null"},
    {"tiling", T_BOOL, K_ALL, "null"},
    {"do_not_save_samples", T_BOOL, K_ALL, "false"},
    {"do_not_save_grid", T_BOOL, K_ALL, "false"},
    {"eta", T_NUM, K_ALL, "null"},
    {"denoising_strength", T_NUM, K_ALL, "0.75"},
    {"s_min_uncond", T_NUM, K_ALL, "null"},
    {"s_churn", T_NUM, K_ALL, "null"},
    {"s_tmax", T_NUM, K_ALL, "null"},
    {"s_tmin", T_NUM, K_ALL, "null"},
    {"s_noise", T_NUM, K_ALL, "null"},
    {"override_settings", T_DICT, K_ALL, "null"},
    {"override_settings_restore_afterwards", T_BOOL, K_ALL, "true"},
    {"refiner_checkpoint", T_STR, K_ALL, "null"},
    {"refiner_switch_at", T_NUM, K_ALL, "null"},
    {"disable_extra_networks", T_BOOL, K_ALL, "false"},
    {"firstpass_image", T_STR, K_ALL, "null"},
    {"comments", T_DICT, K_ALL, "null"},
    {"enable_hr", T_BOOL, K_T2I, "false"},
    {"firstphase_width", T_INT, K_T2I, "0"},
    {"firstphase_height", T_INT, K_T2I, "0"},
    {"hr_scale", T_NUM, K_T2I, "2.0"},
    {"hr_upscaler", T_STR, K_T2I, "null"},
    {"hr_second_pass_steps", T_INT, K_T2I, "0"},
    {"hr_resize_x", T_INT, K_T2I, "0"},
    {"hr_resize_y", T_INT, K_T2I, "0"},
    {"hr_checkpoint_name", T_STR, K_T2I, "null"},
    {"hr_sampler_name", T_STR, K_T2I, "null"},
    {"hr_scheduler", T_STR, K_T2I, "null"},
    {"hr_prompt", T_STR, K_T2I, "\"\""},
    {"hr_negative_prompt", T_STR, K_T2I, "\"\""},
    {"init_images", T_LIST, K_I2I, "null"},
    {"resize_mode", T_INT, K_I2I, "0"},
    {"image_cfg_scale", T_NUM, K_I2I, "null"},
    {"mask", T_STR, K_I2I, "null"},
    {"mask_blur_x", T_INT, K_I2I, "4"},
    {"mask_blur_y", T_INT, K_I2I, "4"},
    {"mask_blur", T_INT, K_I2I, "null"},
    {"mask_round", T_BOOL, K_I2I, "true"},
    {"inpainting_fill", T_INT, K_I2I, "0"},
    {"inpaint_full_res", T_BOOL, K_I2I, "true"},
    {"inpaint_full_res_padding", T_INT, K_I2I, "0"},
    {"inpainting_mask_invert", T_INT, K_I2I, "0"},
    {"initial_noise_multiplier", T_NUM, K_I2I, "null"},
    {"latent_mask", T_STR, K_I2I, "null"},
    {"force_task_id", T_STR, K_ALL, "null"},
    {"sampler_index", T_STR, K_ALL, "\"Euler\""},
    {"include_init_images", T_BOOL, K_I2I, "false"},
    {"script_name", T_STR, K_ALL, "null"},
    {"script_args", T_LIST, K_ALL, "[]"},
    {"send_images", T_BOOL, K_ALL, "true"},
    {"save_images", T_BOOL, K_ALL, "false"},
    {"alwayson_scripts", T_DICT, K_ALL, "{}"},
    {"infotext", T_STR, K_ALL, "null"},
};
#define N_FIELDS (sizeof FIELDS / sizeof FIELDS[0])

static const char *type_word(int t) {
    switch (t) {
    case T_STR: return "a string";
    case T_INT: return "an integer";
    case T_NUM: return "a number";
    case T_BOOL: return "true or false";
    case T_LIST: return "a list";
    default: return "an object";
    }
}

#define MAX_EXACT 9007199254740992.0 /* 2^53 */

/* Type check of one present, non-null value. */
static sdxl_status check_type(const cJSON *v, const char *name, int type, sdxl_error *err) {
    bool ok;
    switch (type) {
    case T_STR: ok = cJSON_IsString(v); break;
    case T_INT: ok = cJSON_IsNumber(v); break;
    case T_NUM: ok = cJSON_IsNumber(v); break;
    case T_BOOL: ok = cJSON_IsBool(v); break;
    case T_LIST: ok = cJSON_IsArray(v); break;
    default: ok = cJSON_IsObject(v); break;
    }
    if (!ok)
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: expected %s, got %s", name, type_word(type),
                              sdxl_json_type_name(v));
    if (type == T_INT || type == T_NUM) {
        double d = v->valuedouble;
        if (!isfinite(d)) return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: not a finite number", name);
        if (type == T_INT && d != floor(d))
            return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: expected an integer, got %g", name, d);
        if (fabs(d) > (type == T_INT ? MAX_EXACT : 1e15))
            return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: %g is out of range", name, d);
    }
    return SDXL_STATUS_OK;
}

/* The value of a field: the given one unless absent or null. */
static const cJSON *val(const cJSON *root, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, k);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static double num_or(const cJSON *root, const char *k, double def) {
    const cJSON *v = val(root, k);
    return v ? v->valuedouble : def;
}

static bool bool_or(const cJSON *root, const char *k, bool def) {
    const cJSON *v = val(root, k);
    return v ? cJSON_IsTrue(v) : def;
}

static const char *str_or(const cJSON *root, const char *k, const char *def) {
    const cJSON *v = val(root, k);
    return v ? v->valuestring : def;
}

static sdxl_status range(const cJSON *root, const char *k, double lo, double hi, sdxl_error *err) {
    const cJSON *v = val(root, k);
    if (v && (v->valuedouble < lo || v->valuedouble > hi))
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: %g is out of range [%g, %g]", k,
                              v->valuedouble, lo, hi);
    return SDXL_STATUS_OK;
}

/* ---- samplers -------------------------------------------------------------------- */

typedef struct {
    sdxl_sampler_kind kind;
    const char *aliases[3];
    const char *options; /* JSON */
    bool auto_karras;    /* A1111 >= 1.9: "Automatic" means Karras for this sampler */
} a_sampler;

/* In A1111's list order. */
static const a_sampler SAMPLERS[] = {
    {SDXL_SAMPLER_DPMPP_2M, {"k_dpmpp_2m", NULL}, "{\"scheduler\":\"karras\"}", true},
    {SDXL_SAMPLER_DPMPP_2M_SDE, {"k_dpmpp_2m_sde", NULL}, "{}", false},
    {SDXL_SAMPLER_EULER_A, {"k_euler_a", "k_euler_ancestral", NULL}, "{\"uses_ensd\":true}", false},
    {SDXL_SAMPLER_EULER, {"k_euler", NULL}, "{}", false},
    {SDXL_SAMPLER_HEUN, {"k_heun", NULL}, "{\"second_order\":true}", false},
    {SDXL_SAMPLER_LCM, {"k_lcm", NULL}, "{}", false},
    {SDXL_SAMPLER_DDIM, {"ddim", NULL}, "{\"default_eta_is_0\":true,\"uses_ensd\":true}", false},
    {SDXL_SAMPLER_UNIPC, {"unipc", NULL}, "{}", false},
};
#define N_SAMPLERS (sizeof SAMPLERS / sizeof SAMPLERS[0])

/* A1111 name, alias or any name the engine knows (with " Karras"). */
static bool find_sampler(const char *name, sdxl_sampler_kind *kind, bool *karras) {
    *karras = false;
    for (size_t i = 0; i < N_SAMPLERS; i++) {
        if (!strcmp(name, sdxl_sampler_kind_name(SAMPLERS[i].kind))) {
            *kind = SAMPLERS[i].kind;
            return true;
        }
        for (int a = 0; SAMPLERS[i].aliases[a]; a++)
            if (!strcmp(name, SAMPLERS[i].aliases[a])) {
                *kind = SAMPLERS[i].kind;
                return true;
            }
    }
    return sdxl_sampler_parse_name(name, kind, karras, NULL) == SDXL_STATUS_OK;
}

static bool sampler_auto_karras(sdxl_sampler_kind k) {
    for (size_t i = 0; i < N_SAMPLERS; i++)
        if (SAMPLERS[i].kind == k) return SAMPLERS[i].auto_karras;
    return false;
}

char *sdxl_a1111_samplers_json(void) {
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < N_SAMPLERS; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", sdxl_sampler_kind_name(SAMPLERS[i].kind));
        cJSON *al = cJSON_AddArrayToObject(o, "aliases");
        for (int a = 0; SAMPLERS[i].aliases[a]; a++)
            cJSON_AddItemToArray(al, cJSON_CreateString(SAMPLERS[i].aliases[a]));
        cJSON_AddItemToObject(o, "options", cJSON_Parse(SAMPLERS[i].options));
        cJSON_AddItemToArray(arr, o);
    }
    return print_free(arr);
}

/* A1111's schedulers (sd_schedulers.py): name, label. We implement the first three. */
static const struct {
    const char *name, *label;
    bool implemented;
    double rho;
    bool inner;
} SCHEDULERS[] = {
    {"automatic", "Automatic", true, -1, false},
    {"uniform", "Uniform", true, -1, true},
    {"karras", "Karras", true, 7.0, false},
    {"exponential", "Exponential", false, -1, false},
    {"polyexponential", "Polyexponential", false, 1.0, false},
    {"sgm_uniform", "SGM Uniform", false, -1, true},
    {"kl_optimal", "KL Optimal", false, -1, false},
    {"align_your_steps", "Align Your Steps", false, -1, false},
    {"simple", "Simple", false, -1, true},
    {"normal", "Normal", false, -1, true},
    {"ddim", "DDIM", false, -1, true},
    {"beta", "Beta", false, -1, true},
};
#define N_SCHEDULERS (sizeof SCHEDULERS / sizeof SCHEDULERS[0])

char *sdxl_a1111_schedulers_json(void) {
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < N_SCHEDULERS; i++) {
        if (!SCHEDULERS[i].implemented) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", SCHEDULERS[i].name);
        cJSON_AddStringToObject(o, "label", SCHEDULERS[i].label);
        cJSON_AddNullToObject(o, "aliases");
        cJSON_AddNumberToObject(o, "default_rho", SCHEDULERS[i].rho);
        cJSON_AddBoolToObject(o, "need_inner_model", SCHEDULERS[i].inner);
        cJSON_AddItemToArray(arr, o);
    }
    return print_free(arr);
}

/* ---- models ------------------------------------------------------------------------ */

bool sdxl_a1111_find_model(const sdxl_engine *e, const char *title, char *name, size_t n) {
    char t[256];
    snprintf(t, sizeof t, "%s", title);
    char *br = strstr(t, " [");
    if (br) *br = 0; /* "name [hash]" */
    size_t l = strlen(t);
    static const char *const ext[] = {".safetensors", ".ckpt", NULL};
    for (int k = 0; ext[k]; k++) {
        size_t el = strlen(ext[k]);
        if (l > el && !strcmp(t + l - el, ext[k])) t[l - el] = 0;
    }
    int count = sdxl_engine_model_count(e);
    for (int i = 0; i < count; i++) {
        sdxl_engine_model_entry m;
        if (!sdxl_engine_model_at(e, i, &m, NULL)) continue;
        if (!strcmp(m.name, t) || !strcmp(m.path, title)) {
            snprintf(name, n, "%s", i == 0 ? "" : m.name);
            return true;
        }
    }
    return false;
}

static const char *current_model_name(const sdxl_engine *e, const sdxl_a1111_options *opt) {
    return opt->model[0] ? opt->model : sdxl_engine_default_model_name(e);
}

char *sdxl_a1111_sd_models_json(const sdxl_engine *e) {
    cJSON *arr = cJSON_CreateArray();
    int count = sdxl_engine_model_count(e);
    for (int i = 0; arr && i < count; i++) {
        sdxl_engine_model_entry m;
        if (!sdxl_engine_model_at(e, i, &m, NULL)) continue;
        cJSON *o = cJSON_CreateObject();
        char hash[11], title[160];
        bool has_hash = sdxl_engine_model_hash(e, i, hash);
        if (has_hash) snprintf(title, sizeof title, "%.127s [%s]", m.name, hash); /* A1111: "name [hash]" */
        cJSON_AddStringToObject(o, "title", has_hash ? title : m.name);
        cJSON_AddStringToObject(o, "model_name", m.name);
        if (has_hash) cJSON_AddStringToObject(o, "hash", hash);
        else cJSON_AddNullToObject(o, "hash");
        cJSON_AddNullToObject(o, "sha256");
        cJSON_AddStringToObject(o, "filename", m.path);
        cJSON_AddNullToObject(o, "config");
        cJSON_AddItemToArray(arr, o);
    }
    return print_free(arr);
}

/* ---- options ------------------------------------------------------------------------ */

char *sdxl_a1111_options_json(const sdxl_engine *e, const sdxl_a1111_options *opt) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "sd_model_checkpoint", current_model_name(e, opt));
    cJSON_AddNullToObject(o, "sd_checkpoint_hash");
    cJSON_AddStringToObject(o, "sd_vae", "Automatic");
    cJSON_AddNumberToObject(o, "CLIP_stop_at_last_layers", 1);
    cJSON_AddStringToObject(o, "randn_source", opt->randn_cpu ? "CPU" : "GPU");
    cJSON_AddNumberToObject(o, "eta_noise_seed_delta", 0);
    cJSON_AddStringToObject(o, "samples_format", "png");
    cJSON_AddBoolToObject(o, "samples_save", true);
    cJSON_AddBoolToObject(o, "grid_save", false);
    cJSON_AddBoolToObject(o, "return_grid", false);
    cJSON_AddBoolToObject(o, "enable_pnginfo", true);
    cJSON_AddBoolToObject(o, "add_model_name_to_info", true);
    cJSON_AddBoolToObject(o, "add_model_hash_to_info", true);
    const sdxl_engine_config *c = sdxl_engine_get_config(e);
    cJSON_AddStringToObject(o, "outdir_samples", "");
    char buf[1200];
    snprintf(buf, sizeof buf, "%s/txt2img-images", c ? c->output_dir : "outputs");
    cJSON_AddStringToObject(o, "outdir_txt2img_samples", buf);
    snprintf(buf, sizeof buf, "%s/img2img-images", c ? c->output_dir : "outputs");
    cJSON_AddStringToObject(o, "outdir_img2img_samples", buf);
    cJSON_AddNumberToObject(o, "eta_ancestral", 1.0);
    cJSON_AddNumberToObject(o, "eta_ddim", 0.0);
    cJSON_AddNumberToObject(o, "s_churn", 0.0);
    cJSON_AddNumberToObject(o, "s_tmin", 0.0);
    cJSON_AddNumberToObject(o, "s_tmax", 0.0);
    cJSON_AddNumberToObject(o, "s_noise", 1.0);
    cJSON_AddNumberToObject(o, "s_min_uncond", 0.0);
    cJSON_AddStringToObject(o, "sd_lora", "None");
    cJSON_AddStringToObject(o, "lora_preferred_name", "Alias from file");
    cJSON_AddBoolToObject(o, "live_previews_enable", false);
    cJSON_AddNumberToObject(o, "sd_checkpoints_limit", 1);
    return print_free(o);
}

static bool randn_word(const char *s, bool *cpu) {
    if (!strcmp(s, "CPU")) return *cpu = true;
    if (!strcmp(s, "GPU") || !strcmp(s, "NV")) return !(*cpu = false);
    return false;
}

sdxl_status sdxl_a1111_options_set(const char *json, size_t len, const sdxl_engine *e,
                                   sdxl_a1111_options *opt, char ***warnings, int *n_warnings,
                                   sdxl_error *err) {
    *warnings = NULL;
    *n_warnings = 0;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "body: malformed JSON");
    sdxl_a1111_options next = *opt;
    sdxl_status st = SDXL_STATUS_OK;
    char kb[96];
    if (!cJSON_IsObject(root)) {
        st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "body: expected an object, got %s",
                            sdxl_json_type_name(root));
        goto done;
    }
    for (const cJSON *it = root->child; it && !st; it = it->next) {
        const char *k = it->string ? it->string : "";
        if (!strcmp(k, "sd_model_checkpoint")) {
            if (!cJSON_IsString(it)) {
                st =
                    sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                   "sd_model_checkpoint: expected a string, got %s", sdxl_json_type_name(it));
            } else if (!sdxl_a1111_find_model(e, it->valuestring, next.model, sizeof next.model)) {
                st = sdxl_error_set(err, SDXL_STATUS_NOT_FOUND, "model '%s' not found",
                                    safe_key(it->valuestring, kb, sizeof kb));
            }
        } else if (!strcmp(k, "randn_source")) {
            if (!cJSON_IsString(it) || !randn_word(it->valuestring, &next.randn_cpu))
                st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                    "randn_source: expected \"CPU\", \"GPU\" or \"NV\"");
        } else if ((!strcmp(k, "CLIP_stop_at_last_layers") && cJSON_IsNumber(it) && it->valuedouble == 1) ||
                   (!strcmp(k, "samples_format") && cJSON_IsString(it) && !strcmp(it->valuestring, "png")) ||
                   (!strcmp(k, "eta_noise_seed_delta") && cJSON_IsNumber(it) && it->valuedouble == 0)) {
            /* what we do anyway */
        } else if (add_warning(warnings, n_warnings, "options.%s: not implemented here, ignored",
                               safe_key(k, kb, sizeof kb))) {
            st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "out of memory");
        }
    }
done:
    cJSON_Delete(root);
    if (st) {
        sdxl_a1111_warnings_free(*warnings, *n_warnings);
        *warnings = NULL;
        *n_warnings = 0;
        return st;
    }
    *opt = next;
    return SDXL_STATUS_OK;
}

/* ---- loras ---------------------------------------------------------------------------- */

char *sdxl_a1111_loras_json(sdxl_lora_registry *reg) {
    cJSON *arr = cJSON_CreateArray();
    sdxl_lora_info *info = malloc(sizeof *info);
    if (!arr || !info) {
        cJSON_Delete(arr);
        free(info);
        return NULL;
    }
    /* A1111 keys its list by name: one entry per name, the file a <lora:name>
     * tag would use (the registry's collision order) */
    size_t n = sdxl_lora_registry_count(reg);
    sdxl_lora_resolution *res = malloc(sizeof *res);
    if (!res) {
        cJSON_Delete(arr);
        free(info);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (sdxl_lora_registry_get(reg, i, info, NULL)) continue;
        bool seen = false;
        for (const cJSON *it = arr->child; it && !seen; it = it->next)
            seen = !strcmp(cJSON_GetObjectItem(it, "name")->valuestring, info->name);
        if (seen) continue;
        if (sdxl_lora_registry_resolve(reg, info->name, NULL, res, NULL) == SDXL_STATUS_OK &&
            !strcmp(res->entry.name, info->name))
            *info = res->entry;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", info->name);
        cJSON_AddStringToObject(o, "alias", info->output_name[0] ? info->output_name : info->name);
        cJSON_AddStringToObject(o, "path", info->path);
        cJSON *md = cJSON_AddObjectToObject(o, "metadata");
        char num[64];
        if (info->output_name[0]) cJSON_AddStringToObject(md, "ss_output_name", info->output_name);
        if (info->base_model[0]) cJSON_AddStringToObject(md, "ss_base_model_version", info->base_model);
        if (info->network_module[0]) cJSON_AddStringToObject(md, "ss_network_module", info->network_module);
        if (info->network_dim) {
            snprintf(num, sizeof num, "%lld", (long long)info->network_dim);
            cJSON_AddStringToObject(md, "ss_network_dim", num);
        }
        if (info->network_alpha != 0) {
            snprintf(num, sizeof num, "%g", info->network_alpha);
            cJSON_AddStringToObject(md, "ss_network_alpha", num);
        }
        cJSON_AddItemToArray(arr, o);
    }
    free(res);
    free(info);
    return print_free(arr);
}

/* ---- errors -------------------------------------------------------------------------- */

/* "a.b[2].c: why" -> ["body", "a", "b", 2, "c"], "why" */
char *sdxl_a1111_validation_error_json(const char *msg) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON *detail = cJSON_AddArrayToObject(root, "detail");
    cJSON *d = cJSON_CreateObject();
    cJSON *loc = cJSON_AddArrayToObject(d, "loc");
    cJSON_AddItemToArray(loc, cJSON_CreateString("body"));
    const char *colon = strstr(msg, ": ");
    const char *why = msg;
    if (colon && (size_t)(colon - msg) < 300) {
        char path[320];
        snprintf(path, sizeof path, "%.*s", (int)(colon - msg), msg);
        why = colon + 2;
        char *s = path;
        while (*s) {
            size_t k = strcspn(s, ".[");
            if (k) {
                char c = s[k];
                s[k] = 0;
                cJSON_AddItemToArray(loc, cJSON_CreateString(s));
                s[k] = c;
            }
            s += k;
            if (*s == '.') {
                s++;
            } else if (*s == '[') {
                char *end;
                long idx = strtol(s + 1, &end, 10);
                if (*end == ']') {
                    cJSON_AddItemToArray(loc, cJSON_CreateNumber((double)idx));
                    s = end + 1;
                } else {
                    s++;
                }
            }
        }
    }
    cJSON_AddStringToObject(d, "msg", why);
    cJSON_AddStringToObject(d, "type", strstr(why, "expected") ? "type_error" : "value_error");
    cJSON_AddItemToArray(detail, d);
    return print_free(root);
}

char *sdxl_a1111_error_json(const char *error_type, const char *detail) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "error", error_type);
    cJSON_AddStringToObject(o, "detail", detail);
    cJSON_AddStringToObject(o, "body", "");
    cJSON_AddStringToObject(o, "errors", detail);
    return print_free(o);
}

/* ---- progress ------------------------------------------------------------------------ */

char *sdxl_a1111_progress_json(const sdxl_a1111_progress *p) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    double progress = 0, eta = 0;
    if (p->active && p->job_count > 0) {
        progress = 0.01 + (double)p->job_no / p->job_count;
        if (p->sampling_steps > 0) progress += 1.0 / p->job_count * p->sampling_step / p->sampling_steps;
        eta = p->elapsed_s / progress - p->elapsed_s;
        if (progress > 1) progress = 1;
        if (eta < 0) eta = 0;
    }
    cJSON_AddNumberToObject(o, "progress", progress);
    cJSON_AddNumberToObject(o, "eta_relative", eta);
    cJSON *s = cJSON_AddObjectToObject(o, "state");
    cJSON_AddBoolToObject(s, "skipped", false);
    cJSON_AddBoolToObject(s, "interrupted", p->interrupted);
    cJSON_AddBoolToObject(s, "stopping_generation", false);
    cJSON_AddStringToObject(s, "job", p->active && p->job ? p->job : "");
    cJSON_AddNumberToObject(s, "job_count", p->active ? p->job_count : 0);
    cJSON_AddStringToObject(s, "job_timestamp", p->job_timestamp[0] ? p->job_timestamp : "0");
    cJSON_AddNumberToObject(s, "job_no", p->active ? p->job_no : 0);
    cJSON_AddNumberToObject(s, "sampling_step", p->active ? p->sampling_step : 0);
    cJSON_AddNumberToObject(s, "sampling_steps", p->active ? p->sampling_steps : 0);
    cJSON_AddNumberToObject(s, "queued", p->queued);
    cJSON_AddNullToObject(o, "current_image");
    cJSON_AddNullToObject(o, "textinfo");
    return print_free(o);
}

/* ---- init image resize (A1111's resize_mode 0, "Just resize": PIL's LANCZOS) ----------- */

static double sinc(double x) {
    if (x == 0) return 1;
    x *= M_PI;
    return sin(x) / x;
}

static double lanczos3(double x) {
    return (x > -3 && x < 3) ? sinc(x) * sinc(x / 3) : 0;
}

/* One axis: in [n_in][stride elements of 3 floats] -> out [n_out]. PIL's
 * precomputed coefficients: support scaled by the reduction factor. */
static void resample_axis(const float *in, int n_in, float *out, int n_out, int lines, bool horizontal) {
    double scale = (double)n_in / n_out;
    double fs = scale > 1 ? scale : 1;
    double support = 3 * fs;
    for (int o = 0; o < n_out; o++) {
        double center = (o + 0.5) * scale;
        int lo = (int)floor(center - support), hi = (int)ceil(center + support);
        if (lo < 0) lo = 0;
        if (hi > n_in) hi = n_in;
        double wsum = 0;
        double w[4096];
        int nw = 0;
        for (int i = lo; i < hi && nw < 4096; i++)
            wsum += w[nw++] = lanczos3((i - center + 0.5) / fs);
        if (wsum == 0) wsum = 1;
        for (int l = 0; l < lines; l++)
            for (int c = 0; c < 3; c++) {
                double acc = 0;
                for (int k = 0; k < nw; k++) {
                    int i = lo + k;
                    size_t idx =
                        horizontal ? ((size_t)l * n_in + i) * 3 + c : ((size_t)i * lines + l) * 3 + c;
                    acc += w[k] * in[idx];
                }
                size_t oi = horizontal ? ((size_t)l * n_out + o) * 3 + c : ((size_t)o * lines + l) * 3 + c;
                out[oi] = (float)(acc / wsum);
            }
    }
}

/* rgb (h x w x 3) -> a new (H x W x 3) buffer (sdxl_malloc'd), or NULL. */
static uint8_t *resize_rgb(const uint8_t *rgb, int w, int h, int W, int H) {
    float *a = sdxl_malloc((size_t)w * h * 3 * sizeof(float));
    float *b = sdxl_malloc((size_t)W * h * 3 * sizeof(float));
    float *c = sdxl_malloc((size_t)W * H * 3 * sizeof(float));
    uint8_t *out = sdxl_malloc((size_t)W * H * 3);
    if (!a || !b || !c || !out) {
        sdxl_free(a);
        sdxl_free(b);
        sdxl_free(c);
        sdxl_free(out);
        return NULL;
    }
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        a[i] = rgb[i];
    resample_axis(a, w, b, W, h, true);  /* rows: h lines of w -> W */
    resample_axis(b, h, c, H, W, false); /* columns: W lines of h -> H */
    for (size_t i = 0; i < (size_t)W * H * 3; i++) {
        float v = roundf(c[i]);
        out[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    sdxl_free(a);
    sdxl_free(b);
    sdxl_free(c);
    return out;
}

/* ---- txt2img / img2img ----------------------------------------------------------------- */

void sdxl_a1111_call_free(sdxl_a1111_call *call) {
    if (!call) return;
    cJSON_Delete(call->parameters);
    free(call->prompt);
    free(call->negative_prompt);
    for (int i = 0; i < call->n_styles; i++)
        free(call->styles[i]);
    free(call->styles);
    sdxl_a1111_warnings_free(call->warnings, call->n_warnings);
    memset(call, 0, sizeof *call);
}

#define WARN(...)                                                                                            \
    do {                                                                                                     \
        if (add_warning(&call->warnings, &call->n_warnings, __VA_ARGS__)) goto oom;                          \
    } while (0)

/* Native parser messages name native fields; say the client's. */
static void rename_field(sdxl_error *err) {
    static const char *const map[][2] = {
        {"guidance_scale", "cfg_scale"},    {"init_image", "init_images[0]"},
        {"strength", "denoising_strength"}, {"scheduler", "sampler_name"},
        {"request_id", "force_task_id"},    {"model", "override_settings.sd_model_checkpoint"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        size_t l = strlen(map[i][0]);
        if (!strncmp(err->msg, map[i][0], l) && err->msg[l] == ':') {
            char rest[SDXL_ERROR_MSG_MAX];
            snprintf(rest, sizeof rest, "%s", err->msg + l);
            snprintf(err->msg, sizeof err->msg, "%s%s", map[i][1], rest);
            return;
        }
    }
}

static bool num_is(const cJSON *root, const char *k, double def) {
    const cJSON *v = val(root, k);
    return !v || v->valuedouble == def;
}

sdxl_status sdxl_a1111_call_parse(const char *json, size_t len, sdxl_a1111_kind kind,
                                  const sdxl_a1111_options *opt, const sdxl_engine *engine,
                                  const sdxl_request_limits *lim_in, const char *default_id,
                                  sdxl_request *req, sdxl_a1111_call *call, sdxl_error *err) {
    memset(req, 0, sizeof *req);
    memset(call, 0, sizeof *call);
    call->kind = kind;
    sdxl_request_limits lim = lim_in ? *lim_in : sdxl_request_default_limits();
    const int kbit = kind == SDXL_A1111_TXT2IMG ? K_T2I : K_I2I;
    const char *at = NULL; /* where parsing stopped (cJSON's global error pointer is shared by threads) */
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &at, false);
    cJSON *native = NULL;
    char *native_text = NULL;
    sdxl_status st = SDXL_STATUS_OK;
    char kb[96];
    if (!root) {
        long off = at && at >= json && at <= json + len ? (long)(at - json) : -1;
        st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "body: malformed JSON (near byte %ld)", off);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "body: expected an object, got %s",
                            sdxl_json_type_name(root));
        goto fail;
    }
    /* types (null is every field's "not given"), unknown fields */
    for (const cJSON *it = root->child; it; it = it->next) {
        const a_field *f = NULL;
        for (size_t i = 0; i < N_FIELDS && !f; i++)
            if (it->string && !strcmp(it->string, FIELDS[i].name) && (FIELDS[i].kinds & kbit)) f = &FIELDS[i];
        if (!f) {
            WARN("%s: not an A1111 %s field, ignored", safe_key(it->string, kb, sizeof kb),
                 kind == SDXL_A1111_TXT2IMG ? "txt2img" : "img2img");
            continue;
        }
        if (cJSON_IsNull(it)) continue;
        if ((st = check_type(it, f->name, f->type, err))) goto fail;
    }
    /* ranges of what we use */
    if ((st = range(root, "steps", 1, lim.max_steps, err)) ||
        (st = range(root, "width", 8, lim.max_side, err)) ||
        (st = range(root, "height", 8, lim.max_side, err)) ||
        (st = range(root, "batch_size", 1, lim.max_batch, err)) ||
        (st = range(root, "n_iter", 1, lim.max_n_iter > 0 ? lim.max_n_iter : 100, err)) ||
        (st = range(root, "cfg_scale", 0, 100, err)) || (st = range(root, "seed", -1, MAX_EXACT, err)) ||
        (st = range(root, "subseed", -1, MAX_EXACT, err)) ||
        (st = range(root, "subseed_strength", 0, 1, err)) ||
        (st = range(root, "denoising_strength", 0, 1, err)) || (st = range(root, "eta", 0, 1000, err)) ||
        (st = range(root, "resize_mode", 0, 3, err)))
        goto fail;
    for (int side = 0; side < 2; side++) {
        const char *k = side ? "height" : "width";
        double v = num_or(root, k, 512);
        if (fmod(v, 8) != 0) {
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: %g is not a multiple of 8", k, v);
            goto fail;
        }
    }
    const char *prompt = str_or(root, "prompt", ""), *neg = str_or(root, "negative_prompt", "");
    if (strlen(prompt) > lim.max_prompt || strlen(neg) > lim.max_prompt) {
        st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: longer than %zu bytes",
                            strlen(prompt) > lim.max_prompt ? "prompt" : "negative_prompt", lim.max_prompt);
        goto fail;
    }
    const cJSON *styles = val(root, "styles");
    if (styles) {
        int i = 0;
        for (const cJSON *s = styles->child; s; s = s->next, i++)
            if (!cJSON_IsString(s)) {
                st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "styles[%d]: expected a string, got %s", i,
                                    sdxl_json_type_name(s));
                goto fail;
            }
    }
    /* sampler and scheduler */
    const char *sname = str_or(root, "sampler_name", NULL);
    if (!sname || !*sname) sname = str_or(root, "sampler_index", "Euler");
    if (!*sname) sname = "Euler";
    sdxl_sampler_kind sk;
    bool karras = false;
    if (!find_sampler(sname, &sk, &karras)) {
        st = sdxl_error_set(err, SDXL_STATUS_NOT_FOUND,
                            "Sampler not found: sampler_name \"%s\" (see /sdapi/v1/samplers)",
                            safe_key(sname, kb, sizeof kb));
        goto fail;
    }
    const char *sched = str_or(root, "scheduler", NULL);
    if (!karras) {
        bool known = false;
        for (size_t i = 0; sched && *sched && i < N_SCHEDULERS && !known; i++) {
            if (strcmp(sched, SCHEDULERS[i].name) && strcmp(sched, SCHEDULERS[i].label)) continue;
            known = true;
            if (!strcmp(SCHEDULERS[i].name, "karras"))
                karras = true;
            else if (!strcmp(SCHEDULERS[i].name, "automatic"))
                karras = sampler_auto_karras(sk);
            else if (!SCHEDULERS[i].implemented) {
                WARN("scheduler: \"%s\" is not implemented here, using Automatic", SCHEDULERS[i].label);
                karras = sampler_auto_karras(sk);
            }
        }
        if (!sched || !*sched)
            karras = sampler_auto_karras(sk);
        else if (!known) {
            WARN("scheduler: unknown \"%s\", using Automatic", safe_key(sched, kb, sizeof kb));
            karras = sampler_auto_karras(sk);
        }
    }
    if (karras && !sdxl_sampler_kind_supports_karras(sk)) {
        WARN("scheduler: %s does not take Karras sigmas here, using its own schedule",
             sdxl_sampler_kind_name(sk));
        karras = false;
    }
    snprintf(call->sampler_name, sizeof call->sampler_name, "%s", sdxl_sampler_kind_name(sk));
    call->karras = karras;
    snprintf(call->schedule, sizeof call->schedule, "%s",
             karras && !sampler_auto_karras(sk) ? "Karras"
                                                : (!karras && sampler_auto_karras(sk) ? "Uniform" : ""));

    /* fields accepted but not implemented: warn when they would change A1111's output */
    const cJSON *v;
    if (styles && cJSON_GetArraySize(styles) > 0)
        WARN("styles: prompt styles are not implemented here, ignored");
    if (!num_is(root, "subseed_strength", 0))
        WARN("subseed_strength: variation seeds are not implemented, ignored");
    if (num_or(root, "seed_resize_from_h", -1) > 0 && num_or(root, "seed_resize_from_w", -1) > 0)
        WARN("seed_resize_from_w/h: not implemented, ignored");
    if (bool_or(root, "restore_faces", false))
        WARN("restore_faces: face restoration is not implemented, ignored");
    if (bool_or(root, "tiling", false)) WARN("tiling: not implemented, ignored");
    if ((v = val(root, "eta"))) {
        double def = sk == SDXL_SAMPLER_DDIM ? 0.0 : 1.0;
        bool uses = sk == SDXL_SAMPLER_DDIM || sdxl_sampler_kind_is_stochastic(sk);
        if (uses && v->valuedouble != def)
            WARN("eta: only %g is implemented for %s, ignored", def, call->sampler_name);
    }
    if (!num_is(root, "s_churn", 0)) WARN("s_churn: not implemented, ignored");
    if (!num_is(root, "s_tmin", 0)) WARN("s_tmin: not implemented, ignored");
    if (!num_is(root, "s_tmax", 0)) WARN("s_tmax: not implemented, ignored");
    if (!num_is(root, "s_noise", 1)) WARN("s_noise: not implemented, ignored");
    if (!num_is(root, "s_min_uncond", 0)) WARN("s_min_uncond: not implemented, ignored");
    if ((v = val(root, "refiner_checkpoint")) && *v->valuestring && strcmp(v->valuestring, "None") &&
        strcmp(v->valuestring, "none"))
        WARN("refiner_checkpoint: the refiner is not implemented, ignored");
    if (val(root, "firstpass_image")) WARN("firstpass_image: not implemented, ignored");
    if ((v = val(root, "infotext")) && *v->valuestring) WARN("infotext: not implemented, ignored");
    if ((v = val(root, "script_name")) && *v->valuestring)
        WARN("script_name: no script \"%s\" here, ignored", safe_key(v->valuestring, kb, sizeof kb));
    if ((v = val(root, "alwayson_scripts")))
        for (const cJSON *s = v->child; s; s = s->next)
            WARN("alwayson_scripts.%s: no such script here, ignored", safe_key(s->string, kb, sizeof kb));
    if (kind == SDXL_A1111_TXT2IMG) {
        if (bool_or(root, "enable_hr", false))
            WARN("enable_hr: hires fix is not implemented, the first pass is returned (hr_* ignored)");
        else if (!num_is(root, "firstphase_width", 0) || !num_is(root, "firstphase_height", 0))
            WARN("firstphase_width/height: only used with enable_hr, ignored");
    } else {
        if (val(root, "mask")) WARN("mask: inpainting is not implemented, the whole image is redrawn");
        if (val(root, "latent_mask")) WARN("latent_mask: not implemented, ignored");
        /* image_cfg_scale: A1111 uses it for instruct-pix2pix models only, so it changes nothing here */
        if (!num_is(root, "initial_noise_multiplier", 1))
            WARN("initial_noise_multiplier: not implemented, ignored");
    }
    /* override_settings */
    bool rng_cpu = opt->randn_cpu;
    char model[128];
    snprintf(model, sizeof model, "%s", opt->model);
    if ((v = val(root, "override_settings"))) {
        for (const cJSON *s = v->child; s; s = s->next) {
            const char *k = s->string ? s->string : "";
            if (!strcmp(k, "sd_model_checkpoint") && cJSON_IsString(s)) {
                if (!sdxl_a1111_find_model(engine, s->valuestring, model, sizeof model))
                    WARN("override_settings.sd_model_checkpoint: no model \"%s\", using %s",
                         safe_key(s->valuestring, kb, sizeof kb),
                         model[0] ? model : sdxl_engine_default_model_name(engine));
            } else if (!strcmp(k, "randn_source") && cJSON_IsString(s)) {
                if (!randn_word(s->valuestring, &rng_cpu)) {
                    st =
                        sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                       "override_settings.randn_source: expected \"CPU\", \"GPU\" or \"NV\"");
                    goto fail;
                }
            } else if ((!strcmp(k, "CLIP_stop_at_last_layers") && cJSON_IsNumber(s) && s->valuedouble == 1) ||
                       (!strcmp(k, "samples_format") && cJSON_IsString(s) &&
                        !strcmp(s->valuestring, "png")) ||
                       (!strcmp(k, "eta_noise_seed_delta") && cJSON_IsNumber(s) && s->valuedouble == 0)) {
                /* what we do anyway */
            } else {
                WARN("override_settings.%s: not implemented here, ignored", safe_key(k, kb, sizeof kb));
            }
        }
    }
    /* the init image */
    const char *init = NULL;
    if (kind == SDXL_A1111_IMG2IMG) {
        const cJSON *ii = val(root, "init_images");
        if (!ii || cJSON_GetArraySize(ii) == 0) {
            st =
                sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "init_images: required (a list of base64 images)");
            goto fail;
        }
        int i = 0;
        for (const cJSON *s = ii->child; s; s = s->next, i++)
            if (!cJSON_IsString(s)) {
                st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "init_images[%d]: expected a string, got %s",
                                    i, sdxl_json_type_name(s));
                goto fail;
            }
        if (i > 1) WARN("init_images: %d images given, only the first is used", i);
        init = ii->child->valuestring;
        if (!strncmp(init, "http://", 7) || !strncmp(init, "https://", 8)) {
            st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                "init_images[0]: URLs are not fetched; send base64");
            goto fail;
        }
        if (!num_is(root, "resize_mode", 0))
            WARN("resize_mode: only 0 (just resize) is implemented, the init image is resized to width x "
                 "height");
    }

    /* the native request */
    bool save = bool_or(root, "save_images", false);
    call->send_images = bool_or(root, "send_images", true);
    const char *task = str_or(root, "force_task_id", NULL);
    native = cJSON_CreateObject();
    if (!native) goto oom;
    cJSON_AddStringToObject(native, "request_id", task && *task ? task : default_id ? default_id : "");
    bool no_networks = bool_or(root, "disable_extra_networks", false);
    char *clean = NULL;
    if (no_networks) { /* A1111 still removes the tags; it just does not apply them */
        size_t pl = strlen(prompt) + 1;
        sdxl_lora_spec *junk = malloc(sizeof *junk);
        clean = malloc(pl);
        char tw[256];
        if (!junk || !clean || sdxl_lora_extract_prompt_tags(prompt, clean, pl, junk, tw, sizeof tw, NULL)) {
            free(junk);
            free(clean);
            clean = NULL;
        } else {
            free(junk);
        }
    }
    cJSON_AddStringToObject(native, "prompt", clean ? clean : prompt);
    free(clean);
    if (*neg) cJSON_AddStringToObject(native, "negative_prompt", neg);
    if (kind == SDXL_A1111_TXT2IMG) {
        cJSON_AddNumberToObject(native, "width", num_or(root, "width", 512));
        cJSON_AddNumberToObject(native, "height", num_or(root, "height", 512));
    }
    cJSON_AddNumberToObject(native, "steps", num_or(root, "steps", 50));
    cJSON_AddNumberToObject(native, "guidance_scale", num_or(root, "cfg_scale", 7.0));
    char sched_name[80];
    snprintf(sched_name, sizeof sched_name, "%s%s", call->sampler_name, karras ? " Karras" : "");
    cJSON_AddStringToObject(native, "scheduler", sched_name);
    double seed = num_or(root, "seed", -1);
    if (seed < 0) { /* A1111's get_fixed_seed: random.randrange(4294967294) */
        uint32_t rnd = 0;
        if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
            rnd = (uint32_t)time(NULL) ^ (uint32_t)clock();
        seed = (double)(rnd % 4294967294u);
    }
    cJSON_AddNumberToObject(native, "seed", seed);
    cJSON_AddStringToObject(native, "rng", kind == SDXL_A1111_TXT2IMG && !rng_cpu ? "cuda" : "cpu");
    cJSON_AddNumberToObject(native, "batch_size", num_or(root, "batch_size", 1));
    cJSON_AddNumberToObject(native, "n_iter", num_or(root, "n_iter", 1));
    cJSON_AddStringToObject(native, "prompt_syntax", "a1111");
    cJSON_AddStringToObject(native, "output", save ? "path" : "base64");
    if (save)
        cJSON_AddStringToObject(native, "output_dir",
                                kind == SDXL_A1111_TXT2IMG ? "txt2img-images" : "img2img-images");
    if (model[0]) cJSON_AddStringToObject(native, "model", model);
    if (init) {
        cJSON_AddStringToObject(native, "init_image", init);
        double ds = num_or(root, "denoising_strength", 0.75);
        if (ds <= 0) {
            st =
                sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "denoising_strength: must be above 0 for img2img");
            goto fail;
        }
        cJSON_AddNumberToObject(native, "strength", ds);
    }
    if (!(native_text = cJSON_PrintUnformatted(native))) goto oom;
    if ((st = sdxl_request_parse(native_text, strlen(native_text), &lim, req, err))) {
        rename_field(err);
        goto fail;
    }
    if (init) { /* A1111 resizes the init image to width x height */
        int W = (int)num_or(root, "width", 512), H = (int)num_or(root, "height", 512);
        if (W != req->init_width || H != req->init_height) {
            uint8_t *r = resize_rgb(req->init_rgb, req->init_width, req->init_height, W, H);
            if (!r) goto oom;
            sdxl_free(req->init_rgb);
            req->init_rgb = r;
            req->init_width = W;
            req->init_height = H;
        }
        req->width = req->init_width;
        req->height = req->init_height;
    }

    /* what the answer needs */
    call->prompt = dupstr(prompt);
    call->negative_prompt = dupstr(neg);
    if (!call->prompt || !call->negative_prompt) goto oom;
    call->cfg_scale = num_or(root, "cfg_scale", 7.0);
    call->denoising_strength = num_or(root, "denoising_strength", 0.75);
    call->subseed_strength = num_or(root, "subseed_strength", 0);
    call->subseed = (int64_t)num_or(root, "subseed", -1);
    call->steps = (int)num_or(root, "steps", 50);
    call->width = (int)num_or(root, "width", 512);
    call->height = (int)num_or(root, "height", 512);
    call->batch_size = (int)num_or(root, "batch_size", 1);
    call->n_iter = (int)num_or(root, "n_iter", 1);
    call->seed_resize_w = (int)num_or(root, "seed_resize_from_w", -1);
    call->seed_resize_h = (int)num_or(root, "seed_resize_from_h", -1);
    if (styles) {
        int n = cJSON_GetArraySize(styles);
        if (n > 0 && !(call->styles = calloc((size_t)n, sizeof *call->styles))) goto oom;
        for (const cJSON *s = styles->child; s; s = s->next) {
            if (!(call->styles[call->n_styles] = dupstr(s->valuestring))) goto oom;
            call->n_styles++;
        }
    }
    time_t now = time(NULL);
    struct tm tmv;
    localtime_r(&now, &tmv);
    strftime(call->job_timestamp, sizeof call->job_timestamp, "%Y%m%d%H%M%S", &tmv);
    /* the echo: every field of the model, the given value or the default */
    if (!(call->parameters = cJSON_CreateObject())) goto oom;
    bool include_init = bool_or(root, "include_init_images", false);
    for (size_t i = 0; i < N_FIELDS; i++) {
        if (!(FIELDS[i].kinds & kbit)) continue;
        const cJSON *given = cJSON_GetObjectItemCaseSensitive(root, FIELDS[i].name);
        cJSON *item;
        if (kind == SDXL_A1111_IMG2IMG && !include_init &&
            (!strcmp(FIELDS[i].name, "init_images") || !strcmp(FIELDS[i].name, "mask")))
            item = cJSON_CreateNull();
        else
            item = given ? cJSON_Duplicate(given, true) : cJSON_Parse(FIELDS[i].def);
        if (!item) goto oom;
        cJSON_AddItemToObject(call->parameters, FIELDS[i].name, item);
    }
    cJSON_Delete(root);
    cJSON_Delete(native);
    free(native_text);
    return SDXL_STATUS_OK;
oom:
    st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "out of memory");
fail:
    cJSON_Delete(root);
    cJSON_Delete(native);
    free(native_text);
    sdxl_request_free(req);
    sdxl_a1111_call_free(call);
    return st;
}

/* ---- the answer ----------------------------------------------------------------------- */

static uint64_t image_seed(const sdxl_request *req, const sdxl_engine_result *res, int i) {
    if ((size_t)i < res->n_images) return res->images[i].seed;
    int b = req->batch_size > 0 ? req->batch_size : 1;
    return req->rng_cuda ? res->seed + (uint64_t)i : res->seed + (uint64_t)((i / b) * b);
}

char *sdxl_a1111_result_json(const sdxl_a1111_call *call, const sdxl_request *req,
                             const sdxl_engine_result *res) {
    cJSON *root = cJSON_CreateObject(), *info = cJSON_CreateObject();
    if (!root || !info) goto oom;
    cJSON *imgs = cJSON_AddArrayToObject(root, "images");
    for (size_t i = 0; call->send_images && i < res->n_images; i++) {
        char *b64 = sdxl_base64_encode_alloc(res->images[i].png, res->images[i].png_len, NULL);
        if (!b64) goto oom;
        cJSON *s = cJSON_CreateString(b64);
        sdxl_free(b64);
        if (!s) goto oom;
        cJSON_AddItemToArray(imgs, s);
    }
    cJSON *params = cJSON_Duplicate(call->parameters, true);
    if (!params) goto oom;
    cJSON_AddItemToObject(root, "parameters", params);

    int total = call->batch_size * call->n_iter;
    cJSON_AddStringToObject(info, "prompt", call->prompt);
    cJSON *ap = cJSON_AddArrayToObject(info, "all_prompts");
    for (int i = 0; i < total; i++)
        cJSON_AddItemToArray(ap, cJSON_CreateString(call->prompt));
    cJSON_AddStringToObject(info, "negative_prompt", call->negative_prompt);
    cJSON *an = cJSON_AddArrayToObject(info, "all_negative_prompts");
    for (int i = 0; i < total; i++)
        cJSON_AddItemToArray(an, cJSON_CreateString(call->negative_prompt));
    cJSON_AddNumberToObject(info, "seed", (double)image_seed(req, res, 0));
    cJSON *as = cJSON_AddArrayToObject(info, "all_seeds");
    for (int i = 0; i < total; i++)
        cJSON_AddItemToArray(as, cJSON_CreateNumber((double)image_seed(req, res, i)));
    int64_t sub = call->subseed >= 0 ? call->subseed : (int64_t)res->seed;
    cJSON_AddNumberToObject(info, "subseed", (double)sub);
    cJSON *asub = cJSON_AddArrayToObject(info, "all_subseeds");
    for (int i = 0; i < total; i++)
        cJSON_AddItemToArray(asub, cJSON_CreateNumber((double)(sub + i)));
    cJSON_AddNumberToObject(info, "subseed_strength", call->subseed_strength);
    cJSON_AddNumberToObject(info, "width", res->width ? res->width : call->width);
    cJSON_AddNumberToObject(info, "height", res->height ? res->height : call->height);
    cJSON_AddStringToObject(info, "sampler_name", call->sampler_name);
    cJSON_AddNumberToObject(info, "cfg_scale", call->cfg_scale);
    cJSON_AddNumberToObject(info, "steps", call->steps);
    cJSON_AddNumberToObject(info, "batch_size", call->batch_size);
    cJSON_AddBoolToObject(info, "restore_faces", false);
    cJSON_AddNullToObject(info, "face_restoration_model");
    cJSON_AddStringToObject(info, "sd_model_name", res->model);
    cJSON_AddNullToObject(info, "sd_model_hash");
    cJSON_AddNullToObject(info, "sd_vae_name");
    cJSON_AddNullToObject(info, "sd_vae_hash");
    cJSON_AddNumberToObject(info, "seed_resize_from_w", call->seed_resize_w);
    cJSON_AddNumberToObject(info, "seed_resize_from_h", call->seed_resize_h);
    if (call->kind == SDXL_A1111_IMG2IMG)
        cJSON_AddNumberToObject(info, "denoising_strength", call->denoising_strength);
    else
        cJSON_AddNullToObject(info, "denoising_strength");
    cJSON *extra = cJSON_AddObjectToObject(info, "extra_generation_params");
    if (call->schedule[0]) cJSON_AddStringToObject(extra, "Schedule type", call->schedule);
    char hashes[2048];
    sdxl_lora_report_hashes(&res->lora, hashes, sizeof hashes);
    if (hashes[0]) cJSON_AddStringToObject(extra, "Lora hashes", hashes);
    cJSON_AddNumberToObject(info, "index_of_first_image", 0);
    cJSON *it = cJSON_AddArrayToObject(info, "infotexts");
    for (size_t i = 0; i < res->n_images; i++)
        cJSON_AddItemToArray(it, cJSON_CreateString(res->images[i].infotext ? res->images[i].infotext : ""));
    cJSON *st = cJSON_AddArrayToObject(info, "styles");
    for (int i = 0; i < call->n_styles; i++)
        cJSON_AddItemToArray(st, cJSON_CreateString(call->styles[i]));
    cJSON_AddStringToObject(info, "job_timestamp", call->job_timestamp);
    cJSON_AddNumberToObject(info, "clip_skip", 1);
    cJSON_AddBoolToObject(info, "is_using_inpainting_conditioning", false);
    cJSON_AddStringToObject(info, "version", "sdxl-worker " SDXL_VERSION_STRING);
    char *info_text = cJSON_PrintUnformatted(info);
    cJSON_Delete(info);
    info = NULL;
    if (!info_text) goto oom;
    cJSON *is = cJSON_CreateString(info_text);
    free(info_text);
    if (!is) goto oom;
    cJSON_AddItemToObject(root, "info", is);
    cJSON *w = cJSON_AddArrayToObject(root, "warnings");
    for (int i = 0; i < call->n_warnings; i++)
        cJSON_AddItemToArray(w, cJSON_CreateString(call->warnings[i]));
    for (int i = 0; i < res->n_warnings; i++)
        cJSON_AddItemToArray(w, cJSON_CreateString(res->warnings[i]));
    for (size_t i = 0; i < res->lora.n; i++) {
        const sdxl_lora_outcome *o = &res->lora.items[i];
        if (o->status == SDXL_LORA_APPLIED) continue;
        char m[1800];
        snprintf(m, sizeof m, "lora %s: %s%s%s", o->name, sdxl_lora_status_name(o->status),
                 o->message[0] ? ": " : "", o->message);
        cJSON_AddItemToArray(w, cJSON_CreateString(m));
    }
    if (res->cancelled)
        cJSON_AddItemToArray(w, cJSON_CreateString("interrupted: the images finished so far"));
    return print_free(root);
oom:
    cJSON_Delete(root);
    cJSON_Delete(info);
    return NULL;
}
