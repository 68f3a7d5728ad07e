/* Small utilities shared by the test helper programs (srv, flood).
 *
 * Everything here is static inline so that a helper that uses only part of it
 * still compiles cleanly under -Wall -Wextra -Werror. */
#ifndef FDG_HELPERS_COMMON_H
#define FDG_HELPERS_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Monotonic time in milliseconds, fractional: latencies are sub-millisecond on
 * loopback, so integer milliseconds would hide what the tests measure. */
static inline double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Lowers the soft descriptor limit to the numbers in use (0..n-1 open, n
 * the first free): the next descriptor the process makes fails with
 * EMFILE. */
static inline bool limit_to_open(void)
{
    int n = 0;
    while (fcntl(n, F_GETFD) != -1)
        n++;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
    rl.rlim_cur = (rlim_t)n;
    return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

/* Parses a whole decimal string into [min, max]; rejects junk, signs out of
 * range and empty strings so that usage errors are caught, not truncated. */
static inline bool parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0') return false;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) return false;
    *out = v;
    return true;
}

/* Writes all of buf, retrying short writes and EINTR. Returns false on error. */
static inline bool write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* /proc/self/task/TID/syscall of one of our threads, opened now: a process
 * about to fill its descriptor table opens it beforehand. -1 on failure. */
static inline int open_task_syscall(pid_t tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    return open(path, O_RDONLY | O_CLOEXEC);
}

/* The thread whose syscall file is fd sleeps in a call that waits for a
 * client: accept or accept4 (the real call), poll or ppoll (the shim's wait
 * inside accept). A running thread reads "running". */
static inline bool waiting_for_client(int fd)
{
    char buf[128];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return false;
    buf[n] = '\0';
    char *end;
    long nr = strtol(buf, &end, 10);
    if (end == buf) return false;
    return
#ifdef SYS_accept
        nr == SYS_accept ||
#endif
#ifdef SYS_poll
        nr == SYS_poll ||
#endif
        nr == SYS_accept4 || nr == SYS_ppoll;
}

#endif
