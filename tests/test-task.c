/* Tasks and the scheduler: ordering, yields, sleeps, results, names. */
#include <string.h>

#include "helpers.h"

typedef struct trace {
  char log[256];
  int n;
} trace;

static void put(trace *t, char c) { t->log[t->n++] = c; }

static int pinger(wd_task *self, void *arg) {
  trace *t = arg;
  for (int i = 0; i < 3; i++) {
    put(t, wd_task_name(self)[0]);
    cr_assert_eq(wd_yield(self), 0);
  }
  return 0;
}

static int pingpong_main(wd_task *self, void *arg) {
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, pinger, arg, &(wd_spawn_opts){.name = "a"}), 0);
  cr_assert_eq(wd_spawn(&g, pinger, arg, &(wd_spawn_opts){.name = "b"}), 0);
  return wd_group_exit(self, &g, 0);
}

Test(task, ping_pong_alternates_in_fifo_order) {
  trace t = {0};
  cr_assert_eq(wd_run(pingpong_main, &t), 0);
  t.log[t.n] = '\0';
  cr_assert_str_eq(t.log, "ababab");
  assert_no_leaks();
}

static int count_task(wd_task *self, void *arg) {
  int *n = arg;
  wd_yield(self);
  (*n)++;
  return 0;
}

static int many_main(wd_task *self, void *arg) {
  wd_group g;
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < 10000; i++)
    cr_assert_eq(wd_spawn(&g, count_task, arg, NULL), 0);
  cr_assert_eq(wd_group_size(&g), 10000);
  return wd_group_exit(self, &g, 0);
}

Test(task, ten_thousand_tasks_all_run) {
  int n = 0;
  cr_assert_eq(wd_run(many_main, &n), 0);
  cr_assert_eq(n, 10000);
  assert_no_leaks();
}

typedef struct sleeper {
  wd_time dur;
  wd_time woke;
  int order;
  int *counter;
} sleeper;

static int sleep_task(wd_task *self, void *arg) {
  sleeper *s = arg;
  wd_time start = wd_now(self);
  cr_assert_eq(wd_sleep(self, s->dur), 0);
  s->woke = wd_now(self) - start;
  s->order = (*s->counter)++;
  return 0;
}

static int sleep_main(wd_task *self, void *arg) {
  sleeper *s = arg;
  wd_group g;
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < 5; i++)
    wd_spawn(&g, sleep_task, &s[i], NULL);
  return wd_group_exit(self, &g, 0);
}

Test(task, sleeps_wake_in_deadline_order_exactly_on_virtual_clock) {
  int counter = 0;
  sleeper s[5] = {{.dur = 50 * WD_MSEC},
                  {.dur = 10 * WD_MSEC},
                  {.dur = 30 * WD_MSEC},
                  {.dur = 10 * WD_MSEC},
                  {.dur = 0}};
  for (int i = 0; i < 5; i++)
    s[i].counter = &counter;
  cr_assert_eq(run_virtual(sleep_main, s), 0);
  int expect_order[5] = {4, 1, 3, 2, 0};
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(s[i].woke, s[i].dur, "sleeper %d woke after %lld", i,
                 (long long)s[i].woke);
    cr_assert_eq(s[i].order, expect_order[i], "sleeper %d order %d", i,
                 s[i].order);
  }
  assert_no_leaks();
}

static int real_sleep_main(wd_task *self, void *arg) {
  /* Work for 5 ms first: a sleep counted from a time cached before the
   * work (as libuv's timers count) would end 5 ms early. */
  wd_time start = wd_now(self);
  while (wd_now(self) - start < 5 * WD_MSEC)
    continue;
  wd_time t0 = wd_now(self);
  cr_assert_eq(wd_sleep(self, 20 * WD_MSEC), 0);
  *(wd_time *)arg = wd_now(self) - t0;
  return 0;
}

Test(task, real_clock_sleep_counts_from_the_call_and_is_not_early) {
  wd_time took = 0;
  cr_assert_eq(wd_run(real_sleep_main, &took), 0);
  cr_assert_geq(took, 20 * WD_MSEC);
  cr_assert_lt(took, 2 * WD_SEC);
  assert_no_leaks();
}

static int result_task(wd_task *self, void *arg) {
  wd_task_set_result(self, arg);
  wd_sleep(self, WD_MSEC);
  return -42;
}

static int handle_main(wd_task *self, void *arg) {
  wd_group g;
  wd_handle h;
  int x = 7;
  wd_group_enter(self, &g, &(wd_group_opts){.supervisor = true});
  wd_spawn(&g, result_task, &x, &(wd_spawn_opts){.handle = &h, .name = "r"});
  cr_assert_not_null(h.task);
  cr_assert_str_eq(wd_task_name(h.task), "r");
  cr_assert_eq(wd_task_id(h.task), h.id);
  cr_assert_not(h.done);
  cr_assert_eq(wd_join(self, &h), 0);
  cr_assert(h.done);
  cr_assert_eq(h.status, -42);
  cr_assert_eq(h.result, &x);
  cr_assert_null(h.task);
  cr_assert_eq(wd_join(self, &h), 0, "joining an ended task returns at once");
  int rc = wd_group_exit(self, &g, 0);
  cr_assert_eq(rc, WD_EGROUP, "a negative status is a failure");
  return 0;
}

Test(task, handle_carries_status_and_result_after_join) {
  cr_assert_eq(run_virtual(handle_main, NULL), 0);
  assert_no_leaks();
}

static int ids_main(wd_task *self, void *arg) {
  cr_assert_eq(wd_task_id(self), 1);
  cr_assert_str_eq(wd_task_name(self), "main");
  cr_assert_eq(wd_self(), self);
  wd_task_set_name(self, "a-very-long-name-that-will-be-truncated-here");
  cr_assert_eq(strlen(wd_task_name(self)), WD_TASK_NAME_MAX - 1);
  cr_assert_eq(wd_task_runtime(self), wd_runtime_current());
  return 0;
}

Test(task, ids_names_and_self) {
  cr_assert_eq(wd_run(ids_main, NULL), 0);
  cr_assert_null(wd_self(), "no task outside the runtime");
  cr_assert_null(wd_runtime_current());
  assert_no_leaks();
}

static int bad_args_main(wd_task *self, void *arg) {
  cr_assert_eq(wd_sleep(self, -1), WD_EINVAL);
  cr_assert_not_null(strstr(wd_task_error(self)->msg, "negative"));
  cr_assert_eq(wd_sleep(NULL, 1), WD_EINVAL);
  cr_assert_eq(wd_yield(self), 0);
  wd_handle h = {0};
  cr_assert_eq(wd_join(self, &h), WD_EINVAL);
  cr_assert_eq(wd_join(self, NULL), WD_EINVAL);
  cr_assert_eq(wd_park(self, NULL), WD_EINVAL);
  cr_assert_eq(wd_spawn(NULL, count_task, NULL, NULL), WD_EINVAL);
  cr_assert_str_eq(wd_task_error(self)->msg, "wd_spawn: NULL group");
  wd_group never = {0}; /* wd_group_enter() forgotten */
  cr_assert_eq(wd_spawn(&never, count_task, NULL, NULL), WD_EINVAL);
  cr_assert_not_null(strstr(wd_task_error(self)->msg, "is not open"), "%s",
                     wd_task_error(self)->msg);
  wd_group g;
  wd_group_enter(self, &g, NULL);
  cr_assert_eq(wd_spawn(&g, NULL, NULL, NULL), WD_EINVAL);
  cr_assert_str_eq(wd_task_error(self)->msg, "wd_spawn: NULL fn");
  cr_assert_eq(
      wd_spawn(&g, count_task, NULL, &(wd_spawn_opts){.stack_size = 100}),
      WD_EINVAL);
  cr_assert_not_null(strstr(wd_task_error(self)->msg, "stack size"));
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  int n = 0;
  cr_assert_eq(wd_spawn(&g, count_task, &n, NULL), WD_ECLOSED);
  cr_assert_eq(wd_group_exit(self, &g, 0), WD_EINVAL);
  return 0;
}

Test(task, bad_arguments_return_clear_errors) {
  cr_assert_eq(wd_run(bad_args_main, NULL), 0);
  cr_assert_eq(wd_run(NULL, NULL), WD_EINVAL);
  cr_assert_eq(wd_run_with(&(wd_runtime_opts){.clock = 7}, ids_main, NULL),
               WD_EINVAL);
  cr_assert_eq(wd_run_with(&(wd_runtime_opts){.stack_size = 1}, ids_main, NULL),
               WD_EINVAL);
  assert_no_leaks();
}

static int nested_run_main(wd_task *self, void *arg) {
  cr_assert_eq(wd_run(ids_main, NULL), WD_EBUSY);
  return 0;
}

Test(task, nested_wd_run_is_refused) {
  cr_assert_eq(wd_run(nested_run_main, NULL), 0);
  assert_no_leaks();
}

/* The timer heap under load: many sleepers with colliding deadlines and
 * cancellations at random times, all on the virtual clock. */
#define N_STRESS 2000

typedef struct stress_task {
  wd_time dur;
  wd_time cancel_at; /* 0: never */
  wd_time woke;
  int rc;
  int wake_seq;
  wd_handle h;
} stress_task;

typedef struct stress {
  stress_task t[N_STRESS];
  int seq;
} stress;

static stress *the_stress;

static int stress_sleeper(wd_task *self, void *arg) {
  stress_task *st = arg;
  st->rc = wd_sleep(self, st->dur);
  st->woke = wd_now(self);
  st->wake_seq = the_stress->seq++;
  return 0;
}

static int stress_canceller(wd_task *self, void *arg) {
  stress *s = arg;
  /* Cancel in time order: one pass per distinct cancel time. */
  for (wd_time at = 1; at <= 1000 * WD_MSEC; at += WD_MSEC) {
    bool any = false;
    for (int i = 0; i < N_STRESS; i++)
      if (s->t[i].cancel_at == at) any = true;
    if (!any) continue;
    cr_assert_eq(wd_sleep_until(self, at), 0);
    for (int i = 0; i < N_STRESS; i++)
      if (s->t[i].cancel_at == at) wd_handle_cancel(&s->t[i].h);
  }
  return 0;
}

static int stress_main(wd_task *self, void *arg) {
  stress *s = arg;
  wd_group g;
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < N_STRESS; i++)
    wd_spawn(&g, stress_sleeper, &s->t[i],
             &(wd_spawn_opts){.handle = &s->t[i].h});
  wd_spawn(&g, stress_canceller, s, NULL);
  return wd_group_exit(self, &g, 0);
}

Test(task, timer_heap_keeps_order_under_random_cancels) {
  static stress s;
  the_stress = &s;
  uint64_t x = 88172645463325252ull;
  for (int i = 0; i < N_STRESS; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    s.t[i].dur = (wd_time)(x % 200) * 5 * WD_MSEC; /* many equal */
    if (x % 7 == 0)
      s.t[i].cancel_at = (wd_time)((x >> 8) % 999 + 1) * WD_MSEC + 1;
  }
  cr_assert_eq(run_virtual(stress_main, &s), 0);
  for (int i = 0; i < N_STRESS; i++) {
    stress_task *t = &s.t[i];
    bool cancelled = t->cancel_at && t->cancel_at < t->dur;
    if (cancelled) {
      cr_assert_eq(t->rc, WD_ECANCELED, "task %d rc %d", i, t->rc);
      cr_assert_eq(t->woke, t->cancel_at, "task %d woke at %lld", i,
                   (long long)t->woke);
    } else {
      cr_assert_eq(t->rc, 0, "task %d rc %d", i, t->rc);
      cr_assert_eq(t->woke, t->dur, "task %d woke at %lld, not %lld", i,
                   (long long)t->woke, (long long)t->dur);
    }
  }
  /* Equal deadlines fire in the order the sleeps began (spawn order). */
  for (int i = 0; i < N_STRESS; i++)
    for (int j = i + 1; j < N_STRESS; j++) {
      stress_task *a = &s.t[i], *b = &s.t[j];
      if (a->rc == 0 && b->rc == 0 && a->dur == b->dur)
        cr_assert_lt(a->wake_seq, b->wake_seq, "tasks %d and %d", i, j);
    }
  assert_no_leaks();
}

static int failed_spawn_main(wd_task *self, void *arg) {
  wd_group g;
  wd_handle h;
  int n = 0;
  wd_group_enter(self, &g, NULL);
  wd_alloc_fail_after(1); /* the stack of the next spawn */
  cr_assert_eq(wd_spawn(&g, count_task, &n, &(wd_spawn_opts){.handle = &h}),
               WD_ENOMEM);
  cr_assert(h.done, "a failed spawn's handle is done");
  cr_assert_eq(h.status, WD_ENOMEM);
  cr_assert_eq(wd_join(self, &h), 0, "joining it returns at once");
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(n, 0);
  return 0;
}

Test(task, a_failed_spawn_leaves_a_done_handle_that_joins_at_once) {
  cr_assert_eq(run_virtual(failed_spawn_main, NULL), 0);
  assert_no_leaks();
}

/* Past the guard-page budget (a quarter of the vm.max_map_count headroom)
 * stacks fall back to canaries instead of failing: 20000 parked tasks run
 * with the default sysctl, some guarded, the rest canaried. */
typedef struct parked {
  wd_wait *waits;
  int n, parked;
} parked;

static int park_task(wd_task *self, void *arg) {
  parked *p = arg;
  int i = p->parked++;
  p->waits[i] = (wd_wait){.what = "event", .name = "release"};
  return wd_park(self, &p->waits[i]);
}

static int budget_main(wd_task *self, void *arg) {
  parked *p = arg;
  wd_group g;
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < p->n; i++)
    cr_assert_eq(wd_spawn(&g, park_task, p, NULL), 0);
  while (p->parked < p->n)
    wd_yield(self);
  wd_runtime_stats st;
  wd_runtime_stats_get(wd_task_runtime(self), &st);
  cr_assert_geq(st.stacks_mapped, (size_t)p->n);
  cr_assert_gt(st.stacks_guarded, 0);
  cr_assert_lt(st.stacks_guarded, st.stacks_mapped,
               "%zu of %zu stacks guarded: the budget was not applied",
               st.stacks_guarded, st.stacks_mapped);
  for (int i = 0; i < p->n; i++)
    wd_wake(&p->waits[i], 0);
  return wd_group_exit(self, &g, 0);
}

Test(task, stacks_past_the_guard_budget_use_canaries) {
  static wd_wait waits[20000];
  parked p = {.waits = waits, .n = 20000};
  cr_assert_eq(run_virtual(budget_main, &p), 0);
  assert_no_leaks();
}

/* wd_task_wait: the record a blocked task is parked on; NULL while it is
 * ready, running or done. */
static bool wait_unlink(wd_wait *w) { return true; }

static int wait_target(wd_task *self, void *arg) {
  wd_wait *w = arg;
  *w = (wd_wait){.what = "event", .name = "go", .on_cancel = wait_unlink};
  return wd_park(self, w);
}

static int task_wait_main(wd_task *self, void *arg) {
  wd_group g;
  wd_handle h;
  wd_wait w;
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, wait_target, &w, &(wd_spawn_opts){.handle = &h});
  cr_assert_null(wd_task_wait(h.task), "ready, not started");
  cr_assert_null(wd_task_wait(self), "running");
  cr_assert_null(wd_task_wait(NULL));
  cr_assert_eq(wd_yield(self), 0);
  const wd_wait *seen = wd_task_wait(h.task);
  cr_assert_eq(seen, &w);
  cr_assert_str_eq(seen->what, "event");
  cr_assert_str_eq(seen->name, "go");
  cr_assert_eq(seen->task, h.task);
  wd_wake(&w, 0);
  cr_assert_null(wd_task_wait(h.task), "woken: ready again");
  return wd_group_exit(self, &g, 0);
}

Test(task, task_wait_shows_what_a_blocked_task_waits_on) {
  cr_assert_eq(run_virtual(task_wait_main, NULL), 0);
  assert_no_leaks();
}

/* wd_task_hold: on_exit runs for what a task still holds when it ends,
 * once, after its body and before its handle is done; a hold given back
 * with wd_task_unhold is not reported. */
typedef struct held {
  wd_hold hold; /* first: on_exit casts back */
  int calls;
  uint64_t task_id;
  wd_handle *h;
  bool handle_done;
} held;

static void held_exit(wd_hold *h, wd_task *task) {
  held *x = (held *)h;
  x->calls++;
  x->task_id = wd_task_id(task);
  x->handle_done = x->h->done;
}

static int holder_task(wd_task *self, void *arg) {
  held *x = arg;
  wd_task_hold(self, &x[0].hold);
  wd_task_hold(self, &x[1].hold);
  wd_task_hold(self, &x[2].hold);
  wd_task_unhold(self, &x[1].hold);
  return wd_yield(self);
}

static int task_hold_main(wd_task *self, void *arg) {
  held *x = arg;
  wd_group g;
  wd_handle h;
  for (int i = 0; i < 3; i++)
    x[i] = (held){.hold = {.on_exit = held_exit}, .h = &h};
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, holder_task, x, &(wd_spawn_opts){.handle = &h});
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(x[0].task_id, h.id);
  return 0;
}

Test(task, task_hold_reports_what_an_ending_task_still_holds) {
  held x[3];
  cr_assert_eq(run_virtual(task_hold_main, x), 0);
  cr_assert_eq(x[0].calls, 1);
  cr_assert_eq(x[1].calls, 0, "given back: not reported");
  cr_assert_eq(x[2].calls, 1);
  cr_assert_not(x[0].handle_done, "before the handle is done");
  assert_no_leaks();
}
