/* statsread: reads an fdguard stats file for `fdguard stat` and `fdguard doctor`,
 * without ever blocking and without being redirected by whoever controls the path.
 *
 *   statsread [--map LINK] [--dev MAJ:MIN --ino N] PATH
 *
 * A stats file usually lives in a directory the guarded program (another user)
 * can write. Checking the path first and reading it afterwards can be raced: a
 * FIFO swapped in between makes open(2) wait for a writer forever, a symbolic
 * link sends the reader elsewhere. So the file is looked at (lstat: refused
 * unless regular, so FIFOs and devices are never even opened), then opened with
 * O_NONBLOCK (a FIFO swapped in meanwhile does not block the open) and
 * O_NOFOLLOW (nor does a link), and the opened descriptor must be the regular
 * file that was looked at (fstat: same device and inode).
 *
 * --dev/--ino (hexadecimal MAJ:MIN and decimal inode, as /proc/PID/maps prints
 * them) name the file a process has mapped: the file opened must be that one,
 * whatever now sits at PATH. --map is /proc/PID/map_files/START-END, which opens
 * exactly the mapped inode (even renamed or deleted) but only for root
 * (CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE); it is tried first, and PATH after
 * it if it cannot be opened. It is a magic link, so it is followed: it can only
 * lead to the mapped file, never to something else.
 *
 * Output, when the file starts with "fdguard-stats ":
 *   file MAJ:MIN INODE SIZE UID map|path      (MAJ:MIN in hexadecimal)
 *   words W0 W1 ...                           (each complete little-endian uint64
 *                                              from offset 4096, in decimal)
 *   the header: bytes 0..4095, up to the first NUL
 * Exit status: 0 read; 1 usage or read error; 2 cannot open or look at it;
 * 3 not a regular file (or a symbolic link); 4 not the file named by
 * --dev/--ino, or replaced while being opened; 5 not an fdguard stats file.
 * Messages (one line, on stderr) name the path. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define HEADER_SIZE 4096
#define MAX_WORDS 1024 /* far more counters than the shim has */
#define MAGIC "fdguard-stats "

enum { OK, E_USAGE, E_OPEN, E_TYPE, E_OTHER_FILE, E_NOT_STATS };

struct want {
    bool set;
    unsigned major, minor;
    unsigned long long ino;
};

/* Off while --map is tried: PATH is the fallback, and its failure is the one
 * reported. */
static bool loud = true;

static int complain(int status, const char *path, const char *why)
{
    if (loud) fprintf(stderr, "%s: %s\n", path, why);
    return status;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

static bool is_wanted(const struct want *w, const struct stat *st)
{
    return !w->set ||
           (major(st->st_dev) == w->major && minor(st->st_dev) == w->minor && st->st_ino == w->ino);
}

/* Opens PATH as described above; *fd and *st on success. A magic link (--map)
 * is followed, with the same checks. */
static int open_checked(const char *path, bool magic, const struct want *w, int *fd,
                        struct stat *st)
{
    struct stat before;
    if ((magic ? stat(path, &before) : lstat(path, &before)) != 0)
        return complain(E_OPEN, path, strerror(errno));
    if (!S_ISREG(before.st_mode))
        return complain(E_TYPE, path,
                        S_ISLNK(before.st_mode) ? "a symbolic link" : "not a regular file");
    if (!is_wanted(w, &before))
        return complain(E_OTHER_FILE, path, "not the file the process has mapped");
    int flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | (magic ? 0 : O_NOFOLLOW);
    *fd = open(path, flags);
    if (*fd < 0) return complain(errno == ELOOP ? E_TYPE : E_OPEN, path, strerror(errno));
    if (fstat(*fd, st) != 0 || !S_ISREG(st->st_mode) || !same_file(&before, st)) {
        close(*fd);
        return complain(E_OTHER_FILE, path, "replaced while it was being opened");
    }
    return OK;
}

static bool parse_dev(const char *s, struct want *w)
{
    char *end;
    errno = 0;
    unsigned long maj = strtoul(s, &end, 16);
    if (errno || end == s || *end != ':' || maj > 0xfffff) return false;
    const char *m = end + 1;
    unsigned long min = strtoul(m, &end, 16);
    if (errno || end == m || *end || min > 0xfffff) return false;
    w->major = (unsigned)maj;
    w->minor = (unsigned)min;
    return true;
}

static bool parse_ino(const char *s, struct want *w)
{
    char *end;
    errno = 0;
    w->ino = strtoull(s, &end, 10);
    return !errno && end != s && !*end && s[0] != '-';
}

static int usage(void)
{
    fprintf(stderr, "usage: statsread [--map LINK] [--dev MAJ:MIN --ino N] PATH\n");
    return E_USAGE;
}

/* Reads up to cap bytes from offset 0; *got is what was read. */
static bool read_all(int fd, unsigned char *buf, size_t cap, size_t *got)
{
    *got = 0;
    while (*got < cap) {
        ssize_t n = pread(fd, buf + *got, cap - *got, (off_t)*got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return false;
        if (n == 0) break;
        *got += (size_t)n;
    }
    return true;
}

int main(int argc, char **argv)
{
    const char *map = NULL, *path = NULL;
    struct want w = {0};
    bool have_dev = false, have_ino = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--map") == 0 && v)
            map = argv[++i];
        else if (strcmp(a, "--dev") == 0 && v && parse_dev(v, &w))
            have_dev = true, i++;
        else if (strcmp(a, "--ino") == 0 && v && parse_ino(v, &w))
            have_ino = true, i++;
        else if (a[0] != '-' && !path && i == argc - 1)
            path = a;
        else
            return usage();
    }
    if (!path || have_dev != have_ino) return usage();
    w.set = have_dev;

    int fd = -1, status = E_OPEN;
    struct stat st;
    const char *via = "path";
    if (map) {
        loud = false;
        status = open_checked(map, true, &w, &fd, &st);
        loud = true;
        if (status == OK) via = "map";
    }
    if (status != OK) status = open_checked(path, false, &w, &fd, &st);
    if (status != OK) return status;

    static unsigned char buf[HEADER_SIZE + 8 * MAX_WORDS];
    size_t got;
    bool ok = read_all(fd, buf, sizeof buf, &got);
    close(fd);
    if (!ok) return complain(E_USAGE, path, strerror(errno));
    if (got < strlen(MAGIC) || memcmp(buf, MAGIC, strlen(MAGIC)) != 0)
        return complain(E_NOT_STATS, path, "not an fdguard stats file");

    printf("file %x:%x %llu %lld %u %s\nwords", major(st.st_dev), minor(st.st_dev),
           (unsigned long long)st.st_ino, (long long)st.st_size, (unsigned)st.st_uid, via);
    for (size_t off = HEADER_SIZE; off + 8 <= got; off += 8) {
        uint64_t v = 0;
        for (int b = 7; b >= 0; b--)
            v = v << 8 | buf[off + (size_t)b];
        printf(" %" PRIu64, v);
    }
    putchar('\n');
    size_t hlen = got < HEADER_SIZE ? got : HEADER_SIZE;
    const unsigned char *nul = memchr(buf, '\0', hlen);
    fwrite(buf, 1, nul ? (size_t)(nul - buf) : hlen, stdout);
    return fflush(stdout) == 0 && !ferror(stdout) ? OK : E_USAGE;
}
