/* A test plugin for tests/dlopen.bats whose constructor and destructor
 * write their backtrace (glibc's backtrace_symbols_fd: one "object(symbol
 * +offset) [address]" line per frame) to the descriptor in DLTEST_BT_FD,
 * each block after a "ctor" or "dtor" line. */
#include <execinfo.h>
#include <stdlib.h>
#include <unistd.h>

static void dump(const char *what)
{
    const char *s = getenv("DLTEST_BT_FD");
    if (!s) return;
    int fd = atoi(s);
    void *frames[64];
    int n = backtrace(frames, 64);
    if (write(fd, what, 5) != 5) return;
    backtrace_symbols_fd(frames, n, fd);
}

__attribute__((constructor)) static void bt_ctor(void)
{
    dump("ctor\n");
}

__attribute__((destructor)) static void bt_dtor(void)
{
    dump("dtor\n");
}

int plug_value(void)
{
    return 42;
}
