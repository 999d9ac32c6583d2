/* bench/monitor.c - what the monitor's exports and the health-check runner
 * cost with 1000 live resources.
 *
 *   resource.monitor.json     wd_monitor_export() as JSON (counters,
 *                             lifetimes, and the 1000 resources with their
 *                             state, site and age): us per export
 *   resource.monitor.prometheus
 *                             the same figures as Prometheus text
 *   resource.health.check_all wd_health_check_all() over 1000 resources
 *                             whose check returns 0 at once: one task and
 *                             one cancel scope with a deadline per check,
 *                             the report allocated: us per run
 *   resource.health.check_all.baseline
 *                             the same 1000 tasks spawned into a group and
 *                             awaited, doing nothing: what the tasks alone
 *                             cost
 *
 * The 1000 resources are opened once; 1000 more were opened and closed
 * before, so that the lifetime histogram is not empty.  Each figure is the
 * best of ROUNDS runs.
 */
#include "bench.h"

#define N 1000
#define ROUNDS 50

static int trivial_check(wd_task *self, void *data) { return 0; }

static const wd_resource_type bench_type = {
    .name = "bench", .size = 8, .health = trivial_check};

static int idle(wd_task *self, void *arg) { return 0; }

static int64_t time_export(wd_export_format fmt, size_t *bytes) {
  int64_t best = INT64_MAX;
  for (int round = 0; round < ROUNDS; round++) {
    char *text;
    int64_t t0 = bench_now();
    bench_check(wd_monitor_export(NULL, fmt, 0, &text), "wd_monitor_export");
    best = bench_min(best, bench_now() - t0);
    *bytes = strlen(text);
    wd_text_free(text);
  }
  return best;
}

static int64_t time_check_all(wd_task *self) {
  int64_t best = INT64_MAX;
  for (int round = 0; round < ROUNDS; round++) {
    wd_health_report *rep;
    int64_t t0 = bench_now();
    bench_check(wd_health_check_all(self, NULL, &rep), "wd_health_check_all");
    best = bench_min(best, bench_now() - t0);
    if (rep->n != N || rep->healthy != N) {
      fprintf(stderr, "bench: %zu checks, %zu healthy\n", rep->n, rep->healthy);
      exit(1);
    }
    wd_health_report_free(rep);
  }
  return best;
}

static int64_t time_tasks(wd_task *self) {
  int64_t best = INT64_MAX;
  for (int round = 0; round < ROUNDS; round++) {
    wd_group g;
    int64_t t0 = bench_now();
    bench_check(wd_group_enter(self, &g, NULL), "wd_group_enter");
    for (int i = 0; i < N; i++)
      bench_check(wd_spawn(&g, idle, NULL, NULL), "wd_spawn");
    bench_check(wd_group_exit(self, &g, 0), "wd_group_exit");
    best = bench_min(best, bench_now() - t0);
  }
  return best;
}

static double us(int64_t ns) { return (double)ns / 1e3; }

static int bench_main(wd_task *self, void *arg) {
  static wd_resource *live[N];
  for (int i = 0; i < N; i++) {
    wd_resource *r;
    bench_check(wd_resource_open(self, &bench_type, NULL, "old", &r),
                "wd_resource_open");
    bench_check(wd_resource_close(self, r, 0), "wd_resource_close");
  }
  for (int i = 0; i < N; i++) {
    char name[32];
    snprintf(name, sizeof name, "conn-%d", i);
    bench_check(wd_resource_open(self, &bench_type, NULL, name, &live[i]),
                "wd_resource_open");
  }
  size_t json_bytes, prom_bytes;
  int64_t json = time_export(WD_EXPORT_JSON, &json_bytes);
  int64_t prom = time_export(WD_EXPORT_PROMETHEUS, &prom_bytes);
  /* Warm the stack cache first, as a long-running server's would be. */
  time_tasks(self);
  int64_t base = time_tasks(self);
  int64_t checks = time_check_all(self);
  printf("# %d live resources; JSON %zu bytes, Prometheus %zu bytes; best "
         "of %d\n",
         N, json_bytes, prom_bytes, ROUNDS);
  bench_print("resource.monitor.json", us(json), 1, "us");
  bench_print("resource.monitor.prometheus", us(prom), 1, "us");
  bench_print("resource.health.check_all", us(checks), 1, "us");
  bench_print("resource.health.check_all.baseline", us(base), 1, "us");
  for (int i = 0; i < N; i++)
    bench_check(wd_resource_close(self, live[i], 0), "wd_resource_close");
  return 0;
}

int main(void) {
  bench_watchdog(60);
  bench_check(wd_run(bench_main, NULL), "wd_run");
  return 0;
}
