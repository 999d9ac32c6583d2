/* wd_cache's size bound and eviction policy: the bound holds after every
 * operation, by count and by weight (an entry heavier than the bound is
 * not kept), through puts and through loads; an unbounded cache evicts
 * nothing; the frequency sketch counts and ages; and the hit rate on
 * generated traces, printed against an LRU of the same size: a Zipf(0.9)
 * trace, a hot set that long sequential scans must not flush, and a
 * recency-heavy trace - W-TinyLFU's weak spot - on which the adaptive
 * window must bring it close to LRU.
 *
 * The traces run through wd_cache_get_try() and wd_cache_put() (a miss
 * puts the key), which is what a get with a loader does without the load
 * task, so that a million requests take a fraction of a second. */
#include <stdlib.h>
#include <string.h>

#include "flow/cache-internal.h"
#include "helpers.h"
#include "util/list.h"

/* ---- a plain LRU, the baseline
 * ------------------------------------------------
 */

typedef struct lru_node {
  uint64_t key;
  struct lru_node *prev, *next, *chain;
} lru_node;

typedef struct lru {
  lru_node **buckets;
  size_t nbuckets, size, cap;
  lru_node head; /* most recent after head */
  uint64_t hits, misses;
} lru;

static void lru_init(lru *l, size_t cap) {
  memset(l, 0, sizeof *l);
  l->cap = cap;
  l->nbuckets = 1;
  while (l->nbuckets < cap * 2)
    l->nbuckets <<= 1;
  l->buckets = calloc(l->nbuckets, sizeof *l->buckets);
  l->head.next = l->head.prev = &l->head;
}

static size_t lru_slot(const lru *l, uint64_t k) {
  return (size_t)((k * 0x9e3779b97f4a7c15ull) >> 20) & (l->nbuckets - 1);
}

static void lru_unlink(lru_node *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
}

static void lru_front(lru *l, lru_node *n) {
  n->next = l->head.next;
  n->prev = &l->head;
  l->head.next->prev = n;
  l->head.next = n;
}

/* Access k: a hit, or a miss that inserts it (evicting the oldest). */
static bool lru_access(lru *l, uint64_t k) {
  lru_node **pp = &l->buckets[lru_slot(l, k)];
  for (lru_node *n = *pp; n; n = n->chain) {
    if (n->key == k) {
      lru_unlink(n);
      lru_front(l, n);
      l->hits++;
      return true;
    }
  }
  l->misses++;
  lru_node *n;
  if (l->size == l->cap) {
    n = l->head.prev;
    lru_unlink(n);
    lru_node **q = &l->buckets[lru_slot(l, n->key)];
    while (*q != n)
      q = &(*q)->chain;
    *q = n->chain;
  } else {
    n = malloc(sizeof *n);
    l->size++;
  }
  n->key = k;
  n->chain = *pp;
  *pp = n;
  lru_front(l, n);
  return false;
}

static void lru_free(lru *l) {
  lru_node *n = l->head.next;
  while (n != &l->head) {
    lru_node *next = n->next;
    free(n);
    n = next;
  }
  free(l->buckets);
}

/* ---- traces
 * ---------------------------------------------------------------------
 */

#include "../bench/zipf.h"

/* Access k in the cache as a loading get would: a hit, or a put. */
static bool cache_access(wd_cache *c, uint64_t k) {
  wd_cache_ref ref;
  if (wd_cache_get_try(c, &k, sizeof k, &ref) == 0) {
    wd_cache_ref_release(&ref);
    return true;
  }
  cr_assert_eq(wd_cache_put_copy(c, &k, sizeof k, NULL, 0, 0), 0);
  return false;
}

typedef struct versus {
  uint64_t *trace;
  size_t n, cap;
  double cache_rate, lru_rate;
} versus;

static int versus_main(wd_task *self, void *arg) {
  versus *v = arg;
  wd_cache *c;
  cr_assert_eq(
      wd_cache_open(
          self, &c,
          &(wd_cache_opts){.name = "trace", .max_entries = v->cap, .seed = 7}),
      0);
  lru l;
  lru_init(&l, v->cap);
  uint64_t hits = 0;
  for (size_t i = 0; i < v->n; i++) {
    hits += cache_access(c, v->trace[i]);
    lru_access(&l, v->trace[i]);
  }
  wd_cache_stats st;
  wd_cache_stats_get(c, &st);
  cr_assert_eq(st.hits, hits);
  cr_assert_leq(st.entries, v->cap);
  v->cache_rate = (double)hits / (double)v->n;
  v->lru_rate = (double)l.hits / (double)v->n;
  lru_free(&l);
  return wd_cache_close(self, c);
}

static void versus_run(versus *v, const char *what) {
  cr_assert_eq(run_virtual(versus_main, v), 0);
  printf("# cache hit rate on %s: W-TinyLFU %.4f, LRU %.4f, ratio %.3f\n", what,
         v->cache_rate, v->lru_rate, v->cache_rate / v->lru_rate);
  fflush(stdout);
}

/* ---- bounds
 * --------------------------------------------------------------------
 */

static long live_vals;

static void counted_free(void *v, void *arg) {
  live_vals--;
  free(v);
}

static int count_bound(wd_task *self, void *arg) {
  wd_cache *c;
  cr_assert_eq(wd_cache_open(self, &c,
                             &(wd_cache_opts){.name = "b",
                                              .max_entries = 100,
                                              .value_free = counted_free,
                                              .seed = 1}),
               0);
  rnd_state = 11;
  for (int i = 0; i < 20000; i++) {
    uint64_t k = i % 3 ? rnd() % 50 : rnd() % 5000; /* a hot set, a tail */
    wd_cache_ref ref;
    if (wd_cache_get_try(c, &k, sizeof k, &ref) == 0) {
      cr_assert_eq(*(uint64_t *)ref.value, k);
      wd_cache_ref_release(&ref);
    } else {
      uint64_t *v = malloc(sizeof *v);
      *v = k;
      live_vals++;
      cr_assert_eq(wd_cache_put(c, &k, sizeof k, v, sizeof *v, 0), 0);
    }
    wd_cache_stats st;
    wd_cache_stats_get(c, &st);
    cr_assert_leq(st.entries, 100, "op %d: %zu entries", i, st.entries);
    cr_assert_eq(st.weight, st.entries);
    cr_assert_eq((long)st.entries, live_vals, "evicted values are freed");
    cr_assert_eq(st.puts, st.entries + st.evictions);
  }
  wd_cache_stats st;
  wd_cache_stats_get(c, &st);
  cr_assert_eq(st.entries, 100);
  cr_assert_gt(st.hits, 20000 / 2, "the hot set stays: %llu hits",
               (unsigned long long)st.hits);
  cr_assert_eq(wd_cache_close(self, c), 0);
  cr_assert_eq(live_vals, 0);
  return 0;
}

Test(cache_policy, the_count_bound_holds_after_every_put) {
  cr_assert_eq(run_virtual(count_bound, NULL), 0);
  assert_no_leaks();
}

static size_t weigh_size(const void *key, size_t klen, const void *value,
                         size_t size, void *arg) {
  return size;
}

static int weight_bound(wd_task *self, void *arg) {
  wd_cache *c;
  cr_assert_eq(wd_cache_open(self, &c,
                             &(wd_cache_opts){.name = "w",
                                              .max_weight = 1000,
                                              .weigher = weigh_size,
                                              .seed = 2}),
               0);
  static char buf[2000];
  rnd_state = 12;
  uint64_t puts = 0;
  for (int i = 0; i < 20000; i++) {
    uint64_t k = rnd() % 400;
    size_t size = 1 + (size_t)(k * 7 % 100); /* each key its own size */
    wd_cache_ref ref;
    if (wd_cache_get_try(c, &k, sizeof k, &ref) == 0) {
      cr_assert_eq(ref.size, size);
      wd_cache_ref_release(&ref);
    } else {
      cr_assert_eq(wd_cache_put_copy(c, &k, sizeof k, buf, size, 0), 0);
      puts++;
    }
    wd_cache_stats st;
    wd_cache_stats_get(c, &st);
    cr_assert_leq(st.weight, 1000, "op %d: weight %zu", i, st.weight);
  }
  /* Heavier than the whole cache: handed back, never kept. */
  uint64_t big = 1u << 20;
  cr_assert_eq(wd_cache_put_copy(c, &big, sizeof big, buf, 1500, 0), 0);
  wd_cache_ref ref;
  cr_assert_eq(wd_cache_get_try(c, &big, sizeof big, &ref), WD_EAGAIN);
  wd_cache_stats st;
  wd_cache_stats_get(c, &st);
  cr_assert_leq(st.weight, 1000);
  cr_assert_gt(st.weight, 800, "it is used: %zu", st.weight);
  cr_assert_eq(st.puts, puts + 1);
  cr_assert_eq(st.puts, st.entries + st.evictions);
  cr_assert_eq(wd_cache_close(self, c), 0);
  return 0;
}

Test(cache_policy, the_weight_bound_holds_after_every_put) {
  cr_assert_eq(run_virtual(weight_bound, NULL), 0);
  assert_no_leaks();
}

static int copy_loader(wd_task *self, const void *key, size_t klen, void *arg,
                       wd_cache_load *out) {
  int rc = wd_yield(self);
  if (rc) return rc;
  return wd_cache_load_copy(out, key, klen);
}

typedef struct loads {
  wd_cache *c;
  int done;
} loads;

static int loading_getter(wd_task *self, void *arg) {
  loads *ld = arg;
  for (int i = 0; i < 500; i++) {
    uint64_t k = rnd() % 60;
    wd_cache_ref ref;
    cr_assert_eq(wd_cache_get(self, ld->c, &k, sizeof k, &ref), 0);
    cr_assert_eq(*(uint64_t *)ref.value, k);
    wd_cache_ref_release(&ref);
    wd_cache_stats st;
    wd_cache_stats_get(ld->c, &st);
    cr_assert_leq(st.entries, 10);
  }
  ld->done++;
  return 0;
}

static int bound_through_loads(wd_task *self, void *arg) {
  loads ld = {0};
  cr_assert_eq(wd_cache_open(self, &ld.c,
                             &(wd_cache_opts){.name = "l",
                                              .max_entries = 10,
                                              .loader = copy_loader,
                                              .seed = 3}),
               0);
  rnd_state = 13;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < 8; i++)
    cr_assert_eq(wd_spawn(&g, loading_getter, &ld, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(ld.done, 8);
  wd_cache_stats st;
  wd_cache_stats_get(ld.c, &st);
  cr_assert_eq(st.entries, 10);
  cr_assert_eq(st.hits + st.misses, 4000);
  cr_assert_eq(st.load_successes, st.entries + st.evictions);
  cr_assert_gt(st.evictions, 0);
  cr_assert_eq(wd_cache_close(self, ld.c), 0);
  return 0;
}

Test(cache_policy, the_bound_holds_with_concurrent_loads) {
  cr_assert_eq(run_virtual(bound_through_loads, NULL), 0);
  assert_no_leaks();
}

static int unbounded(wd_task *self, void *arg) {
  wd_cache *c;
  cr_assert_eq(wd_cache_open(self, &c, &(wd_cache_opts){.name = "u"}), 0);
  for (uint64_t k = 0; k < 10000; k++)
    cr_assert_eq(wd_cache_put_copy(c, &k, sizeof k, &k, sizeof k, 0), 0);
  for (uint64_t k = 0; k < 10000; k += 7) {
    wd_cache_ref ref;
    cr_assert_eq(wd_cache_get_try(c, &k, sizeof k, &ref), 0);
    cr_assert_eq(*(uint64_t *)ref.value, k);
    wd_cache_ref_release(&ref);
  }
  wd_cache_stats st;
  wd_cache_stats_get(c, &st);
  cr_assert_eq(st.entries, 10000);
  cr_assert_eq(st.evictions, 0);
  cr_assert_eq(st.capacity, 0);
  cr_assert_eq(wd_cache_close(self, c), 0);
  return 0;
}

Test(cache_policy, an_unbounded_cache_evicts_nothing) {
  cr_assert_eq(run_virtual(unbounded, NULL), 0);
  assert_no_leaks();
}

/* ---- the sketch
 * -------------------------------------------------------------------
 */

static void no_evict(wd__cpolicy *p, wd__cnode *n) {}

Test(cache_policy, the_sketch_counts_and_ages) {
  wd__cpolicy p;
  wd__cpolicy_init(&p, 1000, true, 5, no_evict);
  /* The sketch is made with the first entry. */
  wd__cnode n = {.hash = wd__cache_hash(5, "x", 1)};
  wd__cpolicy_add(&p, &n, 1);
  cr_assert_neq(p.words, 0);
  uint64_t hot = wd__cache_hash(5, "hot", 3), warm = wd__cache_hash(5, "w", 1);
  for (int i = 0; i < 12; i++)
    wd__cpolicy_access(&p, hot, false);
  for (int i = 0; i < 3; i++)
    wd__cpolicy_access(&p, warm, false);
  cr_assert_eq(wd__cpolicy_frequency(&p, hot), 12);
  cr_assert_eq(wd__cpolicy_frequency(&p, warm), 3);
  for (int i = 0; i < 10; i++)
    wd__cpolicy_access(&p, hot, false);
  cr_assert_eq(wd__cpolicy_frequency(&p, hot), 15, "4-bit counters saturate");
  /* Few false positives among a thousand keys never seen. */
  int seen = 0;
  for (uint64_t k = 0; k < 1000; k++) {
    uint64_t h = wd__cache_hash(5, &k, sizeof k);
    seen += wd__cpolicy_frequency(&p, h) > 0;
  }
  cr_assert_lt(seen, 20, "%d of 1000 unseen keys have a count", seen);
  /* After a sample's worth of other accesses, the counts have halved. */
  uint64_t need = p.sample_size - p.additions;
  for (uint64_t k = 0; k < need; k++)
    wd__cpolicy_access(&p, wd__cache_hash(9, &k, sizeof k), false);
  cr_assert_leq(wd__cpolicy_frequency(&p, hot), 8);
  cr_assert_geq(wd__cpolicy_frequency(&p, hot), 6);
  wd__cpolicy_remove(&p, &n);
  wd__cpolicy_fini(&p);
  assert_no_leaks();
}

/* Random adds (of random weights), hits, reweighs and removals straight on
 * the policy: after each, its totals match its queues, the bound holds,
 * and every node it evicted was resident. */
static int evicted_count;

static void count_evict(wd__cpolicy *p, wd__cnode *n) {
  cr_assert_eq(n->queue, WD__CQ_NONE, "unlinked before the callback");
  evicted_count++;
}

static void check_totals(wd__cpolicy *p) {
  size_t w[4] = {0}, count = 0;
  for (int q = WD__CQ_WINDOW; q <= WD__CQ_PROTECTED; q++) {
    wd__list_each(it, &p->q[q]) {
      wd__cnode *n = wd__container_of(it, wd__cnode, lru);
      cr_assert_eq(n->queue, q);
      w[q] += n->weight;
      count++;
    }
  }
  cr_assert_eq(p->window_weight, w[WD__CQ_WINDOW]);
  cr_assert_eq(p->protected_weight, w[WD__CQ_PROTECTED]);
  cr_assert_eq(p->weight, w[1] + w[2] + w[3]);
  cr_assert_eq(p->count, count);
  cr_assert_leq(p->weight, p->max);
  cr_assert_geq(p->window_max, 1);
  cr_assert_lt(p->window_max, p->max);
}

Test(cache_policy, the_policys_totals_match_its_queues) {
  static wd__cnode nodes[3000];
  memset(nodes, 0, sizeof nodes);
  wd__cpolicy p;
  wd__cpolicy_init(&p, 500, false, 3, count_evict);
  rnd_state = 4;
  long added = 0, removed = 0;
  for (int i = 0; i < 300000; i++) {
    size_t k = (size_t)(rnd() % 3000);
    if (i % 4 == 0) k %= 100; /* some keys are hot */
    wd__cnode *n = &nodes[k];
    bool res = n->queue != WD__CQ_NONE;
    n->hash = (uint64_t)k * 0x9e3779b97f4a7c15ull;
    wd__cpolicy_access(&p, n->hash, res);
    unsigned op = (unsigned)(rnd() % 10);
    if (!res) {
      wd__cpolicy_add(&p, n, 1 + (size_t)(rnd() % 40));
      added++;
    } else if (op == 0) {
      wd__cpolicy_remove(&p, n);
      removed++;
    } else if (op == 1) {
      wd__cpolicy_update(&p, n, 1 + (size_t)(rnd() % 40));
    } else {
      wd__cpolicy_hit(&p, n);
    }
    if (i % 97 == 0 || i < 2000) check_totals(&p);
  }
  check_totals(&p);
  cr_assert_eq(added, (long)p.count + removed + evicted_count);
  wd__cpolicy_fini(&p);
  assert_no_leaks();
}

Test(cache_policy, the_hash_spreads_similar_keys) {
  /* Keys that differ in one bit land in different low bits (the table's
   * index) and different high bits (the sketch's block). */
  int same_lo = 0, same_hi = 0;
  for (uint64_t k = 0; k < 4096; k++) {
    uint64_t a = wd__cache_hash(1, &k, sizeof k);
    uint64_t k2 = k ^ 1;
    uint64_t b = wd__cache_hash(1, &k2, sizeof k2);
    same_lo += (a & 1023) == (b & 1023);
    same_hi += (a >> 54) == (b >> 54);
  }
  cr_assert_lt(same_lo, 20);
  cr_assert_lt(same_hi, 20);
  cr_assert_neq(wd__cache_hash(1, "abc", 3), wd__cache_hash(2, "abc", 3),
                "seeded");
  cr_assert_neq(wd__cache_hash(1, "", 0), wd__cache_hash(1, "\0", 1));
  char long_a[100], long_b[100];
  memset(long_a, 'a', sizeof long_a);
  memcpy(long_b, long_a, sizeof long_b);
  long_b[50] = 'b';
  cr_assert_neq(wd__cache_hash(1, long_a, 100), wd__cache_hash(1, long_b, 100));
}

/* ---- hit rates against LRU
 * ------------------------------------------------------
 */

Test(cache_policy, zipf_hit_rate_beats_lru) {
  static versus v;
  memset(&v, 0, sizeof v);
  zipf z;
  zipf_init(&z, 100000, 0.9);
  rnd_state = 20240601;
  v.n = 500000;
  v.cap = 1000;
  v.trace = malloc(v.n * sizeof *v.trace);
  for (size_t i = 0; i < v.n; i++)
    v.trace[i] = zipf_next(&z);
  versus_run(&v, "Zipf(0.9), 100k keys, 500k requests, 1000 entries");
  cr_assert_gt(v.cache_rate, v.lru_rate * 1.05, "W-TinyLFU %.4f vs LRU %.4f",
               v.cache_rate, v.lru_rate);
  free(v.trace);
  free(z.cdf);
  assert_no_leaks();
}

Test(cache_policy, long_scans_do_not_flush_the_hot_set) {
  static versus v;
  memset(&v, 0, sizeof v);
  zipf z;
  zipf_init(&z, 5000, 0.9);
  rnd_state = 77;
  v.cap = 1000;
  v.n = 0;
  v.trace = malloc(1000000 * sizeof *v.trace);
  uint64_t scan = 1u << 30;
  /* 500 requests to a Zipf(0.9) hot set, then a scan of 2000 keys never
   * seen before (twice the cache), and again.  LRU loses its hot set to
   * every scan; W-TinyLFU does not let one-off keys in. */
  while (v.n < 1000000 - 2500) {
    for (int i = 0; i < 500; i++)
      v.trace[v.n++] = zipf_next(&z);
    for (int i = 0; i < 2000; i++)
      v.trace[v.n++] = scan++;
  }
  versus_run(&v, "Zipf(0.9) hot set, 500 requests between scans of 2000");
  cr_assert_gt(v.cache_rate, v.lru_rate * 1.5, "W-TinyLFU %.4f vs LRU %.4f",
               v.cache_rate, v.lru_rate);
  free(v.trace);
  free(z.cdf);
  assert_no_leaks();
}

Test(cache_policy, a_recency_heavy_trace_keeps_up_with_lru) {
  static versus v;
  memset(&v, 0, sizeof v);
  rnd_state = 5;
  v.cap = 500;
  v.n = 400000;
  v.trace = malloc(v.n * sizeof *v.trace);
  /* Half new keys, half a re-use of one of the last 400 keys: all that a
   * recency policy needs, and nothing a frequency count can predict. */
  uint64_t next = 0;
  for (size_t i = 0; i < v.n; i++) {
    if (next < 400 || rnd() % 2)
      v.trace[i] = next++;
    else
      v.trace[i] = next - 1 - rnd() % 400;
  }
  versus_run(&v, "recency: new keys and re-use of the last 400");
  cr_assert_gt(v.cache_rate, v.lru_rate * 0.8, "W-TinyLFU %.4f vs LRU %.4f",
               v.cache_rate, v.lru_rate);
  free(v.trace);
  assert_no_leaks();
}
