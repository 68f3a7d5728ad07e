/* dlopen/dlclose: a handle cache that keeps plugins resident.
 *
 * Plugin hosts that dlopen and dlclose per request pay a full load and
 * unload each time (mmap, relocation, constructors), and under
 * vm.max_map_count, RLIMIT_AS or descriptor pressure those loads start to
 * fail. The cache is keyed by (return address of the caller, name): the
 * same call site asking for the same name resolves to the same object, as
 * the loader would have resolved it (see dlcaller.c: misses go to the loader
 * with the caller's return address, so $ORIGIN, RPATH/RUNPATH and the
 * namespace are the caller's).
 *
 * Reference counts: the loader holds exactly one reference per cached object
 * (ours); the application's opens and closes are counted here. At the
 * application's last dlclose, `cache` mode closes for real (constructors and
 * destructors run as without the shim); `keep` mode keeps the object idle,
 * up to FDGUARD_DLOPEN_KEEP of them (LRU), and drops an idle copy whose
 * file changed on disk so that hot reload keeps working.
 *
 * Locking: one mutex, never held across a load (constructors may dlopen). */
#include "fdguard.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define EXPORT __attribute__((visibility("default")))
#define BUCKETS 1024

struct object {
    void *handle;
    unsigned app_refs; /* 0: idle (keep mode) */
    bool global, nodelete;
    bool preloaded; /* loaded before the cache first saw it: resident anyway */
    bool idle;      /* on the LRU list */
    bool has_id;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    struct object *next;
    struct object *lru_prev, *lru_next; /* idle objects, most recent first */
};

struct entry {
    void *caller;
    /* Checked on a hit: the object at that address may have been unloaded
     * and another one mapped there (same link map memory, even). */
    struct fdg_caller caller_object;
    const char *caller_path; /* its l_name, stored after name */
    /* The object was loaded by this call: the caller's own search found the
     * file. Otherwise the loader matched an object already loaded, which an
     * idle copy must not stand in for (without us it would be gone). */
    bool searched;
    uint32_t hash;
    struct object *object;
    struct entry *next;
    char name[]; /* as the caller passed it */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *buckets[BUCKETS];
static struct object *objects;
static struct object *lru_head, *lru_tail;
static unsigned idle_count;

void fdg_dlopen_atfork_prepare(void)
{
    pthread_mutex_lock(&lock);
}

void fdg_dlopen_atfork_release(void)
{
    pthread_mutex_unlock(&lock);
}

static uint32_t key_hash(const void *caller, const char *name)
{
    uint32_t h = 2166136261u ^ (uint32_t)((uintptr_t)caller >> 4);
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

static struct entry *find_entry(const void *caller, const char *name, uint32_t hash)
{
    for (struct entry *e = buckets[hash % BUCKETS]; e; e = e->next)
        if (e->hash == hash && e->caller == caller && strcmp(e->name, name) == 0) return e;
    return NULL;
}

static void drop_entry(struct entry *gone)
{
    for (struct entry **p = &buckets[gone->hash % BUCKETS]; *p; p = &(*p)->next)
        if (*p == gone) {
            *p = gone->next;
            free(gone);
            return;
        }
}

static struct object *find_object(const void *handle)
{
    for (struct object *o = objects; o; o = o->next)
        if (o->handle == handle) return o;
    return NULL;
}

static void lru_unlink(struct object *o)
{
    if (!o->idle) return;
    o->idle = false;
    *(o->lru_prev ? &o->lru_prev->lru_next : &lru_head) = o->lru_next;
    *(o->lru_next ? &o->lru_next->lru_prev : &lru_tail) = o->lru_prev;
    o->lru_prev = o->lru_next = NULL;
    idle_count--;
}

static void lru_push(struct object *o)
{
    o->idle = true;
    o->lru_prev = NULL;
    o->lru_next = lru_head;
    *(lru_head ? &lru_head->lru_prev : &lru_tail) = o;
    lru_head = o;
    idle_count++;
}

/* Unlinks o with every entry that leads to it. */
static void forget_object(struct object *o)
{
    lru_unlink(o);
    for (struct object **p = &objects; *p; p = &(*p)->next)
        if (*p == o) {
            *p = o->next;
            break;
        }
    for (unsigned b = 0; b < BUCKETS; b++)
        for (struct entry **p = &buckets[b]; *p;) {
            struct entry *e = *p;
            if (e->object == o) {
                *p = e->next;
                free(e);
            } else {
                p = &e->next;
            }
        }
}

/* Really closes an object taken out of the cache (outside the lock). */
static void unload(struct object *o)
{
    fdg_next.dlclose(o->handle);
    fdg_count(FDG_C_dlopen_unloads, 1);
    free(o);
}

static bool same_file(const struct object *o, const struct stat *st)
{
    return st->st_dev == o->dev && st->st_ino == o->ino && st->st_size == o->size &&
           st->st_mtim.tv_sec == o->mtime.tv_sec && st->st_mtim.tv_nsec == o->mtime.tv_nsec;
}

static bool file_changed(const struct object *o, const char *path)
{
    struct stat st;
    int saved = errno;
    bool changed = o->has_id && (stat(path, &st) != 0 || !same_file(o, &st));
    errno = saved;
    return changed;
}

static const char *object_path(void *handle)
{
    struct link_map *map = NULL;
    if (dlinfo(handle, RTLD_DI_LINKMAP, &map) != 0 || !map) return NULL;
    return map->l_name;
}

/* Linked with -z nodelete: the loader never unloads it. */
static bool flagged_nodelete(const struct link_map *map)
{
    for (const ElfW(Dyn) *d = map->l_ld; d && d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_FLAGS_1) return d->d_un.d_val & DF_1_NODELETE;
    return false;
}

static struct object *new_object(void *handle, int mode, bool preloaded)
{
    struct object *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->handle = handle;
    o->global = mode & RTLD_GLOBAL;
    o->nodelete = mode & RTLD_NODELETE;
    o->preloaded = preloaded;
    struct link_map *map = NULL;
    struct stat st;
    if (dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map) {
        o->nodelete |= flagged_nodelete(map);
        if (map->l_name && map->l_name[0] && stat(map->l_name, &st) == 0) {
            o->has_id = true;
            o->dev = st.st_dev;
            o->ino = st.st_ino;
            o->size = st.st_size;
            o->mtime = st.st_mtim;
        }
    }
    return o;
}

/* A loaded handle enters the cache. Returns true if the loader now holds a
 * second reference that the caller must drop (the object was cached). */
static bool remember(void *caller, const struct fdg_caller *caller_object, const char *name,
                     uint32_t hash, void *handle, int mode, bool preloaded)
{
    /* Prepared outside the lock: it stats and walks the link maps. */
    struct object *fresh = NULL;
    pthread_mutex_lock(&lock);
    struct object *o = find_object(handle);
    if (!o) {
        pthread_mutex_unlock(&lock);
        fresh = new_object(handle, mode, preloaded);
        if (!fresh) return false; /* not cached: the app's reference is the loader's */
        pthread_mutex_lock(&lock);
        o = find_object(handle);
    }
    bool extra = o != NULL;
    if (o) {
        free(fresh);
        lru_unlink(o);
        o->app_refs++;
        o->global |= (mode & RTLD_GLOBAL) != 0;
        o->nodelete |= (mode & RTLD_NODELETE) != 0;
    } else {
        o = fresh;
        o->app_refs = 1;
        o->next = objects;
        objects = o;
        fdg_count(FDG_C_dlopen_loads, 1);
    }
    size_t len = strlen(name);
    const char *path = caller_object->map->l_name ? caller_object->map->l_name : "";
    size_t path_len = strlen(path);
    struct entry *e = find_entry(caller, name, hash);
    if (!e && (e = malloc(sizeof *e + len + 1 + path_len + 1))) {
        e->caller = caller;
        e->caller_object = *caller_object;
        e->hash = hash;
        memcpy(e->name, name, len + 1);
        e->caller_path = memcpy(e->name + len + 1, path, path_len + 1);
        e->searched = false;
        e->next = buckets[hash % BUCKETS];
        buckets[hash % BUCKETS] = e;
    }
    if (e) {
        if (e->object != o) e->searched = false;
        e->object = o;
        e->searched |= !extra && !preloaded;
    }
    pthread_mutex_unlock(&lock);
    return extra;
}

/* Served from the cache? Reopens that change loader state (RTLD_GLOBAL
 * promotion, RTLD_NODELETE) must reach the loader. */
static void *lookup(void *caller, const char *name, uint32_t hash, int mode, bool *noload_idle)
{
    struct object *stale = NULL;
    void *handle = NULL;
    struct fdg_caller now;
    pthread_mutex_lock(&lock);
    struct entry *e = find_entry(caller, name, hash);
    /* The code at that address may belong to another object by now. */
    if (e && (!fdg_dlcaller_object(caller, &now) || now.map != e->caller_object.map ||
              now.start != e->caller_object.start ||
              strcmp(now.map->l_name ? now.map->l_name : "", e->caller_path) != 0)) {
        drop_entry(e);
        e = NULL;
    }
    struct object *o = e ? e->object : NULL;
    if (o && o->idle) {
        /* Idle: without the shim it would have been unloaded. */
        if (mode & RTLD_NOLOAD) {
            *noload_idle = true;
            o = NULL;
        } else if (!e->searched) {
            o = NULL; /* a real search must decide: see load() in dlopen() */
        } else if (file_changed(o, object_path(o->handle))) {
            forget_object(o);
            stale = o;
            o = NULL;
        }
    }
    if (o && (((mode & RTLD_GLOBAL) && !o->global) || ((mode & RTLD_NODELETE) && !o->nodelete)))
        o = NULL;
    if (o) {
        lru_unlink(o);
        o->app_refs++;
        handle = o->handle;
    }
    pthread_mutex_unlock(&lock);
    if (stale) {
        fdg_count(FDG_C_dlopen_reloads, 1);
        fdg_logf(FDG_LVL_INFO, FDG_EV_DLOPEN, "dlopen(%s): file changed on disk; reloading", name);
        unload(stale);
    }
    return handle;
}

/* Loader messages for failures that may pass: mapping and memory pressure,
 * descriptor exhaustion. */
static bool transient(const char *msg)
{
    static const char *const patterns[] = {
        "failed to map segment from shared object",
        "cannot map zero-fill pages",
        "cannot allocate memory",
        "Cannot allocate memory",
        "Resource temporarily unavailable",
        "Too many open files", /* also "... in system" */
    };
    if (strstr(msg, "static TLS")) return false; /* "cannot allocate memory in static TLS block" */
    for (size_t i = 0; i < sizeof patterns / sizeof *patterns; i++)
        if (strstr(msg, patterns[i])) return true;
    return false;
}

/* The real load, with descriptor relief and retries of transient failures.
 * dlopen reports failures only through dlerror(), which a read consumes:
 * the last attempt is not read, so the application reads exactly the
 * loader's message; after a permanent failure the call is repeated once
 * (cheap and deterministic) to leave the message in place for it. */
static void *load(void *caller, const char *file, int mode)
{
    fdg_engage_load();
    for (unsigned attempt = 0;; attempt++) {
        bool lent = fdg_spare_lend_if_full();
        void *handle = fdg_dlopen_as(caller, file, mode);
        if (lent) {
            fdg_count(FDG_C_dlopen_fd_lends, 1);
            fdg_spare_arm();
        }
        if (handle || attempt >= fdg_cfg.dlopen_retries) return handle;
        const char *msg = fdg_next.dlerror();
        if (!msg) return NULL; /* RTLD_NOLOAD of an object not loaded */
        if (!transient(msg)) return fdg_dlopen_as(caller, file, mode);
        fdg_count(FDG_C_dlopen_retries, 1);
        fdg_logf(FDG_LVL_WARN, FDG_EV_DLOPEN, "dlopen: %s; retry %u of %u", msg, attempt + 1,
                 fdg_cfg.dlopen_retries);
        fdg_backoff_sleep(attempt);
    }
}

/* Objects the loader has added so far (dl_iterate_phdr's dlpi_adds). */
static int adds_one(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    *(unsigned long long *)arg = info->dlpi_adds;
    return 1;
}

static unsigned long long loader_adds(void)
{
    unsigned long long adds = 0;
    dl_iterate_phdr(adds_one, &adds);
    return adds;
}

static void drop_idle(void *handle)
{
    pthread_mutex_lock(&lock);
    struct object *o = find_object(handle);
    if (o && o->idle)
        forget_object(o);
    else
        o = NULL;
    pthread_mutex_unlock(&lock);
    if (o) unload(o);
}

static bool idle_in_cache(void *handle, bool *cached)
{
    pthread_mutex_lock(&lock);
    struct object *o = find_object(handle);
    bool idle = o && o->idle;
    *cached = o != NULL;
    pthread_mutex_unlock(&lock);
    return idle;
}

EXPORT void *dlopen(const char *file, int mode)
{
    void *caller = __builtin_return_address(0);
    struct fdg_caller caller_object;
    if (!file || !fdg_active() || fdg_cfg.dlopen == FDG_DLOPEN_OFF || !fdg_dlcaller_faithful ||
        !fdg_dlcaller_object(caller, &caller_object))
        return fdg_dlopen_as(caller, file, mode);
    uint32_t hash = key_hash(caller, file);
    bool noload_idle = false;
    void *handle = lookup(caller, file, hash, mode, &noload_idle);
    if (handle || noload_idle) {
        /* Every dlopen clears the error a previous call left unread. */
        fdg_next.dlerror();
        if (handle) fdg_count(FDG_C_dlopen_hits, 1);
        return handle; /* NULL: as after a real unload, RTLD_NOLOAD finds nothing */
    }
    fdg_count(FDG_C_dlopen_misses, 1);
    unsigned long long adds = loader_adds();
    handle = load(caller, file, mode);
    if (!handle) return NULL;
    bool cached;
    if (idle_in_cache(handle, &cached)) {
        /* The loader matched a copy that is resident only because we kept
         * it. For the application it is gone: RTLD_NOLOAD finds nothing, and
         * whether this caller would find the file at all is for a real
         * search to say. */
        fdg_next.dlclose(handle);
        if (mode & RTLD_NOLOAD) {
            fdg_next.dlerror();
            return NULL;
        }
        drop_idle(handle);
        adds = loader_adds();
        handle = load(caller, file, mode);
        if (!handle) return NULL;
        idle_in_cache(handle, &cached);
    }
    bool preloaded = !cached && loader_adds() == adds;
    if (remember(caller, &caller_object, file, hash, handle, mode, preloaded))
        fdg_next.dlclose(handle); /* the loader keeps one reference per object */
    return handle;
}

EXPORT int dlclose(void *handle)
{
    if (!fdg_active() || fdg_cfg.dlopen == FDG_DLOPEN_OFF) return fdg_next.dlclose(handle);
    struct object *gone = NULL;
    pthread_mutex_lock(&lock);
    struct object *o = find_object(handle);
    if (!o) {
        pthread_mutex_unlock(&lock);
        return fdg_next.dlclose(handle); /* not ours: the loader answers */
    }
    if (!o->app_refs) {
        /* One close too many of an idle object: forwarding it would drop the
         * reference the cache lives on (and leave a dangling handle). */
        pthread_mutex_unlock(&lock);
        return 0;
    }
    if (--o->app_refs == 0) {
        /* Kept idle only if that changes something and nothing else: an
         * RTLD_GLOBAL object would stay in the global scope, a NODELETE or
         * preloaded one stays resident anyway. */
        if (fdg_cfg.dlopen == FDG_DLOPEN_CACHE || o->global || o->nodelete || o->preloaded) {
            forget_object(o);
            gone = o;
        } else {
            lru_push(o);
            if (idle_count > fdg_cfg.dlopen_keep) {
                gone = lru_tail;
                forget_object(gone);
                fdg_count(FDG_C_dlopen_evictions, 1);
            }
        }
    }
    pthread_mutex_unlock(&lock);
    if (!gone) return 0;
    if (gone != o) {
        unload(gone);
        return 0;
    }
    /* Not kept: the application's last close is the loader's. */
    int r = fdg_next.dlclose(handle);
    fdg_count(FDG_C_dlopen_unloads, 1);
    free(gone);
    return r;
}
