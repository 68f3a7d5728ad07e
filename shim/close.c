/* The close family: close, dup2, dup3, close_range, closefrom.
 *
 * Before a descriptor number is closed or replaced, the shim forgets it if it
 * was one of its own. This path runs on every close, in signal handlers and
 * between fork and exec: no lock, no allocation, no extra syscall unless the
 * number is ours. errno is whatever the real call left. */
#include "fdguard.h"

#include <linux/close_range.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

EXPORT int close(int fd)
{
    if (FDG_LIKELY(fdg_active()) && fd >= 0) fdg_owned_closing((unsigned)fd, (unsigned)fd);
    return fdg_next.close(fd);
}

EXPORT int dup2(int oldfd, int newfd)
{
    /* dup2(fd, fd) closes nothing. */
    if (FDG_LIKELY(fdg_active()) && newfd >= 0 && oldfd != newfd)
        fdg_owned_closing((unsigned)newfd, (unsigned)newfd);
    return fdg_next.dup2(oldfd, newfd);
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
    if (FDG_LIKELY(fdg_active()) && newfd >= 0 && oldfd != newfd)
        fdg_owned_closing((unsigned)newfd, (unsigned)newfd);
    return fdg_next.dup3(oldfd, newfd, flags);
}

EXPORT int close_range(unsigned int lo, unsigned int hi, int flags)
{
    /* CLOSE_RANGE_CLOEXEC only marks; ours are close-on-exec already. */
    if (FDG_LIKELY(fdg_active()) && !(flags & CLOSE_RANGE_CLOEXEC) && lo <= hi)
        fdg_owned_closing(lo, hi);
    return fdg_next.close_range(lo, hi, flags);
}

EXPORT void closefrom(int lo)
{
    if (FDG_LIKELY(fdg_active())) fdg_owned_closing(lo < 0 ? 0 : (unsigned)lo, ~0U);
    fdg_next.closefrom(lo);
}
