/* Is this the same open file description?
 *
 * epoll keys a registration by (open file description, fd number), so two
 * questions need the kernel's answer: does dup2(x, N) leave N naming the
 * description it had (then N's registration lives on), and does another
 * process still hold an epoll instance (the fork rule). kcmp(KCMP_FILE)
 * answers both in one system call. It can be missing (CONFIG_KCMP) or
 * refused (container seccomp profiles allow it only with CAP_SYS_PTRACE);
 * then the callers fall back to what they can know without it. */
#include "fdguard.h"

#include <errno.h>
#include <linux/kcmp.h>
#include <sys/stat.h>
#include <sys/syscall.h>

static long kcmp_file(pid_t pid1, pid_t pid2, int fd1, int fd2)
{
    return syscall(SYS_kcmp, pid1, pid2, KCMP_FILE, (unsigned long)fd1, (unsigned long)fd2);
}

int fdg_kcmp_file(pid_t pid2, int fd1, int fd2)
{
    int saved = errno;
    pid_t self = atomic_load_explicit(&fdg_self_pid, memory_order_relaxed);
    long r = kcmp_file(self, pid2 ? pid2 : self, fd1, fd2);
    /* The cached pid names the thread-group leader, whose table is gone if
     * it exited before the other threads; our own tid names our table. */
    if (r < 0 && errno == EBADF) {
        pid_t tid = (pid_t)syscall(SYS_gettid);
        r = kcmp_file(tid, pid2 ? pid2 : tid, fd1, fd2);
    }
    int err = errno;
    errno = saved;
    return r >= 0 ? r == 0 : -err;
}

bool fdg_same_description(int fd1, int fd2)
{
    int same = fdg_kcmp_file(0, fd1, fd2);
    if (same >= 0) return same;
    if (same == -EBADF) return false; /* one of them is not open */
    /* Without kcmp: a socket has exactly one description (dup, fork and
     * SCM_RIGHTS share it; it cannot be opened again by path). Pipes, FIFOs,
     * files and anonymous inodes can have several per inode: unknown, which
     * the caller treats as different (it deletes, as it always did). */
    int saved = errno;
    struct stat a, b;
    bool sock = fstat(fd1, &a) == 0 && fstat(fd2, &b) == 0 && S_ISSOCK(a.st_mode) &&
                a.st_dev == b.st_dev && a.st_ino == b.st_ino;
    errno = saved;
    return sock;
}
