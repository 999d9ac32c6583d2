/* The cache's eviction policy and key hash (cache-policy.c), shared with
 * the cache itself (cache.c).  Private to src/flow/cache*.c.
 *
 * The policy knows nodes - a hash, a weight and a place in one of its
 * three LRU queues - never keys or values: the cache embeds a node in
 * each entry that holds a value, tells the policy about accesses, and is
 * called back (evict) for each node the policy drops. */
#ifndef WD_FLOW_CACHE_INTERNAL_H
#define WD_FLOW_CACHE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <string.h>

#include "../util/list.h"
#include "warden/types.h"

/* Which queue a node is in. */
enum { WD__CQ_NONE = 0, WD__CQ_WINDOW, WD__CQ_PROBATION, WD__CQ_PROTECTED };

/* The link and the queue last: a hit touches them and what the owner puts
 * right after the node (see cache.c's entry). */
typedef struct wd__cnode {
  uint64_t hash;
  size_t weight;
  wd_link lru;   /* in its queue, least recently used first */
  uint8_t queue; /* WD__CQ_* */
} wd__cnode;

typedef struct wd__cpolicy wd__cpolicy;
typedef void (*wd__cevict_fn)(wd__cpolicy *p, wd__cnode *n);

struct wd__cpolicy {
  wd_link q[4]; /* q[WD__CQ_WINDOW] ... q[WD__CQ_PROTECTED] */
  bool bounded;
  size_t max; /* capacity in weight (entries when bounded by count) */
  size_t window_max, protected_max;
  size_t weight, window_weight, protected_weight;
  size_t count;
  size_t count_cap; /* the most entries there can be (max when by count) */
  /* Frequency sketch: 4-bit counters, 16 to a word, 8 words to a block;
   * each key has 4 counters in one block (one cache line). */
  uint64_t *table;
  size_t words; /* a power of two, >= 8; 0 = no sketch yet */
  uint64_t additions, sample_size;
  /* Hill climber: hit rate over each sample, and the window's next step. */
  uint64_t sample_hits, sample_misses;
  double prev_rate, step;
  int64_t adjust; /* what the window still has to grow (< 0: shrink) */
  uint64_t rng;
  wd__cevict_fn evict; /* the node is unlinked before; must not re-enter */
};

/* ---- the key hash --------------------------------------------------------
 *
 * A multiply-fold hash: 16 bytes at a time are folded into the state by a
 * 64x64 -> 128-bit multiply whose halves are xored.  Fast on short keys
 * (one or two multiplies for a key of up to 16 bytes) and well mixed in
 * every bit, which the table (low bits) and the sketch (high bits) both
 * use.  Not a cryptographic hash: the per-cache seed makes collisions
 * hard to aim at, not impossible.  Inline: it is on every get's path. */

#define WD__CK0 0x9e3779b97f4a7c15ull
#define WD__CK1 0xeba2b7af972962a9ull
#define WD__CK2 0x1f894e727227a9edull
#define WD__CK3 0x10bfcd8a4e6c662bull
#define WD__CK4 0xecbeb573ff33d93full

static inline uint64_t wd__cfold(uint64_t a, uint64_t b) {
#ifdef __SIZEOF_INT128__
  __uint128_t r = (__uint128_t)a * b;
  return (uint64_t)r ^ (uint64_t)(r >> 64);
#else
  uint64_t lo = a * b;
  uint64_t hi = (a >> 32) * (b >> 32) + (((a >> 32) * (uint32_t)b) >> 32) +
                (((uint32_t)a * (b >> 32)) >> 32);
  return lo ^ hi;
#endif
}

static inline uint64_t wd__crd64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

static inline uint64_t wd__crd32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* A 64-bit hash of n bytes at key, keyed by seed. */
static inline uint64_t wd__cache_hash(uint64_t seed, const void *key,
                                      size_t n) {
  const unsigned char *p = (const unsigned char *)key;
  /* Not a fold: it does not wait for the key's bytes. */
  uint64_t h = seed ^ ((uint64_t)n * WD__CK0);
  size_t left = n;
  while (left > 16) {
    h = wd__cfold(wd__crd64(p) ^ h ^ WD__CK2, wd__crd64(p + 8) ^ WD__CK3);
    p += 16;
    left -= 16;
  }
  uint64_t a = 0, b = 0;
  if (left >= 8) {
    a = wd__crd64(p);
    b = wd__crd64(p + left - 8);
  } else if (left >= 4) {
    a = wd__crd32(p);
    b = wd__crd32(p + left - 4);
  } else if (left > 0) {
    a = (uint64_t)p[0] << 16 | (uint64_t)p[left / 2] << 8 | p[left - 1];
  }
  h = wd__cfold(a ^ h ^ WD__CK2, b ^ WD__CK3);
  return wd__cfold(h ^ WD__CK4, WD__CK1);
}

/* n bytes at a and b are equal (short keys without a call). */
static inline bool wd__ckey_eq(const unsigned char *a, const void *bv,
                               size_t n) {
  const unsigned char *b = (const unsigned char *)bv;
  if (n > 16) return memcmp(a, b, n) == 0;
  if (n >= 8)
    return wd__crd64(a) == wd__crd64(b) &&
           wd__crd64(a + n - 8) == wd__crd64(b + n - 8);
  if (n >= 4)
    return wd__crd32(a) == wd__crd32(b) &&
           wd__crd32(a + n - 4) == wd__crd32(b + n - 4);
  for (size_t i = 0; i < n; i++)
    if (a[i] != b[i]) return false;
  return true;
}

/* ---- the policy ---------------------------------------------------------- */

/* Set p up for `max` weight (0 = unbounded); by_count when every entry
 * weighs 1.  Allocates nothing: the sketch grows with the entries.  */
void wd__cpolicy_init(wd__cpolicy *p, size_t max, bool by_count, uint64_t seed,
                      wd__cevict_fn evict);
void wd__cpolicy_fini(wd__cpolicy *p);

/* Out of line parts of the two calls below. */
void wd__cpolicy_age(wd__cpolicy *p);
void wd__cpolicy_climb(wd__cpolicy *p);
void wd__cpolicy_promote(wd__cpolicy *p, wd__cnode *n);

/* Where a key's four counters are: in one 8-word block, counter i in word
 * 2i or 2i + 1, at a 4-bit shift.  The sketch takes other bits of the hash
 * than the table does. */
typedef struct wd__ccounters {
  uint64_t *w[4];
  unsigned shift[4];
} wd__ccounters;

static inline void wd__csketch_locate(const wd__cpolicy *p, uint64_t hash,
                                      wd__ccounters *c) {
  uint64_t h = hash;
  h ^= h >> 31;
  h *= WD__CK4;
  h ^= h >> 29;
  uint64_t *blk = p->table + (((size_t)(h >> 40) & ((p->words >> 3) - 1)) << 3);
  for (unsigned i = 0; i < 4; i++) {
    c->w[i] = blk + 2 * i + ((h >> i) & 1);
    c->shift[i] = (unsigned)((h >> (8 + 4 * i)) & 15) << 2;
  }
}

/* Count one read of hash in the sketch.  Increments are conservative:
 * only the counters at the key's minimum grow.  Separate from the sample
 * below so that a get can count before it probes the table (the sketch's
 * cache line then loads while the table's do). */
static inline void wd__cpolicy_count(wd__cpolicy *p, uint64_t hash) {
  if (!p->words) return;
  /* wd__csketch_locate(), in scalars so that they stay in registers. */
  uint64_t h = hash;
  h ^= h >> 31;
  h *= WD__CK4;
  h ^= h >> 29;
  uint64_t *blk = p->table + (((size_t)(h >> 40) & ((p->words >> 3) - 1)) << 3);
  uint64_t *w0 = blk + (h & 1), *w1 = blk + 2 + ((h >> 1) & 1);
  uint64_t *w2 = blk + 4 + ((h >> 2) & 1), *w3 = blk + 6 + ((h >> 3) & 1);
  unsigned s0 = (unsigned)(h >> 6) & 60, s1 = (unsigned)(h >> 10) & 60;
  unsigned s2 = (unsigned)(h >> 14) & 60, s3 = (unsigned)(h >> 18) & 60;
  unsigned v0 = (unsigned)(*w0 >> s0) & 15, v1 = (unsigned)(*w1 >> s1) & 15;
  unsigned v2 = (unsigned)(*w2 >> s2) & 15, v3 = (unsigned)(*w3 >> s3) & 15;
  unsigned m01 = v0 < v1 ? v0 : v1, m23 = v2 < v3 ? v2 : v3;
  unsigned m = m01 < m23 ? m01 : m23;
  if (m == 15) return;
  *w0 += (uint64_t)(v0 == m) << s0;
  *w1 += (uint64_t)(v1 == m) << s1;
  *w2 += (uint64_t)(v2 == m) << s2;
  *w3 += (uint64_t)(v3 == m) << s3;
  if (++p->additions >= p->sample_size) wd__cpolicy_age(p);
}

/* Count one read in the hill climber's sample (hit: the cache had it). */
static inline void wd__cpolicy_sample(wd__cpolicy *p, bool hit) {
  if (!p->bounded) return;
  if (hit)
    p->sample_hits++;
  else
    p->sample_misses++;
  if (p->sample_hits + p->sample_misses >= p->sample_size) wd__cpolicy_climb(p);
}

/* Both: one read of hash, a hit or not. */
static inline void wd__cpolicy_access(wd__cpolicy *p, uint64_t hash, bool hit) {
  wd__cpolicy_count(p, hash);
  wd__cpolicy_sample(p, hit);
}

/* A resident node was read: move it up its queue (probation -> protected). */
static inline void wd__cpolicy_hit(wd__cpolicy *p, wd__cnode *n) {
  if (!p->bounded) return;
  if (n->queue == WD__CQ_WINDOW || n->queue == WD__CQ_PROTECTED) {
    wd_link *h = &p->q[n->queue];
    if (h->prev_ == &n->lru) return; /* already the most recent */
    wd__list_unlink(&n->lru);
    wd__list_push_back(h, &n->lru);
  } else if (n->queue == WD__CQ_PROBATION) {
    wd__cpolicy_promote(p, n);
  }
}

/* Make n resident with `weight`, in the window; then evict down to the
 * bound (possibly n itself: check n->queue afterwards). */
void wd__cpolicy_add(wd__cpolicy *p, wd__cnode *n, size_t weight);

/* A resident node's value was replaced: new weight, counts as an access;
 * then evict down to the bound (possibly n itself). */
void wd__cpolicy_update(wd__cpolicy *p, wd__cnode *n, size_t weight);

/* Take n out of the policy (no callback). */
void wd__cpolicy_remove(wd__cpolicy *p, wd__cnode *n);

/* The sketch's estimate of how often hash was accessed lately (0-15). */
unsigned wd__cpolicy_frequency(const wd__cpolicy *p, uint64_t hash);

#endif
