/* accept/accept4 relief at descriptor exhaustion.
 *
 * Linux reserves the new descriptor (get_unused_fd_flags) before it looks at
 * the queue and before it sleeps: at the limit accept fails with EMFILE at
 * once whether or not a connection is pending, and a thread asleep in accept
 * holds a reserved slot for as long as it sleeps. So relief never waits in
 * accept: the spare's slot is lent (lend.c) for the instant of an accept of a
 * connection known to be pending, and a blocking caller that has to wait
 * waits in poll on the listener, holding nothing. A connection taken through
 * the spare is shed (optional message, orderly close) if the spare cannot be
 * re-armed afterwards (the table is still full), handed to the app if it can.
 *
 *   non-blocking listener: shed up to the first EAGAIN, then report EAGAIN
 *     (FDGUARD_ACCEPT_ERRNO) or the original error;
 *   blocking listener with something pending at entry (a poll, select or
 *     epoll loop calls it only when readable): shed what is pending, then
 *     fail with the original error at once, as the real call did;
 *   blocking listener with nothing pending (a dedicated acceptor thread):
 *     wait as the real call would have had a descriptor been free, in poll:
 *     SO_RCVTIMEO, signal handlers and cancellation end the wait as they
 *     would end the real one. */
#include "fdguard.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Consecutive backoffs of this thread; reset by a successful accept. */
static __thread unsigned backoff_attempt __attribute__((tls_model("initial-exec")));

struct call {
    int fd;
    struct sockaddr *addr;
    socklen_t *addrlen;
    int flags;
    bool use4;
};

/* The caller's own call: its pointers, untouched. */
static int real_accept(const struct call *call)
{
    if (call->use4) return fdg_next.accept4(call->fd, call->addr, call->addrlen, call->flags);
    return fdg_next.accept(call->fd, call->addr, call->addrlen);
}

/* A connection taken by relief: a shed one is never the app's, so none of
 * the caller's buffers are written; close-on-exec until it is handed over,
 * so a fork+exec elsewhere cannot keep a shed client open. */
static int private_accept(const struct call *call)
{
    return fdg_next.accept4(call->fd, NULL, NULL, call->flags | SOCK_CLOEXEC);
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
    /* Orderly close: the message and the FIN leave together (MSG_MORE holds
     * the message until shutdown sends the FIN: one segment, one wake-up of
     * the client, who reads both). Input the client sent is drained before
     * the close (one call, nearly always: a request fits the sink), or the
     * close would answer with a reset; input that arrives later still meets
     * one, but after the message and the FIN, which the client reads first
     * (tests/accept.bats). */
    if (fdg_cfg.reject_len && send(conn, fdg_cfg.reject_msg, fdg_cfg.reject_len,
                                   MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE) > 0)
        fdg_count(FDG_C_accept_reject_sent, 1);
    shutdown(conn, SHUT_WR);
    char sink[4096];
    for (int i = 0; i < 16 && recv(conn, sink, sizeof sink, MSG_DONTWAIT) == (ssize_t)sizeof sink;
         i++)
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

/* Anything for accept to report right now: a connection, or an error. */
static bool readable_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int saved = errno;
    bool ready = poll(&p, 1, 0) > 0;
    errno = saved;
    return ready;
}

static int fail(int err)
{
    errno = err;
    return -1;
}

/* ---- waiting like the real blocking accept ------------------------------- */

struct wait {
    uint64_t deadline_us; /* SO_RCVTIMEO: the total wait ends there; 0: none */
    bool rcvtimeo;
};

enum { W_READY, W_TIMEOUT, W_SIGNAL, W_ERROR };

/* How long a woken acceptor thread gets to take its connection. */
#define GRACE_US 5000

static void wait_start(struct wait *w, int fd)
{
    struct timeval tv;
    socklen_t len = sizeof tv;
    *w = (struct wait){0};
    if (getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len) == 0 && (tv.tv_sec || tv.tv_usec)) {
        w->rcvtimeo = true;
        w->deadline_us = fdg_now_us() + (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
    }
}

/* Signals raised by the faulting instruction itself: they cannot arrive
 * while the thread sleeps (runtimes and sanitizers handle them without
 * SA_RESTART). */
static bool synchronous(int sig)
{
    return sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL || sig == SIGTRAP ||
           sig == SIGSYS;
}

/* A signal handler ran while we waited. poll and nanosleep are never
 * restarted; accept is, when the handler has SA_RESTART and the socket no
 * SO_RCVTIMEO. Which signal it was we cannot tell: EINTR if any installed
 * handler of an asynchronous signal lacks SA_RESTART. */
static bool signal_ends_wait(const struct wait *w)
{
    if (w->rcvtimeo) return true;
    int saved = errno;
    bool ends = false;
    for (int sig = 1; sig < NSIG && !ends; sig++) {
        struct sigaction sa;
        if (synchronous(sig) || sigaction(sig, NULL, &sa) != 0) continue; /* glibc's own */
        if (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN) continue;
        ends = !(sa.sa_flags & SA_RESTART);
    }
    errno = saved;
    return ends;
}

/* Remaining time as a timespec; false when the deadline has passed. */
static bool remaining(const struct wait *w, uint64_t cap_us, struct timespec *ts)
{
    uint64_t us = cap_us;
    if (w->deadline_us) {
        uint64_t now = fdg_now_us();
        if (now >= w->deadline_us) return false;
        if (!us || w->deadline_us - now < us) us = w->deadline_us - now;
    }
    ts->tv_sec = (time_t)(us / 1000000);
    ts->tv_nsec = (long)(us % 1000000) * 1000;
    return true;
}

/* Waits, holding no slot, until the listener has something for accept (a
 * connection, or an error the accept will report). A cancellation point. */
static int wait_listener(int fd, const struct wait *w)
{
    for (;;) {
        struct timespec ts;
        if (!remaining(w, 0, &ts)) return W_TIMEOUT;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = ppoll(&p, 1, w->deadline_us ? &ts : NULL, NULL);
        if (n > 0) return W_READY;
        if (n < 0 && errno != EINTR) return W_ERROR; /* ENOMEM: errno says it */
        if (n < 0 && signal_ends_wait(w)) return W_SIGNAL;
    }
}

/* The lend, within the same limits: the holder takes microseconds. */
static int acquire_waiting(uint64_t *mine, uint64_t offer, int fd, const struct wait *w)
{
    for (;;) {
        int got = fdg_lend_acquire(mine, offer, fd, w->deadline_us, true);
        if (got == FDG_LEND_OK) return W_READY;
        if (got == FDG_LEND_TIMEOUT) return W_TIMEOUT;
        if (signal_ends_wait(w)) return W_SIGNAL;
    }
}

/* A sleep within the same limits. */
static int nap_us(const struct wait *w, uint64_t us)
{
    struct timespec ts;
    if (!remaining(w, us, &ts)) return W_TIMEOUT;
    if (nanosleep(&ts, NULL) != 0 && errno == EINTR && signal_ends_wait(w)) return W_SIGNAL;
    return W_READY;
}

/* ---- taking pending connections through the spare ----------------------- */

enum taken { TAKEN_HANDED, TAKEN_NONE, TAKEN_NO_SLOT, TAKEN_OFFER, TAKEN_ERROR };

struct relief {
    const struct call *call;
    bool blocking;
    int why;          /* EMFILE/ENFILE, or 0 when relieving FDGUARD_HEADROOM */
    int cancel_state; /* the app's, restored around accepts that may wait */
    int conn;         /* TAKEN_HANDED */
    int err;          /* TAKEN_ERROR */
};

/* Relief runs with cancellation disabled (a shed connection must not be
 * left open by a cancellation inside send or close); around a call that may
 * wait, the app's own cancel state: a cancellation point, as the real
 * accept is. errno kept. */
static void may_cancel(const struct relief *r, bool allowed)
{
    int saved = errno;
    pthread_setcancelstate(allowed ? r->cancel_state : PTHREAD_CANCEL_DISABLE, NULL);
    errno = saved;
}

/* On a blocking listener the accept may still wait (another process took
 * the connection after poll): it stays a cancellation point. */
static int relief_accept(struct relief *r, bool private)
{
    if (!r->blocking) return private ? private_accept(r->call) : real_accept(r->call);
    may_cancel(r, true);
    int conn = private ? private_accept(r->call) : real_accept(r->call);
    may_cancel(r, false);
    return conn;
}

/* Frees a slot for one accept: the spare's. If it is gone (the app closed
 * it, or another thread's open took its slot while it was lent), a new one
 * is opened first, which only succeeds if a slot is free anyway. */
static bool free_a_slot(void)
{
    return fdg_spare_lend() || (fdg_spare_arm() && fdg_spare_lend());
}

/* With the lend held: takes pending connections one accept at a time,
 * shedding each while the table stays full, until one can be kept
 * (r->conn), nothing is pending, no slot can be had, or a waiting thread
 * should have the slot. `slot`: a slot is known to be free already;
 * `polled`: a blocking listener was found readable just now. The spare is
 * re-armed before it returns (a no-op if it is held). */
static enum taken take_pending(struct relief *r, bool slot, bool polled)
{
    int fd = r->call->fd;
    enum taken end;
    int steals = 0;
    bool shed_one = false;
    for (;;) {
        /* A blocking accept must find a connection, or it would sleep in
         * the lent slot. After a shed, a poll asks as well: cheaper than an
         * accept that finds nothing (the kernel makes a socket for it). */
        if ((r->blocking || shed_one) && !polled && !readable_now(fd)) {
            end = TAKEN_NONE;
            break;
        }
        polled = false;
        if (!slot && !free_a_slot()) {
            end = TAKEN_NO_SLOT;
            break;
        }
        int conn = relief_accept(r, true);
        if (conn < 0) {
            int err = errno;
            if (err == EMFILE || err == ENFILE) {
                /* Another thread's open (an accept's first engage, a load)
                 * took the slot; if that re-armed the spare, lend it again. */
                slot = false;
                polled = true;
                if (++steals < 3) continue;
                end = TAKEN_NO_SLOT;
            } else if (err == ECONNABORTED) {
                continue; /* that connection only; its slot is free again */
            } else {
                r->err = err;
                end = err == EAGAIN || err == EWOULDBLOCK ? TAKEN_NONE : TAKEN_ERROR;
            }
            break;
        }
        /* Room appeared if the spare can be re-armed now: the app keeps it. */
        bool room = fdg_spare_arm();
        if (room && !headroom_short(conn)) {
            r->conn = conn;
            end = TAKEN_HANDED;
            break;
        }
        shed(fd, conn, room ? 0 : r->why ? r->why : EMFILE);
        slot = shed_one = true; /* the shed connection's number is free again */
        if (fdg_lend_wanted()) {
            end = TAKEN_OFFER;
            break;
        }
    }
    fdg_spare_arm();
    return end;
}

/* What the kernel's accept does after dequeuing a connection: flags, and
 * the peer's address copied as accept copies it (getpeername makes the same
 * copy: truncated to *addrlen, the full length stored, EFAULT or EINVAL for
 * a bad buffer, in which case the kernel drops the connection too). -1 with
 * errno, or -2: the peer reset before we read its address (the kernel's
 * accept would have failed with ECONNABORTED): dropped, relief goes on. */
static int hand_over(const struct call *call, int conn)
{
    if (!(call->flags & SOCK_CLOEXEC)) fdg_raw_fcntl(conn, F_SETFD, 0);
    if (call->addr && getpeername(conn, call->addr, call->addrlen) < 0) {
        int err = errno;
        fdg_raw_close(conn);
        return err == ENOTCONN ? -2 : fail(err);
    }
    fdg_count(FDG_C_accept_handed, 1);
    return conn;
}

/* Takes what is pending, shedding it, until a connection can be kept or
 * nothing more can be done; the lend is held only while taking. 1: *conn is
 * the handed connection (or -1 with errno: dropped as the kernel would);
 * 0: *end says why it stopped. Never waits for a new arrival. */
static int drain(struct relief *r, bool slot, bool polled, int *conn, enum taken *end)
{
    uint64_t offer = 0;
    for (;;) {
        uint64_t mine;
        fdg_lend_acquire(&mine, offer, r->call->fd, 0, false);
        *end = take_pending(r, slot, polled);
        slot = polled = false;
        offer = *end == TAKEN_OFFER ? fdg_lend_offer(mine) : 0;
        if (!offer) fdg_lend_release(mine);
        if (*end == TAKEN_OFFER) continue;
        if (*end != TAKEN_HANDED) return 0;
        *conn = hand_over(r->call, r->conn);
        if (*conn != -2) return 1;
    }
}

/* Neither a spare nor a free slot: one step of backoff, so nothing spins. */
static void no_slot(const struct relief *r)
{
    fdg_count(FDG_C_accept_backoff, 1);
    fdg_logf(FDG_LVL_INFO, FDG_EV_BACKOFF,
             "accept(%d): descriptors exhausted and no spare to lend; backing off", r->call->fd);
}

/* ---- the three shapes ----------------------------------------------------- */

/* A non-blocking listener, or a blocking one with something pending when
 * the call came in (the caller, a poll loop as likely as not, gets what the
 * real call gave it, at once): what is pending is taken, then the call
 * fails with give_up. `polled`: the blocking listener was just found
 * readable. */
static int relieve_at_once(struct relief *r, bool slot, bool polled, int give_up)
{
    int conn;
    enum taken end;
    if (drain(r, slot, polled, &conn, &end)) return conn;
    if (end == TAKEN_NO_SLOT) {
        no_slot(r);
        fdg_backoff_sleep(backoff_attempt++);
    }
    return fail(give_up);
}

/* The errno a call fails with after a wait that did not end W_READY (err:
 * errno after a W_ERROR). */
static int wait_failure(int why, int err)
{
    return why == W_ERROR ? err : why == W_SIGNAL ? EINTR : EAGAIN;
}

/* A wait of relieve_waiting, a cancellation point: on the listener (nap 0)
 * or a nap of `nap` microseconds. 0 when it ended W_READY, else the errno
 * the call fails with. */
static int cancellable_wait(const struct relief *r, const struct wait *w, uint64_t nap)
{
    may_cancel(r, true);
    int why = nap ? nap_us(w, nap) : wait_listener(r->call->fd, w);
    int err = errno;
    may_cancel(r, false);
    return why == W_READY ? 0 : wait_failure(why, err);
}

/* Nothing pending: the real call would have slept until a connection came.
 * So do we, in poll, holding no slot. */
static int relieve_waiting(struct relief *r)
{
    int fd = r->call->fd;
    struct wait w;
    uint64_t offer = 0; /* the lend we offered a waiting thread: queue behind it */
    bool graced = false;
    wait_start(&w, fd);
    for (;;) {
        /* ppoll and nanosleep are cancellation points, as the real accept
         * is; nothing is held across them. */
        int err;
        /* After the grace, the same connection if it is still there. */
        if (!graced || !readable_now(fd)) {
            graced = false;
            if ((err = cancellable_wait(r, &w, 0))) return fail(err);
        }

        uint64_t mine;
        int why = acquire_waiting(&mine, offer, fd, &w);
        offer = 0;
        if (why != W_READY) return fail(wait_failure(why, 0));
        /* Under the lend: no other relieving thread lends the spare for this
         * connection while our accept may be taking it with a freed slot. */
        if (!readable_now(fd)) {
            fdg_lend_release(mine);
            continue;
        }
        /* Room may have appeared: then the app simply gets the connection,
         * once the spare has its slot back (it may have been lost). */
        fdg_spare_arm();
        int conn = relief_accept(r, false);
        err = errno;
        if (conn >= 0 || (err != EMFILE && err != ENFILE)) {
            fdg_lend_release(mine);
            if (conn < 0) return fail(err);
            if (!headroom_short(conn)) return conn;
            shed(fd, conn, 0);
            continue;
        }
        if (!graced) {
            /* A thread that entered accept while there was room sleeps there
             * holding a reserved slot, and the kernel woke it for this
             * connection too; it would serve it. Give it the time to take
             * it (we only see that the connection is gone), then shed. */
            fdg_lend_release(mine);
            graced = true;
            if ((err = cancellable_wait(r, &w, GRACE_US))) return fail(err);
            continue;
        }
        graced = false;
        enum taken end = take_pending(r, false, false);
        if (end == TAKEN_OFFER) offer = fdg_lend_offer(mine);
        if (!offer) fdg_lend_release(mine);
        if (end == TAKEN_HANDED) {
            conn = hand_over(r->call, r->conn);
            if (conn != -2) return conn;
        } else if (end == TAKEN_ERROR) {
            return fail(r->err);
        } else if (end == TAKEN_NO_SLOT) {
            no_slot(r);
            if ((err = cancellable_wait(r, &w, fdg_backoff_us(backoff_attempt++))))
                return fail(err);
        }
    }
}

/* conn >= 0: accepted but under FDGUARD_HEADROOM; else the real call failed
 * with err (EMFILE/ENFILE). */
static int relieve(const struct call *call, int conn, int err, int saved_errno)
{
    struct relief r = {.call = call, .blocking = listener_blocking(call->fd), .why = err};
    /* A shed connection must not be left open by a cancellation inside
     * send or close: only the waits are cancellation points here. */
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &r.cancel_state);
    if (conn < 0)
        fdg_count(FDG_C_accept_emfile, 1);
    else
        shed(call->fd, conn, 0);
    int result, real_err = err ? err : EMFILE;
    if (!r.blocking)
        result = relieve_at_once(&r, conn >= 0, false,
                                 fdg_cfg.accept_errno ? fdg_cfg.accept_errno : real_err);
    else if (conn >= 0 || readable_now(call->fd))
        result = relieve_at_once(&r, conn >= 0, conn < 0, real_err);
    else
        result = relieve_waiting(&r);
    int e = errno;
    pthread_setcancelstate(r.cancel_state, NULL);
    if (result >= 0) {
        backoff_attempt = 0;
        e = saved_errno; /* a successful call leaves errno alone */
    }
    errno = e;
    return result;
}

static int guarded_accept(const struct call *call)
{
    int saved = errno;
    if (FDG_UNLIKELY(fdg_engage_needed())) fdg_engage_accept();
    uint64_t spawns = atomic_load(&fdg_spawn_state);
    int conn = real_accept(call);
    if (FDG_LIKELY(conn >= 0)) {
        if (FDG_UNLIKELY(fdg_cfg.headroom) && headroom_short(conn))
            return relieve(call, conn, 0, saved);
        if (FDG_UNLIKELY(backoff_attempt)) backoff_attempt = 0;
        fdg_sole_mark(conn, spawns); /* a new description: one reference */
        errno = saved;
        return conn;
    }
    int err = errno;
    switch (err) {
    case EMFILE:
    case ENFILE:
        return relieve(call, -1, err, saved);
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

/* FDGUARD_ACCEPT=off: no relief, but what it returns is sole as well. */
static int plain_accept(const struct call *call)
{
    int saved = errno;
    uint64_t spawns = atomic_load(&fdg_spawn_state);
    int conn = real_accept(call);
    if (conn >= 0) {
        fdg_sole_mark(conn, spawns);
        errno = saved;
    }
    return conn;
}

__attribute__((visibility("default"))) int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    if (!fdg_active()) return fdg_next.accept(fd, addr, len);
    struct call call = {fd, addr, len, 0, false};
    return fdg_cfg.accept ? guarded_accept(&call) : plain_accept(&call);
}

__attribute__((visibility("default"))) int accept4(int fd, struct sockaddr *addr, socklen_t *len,
                                                   int flags)
{
    if (!fdg_active()) return fdg_next.accept4(fd, addr, len, flags);
    struct call call = {fd, addr, len, flags, true};
    return fdg_cfg.accept ? guarded_accept(&call) : plain_accept(&call);
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
