/* Logging: one line per event, prefix "fdguard[prog:pid]: ", to stderr, syslog
 * or a file. Events happen at descriptor exhaustion, inside accept loops and
 * possibly in signal handlers: formatting is ours (no stdio, no malloc), the
 * line goes out with one write(2), and a file or syslog socket is opened ahead
 * of need because it cannot be opened once descriptors run out. Each event
 * kind is rate limited separately; suppressed lines are counted and the count
 * is reported on the next line that gets through. */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BURST 5     /* lines per kind per window */
#define WINDOW_S 10 /* seconds */
#define LINE_MAX 1024

struct rate {
    _Atomic uint64_t window; /* window number: monotonic seconds / WINDOW_S */
    _Atomic unsigned lines;  /* lines printed in that window */
    _Atomic uint64_t suppressed;
};
static struct rate rates[FDG_EV_COUNT];

const char *fdg_prog_name(void)
{
    extern char *program_invocation_short_name;
    return program_invocation_short_name && *program_invocation_short_name
               ? program_invocation_short_name
               : "?";
}

static size_t put_str(char *buf, size_t cap, size_t n, const char *s)
{
    while (*s && n < cap)
        buf[n++] = *s++;
    return n;
}

static size_t put_num(char *buf, size_t cap, size_t n, unsigned long long v, bool neg,
                      unsigned base)
{
    char digits[24];
    int i = 0;
    do
        digits[i++] = "0123456789abcdef"[v % base];
    while ((v /= base) && i < (int)sizeof digits);
    if (neg && n < cap) buf[n++] = '-';
    while (i > 0 && n < cap)
        buf[n++] = digits[--i];
    return n;
}

size_t fdg_format(char *buf, size_t cap, const char *fmt, va_list ap)
{
    size_t n = 0;
    if (cap == 0) return 0;
    cap--; /* room for the terminating NUL */
    for (const char *p = fmt; *p && n < cap; p++) {
        if (*p != '%') {
            buf[n++] = *p;
            continue;
        }
        int longs = 0;
        bool size = false;
        for (p++; *p == 'l' || *p == 'z'; p++)
            *p == 'l' ? longs++ : (size = true);
        long long sv;
        unsigned long long uv;
        switch (*p) {
        case 'd':
        case 'i':
            sv = size         ? (long long)va_arg(ap, ssize_t)
                 : longs >= 2 ? va_arg(ap, long long)
                 : longs == 1 ? va_arg(ap, long)
                              : va_arg(ap, int);
            n = put_num(buf, cap, n, sv < 0 ? -(unsigned long long)sv : (unsigned long long)sv,
                        sv < 0, 10);
            break;
        case 'u':
        case 'x':
            uv = size         ? va_arg(ap, size_t)
                 : longs >= 2 ? va_arg(ap, unsigned long long)
                 : longs == 1 ? va_arg(ap, unsigned long)
                              : va_arg(ap, unsigned);
            n = put_num(buf, cap, n, uv, false, *p == 'x' ? 16 : 10);
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            n = put_str(buf, cap, n, s ? s : "(null)");
            break;
        }
        case 'c':
            buf[n++] = (char)va_arg(ap, int);
            break;
        case '%':
            buf[n++] = '%';
            break;
        default:
            n = put_str(buf, cap, n, "%?");
            if (!*p) p--;
            break;
        }
    }
    buf[n] = '\0';
    return n;
}

size_t fdg_formatf(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n = fdg_format(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

/* Keeps our descriptors out of 0..2, which daemons close and re-open
 * expecting to get those numbers back. */
static int open_log_fd(void)
{
    int fd = -1;
    if (fdg_cfg.log_target == FDG_LOG_FILE) {
        fd = open(fdg_cfg.log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    } else {
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sun = {.sun_family = AF_UNIX, .sun_path = "/dev/log"};
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
            fdg_raw_close(fd);
            fd = -1;
        }
    }
    return fdg_fd_above_stdio(fd);
}

static uint64_t monotonic_s(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    return (uint64_t)now.tv_sec;
}

void fdg_log_prepare(void)
{
    /* A destination that cannot be opened (no /dev/log, an unwritable path)
     * is tried again every few seconds, not on every accept. */
    static _Atomic uint64_t retry_at;
    if (fdg_cfg.log_target == FDG_LOG_STDERR ||
        atomic_load_explicit(&fdg_owned[FDG_OWNED_LOG], memory_order_relaxed) >= 0 ||
        monotonic_s() < atomic_load_explicit(&retry_at, memory_order_relaxed))
        return;
    int saved = errno;
    int fd = open_log_fd();
    if (fd < 0)
        atomic_store_explicit(&retry_at, monotonic_s() + WINDOW_S, memory_order_relaxed);
    else if (!fdg_owned_claim(FDG_OWNED_LOG, fd))
        fdg_raw_close(fd); /* another thread opened it first */
    errno = saved;
}

/* False when this line is over its kind's budget; *suppressed gets the count
 * of lines dropped since the last one that went out. */
static bool rate_allows(enum fdg_event kind, uint64_t *suppressed)
{
    struct rate *r = &rates[kind];
    uint64_t window = monotonic_s() / WINDOW_S;
    uint64_t seen = atomic_load_explicit(&r->window, memory_order_relaxed);
    if (seen != window &&
        atomic_compare_exchange_strong_explicit(&r->window, &seen, window, memory_order_relaxed,
                                                memory_order_relaxed))
        atomic_store_explicit(&r->lines, 0, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&r->lines, 1, memory_order_relaxed) >= BURST) {
        atomic_fetch_add_explicit(&r->suppressed, 1, memory_order_relaxed);
        fdg_count(FDG_C_log_suppressed, 1);
        return false;
    }
    *suppressed = atomic_exchange_explicit(&r->suppressed, 0, memory_order_relaxed);
    return true;
}

static void emit(enum fdg_log_level level, const char *line, size_t len)
{
    int fd = 2;
    if (fdg_cfg.log_target != FDG_LOG_STDERR) {
        /* Not in a slot the shim just freed for a connection or a load (the
         * spare is out then): that would take the room meant for the spare.
         * Until the next fdg_engage the line goes to stderr. */
        if (fdg_spare_held() || atomic_load(&fdg_state) != FDG_READY) fdg_log_prepare();
        int owned = atomic_load_explicit(&fdg_owned[FDG_OWNED_LOG], memory_order_relaxed);
        if (owned >= 0) fd = owned;
    }
    if (fd != 2 && fdg_cfg.log_target == FDG_LOG_SYSLOG) {
        /* LOG_DAEMON facility; RFC 3164 framing without a timestamp (syslogd adds it). */
        static const int severity[] = {7, 3, 4, 6, 7};
        char framed[LINE_MAX + 8];
        size_t n = fdg_formatf(framed, sizeof framed, "<%d>", 24 + severity[level]);
        memcpy(framed + n, line, len - 1); /* without the newline */
        if (send(fd, framed, n + len - 1, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) return;
        fd = 2;
    }
    while (len > 0) {
        ssize_t w = write(fd, line, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        line += w;
        len -= (size_t)w;
    }
}

void fdg_logf(enum fdg_log_level level, enum fdg_event kind, const char *fmt, ...)
{
    if (level > fdg_cfg.log_level || level == FDG_LVL_QUIET) return;
    uint64_t suppressed = 0;
    if (!rate_allows(kind, &suppressed)) return;
    int saved = errno;
    char line[LINE_MAX];
    size_t n = fdg_formatf(line, sizeof line, "fdguard[%s:%d]: ", fdg_prog_name(), (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    n += fdg_format(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    if (suppressed)
        n += fdg_formatf(line + n, sizeof line - n, " (%llu similar lines suppressed)",
                         (unsigned long long)suppressed);
    if (n > sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    emit(level, line, n);
    errno = saved;
}
