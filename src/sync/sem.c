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
  wd_link link;
  wd_sem *sem;
  bool queued;
} sem_waiter;

#define SEM_OK(s) ((s) && (s)->magic_ == WD__SEM_MAGIC)

__attribute__((cold)) static int bad_args(wd_task *self, const wd_sem *sem,
                                          const char *fn) {
  return wd__sync_bad(self, sem, "semaphore", fn);
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
  sw->queued = false;
  sw->sem->nwaiting_--;
  return true;
}

/* Wait for a permit to be handed over.  Returns 0 with it, or the
 * cancellation code with self back out of the queue. */
static int wait_permit(wd_task *self, void *obj) {
  wd_sem *sem = obj;
  sem_waiter sw = {.w = {.what = sem_what,
                         .name = wd__sync_wait_name(sem->name_),
                         .on_cancel = waiter_cancel},
                   .sem = sem,
                   .queued = true};
  wd__list_push_back(&sem->waiters_, &sw.link);
  sem->nwaiting_++;
  int rc = wd_park(self, &sw.w);
  if (sw.queued) waiter_cancel(&sw.w); /* wd_park refused to park */
  return rc;
}

int wd_sem_acquire(wd_task *self, wd_sem *sem) {
  if (SYNC_UNLIKELY(!self || !SEM_OK(sem)))
    return self ? bad_args(self, sem, "wd_sem_acquire")
                : wd_fail(NULL, WD_EINVAL, "wd_sem_acquire: NULL task");
  int rc;
  if (SYNC_LIKELY(sem->value_)) {
    rc = wd_cancel_status(self);
    if (SYNC_UNLIKELY(rc))
      return wd__sync_cancelled(self, rc, "semaphore", sem->name_, "acquire");
    sem->value_--;
    return 0;
  }
  sem->ninside_++;
  rc = wait_permit(self, sem); /* wd_park() checks for cancellation */
  if (rc) rc = wd__sync_cancelled(self, rc, "semaphore", sem->name_, "acquire");
  sem->ninside_--; /* the last time this call reads the semaphore */
  return rc;
}

int wd_sem_acquire_for(wd_task *self, wd_sem *sem, wd_time timeout) {
  if (!self || !SEM_OK(sem))
    return self ? bad_args(self, sem, "wd_sem_acquire_for")
                : wd_fail(NULL, WD_EINVAL, "wd_sem_acquire_for: NULL task");
  if (timeout < 0)
    return wd__sync_negative(self, "wd_sem_acquire_for", timeout);
  int rc = wd_cancel_status(self);
  if (rc)
    return wd__sync_cancelled(self, rc, "semaphore", sem->name_, "acquire");
  if (sem->value_) {
    sem->value_--;
    return 0;
  }
  bool fired = true; /* a timeout of 0 has expired already */
  sem->ninside_++;
  if (timeout > 0) rc = wd__sync_timed(self, timeout, wait_permit, sem, &fired);
  if (fired) {
    char label[WD__LABEL_MAX];
    rc = wd_fail(self, WD_ETIMEDOUT,
                 "%s: no permit within %.3f s (%zu more waiting)",
                 wd__sync_label(label, "semaphore", sem->name_),
                 wd__secs(timeout), sem->nwaiting_);
  } else if (wd_is_cancel(rc)) {
    rc = wd__sync_cancelled(self, rc, "semaphore", sem->name_, "acquire");
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

int wd_sem_release(wd_sem *sem) {
  if (SYNC_UNLIKELY(!SEM_OK(sem))) return bad_args(NULL, sem, "wd_sem_release");
  wd_link *l = wd__list_pop_front(&sem->waiters_);
  if (SYNC_LIKELY(!l)) {
    if (SYNC_UNLIKELY(sem->value_ == SIZE_MAX)) {
      char label[WD__LABEL_MAX];
      return wd_fail(NULL, WD_EINVAL, "wd_sem_release: %s would overflow",
                     wd__sync_label(label, "semaphore", sem->name_));
    }
    sem->value_++;
    return 0;
  }
  sem_waiter *sw = wd__container_of(l, sem_waiter, link);
  sw->queued = false;
  sem->nwaiting_--;
  wd_wake(&sw->w, 0);
  return 0;
}
