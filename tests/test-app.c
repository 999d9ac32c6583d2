/* The application manager and wd_run_app: reverse-order close past a
 * failing close with the first error kept, close timeouts and task graces
 * on the virtual clock, managed tasks cancelled at shutdown (and one that
 * overstays), the default manager closed at the runtime's end, bad
 * arguments and allocation failures; then wd_run_app itself - in this
 * process on the virtual clock for its outcomes and exit statuses, and in
 * child processes on the real clock for real signals: SIGTERM while
 * resources are busy, a second signal forcing the shutdown, a forced
 * shutdown that cannot finish, and the SIGUSR1/SIGQUIT dump.
 *
 * Resources and tasks append to one log ("close:b:ok close:a:error"), so a
 * test reads the order and each outcome at a glance.  The manager's own
 * reports go to a memory stream.  Child processes talk to the test through
 * pipes; the only waits on wall time are the bounded waits for them. */
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

/* ---- a log of what ran --------------------------------------------------- */

static char logbuf[2048];
static int opens, closes;

static void say(const char *fmt, const char *a, const char *b) {
  size_t n = strlen(logbuf);
  snprintf(logbuf + n, sizeof logbuf - n, fmt, a, b);
}

static void reset(void) {
  logbuf[0] = '\0';
  opens = closes = 0;
}

/* The manager's reports, in memory. */
typedef struct mlog {
  char *text;
  size_t len;
  FILE *f;
} mlog;

static FILE *mlog_open(mlog *l) {
  *l = (mlog){0};
  l->f = open_memstream(&l->text, &l->len);
  cr_assert_not_null(l->f);
  return l->f;
}

static const char *mlog_text(mlog *l) {
  fflush(l->f);
  return l->text;
}

static void mlog_close(mlog *l) {
  fclose(l->f);
  free(l->text);
}

/* ---- a resource type that logs ----------------------------------------- */

typedef struct probe_cfg {
  const char *name;
  int open_fail;
  wd_time close_sleep;
  int close_fail;
  wd_time *closed_at; /* where to store when the close ended */
} probe_cfg;

typedef struct probe {
  const probe_cfg *cfg;
} probe;

static int probe_open(wd_task *self, void *data, const void *config) {
  const probe_cfg *c = config;
  if (c->open_fail) return wd_fail(self, c->open_fail, "%s refused", c->name);
  ((probe *)data)->cfg = c;
  opens++;
  return 0;
}

static int probe_close(wd_task *self, void *data, wd_outcome how) {
  const probe_cfg *c = ((probe *)data)->cfg;
  closes++;
  say("close:%s:%s ", c->name, wd_outcome_name(how));
  int rc = c->close_sleep ? wd_sleep(self, c->close_sleep) : 0;
  if (c->closed_at) *c->closed_at = self ? wd_now(self) : 0;
  if (c->close_fail) return wd_fail(self, c->close_fail, "%s broke", c->name);
  return rc;
}

static const wd_resource_type probe_type = {.name = "probe",
                                            .size = sizeof(probe),
                                            .open = probe_open,
                                            .close = probe_close};

/* Same, with a 5 s grace stated, for the close timeout tests. */
static const wd_resource_type slow_type = {.name = "slow",
                                           .size = sizeof(probe),
                                           .open = probe_open,
                                           .close = probe_close,
                                           .close_grace = 5 * WD_SEC};

/* ---- reverse order, the first error, secondaries ------------------------ */

typedef struct three {
  probe_cfg cfg[3];
  int body_rc;
  int rc;
} three;

static int three_main(wd_task *self, void *arg) {
  three *t = arg;
  wd_manager *m;
  cr_assert_eq(wd_manager_open(self, &(wd_manager_opts){.name = "m"}, &m), 0);
  for (int i = 0; i < 3; i++) {
    wd_resource *r;
    cr_assert_eq(wd_manager_open_resource(self, m, &probe_type, &t->cfg[i],
                                          t->cfg[i].name, 0, &r),
                 0);
    cr_assert_eq(wd_manager_find(m, t->cfg[i].name), r);
  }
  cr_assert_eq(wd_manager_resources(m), 3);
  int rc = t->body_rc ? wd_fail(self, t->body_rc, "body broke") : 0;
  t->rc = wd_manager_close(self, m, rc);
  return 0;
}

Test(manager, closes_in_reverse_order_past_a_failing_close_keeping_its_error) {
  reset();
  three t = {
      .cfg = {{.name = "a"}, {.name = "b", .close_fail = -EIO}, {.name = "c"}}};
  cr_assert_eq(run_virtual(three_main, &t), 0);
  /* c closes first; b fails; a is still closed, told the shutdown failed. */
  cr_assert_str_eq(logbuf, "close:c:ok close:b:ok close:a:error ");
  cr_assert_eq(closes, 3);
  cr_assert_eq(t.rc, -EIO, "%s", wd_err_name(t.rc));
  const wd_error *e = wd_last_error();
  cr_assert_not_null(e);
  cr_assert_eq(e->code, -EIO);
  cr_assert_str_eq(e->msg, "resource 'b' (probe): close failed");
  cr_assert_not_null(e->cause);
  cr_assert_str_eq(e->cause->msg, "b broke");
  cr_assert_eq(e->nsecondary, 0);
  assert_no_leaks();
}

Test(manager, a_body_error_stays_first_and_close_failures_are_secondary) {
  reset();
  three t = {.cfg = {{.name = "a"},
                     {.name = "b", .close_fail = WD_EBUSY},
                     {.name = "c", .close_fail = -EIO}},
             .body_rc = WD_EPERM};
  cr_assert_eq(run_virtual(three_main, &t), 0);
  cr_assert_str_eq(logbuf, "close:c:error close:b:error close:a:error ");
  cr_assert_eq(t.rc, WD_EPERM);
  const wd_error *e = wd_last_error();
  cr_assert_str_eq(e->msg, "body broke");
  cr_assert_eq(e->nsecondary, 2);
  cr_assert_eq(e->nsecondary_kept, 2);
  cr_assert_eq(e->secondary[0]->code, -EIO, "in closing order");
  cr_assert_str_eq(e->secondary[0]->msg, "resource 'c' (probe): close failed");
  cr_assert_eq(e->secondary[1]->code, WD_EBUSY);
  assert_no_leaks();
}

/* Adopted resources, named by the registration; lookups; duplicates. */
static int adopt_main(wd_task *self, void *arg) {
  static const probe_cfg x = {.name = "x"}, y = {.name = "y"};
  wd_manager *m;
  cr_assert_eq(wd_manager_open(self, NULL, &m), 0);
  cr_assert_str_eq(wd_manager_name(m), "manager");
  wd_resource *rx, *ry, *dup;
  cr_assert_eq(wd_resource_open(self, &probe_type, &x, "x", &rx), 0);
  cr_assert_eq(wd_resource_open(self, &probe_type, &y, "y", &ry), 0);
  cr_assert_eq(wd_manager_register(self, m, "first", rx, 0), 0);
  cr_assert_eq(wd_manager_register(self, m, NULL, ry, 0), 0);
  cr_assert_eq(wd_manager_find(m, "first"), rx);
  cr_assert_eq(wd_manager_find(m, "y"), ry);
  cr_assert_null(wd_manager_find(m, "x"), "found by its registration name");
  cr_assert_null(wd_manager_find(m, NULL));
  /* A taken name: the resource handed over is closed, not lost. */
  cr_assert_eq(wd_resource_open(self, &probe_type, &x, "x2", &dup), 0);
  cr_assert_eq(wd_manager_register(self, m, "first", dup, 0), WD_EBUSY);
  cr_assert_str_eq(wd_last_error()->msg,
                   "manager 'manager': a resource named 'first' is "
                   "registered already");
  cr_assert_str_eq(logbuf, "close:x:error ");
  cr_assert_eq(wd_manager_close(self, m, 0), 0);
  cr_assert_str_eq(logbuf, "close:x:error close:y:ok close:x:ok ");
  return 0;
}

Test(manager, adopted_resources_close_in_reverse_order_of_registration) {
  reset();
  cr_assert_eq(run_virtual(adopt_main, NULL), 0);
  cr_assert_eq(opens, 3);
  cr_assert_eq(closes, 3);
  assert_no_leaks();
}

/* ---- close timeouts on the virtual clock -------------------------------- */

typedef struct timed {
  wd_time slow_closed, fast_closed;
  probe_cfg slow, fast;
  wd_time reg_timeout, mgr_timeout;
  mlog log;
  int rc;
} timed;

static int timed_main(wd_task *self, void *arg) {
  timed *t = arg;
  wd_manager *m;
  cr_assert_eq(
      wd_manager_open(self,
                      &(wd_manager_opts){.name = "m",
                                         .close_timeout = t->mgr_timeout,
                                         .log = t->log.f},
                      &m),
      0);
  wd_resource *r;
  cr_assert_eq(
      wd_manager_open_resource(self, m, &probe_type, &t->fast, "fast", 0, &r),
      0);
  cr_assert_eq(wd_manager_open_resource(self, m, &slow_type, &t->slow, "slow",
                                        t->reg_timeout, &r),
               0);
  t->rc = wd_manager_close(self, m, 0);
  return 0;
}

Test(manager, a_close_that_outruns_its_timeout_is_cut_there) {
  reset();
  timed t = {.slow = {.name = "slow", .close_sleep = 2 * WD_SEC},
             .fast = {.name = "fast"},
             .reg_timeout = WD_SEC};
  t.slow.closed_at = &t.slow_closed;
  t.fast.closed_at = &t.fast_closed;
  mlog_open(&t.log);
  cr_assert_eq(run_virtual(timed_main, &t), 0);
  /* Cut at 1 s, although its type's grace is 5 s; the earlier resource is
   * closed right after it, in order.  The first error is a timeout: what
   * closes after it is told "cancel", as a scope tells its cleanups. */
  cr_assert_str_eq(logbuf, "close:slow:ok close:fast:cancel ");
  cr_assert_eq(t.slow_closed, WD_SEC);
  cr_assert_eq(t.fast_closed, WD_SEC);
  cr_assert_eq(t.rc, WD_ETIMEDOUT);
  const wd_error *e = wd_last_error();
  cr_assert_str_eq(e->msg, "resource 'slow' (slow): close failed");
  cr_assert_not_null(e->cause);
  cr_assert_str_eq(e->cause->msg, "close: timed out after 1.000 s");
  cr_assert_not_null(strstr(mlog_text(&t.log),
                            "manager 'm': resource 'slow' (slow) failed to "
                            "close after 1.000 s: WD_ETIMEDOUT"),
                     "%s", t.log.text);
  mlog_close(&t.log);
  assert_no_leaks();
}

Test(manager, the_default_close_timeout_applies_before_the_type_grace) {
  reset();
  /* The close would take 60 s and the type's grace is 5 s: the manager's
   * default timeout (1 s) cuts it. */
  timed t = {.slow = {.name = "slow", .close_sleep = 60 * WD_SEC},
             .fast = {.name = "fast"},
             .mgr_timeout = WD_SEC};
  t.slow.closed_at = &t.slow_closed;
  t.fast.closed_at = &t.fast_closed;
  mlog_open(&t.log);
  cr_assert_eq(run_virtual(timed_main, &t), 0);
  cr_assert_eq(t.slow_closed, WD_SEC);
  cr_assert_eq(t.fast_closed, WD_SEC);
  cr_assert_eq(t.rc, WD_ETIMEDOUT);
  const wd_error *e = wd_last_error();
  cr_assert_str_eq(e->msg, "resource 'slow' (slow): close failed");
  const char *text = mlog_text(&t.log);
  cr_assert_not_null(strstr(text, "failed to close after 1.000 s"), "%s", text);
  cr_assert_not_null(strstr(text, "shut down with 1 error"), "%s", text);
  mlog_close(&t.log);
  assert_no_leaks();
}

Test(manager, without_a_timeout_the_type_grace_bounds_the_close) {
  reset();
  timed t = {.slow = {.name = "slow", .close_sleep = 60 * WD_SEC},
             .fast = {.name = "fast"}};
  t.slow.closed_at = &t.slow_closed;
  t.fast.closed_at = &t.fast_closed;
  mlog_open(&t.log);
  cr_assert_eq(run_virtual(timed_main, &t), 0);
  cr_assert_eq(t.slow_closed, 5 * WD_SEC, "slow_type's close_grace");
  cr_assert_eq(t.rc, WD_ETIMEDOUT);
  mlog_close(&t.log);
  assert_no_leaks();
}

Test(manager, a_close_within_its_timeout_is_not_reported) {
  reset();
  timed t = {.slow = {.name = "slow", .close_sleep = WD_SEC / 2},
             .fast = {.name = "fast"},
             .reg_timeout = WD_SEC};
  mlog_open(&t.log);
  cr_assert_eq(run_virtual(timed_main, &t), 0);
  cr_assert_eq(t.rc, 0);
  cr_assert_str_eq(mlog_text(&t.log), "");
  mlog_close(&t.log);
  assert_no_leaks();
}

/* ---- managed tasks ------------------------------------------------------ */

typedef struct sleeper {
  wd_time sleep;
  bool stubborn; /* ignores its cancellation (shielded) */
  int fail;      /* fails after its sleep */
  int rc;
  wd_time ended;
} sleeper;

static int sleeper_task(wd_task *self, void *arg) {
  sleeper *s = arg;
  wd_cancel_scope sh;
  if (s->stubborn)
    wd_cancel_scope_enter(self, &sh, &(wd_cancel_opts){.shield = true});
  s->rc = wd_sleep(self, s->sleep);
  if (s->stubborn) wd_cancel_scope_exit(self, &sh, 0);
  s->ended = wd_now(self);
  say("task:%s%s ", wd_task_name(self), s->rc ? ":cancelled" : "");
  if (s->fail)
    return wd_fail(self, s->fail, "%s: disk gone", wd_task_name(self));
  return s->rc;
}

typedef struct tasks {
  sleeper s[2];
  const char *names[2];
  wd_time grace;
  wd_time close_at; /* when the manager is closed */
  wd_time res_closed;
  probe_cfg cfg;
  mlog log;
  int rc;
  int health_rc;
  char health_msg[160];
} tasks;

static int find_manager(const wd_resource_info *info, void *arg) {
  if (strcmp(info->type->name, "manager") != 0) return 0;
  *(wd_resource **)arg = info->resource;
  return 1;
}

static int tasks_main(wd_task *self, void *arg) {
  tasks *t = arg;
  wd_manager *m;
  cr_assert_eq(wd_manager_open(self,
                               &(wd_manager_opts){.name = "m",
                                                  .task_grace = t->grace,
                                                  .log = t->log.f},
                               &m),
               0);
  wd_resource *r;
  t->cfg = (probe_cfg){.name = "r", .closed_at = &t->res_closed};
  cr_assert_eq(
      wd_manager_open_resource(self, m, &probe_type, &t->cfg, NULL, 0, &r), 0);
  for (int i = 0; i < 2; i++)
    if (t->names[i])
      cr_assert_eq(wd_manager_spawn(m, t->names[i], sleeper_task, &t->s[i]), 0);
  cr_assert_eq(wd_manager_tasks(m),
               (t->names[0] != NULL) + (t->names[1] != NULL));
  if (t->close_at) cr_assert_eq(wd_sleep(self, t->close_at), 0);
  /* The manager's own health check (its resource in the registry). */
  wd_resource *anchor = NULL;
  wd_resource_each(NULL, find_manager, &anchor);
  cr_assert_not_null(anchor);
  t->health_rc = wd_resource_health(self, anchor);
  if (t->health_rc)
    snprintf(t->health_msg, sizeof t->health_msg, "%s", wd_last_error()->msg);
  t->rc = wd_manager_close(self, m, 0);
  return 0;
}

Test(manager, managed_tasks_are_cancelled_at_shutdown_before_the_resources) {
  reset();
  tasks t = {.s = {{.sleep = WD_TIME_NEVER}, {.sleep = 3600 * WD_SEC}},
             .names = {"ticker", "flusher"},
             .close_at = WD_SEC};
  mlog_open(&t.log);
  cr_assert_eq(run_virtual(tasks_main, &t), 0);
  cr_assert_eq(t.rc, 0);
  cr_assert_eq(t.health_rc, 0);
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(t.s[i].rc, WD_ECANCELED);
    cr_assert_eq(t.s[i].ended, WD_SEC, "cancelled at once");
  }
  cr_assert_str_eq(logbuf,
                   "task:ticker:cancelled task:flusher:cancelled close:r:ok ");
  cr_assert_str_eq(mlog_text(&t.log), "", "nothing to report");
  mlog_close(&t.log);
  assert_no_leaks();
}

Test(manager, a_task_that_overstays_its_grace_is_reported_by_name) {
  reset();
  tasks t = {
      .s = {{.sleep = 10 * WD_SEC, .stubborn = true}, {.sleep = WD_TIME_NEVER}},
      .names = {"stubborn", "polite"},
      .grace = WD_SEC};
  mlog_open(&t.log);
  cr_assert_eq(run_virtual(tasks_main, &t), 0);
  cr_assert_eq(t.s[1].ended, 0, "the polite one ends at once");
  cr_assert_eq(t.s[0].ended, 10 * WD_SEC);
  /* Still waited for (no task outlives its group), then the resource. */
  cr_assert_eq(t.res_closed, 10 * WD_SEC);
  cr_assert_str_eq(logbuf,
                   "task:polite:cancelled task:stubborn close:r:cancel ");
  cr_assert_eq(t.rc, WD_ETIMEDOUT);
  cr_assert_str_eq(wd_last_error()->msg,
                   "manager 'm': task 'stubborn' ignored its cancellation "
                   "for 1.000 s");
  cr_assert_not_null(strstr(mlog_text(&t.log),
                            "manager 'm': task 'stubborn' is still running "
                            "1.000 s after it was cancelled; waiting for it\n"),
                     "%s", t.log.text);
  cr_assert_null(strstr(t.log.text, "polite"), "%s", t.log.text);
  mlog_close(&t.log);
  assert_no_leaks();
}

Test(manager, a_failing_task_is_reported_at_once_and_does_not_stop_the_others) {
  reset();
  tasks t = {.s = {{.sleep = WD_SEC, .fail = -EIO}, {.sleep = WD_TIME_NEVER}},
             .names = {"failer", "steady"},
             .close_at = 2 * WD_SEC};
  mlog_open(&t.log);
  cr_assert_eq(run_virtual(tasks_main, &t), 0);
  cr_assert_eq(t.s[1].ended, 2 * WD_SEC, "supervised: steady ran on");
  cr_assert_eq(t.health_rc, WD_EGROUP);
  cr_assert_str_eq(t.health_msg,
                   "manager 'm': 1 managed task failed (last: 'failer')");
  cr_assert_eq(t.rc, WD_EGROUP);
  const wd_error *e = wd_last_error();
  cr_assert_eq(e->nchildren, 1);
  cr_assert_str_eq(e->children[0]->msg, "failer: disk gone");
  cr_assert_str_eq(mlog_text(&t.log),
                   "manager 'm': task 'failer' failed: EIO: failer: disk "
                   "gone\n"
                   "manager 'm': shut down with 1 error in 0.000 s\n");
  mlog_close(&t.log);
  assert_no_leaks();
}

/* A task cancelled at shutdown tries to add work: refused, nothing lost. */
typedef struct latecomer {
  wd_manager *m;
  int spawn_rc, reg_rc;
} latecomer;

static int noop_task(wd_task *self, void *arg) { return 0; }

static int latecomer_task(wd_task *self, void *arg) {
  latecomer *l = arg;
  int rc = wd_sleep(self, WD_TIME_NEVER);
  cr_assert_eq(rc, WD_ECANCELED);
  l->spawn_rc = wd_manager_spawn(l->m, "late", noop_task, NULL);
  static const probe_cfg c = {.name = "late"};
  wd_resource *r;
  cr_assert_eq(wd_resource_open(self, &probe_type, &c, NULL, &r), WD_ECANCELED,
               "a cancelled task opens nothing");
  wd_cancel_scope sh;
  wd_cancel_scope_enter(self, &sh, &(wd_cancel_opts){.shield = true});
  cr_assert_eq(wd_resource_open(self, &probe_type, &c, NULL, &r), 0);
  l->reg_rc = wd_manager_register(self, l->m, NULL, r, 0);
  wd_cancel_scope_exit(self, &sh, 0);
  return rc;
}

static int latecomer_main(wd_task *self, void *arg) {
  latecomer *l = arg;
  cr_assert_eq(wd_manager_open(self, NULL, &l->m), 0);
  cr_assert_eq(wd_manager_spawn(l->m, "latecomer", latecomer_task, l), 0);
  cr_assert_eq(wd_yield(self), 0);
  return wd_manager_close(self, l->m, 0);
}

Test(manager, shutdown_refuses_new_tasks_and_resources_and_releases_them) {
  reset();
  latecomer l = {0};
  cr_assert_eq(run_virtual(latecomer_main, &l), 0);
  cr_assert_eq(l.spawn_rc, WD_ECLOSED);
  cr_assert_eq(l.reg_rc, WD_ECLOSED);
  cr_assert_str_eq(logbuf, "close:late:error ", "the resource was released");
  assert_no_leaks();
}

/* ---- the default manager ------------------------------------------------- */

typedef struct dflt {
  probe_cfg cfg[2];
  int spawn_rc;
} dflt;

static int dflt_main(wd_task *self, void *arg) {
  dflt *d = arg;
  wd_manager *m = wd_manager_default(self);
  cr_assert_not_null(m);
  cr_assert_eq(wd_manager_default(self), m, "one per runtime");
  cr_assert_eq(wd_manager_default(NULL), m, "found outside tasks too");
  cr_assert_str_eq(wd_manager_name(m), "default");
  wd_resource *r;
  for (int i = 0; i < 2; i++)
    cr_assert_eq(wd_manager_open_resource(self, m, &probe_type, &d->cfg[i],
                                          d->cfg[i].name, 0, &r),
                 0);
  d->spawn_rc = wd_manager_spawn(m, "bg", noop_task, NULL);
  /* The root's error is the caller's to read: the runtime's end keeps it. */
  return wd_fail(self, WD_EPERM, "main's own error");
}

Test(manager, the_default_manager_is_closed_at_the_end_of_the_runtime) {
  reset();
  dflt d = {.cfg = {{.name = "a"}, {.name = "b"}}};
  cr_assert_eq(run_virtual(dflt_main, &d), WD_EPERM);
  cr_assert_eq(d.spawn_rc, WD_ENOSYS, "no task of its own to own a group");
  cr_assert_str_eq(logbuf, "close:b:ok close:a:ok ");
  cr_assert_eq(wd_resource_leaks(), 0, "closed before the leak report");
  cr_assert_str_eq(wd_last_error()->msg, "main's own error");
  assert_no_leaks();
}

static int set_default_main(wd_task *self, void *arg) {
  wd_manager *m, *other;
  cr_assert_eq(wd_manager_open(self, &(wd_manager_opts){.name = "mine"}, &m),
               0);
  cr_assert_eq(wd_manager_set_default(self, m), 0);
  cr_assert_eq(wd_manager_default(self), m);
  cr_assert_eq(wd_manager_open(self, NULL, &other), 0);
  cr_assert_eq(wd_manager_set_default(self, other), WD_EBUSY);
  cr_assert_eq(wd_manager_close(self, other, 0), 0);
  cr_assert_eq(wd_manager_close(self, m, 0), 0);
  /* Closed: the runtime makes a default of its own on the next use, and a
   * task may close that one early. */
  wd_manager *d = wd_manager_default(self);
  cr_assert_not_null(d);
  cr_assert_str_eq(wd_manager_name(d), "default");
  static const probe_cfg c = {.name = "early"};
  wd_resource *r;
  cr_assert_eq(wd_manager_open_resource(self, d, &probe_type, &c, NULL, 0, &r),
               0);
  cr_assert_eq(wd_manager_close(self, d, 0), 0);
  cr_assert_str_eq(logbuf, "close:early:ok ");
  return 0;
}

Test(manager, set_default_installs_a_manager_until_it_is_closed) {
  reset();
  cr_assert_eq(run_virtual(set_default_main, NULL), 0);
  assert_no_leaks();
}

/* wd_dump() lists the managers, their tasks and resources. */
static int dump_main(wd_task *self, void *arg) {
  wd_manager *m;
  cr_assert_eq(wd_manager_open(self, &(wd_manager_opts){.name = "svc"}, &m), 0);
  static const probe_cfg c = {.name = "db"};
  wd_resource *r;
  cr_assert_eq(
      wd_manager_open_resource(self, m, &probe_type, &c, "db", 2 * WD_SEC, &r),
      0);
  sleeper s = {.sleep = WD_TIME_NEVER};
  cr_assert_eq(wd_manager_spawn(m, "worker", sleeper_task, &s), 0);
  cr_assert_eq(wd_yield(self), 0);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  wd_dump(f);
  fclose(f);
  cr_assert_not_null(strstr(text, "managers: 1 open\n"
                                  "  manager 'svc': running, 1 task, 1 "
                                  "resource\n"
                                  "    task 'worker': running\n"
                                  "    resource 'db' (probe): ready, close "
                                  "timeout 2.000 s\n"),
                     "%s", text);
  cr_assert_not_null(strstr(text, "(manager): ready, created test-app.c:"),
                     "%s", text);
  free(text);
  return wd_manager_close(self, m, 0);
}

Test(manager, the_dump_lists_managers_tasks_and_resources) {
  reset();
  cr_assert_eq(run_virtual(dump_main, NULL), 0);
  assert_no_leaks();
}

/* ---- bad arguments ------------------------------------------------------- */

static int other_rc;

static int other_closer(wd_task *self, void *arg) {
  other_rc = wd_manager_close(self, arg, 0);
  return 0;
}

static int bad_main(wd_task *self, void *arg) {
  wd_manager *m = (wd_manager *)1;
  cr_assert_eq(wd_manager_open(NULL, NULL, &m), WD_EINVAL);
  cr_assert_null(m);
  cr_assert_eq(wd_manager_open(self, NULL, NULL), WD_EINVAL);
  cr_assert_eq(wd_manager_open(self, &(wd_manager_opts){.task_grace = -1}, &m),
               WD_EINVAL);
  cr_assert_str_eq(wd_last_error()->msg, "manager 'manager': negative "
                                         "task_grace");
  cr_assert_eq(
      wd_manager_open(self, &(wd_manager_opts){.close_timeout = -1}, &m),
      WD_EINVAL);
  cr_assert_eq(wd_manager_open(self, NULL, &m), 0);

  static const probe_cfg c = {.name = "p"},
                         bad = {.name = "q", .open_fail = -EIO};
  wd_resource *r;
  cr_assert_eq(wd_manager_register(self, m, "x", NULL, 0), WD_EINVAL);
  cr_assert_eq(wd_resource_open(self, &probe_type, &c, NULL, &r), 0);
  cr_assert_eq(wd_manager_register(self, NULL, "x", r, 0), WD_EINVAL);
  cr_assert_str_eq(wd_last_error()->msg,
                   "wd_manager_register: NULL manager for 'x'");
  cr_assert_eq(wd_resource_open(self, &probe_type, &c, NULL, &r), 0);
  cr_assert_eq(wd_manager_register(self, m, "x", r, -5), WD_EINVAL);
  cr_assert_eq(closes, 2, "both handed-over resources were released");

  r = (wd_resource *)1;
  cr_assert_eq(wd_manager_open_resource(self, m, NULL, &c, "x", 0, &r),
               WD_EINVAL);
  cr_assert_null(r);
  cr_assert_eq(
      wd_manager_open_resource(self, NULL, &probe_type, &c, "x", 0, &r),
      WD_EINVAL);
  cr_assert_eq(wd_manager_open_resource(self, m, &probe_type, &c, "x", 0, NULL),
               WD_EINVAL);
  cr_assert_eq(wd_manager_open_resource(self, m, &probe_type, &bad, "q", 0, &r),
               -EIO);
  cr_assert_str_eq(wd_last_error()->msg, "resource 'q' (probe): open failed");
  cr_assert_eq(wd_manager_resources(m), 0, "nothing registered");

  cr_assert_eq(wd_manager_spawn(NULL, "t", noop_task, NULL), WD_EINVAL);
  cr_assert_eq(wd_manager_spawn(m, "t", NULL, NULL), WD_EINVAL);
  cr_assert_eq(wd_manager_set_default(self, NULL), WD_EINVAL);
  cr_assert_eq(wd_manager_close(self, NULL, WD_EPERM), WD_EPERM);
  cr_assert_eq(wd_app_shutdown(self), WD_EINVAL);
  cr_assert_null(wd_app_shutdown_reason(self));

  /* Only the task that opened a manager with tasks may close it. */
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, other_closer, m, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(other_rc, WD_EINVAL);
  cr_assert_eq(wd_manager_close(self, m, 0), 0);
  return 0;
}

Test(manager, bad_arguments_are_einval_and_release_what_was_handed_over) {
  reset();
  cr_assert_eq(run_virtual(bad_main, NULL), 0);
  assert_no_leaks();
}

/* ---- allocation failures --------------------------------------------------
 */

typedef struct busy {
  probe_cfg cfg[3];
  sleeper s[2];
} busy;

static int busy_main(wd_task *self, void *arg) {
  busy *b = arg;
  wd_manager *m;
  int rc = wd_manager_open(self, &(wd_manager_opts){.name = "m"}, &m);
  if (rc) return rc;
  wd_resource *r;
  for (int i = 0; i < 2 && !rc; i++)
    rc = wd_manager_open_resource(self, m, &probe_type, &b->cfg[i],
                                  b->cfg[i].name, WD_SEC, &r);
  if (!rc) rc = wd_resource_open(self, &probe_type, &b->cfg[2], "c", &r);
  if (!rc) rc = wd_manager_register(self, m, NULL, r, 0);
  for (int i = 0; i < 2 && !rc; i++)
    rc = wd_manager_spawn(m, i ? "t1" : "t0", sleeper_task, &b->s[i]);
  if (!rc) rc = wd_sleep(self, WD_SEC);
  if (!rc) rc = wd_fail(self, WD_EPERM, "the body fails");
  return wd_manager_close(self, m, rc);
}

Test(manager, allocation_failure_at_every_point_is_clean) {
  for (long n = 1;; n++) {
    reset();
    busy b = {.cfg = {{.name = "a", .close_sleep = WD_MSEC},
                      {.name = "b", .close_fail = -EIO},
                      {.name = "c"}},
              .s = {{.sleep = WD_TIME_NEVER}, {.sleep = WD_TIME_NEVER}}};
    wd_alloc_fail_after(n);
    int rc = run_virtual(busy_main, &b);
    bool fired = wd_alloc_failed();
    wd_alloc_fail_after(0);
    cr_assert(rc == WD_EPERM || rc == WD_ENOMEM, "n=%ld: rc %s", n,
              wd_err_name(rc));
    cr_assert_eq(opens, closes, "n=%ld: %d opened, %d closed", n, opens,
                 closes);
    if (!fired) {
      const wd_error *e = wd_last_error();
      cr_assert_str_eq(e->msg, "the body fails");
      cr_assert_eq(e->nsecondary, 1, "b's close");
      cr_assert_str_eq(logbuf, "task:t0:cancelled task:t1:cancelled "
                               "close:c:error close:b:error close:a:error ");
      assert_no_leaks();
      break;
    }
    assert_no_leaks();
    cr_assert_lt(n, 2000, "the fault loop does not end");
  }
}

/* ---- wd_run_app in this process, on the virtual clock -------------------- */

typedef struct appt {
  probe_cfg cfg[2];
  sleeper worker;
  int startup_fail, main_fail, cleanup_fail;
  wd_time main_sleep;
  bool main_null, requester;
  wd_outcome cleanup_how;
  const char *reason_seen;
  int main_rc;
  bool main_ran;
} appt;

static int appt_startup(wd_task *self, wd_manager *m, void *arg) {
  appt *t = arg;
  cr_assert_eq(wd_manager_default(self), m, "the app's manager is the default");
  cr_assert_eq(wd_manager_close(self, m, 0), WD_EPERM, "the app closes it");
  cr_assert(strcmp(wd_last_error()->msg, "manager 't' belongs to "
                                         "wd_run_app, which closes it") == 0 ||
                wd_alloc_failed(),
            "%s", wd_last_error()->msg);
  wd_error_clear(self);
  wd_resource *r;
  for (int i = 0; i < 2; i++) {
    int rc = wd_manager_open_resource(self, m, &probe_type, &t->cfg[i],
                                      t->cfg[i].name, 0, &r);
    if (rc) return rc;
  }
  int rc = wd_manager_spawn(m, "worker", sleeper_task, &t->worker);
  if (rc) return rc;
  if (t->startup_fail) return wd_fail(self, t->startup_fail, "startup broke");
  return 0;
}

static int appt_main(wd_task *self, wd_manager *m, void *arg) {
  appt *t = arg;
  t->main_ran = true;
  int rc = wd_sleep(self, t->main_sleep);
  t->main_rc = rc;
  t->reason_seen = wd_app_shutdown_reason(self);
  say("main:%s%s ", rc ? "cancelled" : "done", "");
  if (t->main_fail) return wd_fail(self, t->main_fail, "main broke");
  return rc;
}

static int appt_cleanup(wd_task *self, wd_manager *m, void *arg,
                        wd_outcome how) {
  appt *t = arg;
  t->cleanup_how = how;
  say("cleanup:%s%s ", wd_outcome_name(how), "");
  if (t->cleanup_fail) return wd_fail(self, t->cleanup_fail, "cleanup broke");
  return 0;
}

/* A task that asks for the shutdown after 2 s. */
static int requester(wd_task *self, void *arg) {
  appt *t = arg;
  cr_assert_null(wd_app_shutdown_reason(self));
  int rc = wd_sleep(self, 2 * WD_SEC);
  if (rc) return rc;
  cr_assert_eq(wd_app_shutdown(self), 0);
  cr_assert_eq(wd_app_shutdown(self), 0, "idempotent");
  t->reason_seen = wd_app_shutdown_reason(self);
  return wd_sleep(self, WD_TIME_NEVER); /* until the manager cancels it */
}

static int appt_startup_requester(wd_task *self, wd_manager *m, void *arg) {
  int rc = appt_startup(self, m, arg);
  return rc ? rc : wd_manager_spawn(m, "requester", requester, arg);
}

static int run_appt(appt *t, mlog *log) {
  wd_app_opts o = {
      .name = "t",
      .startup = t->requester ? appt_startup_requester : appt_startup,
      .main = t->main_null ? NULL : appt_main,
      .cleanup = appt_cleanup,
      .arg = t,
      .log = log->f,
      .runtime = {.clock = WD_CLOCK_VIRTUAL},
  };
  return wd_run_app(&o);
}

static appt appt_default(void) {
  return (appt){.cfg = {{.name = "a"}, {.name = "b"}},
                .worker = {.sleep = WD_TIME_NEVER},
                .main_sleep = WD_SEC};
}

Test(run_app, a_clean_run_exits_0_and_shuts_down_in_order) {
  reset();
  appt t = appt_default();
  mlog log;
  mlog_open(&log);
  cr_assert_eq(run_appt(&t, &log), WD_APP_EXIT_OK);
  cr_assert_str_eq(logbuf, "main:done cleanup:ok task:worker:cancelled "
                           "close:b:ok close:a:ok ");
  cr_assert_null(t.reason_seen, "main ended by itself");
  cr_assert_str_eq(mlog_text(&log), "", "a clean run says nothing");
  mlog_close(&log);
  assert_no_leaks();
}

Test(run_app, main_failing_exits_1_with_its_error_and_tells_the_closes) {
  reset();
  appt t = appt_default();
  t.main_fail = WD_EPERM;
  t.cfg[0].close_fail = -EIO;
  mlog log;
  mlog_open(&log);
  cr_assert_eq(run_appt(&t, &log), WD_APP_EXIT_FAILED);
  cr_assert_str_eq(logbuf, "main:done cleanup:error task:worker:cancelled "
                           "close:b:error close:a:error ");
  const wd_error *e = wd_last_error();
  cr_assert_str_eq(e->msg, "main broke");
  cr_assert_eq(e->nsecondary, 1, "a's close");
  const char *text = mlog_text(&log);
  cr_assert_not_null(strstr(text, "app 't': main failed (exit status 1):\n"
                                  "WD_EPERM: main broke"),
                     "%s", text);
  cr_assert_not_null(strstr(text, "a broke"), "%s", text);
  mlog_close(&log);
  assert_no_leaks();
}

Test(run_app, a_failing_cleanup_exits_2) {
  reset();
  appt t = appt_default();
  t.cleanup_fail = -EIO;
  mlog log;
  mlog_open(&log);
  cr_assert_eq(run_appt(&t, &log), WD_APP_EXIT_UNCLEAN);
  cr_assert_str_eq(logbuf, "main:done cleanup:ok task:worker:cancelled "
                           "close:b:error close:a:error ");
  cr_assert_str_eq(wd_last_error()->msg, "cleanup broke");
  cr_assert_not_null(
      strstr(mlog_text(&log), "the shutdown was not clean (exit status 2)"),
      "%s", log.text);
  mlog_close(&log);
  assert_no_leaks();
}

Test(run_app, a_failing_close_exits_2) {
  reset();
  appt t = appt_default();
  t.cfg[1].close_fail = WD_EBUSY;
  mlog log;
  mlog_open(&log);
  cr_assert_eq(run_appt(&t, &log), WD_APP_EXIT_UNCLEAN);
  cr_assert_str_eq(wd_last_error()->msg, "resource 'b' (probe): close failed");
  mlog_close(&log);
  assert_no_leaks();
}

Test(run_app, a_failed_startup_skips_main_and_still_cleans_up) {
  reset();
  appt t = appt_default();
  t.startup_fail = WD_EINIT;
  mlog log;
  mlog_open(&log);
  cr_assert_eq(run_appt(&t, &log), WD_APP_EXIT_FAILED);
  cr_assert(!t.main_ran);
  cr_assert_str_eq(logbuf, "cleanup:error task:worker:cancelled close:b:error "
                           "close:a:error ");
  cr_assert_str_eq(wd_last_error()->msg, "startup broke");
  mlog_close(&log);
  assert_no_leaks();
}

Test(run_app, wd_app_shutdown_stops_an_app_without_main) {
  reset();
  appt t = appt_default();
  t.main_null = true;
  t.requester = true;
  mlog log;
  mlog_open(&log);
  cr_assert_eq(run_appt(&t, &log), WD_APP_EXIT_OK);
  cr_assert_str_eq(t.reason_seen, "shutdown requested");
  cr_assert_str_eq(logbuf, "cleanup:ok task:worker:cancelled close:b:ok "
                           "close:a:ok ");
  mlog_close(&log);
  assert_no_leaks();
}

Test(run_app, wd_app_shutdown_cancels_main_as_a_clean_stop) {
  reset();
  appt t = appt_default();
  t.main_sleep = WD_TIME_NEVER;
  t.requester = true;
  mlog log;
  mlog_open(&log);
  cr_assert_eq(run_appt(&t, &log), WD_APP_EXIT_OK);
  cr_assert_eq(t.main_rc, WD_ECANCELED);
  cr_assert_str_eq(t.reason_seen, "shutdown requested");
  cr_assert_str_eq(logbuf, "main:cancelled cleanup:ok task:worker:cancelled "
                           "close:b:ok close:a:ok ");
  mlog_close(&log);
  assert_no_leaks();
}

/* A task that never honours its cancellation: the shutdown timeout forces
 * the shutdown, which still finishes once the task does - exit 2. */
Test(run_app, the_shutdown_timeout_forces_a_stuck_shutdown) {
  reset();
  appt t = appt_default();
  t.worker = (sleeper){.sleep = 100 * WD_SEC, .stubborn = true};
  mlog log;
  mlog_open(&log);
  wd_app_opts o = {.name = "t",
                   .startup = appt_startup,
                   .main = appt_main,
                   .cleanup = appt_cleanup,
                   .arg = &t,
                   .shutdown_timeout = 10 * WD_SEC,
                   .force_timeout = 600 * WD_SEC, /* the watchdog: wall time */
                   .manager = {.task_grace = 60 * WD_SEC},
                   .log = log.f,
                   .runtime = {.clock = WD_CLOCK_VIRTUAL}};
  cr_assert_eq(wd_run_app(&o), WD_APP_EXIT_UNCLEAN);
  cr_assert_eq(t.worker.ended, 100 * WD_SEC);
  const char *text = mlog_text(&log);
  cr_assert_not_null(strstr(text, "app 't': the shutdown has not ended in "
                                  "10.000 s\n"
                                  "app 't': forcing the shutdown while "
                                  "shutting the manager down (1 task left: "
                                  "'worker')"),
                     "%s", text);
  cr_assert_not_null(strstr(text, "manager 't': task 'worker' is still "
                                  "running 10.000 s after it was cancelled "
                                  "(shutdown forced)"),
                     "%s", text);
  cr_assert_str_eq(logbuf, "main:done cleanup:ok task:worker close:b:cancel "
                           "close:a:cancel ");
  mlog_close(&log);
  assert_no_leaks();
}

Test(run_app, bad_options_exit_64_and_run_nothing) {
  reset();
  mlog log;
  mlog_open(&log);
  cr_assert_eq(wd_run_app(NULL), WD_APP_EXIT_USAGE);
  cr_assert_str_eq(wd_last_error()->msg, "wd_run_app: NULL options");
  appt t = appt_default();
  wd_app_opts o = {.name = "t", .main = appt_main, .arg = &t, .log = log.f};
  wd_app_opts bad = o;
  bad.cleanup_timeout = -1;
  cr_assert_eq(wd_run_app(&bad), WD_APP_EXIT_USAGE);
  bad = o;
  bad.manager.task_grace = -WD_SEC;
  cr_assert_eq(wd_run_app(&bad), WD_APP_EXIT_USAGE);
  cr_assert_str_eq(wd_last_error()->msg,
                   "app 't': manager.task_grace is negative");
  bad = o;
  bad.runtime.clock = (wd_clock_mode)7;
  cr_assert_eq(wd_run_app(&bad), WD_APP_EXIT_USAGE);
  cr_assert(!t.main_ran);
  cr_assert_not_null(strstr(mlog_text(&log), "app 't': cleanup_timeout is "
                                             "negative\n"),
                     "%s", log.text);
  mlog_close(&log);
  assert_no_leaks();
}

static int nested_main(wd_task *self, void *arg) {
  mlog *log = arg;
  wd_app_opts o = {.name = "inner", .main = appt_main, .log = log->f};
  cr_assert_eq(wd_run_app(&o), WD_APP_EXIT_USAGE);
  return 0;
}

Test(run_app, an_app_inside_a_running_runtime_is_refused) {
  mlog log;
  mlog_open(&log);
  cr_assert_eq(run_virtual(nested_main, &log), 0);
  cr_assert_not_null(strstr(mlog_text(&log), "app 'inner': cannot start: "
                                             "WD_EBUSY"),
                     "%s", log.text);
  mlog_close(&log);
  assert_no_leaks();
}

Test(run_app, allocation_failure_at_every_point_is_clean) {
  for (long n = 1;; n++) {
    reset();
    appt t = appt_default();
    t.cfg[1].close_fail = -EIO;
    mlog log;
    mlog_open(&log);
    wd_alloc_fail_after(n);
    int status = run_appt(&t, &log);
    bool fired = wd_alloc_failed();
    wd_alloc_fail_after(0);
    mlog_close(&log);
    cr_assert(status == WD_APP_EXIT_UNCLEAN || status == WD_APP_EXIT_FAILED ||
                  status == WD_APP_EXIT_START,
              "n=%ld: status %d", n, status);
    cr_assert_eq(opens, closes, "n=%ld: %d opened, %d closed", n, opens,
                 closes);
    if (!fired) {
      cr_assert_eq(status, WD_APP_EXIT_UNCLEAN);
      cr_assert_str_eq(wd_last_error()->msg,
                       "resource 'b' (probe): close failed");
      assert_no_leaks();
      break;
    }
    assert_no_leaks();
    cr_assert_lt(n, 2000, "the fault loop does not end");
  }
}

/* ---- real signals, in child processes ------------------------------------
 * The child runs an app on the real clock and writes what happens, line by
 * line, to a pipe (`out`); its stderr (the app's log) goes to another.
 * The parent waits for lines - never for time - and bounds every wait. */

#define CHILD_WAIT_MS 20000

static int out_fd = -1;

static void out(const char *line) {
  if (out_fd >= 0) {
    size_t n = strlen(line);
    ssize_t k = write(out_fd, line, n);
    (void)k;
  }
}

typedef struct child {
  pid_t pid;
  int out, err; /* read ends */
  char obuf[4096], ebuf[16384];
  size_t olen, elen;
  bool oeof, eeof;
} child;

static _Noreturn void child_run(int ofd, int efd, const wd_app_opts *o) {
  /* Signals as a fresh process has them, whatever the runner set. */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  out_fd = ofd;
  dup2(efd, STDERR_FILENO);
  close(efd);
  int status = wd_run_app(o);
  char line[64];
  snprintf(line, sizeof line, "status %d\n", status);
  out(line);
  _exit(status);
}

static void child_start(child *c, const wd_app_opts *o) {
  int po[2], pe[2];
  cr_assert_eq(pipe(po), 0);
  cr_assert_eq(pipe(pe), 0);
  fflush(NULL);
  *c = (child){0};
  c->pid = fork();
  cr_assert_neq(c->pid, -1);
  if (c->pid == 0) {
    close(po[0]);
    close(pe[0]);
    child_run(po[1], pe[1], o);
  }
  close(po[1]);
  close(pe[1]);
  c->out = po[0];
  c->err = pe[0];
}

/* Read what is there (waiting at most ms for something). */
static void child_read(child *c, int ms) {
  struct pollfd p[2] = {{.fd = c->oeof ? -1 : c->out, .events = POLLIN},
                        {.fd = c->eeof ? -1 : c->err, .events = POLLIN}};
  if (poll(p, 2, ms) <= 0) return;
  if (p[0].revents) {
    ssize_t k = read(c->out, c->obuf + c->olen, sizeof c->obuf - 1 - c->olen);
    if (k <= 0)
      c->oeof = true;
    else
      c->olen += (size_t)k;
    c->obuf[c->olen] = '\0';
  }
  if (p[1].revents) {
    ssize_t k = read(c->err, c->ebuf + c->elen, sizeof c->ebuf - 1 - c->elen);
    if (k <= 0)
      c->eeof = true;
    else
      c->elen += (size_t)k;
    c->ebuf[c->elen] = '\0';
  }
}

static void child_kill(child *c) {
  kill(c->pid, SIGKILL);
  waitpid(c->pid, NULL, 0);
}

/* Wait until `what` appears on the child's out (or, err) stream. */
static void child_expect(child *c, bool err, const char *what) {
  for (int waited = 0; waited < CHILD_WAIT_MS; waited += 50) {
    if (strstr(err ? c->ebuf : c->obuf, what)) return;
    if (c->oeof && c->eeof) break;
    child_read(c, 50);
  }
  if (strstr(err ? c->ebuf : c->obuf, what)) return;
  child_kill(c);
  cr_assert_fail("the child never wrote '%s'\nout:\n%s\nerr:\n%s", what,
                 c->obuf, c->ebuf);
}

/* Read to the end and reap; returns the wait status. */
static int child_end(child *c) {
  for (int waited = 0; waited < CHILD_WAIT_MS && !(c->oeof && c->eeof);
       waited += 50)
    child_read(c, 50);
  if (!(c->oeof && c->eeof)) {
    child_kill(c);
    cr_assert_fail("the child did not end\nout:\n%s\nerr:\n%s", c->obuf,
                   c->ebuf);
  }
  close(c->out);
  close(c->err);
  int status;
  cr_assert_eq(waitpid(c->pid, &status, 0), c->pid);
  return status;
}

/* The child's app: three busy resources, a worker using them, a main that
 * says when it is ready and works until it is stopped. */
typedef struct real_cfg {
  const char *name;
} real_cfg;

static int real_open(wd_task *self, void *data, const void *config) {
  *(const real_cfg **)data = config;
  return 0;
}

static int real_close(wd_task *self, void *data, wd_outcome how) {
  const real_cfg *c = *(const real_cfg **)data;
  char line[64];
  /* Busy to the end: the close takes a while. */
  int rc = wd_sleep(self, 20 * WD_MSEC);
  snprintf(line, sizeof line, "close %s:%s\n", c->name, wd_outcome_name(how));
  out(line);
  return rc;
}

static const wd_resource_type real_type = {.name = "real",
                                           .size = sizeof(void *),
                                           .open = real_open,
                                           .close = real_close};
static const real_cfg real_db = {"db"}, real_cache = {"cache"},
                      real_queue = {"queue"};

static int real_worker(wd_task *self, void *arg) {
  for (;;) {
    int rc = wd_sleep(self, 5 * WD_MSEC); /* using the db */
    if (rc) {
      out("worker cancelled\n");
      return rc;
    }
  }
}

/* Ignores its cancellation for good. */
static int real_stubborn(wd_task *self, void *arg) {
  wd_cancel_scope sh;
  wd_cancel_scope_enter(self, &sh, &(wd_cancel_opts){.shield = true});
  int rc = wd_sleep(self, 3600 * WD_SEC);
  wd_cancel_scope_exit(self, &sh, 0);
  return rc;
}

static int real_startup(wd_task *self, wd_manager *m, void *arg) {
  const real_cfg *cfgs[3] = {&real_db, &real_cache, &real_queue};
  wd_resource *r;
  for (int i = 0; i < 3; i++) {
    int rc = wd_manager_open_resource(self, m, &real_type, cfgs[i],
                                      cfgs[i]->name, 0, &r);
    if (rc) return rc;
  }
  int rc = wd_manager_spawn(m, "worker", real_worker, NULL);
  if (!rc && arg) rc = wd_manager_spawn(m, "stubborn", real_stubborn, NULL);
  return rc;
}

static int real_main(wd_task *self, wd_manager *m, void *arg) {
  out("ready\n");
  int rc;
  while ((rc = wd_sleep(self, 5 * WD_MSEC)) == 0) {
  }
  char line[96];
  snprintf(line, sizeof line, "main stopped: %s: %s\n", wd_err_name(rc),
           wd_app_shutdown_reason(self));
  out(line);
  return rc;
}

static int real_cleanup(wd_task *self, wd_manager *m, void *arg,
                        wd_outcome how) {
  out("cleanup\n");
  return 0;
}

/* A cleanup that would take an hour, unless forced. */
static int real_slow_cleanup(wd_task *self, wd_manager *m, void *arg,
                             wd_outcome how) {
  out("cleanup started\n");
  int rc = wd_sleep(self, 3600 * WD_SEC);
  out(rc ? "cleanup cut short\n" : "cleanup done\n");
  return rc;
}

static wd_app_opts real_app(void) {
  return (wd_app_opts){.name = "app",
                       .startup = real_startup,
                       .main = real_main,
                       .cleanup = real_cleanup};
}

Test(run_app, sigterm_while_resources_are_busy_closes_all_in_reverse_order) {
  wd_app_opts o = real_app();
  child c;
  child_start(&c, &o);
  child_expect(&c, false, "ready\n");
  cr_assert_eq(kill(c.pid, SIGTERM), 0);
  int status = child_end(&c);
  cr_assert(WIFEXITED(status), "out:\n%s\nerr:\n%s", c.obuf, c.ebuf);
  cr_assert_eq(WEXITSTATUS(status), WD_APP_EXIT_OK, "out:\n%s\nerr:\n%s",
               c.obuf, c.ebuf);
  cr_assert_str_eq(c.obuf,
                   "ready\n"
                   "main stopped: WD_ECANCELED: shutdown (SIGTERM)\n"
                   "cleanup\n"
                   "worker cancelled\n"
                   "close queue:ok\n"
                   "close cache:ok\n"
                   "close db:ok\n"
                   "status 0\n",
                   "err:\n%s", c.ebuf);
  cr_assert_str_eq(c.ebuf,
                   "app 'app': SIGTERM: shutting down; send it again to "
                   "force\n");
  assert_no_leaks();
}

Test(run_app, a_second_signal_forces_the_shutdown) {
  wd_app_opts o = real_app();
  o.cleanup = real_slow_cleanup;
  o.cleanup_timeout = 3600 * WD_SEC;
  child c;
  child_start(&c, &o);
  child_expect(&c, false, "ready\n");
  cr_assert_eq(kill(c.pid, SIGINT), 0);
  child_expect(&c, false, "cleanup started\n");
  cr_assert_eq(kill(c.pid, SIGINT), 0);
  int status = child_end(&c);
  cr_assert(WIFEXITED(status), "out:\n%s\nerr:\n%s", c.obuf, c.ebuf);
  cr_assert_eq(WEXITSTATUS(status), WD_APP_EXIT_SIGNAL + SIGINT,
               "out:\n%s\nerr:\n%s", c.obuf, c.ebuf);
  /* The force cancels the cleanup and the worker at once: which of the
   * two writes first depends on the worker's timer; the closes come after
   * both, in order. */
  const char *o1 = strstr(c.obuf, "ready\n"
                                  "main stopped: WD_ECANCELED: shutdown "
                                  "(SIGINT)\n"
                                  "cleanup started\n");
  const char *o2 = strstr(c.obuf, "cleanup cut short\n");
  const char *o3 = strstr(c.obuf, "worker cancelled\n");
  const char *o4 = strstr(c.obuf, "close queue:ok\n"
                                  "close cache:ok\n"
                                  "close db:ok\n"
                                  "status 130\n");
  cr_assert(o1 == c.obuf && o2 && o3 && o4 && o2 < o4 && o3 < o4,
            "out:\n%s\nerr:\n%s", c.obuf, c.ebuf);
  cr_assert_not_null(strstr(c.ebuf, "app 'app': SIGINT again\n"
                                    "app 'app': forcing the shutdown while "
                                    "running cleanup (1 task left: "
                                    "'worker'); exit status 130, or 3 if it "
                                    "has not ended in 5.000 s\n"),
                     "%s", c.ebuf);
  assert_no_leaks();
}

Test(run_app, a_forced_shutdown_that_cannot_finish_exits_3) {
  wd_app_opts o = real_app();
  o.startup = real_startup;
  o.arg = (void *)1; /* with the stubborn task */
  o.manager.task_grace = 3600 * WD_SEC;
  o.force_timeout = 100 * WD_MSEC;
  child c;
  child_start(&c, &o);
  child_expect(&c, false, "ready\n");
  cr_assert_eq(kill(c.pid, SIGTERM), 0);
  child_expect(&c, false, "worker cancelled\n"); /* the grace wait began */
  cr_assert_eq(kill(c.pid, SIGTERM), 0);
  int status = child_end(&c);
  cr_assert(WIFEXITED(status), "out:\n%s\nerr:\n%s", c.obuf, c.ebuf);
  cr_assert_eq(WEXITSTATUS(status), WD_APP_EXIT_HUNG, "out:\n%s\nerr:\n%s",
               c.obuf, c.ebuf);
  cr_assert_null(strstr(c.obuf, "close"), "nothing closed under a live task");
  cr_assert_not_null(strstr(c.ebuf, "forcing the shutdown while shutting the "
                                    "manager down (1 task left: "
                                    "'stubborn')"),
                     "%s", c.ebuf);
  cr_assert_not_null(strstr(c.ebuf, "task 'stubborn' is still running"), "%s",
                     c.ebuf);
  cr_assert_not_null(strstr(c.ebuf, "app 'app': shutdown still not finished "
                                    "0.100 s after it was forced; exiting "
                                    "with status 3\n"),
                     "%s", c.ebuf);
  assert_no_leaks();
}

Test(run_app, sigusr1_and_sigquit_dump_every_task_and_resource) {
  wd_app_opts o = real_app();
  child c;
  child_start(&c, &o);
  child_expect(&c, false, "ready\n");
  cr_assert_eq(kill(c.pid, SIGUSR1), 0);
  /* The registry's section comes last; its last resource ends the dump. */
  child_expect(&c, true, "'queue' (real): ready");
  cr_assert_eq(kill(c.pid, SIGQUIT), 0);
  child_expect(&c, true, "app 'app': SIGQUIT: task and resource dump\n");
  cr_assert_eq(kill(c.pid, SIGTERM), 0);
  int status = child_end(&c);
  cr_assert(WIFEXITED(status), "out:\n%s\nerr:\n%s", c.obuf, c.ebuf);
  cr_assert_eq(WEXITSTATUS(status), WD_APP_EXIT_OK, "%s", c.ebuf);
  const char *e = c.ebuf;
  cr_assert_not_null(strstr(e, "app 'app': SIGUSR1: task and resource dump\n"
                               "warden runtime: "),
                     "%s", e);
  cr_assert_not_null(strstr(e, "task 1 'app': "), "the root: %s", e);
  cr_assert_not_null(strstr(e, "'worker': blocked"), "%s", e);
  cr_assert_not_null(strstr(e, "app 'app': running main\n"), "%s", e);
  cr_assert_not_null(strstr(e, "  manager 'app' (default): running, 1 task, "
                               "3 resources\n"),
                     "%s", e);
  cr_assert_not_null(strstr(e, "    resource 'db' (real): ready\n"), "%s", e);
  cr_assert_not_null(strstr(e, "resources: 4 live\n"), "%s", e);
  cr_assert_not_null(strstr(e, "'cache' (real): ready, created test-app.c:"),
                     "%s", e);
  cr_assert_not_null(strstr(c.obuf, "close db:ok\nstatus 0\n"), "%s", c.obuf);
  assert_no_leaks();
}
