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
 * depend on how the shim is compiled. The caller's object is found with
 * _dl_find_object (glibc 2.35, lock-free, every namespace). Without it, or
 * on other architectures, we call straight through and the cache stays off
 * (fdg_dlcaller_faithful). */
#include "fdguard.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <string.h>

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
#define HAVE_TRAMPOLINE 1
#else
#define HAVE_TRAMPOLINE 0
#endif

bool fdg_dlcaller_faithful;

void fdg_dlcaller_bind(void)
{
    fdg_next.dl_find_object =
        (int (*)(void *, struct dl_find_object *))dlsym(RTLD_DEFAULT, "_dl_find_object");
    fdg_dlcaller_faithful = HAVE_TRAMPOLINE && fdg_next.dl_find_object;
}

bool fdg_dlcaller_object(void *addr, struct fdg_caller *out)
{
    struct dl_find_object found;
    if (!fdg_next.dl_find_object || fdg_next.dl_find_object(addr, &found) != 0) return false;
    out->map = found.dlfo_link_map;
    out->start = found.dlfo_map_start;
    return true;
}

/* A `ret` byte in an executable segment of an object. */
static uintptr_t find_ret(ElfW(Addr) base, const ElfW(Phdr) * ph, int phnum)
{
    for (int i = 0; i < phnum; i++) {
        if (ph[i].p_type != PT_LOAD || !(ph[i].p_flags & PF_X)) continue;
        const unsigned char *p = (const unsigned char *)(base + ph[i].p_vaddr);
        const unsigned char *ret = memchr(p, 0xc3, ph[i].p_filesz);
        if (ret) return (uintptr_t)ret;
    }
    return 0;
}

/* The object's program headers are in its first segment, which maps the
 * ELF header (file offset 0) at the start of its mapping. */
static uintptr_t caller_ret(const struct fdg_caller *caller)
{
    const ElfW(Ehdr) *eh = caller->start;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0) return 0;
    return find_ret(caller->map->l_addr, (const ElfW(Phdr) *)((const char *)eh + eh->e_phoff),
                    eh->e_phnum);
}

/* glibc takes a caller outside every object (JIT code) for the main
 * program, which dl_iterate_phdr lists first. */
static int main_ret(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    *(uintptr_t *)arg = find_ret(info->dlpi_addr, info->dlpi_phdr, info->dlpi_phnum);
    return 1;
}

void *fdg_dlopen_as(void *caller, const char *file, int mode)
{
#if HAVE_TRAMPOLINE
    struct fdg_caller obj;
    uintptr_t via = 0;
    if (fdg_dlcaller_faithful && fdg_dlcaller_object(caller, &obj))
        via = caller_ret(&obj);
    else if (fdg_dlcaller_faithful)
        dl_iterate_phdr(main_ret, &via);
    if (via) return fdg_call_via((void *)fdg_next.dlopen, file, mode, via);
#endif
    (void)caller;
    return fdg_next.dlopen(file, mode);
}
