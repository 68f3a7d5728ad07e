/* dltest: dlopen scenarios for tests/dlopen.bats.
 *
 *   dltest SCENARIO ARGS...
 *
 * Every scenario prints stable result lines (key=value, one per line) on
 * stdout, so that the suite can compare a run under the shim with a run
 * without it, line for line. Exit 0 when the scenario ran (whatever its
 * result), 2 on a usage or setup error.
 *
 * The test plugins (tests/dlplug/plug.c) count their constructors and
 * destructors in this program's `events`, whose address travels to them in
 * DLTEST_HOOK. Plugins export plug_value(); tests/dlplug/caller.c exports
 * caller_open() so that a library, not this program, calls dlopen.
 *
 * The loader resolves a dlopen from its return address, and the shim keys its
 * cache on it: every dlopen below is made from a known site. open_a is the
 * site of every repeated open/close cycle; open_b is another site in the same
 * object. Neither may be inlined, merged or turned into a tail call.
 *
 * `dltest noexecmem SCENARIO ARGS...` runs SCENARIO under a seccomp filter
 * that refuses mprotect(PROT_EXEC) (refuse_execmem). */
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long events[2]; /* constructors, destructors of test plugins */
#define CTORS events[0]
#define DTORS events[1]

__attribute__((noreturn)) static void die(const char *what)
{
    fprintf(stderr, "dltest: %s\n", what);
    exit(2);
}

__attribute__((noinline)) static void *open_a(const char *name, int mode)
{
    void *handle = dlopen(name, mode);
    __asm__ volatile("" ::: "memory");
    return handle;
}

__attribute__((noinline)) static void *open_b(const char *name, int mode)
{
    __asm__ volatile("" ::: "memory");
    void *handle = dlopen(name, mode);
    __asm__ volatile("" ::: "memory");
    return handle;
}

/* A site used once per scenario: it never opened anything before. */
__attribute__((noinline)) static void *open_c(const char *name, int mode)
{
    __asm__ volatile("nop" ::: "memory");
    void *handle = dlopen(name, mode);
    __asm__ volatile("" ::: "memory");
    return handle;
}

static void close_or_die(void *handle)
{
    if (dlclose(handle) != 0) {
        fprintf(stderr, "dltest: dlclose: %s\n", dlerror());
        exit(2);
    }
}

/* The pending dlerror() text, consumed, or "NULL". */
static const char *error_text(void)
{
    const char *msg = dlerror();
    return msg ? msg : "NULL";
}

static int plug_value(void *handle)
{
    int (*fn)(void) = (int (*)(void))dlsym(handle, "plug_value");
    if (!fn) die("plug_value not found in the opened object");
    return fn();
}

static long lmid_of(void *handle)
{
    Lmid_t lmid = -1;
    if (dlinfo(handle, RTLD_DI_LMID, &lmid) != 0) die("dlinfo(RTLD_DI_LMID) failed");
    return (long)lmid;
}

static const char *path_of(void *handle)
{
    struct link_map *map = NULL;
    if (dlinfo(handle, RTLD_DI_LINKMAP, &map) != 0 || !map) die("dlinfo(RTLD_DI_LINKMAP) failed");
    return map->l_name;
}

/* One result: the value and the file the loader picked, or its message. */
static void report(const char *label, void *handle)
{
    if (handle)
        printf("%s: value=%d path=%s\n", label, plug_value(handle), path_of(handle));
    else
        printf("%s: error=%s\n", label, error_text());
}

static const char *null_or_handle(const void *handle)
{
    return handle ? "handle" : "NULL";
}

/* Lines of /proc/self/maps, and how many of them map `path`. */
static void maps(const char *path, long *lines, long *mapping)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f) die("cannot read /proc/self/maps");
    char buf[4096];
    size_t plen = path ? strlen(path) : 0;
    *lines = 0;
    if (mapping) *mapping = 0;
    while (fgets(buf, sizeof buf, f)) {
        ++*lines;
        char *at = path ? strstr(buf, path) : NULL;
        if (at && mapping && (at[plen] == '\n' || at[plen] == ' ')) ++*mapping;
    }
    fclose(f);
}

static long mapped(const char *path)
{
    long lines, n;
    maps(path, &lines, &n);
    return n;
}

/* Is an object of that (absolute) path in the loader's list? Under the
 * shim's keep mode an idle object is loaded but no longer mapped from its
 * file (README: dlopen caching in detail). */
static int is_loaded(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    char real[4096];
    return info->dlpi_name[0] && realpath(info->dlpi_name, real) && !strcmp(real, arg);
}

static const char *loaded(const char *abs)
{
    return dl_iterate_phdr(is_loaded, (void *)abs) ? "yes" : "no";
}

/* An absolute path, as /proc/self/maps shows the file. */
static const char *absolute(const char *path)
{
    static char buf[8][4096];
    static int next;
    char *out = buf[next++ % 8];
    if (!realpath(path, out)) die("realpath failed");
    return out;
}

static long parse_num(const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < min || v > max) die("bad number");
    return v;
}

/* ---- resolution: who calls decides where the loader looks ---------------- */

/* open NAME...: this program calls dlopen(NAME, RTLD_NOW) for each. */
static int sc_open(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        void *h = open_a(argv[i], RTLD_NOW);
        report(argv[i], h);
    }
    return 0;
}

/* cycle NAME...: for each in turn, dlopen(NAME, RTLD_NOW), call, dlclose. */
static int sc_cycle(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        void *h = open_a(argv[i], RTLD_NOW);
        report(argv[i], h);
        if (h) close_or_die(h);
    }
    return 0;
}

typedef void *(*caller_open_fn)(const char *, int);
typedef int (*caller_close_fn)(void *);

static void *load_caller(const char *path, caller_open_fn *open_fn, caller_close_fn *close_fn)
{
    void *lib = open_b(path, RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "dltest: %s: %s\n", path, dlerror());
        exit(2);
    }
    *open_fn = (caller_open_fn)dlsym(lib, "caller_open");
    if (close_fn) *close_fn = (caller_close_fn)dlsym(lib, "caller_close");
    if (!*open_fn || (close_fn && !*close_fn)) die("caller_open/caller_close not found");
    return lib;
}

/* via CALLER NAME...: the library CALLER calls dlopen(NAME, RTLD_NOW). */
static int sc_via(int argc, char **argv)
{
    if (argc < 2) die("usage: via CALLER NAME...");
    caller_open_fn copen;
    load_caller(argv[0], &copen, NULL);
    for (int i = 1; i < argc; i++)
        report(argv[i], copen(argv[i], RTLD_NOW));
    return 0;
}

/* who CALLER NAME [after]: this program, then the library CALLER, then
 * this program again while the library holds the object; with `after`, once
 * more after the library closed it. Only the library's search path finds
 * NAME. */
static int sc_who(int argc, char **argv)
{
    if (argc != 2 && !(argc == 3 && !strcmp(argv[2], "after")))
        die("usage: who CALLER NAME [after]");
    caller_open_fn copen;
    caller_close_fn cclose;
    load_caller(argv[0], &copen, &cclose);
    const char *name = argv[1];
    void *h = open_a(name, RTLD_NOW);
    report("main", h);
    if (h) close_or_die(h);
    h = copen(name, RTLD_NOW);
    report("library", h);
    void *again = open_a(name, RTLD_NOW);
    printf("main while the library holds it: %s\n", null_or_handle(again));
    if (again)
        close_or_die(again);
    else
        error_text();
    if (h && cclose(h) != 0) die("caller_close failed");
    if (argc == 3) {
        h = open_a(name, RTLD_NOW);
        report("main after the library closed it", h);
        if (h) close_or_die(h);
    }
    return 0;
}

typedef void *(*caller_open_with_fn)(void *(*)(const char *, int), const char *, int);

/* ns CALLER NAME [fp]: CALLER loaded with dlmopen(LM_ID_NEWLM) calls
 * dlopen(NAME): the object must land in CALLER's namespace. CALLER calls
 * its own namespace's dlopen, or with `fp` this program's (the shim's when
 * it is preloaded) through a function pointer. */
static int sc_ns(int argc, char **argv)
{
    if (argc != 2 && !(argc == 3 && !strcmp(argv[2], "fp"))) die("usage: ns CALLER NAME [fp]");
    void *lib = dlmopen(LM_ID_NEWLM, argv[0], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "dltest: dlmopen %s: %s\n", argv[0], dlerror());
        return 2;
    }
    caller_open_fn copen = (caller_open_fn)dlsym(lib, "caller_open");
    caller_open_with_fn copen_with = (caller_open_with_fn)dlsym(lib, "caller_open_with");
    if (!copen || !copen_with) die("caller_open/caller_open_with not found");
    long caller_ns = lmid_of(lib);
    printf("caller namespace: %s\n", caller_ns == LM_ID_BASE ? "base" : "new");
    void *h = argc == 3 ? copen_with(dlopen, argv[1], RTLD_NOW) : copen(argv[1], RTLD_NOW);
    if (!h) {
        printf("opened: error=%s\n", error_text());
        return 0;
    }
    long ns = lmid_of(h);
    printf("opened: value=%d path=%s\n", plug_value(h), path_of(h));
    printf("opened object's namespace: %s\n", ns == caller_ns    ? "the caller's"
                                              : ns == LM_ID_BASE ? "base"
                                                                 : "another");
    /* The same file is not loaded in the base namespace. */
    void *base = open_a(path_of(h), RTLD_NOW | RTLD_NOLOAD);
    printf("in the base namespace too: %s\n", null_or_handle(base));
    return 0;
}

/* null: dlopen(NULL) is the main program. */
static int sc_null(void)
{
    void *h1 = open_a(NULL, RTLD_NOW);
    void *h2 = open_b(NULL, RTLD_LAZY);
    if (!h1 || !h2) {
        printf("dlopen(NULL): error=%s\n", error_text());
        return 0;
    }
    printf("dlopen(NULL) twice: %s\n", h1 == h2 ? "same handle" : "different handles");
    printf("its link map: %s, namespace %ld\n", path_of(h1)[0] ? path_of(h1) : "the main program",
           lmid_of(h1));
    printf("dlsym(it, \"dlopen\"): %s\n", dlsym(h1, "dlopen") ? "found" : "NULL");
    printf("dlclose: %d %d\n", dlclose(h1), dlclose(h2));
    return 0;
}

/* ---- loader state: RTLD_GLOBAL, RTLD_NODELETE, RTLD_NOLOAD, counts ------- */

static const char *visible(void)
{
    dlerror();
    return dlsym(RTLD_DEFAULT, "plug_value") ? "visible" : "not visible";
}

/* global PLUG: RTLD_LOCAL, then a reopen with RTLD_GLOBAL (and one with
 * RTLD_NOLOAD|RTLD_GLOBAL from the other site) promotes. */
static int sc_global(int argc, char **argv)
{
    if (argc != 1) die("usage: global PLUG");
    void *h = open_a(argv[0], RTLD_NOW | RTLD_LOCAL);
    if (!h) die(dlerror());
    printf("RTLD_LOCAL: plug_value %s to dlsym(RTLD_DEFAULT)\n", visible());
    void *g = open_a(argv[0], RTLD_NOW | RTLD_GLOBAL);
    printf("reopen RTLD_GLOBAL: %s, plug_value %s\n", h == g ? "same handle" : "other handle",
           visible());
    void *n = open_b(argv[0], RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
    printf("RTLD_NOLOAD|RTLD_GLOBAL: %s\n", n == h ? "same handle" : null_or_handle(n));
    if (n) close_or_die(n);
    close_or_die(g);
    printf("after one close: plug_value %s\n", visible());
    close_or_die(h);
    return 0;
}

/* global2 PLUG: promotion by RTLD_NOLOAD|RTLD_GLOBAL (the idiom), from the
 * open's own site. */
static int sc_global2(int argc, char **argv)
{
    if (argc != 1) die("usage: global2 PLUG");
    void *h = open_a(argv[0], RTLD_NOW);
    if (!h) die(dlerror());
    printf("RTLD_LOCAL: plug_value %s\n", visible());
    void *n = open_a(argv[0], RTLD_LAZY | RTLD_NOLOAD | RTLD_GLOBAL);
    printf("RTLD_NOLOAD|RTLD_GLOBAL: %s, plug_value %s\n", n == h ? "same handle" : "other",
           visible());
    if (n) close_or_die(n);
    close_or_die(h);
    return 0;
}

/* nodelete PLUG: open, reopen with RTLD_NODELETE, close both: the object
 * stays (no destructor, still mapped, RTLD_NOLOAD finds it). */
static int sc_nodelete(int argc, char **argv)
{
    if (argc != 1) die("usage: nodelete PLUG");
    const char *abs = absolute(argv[0]);
    void *h = open_a(argv[0], RTLD_NOW);
    if (!h) die(dlerror());
    void *k = open_a(argv[0], RTLD_NOW | RTLD_NODELETE);
    printf("reopen RTLD_NODELETE: %s\n", k == h ? "same handle" : null_or_handle(k));
    close_or_die(k);
    close_or_die(h);
    printf("after both closes: ctors=%ld dtors=%ld mapped=%s\n", CTORS, DTORS,
           mapped(abs) ? "yes" : "no");
    void *n = open_a(argv[0], RTLD_NOW | RTLD_NOLOAD);
    printf("RTLD_NOLOAD: %s\n", n == h ? "same handle" : null_or_handle(n));
    if (n) close_or_die(n);
    n = open_c(argv[0], RTLD_NOW | RTLD_NOLOAD);
    printf("RTLD_NOLOAD (a site that never opened it): %s\n",
           n == h ? "same handle" : null_or_handle(n));
    if (n) close_or_die(n);
    return 0;
}

/* noload PLUG: RTLD_NOLOAD before any open, while held, after the last
 * close (from both sites); of a library the program always has (libc). */
static int sc_noload(int argc, char **argv)
{
    if (argc != 1) die("usage: noload PLUG");
    void *n = open_a(argv[0], RTLD_NOW | RTLD_NOLOAD);
    printf("before any open: %s, dlerror %s\n", null_or_handle(n), error_text());
    void *h = open_a(argv[0], RTLD_NOW);
    if (!h) die(dlerror());
    n = open_a(argv[0], RTLD_NOW | RTLD_NOLOAD);
    printf("while held (same site): %s\n", n == h ? "same handle" : null_or_handle(n));
    if (n) close_or_die(n);
    n = open_b(argv[0], RTLD_NOW | RTLD_NOLOAD);
    printf("while held (other site): %s\n", n == h ? "same handle" : null_or_handle(n));
    if (n) close_or_die(n);
    close_or_die(h);
    n = open_a(argv[0], RTLD_NOW | RTLD_NOLOAD);
    printf("after the last close (same site): %s, dlerror %s\n", null_or_handle(n), error_text());
    if (n) close_or_die(n);
    n = open_b(argv[0], RTLD_NOW | RTLD_NOLOAD);
    printf("after the last close (other site): %s\n", null_or_handle(n));
    if (n) close_or_die(n);
    n = open_c(argv[0], RTLD_NOW | RTLD_NOLOAD);
    printf("after the last close (a site that never opened it): %s\n", null_or_handle(n));
    if (n) close_or_die(n);
    printf("ctors=%ld\n", CTORS);
    return 0;
}

/* noload_global PLUG: open RTLD_LOCAL, close, then the promotion idiom
 * RTLD_NOLOAD|RTLD_GLOBAL: nothing is loaded any more. */
static int sc_noload_global(int argc, char **argv)
{
    if (argc != 1) die("usage: noload_global PLUG");
    void *h = open_a(argv[0], RTLD_NOW);
    if (!h) die(dlerror());
    close_or_die(h);
    void *n = open_a(argv[0], RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
    printf("RTLD_NOLOAD|RTLD_GLOBAL after the last close: %s\n", null_or_handle(n));
    printf("plug_value %s\n", visible());
    if (n) close_or_die(n);
    return 0;
}

/* global_leak A B: A opened RTLD_GLOBAL and closed; then B, whose
 * plug_call() calls plug_value() through its PLT: the global scope comes
 * first, so while A is in it, B's call binds to A's definition. After A's
 * last close it must be B's own. (No dlsym(RTLD_DEFAULT) here: a lookup from
 * the main program that binds to A would make A undeletable.) */
static int sc_global_leak(int argc, char **argv)
{
    if (argc != 2) die("usage: global_leak A B");
    void *a = open_a(argv[0], RTLD_NOW | RTLD_GLOBAL);
    if (!a) die(dlerror());
    close_or_die(a);
    void *b = open_b(argv[1], RTLD_NOW);
    if (!b) die(dlerror());
    int (*call)(void) = (int (*)(void))dlsym(b, "plug_call");
    if (!call) die("plug_call not found");
    printf("B's plug_value() as B's own code calls it: %d (B's own: %d)\n", call(), plug_value(b));
    close_or_die(b);
    return 0;
}

/* noload_libc: libc is loaded for the life of the program; the app opening
 * and closing it does not change that. */
static int sc_noload_libc(void)
{
    void *h = open_a("libc.so.6", RTLD_NOW);
    if (!h) die(dlerror());
    close_or_die(h);
    void *n = open_a("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    printf("libc.so.6 RTLD_NOLOAD after open+close: %s\n", null_or_handle(n));
    if (n) close_or_die(n);
    return 0;
}

/* refs PLUG N [OTHER]: N opens (alternating sites), N closes; then, if
 * OTHER is given, one open and close of OTHER (with FDGUARD_DLOPEN_KEEP=1
 * that evicts PLUG from a keep cache: only balanced counts unload it). */
static int sc_refs(int argc, char **argv)
{
    if (argc != 2 && argc != 3) die("usage: refs PLUG N [OTHER]");
    const char *abs = absolute(argv[0]);
    long n = parse_num(argv[1], 1, 1000000);
    void **h = calloc((size_t)n, sizeof *h);
    if (!h) die("out of memory");
    for (long i = 0; i < n; i++)
        if (!(h[i] = (i % 2 ? open_b : open_a)(argv[0], RTLD_NOW))) die(dlerror());
    for (long i = 1; i < n; i++)
        if (h[i] != h[0]) die("different handles for one object");
    printf("opened %ld times: ctors=%ld\n", n, CTORS);
    for (long i = 0; i < n; i++) {
        close_or_die(h[i]);
        if (i == n - 2) printf("one reference left: dtors=%ld loaded=%s\n", DTORS, loaded(abs));
    }
    printf("closed %ld times: dtors=%ld loaded=%s mapped=%s\n", n, DTORS, loaded(abs),
           mapped(abs) ? "yes" : "no");
    if (argc == 3) {
        void *o = open_b(argv[2], RTLD_NOW);
        if (!o) die(dlerror());
        close_or_die(o);
        printf("after another object's open+close: dtors=%ld loaded=%s\n", DTORS, loaded(abs));
    }
    free(h);
    return 0;
}

/* ---- errors ---------------------------------------------------------------- */

/* dlerror NAME...: each fails; the message is read twice. */
static int sc_dlerror(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        void *h = open_a(argv[i], RTLD_NOW);
        printf("%s: %s\n", argv[i], null_or_handle(h));
        printf("  first dlerror: %s\n", error_text());
        printf("  second dlerror: %s\n", error_text());
        if (h) close_or_die(h);
    }
    return 0;
}

/* dlerror_clear PLUG BAD: a failure whose message nobody reads, then a
 * successful dlopen: glibc clears the pending message at the start of every
 * dlopen, so dlerror() then returns NULL. The second open is of an object the
 * program already holds (a cache hit under the shim). */
static int sc_dlerror_clear(int argc, char **argv)
{
    if (argc != 2) die("usage: dlerror_clear PLUG BAD");
    void *held = open_a(argv[0], RTLD_NOW);
    if (!held) die("PLUG failed");
    for (int round = 1; round <= 2; round++) {
        if (open_b(argv[1], RTLD_NOW)) die("BAD opened");
        void *h = open_a(argv[0], RTLD_NOW);
        if (!h) die("PLUG failed");
        printf("round %d: dlerror after a successful dlopen: %s\n", round, error_text());
        close_or_die(h);
    }
    close_or_die(held);
    return 0;
}

/* dlerror_close PLUG BAD: every successful dlclose and dlopen clears a
 * pending message (glibc's _dlerror_run), also when the cache answers it: a
 * close that is not the last, the last close, RTLD_NOLOAD after it. errno
 * is what it was. */
static int sc_dlerror_close(int argc, char **argv)
{
    if (argc != 2) die("usage: dlerror_close PLUG BAD");
    void *h1 = open_a(argv[0], RTLD_NOW);
    void *h2 = open_a(argv[0], RTLD_NOW);
    if (!h1 || h2 != h1) die("PLUG failed");
    if (open_b(argv[1], RTLD_NOW)) die("BAD opened");
    errno = 1234;
    int r = dlclose(h2);
    printf("dlclose (not the last): %d, errno %d, dlerror %s\n", r, errno, error_text());
    if (open_b(argv[1], RTLD_NOW)) die("BAD opened");
    errno = 1234;
    r = dlclose(h1);
    printf("dlclose (the last): %d, errno %d, dlerror %s\n", r, errno, error_text());
    if (open_b(argv[1], RTLD_NOW)) die("BAD opened");
    errno = 1234;
    void *n = open_a(argv[0], RTLD_NOW | RTLD_NOLOAD);
    printf("RTLD_NOLOAD after it: %s, errno %d, dlerror %s\n", null_or_handle(n), errno,
           error_text());
    errno = 1234;
    h1 = open_a(argv[0], RTLD_NOW);
    int e = errno;
    printf("reopened: %s, errno %d, dlerror %s\n", null_or_handle(h1), e, error_text());
    if (h1) close_or_die(h1);
    return 0;
}

/* ---- mode checks ----------------------------------------------------------- */

/* modes PLUG: glibc's answers to invalid modes, whether PLUG is held (a
 * cache hit under the shim), closed, or never opened at that site. */
static void try_modes(const char *when, const char *plug)
{
    static const struct {
        const char *name;
        int mode;
    } modes[] = {
        {"0", 0},
        {"RTLD_NOLOAD", RTLD_NOLOAD},
        {"RTLD_GLOBAL", RTLD_GLOBAL},
        {"RTLD_NOLOAD|RTLD_NODELETE", RTLD_NOLOAD | RTLD_NODELETE},
        {"RTLD_NOW|0x80000", RTLD_NOW | 0x80000},
        {"RTLD_LAZY|0x10", RTLD_LAZY | 0x10},
    };
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        void *h = open_a(plug, modes[i].mode);
        printf("%s, mode %s: %s, dlerror %s\n", when, modes[i].name, null_or_handle(h),
               error_text());
        if (h) close_or_die(h);
    }
}

static int sc_modes(int argc, char **argv)
{
    if (argc != 1) die("usage: modes PLUG");
    try_modes("never opened", argv[0]);
    void *h = open_a(argv[0], RTLD_NOW);
    if (!h) die(dlerror());
    try_modes("held", argv[0]);
    close_or_die(h);
    try_modes("closed", argv[0]);
    printf("ctors=%ld\n", CTORS);
    return 0;
}

/* lazy_now UNDEF: an object with an undefined function loads with
 * RTLD_LAZY; after its last close, RTLD_NOW must load it afresh, and fail. */
static int sc_lazy_now(int argc, char **argv)
{
    if (argc != 1) die("usage: lazy_now UNDEF");
    void *h = open_a(argv[0], RTLD_LAZY);
    printf("RTLD_LAZY: %s\n", h ? "handle" : error_text());
    if (h) close_or_die(h);
    h = open_a(argv[0], RTLD_NOW);
    printf("then RTLD_NOW: %s\n", h ? "handle" : error_text());
    if (h) close_or_die(h);
    h = open_a(argv[0], RTLD_LAZY);
    printf("then RTLD_LAZY again: %s\n", h ? "handle" : error_text());
    if (h) close_or_die(h);
    return 0;
}

/* ---- churn and hot reload -------------------------------------------------- */

/* churn PLUG N: N cycles of open, call, close at one site; /proc/self/maps
 * is counted after the first cycle, every 20th and the last. */
static int sc_churn(int argc, char **argv)
{
    if (argc != 2) die("usage: churn PLUG N");
    long n = parse_num(argv[1], 1, 10000000);
    long first = 0, last = 0, max = 0, sum = 0;
    for (long i = 0; i < n; i++) {
        void *h = open_a(argv[0], RTLD_NOW);
        if (!h) {
            printf("cycle %ld: error=%s\n", i, error_text());
            return 0;
        }
        sum += plug_value(h);
        close_or_die(h);
        if (i % 20 == 0 || i == n - 1) {
            maps(NULL, &last, NULL);
            if (i == 0) first = last;
            if (last > max) max = last;
        }
    }
    printf("cycles=%ld value_sum=%ld\n", n, sum);
    printf("ctors=%ld dtors=%ld\n", CTORS, DTORS);
    printf("maps_first=%ld maps_last=%ld maps_max=%ld\n", first, last, max);
    return 0;
}

/* reload PATH NEW...: open, call, close PATH; then for each NEW, rename it
 * over PATH (an atomic replacement, as deploy tools do) and cycle again. */
static int sc_reload(int argc, char **argv)
{
    if (argc < 2) die("usage: reload PATH NEW...");
    const char *abs = absolute(argv[0]);
    for (int i = 0; i < argc; i++) {
        if (i > 0 && rename(argv[i], argv[0]) != 0) die("rename failed");
        void *h = open_a(argv[0], RTLD_NOW);
        if (!h) {
            printf("cycle %d: error=%s\n", i, error_text());
            return 0;
        }
        printf("cycle %d: value=%d\n", i, plug_value(h));
        close_or_die(h);
    }
    long lines, deleted = 0;
    char gone[4200];
    snprintf(gone, sizeof gone, "%s (deleted)", abs);
    maps(gone, &lines, &deleted);
    printf("replaced copies still mapped: %ld\n", deleted);
    return 0;
}

/* reload_global PATH NEW: open and close PATH (RTLD_LOCAL), rename NEW
 * over it, reopen with RTLD_GLOBAL: the new file is what runs. */
static int sc_reload_global(int argc, char **argv)
{
    if (argc != 2) die("usage: reload_global PATH NEW");
    void *h = open_a(argv[0], RTLD_NOW);
    if (!h) die(dlerror());
    printf("RTLD_LOCAL: value=%d\n", plug_value(h));
    close_or_die(h);
    if (rename(argv[1], argv[0]) != 0) die("rename failed");
    h = open_a(argv[0], RTLD_NOW | RTLD_GLOBAL);
    if (!h) die(dlerror());
    printf("replaced, reopened RTLD_GLOBAL: value=%d\n", plug_value(h));
    close_or_die(h);
    return 0;
}

/* Writes the bytes of FROM into TO's own inode, as cp does: truncate, then
 * write. A mapping of TO now shows the new bytes. */
static void overwrite_in_place(const char *to, const char *from)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (in < 0 || out < 0) die("overwrite: open failed");
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n) die("overwrite: short write");
    if (n < 0 || close(in) != 0 || close(out) != 0) die("overwrite failed");
}

/* overwrite PLUG FILE NEW reopen|exit: open, call, close PLUG; write NEW
 * over FILE (PLUG itself, or a library PLUG depends on) in place; then
 * reopen PLUG (the new file must run) or just exit (the process must exit
 * 0: whatever runs at exit runs from intact pages). */
static int sc_overwrite(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[3], "reopen") && strcmp(argv[3], "exit")))
        die("usage: overwrite PLUG FILE NEW reopen|exit");
    void *h = open_a(argv[0], RTLD_NOW);
    if (!h) die(dlerror());
    printf("before: value=%d\n", plug_value(h));
    close_or_die(h);
    overwrite_in_place(argv[1], argv[2]);
    printf("overwritten in place\n");
    if (!strcmp(argv[3], "reopen")) {
        h = open_a(argv[0], RTLD_NOW);
        if (!h) die(dlerror());
        printf("reopened: value=%d\n", plug_value(h));
        close_or_die(h);
    }
    printf("ctors=%ld dtors=%ld\n", CTORS, DTORS);
    return 0;
}

/* needed DEP HOST: open DEP, then HOST, which depends on DEP; close DEP:
 * HOST still needs it, so it stays loaded and RTLD_NOLOAD finds it. */
static int sc_needed(int argc, char **argv)
{
    if (argc != 2) die("usage: needed DEP HOST");
    void *dep = open_a(argv[0], RTLD_NOW);
    if (!dep) die(dlerror());
    void *host = open_b(argv[1], RTLD_NOW);
    if (!host) die(dlerror());
    close_or_die(dep);
    void *n = open_a(argv[0], RTLD_NOW | RTLD_NOLOAD);
    printf("DEP closed, HOST holds it: RTLD_NOLOAD %s\n",
           n == dep ? "same handle" : null_or_handle(n));
    if (n) close_or_die(n);
    printf("ctors=%ld dtors=%ld\n", CTORS, DTORS);
    close_or_die(host);
    n = open_a(argv[0], RTLD_NOW | RTLD_NOLOAD);
    printf("HOST closed too: RTLD_NOLOAD %s\n", null_or_handle(n));
    if (n) close_or_die(n);
    return 0;
}

/* idle_dep HOST DEP: open and close HOST, which brought DEP with it: both
 * are gone, so RTLD_NOLOAD finds no DEP and opening DEP loads it afresh. */
static int sc_idle_dep(int argc, char **argv)
{
    if (argc != 2) die("usage: idle_dep HOST DEP");
    void *host = open_a(argv[0], RTLD_NOW);
    if (!host) die(dlerror());
    close_or_die(host);
    void *n = open_b(argv[1], RTLD_NOW | RTLD_NOLOAD);
    printf("HOST closed: DEP RTLD_NOLOAD %s\n", null_or_handle(n));
    if (n) close_or_die(n);
    long before = CTORS;
    void *dep = open_b(argv[1], RTLD_NOW);
    if (!dep) die(dlerror());
    printf("DEP opened: value=%d, constructors run %ld\n", plug_value(dep), CTORS - before);
    close_or_die(dep);
    return 0;
}

/* reuse HOSTA HOSTB OTHER: HOSTA and HOSTB are plugins whose dependency
 * libcaller.so (each its own copy, with its own RUNPATH) calls dlopen. Open
 * HOSTA, have its libcaller open libplug.so, close both; open and close
 * OTHER (with FDGUARD_DLOPEN_KEEP=2 that evicts HOSTA, and its libcaller goes
 * with it); then HOSTB, mapped where HOSTA was, has its libcaller open
 * libplug.so: it must get its own. */
static int sc_reuse(int argc, char **argv)
{
    if (argc != 3) die("usage: reuse HOSTA HOSTB OTHER");
    void *a = open_a(argv[0], RTLD_NOW);
    if (!a) die(dlerror());
    caller_open_fn open_in_a = (caller_open_fn)dlsym(a, "caller_open");
    if (!open_in_a) die("caller_open not found");
    void *p = open_in_a("libplug.so", RTLD_NOW);
    report("A's libcaller opens libplug.so", p);
    close_or_die(a);
    if (p) close_or_die(p);
    void *o = open_b(argv[2], RTLD_NOW);
    if (!o) die(dlerror());
    close_or_die(o);
    void *b = open_c(argv[1], RTLD_NOW);
    if (!b) die(dlerror());
    caller_open_fn open_in_b = (caller_open_fn)dlsym(b, "caller_open");
    if (!open_in_b) die("caller_open not found");
    printf("B's libcaller where A's was: %s\n", open_in_b == open_in_a ? "yes" : "no");
    report("B's libcaller opens libplug.so", open_in_b("libplug.so", RTLD_NOW));
    return 0;
}

/* ---- backtraces through dlopen and dlclose -------------------------------- */

/* bt PLUGIN [CALLER]: dlopen and dlclose a plugin whose constructor and
 * destructor record their backtrace (tests/dlplug/bt.c); the dlopen is this
 * program's, or with CALLER that library's (caller_open). Prints each frame
 * as "object(symbol+offset)", the object's directory and the address left
 * out. */
static int sc_bt(int argc, char **argv)
{
    if (argc != 1 && argc != 2) die("usage: bt PLUGIN [CALLER]");
    caller_open_fn copen = NULL;
    if (argc == 2) load_caller(argv[1], &copen, NULL);
    int fd = memfd_create("bt", MFD_CLOEXEC);
    if (fd < 0) die("memfd_create failed");
    char num[16];
    snprintf(num, sizeof num, "%d", fd);
    if (setenv("DLTEST_BT_FD", num, 1) != 0) die("setenv failed");
    void *warm[4];
    backtrace(warm, 4); /* loads the unwinder before, not inside, the constructor */
    void *h = copen ? copen(argv[0], RTLD_NOW) : open_a(argv[0], RTLD_NOW);
    printf("dlopen: %s\n", null_or_handle(h));
    if (!h) printf("dlerror: %s\n", error_text());
    if (h) printf("dlclose: %d\n", dlclose(h));
    off_t len = lseek(fd, 0, SEEK_CUR);
    char *text =
        len > 0 ? mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    for (char *p = text, *end = text + len; text != MAP_FAILED && p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        *nl = '\0';
        char *addr = strstr(p, "[0x");
        if (addr) *addr = '\0';
        char *paren = strchr(p, '(');
        if (paren) *paren = '\0';
        char *slash = strrchr(p, '/');
        printf("  %s%s%s\n", slash ? slash + 1 : p, paren ? "(" : "", paren ? paren + 1 : "");
        p = nl + 1;
    }
    return 0;
}

/* ctor_error PLUG: PLUG's constructor fails to dlopen something; the
 * successful outer dlopen leaves that message for dlerror() (glibc keeps an
 * error a recursive call made). */
static int sc_ctor_error(int argc, char **argv)
{
    if (argc != 1) die("usage: ctor_error PLUG");
    void *h = open_a(argv[0], RTLD_NOW);
    printf("dlopen: %s\n", null_or_handle(h));
    printf("dlerror: %s\n", error_text());
    printf("dlerror again: %s\n", error_text());
    if (h) close_or_die(h);
    return 0;
}

/* ---- transient failure: RLIMIT_AS ------------------------------------------ */

static sem_t go;
static long raise_after_ms;
static struct rlimit as_saved;

static void *raiser(void *arg)
{
    (void)arg;
    while (sem_wait(&go) != 0)
        ;
    struct timespec ts = {raise_after_ms / 1000, (raise_after_ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
    if (setrlimit(RLIMIT_AS, &as_saved) != 0) die("setrlimit(RLIMIT_AS) back failed");
    return NULL;
}

static long vm_size_kb(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f) die("cannot read /proc/self/status");
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %ld kB", &kb) == 1) break;
    fclose(f);
    if (kb < 0) die("no VmSize");
    return kb;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* transient BIG DELAY_MS: RLIMIT_AS just above what the process maps, so
 * mapping BIG fails; another thread restores the limit DELAY_MS later. */
static int sc_transient(int argc, char **argv)
{
    if (argc != 2) die("usage: transient BIG DELAY_MS");
    raise_after_ms = parse_num(argv[1], 0, 60000);
    if (getrlimit(RLIMIT_AS, &as_saved) != 0) die("getrlimit failed");
    if (sem_init(&go, 0, 0) != 0) die("sem_init failed");
    pthread_t t;
    if (pthread_create(&t, NULL, raiser, NULL) != 0) die("pthread_create failed");
    /* Everything the attempt needs besides the mapping exists already: the
     * error string's allocations come from a warm heap. */
    free(malloc(1 << 20));
    fflush(stdout);
    struct rlimit low = as_saved;
    low.rlim_cur = (rlim_t)(vm_size_kb() + 16 * 1024) * 1024;
    if (setrlimit(RLIMIT_AS, &low) != 0) die("setrlimit(RLIMIT_AS) failed");
    double t0 = now_ms();
    sem_post(&go);
    void *h = open_a(argv[0], RTLD_NOW);
    double took = now_ms() - t0;
    const char *msg = h ? NULL : strdup(error_text());
    pthread_join(t, NULL);
    if (h) {
        printf("result: loaded value=%d\n", plug_value(h));
        printf("dlerror after: %s\n", error_text());
    } else {
        printf("result: error=%s\n", msg);
    }
    fprintf(stderr, "dltest: the attempt took %.1f ms\n", took);
    if (!h) {
        void *later = open_a(argv[0], RTLD_NOW);
        printf("once the limit is back: %s\n", later ? "loaded" : error_text());
    }
    return 0;
}

/* ---- descriptor exhaustion and /etc/ld.so.cache ---------------------------- */

/* The lowest free descriptor number. */
static int lowest_free(void)
{
    int fd = open("/", O_PATH | O_CLOEXEC);
    if (fd < 0) die("open / failed");
    close(fd);
    return fd;
}

/* dlopen(WARM) with 8 descriptors left (a process that only loads libraries
 * gets the shim's spare on a load near its limit), then a soft
 * RLIMIT_NOFILE at the lowest free number: no free descriptor at all. The
 * limit before is left in *saved; a probe proves nothing is free. */
static void warm_then_full(const char *warm, struct rlimit *saved)
{
    struct rlimit low;
    if (getrlimit(RLIMIT_NOFILE, saved) != 0) die("getrlimit failed");
    low = *saved;
    low.rlim_cur = (rlim_t)lowest_free() + 8;
    if (setrlimit(RLIMIT_NOFILE, &low) != 0) die("setrlimit(RLIMIT_NOFILE) failed");
    if (!open_b(warm, RTLD_NOW)) die(dlerror());
    fflush(stdout);
    low.rlim_cur = (rlim_t)lowest_free();
    if (setrlimit(RLIMIT_NOFILE, &low) != 0) die("setrlimit(RLIMIT_NOFILE) failed");
    int probe = open("/", O_PATH | O_CLOEXEC);
    if (probe >= 0) die("a descriptor was still free at the lowered limit");
}

/* emfile WARM NAME [NAME2]: at the limit (warm_then_full), dlopen(NAME) (a
 * library only /etc/ld.so.cache knows); once the limit is back, NAME again
 * and NAME2 (another such library, never opened before: does the loader
 * still read its cache?). */
static int sc_emfile(int argc, char **argv)
{
    if (argc != 2 && argc != 3) die("usage: emfile WARM NAME [NAME2]");
    struct rlimit saved;
    warm_then_full(argv[0], &saved);
    int probe_errno = errno;
    void *h = open_a(argv[1], RTLD_NOW);
    const char *msg = h ? NULL : strdup(error_text());
    if (setrlimit(RLIMIT_NOFILE, &saved) != 0) die("setrlimit back failed");
    printf("free descriptors at the lowered limit: none (%s)\n", strerror(probe_errno));
    if (h)
        printf("at the limit: value=%d path=%s\n", plug_value(h), path_of(h));
    else
        printf("at the limit: error=%s\n", msg);
    report("limit restored", open_b(argv[1], RTLD_NOW));
    if (argc == 3) report("limit restored, another library", open_c(argv[2], RTLD_NOW));
    return 0;
}

/* emfile_missing WARM MISSING CACHED: at the limit (warm_then_full),
 * dlopen(MISSING), a name no directory has; once the limit is back, CACHED,
 * a library only /etc/ld.so.cache knows. */
static int sc_emfile_missing(int argc, char **argv)
{
    if (argc != 3) die("usage: emfile_missing WARM MISSING CACHED");
    struct rlimit saved;
    warm_then_full(argv[0], &saved);
    void *h = open_a(argv[1], RTLD_NOW);
    const char *msg = h ? "handle" : strdup(error_text());
    const char *again = error_text();
    if (setrlimit(RLIMIT_NOFILE, &saved) != 0) die("setrlimit back failed");
    printf("at the limit: %s\n", msg);
    printf("dlerror again: %s\n", again);
    report("limit restored, a library only the cache knows", open_c(argv[2], RTLD_NOW));
    return 0;
}

/* ---- fork while another thread loads ---------------------------------------- */

static volatile int churning = 1;

static void *churn_thread(void *arg)
{
    while (churning) {
        void *h = open_b(arg, RTLD_NOW);
        if (h) dlclose(h);
    }
    return NULL;
}

/* threads N PLUG...: 4 threads each open, call and close the plugins in
 * turn, N times: every open must succeed and every call return its value. */
static char **thread_plugs;
static int thread_nplugs;
static long thread_cycles, thread_errors;

static void *thread_churn(void *arg)
{
    long id = (long)arg;
    for (long i = 0; i < thread_cycles; i++) {
        void *h = open_b(thread_plugs[(i + id) % thread_nplugs], RTLD_NOW);
        int (*fn)(void) = h ? (int (*)(void))dlsym(h, "plug_value") : NULL;
        if (!fn || fn() <= 0 || dlclose(h) != 0)
            __atomic_fetch_add(&thread_errors, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static int sc_threads(int argc, char **argv)
{
    if (argc < 2) die("usage: threads N PLUG...");
    thread_cycles = parse_num(argv[0], 1, 10000000);
    thread_plugs = argv + 1;
    thread_nplugs = argc - 1;
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        if (pthread_create(&t[i], NULL, thread_churn, (void *)i) != 0) die("pthread_create failed");
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    printf("threads=4 cycles=%ld errors=%ld\n", thread_cycles, thread_errors);
    return 0;
}

/* forkload CHURN PLUG N: a thread opens and closes CHURN in a loop; the main
 * thread holds PLUG and forks N times; each child opens PLUG from another
 * call site and exits. POSIX leaves a child of a multi-threaded process
 * undefined here; the point is what happens: counts of children that
 * opened it (exit 0), failed to (exit 1), stopped at one of ld.so's
 * assertions ("Inconsistency detected by ld.so": exit 127), hung (SIGALRM
 * after 3 s) or ended otherwise. */
static int sc_forkload(int argc, char **argv)
{
    if (argc != 3) die("usage: forkload CHURN PLUG N");
    long n = parse_num(argv[2], 1, 100000);
    void *held = open_a(argv[1], RTLD_NOW);
    if (!held) die(dlerror());
    fflush(stdout);
    pthread_t t;
    if (pthread_create(&t, NULL, churn_thread, argv[0]) != 0) die("pthread_create failed");
    long ok = 0, failed = 0, hung = 0, asserted = 0, other = 0;
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) die(strerror(errno));
        if (pid == 0) {
            alarm(3);
            int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
            if (null >= 0) dup2(null, 2); /* ld.so's assertion messages */
            _exit(open_c(argv[1], RTLD_NOW) ? 0 : 1);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0)
            if (errno != EINTR) die("waitpid failed");
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            ok++;
        else if (WIFEXITED(st) && WEXITSTATUS(st) == 1)
            failed++;
        else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
            hung++;
        else if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
            asserted++;
        else
            other++;
    }
    churning = 0;
    pthread_join(t, NULL);
    printf("children=%ld opened=%ld failed=%ld ld.so_assertion=%ld hung=%ld other=%ld\n", n, ok,
           failed, asserted, hung, other);
    return 0;
}

/* ---- a caller whose file was truncated in place ------------------------------ */

struct exec_end {
    const char *path;
    off_t end;
};

static int find_exec_end(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct exec_end *w = arg;
    if (strcmp(info->dlpi_name, w->path) != 0) return 0;
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X))
            w->end =
                (off_t)((ph->p_offset + ph->p_filesz + (size_t)page - 1) & ~((size_t)page - 1));
    }
    return 1;
}

/* truncated CALLER NAME: loads CALLER (tests/dlplug/caller.c), truncates its
 * file in place where its code ends (its unwind tables and data are gone
 * from the file; the code the host runs is not), then CALLER's
 * caller_open_with calls this program's dlopen (the shim's, preloaded) on
 * NAME, an absolute path. Ends with _exit: CALLER's destructors would read
 * its data. */
static int sc_truncated(int argc, char **argv)
{
    if (argc != 2) die("usage: truncated CALLER NAME");
    void *lib = open_b(argv[0], RTLD_NOW);
    if (!lib) die(dlerror());
    caller_open_with_fn copen_with = (caller_open_with_fn)dlsym(lib, "caller_open_with");
    if (!copen_with) die("caller_open_with not found");
    struct exec_end w = {argv[0], 0};
    if (!dl_iterate_phdr(find_exec_end, &w) || !w.end) die("CALLER's code segment not found");
    if (truncate(argv[0], w.end) != 0) die("truncate failed");
    report("after the truncation", copen_with(dlopen, argv[1], RTLD_NOW));
    printf("survived\n");
    fflush(stdout);
    _exit(0);
}

/* ---- what a last dlclose holds up --------------------------------------------- */

static double mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static _Atomic long side_hits;
static _Atomic int side_stop, side_watch;
static _Atomic double side_max_gap; /* ms between two completions while watched */

static void *hit_loop(void *arg)
{
    double last = mono_ms();
    while (!side_stop) {
        void *h = open_b(arg, RTLD_NOW);
        if (!h || dlclose(h) != 0) die("a hit failed");
        double now = mono_ms();
        if (side_watch && now - last > side_max_gap) side_max_gap = now - last;
        last = now;
        side_hits++;
    }
    return NULL;
}

/* hold_up BIG SMALL: a thread opens and closes SMALL (held once more by the
 * main thread, so that its closes are never the last) in a loop while the
 * main thread makes the last dlclose of BIG. Prints how long that dlclose
 * took, how many open+close the thread completed meanwhile and the longest
 * it waited for one. */
static int sc_hold_up(int argc, char **argv)
{
    if (argc != 2) die("usage: hold_up BIG SMALL");
    void *small = open_b(argv[1], RTLD_NOW);
    void *big = open_a(argv[0], RTLD_NOW);
    if (!small || !big) die(dlerror());
    pthread_t t;
    if (pthread_create(&t, NULL, hit_loop, argv[1]) != 0) die("pthread_create failed");
    while (side_hits < 1000)
        sched_yield();
    side_watch = 1;
    long h0 = side_hits;
    double t0 = mono_ms();
    close_or_die(big);
    double ms = mono_ms() - t0;
    long during = side_hits - h0;
    /* One more completion, so that a wait that spans the end is counted. */
    for (long n = side_hits; side_hits == n;)
        sched_yield();
    side_watch = 0;
    side_stop = 1;
    pthread_join(t, NULL);
    printf("close_ms=%.1f hits_during_close=%ld max_hit_gap_ms=%.1f\n", ms, during,
           (double)side_max_gap);
    close_or_die(small);
    return 0;
}

/* noexecmem SCENARIO ARGS...: SCENARIO under a policy that refuses to make
 * memory executable with mprotect (EACCES), as SELinux's execmem denial and
 * PaX MPROTECT do; the loader maps code from files, which stays allowed. */
static void refuse_execmem(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mprotect, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_EXEC, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof *f, .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0)
        die("cannot install the seccomp filter");
}

int main(int argc, char **argv)
{
    char hook[32];
    snprintf(hook, sizeof hook, "%lx", (unsigned long)(uintptr_t)events);
    if (setenv("DLTEST_HOOK", hook, 1) != 0) die("setenv failed");
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) die("usage: dltest SCENARIO ARGS...");
    const char *sc = argv[1];
    int n = argc - 2;
    char **a = argv + 2;
    if (!strcmp(sc, "noexecmem") && n > 0) {
        refuse_execmem();
        sc = *a++;
        n--;
    }
    if (!strcmp(sc, "open")) return sc_open(n, a);
    if (!strcmp(sc, "via")) return sc_via(n, a);
    if (!strcmp(sc, "who")) return sc_who(n, a);
    if (!strcmp(sc, "ns")) return sc_ns(n, a);
    if (!strcmp(sc, "null")) return sc_null();
    if (!strcmp(sc, "global")) return sc_global(n, a);
    if (!strcmp(sc, "global2")) return sc_global2(n, a);
    if (!strcmp(sc, "nodelete")) return sc_nodelete(n, a);
    if (!strcmp(sc, "noload")) return sc_noload(n, a);
    if (!strcmp(sc, "noload_global")) return sc_noload_global(n, a);
    if (!strcmp(sc, "global_leak")) return sc_global_leak(n, a);
    if (!strcmp(sc, "noload_libc")) return sc_noload_libc();
    if (!strcmp(sc, "refs")) return sc_refs(n, a);
    if (!strcmp(sc, "dlerror")) return sc_dlerror(n, a);
    if (!strcmp(sc, "dlerror_clear")) return sc_dlerror_clear(n, a);
    if (!strcmp(sc, "churn")) return sc_churn(n, a);
    if (!strcmp(sc, "reload")) return sc_reload(n, a);
    if (!strcmp(sc, "reload_global")) return sc_reload_global(n, a);
    if (!strcmp(sc, "reuse")) return sc_reuse(n, a);
    if (!strcmp(sc, "overwrite")) return sc_overwrite(n, a);
    if (!strcmp(sc, "needed")) return sc_needed(n, a);
    if (!strcmp(sc, "idle_dep")) return sc_idle_dep(n, a);
    if (!strcmp(sc, "bt")) return sc_bt(n, a);
    if (!strcmp(sc, "ctor_error")) return sc_ctor_error(n, a);
    if (!strcmp(sc, "dlerror_close")) return sc_dlerror_close(n, a);
    if (!strcmp(sc, "modes")) return sc_modes(n, a);
    if (!strcmp(sc, "lazy_now")) return sc_lazy_now(n, a);
    if (!strcmp(sc, "emfile_missing")) return sc_emfile_missing(n, a);
    if (!strcmp(sc, "forkload")) return sc_forkload(n, a);
    if (!strcmp(sc, "threads")) return sc_threads(n, a);
    if (!strcmp(sc, "transient")) return sc_transient(n, a);
    if (!strcmp(sc, "emfile")) return sc_emfile(n, a);
    if (!strcmp(sc, "hold_up")) return sc_hold_up(n, a);
    if (!strcmp(sc, "cycle")) return sc_cycle(n, a);
    if (!strcmp(sc, "truncated")) return sc_truncated(n, a);
    die("unknown scenario");
}
