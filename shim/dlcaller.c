/* Calling the real dlopen on behalf of our caller.
 *
 * glibc decides where a dlopen looks from its *return address*: the object
 * that contains it supplies $ORIGIN, DT_RPATH/DT_RUNPATH and the link-map
 * namespace (dlfcn/dlopen.c passes RETURN_ADDRESS (0) down to _dl_open,
 * which calls _dl_find_dso_for_object on it). A wrapper that calls dlopen
 * from its own frame makes every lookup happen as if libfdguard had asked.
 *
 * So a miss calls it with a return address inside the caller's object: a
 * `ret` there (the gadget, chosen by dlgadget.c), with our continuation
 * pushed beneath it. The loader sees the caller's object; the `ret` brings
 * control back to us. The caller's object is found with _dl_find_object
 * (glibc 2.35, lock-free, every namespace). Without it, or on other
 * architectures, every call passes straight through (fdg_dlcaller_faithful
 * is false and dlentry.c tail-calls the real dlopen).
 *
 * Unwinding. A backtrace taken inside the real dlopen (a constructor's)
 * reaches the gadget's frame, which the caller's CFI describes (see
 * dlgadget.c), then, for an RSP gadget, this trampoline at label 2 or 3,
 * whose CFI at those return addresses says: the frame above is the
 * application's caller of dlopen, at the return address slot the entry stub
 * recorded, with the application's callee-saved registers (loaded back
 * before the call). The shim's own C frames in between are skipped, so the
 * backtrace is the same as without the shim plus the gadget and, for RSP
 * gadgets, this trampoline: independent of how the shim was compiled. */
#include "fdguard.h"
#include "dlasm.h"

#include <dlfcn.h>
#include <link.h>

#if defined(__x86_64__)
/* fdg_call_via(fn, file, mode, gadget, ret_slot, kind): fn(file, mode),
 * returning through the gadget; ret_slot is where dlentry.c's stub found the
 * application's return address, with the application's rbp, rbx, r12 ... r15
 * in the 6 slots below it.
 *
 * The stack when fn starts (S: its return address, 8 mod 16 as in any call):
 *   S     the gadget          (fn returns there)
 *   S+8   label 2             (the gadget's ret returns there)
 *   S+16  label 3             (an RSP16 gadget's frame, as the unwinder sees it, returns there)
 *   S+24  ret_slot            (read by the CFI of labels 2 and 3)
 *   S+32  our r15 ... rbp, then our caller's return address */
void *fdg_call_via(void *fn, const char *file, int mode, uintptr_t gadget, void **ret_slot,
                   int kind);
__asm__(".text\n"
        ".globl fdg_call_via\n"
        ".hidden fdg_call_via\n"
        ".type fdg_call_via, @function\n"
        "fdg_call_via:\n"
        ".cfi_startproc\n"
        "    .byte 0xf3, 0x0f, 0x1e, 0xfa\n" /* endbr64 (a nop without CET) */
        FDG_ASM_PUSH_SAVED "    push %r8\n"
        ".cfi_def_cfa_offset 64\n"
        "    lea 3f(%rip), %r11\n"
        "    push %r11\n"
        ".cfi_def_cfa_offset 72\n"
        "    lea 2f(%rip), %r11\n"
        "    push %r11\n"
        ".cfi_def_cfa_offset 80\n"
        "    push %rcx\n"
        ".cfi_def_cfa_offset 88\n"
        "    mov %rdi, %rax\n"
        "    mov %rsi, %rdi\n"
        "    mov %edx, %esi\n"
        "    mov -16(%r8), %rbx\n" /* the application's registers */
        "    mov -24(%r8), %r12\n"
        "    mov -32(%r8), %r13\n"
        "    mov -40(%r8), %r14\n"
        "    mov -48(%r8), %r15\n"
        "    mov -8(%r8), %rbp\n"
        "    cmp $1, %r9d\n" /* FDG_GADGET_RBP: its CFA is rbp+16, the stub's rbp slot */
        "    jne 1f\n"
        "    lea -8(%r8), %rbp\n"
        "1:  jmp *%rax\n"
        ".cfi_remember_state\n"
        /* Return address 2, as the unwinder sees it from an RSP8 gadget:
         * CFA = *(rsp + 8) + 8, the registers are the application's. */
        ".cfi_escape 0x0f, 0x05, 0x77, 0x08, 0x06, 0x23, 0x08\n"
        ".cfi_same_value %rbp\n"
        ".cfi_same_value %rbx\n"
        ".cfi_same_value %r12\n"
        ".cfi_same_value %r13\n"
        ".cfi_same_value %r14\n"
        ".cfi_same_value %r15\n"
        "    nop\n"
        "2:\n"
        ".cfi_restore_state\n"
        ".cfi_def_cfa_offset 72\n"
        "    add $16, %rsp\n"
        ".cfi_def_cfa_offset 56\n" FDG_ASM_POP_SAVED "    ret\n"
        /* Return address 3, never executed, as the unwinder sees it from an
         * RSP16 gadget: CFA = *rsp + 8. */
        ".cfi_escape 0x0f, 0x05, 0x77, 0x00, 0x06, 0x23, 0x08\n"
        ".cfi_same_value %rbp\n"
        ".cfi_same_value %rbx\n"
        ".cfi_same_value %r12\n"
        ".cfi_same_value %r13\n"
        ".cfi_same_value %r14\n"
        ".cfi_same_value %r15\n"
        "    nop\n"
        "3:  ud2\n"
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
    out->end = found.dlfo_map_end;
    out->eh_frame = found.dlfo_eh_frame;
    return true;
}

void *fdg_dlopen_as(const struct fdg_as *as, const char *file, int mode)
{
#ifdef FDG_TEST_SHSTK
    /* The test build that pretends a shadow stack is active (dlentry.c):
     * the return through the gadget is as fatal as under a real one. */
    __builtin_trap();
#endif
#if HAVE_TRAMPOLINE
    return fdg_call_via((void *)fdg_next.dlopen, file, mode, as->gadget.addr, as->ret_slot,
                        as->gadget.kind);
#else
    (void)as;
    return fdg_next.dlopen(file, mode); /* unreachable: fdg_dlcaller_faithful is false */
#endif
}
