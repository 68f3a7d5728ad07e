/* The epoll registration table: for each fd, the epoll instances in which
 * this process registered it (see the word layout in fdguard.h).
 *
 * epoll registers the open file description but names it by fd number; once
 * the description has another reference (dup, fork, SCM_RIGHTS), close(fd)
 * leaves the registration alive and it can no longer be deleted by number.
 * So before a registered number goes away we delete it ourselves, unless the
 * fork rule (epoll_fork.c) says another process relies on it.
 *
 * Everything here is lock-free: close runs in signal handlers and between
 * fork and exec. Memory is mmap'd chunk by chunk on registration, never on
 * the close path, and is inherited copy-on-write by fork children, which
 * tell their parent's records apart by epoch. A vfork child shares this
 * memory with its parent and must write nothing, nor may a thread that
 * closes in a private copy of the descriptor table: every writer checks
 * fdg_table_owner() first. */
#include "fdguard.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

_Atomic uint64_t fdg_ept_flat[FDG_EPT_FLAT];
_Atomic(_Atomic uint64_t *) fdg_ept_dir[FDG_EPT_DIR];
_Atomic uint64_t fdg_epoch;
_Atomic unsigned fdg_ept_end;
static _Atomic int instance_fd[FDG_EPT_INSTANCES] = {[0 ... FDG_EPT_INSTANCES - 1] = -1};
static _Atomic bool untracked_reported;

#define FLAT_CHUNKS (FDG_EPT_FLAT / FDG_EPT_CHUNK)

static uint64_t epoch_bits(void)
{
    return (atomic_load_explicit(&fdg_epoch, memory_order_relaxed) << FDG_EPT_EPOCH_SHIFT) &
           FDG_EPT_EPOCH_MASK;
}

static bool current_epoch(uint64_t word)
{
    return (word & FDG_EPT_EPOCH_MASK) == epoch_bits();
}

/* The words of numbers [c * CHUNK, (c + 1) * CHUNK), or NULL. */
static _Atomic uint64_t *chunk_at(unsigned c)
{
    if (c < FLAT_CHUNKS) return &fdg_ept_flat[c * FDG_EPT_CHUNK];
    return atomic_load_explicit(&fdg_ept_dir[c], memory_order_acquire);
}

uint64_t fdg_ept_word_far(unsigned fd)
{
    if (fd >= FDG_EPT_DIR * FDG_EPT_CHUNK) return 0;
    _Atomic uint64_t *chunk = chunk_at(fd >> FDG_EPT_CHUNK_BITS);
    return chunk ? atomic_load_explicit(&chunk[fd & (FDG_EPT_CHUNK - 1)], memory_order_relaxed) : 0;
}

void fdg_ept_extend(unsigned fd)
{
    unsigned end = atomic_load(&fdg_ept_end);
    while (end < fd + 1 && !atomic_compare_exchange_weak(&fdg_ept_end, &end, fd + 1))
        ;
}

_Atomic uint64_t *fdg_ept_slot_far(unsigned fd, bool create)
{
    if (fd >= FDG_EPT_DIR * FDG_EPT_CHUNK) return NULL;
    unsigned c = fd >> FDG_EPT_CHUNK_BITS;
    _Atomic uint64_t *chunk = chunk_at(c);
    if (!chunk && create) {
        int saved = errno;
        void *mem = mmap(NULL, FDG_EPT_CHUNK * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem != MAP_FAILED) {
            _Atomic uint64_t *none = NULL;
            if (atomic_compare_exchange_strong(&fdg_ept_dir[c], &none, mem)) {
                chunk = mem;
            } else {
                munmap(mem, FDG_EPT_CHUNK * sizeof(uint64_t));
                chunk = none;
            }
        }
        errno = saved;
    }
    if (!chunk) return NULL;
    if (create) fdg_ept_extend(fd);
    return &chunk[fd & (FDG_EPT_CHUNK - 1)];
}

/* Calls fn(fd, slot, word) for every nonzero word of [lo, hi]. */
static void walk(unsigned lo, unsigned hi,
                 bool (*fn)(unsigned, _Atomic uint64_t *, uint64_t, void *), void *arg)
{
    unsigned end = atomic_load(&fdg_ept_end);
    if (end == 0 || lo >= end) return;
    if (hi >= end) hi = end - 1;
    for (unsigned c = lo >> FDG_EPT_CHUNK_BITS; c <= hi >> FDG_EPT_CHUNK_BITS; c++) {
        _Atomic uint64_t *chunk = chunk_at(c);
        if (!chunk) continue;
        unsigned first = c == lo >> FDG_EPT_CHUNK_BITS ? lo & (FDG_EPT_CHUNK - 1) : 0;
        unsigned last =
            c == hi >> FDG_EPT_CHUNK_BITS ? hi & (FDG_EPT_CHUNK - 1) : FDG_EPT_CHUNK - 1;
        for (unsigned i = first; i <= last; i++) {
            uint64_t w = atomic_load_explicit(&chunk[i], memory_order_relaxed);
            if (w && !fn((c << FDG_EPT_CHUNK_BITS) | i, &chunk[i], w, arg)) return;
        }
    }
}

static void epoll_del(int epfd, int fd)
{
    int saved = errno;
    /* Raw: neither our wrapper nor a cancellation point. */
    if (syscall(SYS_epoll_ctl, epfd, EPOLL_CTL_DEL, fd, NULL) == 0)
        fdg_count(FDG_C_epoll_auto_del, 1);
    errno = saved;
}

/* Clears `bits` in fd's word; returns the word as it was. */
static uint64_t clear_bits(_Atomic uint64_t *s, uint64_t bits)
{
    return atomic_fetch_and_explicit(s, ~bits, memory_order_relaxed);
}

/* A word left with nothing but its epoch: zero, so that the number is
 * untracked again (the close fast path looks for any bit). */
static void tidy(_Atomic uint64_t *s)
{
    uint64_t w = atomic_load_explicit(s, memory_order_relaxed);
    if (w && !(w & ~FDG_EPT_EPOCH_MASK)) atomic_compare_exchange_strong(s, &w, 0);
}

/* Instance idx is no longer named by any number we know of. */
static void instance_gone(unsigned idx)
{
    fdg_epf_instance_gone(idx);
    atomic_store(&instance_fd[idx], -1);
}

/* Forgets every current-epoch registration in instance idx (its epoll fd is
 * being closed: the kernel drops them with it). No syscalls. */
static bool drop_one(unsigned fd, _Atomic uint64_t *s, uint64_t w, void *arg)
{
    uint64_t bit = *(uint64_t *)arg;
    (void)fd;
    if ((w & bit) && current_epoch(w)) {
        w = clear_bits(s, bit);
        if ((w & FDG_EPT_MASK) == bit) clear_bits(s, FDG_EPT_EXCLUSIVE);
        tidy(s);
        fdg_count(FDG_C_epoll_dropped, 1);
    }
    return true;
}

static void drop_instance(unsigned idx)
{
    uint64_t bit = UINT64_C(1) << idx;
    walk(0, ~0U, drop_one, &bit);
    instance_gone(idx);
}

/* Another number naming instance idx (a dup of its epoll fd), or -1. */
struct alias {
    uint64_t want;
    int found;
};

static bool alias_one(unsigned fd, _Atomic uint64_t *s, uint64_t w, void *arg)
{
    struct alias *a = arg;
    (void)s;
    if ((w & (FDG_EPT_IS_INSTANCE | FDG_EPT_INDEX_MASK)) != a->want) return true;
    a->found = (int)fd;
    return false;
}

static int find_alias(unsigned idx)
{
    struct alias a = {FDG_EPT_IS_INSTANCE | ((uint64_t)idx << FDG_EPT_INDEX_SHIFT), -1};
    walk(0, ~0U, alias_one, &a);
    return a.found;
}

/* Number fd, whose word was `word`, no longer names its instance. */
static void instance_number_gone(uint64_t word, unsigned fd)
{
    unsigned idx = (unsigned)((word & FDG_EPT_INDEX_MASK) >> FDG_EPT_INDEX_SHIFT);
    if (idx >= FDG_EPT_INSTANCES || atomic_load(&instance_fd[idx]) != (int)fd) return;
    /* The instance lives on while another number names it. */
    int other = find_alias(idx);
    if (other >= 0)
        atomic_store(&instance_fd[idx], other);
    else
        drop_instance(idx);
}

/* The caller knows it is the owner process. */
static void closing_owned(unsigned fd, _Atomic uint64_t *s, uint64_t word)
{
    if (word & FDG_EPT_OWNED) fdg_owned_number_lost((int)fd);
    if (word & (FDG_EPT_MASK | FDG_EPT_EXCLUSIVE | FDG_EPT_SOLE | FDG_EPT_OWNED)) {
        word = clear_bits(s, FDG_EPT_MASK | FDG_EPT_EXCLUSIVE | FDG_EPT_SOLE | FDG_EPT_OWNED);
        uint64_t mask = word & FDG_EPT_MASK;
        /* With FDGUARD_EPOLL=off the only records are those that keep MOD
         * working on exclusive registrations: forget them, delete nothing.
         * A sole description's registrations go with its last reference,
         * which this close drops: the kernel removes them from every
         * instance, a child's too (no child holds the description). */
        bool del = current_epoch(word) && fdg_cfg.epoll && !(word & FDG_EPT_SOLE);
        for (unsigned i = 0; mask; i++, mask >>= 1) {
            int epfd = (mask & 1) ? atomic_load(&instance_fd[i]) : -1;
            if (epfd < 0) continue;
            if (del && !fdg_epf_keep(i, epfd))
                epoll_del(epfd, (int)fd);
            else /* a parent's (in a fork child), the kernel's, or left to those that inherited it
                  */
                fdg_count(FDG_C_epoll_dropped, 1);
        }
    }
    if (word & FDG_EPT_IS_INSTANCE) {
        clear_bits(s, FDG_EPT_IS_INSTANCE | FDG_EPT_INDEX_MASK);
        instance_number_gone(word, fd);
    }
    tidy(s);
}

void fdg_fd_closing_tracked(unsigned fd, uint64_t word)
{
    if (!fdg_table_owner()) return;
    _Atomic uint64_t *s = fdg_ept_slot(fd, false);
    if (s) closing_owned(fd, s, word);
}

static bool closing_one(unsigned fd, _Atomic uint64_t *s, uint64_t w, void *arg)
{
    int *owner = arg; /* unknown until a tracked number is found */
    if (*owner < 0) *owner = fdg_table_owner();
    if (!*owner) return false;
    closing_owned(fd, s, w);
    return true;
}

void fdg_ept_closing_range(unsigned lo, unsigned hi)
{
    int owner = -1;
    walk(lo, hi, closing_one, &owner);
}

bool fdg_ept_mark_owned(int fd)
{
    _Atomic uint64_t *s = fd >= 0 ? fdg_ept_slot((unsigned)fd, true) : NULL;
    if (!s) return false;
    atomic_fetch_or(s, FDG_EPT_OWNED);
    return true;
}

void fdg_ept_unmark_owned(int fd)
{
    _Atomic uint64_t *s = fd >= 0 ? fdg_ept_slot((unsigned)fd, false) : NULL;
    if (!s) return;
    clear_bits(s, FDG_EPT_OWNED);
    tidy(s);
}

static bool unsole_one(unsigned fd, _Atomic uint64_t *s, uint64_t w, void *arg)
{
    (void)fd, (void)arg;
    if (w & FDG_EPT_SOLE) {
        clear_bits(s, FDG_EPT_SOLE);
        tidy(s);
    }
    return true;
}

void fdg_ept_unsole_all(void)
{
    walk(0, ~0U, unsole_one, NULL);
}

/* An index for an instance not seen before (its first registration, or one
 * created before we were loaded), or -1. Out of the common path. */
__attribute__((noinline, cold)) static int claim_index(int epfd, _Atomic uint64_t *s)
{
    for (int i = 0; i < FDG_EPT_INSTANCES; i++) {
        int none = -1;
        if (atomic_compare_exchange_strong(&instance_fd[i], &none, epfd)) {
            fdg_epf_instance_new((unsigned)i);
            atomic_fetch_or(s, FDG_EPT_IS_INSTANCE | ((uint64_t)i << FDG_EPT_INDEX_SHIFT));
            return i;
        }
    }
    if (!atomic_exchange(&untracked_reported, true))
        fdg_logf(FDG_LVL_WARN, FDG_EV_EPOLL,
                 "more than %d epoll instances: registrations in the others are not tracked",
                 FDG_EPT_INSTANCES);
    return -1;
}

/* Index of the instance behind epfd, registering it if asked (an epoll fd
 * created before we were loaded, or received from elsewhere); -1 if none. */
static int instance_index(int epfd, bool create)
{
    _Atomic uint64_t *s = fdg_ept_slot((unsigned)epfd, create);
    if (!s) return -1;
    uint64_t w = atomic_load(s);
    if (w & FDG_EPT_IS_INSTANCE) return (int)((w & FDG_EPT_INDEX_MASK) >> FDG_EPT_INDEX_SHIFT);
    return create ? claim_index(epfd, s) : -1;
}

void fdg_ept_instance_created(int epfd)
{
    _Atomic uint64_t *s = fdg_ept_slot((unsigned)epfd, true);
    if (!s) return;
    /* A new fd: anything recorded under this number is stale (it was closed
     * behind our back, by a raw syscall). */
    uint64_t old = atomic_exchange(s, 0);
    if (old & FDG_EPT_IS_INSTANCE) instance_number_gone(old, (unsigned)epfd);
    instance_index(epfd, true);
}

void fdg_ept_added(int epfd, int fd, bool exclusive_added)
{
    int idx = instance_index(epfd, true);
    _Atomic uint64_t *s = idx >= 0 ? fdg_ept_slot((unsigned)fd, true) : NULL;
    if (!s) {
        fdg_count(FDG_C_epoll_untracked, 1);
        return;
    }
    uint64_t w = atomic_load_explicit(s, memory_order_relaxed), updated;
    do {
        /* Registrations of another epoch are a parent's: start afresh. */
        uint64_t keep =
            current_epoch(w) ? w : (w & (FDG_EPT_IS_INSTANCE | FDG_EPT_INDEX_MASK | FDG_EPT_OWNED));
        updated = (keep & ~FDG_EPT_EPOCH_MASK) | epoch_bits() | (UINT64_C(1) << idx) |
                  (exclusive_added ? FDG_EPT_EXCLUSIVE : 0);
    } while (!atomic_compare_exchange_weak(s, &w, updated));
    if (fdg_cfg.epoll) fdg_epf_registered((unsigned)idx);
    fdg_count(FDG_C_epoll_registrations, 1);
}

void fdg_ept_removed(int epfd, int fd)
{
    int idx = instance_index(epfd, false);
    _Atomic uint64_t *s = idx >= 0 ? fdg_ept_slot((unsigned)fd, false) : NULL;
    if (!s || !current_epoch(atomic_load(s))) return;
    uint64_t bit = UINT64_C(1) << idx;
    if ((clear_bits(s, bit) & FDG_EPT_MASK) == bit) clear_bits(s, FDG_EPT_EXCLUSIVE);
    tidy(s);
}

void fdg_ept_duplicating(int oldfd)
{
    _Atomic uint64_t *s = oldfd >= 0 ? fdg_ept_slot((unsigned)oldfd, false) : NULL;
    if (!s || !(atomic_load_explicit(s, memory_order_relaxed) & FDG_EPT_SOLE) || !fdg_table_owner())
        return;
    clear_bits(s, FDG_EPT_SOLE);
    tidy(s);
}

void fdg_ept_duplicated(int oldfd, int newfd)
{
    uint64_t w = fdg_ept_word((unsigned)oldfd);
    if (!(w & FDG_EPT_IS_INSTANCE) || !fdg_table_owner()) return;
    _Atomic uint64_t *s = fdg_ept_slot((unsigned)newfd, true);
    if (!s) return;
    clear_bits(s, FDG_EPT_IS_INSTANCE | FDG_EPT_INDEX_MASK);
    atomic_fetch_or(s, FDG_EPT_IS_INSTANCE | (w & FDG_EPT_INDEX_MASK));
}

bool fdg_ept_recordable(int epfd, int fd)
{
    return instance_index(epfd, true) >= 0 && fdg_ept_slot((unsigned)fd, true) != NULL;
}

/* Instances alive now, as a mask of indices. */
static uint64_t live_instances(void)
{
    uint64_t live = 0;
    for (unsigned i = 0; i < FDG_EPT_INSTANCES; i++)
        if (atomic_load_explicit(&instance_fd[i], memory_order_relaxed) >= 0)
            live |= UINT64_C(1) << i;
    return live;
}

void fdg_ept_before_fork(void)
{
    fdg_epf_before_fork(live_instances());
}

void fdg_ept_after_fork(void)
{
    atomic_fetch_add(&fdg_epoch, 1);
    /* The child's only thread shares no table with anyone. */
    fdg_private_table = false;
    fdg_epf_after_fork(live_instances());
}
