/* Who may use the spare's slot: one thread at a time, for accepts that do
 * not wait.
 *
 * Closing the spare frees one slot; any descriptor the process creates next
 * takes it. Two relieving threads must therefore not lend at once: the
 * second would re-open the spare into the first one's slot, and the first
 * one's accept would fail again. The holder keeps the slot for one accept,
 * or a run of them that never waits (a non-blocking listener, a blocking one
 * that poll has just found readable), and never across a wait.
 *
 * The state is one word, its pid in the high half and a ticket in the low:
 *   - a fork child sees its parent's pid, and the word is free for it: a
 *     thread inside relief at fork time does not exist in the child;
 *   - a holder stuck in an accept (another process took the connection
 *     between poll and accept) or cancelled there is taken over once it has
 *     held the same ticket for FDGUARD_BACKOFF_MAX_MS: nothing has to be
 *     cleaned up when a holder dies;
 *   - a holder going through a long backlog offers the slot between two
 *     connections to a thread waiting for another listener (whose backlog
 *     must not wait for this one's to end); threads of the same listener
 *     just wait, the holder is taking their connections anyway. */
#include "fdguard.h"

#include <errno.h>
#include <sched.h>
#include <time.h>

#define OFFERED 0x80000000u
#define OFFER_US 2000 /* an offer nobody took goes back to the one who made it */

static _Atomic uint64_t holder;
static _Atomic uint32_t tickets;
/* The listener the holder takes connections from. */
static _Atomic int holding_fd = -1;
/* The pid of a process in which a thread waits for the slot, for another
 * listener. */
static _Atomic pid_t wanted;
/* When the holder took it (fdg_now_us), and the ticket this thread holds:
 * fdg_lend_busy tells a holder from the other threads, and a stuck holder
 * from a live one. */
static _Atomic uint64_t held_since;
static __thread uint64_t held_here __attribute__((tls_model("initial-exec")));

static pid_t self_pid(void)
{
    return atomic_load_explicit(&fdg_self_pid, memory_order_relaxed);
}

static uint64_t new_ticket(pid_t self)
{
    uint32_t t;
    do
        t = atomic_fetch_add_explicit(&tickets, 1, memory_order_relaxed) & ~OFFERED;
    while (t == 0);
    return (uint64_t)(uint32_t)self << 32 | t;
}

int fdg_lend_acquire(uint64_t *mine, uint64_t offer, int fd, uint64_t deadline_us, bool signals)
{
    pid_t self = self_pid();
    uint64_t me = new_ticket(self), seen = 0, since = 0;
    uint64_t stale_us = (uint64_t)fdg_cfg.backoff_max_ms * 1000;
    for (unsigned round = 0;; round++) {
        uint64_t cur = atomic_load(&holder), now = fdg_now_us();
        if (cur != seen || round == 0) {
            seen = cur;
            since = now;
        }
        bool free;
        if (cur == 0 || (pid_t)(cur >> 32) != self)
            free = true;
        else if (cur & OFFERED)
            free = cur != offer || now - since >= OFFER_US;
        else
            free = now - since >= stale_us;
        if (free && atomic_compare_exchange_strong(&holder, &cur, me)) {
            atomic_store_explicit(&holding_fd, fd, memory_order_relaxed);
            atomic_store_explicit(&held_since, now, memory_order_relaxed);
            held_here = me;
            *mine = me;
            return FDG_LEND_OK;
        }
        if (!free && !(cur & OFFERED) &&
            atomic_load_explicit(&holding_fd, memory_order_relaxed) != fd)
            atomic_store_explicit(&wanted, self, memory_order_relaxed);
        if (deadline_us && now >= deadline_us) return FDG_LEND_TIMEOUT;
        /* The holder needs a few system calls: let it run, then nap. */
        if (round < 4 || (cur & OFFERED)) {
            sched_yield();
            continue;
        }
        uint64_t us = round < 10 ? 25u << (round - 4) : 1000;
        if (deadline_us && now + us > deadline_us) us = deadline_us - now;
        struct timespec ts = {0, (long)us * 1000};
        int saved = errno;
        int rc = nanosleep(&ts, NULL);
        errno = saved;
        if (rc != 0 && signals) return FDG_LEND_SIGNAL;
    }
}

void fdg_lend_release(uint64_t mine)
{
    if (held_here == mine) held_here = 0;
    atomic_compare_exchange_strong(&holder, &mine, 0); /* taken over: not ours to clear */
}

bool fdg_lend_held_here(void)
{
    uint64_t cur = atomic_load_explicit(&holder, memory_order_relaxed);
    return held_here && cur == held_here && (pid_t)(cur >> 32) == self_pid();
}

bool fdg_lend_busy(void)
{
    uint64_t cur = atomic_load_explicit(&holder, memory_order_relaxed);
    if (FDG_LIKELY(!cur) || (cur & OFFERED) || cur == held_here || (pid_t)(cur >> 32) != self_pid())
        return false;
    uint64_t stale_us = (uint64_t)fdg_cfg.backoff_max_ms * 1000;
    return fdg_now_us() - atomic_load_explicit(&held_since, memory_order_relaxed) < stale_us;
}

bool fdg_lend_wanted(void)
{
    pid_t self = self_pid();
    if (atomic_load_explicit(&wanted, memory_order_relaxed) != self) return false;
    atomic_store_explicit(&wanted, 0, memory_order_relaxed);
    return true;
}

uint64_t fdg_lend_offer(uint64_t mine)
{
    uint64_t offer = mine | OFFERED;
    return atomic_compare_exchange_strong(&holder, &mine, offer) ? offer : 0;
}
