/* Task groups: failure collection and sibling cancellation, supervisors,
 * body failures, the max_running cap, wd_run_tasks, joins and handles, and
 * what wd_group_exit() returns in each case.
 *
 * Time-based tests run on the virtual clock, so the time a task woke at
 * tells exactly which event woke it.  Most children are a `kid`: a task
 * that sleeps, records how the sleep ended, and maybe fails. */
#include <string.h>

#include <errno.h>

#include "helpers.h"

typedef struct seen {
  int rc;
  wd_time at;
} seen;

static void look(wd_task *self, seen *s, int rc) {
  s->rc = rc;
  s->at = wd_now(self);
}

typedef struct kid {
  wd_time sleep;
  int fail;         /* failure returned after the sleep, 0 = none */
  bool fail_anyway; /* fail even when the sleep was cancelled (a cleanup
                     * error), which makes it a failure, not a cancel */
  bool started;
  seen slept;
  wd_handle h;
} kid;

static int kid_task(wd_task *self, void *arg) {
  kid *k = arg;
  k->started = true;
  look(self, &k->slept, wd_sleep(self, k->sleep));
  if (k->fail && (k->slept.rc == 0 || k->fail_anyway))
    return wd_fail(self, k->fail, "%s broke", wd_task_name(self));
  return k->slept.rc;
}

static int spawn_kid(wd_group *g, kid *k, const char *name) {
  k->slept = (seen){.rc = 1, .at = -1};
  return wd_spawn(g, kid_task, k,
                  &(wd_spawn_opts){.name = name, .handle = &k->h});
}

static const wd_error *child_by_id(const wd_error *e, uint64_t id) {
  for (size_t i = 0; i < e->nchildren; i++)
    if (e->children[i]->task_id == id) return e->children[i];
  return NULL;
}

/* ---- failures ------------------------------------------------------------ */

typedef struct trio {
  kid k[3];
  int exit_rc;
  wd_time exit_at;
  wd_group_opts opts;
} trio;

static const char *const trio_names[3] = {"a", "b", "c"};

static int trio_main(wd_task *self, void *arg) {
  trio *t = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, &t->opts), 0);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(spawn_kid(&g, &t->k[i], trio_names[i]), 0);
  t->exit_rc = wd_group_exit(self, &g, 0);
  t->exit_at = wd_now(self);
  return 0;
}

Test(group, every_failure_is_collected_with_task_ids_and_names) {
  /* a fails at 1 s; b and c are cancelled by it and then fail in their
   * cleanup: three failures, each with its own code. */
  trio t = {
      .k = {{.sleep = WD_SEC, .fail = WD_EPERM},
            {.sleep = 10 * WD_SEC, .fail = -EIO, .fail_anyway = true},
            {.sleep = 10 * WD_SEC, .fail = WD_ENOSYS, .fail_anyway = true}},
      .opts = {.name = "trio"}};
  cr_assert_eq(run_virtual(trio_main, &t), 0);
  cr_assert_eq(t.exit_rc, WD_EGROUP);
  cr_assert_eq(t.exit_at, WD_SEC);
  const wd_error *e = wd_last_error();
  cr_assert_not_null(e, "the root's error outlives wd_run");
  cr_assert_eq(e->code, WD_EGROUP);
  cr_assert_eq(e->nchildren, 3);
  for (int i = 0; i < 3; i++) {
    const wd_error *c = child_by_id(e, t.k[i].h.id);
    cr_assert_not_null(c, "no error for task %s", trio_names[i]);
    cr_assert_eq(c->code, t.k[i].fail, "task %s: %s", trio_names[i],
                 wd_err_name(c->code));
    cr_assert_str_eq(c->task_name, trio_names[i]);
    char msg[16];
    snprintf(msg, sizeof msg, "%s broke", trio_names[i]);
    cr_assert_str_eq(c->msg, msg);
  }
  char buf[4096];
  size_t need = wd_error_format(e, buf, sizeof buf);
  cr_assert_lt(need, sizeof buf);
  cr_assert_not_null(strstr(buf, "group 'trio': 3 of 3 tasks failed"), "%s",
                     buf);
  cr_assert_not_null(strstr(buf, "WD_EPERM: a broke [task"), "%s", buf);
  cr_assert_not_null(strstr(buf, "'b']"), "%s", buf);
  cr_assert_not_null(strstr(buf, "WD_ENOSYS: c broke"), "%s", buf);
  assert_no_leaks();
}

Test(group, first_failure_cancels_siblings_without_counting_them) {
  trio t = {.k = {{.sleep = WD_SEC, .fail = WD_EPERM},
                  {.sleep = 10 * WD_SEC},
                  {.sleep = 10 * WD_SEC}},
            .opts = {.name = "trio"}};
  cr_assert_eq(run_virtual(trio_main, &t), 0);
  cr_assert_eq(t.exit_rc, WD_EGROUP);
  cr_assert_eq(t.exit_at, WD_SEC);
  for (int i = 1; i < 3; i++) {
    cr_assert_eq(t.k[i].slept.rc, WD_ECANCELED, "kid %d", i);
    cr_assert_eq(t.k[i].slept.at, WD_SEC, "kid %d", i);
    cr_assert_eq(t.k[i].h.status, WD_ECANCELED, "kid %d", i);
  }
  const wd_error *e = wd_last_error();
  cr_assert_eq(e->nchildren, 1, "cancelled siblings are not failures");
  cr_assert_eq(e->children[0]->task_id, t.k[0].h.id);
  cr_assert_not_null(strstr(e->msg, "1 of 3 tasks failed"), "%s", e->msg);
  assert_no_leaks();
}

Test(group, supervisor_keeps_siblings_running_and_collects_failures) {
  trio t = {.k = {{.sleep = WD_SEC, .fail = WD_EPERM},
                  {.sleep = 5 * WD_SEC},
                  {.sleep = 2 * WD_SEC, .fail = WD_EBUSY}},
            .opts = {.name = "sup", .supervisor = true}};
  cr_assert_eq(run_virtual(trio_main, &t), 0);
  cr_assert_eq(t.exit_rc, WD_EGROUP);
  cr_assert_eq(t.exit_at, 5 * WD_SEC);
  cr_assert_eq(t.k[1].slept.rc, 0);
  cr_assert_eq(t.k[1].slept.at, 5 * WD_SEC);
  cr_assert_eq(t.k[2].slept.rc, 0, "not cancelled by a's failure");
  const wd_error *e = wd_last_error();
  cr_assert_eq(e->nchildren, 2);
  cr_assert_eq(child_by_id(e, t.k[0].h.id)->code, WD_EPERM);
  cr_assert_eq(child_by_id(e, t.k[2].h.id)->code, WD_EBUSY);
  assert_no_leaks();
}

static int failure_cancels_body_main(wd_task *self, void *arg) {
  kid *k = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(spawn_kid(&g, k, "a"), 0);
  /* The owner's body runs inside the group's scope too. */
  int rc = wd_sleep(self, 10 * WD_SEC);
  cr_assert_eq(rc, WD_ECANCELED);
  cr_assert_eq(wd_now(self), WD_SEC);
  rc = wd_group_exit(self, &g, rc);
  cr_assert_eq(rc, WD_EGROUP);
  cr_assert_eq(wd_task_error(self)->nchildren, 1,
               "the body's cancellation is not a failure");
  return 0;
}

Test(group, a_failure_cancels_the_owners_body) {
  kid k = {.sleep = WD_SEC, .fail = WD_EPERM};
  cr_assert_eq(run_virtual(failure_cancels_body_main, &k), 0);
  assert_no_leaks();
}

/* ---- the body's own failure ---------------------------------------------- */

typedef struct body {
  kid k[2];
  int exit_rc;
} body;

static int body_fails_main(wd_task *self, void *arg) {
  body *b = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, &(wd_group_opts){.name = "bf"}), 0);
  for (int i = 0; i < 2; i++)
    cr_assert_eq(spawn_kid(&g, &b->k[i], trio_names[i]), 0);
  int rc = wd_fail(self, WD_EPERM, "body broke");
  b->exit_rc = wd_group_exit(self, &g, rc);
  cr_assert_eq(wd_now(self), 0, "the tasks were cancelled, not awaited");
  return 0;
}

Test(group, body_failure_cancels_the_tasks_and_returns_its_code) {
  body b = {.k = {{.sleep = 10 * WD_SEC}, {.sleep = 10 * WD_SEC}}};
  cr_assert_eq(run_virtual(body_fails_main, &b), 0);
  cr_assert_eq(b.exit_rc, WD_EPERM);
  for (int i = 0; i < 2; i++) {
    cr_assert(b.k[i].started, "spawned tasks still start");
    cr_assert_eq(b.k[i].h.status, WD_ECANCELED, "kid %d", i);
  }
  const wd_error *e = wd_last_error();
  cr_assert_eq(e->code, WD_EPERM);
  cr_assert_str_eq(e->msg, "body broke");
  assert_no_leaks();
}

Test(group, body_failure_with_task_failures_lists_the_body_first) {
  body b = {.k = {{.sleep = 10 * WD_SEC, .fail = -EIO, .fail_anyway = true},
                  {.sleep = 10 * WD_SEC}}};
  cr_assert_eq(run_virtual(body_fails_main, &b), 0);
  cr_assert_eq(b.exit_rc, WD_EGROUP);
  const wd_error *e = wd_last_error();
  cr_assert_eq(e->code, WD_EGROUP);
  cr_assert_eq(e->nchildren, 2);
  cr_assert_eq(e->children[0]->code, WD_EPERM);
  cr_assert_str_eq(e->children[0]->msg, "body broke");
  cr_assert_eq(e->children[1]->code, -EIO);
  cr_assert_eq(e->children[1]->task_id, b.k[0].h.id);
  cr_assert_not_null(strstr(e->msg, "and its body"), "%s", e->msg);
  assert_no_leaks();
}

/* ---- cancelling a group -------------------------------------------------- */

static int group_cancel_main(wd_task *self, void *arg) {
  kid *k = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < 2; i++)
    cr_assert_eq(spawn_kid(&g, &k[i], NULL), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_group_cancel(&g);
  int rc = wd_yield(self);
  cr_assert_eq(rc, WD_ECANCELED, "the body is in the group's scope");
  rc = wd_group_exit(self, &g, rc);
  cr_assert_eq(rc, 0, "a group's own cancel is swallowed: %d", rc);
  cr_assert_eq(wd_cancel_status(self), 0);
  cr_assert_eq(wd_now(self), WD_SEC);
  return 0;
}

Test(group, group_cancel_is_swallowed_by_exit) {
  kid k[2] = {{.sleep = 10 * WD_SEC}, {.sleep = 10 * WD_SEC}};
  cr_assert_eq(run_virtual(group_cancel_main, k), 0);
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(k[i].slept.rc, WD_ECANCELED, "kid %d", i);
    cr_assert_eq(k[i].slept.at, WD_SEC, "kid %d", i);
  }
  assert_no_leaks();
}

typedef struct late {
  bool started;
  int status_at_start;
  int first_checkpoint;
} late;

static int late_task(wd_task *self, void *arg) {
  late *l = arg;
  l->started = true;
  l->status_at_start = wd_cancel_status(self);
  l->first_checkpoint = wd_yield(self);
  return l->first_checkpoint;
}

static int spawn_cancelled_main(wd_task *self, void *arg) {
  late *l = arg;
  wd_cancel_scope s;
  wd_group g;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  wd_cancel(&s);
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, late_task, l, NULL), 0, "the spawn itself works");
  int rc = wd_group_exit(self, &g, 0);
  cr_assert_eq(rc, WD_ECANCELED, "exit returned %d", rc);
  return wd_cancel_scope_exit(self, &s, rc);
}

Test(group, task_spawned_under_a_cancelled_scope_starts_cancelled) {
  late l = {0};
  cr_assert_eq(run_virtual(spawn_cancelled_main, &l), 0);
  cr_assert(l.started);
  cr_assert_eq(l.status_at_start, WD_ECANCELED);
  cr_assert_eq(l.first_checkpoint, WD_ECANCELED);
  assert_no_leaks();
}

typedef struct enclosing {
  kid k[2];
  wd_cancel_scope *scope;
  int exit_rc;
} enclosing;

static int scope_canceller(wd_task *self, void *arg) {
  enclosing *en = arg;
  int rc = wd_sleep(self, WD_SEC);
  wd_cancel(en->scope);
  return rc;
}

static int enclosing_main(wd_task *self, void *arg) {
  enclosing *en = arg;
  wd_cancel_scope s;
  wd_group g;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  en->scope = &s;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < 2; i++)
    cr_assert_eq(spawn_kid(&g, &en->k[i], NULL), 0);
  cr_assert_eq(wd_spawn(&g, scope_canceller, en, NULL), 0);
  en->exit_rc = wd_group_exit(self, &g, 0);
  cr_assert_eq(wd_now(self), WD_SEC);
  return wd_cancel_scope_exit(self, &s, en->exit_rc);
}

Test(group, cancelling_the_owners_scope_cancels_the_tasks) {
  enclosing en = {.k = {{.sleep = 10 * WD_SEC}, {.sleep = 10 * WD_SEC}}};
  cr_assert_eq(run_virtual(enclosing_main, &en), 0);
  cr_assert_eq(en.exit_rc, WD_ECANCELED);
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(en.k[i].slept.rc, WD_ECANCELED, "kid %d", i);
    cr_assert_eq(en.k[i].slept.at, WD_SEC, "kid %d", i);
  }
  assert_no_leaks();
}

static int quick_task(wd_task *self, void *arg) { return 0; }

static int exit_checkpoint_main(wd_task *self, void *arg) {
  int *exit_rc = arg;
  wd_cancel_scope s;
  wd_group g;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, quick_task, NULL, NULL), 0);
  wd_cancel(&s);
  /* No task saw the cancel (the one task never reached a checkpoint), but
   * the scope around the group is cancelled when the exit returns. */
  *exit_rc = wd_group_exit(self, &g, 0);
  return wd_cancel_scope_exit(self, &s, *exit_rc);
}

Test(group, exit_in_a_cancelled_scope_returns_its_code_even_if_no_task_saw_it) {
  int exit_rc = 1;
  cr_assert_eq(run_virtual(exit_checkpoint_main, &exit_rc), 0);
  cr_assert_eq(exit_rc, WD_ECANCELED, "exit returned %d", exit_rc);
  assert_no_leaks();
}

typedef struct dropped {
  kid k[2];
  int exit_rc;
} dropped;

static int dropped_pending_main(wd_task *self, void *arg) {
  dropped *d = arg;
  wd_cancel_scope s;
  wd_group g;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  cr_assert_eq(wd_group_enter(self, &g, &(wd_group_opts){.max_running = 1}), 0);
  cr_assert_eq(wd_spawn(&g, quick_task, NULL, NULL), 0);
  cr_assert_eq(spawn_kid(&g, &d->k[0], "pending0"), 0);
  cr_assert_eq(spawn_kid(&g, &d->k[1], "pending1"), 0);
  wd_cancel(&s);
  d->exit_rc = wd_group_exit(self, &g, 0);
  return wd_cancel_scope_exit(self, &s, d->exit_rc);
}

Test(group, exit_reports_the_cancel_when_pending_tasks_were_dropped) {
  dropped t = {.k = {{.sleep = WD_SEC}, {.sleep = WD_SEC}}, .exit_rc = 1};
  cr_assert_eq(run_virtual(dropped_pending_main, &t), 0);
  for (int i = 0; i < 2; i++) {
    cr_assert_not(t.k[i].started, "pending %d started", i);
    cr_assert_eq(t.k[i].h.status, WD_ECANCELED, "pending %d", i);
  }
  cr_assert_eq(t.exit_rc, WD_ECANCELED, "exit returned %d", t.exit_rc);
  assert_no_leaks();
}

/* ---- max_running --------------------------------------------------------- */

typedef struct bounded {
  int running, max_seen, done;
  int order[10];
  int nstarted;
} bounded;

typedef struct slot {
  bounded *b;
  int idx;
} slot;

static int bounded_task(wd_task *self, void *arg) {
  slot *s = arg;
  bounded *b = s->b;
  b->order[b->nstarted++] = s->idx;
  if (++b->running > b->max_seen) b->max_seen = b->running;
  /* Uneven lengths, so that slots free up out of spawn order. */
  int rc = wd_sleep(self, (wd_time)(3 - s->idx % 3) * 10 * WD_MSEC);
  b->running--;
  b->done++;
  return rc;
}

static int bounded_main(wd_task *self, void *arg) {
  bounded *b = arg;
  slot slots[10];
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, &(wd_group_opts){.max_running = 3}), 0);
  for (int i = 0; i < 10; i++) {
    slots[i] = (slot){b, i};
    cr_assert_eq(wd_spawn(&g, bounded_task, &slots[i], NULL), 0);
  }
  cr_assert_eq(wd_group_size(&g), 10, "pending tasks count as alive");
  int rc = wd_group_exit(self, &g, 0);
  cr_assert_eq(wd_group_size(&g), 0);
  return rc;
}

Test(group, max_running_caps_concurrency_and_starts_in_fifo_order) {
  bounded b = {0};
  cr_assert_eq(run_virtual(bounded_main, &b), 0);
  cr_assert_eq(b.max_seen, 3);
  cr_assert_eq(b.done, 10);
  cr_assert_eq(b.nstarted, 10);
  for (int i = 0; i < 10; i++)
    cr_assert_eq(b.order[i], i, "start %d was task %d", i, b.order[i]);
  assert_no_leaks();
}

static int bounded_cancel_main(wd_task *self, void *arg) {
  kid *k = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, &(wd_group_opts){.max_running = 2}), 0);
  for (int i = 0; i < 5; i++)
    cr_assert_eq(spawn_kid(&g, &k[i], NULL), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_group_cancel(&g);
  return wd_group_exit(self, &g, 0);
}

Test(group, pending_tasks_of_a_cancelled_bounded_group_never_start) {
  kid k[5];
  for (int i = 0; i < 5; i++)
    k[i] = (kid){.sleep = 10 * WD_SEC};
  cr_assert_eq(run_virtual(bounded_cancel_main, k), 0);
  for (int i = 0; i < 2; i++) {
    cr_assert(k[i].started, "kid %d", i);
    cr_assert_eq(k[i].slept.at, WD_SEC, "kid %d", i);
    cr_assert_eq(k[i].h.status, WD_ECANCELED, "kid %d", i);
  }
  for (int i = 2; i < 5; i++) {
    cr_assert_not(k[i].started, "kid %d started", i);
    cr_assert(k[i].h.done, "kid %d", i);
    cr_assert_eq(k[i].h.status, WD_ECANCELED, "kid %d", i);
    cr_assert_null(k[i].h.task, "kid %d", i);
  }
  assert_no_leaks();
}

static int pending_handle_cancel_main(wd_task *self, void *arg) {
  kid *k = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, &(wd_group_opts){.max_running = 1}), 0);
  cr_assert_eq(spawn_kid(&g, &k[0], "a"), 0);
  cr_assert_eq(spawn_kid(&g, &k[1], "b"), 0);
  cr_assert_not(k[1].h.done, "b waits for a slot");
  wd_handle_cancel(&k[1].h);
  return wd_group_exit(self, &g, 0);
}

Test(group, handle_cancel_of_a_pending_task_is_not_lost) {
  kid k[2] = {{.sleep = WD_SEC}, {.sleep = WD_SEC}};
  cr_assert_eq(run_virtual(pending_handle_cancel_main, k), 0);
  cr_assert_eq(k[0].slept.rc, 0, "a is not affected");
  cr_assert(k[1].h.done);
  cr_assert_eq(k[1].h.status, WD_ECANCELED, "b ended with %d", k[1].h.status);
  cr_assert(!k[1].started || k[1].slept.rc == WD_ECANCELED);
  assert_no_leaks();
}

static int arm_alloc_failure(wd_task *self, void *arg) {
  /* The next allocation is the stack of the pending task that takes this
   * task's slot when it returns. */
  wd_alloc_fail_after(1);
  return 0;
}

typedef struct nostart {
  kid running, unstartable, next;
  int exit_rc;
  wd_time exit_at;
} nostart;

static int nostart_main(wd_task *self, void *arg) {
  nostart *n = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, &(wd_group_opts){.max_running = 2}), 0);
  cr_assert_eq(spawn_kid(&g, &n->running, "running"), 0);
  cr_assert_eq(wd_spawn(&g, arm_alloc_failure, NULL, NULL), 0);
  cr_assert_eq(spawn_kid(&g, &n->unstartable, "unstartable"), 0);
  cr_assert_eq(spawn_kid(&g, &n->next, "next"), 0);
  n->exit_rc = wd_group_exit(self, &g, 0);
  n->exit_at = wd_now(self);
  return 0;
}

Test(group, a_pending_task_that_cannot_start_fails_the_group) {
  nostart n = {.running = {.sleep = 10 * WD_SEC},
               .unstartable = {.sleep = WD_SEC},
               .next = {.sleep = 10 * WD_SEC},
               .exit_rc = 1};
  cr_assert_eq(run_virtual(nostart_main, &n), 0);
  cr_assert_not(n.unstartable.started);
  cr_assert_eq(n.unstartable.h.status, WD_ENOMEM);
  cr_assert_eq(n.exit_rc, WD_EGROUP);
  const wd_error *e = wd_last_error();
  cr_assert_eq(e->nchildren, 1);
  cr_assert_eq(e->children[0]->code, WD_ENOMEM);
  cr_assert_eq(e->children[0]->task_id, n.unstartable.h.id);
  cr_assert_eq(n.running.slept.rc, WD_ECANCELED, "the sibling ran on: %d",
               n.running.slept.rc);
  cr_assert_eq(n.exit_at, 0, "exit waited until %lld", (long long)n.exit_at);
  cr_assert(!n.next.started || n.next.slept.rc == WD_ECANCELED);
  assert_no_leaks();
}

/* A busy group: pending tasks behind a cap, a failure, handles. */
static int busy_main(wd_task *self, void *arg) {
  kid *k = arg;
  wd_group g;
  int rc = wd_group_enter(self, &g,
                          &(wd_group_opts){.name = "busy", .max_running = 2});
  if (rc) return rc;
  for (int i = 0; i < 4 && rc == 0; i++)
    rc = spawn_kid(&g, &k[i], "kid");
  return wd_group_exit(self, &g, rc);
}

Test(group, allocation_failure_at_every_point_is_clean) {
  for (long n = 1;; n++) {
    kid k[4] = {{.sleep = WD_MSEC},
                {.sleep = 2 * WD_MSEC, .fail = WD_EPERM},
                {.sleep = 3 * WD_MSEC},
                {.sleep = 4 * WD_MSEC}};
    wd_alloc_fail_after(n);
    int rc = run_virtual(busy_main, k);
    bool fired = wd_alloc_failed();
    wd_alloc_fail_after(0);
    cr_assert(rc == WD_EGROUP || rc == WD_ENOMEM, "n=%ld: rc %s", n,
              wd_err_name(rc));
    /* Every spawned task ended and its handle says how. */
    for (int i = 0; i < 4; i++)
      cr_assert(k[i].h.id == 0 || k[i].h.done, "n=%ld: kid %d not done", n, i);
    assert_no_leaks();
    if (!fired) {
      cr_assert_eq(rc, WD_EGROUP, "without a fault, kid 1 fails");
      break;
    }
    cr_assert_lt(n, 1000, "the fault loop does not end");
  }
}

static int bounded_failure_main(wd_task *self, void *arg) {
  kid *k = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, &(wd_group_opts){.max_running = 1}), 0);
  cr_assert_eq(spawn_kid(&g, &k[0], "a"), 0);
  cr_assert_eq(spawn_kid(&g, &k[1], "b"), 0);
  return wd_group_exit(self, &g, 0);
}

Test(group, a_failure_drops_the_pending_tasks) {
  kid k[2] = {{.sleep = WD_SEC, .fail = WD_EPERM}, {.sleep = WD_SEC}};
  cr_assert_eq(run_virtual(bounded_failure_main, k), WD_EGROUP);
  cr_assert_not(k[1].started, "b started after a's failure");
  cr_assert(k[1].h.done);
  cr_assert_eq(k[1].h.status, WD_ECANCELED);
  cr_assert_eq(wd_last_error()->nchildren, 1);
  assert_no_leaks();
}

/* ---- wd_run_tasks -------------------------------------------------------- */

static int job_fn(wd_task *self, void *arg) {
  int rc = wd_sleep(self, WD_SEC);
  wd_task_set_result(self, arg);
  return rc;
}

static int io_fail_job(wd_task *self, void *arg) {
  int rc = wd_sleep(self, WD_SEC / 2);
  return rc ? rc : -EIO;
}

static int run_tasks_main(wd_task *self, void *arg) {
  wd_job *jobs = arg;
  int rc = wd_run_tasks(self, jobs, 4, NULL);
  cr_assert_eq(wd_now(self), WD_SEC, "the jobs ran concurrently");
  return rc;
}

Test(group, run_tasks_runs_jobs_concurrently_and_gathers_results) {
  int vals[4];
  wd_job jobs[4];
  for (int i = 0; i < 4; i++)
    jobs[i] = (wd_job){.fn = job_fn, .arg = &vals[i], .name = "job"};
  cr_assert_eq(run_virtual(run_tasks_main, jobs), 0);
  for (int i = 0; i < 4; i++) {
    cr_assert(jobs[i].h.done, "job %d", i);
    cr_assert_eq(jobs[i].h.status, 0, "job %d", i);
    cr_assert_eq(jobs[i].h.result, &vals[i], "job %d", i);
    cr_assert_neq(jobs[i].h.id, 0, "job %d", i);
    for (int j = 0; j < i; j++)
      cr_assert_neq(jobs[i].h.id, jobs[j].h.id);
  }
  assert_no_leaks();
}

static int run_tasks_fail_main(wd_task *self, void *arg) {
  wd_job *jobs = arg;
  int rc = wd_run_tasks(self, jobs, 3, NULL);
  cr_assert_eq(wd_now(self), WD_SEC / 2);
  return rc;
}

Test(group, run_tasks_failure_cancels_the_other_jobs) {
  wd_job jobs[3] = {{.fn = job_fn, .name = "j0"},
                    {.fn = io_fail_job, .name = "j1"},
                    {.fn = job_fn, .name = "j2"}};
  cr_assert_eq(run_virtual(run_tasks_fail_main, jobs), WD_EGROUP);
  cr_assert_eq(jobs[1].h.status, -EIO);
  cr_assert_eq(jobs[0].h.status, WD_ECANCELED);
  cr_assert_eq(jobs[2].h.status, WD_ECANCELED);
  const wd_error *e = wd_last_error();
  cr_assert_eq(e->nchildren, 1);
  cr_assert_str_eq(e->children[0]->task_name, "j1");
  assert_no_leaks();
}

static int run_tasks_bad_main(wd_task *self, void *arg) {
  int ran = 0;
  wd_job jobs[2] = {{.fn = job_fn, .arg = &ran}, {.fn = NULL}};
  cr_assert_eq(wd_run_tasks(self, jobs, 2, NULL), WD_EINVAL);
  cr_assert_eq(wd_run_tasks(self, NULL, 1, NULL), WD_EINVAL);
  cr_assert_eq(wd_run_tasks(self, NULL, 0, NULL), 0, "nothing to run");
  cr_assert_eq(wd_now(self), 0, "nothing ran");
  cr_assert_null(jobs[0].h.result);
  return 0;
}

Test(group, run_tasks_rejects_a_job_without_fn_and_runs_nothing) {
  cr_assert_eq(run_virtual(run_tasks_bad_main, NULL), 0);
  assert_no_leaks();
}

/* ---- spawning ------------------------------------------------------------ */

typedef struct grower {
  wd_group *g;
  int spawn_rc;
  bool sibling_ran;
  wd_time sibling_done;
} grower;

static int grown_sibling(wd_task *self, void *arg) {
  grower *gr = arg;
  int rc = wd_sleep(self, WD_SEC);
  gr->sibling_ran = true;
  gr->sibling_done = wd_now(self);
  return rc;
}

static int grower_task(wd_task *self, void *arg) {
  grower *gr = arg;
  /* By now the owner is waiting in wd_group_exit(). */
  int rc = wd_sleep(self, WD_SEC);
  gr->spawn_rc = wd_spawn(gr->g, grown_sibling, gr, NULL);
  return rc;
}

static int grower_main(wd_task *self, void *arg) {
  grower *gr = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  gr->g = &g;
  cr_assert_eq(wd_spawn(&g, grower_task, gr, NULL), 0);
  int rc = wd_group_exit(self, &g, 0);
  cr_assert_eq(wd_now(self), 2 * WD_SEC, "exit waited for the new task");
  return rc;
}

/* Note: group.h says wd_spawn() returns WD_ECLOSED while "g is being
 * exited"; Trio (and the implementation) let a task of the group add
 * siblings while the owner waits, which is what this test expects. */
Test(group, a_task_can_spawn_siblings_while_the_owner_waits_in_exit) {
  grower gr = {.spawn_rc = 1};
  cr_assert_eq(run_virtual(grower_main, &gr), 0);
  cr_assert_eq(gr.spawn_rc, 0);
  cr_assert(gr.sibling_ran);
  cr_assert_eq(gr.sibling_done, 2 * WD_SEC);
  assert_no_leaks();
}

static int closed_main(wd_task *self, void *arg) {
  wd_group g;
  int n = 0;
  cr_assert_eq(wd_group_enter(self, &g, &(wd_group_opts){.name = "done"}), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_spawn(&g, quick_task, &n, NULL), WD_ECLOSED);
  cr_assert_not_null(strstr(wd_task_error(self)->msg, "closed"), "%s",
                     wd_task_error(self)->msg);
  return 0;
}

Test(group, spawn_after_exit_is_eclosed) {
  cr_assert_eq(run_virtual(closed_main, NULL), 0);
  assert_no_leaks();
}

/* Three levels: the root's group holds n[0], whose group holds n[1], whose
 * group holds the leaf n[2]. */
typedef struct nest {
  struct nest *next;
  seen slept; /* the leaf's */
  int exit_rc;
} nest;

static int nest_task(wd_task *self, void *arg) {
  nest *n = arg;
  if (!n->next) {
    look(self, &n->slept, wd_sleep(self, 10 * WD_SEC));
    return n->slept.rc;
  }
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, nest_task, n->next, NULL), 0);
  n->exit_rc = wd_group_exit(self, &g, 0);
  return n->exit_rc;
}

static int nest_main(wd_task *self, void *arg) {
  nest *n = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, nest_task, &n[0], NULL), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_group_cancel(&g);
  return wd_group_exit(self, &g, 0);
}

Test(group, nested_groups_three_deep_cancel_transitively) {
  nest n[3] = {{.next = &n[1], .exit_rc = 1},
               {.next = &n[2], .exit_rc = 1},
               {.slept = {1, -1}}};
  cr_assert_eq(run_virtual(nest_main, n), 0,
               "the cancelled inner groups are not failures");
  cr_assert_eq(n[2].slept.rc, WD_ECANCELED);
  cr_assert_eq(n[2].slept.at, WD_SEC);
  cr_assert_eq(n[1].exit_rc, WD_ECANCELED);
  cr_assert_eq(n[0].exit_rc, WD_ECANCELED);
  assert_no_leaks();
}

static int group_over_scope_main(wd_task *self, void *arg) {
  wd_group g;
  wd_cancel_scope s;
  cr_assert_eq(wd_group_enter(self, &g, &(wd_group_opts){.name = "outer"}), 0);
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), WD_EINVAL);
  cr_assert_not_null(strstr(wd_task_error(self)->msg, "reverse order"), "%s",
                     wd_task_error(self)->msg);
  /* The refused exit left the group open and usable. */
  cr_assert_eq(wd_cancel_scope_exit(self, &s, 0), 0);
  int n = 0;
  cr_assert_eq(wd_spawn(&g, quick_task, &n, NULL), 0);
  return wd_group_exit(self, &g, 0);
}

Test(group, exiting_a_group_with_a_scope_open_inside_is_einval) {
  cr_assert_eq(run_virtual(group_over_scope_main, NULL), 0);
  assert_no_leaks();
}

/* ---- joins and handles --------------------------------------------------- */

typedef struct joins {
  kid target;
  seen joined[2];
  int result_seen;
} joins;

static int joiner_task(wd_task *self, void *arg) {
  joins *j = arg;
  look(self, &j->joined[0], wd_join(self, &j->target.h));
  j->result_seen = j->target.h.done ? j->target.h.status : 1;
  return 0;
}

static int second_joiner_task(wd_task *self, void *arg) {
  joins *j = arg;
  look(self, &j->joined[1], wd_join(self, &j->target.h));
  return 0;
}

static int join_main(wd_task *self, void *arg) {
  joins *j = arg;
  wd_group g;
  /* A supervisor, so that the target's failure does not cancel the
   * joiners. */
  cr_assert_eq(wd_group_enter(self, &g, &(wd_group_opts){.supervisor = true}),
               0);
  cr_assert_eq(spawn_kid(&g, &j->target, "target"), 0);
  cr_assert_eq(wd_spawn(&g, joiner_task, j, NULL), 0);
  cr_assert_eq(wd_spawn(&g, second_joiner_task, j, NULL), 0);
  return wd_group_exit(self, &g, 0);
}

/* The target fails (so the group fails too) to show that the join sees
 * the final status; the first joiner joins, the second one tries while
 * the first still waits. */
static void run_joins(joins *j) {
  *j = (joins){.target = {.sleep = WD_SEC, .fail = WD_EPERM}, .result_seen = 1};
  cr_assert_eq(run_virtual(join_main, j), WD_EGROUP);
}

Test(group, a_sibling_can_join_a_task) {
  joins j;
  run_joins(&j);
  cr_assert_eq(j.joined[0].rc, 0);
  cr_assert_eq(j.joined[0].at, WD_SEC);
  cr_assert_eq(j.result_seen, WD_EPERM, "the join sees the final status");
  assert_no_leaks();
}

Test(group, a_second_concurrent_join_is_ebusy_at_once) {
  joins j;
  run_joins(&j);
  cr_assert_eq(j.joined[1].rc, WD_EBUSY);
  cr_assert_eq(j.joined[1].at, 0, "EBUSY does not wait");
  assert_no_leaks();
}

static int join_pending_main(wd_task *self, void *arg) {
  kid *k = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, &(wd_group_opts){.max_running = 1}), 0);
  cr_assert_eq(spawn_kid(&g, &k[0], "a"), 0);
  cr_assert_eq(spawn_kid(&g, &k[1], "b"), 0);
  cr_assert_neq(k[1].h.id, 0, "a pending task already has its id");
  cr_assert_eq(wd_join(self, &k[1].h), 0);
  cr_assert_eq(wd_now(self), 2 * WD_SEC, "b ran after a, then ended");
  cr_assert(k[1].h.done);
  return wd_group_exit(self, &g, 0);
}

Test(group, a_pending_task_can_be_joined_before_it_starts) {
  kid k[2] = {{.sleep = WD_SEC}, {.sleep = WD_SEC}};
  cr_assert_eq(run_virtual(join_pending_main, k), 0);
  cr_assert_eq(k[1].h.status, 0);
  assert_no_leaks();
}

typedef struct rejoin {
  kid target;
  seen first, second;
} rejoin;

static int impatient_joiner(wd_task *self, void *arg) {
  rejoin *r = arg;
  wd_cancel_scope s;
  cr_assert_eq(wd_move_on_after(self, &s, WD_SEC / 2), 0);
  int rc = wd_join(self, &r->target.h);
  look(self, &r->first, rc);
  return wd_cancel_scope_exit(self, &s, rc);
}

static int patient_joiner(wd_task *self, void *arg) {
  rejoin *r = arg;
  int rc = wd_sleep(self, WD_SEC * 3 / 4);
  if (rc == 0) rc = wd_join(self, &r->target.h);
  look(self, &r->second, rc);
  return 0;
}

static int rejoin_main(wd_task *self, void *arg) {
  rejoin *r = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(spawn_kid(&g, &r->target, NULL), 0);
  cr_assert_eq(wd_spawn(&g, impatient_joiner, r, NULL), 0);
  cr_assert_eq(wd_spawn(&g, patient_joiner, r, NULL), 0);
  return wd_group_exit(self, &g, 0);
}

Test(group, a_cancelled_join_leaves_the_handle_free_for_another_joiner) {
  rejoin r = {.target = {.sleep = WD_SEC}};
  cr_assert_eq(run_virtual(rejoin_main, &r), 0);
  cr_assert_eq(r.first.rc, WD_ETIMEDOUT);
  cr_assert_eq(r.first.at, WD_SEC / 2);
  cr_assert_eq(r.second.rc, 0, "second join: %d", r.second.rc);
  cr_assert_eq(r.second.at, WD_SEC);
  cr_assert_eq(r.target.slept.rc, 0, "a cancelled join leaves the task be");
  assert_no_leaks();
}

static int handle_cancel_main(wd_task *self, void *arg) {
  kid *k = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(spawn_kid(&g, &k[0], "a"), 0);
  cr_assert_eq(spawn_kid(&g, &k[1], "b"), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_handle_cancel(&k[0].h);
  int rc = wd_group_exit(self, &g, 0);
  cr_assert_eq(rc, 0, "a task's own cancel is not a failure: %d", rc);
  cr_assert_eq(wd_cancel_status(self), 0, "the owner is not cancelled");
  wd_handle_cancel(&k[0].h); /* ended: a no-op */
  wd_handle_cancel(NULL);
  return 0;
}

Test(group, handle_cancel_cancels_that_task_only) {
  kid k[2] = {{.sleep = 2 * WD_SEC}, {.sleep = 2 * WD_SEC}};
  cr_assert_eq(run_virtual(handle_cancel_main, k), 0);
  cr_assert_eq(k[0].slept.rc, WD_ECANCELED);
  cr_assert_eq(k[0].slept.at, WD_SEC);
  cr_assert_eq(k[0].h.status, WD_ECANCELED);
  cr_assert_eq(k[1].slept.rc, 0);
  cr_assert_eq(k[1].slept.at, 2 * WD_SEC);
  cr_assert_eq(k[1].h.status, 0);
  assert_no_leaks();
}

/* ---- the root's error ---------------------------------------------------- */

static int root_fails_main(wd_task *self, void *arg) {
  return wd_fail(self, WD_EPERM, "root broke %d", 42);
}

Test(group, root_error_is_available_after_wd_run) {
  cr_assert_eq(run_virtual(root_fails_main, NULL), WD_EPERM);
  const wd_error *e = wd_last_error();
  cr_assert_not_null(e);
  cr_assert_eq(e->code, WD_EPERM);
  cr_assert_str_eq(e->msg, "root broke 42");
  wd_error_clear(NULL);
  cr_assert_null(wd_last_error());
  assert_no_leaks();
}

/* WD_EGROUP is always explained, even when its error record cannot be
 * allocated: the static stand-in records it. */
static int eio_task(wd_task *self, void *arg) { return -EIO; }

static int egroup_main(wd_task *self, void *arg) {
  wd_group g;
  int rc = wd_group_enter(self, &g, NULL);
  if (rc) return rc;
  rc = wd_spawn(&g, eio_task, NULL, NULL);
  rc = wd_group_exit(self, &g, rc);
  if (rc == WD_EGROUP) {
    const wd_error *e = wd_task_error(self);
    cr_assert_not_null(e, "WD_EGROUP without an error record");
    cr_assert_eq(e->code, WD_EGROUP);
  }
  return rc;
}

Test(group, egroup_is_recorded_even_when_its_record_cannot_be_allocated) {
  bool done = false;
  for (long n = 1; n < 100 && !done; n++) {
    wd_alloc_fail_after(n);
    int rc = run_virtual(egroup_main, NULL);
    done = !wd_alloc_failed();
    wd_alloc_fail_after(0);
    cr_assert(rc == WD_EGROUP || rc == WD_ENOMEM, "n=%ld rc=%d", n, rc);
    assert_no_leaks();
  }
  cr_assert(done);
}

/* ---- detaching and restoring errors ------------------------------------- */

static int detach_main(wd_task *self, void *arg) {
  (void)arg;
  cr_assert_null(wd_error_detach(self), "no error: nothing to detach");
  wd_fail(self, WD_EPERM, "first %d", 1);
  wd_error *first = wd_error_detach(self);
  cr_assert_not_null(first);
  cr_assert_null(wd_task_error(self), "the slot is empty after detaching");
  /* A cleanup's failure cannot free the detached error. */
  wd_wrap(self, -EIO, "close failed");
  wd_error *second = wd_error_detach(self);
  cr_assert_eq(wd_error_add_secondary(first, second), 0);
  cr_assert_eq(wd_error_add_secondary(first, NULL), 0, "counted only");
  cr_assert_eq(first->nsecondary, 2);
  cr_assert_eq(first->nsecondary_kept, 1);
  cr_assert_eq(first->secondary[0]->code, -EIO);
  wd_fail(self, WD_EBUSY, "recorded meanwhile");
  wd_error_restore(self, first); /* frees the one recorded meanwhile */
  const wd_error *e = wd_task_error(self);
  cr_assert_eq(e, first);
  char buf[512];
  wd_error_format(e, buf, sizeof buf);
  cr_assert_not_null(strstr(buf, "WD_EPERM: first 1"), "%s", buf);
  cr_assert_not_null(strstr(buf, "(+2 cleanup errors)"), "%s", buf);
  cr_assert_not_null(strstr(buf, "cleanup: EIO: close failed"), "%s", buf);
  /* Ownership: add_secondary on NULL frees what it was given. */
  wd_fail(self, WD_EAGAIN, "orphan");
  cr_assert_eq(wd_error_add_secondary(NULL, wd_error_detach(self)), WD_EINVAL);
  wd_error_free(NULL);
  wd_error_restore(self, NULL);
  cr_assert_null(wd_task_error(self));
  return 0;
}

Test(group, errors_can_be_detached_given_secondaries_and_restored) {
  cr_assert_eq(wd_run(detach_main, NULL), 0);
  assert_no_leaks();
}

static int secondary_oom_main(wd_task *self, void *arg) {
  (void)arg;
  wd_fail(self, WD_EPERM, "first");
  wd_error *first = wd_error_detach(self);
  wd_fail(self, -EIO, "second");
  wd_error *second = wd_error_detach(self);
  wd_alloc_fail_after(1);
  cr_assert_eq(wd_error_add_secondary(first, second), WD_ENOMEM);
  wd_alloc_fail_after(0);
  cr_assert_eq(first->nsecondary, 1, "still counted");
  cr_assert_eq(first->nsecondary_kept, 0, "detail dropped, and freed");
  wd_error_free(first);
  return 0;
}

Test(group, a_secondary_that_cannot_be_kept_is_counted_and_freed) {
  cr_assert_eq(wd_run(secondary_oom_main, NULL), 0);
  assert_no_leaks();
}
