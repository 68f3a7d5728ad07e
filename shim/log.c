/* Logging: one line per event, prefix "fdguard[prog:pid]: ", to stderr, syslog
 * or a file. Events happen at descriptor exhaustion, inside accept loops and
 * possibly in signal handlers: formatting is ours (no stdio, no malloc), the
 * line goes out with one write(2), and a file or syslog socket is opened ahead
 * of need because it cannot be opened once descriptors run out. Each event
 * kind is rate limited separately; suppressed lines are counted and the count
 * is reported on the next line that gets through.
 *
 * We write into someone else's process, so a line must never hurt it:
 *   - nothing before the process engages (fdg_engage_once): lines are kept in
 *     static memory and reported then, or never (sh, ls, every child that
 *     inherits LD_PRELOAD and never needs us);
 *   - never a signal, never a wait: every line goes out through
 *     fdg_safe_write (safewrite.c: SIGPIPE, SIGXFSZ and SIGTTOU held back, a
 *     full pipe or a terminal stopped by XOFF drops the line);
 *   - never the host's data: fd 2 is written only while it is the stderr the
 *     process started with, and only if that can be a log (stderr_writable);
 *   - every string argument is escaped (%s), so a newline in a value or a
 *     program name cannot split a line or forge a field. */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BURST 5     /* lines per kind per window */
#define WINDOW_S 10 /* seconds */
#define LOG_LINE_MAX 1024
#define DEFERRED_MAX 16 /* lines kept until the process engages */

struct rate {
    _Atomic uint64_t window; /* window number: monotonic seconds / WINDOW_S */
    _Atomic unsigned lines;  /* lines printed in that window */
    _Atomic uint64_t suppressed;
};
static struct rate rates[FDG_EV_COUNT];

/* Lines logged before the process engaged: formatted (without the prefix,
 * which names the pid that finally reports them), kept here, not allocated. */
struct deferred {
    _Atomic bool ready;
    enum fdg_log_level level;
    enum fdg_event kind;
    char body[LOG_LINE_MAX];
};
static struct deferred deferred[DEFERRED_MAX];
static _Atomic unsigned deferred_count;

/* What fd 2 was when the shim initialised (fdg_log_note_stderr). */
static struct {
    bool open;
    dev_t dev;
    ino_t ino;
} stderr0;

/* Identity of the log file we opened, checked before each write: a raw
 * close by the application and a reuse of the number must not make us write
 * into its file. */
static _Atomic uint64_t log_dev, log_ino;

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

/* Bytes outside 0x20..0x7e and the backslash become \xHH; an escape is
 * written whole or not at all. */
static size_t put_escaped(char *buf, size_t cap, size_t n, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c <= 0x7e && c != '\\') {
            if (n >= cap) break;
            buf[n++] = (char)c;
            continue;
        }
        if (n + 4 > cap) break;
        buf[n++] = '\\';
        buf[n++] = 'x';
        buf[n++] = hex[c >> 4];
        buf[n++] = hex[c & 15];
    }
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
        bool size = false, raw = false;
        for (p++; *p == '-'; p++)
            raw = true;
        for (; *p == 'l' || *p == 'z'; p++)
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
            if (!s) s = "(null)";
            n = raw ? put_str(buf, cap, n, s) : put_escaped(buf, cap, n, s);
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

const char *fdg_errno_text(int err)
{
    switch (err) {
    case ENOENT:
        return "no such file or directory";
    case EACCES:
        return "permission denied";
    case EPERM:
        return "operation not permitted";
    case ENOTDIR:
        return "a path component is not a directory";
    case ELOOP:
        return "a symbolic link";
    case EEXIST:
        return "exists";
    case EISDIR:
        return "is a directory";
    case EMFILE:
        return "descriptor limit reached";
    case ENFILE:
        return "system file table full";
    case ENOSPC:
        return "no space left on device";
    case EFBIG:
        return "file size limit reached";
    case EDQUOT:
        return "disk quota exceeded";
    case EROFS:
        return "read-only file system";
    case ENXIO:
        return "no such device or address";
    case ENAMETOOLONG:
        return "name too long";
    case ENOMEM:
        return "out of memory";
    default:
        return "system error";
    }
}

void fdg_log_note_stderr(void)
{
    struct stat st;
    int saved = errno;
    stderr0.open = fstat(2, &st) == 0;
    if (stderr0.open) {
        stderr0.dev = st.st_dev;
        stderr0.ino = st.st_ino;
    }
    errno = saved;
}

/* Keeps our descriptors out of 0..2, which daemons close and re-open
 * expecting to get those numbers back. A log file is opened as every file of
 * ours is (safefile.c); *why says why not. */
static int open_log_fd(const char **why)
{
    int fd = -1;
    *why = NULL;
    if (fdg_cfg.log_target == FDG_LOG_FILE) {
        fd = fdg_safe_open(fdg_cfg.log_path, O_WRONLY | O_APPEND | O_CREAT, why);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0) {
            atomic_store(&log_dev, (uint64_t)st.st_dev);
            atomic_store(&log_ino, (uint64_t)st.st_ino);
        }
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
    static _Atomic bool refusal_reported;
    if (fdg_cfg.log_target == FDG_LOG_STDERR ||
        atomic_load_explicit(&fdg_owned[FDG_OWNED_LOG], memory_order_relaxed) >= 0 ||
        monotonic_s() < atomic_load_explicit(&retry_at, memory_order_relaxed))
        return;
    /* A vfork child (or a thread with a private table) would open it in a
     * table that is not the owner's, and arm the owner's retry timer. */
    if (!fdg_table_owner()) return;
    int saved = errno;
    /* Set first: the warning below is itself a line, whose emit() comes back
     * here and must not recurse. */
    atomic_store_explicit(&retry_at, monotonic_s() + WINDOW_S, memory_order_relaxed);
    const char *why;
    int fd = open_log_fd(&why);
    if (fd >= 0) {
        atomic_store_explicit(&retry_at, 0, memory_order_relaxed);
        if (!fdg_owned_claim(FDG_OWNED_LOG, fd)) fdg_raw_close(fd); /* another thread's won */
    } else if (why && !atomic_exchange(&refusal_reported, true)) {
        fdg_logf(FDG_LVL_WARN, FDG_EV_CONFIG,
                 "FDGUARD_LOG: cannot use the file (%-s); logging to stderr: %s", why,
                 fdg_cfg.log_path);
    }
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

/* A socket is a log only as the unnamed end of a local stream: journald's
 * stdout stream (systemd's StandardError=journal), a supervisor's socketpair
 * (libuv's stdio "pipes"). Both ends of a connection accepted from a
 * listener carry its name: that is a client's connection handed to the
 * service (inetd, systemd's Accept=yes), as is every TCP socket. */
static bool unnamed_local_stream(int fd)
{
    struct sockaddr_un sun;
    socklen_t len = sizeof sun;
    return getsockname(fd, (struct sockaddr *)&sun, &len) == 0 && sun.sun_family == AF_UNIX &&
           len <= offsetof(struct sockaddr_un, sun_path);
}

/* fd 2 is the host's stderr only while it is the file it was when the
 * process started (same device and inode): the shim cannot tell a file the
 * application put on fd 2 as its stderr from one that took the number by
 * accident (a daemon that closed stderr gets its next connection, data file
 * or pipe there; glibc's freopen redirects with an internal dup3 no wrapper
 * sees), so it writes to neither. And only if that file can be a log: a
 * pipe, a regular file, a terminal or other character device, an unnamed
 * local stream; never a client's connection (inetd gives a service its
 * client on fd 2 from the start). README, Security. */
static bool stderr_writable(const struct stat *st)
{
    if (!stderr0.open || st->st_dev != stderr0.dev || st->st_ino != stderr0.ino) return false;
    if (S_ISSOCK(st->st_mode)) return unnamed_local_stream(2);
    return S_ISFIFO(st->st_mode) || S_ISREG(st->st_mode) || S_ISCHR(st->st_mode);
}

static void write_stderr(const char *line, size_t len)
{
    struct stat st;
    if (fstat(2, &st) == 0 && stderr_writable(&st)) fdg_safe_write(2, line, len, -1);
}

static bool log_file_still_ours(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && (uint64_t)st.st_dev == atomic_load(&log_dev) &&
           (uint64_t)st.st_ino == atomic_load(&log_ino);
}

static void emit(enum fdg_log_level level, const char *line, size_t len)
{
    if (fdg_cfg.log_target != FDG_LOG_STDERR) {
        /* Not in a slot the shim just freed for a connection or a load (the
         * spare is out then): that would take the room meant for the spare.
         * Until a line is written while the spare is held, lines go to
         * stderr. */
        if (fdg_spare_held() || atomic_load(&fdg_state) != FDG_READY) fdg_log_prepare();
        int fd = atomic_load_explicit(&fdg_owned[FDG_OWNED_LOG], memory_order_relaxed);
        if (fd >= 0 && fdg_cfg.log_target == FDG_LOG_SYSLOG) {
            /* LOG_DAEMON facility; RFC 3164 framing without a timestamp (syslogd adds it). */
            static const int severity[] = {7, 3, 4, 6, 7};
            char framed[LOG_LINE_MAX + 8];
            size_t n = fdg_formatf(framed, sizeof framed, "<%d>", 24 + severity[level]);
            memcpy(framed + n, line, len - 1); /* without the newline */
            if (fdg_safe_write(fd, framed, n + len - 1, -1) >= 0) return;
        } else if (fd >= 0 && log_file_still_ours(fd)) {
            fdg_safe_write(fd, line, len, -1);
            return;
        }
    }
    write_stderr(line, len);
}

/* A line the rate limit let through. */
static void emit_allowed(enum fdg_log_level level, const char *body, uint64_t suppressed)
{
    char line[LOG_LINE_MAX];
    size_t n =
        fdg_formatf(line, sizeof line, "fdguard[%s:%d]: %-s", fdg_prog_name(), (int)getpid(), body);
    if (suppressed)
        n += fdg_formatf(line + n, sizeof line - n, " (%llu similar lines suppressed)",
                         (unsigned long long)suppressed);
    if (n > sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    emit(level, line, n);
}

static void emit_body(enum fdg_log_level level, enum fdg_event kind, const char *body)
{
    uint64_t suppressed = 0;
    if (!rate_allows(kind, &suppressed)) return;
    emit_allowed(level, body, suppressed);
}

void fdg_logf(enum fdg_log_level level, enum fdg_event kind, const char *fmt, ...)
{
    if (level > fdg_cfg.log_level || level == FDG_LVL_QUIET) return;
    int saved = errno;
    char body[LOG_LINE_MAX];
    va_list ap;
    /* Over its budget, a line costs no formatting (a shed every attempt). */
    uint64_t suppressed = 0;
    bool engaged = fdg_engaged();
    if (engaged && !rate_allows(kind, &suppressed)) {
        errno = saved;
        return;
    }
    va_start(ap, fmt);
    fdg_format(body, sizeof body, fmt, ap);
    va_end(ap);
    if (engaged) {
        emit_allowed(level, body, suppressed);
    } else {
        unsigned slot = atomic_fetch_add(&deferred_count, 1);
        if (slot < DEFERRED_MAX) {
            struct deferred *d = &deferred[slot];
            d->level = level;
            d->kind = kind;
            memcpy(d->body, body, sizeof body);
            atomic_store_explicit(&d->ready, true, memory_order_release);
        }
    }
    errno = saved;
}

void fdg_log_flush_deferred(void)
{
    unsigned n = atomic_exchange(&deferred_count, 0);
    if (n > DEFERRED_MAX) n = DEFERRED_MAX;
    int saved = errno;
    for (unsigned i = 0; i < n; i++) {
        struct deferred *d = &deferred[i];
        if (atomic_exchange_explicit(&d->ready, false, memory_order_acquire))
            emit_body(d->level, d->kind, d->body);
    }
    errno = saved;
}
