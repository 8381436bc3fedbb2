/* registry.h - discovery and name resolution of LoRA files.
 *
 * The registry indexes the adapter files under the configured LoRA
 * directories ("lora_directories" of the seed) and turns the name a request
 * gives ("anime_style_v2", category "style") into one file, or into a clear
 * refusal or miss. It never loads weights: the index holds what is cheap to
 * know (name, category, size, mtime, safetensors metadata) and computes file
 * hashes lazily, on request.
 *
 * ---- discovery ---------------------------------------------------------------
 *
 * Every configured root is walked recursively (sdxl_lora_registry_refresh;
 * once at create). Indexed: regular files whose name ends, case-
 * insensitively, in .safetensors, .pt, .bin, .ckpt or .pth. Skipped: names
 * starting with '.' (files and folders), other extensions, other file types.
 *   - name: the file name without its extension ("anime_style_v2"; a file
 *     reached through a symlink keeps the link's name).
 *   - category: the root's configured category if it has one; otherwise the
 *     first sub-folder below the root, normalized (sdxl_lora_category_
 *     normalize: ASCII-lowercase, one trailing 's' dropped unless the name
 *     ends in "ss"): styles/ -> "style", characters/ -> "character",
 *     lighting/ -> "lighting", Concepts/ -> "concept". A file directly in a
 *     root without a configured category has category "" (none).
 *   - container: "safetensors" (.safetensors) or "pytorch" (all others).
 *   - for safetensors, read from the header (the data is never touched):
 *     ss_output_name, ss_base_model_version, ss_network_module,
 *     ss_network_dim, ss_network_alpha; trigger words = the tags of
 *     ss_tag_frequency (a JSON string {dataset: {tag: count}}): tags trimmed
 *     of white space, counts summed over datasets, sorted by count
 *     (descending) then tag (bytewise), the first SDXL_LORA_MAX_TRIGGERS
 *     kept; the adapter kind guessed from the tensor names (first rule that
 *     fits): "hada_" -> "loha", "lokr_" -> "lokr", "dora_scale" -> "dora",
 *     "lora_mid" -> "locon" (Tucker), a 4-D lora_down with a kernel larger
 *     than 1x1 -> "locon", "lora_down"/"lora.down" -> "lora", "lora_A" ->
 *     "lora (peft)", ".diff" -> "full", else "unknown"; rank = the largest
 *     first dimension of the lora_down/lora.down/lora_A tensors, else
 *     ss_network_dim, else 0. Pickle containers: kind "?", rank 0.
 *   - a file that cannot be read (permissions, a malformed safetensors
 *     header) is still listed, with `error` saying why: the loader reports
 *     it as an invalid file when a request names it.
 *
 * Symlinks (to files or folders) are followed only when their real path lies
 * inside one of the configured roots (any of them); others are left out and
 * remembered, so that a request naming one is refused with the reason. The
 * walk cannot hang: a folder link back into its own ancestry is skipped, a
 * folder reached through links is walked once per refresh, depth is capped
 * at SDXL_LORA_MAX_DEPTH and the index at SDXL_LORA_MAX_FILES files (a
 * warning says what was cut). A file reachable from two roots is indexed
 * under the first root only. File and folder names that are not clean
 * UTF-8 (or hold control characters) are skipped: no request could name
 * them. Roots are canonicalized (realpath) at every refresh; a root that
 * does not exist is a warning, not an error: it is picked up once it
 * appears. What a walk skips (unreadable folder, bad name, depth or count
 * cap) is a warning at create and debug-level afterwards, so rescans do not
 * repeat it every second.
 *
 * Keeping current is cheap: a refresh walks the folders and stats each file;
 * a file whose (real path, inode, size, mtime_ns) did not change keeps its
 * entry, including the cached metadata and hashes; new and changed files
 * are read again, vanished ones dropped. Resolution does not walk on a hit:
 * it stats the hit file (one stat), and a file changed or removed since the
 * last refresh is re-read (or dropped) on the spot. (A rewrite that keeps
 * inode, size and mtime, within the file system's timestamp granularity,
 * goes unnoticed: the same limit as every mtime-based cache.) A miss
 * triggers one rescan, at most one per `min_rescan_interval_ms` (default
 * 1000 ms, counted from the end of the previous refresh, whatever started
 * it), so a stream of requests for a missing name cannot turn into a stream
 * of folder walks, and a file dropped in later is found without a restart.
 *
 * ---- resolution ----------------------------------------------------------------
 *
 * sdxl_lora_registry_resolve(name, category): the name is untrusted.
 * Refused with SDXL_STATUS_INVALID_ARG and a message saying why: an empty
 * name, longer than SDXL_LORA_REQUEST_MAX bytes, invalid UTF-8, control
 * characters, an absolute path, a ".." component; and a name that matches a
 * file left out by the walk because its symlink leaves the roots. Empty and
 * "." components are ignored ("styles//./a" is "styles/a"). A name is only
 * ever compared with indexed entries: nothing outside the roots is opened.
 *
 * Rules, in order; the first rule with a candidate decides:
 *   1. exact: name == stem, or == the file name with its extension;
 *   2. case-insensitive (ASCII) the same;
 *   3. "category/name": the first component, normalized like a category
 *      ("styles/x" and "style/x" alike), and rules 1-2 on the rest within
 *      that category;
 *   4. a path relative to a root, with or without the extension ("styles/
 *      anime/v2", "styles/anime/v2.safetensors"), exact then case-
 *      insensitive.
 * Names without '/' use rules 1-2, names with '/' rules 3-4. If nothing
 * matches, one rescan (rate-limited as above) and the rules again; still
 * nothing: SDXL_STATUS_NOT_FOUND with up to SDXL_LORA_MAX_SUGGESTIONS
 * suggestions (names containing the request or contained in it, then the
 * smallest edit distance between lowercase stems, also matching on
 * ss_output_name), listed in the message too.
 *
 * Category: the request's category (normalized like a folder: "styles" ==
 * "style"; NULL or "" for none) filters the candidates. When the rules find
 * the name only in other categories, those are used and `warning` says so
 * (the name identifies the file; the category only chooses between
 * namesakes).
 *
 * Collisions (several candidates left): the first in this order wins, and
 * `warning` names them all: earliest configured root, then fewest folders
 * in the relative path, then safetensors before pickles, then the relative
 * path bytewise. Candidates that are all the same file (links) are no
 * collision.
 *
 * ---- hashes ----------------------------------------------------------------------
 *
 * sdxl_lora_registry_hash computes, on first request, and caches per
 * (real path, inode, size, mtime):
 *   - SDXL_LORA_HASH_SHORT: what A1111's Lora extension records as the
 *     "Lora hashes" short hash (network.py: hashes.sha256_from_cache with
 *     use_addnet_hash for safetensors): for safetensors, the first 12 hex of
 *     the SHA-256 of the bytes after the 8 + N header (kohya/addnet
 *     "addnet_hash_safetensors", so metadata edits do not change it); for
 *     pickle containers the first 12 hex of the SHA-256 of the whole file.
 *     A1111 prefers an "sshs_model_hash" metadata value when the file
 *     carries one; we never trust it and always compute.
 *   - SDXL_LORA_HASH_SHA256: the whole file's SHA-256, 64 hex (A1111's
 *     "sha256" / civitai's file hash).
 * Hashes stream the file through read() in 1 MiB chunks; nothing is held
 * whole in memory. If the file changed since it was indexed, the hash is of
 * the file as it is now and is cached only if the index agrees.
 *
 * ---- threads ---------------------------------------------------------------------
 *
 * Every function is thread-safe on one registry, except _free, which must
 * not race with anything. A read-write lock guards the index: readers
 * (get, resolve, count, the hash cache look-up) copy out under the read lock
 * and never keep pointers into the index; a refresh walks the folders and
 * reads headers without that lock, holding only a mutex that serializes
 * refreshes, and takes the write lock just to swap the new index in. A hash
 * is computed without any lock (two threads asking for the same uncached
 * hash at once both compute it). A listing by index (count + get) can be
 * torn by a concurrent refresh: compare sdxl_lora_registry_generation before
 * and after to detect it.
 *
 * Memory: entries and strings through sdxl_malloc; the transient JSON of a
 * header comes from sdxl_st_open and ss_tag_frequency from cJSON (not
 * counted). sdxl_lora_info is a self-contained copy (~11 KB, fixed-size
 * strings): nothing to free, nothing shared.
 */
#ifndef SDXL_LORA_REGISTRY_H
#define SDXL_LORA_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define SDXL_LORA_NAME_MAX 256     /* stem / category / file-name bytes incl. NUL */
#define SDXL_LORA_PATH_MAX 4096    /* canonical and relative paths incl. NUL (Linux PATH_MAX) */
#define SDXL_LORA_REQUEST_MAX 1024 /* longest request name accepted, bytes */
#define SDXL_LORA_META_MAX 256     /* metadata strings incl. NUL (longer are cut at a UTF-8 boundary) */
#define SDXL_LORA_TRIGGER_MAX 128  /* one trigger word incl. NUL (longer are cut) */
#define SDXL_LORA_MAX_TRIGGERS 10
#define SDXL_LORA_MAX_SUGGESTIONS 5
#define SDXL_LORA_MAX_DEPTH 32     /* folder levels below a root */
#define SDXL_LORA_MAX_FILES 100000 /* files in the index, all roots */

/* One configured directory. category NULL or "": derived from the first
 * sub-folder (see above); otherwise every file below this root has this
 * category (normalized). */
typedef struct sdxl_lora_dir {
    const char *path;
    const char *category;
} sdxl_lora_dir;

typedef struct sdxl_lora_registry_params {
    int64_t min_rescan_interval_ms; /* rate limit of miss-triggered rescans; default 1000; 0 = none */
} sdxl_lora_registry_params;

sdxl_lora_registry_params sdxl_lora_registry_default_params(void);

/* A copy of one index entry. Strings are NUL-terminated, "" when absent. */
typedef struct sdxl_lora_info {
    char name[SDXL_LORA_NAME_MAX];        /* file stem: "anime_style_v2" */
    char file_name[SDXL_LORA_NAME_MAX];   /* with extension: "anime_style_v2.safetensors" */
    char category[SDXL_LORA_NAME_MAX];    /* "style", or "" */
    char path[SDXL_LORA_PATH_MAX];        /* absolute, canonical (realpath): open this */
    char rel_path[SDXL_LORA_PATH_MAX];    /* below its root, as walked: "styles/anime_style_v2.safetensors" */
    size_t root;                          /* index into the configured directories */
    uint64_t size;                        /* bytes */
    int64_t mtime_ns;                     /* modification time, ns since the epoch */
    char container[16];                   /* "safetensors" | "pytorch" */
    char adapter[16];                     /* "lora", "locon", "loha", "lokr", "dora", "lora (peft)", "full",
                                             "unknown"; "?" for pickles */
    int64_t rank;                         /* 0 = unknown */
    char output_name[SDXL_LORA_META_MAX]; /* ss_output_name */
    char base_model[SDXL_LORA_META_MAX];  /* ss_base_model_version */
    char network_module[SDXL_LORA_META_MAX]; /* ss_network_module */
    int64_t network_dim;                     /* ss_network_dim; 0 = absent */
    double network_alpha;                    /* ss_network_alpha; 0 = absent */
    int n_triggers;
    char triggers[SDXL_LORA_MAX_TRIGGERS][SDXL_LORA_TRIGGER_MAX]; /* most frequent tags first */
    char short_hash[13];            /* "" until computed (sdxl_lora_registry_hash) */
    char sha256[65];                /* "" until computed */
    char error[SDXL_LORA_META_MAX]; /* "" or why the file could not be read */
} sdxl_lora_info;

/* Which rule of the resolution order found the entry. */
typedef enum sdxl_lora_match {
    SDXL_LORA_MATCH_NONE = 0,
    SDXL_LORA_MATCH_EXACT,
    SDXL_LORA_MATCH_CASE_INSENSITIVE,
    SDXL_LORA_MATCH_CATEGORY_NAME,
    SDXL_LORA_MATCH_REL_PATH,
} sdxl_lora_match;

typedef struct sdxl_lora_resolution {
    sdxl_lora_info entry; /* the file, when resolve returned OK */
    sdxl_lora_match match;
    int n_candidates;  /* entries the deciding rule found (> 1: a collision, see warning) */
    bool rescanned;    /* a miss triggered a rescan during this call */
    char warning[512]; /* "" or: collision resolved by rule / category not matched */
    int n_suggestions; /* on NOT_FOUND */
    char suggestions[SDXL_LORA_MAX_SUGGESTIONS][2 * SDXL_LORA_NAME_MAX]; /* "name", or "category/name" */
} sdxl_lora_resolution;

typedef enum sdxl_lora_hash_kind {
    SDXL_LORA_HASH_SHORT,  /* 12 hex: addnet hash (safetensors) / file sha256 (pickles) */
    SDXL_LORA_HASH_SHA256, /* 64 hex: whole-file sha256 */
} sdxl_lora_hash_kind;

typedef struct sdxl_lora_registry sdxl_lora_registry;

/* Index the n directories (n may be 0; each path non-NULL and non-empty)
 * and walk them once. dirs and params are copied. params NULL = defaults.
 * Missing roots are logged as warnings. Errors: INVALID_ARG (NULL
 * out/path, empty path, negative interval), OUT_OF_MEMORY, INTERNAL (lock
 * creation). On failure *out is NULL. */
sdxl_status sdxl_lora_registry_create(const sdxl_lora_dir *dirs, size_t n,
                                      const sdxl_lora_registry_params *params, sdxl_lora_registry **out,
                                      sdxl_error *err);

/* NULL-safe. Must not race with any other call on reg. */
void sdxl_lora_registry_free(sdxl_lora_registry *reg);

/* Walk the roots and bring the index up to date (see above). force=false
 * skips the walk if the last refresh ended less than min_rescan_interval_ms
 * ago (then *changes is 0). *changes (may be NULL): files added + removed +
 * changed. Unreadable folders and files are logged, not errors. Errors:
 * OUT_OF_MEMORY (the old index stays as it was). */
sdxl_status sdxl_lora_registry_refresh(sdxl_lora_registry *reg, bool force, size_t *changes, sdxl_error *err);

/* Entries in the index (0 for NULL). */
size_t sdxl_lora_registry_count(const sdxl_lora_registry *reg);

/* Bumped by every refresh that changed the index (and by on-the-spot
 * updates during resolve). */
uint64_t sdxl_lora_registry_generation(const sdxl_lora_registry *reg);

/* Copy entry i (entries are ordered by root, then relative path) into *out.
 * Errors: INVALID_ARG (NULL), NOT_FOUND (i >= count). */
sdxl_status sdxl_lora_registry_get(const sdxl_lora_registry *reg, size_t i, sdxl_lora_info *out,
                                   sdxl_error *err);

/* Resolve a request entry (see above). category may be NULL. *out is
 * always cleared first; on OK out->entry is the file and out->warning may
 * be set; on NOT_FOUND out->suggestions holds the closest names. Errors:
 * INVALID_ARG (refused name or category; NULL arguments), NOT_FOUND,
 * OUT_OF_MEMORY. Messages quote the name (control characters escaped). */
sdxl_status sdxl_lora_registry_resolve(sdxl_lora_registry *reg, const char *name, const char *category,
                                       sdxl_lora_resolution *out, sdxl_error *err);

/* Hash of the indexed file whose canonical path is `path` (sdxl_lora_info.path).
 * out must hold 13 (SHORT) or 65 (SHA256) bytes; it receives lowercase hex.
 * Errors: INVALID_ARG (NULL, out_size too small), NOT_FOUND (path not in
 * the index: only indexed files are hashed), IO (open/read failed),
 * BAD_INPUT (a safetensors file too short for its header, for SHORT). */
sdxl_status sdxl_lora_registry_hash(sdxl_lora_registry *reg, const char *path, sdxl_lora_hash_kind kind,
                                    char *out, size_t out_size, sdxl_error *err);

/* Category normalization used for folders, configured categories and
 * request categories: ASCII-lowercase, then one trailing 's' removed unless
 * the name ends in "ss" or is a single letter. Writes at most n bytes
 * (NUL-terminated, truncated); returns `out`. */
char *sdxl_lora_category_normalize(const char *folder, char *out, size_t n);

#endif
