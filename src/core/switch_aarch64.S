/* Context switch for AArch64 (AAPCS64).
 *
 * wd__ctx_swap(void **save_sp, void *load_sp) saves the callee-saved
 * registers x19-x30 and d8-d15 in a 176-byte frame on the running stack,
 * stores sp in *save_sp, loads load_sp and restores the same frame from
 * there.  FPCR is not switched (tasks share the thread's floating-point
 * modes, as on x86-64).  wd__ctx_make() prepares a new stack so that the
 * first swap returns into wd__ctx_entry with x19 = fn and x20 = arg.
 */
        .text
        .globl  wd__ctx_swap
        .hidden wd__ctx_swap
        .type   wd__ctx_swap, %function
        .p2align 4
wd__ctx_swap:
        hint    #34                     /* bti c */
        sub     sp, sp, #176
        stp     x19, x20, [sp, #0]
        stp     x21, x22, [sp, #16]
        stp     x23, x24, [sp, #32]
        stp     x25, x26, [sp, #48]
        stp     x27, x28, [sp, #64]
        stp     x29, x30, [sp, #80]
        stp     d8, d9, [sp, #96]
        stp     d10, d11, [sp, #112]
        stp     d12, d13, [sp, #128]
        stp     d14, d15, [sp, #144]
        mov     x2, sp
        str     x2, [x0]
        mov     sp, x1
        ldp     x19, x20, [sp, #0]
        ldp     x21, x22, [sp, #16]
        ldp     x23, x24, [sp, #32]
        ldp     x25, x26, [sp, #48]
        ldp     x27, x28, [sp, #64]
        ldp     x29, x30, [sp, #80]
        ldp     d8, d9, [sp, #96]
        ldp     d10, d11, [sp, #112]
        ldp     d12, d13, [sp, #128]
        ldp     d14, d15, [sp, #144]
        add     sp, sp, #176
        ret
        .size   wd__ctx_swap, .-wd__ctx_swap

        .globl  wd__ctx_entry
        .hidden wd__ctx_entry
        .type   wd__ctx_entry, %function
        .p2align 4
wd__ctx_entry:
        hint    #34                     /* bti c */
        mov     x0, x20
        blr     x19
        brk     #0
        .size   wd__ctx_entry, .-wd__ctx_entry

        .section .note.GNU-stack,"",%progbits

        /* Mark the object BTI- and PAC-compatible, so that linking it does
         * not turn branch protection off for the whole library. */
        .pushsection .note.gnu.property, "a"
        .p2align 3
        .word   4
        .word   16
        .word   5                       /* NT_GNU_PROPERTY_TYPE_0 */
        .asciz  "GNU"
        .word   0xc0000000              /* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
        .word   4
        .word   3                       /* BTI | PAC */
        .word   0
        .popsection
