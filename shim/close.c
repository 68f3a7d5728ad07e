/* The close and dup family: close, dup2, dup3, close_range, closefrom,
 * fclose, and dup/fcntl(F_DUPFD) for the epoll fds they duplicate.
 *
 * Before a descriptor number is closed or replaced: EPOLL_CTL_DEL wherever
 * this process registered it (epoll_table.c), and forget it if it was one of
 * the shim's own. This path runs on every close, in signal handlers and
 * between fork and exec: no lock, no allocation, no syscall unless the number
 * is registered or ours. errno is whatever the real call left. */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* The fast path: one load of the number's word (epoll_table.c), a compare
 * and a tail jump. Nothing is recorded before initialisation (nor ever with
 * FDGUARD=off), so an untracked word needs no initialisation check: the call
 * goes straight through (to the raw system call, until binding). */
static inline bool untracked(int fd)
{
    return (unsigned)fd < FDG_EPT_FLAT &&
           !atomic_load_explicit(&fdg_ept_flat[(unsigned)fd], memory_order_relaxed);
}

/* Both: one compare covers both numbers, FDG_EPT_FLAT being a power of two. */
static inline bool both_untracked(int a, int b)
{
    return ((unsigned)a | (unsigned)b) < FDG_EPT_FLAT &&
           !(atomic_load_explicit(&fdg_ept_flat[(unsigned)a], memory_order_relaxed) |
             atomic_load_explicit(&fdg_ept_flat[(unsigned)b], memory_order_relaxed));
}

static void range_closing(unsigned lo, unsigned hi)
{
    if (!fdg_active() || lo > hi) return;
    fdg_ept_closing_range(lo, hi);
}

/* Will dup2/dup3(oldfd, newfd, flags) take newfd's description away? A call
 * that fails closes nothing, and its registrations must survive; so must
 * they when oldfd names the very description newfd names (restoring a number
 * from a saved dup): epoll keys a registration by description and number,
 * and both stay. Checked only for a tracked newfd. */
static bool replaces(int oldfd, int newfd, int flags)
{
    if (oldfd == newfd || newfd < 0 || (flags & ~O_CLOEXEC)) return false;
    int saved = errno;
    struct rlimit rl;
    bool ok = fdg_raw_fcntl(oldfd, F_GETFD, 0) >= 0 &&
              (getrlimit(RLIMIT_NOFILE, &rl) != 0 || (rlim_t)newfd < rl.rlim_cur) &&
              !fdg_same_description(oldfd, newfd);
    errno = saved;
    return ok;
}

/* Before a dup of oldfd: its description gets another reference. */
static inline void duplicating(int oldfd)
{
    if (oldfd >= 0 && (fdg_ept_word((unsigned)oldfd) & FDG_EPT_SOLE)) fdg_ept_duplicating(oldfd);
}

/* An epoll fd duplicated: the new number names the same instance. */
static int duplicated(int oldfd, int newfd)
{
    if (newfd >= 0 && oldfd != newfd && (fdg_ept_word((unsigned)oldfd) & FDG_EPT_IS_INSTANCE)) {
        int saved = errno; /* a new chunk of the table is an mmap */
        fdg_ept_duplicated(oldfd, newfd);
        errno = saved;
    }
    return newfd;
}

/* The slow paths: a tracked number, one out of the static table's range,
 * or a negative one. */
__attribute__((noinline)) static int close_slow(int fd)
{
    if (FDG_LIKELY(fdg_active()) && fd >= 0) fdg_fd_closing((unsigned)fd);
    return fdg_next.close(fd);
}

__attribute__((noinline)) static int dup23_slow(int oldfd, int newfd, int flags, bool three)
{
    if (FDG_LIKELY(fdg_active())) {
        if (newfd >= 0 && fdg_ept_word((unsigned)newfd) && replaces(oldfd, newfd, flags))
            fdg_fd_closing((unsigned)newfd);
        if (oldfd != newfd) duplicating(oldfd);
        int r = three ? fdg_next.dup3(oldfd, newfd, flags) : fdg_next.dup2(oldfd, newfd);
        return duplicated(oldfd, r);
    }
    return three ? fdg_next.dup3(oldfd, newfd, flags) : fdg_next.dup2(oldfd, newfd);
}

__attribute__((noinline)) static int dup_slow(int oldfd)
{
    if (!fdg_active()) return fdg_next.dup(oldfd);
    duplicating(oldfd);
    return duplicated(oldfd, fdg_next.dup(oldfd));
}

EXPORT int close(int fd)
{
    if (FDG_LIKELY(untracked(fd))) return fdg_next.close(fd);
    return close_slow(fd);
}

EXPORT int dup2(int oldfd, int newfd)
{
    if (FDG_LIKELY(both_untracked(oldfd, newfd))) return fdg_next.dup2(oldfd, newfd);
    return dup23_slow(oldfd, newfd, 0, false);
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
    if (FDG_LIKELY(both_untracked(oldfd, newfd))) return fdg_next.dup3(oldfd, newfd, flags);
    return dup23_slow(oldfd, newfd, flags, true);
}

EXPORT int dup(int oldfd)
{
    if (FDG_LIKELY(untracked(oldfd))) return fdg_next.dup(oldfd);
    return dup_slow(oldfd);
}

static int guarded_fcntl(int (*next)(int, int, ...), int fd, int cmd, va_list ap)
{
    /* The argument is an int or a pointer; glibc reads it as a pointer. */
    void *arg = va_arg(ap, void *);
    if ((cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC) || untracked(fd) || !fdg_active())
        return next(fd, cmd, arg);
    duplicating(fd);
    return duplicated(fd, next(fd, cmd, arg));
}

EXPORT int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    int r = guarded_fcntl(fdg_next.fcntl, fd, cmd, ap);
    va_end(ap);
    return r;
}

EXPORT int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    int r = guarded_fcntl(fdg_next.fcntl64 ? fdg_next.fcntl64 : fdg_next.fcntl, fd, cmd, ap);
    va_end(ap);
    return r;
}

EXPORT int close_range(unsigned int lo, unsigned int hi, int flags)
{
    /* CLOSE_RANGE_CLOEXEC only marks for exec, and exec drops the table; an
     * unknown flag fails and closes nothing. CLOSE_RANGE_UNSHARE first gives
     * the thread its own copy of the table if another thread shares it: the
     * close then takes nothing away from the others (private_table.c). */
    bool unshared = false;
    if (!(flags & ~(CLOSE_RANGE_CLOEXEC | CLOSE_RANGE_UNSHARE)) && FDG_LIKELY(fdg_active())) {
        if ((flags & CLOSE_RANGE_UNSHARE) && !fdg_private_table && fdg_table_shared())
            unshared = true;
        else if (!(flags & CLOSE_RANGE_CLOEXEC))
            range_closing(lo, hi);
    }
    if (!unshared) return fdg_next.close_range(lo, hi, flags);
    /* The copy holds a reference to every description (spawn.c). */
    fdg_spawn_begin();
    int r = fdg_next.close_range(lo, hi, flags);
    /* Only the owner's thread: a vfork child runs on its parent's TLS. */
    if (r == 0 && fdg_owner_process()) fdg_private_table = true;
    int saved = errno;
    fdg_spawn_end();
    errno = saved;
    return r;
}

EXPORT void closefrom(int lo)
{
    range_closing(lo < 0 ? 0 : (unsigned)lo, ~0U);
    fdg_next.closefrom(lo);
}

/* stdio closes its descriptor internally, not through close(). A memory
 * stream (fmemopen, open_memstream) has none: fileno fails with EBADF, which
 * must not become the errno of a successful fclose. */
EXPORT int fclose(FILE *stream)
{
    if (stream && FDG_LIKELY(fdg_active())) {
        int saved = errno;
        int fd = fileno(stream);
        errno = saved;
        if (fd >= 0) fdg_fd_closing((unsigned)fd);
    }
    return fdg_next.fclose(stream);
}
