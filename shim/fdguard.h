/* Internal interface of libfdguard.so. Only the interposed libc symbols are
 * exported (fdguard.map); everything declared here is hidden and carries the
 * fdg_ prefix. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Everything declared here lives in this library: hidden declarations let the
 * compiler address the data directly (one instruction, not a GOT load) on
 * the hot paths. */
#pragma GCC visibility push(hidden)

#define FDG_LIKELY(x) __builtin_expect(!!(x), 1)
#define FDG_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- next.c: the definitions our wrappers forward to ---------------------- */

struct dl_find_object;
struct timespec;

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
    int (*epoll_wait)(int, struct epoll_event *, int, int);
    int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
    int (*epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *,
                        const sigset_t *); /* glibc 2.35, optional */
    int (*unshare)(int);
    const char *libc_single_threaded; /* glibc 2.32's __libc_single_threaded, or NULL */
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
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
    int (*sendmmsg)(int, struct mmsghdr *, unsigned int, int);
    int (*posix_spawn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                       const posix_spawnattr_t *, char *const[], char *const[]);
    int (*posix_spawnp)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                        const posix_spawnattr_t *, char *const[], char *const[]);
    int (*system)(const char *);
    FILE *(*popen)(const char *, const char *);
    int (*clone)(int (*)(void *), void *, int, void *, ...);
    pid_t (*fork_)(void); /* _Fork, glibc 2.34, optional */
};
extern struct fdg_next fdg_next;

void fdg_bind_next(void);

/* ---- init.c: lifecycle, fork awareness ------------------------------------ */

enum { FDG_UNINIT, FDG_INITIALIZING, FDG_READY };
extern _Atomic int fdg_state;
/* pid of the process whose memory this is; fork children update it in the
 * atfork handler. */
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

/* True in the process that owns this memory: not a vfork child (which shares
 * it), nor a child made without the fork handlers (raw fork, _Fork, clone
 * without CLONE_VM), which never acts on what it inherited. No system call
 * (owner.c, vfork.c). Call it before writing shared state. */
bool fdg_owner_process(void);
/* owner.c's page (MADV_WIPEONFORK): nonzero in the owner; NULL before the
 * first write. */
extern _Atomic(volatile unsigned char *) fdg_owner_page;

/* owner.c, vfork.c: set on a thread while a child that shares its memory and
 * its thread-local storage runs (vfork, posix_spawn, system, popen, clone
 * with CLONE_VM|CLONE_VFORK): the child reads it, the parent is suspended. */
extern __thread unsigned char fdg_in_vfork __attribute__((tls_model("initial-exec")));
/* After a clone(CLONE_VM) without CLONE_VFORK and CLONE_FILES (a child that
 * runs beside us in our memory with a table of its own): from then on the
 * owner is told apart by its pid (a getpid per check), as nothing cheaper is
 * safe. */
extern _Atomic bool fdg_owner_by_pid;
/* The fork child's handler: this process owns its (copied) memory now. */
void fdg_owner_after_fork(void);

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
    bool secure;                   /* AT_SECURE: no path from the environment is used */
};
extern struct fdg_config fdg_cfg;

/* Reads every FDGUARD_* variable; reports bad values (once) through fdg_log,
 * which keeps them until the process engages. */
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

/* Before the process engages the line is kept (static memory) and written by
 * fdg_log_flush_deferred, or never. */
void fdg_logf(enum fdg_log_level level, enum fdg_event kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Opens the log destination ahead of need (a file or syslog socket cannot be
 * opened once descriptors are exhausted). */
void fdg_log_prepare(void);
void fdg_log_flush_deferred(void);
/* Records what fd 2 is at initialisation: later lines go to fd 2 only while
 * it is still that file, and only if that can be a log (README, Security). */
void fdg_log_note_stderr(void);
const char *fdg_prog_name(void);
/* Async-signal-safe formatting: %s %d %u %ld %lu %lld %llu %zu %x %c %% only.
 * %s escapes bytes outside 0x20..0x7e and the backslash as \xHH (whole
 * escapes only, even when cut); %-s inserts the string as is (our own text,
 * or text escaped already). */
size_t fdg_format(char *buf, size_t cap, const char *fmt, __builtin_va_list ap);
size_t fdg_formatf(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A short description of an errno value (strerror is not async-signal-safe). */
const char *fdg_errno_text(int err);

/* ---- safefile.c: the shim's own files -------------------------------------- */

/* Opens an absolute path without following a symbolic link of another user
 * in any component, without blocking, O_CLOEXEC; flags may add O_CREAT
 * (mode 0600). The result is a regular file of the effective uid with one
 * link; otherwise -1 and *why says why, in a few words. */
int fdg_safe_open(const char *path, int flags, const char **why);
/* Creates (0700) or opens a directory that must be ours alone: owned by the
 * effective uid, no group or other access. O_RDONLY|O_DIRECTORY descriptor. */
int fdg_safe_private_dir(const char *path, const char **why);

/* ---- safewrite.c: writes that raise no signal and never wait --------------- */

/* Every write of the shim into a file, pipe, terminal or socket it does not
 * own alone (fd 2, the log, the stats file, IPC entries): buf to fd at off
 * (-1: the file position, or appended). SIGPIPE, SIGXFSZ and SIGTTOU are held
 * back and the ones it raised consumed; a pipe or socket is never waited
 * for; a terminal or other device is written only if it takes output now,
 * and not by a background job while TOSTOP is set. The bytes written, or -1
 * (errno). */
ssize_t fdg_safe_write(int fd, const void *buf, size_t len, off_t off);

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

/* Maps FDGUARD_STATS (if set) so fdguard stat can read the counters live:
 * once per process, when it engages. */
void fdg_stats_open(void);
/* In a fork child: the parent's file is unmapped, counters restart at 0. */
void fdg_stats_after_fork(void);
/* Field 22 of /proc/PID/stat (clock ticks since boot), or 0. */
unsigned long long fdg_start_time(pid_t pid);

/* ---- backoff.c: waits, and the clock they are measured with ---------------- */

/* CLOCK_MONOTONIC in microseconds. */
uint64_t fdg_now_us(void);

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
/* For a process that only loads libraries: arms the spare only if the table
 * is near the soft limit; true if a spare is held afterwards. */
bool fdg_spare_arm_if_near(void);
/* A spare numbered at or above the soft limit frees nothing the kernel can
 * hand out: moves the spare to the lowest free number (above 2) if that is
 * lower, drops it if it is useless where it is and cannot move. */
void fdg_spare_rehome(void);
/* For a load (dlopen.c, dldetach.c), which needs one descriptor at a time:
 * if the descriptor table is full right now, takes the lend (lend.c; *mine,
 * 0 when this thread held it already) and lends the spare; true if it did.
 * Then fdg_spare_return(*mine) re-arms the spare and releases the lend. */
bool fdg_spare_lend_for_load(uint64_t *mine);
void fdg_spare_return(uint64_t mine);

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
/* Does this thread hold the lend (a load inside a load)? */
bool fdg_lend_held_here(void);
/* Does another thread of this process hold it, and not for longer than a
 * holder is waited for? No system call unless someone holds it. */
bool fdg_lend_busy(void);

/* ---- owned.c: descriptors the shim itself holds (spare, log) ------------- */

enum { FDG_OWNED_SPARE, FDG_OWNED_LOG, FDG_OWNED_COUNT };
extern _Atomic int fdg_owned[FDG_OWNED_COUNT];

void fdg_owned_lost(int slot, int fd);
/* Records fd in an empty slot and marks it in the descriptor table (below);
 * false if the slot was taken meanwhile or the mark found no memory: the
 * caller closes fd then. */
bool fdg_owned_claim(int slot, int fd);
/* The shim closes or gives up one of its own: the mark goes first. */
void fdg_owned_unmark(int fd);
/* The application closes or replaces number fd, marked as one of ours. */
void fdg_owned_number_lost(int fd);
/* Moves a new descriptor of ours out of 0..2 (closing the original). */
int fdg_fd_above_stdio(int fd);

/* ---- engage.c: the first guarded action of a process ----------------------- */

/* The pid that engaged (-1: none yet). A fork child has another pid, so it
 * engages on its own first guarded action. */
extern _Atomic pid_t fdg_engaged_pid;

static inline bool fdg_engaged(void)
{
    return atomic_load_explicit(&fdg_engaged_pid, memory_order_relaxed) ==
           atomic_load_explicit(&fdg_self_pid, memory_order_relaxed);
}

/* Once per process, at its first guarded action (listen, accept, a recorded
 * epoll registration, a dlopen cache miss, a recorded IPC creation): the log
 * destination is opened, the lines kept since load are written, the stats
 * file is created. Until then the shim has no descriptor, no file, no line. */
void fdg_engage_slow(void);

static inline void fdg_engage_once(void)
{
    if (FDG_UNLIKELY(!fdg_engaged())) fdg_engage_slow();
}

/* Listen side: engagement, then the spare (moved below a lowered soft limit
 * if it is held) and the log destination are opened while descriptors are
 * free. */
void fdg_engage(void);
/* Accept side, when fdg_engage_needed: engagement and the spare re-armed;
 * nothing else, so an accept costs no system call once the spare is held
 * (a log destination that cannot be opened is retried by fdg_log_prepare on
 * its own timer, when a line is written). */
void fdg_engage_accept(void);

/* Only the spare and engagement: the log slot is not looked at, or a
 * destination that cannot be opened would send every accept here. */
static inline bool fdg_engage_needed(void)
{
    return atomic_load_explicit(&fdg_owned[FDG_OWNED_SPARE], memory_order_relaxed) < 0 ||
           !fdg_engaged();
}

/* Loader side (a dlopen cache miss): engagement; the spare only when the
 * table is near its soft limit (a process that only loads libraries must
 * not show an extra descriptor), kept below the limit once held. */
void fdg_engage_load(void);

/* ---- raw.c: syscalls that bypass every wrapper ----------------------------- */

int fdg_raw_close(int fd);
/* Reads our own memory without a fault: 1 read, 0 unreadable, -1 refused. */
int fdg_read_self(const void *addr, void *buf, size_t len);
long fdg_raw_fcntl(int fd, int cmd, long arg);

/* ---- dlgadget.c, dlcaller.c, dlopen.c ------------------------------------ */

struct link_map;
/* The object a caller's code lives in (_dl_find_object, once per call): its
 * link map, mapping start and end, and unwind search table. */
struct fdg_caller {
    struct link_map *map;
    void *start, *end;
    const void *eh_frame;
};
/* Both name the same loaded object at the same place. Another object loaded
 * where an unloaded one was can match in some fields, rarely in all: the
 * callers add what they can check besides (the path, the dynamic section). */
static inline bool fdg_same_caller(const struct fdg_caller *a, const struct fdg_caller *b)
{
    return a->map == b->map && a->start == b->start && a->end == b->end &&
           a->eh_frame == b->eh_frame;
}
/* True when misses can be resolved for the caller (the trampoline exists and
 * _dl_find_object too): only then is the cache used. */
extern bool fdg_dlcaller_faithful;
void fdg_dlcaller_bind(void);
bool fdg_dlcaller_object(void *addr, struct fdg_caller *out);

/* A return gadget in the caller's object (dlgadget.c explains the kinds). */
enum { FDG_GADGET_NONE, FDG_GADGET_RBP, FDG_GADGET_RSP8, FDG_GADGET_RSP16, FDG_GADGET_BARE };
struct fdg_gadget {
    uintptr_t addr;
    int kind;
};
/* The gadget for that object; false if it has none. */
bool fdg_gadget_find(const struct fdg_caller *object, struct fdg_gadget *out);
/* fork: true in the prepare handler, false in the parent's and child's. */
void fdg_gadget_atfork(bool prepare);
/* How a miss calls the real dlopen as the application's caller. */
struct fdg_as {
    void **ret_slot; /* the application's return address (dlentry.c's stub) */
    struct fdg_gadget gadget;
};
/* The real dlopen, resolved as if called from *as->ret_slot. */
void *fdg_dlopen_as(const struct fdg_as *as, const char *file, int mode);

/* dlentry.c's stubs call these: the answer, or (forward set) the function
 * the stub tail-calls with the original arguments. */
struct fdg_dl_ret {
    void *value;
    void *forward;
};
struct fdg_dl_ret fdg_dlopen_enter(const char *file, int mode, void **ret_slot);
struct fdg_dl_ret fdg_dlclose_enter(void *handle);
/* Is a shadow stack active on this thread (dlentry.c)? */
bool fdg_shstk_active(void);

void fdg_dlopen_atfork_prepare(void);
void fdg_dlopen_atfork_release(void);
/* In the child (fork): after release, whether the parent had threads. */
void fdg_dlopen_atfork_child(void);

/* May the shim walk the loader's list (dl_iterate_phdr) now? Not in a fork
 * child of a multi-threaded parent: another thread may have held the
 * loader's write lock, which glibc's fork does not reset. While true, the
 * walk runs under fdg_loader_walk_lock, which fork's prepare handler takes,
 * so a child never inherits the lock taken by one of our walks. */
bool fdg_loader_walk_begin(void);
void fdg_loader_walk_end(void);

/* ---- dldetach.c: idle objects no longer read their files ------------------ */

/* The identity of a file, to notice it changed (dlopen.c's reload check). */
struct fdg_file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
};

/* The object and the dependencies that came with it, detached from their
 * files (dldetach.c explains why and how). False, and nothing done, unless
 * the object and those dependencies are its own: no other object needs them,
 * held() says the application holds none of those dependencies itself, and
 * every other dependency is one of the first `permanent` objects of the
 * loader's list (there before the first load the cache made). On success
 * *deps (malloc'd, *ndeps entries) names the dependencies; their ids are
 * the caller's to fill. */
struct fdg_dep {
    const void *handle;
    struct fdg_file_id id;
    char path[];
};
bool fdg_detach(struct link_map *map, unsigned permanent, bool (*held)(const void *handle),
                struct fdg_dep ***deps, unsigned *ndeps);

/* Frees what a successful fdg_detach returned in *deps. */
void fdg_free_deps(struct fdg_dep **deps, unsigned ndeps);

/* ---- epoll_table.c: what the shim knows about each descriptor number ------ */

/* One 64-bit word per fd number. The close family's only question on its fast
 * path, "is this number tracked at all?", is one load of it:
 *   bits  0..47  instances (by index) in which this process registered the fd
 *   bits 48..53  epoch of those registrations and of bit 55 (see fdg_epoch)
 *   bit  54      the fd is one of the shim's own (owned.c: the spare, the log)
 *   bit  55      sole: it came from an accept the shim wrapped, and its open
 *                file description has had no other reference since (spawn.c)
 *   bit  56      the fd is itself an epoll instance ...
 *   bits 57..62  ... with this index
 *   bit  63      we added EPOLLEXCLUSIVE to its registrations
 * A fork child bumps the epoch: inherited registrations are its parent's and
 * are never acted on, and nothing needs to be copied or cleared at fork (the
 * epoch only has to differ from the ancestors' within 64 nested forks).
 * What a parent does with registrations a child inherited is decided per
 * instance, in epoll_fork.c (the fork rule).
 *
 * Numbers below FDG_EPT_FLAT have their words in one static array: zero pages
 * until written, so the fast path needs neither initialisation nor a pointer.
 * Higher numbers live in chunks mapped on the first write in their range, so
 * memory follows the highest number written. */
#define FDG_EPT_INSTANCES 48
#define FDG_EPT_MASK ((UINT64_C(1) << FDG_EPT_INSTANCES) - 1)
#define FDG_EPT_EPOCH_SHIFT 48
#define FDG_EPT_EPOCH_MASK (UINT64_C(0x3f) << FDG_EPT_EPOCH_SHIFT)
#define FDG_EPT_OWNED (UINT64_C(1) << 54)
#define FDG_EPT_SOLE (UINT64_C(1) << 55)
#define FDG_EPT_IS_INSTANCE (UINT64_C(1) << 56)
#define FDG_EPT_INDEX_SHIFT 57
#define FDG_EPT_INDEX_MASK (UINT64_C(0x3f) << FDG_EPT_INDEX_SHIFT)
#define FDG_EPT_EXCLUSIVE (UINT64_C(1) << 63)

#define FDG_EPT_FLAT (1u << 16) /* a power of two: one compare covers two numbers */
#define FDG_EPT_CHUNK_BITS 12
#define FDG_EPT_CHUNK (1u << FDG_EPT_CHUNK_BITS)
#define FDG_EPT_DIR (1u << (31 - FDG_EPT_CHUNK_BITS)) /* every fd below 2^31 */

extern _Atomic uint64_t fdg_ept_flat[FDG_EPT_FLAT];
extern _Atomic(_Atomic uint64_t *) fdg_ept_dir[FDG_EPT_DIR];
extern _Atomic uint64_t fdg_epoch;

/* The word of an fd at or above FDG_EPT_FLAT, or 0. */
uint64_t fdg_ept_word_far(unsigned fd);

/* The word of fd, or 0. */
static inline uint64_t fdg_ept_word(unsigned fd)
{
    if (FDG_LIKELY(fd < FDG_EPT_FLAT))
        return atomic_load_explicit(&fdg_ept_flat[fd], memory_order_relaxed);
    return fdg_ept_word_far(fd);
}

/* One past the highest number whose word was ever written: the walks (a
 * closed epoll fd's records, close_range, the sole sweep) stop there. */
extern _Atomic unsigned fdg_ept_end;
void fdg_ept_extend(unsigned fd);
_Atomic uint64_t *fdg_ept_slot_far(unsigned fd, bool create);

/* fd's word; with `create`, mapped if need be (the caller is about to write
 * it). NULL if it cannot be. */
static inline _Atomic uint64_t *fdg_ept_slot(unsigned fd, bool create)
{
    if (FDG_LIKELY(fd < FDG_EPT_FLAT)) {
        if (create && FDG_UNLIKELY(fd >= atomic_load(&fdg_ept_end))) fdg_ept_extend(fd);
        return &fdg_ept_flat[fd];
    }
    return fdg_ept_slot_far(fd, create);
}
/* Clears every sole mark (spawn.c). */
void fdg_ept_unsole_all(void);
/* The numbers [lo, hi] are about to be closed (fdg_fd_closing_tracked for
 * each tracked one). */
void fdg_ept_closing_range(unsigned lo, unsigned hi);
/* Marks / unmarks one of the shim's own descriptors (owned.c); marking maps
 * the number's chunk if need be: false without memory. */
bool fdg_ept_mark_owned(int fd);
void fdg_ept_unmark_owned(int fd);
/* After a successful epoll_create: the fd is a fresh instance. */
void fdg_ept_instance_created(int epfd);
/* After a successful EPOLL_CTL_ADD / DEL (or DEL that found nothing). */
void fdg_ept_added(int epfd, int fd, bool exclusive_added);
void fdg_ept_removed(int epfd, int fd);
/* Could a registration of fd in epfd be recorded (an instance index free,
 * memory for the fd's chunk)? Asked before making a registration exclusive,
 * which only a record lets MOD undo. */
bool fdg_ept_recordable(int epfd, int fd);
/* pthread_atfork: prepare in the parent, child in the child. */
void fdg_ept_before_fork(void);
void fdg_ept_after_fork(void);
/* Before a dup of any kind of a tracked oldfd: its description gets another
 * reference (not sole any more). After a successful one: if oldfd is an
 * epoll instance, newfd names it too (an epoll fd moved to another number
 * keeps its records). */
void fdg_ept_duplicating(int oldfd);
void fdg_ept_duplicated(int oldfd, int newfd);

/* The epoll_wait family must note, once per instance, that this process
 * waits on it (the fork rule). Nonzero while some instance still needs
 * that note (and before initialisation): one load and a branch per call
 * otherwise. */
extern _Atomic uint64_t fdg_ept_waitwatch;
void fdg_ept_waiting(int epfd);
/* Instances this fork child inherited and has not yet used: an ADD or MOD
 * in one of them is a use (fdg_ept_using). Zero in a process never forked.
 * Bit 63 (FDG_EPT_MODWATCH_EXCL) is set once the shim has made any
 * registration exclusive: EPOLL_CTL_MOD then looks at the fd's word. So MOD
 * costs one load and a branch while this is 0. */
extern _Atomic uint64_t fdg_ept_inherited;
#define FDG_EPT_MODWATCH_EXCL (UINT64_C(1) << 63)
void fdg_ept_using(int epfd);

static inline void fdg_ept_wait_watch(int epfd)
{
    uint64_t watch = atomic_load_explicit(&fdg_ept_waitwatch, memory_order_relaxed);
    if (FDG_LIKELY(!watch)) return;
    if ((int64_t)watch < 0) { /* bit 63: not initialised yet */
        fdg_ept_waiting(epfd);
        return;
    }
    /* Some instance is watched: is it this one? */
    uint64_t w = epfd >= 0 ? fdg_ept_word((unsigned)epfd) : 0;
    unsigned idx = (unsigned)((w & FDG_EPT_INDEX_MASK) >> FDG_EPT_INDEX_SHIFT);
    if ((w & FDG_EPT_IS_INSTANCE) && ((watch >> idx) & 1)) fdg_ept_waiting(epfd);
}

/* ---- epoll_fork.c: the fork rule (see there) ------------------------------ */

/* Instance index idx was just given to a new instance / lost its last number. */
void fdg_epf_instance_new(unsigned idx);
void fdg_epf_instance_gone(unsigned idx);
/* A registration in idx was recorded. */
void fdg_epf_registered(unsigned idx);
/* Closing a registration this process made in idx (named by epfd): must it
 * stay, because a process that inherited the instance may rely on it? */
bool fdg_epf_keep(unsigned idx, int epfd);
/* Fork, with the mask of live instance indices. */
void fdg_epf_before_fork(uint64_t live);
void fdg_epf_after_fork(uint64_t live);

/* ---- samefile.c ------------------------------------------------------------ */

/* Do fd1 in this process and fd2 in process pid2 (0: this one) name the same
 * open file description? 1 yes, 0 no, -errno when kcmp failed (ESRCH: no
 * such process; EBADF: a number not open; ENOSYS, EPERM: no kcmp here).
 * Preserves errno. */
int fdg_kcmp_file(pid_t pid2, int fd1, int fd2);
/* The same question within this process, with a fallback where kcmp is not
 * allowed: a socket has one description per inode. */
bool fdg_same_description(int fd1, int fd2);

/* ---- spawn.c: children that take references to our descriptions ---------- */

/* A process created with a copy of the descriptor table (fork, vfork,
 * posix_spawn, system, popen, clone without CLONE_FILES, _Fork) or a thread
 * that unshares it holds a reference to every description: no description
 * is sole any more. fdg_spawn_begin clears every sole mark before the copy
 * is made and, until fdg_spawn_end, no accept marks one (the count in the
 * low half of fdg_spawn_state); every begin also bumps the generation in
 * the high half, so an accept that overlapped one drops its mark (spawn.c
 * explains the order). */
extern _Atomic uint64_t fdg_spawn_state;
void fdg_spawn_begin(void);
void fdg_spawn_end(void);
/* In a fork child: nothing of its parent's is in progress here. */
void fdg_spawn_after_fork(void);

/* Marks a descriptor returned by an accept the shim wrapped as sole; `state`
 * is fdg_spawn_state as read before that accept. */
void fdg_sole_mark(int fd, uint64_t state);
/* Descriptors passed with SCM_RIGHTS in a message that was sent. */
void fdg_sole_sent(const struct msghdr *msg);

/* ---- private_table.c: threads with a descriptor table of their own -------- */

/* Set on a thread that called unshare(CLONE_FILES) or
 * close_range(CLOSE_RANGE_UNSHARE) while the table was shared: it closes
 * numbers in its own copy, which takes nothing away from the other threads,
 * so it must neither delete registrations nor forget the shim's descriptors.
 * initial-exec: read on the close path, in signal handlers. */
extern __thread bool fdg_private_table __attribute__((tls_model("initial-exec")));
/* Would unshare(CLONE_FILES) copy the table now (another thread shares it)? */
bool fdg_table_shared(void);

/* True when this thread may act on the shim's tables: the process that owns
 * this memory, on a thread that shares the process's descriptor table. The
 * TLS is read only on slow paths (a tracked fd). */
static inline bool fdg_table_owner(void)
{
    if (FDG_UNLIKELY(fdg_private_table)) return false;
    volatile unsigned char *page = atomic_load_explicit(&fdg_owner_page, memory_order_acquire);
    if (FDG_LIKELY(page && !fdg_in_vfork &&
                   !atomic_load_explicit(&fdg_owner_by_pid, memory_order_relaxed)))
        return *page != 0;
    return fdg_owner_process();
}

/* fd (a tracked number: its word is nonzero) is about to be closed or
 * replaced: EPOLL_CTL_DEL it wherever this process registered it, unless the
 * close drops the last reference to its description (then the kernel removes
 * the registrations itself); forget its records (and, for an epoll fd, the
 * records of its instance), and forget it if it was one of the shim's own.
 * Lock-free and async-signal-safe. */
void fdg_fd_closing_tracked(unsigned fd, uint64_t word);

static inline void fdg_fd_closing(unsigned fd)
{
    uint64_t word = fdg_ept_word(fd);
    if (FDG_UNLIKELY(word)) fdg_fd_closing_tracked(fd, word);
}

#pragma GCC visibility pop
