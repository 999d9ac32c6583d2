/* bench/cache.c - what a cache hit costs, and the eviction policy's hit
 * rate against LRU.
 *
 *   cache.hit              ns per wd_cache_get() that hits, plus the
 *                          wd_cache_ref_release() of its reference: 1000
 *                          8-byte keys ("key:NNNN"), all cached, read in
 *                          a shuffled order, no expiry (no clock read)
 *   cache.hit.ttl          the same on a cache with a ttl and refresh_after:
 *                          each hit reads the clock
 *   cache.hit.lru          a lookup in the plain LRU below on the same keys
 *                          (hash, compare, move to front): the floor
 *   cache.hitrate.zipf     hit rate of wd_cache_get() with a loader on a
 *                          Zipf(0.9) trace: 100000 keys, 1M requests,
 *                          1000 entries, fixed seed
 *   cache.hitrate.zipf.lru the same trace through a plain LRU of 1000
 *   cache.hitrate.zipf.vs_lru   the ratio of the two
 *   cache.hitrate.scan(.lru, .vs_lru)
 *                          a scan-heavy trace: 500 requests to a Zipf(0.9)
 *                          hot set of 5000 keys, then a sequential scan of
 *                          2000 keys never seen before (twice the cache),
 *                          and again, 1M requests; 1000 entries
 *
 * The hit rates go through wd_cache_get() with a loader (a miss starts a
 * load task, which copies the key), as an application would.  Times are
 * the best of REPS runs, on the real clock.
 */
#include "bench.h"

#define REPS 5
#define N_HIT 10000000L
#define HOT 1000
#define TRACE 1000000
#define CAP 1000

/* ---- a plain LRU: a chained hash table and a doubly linked list --------- */

typedef struct lru_node {
  uint64_t hash;
  size_t klen;
  char key[16];
  struct lru_node *prev, *next, *chain;
} lru_node;

typedef struct lru {
  lru_node **buckets;
  size_t mask, size, cap;
  lru_node head; /* head.next is the most recent */
  uint64_t hits, misses;
} lru;

static void lru_init(lru *l, size_t cap) {
  memset(l, 0, sizeof *l);
  size_t n = 1;
  while (n < cap * 2)
    n <<= 1;
  l->buckets = calloc(n, sizeof *l->buckets);
  l->mask = n - 1;
  l->cap = cap;
  l->head.next = l->head.prev = &l->head;
}

static uint64_t fnv1a(const void *key, size_t n) {
  const unsigned char *p = key;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
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

/* Access key: true on a hit; a miss inserts it, evicting the oldest. */
static bool lru_access(lru *l, const void *key, size_t klen) {
  uint64_t h = fnv1a(key, klen);
  lru_node **pp = &l->buckets[h & l->mask];
  for (lru_node *n = *pp; n; n = n->chain) {
    if (n->hash == h && n->klen == klen && memcmp(n->key, key, klen) == 0) {
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
    lru_node **q = &l->buckets[n->hash & l->mask];
    while (*q != n)
      q = &(*q)->chain;
    *q = n->chain;
  } else {
    n = malloc(sizeof *n);
    l->size++;
  }
  n->hash = h;
  n->klen = klen;
  memcpy(n->key, key, klen);
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

/* ---- traces -------------------------------------------------------------- */

#include "zipf.h"

static uint64_t *zipf_trace(void) {
  zipf z;
  zipf_init(&z, 100000, 0.9);
  rnd_state = 20240601;
  uint64_t *t = malloc(TRACE * sizeof *t);
  for (size_t i = 0; i < TRACE; i++)
    t[i] = zipf_next(&z);
  free(z.cdf);
  return t;
}

static uint64_t *scan_trace(void) {
  zipf z;
  zipf_init(&z, 5000, 0.9);
  rnd_state = 77;
  uint64_t *t = malloc(TRACE * sizeof *t);
  uint64_t scan = 1u << 30;
  size_t n = 0;
  while (n < TRACE) {
    for (int i = 0; i < 500 && n < TRACE; i++)
      t[n++] = zipf_next(&z);
    for (int i = 0; i < 2000 && n < TRACE; i++)
      t[n++] = scan++;
  }
  free(z.cdf);
  return t;
}

/* ---- the cache ----------------------------------------------------------- */

static int copy_key(wd_task *self, const void *key, size_t klen, void *arg,
                    wd_cache_load *out) {
  return wd_cache_load_copy(out, key, klen);
}

static char hot_keys[HOT][16];
static unsigned order[4096];

static int64_t time_hits(wd_task *self, wd_cache *c) {
  int64_t t0 = bench_now();
  for (long i = 0; i < N_HIT; i++) {
    const char *k = hot_keys[order[i & 4095]];
    wd_cache_ref ref;
    int rc = wd_cache_get(self, c, k, 8, &ref);
    if (__builtin_expect(rc != 0, 0)) bench_check(rc, "wd_cache_get");
    wd_cache_ref_release(&ref);
  }
  return bench_now() - t0;
}

static int64_t time_lru(lru *l) {
  int64_t t0 = bench_now();
  for (long i = 0; i < N_HIT; i++)
    if (!lru_access(l, hot_keys[order[i & 4095]], 8)) {
      fprintf(stderr, "bench: the LRU missed a hot key\n");
      exit(1);
    }
  return bench_now() - t0;
}

static double hit_rate(wd_task *self, const uint64_t *t, double *lru_rate) {
  wd_cache *c;
  bench_check(wd_cache_open(self, &c,
                            &(wd_cache_opts){.name = "trace",
                                             .max_entries = CAP,
                                             .loader = copy_key,
                                             .seed = 7}),
              "wd_cache_open");
  lru l;
  lru_init(&l, CAP);
  for (size_t i = 0; i < TRACE; i++) {
    wd_cache_ref ref;
    bench_check(wd_cache_get(self, c, &t[i], sizeof t[i], &ref),
                "wd_cache_get");
    wd_cache_ref_release(&ref);
    lru_access(&l, &t[i], sizeof t[i]);
  }
  wd_cache_stats st;
  wd_cache_stats_get(c, &st);
  if (st.entries > CAP || st.hits + st.misses != TRACE) {
    fprintf(stderr, "bench: %zu entries, %llu requests\n", st.entries,
            (unsigned long long)(st.hits + st.misses));
    exit(1);
  }
  bench_check(wd_cache_close(self, c), "wd_cache_close");
  *lru_rate = (double)l.hits / TRACE;
  lru_free(&l);
  return (double)st.hits / TRACE;
}

static void print_rates(const char *name, double rate, double lru_rate) {
  char buf[64];
  bench_print(name, rate, 4, "rate");
  snprintf(buf, sizeof buf, "%s.lru", name);
  bench_print(buf, lru_rate, 4, "rate");
  snprintf(buf, sizeof buf, "%s.vs_lru", name);
  bench_print(buf, rate / lru_rate, 3, "ratio");
}

static int bench_main(wd_task *self, void *arg) {
  for (int i = 0; i < HOT; i++)
    snprintf(hot_keys[i], sizeof hot_keys[i], "key:%04d", i);
  rnd_state = 1;
  for (int i = 0; i < 4096; i++)
    order[i] = (unsigned)(rnd() % HOT);
  wd_cache *plain, *timed;
  bench_check(wd_cache_open(self, &plain,
                            &(wd_cache_opts){.name = "plain",
                                             .max_entries = 10000,
                                             .loader = copy_key}),
              "wd_cache_open");
  bench_check(wd_cache_open(self, &timed,
                            &(wd_cache_opts){.name = "timed",
                                             .max_entries = 10000,
                                             .loader = copy_key,
                                             .ttl = 3600 * WD_SEC,
                                             .refresh_after = 1800 * WD_SEC}),
              "wd_cache_open");
  lru l;
  lru_init(&l, 10000);
  for (int i = 0; i < HOT; i++) {
    wd_cache_ref ref;
    bench_check(wd_cache_get(self, plain, hot_keys[i], 8, &ref), "warm");
    wd_cache_ref_release(&ref);
    bench_check(wd_cache_get(self, timed, hot_keys[i], 8, &ref), "warm");
    wd_cache_ref_release(&ref);
    lru_access(&l, hot_keys[i], 8);
  }
  int64_t hit = INT64_MAX, hit_ttl = INT64_MAX, hit_lru = INT64_MAX;
  for (int r = 0; r < REPS; r++) {
    hit = bench_min(hit, time_hits(self, plain));
    hit_ttl = bench_min(hit_ttl, time_hits(self, timed));
    hit_lru = bench_min(hit_lru, time_lru(&l));
  }
  printf("# hits: %ld gets of %d cached 8-byte keys, best of %d\n", N_HIT, HOT,
         REPS);
  bench_print("cache.hit", (double)hit / N_HIT, 1, "ns");
  bench_print("cache.hit.ttl", (double)hit_ttl / N_HIT, 1, "ns");
  bench_print("cache.hit.lru", (double)hit_lru / N_HIT, 1, "ns");
  bench_check(wd_cache_close(self, timed), "wd_cache_close");
  bench_check(wd_cache_close(self, plain), "wd_cache_close");
  lru_free(&l);

  double lru_rate;
  uint64_t *t = zipf_trace();
  double rate = hit_rate(self, t, &lru_rate);
  printf("# Zipf(0.9), 100000 keys, %d requests, %d entries\n", TRACE, CAP);
  print_rates("cache.hitrate.zipf", rate, lru_rate);
  free(t);
  t = scan_trace();
  rate = hit_rate(self, t, &lru_rate);
  printf("# 500 hot requests (Zipf(0.9) over 5000 keys) between scans of "
         "2000 new keys, %d requests, %d entries\n",
         TRACE, CAP);
  print_rates("cache.hitrate.scan", rate, lru_rate);
  free(t);
  return 0;
}

int main(void) {
  bench_watchdog(120);
  bench_check(wd_run(bench_main, NULL), "wd_run");
  return 0;
}
