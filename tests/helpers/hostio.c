/* hostio: what a host does with its own descriptors and System V IPC, next to
 * the lines and files the shim writes (tests/harm.bats). Each scenario is one
 * program; the suite runs it with and without the shim and compares.
 *
 *   hostio aof FILE [pipe]
 *       a daemon that closed its stderr: close(2), then its append-only data
 *       file FILE lands on fd 2; it writes "SET k v", listens (the shim's
 *       first guarded action: kept lines are written then), writes
 *       "SET k2 v2". With `pipe`, stdin and stderr are closed and its
 *       self-pipe takes 0 (read end) and 2 (write end); it writes "wake"
 *       before and after listening, and FILE gets what the pipe held.
 *   hostio listen
 *       listens on 127.0.0.1 (port 0) and exits 0: one guarded action.
 *   hostio socket-stderr unix|tcp|journal|socketpair CMD [ARGS]
 *       runs CMD with stderr one end of a connection: the server side of an
 *       accepted unix or TCP connection (as inetd and systemd's Accept=yes
 *       give a service), the client side of a unix stream connection (as
 *       systemd connects a service's stderr to journald), or a socketpair
 *       (as a libuv supervisor gives its children); prints "exit N" and what
 *       the peer received (escaped).
 *   hostio tty CMD [ARGS]
 *       runs CMD with stderr a terminal (a pty); prints "exit N" and what
 *       the terminal showed (escaped).
 *   hostio tty-stopped CMD [ARGS]
 *       runs CMD with stderr a terminal whose output is stopped (XOFF,
 *       tcflow TCOOFF); "exit N", "signal N" or "blocked" (5 s, then killed).
 *   hostio tty-background CMD [ARGS]
 *       runs CMD as a background job of a terminal with TOSTOP set, stderr
 *       that terminal; "exit N", "signal N" or "stopped N" (then killed).
 *   hostio ipc-errno
 *       shmget, semget, msgget with IPC_CREAT of a key that exists already:
 *       each succeeds; prints the errno it left (set to 1234 before).
 * Exit status 2 on usage errors, 1 on unexpected failures. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "common.h"

static void die(const char *what)
{
    fprintf(stderr, "hostio: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: hostio aof|listen|socket-stderr|tty|tty-stopped|tty-background|ipc-errno "
            "... (see tests/helpers/hostio.c)\n");
    exit(2);
}

static int listen_local(void)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0) die("listen");
    return s;
}

static int sc_aof(int argc, char **argv)
{
    if (argc < 1 || argc > 2 || (argc == 2 && strcmp(argv[1], "pipe"))) usage();
    if (argc == 2) {
        /* stdin and stderr closed: the self-pipe takes 0 (read) and 2 (write). */
        close(0);
        close(2);
        int p[2];
        if (pipe2(p, O_NONBLOCK) != 0) die("pipe");
        if (p[0] != 0 || p[1] != 2) {
            errno = EBADF;
            die("the self-pipe did not land on 0 and 2");
        }
        write_all(2, "wake\n", 5);
        listen_local();
        write_all(2, "wake\n", 5);
        char buf[4096];
        ssize_t n = read(0, buf, sizeof buf);
        int out = open(argv[0], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0 || (n > 0 && !write_all(out, buf, (size_t)n))) die("writing FILE");
        return 0;
    }
    close(2);
    int data = open(argv[0], O_WRONLY | O_APPEND | O_CREAT, 0600);
    if (data != 2) {
        errno = EBADF;
        die("the data file did not land on fd 2");
    }
    write_all(data, "SET k v\n", 8);
    listen_local();
    write_all(data, "SET k2 v2\n", 10);
    return 0;
}

static void report_status(int st)
{
    if (WIFSIGNALED(st))
        printf("signal %d\n", WTERMSIG(st));
    else if (WIFSTOPPED(st))
        printf("stopped %d\n", WSTOPSIG(st));
    else
        printf("exit %d\n", WEXITSTATUS(st));
}

static pid_t spawn_with_stderr(int fd, char **argv)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (dup2(fd, 2) != 2) _exit(126);
        if (fd != 2) close(fd);
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Waits up to 5 s; then prints "blocked" and kills it. */
static void wait_or_kill(pid_t pid, int flags)
{
    for (int i = 0; i < 500; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG | flags) == pid) {
            report_status(st);
            if (WIFSTOPPED(st)) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
            }
            return;
        }
        poll(NULL, 0, 10);
    }
    printf("blocked\n");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void print_escaped(const char *label, const char *buf, size_t n)
{
    printf("%s: \"", label);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"')
            putchar(c);
        else
            printf("\\x%02x", c);
    }
    printf("\"\n");
}

static int sc_socket_stderr(int argc, char **argv)
{
    if (argc < 2) usage();
    int mine, theirs;
    if (!strcmp(argv[0], "socketpair")) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
        mine = sv[0];
        theirs = sv[1];
    } else if (!strcmp(argv[0], "unix") || !strcmp(argv[0], "tcp") || !strcmp(argv[0], "journal")) {
        bool unix_ = strcmp(argv[0], "tcp") != 0;
        struct sockaddr_storage ss = {0};
        socklen_t len;
        int l = socket(unix_ ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (unix_) {
            struct sockaddr_un *un = (struct sockaddr_un *)&ss;
            un->sun_family = AF_UNIX;
            /* abstract: nothing to clean up */
            snprintf(un->sun_path + 1, sizeof un->sun_path - 1, "hostio-%d", (int)getpid());
            len =
                (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(un->sun_path + 1));
        } else {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss;
            in->sin_family = AF_INET;
            in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            len = sizeof *in;
        }
        if (l < 0 || bind(l, (struct sockaddr *)&ss, len) != 0 || listen(l, 1) != 0) die("listen");
        len = sizeof ss;
        if (getsockname(l, (struct sockaddr *)&ss, &len) != 0) die("getsockname");
        mine = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (mine < 0 || connect(mine, (struct sockaddr *)&ss, len) != 0) die("connect");
        theirs = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        if (theirs < 0) die("accept");
        close(l);
        if (!strcmp(argv[0], "journal")) { /* the service holds the connecting end */
            int t = mine;
            mine = theirs;
            theirs = t;
        }
    } else {
        usage();
    }
    pid_t pid = spawn_with_stderr(theirs, argv + 1);
    close(theirs);
    int st;
    if (waitpid(pid, &st, 0) != pid) die("waitpid");
    report_status(st);
    char buf[4096];
    size_t have = 0;
    ssize_t n;
    while (have < sizeof buf && (n = read(mine, buf + have, sizeof buf - have)) > 0)
        have += (size_t)n;
    print_escaped("peer read", buf, have);
    return 0;
}

static int sc_tty(char **argv)
{
    if (!argv[0]) usage();
    int master, slave;
    if (openpty(&master, &slave, NULL, NULL, NULL) != 0) die("openpty");
    pid_t pid = spawn_with_stderr(slave, argv);
    close(slave);
    int st;
    if (waitpid(pid, &st, 0) != pid) die("waitpid");
    report_status(st);
    char buf[4096];
    size_t have = 0;
    struct pollfd p = {.fd = master, .events = POLLIN};
    while (have < sizeof buf && poll(&p, 1, 100) == 1 && (p.revents & POLLIN)) {
        ssize_t n = read(master, buf + have, sizeof buf - have);
        if (n <= 0) break;
        have += (size_t)n;
    }
    print_escaped("terminal showed", buf, have);
    return 0;
}

static int sc_tty_stopped(char **argv)
{
    if (!argv[0]) usage();
    int master, slave;
    if (openpty(&master, &slave, NULL, NULL, NULL) != 0) die("openpty");
    if (tcflow(slave, TCOOFF) != 0) die("tcflow");
    pid_t pid = spawn_with_stderr(slave, argv);
    wait_or_kill(pid, 0);
    return 0;
}

static int sc_tty_background(char **argv)
{
    if (!argv[0]) usage();
    int master, slave;
    if (openpty(&master, &slave, NULL, NULL, NULL) != 0) die("openpty");
    fflush(stdout);
    /* A session of its own whose controlling terminal is the pty; the job
     * runs in another process group of that session: a background job. */
    pid_t leader = fork();
    if (leader < 0) die("fork");
    if (leader == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) != 0) die("controlling terminal");
        struct termios t;
        if (tcgetattr(slave, &t) != 0) die("tcgetattr");
        t.c_lflag |= TOSTOP;
        if (tcsetattr(slave, TCSANOW, &t) != 0) die("tcsetattr");
        pid_t job = fork();
        if (job < 0) die("fork");
        if (job == 0) {
            setpgid(0, 0);
            if (dup2(slave, 2) != 2) _exit(126);
            execvp(argv[0], argv);
            _exit(127);
        }
        setpgid(job, job);
        wait_or_kill(job, WUNTRACED);
        fflush(stdout);
        _exit(0);
    }
    int st;
    if (waitpid(leader, &st, 0) != leader) die("waitpid");
    return 0;
}

/* IPC_CREAT of keys that exist: the call opens them and succeeds. */
static int sc_ipc_errno(void)
{
    key_t key = (key_t)(0x46440000 | (getpid() & 0xffff));
    int shm = shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0600);
    int sem = semget(key, 1, IPC_CREAT | IPC_EXCL | 0600);
    int msg = msgget(key, IPC_CREAT | IPC_EXCL | 0600);
    if (shm < 0 || sem < 0 || msg < 0) die("creating the objects");
    errno = 1234;
    int r = shmget(key, 4096, IPC_CREAT | 0600);
    printf("shmget: %s, errno %d\n", r == shm ? "same id" : "another id", errno);
    errno = 1234;
    r = semget(key, 1, IPC_CREAT | 0600);
    printf("semget: %s, errno %d\n", r == sem ? "same id" : "another id", errno);
    errno = 1234;
    r = msgget(key, IPC_CREAT | 0600);
    printf("msgget: %s, errno %d\n", r == msg ? "same id" : "another id", errno);
    shmctl(shm, IPC_RMID, NULL);
    semctl(sem, 0, IPC_RMID);
    msgctl(msg, IPC_RMID, NULL);
    printf("ids %d %d %d\n", shm, sem, msg);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) usage();
    const char *sc = argv[1];
    if (!strcmp(sc, "aof")) return sc_aof(argc - 2, argv + 2);
    if (!strcmp(sc, "listen")) {
        listen_local();
        return 0;
    }
    if (!strcmp(sc, "socket-stderr")) return sc_socket_stderr(argc - 2, argv + 2);
    if (!strcmp(sc, "tty")) return sc_tty(argv + 2);
    if (!strcmp(sc, "tty-stopped")) return sc_tty_stopped(argv + 2);
    if (!strcmp(sc, "tty-background")) return sc_tty_background(argv + 2);
    if (!strcmp(sc, "ipc-errno")) return sc_ipc_errno();
    usage();
}
