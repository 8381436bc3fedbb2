/* cache.c - the LRU cache of parsed adapters (see cache.h).
 *
 * One mutex guards everything below; the only slow step, the load, runs
 * without it. A load in flight is a `load` record on c->loads that gets of
 * the same path find and wait on (one condition variable for the cache:
 * loads are rare and slow, so a broadcast per finished load costs nothing).
 * The loader hands each waiter its reference when it finishes, under the
 * lock, so no eviction can slip in between the load and a waiter's wake-up.
 *
 * Adapters are freed outside the lock: evictions collect their victims on a
 * list the caller frees after unlocking (a large adapter's free is an munmap
 * of hundreds of MB; hits should not queue behind it).
 */
#include "lora/cache.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

#define MIB(b) ((double)(b) / (1024.0 * 1024.0))

/* What stat(2) says about a file; two equal ids mean "the same bytes" as far
 * as we can tell without reading them. ctime is in it because tools that
 * keep mtime (cp -p, rsync -t, tar x) still move ctime. */
typedef struct file_id {
    bool known; /* stat succeeded */
    dev_t dev;
    ino_t ino;
    off_t size;
    int64_t mtime_ns, ctime_ns;
} file_id;

/* An entry: one loaded adapter. The handle a get returns is the entry
 * itself; refs counts the handles out. */
struct sdxl_lora_handle {
    sdxl_lora_adapter *a;
    char *path;
    uint64_t hash; /* of path */
    file_id id;
    size_t bytes; /* sdxl_lora_adapter_bytes(a) */
    size_t refs;
    bool kept;                            /* in the LRU list (counted in entries/bytes) */
    struct sdxl_lora_handle *prev, *next; /* LRU list, head = most recently used */
    struct sdxl_lora_handle *free_next;   /* victims to free after unlocking */
};
typedef struct sdxl_lora_handle entry;

/* A load in flight (on c->loads), or finished and waiting for its waiters to
 * pick up the result (off the list then). */
typedef struct load {
    struct load *next;
    const char *path; /* the entry's copy */
    uint64_t hash;
    size_t waiters; /* gets waiting for it; the last to leave frees the record */
    bool done;
    sdxl_status st;
    sdxl_error err;
    entry *e; /* the result on success; allocated before the load */
    double load_ms;
    size_t bytes;
    bool too_large;
} load;

struct sdxl_lora_cache {
    sdxl_lora_cache_params p;
    const sdxl_naming *naming;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    entry *head, *tail;
    load *loads;
    sdxl_lora_cache_stats st; /* hits .. in_use; entries/bytes kept up to date */
};

sdxl_lora_cache_params sdxl_lora_cache_default_params(void) {
    return (sdxl_lora_cache_params){.enabled = true, .max_entries = 32, .max_bytes = (size_t)2048 << 20};
}

/* ---- helpers (lock held unless said) ------------------------------------------ */

static uint64_t hash_path(const char *s) { /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static file_id stat_id(const char *path) { /* no lock needed */
    file_id id = {0};
    struct stat sb;
    if (stat(path, &sb) != 0) return id;
    id.known = true;
    id.dev = sb.st_dev;
    id.ino = sb.st_ino;
    id.size = sb.st_size;
    id.mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
    id.ctime_ns = (int64_t)sb.st_ctim.tv_sec * 1000000000 + sb.st_ctim.tv_nsec;
    return id;
}

static bool same_id(const file_id *a, const file_id *b) {
    return a->known && b->known && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

static bool too_big(const sdxl_lora_cache *c, uint64_t bytes) {
    return c->p.max_bytes && bytes > c->p.max_bytes;
}

static void emit(sdxl_lora_cache *c, sdxl_lora_cache_event ev) {
    if (c->p.on_event) c->p.on_event(&ev, c->p.user_data);
}

static void entry_free(entry *e) { /* no lock needed: e is unreachable */
    if (!e) return;
    sdxl_lora_adapter_free(e->a);
    sdxl_free(e->path);
    sdxl_free(e);
}

static void free_victims(entry *v) { /* after unlocking */
    while (v) {
        entry *n = v->free_next;
        entry_free(v);
        v = n;
    }
}

static void lru_unlink(sdxl_lora_cache *c, entry *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(sdxl_lora_cache *c, entry *e) {
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

/* Take e out of the cache's accounting; freed now (onto *victims) if nothing
 * uses it, else by its last release. */
static void drop(sdxl_lora_cache *c, entry *e, sdxl_lora_cache_event_type why, entry **victims) {
    lru_unlink(c, e);
    e->kept = false;
    c->st.entries--;
    c->st.bytes -= e->bytes;
    if (why == SDXL_LORA_CACHE_EVENT_STALE)
        c->st.stale++;
    else
        c->st.evictions++;
    emit(c, (sdxl_lora_cache_event){.type = why, .path = e->path, .bytes = e->bytes});
    if (e->refs == 0) {
        e->free_next = *victims;
        *victims = e;
    }
}

static bool over_bounds(const sdxl_lora_cache *c) {
    return c->st.entries > c->p.max_entries || too_big(c, c->st.bytes);
}

/* Evict least-recently-used entries not in use until both bounds hold (or
 * only entries in use are left). */
static void enforce_bounds(sdxl_lora_cache *c, entry **victims) {
    for (entry *e = c->tail; e && over_bounds(c);) {
        entry *prev = e->prev;
        if (e->refs == 0) drop(c, e, SDXL_LORA_CACHE_EVENT_EVICTED, victims);
        e = prev;
    }
}

static entry *find_kept(const sdxl_lora_cache *c, const char *path, uint64_t h) {
    for (entry *e = c->head; e; e = e->next)
        if (e->hash == h && strcmp(e->path, path) == 0) return e;
    return NULL;
}

static load *find_load(const sdxl_lora_cache *c, const char *path, uint64_t h) {
    for (load *l = c->loads; l; l = l->next)
        if (l->hash == h && strcmp(l->path, path) == 0) return l;
    return NULL;
}

static void unlist_load(sdxl_lora_cache *c, load *l) {
    for (load **pp = &c->loads; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            return;
        }
}

/* ---- create / free ------------------------------------------------------------------ */

sdxl_status sdxl_lora_cache_create(const sdxl_lora_cache_params *p, const sdxl_naming *naming,
                                   sdxl_lora_cache **out, sdxl_error *err) {
    if (!out || !naming) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora cache: NULL argument");
    *out = NULL;
    sdxl_lora_cache *c = sdxl_calloc(1, sizeof *c);
    if (!c) return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora cache: out of memory");
    c->p = p ? *p : sdxl_lora_cache_default_params();
    c->naming = naming;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        sdxl_free(c);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "lora cache: cannot create a mutex");
    }
    if (pthread_cond_init(&c->cv, NULL) != 0) {
        pthread_mutex_destroy(&c->mu);
        sdxl_free(c);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY,
                              "lora cache: cannot create a condition variable");
    }
    *out = c;
    return SDXL_STATUS_OK;
}

void sdxl_lora_cache_free(sdxl_lora_cache *c) {
    if (!c) return;
    assert(c->st.in_use == 0 && !c->loads && "sdxl_lora_cache_free with handles out or loads running");
    /* without assert (NDEBUG), entries still in use are left to leak rather than freed under their users */
    for (entry *e = c->head; e;) {
        entry *n = e->next;
        if (e->refs == 0) entry_free(e);
        e = n;
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    sdxl_free(c);
}

/* ---- get / release ---------------------------------------------------------------- */

/* Wait (lock held) for l, another thread's load of our path, and take its result. */
static sdxl_status wait_for(sdxl_lora_cache *c, load *l, entry **out, sdxl_lora_load_info *info,
                            sdxl_error *err) {
    double t0 = sdxl_now_s();
    l->waiters++;
    c->st.misses++;
    c->st.waits++;
    while (!l->done)
        pthread_cond_wait(&c->cv, &c->mu);
    info->waited = true;
    info->wait_ms = sdxl_ms_since(t0);
    info->load_ms = l->load_ms;
    info->bytes = l->bytes;
    info->too_large = l->too_large;
    sdxl_status st = l->st;
    if (st) {
        if (err) *err = l->err;
        if (l->too_large) c->st.too_large++;
    } else {
        *out = l->e; /* our reference was counted by the loader */
    }
    if (--l->waiters == 0) sdxl_free(l);
    return st;
}

sdxl_status sdxl_lora_cache_get(sdxl_lora_cache *c, const char *path, sdxl_lora_handle **out,
                                sdxl_lora_load_info *info, sdxl_error *err) {
    sdxl_lora_load_info dummy;
    if (!info) info = &dummy;
    memset(info, 0, sizeof *info);
    if (out) *out = NULL;
    if (!c || !path || !out) return sdxl_error_set(err, SDXL_STATUS_INVALID_ARG, "lora cache: NULL argument");

    uint64_t h = hash_path(path);
    file_id id = stat_id(path); /* before the load: a change during it shows at the next get */
    entry *victims = NULL;
    sdxl_status st = SDXL_STATUS_OK;

    pthread_mutex_lock(&c->mu);
    if (c->p.enabled) {
        entry *e = find_kept(c, path, h);
        if (e && same_id(&e->id, &id)) {
            e->refs++;
            c->st.in_use++;
            c->st.hits++;
            lru_unlink(c, e);
            lru_push_front(c, e);
            info->hit = true;
            info->bytes = e->bytes;
            *out = e;
            pthread_mutex_unlock(&c->mu);
            return SDXL_STATUS_OK;
        }
        if (e) drop(c, e, SDXL_LORA_CACHE_EVENT_STALE, &victims);
    }
    if (id.known && too_big(c, (uint64_t)id.size)) { /* refused without reading it */
        c->st.misses++;
        c->st.too_large++;
        pthread_mutex_unlock(&c->mu);
        free_victims(victims);
        info->too_large = true;
        info->bytes = (size_t)id.size;
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY,
                              "%s: the file is %lld bytes (%.1f MiB), more than the LoRA memory limit of %zu "
                              "bytes (%.1f MiB); not loaded",
                              path, (long long)id.size, MIB(id.size), c->p.max_bytes, MIB(c->p.max_bytes));
    }
    load *l = find_load(c, path, h);
    if (l) {
        st = wait_for(c, l, out, info, err);
        pthread_mutex_unlock(&c->mu);
        free_victims(victims);
        return st;
    }

    /* ours to load: the entry and the record first, so a finished load cannot fail for memory */
    entry *e = sdxl_calloc(1, sizeof *e);
    l = sdxl_calloc(1, sizeof *l);
    char *pcopy = sdxl_strdup(path);
    if (!e || !l || !pcopy) {
        c->st.misses++;
        pthread_mutex_unlock(&c->mu);
        sdxl_free(e);
        sdxl_free(l);
        sdxl_free(pcopy);
        free_victims(victims);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    e->path = pcopy;
    e->hash = h;
    e->id = id;
    l->path = pcopy;
    l->hash = h;
    l->next = c->loads;
    c->loads = l;
    c->st.misses++;
    c->st.loads++;
    emit(c, (sdxl_lora_cache_event){.type = SDXL_LORA_CACHE_EVENT_LOAD_BEGIN, .path = path});
    pthread_mutex_unlock(&c->mu);
    free_victims(victims);
    victims = NULL;

    sdxl_error lerr = {0};
    sdxl_lora_adapter *a = NULL;
    double t0 = sdxl_now_s();
    st = sdxl_lora_adapter_load(path, c->naming, &a, &lerr);
    size_t bytes = st ? 0 : sdxl_lora_adapter_bytes(a);
    bool refused = !st && too_big(c, bytes);
    if (refused) {
        sdxl_lora_adapter_free(a);
        a = NULL;
        st = sdxl_error_set(&lerr, SDXL_STATUS_OUT_OF_MEMORY,
                            "%s: the adapter takes %zu bytes (%.1f MiB) in memory, more than the LoRA memory "
                            "limit of %zu bytes (%.1f MiB)",
                            path, bytes, MIB(bytes), c->p.max_bytes, MIB(c->p.max_bytes));
    }
    double ms = sdxl_ms_since(t0);

    pthread_mutex_lock(&c->mu);
    unlist_load(c, l);
    c->st.load_ms_total += ms;
    l->done = true;
    l->st = st;
    l->load_ms = ms;
    l->bytes = bytes;
    l->too_large = refused;
    info->load_ms = ms;
    info->bytes = bytes;
    info->too_large = refused;
    if (st) {
        c->st.load_failures++;
        if (refused) c->st.too_large++;
        l->err = lerr;
        emit(c, (sdxl_lora_cache_event){
                    .type = SDXL_LORA_CACHE_EVENT_LOAD_FAILED, .path = path, .load_ms = ms, .status = st});
        if (err) *err = lerr;
        entry_free(e); /* its path goes with it: l->path is not read once done */
        l->path = NULL;
    } else {
        e->a = a;
        e->bytes = bytes;
        e->refs = 1 + l->waiters;
        c->st.in_use += e->refs;
        l->e = e;
        e->kept = c->p.enabled && c->p.max_entries > 0 && id.known;
        if (e->kept) {
            lru_push_front(c, e);
            c->st.entries++;
            c->st.bytes += bytes;
        }
        emit(c, (sdxl_lora_cache_event){.type = SDXL_LORA_CACHE_EVENT_LOADED,
                                        .path = path,
                                        .bytes = bytes,
                                        .load_ms = ms,
                                        .kept = e->kept});
        if (e->kept) enforce_bounds(c, &victims);
        *out = e;
    }
    bool waited_on = l->waiters > 0;
    if (waited_on)
        pthread_cond_broadcast(&c->cv);
    else
        sdxl_free(l);
    pthread_mutex_unlock(&c->mu);
    free_victims(victims);
    if (!st) SDXL_LOG_D("lora cache: loaded %s, %zu bytes, %.1f ms", path, bytes, ms);
    return st;
}

const sdxl_lora_adapter *sdxl_lora_handle_adapter(const sdxl_lora_handle *h) {
    return h ? h->a : NULL;
}

void sdxl_lora_cache_release(sdxl_lora_cache *c, sdxl_lora_handle *h) {
    if (!c || !h) return;
    entry *victims = NULL;
    pthread_mutex_lock(&c->mu);
    assert(h->refs > 0 && "sdxl_lora_cache_release: handle released more often than got");
    h->refs--;
    c->st.in_use--;
    if (h->refs == 0) {
        if (!h->kept) {
            h->free_next = victims;
            victims = h;
        } else {
            enforce_bounds(c, &victims); /* the excess kept while it was in use goes now */
        }
    }
    pthread_mutex_unlock(&c->mu);
    free_victims(victims);
}

/* ---- stats / clear ----------------------------------------------------------------- */

void sdxl_lora_cache_stats_get(const sdxl_lora_cache *c, sdxl_lora_cache_stats *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!c) return;
    sdxl_lora_cache *m = (sdxl_lora_cache *)c; /* the lock is not part of the value */
    pthread_mutex_lock(&m->mu);
    *out = m->st;
    pthread_mutex_unlock(&m->mu);
}

void sdxl_lora_cache_clear(sdxl_lora_cache *c) {
    if (!c) return;
    entry *victims = NULL;
    pthread_mutex_lock(&c->mu);
    for (entry *e = c->tail; e;) {
        entry *prev = e->prev;
        if (e->refs == 0) drop(c, e, SDXL_LORA_CACHE_EVENT_EVICTED, &victims);
        e = prev;
    }
    pthread_mutex_unlock(&c->mu);
    free_victims(victims);
}
