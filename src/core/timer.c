/* The timer queue: a 4-ary min-heap of deadlines in one array.
 *
 * Timer nodes are embedded in tasks and cancel scopes, which live in a
 * hundred thousand different stack pages when a hundred thousand tasks
 * sleep; a heap that links the nodes themselves (we first used a pairing
 * heap) touches those pages at every operation and spends its time in TLB
 * misses.  Here the heap entries (deadline, sequence, handle) sit in one
 * array, and a node is reached through a handle table (which also holds
 * its callback) only when it fires: moving entries updates the handle
 * table, never the nodes.  A node is thus only a handle and a flag, and
 * sits in the task record's first cache line with the other fields a
 * sleep touches.  A 4-ary heap halves the depth of a binary one for the
 * same comparisons per level.
 *
 * Arming must not fail - a sleeping task costs no allocation - so capacity
 * is reserved ahead: one slot per task (its sleep) at spawn and one per
 * cancel scope at entry, the only places that may report WD_ENOMEM.
 * The sequence number makes equal deadlines fire in arming order.
 */
#include "internal.h"

#define WD__NONE UINT32_MAX

static inline bool less(const wd__tent *a, const wd__tent *b) {
  return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static inline void place(wd__timers *t, uint32_t pos, wd__tent e) {
  t->heap[pos] = e;
  t->hnd[e.h].pos = pos;
}

static void sift_up(wd__timers *t, uint32_t pos, wd__tent e) {
  while (pos > 0) {
    uint32_t parent = (pos - 1) / 4;
    if (!less(&e, &t->heap[parent])) break;
    place(t, pos, t->heap[parent]);
    pos = parent;
  }
  place(t, pos, e);
}

static void sift_down(wd__timers *t, uint32_t pos, wd__tent e) {
  for (;;) {
    uint32_t first = 4 * pos + 1;
    if (first >= t->n) break;
    uint32_t best = first, end = first + 4 < t->n ? first + 4 : t->n;
    for (uint32_t c = first + 1; c < end; c++)
      if (less(&t->heap[c], &t->heap[best])) best = c;
    if (!less(&t->heap[best], &e)) break;
    place(t, pos, t->heap[best]);
    pos = best;
  }
  place(t, pos, e);
}

static void remove_at(wd__timers *t, uint32_t pos) {
  wd__tent last = t->heap[--t->n];
  if (pos == t->n) return;
  if (pos > 0 && less(&last, &t->heap[(pos - 1) / 4]))
    sift_up(t, pos, last);
  else
    sift_down(t, pos, last);
}

static void free_handle(wd__timers *t, uint32_t h) {
  t->hnd[h].node = NULL;
  t->hnd[h].pos = t->free_head;
  t->free_head = h;
}

static int grow(wd__timers *t) {
  uint32_t cap = t->cap ? t->cap * 2 : 64;
  wd__tent *heap = wd__realloc(t->heap, cap * sizeof *heap);
  if (!heap) return WD_ENOMEM;
  t->heap = heap;
  wd__thnd *hnd = wd__realloc(t->hnd, cap * sizeof *hnd);
  if (!hnd) return WD_ENOMEM; /* the larger heap array is kept; harmless */
  t->hnd = hnd;
  for (uint32_t h = cap; h-- > t->cap;)
    free_handle(t, h);
  t->cap = cap;
  return 0;
}

int wd__timers_grow(wd_runtime *rt) { return grow(&rt->timers); }

void wd__timers_fini(wd_runtime *rt) {
  wd__free(rt->timers.heap);
  wd__free(rt->timers.hnd);
  rt->timers = (wd__timers){0};
}

void wd__timer_disarm(wd_runtime *rt, wd_timer_node *n) {
  if (!n->armed_) return;
  wd__timers *t = &rt->timers;
  remove_at(t, t->hnd[n->hidx_].pos);
  free_handle(t, n->hidx_);
  n->armed_ = false;
}

void wd__timer_arm(wd_runtime *rt, wd_timer_node *n, wd_time when,
                   void (*fire)(wd_timer_node *)) {
  wd__timers *t = &rt->timers;
  wd__timer_disarm(rt, n);
  uint32_t h = t->free_head; /* a reservation guarantees one */
  t->free_head = t->hnd[h].pos;
  t->hnd[h].node = n;
  t->hnd[h].fire = fire;
  n->hidx_ = h;
  n->armed_ = true;
  wd__tent e = {when, t->seq++, h};
  sift_up(t, t->n++, e);
}

wd_time wd__timer_when(const wd_runtime *rt, const wd_timer_node *n) {
  const wd__timers *t = &rt->timers;
  return t->heap[t->hnd[n->hidx_].pos].when;
}

bool wd__timers_next(const wd_runtime *rt, wd_time *when) {
  if (!rt->timers.n) return false;
  *when = rt->timers.heap[0].when;
  return true;
}

void wd__timers_expire(wd_runtime *rt, wd_time now) {
  wd__timers *t = &rt->timers;
  while (t->n && t->heap[0].when <= now) {
    uint32_t h = t->heap[0].h;
    wd_timer_node *n = t->hnd[h].node;
    void (*fire)(wd_timer_node *) = t->hnd[h].fire;
    remove_at(t, 0);
    free_handle(t, h);
    n->armed_ = false;
    fire(n);
  }
}
