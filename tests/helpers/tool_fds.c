/* tool_fds: a process that holds many descriptors, mappings and threads, for
 * fdguard doctor and fdguard squeeze.
 *
 *   tool_fds --ready FILE [--fds N] [--maps N] [--threads N] [--hole FD]
 *
 * --fds N opens /dev/null N times (raising the soft RLIMIT_NOFILE first if it
 * is too low); --hole FD closes that number afterwards, so the lowest free
 * number is below the highest open one. --maps N adds N one-page anonymous
 * mappings that cannot merge (alternating protections), each one line of
 * /proc/PID/maps. --threads N starts N threads that wait.
 *
 * FILE gets "fds N\nmaps N\nthreads N\n" in one write once everything is in
 * place; then the program waits for SIGTERM. Exit status 2 on usage errors,
 * 1 on a setup error. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common.h"

static void usage(void)
{
    fprintf(stderr,
            "usage: tool_fds --ready FILE [--fds N] [--maps N] [--threads N] [--hole FD]\n");
    exit(2);
}

static void fail(const char *what)
{
    fprintf(stderr, "tool_fds: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void *waiter(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv)
{
    const char *ready = NULL;
    long fds = 0, maps = 0, threads = 0, hole = -1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) usage();
        i++;
        if (strcmp(a, "--ready") == 0)
            ready = v;
        else if (strcmp(a, "--fds") == 0) {
            if (!parse_long(v, 0, 1 << 20, &fds)) usage();
        } else if (strcmp(a, "--maps") == 0) {
            if (!parse_long(v, 0, 1 << 24, &maps)) usage();
        } else if (strcmp(a, "--threads") == 0) {
            if (!parse_long(v, 0, 4096, &threads)) usage();
        } else if (strcmp(a, "--hole") == 0) {
            if (!parse_long(v, 3, 1 << 20, &hole)) usage();
        } else
            usage();
    }
    if (ready == NULL) usage();

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &sigs, NULL); /* inherited by the threads */

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)fds + 64) {
        rl.rlim_cur = (rlim_t)fds + 64;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max) rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    for (long i = 0; i < fds; i++)
        if (open("/dev/null", O_RDONLY) < 0) fail("open /dev/null");
    if (hole >= 0 && close((int)hole) < 0) fail("close --hole");

    long page = sysconf(_SC_PAGESIZE);
    for (long i = 0; i < maps; i++) {
        int prot = i % 2 ? PROT_READ : PROT_NONE;
        if (mmap(NULL, (size_t)page, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
            fail("mmap");
    }
    for (long i = 0; i < threads; i++) {
        pthread_t t;
        errno = pthread_create(&t, NULL, waiter, NULL);
        if (errno != 0) fail("pthread_create");
    }

    char text[128];
    int len = snprintf(text, sizeof text, "fds %ld\nmaps %ld\nthreads %ld\n", fds, maps, threads);
    int rfd = open(ready, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (rfd < 0) fail(ready);
    if (!write_all(rfd, text, (size_t)len) || close(rfd) < 0) fail("write ready file");

    int sig;
    sigwait(&sigs, &sig);
    return 0;
}
