/* accepthook.so: preloaded after libfdguard.so, it is the "next" accept4
 * the shim calls, and so sees the shim's own accepts: relief takes a pending
 * connection with accept4(fd, NULL, NULL, flags | SOCK_CLOEXEC). Tests use
 * it to reach relief's rare moments on cue. ACCEPTHOOK says what to do at
 * the first such call:
 *   room         once it has returned a connection, raise the soft
 *                RLIMIT_NOFILE by 2: room appears between relief's accept
 *                and its re-arming of the spare, so the connection is
 *                handed to the app (through getpeername for its address);
 *   hold:R:W     before it, write one byte to fd W and wait for one on fd R:
 *                the thread stays inside relief, holding the spare's slot.
 * Built by the suite that uses it (cc -shared -fPIC); libc only. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static atomic_bool done;

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    static int (*next)(int, struct sockaddr *, socklen_t *, int);
    if (!next)
        next = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    const char *what = getenv("ACCEPTHOOK");
    bool ours = what && !addr && !len && (flags & SOCK_CLOEXEC) && !atomic_load(&done);
    int r_fd, w_fd;
    if (ours && sscanf(what, "hold:%d:%d", &r_fd, &w_fd) == 2) {
        atomic_store(&done, 1);
        char c = 'h';
        if (write(w_fd, &c, 1) != 1 || read(r_fd, &c, 1) != 1) abort();
        return next(fd, addr, len, flags);
    }
    int conn = next(fd, addr, len, flags);
    if (ours && conn >= 0 && !strcmp(what, "room")) {
        atomic_store(&done, 1);
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur += 2;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    return conn;
}
