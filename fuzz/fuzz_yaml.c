/* fuzz_yaml.c - libFuzzer target for the sidecar-yaml reader (a file users
 * download next to a checkpoint). Any input must parse or be rejected with
 * BAD_INPUT and a message; nothing may crash, leak or read out of bounds.
 *
 *   build-fuzz/fuzz_yaml -max_total_time=60 CORPUS_DIR
 */
#include <stdint.h>
#include <stdlib.h>

#include "model/config_yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 65536) return 0;
    sdxl__yaml *y = NULL;
    sdxl_error err = {0};
    sdxl_status st = sdxl__yaml_parse((const char *)data, size, "<fuzz>", &y, &err);
    if (st != SDXL_STATUS_OK && (st != SDXL_STATUS_BAD_INPUT || !err.msg[0])) abort();
    sdxl__yaml_free(y);
    return 0;
}
