/* vfork, in assembly: the child runs on the parent's stack.
 *
 * The child returns from vfork into its caller's frame and goes on from
 * there, pushing onto the stack its parent will resume on: nothing of ours
 * may live on that stack across the system call. As in glibc's own
 * (sysdeps/unix/sysv/linux/x86_64/vfork.S), the return address waits in a
 * register (the kernel preserves all but rax, rcx and r11) and goes back on
 * the stack after the call, in both processes.
 *
 * Before the call: fdg_spawn_begin (the child takes a reference to every
 * description, spawn.c) and the calling thread's fdg_in_vfork mark, which
 * the child reads in its (our) TLS and which tells every wrapper it may run
 * that it is not the owner of this memory (owner.c). The parent resumes
 * when the child has exec'd or exited: it restores the mark as it was (a
 * vfork from a vfork child keeps its own) and ends the spawn. The child
 * writes nothing of ours. Under an active shadow stack the child leaves by
 * an indirect jump, not a return, as glibc's does: the shadow stack is
 * shared with the parent, and a mismatched one makes a child that returns
 * from the function that called vfork fault at once. */
#include "fdguard.h"

#include <errno.h>
#include <sys/syscall.h>

/* The parent's side after the system call (the child has gone): r is the
 * system call's result. */
long fdg_vfork_parent(long r);

long fdg_vfork_parent(long r)
{
    fdg_spawn_end();
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

#if defined(__x86_64__)
_Static_assert(SYS_vfork == 58, "the stub's system call number");

__asm__(".text\n"
        ".globl vfork\n"
        ".type vfork, @function\n"
        "vfork:\n"
        ".cfi_startproc\n"
        "    .byte 0xf3, 0x0f, 0x1e, 0xfa\n" /* endbr64 */
        "    sub $8, %rsp\n"                 /* a call needs the stack 16-aligned */
        ".cfi_def_cfa_offset 16\n"
        "    call fdg_spawn_begin\n"
        "    add $8, %rsp\n"
        ".cfi_def_cfa_offset 8\n"
        "    movq fdg_in_vfork@gottpoff(%rip), %rdx\n"
        "    movzbl %fs:(%rdx), %esi\n" /* the mark as it was */
        "    movb $1, %fs:(%rdx)\n"
        "    popq %rdi\n" /* the return address */
        ".cfi_adjust_cfa_offset -8\n"
        ".cfi_register %rip, %rdi\n"
        "    movl $58, %eax\n" /* SYS_vfork */
        "    syscall\n"
        "    pushq %rdi\n"
        ".cfi_adjust_cfa_offset 8\n"
        ".cfi_rel_offset %rip, 0\n"
        "    testl %eax, %eax\n"
        "    jz 2f\n"
        /* The parent (or a failure): the child has exec'd or exited. */
        "    movb %sil, %fs:(%rdx)\n"
        "    movq %rax, %rdi\n"
        "    sub $8, %rsp\n"
        ".cfi_adjust_cfa_offset 8\n"
        "    call fdg_vfork_parent\n"
        "    add $8, %rsp\n"
        ".cfi_adjust_cfa_offset -8\n"
        "    ret\n"
        /* The child. */
        "2:  xorl %esi, %esi\n"
        "    .byte 0xf3, 0x48, 0x0f, 0x1e, 0xce\n" /* rdsspq %rsi */
        "    testq %rsi, %rsi\n"
        "    jnz 3f\n"
        "    ret\n"
        "3:  popq %rdi\n"
        ".cfi_adjust_cfa_offset -8\n"
        "    jmp *%rdi\n"
        ".cfi_endproc\n"
        ".size vfork, .-vfork\n");
#endif
