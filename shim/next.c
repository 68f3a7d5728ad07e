/* Binding the next definitions of the symbols we interpose.
 *
 * dlsym(RTLD_NEXT) finds the definition after ours in the lookup order, which
 * is libc's unless another preload also wraps the symbol (then we chain to it).
 * Binding happens once, from the constructor or from the first wrapper that
 * runs before it (another library's constructor may accept or close first).
 * Never from a signal handler: until then fdg_next holds raw syscalls. */
#include "fdguard.h"

#include <dlfcn.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

/* Our own definitions, to detect dlsym handing us back to ourselves (a copy of
 * the library preloaded twice, or a broken link order). */
extern int accept(int, struct sockaddr *, socklen_t *);
extern int accept4(int, struct sockaddr *, socklen_t *, int);
extern int listen(int, int);
extern int close(int);
extern int dup2(int, int);
extern int dup3(int, int, int);
extern int close_range(unsigned int, unsigned int, int);
extern void closefrom(int);
extern int fclose(FILE *);
extern int epoll_create(int);
extern int epoll_create1(int);
extern int epoll_ctl(int, int, int, struct epoll_event *);
extern int epoll_wait(int, struct epoll_event *, int, int);
extern int epoll_pwait(int, struct epoll_event *, int, int, const sigset_t *);
extern int epoll_pwait2(int, struct epoll_event *, int, const struct timespec *, const sigset_t *);
extern int unshare(int);
extern int dup(int);
extern int fcntl(int, int, ...);
extern int fcntl64(int, int, ...);
extern int shmget(key_t, size_t, int);
extern int semget(key_t, int, int);
extern int msgget(key_t, int);
extern void *dlopen(const char *, int);
extern int dlclose(void *);
extern ssize_t sendmsg(int, const struct msghdr *, int);
extern int sendmmsg(int, struct mmsghdr *, unsigned int, int);
extern int posix_spawn(pid_t *, const char *, const posix_spawn_file_actions_t *,
                       const posix_spawnattr_t *, char *const[], char *const[]);
extern int posix_spawnp(pid_t *, const char *, const posix_spawn_file_actions_t *,
                        const posix_spawnattr_t *, char *const[], char *const[]);
extern int system(const char *);
extern FILE *popen(const char *, const char *);
extern int clone(int (*)(void *), void *, int, void *, ...);
extern pid_t _Fork(void);

/* Keeps the raw fallback (raw.c) when there is no usable next definition. */
static void *bind_one(const char *name, void *self, void *fallback, bool required)
{
    void *next = dlsym(RTLD_NEXT, name);
    if (next && next != self) return next;
    if (required)
        fdg_logf(FDG_LVL_ERROR, FDG_EV_BIND,
                 "fatal: cannot bind the next definition of %s; using the raw system call", name);
    return fallback;
}

#define BIND(sym, required)                                                                        \
    fdg_next.sym =                                                                                 \
        (__typeof__(fdg_next.sym))bind_one(#sym, (void *)sym, (void *)fdg_next.sym, required)

void fdg_bind_next(void)
{
    BIND(accept, true);
    BIND(accept4, true);
    BIND(listen, true);
    BIND(close, true);
    BIND(dup2, true);
    BIND(dup3, true);
    BIND(fclose, true);
    BIND(epoll_create, true);
    BIND(epoll_create1, true);
    BIND(epoll_ctl, true);
    BIND(epoll_wait, true);
    BIND(epoll_pwait, true);
    BIND(epoll_pwait2, false); /* glibc 2.35 */
    BIND(unshare, true);
    fdg_next.libc_single_threaded = dlsym(RTLD_NEXT, "__libc_single_threaded"); /* glibc 2.32 */
    BIND(dup, true);
    BIND(fcntl, true);
    BIND(fcntl64, false); /* glibc 2.28 */
    BIND(shmget, true);
    BIND(semget, true);
    BIND(msgget, true);
    BIND(dlopen, true);
    BIND(dlclose, true);
    fdg_next.dlerror = dlerror; /* not interposed */
    fdg_dlcaller_bind();
    BIND(sendmsg, true);
    BIND(sendmmsg, true);
    BIND(posix_spawn, true);
    BIND(posix_spawnp, true);
    BIND(system, true);
    BIND(popen, true);
    BIND(clone, true);
    fdg_next.fork_ = (pid_t(*)(void))bind_one("_Fork", (void *)_Fork, NULL, false); /* 2.34 */
    /* close_range and closefrom appeared in glibc 2.34: optional. */
    BIND(close_range, false);
    BIND(closefrom, false);
}
