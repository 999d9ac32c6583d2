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

/* Options of wd_blocking_with(); zero is wd_blocking()'s WD_BLOCKING_WAIT. */
typedef struct wd_blocking_opts {
  wd_blocking_policy policy;
  /* With WD_BLOCKING_ABANDON: called once on the runtime's thread, outside
   * any task, when an abandoned fn has really returned, with its result.
   * This is where capacity the work held (a limiter permit, a pool item)
   * is given back: never earlier.  Not called when fn returned before its
   * caller was cancelled, nor when the call was withdrawn before a thread
   * took it (then fn never runs).  Must not block; may wake tasks. */
  void (*on_abandoned_done)(void *done_arg, int rc);
  void *done_arg;
} wd_blocking_opts;

/* wd_blocking() with options (NULL = defaults).  Same contract; the
 * runtime does not end before an abandoned call's on_abandoned_done ran. */
int wd_blocking_with(wd_task *self, int (*fn)(void *arg), void *arg,
                     const wd_blocking_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
