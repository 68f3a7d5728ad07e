/* The fork rule: what a process does with registrations a child inherited.
 *
 * A fork child shares its parent's epoll instances, and a registration is
 * keyed by (description, number): when the parent closes its number, the
 * registration lives on as long as the child holds the description. For the
 * child it is not stale at all (its number still names the file); for the
 * parent it is. Who is right depends on who waits on the instance:
 *   - a pre-fork worker waits on the instance it inherited, and the parent
 *     (a master that only set it up) closes its copy of the listener: a DEL
 *     would take the listener away from the worker;
 *   - a server that forks a helper (redis's background save) keeps waiting
 *     on its instance, and the helper never does: after the server closes a
 *     client the helper still holds, only a DEL stops stale events.
 * So a registration in an instance that existed when this process forked
 * (`forked`) is deleted on close only if this process has waited on the
 * instance itself (`waited`: it is this process's event loop) and no other
 * live process that inherited the instance has used it (waited on it, or
 * added or modified registrations in it). Children announce their use in a
 * MAP_SHARED mapping, created at the first registration (never at load)
 * and so shared by every process forked after it; the entry names the
 * instance by a serial (indices are reused) and holds the user's pid and
 * epoll fd number, which kcmp(KCMP_FILE) checks against ours: alive, and
 * still holding this very instance. A child never deletes its parent's
 * registrations (the epoch in each word, epoll_table.c).
 *
 * Not deleting is what the program would see without the shim; the cases
 * where no answer is right for both (both processes wait on the instance)
 * are left as the kernel has them. */
#include "fdguard.h"

#include <errno.h>
#include <signal.h>
#include <sys/mman.h>

#define BIT(i) (UINT64_C(1) << (i))
/* waitwatch: not initialised yet (the first call binds the next symbols). */
#define WATCH_INIT (UINT64_C(1) << 63)

_Atomic uint64_t fdg_ept_waitwatch = WATCH_INIT;
_Atomic uint64_t fdg_ept_inherited;

static _Atomic uint32_t serial[FDG_EPT_INSTANCES]; /* 0: no registration yet */
static _Atomic uint64_t forked;    /* this process forked while the instance existed */
static _Atomic uint64_t waited;    /* this process waited on it (since its first ADD) */
static _Atomic uint64_t announced; /* this process announced its use in the page */

/* ---- the users page -------------------------------------------------------- */

/* An entry: serial (24 bits) | fd (18 bits) | pid (22 bits, pid_max's limit).
 * Serials wrap; kcmp makes a reused one harmless (the process would have to
 * hold the very instance). An fd above 18 bits is stored as FD_SAME: the
 * user's number is taken to be ours (it inherited it). */
#define PID_BITS 22
#define FD_BITS 18
#define SERIAL_BITS 24
#define FD_SAME ((1u << FD_BITS) - 1)
#define SERIAL_MASK ((1u << SERIAL_BITS) - 1)
/* The mapping must exist before the fork that shares it, so it cannot grow
 * later: its size is reserved at once (MAP_NORESERVE), and its pages are
 * touched (allocated) only up to the high-water mark of entries handed out.
 * A full mapping cannot be made room in by forgetting: an announcement that
 * found none is recorded nowhere, and its process may wait on the instance
 * for ever. So the capacity is that of any realistic set of live users, and
 * beyond it the instances concerned (by serial, modulo 64) are taken to be
 * in use for good, as without the shim. */
#define MAP_BYTES (1u << 20)
#define SLOTS ((MAP_BYTES - 24) / 8)

struct users {
    _Atomic uint32_t next_serial;
    _Atomic uint32_t used; /* entries in use: lets the common case skip the scan */
    _Atomic uint32_t high; /* entries [0, high) were handed out: scans stop there */
    uint32_t reserved;
    _Atomic uint64_t overflow; /* bit s % 64: an announcement for serial s found no room */
    _Atomic uint64_t entry[];
};
_Static_assert(sizeof(struct users) == 24, "the header");

static struct users *_Atomic users;

static uint64_t entry_of(uint32_t s, int fd, pid_t pid)
{
    uint64_t f = fd >= 0 && (unsigned)fd < FD_SAME ? (unsigned)fd : FD_SAME;
    return (uint64_t)s << (FD_BITS + PID_BITS) | f << PID_BITS |
           ((uint64_t)pid & ((1u << PID_BITS) - 1));
}

static uint32_t entry_serial(uint64_t e)
{
    return (uint32_t)(e >> (FD_BITS + PID_BITS));
}

static int entry_fd(uint64_t e)
{
    return (int)((e >> PID_BITS) & FD_SAME);
}

static pid_t entry_pid(uint64_t e)
{
    return (pid_t)(e & ((1u << PID_BITS) - 1));
}

static struct users *users_page(void)
{
    struct users *u = atomic_load(&users);
    if (u) return u;
    int saved = errno; /* on a registration's path, which keeps errno */
    void *mem = mmap(NULL, MAP_BYTES, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem != MAP_FAILED && !atomic_compare_exchange_strong(&users, &u, mem)) {
        munmap(mem, MAP_BYTES);
        mem = u;
    }
    errno = saved;
    return mem == MAP_FAILED ? NULL : mem;
}

static bool alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno == EPERM;
}

/* Entries handed out so far: [0, high_of(u)). */
static unsigned high_of(struct users *u)
{
    unsigned h = atomic_load(&u->high);
    return h < SLOTS ? h : SLOTS;
}

static void release(struct users *u, unsigned i, uint64_t e)
{
    if (atomic_compare_exchange_strong(&u->entry[i], &e, 0)) atomic_fetch_sub(&u->used, 1);
}

/* No free entry: those of processes that are gone make room. */
static void sweep(struct users *u)
{
    for (unsigned i = 0, n = high_of(u); i < n; i++) {
        uint64_t e = atomic_load(&u->entry[i]);
        if (e && !alive(entry_pid(e))) release(u, i, e);
    }
}

static void announce(unsigned idx, int epfd)
{
    struct users *u = atomic_load(&users);
    uint32_t s = atomic_load(&serial[idx]);
    if (!u || !s) return;
    uint64_t e = entry_of(s, epfd, atomic_load(&fdg_self_pid));
    atomic_fetch_add(&u->used, 1);
    for (int pass = 0; pass < 2; pass++) {
        for (unsigned i = 0, n = high_of(u); i < n; i++) {
            uint64_t none = 0;
            if (atomic_load_explicit(&u->entry[i], memory_order_relaxed) == 0 &&
                atomic_compare_exchange_strong(&u->entry[i], &none, e))
                return;
        }
        if (pass == 0) sweep(u);
    }
    /* Every entry handed out is a live one: the next. A scan that sees the
     * new mark first may take it; then the one after. */
    unsigned h = atomic_load(&u->high);
    while (h < SLOTS) {
        if (!atomic_compare_exchange_weak(&u->high, &h, h + 1)) continue;
        uint64_t none = 0;
        if (atomic_compare_exchange_strong(&u->entry[h], &none, e)) return;
        h = atomic_load(&u->high);
    }
    atomic_fetch_sub(&u->used, 1);
    atomic_fetch_or(&u->overflow, UINT64_C(1) << (s % 64));
}

static void retract(uint32_t s)
{
    struct users *u = atomic_load(&users);
    pid_t self = atomic_load(&fdg_self_pid);
    for (unsigned i = 0, n = u ? high_of(u) : 0; i < n; i++) {
        uint64_t e = atomic_load(&u->entry[i]);
        if (e && entry_serial(e) == s && entry_pid(e) == self) release(u, i, e);
    }
}

/* Does another live process that inherited instance idx (ours at epfd) use
 * it? Entries of processes that are gone, or that no longer hold the
 * instance (closed it, exec'd), are removed on the way. */
static bool used_elsewhere(unsigned idx, int epfd)
{
    struct users *u = atomic_load(&users);
    uint32_t s = atomic_load(&serial[idx]);
    if (!u || !s) return false;
    if (atomic_load(&u->overflow) & (UINT64_C(1) << (s % 64))) return true;
    if (!atomic_load(&u->used)) return false;
    pid_t self = atomic_load(&fdg_self_pid);
    bool used = false;
    for (unsigned i = 0, n = high_of(u); i < n && !used; i++) {
        uint64_t e = atomic_load(&u->entry[i]);
        if (!e || entry_serial(e) != s || entry_pid(e) == self) continue;
        int theirs = entry_fd(e) == (int)FD_SAME ? epfd : entry_fd(e);
        int same = fdg_kcmp_file(entry_pid(e), epfd, theirs);
        if (same == 1) {
            used = true;
        } else if (same == 0 || same == -ESRCH || same == -EBADF) {
            release(u, i, e);
        } else { /* no kcmp here: a live process is all we can know */
            int saved = errno;
            used = alive(entry_pid(e));
            errno = saved;
            if (!used) release(u, i, e);
        }
    }
    return used;
}

/* ---- per-instance state ---------------------------------------------------- */

static void reset(unsigned idx)
{
    uint64_t bit = BIT(idx);
    atomic_store(&serial[idx], 0);
    atomic_fetch_and(&forked, ~bit);
    atomic_fetch_and(&waited, ~bit);
    atomic_fetch_and(&announced, ~bit);
    atomic_fetch_and(&fdg_ept_inherited, ~bit);
    atomic_fetch_and(&fdg_ept_waitwatch, ~bit);
}

void fdg_epf_instance_new(unsigned idx)
{
    reset(idx);
}

void fdg_epf_instance_gone(unsigned idx)
{
    /* A child that closes the instance it inherited no longer uses it. */
    if (atomic_load(&announced) & BIT(idx)) retract(atomic_load(&serial[idx]));
    reset(idx);
}

void fdg_epf_registered(unsigned idx)
{
    uint64_t bit = BIT(idx);
    if (!atomic_load_explicit(&serial[idx], memory_order_relaxed)) {
        struct users *u = users_page();
        uint32_t s = 0, none = 0;
        while (u && !s)
            s = (atomic_fetch_add(&u->next_serial, 1) + 1) & SERIAL_MASK;
        if (s) atomic_compare_exchange_strong(&serial[idx], &none, s);
    }
    /* The next wait on it tells whether this process is its event loop. */
    if (!(atomic_load_explicit(&waited, memory_order_relaxed) & bit) &&
        !(atomic_load_explicit(&fdg_ept_waitwatch, memory_order_relaxed) & bit))
        atomic_fetch_or(&fdg_ept_waitwatch, bit);
}

bool fdg_epf_keep(unsigned idx, int epfd)
{
    uint64_t bit = BIT(idx);
    if (!(atomic_load(&forked) & bit)) return false;
    /* Not this process's event loop: whoever inherited it may be waiting. */
    if (!(atomic_load(&waited) & bit)) return true;
    return used_elsewhere(idx, epfd);
}

void fdg_epf_before_fork(uint64_t live)
{
    atomic_fetch_or(&forked, live);
}

void fdg_epf_after_fork(uint64_t live)
{
    uint64_t inherited = 0;
    for (unsigned i = 0; i < FDG_EPT_INSTANCES; i++)
        if ((live & BIT(i)) && atomic_load(&serial[i])) inherited |= BIT(i);
    atomic_store(&forked, 0);
    atomic_store(&waited, 0);
    atomic_store(&announced, 0);
    atomic_store(&fdg_ept_inherited,
                 inherited | (atomic_load(&fdg_ept_inherited) & FDG_EPT_MODWATCH_EXCL));
    atomic_store(&fdg_ept_waitwatch, inherited);
}

/* ---- uses ------------------------------------------------------------------ */

/* This process waits on (waiting) or changes (not waiting) instance idx. */
static void used(unsigned idx, int epfd, bool waiting)
{
    uint64_t bit = BIT(idx);
    if (!fdg_table_owner()) return; /* a vfork child: write nothing */
    if (waiting) {
        atomic_fetch_or(&waited, bit);
        atomic_fetch_and(&fdg_ept_waitwatch, ~bit);
    }
    if (atomic_fetch_and(&fdg_ept_inherited, ~bit) & bit) {
        announce(idx, epfd);
        atomic_fetch_or(&announced, bit);
    }
}

/* The instance index behind epfd, or -1. */
static int index_of(int epfd)
{
    uint64_t w = epfd >= 0 ? fdg_ept_word((unsigned)epfd) : 0;
    if (!(w & FDG_EPT_IS_INSTANCE)) return -1;
    unsigned idx = (unsigned)((w & FDG_EPT_INDEX_MASK) >> FDG_EPT_INDEX_SHIFT);
    return idx < FDG_EPT_INSTANCES ? (int)idx : -1;
}

void fdg_ept_waiting(int epfd)
{
    uint64_t watch = atomic_load_explicit(&fdg_ept_waitwatch, memory_order_relaxed);
    if (FDG_UNLIKELY(watch & WATCH_INIT)) {
        int saved = errno;
        bool on = fdg_active();
        if (atomic_load(&fdg_state) == FDG_READY) atomic_fetch_and(&fdg_ept_waitwatch, ~WATCH_INIT);
        watch = on ? atomic_load(&fdg_ept_waitwatch) : 0;
        errno = saved;
    }
    if (!watch) return; /* FDGUARD=off, or nothing to note: the table is not read */
    int idx = index_of(epfd);
    if (FDG_LIKELY(idx < 0 || !(watch & BIT(idx)))) return;
    int saved = errno;
    used((unsigned)idx, epfd, true);
    errno = saved;
}

void fdg_ept_using(int epfd)
{
    int saved = errno;
    int idx = index_of(epfd);
    if (idx >= 0 && (atomic_load(&fdg_ept_inherited) & BIT(idx))) used((unsigned)idx, epfd, false);
    errno = saved;
}
