/* wd_breaker: state transitions at their exact thresholds, count and time
 * windows, minimum calls, half-open probes, ignored and late outcomes, the
 * rejection message, hooks, statistics and arguments.
 *
 * Most tests drive one breaker from the root task with calls whose result
 * they choose (`pass`, `fail`), moving the virtual clock with wd_sleep. */
#include <string.h>

#include "helpers.h"

static int ret_rc(wd_task *self, void *arg) { return (int)(intptr_t)arg; }

/* One call through b that returns rc; returns what the breaker returned. */
static int call(wd_task *self, wd_breaker *b, int rc) {
  return wd_breaker_call(self, b, ret_rc, (void *)(intptr_t)rc);
}

static void pass(wd_task *self, wd_breaker *b) {
  cr_assert_eq(call(self, b, 0), 0);
}

static void fail(wd_task *self, wd_breaker *b) {
  cr_assert_eq(call(self, b, -EIO), -EIO);
}

static wd_breaker_state state(wd_breaker *b) {
  wd_breaker_stats st;
  wd_breaker_stats_get(b, &st);
  return st.state;
}

static const char *last_msg(wd_task *self) {
  const wd_error *e = wd_task_error(self);
  return e ? e->msg : "";
}

/* ---- count window ------------------------------------------------------ */

static int count_threshold(wd_task *self, void *arg) {
  wd_breaker b;
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.name = "db",
                                                      .window_size = 10,
                                                      .min_calls = 10,
                                                      .failure_ratio = 0.5}),
               0);
  /* 9 outcomes, 5 of them failures: below min_calls, still closed. */
  for (int i = 0; i < 4; i++)
    pass(self, &b);
  for (int i = 0; i < 5; i++)
    fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED);
  /* The 10th, a success: 5/10 but the breaker opens only on a failure. */
  pass(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED);
  /* The 11th, a failure, pushes out the oldest (a success): 6/10. */
  fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_OPEN);
  wd_breaker_stats st;
  wd_breaker_stats_get(&b, &st);
  cr_assert_eq(st.window_calls, 10);
  cr_assert_eq(st.window_failures, 6);
  cr_assert_eq(st.opened, 1);
  cr_assert_eq(st.next_probe, 30 * WD_SEC);
  wd_breaker_deinit(&b);
  return 0;
}

Test(breaker, a_count_window_opens_at_the_ratio_once_min_calls_are_in) {
  cr_assert_eq(run_virtual(count_threshold, NULL), 0);
  assert_no_leaks();
}

static int exact_ratio(wd_task *self, void *arg) {
  /* 0.3 of 10 is exactly 3 failures: the third opens it (>=). */
  wd_breaker b;
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.window_size = 10,
                                                      .failure_ratio = 0.3}),
               0);
  for (int i = 0; i < 7; i++)
    pass(self, &b);
  fail(self, &b);
  fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED, "2/9, and 9 < min_calls");
  fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_OPEN, "3/10");
  wd_breaker_deinit(&b);
  return 0;
}

Test(breaker, the_ratio_is_inclusive) {
  cr_assert_eq(run_virtual(exact_ratio, NULL), 0);
  assert_no_leaks();
}

static int old_failures_slide_out(wd_task *self, void *arg) {
  wd_breaker b;
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.window_size = 4,
                                                      .min_calls = 4,
                                                      .failure_ratio = 0.75}),
               0);
  /* The window after each outcome, oldest first. */
  fail(self, &b);
  fail(self, &b);
  pass(self, &b);
  pass(self, &b); /* f f p p */
  pass(self, &b); /* f p p p: the first failure slid out */
  fail(self, &b); /* p p p f */
  fail(self, &b); /* p p f f */
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED);
  fail(self, &b); /* p f f f: 3/4 */
  cr_assert_eq(state(&b), WD_BREAKER_OPEN);
  wd_breaker_deinit(&b);
  return 0;
}

Test(breaker, a_count_window_slides) {
  cr_assert_eq(run_virtual(old_failures_slide_out, NULL), 0);
  assert_no_leaks();
}

static int min_calls_main(wd_task *self, void *arg) {
  wd_breaker b;
  cr_assert_eq(wd_breaker_init(
                   &b, &(wd_breaker_opts){.window_size = 100, .min_calls = 20}),
               0);
  for (int i = 0; i < 19; i++)
    fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED, "19 failures < min_calls");
  fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_OPEN);
  wd_breaker_deinit(&b);
  /* The default min_calls is 10, or the window if smaller. */
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.window_size = 3}), 0);
  fail(self, &b);
  fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED);
  fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_OPEN);
  wd_breaker_deinit(&b);
  return 0;
}

Test(breaker, min_calls_holds_it_closed) {
  cr_assert_eq(run_virtual(min_calls_main, NULL), 0);
  assert_no_leaks();
}

/* ---- open, half-open, probes ------------------------------------------- */

static int open_cycle(wd_task *self, void *arg) {
  wd_breaker b;
  cr_assert_eq(
      wd_breaker_init(&b, &(wd_breaker_opts){.name = "pg",
                                             .window_size = 2,
                                             .open_duration = 10 * WD_SEC}),
      0);
  fail(self, &b);
  fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_OPEN);
  /* Rejected without calling, with the time until the next probe. */
  cr_assert_eq(call(self, &b, 0), WD_ECIRCUITOPEN);
  cr_assert_str_eq(last_msg(self),
                   "circuit breaker 'pg' is open: next probe in 10.000 s "
                   "(opened after 2 of the last 2 calls failed)");
  cr_assert_eq(wd_sleep(self, 7500 * WD_MSEC), 0);
  cr_assert_eq(call(self, &b, 0), WD_ECIRCUITOPEN);
  cr_assert_str_eq(last_msg(self),
                   "circuit breaker 'pg' is open: next probe in 2.500 s "
                   "(opened after 2 of the last 2 calls failed)");
  /* 1 ns before the end: still open. */
  cr_assert_eq(wd_sleep(self, 2500 * WD_MSEC - 1), 0);
  cr_assert_eq(call(self, &b, 0), WD_ECIRCUITOPEN);
  cr_assert_str_eq(last_msg(self),
                   "circuit breaker 'pg' is open: next probe in 0.000 s "
                   "(opened after 2 of the last 2 calls failed)");
  cr_assert_eq(wd_sleep(self, 1), 0);
  cr_assert_eq(state(&b), WD_BREAKER_HALF_OPEN);
  /* The probe fails: open again for a fresh 10 s. */
  fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_OPEN);
  wd_breaker_stats st;
  wd_breaker_stats_get(&b, &st);
  cr_assert_eq(st.next_probe, 10 * WD_SEC);
  cr_assert_eq(st.opened, 2);
  cr_assert_eq(wd_sleep(self, 10 * WD_SEC), 0);
  /* The probe succeeds: closed, with an empty window. */
  pass(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED);
  wd_breaker_stats_get(&b, &st);
  cr_assert_eq(st.window_calls, 0);
  cr_assert_eq(st.rejected, 3);
  cr_assert_eq(st.calls, 4);
  cr_assert_eq(st.failures, 3);
  cr_assert_eq(st.successes, 1);
  fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED, "1 outcome in a fresh window");
  wd_breaker_deinit(&b);
  return 0;
}

Test(breaker, open_then_half_open_then_a_probe_decides) {
  cr_assert_eq(run_virtual(open_cycle, NULL), 0);
  assert_no_leaks();
}

/* A probe that takes time, so that others arrive while it is in flight. */
typedef struct prober {
  wd_breaker *b;
  wd_time work;
  int result;
  int rc;
} prober;

static int slow_body(wd_task *self, void *arg) {
  prober *p = arg;
  int rc = wd_sleep(self, p->work);
  return rc ? rc : p->result;
}

static int probe_task(wd_task *self, void *arg) {
  prober *p = arg;
  p->rc = wd_breaker_call(self, p->b, slow_body, p);
  return 0;
}

static int probes_main(wd_task *self, void *arg) {
  wd_breaker b;
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.name = "svc",
                                                      .window_size = 1,
                                                      .open_duration = WD_SEC,
                                                      .half_open_probes = 3}),
               0);
  fail(self, &b);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  /* Three probes go through, the fourth call is rejected while they run. */
  prober p[3] = {
      {&b, WD_SEC, 0, 1}, {&b, 2 * WD_SEC, 0, 1}, {&b, 3 * WD_SEC, 0, 1}};
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(wd_spawn(&g, probe_task, &p[i], NULL), 0);
  cr_assert_eq(wd_yield(self), 0);
  cr_assert_eq(call(self, &b, 0), WD_ECIRCUITOPEN);
  cr_assert_str_eq(last_msg(self),
                   "circuit breaker 'svc' is half-open: 3 probes in flight; "
                   "the next probe waits for their outcomes");
  /* At 2.5 s one probe has succeeded: its slot stays used. */
  cr_assert_eq(wd_sleep(self, 3 * WD_SEC / 2), 0);
  cr_assert_eq(call(self, &b, 0), WD_ECIRCUITOPEN);
  cr_assert_eq(state(&b), WD_BREAKER_HALF_OPEN);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(p[i].rc, 0);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED, "all three succeeded");

  /* Again, but the second probe fails: open at once, and the third one's
   * later success changes nothing. */
  fail(self, &b);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  prober q[3] = {
      {&b, WD_SEC, 0, 1}, {&b, 2 * WD_SEC, -EIO, 1}, {&b, 3 * WD_SEC, 0, 1}};
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(wd_spawn(&g, probe_task, &q[i], NULL), 0);
  cr_assert_eq(wd_sleep(self, 2 * WD_SEC + WD_SEC / 2), 0);
  cr_assert_eq(state(&b), WD_BREAKER_OPEN);
  wd_breaker_stats st;
  wd_breaker_stats_get(&b, &st);
  cr_assert_eq(st.next_probe, WD_SEC / 2);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(q[2].rc, 0);
  wd_breaker_stats_get(&b, &st);
  cr_assert_eq(st.state, WD_BREAKER_HALF_OPEN,
               "the late success did not close it; open_duration passed");
  cr_assert_eq(st.opened, 3);
  wd_breaker_deinit(&b);
  return 0;
}

Test(breaker, half_open_lets_n_probes_through_and_needs_all_to_succeed) {
  cr_assert_eq(run_virtual(probes_main, NULL), 0);
  assert_no_leaks();
}

/* ---- time window ------------------------------------------------------- */

static int time_window(wd_task *self, void *arg) {
  wd_breaker b;
  cr_assert_eq(
      wd_breaker_init(&b, &(wd_breaker_opts){.window_time = 10 * WD_SEC,
                                             .buckets = 10,
                                             .min_calls = 6}),
      0);
  /* Five failures in the bucket [0, 1 s). */
  for (int i = 0; i < 5; i++)
    fail(self, &b);
  /* At 10 s - 1 ns they still count: a sixth opens it. */
  cr_assert_eq(wd_sleep(self, 10 * WD_SEC - 1), 0);
  wd_breaker_stats st;
  wd_breaker_stats_get(&b, &st);
  cr_assert_eq(st.window_calls, 5);
  fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_OPEN);
  wd_breaker_deinit(&b);

  cr_assert_eq(
      wd_breaker_init(&b, &(wd_breaker_opts){.window_time = 10 * WD_SEC,
                                             .buckets = 10,
                                             .min_calls = 6}),
      0);
  /* Five failures at 10 s - 1 ns, in the bucket [9 s, 10 s).  That bucket
   * is in the window until 19 s - 1 ns, when the window is the buckets
   * from [9 s, 10 s) to [18 s, 19 s), and leaves it at 19 s. */
  cr_assert_eq(wd_now(self), 10 * WD_SEC - 1);
  for (int i = 0; i < 5; i++)
    fail(self, &b);
  cr_assert_eq(wd_sleep(self, 9 * WD_SEC), 0);
  wd_breaker_stats_get(&b, &st);
  cr_assert_eq(st.window_calls, 5);
  cr_assert_eq(wd_sleep(self, 1), 0);
  wd_breaker_stats_get(&b, &st);
  cr_assert_eq(st.window_calls, 0);
  fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED);
  wd_breaker_stats_get(&b, &st);
  cr_assert_eq(st.window_calls, 1);
  /* Failures spread over the window add up: 5 more over 5 s. */
  for (int i = 0; i < 4; i++) {
    cr_assert_eq(wd_sleep(self, WD_SEC), 0);
    fail(self, &b);
    cr_assert_eq(state(&b), WD_BREAKER_CLOSED);
  }
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  pass(self, &b); /* 6 calls, 5 failures, but it was a success */
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED);
  fail(self, &b); /* 7 calls, 6 failures */
  cr_assert_eq(state(&b), WD_BREAKER_OPEN);
  wd_breaker_deinit(&b);
  return 0;
}

Test(breaker, a_time_window_forgets_outcomes_exactly_at_its_bucket_edge) {
  cr_assert_eq(run_virtual(time_window, NULL), 0);
  assert_no_leaks();
}

/* ---- what counts --------------------------------------------------------- */

static bool eio_only(int rc, const wd_error *err, void *arg) {
  return rc == -EIO;
}

static int cancelled_call(wd_task *self, wd_breaker *b, int rc) {
  wd_cancel_scope s;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  wd_breaker_permit p;
  cr_assert_eq(wd_breaker_begin(self, b, &p), 0);
  wd_cancel(&s);
  wd_breaker_end(self, b, &p, rc);
  return wd_cancel_scope_exit(self, &s, 0);
}

static int counting(wd_task *self, void *arg) {
  wd_breaker b;
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.window_size = 2,
                                                      .is_failure = eio_only}),
               0);
  /* -ENOENT is not a failure here; WD_ECANCELED and failures of a
   * cancelled caller are ignored. */
  cr_assert_eq(call(self, &b, -ENOENT), -ENOENT);
  cr_assert_eq(call(self, &b, WD_ECANCELED), WD_ECANCELED);
  cr_assert_eq(cancelled_call(self, &b, -EIO), 0);
  wd_breaker_stats st;
  wd_breaker_stats_get(&b, &st);
  cr_assert_eq(st.window_calls, 1);
  cr_assert_eq(st.window_failures, 0);
  cr_assert_eq(st.successes, 1);
  cr_assert_eq(st.ignored, 2);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED);
  /* -ENOENT was a success: one failure makes 1 of 2. */
  fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_OPEN);
  /* A cancelled caller is not even let in: no call, nothing counted. */
  wd_cancel_scope s;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  wd_cancel(&s);
  cr_assert_eq(call(self, &b, 0), WD_ECANCELED);
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ECANCELED), 0);
  wd_breaker_stats_get(&b, &st);
  cr_assert_eq(st.rejected, 0);
  wd_breaker_deinit(&b);
  return 0;
}

Test(breaker, cancellations_are_ignored_and_the_predicate_decides) {
  cr_assert_eq(run_virtual(counting, NULL), 0);
  assert_no_leaks();
}

static int probe_cancel(wd_task *self, void *arg) {
  wd_breaker b;
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.window_size = 1,
                                                      .open_duration = WD_SEC}),
               0);
  fail(self, &b);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  /* A probe whose caller is cancelled gives its slot back. */
  cr_assert_eq(cancelled_call(self, &b, WD_ECANCELED), 0);
  cr_assert_eq(state(&b), WD_BREAKER_HALF_OPEN);
  pass(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED);
  wd_breaker_deinit(&b);
  return 0;
}

Test(breaker, a_cancelled_probe_gives_its_slot_back) {
  cr_assert_eq(run_virtual(probe_cancel, NULL), 0);
  assert_no_leaks();
}

static int late_outcomes(wd_task *self, void *arg) {
  wd_breaker b;
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.window_size = 2,
                                                      .open_duration = WD_SEC}),
               0);
  /* A call begins while closed... */
  wd_breaker_permit slow;
  cr_assert_eq(wd_breaker_begin(self, &b, &slow), 0);
  fail(self, &b);
  fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_OPEN);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_breaker_permit probe;
  cr_assert_eq(wd_breaker_begin(self, &b, &probe), 0);
  /* ...and succeeds while half-open: it is not the probe. */
  wd_breaker_end(self, &b, &slow, 0);
  cr_assert_eq(state(&b), WD_BREAKER_HALF_OPEN);
  wd_breaker_end(self, &b, &probe, 0);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED);
  wd_breaker_stats st;
  wd_breaker_stats_get(&b, &st);
  cr_assert_eq(st.successes, 2, "both counted in the totals");
  cr_assert_eq(st.window_calls, 0, "neither in the fresh window");
  wd_breaker_deinit(&b);
  return 0;
}

Test(breaker, an_outcome_from_an_earlier_state_does_not_move_it) {
  cr_assert_eq(run_virtual(late_outcomes, NULL), 0);
  assert_no_leaks();
}

/* The same through wd_breaker_call(), whose closed-state success path is
 * inlined: a call that began before the breaker opened and was reset
 * ends in a closed breaker again, but a new generation of it. */
static int late_call(wd_task *self, void *arg) {
  wd_breaker b;
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.window_size = 2}), 0);
  prober p = {&b, WD_SEC, 0, 1};
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, probe_task, &p, NULL), 0);
  cr_assert_eq(wd_yield(self), 0); /* it began while closed */
  fail(self, &b);
  fail(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_OPEN);
  wd_breaker_reset(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(p.rc, 0);
  wd_breaker_stats st;
  wd_breaker_stats_get(&b, &st);
  cr_assert_eq(st.successes, 1, "counted in the totals");
  cr_assert_eq(st.window_calls, 0, "not in the window of the new closed spell");
  wd_breaker_deinit(&b);
  return 0;
}

Test(breaker, a_late_success_through_call_is_not_put_in_a_newer_window) {
  cr_assert_eq(run_virtual(late_call, NULL), 0);
  assert_no_leaks();
}

/* ---- hook, reset, arguments -------------------------------------------- */

typedef struct changes {
  int n;
  wd_breaker_state from[8], to[8];
  wd_time at[8];
} changes;

static void on_change(wd_task *self, wd_breaker *b, wd_breaker_state from,
                      wd_breaker_state to, void *arg) {
  changes *c = arg;
  c->from[c->n] = from;
  c->to[c->n] = to;
  c->at[c->n] = wd_now(self);
  c->n++;
}

static int hook_main(wd_task *self, void *arg) {
  changes *c = arg;
  wd_breaker b;
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.window_size = 1,
                                                      .open_duration = WD_SEC,
                                                      .on_change = on_change,
                                                      .arg = c}),
               0);
  fail(self, &b);
  cr_assert_eq(wd_sleep(self, 2 * WD_SEC), 0);
  pass(self, &b);
  fail(self, &b);
  wd_breaker_reset(self, &b);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED);
  pass(self, &b);
  wd_breaker_deinit(&b);
  return 0;
}

Test(breaker, every_state_change_is_reported) {
  changes c = {0};
  cr_assert_eq(run_virtual(hook_main, &c), 0);
  cr_assert_eq(c.n, 5);
  wd_breaker_state want[5][2] = {
      {WD_BREAKER_CLOSED, WD_BREAKER_OPEN},
      {WD_BREAKER_OPEN, WD_BREAKER_HALF_OPEN},
      {WD_BREAKER_HALF_OPEN, WD_BREAKER_CLOSED},
      {WD_BREAKER_CLOSED, WD_BREAKER_OPEN},
      {WD_BREAKER_OPEN, WD_BREAKER_CLOSED},
  };
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(c.from[i], want[i][0], "change %d", i);
    cr_assert_eq(c.to[i], want[i][1], "change %d", i);
  }
  cr_assert_eq(c.at[1], 2 * WD_SEC, "half-open when next asked");
  cr_assert_str_eq(wd_breaker_state_name(WD_BREAKER_HALF_OPEN), "half-open");
  assert_no_leaks();
}

static int args_main(wd_task *self, void *arg) {
  wd_breaker b;
  cr_assert_eq(wd_breaker_init(NULL, NULL), WD_EINVAL);
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.name = "x",
                                                      .window_size = 5,
                                                      .min_calls = 6}),
               WD_EINVAL);
  cr_assert_str_eq(last_msg(self),
                   "breaker 'x': min_calls 6 exceeds the window of 5 calls "
                   "(it could never open)");
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.failure_ratio = 1.5}),
               WD_EINVAL);
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.failure_ratio = -1}),
               WD_EINVAL);
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.open_duration = -1}),
               WD_EINVAL);
  cr_assert_eq(
      wd_breaker_init(&b, &(wd_breaker_opts){.window_time = 5, .buckets = 10}),
      WD_EINVAL);
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.window_time = WD_SEC,
                                                      .buckets = 1001}),
               WD_EINVAL);
  wd_breaker_permit p;
  cr_assert_eq(wd_breaker_begin(self, &b, &p), WD_EINVAL,
               "a failed init leaves it unusable");
  cr_assert_eq(wd_breaker_init(&b, NULL), 0);
  cr_assert_eq(wd_breaker_begin(self, &b, NULL), WD_EINVAL);
  cr_assert_eq(wd_breaker_call(self, &b, NULL, NULL), WD_EINVAL);
  cr_assert_eq(wd_breaker_call(self, NULL, ret_rc, NULL), WD_EINVAL);
  wd_breaker_deinit(&b);
  wd_breaker_deinit(NULL);
  return 0;
}

Test(breaker, bad_arguments_are_einval_with_a_message) {
  cr_assert_eq(run_virtual(args_main, NULL), 0);
  assert_no_leaks();
}

static int init_nomem(wd_task *self, void *arg) {
  wd_breaker b;
  wd_alloc_fail_after(1);
  int rc = wd_breaker_init(&b, &(wd_breaker_opts){.name = "m"});
  cr_assert(wd_alloc_failed());
  cr_assert_eq(rc, WD_ENOMEM);
  cr_assert_str_eq(last_msg(self), "breaker 'm': no memory for its window");
  wd_breaker_deinit(&b); /* harmless on a failed init */
  wd_alloc_fail_after(1);
  rc = wd_breaker_init(&b, &(wd_breaker_opts){.window_time = WD_SEC});
  cr_assert_eq(rc, WD_ENOMEM);
  wd_alloc_fail_after(0);
  return 0;
}

Test(breaker, init_without_memory_is_enomem_and_holds_nothing) {
  cr_assert_eq(run_virtual(init_nomem, NULL), 0);
  assert_no_leaks();
}

/* Breaker and retry stack: a retry inside a breaker is one outcome. */
static int always_fail(wd_task *self, void *arg) {
  ++*(int *)arg;
  return -EIO;
}

static int retry_body(wd_task *self, void *arg) {
  void **a = arg;
  return wd_retry_call(self, a[0], always_fail, a[1]);
}

static int stacked(wd_task *self, void *arg) {
  wd_breaker b;
  wd_retry r;
  int n = 0;
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.window_size = 2}), 0);
  cr_assert_eq(wd_retry_init(&r, &(wd_retry_opts){.jitter = WD_JITTER_NONE}),
               0);
  void *a[2] = {&r, &n};
  cr_assert_eq(wd_breaker_call(self, &b, retry_body, a), -EIO);
  cr_assert_eq(n, 3);
  cr_assert_eq(state(&b), WD_BREAKER_CLOSED, "one outcome of two");
  cr_assert_eq(wd_breaker_call(self, &b, retry_body, a), -EIO);
  cr_assert_eq(state(&b), WD_BREAKER_OPEN);
  cr_assert_eq(wd_breaker_call(self, &b, retry_body, a), WD_ECIRCUITOPEN);
  cr_assert_eq(n, 6, "not called while open");
  wd_breaker_deinit(&b);
  return 0;
}

Test(breaker, a_retry_inside_a_breaker_is_one_outcome) {
  cr_assert_eq(run_virtual(stacked, NULL), 0);
  assert_no_leaks();
}
