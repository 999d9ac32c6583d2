/* wd_event: set wakes every waiter, clear, waiting is always a checkpoint,
 * timed waits at their deadline edge, cancellation, bad arguments, what
 * wd_dump shows. */
#include "sync-helpers.h"

typedef struct waiter {
  wd_event *ev;
  int rc;
  wd_time at;
  wd_handle h;
} waiter;

static int ev_waiter(wd_task *self, void *arg) {
  waiter *w = arg;
  w->rc = wd_event_wait(self, w->ev);
  w->at = wd_now(self);
  return 0;
}

typedef struct cast {
  wd_event ev;
  waiter w[4];
} cast;

static void spawn_waiters(wd_task *self, wd_group *g, cast *c, int n) {
  for (int i = 0; i < n; i++) {
    c->w[i] = (waiter){.ev = &c->ev, .rc = 1};
    wd_spawn(g, ev_waiter, &c->w[i], &(wd_spawn_opts){.handle = &c->w[i].h});
  }
  yield_until(self, c->ev.nwaiting_ == (size_t)n);
}

static int set_main(wd_task *self, void *arg) {
  cast *c = arg;
  wd_group g;
  cr_assert_eq(wd_event_init(&c->ev, "ready"), 0);
  cr_assert_not(wd_event_is_set(&c->ev));
  wd_group_enter(self, &g, NULL);
  spawn_waiters(self, &g, c, 4);
  cr_assert_eq(wd_event_deinit(&c->ev), WD_EBUSY);
  assert_msg_has(self, "event 'ready' has 4 waiting");
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  cr_assert_eq(wd_event_set(&c->ev), 0);
  cr_assert_eq(wd_event_clear(&c->ev), 0, "too late to take it back");
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  /* A set event lets every waiter through at once; cleared, it blocks. */
  cr_assert_eq(wd_event_set(&c->ev), 0);
  cr_assert_eq(wd_event_set(&c->ev), 0, "idempotent");
  cr_assert(wd_event_is_set(&c->ev));
  cr_assert_eq(wd_event_wait(self, &c->ev), 0);
  cr_assert_eq(wd_event_wait_for(self, &c->ev, 0), 0);
  cr_assert_eq(wd_event_clear(&c->ev), 0);
  cr_assert_eq(wd_event_wait_for(self, &c->ev, 0), WD_ETIMEDOUT);
  assert_msg_has(self, "event 'ready': not set within 0.000 s");
  return wd_event_deinit(&c->ev);
}

Test(event, set_wakes_every_waiter_and_clear_does_not_take_it_back) {
  cast c = {0};
  cr_assert_eq(run_virtual(set_main, &c), 0);
  for (int i = 0; i < 4; i++) {
    cr_assert_eq(c.w[i].rc, 0);
    cr_assert_eq(c.w[i].at, WD_SEC);
  }
  assert_no_leaks();
}

static int cancel_main(wd_task *self, void *arg) {
  cast *c = arg;
  wd_group g;
  wd_event_init(&c->ev, "ready");
  wd_group_enter(self, &g, NULL);
  spawn_waiters(self, &g, c, 3);
  wd_handle_cancel(&c->w[1].h); /* before the set: it leaves */
  cr_assert_eq(c->ev.nwaiting_, 2);
  wd_event_set(&c->ev);
  wd_handle_cancel(&c->w[2].h); /* after: it keeps its wake-up */
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  /* Waiting is a checkpoint even on a set event. */
  wd_cancel_scope s;
  wd_cancel_scope_enter(self, &s, NULL);
  wd_cancel(&s);
  cr_assert_eq(wd_event_wait(self, &c->ev), WD_ECANCELED);
  assert_msg_has(self, "event 'ready': wait cancelled");
  cr_assert_eq(wd_event_wait_for(self, &c->ev, WD_SEC), WD_ECANCELED);
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ECANCELED), 0);
  return wd_event_deinit(&c->ev);
}

Test(event, cancelled_waiters_leave_and_woken_ones_keep_their_wake_up) {
  cast c = {0};
  cr_assert_eq(run_virtual(cancel_main, &c), 0);
  cr_assert_eq(c.w[0].rc, 0);
  cr_assert_eq(c.w[1].rc, WD_ECANCELED);
  cr_assert_eq(c.w[2].rc, 0);
  assert_no_leaks();
}

/* Cancelled waiters leave the list at once but read the event (their
 * message) when they run: until they have returned, deinit must refuse,
 * or the caller could free the event under them. */
static int deinit_cancelled_main(wd_task *self, void *arg) {
  cast *c = arg;
  wd_group g;
  wd_event_init(&c->ev, "ready");
  wd_group_enter(self, &g, NULL);
  spawn_waiters(self, &g, c, 2);
  wd_handle_cancel(&c->w[0].h);
  wd_handle_cancel(&c->w[1].h);
  cr_assert_eq(c->ev.nwaiting_, 0);
  cr_assert_eq(wd_event_deinit(&c->ev), WD_EBUSY,
               "the cancelled waiters have not returned yet");
  assert_msg_has(self, "event 'ready' has 0 waiting, 2 returning");
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_event_deinit(&c->ev);
}

Test(event, deinit_waits_until_cancelled_waiters_have_returned) {
  cast c = {0};
  cr_assert_eq(run_virtual(deinit_cancelled_main, &c), 0);
  cr_assert_eq(c.w[0].rc, WD_ECANCELED);
  cr_assert_eq(c.w[1].rc, WD_ECANCELED);
  assert_no_leaks();
}

/* Already cancelled on a clear event: wd_park() refuses to park, and the
 * waiter record it had listed must leave with it - or the next set would
 * wake a record in a frame that is gone. */
static int cancelled_clear_main(wd_task *self, void *arg) {
  wd_event ev;
  wd_cancel_scope s;
  wd_event_init(&ev, "ready");
  wd_cancel_scope_enter(self, &s, NULL);
  wd_cancel(&s);
  cr_assert_eq(wd_event_wait(self, &ev), WD_ECANCELED);
  assert_msg_has(self, "event 'ready': wait cancelled");
  cr_assert_eq(ev.nwaiting_, 0, "not left in the list");
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ECANCELED), 0);
  cr_assert_eq(wd_event_set(&ev), 0);
  return wd_event_deinit(&ev);
}

Test(event, a_cancelled_caller_is_not_listed_on_a_clear_event) {
  cr_assert_eq(run_virtual(cancelled_clear_main, NULL), 0);
  assert_no_leaks();
}

/* ---- timed waits at their deadline edge -------------------------------- */

typedef struct edge {
  wd_event ev;
  wd_time timeout;
  int rc;
  wd_time at;
} edge;

static int edge_setter(wd_task *self, void *arg) {
  edge *e = arg;
  cr_assert_eq(wd_sleep_until(self, WD_SEC), 0);
  return wd_event_set(&e->ev);
}

static int edge_main(wd_task *self, void *arg) {
  edge *e = arg;
  wd_group g;
  wd_event_init(&e->ev, "ready");
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, edge_setter, e, NULL);
  e->rc = wd_event_wait_for(self, &e->ev, e->timeout);
  e->at = wd_now(self);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_event_deinit(&e->ev);
}

static edge run_edge(wd_time timeout) {
  edge e = {.timeout = timeout, .rc = 1};
  cr_assert_eq(run_virtual(edge_main, &e), 0);
  assert_no_leaks();
  return e;
}

Test(event, timed_wait_just_before_the_set_times_out) {
  edge e = run_edge(WD_SEC - 1);
  cr_assert_eq(e.rc, WD_ETIMEDOUT);
  cr_assert_eq(e.at, WD_SEC - 1);
}

Test(event, timed_wait_expiring_exactly_at_the_set_times_out) {
  edge e = run_edge(WD_SEC);
  cr_assert_eq(e.rc, WD_ETIMEDOUT);
  cr_assert_eq(e.at, WD_SEC);
}

Test(event, timed_wait_just_after_the_set_returns_0) {
  edge e = run_edge(WD_SEC + 1);
  cr_assert_eq(e.rc, 0);
  cr_assert_eq(e.at, WD_SEC);
}

/* ---- bad arguments and dumps ------------------------------------------- */

static int bad_main(wd_task *self, void *arg) {
  wd_event ev, zero;
  memset(&zero, 0, sizeof zero);
  cr_assert_eq(wd_event_init(NULL, "x"), WD_EINVAL);
  wd_event_init(&ev, NULL);
  cr_assert_eq(wd_event_wait(NULL, &ev), WD_EINVAL);
  cr_assert_eq(wd_event_wait(self, NULL), WD_EINVAL);
  assert_msg_has(self, "wd_event_wait: NULL event");
  cr_assert_eq(wd_event_wait(self, &zero), WD_EINVAL);
  assert_msg_has(self, "event not initialised");
  cr_assert_eq(wd_event_wait_for(self, &ev, -1), WD_EINVAL);
  assert_msg_has(self, "negative timeout");
  cr_assert_eq(wd_event_wait_for(NULL, &ev, 1), WD_EINVAL);
  cr_assert_eq(wd_event_set(NULL), WD_EINVAL);
  cr_assert_eq(wd_event_clear(&zero), WD_EINVAL);
  cr_assert_not(wd_event_is_set(NULL));
  cr_assert_eq(wd_event_deinit(NULL), 0);
  cr_assert_eq(wd_event_deinit(&ev), 0);
  cr_assert_eq(wd_event_set(&ev), WD_EINVAL, "deinitialised");
  return 0;
}

Test(event, bad_arguments_return_einval_with_a_message) {
  cr_assert_eq(run_virtual(bad_main, NULL), 0);
  assert_no_leaks();
}

static int dump_waiter(wd_task *self, void *arg) {
  return wd_event_wait(self, arg);
}

static int dump_main(wd_task *self, void *arg) {
  char **out = arg;
  wd_event ev;
  wd_group g;
  wd_event_init(&ev, "ready");
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, dump_waiter, &ev, NULL);
  yield_until(self, ev.nwaiting_ == 1);
  *out = dump_text();
  wd_event_set(&ev);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_event_deinit(&ev);
}

Test(event, dump_shows_a_task_waiting_on_the_event_by_name) {
  char *text = NULL;
  cr_assert_eq(run_virtual(dump_main, &text), 0);
  cr_assert_not_null(strstr(text, " on event 'ready', created"), "%s", text);
  free(text);
  assert_no_leaks();
}
