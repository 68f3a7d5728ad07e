/* harm: small programs for the do-no-harm suite (tests/harm.bats).
 *
 *   harm listen [--ready FILE] [--close-stderr] [--hole] [--serve] [--log-errors]
 *               [--wait FILE]
 *       listen on 127.0.0.1 (port 0): the shim's first guarded action.
 *       --hole: a descriptor opened before and closed after the listen (a
 *       configuration file read at start) leaves a free number below the
 *       shim's spare.
 *       FILE gets "PORT PID". --close-stderr closes fd 2 afterwards, as a
 *       daemon does (its next connection then gets fd 2). --serve accepts
 *       forever (blocking), greets each client with "HELLO\n" and keeps it.
 *       --log-errors: each failed accept is logged to fd 2, whatever fd 2 is
 *       by then (the naive logger a shim must not be).
 *       --wait: exit(0) once FILE exists (a normal exit runs destructors).
 *   harm epoll [--ready FILE] [--wait FILE]
 *       registers a pipe in an epoll instance; FILE gets "PID".
 *   harm fork --ready FILE --wait FILE [--parent-listen] [--child-listen|--child-epoll]
 *       forks; FILE gets "PARENT CHILD" once the child is set up; both exit(0)
 *       once the wait file exists.
 *   harm ipc-private
 *       shmget/semget/msgget(IPC_PRIVATE, ..., 0600): no IPC_CREAT, which the
 *       kernel does not need for IPC_PRIVATE. Prints "KIND ID" for each, then
 *       removes them.
 *   harm broken-stderr CMD [ARGS]
 *       runs CMD with stderr a pipe whose reader is gone (SIGPIPE default);
 *       prints "exit N" or "signal N".
 *   harm full-stderr CMD [ARGS]
 *       runs CMD with stderr a full pipe that nobody reads; prints "exit N",
 *       "signal N", or "blocked" if CMD has not finished within 5 s (then
 *       kills it).
 *   harm dlfds LIB...
 *       dlopen(LIB, RTLD_NOW) for each, then prints the open descriptors.
 *   harm dlnear DIR
 *       loads DIR/p1.so ... near and at a lowered descriptor limit and
 *       reports where the shim's spare is (the O_PATH descriptor we did not
 *       open); see the lines it prints.
 *   harm dlabove DIR
 *       a spare left at the soft limit by lowering it: loads report what the
 *       loader says, and the spare comes back below the limit afterwards.
 *       Without the shim the limit is lowered to the same number (the
 *       lowest free one).
 *   harm rawclose DIR
 *       listens (the shim arms its spare), closes the spare's number with a
 *       raw close syscall (the shim cannot see it) and opens DIR O_PATH,
 *       which takes that number (without the shim: the same lowest free
 *       number); then, at a limit lowered to what is in use, a client
 *       connects and accept is called (relief lends the spare). Prints
 *       "accept ERRNO" and "dir open" or "dir closed" (is DIR's descriptor
 *       still DIR?).
 *   harm vfork-unshare
 *       a process that once had two threads registers a pipe's read end in
 *       an epoll instance (a dup keeps its description open), then vforks;
 *       the child calls close_range(CLOSE_RANGE_UNSHARE) and exits; the
 *       parent closes the read end and writes to the pipe. Prints
 *       "events N": what epoll_wait still reports for the closed number
 *       (1 unless something deleted the registration at the close).
 *       Without /proc the shim takes the table for shared in the child.
 *   harm heap
 *       prints what malloc has handed out before main runs (mallinfo2):
 *       what the constructors of the preloaded libraries allocated.
 * Exit status 2 on usage errors, 1 on unexpected failures. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <linux/close_range.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

#define SCAN_MAX 1024

static void die(const char *what)
{
    fprintf(stderr, "harm: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: harm listen|epoll|fork|ipc-private|broken-stderr|full-stderr|"
            "dlfds|dlnear|dlabove|rawclose|vfork-unshare|heap ... (see tests/helpers/harm.c)\n");
    exit(2);
}

static void put_file(const char *path, const char *text)
{
    if (!path) return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || !write_all(fd, text, strlen(text)) || close(fd) != 0 || rename(tmp, path) != 0)
        die("writing the ready file");
}

static void wait_for(const char *path)
{
    if (!path) return;
    while (access(path, F_OK) != 0)
        poll(NULL, 0, 10);
}

static int listen_local(void)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 64) != 0) die("listen");
    return s;
}

static int port_of(int s)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (getsockname(s, (struct sockaddr *)&a, &len) != 0) die("getsockname");
    return ntohs(a.sin_port);
}

static void register_pipe(void)
{
    int p[2], ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    if (ep < 0 || pipe2(p, O_CLOEXEC) != 0 || epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) != 0)
        die("epoll registration");
}

static int sc_listen(int argc, char **argv)
{
    const char *ready = NULL, *wait = NULL;
    bool close_stderr = false, serve = false, hole = false, log_errors = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--ready") && i + 1 < argc)
            ready = argv[++i];
        else if (!strcmp(argv[i], "--wait") && i + 1 < argc)
            wait = argv[++i];
        else if (!strcmp(argv[i], "--close-stderr"))
            close_stderr = true;
        else if (!strcmp(argv[i], "--serve"))
            serve = true;
        else if (!strcmp(argv[i], "--hole"))
            hole = true;
        else if (!strcmp(argv[i], "--log-errors"))
            log_errors = true;
        else
            usage();
    }
    int early = hole ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
    int s = listen_local();
    if (early >= 0) close(early);
    char line[64];
    snprintf(line, sizeof line, "%d %d\n", port_of(s), (int)getpid());
    if (close_stderr) close(2);
    put_file(ready, line);
    while (serve) {
        int c = accept(s, NULL, NULL);
        if (c >= 0)
            write_all(c, "HELLO\n", 6);
        else if (log_errors)
            dprintf(2, "harm: accept: %s\n", strerror(errno));
    }
    wait_for(wait);
    return 0;
}

static int sc_epoll(int argc, char **argv)
{
    const char *ready = NULL, *wait = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--ready") && i + 1 < argc)
            ready = argv[++i];
        else if (!strcmp(argv[i], "--wait") && i + 1 < argc)
            wait = argv[++i];
        else
            usage();
    }
    register_pipe();
    char line[32];
    snprintf(line, sizeof line, "%d\n", (int)getpid());
    put_file(ready, line);
    wait_for(wait);
    return 0;
}

static int sc_fork(int argc, char **argv)
{
    const char *ready = NULL, *wait = NULL;
    bool parent_listen = false, child_listen = false, child_epoll = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--ready") && i + 1 < argc)
            ready = argv[++i];
        else if (!strcmp(argv[i], "--wait") && i + 1 < argc)
            wait = argv[++i];
        else if (!strcmp(argv[i], "--parent-listen"))
            parent_listen = true;
        else if (!strcmp(argv[i], "--child-listen"))
            child_listen = true;
        else if (!strcmp(argv[i], "--child-epoll"))
            child_epoll = true;
        else
            usage();
    }
    if (!ready || !wait) usage();
    if (parent_listen) listen_local();
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a test that stops the parent */
        if (child_listen) listen_local();
        if (child_epoll) register_pipe();
        char line[64];
        snprintf(line, sizeof line, "%d %d\n", (int)parent, (int)getpid());
        put_file(ready, line);
        wait_for(wait);
        exit(0);
    }
    wait_for(wait);
    int st;
    waitpid(child, &st, 0);
    return 0;
}

static int sc_ipc_private(void)
{
    int shm = shmget(IPC_PRIVATE, 4096, 0600);
    int sem = semget(IPC_PRIVATE, 1, 0600);
    int msg = msgget(IPC_PRIVATE, 0600);
    if (shm < 0 || sem < 0 || msg < 0) die("IPC_PRIVATE creation");
    printf("shm %d\nsem %d\nmsg %d\n", shm, sem, msg);
    fflush(stdout);
    shmctl(shm, IPC_RMID, NULL);
    semctl(sem, 0, IPC_RMID);
    msgctl(msg, IPC_RMID, NULL);
    return 0;
}

static void report_status(int st)
{
    if (WIFSIGNALED(st))
        printf("signal %d\n", WTERMSIG(st));
    else
        printf("exit %d\n", WEXITSTATUS(st));
}

static int sc_broken_stderr(char **argv)
{
    if (!argv[0]) usage();
    int p[2];
    if (pipe(p) != 0) die("pipe");
    close(p[0]); /* the reader is gone */
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGPIPE, SIG_DFL);
        dup2(p[1], 2);
        close(p[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    int st;
    if (waitpid(pid, &st, 0) != pid) die("waitpid");
    report_status(st);
    return 0;
}

static int sc_full_stderr(char **argv)
{
    if (!argv[0]) usage();
    int p[2];
    if (pipe(p) != 0) die("pipe");
    /* Fill it: the reader stays open (no SIGPIPE) and never reads. */
    int fl = fcntl(p[1], F_GETFL);
    fcntl(p[1], F_SETFL, fl | O_NONBLOCK);
    char chunk[4096];
    memset(chunk, 'f', sizeof chunk);
    while (write(p[1], chunk, sizeof chunk) > 0)
        ;
    while (write(p[1], chunk, 1) > 0)
        ;
    fcntl(p[1], F_SETFL, fl);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(p[1], 2);
        close(p[1]);
        close(p[0]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    for (int i = 0; i < 500; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            report_status(st);
            return 0;
        }
        poll(NULL, 0, 10);
    }
    printf("blocked\n");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return 0;
}

/* Open descriptors, found without opening anything (the table may be full). */
static void print_fds(const char *label)
{
    printf("%s:", label);
    for (int fd = 0; fd < SCAN_MAX; fd++)
        if (fcntl(fd, F_GETFD) >= 0) printf(" %d", fd);
    printf("\n");
}

/* The shim's spare: the only O_PATH descriptor here, we open none. */
static int spare_fd(void)
{
    for (int fd = 0; fd < SCAN_MAX; fd++) {
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0 && (fl & O_PATH)) return fd;
    }
    return -1;
}

static int sc_dlfds(char **argv)
{
    print_fds("before");
    for (int i = 0; argv[i]; i++)
        if (!dlopen(argv[i], RTLD_NOW)) printf("dlopen %s: %s\n", argv[i], dlerror());
    print_fds("after");
    return 0;
}

static int lowest_free(void)
{
    int fd = open("/", O_PATH | O_CLOEXEC);
    if (fd >= 0) close(fd);
    return fd;
}

static void set_soft(rlim_t soft)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) die("getrlimit");
    rl.rlim_cur = soft;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) die("setrlimit");
}

/* dlopen(DIR/NAME) from this call site; "ok" or the loader's message. */
static void load(const char *dir, const char *name, const char *label)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    void *h = dlopen(path, RTLD_NOW);
    printf("%s: %s\n", label, h ? "ok" : dlerror());
}

static void show_spare(const char *label)
{
    printf("%s: spare=%d lowest-free=%d\n", label, spare_fd(), lowest_free());
}

/* Opens /dev/null until the lowest free number is `upto`. */
static void fill_to(int upto)
{
    while (lowest_free() >= 0 && lowest_free() < upto)
        if (open("/dev/null", O_RDONLY | O_CLOEXEC) < 0) die("open /dev/null");
}

#define LIMIT 64

static int sc_dlnear(char **argv)
{
    if (!argv[0]) usage();
    const char *dir = argv[0];
    set_soft(LIMIT);
    load(dir, "p1.so", "far from the limit");
    show_spare("far from the limit");
    fill_to(LIMIT - 8);
    load(dir, "p2.so", "near the limit");
    show_spare("near the limit");
    close(10); /* a hole below the spare */
    load(dir, "p3.so", "after a hole below");
    show_spare("after a hole below");
    set_soft((rlim_t)lowest_free()); /* fdguard squeeze: nothing free */
    printf("squeezed: lowest-free=%d (%s)\n", lowest_free(), strerror(errno));
    load(dir, "p4.so", "at the limit");
    return 0;
}

static int sc_dlabove(char **argv)
{
    if (!argv[0]) usage();
    const char *dir = argv[0];
    set_soft(LIMIT);
    fill_to(LIMIT - 8);
    load(dir, "p1.so", "near the limit");
    int spare = spare_fd();
    show_spare("near the limit");
    /* Every number below the spare is in use: a limit at the spare leaves
     * it where the kernel will not hand out its number. Without the shim
     * (no spare) the same limit: the lowest free number. */
    set_soft((rlim_t)(spare >= 0 ? spare : lowest_free()));
    load(dir, "p2.so", "limit lowered to the spare");
    show_spare("limit lowered to the spare");
    set_soft(LIMIT);
    load(dir, "p3.so", "limit back");
    show_spare("limit back");
    return 0;
}

static int sc_rawclose(char **argv)
{
    if (!argv[0]) usage();
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 64) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) != 0)
        die("listen");
    int spare = spare_fd();
    if (spare >= 0 && syscall(SYS_close, spare) != 0) die("raw close");
    int want = spare >= 0 ? spare : lowest_free();
    int dir = open(argv[0], O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir != want) die("the directory did not take the spare's number");
    struct stat st_dir;
    if (stat(argv[0], &st_dir) != 0) die("stat");
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
    set_soft((rlim_t)lowest_free()); /* nothing free */
    int r = accept(l, NULL, NULL);
    printf("accept %s\n", r >= 0 ? "OK" : strerrorname_np(errno));
    struct stat st;
    bool same = fstat(dir, &st) == 0 && st.st_dev == st_dir.st_dev && st.st_ino == st_dir.st_ino;
    printf("dir %s\n", same ? "open" : "closed");
    return 0;
}

static void *nothing(void *arg)
{
    return arg;
}

static int sc_vfork_unshare(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, nothing, NULL) != 0 || pthread_join(t, NULL) != 0) die("pthread");
    int p[2], ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    if (ep < 0 || pipe2(p, O_CLOEXEC) != 0 || dup(p[0]) < 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) != 0)
        die("epoll registration");
    pid_t pid = vfork();
    if (pid == 0) {
        close_range(1000, 1000, CLOSE_RANGE_UNSHARE);
        _exit(0);
    }
    if (pid < 0 || waitpid(pid, NULL, 0) != pid) die("vfork");
    close(p[0]);
    if (write(p[1], "x", 1) != 1) die("write");
    printf("events %d\n", epoll_wait(ep, &ev, 1, 0));
    return 0;
}

static int sc_heap(void)
{
    /* Taken before this program allocates anything (stdout's buffer). */
    struct mallinfo2 mi = mallinfo2();
    printf("heap before main: arena=%zu in-use=%zu mmapped=%zu\n", mi.arena, mi.uordblks,
           mi.hblkhd);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) usage();
    const char *sc = argv[1];
    if (!strcmp(sc, "listen")) return sc_listen(argc - 2, argv + 2);
    if (!strcmp(sc, "epoll")) return sc_epoll(argc - 2, argv + 2);
    if (!strcmp(sc, "fork")) return sc_fork(argc - 2, argv + 2);
    if (!strcmp(sc, "ipc-private")) return sc_ipc_private();
    if (!strcmp(sc, "broken-stderr")) return sc_broken_stderr(argv + 2);
    if (!strcmp(sc, "full-stderr")) return sc_full_stderr(argv + 2);
    if (!strcmp(sc, "dlfds")) return sc_dlfds(argv + 2);
    if (!strcmp(sc, "dlnear")) return sc_dlnear(argv + 2);
    if (!strcmp(sc, "dlabove")) return sc_dlabove(argv + 2);
    if (!strcmp(sc, "rawclose")) return sc_rawclose(argv + 2);
    if (!strcmp(sc, "vfork-unshare")) return sc_vfork_unshare();
    if (!strcmp(sc, "heap")) return sc_heap();
    usage();
}
