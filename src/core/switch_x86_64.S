/* Context switch for x86-64 System V.
 *
 * wd__ctx_swap(void **save_sp, void *load_sp) pushes the callee-saved
 * registers on the running stack, stores the stack pointer in *save_sp,
 * loads load_sp and pops the same registers from there.  Everything else is
 * caller-saved at a call, so this is the whole state.  The x87 control word
 * and MXCSR are deliberately not switched: they cost more than the rest of
 * the switch, and warden documents that tasks share the thread's
 * floating-point modes (docs/core.md).
 *
 * A new context's stack is prepared by wd__ctx_make() so that the first
 * swap "returns" into wd__ctx_entry with r12 = fn and r13 = arg.
 */
        .text
        .globl  wd__ctx_swap
        .hidden wd__ctx_swap
        .type   wd__ctx_swap, @function
        .p2align 4
wd__ctx_swap:
        .cfi_startproc
        pushq   %rbp
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        movq    %rsp, (%rdi)
        movq    %rsi, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
        ret
        .cfi_endproc
        .size   wd__ctx_swap, .-wd__ctx_swap

        .globl  wd__ctx_entry
        .hidden wd__ctx_entry
        .type   wd__ctx_entry, @function
        .p2align 4
wd__ctx_entry:
        .cfi_startproc
        .cfi_undefined rip      /* the first frame of a task: stop unwinding */
        movq    %r13, %rdi
        andq    $-16, %rsp
        callq   *%r12
        ud2                     /* fn never returns */
        .cfi_endproc
        .size   wd__ctx_entry, .-wd__ctx_entry

        .section .note.GNU-stack,"",@progbits
