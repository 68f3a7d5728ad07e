/* tool_ipc: creates or uses System V IPC objects, for the fdguard ipc tests.
 *
 *   tool_ipc --ready FILE [--kinds shm,sem,msg] [--key K] [--mode OCTAL] [--attach]
 *            [--setuid UID]
 *   tool_ipc --ready FILE --use shm:ID|sem:ID|msg:ID|msg-fill:ID|msg-recv:ID|msg-send:ID
 *            [--setuid UID]
 *
 * Create mode: one object of each kind in --kinds (default all three), with
 * key K, K+1, K+2 (default IPC_PRIVATE; a key already in use is an error),
 * mode 0600 (or --mode). The segment is attached
 * and detached again (nattch 0, lpid = us) unless --attach keeps it attached;
 * the semaphore set gets one semop and the queue one message, so their last
 * user is us too. --setuid drops to UID (and its gid) first, so the objects
 * belong to another user. Use mode: attach the segment, semop on the set, or
 * send a message to the queue, as a live user of an object someone else made;
 * msg-fill sends until the queue is full; msg-recv and msg-send write FILE and
 * then block in msgrcv (for a type nobody sends) or msgsnd (on a full queue):
 * a waiter that neither lspid nor lrpid shows. SIGTERM ends those at once.
 *
 * FILE then gets one line per object, "KIND ID", in a single write; the
 * program waits for a signal. SIGTERM removes what it created (a clean
 * shutdown); SIGKILL leaves the objects behind, which is what fdguard ipc is
 * for. Exit status 2 on usage errors, 1 when an object cannot be made. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

#include "common.h"

struct msgbuf1 {
    long mtype;
    char mtext[8];
};

static void usage(void)
{
    fprintf(stderr, "usage: tool_ipc --ready FILE [--kinds shm,sem,msg] [--key K] [--mode OCTAL]\n"
                    "                [--attach] [--setuid UID]\n"
                    "       tool_ipc --ready FILE --use shm:ID|sem:ID|msg:ID|msg-fill:ID|\n"
                    "                msg-recv:ID|msg-send:ID [--setuid UID]\n");
    exit(2);
}

static void fail(const char *what)
{
    fprintf(stderr, "tool_ipc: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int created[3] = {-1, -1, -1}; /* shm, sem, msg */

static void remove_created(void)
{
    if (created[0] >= 0) shmctl(created[0], IPC_RMID, NULL);
    if (created[1] >= 0) semctl(created[1], 0, IPC_RMID);
    if (created[2] >= 0) msgctl(created[2], IPC_RMID, NULL);
}

/* msg-recv, msg-send: blocks on the queue until killed. */
static void wait_on(const char *spec, int id)
{
    struct msgbuf1 m = {.mtype = 1, .mtext = "wait"};
    if (strncmp(spec, "msg-recv:", 9) == 0)
        msgrcv(id, &m, sizeof m.mtext, 0x7ffffffe, 0);
    else
        msgsnd(id, &m, sizeof m.mtext, 0);
    fail("the wait on the queue ended");
}

static int use(const char *spec)
{
    long id;
    const char *colon = strchr(spec, ':');
    if (colon == NULL || !parse_long(colon + 1, 0, 0x7fffffff, &id)) usage();
    if (strncmp(spec, "msg-recv:", 9) == 0 || strncmp(spec, "msg-send:", 9) == 0) {
        /* Nothing to do before the ready file: the wait comes after it. */
    } else if (strncmp(spec, "msg-fill:", 9) == 0) {
        struct msgbuf1 m = {.mtype = 1, .mtext = "fill"};
        while (msgsnd((int)id, &m, sizeof m.mtext, IPC_NOWAIT) == 0)
            ;
        if (errno != EAGAIN) fail("msgsnd");
    } else if (strncmp(spec, "shm:", 4) == 0) {
        if (shmat((int)id, NULL, 0) == (void *)-1) fail("shmat");
    } else if (strncmp(spec, "sem:", 4) == 0) {
        struct sembuf op = {.sem_num = 0, .sem_op = 1, .sem_flg = 0};
        if (semop((int)id, &op, 1) < 0) fail("semop");
    } else if (strncmp(spec, "msg:", 4) == 0) {
        struct msgbuf1 m = {.mtype = 1, .mtext = "use"};
        if (msgsnd((int)id, &m, 4, IPC_NOWAIT) < 0) fail("msgsnd");
    } else {
        usage();
    }
    return (int)id;
}

int main(int argc, char **argv)
{
    const char *ready = NULL, *kinds = "shm,sem,msg", *use_spec = NULL;
    long key = IPC_PRIVATE, uid = -1;
    int attach = 0, flags = IPC_CREAT | 0600;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--attach") == 0) {
            attach = 1;
            continue;
        }
        if (v == NULL) usage();
        i++;
        if (strcmp(a, "--ready") == 0)
            ready = v;
        else if (strcmp(a, "--kinds") == 0)
            kinds = v;
        else if (strcmp(a, "--use") == 0)
            use_spec = v;
        else if (strcmp(a, "--key") == 0) {
            if (!parse_long(v, 1, 0x7ffffff0, &key)) usage();
        } else if (strcmp(a, "--mode") == 0) {
            char *end;
            long mode = strtol(v, &end, 8);
            if (*v == '\0' || *end != '\0' || mode < 0 || mode > 0777) usage();
            flags = IPC_CREAT | (int)mode;
        } else if (strcmp(a, "--setuid") == 0) {
            if (!parse_long(v, 1, 0x7fffffff, &uid)) usage();
        } else
            usage();
    }
    if (ready == NULL) usage();
    if (key != IPC_PRIVATE) flags |= IPC_EXCL;

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &sigs, NULL);

    /* Opened before dropping privileges: FILE is in a directory of the caller. */
    int rfd = open(ready, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (rfd < 0) fail(ready);
    if (uid > 0) {
        if (setgroups(0, NULL) < 0 || setgid((gid_t)uid) < 0 || setuid((uid_t)uid) < 0)
            fail("setuid");
    }

    char text[256];
    size_t len = 0;
    if (use_spec != NULL) {
        int id = use(use_spec);
        len = (size_t)snprintf(text, sizeof text, "%.3s %d\n", use_spec, id);
        if (strncmp(use_spec, "msg-recv:", 9) == 0 || strncmp(use_spec, "msg-send:", 9) == 0) {
            if (!write_all(rfd, text, len) || close(rfd) < 0) fail("write ready file");
            sigprocmask(SIG_UNBLOCK, &sigs, NULL);
            wait_on(use_spec, id);
        }
    } else {
        if (strstr(kinds, "shm") != NULL) {
            int id = shmget((key_t)key, 4096, flags);
            if (id < 0) fail("shmget");
            created[0] = id;
            void *p = shmat(id, NULL, 0);
            if (p == (void *)-1) fail("shmat");
            if (!attach) shmdt(p);
            len += (size_t)snprintf(text + len, sizeof text - len, "shm %d\n", id);
        }
        if (strstr(kinds, "sem") != NULL) {
            int id = semget(key == IPC_PRIVATE ? IPC_PRIVATE : (key_t)(key + 1), 2, flags);
            if (id < 0) fail("semget");
            created[1] = id;
            struct sembuf op = {.sem_num = 0, .sem_op = 1, .sem_flg = 0};
            if (semop(id, &op, 1) < 0) fail("semop");
            len += (size_t)snprintf(text + len, sizeof text - len, "sem %d\n", id);
        }
        if (strstr(kinds, "msg") != NULL) {
            int id = msgget(key == IPC_PRIVATE ? IPC_PRIVATE : (key_t)(key + 2), flags);
            if (id < 0) fail("msgget");
            created[2] = id;
            struct msgbuf1 m = {.mtype = 1, .mtext = "left"};
            if (msgsnd(id, &m, 5, IPC_NOWAIT) < 0) fail("msgsnd");
            len += (size_t)snprintf(text + len, sizeof text - len, "msg %d\n", id);
        }
    }
    if (!write_all(rfd, text, len) || close(rfd) < 0) fail("write ready file");

    int sig;
    sigwait(&sigs, &sig);
    remove_created();
    return 0;
}
