/* text_encoders.c - seconds to encode a prompt pair (positive + negative, as
 * one CFG request needs) through both CLIP encoders of a model, and the
 * load time and peak RSS.
 *
 *   build/bench/sdxl_bench_text_encoders MODEL [--runs N] [--threads N]
 *
 * MODEL: a diffusers folder or single file; a full-size random one comes
 * from `sdxl make-model --config sdxl-base --layout single -o FILE`.
 * Reported: best-of-N wall seconds for encode_prompt (4 encoder passes of
 * 77 tokens: TE1+TE2 for prompt and negative) and per encoder pass. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backend/backend.h"
#include "model/conditioning.h"
#include "model/model.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [--runs N] [--threads N]\n", argv[0]);
        return 2;
    }
    int runs = 3, threads = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
    }
    sdxl_error err = {0};
    double t0 = now();
    sdxl_model *m = NULL;
    if (sdxl_model_load(argv[1], NULL, &m, &err)) {
        fprintf(stderr, "load: %s\n", err.msg);
        return 1;
    }
    double t_load = now() - t0;
    sdxl_backend_params bp = sdxl_backend_default_params();
    bp.n_threads = threads;
    sdxl_backend *be = sdxl_backend_create(&bp, &err);
    if (!be) return 1;
    const sdxl_model_config *cfg = sdxl_weights_config(m->weights);
    sdxl_cond_request r = {.prompt = "a photo of an astronaut riding a horse on mars, highly detailed",
                           .negative = "blurry, low quality, bad anatomy, watermark",
                           .force_zeros_for_empty_prompt = true};
    r.prompt_params = sdxl_prompt_default_params();
    double best = 1e30;
    for (int i = 0; i < runs; i++) {
        sdxl_cond pos, neg;
        double t = now();
        if (sdxl_encode_prompts(be, m->weights, m->tok[0], m->tok[1], &r, &pos, &neg, &err)) {
            fprintf(stderr, "encode: %s\n", err.msg);
            return 1;
        }
        t = now() - t;
        if (t < best) best = t;
        sdxl_cond_free(&pos);
        sdxl_cond_free(&neg);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("model %s: TE1 %dx%d (%d layers run), TE2 %dx%d + proj %d; %d threads\n", argv[1],
           cfg->te[0].num_layers, cfg->te[0].hidden_size, cfg->te[0].hidden_state_index, cfg->te[1].num_layers,
           cfg->te[1].hidden_size, cfg->te[1].projection_dim, sdxl_backend_threads(be));
    printf("load (mmap + checks)        %8.3f s\n", t_load);
    printf("encode_prompt (pos + neg)   %8.3f s  (best of %d)\n", best, runs);
    printf("peak RSS                    %8.1f MiB\n", (double)ru.ru_maxrss / 1024.0);
    sdxl_backend_free(be);
    sdxl_model_free(m);
    return 0;
}
