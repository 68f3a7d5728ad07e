/* dlchurn LIB CYCLES SYMBOL: dlopen + dlsym(SYMBOL) + dlclose of LIB, CYCLES times.
 * Prints cycles_per_s, maps_after (lines of /proc/self/maps after the
 * cycles), anon_kb_after (anonymous memory then: an idle object the keep
 * cache holds lives in anonymous copies) and reopen_ns (a dlopen while the
 * object is held, then dlclose). */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int maps_lines(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    int n = 0, c;
    if (!f) return -1;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static long anon_kb(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    long kb = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Anonymous: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

static void *open_or_die(const char *lib)
{
    void *h = dlopen(lib, RTLD_NOW);
    if (!h) {
        fprintf(stderr, "dlchurn: %s\n", dlerror());
        exit(1);
    }
    return h;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: dlchurn LIB CYCLES SYMBOL\n");
        return 2;
    }
    const char *lib = argv[1];
    long cycles = atol(argv[2]);
    double t0 = now_s();
    for (long i = 0; i < cycles; i++) {
        void *h = open_or_die(lib);
        if (!dlsym(h, argv[3])) {
            fprintf(stderr, "dlchurn: %s\n", dlerror());
            return 1;
        }
        dlclose(h);
    }
    double t1 = now_s();
    printf("cycles_per_s=%.0f\n", (double)cycles / (t1 - t0));
    printf("maps_after=%d\n", maps_lines());
    printf("anon_kb_after=%ld\n", anon_kb());

    void *held = open_or_die(lib);
    long reopens = 100000;
    t0 = now_s();
    for (long i = 0; i < reopens; i++)
        dlclose(open_or_die(lib));
    t1 = now_s();
    printf("reopen_ns=%.1f\n", (t1 - t0) * 1e9 / (double)reopens);
    dlclose(held);
    return 0;
}
