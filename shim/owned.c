/* Descriptors the shim holds for itself: the spare and the log destination.
 *
 * The application does not know about them, so it may close or dup2 over
 * them (a daemon's blanket close loop after fork, a shell's redirections).
 * The close family tells us before it happens; we then forget the number and
 * open a new one when we next need it, instead of one day closing a
 * descriptor that has become the application's. Each is marked in the
 * descriptor table (epoll_table.c), so that the close family's one lookup
 * answers for them too; a descriptor that cannot be marked is not kept. */
#include "fdguard.h"

#include <fcntl.h>

_Atomic int fdg_owned[FDG_OWNED_COUNT] = {-1, -1};

bool fdg_owned_claim(int slot, int fd)
{
    /* fd is in this thread's table: a vfork child's or a private one's
     * number names nothing in the owner's table. */
    if (!fdg_table_owner() || !fdg_ept_mark_owned(fd)) return false;
    int none = -1;
    if (atomic_compare_exchange_strong(&fdg_owned[slot], &none, fd)) return true;
    fdg_ept_unmark_owned(fd);
    return false;
}

void fdg_owned_unmark(int fd)
{
    fdg_ept_unmark_owned(fd);
}

void fdg_owned_lost(int slot, int fd)
{
    /* A vfork child shares our memory but not our descriptor table: its
     * closes must leave the parent's bookkeeping alone; nor may a thread
     * that closes in a private copy of the table (private_table.c). */
    if (!fdg_table_owner()) return;
    if (!atomic_compare_exchange_strong(&fdg_owned[slot], &fd, -1)) return;
    if (slot == FDG_OWNED_SPARE) fdg_count(FDG_C_spare_lost, 1);
    fdg_logf(FDG_LVL_DEBUG, FDG_EV_SPARE, "the application closed or replaced fd %d (our %s)", fd,
             slot == FDG_OWNED_SPARE ? "spare" : "log");
}

void fdg_owned_number_lost(int fd)
{
    for (int slot = 0; slot < FDG_OWNED_COUNT; slot++)
        if (atomic_load_explicit(&fdg_owned[slot], memory_order_relaxed) == fd)
            fdg_owned_lost(slot, fd);
}

int fdg_fd_above_stdio(int fd)
{
    if (fd < 0 || fd > 2) return fd;
    int moved = (int)fdg_raw_fcntl(fd, F_DUPFD_CLOEXEC, 3);
    fdg_raw_close(fd);
    return moved;
}
