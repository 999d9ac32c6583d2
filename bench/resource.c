/* bench/resource.c - what a scope and a lazy resource cost.
 *
 *   resource.scope            enter a scope, push the release of a no-op
 *                             resource (wd_scope_defer), exit: ns per round
 *   resource.scope.baseline   the same release called directly, through a
 *                             function pointer the compiler cannot see
 *                             through: the floor the scope adds to
 *   resource.scope.shielded   the same with wd_scope_push: the release runs
 *                             in a shielded cancel scope with a grace
 *                             deadline (a timer armed and disarmed)
 *   resource.scope.open_close a whole no-op resource: wd_scope_open of a
 *                             type without open or close, then the exit
 *                             (allocation, registry, counters, free)
 *   resource.lazy.single_flight
 *                             1000 tasks call wd_lazy_get at once on a lazy
 *                             resource whose open yields: ns per caller,
 *                             from the first spawn to the group's end
 *   resource.lazy.single_flight.baseline
 *                             the same 1000 tasks doing nothing: what the
 *                             tasks alone cost
 *   resource.lazy.ready       wd_lazy_get of an open lazy resource
 *
 * Each figure is the best of several runs.
 */
#include "bench.h"

#define ROUNDS 5
#define N_SCOPE 5000000L
#define N_OPEN 1000000L
#define CALLERS 1000
#define N_LAZY_ROUNDS 200

static long released;

static int noop_release(wd_task *self, void *arg, wd_outcome how) {
  released++;
  return 0;
}

static int (*volatile release_ptr)(wd_task *, void *,
                                   wd_outcome) = noop_release;

static const wd_resource_type noop_type = {.name = "noop", .size = 8};

static int yield_open(wd_task *self, void *data, const void *config) {
  return wd_yield(self);
}

static const wd_resource_type lazy_type = {
    .name = "lazy", .size = 8, .open = yield_open};

static double per_op(int64_t ns, long n) { return (double)ns / (double)n; }

static int64_t time_baseline(wd_task *self) {
  int64_t t0 = bench_now();
  for (long i = 0; i < N_SCOPE; i++)
    release_ptr(self, &released, WD_OUTCOME_OK);
  return bench_now() - t0;
}

static int64_t time_scope(wd_task *self, bool shielded) {
  int64_t t0 = bench_now();
  for (long i = 0; i < N_SCOPE; i++) {
    wd_scope s;
    wd_scope_enter(self, &s);
    if (shielded)
      wd_scope_push(self, &s, noop_release, &released);
    else
      wd_scope_defer(self, &s, noop_release, &released);
    bench_check(wd_scope_exit(self, &s, 0), "wd_scope_exit");
  }
  return bench_now() - t0;
}

static int64_t time_open_close(wd_task *self) {
  int64_t t0 = bench_now();
  for (long i = 0; i < N_OPEN; i++) {
    wd_scope s;
    wd_resource *r;
    wd_scope_enter(self, &s);
    bench_check(wd_scope_open(self, &s, &noop_type, NULL, "noop", &r),
                "wd_scope_open");
    bench_check(wd_scope_exit(self, &s, 0), "wd_scope_exit");
  }
  return bench_now() - t0;
}

static int lazy_caller(wd_task *self, void *arg) {
  wd_resource *r;
  return wd_lazy_get(self, arg, &r);
}

static int idle_caller(wd_task *self, void *arg) { return 0; }

static int64_t time_crowd(wd_task *self, bool lazy) {
  int64_t best = INT64_MAX;
  for (int round = 0; round < N_LAZY_ROUNDS; round++) {
    wd_lazy l;
    bench_check(wd_lazy_init(&l, &lazy_type, NULL, "shared"), "wd_lazy_init");
    wd_group g;
    int64_t t0 = bench_now();
    bench_check(wd_group_enter(self, &g, NULL), "wd_group_enter");
    for (int i = 0; i < CALLERS; i++)
      bench_check(wd_spawn(&g, lazy ? lazy_caller : idle_caller, &l, NULL),
                  "wd_spawn");
    bench_check(wd_group_exit(self, &g, 0), "wd_group_exit");
    int64_t t = bench_now() - t0;
    if (lazy && wd_lazy_opens(&l) != 1) {
      fprintf(stderr, "bench: %llu opens, not 1\n",
              (unsigned long long)wd_lazy_opens(&l));
      exit(1);
    }
    bench_check(wd_lazy_deinit(self, &l), "wd_lazy_deinit");
    best = bench_min(best, t);
  }
  return best;
}

static int64_t time_lazy_ready(wd_task *self) {
  wd_lazy l;
  wd_resource *r;
  bench_check(wd_lazy_init(&l, &lazy_type, NULL, "ready"), "wd_lazy_init");
  bench_check(wd_lazy_get(self, &l, &r), "wd_lazy_get");
  int64_t t0 = bench_now();
  for (long i = 0; i < N_SCOPE; i++)
    bench_check(wd_lazy_get(self, &l, &r), "wd_lazy_get");
  int64_t t = bench_now() - t0;
  bench_check(wd_lazy_deinit(self, &l), "wd_lazy_deinit");
  return t;
}

static int bench_main(wd_task *self, void *arg) {
  int64_t base = INT64_MAX, scope = INT64_MAX, shielded = INT64_MAX;
  int64_t oc = INT64_MAX, ready = INT64_MAX;
  for (int round = 0; round < ROUNDS; round++) {
    base = bench_min(base, time_baseline(self));
    scope = bench_min(scope, time_scope(self, false));
    shielded = bench_min(shielded, time_scope(self, true));
    oc = bench_min(oc, time_open_close(self));
    ready = bench_min(ready, time_lazy_ready(self));
  }
  printf("# scope: enter + push a no-op release + exit, best of %d x %ld\n",
         ROUNDS, N_SCOPE);
  bench_print("resource.scope", per_op(scope, N_SCOPE), 2, "ns");
  bench_print("resource.scope.baseline", per_op(base, N_SCOPE), 2, "ns");
  bench_print("resource.scope.shielded", per_op(shielded, N_SCOPE), 2, "ns");
  bench_print("resource.scope.open_close", per_op(oc, N_OPEN), 2, "ns");
  int64_t crowd = time_crowd(self, true);
  int64_t idle = time_crowd(self, false);
  printf("# lazy: %d concurrent callers, best of %d rounds\n", CALLERS,
         N_LAZY_ROUNDS);
  bench_print("resource.lazy.single_flight", per_op(crowd, CALLERS), 1, "ns");
  bench_print("resource.lazy.single_flight.baseline", per_op(idle, CALLERS), 1,
              "ns");
  bench_print("resource.lazy.ready", per_op(ready, N_SCOPE), 2, "ns");
  return 0;
}

int main(void) {
  bench_watchdog(60);
  bench_check(wd_run(bench_main, NULL), "wd_run");
  if (released != 2L * ROUNDS * N_SCOPE + (long)ROUNDS * N_SCOPE) {
    fprintf(stderr, "bench: %ld releases\n", released);
    return 1;
  }
  return 0;
}
