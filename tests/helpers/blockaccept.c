/* blockaccept SCENARIO: a blocking accept at descriptor exhaustion.
 *
 *   rcvtimeo  SO_RCVTIMEO of 300 ms; one client connects meanwhile
 *   eintr     SIGALRM (no SA_RESTART) after 200 ms; one client meanwhile
 *   cancel    the accepting thread is cancelled after 200 ms; another
 *             thread's accept must still be relieved afterwards
 *
 * The listener is set up, then RLIMIT_NOFILE is lowered to the lowest free
 * number (no descriptor left). Prints one line:
 *   result=ERRNO-NAME after_ms=N client=eof|data|open
 * and exits 0. Without the shim the real call fails at once with EMFILE. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int listener;
static struct sockaddr_in addr;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

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
    case ECANCELED:
        return "CANCELED";
    default:
        return strerror(e);
    }
}

/* A client socket made before the limit is lowered; connected later. */
static int client = -1;

static void *connect_later(void *arg)
{
    (void)arg;
    if (client < 0) return NULL;
    struct timespec d = {0, 100 * 1000 * 1000};
    nanosleep(&d, NULL);
    if (connect(client, (struct sockaddr *)&addr, sizeof addr) != 0) perror("connect");
    return NULL;
}

/* What the client saw within 1 s: EOF (shed), data, or nothing yet. */
static const char *client_outcome(void)
{
    struct pollfd p = {client, POLLIN, 0};
    if (poll(&p, 1, 1000) <= 0) return "open";
    char c;
    ssize_t n = recv(client, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET) ? "eof" : "data";
}

static void exhaust(void)
{
    int n = 0;
    while (fcntl(n, F_GETFD) != -1)
        n++;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = (rlim_t)n;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) die("setrlimit");
}

static void *sleeper(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

static void on_alarm(int sig)
{
    (void)sig;
}

static void *accept_thread(void *arg)
{
    int *err = arg;
    int fd = accept(listener, NULL, NULL);
    *err = fd >= 0 ? 0 : errno;
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: blockaccept rcvtimeo|eintr|cancel\n");
        return 2;
    }
    const char *sc = argv[1];
    listener = socket(AF_INET, SOCK_STREAM, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(listener, 16) != 0 || getsockname(listener, (struct sockaddr *)&addr, &len) != 0)
        die("listen");
    pthread_t helper, acceptor;
    if (!strcmp(sc, "rcvtimeo")) {
        struct timeval tv = {0, 300 * 1000};
        setsockopt(listener, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    } else if (!strcmp(sc, "eintr")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm; /* no SA_RESTART: the real call fails with EINTR */
        sigaction(SIGALRM, &sa, NULL);
    } else if (strcmp(sc, "cancel") != 0) {
        fprintf(stderr, "blockaccept: unknown scenario %s\n", sc);
        return 2;
    }
    if (!strcmp(sc, "cancel")) {
        /* glibc's pthread_cancel loads libgcc_s.so.1 (the unwinder) the first
         * time, which needs a descriptor: at the limit it aborts, with or
         * without the shim. A program that cancels threads at its limit has
         * it loaded already; so do we, by cancelling a thread beforehand. */
        pthread_t warm;
        if (pthread_create(&warm, NULL, sleeper, NULL) != 0) die("pthread_create");
        pthread_cancel(warm);
        pthread_join(warm, NULL);
    }
    client = socket(AF_INET, SOCK_STREAM, 0);
    if (client < 0) die("socket");
    /* The second client of `cancel`, made while descriptors are free. */
    int second = socket(AF_INET, SOCK_STREAM, 0);
    exhaust();
    if (pthread_create(&helper, NULL, connect_later, NULL) != 0) die("pthread_create");
    double t0 = now_ms();
    int err = 0;
    if (!strcmp(sc, "cancel")) {
        if (pthread_create(&acceptor, NULL, accept_thread, &err) != 0) die("pthread_create");
        struct timespec d = {0, 300 * 1000 * 1000};
        nanosleep(&d, NULL);
        pthread_cancel(acceptor);
        void *ret;
        pthread_join(acceptor, &ret);
        if (ret == PTHREAD_CANCELED) err = ECANCELED;
    } else {
        if (!strcmp(sc, "eintr")) {
            struct itimerval it = {{0, 0}, {0, 300 * 1000}};
            setitimer(ITIMER_REAL, &it, NULL);
        }
        int fd = accept(listener, NULL, NULL);
        err = fd >= 0 ? 0 : errno;
    }
    double after = now_ms() - t0;
    pthread_join(helper, NULL);
    printf("result=%s after_ms=%.0f client=%s\n", errname(err), after, client_outcome());
    if (!strcmp(sc, "cancel")) {
        /* The token and the spare must have survived the cancelled thread:
         * a second client is shed by a new (non-blocking) acceptor. */
        fcntl(listener, F_SETFL, O_NONBLOCK);
        if (second < 0) {
            printf("second=no-socket\n");
            return 0;
        }
        client = second; /* the first stays open: no descriptor is freed */
        if (connect(client, (struct sockaddr *)&addr, sizeof addr) != 0) perror("connect");
        int fd = accept(listener, NULL, NULL);
        printf("second=%s client=%s\n", fd >= 0 ? "accepted" : errname(errno), client_outcome());
    }
    return 0;
}
