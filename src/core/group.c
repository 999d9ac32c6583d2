/* Task groups.
 *
 * A group's tasks are found through its cancel scope: each task's root scope
 * is a child of the group's scope, so the group keeps no list of its own.
 * A group counts its live tasks (running, blocked, or pending behind the
 * max_running cap) and its owner parks in wd_group_exit() until the count is
 * zero; that wait cannot be cancelled, because no task may outlive its
 * group, but it is bounded: cancelling the owner cancels the group's scope,
 * which every task of the group sits under.  A task's end is accounted for
 * in wd__group_task_done(), which runs on the ending task's stack: it files
 * a failure (moving the task's detailed error into the group), cancels the
 * siblings unless the group supervises, starts the next pending spawn, and
 * wakes the owner when the last task is gone.  wd_spawn() itself is in
 * task.c, where the start of a task is inlined into it.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

int wd__park_uncancellable(wd_task *self, wd_wait *w);

int wd_group_enter_(wd_task *self, wd_group *g, const wd_group_opts *opts,
                    const char *file, int line) {
  if (!self || !g)
    return wd_fail(self, WD_EINVAL, "wd_group_enter: NULL %s",
                   !self ? "task" : "group");
  memset(g, 0, sizeof *g);
  int rc = wd_cancel_scope_enter(self, &g->scope, NULL);
  if (rc) return rc;
  wd_runtime *rt = self->rt;
  g->owner_ = self;
  wd__list_init(&g->pending_);
  g->id_ = ++rt->next_id;
  if (opts && opts->name)
    snprintf(g->name_, sizeof g->name_, "%s", opts->name);
  else
    snprintf(g->name_, sizeof g->name_, "group-%llu",
             (unsigned long long)g->id_);
  g->supervisor_ = opts && opts->supervisor;
  g->max_running_ = opts ? opts->max_running : 0;
  g->file_ = file;
  g->line_ = line;
  g->created_ = (wd_time)wd__loop_ms(rt);
  wd__list_push_back(&self->groups, &g->link_);
  rt->ngroups++;
  return 0;
}

/* Queue a spawn behind the group's max_running cap (WD_ENOMEM, or 0). */
int wd__group_queue(wd_group *g, wd_task_fn fn, void *arg,
                    const wd_spawn_opts *o, const char *file, int line,
                    wd__local *locals) {
  wd__pending *p = wd__calloc(1, sizeof *p);
  if (!p) return WD_ENOMEM;
  p->fn = fn;
  p->arg = arg;
  p->handle = o->handle;
  p->stack_size = o->stack_size;
  p->file = file;
  p->line = line;
  p->locals = wd__local_ref(locals);
  p->id = ++g->owner_->rt->next_id;
  if (o->name) snprintf(p->name, sizeof p->name, "%s", o->name);
  p->group = g;
  wd__handle_reset(o->handle, p->id);
  if (o->handle) o->handle->pending_ = p;
  wd__list_push_back(&g->pending_, &p->link);
  g->npending_++;
  g->nlive_++;
  return 0;
}

static void record_failure(wd_group *g, wd_error *e) {
  g->nfailed_++;
  if (!e) return;
  if (g->nerrors_ == g->caperrors_) {
    size_t cap = g->caperrors_ ? g->caperrors_ * 2 : 4;
    wd_error **n = wd__realloc(g->errors_, cap * sizeof *n);
    if (!n) {
      wd__error_free(e); /* counted in nfailed_, detail lost */
      return;
    }
    g->errors_ = n;
    g->caperrors_ = cap;
  }
  g->errors_[g->nerrors_++] = e;
}

/* A pending spawn that will never start: it did not happen.  One that
 * could not start for want of memory is a failure of the group. */
static void drop_pending(wd_group *g, wd__pending *p, int rc) {
  g->nlive_--;
  wd__local_unref(p->locals);
  wd__handle_finish(p->handle, rc, NULL);
  if (rc == WD_ECANCELED) {
    g->ncancelled_++;
  } else {
    wd_error *e =
        wd__error_new(rc, p->file, p->line, "task could not be started");
    if (e) {
      e->task_id = p->id;
      snprintf(e->task_name, sizeof e->task_name, "%s", p->name);
    }
    record_failure(g, e);
    if (!g->supervisor_)
      wd__cancel_with(&g->scope, WD_ECANCELED, "sibling failed");
  }
  wd__free(p);
}

/* Start (or, in a cancelled group, drop) pending spawns while the cap
 * allows. */
static void start_pending(wd_group *g) {
  while (g->npending_ && (!g->max_running_ || g->nrunning_ < g->max_running_)) {
    wd__pending *p =
        wd__container_of(wd__list_pop_front(&g->pending_), wd__pending, link);
    g->npending_--;
    int rc = WD_ECANCELED;
    if (!wd__scope_status(&g->scope))
      rc = wd__task_spawn(g, p->fn, p->arg, p->handle, p->stack_size,
                          p->name[0] ? p->name : NULL, p->file, p->line,
                          p->locals, p->id);
    if (p->handle) p->handle->pending_ = NULL;
    if (rc) {
      drop_pending(g, p, rc);
      continue;
    }
    g->nspawned_++;
    wd__free(p);
  }
}

void wd__pending_cancel(wd_handle *h) {
  wd__pending *p = h->pending_;
  wd_group *g = p->group;
  wd__list_unlink(&p->link);
  g->npending_--;
  h->pending_ = NULL;
  drop_pending(g, p, WD_ECANCELED);
  if (g->nlive_ == 0 && g->exit_wait_) wd_wake(g->exit_wait_, 0);
}

static wd_error *failure_of(wd_task *t, int status) {
  wd_error *e = wd__error_take(t);
  if (!e || e->code != status) {
    wd_error *n =
        wd__error_new(status, t->file, t->line, "%s", wd_strerror(status));
    if (!n) {
      wd__error_free(e);
      return NULL;
    }
    n->cause = e;
    e = n;
  }
  e->task_id = t->id;
  snprintf(e->task_name, sizeof e->task_name, "%s", wd_task_name(t));
  return e;
}

void wd__group_task_done(wd_group *g, wd_task *t, int status) {
  g->nlive_--;
  g->nrunning_--;
  if (status < 0) {
    if (wd_is_cancel(status) && wd__cancel_status(t)) {
      g->ncancelled_++;
    } else {
      record_failure(g, failure_of(t, status));
      if (!g->supervisor_)
        wd__cancel_with(&g->scope, WD_ECANCELED, "sibling failed");
    }
  }
  start_pending(g);
  if (g->nlive_ == 0 && g->exit_wait_) wd_wake(g->exit_wait_, 0);
}

static int group_result(wd_task *self, wd_group *g, int rc, bool body_failed) {
  if (g->nfailed_) {
    size_t n = g->nerrors_ + (body_failed ? 1 : 0);
    wd_error *e = wd__error_new(
        WD_EGROUP, g->file_, g->line_, "group '%s': %zu of %zu task%s failed%s",
        g->name_, g->nfailed_, g->nspawned_, g->nspawned_ == 1 ? "" : "s",
        body_failed ? ", and its body" : "");
    wd_error **kids = e ? wd__calloc(n ? n : 1, sizeof *kids) : NULL;
    if (e && kids) {
      size_t k = 0;
      if (body_failed) {
        wd_error *b = wd__error_take(self);
        if (!b) b = wd__error_new(rc, NULL, 0, "%s", wd_strerror(rc));
        if (b) kids[k++] = b;
      }
      for (size_t i = 0; i < g->nerrors_; i++)
        kids[k++] = g->errors_[i];
      e->children = kids;
      e->nchildren = k;
      g->nerrors_ = 0;
    } else {
      wd__free(kids);
    }
    if (e)
      wd__error_replace(self, e);
    else /* recorded all the same, by the static stand-in */
      wd_fail(self, WD_EGROUP, "group: tasks failed");
    return WD_EGROUP;
  }
  if (body_failed) return rc;
  return wd__cancel_status(self);
}

int wd_group_exit(wd_task *self, wd_group *g, int rc) {
  if (!self || !g || g->owner_ != self || g->closed_)
    return wd_fail(self, WD_EINVAL,
                   "wd_group_exit: group not open in this task");
  if (self->scope != &g->scope)
    return wd_fail(self, WD_EINVAL,
                   "wd_group_exit: group '%s' has a scope or group open "
                   "inside it (exit them in reverse order)",
                   g->name_);
  bool body_failed = rc < 0 && !(wd_is_cancel(rc) && wd__cancel_status(self));
  if (body_failed) wd__cancel_with(&g->scope, WD_ECANCELED, "body failed");
  while (g->nlive_ > 0) {
    wd_wait w = {.what = "group", .name = g->name_};
    g->exit_wait_ = &w;
    wd__park_uncancellable(self, &w);
    g->exit_wait_ = NULL;
  }
  g->closed_ = true;
  wd__list_unlink(&g->link_);
  self->rt->ngroups--;
  wd_cancel_scope_exit(self, &g->scope, 0);
  int res = group_result(self, g, rc, body_failed);
  for (size_t i = 0; i < g->nerrors_; i++)
    wd__error_free(g->errors_[i]);
  wd__free(g->errors_);
  g->errors_ = NULL;
  g->nerrors_ = g->caperrors_ = 0;
  return res;
}

size_t wd_group_size(const wd_group *g) { return g ? g->nlive_ : 0; }

int wd_run_tasks(wd_task *self, wd_job *jobs, size_t n,
                 const wd_group_opts *opts) {
  if (!self || (n && !jobs))
    return wd_fail(self, WD_EINVAL, "wd_run_tasks: NULL %s",
                   !self ? "task" : "jobs");
  for (size_t i = 0; i < n; i++) {
    if (!jobs[i].fn)
      return wd_fail(self, WD_EINVAL, "wd_run_tasks: job %zu has no fn", i);
  }
  for (size_t i = 0; i < n; i++) {
    wd__handle_reset(&jobs[i].h, 0);
    jobs[i].h.status = WD_ECANCELED; /* until it is spawned */
    jobs[i].h.done = true;
  }
  wd_group g;
  int rc = wd_group_enter(self, &g, opts);
  if (rc) return rc;
  for (size_t i = 0; i < n && rc == 0; i++) {
    wd_spawn_opts so = {.name = jobs[i].name, .handle = &jobs[i].h};
    rc = wd_spawn(&g, jobs[i].fn, jobs[i].arg, &so);
  }
  return wd_group_exit(self, &g, rc);
}
