/* Scopes: exit stacks in the caller's memory.
 *
 * A scope is an array of entries (function, argument, kind) released from
 * the top down.  The first WD_SCOPE_INLINE entries live inside the scope
 * itself, so the common scope - a few resources and callbacks - costs no
 * allocation: a push is two stores and a release is one indirect call per
 * entry.  More entries move the array to the heap, doubling; a push that
 * cannot get that memory runs its cleanup at once, because a cleanup that
 * was handed over and then dropped would leak what it releases.
 *
 * The three kinds differ in how they are protected at release.  A deferred
 * callback (wd_scope_defer) promises not to block and runs as it is.  A
 * pushed callback (wd_scope_push) may block: it runs in a shielded cancel
 * scope with the scope's grace deadline, so that a cancelled task can
 * still flush or roll back, and cannot hang doing it.  A resource closes
 * through its type, shielded with the type's own grace (resource.c).
 * Shielding costs a cancel scope and a timer, which is why the cheap kind
 * exists.
 *
 * Release runs every entry whatever the others did.  The first error -
 * the body's, or the first failing cleanup's - is the result and stays
 * the task's detailed error; later failures are kept as its secondaries
 * (errkeep.c).  Each entry is told the outcome so far, so a transaction
 * pushed first rolls back if anything pushed after it failed to close.
 */
#include <string.h>

#include "resource-internal.h"

enum { K_DEFER, K_PUSH, K_RESOURCE };

int wd_scope_enter(wd_task *self, wd_scope *s) {
  if (!s) return wd_fail(self, WD_EINVAL, "wd_scope_enter: NULL scope");
  s->owner_ = self;
  s->entries_ = s->inline_;
  s->n_ = 0;
  s->cap_ = WD_SCOPE_INLINE;
  s->grace_ = 0;
  s->rcp_ = NULL;
  s->entered_ = true;
  return 0;
}

void wd_scope_set_grace(wd_scope *s, wd_time grace) {
  if (s) s->grace_ = grace > 0 ? grace : 0;
}

static bool usable(const wd_task *self, const wd_scope *s) {
  return s && s->entered_ && s->owner_ == self;
}

int wd__scope_reserve(wd_task *self, wd_scope *s, size_t n) {
  if (n <= (size_t)(s->cap_ - s->n_)) return 0;
  size_t cap = 2 * (size_t)s->cap_;
  if (cap < (size_t)s->n_ + n) cap = (size_t)s->n_ + n;
  if (cap > UINT32_MAX)
    return wd_fail(self, WD_ENOMEM, "scope: more than %u entries", UINT32_MAX);
  wd_scope_entry_ *a = wd__malloc(cap * sizeof *a);
  if (!a)
    return wd_fail(self, WD_ENOMEM, "scope: no memory for %zu entries", cap);
  memcpy(a, s->entries_, s->n_ * sizeof *a);
  if (s->entries_ != s->inline_) wd__free(s->entries_);
  s->entries_ = a;
  s->cap_ = (uint32_t)cap;
  return 0;
}

/* Run a callback pushed with wd_scope_push: shielded, within the grace.
 * Out of line, like the resource case: their frames would otherwise weigh
 * on every release. */
__attribute__((noinline)) static int run_shielded(wd_task *self,
                                                  wd_cleanup_fn fn, void *arg,
                                                  wd_outcome how,
                                                  wd_time grace) {
  if (!self) return fn(NULL, arg, how);
  if (!grace) grace = WD_RESOURCE_GRACE_DEFAULT;
  wd_cancel_scope gs;
  wd_cancel_opts o = {.shield = true,
                      .timeout = grace == WD_TIME_NEVER ? 0 : grace,
                      .fail_what = "scope cleanup"};
  bool shielded = wd_cancel_scope_enter(self, &gs, &o) == 0;
  int rc = fn(self, arg, how);
  if (shielded) rc = wd_cancel_scope_exit(self, &gs, rc);
  return rc;
}

__attribute__((noinline)) static int
release_resource(wd_task *self, wd_resource *r, wd_outcome how) {
  int rc = wd__resource_close_once(self, r, how);
  r->owner_gone = true;
  wd_resource_unref(r);
  return rc;
}

static inline int run_entry(wd_task *self, const wd_scope *s,
                            const wd_scope_entry_ *e, wd_outcome how) {
  switch (e->kind) {
  case K_DEFER:
    return ((wd_cleanup_fn)e->fn)(self, e->arg, how);
  case K_PUSH:
    return run_shielded(self, (wd_cleanup_fn)e->fn, e->arg, how, s->grace_);
  default:
    return release_resource(self, e->arg, how);
  }
}

/* The array is full: grow it, or release the entry now, since it was
 * handed over and there is nowhere to keep it. */
__attribute__((noinline)) static int push_slow(wd_task *self, wd_scope *s,
                                               void *fn, void *arg, int kind) {
  int rc = wd__scope_reserve(self, s, 1);
  if (rc == 0) {
    s->entries_[s->n_++] = (wd_scope_entry_){fn, arg, kind};
    return 0;
  }
  wd_scope_entry_ e = {fn, arg, kind};
  wd__keep k;
  wd__keep_init(&k, rc);
  wd__keep_before(&k, self);
  wd__keep_after(&k, self, run_entry(self, s, &e, WD_OUTCOME_ERROR));
  return wd__keep_finish(&k, self);
}

static inline int push(wd_task *self, wd_scope *s, void *fn, void *arg,
                       int kind) {
  if (__builtin_expect(s->n_ == s->cap_, 0))
    return push_slow(self, s, fn, arg, kind);
  s->entries_[s->n_++] = (wd_scope_entry_){fn, arg, kind};
  return 0;
}

static int bad_push(wd_task *self, const wd_scope *s, const char *who) {
  return wd_fail(self, WD_EINVAL, "%s: %s", who,
                 !s ? "NULL scope" : "scope not entered by this task");
}

int wd_scope_push(wd_task *self, wd_scope *s, wd_cleanup_fn fn, void *arg) {
  if (!usable(self, s)) return bad_push(self, s, "wd_scope_push");
  if (!fn) return wd_fail(self, WD_EINVAL, "wd_scope_push: NULL cleanup");
  return push(self, s, (void *)fn, arg, K_PUSH);
}

int wd_scope_defer(wd_task *self, wd_scope *s, wd_cleanup_fn fn, void *arg) {
  if (!usable(self, s)) return bad_push(self, s, "wd_scope_defer");
  if (!fn) return wd_fail(self, WD_EINVAL, "wd_scope_defer: NULL cleanup");
  return push(self, s, (void *)fn, arg, K_DEFER);
}

int wd_scope_push_resource(wd_task *self, wd_scope *s, wd_resource *r) {
  if (!usable(self, s)) return bad_push(self, s, "wd_scope_push_resource");
  if (!r)
    return wd_fail(self, WD_EINVAL, "wd_scope_push_resource: NULL resource");
  if (r->scoped || r->owner_gone)
    return wd_fail(self, WD_EINVAL,
                   "wd_scope_push_resource: resource '%s' (%s) is not the "
                   "caller's to hand over",
                   r->name, r->type->name);
  r->scoped = true;
  return push(self, s, NULL, r, K_RESOURCE);
}

int wd_scope_open_(wd_task *self, wd_scope *s, const wd_resource_type *t,
                   const void *config, const char *name, wd_resource **out,
                   const char *file, int line) {
  if (out) *out = NULL;
  if (!usable(self, s)) return bad_push(self, s, "wd_scope_open");
  /* Room first, so that nothing can fail once the resource is open. */
  int rc = wd__scope_reserve(self, s, 1);
  if (rc) return rc;
  rc = wd_resource_open_(self, t, config, name, out, file, line);
  if (rc) return rc;
  wd__scope_push_reserved(s, *out);
  return 0;
}

void wd__scope_push_reserved(wd_scope *s, wd_resource *r) {
  r->scoped = true;
  s->entries_[s->n_++] = (wd_scope_entry_){NULL, r, K_RESOURCE};
}

static void free_entries(wd_scope *s) {
  if (s->entries_ != s->inline_) {
    wd__free(s->entries_);
    s->entries_ = s->inline_;
  }
}

/* Release the rest of s once something has failed: rc is the first error,
 * and its detail must survive the cleanups still to run. */
__attribute__((noinline)) static int release_failed(wd_task *self, wd_scope *s,
                                                    int rc) {
  wd__keep k;
  wd__keep_init(&k, rc);
  while (s->n_) {
    wd_scope_entry_ e = s->entries_[--s->n_];
    wd__keep_before(&k, self);
    wd__keep_after(&k, self, run_entry(self, s, &e, wd__keep_outcome(&k)));
  }
  free_entries(s);
  return wd__keep_finish(&k, self);
}

int wd_scope_exit(wd_task *self, wd_scope *s, int rc) {
  if (__builtin_expect(!usable(self, s), 0))
    return wd_fail(self, WD_EINVAL, "wd_scope_exit: %s",
                   !s ? "NULL scope" : "scope not entered by this task");
  s->entered_ = false;
  if (rc < 0) return release_failed(self, s, rc);
  /* Nothing has failed: no error to keep aside yet. */
  while (s->n_) {
    wd_scope_entry_ e = s->entries_[--s->n_];
    int crc = run_entry(self, s, &e, WD_OUTCOME_OK);
    if (__builtin_expect(crc < 0, 0)) return release_failed(self, s, crc);
  }
  free_entries(s);
  return rc;
}

wd_scope *wd_scope_begin_(wd_scope *s, wd_task *self, int *rcp) {
  wd_scope_enter(self, s);
  s->rcp_ = rcp;
  return s;
}

void wd_scope_cleanup_(wd_scope *s) {
  if (!s->entered_) return;
  int *rcp = s->rcp_;
  int rc = wd_scope_exit(s->owner_, s, rcp ? *rcp : 0);
  if (rcp) *rcp = rc;
}
