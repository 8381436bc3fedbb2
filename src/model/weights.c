/* weights.c - the weight store of weights.h. */
#include "model/weights.h"
#include "io/file.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/dtype.h"
#include "core/log.h"

#define MAX_SHARDS 256

struct sdxl_weights {
    sdxl_model_config cfg;
    sdxl_naming *naming;
    sdxl_layout layout;
    sdxl_weight *w; /* one per naming entry */
    size_t n;
    sdxl_st_file **files;
    size_t nfiles, capfiles;
    size_t comp_files[SDXL_COMP_COUNT_][2]; /* [begin, end) of each component's files (diffusers) */
    size_t unknown;
    size_t owned_bytes;
};

sdxl_weights_params sdxl_weights_default_params(void) {
    sdxl_weights_params p;
    memset(&p, 0, sizeof p);
    p.variant = SDXL_VARIANT_AUTO;
    p.dtype = SDXL_DTYPE_F32;
    return p;
}

/* ---- helpers ------------------------------------------------------------- */

static const char *shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
    return buf;
}

static bool file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static bool st_to_dtype(sdxl_st_dtype s, sdxl_dtype *d) {
    switch (s) {
    case SDXL_ST_F32: *d = SDXL_DTYPE_F32; return true;
    case SDXL_ST_F16: *d = SDXL_DTYPE_F16; return true;
    case SDXL_ST_BF16: *d = SDXL_DTYPE_BF16; return true;
    default: return false;
    }
}

static sdxl_st_dtype dtype_to_st(sdxl_dtype d) {
    return d == SDXL_DTYPE_F16 ? SDXL_ST_F16 : d == SDXL_DTYPE_BF16 ? SDXL_ST_BF16 : SDXL_ST_F32;
}

static sdxl_status add_file(sdxl_weights *W, const char *path, sdxl_error *err) {
    if (W->nfiles == W->capfiles) {
        size_t cap = W->capfiles ? W->capfiles * 2 : 8;
        sdxl_st_file **nf = sdxl_realloc(W->files, cap * sizeof *nf);
        if (!nf) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
        W->files = nf;
        W->capfiles = cap;
    }
    sdxl_st_file *f = NULL;
    sdxl_status st = sdxl_st_open(path, &f, err);
    if (st) return st;
    W->files[W->nfiles++] = f;
    return SDXL_STATUS_OK;
}

/* Load one element of dtype d at p (any alignment) as f32. */
static float load_f32(const uint8_t *p, sdxl_dtype d) {
    if (d == SDXL_DTYPE_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p, 2);
    return d == SDXL_DTYPE_F16 ? sdxl_f16_to_f32(h) : sdxl_bf16_to_f32(h);
}

static void store_f32(uint8_t *p, sdxl_dtype d, float f) {
    if (d == SDXL_DTYPE_F32) {
        memcpy(p, &f, 4);
        return;
    }
    uint16_t h = d == SDXL_DTYPE_F16 ? sdxl_f32_to_f16(f) : sdxl_f32_to_bf16(f);
    memcpy(p, &h, 2);
}

/* n elements from src (any alignment) to aligned dst, converting dtype. */
static void convert_any(const uint8_t *src, sdxl_dtype sd, void *dst, sdxl_dtype dd, size_t n) {
    size_t ses = sdxl_dtype_size(sd);
    if (sd == dd) {
        memcpy(dst, src, n * ses);
        return;
    }
    if ((uintptr_t)src % ses == 0) {
        sdxl_convert_n(src, sd, dst, dd, n);
        return;
    }
    /* misaligned source: stage through an aligned block (the bulk
     * converters read typed pointers) */
    _Alignas(64) uint8_t tmp[4096];
    size_t per = sizeof tmp / ses, des = sdxl_dtype_size(dd);
    for (size_t i = 0; i < n; i += per) {
        size_t k = n - i < per ? n - i : per;
        memcpy(tmp, src + i * ses, k * ses);
        sdxl_convert_n(tmp, sd, (uint8_t *)dst + i * des, dd, k);
    }
}

/* Source bytes of weight wt before the transform (ROWS: its first row). */
static const uint8_t *src_bytes(const sdxl_weight *wt) {
    const uint8_t *p = wt->src->data;
    if (wt->xform == SDXL_XFORM_ROWS) {
        const sdxl_name_source *s = &wt->entry->src[SDXL_LAYOUT_SGM];
        int64_t row = 1;
        for (int i = 1; i < s->ndim; i++)
            row *= s->shape[i];
        sdxl_dtype d = SDXL_DTYPE_F32;
        st_to_dtype(wt->src->dtype, &d);
        p += (size_t)(s->row_begin * row) * sdxl_dtype_size(d);
    }
    return p;
}

/* The original values of wt, transformed, as dtype dd into dst. */
static void derive(const sdxl_weight *wt, void *dst, sdxl_dtype dd) {
    sdxl_dtype sd = SDXL_DTYPE_F32;
    st_to_dtype(wt->src->dtype, &sd);
    const uint8_t *p = src_bytes(wt);
    size_t n = (size_t)sdxl_tensor_nelem(&wt->tensor);
    if (wt->xform != SDXL_XFORM_TRANSPOSE) {
        convert_any(p, sd, dst, dd, n);
        return;
    }
    /* internal [a, b] = source [b, a] transposed */
    int64_t a = wt->entry->shape[0], b = wt->entry->shape[1];
    size_t ses = sdxl_dtype_size(sd), des = sdxl_dtype_size(dd);
    uint8_t *o = dst;
    for (int64_t i = 0; i < a; i++) {
        for (int64_t j = 0; j < b; j++) {
            const uint8_t *s = p + (size_t)(j * a + i) * ses;
            uint8_t *d = o + (size_t)(i * b + j) * des;
            if (sd == dd)
                memcpy(d, s, ses);
            else
                store_f32(d, dd, load_f32(s, sd));
        }
    }
}

/* Check the source tensor of entry i and build its engine tensor. */
static sdxl_status bind(sdxl_weights *W, size_t i, int fi, const sdxl_st_tensor *t,
                        const sdxl_name_source *src, const sdxl_weights_params *p, sdxl_error *err) {
    sdxl_weight *wt = &W->w[i];
    const sdxl_name_entry *e = wt->entry;
    const char *path = sdxl_st_path(W->files[fi]);
    sdxl_dtype sd = SDXL_DTYPE_F32;
    if (!st_to_dtype(t->dtype, &sd))
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                              "%s: source tensor \"%s\" in %s has dtype %s; weights must be F32, F16 or BF16",
                              e->name, t->name, path, sdxl_st_dtype_name(t->dtype));
    bool same = t->ndim == src->ndim;
    for (int k = 0; same && k < t->ndim; k++)
        same = t->shape[k] == src->shape[k];
    sdxl_xform xform = src->xform;
    if (!same && xform == SDXL_XFORM_RESHAPE && t->ndim == e->ndim) {
        /* some single files already store the VAE attention as Linear [C,C] */
        same = true;
        for (int k = 0; same && k < t->ndim; k++)
            same = t->shape[k] == e->shape[k];
        if (same) xform = SDXL_XFORM_NONE;
    }
    if (!same) {
        char a[96], b[96];
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                              "%s: source tensor \"%s\" in %s has shape %s; the config expects %s", e->name,
                              t->name, path, shape_str(a, sizeof a, t->ndim, t->shape),
                              shape_str(b, sizeof b, src->ndim, src->shape));
    }
    wt->src = t;
    wt->file = fi;
    wt->xform = xform;
    sdxl_dtype dd = p->convert ? p->dtype : sd;
    wt->tensor = sdxl_tensor_make(NULL, dd, e->ndim, e->shape);
    const uint8_t *bytes = src_bytes(wt);
    bool copy = wt->xform == SDXL_XFORM_TRANSPOSE || dd != sd || (uintptr_t)bytes % sdxl_dtype_size(sd) != 0;
    if (!copy) {
        wt->tensor.data = (void *)(uintptr_t)bytes; /* read-only mapping */
    } else {
        size_t nb = sdxl_tensor_nbytes(&wt->tensor);
        wt->owned = sdxl_malloc(nb);
        if (!wt->owned)
            return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory (%zu bytes)", e->name,
                                  nb);
        derive(wt, wt->owned, dd);
        wt->tensor.data = wt->owned;
        W->owned_bytes += nb;
        if ((uintptr_t)bytes % sdxl_dtype_size(sd))
            SDXL_LOG_D("%s: source \"%s\" is not aligned; copied", e->name, t->name);
    }
    wt->base_data = wt->tensor.data;
    return SDXL_STATUS_OK;
}

/* ---- diffusers folder ------------------------------------------------------ */

/* A shard name from an index.json must be a plain file name in the folder. */
static bool safe_shard_name(const char *s) {
    size_t n = strlen(s);
    return n > 12 && n < 256 && !strchr(s, '/') && !strchr(s, '\\') && s[0] != '.' &&
           strcmp(s + n - 12, ".safetensors") == 0;
}

static sdxl_status open_index(sdxl_weights *W, const char *folder, const char *index_path, sdxl_error *err) {
    char *text = NULL;
    size_t len = 0;
    sdxl_status rs = sdxl_read_file(index_path, (size_t)16 << 20, &text, &len, err);
    if (rs) return rs;
    cJSON *root = cJSON_ParseWithLength(text, len);
    sdxl_free(text);
    const cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(root);
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                              "%s: not a JSON object with a \"weight_map\" object", index_path);
    }
    /* the unique shard names, in order of first appearance */
    const char *names[MAX_SHARDS];
    int nn = 0;
    sdxl_status st = SDXL_STATUS_OK;
    for (const cJSON *it = map->child; it && !st; it = it->next) {
        if (!cJSON_IsString(it) || !safe_shard_name(it->valuestring)) {
            st = sdxl_error_set(
                err, SDXL_STATUS_BAD_INPUT,
                "%s: weight_map[\"%.80s\"] is not a plain *.safetensors file name in the folder", index_path,
                it->string ? it->string : "?");
            break;
        }
        int k = 0;
        while (k < nn && strcmp(names[k], it->valuestring) != 0)
            k++;
        if (k == nn) {
            if (nn == MAX_SHARDS) {
                st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: more than %d shards", index_path,
                                    MAX_SHARDS);
                break;
            }
            names[nn++] = it->valuestring;
        }
    }
    if (!st && nn == 0)
        st = sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: weight_map is empty", index_path);
    for (int k = 0; k < nn && !st; k++) {
        char path[4096];
        int m = snprintf(path, sizeof path, "%s/%s", folder, names[k]);
        if (m < 0 || (size_t)m >= sizeof path)
            st = sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: path too long", folder);
        else
            st = add_file(W, path, err);
    }
    cJSON_Delete(root);
    return st;
}

static sdxl_status open_component(sdxl_weights *W, const char *dir, sdxl_component c,
                                  sdxl_weights_variant variant, sdxl_error *err) {
    const char *base = (c == SDXL_COMP_UNET || c == SDXL_COMP_VAE) ? "diffusion_pytorch_model" : "model";
    char folder[4096], plain[4200], fp16[4200], plain_idx[4200], fp16_idx[4200];
    int n = snprintf(folder, sizeof folder, "%s/%s", dir, sdxl_component_folder(c));
    if (n < 0 || (size_t)n >= sizeof folder)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: path too long", dir);
    snprintf(plain, sizeof plain, "%s/%s.safetensors", folder, base);
    snprintf(fp16, sizeof fp16, "%s/%s.fp16.safetensors", folder, base);
    snprintf(plain_idx, sizeof plain_idx, "%s/%s.safetensors.index.json", folder, base);
    snprintf(fp16_idx, sizeof fp16_idx, "%s/%s.fp16.safetensors.index.json", folder, base);
    bool has_plain = file_exists(plain), has_fp16 = file_exists(fp16);
    bool has_pidx = !has_plain && file_exists(plain_idx), has_fidx = !has_fp16 && file_exists(fp16_idx);
    bool use_fp16;
    switch (variant) {
    case SDXL_VARIANT_FP16:
        if (!has_fp16 && !has_fidx)
            return sdxl_error_set(err, SDXL_STATUS_NOT_FOUND,
                                  "%s: variant fp16 was asked for but %s is missing", folder, fp16);
        use_fp16 = true;
        break;
    case SDXL_VARIANT_DEFAULT:
        if (!has_plain && !has_pidx)
            return sdxl_error_set(err, SDXL_STATUS_NOT_FOUND, "%s: %s is missing%s", folder, plain,
                                  has_fp16 || has_fidx ? " (an fp16 variant is there: ask for it)" : "");
        use_fp16 = false;
        break;
    default:
        use_fp16 = !has_plain && !has_pidx;
        if (use_fp16 && !has_fp16 && !has_fidx) {
            char bin[4200];
            snprintf(bin, sizeof bin, "%s/%s.bin", folder,
                     c == SDXL_COMP_UNET || c == SDXL_COMP_VAE ? "diffusion_pytorch_model" : "pytorch_model");
            if (file_exists(bin))
                return sdxl_error_set(err, SDXL_STATUS_UNSUPPORTED,
                                      "%s: only PyTorch weights (%s); convert them to .safetensors", folder,
                                      bin);
            return sdxl_error_set(err, SDXL_STATUS_NOT_FOUND,
                                  "%s: no weights (%s.safetensors or %s.fp16.safetensors)", folder, base,
                                  base);
        }
        break;
    }
    W->comp_files[c][0] = W->nfiles;
    sdxl_status st;
    if (use_fp16)
        st = has_fp16 ? add_file(W, fp16, err) : open_index(W, folder, fp16_idx, err);
    else
        st = has_plain ? add_file(W, plain, err) : open_index(W, folder, plain_idx, err);
    W->comp_files[c][1] = W->nfiles;
    return st;
}

static sdxl_status load_diffusers(sdxl_weights *W, const char *dir, const sdxl_weights_params *p,
                                  sdxl_error *err) {
    W->layout = SDXL_LAYOUT_DIFFUSERS;
    sdxl_status st = sdxl_model_config_load_diffusers(dir, &W->cfg, err);
    if (st) return st;
    if (p->hints && (st = sdxl_model_config_apply_hints(&W->cfg, p->hints, err))) return st;
    for (int c = 0; c < SDXL_COMP_COUNT_; c++)
        if ((st = open_component(W, dir, (sdxl_component)c, p->variant, err))) return st;
    return SDXL_STATUS_OK;
}

/* ---- single file --------------------------------------------------------------- */

static bool has_ext(const char *path, const char *ext) {
    size_t n = strlen(path), k = strlen(ext);
    return n > k && strcasecmp(path + n - k, ext) == 0;
}

static sdxl_status load_single(sdxl_weights *W, const char *path, const sdxl_weights_params *p,
                               sdxl_error *err) {
    W->layout = SDXL_LAYOUT_SGM;
    static const char *const pickles[] = {".ckpt", ".pt", ".pth", ".bin"};
    for (size_t i = 0; i < sizeof pickles / sizeof pickles[0]; i++)
        if (has_ext(path, pickles[i]))
            return sdxl_error_set(
                err, SDXL_STATUS_UNSUPPORTED,
                "%s: PyTorch pickle checkpoints are not loaded as models; use the .safetensors form", path);
    sdxl_status st = add_file(W, path, err);
    if (st) return st;
    for (int c = 0; c < SDXL_COMP_COUNT_; c++)
        W->comp_files[c][0] = 0, W->comp_files[c][1] = 1;
    if (p->config_dir) {
        if ((st = sdxl_model_config_load_diffusers(p->config_dir, &W->cfg, err))) return st;
        if (p->hints && (st = sdxl_model_config_apply_hints(&W->cfg, p->hints, err))) return st;
        return SDXL_STATUS_OK;
    }
    char side[4200];
    const char *yaml = p->yaml_path;
    if (!yaml && !p->ignore_sidecar && sdxl_model_config_sidecar_path(path, side, sizeof side) &&
        file_exists(side))
        yaml = side;
    return sdxl_model_config_infer_sgm(W->files[0], yaml, p->hints, &W->cfg, err);
}

/* ---- load -------------------------------------------------------------------------- */

/* A tensor bound under another key than the naming's (an alias). */
static bool used_alias(const sdxl_weights *W, const sdxl_st_tensor *t) {
    for (size_t i = 0; i < W->n; i++)
        if (W->w[i].src == t) return true;
    return false;
}

static sdxl_status bind_all(sdxl_weights *W, const sdxl_weights_params *p, sdxl_error *err) {
    size_t n = sdxl_naming_count(W->naming);
    W->w = sdxl_calloc(n ? n : 1, sizeof *W->w);
    if (!W->w) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "weight table: out of memory");
    W->n = n;
    for (size_t i = 0; i < n; i++) {
        const sdxl_name_entry *e = sdxl_naming_at(W->naming, i);
        const sdxl_name_source *src = &e->src[W->layout];
        W->w[i].entry = e;
        W->w[i].file = -1;
        size_t b = W->comp_files[e->comp][0], end = W->comp_files[e->comp][1];
        const sdxl_st_tensor *t = NULL;
        size_t fi = b;
        for (; fi < end && !t; fi++)
            t = sdxl_st_find(W->files[fi], src->key);
        sdxl_name_source alt;
        if (!t && src->xform == SDXL_XFORM_TRANSPOSE) {
            /* text_projection also appears in Linear form, "<key>.weight" [proj, hidden] */
            char key[512];
            snprintf(key, sizeof key, "%s.weight", src->key);
            for (fi = b; fi < end && !t; fi++)
                t = sdxl_st_find(W->files[fi], key);
            if (t) {
                alt = *src;
                alt.key = t->name;
                alt.xform = SDXL_XFORM_NONE;
                alt.ndim = e->ndim;
                memcpy(alt.shape, e->shape, sizeof alt.shape);
                src = &alt;
            }
        }
        if (!t) {
            char sh[96];
            const char *where = end > b ? sdxl_st_path(W->files[b]) : "(no file)";
            return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT,
                                  "%s: source tensor \"%s\" %s is missing from %s%s", e->name, src->key,
                                  shape_str(sh, sizeof sh, src->ndim, src->shape), where,
                                  end - b > 1 ? " and its sibling shards" : "");
        }
        sdxl_status st = bind(W, i, (int)(fi - 1), t, src, p, err);
        if (st) return st;
    }
    /* what the files hold beyond the expected set */
    for (int c = 0; c < SDXL_COMP_COUNT_; c++) {
        if (W->layout == SDXL_LAYOUT_SGM && c > 0) break; /* one file for all */
        for (size_t fi = W->comp_files[c][0]; fi < W->comp_files[c][1]; fi++) {
            for (size_t k = 0; k < sdxl_st_count(W->files[fi]); k++) {
                const sdxl_st_tensor *t = sdxl_st_at(W->files[fi], k);
                const char *name = t->name;
                if (!sdxl_naming_find_source(W->naming, W->layout, (sdxl_component)c, name) &&
                    !used_alias(W, t)) {
                    W->unknown++;
                    SDXL_LOG_D("%s: ignoring tensor \"%s\" (not part of the model)",
                               sdxl_st_path(W->files[fi]), name);
                }
            }
        }
    }
    if (W->unknown)
        SDXL_LOG_D("%zu tensor(s) in the model files were not used (see the debug log above)", W->unknown);
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_weights_load(const char *path, const sdxl_weights_params *params, sdxl_weights **out,
                              sdxl_error *err) {
    if (!path || !out)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_weights_load: NULL argument");
    *out = NULL;
    sdxl_weights_params p = params ? *params : sdxl_weights_default_params();
    if (p.convert && p.dtype != SDXL_DTYPE_F32 && p.dtype != SDXL_DTYPE_F16 && p.dtype != SDXL_DTYPE_BF16)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "sdxl_weights_load: conversion target must be f32, f16 or bf16");
    if ((unsigned)p.variant > SDXL_VARIANT_FP16)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_weights_load: bad variant %d",
                              (int)p.variant);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return sdxl_error_set(err, errno == ENOENT ? SDXL_STATUS_NOT_FOUND : SDXL_STATUS_IO, "%s: %s", path,
                              strerror(errno));
    sdxl_weights *W = sdxl_calloc(1, sizeof *W);
    if (!W) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
    sdxl_status st;
    if (S_ISDIR(sb.st_mode))
        st = load_diffusers(W, path, &p, err);
    else if (S_ISREG(sb.st_mode))
        st = load_single(W, path, &p, err);
    else
        st = sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: neither a model folder nor a file", path);
    if (!st) st = sdxl_naming_create(&W->cfg, &W->naming, err);
    if (!st) st = bind_all(W, &p, err);
    if (st) {
        sdxl_weights_free(W);
        return st;
    }
    SDXL_LOG_D("%s: %zu weights (%s layout, %zu KiB copied), %zu unused tensor(s)", path, W->n,
               sdxl_layout_name(W->layout), W->owned_bytes >> 10, W->unknown);
    *out = W;
    return SDXL_STATUS_OK;
}

void sdxl_weights_free(sdxl_weights *W) {
    if (!W) return;
    for (size_t i = 0; i < W->n; i++)
        sdxl_free(W->w[i].owned);
    sdxl_free(W->w);
    for (size_t i = 0; i < W->nfiles; i++)
        sdxl_st_close(W->files[i]);
    sdxl_free(W->files);
    sdxl_naming_free(W->naming);
    sdxl_model_config_clear(&W->cfg);
    sdxl_free(W);
}

/* ---- getters ------------------------------------------------------------------------ */

const sdxl_model_config *sdxl_weights_config(const sdxl_weights *w) {
    return w ? &w->cfg : NULL;
}
const sdxl_naming *sdxl_weights_naming(const sdxl_weights *w) {
    return w ? w->naming : NULL;
}
sdxl_layout sdxl_weights_layout(const sdxl_weights *w) {
    return w ? w->layout : SDXL_LAYOUT_DIFFUSERS;
}
size_t sdxl_weights_count(const sdxl_weights *w) {
    return w ? w->n : 0;
}
const sdxl_weight *sdxl_weights_at(const sdxl_weights *w, size_t i) {
    return w && i < w->n ? &w->w[i] : NULL;
}
size_t sdxl_weights_unknown_count(const sdxl_weights *w) {
    return w ? w->unknown : 0;
}
size_t sdxl_weights_owned_bytes(const sdxl_weights *w) {
    return w ? w->owned_bytes : 0;
}
size_t sdxl_weights_file_count(const sdxl_weights *w) {
    return w ? w->nfiles : 0;
}
const char *sdxl_weights_file_path(const sdxl_weights *w, size_t f) {
    return w && f < w->nfiles ? sdxl_st_path(w->files[f]) : NULL;
}
const sdxl_st_file *sdxl_weights_file(const sdxl_weights *w, size_t f) {
    return w && f < w->nfiles ? w->files[f] : NULL;
}

const sdxl_tensor *sdxl_weights_get(const sdxl_weights *w, const char *name) {
    if (!w) return NULL;
    long i = sdxl_naming_index(w->naming, sdxl_naming_find(w->naming, name));
    return i < 0 ? NULL : &w->w[i].tensor;
}

sdxl_status sdxl_weights_require(const sdxl_weights *w, const char *name, const sdxl_tensor **out,
                                 sdxl_error *err) {
    const sdxl_tensor *t = sdxl_weights_get(w, name);
    if (out) *out = t;
    if (!t)
        return sdxl_error_set(err, SDXL_STATUS_NOT_FOUND, "%s: no such weight in this model",
                              name ? name : "(null)");
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_weights_source(const sdxl_weights *w, size_t i, sdxl_weight_source *out) {
    if (!w || i >= w->n || !out) return SDXL_STATUS_INVALID_ARG;
    const sdxl_weight *wt = &w->w[i];
    const sdxl_name_source *s = &wt->entry->src[w->layout];
    out->path = sdxl_st_path(w->files[wt->file]);
    out->key = wt->src->name;
    out->tensor = wt->src;
    out->xform = wt->xform;
    out->row_begin = s->row_begin;
    out->row_end = s->row_end;
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_weights_read_original_range(const sdxl_weights *w, size_t i, size_t begin, size_t count, void *dst,
                                             sdxl_dtype dtype, sdxl_error *err) {
    if (!w || i >= w->n || !dst || begin > (size_t)sdxl_tensor_nelem(&w->w[i].tensor) ||
        count > (size_t)sdxl_tensor_nelem(&w->w[i].tensor) - begin)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "sdxl_weights_read_original_range: bad weight index, range or dst");
    if (dtype != SDXL_DTYPE_F32 && dtype != SDXL_DTYPE_F16 && dtype != SDXL_DTYPE_BF16)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "sdxl_weights_read_original_range: %s is not a float dtype", sdxl_dtype_name(dtype));
    const sdxl_weight *wt = &w->w[i];
    sdxl_dtype sd = SDXL_DTYPE_F32;
    st_to_dtype(wt->src->dtype, &sd);
    const uint8_t *p = src_bytes(wt);
    size_t ses = sdxl_dtype_size(sd), des = sdxl_dtype_size(dtype);
    if (wt->xform != SDXL_XFORM_TRANSPOSE) {
        convert_any(p + begin * ses, sd, dst, dtype, count);
        return SDXL_STATUS_OK;
    }
    /* internal [a, b] = source [b, a] transposed: element k = (k / b, k % b) */
    int64_t a = wt->entry->shape[0], b = wt->entry->shape[1];
    uint8_t *o = dst;
    for (size_t k = 0; k < count; k++) {
        int64_t r = (int64_t)(begin + k) / b, c = (int64_t)(begin + k) % b;
        const uint8_t *s = p + (size_t)(c * a + r) * ses;
        if (sd == dtype)
            memcpy(o + k * des, s, ses);
        else
            store_f32(o + k * des, dtype, load_f32(s, sd));
    }
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_weights_read_original(const sdxl_weights *w, size_t i, void *dst, sdxl_dtype dtype,
                                       sdxl_error *err) {
    if (!w || i >= w->n || !dst)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "sdxl_weights_read_original: bad weight index or dst");
    if (dtype != SDXL_DTYPE_F32 && dtype != SDXL_DTYPE_F16 && dtype != SDXL_DTYPE_BF16)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "sdxl_weights_read_original: %s is not a float dtype", sdxl_dtype_name(dtype));
    if ((uintptr_t)dst % sdxl_dtype_size(dtype))
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_weights_read_original: dst is not aligned");
    derive(&w->w[i], dst, dtype);
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_weights_set_data(sdxl_weights *w, size_t i, void *data, sdxl_error *err) {
    if (!w || i >= w->n)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_weights_set_data: bad weight index");
    sdxl_weight *wt = &w->w[i];
    if (data && (uintptr_t)data % sdxl_dtype_size(wt->tensor.dtype))
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "sdxl_weights_set_data: %s: data is not aligned to %zu bytes", wt->entry->name,
                              sdxl_dtype_size(wt->tensor.dtype));
    wt->tensor.data = data ? data : wt->base_data;
    return SDXL_STATUS_OK;
}

/* ---- writing an SGM single file -------------------------------------------------- */

typedef struct {
    sdxl_st_write_entry e;
    int64_t shape[SDXL_MAX_DIMS];
    void *buf; /* owned staging buffer, or NULL */
    size_t order;
} out_entry;

static int cmp_out(const void *a, const void *b) {
    const out_entry *x = a, *y = b;
    size_t sx = sdxl_st_dtype_size(x->e.dtype), sy = sdxl_st_dtype_size(y->e.dtype);
    if (sx != sy) return sx > sy ? -1 : 1; /* larger elements first keeps every tensor aligned */
    return x->order < y->order ? -1 : x->order > y->order;
}

sdxl_status sdxl_weights_single_file_metadata(const sdxl_model_config *c, const char *const *extra,
                                              const char ***out, sdxl_error *err) {
    if (!c || !out)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG,
                              "sdxl_weights_single_file_metadata: NULL argument");
    *out = NULL;
    /* self-describing metadata; keys in `extra` win */
    char vals[24][128];
    const char *keys[24];
    int nk = 0;
    snprintf(vals[nk], sizeof vals[0], "%.17g", c->vae.scaling_factor);
    keys[nk++] = "scaling_factor";
    {
        size_t off = 0;
        vals[nk][0] = 0;
        for (int l = 0; l < c->unet.num_levels && l < SDXL_MAX_LEVELS && off < sizeof vals[0]; l++)
            off += (size_t)snprintf(vals[nk] + off, sizeof vals[0] - off, "%s%d", l ? "," : "",
                                    c->unet.down_num_heads[l]);
        keys[nk++] = "unet.num_heads";
    }
    for (int k = 0; k < 2; k++) {
        snprintf(vals[nk], sizeof vals[0], "%s", sdxl_act_name(c->te[k].hidden_act));
        keys[nk++] = k ? "te2.hidden_act" : "te1.hidden_act";
        snprintf(vals[nk], sizeof vals[0], "%d", c->te[k].num_heads);
        keys[nk++] = k ? "te2.num_attention_heads" : "te1.num_attention_heads";
        snprintf(vals[nk], sizeof vals[0], "%d", c->te[k].hidden_state_index);
        keys[nk++] = k ? "te2.hidden_state_index" : "te1.hidden_state_index";
        snprintf(vals[nk], sizeof vals[0], "%.17g", c->te[k].layer_norm_eps);
        keys[nk++] = k ? "te2.layer_norm_eps" : "te1.layer_norm_eps";
        snprintf(vals[nk], sizeof vals[0], "%d", c->te[k].bos_token_id);
        keys[nk++] = k ? "te2.bos_token_id" : "te1.bos_token_id";
        snprintf(vals[nk], sizeof vals[0], "%d", c->te[k].eos_token_id);
        keys[nk++] = k ? "te2.eos_token_id" : "te1.eos_token_id";
        snprintf(vals[nk], sizeof vals[0], "%d", c->te[k].pad_token_id);
        keys[nk++] = k ? "te2.pad_token_id" : "te1.pad_token_id";
    }
    /* sizes SGM's own format hard-codes (GroupNorm(32), no upcast) */
    snprintf(vals[nk], sizeof vals[0], "%d", c->unet.norm_num_groups);
    keys[nk++] = "unet.norm_num_groups";
    snprintf(vals[nk], sizeof vals[0], "%s", c->unet.upcast_attention ? "true" : "false");
    keys[nk++] = "unet.upcast_attention";
    snprintf(vals[nk], sizeof vals[0], "%d", c->vae.norm_num_groups);
    keys[nk++] = "vae.norm_num_groups";
    snprintf(vals[nk], sizeof vals[0], "%s", c->pipeline.force_zeros_for_empty_prompt ? "true" : "false");
    keys[nk++] = "force_zeros_for_empty_prompt";
    if (c->vae.has_shift_factor) {
        snprintf(vals[nk], sizeof vals[0], "%.17g", c->vae.shift_factor);
        keys[nk++] = "shift_factor";
    }
    size_t nextra = 0;
    while (extra && extra[nextra])
        nextra += 2;
    /* one block: the pointer array, then copies of every string */
    size_t bytes = (2 * (size_t)nk + nextra + 1) * sizeof(char *);
    for (int k = 0; k < nk; k++)
        bytes += strlen(keys[k]) + strlen(vals[k]) + 2;
    for (size_t j = 0; j < nextra; j++) {
        if (!extra[j])
            return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "single-file metadata: key %s has no value",
                                  extra[j - 1]);
        bytes += strlen(extra[j]) + 1;
    }
    const char **kv = sdxl_malloc(bytes);
    if (!kv) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "single-file metadata: out of memory");
    char *sp = (char *)(kv + 2 * (size_t)nk + nextra + 1);
    size_t m = 0;
#define PUT(str)                                                                                             \
    do {                                                                                                     \
        size_t l_ = strlen(str) + 1;                                                                         \
        memcpy(sp, (str), l_);                                                                               \
        kv[m++] = sp;                                                                                        \
        sp += l_;                                                                                            \
    } while (0)
    for (int k = 0; k < nk; k++) {
        bool overridden = false;
        for (size_t j = 0; j < nextra && !overridden; j += 2)
            overridden = !strcmp(extra[j], keys[k]);
        if (overridden) continue;
        PUT(keys[k]);
        PUT(vals[k]);
    }
    for (size_t j = 0; j < nextra; j++)
        PUT(extra[j]);
#undef PUT
    kv[m] = NULL;
    *out = kv;
    return SDXL_STATUS_OK;
}

sdxl_status sdxl_weights_write_single_file(const sdxl_weights *w, const char *path, const char *const *extra,
                                           sdxl_error *err) {
    if (!w || !path)
        return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "sdxl_weights_write_single_file: NULL argument");
    out_entry *o = sdxl_calloc(w->n ? w->n : 1, sizeof *o);
    if (!o) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
    size_t no = 0;
    sdxl_status st = SDXL_STATUS_OK;
    const sdxl_naming *nm = w->naming;
    for (size_t i = 0; i < w->n && !st; i++) {
        const sdxl_weight *wt = &w->w[i];
        const sdxl_name_source *s = &wt->entry->src[SDXL_LAYOUT_SGM];
        sdxl_dtype dt = wt->tensor.dtype;
        size_t es = sdxl_dtype_size(dt);
        if (s->xform == SDXL_XFORM_ROWS &&
            sdxl_naming_find_source(nm, SDXL_LAYOUT_SGM, wt->entry->comp, s->key) != wt->entry)
            continue; /* stacked with the first entry of its key */
        out_entry *x = &o[no];
        x->order = no;
        memcpy(x->shape, s->shape, sizeof x->shape);
        x->e.name = s->key;
        x->e.dtype = dtype_to_st(dt);
        x->e.ndim = s->ndim;
        x->e.shape = x->shape;
        no++;
        if (s->xform == SDXL_XFORM_NONE || s->xform == SDXL_XFORM_RESHAPE) {
            x->e.data = wt->tensor.data;
            continue;
        }
        int64_t nel = 1;
        for (int k = 0; k < s->ndim; k++)
            nel *= s->shape[k];
        x->buf = sdxl_malloc((size_t)nel * es);
        if (!x->buf) {
            st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
            break;
        }
        x->e.data = x->buf;
        if (s->xform == SDXL_XFORM_TRANSPOSE) {
            int64_t a = wt->entry->shape[0], b = wt->entry->shape[1];
            const uint8_t *src = wt->tensor.data;
            for (int64_t r = 0; r < a; r++)
                for (int64_t c = 0; c < b; c++)
                    memcpy((uint8_t *)x->buf + (size_t)(c * a + r) * es, src + (size_t)(r * b + c) * es, es);
            continue;
        }
        /* ROWS: gather every entry that shares this key (they are adjacent
         * in the naming: q, k, v of one layer) */
        int64_t row = 1;
        for (int k = 1; k < s->ndim; k++)
            row *= s->shape[k];
        for (size_t j = i; j < w->n; j++) {
            const sdxl_name_source *sj = &w->w[j].entry->src[SDXL_LAYOUT_SGM];
            if (sj->xform != SDXL_XFORM_ROWS || strcmp(sj->key, s->key) != 0) continue;
            if (w->w[j].tensor.dtype != dt) {
                st = sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "%s: the rows of %s have different dtypes",
                                    path, s->key);
                break;
            }
            memcpy((uint8_t *)x->buf + (size_t)(sj->row_begin * row) * es, w->w[j].tensor.data,
                   (size_t)((sj->row_end - sj->row_begin) * row) * es);
        }
    }
    if (!st) {
        qsort(o, no, sizeof *o, cmp_out);
        sdxl_st_write_entry *ents = sdxl_malloc((no ? no : 1) * sizeof *ents);
        if (!ents) {
            st = sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
        } else {
            for (size_t i = 0; i < no; i++)
                ents[i] = o[i].e;
            const char **kv = NULL;
            st = sdxl_weights_single_file_metadata(&w->cfg, extra, &kv, err);
            if (!st) st = sdxl_st_write(path, ents, no, kv, err);
            sdxl_free(kv);
            sdxl_free(ents);
        }
    }
    for (size_t i = 0; i < no; i++)
        sdxl_free(o[i].buf);
    sdxl_free(o);
    return st;
}
