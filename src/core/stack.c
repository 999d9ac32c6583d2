/* Task stacks: arenas, size classes, the stack cache, guard pages, canaries.
 *
 * Stacks are carved from large MAP_NORESERVE arenas rather than mapped one
 * by one, so a million stacks cost a few hundred mappings and no commit
 * charge; a page is committed only when a task touches it.  Free stacks go
 * on a LIFO list per size class (the node lives in the stack's own top page,
 * already committed), so a spawn normally makes no system call.  When the
 * runtime is idle, the pages below the top page of free stacks unused for
 * a while, past the WD__HOT_STACKS most recently freed of a class, are
 * returned to the kernel, so a burst of tasks does not pin its memory for
 * ever.
 *
 * The free stacks of a class sit in an array used as a double-ended queue
 * (newest at one end for reuse, oldest at the other for trimming), not in
 * a list threaded through the stacks: taking one then reads no stack
 * memory, and the records of the next few to be taken are known and are
 * prefetched.  With a hundred thousand tasks each record is a cache and
 * TLB miss; prefetched a few spawns ahead, the misses overlap.  The array
 * grows when a slot is carved, where failure can be reported, so that
 * giving a stack back never allocates.
 *
 * Overflow protection is a budget.  A guard page costs two of the
 * process's vm.max_map_count mappings (it splits the arena), so arenas are
 * guarded while a quarter of the headroom measured at first use lasts
 * (half of it for us, two mappings per guard).  Past it, arenas use
 * canaries: slot i's stack spans [lo_i, lo_{i+1} - 64) and its canary sits in
 * the 64 bytes just below lo_i, which are in the top page of stack i-1.  That
 * page is committed anyway when slot i-1 is in use, so a canary costs no
 * memory, and the scheduler checks it at every switch away from a task.
 */
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "stack.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define WD_VALGRIND 1
#endif
#endif
#if WD_ASAN
#include <sanitizer/asan_interface.h>
#endif

#define WD__HOT_STACKS 1024
#define WD__RETAIN_MS 2000
#define WD__ARENA_MAX_BYTES ((size_t)1 << 30)
#define WD__ARENA_MAX_SLOTS 4096
#define WD__CLASS_MIN 15 /* 32 KiB */
#define WD__CLASS_MAX 26 /* 64 MiB */
#define WD__NCLASSES (WD__CLASS_MAX - WD__CLASS_MIN + 1)

/* A free stack in its class's queue. */
typedef struct free_ent {
  char *lo, *hi;
  uint64_t *canary;
  uint64_t freed_ms; /* loop time when freed */
} free_ent;

/* A stack whose pages below the top one were given back: rarely taken, so
 * listed through its own top page, which stays committed. */
typedef struct cold_node {
  struct cold_node *next;
  wd__stack st;
} cold_node;

struct wd__stack_pool {
  size_t slot;
  wd__arena *arenas;       /* newest first */
  free_ent *q;             /* free stacks: a ring, oldest at q[first] */
  size_t cap, first, nhot; /* cap: a power of two, >= stacks carved */
  size_t carved;
  cold_node *cold;
  size_t ncold;
  size_t next_nslots;
};

/* How many takes ahead a free stack's record is prefetched. */
#define WD__PREFETCH_AHEAD 3

size_t wd__page;
wd__arena_ref wd__arena_tab[WD__ARENA_TAB];
static atomic_long guard_budget = LONG_MIN;
static atomic_int said_budget;

static long count_maps(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return 0;
  long n = 0;
  int c;
  while ((c = getc(f)) != EOF)
    if (c == '\n') n++;
  fclose(f);
  return n;
}

static long read_max_maps(void) {
  long v = 65530;
  FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
  if (f) {
    if (fscanf(f, "%ld", &v) != 1) v = 65530;
    fclose(f);
  }
  return v;
}

/* Reserve n guard pages from the process-wide budget. */
static int take_guards(long n) {
  long b = atomic_load(&guard_budget);
  if (b == LONG_MIN) {
    long head = read_max_maps() - count_maps();
    long init = head > 0 ? head / 4 : 0;
    atomic_compare_exchange_strong(&guard_budget, &b, init);
    b = atomic_load(&guard_budget);
  }
  while (b >= n)
    if (atomic_compare_exchange_weak(&guard_budget, &b, b - n)) return 1;
  return 0;
}

static void give_guards(long n) { atomic_fetch_add(&guard_budget, n); }

/* The size class of a stack of size bytes: slots are powers of two from
 * 2^WD__CLASS_MIN.  A stack size names the slot, which also holds the guard
 * page (or the canary page) and the task record at its top: what the task's
 * frames get is a page and a record less. */
static int class_of(size_t size) {
  if (size <= ((size_t)1 << WD__CLASS_MIN)) return 0;
  int log2 = 64 - __builtin_clzll((unsigned long long)(size - 1));
  return log2 > WD__CLASS_MAX ? -1 : log2 - WD__CLASS_MIN;
}

int wd__stacks_init(wd_runtime *rt) {
  if (!wd__page) wd__page = (size_t)sysconf(_SC_PAGESIZE);
  rt->pools = wd__calloc(WD__NCLASSES, sizeof(wd__stack_pool));
  if (!rt->pools) return WD_ENOMEM;
  for (int c = 0; c < WD__NCLASSES; c++) {
    rt->pools[c].slot = (size_t)1 << (c + WD__CLASS_MIN);
    rt->pools[c].next_nslots = 16;
  }
  /* A slot holds a guard page, the record and frames: with large pages
   * (64 KiB on some AArch64 systems) the smallest classes are too small. */
  rt->min_class = 0;
  while (((size_t)1 << (rt->min_class + WD__CLASS_MIN)) < 4 * wd__page)
    rt->min_class++;
  rt->default_class = class_of(rt->default_stack);
  if (rt->default_class < rt->min_class) rt->default_class = rt->min_class;
  return 0;
}

static void tab_add(wd__arena *a) {
  for (int i = 0; i < WD__ARENA_TAB; i++) {
    char *expect = NULL;
    if (atomic_compare_exchange_strong(&wd__arena_tab[i].base, &expect,
                                       (char *)1)) {
      wd__arena_tab[i].len = a->len;
      wd__arena_tab[i].slot = a->slot;
      atomic_store(&wd__arena_tab[i].base, a->base);
      a->tab_index = i;
      return;
    }
  }
  a->tab_index = -1; /* the handler will not name this arena's tasks */
}

static void arena_free(wd__arena *a) {
#if WD_VALGRIND
  if (a->vg_ids)
    for (size_t i = 0; i < a->carved; i++)
      VALGRIND_STACK_DEREGISTER(a->vg_ids[i]);
  wd__free(a->vg_ids);
#endif
  if (a->tab_index >= 0) atomic_store(&wd__arena_tab[a->tab_index].base, NULL);
  if (a->guarded) give_guards((long)a->nslots);
  munmap(a->base, a->len);
  wd__free(a);
}

void wd__stacks_deinit(wd_runtime *rt) {
  if (!rt->pools) return;
  for (int c = 0; c < WD__NCLASSES; c++) {
    wd__arena *a = rt->pools[c].arenas;
    while (a) {
      wd__arena *next = a->next;
      arena_free(a);
      a = next;
    }
    wd__free(rt->pools[c].q);
  }
  wd__free(rt->pools);
  rt->pools = NULL;
}

static wd__arena *arena_new(wd_runtime *rt, wd__stack_pool *p) {
  size_t n = p->next_nslots;
  while (n > 1 && n * p->slot > WD__ARENA_MAX_BYTES)
    n /= 2;
  wd__arena *a = wd__calloc(1, sizeof *a);
  if (!a) return NULL;
  a->slot = p->slot;
  a->nslots = n;
  a->guarded = rt->guard == WD_GUARD_AUTO && take_guards((long)n);
  if (!a->guarded && rt->guard == WD_GUARD_AUTO &&
      !atomic_exchange(&said_budget, 1))
    fprintf(stderr,
            "warden: guard-page budget used up (vm.max_map_count %ld); "
            "further task stacks are checked by canaries\n",
            read_max_maps());
  /* A canary arena needs one more page: slot 0's canary page. */
  a->len = n * p->slot + (a->guarded ? 0 : wd__page);
  a->base = mmap(NULL, a->len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (a->base == MAP_FAILED) {
    if (a->guarded) give_guards((long)n);
    wd__free(a);
    return NULL;
  }
#if WD_VALGRIND
  if (RUNNING_ON_VALGRIND) {
    a->vg_ids = wd__calloc(n, sizeof *a->vg_ids);
    if (!a->vg_ids) {
      munmap(a->base, a->len);
      if (a->guarded) give_guards((long)n);
      wd__free(a);
      return NULL;
    }
  }
#endif
  a->tab_index = -1;
  if (a->guarded) tab_add(a);
  a->next = p->arenas;
  p->arenas = a;
  if (p->next_nslots < WD__ARENA_MAX_SLOTS) p->next_nslots *= 2;
  return a;
}

/* Make room in the queue for one more stack.  Only called to carve, that
 * is with the queue empty: nothing in it to keep. */
static int queue_grow(wd__stack_pool *p) {
  if (p->carved < p->cap) return 0;
  size_t cap = p->cap ? p->cap * 2 : 64;
  free_ent *q = wd__realloc(p->q, cap * sizeof *q);
  if (!q) return WD_ENOMEM;
  p->q = q;
  p->cap = cap;
  p->first = 0;
  return 0;
}

/* Carve the next never-used slot of the newest arena. */
static int carve(wd_runtime *rt, wd__stack_pool *p, wd__stack *st) {
  if (queue_grow(p)) return WD_ENOMEM;
  wd__arena *a = p->arenas;
  if (!a || a->carved == a->nslots) {
    a = arena_new(rt, p);
    if (!a) return WD_ENOMEM;
  }
  size_t i = a->carved;
  char *slot = a->base + i * a->slot;
  if (a->guarded) {
    if (mprotect(slot, wd__page, PROT_NONE) != 0) return WD_ENOMEM;
    st->lo = slot + wd__page;
    st->hi = slot + a->slot;
    st->canary = NULL;
  } else {
    st->lo = slot + wd__page;
    st->hi = slot + a->slot + wd__page - 64;
    st->canary = (uint64_t *)(st->lo - 64);
    *st->canary = WD__CANARY;
  }
  /* Colour: records (and first frames) of neighbouring slots start at
   * different page offsets.  At the same offset a store to one task's
   * record and a load from the next one's look alike to the CPU in their
   * low 12 bits (4K aliasing), which stalled every switch, and the records
   * compete for the same L1 sets.  Costs at most 448 bytes of stack. */
  st->hi -= (i & 7) * 64;
  st->pool = p;
  a->carved++;
  p->carved++;
#if WD_VALGRIND
  if (a->vg_ids) a->vg_ids[i] = VALGRIND_STACK_REGISTER(st->lo, st->hi);
#endif
  return 0;
}

/* Retention is measured on the runtime's clock, coarsely and for free
 * (so tests can drive it with the virtual clock). */
static uint64_t coarse_ms(wd_runtime *rt) { return wd__loop_ms(rt); }

/* Load the record lines (and the first frame's) of the stack that a take
 * WD__PREFETCH_AHEAD from now will return: a spawn writes all of them. */
static inline void prefetch_ahead(const wd__stack_pool *p) {
  if (p->nhot < WD__PREFETCH_AHEAD) return;
  const free_ent *e =
      &p->q[(p->first + p->nhot - WD__PREFETCH_AHEAD) & (p->cap - 1)];
  char *rec = (char *)wd__task_at(e->hi);
  for (size_t off = 0; off < sizeof(wd_task); off += 64)
    __builtin_prefetch(rec + off, 1);
  __builtin_prefetch(rec - 64, 1);
}

int wd__stack_get(wd_runtime *rt, size_t size, wd__stack *out) {
  int c = size ? class_of(size) : rt->default_class;
  if (c < 0) return WD_EINVAL;
  if (c < rt->min_class) c = rt->min_class;
  if (wd__alloc_fail_point()) return WD_ENOMEM;
  wd__stack_pool *p = &rt->pools[c];
  if (WD_LIKELY(p->nhot)) {
    const free_ent *e = &p->q[(p->first + --p->nhot) & (p->cap - 1)];
    *out = (wd__stack){e->lo, e->hi, e->canary, p};
    prefetch_ahead(p);
    return 0;
  }
  cold_node *f = p->cold;
  if (f) {
    p->cold = f->next;
    p->ncold--;
    *out = f->st;
    return 0;
  }
  return carve(rt, p, out);
}

void wd__stack_put(wd_runtime *rt, const wd__stack *st) {
  wd__stack_pool *p = st->pool;
#if WD_ASAN
  /* Frames that never returned (the task's last ones) left their redzones
   * poisoned; the next task on this stack must start clean. */
  ASAN_UNPOISON_MEMORY_REGION(st->lo, (size_t)(st->hi - st->lo));
#endif
  /* Room is certain: the queue's capacity covers every stack carved. */
  p->q[(p->first + p->nhot++) & (p->cap - 1)] =
      (free_ent){st->lo, st->hi, st->canary, coarse_ms(rt)};
}

/* Give back the pages of free stacks that have not been reused for
 * WD__RETAIN_MS, beyond the WD__HOT_STACKS most recently freed of each
 * class, at most budget of them: one madvise each, done when the runtime is
 * idle rather than when a task ends, and late enough that a workload that
 * comes back in bursts finds its stacks still committed.  Returns true if
 * more are due now. */
bool wd__stacks_trim(wd_runtime *rt, size_t budget) {
  uint64_t now = coarse_ms(rt);
  for (int c = 0; c < WD__NCLASSES; c++) {
    wd__stack_pool *p = &rt->pools[c];
    while (p->nhot > WD__HOT_STACKS &&
           p->q[p->first].freed_ms + WD__RETAIN_MS <= now) {
      if (budget-- == 0) return true;
      free_ent e = p->q[p->first];
      p->first = (p->first + 1) & (p->cap - 1);
      p->nhot--;
      char *top_page =
          (char *)((uintptr_t)(e.hi - 1) & ~(uintptr_t)(wd__page - 1));
      if (top_page > e.lo)
        madvise(e.lo, (size_t)(top_page - e.lo), MADV_DONTNEED);
      cold_node *f = (cold_node *)(e.hi - sizeof(cold_node));
      f->st = (wd__stack){e.lo, e.hi, e.canary, p};
      f->next = p->cold;
      p->cold = f;
      p->ncold++;
    }
  }
  return false;
}

/* Milliseconds until wd__stacks_trim() has work, or UINT64_MAX. */
uint64_t wd__stacks_next_trim(wd_runtime *rt) {
  uint64_t now = coarse_ms(rt), next = UINT64_MAX;
  for (int c = 0; c < WD__NCLASSES; c++) {
    wd__stack_pool *p = &rt->pools[c];
    if (p->nhot <= WD__HOT_STACKS) continue;
    uint64_t due = p->q[p->first].freed_ms + WD__RETAIN_MS;
    uint64_t in = due > now ? due - now : 0;
    if (in < next) next = in;
  }
  return next;
}

void wd__stacks_stats(const wd_runtime *rt, size_t *mapped, size_t *guarded,
                      size_t *cached, size_t *returned) {
  *mapped = *guarded = *cached = *returned = 0;
  if (!rt->pools) return;
  for (int c = 0; c < WD__NCLASSES; c++) {
    *cached += rt->pools[c].nhot + rt->pools[c].ncold;
    *returned += rt->pools[c].ncold;
    for (wd__arena *a = rt->pools[c].arenas; a; a = a->next) {
      *mapped += a->carved;
      if (a->guarded) *guarded += a->carved;
    }
  }
}
