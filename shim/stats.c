/* Counters of every event the shim handles.
 *
 * They live in static memory, or, with FDGUARD_STATS=PATH, in a shared mapping
 * of that file so `fdguard stat` can read them while the process runs: no
 * signal, no socket, no thread. Layout: a 4 KiB text header (magic, pid,
 * program, counter names one per line, NUL padded), then one little-endian
 * uint64 per counter in the header's order. */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEADER_SIZE 4096
#define MAGIC "fdguard-stats 1\n"

static _Atomic uint64_t static_counters[FDG_C_COUNT];
_Atomic uint64_t *fdg_counters = static_counters;

static const char *const counter_names[] = {
#define FDG_NAME(name, desc) #name,
    FDG_COUNTERS(FDG_NAME)
#undef FDG_NAME
};

/* FDGUARD_STATS with %p replaced by our pid. */
static bool expand_path(char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = fdg_cfg.stats_path; *p; p++) {
        if (p[0] == '%' && p[1] == 'p') {
            n += fdg_formatf(out + n, cap - n, "%d", (int)getpid());
            p++;
        } else if (n + 1 < cap) {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    return n + 1 < cap;
}

/* Another live process (a parent that exec'd us, with a path without %p)
 * already publishes there: leave its file alone. */
static bool owned_by_live_process(int fd)
{
    char head[64] = "";
    if (pread(fd, head, sizeof head - 1, 0) <= 0 || strncmp(head, MAGIC, strlen(MAGIC)) != 0)
        return false;
    long pid = strtol(head + strlen(MAGIC) + strlen("pid "), NULL, 10);
    return pid > 0 && pid != getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

static size_t header_text(char *hdr)
{
    size_t n = fdg_formatf(hdr, HEADER_SIZE, MAGIC "pid %d\nprog %s\ncounters %d\n", (int)getpid(),
                           fdg_prog_name(), (int)FDG_C_COUNT);
    for (int i = 0; i < FDG_C_COUNT; i++)
        n += fdg_formatf(hdr + n, HEADER_SIZE - n, "%s\n", counter_names[i]);
    return n;
}

void fdg_stats_open(void)
{
    char path[FDG_PATH_MAX];
    if (!fdg_cfg.stats_path[0] || !expand_path(path, sizeof path)) return;
    /* No symlink following: a stats path in a shared directory must not let
     * another user redirect our writes. */
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    struct stat st;
    const char *why = NULL;
    if (fd < 0)
        why = strerror(errno);
    else if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid())
        why = "not a regular file of ours";
    else if (owned_by_live_process(fd))
        why = "in use by another live process (put %p in the path)";
    void *map = MAP_FAILED;
    size_t size = HEADER_SIZE + FDG_C_COUNT * sizeof(uint64_t);
    if (!why && ftruncate(fd, 0) == 0 && ftruncate(fd, (off_t)size) == 0)
        map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (!why && map == MAP_FAILED) why = strerror(errno);
    if (fd >= 0) fdg_raw_close(fd);
    if (why) {
        fdg_logf(FDG_LVL_WARN, FDG_EV_STATS,
                 "FDGUARD_STATS: cannot use %s: %s; counters stay private", path, why);
        return;
    }
    header_text(map);
    _Atomic uint64_t *shared = (_Atomic uint64_t *)((char *)map + HEADER_SIZE);
    for (int i = 0; i < FDG_C_COUNT; i++)
        atomic_store(&shared[i], atomic_load(&static_counters[i]));
    fdg_counters = shared;
}
