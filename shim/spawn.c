/* Children that take a reference to every description we hold, and the
 * sole marks they void.
 *
 * A close drops the last reference to a description only if no other
 * process holds it. Any child made with a copy of the descriptor table
 * (fork, vfork, posix_spawn, system, popen, clone without CLONE_FILES,
 * _Fork), and a thread that unshares its table, holds every description
 * the table names, for as long as it lives (or until its exec, for those
 * marked close-on-exec). So around each: fdg_spawn_begin clears every sole
 * mark before the copy is made, and no accept marks a new one until
 * fdg_spawn_end.
 *
 * fdg_spawn_state: generation (high 32 bits, +1 per begin) | spawns in
 * progress (low 32 bits). An accept reads it before the system call; it
 * marks its descriptor only if nothing was in progress then, and drops the
 * mark again if the state changed by the time the mark is stored (sole.c).
 * With every access sequentially consistent, a child that copied the
 * descriptor either copied it after that first read (then its begin came
 * after the mark was stored, and its sweep clears the mark) or its begin
 * came before the first read and its end after (nothing in progress was
 * read: impossible) or before (then the copy preceded the accept).
 *
 * Also here: the wrappers that mark the calling thread while a child that
 * shares its memory and TLS runs (owner.c). glibc 2.36 binds nothing but
 * calloc, realloc and loader internals through its PLT (readelf -r
 * libc.so.6), so posix_spawn's child, and system's and popen's (which use
 * posix_spawn inside), reach none of our wrappers: the mark there is only
 * insurance against another preloaded library. */
#include "fdguard.h"

#include <errno.h>
#include <sched.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>

#define EXPORT __attribute__((visibility("default")))
#define IN_PROGRESS UINT64_C(0xffffffff)

_Atomic uint64_t fdg_spawn_state;

void fdg_spawn_begin(void)
{
    atomic_fetch_add(&fdg_spawn_state, (UINT64_C(1) << 32) | 1);
    /* The sweep's loads are relaxed: they see every mark stored before the
     * increment in the single total order (spawn.c, above). */
#if defined(__SANITIZE_THREAD__)
    /* TSan models no fences (gcc refuses them under -Werror=tsan); a
     * seq_cst read-modify-write is what it understands. */
    atomic_fetch_add(&fdg_spawn_state, 0);
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
    fdg_ept_unsole_all();
}

void fdg_spawn_end(void)
{
    atomic_fetch_sub(&fdg_spawn_state, 1);
}

void fdg_spawn_after_fork(void)
{
    uint64_t s = atomic_load(&fdg_spawn_state);
    atomic_store(&fdg_spawn_state, (s & ~IN_PROGRESS) + (UINT64_C(1) << 32));
}

/* A spawn whose child shares this thread's memory and TLS while the thread
 * is suspended. */
struct bracket {
    unsigned char vfork;
};

static struct bracket enter(bool shares_tls)
{
    struct bracket b = {fdg_in_vfork};
    fdg_spawn_begin();
    if (shares_tls) fdg_in_vfork = 1;
    return b;
}

static void leave(struct bracket b)
{
    int saved = errno;
    fdg_in_vfork = b.vfork;
    fdg_spawn_end();
    errno = saved;
}

EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    if (!fdg_active()) return fdg_next.posix_spawn(pid, path, fa, attr, argv, envp);
    struct bracket b = enter(true);
    int r = fdg_next.posix_spawn(pid, path, fa, attr, argv, envp);
    leave(b);
    return r;
}

EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                        const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    if (!fdg_active()) return fdg_next.posix_spawnp(pid, file, fa, attr, argv, envp);
    struct bracket b = enter(true);
    int r = fdg_next.posix_spawnp(pid, file, fa, attr, argv, envp);
    leave(b);
    return r;
}

/* system and popen wait (or return) while their child runs on its own; the
 * thread is not suspended in between, so it is not marked. */
EXPORT int system(const char *command)
{
    if (!fdg_active()) return fdg_next.system(command);
    struct bracket b = enter(false);
    int r = fdg_next.system(command);
    leave(b);
    return r;
}

EXPORT FILE *popen(const char *command, const char *mode)
{
    if (!fdg_active()) return fdg_next.popen(command, mode);
    struct bracket b = enter(false);
    FILE *f = fdg_next.popen(command, mode);
    leave(b);
    return f;
}

/* glibc's clone takes the parent tid, the TLS and the child tid as variadic
 * arguments and reads all three whatever the flags; so do we. */
EXPORT int clone(int (*fn)(void *), void *stack, int flags, void *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    pid_t *ptid = va_arg(ap, pid_t *);
    void *tls = va_arg(ap, void *);
    pid_t *ctid = va_arg(ap, pid_t *);
    va_end(ap);
    if (!fdg_active() || (flags & CLONE_FILES))
        return fdg_next.clone(fn, stack, flags, arg, ptid, tls, ctid);
    /* A child in our memory with a table of its own: while we are suspended
     * (CLONE_VFORK) and it runs on our TLS, the mark tells it; otherwise
     * only its pid does, from now on (owner.c). */
    bool vfork_like = (flags & CLONE_VM) && (flags & CLONE_VFORK) && !(flags & CLONE_SETTLS);
    if ((flags & CLONE_VM) && !vfork_like) atomic_store(&fdg_owner_by_pid, true);
    struct bracket b = enter(vfork_like);
    int r = fdg_next.clone(fn, stack, flags, arg, ptid, tls, ctid);
    leave(b);
    return r;
}

/* _Fork runs no fork handlers: the child never acts on what it inherited
 * (owner.c); the parent's descriptions are shared from now on. */
pid_t _Fork(void); /* glibc 2.34 declares it */

EXPORT pid_t _Fork(void)
{
    if (!fdg_active() || !fdg_next.fork_) {
        if (fdg_next.fork_) return fdg_next.fork_();
        errno = ENOSYS;
        return -1;
    }
    struct bracket b = enter(false);
    pid_t r = fdg_next.fork_();
    if (r != 0) leave(b);
    return r;
}
