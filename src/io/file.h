/* file.h - small whole-file reads (configs, vocabularies, yaml, index files).
 * Weight files are not read this way: they are mapped (safetensors.h). */
#ifndef SDXL_IO_FILE_H
#define SDXL_IO_FILE_H

#include <stddef.h>

#include "core/status.h"

/* Read the regular file `path` (at most max_bytes) into a NUL-terminated
 * sdxl_malloc'd buffer; *len (may be NULL) gets its size. On failure *out is
 * NULL. Errors: NOT_FOUND (no such file), IO (cannot open, not a regular
 * file, read error), BAD_INPUT (larger than max_bytes), OUT_OF_MEMORY; the
 * message names the path. Thread-safe. */
sdxl_status sdxl_read_file(const char *path, size_t max_bytes, char **out, size_t *len, sdxl_error *err);

#endif
