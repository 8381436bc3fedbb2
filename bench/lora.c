/* bench/lora.c - LoRA load, merge and restore on a model: wall times, extra
 * memory, and the merge against a bound measured in the same run.
 *
 *   sdxl_bench_lora MODEL [--lora FILE] [--rank R] [--make FILE] [--threads N] [--reps K]
 *
 * MODEL: a diffusers folder or single file (for the figure the
 * full-size SDXL: `sdxl make-model --preset sdxl-base -o base.safetensors`
 * makes a random one). Without --lora, a kohya LoRA with random weights at
 * the model's real shapes is written first (to --make, default
 * /tmp/sdxl-bench-lora-r<R>.safetensors, reused when present): rank R
 * (default 32, alpha R/2, f16, SGM kohya names as sd-scripts writes for
 * SDXL) on every Linear inside the UNet's transformer blocks (proj_in/out,
 * attn1/attn2 to_q/k/v/out.0, ff.net.0.proj, ff.net.2: 722 modules for SDXL)
 * and on both text encoders' q/k/v/out_proj and mlp fc1/fc2 (72 + 192).
 *
 * Figures:
 *   load     read + parse + bind the adapter file (ms, MB/s of file)
 *   merge    first apply at 0.8 (ms): for each touched weight, re-derive the
 *            original from the mapped bytes, up@down in f32, round to dtype
 *   bound    re-derive + round of the same weights with no delta (ms): the
 *            memory traffic a merge cannot avoid; merge/bound is the price of
 *            the low-rank products and the f32 accumulation
 *   remerge  a second apply with another strength (ms)
 *   same     applying the same set again (ms; must be ~0: nothing to do)
 *   restore  back to the file's weights (ms)
 *   memory   peak extra engine heap during the merge over the merged buffers
 *            held afterwards (the merged weights themselves are the result)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/backend.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/dtype.h"
#include "io/safetensors.h"
#include "lora/merge.h"
#include "model/weights.h"

/* ---- the random LoRA -------------------------------------------------------------- */

typedef struct {
    sdxl_st_write_entry *e;
    size_t n;
    int64_t (*shapes)[2];
    float *alpha_vals;
    char **names;
    uint64_t seed;
} gen_state;

static bool bench_module(const sdxl_name_module *m) {
    if (m->kind != SDXL_MODULE_LINEAR) return false;
    if (m->comp == SDXL_COMP_UNET) return strstr(m->path, ".attentions.") != NULL;
    if (m->comp == SDXL_COMP_TE1 || m->comp == SDXL_COMP_TE2)
        return strstr(m->path, ".self_attn.") != NULL || strstr(m->path, ".mlp.") != NULL;
    return false;
}

/* deterministic small values: uniform in ±1/sqrt(fan) */
static sdxl_status fill(void *ud, size_t index, uint64_t offset, void *buf, size_t len, sdxl_error *err) {
    (void)err;
    gen_state *g = ud;
    const sdxl_st_write_entry *e = &g->e[index];
    uint16_t *h = buf;
    if (e->dtype == SDXL_ST_F32) { /* alpha */
        memcpy(buf, (const char *)e->data + offset, len);
        return SDXL_STATUS_OK;
    }
    float sc = 1.0f / (float)e->shape[1];
    uint64_t s = g->seed ^ (index * 0x9E3779B97F4A7C15ull) ^ offset;
    for (size_t i = 0; i < len / 2; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        float u = (float)((s >> 40) & 0xFFFFFF) / 16777216.0f - 0.5f;
        h[i] = sdxl_f32_to_f16(2.0f * u * sc * 8.0f);
    }
    return SDXL_STATUS_OK;
}

static int make_lora(const sdxl_weights *w, int rank, const char *path) {
    const sdxl_naming *nm = sdxl_weights_naming(w);
    size_t nmod = 0;
    for (size_t i = 0; i < sdxl_naming_module_count(nm); i++) nmod += bench_module(sdxl_naming_module_at(nm, i));
    gen_state g = {0};
    g.e = calloc(3 * nmod, sizeof *g.e);
    g.shapes = calloc(3 * nmod, sizeof *g.shapes);
    g.alpha_vals = calloc(nmod, sizeof *g.alpha_vals);
    g.names = calloc(3 * nmod, sizeof *g.names);
    g.seed = 42;
    size_t k = 0, counts[SDXL_COMP_COUNT_] = {0};
    for (size_t i = 0, j = 0; i < sdxl_naming_module_count(nm); i++) {
        const sdxl_name_module *m = sdxl_naming_module_at(nm, i);
        if (!bench_module(m)) continue;
        counts[m->comp]++;
        const sdxl_name_entry *we = sdxl_naming_at(nm, (size_t)m->weight);
        const char *kn = m->kohya_sgm ? m->kohya_sgm : m->kohya;
        char buf[512];
        snprintf(buf, sizeof buf, "%s.lora_down.weight", kn);
        g.names[k] = strdup(buf);
        g.shapes[k][0] = rank, g.shapes[k][1] = we->shape[1];
        g.e[k] = (sdxl_st_write_entry){g.names[k], SDXL_ST_F16, 2, g.shapes[k], NULL};
        k++;
        snprintf(buf, sizeof buf, "%s.lora_up.weight", kn);
        g.names[k] = strdup(buf);
        g.shapes[k][0] = we->shape[0], g.shapes[k][1] = rank;
        g.e[k] = (sdxl_st_write_entry){g.names[k], SDXL_ST_F16, 2, g.shapes[k], NULL};
        k++;
        snprintf(buf, sizeof buf, "%s.alpha", kn);
        g.names[k] = strdup(buf);
        g.alpha_vals[j] = (float)rank / 2.0f;
        g.e[k] = (sdxl_st_write_entry){g.names[k], SDXL_ST_F32, 0, NULL, &g.alpha_vals[j]};
        k++, j++;
    }
    g.n = k;
    char rs[16];
    snprintf(rs, sizeof rs, "%d", rank);
    const char *meta[] = {"ss_network_module", "networks.lora", "ss_network_dim", rs, "ss_base_model_version",
                          "sdxl_base_v1-0", "ss_output_name", "bench_random", NULL};
    sdxl_error err = {0};
    printf("writing %s: rank %d, %zu modules (unet %zu, te1 %zu, te2 %zu)\n", path, rank, nmod,
           counts[SDXL_COMP_UNET], counts[SDXL_COMP_TE1], counts[SDXL_COMP_TE2]);
    sdxl_status st = sdxl_st_write_cb(path, g.e, g.n, meta, fill, &g, &err);
    if (st) fprintf(stderr, "bench lora: %s\n", err.msg);
    for (size_t i = 0; i < k; i++) free(g.names[i]);
    free(g.names), free(g.e), free(g.shapes), free(g.alpha_vals);
    return st ? 1 : 0;
}

/* ---- the bound: re-derive + round every weight the adapter touches ---------------- */

static double bound_ms(const sdxl_weights *w, const sdxl_lora_adapter *a) {
    double t0 = sdxl_now_s();
    for (size_t i = 0; i < sdxl_lora_adapter_module_count(a); i++) {
        size_t e = (size_t)sdxl_lora_adapter_module(a, i)->module->weight;
        const sdxl_tensor *t = &sdxl_weights_at(w, e)->tensor;
        size_t n = (size_t)sdxl_tensor_nelem(t);
        float *f = sdxl_malloc(n * 4);
        void *o = sdxl_malloc(n * sdxl_dtype_size(t->dtype));
        if (f && o && !sdxl_weights_read_original(w, e, f, SDXL_DTYPE_F32, NULL))
            sdxl_convert_n(f, SDXL_DTYPE_F32, o, t->dtype, n);
        sdxl_free(f);
        sdxl_free(o);
    }
    return sdxl_ms_since(t0);
}

int main(int argc, char **argv) {
    const char *model = NULL, *lora = NULL, *make = NULL;
    int rank = 32, threads = 0, reps = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--lora") && i + 1 < argc) lora = argv[++i];
        else if (!strcmp(argv[i], "--make") && i + 1 < argc) make = argv[++i];
        else if (!strcmp(argv[i], "--rank") && i + 1 < argc) rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (argv[i][0] != '-' && !model) model = argv[i];
        else {
            fprintf(stderr, "usage: sdxl_bench_lora MODEL [--lora FILE] [--rank R] [--make FILE] [--threads N] "
                            "[--reps K]\n");
            return 2;
        }
    }
    if (!model || rank < 1 || reps < 1) {
        fprintf(stderr, "sdxl_bench_lora: a MODEL is needed (a full-size SDXL for the issue's figure)\n");
        return 2;
    }
    sdxl_error err = {0};
    sdxl_weights *w = NULL;
    if (sdxl_weights_load(model, NULL, &w, &err)) {
        fprintf(stderr, "bench lora: %s\n", err.msg);
        return 1;
    }
    char made[512];
    if (!lora) {
        if (!make) {
            snprintf(made, sizeof made, "/tmp/sdxl-bench-lora-r%d.safetensors", rank);
            make = made;
        }
        struct stat sb;
        if (stat(make, &sb) != 0 && make_lora(w, rank, make)) return 1;
        lora = make;
    }
    sdxl_backend_params bp = sdxl_backend_default_params();
    bp.n_threads = threads;
    sdxl_backend *be = sdxl_backend_create(&bp, &err);
    sdxl_lora_merger *mg = NULL;
    if (!be || sdxl_lora_merger_create(w, be, &mg, &err)) {
        fprintf(stderr, "bench lora: %s\n", err.msg);
        return 1;
    }
    struct stat sb;
    stat(lora, &sb);
    printf("model %s, adapter %s (%.1f MiB), %d threads\n", model, lora, (double)sb.st_size / 1048576.0,
           be->n_threads);
    double best_load = 1e30, best_merge = 1e30, best_bound = 1e30, best_remerge = 1e30, best_same = 1e30,
           best_restore = 1e30;
    size_t held_bytes = 0, peak_extra = 0, nmod = 0, merged = 0;
    for (int r = 0; r < reps; r++) {
        sdxl_lora_adapter *a = NULL;
        double t0 = sdxl_now_s();
        if (sdxl_lora_adapter_load(lora, sdxl_weights_naming(w), &a, &err)) {
            fprintf(stderr, "bench lora: %s\n", err.msg);
            return 1;
        }
        double tl = sdxl_ms_since(t0);
        nmod = sdxl_lora_adapter_module_count(a);
        sdxl_mem_stats m0, m1;
        sdxl_mem_get_stats(&m0);
        sdxl_mem_reset_peak();
        sdxl_lora_merge_stats ms;
        sdxl_lora_apply set = {a, 0.8f, 0.8f};
        if (sdxl_lora_merger_apply(mg, &set, 1, 1.0f, &ms, &err)) {
            fprintf(stderr, "bench lora: %s\n", err.msg);
            return 1;
        }
        sdxl_mem_get_stats(&m1);
        merged = ms.merged;
        held_bytes = ms.bytes;
        peak_extra = (size_t)(m1.peak_bytes - m0.live_bytes);
        double tm = ms.ms;
        set.unet_weight = set.te_weight = 0.5f;
        sdxl_lora_merger_apply(mg, &set, 1, 1.0f, &ms, &err);
        double trm = ms.ms;
        sdxl_lora_merger_apply(mg, &set, 1, 1.0f, &ms, &err);
        double tsame = ms.ms;
        sdxl_lora_merger_restore(mg, &ms);
        double tr = ms.ms;
        double tb = bound_ms(w, a);
        sdxl_lora_adapter_free(a);
        if (tl < best_load) best_load = tl;
        if (tm < best_merge) best_merge = tm;
        if (tb < best_bound) best_bound = tb;
        if (trm < best_remerge) best_remerge = trm;
        if (tsame < best_same) best_same = tsame;
        if (tr < best_restore) best_restore = tr;
    }
    printf("modules %zu, weights merged %zu\n", nmod, merged);
    printf("load      %8.1f ms  (%.0f MB/s of file)\n", best_load, (double)sb.st_size / 1e6 / (best_load / 1e3));
    printf("merge     %8.1f ms  = %.2fx the bound\n", best_merge, best_merge / best_bound);
    printf("bound     %8.1f ms  (re-derive + round the touched weights, no delta)\n", best_bound);
    printf("remerge   %8.1f ms  (new strength)\n", best_remerge);
    printf("same set  %8.3f ms\n", best_same);
    printf("restore   %8.3f ms\n", best_restore);
    printf("memory    merged buffers held %.1f MiB; peak extra heap during the merge %.1f MiB (%.2fx held)\n",
           (double)held_bytes / 1048576.0, (double)peak_extra / 1048576.0,
           held_bytes ? (double)peak_extra / (double)held_bytes : 0.0);
    sdxl_lora_merger_free(mg);
    sdxl_backend_free(be);
    sdxl_weights_free(w);
    return 0;
}
