/* Threads with a descriptor table of their own.
 *
 * unshare(CLONE_FILES) and close_range(..., CLOSE_RANGE_UNSHARE) give the
 * calling thread a private copy of the descriptor table when the table is
 * shared (kernel unshare_fd: only if another task holds it); its closes then
 * take nothing away from the other threads. The registrations the shim
 * tracks, and its own descriptors, belong to the shared table: such a thread
 * must neither delete nor forget them. We mark it (initial-exec TLS, read
 * only after a closed number was found tracked) and it passes through. */
#include "fdguard.h"

#include <errno.h>
#include <sched.h>
#include <sys/stat.h>

#define EXPORT __attribute__((visibility("default")))

__thread bool fdg_private_table __attribute__((tls_model("initial-exec")));

bool fdg_table_shared(void)
{
    /* glibc's own answer: no thread was ever created. */
    const char *single = fdg_next.libc_single_threaded;
    if (single && *single) return false;
    /* /proc/self/task has two links plus one per thread (the threads of a
     * process that once had several may all be gone). No descriptor needed. */
    int saved = errno;
    struct stat st;
    bool shared = stat("/proc/self/task", &st) != 0 || st.st_nlink != 3;
    errno = saved;
    return shared;
}

EXPORT int unshare(int flags)
{
    int saved = errno;
    bool copies = (flags & CLONE_FILES) && !fdg_private_table && fdg_active() && fdg_table_shared();
    errno = saved;
    if (!copies) return fdg_next.unshare(flags);
    /* The copy holds a reference to every description (spawn.c). */
    fdg_spawn_begin();
    int r = fdg_next.unshare(flags);
    /* Only the owner's thread: a vfork child runs on its parent's TLS. */
    if (r == 0 && fdg_owner_process()) fdg_private_table = true;
    saved = errno;
    fdg_spawn_end();
    errno = saved;
    return r;
}
