/* The close family: close, dup2, dup3, close_range, closefrom, fclose.
 *
 * Before a descriptor number is closed or replaced: EPOLL_CTL_DEL wherever
 * this process registered it (epoll_table.c), and forget it if it was one of
 * the shim's own. This path runs on every close, in signal handlers and
 * between fork and exec: no lock, no allocation, no syscall unless the number
 * is registered or ours. errno is whatever the real call left. */
#include "fdguard.h"

#include <linux/close_range.h>
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
    if (fdg_cfg.epoll) fdg_ept_closing_range(lo, hi);
}

EXPORT int close(int fd)
{
    one_closing(fd);
    return fdg_next.close(fd);
}

EXPORT int dup2(int oldfd, int newfd)
{
    /* dup2(fd, fd) closes nothing. */
    if (oldfd != newfd) one_closing(newfd);
    return fdg_next.dup2(oldfd, newfd);
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
    if (oldfd != newfd) one_closing(newfd);
    return fdg_next.dup3(oldfd, newfd, flags);
}

EXPORT int close_range(unsigned int lo, unsigned int hi, int flags)
{
    /* CLOSE_RANGE_CLOEXEC only marks for exec, and exec drops the table. */
    if (!(flags & CLOSE_RANGE_CLOEXEC)) range_closing(lo, hi);
    return fdg_next.close_range(lo, hi, flags);
}

EXPORT void closefrom(int lo)
{
    range_closing(lo < 0 ? 0 : (unsigned)lo, ~0U);
    fdg_next.closefrom(lo);
}

/* stdio closes its descriptor internally, not through close(). */
EXPORT int fclose(FILE *stream)
{
    if (stream) one_closing(fileno(stream));
    return fdg_next.fclose(stream);
}
