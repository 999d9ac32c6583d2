/* Timeout around one call.
 *
 * Deadlines live on cancel scopes, so a timeout is a fail-after scope
 * around the call: the core's wd_cancel_scope_exit() already turns the
 * scope's own deadline into WD_ETIMEDOUT with "<what>: timed out after
 * <t> s", and passes through every other result - a call that finished
 * despite the deadline, its own failures, and the cancellation of a scope
 * around the caller (which must keep unwinding to where it belongs).  This
 * file adds the argument checks and the entry checkpoint, so that the call
 * is a checkpoint even when fn has none.
 */
#include "warden.h"

int wd_timeout_call(wd_task *self, wd_time timeout, const char *what,
                    wd_task_fn fn, void *arg) {
  if (!what) what = "operation";
  if (!self || !fn || timeout < 0)
    return wd_fail(self, WD_EINVAL, "timeout '%s': %s", what,
                   !self ? "NULL task"
                   : !fn ? "NULL function"
                         : "negative timeout");
  int rc = wd_cancel_status(self);
  if (rc) return rc;
  if (timeout == WD_TIME_NEVER) return fn(self, arg);
  if (timeout == 0)
    return wd_fail(self, WD_ETIMEDOUT, "%s: timed out after 0.000 s", what);
  wd_cancel_scope s;
  rc = wd_fail_after(self, &s, timeout, what);
  if (rc) return rc;
  rc = fn(self, arg);
  return wd_cancel_scope_exit(self, &s, rc);
}
