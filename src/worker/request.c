/* request.c - the seed's request JSON, the worker config, the result JSON
 * (see request.h). */
#include "worker/request.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "image/jpeg.h"
#include "image/png.h"
#include "io/base64.h"
#include "io/json.h"
#include "sample/scheduler.h"

#define DEFAULT_MAX_N_ITER 100
#define DEFAULT_MAX_INIT_IMAGE_BYTES ((size_t)64 << 20)
#define MAX_TIMEOUT_S 86400.0
#define MAX_SEED 9007199254740992.0 /* 2^53: beyond it JSON numbers (doubles) cannot say a seed exactly */

sdxl_request_limits sdxl_request_default_limits(void) {
    return (sdxl_request_limits){.max_side = 4096,
                                 .max_steps = 1000,
                                 .max_batch = 64,
                                 .max_prompt = 65536,
                                 .max_n_iter = DEFAULT_MAX_N_ITER,
                                 .max_init_image_bytes = DEFAULT_MAX_INIT_IMAGE_BYTES};
}

/* ---- the fields the parser knows (the JSON Schema's properties, checked by a test) ---- */

static const char *const TOP_FIELDS[] = {
    "request_id", "prompt",      "negative_prompt", "prompt_2",      "negative_prompt_2", "width",
    "height",     "steps",       "guidance_scale",  "guidance_rescale", "scheduler",      "seed",
    "rng",        "batch_size",  "n_iter",          "init_image",    "strength",          "prompt_syntax",
    "long_prompts", "output",    "output_dir",      "model",         "timeout_s",         "lora",
    NULL};
static const char *const LORA_FIELDS[] = {"enabled", "global_weight", "models", NULL};
static const char *const LORA_MODEL_FIELDS[] = {"name", "weight", "category", "unet_weight", "te_weight", NULL};

const char *const *sdxl_request_field_names(const char *object) {
    if (!object || !*object) return TOP_FIELDS;
    if (!strcmp(object, "lora")) return LORA_FIELDS;
    if (!strcmp(object, "lora.models[]")) return LORA_MODEL_FIELDS;
    return NULL;
}

/* ---- errors: a status, a message "<path>: <why>", and for requests a code ---------- */

typedef struct {
    sdxl_error *err;
    sdxl_request_error *rerr; /* NULL: the caller wants no code (the worker config) */
} ectx;

static sdxl_status fail(ectx *e, sdxl_status st, const char *code, const char *path, const char *fmt, va_list ap) {
    char why[400];
    vsnprintf(why, sizeof why, fmt, ap);
    if (e->rerr) {
        snprintf(e->rerr->code, sizeof e->rerr->code, "%s", code);
        snprintf(e->rerr->field, sizeof e->rerr->field, "%s", path);
    }
    return sdxl_error_set(e->err, st, "%s: %s", *path ? path : "request", why);
}

static sdxl_status bad(ectx *e, const char *code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static sdxl_status bad(ectx *e, const char *code, const char *path, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sdxl_status st = fail(e, SDXL_STATUS_BAD_INPUT, code, path, fmt, ap);
    va_end(ap);
    return st;
}

static sdxl_status oom(ectx *e, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static sdxl_status oom(ectx *e, const char *path, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sdxl_status st = fail(e, SDXL_STATUS_OUT_OF_MEMORY, SDXL_REQUEST_ERR_OUT_OF_MEMORY, path, fmt, ap);
    va_end(ap);
    return st;
}

/* ---- field access with the field's path in every message ---------------------- */

/* Every member of obj must be in `known` (NULL-terminated), once. Linear in
 * the members (a bit per known name), whatever the input. */
static sdxl_status only_known(ectx *e, const cJSON *obj, const char *prefix, const char *const *known) {
    unsigned long long seen = 0;
    for (const cJSON *it = obj->child; it; it = it->next) {
        int k = -1;
        for (int i = 0; known[i] && k < 0; i++)
            if (it->string && strcmp(it->string, known[i]) == 0) k = i;
        char path[300];
        snprintf(path, sizeof path, "%s%.200s", prefix, it->string ? it->string : "?");
        if (k < 0) return bad(e, SDXL_REQUEST_ERR_UNKNOWN_FIELD, path, "unknown field");
        if (seen >> k & 1) return bad(e, SDXL_REQUEST_ERR_INVALID_JSON, path, "given twice");
        seen |= 1ull << k;
    }
    return SDXL_STATUS_OK;
}

/* obj[key], or NULL when absent or JSON null (optional fields: null = not given) */
static const cJSON *field(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static sdxl_status get_num(ectx *e, const cJSON *obj, const char *key, const char *prefix, double lo, double hi,
                           bool integer, double *out, bool *present) {
    const cJSON *v = field(obj, key);
    if (present) *present = v != NULL;
    if (!v) return SDXL_STATUS_OK;
    char path[300];
    snprintf(path, sizeof path, "%s%s", prefix, key);
    if (!cJSON_IsNumber(v))
        return bad(e, SDXL_REQUEST_ERR_INVALID_TYPE, path, "expected a number, got %s", sdxl_json_type_name(v));
    double d = v->valuedouble;
    if (!isfinite(d)) return bad(e, SDXL_REQUEST_ERR_OUT_OF_RANGE, path, "not a finite number");
    if (integer && d != floor(d))
        return bad(e, SDXL_REQUEST_ERR_INVALID_TYPE, path, "expected an integer, got %g", d);
    if (d < lo || d > hi) return bad(e, SDXL_REQUEST_ERR_OUT_OF_RANGE, path, "%g is out of range [%g, %g]", d, lo, hi);
    *out = d;
    return SDXL_STATUS_OK;
}

static sdxl_status get_str(ectx *e, const cJSON *obj, const char *key, const char *prefix, size_t max,
                           const char **out) {
    const cJSON *v = field(obj, key);
    if (!v) return SDXL_STATUS_OK;
    char path[300];
    snprintf(path, sizeof path, "%s%s", prefix, key);
    if (!cJSON_IsString(v))
        return bad(e, SDXL_REQUEST_ERR_INVALID_TYPE, path, "expected a string, got %s", sdxl_json_type_name(v));
    if (strlen(v->valuestring) > max) return bad(e, SDXL_REQUEST_ERR_OUT_OF_RANGE, path, "longer than %zu bytes", max);
    *out = v->valuestring;
    return SDXL_STATUS_OK;
}

static sdxl_status get_bool(ectx *e, const cJSON *obj, const char *key, const char *prefix, bool *out) {
    const cJSON *v = field(obj, key);
    if (!v) return SDXL_STATUS_OK;
    char path[300];
    snprintf(path, sizeof path, "%s%s", prefix, key);
    if (!cJSON_IsBool(v))
        return bad(e, SDXL_REQUEST_ERR_INVALID_TYPE, path, "expected true or false, got %s", sdxl_json_type_name(v));
    *out = cJSON_IsTrue(v);
    return SDXL_STATUS_OK;
}

/* A string that must be one of two words: *second = (value == b); absent:
 * unchanged. */
static sdxl_status get_choice(ectx *e, const cJSON *obj, const char *key, const char *a, const char *b,
                              bool *second) {
    const char *s = NULL;
    sdxl_status st = get_str(e, obj, key, "", 32, &s);
    if (st) return st;
    if (!s) return SDXL_STATUS_OK;
    if (strcmp(s, a) != 0 && strcmp(s, b) != 0)
        return bad(e, SDXL_REQUEST_ERR_INVALID_VALUE, key, "must be \"%s\" or \"%s\", got \"%s\"", a, b, s);
    *second = strcmp(s, b) == 0;
    return SDXL_STATUS_OK;
}

/* ---- the lora block ------------------------------------------------------------- */

#define MAX_WEIGHT 100.0

static sdxl_status parse_lora(ectx *e, const cJSON *lo, sdxl_lora_spec *spec) {
    memset(spec, 0, sizeof *spec);
    spec->global_weight = 1.0f;
    if (!lo || cJSON_IsNull(lo)) return SDXL_STATUS_OK;
    if (!cJSON_IsObject(lo))
        return bad(e, SDXL_REQUEST_ERR_INVALID_TYPE, "lora", "expected an object, got %s", sdxl_json_type_name(lo));
    sdxl_status st;
    double g = 1.0;
    if ((st = only_known(e, lo, "lora.", LORA_FIELDS)) || (st = get_bool(e, lo, "enabled", "lora.", &spec->enabled)) ||
        (st = get_num(e, lo, "global_weight", "lora.", -MAX_WEIGHT, MAX_WEIGHT, false, &g, NULL)))
        return st;
    spec->global_weight = (float)g;
    const cJSON *models = field(lo, "models");
    if (!models) return SDXL_STATUS_OK;
    if (!cJSON_IsArray(models))
        return bad(e, SDXL_REQUEST_ERR_INVALID_TYPE, "lora.models", "expected a list, got %s",
                   sdxl_json_type_name(models));
    int n = cJSON_GetArraySize(models);
    if (n > SDXL_LORA_MAX_PER_REQUEST)
        return bad(e, SDXL_REQUEST_ERR_OUT_OF_RANGE, "lora.models", "%d entries (at most %d)", n,
                   SDXL_LORA_MAX_PER_REQUEST);
    int i = 0;
    for (const cJSON *m = models->child; m; m = m->next, i++) {
        char pre[64], path[80];
        snprintf(pre, sizeof pre, "lora.models[%d].", i);
        snprintf(path, sizeof path, "lora.models[%d]", i);
        const char *name = NULL, *cat = NULL;
        if (cJSON_IsString(m)) {
            name = m->valuestring;
            if (strlen(name) >= SDXL_LORA_REQUEST_MAX)
                return bad(e, SDXL_REQUEST_ERR_OUT_OF_RANGE, path, "name longer than %d bytes",
                           SDXL_LORA_REQUEST_MAX - 1);
        } else if (cJSON_IsObject(m)) {
            if ((st = only_known(e, m, pre, LORA_MODEL_FIELDS)) ||
                (st = get_str(e, m, "name", pre, SDXL_LORA_REQUEST_MAX - 1, &name)) ||
                (st = get_str(e, m, "category", pre, SDXL_LORA_NAME_MAX - 1, &cat)))
                return st;
            if (!name) return bad(e, SDXL_REQUEST_ERR_MISSING_FIELD, path, "\"name\" is required");
        } else {
            return bad(e, SDXL_REQUEST_ERR_INVALID_TYPE, path, "expected a name or an object, got %s",
                       sdxl_json_type_name(m));
        }
        if (!*name) return bad(e, SDXL_REQUEST_ERR_INVALID_VALUE, path, "empty name");
        sdxl_error aerr = {0};
        if (sdxl_lora_spec_add(spec, name, cat, 1.0f, &aerr))
            return bad(e, SDXL_REQUEST_ERR_INVALID_VALUE, path, "%s", aerr.msg);
        sdxl_lora_entry *le = &spec->entries[spec->n - 1];
        if (cJSON_IsObject(m)) {
            double w = 1.0, uw = 0, tw = 0;
            bool hu = false, ht = false;
            if ((st = get_num(e, m, "weight", pre, -MAX_WEIGHT, MAX_WEIGHT, false, &w, NULL)) ||
                (st = get_num(e, m, "unet_weight", pre, -MAX_WEIGHT, MAX_WEIGHT, false, &uw, &hu)) ||
                (st = get_num(e, m, "te_weight", pre, -MAX_WEIGHT, MAX_WEIGHT, false, &tw, &ht)))
                return st;
            le->weight = (float)w;
            le->has_unet_weight = hu;
            le->unet_weight = (float)uw;
            le->has_te_weight = ht;
            le->te_weight = (float)tw;
        }
    }
    return SDXL_STATUS_OK;
}

/* ---- init_image: base64 (or a data URL) of a PNG or JPEG ------------------------- */

static bool has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

static bool is_png(const uint8_t *b, size_t n) { return n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0; }
static bool is_jpeg(const uint8_t *b, size_t n) { return n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF; }

static sdxl_status parse_init_image(ectx *e, const char *s, const sdxl_request_limits *lim, size_t max_bytes,
                                    sdxl_request *out) {
    static const char *const P = "init_image";
    enum { ANY, PNG, JPEG } want = ANY;
    if (has_prefix(s, "data:")) {
        if (has_prefix(s, "data:image/png;base64,")) {
            want = PNG;
            s += strlen("data:image/png;base64,");
        } else if (has_prefix(s, "data:image/jpeg;base64,")) {
            want = JPEG;
            s += strlen("data:image/jpeg;base64,");
        } else {
            return bad(e, SDXL_REQUEST_ERR_INVALID_IMAGE, P,
                       "unsupported data URL (use data:image/png;base64, or data:image/jpeg;base64,)");
        }
    }
    size_t n = strlen(s), chars = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] != '=' && s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n' && s[i] != '\v' &&
            s[i] != '\f')
            chars++;
    if (chars == 0) return bad(e, SDXL_REQUEST_ERR_INVALID_IMAGE, P, "empty");
    if (chars / 4 * 3 + (chars % 4 ? chars % 4 - 1 : 0) > max_bytes)
        return bad(e, SDXL_REQUEST_ERR_OUT_OF_RANGE, P, "an image file of more than %zu bytes", max_bytes);
    uint8_t *bytes = NULL;
    size_t nb = 0;
    sdxl_error derr = {0};
    sdxl_status st = sdxl_base64_decode_alloc(s, n, max_bytes, &bytes, &nb, &derr);
    if (st == SDXL_STATUS_OUT_OF_MEMORY) return oom(e, P, "%s", derr.msg);
    if (st) return bad(e, SDXL_REQUEST_ERR_INVALID_IMAGE, P, "not valid base64: %s", derr.msg);
    int64_t max_pixels64 = (int64_t)lim->max_side * lim->max_side;
    int max_pixels = max_pixels64 > INT_MAX ? INT_MAX : (int)max_pixels64;
    bool png = is_png(bytes, nb), jpeg = !png && is_jpeg(bytes, nb);
    const char *why = !png && !jpeg           ? "not a PNG or JPEG image"
                      : want == PNG && jpeg  ? "the data URL says image/png but the data is a JPEG"
                      : want == JPEG && png  ? "the data URL says image/jpeg but the data is a PNG"
                                             : NULL;
    if (why) {
        sdxl_free(bytes);
        return bad(e, SDXL_REQUEST_ERR_INVALID_IMAGE, P, "%s", why);
    }
    const char *kind = png ? "PNG" : "JPEG";
    int w = 0, h = 0;
    st = png ? sdxl_png_decode(bytes, nb, max_pixels, &out->init_rgb, &w, &h, &derr)
             : sdxl_jpeg_decode(bytes, nb, max_pixels, &out->init_rgb, &w, &h, &derr);
    sdxl_free(bytes);
    bool too_big = w > lim->max_side || h > lim->max_side || (int64_t)w * h > max_pixels64;
    if (st == SDXL_STATUS_OUT_OF_MEMORY) return oom(e, P, "%s", derr.msg);
    if (st || too_big) {
        sdxl_free(out->init_rgb);
        out->init_rgb = NULL;
        if (too_big)
            return bad(e, SDXL_REQUEST_ERR_OUT_OF_RANGE, P, "a %s of %dx%d; at most %d a side", kind, w, h,
                       lim->max_side);
        return bad(e, SDXL_REQUEST_ERR_INVALID_IMAGE, P, "%s", derr.msg);
    }
    out->init_width = w;
    out->init_height = h;
    if (w < 8 || h < 8)
        return bad(e, SDXL_REQUEST_ERR_OUT_OF_RANGE, P, "a %s of %dx%d; at least 8 a side", kind, w, h);
    if (w % 8 || h % 8)
        return bad(e, SDXL_REQUEST_ERR_INVALID_VALUE, P, "a %s of %dx%d: width and height must be multiples of 8 "
                   "(crop or resize it)", kind, w, h);
    return SDXL_STATUS_OK;
}

/* ---- names and paths ------------------------------------------------------------- */

static sdxl_status check_model(ectx *e, const char *s) {
    for (const char *c = s; *c; c++) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' ||
                  *c == '_' || *c == '-';
        if (!ok)
            return bad(e, SDXL_REQUEST_ERR_INVALID_VALUE, "model",
                       "a model name holds only letters, digits, '.', '_' and '-' (got \"%.64s\")", s);
    }
    if (!strcmp(s, ".") || !strcmp(s, ".."))
        return bad(e, SDXL_REQUEST_ERR_INVALID_VALUE, "model", "\"%s\" is not a model name", s);
    return SDXL_STATUS_OK;
}

/* Relative, no ".." component: the service joins it under its own folder. */
static sdxl_status check_output_dir(ectx *e, const char *s) {
    if (s[0] == '/')
        return bad(e, SDXL_REQUEST_ERR_INVALID_VALUE, "output_dir",
                   "must be relative (it is a folder inside the service's output directory), got \"%.200s\"", s);
    for (const char *c = s; *c;) {
        size_t len = strcspn(c, "/");
        if (len == 2 && c[0] == '.' && c[1] == '.')
            return bad(e, SDXL_REQUEST_ERR_INVALID_VALUE, "output_dir",
                       "must not contain a \"..\" component (it stays inside the service's output directory)");
        c += len;
        while (*c == '/') c++;
    }
    return SDXL_STATUS_OK;
}

/* ---- the request -------------------------------------------------------------------- */

void sdxl_request_free(sdxl_request *r) {
    if (!r) return;
    sdxl_free(r->prompt);
    sdxl_free(r->negative_prompt);
    sdxl_free(r->prompt_2);
    sdxl_free(r->negative_prompt_2);
    sdxl_free(r->init_rgb);
    memset(r, 0, sizeof *r);
}

static char *dup_or_null(const char *s, bool *failed) {
    if (!s) return NULL;
    char *d = sdxl_strdup(s);
    if (!d) *failed = true;
    return d;
}

static sdxl_status parse_object(ectx *e, const cJSON *root, const sdxl_request_limits *lim, sdxl_request *out) {
    if (!cJSON_IsObject(root))
        return bad(e, SDXL_REQUEST_ERR_INVALID_TYPE, "", "expected an object, got %s", sdxl_json_type_name(root));
    const size_t max_n_iter = lim->max_n_iter > 0 ? (size_t)lim->max_n_iter : DEFAULT_MAX_N_ITER;
    const size_t max_bytes = lim->max_init_image_bytes ? lim->max_init_image_bytes : DEFAULT_MAX_INIT_IMAGE_BYTES;
    const char *rid = NULL, *prompt = NULL, *neg = NULL, *p2 = NULL, *neg2 = NULL, *sched = NULL, *odir = NULL,
               *model = NULL, *init = NULL;
    double w = 0, h = 0, steps = 20, cfg = 5.0, rescale = 0, seed = -1, batch = 1, n_iter = 1,
           strength = 0.3, timeout = 0;
    bool has_w = false, has_h = false, has_strength = false;
    sdxl_status st;
    if ((st = only_known(e, root, "", TOP_FIELDS)) || (st = get_str(e, root, "request_id", "", 127, &rid)) ||
        (st = get_str(e, root, "prompt", "", lim->max_prompt, &prompt)) ||
        (st = get_str(e, root, "negative_prompt", "", lim->max_prompt, &neg)) ||
        (st = get_str(e, root, "prompt_2", "", lim->max_prompt, &p2)) ||
        (st = get_str(e, root, "negative_prompt_2", "", lim->max_prompt, &neg2)))
        return st;
    if (!prompt) return bad(e, SDXL_REQUEST_ERR_MISSING_FIELD, "prompt", "is required");
    /* request_id names the image files: letters, digits, '.', '_', '-', not starting with '.' */
    for (const char *c = rid; c && *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
              *c == '-' || (*c == '.' && c != rid)))
            return bad(e, SDXL_REQUEST_ERR_INVALID_VALUE, "request_id",
                       "only letters, digits, '.', '_' and '-' (not first '.'): it names the image files");
    if ((st = get_num(e, root, "width", "", 8, lim->max_side, true, &w, &has_w)) ||
        (st = get_num(e, root, "height", "", 8, lim->max_side, true, &h, &has_h)))
        return st;
    if ((int)w % 8 || (int)h % 8)
        return bad(e, SDXL_REQUEST_ERR_INVALID_VALUE, (int)w % 8 ? "width" : "height", "must be a multiple of 8");
    if ((st = get_num(e, root, "steps", "", 1, lim->max_steps, true, &steps, NULL)) ||
        (st = get_num(e, root, "guidance_scale", "", 0, 100, false, &cfg, NULL)) ||
        (st = get_num(e, root, "guidance_rescale", "", 0, 1, false, &rescale, NULL)) ||
        (st = get_str(e, root, "scheduler", "", 63, &sched)))
        return st;
    if (sched) {
        sdxl_sampler_kind kind;
        sdxl_error serr = {0};
        if (sdxl_sampler_parse_name(sched, &kind, NULL, &serr))
            return bad(e, SDXL_REQUEST_ERR_INVALID_VALUE, "scheduler", "%s", serr.msg);
    }
    if ((st = get_num(e, root, "seed", "", -1, MAX_SEED, true, &seed, NULL)) ||
        (st = get_choice(e, root, "rng", "cpu", "cuda", &out->rng_cuda)) ||
        (st = get_num(e, root, "batch_size", "", 1, lim->max_batch, true, &batch, NULL)) ||
        (st = get_num(e, root, "n_iter", "", 1, (double)max_n_iter, true, &n_iter, NULL)) ||
        (st = get_num(e, root, "strength", "", 0, 1, false, &strength, &has_strength)))
        return st;
    if (has_strength && strength <= 0)
        return bad(e, SDXL_REQUEST_ERR_OUT_OF_RANGE, "strength", "%g is out of range (0, 1]", strength);
    if ((st = get_choice(e, root, "prompt_syntax", "a1111", "plain", &out->prompt_plain)) ||
        (st = get_choice(e, root, "long_prompts", "chunk", "truncate", &out->long_truncate)))
        return st;
    bool base64_out = false;
    if ((st = get_choice(e, root, "output", "path", "base64", &base64_out)) ||
        (st = get_str(e, root, "output_dir", "", sizeof out->output_dir - 1, &odir)) ||
        (st = get_str(e, root, "model", "", sizeof out->model - 1, &model)) ||
        (st = get_num(e, root, "timeout_s", "", 0, MAX_TIMEOUT_S, false, &timeout, NULL)))
        return st;
    if (odir && !lim->output_dir_any_path && (st = check_output_dir(e, odir))) return st;
    if (model && (st = check_model(e, model))) return st;
    if ((st = parse_lora(e, cJSON_GetObjectItemCaseSensitive(root, "lora"), &out->lora))) return st;
    if ((st = get_str(e, root, "init_image", "", SIZE_MAX, &init))) return st;
    if (init) {
        if ((st = parse_init_image(e, init, lim, max_bytes, out))) return st;
        /* the image's size is the size; a width/height given must agree */
        if (has_w && (int)w != out->init_width)
            return bad(e, SDXL_REQUEST_ERR_INVALID_VALUE, "width", "%d does not match init_image's width %d", (int)w,
                       out->init_width);
        if (has_h && (int)h != out->init_height)
            return bad(e, SDXL_REQUEST_ERR_INVALID_VALUE, "height", "%d does not match init_image's height %d",
                       (int)h, out->init_height);
        w = out->init_width;
        h = out->init_height;
    }
    snprintf(out->request_id, sizeof out->request_id, "%s", rid ? rid : "");
    bool failed = false;
    out->prompt = dup_or_null(prompt, &failed);
    out->negative_prompt = dup_or_null(neg, &failed);
    out->prompt_2 = dup_or_null(p2, &failed);
    out->negative_prompt_2 = dup_or_null(neg2, &failed);
    if (failed) return oom(e, "", "out of memory");
    out->width = (int)w;
    out->height = (int)h;
    out->steps = (int)steps;
    out->guidance_scale = cfg;
    out->guidance_rescale = rescale;
    snprintf(out->scheduler, sizeof out->scheduler, "%s", sched ? sched : "euler");
    out->seed = (int64_t)seed;
    out->batch_size = (int)batch;
    out->n_iter = (int)n_iter;
    out->strength = strength;
    out->output = base64_out ? SDXL_OUTPUT_BASE64 : SDXL_OUTPUT_PATH;
    snprintf(out->model, sizeof out->model, "%s", model ? model : "");
    out->timeout_s = timeout;
    snprintf(out->output_dir, sizeof out->output_dir, "%s", odir && *odir ? odir : ".");
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_request_parse_ex(const char *json, size_t len, const sdxl_request_limits *lim_in, sdxl_request *out,
                                  sdxl_request_error *rerr, sdxl_error *err) {
    if (rerr) memset(rerr, 0, sizeof *rerr);
    ectx e = {.err = err, .rerr = rerr};
    if (out) memset(out, 0, sizeof *out);
    if (!json || !out) {
        if (rerr) snprintf(rerr->code, sizeof rerr->code, "%s", SDXL_REQUEST_ERR_INTERNAL);
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "request: NULL argument");
    }
    sdxl_request_limits lim = lim_in ? *lim_in : sdxl_request_default_limits();
    const char *at = NULL; /* where cJSON stopped (per call; cJSON_GetErrorPtr is a global) */
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &at, false);
    if (!root) {
        long off = at && at >= json && at <= json + len ? (long)(at - json) : -1;
        if (off >= 0) return bad(&e, SDXL_REQUEST_ERR_INVALID_JSON, "", "malformed JSON (near byte %ld)", off);
        return bad(&e, SDXL_REQUEST_ERR_INVALID_JSON, "", "malformed JSON");
    }
    /* one value and nothing after it but whitespace */
    size_t end = at && at >= json && at <= json + len ? (size_t)(at - json) : len;
    while (end < len && (json[end] == ' ' || json[end] == '\t' || json[end] == '\r' || json[end] == '\n')) end++;
    sdxl_status st = end < len ? bad(&e, SDXL_REQUEST_ERR_INVALID_JSON, "", "malformed JSON (text after the value "
                                     "at byte %zu)", end)
                               : parse_object(&e, root, &lim, out);
    cJSON_Delete(root);
    if (st) sdxl_request_free(out);
    return st;
}

sdxl_status sdxl_request_parse(const char *json, size_t len, const sdxl_request_limits *lim, sdxl_request *out,
                               sdxl_error *err) {
    return sdxl_request_parse_ex(json, len, lim, out, NULL, err);
}

/* ---- the worker config ------------------------------------------------------------------ */

sdxl_status sdxl_worker_config_parse(const char *json, size_t len, const char *base_dir, sdxl_lora_worker_config *cfg,
                                     sdxl_error *err) {
    if (!json || !cfg) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "config: NULL argument");
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "config: malformed JSON");
    ectx e = {.err = err};
    sdxl_status st = SDXL_STATUS_OK;
    const cJSON *lc = root;
    const char *pre = "";
    if (!cJSON_IsObject(root)) {
        st = bad(&e, SDXL_REQUEST_ERR_INVALID_TYPE, "config", "expected an object, got %s",
                 sdxl_json_type_name(root));
        goto done;
    }
    if (cJSON_GetObjectItemCaseSensitive(root, "lora_config")) {
        static const char *const top[] = {"lora_config", NULL};
        if ((st = only_known(&e, root, "", top))) goto done;
        lc = cJSON_GetObjectItemCaseSensitive(root, "lora_config");
        pre = "lora_config.";
        if (!cJSON_IsObject(lc)) {
            st = bad(&e, SDXL_REQUEST_ERR_INVALID_TYPE, "lora_config", "expected an object, got %s",
                     sdxl_json_type_name(lc));
            goto done;
        }
    }
    static const char *const known[] = {"lora_directories", "memory_limit_mb", "enable_caching", "cache_size",
                                        "enable_memory_monitoring", NULL};
    double mem = (double)cfg->memory_limit_mb, cs = (double)cfg->cache_size;
    if ((st = only_known(&e, lc, pre, known)) ||
        (st = get_num(&e, lc, "memory_limit_mb", pre, 1, 1 << 24, true, &mem, NULL)) ||
        (st = get_num(&e, lc, "cache_size", pre, 0, 100000, true, &cs, NULL)) ||
        (st = get_bool(&e, lc, "enable_caching", pre, &cfg->enable_caching)) ||
        (st = get_bool(&e, lc, "enable_memory_monitoring", pre, &cfg->enable_memory_monitoring)))
        goto done;
    cfg->memory_limit_mb = (size_t)mem;
    cfg->cache_size = (size_t)cs;
    const cJSON *dirs = cJSON_GetObjectItemCaseSensitive(lc, "lora_directories");
    if (dirs) {
        char path[300];
        snprintf(path, sizeof path, "%slora_directories", pre);
        if (!cJSON_IsArray(dirs)) {
            st = bad(&e, SDXL_REQUEST_ERR_INVALID_TYPE, path, "expected a list, got %s", sdxl_json_type_name(dirs));
            goto done;
        }
        int i = 0;
        for (const cJSON *d = dirs->child; d; d = d->next, i++) {
            char ip[340], dp[SDXL_LORA_PATH_MAX];
            snprintf(ip, sizeof ip, "%s[%d]", path, i);
            const char *p = NULL, *cat = NULL;
            if (cJSON_IsString(d)) {
                p = d->valuestring;
            } else if (cJSON_IsObject(d)) {
                static const char *const dk[] = {"path", "category", NULL};
                char ipre[360];
                snprintf(ipre, sizeof ipre, "%s.", ip);
                if ((st = only_known(&e, d, ipre, dk)) ||
                    (st = get_str(&e, d, "path", ipre, SDXL_LORA_PATH_MAX - 1, &p)) ||
                    (st = get_str(&e, d, "category", ipre, SDXL_LORA_NAME_MAX - 1, &cat)))
                    goto done;
            }
            if (!p || !*p) {
                st = bad(&e, SDXL_REQUEST_ERR_INVALID_TYPE, ip, "expected a path or {\"path\": ..., \"category\": ...}");
                goto done;
            }
            if (p[0] != '/' && base_dir && *base_dir)
                snprintf(dp, sizeof dp, "%s/%s", base_dir, p);
            else
                snprintf(dp, sizeof dp, "%s", p);
            if ((st = sdxl_lora_worker_config_add_dir(cfg, dp, cat, err))) goto done;
        }
    }
done:
    cJSON_Delete(root);
    return st;
}

/* ---- result JSON ------------------------------------------------------------------------ */

static void add_num(cJSON *o, const char *k, double v) { cJSON_AddItemToObject(o, k, cJSON_CreateNumber(v)); }

/* a float as the shortest decimal that reads back to it (1.1f is 1.1, not
 * 1.100000023841858) */
static void add_float(cJSON *o, const char *k, float v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.9g", (double)v);
    for (int p = 1; p <= 9; p++) {
        char t[32];
        snprintf(t, sizeof t, "%.*g", p, (double)v);
        if (strtof(t, NULL) == v) {
            memcpy(buf, t, sizeof t);
            break;
        }
    }
    add_num(o, k, strtod(buf, NULL));
}

struct cJSON *sdxl_result_cjson(const sdxl_request *req, const sdxl_result_image *images, size_t n_images,
                                const sdxl_lora_report *rep, const sdxl_result_timings *t,
                                const char *const *warnings, size_t n_warnings) {
    cJSON *r = cJSON_CreateObject();
    if (!r) return NULL;
    cJSON_AddStringToObject(r, "request_id", req ? req->request_id : "");
    cJSON_AddStringToObject(r, "status", "ok");
    cJSON *imgs = cJSON_AddArrayToObject(r, "images");
    for (size_t i = 0; i < n_images; i++) {
        cJSON *im = cJSON_CreateObject();
        cJSON_AddStringToObject(im, "path", images[i].path);
        add_num(im, "seed", (double)images[i].seed);
        cJSON_AddItemToArray(imgs, im);
    }
    cJSON *lo = cJSON_AddObjectToObject(r, "lora");
    cJSON_AddBoolToObject(lo, "enabled", req ? req->lora.enabled : rep && rep->n > 0);
    add_float(lo, "global_weight", req ? req->lora.global_weight : 1.0f);
    add_num(lo, "applied", rep ? (double)rep->applied : 0);
    cJSON *ads = cJSON_AddArrayToObject(lo, "adapters");
    for (size_t i = 0; rep && i < rep->n; i++) {
        const sdxl_lora_outcome *o = &rep->items[i];
        cJSON *a = cJSON_CreateObject();
        cJSON_AddStringToObject(a, "name", o->name);
        cJSON_AddStringToObject(a, "status", sdxl_lora_status_name(o->status));
        cJSON_AddStringToObject(a, "message", o->message);
        cJSON_AddStringToObject(a, "category", o->category);
        cJSON_AddStringToObject(a, "path", o->path);
        add_float(a, "unet_weight", o->unet_weight);
        add_float(a, "te_weight", o->te_weight);
        cJSON_AddStringToObject(a, "hash", o->short_hash);
        cJSON_AddStringToObject(a, "type", o->adapter_type);
        add_num(a, "modules", (double)o->modules);
        add_num(a, "unmatched_keys", (double)o->unmatched_keys);
        cJSON_AddBoolToObject(a, "cache_hit", o->cache_hit);
        add_num(a, "load_ms", o->load_ms);
        add_num(a, "bytes", (double)o->bytes);
        cJSON *sg = cJSON_AddArrayToObject(a, "suggestions");
        for (int k = 0; k < o->n_suggestions; k++) cJSON_AddItemToArray(sg, cJSON_CreateString(o->suggestions[k]));
        cJSON_AddItemToArray(ads, a);
    }
    cJSON *tm = cJSON_AddObjectToObject(r, "timings");
    if (t) {
        add_num(tm, "lora_ms", t->lora_ms);
        add_num(tm, "encode_ms", t->encode_ms);
        add_num(tm, "denoise_ms", t->denoise_ms);
        add_num(tm, "decode_ms", t->decode_ms);
        add_num(tm, "total_ms", t->total_ms);
    }
    cJSON *mt = cJSON_AddObjectToObject(r, "metrics");
    if (rep) {
        cJSON *ml = cJSON_AddObjectToObject(mt, "lora");
        add_num(ml, "resolve_ms", rep->resolve_ms);
        add_num(ml, "load_ms", rep->load_ms);
        add_num(ml, "merge_ms", rep->merge_ms);
        add_num(ml, "weights_merged", (double)rep->merge.merged);
        add_num(ml, "weights_restored", (double)rep->merge.restored);
        add_num(ml, "weights_kept", (double)rep->merge.kept);
        add_num(ml, "merged_bytes", (double)rep->merge.bytes);
        cJSON *mc = cJSON_AddObjectToObject(mt, "cache");
        add_num(mc, "entries", (double)rep->cache.entries);
        add_num(mc, "bytes", (double)rep->cache.bytes);
        add_num(mc, "hits", (double)rep->cache.hits);
        add_num(mc, "misses", (double)rep->cache.misses);
        add_num(mc, "evictions", (double)rep->cache.evictions);
        add_num(mc, "too_large", (double)rep->cache.too_large);
        add_num(mc, "load_ms_total", rep->cache.load_ms_total);
        if (rep->memory_monitored) {
            cJSON *mm = cJSON_AddObjectToObject(mt, "memory");
            add_num(mm, "rss_bytes", (double)rep->rss_bytes);
            add_num(mm, "engine_live_bytes", (double)rep->engine_live_bytes);
            add_num(mm, "engine_peak_bytes", (double)rep->engine_peak_bytes);
            add_num(mm, "mapped_bytes", (double)rep->mapped_bytes);
        }
    }
    cJSON *wa = cJSON_AddArrayToObject(r, "warnings");
    for (size_t i = 0; i < n_warnings; i++) cJSON_AddItemToArray(wa, cJSON_CreateString(warnings[i]));
    return r;
}

char *sdxl_result_json(const sdxl_request *req, const sdxl_result_image *images, size_t n_images,
                       const sdxl_lora_report *rep, const sdxl_result_timings *t, const char *const *warnings,
                       size_t n_warnings) {
    cJSON *r = sdxl_result_cjson(req, images, n_images, rep, t, warnings, n_warnings);
    char *s = r ? cJSON_PrintUnformatted(r) : NULL;
    cJSON_Delete(r);
    return s;
}

char *sdxl_error_json(const char *request_id, const char *code, const char *message) {
    cJSON *r = cJSON_CreateObject();
    if (!r) return NULL;
    cJSON_AddStringToObject(r, "request_id", request_id ? request_id : "");
    cJSON_AddStringToObject(r, "status", "error");
    cJSON *e = cJSON_AddObjectToObject(r, "error");
    cJSON_AddStringToObject(e, "code", code ? code : "error");
    cJSON_AddStringToObject(e, "message", message ? message : "");
    char *s = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    return s;
}
