/* The cache's eviction policy: W-TinyLFU, after Caffeine (Einziger,
 * Friedman and Manes, "TinyLFU: A Highly Efficient Cache Admission
 * Policy"), and the key hash.
 *
 * Resident entries live in three LRU queues.  New entries enter the
 * window (1% of the capacity to start with), a plain LRU that gives a
 * newcomer time to prove itself and serves bursts of recency.  Entries
 * pushed out of the window become candidates for the main space, a
 * segmented LRU: probation (entries seen once there) and protected (80%
 * of the main space: entries read again while on probation).  When the
 * cache is over its bound, a candidate is compared with the victim at the
 * LRU end of probation, and the one a frequency sketch says was accessed
 * less often lately is evicted - so a one-off key, or a whole sequential
 * scan of them, cannot push out entries that are used again and again,
 * which is where LRU collapses.  A candidate at least as frequent as the
 * hot threshold that loses still gets in with a 1/128 chance, so that an
 * attacker who inflates a victim's count cannot pin it forever.
 *
 * The sketch is a count-min sketch of 4-bit counters: each key has four
 * counters, in four different words of one 64-byte block (one cache line
 * per access), and its frequency is the least of them.  Increments are
 * conservative (only the counters at the minimum grow), which keeps the
 * estimates of rare keys low.  Every 10 x capacity increments all
 * counters halve, so the sketch forgets: what was popular an hour ago
 * does not stay in the cache for ever.  It grows with the number of
 * entries (one word per entry, rounded up to a power of two), starting
 * afresh at each growth, so a large cache that is mostly empty costs
 * little.
 *
 * A hill climber resizes the window: every sample (10 x capacity
 * accesses) it compares the hit rate with the previous sample's and keeps
 * moving the window's size in the direction that helped, by a step that
 * decays, and restarts with a large step when the hit rate changes a lot
 * (a new workload).  Recency-heavy workloads get a large window (towards
 * LRU), frequency-heavy ones a small one.  The window may grow over the
 * whole main space (Caffeine's stops at the probation segment): on a
 * recency-only trace that takes the hit rate from 0.79 to 0.89 of LRU's,
 * and changes the others by about 1%.
 *
 * Everything is counted in weight: an entry bounded by count weighs 1.
 * The policy knows only nodes (hash, weight, queue); the cache is called
 * back for each node it evicts.  There is no concurrency to manage: a
 * cache belongs to one runtime thread, so accesses update the queues and
 * the sketch directly instead of through Caffeine's read buffers.
 */
#include <string.h>

#include "../util/mem.h"
#include "cache-internal.h"

#define ADMIT_HOT 6 /* a candidate this frequent may win a coin toss */
#define CLIMB_STEP 0.0625
#define CLIMB_RESTART 0.05
#define CLIMB_DECAY 0.98
#define TRANSFER_MAX 1000 /* entries moved per window resize */
#define SAMPLE_FACTOR 10
#define SKETCH_MIN_WORDS ((size_t)64)
#define SKETCH_MAX_WORDS ((size_t)1 << 24) /* 128 MiB for 16M entries */

/* ---- queues --------------------------------------------------------------
 */

static inline wd__cnode *node_of(wd_link *l) {
  return wd__container_of(l, wd__cnode, lru);
}

static inline wd__cnode *oldest(wd__cpolicy *p, int q) {
  wd_link *h = &p->q[q];
  return h->next_ == h ? NULL : node_of(h->next_);
}

static inline wd__cnode *newest(wd__cpolicy *p, int q) {
  wd_link *h = &p->q[q];
  return h->prev_ == h ? NULL : node_of(h->prev_);
}

static inline wd__cnode *newer(wd__cpolicy *p, wd__cnode *n) {
  wd_link *l = n->lru.next_;
  return l == &p->q[n->queue] ? NULL : node_of(l);
}

static inline wd__cnode *older(wd__cpolicy *p, wd__cnode *n) {
  wd_link *l = n->lru.prev_;
  return l == &p->q[n->queue] ? NULL : node_of(l);
}

static inline void unlink_node(wd__cpolicy *p, wd__cnode *n) {
  wd__list_unlink(&n->lru);
  if (n->queue == WD__CQ_WINDOW)
    p->window_weight -= n->weight;
  else if (n->queue == WD__CQ_PROTECTED)
    p->protected_weight -= n->weight;
}

/* Move n to the most recent end of queue q (possibly its own). */
static void move_to(wd__cpolicy *p, wd__cnode *n, int q) {
  unlink_node(p, n);
  n->queue = (uint8_t)q;
  wd__list_push_back(&p->q[q], &n->lru);
  if (q == WD__CQ_WINDOW)
    p->window_weight += n->weight;
  else if (q == WD__CQ_PROTECTED)
    p->protected_weight += n->weight;
}

static void drop(wd__cpolicy *p, wd__cnode *n) {
  unlink_node(p, n);
  n->queue = WD__CQ_NONE;
  p->weight -= n->weight;
  p->count--;
  p->evict(p, n);
}

/* Protected is over its share: its oldest go back on probation. */
static void demote_protected(wd__cpolicy *p) {
  while (p->protected_weight > p->protected_max) {
    wd__cnode *n = oldest(p, WD__CQ_PROTECTED);
    if (!n) break;
    move_to(p, n, WD__CQ_PROBATION);
  }
}

static inline uint64_t next_random(wd__cpolicy *p) {
  uint64_t x = p->rng; /* xorshift64 */
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  p->rng = x;
  return x;
}

/* ---- the frequency sketch -----------------------------------------------
 * (locating a key's counters and counting an access are inline, in
 * cache-internal.h) */

unsigned wd__cpolicy_frequency(const wd__cpolicy *p, uint64_t hash) {
  if (!p->words) return 0;
  wd__ccounters c;
  wd__csketch_locate(p, hash, &c);
  unsigned m = 15;
  for (unsigned i = 0; i < 4; i++) {
    unsigned v = (unsigned)(*c.w[i] >> c.shift[i]) & 15;
    if (v < m) m = v;
  }
  return m;
}

/* Halve every counter: the sketch forgets at the same rate it learns. */
void wd__cpolicy_age(wd__cpolicy *p) {
  for (size_t i = 0; i < p->words; i++)
    p->table[i] = (p->table[i] >> 1) & 0x7777777777777777ull;
  p->additions /= 2;
}

/* Grow the sketch to one word per entry (a power of two).  A growth
 * starts from zero counts, like Caffeine's; without memory the sketch
 * just stays as it is. */
static void sketch_fit(wd__cpolicy *p) {
  size_t want = SKETCH_MIN_WORDS;
  size_t top =
      p->count_cap < SKETCH_MAX_WORDS ? p->count_cap : SKETCH_MAX_WORDS;
  while (want < p->count && want < top)
    want <<= 1;
  if (want <= p->words) return;
  uint64_t *t = wd__calloc(want, sizeof *t);
  if (!t) return;
  wd__free(p->table);
  p->table = t;
  p->words = want;
  p->additions = 0;
  p->sample_size = SAMPLE_FACTOR * (uint64_t)want;
}

/* ---- the hill climber ----------------------------------------------------
 */

/* Protected is always 80% of the main space, whatever the window's size. */
static void set_protected(wd__cpolicy *p) {
  size_t main = p->max - p->window_max;
  p->protected_max = main / 5 * 4 + main % 5 * 4 / 5;
}

/* Grow the window by `adjust` weight (up to all but 1 of the capacity),
 * moving the oldest entries of the main space into it.  Unlike Caffeine,
 * which trades window space for protected space only, the window may take
 * the whole main space: on a recency-only workload the probation segment
 * would otherwise hold a fifth of the cache's worth of entries nobody
 * reads again (their old counts win every duel against newcomers). */
static void grow_window(wd__cpolicy *p) {
  size_t room = p->max - 1 - p->window_max;
  if (p->max <= 1 || room == 0) {
    p->adjust = 0;
    return;
  }
  size_t quota = (size_t)p->adjust;
  if (quota > room) quota = room;
  p->window_max += quota;
  set_protected(p);
  demote_protected(p);
  for (int i = 0; i < TRANSFER_MAX; i++) {
    wd__cnode *n = oldest(p, WD__CQ_PROBATION);
    if (!n) n = oldest(p, WD__CQ_PROTECTED);
    if (!n || n->weight > quota) break;
    quota -= n->weight;
    move_to(p, n, WD__CQ_WINDOW);
  }
  /* What could not be moved now stays to do. */
  p->window_max -= quota;
  set_protected(p);
  p->adjust = (int64_t)quota;
}

/* Shrink the window by -adjust weight (it keeps at least 1), its oldest
 * entries going on probation. */
static void shrink_window(wd__cpolicy *p) {
  if (p->window_max <= 1) {
    p->adjust = 0;
    return;
  }
  size_t quota = (size_t)-p->adjust;
  if (quota > p->window_max - 1) quota = p->window_max - 1;
  p->window_max -= quota;
  set_protected(p);
  for (int i = 0; i < TRANSFER_MAX; i++) {
    wd__cnode *n = oldest(p, WD__CQ_WINDOW);
    if (!n || n->weight > quota) break;
    quota -= n->weight;
    move_to(p, n, WD__CQ_PROBATION);
  }
  p->window_max += quota;
  set_protected(p);
  p->adjust = -(int64_t)quota;
}

void wd__cpolicy_climb(wd__cpolicy *p) {
  uint64_t n = p->sample_hits + p->sample_misses;
  if (n >= p->sample_size) {
    double rate = (double)p->sample_hits / (double)n;
    double change = rate - p->prev_rate;
    double amount = change >= 0 ? p->step : -p->step;
    double mag = change < 0 ? -change : change;
    double next;
    if (mag >= CLIMB_RESTART)
      next = CLIMB_STEP * (double)p->max * (amount >= 0 ? 1 : -1);
    else
      next = CLIMB_DECAY * amount;
    p->prev_rate = rate;
    p->step = next;
    p->sample_hits = p->sample_misses = 0;
    p->adjust = (int64_t)amount;
  }
  if (p->adjust > 0)
    grow_window(p);
  else if (p->adjust < 0)
    shrink_window(p);
}

/* ---- eviction ------------------------------------------------------------
 */

static bool admit(wd__cpolicy *p, const wd__cnode *cand,
                  const wd__cnode *victim) {
  unsigned cf = wd__cpolicy_frequency(p, cand->hash);
  unsigned vf = wd__cpolicy_frequency(p, victim->hash);
  if (cf > vf) return true;
  if (cf < ADMIT_HOT) return false;
  return (next_random(p) & 127) == 0;
}

/* Entries pushed out of the window go on probation as candidates; the
 * number of them is returned. */
static size_t spill_window(wd__cpolicy *p) {
  size_t moved = 0;
  while (p->window_weight > p->window_max) {
    wd__cnode *n = oldest(p, WD__CQ_WINDOW);
    if (!n) break;
    move_to(p, n, WD__CQ_PROBATION);
    moved++;
  }
  return moved;
}

/* Evict until the bound holds.  Candidates are taken from the newest end
 * of probation (the entries just spilled from the window), victims from
 * its oldest end; each duel evicts the less frequent.  When one side runs
 * out, the other is evicted; when probation is empty, victims come from
 * protected and then from the window. */
static void evict_main(wd__cpolicy *p, size_t ncand) {
  int vq = WD__CQ_PROBATION, cq = WD__CQ_PROBATION;
  wd__cnode *victim = oldest(p, vq);
  wd__cnode *cand = newest(p, cq);
  while (p->weight > p->max) {
    if (!cand && cq == WD__CQ_PROBATION) {
      cq = WD__CQ_WINDOW;
      cand = newest(p, cq);
    }
    if (!cand && !victim) {
      if (vq == WD__CQ_PROBATION) {
        vq = WD__CQ_PROTECTED;
        victim = oldest(p, vq);
        continue;
      }
      if (vq == WD__CQ_PROTECTED) {
        vq = WD__CQ_WINDOW;
        victim = oldest(p, vq);
        continue;
      }
      break;
    }
    wd__cnode *ev;
    if (!victim) {
      ev = cand;
      cand = older(p, cand);
      if (ncand) ncand--;
    } else if (!cand) {
      ev = victim;
      victim = newer(p, victim);
    } else if (cand == victim) {
      ev = cand;
      victim = newer(p, victim);
      cand = NULL;
    } else if (cand->weight > p->max) {
      ev = cand;
      cand = ncand > 1 ? older(p, cand) : NULL;
      if (ncand) ncand--;
    } else {
      if (ncand) ncand--;
      if (admit(p, cand, victim)) {
        ev = victim;
        victim = newer(p, victim);
        drop(p, ev);
        /* After the drop: the victim may have been the next older. */
        cand = older(p, cand);
        continue;
      } else {
        ev = cand;
        cand = ncand > 0 ? older(p, cand) : NULL;
      }
    }
    drop(p, ev);
  }
}

static void maintain(wd__cpolicy *p) {
  size_t ncand = spill_window(p);
  if (p->weight > p->max) evict_main(p, ncand);
  if (p->adjust) wd__cpolicy_climb(p);
}

/* ---- the interface -------------------------------------------------------
 */

void wd__cpolicy_init(wd__cpolicy *p, size_t max, bool by_count, uint64_t seed,
                      wd__cevict_fn evict) {
  memset(p, 0, sizeof *p);
  for (int q = 0; q < 4; q++)
    wd__list_init(&p->q[q]);
  p->evict = evict;
  p->rng = wd__cfold(seed ^ WD__CK3, WD__CK2) | 1;
  p->bounded = max > 0;
  if (!p->bounded) {
    p->max = SIZE_MAX;
    return;
  }
  p->max = max;
  p->count_cap = by_count ? max : SIZE_MAX;
  p->window_max = max / 100 + (max % 100 != 0); /* 1%, at least 1 */
  set_protected(p);
  p->step = -CLIMB_STEP * (double)max;
  p->sample_size = SAMPLE_FACTOR * (uint64_t)SKETCH_MIN_WORDS;
}

void wd__cpolicy_fini(wd__cpolicy *p) {
  wd__free(p->table);
  p->table = NULL;
  p->words = 0;
}

void wd__cpolicy_promote(wd__cpolicy *p, wd__cnode *n) {
  move_to(p, n, WD__CQ_PROTECTED);
  demote_protected(p);
}

void wd__cpolicy_add(wd__cpolicy *p, wd__cnode *n, size_t weight) {
  n->weight = weight;
  n->queue = WD__CQ_WINDOW;
  wd__list_push_back(&p->q[WD__CQ_WINDOW], &n->lru);
  p->window_weight += weight;
  p->weight += weight;
  p->count++;
  if (!p->bounded) return;
  if (p->count > p->words) sketch_fit(p);
  maintain(p);
}

void wd__cpolicy_update(wd__cpolicy *p, wd__cnode *n, size_t weight) {
  if (n->queue == WD__CQ_NONE) return;
  p->weight = p->weight - n->weight + weight;
  if (n->queue == WD__CQ_WINDOW)
    p->window_weight = p->window_weight - n->weight + weight;
  else if (n->queue == WD__CQ_PROTECTED)
    p->protected_weight = p->protected_weight - n->weight + weight;
  n->weight = weight;
  if (!p->bounded) return;
  wd__cpolicy_hit(p, n);
  maintain(p);
}

void wd__cpolicy_remove(wd__cpolicy *p, wd__cnode *n) {
  if (n->queue == WD__CQ_NONE) return;
  unlink_node(p, n);
  n->queue = WD__CQ_NONE;
  p->weight -= n->weight;
  p->count--;
}
