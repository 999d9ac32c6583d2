/* Limiters: a concurrency cap that counts what it lends.
 *
 * A count of permits out, a cap, and a FIFO list of waiter records in the
 * waiting tasks' frames.  Invariant: tasks wait only while in_use >= limit,
 * so the uncontended acquire is a compare and three increments.  Whenever
 * a permit comes back or the cap rises, serve() grants permits to waiters
 * in order, unlinking and waking each in one step - the same hand-off as
 * the semaphore, so there is no barging, a queued waiter is always still
 * blocked (on_cancel always unlinks it), and a waiter that was granted a
 * permit keeps it even if cancelled before it runs.
 *
 * Statistics cost the fast path nothing but counters: the clock is read
 * only by a task that has to wait, before and after its wait, to add the
 * time it spent queued to wait_total whether or not it got a permit.
 */
#include "sync-internal.h"

static const char limiter_what[] = "limiter";

typedef struct limiter_waiter {
  wd_wait w;
  wd_link link; /* in lim->waiters_ while queued; NULLs once unlinked */
  wd_limiter *lim;
} limiter_waiter;

#define LIMITER_OK(l) ((l) && (l)->magic_ == WD__LIMIT_MAGIC)

static const char *label_of(char *buf, const wd_limiter *lim) {
  return wd__sync_label(buf, "limiter", lim->name_);
}

/* The error paths are out of line and never inlined (SYNC_COLD), so that
 * the hot functions keep small frames. */
SYNC_COLD static int bad_args(wd_task *self, const wd_limiter *lim,
                              const char *fn) {
  if (!self) return wd_fail(NULL, WD_EINVAL, "%s: NULL task", fn);
  return wd__sync_bad(self, lim, "limiter", fn);
}

SYNC_COLD static int acquire_cancelled(wd_task *self, const wd_limiter *lim,
                                       int rc) {
  return wd__sync_cancelled(self, rc, "limiter", lim->name_, "acquire");
}

int wd_limiter_init(wd_limiter *lim, const char *name, size_t limit) {
  if (!lim) return wd_fail(NULL, WD_EINVAL, "wd_limiter_init: NULL limiter");
  if (!limit)
    return wd_fail(NULL, WD_EINVAL, "wd_limiter_init: limiter '%s': limit is 0",
                   name ? name : "");
  memset(lim, 0, sizeof *lim);
  wd__list_init(&lim->waiters_);
  lim->limit_ = limit;
  lim->magic_ = WD__LIMIT_MAGIC;
  wd__sync_name(lim->name_, name);
  return 0;
}

int wd_limiter_deinit(wd_limiter *lim) {
  if (!lim) return 0;
  if (!LIMITER_OK(lim))
    return wd__sync_bad(NULL, lim, "limiter", "wd_limiter_deinit");
  if (lim->in_use_ || lim->nwaiting_ || lim->ninside_) {
    char label[WD__LABEL_MAX], back[48];
    return wd_fail(
        NULL, WD_EBUSY,
        "wd_limiter_deinit: %s has %zu permits out and %zu "
        "waiting%s",
        label_of(label, lim), lim->in_use_, lim->nwaiting_,
        wd__sync_returning(back, sizeof back, lim->ninside_, lim->nwaiting_));
  }
  lim->magic_ = 0;
  return 0;
}

void wd_limiter_stats_get(const wd_limiter *lim, wd_limiter_stats *out) {
  if (!out) return;
  *out = (wd_limiter_stats){0};
  if (!lim) return;
  out->limit = lim->limit_;
  out->in_use = lim->in_use_;
  out->waiting = lim->nwaiting_;
  out->peak = lim->peak_;
  out->acquired = lim->acquired_;
  out->waited = lim->waited_;
  out->gave_up = lim->gave_up_;
  out->refused = lim->refused_;
  out->wait_total = lim->wait_total_;
  out->wait_max = lim->wait_max_;
}

static inline void grant(wd_limiter *lim) {
  if (++lim->in_use_ > lim->peak_) lim->peak_ = lim->in_use_;
  lim->acquired_++;
}

/* Hand free permits to waiters, first come first served. */
static void serve(wd_limiter *lim) {
  while (lim->in_use_ < lim->limit_) {
    wd_link *l = wd__list_pop_front(&lim->waiters_);
    if (!l) return;
    limiter_waiter *lw = wd__container_of(l, limiter_waiter, link);
    lim->nwaiting_--;
    grant(lim);
    wd_wake(&lw->w, 0);
  }
}

static bool waiter_cancel(wd_wait *w) {
  limiter_waiter *lw = wd__container_of(w, limiter_waiter, w);
  wd__list_unlink(&lw->link);
  lw->lim->nwaiting_--;
  return true;
}

/* The record gets only the fields wd_park() reads (task.h: what, name,
 * on_cancel) and ours. */
static int wait_permit(wd_task *self, void *obj) {
  wd_limiter *lim = obj;
  limiter_waiter lw;
  lw.w.what = limiter_what;
  lw.w.name = wd__sync_wait_name(lim->name_);
  lw.w.on_cancel = waiter_cancel;
  lw.lim = lim;
  wd_time t0 = wd_now(self);
  wd__list_push_back(&lim->waiters_, &lw.link);
  lim->nwaiting_++;
  int rc = wd_park(self, &lw.w);
  /* serve() unlinks before it wakes, and so does a cancellation; only a
   * wd_park() that refused to park leaves the record queued. */
  if (SYNC_UNLIKELY(rc) && lw.link.next_) waiter_cancel(&lw.w);
  wd_time waited = wd_now(self) - t0;
  lim->wait_total_ += waited;
  if (waited > lim->wait_max_) lim->wait_max_ = waited;
  if (rc)
    lim->gave_up_++;
  else
    lim->waited_++;
  return rc;
}

/* wd_limiter_acquire() when every permit is out: out of line, so that the
 * call that finds one free does not pay for this frame. */
SYNC_NOINLINE static int acquire_wait(wd_task *self, wd_limiter *lim) {
  lim->ninside_++;
  int rc = wait_permit(self, lim); /* wd_park() checks for cancellation */
  if (SYNC_UNLIKELY(rc)) rc = acquire_cancelled(self, lim, rc);
  lim->ninside_--; /* the last time this call touches the limiter */
  return rc;
}

int wd_limiter_acquire(wd_task *self, wd_limiter *lim) {
  if (SYNC_UNLIKELY(!self || !LIMITER_OK(lim)))
    return bad_args(self, lim, "wd_limiter_acquire");
  if (SYNC_UNLIKELY(lim->in_use_ >= lim->limit_))
    return acquire_wait(self, lim);
  int rc = wd_cancel_status(self);
  if (SYNC_UNLIKELY(rc)) return acquire_cancelled(self, lim, rc);
  grant(lim);
  return 0;
}

int wd_limiter_acquire_for(wd_task *self, wd_limiter *lim, wd_time timeout) {
  if (!self || !LIMITER_OK(lim))
    return bad_args(self, lim, "wd_limiter_acquire_for");
  if (timeout < 0)
    return wd__sync_negative(self, "wd_limiter_acquire_for", timeout);
  int rc = wd_cancel_status(self);
  if (rc) return acquire_cancelled(self, lim, rc);
  if (lim->in_use_ < lim->limit_) {
    grant(lim);
    return 0;
  }
  bool fired = true; /* a timeout of 0 has expired already */
  lim->ninside_++;
  if (timeout > 0)
    rc = wd__sync_timed(self, timeout, wait_permit, lim, &fired);
  else
    lim->refused_++;
  if (fired) {
    char label[WD__LABEL_MAX];
    rc = wd_fail(self, WD_ETIMEDOUT,
                 "%s: no permit within %.3f s (%zu/%zu in use, %zu more "
                 "waiting)",
                 label_of(label, lim), wd__secs(timeout), lim->in_use_,
                 lim->limit_, lim->nwaiting_);
  } else if (wd_is_cancel(rc)) {
    rc = acquire_cancelled(self, lim, rc);
  }
  lim->ninside_--; /* the last time this call touches the limiter */
  return rc;
}

int wd_limiter_acquire_try(wd_limiter *lim) {
  if (!LIMITER_OK(lim))
    return wd__sync_bad(NULL, lim, "limiter", "wd_limiter_acquire_try");
  if (lim->in_use_ >= lim->limit_) {
    lim->refused_++;
    return WD_EAGAIN; /* expected: no message */
  }
  grant(lim);
  return 0;
}

int wd_limiter_release(wd_limiter *lim) {
  if (SYNC_UNLIKELY(!LIMITER_OK(lim)))
    return wd__sync_bad(NULL, lim, "limiter", "wd_limiter_release");
  if (SYNC_UNLIKELY(!lim->in_use_)) {
    char label[WD__LABEL_MAX];
    return wd_fail(NULL, WD_EPERM,
                   "wd_limiter_release: %s has no permit out (released "
                   "more than acquired)",
                   label_of(label, lim));
  }
  lim->in_use_--;
  if (SYNC_UNLIKELY(lim->nwaiting_)) serve(lim);
  return 0;
}

int wd_limiter_set_limit(wd_limiter *lim, size_t limit) {
  if (!LIMITER_OK(lim))
    return wd__sync_bad(NULL, lim, "limiter", "wd_limiter_set_limit");
  if (!limit) {
    char label[WD__LABEL_MAX];
    return wd_fail(NULL, WD_EINVAL, "wd_limiter_set_limit: %s: limit is 0",
                   label_of(label, lim));
  }
  lim->limit_ = limit;
  serve(lim);
  return 0;
}
