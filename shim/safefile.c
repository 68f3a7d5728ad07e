/* Opening the shim's own files (FDGUARD_LOG, FDGUARD_STATS, the IPC registry)
 * without trusting any other user.
 *
 * The shim often runs as root, and its paths often lie in shared directories
 * (/tmp, /run/app). open(2) follows symbolic links in every component and
 * O_NOFOLLOW covers only the last one, so another user who can write to a
 * directory on the way could point us at any file. We walk the path from "/"
 * one component at a time (openat, O_PATH|O_NOFOLLOW|O_DIRECTORY), holding the
 * directory we are in; a symbolic link on the way is followed only if it
 * belongs to root or to us (/var/run -> /run works, a link planted by another
 * user does not). The last component is never a link, is opened without
 * blocking (a FIFO would wait for a reader), and must be a regular file of
 * ours with one link (a hard link is how another user would point us at a
 * file of ours elsewhere; the kernel's protected_hardlinks does not apply to
 * root). Everything here is a plain system call: no allocation, no stdio. */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LINKS 40 /* as the kernel's MAXSYMLINKS */

static int open_root(void)
{
    return open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
}

static int fail(int dir, const char **why, const char *reason)
{
    if (dir >= 0) fdg_raw_close(dir);
    *why = reason;
    return -1;
}

/* Walks every component of path but the last; returns the directory that
 * holds the last one (an O_PATH descriptor) and copies its name to leaf. */
static int walk(const char *path, char leaf[FDG_PATH_MAX], const char **why)
{
    char rest[FDG_PATH_MAX], target[FDG_PATH_MAX];
    size_t len = strlen(path);
    if (path[0] != '/' || len >= sizeof rest) return fail(-1, why, "not an absolute path");
    memcpy(rest, path, len + 1);
    int dir = open_root();
    if (dir < 0) return fail(-1, why, fdg_errno_text(errno));
    char *p = rest;
    uid_t euid = geteuid();
    for (int links = 0;;) {
        while (*p == '/')
            p++;
        char *end = strchrnul(p, '/');
        char *next = end;
        while (*next == '/')
            next++;
        if (!*next) {
            if (end == p) return fail(dir, why, "names a directory");
            memcpy(leaf, p, (size_t)(end - p));
            leaf[end - p] = '\0';
            return dir;
        }
        *end = '\0';
        int sub = openat(dir, p, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
        if (sub >= 0) {
            fdg_raw_close(dir);
            dir = sub;
            p = next;
            continue;
        }
        int err = errno;
        struct stat st;
        if ((err != ENOTDIR && err != ELOOP) || fstatat(dir, p, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISLNK(st.st_mode))
            return fail(dir, why, fdg_errno_text(err));
        if (st.st_uid != 0 && st.st_uid != euid)
            return fail(dir, why, "a directory on the way is a symbolic link of another user");
        if (++links > MAX_LINKS) return fail(dir, why, "too many symbolic links");
        ssize_t n = readlinkat(dir, p, target, sizeof target);
        size_t tail = strlen(next);
        if (n <= 0 || (size_t)n + 1 + tail >= sizeof rest)
            return fail(dir, why, "a symbolic link on the way cannot be resolved");
        /* rest = target "/" next; next lies inside rest, hence memmove. */
        memmove(rest + n + 1, next, tail + 1);
        memcpy(rest, target, (size_t)n);
        rest[n] = '/';
        p = rest;
        if (rest[0] == '/') {
            fdg_raw_close(dir);
            dir = open_root();
            if (dir < 0) return fail(-1, why, fdg_errno_text(errno));
        }
    }
}

static const char *not_ours(const struct stat *st)
{
    if (S_ISLNK(st->st_mode)) return "a symbolic link";
    if (!S_ISREG(st->st_mode)) return "not a regular file";
    if (st->st_uid != geteuid()) return "owned by another user";
    if (st->st_nlink != 1) return "a file with other hard links";
    return NULL;
}

int fdg_safe_open(const char *path, int flags, const char **why)
{
    char leaf[FDG_PATH_MAX];
    int dir = walk(path, leaf, why);
    if (dir < 0) return -1;
    /* Looked at before the open too: opening a device can have effects of
     * its own (a tape rewinds, a terminal becomes ours). */
    struct stat st;
    if (fstatat(dir, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if ((*why = not_ours(&st))) return fail(dir, why, *why);
    } else if (errno != ENOENT || !(flags & O_CREAT)) {
        return fail(dir, why, fdg_errno_text(errno));
    }
    int fd = openat(dir, leaf, flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0600);
    int err = errno;
    fdg_raw_close(dir);
    if (fd < 0) return fail(-1, why, fdg_errno_text(err));
    if (fstat(fd, &st) != 0 || (*why = not_ours(&st))) {
        if (!*why) *why = fdg_errno_text(errno);
        return fail(fd, why, *why);
    }
    *why = NULL;
    return fd;
}

int fdg_safe_private_dir(const char *path, const char **why)
{
    char leaf[FDG_PATH_MAX];
    int dir = walk(path, leaf, why);
    if (dir < 0) return -1;
    if (mkdirat(dir, leaf, 0700) != 0 && errno != EEXIST) {
        int err = errno;
        return fail(dir, why, fdg_errno_text(err));
    }
    int fd = openat(dir, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int err = errno;
    fdg_raw_close(dir);
    if (fd < 0)
        return fail(-1, why,
                    err == ENOTDIR || err == ELOOP ? "not a directory" : fdg_errno_text(err));
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 0077))
        return fail(fd, why, "not a private directory of ours (owner, or group/other access)");
    *why = NULL;
    return fd;
}
