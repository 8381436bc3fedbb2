/* fuzz_request.c - libFuzzer target for the request parser (a request is
 * untrusted JSON from the network). Parses with small caps (so init images
 * decode quickly) and checks what the parser promises: on success every
 * field is inside its rule (sizes, ranges, enums, output_dir relative
 * without "..", model name characters, an init image of the stated size);
 * on failure the status is BAD_INPUT with a known code, a message that
 * starts with the field path, and nothing left allocated in the request. A
 * broken promise aborts.
 *
 *   build-fuzz/fuzz_request -max_total_time=60 -dict=fuzz/request.dict fuzz/corpus/fuzz_request
 * Seeds: fuzz/corpus/fuzz_request/ (the seed's request, every field, init
 * images in PNG and JPEG, data URLs, bad ones).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "worker/request.h"

#define MAX_INPUT (1u << 20)

#define ENSURE(cond)                                                                                         \
    do {                                                                                                     \
        if (!(cond)) abort();                                                                                \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool known_code(const char *c) {
    static const char *const codes[] = {SDXL_REQUEST_ERR_INVALID_JSON,  SDXL_REQUEST_ERR_INVALID_TYPE,
                                        SDXL_REQUEST_ERR_UNKNOWN_FIELD, SDXL_REQUEST_ERR_MISSING_FIELD,
                                        SDXL_REQUEST_ERR_OUT_OF_RANGE,  SDXL_REQUEST_ERR_INVALID_VALUE,
                                        SDXL_REQUEST_ERR_INVALID_IMAGE, NULL};
    for (int i = 0; codes[i]; i++)
        if (!strcmp(c, codes[i])) return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > MAX_INPUT) return 0;
    sdxl_request_limits lim = sdxl_request_default_limits();
    lim.max_side = 512;
    lim.max_prompt = 4096;
    sdxl_request r;
    sdxl_request_error re;
    sdxl_error err;
    sdxl_error_clear(&err);
    sdxl_status st = sdxl_request_parse_ex((const char *)data, size, &lim, &r, &re, &err);
    if (st != SDXL_STATUS_OK) {
        ENSURE(st == SDXL_STATUS_BAD_INPUT && known_code(re.code) && err.msg[0] != '\0');
        size_t fl = strlen(re.field);
        ENSURE(fl ? !strncmp(err.msg, re.field, fl) && err.msg[fl] == ':' : !strncmp(err.msg, "request: ", 9));
        ENSURE(r.prompt == NULL && r.init_rgb == NULL && r.negative_prompt == NULL && r.prompt_2 == NULL);
        return 0;
    }
    ENSURE(re.code[0] == 0 && re.field[0] == 0);
    ENSURE(r.prompt && strlen(r.prompt) <= lim.max_prompt);
    ENSURE(!r.negative_prompt || strlen(r.negative_prompt) <= lim.max_prompt);
    ENSURE(!r.prompt_2 || strlen(r.prompt_2) <= lim.max_prompt);
    ENSURE(!r.negative_prompt_2 || strlen(r.negative_prompt_2) <= lim.max_prompt);
    ENSURE(r.width >= 0 && r.width <= lim.max_side && r.width % 8 == 0);
    ENSURE(r.height >= 0 && r.height <= lim.max_side && r.height % 8 == 0);
    ENSURE(r.steps >= 1 && r.steps <= lim.max_steps && r.batch_size >= 1 && r.batch_size <= lim.max_batch);
    ENSURE(r.n_iter >= 1 && r.n_iter <= lim.max_n_iter);
    ENSURE(r.guidance_scale >= 0 && r.guidance_scale <= 100 && r.guidance_rescale >= 0 && r.guidance_rescale <= 1);
    ENSURE(r.strength > 0 && r.strength <= 1 && r.timeout_s >= 0 && r.timeout_s <= 86400);
    ENSURE(r.seed >= -1 && r.seed <= (1LL << 53));
    ENSURE(r.output == SDXL_OUTPUT_PATH || r.output == SDXL_OUTPUT_BASE64);
    ENSURE(r.output_dir[0] && r.output_dir[0] != '/');
    for (const char *c = r.output_dir; *c;) {
        size_t len = strcspn(c, "/");
        ENSURE(!(len == 2 && c[0] == '.' && c[1] == '.'));
        c += len;
        while (*c == '/') c++;
    }
    ENSURE(strspn(r.model, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == strlen(r.model));
    if (r.init_rgb) {
        ENSURE(r.init_width >= 8 && r.init_height >= 8 && r.init_width % 8 == 0 && r.init_height % 8 == 0);
        ENSURE(r.init_width <= lim.max_side && r.init_height <= lim.max_side);
        ENSURE(r.width == r.init_width && r.height == r.init_height);
        size_t n = (size_t)r.init_width * r.init_height * 3;
        ENSURE(sdxl_alloc_size(r.init_rgb) >= n);
        volatile uint8_t sink = r.init_rgb[0] ^ r.init_rgb[n - 1];
        (void)sink;
    } else {
        ENSURE(r.init_width == 0 && r.init_height == 0);
    }
    ENSURE(r.lora.n >= 0 && r.lora.n <= SDXL_LORA_MAX_PER_REQUEST);
    for (int i = 0; i < r.lora.n; i++) {
        ENSURE(r.lora.entries[i].name[0] != '\0');
        ENSURE(fabsf(r.lora.entries[i].weight) <= 100.0f);
    }
    sdxl_request_free(&r);
    ENSURE(r.prompt == NULL);
    return 0;
}
