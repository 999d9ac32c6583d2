/* warden/cancel.h - cancel scopes and deadlines (Trio's model).
 *
 * A cancel scope is a block of a task that can be cancelled as a unit, by
 * wd_cancel() or when its deadline passes.  Scopes nest, and the scopes of
 * a task spawned into a group nest inside the scope that was current where
 * the group was opened.  Every blocking call is a checkpoint: it fails with
 * WD_ECANCELED, or WD_ETIMEDOUT when the scope that fired did so by its
 * deadline, as soon as an enclosing scope is cancelled - even if the task is
 * already blocked in it.  Cancellation is level-triggered: every later
 * checkpoint inside a cancelled scope fails at once.  A shielded scope
 * ignores the cancellation of the scopes around it (but not its own).
 * "Cancelled" means the operation did not happen.
 *
 *   wd_cancel_scope s;
 *   wd_move_on_after(self, &s, 2 * WD_SEC);
 *   int rc = fetch(self);               // WD_ETIMEDOUT after 2 s
 *   rc = wd_cancel_scope_exit(self, &s, rc);  // 0: the timeout is swallowed
 */
#ifndef WARDEN_CANCEL_H
#define WARDEN_CANCEL_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Private layout.  The first 64 bytes hold what a checkpoint's walk up the
 * scopes and a task's end read, so that a task's root scope costs its
 * record one cache line at those times. */
typedef struct wd_cancel_scope {
  struct wd_cancel_scope *parent_;
  wd_task *owner_;
  wd_link sibling_; /* in parent_->children_ */
  wd_timer_node timer_;
  int cancel_rc_; /* 0, WD_ECANCELED or WD_ETIMEDOUT */
  bool shield_;
  bool entered_;
  bool fail_;
  wd_link children_; /* scopes nested in this one, in any task */
  wd_time deadline_;
  wd_time timeout_;  /* for fail-after messages */
  const char *what_; /* fail-after operation, borrowed */
  const char *why_;  /* static reason once cancelled */
} wd_cancel_scope;

/* Options for wd_cancel_scope_enter(); zero means no deadline, no shield. */
typedef struct wd_cancel_opts {
  wd_time deadline; /* absolute time on the runtime clock; 0 = none */
  wd_time timeout;  /* relative, if deadline is 0; 0 = none */
  bool shield;
  /* If set, a deadline that fires makes wd_cancel_scope_exit() return
   * WD_ETIMEDOUT with a message naming this operation (borrowed: must
   * outlive the scope), instead of swallowing the timeout. */
  const char *fail_what;
} wd_cancel_opts;

/* Enter s in self (s becomes the innermost scope).  opts may be NULL.
 * A deadline already past cancels the scope at once.  s lives in the
 * caller's memory and its state starts here: unlike Trio's, a scope cannot
 * be cancelled or given a deadline before it is entered.  Scopes must be
 * exited in reverse order of entry.  Checkpoint: no.
 * Returns 0, or WD_EINVAL (NULL self/s, negative timeout) or WD_ENOMEM
 * (no room for its timer: the only allocation a scope may make) with s not
 * entered. */
int wd_cancel_scope_enter(wd_task *self, wd_cancel_scope *s,
                          const wd_cancel_opts *opts);

/* Leave s, passing rc, the result of the work done inside it.  If rc is a
 * cancellation that s itself caused (s was cancelled and no scope around it
 * was), it is swallowed and 0 returned - unless the scope was entered with
 * fail_what and fired by its deadline: then WD_ETIMEDOUT is returned with
 * the message "<what>: timed out after <t> s".  Otherwise rc is returned.
 * Checkpoint: no. */
int wd_cancel_scope_exit(wd_task *self, wd_cancel_scope *s, int rc);

/* Cancel s and everything nested in it.  Idempotent; the first reason
 * wins.  Tasks blocked under s wake with WD_ECANCELED.  Checkpoint: no. */
void wd_cancel(wd_cancel_scope *s);

/* wd_cancel() with a reason of your own, shown by
 * wd_cancel_scope_reason() and in dumps ("shutdown (SIGTERM)").  why must
 * be static (it is borrowed for the scope's life); NULL means "cancelled".
 * Checkpoint: no. */
void wd_cancel_why(wd_cancel_scope *s, const char *why);

/* Move s's deadline (0 = none); takes effect at once, also while entered. */
void wd_cancel_scope_set_deadline(wd_cancel_scope *s, wd_time deadline);

/* Shield or unshield s.  Cleanup that must await (rollback, flush) runs in a
 * shielded scope with its own grace deadline. */
void wd_cancel_scope_set_shield(wd_cancel_scope *s, bool shield);

/* True once s has been cancelled (by wd_cancel or its deadline). */
bool wd_cancel_scope_cancelled(const wd_cancel_scope *s);

/* Why s was cancelled ("cancelled", "deadline", "sibling failed"...) or
 * NULL. */
const char *wd_cancel_scope_reason(const wd_cancel_scope *s);

/* Trio's move_on_after: enter s with a timeout that is swallowed at exit. */
static inline int wd_move_on_after(wd_task *self, wd_cancel_scope *s,
                                   wd_time timeout) {
  wd_cancel_opts o = {0, timeout, false, NULL};
  return wd_cancel_scope_enter(self, s, &o);
}

/* Trio's fail_after: enter s with a timeout that wd_cancel_scope_exit()
 * turns into WD_ETIMEDOUT naming `what` (borrowed). */
static inline int wd_fail_after(wd_task *self, wd_cancel_scope *s,
                                wd_time timeout, const char *what) {
  wd_cancel_opts o = {0, timeout, false, what ? what : "operation"};
  return wd_cancel_scope_enter(self, s, &o);
}

/* The earliest deadline that applies to self now: the scopes from the
 * innermost out to the first shield, not yet cancelled; WD_TIME_NEVER when
 * none has one.  Lets an operation refuse work that could not finish in
 * time (a retry does not start a back-off that would end past it).
 * Checkpoint: no. */
wd_time wd_task_deadline(const wd_task *self);

/* Return WD_ECANCELED / WD_ETIMEDOUT if self is cancelled now, else 0,
 * without yielding.  Checkpoint: no (it only looks). */
int wd_cancel_status(const wd_task *self);

#ifdef __cplusplus
}
#endif
#endif
