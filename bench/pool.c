/* bench/pool.c - what lending an item costs (warden/pool.h).
 *
 *   pool.acquire            one task, an idle item: wd_pool_acquire +
 *                           wd_pool_release, ns per pair (N_FAST pairs),
 *                           with the default options (1 acquire in 16 is
 *                           timed: two clock reads)
 *   pool.acquire.sem        the same pattern on a wd_sem with a free
 *                           permit: the floor of a checkpointed
 *                           acquire/release pair, in the same run
 *   pool.acquire.timed      pool.acquire with timing_sample = 1: every
 *                           acquire timed (the wait and hold histograms
 *                           exact), to show what the sampling saves
 *   pool.clock              one wd_now() on the real clock, ns: why the
 *                           fast path reads none
 *   pool.contended          64 tasks on 8 items, each N_ROUNDS times:
 *                           acquire, wd_yield (holding it, so that the
 *                           others queue), release; ns per acquire+release
 *                           pair, the hand-offs and switches included
 *   pool.contended.sem      the same 64 tasks on a wd_sem of 8 permits:
 *                           the floor of a FIFO hand-off
 *   pool.contended.p99_wait the 99th percentile of the wait of the timed
 *                           acquires of pool.contended (ns), from the
 *                           pool's own statistics
 *
 * Each figure is the best of REPS runs (p99 is that of the best run).
 */
#include "bench.h"

#define N_FAST 5000000L
#define N_ROUNDS 20000L
#define TASKS 64
#define ITEMS 8
#define REPS 5

static int item_create(wd_task *self, void *item, void *arg) {
  (void)self;
  (void)arg;
  *(int *)item = 42;
  return 0;
}

static const wd_pool_factory factory = {.item_size = sizeof(int),
                                        .create = item_create};

static wd_pool *open_pool(wd_task *self, unsigned sample, size_t max,
                          size_t min_idle) {
  wd_pool *p;
  bench_check(wd_pool_open(self, &p,
                           &(wd_pool_opts){.name = "bench",
                                           .factory = &factory,
                                           .max_size = max,
                                           .min_idle = min_idle,
                                           .acquire_timeout = WD_TIME_NEVER,
                                           .timing_sample = sample}),
              "wd_pool_open");
  return p;
}

/* ---- uncontended -------------------------------------------------------- */

static int64_t time_pool(wd_task *self, unsigned sample) {
  wd_pool *p = open_pool(self, sample, ITEMS, 1);
  int rc = 0;
  void *item;
  int64_t t0 = bench_now();
  for (long i = 0; i < N_FAST; i++) {
    rc |= wd_pool_acquire(self, p, &item);
    rc |= wd_pool_release(self, p, item, WD_POOL_OK);
  }
  int64_t t1 = bench_now();
  bench_check(rc, "pool acquire/release");
  wd_pool_stats st;
  bench_check(wd_pool_stats_get(p, &st), "wd_pool_stats_get");
  if (st.acquires != (uint64_t)N_FAST || st.waited != 0)
    bench_check(WD_EINVAL, "the pool was not uncontended");
  bench_check(wd_pool_close(self, p), "wd_pool_close");
  return t1 - t0;
}

static int64_t time_sem(wd_task *self) {
  wd_sem s;
  int rc = 0;
  bench_check(wd_sem_init(&s, "bench", ITEMS), "wd_sem_init");
  int64_t t0 = bench_now();
  for (long i = 0; i < N_FAST; i++) {
    rc |= wd_sem_acquire(self, &s);
    rc |= wd_sem_release(&s);
  }
  int64_t t1 = bench_now();
  bench_check(rc, "sem acquire/release");
  bench_check(wd_sem_deinit(&s), "wd_sem_deinit");
  return t1 - t0;
}

static int64_t time_clock(wd_task *self) {
  wd_time sum = 0;
  int64_t t0 = bench_now();
  for (long i = 0; i < N_FAST / 10; i++)
    sum += wd_now(self);
  int64_t t1 = bench_now();
  if (sum == 0) bench_check(WD_EINVAL, "clock");
  return t1 - t0;
}

/* ---- contended ---------------------------------------------------------- */

typedef struct shared {
  wd_pool *pool;
  wd_sem sem;
} shared;

static int pool_user(wd_task *self, void *arg) {
  shared *sh = arg;
  int rc = 0;
  void *item;
  for (long i = 0; i < N_ROUNDS && !rc; i++) {
    rc = wd_pool_acquire(self, sh->pool, &item);
    if (!rc) rc = wd_yield(self);
    if (!rc) rc = wd_pool_release(self, sh->pool, item, WD_POOL_OK);
  }
  return rc;
}

static int sem_user(wd_task *self, void *arg) {
  shared *sh = arg;
  int rc = 0;
  for (long i = 0; i < N_ROUNDS && !rc; i++) {
    rc = wd_sem_acquire(self, &sh->sem);
    if (!rc) rc = wd_yield(self);
    if (!rc) rc = wd_sem_release(&sh->sem);
  }
  return rc;
}

static int64_t crowd(wd_task *self, wd_task_fn fn, shared *sh,
                     const char *what) {
  wd_group g;
  bench_check(wd_group_enter(self, &g, &(wd_group_opts){.name = what}),
              "wd_group_enter");
  for (int i = 0; i < TASKS; i++)
    bench_check(wd_spawn(&g, fn, sh, NULL), "wd_spawn");
  int64_t t0 = bench_now();
  bench_check(wd_group_exit(self, &g, 0), what);
  return bench_now() - t0;
}

static int64_t time_contended(wd_task *self, wd_time *p99) {
  shared sh = {.pool = open_pool(self, 0, ITEMS, ITEMS)};
  int64_t t = crowd(self, pool_user, &sh, "pool users");
  wd_pool_stats st;
  bench_check(wd_pool_stats_get(sh.pool, &st), "wd_pool_stats_get");
  if (st.waited < (uint64_t)(TASKS * N_ROUNDS) / 2 || st.creates != ITEMS)
    bench_check(WD_EINVAL, "the pool was not contended");
  *p99 = st.wait_time.p99;
  bench_check(wd_pool_close(self, sh.pool), "wd_pool_close");
  return t;
}

static int64_t time_contended_sem(wd_task *self) {
  shared sh = {0};
  bench_check(wd_sem_init(&sh.sem, "bench", ITEMS), "wd_sem_init");
  int64_t t = crowd(self, sem_user, &sh, "sem users");
  bench_check(wd_sem_deinit(&sh.sem), "wd_sem_deinit");
  return t;
}

typedef struct results {
  int64_t pool, sem, timed, clock, contended, contended_sem;
  wd_time p99;
} results;

static int bench_main(wd_task *self, void *arg) {
  results *r = arg;
  *r = (results){INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX,
                 INT64_MAX, INT64_MAX, 0};
  for (int rep = 0; rep < REPS; rep++) {
    r->pool = bench_min(r->pool, time_pool(self, 0));
    r->sem = bench_min(r->sem, time_sem(self));
    r->timed = bench_min(r->timed, time_pool(self, 1));
    r->clock = bench_min(r->clock, time_clock(self));
    wd_time p99;
    int64_t c = time_contended(self, &p99);
    if (c < r->contended) {
      r->contended = c;
      r->p99 = p99;
    }
    r->contended_sem = bench_min(r->contended_sem, time_contended_sem(self));
  }
  return 0;
}

int main(void) {
  bench_watchdog(120);
  results r;
  bench_check(wd_run(bench_main, &r), "wd_run");
  double pairs = (double)TASKS * (double)N_ROUNDS;
  printf("# uncontended: %ld acquire+release pairs by one task; contended: "
         "%d tasks x %ld on %d items\n",
         N_FAST, TASKS, N_ROUNDS, ITEMS);
  bench_print("pool.acquire", (double)r.pool / (double)N_FAST, 1, "ns");
  bench_print("pool.acquire.sem", (double)r.sem / (double)N_FAST, 1, "ns");
  bench_print("pool.acquire.timed", (double)r.timed / (double)N_FAST, 1, "ns");
  bench_print("pool.clock", (double)r.clock / (double)(N_FAST / 10), 1, "ns");
  bench_print("pool.contended", (double)r.contended / pairs, 1, "ns");
  bench_print("pool.contended.sem", (double)r.contended_sem / pairs, 1, "ns");
  bench_print("pool.contended.p99_wait", (double)r.p99, 0, "ns");
  return 0;
}
