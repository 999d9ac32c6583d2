/* warden/sync.h - locks, semaphores, events, conditions, queues, limiters.
 *
 * The synchronisation primitives tasks of one runtime use to coordinate.
 * They are built on wd_park()/wd_wake() (task.h) and share these rules:
 *
 * - Caller memory.  Each object lives in the caller's memory: _init() it
 *   before use, _deinit() it when done.  _deinit() refuses (WD_EBUSY) while
 *   a task waits on the object - also when it was woken (served,
 *   cancelled, timed out, closed) but has not yet returned from its call,
 *   which still reads the object - or, for a lock and a limiter, while it
 *   is held: the object then stays usable.  Using an object that was never
 *   initialised, or was deinitialised, returns WD_EINVAL (a best-effort
 *   check of a private magic number).
 * - Names.  Every object has a name (copied, truncated to
 *   WD_SYNC_NAME_MAX - 1 bytes; NULL means none), used in error messages and
 *   shown by wd_dump() for a task waiting on it: "blocked 1.200 s on lock
 *   'accounts'".
 * - Checkpoints.  Every call that can wait takes the running task `self`
 *   first and is a checkpoint on every call: it fails with WD_ECANCELED /
 *   WD_ETIMEDOUT when self is cancelled, even when it would not have had to
 *   wait (but it does not yield when it need not wait).  Calls that never
 *   wait (release, set, signal, close, the _try twins) are not checkpoints,
 *   and those that need not know the caller take no `self`, so that a
 *   callback posted with wd_runtime_post() can use them too.
 * - FIFO hand-off.  Waiters are served in the order they started waiting.
 *   What a release frees (the lock, a permit, a queue slot or item) is
 *   handed directly to the first waiter, so a task that arrives later
 *   cannot take it first ("barging"): no waiter starves.
 * - Cancelled means it did not happen.  A waiter that is cancelled (or
 *   times out) before it was served leaves the queue with nothing taken,
 *   and the next waiter is served in its place.  A waiter that was served
 *   (handed the lock, a permit or an item) but is cancelled before it runs
 *   again keeps what it was handed: its call returns 0, and its next
 *   checkpoint sees the cancellation.  Nothing handed over is ever lost.
 * - Capacity is never returned early.  The library never releases a
 *   permit (semaphore, limiter) or a lock on its holder's behalf: a permit
 *   held by work that was abandoned stays held until that work releases
 *   it.  The one exception is a task that ends while holding a lock (see
 *   wd_lock).
 * - Timeouts.  Deadlines live on cancel scopes (cancel.h).  The _for()
 *   variants are conveniences that wait under a scope with `timeout` ns
 *   and, when that timeout fires, fail with WD_ETIMEDOUT and a message
 *   that names the object and its state ("lock 'accounts' not acquired
 *   within 2.000 s; held by task 17 'writer' for 3.100 s").  They do not
 *   look at the clock when they need not wait, so a timeout of 0 is a
 *   _try that is also a checkpoint.  A deadline that falls exactly when
 *   the resource is freed counts as expired: the runtime fires due timers
 *   before it runs the task that frees the resource.
 * - Errors.  Every failure also records a detailed error on the calling
 *   task (error.h) whose message names the object.  Bad arguments (NULL,
 *   zero capacity, negative timeout) return WD_EINVAL and never crash.
 *
 * Threads: like everything in a runtime, these objects belong to its
 * thread; they are not thread-safe.
 */
#ifndef WARDEN_SYNC_H
#define WARDEN_SYNC_H

#include "task.h"
#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Room for an object's name, with its terminating NUL. */
#define WD_SYNC_NAME_MAX 32

/* ---- wd_lock: a mutual-exclusion lock ------------------------------------
 *
 * One task holds it at a time; the others wait in FIFO order and the lock
 * is handed to the first of them when the holder releases it.  The lock
 * knows its owner:
 * - acquiring a lock self already holds returns WD_EDEADLK (it is not
 *   recursive, and waiting for yourself would hang);
 * - releasing a lock self does not hold returns WD_EPERM;
 * - a task that ends while holding a lock is a bug: warden prints it on
 *   stderr (once per lock: "warden: task 7 'writer' ended holding lock
 *   'accounts'..."), counts it in wd_lock_stats.abandoned, and hands the
 *   lock to the next waiter, so that the program does not hang.  The data
 *   the lock protects may be half-updated: a new owner can check
 *   `abandoned` (like pthread's robust mutexes, without EOWNERDEAD).
 * - deadlock detection: a task about to wait on a lock whose owner waits,
 *   through a chain of locks, for a lock the task itself holds, gets
 *   WD_EDEADLK at once instead of waiting, with a message that names the
 *   cycle ("deadlock: task 2 'a' waits for lock 'x' held by task 3 'b',
 *   which waits for lock 'y' held by task 2 'a'").  It costs nothing on
 *   the uncontended path and a walk along the chain before waiting; it is
 *   on by default and can be turned off per lock (then the cycle is
 *   broken only by a deadline or by the runtime's deadlock report).  Only
 *   waits on locks are followed: a cycle through a semaphore, a queue or
 *   a condition is not seen.
 *
 *   wd_lock accounts;
 *   wd_lock_init(&accounts, "accounts");
 *   int rc = wd_lock_acquire(self, &accounts);
 *   if (rc) return rc;                  // cancelled, deadlock, ...
 *   transfer(from, to, amount);
 *   wd_lock_release(self, &accounts);
 */
typedef struct wd_lock {
  wd_task *owner_;
  wd_link waiters_;
  wd_hold hold_;  /* recorded on the owner: see wd_task_hold() */
  wd_time since_; /* when the owner got it, see since_kind_ */
  size_t nwaiting_, ntimed_;
  size_t ninside_; /* tasks in a call that waited on it, until it returns */
  uint64_t acquired_, contended_, abandoned_, deadlocks_;
  uint32_t magic_;
  uint8_t since_kind_; /* since_ is: 0 unknown, 1 a lower bound, 2 exact */
  bool no_deadlock_check_;
  bool reported_; /* an abandonment was printed */
  char name_[WD_SYNC_NAME_MAX];
} wd_lock;

/* Statistics of a lock, for monitoring and tests. */
typedef struct wd_lock_stats {
  uint64_t acquired;  /* acquisitions so far */
  uint64_t contended; /* of which had to wait */
  uint64_t abandoned; /* owners that ended holding it */
  uint64_t deadlocks; /* acquisitions refused with WD_EDEADLK for a cycle */
  size_t waiting;     /* tasks waiting now */
  uint64_t owner_id;  /* the owner's task id, 0 when free */
} wd_lock_stats;

/* Make lock a free lock named name.  Checkpoint: no.
 * Returns 0 or WD_EINVAL (NULL lock). */
int wd_lock_init(wd_lock *lock, const char *name);

/* Forget lock.  Checkpoint: no.  Returns 0 (also for NULL), WD_EBUSY when
 * it is held or has waiters, or a woken waiter has not yet returned (then
 * it stays usable), or WD_EINVAL when it is not initialised. */
int wd_lock_deinit(wd_lock *lock);

/* Turn deadlock detection on (the default) or off for waits on lock. */
void wd_lock_set_deadlock_check(wd_lock *lock, bool on);

/* Take lock, waiting in FIFO order while another task holds it.
 * Checkpoint: yes.  Returns 0 (self holds the lock), or without it:
 * WD_ECANCELED / WD_ETIMEDOUT (self was cancelled before it was handed the
 * lock), WD_EDEADLK (self already holds it, or waiting would close a cycle
 * of lock waits: the message names it), WD_EINVAL (NULL self or lock, lock
 * not initialised). */
int wd_lock_acquire(wd_task *self, wd_lock *lock);

/* wd_lock_acquire() that gives up after timeout ns of waiting (through a
 * cancel scope).  Checkpoint: yes.  Returns what wd_lock_acquire() returns,
 * or WD_ETIMEDOUT when this timeout fired, with the message "lock 'accounts'
 * not acquired within 2.000 s; held by task 17 'writer' for 3.100 s" (the
 * time the owner has held it; "for at least" when the owner took it without
 * waiting, as that path does not read the clock), WD_EINVAL for a negative
 * timeout, WD_ENOMEM (no room for the scope's timer). */
int wd_lock_acquire_for(wd_task *self, wd_lock *lock, wd_time timeout);

/* Take lock if it is free, without waiting.  Checkpoint: no.
 * Returns 0, WD_EAGAIN (another task holds it), WD_EDEADLK (self holds
 * it), WD_EINVAL. */
int wd_lock_acquire_try(wd_task *self, wd_lock *lock);

/* Release lock, which self holds: the first waiter, if any, becomes the
 * owner.  Checkpoint: no.  Returns 0, WD_EPERM (self does not hold it: the
 * lock is unchanged), WD_EINVAL. */
int wd_lock_release(wd_task *self, wd_lock *lock);

/* The task holding lock, or NULL.  Borrowed. */
wd_task *wd_lock_owner(const wd_lock *lock);

/* Fill out with lock's statistics (zeros for NULL lock). */
void wd_lock_stats_get(const wd_lock *lock, wd_lock_stats *out);

/* ---- wd_sem: a counting semaphore ----------------------------------------
 *
 * A count of permits: acquire takes one, waiting in FIFO order while there
 * are none; release adds one, handing it straight to the first waiter.
 * Permits have no owner: any task, or a posted callback, may release one
 * (a semaphore can signal).  For a concurrency cap that is counted and
 * checked, see wd_limiter.
 */
typedef struct wd_sem {
  size_t value_; /* free permits; 0 whenever a task waits */
  size_t nwaiting_;
  size_t ninside_; /* tasks in a call that waited on it, until it returns */
  wd_link waiters_;
  uint32_t magic_;
  char name_[WD_SYNC_NAME_MAX];
} wd_sem;

/* Make sem a semaphore with `value` free permits.  Checkpoint: no.
 * Returns 0 or WD_EINVAL (NULL sem). */
int wd_sem_init(wd_sem *sem, const char *name, size_t value);

/* Forget sem.  Returns 0 (also for NULL), WD_EBUSY while tasks wait on it,
 * WD_EINVAL.  Checkpoint: no. */
int wd_sem_deinit(wd_sem *sem);

/* Take a permit, waiting in FIFO order while there is none.
 * Checkpoint: yes.  Returns 0 (one permit taken), or WD_ECANCELED /
 * WD_ETIMEDOUT (none taken), WD_EINVAL. */
int wd_sem_acquire(wd_task *self, wd_sem *sem);

/* wd_sem_acquire() giving up after timeout ns: WD_ETIMEDOUT with a message
 * naming the semaphore; WD_EINVAL for a negative timeout; WD_ENOMEM.
 * Checkpoint: yes. */
int wd_sem_acquire_for(wd_task *self, wd_sem *sem, wd_time timeout);

/* Take a permit if one is free.  Checkpoint: no.
 * Returns 0, WD_EAGAIN (none free), WD_EINVAL. */
int wd_sem_acquire_try(wd_sem *sem);

/* Add a permit: the first waiter gets it, or it becomes free.
 * Checkpoint: no.  Returns 0, WD_EINVAL (also when the count would
 * overflow). */
int wd_sem_release(wd_sem *sem);

/* Free permits now (0 while tasks wait). */
size_t wd_sem_value(const wd_sem *sem);

/* Tasks waiting now. */
size_t wd_sem_waiting(const wd_sem *sem);

/* ---- wd_event: a flag tasks wait for -------------------------------------
 *
 * Set or clear.  Waiting on a set event returns at once; setting it wakes
 * every waiter.  Clearing it does not take back a wake-up already given.
 */
typedef struct wd_event {
  size_t nwaiting_;
  size_t ninside_; /* tasks in a call that waited on it, until it returns */
  wd_link waiters_;
  uint32_t magic_;
  bool set_;
  char name_[WD_SYNC_NAME_MAX];
} wd_event;

/* Make ev a clear event.  Checkpoint: no.  Returns 0 or WD_EINVAL. */
int wd_event_init(wd_event *ev, const char *name);

/* Forget ev.  Returns 0 (also for NULL), WD_EBUSY while tasks wait on it,
 * WD_EINVAL.  Checkpoint: no. */
int wd_event_deinit(wd_event *ev);

/* Set ev and wake every task waiting on it.  Idempotent.  Checkpoint: no.
 * Returns 0 or WD_EINVAL. */
int wd_event_set(wd_event *ev);

/* Clear ev: later waits block until the next set.  Checkpoint: no.
 * Returns 0 or WD_EINVAL. */
int wd_event_clear(wd_event *ev);

/* True if ev is set (false for NULL). */
bool wd_event_is_set(const wd_event *ev);

/* Wait until ev is set.  Checkpoint: yes (also when ev is already set).
 * Returns 0, WD_ECANCELED / WD_ETIMEDOUT, WD_EINVAL. */
int wd_event_wait(wd_task *self, wd_event *ev);

/* wd_event_wait() giving up after timeout ns: WD_ETIMEDOUT with a message
 * naming the event; WD_EINVAL for a negative timeout; WD_ENOMEM.
 * Checkpoint: yes. */
int wd_event_wait_for(wd_task *self, wd_event *ev, wd_time timeout);

/* ---- wd_cond: a condition variable ---------------------------------------
 *
 * Bound to one wd_lock at init.  A task holding the lock waits for a
 * change of the state the lock protects; another changes it and signals.
 * As with pthread and Trio, the wait re-acquires the lock before it
 * returns, whatever it returns: also when cancelled or timed out (the
 * re-acquisition itself cannot be cancelled, since returning without the
 * lock would break the caller's critical section).  Signals are not
 * remembered: one with no waiter does nothing.  A signal that reached a
 * waiter is not lost when that waiter is then cancelled: its wait returns
 * 0.  Always re-check the predicate in a loop:
 *
 *   wd_lock_acquire(self, &mu);
 *   while (!ready && rc == 0) rc = wd_cond_wait(self, &cv);
 *   ...                                  // mu is held here, whatever rc
 *   wd_lock_release(self, &mu);
 *
 * Signalling needs no lock (the runtime is cooperative: nothing runs
 * between a waiter's check of the predicate and its wait).
 */
typedef struct wd_cond {
  wd_lock *lock_;
  size_t nwaiting_;
  size_t ninside_; /* tasks in a call that waited on it, until it returns */
  wd_link waiters_;
  uint32_t magic_;
  char name_[WD_SYNC_NAME_MAX];
} wd_cond;

/* Make c a condition of lock (borrowed: it must outlive c).
 * Checkpoint: no.  Returns 0 or WD_EINVAL (NULL c or lock). */
int wd_cond_init(wd_cond *c, const char *name, wd_lock *lock);

/* Forget c.  Returns 0 (also for NULL), WD_EBUSY while tasks wait on it,
 * WD_EINVAL.  Checkpoint: no. */
int wd_cond_deinit(wd_cond *c);

/* Release c's lock, wait for a signal, re-acquire the lock.
 * Checkpoint: yes.  Returns with the lock held: 0 (signalled), or
 * WD_ECANCELED / WD_ETIMEDOUT (cancelled first).  Returns without having
 * touched the lock: WD_EPERM (self does not hold it), WD_EINVAL, WD_ENOMEM
 * (no room for the scope that protects the re-acquisition). */
int wd_cond_wait(wd_task *self, wd_cond *c);

/* wd_cond_wait() giving up after timeout ns: WD_ETIMEDOUT (lock held
 * again) with a message naming the condition; WD_EINVAL for a negative
 * timeout.  Checkpoint: yes. */
int wd_cond_wait_for(wd_task *self, wd_cond *c, wd_time timeout);

/* Wake the first waiter, if any.  Checkpoint: no.  Returns 0 or WD_EINVAL. */
int wd_cond_signal(wd_cond *c);

/* Wake every waiter.  Checkpoint: no.  Returns 0 or WD_EINVAL. */
int wd_cond_broadcast(wd_cond *c);

/* ---- wd_queue: a bounded FIFO of items between tasks ---------------------
 *
 * Items are fixed-size values, copied in by send and out by recv (send a
 * pointer with item_size = sizeof(void *)).  send waits while the queue is
 * full, recv while it is empty; an item goes straight from a sender to a
 * waiting receiver.  Items leave in the order they were sent, and waiting
 * senders keep their order behind the buffered items.
 *
 * Closing: wd_queue_close() makes every later send fail with WD_ECLOSED
 * and wakes the senders waiting (their items are not enqueued: WD_ECLOSED
 * means the send did not happen).  Receivers drain the items already
 * buffered, then get WD_ECLOSED, as do those already waiting.
 */
typedef struct wd_queue {
  unsigned char *buf_; /* capacity_ * item_size_ bytes, a ring */
  size_t capacity_, item_size_, head_, len_;
  size_t nsenders_, nreceivers_;
  size_t ninside_; /* tasks in a call that waited on it, until it returns */
  wd_link senders_, receivers_;
  uint64_t sent_; /* received = sent_ - len_ */
  uint32_t magic_;
  bool closed_;
  char name_[WD_SYNC_NAME_MAX];
} wd_queue;

typedef struct wd_queue_stats {
  size_t capacity, len;
  size_t senders, receivers; /* waiting now */
  uint64_t sent, received;   /* items so far */
  bool closed;
} wd_queue_stats;

/* Make q an open, empty queue of `capacity` items of item_size bytes; its
 * buffer is allocated here.  Checkpoint: no.  Returns 0, WD_EINVAL (NULL
 * q, zero capacity or item size, or a buffer size that overflows - a
 * negative capacity converted to size_t lands there), WD_ENOMEM. */
int wd_queue_init(wd_queue *q, const char *name, size_t capacity,
                  size_t item_size);

/* Free q's buffer; items still in it are dropped (drain it first if they
 * own memory).  Returns 0 (also for NULL), WD_EBUSY while tasks wait on it
 * (q stays usable), WD_EINVAL.  Checkpoint: no. */
int wd_queue_deinit(wd_queue *q);

/* Copy *item into q, waiting while it is full.  Checkpoint: yes.
 * Returns 0 (sent), or nothing sent: WD_ECLOSED, WD_ECANCELED /
 * WD_ETIMEDOUT, WD_EINVAL. */
int wd_queue_send(wd_task *self, wd_queue *q, const void *item);

/* Copy the oldest item into *out, waiting while q is empty.
 * Checkpoint: yes.  Returns 0, or nothing taken and *out untouched:
 * WD_ECLOSED (q is closed and drained), WD_ECANCELED / WD_ETIMEDOUT,
 * WD_EINVAL. */
int wd_queue_recv(wd_task *self, wd_queue *q, void *out);

/* send without waiting.  Checkpoint: no.  Returns 0, WD_EAGAIN (full),
 * WD_ECLOSED, WD_EINVAL. */
int wd_queue_send_try(wd_queue *q, const void *item);

/* recv without waiting.  Checkpoint: no.  Returns 0, WD_EAGAIN (empty),
 * WD_ECLOSED (closed and drained), WD_EINVAL. */
int wd_queue_recv_try(wd_queue *q, void *out);

/* Close q (see above).  Idempotent.  Checkpoint: no.
 * Returns 0 or WD_EINVAL. */
int wd_queue_close(wd_queue *q);

/* Items buffered now. */
size_t wd_queue_len(const wd_queue *q);

void wd_queue_stats_get(const wd_queue *q, wd_queue_stats *out);

/* ---- wd_limiter: a concurrency cap with statistics -----------------------
 *
 * At most `limit` permits are out at once; acquire waits in FIFO order for
 * one.  Unlike a semaphore, it counts what it lends: releasing more
 * permits than were acquired is WD_EPERM, and deinitialising it with
 * permits out is WD_EBUSY.  A permit may be released by a task other than
 * the one that acquired it, or by a posted callback: work handed to
 * another task or thread keeps the permit until it has really finished
 * (capacity is never returned early).
 *
 *   wd_limiter db;
 *   wd_limiter_init(&db, "db", 8);
 *   if ((rc = wd_limiter_acquire(self, &db)) == 0) {
 *     rc = query(self);
 *     wd_limiter_release(&db);
 *   }
 */
typedef struct wd_limiter {
  size_t limit_, in_use_, peak_, nwaiting_;
  size_t ninside_; /* tasks in a call that waited on it, until it returns */
  wd_link waiters_;
  uint64_t acquired_, waited_, gave_up_, refused_;
  wd_time wait_total_, wait_max_;
  uint32_t magic_;
  char name_[WD_SYNC_NAME_MAX];
} wd_limiter;

typedef struct wd_limiter_stats {
  size_t limit;       /* the cap */
  size_t in_use;      /* permits out now */
  size_t waiting;     /* tasks waiting now */
  size_t peak;        /* most permits out at once */
  uint64_t acquired;  /* permits granted so far */
  uint64_t waited;    /* of which after waiting */
  uint64_t gave_up;   /* waits cancelled or timed out */
  uint64_t refused;   /* _try calls (and zero timeouts) that got none */
  wd_time wait_total; /* time spent waiting, by every waiter */
  wd_time wait_max;   /* the longest wait */
} wd_limiter_stats;

/* Make lim a limiter of `limit` permits.  Checkpoint: no.
 * Returns 0 or WD_EINVAL (NULL lim, zero limit). */
int wd_limiter_init(wd_limiter *lim, const char *name, size_t limit);

/* Forget lim.  Returns 0 (also for NULL), WD_EBUSY while permits are out
 * or tasks wait, WD_EINVAL.  Checkpoint: no. */
int wd_limiter_deinit(wd_limiter *lim);

/* Take a permit, waiting in FIFO order while all are out.
 * Checkpoint: yes.  Returns 0, or none taken: WD_ECANCELED /
 * WD_ETIMEDOUT, WD_EINVAL. */
int wd_limiter_acquire(wd_task *self, wd_limiter *lim);

/* wd_limiter_acquire() giving up after timeout ns: WD_ETIMEDOUT with a
 * message naming the limiter and its state ("limiter 'db': no permit
 * within 0.500 s (8/8 in use, 3 waiting)"); WD_EINVAL for a negative
 * timeout; WD_ENOMEM.  Checkpoint: yes. */
int wd_limiter_acquire_for(wd_task *self, wd_limiter *lim, wd_time timeout);

/* Take a permit if one is free.  Checkpoint: no.
 * Returns 0, WD_EAGAIN (all out, or tasks wait), WD_EINVAL. */
int wd_limiter_acquire_try(wd_limiter *lim);

/* Give back a permit: the first waiter gets it.  Checkpoint: no.
 * Returns 0, WD_EPERM (no permit is out), WD_EINVAL. */
int wd_limiter_release(wd_limiter *lim);

/* Change the cap.  Raising it serves waiters at once; lowering it below
 * the permits out takes none back: new permits are granted once enough
 * are released.  Checkpoint: no.  Returns 0 or WD_EINVAL (zero limit). */
int wd_limiter_set_limit(wd_limiter *lim, size_t limit);

void wd_limiter_stats_get(const wd_limiter *lim, wd_limiter_stats *out);

#ifdef __cplusplus
}
#endif
#endif
