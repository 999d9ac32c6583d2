/* Task stacks: arenas, size classes, the stack cache, guard pages, canaries.
 *
 * Stacks are carved from large MAP_NORESERVE arenas rather than mapped one
 * by one, so a million stacks cost a few hundred mappings and no commit
 * charge; a page is committed only when a task touches it.  Free stacks
 * are kept per size class and reused, so a spawn normally makes no system
 * call.  When the runtime is idle, the pages below the top page of free
 * stacks unused for a while, past the WD__HOT_STACKS that spawns take
 * first, are returned to the kernel, so a burst of tasks does not pin its
 * memory for ever.
 *
 * Each carved stack has a number in its class, in carving order (address
 * order within an arena).  Beyond the most recently freed (the stash,
 * below), the free ones are a slot set (slotset.h), and a spawn takes the
 * lowest: tasks end in any order, but a large burst of spawns then walks
 * its stacks' pages in address order.  With a hundred thousand tasks
 * every page is a TLB miss, and in a virtual machine a page walk is
 * itself a string of cache misses unless neighbouring pages' entries are
 * walked one after the other; reusing stacks in the order they were freed
 * (LIFO) made the spawns and first runs of 100k sleepers three times
 * slower.  In front of the set, the WD__STASH (1024) most recently freed
 * stacks are kept LIFO, so that a task's end and the spawn that follows
 * (the common short-lived task) meet on a stack still in the caches for a
 * few instructions, and bursts that fit in the TLB skip the set.  Taking
 * a stack reads no stack memory, and the record of the stack a few takes
 * ahead is prefetched.  The table and the sets grow when a slot is carved,
 * where failure can be reported, so that giving a stack back never
 * allocates.
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

#include "slotset.h"
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

/* The most recently freed stacks are kept LIFO in front of the set, where
 * a task that ends and a spawn that follows (the common short-lived task)
 * find each other in a couple of instructions and on a stack still in the
 * caches.  The order matters most past what the TLB holds (1536-3072
 * entries on current x86 cores), so a burst of up to this many spawns
 * should lose little to LIFO order, and only the stacks of a larger one
 * go through the set.  No more than trimming keeps, so that a
 * pool with stacks to trim always has some in the set. */
#define WD__STASH 1024
_Static_assert(WD__STASH <= WD__HOT_STACKS, "trimming takes from the set");
_Static_assert((WD__STASH & (WD__STASH - 1)) == 0, "the ring's % is a mask");

/* A carved stack, by its number in the pool. */
typedef struct slot_ent {
  char *lo, *hi;
  uint64_t *canary;
  uint64_t freed_ms; /* loop time when last freed */
} slot_ent;

struct wd__stack_pool {
  size_t slot;
  wd__arena *arenas; /* newest first */
  slot_ent *ent;     /* by slot number; valid for free stacks only */
  size_t cap;        /* room in ent and in the sets */
  size_t carved;
  uint32_t *stash;          /* a ring of the last WD__STASH freed, taken first;
                             * allocated with the class's first stack */
  size_t nstash, stash_end; /* the newest is stash[(stash_end - 1) % ...] */
  wd__slotset hot;    /* the other free stacks whose pages are committed */
  wd__slotset cold;   /* free stacks whose pages were given back */
  size_t nhot, ncold; /* nhot counts the stash too */
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
    wd__free(rt->pools[c].ent);
    wd__free(rt->pools[c].stash);
    wd__slotset_free(&rt->pools[c].hot);
    wd__slotset_free(&rt->pools[c].cold);
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

/* Make room for one more stack in the table and the sets, where failure
 * can be reported, so that giving a stack back never allocates. */
static int room_for_one(wd__stack_pool *p) {
  if (p->carved < p->cap) return 0;
  if (!p->stash) { /* only the classes in use pay for one (4 KiB) */
    p->stash = wd__malloc(WD__STASH * sizeof *p->stash);
    if (!p->stash) return WD_ENOMEM;
  }
  size_t cap = p->cap ? p->cap * 2 : 64;
  slot_ent *ent = wd__realloc(p->ent, cap * sizeof *ent);
  if (!ent) return WD_ENOMEM;
  p->ent = ent; /* larger and kept even if a set cannot grow: harmless */
  if (wd__slotset_grow(&p->hot, cap) || wd__slotset_grow(&p->cold, cap))
    return WD_ENOMEM;
  p->cap = cap;
  return 0;
}

/* Carve the next never-used slot of the newest arena.  Out of line: it
 * runs once per stack, and inlined it would give every take a large
 * frame. */
__attribute__((noinline)) static int carve(wd_runtime *rt, int c,
                                           wd__stack *st) {
  wd__stack_pool *p = &rt->pools[c];
  if (room_for_one(p)) return WD_ENOMEM;
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
  st->slot = (uint32_t)p->carved;
  st->cls = (uint32_t)c;
  p->carved++;
  a->carved++;
#if WD_VALGRIND
  if (a->vg_ids) a->vg_ids[i] = VALGRIND_STACK_REGISTER(st->lo, st->hi);
#endif
  return 0;
}

/* Retention is measured on the runtime's clock, coarsely and for free
 * (so tests can drive it with the virtual clock). */
static uint64_t coarse_ms(wd_runtime *rt) { return wd__loop_ms(rt); }

/* Load the record lines (and the first frame's) of the stack that a take
 * WD__PREFETCH_AHEAD from now will return, if it is near: a spawn writes
 * all of them. */
static inline void prefetch_ahead(const wd__stack_pool *p, size_t taken) {
  size_t n = wd__slotset_near_next(&p->hot, taken, WD__PREFETCH_AHEAD);
  if (n == SIZE_MAX) return;
  char *rec = (char *)wd__task_at(p->ent[n].hi);
  for (size_t off = 0; off < sizeof(wd_task); off += 64)
    __builtin_prefetch(rec + off, 1);
  __builtin_prefetch(rec - 64, 1);
}

static inline void fill(const wd__stack_pool *p, size_t i, int c,
                        wd__stack *out) {
  const slot_ent *e = &p->ent[i];
  *out = (wd__stack){e->lo, e->hi, e->canary, (uint32_t)i, (uint32_t)c};
}

static inline void take(wd__stack_pool *p, wd__slotset *set, size_t i, int c,
                        wd__stack *out) {
  wd__slotset_del(set, i);
  fill(p, i, c, out);
}

int wd__stack_get(wd_runtime *rt, size_t size, wd__stack *out) {
  int c = rt->default_class; /* at least min_class */
  if (size) {
    c = class_of(size);
    if (c < 0) return WD_EINVAL;
    if (c < rt->min_class) c = rt->min_class;
  }
  if (wd__alloc_fail_point()) return WD_ENOMEM;
  wd__stack_pool *p = &rt->pools[c];
  if (WD_LIKELY(p->nstash)) {
    p->nstash--;
    fill(p, p->stash[--p->stash_end % WD__STASH], c, out);
    p->nhot--;
    return 0;
  }
  if (p->nhot) {
    size_t i = wd__slotset_first(&p->hot);
    take(p, &p->hot, i, c, out);
    p->nhot--;
    prefetch_ahead(p, i);
    return 0;
  }
  if (p->ncold) {
    take(p, &p->cold, wd__slotset_first(&p->cold), c, out);
    p->ncold--;
    return 0;
  }
  return carve(rt, c, out);
}

void wd__stack_put(wd_runtime *rt, const wd__stack *st) {
  wd__stack_pool *p = &rt->pools[st->cls];
#if WD_ASAN
  /* Frames that never returned (the task's last ones) left their redzones
   * poisoned; the next task on this stack must start clean. */
  ASAN_UNPOISON_MEMORY_REGION(st->lo, (size_t)(st->hi - st->lo));
#endif
  /* Written here, not when carved: the table's pages for stacks that were
   * never freed stay untouched, as a million parked tasks need.  Room in
   * the set is certain: it grew when the stack was carved. */
  p->ent[st->slot] = (slot_ent){st->lo, st->hi, st->canary, coarse_ms(rt)};
  p->nhot++;
  if (p->nstash == WD__STASH) { /* the oldest in the stash makes room */
    wd__slotset_add(&p->hot, p->stash[(p->stash_end - WD__STASH) % WD__STASH]);
    p->nstash--;
  }
  p->stash[p->stash_end++ % WD__STASH] = st->slot;
  p->nstash++;
}

/* Give back the pages of free stacks that have not been reused for
 * WD__RETAIN_MS, highest first and beyond the WD__HOT_STACKS of each class
 * that spawns take next (the stash, then the lowest in the set), at most
 * budget of them: one madvise each, done when the runtime is idle rather
 * than when a task ends, and late enough that a workload that comes back
 * in bursts finds its stacks still committed.  The highest free stack is
 * the one spawns reach last, so it has normally been free the longest;
 * when it was freed recently the pass stops there rather than search the
 * set.  Returns true if more are due now. */
bool wd__stacks_trim(wd_runtime *rt, size_t budget) {
  uint64_t now = coarse_ms(rt);
  for (int c = 0; c < WD__NCLASSES; c++) {
    wd__stack_pool *p = &rt->pools[c];
    while (p->nhot > WD__HOT_STACKS) {
      size_t i = wd__slotset_last(&p->hot);
      const slot_ent *e = &p->ent[i];
      if (e->freed_ms + WD__RETAIN_MS > now) break;
      if (budget-- == 0) return true;
      char *top_page =
          (char *)((uintptr_t)(e->hi - 1) & ~(uintptr_t)(wd__page - 1));
      if (top_page > e->lo)
        madvise(e->lo, (size_t)(top_page - e->lo), MADV_DONTNEED);
      wd__slotset_del(&p->hot, i);
      wd__slotset_add(&p->cold, i);
      p->nhot--;
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
    uint64_t due = p->ent[wd__slotset_last(&p->hot)].freed_ms + WD__RETAIN_MS;
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
