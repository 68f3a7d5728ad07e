/* blockaccept SCENARIO: accept at descriptor exhaustion, in the shapes where
 * a relief could block, starve or lie. Listeners are on 127.0.0.1, clients
 * are sockets made before the table is filled (connect needs no new
 * descriptor), then RLIMIT_NOFILE is lowered to the lowest free number.
 * Without the shim every accept fails at once with EMFILE and the pending
 * clients stay in the backlog ("open").
 *
 * One blocking listener, the main thread in accept (each step waits until
 * the thread in accept sleeps there, in the real call or in the shim's wait,
 * or until the call has returned: without the shim it fails at once; then
 * it happens at its time, counted from the call):
 *   rcvtimeo       SO_RCVTIMEO of 600 ms; a client connects at 450 ms
 *   eintr          a client at 100 ms; once it is shed, SIGALRM (a handler
 *                  without SA_RESTART) to the thread at 300 ms
 *   eintr-restart  as eintr with SA_RESTART; once the wait has resumed, at
 *                  600 ms a descriptor is freed and a second client comes
 *   cancel         an acceptor thread in accept; a client at 100 ms; the
 *                  thread is cancelled at 300 ms; then the listener is made
 *                  non-blocking and a second client comes
 * Several listeners and threads (an acceptor thread loops in accept and
 * counts what it accepts; "inside" means it sleeps in a system call, or,
 * without the shim, has failed at least once):
 *   two-listeners  blocking L1 and L2, a thread each; 5 descriptors are
 *                  freed, then 3 clients connect to L2
 *   rcvtimeo-other a thread inside accept(L1); the main thread accepts on
 *                  L2, which has SO_RCVTIMEO 500 ms and no client
 *   mixed          a thread inside accept(L1, blocking); 3 clients connect to
 *                  non-blocking L2, the main thread accepts until -1; then 3
 *                  clients connect to L1
 *   listeners      3 blocking listeners, a thread each; a client to each;
 *                  then 3 descriptors are freed and a client to each again
 *   room           4 threads on one blocking listener; 5 rounds of: free one
 *                  descriptor, one client (the app keeps it); then a client
 *                  without a free descriptor
 *   fork, fork-idle
 *                  a thread inside accept(L1) (fork-idle: no such thread);
 *                  the process forks, the child connects a client to
 *                  non-blocking L2 and accepts, up to 10 times, until the
 *                  client sees EOF
 *   fork-held      as fork, while the thread holds the spare's slot inside
 *                  relief's own accept (held there by tests/hooks/accepthook
 *                  through ACCEPTHOOK=hold:RFD:WFD, which the scenario sets)
 *   lent-listen    a thread accepts on non-blocking L1 with a client pending
 *                  and is held inside relief's own accept (as fork-held,
 *                  the spare's slot lent and free); meanwhile the main
 *                  thread listens on another socket (the shim's first need
 *                  of a spare, which it has not got). Reports how many
 *                  numbers below the limit are free after that listen (free_after) (the
 *                  lent slot: 1), then the thread's result and its client's
 *                  outcome. Without the hook nothing holds the thread.
 *   lent-dlopen    the same with a dlopen of libanl.so.1 (a cache miss, the
 *                  table near its limit; not libm, which sanitizer runtimes
 *                  have loaded already) instead of the listen: "load=ok"
 *                  or "load=failed" (without the shim the table is full).
 *
 * Prints key=value lines and exits 0; a call that does not return within
 * 3 s is reported as result=none. */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static const char *errname(int e)
{
    switch (e) {
    case 0:
        return "OK";
    case EAGAIN:
        return "EAGAIN";
    case EINTR:
        return "EINTR";
    case EMFILE:
        return "EMFILE";
    case ENFILE:
        return "ENFILE";
    case ECANCELED:
        return "CANCELED";
    default:
        return strerror(e);
    }
}

static void sleep_ms(int ms)
{
    struct timespec d = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&d, &d) != 0 && errno == EINTR)
        ;
}

/* ---- listeners and clients ---------------------------------------------- */

struct listener {
    int fd;
    struct sockaddr_in addr;
};

static struct listener listen_on(bool nonblock)
{
    struct listener l = {.addr = {.sin_family = AF_INET}};
    l.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof l.addr;
    l.fd = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (l.fd < 0 || bind(l.fd, (struct sockaddr *)&l.addr, sizeof l.addr) != 0 ||
        listen(l.fd, 64) != 0 || getsockname(l.fd, (struct sockaddr *)&l.addr, &len) != 0)
        die("listen");
    return l;
}

static int client_socket(void)
{
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0) die("socket");
    return c;
}

static void connect_to(int c, const struct listener *l)
{
    if (connect(c, (const struct sockaddr *)&l->addr, sizeof l->addr) != 0) perror("connect");
}

/* What the client saw within ms: EOF (shed), data, or nothing ("open":
 * accepted and kept without a word, or still in the backlog). */
static const char *client_outcome(int c, int ms)
{
    struct pollfd p = {c, POLLIN, 0};
    if (poll(&p, 1, ms) <= 0) return "open";
    char ch;
    ssize_t n = recv(c, &ch, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET) ? "eof" : "data";
}

/* Descriptors made before the table is filled, freed later on cue. */
static int placeholders[16];
static int n_placeholders;

static void make_placeholders(int n)
{
    for (n_placeholders = 0; n_placeholders < n; n_placeholders++) {
        placeholders[n_placeholders] = open("/dev/null", O_RDONLY);
        if (placeholders[n_placeholders] < 0) die("open");
    }
}

static void free_placeholder(void)
{
    if (n_placeholders > 0) close(placeholders[--n_placeholders]);
}

static void exhaust(void)
{
    if (!limit_to_open()) die("setrlimit");
}

/* ---- acceptor threads ---------------------------------------------------- */

/* Threads are made before the table is filled, with their /proc stat file
 * open (nothing can be opened afterwards), and wait at a gate; the gate
 * opens once the table is full. */
struct acceptor {
    int fd;
    pthread_t thread;
    int stat_fd;
    _Atomic bool go;
    _Atomic pid_t tid;
    _Atomic int attempts, accepted, failed;
};

static void *acceptor_loop(void *arg)
{
    struct acceptor *a = arg;
    atomic_store(&a->tid, (pid_t)syscall(SYS_gettid));
    while (!atomic_load(&a->go))
        sleep_ms(1);
    for (;;) {
        atomic_fetch_add(&a->attempts, 1);
        int fd = accept(a->fd, NULL, NULL);
        if (fd >= 0)
            atomic_fetch_add(&a->accepted, 1); /* kept: its descriptor stays used */
        else
            atomic_fetch_add(&a->failed, 1);
    }
    return NULL;
}

/* Call before exhaust(). */
static void make_acceptor(struct acceptor *a, int fd)
{
    a->fd = fd;
    if (pthread_create(&a->thread, NULL, acceptor_loop, a) != 0) die("pthread_create");
    while (atomic_load(&a->tid) == 0)
        sleep_ms(1);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)atomic_load(&a->tid));
    a->stat_fd = open(path, O_RDONLY);
    if (a->stat_fd < 0) die("open stat");
}

static char thread_state(const struct acceptor *a)
{
    char buf[512];
    ssize_t n = pread(a->stat_fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return '?';
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' ? p[2] : '?';
}

/* The thread sleeps inside accept (the shim's wait included), or, without
 * the shim, the call has failed at least once. */
static bool inside_accept(struct acceptor *a)
{
    return atomic_load(&a->failed) > 0 || (atomic_load(&a->attempts) > 0 && thread_state(a) == 'S');
}

/* Lets each acceptor in turn into accept, and waits until it is inside:
 * the first one is the first to need relief. One that never gets there
 * would make the scenario another one: exit 3. */
static void start_and_wait_inside(struct acceptor *as, int n)
{
    for (int i = 0; i < n; i++) {
        atomic_store(&as[i].go, true);
        double end = now_ms() + 3000;
        while (!inside_accept(&as[i]) && now_ms() < end)
            sleep_ms(5);
        if (!inside_accept(&as[i])) {
            printf("error=acceptor-%d-not-inside\n", i);
            exit(3);
        }
    }
}

/* Waits until cond() or ms pass. */
static bool wait_for(bool (*cond)(void *), void *arg, int ms)
{
    double end = now_ms() + ms;
    while (!cond(arg)) {
        if (now_ms() >= end) return false;
        sleep_ms(5);
    }
    return true;
}

struct count_goal {
    _Atomic int *counter;
    int goal;
};

static bool count_reached(void *arg)
{
    struct count_goal *g = arg;
    return atomic_load(g->counter) >= g->goal;
}

/* ---- a call that may not return ------------------------------------------ */

static void *watchdog(void *arg)
{
    (void)arg;
    sleep_ms(3000);
    printf("result=none after_ms=3000\n");
    fflush(stdout);
    _exit(0);
}

static void start_watchdog(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, watchdog, NULL) != 0) die("pthread_create");
    pthread_detach(t);
}

/* ---- one blocking listener, the main thread in accept --------------------- */

static struct listener l1;
static int c1, c2;

/* The thread in accept: its syscall file (opened before the table is
 * filled), when its call started, whether it has returned. */
static int waiter_syscall = -1;
static pthread_t waiter;
static _Atomic pid_t waiter_tid;
static _Atomic double call_t0;
static _Atomic bool call_returned;

/* Until the thread sleeps in accept (the shim's wait included) or its call
 * has returned. */
static void wait_inside_or_returned(void)
{
    while (!atomic_load(&call_returned) && !waiting_for_client(waiter_syscall))
        sleep_ms(1);
}

/* Until MS after the call started. */
static void sleep_until(double ms)
{
    double left = atomic_load(&call_t0) + ms - now_ms();
    if (left > 0) sleep_ms((int)left + 1);
}

/* c had an answer (data or EOF), without reading it. */
static bool answered(int c)
{
    struct pollfd p = {c, POLLIN, 0};
    return poll(&p, 1, 0) > 0;
}

static _Atomic int alarms;

static void on_alarm(int sig)
{
    (void)sig;
    atomic_fetch_add(&alarms, 1);
}

/* The other side of the call: a client at 100 ms (rcvtimeo: at 450, so
 * that a wait restarted after its shed would end at 1050, not at 600);
 * for eintr*, the signal at 300 ms once that client was shed and the wait
 * goes on; for eintr-restart, room and a second client at 600 ms once the
 * wait has resumed. */
static void *driver(void *arg)
{
    const char *sc = arg;
    while (atomic_load(&call_t0) == 0)
        sleep_ms(1);
    wait_inside_or_returned();
    sleep_until(strcmp(sc, "rcvtimeo") ? 100 : 450);
    connect_to(c1, &l1);
    if (strncmp(sc, "eintr", 5) != 0) return NULL;
    while (!atomic_load(&call_returned) && !(answered(c1) && waiting_for_client(waiter_syscall)))
        sleep_ms(1);
    sleep_until(300);
    pthread_kill(waiter, SIGALRM);
    if (strcmp(sc, "eintr-restart") != 0) return NULL;
    while (!atomic_load(&call_returned) &&
           !(atomic_load(&alarms) == 1 && waiting_for_client(waiter_syscall)))
        sleep_ms(1);
    sleep_until(600);
    free_placeholder();
    connect_to(c2, &l1);
    return NULL;
}

/* The cancel scenario's acceptor: waits at the gate (call_t0), then accepts. */
static void *accept_once(void *arg)
{
    int *err = arg;
    atomic_store(&waiter_tid, (pid_t)syscall(SYS_gettid));
    while (atomic_load(&call_t0) == 0)
        sleep_ms(1);
    int fd = accept(l1.fd, NULL, NULL);
    *err = fd >= 0 ? 0 : errno;
    atomic_store(&call_returned, true);
    return NULL;
}

static void *sleeper(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

static int single(const char *sc)
{
    bool cancel = !strcmp(sc, "cancel");
    l1 = listen_on(false);
    if (!strcmp(sc, "rcvtimeo")) {
        struct timeval tv = {0, 600 * 1000};
        setsockopt(l1.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    } else if (!strcmp(sc, "eintr") || !strcmp(sc, "eintr-restart")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm;
        /* SA_RESTART: the real call would be restarted and keep waiting. */
        sa.sa_flags = !strcmp(sc, "eintr-restart") ? SA_RESTART : 0;
        sigaction(SIGALRM, &sa, NULL);
    } else if (cancel) {
        /* glibc's pthread_cancel loads libgcc_s.so.1 (the unwinder) the first
         * time, which needs a descriptor: at the limit it aborts, with or
         * without the shim. A program that cancels threads at its limit has
         * it loaded already; so do we, by cancelling a thread beforehand. */
        pthread_t warm;
        if (pthread_create(&warm, NULL, sleeper, NULL) != 0) die("pthread_create");
        pthread_cancel(warm);
        pthread_join(warm, NULL);
    }
    c1 = client_socket();
    c2 = client_socket();
    make_placeholders(1);
    int err = 0;
    if (cancel) {
        if (pthread_create(&waiter, NULL, accept_once, &err) != 0) die("pthread_create");
        while (atomic_load(&waiter_tid) == 0)
            sleep_ms(1);
    } else {
        waiter = pthread_self();
        atomic_store(&waiter_tid, (pid_t)syscall(SYS_gettid));
    }
    waiter_syscall = open_task_syscall(atomic_load(&waiter_tid));
    if (waiter_syscall < 0) die("open syscall");
    exhaust();
    pthread_t helper;
    if (pthread_create(&helper, NULL, driver, (void *)sc) != 0) die("pthread_create");
    start_watchdog();
    double t0 = now_ms();
    atomic_store(&call_t0, t0);
    if (cancel) {
        wait_inside_or_returned();
        sleep_until(300);
        pthread_cancel(waiter);
        void *ret;
        pthread_join(waiter, &ret);
        if (ret == PTHREAD_CANCELED) err = ECANCELED;
    } else {
        int fd = accept(l1.fd, NULL, NULL);
        err = fd >= 0 ? 0 : errno;
        atomic_store(&call_returned, true);
    }
    double after = now_ms() - t0;
    pthread_join(helper, NULL);
    printf("result=%s after_ms=%.0f client=%s", errname(err), after, client_outcome(c1, 1000));
    if (!strncmp(sc, "eintr", 5)) printf(" alarms=%d", atomic_load(&alarms));
    printf("\n");
    if (cancel) {
        /* Nothing was held by the cancelled thread: a second client is shed
         * by a new (non-blocking) acceptor. c1 stays open: nothing is freed. */
        fcntl(l1.fd, F_SETFL, O_NONBLOCK);
        connect_to(c2, &l1);
        int fd = accept(l1.fd, NULL, NULL);
        printf("second=%s client=%s\n", fd >= 0 ? "accepted" : errname(errno),
               client_outcome(c2, 1000));
    }
    return 0;
}

/* ---- several listeners and threads ---------------------------------------- */

static int two_listeners(void)
{
    struct listener a = listen_on(false), b = listen_on(false);
    int c[3];
    for (int i = 0; i < 3; i++)
        c[i] = client_socket();
    make_placeholders(5);
    static struct acceptor acc[2];
    make_acceptor(&acc[0], a.fd);
    make_acceptor(&acc[1], b.fd);
    exhaust();
    start_and_wait_inside(acc, 2);
    double t0 = now_ms();
    for (int i = 0; i < 5; i++)
        free_placeholder();
    for (int i = 0; i < 3; i++)
        connect_to(c[i], &b);
    struct count_goal g = {&acc[1].accepted, 3};
    wait_for(count_reached, &g, 3000);
    printf("accepted2=%d after_ms=%.0f\n", atomic_load(&acc[1].accepted), now_ms() - t0);
    return 0;
}

static int rcvtimeo_other(void)
{
    struct listener a = listen_on(false), b = listen_on(false);
    struct timeval tv = {0, 500 * 1000};
    setsockopt(b.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static struct acceptor acc[1];
    make_acceptor(&acc[0], a.fd);
    exhaust();
    start_and_wait_inside(acc, 1);
    start_watchdog();
    double t0 = now_ms();
    int fd = accept(b.fd, NULL, NULL);
    printf("result=%s after_ms=%.0f\n", fd >= 0 ? "OK" : errname(errno), now_ms() - t0);
    return 0;
}

static int mixed(void)
{
    struct listener a = listen_on(false), b = listen_on(true);
    int ca[3], cb[3];
    for (int i = 0; i < 3; i++) {
        ca[i] = client_socket();
        cb[i] = client_socket();
    }
    static struct acceptor acc[1];
    make_acceptor(&acc[0], a.fd);
    exhaust();
    start_and_wait_inside(acc, 1);
    for (int i = 0; i < 3; i++)
        connect_to(cb[i], &b);
    int fd, calls = 0;
    do
        fd = accept(b.fd, NULL, NULL);
    while (fd >= 0 && ++calls < 10);
    int err = errno;
    int eof = 0;
    for (int i = 0; i < 3; i++)
        eof += !strcmp(client_outcome(cb[i], i ? 100 : 1000), "eof");
    printf("nonblocking: result=%s shed=%d/3\n", fd >= 0 ? "OK" : errname(err), eof);
    for (int i = 0; i < 3; i++)
        connect_to(ca[i], &a);
    eof = 0;
    for (int i = 0; i < 3; i++)
        eof += !strcmp(client_outcome(ca[i], i ? 100 : 1000), "eof");
    printf("blocking: shed=%d/3 accepted=%d\n", eof, atomic_load(&acc[0].accepted));
    return 0;
}

static int listeners(void)
{
    enum { N = 3 };
    struct listener l[N];
    int first[N], second[N];
    for (int i = 0; i < N; i++) {
        l[i] = listen_on(false);
        first[i] = client_socket();
        second[i] = client_socket();
    }
    /* Each acceptor takes the clients pending on its listener (without the
     * shim the first one is still there), then goes back into accept and,
     * with room left, sleeps there holding a reserved slot: 3 per listener. */
    make_placeholders(3 * N);
    static struct acceptor acc[N];
    for (int i = 0; i < N; i++)
        make_acceptor(&acc[i], l[i].fd);
    exhaust();
    start_and_wait_inside(acc, N);
    for (int i = 0; i < N; i++)
        connect_to(first[i], &l[i]);
    int shed = 0;
    for (int i = 0; i < N; i++)
        shed += !strcmp(client_outcome(first[i], i ? 100 : 1000), "eof");
    int accepted = 0;
    for (int i = 0; i < N; i++)
        accepted += atomic_load(&acc[i].accepted);
    printf("full: shed=%d/%d accepted=%d\n", shed, N, accepted);
    for (int i = 0; i < 3 * N; i++)
        free_placeholder();
    for (int i = 0; i < N; i++)
        connect_to(second[i], &l[i]);
    int served = 0;
    for (int i = 0; i < N; i++) {
        struct count_goal g = {&acc[i].accepted, 1};
        wait_for(count_reached, &g, 2000);
        served += atomic_load(&acc[i].accepted) > 0;
    }
    printf("room: listeners_served=%d/%d\n", served, N);
    return 0;
}

static int room(void)
{
    enum { THREADS = 4, ROUNDS = 5 };
    struct listener l = listen_on(false);
    int c[ROUNDS + 1];
    for (int i = 0; i <= ROUNDS; i++)
        c[i] = client_socket();
    make_placeholders(ROUNDS);
    static struct acceptor acc[THREADS];
    for (int i = 0; i < THREADS; i++)
        make_acceptor(&acc[i], l.fd);
    exhaust();
    start_and_wait_inside(acc, THREADS);
    int served = 0, shed = 0;
    for (int r = 0; r < ROUNDS; r++) {
        free_placeholder();
        connect_to(c[r], &l);
        /* Served: some thread accepted it (and keeps it). */
        double end = now_ms() + 2000;
        int total;
        const char *o = "open";
        do {
            total = 0;
            for (int i = 0; i < THREADS; i++)
                total += atomic_load(&acc[i].accepted);
            if (total > r) break;
            o = client_outcome(c[r], 5);
        } while (strcmp(o, "eof") && now_ms() < end);
        if (total > r)
            served++;
        else if (!strcmp(o, "eof"))
            shed++;
    }
    connect_to(c[ROUNDS], &l);
    printf("rounds=%d served=%d shed=%d; then, full: client=%s\n", ROUNDS, served, shed,
           client_outcome(c[ROUNDS], 1000));
    return 0;
}

/* ---- fork ----------------------------------------------------------------- */

static int hold_pipe[2], held_pipe[2];

static int forking(const char *sc)
{
    struct listener a = listen_on(false), b = listen_on(true);
    int cb = client_socket(), ca = client_socket();
    bool thread = strcmp(sc, "fork-idle") != 0, held = !strcmp(sc, "fork-held");
    if (held) {
        /* The hook (loaded after the shim) stops relief's own accept: it
         * writes one byte to held_pipe, then waits for one on hold_pipe. */
        if (pipe(hold_pipe) != 0 || pipe(held_pipe) != 0) die("pipe");
        char spec[64];
        snprintf(spec, sizeof spec, "hold:%d:%d", hold_pipe[0], held_pipe[1]);
        setenv("ACCEPTHOOK", spec, 1);
    }
    static struct acceptor acc[1];
    if (thread) make_acceptor(&acc[0], a.fd);
    exhaust();
    if (thread) start_and_wait_inside(acc, 1);
    if (held) {
        connect_to(ca, &a);
        struct pollfd p = {held_pipe[0], POLLIN, 0};
        if (poll(&p, 1, 3000) != 1) {
            printf("hook=not-reached\n");
            return 0;
        }
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        connect_to(cb, &b);
        const char *o = "open";
        int tries, err = 0;
        double t0 = now_ms();
        for (tries = 1; tries <= 10; tries++) {
            int fd = accept(b.fd, NULL, NULL);
            err = fd >= 0 ? 0 : errno;
            o = client_outcome(cb, 150);
            if (strcmp(o, "open")) break;
        }
        printf("child: result=%s client=%s tries=%d after_ms=%s\n", errname(err), o,
               tries > 10 ? 10 : tries, now_ms() - t0 < 100 ? "<100" : ">=100");
        fflush(stdout);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    if (held && write(hold_pipe[1], "g", 1) != 1) die("write");
    if (!WIFEXITED(st)) printf("child: died status=%d\n", st);
    if (held) printf("parent: client=%s\n", client_outcome(ca, 1000));
    return 0;
}

/* ---- a listen while the spare's slot is lent ----------------------------- */

static void *accept_recording(void *arg)
{
    int *fd_err = arg;
    int fd = accept(fd_err[0], NULL, NULL);
    fd_err[1] = fd >= 0 ? 0 : errno;
    return NULL;
}

static int lent(bool load)
{
    struct listener a = listen_on(true);
    int ca = client_socket();
    int later = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (later < 0 || bind(later, (struct sockaddr *)&any, sizeof any) != 0) die("socket");
    if (pipe(hold_pipe) != 0 || pipe(held_pipe) != 0) die("pipe");
    char spec[64];
    snprintf(spec, sizeof spec, "hold:%d:%d", hold_pipe[0], held_pipe[1]);
    setenv("ACCEPTHOOK", spec, 1);
    exhaust();
    connect_to(ca, &a);
    static int fd_err[2];
    fd_err[0] = a.fd;
    pthread_t t;
    if (pthread_create(&t, NULL, accept_recording, fd_err) != 0) die("pthread_create");
    struct pollfd p = {held_pipe[0], POLLIN, 0};
    if (poll(&p, 1, 1000) != 1) printf("hook=not-reached\n");
    if (load)
        printf("load=%s\n", dlopen("libanl.so.1", RTLD_NOW) ? "ok" : "failed");
    else if (listen(later, 8) != 0)
        die("listen");
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    int free_numbers = 0;
    for (int fd = 0; fd < (int)rl.rlim_cur; fd++)
        if (fcntl(fd, F_GETFD) == -1) free_numbers++;
    printf("free_after=%d\n", free_numbers);
    if (write(hold_pipe[1], "g", 1) != 1) die("write");
    pthread_join(t, NULL);
    printf("result=%s client=%s\n", errname(fd_err[1]), client_outcome(ca, 1000));
    return 0;
}

int main(int argc, char **argv)
{
    static const char *const singles[] = {"rcvtimeo", "eintr", "eintr-restart", "cancel"};
    if (argc != 2) {
        fprintf(stderr, "usage: blockaccept SCENARIO (see the source)\n");
        return 2;
    }
    const char *sc = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < sizeof singles / sizeof *singles; i++)
        if (!strcmp(sc, singles[i])) return single(sc);
    if (!strcmp(sc, "two-listeners")) return two_listeners();
    if (!strcmp(sc, "rcvtimeo-other")) return rcvtimeo_other();
    if (!strcmp(sc, "mixed")) return mixed();
    if (!strcmp(sc, "listeners")) return listeners();
    if (!strcmp(sc, "room")) return room();
    if (!strcmp(sc, "lent-listen")) return lent(false);
    if (!strcmp(sc, "lent-dlopen")) return lent(true);
    if (!strncmp(sc, "fork", 4) &&
        (!strcmp(sc, "fork") || !strcmp(sc, "fork-idle") || !strcmp(sc, "fork-held")))
        return forking(sc);
    fprintf(stderr, "blockaccept: unknown scenario %s\n", sc);
    return 2;
}
