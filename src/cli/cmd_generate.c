/* cmd_generate.c - `sdxl generate`: prompt → images on the CPU back end.
 *
 *   tokenize + encode (both CLIP encoders) → denoise (sampler × UNet, CFG)
 *   → VAE decode → PNG with an A1111-style `parameters` text chunk
 *
 * Noise: torch's CPU generator (`--rng cpu`, the only mode so far): round r
 * of --n-iter draws the [B,4,h,w] latents in one randn from a generator
 * seeded with seed + r·B, as diffusers does for one call with a batch, so
 * image i of a round matches diffusers' batch for that seed. `--init-latents`
 * replaces the draw with a safetensors tensor used as given (diffusers'
 * `latents=`), `--save-latents` writes the final latents (before VAE
 * decode). Ctrl-C stops after the current step and writes nothing.
 * `--rng cuda`: torch's CUDA generator (sample/rng_philox.h, A1111's GPU
 * seed): image i of round r gets its own [1,4,h,w] draw from a fresh
 * generator seeded with seed + r·B + i, as A1111 does; the PNG says
 * "RNG: NV" (A1111's name for its CPU copy of the GPU noise). Only the
 * initial latents come from it; stochastic samplers' step noise still comes
 * from the CPU generator, and img2img takes --rng cpu only.
 *
 * img2img: `--init-image FILE` (PNG; its size is the image size, and
 * --width/--height, when given, must equal it) and `--strength S` (0.3, as
 * diffusers): pipeline/img2img.h encodes the image, samples the posterior and
 * noises it to the start step with the round's generator, exactly in
 * diffusers' rng order, then the denoise loop runs from that step.
 *
 * Memory: `--memory-budget MB` caps the UNet arena; a batch over it runs in
 * sub-batches of rows with identical results (pipeline/denoise.h). Default:
 * half the physical RAM. The split is reported on stderr.
 *
 * Infotext: `Model hash` is A1111's AutoV2 hash (first 10 hex digits of the
 * file's SHA-256), computed once per run for a single-file model (about 20 s
 * for 7 GB) and left out for a diffusers folder.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "cli/commands.h"
#include "cli/lora_cli.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "image/png.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "lora/worker.h"
#include "model/model.h"
#include "pipeline/generate.h"
#include "pipeline/img2img.h"
#include "worker/request.h"

#define MAX_SIDE 4096
#define MAX_STEPS 1000
#define MAX_BATCH 64
#define MAX_LORAS 64

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) { (void)sig, interrupted = 1; }

typedef struct {
    const char *model, *prompt, *prompt_2, *negative, *negative_2, *out, *sampler, *init_latents, *save_latents;
    const char *spacing, *init_image;
    double strength;
    int width, height, steps, batch, n_iter, threads;
    double cfg, rescale;
    long long seed;
    bool karras, quiet, rng_cuda;
    sdxl_prompt_params pp;
    double memory_budget_mb; /* --memory-budget: < 0 default (see default_memory_budget), 0 no limit */
    sdxl_lora_spec lora; /* --lora, <lora:...> tags, the request's lora block */
    bool global_weight_set;
    double global_weight;
    const char *lora_dirs[SDXL_LORA_WORKER_MAX_DIRS];
    int n_lora_dirs;
    const char *config;      /* --config WORKER.json */
    long lora_memory_mb, lora_cache_size; /* -1: the config's */
    bool no_lora_cache;
    const char *request;     /* --request REQ.json */
    sdxl_request req;        /* parsed --request */
    char req_out[1200];      /* its output pattern */
} gen_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: sdxl generate --model PATH --prompt TEXT [options]\n"
            "  --model PATH             diffusers folder or single-file checkpoint (default demo/model)\n"
            "  --prompt, --prompt-2, --negative, --negative-2 TEXT\n"
            "  --width W --height H     image size, multiples of 8 (default: the model's sample size)\n"
            "  --steps N (20)  --cfg G (5.0)  --guidance-rescale R (0)\n"
            "  --sampler NAME           euler (default), euler_a, dpmpp_2m, ddim; diffusers / A1111 names too\n"
            "  --karras                 Karras sigmas (euler, dpmpp_2m)\n"
            "  --timestep-spacing leading|trailing|linspace\n"
            "  --seed S (-1 = random)  --batch B (1)  --n-iter N (1)  --rng cpu|cuda\n"
            "  --prompt-syntax a1111|plain  --long-prompts chunk|truncate\n"
            "  --init-latents FILE      safetensors [B,4,h,w], used as given (diffusers latents=)\n"
            "  --save-latents FILE      final latents (before VAE decode) as safetensors\n"
            "  --init-image FILE        img2img from a PNG (its size; --width/--height must match if given)\n"
            "  --strength S             img2img strength in (0,1] (default 0.3)\n"
            "  -o FILE                  output PNG (default out.png); with several images: FILE-N.png,\n"
            "                           or a pattern with %%d (image index)\n"
            "  --memory-budget MB       UNet activation budget: a batch whose UNet arena exceeds it runs in\n"
            "                           sub-batches (same result); 0 = no limit (default: half the RAM)\n"
            "  --lora NAME[:WEIGHT]     apply a LoRA/LyCORIS adapter: a file (safetensors or .pt/.bin/.ckpt) or a\n"
            "                           name found in the LoRA directories; weight 1.0 by default; repeatable\n"
            "                           (stacked: W + sum of weight x delta). <lora:NAME:WEIGHT> in the prompt too\n"
            "  --lora-dir DIR           a LoRA directory (repeatable; categories from sub-folders)\n"
            "  --global-weight X        multiplies every adapter's weight (default 1)\n"
            "  --config WORKER.json     worker config: {\"lora_config\": {\"lora_directories\": [...], ...}}\n"
            "  --lora-memory-mb MB  --lora-cache-size N  --no-lora-cache   override the config's memory_limit_mb,\n"
            "                           cache_size, enable_caching\n"
            "  --request REQ.json       run one request in the seed's JSON format; prints the result JSON\n"
            "  --threads N  -q\n");
}

/* --request REQ.json: the seed's request onto the options; 0 or 2 (usage). */
static int load_request(const char *path, gen_opts *o) {
    sdxl_error err = {0};
    char *json = NULL;
    size_t len = 0;
    if (sdxl_read_file(path, (size_t)16 << 20, &json, &len, &err)) {
        fprintf(stderr, "generate: --request: %s\n", err.msg);
        return 2;
    }
    sdxl_request_limits lim = sdxl_request_default_limits();
    lim.max_side = MAX_SIDE, lim.max_steps = MAX_STEPS, lim.max_batch = MAX_BATCH;
    lim.output_dir_any_path = true; /* the user's own file: output_dir as written */
    sdxl_status st = sdxl_request_parse(json, len, &lim, &o->req, &err);
    sdxl_free(json);
    if (st) {
        char *ej = sdxl_error_json("", "invalid_request", err.msg);
        if (ej) printf("%s\n", ej);
        free(ej);
        fprintf(stderr, "generate: %s: %s\n", path, err.msg);
        return 2;
    }
    sdxl_request *r = &o->req;
    o->request = path;
    o->prompt = r->prompt;
    o->negative = r->negative_prompt;
    o->width = r->width;
    o->height = r->height;
    o->steps = r->steps;
    o->cfg = r->guidance_scale;
    o->sampler = r->scheduler;
    o->seed = r->seed;
    o->rng_cuda = r->rng_cuda;
    o->batch = r->batch_size;
    o->lora = r->lora;
    /* images: <output_dir>/<request_id or "image">-<n>.png */
    snprintf(o->req_out, sizeof o->req_out, "%s/%s-%%d.png", r->output_dir, r->request_id[0] ? r->request_id : "image");
    for (char *c = o->req_out + strlen(r->output_dir) + 1; *c; c++)
        if (*c == '/' || *c == '\\') *c = '_'; /* a request id never makes a path */
    o->out = o->req_out;
    o->quiet = true;
    return 0;
}

static int parse(int argc, char **argv, gen_opts *o) {
    memset(o, 0, sizeof *o);
    o->model = "demo/model";
    o->out = "out.png";
    o->sampler = "euler";
    o->steps = 20;
    o->batch = 1;
    o->n_iter = 1;
    o->cfg = 5.0;
    o->seed = -1;
    o->strength = SDXL_IMG2IMG_DEFAULT_STRENGTH;
    o->pp = sdxl_prompt_default_params();
    o->memory_budget_mb = -1;
    o->global_weight = 1.0;
    o->lora.global_weight = 1.0f;
    o->lora_memory_mb = o->lora_cache_size = -1;
    /* --request first: its fields are the defaults the other options override */
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--request") && load_request(argv[i + 1], o)) return 2;
    static const struct option opts[] = {
        {"model", 1, 0, 'm'}, {"prompt", 1, 0, 'p'}, {"prompt-2", 1, 0, 'P'}, {"negative", 1, 0, 'n'},
        {"negative-2", 1, 0, 'N'}, {"width", 1, 0, 'W'}, {"height", 1, 0, 'H'}, {"steps", 1, 0, 's'},
        {"cfg", 1, 0, 'g'}, {"guidance-rescale", 1, 0, 'r'}, {"sampler", 1, 0, 'S'}, {"karras", 0, 0, 'k'},
        {"timestep-spacing", 1, 0, 't'}, {"seed", 1, 0, 'e'}, {"batch", 1, 0, 'b'}, {"n-iter", 1, 0, 'i'},
        {"rng", 1, 0, 'R'}, {"prompt-syntax", 1, 0, 'y'}, {"long-prompts", 1, 0, 'l'},
        {"init-latents", 1, 0, 'L'}, {"save-latents", 1, 0, 'A'}, {"output", 1, 0, 'o'}, {"threads", 1, 0, 'T'},
        {"init-image", 1, 0, 'I'}, {"strength", 1, 0, 'Z'}, {"memory-budget", 1, 0, 'M'},
        {"lora", 1, 0, 'O'}, {"global-weight", 1, 0, 'G'}, {"lora-dir", 1, 0, 'D'}, {"config", 1, 0, 'C'},
        {"request", 1, 0, 'Q'}, {"lora-memory-mb", 1, 0, 'B'}, {"lora-cache-size", 1, 0, 'Y'},
        {"no-lora-cache", 0, 0, 'X'},
        {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "m:p:n:o:s:qh", opts, NULL)) != -1) {
        char *end = NULL;
        switch (ch) {
        case 'm': o->model = optarg; break;
        case 'p': o->prompt = optarg; break;
        case 'P': o->prompt_2 = optarg; break;
        case 'n': o->negative = optarg; break;
        case 'N': o->negative_2 = optarg; break;
        case 'W': o->width = (int)strtol(optarg, &end, 10); break;
        case 'H': o->height = (int)strtol(optarg, &end, 10); break;
        case 's': o->steps = (int)strtol(optarg, &end, 10); break;
        case 'g': o->cfg = strtod(optarg, &end); break;
        case 'r': o->rescale = strtod(optarg, &end); break;
        case 'S': o->sampler = optarg; break;
        case 'k': o->karras = true; break;
        case 't': o->spacing = optarg; break;
        case 'e': o->seed = strtoll(optarg, &end, 10); break;
        case 'b': o->batch = (int)strtol(optarg, &end, 10); break;
        case 'i': o->n_iter = (int)strtol(optarg, &end, 10); break;
        case 'R':
            if (!strcmp(optarg, "cpu")) o->rng_cuda = false;
            else if (!strcmp(optarg, "cuda") || !strcmp(optarg, "gpu") || !strcmp(optarg, "nv")) o->rng_cuda = true;
            else return fprintf(stderr, "generate: --rng must be cpu or cuda\n"), 2;
            break;
        case 'y':
            if (!strcmp(optarg, "a1111")) o->pp.syntax = SDXL_PROMPT_A1111;
            else if (!strcmp(optarg, "plain")) o->pp.syntax = SDXL_PROMPT_PLAIN;
            else return fprintf(stderr, "generate: --prompt-syntax must be a1111 or plain\n"), 2;
            break;
        case 'l':
            if (!strcmp(optarg, "chunk")) o->pp.long_mode = SDXL_LONG_CHUNK;
            else if (!strcmp(optarg, "truncate")) o->pp.long_mode = SDXL_LONG_TRUNCATE;
            else return fprintf(stderr, "generate: --long-prompts must be chunk or truncate\n"), 2;
            break;
        case 'L': o->init_latents = optarg; break;
        case 'A': o->save_latents = optarg; break;
        case 'o': o->out = optarg; break;
        case 'I': o->init_image = optarg; break;
        case 'Z': o->strength = strtod(optarg, &end); break;
        case 'T': o->threads = (int)strtol(optarg, &end, 10); break;
        case 'M':
            o->memory_budget_mb = strtod(optarg, &end);
            if (!(o->memory_budget_mb >= 0 && o->memory_budget_mb <= 1e12))
                return fprintf(stderr, "generate: --memory-budget must be a number of MB >= 0\n"), 2;
            break;
        case 'O':
            if (!sdxl_cli_lora_add(&o->lora, optarg)) return 2;
            break;
        case 'G': o->global_weight = strtod(optarg, &end), o->global_weight_set = true; break;
        case 'D':
            if (o->n_lora_dirs == SDXL_LORA_WORKER_MAX_DIRS)
                return fprintf(stderr, "generate: at most %d --lora-dir\n", SDXL_LORA_WORKER_MAX_DIRS), 2;
            o->lora_dirs[o->n_lora_dirs++] = optarg;
            break;
        case 'C': o->config = optarg; break;
        case 'B': o->lora_memory_mb = strtol(optarg, &end, 10); break;
        case 'Y': o->lora_cache_size = strtol(optarg, &end, 10); break;
        case 'X': o->no_lora_cache = true; break;
        case 'Q': break; /* read before the loop */
        case 'q': o->quiet = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (end && *end) {
            fprintf(stderr, "generate: '%s' is not a number\n", optarg);
            return 2;
        }
    }
    if (!o->prompt) return fprintf(stderr, "generate: --prompt is required (see --help)\n"), 2;
    if (o->global_weight_set) o->lora.global_weight = (float)o->global_weight;
    if ((o->lora_memory_mb != -1 && (o->lora_memory_mb < 1 || o->lora_memory_mb > (1L << 24))) ||
        (o->lora_cache_size != -1 && (o->lora_cache_size < 0 || o->lora_cache_size > 100000)))
        return fprintf(stderr, "generate: --lora-memory-mb must be in 1..16777216, --lora-cache-size >= 0\n"), 2;
    if ((o->width && (o->width % 8 || o->width < 8 || o->width > MAX_SIDE)) ||
        (o->height && (o->height % 8 || o->height < 8 || o->height > MAX_SIDE)))
        return fprintf(stderr, "generate: --width/--height must be multiples of 8 in 8..%d (got %dx%d)\n", MAX_SIDE,
                       o->width, o->height),
               2;
    if (o->steps < 1 || o->steps > MAX_STEPS)
        return fprintf(stderr, "generate: --steps must be in 1..%d\n", MAX_STEPS), 2;
    if (o->batch < 1 || o->batch > MAX_BATCH || o->n_iter < 1 || o->n_iter > 10000)
        return fprintf(stderr, "generate: --batch must be in 1..%d and --n-iter >= 1\n", MAX_BATCH), 2;
    if (!isfinite(o->cfg) || !isfinite(o->rescale) || o->rescale < 0 || o->rescale > 1)
        return fprintf(stderr, "generate: --cfg must be finite and --guidance-rescale in [0,1]\n"), 2;
    if (!(o->strength > 0 && o->strength <= 1))
        return fprintf(stderr, "generate: --strength must be in (0,1]\n"), 2;
    if (!isfinite(o->global_weight) || fabs(o->global_weight) > 1e6)
        return fprintf(stderr, "generate: --global-weight must be a finite number\n"), 2;
    if (o->init_image && o->init_latents)
        return fprintf(stderr, "generate: --init-image and --init-latents exclude each other\n"), 2;
    return -1;
}

typedef struct {
    bool tty, quiet;
    double t0;
    int round, rounds;
} progress;


static bool on_step(void *ud, int round, int step, int total) {
    progress *p = ud;
    if (step == 1 || round != p->round) p->t0 = sdxl_now_s(), p->round = round;
    double el = sdxl_now_s() - p->t0, its = step / (el > 0 ? el : 1e-9), eta = (total - step) / its;
    if (!p->quiet) {
        if (p->tty) {
            int bar = 30, fill = step * bar / total;
            fprintf(stderr, "\r[%d/%d] [%.*s%*s] step %d/%d  %.2f it/s  ETA %.1fs ", p->round + 1, p->rounds, fill,
                    "##############################", bar - fill, "", step, total, its, eta);
            if (step == total) fputc('\n', stderr);
        } else if (step == total || step % 10 == 0) {
            fprintf(stderr, "generate: round %d/%d step %d/%d %.2f it/s\n", p->round + 1, p->rounds, step, total, its);
        }
    }
    return !interrupted;
}

static void out_name(const char *pattern, int index, int total, char *buf, size_t n) {
    if (strstr(pattern, "%d")) {
        snprintf(buf, n, pattern, index);
    } else if (total == 1) {
        snprintf(buf, n, "%s", pattern);
    } else {
        const char *dot = strrchr(pattern, '.');
        int stem = dot ? (int)(dot - pattern) : (int)strlen(pattern);
        snprintf(buf, n, "%.*s-%d%s", stem, pattern, index, dot ? dot : "");
    }
}

/* --memory-budget default: half the physical RAM (sysconf); the other half is
 * left to the weights (mapped), the VAE and the rest. 0 (no limit) when the
 * system does not say. */
static size_t default_memory_budget(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return 0;
    double half = (double)pages * (double)page / 2;
    return half >= (double)SIZE_MAX ? SIZE_MAX : (size_t)half;
}

static const char *base_name(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    static char buf[256];
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    snprintf(buf, sizeof buf, "%.*s", (int)(n - b), path + b);
    return buf;
}

/* What the generation callbacks need. */
typedef struct {
    progress pr; /* first: on_step reads the user data as a progress */
    const gen_opts *o;
    sdxl_gen_params *gp;
    sdxl_gen_stats *gs; /* filled as the run goes: valid in on_image */
    const char *model_name, *model_hash, *lora_hashes;
    sdxl_result_image *images;
    int total;
    char params_text[8192];
} run_ctx;

static sdxl_status on_image(void *ud, const sdxl_gen_image *img, sdxl_error *err) {
    run_ctx *c = ud;
    sdxl_gen_infotext(c->params_text, sizeof c->params_text, c->gp, c->gs, img, c->o->prompt, c->model_name,
                      c->model_hash, c->lora_hashes);
    const char *text[] = {"parameters", c->params_text, NULL};
    char path[4096];
    out_name(c->o->out, img->number, c->total, path, sizeof path);
    sdxl_status st = sdxl_png_write(path, img->rgb, img->width, img->height, text, err);
    if (st) return st;
    if (!c->o->request) printf("%s  seed %llu  %dx%d\n", path, (unsigned long long)img->seed, img->width, img->height);
    snprintf(c->images[img->number].path, sizeof c->images[img->number].path, "%s", path);
    c->images[img->number].seed = img->seed;
    return SDXL_STATUS_OK;
}

static sdxl_status on_latents(void *ud, int round, uint64_t round_seed, const float *latents, const int64_t shape[4],
                              sdxl_error *err) {
    run_ctx *c = ud;
    sdxl_st_write_entry e = {"latents", SDXL_ST_F32, 4, shape, latents};
    char sp[32];
    snprintf(sp, sizeof sp, "%llu", (unsigned long long)round_seed);
    const char *meta[] = {"seed", sp, "prompt", c->o->prompt, NULL};
    char lp[4096];
    out_name(c->o->save_latents, round, c->o->n_iter, lp, sizeof lp);
    return sdxl_st_write(lp, &e, 1, meta, err);
}

static void on_plan(void *ud, int rows, int per_pass, size_t arena_bytes) {
    run_ctx *c = ud;
    if (!c->o->quiet && per_pass < rows)
        fprintf(stderr,
                "generate: UNet batch of %d rows over the memory budget (%.0f MB): running %d rows per pass "
                "(arena %.0f MB)\n",
                rows, (double)c->gp->memory_budget / 1048576.0, per_pass, (double)arena_bytes / 1048576.0);
}

int sdxl_cmd_generate(int argc, char **argv) {
    gen_opts o;
    int prc = parse(argc, argv, &o);
    if (prc >= 0) return prc;
    if (strstr(o.out, "%") && !strstr(o.out, "%d"))
        return fprintf(stderr, "generate: -o pattern may only contain %%d\n"), 2;

    sdxl_error err = {0};
    sdxl_model *m = NULL;
    sdxl_backend *be = NULL;
    uint8_t *init_rgb = NULL;
    float *init_lat = NULL;
    sdxl_lora_worker *lw = NULL;
    sdxl_lora_report lrep = {0};
    char *clean_prompt = NULL;
    sdxl_result_image *images = NULL;
    sdxl_result_timings tm = {0};
    double t_begin = sdxl_now_s();
    int rc = 1, iw = 0, ih = 0;
    if (sdxl_model_load(o.model, NULL, &m, &err)) goto fail;
    if (o.init_image && sdxl_png_read(o.init_image, &init_rgb, &iw, &ih, &err)) goto fail;

    sdxl_backend_params bp = sdxl_backend_default_params();
    bp.n_threads = o.threads;
    if (!(be = sdxl_backend_create(&bp, &err))) goto fail;
    /* <lora:NAME:W> tags: applied, and removed from the text that is encoded */
    char tag_warning[256];
    size_t plen = strlen(o.prompt) + 1;
    if (!(clean_prompt = sdxl_malloc(plen))) goto fail;
    if (sdxl_lora_extract_prompt_tags(o.prompt, clean_prompt, plen, &o.lora, tag_warning, sizeof tag_warning, &err))
        goto fail;
    if (tag_warning[0]) fprintf(stderr, "generate: %s\n", tag_warning);
    if ((o.lora.enabled && o.lora.n) || o.request || o.n_lora_dirs || o.config) {
        double tl = sdxl_now_s();
        sdxl_lora_worker_config lcfg;
        if (!sdxl_cli_lora_config(o.config, o.lora_dirs, o.n_lora_dirs, &lcfg)) {
            rc = 2;
            goto done;
        }
        if (o.lora_memory_mb > 0) lcfg.memory_limit_mb = (size_t)o.lora_memory_mb;
        if (o.lora_cache_size >= 0) lcfg.cache_size = (size_t)o.lora_cache_size;
        if (o.no_lora_cache) lcfg.enable_caching = false;
        if (sdxl_lora_worker_create(&lcfg, m->weights, be, &lw, &err)) goto fail;
        if (sdxl_lora_worker_apply(lw, &o.lora, &lrep, &err)) goto fail;
        if (!o.request || !o.quiet || lrep.applied < lrep.n) sdxl_cli_lora_print_report(stderr, &lrep);
        tm.lora_ms = sdxl_ms_since(tl);
    }
    if (!(images = sdxl_calloc((size_t)o.batch * (size_t)o.n_iter, sizeof *images))) {
        sdxl_error_set(&err, SDXL_STATUS_OUT_OF_MEMORY, "image list");
        goto fail;
    }
    if (o.request && mkdir(o.req.output_dir, 0777) != 0 && errno != EEXIST) {
        sdxl_error_set(&err, SDXL_STATUS_IO, "output_dir %s: %s", o.req.output_dir, strerror(errno));
        goto fail;
    }

    sdxl_gen_params gp = sdxl_gen_default_params();
    gp.prompt = clean_prompt;
    gp.prompt_2 = o.prompt_2;
    gp.negative = o.negative;
    gp.negative_2 = o.negative_2;
    gp.prompt_params = o.pp;
    gp.width = o.width;
    gp.height = o.height;
    gp.steps = o.steps;
    gp.batch = o.batch;
    gp.n_iter = o.n_iter;
    gp.cfg = o.cfg;
    gp.guidance_rescale = o.rescale;
    gp.sampler = o.sampler;
    gp.karras = o.karras;
    gp.spacing = o.spacing;
    gp.seed = o.seed;
    gp.rng_cuda = o.rng_cuda;
    gp.init_rgb = init_rgb;
    gp.init_width = iw;
    gp.init_height = ih;
    gp.strength = o.strength;
    gp.memory_budget = o.memory_budget_mb < 0 ? default_memory_budget() : (size_t)(o.memory_budget_mb * 1048576.0);
    if (o.init_latents) { /* [B,C,h,w] f32, checked against the model's latent shape */
        const sdxl_model_config *cfg = sdxl_weights_config(m->weights);
        int f = 1 << (cfg->vae.num_levels - 1);
        int W = o.width ? o.width : cfg->unet.sample_size * f, H = o.height ? o.height : cfg->unet.sample_size * f;
        int64_t nlat = (int64_t)o.batch * cfg->unet.in_channels * (H / f) * (W / f);
        sdxl_st_file *lf = NULL;
        if (sdxl_st_open(o.init_latents, &lf, &err)) goto fail;
        const sdxl_st_tensor *t = sdxl_st_count(lf) == 1 ? sdxl_st_at(lf, 0) : sdxl_st_find(lf, "latents");
        if (!t || t->dtype != SDXL_ST_F32 || t->nbytes != (size_t)nlat * 4 || !(init_lat = sdxl_malloc(t->nbytes))) {
            sdxl_error_set(&err, SDXL_STATUS_BAD_INPUT, "%s: need one f32 tensor (or 'latents') of %lld floats",
                           o.init_latents, (long long)nlat);
            sdxl_st_close(lf);
            goto fail;
        }
        memcpy(init_lat, t->data, t->nbytes);
        sdxl_st_close(lf);
        gp.init_latents = init_lat;
    }
    char mhash[11] = "", lora_hashes[2048];
    sdxl_model_autov2_hash(o.model, m->weights, mhash);
    sdxl_lora_report_hashes(&lrep, lora_hashes, sizeof lora_hashes);
    sdxl_gen_stats gs;
    run_ctx rc_ = {.pr = {.tty = isatty(2), .quiet = o.quiet, .rounds = o.n_iter}, .o = &o, .gp = &gp, .gs = &gs,
                   .model_name = base_name(o.model), .model_hash = mhash, .lora_hashes = lora_hashes,
                   .images = images, .total = o.batch * o.n_iter};
    gp.on_step = on_step;
    gp.on_image = on_image;
    gp.on_latents = o.save_latents ? on_latents : NULL;
    gp.on_plan = on_plan;
    gp.user_data = &rc_;
    signal(SIGINT, on_sigint);
    sdxl_status gst = sdxl_generate(be, m, &gp, &gs, &err);
    if (gst) {
        if (gst == SDXL_STATUS_CANCELLED) fprintf(stderr, "\ngenerate: interrupted; nothing more written\n");
        if (gst == SDXL_STATUS_INVALID_ARG) rc = 2;
        goto fail_rc;
    }
    tm.encode_ms = gs.encode_ms;
    tm.denoise_ms = gs.denoise_ms;
    tm.decode_ms = gs.decode_ms;
    rc = 0;
    if (o.request) { /* the result JSON on stdout */
        tm.total_ms = sdxl_ms_since(t_begin);
        char *js = sdxl_result_json(&o.req, images, (size_t)gs.images, &lrep, &tm, NULL, 0);
        if (js) printf("%s\n", js);
        free(js);
    }
    goto done;
fail:
    rc = 1;
fail_rc:
    fprintf(stderr, "generate: %s\n", err.msg);
    if (err.status == SDXL_STATUS_CANCELLED) rc = 130;
    if (o.request) {
        char *js = sdxl_error_json(o.req.request_id, err.status == SDXL_STATUS_CANCELLED ? "cancelled" : "failed",
                                   err.msg);
        if (js) printf("%s\n", js);
        free(js);
    }
done:
    sdxl_free(init_rgb);
    sdxl_free(init_lat);
    sdxl_lora_report_free(&lrep);
    sdxl_lora_worker_free(lw); /* restores the weights */
    sdxl_free(clean_prompt);
    sdxl_free(images);
    sdxl_request_free(&o.req);
    sdxl_backend_free(be);
    sdxl_model_free(m);
    return rc;
}
