/* System V IPC creators, for `fdguard ipc`.
 *
 * A process killed with SIGKILL leaves its shared memory, semaphores and
 * message queues behind. For shared memory the kernel keeps the creator's
 * pid (shm_cpid); for semaphore sets and message queues it keeps nothing
 * that says who created them. So the shim records, for every object created
 * through shmget, semget or msgget, the creator's pid and start time (to
 * tell a dead creator from a reused pid) in a registry directory:
 *   /tmp/fdguard-ipc-UID/{shm,sem,msg}.ID
 * created 0700 and opened without following another user's links
 * (safefile.c); entries are 0600 files of exactly four lines:
 *   pid N\nstart N\nkey N\nprog NAME\n   (NAME escaped: one line whatever it holds)
 * Under secure execution (setuid and the like) nothing is written: the
 * directory would be chosen by the caller's uid and environment. */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define ENTRY_MAX 1024

/* The registry directory, if it is ours: a directory (not a link), owned by
 * us, with no group or other access. Said once when it is not. */
static int open_registry(void)
{
    static _Atomic bool refusal_reported;
    char dir[64];
    const char *why;
    fdg_formatf(dir, sizeof dir, "/tmp/fdguard-ipc-%u", (unsigned)geteuid());
    int fd = fdg_safe_private_dir(dir, &why);
    if (fd < 0 && !atomic_exchange(&refusal_reported, true))
        fdg_logf(FDG_LVL_WARN, FDG_EV_IPC, "IPC registry %s: %-s; creators are not recorded", dir,
                 why);
    return fd;
}

static void record(const char *kind, int id, key_t key)
{
    int saved = errno;
    fdg_engage_once();
    int dir = fdg_cfg.secure ? -1 : open_registry();
    if (dir >= 0) {
        char name[32], text[ENTRY_MAX];
        fdg_formatf(name, sizeof name, "%s.%d", kind, id);
        /* An entry left by an earlier object with the same id is stale. */
        unlinkat(dir, name, 0);
        int fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        size_t len =
            fdg_formatf(text, sizeof text, "pid %d\nstart %llu\nkey %d\nprog %s\n", (int)getpid(),
                        fdg_start_time(getpid()), (int)key, fdg_prog_name());
        if (text[len - 1] != '\n') { /* a name too long: cut (escapes stay whole) */
            if (len > sizeof text - 2) len = sizeof text - 2;
            text[len++] = '\n';
        }
        if (fd >= 0) {
            /* A partial entry (RLIMIT_FSIZE, a full disk) would be a lie. */
            if (fdg_safe_write(fd, text, len, -1) == (ssize_t)len)
                fdg_count(FDG_C_ipc_recorded, 1);
            else
                unlinkat(dir, name, 0);
            fdg_raw_close(fd);
        }
        fdg_raw_close(dir);
    }
    errno = saved;
}

/* Did this call create the object? IPC_PRIVATE always creates one (the
 * kernel ignores IPC_CREAT for it). IPC_CREAT alone also opens an existing
 * one, so it is first tried with IPC_EXCL: same outcome for the caller, and
 * the same errno: the probe's EEXIST is not the errno of the open that then
 * succeeds (a success leaves errno as it was). */
#define CREATE_AND_RECORD(kind, next_call, key, flg)                                               \
    do {                                                                                           \
        if (!fdg_active()) return next_call(flg);                                                  \
        if ((key) == IPC_PRIVATE) {                                                                \
            int id = next_call(flg);                                                               \
            if (id >= 0) record(kind, id, key);                                                    \
            return id;                                                                             \
        }                                                                                          \
        if (!((flg)&IPC_CREAT)) return next_call(flg);                                             \
        bool created = ((flg)&IPC_EXCL);                                                           \
        int saved = errno;                                                                         \
        int id = next_call((flg) | IPC_EXCL);                                                      \
        if (id >= 0) {                                                                             \
            created = true;                                                                        \
        } else if (errno == EEXIST && !((flg)&IPC_EXCL)) {                                         \
            errno = saved;                                                                         \
            id = next_call(flg);                                                                   \
        }                                                                                          \
        if (id >= 0 && created) record(kind, id, key);                                             \
        return id;                                                                                 \
    } while (0)

EXPORT int shmget(key_t key, size_t size, int flg)
{
#define CALL(f) fdg_next.shmget(key, size, f)
    CREATE_AND_RECORD("shm", CALL, key, flg);
#undef CALL
}

EXPORT int semget(key_t key, int nsems, int flg)
{
#define CALL(f) fdg_next.semget(key, nsems, f)
    CREATE_AND_RECORD("sem", CALL, key, flg);
#undef CALL
}

EXPORT int msgget(key_t key, int flg)
{
#define CALL(f) fdg_next.msgget(key, f)
    CREATE_AND_RECORD("msg", CALL, key, flg);
#undef CALL
}
