/* Locks: FIFO hand-off, owner tracking, abandonment, deadlock detection.
 *
 * A lock is an owner pointer and a FIFO list of waiter records, each living
 * in its waiting task's frame.  Release never frees a lock that has
 * waiters: it makes the first waiter the owner and wakes it, so a task
 * arriving in between finds the lock taken and queues behind (no barging),
 * and a waiter is never "woken to find it gone".  Because the hand-off and
 * the wake are one step, a queued waiter is always still blocked: its
 * on_cancel can always unlink it, and a waiter that was handed the lock
 * keeps it even if cancelled before it runs (wd_park returns the wake
 * result).
 *
 * The owner records the lock with wd_task_hold(), so that the core tells us
 * when a task ends holding it; we then report it and hand the lock on.
 *
 * Deadlock detection follows the wait-for chain: the lock's owner, the lock
 * that owner is blocked on (recognised by its wd_wait's `what` being this
 * file's lock_what, and container_of back to the waiter record), that
 * lock's owner, and so on.  Each task waits on at most one lock and each
 * lock has one owner, so the chain either ends, reaches self (a cycle we
 * would close: refuse with WD_EDEADLK), or loops among other tasks, which
 * the walk notices with a second pointer moving at half speed.
 *
 * The uncontended paths read no clock and allocate nothing.  The clock is
 * read only for timed waiters' messages: when a timed waiter queues on a
 * lock whose owner's start is unknown, and at a hand-off while timed
 * waiters are queued.
 */
#include <stdarg.h>

#include "sync-internal.h"

static const char lock_what[] = "lock";

enum { SINCE_UNKNOWN = 0, SINCE_AT_LEAST = 1, SINCE_EXACT = 2 };

typedef struct lock_waiter {
  wd_wait w;
  wd_link link; /* in lock->waiters_ while queued; NULLs once unlinked */
  wd_lock *lock;
  bool timed; /* counted in lock->ntimed_ */
} lock_waiter;

#define LOCK_OK(l) ((l) && (l)->magic_ == WD__LOCK_MAGIC)

static void lock_on_exit(wd_hold *h, wd_task *task);

static const char *label_of(char *buf, const wd_lock *lock) {
  return wd__sync_label(buf, "lock", lock->name_);
}

/* The error paths are out of line and never inlined (SYNC_COLD), so that
 * the hot functions keep small frames. */
SYNC_COLD static int bad_args(wd_task *self, const wd_lock *lock,
                              const char *fn) {
  if (!self) return wd_fail(NULL, WD_EINVAL, "%s: NULL task", fn);
  return wd__sync_bad(self, lock, "lock", fn);
}

SYNC_COLD static int acquire_cancelled(wd_task *self, const wd_lock *lock,
                                       int rc) {
  return wd__sync_cancelled(self, rc, "lock", lock->name_, "acquire");
}

int wd_lock_init(wd_lock *lock, const char *name) {
  if (!lock) return wd_fail(NULL, WD_EINVAL, "wd_lock_init: NULL lock");
  memset(lock, 0, sizeof *lock);
  wd__list_init(&lock->waiters_);
  lock->hold_.on_exit = lock_on_exit;
  lock->magic_ = WD__LOCK_MAGIC;
  wd__sync_name(lock->name_, name);
  return 0;
}

int wd_lock_deinit(wd_lock *lock) {
  if (!lock) return 0;
  if (lock->magic_ != WD__LOCK_MAGIC)
    return wd__sync_bad(NULL, lock, "lock", "wd_lock_deinit");
  if (lock->owner_ || lock->nwaiting_ || lock->ninside_) {
    char label[WD__LABEL_MAX], back[48];
    const char *more =
        wd__sync_returning(back, sizeof back, lock->ninside_, lock->nwaiting_);
    if (!lock->owner_)
      return wd_fail(NULL, WD_EBUSY,
                     "wd_lock_deinit: %s is free (%zu waiting%s)",
                     label_of(label, lock), lock->nwaiting_, more);
    return wd_fail(NULL, WD_EBUSY,
                   "wd_lock_deinit: %s is held by task %llu '%s' "
                   "(%zu waiting%s)",
                   label_of(label, lock),
                   (unsigned long long)wd_task_id(lock->owner_),
                   wd_task_name(lock->owner_), lock->nwaiting_, more);
  }
  lock->magic_ = 0;
  return 0;
}

void wd_lock_set_deadlock_check(wd_lock *lock, bool on) {
  if (lock) lock->no_deadlock_check_ = !on;
}

wd_task *wd_lock_owner(const wd_lock *lock) {
  return lock ? lock->owner_ : NULL;
}

void wd_lock_stats_get(const wd_lock *lock, wd_lock_stats *out) {
  if (!out) return;
  *out = (wd_lock_stats){0};
  if (!lock) return;
  out->acquired = lock->acquired_ + lock->contended_;
  out->contended = lock->contended_;
  out->abandoned = lock->abandoned_;
  out->deadlocks = lock->deadlocks_;
  out->waiting = lock->nwaiting_;
  out->owner_id = wd_task_id(lock->owner_);
}

/* ---- taking and handing on ---------------------------------------------- */

/* Counting: acquired_ counts the acquisitions that did not wait and
 * contended_ those that did, so that a hand-off bumps one counter;
 * wd_lock_stats.acquired is their sum. */
static inline void take(wd_task *self, wd_lock *lock) {
  lock->owner_ = self;
  lock->acquired_++;
  lock->since_kind_ = SINCE_UNKNOWN;
  wd_task_hold(self, &lock->hold_);
}

/* Timed waiters are queued: their timeout messages will say how long the
 * new owner has held the lock, so note when it got it.  Out of line: the
 * clock is read on no other hand-off. */
SYNC_NOINLINE static void note_since(wd_lock *lock, wd_task *t) {
  lock->since_ = wd_now(t);
  lock->since_kind_ = SINCE_EXACT;
}

/* The owner is gone (released or ended) and lw is the first waiter: it
 * becomes the owner and is woken.  The new owner records its hold itself
 * when it runs (it cannot end before that). */
static inline void hand_to(wd_lock *lock, lock_waiter *lw) {
  wd_task *t = lw->w.task;
  lock->nwaiting_--;
  lock->owner_ = t;
  lock->contended_++;
  lock->since_kind_ = SINCE_UNKNOWN;
  if (SYNC_UNLIKELY(lock->ntimed_)) {
    if (lw->timed) lock->ntimed_--;
    if (lock->ntimed_) note_since(lock, t);
  }
  wd_wake(&lw->w, 0);
}

/* The owner is gone: hand the lock to the first waiter, or free it. */
static void hand_off(wd_lock *lock) {
  wd_link *l = wd__list_pop_front(&lock->waiters_);
  if (!l) {
    lock->owner_ = NULL;
    lock->since_kind_ = SINCE_UNKNOWN;
    return;
  }
  hand_to(lock, wd__container_of(l, lock_waiter, link));
}

void wd__lock_release_owned(wd_task *self, wd_lock *lock) {
  wd_task_unhold(self, &lock->hold_);
  hand_off(lock);
}

/* Called by the core when a task ends with the lock still held (the hold
 * is already unlinked).  Reported once per lock, so that a loop of
 * crashing workers does not flood stderr; every case is counted. */
static void lock_on_exit(wd_hold *h, wd_task *task) {
  wd_lock *lock = wd__container_of(h, wd_lock, hold_);
  lock->abandoned_++;
  if (!lock->reported_) {
    char label[WD__LABEL_MAX];
    lock->reported_ = true;
    fprintf(stderr,
            "warden: task %llu '%s' ended holding %s; the lock goes to the "
            "next waiter, and the data it protects may be inconsistent "
            "(reported once per lock; see wd_lock_stats.abandoned)\n",
            (unsigned long long)wd_task_id(task), wd_task_name(task),
            label_of(label, lock));
  }
  hand_off(lock);
}

/* ---- deadlock detection ------------------------------------------------- */

/* The lock t is blocked on, or NULL if t is not waiting for a lock. */
static wd_lock *lock_awaited(const wd_task *t) {
  const wd_wait *w = wd_task_wait(t);
  if (!w || w->what != lock_what) return NULL;
  return wd__container_of(w, lock_waiter, w)->lock;
}

/* The task t waits for through a lock, or NULL. */
static wd_task *waits_for(const wd_task *t) {
  wd_lock *l = lock_awaited(t);
  return l ? l->owner_ : NULL;
}

typedef struct msgbuf {
  char text[640];
  size_t len;
} msgbuf;

__attribute__((format(printf, 2, 3))) static void put(msgbuf *m,
                                                      const char *fmt, ...) {
  if (m->len >= sizeof m->text) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(m->text + m->len, sizeof m->text - m->len, fmt, ap);
  va_end(ap);
  if (n > 0) m->len += (size_t)n;
  if (m->len >= sizeof m->text) /* truncated: say so */
    memcpy(m->text + sizeof m->text - 4, "...", 4);
}

static void put_task(msgbuf *m, const wd_task *t) {
  put(m, "task %llu '%s'", (unsigned long long)wd_task_id(t), wd_task_name(t));
}

/* Would self waiting on lock close a cycle of lock waits?  If so, record
 * WD_EDEADLK with the cycle spelled out. */
SYNC_COLD static int check_cycle(wd_task *self, wd_lock *lock) {
  /* Floyd's walk: `fast` takes two steps for each of `slow`'s; meeting
   * means a loop that does not go through self. */
  wd_task *fast = lock->owner_, *slow = fast;
  for (;;) {
    for (int i = 0; i < 2; i++) {
      if (fast == self) goto cycle;
      fast = waits_for(fast);
      if (!fast) return 0;
    }
    if (fast == self) goto cycle;
    slow = waits_for(slow);
    if (slow == fast) return 0;
  }
cycle:;
  msgbuf m = {.len = 0};
  char label[WD__LABEL_MAX];
  put_task(&m, self);
  put(&m, " waits for %s held by ", label_of(label, lock));
  put_task(&m, lock->owner_);
  for (wd_task *t = lock->owner_; t != self;) {
    wd_lock *l = lock_awaited(t);
    put(&m, ", which waits for %s held by ", label_of(label, l));
    put_task(&m, l->owner_);
    t = l->owner_;
  }
  lock->deadlocks_++;
  return wd_fail(self, WD_EDEADLK, "%s: deadlock: %s", label_of(label, lock),
                 m.text);
}

/* ---- waiting ------------------------------------------------------------ */

static bool waiter_cancel(wd_wait *w) {
  lock_waiter *lw = wd__container_of(w, lock_waiter, w);
  wd_lock *lock = lw->lock;
  wd__list_unlink(&lw->link);
  lock->nwaiting_--;
  if (lw->timed) lock->ntimed_--;
  return true;
}

/* A timed waiter queues: its message may need to say since when the
 * owner has held the lock. */
SYNC_NOINLINE static void queue_timed(wd_task *self, wd_lock *lock) {
  lock->ntimed_++;
  if (lock->since_kind_ == SINCE_UNKNOWN) {
    lock->since_ = wd_now(self);
    lock->since_kind_ = SINCE_AT_LEAST;
  }
}

/* Queue self on lock, which another task holds, and wait to be handed it.
 * Returns 0 with the lock held, or the cancellation code with self back
 * out of the queue.  The record gets only the fields wd_park() reads
 * (task.h: what, name, on_cancel) and ours. */
static inline int wait_turn(wd_task *self, wd_lock *lock, bool timed) {
  lock_waiter lw;
  lw.w.what = lock_what;
  lw.w.name = wd__sync_wait_name(lock->name_);
  lw.w.on_cancel = waiter_cancel;
  lw.lock = lock;
  lw.timed = timed;
  wd__list_push_back(&lock->waiters_, &lw.link);
  lock->nwaiting_++;
  if (timed) queue_timed(self, lock);
  int rc = wd_park(self, &lw.w);
  if (SYNC_UNLIKELY(rc)) {
    /* A hand-off unlinks before it wakes, and so does a cancellation;
     * only a wd_park() that refused to park leaves the record queued. */
    if (lw.link.next_) waiter_cancel(&lw.w);
    return rc;
  }
  wd_task_hold(self, &lock->hold_); /* hand_off made self the owner */
  return 0;
}

static int wait_timed(wd_task *self, void *lock) {
  return wait_turn(self, lock, true);
}

SYNC_COLD static int recursive(wd_task *self, wd_lock *lock) {
  char label[WD__LABEL_MAX];
  return wd_fail(self, WD_EDEADLK,
                 "%s: already held by this task (task %llu '%s'); locks "
                 "are not recursive",
                 label_of(label, lock), (unsigned long long)wd_task_id(self),
                 wd_task_name(self));
}

/* The lock is held: refuse to wait when that would never end.  A cycle
 * needs the owner to be waiting on a lock itself: that one test is
 * inline, the walk (with its message buffer) is not. */
static inline int refuse(wd_task *self, wd_lock *lock) {
  wd_task *owner = lock->owner_;
  if (SYNC_UNLIKELY(owner == self)) return recursive(self, lock);
  if (SYNC_LIKELY(!lock_awaited(owner)) || lock->no_deadlock_check_) return 0;
  return check_cycle(self, lock);
}

/* wd_lock_acquire() when the lock is held: out of line, so that taking a
 * free lock does not pay for this frame. */
SYNC_NOINLINE static int acquire_wait(wd_task *self, wd_lock *lock) {
  int rc = refuse(self, lock);
  if (rc) return rc;
  lock->ninside_++;
  rc = wait_turn(self, lock, false); /* wd_park() checks for cancellation */
  if (SYNC_UNLIKELY(rc)) rc = acquire_cancelled(self, lock, rc);
  lock->ninside_--; /* the last time this call reads the lock */
  return rc;
}

int wd_lock_acquire(wd_task *self, wd_lock *lock) {
  if (SYNC_UNLIKELY(!self || !LOCK_OK(lock)))
    return bad_args(self, lock, "wd_lock_acquire");
  if (SYNC_UNLIKELY(lock->owner_)) return acquire_wait(self, lock);
  int rc = wd_cancel_status(self);
  if (SYNC_UNLIKELY(rc)) return acquire_cancelled(self, lock, rc);
  take(self, lock);
  return 0;
}

SYNC_COLD static int timed_out(wd_task *self, wd_lock *lock, wd_time timeout) {
  char label[WD__LABEL_MAX];
  msgbuf m = {.len = 0};
  put(&m, "%s not acquired within %.3f s", label_of(label, lock),
      wd__secs(timeout));
  if (lock->owner_) {
    put(&m, "; held by ");
    put_task(&m, lock->owner_);
    wd_time held = wd_now(self) - lock->since_;
    if (lock->since_kind_ == SINCE_EXACT)
      put(&m, " for %.3f s", wd__secs(held));
    else if (lock->since_kind_ == SINCE_AT_LEAST)
      put(&m, " for at least %.3f s", wd__secs(held));
    if (lock->nwaiting_) put(&m, ", %zu more waiting", lock->nwaiting_);
  }
  return wd_fail(self, WD_ETIMEDOUT, "%s", m.text);
}

int wd_lock_acquire_for(wd_task *self, wd_lock *lock, wd_time timeout) {
  if (!self || !LOCK_OK(lock))
    return bad_args(self, lock, "wd_lock_acquire_for");
  if (timeout < 0)
    return wd__sync_negative(self, "wd_lock_acquire_for", timeout);
  int rc = wd_cancel_status(self);
  if (rc) return acquire_cancelled(self, lock, rc);
  if (!lock->owner_) {
    take(self, lock);
    return 0;
  }
  rc = refuse(self, lock);
  if (rc) return rc;
  bool fired = true; /* a timeout of 0 has expired already */
  lock->ninside_++;
  if (timeout > 0) rc = wd__sync_timed(self, timeout, wait_timed, lock, &fired);
  if (fired)
    rc = timed_out(self, lock, timeout);
  else if (wd_is_cancel(rc))
    rc = acquire_cancelled(self, lock, rc);
  lock->ninside_--; /* the last time this call reads the lock */
  return rc;
}

int wd_lock_acquire_try(wd_task *self, wd_lock *lock) {
  if (!self || !LOCK_OK(lock))
    return bad_args(self, lock, "wd_lock_acquire_try");
  if (!lock->owner_) {
    take(self, lock);
    return 0;
  }
  if (lock->owner_ == self) return recursive(self, lock);
  return WD_EAGAIN; /* the expected outcome: no message to format */
}

SYNC_COLD static int not_owner(wd_task *self, wd_lock *lock) {
  char label[WD__LABEL_MAX];
  if (!lock->owner_)
    return wd_fail(self, WD_EPERM,
                   "%s: released by task %llu '%s', but it is not held",
                   label_of(label, lock), (unsigned long long)wd_task_id(self),
                   wd_task_name(self));
  return wd_fail(self, WD_EPERM,
                 "%s: released by task %llu '%s', but held by task %llu '%s'",
                 label_of(label, lock), (unsigned long long)wd_task_id(self),
                 wd_task_name(self),
                 (unsigned long long)wd_task_id(lock->owner_),
                 wd_task_name(lock->owner_));
}

int wd_lock_release(wd_task *self, wd_lock *lock) {
  if (SYNC_UNLIKELY(!self || !LOCK_OK(lock)))
    return bad_args(self, lock, "wd_lock_release");
  if (SYNC_UNLIKELY(lock->owner_ != self)) return not_owner(self, lock);
  wd_task_unhold(self, &lock->hold_);
  wd_link *l = wd__list_pop_front(&lock->waiters_);
  if (SYNC_LIKELY(!l)) {
    lock->owner_ = NULL;
    return 0;
  }
  hand_to(lock, wd__container_of(l, lock_waiter, link));
  return 0;
}

int wd__lock_reacquire(wd_task *self, wd_lock *lock) {
  if (!lock->owner_) {
    take(self, lock);
    return 0;
  }
  lock->ninside_++;
  int rc = wait_turn(self, lock, false);
  lock->ninside_--;
  return rc;
}
