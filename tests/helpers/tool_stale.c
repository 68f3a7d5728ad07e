/* tool_stale: a process with stale epoll registrations, for fdguard doctor.
 *
 *   tool_stale --ready FILE [--reuse] [--nodump]
 *
 * One epoll instance watches the read end of a pipe and the write end of
 * another. The read end is duplicated and its original number closed: the
 * registration stays in the kernel under a number that is no longer open.
 * With --reuse the number is then taken by /dev/null, so it is open again
 * but names another file (a different inode): stale too. The second pipe's
 * registration is healthy. Under the shim, close() deletes the registration
 * first and nothing is stale. --nodump makes the process not dumpable
 * (PR_SET_DUMPABLE 0): its descriptors' targets and fdinfo are then hidden
 * from a caller without CAP_SYS_PTRACE, root included.
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

int main(int argc, char **argv)
{
    const char *ready = NULL;
    int reuse = 0, nodump = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reuse") == 0)
            reuse = 1;
        else if (strcmp(argv[i], "--nodump") == 0)
            nodump = 1;
        else if (strcmp(argv[i], "--ready") == 0 && i + 1 < argc)
            ready = argv[++i];
        else {
            fprintf(stderr, "usage: tool_stale --ready FILE [--reuse] [--nodump]\n");
            return 2;
        }
    }
    if (nodump && prctl(PR_SET_DUMPABLE, 0) != 0) fail("prctl");
    if (ready == NULL) {
        fprintf(stderr, "usage: tool_stale --ready FILE [--reuse] [--nodump]\n");
        return 2;
    }

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

    char text[128];
    int len = snprintf(text, sizeof text, "epfd %d\nstale %d\nhealthy %d\n", ep, stale, b[1]);
    int rfd = open(ready, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (rfd < 0) fail(ready);
    if (!write_all(rfd, text, (size_t)len) || close(rfd) < 0) fail("write ready file");

    int sig;
    sigwait(&sigs, &sig);
    return 0;
}
