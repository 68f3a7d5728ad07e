/* A program whose .preinit_array calls a wrapped function: on glibc the
 * preinit functions run before libc has set environ, so a shim that
 * initialises there cannot read FDGUARD and must not settle on defaults.
 * main then listens and prints how many descriptors are open (the spare
 * shows as one more). */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static int preinit_errno;

static void early(int argc, char **argv, char **envp)
{
    (void)argc, (void)argv, (void)envp;
    errno = 1234;
    close(-1); /* the shim's first call: EBADF */
    preinit_errno = errno;
}

__attribute__((section(".preinit_array"), used)) static void (*const early_entry)(int, char **,
                                                                                  char **) = early;

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d) return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ., .., and the directory's own */
}

int main(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 1) != 0) {
        perror("listen");
        return 1;
    }
    printf("preinit close errno %d, open descriptors after listen %d\n", preinit_errno, open_fds());
    return 0;
}
