/* epolltest: epoll hygiene scenarios, run with and without the shim.
 *
 *   epolltest SCENARIO [ARGS...]
 *
 * epoll registers an open file description under the number it was added
 * with. Once the description has another reference (dup, fork, SCM_RIGHTS),
 * closing that number leaves the registration alive: epoll_wait keeps
 * reporting a number that is closed, or now names something else, and it can
 * no longer be deleted. The shim deletes registrations before the close
 * family takes a number away. Each scenario builds one such situation and
 * reads the kernel's truth from /proc/self/fdinfo/EPFD ("tfd:" lines, with
 * the inode of the registered file) and from epoll_wait.
 *
 * Exit status (one result line on stdout in every case):
 *   0  the protected behaviour: no stale registration or event
 *   1  the failure the shim exists for: a stale registration or event
 *   2  usage or setup error (the scenario could not be built)
 *   3  a registration the program still holds was lost (over-deletion), or
 *      a check that must hold with and without the shim failed
 *
 * Scenarios:
 *   seed                 pipe registered, dup, close of the original
 *   dup2 | dup3          dup2/dup3 of another descriptor onto a registered one
 *   close_range          close_range over registered descriptors (after a
 *                        CLOSE_RANGE_CLOEXEC pass that must delete nothing)
 *   closefrom            closefrom over registered descriptors
 *   fclose               fclose of a registered stream
 *   epfd_reuse           close(epfd), the number reused by a new instance;
 *                        dup2 over an instance, the number then registered
 *                        elsewhere
 *   failed_close         dup2, dup3, close_range calls that fail: the
 *                        registration of the number they name stays
 *   epfd_move            the epoll fd moved to another number (F_DUPFD and
 *                        close): a later close still deletes
 *   fork_listener        fork children close a registered listener (close,
 *                        dup2 onto it, close_range) and exit; the parent's
 *                        registration stays and it still accepts
 *   vfork_close_range    a vfork child runs close_range(3, ~0U, 0) and exits;
 *                        the parent's registration and the shim's records
 *                        are intact (a later close still deletes)
 *   share_child KIND     a child that shares our memory (vfork, clone_vfork:
 *                        clone(CLONE_VM|CLONE_VFORK), clone_vm: clone(CLONE_VM)
 *                        running beside us) or copies it without the fork
 *                        handlers (raw_fork: syscall(SYS_fork), _Fork), or a
 *                        posix_spawn child, closes the registered number
 *                        (close, dup2 onto it, close_range) and exits: as
 *                        vfork_close_range
 *   sole HOW             a registered accepted socket closed: HOW none (its
 *                        last reference), dup (a duplicate held), fork (a
 *                        child holds it), spawn | vfork (a spawned child
 *                        holds it), scm (in flight in an SCM_RIGHTS message)
 *   dup2_same | dup3_same [socket] [nokcmp]
 *                        a saved duplicate dup2'd back onto its registered
 *                        number: the registration stays (an event, MOD
 *                        works), then a close with the duplicate held
 *                        deletes it; `nokcmp`: kcmp refused by seccomp
 *   unshare_range        a thread's close_range(LFD, ~0U, CLOSE_RANGE_UNSHARE)
 *   unshare_close        a thread's unshare(CLONE_FILES) and close loop: the
 *                        main thread keeps its event and its descriptor
 *                        count, then a close with a duplicate held deletes
 *   unshare_single       close_range(CLOSE_RANGE_UNSHARE) with one thread
 *                        closes for real
 *   fork_worker          a pre-fork worker waits on the inherited instance;
 *                        the parent closes its listener at once
 *   fork_worker_waited   the same after the parent waited on the instance,
 *                        and closes once the worker has waited
 *   fork_worker_exited | fork_worker_closed
 *                        the worker used the instance, then exited or closed
 *                        it; the parent's close (duplicate held) deletes
 *   fork_client          a server closes a client its fork child holds, then
 *                        the peer writes: no stale event for the server
 *   fork_client_nowait   the same, the server never waited on the instance
 *   fork_many [N]        N workers (600) use the server's instance and exit;
 *                        then fork_client on that instance
 *   model SEED STEPS     random operations checked against the kernel after
 *                        every step
 *   threads [N [ITERS]]  threads registering, closing, dup2-ing concurrently
 *   signal [kill|itimer] [MS]
 *                        a signal handler closes registered descriptors while
 *                        the main thread loops in epoll_ctl; it must finish,
 *                        and then closing the pool with duplicates held must
 *                        leave nothing stale
 *   exclusive N [CONNS]  N threads, one epoll set each, one listener: wake-ups
 *                        per connection (exit 1 when more than 1.5)
 *   exclusive_mod [app]  EPOLL_CTL_MOD of a listener registration; with `app`
 *                        the program sets EPOLLEXCLUSIVE itself (exit 1 when
 *                        MOD fails)
 *   exclusive_many       MOD of listener registrations after 60 instances at
 *                        distinct numbers, and with 50 instances alive (exit
 *                        1 when one is refused)
 *   exclusive_fault      ADD and MOD of a listener with bad event pointers:
 *                        the kernel's EFAULT, and the registration a bad MOD
 *                        names stays (exit 3 when lost)
 *   exclusive_refused    the kernel refuses every ADD but the program's own
 *                        (seccomp): MOD and ADD succeed, errno untouched */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

enum { OK = 0, STALE = 1, SETUP = 2, LOST = 3 };

static const char *g_name = "epolltest";

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    int saved = errno;
    printf("%s: setup error: ", g_name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf(" (errno %d: %s)\n", saved, strerror(saved));
    fflush(stdout);
    exit(SETUP);
}

/* ---- the kernel's view ----------------------------------------------------- */

struct kentry {
    int tfd;
    unsigned events;
    unsigned long long data;
    unsigned long ino;
};

#define KMAX 512

/* Reads the registrations of epoll instance ep from /proc/self/fdinfo/EP.
 * Returns their count (at most KMAX are stored), or -1. */
static int kernel_view(int ep, struct kentry *out)
{
    char path[64], buf[1 << 16];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", ep);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
        if (len == sizeof buf - 1) break;
    }
    close(fd);
    buf[len] = '\0';
    int count = 0;
    for (char *line = buf; line && *line;
         line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        struct kentry e;
        if (strncmp(line, "tfd:", 4) != 0) continue;
        if (sscanf(line, "tfd: %d events: %x data: %llx pos:%*d ino:%lx", &e.tfd, &e.events,
                   &e.data, &e.ino) != 4)
            continue;
        if (count < KMAX) out[count] = e;
        count++;
    }
    return count;
}

static unsigned long ino_of(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? (unsigned long)st.st_ino : 0;
}

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

/* What the program believes is registered in one instance. */
struct expect {
    int n;
    int fd[16];
    unsigned long ino[16];
};

static void expect_add(struct expect *x, int fd)
{
    if (x->n == 16) die("too many expectations");
    x->fd[x->n] = fd;
    x->ino[x->n] = ino_of(fd);
    x->n++;
}

static bool expected(const struct expect *x, int fd, unsigned long ino)
{
    for (int i = 0; i < x->n; i++)
        if (x->fd[i] == fd && x->ino[i] == ino) return true;
    return false;
}

/* Compares the kernel's registrations in ep with x. Every kernel entry must
 * be expected, with its number still open on the same file; every expected
 * one must be there. Also drains epoll_wait (no wait) for events that name a
 * number not expected. Prints the details; returns OK, STALE or LOST. */
static int verdict(const char *what, int ep, const struct expect *x)
{
    struct kentry k[KMAX];
    int n = kernel_view(ep, k);
    if (n < 0) die("cannot read /proc/self/fdinfo/%d", ep);
    int stale = 0, lost = 0, stale_events = 0;
    for (int i = 0; i < n && i < KMAX; i++) {
        bool open_same = fd_open(k[i].tfd) && ino_of(k[i].tfd) == k[i].ino;
        if (!expected(x, k[i].tfd, k[i].ino) || !open_same) {
            printf("%s: stale registration: tfd %d (ino %lx) is %s\n", what, k[i].tfd, k[i].ino,
                   !fd_open(k[i].tfd) ? "closed"
                   : !open_same       ? "open on another file"
                                      : "not registered by the program");
            stale++;
        }
    }
    for (int j = 0; j < x->n; j++) {
        bool found = false;
        for (int i = 0; i < n && i < KMAX; i++)
            if (k[i].tfd == x->fd[j] && k[i].ino == x->ino[j]) found = true;
        if (!found) {
            printf("%s: lost registration: fd %d is no longer in epoll instance %d\n", what,
                   x->fd[j], ep);
            lost++;
        }
    }
    struct epoll_event ev[16];
    int got = epoll_wait(ep, ev, 16, 0);
    for (int i = 0; i < got; i++) {
        int fd = ev[i].data.fd;
        bool known = false;
        for (int j = 0; j < x->n; j++)
            if (x->fd[j] == fd) known = true;
        if (!known) {
            printf("%s: stale event: epoll_wait reported fd %d (events %#x)%s\n", what, fd,
                   ev[i].events, fd_open(fd) ? "" : ", which is closed");
            stale_events++;
        }
    }
    printf("%s: %s (stale registrations %d, stale events %d, lost registrations %d)\n", what,
           lost                   ? "LOST"
           : stale + stale_events ? "STALE"
                                  : "OK",
           stale, stale_events, lost);
    return lost ? LOST : stale + stale_events ? STALE : OK;
}

/* ---- small building blocks ------------------------------------------------ */

static int xepoll(void)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    return ep;
}

static void xadd(int ep, int fd, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("EPOLL_CTL_ADD %d to %d", fd, ep);
}

static void xpipe(int p[2])
{
    if (pipe2(p, O_CLOEXEC) != 0) die("pipe2");
}

/* A fork child that holds a copy of everything the parent has open, until
 * the parent closes *go_write (set here); its pid. */
static pid_t fork_holder(int *go_write)
{
    int go[2];
    xpipe(go);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        char b;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(go[1]);
        if (read(go[0], &b, 1) < 0) _exit(2);
        _exit(0);
    }
    close(go[0]);
    *go_write = go[1];
    return pid;
}

static void xwrite(int fd)
{
    if (!write_all(fd, "x", 1)) die("write");
}

/* A duplicate of fd at or above `at`: keeps the description alive. */
static int hold(int fd, int at)
{
    int d = fcntl(fd, F_DUPFD_CLOEXEC, at);
    if (d < 0) die("F_DUPFD %d", at);
    return d;
}

static int listen_tcp(void)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(s, 64) != 0)
        die("listen on 127.0.0.1");
    return s;
}

static int connect_to(int lfd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    if (getsockname(lfd, (struct sockaddr *)&sa, &len) != 0) die("getsockname");
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&sa, len) != 0) die("connect");
    return c;
}

/* ---- single scenarios ------------------------------------------------------ */

/* The seed: a pipe registered, dup, close of the original. */
static int sc_seed(void)
{
    int p[2], ep = xepoll();
    xpipe(p);
    xadd(ep, p[0], EPOLLIN);
    int d = dup(p[0]);
    if (d < 0) die("dup");
    close(p[0]);
    xwrite(p[1]);
    struct expect none = {0};
    return verdict("seed", ep, &none);
}

/* dup2 / dup3 of another pipe onto a registered number. */
static int sc_dup23(bool three)
{
    const char *what = three ? "dup3" : "dup2";
    int p[2], q[2], ep = xepoll();
    xpipe(p);
    xpipe(q);
    xadd(ep, p[0], EPOLLIN);
    hold(p[0], 100);
    int r = three ? dup3(q[0], p[0], O_CLOEXEC) : dup2(q[0], p[0]);
    if (r != p[0]) die("%s", what);
    xwrite(p[1]); /* the old description is readable, the new one is not */
    struct expect none = {0};
    return verdict(what, ep, &none);
}

/* Registered descriptors at 200..202 (the originals stay open below), a
 * CLOSE_RANGE_CLOEXEC pass that must delete nothing, then the real close. */
static int sc_close_range(bool from)
{
    const char *what = from ? "closefrom" : "close_range";
    int ep = xepoll(), first = 200, n = 3;
    struct expect all = {0}, none = {0};
    for (int i = 0; i < n; i++) {
        int p[2];
        xpipe(p);
        int fd = fcntl(p[0], F_DUPFD_CLOEXEC, first + i);
        if (fd != first + i) die("F_DUPFD %d", first + i);
        xadd(ep, fd, EPOLLIN);
        expect_add(&all, fd);
        xwrite(p[1]);
    }
    if (!from) {
        if (close_range((unsigned)first, (unsigned)(first + n - 1), CLOSE_RANGE_CLOEXEC) != 0)
            die("close_range CLOEXEC");
        if (verdict("close_range(CLOEXEC)", ep, &all) != OK) return LOST;
        if (close_range((unsigned)first, (unsigned)(first + n - 1), 0) != 0) die("close_range");
    } else {
        closefrom(first);
    }
    return verdict(what, ep, &none);
}

static int sc_fclose(void)
{
    int p[2], ep = xepoll();
    xpipe(p);
    FILE *f = fdopen(p[0], "r");
    if (!f) die("fdopen");
    xadd(ep, fileno(f), EPOLLIN);
    hold(p[0], 100);
    fclose(f);
    xwrite(p[1]);
    struct expect none = {0};
    return verdict("fclose", ep, &none);
}

/* close(epfd) and the number comes back as a new instance; then dup2 of a
 * pipe over that instance, and the number is registered, as a plain
 * descriptor, in a third instance. The shim must forget an instance whose
 * number goes away and track whatever takes the number next. */
static int sc_epfd_reuse(void)
{
    int a[2], b[2];
    xpipe(a);
    int ep1 = xepoll();
    xadd(ep1, a[0], EPOLLIN);
    close(ep1);
    int ep2 = xepoll();
    if (ep2 != ep1) die("the epoll fd number %d was not reused (got %d)", ep1, ep2);
    xadd(ep2, a[0], EPOLLIN);
    hold(a[0], 100);
    close(a[0]);
    xwrite(a[1]);
    struct expect none = {0};
    int r1 = verdict("epfd_reuse (new instance)", ep2, &none);

    /* dup2 of a pipe over the instance: the number is now a plain
     * descriptor, registered in a third instance. */
    xpipe(b);
    int ep3 = xepoll();
    if (dup2(b[0], ep2) != ep2) die("dup2 onto the epoll fd");
    xadd(ep3, ep2, EPOLLIN);
    hold(ep2, 110);
    close(ep2);
    xwrite(b[1]);
    int r2 = verdict("epfd_reuse (plain descriptor)", ep3, &none);
    return r1 > r2 ? r1 : r2;
}

/* Calls of the close family that fail close nothing: dup2 from a bad
 * descriptor, dup3 with a bad flag, close_range with an unknown flag. The
 * registration of the number they name must survive. */
static int sc_failed_close(void)
{
    int p[2], ep = xepoll();
    xpipe(p);
    xadd(ep, p[0], EPOLLIN);
    struct expect x = {0};
    expect_add(&x, p[0]);
    int r1 = dup2(12345, p[0]);
    int r2 = dup3(p[1], p[0], O_NONBLOCK);
    int r3 = close_range((unsigned)p[0], (unsigned)p[0], 1 << 15);
    if (r1 != -1 || r2 != -1 || r3 != -1 || !fd_open(p[0]))
        die("the failing calls did not fail (%d %d %d)", r1, r2, r3);
    return verdict("failed_close", ep, &x);
}

/* The epoll fd is moved to another number (F_DUPFD, close of the old one):
 * the instance lives on with its registrations, which must still be deleted
 * when a registered number is closed. */
static int sc_epfd_move(void)
{
    int p[2], ep = xepoll();
    xpipe(p);
    xadd(ep, p[0], EPOLLIN);
    int moved = hold(ep, 100);
    close(ep);
    hold(p[0], 110);
    close(p[0]);
    xwrite(p[1]);
    struct expect none = {0};
    return verdict("epfd_move", moved, &none);
}

/* ---- fork ------------------------------------------------------------------ */

/* The child of a server (a background save, say) closes the inherited
 * listener, by one of three means, and exits. The registration lives in the
 * instance the parent shares with it and must stay. */
static int sc_fork_listener(void)
{
    static const char *const how[] = {"close", "dup2", "close_range"};
    int lfd = listen_tcp(), ep = xepoll(), result = OK;
    xadd(ep, lfd, EPOLLIN);
    struct expect x = {0};
    expect_add(&x, lfd);
    for (int m = 0; m < 3; m++) {
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (m == 0) close(lfd);
            if (m == 1) dup2(nul, lfd);
            if (m == 2) close_range(3, ~0U, 0);
            _exit(0);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            die("fork child");
        char what[64];
        snprintf(what, sizeof what, "fork_listener (child %s)", how[m]);
        int r = verdict(what, ep, &x);
        if (r == OK) {
            int c = connect_to(lfd);
            struct epoll_event ev;
            int n = epoll_wait(ep, &ev, 1, 2000);
            int a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            if (n != 1 || ev.data.fd != lfd || a < 0) {
                printf("%s: the parent got %d event(s) and %s\n", what, n,
                       a < 0 ? "could not accept" : "accepted");
                r = LOST;
            } else {
                printf("%s: the parent got the listener's event and accepted\n", what);
            }
            if (a >= 0) close(a);
            close(c);
        }
        if (r > result) result = r;
    }
    printf("fork_listener: %s\n", result == OK ? "OK" : "FAILED");
    return result;
}

/* The vfork child shares our memory (and the shim's) but has its own
 * descriptor table: its close_range must neither delete the parent's
 * registrations nor touch the shim's records. */
static pid_t vfork_and_close_range(void)
{
    pid_t pid = vfork();
    if (pid == 0) {
        close_range(3, ~0U, 0);
        _exit(0);
    }
    return pid;
}

static int sc_vfork_close_range(void)
{
    int p[2], ep = xepoll();
    xpipe(p);
    xadd(ep, p[0], EPOLLIN);
    hold(p[0], 100);
    struct expect x = {0}, none = {0};
    expect_add(&x, p[0]);
    pid_t pid = vfork_and_close_range();
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) die("vfork child");
    int r = verdict("vfork_close_range (after the child)", ep, &x);
    if (r != OK) return LOST;
    close(p[0]); /* a duplicate is held: only a DEL removes the registration */
    xwrite(p[1]);
    return verdict("vfork_close_range (parent closes)", ep, &none);
}

/* ---- children that share our memory, or copy it without the fork handlers - */

/* What every such child does: close the registered number g_child_fd, dup2
 * /dev/null onto it, close_range over it, then leave. In its own descriptor
 * table: the parent's registration must stay, and so must the shim's
 * records of it (the parent's later close still deletes). */
static int g_child_fd;

static int child_closes(void *arg)
{
    (void)arg;
    int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
    close(g_child_fd);
    if (nul >= 0) dup2(nul, g_child_fd);
    close_range((unsigned)g_child_fd, (unsigned)g_child_fd, 0);
    return 0;
}

static char g_clone_stack[256 * 1024] __attribute__((aligned(16)));

/* Starts a child of that kind; its pid (0 for posix_spawn: reaped here). */
static pid_t share_child(const char *kind)
{
    pid_t pid;
    if (!strcmp(kind, "vfork")) { /* the raw libc call, not posix_spawn */
        pid = vfork();
        if (pid == 0) _exit(child_closes(NULL));
    } else if (!strcmp(kind, "clone_vfork")) {
        pid = clone(child_closes, g_clone_stack + sizeof g_clone_stack,
                    CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
    } else if (!strcmp(kind, "clone_vm")) { /* runs beside us in our memory */
        pid = clone(child_closes, g_clone_stack + sizeof g_clone_stack, CLONE_VM | SIGCHLD, NULL);
    } else if (!strcmp(kind, "raw_fork")) { /* no fork handlers */
        pid = (pid_t)syscall(SYS_fork);
        if (pid == 0) _exit(child_closes(NULL));
    } else if (!strcmp(kind, "_Fork")) {
        pid = _Fork();
        if (pid == 0) _exit(child_closes(NULL));
    } else if (!strcmp(kind, "posix_spawn")) {
        posix_spawn_file_actions_t fa;
        char *argv[] = {"true", NULL}, *envp[] = {NULL};
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addclose(&fa, g_child_fd);
        int err = posix_spawnp(&pid, "true", &fa, NULL, argv, envp);
        posix_spawn_file_actions_destroy(&fa);
        if (err) {
            errno = err;
            die("posix_spawnp");
        }
    } else {
        die("unknown child kind %s", kind);
    }
    if (pid < 0) die("%s", kind);
    return pid;
}

static int sc_share_child(const char *kind)
{
    char what[96];
    int p[2], ep = xepoll();
    xpipe(p);
    xadd(ep, p[0], EPOLLIN);
    struct epoll_event ev[4];
    epoll_wait(ep, ev, 4, 0); /* the program's event loop */
    hold(p[0], 100);
    struct expect x = {0}, none = {0};
    expect_add(&x, p[0]);
    g_child_fd = p[0];
    pid_t pid = share_child(kind);
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die("%s child", kind);
    snprintf(what, sizeof what, "share_child %s (after the child)", kind);
    int r = verdict(what, ep, &x);
    if (r != OK) return LOST;
    close(p[0]); /* a duplicate is held: only a DEL removes the registration */
    xwrite(p[1]);
    snprintf(what, sizeof what, "share_child %s (parent closes)", kind);
    return verdict(what, ep, &none);
}

/* ---- an accepted socket's close: the last reference, or not -------------- */

/* A server registers a client it accepted and closes it. With nothing else
 * holding the description the kernel removes the registration itself (the
 * shim needs no DEL); after a dup, with a child holding it (fork, spawn) or
 * with it in flight in an SCM_RIGHTS message, only a DEL does. */
static int sc_sole(const char *how)
{
    int l = listen_tcp(), ep = xepoll(), sv[2] = {-1, -1}, holder_go;
    int c = connect_to(l);
    int a = accept(l, NULL, NULL); /* not close-on-exec: a spawned child inherits it */
    if (a < 0) die("accept");
    xadd(ep, a, EPOLLIN);
    struct epoll_event ev[4];
    epoll_wait(ep, ev, 4, 0); /* the program's event loop */
    pid_t child = 0;
    if (!strcmp(how, "dup")) {
        hold(a, 100);
    } else if (!strcmp(how, "fork")) {
        child = fork_holder(&holder_go); /* holds everything until the parent is done */
    } else if (!strcmp(how, "spawn") || !strcmp(how, "vfork")) {
        char *argv[] = {"sleep", "60", NULL}, *envp[] = {NULL};
        if (how[0] == 's') {
            int err = posix_spawn(&child, "/bin/sleep", NULL, NULL, argv, envp);
            if (err) errno = err, die("posix_spawn");
        } else if ((child = vfork()) == 0) {
            execve("/bin/sleep", argv, envp);
            _exit(127);
        }
    } else if (!strcmp(how, "scm")) {
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
        char byte = 0, ctl[CMSG_SPACE(sizeof(int))] = {0};
        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
        struct msghdr msg = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &a, sizeof(int));
        if (sendmsg(sv[0], &msg, 0) != 1) die("sendmsg"); /* in flight until received */
    } else if (strcmp(how, "none")) {
        die("unknown case %s", how);
    }
    close(a);
    if (!write_all(c, "x", 1)) die("write"); /* an event, if the registration lives on */
    struct expect none = {0};
    char what[64];
    snprintf(what, sizeof what, "sole %s", how);
    int r = verdict(what, ep, &none);
    if (child > 0) {
        if (!strcmp(how, "fork"))
            close(holder_go);
        else
            kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    }
    return r;
}

/* ---- the fork rule: pre-fork workers and a server's helper child ----------- */

/* A pre-fork worker: waits on the instance it inherited and accepts on the
 * listener its parent registered. `waited`: the parent ran its own loop on
 * the instance before forking, so it only learns the worker's use when the
 * worker tells it (ready pipe) that it has waited once. Returns the
 * worker's pid; it exits 0 when it accepted a connection within 5 s. */
static pid_t fork_worker(int ep, int lfd, int ready)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        struct epoll_event ev;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (ready >= 0) {
            epoll_wait(ep, &ev, 1, 0);
            if (write(ready, "r", 1) != 1) _exit(2);
        }
        int n = epoll_wait(ep, &ev, 1, 5000);
        int a = n == 1 && ev.data.fd == lfd ? accept4(lfd, NULL, NULL, SOCK_CLOEXEC) : -1;
        _exit(a >= 0 ? 0 : 1);
    }
    return pid;
}

static int worker_result(const char *what, pid_t pid)
{
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) > 1) die("worker");
    bool ok = WEXITSTATUS(st) == 0;
    printf("%s: the worker %s\n", what,
           ok ? "got the listener's event and accepted" : "got no event within 5 s");
    return ok ? OK : LOST;
}

/* The parent registers its listener, forks a worker that waits on the
 * inherited instance, and closes its own copy of the listener at once (the
 * worker may not have run yet). A client then connects: the worker must
 * get the event. `waited`: the parent has waited on the instance itself
 * (it is its event loop too); it closes after the worker said it waited. */
static int sc_fork_worker(bool waited)
{
    const char *what = waited ? "fork_worker (parent waited)" : "fork_worker";
    int lfd = listen_tcp(), ep = xepoll(), ready[2] = {-1, -1};
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    if (getsockname(lfd, (struct sockaddr *)&sa, &len) != 0) die("getsockname");
    xadd(ep, lfd, EPOLLIN);
    if (waited) {
        struct epoll_event ev;
        epoll_wait(ep, &ev, 1, 0);
        xpipe(ready);
    }
    pid_t pid = fork_worker(ep, lfd, ready[1]);
    if (waited) {
        char b;
        close(ready[1]);
        if (read(ready[0], &b, 1) != 1) die("the worker did not start");
    }
    close(lfd);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&sa, len) != 0) die("connect");
    int r = worker_result(what, pid);
    close(c);
    return r;
}

/* The worker used the instance and then went away: it exited, or it
 * closed the instance and lives on. The parent, which waits on the
 * instance, closes its registered listener while a duplicate is held: now
 * nobody else relies on the registration, and it must be deleted. */
static int sc_fork_worker_gone(bool closed)
{
    const char *what =
        closed ? "fork_worker_gone (closed the instance)" : "fork_worker_gone (exited)";
    int lfd = listen_tcp(), ep = xepoll(), ready[2], go[2];
    struct epoll_event ev;
    xadd(ep, lfd, EPOLLIN);
    epoll_wait(ep, &ev, 1, 0);
    hold(lfd, 100);
    xpipe(ready);
    xpipe(go);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        char b;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(go[1]);
        epoll_wait(ep, &ev, 1, 0);
        if (closed) close(ep);
        if (write(ready[1], "r", 1) != 1) _exit(2);
        if (closed && read(go[0], &b, 1) < 0) _exit(2);
        _exit(0);
    }
    char b;
    close(go[0]);
    close(ready[1]);
    if (read(ready[0], &b, 1) != 1) die("the worker did not start");
    int st;
    if (!closed && waitpid(pid, &st, 0) != pid) die("waitpid");
    close(lfd);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    if (c < 0 || getsockname(100, (struct sockaddr *)&sa, &len) != 0 ||
        connect(c, (struct sockaddr *)&sa, len) != 0)
        die("connect");
    struct expect none = {0};
    int r = verdict(what, ep, &none);
    close(go[1]);
    if (closed && waitpid(pid, &st, 0) != pid) die("waitpid");
    close(c);
    return r;
}

/* Redis's background save: the server forks a child that holds every
 * descriptor but never touches the instance, then closes a client. The
 * client's peer writes and hangs up: the server's instance must not report
 * the closed number. `nowait`: the server never waited on the instance
 * before it forked and closed (the fork rule leaves the registration then,
 * as without the shim). */
static int sc_fork_client(bool nowait)
{
    const char *what = nowait ? "fork_client (server never waited)" : "fork_client";
    int sv[2], go, ep = xepoll();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
    xadd(ep, sv[0], EPOLLIN);
    struct epoll_event ev[4];
    if (!nowait) epoll_wait(ep, ev, 4, 0);
    pid_t pid = fork_holder(&go);
    close(sv[0]); /* the child still holds the client */
    xwrite(sv[1]);
    close(sv[1]);
    struct expect none = {0};
    int r = verdict(what, ep, &none);
    close(go);
    int st;
    if (waitpid(pid, &st, 0) != pid) die("waitpid");
    return r;
}

/* More workers than the old 510-entry users page held, each using the
 * server's instance in turn. While the last one lives (its announcement the
 * N-th), the server's close of a registration leaves it (the worker may rely
 * on it). Once all are gone, redis's background save on that very instance
 * (as fork_client): the server's close must delete again, as in a process
 * that never had the workers (N = 0). */
static int sc_fork_many(int n)
{
    int p[2], q[2], ready[2], go[2], last[2], sv[2], ep = xepoll();
    struct epoll_event ev;
    xpipe(p);
    xpipe(q);
    xadd(ep, p[0], EPOLLIN);
    xadd(ep, q[0], EPOLLIN);
    epoll_wait(ep, &ev, 1, 0); /* the server's event loop */
    xpipe(ready);
    xpipe(go);
    xpipe(last);
    pid_t *pids = calloc((size_t)n + 1, sizeof *pids);
    if (!pids) die("calloc");
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] < 0) die("fork %d", i);
        if (pids[i] == 0) {
            char b;
            int wait_on = i == n - 1 ? last[0] : go[0];
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(go[1]);
            close(last[1]);
            epoll_wait(ep, &ev, 1, 0); /* a use of the inherited instance */
            if (write(ready[1], "r", 1) != 1) _exit(2);
            if (read(wait_on, &b, 1) < 0) _exit(2);
            _exit(0);
        }
        char b; /* one at a time: the announcements come in order */
        if (read(ready[0], &b, 1) != 1) die("worker %d did not start", i);
    }
    close(go[0]);
    close(last[0]);
    close(go[1]);
    for (int i = 0; i < n - 1; i++)
        if (waitpid(pids[i], NULL, 0) != pids[i]) die("waitpid");
    int qd = hold(q[0], 200), kept = 0;
    close(q[0]);
    struct kentry k[KMAX];
    int nk = kernel_view(ep, k);
    for (int i = 0; i < nk && i < KMAX; i++)
        kept += k[i].tfd == q[0];
    printf("fork_many: %d workers used the instance, all but the last exited; "
           "the server's close %s the registration\n",
           n, kept ? "left" : "deleted");
    /* Registered again under its number, and deleted: a clean instance. */
    if (dup2(qd, q[0]) != q[0] || (kept && epoll_ctl(ep, EPOLL_CTL_DEL, q[0], NULL) != 0))
        die("restore");
    close(qd);
    close(q[0]);
    close(q[1]);
    close(last[1]);
    if (n > 0 && waitpid(pids[n - 1], NULL, 0) != pids[n - 1]) die("waitpid");
    free(pids);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
    xadd(ep, sv[0], EPOLLIN);
    epoll_wait(ep, &ev, 1, 0);
    int hold_go;
    pid_t pid = fork_holder(&hold_go);
    close(sv[0]); /* the background child still holds the client */
    xwrite(sv[1]);
    close(sv[1]);
    struct expect x = {0};
    expect_add(&x, p[0]);
    int r = verdict("fork_many", ep, &x);
    close(hold_go);
    if (waitpid(pid, NULL, 0) != pid) die("waitpid");
    return r;
}

/* ---- a number restored from a saved duplicate ----------------------------- */

/* No kcmp (as under a container's default seccomp profile): kcmp fails with
 * EPERM, the shim's fallback answers. Returns the errno kcmp now gives. */
static int block_kcmp(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_kcmp, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        die("seccomp filter");
    errno = 0;
    syscall(SYS_kcmp, getpid(), getpid(), 0, 0, 0);
    return errno;
}

/* The registered number restored from a saved duplicate (dup2 or dup3 of a
 * number naming the same open file description onto it): it never stops
 * naming the registered file, so the registration stays: the write is
 * reported and EPOLL_CTL_MOD works. Then the number is closed while the
 * duplicate is held: the registration must go (the shim's records lived
 * on). `sock`: a socket pair instead of a pipe; `nokcmp`: without kcmp. */
static int sc_dup2_same(bool three, bool sock, bool nokcmp)
{
    const char *what = three ? "dup3_same" : "dup2_same";
    if (nokcmp) printf("%s: kcmp blocked (%s)\n", what, strerror(block_kcmp()));
    int p[2], ep = xepoll();
    if (sock ? socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) != 0
             : pipe2(p, O_CLOEXEC) != 0)
        die("pipe or socketpair");
    xadd(ep, p[0], EPOLLIN);
    int saved = hold(p[0], 100);
    if ((three ? dup3(saved, p[0], O_CLOEXEC) : dup2(saved, p[0])) != p[0]) die("%s", what);
    xwrite(p[1]);
    struct epoll_event ev[4];
    int n = epoll_wait(ep, ev, 4, 0);
    struct epoll_event mod = {.events = EPOLLIN | EPOLLOUT, .data.fd = p[0]};
    int m = epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &mod);
    printf("%s (%s): %d event(s)%s; EPOLL_CTL_MOD returned %d%s%s\n", what,
           sock ? "socket" : "pipe", n,
           n > 0 && ev[0].data.fd == p[0] ? " for the restored number" : "", m, m ? ", " : "",
           m ? strerror(errno) : "");
    struct expect x = {0}, none = {0};
    expect_add(&x, p[0]);
    int r = verdict(what, ep, &x);
    if (n != 1 || m != 0) r = LOST;
    if (r != OK) return r;
    close(p[0]); /* the duplicate is held: only a DEL removes the registration */
    char what2[64];
    snprintf(what2, sizeof what2, "%s (then closed)", what);
    return verdict(what2, ep, &none);
}

/* ---- threads with a private descriptor table ------------------------------- */

static int count_fds(void)
{
    int n = 0;
    char path[64];
    for (int fd = 0; fd < 1024; fd++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        n += access(path, F_OK) == 0;
    }
    return n;
}

struct unshare_ctx {
    bool range;
    int lo;
};

static void *unshare_main(void *arg)
{
    struct unshare_ctx *u = arg;
    if (u->range) {
        if (close_range((unsigned)u->lo, ~0U, CLOSE_RANGE_UNSHARE) != 0)
            die("close_range(UNSHARE)");
    } else {
        if (unshare(CLONE_FILES) != 0) die("unshare(CLONE_FILES)");
        for (int fd = 1023; fd >= 3; fd--)
            close(fd);
    }
    return NULL;
}

/* A thread gives itself a private copy of the descriptor table and closes
 * in it: close_range(LFD, ~0U, CLOSE_RANGE_UNSHARE), or unshare(CLONE_FILES)
 * and a close loop over every number. The main thread's table is not
 * touched: its registration must still report the write, and the process
 * must hold as many descriptors as before (the shim's spare, armed by
 * listen(), is still its own: a later accept must not arm a second one).
 * Then the main thread closes the registered number while a duplicate is
 * held: the shim's records must have survived to delete it. */
static int sc_unshare(bool range)
{
    const char *what = range ? "unshare_range" : "unshare_close";
    int ep = xepoll(), lfd = listen_tcp(), p[2];
    xpipe(p);
    xadd(ep, p[0], EPOLLIN);
    int before = count_fds();
    pthread_t t;
    struct unshare_ctx u = {.range = range, .lo = lfd};
    if (pthread_create(&t, NULL, unshare_main, &u) != 0) die("pthread_create");
    pthread_join(t, NULL);
    if (accept4(lfd, NULL, NULL, SOCK_CLOEXEC) >= 0 || errno != EAGAIN) die("accept4");
    int after = count_fds();
    xwrite(p[1]);
    struct epoll_event ev[4];
    int n = epoll_wait(ep, ev, 4, 0);
    printf("%s: the main thread got %d event(s); descriptors %d -> %d\n", what, n, before, after);
    if (n != 1 || after != before) {
        printf("%s: LOST\n", what);
        return LOST;
    }
    hold(p[0], 100);
    close(p[0]);
    struct expect none = {0};
    char what2[64];
    snprintf(what2, sizeof what2, "%s (main thread closes)", what);
    return verdict(what2, ep, &none);
}

/* close_range(CLOSE_RANGE_UNSHARE) in a process with one thread: nothing
 * shares the table, the kernel copies nothing, and the numbers really
 * close: registrations must be deleted as for a plain close_range. */
static int sc_unshare_single(void)
{
    int p[2], ep = xepoll();
    xpipe(p);
    int fd = fcntl(p[0], F_DUPFD_CLOEXEC, 200);
    if (fd != 200) die("F_DUPFD 200");
    xadd(ep, fd, EPOLLIN);
    if (close_range(200, ~0U, CLOSE_RANGE_UNSHARE) != 0) die("close_range(UNSHARE)");
    xwrite(p[1]);
    struct expect none = {0};
    return verdict("unshare_single", ep, &none);
}

/* ---- the randomised model -------------------------------------------------- */

/* The program's view: which numbers it has open and what they are, and what
 * it registered where. An epoll instance may be named by several numbers
 * (dup, F_DUPFD, dup2 of its fd); it lives while one of them is open. A data
 * descriptor's file is known by its inode (sockets: one each). */
#define M_FDS 64   /* numbers the model knows about */
#define M_HI 48    /* operations target numbers below this */
#define M_EPFDS 5  /* numbers naming epoll instances, at most */
#define M_INST 16  /* instance slots */
#define M_DATA 24  /* data descriptors, at most */
#define M_ROUNDS 8 /* fork children close this many numbers */
enum { M_FREE, M_DATA_FD, M_EPOLL_FD, M_FOREIGN };

#define M_KEPT 64 /* registrations left in place by the fork rule, per instance */

struct model {
    uint64_t rng;
    int kind[M_FDS];
    unsigned long ino[M_FDS]; /* data number: the file it refers to */
    int inst[M_FDS];          /* epoll number: the instance it names */
    bool inst_live[M_INST];
    /* reg[i][t]: the inode registered under number t in instance i, or 0 */
    unsigned long reg[M_INST][M_FDS];
    /* The fork rule (README, "Epoll hygiene in detail"): the program waits
     * on an instance (its event loop) or hands it to children and never
     * does; forked: the program forked while the instance existed;
     * recorded: a registration in it was recorded (it has a serial). */
    bool waits[M_INST], forked[M_INST], recorded[M_INST];
    /* Registrations the rule leaves in place when the program closes its
     * number: the kernel may keep them (another process holds the file),
     * so they are allowed, not required. */
    struct {
        int fd;
        unsigned long ino;
    } kept[M_INST][M_KEPT];
    int nkept[M_INST];
    /* A worker: a child that waited on instance worker_inst and lives on. */
    pid_t worker;
    int worker_inst, worker_ctl, worker_steps;
    /* Accepted sockets (the shim may skip the DEL when their close drops
     * the last reference): sole[fd] while the program has given nobody
     * another reference (no dup, no child, not sent). A listener, a socket
     * pair whose queue holds descriptors sent with SCM_RIGHTS (in flight:
     * the kernel holds a reference), and a spawned child (posix_spawn or
     * vfork + exec of sleep) that inherited what is not close-on-exec. */
    bool sole[M_FDS];
    int listener, rights[2], in_flight;
    pid_t holder;
    long steps, bad_steps, stale, lost, risky, aliased, kept_total, same_kept, unshared;
    long sole_closed, held_closed;
    long ops[24];
};

enum {
    OP_OPEN,
    OP_ADD,
    OP_MOD,
    OP_DEL,
    OP_DUP,
    OP_DUP2,
    OP_DUP3,
    OP_CLOSE,
    OP_CLOSE_RANGE,
    OP_FORK,
    OP_VFORK,
    OP_CLOSE_EPFD,
    OP_CREATE_EPFD,
    OP_DUP_EPFD,
    OP_DUP2_SAME,
    OP_WORKER,
    OP_UNSHARE,
    OP_ACCEPT,
    OP_SEND,
    OP_RECV,
    OP_SPAWN,
    OP_COUNT
};
static const char *const op_names[OP_COUNT] = {
    "open",      "add",         "mod",     "del",    "dup",         "dup2",        "dup3",
    "close",     "close_range", "fork",    "vfork",  "close_epfd",  "create_epfd", "dup_epfd",
    "dup2_same", "worker",      "unshare", "accept", "send_rights", "recv_rights", "spawn"};
static const int op_weight[OP_COUNT] = {8, 22, 6, 8, 10, 8, 4, 14, 4, 3, 2,
                                        2, 5,  3, 4, 2,  2, 8, 3,  2, 2};

static uint64_t rnd(struct model *m)
{
    /* splitmix64 */
    uint64_t z = (m->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int rnd_below(struct model *m, int n)
{
    return n > 0 ? (int)(rnd(m) % (uint64_t)n) : 0;
}

/* A random number of the given kind, or -1. */
static int pick(struct model *m, int kind)
{
    int c[M_FDS], n = 0;
    for (int fd = 0; fd < M_HI; fd++)
        if (m->kind[fd] == kind) c[n++] = fd;
    return n ? c[rnd_below(m, n)] : -1;
}

static int count_kind(const struct model *m, int kind)
{
    int n = 0;
    for (int fd = 0; fd < M_FDS; fd++)
        n += m->kind[fd] == kind;
    return n;
}

/* A number the program may close or overwrite: not inherited from outside. */
static int pick_target(struct model *m)
{
    for (int tries = 0; tries < 64; tries++) {
        int fd = 3 + rnd_below(m, M_HI - 3);
        if (m->kind[fd] != M_FOREIGN) return fd;
    }
    return -1;
}

static bool m_registered(const struct model *m, int t)
{
    for (int i = 0; i < M_INST; i++)
        if (m->reg[i][t]) return true;
    return false;
}

/* A registered data number (in any instance), or -1. */
static int pick_registered(struct model *m)
{
    int c[M_FDS], n = 0;
    for (int t = 0; t < M_HI; t++)
        if (m->kind[t] == M_DATA_FD && m_registered(m, t)) c[n++] = t;
    return n ? c[rnd_below(m, n)] : -1;
}

/* Does the fork rule leave the registrations of instance i in place when the
 * program closes their numbers? Only once it forked while i existed; then
 * if the program never waits on i (it is not its event loop), or the live
 * worker uses i. */
static bool m_keeps(const struct model *m, int i)
{
    return m->forked[i] && (!m->waits[i] || (m->worker > 0 && m->worker_inst == i));
}

static void m_keep(struct model *m, int i, int fd, unsigned long ino)
{
    m->kept_total++;
    for (int k = 0; k < m->nkept[i]; k++)
        if (m->kept[i][k].fd == fd && m->kept[i][k].ino == ino) return;
    if (m->nkept[i] == M_KEPT) return; /* m_check prunes what the kernel dropped */
    m->kept[i][m->nkept[i]].fd = fd;
    m->kept[i][m->nkept[i]].ino = ino;
    m->nkept[i]++;
}

static bool m_kept(const struct model *m, int i, int fd, unsigned long ino)
{
    for (int k = 0; k < m->nkept[i]; k++)
        if (m->kept[i][k].fd == fd && m->kept[i][k].ino == ino) return true;
    return false;
}

/* The program's view of a number going away (close, or replaced by dup2):
 * its registrations are gone; if it was the last number of an instance, the
 * instance is gone with everything in it. */
static void m_closed(struct model *m, int fd)
{
    if (fd < 0 || fd >= M_FDS || m->kind[fd] == M_FOREIGN) return;
    if (m->kind[fd] == M_DATA_FD) {
        bool registered = m_registered(m, fd), shared = false;
        for (int i = 0; i < M_INST; i++) {
            if (m->reg[i][fd] && m_keeps(m, i)) m_keep(m, i, fd, m->reg[i][fd]);
            m->reg[i][fd] = 0;
        }
        for (int o = 0; o < M_FDS; o++)
            shared |= o != fd && m->kind[o] == M_DATA_FD && m->ino[o] == m->ino[fd];
        m->risky += registered && shared;                /* the stale case, unless deleted */
        if (registered && m->sole[fd]) m->sole_closed++; /* the kernel removes them itself */
        m->sole[fd] = false;
    } else if (m->kind[fd] == M_EPOLL_FD) {
        int i = m->inst[fd];
        bool named = false;
        for (int o = 0; o < M_FDS; o++)
            named |= o != fd && m->kind[o] == M_EPOLL_FD && m->inst[o] == i;
        if (!named) {
            memset(m->reg[i], 0, sizeof m->reg[i]);
            m->inst_live[i] = false;
            m->nkept[i] = 0;
        } else {
            m->aliased++; /* the instance lives on under another number */
        }
    }
    m->kind[fd] = M_FREE;
    m->ino[fd] = 0;
}

static void m_new_data(struct model *m, int fd, unsigned long ino)
{
    if (fd < 0) return;
    if (fd >= M_HI) { /* out of the model's space: give it back */
        close(fd);
        return;
    }
    m->kind[fd] = M_DATA_FD;
    m->ino[fd] = ino;
    m->sole[fd] = false;
}

/* A registered accepted socket that is still sole, or -1. */
static int pick_sole(struct model *m)
{
    int c[M_FDS], n = 0;
    for (int t = 0; t < M_HI; t++)
        if (m->kind[t] == M_DATA_FD && m->sole[t] && m_registered(m, t)) c[n++] = t;
    return n ? c[rnd_below(m, n)] : -1;
}

/* The program's descriptions get another reference: none is sole. */
static void m_unsole_all(struct model *m)
{
    memset(m->sole, 0, sizeof m->sole);
}

/* ---- accepted sockets, descriptors in flight, a spawned holder ------------ */

static void m_forked(struct model *m);

/* A child made with vfork holds every description. */
static void m_vforked(struct model *m)
{
    m_unsole_all(m);
#ifdef __SANITIZE_THREAD__
    m_forked(m); /* ThreadSanitizer's vfork is a fork: fork handlers ran */
#endif
}

static void m_accept(struct model *m)
{
    int c = connect_to(m->listener);
    int a = rnd_below(m, 2) ? accept(m->listener, NULL, NULL)
                            : accept4(m->listener, NULL, NULL,
                                      SOCK_NONBLOCK | (rnd_below(m, 2) ? SOCK_CLOEXEC : 0));
    if (a < 0) die("accept");
    close(c);
    if (a >= M_HI) {
        close(a);
        return;
    }
    m_new_data(m, a, ino_of(a));
    m->sole[a] = true;
    /* As a server does: registered at once, mostly. */
    int ep = pick(m, M_EPOLL_FD);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = a};
    if (ep >= 0 && rnd_below(m, 4) && epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev) == 0) {
        m->reg[m->inst[ep]][a] = m->ino[a];
        m->recorded[m->inst[ep]] = true;
    }
}

/* One to three data numbers (registered and sole ones by preference) sent
 * with SCM_RIGHTS into the holding pair, where they stay in flight. */
static void m_send(struct model *m)
{
    int fds[3], n = 1 + rnd_below(m, 3);
    for (int i = 0; i < n; i++) {
        int fd = rnd_below(m, 4) ? pick_sole(m) : -1;
        if (fd < 0) fd = rnd_below(m, 2) ? pick_registered(m) : pick(m, M_DATA_FD);
        if (fd < 0) return;
        fds[i] = fd;
    }
    char byte = 0, ctl[CMSG_SPACE(sizeof fds)];
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = ctl,
                         .msg_controllen = CMSG_SPACE(n * sizeof(int))};
    memset(ctl, 0, sizeof ctl);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(n * sizeof(int));
    memcpy(CMSG_DATA(c), fds, n * sizeof(int));
    int r;
    if (rnd_below(m, 2)) {
        r = (int)sendmsg(m->rights[0], &msg, MSG_DONTWAIT);
    } else {
        struct mmsghdr mm = {.msg_hdr = msg};
        r = sendmmsg(m->rights[0], &mm, 1, MSG_DONTWAIT) == 1 ? 1 : -1;
    }
    if (r < 0) return; /* the queue is full: nothing sent */
    m->in_flight++;
    for (int i = 0; i < n; i++)
        m->sole[fds[i]] = false;
}

/* What is in flight is received and closed (numbers above the model's). */
static void m_recv(struct model *m)
{
    while (m->in_flight > 0) {
        char byte, ctl[CMSG_SPACE(3 * sizeof(int))];
        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
        struct msghdr msg = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
        if (recvmsg(m->rights[1], &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) <= 0) die("recvmsg");
        m->in_flight--;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int fds[3];
            memcpy(fds, CMSG_DATA(c), n * sizeof(int));
            for (size_t i = 0; i < n; i++) {
                /* Received low: move it out of the model's numbers first. */
                int high = hold(fds[i], 300);
                close(fds[i]);
                close(high);
            }
        }
    }
}

/* A child that execs and lives on: it holds every description that is not
 * close-on-exec (accepted with accept(): not). posix_spawn or vfork + exec. */
static void m_spawn(struct model *m)
{
    if (m->holder > 0) {
        kill(m->holder, SIGKILL);
        waitpid(m->holder, NULL, 0);
        m->holder = 0;
        return;
    }
    char *argv[] = {"sleep", "600", NULL}, *envp[] = {NULL};
    pid_t pid;
    if (rnd_below(m, 2)) {
        int err = posix_spawn(&pid, "/bin/sleep", NULL, NULL, argv, envp);
        if (err) {
            errno = err;
            die("posix_spawn");
        }
        m_unsole_all(m);
    } else {
        pid = vfork();
        if (pid == 0) {
            execve("/bin/sleep", argv, envp);
            _exit(127);
        }
        if (pid < 0) die("vfork");
        m_vforked(m);
    }
    m->holder = pid;
}

/* Kernel against model, every live instance, read through one of its
 * numbers. Returns the number of mismatches. */
static long m_check(struct model *m, bool verbose)
{
    long bad = 0;
    struct kentry k[KMAX];
    for (int i = 0; i < M_INST; i++) {
        if (!m->inst_live[i]) continue;
        int e = -1;
        for (int fd = 0; fd < M_FDS && e < 0; fd++)
            if (m->kind[fd] == M_EPOLL_FD && m->inst[fd] == i) e = fd;
        if (m->waits[i]) { /* the program's event loop: it waits on the instance */
            struct epoll_event ev[16];
            epoll_wait(e, ev, 16, 0);
        }
        int n = kernel_view(e, k);
        if (n < 0) die("cannot read /proc/self/fdinfo/%d", e);
        for (int q = 0; q < m->nkept[i]; q++) { /* the kernel dropped it: forget it */
            bool there = false;
            for (int j = 0; j < n && j < KMAX; j++)
                there |= k[j].tfd == m->kept[i][q].fd && k[j].ino == m->kept[i][q].ino;
            if (!there) m->kept[i][q--] = m->kept[i][--m->nkept[i]];
        }
        for (int j = 0; j < n && j < KMAX; j++) {
            int t = k[j].tfd;
            bool ok = (t >= 0 && t < M_FDS && m->kind[t] == M_DATA_FD && m->reg[i][t] == k[j].ino &&
                       ino_of(t) == k[j].ino) ||
                      m_kept(m, i, t, k[j].ino);
            if (!ok) {
                m->stale++;
                bad++;
                if (verbose)
                    printf("  step %ld: instance at %d: stale tfd %d (ino %lx)\n", m->steps, e, t,
                           k[j].ino);
            }
        }
        for (int t = 0; t < M_FDS; t++) {
            if (!m->reg[i][t]) continue;
            bool found = false;
            for (int j = 0; j < n && j < KMAX; j++)
                found |= k[j].tfd == t && k[j].ino == m->reg[i][t];
            if (!found) {
                m->lost++;
                bad++;
                if (verbose)
                    printf("  step %ld: instance at %d: lost registration of fd %d\n", m->steps, e,
                           t);
            }
        }
    }
    return bad;
}

/* What a fork child does: registers an inherited descriptor in an inherited
 * instance and closes it again (that registration is the child's own: it must
 * be deleted, or the parent would find it in its instance), then closes a few
 * numbers, registered ones by preference, by close, dup2 onto them or
 * close_range, and exits. */
static void m_child(struct model *m)
{
    int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int ep = pick(m, M_EPOLL_FD), fd = pick(m, M_DATA_FD);
    if (ep >= 0 && fd >= 0 && !m->reg[m->inst[ep]][fd] && rnd_below(m, 2)) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0) {
            if (nul >= 0 && rnd_below(m, 2))
                dup2(nul, fd);
            else
                close(fd);
            m->kind[fd] = M_FREE;
        }
    }
    for (int i = 0; i < M_ROUNDS; i++) {
        fd = rnd_below(m, 4) ? pick_registered(m) : pick_target(m);
        if (fd < 0) fd = pick(m, M_EPOLL_FD);
        if (fd < 0) continue;
        switch (rnd_below(m, 3)) {
        case 0:
            close(fd);
            break;
        case 1:
            if (nul >= 0) dup2(nul, fd);
            break;
        default:
            close_range((unsigned)fd, (unsigned)fd + (unsigned)rnd_below(m, 3), 0);
        }
        m->kind[fd] = M_FREE;
    }
    _exit(0);
}

/* dup, F_DUPFD(_CLOEXEC), dup2 or dup3 of src; the new number, or -1. The
 * target of dup2/dup3 is taken away first in the model. */
static int m_dup_any(struct model *m, int src)
{
    int to = -1;
    switch (rnd_below(m, 4)) {
    case 0:
        return dup(src);
    case 1:
        return fcntl(src, rnd_below(m, 2) ? F_DUPFD : F_DUPFD_CLOEXEC, 3 + rnd_below(m, M_HI - 3));
    default:
        to = rnd_below(m, 2) ? pick_registered(m) : pick_target(m);
        if (to < 0 || to == src) return -1;
        if ((rnd_below(m, 2) ? dup2(src, to) : dup3(src, to, O_CLOEXEC)) != to) die("dup2/dup3");
        m_closed(m, to);
        return to;
    }
}

/* dup2/dup3(src, to) happened. If both named the same file (a saved
 * duplicate restored), `to` never stopped naming it: its registrations
 * stay. Otherwise `to` was closed and now names src's file. */
static void m_replaced(struct model *m, int src, int to)
{
    if (m->kind[to] == M_DATA_FD && m->ino[to] == m->ino[src]) {
        m->same_kept += m_registered(m, to);
        return;
    }
    unsigned long ino = m->ino[src];
    m_closed(m, to);
    m_new_data(m, to, ino);
}

/* Another number with the same file as `to`, or -1. */
static int pick_same(struct model *m, int to)
{
    int c[M_FDS], n = 0;
    for (int fd = 0; fd < M_HI; fd++)
        if (fd != to && m->kind[fd] == M_DATA_FD && m->ino[fd] == m->ino[to]) c[n++] = fd;
    return n ? c[rnd_below(m, n)] : -1;
}

/* The program forked: every live instance is shared with the child. */
static void m_forked(struct model *m)
{
    for (int i = 0; i < M_INST; i++)
        if (m->inst_live[i]) m->forked[i] = true;
    m_unsole_all(m);
}

/* A pre-fork worker: waits once on an inherited instance (its use is then
 * known), tells the parent, and lives until told to go. */
static void m_worker_start(struct model *m)
{
    int ep = pick(m, M_EPOLL_FD), ready[2], ctl[2];
    if (ep < 0) return;
    if (pipe2(ready, O_CLOEXEC) != 0 || pipe2(ctl, O_CLOEXEC) != 0) die("pipe2");
    int r = hold(ready[0], 100), c = hold(ctl[1], 101);
    int rw = hold(ready[1], 102), cr = hold(ctl[0], 103);
    close(ready[0]), close(ready[1]), close(ctl[0]), close(ctl[1]);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        struct epoll_event ev[4];
        char b = 0;
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed run */
        epoll_wait(ep, ev, 4, 0);
        if (write(rw, &b, 1) != 1 || read(cr, &b, 1) < 0) _exit(1);
        _exit(0);
    }
    close(rw);
    close(cr);
    char b;
    if (read(r, &b, 1) != 1) die("the worker did not start");
    close(r);
    m_forked(m);
    m->worker = pid;
    m->worker_ctl = c;
    /* Its wait is a use only if the instance had a registration then. */
    m->worker_inst = m->recorded[m->inst[ep]] ? m->inst[ep] : -1;
}

static void m_worker_end(struct model *m)
{
    char b = 0;
    int st;
    if (write(m->worker_ctl, &b, 1) != 1 || waitpid(m->worker, &st, 0) != m->worker)
        die("worker exit");
    close(m->worker_ctl);
    m->worker = 0;
    m->worker_inst = -1;
}

/* A thread that gives itself a private copy of the descriptor table and
 * closes in it: the program's own table, and so its registrations, stay as
 * they were. */
static void *m_unshare_main(void *arg)
{
    struct model *m = arg;
    int lo = 3 + rnd_below(m, M_HI - 3);
    if (rnd_below(m, 2)) {
        close_range((unsigned)lo, rnd_below(m, 2) ? ~0U : (unsigned)lo + 4, CLOSE_RANGE_UNSHARE);
    } else {
        if (unshare(CLONE_FILES) != 0) die("unshare(CLONE_FILES)");
        for (int fd = lo; fd < M_HI; fd++)
            if (m->kind[fd] != M_FOREIGN) close(fd);
    }
    return NULL;
}

static void m_unshare_thread(struct model *m)
{
    pthread_t t;
    if (pthread_create(&t, NULL, m_unshare_main, m) != 0) die("pthread_create");
    pthread_join(t, NULL);
    m->unshared++;
    m_unsole_all(m);
}

static void m_step(struct model *m)
{
    int total = 0, op = 0;
    bool can_create = count_kind(m, M_EPOLL_FD) < M_EPFDS;
    if (count_kind(m, M_EPOLL_FD) == 0) {
        op = OP_CREATE_EPFD;
    } else {
        for (int i = 0; i < OP_COUNT; i++)
            total += (i == OP_CREATE_EPFD || i == OP_DUP_EPFD) && !can_create ? 0 : op_weight[i];
        int r = rnd_below(m, total);
        for (op = 0; op < OP_COUNT; op++) {
            int w = (op == OP_CREATE_EPFD || op == OP_DUP_EPFD) && !can_create ? 0 : op_weight[op];
            if (r < w) break;
            r -= w;
        }
    }
    if (op == OP_OPEN && count_kind(m, M_DATA_FD) >= M_DATA) op = OP_CLOSE;
    if (op != OP_OPEN && op != OP_CREATE_EPFD && op != OP_DUP_EPFD && count_kind(m, M_DATA_FD) == 0)
        op = OP_OPEN;
    m->ops[op]++;

    int ep = pick(m, M_EPOLL_FD), fd, to;
    int in = ep >= 0 ? m->inst[ep] : -1;
    struct epoll_event ev = {0};
    switch (op) {
    case OP_OPEN: {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
            die("socketpair");
        m_new_data(m, sv[0], ino_of(sv[0]));
        m_new_data(m, sv[1], ino_of(sv[1]));
        break;
    }
    case OP_ADD:
    case OP_MOD:
        fd = rnd_below(m, 3) ? pick(m, M_DATA_FD) : pick_registered(m);
        if (fd < 0) break;
        ev.events = EPOLLIN | (rnd_below(m, 2) ? EPOLLOUT : 0) | (rnd_below(m, 4) ? 0 : EPOLLET);
        ev.data.fd = fd;
        if (op == OP_ADD && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0) {
            m->reg[in][fd] = m->ino[fd];
            m->recorded[in] = true;
        }
        if (op == OP_MOD) epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        break;
    case OP_DEL:
        fd = rnd_below(m, 4) ? pick_registered(m) : pick(m, M_DATA_FD);
        if (fd < 0) break;
        if (epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) == 0 || errno == ENOENT) m->reg[in][fd] = 0;
        break;
    case OP_DUP:
        fd = rnd_below(m, 2) ? pick_sole(m) : -1;
        if (fd < 0) fd = rnd_below(m, 2) ? pick_registered(m) : pick(m, M_DATA_FD);
        if (fd < 0) break;
        to = rnd_below(m, 2) ? dup(fd) : fcntl(fd, F_DUPFD_CLOEXEC, 3 + rnd_below(m, M_HI - 3));
        m_new_data(m, to, m->ino[fd]);
        m->sole[fd] = false;
        break;
    case OP_DUP2:
    case OP_DUP3:
        fd = rnd_below(m, 2) ? pick_sole(m) : -1;
        if (fd < 0) fd = pick(m, M_DATA_FD);
        to = rnd_below(m, 2) ? pick_registered(m) : pick_target(m);
        if (fd < 0 || to < 0 || fd == to) break;
        if ((op == OP_DUP2 ? dup2(fd, to) : dup3(fd, to, O_CLOEXEC)) != to) die("dup2/dup3");
        m_replaced(m, fd, to);
        m->sole[fd] = false;
        break;
    case OP_DUP2_SAME: /* restore a number from a saved duplicate */
        to = pick_registered(m);
        fd = to >= 0 ? pick_same(m, to) : -1;
        if (fd < 0) break;
        if ((rnd_below(m, 2) ? dup2(fd, to) : dup3(fd, to, O_CLOEXEC)) != to) die("dup2/dup3");
        m_replaced(m, fd, to);
        break;
    case OP_CLOSE:
        fd = rnd_below(m, 3) ? -1 : pick_sole(m);
        if (fd < 0) fd = rnd_below(m, 2) ? pick_registered(m) : pick_target(m);
        if (fd < 0) break;
        if (m->kind[fd] == M_DATA_FD && m_registered(m, fd) && !m->sole[fd] &&
            (m->in_flight || m->holder > 0 || m->worker > 0))
            m->held_closed++; /* maybe held elsewhere: only a DEL removes it */
        close(fd);
        m_closed(m, fd);
        break;
    case OP_ACCEPT:
        m_accept(m);
        break;
    case OP_SEND:
        m_send(m);
        break;
    case OP_RECV:
        m_recv(m);
        break;
    case OP_SPAWN:
        m_spawn(m);
        break;
    case OP_CLOSE_RANGE: {
        int lo = pick_target(m), hi = lo + rnd_below(m, 4);
        bool clean = lo >= 0 && hi < M_HI;
        for (int i = lo; clean && i <= hi; i++)
            clean = m->kind[i] != M_FOREIGN;
        if (!clean) break;
        if (close_range((unsigned)lo, (unsigned)hi, 0) != 0) die("close_range");
        for (int i = lo; i <= hi; i++)
            m_closed(m, i);
        break;
    }
    case OP_FORK: {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) m_child(m);
        m_forked(m);
        int st;
        if (waitpid(pid, &st, 0) != pid) die("waitpid");
        break;
    }
    case OP_WORKER:
        if (m->worker > 0)
            m_worker_end(m);
        else
            m_worker_start(m);
        break;
    case OP_UNSHARE:
        m_unshare_thread(m);
        break;
    case OP_VFORK: {
        pid_t pid = vfork_and_close_range();
        int st;
        if (pid < 0 || waitpid(pid, &st, 0) != pid) die("vfork");
        m_vforked(m);
        break;
    }
    case OP_CLOSE_EPFD:
        close(ep);
        m_closed(m, ep);
        break;
    case OP_CREATE_EPFD:
        fd = epoll_create1(rnd_below(m, 2) ? EPOLL_CLOEXEC : 0);
        if (fd < 0) die("epoll_create1");
        if (fd >= M_HI) {
            close(fd);
            break;
        }
        for (in = 0; in < M_INST && m->inst_live[in]; in++)
            ;
        if (in == M_INST) die("model: out of instance slots");
        m->inst_live[in] = true;
        memset(m->reg[in], 0, sizeof m->reg[in]);
        m->nkept[in] = 0;
        m->forked[in] = m->recorded[in] = false;
        m->waits[in] = rnd_below(m, 4) != 0; /* one in four is handed to children */
        m->kind[fd] = M_EPOLL_FD;
        m->inst[fd] = in;
        break;
    case OP_DUP_EPFD: /* the instance gets another name */
        to = m_dup_any(m, ep);
        if (to < 0) break;
        if (to >= M_HI) {
            close(to);
            break;
        }
        m->kind[to] = M_EPOLL_FD;
        m->inst[to] = in;
        break;
    }
}

static int sc_model(long seed, long steps, bool verbose)
{
    static struct model m; /* large: not on the stack */
    memset(&m, 0, sizeof m);
    m.rng = (uint64_t)seed * 0x2545f4914f6cdd1dULL + 1;
    for (int fd = 0; fd < M_FDS; fd++)
        m.kind[fd] = fd < 3 || fd_open(fd) ? M_FOREIGN : M_FREE;
    int l = listen_tcp(), sv[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
    m.listener = hold(l, 200);
    m.rights[0] = hold(sv[0], 201);
    m.rights[1] = hold(sv[1], 202);
    close(l), close(sv[0]), close(sv[1]);
    for (m.steps = 1; m.steps <= steps; m.steps++) {
        m_step(&m);
        if (m_check(&m, verbose && m.bad_steps < 5)) m.bad_steps++;
    }
    m.steps--;
    if (m.worker > 0) m_worker_end(&m);
    if (m.holder > 0) m_spawn(&m);
    printf("model: seed %ld steps %ld mismatches %ld (stale %ld, lost %ld) in %ld steps; "
           "registered numbers closed while shared: %ld; epoll fds closed while another names "
           "the instance: %ld; kept by the fork rule: %ld; registered numbers restored from a "
           "duplicate: %ld; threads that closed in a private table: %ld; registered accepted "
           "sockets closed sole: %ld; registered sockets closed while maybe held elsewhere: %ld\n",
           seed, m.steps, m.stale + m.lost, m.stale, m.lost, m.bad_steps, m.risky, m.aliased,
           m.kept_total, m.same_kept, m.unshared, m.sole_closed, m.held_closed);
    printf("model: ops");
    for (int i = 0; i < OP_COUNT; i++)
        printf(" %s %ld", op_names[i], m.ops[i]);
    printf("\n");
    return m.lost ? LOST : m.stale ? STALE : OK;
}

/* ---- threads --------------------------------------------------------------- */

/* ThreadSanitizer tracks descriptors through the calls it intercepts, and it
 * does not intercept close_range: it would take a number that one thread
 * closed that way and another thread re-opened for a race. Creating
 * descriptors and close_range under one lock gives it the happens-before
 * it cannot see; every other call in the threads stays concurrent. */
static pthread_mutex_t t_fd_lock = PTHREAD_MUTEX_INITIALIZER;

struct tctx {
    int shared_ep, iters, id;
    pthread_barrier_t *done, *checked;
    long stale;
    long ops;
};

/* Each thread: pipes registered in the shared instance and in its own, a
 * duplicate held (the last 32 kept), the registered number taken away by
 * close, dup2, dup3 or close_range; its own instance is re-created now and
 * then. After each step its own instance must hold nothing (every number it
 * registered is gone). The kept duplicates stay open until the main thread
 * has looked at the shared instance. */
static void *t_main(void *arg)
{
    struct tctx *t = arg;
    enum { KEEP = 32 };
    int kept[KEEP], nkept = 0;
    pthread_mutex_lock(&t_fd_lock);
    int own = xepoll();
    pthread_mutex_unlock(&t_fd_lock);
    uint64_t r = 0x9e3779b97f4a7c15ULL * (uint64_t)(t->id + 1);
    struct kentry k[KMAX];
    for (int i = 0; i < KEEP; i++)
        kept[i] = -1;
    for (int it = 0; it < t->iters; it++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        int p[2];
        pthread_mutex_lock(&t_fd_lock);
        xpipe(p);
        int d = dup(p[0]);
        pthread_mutex_unlock(&t_fd_lock);
        if (d < 0) die("dup");
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]};
        if (epoll_ctl(t->shared_ep, EPOLL_CTL_ADD, p[0], &ev) != 0 ||
            epoll_ctl(own, EPOLL_CTL_ADD, p[0], &ev) != 0)
            die("thread %d: EPOLL_CTL_ADD", t->id);
        if (kept[nkept % KEEP] >= 0) close(kept[nkept % KEEP]);
        kept[nkept++ % KEEP] = d;
        xwrite(p[1]);
        switch (r % 4) {
        case 0:
            close(p[0]);
            break;
        case 1: /* the write end over the registered read end, then close */
            dup2(p[1], p[0]);
            close(p[0]);
            break;
        case 2:
            dup3(p[1], p[0], O_CLOEXEC);
            close(p[0]);
            break;
        default:
            pthread_mutex_lock(&t_fd_lock);
            close_range((unsigned)p[0], (unsigned)p[0], 0);
            pthread_mutex_unlock(&t_fd_lock);
        }
        close(p[1]);
        t->ops += 4;
        int n = kernel_view(own, k);
        if (n < 0) die("fdinfo of %d", own);
        t->stale += n;
        if ((r >> 8) % 16 == 0) { /* a new instance under the same numbers */
            close(own);
            pthread_mutex_lock(&t_fd_lock);
            own = xepoll();
            pthread_mutex_unlock(&t_fd_lock);
        }
    }
    close(own);
    pthread_barrier_wait(t->done);
    pthread_barrier_wait(t->checked);
    for (int i = 0; i < KEEP; i++)
        if (kept[i] >= 0) close(kept[i]);
    return NULL;
}

static int sc_threads(int nthreads, int iters)
{
    int shared = xepoll();
    pthread_t tid[16];
    struct tctx ctx[16];
    pthread_barrier_t done, checked;
    pthread_barrier_init(&done, NULL, (unsigned)nthreads + 1);
    pthread_barrier_init(&checked, NULL, (unsigned)nthreads + 1);
    for (int i = 0; i < nthreads; i++) {
        ctx[i] = (struct tctx){
            .shared_ep = shared, .iters = iters, .id = i, .done = &done, .checked = &checked};
        if (pthread_create(&tid[i], NULL, t_main, &ctx[i]) != 0) die("pthread_create");
    }
    pthread_barrier_wait(&done);
    struct kentry k[KMAX];
    int left = kernel_view(shared, k);
    pthread_barrier_wait(&checked);
    long stale = 0, ops = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(tid[i], NULL);
        stale += ctx[i].stale;
        ops += ctx[i].ops;
    }
    pthread_barrier_destroy(&done);
    pthread_barrier_destroy(&checked);
    printf("threads: %d threads x %d iterations, %ld calls; stale entries seen in the threads' "
           "own instances %ld; stale entries in the shared instance %d\n",
           nthreads, iters, ops, stale, left);
    printf("threads: %s\n", stale || left ? "STALE" : "OK");
    return stale || left ? STALE : OK;
}

/* ---- a signal handler that closes ------------------------------------------ */

#define S_POOL 32
static _Atomic int s_pool[S_POOL];
static _Atomic long s_handled, s_closed, s_inside;
static volatile sig_atomic_t s_in_ctl; /* the main thread is in epoll_ctl */
static _Atomic bool s_stop;
static pthread_t s_main;

static void s_handler(int sig)
{
    (void)sig;
    static unsigned next; /* the handler does not nest (no SA_NODEFER) */
    int saved = errno;
    int fd = atomic_exchange(&s_pool[next++ % S_POOL], -1);
    if (fd >= 0) {
        close(fd);
        atomic_fetch_add(&s_closed, 1);
    }
    atomic_fetch_add(&s_handled, 1);
    if (s_in_ctl) atomic_fetch_add(&s_inside, 1);
    errno = saved;
}

static void *s_sender(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 20000};
    while (!atomic_load(&s_stop)) {
        pthread_kill(s_main, SIGUSR1);
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static int sc_signal(bool itimer, long ms)
{
    int sig = itimer ? SIGALRM : SIGUSR1;
    struct sigaction sa = {.sa_handler = s_handler};
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL) != 0) die("sigaction");
    int ep = xepoll();
    for (int i = 0; i < S_POOL; i++)
        atomic_store(&s_pool[i], -1);
    s_main = pthread_self();
    pthread_t sender;
    struct itimerval it = {{0, 100}, {0, 100}};
    if (itimer) {
        if (setitimer(ITIMER_REAL, &it, NULL) != 0) die("setitimer");
    } else if (pthread_create(&sender, NULL, s_sender, NULL) != 0) {
        die("pthread_create");
    }
    long ctl = 0;
    double end = now_ms() + (double)ms;
    while (now_ms() < end) {
        for (int i = 0; i < S_POOL; i++) {
            int fd = atomic_load(&s_pool[i]);
            if (fd < 0) {
                fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (fd < 0) die("eventfd");
                int none = -1;
                if (!atomic_compare_exchange_strong(&s_pool[i], &none, fd)) close(fd);
                continue;
            }
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
            /* Errors are expected: the handler may have closed fd. */
            s_in_ctl = 1;
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
            ev.events = EPOLLIN | EPOLLOUT;
            epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
            if (i % 2) epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            s_in_ctl = 0;
            ctl += 2 + i % 2;
        }
    }
    if (itimer) {
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &off, NULL);
    } else {
        atomic_store(&s_stop, true);
        pthread_join(sender, NULL);
    }
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, sig);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    /* No duplicates exist: whatever the kernel holds must be open. */
    struct kentry k[KMAX];
    int n = kernel_view(ep, k), stale = 0;
    for (int i = 0; i < n && i < KMAX; i++)
        stale += !fd_open(k[i].tfd) || ino_of(k[i].tfd) != k[i].ino;
    printf("signal: %s, %ld signals handled (%ld inside epoll_ctl), %ld closes in the handler, "
           "%ld epoll_ctl calls in %ld ms; %d registrations left, %d stale\n",
           itimer ? "setitimer/SIGALRM" : "pthread_kill/SIGUSR1", atomic_load(&s_handled),
           atomic_load(&s_inside), atomic_load(&s_closed), ctl, ms, n, stale);
    if (atomic_load(&s_closed) == 0) {
        printf("signal: the handler never closed anything\n");
        return SETUP;
    }
    /* The shim's records survived the storm: every descriptor left in the
     * pool, registered, closed while a duplicate is held, must leave no
     * registration behind. */
    int after = 0;
    for (int i = 0; i < S_POOL; i++) {
        int fd = atomic_load(&s_pool[i]);
        if (fd < 0) continue;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0 && errno != EEXIST) die("EPOLL_CTL_ADD");
        hold(fd, 100);
        close(fd);
    }
    n = kernel_view(ep, k);
    for (int i = 0; i < n && i < KMAX; i++)
        after += !fd_open(k[i].tfd) || ino_of(k[i].tfd) != k[i].ino;
    printf("signal: after closing the pool with duplicates held: %d stale registrations\n", after);
    printf("signal: %s\n", stale + after ? "STALE" : "OK");
    return stale + after ? STALE : OK;
}

/* ---- EPOLLEXCLUSIVE -------------------------------------------------------- */

struct xctx {
    int ep, lfd;
    pthread_t tid;
    _Atomic long wakeups;
};
static _Atomic int x_busy;
static _Atomic long x_accepted;
static _Atomic bool x_stop;

/* One thread of a server that gives each thread its own epoll set on a
 * shared listener (the thundering-herd shape). A wake-up is an epoll_wait
 * that returned an event; the thread then works for 2 ms before accepting,
 * so every thread that the kernel woke gets to see the listener ready. */
static void *x_main(void *arg)
{
    struct xctx *x = arg;
    while (!atomic_load(&x_stop)) {
        struct epoll_event ev;
        int n = epoll_wait(x->ep, &ev, 1, 20);
        if (n <= 0) continue;
        atomic_fetch_add(&x_busy, 1);
        atomic_fetch_add(&x->wakeups, 1);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        int c;
        while ((c = accept4(x->lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
            atomic_fetch_add(&x_accepted, 1);
            close(c);
        }
        atomic_fetch_sub(&x_busy, 1);
    }
    return NULL;
}

static void x_settle(void)
{
    struct timespec ts = {0, 1000000};
    struct timespec poll = {0, 100000};
    for (int round = 0; round < 2; round++) {
        double end = now_ms() + 5000;
        while (atomic_load(&x_busy) != 0) {
            if (now_ms() > end) die("the threads did not go back to epoll_wait");
            nanosleep(&poll, NULL);
        }
        nanosleep(&ts, NULL);
    }
}

static int sc_exclusive(int nthreads, int conns)
{
    int lfd = listen_tcp();
    struct xctx x[16];
    for (int i = 0; i < nthreads; i++) {
        x[i].ep = xepoll();
        x[i].lfd = lfd;
        atomic_init(&x[i].wakeups, 0);
        xadd(x[i].ep, lfd, EPOLLIN);
    }
    struct kentry k[KMAX];
    bool exclusive = kernel_view(x[0].ep, k) == 1 && (k[0].events & EPOLLEXCLUSIVE);
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&x[i].tid, NULL, x_main, &x[i]) != 0) die("pthread_create");
    x_settle();
    for (int c = 0; c < conns; c++) {
        int s = connect_to(lfd);
        double end = now_ms() + 5000;
        struct timespec poll = {0, 100000};
        while (atomic_load(&x_accepted) < c + 1) {
            if (now_ms() > end) die("connection %d was not accepted", c);
            nanosleep(&poll, NULL);
        }
        x_settle();
        close(s);
    }
    atomic_store(&x_stop, true);
    long total = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(x[i].tid, NULL);
        total += atomic_load(&x[i].wakeups);
    }
    double per = (double)total / conns;
    printf("exclusive: %d threads, %d connections, %ld wake-ups, %.2f per connection, "
           "EPOLLEXCLUSIVE %s\n",
           nthreads, conns, total, per, exclusive ? "set" : "not set");
    printf("exclusive: %s\n", per <= 1.5 ? "OK (one wake-up per connection)" : "HERD");
    return per <= 1.5 ? OK : STALE;
}

/* MOD of a listener's registration. Without `app` the program registers
 * plain EPOLLIN (the shim may make it exclusive); with `app` it sets
 * EPOLLEXCLUSIVE itself, which the kernel refuses to MOD. */
static int sc_exclusive_mod(bool app)
{
    int lfd = listen_tcp(), ep = xepoll();
    struct epoll_event ev = {.events = EPOLLIN | (app ? EPOLLEXCLUSIVE : 0), .data.u64 = 1};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0) die("EPOLL_CTL_ADD");
    struct kentry k[KMAX];
    if (kernel_view(ep, k) != 1) die("fdinfo");
    printf("exclusive_mod: after ADD: events %#x data %llu, EPOLLEXCLUSIVE %s\n", k[0].events,
           k[0].data, k[0].events & EPOLLEXCLUSIVE ? "set" : "not set");
    ev = (struct epoll_event){.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u64 = 2};
    int r = epoll_ctl(ep, EPOLL_CTL_MOD, lfd, &ev);
    if (r != 0) {
        printf("exclusive_mod: EPOLL_CTL_MOD failed: %s\n", strerror(errno));
        printf("exclusive_mod: MOD REFUSED\n");
        return STALE;
    }
    if (kernel_view(ep, k) != 1) {
        printf("exclusive_mod: LOST (the registration is gone after MOD)\n");
        return LOST;
    }
    bool took = (k[0].events & (EPOLLOUT | EPOLLET)) == (EPOLLOUT | EPOLLET) && k[0].data == 2;
    printf("exclusive_mod: after MOD: events %#x data %llu, EPOLLEXCLUSIVE %s\n", k[0].events,
           k[0].data, k[0].events & EPOLLEXCLUSIVE ? "set" : "not set");
    /* The new mask reports a connection with the new data. */
    int c = connect_to(lfd);
    struct epoll_event got;
    int n = epoll_wait(ep, &got, 1, 2000);
    took = took && n == 1 && got.data.u64 == 2;
    close(c);
    printf("exclusive_mod: %s\n", took ? "OK (MOD returned 0 and took effect)"
                                       : "LOST (MOD returned 0 but the new mask is not in effect)");
    return took ? OK : LOST;
}

/* MOD keeps working however many instances a program has or had: first 60
 * instances one after another at distinct numbers (one alive at a time), each
 * with the same listener, then a fresh listener in the next; then 50
 * instances alive at once, each with its own listener. Every MOD of a plain
 * EPOLLIN registration must succeed (exit 1 when one is refused). */
static int sc_exclusive_many(void)
{
    int refused = 0, mods = 0, l = listen_tcp(), spacer[60];
    for (int i = 0; i < 60; i++) {
        int ep = xepoll();
        xadd(ep, l, EPOLLIN);
        close(ep);
        spacer[i] = hold(0, 3); /* the next instance gets another number */
    }
    int ep = xepoll(), fresh = listen_tcp();
    xadd(ep, fresh, EPOLLIN);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT};
    mods++;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fresh, &ev) != 0) {
        printf("exclusive_many: after 60 instances at distinct numbers, MOD in the next: %s\n",
               strerror(errno));
        refused++;
    }
    close(ep);
    close(fresh);
    for (int i = 0; i < 60; i++)
        close(spacer[i]);
    enum { N = 50 };
    int eps[N], ls[N];
    for (int i = 0; i < N; i++) {
        eps[i] = xepoll();
        ls[i] = listen_tcp();
        xadd(eps[i], ls[i], EPOLLIN);
    }
    for (int i = 0; i < N; i++) {
        mods++;
        if (epoll_ctl(eps[i], EPOLL_CTL_MOD, ls[i], &ev) != 0) {
            printf("exclusive_many: %d instances alive, MOD in instance %d: %s\n", N, i + 1,
                   strerror(errno));
            refused++;
        }
    }
    printf("exclusive_many: %d of %d MODs refused\n", refused, mods);
    printf("exclusive_many: %s\n", refused ? "MOD REFUSED" : "OK");
    return refused ? STALE : OK;
}

/* A call's result as a line: return value and errno (SENTINEL: untouched). */
#define SENTINEL 4242
static void result(const char *what, int r, int err)
{
    printf("%s: ret %d errno %s\n", what, r, err == SENTINEL ? "untouched" : strerrorname_np(err));
}

/* The registrations of ep as a line: their count and data (the events may
 * carry EPOLLEXCLUSIVE under the shim: exclusive_note says). */
static int registrations(const char *what, int ep)
{
    struct kentry k[KMAX];
    int n = kernel_view(ep, k);
    if (n < 0) die("fdinfo");
    printf("%s: %d registration(s)", what, n);
    for (int i = 0; i < n && i < KMAX; i++)
        printf(", data %llu", k[i].data);
    printf("\n");
    return n;
}

/* The one line that differs with FDGUARD_EPOLLEXCLUSIVE=on. */
static void exclusive_note(const char *what, int ep)
{
    struct kentry k[KMAX];
    int n = kernel_view(ep, k);
    printf("%s: EPOLLEXCLUSIVE %s\n", what,
           n == 1 && (k[0].events & EPOLLEXCLUSIVE) ? "set" : "not set");
}

/* Bad event pointers for a listener's ADD and MOD: the kernel reads the
 * event first and answers EFAULT, changing nothing; so must the program see
 * with the shim's EPOLLEXCLUSIVE (no fault in the shim, and the registration
 * a bad MOD names stays). Exit 3 when the registration is lost. */
static int sc_exclusive_fault(void)
{
    int lfd = listen_tcp(), ep = xepoll();
    /* Two pages, the second unreadable: a pointer into it, and an event
     * that starts 4 bytes before it. */
    char *page = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED || mprotect(page + 4096, 4096, PROT_NONE) != 0) die("mmap");
    struct {
        const char *name;
        struct epoll_event *ev;
    } bad[] = {{"address 8", (struct epoll_event *)8},
               {"NULL", NULL},
               {"PROT_NONE page", (struct epoll_event *)(page + 4096)},
               {"across a page's end", (struct epoll_event *)(page + 4096 - 4)}};
    char what[96];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(what, sizeof what, "exclusive_fault: ADD (%s)", bad[i].name);
        errno = SENTINEL;
        int r = epoll_ctl(ep, EPOLL_CTL_ADD, lfd, bad[i].ev);
        result(what, r, errno);
    }
    registrations("exclusive_fault: after the bad ADDs", ep);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 1};
    errno = SENTINEL;
    int r = epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    result("exclusive_fault: ADD", r, errno);
    exclusive_note("exclusive_fault: after ADD", ep);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(what, sizeof what, "exclusive_fault: MOD (%s)", bad[i].name);
        errno = SENTINEL;
        r = epoll_ctl(ep, EPOLL_CTL_MOD, lfd, bad[i].ev);
        result(what, r, errno);
    }
    int n = registrations("exclusive_fault: after the bad MODs", ep);
    ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = 2};
    errno = SENTINEL;
    r = epoll_ctl(ep, EPOLL_CTL_MOD, lfd, &ev);
    result("exclusive_fault: MOD", r, errno);
    registrations("exclusive_fault: after MOD", ep);
    printf("exclusive_fault: %s\n", n == 1 ? "OK" : "LOST (a bad MOD took the registration)");
    return n == 1 ? OK : LOST;
}

/* The program's only event buffer once the filter below is in place: it
 * tells the program's ADDs from other code's by this address. */
static struct epoll_event prog_ev;

/* From now on the kernel refuses (EINVAL) every EPOLL_CTL_ADD whose event is
 * not at &prog_ev, as it refuses EPOLLEXCLUSIVE for a nested epoll target or
 * on a kernel without it. A filter cannot read the event, so the address
 * stands for "an event the program did not pass": the shim's copy with
 * EPOLLEXCLUSIVE added. */
static void refuse_other_adds(void)
{
    uint64_t a = (uint64_t)(uintptr_t)&prog_ev;
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_epoll_ctl, 0, 7),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, EPOLL_CTL_ADD, 0, 5),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[3])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)a, 0, 2),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[3]) + 4),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)(a >> 32), 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        die("seccomp filter");
}

/* The kernel refuses the exclusive ADD and accepts the plain one: a
 * successful MOD of a registration the shim made exclusive (DEL + ADD), and
 * a successful ADD, leave errno as it was. Exit 3 when a registration is
 * lost. */
static int sc_exclusive_refused(void)
{
    int lfd = listen_tcp(), ep = xepoll(), ep2 = xepoll();
    prog_ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = 1};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &prog_ev) != 0) die("EPOLL_CTL_ADD");
    exclusive_note("exclusive_refused: before the filter", ep);
    refuse_other_adds();
    prog_ev = (struct epoll_event){.events = EPOLLIN | EPOLLET, .data.u64 = 2};
    errno = SENTINEL;
    int r = epoll_ctl(ep, EPOLL_CTL_MOD, lfd, &prog_ev);
    result("exclusive_refused: MOD", r, errno);
    int n = registrations("exclusive_refused: after MOD", ep);
    prog_ev = (struct epoll_event){.events = EPOLLIN, .data.u64 = 3};
    errno = SENTINEL;
    r = epoll_ctl(ep2, EPOLL_CTL_ADD, lfd, &prog_ev);
    result("exclusive_refused: ADD", r, errno);
    n += registrations("exclusive_refused: after ADD", ep2);
    printf("exclusive_refused: %s\n", n == 2 ? "OK" : "LOST");
    return n == 2 ? OK : LOST;
}

/* ---- main ------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr, "usage: epolltest seed|dup2|dup3|close_range|closefrom|fclose|epfd_reuse|\n"
                    "                 fork_listener|vfork_close_range|unshare_range|\n"
                    "                 unshare_close|unshare_single|fork_worker|\n"
                    "                 fork_worker_waited|fork_worker_exited|\n"
                    "                 fork_worker_closed|fork_client|fork_client_nowait\n"
                    "       epolltest fork_many [N]\n"
                    "       epolltest sole none|dup|fork|spawn|vfork|scm\n"
                    "       epolltest share_child vfork|clone_vfork|clone_vm|raw_fork|_Fork|\n"
                    "                             posix_spawn\n"
                    "       epolltest dup2_same|dup3_same [socket] [nokcmp]\n"
                    "       epolltest model SEED STEPS [-v]\n"
                    "       epolltest threads [N [ITERS]]\n"
                    "       epolltest signal [kill|itimer] [MS]\n"
                    "       epolltest exclusive N [CONNS]\n"
                    "       epolltest exclusive_mod [app]\n"
                    "       epolltest exclusive_many|exclusive_fault|exclusive_refused\n");
    exit(SETUP);
}

static long arg_long(int argc, char **argv, int i, long min, long max, long dflt)
{
    long v;
    if (i >= argc) return dflt;
    if (!parse_long(argv[i], min, max, &v)) usage();
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2) usage();
    const char *s = argv[1];
    g_name = s;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(s, "seed")) return sc_seed();
    if (!strcmp(s, "dup2")) return sc_dup23(false);
    if (!strcmp(s, "dup3")) return sc_dup23(true);
    if (!strcmp(s, "close_range")) return sc_close_range(false);
    if (!strcmp(s, "closefrom")) return sc_close_range(true);
    if (!strcmp(s, "fclose")) return sc_fclose();
    if (!strcmp(s, "epfd_reuse")) return sc_epfd_reuse();
    if (!strcmp(s, "failed_close")) return sc_failed_close();
    if (!strcmp(s, "epfd_move")) return sc_epfd_move();
    if (!strcmp(s, "fork_listener")) return sc_fork_listener();
    if (!strcmp(s, "vfork_close_range")) return sc_vfork_close_range();
    if (!strcmp(s, "sole")) {
        if (argc != 3) usage();
        return sc_sole(argv[2]);
    }
    if (!strcmp(s, "share_child")) {
        if (argc != 3) usage();
        return sc_share_child(argv[2]);
    }
    if (!strcmp(s, "dup2_same") || !strcmp(s, "dup3_same")) {
        bool sock = false, nokcmp = false;
        for (int i = 2; i < argc; i++) {
            if (!strcmp(argv[i], "socket"))
                sock = true;
            else if (!strcmp(argv[i], "nokcmp"))
                nokcmp = true;
            else
                usage();
        }
        return sc_dup2_same(s[3] == '3', sock, nokcmp);
    }
    if (!strcmp(s, "unshare_range")) return sc_unshare(true);
    if (!strcmp(s, "unshare_close")) return sc_unshare(false);
    if (!strcmp(s, "unshare_single")) return sc_unshare_single();
    if (!strcmp(s, "fork_worker")) return sc_fork_worker(false);
    if (!strcmp(s, "fork_worker_waited")) return sc_fork_worker(true);
    if (!strcmp(s, "fork_worker_exited")) return sc_fork_worker_gone(false);
    if (!strcmp(s, "fork_worker_closed")) return sc_fork_worker_gone(true);
    if (!strcmp(s, "fork_client")) return sc_fork_client(false);
    if (!strcmp(s, "fork_client_nowait")) return sc_fork_client(true);
    if (!strcmp(s, "fork_many")) return sc_fork_many((int)arg_long(argc, argv, 2, 0, 5000, 600));
    if (!strcmp(s, "model")) {
        if (argc < 4 || argc > 5 || (argc == 5 && strcmp(argv[4], "-v"))) usage();
        return sc_model(arg_long(argc, argv, 2, 0, 1L << 40, 0),
                        arg_long(argc, argv, 3, 1, 10000000, 0), argc == 5);
    }
    if (!strcmp(s, "threads"))
        return sc_threads((int)arg_long(argc, argv, 2, 1, 16, 4),
                          (int)arg_long(argc, argv, 3, 1, 100000, 300));
    if (!strcmp(s, "signal")) {
        bool itimer = argc > 2 && !strcmp(argv[2], "itimer");
        if (argc > 2 && !itimer && strcmp(argv[2], "kill")) usage();
        return sc_signal(itimer, arg_long(argc, argv, 3, 1, 60000, 300));
    }
    if (!strcmp(s, "exclusive"))
        return sc_exclusive((int)arg_long(argc, argv, 2, 2, 16, 4),
                            (int)arg_long(argc, argv, 3, 1, 10000, 40));
    if (!strcmp(s, "exclusive_many")) return sc_exclusive_many();
    if (!strcmp(s, "exclusive_fault")) return sc_exclusive_fault();
    if (!strcmp(s, "exclusive_refused")) return sc_exclusive_refused();
    if (!strcmp(s, "exclusive_mod")) {
        if (argc > 3 || (argc == 3 && strcmp(argv[2], "app"))) usage();
        return sc_exclusive_mod(argc == 3);
    }
    usage();
}
