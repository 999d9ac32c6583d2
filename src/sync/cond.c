/* Condition variables, bound to a wd_lock.
 *
 * A FIFO list of waiter records in the waiting tasks' frames.  A wait
 * releases the lock (handing it to the lock's next waiter), parks on the
 * list, and re-acquires the lock before returning, whatever happened: the
 * caller's critical section must not end behind its back.  The
 * re-acquisition must therefore not be cancellable, but wd_park() refuses
 * to park a cancelled task.  So the wait runs inside a cancel scope of its
 * own, entered before the lock is released (so that WD_ENOMEM for its timer
 * slot is returned while nothing has happened yet), and shielded just
 * before the re-acquisition: the shield hides the cancellations of the
 * scopes around it, and no one else can cancel this one.  The
 * re-acquisition skips the lock's deadlock check, because it may not give
 * up; the other task of such a cycle is the one that sees it, unless it was
 * already waiting (a known limit, written in docs/sync.md).
 *
 * Signal and broadcast unlink and wake in one step, so a waiter that was
 * signalled keeps its signal even if cancelled before it runs, and a
 * cancelled waiter never swallows a signal meant for another.
 */
#include "sync-internal.h"

static const char cond_what[] = "condition";

typedef struct cond_waiter {
  wd_wait w;
  wd_link link; /* in c->waiters_ while queued; NULLs once unlinked */
  wd_cond *c;
} cond_waiter;

#define COND_OK(c) ((c) && (c)->magic_ == WD__COND_MAGIC)

SYNC_COLD static int bad_args(wd_task *self, const wd_cond *c, const char *fn) {
  if (!self) return wd_fail(NULL, WD_EINVAL, "%s: NULL task", fn);
  return wd__sync_bad(self, c, "condition", fn);
}

int wd_cond_init(wd_cond *c, const char *name, wd_lock *lock) {
  if (!c || !lock)
    return wd_fail(NULL, WD_EINVAL, "wd_cond_init: NULL %s",
                   !c ? "condition" : "lock");
  if (lock->magic_ != WD__LOCK_MAGIC)
    return wd__sync_bad(NULL, lock, "lock", "wd_cond_init");
  memset(c, 0, sizeof *c);
  wd__list_init(&c->waiters_);
  c->lock_ = lock;
  c->magic_ = WD__COND_MAGIC;
  wd__sync_name(c->name_, name);
  return 0;
}

int wd_cond_deinit(wd_cond *c) {
  if (!c) return 0;
  if (!COND_OK(c)) return wd__sync_bad(NULL, c, "condition", "wd_cond_deinit");
  if (c->nwaiting_ || c->ninside_) {
    char label[WD__LABEL_MAX], back[48];
    return wd_fail(
        NULL, WD_EBUSY, "wd_cond_deinit: %s has %zu waiting%s",
        wd__sync_label(label, "condition", c->name_), c->nwaiting_,
        wd__sync_returning(back, sizeof back, c->ninside_, c->nwaiting_));
  }
  c->magic_ = 0;
  return 0;
}

static void wake_first(wd_cond *c) {
  wd_link *l = wd__list_pop_front(&c->waiters_);
  if (!l) return;
  cond_waiter *cw = wd__container_of(l, cond_waiter, link);
  c->nwaiting_--;
  wd_wake(&cw->w, 0);
}

int wd_cond_signal(wd_cond *c) {
  if (!COND_OK(c)) return wd__sync_bad(NULL, c, "condition", "wd_cond_signal");
  wake_first(c);
  return 0;
}

int wd_cond_broadcast(wd_cond *c) {
  if (!COND_OK(c))
    return wd__sync_bad(NULL, c, "condition", "wd_cond_broadcast");
  while (c->nwaiting_)
    wake_first(c);
  return 0;
}

static bool waiter_cancel(wd_wait *w) {
  cond_waiter *cw = wd__container_of(w, cond_waiter, w);
  wd__list_unlink(&cw->link);
  cw->c->nwaiting_--;
  return true;
}

/* The record gets only the fields wd_park() reads (task.h: what, name,
 * on_cancel) and ours. */
static int wait_signal(wd_task *self, void *obj) {
  wd_cond *c = obj;
  cond_waiter cw;
  cw.w.what = cond_what;
  cw.w.name = wd__sync_wait_name(c->name_);
  cw.w.on_cancel = waiter_cancel;
  cw.c = c;
  wd__list_push_back(&c->waiters_, &cw.link);
  c->nwaiting_++;
  int rc = wd_park(self, &cw.w);
  /* A signal unlinks before it wakes, and so does a cancellation; only a
   * wd_park() that refused to park leaves the record queued. */
  if (SYNC_UNLIKELY(rc) && cw.link.next_) waiter_cancel(&cw.w);
  return rc;
}

/* timeout < 0: none. */
static int cond_wait(wd_task *self, wd_cond *c, wd_time timeout,
                     const char *fn) {
  if (!self || !COND_OK(c)) return bad_args(self, c, fn);
  wd_lock *lock = c->lock_;
  char label[WD__LABEL_MAX];
  if (lock->owner_ != self) {
    char llabel[WD__LABEL_MAX];
    return wd_fail(self, WD_EPERM,
                   "%s: %s waited on by task %llu '%s', which does not hold "
                   "%s",
                   fn, wd__sync_label(label, "condition", c->name_),
                   (unsigned long long)wd_task_id(self), wd_task_name(self),
                   wd__sync_label(llabel, "lock", lock->name_));
  }
  int rc = wd_cancel_status(self);
  if (rc) return wd__sync_cancelled(self, rc, "condition", c->name_, "wait");
  if (timeout == 0)
    return wd_fail(self, WD_ETIMEDOUT, "%s: not signalled within 0.000 s",
                   wd__sync_label(label, "condition", c->name_));

  /* Both scopes are entered before the lock is released: entering is
   * what may fail (WD_ENOMEM), and then nothing must have happened. */
  wd_cancel_scope guard, timer;
  rc = wd_cancel_scope_enter(self, &guard, NULL);
  if (rc) return rc;
  if (timeout > 0 && (rc = wd_move_on_after(self, &timer, timeout))) {
    wd_cancel_scope_exit(self, &guard, 0);
    return rc;
  }
  /* Counted until the end: a waiter signalled or cancelled still has the
   * lock to take back (which must outlive c) and c's name to read. */
  c->ninside_++;
  wd__lock_release_owned(self, lock);
  rc = wait_signal(self, c);
  bool fired = false;
  if (timeout > 0) {
    int xrc = wd_cancel_scope_exit(self, &timer, rc);
    fired = rc && !xrc; /* our own timeout, swallowed by the exit */
    rc = fired ? WD_ETIMEDOUT : xrc;
  }
  /* From here on nothing may cancel us until the lock is ours again. */
  wd_cancel_scope_set_shield(&guard, true);
  int lrc = wd__lock_reacquire(self, lock);
  wd_cancel_scope_exit(self, &guard, 0);
  if (lrc) /* cannot happen under the shield; never hide it */
    rc = wd_wrap(self, lrc, "%s: re-acquiring the lock failed",
                 wd__sync_label(label, "condition", c->name_));
  else if (fired)
    rc = wd_fail(self, WD_ETIMEDOUT, "%s: not signalled within %.3f s",
                 wd__sync_label(label, "condition", c->name_),
                 wd__secs(timeout));
  else if (wd_is_cancel(rc))
    rc = wd__sync_cancelled(self, rc, "condition", c->name_, "wait");
  c->ninside_--; /* the last time this call reads c */
  return rc;
}

int wd_cond_wait(wd_task *self, wd_cond *c) {
  return cond_wait(self, c, -1, "wd_cond_wait");
}

int wd_cond_wait_for(wd_task *self, wd_cond *c, wd_time timeout) {
  if (timeout < 0) return wd__sync_negative(self, "wd_cond_wait_for", timeout);
  return cond_wait(self, c, timeout, "wd_cond_wait_for");
}
