/* Cancel scopes.
 *
 * Scopes form one tree per runtime: a task's scopes nest in each other, and
 * a spawned task's root scope nests in its group's scope, which nests in the
 * scope its owner had when it opened the group.  Cancelling a scope marks it
 * and walks its subtree, stopping at shielded scopes, waking every task
 * whose innermost scope it reaches while that task is blocked in a
 * cancellable wait.  A task's cancellation status is the code of the
 * outermost cancelled scope on its chain up to the first shield - the scope
 * the unwinding will end at.  It is cached per task and recomputed only when
 * the runtime's cancel epoch moved (any scope was cancelled or unshielded)
 * or the task entered or left a scope, so a checkpoint normally costs one
 * comparison.
 */
#include "internal.h"

void wd__cancel_blocked(wd_task *t);

int wd__scope_status(const wd_cancel_scope *s) {
  int rc = 0;
  for (; s; s = s->parent_) {
    if (s->cancel_rc_) rc = s->cancel_rc_;
    if (s->shield_) break;
  }
  return rc;
}

int wd__cancel_status_slow(wd_task *t) {
  uint64_t epoch = t->rt->cancel_epoch;
  t->cancel_rc = wd__scope_status(t->scope);
  t->cancel_epoch = epoch;
  return t->cancel_rc;
}

wd_time wd_task_deadline(const wd_task *self) {
  wd_time d = WD_TIME_NEVER;
  if (!self) return d;
  for (const wd_cancel_scope *s = self->scope; s; s = s->parent_) {
    if (s->deadline_ && !s->cancel_rc_ && s->deadline_ < d) d = s->deadline_;
    if (s->shield_) break;
  }
  return d;
}

int wd_cancel_status(const wd_task *self) {
  return self ? wd__cancel_status((wd_task *)self) : 0;
}

static void deliver(wd_cancel_scope *s) {
  wd__list_each(it, &s->children_) {
    wd_cancel_scope *c = wd__container_of(it, wd_cancel_scope, sibling_);
    if (!c->shield_) deliver(c);
  }
  wd_task *o = s->owner_;
  if (o && o->scope == s && o->state == WD__BLOCKED) wd__cancel_blocked(o);
}

static void bump_epoch(void) {
  if (wd__rt) wd__rt->cancel_epoch++;
}

void wd__cancel_with(wd_cancel_scope *s, int rc, const char *why) {
  if (!s || s->cancel_rc_) return;
  s->cancel_rc_ = rc;
  s->why_ = why;
  bump_epoch();
  if (!s->entered_) return;
  wd__timer_disarm(s->owner_->rt, &s->timer_);
  deliver(s);
}

void wd_cancel(wd_cancel_scope *s) {
  wd__cancel_with(s, WD_ECANCELED, "cancelled");
}

void wd_cancel_why(wd_cancel_scope *s, const char *why) {
  wd__cancel_with(s, WD_ECANCELED, why ? why : "cancelled");
}

static void scope_fire(wd_timer_node *n) {
  wd_cancel_scope *s = wd__container_of(n, wd_cancel_scope, timer_);
  wd__cancel_with(s, WD_ETIMEDOUT, "deadline");
}

static void link_scope(wd_task *t, wd_cancel_scope *s,
                       wd_cancel_scope *parent) {
  s->parent_ = parent;
  s->owner_ = t;
  wd__list_init(&s->children_);
  if (parent)
    wd__list_push_back(&parent->children_, &s->sibling_);
  else
    s->sibling_.next_ = s->sibling_.prev_ = NULL;
  s->entered_ = true;
  t->scope = s;
  t->cancel_epoch = 0;
}

void wd__scope_init_root(wd_task *t, wd_cancel_scope *parent) {
  wd_cancel_scope *s = &t->root_scope;
  s->timer_.armed_ = false;
  s->deadline_ = s->timeout_ = 0;
  s->what_ = s->why_ = NULL;
  s->cancel_rc_ = 0;
  s->shield_ = s->fail_ = false;
  link_scope(t, s, parent);
}

void wd__scope_fini_root(wd_task *t) {
  wd_cancel_scope *s = &t->root_scope;
  wd__timer_disarm(t->rt, &s->timer_);
  if (s->sibling_.next_) wd__list_unlink(&s->sibling_);
  s->entered_ = false;
}

static void apply_deadline(wd_cancel_scope *s) {
  wd_runtime *rt = s->owner_->rt;
  if (!s->deadline_ || s->cancel_rc_) {
    wd__timer_disarm(rt, &s->timer_);
  } else if (s->deadline_ <= wd__now(rt)) {
    wd__cancel_with(s, WD_ETIMEDOUT, "deadline");
  } else {
    wd__timer_arm(rt, &s->timer_, s->deadline_, scope_fire);
  }
}

int wd_cancel_scope_enter(wd_task *self, wd_cancel_scope *s,
                          const wd_cancel_opts *opts) {
  if (!self || !s)
    return wd_fail(self, WD_EINVAL, "cancel scope: NULL %s",
                   !self ? "task" : "scope");
  wd_cancel_opts o = opts ? *opts : (wd_cancel_opts){0};
  if (o.timeout < 0 || o.deadline < 0)
    return wd_fail(self, WD_EINVAL, "cancel scope: negative %s %lld ns",
                   o.timeout < 0 ? "timeout" : "deadline",
                   (long long)(o.timeout < 0 ? o.timeout : o.deadline));
  /* Room for the deadline this scope may get, now or later. */
  if (wd__timers_reserve(self->rt))
    return wd_fail(self, WD_ENOMEM, "cancel scope: no memory for a timer");
  wd_time now = (o.deadline || o.timeout) ? wd__now(self->rt) : 0;
  *s = (wd_cancel_scope){0};
  s->shield_ = o.shield;
  s->what_ = o.fail_what;
  s->fail_ = o.fail_what != NULL;
  if (o.deadline) {
    s->deadline_ = o.deadline;
    s->timeout_ = o.deadline - now;
  } else if (o.timeout) {
    s->deadline_ =
        o.timeout > WD_TIME_NEVER - now ? WD_TIME_NEVER : now + o.timeout;
    s->timeout_ = o.timeout;
  }
  link_scope(self, s, self->scope);
  if (s->deadline_) apply_deadline(s);
  return 0;
}

static void unlink_scope(wd_task *self, wd_cancel_scope *s) {
  wd__timer_disarm(self->rt, &s->timer_);
  wd__timers_unreserve(self->rt);
  wd__list_unlink(&s->sibling_);
  self->scope = s->parent_;
  self->cancel_epoch = 0;
  s->entered_ = false;
}

int wd_cancel_scope_exit(wd_task *self, wd_cancel_scope *s, int rc) {
  if (!self || !s || !s->entered_ || s->owner_ != self)
    return wd_fail(self, WD_EINVAL,
                   "cancel scope exit: scope not entered "
                   "by this task");
  if (self->scope != s)
    return wd_fail(self, WD_EINVAL,
                   "cancel scope exit: an inner scope or group is still "
                   "open (exit them in reverse order)");
  unlink_scope(self, s);
  if (!s->cancel_rc_ || !wd_is_cancel(rc) || wd__cancel_status(self)) return rc;
  if (s->fail_ && s->cancel_rc_ == WD_ETIMEDOUT)
    return wd_fail(self, WD_ETIMEDOUT, "%s: timed out after %.3f s", s->what_,
                   (double)s->timeout_ / (double)WD_SEC);
  return 0;
}

void wd_cancel_scope_set_deadline(wd_cancel_scope *s, wd_time deadline) {
  if (!s) return;
  s->deadline_ = deadline > 0 ? deadline : 0;
  if (s->entered_) apply_deadline(s);
}

void wd_cancel_scope_set_shield(wd_cancel_scope *s, bool shield) {
  if (!s || s->shield_ == shield) return;
  s->shield_ = shield;
  bump_epoch();
  /* Unshielding exposes the scope to a cancellation already pending
   * outside it: deliver it now, as if it had just happened. */
  if (!shield && s->entered_ && wd__scope_status(s->parent_)) deliver(s);
}

bool wd_cancel_scope_cancelled(const wd_cancel_scope *s) {
  return s && s->cancel_rc_ != 0;
}

const char *wd_cancel_scope_reason(const wd_cancel_scope *s) {
  return s ? s->why_ : NULL;
}
