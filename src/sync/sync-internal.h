/* What the files of src/sync share: magic numbers, names, message labels,
 * the cancellation message, and the timed-wait helper behind every _for()
 * variant.  Private to src/sync/; never installed.
 */
#ifndef WD_SYNC_INTERNAL_H
#define WD_SYNC_INTERNAL_H

#include <stdio.h>
#include <string.h>

#include "../util/list.h"
#include "../util/mem.h"
#include "warden.h"

#define SYNC_LIKELY(x) __builtin_expect(!!(x), 1)
#define SYNC_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* An error or rarely taken path, kept out of the hot function's body: a
 * path merely marked unlikely still shares the caller's frame, and its
 * needs (saved registers, a label buffer) are paid on every call. */
#define SYNC_COLD __attribute__((cold, noinline))
/* A slow path the hot function reaches by a (tail) call. */
#define SYNC_NOINLINE __attribute__((noinline))
/* SYNC_COLD for a helper of this header, which a file may not use. */
#define SYNC_COLD_SHARED __attribute__((cold, noinline, unused))

/* One magic number per type, so that an object of one kind passed where
 * another is expected is caught too. */
#define WD__LOCK_MAGIC 0x6c6f636bu  /* "lock" */
#define WD__SEM_MAGIC 0x73656d61u   /* "sema" */
#define WD__EVENT_MAGIC 0x65766e74u /* "evnt" */
#define WD__COND_MAGIC 0x636f6e64u  /* "cond" */
#define WD__QUEUE_MAGIC 0x71756575u /* "queu" */
#define WD__LIMIT_MAGIC 0x6c696d74u /* "limt" */

/* Room for "limiter '<31 bytes>'" and the like. */
#define WD__LABEL_MAX (WD_SYNC_NAME_MAX + 16)

static inline void wd__sync_name(char *dst, const char *name) {
  if (!name) name = "";
  size_t n = strnlen(name, WD_SYNC_NAME_MAX - 1);
  memcpy(dst, name, n);
  dst[n] = '\0';
}

/* The name a wd_wait shows in wd_dump(): NULL for an unnamed object. */
static inline const char *wd__sync_wait_name(const char *name) {
  return name[0] ? name : NULL;
}

/* "lock 'accounts'", or "lock" for an unnamed one: how messages name an
 * object. */
static inline const char *wd__sync_label(char *buf, const char *kind,
                                         const char *name) {
  if (name[0])
    snprintf(buf, WD__LABEL_MAX, "%s '%s'", kind, name);
  else
    snprintf(buf, WD__LABEL_MAX, "%s", kind);
  return buf;
}

/* A checkpoint that fired: record a message naming the object and what
 * did not happen ("lock 'accounts': acquire cancelled"), return rc. */
SYNC_COLD_SHARED static int wd__sync_cancelled(wd_task *self, int rc,
                                               const char *kind,
                                               const char *name,
                                               const char *op) {
  char label[WD__LABEL_MAX];
  return wd_fail(self, rc, "%s: %s %s", wd__sync_label(label, kind, name), op,
                 rc == WD_ETIMEDOUT ? "stopped by a deadline" : "cancelled");
}

/* An object that is NULL or not initialised. */
SYNC_COLD_SHARED static int wd__sync_bad(wd_task *self, const void *obj,
                                         const char *kind, const char *fn) {
  if (!obj) return wd_fail(self, WD_EINVAL, "%s: NULL %s", fn, kind);
  return wd_fail(self, WD_EINVAL,
                 "%s: %s not initialised (or already deinitialised)", fn, kind);
}

/* Every call that waits counts itself in the object's ninside_ from before
 * it queues until after the last time it reads the object (its message,
 * its statistics), and _deinit() refuses while the count is not 0.  A
 * waiter leaves the queue when it is woken - served, cancelled, timed out
 * or closed - but runs later: without the count, the object could be
 * deinitialised and freed in between, under a task that still reads it.
 * ", 2 returning from a wait" for deinit's message, or "" when none. */
static inline const char *wd__sync_returning(char *buf, size_t size,
                                             size_t inside, size_t waiting) {
  if (inside <= waiting) return "";
  snprintf(buf, size, ", %zu returning from a wait", inside - waiting);
  return buf;
}

SYNC_COLD_SHARED static int wd__sync_negative(wd_task *self, const char *fn,
                                              wd_time timeout) {
  return wd_fail(self, WD_EINVAL, "%s: negative timeout %lld ns", fn,
                 (long long)timeout);
}

/* Run wait(self, obj) inside a cancel scope that fires after timeout ns
 * (> 0).  Returns wait's result; when it failed because this scope's
 * timeout fired, returns WD_ETIMEDOUT and sets *fired, for the caller to
 * record its own message.  Other cancellations pass through unchanged.
 * WD_ENOMEM when the scope has no room for its timer. */
static inline int wd__sync_timed(wd_task *self, wd_time timeout,
                                 int (*wait)(wd_task *self, void *obj),
                                 void *obj, bool *fired) {
  wd_cancel_scope s;
  *fired = false;
  int rc = wd_move_on_after(self, &s, timeout);
  if (rc) return rc;
  rc = wait(self, obj);
  int xrc = wd_cancel_scope_exit(self, &s, rc);
  if (rc && !xrc) {
    *fired = true;
    return WD_ETIMEDOUT;
  }
  return xrc;
}

static inline double wd__secs(wd_time t) { return (double)t / (double)WD_SEC; }

/* Between cond.c and lock.c: the lock's owner-side operations that a
 * condition wait needs. */

/* Release lock, which self holds, to its next waiter. */
void wd__lock_release_owned(wd_task *self, wd_lock *lock);

/* Take lock again after a condition wait: waits without the deadlock check
 * (it must not return without the lock).  The caller has made the wait
 * uncancellable with a shielded scope. */
int wd__lock_reacquire(wd_task *self, wd_lock *lock);

#endif
