/* epoll_create, epoll_create1, epoll_ctl: feed the registration table, and
 * the opt-in EPOLLEXCLUSIVE for listening sockets. epoll_wait, epoll_pwait,
 * epoll_pwait2: note, once per instance, that this process waits on it (the
 * fork rule, epoll_fork.c); otherwise a load, a branch and a tail call, so
 * errno, cancellation and the signal mask are the real call's own.
 *
 * With several threads each waiting on its own epoll set for one listener,
 * every connection wakes them all (the thundering herd); EPOLLEXCLUSIVE wakes
 * one. The kernel refuses EPOLL_CTL_MOD on such a registration (EINVAL), so
 * for registrations we made exclusive, MOD is done as DEL + ADD. */
#include "fdguard.h"

#include <errno.h>

#define EXPORT __attribute__((visibility("default")))

/* What the kernel accepts together with EPOLLEXCLUSIVE (fs/eventpoll.c,
 * EPOLLEXCLUSIVE_OK_BITS). */
#define EXCLUSIVE_OK                                                                               \
    (EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLWAKEUP | EPOLLET | EPOLLEXCLUSIVE)

static bool is_listener(int fd)
{
    int on = 0;
    socklen_t len = sizeof on;
    int saved = errno;
    bool listening = getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on;
    errno = saved;
    return listening;
}

static bool hygiene(void)
{
    return fdg_active() && fdg_cfg.epoll;
}

static int created(int epfd)
{
    if (epfd >= 0) {
        int saved = errno; /* a new chunk of the table is an mmap */
        if (hygiene() && fdg_table_owner()) fdg_ept_instance_created(epfd);
        errno = saved;
    }
    return epfd;
}

EXPORT int epoll_create(int size)
{
    return created(fdg_next.epoll_create(size));
}

EXPORT int epoll_create1(int flags)
{
    return created(fdg_next.epoll_create1(flags));
}

/* ev (the caller's, read into *copy) on a listener, with nothing the kernel
 * refuses beside EPOLLEXCLUSIVE, in an instance we can record. */
static bool exclusive_wanted(int epfd, int fd, const struct epoll_event *copy)
{
    if ((copy->events & ~EXCLUSIVE_OK) || !is_listener(fd)) return false;
    int saved = errno;
    bool ok = fdg_table_owner() && fdg_ept_recordable(epfd, fd);
    errno = saved;
    return ok;
}

/* A successful ADD or MOD: in an instance this fork child inherited, a use. */
static int changed(int r, int epfd)
{
    if (r == 0 && FDG_UNLIKELY(atomic_load_explicit(&fdg_ept_inherited, memory_order_relaxed) &
                               ~FDG_EPT_MODWATCH_EXCL))
        fdg_ept_using(epfd);
    return r;
}

/* ADD of ev with FDGUARD_EPOLLEXCLUSIVE=on; copy: what ev held when read
 * (NULL: not read, the call is the program's own). */
static int add_exclusive(int epfd, int fd, struct epoll_event *ev, const struct epoll_event *copy)
{
    bool exclusive = copy && exclusive_wanted(epfd, fd, copy);
    int r;
    if (exclusive) {
        int saved = errno;
        struct epoll_event xev = *copy;
        xev.events |= EPOLLEXCLUSIVE;
        r = fdg_next.epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &xev);
        if (r < 0 && errno == EINVAL) { /* nested epoll, or a kernel before 4.5 */
            exclusive = false;
            errno = saved; /* the program's call decides */
        } else if (r == 0 && !(copy->events & EPOLLEXCLUSIVE)) {
            fdg_count(FDG_C_epoll_exclusive, 1);
            /* From now on MOD looks at the fd's word. */
            atomic_fetch_or(&fdg_ept_inherited, FDG_EPT_MODWATCH_EXCL);
        }
    }
    if (!exclusive) r = fdg_next.epoll_ctl(epfd, EPOLL_CTL_ADD, fd, ev);
    /* Recorded for hygiene, and for MOD of a registration we made exclusive. */
    bool ours_exclusive = exclusive && !(copy->events & EPOLLEXCLUSIVE);
    if (r == 0 && (fdg_cfg.epoll || ours_exclusive)) {
        if (fdg_table_owner()) fdg_ept_added(epfd, fd, ours_exclusive);
        fdg_engage_once(); /* a registration we record engages the process */
    }
    return changed(r, epfd);
}

/* The program's ADD with FDGUARD_EPOLLEXCLUSIVE=on. Its event is read only
 * for a listener, and through the kernel: a pointer the kernel refuses goes
 * to the real call as it is, which returns EFAULT. Where that read is
 * refused (seccomp), the registration stays the program's own. */
__attribute__((noinline, cold)) static int add_listener(int epfd, int fd, struct epoll_event *ev)
{
    struct epoll_event copy;
    /* Read as the kernel reads it: a pointer it refuses (EFAULT) faults nothing. */
    bool read = ev && is_listener(fd) && fdg_read_self(ev, &copy, sizeof copy) > 0;
    return add_exclusive(epfd, fd, ev, read ? &copy : NULL);
}

/* Recording keeps errno: whatever could change it (a mapping, the log)
 * saves it where it happens. */
static int add(int epfd, int fd, struct epoll_event *ev)
{
    if (FDG_UNLIKELY(fdg_cfg.epollexclusive)) return add_listener(epfd, fd, ev);
    int r = fdg_next.epoll_ctl(epfd, EPOLL_CTL_ADD, fd, ev);
    if (r == 0 && fdg_cfg.epoll) {
        if (fdg_table_owner()) fdg_ept_added(epfd, fd, false);
        fdg_engage_once(); /* a registration we record engages the process */
    }
    return changed(r, epfd);
}

/* MOD where we made the fd's registration exclusive (in some instance). The
 * real MOD first: the kernel reads ev before anything else (EFAULT, nothing
 * changed), and refuses MOD of an exclusive registration with EINVAL. Only
 * then, ev known readable, is it done as DEL + ADD; an event that asks for
 * EPOLLEXCLUSIVE itself keeps the kernel's EINVAL. */
__attribute__((noinline, cold)) static int modify_exclusive(int epfd, int fd,
                                                            struct epoll_event *ev)
{
    int saved = errno;
    int r = fdg_next.epoll_ctl(epfd, EPOLL_CTL_MOD, fd, ev);
    if (r == 0 || errno != EINVAL) return changed(r, epfd);
    struct epoll_event copy = *ev;
    if (copy.events & EPOLLEXCLUSIVE) return r;
    errno = saved;
    r = fdg_next.epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    if (r < 0) return r;
    fdg_ept_removed(epfd, fd);
    fdg_count(FDG_C_epoll_mod_emulated, 1);
    return add_exclusive(epfd, fd, ev, &copy);
}

/* Everything but the common MOD. */
__attribute__((noinline)) static int epoll_ctl_slow(int epfd, int op, int fd,
                                                    struct epoll_event *ev)
{
    if (!fdg_active() || fd < 0 || epfd < 0) return fdg_next.epoll_ctl(epfd, op, fd, ev);
    switch (op) {
    case EPOLL_CTL_ADD:
        return add(epfd, fd, ev);
    case EPOLL_CTL_MOD:
        if (ev && FDG_UNLIKELY(fdg_ept_word((unsigned)fd) & FDG_EPT_EXCLUSIVE)) {
            int saved = errno;
            bool ours = fdg_table_owner();
            errno = saved;
            if (ours) return modify_exclusive(epfd, fd, ev);
        }
        return changed(fdg_next.epoll_ctl(epfd, op, fd, ev), epfd);
    case EPOLL_CTL_DEL: {
        int r = fdg_next.epoll_ctl(epfd, op, fd, ev);
        /* Success, or the kernel has no such registration: forget ours. */
        if ((r == 0 || errno == ENOENT) && fdg_ept_word((unsigned)fd) && fdg_table_owner())
            fdg_ept_removed(epfd, fd);
        return r;
    }
    default:
        return fdg_next.epoll_ctl(epfd, op, fd, ev);
    }
}

/* MOD changes nothing we record: one load (no exclusive registration of
 * ours anywhere, no inherited instance unused) and a tail jump. */
EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    if (FDG_LIKELY(op == EPOLL_CTL_MOD) &&
        FDG_LIKELY(!atomic_load_explicit(&fdg_ept_inherited, memory_order_relaxed)))
        return fdg_next.epoll_ctl(epfd, op, fd, ev);
    return epoll_ctl_slow(epfd, op, fd, ev);
}

/* The wait family: one load and a tail jump once every instance the process
 * registered in has been waited on; the note, out of line, until then. */
static inline bool watching(void)
{
    return atomic_load_explicit(&fdg_ept_waitwatch, memory_order_relaxed) != 0;
}

__attribute__((noinline)) static int epoll_wait_slow(int epfd, struct epoll_event *ev, int max,
                                                     int timeout)
{
    fdg_ept_wait_watch(epfd);
    return fdg_next.epoll_wait(epfd, ev, max, timeout);
}

__attribute__((noinline)) static int epoll_pwait_slow(int epfd, struct epoll_event *ev, int max,
                                                      int timeout, const sigset_t *mask)
{
    fdg_ept_wait_watch(epfd);
    return fdg_next.epoll_pwait(epfd, ev, max, timeout, mask);
}

__attribute__((noinline)) static int epoll_pwait2_slow(int epfd, struct epoll_event *ev, int max,
                                                       const struct timespec *timeout,
                                                       const sigset_t *mask)
{
    fdg_ept_wait_watch(epfd);
    return fdg_next.epoll_pwait2(epfd, ev, max, timeout, mask);
}

EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout)
{
    if (FDG_LIKELY(!watching())) return fdg_next.epoll_wait(epfd, ev, max, timeout);
    return epoll_wait_slow(epfd, ev, max, timeout);
}

EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max, int timeout, const sigset_t *mask)
{
    if (FDG_LIKELY(!watching())) return fdg_next.epoll_pwait(epfd, ev, max, timeout, mask);
    return epoll_pwait_slow(epfd, ev, max, timeout, mask);
}

EXPORT int epoll_pwait2(int epfd, struct epoll_event *ev, int max, const struct timespec *timeout,
                        const sigset_t *mask)
{
    if (FDG_LIKELY(!watching())) return fdg_next.epoll_pwait2(epfd, ev, max, timeout, mask);
    return epoll_pwait2_slow(epfd, ev, max, timeout, mask);
}
