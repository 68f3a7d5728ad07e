/* A test plugin for tests/dlopen.bats, compiled at test time:
 *   -DVALUE=N       what plug_value() returns (tells copies apart)
 *   -DBIG=BYTES     a zero-filled array of that size (a large mapping, for
 *                   the RLIMIT_AS test)
 *   -DRODATA=BYTES  a constant array of that size, in the file (a large
 *                   file-backed mapping: what a detach copies)
 *   -DTLS=BYTES     a thread-local array of that size; with -DTLS_IE in the
 *                   initial-exec model (static TLS: DF_STATIC_TLS)
 *   -DCTOR_DLOPEN=\"name\"  its constructor dlopens that name (a failure whose
 *                   message glibc leaves for the host's dlerror())
 * plug_call() calls plug_value() through the PLT (an interposable call, as
 * -fPIC code makes it), so the global scope decides which definition runs.
 * Its constructor and destructor count themselves in the host's counters,
 * whose address dltest passes in DLTEST_HOOK (hexadecimal): the counts must
 * outlive the plugin, and the helper exports no symbols to it. */
#include <stdint.h>
#include <stdlib.h>
#ifdef CTOR_DLOPEN
#include <dlfcn.h>
#endif

#ifndef VALUE
#define VALUE 0
#endif

static long *hook(int which)
{
    const char *s = getenv("DLTEST_HOOK");
    if (!s || !*s) return NULL;
    return (long *)(uintptr_t)strtoull(s, NULL, 16) + which;
}

__attribute__((constructor)) static void plug_ctor(void)
{
    long *n = hook(0);
    if (n) ++*n;
#ifdef CTOR_DLOPEN
    dlopen(CTOR_DLOPEN, RTLD_NOW);
#endif
}

__attribute__((destructor)) static void plug_dtor(void)
{
    long *n = hook(1);
    if (n) ++*n;
}

#ifdef BIG
char plug_big[BIG];
#endif
#ifdef RODATA
const char plug_rodata[RODATA] = {1};
#endif
#ifdef TLS
#ifdef TLS_IE
__attribute__((tls_model("initial-exec")))
#endif
__thread char plug_tls[TLS];
#endif

int plug_value(void)
{
#ifdef TLS
    plug_tls[TLS - 1] = 1; /* the block is there, for this thread */
#endif
#ifdef BIG
    return VALUE + plug_big[BIG - 1];
#else
    return VALUE;
#endif
}

int plug_call(void)
{
    return plug_value();
}
