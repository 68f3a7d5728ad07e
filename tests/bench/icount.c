/* icount: the user-space instructions the shim adds to a call, counted by
 * callgrind. The count is deterministic (the same binary, library and case
 * execute the same instructions), so CI can hold it to a ceiling
 * (tests/icount.bats) where a time ratio would drown in a VM's noise.
 *
 *   icount -m LIB CASE [N]   count CASE without and with LIB preloaded, one
 *                            callgrind run each; prints one line:
 *                            "CASE without W with G added A" (instructions
 *                            per call, two decimals)
 *   icount CASE N            run CASE N times (what -m runs under valgrind)
 *
 * Only the function that runs the calls (icount_run) is counted
 * (--toggle-collect), so the setup is not; its loop is counted on both
 * sides. A process that engaged the shim: a pipe registered in an epoll
 * instance that it has waited on (so the fork rule's first-wait note is
 * behind it), as a server is after its first round. The cases:
 *
 *   close      close() of an untracked number (dup'd by a raw system call)
 *   dup        dup() of an untracked number (closed by a raw system call)
 *   dup2       dup2() onto an open, untracked number
 *   dup_close  close(dup(fd)): the pair
 *   mod        epoll_ctl(EPOLL_CTL_MOD) of the registered pipe
 *   wait       epoll_wait(timeout 0) on the instance
 *   close_reg  close() of a registered number whose description is open
 *              elsewhere (the shim adds the EPOLL_CTL_DEL)
 *   addel      EPOLL_CTL_ADD + EPOLL_CTL_DEL of a pipe
 *
 * The program calls the plain libc entry points: those are what the shim
 * interposes. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const cases[] = {"close", "dup",       "dup2", "dup_close",
                                    "mod",   "wait",      "close_reg", "addel"};
enum { C_CLOSE, C_DUP, C_DUP2, C_DUP_CLOSE, C_MOD, C_WAIT, C_CLOSE_REG, C_ADDEL, C_COUNT };

static void die(const char *what)
{
    fprintf(stderr, "icount: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int raw_dup(int fd)
{
    return (int)syscall(SYS_dup, fd);
}

static void raw_close(int fd)
{
    syscall(SYS_close, fd);
}

struct setup {
    int ep, p[2], base, target, *fds;
};

/* Counted: N calls of the case. */
__attribute__((noinline)) void icount_run(int c, long n, struct setup *s);

void icount_run(int c, long n, struct setup *s)
{
    struct epoll_event ev = {.events = EPOLLIN}, out;
    for (long i = 0; i < n; i++) {
        switch (c) {
        case C_CLOSE:
            close(raw_dup(s->base));
            break;
        case C_DUP:
            raw_close(dup(s->base));
            break;
        case C_DUP2:
            dup2(s->base, s->target);
            break;
        case C_DUP_CLOSE:
            close(dup(s->base));
            break;
        case C_MOD:
            epoll_ctl(s->ep, EPOLL_CTL_MOD, s->p[0], &ev);
            break;
        case C_WAIT:
            epoll_wait(s->ep, &out, 1, 0);
            break;
        case C_CLOSE_REG:
            close(s->fds[i]);
            break;
        case C_ADDEL:
            epoll_ctl(s->ep, EPOLL_CTL_ADD, s->p[1], &ev);
            epoll_ctl(s->ep, EPOLL_CTL_DEL, s->p[1], NULL);
            break;
        }
    }
}

static int run(int c, long n)
{
    struct setup s;
    struct epoll_event ev = {.events = EPOLLIN}, out;
    if ((s.ep = epoll_create1(EPOLL_CLOEXEC)) < 0 || pipe2(s.p, O_CLOEXEC) < 0 ||
        (s.base = eventfd(0, EFD_CLOEXEC)) < 0 || (s.target = raw_dup(s.base)) < 0)
        die("setup");
    if (epoll_ctl(s.ep, EPOLL_CTL_ADD, s.p[0], &ev) < 0) die("epoll_ctl ADD");
    epoll_wait(s.ep, &out, 1, 0);
    if (c == C_CLOSE_REG) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 64) {
            rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= (rlim_t)n + 64
                              ? (rlim_t)n + 64
                              : rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (!(s.fds = malloc((size_t)n * sizeof *s.fds))) die("malloc");
        for (long i = 0; i < n; i++) {
            /* A duplicate of the eventfd: its description stays open. */
            if ((s.fds[i] = dup(s.base)) < 0) die("dup");
            if (epoll_ctl(s.ep, EPOLL_CTL_ADD, s.fds[i], &ev) < 0) die("epoll_ctl ADD");
        }
    }
    icount_run(c, n, &s);
    return 0;
}

/* Instructions per call of CASE under one side: callgrind's total of
 * icount_run, divided by n. */
static double measure(const char *self, const char *lib, const char *name, long n)
{
    char out[] = "/tmp/icount.XXXXXX", nbuf[32];
    int fd = mkstemp(out);
    if (fd < 0) die("mkstemp");
    close(fd);
    snprintf(nbuf, sizeof nbuf, "%ld", n);
    char file[64];
    snprintf(file, sizeof file, "--callgrind-out-file=%s", out);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        if (lib)
            setenv("LD_PRELOAD", lib, 1);
        else
            unsetenv("LD_PRELOAD");
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null >= 0) dup2(null, STDOUT_FILENO), dup2(null, STDERR_FILENO);
        execlp("valgrind", "valgrind", "--tool=callgrind", file, "--toggle-collect=icount_run",
               self, name, nbuf, (char *)NULL);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        unlink(out);
        fprintf(stderr, "icount: valgrind failed for %s (%s)\n", name, lib ? "with" : "without");
        exit(WIFEXITED(st) && WEXITSTATUS(st) == 127 ? 127 : 1);
    }
    FILE *f = fopen(out, "re");
    if (!f) die("callgrind output");
    char line[256];
    double total = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "totals: %lf", &total) == 1) break;
    fclose(f);
    unlink(out);
    if (total < 0) {
        fprintf(stderr, "icount: no totals in the callgrind output\n");
        exit(1);
    }
    return total / (double)n;
}

static int find_case(const char *name)
{
    for (int c = 0; c < C_COUNT; c++)
        if (strcmp(name, cases[c]) == 0) return c;
    fprintf(stderr, "icount: unknown case %s\n", name);
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "-m") == 0) {
        const char *lib = argv[2], *name = argv[3];
        long n = argc > 4 ? atol(argv[4]) : 10000;
        int c = find_case(name);
        if (n <= 0) n = 1;
        if (c == C_CLOSE_REG && n > 2000) n = 2000; /* each one an open descriptor */
        char self[4096];
        ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
        if (len <= 0) die("readlink /proc/self/exe");
        self[len] = '\0';
        double without = measure(self, NULL, name, n);
        double with = measure(self, lib, name, n);
        printf("%s without %.2f with %.2f added %.2f\n", name, without, with, with - without);
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: icount -m LIB CASE [N] | icount CASE N\n");
        return 2;
    }
    return run(find_case(argv[1]), atol(argv[2]));
}
