/* wd_pool under faults: a caller cancelled at every turn of the scheduler
 * while it acquires (and releases), the opener cancelled, open cancelled
 * during its warm-up, allocation failure at every point, creates and
 * destroys that hang, the scope helper (a cancelled user never keeps an
 * item), items released after close, and items never released at all
 * (reported when the runtime ends).  No slot, item or waiter is ever lost:
 * after each run the backend has destroyed every item it made, once. */
#include <sys/wait.h>

#include "test-pool.h"

/* ---- a caller cancelled at every point
 * ---------------------------------------
 *
 * One pool of one or two items whose every factory call takes a few turns of
 * the scheduler; a holder keeps one item for a while; the victim acquires
 * (waiting for a create, a reset, a validation), holds, releases; a rival
 * acquires behind it; and a chaos task cancels the victim after n turns.
 * n runs from 0 until the victim finishes before the chaos fires.  Each
 * time, everyone else is served and the books balance. */

typedef struct act {
  wd_pool *p;
  wd_cancel_scope s;
  bool entered, done;
  int turns_held;
  int rc;
  conn *c;
} act;

static int act_task(wd_task *self, void *arg) {
  act *a = arg;
  cr_assert_eq(wd_cancel_scope_enter(self, &a->s, NULL), 0);
  a->entered = true;
  a->rc = borrow(self, a->p, &a->c);
  if (a->rc == 0) {
    /* Hold it over some turns (which the chaos may cancel: keep going;
     * the release must happen whatever). */
    for (int i = 0; i < a->turns_held; i++)
      (void)wd_yield(self);
    give_back(self, a->p, a->c, WD_POOL_OK);
  } else {
    cr_assert(wd_is_cancel(a->rc), "%s", wd_strerror(a->rc));
  }
  a->done = true;
  wd_cancel_scope_exit(self, &a->s, a->rc);
  return 0;
}

typedef struct chaos {
  act *victim;
  int n;
  bool fired;
} chaos;

static int chaos_task(wd_task *self, void *arg) {
  chaos *ch = arg;
  for (int i = 0; i < ch->n; i++)
    cr_assert_eq(wd_yield(self), 0);
  if (!ch->victim->done) {
    ch->fired = true;
    wd_cancel(&ch->victim->s);
  }
  return 0;
}

typedef struct every {
  backend be;
  size_t max;
  int n;
  bool victim_cancelled, victim_served;
  act holder, victim, rival;
  chaos ch;
} every;

static int every_main(wd_task *self, void *arg) {
  every *e = arg;
  e->be.yields = 4;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  wd_pool *p;
  cr_assert_eq(
      wd_pool_open(self, &p,
                   &(wd_pool_opts){.name = "pg",
                                   .factory = &full_factory,
                                   .arg = &e->be,
                                   .max_size = e->max,
                                   .min_idle = 1,
                                   .validate_after = WD_POOL_EVERY_BORROW}),
      0);
  e->holder = (act){.p = p, .turns_held = 6};
  e->victim = (act){.p = p, .turns_held = 3};
  e->rival = (act){.p = p, .turns_held = 2};
  e->ch = (chaos){.victim = &e->victim, .n = e->n};
  cr_assert_eq(wd_spawn(&g, act_task, &e->holder, NULL), 0);
  cr_assert_eq(wd_spawn(&g, act_task, &e->victim, NULL), 0);
  cr_assert_eq(wd_spawn(&g, act_task, &e->rival, NULL), 0);
  cr_assert_eq(wd_spawn(&g, chaos_task, &e->ch, NULL), 0);
  /* Wait for the actors, not the pool. */
  while (!(e->holder.done && e->victim.done && e->rival.done))
    cr_assert_eq(wd_sleep(self, WD_MSEC), 0);
  cr_assert_eq(e->holder.rc, 0);
  cr_assert_eq(e->rival.rc, 0, "n=%d: the rival is served", e->n);
  e->victim_served = e->victim.rc == 0;
  e->victim_cancelled = e->victim.rc != 0;
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.in_use, 0);
  cr_assert_eq(st.waiting, 0);
  cr_assert_eq(st.acquires, st.releases, "n=%d", e->n);
  cr_assert_eq(st.acquires, e->victim_served ? 3u : 2u);
  cr_assert_eq(st.cancelled, e->victim_cancelled ? 1u : 0u);
  cr_assert_leq(st.size, e->max);
  cr_assert_eq(wd_pool_close(self, p), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return 0;
}

static void every_turn(size_t max) {
  int cancelled = 0;
  for (int n = 0;; n++) {
    static every e;
    memset(&e, 0, sizeof e);
    e.max = max;
    e.n = n;
    cr_assert_eq(run_virtual(every_main, &e), 0, "n=%d", n);
    assert_backend_clean(&e.be);
    assert_no_leaks();
    if (e.victim_cancelled) cancelled++;
    if (!e.ch.fired) break; /* the victim finished first */
    cr_assert_lt(n, 500, "the loop does not end");
  }
  cr_assert_gt(cancelled, 3, "the victim was cancelled while it waited (%d)",
               cancelled);
}

/* One item: the victim waits for the holder's release and reset, the
 * rival behind it; what the victim would have got goes to the rival. */
Test(pool_fault, a_caller_cancelled_at_every_turn_loses_nothing) {
  every_turn(1);
}

/* Two items: the victim waits for a create, which then serves the rival
 * or goes idle. */
Test(pool_fault, a_caller_cancelled_at_every_turn_of_a_create_loses_nothing) {
  every_turn(2);
}

/* The same with the acquire timeout as the cancellation: a pool of one
 * item, held for n ms, and an acquire timeout of 5 ms; the reset and
 * validation take 1 ms each. */
typedef struct tick {
  backend be;
  int n;
  int rc;
} tick;

static int tick_main(wd_task *self, void *arg) {
  tick *t = arg;
  t->be.reset_time = t->be.validate_time = WD_MSEC;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  wd_pool *p;
  cr_assert_eq(
      wd_pool_open(self, &p,
                   &(wd_pool_opts){.name = "pg",
                                   .factory = &full_factory,
                                   .arg = &t->be,
                                   .max_size = 1,
                                   .min_idle = 1,
                                   .acquire_timeout = 5 * WD_MSEC,
                                   .validate_after = WD_POOL_EVERY_BORROW}),
      0);
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  act victim = {.p = p, .turns_held = 1};
  cr_assert_eq(wd_spawn(&g, act_task, &victim, NULL), 0);
  cr_assert_eq(wd_sleep(self, t->n * WD_MSEC), 0);
  give_back(self, p, c, WD_POOL_OK);
  while (!victim.done)
    cr_assert_eq(wd_sleep(self, WD_MSEC), 0);
  t->rc = victim.rc;
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.acquires, st.releases);
  cr_assert_eq(st.timeouts, t->rc ? 1u : 0u);
  cr_assert_eq(wd_pool_close(self, p), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return 0;
}

Test(pool_fault, the_acquire_timeout_at_every_millisecond_loses_nothing) {
  for (int n = 0; n <= 8; n++) {
    static tick t;
    memset(&t, 0, sizeof t);
    t.n = n;
    cr_assert_eq(run_virtual(tick_main, &t), 0, "n=%d", n);
    /* Released at n ms and reset by n + 1 ms, then handed straight to the
     * waiter (it was never idle: no validation): served when that is
     * before 5 ms.  Exactly at 5 ms the deadline fires first. */
    cr_assert_eq(t.rc, n + 1 < 5 ? 0 : WD_ETIMEDOUT, "n=%d: %s", n,
                 wd_strerror(t.rc));
    assert_backend_clean(&t.be);
    assert_no_leaks();
  }
}

/* Cancelling the releaser while its item is being reset changes nothing:
 * release does not block, and the reset runs in the pool. */
static int release_cancel_main(wd_task *self, void *arg) {
  backend *be = arg;
  be->reset_time = 10 * WD_MSEC;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &full_factory,
                                            .arg = be,
                                            .max_size = 1}),
               0);
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  wd_cancel_scope s;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  wd_cancel(&s);
  give_back(self, p, c, WD_POOL_OK); /* cancelled: still done */
  cr_assert_eq(wd_sleep(self, WD_MSEC), WD_ECANCELED);
  wd_cancel_scope_exit(self, &s, WD_ECANCELED);
  cr_assert_eq(wd_sleep(self, 20 * WD_MSEC), 0);
  cr_assert_eq(be->resets, 1);
  cr_assert_eq(stats_of(p).idle, 1);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool_fault, a_cancelled_releaser_still_returns_its_item) {
  backend be = {0};
  cr_assert_eq(run_virtual(release_cancel_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

/* ---- the opener cancelled ---------------------------------------------------
 */

typedef struct opener {
  backend be;
  int resets_before_close;
  int close_rc;
  int after_rc;
} opener;

static int opener_task(wd_task *self, void *arg) {
  opener *o = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &full_factory,
                                            .arg = &o->be,
                                            .max_size = 2,
                                            .min_idle = 2}),
               0);
  /* Cancelled while it sleeps: the pool's tasks are shielded and keep
   * serving until the opener closes it. */
  o->after_rc = wd_sleep(self, WD_SEC);
  conn *c;
  cr_assert_eq(wd_pool_acquire_try(self, p, (void **)&c), 0);
  cr_assert_eq(wd_pool_release(self, p, c, WD_POOL_OK), 0);
  /* Its workers still run: the reset is done while we wait, shielded. */
  wd_cancel_scope sh;
  cr_assert_eq(
      wd_cancel_scope_enter(self, &sh, &(wd_cancel_opts){.shield = true}), 0);
  cr_assert_eq(wd_sleep(self, 5 * WD_MSEC), 0);
  wd_cancel_scope_exit(self, &sh, 0);
  o->resets_before_close = o->be.resets;
  o->close_rc = wd_pool_close(self, p);
  return o->after_rc;
}

static int opener_main(wd_task *self, void *arg) {
  opener *o = arg;
  o->be.reset_time = WD_MSEC;
  wd_handle h;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, opener_task, o, &(wd_spawn_opts){.handle = &h}), 0);
  cr_assert_eq(wd_sleep(self, 10 * WD_MSEC), 0);
  wd_handle_cancel(&h);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return 0;
}

Test(pool_fault, cancelling_the_opener_does_not_stop_the_pool_closing_it_does) {
  static opener o;
  memset(&o, 0, sizeof o);
  cr_assert_eq(run_virtual(opener_main, &o), 0);
  cr_assert_eq(o.after_rc, WD_ECANCELED);
  cr_assert_eq(o.close_rc, WD_ECANCELED, "close reports the cancellation");
  cr_assert_eq(o.resets_before_close, 1, "the reset ran");
  assert_backend_clean(&o.be);
  assert_no_leaks();
}

/* Open cancelled at every turn of its warm-up. */
typedef struct open_cancel {
  backend be;
  int n;
  int rc;
} open_cancel;

static int open_cancel_task(wd_task *self, void *arg) {
  open_cancel *oc = arg;
  wd_pool *p;
  oc->rc = wd_pool_open(self, &p,
                        &(wd_pool_opts){.name = "pg",
                                        .factory = &plain_factory,
                                        .arg = &oc->be,
                                        .max_size = 4,
                                        .min_idle = 4,
                                        .workers = 2});
  if (oc->rc == 0) {
    /* Opened, but cancelled since: close says so, and closes. */
    int rc = wd_pool_close(self, p);
    cr_assert(rc == 0 || rc == WD_ECANCELED, "%s", wd_strerror(rc));
  }
  return 0;
}

static int open_cancel_main(wd_task *self, void *arg) {
  open_cancel *oc = arg;
  oc->be.yields = 2;
  wd_handle h;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(
      wd_spawn(&g, open_cancel_task, oc, &(wd_spawn_opts){.handle = &h}), 0);
  for (int i = 0; i < oc->n; i++)
    cr_assert_eq(wd_yield(self), 0);
  wd_handle_cancel(&h);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return 0;
}

Test(pool_fault, open_cancelled_at_every_turn_of_its_warm_up_leaves_nothing) {
  for (int n = 0;; n++) {
    static open_cancel oc;
    memset(&oc, 0, sizeof oc);
    oc.n = n;
    cr_assert_eq(run_virtual(open_cancel_main, &oc), 0);
    cr_assert(oc.rc == 0 || oc.rc == WD_ECANCELED, "n=%d: %s", n,
              wd_strerror(oc.rc));
    assert_backend_clean(&oc.be);
    assert_no_leaks();
    if (oc.rc == 0) break;
    cr_assert_lt(n, 500);
  }
}

/* ---- allocation failure at every point -------------------------------------
 */

typedef struct alloc_run {
  backend be;
  int open_rc;
  act a[3];
} alloc_run;

static int alloc_main(wd_task *self, void *arg) {
  alloc_run *r = arg;
  r->be.yields = 1;
  wd_group g;
  int rc = wd_group_enter(self, &g, NULL);
  if (rc) return rc;
  wd_pool *p;
  r->open_rc = wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &full_factory,
                                            .arg = &r->be,
                                            .max_size = 2,
                                            .min_idle = 1,
                                            .backoff_min = WD_MSEC,
                                            .leak_threshold = WD_SEC});
  if (r->open_rc) {
    cr_assert_null(p);
    cr_assert_eq(r->be.live, 0);
    return wd_group_exit(self, &g, r->open_rc);
  }
  for (int i = 0; i < 3; i++) {
    r->a[i] = (act){.p = p, .turns_held = 2};
    rc = wd_spawn(&g, act_task, &r->a[i], NULL);
    if (rc) r->a[i].done = true;
  }
  while (!(r->a[0].done && r->a[1].done && r->a[2].done))
    cr_assert_eq(wd_sleep(self, WD_MSEC), 0);
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.acquires, st.releases);
  cr_assert_eq(st.in_use, 0);
  cr_assert_eq(wd_pool_close(self, p), 0);
  int xrc = wd_group_exit(self, &g, 0);
  return rc ? rc : xrc;
}

Test(pool_fault, allocation_failure_at_every_point_is_clean) {
  int failed_open = 0;
  for (long n = 1;; n++) {
    static alloc_run r;
    memset(&r, 0, sizeof r);
    wd_alloc_fail_after(n);
    int rc = run_virtual(alloc_main, &r);
    bool fired = wd_alloc_failed();
    wd_alloc_fail_after(0);
    cr_assert(rc == 0 || rc == WD_ENOMEM, "n=%ld: %s", n, wd_strerror(rc));
    if (r.open_rc) {
      cr_assert_eq(r.open_rc, WD_ENOMEM, "n=%ld: %s", n,
                   wd_strerror(r.open_rc));
      failed_open++;
    }
    /* Whatever failed - the open, a spawn, an item's memory (retried), a
     * timeout's timer (that acquire fails) - nothing is lost. */
    for (int i = 0; i < 3; i++)
      cr_assert(r.a[i].rc == 0 || r.a[i].rc == WD_ENOMEM, "n=%ld: %s", n,
                wd_strerror(r.a[i].rc));
    assert_backend_clean(&r.be);
    assert_no_leaks();
    if (!fired) {
      cr_assert_eq(rc, 0);
      break;
    }
    cr_assert_lt(n, 2000, "the fault loop does not end");
  }
  cr_assert_gt(failed_open, 3);
}

/* ---- hanging creates and destroys -------------------------------------------
 */

static int hang_main(wd_task *self, void *arg) {
  backend *be = arg;
  be->create_time = WD_TIME_NEVER / 2;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .max_size = 1,
                                            .create_timeout = 2 * WD_SEC,
                                            .acquire_timeout = 3 * WD_SEC}),
               0);
  conn *c;
  int rc = borrow(self, p, &c);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  cr_assert_not_null(strstr(last_msg(self),
                            "last create error: pool 'pg' create: timed out "
                            "after 2.000 s"),
                     "%s", last_msg(self));
  /* A create under way when the pool closes is cancelled: close does not
   * wait for it. */
  wd_time t0 = wd_now(self);
  cr_assert_eq(wd_pool_close(self, p), 0);
  cr_assert_eq(wd_now(self), t0);
  return 0;
}

Test(pool_fault, creates_are_bounded_by_create_timeout_and_cancelled_by_close) {
  backend be = {0};
  cr_assert_eq(run_virtual(hang_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

static int slow_destroy_main(wd_task *self, void *arg) {
  backend *be = arg;
  be->destroy_time = WD_TIME_NEVER / 2;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .min_idle = 2,
                                            .destroy_grace = WD_SEC}),
               0);
  cr_assert_eq(wd_pool_close(self, p), 0);
  cr_assert_eq(wd_now(self), WD_SEC, "both destroys cut at their grace");
  return 0;
}

Test(pool_fault, a_hanging_destroy_is_cut_short_by_destroy_grace) {
  backend be = {0};
  cr_assert_eq(run_virtual(slow_destroy_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

/* ---- the scope helper
 * ---------------------------------------------------------- */

typedef struct scoped_user {
  wd_pool *p;
  int rc;
  conn *c;
  bool broken;
} scoped_user;

static int scoped_task(wd_task *self, void *arg) {
  scoped_user *u = arg;
  int rc = 0;
  WD_SCOPE(self, sc, rc) {
    void *item;
    if ((rc = wd_pool_acquire_scoped(self, sc, u->p, &item))) break;
    u->c = item;
    cr_assert_eq(wd_pool_release(self, u->p, item, WD_POOL_OK), WD_EINVAL,
                 "the scope releases it");
    if (u->broken) wd_pool_mark_broken(u->p, item);
    rc = wd_sleep(self, WD_SEC); /* cancelled here */
  }
  u->rc = rc;
  return 0;
}

static int scoped_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .max_size = 2,
                                            .min_idle = 2}),
               0);
  scoped_user u[2] = {{.p = p}, {.p = p, .broken = true}};
  wd_handle h[2];
  for (int i = 0; i < 2; i++)
    cr_assert_eq(
        wd_spawn(&g, scoped_task, &u[i], &(wd_spawn_opts){.handle = &h[i]}), 0);
  cr_assert_eq(wd_sleep(self, 10 * WD_MSEC), 0);
  cr_assert_eq(stats_of(p).in_use, 2);
  wd_handle_cancel(&h[0]);
  wd_handle_cancel(&h[1]);
  cr_assert_eq(wd_sleep(self, 10 * WD_MSEC), 0);
  cr_assert_eq(u[0].rc, WD_ECANCELED);
  cr_assert_eq(u[1].rc, WD_ECANCELED);
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.in_use, 0, "the scopes gave both back");
  cr_assert_eq(st.releases, 2);
  cr_assert_eq(st.broken, 1);
  cr_assert_eq(st.idle, 2, "the broken one was replaced");
  cr_assert_eq(wd_pool_close(self, p), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return 0;
}

Test(pool_fault, the_scope_helper_releases_the_item_of_a_cancelled_user) {
  backend be = {0};
  cr_assert_eq(run_virtual(scoped_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

static int noop_cleanup(wd_task *self, void *arg, wd_outcome how) {
  (void)self;
  (void)arg;
  (void)how;
  return 0;
}

static int scope_nomem_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .min_idle = 1}),
               0);
  wd_scope sc;
  cr_assert_eq(wd_scope_enter(self, &sc), 0);
  for (int i = 0; i < WD_SCOPE_INLINE; i++)
    cr_assert_eq(wd_scope_defer(self, &sc, noop_cleanup, NULL), 0);
  /* The scope must grow for the item's release, and cannot: the item is
   * released at once and the acquire fails. */
  void *item = (void *)1;
  wd_alloc_fail_after(1);
  cr_assert_eq(wd_pool_acquire_scoped(self, &sc, p, &item), WD_ENOMEM);
  wd_alloc_fail_after(0);
  cr_assert_null(item);
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.in_use, 0);
  cr_assert_eq(st.releases, 1);
  cr_assert_eq(st.idle, 1);
  cr_assert_eq(wd_scope_exit(self, &sc, 0), 0);
  /* A scope this task did not enter: refused, the item given back. */
  wd_scope other = {0};
  cr_assert_eq(wd_pool_acquire_scoped(self, &other, p, &item), WD_EINVAL);
  cr_assert_null(item);
  cr_assert_eq(stats_of(p).in_use, 0);
  cr_assert_eq(wd_pool_acquire_scoped(self, NULL, p, &item), WD_EINVAL);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool_fault, a_scope_without_room_releases_the_item_at_once) {
  backend be = {0};
  cr_assert_eq(run_virtual(scope_nomem_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

/* ---- items that outlive their pool
 * -------------------------------------------- */

typedef struct outlive {
  backend be;
  wd_pool *p;
  conn *c[3];
  int close_rc;
} outlive;

static int outlive_main(wd_task *self, void *arg) {
  outlive *o = arg;
  capture cap;
  cr_assert_eq(wd_pool_open(self, &o->p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = &o->be,
                                            .min_idle = 3,
                                            .drain_timeout = WD_MSEC}),
               0);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(borrow(self, o->p, &o->c[i]), 0);
  capture_begin(&cap);
  o->close_rc = wd_pool_close(self, o->p);
  free(capture_end(&cap));
  /* The pool is closed, its items still out: each release destroys one,
   * from a task or from a posted callback; the last frees the pool. */
  give_back(self, o->p, o->c[0], WD_POOL_OK);
  cr_assert_eq(o->be.destroys, 1);
  give_back(self, o->p, o->c[1], WD_POOL_BROKEN);
  cr_assert_eq(o->be.destroys, 2);
  o->c[2]->in_use = false;
  cr_assert_eq(wd_pool_release(NULL, o->p, o->c[2], WD_POOL_OK), 0);
  cr_assert_eq(o->be.destroys, 3);
  return 0;
}

Test(pool_fault, items_released_after_close_are_destroyed_then) {
  static outlive o;
  memset(&o, 0, sizeof o);
  cr_assert_eq(run_virtual(outlive_main, &o), 0);
  cr_assert_eq(o.close_rc, WD_EBUSY);
  assert_backend_clean(&o.be);
  assert_no_leaks();
}

/* Never released: reported when the runtime ends, in a child process. */
static int forgotten_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .drain_timeout = WD_MSEC}),
               0);
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  wd_pool_close(self, p);
  return 0; /* c is never released */
}

Test(pool_fault, an_item_never_released_is_reported_when_the_runtime_ends) {
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    dup2(fds[1], 2);
    close(fds[0]);
    backend be = {0};
    int rc = run_virtual(forgotten_main, &be);
    wd_error_clear(NULL);
    fprintf(stderr, "child: rc %d, leaks %llu, live %ld\n", rc,
            (unsigned long long)wd_resource_leaks(), wd_alloc_live());
    fflush(stderr);
    _exit(rc == 0 && wd_resource_leaks() == 1 && wd_alloc_live() == 0 ? 0 : 1);
  }
  close(fds[1]);
  char buf[4096] = {0};
  size_t n = 0;
  ssize_t k;
  while ((k = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0)
    n += (size_t)k;
  close(fds[0]);
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s", buf);
  cr_assert_not_null(strstr(buf, "warden: leak: pool 'pg' (opened at "), "%s",
                     buf);
  cr_assert_not_null(strstr(buf, "with 1 item never released"), "%s", buf);
  cr_assert_not_null(strstr(buf, "item acquired at "), "%s", buf);
  cr_assert_not_null(strstr(buf, "resource"), "the pool resource too: %s", buf);
}
