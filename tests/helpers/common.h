/* Small utilities shared by the test helper programs (srv, flood).
 *
 * Everything here is static inline so that a helper that uses only part of it
 * still compiles cleanly under -Wall -Wextra -Werror. */
#ifndef FDG_HELPERS_COMMON_H
#define FDG_HELPERS_COMMON_H

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

#endif
