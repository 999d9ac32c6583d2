/* The runtime: creation, the loop that drives tasks and libuv, posts from
 * other threads, and the orderly end.
 *
 * The loop alternates two things.  While tasks are ready it runs batches of
 * them (see sched.c) and between batches expires timers, runs posts and,
 * only if libuv has something of the user's in flight, polls it without
 * blocking.  When no task is ready it blocks in uv_run(UV_RUN_ONCE) with the
 * single uv_timer_t armed for the earliest deadline - or, on the virtual
 * clock, jumps time to that deadline when libuv has nothing in flight.  Our
 * own timer and async handles are unreferenced so that uv_loop_alive() tells
 * exactly whether user work (offloaded calls, I/O) is pending; the async
 * handle is referenced only while the loop blocks, so that posts wake it.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "stack.h"

#define WD__BUDGET 1024

void wd__sched_run_batch(wd_runtime *rt, unsigned budget);
int wd__task_spawn(wd_group *g, wd_task_fn fn, void *arg, wd_handle *h,
                   size_t stack_size, const char *name, const char *file,
                   int line, wd__local *locals, uint64_t id);

wd_runtime *wd_runtime_current(void) { return wd__rt; }

static void run_posts(wd_runtime *rt) {
  pthread_mutex_lock(&rt->post_mu);
  wd__post *p = rt->post_head;
  rt->post_head = rt->post_tail = NULL;
  atomic_store(&rt->post_pending, 0);
  pthread_mutex_unlock(&rt->post_mu);
  while (p) {
    wd__post *next = p->next;
    p->fn(rt, p->arg);
    wd__free(p);
    p = next;
  }
}

/* A callback that made a task ready must not let uv_run(UV_RUN_ONCE) go on
 * to block in the poll: libuv 1.44 runs due timers before polling. */
static void stop_if_ready(wd_runtime *rt) {
  if (!wd__runq_empty(rt)) uv_stop(&rt->loop);
}

/* Runs just before libuv polls.  A callback of a handle warden does not
 * own (a user's timer or signal) may have made a task ready; stopping the
 * loop here makes the poll return at once instead of blocking. */
static void on_prepare(uv_prepare_t *p) { stop_if_ready(p->loop->data); }

static void on_async(uv_async_t *a) {
  run_posts(a->loop->data);
  stop_if_ready(a->loop->data);
}

static void on_timer(uv_timer_t *t);

/* Arm the loop's one timer for our earliest deadline.  libuv counts in
 * whole milliseconds from its cached loop time, so refresh that first (a
 * stale loop time makes the timer fire early) and round up; on_timer
 * re-arms if it still fired a little early. */
static void arm_uv_timer(wd_runtime *rt) {
  wd_time when;
  bool any = wd__timers_next(rt, &when);
  uv_update_time(&rt->loop);
  /* Wake up to give stacks back, too; never with 0 ms from here, which
   * from on_timer would make libuv run the timer again at once. */
  uint64_t ms = wd__stacks_next_trim(rt);
  if (ms == 0) ms = 1;
  if (any) {
    wd_time delta = when - wd__now(rt);
    /* Rounded up, without overflowing for a deadline of WD_TIME_NEVER. */
    uint64_t d =
        delta > 0 ? (uint64_t)(delta / WD_MSEC) + (delta % WD_MSEC != 0) : 0;
    if (d < ms) ms = d;
  }
  if (ms == UINT64_MAX)
    uv_timer_stop(&rt->timer);
  else
    uv_timer_start(&rt->timer, on_timer, ms, 0);
}

static void on_timer(uv_timer_t *t) {
  wd_runtime *rt = t->loop->data;
  wd__timers_expire(rt, wd__now(rt));
  if (rt->clock == WD_CLOCK_REAL) arm_uv_timer(rt);
  stop_if_ready(rt);
}

int wd_runtime_post(wd_runtime *rt, void (*fn)(wd_runtime *, void *),
                    void *arg) {
  if (!rt || !fn) return WD_EINVAL;
  wd__post *p = wd__malloc(sizeof *p);
  if (!p) return WD_ENOMEM;
  p->fn = fn;
  p->arg = arg;
  p->next = NULL;
  pthread_mutex_lock(&rt->post_mu);
  if (rt->post_closed) {
    pthread_mutex_unlock(&rt->post_mu);
    wd__free(p);
    return WD_ECLOSED;
  }
  if (rt->post_tail)
    rt->post_tail->next = p;
  else
    rt->post_head = p;
  rt->post_tail = p;
  atomic_store(&rt->post_pending, 1);
  /* Sent under the lock: the runtime cannot close the handle meanwhile. */
  uv_async_send(&rt->async);
  pthread_mutex_unlock(&rt->post_mu);
  return 0;
}

/* Between batches: timers, posts, and user I/O if there is any. */
static void poll_busy(wd_runtime *rt) {
  wd__timers_expire(rt, wd__now(rt));
  if (atomic_load_explicit(&rt->post_pending, memory_order_relaxed))
    run_posts(rt);
  if (uv_loop_alive(&rt->loop)) uv_run(&rt->loop, UV_RUN_NOWAIT);
}

static void block_in_loop(wd_runtime *rt) {
  uv_ref((uv_handle_t *)&rt->async);
  uv_run(&rt->loop, UV_RUN_ONCE);
  uv_unref((uv_handle_t *)&rt->async);
}

static void idle_real(wd_runtime *rt) {
  arm_uv_timer(rt);
  block_in_loop(rt);
}

static void idle_virtual(wd_runtime *rt) {
  if (uv_loop_alive(&rt->loop)) {
    /* Real work is in flight: virtual time waits for it. */
    block_in_loop(rt);
    return;
  }
  wd_time when;
  if (wd__timers_next(rt, &when) && when != WD_TIME_NEVER) {
    if (when > rt->vnow) rt->vnow = when;
    /* The runtime was idle all through the jump: what came due for
     * trimming meanwhile is trimmed now. */
    while (wd__stacks_trim(rt, 1024)) {
    }
    wd__timers_expire(rt, rt->vnow);
    return;
  }
  block_in_loop(rt); /* only a post can help now */
}

/* Every task is blocked and nothing can wake one: no timer, no libuv work,
 * no post pending, and no post expected.  Report it, then cancel every
 * task so the program unwinds; if that does not help either (the waits
 * cannot be cancelled), abort rather than hang silently. */
static bool deadlocked(wd_runtime *rt) {
  wd_time when;
  bool timer = wd__timers_next(rt, &when) && when != WD_TIME_NEVER;
  if (rt->await_posts || rt->expect_wakeups || timer ||
      uv_loop_alive(&rt->loop) ||
      atomic_load_explicit(&rt->post_pending, memory_order_relaxed))
    return false;
  fprintf(stderr,
          "warden: deadlock: %zu task%s blocked, and no timer, "
          "I/O or post can wake them%s\n",
          rt->ntasks, rt->ntasks == 1 ? "" : "s",
          rt->deadlocks ? " even after cancelling them all" : "");
  wd_dump(stderr);
  if (rt->deadlocks++ || !rt->root) abort();
  wd__cancel_with(&rt->root->root_scope, WD_ECANCELED, "deadlock");
  return true;
}

static void idle(wd_runtime *rt) {
  uv_update_time(&rt->loop); /* ages in dumps, stack trimming */
  wd__timers_expire(rt, wd__now(rt));
  if (atomic_load_explicit(&rt->post_pending, memory_order_relaxed))
    run_posts(rt);
  if (!wd__runq_empty(rt)) return;
  if (wd__stacks_trim(rt, 1024)) {
    /* More to give back: poll without blocking, trim again next round. */
    uv_run(&rt->loop, UV_RUN_NOWAIT);
    return;
  }
  if (deadlocked(rt)) return;
  if (rt->clock == WD_CLOCK_VIRTUAL)
    idle_virtual(rt);
  else
    idle_real(rt);
}

static void run_loop(wd_runtime *rt) {
  while (rt->ntasks > 0) {
    if (!wd__runq_empty(rt)) {
      wd__sched_run_batch(rt, WD__BUDGET);
      if (!wd__runq_empty(rt)) poll_busy(rt);
    } else {
      idle(rt);
    }
  }
}

static int runtime_init(wd_runtime *rt, const wd_runtime_opts *o) {
  int rc = uv_loop_init(&rt->loop);
  if (rc) return rc;
  rt->loop.data = rt;
  uv_timer_init(&rt->loop, &rt->timer);
  uv_unref((uv_handle_t *)&rt->timer);
  rc = uv_async_init(&rt->loop, &rt->async, on_async);
  if (rc) {
    uv_close((uv_handle_t *)&rt->timer, NULL);
    uv_run(&rt->loop, UV_RUN_DEFAULT);
    uv_loop_close(&rt->loop);
    return rc;
  }
  uv_unref((uv_handle_t *)&rt->async);
  uv_prepare_init(&rt->loop, &rt->prepare);
  uv_prepare_start(&rt->prepare, on_prepare);
  uv_unref((uv_handle_t *)&rt->prepare);
  pthread_mutex_init(&rt->post_mu, NULL);
  rt->runq_tail = &rt->runq_head;
  wd__list_init(&rt->blocking);
  rt->clock = o->clock;
  rt->guard = o->guard;
  rt->await_posts = o->await_posts;
  rt->default_stack = o->stack_size ? o->stack_size : WD_STACK_DEFAULT;
  rt->cancel_epoch = 1;
  rt->sched.is_sched = true;
  rt->sched.rt = rt;
  rt->sched.state = WD__RUNNING;
  rt->sched.id = 0;
  wd__list_init(&rt->sched.groups);
  wd__list_init(&rt->sched.holds);
  snprintf(rt->sched.name, sizeof rt->sched.name, "(scheduler)");
  rt->sched.named = true;
  rt->current = &rt->sched;
  return 0;
}

/* Close the loop after the last task: drain posts, wait for orphaned
 * blocking calls, close our handles. */
static void runtime_fini(wd_runtime *rt) {
  pthread_mutex_lock(&rt->post_mu);
  rt->post_closed = true;
  pthread_mutex_unlock(&rt->post_mu);
  run_posts(rt);
  while (rt->nblocking > 0)
    uv_run(&rt->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&rt->timer, NULL);
  uv_close((uv_handle_t *)&rt->async, NULL);
  uv_close((uv_handle_t *)&rt->prepare, NULL);
  uv_run(&rt->loop, UV_RUN_DEFAULT);
  uv_loop_close(&rt->loop);
  pthread_mutex_destroy(&rt->post_mu);
}

int wd_runtime_ext_add(wd_runtime *rt, wd_runtime_ext *e) {
  if (!rt || !e || !e->key)
    return wd_fail(wd_self(), WD_EINVAL, "wd_runtime_ext_add: NULL %s",
                   !rt  ? "runtime"
                   : !e ? "extension"
                        : "key");
  if (wd_runtime_ext_get(rt, e->key))
    return wd_fail(wd_self(), WD_EBUSY,
                   "wd_runtime_ext_add: key already attached");
  e->next_ = rt->exts;
  rt->exts = e;
  return 0;
}

wd_runtime_ext *wd_runtime_ext_get(const wd_runtime *rt, const void *key) {
  for (wd_runtime_ext *e = rt ? rt->exts : NULL; e; e = e->next_)
    if (e->key == key) return e;
  return NULL;
}

/* Extensions end after the last task and before the loop closes, so that a
 * leak report can still name what it finds.  An at_exit may free its own
 * extension: read next_ first. */
static void exts_exit(wd_runtime *rt) {
  while (rt->exts) {
    wd_runtime_ext *e = rt->exts;
    rt->exts = e->next_;
    if (e->at_exit) e->at_exit(e, rt);
  }
}

int wd_run_with(const wd_runtime_opts *opts, wd_task_fn main, void *arg) {
  wd_runtime_opts o = opts ? *opts : (wd_runtime_opts){0};
  if (!main) return wd_fail(NULL, WD_EINVAL, "wd_run: main is NULL");
  if ((o.clock != WD_CLOCK_REAL && o.clock != WD_CLOCK_VIRTUAL) ||
      (o.guard != WD_GUARD_AUTO && o.guard != WD_GUARD_NEVER) ||
      (o.stack_size &&
       (o.stack_size < WD_STACK_MIN || o.stack_size > WD_STACK_MAX)))
    return wd_fail(NULL, WD_EINVAL, "wd_run: option out of range");
  if (wd__rt)
    return wd_fail(NULL, WD_EBUSY,
                   "wd_run: this thread already runs a "
                   "runtime");
  wd_runtime *rt = wd__calloc(1, sizeof *rt);
  if (!rt) return wd_fail(NULL, WD_ENOMEM, "wd_run: no memory");
  int rc = runtime_init(rt, &o);
  if (rc) {
    wd__free(rt);
    return wd_fail(NULL, rc, "wd_run: cannot start the loop: %s",
                   wd_strerror(rc));
  }
  wd__rt = rt;
  rc = wd__stacks_init(rt);
  if (rc) {
    runtime_fini(rt);
    wd__rt = NULL;
    wd__free(rt);
    return wd_fail(NULL, WD_ENOMEM, "wd_run: no memory for the runtime");
  }
  wd__overflow_install(rt);
  rc = wd__task_spawn(NULL, main, arg, NULL, 0,
                      o.root_name ? o.root_name : "main", __FILE__, __LINE__,
                      NULL, 0);
  if (rc) {
    runtime_fini(rt);
    wd__overflow_uninstall(rt);
    wd__stacks_deinit(rt);
    wd__timers_fini(rt);
    wd__rt = NULL;
    wd__free(rt);
    return wd_fail(NULL, WD_ENOMEM, "wd_run: no memory for the root task");
  }
  rt->root = rt->runq_head;
  rt->root->is_root = true;
  wd_error_clear(NULL);
  run_loop(rt);
  exts_exit(rt);
  runtime_fini(rt);
  int status = rt->root_status;
  wd__overflow_uninstall(rt);
  wd__stacks_deinit(rt);
  wd__timers_fini(rt);
  wd__rt = NULL;
  wd__free(rt);
  return status;
}

uv_loop_t *wd_runtime_loop(wd_runtime *rt) { return rt ? &rt->loop : NULL; }

void wd_runtime_expect_wakeup(wd_runtime *rt, bool on) {
  if (!rt) return;
  if (on)
    rt->expect_wakeups++;
  else if (rt->expect_wakeups)
    rt->expect_wakeups--;
}

int wd_run(wd_task_fn main, void *arg) { return wd_run_with(NULL, main, arg); }

void wd_runtime_stats_get(const wd_runtime *rt, wd_runtime_stats *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (!rt) return;
  out->tasks = rt->ntasks;
  out->groups = rt->ngroups;
  out->blocking = rt->nblocking;
  out->abandoned = rt->nabandoned;
  out->switches = rt->switches;
  wd__stacks_stats(rt, &out->stacks_mapped, &out->stacks_guarded,
                   &out->stacks_cached, &out->stacks_returned);
}
