/* wd_pool: lending and returning, warm-up, FIFO fairness under load (1000
 * tasks on 8 items), the acquire timeout and its message, cancellation
 * while waiting and after being served, fail fast while the backend is
 * down and recovery when it comes back, a factory failing half its
 * creates, broken items, close with items in use and tasks waiting,
 * statistics, the registry and the dump, and bad arguments.
 *
 * The factory is the fake backend of test-pool.h.  Everything runs on the
 * virtual clock, so every time below is exact. */
#include "test-pool.h"

/* ---- lending and returning ------------------------------------------------
 */

static int basic_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .max_size = 4,
                                            .min_idle = 2}),
               0);
  /* Warm-up: min_idle items made before open returns. */
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(be->creates, 2);
  cr_assert_eq(st.idle, 2);
  cr_assert_eq(st.size, 2);
  cr_assert_str_eq(st.name, "pg");
  cr_assert_str_eq(wd_pool_name(p), "pg");

  conn *a, *b;
  cr_assert_eq(borrow(self, p, &a), 0);
  cr_assert_eq(borrow(self, p, &b), 0);
  cr_assert_neq(a, b);
  st = stats_of(p);
  cr_assert_eq(st.in_use, 2);
  cr_assert_eq(st.acquires, 2);
  cr_assert_eq(st.waited, 0);
  give_back(self, p, b, WD_POOL_OK);
  give_back(self, p, a, WD_POOL_OK);
  /* LIFO: the item returned last is lent first. */
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  cr_assert_eq(c, a);
  give_back(self, p, c, WD_POOL_OK);
  st = stats_of(p);
  cr_assert_eq(st.releases, 3);
  cr_assert_eq(st.in_use, 0);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool, lends_returns_and_warms_up) {
  backend be = {0};
  cr_assert_eq(run_virtual(basic_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

/* ---- 1000 tasks on 8 items: FIFO, never two holders -------------------------
 */

#define NTASKS 1000

typedef struct fair {
  backend be;
  wd_pool *p;
  int arrived, served;
  int order[NTASKS]; /* order[k]: the arrival number of the k-th served */
  int holding, most_holding;
} fair;

typedef struct fair_task {
  fair *f;
  int i;
} fair_task;

static int fair_borrower(wd_task *self, void *arg) {
  fair_task *t = arg;
  fair *f = t->f;
  int arrival = f->arrived++;
  conn *c;
  cr_assert_eq(borrow(self, f->p, &c), 0, "task %d: %s", t->i, last_msg(self));
  f->order[f->served++] = arrival;
  if (++f->holding > f->most_holding) f->most_holding = f->holding;
  /* Hold it for a while (1 to 3 ms), others queue meanwhile. */
  cr_assert_eq(wd_sleep(self, (1 + t->i % 3) * WD_MSEC), 0);
  f->holding--;
  give_back(self, f->p, c, WD_POOL_OK);
  return 0;
}

static int fair_main(wd_task *self, void *arg) {
  fair *f = arg;
  cr_assert_eq(wd_pool_open(self, &f->p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = &f->be,
                                            .max_size = 8,
                                            .acquire_timeout = WD_TIME_NEVER,
                                            .timing_sample = 1}),
               0);
  static fair_task ts[NTASKS];
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < NTASKS; i++) {
    ts[i] = (fair_task){f, i};
    cr_assert_eq(wd_spawn(&g, fair_borrower, &ts[i], NULL), 0);
  }
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  wd_pool_stats st = stats_of(f->p);
  cr_assert_eq(st.acquires, NTASKS);
  cr_assert_eq(st.releases, NTASKS);
  cr_assert_eq(st.creates, 8, "never more than max_size items");
  cr_assert_eq(st.peak_in_use, 8);
  cr_assert_geq(st.peak_waiting, NTASKS - 8);
  cr_assert_eq(st.wait_time.count, NTASKS, "every acquire timed");
  cr_assert_gt(st.wait_time.p99, 100 * WD_MSEC, "the last ones waited long");
  cr_assert_eq(st.hold_time.min, WD_MSEC);
  cr_assert_eq(st.hold_time.max, 3 * WD_MSEC);
  cr_assert_eq(wd_pool_close(self, f->p), 0);
  return 0;
}

Test(pool, a_thousand_tasks_on_eight_items_are_served_in_arrival_order) {
  static fair f;
  memset(&f, 0, sizeof f);
  cr_assert_eq(run_virtual(fair_main, &f), 0);
  cr_assert_eq(f.served, NTASKS);
  for (int k = 0; k < NTASKS; k++)
    cr_assert_eq(f.order[k], k, "the %d-th served arrived %d-th", k,
                 f.order[k]);
  cr_assert_eq(f.most_holding, 8);
  cr_assert_eq(f.be.most_live, 8);
  assert_backend_clean(&f.be);
  assert_no_leaks();
}

/* ---- the acquire timeout
 * -----------------------------------------------------
 */

typedef struct waiting {
  wd_pool *p;
  int rc;
  wd_time at;
  char msg[512];
  conn *c;
  bool release; /* give back at once */
} waiting;

static int waiter_task(wd_task *self, void *arg) {
  waiting *w = arg;
  w->rc = borrow(self, w->p, &w->c);
  w->at = wd_now(self);
  snprintf(w->msg, sizeof w->msg, "%s", w->rc ? last_msg(self) : "");
  if (w->rc == 0 && w->release) give_back(self, w->p, w->c, WD_POOL_OK);
  return 0;
}

typedef struct timeout_case {
  backend be;
  waiting w[12];
} timeout_case;

static int timeout_main(wd_task *self, void *arg) {
  timeout_case *tc = arg;
  tc->be.fail_first = 1; /* the first create is refused */
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = &tc->be,
                                            .max_size = 8,
                                            .acquire_timeout = 5 * WD_SEC}),
               0);
  conn *held[8];
  for (int i = 0; i < 8; i++)
    cr_assert_eq(borrow(self, p, &held[i]), 0);
  cr_assert_eq(tc->be.create_calls, 9, "one refused, eight made");
  wd_time t0 = wd_now(self);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < 12; i++) {
    tc->w[i].p = p;
    cr_assert_eq(wd_spawn(&g, waiter_task, &tc->w[i], NULL), 0);
  }
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  for (int i = 0; i < 12; i++) {
    cr_assert_eq(tc->w[i].rc, WD_ETIMEDOUT);
    cr_assert_eq(tc->w[i].at - t0, 5 * WD_SEC);
  }
  cr_assert_str_eq(tc->w[0].msg,
                   "pool 'pg': no item within 5.000 s \xe2\x80\x94 8/8 in use, "
                   "12 waiting, last create error: connection refused");
  cr_assert_str_eq(tc->w[11].msg,
                   "pool 'pg': no item within 5.000 s \xe2\x80\x94 8/8 in use, "
                   "1 waiting, last create error: connection refused");
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.timeouts, 12);
  cr_assert_eq(st.waiting, 0);
  cr_assert_eq(st.in_use, 8);
  for (int i = 0; i < 8; i++)
    give_back(self, p, held[i], WD_POOL_OK);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool, the_acquire_timeout_says_what_the_pool_looked_like) {
  static timeout_case tc;
  memset(&tc, 0, sizeof tc);
  cr_assert_eq(run_virtual(timeout_main, &tc), 0);
  assert_backend_clean(&tc.be);
  assert_no_leaks();
}

static int never_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .max_size = 1,
                                            .acquire_timeout = WD_TIME_NEVER}),
               0);
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  /* No pool timeout: the caller's own scope bounds the wait. */
  wd_cancel_scope s;
  cr_assert_eq(wd_fail_after(self, &s, 42 * WD_SEC, "query"), 0);
  conn *d;
  int rc = borrow(self, p, &d);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  cr_assert_str_eq(last_msg(self), "pool 'pg': acquire stopped by a deadline");
  cr_assert_eq(wd_cancel_scope_exit(self, &s, rc), WD_ETIMEDOUT);
  cr_assert_eq(wd_now(self), 42 * WD_SEC);
  give_back(self, p, c, WD_POOL_OK);
  cr_assert_eq(stats_of(p).timeouts, 1);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool, without_an_acquire_timeout_the_callers_scopes_bound_the_wait) {
  backend be = {0};
  cr_assert_eq(run_virtual(never_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

/* ---- cancellation
 * ------------------------------------------------------------
 */

static int cancel_wait_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .max_size = 1}),
               0);
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  waiting w[3] = {{.p = p, .release = true},
                  {.p = p, .release = true},
                  {.p = p, .release = true}};
  wd_handle h[3];
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(
        wd_spawn(&g, waiter_task, &w[i], &(wd_spawn_opts){.handle = &h[i]}), 0);
  cr_assert_eq(wd_sleep(self, WD_MSEC), 0);
  cr_assert_eq(stats_of(p).waiting, 3);
  /* The first waiter gives up: it leaves the queue with nothing. */
  wd_handle_cancel(&h[0]);
  cr_assert_eq(wd_yield(self), 0);
  cr_assert_eq(w[0].rc, WD_ECANCELED);
  cr_assert_str_eq(w[0].msg, "pool 'pg': acquire cancelled");
  cr_assert_eq(stats_of(p).waiting, 2);
  /* The item goes to the next one in line, then the last. */
  give_back(self, p, c, WD_POOL_OK);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(w[1].rc, 0);
  cr_assert_eq(w[2].rc, 0);
  cr_assert_eq(w[1].c, c);
  cr_assert_eq(w[2].c, c);
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.cancelled, 1);
  cr_assert_eq(st.acquires, 3);
  cr_assert_eq(st.idle, 1);
  cr_assert_eq(st.creates, 1);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool, a_waiter_cancelled_leaves_the_queue_and_loses_nothing) {
  backend be = {0};
  cr_assert_eq(run_virtual(cancel_wait_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

/* Served and cancelled in the same turn: the hand-off happened, so the
 * acquire returns the item; the next checkpoint sees the cancellation. */
typedef struct served {
  wd_pool *p;
  wd_cancel_scope s;
  bool entered;
  int rc, next_rc;
  conn *c;
} served;

static int served_task(wd_task *self, void *arg) {
  served *sv = arg;
  cr_assert_eq(wd_cancel_scope_enter(self, &sv->s, NULL), 0);
  sv->entered = true;
  sv->rc = borrow(self, sv->p, &sv->c);
  sv->next_rc = wd_yield(self);
  if (sv->rc == 0) give_back(self, sv->p, sv->c, WD_POOL_OK);
  wd_cancel_scope_exit(self, &sv->s, sv->next_rc);
  return 0;
}

static int served_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .max_size = 1}),
               0);
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  served sv = {.p = p};
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, served_task, &sv, NULL), 0);
  cr_assert_eq(wd_yield(self), 0);
  cr_assert(sv.entered);
  give_back(self, p, c, WD_POOL_OK); /* handed to sv, woken */
  wd_cancel(&sv.s);                  /* and cancelled before it runs */
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(sv.rc, 0, "it was handed the item: %s", wd_strerror(sv.rc));
  cr_assert_eq(sv.c, c);
  cr_assert_eq(sv.next_rc, WD_ECANCELED);
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.idle, 1);
  cr_assert_eq(st.cancelled, 0);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool, a_waiter_served_then_cancelled_keeps_the_item) {
  backend be = {0};
  cr_assert_eq(run_virtual(served_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

static int precancelled_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .min_idle = 1}),
               0);
  wd_cancel_scope s;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  wd_cancel(&s);
  void *item = (void *)1;
  cr_assert_eq(wd_pool_acquire(self, p, &item), WD_ECANCELED);
  cr_assert_null(item);
  cr_assert_str_eq(last_msg(self), "pool 'pg': acquire cancelled");
  wd_cancel_scope_exit(self, &s, WD_ECANCELED);
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.acquires, 0, "a cancelled acquire is not made");
  cr_assert_eq(st.idle, 1);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool, an_acquire_by_a_cancelled_caller_is_not_made) {
  backend be = {0};
  cr_assert_eq(run_virtual(precancelled_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

/* ---- fail fast, back-off, recovery
 * -------------------------------------------
 */

typedef struct outage {
  backend be;
  wd_time failed_at, second_at, recovered_at;
  int rc1, rc2;
  char msg1[512], msg2[512];
} outage;

static int outage_main(wd_task *self, void *arg) {
  outage *o = arg;
  o->be.down = true;
  o->be.create_time = 10 * WD_MSEC;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = &o->be,
                                            .max_size = 4,
                                            .acquire_timeout = 30 * WD_SEC,
                                            .backoff_min = 100 * WD_MSEC,
                                            .backoff_max = 400 * WD_MSEC,
                                            .seed = 7}),
               0);
  conn *c;
  /* Three attempts fail (10 ms each, back-offs in [50, 100] and [100,
   * 200] ms): then the pool is down and the waiter gets the create's error,
   * long before its 30 s. */
  o->rc1 = borrow(self, p, &c);
  o->failed_at = wd_now(self);
  snprintf(o->msg1, sizeof o->msg1, "%s", last_msg(self));
  cr_assert_eq(o->rc1, -ECONNREFUSED, "%s", o->msg1);
  cr_assert_eq(o->be.create_calls, 3);
  cr_assert_geq(o->failed_at, 30 * WD_MSEC + 150 * WD_MSEC);
  cr_assert_leq(o->failed_at, 30 * WD_MSEC + 300 * WD_MSEC);
  wd_pool_stats st = stats_of(p);
  cr_assert(st.down);
  cr_assert_eq(st.create_failures, 3);
  cr_assert_eq(st.last_create_code, -ECONNREFUSED);
  cr_assert_str_eq(st.last_create_error, "connection refused");
  /* While down, an acquire fails at once. */
  o->rc2 = borrow(self, p, &c);
  o->second_at = wd_now(self);
  snprintf(o->msg2, sizeof o->msg2, "%s", last_msg(self));
  cr_assert_eq(o->rc2, -ECONNREFUSED);
  cr_assert_eq(o->second_at, o->failed_at, "no wait while down");
  cr_assert_eq(stats_of(p).failed_fast, 2);
  /* The pool keeps trying in the background, with back-off. */
  cr_assert_eq(wd_sleep(self, 2 * WD_SEC), 0);
  int tries = o->be.create_calls;
  cr_assert_gt(tries, 4);
  cr_assert_lt(tries, 3 + 2 * WD_SEC / (200 * WD_MSEC) + 2, "backed off");
  /* The backend comes back: the next attempt brings the pool up. */
  o->be.down = false;
  cr_assert_eq(wd_sleep(self, 500 * WD_MSEC), 0);
  st = stats_of(p);
  cr_assert(!st.down);
  cr_assert_eq(st.create_failures, 0);
  cr_assert_eq(st.idle, 1, "the probe's item waits, idle");
  cr_assert_eq(borrow(self, p, &c), 0);
  o->recovered_at = wd_now(self);
  give_back(self, p, c, WD_POOL_OK);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool, fails_fast_while_the_backend_is_down_and_recovers_by_itself) {
  static outage o;
  memset(&o, 0, sizeof o);
  cr_assert_eq(run_virtual(outage_main, &o), 0);
  cr_assert_not_null(strstr(o.msg1, "pool 'pg': cannot create an item"), "%s",
                     o.msg1);
  cr_assert_not_null(
      strstr(o.msg1, "3 attempts failed in a row, last: connection refused"),
      "%s", o.msg1);
  cr_assert_not_null(strstr(o.msg2, "next attempt in"), "%s", o.msg2);
  assert_backend_clean(&o.be);
  assert_no_leaks();
}

/* Several waiters when the pool goes down: all get the create's error at
 * the same moment, and the next acquire fails at once too. */
typedef struct crowd {
  backend be;
  wd_pool *p;
  waiting w[5];
} crowd;

static int crowd_main(wd_task *self, void *arg) {
  crowd *c = arg;
  c->be.down = true;
  c->be.create_time = 10 * WD_MSEC;
  cr_assert_eq(wd_pool_open(self, &c->p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = &c->be,
                                            .max_size = 4,
                                            .fail_after = 2,
                                            .seed = 3}),
               0);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < 5; i++) {
    c->w[i].p = c->p;
    cr_assert_eq(wd_spawn(&g, waiter_task, &c->w[i], NULL), 0);
  }
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(c->w[i].rc, -ECONNREFUSED, "%d: %s", i, c->w[i].msg);
    cr_assert_eq(c->w[i].at, c->w[0].at, "together");
    /* Four creates started together (one per waiter, up to max_size),
     * and the pool was down once the last of them failed. */
    cr_assert_not_null(strstr(c->w[i].msg, "4 attempts failed in a row"), "%s",
                       c->w[i].msg);
  }
  cr_assert_lt(c->w[0].at, WD_SEC, "long before the 30 s timeout");
  cr_assert_eq(c->w[0].at, 10 * WD_MSEC);
  cr_assert_eq(c->be.create_calls, 4);
  wd_pool_stats st = stats_of(c->p);
  cr_assert_eq(st.failed_fast, 5);
  cr_assert_eq(st.waiting, 0);
  cr_assert_eq(wd_pool_close(self, c->p), 0);
  return 0;
}

Test(pool, every_waiter_fails_fast_when_the_pool_goes_down) {
  static crowd c;
  memset(&c, 0, sizeof c);
  cr_assert_eq(run_virtual(crowd_main, &c), 0);
  assert_backend_clean(&c.be);
  assert_no_leaks();
}

/* Every other create fails: the pool retries and serves everyone. */
typedef struct flaky {
  backend be;
  wd_pool *p;
  int ok, failed;
} flaky;

static int flaky_borrower(wd_task *self, void *arg) {
  flaky *f = arg;
  conn *c;
  int rc = borrow(self, f->p, &c);
  if (rc) {
    f->failed++;
    return 0;
  }
  f->ok++;
  cr_assert_eq(wd_sleep(self, 5 * WD_MSEC), 0);
  give_back(self, f->p, c, WD_POOL_OK);
  return 0;
}

static int flaky_main(wd_task *self, void *arg) {
  flaky *f = arg;
  f->be.fail_every = 2;
  f->be.create_time = WD_MSEC;
  cr_assert_eq(wd_pool_open(self, &f->p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = &f->be,
                                            .max_size = 8,
                                            .max_uses = 3}),
               0);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < 100; i++)
    cr_assert_eq(wd_spawn(&g, flaky_borrower, f, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  wd_pool_stats st = stats_of(f->p);
  cr_assert_eq(f->ok, 100, "%d failed", f->failed);
  cr_assert_eq(st.acquires, 100);
  cr_assert_geq(st.create_errors, st.creates - 1);
  cr_assert_leq(st.create_errors, st.creates);
  cr_assert_eq(st.creates, (uint64_t)f->be.creates);
  cr_assert_eq(st.worn_out + st.size, st.creates);
  cr_assert_leq(f->be.most_live, 8);
  cr_assert_eq(wd_pool_close(self, f->p), 0);
  return 0;
}

Test(pool, a_factory_failing_half_its_creates_still_serves_everyone) {
  static flaky f;
  memset(&f, 0, sizeof f);
  cr_assert_eq(run_virtual(flaky_main, &f), 0);
  assert_backend_clean(&f.be);
  assert_no_leaks();
}

/* ---- broken items
 * --------------------------------------------------------------
 */

static int broken_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .max_size = 3,
                                            .min_idle = 2}),
               0);
  conn *a, *b;
  cr_assert_eq(borrow(self, p, &a), 0);
  cr_assert_eq(borrow(self, p, &b), 0);
  int id = a->id;
  give_back(self, p, a, WD_POOL_BROKEN);
  cr_assert_eq(wd_sleep(self, WD_MSEC), 0);
  /* Destroyed (its memory is gone), and replaced so that min_idle items
   * are idle again. */
  cr_assert_eq(be->destroys, 1);
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.broken, 1);
  cr_assert_eq(st.idle, 2);
  cr_assert_eq(st.in_use, 1);
  cr_assert_eq(st.size, 3);
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  cr_assert_neq(c->id, id);
  /* Marked broken, then released as OK (a scope would): destroyed too. */
  cr_assert_eq(wd_pool_mark_broken(p, c), 0);
  give_back(self, p, c, WD_POOL_OK);
  give_back(self, p, b, WD_POOL_OK);
  cr_assert_eq(wd_sleep(self, WD_MSEC), 0);
  cr_assert_eq(stats_of(p).broken, 2);
  cr_assert_eq(be->destroys, 2);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool, a_broken_item_is_destroyed_and_replaced_up_to_min_idle) {
  backend be = {0};
  cr_assert_eq(run_virtual(broken_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

/* ---- close
 * ----------------------------------------------------------------------
 */

typedef struct holder {
  wd_pool *p;
  wd_time hold;
  conn *c;
  int rc;
  wd_time released_at;
} holder;

static int holder_task(wd_task *self, void *arg) {
  holder *h = arg;
  h->rc = borrow(self, h->p, &h->c);
  if (h->rc) return 0;
  wd_sleep(self, h->hold); /* the pool's close does not cancel us */
  give_back(self, h->p, h->c, WD_POOL_OK);
  h->released_at = wd_now(self);
  return 0;
}

static int close_busy_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p;
  /* The users' group is opened first, so that the pool (a block inside
   * it) can be closed while they still run. */
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .max_size = 2,
                                            .min_idle = 2}),
               0);
  holder h = {.p = p, .hold = 2 * WD_SEC};
  waiting w[2] = {{.p = p, .release = true}, {.p = p}};
  cr_assert_eq(wd_spawn(&g, holder_task, &h, NULL), 0);
  yield_until(self, h.c != NULL);
  conn *mine;
  cr_assert_eq(borrow(self, p, &mine), 0);
  give_back(self, p, mine, WD_POOL_OK); /* one idle, one held */
  conn *other;
  cr_assert_eq(borrow(self, p, &other), 0);
  for (int i = 0; i < 2; i++)
    cr_assert_eq(wd_spawn(&g, waiter_task, &w[i], NULL), 0);
  cr_assert_eq(wd_yield(self), 0);
  cr_assert_eq(stats_of(p).waiting, 2);
  give_back(self, p, other, WD_POOL_OK); /* goes to w[0] */
  /* Close: the waiter left is refused, the idle item destroyed, and the
   * one in use awaited: it comes back at 2 s, within the drain timeout. */
  int crc = wd_pool_close(self, p);
  cr_assert_eq(crc, 0, "%s: %s", wd_err_name(crc), last_msg(self));
  cr_assert_eq(wd_now(self), 2 * WD_SEC);
  cr_assert_eq(h.released_at, 2 * WD_SEC);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(w[0].rc, 0);
  cr_assert_eq(w[1].rc, WD_ECLOSED);
  cr_assert_str_eq(w[1].msg, "pool 'pg': closed while waiting for an item");
  return 0;
}

Test(pool, close_refuses_waiters_and_waits_for_items_in_use) {
  backend be = {0};
  cr_assert_eq(run_virtual(close_busy_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

typedef struct late {
  backend be;
  holder h;
  int close_rc;
  wd_time closed_at;
  char msg[512];
  char *err;
} late;

static int late_main(wd_task *self, void *arg) {
  late *l = arg;
  wd_pool *p;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = &l->be,
                                            .drain_timeout = WD_SEC}),
               0);
  l->h = (holder){.p = p, .hold = 3 * WD_SEC};
  cr_assert_eq(wd_spawn(&g, holder_task, &l->h, NULL), 0);
  yield_until(self, l->h.c != NULL);
  capture cap;
  capture_begin(&cap);
  l->close_rc = wd_pool_close(self, p);
  l->err = capture_end(&cap);
  l->closed_at = wd_now(self);
  snprintf(l->msg, sizeof l->msg, "%s", last_msg(self));
  /* The item comes back after close: destroyed by that release. */
  cr_assert_eq(l->be.destroys, 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(l->h.released_at, 3 * WD_SEC, "%lld",
               (long long)l->h.released_at);
  cr_assert_eq(l->be.destroys, 1);
  return 0;
}

Test(pool,
     an_item_still_in_use_after_the_drain_is_reported_and_destroyed_later) {
  static late l;
  memset(&l, 0, sizeof l);
  cr_assert_eq(run_virtual(late_main, &l), 0);
  cr_assert_eq(l.close_rc, WD_EBUSY);
  cr_assert_eq(l.closed_at, WD_SEC);
  cr_assert_str_eq(l.msg,
                   "pool 'pg': closed with 1 item still in use after the "
                   "1.000 s drain timeout (each is destroyed when released)");
  cr_assert_not_null(strstr(l.err, "warden: pool 'pg': closed with 1 item "
                                   "still in use"),
                     "%s", l.err);
  cr_assert_not_null(strstr(l.err, "test-pool.h:"), "%s", l.err);
  free(l.err);
  assert_backend_clean(&l.be);
  assert_no_leaks();
}

/* ---- statistics, the registry, the dump
 * --------------------------------------
 */

static int count_pool(wd_pool *p, void *arg) {
  (void)p;
  ++*(int *)arg;
  return 0;
}

static int find_pool_resource(const wd_resource_info *info, void *arg) {
  if (info->type == &wd_pool_resource_type)
    *(wd_resource **)arg = info->resource;
  return 0;
}

static int registry_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *a, *b;
  cr_assert_eq(wd_pool_open(self, &a,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .min_idle = 1}),
               0);
  cr_assert_eq(wd_pool_open(self, &b,
                            &(wd_pool_opts){.name = "redis",
                                            .factory = &plain_factory,
                                            .arg = be}),
               0);
  int n = 0;
  cr_assert_eq(wd_pool_each(NULL, count_pool, &n), 2);
  cr_assert_eq(n, 2);
  /* Each pool is a live resource of type "pool", checked by its health. */
  wd_resource *r = NULL;
  wd_resource_each(NULL, find_pool_resource, &r);
  cr_assert_not_null(r);
  cr_assert_str_eq(wd_resource_name(r), "redis");
  cr_assert_eq(wd_pool_of_resource(r), b);
  cr_assert_eq(wd_resource_health(self, r), 0);
  char *text = dump_text();
  cr_assert_not_null(strstr(text, "pools: 2"), "%s", text);
  cr_assert_not_null(
      strstr(text, "pool 'pg': 1 item (1 idle, 0 in use), max 10"), "%s", text);
  free(text);
  conn *c;
  cr_assert_eq(borrow(self, a, &c), 0);
  text = dump_text();
  cr_assert_not_null(strstr(text, "lent at"), "%s", text);
  cr_assert_not_null(strstr(text, "test-pool.h:"), "%s", text);
  free(text);
  give_back(self, a, c, WD_POOL_OK);
  cr_assert_eq(wd_pool_close(self, b), 0);
  n = 0;
  cr_assert_eq(wd_pool_each(NULL, count_pool, &n), 1);
  cr_assert_eq(wd_pool_close(self, a), 0);
  cr_assert_eq(wd_pool_each(NULL, count_pool, &n), 0);
  return 0;
}

Test(pool, pools_are_listed_in_the_registry_and_the_dump) {
  backend be = {0};
  cr_assert_eq(run_virtual(registry_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

static int stats_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .max_size = 1,
                                            .timing_sample = 1}),
               0);
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  waiting w = {.p = p, .release = true};
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, waiter_task, &w, NULL), 0);
  cr_assert_eq(wd_sleep(self, 250 * WD_MSEC), 0);
  give_back(self, p, c, WD_POOL_OK);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.max_size, 1);
  cr_assert_eq(st.acquires, 2);
  cr_assert_eq(st.waited, 2, "the first waited for the create");
  cr_assert_eq(st.releases, 2);
  cr_assert_eq(st.creates, 1);
  cr_assert_eq(st.peak_in_use, 1);
  cr_assert_eq(st.peak_waiting, 1);
  cr_assert_eq(st.wait_time.count, 2);
  cr_assert_eq(st.wait_time.min, 0);
  cr_assert_eq(st.wait_time.max, 250 * WD_MSEC);
  cr_assert_eq(st.hold_time.count, 2);
  cr_assert_eq(st.hold_time.max, 250 * WD_MSEC);
  cr_assert_eq(st.hold_time.min, 0);
  cr_assert(!st.down && !st.closing);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool, statistics_count_and_time_every_acquire_when_asked) {
  backend be = {0};
  cr_assert_eq(run_virtual(stats_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

/* ---- bad arguments
 * -------------------------------------------------------------
 */

static int bad_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p = (wd_pool *)1;
#define OPEN_BAD(msg, ...)                                                     \
  do {                                                                         \
    p = (wd_pool *)1;                                                          \
    cr_assert_eq(wd_pool_open(self, &p, __VA_ARGS__), WD_EINVAL);              \
    cr_assert_null(p);                                                         \
    cr_assert_str_eq(last_msg(self), msg);                                     \
  } while (0)
  OPEN_BAD("pool 'pool': NULL options", NULL);
  OPEN_BAD("pool 'x': no factory", &(wd_pool_opts){.name = "x"});
  static const wd_pool_factory no_create = {.destroy = be_destroy};
  OPEN_BAD("pool 'x': the factory has no create",
           &(wd_pool_opts){.name = "x", .factory = &no_create});
  OPEN_BAD(
      "pool 'x': min_idle 11 is above max_size 10",
      &(wd_pool_opts){.name = "x", .factory = &plain_factory, .min_idle = 11});
  OPEN_BAD("pool 'x': max_size 2000000 is above 1048576",
           &(wd_pool_opts){
               .name = "x", .factory = &plain_factory, .max_size = 2000000});
  OPEN_BAD("pool 'x': negative acquire_timeout (-1 ns)",
           &(wd_pool_opts){
               .name = "x", .factory = &plain_factory, .acquire_timeout = -1});
  OPEN_BAD("pool 'x': negative drain_timeout (-5 ns)",
           &(wd_pool_opts){
               .name = "x", .factory = &plain_factory, .drain_timeout = -5});
  OPEN_BAD("pool 'x': negative validate_after (-2 ns)",
           &(wd_pool_opts){
               .name = "x", .factory = &plain_factory, .validate_after = -2});
  OPEN_BAD(
      "pool 'x': workers 65 is above 64",
      &(wd_pool_opts){.name = "x", .factory = &plain_factory, .workers = 65});
  OPEN_BAD("pool 'x': lifetime_jitter 2.000 s is not below max_lifetime "
           "1.000 s",
           &(wd_pool_opts){.name = "x",
                           .factory = &plain_factory,
                           .max_lifetime = WD_SEC,
                           .lifetime_jitter = 2 * WD_SEC});
  OPEN_BAD("pool 'x': backoff_max 0.010 s is below backoff_min 0.050 s",
           &(wd_pool_opts){.name = "x",
                           .factory = &plain_factory,
                           .backoff_max = 10 * WD_MSEC});
  cr_assert_eq(
      wd_pool_open(self, NULL, &(wd_pool_opts){.factory = &plain_factory}),
      WD_EINVAL);
  cr_assert_eq(
      wd_pool_open(NULL, &p, &(wd_pool_opts){.factory = &plain_factory}),
      WD_EINVAL);
  cr_assert_null(p);

  cr_assert_eq(
      wd_pool_open(
          self, &p,
          &(wd_pool_opts){.name = "pg", .factory = &plain_factory, .arg = be}),
      0);
  void *item = (void *)1;
  cr_assert_eq(wd_pool_acquire(self, NULL, &item), WD_EINVAL);
  cr_assert_str_eq(last_msg(self), "wd_pool_acquire: NULL pool");
  cr_assert_eq(wd_pool_acquire(NULL, p, &item), WD_EINVAL);
  cr_assert_eq(wd_pool_acquire(self, p, NULL), WD_EINVAL);
  cr_assert_str_eq(last_msg(self), "wd_pool_acquire: NULL out pointer");
  cr_assert_eq(wd_pool_acquire_try(self, NULL, &item), WD_EINVAL);
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  cr_assert_eq(wd_pool_release(self, NULL, c, WD_POOL_OK), WD_EINVAL);
  cr_assert_str_eq(last_msg(self), "wd_pool_release: NULL pool");
  cr_assert_eq(wd_pool_release(self, p, NULL, WD_POOL_OK), WD_EINVAL);
  cr_assert_str_eq(last_msg(self), "wd_pool_release: NULL item");
  cr_assert_eq(wd_pool_release(self, p, c, (wd_pool_status)7), WD_EINVAL);
  cr_assert_str_eq(last_msg(self),
                   "wd_pool_release: pool 'pg': unknown status 7");
  give_back(self, p, c, WD_POOL_OK);
  /* Released twice: refused, nothing changes. */
  cr_assert_eq(wd_pool_release(self, p, c, WD_POOL_OK), WD_EINVAL);
  cr_assert_str_eq(last_msg(self),
                   "wd_pool_release: pool 'pg': item 1 is not lent");
  cr_assert_eq(wd_pool_mark_broken(p, c), WD_EINVAL);
  /* An item of another pool. */
  wd_pool *q;
  cr_assert_eq(wd_pool_open(self, &q,
                            &(wd_pool_opts){.name = "other",
                                            .factory = &plain_factory,
                                            .arg = be}),
               0);
  conn *d;
  cr_assert_eq(borrow(self, q, &d), 0);
  cr_assert_eq(wd_pool_release(self, p, d, WD_POOL_OK), WD_EINVAL);
  cr_assert_str_eq(last_msg(self),
                   "wd_pool_release: pool 'pg': not one of its items");
  give_back(self, q, d, WD_POOL_OK);
  cr_assert_eq(wd_pool_close(self, q), 0);
  wd_pool_stats st;
  cr_assert_eq(wd_pool_stats_get(NULL, &st), WD_EINVAL);
  cr_assert_eq(wd_pool_stats_get(p, NULL), WD_EINVAL);
  cr_assert_str_eq(wd_pool_name(NULL), "");
  cr_assert_eq(wd_pool_health(self, NULL), WD_EINVAL);
  cr_assert_eq(wd_pool_each(NULL, NULL, NULL), 0);
  cr_assert_null(wd_pool_of_resource(NULL));
  cr_assert_eq(wd_pool_close(self, NULL), 0);
  cr_assert_eq(wd_pool_close(NULL, p), WD_EINVAL);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool, bad_arguments_are_refused_with_a_message) {
  backend be = {0};
  cr_assert_eq(run_virtual(bad_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

/* Only the opener closes, and only in LIFO order with its scopes. */
typedef struct other_closer {
  wd_pool *p;
  int rc;
} other_closer;

static int other_close_task(wd_task *self, void *arg) {
  other_closer *oc = arg;
  oc->rc = wd_pool_close(self, oc->p);
  return 0;
}

static int close_order_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .min_idle = 1}),
               0);
  other_closer oc = {.p = p};
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, other_close_task, &oc, NULL), 0);
  /* g, opened after the pool, is still open: close is refused. */
  cr_assert_eq(wd_pool_close(self, p), WD_EINVAL);
  cr_assert_not_null(strstr(last_msg(self), "pool 'pg': close"));
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(oc.rc, WD_EINVAL);
  /* Still fully usable. */
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  give_back(self, p, c, WD_POOL_OK);
  cr_assert(!stats_of(p).closing);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool, close_out_of_order_or_by_another_task_is_refused) {
  backend be = {0};
  cr_assert_eq(run_virtual(close_order_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}
