/* sysno: the system call numbers of this architecture, for tests that read
 * /proc/PID/task/TID/syscall (whose first field is the number).
 *
 *   sysno NAME...
 *
 * prints each NAME's number on a line of its own. A name this architecture
 * does not have as a system call of its own (accept on i386 goes through
 * socketcall) or that this helper does not know: exit 1 with a message. */
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>

struct sysno {
    const char *name;
    long nr;
};

static const struct sysno table[] = {
#ifdef SYS_accept
    {"accept", SYS_accept},
#endif
#ifdef SYS_accept4
    {"accept4", SYS_accept4},
#endif
#ifdef SYS_msgrcv
    {"msgrcv", SYS_msgrcv},
#endif
#ifdef SYS_msgsnd
    {"msgsnd", SYS_msgsnd},
#endif
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: sysno NAME...\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        size_t k = 0;
        while (k < sizeof table / sizeof table[0] && strcmp(table[k].name, argv[i]) != 0)
            k++;
        if (k == sizeof table / sizeof table[0]) {
            fprintf(stderr,
                    "sysno: %s: not a system call of this architecture (or not in the table)\n",
                    argv[i]);
            return 1;
        }
        printf("%ld\n", table[k].nr);
    }
    return 0;
}
