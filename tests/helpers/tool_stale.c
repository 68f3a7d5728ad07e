/* tool_stale: a process with stale epoll registrations, for fdguard doctor.
 *
 *   tool_stale --ready FILE [--reuse] [--nodump] [--churn N]
 *
 * One epoll instance watches the read end of a pipe and the write end of
 * another. The read end is duplicated and its original number closed: the
 * registration stays in the kernel under a number that is no longer open.
 * With --reuse the number is then taken by /dev/null, so it is open again
 * but names another file (a different inode): stale too. The second pipe's
 * registration is healthy. Under the shim, close() deletes the registration
 * first and nothing is stale. --nodump makes the process not dumpable
 * (PR_SET_DUMPABLE 0): its descriptors' targets and fdinfo are then hidden
 * from a caller without CAP_SYS_PTRACE, root included. --churn N: N more
 * pipes in the same instance, replaced as fast as it can (each deleted from
 * the instance before it is closed: never stale), so that every reader of
 * /proc sees numbers closed and reused between two looks.
 *
 * FILE gets "epfd N\nstale N\nhealthy N\n" in one write; then the program
 * waits for SIGTERM. Exit status 2 on usage errors, 1 on a setup error. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common.h"

static void fail(const char *what)
{
    fprintf(stderr, "tool_stale: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: tool_stale --ready FILE [--reuse] [--nodump] [--churn N]\n");
    exit(2);
}

static void add_pipe(int ep, int p[2])
{
    if (pipe(p) < 0) fail("pipe");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) < 0) fail("epoll_ctl");
}

/* Replaces the pipes one after the other, forever: delete, close, a new one. */
static void churn(int ep, int (*pipes)[2], long n, const sigset_t *sigs)
{
    static const struct timespec zero;
    for (long i = 0;; i = (i + 1) % n) {
        if (epoll_ctl(ep, EPOLL_CTL_DEL, pipes[i][0], NULL) < 0) fail("epoll_ctl DEL");
        close(pipes[i][0]);
        close(pipes[i][1]);
        add_pipe(ep, pipes[i]);
        if (i == 0 && sigtimedwait(sigs, NULL, &zero) > 0) return;
    }
}

int main(int argc, char **argv)
{
    const char *ready = NULL;
    int reuse = 0, nodump = 0;
    long nchurn = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reuse") == 0)
            reuse = 1;
        else if (strcmp(argv[i], "--nodump") == 0)
            nodump = 1;
        else if (strcmp(argv[i], "--ready") == 0 && i + 1 < argc)
            ready = argv[++i];
        else if (strcmp(argv[i], "--churn") == 0 && i + 1 < argc) {
            if (!parse_long(argv[++i], 1, 1000, &nchurn)) usage();
        } else
            usage();
    }
    if (nodump && prctl(PR_SET_DUMPABLE, 0) != 0) fail("prctl");
    if (ready == NULL) usage();

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &sigs, NULL);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    int a[2], b[2];
    if (ep < 0) fail("epoll_create1");
    if (pipe(a) < 0 || pipe(b) < 0) fail("pipe");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = a[0]};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, a[0], &ev) < 0) fail("epoll_ctl");
    ev = (struct epoll_event){.events = EPOLLOUT, .data.fd = b[1]};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, b[1], &ev) < 0) fail("epoll_ctl");
    if (dup(a[0]) < 0) fail("dup");
    int stale = a[0];
    if (close(a[0]) < 0) fail("close");
    if (reuse) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd != stale) {
            errno = EBADF;
            fail("reuse of the closed number");
        }
    }

    int(*pipes)[2] = NULL;
    if (nchurn > 0) {
        pipes = calloc((size_t)nchurn, sizeof *pipes);
        if (pipes == NULL) fail("calloc");
        for (long i = 0; i < nchurn; i++)
            add_pipe(ep, pipes[i]);
    }

    char text[128];
    int len = snprintf(text, sizeof text, "epfd %d\nstale %d\nhealthy %d\n", ep, stale, b[1]);
    int rfd = open(ready, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (rfd < 0) fail(ready);
    if (!write_all(rfd, text, (size_t)len) || close(rfd) < 0) fail("write ready file");

    if (pipes != NULL) {
        churn(ep, pipes, nchurn, &sigs);
        return 0;
    }
    int sig;
    sigwait(&sigs, &sig);
    return 0;
}
