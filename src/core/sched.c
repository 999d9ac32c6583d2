/* The scheduler: switching between tasks, the run queue, parking, sleeping.
 *
 * A task that blocks or yields switches directly to the next ready task;
 * the scheduler context (the thread's own stack, running the libuv loop) is
 * entered only when the run queue is empty or after WD__BUDGET switches, so
 * that a yield between ready tasks never reads the clock nor visits libuv.
 * A task that ends cannot release its own stack while running on it: it
 * leaves itself in rt->zombie, and whoever runs next releases it.
 *
 * Timers (timer.c) are expired by the runtime loop between batches, which
 * arms a single uv_timer_t for the earliest one.
 */
#include <time.h>

#include "internal.h"
#include "stack.h"

#if WD_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

_Thread_local wd_runtime *wd__rt __attribute__((tls_model("initial-exec")));

wd_time wd__now(wd_runtime *rt) {
  if (rt->clock == WD_CLOCK_VIRTUAL) return rt->vnow;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (wd_time)ts.tv_sec * WD_SEC + ts.tv_nsec;
}

wd_time wd_now(const wd_task *self) {
  wd_runtime *rt = self ? self->rt : wd__rt;
  return rt ? wd__now(rt) : 0;
}

/* Out of line: it runs once per task, and inlined into every switch it
 * would give each one a large frame. */
__attribute__((noinline, cold)) static void reap(wd_runtime *rt) {
  wd_task *z = rt->zombie;
  rt->zombie = NULL;
  wd__stack_put(rt, &z->stack); /* its record is read, not written */
}

static inline void switch_to(wd_runtime *rt, wd_task *from, wd_task *to) {
  if (from->canary && WD_UNLIKELY(*from->canary != WD__CANARY))
    wd__overflow_die(from, "stack canary overwritten");
  rt->current = to;
  to->state = WD__RUNNING;
  rt->switches++;
  /* Checked when to switches away: its line (another stack's page) loads
   * while to runs. */
  if (to->canary && WD_UNLIKELY(rt->ntasks > WD__MANY_TASKS))
    __builtin_prefetch(to->canary);
#if WD_ASAN
  __sanitizer_start_switch_fiber(from->state == WD__DONE ? NULL
                                                         : &from->asan_fake,
                                 to->asan_lo, to->asan_size);
#endif
  wd__ctx_switch(&from->ctx, &to->ctx);
#if WD_ASAN
  __sanitizer_finish_switch_fiber(from->asan_fake, NULL, NULL);
#endif
  if (rt->zombie) reap(rt);
}

/* First code of every task, on its own stack. */
void wd__task_started(wd_task *t) {
  wd_runtime *rt = t->rt;
#if WD_ASAN
  const void *lo;
  size_t size;
  __sanitizer_finish_switch_fiber(NULL, &lo, &size);
  if (!rt->sched.asan_lo) {
    rt->sched.asan_lo = lo;
    rt->sched.asan_size = size;
  }
#endif
  if (rt->zombie) reap(rt);
}

static inline void switch_away(wd_task *self) {
  wd_runtime *rt = WD__RT_OF(self);
  wd_task *next = &rt->sched;
  if (WD_LIKELY(rt->budget)) {
    wd_task *t = wd__runq_pop(rt);
    if (t) {
      rt->budget--;
      next = t;
    }
  }
  if (next == self) {
    self->state = WD__RUNNING;
    return;
  }
  switch_to(rt, self, next);
}

void wd__switch_away(wd_task *self) { switch_away(self); }

/* Run ready tasks from the scheduler context until the queue is empty or
 * the budget is spent. */
void wd__sched_run_batch(wd_runtime *rt, unsigned budget) {
  wd_task *t = wd__runq_pop(rt);
  if (!t) return;
  rt->budget = budget;
  switch_to(rt, &rt->sched, t);
}

int wd_yield(wd_task *self) {
  if (WD_UNLIKELY(wd__cancel_status(self))) return wd__cancel_status(self);
  wd__ready(self);
  switch_away(self);
  return 0;
}

int wd__park_now(wd_task *self, wd_wait *w) {
  w->task = self;
  self->wait = w;
  self->state = WD__BLOCKED;
  w->since_ms_ = wd__loop_ms(WD__RT_OF(self));
  switch_away(self);
  self->wait = NULL;
  return w->result_;
}

int wd__park_uncancellable(wd_task *self, wd_wait *w) {
  w->on_cancel = NULL;
  return wd__park_now(self, w);
}

int wd_park(wd_task *self, wd_wait *w) {
  if (!self || !w) return WD_EINVAL;
  int rc = wd__cancel_status(self);
  if (rc) return rc;
  return wd__park_now(self, w);
}

void wd_wake(wd_wait *w, int result) {
  wd_task *t = w ? w->task : NULL;
  if (!t || t->wait != w || t->state != WD__BLOCKED) return;
  w->result_ = result;
  w->task = NULL;
  t->wait = NULL;
  wd__ready(t);
}

/* Deliver a cancellation to t if it is blocked in a cancellable wait. */
void wd__cancel_blocked(wd_task *t) {
  wd_wait *w = t->wait;
  if (t->state != WD__BLOCKED || !w || !w->on_cancel) return;
  int rc = wd__cancel_status(t);
  if (!rc || !w->on_cancel(w)) return;
  wd_wake(w, rc);
}

/* ---- sleeping ---------------------------------------------------------- */

/* The wake of a sleep that ran its course: the same as wd_wake(w, 0), but
 * without reading the wait record, which lives in a stack line of the
 * sleeper that nothing else touches before it runs again (its result is
 * 0 already, and nothing else knows the record). */
static void sleep_fire(wd_timer_node *n) {
  wd_task *t = wd__container_of(n, wd_task, sleep);
  if (t->state != WD__BLOCKED || !t->wait) return;
  t->wait = NULL;
  wd__ready(t);
}

static bool sleep_cancel(wd_wait *w) {
  wd__timer_disarm(w->task->rt, &w->task->sleep);
  return true;
}

/* now: the clock, read once by the caller (a read costs 20-30 ns). */
static int sleep_until(wd_task *self, wd_time deadline, wd_time now) {
  int rc = wd__cancel_status(self);
  if (rc) return rc;
  wd_runtime *rt = self->rt;
  if (deadline <= now) return wd_yield(self);
  wd__timer_arm(rt, &self->sleep, deadline, sleep_fire);
  wd_wait w = {.what = "sleep", .on_cancel = sleep_cancel, .result_ = 0};
  return wd__park_now(self, &w);
}

int wd_sleep_until(wd_task *self, wd_time deadline) {
  if (!self) return WD_EINVAL;
  return sleep_until(self, deadline, wd__now(self->rt));
}

int wd_sleep(wd_task *self, wd_time duration) {
  if (!self) return WD_EINVAL;
  if (duration < 0)
    return wd_fail(self, WD_EINVAL, "wd_sleep: negative duration %lld ns",
                   (long long)duration);
  wd_time now = wd__now(self->rt);
  wd_time deadline =
      duration > WD_TIME_NEVER - now ? WD_TIME_NEVER : now + duration;
  return sleep_until(self, deadline, now);
}
