/* wd_ratelimit: exact GCRA timings on the virtual clock, FIFO fairness,
 * cancellation of waiters, tries, arguments and statistics.
 *
 * With rate r per period p and burst b, permit k (from 1) of a limiter
 * that is asked continuously from time 0 is granted at
 *     max(0, ceil((k - b) * p / r))
 * which the long runs below check for every single permit. */
#include <stdio.h>
#include <string.h>

#include "helpers.h"

/* ceil(num / den) for non-negative values, in 128 bits where it matters. */
static wd_time ceil_div(unsigned __int128 num, unsigned __int128 den) {
  return (wd_time)((num + den - 1) / den);
}

/* When permit k (from 1) is due. */
static wd_time due(uint64_t k, uint32_t rate, wd_time period, uint32_t burst) {
  if (k <= burst) return 0;
  return ceil_div((unsigned __int128)(k - burst) * (uint64_t)period, rate);
}

/* ---- one task acquiring continuously ---------------------------------- */

typedef struct run {
  uint32_t rate, burst, n; /* acquire n permits at a time */
  wd_time period;
  wd_time until; /* stop after this time (0: after `count` acquires) */
  uint64_t count;
  uint64_t granted;
  uint64_t bad; /* acquisitions not at their due time */
  uint64_t first_bad;
  wd_time bad_at, bad_due;
  wd_ratelimit_stats st;
} run;

static int run_main(wd_task *self, void *arg) {
  run *r = arg;
  wd_ratelimit rl;
  cr_assert_eq(
      wd_ratelimit_init(&rl, r->rate, r->period,
                        &(wd_ratelimit_opts){.name = "run", .burst = r->burst}),
      0);
  for (uint64_t i = 0;; i++) {
    if (!r->until && i == r->count) break;
    if (r->until) {
      /* Stop once the next acquisition would be granted past `until`. */
      if (due(r->granted + r->n, r->rate, r->period, r->burst) > r->until)
        break;
    }
    cr_assert_eq(wd_ratelimit_acquire(self, &rl, r->n), 0);
    r->granted += r->n;
    wd_time want = due(r->granted, r->rate, r->period, r->burst);
    if (wd_now(self) != want && r->bad++ == 0) {
      r->first_bad = r->granted;
      r->bad_at = wd_now(self);
      r->bad_due = want;
    }
  }
  wd_ratelimit_stats_get(&rl, &r->st);
  cr_assert_eq(wd_ratelimit_deinit(&rl), 0);
  return 0;
}

static void check_run(run *r) {
  cr_assert_eq(run_virtual(run_main, r), 0);
  cr_assert_eq(r->bad, 0,
               "%llu grants off schedule; first: permit %llu at %lld ns, due "
               "%lld ns",
               (unsigned long long)r->bad, (unsigned long long)r->first_bad,
               (long long)r->bad_at, (long long)r->bad_due);
  cr_assert_eq(r->st.granted, r->granted);
}

Test(ratelimit, ten_thousand_at_1000_per_second_take_ten_seconds_less_burst) {
  run r = {.rate = 1000, .period = WD_SEC, .burst = 1, .n = 1, .count = 10000};
  check_run(&r);
  /* The last permit is the 10000th: due at (10000 - 1) ms. */
  cr_assert_eq(due(10000, 1000, WD_SEC, 1), 9999 * WD_MSEC);
  run b = {.rate = 1000, .period = WD_SEC, .burst = 50, .n = 1, .count = 10000};
  check_run(&b);
  cr_assert_eq(due(10000, 1000, WD_SEC, 50), 10 * WD_SEC - 50 * WD_MSEC);
  cr_assert_eq(b.st.waited, 10000 - 50, "the burst did not wait");
  assert_no_leaks();
}

Test(ratelimit, an_hour_at_three_per_second_is_exact) {
  /* 1 s / 3 is not a whole number of ns: rounding it would drift. */
  run r = {
      .rate = 3, .period = WD_SEC, .burst = 2, .n = 1, .until = 3600 * WD_SEC};
  check_run(&r);
  cr_assert_eq(r.granted, 3 * 3600 + 2, "granted %llu",
               (unsigned long long)r.granted);
  assert_no_leaks();
}

Test(ratelimit, an_hour_at_7000_per_second_in_batches_is_exact) {
  /* 1 s / 7000 = 142857.142857... ns; 25.2M permits, 1000 at a time. */
  run r = {.rate = 7000,
           .period = WD_SEC,
           .burst = 1000,
           .n = 1000,
           .until = 3600 * WD_SEC};
  check_run(&r);
  cr_assert_eq(r.granted, (uint64_t)7000 * 3600 + 1000, "granted %llu",
               (unsigned long long)r.granted);
  assert_no_leaks();
}

Test(ratelimit, odd_rate_and_period) {
  /* 7 permits per 3 ms. */
  run r = {.rate = 7, .period = 3 * WD_MSEC, .burst = 3, .n = 1, .count = 7000};
  check_run(&r);
  assert_no_leaks();
}

/* ---- try --------------------------------------------------------------- */

static int burst_then_try(wd_task *self, void *arg) {
  wd_ratelimit rl;
  cr_assert_eq(
      wd_ratelimit_init(&rl, 10, WD_SEC, &(wd_ratelimit_opts){.burst = 5}), 0);
  for (int i = 0; i < 5; i++)
    cr_assert_eq(wd_ratelimit_acquire_try(self, &rl, 1), 0, "burst %d", i);
  cr_assert_eq(wd_ratelimit_acquire_try(self, &rl, 1), WD_EAGAIN);
  wd_ratelimit_stats st;
  wd_ratelimit_stats_get(&rl, &st);
  cr_assert_eq(st.available, 0);
  cr_assert_eq(st.next_permit, 100 * WD_MSEC);
  /* One interval later exactly one more, not before. */
  cr_assert_eq(wd_sleep(self, 100 * WD_MSEC - 1), 0);
  cr_assert_eq(wd_ratelimit_acquire_try(self, &rl, 1), WD_EAGAIN);
  cr_assert_eq(wd_sleep(self, 1), 0);
  cr_assert_eq(wd_ratelimit_acquire_try(self, &rl, 1), 0);
  cr_assert_eq(wd_ratelimit_acquire_try(self, &rl, 1), WD_EAGAIN);
  /* A long idle spell refills the burst, and no more. */
  cr_assert_eq(wd_sleep(self, 3600 * WD_SEC), 0);
  wd_ratelimit_stats_get(&rl, &st);
  cr_assert_eq(st.available, 5);
  cr_assert_eq(st.next_permit, 0);
  cr_assert_eq(wd_ratelimit_acquire_try(self, &rl, 5), 0);
  cr_assert_eq(wd_ratelimit_acquire_try(self, &rl, 1), WD_EAGAIN);
  wd_ratelimit_stats_get(&rl, &st);
  cr_assert_eq(st.granted, 11);
  cr_assert_eq(st.acquired, 7);
  cr_assert_eq(st.rejected, 4);
  cr_assert_eq(wd_ratelimit_deinit(&rl), 0);
  return 0;
}

Test(ratelimit, the_burst_is_available_at_once_then_one_per_interval) {
  cr_assert_eq(run_virtual(burst_then_try, NULL), 0);
  assert_no_leaks();
}

/* ---- waiters ----------------------------------------------------------- */

typedef struct waiter {
  wd_ratelimit *rl;
  uint32_t n;
  wd_time start; /* when it asks */
  int rc;
  wd_time at;
  int order; /* rank among those granted */
  wd_cancel_scope *scope;
  char msg[256];
} waiter;

static int granted_so_far;

static int waiter_main(wd_task *self, void *arg) {
  waiter *w = arg;
  wd_cancel_scope s;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  w->scope = &s;
  if (w->start) cr_assert_eq(wd_sleep(self, w->start), 0);
  w->rc = wd_ratelimit_acquire(self, w->rl, w->n);
  w->at = wd_now(self);
  if (w->rc == 0) w->order = granted_so_far++;
  const wd_error *e = wd_task_error(self);
  if (w->rc && e) snprintf(w->msg, sizeof w->msg, "%s", e->msg);
  w->scope = NULL;
  cr_assert_eq(wd_cancel_scope_exit(self, &s, w->rc), 0);
  return 0;
}

/* A limiter of 1 permit per second with burst `burst`, drained at time
 * 0; then the waiters start; `script` runs in the root meanwhile. */
typedef struct stage {
  uint32_t burst;
  waiter w[8];
  int nw;
  int (*script)(wd_task *self, struct stage *st);
  wd_ratelimit rl;
  wd_ratelimit_stats stats;
} stage;

static int stage_main(wd_task *self, void *arg) {
  stage *st = arg;
  granted_so_far = 0;
  cr_assert_eq(wd_ratelimit_init(
                   &st->rl, 1, WD_SEC,
                   &(wd_ratelimit_opts){.name = "api", .burst = st->burst}),
               0);
  cr_assert_eq(wd_ratelimit_acquire(self, &st->rl, st->burst), 0);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < st->nw; i++) {
    st->w[i].rl = &st->rl;
    cr_assert_eq(wd_spawn(&g, waiter_main, &st->w[i], NULL), 0);
  }
  cr_assert_eq(wd_yield(self), 0);
  int rc = st->script ? st->script(self, st) : 0;
  cr_assert_eq(wd_group_exit(self, &g, rc), 0);
  wd_ratelimit_stats_get(&st->rl, &st->stats);
  cr_assert_eq(wd_ratelimit_deinit(&st->rl), 0);
  return 0;
}

static void stage_play(stage *st) {
  cr_assert_eq(run_virtual(stage_main, st), 0);
}

Test(ratelimit, a_big_acquire_at_the_head_is_not_overtaken) {
  /* Burst 5: A asks for 5 at 0 (due at 5 s); B asks for 1 at 0.5 s.  By
   * GCRA alone B's permit exists at 1 s, but B queues behind A. */
  stage st = {
      .burst = 5, .nw = 2, .w = {{.n = 5}, {.n = 1, .start = WD_SEC / 2}}};
  stage_play(&st);
  cr_assert_eq(st.w[0].rc, 0);
  cr_assert_eq(st.w[0].at, 5 * WD_SEC);
  cr_assert_eq(st.w[1].rc, 0);
  cr_assert_eq(st.w[1].at, 6 * WD_SEC);
  cr_assert_eq(st.w[0].order, 0);
  cr_assert_eq(st.w[1].order, 1);
  cr_assert_eq(st.stats.waiting_peak, 2);
  cr_assert_eq(st.stats.waited, 2);
  cr_assert_eq(st.stats.wait_total, 5 * WD_SEC + 11 * WD_SEC / 2);
  cr_assert_eq(st.stats.wait_max, 11 * WD_SEC / 2);
  assert_no_leaks();
}

static int try_while_waiting(wd_task *self, stage *st) {
  /* At 1 s a permit exists, but A (asking for 5) waits: a try must not
   * take it. */
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  cr_assert_eq(wd_ratelimit_acquire_try(self, &st->rl, 1), WD_EAGAIN);
  wd_ratelimit_stats s;
  wd_ratelimit_stats_get(&st->rl, &s);
  cr_assert_eq(s.waiting, 1);
  cr_assert_eq(s.available, 0,
               "nothing is available to a try while a "
               "task waits");
  return 0;
}

Test(ratelimit, a_try_does_not_take_permits_while_tasks_wait) {
  stage st = {
      .burst = 5, .nw = 1, .w = {{.n = 5}}, .script = try_while_waiting};
  stage_play(&st);
  cr_assert_eq(st.w[0].at, 5 * WD_SEC);
  assert_no_leaks();
}

static int cancel_head_at_half(wd_task *self, stage *st) {
  cr_assert_eq(wd_sleep(self, WD_SEC / 2), 0);
  wd_cancel(st->w[0].scope);
  return 0;
}

Test(ratelimit, a_cancelled_head_takes_nothing_and_hands_over) {
  /* A (due 1 s) and B (due 2 s) wait; A is cancelled at 0.5 s: B gets
   * A's slot at 1 s. */
  stage st = {.burst = 1,
              .nw = 2,
              .w = {{.n = 1}, {.n = 1}},
              .script = cancel_head_at_half};
  stage_play(&st);
  cr_assert_eq(st.w[0].rc, WD_ECANCELED);
  cr_assert_eq(st.w[0].at, WD_SEC / 2);
  cr_assert_str_eq(st.w[0].msg,
                   "ratelimit 'api': 1 permit not acquired after 0.500 s "
                   "(1 other waiting)");
  cr_assert_eq(st.w[1].rc, 0);
  cr_assert_eq(st.w[1].at, WD_SEC);
  cr_assert_eq(st.stats.granted, 2, "the drain and B");
  cr_assert_eq(st.stats.cancelled, 1);
  assert_no_leaks();
}

static int cancel_middle_at_half(wd_task *self, stage *st) {
  cr_assert_eq(wd_sleep(self, WD_SEC / 2), 0);
  wd_cancel(st->w[1].scope);
  return 0;
}

Test(ratelimit, a_cancelled_waiter_behind_the_head_leaves_the_queue) {
  stage st = {.burst = 1,
              .nw = 3,
              .w = {{.n = 1}, {.n = 1}, {.n = 1}},
              .script = cancel_middle_at_half};
  stage_play(&st);
  cr_assert_eq(st.w[0].at, WD_SEC);
  cr_assert_eq(st.w[1].rc, WD_ECANCELED);
  cr_assert_eq(st.w[1].at, WD_SEC / 2);
  cr_assert_eq(st.w[2].rc, 0);
  cr_assert_eq(st.w[2].at, 2 * WD_SEC);
  cr_assert_eq(st.w[2].order, 1);
  assert_no_leaks();
}

static int cancel_big_head(wd_task *self, stage *st) {
  cr_assert_eq(wd_sleep(self, WD_SEC / 2), 0);
  wd_cancel(st->w[0].scope);
  return 0;
}

Test(ratelimit, small_waiters_move_up_when_a_big_head_is_cancelled) {
  /* Burst 4: A wants 4 (due 4 s), B wants 1 (due 5 s behind A).  With A
   * gone at 0.5 s, B's permit is due at 1 s. */
  stage st = {.burst = 4,
              .nw = 2,
              .w = {{.n = 4}, {.n = 1}},
              .script = cancel_big_head};
  stage_play(&st);
  cr_assert_eq(st.w[0].rc, WD_ECANCELED);
  cr_assert_eq(st.w[1].rc, 0);
  cr_assert_eq(st.w[1].at, WD_SEC);
  assert_no_leaks();
}

static int timed_acquire(wd_task *self, void *arg) {
  wd_ratelimit rl;
  cr_assert_eq(
      wd_ratelimit_init(&rl, 1, WD_SEC, &(wd_ratelimit_opts){.name = "slow"}),
      0);
  cr_assert_eq(wd_ratelimit_acquire(self, &rl, 1), 0);
  wd_cancel_scope s;
  cr_assert_eq(wd_fail_after(self, &s, WD_SEC / 4, "get a permit"), 0);
  int rc = wd_ratelimit_acquire(self, &rl, 1);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  cr_assert_str_eq(wd_task_error(self)->msg,
                   "ratelimit 'slow': 1 permit not acquired after 0.250 s "
                   "(0 others waiting)");
  rc = wd_cancel_scope_exit(self, &s, rc);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  cr_assert_eq(wd_now(self), WD_SEC / 4);
  /* Nothing was taken: the permit is still due at 1 s. */
  cr_assert_eq(wd_ratelimit_acquire(self, &rl, 1), 0);
  cr_assert_eq(wd_now(self), WD_SEC);
  /* A deadline at the very grant time: the scope was armed first. */
  cr_assert_eq(wd_move_on_after(self, &s, WD_SEC), 0);
  cr_assert_eq(wd_ratelimit_acquire(self, &rl, 1), WD_ETIMEDOUT);
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ETIMEDOUT), 0);
  cr_assert_eq(wd_now(self), 2 * WD_SEC);
  cr_assert_eq(wd_ratelimit_acquire_try(self, &rl, 1), 0,
               "the timed-out waiter took nothing");
  cr_assert_eq(wd_ratelimit_deinit(&rl), 0);
  return 0;
}

Test(ratelimit, a_waiter_past_its_deadline_takes_nothing) {
  cr_assert_eq(run_virtual(timed_acquire, NULL), 0);
  assert_no_leaks();
}

/* A waiter behind the head that is cancelled still reads and writes the
 * limiter when it runs (its statistics, its message): until it has
 * returned, deinit must refuse, or the caller could free the limiter under
 * it.  The head is cancelled first and a third task, woken next, tries to
 * deinit: it runs after the head has left but before the other waiter. */
typedef struct gone {
  wd_ratelimit rl;
  wd_event go;
  int rc[2], deinit_rc;
  wd_handle h[2];
} gone;

static int gone_waiter(wd_task *self, void *arg) {
  gone *g = arg;
  int i = wd_task_name(self)[0] - 'a';
  g->rc[i] = wd_ratelimit_acquire(self, &g->rl, 1);
  return 0;
}

static int gone_deiniter(wd_task *self, void *arg) {
  gone *g = arg;
  cr_assert_eq(wd_event_wait(self, &g->go), 0);
  g->deinit_rc = wd_ratelimit_deinit(&g->rl);
  return 0;
}

static int deinit_gone_main(wd_task *self, void *arg) {
  gone *c = arg;
  cr_assert_eq(
      wd_ratelimit_init(&c->rl, 1, WD_SEC, &(wd_ratelimit_opts){.name = "api"}),
      0);
  cr_assert_eq(wd_ratelimit_acquire(self, &c->rl, 1), 0);
  cr_assert_eq(wd_event_init(&c->go, "go"), 0);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, gone_deiniter, c, NULL), 0);
  cr_assert_eq(wd_spawn(&g, gone_waiter, c,
                        &(wd_spawn_opts){.name = "a", .handle = &c->h[0]}),
               0);
  cr_assert_eq(wd_spawn(&g, gone_waiter, c,
                        &(wd_spawn_opts){.name = "b", .handle = &c->h[1]}),
               0);
  cr_assert_eq(wd_yield(self), 0);
  wd_ratelimit_stats st;
  wd_ratelimit_stats_get(&c->rl, &st);
  cr_assert_eq(st.waiting, 2);
  wd_handle_cancel(&c->h[0]);
  cr_assert_eq(wd_event_set(&c->go), 0);
  wd_handle_cancel(&c->h[1]);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_event_deinit(&c->go), 0);
  wd_ratelimit_stats_get(&c->rl, &st);
  cr_assert_eq(st.cancelled, 2);
  cr_assert_eq(st.waiting, 0);
  return wd_ratelimit_deinit(&c->rl);
}

Test(ratelimit, deinit_waits_until_a_cancelled_waiter_has_returned) {
  gone c = {.rc = {1, 1}, .deinit_rc = 1};
  cr_assert_eq(run_virtual(deinit_gone_main, &c), 0);
  cr_assert_eq(c.rc[0], WD_ECANCELED);
  cr_assert_eq(c.rc[1], WD_ECANCELED);
  cr_assert_eq(c.deinit_rc, WD_EBUSY, "b had not returned yet");
  assert_no_leaks();
}

/* ---- 1000 contending tasks -------------------------------------------- */

#define CROWD 1000

typedef struct crowd {
  wd_ratelimit rl;
  int order[CROWD];
  wd_time at[CROWD];
  int next;
} crowd;

typedef struct member {
  crowd *c;
  int id;
} member;

static int member_main(wd_task *self, void *arg) {
  member *m = arg;
  cr_assert_eq(wd_ratelimit_acquire(self, &m->c->rl, 1), 0);
  m->c->at[m->id] = wd_now(self);
  m->c->order[m->c->next++] = m->id;
  return 0;
}

static int crowd_main(wd_task *self, void *arg) {
  crowd *c = arg;
  static member m[CROWD];
  cr_assert_eq(wd_ratelimit_init(&c->rl, 1000, WD_SEC,
                                 &(wd_ratelimit_opts){.burst = 10}),
               0);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < CROWD; i++) {
    m[i] = (member){c, i};
    cr_assert_eq(wd_spawn(&g, member_main, &m[i], NULL), 0);
  }
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_ratelimit_deinit(&c->rl), 0);
  return 0;
}

Test(ratelimit, a_thousand_contending_tasks_are_served_in_arrival_order) {
  static crowd c;
  cr_assert_eq(run_virtual(crowd_main, &c), 0);
  for (int i = 0; i < CROWD; i++) {
    cr_assert_eq(c.order[i], i, "grant %d went to task %d", i, c.order[i]);
    cr_assert_eq(c.at[i], due((uint64_t)i + 1, 1000, WD_SEC, 10));
  }
  assert_no_leaks();
}

/* ---- arguments, deinit, call ------------------------------------------- */

static int args_main(wd_task *self, void *arg) {
  wd_ratelimit rl;
  cr_assert_eq(wd_ratelimit_init(NULL, 1, WD_SEC, NULL), WD_EINVAL);
  cr_assert_eq(wd_ratelimit_init(&rl, 0, WD_SEC, NULL), WD_EINVAL);
  cr_assert_str_eq(wd_task_error(self)->msg,
                   "ratelimit 'ratelimit': rate 0 per 1000000000 ns: both "
                   "must be positive");
  cr_assert_eq(wd_ratelimit_init(&rl, 1, 0, NULL), WD_EINVAL);
  cr_assert_eq(wd_ratelimit_init(&rl, 1, -WD_SEC, NULL), WD_EINVAL);
  /* A burst window beyond 2^60 ns. */
  cr_assert_eq(wd_ratelimit_init(&rl, 1, (wd_time)1 << 40,
                                 &(wd_ratelimit_opts){.burst = 1 << 20}),
               WD_EINVAL);
  cr_assert_eq(wd_ratelimit_acquire(self, &rl, 1), WD_EINVAL,
               "a failed init leaves the limiter unusable");
  cr_assert_str_eq(wd_task_error(self)->msg,
                   "ratelimit acquire: limiter not initialised");
  /* The extremes are fine. */
  cr_assert_eq(wd_ratelimit_init(&rl, UINT32_MAX, 1,
                                 &(wd_ratelimit_opts){.burst = UINT32_MAX}),
               0);
  cr_assert_eq(wd_ratelimit_acquire(self, &rl, UINT32_MAX), 0);
  cr_assert_eq(wd_ratelimit_acquire(self, &rl, UINT32_MAX), 0);
  cr_assert_eq(wd_now(self), 1);
  cr_assert_eq(wd_ratelimit_deinit(&rl), 0);

  cr_assert_eq(
      wd_ratelimit_init(&rl, 10, WD_SEC,
                        &(wd_ratelimit_opts){.name = "db", .burst = 4}),
      0);
  cr_assert_eq(wd_ratelimit_acquire(self, &rl, 5), WD_EINVAL);
  cr_assert_str_eq(wd_task_error(self)->msg,
                   "ratelimit 'db': acquire of 5 permits exceeds the burst "
                   "of 4 (it could never be granted)");
  cr_assert_eq(wd_ratelimit_acquire_try(self, &rl, 5), WD_EINVAL);
  cr_assert_eq(wd_ratelimit_acquire(self, &rl, 0), WD_EINVAL);
  cr_assert_str_eq(wd_task_error(self)->msg,
                   "ratelimit 'db': acquire of 0 permits");
  cr_assert_eq(wd_ratelimit_acquire(NULL, &rl, 1), WD_EINVAL);
  cr_assert_eq(wd_ratelimit_acquire(self, NULL, 1), WD_EINVAL);
  cr_assert_eq(wd_ratelimit_call(self, &rl, NULL, NULL), WD_EINVAL);
  wd_ratelimit_stats st;
  wd_ratelimit_stats_get(&rl, &st);
  cr_assert_eq(st.granted, 0, "bad calls take nothing");
  cr_assert_eq(wd_ratelimit_deinit(&rl), 0);
  cr_assert_eq(wd_ratelimit_deinit(NULL), 0);
  return 0;
}

Test(ratelimit, bad_arguments_are_einval_with_a_message) {
  cr_assert_eq(run_virtual(args_main, NULL), 0);
  assert_no_leaks();
}

static int one_waiter(wd_task *self, void *arg) {
  return wd_ratelimit_acquire(self, arg, 1);
}

static int deinit_busy(wd_task *self, void *arg) {
  wd_ratelimit rl;
  cr_assert_eq(wd_ratelimit_init(&rl, 1, WD_SEC, NULL), 0);
  cr_assert_eq(wd_ratelimit_acquire(self, &rl, 1), 0);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, one_waiter, &rl, NULL), 0);
  cr_assert_eq(wd_yield(self), 0);
  cr_assert_eq(wd_ratelimit_deinit(&rl), WD_EBUSY);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_now(self), WD_SEC);
  cr_assert_eq(wd_ratelimit_deinit(&rl), 0);
  return 0;
}

Test(ratelimit, deinit_with_waiters_is_ebusy) {
  cr_assert_eq(run_virtual(deinit_busy, NULL), 0);
  assert_no_leaks();
}

static int count_call(wd_task *self, void *arg) {
  ++*(int *)arg;
  return 5;
}

static int call_main(wd_task *self, void *arg) {
  wd_ratelimit rl;
  int calls = 0;
  cr_assert_eq(wd_ratelimit_init(&rl, 2, WD_SEC, NULL), 0);
  for (int i = 0; i < 4; i++)
    cr_assert_eq(wd_ratelimit_call(self, &rl, count_call, &calls), 5);
  cr_assert_eq(calls, 4);
  cr_assert_eq(wd_now(self), 3 * WD_SEC / 2);
  /* A cancelled caller: no permit, no call. */
  wd_cancel_scope s;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  wd_cancel(&s);
  cr_assert_eq(wd_ratelimit_call(self, &rl, count_call, &calls), WD_ECANCELED);
  const wd_error *e = wd_task_error(self);
  cr_assert(e && e->code == WD_ECANCELED, "the cancellation is recorded");
  cr_assert_str_eq(e->msg, "ratelimit 'ratelimit': 1 permit not acquired "
                           "after 0.000 s (0 others waiting)");
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ECANCELED), 0);
  cr_assert_eq(calls, 4);
  wd_ratelimit_stats st;
  wd_ratelimit_stats_get(&rl, &st);
  cr_assert_eq(st.granted, 4);
  cr_assert_eq(wd_ratelimit_deinit(&rl), 0);
  return 0;
}

Test(ratelimit, call_takes_a_permit_then_calls) {
  cr_assert_eq(run_virtual(call_main, NULL), 0);
  assert_no_leaks();
}

/* The waiter shows in the task dump under the limiter's name. */
static int dump_main(wd_task *self, void *arg) {
  wd_ratelimit rl;
  cr_assert_eq(
      wd_ratelimit_init(&rl, 1, WD_SEC, &(wd_ratelimit_opts){.name = "api"}),
      0);
  cr_assert_eq(wd_ratelimit_acquire(self, &rl, 1), 0);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, one_waiter, &rl, NULL), 0);
  cr_assert_eq(wd_spawn(&g, one_waiter, &rl, NULL), 0);
  cr_assert_eq(wd_yield(self), 0);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  wd_dump(f);
  fclose(f);
  int n = 0;
  for (const char *p = buf; (p = strstr(p, "on ratelimit 'api'")); p++)
    n++;
  cr_assert_eq(n, 2, "dump:\n%s", buf);
  free(buf);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_ratelimit_deinit(&rl), 0);
  return 0;
}

Test(ratelimit, waiters_show_in_the_dump) {
  cr_assert_eq(run_virtual(dump_main, NULL), 0);
  assert_no_leaks();
}

/* ---- allocation failures ----------------------------------------------- */

typedef struct faulty {
  wd_ratelimit rl;
  int rc[3];
  bool spawned[3];
  uint64_t granted;
} faulty;

typedef struct faulty_arg {
  faulty *f;
  int i;
} faulty_arg;

static int faulty_acquire(wd_task *self, void *arg) {
  faulty_arg *a = arg;
  a->f->rc[a->i] = wd_ratelimit_acquire(self, &a->f->rl, 1);
  return 0;
}

static int faulty_main(wd_task *self, void *arg) {
  faulty *f = arg;
  int rc = wd_ratelimit_init(&f->rl, 1, WD_SEC, NULL);
  if (rc) return rc;
  rc = wd_ratelimit_acquire(self, &f->rl, 1);
  if (rc) return rc;
  wd_group g;
  rc = wd_group_enter(self, &g, NULL);
  if (rc) return rc;
  faulty_arg a[3];
  for (int i = 0; i < 3; i++) {
    a[i] = (faulty_arg){f, i};
    f->spawned[i] = wd_spawn(&g, faulty_acquire, &a[i], NULL) == 0;
  }
  rc = wd_group_exit(self, &g, 0);
  wd_ratelimit_stats st;
  wd_ratelimit_stats_get(&f->rl, &st);
  f->granted = st.granted;
  cr_assert_eq(wd_ratelimit_deinit(&f->rl), 0);
  return rc;
}

Test(ratelimit, every_allocation_failure_leaves_a_clean_state) {
  for (long n = 1;; n++) {
    faulty f = {.rc = {1, 1, 1}};
    wd_alloc_fail_after(n);
    int rc = run_virtual(faulty_main, &f);
    bool fired = wd_alloc_failed();
    wd_alloc_fail_after(0);
    cr_assert(rc == 0 || rc == WD_ENOMEM, "n=%ld: %s", n, wd_err_name(rc));
    /* Every waiter that ran either got its permit or took nothing. */
    uint64_t got = 0;
    for (int i = 0; i < 3; i++) {
      if (!f.spawned[i]) continue;
      cr_assert(f.rc[i] == 0 || f.rc[i] == WD_ENOMEM || f.rc[i] == 1,
                "n=%ld: waiter %d: %s", n, i, wd_err_name(f.rc[i]));
      got += f.rc[i] == 0;
    }
    if (rc == 0) cr_assert_eq(f.granted, got + 1, "n=%ld", n);
    assert_no_leaks();
    if (!fired) {
      cr_assert_eq(rc, 0);
      cr_assert_eq(got, 3);
      break;
    }
    cr_assert_lt(n, 1000, "the fault loop does not end");
  }
}
