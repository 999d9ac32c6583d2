/* Stack arenas, shared between the allocator (stack.c) and the overflow
 * handler (overflow.c), which must find a faulting address's arena from a
 * signal handler: hence a fixed, lock-free table of guarded arenas. */
#ifndef WD_CORE_STACK_H
#define WD_CORE_STACK_H

#include <stdatomic.h>

#include "internal.h"

typedef struct wd__arena {
  char *base;
  size_t len, slot, nslots, carved;
  struct wd__arena *next;
  unsigned *vg_ids; /* Valgrind stack ids, when running under it */
  int tab_index;
  bool guarded;
} wd__arena;

typedef struct wd__arena_ref {
  _Atomic(char *) base; /* NULL: free entry */
  size_t len, slot;
} wd__arena_ref;

#define WD__ARENA_TAB 4096
extern wd__arena_ref wd__arena_tab[WD__ARENA_TAB];
extern size_t wd__page;

/* The task record that lives at the top of the stack [.., hi). */
static inline wd_task *wd__task_at(char *hi) {
  return (wd_task *)(((uintptr_t)hi - sizeof(wd_task)) & ~(uintptr_t)63);
}

void wd__stacks_stats(const wd_runtime *rt, size_t *mapped, size_t *guarded,
                      size_t *cached, size_t *returned);

#endif
