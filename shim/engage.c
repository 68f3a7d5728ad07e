/* Engagement: the first guarded action of a process.
 *
 * LD_PRELOAD reaches every child of a guarded program: shells, env, ls,
 * helpers that never accept, register or load anything. Those must not see
 * the shim at all, so nothing visible happens at load. A process engages at
 * its first listen() or accept(), epoll registration it records, dlopen
 * cache miss, or System V IPC creation it records; only then, once, the log
 * destination is opened, the configuration warnings kept since load are
 * written and the stats file is created. A fork child has its own pid and
 * engages on its own first guarded action (its own stats file, %p = its pid);
 * a vfork child shares our memory and never engages. */
#include "fdguard.h"

#include <errno.h>

_Atomic pid_t fdg_engaged_pid = -1;

void fdg_engage_slow(void)
{
    pid_t self = atomic_load(&fdg_self_pid);
    pid_t seen = atomic_load(&fdg_engaged_pid);
    if (seen == self || atomic_load(&fdg_state) != FDG_READY || !fdg_owner_process()) return;
    if (!atomic_compare_exchange_strong(&fdg_engaged_pid, &seen, self)) return;
    int saved = errno;
    fdg_log_prepare();
    fdg_log_flush_deferred();
    fdg_stats_open();
    errno = saved;
}

/* listen(): the spare is wanted from now on; a held one is moved below a
 * soft limit lowered since it was armed, and the log destination is opened
 * while descriptors are free (fdg_engage_slow did it at engagement; this is
 * after a loss). */
void fdg_engage(void)
{
    int saved = errno;
    fdg_engage_once();
    fdg_spare_rehome();
    fdg_spare_arm();
    fdg_log_prepare();
    errno = saved;
}

/* accept(), only while the spare is missing or the process has not engaged
 * (fdg_engage_needed): the spare re-armed, nothing else. A new spare takes
 * the lowest free number, so there is nothing to rehome; the log
 * destination retries on its own timer when a line is written (log.c). */
void fdg_engage_accept(void)
{
    int saved = errno;
    fdg_engage_once();
    fdg_spare_arm();
    errno = saved;
}

void fdg_engage_load(void)
{
    int saved = errno;
    fdg_engage_once();
    if (fdg_spare_held())
        fdg_spare_rehome();
    else
        fdg_spare_arm_if_near();
    fdg_log_prepare();
    errno = saved;
}
