/* wd_guard: the default and custom orders and what each one does, every
 * rejected order with its message, each layer's effect seen through the
 * guard (per-attempt timeout retried, the breaker opening after retries,
 * rate pacing, the limiter's cap under 100 callers), and permits held
 * until work that was abandoned has really finished.
 *
 * Time-based tests run on the virtual clock, so every time checked is
 * exact; the one test that hands a permit to a thread synchronises with it
 * through a semaphore, never by sleeping. */
#include <pthread.h>
#include <semaphore.h>
#include <string.h>

#include "helpers.h"

static const char *last_msg(wd_task *self) {
  const wd_error *e = self ? wd_task_error(self) : wd_last_error();
  return e ? e->msg : "";
}

static int ok(wd_task *self, void *arg) { return 0; }

/* A call that records its attempts: fails its first `fail` ones with
 * -EIO (all when fail < 0), each after sleeping `work`. */
typedef struct probe {
  int fail;
  wd_time work;
  int n;
  wd_time at[16];
  wd_limiter *lim; /* if set, its use is checked inside the call */
  size_t in_use[16];
} probe;

static int probe_call(wd_task *self, void *arg) {
  probe *p = arg;
  int i = p->n++;
  if (i < 16) {
    p->at[i] = wd_now(self);
    if (p->lim) {
      wd_limiter_stats st;
      wd_limiter_stats_get(p->lim, &st);
      p->in_use[i] = st.in_use;
    }
  }
  if (p->work) {
    int rc = wd_sleep(self, p->work);
    if (rc) return rc;
  }
  if (p->fail < 0 || i < p->fail) return -EIO;
  return 0;
}

/* ---- order: default, custom, rejected ------------------------------------ */

typedef struct all_layers {
  wd_retry retry;
  wd_ratelimit rl;
  wd_limiter lim;
  wd_breaker brk;
} all_layers;

static void all_init(all_layers *a, uint32_t attempts) {
  cr_assert_eq(
      wd_retry_init(&a->retry, &(wd_retry_opts){.name = "r",
                                                .max_attempts = attempts,
                                                .base_delay = 100 * WD_MSEC,
                                                .jitter = WD_JITTER_NONE}),
      0);
  cr_assert_eq(wd_ratelimit_init(&a->rl, 1000, WD_SEC,
                                 &(wd_ratelimit_opts){.burst = 100}),
               0);
  cr_assert_eq(wd_limiter_init(&a->lim, "slots", 4), 0);
  cr_assert_eq(wd_breaker_init(&a->brk, &(wd_breaker_opts){.name = "b"}), 0);
}

static void all_deinit(all_layers *a) {
  cr_assert_eq(wd_limiter_deinit(&a->lim), 0);
  cr_assert_eq(wd_ratelimit_deinit(&a->rl), 0);
  wd_breaker_deinit(&a->brk);
}

static wd_guard_opts all_opts(all_layers *a) {
  return (wd_guard_opts){.name = "all",
                         .timeout = WD_SEC,
                         .retry = &a->retry,
                         .ratelimit = &a->rl,
                         .limiter = &a->lim,
                         .breaker = &a->brk};
}

Test(guard, the_default_order_is_breaker_retry_ratelimit_limiter_timeout) {
  all_layers a;
  all_init(&a, 3);
  wd_guard g;
  wd_guard_opts o = all_opts(&a);
  cr_assert_eq(wd_guard_init(&g, &o), 0);
  wd_guard_layer l[WD_GUARD_LAYERS];
  cr_assert_eq(wd_guard_layers(&g, l), 5);
  wd_guard_layer want[] = {WD_GUARD_BREAKER, WD_GUARD_RETRY, WD_GUARD_RATELIMIT,
                           WD_GUARD_LIMITER, WD_GUARD_TIMEOUT};
  for (int i = 0; i < 5; i++)
    cr_assert_eq(l[i], want[i], "layer %d is %s", i, wd_guard_layer_name(l[i]));
  /* Only the configured layers, in the same relative order. */
  cr_assert_eq(wd_guard_init(&g, &(wd_guard_opts){.timeout = WD_SEC,
                                                  .breaker = &a.brk,
                                                  .limiter = &a.lim}),
               0);
  cr_assert_eq(wd_guard_layers(&g, l), 3);
  cr_assert_eq(l[0], WD_GUARD_BREAKER);
  cr_assert_eq(l[1], WD_GUARD_LIMITER);
  cr_assert_eq(l[2], WD_GUARD_TIMEOUT);
  cr_assert_eq(wd_guard_init(&g, NULL), 0);
  cr_assert_eq(wd_guard_layers(&g, l), 0);
  cr_assert_str_eq(wd_guard_layer_name(WD_GUARD_RATELIMIT), "ratelimit");
  cr_assert_str_eq(wd_guard_layer_name((wd_guard_layer)42), "unknown");
  all_deinit(&a);
  assert_no_leaks();
}

/* What the default order does, seen from the policies' counters: one
 * breaker outcome per call, one rate permit per attempt, no concurrency
 * permit held during the back-off, a timeout per attempt. */
typedef struct order_scene {
  wd_guard_layer order[WD_GUARD_LAYERS];
  all_layers a;
  probe p;
  size_t in_use_at_backoff[8];
  int nbackoff;
  int rc;
  wd_time end;
  wd_breaker_stats brk;
  wd_ratelimit_stats rl;
  wd_retry_stats retry;
  wd_limiter_stats lim;
} order_scene;

static void on_retry(wd_task *self, const wd_retry_info *info, void *arg) {
  order_scene *sc = arg;
  wd_limiter_stats st;
  wd_limiter_stats_get(&sc->a.lim, &st);
  sc->in_use_at_backoff[sc->nbackoff++] = st.in_use;
}

static int order_main(wd_task *self, void *arg) {
  order_scene *sc = arg;
  all_layers *a = &sc->a;
  cr_assert_eq(
      wd_retry_init(&a->retry, &(wd_retry_opts){.name = "r",
                                                .max_attempts = 3,
                                                .base_delay = 100 * WD_MSEC,
                                                .jitter = WD_JITTER_NONE,
                                                .on_retry = on_retry,
                                                .arg = sc}),
      0);
  wd_guard g;
  wd_guard_opts o = all_opts(a);
  memcpy(o.order, sc->order, sizeof o.order);
  cr_assert_eq(wd_guard_init(&g, &o), 0, "%s", last_msg(NULL));
  sc->p.lim = &a->lim;
  sc->rc = wd_guard_call(self, &g, probe_call, &sc->p);
  sc->end = wd_now(self);
  wd_breaker_stats_get(&a->brk, &sc->brk);
  wd_ratelimit_stats_get(&a->rl, &sc->rl);
  wd_retry_stats_get(&a->retry, &sc->retry);
  wd_limiter_stats_get(&a->lim, &sc->lim);
  cr_assert_eq(wd_guard_deinit(&g), 0);
  return 0;
}

static void play_order(order_scene *sc) {
  all_init(&sc->a, 3);
  cr_assert_eq(run_virtual(order_main, sc), 0);
  all_deinit(&sc->a);
}

Test(guard, the_default_order_retries_inside_the_breaker_paying_per_attempt) {
  /* Two failures then a success; each attempt takes 0.6 s, under its 1 s
   * timeout, though the whole call takes longer than 1 s. */
  order_scene sc = {.p = {.fail = 2, .work = 600 * WD_MSEC}};
  play_order(&sc);
  cr_assert_eq(sc.rc, 0, "%d", sc.rc);
  cr_assert_eq(sc.p.n, 3);
  cr_assert_eq(sc.end, 3 * 600 * WD_MSEC + 100 * WD_MSEC + 200 * WD_MSEC);
  cr_assert_eq(sc.brk.calls, 1, "the breaker sees the call once");
  cr_assert_eq(sc.brk.successes, 1);
  cr_assert_eq(sc.rl.granted, 3, "each attempt pays a rate permit");
  cr_assert_eq(sc.retry.attempts, 3);
  cr_assert_eq(sc.nbackoff, 2);
  for (int i = 0; i < 2; i++)
    cr_assert_eq(sc.in_use_at_backoff[i], 0,
                 "the concurrency permit is not held in back-off %d", i);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(sc.p.in_use[i], 1, "attempt %d holds one permit", i);
  cr_assert_eq(sc.lim.in_use, 0);
  cr_assert_eq(sc.lim.acquired, 3);
  assert_no_leaks();
}

Test(guard, a_custom_order_puts_the_breaker_inside_the_retry) {
  order_scene sc = {.order = {WD_GUARD_RETRY, WD_GUARD_BREAKER,
                              WD_GUARD_RATELIMIT, WD_GUARD_LIMITER,
                              WD_GUARD_TIMEOUT},
                    .p = {.fail = 2}};
  play_order(&sc);
  cr_assert_eq(sc.rc, 0);
  cr_assert_eq(sc.brk.calls, 3, "the breaker sees every attempt");
  cr_assert_eq(sc.brk.failures, 2);
  cr_assert_eq(sc.rl.granted, 3);
  assert_no_leaks();
}

Test(guard, a_custom_order_with_the_rate_limit_outside_the_retry) {
  order_scene sc = {.order = {WD_GUARD_RATELIMIT, WD_GUARD_BREAKER,
                              WD_GUARD_RETRY, WD_GUARD_LIMITER,
                              WD_GUARD_TIMEOUT},
                    .p = {.fail = 2}};
  play_order(&sc);
  cr_assert_eq(sc.rc, 0);
  cr_assert_eq(sc.rl.granted, 1, "one rate permit for the whole call");
  cr_assert_eq(sc.brk.calls, 1);
  cr_assert_eq(sc.retry.attempts, 3);
  assert_no_leaks();
}

/* wd_guard_init() with order o must fail with WD_EINVAL and a message
 * containing `want`. */
static void rejects(all_layers *a, wd_guard_opts o, const char *want) {
  wd_guard g;
  memset(&g, 0xab, sizeof g);
  wd_error_clear(NULL);
  cr_assert_eq(wd_guard_init(&g, &o), WD_EINVAL, "accepted (want '%s')", want);
  const char *msg = last_msg(NULL);
  cr_assert(strstr(msg, want), "message '%s' lacks '%s'", msg, want);
  cr_assert_eq(wd_guard_call(NULL, &g, ok, NULL), WD_EINVAL);
}

Test(guard, an_unknown_layer_kind_is_rejected) {
  all_layers a;
  all_init(&a, 3);
  wd_guard_opts o = {.name = "x", .breaker = &a.brk};
  o.order[0] = WD_GUARD_BREAKER;
  o.order[1] = (wd_guard_layer)9;
  rejects(&a, o, "guard 'x': order[1] is 9, not a layer kind");
  all_deinit(&a);
  assert_no_leaks();
}

Test(guard, a_layer_listed_twice_is_rejected) {
  all_layers a;
  all_init(&a, 3);
  wd_guard_opts o = {.name = "x", .retry = &a.retry, .breaker = &a.brk};
  wd_guard_layer ord[] = {WD_GUARD_RETRY, WD_GUARD_BREAKER, WD_GUARD_RETRY};
  memcpy(o.order, ord, sizeof ord);
  rejects(&a, o, "the order lists 'retry' twice (order[0] and order[2])");
  all_deinit(&a);
  assert_no_leaks();
}

Test(guard, a_listed_layer_that_is_not_configured_is_rejected) {
  all_layers a;
  all_init(&a, 3);
  wd_guard_opts o = {.name = "x", .retry = &a.retry};
  o.order[0] = WD_GUARD_BREAKER;
  o.order[1] = WD_GUARD_RETRY;
  rejects(&a, o, "the order lists 'breaker' but opts.breaker is NULL");
  o = (wd_guard_opts){.name = "x", .retry = &a.retry};
  o.order[0] = WD_GUARD_RETRY;
  o.order[1] = WD_GUARD_TIMEOUT;
  rejects(&a, o, "the order lists 'timeout' but opts.timeout is 0");
  all_deinit(&a);
  assert_no_leaks();
}

Test(guard, a_configured_layer_missing_from_the_order_is_rejected) {
  all_layers a;
  all_init(&a, 3);
  wd_guard_opts o = all_opts(&a);
  o.name = "x";
  wd_guard_layer ord[] = {WD_GUARD_BREAKER, WD_GUARD_RETRY, WD_GUARD_LIMITER,
                          WD_GUARD_TIMEOUT};
  memcpy(o.order, ord, sizeof ord);
  rejects(&a, o,
          "'ratelimit' is configured but missing from the order (it would "
          "be ignored)");
  all_deinit(&a);
  assert_no_leaks();
}

Test(guard, a_limiter_outside_the_retry_is_rejected) {
  all_layers a;
  all_init(&a, 3);
  wd_guard_opts o = {.name = "x", .retry = &a.retry, .limiter = &a.lim};
  o.order[0] = WD_GUARD_LIMITER;
  o.order[1] = WD_GUARD_RETRY;
  rejects(&a, o,
          "'limiter' outside 'retry' would hold its permit through the "
          "back-off sleeps");
  all_deinit(&a);
  assert_no_leaks();
}

Test(guard, a_limiter_outside_the_rate_limit_is_rejected) {
  all_layers a;
  all_init(&a, 3);
  wd_guard_opts o = {.name = "x", .ratelimit = &a.rl, .limiter = &a.lim};
  o.order[0] = WD_GUARD_LIMITER;
  o.order[1] = WD_GUARD_RATELIMIT;
  rejects(&a, o,
          "'limiter' outside 'ratelimit' would hold its permit while "
          "waiting for the rate");
  all_deinit(&a);
  assert_no_leaks();
}

Test(guard, a_per_attempt_timeout_outside_the_retry_is_rejected) {
  all_layers a;
  all_init(&a, 3);
  wd_guard_opts o = {.name = "x", .timeout = WD_SEC, .retry = &a.retry};
  o.order[0] = WD_GUARD_TIMEOUT;
  o.order[1] = WD_GUARD_RETRY;
  rejects(&a, o,
          "a per-attempt 'timeout' outside 'retry' would bound all the "
          "attempts together; list it after 'retry', or use total_timeout");
  all_deinit(&a);
  assert_no_leaks();
}

Test(guard, orders_without_a_retry_place_the_timeout_freely) {
  all_layers a;
  all_init(&a, 3);
  wd_guard g;
  wd_guard_opts o = {.timeout = WD_SEC, .limiter = &a.lim, .breaker = &a.brk};
  wd_guard_layer ord[] = {WD_GUARD_TIMEOUT, WD_GUARD_BREAKER, WD_GUARD_LIMITER};
  memcpy(o.order, ord, sizeof ord);
  cr_assert_eq(wd_guard_init(&g, &o), 0, "%s", last_msg(NULL));
  all_deinit(&a);
  assert_no_leaks();
}

Test(guard, bad_arguments) {
  wd_error_clear(NULL);
  cr_assert_eq(wd_guard_init(NULL, NULL), WD_EINVAL);
  cr_assert(strstr(last_msg(NULL), "NULL guard"), "%s", last_msg(NULL));
  wd_guard g;
  cr_assert_eq(wd_guard_init(&g, &(wd_guard_opts){.name = "n", .timeout = -1}),
               WD_EINVAL);
  cr_assert_str_eq(last_msg(NULL), "guard 'n': negative timeout");
  cr_assert_eq(wd_guard_init(&g, &(wd_guard_opts){.total_timeout = -5}),
               WD_EINVAL);
  cr_assert_str_eq(last_msg(NULL), "guard 'guard': negative total_timeout");
  cr_assert_eq(wd_guard_deinit(NULL), 0);
  cr_assert_eq(wd_guard_keep_permit(NULL, &g), WD_EINVAL);
  wd_guard_stats st;
  wd_guard_stats_get(NULL, &st);
  cr_assert_eq(st.calls, 0);
  assert_no_leaks();
}

static int bad_calls(wd_task *self, void *arg) {
  wd_guard g;
  cr_assert_eq(wd_guard_init(&g, NULL), 0);
  cr_assert_eq(wd_guard_call(self, &g, NULL, NULL), WD_EINVAL);
  cr_assert_str_eq(last_msg(self), "wd_guard_call: NULL function");
  cr_assert_eq(wd_guard_call(self, NULL, ok, NULL), WD_EINVAL);
  cr_assert_str_eq(last_msg(self), "wd_guard_call: NULL guard");
  cr_assert_eq(wd_guard_deinit(&g), 0);
  cr_assert_eq(wd_guard_call(self, &g, ok, NULL), WD_EINVAL);
  cr_assert_str_eq(last_msg(self), "wd_guard_call: guard not initialised");
  cr_assert_eq(wd_guard_deinit(&g), WD_EINVAL);
  return 0;
}

Test(guard, bad_calls_do_not_call) {
  cr_assert_eq(run_virtual(bad_calls, NULL), 0);
  assert_no_leaks();
}

/* ---- the call: a checkpoint, codes passed through ------------------------ */

static int count_call(wd_task *self, void *arg) {
  (*(int *)arg)++;
  return 7;
}

static int bare_guard(wd_task *self, void *arg) {
  wd_guard g;
  cr_assert_eq(wd_guard_init(&g, &(wd_guard_opts){.name = "bare"}), 0);
  int n = 0;
  cr_assert_eq(wd_guard_call(self, &g, count_call, &n), 7, "results pass");
  cr_assert_eq(n, 1);
  wd_cancel_scope s;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  wd_cancel(&s);
  cr_assert_eq(wd_guard_call(self, &g, count_call, &n), WD_ECANCELED);
  cr_assert_eq(n, 1, "a cancelled caller's call is not made");
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ECANCELED), 0);
  wd_guard_stats st;
  wd_guard_stats_get(&g, &st);
  cr_assert_eq(st.calls, 2);
  cr_assert_eq(st.successes, 1);
  cr_assert_eq(st.cancelled, 1);
  cr_assert_eq(st.in_flight, 0);
  return 0;
}

Test(guard, a_guard_without_layers_is_a_checkpoint_around_the_call) {
  cr_assert_eq(run_virtual(bare_guard, NULL), 0);
  assert_no_leaks();
}

/* ---- each layer seen through the guard ----------------------------------- */

/* The i-th attempt sleeps slow[i], then succeeds. */
typedef struct slow_call {
  wd_time slow[8];
  int n;
  wd_time at[8];
  int rc[8];
} slow_call;

static int slow_attempt(wd_task *self, void *arg) {
  slow_call *s = arg;
  int i = s->n++;
  s->at[i] = wd_now(self);
  int rc = s->slow[i] ? wd_sleep(self, s->slow[i]) : 0;
  s->rc[i] = rc;
  return rc;
}

static int per_attempt_timeout(wd_task *self, void *arg) {
  wd_retry r;
  cr_assert_eq(wd_retry_init(&r, &(wd_retry_opts){.max_attempts = 5,
                                                  .base_delay = 100 * WD_MSEC,
                                                  .jitter = WD_JITTER_NONE}),
               0);
  wd_guard g;
  cr_assert_eq(
      wd_guard_init(
          &g, &(wd_guard_opts){.name = "slow", .timeout = WD_SEC, .retry = &r}),
      0);
  slow_call s = {.slow = {10 * WD_SEC, 10 * WD_SEC, 0}};
  cr_assert_eq(wd_guard_call(self, &g, slow_attempt, &s), 0);
  cr_assert_eq(s.n, 3);
  /* Cut at 1 s, back-off 0.1 s; cut at 1 s, back-off 0.2 s. */
  cr_assert_eq(s.at[0], 0);
  cr_assert_eq(s.at[1], 1100 * WD_MSEC);
  cr_assert_eq(s.at[2], 2300 * WD_MSEC);
  cr_assert_eq(s.rc[0], WD_ETIMEDOUT);
  cr_assert_eq(wd_now(self), 2300 * WD_MSEC);
  /* When every attempt hangs, retry gives up with the timeout's code and
   * message as the cause. */
  slow_call all = {.slow = {10 * WD_SEC, 10 * WD_SEC, 10 * WD_SEC, 10 * WD_SEC,
                            10 * WD_SEC}};
  cr_assert_eq(wd_guard_call(self, &g, slow_attempt, &all), WD_ETIMEDOUT);
  const wd_error *e = wd_task_error(self);
  cr_assert(strstr(e->msg, "gave up after 5 attempts"), "%s", e->msg);
  cr_assert(e->cause);
  cr_assert_str_eq(e->cause->msg,
                   "guard 'slow' attempt: timed out after 1.000 s");
  return 0;
}

Test(guard, a_per_attempt_timeout_is_retried) {
  cr_assert_eq(run_virtual(per_attempt_timeout, NULL), 0);
  assert_no_leaks();
}

static int total_timeout(wd_task *self, void *arg) {
  wd_retry r;
  cr_assert_eq(wd_retry_init(&r, &(wd_retry_opts){.max_attempts = 100,
                                                  .base_delay = 100 * WD_MSEC,
                                                  .max_delay = 100 * WD_MSEC,
                                                  .jitter = WD_JITTER_NONE}),
               0);
  wd_guard g;
  cr_assert_eq(wd_guard_init(&g, &(wd_guard_opts){.name = "t",
                                                  .timeout = WD_SEC,
                                                  .total_timeout = 3 * WD_SEC,
                                                  .retry = &r}),
               0);
  slow_call s;
  memset(&s, 0, sizeof s);
  for (int i = 0; i < 8; i++)
    s.slow[i] = 10 * WD_SEC;
  cr_assert_eq(wd_guard_call(self, &g, slow_attempt, &s), WD_ETIMEDOUT);
  cr_assert_str_eq(last_msg(self), "guard 't': timed out after 3.000 s");
  /* 0-1 cut, 1.1-2.1 cut, 2.2-3 cut by the total. */
  cr_assert_eq(s.n, 3);
  cr_assert_eq(wd_now(self), 3 * WD_SEC);
  return 0;
}

Test(guard, total_timeout_bounds_the_whole_call) {
  cr_assert_eq(run_virtual(total_timeout, NULL), 0);
  assert_no_leaks();
}

static int breaker_after_retries(wd_task *self, void *arg) {
  wd_retry r;
  cr_assert_eq(wd_retry_init(&r, &(wd_retry_opts){.name = "fetch",
                                                  .max_attempts = 3,
                                                  .base_delay = 10 * WD_MSEC,
                                                  .jitter = WD_JITTER_NONE}),
               0);
  wd_breaker b;
  cr_assert_eq(wd_breaker_init(&b, &(wd_breaker_opts){.name = "db",
                                                      .window_size = 2,
                                                      .min_calls = 2,
                                                      .failure_ratio = 1.0}),
               0);
  wd_guard g;
  cr_assert_eq(wd_guard_init(&g, &(wd_guard_opts){.retry = &r, .breaker = &b}),
               0);
  probe p = {.fail = -1};
  cr_assert_eq(wd_guard_call(self, &g, probe_call, &p), -EIO);
  cr_assert(strstr(last_msg(self), "retry 'fetch': gave up after 3 attempts"),
            "%s", last_msg(self));
  wd_breaker_stats bs;
  wd_breaker_stats_get(&b, &bs);
  cr_assert_eq(bs.state, WD_BREAKER_CLOSED, "one failure in a window of 2");
  cr_assert_eq(bs.failures, 1, "3 attempts, one outcome");
  cr_assert_eq(wd_guard_call(self, &g, probe_call, &p), -EIO);
  wd_breaker_stats_get(&b, &bs);
  cr_assert_eq(bs.state, WD_BREAKER_OPEN);
  cr_assert_eq(p.n, 6);
  /* Open: refused at once, no attempt, no back-off. */
  wd_time t0 = wd_now(self);
  cr_assert_eq(wd_guard_call(self, &g, probe_call, &p), WD_ECIRCUITOPEN);
  cr_assert_eq(p.n, 6);
  cr_assert_eq(wd_now(self), t0);
  cr_assert(strstr(last_msg(self), "circuit breaker 'db' is open"), "%s",
            last_msg(self));
  wd_retry_stats rs;
  wd_retry_stats_get(&r, &rs);
  cr_assert_eq(rs.calls, 2, "the refused call never reached the retry");
  wd_guard_stats gs;
  wd_guard_stats_get(&g, &gs);
  cr_assert_eq(gs.calls, 3);
  cr_assert_eq(gs.failures, 3);
  wd_breaker_deinit(&b);
  return 0;
}

Test(guard, the_breaker_opens_after_the_retries_are_exhausted) {
  cr_assert_eq(run_virtual(breaker_after_retries, NULL), 0);
  assert_no_leaks();
}

/* Ten callers at once through a guard limited to 10 per second, burst 1:
 * the calls start exactly 100 ms apart. */
typedef struct paced {
  wd_guard g;
  wd_time at[10];
  int n;
} paced;

static int stamp(wd_task *self, void *arg) {
  paced *p = arg;
  p->at[p->n++] = wd_now(self);
  return 0;
}

static int paced_caller(wd_task *self, void *arg) {
  paced *p = arg;
  return wd_guard_call(self, &p->g, stamp, p);
}

static int rate_pacing(wd_task *self, void *arg) {
  wd_ratelimit rl;
  cr_assert_eq(wd_ratelimit_init(&rl, 10, WD_SEC, NULL), 0);
  wd_limiter lim;
  cr_assert_eq(wd_limiter_init(&lim, "l", 3), 0);
  paced p = {.n = 0};
  cr_assert_eq(
      wd_guard_init(&p.g, &(wd_guard_opts){.ratelimit = &rl, .limiter = &lim}),
      0);
  wd_group grp;
  cr_assert_eq(wd_group_enter(self, &grp, NULL), 0);
  for (int i = 0; i < 10; i++)
    cr_assert_eq(wd_spawn(&grp, paced_caller, &p, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &grp, 0), 0);
  cr_assert_eq(p.n, 10);
  for (int i = 0; i < 10; i++)
    cr_assert_eq(p.at[i], i * 100 * WD_MSEC, "call %d at %lld", i,
                 (long long)p.at[i]);
  cr_assert_eq(wd_ratelimit_deinit(&rl), 0);
  cr_assert_eq(wd_limiter_deinit(&lim), 0);
  return 0;
}

Test(guard, the_rate_limit_paces_the_calls) {
  cr_assert_eq(run_virtual(rate_pacing, NULL), 0);
  assert_no_leaks();
}

/* 100 callers through a guard whose limiter allows 7: with retries (every
 * third attempt fails), per-attempt timeouts and varied work, no more than
 * 7 are ever inside. */
typedef struct crowd {
  wd_guard g;
  wd_limiter lim;
  int inside, most, attempts, done;
} crowd;

static int crowd_work(wd_task *self, void *arg) {
  crowd *c = arg;
  int k = c->attempts++;
  if (++c->inside > c->most) c->most = c->inside;
  int rc = wd_sleep(self, (wd_time)(k * 7 % 13 + 1) * WD_MSEC);
  c->inside--;
  if (rc) return rc;
  return k % 3 == 2 ? -EIO : 0;
}

static int crowd_caller(wd_task *self, void *arg) {
  crowd *c = arg;
  int rc = wd_guard_call(self, &c->g, crowd_work, c);
  if (rc == 0) c->done++;
  return rc;
}

static int limiter_cap(wd_task *self, void *arg) {
  crowd *c = arg;
  wd_retry r;
  cr_assert_eq(wd_retry_init(&r, &(wd_retry_opts){.max_attempts = 10,
                                                  .base_delay = WD_MSEC,
                                                  .seed = 42}),
               0);
  cr_assert_eq(wd_limiter_init(&c->lim, "db", 7), 0);
  cr_assert_eq(wd_guard_init(&c->g, &(wd_guard_opts){.timeout = WD_SEC,
                                                     .retry = &r,
                                                     .limiter = &c->lim}),
               0);
  wd_group grp;
  cr_assert_eq(wd_group_enter(self, &grp, NULL), 0);
  for (int i = 0; i < 100; i++)
    cr_assert_eq(wd_spawn(&grp, crowd_caller, c, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &grp, 0), 0);
  wd_limiter_stats st;
  wd_limiter_stats_get(&c->lim, &st);
  cr_assert_eq(st.peak, 7);
  cr_assert_eq(st.in_use, 0);
  cr_assert_eq(st.acquired, (uint64_t)c->attempts);
  cr_assert_eq(wd_limiter_deinit(&c->lim), 0);
  cr_assert_eq(wd_guard_deinit(&c->g), 0);
  return 0;
}

Test(guard, the_limiter_cap_holds_under_100_concurrent_callers) {
  crowd c;
  memset(&c, 0, sizeof c);
  cr_assert_eq(run_virtual(limiter_cap, &c), 0);
  cr_assert_eq(c.most, 7, "at most 7 inside at once, saw %d", c.most);
  cr_assert_eq(c.done, 100);
  cr_assert_gt(c.attempts, 100, "some attempts were retried");
  assert_no_leaks();
}

/* ---- capacity is never returned early ------------------------------------ */

/* A: its attempt times out at 1 s but cleans up, shielded, until 3 s.
 * B: asks at 0.5 s for the only permit and gets it at 3 s, not at 1 s. */
typedef struct cleanup_scene {
  wd_guard g;
  wd_limiter lim;
  wd_time a_returned, b_started;
  int a_rc;
  size_t in_use_at_2s, waiting_at_2s;
} cleanup_scene;

static int slow_cleanup(wd_task *self, void *arg) {
  int rc = wd_sleep(self, 10 * WD_SEC); /* cut by the timeout at 1 s */
  wd_cancel_scope sh;
  cr_assert_eq(
      wd_cancel_scope_enter(self, &sh, &(wd_cancel_opts){.shield = true}), 0);
  cr_assert_eq(wd_sleep(self, 2 * WD_SEC), 0); /* rollback, say */
  wd_cancel_scope_exit(self, &sh, 0);
  return rc;
}

static int caller_a(wd_task *self, void *arg) {
  cleanup_scene *sc = arg;
  sc->a_rc = wd_guard_call(self, &sc->g, slow_cleanup, NULL);
  sc->a_returned = wd_now(self);
  return 0;
}

static int b_call(wd_task *self, void *arg) {
  cleanup_scene *sc = arg;
  sc->b_started = wd_now(self);
  return 0;
}

static int caller_b(wd_task *self, void *arg) {
  cleanup_scene *sc = arg;
  cr_assert_eq(wd_sleep(self, 500 * WD_MSEC), 0);
  return wd_guard_call(self, &sc->g, b_call, sc);
}

static int observer(wd_task *self, void *arg) {
  cleanup_scene *sc = arg;
  cr_assert_eq(wd_sleep(self, 2 * WD_SEC), 0);
  wd_limiter_stats st;
  wd_limiter_stats_get(&sc->lim, &st);
  sc->in_use_at_2s = st.in_use;
  sc->waiting_at_2s = st.waiting;
  return 0;
}

static int held_through_cleanup(wd_task *self, void *arg) {
  cleanup_scene *sc = arg;
  cr_assert_eq(wd_limiter_init(&sc->lim, "one", 1), 0);
  cr_assert_eq(wd_guard_init(&sc->g, &(wd_guard_opts){.name = "c",
                                                      .timeout = WD_SEC,
                                                      .limiter = &sc->lim}),
               0);
  wd_group grp;
  cr_assert_eq(wd_group_enter(self, &grp, NULL), 0);
  cr_assert_eq(wd_spawn(&grp, caller_a, sc, NULL), 0);
  cr_assert_eq(wd_spawn(&grp, caller_b, sc, NULL), 0);
  cr_assert_eq(wd_spawn(&grp, observer, sc, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &grp, 0), 0);
  cr_assert_eq(wd_limiter_deinit(&sc->lim), 0);
  return 0;
}

Test(guard, a_timed_out_attempt_keeps_its_permit_until_its_cleanup_ends) {
  cleanup_scene sc;
  memset(&sc, 0, sizeof sc);
  cr_assert_eq(run_virtual(held_through_cleanup, &sc), 0);
  cr_assert_eq(sc.a_rc, WD_ETIMEDOUT);
  cr_assert_eq(sc.a_returned, 3 * WD_SEC);
  cr_assert_eq(sc.in_use_at_2s, 1, "the cleaning-up attempt holds it");
  cr_assert_eq(sc.waiting_at_2s, 1);
  cr_assert_eq(sc.b_started, 3 * WD_SEC, "B got the permit at %lld",
               (long long)sc.b_started);
  assert_no_leaks();
}

/* The attempt hands its work to a background task and gives up waiting for
 * it at the 1 s timeout; the work keeps the permit until it ends at 5 s. */
typedef struct handoff {
  wd_guard g;
  wd_limiter lim;
  wd_group *bg;
  wd_event done;
  int a_rc;
  wd_time a_returned, b_started;
  size_t in_use_after_a;
} handoff;

static int background_work(wd_task *self, void *arg) {
  handoff *h = arg;
  int rc = wd_sleep(self, 5 * WD_SEC);
  wd_limiter_release(&h->lim); /* the work has really finished */
  wd_event_set(&h->done);
  return rc;
}

static int hand_off(wd_task *self, void *arg) {
  handoff *h = arg;
  cr_assert_eq(wd_spawn(h->bg, background_work, h, NULL), 0);
  cr_assert_eq(wd_guard_keep_permit(self, &h->g), 0);
  cr_assert_eq(wd_guard_keep_permit(self, &h->g), WD_EINVAL);
  cr_assert(strstr(last_msg(self), "already handed over"));
  return wd_event_wait(self, &h->done); /* times out at 1 s */
}

static int handoff_a(wd_task *self, void *arg) {
  handoff *h = arg;
  h->a_rc = wd_guard_call(self, &h->g, hand_off, h);
  h->a_returned = wd_now(self);
  wd_limiter_stats st;
  wd_limiter_stats_get(&h->lim, &st);
  h->in_use_after_a = st.in_use;
  return 0;
}

static int handoff_b_call(wd_task *self, void *arg) {
  handoff *h = arg;
  h->b_started = wd_now(self);
  return 0;
}

static int handoff_b(wd_task *self, void *arg) {
  handoff *h = arg;
  cr_assert_eq(wd_sleep(self, 1500 * WD_MSEC), 0);
  return wd_guard_call(self, &h->g, handoff_b_call, h);
}

static int kept_by_background(wd_task *self, void *arg) {
  handoff *h = arg;
  cr_assert_eq(wd_limiter_init(&h->lim, "one", 1), 0);
  cr_assert_eq(wd_event_init(&h->done, "work done"), 0);
  cr_assert_eq(wd_guard_init(&h->g, &(wd_guard_opts){.name = "h",
                                                     .timeout = WD_SEC,
                                                     .limiter = &h->lim}),
               0);
  wd_group bg, callers;
  cr_assert_eq(wd_group_enter(self, &bg, NULL), 0);
  h->bg = &bg;
  cr_assert_eq(wd_group_enter(self, &callers, NULL), 0);
  cr_assert_eq(wd_spawn(&callers, handoff_a, h, NULL), 0);
  cr_assert_eq(wd_spawn(&callers, handoff_b, h, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &callers, 0), 0);
  cr_assert_eq(wd_group_exit(self, &bg, 0), 0);
  wd_guard_stats st;
  wd_guard_stats_get(&h->g, &st);
  cr_assert_eq(st.permits_kept, 1);
  cr_assert_eq(wd_guard_deinit(&h->g), 0);
  cr_assert_eq(wd_limiter_deinit(&h->lim), 0);
  cr_assert_eq(wd_event_deinit(&h->done), 0);
  return 0;
}

Test(guard, a_permit_handed_to_abandoned_work_is_held_until_it_ends) {
  handoff h;
  memset(&h, 0, sizeof h);
  cr_assert_eq(run_virtual(kept_by_background, &h), 0);
  cr_assert_eq(h.a_rc, WD_ETIMEDOUT);
  cr_assert_eq(h.a_returned, WD_SEC);
  cr_assert_eq(h.in_use_after_a, 1, "the abandoned work still holds it");
  cr_assert_eq(h.b_started, 5 * WD_SEC, "B got it at %lld",
               (long long)h.b_started);
  assert_no_leaks();
}

/* The same with a thread of the caller's: the thread finishes when the
 * test lets it, and gives the permit back through wd_runtime_post(). */
typedef struct threaded {
  wd_guard g;
  wd_limiter lim;
  wd_runtime *rt;
  sem_t go;
  pthread_t th;
  bool released, b_saw_released;
  int b_rc;
} threaded;

static void release_posted(wd_runtime *rt, void *arg) {
  threaded *t = arg;
  t->released = true;
  cr_assert_eq(wd_limiter_release(&t->lim), 0);
}

static void *thread_work(void *arg) {
  threaded *t = arg;
  while (sem_wait(&t->go) != 0) {
  }
  cr_assert_eq(wd_runtime_post(t->rt, release_posted, t), 0);
  return NULL;
}

static int start_thread(wd_task *self, void *arg) {
  threaded *t = arg;
  cr_assert_eq(wd_guard_keep_permit(self, &t->g), 0);
  cr_assert_eq(pthread_create(&t->th, NULL, thread_work, t), 0);
  return 0; /* the work goes on without us */
}

static int threaded_b_call(wd_task *self, void *arg) {
  threaded *t = arg;
  t->b_saw_released = t->released;
  return 0;
}

static int threaded_b(wd_task *self, void *arg) {
  threaded *t = arg;
  t->b_rc = wd_guard_call(self, &t->g, threaded_b_call, t);
  return 0;
}

static int kept_by_thread(wd_task *self, void *arg) {
  threaded *t = arg;
  t->rt = wd_task_runtime(self);
  cr_assert_eq(wd_limiter_init(&t->lim, "one", 1), 0);
  cr_assert_eq(wd_guard_init(&t->g, &(wd_guard_opts){.limiter = &t->lim}), 0);
  cr_assert_eq(wd_guard_call(self, &t->g, start_thread, t), 0);
  wd_limiter_stats st;
  wd_limiter_stats_get(&t->lim, &st);
  cr_assert_eq(st.in_use, 1, "the thread holds the permit");
  wd_group grp;
  cr_assert_eq(wd_group_enter(self, &grp, NULL), 0);
  cr_assert_eq(wd_spawn(&grp, threaded_b, t, NULL), 0);
  do {
    cr_assert_eq(wd_yield(self), 0);
    wd_limiter_stats_get(&t->lim, &st);
  } while (st.waiting == 0);
  cr_assert_eq(sem_post(&t->go), 0); /* let the thread finish */
  cr_assert_eq(wd_group_exit(self, &grp, 0), 0);
  cr_assert_eq(pthread_join(t->th, NULL), 0);
  cr_assert_eq(wd_limiter_deinit(&t->lim), 0);
  return 0;
}

Test(guard, a_permit_handed_to_a_thread_is_held_until_the_thread_ends) {
  threaded t;
  memset(&t, 0, sizeof t);
  cr_assert_eq(sem_init(&t.go, 0, 0), 0);
  wd_runtime_opts o = {.await_posts = true};
  cr_assert_eq(wd_run_with(&o, kept_by_thread, &t), 0);
  cr_assert_eq(t.b_rc, 0);
  cr_assert(t.b_saw_released, "B ran before the thread gave the permit back");
  sem_destroy(&t.go);
  assert_no_leaks();
}

static int keep_errors(wd_task *self, void *arg) {
  wd_limiter lim;
  cr_assert_eq(wd_limiter_init(&lim, "l", 1), 0);
  wd_guard none, g;
  cr_assert_eq(wd_guard_init(&none, &(wd_guard_opts){.name = "none"}), 0);
  cr_assert_eq(wd_guard_keep_permit(self, &none), WD_EINVAL);
  cr_assert_str_eq(last_msg(self),
                   "guard 'none': no limiter layer, so no permit to keep");
  cr_assert_eq(
      wd_guard_init(&g, &(wd_guard_opts){.name = "g", .limiter = &lim}), 0);
  cr_assert_eq(wd_guard_keep_permit(self, &g), WD_EINVAL);
  cr_assert(strstr(last_msg(self), "holds no permit of it here"), "%s",
            last_msg(self));
  cr_assert_eq(wd_limiter_deinit(&lim), 0);
  return 0;
}

Test(guard, keeping_a_permit_outside_a_guarded_call_is_refused) {
  cr_assert_eq(run_virtual(keep_errors, NULL), 0);
  assert_no_leaks();
}

/* ---- deinit ------------------------------------------------------------- */

typedef struct busy {
  wd_guard g;
  int deinit_rc;
} busy;

static int try_deinit(wd_task *self, void *arg) {
  busy *b = arg;
  b->deinit_rc = wd_guard_deinit(&b->g);
  return 0;
}

static int busy_deinit(wd_task *self, void *arg) {
  busy b;
  cr_assert_eq(wd_guard_init(&b.g, NULL), 0);
  cr_assert_eq(wd_guard_call(self, &b.g, try_deinit, &b), 0);
  cr_assert_eq(b.deinit_rc, WD_EBUSY);
  cr_assert_str_eq(last_msg(self), "guard 'guard': 1 call still running");
  cr_assert_eq(wd_guard_deinit(&b.g), 0);
  return 0;
}

Test(guard, deinit_refuses_while_calls_run) {
  cr_assert_eq(run_virtual(busy_deinit, NULL), 0);
  assert_no_leaks();
}
