/* srv: a line-echo test server in the accept-loop shapes found in the field.
 *
 *   srv --shape SHAPE (--port P | --unix PATH) --ready FILE
 *       [--threads N] [--nofile N] [--backlog N] [--blocking-listener]
 *
 * Every accepted client is greeted with "HELLO\n", then every byte it sends is
 * echoed back until it leaves. The shapes reproduce how real servers react to
 * accept() failing with EMFILE, which is what fdguard has to relieve:
 *
 *   lt       level-triggered epoll, one accept per wakeup; on error it goes back
 *            to epoll_wait, which reports the listener again at once: a spin.
 *   et       edge-triggered epoll, accepts until the first error of any kind; at
 *            EMFILE the pending connections are stranded in the backlog.
 *   poll     level-triggered poll(2), spins like lt.
 *   select   level-triggered select(2), spins like lt.
 *   block    blocking listener, one thread in for(;;) accept() that continues on
 *            error (spins); each client is served by a detached thread.
 *   threads  N threads (default 4) blocking in accept() on the same listener.
 *
 * --close-at-once (lt): every accepted client is closed at once, without a
 * greeting: the kernel's own cost of a connection (make bench's floor).
 *
 * --blocking-listener: lt, poll and select with a blocking listener, called
 * only when readiness says so (Python's socketserver does this): at EMFILE
 * they spin like the non-blocking ones; a relief that then waited in accept
 * would freeze the whole loop.
 *
 * The server calls the plain libc accept/accept4/close/epoll_* entry points on
 * purpose: those are what the shim interposes. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common.h"

enum shape { SHAPE_LT, SHAPE_ET, SHAPE_POLL, SHAPE_SELECT, SHAPE_BLOCK, SHAPE_THREADS };

static const char *const shape_names[] = {"lt", "et", "poll", "select", "block", "threads"};

struct opts {
    enum shape shape;
    long port; /* -1: not given */
    const char *unix_path;
    const char *ready;
    long threads;
    long nofile; /* 0: leave the limit alone */
    long backlog;
    bool blocking_listener;
    bool close_at_once;
};

static const char hello[] = "HELLO\n";

/* Set once before any signal can arrive; read by the signal handler. */
static const char *g_unix_path;

static void usage(void)
{
    fprintf(stderr, "usage: srv --shape lt|et|poll|select|block|threads (--port P | --unix PATH)\n"
                    "           --ready FILE [--threads N] [--nofile N] [--backlog N]\n"
                    "           [--blocking-listener] (lt, poll, select) [--close-at-once] (lt)\n");
    exit(2);
}

static void on_terminate(int sig)
{
    (void)sig;
    /* Async-signal-safe only: tests stop the server at any point. */
    if (g_unix_path != NULL) unlink(g_unix_path);
    _exit(0);
}

static bool parse_shape(const char *s, enum shape *out)
{
    for (size_t i = 0; i < sizeof(shape_names) / sizeof(shape_names[0]); i++) {
        if (strcmp(s, shape_names[i]) == 0) {
            *out = (enum shape)i;
            return true;
        }
    }
    return false;
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
    bool have_shape = false;

    *o = (struct opts){.port = -1, .threads = 4, .backlog = 128};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--blocking-listener") == 0) {
            o->blocking_listener = true;
            continue;
        }
        if (strcmp(a, "--close-at-once") == 0) {
            o->close_at_once = true;
            continue;
        }
        if (v == NULL) usage();
        i++;
        if (strcmp(a, "--shape") == 0)
            have_shape = parse_shape(v, &o->shape);
        else if (strcmp(a, "--port") == 0) {
            if (!parse_long(v, 0, 65535, &o->port)) usage();
        } else if (strcmp(a, "--unix") == 0)
            o->unix_path = v;
        else if (strcmp(a, "--ready") == 0)
            o->ready = v;
        else if (strcmp(a, "--threads") == 0) {
            if (!parse_long(v, 1, 256, &o->threads)) usage();
        } else if (strcmp(a, "--nofile") == 0) {
            if (!parse_long(v, 1, INT_MAX, &o->nofile)) usage();
        } else if (strcmp(a, "--backlog") == 0) {
            if (!parse_long(v, 1, 65535, &o->backlog)) usage();
        } else
            usage();
    }
    if (!have_shape || o->ready == NULL || (o->port < 0) == (o->unix_path == NULL)) usage();
    if (o->blocking_listener && o->shape != SHAPE_LT && o->shape != SHAPE_POLL &&
        o->shape != SHAPE_SELECT)
        usage();
    if (o->close_at_once && o->shape != SHAPE_LT) usage();
}

static void die(const char *what)
{
    fprintf(stderr, "srv: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* At EMFILE the naive shapes fail thousands of times a second; one line per
 * second (with a count of the rest) keeps the evidence without filling disks. */
static void report_accept_error(int err)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static double last = -1e9;
    static unsigned long suppressed;
    double now;

    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) return;
    pthread_mutex_lock(&lock);
    now = now_ms();
    if (now - last >= 1000.0) {
        if (suppressed > 0)
            fprintf(stderr, "srv: accept: %s (%lu more since last report)\n", strerror(err),
                    suppressed);
        else
            fprintf(stderr, "srv: accept: %s\n", strerror(err));
        last = now;
        suppressed = 0;
    } else {
        suppressed++;
    }
    pthread_mutex_unlock(&lock);
}

static int listen_tcp(long port, long backlog, bool nonblock)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);

    if (fd < 0) die("socket");
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) die("setsockopt");
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) die("bind");
    if (listen(fd, (int)backlog) < 0) die("listen");
    return fd;
}

static int listen_unix(const char *path, long backlog, bool nonblock)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "srv: unix path too long: %s\n", path);
        exit(2);
    }
    strcpy(sun.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) die("socket");
    /* A stale socket file from a killed run would make bind fail. */
    if (unlink(path) < 0 && errno != ENOENT) die("unlink");
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) die("bind");
    g_unix_path = path;
    if (listen(fd, (int)backlog) < 0) die("listen");
    return fd;
}

/* What the readiness file says: the TCP port actually bound, or the path. */
static void describe_listener(const struct opts *o, int lfd, char *buf, size_t len)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);

    if (o->unix_path != NULL) {
        snprintf(buf, len, "%s\n", o->unix_path);
        return;
    }
    if (getsockname(lfd, (struct sockaddr *)&sin, &sl) < 0) die("getsockname");
    snprintf(buf, len, "%u\n", ntohs(sin.sin_port));
}

/* Readiness is published by rename so a test never reads a half-written file.
 * The temporary file is written and closed before --nofile applies, so that a
 * tight limit cannot make the readiness signal itself fail; rename needs no
 * descriptor. */
static void publish_ready(const struct opts *o, int lfd)
{
    char content[PATH_MAX + 16];
    char tmp[PATH_MAX];
    int fd;

    describe_listener(o, lfd, content, sizeof(content));
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", o->ready, (long)getpid()) >= (int)sizeof(tmp)) {
        fprintf(stderr, "srv: ready path too long\n");
        exit(2);
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) die("open ready file");
    if (!write_all(fd, content, strlen(content)) || close(fd) < 0) die("write ready file");
    if (o->nofile > 0) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0) die("getrlimit");
        rl.rlim_cur = (rlim_t)o->nofile;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max) rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) die("setrlimit");
    }
    if (rename(tmp, o->ready) < 0) die("rename ready file");
}

/* Reads what is there and echoes it. Returns false when the client is gone.
 * Called only after readiness, so the (blocking) read does not block. */
static bool echo_once(int fd)
{
    char buf[4096];
    ssize_t n;

    do
        n = read(fd, buf, sizeof(buf));
    while (n < 0 && errno == EINTR);
    if (n <= 0) return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    return write_all(fd, buf, (size_t)n);
}

/* ---- epoll (lt, et) ---------------------------------------------------- */

static int epoll_setup(int lfd, bool edge)
{
    struct epoll_event ev = {.events = EPOLLIN | (edge ? EPOLLET : 0), .data.fd = lfd};
    int ep = epoll_create1(EPOLL_CLOEXEC);

    if (ep < 0) die("epoll_create1");
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) die("epoll_ctl");
    return ep;
}

static void epoll_add_client(int ep, int cfd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = cfd};

    if (!write_all(cfd, hello, sizeof(hello) - 1) || epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev) < 0)
        close(cfd);
}

static bool g_close_at_once;

/* lt: one accept() per wakeup, error or not. */
static void epoll_accept_lt(int ep, int lfd)
{
    int cfd = accept(lfd, NULL, NULL);

    if (cfd < 0) {
        report_accept_error(errno);
        return;
    }
    if (g_close_at_once)
        close(cfd);
    else
        epoll_add_client(ep, cfd);
}

/* et: the edge is consumed, so accept until the first error; any error (EAGAIN
 * or EMFILE alike) ends the round, which is how stranded backlogs happen. */
static void epoll_accept_et(int ep, int lfd)
{
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (cfd < 0) {
            report_accept_error(errno);
            return;
        }
        epoll_add_client(ep, cfd);
    }
}

static void run_epoll(int ep, int lfd, bool edge)
{
    struct epoll_event evs[64];

    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                if (edge)
                    epoll_accept_et(ep, lfd);
                else
                    epoll_accept_lt(ep, lfd);
            } else if (!echo_once(fd)) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
            }
        }
    }
}

/* ---- poll -------------------------------------------------------------- */

static void run_poll(int lfd)
{
    size_t cap = 64, n = 1;
    struct pollfd *fds = calloc(cap, sizeof(*fds));

    if (fds == NULL) die("calloc");
    fds[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
    for (;;) {
        if (poll(fds, n, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        /* Clients first, compacting the array as they leave. */
        for (size_t i = 1; i < n;) {
            if (fds[i].revents != 0 && !echo_once(fds[i].fd)) {
                close(fds[i].fd);
                fds[i] = fds[--n];
                continue;
            }
            i++;
        }
        if (fds[0].revents & POLLIN) {
            int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            if (cfd < 0) {
                report_accept_error(errno);
                continue;
            }
            if (!write_all(cfd, hello, sizeof(hello) - 1)) {
                close(cfd);
                continue;
            }
            if (n == cap) {
                struct pollfd *bigger = realloc(fds, 2 * cap * sizeof(*fds));
                if (bigger == NULL) {
                    close(cfd);
                    continue;
                }
                fds = bigger;
                cap *= 2;
            }
            fds[n++] = (struct pollfd){.fd = cfd, .events = POLLIN};
        }
    }
}

/* ---- select ------------------------------------------------------------ */

static void run_select(int lfd)
{
    fd_set clients;
    int maxfd = lfd;

    FD_ZERO(&clients);
    for (;;) {
        fd_set rd = clients;
        FD_SET(lfd, &rd);
        if (select(maxfd + 1, &rd, NULL, NULL, NULL) < 0) {
            if (errno == EINTR) continue;
            die("select");
        }
        for (int fd = 0; fd <= maxfd; fd++) {
            if (fd != lfd && FD_ISSET(fd, &rd) && !echo_once(fd)) {
                FD_CLR(fd, &clients);
                close(fd);
            }
        }
        if (!FD_ISSET(lfd, &rd)) continue;
        int cfd = accept(lfd, NULL, NULL);
        if (cfd < 0) {
            report_accept_error(errno);
            continue;
        }
        /* select cannot watch descriptors beyond FD_SETSIZE: refuse them. */
        if (cfd >= FD_SETSIZE || !write_all(cfd, hello, sizeof(hello) - 1)) {
            close(cfd);
            continue;
        }
        FD_SET(cfd, &clients);
        if (cfd > maxfd) maxfd = cfd;
    }
}

/* ---- block, threads ---------------------------------------------------- */

static void *serve_client_thread(void *arg)
{
    int cfd = (int)(intptr_t)arg;

    if (write_all(cfd, hello, sizeof(hello) - 1)) {
        /* Blocking socket: each read waits for the client's next line. */
        while (echo_once(cfd))
            ;
    }
    close(cfd);
    return NULL;
}

static void spawn_detached(void *(*fn)(void *), void *arg, size_t stack)
{
    pthread_attr_t attr;
    pthread_t t;
    int rc;

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, stack);
    rc = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        /* Out of threads: the caller decides what to drop. */
        errno = rc;
        if (fn == serve_client_thread)
            close((int)(intptr_t)arg);
        else
            die("pthread_create");
    }
}

/* The classic loop: accept, hand off, and on any error just try again. */
static void *accept_loop_thread(void *arg)
{
    int lfd = (int)(intptr_t)arg;

    for (;;) {
        int cfd = accept(lfd, NULL, NULL);
        if (cfd < 0) {
            report_accept_error(errno);
            continue;
        }
        spawn_detached(serve_client_thread, (void *)(intptr_t)cfd, 64 * 1024);
    }
    return NULL;
}

static void run_threads(int lfd, long n)
{
    for (long i = 0; i < n; i++)
        spawn_detached(accept_loop_thread, (void *)(intptr_t)lfd, 256 * 1024);
    for (;;)
        pause();
}

int main(int argc, char **argv)
{
    struct opts o;
    struct sigaction sa = {.sa_handler = on_terminate};
    bool nonblock;
    int lfd, ep = -1;

    parse_opts(argc, argv, &o);
    g_close_at_once = o.close_at_once;
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    nonblock = o.shape != SHAPE_BLOCK && o.shape != SHAPE_THREADS && !o.blocking_listener;
    lfd = o.unix_path != NULL ? listen_unix(o.unix_path, o.backlog, nonblock)
                              : listen_tcp(o.port, o.backlog, nonblock);
    if (o.shape == SHAPE_LT || o.shape == SHAPE_ET) ep = epoll_setup(lfd, o.shape == SHAPE_ET);
    publish_ready(&o, lfd);

    switch (o.shape) {
    case SHAPE_LT:
    case SHAPE_ET:
        run_epoll(ep, lfd, o.shape == SHAPE_ET);
        break;
    case SHAPE_POLL:
        run_poll(lfd);
        break;
    case SHAPE_SELECT:
        run_select(lfd);
        break;
    case SHAPE_BLOCK:
        accept_loop_thread((void *)(intptr_t)lfd);
        break;
    case SHAPE_THREADS:
        run_threads(lfd, o.threads);
        break;
    }
    return 0;
}
