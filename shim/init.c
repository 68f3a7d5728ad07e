/* Lifecycle: one initialisation (constructor, or the first wrapper that runs
 * before it), fork awareness, and whether this process is guarded at all.
 *
 * Initialisation binds symbols, reads the environment and, in a guarded
 * process, looks at what fd 2 is (one fstat); it opens nothing, writes
 * nothing, allocates nothing and starts no thread, so a program that never
 * reaches a guarded call (sh, ls: every child inherits LD_PRELOAD) never
 * notices us. Everything visible waits for engagement (engage.c). */
#include "fdguard.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

_Atomic int fdg_state = FDG_UNINIT;
_Atomic pid_t fdg_self_pid;
bool fdg_guarding;

/* Set on the thread running the initialisation: a wrapper reached from inside
 * it (dlsym may call into libc) must pass through instead of waiting for
 * itself. initial-exec: no allocation, usable in signal handlers. */
static __thread bool initializing_here __attribute__((tls_model("initial-exec")));

/* Set when our constructor starts: environ is libc's from then on. */
static bool constructor_ran;

static pid_t raw_getpid(void)
{
    return (pid_t)syscall(SYS_getpid);
}

static void after_fork_in_child(void)
{
    atomic_store_explicit(&fdg_self_pid, raw_getpid(), memory_order_relaxed);
    fdg_ept_after_fork(); /* the epoch first: then this copy is the owner's */
    fdg_owner_after_fork();
    fdg_spawn_after_fork();
    fdg_stats_after_fork();
    fdg_dlopen_atfork_release();
}

/* errno is kept: the first wrapper call can come before our constructor (a
 * constructor of a library initialised before us), and its caller must see
 * what the real call left (parsing a number resets errno, binding and the
 * fstat of fd 2 may set it). */
bool fdg_init_slow(void)
{
    int expected = FDG_UNINIT;
    if (atomic_compare_exchange_strong(&fdg_state, &expected, FDG_INITIALIZING)) {
        int saved = errno;
        initializing_here = true;
        atomic_store(&fdg_self_pid, raw_getpid());
        fdg_bind_next();
        if (FDG_UNLIKELY(!environ && !constructor_ran)) {
            /* A .preinit_array runs before libc sets environ (glibc's
             * dynamic start-up): the variables, FDGUARD=off included, cannot
             * be read yet. Pass this call through, decide at the next one.
             * From our constructor on, a NULL environ is a cleared one
             * (clearenv), read as empty. */
            initializing_here = false;
            atomic_store_explicit(&fdg_state, FDG_UNINIT, memory_order_release);
            errno = saved;
            return false;
        }
        fdg_config_load();
        fdg_guarding = fdg_cfg.enabled;
        if (fdg_guarding) {
            pthread_atfork(fdg_dlopen_atfork_prepare, fdg_dlopen_atfork_release,
                           after_fork_in_child);
            pthread_atfork(fdg_ept_before_fork, NULL, NULL);
            pthread_atfork(fdg_spawn_begin, fdg_spawn_end, NULL);
            fdg_log_note_stderr();
        }
        initializing_here = false;
        atomic_store_explicit(&fdg_state, FDG_READY, memory_order_release);
        errno = saved;
        return fdg_guarding;
    }
    if (initializing_here) return false;
    /* Another thread is initialising: it takes microseconds. */
    while (atomic_load_explicit(&fdg_state, memory_order_acquire) != FDG_READY)
        sched_yield();
    return fdg_guarding;
}

__attribute__((constructor(101))) static void fdg_constructor(void)
{
    constructor_ran = true;
    fdg_init_slow();
}
