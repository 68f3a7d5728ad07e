/* acceptloop N: what accept costs a server in system calls, once it is
 * running. Listens on 127.0.0.1 (port 0), then N times: a client connects,
 * the server accepts it, both are closed. The loop is between two getppid()
 * calls, markers for a syscall trace (tests/accept.bats counts the calls
 * between them). Prints "accepted N"; exit 1 on an unexpected failure. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "common.h"

static void die(const char *what)
{
    fprintf(stderr, "acceptloop: %s: %s\n", what, strerror(errno));
    exit(1);
}

int main(int argc, char **argv)
{
    long n;
    if (argc != 2 || !parse_long(argv[1], 1, 1000000, &n)) {
        fprintf(stderr, "usage: acceptloop N\n");
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(l, 16) != 0 ||
        getsockname(l, (struct sockaddr *)&addr, &len) != 0)
        die("listen");
    getppid(); /* begin */
    for (long i = 0; i < n; i++) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&addr, sizeof addr) != 0) die("connect");
        int a = accept(l, NULL, NULL);
        if (a < 0) die("accept");
        close(a);
        close(c);
    }
    getppid(); /* end */
    printf("accepted %ld\n", n);
    return 0;
}
