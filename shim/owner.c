/* Who may write the shim's state: the process that owns this memory, told
 * apart without a system call.
 *
 * A vfork child shares our memory, our thread's TLS and none of our
 * descriptor table: its closes happen in its own copy, and anything it
 * wrote here would be its parent's. The thread that made it is suspended
 * until it execs or exits, so a mark in that thread's TLS, set before the
 * system call and restored after it, tells the child (vfork.c, and spawn.c
 * for posix_spawn and clone with CLONE_VM|CLONE_VFORK, whose children are
 * the same kind); while the mark is up, a getpid tells the child from a
 * signal handler of the parent's thread.
 *
 * A child made without the fork handlers (a raw fork or clone system call,
 * _Fork, clone() without CLONE_VM) has a copy of our memory that believes it
 * is its parent's. A page mapped MADV_WIPEONFORK reads as zeroes in every
 * such child (the kernel's dup_mmap empties it): the owner writes 1 there,
 * and a fork child's handler writes it again, as it owns its copy from then
 * on (with its own epoch, epoll_table.c). The page is mapped at the first
 * write to shared state, never at load; before it exists nothing recorded
 * can be mistaken for a parent's.
 *
 * A child that runs beside us in our memory with a table of its own (clone
 * with CLONE_VM but neither CLONE_VFORK nor CLONE_FILES) has no such tell:
 * after the first one the owner is the process whose pid is ours, one getpid
 * per check. So it is, throughout, on kernels without MADV_WIPEONFORK
 * (before 4.14) and where there is no vfork stub (vfork.c: x86-64 only). */
#include "fdguard.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

__thread unsigned char fdg_in_vfork __attribute__((tls_model("initial-exec")));

#if defined(__x86_64__)
_Atomic bool fdg_owner_by_pid;
#else
_Atomic bool fdg_owner_by_pid = true;
#endif

#define PAGE 4096
_Atomic(volatile unsigned char *) fdg_owner_page;

static bool same_pid(void)
{
    return (pid_t)syscall(SYS_getpid) == atomic_load_explicit(&fdg_self_pid, memory_order_relaxed);
}

/* The first write of this memory: the page, marked. */
__attribute__((noinline, cold)) static bool owner_first(void)
{
    int saved = errno;
    void *mem = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem != MAP_FAILED && madvise(mem, PAGE, MADV_WIPEONFORK) != 0) {
        munmap(mem, PAGE);
        mem = MAP_FAILED;
    }
    if (mem == MAP_FAILED) { /* no MADV_WIPEONFORK here */
        atomic_store(&fdg_owner_by_pid, true);
        errno = saved;
        return same_pid();
    }
    *(volatile unsigned char *)mem = 1;
    volatile unsigned char *none = NULL;
    if (!atomic_compare_exchange_strong(&fdg_owner_page, &none, mem)) munmap(mem, PAGE);
    errno = saved;
    return *atomic_load(&fdg_owner_page) != 0;
}

bool fdg_owner_process(void)
{
    /* Set in the child, and in the parent's thread too: a signal handler
     * that runs there while the mark is up (a signal delivered as vfork
     * returns) is the owner. The pid tells them apart. */
    if (FDG_UNLIKELY(fdg_in_vfork)) return same_pid();
    if (FDG_UNLIKELY(atomic_load_explicit(&fdg_owner_by_pid, memory_order_relaxed)))
        return same_pid();
    volatile unsigned char *page = atomic_load_explicit(&fdg_owner_page, memory_order_acquire);
    if (FDG_UNLIKELY(!page)) return owner_first();
    return *page != 0;
}

void fdg_owner_after_fork(void)
{
    volatile unsigned char *page = atomic_load(&fdg_owner_page);
    if (page) *page = 1;
    fdg_in_vfork = 0; /* the child's only thread is not suspended in anything */
}
