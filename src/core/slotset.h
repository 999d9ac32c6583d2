/* A set of small integers (stack slot numbers) whose lowest and highest
 * members are found in a few steps: a 64-way tree of bit words.  Level 0
 * has a bit per slot; a bit of level k+1 says whether the word of level k
 * under it has any bit set; the top level is one word.  Finding the lowest
 * member reads one word per level; adding or removing one usually writes
 * a single word.  Private to src/core/.
 */
#ifndef WD_CORE_SLOTSET_H
#define WD_CORE_SLOTSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 64^4 slots: more stacks of one size than an address space holds. */
#define WD__SLOTSET_LEVELS 4

typedef struct wd__slotset {
  uint64_t *lv[WD__SLOTSET_LEVELS];
  size_t cap; /* slots 0..cap-1 may be members */
  size_t low; /* no member lies below level-0 word low */
  int depth;  /* levels in use; lv[depth - 1] is a single word */
} wd__slotset;

/* Room for slots 0..cap-1 (cap grows only).  WD_ENOMEM, with the set
 * unchanged, if memory runs out. */
int wd__slotset_grow(wd__slotset *s, size_t cap);
void wd__slotset_free(wd__slotset *s);

static inline bool wd__slotset_empty(const wd__slotset *s) {
  return !s->depth || !s->lv[s->depth - 1][0];
}

/* The levels above 0, when a level-0 word became non-empty or empty. */
void wd__slotset_add_up(wd__slotset *s, size_t word);
void wd__slotset_del_up(wd__slotset *s, size_t word);

static inline void wd__slotset_add(wd__slotset *s, size_t i) {
  uint64_t *w = &s->lv[0][i >> 6], was = *w;
  *w = was | (uint64_t)1 << (i & 63);
  if (!was) wd__slotset_add_up(s, i >> 6);
  if (i >> 6 < s->low) s->low = i >> 6;
}

static inline void wd__slotset_del(wd__slotset *s, size_t i) {
  uint64_t *w = &s->lv[0][i >> 6];
  *w &= ~((uint64_t)1 << (i & 63));
  if (!*w) wd__slotset_del_up(s, i >> 6);
}

/* The lowest member, found from the top; the set must not be empty. */
size_t wd__slotset_first_walk(wd__slotset *s);

/* The lowest member; the set must not be empty.  Usually in the word the
 * last search ended at. */
static inline size_t wd__slotset_first(wd__slotset *s) {
  uint64_t w = s->lv[0][s->low];
  if (__builtin_expect(!w, 0)) return wd__slotset_first_walk(s);
  return s->low << 6 | (size_t)__builtin_ctzll(w);
}

/* The highest member; the set must not be empty. */
static inline size_t wd__slotset_last(const wd__slotset *s) {
  size_t i = 0;
  for (int k = s->depth; k-- > 0;)
    i = i << 6 | (size_t)(63 - __builtin_clzll(s->lv[k][i]));
  return i;
}

/* The n-th member after i (n >= 1) if it lies in i's level-0 word, else
 * SIZE_MAX: a cheap look ahead for prefetching. */
static inline size_t wd__slotset_near_next(const wd__slotset *s, size_t i,
                                           int n) {
  uint64_t w = s->lv[0][i >> 6] & (~(uint64_t)1 << (i & 63));
  while (--n > 0 && w)
    w &= w - 1;
  return w ? (i & ~(size_t)63) | (size_t)__builtin_ctzll(w) : SIZE_MAX;
}

#endif
