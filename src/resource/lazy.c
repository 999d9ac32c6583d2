/* Lazy resources: opened on first use, one open for many first users.
 *
 * The first caller that finds the resource missing becomes the opener and
 * runs the open in its own task; callers arriving meanwhile park on the
 * lazy's wait list.  When the open succeeds every waiter wakes and takes
 * the resource; when it fails every waiter wakes with the failure and
 * records it with the open's message, and the lazy goes back to empty, so
 * that the next use tries again.
 *
 * Cancellation must not spread from one caller to the others.  A waiter
 * that is cancelled just leaves the list.  The opener is harder: the open
 * runs on its stack, so its cancellation does cancel that attempt (and the
 * attempt cleans up after itself, see resource.c).  Its failure is then
 * not the open's: the opener hands the baton to the first waiter, which
 * opens again in its own task; the others keep waiting and still get the
 * resource.  Spawning the open into a task of its own would avoid the
 * second attempt, but a lazy has no group to spawn into, and an open that
 * outlived every caller would belong to nobody.
 *
 * The lazy owns the resource the way a scope does (the owner reference),
 * so closing it with wd_resource_close() is safe: the next use finds it
 * closed and opens a new one.
 */
#include <stdio.h>
#include <string.h>

#include "resource-internal.h"

enum { W_WAITING, W_DONE, W_TURN, W_FAILED };

typedef struct lazy_waiter {
  wd_wait w;
  wd_link link;
  int outcome; /* W_* */
  int rc;      /* for W_FAILED */
} lazy_waiter;

static bool waiter_cancel(wd_wait *w) {
  lazy_waiter *lw = wd__container_of(w, lazy_waiter, w);
  wd__list_unlink(&lw->link);
  return true;
}

static void wake_one(lazy_waiter *lw, int outcome, int rc) {
  wd__list_unlink(&lw->link);
  lw->outcome = outcome;
  lw->rc = rc;
  wd_wake(&lw->w, 0);
}

static void wake_all(wd_lazy *l, int outcome, int rc) {
  while (!wd__list_empty(&l->waiters_))
    wake_one(wd__container_of(l->waiters_.next_, lazy_waiter, link), outcome,
             rc);
}

/* Nobody is opening and there is no resource: let the first waiter try. */
static void pass_on(wd_lazy *l) {
  if (!l->opener_ && !l->res_ && !wd__list_empty(&l->waiters_))
    wake_one(wd__container_of(l->waiters_.next_, lazy_waiter, link), W_TURN, 0);
}

int wd_lazy_init_(wd_lazy *l, const wd_resource_type *t, const void *config,
                  const char *name, const char *file, int line) {
  if (!l) return wd_fail(NULL, WD_EINVAL, "wd_lazy_init: NULL lazy");
  int rc = wd__resource_type_check(NULL, t, "wd_lazy_init");
  if (rc) return rc;
  memset(l, 0, sizeof *l);
  l->type_ = t;
  l->config_ = config;
  l->file_ = file;
  l->line_ = line;
  wd__list_init(&l->waiters_);
  wd__name_copy(l->name_, sizeof l->name_, name, t->name);
  return 0;
}

/* Keep the failure's message for the waiters: the top of the error and
 * its first cause ("resource 'db' (pg): open failed: refused"). */
static void keep_message(wd_lazy *l, wd_task *self, int rc) {
  const wd_error *e = self ? wd_task_error(self) : wd_last_error();
  if (e && e->code == rc && e->cause)
    snprintf(l->last_msg_, sizeof l->last_msg_, "%s: %s", e->msg,
             e->cause->msg);
  else if (e && e->code == rc)
    snprintf(l->last_msg_, sizeof l->last_msg_, "%s", e->msg);
  else
    snprintf(l->last_msg_, sizeof l->last_msg_,
             "resource '%s' (%s): open failed: %s", l->name_, l->type_->name,
             wd_strerror(rc));
}

static int open_as_opener(wd_task *self, wd_lazy *l, wd_resource **out) {
  l->opener_ = self ? self : (wd_task *)l; /* any non-NULL mark */
  l->opens_++;
  wd_resource *r;
  int rc = wd_resource_open_(self, l->type_, l->config_, l->name_, &r, l->file_,
                             l->line_);
  if (rc == 0) {
    r->scoped = true; /* the lazy holds the owner's reference */
    if (l->closed_) {
      /* Deinit began while we opened: it waits for us to close this. */
      rc = wd__resource_close_once(self, r, WD_OUTCOME_OK);
      r->owner_gone = true;
      wd_resource_unref(r);
      l->opener_ = NULL;
      wake_all(l, W_DONE, 0);
      if (rc) return rc;
      return wd_fail(self, WD_ECLOSED, "lazy resource '%s' is closed",
                     l->name_);
    }
    l->res_ = r;
    l->last_rc_ = 0;
    l->opener_ = NULL;
    wake_all(l, W_DONE, 0);
    *out = r;
    return 0;
  }
  l->opener_ = NULL;
  if (wd_is_cancel(rc) && wd_cancel_status(self)) {
    /* Our cancellation, not the open's failure: someone else opens. */
    pass_on(l);
    return rc;
  }
  l->last_rc_ = rc;
  keep_message(l, self, rc);
  wake_all(l, W_FAILED, rc);
  return rc;
}

int wd_lazy_get(wd_task *self, wd_lazy *l, wd_resource **out) {
  if (!out) return wd_fail(self, WD_EINVAL, "wd_lazy_get: NULL out");
  *out = NULL;
  if (!l || !l->type_)
    return wd_fail(self, WD_EINVAL, "wd_lazy_get: %s",
                   !l ? "NULL lazy" : "lazy not initialised");
  for (;;) {
    if (l->closed_)
      return wd_fail(self, WD_ECLOSED, "lazy resource '%s' is closed",
                     l->name_);
    wd_resource *r = l->res_;
    if (r) {
      if (r->state == WD_RESOURCE_READY) {
        *out = r;
        return 0;
      }
      /* Closed by someone: forget it, and open a new one. */
      l->res_ = NULL;
      r->owner_gone = true;
      wd_resource_unref(r);
    }
    if (!l->opener_) {
      int rc = wd_cancel_status(self);
      if (rc) {
        pass_on(l); /* we may have been handed the baton */
        return rc;
      }
      return open_as_opener(self, l, out);
    }
    if (!self)
      return wd_fail(NULL, WD_EAGAIN,
                     "lazy resource '%s': being opened by a task", l->name_);
    lazy_waiter lw = {.w = {.what = "lazy open",
                            .name = l->name_,
                            .on_cancel = waiter_cancel},
                      .outcome = W_WAITING};
    wd__list_push_back(&l->waiters_, &lw.link);
    int rc = wd_park(self, &lw.w);
    if (lw.outcome == W_WAITING) {
      /* Cancelled: on_cancel unlinked us, or wd_park never parked. */
      if (lw.link.next_) wd__list_unlink(&lw.link);
      return rc;
    }
    if (lw.outcome == W_FAILED) return wd_fail(self, lw.rc, "%s", l->last_msg_);
    /* W_DONE (take the resource) or W_TURN (open it): look again. */
  }
}

int wd_lazy_deinit(wd_task *self, wd_lazy *l) {
  if (!l || !l->type_) return 0;
  l->closed_ = true;
  if (l->opener_) {
    if (!self)
      return wd_fail(NULL, WD_EBUSY,
                     "lazy resource '%s': being opened by a task", l->name_);
    /* The opener sees closed_ and closes what it opens; wait for it,
     * shielded, since the lazy's memory must not go before it is done. */
    wd_cancel_scope sh;
    bool shielded = wd_cancel_scope_enter(
                        self, &sh, &(wd_cancel_opts){.shield = true}) == 0;
    while (l->opener_) {
      lazy_waiter lw = {.w = {.what = "lazy open", .name = l->name_},
                        .outcome = W_WAITING};
      wd__list_push_back(&l->waiters_, &lw.link);
      int rc = wd_park(self, &lw.w);
      if (lw.link.next_) wd__list_unlink(&lw.link);
      if (rc && lw.outcome == W_WAITING) break;
    }
    if (shielded) wd_cancel_scope_exit(self, &sh, 0);
  }
  wake_all(l, W_DONE, 0); /* they find it closed */
  wd_resource *r = l->res_;
  l->res_ = NULL;
  if (!r) return 0;
  int rc = wd__resource_close_once(self, r, WD_OUTCOME_OK);
  r->owner_gone = true;
  wd_resource_unref(r);
  return rc;
}
