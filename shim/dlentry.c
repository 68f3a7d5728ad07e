/* The exported dlopen and dlclose: entry stubs in assembly.
 *
 * Whatever the shim does not answer itself goes to the real function as a
 * true tail call (jmp), so that the loader and every unwinder see the
 * application's own frame: the return address glibc resolves $ORIGIN, RPATH
 * and the namespace from, and the frames a backtrace from a constructor or
 * destructor shows. A C wrapper cannot promise that: at -O0, or with a stack
 * protector or a sanitizer, the compiler keeps its frame. The decision is
 * made in C (fdg_dlopen_enter, fdg_dlclose_enter in dlopen.c), which returns
 * either the answer or the function to jump to.
 *
 * The dlopen stub also saves the application's callee-saved registers right
 * under its return address: a miss calls the real dlopen through a gadget
 * (dlcaller.c), and the CFI there describes the application's frame from
 * these slots, whatever the C code in between did with the registers. */
#include "fdguard.h"
#include "dlasm.h"

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl dlopen\n"
        ".type dlopen, @function\n"
        "dlopen:\n"
        ".cfi_startproc\n"
        "    .byte 0xf3, 0x0f, 0x1e, 0xfa\n" /* endbr64 */
        FDG_ASM_PUSH_SAVED                   /* at ret_slot - 8, and so on */
        "    push %rdi\n"
        ".cfi_def_cfa_offset 64\n"
        "    push %rsi\n"
        ".cfi_def_cfa_offset 72\n"
        "    sub $8, %rsp\n"
        ".cfi_def_cfa_offset 80\n"
        "    lea 72(%rsp), %rdx\n" /* ret_slot */
        "    call fdg_dlopen_enter\n"
        "    add $8, %rsp\n"
        ".cfi_def_cfa_offset 72\n"
        "    pop %rsi\n"
        ".cfi_def_cfa_offset 64\n"
        "    pop %rdi\n"
        ".cfi_def_cfa_offset 56\n" FDG_ASM_POP_SAVED "    test %rdx, %rdx\n"
        "    jnz 1f\n"
        "    ret\n"
        "1:  jmp *%rdx\n"
        ".cfi_endproc\n"
        ".size dlopen, .-dlopen\n"

        ".globl dlclose\n"
        ".type dlclose, @function\n"
        "dlclose:\n"
        ".cfi_startproc\n"
        "    .byte 0xf3, 0x0f, 0x1e, 0xfa\n" /* endbr64 */
        "    push %rdi\n"
        ".cfi_def_cfa_offset 16\n"
        "    call fdg_dlclose_enter\n"
        "    pop %rdi\n"
        ".cfi_def_cfa_offset 8\n"
        "    test %rdx, %rdx\n"
        "    jnz 1f\n"
        "    ret\n"
        "1:  jmp *%rdx\n"
        ".cfi_endproc\n"
        ".size dlclose, .-dlclose\n");
#else
/* Elsewhere the cache is off (no trampoline): plain C forwarding. */
#define EXPORT __attribute__((visibility("default")))

EXPORT void *dlopen(const char *file, int mode)
{
    void *ret = __builtin_return_address(0);
    struct fdg_dl_ret r = fdg_dlopen_enter(file, mode, &ret);
    return r.forward ? ((void *(*)(const char *, int))r.forward)(file, mode) : r.value;
}

EXPORT int dlclose(void *handle)
{
    struct fdg_dl_ret r = fdg_dlclose_enter(handle);
    return r.forward ? ((int (*)(void *))r.forward)(handle) : (int)(intptr_t)r.value;
}
#endif

/* A shadow stack (CET) would reject the return through the gadget: glibc
 * 2.39 with Linux 6.6 enables one when every object is marked for it, and
 * this library is (Makefile). Under one, dlopen passes straight through.
 * RDSSP reads the shadow stack pointer of this thread: 0 (the instruction is
 * a no-op) when none is active, on every x86-64 CPU. No system call, and
 * per thread as the kernel enables shadow stacks. The test build replaces
 * the query (tests/dlopen.bats); the production build has no such hook. */
bool fdg_shstk_active(void)
{
#ifdef FDG_TEST_SHSTK
    return true;
#else
    uint64_t ssp = 0;
    __asm__ volatile(".byte 0xf3, 0x48, 0x0f, 0x1e, 0xc8" : "+a"(ssp)); /* rdsspq %rax */
    return ssp != 0;
#endif
}
