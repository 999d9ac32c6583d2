/* Blocking resources: a synchronous open/close pair run on the thread pool.
 *
 * This is the C form of "convert a synchronous context manager": the
 * resource's open and close call wd_blocking() with the user's functions,
 * and WD_RESOURCE_TYPE-style macros in resource.h generate the adapters.
 * A pool thread cannot be interrupted, so both calls use WD_BLOCKING_WAIT:
 * an open that started runs to its end, and if its caller was cancelled
 * meanwhile the resource layer closes what it built (resource.c).  A close
 * must run even when its task's grace deadline is already past, or the
 * handle it releases would leak: it runs under a shield of its own, with
 * no deadline, so that wd_blocking() does not refuse to start it.  Without
 * memory for that shield it runs on the calling thread instead - slow, but
 * released.  Outside tasks (synchronous use) both run on the caller's
 * thread, which is what synchronous use means.
 *
 * The functions run on another thread and cannot record a detailed error;
 * a failure they return is recorded here with its description.
 */
#include "resource-internal.h"

typedef struct open_call {
  int (*fn)(void *data, const void *config);
  void *data;
  const void *config;
} open_call;

typedef struct close_call {
  int (*fn)(void *data, wd_outcome how);
  void *data;
  wd_outcome how;
  bool ran; /* read after the thread is done */
} close_call;

static int run_open(void *arg) {
  open_call *c = arg;
  return c->fn(c->data, c->config);
}

static int run_close(void *arg) {
  close_call *c = arg;
  c->ran = true;
  return c->fn(c->data, c->how);
}

/* Describe a failure the thread returned, unless wd_blocking described it
 * (no memory) or it is self's own cancellation. */
static int describe(wd_task *self, int rc, const char *what) {
  if (rc >= 0 || (wd_is_cancel(rc) && wd_cancel_status(self))) return rc;
  const wd_error *e = self ? wd_task_error(self) : wd_last_error();
  if (e && e->code == rc) return rc;
  return wd_fail(self, rc, "blocking %s: %s", what, wd_strerror(rc));
}

int wd_resource_open_blocking(wd_task *self,
                              int (*open)(void *data, const void *config),
                              void *data, const void *config) {
  if (!open)
    return wd_fail(self, WD_EINVAL, "wd_resource_open_blocking: NULL open");
  open_call c = {open, data, config};
  int rc =
      self ? wd_blocking(self, run_open, &c, WD_BLOCKING_WAIT) : run_open(&c);
  return describe(self, rc, "open");
}

int wd_resource_close_blocking(wd_task *self,
                               int (*close)(void *data, wd_outcome how),
                               void *data, wd_outcome how) {
  if (!close)
    return wd_fail(self, WD_EINVAL, "wd_resource_close_blocking: NULL close");
  close_call c = {close, data, how, false};
  if (!self) return describe(NULL, run_close(&c), "close");
  wd_cancel_scope sh;
  if (wd_cancel_scope_enter(self, &sh, &(wd_cancel_opts){.shield = true}))
    return describe(self, run_close(&c), "close");
  int rc = wd_blocking(self, run_close, &c, WD_BLOCKING_WAIT);
  if (!c.ran) rc = run_close(&c); /* no memory for the work: do it here */
  rc = wd_cancel_scope_exit(self, &sh, rc);
  return describe(self, rc, "close");
}
