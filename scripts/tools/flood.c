/* flood: open many client connections at once and classify how each is answered.
 * The client behind `fdguard flood` (built by make, installed with the tools);
 * the test suites drive it directly too.
 *
 *   flood HOST:PORT|[V6]:PORT|unix:PATH [-n N] [--hold SECS] [--send DATA]
 *         [--wait-ms MS] [--greeting TEXT] [--reject TEXT] [--probe DATA]
 *         [--json] [-v]
 *
 * Each connection is classified by its first answer, waited for up to --wait-ms
 * (all connections concurrently):
 *   served    first line equals --greeting (default "HELLO"); with --send, any
 *             data that does not start with --reject
 *   rejected  data that is not the greeting, or starts with --reject
 *   closed    EOF without data, or a reset
 *   hanging   nothing within the wait (the connection rots in a backlog)
 *   failed    the connect itself failed
 * together with the time from connect() to that answer.
 *
 * The summary is printed (and flushed) before --hold, so a test can read it
 * while the connections are still held. While holding, SIGUSR1 sends --probe
 * (default "ping\n") on every served connection and reports how many answered:
 * proof that connections accepted before an exhaustion still work. SIGTERM or
 * SIGINT end the hold; the exit status is 0 whenever flood ran, 2 on usage
 * errors. It connects only to the address it is given. */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 10000
#define MAX_HOLD_S 3600
#define MAX_WAIT_MS 60000
#define FIRST_CAP 256 /* bytes of the first answer kept per connection */
#define MAX_TEXTS 16  /* distinct rejection texts / connect errors reported */

/* Monotonic time in milliseconds, fractional: answers on loopback come in well
 * under a millisecond. */
static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A whole decimal string in [min, max]: junk, signs out of range and empty
 * strings are usage errors, not truncated. */
static bool parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    if (s == NULL || *s == '\0') return false;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) return false;
    *out = v;
    return true;
}

enum result { R_CONNECTING, R_WAITING, R_SERVED, R_REJECTED, R_CLOSED, R_HANGING, R_FAILED };

static const char *const result_names[] = {"connecting", "waiting", "served", "rejected",
                                           "closed",     "hanging", "failed"};

struct conn {
    int fd;
    enum result r;
    int err;    /* connect error, for failed */
    double t0;  /* when connect() was called */
    double ms;  /* connect to first answer */
    size_t len; /* bytes of the first answer in buf */
    char buf[FIRST_CAP + 1];
};

struct opts {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    long n, hold_s, wait_ms;
    char *send;
    size_t send_len;
    char *probe;
    size_t probe_len;
    bool probe_owned;
    const char *greeting;
    const char *reject;
    bool json, verbose;
};

static void usage(void)
{
    fprintf(stderr,
            "usage: flood HOST:PORT|[V6]:PORT|unix:PATH [-n N] [--hold SECS] [--send DATA]\n"
            "             [--wait-ms MS] [--greeting TEXT] [--reject TEXT] [--probe DATA]\n"
            "             [--json] [-v]\n"
            "  -n N         connections to open, 1..%d (default 10)\n"
            "  --hold SECS  keep them open after the summary, 0..%d (SIGTERM ends it;\n"
            "               SIGUSR1 sends --probe on served ones and reports echoes)\n"
            "  --send DATA  sent after connecting; escapes \\r \\n \\t \\\\ \\xHH\n"
            "  --wait-ms MS how long to wait for each first answer, 1..%d (default 1000)\n"
            "  --greeting T a first line equal to T is served (default HELLO)\n"
            "  --reject T   a first line starting with T is rejected (needed with --send)\n"
            "  --probe DATA what SIGUSR1 sends on held connections (default ping\\n)\n"
            "  --json       the summary as one JSON object; -v: one line per connection\n"
            "results: served rejected closed (EOF/reset) hanging (no answer) failed (connect)\n",
            MAX_CONNS, MAX_HOLD_S, MAX_WAIT_MS);
    exit(2);
}

/* Decodes \r \n \t \\ \xHH in place (the same escapes FDGUARD_REJECT_MSG uses). */
static bool unescape(char *s, size_t *len)
{
    char *w = s;

    for (const char *p = s; *p != '\0'; p++) {
        if (*p != '\\') {
            *w++ = *p;
            continue;
        }
        p++;
        switch (*p) {
        case 'r':
            *w++ = '\r';
            break;
        case 'n':
            *w++ = '\n';
            break;
        case 't':
            *w++ = '\t';
            break;
        case '\\':
            *w++ = '\\';
            break;
        case 'x': {
            char hex[3] = {0};
            char *end;
            if (p[1] == '\0' || p[2] == '\0') return false;
            hex[0] = p[1];
            hex[1] = p[2];
            *w++ = (char)strtol(hex, &end, 16);
            if (*end != '\0') return false;
            p += 2;
            break;
        }
        default:
            return false;
        }
    }
    *len = (size_t)(w - s);
    return true;
}

static bool parse_target(const char *t, struct opts *o)
{
    if (strncmp(t, "unix:", 5) == 0) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&o->addr;
        if (t[5] == '\0' || strlen(t + 5) >= sizeof(sun->sun_path)) return false;
        sun->sun_family = AF_UNIX;
        strcpy(sun->sun_path, t + 5);
        o->addrlen = sizeof(*sun);
        return true;
    }

    char host[256];
    const char *colon = strrchr(t, ':');
    size_t hlen;
    if (colon == NULL || colon == t || colon[1] == '\0') return false;
    hlen = (size_t)(colon - t);
    if (t[0] == '[' && colon[-1] == ']') { /* [::1]:80 */
        t++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof(host)) return false;
    memcpy(host, t, hlen);
    host[hlen] = '\0';

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "flood: %s: %s\n", t, gai_strerror(rc));
        return false;
    }
    memcpy(&o->addr, res->ai_addr, res->ai_addrlen);
    o->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return true;
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
    const char *target = NULL;

    *o = (struct opts){.n = 10, .wait_ms = 1000, .greeting = "HELLO"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;

        if (strcmp(a, "--json") == 0)
            o->json = true;
        else if (strcmp(a, "-v") == 0)
            o->verbose = true;
        else if (a[0] != '-') {
            if (target != NULL) usage();
            target = a;
        } else if (!has_value)
            usage();
        else if (strcmp(a, "-n") == 0) {
            if (!parse_long(argv[++i], 1, MAX_CONNS, &o->n)) usage();
        } else if (strcmp(a, "--hold") == 0) {
            if (!parse_long(argv[++i], 0, MAX_HOLD_S, &o->hold_s)) usage();
        } else if (strcmp(a, "--wait-ms") == 0) {
            if (!parse_long(argv[++i], 1, MAX_WAIT_MS, &o->wait_ms)) usage();
        } else if (strcmp(a, "--send") == 0) {
            free(o->send); /* the last --send wins */
            o->send = strdup(argv[++i]);
            if (o->send == NULL || !unescape(o->send, &o->send_len)) usage();
        } else if (strcmp(a, "--probe") == 0) {
            if (o->probe_owned) free(o->probe);
            o->probe = strdup(argv[++i]);
            if (o->probe == NULL || !unescape(o->probe, &o->probe_len) || o->probe_len == 0)
                usage();
            o->probe_owned = true;
        } else if (strcmp(a, "--greeting") == 0)
            o->greeting = argv[++i];
        else if (strcmp(a, "--reject") == 0)
            o->reject = argv[++i];
        else
            usage();
    }
    if (target == NULL || !parse_target(target, o)) usage();
    if (o->probe == NULL) {
        o->probe = "ping\n";
        o->probe_len = 5;
    }
}

/* N connections need N descriptors; raise the soft limit as far as allowed. */
static void ensure_nofile(long n)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)n + 32;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ---- classification ---------------------------------------------------- */

/* The first line of the answer, without its line ending, NUL-terminated in buf. */
static const char *first_line(struct conn *c)
{
    c->buf[c->len] = '\0';
    c->buf[strcspn(c->buf, "\n")] = '\0';
    size_t l = strlen(c->buf);
    if (l > 0 && c->buf[l - 1] == '\r') c->buf[l - 1] = '\0';
    return c->buf;
}

static void classify_data(const struct opts *o, struct conn *c)
{
    const char *line = first_line(c);

    if (o->reject != NULL && strncmp(line, o->reject, strlen(o->reject)) == 0)
        c->r = R_REJECTED;
    else if (o->send != NULL || strcmp(line, o->greeting) == 0)
        c->r = R_SERVED;
    else
        c->r = R_REJECTED;
}

static void finish(struct conn *c, enum result r)
{
    c->r = r;
    /* Nothing more will come on a closed or failed connection; free it now. */
    if ((r == R_CLOSED || r == R_FAILED) && c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

/* Called when the socket is readable: append to the first answer, decide when
 * a full line, EOF or a reset has been seen. */
static void on_readable(const struct opts *o, struct conn *c)
{
    ssize_t n = recv(c->fd, c->buf + c->len, FIRST_CAP - c->len, MSG_DONTWAIT);

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (c->len == 0) c->ms = now_ms() - c->t0; /* the answer is its first byte, EOF or reset */
    if (n > 0) {
        c->len += (size_t)n;
        if (memchr(c->buf, '\n', c->len) == NULL && c->len < FIRST_CAP)
            return; /* wait for the rest of the line (or EOF, or the deadline) */
        classify_data(o, c);
        return;
    }
    if (c->len > 0) {
        classify_data(o, c);
        if (c->r == R_REJECTED) {
            close(c->fd);
            c->fd = -1;
        }
        return;
    }
    finish(c, R_CLOSED);
}

static void on_connected(const struct opts *o, struct conn *c)
{
    int err = 0;
    socklen_t el = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0) err = errno;
    if (err != 0) {
        c->err = err;
        finish(c, R_FAILED);
        return;
    }
    c->r = R_WAITING;
    if (o->send_len > 0) send(c->fd, o->send, o->send_len, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void start_conn(const struct opts *o, struct conn *c)
{
    *c = (struct conn){.fd = -1, .r = R_CONNECTING};
    c->fd = socket(o->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->t0 = now_ms();
    if (c->fd < 0) {
        c->err = errno;
        finish(c, R_FAILED);
        return;
    }
    if (connect(c->fd, (const struct sockaddr *)&o->addr, o->addrlen) == 0)
        on_connected(o, c);
    else if (errno != EINPROGRESS) {
        /* Unix sockets report a full backlog as EAGAIN: the connect failed. */
        c->err = errno;
        finish(c, R_FAILED);
    }
}

/* Waits for every connection's first answer concurrently, each with its own
 * deadline counted from its connect(). */
static void collect_answers(const struct opts *o, struct conn *cs, long n)
{
    struct pollfd *pfds = calloc((size_t)n, sizeof(*pfds));
    long *idx = calloc((size_t)n, sizeof(*idx));

    if (pfds == NULL || idx == NULL) {
        perror("flood: calloc");
        exit(1);
    }
    for (;;) {
        double now = now_ms(), next = 0;
        nfds_t k = 0;

        for (long i = 0; i < n; i++) {
            struct conn *c = &cs[i];
            if (c->r != R_CONNECTING && c->r != R_WAITING) continue;
            double deadline = c->t0 + (double)o->wait_ms;
            if (now >= deadline) {
                if (c->len > 0)
                    classify_data(o, c); /* a partial line: judge what came */
                else
                    c->r = R_HANGING;
                continue;
            }
            if (k == 0 || deadline < next) next = deadline;
            pfds[k] =
                (struct pollfd){.fd = c->fd, .events = c->r == R_CONNECTING ? POLLOUT : POLLIN};
            idx[k++] = i;
        }
        if (k == 0) break;
        int timeout = (int)(next - now) + 1;
        if (poll(pfds, k, timeout) < 0 && errno != EINTR) {
            perror("flood: poll");
            exit(1);
        }
        for (nfds_t j = 0; j < k; j++) {
            struct conn *c = &cs[idx[j]];
            if (pfds[j].revents == 0) continue;
            if (c->r == R_CONNECTING) on_connected(o, c);
            /* A connect that completed may already carry the answer. */
            if (c->r == R_WAITING) on_readable(o, c);
        }
    }
    free(pfds);
    free(idx);
}

/* ---- output ------------------------------------------------------------ */

struct summary {
    long count[R_FAILED + 1];
    double p50, max;
    bool have_ms;
    const char *texts[MAX_TEXTS];
    int ntexts;
    int errs[MAX_TEXTS];
    int nerrs;
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void summarize(struct conn *cs, long n, struct summary *s)
{
    double *ms = calloc((size_t)n, sizeof(*ms));
    long k = 0;

    *s = (struct summary){0};
    for (long i = 0; i < n; i++) {
        struct conn *c = &cs[i];
        s->count[c->r]++;
        if (c->r == R_SERVED || c->r == R_REJECTED || c->r == R_CLOSED) ms[k++] = c->ms;
        if (c->r == R_REJECTED) {
            const char *t = first_line(c);
            int j = 0;
            while (j < s->ntexts && strcmp(s->texts[j], t) != 0)
                j++;
            if (j == s->ntexts && s->ntexts < MAX_TEXTS) s->texts[s->ntexts++] = t;
        }
        if (c->r == R_FAILED) {
            int j = 0;
            while (j < s->nerrs && s->errs[j] != c->err)
                j++;
            if (j == s->nerrs && s->nerrs < MAX_TEXTS) s->errs[s->nerrs++] = c->err;
        }
    }
    if (k > 0) {
        qsort(ms, (size_t)k, sizeof(*ms), cmp_double);
        s->p50 = ms[(k + 1) / 2 - 1]; /* nearest rank */
        s->max = ms[k - 1];
        s->have_ms = true;
    }
    free(ms);
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, at most U+10FFFF), or 0. */
static int utf8_len(const unsigned char *p)
{
    int need = 0;
    unsigned char lo = 0x80, hi = 0xbf;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        need = 1;
    else if (p[0] == 0xe0)
        need = 2, lo = 0xa0;
    else if (p[0] == 0xed)
        need = 2, hi = 0x9f;
    else if (p[0] >= 0xe1 && p[0] <= 0xef)
        need = 2;
    else if (p[0] == 0xf0)
        need = 3, lo = 0x90;
    else if (p[0] >= 0xf1 && p[0] <= 0xf3)
        need = 3;
    else if (p[0] == 0xf4)
        need = 3, hi = 0x8f;
    for (int k = 1; k <= need; k++) {
        unsigned char b = p[k]; /* the NUL terminator fails the range check */
        if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xbf)) return 0;
    }
    return need ? need + 1 : 0;
}

/* Prints an answer so that one answer is one line and nothing reaches a
 * terminal raw: as text, every byte outside printable ASCII and the backslash
 * as \xHH (what fdguard uses for names); as JSON, valid whatever the bytes:
 * well-formed UTF-8 kept (C1 controls escaped), every other byte \u00XX. */
static void put_text(const char *t, bool json)
{
    for (const unsigned char *p = (const unsigned char *)t; *p != '\0'; p++) {
        int len = json && *p >= 0x80 ? utf8_len(p) : 0;
        if (!json && (*p < 0x20 || *p > 0x7e || *p == '\\'))
            printf("\\x%02x", *p);
        else if (json && (*p == '"' || *p == '\\'))
            printf("\\%c", *p);
        else if (json && len == 2 && p[0] == 0xc2 && p[1] < 0xa0)
            printf("\\u%04x", *++p); /* a C1 control */
        else if (json && len > 0)
            fwrite(p, 1, (size_t)len, stdout), p += len - 1;
        else if (json && (*p < 0x20 || *p >= 0x7f))
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
}

static void print_ms(const char *key, bool have, double v, bool json)
{
    if (have)
        printf(json ? "\"%s\":%.3f" : "%s=%.2f", key, v);
    else
        printf(json ? "\"%s\":null" : "%s=none", key);
}

static void print_text(struct summary *s, struct conn *cs, long n, const struct opts *o)
{
    if (o->verbose) {
        for (long i = 0; i < n; i++) {
            struct conn *c = &cs[i];
            printf("conn %ld: %s", i, result_names[c->r]);
            if (c->r == R_SERVED || c->r == R_REJECTED || c->r == R_CLOSED)
                printf(" %.2fms", c->ms);
            if (c->r == R_REJECTED || c->r == R_SERVED) {
                putchar(' ');
                put_text(first_line(c), false);
            }
            if (c->r == R_FAILED) printf(" %s", strerror(c->err));
            putchar('\n');
        }
    }
    printf("flood: n=%ld served=%ld rejected=%ld closed=%ld hanging=%ld failed=%ld ", n,
           s->count[R_SERVED], s->count[R_REJECTED], s->count[R_CLOSED], s->count[R_HANGING],
           s->count[R_FAILED]);
    print_ms("answer_ms_p50", s->have_ms, s->p50, false);
    putchar(' ');
    print_ms("answer_ms_max", s->have_ms, s->max, false);
    putchar('\n');
    for (int i = 0; i < s->ntexts; i++) {
        printf("rejected-text: ");
        put_text(s->texts[i], false);
        putchar('\n');
    }
    for (int i = 0; i < s->nerrs; i++)
        printf("failed-error: %s\n", strerror(s->errs[i]));
}

static void print_json(struct summary *s, struct conn *cs, long n, const struct opts *o)
{
    printf("{\"n\":%ld", n);
    for (int r = R_SERVED; r <= R_FAILED; r++)
        printf(",\"%s\":%ld", result_names[r], s->count[r]);
    putchar(',');
    print_ms("answer_ms_p50", s->have_ms, s->p50, true);
    putchar(',');
    print_ms("answer_ms_max", s->have_ms, s->max, true);
    printf(",\"rejected_texts\":[");
    for (int i = 0; i < s->ntexts; i++) {
        printf("%s\"", i ? "," : "");
        put_text(s->texts[i], true);
        putchar('"');
    }
    printf("],\"failed_errors\":[");
    for (int i = 0; i < s->nerrs; i++)
        printf("%s\"%s\"", i ? "," : "", strerror(s->errs[i]));
    putchar(']');
    if (o->verbose) {
        printf(",\"connections\":[");
        for (long i = 0; i < n; i++) {
            struct conn *c = &cs[i];
            printf("%s{\"i\":%ld,\"result\":\"%s\"", i ? "," : "", i, result_names[c->r]);
            if (c->r == R_SERVED || c->r == R_REJECTED || c->r == R_CLOSED)
                printf(",\"ms\":%.3f", c->ms);
            if (c->r == R_SERVED || c->r == R_REJECTED) {
                printf(",\"text\":\"");
                put_text(first_line(c), true);
                putchar('"');
            }
            if (c->r == R_FAILED) printf(",\"error\":\"%s\"", strerror(c->err));
            putchar('}');
        }
        putchar(']');
    }
    printf("}\n");
}

/* ---- hold and probe ---------------------------------------------------- */

/* Sends the probe on every held served connection and waits (concurrently, up
 * to --wait-ms) for something to come back. */
static void probe_held(const struct opts *o, struct conn *cs, long n)
{
    long held = 0, echoed = 0, dead = 0;
    double t0 = now_ms(), max = 0;
    char junk[4096];

    for (long i = 0; i < n; i++) {
        struct conn *c = &cs[i];
        if (c->r != R_SERVED || c->fd < 0) continue;
        held++;
        /* Drop what arrived since (echoes of --send); EOF means it is gone. */
        ssize_t r;
        while ((r = recv(c->fd, junk, sizeof(junk), MSG_DONTWAIT)) > 0)
            ;
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) ||
            send(c->fd, o->probe, o->probe_len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
            dead++;
            c->r = R_CLOSED;
            continue;
        }
        c->r = R_WAITING; /* reused as "probe outstanding" */
    }
    for (;;) {
        double now = now_ms();
        long pending = 0;
        for (long i = 0; i < n; i++) {
            struct conn *c = &cs[i];
            if (c->r != R_WAITING) continue;
            if (now - t0 >= (double)o->wait_ms) {
                c->r = R_SERVED; /* still held, but silent */
                continue;
            }
            struct pollfd p = {.fd = c->fd, .events = POLLIN};
            if (poll(&p, 1, 0) == 1) {
                ssize_t r = recv(c->fd, junk, sizeof(junk), MSG_DONTWAIT);
                c->r = R_SERVED;
                if (r > 0) {
                    echoed++;
                    if (now - t0 > max) max = now - t0;
                } else {
                    dead++;
                    c->r = R_CLOSED;
                }
                continue;
            }
            pending++;
        }
        if (pending == 0) break;
        usleep(1000); /* a probe is rare and small: a 1 ms scan is plenty */
    }
    printf("flood-probe: held=%ld echoed=%ld dead=%ld probe_ms_max=%.2f\n", held, echoed, dead,
           max);
    fflush(stdout);
}

static void hold(const struct opts *o, const sigset_t *sigs, struct conn *cs, long n)
{
    double end = now_ms() + (double)o->hold_s * 1e3;

    for (;;) {
        double left = end - now_ms();
        if (left <= 0) return;
        struct timespec ts = {.tv_sec = (time_t)(left / 1e3),
                              .tv_nsec = (long)((left - (double)(long)(left / 1e3) * 1e3) * 1e6)};
        int sig = sigtimedwait(sigs, NULL, &ts);
        if (sig == SIGUSR1)
            probe_held(o, cs, n);
        else if (sig == SIGTERM || sig == SIGINT)
            return;
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    struct summary s;
    sigset_t sigs;

    parse_opts(argc, argv, &o);
    /* Blocked from the start: a stop or probe request that arrives while the
     * connections are being made is handled once the summary is out. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGUSR1);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    ensure_nofile(o.n);

    struct conn *cs = calloc((size_t)o.n, sizeof(*cs));
    if (cs == NULL) {
        perror("flood: calloc");
        return 1;
    }
    for (long i = 0; i < o.n; i++)
        start_conn(&o, &cs[i]);
    collect_answers(&o, cs, o.n);

    summarize(cs, o.n, &s);
    if (o.json)
        print_json(&s, cs, o.n, &o);
    else
        print_text(&s, cs, o.n, &o);
    fflush(stdout);

    if (o.hold_s > 0) {
        /* Rejected connections hold nothing worth keeping. */
        for (long i = 0; i < o.n; i++) {
            if (cs[i].r == R_REJECTED && cs[i].fd >= 0) {
                close(cs[i].fd);
                cs[i].fd = -1;
            }
        }
        hold(&o, &sigs, cs, o.n);
    }
    /* Freed so that sanitizer builds see a clean exit (descriptors close with us). */
    free(cs);
    free(o.send);
    if (o.probe_owned) free(o.probe);
    return 0;
}
