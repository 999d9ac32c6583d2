/* Tasks: creation (wd_spawn), the entry trampoline, the end of a task,
 * handles.
 *
 * A task's record lives at the top of its own stack, so a spawn is a stack
 * taken from the cache plus a few stores, and a parked task costs the one
 * page that holds both its record and its first frames.  The record dies
 * with the stack; what outlives the task is written to the spawner's handle
 * (in the spawner's memory) before the task's last switch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "stack.h"

void wd__task_started(wd_task *t);

#if !WD_ASAN && !defined(WD_USE_UCONTEXT) && UINTPTR_MAX == UINT64_MAX
#include <stddef.h>
_Static_assert(sizeof(wd_task) <= 384, "a task record grew past 6 lines");
_Static_assert(offsetof(wd_task, is_sched) < 64 && offsetof(wd_task, fn) == 64,
               "a switch, park, wake or sleep must touch line 0 only");
_Static_assert(offsetof(wd_task, stack) == 128 &&
                   offsetof(wd_task, root_scope) == 192,
               "a task's end reads lines 1 to 3");
_Static_assert(sizeof(wd_cancel_scope) == 96 &&
                   offsetof(wd_cancel_scope, children_) == 48,
               "a root scope's end and a checkpoint read its first line");
#endif

static _Noreturn void misuse_die(wd_task *t) {
  const char *what = !wd__list_empty(&t->groups) ? "a task group" : NULL;
  const char *file = t->file;
  int line = t->line;
  if (what) {
    wd_group *g = wd__container_of(t->groups.prev_, wd_group, link_);
    file = g->file_;
    line = g->line_;
  } else {
    what = "a cancel scope";
  }
  fprintf(stderr,
          "warden: task %llu '%s' returned with %s still open (%s:%d); "
          "its frame is gone, so the process cannot continue safely\n",
          (unsigned long long)t->id, wd_task_name(t), what, file, line);
  abort();
}

/* Publish a task's outcome (or a spawn's that never started) in its
 * handle and wake whoever joins it. */
void wd__handle_finish(wd_handle *h, int status, void *result) {
  if (!h) return;
  h->status = status;
  h->result = result;
  h->done = true;
  h->task = NULL;
  h->pending_ = NULL;
  if (h->joiner_) wd_wake(h->joiner_, 0);
  h->joiner_ = NULL;
}

static _Noreturn void task_finish(wd_task *t, int rc) {
  wd_runtime *rt = t->rt;
  if (WD_UNLIKELY(t->scope != &t->root_scope || !wd__list_empty(&t->groups)))
    misuse_die(t);
  while (WD_UNLIKELY(!wd__list_empty(&t->holds))) {
    wd_hold *h = wd__container_of(t->holds.next_, wd_hold, link_);
    wd__list_unlink(&h->link_);
    h->on_exit(h, t);
  }
  if (t->group) wd__group_task_done(t->group, t, rc);
  wd__handle_finish(t->handle, rc, t->result);
  if (t->is_root) {
    rt->root_status = rc;
    rt->root = NULL;
    wd__error_replace(&rt->sched, wd__error_take(t));
  }
  wd__scope_fini_root(t);
  wd__timer_disarm(rt, &t->sleep);
  wd__timers_unreserve(rt);
  if (t->locals) wd__local_unref(t->locals);
  if (t->err) wd__error_free(t->err);
  rt->ntasks--;
  /* The last switch checks the canary too, but by then the record is no
   * longer a task's: check while it can still be named. */
  if (t->canary && *t->canary != WD__CANARY)
    wd__overflow_die(t, "stack canary overwritten");
  t->state = WD__DONE; /* the overflow handler no longer names it */
  rt->zombie = t;
  wd__switch_away(t);
  __builtin_unreachable();
}

void wd__task_main(void *arg) {
  wd_task *t = arg;
  wd__task_started(t);
  int rc = t->fn(t, t->arg);
  task_finish(t, rc);
}

/* Start a task: take a stack, write the record, queue it.  Inlined into
 * wd_spawn_(), so that the usual spawn is one frame; wd__task_spawn() is
 * the same for the other callers. */
static inline __attribute__((always_inline)) int
start_task(wd_group *g, wd_task_fn fn, void *arg, wd_handle *h,
           size_t stack_size, const char *name, const char *file, int line,
           wd__local *locals, uint64_t id) {
  wd_runtime *rt = wd__rt;
  wd__stack st;
  int rc = wd__timers_reserve(rt); /* for its sleeps */
  if (rc) return rc;
  rc = wd__stack_get(rt, stack_size, &st);
  if (rc) {
    wd__timers_unreserve(rt);
    return rc;
  }
  wd_task *t = wd__task_at(st.hi);
  /* Field by field rather than a memset of the whole record: this is the
   * spawn path, and most fields are written below anyway. */
  t->named = name != NULL; /* else the name's line is not touched */
  if (name) {
    strncpy(t->name, name, sizeof t->name - 1);
    t->name[sizeof t->name - 1] = '\0';
  }
  t->is_root = t->is_sched = false;
  t->result = NULL;
  t->wait = NULL;
  t->err = NULL;
  t->sleep.armed_ = false;
  t->cancel_rc = 0;
#if WD_ASAN
  t->asan_fake = NULL;
#endif
  t->magic = WD__TASK_MAGIC;
  t->rt = rt;
  t->stack = st;
  t->canary = st.canary;
  t->id = id ? id : ++rt->next_id;
  t->fn = fn;
  t->arg = arg;
  t->group = g;
  t->handle = h;
  t->file = file;
  t->line = line;
  t->created_ms = wd__loop_ms(rt);
  t->locals = locals;
  wd__list_init(&t->groups);
  wd__list_init(&t->holds);
  wd__scope_init_root(t, g ? &g->scope : NULL);
  /* Spawned by the group's owner from inside the group (the usual case):
   * the new task's status is the owner's, cached and current.  Taking it
   * spares the task's first checkpoint a walk up the scopes, whose lines
   * are cold by then when many tasks run. */
  wd_task *cur = rt->current;
  if (g && cur->scope == &g->scope) {
    t->cancel_rc = wd__cancel_status(cur);
    t->cancel_epoch = rt->cancel_epoch;
  }
  wd__ctx_make(&t->ctx, st.lo, (char *)t, wd__task_main, t);
#if WD_ASAN
  t->asan_lo = st.lo;
  t->asan_size = (size_t)((char *)t - st.lo);
#endif
  if (h) {
    h->task = t;
    h->id = t->id;
  }
  if (g) g->nrunning_++;
  rt->ntasks++;
  wd__ready(t);
  return 0;
}

int wd__task_spawn(wd_group *g, wd_task_fn fn, void *arg, wd_handle *h,
                   size_t stack_size, const char *name, const char *file,
                   int line, wd__local *locals, uint64_t id) {
  return start_task(g, fn, arg, h, stack_size, name, file, line, locals, id);
}

/* The task calling, or NULL outside any task. */
static inline wd_task *caller(wd_runtime *rt) {
  return rt && !rt->current->is_sched ? rt->current : NULL;
}

__attribute__((noinline, cold)) static int
spawn_refused(wd_runtime *rt, wd_group *g, wd_task_fn fn) {
  wd_task *self = caller(rt);
  if (!g || !fn)
    return wd_fail(self, WD_EINVAL, "wd_spawn: NULL %s", !g ? "group" : "fn");
  if (g->closed_)
    return wd_fail(self, WD_ECLOSED, "wd_spawn: group '%s' is closed",
                   g->name_);
  return wd_fail(self, WD_EINVAL,
                 "wd_spawn: group '%s' is not open on this thread's runtime",
                 g->name_);
}

int wd_spawn_(wd_group *g, wd_task_fn fn, void *arg, const wd_spawn_opts *opts,
              const char *file, int line) {
  wd_runtime *rt = wd__rt;
  /* Closed before the owner is read: the owner of an exited group may be
   * gone. */
  if (WD_UNLIKELY(!g || !fn || g->closed_ || !rt || !g->owner_ ||
                  g->owner_->rt != rt))
    return spawn_refused(rt, g, fn);
  wd_task *self = caller(rt);
  wd_spawn_opts o = opts ? *opts : (wd_spawn_opts){0};
  if (o.stack_size &&
      (o.stack_size < WD_STACK_MIN || o.stack_size > WD_STACK_MAX))
    return wd_fail(self, WD_EINVAL,
                   "wd_spawn: stack size %zu outside [%zu, %zu]", o.stack_size,
                   WD_STACK_MIN, WD_STACK_MAX);
  wd__local *locals = self ? self->locals : NULL;
  if (g->max_running_ && g->nrunning_ >= g->max_running_) {
    int rc = wd__group_queue(g, fn, arg, &o, file, line, locals);
    if (rc) { /* the handle says so, as when a stack cannot be had */
      wd__handle_reset(o.handle, 0);
      wd__handle_finish(o.handle, rc, NULL);
    }
    return rc ? wd_fail(self, rc,
                        "wd_spawn: no memory to queue a task "
                        "in group '%s'",
                        g->name_)
              : 0;
  }
  wd__handle_reset(o.handle, 0);
  int rc = start_task(g, fn, arg, o.handle, o.stack_size, o.name, file, line,
                      wd__local_ref(locals), 0);
  if (rc) {
    wd__local_unref(locals);
    wd__handle_finish(o.handle, rc, NULL);
    return wd_fail(self, rc,
                   "wd_spawn: no memory for a task stack in "
                   "group '%s'",
                   g->name_);
  }
  g->nlive_++;
  g->nspawned_++;
  return 0;
}

wd_task *wd_self(void) { return caller(wd__rt); }

uint64_t wd_task_id(const wd_task *task) { return task ? task->id : 0; }

const char *wd_task_name(const wd_task *task) {
  if (!task) return "(none)";
  if (!task->named) {
    wd_task *t = (wd_task *)task; /* the default name is made lazily */
    snprintf(t->name, sizeof t->name, "task-%llu", (unsigned long long)t->id);
    t->named = true;
  }
  return task->name;
}

void wd_task_set_name(wd_task *self, const char *name) {
  if (!self) return;
  if (!name) name = "";
  strncpy(self->name, name, sizeof self->name - 1);
  self->name[sizeof self->name - 1] = '\0';
  self->named = true;
}

void wd_task_set_result(wd_task *self, void *result) {
  if (self) self->result = result;
}

wd_runtime *wd_task_runtime(const wd_task *self) {
  return self ? self->rt : NULL;
}

const wd_wait *wd_task_wait(const wd_task *task) {
  return task && task->state == WD__BLOCKED ? task->wait : NULL;
}

void wd_task_hold(wd_task *self, wd_hold *h) {
  if (self && h) wd__list_push_back(&self->holds, &h->link_);
}

void wd_task_unhold(wd_task *self, wd_hold *h) {
  (void)self;
  if (h) wd__list_unlink(&h->link_);
}

typedef struct join_wait {
  wd_wait w;
  wd_handle *h;
} join_wait;

static bool join_cancel(wd_wait *w) {
  join_wait *jw = wd__container_of(w, join_wait, w);
  jw->h->joiner_ = NULL;
  return true;
}

int wd_join(wd_task *self, wd_handle *h) {
  if (!self || !h) return WD_EINVAL;
  int rc = wd__cancel_status(self);
  if (rc) return rc;
  if (h->done) return 0; /* also a spawn that failed: see h->status */
  if (!h->id)
    return wd_fail(self, WD_EINVAL, "wd_join: handle was never spawned");
  if (h->joiner_)
    return wd_fail(self, WD_EBUSY, "wd_join: task %llu already has a joiner",
                   (unsigned long long)h->id);
  join_wait jw = {.w = {.what = "join", .on_cancel = join_cancel}, .h = h};
  /* The joined task's name when it has one; formatting a default name on
   * every join would cost more than the join. */
  jw.w.name = h->task && h->task->named ? h->task->name : NULL;
  h->joiner_ = &jw.w;
  return wd_park(self, &jw.w);
}

void wd__pending_cancel(wd_handle *h);

void wd_handle_cancel(wd_handle *h) {
  if (h && h->pending_)
    wd__pending_cancel(h);
  else if (h && h->task)
    wd__cancel_with(&h->task->root_scope, WD_ECANCELED, "task cancelled");
}

const char *wd__state_name(int state) {
  switch (state) {
  case WD__READY:
    return "ready";
  case WD__RUNNING:
    return "running";
  case WD__BLOCKED:
    return "blocked";
  case WD__DONE:
    return "done";
  }
  return "?";
}
