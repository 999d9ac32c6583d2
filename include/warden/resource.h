/* warden/resource.h - resource types, their lifecycle, lazy resources,
 * blocking resources, and the per-runtime registry of live resources.
 *
 * A resource type is a static vtable: a name, the size of an instance's
 * state, and the functions that open it, close it and check its health.
 * warden allocates the state (zeroed), moves each instance through
 *
 *   opening -> ready -> closing -> closed        (or opening -> failed)
 *
 * and keeps the promise the whole library is about: a resource opened is
 * closed, once, on every path.
 *
 *   - An open that fails leaves nothing to close: the caller gets no
 *     resource, and close is not called (open releases what it built
 *     before it returns an error; a wd_scope inside open does that).
 *   - An open that is cancelled did not happen: if open returns 0 but the
 *     task was cancelled meanwhile, warden closes what it built (told
 *     WD_OUTCOME_CANCEL) and returns the cancellation.
 *   - Close runs at most once however many paths ask for it, shielded from
 *     the caller's cancellation, within the type's grace deadline.  Its
 *     failure is counted and recorded, but never hides the error that
 *     caused the close: that error stays the result, and the close's is
 *     attached to it as a secondary error (see scope.h).
 *
 *   static int conn_open(wd_task *self, void *data, const void *config);
 *   static int conn_close(wd_task *self, void *data, wd_outcome how);
 *   static const wd_resource_type conn_type = {
 *       .name = "conn", .size = sizeof(struct conn),
 *       .open = conn_open, .close = conn_close};
 *
 *   wd_resource *r;
 *   int rc = wd_resource_open(self, &conn_type, &cfg, "primary", &r);
 *   if (rc) return rc;
 *   rc = use(self, wd_resource_data(r));
 *   return wd_resource_close(self, r, rc);  // rc, or the close's error
 *
 * Usually a resource lives on a scope (scope.h), which closes it in
 * reverse order with the others.  Every live resource is in its runtime's
 * registry: counters per type, a record per instance, a wd_dump() section,
 * and a leak report on stderr when the runtime ends with any still open.
 */
#ifndef WARDEN_RESOURCE_H
#define WARDEN_RESOURCE_H

#include "error.h"
#include "runtime.h"
#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How the work around a resource ended; close is told, so that a
 * transaction can commit on WD_OUTCOME_OK and roll back otherwise. */
typedef enum wd_outcome {
  WD_OUTCOME_OK = 0,     /* normally */
  WD_OUTCOME_ERROR = 1,  /* by an error */
  WD_OUTCOME_CANCEL = 2, /* by cancellation (WD_ECANCELED, WD_ETIMEDOUT) */
} wd_outcome;

/* The outcome a result code stands for. */
static inline wd_outcome wd_outcome_of(int rc) {
  return rc == 0            ? WD_OUTCOME_OK
         : wd_is_cancel(rc) ? WD_OUTCOME_CANCEL
                            : WD_OUTCOME_ERROR;
}

/* "ok", "error" or "cancel". */
const char *wd_outcome_name(wd_outcome how);

typedef enum wd_resource_state {
  WD_RESOURCE_OPENING = 0,
  WD_RESOURCE_READY = 1,
  WD_RESOURCE_CLOSING = 2,
  WD_RESOURCE_CLOSED = 3,
  WD_RESOURCE_FAILED = 4, /* the open failed or was cancelled */
} wd_resource_state;

/* "opening", "ready", "closing", "closed" or "failed". */
const char *wd_resource_state_name(wd_resource_state s);

/* The grace deadline of a close when its type gives none. */
#define WD_RESOURCE_GRACE_DEFAULT (5 * WD_SEC)

#define WD_RESOURCE_NAME_MAX 32

/* ---- figures --------------------------------------------------------------
 * Numbers a resource reports about itself (a pool's items in use, its
 * acquires, its wait times), for the monitor's exports (monitor.h) to
 * show beside each live instance of its type.  A type that has some fills
 * them in its `figures` function; warden never interprets them. */

typedef enum wd_figure_kind {
  WD_FIGURE_GAUGE = 0,   /* a value that goes up and down: `value` */
  WD_FIGURE_COUNTER = 1, /* a count that only grows: `value` */
  /* A distribution: `count` samples adding up to `sum`, and its
   * quantiles `p50`, `p90`, `p99` (ignored while count is 0). */
  WD_FIGURE_SUMMARY = 2,
} wd_figure_kind;

/* One figure.  name is an identifier ([a-zA-Z_][a-zA-Z0-9_]*), unique
 * within the instance, in the unit its suffix says (`wait_seconds`); a
 * counter's name has no `_total` (Prometheus export adds it).  name and
 * help are static strings (help may be NULL).  A figure with another name
 * is left out of the exports. */
typedef struct wd_figure {
  const char *name;
  const char *help;
  wd_figure_kind kind;
  double value;         /* gauge and counter */
  uint64_t count;       /* summary */
  double sum;           /* summary */
  double p50, p90, p99; /* summary */
} wd_figure;

/* Room the monitor gives a type's figures function: figures beyond it are
 * not shown. */
#define WD_FIGURES_MAX 32

/* A resource type: a static vtable, shared by every runtime.  Each
 * function gets the running task (NULL in synchronous use, see
 * wd_resource_open), the instance's state (`size` bytes, zeroed before
 * open) and, for open, the config pointer given to wd_resource_open. */
typedef struct wd_resource_type {
  const char *name; /* required: shown in errors, dumps and counters */
  size_t size;      /* bytes of state per instance; must be > 0 */
  /* Build the resource in data.  Returns 0 or an error after releasing
   * whatever it built (data is then freed without a close).  May block.
   * NULL: nothing to do. */
  int (*open)(wd_task *self, void *data, const void *config);
  /* Release what open built.  Runs once, shielded from the caller's
   * cancellation, within close_grace: its checkpoints fail with
   * WD_ETIMEDOUT once the grace is over, and it must still release what it
   * can without blocking.  Returns 0 or an error (counted; the resource is
   * closed either way).  NULL: nothing to release. */
  int (*close)(wd_task *self, void *data, wd_outcome how);
  /* Check that a ready resource still works: 0 or an error.  May block.
   * NULL: the type has no check.  Run by wd_resource_health(). */
  int (*health)(wd_task *self, void *data);
  /* The grace deadline of close: 0 = WD_RESOURCE_GRACE_DEFAULT,
   * WD_TIME_NEVER = none. */
  wd_time close_grace;
  /* Fill out[0..cap) with the instance's figures and return how many were
   * filled (at most cap).  Called by the monitor's exports for each ready
   * instance, in the runtime's thread: it must not block, allocate, fail
   * or change the instance.  NULL: the type has no figures. */
  size_t (*figures)(void *data, wd_figure *out, size_t cap);
} wd_resource_type;

typedef struct wd_resource wd_resource;

/* Open a resource of type t: allocate its state, run t->open(self, data,
 * config), and record it in the runtime's registry with `name` (copied,
 * truncated to WD_RESOURCE_NAME_MAX - 1 bytes; NULL means t->name) and the
 * caller's file:line as its creation site.  config is borrowed: it must
 * outlive the resource.  The caller owns *out until wd_resource_close()
 * (or a scope it is pushed on does).
 * self may be NULL for synchronous use outside tasks: then open and close
 * get a NULL task and must not block.
 * Checkpoint: yes.  Returns 0 and stores the resource in *out; or, with
 * *out NULL and nothing left open: WD_EINVAL (NULL t or out, a type
 * without name or with size 0), WD_ENOMEM, WD_ECANCELED / WD_ETIMEDOUT,
 * or open's error, recorded as "resource '<name>' (<type>): open failed"
 * with open's own error as its cause. */
#define wd_resource_open(self, t, config, name, out)                           \
  wd_resource_open_((self), (t), (config), (name), (out), __FILE__, __LINE__)
int wd_resource_open_(wd_task *self, const wd_resource_type *t,
                      const void *config, const char *name, wd_resource **out,
                      const char *file, int line);

/* Close r at the end of work whose result is rc, telling close how that
 * work ended (wd_outcome_of(rc)), and give up the caller's ownership.
 * Close runs once: closing a resource that is closed (or that another task
 * is closing: this waits for it) does nothing more.  A resource owned by a
 * scope stays allocated until the scope ends, so it may be closed early
 * and then again by the scope; otherwise r is freed here and must not be
 * used again.  r NULL is a no-op that returns rc.
 * Checkpoint: no (shielded: it never fails for cancellation, and waits at
 * most the type's grace).
 * Returns rc when rc < 0: a close failure is then attached to rc's error
 * as a secondary error and counted.  Otherwise the close's error
 * ("resource '<name>' (<type>): close failed", WD_ETIMEDOUT when the grace
 * ran out) or 0. */
int wd_resource_close(wd_task *self, wd_resource *r, int rc);

/* wd_resource_close() with a grace of the caller's instead of the type's
 * (0 = the type's): the bound a shutdown gives each resource.  A close
 * that outruns it is cut at its next checkpoint and reported as
 * WD_ETIMEDOUT.  Returns as wd_resource_close(), or WD_EINVAL for a
 * negative grace (r untouched). */
int wd_resource_close_within(wd_task *self, wd_resource *r, int rc,
                             wd_time grace);

/* Run the type's health check on a ready resource.  Checkpoint: yes.
 * Returns the check's result, WD_ENOSYS when the type has none,
 * WD_ECLOSED when r is not ready, WD_EINVAL for a NULL r. */
int wd_resource_health(wd_task *self, wd_resource *r);

/* Keep r's memory valid (not r open) until the matching unref, for code
 * that looks at resources it does not own (a health-check runner, an
 * iterator that must block).  Pair them exactly; the registry frees what
 * is still open when the runtime ends, references or not.
 * Checkpoint: no. */
void wd_resource_ref(wd_resource *r);
void wd_resource_unref(wd_resource *r);

/* Accessors; r must be valid.  Checkpoint: no. */
void *wd_resource_data(const wd_resource *r); /* the state open filled */
const char *wd_resource_name(const wd_resource *r);
const wd_resource_type *wd_resource_type_of(const wd_resource *r);
wd_resource_state wd_resource_state_of(const wd_resource *r);
uint64_t wd_resource_id(const wd_resource *r); /* unique in its runtime */

/* ---- lazy resources ------------------------------------------------------
 * A resource opened on first use and shared by every later use: the first
 * callers share one open (single flight), a failed open is reported to
 * every caller waiting for it and retried by the next use.  A caller that
 * is cancelled while it waits leaves the wait and nothing else changes; if
 * it was the one running the open, that attempt is cancelled (and cleaned
 * up) and the next waiter opens again in its own task, so the others still
 * get the resource.  Lives in the caller's memory; belongs to one runtime:
 * deinit it before that runtime ends, or its resource is reported as a
 * leak and freed with the registry (the lazy must not be used again).
 *
 *   static wd_lazy db;   // wd_lazy_init(&db, &pg_type, &cfg, "db") once
 *   wd_resource *r;
 *   int rc = wd_lazy_get(self, &db, &r);
 */
typedef struct wd_lazy {
  const wd_resource_type *type_;
  const void *config_;
  wd_resource *res_; /* ready, or NULL */
  wd_task *opener_;  /* the task running the open, or NULL */
  wd_link waiters_;  /* tasks waiting for that open */
  const char *file_; /* where wd_lazy_init was called */
  int line_;
  int last_rc_;    /* the last open's failure, 0 = none */
  uint64_t opens_; /* open attempts started */
  bool closed_;
  char name_[WD_RESOURCE_NAME_MAX];
  char last_msg_[160]; /* the last failure's message, for the waiters */
} wd_lazy;

/* Set l up to open a resource of type t with config (borrowed) named name
 * (copied; NULL: t->name) on first use.  Opens nothing, allocates nothing.
 * Checkpoint: no.  Returns 0 or WD_EINVAL (NULL l or t, a type without
 * name or with size 0). */
#define wd_lazy_init(l, t, config, name)                                       \
  wd_lazy_init_((l), (t), (config), (name), __FILE__, __LINE__)
int wd_lazy_init_(wd_lazy *l, const wd_resource_type *t, const void *config,
                  const char *name, const char *file, int line);

/* The resource, opened now if it is not open yet (see above).  The
 * resource stays l's: borrow it until wd_lazy_deinit().
 * self may be NULL outside tasks: it cannot wait, so an open running in a
 * task makes it return WD_EAGAIN.
 * Checkpoint: yes.  Returns 0 and stores the resource in *out; or, with
 * *out NULL: WD_EINVAL, WD_ECLOSED (l is being deinitialised),
 * WD_ECANCELED / WD_ETIMEDOUT (self was cancelled), WD_EAGAIN, or the
 * open's error (each waiter records it with the open's message). */
int wd_lazy_get(wd_task *self, wd_lazy *l, wd_resource **out);

/* Close l's resource if it was opened (waiting for an open in flight
 * first) and refuse further gets with WD_ECLOSED.  Idempotent.
 * Checkpoint: no (like wd_resource_close).  Returns the close's result. */
int wd_lazy_deinit(wd_task *self, wd_lazy *l);

/* Open attempts l has started: 1 after any number of concurrent first
 * uses that succeeded. */
static inline uint64_t wd_lazy_opens(const wd_lazy *l) { return l->opens_; }

/* ---- blocking resources --------------------------------------------------
 * Turning a synchronous open/close pair into a resource whose open and
 * close run on libuv's thread pool (wd_blocking), so that a blocking
 * driver does not stall the runtime.  A pool thread cannot be interrupted:
 * both calls use WD_BLOCKING_WAIT.  A cancelled open that still completed
 * on its thread is closed again (the rule above); a close runs to its end
 * even past its grace deadline.  In synchronous use (self NULL) the
 * functions run on the calling thread. */

/* Run open(data, config) on the thread pool.  open must not call warden.
 * Checkpoint: yes.  Returns open's result (recorded with its description
 * when it is an error), WD_ECANCELED / WD_ETIMEDOUT if self was cancelled
 * before it started (then it never ran), or WD_ENOMEM. */
int wd_resource_open_blocking(wd_task *self,
                              int (*open)(void *data, const void *config),
                              void *data, const void *config);

/* Run close(data, how) on the thread pool and wait for it, whatever
 * happens to self meanwhile.  Checkpoint: no.  Returns close's result. */
int wd_resource_close_blocking(wd_task *self,
                               int (*close)(void *data, wd_outcome how),
                               void *data, wd_outcome how);

/* Define `static const wd_resource_type var`, named `name`, whose
 * instances are a T opened by `int open_fn(wd_task *, T *, const void *)`
 * and closed by `int close_fn(wd_task *, T *, wd_outcome)`:
 *
 *   WD_RESOURCE_TYPE(conn_type, "conn", struct conn, conn_open, conn_close);
 */
#define WD_RESOURCE_TYPE(var, name, T, open_fn, close_fn)                      \
  static int var##_open_(wd_task *self, void *data, const void *config) {      \
    return open_fn(self, (T *)data, config);                                   \
  }                                                                            \
  static int var##_close_(wd_task *self, void *data, wd_outcome how) {         \
    return close_fn(self, (T *)data, how);                                     \
  }                                                                            \
  static const wd_resource_type var = {                                        \
      (name), sizeof(T), var##_open_, var##_close_, NULL, 0, NULL}

/* The same from a synchronous pair run on the thread pool:
 * `int open_fn(T *, const void *config)`, `int close_fn(T *, wd_outcome)`.
 *
 *   WD_BLOCKING_RESOURCE_TYPE(db_type, "sqlite", struct db, db_open,
 *                             db_close);
 */
#define WD_BLOCKING_RESOURCE_TYPE(var, name, T, open_fn, close_fn)             \
  static int var##_sopen_(void *data, const void *config) {                    \
    return open_fn((T *)data, config);                                         \
  }                                                                            \
  static int var##_sclose_(void *data, wd_outcome how) {                       \
    return close_fn((T *)data, how);                                           \
  }                                                                            \
  static int var##_open_(wd_task *self, void *data, const void *config) {      \
    return wd_resource_open_blocking(self, var##_sopen_, data, config);        \
  }                                                                            \
  static int var##_close_(wd_task *self, void *data, wd_outcome how) {         \
    return wd_resource_close_blocking(self, var##_sclose_, data, how);         \
  }                                                                            \
  static const wd_resource_type var = {                                        \
      (name), sizeof(T), var##_open_, var##_close_, NULL, 0, NULL}

/* ---- the registry --------------------------------------------------------
 * Each runtime keeps its live resources (opening, ready or closing) and
 * counters per type.  These functions read the registry of rt (NULL: the
 * current runtime) from rt's thread.  The monitor builds on them. */

/* Counters of one type (or of all types) in one runtime.  Every open
 * started is `created`; it ends in exactly one of `active` (still live),
 * `closed` (opened, then closed) or `open_errors` (failed or cancelled):
 * created == active + closed + open_errors. */
typedef struct wd_resource_stats {
  uint64_t created;
  uint64_t closed;
  uint64_t active;
  uint64_t open_errors;
  uint64_t close_errors; /* closes that reported an error */
} wd_resource_stats;

/* Fill *out with the counters of type t (NULL: the sum of every type) in
 * rt.  Zeros when rt has opened none.  Checkpoint: no. */
void wd_resource_stats_get(wd_runtime *rt, const wd_resource_type *t,
                           wd_resource_stats *out);

/* A live resource, as an iterator sees it.  Pointers are borrowed: valid
 * during the callback only (take a wd_resource_ref to keep `resource`). */
typedef struct wd_resource_info {
  wd_resource *resource;
  const wd_resource_type *type;
  const char *name;
  wd_resource_state state;
  uint64_t id;
  const char *file; /* creation site */
  int line;
  wd_time created; /* on the runtime clock */
  wd_time age;
} wd_resource_info;

/* Call fn for every live resource of rt, oldest first, until fn returns
 * nonzero.  fn must not block, open or close resources.  Returns the number
 * of calls.  Checkpoint: no. */
size_t wd_resource_each(wd_runtime *rt,
                        int (*fn)(const wd_resource_info *info, void *arg),
                        void *arg);

/* Call fn for every type rt has opened, in first-use order, with its
 * counters, until fn returns nonzero.  Returns the number of calls. */
size_t wd_resource_types_each(wd_runtime *rt,
                              int (*fn)(const wd_resource_type *t,
                                        const wd_resource_stats *st, void *arg),
                              void *arg);

/* What a runtime that ends with resources still open does, besides
 * writing each one with its creation site and age to stderr. */
typedef enum wd_leak_policy {
  WD_LEAK_REPORT = 0, /* report and go on (the default) */
  WD_LEAK_ABORT = 1,  /* report and abort(): for test builds */
} wd_leak_policy;

/* Set the process-wide leak policy.  Thread-safe. */
void wd_resource_set_leak_policy(wd_leak_policy p);

/* Resources reported leaked so far by every runtime of the process: a test
 * harness fails when it is not 0 at exit.  Thread-safe. */
uint64_t wd_resource_leaks(void);

#ifdef __cplusplus
}
#endif
#endif
