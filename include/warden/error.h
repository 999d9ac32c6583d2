/* warden/error.h - error codes and detailed errors.
 *
 * Every warden function that can fail returns an int: 0 on success or a
 * negative code.  OS and libuv errors pass through as -errno (libuv's UV_E*
 * codes are the same numbers); warden's own codes live in their own range
 * below WD_ERRBASE.  Alongside the code, each task keeps its last error in
 * detail: a formatted message saying what failed and why, the origin
 * file:line, an optional cause, and for task groups the list of child errors.
 */
#ifndef WARDEN_ERROR_H
#define WARDEN_ERROR_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WD_ERRBASE (-30000)

/* X(name, value, message).  The OS-backed codes come first; warden's own
 * codes follow in their own range.  This one table generates the enum,
 * wd_strerror() and wd_err_name(). */
#define WD_ERRNO_MAP(X)                                                        \
  X(ECANCELED, -ECANCELED, "operation canceled")                               \
  X(ETIMEDOUT, -ETIMEDOUT, "deadline exceeded")                                \
  X(ENOMEM, -ENOMEM, "out of memory")                                          \
  X(EINVAL, -EINVAL, "invalid argument")                                       \
  X(EAGAIN, -EAGAIN, "resource temporarily unavailable")                       \
  X(EPERM, -EPERM, "operation not permitted")                                  \
  X(EDEADLK, -EDEADLK, "deadlock would occur")                                 \
  X(EBUSY, -EBUSY, "resource busy")                                            \
  X(ENOSYS, -ENOSYS, "not supported")                                          \
  X(ECLOSED, WD_ERRBASE - 1, "object is closed")                               \
  X(EGROUP, WD_ERRBASE - 2, "one or more tasks of a group failed")             \
  X(EINIT, WD_ERRBASE - 3, "initialisation failed")                            \
  X(ECIRCUITOPEN, WD_ERRBASE - 4, "circuit breaker is open")                   \
  X(ENOTASK, WD_ERRBASE - 5, "not called from a warden task")                  \
  X(EABANDONED, WD_ERRBASE - 6, "work abandoned by its caller")

typedef enum wd_errno {
#define WD_ERR_ENUM_(name, value, msg) WD_##name = (value),
  WD_ERRNO_MAP(WD_ERR_ENUM_)
#undef WD_ERR_ENUM_
} wd_errno;

/* A static description of code.  Knows warden's codes, errno values and
 * libuv's codes; never returns NULL. */
const char *wd_strerror(int code);

/* The symbolic name of code ("WD_ECANCELED", "UV_ECONNREFUSED"...). */
const char *wd_err_name(int code);

/* True for the codes a checkpoint returns when a cancel scope fired. */
static inline int wd_is_cancel(int code) {
  return code == WD_ECANCELED || code == WD_ETIMEDOUT;
}

#define WD_TASK_NAME_MAX 32

/* A detailed error.  Owned by the task that recorded it (see
 * wd_task_error()); valid until that task records or clears its next error. */
typedef struct wd_error {
  int code;
  const char *msg;  /* never NULL */
  const char *file; /* origin, may be NULL */
  int line;
  uint64_t task_id; /* the task that failed, for group children */
  char task_name[WD_TASK_NAME_MAX];
  struct wd_error *cause;     /* what led to this error, or NULL */
  struct wd_error **children; /* for WD_EGROUP: each failed child */
  size_t nchildren;
  size_t nsecondary; /* cleanup errors counted while this one stood */
  /* The cleanup errors whose detail was kept (at most nsecondary: a detail
   * that could not be kept is only counted). */
  struct wd_error **secondary;
  size_t nsecondary_kept;
  char *owned_msg_; /* private */
} wd_error;

/* Record a detailed error on self (or on the calling thread when self is NULL
 * and no task is running) and return code, so that a caller can write
 * `return wd_fail(self, WD_EINVAL, "pool '%s': max_size is 0", name);`.
 * A message that cannot be allocated falls back to wd_strerror(code).
 * Checkpoint: no. */
#define wd_fail(self, code, ...)                                               \
  wd_error_set_((self), __FILE__, __LINE__, (code), __VA_ARGS__)

/* Like wd_fail(), but the error recorded so far becomes the new error's
 * cause: `return wd_wrap(self, rc, "loading config '%s'", path);`. */
#define wd_wrap(self, code, ...)                                               \
  wd_error_wrap_((self), __FILE__, __LINE__, (code), __VA_ARGS__)

int wd_error_set_(wd_task *self, const char *file, int line, int code,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int wd_error_wrap_(wd_task *self, const char *file, int line, int code,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The last error recorded by task (NULL for none).  Borrowed. */
const wd_error *wd_task_error(const wd_task *task);

/* The last error recorded by the running task, or by this thread outside
 * any task (NULL for none).  Borrowed. */
const wd_error *wd_last_error(void);

/* Forget self's last error (the calling thread's when self is NULL). */
void wd_error_clear(wd_task *self);

/* Take self's current error out of it (the calling thread's when self is
 * NULL and no task runs): the caller owns the result, and self has no
 * error.  For code that runs cleanups after a failure and must not let a
 * cleanup's wd_fail() replace the error that caused it.  Returns NULL when
 * there is none (or its detail could not be moved for want of memory; the
 * slot is empty either way).  Checkpoint: no. */
wd_error *wd_error_detach(wd_task *self);

/* Make e self's current error (NULL clears), freeing the one recorded
 * since.  Takes ownership of e.  Checkpoint: no. */
void wd_error_restore(wd_task *self, wd_error *e);

/* Count sec as a cleanup error that happened while e stood, and keep its
 * detail in e->secondary.  Takes ownership of sec (may be NULL: counted
 * only).  Returns 0, or WD_ENOMEM when the detail could not be kept (sec
 * is freed, the count still grows). */
int wd_error_add_secondary(wd_error *e, wd_error *sec);

/* Free a detached error and everything it holds.  NULL is a no-op. */
void wd_error_free(wd_error *e);

/* Write err and its whole chain (causes, group children) as indented text.
 * Returns the length the full text needs, like snprintf; buf may be NULL
 * when n is 0. */
size_t wd_error_format(const wd_error *err, char *buf, size_t n);

/* wd_error_format() to a stream. */
void wd_error_print(FILE *out, const wd_error *err);

#ifdef __cplusplus
}
#endif
#endif
