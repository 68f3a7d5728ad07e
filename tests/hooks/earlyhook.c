/* earlyhook.so: preloaded after libfdguard.so, its constructor runs before
 * the shim's (the loader initialises objects that do not depend on each
 * other in the reverse of their load order), so its calls are the first
 * wrapper calls the shim sees, before its own constructor: the shim
 * initialises inside them. Each call succeeds, with errno preset to a
 * sentinel; one line per call on stdout: its name, the return value and
 * errno after it. The same with and without the shim (tests/harm.bats).
 * Built by the suite that uses it (cc -shared -fPIC); libc only. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define SENTINEL 1234

static void show(const char *what, int ret, int err)
{
    char line[128];
    int n = snprintf(line, sizeof line, "%s ret %d errno %d\n", what, ret, err);
    if (write(1, line, (size_t)n) != n) _exit(3);
}

__attribute__((constructor)) static void early(void)
{
    FILE *f = fopen("/dev/null", "r");
    errno = SENTINEL;
    int r = f ? fclose(f) : -2;
    show("fclose", r, errno);
    errno = SENTINEL;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    show("epoll_create1", ep >= 0 ? 0 : ep, errno);
    if (ep >= 0) close(ep);
}
