/* The runtime: posts from other threads, wd_dump(), the virtual clock,
 * statistics, and task locals. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "helpers.h"

/* No Criterion .timeout on these tests: Criterion 2.4.1's runner leaks a
 * block per timed test when tests run in parallel, and LeakSanitizer then
 * fails the whole binary.  A hang is bounded by ctest's TIMEOUT instead. */

/* ---- wd_runtime_post ---------------------------------------------------- */

#define POSTERS 4
#define POSTS_EACH 10000

typedef struct post_ctx {
  wd_runtime *rt;
  pthread_t rt_thread;
  wd_wait w;
  long count;        /* touched only on the runtime thread */
  long wrong_thread; /* callbacks that ran elsewhere */
  long in_task;      /* callbacks that saw a running task */
  long wrong_rt;
  atomic_long post_errors;
} post_ctx;

static void bump(wd_runtime *rt, void *arg) {
  post_ctx *p = arg;
  if (!pthread_equal(pthread_self(), p->rt_thread)) p->wrong_thread++;
  if (wd_self() != NULL) p->in_task++;
  if (rt != p->rt) p->wrong_rt++;
  if (++p->count == POSTERS * POSTS_EACH) wd_wake(&p->w, 0);
}

static void *poster(void *arg) {
  post_ctx *p = arg;
  for (int i = 0; i < POSTS_EACH; i++)
    if (wd_runtime_post(p->rt, bump, p) != 0)
      atomic_fetch_add(&p->post_errors, 1);
  return NULL;
}

static int posts_main(wd_task *self, void *arg) {
  post_ctx *p = arg;
  p->rt = wd_task_runtime(self);
  p->rt_thread = pthread_self();
  p->w = (wd_wait){.what = "posts"};
  pthread_t th[POSTERS];
  for (int i = 0; i < POSTERS; i++)
    cr_assert_eq(pthread_create(&th[i], NULL, poster, p), 0);
  /* No callback can run before this park: posts run only when the loop
   * polls, and it does not while this task runs. */
  cr_assert_eq(wd_park(self, &p->w), 0);
  for (int i = 0; i < POSTERS; i++)
    pthread_join(th[i], NULL);
  return 0;
}

Test(runtime, posts_from_four_threads_all_run_on_the_runtime_thread) {
  post_ctx p = {.count = 0};
  wd_runtime_opts o = {.await_posts = true};
  cr_assert_eq(wd_run_with(&o, posts_main, &p), 0);
  cr_assert_eq(atomic_load(&p.post_errors), 0);
  cr_assert_eq(p.count, POSTERS * POSTS_EACH, "ran %ld callbacks", p.count);
  cr_assert_eq(p.wrong_thread, 0, "%ld callbacks ran on another thread",
               p.wrong_thread);
  cr_assert_eq(p.in_task, 0, "callbacks run outside any task");
  cr_assert_eq(p.wrong_rt, 0);
  assert_no_leaks();
}

static void set_flag(wd_runtime *rt, void *arg) { *(int *)arg += 1; }

static int post_and_leave_main(wd_task *self, void *arg) {
  /* Return at once: the post is still queued when the last task ends. */
  cr_assert_eq(wd_runtime_post(wd_task_runtime(self), set_flag, arg), 0);
  return 0;
}

Test(runtime, posts_still_queued_at_the_end_run_before_wd_run_returns) {
  int ran = 0;
  cr_assert_eq(wd_run(post_and_leave_main, &ran), 0);
  cr_assert_eq(ran, 1);
  assert_no_leaks();
}

typedef struct spawn_ctx {
  wd_runtime *rt;
  wd_group *g;
  wd_wait w;
  int spawn_rc;
  bool child_ran;
  bool child_had_local;
} spawn_ctx;

static const wd_local_key SPAWN_KEY = {"spawn"};

static int posted_child(wd_task *self, void *arg) {
  spawn_ctx *c = arg;
  c->child_ran = true;
  /* A task spawned by a callback has no spawner task to inherit from. */
  c->child_had_local = wd_local_get(self, &SPAWN_KEY) != NULL;
  wd_wake(&c->w, 0);
  return 0;
}

static void spawn_cb(wd_runtime *rt, void *arg) {
  spawn_ctx *c = arg;
  c->spawn_rc =
      wd_spawn(c->g, posted_child, c, &(wd_spawn_opts){.name = "from-post"});
}

static void *spawn_poster(void *arg) {
  spawn_ctx *c = arg;
  wd_runtime_post(c->rt, spawn_cb, c);
  return NULL;
}

static int post_spawn_main(wd_task *self, void *arg) {
  spawn_ctx *c = arg;
  wd_group g;
  wd_group_enter(self, &g, NULL);
  wd_local_set(self, &SPAWN_KEY, c);
  c->rt = wd_task_runtime(self);
  c->g = &g;
  c->w = (wd_wait){.what = "spawn"};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, spawn_poster, c), 0);
  cr_assert_eq(wd_park(self, &c->w), 0);
  pthread_join(th, NULL);
  return wd_group_exit(self, &g, 0);
}

Test(runtime, a_posted_callback_may_spawn_into_a_group) {
  spawn_ctx c = {.spawn_rc = 1};
  wd_runtime_opts o = {.await_posts = true};
  cr_assert_eq(wd_run_with(&o, post_spawn_main, &c), 0);
  cr_assert_eq(c.spawn_rc, 0);
  cr_assert(c.child_ran);
  cr_assert_not(c.child_had_local);
  assert_no_leaks();
}

static void never(wd_runtime *rt, void *arg) { *(int *)arg = 1; }

static int post_bad_args_main(wd_task *self, void *arg) {
  cr_assert_eq(wd_runtime_post(NULL, never, arg), WD_EINVAL);
  cr_assert_eq(wd_runtime_post(wd_task_runtime(self), NULL, arg), WD_EINVAL);
  return wd_yield(self);
}

Test(runtime, post_with_null_arguments_is_einval) {
  int ran = 0;
  cr_assert_eq(wd_run(post_bad_args_main, &ran), 0);
  cr_assert_eq(ran, 0);
  assert_no_leaks();
}

/* ---- wd_dump ------------------------------------------------------------ */

static bool unlink_lock(wd_wait *w) { return true; }

static int locker(wd_task *self, void *arg) {
  wd_wait w = {.what = "lock", .name = "accounts", .on_cancel = unlink_lock};
  return wd_park(self, &w);
}

static int napper(wd_task *self, void *arg) {
  return wd_sleep(self, 1500 * WD_MSEC);
}

/* The line of text that contains needle, copied (NULL if none). */
static char *line_with(const char *text, const char *needle) {
  const char *hit = strstr(text, needle);
  if (!hit) return NULL;
  const char *bol = hit;
  while (bol > text && bol[-1] != '\n')
    bol--;
  const char *eol = strchr(hit, '\n');
  size_t n = eol ? (size_t)(eol - bol) : strlen(bol);
  return strndup(bol, n);
}

static int dump_main(wd_task *self, void *arg) {
  char **out = arg;
  wd_group g, b;
  wd_group_enter(self, &g, &(wd_group_opts){.name = "workers"});
  wd_spawn(&g, napper, NULL, &(wd_spawn_opts){.name = "napper-1"});
  wd_spawn(&g, napper, NULL, &(wd_spawn_opts){.name = "napper-2"});
  wd_spawn(&g, locker, NULL, &(wd_spawn_opts){.name = "locker"});
  wd_group_enter(self, &b,
                 &(wd_group_opts){.name = "bounded", .max_running = 1});
  wd_spawn(&b, napper, NULL, &(wd_spawn_opts){.name = "first"});
  wd_spawn(&b, napper, NULL, &(wd_spawn_opts){.name = "second"});
  cr_assert_eq(wd_yield(self), 0); /* every task starts and blocks */

  size_t len = 0;
  FILE *f = open_memstream(out, &len);
  cr_assert_not_null(f);
  wd_dump(f);
  fclose(f);

  wd_group_cancel(&b);
  cr_assert_eq(wd_group_exit(self, &b, 0), 0);
  wd_group_cancel(&g);
  return wd_group_exit(self, &g, 0);
}

Test(runtime, dump_shows_tasks_groups_waits_and_sites) {
  char *text = NULL;
  cr_assert_eq(run_virtual(dump_main, &text), 0);
  cr_assert_not_null(text);
  /* The root was created by wd_run(), not here: it is checked below. */
  const char *names[] = {"'napper-1'", "'napper-2'", "'locker'", "'first'",
                         "'second'"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    char *l = line_with(text, names[i]);
    cr_assert_not_null(l, "no %s in:\n%s", names[i], text);
    cr_assert_not_null(strstr(l, "test-runtime.c:"), "no creation site on: %s",
                       l);
    free(l);
  }
  char *l = line_with(text, "'main'");
  cr_assert_not_null(l, "no root task in:\n%s", text);
  cr_assert_not_null(strstr(l, "running"), "%s", l);
  free(l);
  l = line_with(text, "'workers'");
  cr_assert_not_null(l, "no group 'workers' in:\n%s", text);
  cr_assert_not_null(strstr(l, "group "), "%s", l);
  cr_assert_not_null(strstr(l, "3 tasks"), "%s", l);
  cr_assert_not_null(strstr(l, "test-runtime.c:"), "%s", l);
  free(l);
  l = line_with(text, "'napper-1'");
  cr_assert_not_null(strstr(l, "sleep"), "%s", l);
  /* Nothing ran the clock: all of the 1.5 s are left. */
  cr_assert_not_null(strstr(l, "1.500"), "%s", l);
  free(l);
  l = line_with(text, "'locker'");
  cr_assert_not_null(strstr(l, "lock 'accounts'"), "%s", l);
  free(l);
  l = line_with(text, "'second'");
  cr_assert_not_null(strstr(l, "pending"), "%s", l);
  free(l);
  l = line_with(text, "'bounded'");
  cr_assert_not_null(l, "no group 'bounded' in:\n%s", text);
  cr_assert_not_null(strstr(l, "1 pending"), "%s", l);
  free(l);
  free(text);
  assert_no_leaks();
}

/* ---- the virtual clock -------------------------------------------------- */

typedef struct vclock {
  bool sleeper_woke;
  wd_time sleeper_woke_at;
  int spins;
} vclock;

static int tiny_sleeper(wd_task *self, void *arg) {
  vclock *v = arg;
  cr_assert_eq(wd_sleep(self, 1), 0);
  v->sleeper_woke = true;
  v->sleeper_woke_at = wd_now(self);
  return 0;
}

static int spinner(wd_task *self, void *arg) {
  vclock *v = arg;
  /* More yields than one scheduler batch, so the loop is polled and
   * timers are looked at in between. */
  for (int i = 0; i < 5000; i++) {
    cr_assert_eq(wd_yield(self), 0);
    cr_assert_eq(wd_now(self), 0, "time moved while a task could run");
    cr_assert_not(v->sleeper_woke, "a 1 ns sleep ended while tasks ran");
    v->spins++;
  }
  return 0;
}

static int still_main(wd_task *self, void *arg) {
  vclock *v = arg;
  cr_assert_eq(wd_now(self), 0, "the virtual clock starts at 0");
  wd_group g;
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, tiny_sleeper, v, NULL);
  wd_spawn(&g, spinner, v, NULL);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(v->spins, 5000);
  cr_assert(v->sleeper_woke);
  cr_assert_eq(v->sleeper_woke_at, 1, "woke at %lld",
               (long long)v->sleeper_woke_at);
  return 0;
}

Test(runtime, virtual_clock_starts_at_zero_and_stands_still_while_busy) {
  vclock v = {.spins = 0};
  cr_assert_eq(run_virtual(still_main, &v), 0);
  assert_no_leaks();
}

static int jump_main(wd_task *self, void *arg) {
  cr_assert_eq(wd_sleep(self, 1500 * WD_MSEC), 0);
  cr_assert_eq(wd_now(self), 1500 * WD_MSEC);
  cr_assert_eq(wd_sleep_until(self, wd_now(self) + 1), 0);
  cr_assert_eq(wd_now(self), 1500 * WD_MSEC + 1);
  cr_assert_eq(wd_sleep(self, 0), 0);
  cr_assert_eq(wd_now(self), 1500 * WD_MSEC + 1, "a 0 sleep only yields");
  cr_assert_eq(wd_sleep_until(self, 5), 0, "a past deadline only yields");
  cr_assert_eq(wd_now(self), 1500 * WD_MSEC + 1);
  /* An hour of virtual time costs nothing. */
  cr_assert_eq(wd_sleep(self, 3600 * WD_SEC), 0);
  cr_assert_eq(wd_now(self), 3600 * WD_SEC + 1500 * WD_MSEC + 1);
  return 0;
}

Test(runtime, virtual_clock_jumps_exactly_to_deadlines) {
  cr_assert_eq(run_virtual(jump_main, NULL), 0);
  assert_no_leaks();
}

/* The sleeper's deadline is the next event, but real work is in flight:
 * the clock must wait for it rather than jump. */
static int slow_fn(void *arg) {
  /* Models a call that takes real time; nothing waits on this sleep. */
  struct timespec ts = {0, 50 * 1000 * 1000};
  nanosleep(&ts, NULL);
  atomic_store((atomic_int *)arg, 1);
  return 0;
}

static int slow_caller(wd_task *self, void *arg) {
  return wd_blocking(self, slow_fn, arg, WD_BLOCKING_WAIT);
}

static int late_sleeper(wd_task *self, void *arg) {
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  cr_assert_eq(atomic_load((atomic_int *)arg), 1,
               "the clock jumped while a blocking call was in flight");
  cr_assert_eq(wd_now(self), WD_SEC);
  return 0;
}

static int inflight_main(wd_task *self, void *arg) {
  wd_group g;
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, slow_caller, arg, NULL);
  wd_spawn(&g, late_sleeper, arg, NULL);
  return wd_group_exit(self, &g, 0);
}

Test(runtime, virtual_clock_waits_for_real_work_in_flight) {
  atomic_int done = 0;
  cr_assert_eq(run_virtual(inflight_main, &done), 0);
  assert_no_leaks();
}

/* ---- statistics --------------------------------------------------------- */

static int parked(wd_task *self, void *arg) { return wd_sleep(self, WD_SEC); }

static int parked_longer(wd_task *self, void *arg) {
  return wd_sleep(self, 2 * WD_SEC);
}

static int stats_main(wd_task *self, void *arg) {
  wd_runtime *rt = wd_task_runtime(self);
  wd_runtime_stats st;
  wd_runtime_stats_get(rt, &st);
  cr_assert_eq(st.tasks, 1, "the root counts");
  cr_assert_eq(st.groups, 0);
  cr_assert_eq(st.blocking, 0);
  cr_assert_eq(st.abandoned, 0);

  wd_group g, inner;
  wd_group_enter(self, &g, NULL);
  /* They outlive the inner group's task, so that exiting the inner group
   * leaves them alive. */
  for (int i = 0; i < 3; i++)
    wd_spawn(&g, parked_longer, NULL, NULL);
  wd_group_enter(self, &inner, NULL);
  wd_spawn(&inner, parked, NULL, NULL);
  wd_runtime_stats_get(rt, &st);
  cr_assert_eq(st.tasks, 5, "%zu tasks", st.tasks);
  cr_assert_eq(st.groups, 2, "%zu groups", st.groups);
  uint64_t switches = st.switches;
  cr_assert_eq(wd_yield(self), 0);
  wd_runtime_stats_get(rt, &st);
  cr_assert_gt(st.switches, switches, "switches must count");
  cr_assert_eq(st.tasks, 5, "blocked tasks are live");

  cr_assert_eq(wd_group_exit(self, &inner, 0), 0);
  wd_runtime_stats_get(rt, &st);
  cr_assert_eq(st.tasks, 4);
  cr_assert_eq(st.groups, 1);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  wd_runtime_stats_get(rt, &st);
  cr_assert_eq(st.tasks, 1);
  cr_assert_eq(st.groups, 0);

  /* NULL arguments are tolerated. */
  wd_runtime_stats_get(rt, NULL);
  memset(&st, 0xff, sizeof st);
  wd_runtime_stats_get(NULL, &st);
  cr_assert_eq(st.tasks, 0);
  cr_assert_eq(st.switches, 0);
  return 0;
}

Test(runtime, stats_count_tasks_and_groups) {
  cr_assert_eq(run_virtual(stats_main, NULL), 0);
  assert_no_leaks();
}

/* ---- task locals -------------------------------------------------------- */

static const wd_local_key KEY = {"user"};
static const wd_local_key KEY2 = {"request"};

/* Values are borrowed pointers: fixed objects make each check exact. */
static int va, vb, vx;

typedef struct seen {
  void *value;
  void *value2;
  bool ran;
} seen;

static int reader(wd_task *self, void *arg) {
  seen *s = arg;
  s->value = wd_local_get(self, &KEY);
  s->value2 = wd_local_get(self, &KEY2);
  s->ran = true;
  return 0;
}

static int yielder(wd_task *self, void *arg) { return wd_yield(self); }

static int inherit_main(wd_task *self, void *arg) {
  seen *s = arg;
  cr_assert_null(wd_local_get(self, &KEY), "unset keys read NULL");
  cr_assert_eq(wd_local_set(self, &KEY, &va), 0);
  cr_assert_eq(wd_local_get(self, &KEY), &va);
  wd_group g, bounded;
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, reader, &s[0], NULL);
  /* Changed after the spawn but before the child runs: the child keeps
   * what the parent had at the spawn. */
  cr_assert_eq(wd_local_set(self, &KEY, &vb), 0);
  wd_spawn(&g, reader, &s[1], NULL);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);

  /* The same holds for a spawn that waits behind max_running. */
  wd_group_enter(self, &bounded, &(wd_group_opts){.max_running = 1});
  wd_spawn(&bounded, yielder, NULL, NULL);
  wd_spawn(&bounded, reader, &s[2], NULL); /* pending */
  cr_assert_eq(wd_local_set(self, &KEY, &va), 0);
  return wd_group_exit(self, &bounded, 0);
}

Test(runtime, locals_are_inherited_at_spawn) {
  seen s[3] = {{0}};
  cr_assert_eq(run_virtual(inherit_main, s), 0);
  for (int i = 0; i < 3; i++)
    cr_assert(s[i].ran, "reader %d did not run", i);
  cr_assert_eq(s[0].value, &va);
  cr_assert_eq(s[1].value, &vb);
  cr_assert_eq(s[2].value, &vb, "a pending spawn saw a later value");
  assert_no_leaks();
}

static int setter(wd_task *self, void *arg) {
  seen *s = arg;
  cr_assert_eq(wd_local_get(self, &KEY), &va);
  cr_assert_eq(wd_local_set(self, &KEY, &vx), 0);
  cr_assert_eq(wd_local_set(self, &KEY2, &vx), 0);
  cr_assert_eq(wd_yield(self), 0); /* let the sibling look */
  cr_assert_eq(wd_local_get(self, &KEY), &vx);
  s->ran = true;
  return 0;
}

static int isolation_main(wd_task *self, void *arg) {
  seen *s = arg;
  cr_assert_eq(wd_local_set(self, &KEY, &va), 0);
  wd_group g;
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, setter, &s[0], NULL);
  wd_spawn(&g, reader, &s[1], NULL); /* runs after the setter's set */
  cr_assert_eq(wd_yield(self), 0);
  cr_assert_eq(wd_local_get(self, &KEY), &va, "the child's set leaked up");
  cr_assert_null(wd_local_get(self, &KEY2), "a child's new key leaked up");
  return wd_group_exit(self, &g, 0);
}

Test(runtime, a_childs_set_is_invisible_to_parent_and_siblings) {
  seen s[2] = {{0}};
  cr_assert_eq(run_virtual(isolation_main, s), 0);
  cr_assert(s[0].ran && s[1].ran);
  cr_assert_eq(s[1].value, &va, "the sibling saw the setter's value");
  cr_assert_null(s[1].value2);
  assert_no_leaks();
}

static int loop_setter(wd_task *self, void *arg) {
  long before = wd_alloc_live();
  for (int i = 0; i < 1000; i++) {
    void *v = i % 2 ? (void *)&vx : (void *)&vb;
    cr_assert_eq(wd_local_set(self, &KEY, v), 0);
    cr_assert_eq(wd_local_get(self, &KEY), v);
  }
  /* The inherited list is shared with the parent: one copy at most. */
  cr_assert_leq(wd_alloc_live() - before, 1, "grew by %ld blocks",
                wd_alloc_live() - before);
  return 0;
}

static int loop_main(wd_task *self, void *arg) {
  long before = wd_alloc_live();
  for (int i = 0; i < 1000; i++)
    cr_assert_eq(wd_local_set(self, &KEY, i % 2 ? &va : &vb), 0);
  cr_assert_leq(wd_alloc_live() - before, 1, "grew by %ld blocks",
                wd_alloc_live() - before);
  cr_assert_eq(wd_local_get(self, &KEY), &va);

  wd_group g;
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, parked, NULL, NULL); /* keeps a reference to our list */
  wd_spawn(&g, loop_setter, NULL, NULL);
  cr_assert_eq(wd_yield(self), 0);
  /* With the list shared, the parent's own loop may copy once too. */
  before = wd_alloc_live();
  for (int i = 0; i < 1000; i++)
    cr_assert_eq(wd_local_set(self, &KEY, i % 2 ? &vb : &va), 0);
  cr_assert_leq(wd_alloc_live() - before, 1, "grew by %ld blocks",
                wd_alloc_live() - before);
  cr_assert_eq(wd_local_get(self, &KEY), &vb);
  wd_group_cancel(&g);
  return wd_group_exit(self, &g, 0);
}

Test(runtime, setting_a_local_in_a_loop_does_not_grow_memory) {
  cr_assert_eq(run_virtual(loop_main, NULL), 0);
  assert_no_leaks();
}

static int unsetter(wd_task *self, void *arg) {
  seen *s = arg;
  cr_assert_eq(wd_local_get(self, &KEY), &va);
  cr_assert_eq(wd_local_set(self, &KEY, NULL), 0);
  s->value = wd_local_get(self, &KEY);
  s->ran = true;
  return 0;
}

static int unset_main(wd_task *self, void *arg) {
  seen *s = arg;
  cr_assert_eq(wd_local_set(self, &KEY2, NULL), 0, "unsetting an unset key");
  cr_assert_null(wd_local_get(self, &KEY2));
  cr_assert_eq(wd_local_set(self, &KEY, &va), 0);
  wd_group g;
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, unsetter, s, NULL);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_local_get(self, &KEY), &va, "the child's unset leaked up");
  cr_assert_eq(wd_local_set(self, &KEY, NULL), 0);
  cr_assert_null(wd_local_get(self, &KEY));
  /* Bad arguments. */
  cr_assert_eq(wd_local_set(self, NULL, &va), WD_EINVAL);
  cr_assert_eq(wd_local_set(NULL, &KEY, &va), WD_EINVAL);
  cr_assert_null(wd_local_get(self, NULL));
  cr_assert_null(wd_local_get(NULL, &KEY));
  return 0;
}

Test(runtime, a_local_is_unset_with_null) {
  seen s = {0};
  cr_assert_eq(run_virtual(unset_main, &s), 0);
  cr_assert(s.ran);
  cr_assert_null(s.value);
  assert_no_leaks();
}

/* Deadlock: every task blocked and nothing can wake them.  warden reports
 * it and cancels every task, so the program unwinds instead of hanging. */
static bool never_cancel(wd_wait *w) { return true; }

static int forever_task(wd_task *self, void *arg) {
  wd_wait w = {.what = "event", .name = "never-set", .on_cancel = never_cancel};
  *(int *)arg = wd_park(self, &w);
  return *(int *)arg;
}

static int deadlock_main(wd_task *self, void *arg) {
  wd_group g;
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, forever_task, arg, &(wd_spawn_opts){.name = "waiter"});
  return wd_group_exit(self, &g, 0);
}

Test(runtime, a_deadlock_is_reported_and_unwound_by_cancelling_all) {
  int park_rc = 1;
  cr_assert_eq(wd_run(deadlock_main, &park_rc), WD_ECANCELED);
  cr_assert_eq(park_rc, WD_ECANCELED);
  assert_no_leaks();
}

static int stuck_main(wd_task *self, void *arg) {
  wd_wait w = {.what = "event", .name = "uncancellable"};
  return wd_park(self, &w); /* on_cancel NULL: cannot be cancelled */
}

Test(runtime, a_deadlock_that_cancelling_cannot_undo_aborts,
     .signal = SIGABRT) {
  wd_run(stuck_main, NULL);
}

static int sleep_forever_main(wd_task *self, void *arg) {
  return wd_sleep_until(self, WD_TIME_NEVER);
}

Test(runtime, sleeping_forever_alone_is_a_deadlock_not_a_clock_jump) {
  cr_assert_eq(run_virtual(sleep_forever_main, NULL), WD_ECANCELED);
  assert_no_leaks();
}

/* Free stacks beyond the 1024 that spawns take first give their pages
 * back once unused for 2 s of runtime time (here, virtual), and come back
 * into use cleanly afterwards. */
static int brief_task(wd_task *self, void *arg) {
  char buf[16384]; /* touch pages below the top one */
  memset(buf, 1, sizeof buf);
  *(int *)arg += buf[100];
  return wd_yield(self);
}

static int burst(wd_task *self, int n, int *sum) {
  wd_group g;
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < n; i++)
    wd_spawn(&g, brief_task, sum, NULL);
  return wd_group_exit(self, &g, 0);
}

static int trim_main(wd_task *self, void *arg) {
  int sum = 0;
  wd_runtime_stats st;
  cr_assert_eq(burst(self, 3000, &sum), 0);
  wd_runtime_stats_get(wd_task_runtime(self), &st);
  cr_assert_geq(st.stacks_cached, 3000);
  cr_assert_eq(st.stacks_returned, 0, "nothing is given back at once");
  cr_assert_eq(wd_sleep(self, 3 * WD_SEC), 0);
  wd_runtime_stats_get(wd_task_runtime(self), &st);
  cr_assert_eq(st.stacks_returned, st.stacks_cached - 1024,
               "returned %zu of %zu", st.stacks_returned, st.stacks_cached);
  cr_assert_eq(burst(self, 3000, &sum), 0, "cold stacks are reusable");
  cr_assert_eq(sum, 6000);
  return 0;
}

Test(runtime, idle_free_stacks_give_their_pages_back_and_stay_usable) {
  cr_assert_eq(run_virtual(trim_main, NULL), 0);
  assert_no_leaks();
}

/* Tasks that end in any order leave their stacks to be reused in the
 * order the stacks were first made, not the order they were freed: a burst
 * of spawns then walks its stacks' pages in address order, which is what
 * keeps a hundred thousand tasks from missing the TLB at every step.  Only
 * the 1024 most recently freed stacks (WD__STASH in stack.c) are taken
 * first, newest first, for the common spawn that follows a task's end. */
#define REUSE_N 1500
#define REUSE_STASH 1024
static wd_task *reuse_seen[2][REUSE_N];

typedef struct reuse_arg {
  int round, index, sleep_ms;
} reuse_arg;

static int reuse_task(wd_task *self, void *arg) {
  reuse_arg *a = arg;
  reuse_seen[a->round][a->index] = self;
  return wd_sleep(self, a->sleep_ms * WD_MSEC);
}

static int reuse_round(wd_task *self, reuse_arg *args) {
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < REUSE_N; i++)
    cr_assert_eq(wd_spawn(&g, reuse_task, &args[i], NULL), 0);
  return wd_group_exit(self, &g, 0);
}

static int reuse_main(wd_task *self, void *arg) {
  static reuse_arg args[2][REUSE_N];
  for (int i = 0; i < REUSE_N; i++) {
    args[0][i] = (reuse_arg){0, i, i};
    args[1][i] = (reuse_arg){1, i, 0};
  }
  /* First round: the tasks end in a shuffled order of their sleeps. */
  unsigned x = 12345;
  for (int i = REUSE_N - 1; i > 0; i--) {
    x = x * 1103515245u + 12345u;
    int j = (int)((x >> 8) % (unsigned)(i + 1)), t = args[0][i].sleep_ms;
    args[0][i].sleep_ms = args[0][j].sleep_ms;
    args[0][j].sleep_ms = t;
  }
  cr_assert_eq(reuse_round(self, args[0]), 0);
  wd_runtime_stats before, after;
  wd_runtime_stats_get(wd_task_runtime(self), &before);
  cr_assert_eq(reuse_round(self, args[1]), 0);
  wd_runtime_stats_get(wd_task_runtime(self), &after);
  cr_assert_eq(after.stacks_mapped, before.stacks_mapped, "no new stack");
  int prev = -1;
  for (int i = 0; i < REUSE_N; i++) {
    int j = 0;
    while (j < REUSE_N && reuse_seen[0][j] != reuse_seen[1][i])
      j++;
    cr_assert_lt(j, REUSE_N, "spawn %d got a stack of the first round", i);
    if (i < REUSE_STASH) { /* the last to end in the first round */
      cr_assert_eq(args[0][j].sleep_ms, REUSE_N - 1 - i,
                   "spawn %d took the stack of a task that slept %d ms", i,
                   args[0][j].sleep_ms);
      continue;
    }
    cr_assert_gt(j, prev, "spawn %d took first-round stack %d after %d", i, j,
                 prev);
    prev = j;
  }
  return 0;
}

Test(runtime, spawns_reuse_free_stacks_in_the_order_they_were_made) {
  cr_assert_eq(run_virtual(reuse_main, NULL), 0);
  assert_no_leaks();
}

/* ---- runtime extensions ------------------------------------------------- */

static const char ext_key_a, ext_key_b;
static char ext_log[64];

static void ext_dump(wd_runtime_ext *e, FILE *out) {
  fprintf(out, "ext %s here\n", e->key == &ext_key_a ? "a" : "b");
}

static void ext_exit(wd_runtime_ext *e, wd_runtime *rt) {
  cr_assert_eq(wd_runtime_current(), rt, "still current in at_exit");
  wd_runtime_stats st;
  wd_runtime_stats_get(rt, &st);
  cr_assert_eq(st.tasks, 0, "every task ended first");
  strcat(ext_log, e->key == &ext_key_a ? "a" : "b");
  free(e);
}

static int ext_main(wd_task *self, void *arg) {
  (void)arg;
  wd_runtime *rt = wd_task_runtime(self);
  wd_runtime_ext *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
  *a = (wd_runtime_ext){
      .key = &ext_key_a, .dump = ext_dump, .at_exit = ext_exit};
  *b = (wd_runtime_ext){.key = &ext_key_b, .at_exit = ext_exit};
  cr_assert_eq(wd_runtime_ext_add(rt, a), 0);
  cr_assert_eq(wd_runtime_ext_add(rt, b), 0);
  wd_runtime_ext dup = {.key = &ext_key_a};
  cr_assert_eq(wd_runtime_ext_add(rt, &dup), WD_EBUSY);
  cr_assert_eq(wd_runtime_ext_add(rt, NULL), WD_EINVAL);
  cr_assert_eq(wd_runtime_ext_add(rt, &(wd_runtime_ext){0}), WD_EINVAL);
  cr_assert_eq(wd_runtime_ext_get(rt, &ext_key_a), a);
  cr_assert_eq(wd_runtime_ext_get(rt, &ext_key_b), b);
  cr_assert_null(wd_runtime_ext_get(rt, &dup));
  char buf[4096] = {0};
  FILE *f = fmemopen(buf, sizeof buf - 1, "w");
  wd_dump(f);
  fclose(f);
  cr_assert_not_null(strstr(buf, "ext a here"), "dump: %s", buf);
  return 0;
}

Test(runtime, extensions_are_found_by_key_dumped_and_ended_newest_first) {
  ext_log[0] = '\0';
  cr_assert_eq(wd_run(ext_main, NULL), 0);
  cr_assert_str_eq(ext_log, "ba");
  assert_no_leaks();
}

/* ---- the libuv loop underneath ------------------------------------------ */

typedef struct own_timer {
  uv_timer_t t;
  wd_wait w;
  int fired;
} own_timer;

static void own_fire(uv_timer_t *t) {
  own_timer *o = t->data;
  o->fired++;
  wd_wake(&o->w, 42);
}

static void own_closed(uv_handle_t *h) {
  own_timer *o = h->data;
  wd_wake(&o->w, 7);
}

static int own_loop_main(wd_task *self, void *arg) {
  (void)arg;
  cr_assert_null(wd_runtime_loop(NULL));
  uv_loop_t *loop = wd_runtime_loop(wd_task_runtime(self));
  cr_assert_not_null(loop);
  own_timer o = {.w = {.what = "own timer"}};
  uv_timer_init(loop, &o.t);
  o.t.data = &o;
  /* Due at once: libuv runs it before it polls, the case that used to
   * leave the poll blocked with the task ready.  No wall time is waited. */
  uv_timer_start(&o.t, own_fire, 0, 0);
  /* Parked on a handle of our own: an active handle is not a deadlock. */
  cr_assert_eq(wd_park(self, &o.w), 42);
  cr_assert_eq(o.fired, 1);
  /* The handle lives in this frame: wait until libuv is done with it. */
  o.w = (wd_wait){.what = "own timer close"};
  uv_close((uv_handle_t *)&o.t, own_closed);
  cr_assert_eq(wd_park(self, &o.w), 7);
  return 0;
}

Test(runtime, a_handle_of_our_own_on_the_loop_can_wake_a_task) {
  cr_assert_eq(wd_run(own_loop_main, NULL), 0);
  assert_no_leaks();
}

/* On the virtual clock, ages and blocked times in dumps are virtual too. */
static int long_napper(wd_task *self, void *arg) {
  (void)arg;
  return wd_sleep(self, 10 * WD_SEC);
}

static int virtual_ages_main(wd_task *self, void *arg) {
  char *buf = arg;
  wd_group g;
  wd_group_enter(self, &g, &(wd_group_opts){.name = "nappers"});
  wd_spawn(&g, long_napper, NULL, &(wd_spawn_opts){.name = "napper"});
  wd_sleep(self, 1500 * WD_MSEC);
  FILE *f = fmemopen(buf, 8191, "w");
  wd_dump(f);
  fclose(f);
  return wd_group_exit(self, &g, 0);
}

Test(runtime, dump_ages_follow_the_virtual_clock) {
  static char buf[8192];
  cr_assert_eq(run_virtual(virtual_ages_main, buf), 0);
  cr_assert_not_null(strstr(buf, "root, age 1.500 s"), "%s", buf);
  cr_assert_not_null(strstr(buf, "'napper': blocked 1.500 s on sleep"), "%s",
                     buf);
  cr_assert_not_null(strstr(buf, "(8.500 s left)"), "%s", buf);
  assert_no_leaks();
}

/* A wake-up the runtime cannot see (an unreferenced handle) is no
 * deadlock while one is expected, even on the virtual clock. */
typedef struct unseen {
  uv_idle_t idle;
  wd_wait w;
} unseen;

static void unseen_fire(uv_idle_t *h) {
  unseen *u = h->data;
  uv_idle_stop(h);
  wd_wake(&u->w, 5);
}

static void unseen_closed(uv_handle_t *h) {
  unseen *u = h->data;
  wd_wake(&u->w, 6);
}

static int expect_main(wd_task *self, void *arg) {
  (void)arg;
  wd_runtime *rt = wd_task_runtime(self);
  unseen u = {.w = {.what = "unseen"}};
  uv_idle_init(wd_runtime_loop(rt), &u.idle);
  u.idle.data = &u;
  uv_unref((uv_handle_t *)&u.idle);
  wd_runtime_expect_wakeup(rt, true);
  uv_idle_start(&u.idle, unseen_fire);
  cr_assert_eq(wd_park(self, &u.w), 5);
  u.w = (wd_wait){.what = "unseen close"};
  uv_close((uv_handle_t *)&u.idle, unseen_closed);
  cr_assert_eq(wd_park(self, &u.w), 6);
  wd_runtime_expect_wakeup(rt, false);
  wd_runtime_expect_wakeup(rt, false); /* an extra off is harmless */
  wd_runtime_expect_wakeup(NULL, true);
  return 0;
}

Test(runtime, an_expected_wakeup_is_not_a_deadlock) {
  cr_assert_eq(run_virtual(expect_main, NULL), 0);
  assert_no_leaks();
}

static int why_main(wd_task *self, void *arg) {
  (void)arg;
  wd_cancel_scope s;
  wd_cancel_scope_enter(self, &s, NULL);
  wd_cancel_why(&s, "shutdown (SIGTERM)");
  wd_cancel(&s); /* the first reason stays */
  cr_assert_str_eq(wd_cancel_scope_reason(&s), "shutdown (SIGTERM)");
  cr_assert_eq(wd_yield(self), WD_ECANCELED);
  wd_cancel_scope_exit(self, &s, WD_ECANCELED);
  wd_cancel_scope_enter(self, &s, NULL);
  wd_cancel_why(&s, NULL);
  cr_assert_str_eq(wd_cancel_scope_reason(&s), "cancelled");
  wd_cancel_scope_exit(self, &s, 0);
  return 0;
}

Test(runtime, a_scope_cancelled_with_a_reason_keeps_it) {
  cr_assert_eq(run_virtual(why_main, NULL), 0);
  assert_no_leaks();
}
