/* warden/task.h - tasks: identity, yielding, sleeping, results, parking.
 *
 * A task is a stackful coroutine that lives in a group (see group.h).  Every
 * function that can suspend takes the running task, `self`, first, and says
 * "Checkpoint: yes": it honours cancel scopes (see cancel.h).
 *
 * wd_park()/wd_wake() are the low-level blocking protocol the rest of
 * warden (locks, queues, pools) is built on, and are public so that users
 * can build their own primitives the same way.
 */
#ifndef WARDEN_TASK_H
#define WARDEN_TASK_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where a spawner reads a task's outcome.  Lives in the spawner's memory,
 * which must outlive the task (the group's exit guarantees that when the
 * handle lives in the group owner's frame).  While the task runs, `task`
 * points to it; when it ends, `done` is set, `status` and `result` hold its
 * outcome and `task` is NULL. */
typedef struct wd_handle {
  wd_task *task;
  uint64_t id;
  int status;
  void *result;
  bool done;
  struct wd_wait *joiner_;
  void *pending_; /* while queued behind a group's max_running */
} wd_handle;

/* A blocked task's record, embedded in the waiter node of a primitive.
 * Fill `what`, `name` (shown by wd_dump: "waits on lock 'accounts'") and
 * `on_cancel` before wd_park(). */
typedef struct wd_wait {
  wd_task *task;    /* set by wd_park() */
  const char *what; /* static: "lock", "sleep", "event"... */
  const char *name; /* the object's name, borrowed, may be NULL */
  /* Called when the parked task is cancelled: unlink the wait from the
   * primitive's queue and return true, and the task wakes with the
   * cancellation code; or return false when the operation can no longer be
   * undone, and the task stays parked until wd_wake (its next checkpoint
   * then sees the cancellation).  NULL makes the wait uncancellable. */
  bool (*on_cancel)(struct wd_wait *w);
  int result_;
  uint64_t since_ms_; /* set by wd_park(): for the dump's "blocked n s" */
} wd_wait;

/* The running task of this thread, or NULL outside tasks. */
wd_task *wd_self(void);

/* A task's id: unique in its runtime, never reused, the root's is 1. */
uint64_t wd_task_id(const wd_task *task);

/* A task's name (never NULL; "task-<id>" when none was given). */
const char *wd_task_name(const wd_task *task);

/* Rename self (copied, truncated to WD_TASK_NAME_MAX - 1 bytes). */
void wd_task_set_name(wd_task *self, const char *name);

/* Store a value the spawner reads from its handle after the task ends. */
void wd_task_set_result(wd_task *self, void *result);

/* The runtime self runs in. */
wd_runtime *wd_task_runtime(const wd_task *self);

/* Let every other ready task run once, then continue.
 * Checkpoint: yes.  Returns 0, or WD_ECANCELED / WD_ETIMEDOUT without
 * yielding when self is cancelled. */
int wd_yield(wd_task *self);

/* Sleep for `duration` ns (a negative duration is WD_EINVAL; 0 yields).
 * The duration counts from this call, which reads the clock: unlike a
 * libuv timer, which counts from the loop's time cached at the start of
 * its iteration, a sleep never ends early because of work done earlier in
 * that iteration.  Checkpoint: yes.  Returns 0, WD_ECANCELED, WD_ETIMEDOUT or
 * WD_EINVAL. */
int wd_sleep(wd_task *self, wd_time duration);

/* Sleep until the runtime clock reaches `deadline`; a deadline already past
 * yields.  Checkpoint: yes.  Returns 0, WD_ECANCELED or WD_ETIMEDOUT. */
int wd_sleep_until(wd_task *self, wd_time deadline);

/* Wait for the task behind h to end.  Checkpoint: yes.  Returns 0 when it
 * has ended, or its spawn failed or was cancelled before it started (read
 * h->status and h->result), WD_ECANCELED / WD_ETIMEDOUT if self was
 * cancelled first (the task keeps running), WD_EINVAL for a NULL or unused
 * handle, WD_EBUSY if another task already joins it. */
int wd_join(wd_task *self, wd_handle *h);

/* Cancel the task behind h (its own root scope).  A task still queued
 * behind its group's max_running never starts: its handle is done at once
 * with WD_ECANCELED.  A no-op once the task ended. */
void wd_handle_cancel(wd_handle *h);

/* Block self until wd_wake(w, rc) and return rc, or until self is
 * cancelled: then w->on_cancel(w) runs and WD_ECANCELED / WD_ETIMEDOUT is
 * returned.  Fails at once, without parking, if self is already cancelled.
 * Checkpoint: yes. */
int wd_park(wd_task *self, wd_wait *w);

/* Make the task parked on w ready, its wd_park() returning result.  A no-op
 * if w is not parked (already woken or cancelled).  Call it from tasks or
 * callbacks of the same runtime.  Checkpoint: no. */
void wd_wake(wd_wait *w, int result);

/* The wait record the task is parked on (see wd_park()), or NULL when it
 * is not blocked.  Lets a primitive follow who waits on what - a lock's
 * deadlock check walks owner -> the lock it waits on -> its owner.
 * Borrowed: valid until the task wakes.  Checkpoint: no. */
const wd_wait *wd_task_wait(const wd_task *task);

/* Something a task holds that must not outlive its holding (a lock): the
 * core calls on_exit(h, task) if the task ends with h still held, after
 * the task's body returned and before its handle is done.  on_exit must
 * not block; h is already unlinked when it runs.  Embedded in the held
 * object; fields are private but on_exit. */
typedef struct wd_hold {
  wd_link link_;
  void (*on_exit)(struct wd_hold *h, wd_task *task);
} wd_hold;

/* Record that self holds h (set h->on_exit first).  Checkpoint: no. */
void wd_task_hold(wd_task *self, wd_hold *h);
/* Forget a hold recorded by wd_task_hold (self must be its holder).
 * Checkpoint: no. */
void wd_task_unhold(wd_task *self, wd_hold *h);

/* Task locals: a key is a static descriptor; values are borrowed pointers.
 * A spawned task starts with its spawner's values; setting a value in a
 * task never changes what another task sees. */
typedef struct wd_local_key {
  const char *name;
} wd_local_key;

/* The value of key in self, or NULL when unset.  Checkpoint: no. */
void *wd_local_get(const wd_task *self, const wd_local_key *key);

/* Set key to value in self (NULL unsets).  Returns 0, WD_EINVAL or
 * WD_ENOMEM (then the old value stays).  Checkpoint: no. */
int wd_local_set(wd_task *self, const wd_local_key *key, void *value);

#ifdef __cplusplus
}
#endif
#endif
