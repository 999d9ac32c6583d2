/* Cancel scopes: what a checkpoint returns when a scope fires, which scope
 * wd_cancel_scope_exit() swallows the cancellation at, deadlines that move,
 * shields, and parks whose cancellation cannot be undone.
 *
 * Everything runs on the virtual clock, so "at once" and "at 1 s" are exact
 * comparisons of wd_now().  Most tests have the same cast: a worker task
 * blocked inside scopes it publishes, and the root task, inside the group
 * the worker lives in, acting on those scopes at chosen times. */
#include <string.h>

#include "helpers.h"

/* What a task saw at one checkpoint: its code, and when it returned. */
typedef struct seen {
  int rc;
  wd_time at;
} seen;

#define NOT_YET ((seen){.rc = 1, .at = -1})

static void look(wd_task *self, seen *s, int rc) {
  s->rc = rc;
  s->at = wd_now(self);
}

/* ---- one scope around a sleep -------------------------------------------- */

/* A worker that enters one scope with `opts`, sleeps, and reports. */
typedef struct worker {
  wd_cancel_opts opts;
  wd_time sleep;
  wd_cancel_scope *scope; /* published while entered */
  seen slept;
  const char *reason;
  bool cancelled;
  int exit_rc;
} worker;

static int scope_sleeper(wd_task *self, void *arg) {
  worker *w = arg;
  wd_cancel_scope s;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, &w->opts), 0);
  w->scope = &s;
  look(self, &w->slept, wd_sleep(self, w->sleep));
  w->reason = wd_cancel_scope_reason(&s);
  w->cancelled = wd_cancel_scope_cancelled(&s);
  w->scope = NULL;
  w->exit_rc = wd_cancel_scope_exit(self, &s, w->slept.rc);
  return 0;
}

/* The root's part: runs inside the group, after the worker was spawned. */
typedef int (*script_fn)(wd_task *self, worker *w);

typedef struct scene {
  worker w;
  script_fn script;
} scene;

static int scene_main(wd_task *self, void *arg) {
  scene *sc = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, scope_sleeper, &sc->w, NULL), 0);
  /* Let the worker enter its scope and block. */
  cr_assert_eq(wd_yield(self), 0);
  cr_assert_not_null(sc->w.scope);
  int rc = sc->script(self, &sc->w);
  return wd_group_exit(self, &g, rc);
}

static void play(scene *sc) {
  sc->w.slept = NOT_YET;
  sc->w.exit_rc = 1;
  cr_assert_eq(run_virtual(scene_main, sc), 0);
}

static int cancel_at_1s(wd_task *self, worker *w) {
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  cr_assert_eq(w->slept.at, -1, "the worker is still asleep");
  wd_cancel(w->scope);
  return 0;
}

Test(cancel, blocked_sleep_wakes_at_once_with_ecanceled) {
  scene sc = {.w = {.sleep = 10 * WD_SEC}, .script = cancel_at_1s};
  play(&sc);
  cr_assert_eq(sc.w.slept.rc, WD_ECANCELED);
  cr_assert_eq(sc.w.slept.at, WD_SEC, "woke at %lld ns, not at the cancel",
               (long long)sc.w.slept.at);
  cr_assert_eq(sc.w.exit_rc, 0, "the cancelled scope swallows its cancel");
  assert_no_leaks();
}

Test(cancel, explicit_cancel_reports_ecanceled_even_with_a_deadline) {
  /* The scope has a deadline, but wd_cancel() fired it first: the code
   * says why it fired, not that it could also have timed out. */
  scene sc = {.w = {.opts = {.timeout = 5 * WD_SEC}, .sleep = 10 * WD_SEC},
              .script = cancel_at_1s};
  play(&sc);
  cr_assert_eq(sc.w.slept.rc, WD_ECANCELED);
  cr_assert_eq(sc.w.slept.at, WD_SEC);
  cr_assert(sc.w.cancelled);
  cr_assert_str_eq(sc.w.reason, "cancelled");
  cr_assert_eq(sc.w.exit_rc, 0);
  assert_no_leaks();
}

static int do_nothing(wd_task *self, worker *w) { return 0; }

Test(cancel, deadline_reports_etimedout) {
  scene sc = {.w = {.opts = {.timeout = 2 * WD_SEC}, .sleep = 10 * WD_SEC},
              .script = do_nothing};
  play(&sc);
  cr_assert_eq(sc.w.slept.rc, WD_ETIMEDOUT);
  cr_assert_eq(sc.w.slept.at, 2 * WD_SEC);
  cr_assert(sc.w.cancelled);
  cr_assert_str_eq(sc.w.reason, "deadline");
  cr_assert_eq(sc.w.exit_rc, 0);
  assert_no_leaks();
}

static int deadline_to_3s_at_1s(wd_task *self, worker *w) {
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_cancel_scope_set_deadline(w->scope, 3 * WD_SEC);
  return 0;
}

Test(cancel, deadline_moved_earlier_while_blocked_fires_at_new_time) {
  scene sc = {.w = {.opts = {.timeout = 8 * WD_SEC}, .sleep = 10 * WD_SEC},
              .script = deadline_to_3s_at_1s};
  play(&sc);
  cr_assert_eq(sc.w.slept.rc, WD_ETIMEDOUT);
  cr_assert_eq(sc.w.slept.at, 3 * WD_SEC);
  cr_assert_eq(sc.w.exit_rc, 0);
  assert_no_leaks();
}

Test(cancel, deadline_set_on_a_scope_without_one_fires) {
  scene sc = {.w = {.sleep = 10 * WD_SEC}, .script = deadline_to_3s_at_1s};
  play(&sc);
  cr_assert_eq(sc.w.slept.rc, WD_ETIMEDOUT);
  cr_assert_eq(sc.w.slept.at, 3 * WD_SEC);
  assert_no_leaks();
}

static int deadline_to_5s_at_half(wd_task *self, worker *w) {
  cr_assert_eq(wd_sleep(self, WD_SEC / 2), 0);
  wd_cancel_scope_set_deadline(w->scope, 5 * WD_SEC);
  return 0;
}

Test(cancel, deadline_moved_later_while_blocked_does_not_fire_early) {
  /* The old deadline (1 s) passes while the worker sleeps until 3 s. */
  scene sc = {.w = {.opts = {.timeout = WD_SEC}, .sleep = 3 * WD_SEC},
              .script = deadline_to_5s_at_half};
  play(&sc);
  cr_assert_eq(sc.w.slept.rc, 0);
  cr_assert_eq(sc.w.slept.at, 3 * WD_SEC);
  cr_assert_not(sc.w.cancelled);
  assert_no_leaks();
}

static int deadline_cleared_at_half(wd_task *self, worker *w) {
  cr_assert_eq(wd_sleep(self, WD_SEC / 2), 0);
  wd_cancel_scope_set_deadline(w->scope, 0);
  return 0;
}

Test(cancel, deadline_cleared_while_blocked_never_fires) {
  scene sc = {.w = {.opts = {.timeout = WD_SEC}, .sleep = 3 * WD_SEC},
              .script = deadline_cleared_at_half};
  play(&sc);
  cr_assert_eq(sc.w.slept.rc, 0);
  cr_assert_eq(sc.w.slept.at, 3 * WD_SEC);
  cr_assert_not(sc.w.cancelled);
  assert_no_leaks();
}

static int deadline_to_now_at_1s(wd_task *self, worker *w) {
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_cancel_scope_set_deadline(w->scope, wd_now(self));
  /* The cancellation is delivered by the call, not by a later timer. */
  cr_assert(wd_cancel_scope_cancelled(w->scope));
  return 0;
}

Test(cancel, deadline_moved_to_now_while_blocked_fires_at_once) {
  scene sc = {.w = {.opts = {.timeout = 8 * WD_SEC}, .sleep = 10 * WD_SEC},
              .script = deadline_to_now_at_1s};
  play(&sc);
  cr_assert_eq(sc.w.slept.rc, WD_ETIMEDOUT);
  cr_assert_eq(sc.w.slept.at, WD_SEC);
  assert_no_leaks();
}

static int cancel_then_let_deadline_pass(wd_task *self, worker *w) {
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_cancel(w->scope);
  wd_cancel(w->scope); /* idempotent */
  return 0;
}

Test(cancel, first_reason_wins) {
  scene sc = {.w = {.opts = {.timeout = 2 * WD_SEC}, .sleep = 10 * WD_SEC},
              .script = cancel_then_let_deadline_pass};
  play(&sc);
  cr_assert_eq(sc.w.slept.rc, WD_ECANCELED);
  cr_assert_str_eq(sc.w.reason, "cancelled");
  assert_no_leaks();
}

/* ---- level-triggered ----------------------------------------------------- */

typedef struct counted_wait {
  wd_wait w; /* first: on_cancel gets &w */
  int on_cancel_calls;
  bool undo; /* what on_cancel answers */
} counted_wait;

static bool counted_on_cancel(wd_wait *w) {
  counted_wait *cw = (counted_wait *)w;
  cw->on_cancel_calls++;
  return cw->undo;
}

static int sleep_1s(wd_task *self, void *arg) { return wd_sleep(self, WD_SEC); }

static int level_main(wd_task *self, void *arg) {
  wd_group g;
  wd_handle h;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, sleep_1s, NULL, &(wd_spawn_opts){.handle = &h}), 0);
  wd_cancel_scope s;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  wd_cancel(&s);
  counted_wait cw = {.w = {.what = "test", .on_cancel = counted_on_cancel},
                     .undo = true};
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(wd_cancel_status(self), WD_ECANCELED);
    cr_assert_eq(wd_yield(self), WD_ECANCELED, "round %d", i);
    cr_assert_eq(wd_sleep(self, WD_MSEC), WD_ECANCELED, "round %d", i);
    cr_assert_eq(wd_sleep(self, 0), WD_ECANCELED, "round %d", i);
    cr_assert_eq(wd_sleep_until(self, WD_SEC), WD_ECANCELED, "round %d", i);
    cr_assert_eq(wd_park(self, &cw.w), WD_ECANCELED, "round %d", i);
    cr_assert_eq(wd_join(self, &h), WD_ECANCELED, "round %d", i);
  }
  cr_assert_eq(wd_now(self), 0, "no checkpoint waited");
  cr_assert_eq(cw.on_cancel_calls, 0, "a park that fails at once never parks");
  cr_assert_not(h.done, "a failed join leaves the task running");
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ECANCELED), 0);
  /* Out of the scope, the same handle can be joined: the failed joins
   * left no joiner behind. */
  cr_assert_eq(wd_join(self, &h), 0);
  cr_assert_eq(wd_now(self), WD_SEC);
  return wd_group_exit(self, &g, 0);
}

Test(cancel, level_triggered_every_later_checkpoint_fails_at_once) {
  cr_assert_eq(run_virtual(level_main, NULL), 0);
  assert_no_leaks();
}

/* ---- nesting ------------------------------------------------------------- */

static int inner_first_main(wd_task *self, void *arg) {
  wd_cancel_scope outer, inner;
  cr_assert_eq(wd_move_on_after(self, &outer, 10 * WD_SEC), 0);
  cr_assert_eq(wd_move_on_after(self, &inner, WD_SEC), 0);
  int rc = wd_sleep(self, 5 * WD_SEC);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  cr_assert_eq(wd_now(self), WD_SEC, "woke exactly at the inner deadline");
  cr_assert_eq(wd_cancel_scope_exit(self, &inner, rc), 0);
  cr_assert_not(wd_cancel_scope_cancelled(&outer));
  cr_assert_eq(wd_cancel_status(self), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0, "the outer block carries on");
  cr_assert_eq(wd_now(self), 2 * WD_SEC);
  return wd_cancel_scope_exit(self, &outer, 0);
}

Test(cancel, inner_deadline_first_is_swallowed_by_the_inner_scope) {
  cr_assert_eq(run_virtual(inner_first_main, NULL), 0);
  assert_no_leaks();
}

static int outer_first_main(wd_task *self, void *arg) {
  wd_cancel_scope outer, inner;
  cr_assert_eq(wd_move_on_after(self, &outer, WD_SEC), 0);
  cr_assert_eq(wd_move_on_after(self, &inner, 10 * WD_SEC), 0);
  int rc = wd_sleep(self, 5 * WD_SEC);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  cr_assert_eq(wd_now(self), WD_SEC);
  cr_assert_not(wd_cancel_scope_cancelled(&inner));
  /* The inner scope did not cause it: it passes the code up unchanged. */
  rc = wd_cancel_scope_exit(self, &inner, rc);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  cr_assert_eq(wd_cancel_scope_exit(self, &outer, rc), 0);
  cr_assert_eq(wd_now(self), WD_SEC);
  return 0;
}

Test(cancel, outer_deadline_first_passes_the_inner_scope_to_the_outer) {
  cr_assert_eq(run_virtual(outer_first_main, NULL), 0);
  assert_no_leaks();
}

static int outermost_wins_main(wd_task *self, void *arg) {
  wd_cancel_scope outer, inner;
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  cr_assert_eq(wd_move_on_after(self, &outer, 10 * WD_SEC), 0);
  cr_assert_eq(wd_cancel_scope_enter(self, &inner, NULL), 0);
  wd_cancel(&inner);
  wd_cancel_scope_set_deadline(&outer, wd_now(self));
  /* Both are pending; the unwinding ends at the outer scope, so its code
   * is the one every checkpoint reports. */
  cr_assert_eq(wd_cancel_status(self), WD_ETIMEDOUT);
  int rc = wd_yield(self);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  rc = wd_cancel_scope_exit(self, &inner, rc);
  cr_assert_eq(rc, WD_ETIMEDOUT, "the inner scope must not swallow it");
  cr_assert_eq(wd_cancel_status(self), WD_ETIMEDOUT);
  return wd_cancel_scope_exit(self, &outer, rc);
}

Test(cancel, outermost_cancelled_scope_wins) {
  cr_assert_eq(run_virtual(outermost_wins_main, NULL), 0);
  assert_no_leaks();
}

/* ---- move_on_after, fail_after ------------------------------------------- */

static int move_on_main(wd_task *self, void *arg) {
  wd_cancel_scope s;
  cr_assert_eq(wd_move_on_after(self, &s, WD_SEC / 2), 0);
  int rc = wd_sleep(self, WD_SEC);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  cr_assert_eq(wd_now(self), WD_SEC / 2);
  return wd_cancel_scope_exit(self, &s, rc);
}

Test(cancel, move_on_after_swallows_its_timeout) {
  cr_assert_eq(run_virtual(move_on_main, NULL), 0);
  assert_no_leaks();
}

static int fail_after_main(wd_task *self, void *arg) {
  wd_cancel_scope s;
  cr_assert_eq(wd_fail_after(self, &s, WD_SEC / 2, "loading config"), 0);
  int rc = wd_sleep(self, WD_SEC);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  rc = wd_cancel_scope_exit(self, &s, rc);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  const wd_error *e = wd_task_error(self);
  cr_assert_not_null(e);
  cr_assert_eq(e->code, WD_ETIMEDOUT);
  cr_assert_str_eq(e->msg, "loading config: timed out after 0.500 s");
  cr_assert_eq(wd_cancel_status(self), 0, "the task itself is not cancelled");
  return 0;
}

Test(cancel, fail_after_returns_etimedout_naming_the_operation) {
  cr_assert_eq(run_virtual(fail_after_main, NULL), 0);
  assert_no_leaks();
}

static int fail_after_cancel_main(wd_task *self, void *arg) {
  wd_cancel_scope s;
  cr_assert_eq(wd_fail_after(self, &s, WD_SEC, "fetch"), 0);
  wd_cancel(&s);
  int rc = wd_sleep(self, 2 * WD_SEC);
  cr_assert_eq(rc, WD_ECANCELED);
  /* Only a deadline turns into a failure; a plain cancel is swallowed. */
  cr_assert_eq(wd_cancel_scope_exit(self, &s, rc), 0);
  return 0;
}

Test(cancel, fail_after_swallows_an_explicit_cancel) {
  cr_assert_eq(run_virtual(fail_after_cancel_main, NULL), 0);
  assert_no_leaks();
}

static int fail_after_ok_main(wd_task *self, void *arg) {
  wd_cancel_scope s;
  cr_assert_eq(wd_fail_after(self, &s, WD_SEC, NULL), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC / 2), 0);
  return wd_cancel_scope_exit(self, &s, 0);
}

Test(cancel, fail_after_in_time_returns_the_body_result) {
  cr_assert_eq(run_virtual(fail_after_ok_main, NULL), 0);
  assert_no_leaks();
}

typedef struct oom_exit {
  long n; /* fail the nth allocation of the exit */
  bool fired;
  int exit_rc;
  int err_code; /* 0 when no detailed error was recorded */
  char msg[64];
} oom_exit;

static int fail_after_oom_main(wd_task *self, void *arg) {
  oom_exit *o = arg;
  wd_cancel_scope s;
  cr_assert_eq(wd_fail_after(self, &s, WD_SEC / 2, "fetch"), 0);
  int rc = wd_sleep(self, WD_SEC);
  wd_alloc_fail_after(o->n);
  o->exit_rc = wd_cancel_scope_exit(self, &s, rc);
  o->fired = wd_alloc_failed();
  wd_alloc_fail_after(0);
  const wd_error *e = wd_task_error(self);
  if (e) {
    o->err_code = e->code;
    snprintf(o->msg, sizeof o->msg, "%s", e->msg);
  }
  return 0;
}

Test(cancel, fail_after_returns_etimedout_even_without_memory) {
  for (long n = 1;; n++) {
    oom_exit o = {.n = n, .exit_rc = 1};
    cr_assert_eq(run_virtual(fail_after_oom_main, &o), 0);
    cr_assert_eq(o.exit_rc, WD_ETIMEDOUT, "n=%ld: %d", n, o.exit_rc);
    /* The message may degrade to the code's description, never to
     * another code. */
    cr_assert(o.err_code == 0 || o.err_code == WD_ETIMEDOUT, "n=%ld", n);
    if (o.err_code)
      cr_assert(strcmp(o.msg, "fetch: timed out after 0.500 s") == 0 ||
                    strcmp(o.msg, wd_strerror(WD_ETIMEDOUT)) == 0,
                "n=%ld: message '%s'", n, o.msg);
    assert_no_leaks();
    if (!o.fired) {
      cr_assert_eq(o.err_code, WD_ETIMEDOUT);
      break;
    }
    cr_assert_lt(n, 100, "the fault loop does not end");
  }
}

static int absolute_fail_main(wd_task *self, void *arg) {
  wd_cancel_scope s;
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_cancel_opts o = {.deadline = WD_SEC + WD_SEC / 4, .fail_what = "flush"};
  cr_assert_eq(wd_cancel_scope_enter(self, &s, &o), 0);
  int rc = wd_sleep(self, WD_SEC);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  cr_assert_eq(wd_cancel_scope_exit(self, &s, rc), WD_ETIMEDOUT);
  /* The time it was allowed from entry, not the absolute deadline. */
  cr_assert_str_eq(wd_task_error(self)->msg, "flush: timed out after 0.250 s");
  return 0;
}

Test(cancel, fail_what_with_an_absolute_deadline_names_the_time_allowed) {
  cr_assert_eq(run_virtual(absolute_fail_main, NULL), 0);
  assert_no_leaks();
}

static int huge_timeout_main(wd_task *self, void *arg) {
  wd_cancel_scope s;
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  /* now + timeout would overflow: the deadline saturates instead. */
  cr_assert_eq(wd_move_on_after(self, &s, WD_TIME_NEVER), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  cr_assert_eq(wd_cancel_scope_exit(self, &s, 0), 0);
  cr_assert_eq(wd_move_on_after(self, &s, WD_SEC), 0);
  cr_assert_eq(wd_sleep(self, WD_TIME_NEVER), WD_ETIMEDOUT);
  cr_assert_eq(wd_now(self), 3 * WD_SEC);
  return wd_cancel_scope_exit(self, &s, WD_ETIMEDOUT);
}

Test(cancel, huge_timeouts_saturate_instead_of_overflowing) {
  cr_assert_eq(run_virtual(huge_timeout_main, NULL), 0);
  assert_no_leaks();
}

static int exited_scope_main(wd_task *self, void *arg) {
  {
    wd_cancel_scope s;
    cr_assert_eq(wd_move_on_after(self, &s, WD_SEC), 0);
    cr_assert_eq(wd_cancel_scope_exit(self, &s, 0), 0);
    /* s's memory is reused below; a timer left armed would write to it. */
    memset(&s, 0xa5, sizeof s);
  }
  cr_assert_eq(wd_sleep(self, 2 * WD_SEC), 0);
  cr_assert_eq(wd_now(self), 2 * WD_SEC);
  return 0;
}

Test(cancel, deadline_of_an_exited_scope_never_fires) {
  cr_assert_eq(run_virtual(exited_scope_main, NULL), 0);
  assert_no_leaks();
}

static int past_deadline_main(wd_task *self, void *arg) {
  cr_assert_eq(wd_sleep(self, 2 * WD_SEC), 0);
  wd_cancel_scope s;
  cr_assert_eq(
      wd_cancel_scope_enter(self, &s, &(wd_cancel_opts){.deadline = WD_SEC}),
      0);
  cr_assert(wd_cancel_scope_cancelled(&s), "cancelled on entry");
  cr_assert_str_eq(wd_cancel_scope_reason(&s), "deadline");
  cr_assert_eq(wd_cancel_status(self), WD_ETIMEDOUT);
  int rc = wd_sleep(self, WD_SEC);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  cr_assert_eq(wd_now(self), 2 * WD_SEC, "no time passed");
  return wd_cancel_scope_exit(self, &s, rc);
}

Test(cancel, deadline_already_past_at_enter_cancels_at_once) {
  cr_assert_eq(run_virtual(past_deadline_main, NULL), 0);
  assert_no_leaks();
}

/* ---- shields ------------------------------------------------------------- */

/* A worker with a plain outer scope and a shielded inner one (with an
 * optional grace timeout), sleeping inside the shield. */
typedef struct shielded {
  wd_time grace;
  wd_time sleep;
  wd_cancel_scope *outer, *shield; /* published while entered */
  seen slept;                      /* inside the shield */
  int shield_exit;
  seen after; /* the first checkpoint after the shield */
  int outer_exit;
} shielded;

static int shielded_sleeper(wd_task *self, void *arg) {
  shielded *sh = arg;
  wd_cancel_scope outer, shield;
  cr_assert_eq(wd_cancel_scope_enter(self, &outer, NULL), 0);
  wd_cancel_opts o = {.timeout = sh->grace, .shield = true};
  cr_assert_eq(wd_cancel_scope_enter(self, &shield, &o), 0);
  sh->outer = &outer;
  sh->shield = &shield;
  look(self, &sh->slept, wd_sleep(self, sh->sleep));
  sh->shield = NULL;
  sh->shield_exit = wd_cancel_scope_exit(self, &shield, sh->slept.rc);
  look(self, &sh->after, wd_yield(self));
  sh->outer = NULL;
  sh->outer_exit = wd_cancel_scope_exit(self, &outer, sh->after.rc);
  return 0;
}

/* The root cancels the worker's outer scope at 0.5 s. */
static int shield_main(wd_task *self, void *arg) {
  shielded *sh = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, shielded_sleeper, sh, NULL), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC / 2), 0);
  cr_assert_not_null(sh->outer);
  wd_cancel(sh->outer);
  return wd_group_exit(self, &g, 0);
}

static void run_shield(shielded *sh) {
  sh->slept = sh->after = NOT_YET;
  sh->shield_exit = sh->outer_exit = 1;
  cr_assert_eq(run_virtual(shield_main, sh), 0);
}

Test(cancel, shield_keeps_an_outer_cancel_out) {
  shielded sh = {.sleep = WD_SEC};
  run_shield(&sh);
  cr_assert_eq(sh.slept.rc, 0, "the shielded sleep was interrupted: %d",
               sh.slept.rc);
  cr_assert_eq(sh.slept.at, WD_SEC);
  cr_assert_eq(sh.shield_exit, 0);
  assert_no_leaks();
}

Test(cancel, outer_cancel_is_seen_at_the_first_checkpoint_after_a_shield) {
  shielded sh = {.sleep = WD_SEC};
  run_shield(&sh);
  cr_assert_eq(sh.after.rc, WD_ECANCELED);
  cr_assert_eq(sh.after.at, WD_SEC);
  cr_assert_eq(sh.outer_exit, 0);
  assert_no_leaks();
}

Test(cancel, shield_grace_deadline_still_fires) {
  shielded sh = {.grace = 2 * WD_SEC, .sleep = 10 * WD_SEC};
  run_shield(&sh);
  cr_assert_eq(sh.slept.rc, WD_ETIMEDOUT);
  cr_assert_eq(sh.slept.at, 2 * WD_SEC);
  /* The outer scope is cancelled too, so the shield's exit passes the
   * code on rather than swallowing it. */
  cr_assert_eq(sh.shield_exit, WD_ETIMEDOUT);
  cr_assert_eq(sh.after.rc, WD_ECANCELED);
  cr_assert_eq(sh.outer_exit, 0);
  assert_no_leaks();
}

/* The root cancels the outer scope at 1 s and unshields at 2 s. */
static int unshield_main(wd_task *self, void *arg) {
  shielded *sh = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, shielded_sleeper, sh, NULL), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_cancel(sh->outer);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  cr_assert_eq(sh->slept.at, -1, "still asleep in the shield");
  wd_cancel_scope_set_shield(sh->shield, false);
  return wd_group_exit(self, &g, 0);
}

Test(cancel, unshielding_while_blocked_delivers_a_pending_outer_cancel) {
  shielded sh = {.sleep = 10 * WD_SEC, .slept = NOT_YET, .after = NOT_YET};
  cr_assert_eq(run_virtual(unshield_main, &sh), 0);
  cr_assert_eq(sh.slept.rc, WD_ECANCELED);
  cr_assert_eq(sh.slept.at, 2 * WD_SEC);
  cr_assert_eq(sh.shield_exit, WD_ECANCELED, "not the shield's own cancel");
  cr_assert_eq(sh.after.rc, WD_ECANCELED);
  cr_assert_eq(sh.outer_exit, 0);
  assert_no_leaks();
}

static int shield_status_main(wd_task *self, void *arg) {
  wd_cancel_scope outer, shield;
  cr_assert_eq(wd_cancel_scope_enter(self, &outer, NULL), 0);
  wd_cancel(&outer);
  cr_assert_eq(
      wd_cancel_scope_enter(self, &shield, &(wd_cancel_opts){.shield = true}),
      0);
  cr_assert_eq(wd_cancel_status(self), 0);
  cr_assert_eq(wd_cancel_scope_exit(self, &shield, 0), 0);
  cr_assert_eq(wd_cancel_status(self), WD_ECANCELED);
  return wd_cancel_scope_exit(self, &outer, WD_ECANCELED);
}

Test(cancel, shield_entered_inside_a_cancelled_scope_is_clean) {
  cr_assert_eq(run_virtual(shield_status_main, NULL), 0);
  assert_no_leaks();
}

/* ---- cancelling a task blocked in a child group -------------------------- */

typedef struct family {
  wd_cancel_scope *scope; /* the parent's, published while entered */
  seen kids[3];
  int group_exit;
  int scope_exit;
} family;

static int family_kid(wd_task *self, void *arg) {
  seen *s = arg;
  look(self, s, wd_sleep(self, 10 * WD_SEC));
  return s->rc;
}

static int family_parent(wd_task *self, void *arg) {
  family *f = arg;
  wd_cancel_scope s;
  wd_group g;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  f->scope = &s;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(wd_spawn(&g, family_kid, &f->kids[i], NULL), 0);
  f->group_exit = wd_group_exit(self, &g, 0);
  f->scope = NULL;
  f->scope_exit = wd_cancel_scope_exit(self, &s, f->group_exit);
  return f->scope_exit;
}

static int family_main(wd_task *self, void *arg) {
  family *f = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, family_parent, f, NULL), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  cr_assert_not_null(f->scope);
  wd_cancel(f->scope);
  return wd_group_exit(self, &g, 0);
}

Test(cancel, cancelling_a_task_blocked_in_group_exit_cancels_its_children) {
  family f = {.group_exit = 1, .scope_exit = 1};
  cr_assert_eq(run_virtual(family_main, &f), 0);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(f.kids[i].rc, WD_ECANCELED, "kid %d: %d", i, f.kids[i].rc);
    cr_assert_eq(f.kids[i].at, WD_SEC, "kid %d", i);
  }
  cr_assert_eq(f.group_exit, WD_ECANCELED,
               "the group passes the outer cancel on: %d", f.group_exit);
  cr_assert_eq(f.scope_exit, 0, "the cancelled scope swallows it");
  assert_no_leaks();
}

/* ---- parks --------------------------------------------------------------- */

typedef struct parked {
  counted_wait cw;
  seen park;
  seen after;
  wd_handle h;
} parked;

static int parked_task(wd_task *self, void *arg) {
  parked *p = arg;
  look(self, &p->park, wd_park(self, &p->cw.w));
  look(self, &p->after, wd_yield(self));
  return p->after.rc;
}

/* Cancel the parked task at 1 s, wake it at 2 s. */
static int park_main(wd_task *self, void *arg) {
  parked *p = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, parked_task, p, &(wd_spawn_opts){.handle = &p->h}),
               0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_handle_cancel(&p->h);
  cr_assert_eq(p->cw.on_cancel_calls, 1, "on_cancel runs at the cancel");
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_wake(&p->cw.w, 5);
  return wd_group_exit(self, &g, 0);
}

static void run_park(parked *p, bool undo) {
  p->cw = (counted_wait){.w = {.what = "test", .on_cancel = counted_on_cancel},
                         .undo = undo};
  p->park = p->after = NOT_YET;
  cr_assert_eq(run_virtual(park_main, p), 0);
}

Test(cancel, park_whose_on_cancel_refuses_stays_parked_until_woken) {
  parked p;
  run_park(&p, false);
  cr_assert_eq(p.cw.on_cancel_calls, 1);
  cr_assert_eq(p.park.rc, 5, "the wake's result, not the cancel: %d",
               p.park.rc);
  cr_assert_eq(p.park.at, 2 * WD_SEC);
  cr_assert_eq(p.after.rc, WD_ECANCELED, "the next checkpoint sees it");
  cr_assert_eq(p.after.at, 2 * WD_SEC);
  cr_assert_eq(p.h.status, WD_ECANCELED);
  assert_no_leaks();
}

Test(cancel, park_whose_on_cancel_undoes_wakes_at_once_and_ignores_wake) {
  parked p;
  run_park(&p, true);
  cr_assert_eq(p.cw.on_cancel_calls, 1);
  cr_assert_eq(p.park.rc, WD_ECANCELED);
  cr_assert_eq(p.park.at, WD_SEC);
  assert_no_leaks();
}

/* ---- wd_cancel_status ---------------------------------------------------- */

static int bump(wd_task *self, void *arg) {
  (*(int *)arg)++;
  return 0;
}

static int status_main(wd_task *self, void *arg) {
  int ran = 0;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, bump, &ran, NULL), 0);
  cr_assert_eq(wd_cancel_status(NULL), 0);
  cr_assert_eq(wd_cancel_status(self), 0);
  wd_cancel_scope s;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  wd_cancel(&s);
  cr_assert_eq(wd_cancel_status(self), WD_ECANCELED);
  cr_assert_eq(wd_cancel_status(self), WD_ECANCELED);
  cr_assert_eq(ran, 0, "wd_cancel_status only looks: it never yields");
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ECANCELED), 0);
  cr_assert_eq(wd_cancel_status(self), 0, "gone with the scope");
  cr_assert_eq(wd_move_on_after(self, &s, WD_SEC), 0);
  cr_assert_eq(wd_cancel_status(self), 0);
  cr_assert_eq(wd_sleep(self, 2 * WD_SEC), WD_ETIMEDOUT);
  cr_assert_eq(wd_cancel_status(self), WD_ETIMEDOUT);
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ETIMEDOUT), 0);
  cr_assert_eq(wd_cancel_status(self), 0);
  return wd_group_exit(self, &g, 0);
}

Test(cancel, cancel_status_reports_the_code_without_yielding) {
  cr_assert_eq(run_virtual(status_main, NULL), 0);
  assert_no_leaks();
}

/* ---- bad arguments ------------------------------------------------------- */

static int bad_enter_main(wd_task *self, void *arg) {
  wd_cancel_scope s = {0};
  cr_assert_eq(wd_cancel_scope_enter(self, NULL, NULL), WD_EINVAL);
  cr_assert_not_null(strstr(wd_task_error(self)->msg, "NULL"), "message: %s",
                     wd_task_error(self)->msg);
  cr_assert_eq(wd_cancel_scope_enter(NULL, &s, NULL), WD_EINVAL);
  wd_error_clear(self);
  cr_assert_eq(
      wd_cancel_scope_enter(self, &s, &(wd_cancel_opts){.timeout = -1}),
      WD_EINVAL);
  cr_assert_not_null(wd_task_error(self));
  cr_assert_not_null(strstr(wd_task_error(self)->msg, "negative timeout"),
                     "message: %s", wd_task_error(self)->msg);
  /* s was not entered: it cannot be exited, and self's scopes are as they
   * were (a group opens and closes cleanly). */
  cr_assert_eq(wd_cancel_scope_exit(self, &s, 0), WD_EINVAL);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return 0;
}

Test(cancel, enter_rejects_null_and_negative_timeout) {
  cr_assert_eq(run_virtual(bad_enter_main, NULL), 0);
  assert_no_leaks();
}

static int out_of_order_main(wd_task *self, void *arg) {
  wd_cancel_scope a, b;
  cr_assert_eq(wd_cancel_scope_enter(self, &a, NULL), 0);
  cr_assert_eq(wd_cancel_scope_enter(self, &b, NULL), 0);
  cr_assert_eq(wd_cancel_scope_exit(self, &a, 0), WD_EINVAL);
  cr_assert_not_null(strstr(wd_task_error(self)->msg, "reverse order"),
                     "message: %s", wd_task_error(self)->msg);
  /* The refused exit changed nothing: b still cancels what runs in it. */
  wd_cancel(&b);
  cr_assert_eq(wd_yield(self), WD_ECANCELED);
  cr_assert_eq(wd_cancel_scope_exit(self, &b, WD_ECANCELED), 0);
  cr_assert_eq(wd_cancel_scope_exit(self, &a, 0), 0);
  cr_assert_eq(wd_cancel_scope_exit(self, &a, 0), WD_EINVAL, "exited twice");
  return 0;
}

Test(cancel, exiting_scopes_out_of_order_is_einval) {
  cr_assert_eq(run_virtual(out_of_order_main, NULL), 0);
  assert_no_leaks();
}

static int scope_over_group_main(wd_task *self, void *arg) {
  wd_cancel_scope s;
  wd_group g;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_cancel_scope_exit(self, &s, 0), WD_EINVAL);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_cancel_scope_exit(self, &s, 0);
}

Test(cancel, exiting_a_scope_with_a_group_open_inside_is_einval) {
  cr_assert_eq(run_virtual(scope_over_group_main, NULL), 0);
  assert_no_leaks();
}

static int foreign_scope_main(wd_task *self, void *arg) {
  wd_cancel_scope *theirs = arg;
  /* A scope entered by another task cannot be exited by this one. */
  return wd_cancel_scope_exit(self, theirs, 0);
}

static int foreign_owner_main(wd_task *self, void *arg) {
  wd_cancel_scope s;
  wd_group g;
  wd_handle h;
  cr_assert_eq(wd_group_enter(self, &g, &(wd_group_opts){.supervisor = true}),
               0);
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  cr_assert_eq(
      wd_spawn(&g, foreign_scope_main, &s, &(wd_spawn_opts){.handle = &h}), 0);
  cr_assert_eq(wd_join(self, &h), 0);
  cr_assert_eq(h.status, WD_EINVAL);
  cr_assert_eq(wd_cancel_scope_exit(self, &s, 0), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), WD_EGROUP);
  return 0;
}

Test(cancel, exiting_another_tasks_scope_is_einval) {
  cr_assert_eq(run_virtual(foreign_owner_main, NULL), 0);
  assert_no_leaks();
}

Test(cancel, null_scope_is_ignored) {
  wd_cancel(NULL);
  wd_cancel_scope_set_deadline(NULL, WD_SEC);
  wd_cancel_scope_set_shield(NULL, true);
  cr_assert_not(wd_cancel_scope_cancelled(NULL));
  cr_assert_null(wd_cancel_scope_reason(NULL));
  cr_assert_eq(wd_cancel_status(NULL), 0);
  assert_no_leaks();
}

static int deadline_body(wd_task *self, void *arg) {
  (void)arg;
  cr_assert_eq(wd_task_deadline(self), WD_TIME_NEVER);
  wd_time t0 = wd_now(self);
  wd_cancel_scope outer, inner, shield;
  wd_move_on_after(self, &outer, 5 * WD_SEC);
  cr_assert_eq(wd_task_deadline(self), t0 + 5 * WD_SEC);
  wd_move_on_after(self, &inner, 9 * WD_SEC); /* later: outer still wins */
  cr_assert_eq(wd_task_deadline(self), t0 + 5 * WD_SEC);
  wd_cancel_scope_set_deadline(&inner, t0 + 2 * WD_SEC);
  cr_assert_eq(wd_task_deadline(self), t0 + 2 * WD_SEC);
  wd_cancel_opts so = {.shield = true};
  wd_cancel_scope_enter(self, &shield, &so);
  cr_assert_eq(wd_task_deadline(self), WD_TIME_NEVER, "a shield hides them");
  wd_cancel_scope_exit(self, &shield, 0);
  wd_cancel(&inner); /* a cancelled scope's deadline no longer applies */
  cr_assert_eq(wd_task_deadline(self), t0 + 5 * WD_SEC);
  wd_cancel_scope_exit(self, &inner, 0);
  wd_cancel_scope_exit(self, &outer, 0);
  cr_assert_eq(wd_task_deadline(NULL), WD_TIME_NEVER);
  return 0;
}

Test(cancel, task_deadline_is_the_earliest_up_to_a_shield) {
  cr_assert_eq(run_virtual(deadline_body, NULL), 0);
  assert_no_leaks();
}
