/* switch.c - the cost of one task switch.
 *
 * core.switch: two tasks of one group call wd_yield() N times each.  With
 * only the two of them ready, every yield hands the CPU to the other task,
 * so a run is 2N switches; the time from the owner's wd_group_exit() until
 * it returns, divided by 2N, is the cost of a switch including the run
 * queue, the cancel checkpoint and the canary check of wd_yield().
 *
 * core.switch.fcontext: the floor, Boost.Context's bare jump_fcontext()
 * bouncing between the main context and one other, N round trips = 2N
 * switches; core.switch.vs_fcontext is warden's cost over it.
 *
 * core.switch.parked10k: the same ping-pong while 10000 other tasks sit
 * parked on an event (woken afterwards).  Parked tasks are not on the run
 * queue, so this must cost about the same as core.switch; if it does not,
 * something walks the blocked tasks.
 *
 * Each figure is the best of REPS runs; the three variants alternate so
 * that drift of this noisy machine affects them alike.
 */
#include "bench.h"

#define N_YIELDS 10000000L /* per task */
#define N_PARKED 10000
#define REPS 5

static int yielder(wd_task *self, void *arg) {
  long n = *(const long *)arg;
  for (long i = 0; i < n; i++) {
    int rc = wd_yield(self);
    if (rc) return rc;
  }
  return 0;
}

/* ns for 2n switches between two fresh tasks of a new group. */
static int64_t ping_pong(wd_task *self, long n, uint64_t *switches) {
  wd_group g;
  wd_runtime_stats s0, s1;
  bench_check(wd_group_enter(self, &g, &(wd_group_opts){.name = "pingpong"}),
              "wd_group_enter");
  bench_check(wd_spawn(&g, yielder, &n, NULL), "wd_spawn");
  bench_check(wd_spawn(&g, yielder, &n, NULL), "wd_spawn");
  wd_runtime_stats_get(wd_task_runtime(self), &s0);
  int64_t t0 = bench_now();
  bench_check(wd_group_exit(self, &g, 0), "ping-pong group");
  int64_t t1 = bench_now();
  wd_runtime_stats_get(wd_task_runtime(self), &s1);
  *switches = s1.switches - s0.switches;
  return t1 - t0;
}

static int parker(wd_task *self, void *arg) {
  return bench_event_wait(self, arg);
}

typedef struct results {
  int64_t plain, parked;
  uint64_t plain_switches;
} results;

/* One repetition: a plain ping-pong, then one with N_PARKED parked tasks. */
static int bench_main(wd_task *self, void *arg) {
  results *r = arg;
  r->plain = ping_pong(self, N_YIELDS, &r->plain_switches);

  /* The parked tasks live in an outer group; the ping-pong opens its own
   * group inside it, so exiting that one does not wait for them. */
  bench_event ev = {.name = "parked"};
  wd_group outer;
  uint64_t sw;
  bench_check(wd_group_enter(self, &outer, &(wd_group_opts){.name = "parked"}),
              "wd_group_enter");
  for (int i = 0; i < N_PARKED; i++)
    bench_check(wd_spawn(&outer, parker, &ev, NULL), "wd_spawn parker");
  while (ev.nwaiting < N_PARKED)
    bench_check(wd_yield(self), "wd_yield");
  r->parked = ping_pong(self, N_YIELDS, &sw);
  bench_event_set(&ev);
  return wd_group_exit(self, &outer, 0);
}

#ifdef WD_BENCH_FCONTEXT
/* Boost.Context's C entry points (extern "C" in libboost_context). */
typedef void *fcontext_t;
typedef struct {
  fcontext_t fctx;
  void *data;
} transfer_t;
transfer_t jump_fcontext(fcontext_t const to, void *vp);
fcontext_t make_fcontext(void *sp, size_t size, void (*fn)(transfer_t));

static void fc_bounce(transfer_t t) {
  for (;;)
    t = jump_fcontext(t.fctx, NULL);
}

/* ns for 2n switches: n round trips main -> other -> main. */
static int64_t fcontext_ping_pong(long n) {
  size_t size = 64 * 1024;
  char *stack = malloc(size);
  if (!stack) bench_check(WD_ENOMEM, "malloc");
  fcontext_t c = make_fcontext(stack + size, size, fc_bounce);
  transfer_t t = jump_fcontext(c, NULL); /* start it: not timed */
  int64_t t0 = bench_now();
  for (long i = 0; i < n; i++)
    t = jump_fcontext(t.fctx, NULL);
  int64_t t1 = bench_now();
  /* The other context stays suspended in fc_bounce forever; it owns
   * nothing but its stack. */
  free(stack);
  return t1 - t0;
}
#endif

int main(void) {
  bench_watchdog(120); /* each program takes well under 20 s */
  results best = {INT64_MAX, INT64_MAX, 0};
  int64_t fc = INT64_MAX;
  /* Every repetition is a fresh runtime, followed by the baseline, so the
   * variants interleave in time. */
  for (int rep = 0; rep < REPS; rep++) {
    results r;
    bench_check(wd_run(bench_main, &r), "wd_run");
    if (r.plain < best.plain) {
      best.plain = r.plain;
      best.plain_switches = r.plain_switches;
    }
    best.parked = bench_min(best.parked, r.parked);
#ifdef WD_BENCH_FCONTEXT
    fc = bench_min(fc, fcontext_ping_pong(N_YIELDS));
#endif
  }
  double sw = 2.0 * N_YIELDS;
  double plain = (double)best.plain / sw;
  printf("# %ld yields in each of 2 tasks = %.0f switches, best of %d\n",
         N_YIELDS, sw, REPS);
  printf("# runtime counted %" PRIu64 " switches in the best run "
         "(the extra ones are visits to the scheduler)\n",
         best.plain_switches);
  bench_print("core.switch", plain, 2, "ns");
  bench_print("core.switch.parked10k", (double)best.parked / sw, 2, "ns");
#ifdef WD_BENCH_FCONTEXT
  double fcns = (double)fc / sw;
  bench_print("core.switch.fcontext", fcns, 2, "ns");
  bench_print("core.switch.vs_fcontext", plain / fcns, 2, "ratio");
#else
  (void)fc;
  printf("# built without Boost.Context: no fcontext baseline\n");
#endif
  return 0;
}
