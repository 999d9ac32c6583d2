/* spawn.c - the cost of starting and finishing an empty task.
 *
 * core.spawn: the root task spawns 1M empty tasks in batches of BATCH: open
 * a group, spawn BATCH tasks, wd_group_exit() (which runs them all and
 * waits), repeat with a fresh group.  ns per task covers the spawn, the
 * switch into the task, its end and the release of its stack, plus the
 * group's share.
 *
 * core.spawn.join1: one task at a time: spawn it with a wd_handle and
 * wd_join() it at once, 1M times in one group.  Nothing overlaps here, so
 * each task also pays two full switches (to it and back) and a park.
 *
 * Each repetition is a fresh runtime (wd_run), so the stack cache starts
 * empty and the first tasks pay for carving their stacks, as a program
 * would.  The figures are the best of REPS repetitions, the two variants
 * alternating.
 */
#include "bench.h"

#define N_TASKS 1000000L
#define BATCH 1000
#define REPS 5

static int empty(wd_task *self, void *arg) { return 0; }

static int batched(wd_task *self, void *arg) {
  int64_t t0 = bench_now();
  for (long done = 0; done < N_TASKS; done += BATCH) {
    wd_group g;
    bench_check(wd_group_enter(self, &g, NULL), "wd_group_enter");
    for (int i = 0; i < BATCH; i++)
      bench_check(wd_spawn(&g, empty, NULL, NULL), "wd_spawn");
    bench_check(wd_group_exit(self, &g, 0), "wd_group_exit");
  }
  *(int64_t *)arg = bench_now() - t0;
  return 0;
}

static int join1(wd_task *self, void *arg) {
  int64_t t0 = bench_now();
  wd_group g;
  wd_handle h;
  bench_check(wd_group_enter(self, &g, NULL), "wd_group_enter");
  for (long i = 0; i < N_TASKS; i++) {
    bench_check(wd_spawn(&g, empty, NULL, &(wd_spawn_opts){.handle = &h}),
                "wd_spawn");
    bench_check(wd_join(self, &h), "wd_join");
    if (!h.done || h.status != 0) bench_check(WD_EINVAL, "task outcome");
  }
  bench_check(wd_group_exit(self, &g, 0), "wd_group_exit");
  *(int64_t *)arg = bench_now() - t0;
  return 0;
}

int main(void) {
  bench_watchdog(120); /* each program takes well under 20 s */
  int64_t best_batched = INT64_MAX, best_join1 = INT64_MAX, t;
  for (int rep = 0; rep < REPS; rep++) {
    bench_check(wd_run(batched, &t), "wd_run");
    best_batched = bench_min(best_batched, t);
    bench_check(wd_run(join1, &t), "wd_run");
    best_join1 = bench_min(best_join1, t);
  }
  printf("# %ld empty tasks, best of %d; batches of %d per group\n", N_TASKS,
         REPS, BATCH);
  bench_print("core.spawn", (double)best_batched / N_TASKS, 1, "ns");
  bench_print("core.spawn.join1", (double)best_join1 / N_TASKS, 1, "ns");
  return 0;
}
