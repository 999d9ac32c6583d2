/* wd_pool: an item's life - warm-up (parallel, bounded, failing), max
 * lifetime with jitter (never closing an item in use, topping up to
 * min_idle again), idle eviction, validation on borrow and keepalive,
 * resets, max uses, LIFO and FIFO reuse, leak reports, the health check
 * and acquire_try.  On the virtual clock: every time below is exact. */
#include "test-pool.h"

/* ---- warm-up --------------------------------------------------------------
 */

typedef struct warm {
  backend be;
  wd_time opened_at;
  int rc;
  char msg[512];
  unsigned workers;
  bool lazy;
} warm;

static int warm_main(wd_task *self, void *arg) {
  warm *w = arg;
  wd_pool *p;
  w->rc = wd_pool_open(self, &p,
                       &(wd_pool_opts){.name = "pg",
                                       .factory = &plain_factory,
                                       .arg = &w->be,
                                       .max_size = 10,
                                       .min_idle = 8,
                                       .workers = w->workers,
                                       .lazy = w->lazy});
  w->opened_at = wd_now(self);
  snprintf(w->msg, sizeof w->msg, "%s", w->rc ? last_msg(self) : "");
  if (w->rc) return 0;
  if (w->lazy) {
    cr_assert_eq(w->opened_at, 0);
    cr_assert_eq(wd_sleep(self, WD_SEC), 0);
    cr_assert_eq(stats_of(p).idle, 8, "filled in the background");
  }
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool_life, warm_up_makes_min_idle_items_in_parallel_bounded_by_workers) {
  static warm w;
  memset(&w, 0, sizeof w);
  w.be.create_time = 10 * WD_MSEC;
  cr_assert_eq(run_virtual(warm_main, &w), 0);
  cr_assert_eq(w.rc, 0, "%s", w.msg);
  /* 8 items, 4 workers (the default), 10 ms each: two rounds. */
  cr_assert_eq(w.opened_at, 20 * WD_MSEC);
  cr_assert_eq(w.be.most_creating, 4);
  cr_assert_eq(w.be.creates, 8);
  assert_backend_clean(&w.be);
  assert_no_leaks();
}

Test(pool_life, warm_up_with_two_workers_takes_four_rounds) {
  static warm w;
  memset(&w, 0, sizeof w);
  w.be.create_time = 10 * WD_MSEC;
  w.workers = 2;
  cr_assert_eq(run_virtual(warm_main, &w), 0);
  cr_assert_eq(w.opened_at, 40 * WD_MSEC);
  cr_assert_eq(w.be.most_creating, 2);
  assert_backend_clean(&w.be);
  assert_no_leaks();
}

Test(pool_life, a_lazy_pool_opens_at_once_and_fills_in_the_background) {
  static warm w;
  memset(&w, 0, sizeof w);
  w.be.create_time = 10 * WD_MSEC;
  w.lazy = true;
  cr_assert_eq(run_virtual(warm_main, &w), 0);
  cr_assert_eq(w.rc, 0, "%s", w.msg);
  assert_backend_clean(&w.be);
  assert_no_leaks();
}

Test(pool_life, a_failed_warm_up_fails_the_open_and_destroys_what_it_made) {
  static warm w;
  memset(&w, 0, sizeof w);
  w.be.create_time = 10 * WD_MSEC;
  w.be.fail_every = 6;
  cr_assert_eq(run_virtual(warm_main, &w), 0);
  cr_assert_eq(w.rc, -ECONNREFUSED);
  cr_assert_not_null(strstr(w.msg, "pool 'pg': warm-up: create failed"), "%s",
                     w.msg);
  cr_assert_not_null(strstr(w.msg, "connection refused"), "%s", w.msg);
  cr_assert_gt(w.be.creates, 0);
  assert_backend_clean(&w.be);
  assert_no_leaks();
}

/* ---- max lifetime ----------------------------------------------------------
 */

typedef struct life {
  backend be;
  wd_time died[16]; /* when each item id was destroyed */
} life;

static int life_destroy(wd_task *self, void *item, void *arg) {
  life *l = arg;
  conn *c = item;
  l->died[c->id] = wd_now(self);
  return be_destroy(self, item, &l->be);
}

static int life_create(wd_task *self, void *item, void *arg) {
  life *l = arg;
  return be_create(self, item, &l->be);
}

static const wd_pool_factory life_factory = {
    .item_size = sizeof(conn), .create = life_create, .destroy = life_destroy};

static int lifetime_main(wd_task *self, void *arg) {
  life *l = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &life_factory,
                                            .arg = l,
                                            .max_size = 4,
                                            .min_idle = 3,
                                            .max_lifetime = 60 * WD_SEC,
                                            .lifetime_jitter = 6 * WD_SEC,
                                            .seed = 42}),
               0);
  /* Item 1 is in use across its expiry: it must not be closed under us. */
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  cr_assert_eq(wd_sleep(self, 70 * WD_SEC), 0);
  cr_assert(c->alive, "an item in use is never closed");
  cr_assert_eq(l->died[c->id], 0);
  int id = c->id;
  give_back(self, p, c, WD_POOL_OK);
  cr_assert_eq(wd_yield(self), 0);
  cr_assert_eq(l->died[id], 70 * WD_SEC, "destroyed at its release");
  /* The others - the two made by the warm-up and the one that topped
   * the pool up to min_idle when item 3 was lent - died between 54 and
   * 60 s, not all at once, and the pool topped up again each time. */
  int expired_before = 0;
  wd_time first = WD_TIME_NEVER, last = 0;
  for (int i = 1; i <= 4; i++) {
    if (i == id) continue;
    cr_assert_neq(l->died[i], 0, "item %d expired", i);
    expired_before++;
    cr_assert_geq(l->died[i], 54 * WD_SEC);
    cr_assert_leq(l->died[i], 60 * WD_SEC);
    if (l->died[i] < first) first = l->died[i];
    if (l->died[i] > last) last = l->died[i];
  }
  cr_assert_eq(expired_before, 3);
  cr_assert_gt(last, first, "jitter spreads the expiries");
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.expired, 4, "%llu", (unsigned long long)st.expired);
  cr_assert_eq(st.idle, 3, "topped up to min_idle");
  cr_assert_eq(st.size, 3);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool_life, items_expire_with_jitter_never_in_use_and_are_topped_up) {
  static life l;
  memset(&l, 0, sizeof l);
  cr_assert_eq(run_virtual(lifetime_main, &l), 0);
  assert_backend_clean(&l.be);
  assert_no_leaks();
}

/* ---- idle timeout -----------------------------------------------------------
 */

static int idle_main(wd_task *self, void *arg) {
  life *l = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &life_factory,
                                            .arg = l,
                                            .max_size = 5,
                                            .min_idle = 2,
                                            .idle_timeout = 10 * WD_SEC,
                                            .max_lifetime = WD_TIME_NEVER}),
               0);
  conn *c[5];
  wd_time back[8] = {0};
  for (int i = 0; i < 5; i++)
    cr_assert_eq(borrow(self, p, &c[i]), 0);
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(wd_sleep(self, WD_SEC), 0);
    back[c[i]->id] = wd_now(self);
    give_back(self, p, c[i], WD_POOL_OK); /* at 1, 2, 3, 4, 5 s */
  }
  cr_assert_eq(wd_sleep(self, 30 * WD_SEC), 0);
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.idle_evicted, 3);
  cr_assert_eq(st.idle, 2, "min_idle items stay");
  cr_assert_eq(st.creates, 5, "nothing was replaced");
  /* The oldest went first, each 10 s after its release, give or take the
   * pool's tick (1 s here): never before. */
  int gone = 0;
  for (int id = 1; id <= 5; id++) {
    if (!l->died[id]) {
      cr_assert_geq(back[id], 4 * WD_SEC, "item %d returned last", id);
      continue;
    }
    gone++;
    cr_assert_leq(back[id], 3 * WD_SEC, "item %d returned first", id);
    cr_assert_geq(l->died[id], back[id] + 10 * WD_SEC, "item %d", id);
    cr_assert_leq(l->died[id], back[id] + 12 * WD_SEC, "item %d", id);
  }
  cr_assert_eq(gone, 3);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool_life, idle_items_beyond_min_idle_are_evicted_after_idle_timeout) {
  static life l;
  memset(&l, 0, sizeof l);
  cr_assert_eq(run_virtual(idle_main, &l), 0);
  assert_backend_clean(&l.be);
  assert_no_leaks();
}

/* ---- validation
 * ---------------------------------------------------------------- */

static int validate_main(wd_task *self, void *arg) {
  backend *be = arg;
  be->validate_time = 2 * WD_MSEC;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &full_factory,
                                            .arg = be,
                                            .max_size = 2,
                                            .min_idle = 2,
                                            .validate_after = WD_SEC}),
               0);
  /* Fresh items are lent without a check. */
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  give_back(self, p, c, WD_POOL_OK);
  cr_assert_eq(wd_sleep(self, 100 * WD_MSEC), 0);
  cr_assert_eq(borrow(self, p, &c), 0);
  cr_assert_eq(be->validates, 0);
  give_back(self, p, c, WD_POOL_OK);
  /* Idle longer than validate_after: checked first (2 ms). */
  cr_assert_eq(wd_sleep(self, 2 * WD_SEC), 0);
  wd_time t0 = wd_now(self);
  cr_assert_eq(borrow(self, p, &c), 0);
  cr_assert_eq(be->validates, 1);
  cr_assert_eq(wd_now(self) - t0, 2 * WD_MSEC);
  int good = c->id;
  give_back(self, p, c, WD_POOL_OK);
  /* A check that fails: the item is destroyed and the caller gets the
   * next one - here the other idle item, checked too. */
  cr_assert_eq(wd_sleep(self, 2 * WD_SEC), 0);
  be->validate_fail = -EPIPE;
  be->validate_fail_id = good;
  cr_assert_eq(borrow(self, p, &c), 0);
  cr_assert_neq(c->id, good);
  cr_assert_eq(be->destroys, 1);
  give_back(self, p, c, WD_POOL_OK);
  /* Meanwhile the other idle item was checked too, in the background. */
  cr_assert_eq(wd_sleep(self, 10 * WD_MSEC), 0);
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.validations, 3);
  cr_assert_eq(st.validation_errors, 1);
  cr_assert_eq(stats_of(p).idle, 2, "replaced up to min_idle");
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool_life, an_item_idle_past_validate_after_is_checked_before_it_is_lent) {
  backend be = {0};
  cr_assert_eq(run_virtual(validate_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

static int every_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p;
  static const wd_pool_factory f = {.item_size = sizeof(conn),
                                    .create = be_create,
                                    .destroy = be_destroy,
                                    .validate = be_validate};
  cr_assert_eq(
      wd_pool_open(self, &p,
                   &(wd_pool_opts){.name = "pg",
                                   .factory = &f,
                                   .arg = be,
                                   .max_size = 1,
                                   .validate_after = WD_POOL_EVERY_BORROW}),
      0);
  for (int i = 0; i < 5; i++) {
    conn *c;
    cr_assert_eq(borrow(self, p, &c), 0);
    give_back(self, p, c, WD_POOL_OK);
  }
  /* The first was new; the four others were checked. */
  cr_assert_eq(be->validates, 4);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool_life, every_borrow_validates_each_lend_of_an_item_that_was_idle) {
  backend be = {0};
  cr_assert_eq(run_virtual(every_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

static int keepalive_main(wd_task *self, void *arg) {
  life *l = arg;
  wd_pool *p;
  static const wd_pool_factory f = {.item_size = sizeof(conn),
                                    .create = life_create,
                                    .destroy = life_destroy,
                                    .validate = be_validate};
  l->be.validate_fail_id = 2;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &f,
                                            .arg = &l->be,
                                            .max_size = 3,
                                            .min_idle = 2,
                                            .keepalive = 60 * WD_SEC,
                                            .idle_timeout = WD_TIME_NEVER,
                                            .max_lifetime = WD_TIME_NEVER}),
               0);
  cr_assert_eq(wd_sleep(self, 61 * WD_SEC), 0);
  cr_assert_eq(l->be.validates, 2, "each idle item checked once");
  /* Item 2 starts failing its checks: the next keepalive replaces it. */
  l->be.validate_fail = -EPIPE;
  cr_assert_eq(wd_sleep(self, 60 * WD_SEC), 0);
  cr_assert_eq(l->be.validates, 4);
  cr_assert_eq(l->died[2], 120 * WD_SEC);
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.validation_errors, 1);
  cr_assert_eq(st.idle, 2);
  cr_assert_eq(st.creates, 3);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool_life, keepalive_checks_idle_items_in_the_background) {
  static life l;
  memset(&l, 0, sizeof l);
  cr_assert_eq(run_virtual(keepalive_main, &l), 0);
  assert_backend_clean(&l.be);
  assert_no_leaks();
}

/* ---- reset and max uses
 * -------------------------------------------------------- */

static int reset_main(wd_task *self, void *arg) {
  backend *be = arg;
  be->reset_time = 3 * WD_MSEC;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &full_factory,
                                            .arg = be,
                                            .max_size = 1,
                                            .max_uses = 3}),
               0);
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  int id = c->id;
  give_back(self, p, c, WD_POOL_OK);
  /* The reset runs in a worker: the next borrower waits for it. */
  wd_time t0 = wd_now(self);
  cr_assert_eq(borrow(self, p, &c), 0);
  cr_assert_eq(wd_now(self) - t0, 3 * WD_MSEC);
  cr_assert_eq(be->resets, 1);
  cr_assert_eq(c->id, id);
  give_back(self, p, c, WD_POOL_OK);
  cr_assert_eq(borrow(self, p, &c), 0);
  cr_assert_eq(c->id, id);
  give_back(self, p, c, WD_POOL_OK); /* third use: worn out */
  cr_assert_eq(borrow(self, p, &c), 0);
  cr_assert_neq(c->id, id);
  cr_assert_eq(stats_of(p).worn_out, 1);
  /* A reset that fails destroys the item. */
  be->reset_fail = -EIO;
  int id2 = c->id;
  give_back(self, p, c, WD_POOL_OK);
  cr_assert_eq(borrow(self, p, &c), 0);
  cr_assert_neq(c->id, id2);
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.reset_errors, 1);
  cr_assert_eq(st.creates, 3);
  be->reset_fail = 0;
  give_back(self, p, c, WD_POOL_OK);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool_life, released_items_are_reset_in_the_background_and_wear_out) {
  backend be = {0};
  cr_assert_eq(run_virtual(reset_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

/* ---- reuse order
 * ------------------------------------------------------------------ */

static int order_main(wd_task *self, void *arg) {
  bool fifo = *(bool *)arg;
  backend be = {0};
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = &be,
                                            .max_size = 3,
                                            .min_idle = 3,
                                            .fifo = fifo}),
               0);
  conn *c[3];
  for (int i = 0; i < 3; i++)
    cr_assert_eq(borrow(self, p, &c[i]), 0);
  for (int i = 0; i < 3; i++)
    give_back(self, p, c[i], WD_POOL_OK); /* returned 0, 1, 2 */
  conn *d;
  cr_assert_eq(borrow(self, p, &d), 0);
  cr_assert_eq(d, fifo ? c[0] : c[2]);
  give_back(self, p, d, WD_POOL_OK);
  cr_assert_eq(wd_pool_close(self, p), 0);
  assert_backend_clean(&be);
  return 0;
}

Test(pool_life, lifo_reuses_the_warmest_item_and_fifo_the_coldest) {
  bool fifo = false;
  cr_assert_eq(run_virtual(order_main, &fifo), 0);
  fifo = true;
  cr_assert_eq(run_virtual(order_main, &fifo), 0);
  assert_no_leaks();
}

/* FIFO lends the least recently returned item that needs no check; a
 * stale one before it stays idle (checked when someone needs it). */
static int fifo_stale_main(wd_task *self, void *arg) {
  backend *be = arg;
  static const wd_pool_factory f = {.item_size = sizeof(conn),
                                    .create = be_create,
                                    .destroy = be_destroy,
                                    .validate = be_validate};
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &f,
                                            .arg = be,
                                            .max_size = 2,
                                            .min_idle = 2,
                                            .fifo = true,
                                            .validate_after = WD_SEC}),
               0);
  conn *a, *b;
  cr_assert_eq(borrow(self, p, &a), 0);
  cr_assert_eq(borrow(self, p, &b), 0);
  give_back(self, p, a, WD_POOL_OK);
  cr_assert_eq(wd_sleep(self, 2 * WD_SEC), 0);
  give_back(self, p, b, WD_POOL_OK); /* a is stale now, b fresh */
  wd_time t0 = wd_now(self);
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  cr_assert_eq(c, b, "the fresh one, at once");
  cr_assert_eq(wd_now(self), t0);
  cr_assert_eq(be->validates, 0);
  conn *d;
  cr_assert_eq(borrow(self, p, &d), 0);
  cr_assert_eq(d, a, "the stale one, checked first");
  cr_assert_eq(be->validates, 1);
  give_back(self, p, c, WD_POOL_OK);
  give_back(self, p, d, WD_POOL_OK);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool_life, fifo_skips_a_stale_item_for_a_fresh_one) {
  backend be = {0};
  cr_assert_eq(run_virtual(fifo_stale_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

/* ---- leak reports
 * ---------------------------------------------------------------- */

typedef struct leaks {
  backend be;
  int n;
  wd_pool_leak seen;
  char file[64], task[32];
  wd_time at;
} leaks;

static void on_leak(const wd_pool_leak *lk, void *arg) {
  leaks *l = arg;
  l->n++;
  l->seen = *lk;
  snprintf(l->file, sizeof l->file, "%s", lk->file);
  snprintf(l->task, sizeof l->task, "%s", lk->task_name);
  l->at = wd_now(NULL);
}

static int leak_line;

static int leaker(wd_task *self, void *arg) {
  wd_pool *p = arg;
  void *item;
  wd_task_set_name(self, "leaker");
  leak_line = __LINE__ + 1;
  cr_assert_eq(wd_pool_acquire(self, p, &item), 0);
  cr_assert_eq(wd_sleep(self, 20 * WD_SEC), 0);
  cr_assert_eq(wd_pool_release(self, p, item, WD_POOL_OK), 0);
  return 0;
}

static int leak_main(wd_task *self, void *arg) {
  leaks *l = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = &l->be,
                                            .min_idle = 1,
                                            .leak_threshold = 5 * WD_SEC,
                                            .on_leak = on_leak,
                                            .on_leak_arg = l}),
               0);
  cr_assert_eq(wd_spawn(&g, leaker, p, NULL), 0);
  cr_assert_eq(wd_sleep(self, 30 * WD_SEC), 0);
  cr_assert_eq(stats_of(p).leaks, 1);
  cr_assert_eq(wd_pool_close(self, p), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return 0;
}

Test(pool_life, an_item_held_past_the_leak_threshold_is_reported_once) {
  static leaks l;
  memset(&l, 0, sizeof l);
  cr_assert_eq(run_virtual(leak_main, &l), 0);
  cr_assert_eq(l.n, 1, "reported once");
  cr_assert_geq(l.at, 5 * WD_SEC);
  cr_assert_leq(l.at, 5 * WD_SEC + WD_SEC, "within a tick");
  cr_assert_geq(l.seen.held, 5 * WD_SEC);
  cr_assert_eq(l.seen.threshold, 5 * WD_SEC);
  cr_assert_not_null(strstr(l.file, "test-pool-life.c"), "%s", l.file);
  cr_assert_eq(l.seen.line, leak_line);
  cr_assert_str_eq(l.task, "leaker");
  assert_backend_clean(&l.be);
  assert_no_leaks();
}

static int leak_stderr_main(wd_task *self, void *arg) {
  leaks *l = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = &l->be,
                                            .min_idle = 1,
                                            .leak_threshold = 5 * WD_SEC}),
               0);
  cr_assert_eq(wd_spawn(&g, leaker, p, NULL), 0);
  capture cap;
  capture_begin(&cap);
  cr_assert_eq(wd_sleep(self, 30 * WD_SEC), 0);
  char *err = capture_end(&cap);
  cr_assert_not_null(strstr(err, "warden: pool 'pg': item held for 5."), "%s",
                     err);
  cr_assert_not_null(strstr(err, "(leak threshold 5.000 s), acquired at "),
                     "%s", err);
  char site[64];
  snprintf(site, sizeof site, "test-pool-life.c:%d by task", leak_line);
  cr_assert_not_null(strstr(err, site), "%s", err);
  cr_assert_not_null(strstr(err, "'leaker' (reported once)"), "%s", err);
  cr_assert_null(strstr(strstr(err, "reported once") + 1, "warden: pool"),
                 "only once: %s", err);
  free(err);
  cr_assert_eq(wd_pool_close(self, p), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return 0;
}

Test(pool_life, without_a_hook_a_leak_is_reported_on_stderr) {
  static leaks l;
  memset(&l, 0, sizeof l);
  cr_assert_eq(run_virtual(leak_stderr_main, &l), 0);
  assert_backend_clean(&l.be);
  assert_no_leaks();
}

/* ---- health
 * ----------------------------------------------------------------------- */

static int health_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &full_factory,
                                            .arg = be,
                                            .max_size = 2,
                                            .fail_after = 1,
                                            .backoff_min = WD_SEC,
                                            .backoff_max = WD_SEC}),
               0);
  /* No item: one is made and checked. */
  cr_assert_eq(wd_pool_health(self, p), 0);
  cr_assert_eq(be->creates, 1);
  cr_assert_eq(be->validates, 1);
  /* An idle item (once its reset is done): checked. */
  cr_assert_eq(wd_yield(self), 0);
  cr_assert_eq(stats_of(p).idle, 1);
  cr_assert_eq(wd_pool_health(self, p), 0);
  cr_assert_eq(be->validates, 2);
  /* A failing check: the item is destroyed, the error reported. */
  cr_assert_eq(wd_yield(self), 0);
  be->validate_fail = -EPIPE;
  int rc = wd_pool_health(self, p);
  cr_assert_eq(rc, -EPIPE, "%s: %s", wd_err_name(rc), last_msg(self));
  cr_assert_str_eq(last_msg(self),
                   "pool 'pg': health: an item failed validation");
  cr_assert_str_eq(wd_task_error(self)->cause->msg, "ping failed");
  cr_assert_eq(wd_yield(self), 0); /* a worker destroys it */
  cr_assert_eq(be->destroys, 1);
  be->validate_fail = 0;
  /* Items in use and none idle: healthy on the pool's state alone. */
  conn *a, *b;
  cr_assert_eq(borrow(self, p, &a), 0);
  cr_assert_eq(borrow(self, p, &b), 0);
  int v = be->validates;
  cr_assert_eq(wd_pool_health(self, p), 0);
  cr_assert_eq(be->validates, v);
  give_back(self, p, a, WD_POOL_BROKEN);
  give_back(self, p, b, WD_POOL_BROKEN);
  /* Down: the create's error. */
  be->down = true;
  rc = wd_pool_health(self, p);
  cr_assert_eq(rc, -ECONNREFUSED, "%s", last_msg(self));
  cr_assert_eq(wd_pool_health(self, p), -ECONNREFUSED);
  cr_assert_not_null(strstr(last_msg(self), "cannot create an item"));
  be->down = false;
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool_life, health_is_the_pools_state_plus_one_validated_item) {
  backend be = {0};
  cr_assert_eq(run_virtual(health_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}

/* ---- acquire_try
 * ------------------------------------------------------------------ */

static int try_main(wd_task *self, void *arg) {
  backend *be = arg;
  wd_pool *p;
  cr_assert_eq(wd_pool_open(self, &p,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = be,
                                            .max_size = 1}),
               0);
  void *item = (void *)1;
  cr_assert_eq(wd_pool_acquire_try(self, p, &item), WD_EAGAIN);
  cr_assert_null(item);
  cr_assert_eq(wd_yield(self), 0); /* the try asked for nothing */
  cr_assert_eq(be->creates, 0);
  conn *c;
  cr_assert_eq(borrow(self, p, &c), 0);
  give_back(self, p, c, WD_POOL_OK);
  cr_assert_eq(wd_pool_acquire_try(self, p, &item), 0);
  cr_assert_eq(item, c);
  cr_assert_eq(wd_pool_acquire_try(self, p, &item), WD_EAGAIN);
  cr_assert_eq(wd_pool_release(self, p, c, WD_POOL_OK), 0);
  cr_assert_eq(wd_pool_close(self, p), 0);
  return 0;
}

Test(pool_life, acquire_try_lends_an_idle_item_or_says_eagain) {
  backend be = {0};
  cr_assert_eq(run_virtual(try_main, &be), 0);
  assert_backend_clean(&be);
  assert_no_leaks();
}
