/* Counting semaphores.
 *
 * A count of free permits and a FIFO list of waiter records in the waiting
 * tasks' frames.  The count is 0 whenever a task waits: release hands its
 * permit straight to the first waiter and wakes it, instead of raising the
 * count for whoever runs first, so a task that arrives in between cannot
 * take it (no barging).  Since the hand-off and the wake are one step, a
 * queued waiter is always still blocked, its on_cancel always unlinks it,
 * and a waiter that was handed a permit keeps it even if cancelled before
 * it runs.  Permits have no owner, so nothing happens when a task ends
 * holding one: the library never gives capacity back on anyone's behalf.
 */
#include "sync-internal.h"

static const char sem_what[] = "semaphore";

typedef struct sem_waiter {
  wd_wait w;
  wd_link link; /* in sem->waiters_ while queued; NULLs once unlinked */
  wd_sem *sem;
} sem_waiter;

#define SEM_OK(s) ((s) && (s)->magic_ == WD__SEM_MAGIC)

/* The error paths are out of line and never inlined, so that the hot
 * functions keep small frames: what a cold path needs (registers to save,
 * a buffer for a label) would otherwise be paid for by every call. */
SYNC_COLD static int bad_args(wd_task *self, const wd_sem *sem,
                              const char *fn) {
  return wd__sync_bad(self, sem, "semaphore", fn);
}

SYNC_COLD static int bad_acquire(wd_task *self, const wd_sem *sem) {
  if (!self) return wd_fail(NULL, WD_EINVAL, "wd_sem_acquire: NULL task");
  return bad_args(self, sem, "wd_sem_acquire");
}

SYNC_COLD static int acquire_cancelled(wd_task *self, const wd_sem *sem,
                                       int rc) {
  return wd__sync_cancelled(self, rc, "semaphore", sem->name_, "acquire");
}

int wd_sem_init(wd_sem *sem, const char *name, size_t value) {
  if (!sem) return wd_fail(NULL, WD_EINVAL, "wd_sem_init: NULL semaphore");
  memset(sem, 0, sizeof *sem);
  wd__list_init(&sem->waiters_);
  sem->value_ = value;
  sem->magic_ = WD__SEM_MAGIC;
  wd__sync_name(sem->name_, name);
  return 0;
}

int wd_sem_deinit(wd_sem *sem) {
  if (!sem) return 0;
  if (!SEM_OK(sem)) return bad_args(NULL, sem, "wd_sem_deinit");
  if (sem->nwaiting_ || sem->ninside_) {
    char label[WD__LABEL_MAX], back[48];
    return wd_fail(
        NULL, WD_EBUSY, "wd_sem_deinit: %s has %zu waiting%s",
        wd__sync_label(label, "semaphore", sem->name_), sem->nwaiting_,
        wd__sync_returning(back, sizeof back, sem->ninside_, sem->nwaiting_));
  }
  sem->magic_ = 0;
  return 0;
}

size_t wd_sem_value(const wd_sem *sem) { return sem ? sem->value_ : 0; }

size_t wd_sem_waiting(const wd_sem *sem) { return sem ? sem->nwaiting_ : 0; }

static bool waiter_cancel(wd_wait *w) {
  sem_waiter *sw = wd__container_of(w, sem_waiter, w);
  wd__list_unlink(&sw->link);
  sw->sem->nwaiting_--;
  return true;
}

/* Queue self on sem and wait for a permit to be handed over.  Returns 0
 * with it, or the cancellation code with self back out of the queue.  The
 * record gets only the fields wd_park() reads (task.h: what, name,
 * on_cancel) and ours; the others are the core's to write. */
static inline int wait_permit(wd_task *self, wd_sem *sem) {
  sem_waiter sw;
  sw.w.what = sem_what;
  sw.w.name = wd__sync_wait_name(sem->name_);
  sw.w.on_cancel = waiter_cancel;
  sw.sem = sem;
  wd__list_push_back(&sem->waiters_, &sw.link);
  sem->nwaiting_++;
  int rc = wd_park(self, &sw.w);
  /* A release unlinks before it wakes, and so does a cancellation; only a
   * wd_park() that refused to park leaves the record queued. */
  if (SYNC_UNLIKELY(rc) && sw.link.next_) waiter_cancel(&sw.w);
  return rc;
}

static int wait_permit_fn(wd_task *self, void *obj) {
  return wait_permit(self, obj);
}

/* wd_sem_acquire() when no permit is free: out of line, so that the call
 * that finds a permit does not pay for this frame. */
SYNC_NOINLINE static int acquire_wait(wd_task *self, wd_sem *sem) {
  sem->ninside_++;
  int rc = wait_permit(self, sem); /* wd_park() checks for cancellation */
  if (SYNC_UNLIKELY(rc)) rc = acquire_cancelled(self, sem, rc);
  sem->ninside_--; /* the last time this call reads the semaphore */
  return rc;
}

int wd_sem_acquire(wd_task *self, wd_sem *sem) {
  if (SYNC_UNLIKELY(!self || !SEM_OK(sem))) return bad_acquire(self, sem);
  if (SYNC_UNLIKELY(!sem->value_)) return acquire_wait(self, sem);
  int rc = wd_cancel_status(self);
  if (SYNC_UNLIKELY(rc)) return acquire_cancelled(self, sem, rc);
  sem->value_--;
  return 0;
}

int wd_sem_acquire_for(wd_task *self, wd_sem *sem, wd_time timeout) {
  if (!self || !SEM_OK(sem))
    return self ? bad_args(self, sem, "wd_sem_acquire_for")
                : wd_fail(NULL, WD_EINVAL, "wd_sem_acquire_for: NULL task");
  if (timeout < 0)
    return wd__sync_negative(self, "wd_sem_acquire_for", timeout);
  int rc = wd_cancel_status(self);
  if (rc) return acquire_cancelled(self, sem, rc);
  if (sem->value_) {
    sem->value_--;
    return 0;
  }
  bool fired = true; /* a timeout of 0 has expired already */
  sem->ninside_++;
  if (timeout > 0)
    rc = wd__sync_timed(self, timeout, wait_permit_fn, sem, &fired);
  if (fired) {
    char label[WD__LABEL_MAX];
    rc = wd_fail(self, WD_ETIMEDOUT,
                 "%s: no permit within %.3f s (%zu more waiting)",
                 wd__sync_label(label, "semaphore", sem->name_),
                 wd__secs(timeout), sem->nwaiting_);
  } else if (wd_is_cancel(rc)) {
    rc = acquire_cancelled(self, sem, rc);
  }
  sem->ninside_--; /* the last time this call reads the semaphore */
  return rc;
}

int wd_sem_acquire_try(wd_sem *sem) {
  if (!SEM_OK(sem)) return bad_args(NULL, sem, "wd_sem_acquire_try");
  if (!sem->value_) return WD_EAGAIN; /* expected: no message */
  sem->value_--;
  return 0;
}

SYNC_COLD static int overflow(const wd_sem *sem) {
  char label[WD__LABEL_MAX];
  return wd_fail(NULL, WD_EINVAL, "wd_sem_release: %s would overflow",
                 wd__sync_label(label, "semaphore", sem->name_));
}

int wd_sem_release(wd_sem *sem) {
  if (SYNC_UNLIKELY(!SEM_OK(sem))) return bad_args(NULL, sem, "wd_sem_release");
  wd_link *l = wd__list_pop_front(&sem->waiters_);
  if (SYNC_LIKELY(!l)) {
    if (SYNC_UNLIKELY(sem->value_ == SIZE_MAX)) return overflow(sem);
    sem->value_++;
    return 0;
  }
  sem->nwaiting_--;
  wd_wake(&wd__container_of(l, sem_waiter, link)->w, 0);
  return 0;
}
