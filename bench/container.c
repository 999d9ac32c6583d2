/* bench/container.c - what a container get costs.
 *
 *   resource.container.get           wd_container_get of a scoped instance
 *                                    already open in the scope: ns per get
 *   resource.container.get.baseline  a bare call, through a function pointer
 *                                    the compiler cannot see through, that
 *                                    returns a stored pointer: the floor
 *   resource.container.get.singleton the same get of an open singleton
 *   resource.container.get.nested    a scoped instance of the outer scope,
 *                                    got from an inner scope
 *   resource.container.scope         enter a scope, get a scoped no-op
 *                                    instance (opened), exit (closed)
 *
 * The container has 16 bindings, so that the key table is not trivially
 * one entry.  Each figure is the best of several runs.
 */
#include "bench.h"

#define ROUNDS 5
#define N_GET 20000000L
#define N_SCOPE 1000000L
#define NKEYS 16

static const wd_resource_type noop_type = {.name = "noop", .size = 8};

static wd_key keys[NKEYS];
static char key_names[NKEYS][16];

static void *stored;
static void *bare_get(void *arg) { return stored; }
static void *(*volatile bare_ptr)(void *) = bare_get;

static double per_op(int64_t ns, long n) { return (double)ns / (double)n; }

static int64_t time_baseline(void) {
  void *sink = NULL;
  int64_t t0 = bench_now();
  for (long i = 0; i < N_GET; i++)
    sink = bare_ptr(sink);
  int64_t t = bench_now() - t0;
  if (sink != stored) exit(2);
  return t;
}

static int64_t time_get(wd_task *self, wd_container_scope *s, const wd_key *k) {
  void *p, *first;
  bench_check(wd_container_get(self, s, k, &first), "wd_container_get");
  int64_t t0 = bench_now();
  for (long i = 0; i < N_GET; i++)
    bench_check(wd_container_get(self, s, k, &p), "wd_container_get");
  int64_t t = bench_now() - t0;
  if (p != first) exit(2);
  return t;
}

static int64_t time_scope(wd_task *self, wd_container *c, const wd_key *k) {
  int64_t t0 = bench_now();
  for (long i = 0; i < N_SCOPE; i++) {
    wd_container_scope s;
    void *p;
    bench_check(wd_container_scope_enter(self, c, NULL, &s),
                "wd_container_scope_enter");
    bench_check(wd_container_get(self, &s, k, &p), "wd_container_get");
    bench_check(wd_container_scope_exit(self, &s, 0),
                "wd_container_scope_exit");
  }
  return bench_now() - t0;
}

static int bench_main(wd_task *self, void *arg) {
  wd_container *c;
  bench_check(wd_container_open(&c, "bench"), "wd_container_open");
  for (int i = 0; i < NKEYS; i++) {
    snprintf(key_names[i], sizeof key_names[i], "k%d", i);
    keys[i].name = key_names[i];
    bench_check(wd_container_bind(
                    c, &keys[i],
                    &(wd_binding){.lifetime = i == 0 ? WD_SINGLETON : WD_SCOPED,
                                  .type = &noop_type}),
                "wd_container_bind");
  }
  bench_check(wd_container_start(self, c), "wd_container_start");
  const wd_key *scoped = &keys[NKEYS / 2], *single = &keys[0];
  int64_t base = INT64_MAX, get = INT64_MAX, one = INT64_MAX;
  int64_t nested = INT64_MAX, scope = INT64_MAX;
  wd_container_scope outer, inner;
  bench_check(wd_container_scope_enter(self, c, NULL, &outer),
              "wd_container_scope_enter");
  bench_check(wd_container_scope_enter(self, c, &outer, &inner),
              "wd_container_scope_enter");
  bench_check(wd_container_get(self, &outer, scoped, &stored),
              "wd_container_get");
  for (int round = 0; round < ROUNDS; round++) {
    base = bench_min(base, time_baseline());
    get = bench_min(get, time_get(self, &outer, scoped));
    one = bench_min(one, time_get(self, &outer, single));
    nested = bench_min(nested, time_get(self, &inner, scoped));
  }
  bench_check(wd_container_scope_exit(self, &inner, 0),
              "wd_container_scope_exit");
  bench_check(wd_container_scope_exit(self, &outer, 0),
              "wd_container_scope_exit");
  for (int round = 0; round < ROUNDS; round++)
    scope = bench_min(scope, time_scope(self, c, scoped));
  printf("# get of an open instance, best of %d x %ld; %d bindings\n", ROUNDS,
         N_GET, NKEYS);
  bench_print("resource.container.get", per_op(get, N_GET), 2, "ns");
  bench_print("resource.container.get.baseline", per_op(base, N_GET), 2, "ns");
  bench_print("resource.container.get.singleton", per_op(one, N_GET), 2, "ns");
  bench_print("resource.container.get.nested", per_op(nested, N_GET), 2, "ns");
  printf("# scope: enter + get (open) + exit (close), best of %d x %ld\n",
         ROUNDS, N_SCOPE);
  bench_print("resource.container.scope", per_op(scope, N_SCOPE), 1, "ns");
  return wd_container_close(self, c, 0);
}

int main(void) {
  bench_watchdog(60);
  bench_check(wd_run(bench_main, NULL), "wd_run");
  return 0;
}
