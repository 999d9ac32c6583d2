/* guard.c - what a guard adds around a call, and a batcher's throughput.
 *
 * flow.guard: wd_guard_call() around an empty call with all five layers
 * on and permissive - a closed breaker, a retry that never retries, a rate
 * limiter that always grants (10^9 per second, a burst of 2^32 - 1), a
 * limiter of 2^30 permits and a 1 s per-attempt timeout - in the default
 * order, minus the same empty call made directly in the same run (printed
 * on a '#' line as the baseline).  '#' lines give the guard without the
 * timeout layer (the timeout's timer is most of the cost), and with no
 * layer at all (the guard's own frame and checks).
 *
 * flow.batcher: items per second through a batcher (batches of up to 64,
 * max_wait 0, 4 batches in flight, a batch function that fills every
 * result) from 1000 concurrent submitter tasks, each submitting its items
 * one after the other and waiting for each result: submit, park, the
 * batch, the wake-up.  A '#' line gives the same number of tasks doing a
 * bare wd_yield per item, the scheduler's floor for one switch out and
 * back per item.
 *
 * Each figure is the best of REPS runs, on the real clock.
 */
#include "bench.h"

#define N 5000000L
#define REPS 5
#define SUBMITTERS 1000
#define PER_SUBMITTER 2000

static int empty(wd_task *self, void *arg) { return 0; }

/* The callee as the guard sees it: a pointer read at run time. */
static wd_task_fn volatile callee = empty;

typedef struct figures {
  int64_t direct, guard, no_timeout, bare, batcher, yields;
} figures;

static int64_t time_direct(wd_task *self) {
  int64_t t0 = bench_now();
  for (long i = 0; i < N; i++)
    bench_check(callee(self, NULL), "call");
  return bench_now() - t0;
}

typedef struct layers {
  wd_retry retry;
  wd_ratelimit rl;
  wd_limiter lim;
  wd_breaker brk;
} layers;

static int64_t time_guard(wd_task *self, layers *l, wd_time timeout,
                          bool none) {
  wd_guard g;
  wd_guard_opts o = {.name = "bench",
                     .timeout = timeout,
                     .retry = &l->retry,
                     .ratelimit = &l->rl,
                     .limiter = &l->lim,
                     .breaker = &l->brk};
  bench_check(wd_guard_init(&g, none ? NULL : &o), "wd_guard_init");
  int64_t t0 = bench_now();
  for (long i = 0; i < N; i++)
    bench_check(wd_guard_call(self, &g, callee, NULL), "guard call");
  int64_t t = bench_now() - t0;
  bench_check(wd_guard_deinit(&g), "wd_guard_deinit");
  return t;
}

static int guard_main(wd_task *self, void *arg) {
  figures *f = arg;
  layers l;
  bench_check(wd_retry_init(&l.retry, NULL), "wd_retry_init");
  bench_check(wd_ratelimit_init(&l.rl, 1000000000, WD_SEC,
                                &(wd_ratelimit_opts){.burst = UINT32_MAX}),
              "wd_ratelimit_init");
  bench_check(wd_limiter_init(&l.lim, "bench", (size_t)1 << 30),
              "wd_limiter_init");
  bench_check(wd_breaker_init(&l.brk, NULL), "wd_breaker_init");
  f->direct = bench_min(f->direct, time_direct(self));
  f->guard = bench_min(f->guard, time_guard(self, &l, WD_SEC, false));
  f->no_timeout = bench_min(f->no_timeout, time_guard(self, &l, 0, false));
  f->bare = bench_min(f->bare, time_guard(self, &l, 0, true));
  bench_check(wd_limiter_deinit(&l.lim), "wd_limiter_deinit");
  bench_check(wd_ratelimit_deinit(&l.rl), "wd_ratelimit_deinit");
  wd_breaker_deinit(&l.brk);
  return 0;
}

/* ---- batcher ------------------------------------------------------------ */

static int fill(wd_task *self, const wd_batch *b, void *arg) {
  for (size_t i = 0; i < b->n; i++)
    b->results[i] = b->items[i];
  return 0;
}

static int submitter(wd_task *self, void *arg) {
  wd_batcher *b = arg;
  for (intptr_t i = 0; i < PER_SUBMITTER; i++) {
    void *res;
    bench_check(wd_batcher_submit(self, b, (void *)i, &res), "submit");
    if ((intptr_t)res != i) bench_check(WD_EINVAL, "wrong result");
  }
  return 0;
}

static int yielder(wd_task *self, void *arg) {
  for (long i = 0; i < PER_SUBMITTER; i++)
    bench_check(wd_yield(self), "yield");
  return 0;
}

static int64_t time_tasks(wd_task *self, wd_task_fn fn, void *arg) {
  wd_group g;
  bench_check(wd_group_enter(self, &g, NULL), "wd_group_enter");
  int64_t t0 = bench_now();
  for (int i = 0; i < SUBMITTERS; i++)
    bench_check(wd_spawn(&g, fn, arg, NULL), "wd_spawn");
  bench_check(wd_group_exit(self, &g, 0), "wd_group_exit");
  return bench_now() - t0;
}

static int batcher_main(wd_task *self, void *arg) {
  figures *f = arg;
  wd_batcher *b;
  bench_check(wd_batcher_open(self, &b,
                              &(wd_batcher_opts){.name = "bench",
                                                 .fn = fill,
                                                 .max_size = 64,
                                                 .max_inflight = 4}),
              "wd_batcher_open");
  f->batcher = bench_min(f->batcher, time_tasks(self, submitter, b));
  bench_check(wd_batcher_close(self, b), "wd_batcher_close");
  f->yields = bench_min(f->yields, time_tasks(self, yielder, NULL));
  return 0;
}

static double per_call(int64_t t) { return (double)t / (double)N; }

static double overhead(int64_t t, int64_t direct) {
  double d = per_call(t) - per_call(direct);
  return d > 0 ? d : 0;
}

static double items_per_s(int64_t t) {
  return (double)SUBMITTERS * PER_SUBMITTER * 1e9 / (double)t;
}

int main(void) {
  bench_watchdog(120); /* well under 20 s */
  figures f = {INT64_MAX, INT64_MAX, INT64_MAX,
               INT64_MAX, INT64_MAX, INT64_MAX};
  for (int rep = 0; rep < REPS; rep++) {
    bench_check(wd_run(guard_main, &f), "wd_run");
    bench_check(wd_run(batcher_main, &f), "wd_run");
  }
  printf("# %ld calls each, best of %d; the bare call (baseline) takes "
         "%.1f ns\n",
         N, REPS, per_call(f.direct));
  bench_print("flow.guard", overhead(f.guard, f.direct), 1, "ns");
  bench_print("flow.guard.baseline", per_call(f.direct), 1, "ns");
  printf("# flow.guard without the timeout layer: %.1f ns; with no layer: "
         "%.1f ns\n",
         overhead(f.no_timeout, f.direct), overhead(f.bare, f.direct));
  printf("# %d submitters x %d items, batches of up to 64, 4 in flight; "
         "the same tasks doing one wd_yield per item: %.0f per s\n",
         SUBMITTERS, PER_SUBMITTER, items_per_s(f.yields));
  bench_print("flow.batcher", items_per_s(f.batcher), 0, "items/s");
  bench_print("flow.batcher.yield_baseline", items_per_s(f.yields), 0,
              "items/s");
  return 0;
}
