/* Sole descriptions: a close that drops the last reference to an open file
 * description needs no EPOLL_CTL_DEL, since the kernel removes its
 * registrations itself (eventpoll_release, when the file is released). That
 * is the common case of a server closing a client it accepted.
 *
 * A descriptor is marked sole (FDG_EPT_SOLE) when an accept the shim wrapped
 * returns it: the kernel made a new description with one reference. The
 * mark goes when the description may get another: a dup of any kind through
 * our wrappers (close.c), a child or a thread with a copy of the table
 * (spawn.c), a send with SCM_RIGHTS (here, after the send: a close that
 * races the send in another thread is the program's race). A mark carries
 * the epoch, so a fork child never believes its parent's. Whatever else
 * could take a reference is beyond the shim's sight (a raw system call,
 * io_uring, another process's pidfd_getfd): README, Limits. */
#include "fdguard.h"

#include <errno.h>

#define EXPORT __attribute__((visibility("default")))

void fdg_sole_mark(int fd, uint64_t state)
{
    /* A spawn in progress may be copying the table right now. */
    if ((uint32_t)state || !fdg_cfg.epoll || fd < 0) return;
    /* No mapping on the accept path: a number whose chunk was never written
     * is simply not marked. */
    _Atomic uint64_t *s = fdg_ept_slot((unsigned)fd, false);
    /* A word that is not clean holds what a close behind our back (a raw
     * system call) left under this number: leave it. */
    if (!s || atomic_load_explicit(s, memory_order_relaxed) || !fdg_table_owner()) return;
    uint64_t epoch =
        (atomic_load_explicit(&fdg_epoch, memory_order_relaxed) << FDG_EPT_EPOCH_SHIFT) &
        FDG_EPT_EPOCH_MASK;
    fdg_ept_slot((unsigned)fd, true); /* the walks reach it (no mapping: the chunk exists) */
    atomic_store(s, FDG_EPT_SOLE | epoch);
    if (atomic_load(&fdg_spawn_state) != state) atomic_fetch_and(s, ~FDG_EPT_SOLE);
}

void fdg_sole_sent(const struct msghdr *msg)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char *data = CMSG_DATA(c);
        for (size_t i = 0; i < n; i++) {
            int fd;
            __builtin_memcpy(&fd, data + i * sizeof fd, sizeof fd);
            if (fd >= 0 && (fdg_ept_word((unsigned)fd) & FDG_EPT_SOLE)) fdg_ept_duplicating(fd);
        }
    }
}

/* The kernel has read the message when the send succeeded: reading it again
 * is safe then (before, a bad pointer would fault here instead of failing
 * with EFAULT). */
EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    ssize_t r = fdg_next.sendmsg(fd, msg, flags);
    if (r >= 0 && msg->msg_controllen) {
        int saved = errno;
        fdg_sole_sent(msg);
        errno = saved;
    }
    return r;
}

EXPORT int sendmmsg(int fd, struct mmsghdr *vec, unsigned int n, int flags)
{
    int r = fdg_next.sendmmsg(fd, vec, n, flags);
    if (r > 0) {
        int saved = errno;
        for (int i = 0; i < r; i++)
            if (vec[i].msg_hdr.msg_controllen) fdg_sole_sent(&vec[i].msg_hdr);
        errno = saved;
    }
    return r;
}
