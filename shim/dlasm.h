/* Assembly shared by the dlopen entry stub (dlentry.c) and the trampoline
 * through the gadget (dlcaller.c): both keep the application's callee-saved
 * registers in six slots under a return address, and their CFI must say so
 * exactly the same way for an unwinder to find them. String literals, to be
 * pasted into a top-level __asm__ right after .cfi_startproc (CFA at rsp+8). */
#pragma once

#define FDG_ASM_PUSH_SAVED                                                                         \
    "    push %rbp\n"                                                                              \
    ".cfi_def_cfa_offset 16\n"                                                                     \
    ".cfi_offset %rbp, -16\n"                                                                      \
    "    push %rbx\n"                                                                              \
    ".cfi_def_cfa_offset 24\n"                                                                     \
    ".cfi_offset %rbx, -24\n"                                                                      \
    "    push %r12\n"                                                                              \
    ".cfi_def_cfa_offset 32\n"                                                                     \
    ".cfi_offset %r12, -32\n"                                                                      \
    "    push %r13\n"                                                                              \
    ".cfi_def_cfa_offset 40\n"                                                                     \
    ".cfi_offset %r13, -40\n"                                                                      \
    "    push %r14\n"                                                                              \
    ".cfi_def_cfa_offset 48\n"                                                                     \
    ".cfi_offset %r14, -48\n"                                                                      \
    "    push %r15\n"                                                                              \
    ".cfi_def_cfa_offset 56\n"                                                                     \
    ".cfi_offset %r15, -56\n"

/* The reverse, from CFA offset 56 back to 8. */
#define FDG_ASM_POP_SAVED                                                                          \
    "    pop %r15\n"                                                                               \
    ".cfi_def_cfa_offset 48\n"                                                                     \
    ".cfi_restore %r15\n"                                                                          \
    "    pop %r14\n"                                                                               \
    ".cfi_def_cfa_offset 40\n"                                                                     \
    ".cfi_restore %r14\n"                                                                          \
    "    pop %r13\n"                                                                               \
    ".cfi_def_cfa_offset 32\n"                                                                     \
    ".cfi_restore %r13\n"                                                                          \
    "    pop %r12\n"                                                                               \
    ".cfi_def_cfa_offset 24\n"                                                                     \
    ".cfi_restore %r12\n"                                                                          \
    "    pop %rbx\n"                                                                               \
    ".cfi_def_cfa_offset 16\n"                                                                     \
    ".cfi_restore %rbx\n"                                                                          \
    "    pop %rbp\n"                                                                               \
    ".cfi_def_cfa_offset 8\n"                                                                      \
    ".cfi_restore %rbp\n"
