/* Counters of every event the shim handles.
 *
 * They live in static memory, or, with FDGUARD_STATS=PATH, in a shared mapping
 * of that file so `fdguard stat` can read them while the process runs: no
 * signal, no socket, no thread. The file is created when the process engages
 * (its first guarded action), never at load: a shell pipeline under the shim
 * leaves no files. Format 2 (README, "Logs and counters"):
 *   fdguard-stats 2\n pid P\n start T\n prog NAME\n counters N\n NAME\n x N
 *   NUL padding to 4096, then N little-endian uint64 counters and one uint64
 *   "ended": 0 while the process runs, the CLOCK_REALTIME second of a normal
 *   exit. pid and start (field 22 of /proc/PID/stat) identify the process
 *   even after its pid is reused; a killed process leaves ended at 0.
 * Each process publishes its own counters: a fork child unmaps its parent's
 * file (so /proc/CHILD/maps does not name it), starts from zero, and creates
 * its own file when it engages itself.
 *
 * A file truncated from outside while mapped (`: > FILE`, logrotate's
 * copytruncate) makes the next counter store raise SIGBUS, and nothing in
 * the process can prevent that: seals exist only for memfd files, and
 * catching SIGBUS would mean taking the host's handler. README says so. */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HEADER_SIZE 4096
#define MAGIC "fdguard-stats "
#define VERSION "2"
#define PROG_MAX 512 /* escaped program name in the header */

static _Atomic uint64_t static_counters[FDG_C_COUNT];
_Atomic uint64_t *fdg_counters = static_counters;

/* The mapping this process publishes, and the pid that mapped it. */
static void *map;
static pid_t map_pid;

#define MAP_SIZE (HEADER_SIZE + (FDG_C_COUNT + 1) * sizeof(uint64_t))

static const char *const counter_names[] = {
#define FDG_NAME(name, desc) #name,
    FDG_COUNTERS(FDG_NAME)
#undef FDG_NAME
};

unsigned long long fdg_start_time(pid_t pid)
{
    char path[32], buf[1024];
    fdg_formatf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
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

/* FDGUARD_STATS with %p replaced by our pid; false if it does not fit. */
static bool expand_path(char *out, size_t cap)
{
    size_t n = 0;
    char pid[16];
    size_t pid_len = fdg_formatf(pid, sizeof pid, "%d", (int)getpid());
    for (const char *p = fdg_cfg.stats_path; *p; p++) {
        if (p[0] == '%' && p[1] == 'p') {
            if (n + pid_len >= cap) return false;
            memcpy(out + n, pid, pid_len);
            n += pid_len;
            p++;
        } else {
            if (n + 1 >= cap) return false;
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    return true;
}

/* Another live process (a parent that exec'd us, or a sibling, with a path
 * without %p) publishes there: leave its file alone. */
static bool published_by_live_process(const char *head)
{
    const char *line = strchr(head, '\n');
    if (!line || strncmp(line + 1, "pid ", 4) != 0) return false;
    long pid = strtol(line + 5, NULL, 10);
    if (pid <= 0 || pid == getpid() || (kill((pid_t)pid, 0) != 0 && errno != EPERM)) return false;
    const char *start = strstr(head, "\nstart ");
    if (!start) return true; /* format 1: no start time to compare */
    return strtoull(start + 7, NULL, 10) == fdg_start_time((pid_t)pid);
}

/* Only an empty file or a stats file (ours: checked by the caller) may be
 * rewritten; anything else is someone's data. */
static const char *reusable(int fd)
{
    char head[256];
    struct stat st;
    if (fstat(fd, &st) != 0) return fdg_errno_text(errno);
    if (st.st_size == 0) return NULL;
    ssize_t n = pread(fd, head, sizeof head - 1, 0);
    if (n < (ssize_t)strlen(MAGIC)) return "an existing file that is not an fdguard stats file";
    head[n] = '\0';
    if (strncmp(head, MAGIC, strlen(MAGIC)) != 0)
        return "an existing file that is not an fdguard stats file";
    if (published_by_live_process(head))
        return "in use by another live process; put %p in the path";
    return NULL;
}

/* The whole file: the header, NUL padding, the counters so far, ended 0. */
static void write_contents(char *buf)
{
    char prog[PROG_MAX];
    memset(buf, 0, MAP_SIZE);
    fdg_formatf(prog, sizeof prog, "%s", fdg_prog_name());
    size_t n =
        fdg_formatf(buf, HEADER_SIZE, MAGIC VERSION "\npid %d\nstart %llu\nprog %-s\ncounters %d\n",
                    (int)getpid(), fdg_start_time(getpid()), prog, (int)FDG_C_COUNT);
    for (int i = 0; i < FDG_C_COUNT; i++)
        n += fdg_formatf(buf + n, HEADER_SIZE - n, "%s\n", counter_names[i]);
    for (int i = 0; i < FDG_C_COUNT; i++) {
        uint64_t v = atomic_load(&static_counters[i]);
        memcpy(buf + HEADER_SIZE + i * sizeof v, &v, sizeof v);
    }
}

/* A store into a shared mapping of a page the file system has no room for
 * (a sparse file on a full tmpfs, a quota) raises SIGBUS in the host, and
 * so does a store past the end of the file. So the file gets its final size
 * by writing every byte of it (fdg_safe_write: at RLIMIT_FSIZE the write
 * fails instead of raising SIGXFSZ) before it is mapped: a full file system
 * refuses it here. The exclusive flock, held as long as the mapping holds the
 * file, keeps a second process given the same path from truncating it under
 * us (its non-blocking flock fails). NULL, or why not. */
static const char *prepare(int fd)
{
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK)
        return "in use by another live process; put %p in the path";
    const char *why = reusable(fd);
    if (why) return why;
    if (fchmod(fd, 0600) != 0 || ftruncate(fd, 0) != 0) return fdg_errno_text(errno);
    char buf[MAP_SIZE];
    write_contents(buf);
    errno = 0;
    if (fdg_safe_write(fd, buf, MAP_SIZE, 0) == (ssize_t)MAP_SIZE) return NULL;
    why = fdg_errno_text(errno ? errno : ENOSPC);
    ftruncate(fd, 0); /* no partial file left behind */
    return why;
}

static void refuse(const char *path, const char *why)
{
    fdg_logf(FDG_LVL_WARN, FDG_EV_STATS,
             "FDGUARD_STATS: cannot use the file (%-s); counters stay private: %s", why, path);
}

void fdg_stats_open(void)
{
    if (!fdg_cfg.stats_path[0] || map) return;
    char path[FDG_PATH_MAX];
    if (!expand_path(path, sizeof path)) {
        fdg_logf(FDG_LVL_WARN, FDG_EV_STATS,
                 "FDGUARD_STATS: the path is longer than %d bytes once %%p is replaced by %d; "
                 "counters stay private: %s",
                 FDG_PATH_MAX - 1, (int)getpid(), fdg_cfg.stats_path);
        return;
    }
    const char *why;
    int fd = fdg_safe_open(path, O_RDWR | O_CREAT, &why);
    if (fd < 0) {
        refuse(path, why);
        return;
    }
    void *m = MAP_FAILED;
    if (!(why = prepare(fd))) {
        m = mmap(NULL, MAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) why = fdg_errno_text(errno);
    }
    fdg_raw_close(fd);
    if (why) {
        refuse(path, why);
        return;
    }
    /* Counts made since write_contents read them. */
    _Atomic uint64_t *shared = (_Atomic uint64_t *)((char *)m + HEADER_SIZE);
    for (int i = 0; i < FDG_C_COUNT; i++)
        atomic_store(&shared[i], atomic_load(&static_counters[i]));
    map = m;
    map_pid = getpid();
    fdg_counters = shared;
}

void fdg_stats_after_fork(void)
{
    /* Private counters first, so that nothing writes to the mapping while
     * it goes away. */
    fdg_counters = static_counters;
    for (int i = 0; i < FDG_C_COUNT; i++)
        atomic_store_explicit(&static_counters[i], 0, memory_order_relaxed);
    if (map) munmap(map, MAP_SIZE);
    map = NULL;
}

/* A normal exit (exit(), return from main) marks the file ended; _exit and
 * signals leave 0, and readers tell a dead process from the pid/start pair. */
__attribute__((destructor)) static void stats_ended(void)
{
    if (!map || map_pid != getpid()) return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    _Atomic uint64_t *shared = (_Atomic uint64_t *)((char *)map + HEADER_SIZE);
    atomic_store(&shared[FDG_C_COUNT], (uint64_t)now.tv_sec);
}
