/* accept/accept4 relief at descriptor exhaustion.
 *
 * Linux checks for a free descriptor before it looks at the queue, so EMFILE
 * says nothing about pending connections, and a pending connection stays in
 * the backlog: a level-triggered loop is woken again at once and spins, an
 * edge-triggered loop that stops on the error strands the backlog. We lend
 * the spare's slot to take the connection; if the spare cannot be re-armed
 * afterwards the table is still full and the connection is shed (optional
 * message, orderly close), otherwise room appeared and the app gets it.
 *
 * Non-blocking listener: shed until the first EAGAIN, then report EAGAIN
 * (or the original error). Blocking listener: keep waiting, shedding arrivals
 * while full, as the real call would wait; its SO_RCVTIMEO, EINTR and
 * cancellation come from the real call itself. A blocked accept reserves
 * its descriptor before it sleeps, so the lent slot cannot be stolen then. */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Consecutive backoffs of this thread; reset by a successful accept. */
static __thread unsigned backoff_attempt __attribute__((tls_model("initial-exec")));

struct call {
    int fd;
    struct sockaddr *addr;
    socklen_t *addrlen;
    socklen_t addrlen_in; /* the caller's buffer size: each attempt needs it again */
    int flags;
    bool use4;
};

static int real_accept(const struct call *call)
{
    if (call->addrlen) *call->addrlen = call->addrlen_in;
    if (call->use4) return fdg_next.accept4(call->fd, call->addr, call->addrlen, call->flags);
    return fdg_next.accept(call->fd, call->addr, call->addrlen);
}

/* The kernel hands out the lowest free number, so when it gave us `fd` the
 * numbers 0..fd were all in use: fewer than rlim_cur - fd - 1 remain free. */
static bool headroom_short(int fd)
{
    struct rlimit rl;
    if (!fdg_cfg.headroom || getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
        return false;
    return (uint64_t)fd + 1 + fdg_cfg.headroom > rl.rlim_cur;
}

static void shed(int listener, int conn, int why)
{
    int saved = errno;
    if (fdg_cfg.reject_len &&
        send(conn, fdg_cfg.reject_msg, fdg_cfg.reject_len, MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
        fdg_count(FDG_C_accept_reject_sent, 1);
    /* Orderly close: FIN after the message, and unread input drained so that
     * close() does not answer with a reset that could discard the message. */
    shutdown(conn, SHUT_WR);
    char sink[512];
    for (int i = 0; i < 16 && recv(conn, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
        ;
    fdg_raw_close(conn);
    errno = saved;
    fdg_count(why ? FDG_C_accept_shed : FDG_C_accept_headroom_shed, 1);
    if (why)
        fdg_logf(FDG_LVL_WARN, FDG_EV_SHED,
                 "accept(%d): %s; shed a pending connection instead of leaving it in the backlog",
                 listener,
                 why == ENFILE ? "system file table full (ENFILE)"
                               : "descriptor limit reached (EMFILE)");
    else
        fdg_logf(FDG_LVL_WARN, FDG_EV_SHED,
                 "accept(%d): fewer than FDGUARD_HEADROOM=%u descriptors left; shed a connection",
                 listener, fdg_cfg.headroom);
}

static bool listener_blocking(int fd)
{
    int fl = (int)fdg_raw_fcntl(fd, F_GETFL, 0);
    return fl >= 0 && !(fl & O_NONBLOCK);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* After each shed a blocking wait starts over; past SO_RCVTIMEO in total we
 * return EAGAIN as the real call would have. 0: no timeout. */
static uint64_t receive_deadline(int fd)
{
    struct timeval tv;
    socklen_t len = sizeof tv;
    if (getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len) < 0 ||
        (tv.tv_sec == 0 && tv.tv_usec == 0))
        return 0;
    return now_ms() + (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static int fail(int err)
{
    errno = err;
    return -1;
}

/* Only one thread at a time waits on the lent slot. A second relieving
 * thread that lent a freshly re-armed spare too would park a second slot in
 * its own blocked accept, and the first thread's connection would then be
 * shed although a descriptor had been freed for it. */
static _Atomic bool lend_token;

struct relief {
    const struct call *call;
    bool blocking;
    bool holds_token;
    int give_up_errno;
    uint64_t deadline; /* blocking listener with SO_RCVTIMEO, else 0 */
};

static void release_token(void *arg)
{
    struct relief *r = arg;
    if (r->holds_token) atomic_store(&lend_token, false);
    r->holds_token = false;
}

/* A free slot to accept into: the spare, lent by the token holder. False
 * when the caller must back off (the spare is lent to another thread, or
 * there is none and no room to open one). */
static bool take_slot(struct relief *r)
{
    bool expected = false;
    if (!r->holds_token && atomic_compare_exchange_strong(&lend_token, &expected, true))
        r->holds_token = true;
    if (r->holds_token) {
        if (fdg_spare_lend()) return true;
        /* The spare is gone: if room appeared, make a new one and lend it. */
        return fdg_spare_arm() && fdg_spare_lend();
    }
    /* Keep a reserve for the token holder's next connection. */
    fdg_spare_arm();
    return false;
}

/* Entered with conn >= 0 (accepted, but under FDGUARD_HEADROOM) or with
 * conn == -1 and the EMFILE/ENFILE the real call failed with. */
static int relief_loop(struct relief *r, int conn, int err)
{
    const struct call *call = r->call;
    int shed_why = err;     /* 0: headroom */
    bool slot_free = false; /* we hold one free slot (spare lent, or a shed connection's) */
    bool through_spare = false;

    for (;;) {
        if (conn < 0) {
            if (!slot_free && !take_slot(r)) {
                fdg_count(FDG_C_accept_backoff, 1);
                fdg_logf(FDG_LVL_INFO, FDG_EV_BACKOFF,
                         "accept(%d): descriptors exhausted and the spare is not available; "
                         "backing off",
                         call->fd);
                fdg_backoff_sleep(backoff_attempt++);
                if (!r->blocking) return fail(r->give_up_errno);
                continue;
            }
            slot_free = true;
            conn = real_accept(call);
            if (conn < 0) {
                err = errno;
                if (err == EMFILE || err == ENFILE) {
                    slot_free = false; /* another thread took the slot */
                    continue;
                }
                fdg_spare_arm();
                if (err == EAGAIN || err == EWOULDBLOCK)
                    return fail(r->blocking ? err : r->give_up_errno);
                return fail(err);
            }
            slot_free = false;
            through_spare = true;
        }
        /* Room appeared if the spare can be re-armed now: the app keeps it. */
        if (fdg_spare_arm() && !headroom_short(conn)) {
            if (through_spare) fdg_count(FDG_C_accept_handed, 1);
            backoff_attempt = 0;
            return conn;
        }
        shed(call->fd, conn, shed_why);
        conn = -1;
        slot_free = true;
        if (r->deadline && now_ms() >= r->deadline) {
            fdg_spare_arm();
            return fail(EAGAIN);
        }
    }
}

static int relieve(const struct call *call, int conn, int err)
{
    struct relief r = {
        .call = call,
        .blocking = listener_blocking(call->fd),
        .give_up_errno = fdg_cfg.accept_errno ? fdg_cfg.accept_errno : (err ? err : EMFILE),
    };
    if (r.blocking) r.deadline = receive_deadline(call->fd);
    if (conn < 0) fdg_count(FDG_C_accept_emfile, 1);
    int result;
    /* A blocking accept is a cancellation point: the token must not die
     * with the thread. */
    pthread_cleanup_push(release_token, &r);
    result = relief_loop(&r, conn, err);
    pthread_cleanup_pop(1);
    return result;
}

static int guarded_accept(struct call *call)
{
    if (FDG_UNLIKELY(fdg_engage_needed())) fdg_engage();
    int conn = real_accept(call);
    if (FDG_LIKELY(conn >= 0)) {
        if (FDG_UNLIKELY(fdg_cfg.headroom) && headroom_short(conn)) return relieve(call, conn, 0);
        if (FDG_UNLIKELY(backoff_attempt)) backoff_attempt = 0;
        return conn;
    }
    int err = errno;
    switch (err) {
    case EMFILE:
    case ENFILE:
        return relieve(call, -1, err);
    case ENOBUFS:
    case ENOMEM:
        /* The kernel is short of memory: retrying at once only spins. */
        fdg_count(FDG_C_accept_nomem, 1);
        fdg_count(FDG_C_accept_backoff, 1);
        fdg_logf(FDG_LVL_WARN, FDG_EV_BACKOFF, "accept(%d): %s; backing off", call->fd,
                 err == ENOBUFS ? "ENOBUFS" : "ENOMEM");
        fdg_backoff_sleep(backoff_attempt++);
        return fail(err);
    default:
        return -1;
    }
}

__attribute__((visibility("default"))) int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    if (!fdg_active() || !fdg_cfg.accept) return fdg_next.accept(fd, addr, len);
    struct call call = {fd, addr, len, len ? *len : 0, 0, false};
    return guarded_accept(&call);
}

__attribute__((visibility("default"))) int accept4(int fd, struct sockaddr *addr, socklen_t *len,
                                                   int flags)
{
    if (!fdg_active() || !fdg_cfg.accept) return fdg_next.accept4(fd, addr, len, flags);
    struct call call = {fd, addr, len, len ? *len : 0, flags, true};
    return guarded_accept(&call);
}

/* A program that listens is about to accept: the first need of the spare.
 * Arming it here, while descriptors are free, means a server squeezed to
 * its limit before its first connection is relieved as well. */
__attribute__((visibility("default"))) int listen(int fd, int backlog)
{
    int r = fdg_next.listen(fd, backlog);
    if (r == 0 && fdg_active() && fdg_cfg.accept && fdg_engage_needed()) {
        int saved = errno;
        fdg_engage();
        errno = saved;
    }
    return r;
}
