/* config_yaml.h - a small, defensive reader for the sidecar .yaml of a
 * single-file checkpoint (internal to model/).
 *
 * A1111 and ComfyUI read an SGM config such as `sd_xl_base.yaml` next to a
 * checkpoint. We need a handful of its keys (num_head_channels, scale_factor,
 * layer_idx, ...), so instead of a YAML library this reader turns the block
 * YAML subset those files use into a flat list of (path, value) pairs:
 *
 *     model:                                  model.target = sgm.models...
 *       target: sgm.models.diffusion...       model.params.scale_factor = 0.13025
 *       params:                               model.params.channel_mult.0 = 1
 *         scale_factor: 0.13025               model.params.channel_mult.1 = 2
 *         channel_mult: [1, 2]                model.params.emb_models.0.target = ...
 *         emb_models:
 *         - target: ...
 *
 * Supported (YAML 1.2, the parts config files use): block mappings, block
 * sequences (also "indentless" ones under a key, and "- key: value" items
 * that open a mapping), flow sequences and flow mappings, nested
 * ([1, [2, 3]], {a: 1, b: [x, y]}, [k: v] single-pair mappings, trailing
 * commas, null values for {a, b: }) and spanning several lines until the
 * closing bracket (continuation lines indented more than the key; a closing
 * bracket may sit at the key's column), plain scalars continued on
 * more-indented lines (line breaks fold into single spaces, empty lines into
 * newlines; a comment ends the scalar), 'single' / "double" quoted scalars
 * (simple escapes; they may span lines too), a key's value on the next line,
 * comments, `---` / `...` markers. Flow collections become entries like
 * block ones: `p: {a: 1, b: [2]}` gives p.a = 1 and p.b.0 = 2; an empty
 * collection gives no entry. Anchors, aliases and tags are kept as raw
 * scalar text; block scalars (| and >) are skipped (their key gets "").
 * Malformed input is SDXL_STATUS_BAD_INPUT naming the file and line: bad
 * indentation, a tab in the indentation, a line that is neither a key nor an
 * item, ': ' in a plain continuation line, an unterminated / unbalanced flow
 * collection or quoted scalar, an empty flow entry or key, text after a flow
 * node, nesting deeper than SDXL__YAML_MAX_DEPTH (block and flow together).
 * Input is capped at SDXL__YAML_MAX_BYTES, SDXL__YAML_MAX_ENTRIES and
 * SDXL__YAML_MAX_VALUE_BYTES per value (a multi-line node included).
 *
 * Memory: the document owns all strings (sdxl_malloc); free with
 * sdxl__yaml_free. Thread-safety: a parsed document is immutable; no global
 * state.
 */
#ifndef SDXL_MODEL_CONFIG_YAML_H
#define SDXL_MODEL_CONFIG_YAML_H

#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"

#define SDXL__YAML_MAX_BYTES (1u << 20)
#define SDXL__YAML_MAX_ENTRIES 20000
#define SDXL__YAML_MAX_DEPTH 64
#define SDXL__YAML_MAX_VALUE_BYTES (1u << 16)

typedef struct sdxl__yaml sdxl__yaml;

/* Parse `len` bytes of `text`; `path` is only used in messages. On success
 * *out owns the document. Errors: BAD_INPUT (message names path and line),
 * OUT_OF_MEMORY. */
sdxl_status sdxl__yaml_parse(const char *text, size_t len, const char *path, sdxl__yaml **out,
                             sdxl_error *err);

/* Read and parse a file. NOT_FOUND if it does not exist, IO if unreadable,
 * BAD_INPUT if larger than SDXL__YAML_MAX_BYTES or malformed. */
sdxl_status sdxl__yaml_load(const char *path, sdxl__yaml **out, sdxl_error *err);

void sdxl__yaml_free(sdxl__yaml *y); /* NULL-safe */

/* Scalar value at an exact dotted path ("model.params.scale_factor",
 * sequence items by index: "....channel_mult.0"); NULL if absent or if the
 * path names a mapping/sequence. `line` (may be NULL) gets its line number. */
const char *sdxl__yaml_get(const sdxl__yaml *y, const char *path, int *line);

/* printf-style path. */
const char *sdxl__yaml_getf(const sdxl__yaml *y, int *line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Number of items of the sequence at `path` (0 if none). */
int sdxl__yaml_seq_len(const sdxl__yaml *y, const char *path);

/* Number of entries and the i-th (path, value) pair, in document order. */
size_t sdxl__yaml_count(const sdxl__yaml *y);
bool sdxl__yaml_at(const sdxl__yaml *y, size_t i, const char **path, const char **value);

/* The file path given to sdxl__yaml_load ("<memory>" for parse). */
const char *sdxl__yaml_path(const sdxl__yaml *y);

#endif
