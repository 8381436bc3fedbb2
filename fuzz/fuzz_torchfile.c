/* fuzz_torchfile.c - libFuzzer target for the tensor-file readers: container
 * detection (io/tensorfile.c), torch.save zip and legacy files
 * (io/torchfile.c), the restricted pickle interpreter (io/pickle.c), and
 * safetensors when the bytes look like it.
 *
 * Parses the input as a whole file with sdxl_tf_parse. On success it checks
 * what the readers promise instead of only running them: every tensor's
 * bytes are read in full (ASan catches a bad pointer or size), nbytes equals
 * shape x dtype size, torch tensors are 64-byte aligned copies that do not
 * point into the input, every name and metadata key is found again by
 * lookup, and sdxl_tf_to_f32 converts every float tensor (or says
 * UNSUPPORTED). A broken promise aborts (a crash libFuzzer reports); a
 * rejected input must come with BAD_INPUT or UNSUPPORTED and a message.
 *
 * The input is also fed to the pickle interpreter alone, so that the fuzzer
 * reaches its opcodes without first building a valid container around them.
 *
 *   build-fuzz/fuzz_torchfile -max_total_time=60 CORPUS_DIR
 * Seeds: fuzz/corpus/fuzz_torchfile/.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/pickle.h"
#include "io/tensorfile.h"

#define MAX_INPUT (1u << 20) /* bigger inputs only slow the search down */

#define ENSURE(cond)                                                                                         \
    do {                                                                                                     \
        if (!(cond)) abort();                                                                                \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_pickle(const uint8_t *data, size_t size) {
    sdxl_pickle *p = NULL;
    sdxl_error err;
    size_t used = 0;
    sdxl_status st = sdxl_pickle_load(data, size, NULL, &p, &used, &err);
    if (st != SDXL_STATUS_OK) {
        ENSURE((st == SDXL_STATUS_BAD_INPUT || st == SDXL_STATUS_UNSUPPORTED) && p == NULL && err.msg[0]);
        return;
    }
    ENSURE(used >= 1 && used <= size && data[used - 1] == '.');
    ENSURE(sdxl_pickle_kind(p, sdxl_pickle_root(p)) < SDXL_PK_KIND_COUNT_);
    /* every object is readable through the getters */
    for (size_t i = 0; i < sdxl_pickle_object_count(p); i++) {
        sdxl_pk_ref r = (sdxl_pk_ref)i;
        sdxl_pk_kind k = sdxl_pickle_kind(p, r);
        ENSURE(k < SDXL_PK_KIND_COUNT_);
        size_t n = sdxl_pickle_len(p, r);
        for (size_t j = 0; j < n; j++) {
            if (k == SDXL_PK_DICT) {
                sdxl_pk_ref a, b;
                ENSURE(sdxl_pickle_dict_entry(p, r, j, &a, &b));
                ENSURE(sdxl_pickle_kind(p, a) < SDXL_PK_KIND_COUNT_ &&
                       sdxl_pickle_kind(p, b) < SDXL_PK_KIND_COUNT_);
            } else {
                ENSURE(sdxl_pickle_kind(p, sdxl_pickle_item(p, r, j)) < SDXL_PK_KIND_COUNT_);
            }
        }
        size_t sl;
        const char *s = sdxl_pickle_str(p, r, &sl);
        if (s) ENSURE(s[sl] == '\0');
        const sdxl_pk_tensor *t = sdxl_pickle_tensor(p, r);
        if (t) {
            ENSURE(t->ndim >= 0 && t->ndim <= SDXL_ST_MAX_DIMS && t->offset >= 0);
            ENSURE(sdxl_pickle_storage(p, t->storage) != NULL);
        }
    }
    sdxl_pickle_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > MAX_INPUT) return 0;
    check_pickle(data, size);

    sdxl_tensorfile *f = NULL;
    sdxl_error err;
    sdxl_error_clear(&err);
    sdxl_status st = sdxl_tf_parse(data, size, &f, &err);
    if (st != SDXL_STATUS_OK) {
        ENSURE((st == SDXL_STATUS_BAD_INPUT || st == SDXL_STATUS_UNSUPPORTED) && f == NULL &&
               err.msg[0] != '\0');
        return 0;
    }
    bool torch = sdxl_tf_format_of(f) != SDXL_TF_SAFETENSORS;
    volatile uint8_t sink = 0;
    static float conv[1 << 16];
    for (size_t i = 0; i < sdxl_tf_count(f); i++) {
        const sdxl_st_tensor *t = sdxl_tf_at(f, i);
        ENSURE(t && t->name && (unsigned)t->dtype < SDXL_ST_DTYPE_COUNT_);
        ENSURE(t->ndim >= 0 && t->ndim <= SDXL_ST_MAX_DIMS);
        uint64_t n = sdxl_st_dtype_size(t->dtype);
        bool empty = false; /* a zero dimension: no bytes, whatever the other dims (no overflow then) */
        for (int d = 0; d < t->ndim; d++) {
            ENSURE(t->shape[d] >= 0);
            empty = empty || t->shape[d] == 0;
        }
        for (int d = 0; d < t->ndim && !empty; d++) ENSURE(!__builtin_mul_overflow(n, (uint64_t)t->shape[d], &n));
        if (empty) n = 0;
        ENSURE(n == t->nbytes);
        ENSURE(t->data != NULL || t->nbytes == 0);
        const uint8_t *p = t->data;
        if (torch) {
            ENSURE(t->data != NULL && (uintptr_t)t->data % 64 == 0);
            ENSURE(p + t->nbytes <= data || p >= data + size); /* a copy, not the input */
        }
        uint8_t x = 0;
        for (size_t k = 0; k < t->nbytes; k++)
            x ^= p[k];
        sink ^= x;
        ENSURE(sdxl_tf_find(f, t->name) == t);
        if (t->nbytes / sdxl_st_dtype_size(t->dtype) <= sizeof conv / sizeof conv[0]) {
            sdxl_status cs = sdxl_tf_to_f32(t, conv, &err);
            ENSURE(cs == SDXL_STATUS_OK || cs == SDXL_STATUS_UNSUPPORTED);
        }
    }
    ENSURE(sdxl_tf_at(f, sdxl_tf_count(f)) == NULL);
    for (size_t i = 0; i < sdxl_tf_metadata_count(f); i++) {
        const char *k = NULL, *v = NULL;
        ENSURE(sdxl_tf_metadata_at(f, i, &k, &v) && k && v);
        ENSURE(sdxl_tf_metadata(f, k) == v);
        sink ^= (uint8_t)(strlen(k) + strlen(v));
    }
    ENSURE(!sdxl_tf_metadata_at(f, sdxl_tf_metadata_count(f), NULL, NULL));
    ENSURE(sdxl_tf_bytes(f) > 0);
    (void)sink;
    sdxl_tf_close(f);
    return 0;
}
