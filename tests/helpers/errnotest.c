/* errnotest: every wrapper of the close, dup and epoll families, on success
 * and on failure, with errno preset to a sentinel before each call.
 *
 *   errnotest [nofork]
 *
 * One line per call: its name, the return value and the errno left after
 * it (the sentinel, SENTINEL, when the call left errno alone, which a
 * successful call does). The output must be the same with and without the
 * shim, and with FDGUARD=off; the bats suite compares it line by line.
 * Descriptor numbers are printed relative to the first one the program
 * opened, so that a descriptor the shim holds elsewhere cannot shift them.
 * `nofork` leaves out the cases in a fork child (for a syscall trace that
 * compares one process). Between the lines "begin" and "end" the program
 * makes a getppid() call, a marker for such a trace. */
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define SENTINEL 4242

static int base = -1; /* the first descriptor opened: numbers are printed from it */

static void show(const char *what, long r, int err, bool fd)
{
    char rs[32];
    if (fd && r >= 0 && base >= 0)
        snprintf(rs, sizeof rs, "fd+%ld", r - base);
    else
        snprintf(rs, sizeof rs, "%ld", r);
    const char *name = err == SENTINEL ? "untouched" : strerrorname_np(err);
    printf("%-44s ret %-6s errno %s\n", what, rs, name ? name : "?");
}

/* CALL(what, expr): preset errno, evaluate, print. FDCALL: the result is a
 * descriptor number. */
#define CALL(what, expr)                                                                           \
    do {                                                                                           \
        errno = SENTINEL;                                                                          \
        long r_ = (long)(expr);                                                                    \
        show(what, r_, errno, false);                                                              \
    } while (0)
#define FDCALL(what, expr)                                                                         \
    do {                                                                                           \
        errno = SENTINEL;                                                                          \
        long r_ = (long)(expr);                                                                    \
        show(what, r_, errno, true);                                                               \
    } while (0)
#define VOIDCALL(what, expr)                                                                       \
    do {                                                                                           \
        errno = SENTINEL;                                                                          \
        expr;                                                                                      \
        show(what, 0, errno, false);                                                               \
    } while (0)

static void setup_fail(const char *what)
{
    printf("setup error: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void xpipe(int p[2])
{
    if (pipe2(p, O_CLOEXEC) != 0) setup_fail("pipe2");
}

static void reg(int ep, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) setup_fail("EPOLL_CTL_ADD");
}

static void close_family(int ep)
{
    int p[2], q[2];
    xpipe(p);
    xpipe(q);
    CALL("close", close(q[1]));
    CALL("close (bad fd)", close(-1));
    CALL("close (not open)", close(q[1]));
    reg(ep, p[0]);
    int keep = fcntl(p[0], F_DUPFD_CLOEXEC, 0);
    CALL("close (registered, duplicate held)", close(p[0]));
    CALL("close (registered, last reference)", close(keep));

    xpipe(p);
    FDCALL("dup", dup(p[0]));
    CALL("dup (bad fd)", dup(-1));
    FDCALL("fcntl F_DUPFD", fcntl(p[0], F_DUPFD, 0));
    FDCALL("fcntl F_DUPFD_CLOEXEC", fcntl(p[0], F_DUPFD_CLOEXEC, 0));
    CALL("fcntl F_DUPFD (bad fd)", fcntl(-1, F_DUPFD, 0));
    CALL("fcntl F_GETFD", fcntl(p[0], F_GETFD));
    CALL("fcntl (bad command)", fcntl(p[0], 12345));
    FDCALL("dup of an epoll fd", dup(ep));
    FDCALL("fcntl F_DUPFD of an epoll fd", fcntl(ep, F_DUPFD_CLOEXEC, 0));

    /* Each registered target is a new pipe: a stale registration left
     * without the shim must not change what the next call finds. */
    xpipe(q);
    FDCALL("dup2", dup2(p[1], q[1]));
    FDCALL("dup2 (same number)", dup2(p[0], p[0]));
    CALL("dup2 (bad source)", dup2(-1, q[1]));
    CALL("dup2 (bad target)", dup2(p[0], -1));
    xpipe(q);
    reg(ep, q[0]);
    FDCALL("dup2 (onto registered)", dup2(p[1], q[0]));
    xpipe(q);
    reg(ep, q[0]);
    int saved = dup(q[0]);
    FDCALL("dup2 (onto a duplicate of itself)", dup2(q[0], saved));
    FDCALL("dup2 (restore a saved duplicate)", dup2(saved, q[0]));
    FDCALL("dup3", dup3(p[1], q[1], O_CLOEXEC));
    CALL("dup3 (same number)", dup3(p[0], p[0], 0));
    CALL("dup3 (bad flags)", dup3(p[1], q[0], 0x7));
    xpipe(q);
    reg(ep, q[0]);
    FDCALL("dup3 (onto registered)", dup3(p[1], q[0], 0));
    xpipe(q);
    reg(ep, q[0]);
    saved = dup(q[0]);
    FDCALL("dup3 (restore a saved duplicate)", dup3(saved, q[0], O_CLOEXEC));

    int r1 = fcntl(p[0], F_DUPFD_CLOEXEC, 300), r2 = fcntl(p[0], F_DUPFD_CLOEXEC, 301);
    reg(ep, r1);
    reg(ep, r2);
    CALL("close_range (CLOEXEC)", close_range(300, 301, CLOSE_RANGE_CLOEXEC));
    CALL("close_range (bad flags)", close_range(300, 301, 1 << 20));
    CALL("close_range (lo > hi)", close_range(301, 300, 0));
    CALL("close_range (registered)", close_range(300, 300, 0));
    CALL("close_range (UNSHARE, one thread)", close_range(301, 301, CLOSE_RANGE_UNSHARE));
    r1 = fcntl(p[0], F_DUPFD_CLOEXEC, 310);
    reg(ep, r1);
    VOIDCALL("closefrom (registered)", closefrom(310));
    CALL("unshare (0)", unshare(0));
    CALL("unshare (bad flags)", unshare(-1));
    CALL("unshare (CLONE_FILES, one thread)", unshare(CLONE_FILES));
}

static void stdio_family(int ep)
{
    char buf[64] = "memory";
    FILE *f = fmemopen(buf, sizeof buf, "r");
    if (!f) setup_fail("fmemopen");
    CALL("fclose (fmemopen)", fclose(f));
    char *mem = NULL;
    size_t len = 0;
    f = open_memstream(&mem, &len);
    if (!f) setup_fail("open_memstream");
    fputs("x", f);
    CALL("fclose (open_memstream)", fclose(f));
    free(mem);
    f = fopen("/dev/null", "re");
    if (!f) setup_fail("fopen");
    CALL("fclose (file)", fclose(f));
    int p[2];
    xpipe(p);
    f = fdopen(p[0], "r");
    if (!f) setup_fail("fdopen");
    reg(ep, p[0]);
    int keep = dup(p[0]);
    CALL("fclose (registered stream)", fclose(f));
    close(keep);
    close(p[1]);
}

/* A listener's registration: with FDGUARD_EPOLLEXCLUSIVE=on the shim makes
 * it exclusive and performs MOD as DEL + ADD; bad event pointers get the
 * kernel's EFAULT. */
static void listener_family(int ep)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 4) != 0)
        setup_fail("listen");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l}, *bad = (struct epoll_event *)8;
    CALL("epoll_ctl ADD listener (bad pointer)", epoll_ctl(ep, EPOLL_CTL_ADD, l, bad));
    CALL("epoll_ctl ADD listener (NULL)", epoll_ctl(ep, EPOLL_CTL_ADD, l, NULL));
    CALL("epoll_ctl ADD listener", epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev));
    CALL("epoll_ctl MOD listener (bad pointer)", epoll_ctl(ep, EPOLL_CTL_MOD, l, bad));
    CALL("epoll_ctl MOD listener (NULL)", epoll_ctl(ep, EPOLL_CTL_MOD, l, NULL));
    ev.events = EPOLLIN | EPOLLEXCLUSIVE;
    CALL("epoll_ctl MOD listener (EPOLLEXCLUSIVE)", epoll_ctl(ep, EPOLL_CTL_MOD, l, &ev));
    ev.events = EPOLLIN | EPOLLET;
    CALL("epoll_ctl MOD listener", epoll_ctl(ep, EPOLL_CTL_MOD, l, &ev));
    CALL("epoll_ctl DEL listener", epoll_ctl(ep, EPOLL_CTL_DEL, l, NULL));
    CALL("close (listener)", close(l));
}

static void epoll_family(void)
{
    FDCALL("epoll_create", epoll_create(1));
    CALL("epoll_create (size 0)", epoll_create(0));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    FDCALL("epoll_create1", ep);
    CALL("epoll_create1 (bad flags)", epoll_create1(12345));
    int p[2];
    xpipe(p);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]}, out[4];
    CALL("epoll_ctl ADD", epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev));
    CALL("epoll_ctl ADD (exists)", epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev));
    CALL("epoll_ctl ADD (bad epfd)", epoll_ctl(-1, EPOLL_CTL_ADD, p[0], &ev));
    CALL("epoll_ctl ADD (not epoll)", epoll_ctl(p[1], EPOLL_CTL_ADD, p[0], &ev));
    CALL("epoll_ctl ADD (itself)", epoll_ctl(ep, EPOLL_CTL_ADD, ep, &ev));
    CALL("epoll_ctl MOD", epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &ev));
    CALL("epoll_ctl MOD (not registered)", epoll_ctl(ep, EPOLL_CTL_MOD, p[1], &ev));
    CALL("epoll_ctl bad op", epoll_ctl(ep, 99, p[0], &ev));
    CALL("epoll_ctl DEL", epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL));
    CALL("epoll_ctl DEL (not registered)", epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL));
    CALL("epoll_ctl ADD again", epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev));
    CALL("epoll_wait (nothing ready)", epoll_wait(ep, out, 4, 0));
    if (write(p[1], "x", 1) != 1) setup_fail("write");
    CALL("epoll_wait (one ready)", epoll_wait(ep, out, 4, 0));
    CALL("epoll_wait (bad epfd)", epoll_wait(-1, out, 4, 0));
    CALL("epoll_wait (maxevents 0)", epoll_wait(ep, out, 0, 0));
    sigset_t mask;
    sigemptyset(&mask);
    CALL("epoll_pwait", epoll_pwait(ep, out, 4, 0, &mask));
    CALL("epoll_pwait (no mask)", epoll_pwait(ep, out, 4, 0, NULL));
    CALL("epoll_pwait (bad epfd)", epoll_pwait(-1, out, 4, 0, &mask));
    struct timespec zero = {0, 0}, bad = {0, -1};
    CALL("epoll_pwait2", epoll_pwait2(ep, out, 4, &zero, &mask));
    CALL("epoll_pwait2 (bad timeout)", epoll_pwait2(ep, out, 4, &bad, NULL));
    CALL("epoll_pwait2 (bad epfd)", epoll_pwait2(-1, out, 4, &zero, NULL));

    close_family(ep);
    stdio_family(ep);
    /* Last: listen() may give the process its spare descriptor (a number
     * the shim holds), which would shift the numbers printed above. */
    listener_family(ep);
    CALL("close (epoll fd)", close(ep));
}

/* A fork child that uses an inherited instance (the fork rule's paths), and
 * the parent closing a registration the child then relies on. */
static void fork_family(void)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), p[2], ready[2], go[2];
    struct epoll_event out[4];
    xpipe(p);
    xpipe(ready);
    xpipe(go);
    reg(ep, p[0]);
    epoll_wait(ep, out, 4, 0);
    int keep = dup(p[0]);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) setup_fail("fork");
    if (pid == 0) {
        int q[2];
        char b = 0;
        xpipe(q);
        close(go[1]);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = q[0]};
        CALL("child: epoll_wait (inherited instance)", epoll_wait(ep, out, 4, 0));
        CALL("child: epoll_ctl ADD (inherited instance)", epoll_ctl(ep, EPOLL_CTL_ADD, q[0], &ev));
        CALL("child: close (own registration)", close(q[0]));
        CALL("child: close (parent's registration)", close(keep));
        if (write(ready[1], &b, 1) != 1) _exit(2);
        /* Alive until the parent has closed its number (EOF on go). */
        if (read(go[0], &b, 1) < 0) _exit(2);
        _exit(0);
    }
    char b;
    close(go[0]);
    if (read(ready[0], &b, 1) != 1) setup_fail("child");
    CALL("close (registration a live child uses)", close(p[0]));
    close(go[1]);
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) setup_fail("child");
    close(keep);
    close(ep);
}

int main(int argc, char **argv)
{
    bool fork_too = !(argc > 1 && strcmp(argv[1], "nofork") == 0);
    setvbuf(stdout, NULL, _IOLBF, 0);
    base = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (base < 0) setup_fail("open");
    close(base);
    puts("begin");
    syscall(SYS_getppid);
    epoll_family();
    if (fork_too) fork_family();
    syscall(SYS_getppid);
    puts("end");
    return 0;
}
