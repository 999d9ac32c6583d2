/* timers.c - many concurrent sleepers: warden's timers against raw libuv.
 *
 * core.timers: the root task opens a group, spawns N_SLEEPERS tasks that
 * each wd_sleep() a random 0-100 ms (a fixed seed, whole milliseconds), and
 * exits the group; the figure is the wall time from the first spawn until
 * wd_group_exit() returns.  The ideal is just over 100 ms; what is above it
 * is the cost of starting the tasks, arming and expiring their timers, and
 * ending them.  Each run does this twice in one runtime: the first round
 * ("cold") pays for the first touch of 100k fresh stack pages (page faults
 * cost several microseconds each on these VMs); the second ("warm") finds
 * the stacks in the runtime's cache, as a long-running server does.
 *
 * core.timers.libuv: the same durations as a plain libuv program: one
 * uv_timer_t per sleeper, started in a row, then uv_run() until the last
 * one fired; timed from the first uv_timer_start() until uv_run() returns,
 * also twice on one loop and one array of timers.
 * core.timers.vs_libuv is warden's warm time over libuv's warm time.
 *
 * The two variants alternate, REPS runs each, and each reports its best.
 */
#include <uv.h>

#include "bench.h"

#define N_SLEEPERS 100000
#define MAX_MS 100
#define REPS 3

static int durations_ms[N_SLEEPERS];

/* xorshift64*: deterministic whatever the libc, unlike rand(). */
static void make_durations(void) {
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < N_SLEEPERS; i++) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    durations_ms[i] = (int)((x * 0x2545F4914F6CDD1Dull >> 33) % (MAX_MS + 1));
  }
}

/* ---- warden ------------------------------------------------------------- */

static int sleeper(wd_task *self, void *arg) {
  return wd_sleep(self, (wd_time) * (const int *)arg * WD_MSEC);
}

typedef struct rounds {
  int64_t ns[2]; /* cold, warm */
} rounds;

static int warden_main(wd_task *self, void *arg) {
  rounds *r = arg;
  for (int round = 0; round < 2; round++) {
    wd_group g;
    int64_t t0 = bench_now();
    bench_check(wd_group_enter(self, &g, &(wd_group_opts){.name = "sleepers"}),
                "wd_group_enter");
    for (int i = 0; i < N_SLEEPERS; i++)
      bench_check(wd_spawn(&g, sleeper, &durations_ms[i], NULL), "wd_spawn");
    bench_check(wd_group_exit(self, &g, 0), "wd_group_exit");
    r->ns[round] = bench_now() - t0;
  }
  return 0;
}

static rounds run_warden(void) {
  rounds r;
  bench_check(wd_run(warden_main, &r), "wd_run");
  return r;
}

/* ---- raw libuv ---------------------------------------------------------- */

static int fired;

static void on_timer(uv_timer_t *t) { fired++; }

static rounds run_libuv(void) {
  uv_loop_t loop;
  rounds r;
  uv_timer_t *timers = malloc(N_SLEEPERS * sizeof *timers);
  if (!timers) bench_check(WD_ENOMEM, "malloc");
  bench_check(uv_loop_init(&loop), "uv_loop_init");
  for (int round = 0; round < 2; round++) {
    fired = 0;
    /* The loop's cached time is stale; bring it to now so the timeouts
     * count from the first start, as the warden tasks' do. */
    uv_update_time(&loop);
    int64_t t0 = bench_now();
    for (int i = 0; i < N_SLEEPERS; i++) {
      uv_timer_init(&loop, &timers[i]);
      bench_check(
          uv_timer_start(&timers[i], on_timer, (uint64_t)durations_ms[i], 0),
          "uv_timer_start");
    }
    /* A timer that fired without repeat is inactive: the loop ends by
     * itself after the last one. */
    uv_run(&loop, UV_RUN_DEFAULT);
    r.ns[round] = bench_now() - t0;
    if (fired != N_SLEEPERS) bench_check(WD_EINVAL, "libuv timers fired");
    for (int i = 0; i < N_SLEEPERS; i++)
      uv_close((uv_handle_t *)&timers[i], NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  bench_check(uv_loop_close(&loop), "uv_loop_close");
  free(timers);
  return r;
}

int main(void) {
  bench_watchdog(120); /* each program takes well under 20 s */
  make_durations();
  int64_t wd[2] = {INT64_MAX, INT64_MAX}, uv[2] = {INT64_MAX, INT64_MAX};
  for (int rep = 0; rep < REPS; rep++) {
    rounds w = run_warden(), u = run_libuv();
    for (int k = 0; k < 2; k++) {
      wd[k] = bench_min(wd[k], w.ns[k]);
      uv[k] = bench_min(uv[k], u.ns[k]);
    }
  }
  printf("# %d sleepers of 0-%d ms, best of %d\n", N_SLEEPERS, MAX_MS, REPS);
  bench_print("core.timers", wd[1] / 1e6, 1, "ms");
  bench_print("core.timers.libuv", uv[1] / 1e6, 1, "ms");
  bench_print("core.timers.vs_libuv", (double)wd[1] / uv[1], 2, "ratio");
  bench_print("core.timers.cold", wd[0] / 1e6, 1, "ms");
  bench_print("core.timers.cold.libuv", uv[0] / 1e6, 1, "ms");
  bench_print("core.timers.cold.vs_libuv", (double)wd[0] / uv[0], 2, "ratio");
  return 0;
}
