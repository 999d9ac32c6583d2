/* Scopes (exit stacks) and context groups: reverse-order release on every
 * path, release going on past failures, the first error kept with the
 * others listed as secondary, the outcome each cleanup is told, the
 * WD_SCOPE block macro, shields and grace deadlines at release, growth
 * past the inline entries, opening resources together, bad arguments, and
 * every allocation failure point.
 *
 * Cleanups append to one log ("c3 c2 c1"), so a test reads the release
 * order and each outcome at a glance.  Time runs on the virtual clock. */
#include <string.h>

#include "helpers.h"

/* ---- a log of what ran ----------------------------------------------------
 */

static char logbuf[1024];

static void say(const char *fmt, const char *a, const char *b) {
  size_t n = strlen(logbuf);
  snprintf(logbuf + n, sizeof logbuf - n, fmt, a, b);
}

/* A cleanup: logs "name:outcome", maybe sleeps, maybe fails. */
typedef struct step {
  const char *name;
  int fail; /* returned (with a message) when nonzero */
  wd_time sleep;
  int slept_rc;
  wd_time at; /* when it ended */
  wd_outcome how;
  int runs;
} step;

static int step_fn(wd_task *self, void *arg, wd_outcome how) {
  step *s = arg;
  s->runs++;
  s->how = how;
  say("%s:%s ", s->name, wd_outcome_name(how));
  if (s->sleep) s->slept_rc = wd_sleep(self, s->sleep);
  s->at = wd_now(self);
  if (s->fail) return wd_fail(self, s->fail, "%s broke", s->name);
  return s->slept_rc;
}

/* ---- a resource type that logs ---------------------------------------------
 */

typedef struct probe_cfg {
  wd_time open_sleep;
  int open_fail;
  wd_time close_sleep;
  int close_fail;
} probe_cfg;

typedef struct probe {
  char name[16];
  bool opened;
} probe;

static int opens, closes;

static int probe_open(wd_task *self, void *data, const void *config) {
  const probe_cfg *c = config;
  if (c && c->open_sleep) {
    int rc = wd_sleep(self, c->open_sleep);
    if (rc) return rc;
  }
  if (c && c->open_fail) return wd_fail(self, c->open_fail, "probe refused");
  ((probe *)data)->opened = true;
  opens++;
  return 0;
}

static int probe_close(wd_task *self, void *data, wd_outcome how) {
  closes++;
  say("close:%s%s ", wd_outcome_name(how), "");
  return 0;
}

static const wd_resource_type probe_type = {.name = "probe",
                                            .size = sizeof(probe),
                                            .open = probe_open,
                                            .close = probe_close};

static int slow_close(wd_task *self, void *data, wd_outcome how) {
  probe_close(self, data, how);
  return wd_sleep(self, WD_SEC);
}

static const wd_resource_type slow_type = {.name = "slow",
                                           .size = sizeof(probe),
                                           .open = probe_open,
                                           .close = slow_close};

static void reset(void) {
  logbuf[0] = '\0';
  opens = closes = 0;
}

/* ---- reverse order, first error, secondaries ------------------------------
 */

typedef struct three {
  step s[3];
  int body_rc; /* what the body returns */
  int rc;
} three;

static int three_main(wd_task *self, void *arg) {
  three *t = arg;
  wd_scope sc;
  cr_assert_eq(wd_scope_enter(self, &sc), 0);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(wd_scope_push(self, &sc, step_fn, &t->s[i]), 0);
  cr_assert_eq(wd_scope_size(&sc), 3);
  int rc = t->body_rc ? wd_fail(self, t->body_rc, "body broke") : 0;
  t->rc = wd_scope_exit(self, &sc, rc);
  return 0;
}

Test(scope, failing_middle_cleanup_keeps_the_first_error_lists_the_other) {
  reset();
  three t = {
      .s = {{.name = "c1"}, {.name = "c2", .fail = -EIO}, {.name = "c3"}},
      .body_rc = WD_EPERM};
  cr_assert_eq(run_virtual(three_main, &t), 0);
  cr_assert_str_eq(logbuf, "c3:error c2:error c1:error ");
  for (int i = 0; i < 3; i++)
    cr_assert_eq(t.s[i].runs, 1, "c%d ran %d times", i + 1, t.s[i].runs);
  cr_assert_eq(t.rc, WD_EPERM, "the body's error is the result: %s",
               wd_err_name(t.rc));
  const wd_error *e = wd_last_error();
  cr_assert_not_null(e);
  cr_assert_eq(e->code, WD_EPERM);
  cr_assert_str_eq(e->msg, "body broke");
  cr_assert_eq(e->nsecondary, 1);
  cr_assert_eq(e->nsecondary_kept, 1);
  cr_assert_eq(e->secondary[0]->code, -EIO);
  cr_assert_str_eq(e->secondary[0]->msg, "c2 broke");
  char buf[1024];
  wd_error_format(e, buf, sizeof buf);
  cr_assert_not_null(strstr(buf, "WD_EPERM: body broke"), "%s", buf);
  cr_assert_not_null(strstr(buf, "(+1 cleanup error)"), "%s", buf);
  cr_assert_not_null(strstr(buf, "c2 broke"), "%s", buf);
  assert_no_leaks();
}

Test(scope, without_a_body_error_the_first_failing_cleanup_is_the_result) {
  reset();
  three t = {.s = {{.name = "c1", .fail = WD_EBUSY},
                   {.name = "c2"},
                   {.name = "c3", .fail = -EIO}}};
  cr_assert_eq(run_virtual(three_main, &t), 0);
  /* c3 runs first and fails: c2 and c1 are told the scope failed. */
  cr_assert_str_eq(logbuf, "c3:ok c2:error c1:error ");
  cr_assert_eq(t.rc, -EIO);
  const wd_error *e = wd_last_error();
  cr_assert_eq(e->code, -EIO);
  cr_assert_str_eq(e->msg, "c3 broke");
  cr_assert_eq(e->nsecondary, 1);
  cr_assert_eq(e->nsecondary_kept, 1);
  cr_assert_eq(e->secondary[0]->code, WD_EBUSY);
  cr_assert_str_eq(e->secondary[0]->msg, "c1 broke");
  assert_no_leaks();
}

Test(scope, every_cleanup_failing_lists_all_but_the_first) {
  reset();
  three t = {.s = {{.name = "c1", .fail = WD_EBUSY},
                   {.name = "c2", .fail = WD_EAGAIN},
                   {.name = "c3", .fail = -EIO}},
             .body_rc = WD_EPERM};
  cr_assert_eq(run_virtual(three_main, &t), 0);
  cr_assert_eq(t.rc, WD_EPERM);
  const wd_error *e = wd_last_error();
  cr_assert_str_eq(e->msg, "body broke");
  cr_assert_eq(e->nsecondary, 3);
  cr_assert_eq(e->nsecondary_kept, 3);
  cr_assert_eq(e->secondary[0]->code, -EIO, "in release order");
  cr_assert_eq(e->secondary[1]->code, WD_EAGAIN);
  cr_assert_eq(e->secondary[2]->code, WD_EBUSY);
  assert_no_leaks();
}

Test(scope, a_clean_release_returns_the_body_result_and_keeps_its_error) {
  reset();
  three t = {.s = {{.name = "c1"}, {.name = "c2"}, {.name = "c3"}},
             .body_rc = WD_EPERM};
  cr_assert_eq(run_virtual(three_main, &t), 0);
  cr_assert_eq(t.rc, WD_EPERM);
  const wd_error *e = wd_last_error();
  cr_assert_str_eq(e->msg, "body broke");
  cr_assert_eq(e->nsecondary, 0);
  cr_assert_eq(e->nsecondary_kept, 0);
  assert_no_leaks();
}

/* A group's failure keeps its children for its tasks. */
static int group_fails(wd_task *self, void *arg) {
  return wd_fail(self, WD_EPERM, "kid broke");
}

static int egroup_main(wd_task *self, void *arg) {
  step *s = arg;
  wd_scope sc;
  wd_scope_enter(self, &sc);
  wd_scope_push(self, &sc, step_fn, s);
  wd_job job = {.fn = group_fails, .name = "kid"};
  int rc = wd_run_tasks(self, &job, 1, NULL);
  cr_assert_eq(rc, WD_EGROUP);
  return wd_scope_exit(self, &sc, rc);
}

Test(scope, an_egroup_first_error_keeps_its_tasks_and_lists_secondaries) {
  reset();
  step s = {.name = "c", .fail = -EIO};
  cr_assert_eq(run_virtual(egroup_main, &s), WD_EGROUP);
  const wd_error *e = wd_last_error();
  cr_assert_eq(e->code, WD_EGROUP);
  cr_assert_eq(e->nchildren, 1, "still only its task");
  cr_assert_str_eq(e->children[0]->msg, "kid broke");
  cr_assert_eq(e->nsecondary, 1);
  cr_assert_eq(e->nsecondary_kept, 1);
  cr_assert_eq(e->secondary[0]->code, -EIO);
  assert_no_leaks();
}

/* Nested scopes: the inner one's secondaries travel with its error. */
static int nested_main(wd_task *self, void *arg) {
  step *s = arg;
  wd_scope outer, inner;
  wd_scope_enter(self, &outer);
  wd_scope_push(self, &outer, step_fn, &s[0]);
  wd_scope_enter(self, &inner);
  wd_scope_push(self, &inner, step_fn, &s[1]);
  int rc = wd_scope_exit(self, &inner, wd_fail(self, WD_EPERM, "deep"));
  return wd_scope_exit(self, &outer, rc);
}

Test(scope, nested_scopes_accumulate_secondaries_on_the_first_error) {
  reset();
  step s[2] = {{.name = "outer", .fail = WD_EBUSY},
               {.name = "inner", .fail = -EIO}};
  cr_assert_eq(run_virtual(nested_main, s), WD_EPERM);
  cr_assert_str_eq(logbuf, "inner:error outer:error ");
  const wd_error *e = wd_last_error();
  cr_assert_str_eq(e->msg, "deep");
  cr_assert_eq(e->nsecondary, 2);
  cr_assert_eq(e->nsecondary_kept, 2);
  cr_assert_eq(e->secondary[0]->code, -EIO);
  cr_assert_eq(e->secondary[1]->code, WD_EBUSY);
  assert_no_leaks();
}

/* ---- resources on a scope --------------------------------------------------
 */

static int resources_main(wd_task *self, void *arg) {
  int *fail_after = arg;
  wd_scope sc;
  wd_scope_enter(self, &sc);
  wd_resource *r[3];
  for (int i = 0; i < 3; i++) {
    static const char *names[] = {"a", "b", "c"};
    cr_assert_eq(wd_scope_open(self, &sc, &probe_type, NULL, names[i], &r[i]),
                 0);
    cr_assert_eq(wd_resource_state_of(r[i]), WD_RESOURCE_READY);
  }
  wd_resource_stats st;
  wd_resource_stats_get(NULL, &probe_type, &st);
  cr_assert_eq(st.active, 3);
  int rc = *fail_after ? wd_fail(self, *fail_after, "used badly") : 0;
  rc = wd_scope_exit(self, &sc, rc);
  wd_resource_stats_get(NULL, &probe_type, &st);
  cr_assert_eq(st.active, 0);
  cr_assert_eq(st.closed, 3);
  return rc;
}

Test(scope, resources_close_in_reverse_told_the_outcome) {
  reset();
  int fail = 0;
  cr_assert_eq(run_virtual(resources_main, &fail), 0);
  cr_assert_str_eq(logbuf, "close:ok close:ok close:ok ");
  cr_assert_eq(opens, 3);
  cr_assert_eq(closes, 3);
  reset();
  fail = WD_EPERM;
  cr_assert_eq(run_virtual(resources_main, &fail), WD_EPERM);
  cr_assert_str_eq(logbuf, "close:error close:error close:error ");
  assert_no_leaks();
  cr_assert_eq(wd_resource_leaks(), 0);
}

static int early_close_main(wd_task *self, void *arg) {
  wd_scope sc;
  wd_scope_enter(self, &sc);
  wd_resource *r;
  cr_assert_eq(wd_scope_open(self, &sc, &probe_type, NULL, "early", &r), 0);
  cr_assert_eq(wd_resource_close(self, r, 0), 0);
  cr_assert_eq(wd_resource_state_of(r), WD_RESOURCE_CLOSED,
               "still readable: the scope owns it");
  cr_assert_eq(wd_resource_close(self, r, 0), 0, "closing again is a no-op");
  cr_assert_eq(closes, 1);
  return wd_scope_exit(self, &sc, 0);
}

Test(scope, a_resource_closed_early_is_not_closed_again) {
  reset();
  cr_assert_eq(run_virtual(early_close_main, NULL), 0);
  cr_assert_eq(closes, 1);
  assert_no_leaks();
}

/* ---- cancellation ---------------------------------------------------------
 */

typedef struct cancel_use {
  step push, defer;
  int body_rc, rc;
  wd_time exit_at;
} cancel_use;

static int cancel_use_main(wd_task *self, void *arg) {
  cancel_use *c = arg;
  wd_cancel_scope cs;
  wd_move_on_after(self, &cs, WD_SEC);
  wd_scope sc;
  wd_scope_enter(self, &sc);
  wd_resource *r;
  cr_assert_eq(wd_scope_open(self, &sc, &slow_type, NULL, "slow", &r), 0);
  wd_scope_push(self, &sc, step_fn, &c->push);
  wd_scope_defer(self, &sc, step_fn, &c->defer);
  c->body_rc = wd_sleep(self, 10 * WD_SEC); /* cancelled at 1 s */
  c->rc = wd_scope_exit(self, &sc, c->body_rc);
  c->exit_at = wd_now(self);
  return wd_cancel_scope_exit(self, &cs, c->rc);
}

Test(scope, cancellation_during_use_releases_everything_told_cancel) {
  reset();
  cancel_use c = {.push = {.name = "push", .sleep = WD_SEC},
                  .defer = {.name = "defer", .sleep = WD_SEC}};
  cr_assert_eq(run_virtual(cancel_use_main, &c), 0,
               "the deadline is swallowed by its scope");
  cr_assert_eq(c.body_rc, WD_ETIMEDOUT);
  cr_assert_eq(c.rc, WD_ETIMEDOUT);
  cr_assert_str_eq(logbuf, "defer:cancel push:cancel close:cancel ");
  /* A deferred callback is not shielded: its sleep fails at once. */
  cr_assert_eq(c.defer.slept_rc, WD_ETIMEDOUT);
  cr_assert_eq(c.defer.at, WD_SEC);
  /* A pushed one is: it sleeps its second; then the resource's close too. */
  cr_assert_eq(c.push.slept_rc, 0);
  cr_assert_eq(c.push.at, 2 * WD_SEC);
  cr_assert_eq(c.exit_at, 3 * WD_SEC);
  assert_no_leaks();
}

static int grace_main(wd_task *self, void *arg) {
  step *s = arg;
  wd_scope sc;
  wd_scope_enter(self, &sc);
  wd_scope_set_grace(&sc, WD_SEC);
  wd_scope_push(self, &sc, step_fn, s);
  return wd_scope_exit(self, &sc, 0);
}

Test(scope, a_pushed_cleanup_cannot_outlive_its_grace) {
  reset();
  step s = {.name = "hang", .sleep = 10 * WD_SEC};
  cr_assert_eq(run_virtual(grace_main, &s), WD_ETIMEDOUT);
  cr_assert_eq(s.slept_rc, WD_ETIMEDOUT);
  cr_assert_eq(s.at, WD_SEC);
  const wd_error *e = wd_last_error();
  cr_assert_str_eq(e->msg, "scope cleanup: timed out after 1.000 s");
  assert_no_leaks();
}

/* ---- the block macro ------------------------------------------------------
 */

static int macro_body(wd_task *self, step *s, int mode) {
  int rc = 0;
  WD_SCOPE(self, sc, rc) {
    wd_scope_push(self, sc, step_fn, &s[0]);
    wd_scope_defer(self, sc, step_fn, &s[1]);
    if (mode == 1) {
      rc = wd_fail(self, WD_EPERM, "stop");
      break;
    }
    if (mode == 2) return 42; /* released before the caller sees 42 */
    if (mode == 3) goto out;
    say("body%s%s ", "", "");
  }
  say("after%s%s ", "", "");
  return rc;
out:
  say("out%s%s ", "", "");
  return -1;
}

static int macro_main(wd_task *self, void *arg) {
  int *modes = arg;
  step s[2] = {{.name = "p"}, {.name = "d"}};
  return macro_body(self, s, *modes);
}

Test(scope, the_block_macro_releases_on_every_way_out) {
  int mode = 0;
  reset();
  cr_assert_eq(run_virtual(macro_main, &mode), 0);
  cr_assert_str_eq(logbuf, "body d:ok p:ok after ");
  reset();
  mode = 1;
  cr_assert_eq(run_virtual(macro_main, &mode), WD_EPERM);
  cr_assert_str_eq(logbuf, "d:error p:error after ");
  reset();
  mode = 2;
  cr_assert_eq(run_virtual(macro_main, &mode), 42);
  cr_assert_str_eq(logbuf, "d:ok p:ok ");
  reset();
  mode = 3;
  cr_assert_eq(run_virtual(macro_main, &mode), -1);
  cr_assert_str_eq(logbuf, "d:ok p:ok out ");
  assert_no_leaks();
}

static int macro_failure_main(wd_task *self, void *arg) {
  step *s = arg;
  int rc = 0;
  WD_SCOPE(self, sc, rc) { wd_scope_defer(self, sc, step_fn, s); }
  return rc; /* the cleanup's failure, written back into rc */
}

Test(scope, the_block_macro_writes_the_scope_result_back) {
  reset();
  step s = {.name = "x", .fail = -EIO};
  cr_assert_eq(run_virtual(macro_failure_main, &s), -EIO);
  assert_no_leaks();
}

/* ---- growth past the inline entries ---------------------------------------
 */

#define MANY 40

static int order[MANY], norder;

static int record(wd_task *self, void *arg, wd_outcome how) {
  order[norder++] = (int)(intptr_t)arg;
  return 0;
}

static int many_main(wd_task *self, void *arg) {
  wd_scope sc;
  wd_scope_enter(self, &sc);
  for (int i = 0; i < MANY; i++) {
    int rc = wd_scope_defer(self, &sc, record, (void *)(intptr_t)i);
    if (rc) return wd_scope_exit(self, &sc, rc);
  }
  return wd_scope_exit(self, &sc, 0);
}

Test(scope, more_entries_than_inline_are_released_in_reverse) {
  norder = 0;
  cr_assert_eq(run_virtual(many_main, NULL), 0);
  cr_assert_eq(norder, MANY);
  for (int i = 0; i < MANY; i++)
    cr_assert_eq(order[i], MANY - 1 - i);
  assert_no_leaks();
}

static int grow_fail_main(wd_task *self, void *arg) {
  step *s = arg;
  wd_scope sc;
  wd_scope_enter(self, &sc);
  for (int i = 0; i < WD_SCOPE_INLINE; i++)
    cr_assert_eq(wd_scope_defer(self, &sc, record, (void *)(intptr_t)i), 0);
  wd_alloc_fail_after(1);
  int rc = wd_scope_push(self, &sc, step_fn, s);
  cr_assert_eq(rc, WD_ENOMEM);
  cr_assert_eq(s->runs, 1, "a cleanup that cannot be kept runs at once");
  cr_assert_eq(s->how, WD_OUTCOME_ERROR);
  cr_assert_eq(wd_scope_size(&sc), WD_SCOPE_INLINE);
  return wd_scope_exit(self, &sc, rc);
}

Test(scope, a_push_without_memory_runs_the_cleanup_at_once) {
  norder = 0;
  step s = {.name = "late"};
  cr_assert_eq(run_virtual(grow_fail_main, &s), WD_ENOMEM);
  cr_assert_eq(norder, WD_SCOPE_INLINE, "the others are still released");
  cr_assert_eq(s.runs, 1);
  assert_no_leaks();
}

/* ---- bad arguments --------------------------------------------------------
 */

static int bad_args_main(wd_task *self, void *arg) {
  step s = {.name = "s"};
  cr_assert_eq(wd_scope_enter(self, NULL), WD_EINVAL);
  cr_assert_not_null(strstr(wd_task_error(self)->msg, "NULL scope"));
  wd_scope sc;
  cr_assert_eq(wd_scope_enter(self, &sc), 0);
  cr_assert_eq(wd_scope_push(self, &sc, NULL, NULL), WD_EINVAL);
  cr_assert_not_null(strstr(wd_task_error(self)->msg, "NULL cleanup"));
  cr_assert_eq(wd_scope_defer(self, NULL, step_fn, &s), WD_EINVAL);
  cr_assert_eq(wd_scope_push_resource(self, &sc, NULL), WD_EINVAL);
  cr_assert_not_null(strstr(wd_task_error(self)->msg, "NULL resource"));
  wd_resource *r = (wd_resource *)&sc; /* never read: out is set to NULL */
  cr_assert_eq(wd_scope_open(self, &sc, NULL, NULL, "x", &r), WD_EINVAL);
  cr_assert_null(r);
  cr_assert_eq(wd_scope_exit(self, &sc, 0), 0);
  cr_assert_eq(wd_scope_exit(self, &sc, 0), WD_EINVAL, "exited twice");
  cr_assert_not_null(strstr(wd_task_error(self)->msg, "not entered"));
  cr_assert_eq(wd_scope_push(self, &sc, step_fn, &s), WD_EINVAL,
               "pushed after the exit");
  cr_assert_eq(s.runs, 0);
  wd_resource_spec spec = {.type = NULL};
  cr_assert_eq(wd_resource_open_all(self, &spec, 1), WD_EINVAL);
  cr_assert_eq(wd_resource_open_all(self, NULL, 2), WD_EINVAL);
  return 0;
}

Test(scope, bad_arguments_are_einval_with_a_message) {
  cr_assert_eq(run_virtual(bad_args_main, NULL), 0);
  assert_no_leaks();
}

/* ---- context groups -------------------------------------------------------
 */

typedef struct ctx {
  probe_cfg cfg[3];
  int rc;
  wd_time at;
  bool scoped;
  wd_resource_spec spec[3];
} ctx;

static int ctx_main(wd_task *self, void *arg) {
  ctx *c = arg;
  static const char *names[] = {"db", "cache", "queue"};
  for (int i = 0; i < 3; i++)
    c->spec[i] = (wd_resource_spec){
        .type = &probe_type, .config = &c->cfg[i], .name = names[i]};
  if (!c->scoped) {
    c->rc = wd_resource_open_all(self, c->spec, 3);
    c->at = wd_now(self);
    for (int i = 0; i < 3 && c->rc == 0; i++)
      wd_resource_close(self, c->spec[i].res, 0);
    return 0;
  }
  wd_scope sc;
  wd_scope_enter(self, &sc);
  c->rc = wd_scope_open_all(self, &sc, c->spec, 3);
  c->at = wd_now(self);
  if (c->rc == 0) {
    for (int i = 0; i < 3; i++)
      cr_assert_eq(wd_resource_state_of(c->spec[i].res), WD_RESOURCE_READY);
    cr_assert_eq(wd_scope_size(&sc), 3);
  }
  return wd_scope_exit(self, &sc, c->rc);
}

Test(ctxgroup, opens_concurrently_and_releases_in_reverse) {
  reset();
  ctx c = {.cfg = {{.open_sleep = WD_SEC},
                   {.open_sleep = 2 * WD_SEC},
                   {.open_sleep = WD_SEC}},
           .scoped = true};
  cr_assert_eq(run_virtual(ctx_main, &c), 0);
  cr_assert_eq(c.rc, 0);
  cr_assert_eq(c.at, 2 * WD_SEC, "concurrent: the slowest open, not the sum");
  cr_assert_eq(opens, 3);
  cr_assert_eq(closes, 3);
  assert_no_leaks();
}

Test(ctxgroup, one_failing_member_closes_the_others_and_is_named) {
  reset();
  ctx c = {.cfg = {{.open_sleep = WD_SEC},
                   {.open_sleep = 2 * WD_SEC, .open_fail = -ECONNREFUSED},
                   {.open_sleep = 3 * WD_SEC}}};
  cr_assert_eq(run_virtual(ctx_main, &c), 0);
  cr_assert_eq(c.rc, -ECONNREFUSED, "%s", wd_err_name(c.rc));
  cr_assert_eq(c.at, 2 * WD_SEC, "the slow member was cancelled");
  cr_assert_eq(opens, 1, "db opened; queue was cancelled before it did");
  cr_assert_eq(closes, 1, "and db was closed again");
  cr_assert_str_eq(logbuf, "close:error ");
  for (int i = 0; i < 3; i++)
    cr_assert_null(c.spec[i].res);
  const wd_error *e = wd_last_error();
  cr_assert_str_eq(e->msg,
                   "context group: resource 'cache' (probe) failed to open");
  char buf[2048];
  wd_error_format(e, buf, sizeof buf);
  cr_assert_not_null(strstr(buf, "resource 'cache' (probe): open failed"), "%s",
                     buf);
  cr_assert_not_null(strstr(buf, "probe refused"), "%s", buf);
  cr_assert_not_null(strstr(buf, "'cache']"), "the task is named: %s", buf);
  assert_no_leaks();
}

Test(ctxgroup, on_a_scope_a_failure_leaves_the_scope_empty) {
  reset();
  ctx c = {.cfg = {{0}, {.open_fail = WD_EPERM}, {0}}, .scoped = true};
  cr_assert_eq(run_virtual(ctx_main, &c), WD_EPERM);
  cr_assert_eq(opens, closes);
  assert_no_leaks();
}

/* ---- every allocation failure point ------------------------------------- */

typedef struct busy {
  step s[2];
  probe_cfg cfg[3];
} busy;

static int busy_main(wd_task *self, void *arg) {
  busy *b = arg;
  int rc = 0;
  WD_SCOPE(self, sc, rc) {
    wd_resource *r;
    if ((rc = wd_scope_open(self, sc, &probe_type, &b->cfg[0], "first", &r)))
      break;
    if ((rc = wd_scope_push(self, sc, step_fn, &b->s[0]))) break;
    wd_resource_spec spec[2] = {{&probe_type, &b->cfg[1], "x", NULL},
                                {&slow_type, &b->cfg[2], "y", NULL}};
    if ((rc = wd_scope_open_all(self, sc, spec, 2))) break;
    for (int i = 0; i < 2 * WD_SCOPE_INLINE && rc == 0; i++)
      rc = wd_scope_defer(self, sc, record, NULL);
    if (rc) break;
    if ((rc = wd_scope_defer(self, sc, step_fn, &b->s[1]))) break;
    rc = wd_fail(self, WD_EPERM, "the body fails");
  }
  return rc;
}

Test(scope, allocation_failure_at_every_point_is_clean) {
  for (long n = 1;; n++) {
    reset();
    norder = 0;
    busy b = {
        .s = {{.name = "a", .fail = -EIO}, {.name = "b", .fail = WD_EBUSY}},
        .cfg = {{.open_sleep = WD_MSEC},
                {.open_sleep = 2 * WD_MSEC},
                {.open_sleep = WD_MSEC}}};
    wd_alloc_fail_after(n);
    int rc = run_virtual(busy_main, &b);
    bool fired = wd_alloc_failed();
    wd_alloc_fail_after(0);
    cr_assert(rc == WD_EPERM || rc == WD_ENOMEM, "n=%ld: rc %s", n,
              wd_err_name(rc));
    cr_assert_eq(opens, closes, "n=%ld: %d opened, %d closed", n, opens,
                 closes);
    cr_assert_eq(wd_resource_leaks(), 0, "n=%ld", n);
    if (!fired) {
      cr_assert_eq(rc, WD_EPERM);
      const wd_error *e = wd_last_error();
      cr_assert_str_eq(e->msg, "the body fails");
      cr_assert_eq(e->nsecondary, 2, "a and b failed too");
      cr_assert_eq(norder, 2 * WD_SCOPE_INLINE);
      assert_no_leaks();
      break;
    }
    assert_no_leaks();
    cr_assert_lt(n, 2000, "the fault loop does not end");
  }
}
