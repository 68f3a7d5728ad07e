/* The spare descriptor: one slot of the descriptor table kept in reserve, so
 * that at EMFILE we can close it and take the pending connection (or let the
 * loader open its file) instead of failing. The same trick as libuv's
 * uv__emfile_trick, done for any binary.
 *
 * It is opened on first need, not at load; O_PATH on /dev/null (or "/"),
 * O_CLOEXEC so children never inherit it, never in 0..2. O_PATH also makes it
 * recognisable: before closing the number we check it is still ours, in case
 * the application closed it with a raw syscall and reused the number. */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static int open_spare(void)
{
    int fd = open("/dev/null", O_PATH | O_CLOEXEC);
    if (fd < 0 && errno != EMFILE && errno != ENFILE)
        fd = open("/", O_PATH | O_CLOEXEC); /* a chroot without /dev */
    return fdg_fd_above_stdio(fd);
}

static bool is_our_spare(int fd)
{
    struct stat st;
    int fl = (int)fdg_raw_fcntl(fd, F_GETFL, 0);
    if (fl < 0 || !(fl & O_PATH) || fstat(fd, &st) < 0) return false;
    return (S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)) || S_ISDIR(st.st_mode);
}

bool fdg_spare_held(void)
{
    return atomic_load_explicit(&fdg_owned[FDG_OWNED_SPARE], memory_order_relaxed) >= 0;
}

bool fdg_spare_arm(void)
{
    if (fdg_spare_held()) return true;
    int saved = errno;
    int fd = open_spare();
    errno = saved;
    if (fd < 0) return false;
    if (fdg_owned_claim(FDG_OWNED_SPARE, fd))
        fdg_count(FDG_C_spare_armed, 1);
    else
        fdg_raw_close(fd); /* another thread armed one meanwhile: one is enough */
    return true;
}

bool fdg_spare_lend(void)
{
    int fd = atomic_exchange(&fdg_owned[FDG_OWNED_SPARE], -1);
    if (fd < 0) return false;
    int saved = errno;
    bool ours = is_our_spare(fd);
    if (ours) fdg_raw_close(fd);
    errno = saved;
    fdg_count(ours ? FDG_C_spare_lent : FDG_C_spare_lost, 1);
    return ours;
}

bool fdg_spare_lend_if_full(void)
{
    int spare = atomic_load_explicit(&fdg_owned[FDG_OWNED_SPARE], memory_order_relaxed);
    if (spare < 0) return false;
    int saved = errno;
    int probe = (int)fdg_raw_fcntl(spare, F_DUPFD_CLOEXEC, 0);
    bool full = probe < 0 && (errno == EMFILE || errno == ENFILE);
    if (probe >= 0) fdg_raw_close(probe);
    errno = saved;
    return full && fdg_spare_lend();
}
