/* parked.c - what a parked task costs in memory, and how fast tasks start.
 *
 * N trivial tasks (park on one shared event, then return) are spawned into
 * one group by the root task, which then yields until every one of them is
 * parked.  The event is a list of wd_wait records (bench.h); the root wakes
 * them all and exits the group.  N is 100k, then 1M, each in its own
 * runtime (wd_run) with default settings: default stack size, default
 * vm.max_map_count, so past the guard-page budget stacks use canaries.
 *
 * core.parked.bytes (1M) and core.parked.bytes.100k: resident memory per
 * task, ((VmRSS + VmPTE) while all are parked - (VmRSS + VmPTE) before the
 * first spawn) / N, from /proc/self/status.  It includes the page tables,
 * which a sparse stack per task makes significant.
 *
 * core.parked.spawn_rate: tasks per second from the first spawn until the
 * root sees all 1M parked (spawn, first switch into the task, park).
 *
 * Each size runs a few times; memory is the smallest, rate the fastest.
 */
#include "bench.h"

/* 1M tasks take ~5 s a run here, most of it page faults (~3.5 us each on
 * this VM) and releasing the stacks, hence fewer runs of the big size. */
#define REPS_100K 3
#define REPS_1M 2

typedef struct run {
  long n;
  int64_t bytes;      /* resident bytes added while all were parked */
  int64_t spawn_ns;   /* first spawn .. all parked */
  int64_t release_ns; /* wake all .. group exited */
  wd_runtime_stats stats;
} run;

static int parker(wd_task *self, void *arg) {
  return bench_event_wait(self, arg);
}

static int bench_main(wd_task *self, void *arg) {
  run *r = arg;
  bench_event ev = {.name = "release"};
  wd_group g;
  int64_t before = bench_resident();
  int64_t t0 = bench_now();
  bench_check(wd_group_enter(self, &g, &(wd_group_opts){.name = "parked"}),
              "wd_group_enter");
  for (long i = 0; i < r->n; i++)
    bench_check(wd_spawn(&g, parker, &ev, NULL), "wd_spawn");
  /* Spawned tasks run once we yield; the run queue is FIFO, so one yield
   * normally suffices, but the count is what says they are all parked. */
  while (ev.nwaiting < (size_t)r->n)
    bench_check(wd_yield(self), "wd_yield");
  int64_t t1 = bench_now();
  r->spawn_ns = t1 - t0;
  r->bytes = bench_resident() - before;
  wd_runtime_stats_get(wd_task_runtime(self), &r->stats);
  bench_event_set(&ev);
  int rc = wd_group_exit(self, &g, 0);
  r->release_ns = bench_now() - t1;
  return rc;
}

/* Best of reps runs of n tasks. */
static run measure(long n, int reps) {
  run best = {.n = n,
              .bytes = INT64_MAX,
              .spawn_ns = INT64_MAX,
              .release_ns = INT64_MAX};
  for (int rep = 0; rep < reps; rep++) {
    run r = {.n = n};
    int64_t t0 = bench_now();
    bench_check(wd_run(bench_main, &r), "wd_run");
    printf("# run of %ld: %.2f s in all\n", n, (bench_now() - t0) / 1e9);
    if (r.bytes < best.bytes) {
      best.bytes = r.bytes;
      best.stats = r.stats;
    }
    best.spawn_ns = bench_min(best.spawn_ns, r.spawn_ns);
    best.release_ns = bench_min(best.release_ns, r.release_ns);
  }
  printf("# %ld parked tasks: %.0f bytes each, %.0f ns to spawn and park "
         "each, %.0f ns to wake and end each; %zu stacks, %zu guarded\n",
         n, (double)best.bytes / n, (double)best.spawn_ns / n,
         (double)best.release_ns / n, best.stats.stacks_mapped,
         best.stats.stacks_guarded);
  return best;
}

int main(void) {
  bench_watchdog(120); /* each program takes well under 20 s */
  run small = measure(100000, REPS_100K);
  run big = measure(1000000, REPS_1M);
  bench_print("core.parked.bytes", (double)big.bytes / big.n, 0, "bytes");
  bench_print("core.parked.bytes.100k", (double)small.bytes / small.n, 0,
              "bytes");
  bench_print("core.parked.spawn_rate", 1e9 * big.n / big.spawn_ns, 0, "ops/s");
  return 0;
}
