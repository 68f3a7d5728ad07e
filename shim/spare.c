/* The spare descriptor: one slot of the descriptor table kept in reserve, so
 * that at EMFILE we can close it and take the pending connection (or let the
 * loader open its file) instead of failing. The same trick as libuv's
 * uv__emfile_trick, done for any binary.
 *
 * It is opened on first need, not at load; O_PATH on /dev/null (or "/"),
 * O_CLOEXEC so children never inherit it, never in 0..2. Its device and
 * inode are recorded when it is armed: before closing the number we check
 * it still names that file, in case the application closed it with a raw
 * syscall and reused the number.
 *
 * Every function here that changes the spare first checks that this thread
 * may act on the shim's descriptors (fdg_table_owner: not a vfork child, nor
 * a thread with a table of its own, whose numbers are not ours), and an arm
 * leaves the slot alone while another thread has it lent (lend.c). */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

/* What the spare is: every arm opens the same file, so one record serves
 * (written before the claim that publishes the number). */
static _Atomic uint64_t spare_dev, spare_ino;

/* A new descriptor on the spare's file: the lowest free number. */
static int open_target(void)
{
    int fd = open("/dev/null", O_PATH | O_CLOEXEC);
    if (fd < 0 && errno != EMFILE && errno != ENFILE)
        fd = open("/", O_PATH | O_CLOEXEC); /* a chroot without /dev */
    return fd;
}

/* The close family tells us when the application closes our number; only a
 * raw close system call and a reuse of the number could put something else
 * there. One system call per lend. A descriptor of the app's own on the
 * same file at that number would pass (README, Limits). */
static bool is_our_spare(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && (uint64_t)st.st_dev == atomic_load(&spare_dev) &&
           (uint64_t)st.st_ino == atomic_load(&spare_ino);
}

/* fd (a new descriptor on the spare's file) becomes the spare, above 0..2,
 * unless another thread armed one meanwhile; closed otherwise. errno is
 * the caller's to keep. */
static bool claim(int fd)
{
    struct stat st;
    fd = fdg_fd_above_stdio(fd);
    if (fd >= 0 && fstat(fd, &st) == 0) {
        atomic_store(&spare_dev, (uint64_t)st.st_dev);
        atomic_store(&spare_ino, (uint64_t)st.st_ino);
        if (fdg_owned_claim(FDG_OWNED_SPARE, fd)) {
            fdg_count(FDG_C_spare_armed, 1);
            return true;
        }
    }
    if (fd >= 0) fdg_raw_close(fd); /* one is enough */
    return fdg_spare_held();
}

/* May this thread open a spare now? Not in a vfork child or a private
 * table, and not while another thread has the spare's slot lent: our open
 * would take the slot it freed for its accept or load. */
static bool may_arm(void)
{
    return fdg_table_owner() && !fdg_lend_busy();
}

bool fdg_spare_held(void)
{
    return atomic_load_explicit(&fdg_owned[FDG_OWNED_SPARE], memory_order_relaxed) >= 0;
}

bool fdg_spare_arm(void)
{
    if (fdg_spare_held()) return true;
    if (!may_arm()) return false;
    int saved = errno;
    int fd = open_target();
    bool held = fd >= 0 && claim(fd);
    errno = saved;
    return held;
}

bool fdg_spare_lend(void)
{
    if (!fdg_table_owner()) return false;
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

/* Is the descriptor table full right now? One probe. */
static bool table_full(int spare)
{
    int saved = errno;
    int probe = (int)fdg_raw_fcntl(spare, F_DUPFD_CLOEXEC, 0);
    bool full = probe < 0 && (errno == EMFILE || errno == ENFILE);
    if (probe >= 0) fdg_raw_close(probe);
    errno = saved;
    return full;
}

bool fdg_spare_lend_for_load(uint64_t *mine)
{
    *mine = 0;
    int spare = atomic_load_explicit(&fdg_owned[FDG_OWNED_SPARE], memory_order_relaxed);
    if (spare < 0 || !fdg_table_owner() || !table_full(spare)) return false;
    /* A load inside a load (a constructor's dlopen) holds it already. Else
     * wait for a relieving thread, as long as a stuck one is waited for:
     * the holder never waits for a load, so this cannot deadlock. */
    if (!fdg_lend_held_here()) {
        uint64_t deadline = fdg_now_us() + (uint64_t)fdg_cfg.backoff_max_ms * 1000;
        if (fdg_lend_acquire(mine, 0, -1, deadline, false) != FDG_LEND_OK) return false;
    }
    if (fdg_spare_lend()) return true;
    fdg_lend_release(*mine); /* the holder used the spare meanwhile */
    *mine = 0;
    return false;
}

void fdg_spare_return(uint64_t mine)
{
    fdg_spare_arm();
    if (mine) fdg_lend_release(mine);
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
    if (!may_arm()) return false;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
    int saved = errno;
    /* The kernel hands out the lowest free number: the probe measures the
     * table and, if we are near, becomes the spare. */
    int probe = open_target();
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
    bool held = near ? claim(probe) : (fdg_raw_close(probe), false);
    errno = saved;
    return held;
}

/* The soft limit can be lowered under a running process (prlimit, fdguard
 * squeeze): a spare at or above it frees, when closed, a number the kernel
 * will not hand out. Keeping the spare at the lowest free number makes that
 * unlikely (a limit is lowered to what is in use); a spare that is above
 * the limit and cannot move is dropped, to be re-armed when room appears. */
void fdg_spare_rehome(void)
{
    int fd = atomic_load_explicit(&fdg_owned[FDG_OWNED_SPARE], memory_order_relaxed);
    if (fd < 0 || !fdg_table_owner()) return;
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
