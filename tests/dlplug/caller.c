/* A test library that calls dlopen itself, for tests/dlopen.bats. It is
 * linked at test time with various DT_RPATH / DT_RUNPATH settings and loaded
 * by dltest (with dlopen, or with dlmopen into a new namespace): the loader
 * must resolve its dlopen calls with *its* search path, $ORIGIN and
 * namespace, with or without the shim. */
#include <dlfcn.h>

/* Not a tail call: the loader must see a return address in this library. */
void *caller_open(const char *name, int mode)
{
    void *handle = dlopen(name, mode);
    __asm__ volatile("" ::: "memory");
    return handle;
}

/* The same through a function pointer the host hands over (a plugin API
 * that passes the host's services): the host's dlopen, which is the shim's
 * when it is preloaded, called from here. */
void *caller_open_with(void *(*open_fn)(const char *, int), const char *name, int mode)
{
    void *handle = open_fn(name, mode);
    __asm__ volatile("" ::: "memory");
    return handle;
}

int caller_close(void *handle)
{
    return dlclose(handle);
}

/* dlerror is per thread; reading it here or in the host is the same. */
const char *caller_error(void)
{
    return dlerror();
}
