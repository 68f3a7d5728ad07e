/* Every write the shim makes into a destination the host may share or watch:
 * fd 2, the log file, the syslog socket, the stats file, IPC registry
 * entries. Such a write must neither raise a signal nor wait.
 *
 * Signals whose default action would end or stop the host:
 *   SIGPIPE  a pipe or FIFO whose reader is gone (sockets: MSG_NOSIGNAL);
 *   SIGXFSZ  a regular file at RLIMIT_FSIZE (the kernel raises it instead of
 *            writing past the limit; the default action dumps core);
 *   SIGTTOU  a terminal written by a background job while TOSTOP is set
 *            (the default action stops the process).
 * The three are blocked on this thread for the call, and one the call raised
 * (not pending before it) is taken back with sigtimedwait before they are
 * unblocked, so the host never sees it; one that was pending already is not
 * ours and stays. With SIGTTOU blocked the kernel lets a background job's
 * write through, which is what TOSTOP asks to prevent: a background job
 * writes nothing to its terminal instead.
 *
 * Waits: a pipe is written with RWF_NOWAIT (full: the write fails), a socket
 * with MSG_DONTWAIT, a terminal or other device only when poll says it takes
 * output now (a terminal stopped by XOFF does not: its write would sleep
 * until XON). A regular file never waits for a reader. Anything else (a
 * block device, a directory) is not written.
 *
 * Everything here is async-signal-safe: lines are logged from signal
 * handlers and between fork and exec. */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <termios.h>

static const int held_back[] = {SIGPIPE, SIGXFSZ, SIGTTOU};
#define NHELD (sizeof held_back / sizeof *held_back)

struct hold {
    sigset_t old;
    bool was_pending[NHELD];
};

static bool hold_signals(struct hold *h)
{
    sigset_t set, pending;
    sigemptyset(&set);
    for (size_t i = 0; i < NHELD; i++)
        sigaddset(&set, held_back[i]);
    if (pthread_sigmask(SIG_BLOCK, &set, &h->old) != 0) return false;
    bool known = sigpending(&pending) == 0;
    for (size_t i = 0; i < NHELD; i++)
        h->was_pending[i] = !known || sigismember(&pending, held_back[i]);
    return true;
}

static void release_signals(struct hold *h)
{
    int saved = errno;
    sigset_t pending;
    if (sigpending(&pending) == 0) {
        for (size_t i = 0; i < NHELD; i++) {
            if (h->was_pending[i] || !sigismember(&pending, held_back[i])) continue;
            sigset_t one;
            sigemptyset(&one);
            sigaddset(&one, held_back[i]);
            static const struct timespec zero;
            sigtimedwait(&one, NULL, &zero);
        }
    }
    pthread_sigmask(SIG_SETMASK, &h->old, NULL);
    errno = saved;
}

/* A line is at most 1 KiB, below PIPE_BUF: written whole or not at all. */
static ssize_t write_pipe(int fd, const void *buf, size_t len)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    ssize_t w = pwritev2(fd, &iov, 1, -1, RWF_NOWAIT);
    if (w >= 0 || errno != EOPNOTSUPP) return w;
    /* A kernel without RWF_NOWAIT on pipes: write only if it takes the line
     * without waiting (non-blocking, or room for it now). */
    int used = 0, size = (int)fdg_raw_fcntl(fd, F_GETPIPE_SZ, 0);
    int fl = (int)fdg_raw_fcntl(fd, F_GETFL, 0);
    if ((fl >= 0 && (fl & O_NONBLOCK)) ||
        (size > 0 && ioctl(fd, FIONREAD, &used) == 0 && used + (int)len + PIPE_BUF <= size))
        return write(fd, buf, len);
    errno = EAGAIN;
    return -1;
}

/* A background job of this terminal while TOSTOP is set (a terminal that
 * is not our controlling one has no foreground group for us: ENOTTY). */
static bool background_job(int fd)
{
    struct termios t;
    if (tcgetattr(fd, &t) != 0 || !(t.c_lflag & TOSTOP)) return false;
    pid_t fg = tcgetpgrp(fd);
    return fg > 0 && fg != getpgrp();
}

static bool takes_output_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int n;
    while ((n = poll(&p, 1, 0)) < 0 && errno == EINTR)
        ;
    return n == 1 && (p.revents & POLLOUT) && !(p.revents & (POLLERR | POLLHUP | POLLNVAL));
}

static ssize_t write_device(int fd, const char *buf, size_t len)
{
    if (background_job(fd)) {
        errno = EAGAIN;
        return -1;
    }
    size_t done = 0;
    while (done < len && takes_output_now(fd)) {
        ssize_t w = write(fd, buf + done, len - done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        done += (size_t)w;
    }
    if (done) return (ssize_t)done;
    if (errno == 0) errno = EAGAIN;
    return -1;
}

/* off < 0: at the file position (or appended, O_APPEND). */
static ssize_t write_file(int fd, const char *buf, size_t len, off_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t w = off < 0 ? write(fd, buf + done, len - done)
                            : pwrite(fd, buf + done, len - done, off + (off_t)done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        done += (size_t)w;
    }
    return done ? (ssize_t)done : -1;
}

ssize_t fdg_safe_write(int fd, const void *buf, size_t len, off_t off)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    if (S_ISSOCK(st.st_mode)) return send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode)) {
        errno = EINVAL;
        return -1;
    }
    struct hold h;
    if (!hold_signals(&h)) return -1;
    errno = 0;
    ssize_t w = S_ISFIFO(st.st_mode)  ? write_pipe(fd, buf, len)
                : S_ISCHR(st.st_mode) ? write_device(fd, buf, len)
                                      : write_file(fd, buf, len, off);
    release_signals(&h);
    return w;
}
