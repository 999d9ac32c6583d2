/* wd_blocking(): offloading synchronous calls to the thread pool, and what
 * cancellation does to them under each policy.
 *
 * Nothing here waits on wall time: a pool thread and the runtime thread meet
 * at a "gate" (a mutex and a condition variable), so a test knows for sure
 * that fn is running before it cancels, and fn cannot return before the
 * test lets it. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* No Criterion .timeout on these tests: Criterion 2.4.1's runner leaks a
 * block per timed test when tests run in parallel, and LeakSanitizer then
 * fails the whole binary.  A hang is bounded by ctest's TIMEOUT instead. */

/* ---- the gate: fn announces it started, then waits to be released ------- */

typedef struct gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int started;   /* calls that entered gated_fn */
  bool released; /* gated_fn may return */
  int finished;  /* calls that are about to return */
  int result;    /* what gated_fn returns */
} gate;

static void gate_init(gate *g, int result) {
  memset(g, 0, sizeof *g);
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  g->result = result;
}

static void gate_fini(gate *g) {
  pthread_cond_destroy(&g->cv);
  pthread_mutex_destroy(&g->mu);
}

static int gated_fn(void *arg) {
  gate *g = arg;
  pthread_mutex_lock(&g->mu);
  g->started++;
  pthread_cond_broadcast(&g->cv);
  while (!g->released)
    pthread_cond_wait(&g->cv, &g->mu);
  g->finished++;
  pthread_mutex_unlock(&g->mu);
  return g->result;
}

/* Blocks the runtime thread itself, which is fine: the pool threads do not
 * need it to start running queued work. */
static void gate_wait_started(gate *g, int n) {
  pthread_mutex_lock(&g->mu);
  while (g->started < n)
    pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}

static void gate_release(gate *g) {
  pthread_mutex_lock(&g->mu);
  g->released = true;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

static int gate_finished(gate *g) {
  pthread_mutex_lock(&g->mu);
  int n = g->finished;
  pthread_mutex_unlock(&g->mu);
  return n;
}

/* ---- result and thread -------------------------------------------------- */

typedef struct where {
  pthread_t thread;
  int calls;
} where;

static int where_fn(void *arg) {
  where *w = arg;
  w->thread = pthread_self();
  w->calls++;
  return 42;
}

static int result_main(wd_task *self, void *arg) {
  where w = {.calls = 0};
  cr_assert_eq(wd_blocking(self, where_fn, &w, WD_BLOCKING_WAIT), 42);
  cr_assert_eq(w.calls, 1);
  cr_assert_eq(wd_blocking(self, where_fn, &w, WD_BLOCKING_ABANDON), 42,
               "ABANDON without a cancel returns fn's result too");
  cr_assert_eq(w.calls, 2);
  return 0;
}

Test(blocking, returns_the_result_of_fn) {
  cr_assert_eq(wd_run(result_main, NULL), 0);
  assert_no_leaks();
}

static int negative_fn(void *arg) { return -1234; }

static int negative_main(wd_task *self, void *arg) {
  /* fn's result passes through untouched, even when it looks like an
   * error code: the caller decides what it means. */
  cr_assert_eq(wd_blocking(self, negative_fn, NULL, WD_BLOCKING_WAIT), -1234);
  return 0;
}

Test(blocking, passes_a_negative_result_through) {
  cr_assert_eq(wd_run(negative_main, NULL), 0);
  assert_no_leaks();
}

static int thread_main(wd_task *self, void *arg) {
  where w = {.calls = 0};
  pthread_t me = pthread_self();
  cr_assert_eq(wd_blocking(self, where_fn, &w, WD_BLOCKING_WAIT), 42);
  cr_assert_not(pthread_equal(w.thread, me),
                "fn ran on the runtime's own thread");
  cr_assert(pthread_equal(pthread_self(), me),
            "the task resumed on another thread");
  return 0;
}

Test(blocking, runs_fn_on_another_thread) {
  cr_assert_eq(wd_run(thread_main, NULL), 0);
  assert_no_leaks();
}

/* ---- cancellation while fn runs ----------------------------------------- */

typedef struct canceller {
  gate *gate;
  wd_blocking_policy policy;
  int done_calls, done_rc, done_left; /* on_abandoned_done's record */
  int rc;                             /* what wd_blocking returned */
  int next_rc;                        /* what the next checkpoint returned */
  bool returned;
} canceller;

static void abandoned_done(void *arg, int rc) {
  canceller *c = arg;
  c->done_calls++;
  c->done_rc = rc;
  c->done_left = gate_finished(c->gate);
}

static int blocking_child(wd_task *self, void *arg) {
  canceller *c = arg;
  wd_blocking_opts o = {
      .policy = c->policy, .on_abandoned_done = abandoned_done, .done_arg = c};
  c->rc = wd_blocking_with(self, gated_fn, c->gate, &o);
  c->returned = true;
  c->next_rc = wd_yield(self);
  return 0;
}

static int wait_policy_main(wd_task *self, void *arg) {
  canceller *c = arg;
  wd_group g;
  wd_handle h;
  wd_group_enter(self, &g, NULL);
  cr_assert_eq(wd_spawn(&g, blocking_child, c,
                        &(wd_spawn_opts){.name = "waiter", .handle = &h}),
               0);
  cr_assert_eq(wd_yield(self), 0); /* the child queues its call */
  gate_wait_started(c->gate, 1);
  wd_handle_cancel(&h);
  /* Let every ready task run: the child must still be parked, because
   * WD_BLOCKING_WAIT waits for fn to return. */
  cr_assert_eq(wd_yield(self), 0);
  cr_assert_not(c->returned, "WD_BLOCKING_WAIT returned before fn did");
  cr_assert_not(h.done);
  wd_runtime_stats st;
  wd_runtime_stats_get(wd_task_runtime(self), &st);
  cr_assert_eq(st.blocking, 1);
  cr_assert_eq(st.abandoned, 0, "a WAIT call is never abandoned");
  gate_release(c->gate);
  cr_assert_eq(wd_join(self, &h), 0);
  return wd_group_exit(self, &g, 0);
}

Test(blocking, wait_policy_cancel_waits_for_fn_and_returns_its_result) {
  gate gt;
  gate_init(&gt, 77);
  canceller c = {.gate = &gt, .policy = WD_BLOCKING_WAIT};
  cr_assert_eq(wd_run(wait_policy_main, &c), 0);
  cr_assert(c.returned);
  cr_assert_eq(c.rc, 77,
               "the work happened, so its result is returned "
               "(got %d)",
               c.rc);
  cr_assert_eq(c.next_rc, WD_ECANCELED,
               "the next checkpoint must see the cancel (got %d)", c.next_rc);
  cr_assert_eq(c.done_calls, 0, "a call that was not abandoned: no hook");
  cr_assert_eq(gate_finished(&gt), 1);
  gate_fini(&gt);
  assert_no_leaks();
}

/* With ABANDON, fn and its argument must not live on the caller's stack;
 * the test's frame outlives wd_run(), so the gate lives there. */
static int abandon_main(wd_task *self, void *arg) {
  canceller *c = arg;
  wd_group g;
  wd_handle h;
  wd_group_enter(self, &g, NULL);
  cr_assert_eq(wd_spawn(&g, blocking_child, c,
                        &(wd_spawn_opts){.name = "abandoner", .handle = &h}),
               0);
  cr_assert_eq(wd_yield(self), 0); /* the child queues its call */
  gate_wait_started(c->gate, 1);
  wd_handle_cancel(&h);
  /* fn is still held at the gate: if the join returns, the child was
   * released without waiting for fn. */
  cr_assert_eq(wd_join(self, &h), 0);
  cr_assert(c->returned);
  cr_assert_eq(c->rc, WD_ECANCELED, "got %d", c->rc);
  cr_assert_eq(gate_finished(c->gate), 0);

  wd_runtime_stats st;
  wd_runtime_stats_get(wd_task_runtime(self), &st);
  cr_assert_eq(st.blocking, 1, "the abandoned call still occupies a thread");
  cr_assert_eq(st.abandoned, 1);

  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  cr_assert_not_null(f);
  wd_dump(f);
  fclose(f);
  /* The header counts abandoned calls even when there are none, so look
   * for the line of this very call: it names its (gone) task. */
  char *line = strstr(text, "'abandoner'");
  cr_assert_not_null(line, "no blocking call of 'abandoner' in:\n%s", text);
  char *eol = strchr(line, '\n');
  if (eol) *eol = '\0';
  cr_assert_not_null(strstr(line, "abandoned"), "line: %s", line);
  free(text);

  int rc = wd_group_exit(self, &g, 0);
  /* Only now may fn finish; wd_run() must wait for it. */
  gate_release(c->gate);
  return rc;
}

Test(blocking, abandon_policy_cancel_returns_at_once_and_runtime_waits) {
  gate gt;
  gate_init(&gt, 5);
  canceller c = {.gate = &gt, .policy = WD_BLOCKING_ABANDON};
  cr_assert_eq(wd_run(abandon_main, &c), 0);
  cr_assert_eq(gate_finished(&gt), 1,
               "wd_run() returned before the abandoned call finished");
  cr_assert_eq(c.done_calls, 1, "on_abandoned_done runs once");
  cr_assert_eq(c.done_rc, 5, "with fn's real result");
  cr_assert_eq(c.done_left, 1, "and only after fn returned");
  gate_fini(&gt);
  /* The work record of the abandoned call is freed by the loop only once
   * the pool thread hands it back: no leak proves that wd_run() waited for
   * the thread, whatever the timing of the check above. */
  assert_no_leaks();
}

/* ---- cancellation before fn starts -------------------------------------- */

static int counting_fn(void *arg) {
  atomic_fetch_add((atomic_int *)arg, 1);
  return 0;
}

static int precancelled_main(wd_task *self, void *arg) {
  atomic_int *ran = arg;
  wd_cancel_scope s;
  wd_cancel_scope_enter(self, &s, NULL);
  wd_cancel(&s);
  cr_assert_eq(wd_blocking(self, counting_fn, ran, WD_BLOCKING_WAIT),
               WD_ECANCELED);
  cr_assert_eq(wd_blocking(self, counting_fn, ran, WD_BLOCKING_ABANDON),
               WD_ECANCELED);
  wd_runtime_stats st;
  wd_runtime_stats_get(wd_task_runtime(self), &st);
  cr_assert_eq(st.blocking, 0, "nothing may be queued");
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ECANCELED), 0);

  /* A deadline that fired gives WD_ETIMEDOUT instead. */
  wd_move_on_after(self, &s, WD_MSEC);
  cr_assert_eq(wd_sleep(self, 2 * WD_MSEC), WD_ETIMEDOUT);
  cr_assert_eq(wd_blocking(self, counting_fn, ran, WD_BLOCKING_WAIT),
               WD_ETIMEDOUT);
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ETIMEDOUT), 0);
  return 0;
}

Test(blocking, cancelled_before_start_never_runs_fn) {
  atomic_int ran = 0;
  cr_assert_eq(run_virtual(precancelled_main, &ran), 0);
  cr_assert_eq(atomic_load(&ran), 0, "fn ran %d times", atomic_load(&ran));
  assert_no_leaks();
}

/* A call still queued (every pool thread busy) is withdrawn when cancelled,
 * even under WD_BLOCKING_WAIT, and returns at once: "cancelled" means it did
 * not happen. */
typedef struct queued {
  gate *gate;
  atomic_int *ran;
  int rc;
} queued;

static int gated_child(wd_task *self, void *arg) {
  return wd_blocking(self, gated_fn, arg, WD_BLOCKING_WAIT);
}

static int victim_child(wd_task *self, void *arg) {
  queued *q = arg;
  q->rc = wd_blocking(self, counting_fn, q->ran, WD_BLOCKING_WAIT);
  return 0;
}

static int pool_threads(void) {
  const char *s = getenv("UV_THREADPOOL_SIZE");
  int n = s ? atoi(s) : 4;
  return n < 1 ? 1 : n > 1024 ? 1024 : n;
}

static int queued_main(wd_task *self, void *arg) {
  queued *q = arg;
  int n = pool_threads();
  wd_group busy, g;
  wd_handle h;
  wd_group_enter(self, &busy, &(wd_group_opts){.name = "busy"});
  for (int i = 0; i < n; i++)
    cr_assert_eq(wd_spawn(&busy, gated_child, q->gate, NULL), 0);
  cr_assert_eq(wd_yield(self), 0);
  gate_wait_started(q->gate, n); /* every pool thread is now held */

  wd_group_enter(self, &g, NULL);
  cr_assert_eq(wd_spawn(&g, victim_child, q, &(wd_spawn_opts){.handle = &h}),
               0);
  cr_assert_eq(wd_yield(self), 0); /* the victim queues its call */
  wd_handle_cancel(&h);
  cr_assert_eq(wd_join(self, &h), 0, "a queued call must be withdrawn");
  cr_assert_eq(q->rc, WD_ECANCELED, "got %d", q->rc);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);

  gate_release(q->gate);
  return wd_group_exit(self, &busy, 0);
}

Test(blocking, cancelled_while_queued_is_withdrawn) {
  /* Pin the pool size before the pool starts in this process. */
  setenv("UV_THREADPOOL_SIZE", "4", 0);
  gate gt;
  gate_init(&gt, 0);
  atomic_int ran = 0;
  queued q = {.gate = &gt, .ran = &ran};
  cr_assert_eq(wd_run(queued_main, &q), 0);
  cr_assert_eq(atomic_load(&ran), 0, "the withdrawn call ran");
  gate_fini(&gt);
  assert_no_leaks();
}

/* ---- arguments and load ------------------------------------------------- */

static int bad_args_main(wd_task *self, void *arg) {
  atomic_int *ran = arg;
  cr_assert_eq(wd_blocking(self, NULL, NULL, WD_BLOCKING_WAIT), WD_EINVAL);
  cr_assert_eq(wd_task_error(self)->code, WD_EINVAL);
  cr_assert_eq(wd_blocking(self, counting_fn, ran, (wd_blocking_policy)7),
               WD_EINVAL);
  cr_assert_eq(wd_blocking(self, counting_fn, ran, (wd_blocking_policy)-1),
               WD_EINVAL);
  cr_assert_eq(wd_blocking(NULL, counting_fn, ran, WD_BLOCKING_WAIT),
               WD_EINVAL);
  return 0;
}

Test(blocking, bad_arguments_are_einval_and_run_nothing) {
  atomic_int ran = 0;
  cr_assert_eq(wd_run(bad_args_main, &ran), 0);
  cr_assert_eq(atomic_load(&ran), 0);
  assert_no_leaks();
}

#define NCALLS 100

typedef struct slot {
  int in;
  int rc;
} slot;

static int twice_plus_one(void *arg) { return ((slot *)arg)->in * 2 + 1; }

static int caller(wd_task *self, void *arg) {
  slot *s = arg;
  s->rc = wd_blocking(self, twice_plus_one, s, WD_BLOCKING_WAIT);
  return 0;
}

static int many_main(wd_task *self, void *arg) {
  slot *s = arg;
  wd_group g;
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < NCALLS; i++)
    cr_assert_eq(wd_spawn(&g, caller, &s[i], NULL), 0);
  /* One round of the run queue starts every call; the loop is not polled
   * between ready tasks, so none has been collected yet. */
  cr_assert_eq(wd_yield(self), 0);
  wd_runtime_stats st;
  wd_runtime_stats_get(wd_task_runtime(self), &st);
  cr_assert_eq(st.blocking, NCALLS, "%zu calls in flight", st.blocking);
  return wd_group_exit(self, &g, 0);
}

Test(blocking, hundred_concurrent_calls_return_their_own_results) {
  slot s[NCALLS];
  for (int i = 0; i < NCALLS; i++)
    s[i] = (slot){.in = i, .rc = -1};
  cr_assert_eq(wd_run(many_main, s), 0);
  for (int i = 0; i < NCALLS; i++)
    cr_assert_eq(s[i].rc, 2 * i + 1, "call %d returned %d", i, s[i].rc);
  assert_no_leaks();
}
