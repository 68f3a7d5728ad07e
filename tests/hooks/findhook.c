/* findhook.so: preloaded before libfdguard.so, its _dl_find_object is the one
 * the shim binds (dlsym(RTLD_DEFAULT)); it counts the calls and forwards
 * them to glibc's. At exit it writes "find_object_calls=N" to the file named
 * by FINDHOOK_OUT. Tests use it to count what a dlopen hit costs. Built by
 * the suite that uses it (cc -shared -fPIC); libc only. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct dl_find_object;

static atomic_long calls;

int _dl_find_object(void *pc, struct dl_find_object *out)
{
    static int (*next)(void *, struct dl_find_object *);
    if (!next) next = (int (*)(void *, struct dl_find_object *))dlsym(RTLD_NEXT, "_dl_find_object");
    atomic_fetch_add(&calls, 1);
    return next(pc, out);
}

__attribute__((destructor)) static void report(void)
{
    const char *path = getenv("FINDHOOK_OUT");
    if (!path) return;
    char line[64];
    int n = snprintf(line, sizeof line, "find_object_calls=%ld\n", atomic_load(&calls));
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        if (write(fd, line, (size_t)n) != n) abort();
        close(fd);
    }
}
