/* Internal interface of libfdguard.so. Only the interposed libc symbols are
 * exported (fdguard.map); everything declared here is hidden and carries the
 * fdg_ prefix. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#define FDG_LIKELY(x) __builtin_expect(!!(x), 1)
#define FDG_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- next.c: the definitions our wrappers forward to ---------------------- */

struct dl_find_object;

struct fdg_next {
    int (*accept)(int, struct sockaddr *, socklen_t *);
    int (*accept4)(int, struct sockaddr *, socklen_t *, int);
    int (*listen)(int, int);
    int (*close)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*close_range)(unsigned int, unsigned int, int);
    void (*closefrom)(int);
    int (*fclose)(FILE *);
    int (*epoll_create)(int);
    int (*epoll_create1)(int);
    int (*epoll_ctl)(int, int, int, struct epoll_event *);
    int (*dup)(int);
    int (*fcntl)(int, int, ...);
    int (*fcntl64)(int, int, ...);
    int (*shmget)(key_t, size_t, int);
    int (*semget)(key_t, int, int);
    int (*msgget)(key_t, int);
    void *(*dlopen)(const char *, int);
    int (*dlclose)(void *);
    int (*dl_find_object)(void *, struct dl_find_object *); /* glibc 2.35, optional */
    char *(*dlerror)(void);
};
extern struct fdg_next fdg_next;

void fdg_bind_next(void);

/* ---- init.c: lifecycle, fork awareness ------------------------------------ */

enum { FDG_UNINIT, FDG_INITIALIZING, FDG_READY };
extern _Atomic int fdg_state;
/* pid of the process whose memory this is; fork children update it in the
 * atfork handler, vfork and raw clone children do not, which is how they are
 * told apart (they must not write to our tables). */
extern _Atomic pid_t fdg_self_pid;

bool fdg_init_slow(void);

/* True when the shim is initialised and guarding this process. False while
 * initialisation is under way on this thread (the caller then passes through). */
extern bool fdg_guarding;

static inline bool fdg_active(void)
{
    if (FDG_UNLIKELY(atomic_load_explicit(&fdg_state, memory_order_acquire) != FDG_READY))
        return fdg_init_slow();
    return fdg_guarding;
}

/* True in the process that owns this memory (not a vfork/clone child). Costs
 * a getpid syscall: call it only before writing shared state. */
bool fdg_owner_process(void);

/* ---- config.c -------------------------------------------------------------- */

enum fdg_dlopen_mode { FDG_DLOPEN_KEEP, FDG_DLOPEN_CACHE, FDG_DLOPEN_OFF };
enum fdg_log_target { FDG_LOG_STDERR, FDG_LOG_SYSLOG, FDG_LOG_FILE };
enum fdg_log_level { FDG_LVL_QUIET, FDG_LVL_ERROR, FDG_LVL_WARN, FDG_LVL_INFO, FDG_LVL_DEBUG };

#define FDG_REJECT_MAX 1024
#define FDG_PATH_MAX 4096

struct fdg_config {
    bool enabled;     /* FDGUARD=on and FDGUARD_ONLY matches */
    bool accept;      /* FDGUARD_ACCEPT */
    int accept_errno; /* FDGUARD_ACCEPT_ERRNO: EAGAIN or 0 (the original error) */
    char reject_msg[FDG_REJECT_MAX];
    size_t reject_len;
    unsigned headroom;   /* FDGUARD_HEADROOM */
    bool epoll;          /* FDGUARD_EPOLL */
    bool epollexclusive; /* FDGUARD_EPOLLEXCLUSIVE */
    enum fdg_dlopen_mode dlopen;
    unsigned dlopen_keep;
    unsigned dlopen_retries;
    unsigned backoff_max_ms;
    enum fdg_log_target log_target;
    enum fdg_log_level log_level;
    char log_path[FDG_PATH_MAX];
    char stats_path[FDG_PATH_MAX]; /* empty: no stats file */
};
extern struct fdg_config fdg_cfg;

/* Reads every FDGUARD_* variable; reports bad values (once) through fdg_log. */
void fdg_config_load(void);

/* ---- log.c ----------------------------------------------------------------- */

/* Each kind is rate limited on its own, so a storm of one event cannot hide
 * another. */
enum fdg_event {
    FDG_EV_CONFIG,
    FDG_EV_BIND,
    FDG_EV_SHED,
    FDG_EV_SPARE,
    FDG_EV_BACKOFF,
    FDG_EV_EPOLL,
    FDG_EV_DLOPEN,
    FDG_EV_STATS,
    FDG_EV_IPC,
    FDG_EV_COUNT
};

void fdg_logf(enum fdg_log_level level, enum fdg_event kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Opens the log destination ahead of need (a file or syslog socket cannot be
 * opened once descriptors are exhausted). */
void fdg_log_prepare(void);
const char *fdg_prog_name(void);
/* Async-signal-safe formatting: %s %d %u %ld %lu %lld %llu %zu %x %c %% only. */
size_t fdg_format(char *buf, size_t cap, const char *fmt, __builtin_va_list ap);
size_t fdg_formatf(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- stats.c --------------------------------------------------------------- */

/* X-macro: name, description. The order is the file format's order. */
#define FDG_COUNTERS(X)                                                                            \
    X(accept_emfile, "accept failed with EMFILE/ENFILE")                                           \
    X(accept_shed, "connections taken through the spare and shed")                                 \
    X(accept_handed, "connections taken through the spare and kept (room appeared)")               \
    X(accept_headroom_shed, "connections shed to keep FDGUARD_HEADROOM free")                      \
    X(accept_reject_sent, "reject messages sent")                                                  \
    X(accept_nomem, "accept failed with ENOBUFS/ENOMEM")                                           \
    X(accept_backoff, "backoff sleeps (no spare, or no memory)")                                   \
    X(spare_armed, "spare descriptor opened")                                                      \
    X(spare_lent, "spare descriptor released for a connection or a load")                          \
    X(spare_lost, "spare descriptor closed or replaced by the application")                        \
    X(epoll_registrations, "EPOLL_CTL_ADD registrations recorded")                                 \
    X(epoll_auto_del, "automatic EPOLL_CTL_DEL before close/dup2/dup3/close_range")                \
    X(epoll_dropped, "records dropped without a syscall (epoll fd closed, foreign)")               \
    X(epoll_exclusive, "EPOLLEXCLUSIVE added to a listening socket's registration")                \
    X(epoll_mod_emulated, "EPOLL_CTL_MOD of an exclusive registration done as DEL+ADD")            \
    X(epoll_untracked, "registrations in instances beyond the table's 48")                         \
    X(dlopen_hits, "dlopen served from the cache")                                                 \
    X(dlopen_misses, "dlopen passed to the loader")                                                \
    X(dlopen_loads, "objects the loader opened for the cache")                                     \
    X(dlopen_unloads, "objects the cache really closed")                                           \
    X(dlopen_evictions, "idle objects closed to stay within FDGUARD_DLOPEN_KEEP")                  \
    X(dlopen_reloads, "idle objects dropped because their file changed")                           \
    X(dlopen_retries, "transient loader failures retried")                                         \
    X(dlopen_fd_lends, "spare descriptor lent to the loader")                                      \
    X(ipc_recorded, "System V IPC objects whose creator was recorded")                             \
    X(log_suppressed, "log lines suppressed by rate limiting")

enum fdg_counter {
#define FDG_ENUM(name, desc) FDG_C_##name,
    FDG_COUNTERS(FDG_ENUM)
#undef FDG_ENUM
        FDG_C_COUNT
};

extern _Atomic uint64_t *fdg_counters;

static inline void fdg_count(enum fdg_counter c, uint64_t n)
{
    atomic_fetch_add_explicit(&fdg_counters[c], n, memory_order_relaxed);
}

/* Maps FDGUARD_STATS (if set) so fdguard stat can read the counters live. */
void fdg_stats_open(void);

/* ---- backoff.c ------------------------------------------------------------- */

/* Sleeps for step `attempt` of a capped exponential backoff with jitter
 * (1, 2, 4 ... FDGUARD_BACKOFF_MAX_MS ms, each drawn from [d/2, d]). */
void fdg_backoff_sleep(unsigned attempt);
/* The duration of that step, in microseconds (for callers that sleep their
 * own way). */
uint64_t fdg_backoff_us(unsigned attempt);

/* ---- spare.c --------------------------------------------------------------- */

/* Ensures a spare descriptor is held; true if one is held afterwards. */
bool fdg_spare_arm(void);
/* Closes the spare so that one descriptor slot is free; false if none held. */
bool fdg_spare_lend(void);
bool fdg_spare_held(void);

/* ---- lend.c: who may use the spare's slot (one thread, never across a wait) */

enum { FDG_LEND_OK, FDG_LEND_TIMEOUT, FDG_LEND_SIGNAL };
/* Waits until this thread holds the lend (*mine), to accept on listener fd.
 * `offer`: one this thread made (fdg_lend_offer), which it takes back only
 * if nobody else does. Stops at deadline_us (CLOCK_MONOTONIC, 0: none) and,
 * if `signals`, when a signal handler interrupts a nap. A holder of another
 * process (a fork parent's) or one stuck for FDGUARD_BACKOFF_MAX_MS is
 * taken over. */
int fdg_lend_acquire(uint64_t *mine, uint64_t offer, int fd, uint64_t deadline_us, bool signals);
void fdg_lend_release(uint64_t mine);
/* True (once) if another thread of this process waits for the lend, for
 * another listener than the holder's. */
bool fdg_lend_wanted(void);
/* Releases the lend to a waiting thread; what to pass to fdg_lend_acquire
 * to queue behind it, or 0 if it was taken over meanwhile. */
uint64_t fdg_lend_offer(uint64_t mine);
/* CLOCK_MONOTONIC in microseconds. */
uint64_t fdg_now_us(void);

/* ---- owned.c: descriptors the shim itself holds (spare, log) ------------- */

enum { FDG_OWNED_SPARE, FDG_OWNED_LOG, FDG_OWNED_COUNT };
extern _Atomic int fdg_owned[FDG_OWNED_COUNT];

void fdg_owned_lost(int slot, int fd);
/* Records fd in an empty slot; false if the slot was taken meanwhile. */
bool fdg_owned_claim(int slot, int fd);
/* Moves a new descriptor of ours out of 0..2 (closing the original). */
int fdg_fd_above_stdio(int fd);

/* The application is about to close or replace descriptors [lo, hi]. Daemons'
 * blanket close loops do this to ours too; we forget them and re-open later.
 * Two relaxed loads: this runs on every close. */
static inline void fdg_owned_closing(unsigned lo, unsigned hi)
{
    for (int slot = 0; slot < FDG_OWNED_COUNT; slot++) {
        int fd = atomic_load_explicit(&fdg_owned[slot], memory_order_relaxed);
        if (FDG_UNLIKELY(fd >= 0 && (unsigned)fd >= lo && (unsigned)fd <= hi))
            fdg_owned_lost(slot, fd);
    }
}

/* First need of a process (its first accept or dlopen), and after a loss:
 * the spare and the log destination are opened while descriptors are free. */
void fdg_engage(void);

static inline bool fdg_engage_needed(void)
{
    return atomic_load_explicit(&fdg_owned[FDG_OWNED_SPARE], memory_order_relaxed) < 0 ||
           (fdg_cfg.log_target != FDG_LOG_STDERR &&
            atomic_load_explicit(&fdg_owned[FDG_OWNED_LOG], memory_order_relaxed) < 0);
}

/* ---- raw.c: syscalls that bypass every wrapper ----------------------------- */

int fdg_raw_close(int fd);
long fdg_raw_fcntl(int fd, int cmd, long arg);

/* ---- dlcaller.c, dlopen.c -------------------------------------------------- */

struct link_map;
/* The object a caller's code lives in: its link map and mapping start. */
struct fdg_caller {
    struct link_map *map;
    void *start;
};
/* True when misses can be resolved for the caller (the trampoline exists and
 * _dl_find_object too): only then is the cache used. */
extern bool fdg_dlcaller_faithful;
void fdg_dlcaller_bind(void);
bool fdg_dlcaller_object(void *addr, struct fdg_caller *out);
/* The real dlopen, resolved as if called from `caller` (a return address). */
void *fdg_dlopen_as(void *caller, const char *file, int mode);
void fdg_dlopen_atfork_prepare(void);
void fdg_dlopen_atfork_release(void);

/* Lends the spare if the descriptor table is full right now (a load needs
 * one descriptor at a time); true if it did. */
bool fdg_spare_lend_if_full(void);

/* ---- epoll_table.c: which epoll instances each fd is registered in -------- */

/* One 64-bit word per fd, in chunks allocated on the first registration in
 * their range, so memory follows the highest registered fd:
 *   bits  0..47  instances (by index) in which this process registered the fd
 *   bits 48..55  epoch of those registrations (see fdg_epoch)
 *   bit  56      the fd is itself an epoll instance ...
 *   bits 57..62  ... with this index
 *   bit  63      we added EPOLLEXCLUSIVE to its registrations
 * A fork child bumps the epoch: inherited registrations are its parent's and
 * are never acted on, and nothing needs to be copied or cleared at fork. */
#define FDG_EPT_INSTANCES 48
#define FDG_EPT_MASK ((UINT64_C(1) << FDG_EPT_INSTANCES) - 1)
#define FDG_EPT_EPOCH_SHIFT 48
#define FDG_EPT_EPOCH_MASK (UINT64_C(0xff) << FDG_EPT_EPOCH_SHIFT)
#define FDG_EPT_IS_INSTANCE (UINT64_C(1) << 56)
#define FDG_EPT_INDEX_SHIFT 57
#define FDG_EPT_INDEX_MASK (UINT64_C(0x3f) << FDG_EPT_INDEX_SHIFT)
#define FDG_EPT_EXCLUSIVE (UINT64_C(1) << 63)

#define FDG_EPT_CHUNK_BITS 12
#define FDG_EPT_CHUNK (1u << FDG_EPT_CHUNK_BITS)
#define FDG_EPT_DIR (1u << (31 - FDG_EPT_CHUNK_BITS)) /* every fd below 2^31 */

extern _Atomic(_Atomic uint64_t *) fdg_ept_dir[FDG_EPT_DIR];
extern _Atomic uint64_t fdg_epoch;

/* The word of fd, or 0. Two loads: this is the close fast path. */
static inline uint64_t fdg_ept_word(unsigned fd)
{
    if (FDG_UNLIKELY(fd >= FDG_EPT_DIR * FDG_EPT_CHUNK)) return 0;
    _Atomic uint64_t *chunk =
        atomic_load_explicit(&fdg_ept_dir[fd >> FDG_EPT_CHUNK_BITS], memory_order_acquire);
    if (FDG_LIKELY(!chunk)) return 0;
    return atomic_load_explicit(&chunk[fd & (FDG_EPT_CHUNK - 1)], memory_order_relaxed);
}

/* fd is about to be closed or replaced: EPOLL_CTL_DEL it wherever this
 * process registered it, and forget its records (and, for an epoll fd, the
 * records of its instance). Lock-free and async-signal-safe. */
void fdg_ept_closing(unsigned fd, uint64_t word);
void fdg_ept_closing_range(unsigned lo, unsigned hi);
/* After a successful epoll_create: the fd is a fresh instance. */
void fdg_ept_instance_created(int epfd);
/* After a successful EPOLL_CTL_ADD / DEL (or DEL that found nothing). */
void fdg_ept_added(int epfd, int fd, bool exclusive_added);
void fdg_ept_removed(int epfd, int fd);
/* Could a registration of fd in epfd be recorded (an instance index free,
 * memory for the fd's chunk)? Asked before making a registration exclusive,
 * which only a record lets MOD undo. */
bool fdg_ept_recordable(int epfd, int fd);
void fdg_ept_after_fork(void);
/* After a successful dup of any kind: if oldfd is an epoll instance, newfd
 * names it too (an epoll fd moved to another number keeps its records). */
void fdg_ept_duplicated(int oldfd, int newfd);

/* Is fd registered in epoll or one of ours? The close family's fast check. */
static inline bool fdg_fd_tracked(unsigned fd)
{
    for (int slot = 0; slot < FDG_OWNED_COUNT; slot++)
        if (atomic_load_explicit(&fdg_owned[slot], memory_order_relaxed) == (int)fd) return true;
    return fdg_ept_word(fd) != 0;
}

static inline void fdg_fd_closing(unsigned fd)
{
    fdg_owned_closing(fd, fd);
    uint64_t word = fdg_ept_word(fd);
    if (FDG_UNLIKELY(word)) fdg_ept_closing(fd, word);
}
