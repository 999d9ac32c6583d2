/* Creating and switching execution contexts.
 *
 * The fast path is the assembly wd__ctx_swap of the target architecture
 * (switch_x86_64.S, switch_aarch64.S); it only moves callee-saved registers
 * and the stack pointer.  Building with -DWARDEN_CONTEXT=ucontext selects
 * the portable makecontext/swapcontext fallback instead, which is much
 * slower (swapcontext makes a sigprocmask system call) but runs anywhere
 * glibc does.
 */
#include <stdint.h>
#include <string.h>

#include "internal.h"

#if defined(WD_USE_UCONTEXT)

/* makecontext passes int arguments only: split the pointers. */
static void uc_entry(unsigned fhi, unsigned flo, unsigned ahi, unsigned alo) {
  void (*fn)(void *) =
      (void (*)(void *))(((uintptr_t)fhi << 32) | (uintptr_t)flo);
  void *arg = (void *)(((uintptr_t)ahi << 32) | (uintptr_t)alo);
  fn(arg);
}

void wd__ctx_make(wd__ctx *ctx, void *lo, void *hi, void (*fn)(void *),
                  void *arg) {
  uintptr_t f = (uintptr_t)fn, a = (uintptr_t)arg;
  getcontext(&ctx->uc);
  ctx->uc.uc_stack.ss_sp = lo;
  ctx->uc.uc_stack.ss_size = (size_t)((char *)hi - (char *)lo);
  ctx->uc.uc_link = NULL;
  makecontext(&ctx->uc, (void (*)(void))uc_entry, 4, (unsigned)(f >> 32),
              (unsigned)f, (unsigned)(a >> 32), (unsigned)a);
}

void wd__ctx_switch(wd__ctx *from, wd__ctx *to) {
  swapcontext(&from->uc, &to->uc);
}

#else

void wd__ctx_entry(void);

void wd__ctx_make(wd__ctx *ctx, void *lo, void *hi, void (*fn)(void *),
                  void *arg) {
  (void)lo;
  uintptr_t top = (uintptr_t)hi & ~(uintptr_t)15;
  void **sp = (void **)top;
#if defined(__x86_64__)
  /* What the inline switch in internal.h pops: rbp, then the address it
   * jumps to; wd__ctx_entry then pops fn and arg. */
  *--sp = arg;
  *--sp = (void *)fn;
  *--sp = (void *)wd__ctx_entry;
  *--sp = NULL; /* rbp */
#elif defined(__aarch64__)
  sp -= 22; /* the 176-byte frame of wd__ctx_swap */
  memset(sp, 0, 22 * sizeof(void *));
  sp[0] = (void *)fn;             /* x19 */
  sp[1] = arg;                    /* x20 */
  sp[11] = (void *)wd__ctx_entry; /* x30 */
#else
#error "no assembly context switch for this architecture: use ucontext"
#endif
  ctx->sp = sp;
}

#endif
