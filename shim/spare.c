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
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static int open_spare(void)
{
    int fd = open("/dev/null", O_PATH | O_CLOEXEC);
    if (fd < 0 && errno != EMFILE && errno != ENFILE)
        fd = open("/", O_PATH | O_CLOEXEC); /* a chroot without /dev */
    return fdg_fd_above_stdio(fd);
}

/* The close family tells us when the application closes our number; only a
 * raw close system call and a reuse of the number could put something else
 * there, and applications do not make O_PATH descriptors. One system call
 * per lend. */
static bool is_our_spare(int fd)
{
    int fl = (int)fdg_raw_fcntl(fd, F_GETFL, 0);
    return fl >= 0 && (fl & O_PATH);
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
    if (fdg_owned_claim(FDG_OWNED_SPARE, fd)) {
        fdg_count(FDG_C_spare_armed, 1);
        return true;
    }
    fdg_raw_close(fd); /* another thread armed one meanwhile: one is enough */
    return fdg_spare_held();
}

bool fdg_spare_lend(void)
{
    int fd = atomic_exchange(&fdg_owned[FDG_OWNED_SPARE], -1);
    if (fd < 0) return false;
    fdg_owned_unmark(fd);
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

/* A process that only loads libraries needs the spare only near its limit
 * (a load takes one descriptor at a time, and at EMFILE glibc gives up
 * /etc/ld.so.cache for good); anywhere else an extra descriptor is visible
 * to it (CPython's test_subprocess counts its descriptors). We look only at
 * cache misses, so the margin is how far the table may grow between two
 * misses unseen: proportional to the limit, since a bigger table moves in
 * bigger steps (a burst of connections), and at least 16. Arming early costs
 * one descriptor in a process that holds 15/16 of its table already. */
static rlim_t near_margin(rlim_t soft)
{
    rlim_t margin = soft / 16;
    return margin < 16 ? 16 : margin;
}

bool fdg_spare_arm_if_near(void)
{
    if (fdg_spare_held()) return true;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
    int saved = errno;
    /* The kernel hands out the lowest free number: the probe measures the
     * table and, if we are near, becomes the spare. */
    int probe = open("/dev/null", O_PATH | O_CLOEXEC);
    if (probe < 0 && errno != EMFILE && errno != ENFILE) probe = open("/", O_PATH | O_CLOEXEC);
    if (probe < 0) {
        errno = saved;
        return false; /* full already: nothing to arm with */
    }
    rlim_t soft = rl.rlim_cur, margin = near_margin(soft);
    bool near = (rlim_t)probe + margin >= soft;
    if (!near) {
        /* Holes below can hide a full top: all of the last `margin` numbers
         * in use means the table reached the limit and may again. */
        int top = (int)fdg_raw_fcntl(probe, F_DUPFD_CLOEXEC, (long)(soft - margin));
        near = top < 0 && errno == EMFILE;
        if (top >= 0) fdg_raw_close(top);
    }
    int fd = near ? fdg_fd_above_stdio(probe) : (fdg_raw_close(probe), -1);
    errno = saved;
    if (fd < 0) return false;
    if (fdg_owned_claim(FDG_OWNED_SPARE, fd)) {
        fdg_count(FDG_C_spare_armed, 1);
        return true;
    }
    fdg_raw_close(fd);
    return fdg_spare_held();
}

/* The soft limit can be lowered under a running process (prlimit, fdguard
 * squeeze): a spare at or above it frees, when closed, a number the kernel
 * will not hand out. Keeping the spare at the lowest free number makes that
 * unlikely (a limit is lowered to what is in use); a spare that is above
 * the limit and cannot move is dropped, to be re-armed when room appears. */
void fdg_spare_rehome(void)
{
    int fd = atomic_load_explicit(&fdg_owned[FDG_OWNED_SPARE], memory_order_relaxed);
    if (fd < 0) return;
    int saved = errno;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || !is_our_spare(fd)) {
        errno = saved;
        return;
    }
    int low = (int)fdg_raw_fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int expected = fd;
    if (low >= 0 && low < fd) {
        if (fdg_ept_mark_owned(low) &&
            atomic_compare_exchange_strong(&fdg_owned[FDG_OWNED_SPARE], &expected, low)) {
            fdg_owned_unmark(fd);
            fdg_raw_close(fd);
        } else {
            fdg_owned_unmark(low);
            fdg_raw_close(low); /* lent or replaced meanwhile */
        }
    } else {
        if (low >= 0) fdg_raw_close(low);
        if ((rlim_t)fd >= rl.rlim_cur &&
            atomic_compare_exchange_strong(&fdg_owned[FDG_OWNED_SPARE], &expected, -1)) {
            fdg_owned_unmark(fd);
            fdg_raw_close(fd);
            fdg_count(FDG_C_spare_lost, 1);
            fdg_logf(FDG_LVL_INFO, FDG_EV_SPARE,
                     "spare fd %d is above the soft descriptor limit %llu (lowered?) and nothing "
                     "is free below it; dropped, re-armed when room appears",
                     fd, (unsigned long long)rl.rlim_cur);
        }
    }
    errno = saved;
}
