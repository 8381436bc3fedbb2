/* fuzz_safetensors.c - libFuzzer target for the safetensors reader.
 *
 * Parses the input as a whole file. On success it checks what the reader
 * promises instead of only running it: every tensor's bytes lie inside the
 * input and are read in full (ASan catches a bad range), sizes agree with
 * shape x dtype, the table is in offset order with no two tensors sharing a
 * byte, every name and metadata key is found again by lookup, and the engine
 * view agrees with the tensor. A broken promise aborts (a crash libFuzzer
 * reports); a rejected input must come with a BAD_INPUT message.
 *
 *   build-fuzz/fuzz_safetensors -max_total_time=60 CORPUS_DIR
 * Seeds: fuzz/corpus/fuzz_safetensors/.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/safetensors.h"

#define MAX_INPUT (1u << 20) /* bigger inputs only slow the search down */

#define ENSURE(cond)                                                                                         \
    do {                                                                                                     \
        if (!(cond)) abort();                                                                                \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > MAX_INPUT) return 0;
    sdxl_st_file *f = NULL;
    sdxl_error err;
    sdxl_error_clear(&err);
    sdxl_status st = sdxl_st_parse(data, size, &f, &err);
    if (st != SDXL_STATUS_OK) {
        /* untrusted bytes are bad input, never anything else, and explained */
        ENSURE(st == SDXL_STATUS_BAD_INPUT && f == NULL && err.msg[0] != '\0');
        return 0;
    }

    volatile uint8_t sink = 0;
    uint64_t prev_end = 0;
    const sdxl_st_tensor *prev = NULL;
    for (size_t i = 0; i < sdxl_st_count(f); i++) {
        const sdxl_st_tensor *t = sdxl_st_at(f, i);
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
        const uint8_t *p = t->data;
        ENSURE(p >= data && (size_t)(p - data) <= size && t->nbytes <= size - (size_t)(p - data));
        uint8_t x = 0;
        for (size_t k = 0; k < t->nbytes; k++)
            x ^= p[k];
        sink ^= x;
        /* offset order; non-empty tensors disjoint */
        if (prev) ENSURE(t->offset >= prev->offset);
        if (t->nbytes) {
            ENSURE(t->offset >= prev_end);
            prev_end = t->offset + t->nbytes;
        }
        prev = t;
        ENSURE(sdxl_st_find(f, t->name) == t);

        sdxl_tensor v;
        sdxl_error verr;
        sdxl_status vs = sdxl_st_view(f, t, &v, &verr);
        if (vs == SDXL_STATUS_OK) {
            ENSURE(v.data == t->data && v.ndim == t->ndim);
            ENSURE((size_t)sdxl_tensor_nelem(&v) * sdxl_dtype_size(v.dtype) == t->nbytes);
        } else {
            ENSURE(vs == SDXL_STATUS_UNSUPPORTED);
        }
    }
    ENSURE(sdxl_st_at(f, sdxl_st_count(f)) == NULL);
    ENSURE(8 + sdxl_st_header_size(f) + sdxl_st_data_size(f) == size);

    for (size_t i = 0; i < sdxl_st_metadata_count(f); i++) {
        const char *k = NULL, *v = NULL;
        ENSURE(sdxl_st_metadata_at(f, i, &k, &v) && k && v);
        ENSURE(sdxl_st_metadata(f, k) == v);
        sink ^= (uint8_t)(strlen(k) + strlen(v));
    }
    ENSURE(!sdxl_st_metadata_at(f, sdxl_st_metadata_count(f), NULL, NULL));
    (void)sink;
    sdxl_st_close(f);
    return 0;
}
