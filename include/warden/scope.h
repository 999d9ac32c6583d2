/* warden/scope.h - scopes (exit stacks) and context groups.
 *
 * A scope is Python's AsyncExitStack and injectq's resource_scope: push
 * resources and cleanup callbacks on it while you work, and when the scope
 * ends - normally, by an error, by cancellation or by an early return -
 * they are released in reverse order of pushing.  Release goes on past a
 * failing cleanup.  The scope's result is its first error: the body's, or
 * else the first cleanup's; every later cleanup error is secondary: counted
 * in that error's `nsecondary` and listed in its `secondary` array (see
 * error.h), so wd_error_print() shows them all.  Each cleanup
 * is told how the scope has ended so far (wd_outcome), so that a
 * transaction rolls back when anything before it failed.
 *
 * A scope lives in the caller's memory, with room for WD_SCOPE_INLINE
 * entries inside it; pushing more takes an allocation.  It belongs to the
 * task that entered it, and must not be copied or moved while entered.
 *
 *   int rc = 0;
 *   WD_SCOPE(self, sc, rc) {              // wd_scope *sc inside the block
 *     wd_resource *db, *cache;
 *     if ((rc = wd_scope_open(self, sc, &pg_type, &pg_cfg, "db", &db)))
 *       break;                            // leaves the scope, releasing
 *     if ((rc = wd_scope_open(self, sc, &redis_type, NULL, "cache", &cache)))
 *       break;
 *     rc = work(self, db, cache);
 *   }                                     // cache, then db, closed here
 *   return rc;                            // the first error, or 0
 *
 * Without the cleanup attribute (see WD_SCOPE), the same with
 * wd_scope_enter() and `rc = wd_scope_exit(self, &s, rc)` on every path.
 */
#ifndef WARDEN_SCOPE_H
#define WARDEN_SCOPE_H

#include "resource.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A cleanup: release what arg holds, told how the scope ended.  Returns 0
 * or an error (recorded with wd_fail, like any warden error). */
typedef int (*wd_cleanup_fn)(wd_task *self, void *arg, wd_outcome how);

#define WD_SCOPE_INLINE 8

typedef struct wd_scope_entry_ {
  void *fn; /* wd_cleanup_fn, or NULL for a resource */
  void *arg;
  int kind;
} wd_scope_entry_;

typedef struct wd_scope {
  wd_task *owner_;
  wd_scope_entry_ *entries_; /* inline_ or a heap array */
  uint32_t n_, cap_;
  wd_time grace_;
  int *rcp_; /* WD_SCOPE's result variable */
  bool entered_;
  wd_scope_entry_ inline_[WD_SCOPE_INLINE];
} wd_scope;

/* Start s, empty, in self (NULL for synchronous use outside tasks).
 * Callbacks pushed with wd_scope_push() get WD_RESOURCE_GRACE_DEFAULT
 * each unless wd_scope_set_grace() says otherwise.  Allocates nothing.
 * Checkpoint: no.  Returns 0 or WD_EINVAL (NULL s). */
int wd_scope_enter(wd_task *self, wd_scope *s);

/* The grace deadline of each callback pushed with wd_scope_push() on s
 * (0 = the default, WD_TIME_NEVER = none). */
void wd_scope_set_grace(wd_scope *s, wd_time grace);

/* Push a callback that may block (flush, send ROLLBACK): at release it
 * runs in a shielded cancel scope with s's grace deadline.
 * Checkpoint: no.  Returns 0, WD_EINVAL (NULL s or fn, s not entered by
 * self), or WD_ENOMEM: then fn has already run, told WD_OUTCOME_ERROR, so
 * that what it releases is never lost (its own error is secondary). */
int wd_scope_push(wd_task *self, wd_scope *s, wd_cleanup_fn fn, void *arg);

/* Push a callback that does not block (free, unlock, count): it runs as it
 * is, without a shield or deadline - the cheapest entry.  Same returns as
 * wd_scope_push(). */
int wd_scope_defer(wd_task *self, wd_scope *s, wd_cleanup_fn fn, void *arg);

/* Hand r to s: s closes it at release (like wd_resource_close with the
 * scope's outcome) and frees it.  r stays valid until then; closing it
 * earlier with wd_resource_close() is allowed (the scope's close then
 * does nothing).  Checkpoint: no.  Returns 0, WD_EINVAL (NULL s or r, s
 * not entered by self, r already owned by a scope), or WD_ENOMEM: then r
 * has already been closed and freed. */
int wd_scope_push_resource(wd_task *self, wd_scope *s, wd_resource *r);

/* wd_resource_open() and wd_scope_push_resource() in one call: the
 * resource is released with the scope.  *out is borrowed until then.
 * Checkpoint: yes.  Returns what those return; on failure *out is NULL and
 * nothing is open. */
#define wd_scope_open(self, s, t, config, name, out)                           \
  wd_scope_open_((self), (s), (t), (config), (name), (out), __FILE__, __LINE__)
int wd_scope_open_(wd_task *self, wd_scope *s, const wd_resource_type *t,
                   const void *config, const char *name, wd_resource **out,
                   const char *file, int line);

/* End s: release every entry in reverse order of pushing, each told
 * wd_outcome_of(the result so far), going on past failures; free what s
 * allocated.  rc is the body's result.
 * Checkpoint: no: it never fails for cancellation, and it may suspend
 * while cleanups wait (shielded, each within its grace).
 * Returns the first error: rc when rc < 0, else the first failing
 * cleanup's, else 0 (see the file comment for the secondary errors);
 * WD_EINVAL when s was not entered by self (nothing released). */
int wd_scope_exit(wd_task *self, wd_scope *s, int rc);

/* Entries pushed on s and not yet released. */
static inline size_t wd_scope_size(const wd_scope *s) { return s->n_; }

/* ---- the block macro ------------------------------------------------------
 * WD_SCOPE(self, s, rc) { ... } declares `wd_scope *s` for the block and
 * ends the scope however control leaves it (falling off the end, break,
 * continue, return, goto), with the block's result read from - and the
 * scope's result written back to - the int variable rc.  Keep the body's
 * result in rc: the scope ends with it.  A `return expr` inside the block
 * returns expr as computed before the release, so prefer `break` and
 * return rc after the block; a `break` inside a loop in the block leaves
 * that loop only.  Defined when the compiler has the cleanup attribute
 * (GCC, Clang). */
#if defined(__GNUC__) || defined(__clang__)
#define WD_HAVE_SCOPE_MACRO 1
#define WD_SCOPE(self, s, rc)                                                  \
  for (wd_scope s##_wd_scope_ __attribute__((cleanup(wd_scope_cleanup_))),     \
       *s = wd_scope_begin_(&s##_wd_scope_, (self), &(rc));                    \
       s; s = NULL)
#endif

/* WD_SCOPE's machinery: enter s and remember rc's address; exit s (if
 * still entered) with *rcp and write the result back. */
wd_scope *wd_scope_begin_(wd_scope *s, wd_task *self, int *rcp);
void wd_scope_cleanup_(wd_scope *s);

/* ---- context groups --------------------------------------------------------
 * Open several independent resources concurrently, one task each, and
 * enter them together: either all of them open, or none stays open. */
typedef struct wd_resource_spec {
  const wd_resource_type *type;
  const void *config; /* borrowed */
  const char *name;   /* copied; NULL: the type's name */
  wd_resource *res;   /* out: the opened resource, or NULL */
} wd_resource_spec;

/* Open specs[0..n) concurrently (each open runs in its own task named
 * after the resource).  If one fails, the others are cancelled, those
 * already open are closed (in reverse order, told WD_OUTCOME_ERROR, or
 * WD_OUTCOME_CANCEL when the caller was cancelled) and the error names the
 * resource that failed.  The caller owns every
 * specs[i].res on success.
 * Checkpoint: yes.  Returns 0; WD_EINVAL (NULL self, or specs with n > 0,
 * or a bad spec: nothing opened); WD_ENOMEM; WD_ECANCELED / WD_ETIMEDOUT;
 * or the first failed open's code with the message "context group:
 * resource '<name>' (<type>) failed to open", whose cause lists every
 * failure.  On failure every specs[i].res is NULL. */
#define wd_resource_open_all(self, specs, n)                                   \
  wd_resource_open_all_((self), (specs), (n), __FILE__, __LINE__)
int wd_resource_open_all_(wd_task *self, wd_resource_spec *specs, size_t n,
                          const char *file, int line);

/* wd_resource_open_all() and push every resource on s in specs order, so
 * that s releases them in reverse.  Room on s is made first: on failure
 * nothing is open and s is as it was. */
#define wd_scope_open_all(self, s, specs, n)                                   \
  wd_scope_open_all_((self), (s), (specs), (n), __FILE__, __LINE__)
int wd_scope_open_all_(wd_task *self, wd_scope *s, wd_resource_spec *specs,
                       size_t n, const char *file, int line);

#ifdef __cplusplus
}
#endif
#endif
