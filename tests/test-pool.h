/* What the pool tests share: a fake backend behind a pool factory, whose
 * items are `conn` records that know whether they are alive and in use,
 * so that a test can assert that no item is ever lent to two tasks at once
 * or used after it was destroyed, and that each one is destroyed exactly
 * once.  Its behaviour (down, failing every Nth create, slow calls,
 * failing validations and resets) is set per test; everything it does is
 * counted.  Time runs on the virtual clock. */
#ifndef WD_TEST_POOL_H
#define WD_TEST_POOL_H

#include <errno.h>
#include <string.h>

#include "sync-helpers.h"

typedef struct conn {
  int id;
  bool alive;
  bool in_use; /* set by the test's borrower between acquire and release */
  int uses;
  struct backend *be;
} conn;

typedef struct backend {
  /* behaviour */
  bool down;           /* creates fail with -ECONNREFUSED */
  int fail_every;      /* every Nth create fails (2: one in two) */
  int fail_first;      /* the first N creates fail */
  wd_time create_time; /* each call sleeps this long first */
  wd_time validate_time;
  wd_time reset_time;
  wd_time destroy_time;
  int yields;           /* each call also yields this many times */
  int validate_fail;    /* validate returns this (0: passes) */
  int validate_fail_id; /* ... only for this item id, if set */
  int reset_fail;
  int destroy_fail;
  /* counts */
  int create_calls, creates, destroys, validates, resets;
  int creating, most_creating;
  int live, most_live;
  int double_destroy; /* a destroy of a dead item: must stay 0 */
  int next_id;
  wd_time last_create_end;
} backend;

/* The backend's round trips: a sleep and some turns of the scheduler. */
static int be_wait(wd_task *self, const backend *be, wd_time t) {
  int rc = t ? wd_sleep(self, t) : 0;
  for (int i = 0; i < be->yields && rc == 0; i++)
    rc = wd_yield(self);
  return rc;
}

static int be_create(wd_task *self, void *item, void *arg) {
  backend *be = arg;
  conn *c = item;
  int n = ++be->create_calls;
  be->creating++;
  if (be->creating > be->most_creating) be->most_creating = be->creating;
  int rc = be_wait(self, be, be->create_time);
  be->creating--;
  be->last_create_end = wd_now(self);
  if (rc) return rc;
  if (be->down || n <= be->fail_first ||
      (be->fail_every && n % be->fail_every == 0))
    return wd_fail(self, -ECONNREFUSED, "connection refused");
  cr_assert(!c->alive, "create on a live item");
  c->id = ++be->next_id;
  c->alive = true;
  c->be = be;
  be->creates++;
  if (++be->live > be->most_live) be->most_live = be->live;
  return 0;
}

static int be_destroy(wd_task *self, void *item, void *arg) {
  backend *be = arg;
  conn *c = item;
  if (!c->alive) {
    be->double_destroy++;
    return 0;
  }
  cr_assert(!c->in_use, "item %d destroyed while in use", c->id);
  c->alive = false;
  be->destroys++;
  be->live--;
  (void)be_wait(self, be, be->destroy_time);
  if (be->destroy_fail) return wd_fail(self, be->destroy_fail, "close failed");
  return 0;
}

static int be_validate(wd_task *self, void *item, void *arg) {
  backend *be = arg;
  conn *c = item;
  cr_assert(c->alive && !c->in_use, "validating item %d in a bad state", c->id);
  be->validates++;
  int rc = be_wait(self, be, be->validate_time);
  if (rc) return rc;
  if (be->validate_fail &&
      (!be->validate_fail_id || c->id == be->validate_fail_id))
    return wd_fail(self, be->validate_fail, "ping failed");
  return 0;
}

static int be_reset(wd_task *self, void *item, void *arg) {
  backend *be = arg;
  conn *c = item;
  cr_assert(c->alive && !c->in_use, "resetting item %d in a bad state", c->id);
  be->resets++;
  int rc = be_wait(self, be, be->reset_time);
  if (rc) return rc;
  if (be->reset_fail) return wd_fail(self, be->reset_fail, "rollback failed");
  return 0;
}

/* create and destroy only */
static const wd_pool_factory plain_factory = {
    .item_size = sizeof(conn), .create = be_create, .destroy = be_destroy};

/* all four */
static const wd_pool_factory full_factory = {.item_size = sizeof(conn),
                                             .create = be_create,
                                             .destroy = be_destroy,
                                             .validate = be_validate,
                                             .reset = be_reset};

/* Take an item, check it and mark it in use.  Returns the acquire's rc. */
static inline int borrow(wd_task *self, wd_pool *p, conn **out) {
  void *item;
  int rc = wd_pool_acquire(self, p, &item);
  if (rc) {
    cr_assert_null(item, "a failed acquire leaves *out NULL");
    *out = NULL;
    return rc;
  }
  conn *c = item;
  cr_assert(c->alive, "lent a dead item");
  cr_assert(!c->in_use, "item %d lent to two tasks at once", c->id);
  c->in_use = true;
  c->uses++;
  *out = c;
  return 0;
}

static inline void give_back(wd_task *self, wd_pool *p, conn *c,
                             wd_pool_status st) {
  cr_assert(c->in_use);
  c->in_use = false;
  cr_assert_eq(wd_pool_release(self, p, c, st), 0);
}

static inline wd_pool_stats stats_of(const wd_pool *p) {
  wd_pool_stats st;
  cr_assert_eq(wd_pool_stats_get(p, &st), 0);
  return st;
}

/* The books balance: every item that exists is idle, lent or in the
 * pool's hands, and nobody waits. */
static inline void assert_quiet(const wd_pool *p) {
  wd_pool_stats st = stats_of(p);
  cr_assert_eq(st.waiting, 0, "%zu waiting", st.waiting);
  cr_assert_geq(st.size, st.idle + st.in_use);
}

/* After close: the backend saw each item destroyed exactly once. */
static inline void assert_backend_clean(const backend *be) {
  cr_assert_eq(be->double_destroy, 0, "an item was destroyed twice");
  cr_assert_eq(be->live, 0, "%d items never destroyed", be->live);
  cr_assert_eq(be->creates, be->destroys);
}

#endif
