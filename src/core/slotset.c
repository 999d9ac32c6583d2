/* Growing a slot set (slotset.h): every level keeps a word per 64 words of
 * the level below, and the tree gains a level when its top word would
 * have to cover more than 64 words. */
#include "slotset.h"

#include <string.h>

#include "internal.h"

static size_t words_at(size_t cap, int level) {
  size_t span = (size_t)1 << (6 * (level + 1)); /* slots per word */
  return (cap + span - 1) / span;
}

static int depth_for(size_t cap) {
  int d = 1;
  while (d < WD__SLOTSET_LEVELS && words_at(cap, d - 1) > 1)
    d++;
  return d;
}

int wd__slotset_grow(wd__slotset *s, size_t cap) {
  if (cap <= s->cap) return 0;
  int depth = depth_for(cap);
  if (words_at(cap, depth - 1) > 1) return WD_ENOMEM; /* beyond 64^levels */
  /* Allocate every level first, so that a failure leaves s as it was. */
  uint64_t *nw[WD__SLOTSET_LEVELS] = {0};
  for (int k = 0; k < depth; k++) {
    nw[k] = wd__calloc(words_at(cap, k), sizeof(uint64_t));
    if (!nw[k]) {
      while (k-- > 0)
        wd__free(nw[k]);
      return WD_ENOMEM;
    }
  }
  for (int k = 0; k < s->depth; k++) {
    memcpy(nw[k], s->lv[k], words_at(s->cap, k) * sizeof(uint64_t));
    wd__free(s->lv[k]);
  }
  /* A new level's word 0 stands for word 0 of the old top level, the only
   * word the old tree had there. */
  for (int k = s->depth; k < depth; k++)
    if (k > 0 && nw[k - 1][0]) nw[k][0] = 1;
  for (int k = 0; k < depth; k++)
    s->lv[k] = nw[k];
  s->cap = cap;
  s->depth = depth;
  return 0;
}

void wd__slotset_add_up(wd__slotset *s, size_t i) {
  for (int k = 1; k < s->depth; k++) {
    uint64_t *w = &s->lv[k][i >> 6], was = *w;
    *w = was | (uint64_t)1 << (i & 63);
    if (was) return; /* the levels above already know this word */
    i >>= 6;
  }
}

void wd__slotset_del_up(wd__slotset *s, size_t i) {
  for (int k = 1; k < s->depth; k++) {
    uint64_t *w = &s->lv[k][i >> 6];
    *w &= ~((uint64_t)1 << (i & 63));
    if (*w) return;
    i >>= 6;
  }
}

size_t wd__slotset_first_walk(wd__slotset *s) {
  size_t i = 0;
  for (int k = s->depth; k-- > 0;)
    i = i << 6 | (size_t)__builtin_ctzll(s->lv[k][i]);
  s->low = i >> 6;
  return i;
}

void wd__slotset_free(wd__slotset *s) {
  for (int k = 0; k < s->depth; k++)
    wd__free(s->lv[k]);
  *s = (wd__slotset){0};
}
