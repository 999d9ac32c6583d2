/* Context switch for x86-64 System V: the entry of a new task.
 *
 * The switch itself is inline assembly in internal.h (wd__ctx_switch): it
 * pushes a resume address and rbp, swaps stack pointers and jumps to the
 * other side's resume address; the compiler saves whatever else is live.
 * A new task's stack, prepared by wd__ctx_make(), makes that jump land
 * here with fn and arg on the stack.  The x87 control word and MXCSR are
 * deliberately not switched: tasks share the thread's floating-point modes
 * (docs/core.md).
 */
        .text
        .globl  wd__ctx_entry
        .hidden wd__ctx_entry
        .type   wd__ctx_entry, @function
        .p2align 4
wd__ctx_entry:
        .cfi_startproc
        .cfi_undefined rip      /* the first frame of a task: stop unwinding */
        popq    %rax            /* fn */
        popq    %rdi            /* arg */
        andq    $-16, %rsp
        callq   *%rax
        ud2                     /* fn never returns */
        .cfi_endproc
        .size   wd__ctx_entry, .-wd__ctx_entry

        .section .note.GNU-stack,"",@progbits
