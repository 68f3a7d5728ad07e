/* tool_stats: a process that publishes a format 2 stats file the way the shim
 * does, at a path the test controls, for the hostile-file cases of
 * fdguard stat (a path another user swaps for a FIFO or a link). Everything
 * else is tested against the shim's own files.
 *
 *   tool_stats --ready FILE --stats PATH [--set NAME=VALUE]...
 *
 * PATH (%p is the pid) gets the format 2 layout: the text header
 * "fdguard-stats 2", "pid N", "start TICKS" (field 22 of /proc/self/stat),
 * "prog NAME" (program_invocation_short_name, bytes outside 0x20..0x7e and the
 * backslash as \xHH), "counters 3" and the names accept_emfile,
 * epoll_registrations, log_suppressed; NUL padding to 4096; the three
 * counters and "ended" (0) as little-endian uint64, mapped MAP_SHARED. --set
 * gives a counter a value.
 *
 * FILE gets "pid P\n" once the file is in place; then it waits until a
 * signal ends it. Exit status 2 on usage errors, 1 on a setup error. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

#define HEADER 4096
#define NCOUNTERS 3

static const char *const names[NCOUNTERS] = {"accept_emfile", "epoll_registrations",
                                             "log_suppressed"};
static uint64_t values[NCOUNTERS];
static unsigned char *map;

static void usage(void)
{
    fprintf(stderr, "usage: tool_stats --ready FILE --stats PATH [--set NAME=VALUE]... [--fork]\n");
    exit(2);
}

static void fail(const char *what)
{
    fprintf(stderr, "tool_stats: %s: %s\n", what, strerror(errno));
    exit(1);
}

static unsigned long long start_ticks(void)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (f == NULL) fail("/proc/self/stat");
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    for (int field = 2; p != NULL && field < 22; field++)
        p = strchr(p + 1, ' ');
    return p != NULL ? strtoull(p + 1, NULL, 10) : 0;
}

static void put_u64(unsigned char *at, uint64_t v)
{
    for (int b = 0; b < 8; b++)
        at[b] = (unsigned char)(v >> (8 * b));
}

/* Creates PATH (%p: our pid) and maps it, as the shim does. */
static void publish(const char *pattern)
{
    char path[4096], hdr[HEADER];
    size_t n = 0;
    for (const char *p = pattern; *p != '\0' && n + 16 < sizeof path; p++) {
        if (p[0] == '%' && p[1] == 'p')
            n += (size_t)snprintf(path + n, sizeof path - n, "%d", (int)getpid()), p++;
        else
            path[n++] = *p;
    }
    path[n] = '\0';
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) fail(path);
    size_t size = HEADER + 8 * (NCOUNTERS + 1);
    if (ftruncate(fd, (off_t)size) < 0) fail("ftruncate");
    map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) fail("mmap");
    close(fd);

    memset(hdr, 0, sizeof hdr);
    n = (size_t)snprintf(hdr, sizeof hdr, "fdguard-stats 2\npid %d\nstart %llu\nprog ",
                         (int)getpid(), start_ticks());
    extern char *program_invocation_short_name;
    for (const unsigned char *p = (const unsigned char *)program_invocation_short_name; *p; p++)
        n += (size_t)snprintf(hdr + n, sizeof hdr - n,
                              *p < 0x20 || *p > 0x7e || *p == '\\' ? "\\x%02x" : "%c", *p);
    n += (size_t)snprintf(hdr + n, sizeof hdr - n, "\ncounters %d\n", NCOUNTERS);
    for (int i = 0; i < NCOUNTERS; i++)
        n += (size_t)snprintf(hdr + n, sizeof hdr - n, "%s\n", names[i]);
    memcpy(map, hdr, HEADER);
    for (int i = 0; i < NCOUNTERS; i++)
        put_u64(map + HEADER + 8 * i, values[i]);
    put_u64(map + HEADER + 8 * NCOUNTERS, 0);
}

static void set(const char *spec)
{
    const char *eq = strchr(spec, '=');
    long v;
    if (eq == NULL || !parse_long(eq + 1, 0, 0x7fffffff, &v)) usage();
    for (int i = 0; i < NCOUNTERS; i++) {
        if (strlen(names[i]) == (size_t)(eq - spec) && strncmp(spec, names[i], eq - spec) == 0) {
            values[i] = (uint64_t)v;
            return;
        }
    }
    usage();
}

int main(int argc, char **argv)
{
    const char *ready = NULL, *stats = NULL;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (v == NULL)
            usage();
        else if (strcmp(a, "--ready") == 0)
            ready = v;
        else if (strcmp(a, "--stats") == 0)
            stats = v;
        else if (strcmp(a, "--set") == 0)
            set(v);
        else
            usage();
    }
    if (ready == NULL || stats == NULL) usage();

    publish(stats);
    char text[64];
    size_t len = (size_t)snprintf(text, sizeof text, "pid %d\n", (int)getpid());
    int rfd = open(ready, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (rfd < 0 || !write_all(rfd, text, len) || close(rfd) < 0) fail("write ready file");
    for (;;)
        pause();
}
