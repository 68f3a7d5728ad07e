/* Calling the real dlopen on behalf of our caller.
 *
 * glibc decides where a dlopen looks from its *return address*: the object
 * that contains it supplies $ORIGIN, DT_RPATH/DT_RUNPATH and the link-map
 * namespace (dlfcn/dlopen.c passes RETURN_ADDRESS (0) down to _dl_open,
 * which calls _dl_find_dso_for_object on it). A wrapper that calls dlopen
 * from its own frame makes every lookup happen as if libfdguard had asked.
 *
 * So we call it with a return address inside the caller's object: the
 * address of a `ret` instruction (byte 0xc3) in one of its executable
 * segments, with our continuation pushed beneath it. The loader sees the
 * caller's object; the `ret` then brings control back to us. This does not
 * depend on how the shim is compiled. Architectures without the trampoline
 * call straight through and the cache stays off (fdg_dlcaller_faithful). */
#include "fdguard.h"

#include <link.h>
#include <stdlib.h>

#if defined(__x86_64__)
/* fdg_call_via(fn, a0, a1, via): fn(a0, a1), returning through `via`. */
void *fdg_call_via(void *fn, const char *a0, int a1, uintptr_t via);
__asm__(".text\n"
        ".globl fdg_call_via\n"
        ".hidden fdg_call_via\n"
        ".type fdg_call_via, @function\n"
        "fdg_call_via:\n"
        ".cfi_startproc\n"
        "    push %rbp\n"
        ".cfi_def_cfa_offset 16\n"
        ".cfi_offset %rbp, -16\n"
        "    mov %rsp, %rbp\n"
        ".cfi_def_cfa_register %rbp\n"
        "    mov %rdi, %rax\n"
        "    mov %rsi, %rdi\n"
        "    mov %edx, %esi\n"
        "    and $-16, %rsp\n"
        "    sub $8, %rsp\n"
        "    lea 1f(%rip), %r11\n"
        "    push %r11\n" /* where the gadget's ret goes */
        "    push %rcx\n" /* fn's return address: the gadget */
        "    jmp *%rax\n" /* fn sees an ordinary call: rsp+8 is 16-aligned */
        "1:  mov %rbp, %rsp\n"
        "    pop %rbp\n"
        ".cfi_def_cfa %rsp, 8\n"
        "    ret\n"
        ".cfi_endproc\n"
        ".size fdg_call_via, .-fdg_call_via\n");
const bool fdg_dlcaller_faithful = true;
#else
const bool fdg_dlcaller_faithful = false;
#endif

struct gadget_search {
    uintptr_t addr;  /* the caller's return address */
    uintptr_t found; /* a ret in the object containing addr */
    uintptr_t first; /* a ret in the main program: glibc's choice for unknown callers */
};

static uintptr_t find_ret(const struct dl_phdr_info *info)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
        const unsigned char *p = (const unsigned char *)(info->dlpi_addr + ph->p_vaddr);
        for (size_t off = 0; off < ph->p_filesz; off++)
            if (p[off] == 0xc3) return (uintptr_t)(p + off);
    }
    return 0;
}

static bool contains(const struct dl_phdr_info *info, uintptr_t addr)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && addr >= lo && addr < lo + ph->p_memsz) return true;
    }
    return false;
}

static int search_one(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct gadget_search *s = arg;
    if (!s->first) s->first = find_ret(info);
    if (contains(info, s->addr)) {
        s->found = find_ret(info);
        return 1;
    }
    return 0;
}

void *fdg_dlopen_as(void *caller, const char *file, int mode)
{
#if defined(__x86_64__)
    struct gadget_search s = {.addr = (uintptr_t)caller};
    dl_iterate_phdr(search_one, &s);
    uintptr_t via = s.found ? s.found : s.first;
    if (via) return fdg_call_via((void *)fdg_next.dlopen, file, mode, via);
#endif
    (void)caller;
    return fdg_next.dlopen(file, mode);
}

/* The address range of a loaded object's segments, for forgetting cache
 * entries whose caller lived in it once it is unloaded. */
struct range_search {
    struct link_map *map;
    uintptr_t lo, hi;
};

static int range_one(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct range_search *s = arg;
    if (info->dlpi_addr != s->map->l_addr || !info->dlpi_name || !s->map->l_name ||
        __builtin_strcmp(info->dlpi_name, s->map->l_name) != 0)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (!s->lo || lo < s->lo) s->lo = lo;
        if (hi > s->hi) s->hi = hi;
    }
    return 1;
}

void fdg_object_range(struct link_map *map, uintptr_t *lo, uintptr_t *hi)
{
    struct range_search s = {.map = map};
    dl_iterate_phdr(range_one, &s);
    *lo = s.lo;
    *hi = s.hi;
}
