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
 * up to FDGUARD_DLOPEN_KEEP of them (LRU), detached from its files
 * (dldetach.c), and drops an idle copy whose files changed on disk so that
 * hot reload keeps working.
 *
 * Locking: one mutex for the tables, never held across a load (constructors
 * may dlopen) nor across a detach (milliseconds for a large object: hits on
 * other objects must not wait for it); our walks of the loader's list take
 * walk_lock (fork).
 *
 * Every answer must be glibc's: the mode checks (invalid modes go to the
 * loader), dlerror() cleared by every success the cache answers itself,
 * errno as the real call (or nothing) left it. */
#include "fdguard.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BUCKETS 1024

struct object {
    void *handle;
    unsigned app_refs; /* 0: idle (keep mode) */
    bool global, nodelete;
    bool preloaded; /* loaded before the cache first saw it: resident anyway */
    bool idle;      /* on the LRU list */
    bool has_id;
    bool detached; /* no page reads its file any more (dldetach.c) */
    bool busy;     /* being detached, outside the lock: handed out to nobody */
    int load_mode; /* RTLD_LAZY/RTLD_NOW and RTLD_DEEPBIND of the load */
    struct fdg_file_id id;
    struct fdg_dep **deps; /* the dependencies detached with it */
    unsigned ndeps;
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
/* Detaches under way (busy objects), and their end. */
static unsigned detaching;
static pthread_cond_t detach_done = PTHREAD_COND_INITIALIZER;

/* With the lock held: until no detach is under way. A miss that found an
 * object the loader still holds must not hand it out while its pages are
 * being copied (a write in between would be lost), nor decide whether it
 * is idle before the detach has said. Hits do not wait: a busy object is a
 * miss for them, and other objects' hits go on. */
static void wait_for_detaches(void)
{
    while (detaching)
        pthread_cond_wait(&detach_done, &lock);
}

/* Our walks of the loader's list (dl_iterate_phdr takes the loader's write
 * lock). Fork waits for them: a child must never inherit that lock taken by
 * us. A child of a multi-threaded parent does not walk at all: another
 * thread may have held the write lock at the fork, and glibc's fork resets
 * only dl_load_lock and dl_load_tls_lock; a dlopen of an object already
 * loaded, which needs no write lock, would hang in our walk where glibc
 * itself would not. */
static pthread_mutex_t walk_lock = PTHREAD_MUTEX_INITIALIZER;
static bool walk_forbidden;
/* Objects in the loader's list at our first walk (the first miss): the
 * program and its libraries, never unloaded (dldetach.c). */
static _Atomic unsigned permanent_objects;
static pid_t forking_pid;
static bool forking_threaded;

bool fdg_loader_walk_begin(void)
{
    if (walk_forbidden) return false;
    pthread_mutex_lock(&walk_lock);
    return true;
}

void fdg_loader_walk_end(void)
{
    pthread_mutex_unlock(&walk_lock);
}

void fdg_dlopen_atfork_prepare(void)
{
    pthread_mutex_lock(&lock);
    wait_for_detaches(); /* a child must not inherit a half-made copy, nor a busy mark */
    pthread_mutex_lock(&walk_lock);
    fdg_gadget_atfork(true);
    forking_pid = atomic_load_explicit(&fdg_self_pid, memory_order_relaxed);
    /* glibc 2.32's __libc_single_threaded (next.c): false once the process
     * has created a thread. Without it, assume threads. */
    const char *single = fdg_next.libc_single_threaded;
    forking_threaded = single ? !*single : true;
}

/* Parent and child; the child's pid was updated before (init.c). */
void fdg_dlopen_atfork_release(void)
{
    if (atomic_load_explicit(&fdg_self_pid, memory_order_relaxed) != forking_pid)
        walk_forbidden |= forking_threaded;
    fdg_gadget_atfork(false);
    pthread_mutex_unlock(&walk_lock);
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

static void free_object(struct object *o)
{
    if (o->deps) fdg_free_deps(o->deps, o->ndeps);
    free(o);
}

/* Really closes an object taken out of the cache (outside the lock). */
static void unload(struct object *o)
{
    fdg_next.dlclose(o->handle);
    fdg_count(FDG_C_dlopen_unloads, 1);
    free_object(o);
}

/* A successful dlopen or dlclose leaves no error for dlerror() (glibc's
 * _dlerror_run), so the answers the cache gives itself must clear it too.
 * dlerror() sets errno while it formats a pending message. */
static void clear_dlerror(void)
{
    int saved = errno;
    fdg_next.dlerror();
    errno = saved;
}

/* glibc's handles are its link maps. Not dlinfo(): a successful call clears
 * a dlerror() message that a constructor left, which glibc's successful
 * dlopen keeps. */
static struct link_map *map_of(void *handle)
{
    return handle;
}

static bool file_id(const char *path, struct fdg_file_id *out)
{
    struct stat st;
    int saved = errno;
    bool ok = path && path[0] && stat(path, &st) == 0;
    errno = saved;
    if (!ok) return false;
    *out = (struct fdg_file_id){st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim};
    return true;
}

/* ctime too: `cp -p` keeps the size and the mtime of a same-size build. */
static bool file_id_same(const struct fdg_file_id *a, const struct fdg_file_id *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

static bool file_changed(const char *path, const struct fdg_file_id *was)
{
    struct fdg_file_id now;
    return !file_id(path, &now) || !file_id_same(was, &now);
}

/* The identities of the dependencies a detach named; false if one's file
 * is gone already. */
static bool deps_ids(struct fdg_dep **deps, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (!file_id(deps[i]->path, &deps[i]->id)) return false;
    return true;
}

/* Its file, or one of the dependencies that came with it, changed on disk. */
static bool files_changed(const struct object *o)
{
    if (o->has_id && file_changed(map_of(o->handle)->l_name, &o->id)) return true;
    for (unsigned i = 0; i < o->ndeps; i++)
        if (file_changed(o->deps[i]->path, &o->deps[i]->id)) return true;
    return false;
}

/* Linked with -z nodelete: the loader never unloads it. */
static bool flagged_nodelete(const struct link_map *map)
{
    for (const ElfW(Dyn) *d = map->l_ld; d && d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_FLAGS_1) return d->d_un.d_val & DF_1_NODELETE;
    return false;
}

/* What a fresh load of the same name would decide anew: an idle copy
 * loaded otherwise is not what the application would get. */
#define LOAD_MODE (RTLD_BINDING_MASK | RTLD_DEEPBIND)

static struct object *new_object(void *handle, int mode, bool preloaded)
{
    struct object *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->handle = handle;
    o->global = mode & RTLD_GLOBAL;
    o->nodelete = mode & RTLD_NODELETE;
    o->preloaded = preloaded;
    o->load_mode = mode & LOAD_MODE;
    struct link_map *map = map_of(handle);
    o->nodelete |= flagged_nodelete(map);
    /* Only an idle object is checked against its file (keep mode). */
    o->has_id = fdg_cfg.dlopen == FDG_DLOPEN_KEEP && file_id(map->l_name, &o->id);
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
    wait_for_detaches();
    struct object *o = find_object(handle);
    if (!o) {
        pthread_mutex_unlock(&lock);
        fresh = new_object(handle, mode, preloaded);
        if (!fresh) return false; /* not cached: the app's reference is the loader's */
        pthread_mutex_lock(&lock);
        wait_for_detaches();
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
        e->object = NULL;
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
 * promotion, RTLD_NODELETE) must reach the loader. `now`: the caller's
 * object as this call found it. */
static void *lookup(void *caller, const struct fdg_caller *now, const char *name, uint32_t hash,
                    int mode, bool *noload_idle)
{
    struct object *stale = NULL;
    bool changed = false;
    void *handle = NULL;
    pthread_mutex_lock(&lock);
    struct entry *e = find_entry(caller, name, hash);
    /* The code at that address may belong to another object by now: one
     * loaded where an unloaded one was, even with its link map at the same
     * address and the same layout (the same build in another directory,
     * whose $ORIGIN differs), so the path too. */
    if (e && (!fdg_same_caller(now, &e->caller_object) ||
              strcmp(now->map->l_name ? now->map->l_name : "", e->caller_path) != 0)) {
        drop_entry(e);
        e = NULL;
    }
    struct object *o = e ? e->object : NULL;
    if (o && o->busy) {
        /* Its last close is being made: gone for the application, as an
         * idle one is. A real load answers (remember() waits). */
        *noload_idle = (mode & RTLD_NOLOAD) != 0;
        o = NULL;
    } else if (o && o->idle) {
        /* Idle: without the shim it would have been unloaded. */
        if (mode & RTLD_NOLOAD) {
            *noload_idle = true;
            o = NULL;
        } else if (!e->searched) {
            o = NULL; /* a real search must decide: see load() in dlopen() */
        } else if ((changed = files_changed(o)) || (mode & LOAD_MODE) != o->load_mode) {
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
        if (changed) {
            fdg_count(FDG_C_dlopen_reloads, 1);
            fdg_logf(FDG_LVL_INFO, FDG_EV_DLOPEN, "dlopen(%s): file changed on disk; reloading",
                     name);
        }
        unload(stale); /* from intact pages: it was detached when it went idle */
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

static bool any_idle(void)
{
    pthread_mutex_lock(&lock);
    bool some = idle_count != 0;
    pthread_mutex_unlock(&lock);
    return some;
}

/* Static TLS ran out ("cannot allocate memory in static TLS block"). An
 * object that holds a block of it (initial-exec TLS, DF_STATIC_TLS, is never
 * kept: dldetach.c; but glibc also gives TLS-descriptor objects a static
 * block when there is room) gives it back at its real dlclose, if it is the
 * last block allocated. Without the shim every idle object would have been
 * closed: close them all, newest first (the order their blocks came in,
 * reversed). False if there was none. */
static bool evict_all_idle(void)
{
    struct object *evicted = NULL, **end = &evicted;
    pthread_mutex_lock(&lock);
    for (struct object *o = objects, *next; o; o = next) {
        next = o->next;
        if (!o->idle) continue;
        forget_object(o);
        o->next = NULL;
        *end = o;
        end = &o->next;
        fdg_count(FDG_C_dlopen_evictions, 1);
    }
    pthread_mutex_unlock(&lock);
    for (struct object *o = evicted, *next; o; o = next) {
        next = o->next;
        unload(o);
    }
    return evicted != NULL;
}

/* The real load, with descriptor relief and retries of transient failures.
 * dlopen reports failures only through dlerror(), which a read consumes:
 * the last attempt is not read, so the application reads exactly the
 * loader's message; after a permanent failure the call is repeated once
 * (cheap and deterministic) to leave the message in place for it. A
 * failure for want of static TLS while idle objects exist is read even on
 * the last attempt: they are closed before that repeat. *err: errno as the
 * last real call left it. */
static void *load(const struct fdg_as *as, const char *file, int mode, int *err)
{
    fdg_engage_load();
    bool may_evict = true;
    for (unsigned attempt = 0;; attempt++) {
        uint64_t lend;
        bool lent = fdg_spare_lend_for_load(&lend);
        if (lent) fdg_count(FDG_C_dlopen_fd_lends, 1);
        void *handle = fdg_dlopen_as(as, file, mode);
        *err = errno;
        bool last = attempt >= fdg_cfg.dlopen_retries;
        const char *msg = NULL;
        if (!handle && (!last || (may_evict && (may_evict = any_idle())))) msg = fdg_next.dlerror();
        if (msg && (last || !transient(msg))) {
            if (may_evict && strstr(msg, "static TLS") && evict_all_idle())
                fdg_logf(FDG_LVL_INFO, FDG_EV_DLOPEN,
                         "dlopen(%s): static TLS exhausted; idle objects closed, trying again",
                         file);
            may_evict = false;
            /* Still with the slot lent: at the limit, the repeat would fail
             * to open /etc/ld.so.cache, and glibc would give up on its cache
             * for good and report "Too many open files". */
            handle = fdg_dlopen_as(as, file, mode);
            *err = errno;
            msg = NULL;
        }
        if (lent) fdg_spare_return(lend);
        if (!msg) return handle; /* loaded, last attempt, or RTLD_NOLOAD found nothing */
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

static int count_one(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)info;
    (void)size;
    ++*(unsigned *)arg;
    return 0;
}

/* False where we may not walk the loader's list (see walk_lock). */
static bool loader_adds(unsigned long long *adds)
{
    if (!fdg_loader_walk_begin()) return false;
    static bool counted;
    if (!counted) {
        unsigned n = 0;
        dl_iterate_phdr(count_one, &n);
        atomic_store_explicit(&permanent_objects, n, memory_order_relaxed);
        counted = true;
    }
    dl_iterate_phdr(adds_one, adds);
    fdg_loader_walk_end();
    return true;
}

/* Does the application hold this object? (Asked by a detach, outside the
 * lock.) */
static bool held_by_app(const void *handle)
{
    pthread_mutex_lock(&lock);
    const struct object *o = find_object(handle);
    bool held = o && o->app_refs;
    pthread_mutex_unlock(&lock);
    return held;
}

/* With the lock held: the idle object that handle is, or that keeps it
 * loaded as a dependency that came with it. */
static struct object *idle_owner(const void *handle)
{
    for (struct object *o = lru_head; o; o = o->lru_next) {
        if (o->handle == handle) return o;
        for (unsigned i = 0; i < o->ndeps; i++)
            if (o->deps[i]->handle == handle) return o;
    }
    return NULL;
}

static void drop_idle(void *handle)
{
    pthread_mutex_lock(&lock);
    struct object *o = idle_owner(handle);
    if (o) forget_object(o);
    pthread_mutex_unlock(&lock);
    if (o) unload(o);
}

/* Is it resident only because the cache keeps it (or its owner) idle? */
static bool idle_in_cache(void *handle, bool *cached)
{
    pthread_mutex_lock(&lock);
    wait_for_detaches();
    struct object *o = find_object(handle);
    bool idle = idle_owner(handle) != NULL;
    *cached = o != NULL;
    pthread_mutex_unlock(&lock);
    return idle;
}

/* glibc refuses other bits ("invalid mode parameter", dlfcn/dlopen.c) and a
 * mode with neither RTLD_LAZY nor RTLD_NOW ("invalid mode for dlopen()",
 * elf/dl-open.c), whatever the name: such calls go to the loader as they
 * are, and so does __RTLD_SPROF (a mapping for sprof, never counted). */
static bool cacheable_mode(int mode)
{
    const int known = RTLD_BINDING_MASK | RTLD_NOLOAD | RTLD_DEEPBIND | RTLD_GLOBAL | RTLD_NODELETE;
    return !(mode & ~known) && (mode & RTLD_BINDING_MASK);
}

static struct fdg_dl_ret answer(void *value, int err)
{
    errno = err;
    return (struct fdg_dl_ret){value, NULL};
}

static struct fdg_dl_ret pass_dlopen(int err)
{
    errno = err;
    return (struct fdg_dl_ret){NULL, (void *)fdg_next.dlopen};
}

struct fdg_dl_ret fdg_dlopen_enter(const char *file, int mode, void **ret_slot)
{
    int saved = errno;
    void *caller = *ret_slot;
    struct fdg_caller caller_object;
    /* A caller outside every object (JIT code) resolves as the main program:
     * the loader does that itself. */
    if (!file || !fdg_active() || fdg_cfg.dlopen == FDG_DLOPEN_OFF || !fdg_dlcaller_faithful ||
        !cacheable_mode(mode) || fdg_shstk_active() || !fdg_dlcaller_object(caller, &caller_object))
        return pass_dlopen(saved);
    uint32_t hash = key_hash(caller, file);
    bool noload_idle = false;
    void *handle = lookup(caller, &caller_object, file, hash, mode, &noload_idle);
    if (handle || noload_idle) {
        clear_dlerror();
        if (handle) fdg_count(FDG_C_dlopen_hits, 1);
        return answer(handle, saved); /* NULL: as after a real unload, RTLD_NOLOAD finds nothing */
    }
    struct fdg_as as = {.ret_slot = ret_slot};
    if (!fdg_gadget_find(&caller_object, &as.gadget)) return pass_dlopen(saved); /* uncached */
    fdg_count(FDG_C_dlopen_misses, 1);
    int err = saved;
    unsigned long long before = 0, after = 0;
    bool counted = loader_adds(&before);
    handle = load(&as, file, mode, &err);
    if (!handle) return answer(NULL, err);
    bool cached;
    if (idle_in_cache(handle, &cached)) {
        /* The loader matched a copy that is resident only because we kept
         * it (or an object it brought) idle. For the application it is
         * gone: RTLD_NOLOAD finds nothing, and whether this caller would
         * find the file at all is for a real search to say. */
        fdg_next.dlclose(handle);
        if (mode & RTLD_NOLOAD) {
            clear_dlerror();
            return answer(NULL, saved);
        }
        drop_idle(handle);
        counted = loader_adds(&before);
        handle = load(&as, file, mode, &err);
        if (!handle) return answer(NULL, err);
        idle_in_cache(handle, &cached);
    }
    /* Not knowing whether it was already loaded, assume it was: it is then
     * closed at the last dlclose, as without the shim. */
    bool preloaded = !cached && (!counted || !loader_adds(&after) || after == before);
    if (remember(caller, &caller_object, file, hash, handle, mode, preloaded))
        fdg_next.dlclose(handle); /* the loader keeps one reference per object */
    return answer(handle, err);
}

static struct fdg_dl_ret pass_dlclose(int err)
{
    errno = err;
    return (struct fdg_dl_ret){NULL, (void *)fdg_next.dlclose};
}

/* With the lock held, at the application's last close of o: detaches it,
 * outside the lock; true if it may be kept idle. While o is busy nothing
 * hands it out (lookup, remember), so its app_refs stay 0 and no one else
 * frees it. */
static bool detach(struct object *o)
{
    o->busy = true;
    detaching++;
    pthread_mutex_unlock(&lock);
    struct fdg_dep **deps = NULL;
    unsigned ndeps = 0;
    bool ok = fdg_detach(map_of(o->handle),
                         atomic_load_explicit(&permanent_objects, memory_order_relaxed),
                         held_by_app, &deps, &ndeps);
    bool ids = ok && deps_ids(deps, ndeps);
    pthread_mutex_lock(&lock);
    o->busy = false;
    if (--detaching == 0) pthread_cond_broadcast(&detach_done);
    /* Copied even if a dependency's file is gone: the pages are private now,
     * and the object closes for real below. */
    o->detached = ok;
    o->deps = deps;
    o->ndeps = ndeps;
    return ids;
}

struct fdg_dl_ret fdg_dlclose_enter(void *handle)
{
    int saved = errno;
    if (!fdg_active() || fdg_cfg.dlopen == FDG_DLOPEN_OFF) return pass_dlclose(saved);
    struct object *gone = NULL;
    pthread_mutex_lock(&lock);
    struct object *o = find_object(handle);
    if (!o) {
        pthread_mutex_unlock(&lock);
        return pass_dlclose(saved); /* not ours: the loader answers */
    }
    /* !app_refs: one close too many of an idle object; forwarding it would
     * drop the reference the cache lives on (and leave a dangling handle). */
    if (o->app_refs && --o->app_refs == 0) {
        /* Kept idle only if that changes something and nothing else: an
         * RTLD_GLOBAL object would stay in the global scope, a NODELETE or
         * preloaded one stays resident anyway; and only once no page of it
         * depends on its file any more. */
        bool keep = fdg_cfg.dlopen == FDG_DLOPEN_KEEP && fdg_cfg.dlopen_keep && !o->global &&
                    !o->nodelete && !o->preloaded;
        if (keep && !o->detached) keep = detach(o);
        if (!keep) {
            /* The application's last close is the loader's, made by the
             * stub as the application's own call. */
            forget_object(o);
            pthread_mutex_unlock(&lock);
            fdg_count(FDG_C_dlopen_unloads, 1);
            free_object(o);
            return pass_dlclose(saved);
        }
        lru_push(o);
        if (idle_count > fdg_cfg.dlopen_keep) {
            gone = lru_tail;
            forget_object(gone);
            fdg_count(FDG_C_dlopen_evictions, 1);
        }
    }
    pthread_mutex_unlock(&lock);
    if (gone) unload(gone);
    clear_dlerror();
    return answer(NULL, saved);
}
