/* stream: a steady stream of connection attempts, and how fast each is answered.
 *
 *   stream HOST:PORT [--duration-ms MS] [--interval-ms MS] [--wait-ms MS]
 *          [--send DATA] [--reject PREFIX]
 *
 * Every --interval-ms (default 5) for --duration-ms (default 5000) a new
 * non-blocking connection to the IPv4 address HOST:PORT is started (DATA, if
 * given, is sent once it is established; escapes \r \n \t \\). Each one waits
 * up to --wait-ms (default 1000) for its first answer: data, EOF or a reset.
 * The time from connect() to that answer is recorded and the connection
 * closed; no answer in time is a hang. At the end, one line on stdout:
 *
 *   stream: attempts=N answered=A data=D rejected=R eof=E hang=H failed=F
 *           answered_share=X p50_ms=P p99_ms=Q max_ms=M
 *
 * where rejected counts the data answers that start with --reject PREFIX
 * (escapes as for --send).
 *
 * (on one line). The times are quantiles over all attempts, an unanswered
 * one counting as infinitely slow: "hang" when the quantile falls among
 * them. It connects only to the address it is given. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_OPEN 4096

struct att {
    int fd;
    bool connected;
    double t0;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void usage(void)
{
    fprintf(stderr, "usage: stream HOST:PORT [--duration-ms MS] [--interval-ms MS] [--wait-ms MS]\n"
                    "              [--send DATA] [--reject PREFIX]\n");
    exit(2);
}

static long num(const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || *end || end == s || v < min || v > max) usage();
    return v;
}

static size_t unescape(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p != '\\' || !p[1]) {
            *o++ = *p;
            continue;
        }
        switch (*++p) {
        case 'r': *o++ = '\r'; break;
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        default: *o++ = *p; break;
        }
    }
    return (size_t)(o - s);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile over all attempts, unanswered ones counting as infinitely
 * slow: "hang" when it falls among them. */
static void print_ms(const char *key, const double *v, long answered, long attempts, double q)
{
    long i = attempts ? (long)(q * (double)(attempts - 1) + 0.5) : 0;
    if (i >= answered)
        printf(" %s=hang", key);
    else
        printf(" %s=%.3f", key, v[i]);
}

int main(int argc, char **argv)
{
    if (argc < 2) usage();
    long duration = 5000, interval = 5, wait = 1000;
    char *send_data = NULL, *reject = NULL;
    size_t send_len = 0, reject_len = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--duration-ms") == 0) duration = num(v, 1, 3600000);
        else if (strcmp(a, "--interval-ms") == 0) interval = num(v, 1, 60000);
        else if (strcmp(a, "--wait-ms") == 0) wait = num(v, 1, 60000);
        else if (strcmp(a, "--send") == 0 && v) {
            send_data = strdup(v);
            send_len = unescape(send_data);
        } else if (strcmp(a, "--reject") == 0 && v) {
            reject = strdup(v);
            reject_len = unescape(reject);
        } else usage();
        i++;
    }

    struct sockaddr_in sin = {.sin_family = AF_INET};
    char host[256];
    const char *colon = strrchr(argv[1], ':');
    if (!colon || (size_t)(colon - argv[1]) >= sizeof host) usage();
    memcpy(host, argv[1], (size_t)(colon - argv[1]));
    host[colon - argv[1]] = '\0';
    sin.sin_port = htons((unsigned short)num(colon + 1, 1, 65535));
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) usage();

    /* Each attempt lives at most wait ms: room for wait/interval of them. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    long cap = duration / interval + 2;
    double *ms = malloc((size_t)cap * sizeof *ms);
    static struct att open_[MAX_OPEN];
    static struct pollfd pfd[MAX_OPEN];
    long nopen = 0, attempts = 0, answered = 0, data = 0, rejected = 0, eof = 0, hang = 0,
         failed = 0;
    if (!ms) return 1;

    double start = now_ms(), next = start, end = start + (double)duration;
    for (;;) {
        double t = now_ms();
        while (t >= next && next < end && attempts < cap) {
            next += (double)interval;
            attempts++;
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0 || nopen == MAX_OPEN) {
                if (fd >= 0) close(fd);
                failed++;
                continue;
            }
            double t0 = now_ms();
            if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0 && errno != EINPROGRESS) {
                close(fd);
                failed++;
                continue;
            }
            open_[nopen++] = (struct att){.fd = fd, .t0 = t0};
        }
        if (nopen == 0 && (next >= end || attempts >= cap)) break;

        /* Sleep until the next attempt is due or the oldest one times out. */
        double until = next < end ? next : t + (double)wait;
        for (long i = 0; i < nopen; i++) {
            double d = open_[i].t0 + (double)wait;
            if (d < until) until = d;
            pfd[i] = (struct pollfd){.fd = open_[i].fd,
                                     .events = open_[i].connected ? POLLIN : POLLOUT | POLLIN};
        }
        int timeout = until > t ? (int)(until - t) + 1 : 0;
        if (poll(pfd, (nfds_t)nopen, timeout) < 0 && errno != EINTR) return 1;

        t = now_ms();
        for (long i = 0; i < nopen;) {
            struct att *a = &open_[i];
            bool done = false;
            if (pfd[i].revents) {
                if (!a->connected && (pfd[i].revents & POLLOUT)) {
                    int err = 0;
                    socklen_t len = sizeof err;
                    getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                    if (err && err != ECONNRESET) {
                        failed++;
                        done = true;
                    } else {
                        a->connected = true;
                        if (send_data && !err)
                            (void)!send(a->fd, send_data, send_len, MSG_NOSIGNAL | MSG_DONTWAIT);
                    }
                }
                if (!done && (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                    char buf[256];
                    ssize_t n = recv(a->fd, buf, sizeof buf, MSG_DONTWAIT);
                    if (n > 0 || n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                        if (n > 0) {
                            data++;
                            if (reject && (size_t)n >= reject_len &&
                                memcmp(buf, reject, reject_len) == 0)
                                rejected++;
                        } else {
                            eof++;
                        }
                        ms[answered++] = t - a->t0;
                        done = true;
                    }
                }
            }
            if (!done && t - a->t0 >= (double)wait) {
                hang++;
                done = true;
            }
            if (done) {
                close(a->fd);
                open_[i] = open_[nopen - 1];
                pfd[i] = pfd[nopen - 1];
                nopen--;
            } else {
                i++;
            }
        }
    }

    qsort(ms, (size_t)answered, sizeof *ms, cmp_double);
    printf("stream: attempts=%ld answered=%ld data=%ld rejected=%ld eof=%ld hang=%ld failed=%ld "
           "answered_share=%.3f",
           attempts, answered, data, rejected, eof, hang, failed,
           attempts ? (double)answered / (double)attempts : 0.0);
    print_ms("p50_ms", ms, answered, attempts, 0.50);
    print_ms("p99_ms", ms, answered, attempts, 0.99);
    print_ms("max_ms", ms, answered, attempts, 1.0);
    putchar('\n');
    return 0;
}
