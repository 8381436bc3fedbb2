/* config.c - diffusers config.json parsing, SGM single-file inference,
 * hints, validation. See config.h for the rules. */
#include "model/config.h"
#include "io/json.h"
#include "io/file.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/log.h"
#include "io/safetensors.h"
#include "model/config_yaml.h"

#define CONFIG_MAX_BYTES (1u << 20)

/* ---- activations ---------------------------------------------------------- */

const char *sdxl_act_name(sdxl_act a) {
    switch (a) {
    case SDXL_ACT_GELU: return "gelu";
    case SDXL_ACT_QUICK_GELU: return "quick_gelu";
    case SDXL_ACT_GELU_TANH: return "gelu_tanh";
    case SDXL_ACT_SILU: return "silu";
    default: return "?";
    }
}

bool sdxl_act_from_name(const char *s, sdxl_act *out) {
    static const struct {
        const char *name;
        sdxl_act act;
    } names[] = {
        {"gelu", SDXL_ACT_GELU},           {"quick_gelu", SDXL_ACT_QUICK_GELU},
        {"gelu_new", SDXL_ACT_GELU_TANH},  {"gelu_pytorch_tanh", SDXL_ACT_GELU_TANH},
        {"gelu_tanh", SDXL_ACT_GELU_TANH}, {"silu", SDXL_ACT_SILU},
        {"swish", SDXL_ACT_SILU},
    };
    if (!s) return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i].name) == 0) {
            if (out) *out = names[i].act;
            return true;
        }
    }
    return false;
}

/* ---- small helpers --------------------------------------------------------- */

void sdxl_model_config_clear(sdxl_model_config *cfg) {
    if (!cfg) return;
    sdxl_free(cfg->scheduler_json);
    memset(cfg, 0, sizeof *cfg);
}

sdxl_status sdxl_model_config_copy(sdxl_model_config *dst, const sdxl_model_config *src, sdxl_error *err) {
    if (!dst || !src)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_model_config_copy: NULL argument");
    *dst = *src;
    dst->scheduler_json = NULL;
    if (src->scheduler_json) {
        dst->scheduler_json = sdxl_strdup(src->scheduler_json);
        if (!dst->scheduler_json) {
            memset(dst, 0, sizeof *dst);
            return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "copying a model config: out of memory");
        }
    }
    return SDXL_STATUS_OK;
}

const char *sdxl_model_config_default_scheduler_json(void) {
    return "{\n"
           "  \"_class_name\": \"EulerDiscreteScheduler\",\n"
           "  \"beta_end\": 0.012,\n"
           "  \"beta_schedule\": \"scaled_linear\",\n"
           "  \"beta_start\": 0.00085,\n"
           "  \"clip_sample\": false,\n"
           "  \"interpolation_type\": \"linear\",\n"
           "  \"num_train_timesteps\": 1000,\n"
           "  \"prediction_type\": \"epsilon\",\n"
           "  \"sample_max_value\": 1.0,\n"
           "  \"set_alpha_to_one\": false,\n"
           "  \"skip_prk_steps\": true,\n"
           "  \"steps_offset\": 1,\n"
           "  \"timestep_spacing\": \"leading\",\n"
           "  \"trained_betas\": null,\n"
           "  \"use_karras_sigmas\": false\n"
           "}\n";
}

/* Read a whole (small) text file into an sdxl_malloc'd, NUL-terminated
 * buffer. NOT_FOUND if absent. */
static sdxl_status read_small_file(const char *path, char **out, size_t *len, sdxl_error *err) {
    return sdxl_read_file(path, CONFIG_MAX_BYTES, out, len, err);
}

/* ---- JSON field access with messages naming file and field ----------------- */

typedef struct {
    const char *where;
    const cJSON *root;
    sdxl_error *err;
} jctx;


static sdxl_status jbad(jctx *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static sdxl_status jbad(jctx *c, const char *field, const char *fmt, ...) {
    char why[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return sdxl_error_set(c->err, SDXL_STATUS_BAD_INPUT, "%s: field \"%s\": %s", c->where, field, why);
}

static sdxl_status junsup(jctx *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static sdxl_status junsup(jctx *c, const char *field, const char *fmt, ...) {
    char why[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return sdxl_error_set(c->err, SDXL_STATUS_UNSUPPORTED, "%s: field \"%s\": %s", c->where, field, why);
}

static const cJSON *jget(jctx *c, const char *field) {
    return cJSON_GetObjectItemCaseSensitive(c->root, field);
}

static bool j_is_int(const cJSON *v, long long lo, long long hi, long long *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d == floor(d)) || d < (double)lo || d > (double)hi) return false;
    *out = (long long)d;
    return true;
}

/* Integer field in [lo, hi]; absent or null -> def (required: error). */
static sdxl_status j_int(jctx *c, const char *field, bool required, int def, int lo, int hi, int *out) {
    const cJSON *v = jget(c, field);
    if (!v || cJSON_IsNull(v)) {
        if (required) return jbad(c, field, "missing (an integer in [%d, %d] is required)", lo, hi);
        *out = def;
        return SDXL_STATUS_OK;
    }
    long long x;
    if (!j_is_int(v, lo, hi, &x)) {
        if (cJSON_IsNumber(v))
            return jbad(c, field, "%.17g is not an integer in [%d, %d]", v->valuedouble, lo, hi);
        return jbad(c, field, "expected an integer in [%d, %d], got %s", lo, hi, sdxl_json_type_name(v));
    }
    *out = (int)x;
    return SDXL_STATUS_OK;
}

static sdxl_status j_num(jctx *c, const char *field, bool required, double def, double lo, double hi,
                         double *out) {
    const cJSON *v = jget(c, field);
    if (!v || cJSON_IsNull(v)) {
        if (required) return jbad(c, field, "missing (a number in [%g, %g] is required)", lo, hi);
        *out = def;
        return SDXL_STATUS_OK;
    }
    if (!cJSON_IsNumber(v)) return jbad(c, field, "expected a number, got %s", sdxl_json_type_name(v));
    double d = v->valuedouble;
    if (!isfinite(d) || d < lo || d > hi) return jbad(c, field, "%.17g is outside [%g, %g]", d, lo, hi);
    *out = d;
    return SDXL_STATUS_OK;
}

static sdxl_status j_bool(jctx *c, const char *field, bool def, bool *out) {
    const cJSON *v = jget(c, field);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return SDXL_STATUS_OK;
    }
    if (!cJSON_IsBool(v)) return jbad(c, field, "expected true or false, got %s", sdxl_json_type_name(v));
    *out = cJSON_IsTrue(v);
    return SDXL_STATUS_OK;
}

/* String field; absent/null -> def (may be NULL). Returned pointer is owned
 * by the JSON tree. */
static sdxl_status j_str(jctx *c, const char *field, const char *def, const char **out) {
    const cJSON *v = jget(c, field);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return SDXL_STATUS_OK;
    }
    if (!cJSON_IsString(v)) return jbad(c, field, "expected a string, got %s", sdxl_json_type_name(v));
    *out = v->valuestring;
    return SDXL_STATUS_OK;
}

/* An int or a list of exactly n ints, each in [lo, hi]. Lists of lists
 * (diffusers' per-layer form) are accepted when every inner value agrees.
 * absent/null -> def for all (required: error). */
static sdxl_status j_int_or_list(jctx *c, const char *field, int n, bool required, int def, int lo, int hi,
                                 int *out) {
    const cJSON *v = jget(c, field);
    if (!v || cJSON_IsNull(v)) {
        if (required) return jbad(c, field, "missing");
        for (int i = 0; i < n; i++)
            out[i] = def;
        return SDXL_STATUS_OK;
    }
    long long x;
    if (cJSON_IsNumber(v)) {
        if (!j_is_int(v, lo, hi, &x))
            return jbad(c, field, "%.17g is not an integer in [%d, %d]", v->valuedouble, lo, hi);
        for (int i = 0; i < n; i++)
            out[i] = (int)x;
        return SDXL_STATUS_OK;
    }
    if (!cJSON_IsArray(v))
        return jbad(c, field, "expected an integer or a list of %d integers, got %s", n, sdxl_json_type_name(v));
    int len = cJSON_GetArraySize(v);
    if (len != n) return jbad(c, field, "has %d entries; expected %d (one per block)", len, n);
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (cJSON_IsArray(e)) {
            int m = cJSON_GetArraySize(e);
            if (m < 1) return jbad(c, field, "entry %d is an empty list", i);
            for (int k = 0; k < m; k++) {
                if (!j_is_int(cJSON_GetArrayItem(e, k), lo, hi, &x))
                    return jbad(c, field, "entry %d.%d is not an integer in [%d, %d]", i, k, lo, hi);
                if (k && x != out[i])
                    return junsup(c, field,
                                  "entry %d has different values per layer; only one value per block is "
                                  "supported",
                                  i);
                out[i] = (int)x;
            }
            continue;
        }
        if (!j_is_int(e, lo, hi, &x))
            return jbad(c, field, "entry %d is not an integer in [%d, %d]", i, lo, hi);
        out[i] = (int)x;
    }
    return SDXL_STATUS_OK;
}

/* Fields whose non-default values change the architecture in ways this
 * engine does not implement. Absent or equal to the default is fine. */
typedef enum { D_NULL, D_FALSE, D_STR, D_NUM } dkind;
typedef struct {
    const char *field;
    dkind kind;
    const char *str;
    double num;
} must_default;

static sdxl_status check_defaults(jctx *c, const must_default *d, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const cJSON *v = jget(c, d[i].field);
        if (!v || cJSON_IsNull(v)) continue;
        bool ok = false;
        switch (d[i].kind) {
        case D_NULL: ok = false; break;
        case D_FALSE:
            ok = cJSON_IsFalse(v);
            if (cJSON_IsArray(v)) { /* per-block booleans: all false */
                ok = true;
                for (int k = 0; k < cJSON_GetArraySize(v); k++)
                    ok = ok && cJSON_IsFalse(cJSON_GetArrayItem(v, k));
            }
            break;
        case D_STR: ok = cJSON_IsString(v) && strcmp(v->valuestring, d[i].str) == 0; break;
        case D_NUM: ok = cJSON_IsNumber(v) && v->valuedouble == d[i].num; break;
        }
        if (!ok) {
            char *txt = cJSON_PrintUnformatted(v);
            sdxl_status st =
                junsup(c, d[i].field, "value %.60s is not supported (SDXL uses %s)", txt ? txt : "?",
                       d[i].kind == D_NULL    ? "null"
                       : d[i].kind == D_FALSE ? "false"
                       : d[i].kind == D_STR   ? d[i].str
                                              : "the default");
            cJSON_free(txt);
            return st;
        }
    }
    return SDXL_STATUS_OK;
}

/* Parse JSON text into a tree; BAD_INPUT naming line and column on failure. */
static sdxl_status parse_json(const char *json, size_t len, const char *where, cJSON **out, sdxl_error *err) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        int line = 1, col = 1;
        if (end && end >= json && end <= json + len) {
            for (const char *p = json; p < end; p++) {
                if (*p == '\n')
                    line++, col = 1;
                else
                    col++;
            }
        }
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: malformed JSON near line %d, column %d", where,
                              line, col);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: expected a JSON object at the top level",
                              where);
    }
    *out = root;
    return SDXL_STATUS_OK;
}

#define TRY(expr)                                                                                            \
    do {                                                                                                     \
        sdxl_status st_ = (expr);                                                                            \
        if (st_ != SDXL_STATUS_OK) return st_;                                                               \
    } while (0)

/* The "_class_name" must be `want`; then block_out_channels, a list of 1..SDXL_MAX_LEVELS
 * channel counts, gives the number of levels. Shared by the UNet and VAE parsers. */
static sdxl_status j_class_and_levels(jctx *c, const char *want, int *levels, int *channels) {
    const char *cls = NULL;
    TRY(j_str(c, "_class_name", want, &cls));
    if (strcmp(cls, want) != 0)
        return junsup(c, "_class_name", "\"%.60s\" is not supported (expected %s)", cls, want);
    const cJSON *boc = jget(c, "block_out_channels");
    if (!cJSON_IsArray(boc))
        return jbad(c, "block_out_channels", "expected a list of integers, got %s", sdxl_json_type_name(boc));
    int L = cJSON_GetArraySize(boc);
    if (L < 1 || L > SDXL_MAX_LEVELS)
        return jbad(c, "block_out_channels", "has %d entries; expected 1..%d", L, SDXL_MAX_LEVELS);
    *levels = L;
    return j_int_or_list(c, "block_out_channels", L, true, 0, 1, SDXL_CFG_MAX_CHANNELS, channels);
}

/* ---- UNet config.json ------------------------------------------------------ */

static sdxl_status unet_from_json(jctx *c, sdxl_unet_config *u) {
    memset(u, 0, sizeof *u);
    TRY(j_class_and_levels(c, "UNet2DConditionModel", &u->num_levels, u->block_out_channels));
    const int L = u->num_levels;

    const cJSON *dbt = jget(c, "down_block_types"), *ubt = jget(c, "up_block_types");
    if (!cJSON_IsArray(dbt) || cJSON_GetArraySize(dbt) != L)
        return jbad(c, "down_block_types",
                    "expected a list of %d block types (one per block_out_channels entry)", L);
    if (!cJSON_IsArray(ubt) || cJSON_GetArraySize(ubt) != L)
        return jbad(c, "up_block_types",
                    "expected a list of %d block types (one per block_out_channels entry)", L);
    for (int i = 0; i < L; i++) {
        const cJSON *d = cJSON_GetArrayItem(dbt, i), *up = cJSON_GetArrayItem(ubt, i);
        if (!cJSON_IsString(d)) return jbad(c, "down_block_types", "entry %d is not a string", i);
        if (!cJSON_IsString(up)) return jbad(c, "up_block_types", "entry %d is not a string", i);
        if (strcmp(d->valuestring, "CrossAttnDownBlock2D") == 0)
            u->down_has_attn[i] = true;
        else if (strcmp(d->valuestring, "DownBlock2D") != 0)
            return junsup(c, "down_block_types",
                          "entry %d \"%.60s\" is not supported (DownBlock2D or CrossAttnDownBlock2D)", i,
                          d->valuestring);
        if (strcmp(up->valuestring, "CrossAttnUpBlock2D") == 0)
            u->up_has_attn[i] = true;
        else if (strcmp(up->valuestring, "UpBlock2D") != 0)
            return junsup(c, "up_block_types",
                          "entry %d \"%.60s\" is not supported (UpBlock2D or CrossAttnUpBlock2D)", i,
                          up->valuestring);
    }
    const char *mid = NULL;
    TRY(j_str(c, "mid_block_type", "UNetMidBlock2DCrossAttn", &mid));
    if (strcmp(mid, "UNetMidBlock2DCrossAttn") != 0)
        return junsup(c, "mid_block_type", "\"%.60s\" is not supported (UNetMidBlock2DCrossAttn)", mid);

    int lpb[SDXL_MAX_LEVELS];
    TRY(j_int_or_list(c, "layers_per_block", L, false, 2, 1, SDXL_CFG_MAX_LAYERS_PER_BLOCK, lpb));
    for (int i = 1; i < L; i++)
        if (lpb[i] != lpb[0])
            return junsup(c, "layers_per_block", "different values per block are not supported");
    u->layers_per_block = lpb[0];

    int tl[SDXL_MAX_LEVELS];
    TRY(j_int_or_list(c, "transformer_layers_per_block", L, false, 1, 1, SDXL_CFG_MAX_TRANSFORMER_LAYERS,
                      tl));
    int rtl[SDXL_MAX_LEVELS];
    const cJSON *rv = jget(c, "reverse_transformer_layers_per_block");
    if (rv && !cJSON_IsNull(rv)) {
        TRY(j_int_or_list(c, "reverse_transformer_layers_per_block", L, true, 1, 1,
                          SDXL_CFG_MAX_TRANSFORMER_LAYERS, rtl));
    } else {
        for (int i = 0; i < L; i++)
            rtl[i] = tl[L - 1 - i];
    }
    for (int i = 0; i < L; i++) {
        u->down_transformer_layers[i] = u->down_has_attn[i] ? tl[i] : 0;
        u->up_transformer_layers[i] = u->up_has_attn[i] ? rtl[i] : 0;
    }
    u->mid_transformer_layers = tl[L - 1];

    /* In diffusers' SDXL configs attention_head_dim holds the NUMBER of heads
     * (a historical misnomer); num_attention_heads, if set, wins. */
    int heads[SDXL_MAX_LEVELS];
    const cJSON *nah = jget(c, "num_attention_heads");
    if (nah && !cJSON_IsNull(nah))
        TRY(j_int_or_list(c, "num_attention_heads", L, true, 0, 1, SDXL_CFG_MAX_CHANNELS, heads));
    else
        TRY(j_int_or_list(c, "attention_head_dim", L, false, 8, 1, SDXL_CFG_MAX_CHANNELS, heads));
    for (int i = 0; i < L; i++) {
        u->down_num_heads[i] = heads[i];
        u->up_num_heads[i] = heads[L - 1 - i];
    }
    u->mid_num_heads = heads[L - 1];

    int cad[SDXL_MAX_LEVELS];
    TRY(j_int_or_list(c, "cross_attention_dim", L, false, 1280, 1, SDXL_CFG_MAX_CHANNELS, cad));
    for (int i = 1; i < L; i++)
        if (cad[i] != cad[0])
            return junsup(c, "cross_attention_dim", "different values per block are not supported");
    u->cross_attention_dim = cad[0];

    TRY(j_bool(c, "use_linear_projection", false, &u->use_linear_projection));
    TRY(j_bool(c, "upcast_attention", false, &u->upcast_attention));
    TRY(j_int(c, "in_channels", false, 4, 1, SDXL_CFG_MAX_CHANNELS, &u->in_channels));
    TRY(j_int(c, "out_channels", false, 4, 1, SDXL_CFG_MAX_CHANNELS, &u->out_channels));
    TRY(j_int(c, "norm_num_groups", false, 32, 1, SDXL_CFG_MAX_CHANNELS, &u->norm_num_groups));
    TRY(j_num(c, "norm_eps", false, 1e-5, 1e-12, 0.5, &u->norm_eps));
    TRY(j_bool(c, "flip_sin_to_cos", true, &u->flip_sin_to_cos));
    TRY(j_num(c, "freq_shift", false, 0, -1e6, 1e6, &u->freq_shift));
    TRY(j_int(c, "sample_size", false, 128, 1, SDXL_CFG_MAX_SAMPLE_SIZE, &u->sample_size));
    TRY(j_int(c, "conv_in_kernel", false, 3, 1, 15, &u->conv_in_kernel));
    TRY(j_int(c, "conv_out_kernel", false, 3, 1, 15, &u->conv_out_kernel));
    if (u->conv_in_kernel % 2 == 0) return jbad(c, "conv_in_kernel", "%d is not odd", u->conv_in_kernel);
    if (u->conv_out_kernel % 2 == 0) return jbad(c, "conv_out_kernel", "%d is not odd", u->conv_out_kernel);

    const char *act = NULL;
    TRY(j_str(c, "act_fn", "silu", &act));
    if (!sdxl_act_from_name(act, &u->act_fn) || u->act_fn != SDXL_ACT_SILU)
        return junsup(c, "act_fn", "\"%.60s\" is not supported (silu)", act);

    const char *aet = NULL;
    TRY(j_str(c, "addition_embed_type", NULL, &aet));
    if (!aet || strcmp(aet, "text_time") != 0)
        return junsup(c, "addition_embed_type", "%s%.60s%s: only \"text_time\" (SDXL) is supported",
                      aet ? "\"" : "", aet ? aet : "null", aet ? "\"" : "");
    TRY(j_int(c, "addition_time_embed_dim", true, 0, 2, SDXL_CFG_MAX_CHANNELS, &u->addition_time_embed_dim));
    if (u->addition_time_embed_dim % 2)
        return jbad(c, "addition_time_embed_dim", "%d is odd (sinusoidal embeddings need an even width)",
                    u->addition_time_embed_dim);
    TRY(j_int(c, "projection_class_embeddings_input_dim", true, 0, 1, 1 << 20,
              &u->projection_class_embeddings_input_dim));
    u->time_proj_dim = u->block_out_channels[0];
    TRY(j_int(c, "time_embedding_dim", false, 4 * u->block_out_channels[0], 1, 4 * SDXL_CFG_MAX_CHANNELS,
              &u->time_embed_dim));
    u->ff_mult = 4;
    u->num_time_ids = 6;

    static const must_default defs[] = {
        {"class_embed_type", D_NULL, NULL, 0},
        {"num_class_embeds", D_NULL, NULL, 0},
        {"encoder_hid_dim", D_NULL, NULL, 0},
        {"encoder_hid_dim_type", D_NULL, NULL, 0},
        {"time_cond_proj_dim", D_NULL, NULL, 0},
        {"timestep_post_act", D_NULL, NULL, 0},
        {"time_embedding_act_fn", D_NULL, NULL, 0},
        {"cross_attention_norm", D_NULL, NULL, 0},
        {"only_cross_attention", D_FALSE, NULL, 0},
        {"dual_cross_attention", D_FALSE, NULL, 0},
        {"center_input_sample", D_FALSE, NULL, 0},
        {"class_embeddings_concat", D_FALSE, NULL, 0},
        {"resnet_skip_time_act", D_FALSE, NULL, 0},
        {"mid_block_only_cross_attention", D_FALSE, NULL, 0},
        {"resnet_time_scale_shift", D_STR, "default", 0},
        {"attention_type", D_STR, "default", 0},
        {"time_embedding_type", D_STR, "positional", 0},
        {"resnet_out_scale_factor", D_NUM, NULL, 1.0},
        {"mid_block_scale_factor", D_NUM, NULL, 1.0},
        {"downsample_padding", D_NUM, NULL, 1.0},
    };
    return check_defaults(c, defs, sizeof defs / sizeof defs[0]);
}

sdxl_status sdxl_unet_config_parse_json(const char *json, size_t len, const char *where,
                                        sdxl_unet_config *out, sdxl_error *err) {
    if (!json || !out)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_unet_config_parse_json: NULL argument");
    if (!where) where = "unet config";
    cJSON *root = NULL;
    TRY(parse_json(json, len, where, &root, err));
    jctx c = {where, root, err};
    sdxl_status st = unet_from_json(&c, out);
    cJSON_Delete(root);
    if (st) memset(out, 0, sizeof *out);
    return st;
}

/* ---- VAE config.json ------------------------------------------------------- */

static sdxl_status vae_from_json(jctx *c, sdxl_vae_config *v) {
    memset(v, 0, sizeof *v);
    TRY(j_class_and_levels(c, "AutoencoderKL", &v->num_levels, v->block_out_channels));
    const int L = v->num_levels;
    const char *types[2] = {"down_block_types", "up_block_types"};
    const char *want[2] = {"DownEncoderBlock2D", "UpDecoderBlock2D"};
    for (int k = 0; k < 2; k++) {
        const cJSON *t = jget(c, types[k]);
        if (!t || cJSON_IsNull(t)) continue; /* diffusers' default: one per level */
        if (!cJSON_IsArray(t) || cJSON_GetArraySize(t) != L)
            return jbad(c, types[k], "expected a list of %d block types (one per block_out_channels entry)",
                        L);
        for (int i = 0; i < L; i++) {
            const cJSON *e = cJSON_GetArrayItem(t, i);
            if (!cJSON_IsString(e)) return jbad(c, types[k], "entry %d is not a string", i);
            if (strcmp(e->valuestring, want[k]) != 0)
                return junsup(c, types[k], "entry %d \"%.60s\" is not supported (%s)", i, e->valuestring,
                              want[k]);
        }
    }
    TRY(j_int(c, "layers_per_block", false, 1, 1, SDXL_CFG_MAX_LAYERS_PER_BLOCK, &v->layers_per_block));
    TRY(j_int(c, "in_channels", false, 3, 1, SDXL_CFG_MAX_CHANNELS, &v->in_channels));
    TRY(j_int(c, "out_channels", false, 3, 1, SDXL_CFG_MAX_CHANNELS, &v->out_channels));
    TRY(j_int(c, "latent_channels", false, 4, 1, SDXL_MAX_LATENT_CHANNELS, &v->latent_channels));
    TRY(j_int(c, "norm_num_groups", false, 32, 1, SDXL_CFG_MAX_CHANNELS, &v->norm_num_groups));
    v->norm_eps = 1e-6;
    /* diffusers' AutoencoderKL default is SD 1.x's 0.18215; SDXL configs say 0.13025 */
    TRY(j_num(c, "scaling_factor", false, 0.18215, 1e-6, 1e6, &v->scaling_factor));
    const cJSON *sf = jget(c, "shift_factor");
    if (sf && !cJSON_IsNull(sf)) {
        TRY(j_num(c, "shift_factor", true, 0, -1e6, 1e6, &v->shift_factor));
        v->has_shift_factor = true;
    }
    const cJSON *lm = jget(c, "latents_mean"), *ls = jget(c, "latents_std");
    bool has_m = lm && !cJSON_IsNull(lm), has_s = ls && !cJSON_IsNull(ls);
    if (has_m != has_s)
        return jbad(c, has_m ? "latents_std" : "latents_mean", "must be given together with the other");
    if (has_m) {
        for (int k = 0; k < 2; k++) {
            const cJSON *a = k ? ls : lm;
            const char *f = k ? "latents_std" : "latents_mean";
            if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != v->latent_channels)
                return jbad(c, f, "expected a list of %d numbers (latent_channels)", v->latent_channels);
            for (int i = 0; i < v->latent_channels; i++) {
                const cJSON *e = cJSON_GetArrayItem(a, i);
                if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) || (k && !(e->valuedouble > 0)))
                    return jbad(c, f, "entry %d is not a finite%s number", i, k ? " positive" : "");
                (k ? v->latents_std : v->latents_mean)[i] = e->valuedouble;
            }
        }
        v->has_latents_mean_std = true;
    }
    TRY(j_bool(c, "force_upcast", true, &v->force_upcast));
    TRY(j_bool(c, "mid_block_add_attention", true, &v->mid_block_add_attention));
    if (!v->mid_block_add_attention)
        return junsup(c, "mid_block_add_attention",
                      "false is not supported (SDXL's VAE has a mid-block attention)");
    TRY(j_int(c, "sample_size", false, 1024, 1, SDXL_CFG_MAX_SAMPLE_SIZE, &v->sample_size));
    const char *act = NULL;
    TRY(j_str(c, "act_fn", "silu", &act));
    if (!sdxl_act_from_name(act, &v->act_fn) || v->act_fn != SDXL_ACT_SILU)
        return junsup(c, "act_fn", "\"%.60s\" is not supported (silu)", act);
    bool q;
    TRY(j_bool(c, "use_quant_conv", true, &q));
    if (!q) return junsup(c, "use_quant_conv", "false is not supported");
    TRY(j_bool(c, "use_post_quant_conv", true, &q));
    if (!q) return junsup(c, "use_post_quant_conv", "false is not supported");
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_vae_config_parse_json(const char *json, size_t len, const char *where, sdxl_vae_config *out,
                                       sdxl_error *err) {
    if (!json || !out)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_vae_config_parse_json: NULL argument");
    if (!where) where = "vae config";
    cJSON *root = NULL;
    TRY(parse_json(json, len, where, &root, err));
    jctx c = {where, root, err};
    sdxl_status st = vae_from_json(&c, out);
    cJSON_Delete(root);
    if (st) memset(out, 0, sizeof *out);
    return st;
}

/* ---- CLIP text config.json ------------------------------------------------- */

static sdxl_status te_from_json(jctx *c, bool with_projection, sdxl_te_config *t) {
    memset(t, 0, sizeof *t);
    const char *mt = NULL;
    TRY(j_str(c, "model_type", "clip_text_model", &mt));
    if (strcmp(mt, "clip_text_model") != 0)
        return junsup(c, "model_type", "\"%.60s\" is not supported (clip_text_model)", mt);
    /* defaults: transformers' CLIPTextConfig */
    TRY(j_int(c, "hidden_size", false, 512, 1, SDXL_CFG_MAX_TE_HIDDEN, &t->hidden_size));
    TRY(j_int(c, "intermediate_size", false, 2048, 1, SDXL_CFG_MAX_TE_INTERMEDIATE, &t->intermediate_size));
    TRY(j_int(c, "num_hidden_layers", false, 12, 1, SDXL_CFG_MAX_TE_LAYERS, &t->num_layers));
    TRY(j_int(c, "num_attention_heads", false, 8, 1, SDXL_CFG_MAX_TE_HIDDEN, &t->num_heads));
    TRY(j_int(c, "max_position_embeddings", false, 77, 1, SDXL_CFG_MAX_POSITIONS,
              &t->max_position_embeddings));
    TRY(j_int(c, "vocab_size", false, 49408, 1, SDXL_CFG_MAX_VOCAB, &t->vocab_size));
    TRY(j_int(c, "projection_dim", false, 512, 1, SDXL_CFG_MAX_TE_HIDDEN, &t->projection_dim));
    TRY(j_num(c, "layer_norm_eps", false, 1e-5, 1e-12, 0.5, &t->layer_norm_eps));
    TRY(j_int(c, "bos_token_id", false, 49406, INT_MIN, INT_MAX, &t->bos_token_id));
    TRY(j_int(c, "eos_token_id", false, 49407, INT_MIN, INT_MAX, &t->eos_token_id));
    TRY(j_int(c, "pad_token_id", false, 1, INT_MIN, INT_MAX, &t->pad_token_id));
    const char *act = NULL;
    TRY(j_str(c, "hidden_act", "quick_gelu", &act));
    if (!sdxl_act_from_name(act, &t->hidden_act))
        return junsup(c, "hidden_act",
                      "\"%.60s\" is not supported (gelu, quick_gelu, gelu_new, gelu_pytorch_tanh)", act);
    t->with_projection = with_projection;
    t->legacy_pooling = t->eos_token_id == 2;
    t->hidden_state_index = t->num_layers - 1;
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_te_config_parse_json(const char *json, size_t len, const char *where, bool with_projection,
                                      sdxl_te_config *out, sdxl_error *err) {
    if (!json || !out)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_te_config_parse_json: NULL argument");
    if (!where) where = "text encoder config";
    cJSON *root = NULL;
    TRY(parse_json(json, len, where, &root, err));
    jctx c = {where, root, err};
    sdxl_status st = te_from_json(&c, with_projection, out);
    cJSON_Delete(root);
    if (st) memset(out, 0, sizeof *out);
    return st;
}

/* ---- diffusers folder ------------------------------------------------------ */

static sdxl_status load_component_json(const char *dir, const char *sub, const char *file, char *path,
                                       size_t cap, char **text, size_t *len, sdxl_error *err) {
    int n = snprintf(path, cap, "%s/%s/%s", dir, sub, file);
    if (n < 0 || (size_t)n >= cap)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: path too long", dir);
    sdxl_status st = read_small_file(path, text, len, err);
    if (st == SDXL_STATUS_NOT_FOUND)
        return sdxl_error_set(err, st, "%s: missing (a diffusers folder has %s/%s)", path, sub, file);
    return st;
}

/* model_index.json: which pipeline and components; force_zeros. */
static sdxl_status check_model_index(jctx *c, sdxl_pipeline_config *p, bool *has_scheduler) {
    const char *cls = NULL;
    TRY(j_str(c, "_class_name", NULL, &cls));
    if (!cls) return jbad(c, "_class_name", "missing: not a diffusers pipeline folder");
    if (strncmp(cls, "StableDiffusionXL", 17) != 0)
        return junsup(c, "_class_name",
                      "\"%.60s\" is not supported (an SDXL pipeline, e.g. StableDiffusionXLPipeline)", cls);
    static const struct {
        const char *name, *cls;
    } comps[] = {{"unet", "UNet2DConditionModel"},
                 {"vae", "AutoencoderKL"},
                 {"text_encoder", "CLIPTextModel"},
                 {"text_encoder_2", "CLIPTextModelWithProjection"}};
    for (size_t i = 0; i < 4; i++) {
        const cJSON *v = jget(c, comps[i].name);
        const cJSON *lib = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, 0) : NULL;
        const cJSON *k = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, 1) : NULL;
        if (!v || cJSON_IsNull(v) || (cJSON_IsArray(v) && cJSON_IsNull(k)))
            return junsup(c, comps[i].name,
                          "the pipeline has no %s; SDXL base needs unet, vae, text_encoder and "
                          "text_encoder_2 (a refiner-only model is not supported)",
                          comps[i].name);
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2 || !cJSON_IsString(lib) || !cJSON_IsString(k))
            return jbad(c, comps[i].name, "expected [library, class name]");
        if (strcmp(k->valuestring, comps[i].cls) != 0)
            return junsup(c, comps[i].name, "class \"%.60s\" is not supported (%s)", k->valuestring,
                          comps[i].cls);
    }
    const cJSON *s = jget(c, "scheduler");
    *has_scheduler = cJSON_IsArray(s) && cJSON_IsString(cJSON_GetArrayItem(s, 1));
    return j_bool(c, "force_zeros_for_empty_prompt", true, &p->force_zeros_for_empty_prompt);
}

sdxl_status sdxl_model_config_load_diffusers(const char *dir, sdxl_model_config *cfg, sdxl_error *err) {
    if (!dir || !cfg)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "sdxl_model_config_load_diffusers: NULL argument");
    memset(cfg, 0, sizeof *cfg);
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/model_index.json", dir);
    if (n < 0 || (size_t)n >= sizeof path)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: path too long", dir);
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return sdxl_error_set(err, SDXL_STATUS_NOT_FOUND, "%s: no such model folder: %s", dir,
                              strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: not a folder", dir);

    char *text = NULL;
    size_t len = 0;
    sdxl_status st = read_small_file(path, &text, &len, err);
    if (st == SDXL_STATUS_NOT_FOUND)
        return sdxl_error_set(err, st, "%s: not a diffusers model folder: model_index.json is missing", dir);
    if (st) return st;
    cJSON *root = NULL;
    bool has_sched = false;
    st = parse_json(text, len, path, &root, err);
    sdxl_free(text);
    text = NULL;
    if (!st) {
        jctx c = {path, root, err};
        st = check_model_index(&c, &cfg->pipeline, &has_sched);
        cJSON_Delete(root);
    }
    static const char *const subs[4] = {"unet", "vae", "text_encoder", "text_encoder_2"};
    for (int k = 0; k < 4 && !st; k++) {
        st = load_component_json(dir, subs[k], "config.json", path, sizeof path, &text, &len, err);
        if (st) break;
        switch (k) {
        case 0: st = sdxl_unet_config_parse_json(text, len, path, &cfg->unet, err); break;
        case 1: st = sdxl_vae_config_parse_json(text, len, path, &cfg->vae, err); break;
        default: st = sdxl_te_config_parse_json(text, len, path, k == 3, &cfg->te[k - 2], err); break;
        }
        sdxl_free(text);
        text = NULL;
    }
    if (!st) {
        st = load_component_json(dir, "scheduler", "scheduler_config.json", path, sizeof path, &text, &len,
                                 err);
        if (st == SDXL_STATUS_NOT_FOUND) {
            SDXL_LOG_W("%s: no scheduler/scheduler_config.json; using SDXL base's scheduler settings", dir);
            text = sdxl_strdup(sdxl_model_config_default_scheduler_json());
            st = text ? SDXL_STATUS_OK
                      : sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", dir);
            cfg->scheduler_is_default = true;
        } else if (!st) {
            cJSON *s = NULL;
            st = parse_json(text, len, path, &s, err); /* must at least be a JSON object */
            cJSON_Delete(s);
            if (st) {
                sdxl_free(text);
                text = NULL;
            }
        }
        (void)has_sched;
        cfg->scheduler_json = text;
    }
    if (!st) st = sdxl_model_config_validate(cfg, dir, err);
    if (st) sdxl_model_config_clear(cfg);
    return st;
}

/* ---- hints ----------------------------------------------------------------- */

typedef enum { SRC_METADATA, SRC_YAML, SRC_CALLER } hint_src;

typedef struct {
    bool has_scaling, has_shift;
    double scaling, shift;
    int head_channels; /* 0 unset */
    int n_heads;       /* 0 unset, 1 uniform, else per level */
    int heads[SDXL_MAX_LEVELS];
    bool has_act[2];
    sdxl_act act[2];
    int te_heads[2]; /* 0 unset */
    bool has_hsi[2];
    int hsi[2];
    bool has_force_zeros, force_zeros;
    hint_src heads_src; /* who set head_channels / heads */
    bool has_unet_groups, has_vae_groups, has_upcast, upcast;
    int unet_groups, vae_groups;
    bool has_ln_eps[2], has_bos[2], has_eos[2], has_pad[2];
    double ln_eps[2];
    int bos[2], eos[2], pad[2];
} hints;

static bool parse_ll(const char *s, long long lo, long long hi, long long *out) {
    if (!s || !*s) return false;
    while (*s == ' ')
        s++;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    while (*end == ' ')
        end++;
    if (errno || *end || end == s || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    while (*end == ' ')
        end++;
    if (errno || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out) {
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "1"))
        *out = true;
    else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "0"))
        *out = false;
    else
        return false;
    return true;
}

/* "te1.<name>" / "te2.<name>" -> 0 / 1, else -1. */
static int te_key(const char *key, const char *name) {
    if (strncmp(key, "te", 2) || (key[2] != '1' && key[2] != '2') || key[3] != '.' || strcmp(key + 4, name))
        return -1;
    return key[2] - '1';
}

/* Set one hint. Unknown keys: ignored for metadata (known = false),
 * INVALID_ARG for caller. Bad values: INVALID_ARG (caller) / BAD_INPUT. */
static sdxl_status hint_set(hints *h, const char *key, const char *val, hint_src src, const char *where,
                            bool *known, sdxl_error *err) {
    sdxl_status bad = src == SRC_CALLER ? SDXL_STATUS_INVALID_ARG : SDXL_STATUS_BAD_INPUT;
    long long x;
    double d;
    int k;
    if (known) *known = true;
#define BADV(what)                                                                                           \
    sdxl_error_set(err, bad, "%s: %s \"%s\" = \"%.60s\": %s", where, src == SRC_CALLER ? "hint" : "key",     \
                   key, val ? val : "", what)
    if (!val) return BADV("missing value");
    if (!strcmp(key, "scaling_factor") || !strcmp(key, "vae.scaling_factor")) {
        if (!parse_double(val, &d) || !(d > 0) || d > 1e6) return BADV("expected a positive number");
        h->has_scaling = true, h->scaling = d;
    } else if (!strcmp(key, "shift_factor") || !strcmp(key, "vae.shift_factor")) {
        if (!parse_double(val, &d) || fabs(d) > 1e6) return BADV("expected a number");
        h->has_shift = true, h->shift = d;
    } else if (!strcmp(key, "unet.num_head_channels")) {
        if (!parse_ll(val, 1, SDXL_CFG_MAX_CHANNELS, &x)) return BADV("expected a positive integer");
        h->head_channels = (int)x, h->n_heads = 0, h->heads_src = src;
    } else if (!strcmp(key, "unet.num_heads")) {
        int n = 0;
        const char *p = val;
        while (*p) {
            char tok[32];
            size_t tn = strcspn(p, ",");
            if (tn == 0 || tn >= sizeof tok || n == SDXL_MAX_LEVELS)
                return BADV("expected an integer or a list \"5,10,20\"");
            memcpy(tok, p, tn);
            tok[tn] = 0;
            if (!parse_ll(tok, 1, SDXL_CFG_MAX_CHANNELS, &x)) return BADV("expected positive integers");
            h->heads[n++] = (int)x;
            p += tn;
            if (*p == ',') p++;
        }
        if (!n) return BADV("empty");
        h->n_heads = n, h->head_channels = 0, h->heads_src = src;
    } else if (!strcmp(key, "te1.hidden_act") || !strcmp(key, "te2.hidden_act")) {
        k = key[2] - '1';
        sdxl_act a;
        if (!sdxl_act_from_name(val, &a) || a == SDXL_ACT_SILU)
            return BADV("expected gelu, quick_gelu, gelu_new or gelu_pytorch_tanh");
        h->has_act[k] = true, h->act[k] = a;
    } else if (!strcmp(key, "te1.num_attention_heads") || !strcmp(key, "te2.num_attention_heads")) {
        if (!parse_ll(val, 1, SDXL_CFG_MAX_TE_HIDDEN, &x)) return BADV("expected a positive integer");
        h->te_heads[key[2] - '1'] = (int)x;
    } else if (!strcmp(key, "te1.hidden_state_index") || !strcmp(key, "te2.hidden_state_index")) {
        if (!parse_ll(val, 0, SDXL_CFG_MAX_TE_LAYERS, &x)) return BADV("expected a non-negative integer");
        h->has_hsi[key[2] - '1'] = true, h->hsi[key[2] - '1'] = (int)x;
    } else if (!strcmp(key, "force_zeros_for_empty_prompt")) {
        if (!parse_bool(val, &h->force_zeros)) return BADV("expected true or false");
        h->has_force_zeros = true;
    } else if (!strcmp(key, "unet.norm_num_groups") || !strcmp(key, "vae.norm_num_groups")) {
        if (!parse_ll(val, 1, SDXL_CFG_MAX_CHANNELS, &x)) return BADV("expected a positive integer");
        if (key[0] == 'u')
            h->has_unet_groups = true, h->unet_groups = (int)x;
        else
            h->has_vae_groups = true, h->vae_groups = (int)x;
    } else if (!strcmp(key, "unet.upcast_attention")) {
        if (!parse_bool(val, &h->upcast)) return BADV("expected true or false");
        h->has_upcast = true;
    } else if ((k = te_key(key, "layer_norm_eps")) >= 0) {
        if (!parse_double(val, &d) || !(d > 0 && d < 0.5)) return BADV("expected a number in (0, 0.5)");
        h->has_ln_eps[k] = true, h->ln_eps[k] = d;
    } else if ((k = te_key(key, "bos_token_id")) >= 0 || (k = te_key(key, "eos_token_id")) >= 0 ||
               (k = te_key(key, "pad_token_id")) >= 0) {
        if (!parse_ll(val, INT_MIN, INT_MAX, &x)) return BADV("expected an integer");
        char which = key[4];
        if (which == 'b')
            h->has_bos[k] = true, h->bos[k] = (int)x;
        else if (which == 'e')
            h->has_eos[k] = true, h->eos[k] = (int)x;
        else
            h->has_pad[k] = true, h->pad[k] = (int)x;
    } else {
        if (known) *known = false;
        if (src == SRC_CALLER)
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                                  "%s: unknown hint \"%.80s\" (known: scaling_factor, shift_factor, "
                                  "unet.num_head_channels, unet.num_heads, te1/te2.hidden_act, "
                                  "te1/te2.num_attention_heads, te1/te2.hidden_state_index, "
                                  "te1/te2.layer_norm_eps, te1/te2.bos_token_id, te1/te2.eos_token_id, "
                                  "te1/te2.pad_token_id, unet.norm_num_groups, unet.upcast_attention, "
                                  "vae.norm_num_groups, force_zeros_for_empty_prompt)",
                                  where, key);
    }
#undef BADV
    return SDXL_STATUS_OK;
}

static sdxl_status hints_from_kv(hints *h, const char *const *kv, sdxl_error *err) {
    if (!kv) return SDXL_STATUS_OK;
    for (size_t i = 0; kv[i]; i += 2) {
        if (!kv[i + 1])
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "hints: key \"%.80s\" has no value", kv[i]);
        TRY(hint_set(h, kv[i], kv[i + 1], SRC_CALLER, "load parameters", NULL, err));
    }
    return SDXL_STATUS_OK;
}

static sdxl_status apply_unet_heads(sdxl_unet_config *u, const hints *h, const char *where, sdxl_error *err) {
    int L = u->num_levels;
    if (!h->head_channels && !h->n_heads) return SDXL_STATUS_OK;
    int heads[SDXL_MAX_LEVELS];
    for (int l = 0; l < L; l++) {
        int c = u->block_out_channels[l];
        bool attn = u->down_has_attn[l] || u->up_has_attn[L - 1 - l] || l == L - 1;
        if (h->head_channels) {
            if (attn && c % h->head_channels)
                return sdxl_error_set(
                    err, SDXL_STATUS_BAD_INPUT,
                    "%s: UNet level %d: %d channels are not divisible into heads of %d channels "
                    "(num_head_channels); give the right value with a sidecar yaml or the hint "
                    "unet.num_head_channels / unet.num_heads",
                    where, l, c, h->head_channels);
            heads[l] = c / h->head_channels < 1 ? 1 : c / h->head_channels;
        } else {
            heads[l] = h->heads[h->n_heads == 1 ? 0 : l];
        }
    }
    for (int l = 0; l < L; l++) {
        u->down_num_heads[l] = heads[l];
        u->up_num_heads[l] = heads[L - 1 - l];
    }
    u->mid_num_heads = heads[L - 1];
    return SDXL_STATUS_OK;
}

/* Apply the non-shape hints to a config. */
static sdxl_status hints_apply(sdxl_model_config *cfg, const hints *h, const char *where, sdxl_error *err) {
    if (h->n_heads > 1 && h->n_heads != cfg->unet.num_levels)
        return sdxl_error_set(err,
                              h->heads_src == SRC_CALLER ? SDXL_STATUS_INVALID_ARG : SDXL_STATUS_BAD_INPUT,
                              "%s: unet.num_heads has %d values but the UNet has %d levels", where,
                              h->n_heads, cfg->unet.num_levels);
    TRY(apply_unet_heads(&cfg->unet, h, where, err));
    if (h->has_scaling) cfg->vae.scaling_factor = h->scaling;
    if (h->has_shift) cfg->vae.has_shift_factor = true, cfg->vae.shift_factor = h->shift;
    for (int k = 0; k < 2; k++) {
        if (h->has_act[k]) cfg->te[k].hidden_act = h->act[k];
        if (h->te_heads[k]) cfg->te[k].num_heads = h->te_heads[k];
        if (h->has_hsi[k]) cfg->te[k].hidden_state_index = h->hsi[k];
        if (h->has_ln_eps[k]) cfg->te[k].layer_norm_eps = h->ln_eps[k];
        if (h->has_bos[k]) cfg->te[k].bos_token_id = h->bos[k];
        if (h->has_pad[k]) cfg->te[k].pad_token_id = h->pad[k];
        if (h->has_eos[k]) {
            cfg->te[k].eos_token_id = h->eos[k];
            cfg->te[k].legacy_pooling = h->eos[k] == 2; /* transformers' rule */
        }
    }
    if (h->has_unet_groups) cfg->unet.norm_num_groups = h->unet_groups;
    if (h->has_vae_groups) cfg->vae.norm_num_groups = h->vae_groups;
    if (h->has_upcast) cfg->unet.upcast_attention = h->upcast;
    if (h->has_force_zeros) cfg->pipeline.force_zeros_for_empty_prompt = h->force_zeros;
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_model_config_apply_hints(sdxl_model_config *cfg, const char *const *kv, sdxl_error *err) {
    if (!cfg)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_model_config_apply_hints: cfg is NULL");
    hints h;
    memset(&h, 0, sizeof h);
    TRY(hints_from_kv(&h, kv, err));
    TRY(hints_apply(cfg, &h, "load parameters", err));
    return sdxl_model_config_validate(cfg, "after applying hints", err);
}

/* ---- SGM single-file inference --------------------------------------------- */

#define K_UNET "model.diffusion_model."
#define K_VAE "first_stage_model."
#define K_TE1 "conditioner.embedders.0.transformer.text_model."
#define K_TE2 "conditioner.embedders.1.model."

typedef struct {
    const sdxl_st_file *f;
    const char *file;
    sdxl_error *err;
} sgm;

static const sdxl_st_tensor *sfind(sgm *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const sdxl_st_tensor *sfind(sgm *s, const char *fmt, ...) {
    char key[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof key) return NULL;
    return sdxl_st_find(s->f, key);
}

/* The tensor `key`, required with `ndim` dims (ndim 0: any). BAD_INPUT
 * naming it and what it was needed for. */
static sdxl_status sneed(sgm *s, const sdxl_st_tensor **out, int ndim, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static sdxl_status sneed(sgm *s, const sdxl_st_tensor **out, int ndim, const char *what, const char *fmt,
                         ...) {
    char key[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof key)
        return sdxl_error_set(s->err, SDXL_STATUS_INTERNAL, "%s: tensor name too long", s->file);
    const sdxl_st_tensor *t = sdxl_st_find(s->f, key);
    if (!t)
        return sdxl_error_set(s->err, SDXL_STATUS_BAD_INPUT,
                              "%s: tensor \"%s\" is missing; it gives the %s of the single-file checkpoint",
                              s->file, key, what);
    if (ndim && t->ndim != ndim)
        return sdxl_error_set(s->err, SDXL_STATUS_BAD_INPUT,
                              "%s: tensor \"%s\" has %d dimensions; expected %d (%s)", s->file, key, t->ndim,
                              ndim, what);
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 1 || t->shape[i] > (int64_t)SDXL_CFG_MAX_VOCAB)
            return sdxl_error_set(s->err, SDXL_STATUS_BAD_INPUT,
                                  "%s: tensor \"%s\": dimension %d is %lld (%s)", s->file, key, i,
                                  (long long)t->shape[i], what);
    }
    *out = t;
    return SDXL_STATUS_OK;
}

/* 1 + the largest N such that some tensor name is "<prefix>N." (0 if none). */
static int count_index(sgm *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int count_index(sgm *s, const char *fmt, ...) {
    char prefix[512];
    va_list ap;
    va_start(ap, fmt);
    int pn = vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    if (pn < 0 || (size_t)pn >= sizeof prefix) return 0;
    size_t n = sdxl_st_count(s->f);
    long best = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = sdxl_st_at(s->f, i)->name;
        if (strncmp(name, prefix, (size_t)pn) != 0) continue;
        const char *d = name + pn;
        if (*d < '0' || *d > '9') continue;
        long v = 0;
        int digits = 0;
        while (*d >= '0' && *d <= '9' && digits < 7)
            v = v * 10 + (*d++ - '0'), digits++;
        if (*d != '.') continue;
        if (v + 1 > best) best = v + 1;
    }
    return (int)best;
}

static sdxl_status sbad(sgm *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static sdxl_status sbad(sgm *s, const char *fmt, ...) {
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return sdxl_error_set(s->err, SDXL_STATUS_BAD_INPUT, "%s: %s", s->file, why);
}

static sdxl_status infer_te1(sgm *s, sdxl_te_config *t) {
    const sdxl_st_tensor *tok, *pos, *fc1;
    TRY(sneed(s, &tok, 2, "vocabulary and width of text encoder 1",
              K_TE1 "embeddings.token_embedding.weight"));
    TRY(sneed(s, &pos, 2, "positions of text encoder 1", K_TE1 "embeddings.position_embedding.weight"));
    TRY(sneed(s, &fc1, 2, "MLP width of text encoder 1", K_TE1 "encoder.layers.0.mlp.fc1.weight"));
    t->vocab_size = (int)tok->shape[0];
    t->hidden_size = (int)tok->shape[1];
    t->max_position_embeddings = (int)pos->shape[0];
    t->intermediate_size = (int)fc1->shape[0];
    t->num_layers = count_index(s, K_TE1 "encoder.layers.");
    t->projection_dim = t->hidden_size;
    t->with_projection = false;
    t->hidden_act = SDXL_ACT_QUICK_GELU;
    return SDXL_STATUS_OK;
}

static sdxl_status infer_te2(sgm *s, sdxl_te_config *t) {
    const sdxl_st_tensor *tok, *pos, *fc, *proj;
    TRY(sneed(s, &tok, 2, "vocabulary and width of text encoder 2", K_TE2 "token_embedding.weight"));
    TRY(sneed(s, &pos, 2, "positions of text encoder 2", K_TE2 "positional_embedding"));
    TRY(sneed(s, &fc, 2, "MLP width of text encoder 2", K_TE2 "transformer.resblocks.0.mlp.c_fc.weight"));
    bool linear_form =
        !sdxl_st_find(s->f, K_TE2 "text_projection") && sdxl_st_find(s->f, K_TE2 "text_projection.weight");
    if (linear_form)
        TRY(sneed(s, &proj, 2, "projection width of text encoder 2", K_TE2 "text_projection.weight"));
    else
        TRY(sneed(s, &proj, 2, "projection width of text encoder 2", K_TE2 "text_projection"));
    t->vocab_size = (int)tok->shape[0];
    t->hidden_size = (int)tok->shape[1];
    t->max_position_embeddings = (int)pos->shape[0];
    t->intermediate_size = (int)fc->shape[0];
    t->num_layers = count_index(s, K_TE2 "transformer.resblocks.");
    /* stored [hidden, proj]; the Linear form "text_projection.weight" is [proj, hidden] */
    t->projection_dim = (int)proj->shape[linear_form ? 0 : 1];
    t->with_projection = true;
    t->hidden_act = SDXL_ACT_GELU;
    return SDXL_STATUS_OK;
}

static void te_defaults(sdxl_te_config *t) {
    t->layer_norm_eps = 1e-5;
    t->bos_token_id = 0;
    t->eos_token_id = 2;
    t->pad_token_id = 1;
    t->legacy_pooling = true;
    t->hidden_state_index = t->num_layers - 1;
    /* heads: real CLIP towers (width >= 512) use 64-wide heads; the tiny
     * test CLIPs of transformers/diffusers use 4 heads */
    if (t->hidden_size >= 512 && t->hidden_size % 64 == 0)
        t->num_heads = t->hidden_size / 64;
    else if (t->hidden_size % 4 == 0)
        t->num_heads = 4;
    else
        t->num_heads = 1;
}

/* transformer depth of the attention at "<K><blocks>.<idx>.1." (-1 if the
 * block has no attention) */
static int attn_depth(sgm *s, const char *blocks, int idx) {
    if (!sfind(s, K_UNET "%s.%d.1.proj_in.weight", blocks, idx)) return -1;
    return count_index(s, K_UNET "%s.%d.1.transformer_blocks.", blocks, idx);
}

static sdxl_status infer_unet(sgm *s, sdxl_unet_config *u) {
    memset(u, 0, sizeof *u);
    const sdxl_st_tensor *t;
    TRY(sneed(s, &t, 4, "model_channels of the UNet", K_UNET "input_blocks.0.0.weight"));
    int c0 = (int)t->shape[0];
    u->in_channels = (int)t->shape[1];
    u->conv_in_kernel = (int)t->shape[2];
    int n_in = count_index(s, K_UNET "input_blocks.");
    int k_op = 0;
    for (int k = 1; k < n_in; k++) {
        if (sfind(s, K_UNET "input_blocks.%d.0.op.weight", k)) {
            k_op = k;
            break;
        }
    }
    int lpb = k_op ? k_op - 1 : n_in - 1;
    if (lpb < 1 || lpb > SDXL_CFG_MAX_LAYERS_PER_BLOCK)
        return sbad(
            s, "cannot infer the UNet's res blocks per level from %d input_blocks (first downsampler at %d)",
            n_in, k_op);
    if (n_in % (lpb + 1))
        return sbad(s, "%d input_blocks do not make whole levels of %d res blocks + a downsampler", n_in,
                    lpb);
    int L = n_in / (lpb + 1);
    if (L < 1 || L > SDXL_MAX_LEVELS)
        return sbad(s, "the UNet has %d levels; at most %d are supported", L, SDXL_MAX_LEVELS);
    u->num_levels = L;
    u->layers_per_block = lpb;
    for (int l = 0; l < L; l++) {
        int first = 1 + l * (lpb + 1);
        TRY(sneed(s, &t, 4, "channels of a UNet level", K_UNET "input_blocks.%d.0.out_layers.3.weight",
                  first));
        u->block_out_channels[l] = (int)t->shape[0];
        int d0 = attn_depth(s, "input_blocks", first);
        for (int j = 1; j < lpb; j++) {
            if (attn_depth(s, "input_blocks", first + j) != d0)
                return sbad(
                    s,
                    "input_blocks.%d and input_blocks.%d (UNet level %d) differ in attention or transformer "
                    "depth",
                    first, first + j, l);
        }
        bool has_op = sfind(s, K_UNET "input_blocks.%d.0.op.weight", first + lpb) != NULL;
        if (has_op != (l < L - 1))
            return sbad(s, "UNet level %d %s a downsampler (input_blocks.%d.0.op)", l,
                        has_op ? "has" : "lacks", first + lpb);
        u->down_has_attn[l] = d0 >= 0;
        u->down_transformer_layers[l] = d0 > 0 ? d0 : 0;
        if (d0 == 0) return sbad(s, "input_blocks.%d.1 has no transformer_blocks", first);
    }
    int n_out = count_index(s, K_UNET "output_blocks.");
    if (n_out != L * (lpb + 1))
        return sbad(s, "the UNet has %d output_blocks; %d levels of %d res blocks need %d", n_out, L, lpb + 1,
                    L * (lpb + 1));
    for (int i = 0; i < L; i++) {
        int first = i * (lpb + 1);
        int d0 = attn_depth(s, "output_blocks", first);
        for (int j = 1; j <= lpb; j++) {
            if (attn_depth(s, "output_blocks", first + j) != d0)
                return sbad(s,
                            "output_blocks.%d and output_blocks.%d (UNet up block %d) differ in attention or "
                            "transformer depth",
                            first, first + j, i);
        }
        if (d0 == 0) return sbad(s, "output_blocks.%d.1 has no transformer_blocks", first);
        u->up_has_attn[i] = d0 >= 0;
        u->up_transformer_layers[i] = d0 > 0 ? d0 : 0;
    }
    if (!sfind(s, K_UNET "middle_block.1.proj_in.weight"))
        return sbad(s, "tensor \"" K_UNET
                       "middle_block.1.proj_in.weight\" is missing: the UNet's mid block must have "
                       "an attention");
    int dm = count_index(s, K_UNET "middle_block.1.transformer_blocks.");
    if (dm < 1) return sbad(s, "the UNet's mid-block attention has no transformer_blocks");
    u->mid_transformer_layers = dm;

    TRY(sneed(s, &t, 0, "projection type of the UNet's attentions", K_UNET "middle_block.1.proj_in.weight"));
    u->use_linear_projection = t->ndim == 2;
    TRY(sneed(s, &t, 2, "context width of the UNet (cross_attention_dim)",
              K_UNET "middle_block.1.transformer_blocks.0.attn2.to_k.weight"));
    u->cross_attention_dim = (int)t->shape[1];
    TRY(sneed(s, &t, 2, "time embedding width of the UNet", K_UNET "time_embed.0.weight"));
    u->time_embed_dim = (int)t->shape[0];
    if (t->shape[1] != c0)
        return sbad(s, "time_embed.0.weight is [%lld, %lld]; its input must equal model_channels %d",
                    (long long)t->shape[0], (long long)t->shape[1], c0);
    u->time_proj_dim = c0;
    if (!sfind(s, K_UNET "label_emb.0.0.weight"))
        return sdxl_error_set(s->err, SDXL_STATUS_UNSUPPORTED,
                              "%s: no \"" K_UNET
                              "label_emb.0.0.weight\": not an SDXL base checkpoint (SD 1.x/2.x "
                              "have no add-embedding)",
                              s->file);
    TRY(sneed(s, &t, 2, "add-embedding input width of the UNet", K_UNET "label_emb.0.0.weight"));
    u->projection_class_embeddings_input_dim = (int)t->shape[1];
    TRY(sneed(s, &t, 4, "out_channels of the UNet", K_UNET "out.2.weight"));
    u->out_channels = (int)t->shape[0];
    u->conv_out_kernel = (int)t->shape[2];
    if (u->block_out_channels[0] != c0)
        return sbad(s,
                    "input_blocks.1 has %d channels but input_blocks.0 has %d; SDXL's first level keeps "
                    "model_channels",
                    u->block_out_channels[0], c0);

    /* SGM UNetModel constants */
    u->norm_num_groups = 32;
    u->norm_eps = 1e-5;
    u->flip_sin_to_cos = true;
    u->freq_shift = 0;
    u->act_fn = SDXL_ACT_SILU;
    u->upcast_attention = false;
    u->ff_mult = 4;
    u->num_time_ids = 6;
    u->sample_size = 128;
    return SDXL_STATUS_OK; /* heads: resolved with the hints (default head width 64) */
}

static sdxl_status infer_vae(sgm *s, sdxl_vae_config *v) {
    memset(v, 0, sizeof *v);
    const sdxl_st_tensor *t;
    int L = count_index(s, K_VAE "encoder.down.");
    if (L < 1 || L > SDXL_MAX_LEVELS)
        return sbad(s, "the VAE has %d encoder levels (" K_VAE "encoder.down.*); expected 1..%d", L,
                    SDXL_MAX_LEVELS);
    v->num_levels = L;
    v->layers_per_block = count_index(s, K_VAE "encoder.down.0.block.");
    if (v->layers_per_block < 1 || v->layers_per_block > SDXL_CFG_MAX_LAYERS_PER_BLOCK)
        return sbad(s, "the VAE encoder has %d res blocks per level", v->layers_per_block);
    for (int i = 0; i < L; i++) {
        TRY(sneed(s, &t, 4, "channels of a VAE level", K_VAE "encoder.down.%d.block.0.conv1.weight", i));
        v->block_out_channels[i] = (int)t->shape[0];
    }
    TRY(sneed(s, &t, 4, "latent channels of the VAE", K_VAE "decoder.conv_in.weight"));
    v->latent_channels = (int)t->shape[1];
    TRY(sneed(s, &t, 4, "input channels of the VAE", K_VAE "encoder.conv_in.weight"));
    v->in_channels = (int)t->shape[1];
    TRY(sneed(s, &t, 4, "output channels of the VAE", K_VAE "decoder.conv_out.weight"));
    v->out_channels = (int)t->shape[0];
    v->norm_num_groups = 32;
    v->norm_eps = 1e-6;
    v->scaling_factor = 0.13025;
    v->force_upcast = true;
    v->mid_block_add_attention = true;
    v->act_fn = SDXL_ACT_SILU;
    v->sample_size = 1024;
    return SDXL_STATUS_OK;
}

/* ---- sidecar yaml ----------------------------------------------------------- */

#define Y_NET "model.params.network_config.params."
#define Y_DD "model.params.first_stage_config.params.ddconfig."
#define Y_EMB "model.params.conditioner_config.params.emb_models"

typedef struct {
    const sdxl__yaml *y;
    const char *file;
    sdxl_error *err;
} ydoc;

/* An integer at a path: 1 found, 0 absent, error status (<0 never) via *st. */
static int y_int(ydoc *d, const char *path, long long lo, long long hi, long long *out, sdxl_status *st) {
    int line = 0;
    const char *v = sdxl__yaml_get(d->y, path, &line);
    if (!v || !*v || !strcmp(v, "null") || !strcmp(v, "~")) return 0;
    if (!parse_ll(v, lo, hi, out)) {
        *st = sdxl_error_set(d->err, SDXL_STATUS_BAD_INPUT,
                             "%s: line %d: %s = \"%.40s\" is not an integer in [%lld, %lld]", d->file, line,
                             path, v, lo, hi);
        return -1;
    }
    return 1;
}

static sdxl_status y_mismatch(ydoc *d, const char *path, long long yv, long long fv, const char *what) {
    int line = 0;
    if (!sdxl__yaml_get(d->y, path, &line)) { /* "<seq> (length)": the line of its first item */
        const char *sp = strchr(path, ' ');
        if (sp) sdxl__yaml_getf(d->y, &line, "%.*s.0", (int)(sp - path), path);
    }
    return sdxl_error_set(d->err, SDXL_STATUS_BAD_INPUT,
                          "%s: line %d: %s is %lld but the checkpoint's tensors give %lld (%s)", d->file,
                          line, path, yv, fv, what);
}

/* Check an int the yaml may state against the inferred value. */
static sdxl_status y_check(ydoc *d, const char *path, long long fv, const char *what) {
    long long x;
    sdxl_status st = SDXL_STATUS_OK;
    int r = y_int(d, path, LLONG_MIN / 2, LLONG_MAX / 2, &x, &st);
    if (r < 0) return st;
    if (r && x != fv) return y_mismatch(d, path, x, fv, what);
    return SDXL_STATUS_OK;
}

/* Hand a yaml value to hint_set (same parsing and validation as metadata and
 * caller hints); messages name the yaml file, line and path. */
static sdxl_status y_hint(ydoc *d, hints *h, const char *path, const char *hint_key) {
    int line = 0;
    const char *v = sdxl__yaml_get(d->y, path, &line);
    if (!v || !*v || !strcmp(v, "null") || !strcmp(v, "~")) return SDXL_STATUS_OK;
    char where[600];
    snprintf(where, sizeof where, "%s: line %d: %s", d->file, line, path);
    return hint_set(h, hint_key, v, SRC_YAML, where, NULL, d->err);
}

/* The top-level `nonstandard:` block (our extension; see config.h): sizes
 * SGM's format cannot state. Values the shapes determine are cross-checked;
 * the rest become hints at the yaml's precedence. `y_hc` / `y_nh`: the head
 * width / count the SGM keys of this yaml gave (0 if none; at `heads_line`). */
static sdxl_status yaml_nonstandard(ydoc *d, const sdxl_model_config *cfg, hints *h, int y_hc, int y_nh,
                                    int heads_line) {
#define Y_NS "nonstandard."
    const sdxl_unet_config *u = &cfg->unet;
    char path[256];
    long long x;
    sdxl_status st = SDXL_STATUS_OK;
    int line = 0, r;
    static const char *const simple[][2] = {
        {Y_NS "unet_norm_num_groups", "unet.norm_num_groups"},
        {Y_NS "unet_upcast_attention", "unet.upcast_attention"},
        {Y_NS "vae_norm_num_groups", "vae.norm_num_groups"},
        {Y_NS "vae_shift_factor", "shift_factor"},
    };
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++)
        TRY(y_hint(d, h, simple[i][0], simple[i][1]));

    /* scaling factor: must agree with the SGM key model.params.scale_factor */
    const char *vs = sdxl__yaml_get(d->y, Y_NS "vae_scaling_factor", &line);
    if (vs && *vs) {
        int sline = 0;
        const char *sf = sdxl__yaml_get(d->y, "model.params.scale_factor", &sline);
        double a, b;
        if (sf && *sf && parse_double(sf, &a) && parse_double(vs, &b) && a != b)
            return sdxl_error_set(d->err, SDXL_STATUS_BAD_INPUT,
                                  "%s: line %d: " Y_NS "vae_scaling_factor is %.17g but line %d: "
                                  "model.params.scale_factor is %.17g",
                                  d->file, line, b, sline, a);
        TRY(y_hint(d, h, Y_NS "vae_scaling_factor", "scaling_factor"));
    }

    TRY(y_check(d, Y_NS "unet_addition_time_embed_dim", u->addition_time_embed_dim,
                "(label_emb.0.0.weight inputs - text encoder 2 projection) / 6"));

    /* heads per level: the levels with attention must agree with the SGM keys */
    int L = u->num_levels;
    int n = sdxl__yaml_seq_len(d->y, Y_NS "unet_heads_per_level");
    const char *one = sdxl__yaml_get(d->y, Y_NS "unet_heads_per_level", &line);
    if (n || (one && *one)) {
        if (n && n != L) return y_mismatch(d, Y_NS "unet_heads_per_level (length)", n, L, "UNet levels");
        int heads[SDXL_MAX_LEVELS];
        for (int l = 0; l < L; l++) {
            if (n)
                snprintf(path, sizeof path, Y_NS "unet_heads_per_level.%d", l);
            else
                snprintf(path, sizeof path, Y_NS "unet_heads_per_level");
            r = y_int(d, path, 1, SDXL_CFG_MAX_CHANNELS, &x, &st);
            if (r < 0) return st;
            if (!r)
                return sdxl_error_set(d->err, SDXL_STATUS_BAD_INPUT, "%s: %s: missing value", d->file, path);
            heads[l] = (int)x;
            bool attn = u->down_has_attn[l] || u->up_has_attn[L - 1 - l] || l == L - 1;
            int c = u->block_out_channels[l];
            int want = y_hc ? c / y_hc : y_nh;
            if (attn && (y_hc || y_nh) && want != heads[l]) {
                sdxl__yaml_get(d->y, path, &line);
                return sdxl_error_set(
                    d->err, SDXL_STATUS_BAD_INPUT,
                    "%s: line %d: %s is %d but line %d: %s gives %d heads for the %d channels "
                    "of UNet level %d",
                    d->file, line, path, heads[l], heads_line, y_hc ? "num_head_channels" : "num_heads", want,
                    c, l);
            }
        }
        h->n_heads = L, h->head_channels = 0, h->heads_src = SRC_YAML;
        memcpy(h->heads, heads, sizeof heads);
    }

    /* the text encoders' configs (transformers' CLIPTextConfig names) */
    for (int k = 0; k < 2; k++) {
        const sdxl_te_config *t = &cfg->te[k];
        const char *base = k ? Y_NS "text_encoder_2." : Y_NS "text_encoder.";
        const struct {
            const char *name;
            int value;
            const char *from;
        } shape[] = {
            {"vocab_size", t->vocab_size, "token_embedding.weight"},
            {"hidden_size", t->hidden_size, "token_embedding.weight"},
            {"intermediate_size", t->intermediate_size, "the first MLP's fc1 / c_fc weight"},
            {"num_hidden_layers", t->num_layers, "number of encoder layers"},
            {"max_position_embeddings", t->max_position_embeddings, "position embedding"},
            {"projection_dim", t->projection_dim, "text_projection"},
        };
        for (size_t i = 0; i < sizeof shape / sizeof shape[0]; i++) {
            if (!k && !strcmp(shape[i].name, "projection_dim")) continue; /* TE1 has no projection */
            snprintf(path, sizeof path, "%s%s", base, shape[i].name);
            char what[160];
            snprintf(what, sizeof what, "text encoder %d %s", k + 1, shape[i].from);
            TRY(y_check(d, path, shape[i].value, what));
        }
        static const char *const keys[] = {"num_attention_heads", "hidden_act",   "layer_norm_eps",
                                           "bos_token_id",        "eos_token_id", "pad_token_id",
                                           "hidden_state_index"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            char hk[64];
            snprintf(path, sizeof path, "%s%s", base, keys[i]);
            snprintf(hk, sizeof hk, "te%d.%s", k + 1, keys[i]);
            TRY(y_hint(d, h, path, hk));
        }
    }
    return SDXL_STATUS_OK;
#undef Y_NS
}

/* Read the yaml's hints into h and cross-check its shape-determined values
 * against the inferred config. */
static sdxl_status yaml_apply(ydoc *d, const sdxl_model_config *cfg, hints *h) {
    const sdxl_unet_config *u = &cfg->unet;
    const sdxl_vae_config *v = &cfg->vae;
    char path[256];
    long long x;
    double dv;
    sdxl_status st = SDXL_STATUS_OK;
    int line = 0, r;

    const char *sf = sdxl__yaml_get(d->y, "model.params.scale_factor", &line);
    if (sf && *sf) {
        if (!parse_double(sf, &dv) || !(dv > 0))
            return sdxl_error_set(d->err, SDXL_STATUS_BAD_INPUT,
                                  "%s: line %d: scale_factor \"%.40s\" is not a positive number", d->file,
                                  line, sf);
        h->has_scaling = true, h->scaling = dv;
    }
    /* SGM UNetModel: num_head_channels (default -1) wins when positive, else num_heads */
    int y_hc = 0, y_nh = 0, heads_line = 0;
    r = y_int(d, Y_NET "num_head_channels", -1, SDXL_CFG_MAX_CHANNELS, &x, &st);
    if (r < 0) return st;
    if (r && x > 0) {
        h->head_channels = y_hc = (int)x, h->n_heads = 0, h->heads_src = SRC_YAML;
        sdxl__yaml_get(d->y, Y_NET "num_head_channels", &heads_line);
    } else if (!r || x == -1) {
        r = y_int(d, Y_NET "num_heads", 1, SDXL_CFG_MAX_CHANNELS, &x, &st);
        if (r < 0) return st;
        if (r) {
            h->n_heads = 1, h->heads[0] = y_nh = (int)x, h->head_channels = 0, h->heads_src = SRC_YAML;
            sdxl__yaml_get(d->y, Y_NET "num_heads", &heads_line);
        }
    } else {
        return sdxl_error_set(d->err, SDXL_STATUS_BAD_INPUT,
                              "%s: num_head_channels %lld is neither positive nor -1", d->file, x);
    }

    TRY(y_check(d, Y_NET "model_channels", u->block_out_channels[0], "input_blocks.0.0.weight"));
    TRY(y_check(d, Y_NET "in_channels", u->in_channels, "input_blocks.0.0.weight"));
    TRY(y_check(d, Y_NET "out_channels", u->out_channels, "out.2.weight"));
    TRY(y_check(d, Y_NET "context_dim", u->cross_attention_dim, "attn2.to_k.weight"));
    TRY(y_check(d, Y_NET "adm_in_channels", u->projection_class_embeddings_input_dim,
                "label_emb.0.0.weight"));
    TRY(y_check(d, Y_NET "transformer_depth_middle", u->mid_transformer_layers,
                "middle_block.1.transformer_blocks.*"));
    int n = sdxl__yaml_seq_len(d->y, Y_NET "channel_mult");
    if (n && n != u->num_levels)
        return y_mismatch(d, Y_NET "channel_mult (length)", n, u->num_levels, "UNet levels");
    for (int l = 0; l < n; l++) {
        snprintf(path, sizeof path, Y_NET "channel_mult.%d", l);
        r = y_int(d, path, 1, SDXL_CFG_MAX_CHANNELS, &x, &st);
        if (r < 0) return st;
        if (r && x * u->block_out_channels[0] != u->block_out_channels[l])
            return y_mismatch(d, path, x * u->block_out_channels[0], u->block_out_channels[l],
                              "channels = channel_mult x model_channels vs out_layers.3.weight");
    }
    n = sdxl__yaml_seq_len(d->y, Y_NET "num_res_blocks");
    if (n) {
        for (int l = 0; l < n; l++) {
            snprintf(path, sizeof path, Y_NET "num_res_blocks.%d", l);
            TRY(y_check(d, path, u->layers_per_block, "number of input_blocks"));
        }
    } else {
        TRY(y_check(d, Y_NET "num_res_blocks", u->layers_per_block, "number of input_blocks"));
    }
    n = sdxl__yaml_seq_len(d->y, Y_NET "transformer_depth");
    if (n) {
        if (n != u->num_levels)
            return y_mismatch(d, Y_NET "transformer_depth (length)", n, u->num_levels, "UNet levels");
        for (int l = 0; l < n; l++) {
            if (!u->down_has_attn[l]) continue; /* the value of a level without attention is unused */
            snprintf(path, sizeof path, Y_NET "transformer_depth.%d", l);
            TRY(y_check(d, path, u->down_transformer_layers[l], "transformer_blocks.* at that level"));
        }
    } else {
        for (int l = 0; l < u->num_levels; l++) {
            if (!u->down_has_attn[l]) continue;
            TRY(y_check(d, Y_NET "transformer_depth", u->down_transformer_layers[l], "transformer_blocks.*"));
        }
    }
    const char *lin = sdxl__yaml_get(d->y, Y_NET "use_linear_in_transformer", &line);
    if (lin && *lin) {
        bool yl = !strcmp(lin, "true") || !strcmp(lin, "True");
        if (yl != u->use_linear_projection)
            return sdxl_error_set(d->err, SDXL_STATUS_BAD_INPUT,
                                  "%s: line %d: use_linear_in_transformer is %s but proj_in.weight is %s",
                                  d->file, line, lin,
                                  u->use_linear_projection ? "a Linear [C,C]" : "a 1x1 conv");
    }

    /* VAE ddconfig */
    TRY(y_check(d, Y_DD "ch", v->block_out_channels[0], "encoder.down.0.block.0.conv1.weight"));
    TRY(y_check(d, Y_DD "num_res_blocks", v->layers_per_block, "encoder.down.0.block.*"));
    TRY(y_check(d, Y_DD "z_channels", v->latent_channels, "decoder.conv_in.weight"));
    TRY(y_check(d, Y_DD "in_channels", v->in_channels, "encoder.conv_in.weight"));
    TRY(y_check(d, Y_DD "out_ch", v->out_channels, "decoder.conv_out.weight"));
    n = sdxl__yaml_seq_len(d->y, Y_DD "ch_mult");
    if (n && n != v->num_levels)
        return y_mismatch(d, Y_DD "ch_mult (length)", n, v->num_levels, "VAE levels");
    for (int l = 0; l < n; l++) {
        snprintf(path, sizeof path, Y_DD "ch_mult.%d", l);
        r = y_int(d, path, 1, SDXL_CFG_MAX_CHANNELS, &x, &st);
        if (r < 0) return st;
        if (r && x * v->block_out_channels[0] != v->block_out_channels[l])
            return y_mismatch(d, path, x * v->block_out_channels[0], v->block_out_channels[l],
                              "channels = ch_mult x ch vs encoder.down.*.block.0.conv1.weight");
    }

    /* conditioner: the two text encoders and the time-id embedders */
    int ne = sdxl__yaml_seq_len(d->y, Y_EMB);
    for (int i = 0; i < ne; i++) {
        const char *target = sdxl__yaml_getf(d->y, NULL, Y_EMB ".%d.target", i);
        if (!target) continue;
        int k = -1;
        if (strstr(target, "FrozenCLIPEmbedder") && !strstr(target, "OpenCLIP"))
            k = 0;
        else if (strstr(target, "FrozenOpenCLIPEmbedder"))
            k = 1;
        if (k >= 0) {
            const char *layer = sdxl__yaml_getf(d->y, NULL, Y_EMB ".%d.params.layer", i);
            snprintf(path, sizeof path, Y_EMB ".%d.params.layer_idx", i);
            r = y_int(d, path, 0, SDXL_CFG_MAX_TE_LAYERS, &x, &st);
            if (r < 0) return st;
            if (layer && !strcmp(layer, "penultimate")) {
                h->has_hsi[k] = true, h->hsi[k] = cfg->te[k].num_layers - 1;
            } else if (layer && !strcmp(layer, "hidden") && r) {
                h->has_hsi[k] = true, h->hsi[k] = (int)x;
            }
            /* extension keys (not SGM's): the activation and heads of a
             * non-standard text tower */
            const char *act = sdxl__yaml_getf(d->y, &line, Y_EMB ".%d.params.hidden_act", i);
            if (act && *act) {
                char key[32];
                snprintf(key, sizeof key, "te%d.hidden_act", k + 1);
                char where[300];
                snprintf(where, sizeof where, "%s: line %d", d->file, line);
                TRY(hint_set(h, key, act, SRC_YAML, where, NULL, d->err));
            }
            snprintf(path, sizeof path, Y_EMB ".%d.params.num_attention_heads", i);
            r = y_int(d, path, 1, SDXL_CFG_MAX_TE_HIDDEN, &x, &st);
            if (r < 0) return st;
            if (r) h->te_heads[k] = (int)x;
        } else if (strstr(target, "ConcatTimestepEmbedderND")) {
            snprintf(path, sizeof path, Y_EMB ".%d.params.outdim", i);
            TRY(y_check(d, path, u->addition_time_embed_dim,
                        "(adm_in_channels - text encoder 2 projection) / 6"));
        }
    }
    return yaml_nonstandard(d, cfg, h, y_hc, y_nh, heads_line);
}

bool sdxl_model_config_sidecar_path(const char *ckpt, char *buf, size_t cap) {
    if (!ckpt || !buf || !cap) return false;
    const char *slash = strrchr(ckpt, '/');
    const char *dot = strrchr(ckpt, '.');
    size_t stem = (dot && (!slash || dot > slash + 1)) ? (size_t)(dot - ckpt) : strlen(ckpt);
    if (stem + 6 > cap) return false;
    memcpy(buf, ckpt, stem);
    memcpy(buf + stem, ".yaml", 6);
    return true;
}

sdxl_status sdxl_model_config_infer_sgm(const sdxl_st_file *f, const char *yaml_path, const char *const *kv,
                                        sdxl_model_config *cfg, sdxl_error *err) {
    if (!f || !cfg)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_model_config_infer_sgm: NULL argument");
    memset(cfg, 0, sizeof *cfg);
    sgm s = {f, sdxl_st_path(f), err};
    sdxl_status st;
    hints h;
    memset(&h, 0, sizeof h);
    sdxl__yaml *y = NULL;

    if ((st = infer_te1(&s, &cfg->te[0])) || (st = infer_te2(&s, &cfg->te[1])) ||
        (st = infer_unet(&s, &cfg->unet)) || (st = infer_vae(&s, &cfg->vae)))
        goto fail;
    for (int k = 0; k < 2; k++) {
        if (cfg->te[k].num_layers < 1) {
            st = sbad(&s, "text encoder %d has no layers", k + 1);
            goto fail;
        }
        te_defaults(&cfg->te[k]);
    }
    {
        sdxl_unet_config *u = &cfg->unet;
        int rest = u->projection_class_embeddings_input_dim - cfg->te[1].projection_dim;
        if (rest <= 0 || rest % u->num_time_ids || (rest / u->num_time_ids) % 2) {
            st = sbad(
                &s,
                "label_emb.0.0.weight takes %d inputs; minus text encoder 2's projection %d that is not 6 "
                "even-width time-id embeddings",
                u->projection_class_embeddings_input_dim, cfg->te[1].projection_dim);
            goto fail;
        }
        u->addition_time_embed_dim = rest / u->num_time_ids;
    }
    cfg->pipeline.force_zeros_for_empty_prompt = true;

    /* metadata < yaml < caller */
    for (size_t i = 0; i < sdxl_st_metadata_count(f); i++) {
        const char *k, *v;
        if (!sdxl_st_metadata_at(f, i, &k, &v)) break;
        char where[600];
        snprintf(where, sizeof where, "%s: __metadata__", s.file);
        bool known;
        if ((st = hint_set(&h, k, v, SRC_METADATA, where, &known, err))) goto fail;
    }
    if (yaml_path) {
        if ((st = sdxl__yaml_load(yaml_path, &y, err))) goto fail;
        ydoc d = {y, yaml_path, err};
        if ((st = yaml_apply(&d, cfg, &h))) goto fail;
        SDXL_LOG_D("%s: read sidecar config %s", s.file, yaml_path);
    }
    if ((st = hints_from_kv(&h, kv, err))) goto fail;
    if (!h.head_channels && !h.n_heads) h.head_channels = 64; /* SDXL's head width */
    if ((st = hints_apply(cfg, &h, s.file, err))) goto fail;
    for (int k = 0; k < 2; k++) {
        if (cfg->te[k].hidden_size % cfg->te[k].num_heads) {
            st = sbad(
                &s,
                "text encoder %d: width %d is not divisible by %d heads; give the head count with the hint "
                "te%d.num_attention_heads",
                k + 1, cfg->te[k].hidden_size, cfg->te[k].num_heads, k + 1);
            goto fail;
        }
    }
    cfg->scheduler_json = sdxl_strdup(sdxl_model_config_default_scheduler_json());
    if (!cfg->scheduler_json) {
        st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", s.file);
        goto fail;
    }
    cfg->scheduler_is_default = true;
    if ((st = sdxl_model_config_validate(cfg, s.file, err))) goto fail;
    sdxl__yaml_free(y);
    return SDXL_STATUS_OK;
fail:
    sdxl__yaml_free(y);
    sdxl_model_config_clear(cfg);
    return st;
}

/* ---- validation ---------------------------------------------------------------- */

#define VBAD(...) sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, __VA_ARGS__)

static bool in_range(long long v, long long lo, long long hi) {
    return v >= lo && v <= hi;
}

sdxl_status sdxl_model_config_validate(const sdxl_model_config *cfg, const char *where, sdxl_error *err) {
    if (!cfg) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_model_config_validate: cfg is NULL");
    if (!where) where = "model config";
    const sdxl_unet_config *u = &cfg->unet;
    const sdxl_vae_config *v = &cfg->vae;
    int L = u->num_levels;
    if (!in_range(L, 1, SDXL_MAX_LEVELS))
        return VBAD("%s: unet: %d levels (1..%d)", where, L, SDXL_MAX_LEVELS);
    if (!in_range(u->layers_per_block, 1, SDXL_CFG_MAX_LAYERS_PER_BLOCK))
        return VBAD("%s: unet: layers_per_block %d (1..%d)", where, u->layers_per_block,
                    SDXL_CFG_MAX_LAYERS_PER_BLOCK);
    if (!in_range(u->in_channels, 1, SDXL_CFG_MAX_CHANNELS) ||
        !in_range(u->out_channels, 1, SDXL_CFG_MAX_CHANNELS))
        return VBAD("%s: unet: in/out channels %d/%d (1..%d)", where, u->in_channels, u->out_channels,
                    SDXL_CFG_MAX_CHANNELS);
    int g = u->norm_num_groups;
    if (!in_range(g, 1, SDXL_CFG_MAX_CHANNELS)) return VBAD("%s: unet: norm_num_groups %d", where, g);
    for (int l = 0; l < L; l++) {
        int c = u->block_out_channels[l];
        if (!in_range(c, 1, SDXL_CFG_MAX_CHANNELS))
            return VBAD("%s: unet: block_out_channels[%d] = %d (1..%d)", where, l, c, SDXL_CFG_MAX_CHANNELS);
        if (c % g)
            return VBAD("%s: unet: norm_num_groups %d does not divide block_out_channels[%d] = %d", where, g,
                        l, c);
        if (!in_range(u->down_transformer_layers[l], 0, SDXL_CFG_MAX_TRANSFORMER_LAYERS) ||
            !in_range(u->up_transformer_layers[l], 0, SDXL_CFG_MAX_TRANSFORMER_LAYERS))
            return VBAD("%s: unet: transformer layers at level %d out of range (0..%d)", where, l,
                        SDXL_CFG_MAX_TRANSFORMER_LAYERS);
        if (u->down_has_attn[l] != (u->down_transformer_layers[l] > 0))
            return VBAD("%s: unet: down block %d: attention and transformer depth disagree", where, l);
        if (u->up_has_attn[l] != (u->up_transformer_layers[l] > 0))
            return VBAD("%s: unet: up block %d: attention and transformer depth disagree", where, l);
        if (u->down_has_attn[l] && (u->down_num_heads[l] < 1 || c % u->down_num_heads[l]))
            return VBAD("%s: unet: level %d: %d heads do not divide %d channels", where, l,
                        u->down_num_heads[l], c);
        int cu = u->block_out_channels[L - 1 - l];
        if (u->up_has_attn[l] && (u->up_num_heads[l] < 1 || cu % u->up_num_heads[l]))
            return VBAD("%s: unet: up block %d: %d heads do not divide %d channels", where, l,
                        u->up_num_heads[l], cu);
    }
    /* every up-block resnet normalises (previous output + skip) channels */
    for (int i = 0; i < L; i++) {
        int out = u->block_out_channels[L - 1 - i];
        int prev = i ? u->block_out_channels[L - i] : u->block_out_channels[L - 1];
        int in = u->block_out_channels[L - 2 - i < 0 ? 0 : L - 2 - i];
        for (int j = 0; j <= u->layers_per_block; j++) {
            int skip = j == u->layers_per_block ? in : out;
            int rin = (j == 0 ? prev : out) + skip;
            if (rin % g)
                return VBAD(
                    "%s: unet: norm_num_groups %d does not divide the %d input channels of up block %d "
                    "resnet %d",
                    where, g, rin, i, j);
        }
    }
    int cl = u->block_out_channels[L - 1];
    if (!in_range(u->mid_transformer_layers, 1, SDXL_CFG_MAX_TRANSFORMER_LAYERS))
        return VBAD("%s: unet: mid block transformer layers %d (1..%d)", where, u->mid_transformer_layers,
                    SDXL_CFG_MAX_TRANSFORMER_LAYERS);
    if (u->mid_num_heads < 1 || cl % u->mid_num_heads)
        return VBAD("%s: unet: mid block: %d heads do not divide %d channels", where, u->mid_num_heads, cl);
    if (!in_range(u->cross_attention_dim, 1, SDXL_CFG_MAX_CHANNELS))
        return VBAD("%s: unet: cross_attention_dim %d", where, u->cross_attention_dim);
    if (!in_range(u->time_embed_dim, 1, 4 * SDXL_CFG_MAX_CHANNELS) ||
        u->time_proj_dim != u->block_out_channels[0] || u->time_proj_dim % 2)
        return VBAD("%s: unet: time embedding %d -> %d", where, u->time_proj_dim, u->time_embed_dim);
    if (!in_range(u->addition_time_embed_dim, 2, SDXL_CFG_MAX_CHANNELS) || u->addition_time_embed_dim % 2 ||
        u->num_time_ids != 6 || u->ff_mult != 4)
        return VBAD("%s: unet: addition_time_embed_dim %d", where, u->addition_time_embed_dim);
    if (!(u->norm_eps > 0 && u->norm_eps < 0.5)) return VBAD("%s: unet: norm_eps %g", where, u->norm_eps);
    if (u->conv_in_kernel < 1 || u->conv_in_kernel % 2 == 0 || u->conv_in_kernel > 15 ||
        u->conv_out_kernel < 1 || u->conv_out_kernel % 2 == 0 || u->conv_out_kernel > 15)
        return VBAD("%s: unet: conv kernels %d/%d (odd, 1..15)", where, u->conv_in_kernel,
                    u->conv_out_kernel);
    if (!in_range(u->sample_size, 1, SDXL_CFG_MAX_SAMPLE_SIZE))
        return VBAD("%s: unet: sample_size %d", where, u->sample_size);

    int VL = v->num_levels;
    if (!in_range(VL, 1, SDXL_MAX_LEVELS))
        return VBAD("%s: vae: %d levels (1..%d)", where, VL, SDXL_MAX_LEVELS);
    if (!in_range(v->layers_per_block, 1, SDXL_CFG_MAX_LAYERS_PER_BLOCK))
        return VBAD("%s: vae: layers_per_block %d", where, v->layers_per_block);
    if (!in_range(v->latent_channels, 1, SDXL_MAX_LATENT_CHANNELS) ||
        !in_range(v->in_channels, 1, SDXL_CFG_MAX_CHANNELS) ||
        !in_range(v->out_channels, 1, SDXL_CFG_MAX_CHANNELS))
        return VBAD("%s: vae: channels in %d, out %d, latent %d", where, v->in_channels, v->out_channels,
                    v->latent_channels);
    if (!in_range(v->norm_num_groups, 1, SDXL_CFG_MAX_CHANNELS))
        return VBAD("%s: vae: norm_num_groups %d", where, v->norm_num_groups);
    for (int l = 0; l < VL; l++) {
        int c = v->block_out_channels[l];
        if (!in_range(c, 1, SDXL_CFG_MAX_CHANNELS))
            return VBAD("%s: vae: block_out_channels[%d] = %d", where, l, c);
        if (c % v->norm_num_groups)
            return VBAD("%s: vae: norm_num_groups %d does not divide block_out_channels[%d] = %d", where,
                        v->norm_num_groups, l, c);
    }
    if (!(v->scaling_factor > 0) || !isfinite(v->scaling_factor))
        return VBAD("%s: vae: scaling_factor %g", where, v->scaling_factor);

    for (int k = 0; k < 2; k++) {
        const sdxl_te_config *t = &cfg->te[k];
        if (!in_range(t->hidden_size, 1, SDXL_CFG_MAX_TE_HIDDEN) ||
            !in_range(t->num_layers, 1, SDXL_CFG_MAX_TE_LAYERS) ||
            !in_range(t->intermediate_size, 1, SDXL_CFG_MAX_TE_INTERMEDIATE) ||
            !in_range(t->vocab_size, 1, SDXL_CFG_MAX_VOCAB) ||
            !in_range(t->max_position_embeddings, 1, SDXL_CFG_MAX_POSITIONS))
            return VBAD(
                "%s: text encoder %d: sizes out of range (hidden %d, layers %d, intermediate %d, vocab %d, "
                "positions %d)",
                where, k + 1, t->hidden_size, t->num_layers, t->intermediate_size, t->vocab_size,
                t->max_position_embeddings);
        if (t->num_heads < 1 || t->hidden_size % t->num_heads)
            return VBAD("%s: text encoder %d: %d heads do not divide width %d", where, k + 1, t->num_heads,
                        t->hidden_size);
        if (t->with_projection && !in_range(t->projection_dim, 1, SDXL_CFG_MAX_TE_HIDDEN))
            return VBAD("%s: text encoder %d: projection_dim %d", where, k + 1, t->projection_dim);
        if (!in_range(t->hidden_state_index, 0, t->num_layers))
            return VBAD("%s: text encoder %d: hidden state %d does not exist (0..%d)", where, k + 1,
                        t->hidden_state_index, t->num_layers);
        if (!(t->layer_norm_eps > 0 && t->layer_norm_eps < 0.5))
            return VBAD("%s: text encoder %d: layer_norm_eps %g", where, k + 1, t->layer_norm_eps);
        if ((unsigned)t->hidden_act >= SDXL_ACT_COUNT_ || t->hidden_act == SDXL_ACT_SILU)
            return VBAD("%s: text encoder %d: activation %s", where, k + 1, sdxl_act_name(t->hidden_act));
    }
    if (!cfg->te[1].with_projection) return VBAD("%s: text encoder 2 must have a text_projection", where);
    if (u->cross_attention_dim != cfg->te[0].hidden_size + cfg->te[1].hidden_size)
        return VBAD("%s: unet cross_attention_dim %d != text encoder widths %d + %d (SDXL concatenates both "
                    "penultimate states)",
                    where, u->cross_attention_dim, cfg->te[0].hidden_size, cfg->te[1].hidden_size);
    if (u->projection_class_embeddings_input_dim !=
        u->num_time_ids * u->addition_time_embed_dim + cfg->te[1].projection_dim)
        return VBAD("%s: unet projection_class_embeddings_input_dim %d != %d time ids x %d + text encoder 2 "
                    "projection %d",
                    where, u->projection_class_embeddings_input_dim, u->num_time_ids,
                    u->addition_time_embed_dim, cfg->te[1].projection_dim);
    if (u->in_channels != v->latent_channels || u->out_channels != v->latent_channels)
        return VBAD("%s: unet in/out channels %d/%d != vae latent_channels %d", where, u->in_channels,
                    u->out_channels, v->latent_channels);
    return SDXL_STATUS_OK;
}

/* ---- comparison ------------------------------------------------------------- */

bool sdxl_model_config_equal(const sdxl_model_config *a, const sdxl_model_config *b, char *what, size_t cap) {
#define DIFF(name)                                                                                           \
    do {                                                                                                     \
        if (what && cap) snprintf(what, cap, "%s", name);                                                    \
        return false;                                                                                        \
    } while (0)
#define EQ(field)                                                                                            \
    do {                                                                                                     \
        if (a->field != b->field) DIFF(#field);                                                              \
    } while (0)
    if (!a || !b) DIFF("(NULL)");
    EQ(unet.in_channels);
    EQ(unet.out_channels);
    EQ(unet.num_levels);
    EQ(unet.layers_per_block);
    for (int l = 0; l < SDXL_MAX_LEVELS && l < a->unet.num_levels; l++) {
        EQ(unet.block_out_channels[l]);
        EQ(unet.down_has_attn[l]);
        EQ(unet.down_transformer_layers[l]);
        EQ(unet.up_has_attn[l]);
        EQ(unet.up_transformer_layers[l]);
        if (a->unet.down_has_attn[l]) EQ(unet.down_num_heads[l]);
        if (a->unet.up_has_attn[l]) EQ(unet.up_num_heads[l]);
    }
    EQ(unet.mid_transformer_layers);
    EQ(unet.mid_num_heads);
    EQ(unet.cross_attention_dim);
    EQ(unet.use_linear_projection);
    EQ(unet.upcast_attention);
    EQ(unet.ff_mult);
    EQ(unet.time_proj_dim);
    EQ(unet.time_embed_dim);
    EQ(unet.flip_sin_to_cos);
    EQ(unet.freq_shift);
    EQ(unet.addition_time_embed_dim);
    EQ(unet.num_time_ids);
    EQ(unet.projection_class_embeddings_input_dim);
    EQ(unet.norm_num_groups);
    EQ(unet.norm_eps);
    EQ(unet.conv_in_kernel);
    EQ(unet.conv_out_kernel);
    EQ(unet.act_fn);
    EQ(vae.in_channels);
    EQ(vae.out_channels);
    EQ(vae.latent_channels);
    EQ(vae.num_levels);
    for (int l = 0; l < SDXL_MAX_LEVELS && l < a->vae.num_levels; l++)
        EQ(vae.block_out_channels[l]);
    EQ(vae.layers_per_block);
    EQ(vae.norm_num_groups);
    EQ(vae.norm_eps);
    EQ(vae.scaling_factor);
    EQ(vae.has_shift_factor);
    if (a->vae.has_shift_factor) EQ(vae.shift_factor);
    EQ(vae.has_latents_mean_std);
    if (a->vae.has_latents_mean_std) {
        for (int c = 0; c < a->vae.latent_channels && c < SDXL_MAX_LATENT_CHANNELS; c++) {
            EQ(vae.latents_mean[c]);
            EQ(vae.latents_std[c]);
        }
    }
    EQ(vae.force_upcast);
    EQ(vae.mid_block_add_attention);
    EQ(vae.act_fn);
    for (int k = 0; k < 2; k++) {
        EQ(te[k].hidden_size);
        EQ(te[k].intermediate_size);
        EQ(te[k].num_layers);
        EQ(te[k].num_heads);
        EQ(te[k].max_position_embeddings);
        EQ(te[k].vocab_size);
        EQ(te[k].hidden_act);
        EQ(te[k].layer_norm_eps);
        EQ(te[k].with_projection);
        if (a->te[k].with_projection) EQ(te[k].projection_dim);
        EQ(te[k].bos_token_id);
        EQ(te[k].eos_token_id);
        EQ(te[k].pad_token_id);
        EQ(te[k].legacy_pooling);
        EQ(te[k].hidden_state_index);
    }
    EQ(pipeline.force_zeros_for_empty_prompt);
    if (what && cap) what[0] = 0;
    return true;
#undef EQ
#undef DIFF
}
