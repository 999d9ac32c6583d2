/* flow.c - what the flow-control policies cost on their happy path.
 *
 * flow.ratelimit.try: wd_ratelimit_acquire_try() of one permit on a limiter
 * so fast (10^9 per second, a burst of 2^32 - 1) that it always grants: the
 * GCRA update plus one read of the runtime's real clock.  A '#' line gives
 * the same for an interval that is not a whole number of ns (10^9 per 3 s),
 * which costs a division more.
 *
 * flow.breaker.call: wd_breaker_call() of a closed breaker (count window)
 * around an empty call, minus the empty call made directly: the overhead
 * of the breaker.
 *
 * flow.retry.call: wd_retry_call() of a call that succeeds at once (no
 * budget, no max_elapsed), minus the direct call.
 *
 * flow.timeout.call: wd_timeout_call() with a 1 s timeout around an empty
 * call, minus the direct call: entering and leaving a cancel scope with a
 * deadline (one clock read, a timer armed and disarmed).
 *
 * Each figure is the best of REPS runs of N calls in one task, on the real
 * clock; the direct call, through a pointer the compiler cannot see
 * through, is printed on a '#' line.
 */
#include "bench.h"

#define N 10000000L
#define REPS 5

static int empty(wd_task *self, void *arg) { return 0; }

/* The callee as the policies see it: a pointer read at run time. */
static wd_task_fn volatile callee = empty;

typedef struct figures {
  int64_t direct, try_, try_frac, breaker, retry, timeout;
} figures;

static int64_t time_direct(wd_task *self) {
  int64_t t0 = bench_now();
  for (long i = 0; i < N; i++)
    bench_check(callee(self, NULL), "call");
  return bench_now() - t0;
}

static int64_t time_try(wd_task *self, wd_time period) {
  wd_ratelimit rl;
  bench_check(wd_ratelimit_init(&rl, 1000000000, period,
                                &(wd_ratelimit_opts){.burst = UINT32_MAX}),
              "wd_ratelimit_init");
  int64_t t0 = bench_now();
  for (long i = 0; i < N; i++)
    bench_check(wd_ratelimit_acquire_try(self, &rl, 1), "try");
  int64_t t = bench_now() - t0;
  bench_check(wd_ratelimit_deinit(&rl), "wd_ratelimit_deinit");
  return t;
}

static int64_t time_breaker(wd_task *self) {
  wd_breaker b;
  bench_check(wd_breaker_init(&b, NULL), "wd_breaker_init");
  int64_t t0 = bench_now();
  for (long i = 0; i < N; i++)
    bench_check(wd_breaker_call(self, &b, callee, NULL), "breaker call");
  int64_t t = bench_now() - t0;
  wd_breaker_deinit(&b);
  return t;
}

static int64_t time_retry(wd_task *self) {
  wd_retry r;
  bench_check(wd_retry_init(&r, NULL), "wd_retry_init");
  int64_t t0 = bench_now();
  for (long i = 0; i < N; i++)
    bench_check(wd_retry_call(self, &r, callee, NULL), "retry call");
  return bench_now() - t0;
}

static int64_t time_timeout(wd_task *self) {
  int64_t t0 = bench_now();
  for (long i = 0; i < N; i++)
    bench_check(wd_timeout_call(self, WD_SEC, "bench", callee, NULL),
                "timeout call");
  return bench_now() - t0;
}

static int bench_main(wd_task *self, void *arg) {
  figures *f = arg;
  f->direct = bench_min(f->direct, time_direct(self));
  f->try_ = bench_min(f->try_, time_try(self, WD_SEC));
  f->try_frac = bench_min(f->try_frac, time_try(self, 3 * WD_SEC));
  f->breaker = bench_min(f->breaker, time_breaker(self));
  f->retry = bench_min(f->retry, time_retry(self));
  f->timeout = bench_min(f->timeout, time_timeout(self));
  return 0;
}

static double per_call(int64_t t) { return (double)t / (double)N; }

static double overhead(int64_t t, int64_t direct) {
  double d = per_call(t) - per_call(direct);
  return d > 0 ? d : 0;
}

int main(void) {
  bench_watchdog(120); /* each program takes well under 20 s */
  figures f = {INT64_MAX, INT64_MAX, INT64_MAX,
               INT64_MAX, INT64_MAX, INT64_MAX};
  for (int rep = 0; rep < REPS; rep++)
    bench_check(wd_run(bench_main, &f), "wd_run");
  printf("# %ld calls each, best of %d; overheads are over a direct call "
         "of %.1f ns\n",
         N, REPS, per_call(f.direct));
  bench_print("flow.ratelimit.try", per_call(f.try_), 1, "ns");
  printf("# flow.ratelimit.try with a fractional interval: %.1f ns\n",
         per_call(f.try_frac));
  bench_print("flow.breaker.call", overhead(f.breaker, f.direct), 1, "ns");
  bench_print("flow.retry.call", overhead(f.retry, f.direct), 1, "ns");
  bench_print("flow.timeout.call", overhead(f.timeout, f.direct), 1, "ns");
  return 0;
}
