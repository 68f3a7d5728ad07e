/* System V IPC creators, for `fdguard ipc`.
 *
 * A process killed with SIGKILL leaves its shared memory, semaphores and
 * message queues behind. For shared memory the kernel keeps the creator's
 * pid (shm_cpid); for semaphore sets and message queues it keeps nothing
 * that says who created them. So the shim records, for every object created
 * through shmget, semget or msgget, the creator's pid and start time (to
 * tell a dead creator from a reused pid) in a registry directory:
 *   /tmp/fdguard-ipc-UID/{shm,sem,msg}.ID
 * created 0700, never through a symbolic link; entries are 0600 files. */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* Field 22 of /proc/self/stat: start time in clock ticks since boot. */
static unsigned long long start_time(void)
{
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    fdg_raw_close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may contain anything */
    for (int field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

/* The registry directory, if it is ours: a directory (not a link), owned by
 * us, not writable by anyone else. */
static int open_registry(void)
{
    char dir[64];
    fdg_formatf(dir, sizeof dir, "/tmp/fdguard-ipc-%u", (unsigned)geteuid());
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 0077))) {
        fdg_logf(FDG_LVL_WARN, FDG_EV_IPC, "%s is not a private directory of ours; not recording",
                 dir);
        fdg_raw_close(fd);
        return -1;
    }
    return fd;
}

static void record(const char *kind, int id, key_t key)
{
    int saved = errno;
    int dir = open_registry();
    if (dir >= 0) {
        char name[32], text[160];
        fdg_formatf(name, sizeof name, "%s.%d", kind, id);
        /* An entry left by an earlier object with the same id is stale. */
        unlinkat(dir, name, 0);
        int fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        size_t len = fdg_formatf(text, sizeof text, "pid %d\nstart %llu\nkey %d\nprog %s\n",
                                 (int)getpid(), start_time(), (int)key, fdg_prog_name());
        if (fd >= 0 && write(fd, text, len) == (ssize_t)len) fdg_count(FDG_C_ipc_recorded, 1);
        if (fd >= 0) fdg_raw_close(fd);
        fdg_raw_close(dir);
    }
    errno = saved;
}

/* Did this call create the object? IPC_CREAT alone also opens an existing
 * one, so it is first tried with IPC_EXCL: same outcome for the caller. */
#define CREATE_AND_RECORD(kind, next_call, key, flg)                                               \
    do {                                                                                           \
        if (!fdg_active() || !((flg)&IPC_CREAT)) return next_call(flg);                            \
        bool created = (key) == IPC_PRIVATE || ((flg)&IPC_EXCL);                                   \
        int id = next_call((flg) | IPC_EXCL);                                                      \
        if (id >= 0)                                                                               \
            created = true;                                                                        \
        else if (errno == EEXIST && !((flg)&IPC_EXCL))                                             \
            id = next_call(flg);                                                                   \
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
