/* cmd_make_model.c - `sdxl make-model`: write an SDXL model with seeded
 * random weights, of a built-in or copied config, as a diffusers folder or
 * one single file (model/make_model.h does the work), or, with --smoke, the
 * one-stage model `sdxl smoke` runs (cmd_smoke.c).
 *
 * Exit status: 0 written; 1 the model could not be written (the output
 * exists, cannot be created, a config folder is broken, ...); 2 usage.
 * Ctrl-C stops it between chunks and removes the partial output.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "cli/commands.h"
#include "model/make_model.h"
#include "model/presets.h"

static void usage(FILE *f) {
    fprintf(f, "usage: sdxl make-model --config NAME|DIR -o PATH [--layout diffusers|single]\n"
               "                        [--dtype f16|bf16|f32] [--seed N] [options]\n"
               "       sdxl make-model --smoke -o FILE [--dtype f16|bf16|f32] [--seed N]\n"
               "\n"
               "Write an SDXL model with seeded random weights, for benchmarks and tests that need\n"
               "real shapes. Weights are N(0, 1/fan_in), norm gains 1 + N(0, 0.02^2), biases and\n"
               "embedding tables N(0, 0.02^2), so activations keep their scale even through the\n"
               "full-size UNet; the same seed gives the same values in both layouts and on every\n"
               "machine. The result is built next to PATH, loaded back and compared with the\n"
               "config, then renamed to PATH: PATH never holds a partial model, and it must not\n"
               "exist yet. Exit status: 0 written, 1 failed (nothing left behind), 2 usage.\n"
               "\n"
               "  -c, --config NAME|DIR  a built-in config:\n");
    for (size_t i = 0; i < sdxl_model_preset_count(); i++)
        fprintf(f, "                           %-10s %s\n", sdxl_model_preset_at(i)->name,
                sdxl_model_preset_at(i)->summary);
    fprintf(f, "                         or a diffusers folder: its model_index.json, config.json files,\n"
               "                         scheduler config and tokenizers are copied (a name wins over a\n"
               "                         folder of the same name: write ./NAME for the folder)\n"
               "  -l, --layout L         diffusers  a folder as diffusers saves a pipeline (default):\n"
               "                                    model_index.json, unet/ vae/ text_encoder/\n"
               "                                    text_encoder_2/ (config.json + safetensors),\n"
               "                                    scheduler/, tokenizer/ tokenizer_2/ (full CLIP vocab)\n"
               "                         single     one Stability checkpoint (model.diffusion_model.*,\n"
               "                                    first_stage_model.*, conditioner.embedders.*), with\n"
               "                                    metadata that makes it self-describing (no yaml)\n"
               "  -d, --dtype T          f16 (default), bf16 or f32\n"
               "  -s, --seed N           0..2^64-1 (default 0)\n"
               "      --variant fp16     diffusers layout, f16: name the weights *.fp16.safetensors, as\n"
               "                         diffusers' variant=\"fp16\" expects (default: the plain names,\n"
               "                         which diffusers loads with no variant argument)\n"
               "  -t, --threads N        generation threads (default: one per CPU)\n"
               "      --data-dir DIR     where clip_bpe_simple_vocab_16e6.txt.gz is (default:\n"
               "                         $SDXL_DATA_DIR, then the source tree's and install's data)\n"
               "      --no-verify        do not load the result back before renaming it into place\n"
               "  -q, --quiet            no progress display\n"
               "  -o, --output PATH      the folder (diffusers) or file (single) to create\n"
               "      --smoke            write the one-stage model `sdxl smoke --model FILE` runs\n"
               "                         (unlike the models above, it replaces an existing FILE)\n"
               "  -h, --help             this text\n"
               "\n"
               "Examples:\n"
               "  sdxl make-model --config sdxl-base --layout single -o sdxl-random.safetensors\n"
               "  sdxl make-model --config tiny --dtype f32 --seed 7 -o tiny-sdxl/\n"
               "  sdxl make-model --config models/my-sdxl --layout single -o my-sdxl-random.safetensors\n");
}

/* ---- progress and Ctrl-C ----------------------------------------------------------- */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

typedef struct {
    bool show, tty;
    double t0, last;
    int last_decile;
} progress;


static bool on_progress(void *user, uint64_t done, uint64_t total) {
    progress *pg = user;
    if (pg->show) {
        double t = sdxl_now_s();
        int decile = total ? (int)(10 * done / total) : 10;
        /* a terminal gets a live line; a log gets one line per 10% */
        if (pg->tty ? (t - pg->last >= 0.25 || done == total) : decile > pg->last_decile) {
            double el = t - pg->t0;
            fprintf(stderr, "%s  %3d%%  %7.2f / %.2f GB  %6.0f MB/s%s", pg->tty ? "\r" : "",
                    (int)(total ? 100 * done / total : 100), (double)done / 1e9, (double)total / 1e9,
                    el > 0 ? (double)done / 1e6 / el : 0.0, pg->tty ? "" : "\n");
            fflush(stderr);
            pg->last = t;
            pg->last_decile = decile;
        }
    }
    return !interrupted;
}

/* ---- options ----------------------------------------------------------------------- */

static bool parse_u64(const char *s, unsigned long long *out) {
    if (!s || !*s || *s == '-' || *s == '+') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

static bool parse_dtype(const char *s, sdxl_dtype *out) {
    if (!strcmp(s, "f32")) return *out = SDXL_DTYPE_F32, true;
    if (!strcmp(s, "f16")) return *out = SDXL_DTYPE_F16, true;
    if (!strcmp(s, "bf16")) return *out = SDXL_DTYPE_BF16, true;
    return false;
}

static int bad_usage(const char *fmt, const char *arg) {
    fprintf(stderr, "make-model: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see sdxl make-model --help)\n");
    return 2;
}

int sdxl_cmd_make_model(int argc, char **argv) {
    enum { OPT_VARIANT = 256, OPT_DATA_DIR, OPT_NO_VERIFY, OPT_SMOKE };
    static const struct option opts[] = {{"config", required_argument, 0, 'c'},
                                         {"layout", required_argument, 0, 'l'},
                                         {"dtype", required_argument, 0, 'd'},
                                         {"seed", required_argument, 0, 's'},
                                         {"threads", required_argument, 0, 't'},
                                         {"output", required_argument, 0, 'o'},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"variant", required_argument, 0, OPT_VARIANT},
                                         {"data-dir", required_argument, 0, OPT_DATA_DIR},
                                         {"no-verify", no_argument, 0, OPT_NO_VERIFY},
                                         {"smoke", no_argument, 0, OPT_SMOKE},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *config = NULL, *out = NULL, *dtype_s = "f16", *layout_s = "diffusers";
    sdxl_make_model_params p = sdxl_make_model_default_params();
    unsigned long long seed = 0, threads = 0;
    bool quiet = false, smoke = false;
    int ch;
    optind = 1;
    opterr = 0; /* our own message below */
    while ((ch = getopt_long(argc, argv, ":c:l:d:s:t:o:qh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config = optarg; break;
        case 'l': layout_s = optarg; break;
        case 'd': dtype_s = optarg; break;
        case 's':
            if (!parse_u64(optarg, &seed)) return bad_usage("--seed %s: not a number in 0..2^64-1", optarg);
            break;
        case 't':
            if (!parse_u64(optarg, &threads) || threads > 1024)
                return bad_usage("--threads %s: not a number in 0..1024", optarg);
            break;
        case 'o': out = optarg; break;
        case 'q': quiet = true; break;
        case OPT_VARIANT:
            if (strcmp(optarg, "fp16") != 0)
                return bad_usage("--variant %s: the only variant is fp16", optarg);
            p.fp16_variant = true;
            break;
        case OPT_DATA_DIR: p.data_dir = optarg; break;
        case OPT_NO_VERIFY: p.verify = false; break;
        case OPT_SMOKE: smoke = true; break;
        case 'h': usage(stdout); return 0;
        case ':': return bad_usage("%s needs a value", argv[optind - 1]);
        default: return bad_usage("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) return bad_usage("unexpected argument %s", argv[optind]);
    if (!out) return bad_usage("%sno output: give -o PATH", "");
    if (smoke) {
        if (config || p.fp16_variant || strcmp(layout_s, "diffusers") != 0)
            return bad_usage("%s--smoke writes one fixed file: it takes only -o, --dtype and --seed", "");
        return sdxl__smoke_make_model(out, seed, dtype_s);
    }
    if (!config) return bad_usage("%sno config: give --config NAME|DIR (or --smoke)", "");
    if (sdxl_model_preset_find(config)) {
        p.preset = config;
    } else {
        struct stat sb;
        if (stat(config, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            char names[256] = "";
            for (size_t i = 0; i < sdxl_model_preset_count(); i++) {
                size_t l = strlen(names);
                snprintf(names + l, sizeof names - l, "%s%s", i ? ", " : "", sdxl_model_preset_at(i)->name);
            }
            fprintf(
                stderr,
                "make-model: --config %s: neither a built-in config (%s) nor a diffusers folder (see sdxl "
                "make-model --help)\n",
                config, names);
            return 2;
        }
        p.config_dir = config;
    }
    if (!strcmp(layout_s, "diffusers"))
        p.layout = SDXL_LAYOUT_DIFFUSERS;
    else if (!strcmp(layout_s, "single"))
        p.layout = SDXL_LAYOUT_SGM;
    else
        return bad_usage("--layout %s: expected diffusers or single", layout_s);
    if (!parse_dtype(dtype_s, &p.dtype)) return bad_usage("--dtype %s: expected f16, bf16 or f32", dtype_s);
    if (p.fp16_variant && (p.layout != SDXL_LAYOUT_DIFFUSERS || p.dtype != SDXL_DTYPE_F16))
        return bad_usage("%s--variant fp16 is for --layout diffusers with --dtype f16", "");
    p.seed = seed;
    p.n_threads = (int)threads;

    progress pg = {!quiet, isatty(2) == 1, sdxl_now_s(), 0, -1};
    p.progress = on_progress;
    p.user_data = &pg;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    interrupted = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    sdxl_make_model_report rep;
    sdxl_error err = {0};
    sdxl_status st = sdxl_make_model(out, &p, &rep, &err);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (pg.show && pg.tty) fprintf(stderr, "\n");
    if (st) {
        fprintf(stderr, "make-model: %s\n", err.msg);
        if (st == SDXL_STATUS_CANCELLED) fprintf(stderr, "make-model: interrupted; nothing was written\n");
        return 1;
    }
    printf("wrote %s: config %s, %s layout, %s, seed %llu\n", out, p.preset ? p.preset : p.config_dir,
           p.layout == SDXL_LAYOUT_DIFFUSERS ? "diffusers" : "single-file", dtype_s, seed);
    printf("  %zu weights, %.3f B parameters, %.2f GB of tensor data in %zu file%s\n", rep.n_tensors,
           (double)rep.n_params / 1e9, (double)rep.bytes / 1e9, rep.n_files, rep.n_files == 1 ? "" : "s");
    printf("  generated and written in %.1f s (%.0f MB/s)", rep.seconds,
           rep.seconds > 0 ? (double)rep.bytes / 1e6 / rep.seconds : 0.0);
    if (p.verify)
        printf("; loaded back with the same config in %.2f s\n", rep.seconds_verify);
    else
        printf("; not verified (--no-verify)\n");
    return 0;
}
