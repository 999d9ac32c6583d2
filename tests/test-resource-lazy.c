/* Lazy resources: one open shared by concurrent first users, a failure
 * reported to every waiter and retried by the next use, cancellation of a
 * waiter and of the opener, deinit (also during an open), a resource
 * closed behind the lazy's back, synchronous use, and every allocation
 * failure point.  Time runs on the virtual clock. */
#include <string.h>

#include "helpers.h"

typedef struct probe_cfg {
  wd_time open_sleep;
  int fail_first; /* how many opens fail */
} probe_cfg;

static int open_calls, opens, closes;

static int probe_open(wd_task *self, void *data, const void *config) {
  const probe_cfg *c = config;
  open_calls++;
  if (c->open_sleep) {
    int rc = wd_sleep(self, c->open_sleep);
    if (rc) return rc;
  }
  if (open_calls <= c->fail_first)
    return wd_fail(self, -ECONNREFUSED, "backend down (attempt %d)",
                   open_calls);
  opens++;
  *(int *)data = open_calls;
  return 0;
}

static int probe_close(wd_task *self, void *data, wd_outcome how) {
  closes++;
  return 0;
}

static const wd_resource_type probe_type = {.name = "probe",
                                            .size = sizeof(int),
                                            .open = probe_open,
                                            .close = probe_close};

static void reset(void) { open_calls = opens = closes = 0; }

/* One user of the lazy: what it got and when. */
typedef struct user {
  wd_lazy *l;
  wd_time start; /* sleep before using it */
  int rc;
  wd_resource *r;
  wd_time at;
  char msg[160];
  wd_handle h;
} user;

static int user_task(wd_task *self, void *arg) {
  user *u = arg;
  if (u->start) wd_sleep(self, u->start);
  u->rc = wd_lazy_get(self, u->l, &u->r);
  u->at = wd_now(self);
  const wd_error *e = wd_task_error(self);
  if (u->rc && e) snprintf(u->msg, sizeof u->msg, "%s", e->msg);
  return 0;
}

static int spawn_users(wd_group *g, user *u, size_t n, wd_lazy *l) {
  for (size_t i = 0; i < n; i++) {
    u[i].l = l;
    int rc = wd_spawn(g, user_task, &u[i], &(wd_spawn_opts){.handle = &u[i].h});
    if (rc) return rc;
  }
  return 0;
}

/* ---- single flight --------------------------------------------------------
 */

#define CROWD 100

typedef struct crowd {
  probe_cfg cfg;
  user u[CROWD];
} crowd;

static int crowd_main(wd_task *self, void *arg) {
  crowd *c = arg;
  wd_lazy l;
  cr_assert_eq(wd_lazy_init(&l, &probe_type, &c->cfg, "db"), 0);
  wd_group g;
  wd_group_enter(self, &g, NULL);
  spawn_users(&g, c->u, CROWD, &l);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_lazy_opens(&l), 1);
  wd_resource *r;
  cr_assert_eq(wd_lazy_get(self, &l, &r), 0, "later uses take it at once");
  cr_assert_eq(r, c->u[0].r);
  cr_assert_eq(wd_lazy_opens(&l), 1);
  return wd_lazy_deinit(self, &l);
}

Test(lazy, a_hundred_concurrent_first_users_share_one_open) {
  reset();
  crowd c = {.cfg = {.open_sleep = WD_SEC}};
  cr_assert_eq(run_virtual(crowd_main, &c), 0);
  cr_assert_eq(open_calls, 1);
  for (int i = 0; i < CROWD; i++) {
    cr_assert_eq(c.u[i].rc, 0, "user %d: %s", i, wd_err_name(c.u[i].rc));
    cr_assert_eq(c.u[i].r, c.u[0].r);
    cr_assert_eq(c.u[i].at, WD_SEC);
  }
  cr_assert_eq(closes, 1, "deinit closed it");
  assert_no_leaks();
}

/* ---- failures -------------------------------------------------------------
 */

typedef struct failing {
  probe_cfg cfg;
  user u[5];
  user retry;
} failing;

static int failing_main(wd_task *self, void *arg) {
  failing *f = arg;
  wd_lazy l;
  wd_lazy_init(&l, &probe_type, &f->cfg, "db");
  wd_group g;
  wd_group_enter(self, &g, NULL);
  spawn_users(&g, f->u, 5, &l);
  f->retry.start = 2 * WD_SEC; /* after the first open failed */
  spawn_users(&g, &f->retry, 1, &l);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_lazy_opens(&l), 2);
  cr_assert_eq(*(int *)wd_resource_data(f->retry.r), 2, "the second open");
  return wd_lazy_deinit(self, &l);
}

Test(lazy, a_failed_open_reaches_every_waiter_and_the_next_use_retries) {
  reset();
  failing f = {.cfg = {.open_sleep = WD_SEC, .fail_first = 1}};
  cr_assert_eq(run_virtual(failing_main, &f), 0);
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(f.u[i].rc, -ECONNREFUSED, "user %d", i);
    cr_assert_eq(f.u[i].at, WD_SEC);
    cr_assert_null(f.u[i].r);
    /* The opener keeps the chained error; each waiter records it flat. */
    cr_assert_str_eq(f.u[i].msg,
                     i == 0 ? "resource 'db' (probe): open failed"
                            : "resource 'db' (probe): open failed: backend "
                              "down (attempt 1)",
                     "user %d: %s", i, f.u[i].msg);
  }
  cr_assert_eq(f.retry.rc, 0);
  cr_assert_eq(f.retry.at, 3 * WD_SEC);
  cr_assert_eq(open_calls, 2);
  cr_assert_eq(closes, 1);
  assert_no_leaks();
}

/* ---- cancellation ---------------------------------------------------------
 */

typedef struct cancelling {
  probe_cfg cfg;
  user u[3];
  int victim; /* whose handle is cancelled at 0.5 s */
} cancelling;

static int cancelling_main(wd_task *self, void *arg) {
  cancelling *c = arg;
  wd_lazy l;
  wd_lazy_init(&l, &probe_type, &c->cfg, "db");
  wd_group g;
  wd_group_enter(self, &g, NULL);
  spawn_users(&g, c->u, 3, &l);
  wd_sleep(self, WD_SEC / 2);
  wd_handle_cancel(&c->u[c->victim].h);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  c->cfg.fail_first = (int)wd_lazy_opens(&l); /* report it */
  return wd_lazy_deinit(self, &l);
}

Test(lazy, a_cancelled_waiter_does_not_cancel_the_open_for_the_others) {
  reset();
  cancelling c = {.cfg = {.open_sleep = WD_SEC}, .victim = 1};
  cr_assert_eq(run_virtual(cancelling_main, &c), 0);
  cr_assert_eq(c.u[1].rc, WD_ECANCELED);
  cr_assert_eq(c.u[1].at, WD_SEC / 2);
  for (int i = 0; i < 3; i += 2) {
    cr_assert_eq(c.u[i].rc, 0, "user %d", i);
    cr_assert_eq(c.u[i].at, WD_SEC, "user %d: the open went on", i);
  }
  cr_assert_eq(open_calls, 1);
  cr_assert_eq(c.cfg.fail_first, 1, "one open");
  assert_no_leaks();
}

Test(lazy, a_cancelled_opener_hands_the_open_to_a_waiter) {
  reset();
  cancelling c = {.cfg = {.open_sleep = WD_SEC}, .victim = 0};
  cr_assert_eq(run_virtual(cancelling_main, &c), 0);
  cr_assert_eq(c.u[0].rc, WD_ECANCELED);
  cr_assert_eq(c.u[0].at, WD_SEC / 2);
  for (int i = 1; i < 3; i++) {
    cr_assert_eq(c.u[i].rc, 0, "user %d: %s", i, wd_err_name(c.u[i].rc));
    cr_assert_eq(c.u[i].at, WD_SEC / 2 + WD_SEC, "user %d", i);
    cr_assert_eq(c.u[i].r, c.u[1].r);
  }
  cr_assert_eq(open_calls, 2, "the first attempt was cancelled");
  cr_assert_eq(opens, 1);
  cr_assert_eq(closes, 1);
  assert_no_leaks();
}

/* ---- deinit ---------------------------------------------------------------
 */

typedef struct ending {
  probe_cfg cfg;
  user u[2];
  int deinit_rc;
  wd_time deinit_at;
} ending;

static int deinit_during_open_main(wd_task *self, void *arg) {
  ending *e = arg;
  wd_lazy l;
  wd_lazy_init(&l, &probe_type, &e->cfg, "db");
  wd_group g;
  wd_group_enter(self, &g, NULL);
  spawn_users(&g, e->u, 2, &l);
  wd_sleep(self, WD_SEC / 2);
  e->deinit_rc = wd_lazy_deinit(self, &l);
  e->deinit_at = wd_now(self);
  wd_resource *r;
  cr_assert_eq(wd_lazy_get(self, &l, &r), WD_ECLOSED);
  cr_assert_str_eq(wd_task_error(self)->msg, "lazy resource 'db' is closed");
  cr_assert_eq(wd_lazy_deinit(self, &l), 0, "idempotent");
  return wd_group_exit(self, &g, 0);
}

Test(lazy, deinit_during_an_open_waits_for_it_and_closes_what_it_opened) {
  reset();
  ending e = {.cfg = {.open_sleep = WD_SEC}};
  cr_assert_eq(run_virtual(deinit_during_open_main, &e), 0);
  cr_assert_eq(e.deinit_rc, 0);
  cr_assert_eq(e.deinit_at, WD_SEC);
  for (int i = 0; i < 2; i++)
    cr_assert_eq(e.u[i].rc, WD_ECLOSED, "user %d: %s", i,
                 wd_err_name(e.u[i].rc));
  cr_assert_eq(opens, 1);
  cr_assert_eq(closes, 1);
  assert_no_leaks();
}

static int closed_behind_main(wd_task *self, void *arg) {
  probe_cfg *cfg = arg;
  wd_lazy l;
  wd_lazy_init(&l, &probe_type, cfg, "db");
  wd_resource *r, *again;
  cr_assert_eq(wd_lazy_get(self, &l, &r), 0);
  cr_assert_eq(wd_resource_close(self, r, 0), 0);
  cr_assert_eq(wd_resource_state_of(r), WD_RESOURCE_CLOSED,
               "the lazy still holds it");
  cr_assert_eq(wd_lazy_get(self, &l, &again), 0);
  cr_assert_eq(wd_resource_state_of(again), WD_RESOURCE_READY);
  cr_assert_eq(wd_lazy_opens(&l), 2);
  return wd_lazy_deinit(self, &l);
}

Test(lazy, a_resource_closed_behind_its_back_is_opened_again) {
  reset();
  probe_cfg cfg = {0};
  cr_assert_eq(run_virtual(closed_behind_main, &cfg), 0);
  cr_assert_eq(opens, 2);
  cr_assert_eq(closes, 2);
  assert_no_leaks();
}

Test(lazy, synchronous_use_and_bad_arguments) {
  reset();
  probe_cfg cfg = {0};
  wd_lazy l;
  static const wd_resource_type empty = {.name = "empty"};
  cr_assert_eq(wd_lazy_init(NULL, &probe_type, &cfg, "x"), WD_EINVAL);
  cr_assert_eq(wd_lazy_init(&l, NULL, &cfg, "x"), WD_EINVAL);
  cr_assert_str_eq(wd_last_error()->msg, "wd_lazy_init: NULL resource type");
  cr_assert_eq(wd_lazy_init(&l, &empty, &cfg, "x"), WD_EINVAL);
  cr_assert_str_eq(wd_last_error()->msg,
                   "wd_lazy_init: resource type 'empty' has size 0");
  cr_assert_eq(wd_lazy_init(&l, &probe_type, &cfg, NULL), 0);
  cr_assert_str_eq(l.name_, "probe");
  wd_resource *r;
  cr_assert_eq(wd_lazy_get(NULL, NULL, &r), WD_EINVAL);
  cr_assert_eq(wd_lazy_get(NULL, &l, NULL), WD_EINVAL);
  cr_assert_eq(wd_lazy_get(NULL, &l, &r), 0, "opened without a runtime");
  cr_assert_eq(opens, 1);
  cr_assert_eq(wd_lazy_deinit(NULL, &l), 0);
  cr_assert_eq(closes, 1);
  assert_no_leaks();
}

/* ---- every allocation failure point ------------------------------------- */

static int faults_main(wd_task *self, void *arg) {
  failing *f = arg;
  wd_lazy l;
  wd_lazy_init(&l, &probe_type, &f->cfg, "db");
  wd_group g;
  int rc = wd_group_enter(self, &g, NULL);
  if (rc) return rc;
  rc = spawn_users(&g, f->u, 5, &l);
  if (rc == 0) {
    f->retry.start = 2 * WD_SEC;
    rc = spawn_users(&g, &f->retry, 1, &l);
  }
  rc = wd_group_exit(self, &g, rc);
  return wd_lazy_deinit(self, &l) ? -EIO : rc;
}

Test(lazy, allocation_failure_at_every_point_is_clean) {
  for (long n = 1;; n++) {
    reset();
    failing f = {.cfg = {.open_sleep = WD_SEC, .fail_first = 1}};
    wd_alloc_fail_after(n);
    int rc = run_virtual(faults_main, &f);
    bool fired = wd_alloc_failed();
    wd_alloc_fail_after(0);
    cr_assert(rc == 0 || rc == WD_ENOMEM || rc == WD_EGROUP, "n=%ld: rc %s", n,
              wd_err_name(rc));
    cr_assert_eq(opens, closes, "n=%ld: %d opened, %d closed", n, opens,
                 closes);
    cr_assert_eq(wd_resource_leaks(), 0, "n=%ld", n);
    assert_no_leaks();
    if (!fired) {
      cr_assert_eq(rc, 0);
      cr_assert_eq(f.retry.rc, 0);
      break;
    }
    cr_assert_lt(n, 2000, "the fault loop does not end");
  }
}
