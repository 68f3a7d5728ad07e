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

static inline void one_closing(int fd)
{
    if (FDG_LIKELY(fdg_active()) && fd >= 0) fdg_fd_closing((unsigned)fd);
}

static void range_closing(unsigned lo, unsigned hi)
{
    if (!fdg_active() || lo > hi) return;
    fdg_owned_closing(lo, hi);
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

static inline void replacing(int oldfd, int newfd, int flags)
{
    if (FDG_LIKELY(fdg_active()) && newfd >= 0 && FDG_UNLIKELY(fdg_fd_tracked((unsigned)newfd)) &&
        replaces(oldfd, newfd, flags))
        fdg_fd_closing((unsigned)newfd);
}

/* Out of line: the errno it keeps would cost every dup a register. */
__attribute__((noinline)) static void instance_duplicated(int oldfd, int newfd)
{
    int saved = errno; /* a new chunk of the table is an mmap */
    fdg_ept_duplicated(oldfd, newfd);
    errno = saved;
}

/* An epoll fd duplicated: the new number names the same instance. */
static inline int duplicated(int oldfd, int newfd)
{
    if (newfd >= 0 && oldfd != newfd && FDG_LIKELY(fdg_active()) &&
        FDG_UNLIKELY(fdg_ept_word((unsigned)oldfd) & FDG_EPT_IS_INSTANCE))
        instance_duplicated(oldfd, newfd);
    return newfd;
}

EXPORT int close(int fd)
{
    one_closing(fd);
    return fdg_next.close(fd);
}

EXPORT int dup2(int oldfd, int newfd)
{
    replacing(oldfd, newfd, 0);
    return duplicated(oldfd, fdg_next.dup2(oldfd, newfd));
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
    replacing(oldfd, newfd, flags);
    return duplicated(oldfd, fdg_next.dup3(oldfd, newfd, flags));
}

EXPORT int dup(int oldfd)
{
    return duplicated(oldfd, fdg_next.dup(oldfd));
}

static int guarded_fcntl(int (*next)(int, int, ...), int fd, int cmd, va_list ap)
{
    /* The argument is an int or a pointer; glibc reads it as a pointer. */
    void *arg = va_arg(ap, void *);
    int r = next(fd, cmd, arg);
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) duplicated(fd, r);
    return r;
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
    int r = fdg_next.close_range(lo, hi, flags);
    if (unshared && r == 0) fdg_private_table = true;
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
