/* Detaching an idle object from its file.
 *
 * The loader maps an object MAP_PRIVATE from its file. When the file is
 * rewritten in place (`cp new.so plugin.so` truncates and writes the same
 * inode), pages nobody wrote show the new bytes; and truncation discards
 * even the pages the process did write (the kernel's truncate_pagecache
 * unmaps private copies too, "even_cows"), so the relocated GOT and the
 * data come back as the new file's raw bytes. Without the shim the
 * application's last dlclose had unmapped the object, so that was safe; an
 * object the keep cache holds idle would later run its destructors (at its
 * unload, or in _dl_fini at exit) from the new file's bytes.
 *
 * So when an object goes idle, every range still mapped from its file (and
 * from the files of the dependencies that came with it, which it keeps
 * loaded) is copied into anonymous memory with the same protection, which
 * mremap moves over the range in one step. Afterwards no write to the files
 * reaches the object; the reopen check (dlopen.c) notices the change and
 * loads the new file, and the old copy runs its destructors intact.
 *
 * A copy then a move would lose a write made in between, so this is done
 * only while nothing can run the object: the caller has marked it busy (no
 * hit hands it out, a miss that reaches it waits), the application closed
 * it, and no other object depends on it or on the dependencies that came
 * with it (checked here; held() says whether the application holds one of
 * those itself). One detach at a time (detach_lock): the walk's buffers
 * are static. The cost:
 * these pages are no longer shared with the page cache (the object's mapped
 * size in anonymous memory, once), and /proc/PID/maps no longer names the
 * file.
 *
 * Anything unexpected (no descriptor for /proc/self/maps, an mprotect that
 * policy refuses, more ranges than we hold) fails the detach, and the caller
 * then closes the object for real instead of keeping it; so does static TLS
 * held by the objects (holds_static_tls). */
#include "fdguard.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <link.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>

/* ---- the object and its dependencies ---------------------------------------- */

enum { MAX_OBJECTS = 32, MAX_NAMES = 128, MAX_RANGES = 256 };

struct span {
    uintptr_t lo, hi; /* page-aligned extent of the PT_LOAD segments */
    const char *name;
    const void *handle;
};

struct walk {
    const struct link_map *target;
    unsigned permanent, index;
    bool seen, failed;
    bool ie_code, own_tls; /* among the collected objects (holds_static_tls) */
    unsigned nobjects, nnames, nprovides;
    struct span objects[MAX_OBJECTS];
    const char *names[MAX_NAMES];          /* DT_NEEDED of the collected objects */
    const char *provides[3 * MAX_OBJECTS]; /* what the collected objects answer to */
};

static uintptr_t page_size(void)
{
    static uintptr_t size;
    if (!size) size = (uintptr_t)sysconf(_SC_PAGESIZE);
    return size;
}

static const ElfW(Dyn) * dynamic_of(const struct dl_phdr_info *info)
{
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            return (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    return NULL;
}

/* glibc rewrites d_ptr entries of a loaded object to run-time addresses,
 * except where the dynamic section is read-only (the vDSO). */
static const char *strtab_of(const struct dl_phdr_info *info, const ElfW(Dyn) * dyn)
{
    for (const ElfW(Dyn) *d = dyn; d && d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_STRTAB)
            return (const char *)(d->d_un.d_ptr < info->dlpi_addr ? info->dlpi_addr + d->d_un.d_ptr
                                                                  : d->d_un.d_ptr);
    return NULL;
}

static const char *soname_of(const ElfW(Dyn) * dyn, const char *strtab)
{
    for (const ElfW(Dyn) *d = dyn; d && strtab && d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_SONAME) return strtab + d->d_un.d_val;
    return NULL;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static bool listed(const char *const *list, unsigned n, const char *name)
{
    for (unsigned i = 0; i < n; i++)
        if (list[i] && !strcmp(list[i], name)) return true;
    return false;
}

/* Does this object answer to one of the names the collected ones need (its
 * soname, its file name: what the loader matched DT_NEEDED against)? */
static bool wanted(const struct walk *w, const struct dl_phdr_info *info, const char *soname)
{
    return (soname && listed(w->names, w->nnames, soname)) ||
           listed(w->names, w->nnames, base_name(info->dlpi_name)) ||
           listed(w->names, w->nnames, info->dlpi_name);
}

/* Linked with initial-exec TLS (DF_STATIC_TLS): the TLS its code reaches
 * that way must be in static TLS. */
static bool uses_static_tls(const ElfW(Dyn) * dyn)
{
    for (const ElfW(Dyn) *d = dyn; d && d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_FLAGS) return (d->d_un.d_val & DF_STATIC_TLS) != 0;
    return false;
}

/* A block of static TLS among the objects, which glibc gives back at their
 * real dlclose (when it is the last block allocated): kept idle, they would
 * keep it, and a later load that needs static TLS could fail where without
 * the shim it succeeds. Only an object with TLS of its own (PT_TLS) has a
 * block, and it is in static TLS if initial-exec code reaches it: its own,
 * or a dependency's that came with it (glibc then moves the dependency's
 * block into static TLS). Initial-exec code alone holds nothing: libm's
 * reaches libc's errno, static from the start. */
static bool holds_static_tls(const struct walk *w)
{
    return w->ie_code && w->own_tls;
}

static bool note_names(const char **list, unsigned *n, const char *soname, const char *name)
{
    if (*n + 3 > 3 * MAX_OBJECTS) return false;
    list[(*n)++] = soname;
    list[(*n)++] = base_name(name);
    list[(*n)++] = name;
    return true;
}

/* The loader appends an object and then the dependencies it brings, so
 * those are the objects after it in the list that its DT_NEEDED (and theirs)
 * name. Anything else after it was loaded later, and must not need any of
 * them. (The names collected stay valid: the object holds what it needs.) */
static int collect(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct walk *w = arg;
    const ElfW(Dyn) *dyn = dynamic_of(info);
    const char *strtab = strtab_of(info, dyn);
    const char *soname = soname_of(dyn, strtab);
    if (!w->seen) {
        if (!dyn || dyn != w->target->l_ld) return 0;
        w->seen = true;
    } else if (!wanted(w, info, soname)) {
        for (const ElfW(Dyn) *d = dyn; d && strtab && d->d_tag != DT_NULL; d++)
            if (d->d_tag == DT_NEEDED &&
                listed(w->provides, w->nprovides, strtab + d->d_un.d_val)) {
                w->failed = true; /* shared with an object loaded later */
                return 1;
            }
        return 0;
    }
    if (w->nobjects == MAX_OBJECTS) {
        w->failed = true;
        return 1;
    }
    w->ie_code |= uses_static_tls(dyn);
    w->own_tls |= info->dlpi_tls_modid != 0;
    struct span *s = &w->objects[w->nobjects++];
    s->lo = UINTPTR_MAX;
    s->hi = 0;
    s->name = info->dlpi_name;
    struct dl_find_object found;
    s->handle =
        fdg_next.dl_find_object && fdg_next.dl_find_object((void *)info->dlpi_phdr, &found) == 0
            ? found.dlfo_link_map
            : NULL;
    if (!note_names(w->provides, &w->nprovides, soname, info->dlpi_name)) {
        w->failed = true;
        return 1;
    }
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        uintptr_t lo = (info->dlpi_addr + ph->p_vaddr) & ~(page_size() - 1);
        uintptr_t hi =
            (info->dlpi_addr + ph->p_vaddr + ph->p_memsz + page_size() - 1) & ~(page_size() - 1);
        if (lo < s->lo) s->lo = lo;
        if (hi > s->hi) s->hi = hi;
    }
    for (const ElfW(Dyn) *d = dyn; d && strtab && d->d_tag != DT_NULL; d++) {
        if (d->d_tag != DT_NEEDED) continue;
        if (w->nnames == MAX_NAMES) {
            w->failed = true;
            return 1;
        }
        w->names[w->nnames++] = strtab + d->d_un.d_val;
    }
    return 0;
}

/* A second walk: a dependency before the object must be a permanent one.
 * An object loaded since could be held by nothing but this one once it is
 * idle, and would then be gone without the shim (and is not detached).
 * Compared here, under the loader's lock: such an object may be unloaded
 * as soon as the walk ends. */
static int check_earlier(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct walk *w = arg;
    const ElfW(Dyn) *dyn = dynamic_of(info);
    if (dyn && dyn == w->target->l_ld) return 1;
    if (w->index++ < w->permanent) return 0;
    if (wanted(w, info, soname_of(dyn, strtab_of(info, dyn)))) {
        w->failed = true;
        return 1;
    }
    return 0;
}

/* ---- /proc/self/maps ---------------------------------------------------------- */

struct range {
    uintptr_t lo, hi;
    int prot;
};

static bool hex(const char **p, uintptr_t *out)
{
    uintptr_t v = 0;
    const char *s = *p;
    for (; (*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'); s++)
        v = v * 16 + (uintptr_t)(*s <= '9' ? *s - '0' : *s - 'a' + 10);
    if (s == *p) return false;
    *p = s;
    *out = v;
    return true;
}

/* One maps line: "lo-hi perms offset dev inode path". File-backed private
 * mappings inside one of the objects become ranges. */
static bool line(const char *l, const struct walk *w, struct range *out, unsigned *n)
{
    uintptr_t lo, hi, skip, inode;
    const char *p = l;
    if (!hex(&p, &lo) || *p++ != '-' || !hex(&p, &hi) || *p++ != ' ') return false;
    char perms[4];
    memcpy(perms, p, 4);
    p += 5;
    if (!hex(&p, &skip) || *p++ != ' ') return false;                    /* offset */
    if (!hex(&p, &skip) || *p++ != ':' || !hex(&p, &skip)) return false; /* dev */
    while (*p == ' ')
        p++;
    if (!hex(&p, &inode)) return false; /* decimal, but 0 reads as 0 */
    if (inode == 0) return true;        /* anonymous already: bss */
    bool inside = false;
    for (unsigned i = 0; i < w->nobjects && !inside; i++)
        inside = lo >= w->objects[i].lo && hi <= w->objects[i].hi;
    if (!inside) return true;
    if (perms[3] != 'p') return false; /* a shared mapping of an object? */
    if (perms[0] != 'r') return true;  /* PROT_NONE: the gaps between segments */
    if (*n == MAX_RANGES) return false;
    out[(*n)++] = (struct range){
        lo, hi, PROT_READ | (perms[1] == 'w' ? PROT_WRITE : 0) | (perms[2] == 'x' ? PROT_EXEC : 0)};
    return true;
}

/* Collected first, acted on after: the file changes as mappings change. */
static bool read_maps(const struct walk *w, struct range *out, unsigned *n)
{
    uint64_t lend;
    bool lent = fdg_spare_lend_for_load(&lend);
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0;
    char buf[4096];
    size_t have = 0;
    while (ok) {
        ssize_t got = read(fd, buf + have, sizeof buf - 1 - have);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            ok = got == 0 && have == 0;
            break;
        }
        have += (size_t)got;
        buf[have] = '\0';
        char *start = buf, *nl;
        while ((nl = strchr(start, '\n'))) {
            *nl = '\0';
            if (!line(start, w, out, n)) ok = false;
            start = nl + 1;
        }
        have = (size_t)(buf + have - start);
        memmove(buf, start, have);
        if (have == sizeof buf - 1) ok = false; /* a line longer than the buffer */
    }
    if (fd >= 0) fdg_raw_close(fd);
    if (lent) fdg_spare_return(lend);
    return ok;
}

/* ---- making pages private ----------------------------------------------------- */

/* A policy that refuses executable anonymous memory (SELinux's execmem,
 * PaX MPROTECT) refuses it every time, and may audit each refusal: once
 * seen, nothing is detached again in this process (its objects are closed
 * at the last dlclose, as in cache mode). */
static _Atomic bool exec_refused;

static bool copy_over(const struct range *r)
{
    size_t len = r->hi - r->lo;
    void *copy = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED) return false;
    /* Not memcpy: a page of a file truncated meanwhile fails (EFAULT)
     * instead of raising SIGBUS in the host. */
    int got = fdg_read_self((const void *)r->lo, copy, len);
    if (got < 0) memcpy(copy, (void *)r->lo, len); /* seccomp forbids it: the bare copy */
    bool ok = got != 0;
    if (ok && mprotect(copy, len, r->prot) != 0) {
        if ((r->prot & PROT_EXEC) && (errno == EACCES || errno == EPERM))
            atomic_store_explicit(&exec_refused, true, memory_order_relaxed);
        ok = false;
    }
    if (!ok || mremap(copy, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)r->lo) == MAP_FAILED) {
        munmap(copy, len);
        return false;
    }
    return true;
}

void fdg_free_deps(struct fdg_dep **deps, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        free(deps[i]);
    free(deps);
}

static pthread_mutex_t detach_lock = PTHREAD_MUTEX_INITIALIZER;

static bool detach_locked(struct link_map *map, unsigned permanent,
                          bool (*held)(const void *handle), struct fdg_dep ***deps_out,
                          unsigned *ndeps_out)
{
    static struct walk w; /* large: one detach at a time */
    static struct range ranges[MAX_RANGES];
    *deps_out = NULL;
    *ndeps_out = 0;
    if (!fdg_loader_walk_begin()) return false;
    memset(&w, 0, sizeof w);
    w.target = map;
    w.permanent = permanent;
    dl_iterate_phdr(collect, &w);
    if (holds_static_tls(&w)) w.failed = true;
    if (w.seen && !w.failed) dl_iterate_phdr(check_earlier, &w);
    /* What was collected stays valid: the idle object holds its
     * dependencies. */
    fdg_loader_walk_end();
    unsigned n = 0;
    bool ok = w.seen && !w.failed;
    for (unsigned i = 1; ok && i < w.nobjects; i++)
        ok = w.objects[i].handle && !held(w.objects[i].handle);
    ok = ok && read_maps(&w, ranges, &n);
    struct fdg_dep **deps = NULL;
    if (ok && w.nobjects > 1 && !(deps = calloc(w.nobjects - 1, sizeof *deps))) ok = false;
    for (unsigned i = 1; ok && i < w.nobjects; i++) {
        size_t len = strlen(w.objects[i].name);
        if (!(deps[i - 1] = malloc(sizeof **deps + len + 1))) {
            ok = false;
            break;
        }
        memcpy(deps[i - 1]->path, w.objects[i].name, len + 1);
        deps[i - 1]->handle = w.objects[i].handle;
    }
    /* Executable ranges first: a policy that refuses them fails the detach
     * before any other range was replaced. */
    for (int exec = 1; exec >= 0; exec--)
        for (unsigned i = 0; ok && i < n; i++)
            if (((ranges[i].prot & PROT_EXEC) != 0) == exec) ok = copy_over(&ranges[i]);
    if (!ok && deps) fdg_free_deps(deps, w.nobjects - 1);
    if (ok) {
        *deps_out = deps;
        *ndeps_out = w.nobjects - 1;
    }
    return ok;
}

bool fdg_detach(struct link_map *map, unsigned permanent, bool (*held)(const void *handle),
                struct fdg_dep ***deps_out, unsigned *ndeps_out)
{
    if (atomic_load_explicit(&exec_refused, memory_order_relaxed)) return false;
    int saved = errno;
    pthread_mutex_lock(&detach_lock);
    bool ok = detach_locked(map, permanent, held, deps_out, ndeps_out);
    pthread_mutex_unlock(&detach_lock);
    errno = saved;
    return ok;
}
