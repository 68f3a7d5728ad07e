/* micro: the cost of the calls fdguard wraps, one case per run.
 *
 *   micro CASE ITERS [OTHER_FDS]
 *
 * Prints one number on stdout: nanoseconds per operation, or for rss_reg the
 * bytes of resident memory that registering ITERS descriptors added. The
 * ITERS operations are timed in batches (1000, connect_cycle 50); the figure
 * is the 10th percentile of the batches' ns/op: the cost of the calls
 * themselves, robust against other load on the machine, which only ever adds
 * time (MICRO_VERBOSE=1 prints min, median, mean and max on stderr). tests/bench/run starts it without and
 * with LD_PRELOAD=libfdguard.so, alternately, and compares the medians.
 *
 *   close_unreg    close() of a descriptor that is in no epoll set. The
 *                  descriptors are dup'd in batches outside the timed region;
 *                  only the closes are timed.
 *   dup_close      a dup() + close() pair.
 *   epoll_addel    an EPOLL_CTL_ADD + EPOLL_CTL_DEL pair.
 *   close_reg      close() of a dup'd descriptor registered in an epoll set
 *                  (a fresh set per batch). The shim deletes the registration
 *                  first (one more syscall); without it the registration stays
 *                  behind, as in the bug fdguard fixes.
 *   close_reg_last close() of a registered descriptor that is the last
 *                  reference to its file (an eventfd), as for a socket: the
 *                  kernel removes the registration itself, and the shim's
 *                  EPOLL_CTL_DEL comes on top.
 *   connect_cycle  loopback TCP: socket + connect, accept4, close both (the
 *                  client with SO_LINGER 0, so no TIME_WAIT piles up).
 *   OP_paired      OP twice over in one process, batch by batch in ABBA
 *                  order: through the symbol the program resolves (the
 *                  shim's wrapper when it is preloaded) and through libc's
 *                  own definition (looked up in libc.so.6 itself). Prints
 *                  the ratio of the two (10th percentiles): the wrapper's
 *                  overhead with both measured under the same conditions;
 *                  without the shim both are libc's and the ratio shows the
 *                  noise floor. The process is engaged (a pipe registered in
 *                  an instance it waited on). OP: close (an unregistered
 *                  dup), dup, dup2 (onto an open, untracked number), mod
 *                  (EPOLL_CTL_MOD of the pipe), wait (epoll_wait, timeout
 *                  0), close_reg (close of a registered dup, a fresh
 *                  instance per batch: the shim adds the DEL, libc leaves
 *                  the registration), close_last (close of a registered
 *                  eventfd, its last reference: the kernel removes the
 *                  registration with the file, the shim deletes it first),
 *                  addel (EPOLL_CTL_ADD + DEL).
 *   rss_reg        ITERS dup'd descriptors added to one epoll set: resident
 *                  anonymous memory after minus before (bytes).
 *
 * OTHER_FDS (close_unreg and close_paired): that many more descriptors are held open
 * during the run. The descriptor limit is raised as needed (above the hard
 * limit only with CAP_SYS_RESOURCE, up to /proc/sys/fs/nr_open); if it
 * cannot be, micro exits with status 3.
 *
 * The program calls the plain libc entry points: those are what the shim
 * interposes. A warm-up pass runs before the timed one. */
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BATCH 1000
#define CYCLE_BATCH 50

static void die(const char *what)
{
    fprintf(stderr, "micro: %s: %s\n", what, strerror(errno));
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long parse(const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < min || v > max) {
        fprintf(stderr, "micro: bad number: %s\n", s);
        exit(2);
    }
    return v;
}

/* Makes room for `need` descriptors: soft and, if need be, hard limit. */
static void ensure_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) die("getrlimit");
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= (rlim_t)need) return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < (rlim_t)need) rl.rlim_max = (rlim_t)need;
    rl.rlim_cur = (rlim_t)need;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        fprintf(stderr,
                "micro: cannot raise RLIMIT_NOFILE to %ld: %s (needs CAP_SYS_RESOURCE above the "
                "hard limit, and at most /proc/sys/fs/nr_open)\n",
                need, strerror(errno));
        exit(3);
    }
}

/* What the batches are dup'd from: an eventfd, which epoll accepts. */
static int base_fd(void)
{
    int fd = eventfd(0, EFD_CLOEXEC);
    if (fd < 0) die("eventfd");
    return fd;
}

static void dup_batch(int base, int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if ((fds[i] = dup(base)) < 0) die("dup");
}

static void register_batch(int ep, const int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0) die("epoll_ctl ADD");
    }
}

/* Every case is timed in batches; each batch gives one ns/op sample. */
struct samples {
    double *v;
    long n, cap;
};

static void sample(struct samples *s, uint64_t ns, int ops)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 1024;
        if (!(s->v = realloc(s->v, (size_t)s->cap * sizeof *s->v))) die("realloc");
    }
    s->v[s->n++] = (double)ns / ops;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Closes `iters` descriptors, BATCH at a time, timing only the closes.
 * mode 0: dup'd, unregistered; 1: dup'd, registered in a fresh epoll set per
 * batch; 2: eventfds (last reference), registered likewise. */
static void time_closes(struct samples *s, int base, long iters, int mode)
{
    static int fds[BATCH];
    for (long done = 0; done < iters;) {
        int n = iters - done < BATCH ? (int)(iters - done) : BATCH;
        int ep = -1;
        if (mode == 2) {
            for (int i = 0; i < n; i++)
                if ((fds[i] = eventfd(0, EFD_CLOEXEC)) < 0) die("eventfd");
        } else {
            dup_batch(base, fds, n);
        }
        if (mode) {
            if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0) die("epoll_create1");
            register_batch(ep, fds, n);
        }
        uint64_t t0 = now_ns();
        for (int i = 0; i < n; i++)
            close(fds[i]);
        if (s) sample(s, now_ns() - t0, n);
        if (ep >= 0) close(ep);
        done += n;
    }
}

/* The paired cases: each call made through the symbol as the application
 * resolves it (the shim's wrapper when preloaded) and through libc's own
 * definition (looked up in libc.so.6), batch by batch in ABBA order in one
 * process. */
struct via {
    int (*close)(int);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*epoll_ctl)(int, int, int, struct epoll_event *);
    int (*epoll_wait)(int, struct epoll_event *, int, int);
};

struct pair_env {
    int base, target, ep, p[2];
};

static double p10(struct samples *s)
{
    qsort(s->v, (size_t)s->n, sizeof *s->v, cmp_double);
    return s->v[s->n / 10];
}

/* One batch of n calls of `op` through `v`; only the calls are timed. */
static void pair_batch(struct samples *s, const char *op, const struct pair_env *e,
                       const struct via *v, int n)
{
    static int fds[BATCH];
    struct epoll_event ev = {.events = EPOLLIN}, out;
    uint64_t t0 = 0, t1 = 0;
    if (!strcmp(op, "close")) {
        dup_batch(e->base, fds, n);
        t0 = now_ns();
        for (int i = 0; i < n; i++)
            v->close(fds[i]);
        t1 = now_ns();
    } else if (!strcmp(op, "dup")) {
        t0 = now_ns();
        for (int i = 0; i < n; i++)
            fds[i] = v->dup(e->base);
        t1 = now_ns();
        for (int i = 0; i < n; i++)
            syscall(SYS_close, fds[i]);
    } else if (!strcmp(op, "dup2")) {
        t0 = now_ns();
        for (int i = 0; i < n; i++)
            v->dup2(e->base, e->target);
        t1 = now_ns();
    } else if (!strcmp(op, "mod")) {
        t0 = now_ns();
        for (int i = 0; i < n; i++)
            v->epoll_ctl(e->ep, EPOLL_CTL_MOD, e->p[0], &ev);
        t1 = now_ns();
    } else if (!strcmp(op, "wait")) {
        t0 = now_ns();
        for (int i = 0; i < n; i++)
            v->epoll_wait(e->ep, &out, 1, 0);
        t1 = now_ns();
    } else if (!strcmp(op, "close_reg")) {
        /* Registered in a fresh instance (through the application's
         * epoll_ctl, so that the shim knows them); the description stays
         * open (a dup of base): the shim's close adds the DEL, libc's leaves
         * the registration behind. */
        int ep = epoll_create1(EPOLL_CLOEXEC);
        if (ep < 0) die("epoll_create1");
        dup_batch(e->base, fds, n);
        register_batch(ep, fds, n);
        t0 = now_ns();
        for (int i = 0; i < n; i++)
            v->close(fds[i]);
        t1 = now_ns();
        close(ep);
    } else if (!strcmp(op, "close_last")) {
        /* The last reference (fresh eventfds): the kernel removes the
         * registration with the file; the shim, not knowing, deletes first. */
        int ep = epoll_create1(EPOLL_CLOEXEC);
        if (ep < 0) die("epoll_create1");
        for (int i = 0; i < n; i++)
            if ((fds[i] = eventfd(0, EFD_CLOEXEC)) < 0) die("eventfd");
        register_batch(ep, fds, n);
        t0 = now_ns();
        for (int i = 0; i < n; i++)
            v->close(fds[i]);
        t1 = now_ns();
        close(ep);
    } else if (!strcmp(op, "addel")) {
        t0 = now_ns();
        for (int i = 0; i < n; i++) {
            v->epoll_ctl(e->ep, EPOLL_CTL_ADD, e->p[1], &ev);
            v->epoll_ctl(e->ep, EPOLL_CTL_DEL, e->p[1], NULL);
        }
        t1 = now_ns();
    } else {
        fprintf(stderr, "micro: unknown paired case %s\n", op);
        exit(2);
    }
    sample(s, t1 - t0, n);
}

static double paired(const char *op, int base, long iters)
{
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    struct via app = {close, dup, dup2, epoll_ctl, epoll_wait}, own;
    own.close = libc ? (int (*)(int))dlsym(libc, "close") : NULL;
    own.dup = libc ? (int (*)(int))dlsym(libc, "dup") : NULL;
    own.dup2 = libc ? (int (*)(int, int))dlsym(libc, "dup2") : NULL;
    own.epoll_ctl =
        libc ? (int (*)(int, int, int, struct epoll_event *))dlsym(libc, "epoll_ctl") : NULL;
    own.epoll_wait =
        libc ? (int (*)(int, struct epoll_event *, int, int))dlsym(libc, "epoll_wait") : NULL;
    if (!own.close || !own.dup || !own.dup2 || !own.epoll_ctl || !own.epoll_wait) {
        fprintf(stderr, "micro: cannot find libc's own functions: %s\n", dlerror());
        exit(1);
    }
    /* An engaged process: a pipe registered in an instance it waited on. */
    struct pair_env e = {.base = base};
    struct epoll_event ev = {.events = EPOLLIN}, out;
    if ((e.target = dup(base)) < 0 || pipe2(e.p, O_CLOEXEC) < 0 ||
        (e.ep = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
        epoll_ctl(e.ep, EPOLL_CTL_ADD, e.p[0], &ev) < 0)
        die("paired setup");
    epoll_wait(e.ep, &out, 1, 0);
    struct samples a = {0}, b = {0}, warm = {0};
    for (int i = 0; i < 10; i++) {
        pair_batch(&warm, op, &e, &app, BATCH);
        pair_batch(&warm, op, &e, &own, BATCH);
    }
    for (long done = 0; done < iters; done += 2 * BATCH) {
        bool flip = (done / (2 * BATCH)) & 1;
        pair_batch(flip ? &b : &a, op, &e, flip ? &own : &app, BATCH);
        pair_batch(flip ? &a : &b, op, &e, flip ? &app : &own, BATCH);
    }
    if (getenv("MICRO_VERBOSE"))
        fprintf(stderr, "micro %s_paired: application's p10 %.2f, libc's own p10 %.2f ns/op\n", op,
                p10(&a), p10(&b));
    return p10(&a) / p10(&b);
}

static void time_dup_close(struct samples *s, int base, long iters)
{
    for (long done = 0; done < iters; done += BATCH) {
        int n = iters - done < BATCH ? (int)(iters - done) : BATCH;
        uint64_t t0 = now_ns();
        for (int i = 0; i < n; i++) {
            int fd = dup(base);
            if (fd < 0) die("dup");
            close(fd);
        }
        if (s) sample(s, now_ns() - t0, n);
    }
}

static void time_epoll_addel(struct samples *s, long iters)
{
    int ep = epoll_create1(EPOLL_CLOEXEC), fd = eventfd(0, EFD_CLOEXEC);
    if (ep < 0 || fd < 0) die("epoll_create1/eventfd");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    for (long done = 0; done < iters; done += BATCH) {
        int n = iters - done < BATCH ? (int)(iters - done) : BATCH;
        uint64_t t0 = now_ns();
        for (int i = 0; i < n; i++) {
            if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl ADD");
            if (epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) < 0) die("epoll_ctl DEL");
        }
        if (s) sample(s, now_ns() - t0, n);
    }
    close(fd);
    close(ep);
}

static int listener(struct sockaddr_in *sin)
{
    socklen_t len = sizeof *sin;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (l < 0) die("socket");
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    *sin = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(l, (struct sockaddr *)sin, sizeof *sin) < 0 || listen(l, 128) < 0 ||
        getsockname(l, (struct sockaddr *)sin, &len) < 0)
        die("listen on 127.0.0.1");
    return l;
}

static void time_connect_cycle(struct samples *s, int l, const struct sockaddr_in *sin,
                               long iters)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    for (long done = 0; done < iters; done += CYCLE_BATCH) {
        int n = iters - done < CYCLE_BATCH ? (int)(iters - done) : CYCLE_BATCH;
        uint64_t t0 = now_ns();
        for (int i = 0; i < n; i++) {
            int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (c < 0) die("socket");
            setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            if (connect(c, (const struct sockaddr *)sin, sizeof *sin) < 0) die("connect");
            int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
            if (a < 0) die("accept4");
            close(c);
            close(a);
        }
        if (s) sample(s, now_ns() - t0, n);
    }
}

/* Resident anonymous bytes (smaps_rollup "Anonymous"): the shim's table is
 * anonymous memory, and file-backed pages (code faulted in, 16 pages at a
 * time, on the first call of a function) would only add noise. smaps_rollup
 * walks the page tables, so it is exact, where statm and VmRSS read counters
 * that are synchronised lazily. Without it: statm's resident pages. */
static long rss_bytes(void)
{
    char buf[4096];
    long kib = -1;
    FILE *f = fopen("/proc/self/smaps_rollup", "re");
    if (f) {
        while (fgets(buf, sizeof buf, f))
            if (sscanf(buf, "Anonymous: %ld kB", &kib) == 1) break;
        fclose(f);
        if (kib >= 0) return kib * 1024;
    }
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open /proc/self/statm");
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) die("read /proc/self/statm");
    buf[n] = '\0';
    long size, resident;
    if (sscanf(buf, "%ld %ld", &size, &resident) != 2) die("parse /proc/self/statm");
    return resident * sysconf(_SC_PAGESIZE);
}

static long rss_reg(int base, long n)
{
    ensure_nofile(n + 64);
    int *fds = malloc((size_t)n * sizeof *fds);
    if (!fds) die("malloc");
    for (long i = 0; i < n; i++)
        if ((fds[i] = dup(base)) < 0) die("dup");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    long before = rss_bytes();
    for (long i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0) die("epoll_ctl ADD");
    }
    return rss_bytes() - before;
}

static void usage(void)
{
    fprintf(stderr, "usage: micro close_unreg|dup_close|epoll_addel|close_reg|close_reg_last|"
                    "connect_cycle|rss_reg|OP_paired ITERS [OTHER_FDS]\n"
                    "       (OP: close dup dup2 mod wait close_reg addel)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) usage();
    const char *c = argv[1];
    long iters = parse(argv[2], 1, 100000000);
    long others = argc == 4 ? parse(argv[3], 0, 100000000) : 0;
    if (others && strcmp(c, "close_unreg") != 0 && strcmp(c, "close_paired") != 0) usage();

    long warm = iters / 10 > BATCH ? iters / 10 : (iters < BATCH ? iters : BATCH);
    int base = base_fd();
    struct samples s = {0};

    if (others) {
        ensure_nofile(others + BATCH + 64);
        for (long i = 0; i < others; i++)
            if (dup(base) < 0) die("dup");
    }
    size_t cl = strlen(c);
    if (cl > 7 && strcmp(c + cl - 7, "_paired") == 0) {
        char op[32];
        snprintf(op, sizeof op, "%.*s", (int)(cl - 7), c);
        if (others && strcmp(op, "close") != 0) usage();
        if (strncmp(op, "close_", 6) == 0) ensure_nofile(2 * BATCH + 64);
        printf("%.4f\n", paired(op, base, iters));
        return 0;
    }
    if (strcmp(c, "rss_reg") == 0) {
        printf("%ld\n", rss_reg(base, iters));
        return 0;
    }
    if (strcmp(c, "close_unreg") == 0) {
        time_closes(NULL, base, warm, 0);
        time_closes(&s, base, iters, 0);
    } else if (strcmp(c, "close_reg") == 0) {
        time_closes(NULL, base, warm, 1);
        time_closes(&s, base, iters, 1);
    } else if (strcmp(c, "close_reg_last") == 0) {
        time_closes(NULL, base, warm, 2);
        time_closes(&s, base, iters, 2);
    } else if (strcmp(c, "dup_close") == 0) {
        time_dup_close(NULL, base, warm);
        time_dup_close(&s, base, iters);
    } else if (strcmp(c, "epoll_addel") == 0) {
        time_epoll_addel(NULL, warm);
        time_epoll_addel(&s, iters);
    } else if (strcmp(c, "connect_cycle") == 0) {
        struct sockaddr_in sin;
        int l = listener(&sin);
        time_connect_cycle(NULL, l, &sin, warm / 10);
        time_connect_cycle(&s, l, &sin, iters);
    } else {
        usage();
    }
    /* The low decile of the batches: the cost of the calls themselves, with
     * the batches that other load on the machine interrupted left out. */
    qsort(s.v, (size_t)s.n, sizeof *s.v, cmp_double);
    double sum = 0;
    for (long i = 0; i < s.n; i++)
        sum += s.v[i];
    printf("%.2f\n", s.v[s.n / 10]);
    if (getenv("MICRO_VERBOSE"))
        fprintf(stderr, "micro %s: %ld batches, ns/op min %.2f p10 %.2f p50 %.2f mean %.2f max %.2f\n",
                c, s.n, s.v[0], s.v[s.n / 10], s.v[s.n / 2], sum / s.n, s.v[s.n - 1]);
    return 0;
}
