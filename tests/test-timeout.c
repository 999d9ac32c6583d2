/* wd_timeout_call: a deadline around one call, on the virtual clock.
 *
 * The call is a small configurable body (sleep this long, then return
 * this), and each test checks the code, the message and the exact time at
 * which wd_timeout_call() returned. */
#include <string.h>

#include "helpers.h"

typedef struct body {
  wd_time sleep;   /* how long the call sleeps */
  bool shielded;   /* sleep inside a shielded scope (ignores the deadline) */
  int rc;          /* what it returns after sleeping */
  int calls;       /* how many times it ran */
  int sleep_rc;    /* what its sleep returned */
  const char *msg; /* a detailed error to record with rc, if any */
} body;

static int run_body(wd_task *self, void *arg) {
  body *b = arg;
  b->calls++;
  if (b->shielded) {
    wd_cancel_scope s;
    cr_assert_eq(
        wd_cancel_scope_enter(self, &s, &(wd_cancel_opts){.shield = true}), 0);
    b->sleep_rc = wd_sleep(self, b->sleep);
    cr_assert_eq(wd_cancel_scope_exit(self, &s, 0), 0);
  } else if (b->sleep) {
    b->sleep_rc = wd_sleep(self, b->sleep);
    if (b->sleep_rc) return b->sleep_rc;
  }
  if (b->msg) return wd_fail(self, b->rc, "%s", b->msg);
  return b->rc;
}

/* One timed call from the root task. */
typedef struct scene {
  body b;
  wd_time timeout;
  const char *what;
  wd_time outer;     /* an enclosing move_on_after, 0 = none */
  bool cancel_first; /* cancel the enclosing scope before the call */
  int rc, outer_rc;
  wd_time at;
  char msg[256];
} scene;

static int scene_main(wd_task *self, void *arg) {
  scene *sc = arg;
  wd_cancel_scope s;
  bool outer = sc->outer || sc->cancel_first;
  if (outer) cr_assert_eq(wd_move_on_after(self, &s, sc->outer), 0);
  if (sc->cancel_first) wd_cancel(&s);
  sc->rc = wd_timeout_call(self, sc->timeout, sc->what, run_body, &sc->b);
  sc->at = wd_now(self);
  const wd_error *e = wd_task_error(self);
  snprintf(sc->msg, sizeof sc->msg, "%s", e ? e->msg : "");
  if (outer) sc->outer_rc = wd_cancel_scope_exit(self, &s, sc->rc);
  return 0;
}

static void play(scene *sc) { cr_assert_eq(run_virtual(scene_main, sc), 0); }

Test(timeout, a_call_that_finishes_in_time_keeps_its_result) {
  scene sc = {.b = {.sleep = WD_SEC, .rc = 7}, .timeout = 2 * WD_SEC};
  play(&sc);
  cr_assert_eq(sc.rc, 7);
  cr_assert_eq(sc.at, WD_SEC);
  cr_assert_eq(sc.b.calls, 1);
  assert_no_leaks();
}

Test(timeout, a_slow_call_fails_at_the_deadline_with_a_message_naming_it) {
  scene sc = {.b = {.sleep = 5 * WD_SEC},
              .timeout = 2 * WD_SEC,
              .what = "Timeout updating resource 42"};
  play(&sc);
  cr_assert_eq(sc.rc, WD_ETIMEDOUT);
  cr_assert_eq(sc.at, 2 * WD_SEC, "returned at %lld", (long long)sc.at);
  cr_assert_eq(sc.b.sleep_rc, WD_ETIMEDOUT, "the call saw its checkpoint fail");
  cr_assert_str_eq(sc.msg,
                   "Timeout updating resource 42: timed out after 2.000 s");
  assert_no_leaks();
}

Test(timeout, the_deadline_edge_is_exact) {
  /* A call that needs exactly the timeout loses: the deadline fires at the
   * same instant its sleep would end, and the deadline was armed first. */
  scene at = {.b = {.sleep = WD_SEC}, .timeout = WD_SEC};
  play(&at);
  cr_assert_eq(at.rc, WD_ETIMEDOUT);
  cr_assert_eq(at.at, WD_SEC);
  /* One nanosecond more and it wins. */
  scene before = {.b = {.sleep = WD_SEC}, .timeout = WD_SEC + 1};
  play(&before);
  cr_assert_eq(before.rc, 0);
  cr_assert_eq(before.at, WD_SEC);
  assert_no_leaks();
}

Test(timeout, default_name_is_operation) {
  scene sc = {.b = {.sleep = 5 * WD_SEC}, .timeout = WD_SEC / 2};
  play(&sc);
  cr_assert_eq(sc.rc, WD_ETIMEDOUT);
  cr_assert_str_eq(sc.msg, "operation: timed out after 0.500 s");
  assert_no_leaks();
}

Test(timeout, an_outer_deadline_passes_through_to_its_own_scope) {
  /* The caller's own 1 s scope fires first: the call returns its code,
   * not the timeout's message, and the caller's scope swallows it. */
  scene sc = {.b = {.sleep = 5 * WD_SEC},
              .timeout = 3 * WD_SEC,
              .what = "inner",
              .outer = WD_SEC};
  play(&sc);
  cr_assert_eq(sc.rc, WD_ETIMEDOUT);
  cr_assert_eq(sc.at, WD_SEC);
  cr_assert_null(strstr(sc.msg, "inner"), "message: %s", sc.msg);
  cr_assert_eq(sc.outer_rc, 0, "the outer scope swallows its own deadline");
  assert_no_leaks();
}

Test(timeout, the_calls_own_failure_passes_through) {
  scene sc = {.b = {.sleep = WD_SEC, .rc = -EIO, .msg = "disk on fire"},
              .timeout = 2 * WD_SEC};
  play(&sc);
  cr_assert_eq(sc.rc, -EIO);
  cr_assert_str_eq(sc.msg, "disk on fire");
  assert_no_leaks();
}

Test(timeout, a_call_that_finishes_despite_the_deadline_keeps_its_result) {
  /* The call sleeps 3 s shielded: the 1 s deadline fires but the call
   * reaches no checkpoint it could fail, and returns 0 at 3 s. */
  scene sc = {.b = {.sleep = 3 * WD_SEC, .shielded = true}, .timeout = WD_SEC};
  play(&sc);
  cr_assert_eq(sc.rc, 0);
  cr_assert_eq(sc.at, 3 * WD_SEC);
  assert_no_leaks();
}

Test(timeout, zero_fails_at_once_without_calling) {
  scene sc = {.b = {.sleep = WD_SEC}, .timeout = 0, .what = "ping"};
  play(&sc);
  cr_assert_eq(sc.rc, WD_ETIMEDOUT);
  cr_assert_eq(sc.at, 0);
  cr_assert_eq(sc.b.calls, 0);
  cr_assert_str_eq(sc.msg, "ping: timed out after 0.000 s");
  assert_no_leaks();
}

Test(timeout, never_means_no_deadline) {
  scene sc = {.b = {.sleep = 1000 * WD_SEC, .rc = 3}, .timeout = WD_TIME_NEVER};
  play(&sc);
  cr_assert_eq(sc.rc, 3);
  cr_assert_eq(sc.at, 1000 * WD_SEC);
  assert_no_leaks();
}

Test(timeout, a_cancelled_caller_does_not_call) {
  scene sc = {.b = {.sleep = WD_SEC}, .timeout = WD_SEC, .cancel_first = true};
  play(&sc);
  cr_assert_eq(sc.rc, WD_ECANCELED);
  cr_assert_eq(sc.b.calls, 0, "a checkpoint at entry");
  cr_assert_eq(sc.outer_rc, 0);
  assert_no_leaks();
}

static int bad_args(wd_task *self, void *arg) {
  body b = {0};
  cr_assert_eq(wd_timeout_call(self, -1, "x", run_body, &b), WD_EINVAL);
  cr_assert_str_eq(wd_task_error(self)->msg, "timeout 'x': negative timeout");
  cr_assert_eq(wd_timeout_call(self, WD_SEC, "x", NULL, &b), WD_EINVAL);
  cr_assert_str_eq(wd_task_error(self)->msg, "timeout 'x': NULL function");
  cr_assert_eq(wd_timeout_call(NULL, WD_SEC, "x", run_body, &b), WD_EINVAL);
  cr_assert_eq(b.calls, 0);
  return 0;
}

Test(timeout, bad_arguments_are_einval_with_a_message) {
  cr_assert_eq(run_virtual(bad_args, NULL), 0);
  assert_no_leaks();
}

/* The one allocation a timeout may make is its scope's timer slot, taken
 * only when the runtime's timer table is full: pad the table with p
 * scopes, fail the next allocation, and for the one p where the slot must
 * grow the call is WD_ENOMEM with fn not called. */
static int padded(wd_task *self, void *arg) {
  int *pad = arg;
  body b = {.rc = 5};
  wd_cancel_scope s[80];
  for (int i = 0; i < *pad; i++)
    cr_assert_eq(wd_cancel_scope_enter(self, &s[i], NULL), 0);
  wd_alloc_fail_after(1);
  int rc = wd_timeout_call(self, WD_SEC, "x", run_body, &b);
  wd_alloc_fail_after(0);
  for (int i = *pad; i-- > 0;)
    cr_assert_eq(wd_cancel_scope_exit(self, &s[i], 0), 0);
  cr_assert(rc == 5 || rc == WD_ENOMEM, "pad %d: rc %d", *pad, rc);
  cr_assert_eq(b.calls, rc == 5, "fn called only when the scope was entered");
  *pad = rc;
  return 0;
}

Test(timeout, no_memory_for_the_timer_is_enomem_without_calling) {
  int enomem = 0;
  for (int pad = 0; pad < 80; pad++) {
    int rc = pad;
    cr_assert_eq(run_virtual(padded, &rc), 0);
    enomem += rc == WD_ENOMEM;
    assert_no_leaks();
  }
  cr_assert_eq(enomem, 1, "the timer table grew once in the padding range");
}

/* Timeouts nest: the inner, shorter one names itself; the outer one,
 * firing later, names itself. */
static int inner_call(wd_task *self, void *arg) {
  body *b = arg;
  return wd_timeout_call(self, 2 * WD_SEC, "inner", run_body, b);
}

static int nested(wd_task *self, void *arg) {
  body b = {.sleep = 5 * WD_SEC};
  int rc = wd_timeout_call(self, 3 * WD_SEC, "outer", inner_call, &b);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  cr_assert_eq(wd_now(self), 2 * WD_SEC);
  /* The outer timeout did not fire: the inner one's message stands. */
  cr_assert_str_eq(wd_task_error(self)->msg, "inner: timed out after 2.000 s");
  b = (body){.sleep = 5 * WD_SEC};
  rc = wd_timeout_call(self, WD_SEC, "outer", inner_call, &b);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  cr_assert_eq(wd_now(self), 3 * WD_SEC);
  cr_assert_str_eq(wd_task_error(self)->msg, "outer: timed out after 1.000 s");
  return 0;
}

Test(timeout, nested_timeouts_each_name_themselves) {
  cr_assert_eq(run_virtual(nested, NULL), 0);
  assert_no_leaks();
}
