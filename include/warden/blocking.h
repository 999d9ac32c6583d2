/* warden/blocking.h - running synchronous code on libuv's thread pool.
 *
 * wd_blocking() is how a synchronous call (SQLite, a blocking driver,
 * getaddrinfo) becomes a checkpoint: the function runs on a pool thread
 * while the task is parked.  A thread cannot be interrupted, so each call
 * states what cancellation does to it.
 */
#ifndef WARDEN_BLOCKING_H
#define WARDEN_BLOCKING_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum wd_blocking_policy {
  /* Cancellation waits for fn to return, and wd_blocking() returns fn's
   * result: the work happened.  The next checkpoint sees the cancel. */
  WD_BLOCKING_WAIT = 0,
  /* Cancellation returns WD_ECANCELED at once.  fn finishes on its own, its
   * result is discarded; until then it still occupies a pool thread and is
   * shown as abandoned by wd_dump().  fn and arg must not depend on the
   * caller's stack. */
  WD_BLOCKING_ABANDON = 1,
} wd_blocking_policy;

/* Run fn(arg) on the thread pool; fn must not call warden.
 * Checkpoint: yes.  Returns fn's result, or WD_ECANCELED / WD_ETIMEDOUT if
 * self was cancelled before fn started (then fn never runs) or, with
 * WD_BLOCKING_ABANDON, while it ran; WD_EINVAL for NULL self or fn or a bad
 * policy; WD_ENOMEM. */
int wd_blocking(wd_task *self, int (*fn)(void *arg), void *arg,
                wd_blocking_policy policy);

#ifdef __cplusplus
}
#endif
#endif
