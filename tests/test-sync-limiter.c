/* wd_limiter: the cap holds under load, statistics are exact on the
 * virtual clock, FIFO order, raising and lowering the cap, permits
 * released by another task, timed acquisition at its deadline edge,
 * cancellation that loses no permit, bad arguments, wd_dump. */
#include <stdint.h>

#include "sync-helpers.h"

/* ---- the cap and the statistics ---------------------------------------- */

#define N_WORK 100
#define LIMIT 4

typedef struct load {
  wd_limiter lim;
  int inside, most;
  int arrival[N_WORK], granted[N_WORK], narrived, ngranted;
} load;

static int worker(wd_task *self, void *arg) {
  load *l = arg;
  int id = (int)wd_task_id(self);
  l->arrival[l->narrived++] = id;
  cr_assert_eq(wd_limiter_acquire(self, &l->lim), 0);
  l->granted[l->ngranted++] = id;
  if (++l->inside > l->most) l->most = l->inside;
  cr_assert_eq(wd_sleep(self, 10 * WD_MSEC), 0);
  l->inside--;
  return wd_limiter_release(&l->lim);
}

static int load_main(wd_task *self, void *arg) {
  load *l = arg;
  wd_group g;
  cr_assert_eq(wd_limiter_init(&l->lim, "db", LIMIT), 0);
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < N_WORK; i++)
    wd_spawn(&g, worker, l, NULL);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  wd_limiter_stats st;
  wd_limiter_stats_get(&l->lim, &st);
  cr_assert_eq(st.limit, LIMIT);
  cr_assert_eq(st.in_use, 0);
  cr_assert_eq(st.waiting, 0);
  cr_assert_eq(st.peak, LIMIT);
  cr_assert_eq(st.acquired, N_WORK);
  cr_assert_eq(st.waited, N_WORK - LIMIT);
  cr_assert_eq(st.gave_up, 0);
  /* All arrive at 0; batch b (of 4) starts at 10 ms * b.  Waiting time:
   * sum over the waiters of 10 ms * (i / 4). */
  wd_time want = 0;
  for (int i = LIMIT; i < N_WORK; i++)
    want += (wd_time)(i / LIMIT) * 10 * WD_MSEC;
  cr_assert_eq(st.wait_total, want, "total wait %lld ns, want %lld",
               (long long)st.wait_total, (long long)want);
  cr_assert_eq(st.wait_max, (N_WORK / LIMIT - 1) * 10 * WD_MSEC);
  cr_assert_eq(wd_now(self), N_WORK / LIMIT * 10 * WD_MSEC);
  return wd_limiter_deinit(&l->lim);
}

Test(limiter, the_cap_holds_permits_go_in_arrival_order_stats_are_exact) {
  static load l;
  cr_assert_eq(run_virtual(load_main, &l), 0);
  cr_assert_eq(l.most, LIMIT);
  for (int i = 0; i < N_WORK; i++)
    cr_assert_eq(l.granted[i], l.arrival[i]);
  assert_no_leaks();
}

/* ---- the cap moves; permits cross tasks -------------------------------- */

typedef struct moving {
  wd_limiter lim;
  int got;
} moving;

static int taker(wd_task *self, void *arg) {
  moving *m = arg;
  cr_assert_eq(wd_limiter_acquire(self, &m->lim), 0);
  m->got++;
  return 0; /* the permit is released by the root: work handed over */
}

static int moving_main(wd_task *self, void *arg) {
  moving *m = arg;
  wd_group g;
  wd_limiter_stats st;
  wd_limiter_init(&m->lim, "db", 2);
  cr_assert_eq(wd_limiter_acquire_try(&m->lim), 0);
  cr_assert_eq(wd_limiter_acquire_try(&m->lim), 0);
  cr_assert_eq(wd_limiter_acquire_try(&m->lim), WD_EAGAIN);
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < 4; i++)
    wd_spawn(&g, taker, m, NULL);
  yield_until(self, m->lim.nwaiting_ == 4);
  cr_assert_eq(wd_limiter_set_limit(&m->lim, 4), 0); /* two go in */
  cr_assert_eq(m->lim.nwaiting_, 2);
  cr_assert_eq(wd_limiter_set_limit(&m->lim, 1), 0); /* none taken back */
  wd_limiter_stats_get(&m->lim, &st);
  cr_assert_eq(st.in_use, 4);
  cr_assert_eq(wd_limiter_release(&m->lim), 0);
  cr_assert_eq(wd_limiter_release(&m->lim), 0);
  cr_assert_eq(wd_limiter_release(&m->lim), 0);
  cr_assert_eq(m->lim.nwaiting_, 2, "still 1 out: the cap of 1 is full");
  cr_assert_eq(wd_limiter_deinit(&m->lim), WD_EBUSY);
  assert_msg_has(self, "limiter 'db' has 1 permits out and 2 waiting");
  cr_assert_eq(wd_limiter_release(&m->lim), 0); /* one goes in */
  cr_assert_eq(m->lim.nwaiting_, 1);
  cr_assert_eq(wd_limiter_release(&m->lim), 0); /* the last goes in */
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(m->got, 4);
  cr_assert_eq(wd_limiter_release(&m->lim), 0);
  cr_assert_eq(wd_limiter_release(&m->lim), WD_EPERM);
  assert_msg_has(self, "limiter 'db' has no permit out (released more than "
                       "acquired)");
  wd_limiter_stats_get(&m->lim, &st);
  cr_assert_eq(st.refused, 1);
  cr_assert_eq(st.peak, 4);
  return wd_limiter_deinit(&m->lim);
}

Test(limiter, raising_the_cap_serves_waiters_lowering_it_takes_nothing_back) {
  moving m = {0};
  cr_assert_eq(run_virtual(moving_main, &m), 0);
  assert_no_leaks();
}

/* ---- cancellation ------------------------------------------------------ */

typedef struct waiter {
  wd_limiter *lim;
  int rc;
  wd_handle h;
} waiter;

static int lim_waiter(wd_task *self, void *arg) {
  waiter *w = arg;
  w->rc = wd_limiter_acquire(self, w->lim);
  if (w->rc == 0) wd_limiter_release(w->lim);
  return 0;
}

static int cancel_main(wd_task *self, void *arg) {
  waiter *w = arg;
  wd_limiter lim;
  wd_group g;
  wd_limiter_init(&lim, "db", 1);
  wd_limiter_acquire(self, &lim);
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < 3; i++) {
    w[i] = (waiter){.lim = &lim, .rc = 1};
    wd_spawn(&g, lim_waiter, &w[i], &(wd_spawn_opts){.handle = &w[i].h});
  }
  yield_until(self, lim.nwaiting_ == 3);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_handle_cancel(&w[0].h); /* queued: leaves */
  wd_limiter_release(&lim);  /* to w[1] */
  wd_handle_cancel(&w[1].h); /* handed: keeps it */
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  wd_limiter_stats st;
  wd_limiter_stats_get(&lim, &st);
  cr_assert_eq(st.in_use, 0, "every permit came back");
  cr_assert_eq(st.gave_up, 1);
  cr_assert_eq(st.waited, 2);
  cr_assert_eq(st.wait_total, 3 * WD_SEC, "the one who gave up counts too");
  return wd_limiter_deinit(&lim);
}

Test(limiter, a_cancelled_waiter_leaves_and_a_served_one_keeps_its_permit) {
  waiter w[3];
  cr_assert_eq(run_virtual(cancel_main, w), 0);
  cr_assert_eq(w[0].rc, WD_ECANCELED);
  cr_assert_eq(w[1].rc, 0);
  cr_assert_eq(w[2].rc, 0);
  assert_no_leaks();
}

/* A cancelled waiter leaves the queue at once, but when it runs it still
 * writes the limiter's statistics: until it has returned, deinit must
 * refuse, or the caller could free the limiter under it. */
static int deinit_cancelled_main(wd_task *self, void *arg) {
  waiter *w = arg;
  wd_limiter lim;
  wd_group g;
  wd_limiter_init(&lim, "db", 1);
  wd_limiter_acquire(self, &lim);
  wd_group_enter(self, &g, NULL);
  w[0] = (waiter){.lim = &lim, .rc = 1};
  wd_spawn(&g, lim_waiter, &w[0], &(wd_spawn_opts){.handle = &w[0].h});
  yield_until(self, lim.nwaiting_ == 1);
  wd_handle_cancel(&w[0].h);
  cr_assert_eq(wd_limiter_release(&lim), 0);
  cr_assert_eq(wd_limiter_deinit(&lim), WD_EBUSY,
               "the cancelled waiter has not returned yet");
  assert_msg_has(self, "limiter 'db' has 0 permits out and 0 waiting, 1 "
                       "returning from a wait");
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  wd_limiter_stats st;
  wd_limiter_stats_get(&lim, &st);
  cr_assert_eq(st.gave_up, 1);
  return wd_limiter_deinit(&lim);
}

Test(limiter, deinit_waits_until_a_cancelled_waiter_has_returned) {
  waiter w[1];
  cr_assert_eq(run_virtual(deinit_cancelled_main, w), 0);
  cr_assert_eq(w[0].rc, WD_ECANCELED);
  assert_no_leaks();
}

/* Already cancelled and every permit out: wd_park() refuses to park, and
 * the waiter record it had queued must leave with it - or the next release
 * would hand its permit to a record in a frame that is gone. */
static int cancelled_full_main(wd_task *self, void *arg) {
  wd_limiter lim;
  wd_cancel_scope s;
  wd_limiter_stats st;
  wd_limiter_init(&lim, "db", 1);
  cr_assert_eq(wd_limiter_acquire_try(&lim), 0);
  wd_cancel_scope_enter(self, &s, NULL);
  wd_cancel(&s);
  cr_assert_eq(wd_limiter_acquire(self, &lim), WD_ECANCELED);
  assert_msg_has(self, "limiter 'db': acquire cancelled");
  wd_limiter_stats_get(&lim, &st);
  cr_assert_eq(st.waiting, 0, "not left in the queue");
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ECANCELED), 0);
  cr_assert_eq(wd_limiter_release(&lim), 0);
  wd_limiter_stats_get(&lim, &st);
  cr_assert_eq(st.in_use, 0, "the permit was not handed to it");
  return wd_limiter_deinit(&lim);
}

Test(limiter, a_cancelled_caller_is_not_queued_when_every_permit_is_out) {
  cr_assert_eq(run_virtual(cancelled_full_main, NULL), 0);
  assert_no_leaks();
}

/* ---- timed acquisition at its deadline edge ---------------------------- */

typedef struct edge {
  wd_limiter lim;
  wd_time timeout;
  int rc;
  wd_time at;
  char msg[200];
} edge;

static int edge_releaser(wd_task *self, void *arg) {
  edge *e = arg;
  cr_assert_eq(wd_sleep_until(self, WD_SEC), 0);
  return wd_limiter_release(&e->lim);
}

static int edge_main(wd_task *self, void *arg) {
  edge *e = arg;
  wd_group g;
  wd_limiter_init(&e->lim, "db", 1);
  wd_limiter_acquire(self, &e->lim); /* the releaser gives it back */
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, edge_releaser, e, NULL);
  e->rc = wd_limiter_acquire_for(self, &e->lim, e->timeout);
  e->at = wd_now(self);
  snprintf(e->msg, sizeof e->msg, "%s", last_msg(self));
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  if (e->rc == 0) wd_limiter_release(&e->lim);
  return wd_limiter_deinit(&e->lim);
}

static edge run_edge(wd_time timeout) {
  edge e = {.timeout = timeout, .rc = 1};
  cr_assert_eq(run_virtual(edge_main, &e), 0);
  assert_no_leaks();
  return e;
}

Test(limiter, timed_acquire_just_before_the_release_times_out) {
  edge e = run_edge(WD_SEC - 1);
  cr_assert_eq(e.rc, WD_ETIMEDOUT);
  cr_assert_eq(e.at, WD_SEC - 1);
  cr_assert_str_eq(e.msg, "limiter 'db': no permit within 1.000 s (1/1 in "
                          "use, 0 more waiting)");
}

Test(limiter, timed_acquire_expiring_exactly_at_the_release_times_out) {
  edge e = run_edge(WD_SEC);
  cr_assert_eq(e.rc, WD_ETIMEDOUT);
  cr_assert_eq(e.at, WD_SEC);
}

Test(limiter, timed_acquire_just_after_the_release_gets_the_permit) {
  edge e = run_edge(WD_SEC + 1);
  cr_assert_eq(e.rc, 0);
  cr_assert_eq(e.at, WD_SEC);
}

/* ---- bad arguments and dumps ------------------------------------------- */

static int bad_main(wd_task *self, void *arg) {
  wd_limiter lim, zero;
  memset(&zero, 0, sizeof zero);
  cr_assert_eq(wd_limiter_init(NULL, "x", 1), WD_EINVAL);
  cr_assert_eq(wd_limiter_init(&lim, "db", 0), WD_EINVAL);
  assert_msg_has(self, "limiter 'db': limit is 0");
  cr_assert_eq(wd_limiter_init(&lim, NULL, 1), 0);
  cr_assert_eq(wd_limiter_acquire(NULL, &lim), WD_EINVAL);
  cr_assert_eq(wd_limiter_acquire(self, NULL), WD_EINVAL);
  assert_msg_has(self, "wd_limiter_acquire: NULL limiter");
  cr_assert_eq(wd_limiter_acquire(self, &zero), WD_EINVAL);
  assert_msg_has(self, "limiter not initialised");
  cr_assert_eq(wd_limiter_acquire_for(self, &lim, -1), WD_EINVAL);
  cr_assert_eq(wd_limiter_acquire_try(NULL), WD_EINVAL);
  cr_assert_eq(wd_limiter_release(&zero), WD_EINVAL);
  cr_assert_eq(wd_limiter_release(&lim), WD_EPERM);
  cr_assert_eq(wd_limiter_set_limit(&lim, 0), WD_EINVAL);
  cr_assert_eq(wd_limiter_set_limit(NULL, 3), WD_EINVAL);
  cr_assert_eq(wd_limiter_deinit(NULL), 0);
  cr_assert_eq(wd_limiter_deinit(&zero), WD_EINVAL);
  wd_limiter_stats_get(NULL, NULL);
  wd_cancel_scope s;
  wd_cancel_scope_enter(self, &s, NULL);
  wd_cancel(&s);
  cr_assert_eq(wd_limiter_acquire(self, &lim), WD_ECANCELED);
  assert_msg_has(self, "limiter: acquire cancelled");
  cr_assert_eq(lim.in_use_, 0, "nothing taken");
  wd_cancel_scope_exit(self, &s, 0);
  cr_assert_eq(wd_limiter_deinit(&lim), 0);
  cr_assert_eq(wd_limiter_acquire(self, &lim), WD_EINVAL, "deinitialised");
  return 0;
}

Test(limiter, bad_arguments_return_clear_codes_with_a_message) {
  cr_assert_eq(run_virtual(bad_main, NULL), 0);
  assert_no_leaks();
}

static int dump_waiter(wd_task *self, void *arg) {
  int rc = wd_limiter_acquire(self, arg);
  if (!rc) wd_limiter_release(arg);
  return rc;
}

static int dump_main(wd_task *self, void *arg) {
  wd_limiter lim;
  wd_group g;
  wd_limiter_init(&lim, "db", 1);
  wd_limiter_acquire(self, &lim);
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, dump_waiter, &lim, NULL);
  yield_until(self, lim.nwaiting_ == 1);
  char *text = dump_text();
  cr_assert_not_null(strstr(text, " on limiter 'db', created"), "%s", text);
  free(text);
  wd_limiter_release(&lim);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_limiter_deinit(&lim);
}

Test(limiter, dump_shows_a_task_waiting_on_the_limiter_by_name) {
  cr_assert_eq(run_virtual(dump_main, NULL), 0);
  assert_no_leaks();
}
