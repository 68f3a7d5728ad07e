/* acceptaddr MODE [nonblock]: what accept and accept4 write through the
 * caller's addr and addrlen, and do with its flags, for every kind of
 * pointer a program may pass.
 *
 *   room       descriptors free: the kernel's own accept
 *   full       at the descriptor limit, a client pending at entry
 *   hand       at the limit, a client pending at entry; run with the shim
 *              and tests/hooks/accepthook.so (ACCEPTHOOK=room): room appears
 *              while relief holds the connection, which it hands over
 *   hand-wait  as hand, but the client connects once the call waits (the
 *              calling thread sleeps in accept or in the shim's poll)
 * nonblock: a non-blocking listener (else blocking).
 *
 * Each variant runs in a child process of its own; one line per variant:
 *   VARIANT ret=fd|-1 errno=NAME len=N|- addr=untouched|peer:N|other
 *   nonblock=0|1 cloexec=0|1 client=served|eof|open
 * (addr=peer:N: the first N bytes are the client's address, the rest of the
 * buffer untouched). A child killed by a signal is reported as such. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

enum ptr { P_BUF, P_NULL, P_BOGUS, P_READONLY };

struct variant {
    const char *name;
    bool use4;
    int flags;
    enum ptr addr, len;
    int len_in; /* *addrlen before the call, when it points to our variable */
};

static const struct variant variants[] = {
    {"addr+len", false, 0, P_BUF, P_BUF, 128},
    {"small-len", false, 0, P_BUF, P_BUF, 4},
    {"zero-len", false, 0, P_BUF, P_BUF, 0},
    {"negative-len", false, 0, P_BUF, P_BUF, -1},
    {"null-addr", false, 0, P_NULL, P_BUF, 128},
    {"null-both", false, 0, P_NULL, P_NULL, 0},
    {"null-addr-bogus-len", false, 0, P_NULL, P_BOGUS, 0},
    {"null-addr-readonly-len", false, 0, P_NULL, P_READONLY, 0},
    {"addr-null-len", false, 0, P_BUF, P_NULL, 0},
    {"bogus-addr", false, 0, P_BOGUS, P_BUF, 16},
    {"accept4-0", true, 0, P_BUF, P_BUF, 128},
    {"accept4-nonblock-cloexec", true, SOCK_NONBLOCK | SOCK_CLOEXEC, P_BUF, P_BUF, 128},
    {"accept4-cloexec-null-both", true, SOCK_CLOEXEC, P_NULL, P_NULL, 0},
};

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static const char *errname(int e)
{
    static char buf[32];
    switch (e) {
    case EAGAIN:
        return "EAGAIN";
    case EMFILE:
        return "EMFILE";
    case EFAULT:
        return "EFAULT";
    case EINVAL:
        return "EINVAL";
    case ECONNABORTED:
        return "ECONNABORTED";
    default:
        snprintf(buf, sizeof buf, "%d", e);
        return buf;
    }
}

static void exhaust(void)
{
    if (!limit_to_open()) die("setrlimit");
}

static int client;
static struct sockaddr_in server_addr;
/* The calling thread's /proc/.../syscall, opened before the table is full. */
static int caller_syscall = -1;
static _Atomic bool call_returned;

/* Connects once the call waits for a client, or has returned (a call that
 * does not wait: the client then simply arrives late). */
static void *connect_later(void *arg)
{
    (void)arg;
    struct timespec d = {0, 1000 * 1000};
    while (!atomic_load(&call_returned) && !waiting_for_client(caller_syscall))
        nanosleep(&d, NULL);
    if (connect(client, (struct sockaddr *)&server_addr, sizeof server_addr) != 0)
        perror("connect");
    return NULL;
}

/* ASan's and TSan's own accept interceptors read *addrlen whenever addrlen
 * is not NULL: a bogus one kills the process before the call is made, with
 * or without the shim. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZER_READS_ADDRLEN 1
#else
#define SANITIZER_READS_ADDRLEN 0
#endif

static void run(const struct variant *v, const char *mode, bool nonblock)
{
    socklen_t sl = sizeof server_addr;
    int l = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    server_addr = (struct sockaddr_in){.sin_family = AF_INET};
    server_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (l < 0 || bind(l, (struct sockaddr *)&server_addr, sizeof server_addr) != 0 ||
        listen(l, 8) != 0 || getsockname(l, (struct sockaddr *)&server_addr, &sl) != 0)
        die("listen");
    client = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in mine = {.sin_family = AF_INET};
    mine.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sl = sizeof mine;
    if (client < 0 || bind(client, (struct sockaddr *)&mine, sizeof mine) != 0 ||
        getsockname(client, (struct sockaddr *)&mine, &sl) != 0)
        die("client");

    unsigned char buf[128];
    memset(buf, 0xAA, sizeof buf);
    socklen_t len = (socklen_t)v->len_in;
    socklen_t *ro = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ro == MAP_FAILED) die("mmap");
    struct sockaddr *addr = v->addr == P_BUF     ? (struct sockaddr *)buf
                            : v->addr == P_BOGUS ? (struct sockaddr *)8
                                                 : NULL;
    socklen_t *lenp = v->len == P_BUF        ? &len
                      : v->len == P_BOGUS    ? (socklen_t *)8
                      : v->len == P_READONLY ? ro
                                             : NULL;
    bool wait = !strcmp(mode, "hand-wait");
    pthread_t t;
    if (!wait && connect(client, (struct sockaddr *)&server_addr, sizeof server_addr) != 0)
        die("connect");
    if (wait && (caller_syscall = open_task_syscall((pid_t)syscall(SYS_gettid))) < 0)
        die("open syscall");
    if (strcmp(mode, "room") != 0) exhaust();
    if (wait && pthread_create(&t, NULL, connect_later, NULL) != 0) die("pthread_create");

    int fd = v->use4 ? accept4(l, addr, lenp, v->flags) : accept(l, addr, lenp);
    int err = errno;
    atomic_store(&call_returned, true);

    char report[256];
    int n = snprintf(report, sizeof report, "%s ret=%s", v->name, fd >= 0 ? "fd" : "-1");
    if (fd < 0) n += snprintf(report + n, sizeof report - (size_t)n, " errno=%s", errname(err));
    if (v->len == P_BUF)
        n += snprintf(report + n, sizeof report - (size_t)n, " len=%d", (int)len);
    else if (v->len == P_READONLY)
        n += snprintf(report + n, sizeof report - (size_t)n, " len=%d", (int)*ro);
    else
        n += snprintf(report + n, sizeof report - (size_t)n, " len=-");
    /* The buffer: the client's address copied over a prefix, the rest 0xAA. */
    size_t copied = 0;
    while (copied < sizeof mine && buf[copied] == ((unsigned char *)&mine)[copied])
        copied++;
    bool rest = true;
    for (size_t i = copied; i < sizeof buf; i++)
        rest = rest && buf[i] == 0xAA;
    if (copied == 0 && rest)
        n += snprintf(report + n, sizeof report - (size_t)n, " addr=untouched");
    else if (rest)
        n += snprintf(report + n, sizeof report - (size_t)n, " addr=peer:%zu", copied);
    else
        n += snprintf(report + n, sizeof report - (size_t)n, " addr=other");
    if (fd >= 0) {
        int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
        n += snprintf(report + n, sizeof report - (size_t)n, " nonblock=%d cloexec=%d",
                      !!(fl & O_NONBLOCK), !!(fdfl & FD_CLOEXEC));
        if (write(fd, "x", 1) != 1) perror("write");
    }
    if (wait) pthread_join(t, NULL);
    struct pollfd p = {client, POLLIN, 0};
    const char *outcome = "open";
    if (poll(&p, 1, fd >= 0 ? 1000 : 300) > 0) {
        char c;
        ssize_t r = recv(client, &c, 1, MSG_DONTWAIT);
        outcome = r == 1 ? "served" : "eof";
    }
    snprintf(report + n, sizeof report - (size_t)n, " client=%s\n", outcome);
    fputs(report, stdout);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3 ||
        (strcmp(argv[1], "room") && strcmp(argv[1], "full") && strcmp(argv[1], "hand") &&
         strcmp(argv[1], "hand-wait")) ||
        (argc == 3 && strcmp(argv[2], "nonblock"))) {
        fprintf(stderr, "usage: acceptaddr room|full|hand|hand-wait [nonblock]\n");
        return 2;
    }
    bool nonblock = argc == 3;
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof variants / sizeof *variants; i++) {
        if (SANITIZER_READS_ADDRLEN && variants[i].len == P_BOGUS) {
            printf("%s skipped: the sanitizer's accept reads *addrlen\n", variants[i].name);
            continue;
        }
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            run(&variants[i], argv[1], nonblock);
            fflush(stdout);
            _exit(0);
        }
        int st;
        if (waitpid(pid, &st, 0) < 0) die("waitpid");
        if (WIFSIGNALED(st))
            printf("%s signal=%s\n", variants[i].name, strsignal(WTERMSIG(st)));
        else if (WEXITSTATUS(st) != 0)
            printf("%s exit=%d\n", variants[i].name, WEXITSTATUS(st));
    }
    return 0;
}
