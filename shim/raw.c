/* System calls that bypass every wrapper. They are what fdg_next holds until
 * binding is done (a wrapper may run inside our own initialisation, or in a
 * signal handler before it) and if a required definition cannot be bound.
 * The shim also closes its own descriptors with fdg_raw_close: calling close()
 * from inside the library would resolve to our own exported close. */
#include "fdguard.h"

#include <sys/uio.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>

int fdg_raw_close(int fd)
{
    return (int)syscall(SYS_close, fd);
}

long fdg_raw_fcntl(int fd, int cmd, long arg)
{
    return syscall(SYS_fcntl, fd, cmd, arg);
}

/* Our own memory read through the kernel (process_vm_readv on ourselves): a
 * page that cannot be read (unmapped, protected, past the end of a file cut
 * in place) fails with EFAULT instead of raising SIGSEGV or SIGBUS in the
 * host. 1: all read; 0: not readable; -1: the call is refused here
 * (seccomp: ENOSYS, EPERM). errno is kept. */
int fdg_read_self(const void *addr, void *buf, size_t len)
{
    struct iovec local = {buf, len}, remote = {(void *)addr, len};
    int saved = errno;
    ssize_t got = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    int r = got == (ssize_t)len ? 1 : got < 0 && (errno == ENOSYS || errno == EPERM) ? -1 : 0;
    errno = saved;
    return r;
}

static int raw_dup(int fd)
{
    return (int)syscall(SYS_dup, fd);
}

static int raw_fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    long arg = va_arg(ap, long);
    va_end(ap);
    return (int)fdg_raw_fcntl(fd, cmd, arg);
}

static int raw_accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    return (int)syscall(SYS_accept, fd, addr, len);
}

static int raw_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    return (int)syscall(SYS_accept4, fd, addr, len, flags);
}

static int raw_listen(int fd, int backlog)
{
    return (int)syscall(SYS_listen, fd, backlog);
}

static int raw_dup2(int oldfd, int newfd)
{
    /* dup2(fd, fd) validates fd instead of failing like dup3. */
    if (oldfd == newfd) return syscall(SYS_fcntl, oldfd, F_GETFD) < 0 ? -1 : newfd;
    return (int)syscall(SYS_dup3, oldfd, newfd, 0);
}

static int raw_dup3(int oldfd, int newfd, int flags)
{
    return (int)syscall(SYS_dup3, oldfd, newfd, flags);
}

static int raw_close_range(unsigned int lo, unsigned int hi, int flags)
{
    return (int)syscall(SYS_close_range, lo, hi, flags);
}

static void raw_closefrom(int lo)
{
    syscall(SYS_close_range, (unsigned)lo, ~0U, 0);
}

static int raw_epoll_create(int size)
{
    return size <= 0 ? (errno = EINVAL, -1) : (int)syscall(SYS_epoll_create1, 0);
}

static int raw_epoll_create1(int flags)
{
    return (int)syscall(SYS_epoll_create1, flags);
}

static int raw_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    return (int)syscall(SYS_epoll_ctl, epfd, op, fd, ev);
}

/* SYS_epoll_wait does not exist everywhere; epoll_pwait without a mask is
 * the same call. */
static int raw_epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout)
{
    return (int)syscall(SYS_epoll_pwait, epfd, ev, max, timeout, NULL, _NSIG / 8);
}

static int raw_epoll_pwait(int epfd, struct epoll_event *ev, int max, int timeout,
                           const sigset_t *mask)
{
    return (int)syscall(SYS_epoll_pwait, epfd, ev, max, timeout, mask, _NSIG / 8);
}

static int raw_epoll_pwait2(int epfd, struct epoll_event *ev, int max, const struct timespec *ts,
                            const sigset_t *mask)
{
#ifdef SYS_epoll_pwait2
    return (int)syscall(SYS_epoll_pwait2, epfd, ev, max, ts, mask, _NSIG / 8);
#else
    (void)epfd, (void)ev, (void)max, (void)ts, (void)mask;
    errno = ENOSYS;
    return -1;
#endif
}

static int raw_unshare(int flags)
{
    return (int)syscall(SYS_unshare, flags);
}

/* stdio has no system call: bind on demand (fclose is no signal path). */
static int lazy_fclose(FILE *stream)
{
    int (*next)(FILE *) = (int (*)(FILE *))dlsym(RTLD_NEXT, "fclose");
    return next ? next(stream) : EOF;
}

/* The loader has no system call either; dlopen is never a signal path. */
static void *lazy_dlopen(const char *file, int mode)
{
    void *(*next)(const char *, int) = (void *(*)(const char *, int))dlsym(RTLD_NEXT, "dlopen");
    return next ? next(file, mode) : NULL;
}

static int lazy_dlclose(void *handle)
{
    int (*next)(void *) = (int (*)(void *))dlsym(RTLD_NEXT, "dlclose");
    return next ? next(handle) : -1;
}

static int raw_shmget(key_t key, size_t size, int flg)
{
    return (int)syscall(SYS_shmget, key, size, flg);
}

static int raw_semget(key_t key, int nsems, int flg)
{
    return (int)syscall(SYS_semget, key, nsems, flg);
}

static int raw_msgget(key_t key, int flg)
{
    return (int)syscall(SYS_msgget, key, flg);
}

static ssize_t raw_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return syscall(SYS_sendmsg, fd, msg, flags);
}

static int raw_sendmmsg(int fd, struct mmsghdr *vec, unsigned int n, int flags)
{
    return (int)syscall(SYS_sendmmsg, fd, vec, n, flags);
}

/* Process creation is never a signal path: bind on demand. */
#define LAZY(name) dlsym(RTLD_NEXT, name)

static int lazy_posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                            const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    int (*next)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                const posix_spawnattr_t *, char *const[], char *const[]) = LAZY("posix_spawn");
    return next ? next(pid, path, fa, attr, argv, envp) : ENOSYS;
}

static int lazy_posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                             const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    int (*next)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                const posix_spawnattr_t *, char *const[], char *const[]) = LAZY("posix_spawnp");
    return next ? next(pid, file, fa, attr, argv, envp) : ENOSYS;
}

static int lazy_system(const char *command)
{
    int (*next)(const char *) = LAZY("system");
    return next ? next(command) : -1;
}

static FILE *lazy_popen(const char *command, const char *mode)
{
    FILE *(*next)(const char *, const char *) = LAZY("popen");
    return next ? next(command, mode) : NULL;
}

static int lazy_clone(int (*fn)(void *), void *stack, int flags, void *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    pid_t *ptid = va_arg(ap, pid_t *);
    void *tls = va_arg(ap, void *);
    pid_t *ctid = va_arg(ap, pid_t *);
    va_end(ap);
    int (*next)(int (*)(void *), void *, int, void *, ...) = LAZY("clone");
    if (!next) {
        errno = ENOSYS;
        return -1;
    }
    return next(fn, stack, flags, arg, ptid, tls, ctid);
}

struct fdg_next fdg_next = {
    .accept = raw_accept,
    .accept4 = raw_accept4,
    .listen = raw_listen,
    .close = fdg_raw_close,
    .dup2 = raw_dup2,
    .dup3 = raw_dup3,
    .close_range = raw_close_range,
    .closefrom = raw_closefrom,
    .fclose = lazy_fclose,
    .epoll_create = raw_epoll_create,
    .epoll_create1 = raw_epoll_create1,
    .epoll_ctl = raw_epoll_ctl,
    .epoll_wait = raw_epoll_wait,
    .epoll_pwait = raw_epoll_pwait,
    .epoll_pwait2 = raw_epoll_pwait2,
    .unshare = raw_unshare,
    .dup = raw_dup,
    .fcntl = raw_fcntl,
    .fcntl64 = raw_fcntl,
    .shmget = raw_shmget,
    .semget = raw_semget,
    .msgget = raw_msgget,
    .dlopen = lazy_dlopen,
    .dlclose = lazy_dlclose,
    .dlerror = dlerror,
    .sendmsg = raw_sendmsg,
    .sendmmsg = raw_sendmmsg,
    .posix_spawn = lazy_posix_spawn,
    .posix_spawnp = lazy_posix_spawnp,
    .system = lazy_system,
    .popen = lazy_popen,
    .clone = lazy_clone,
};
