/* Resources: the lifecycle of one instance.
 *
 * An instance is one block: the record (type, registry links, state, name,
 * creation site, reference count) followed by the type's state, zeroed.
 * Open runs the type's open in the caller's task; if it fails, the block
 * is freed and nothing is closed, because an open that fails releases what
 * it built.  If it succeeds while the caller was cancelled, the open did
 * happen but the caller will not use it: Trio's rule that a cancelled
 * operation did not happen is kept by closing it at once (told
 * WD_OUTCOME_CANCEL) and returning the cancellation, so a cancelled open
 * never leaves a resource behind.
 *
 * Close is the state machine's one way out of ready.  The first caller
 * moves the resource to closing and runs the type's close in a shielded
 * cancel scope with the type's grace deadline: the caller's cancellation
 * cannot interrupt it, and it cannot hang.  A second caller while it runs
 * waits for it (shielded too); any later one finds it closed and returns.
 * A close error is counted and recorded, and the callers that close
 * because of an error keep that error as their result (the keeper in
 * errkeep.c attaches the close's as secondary).
 *
 * Memory is reference counted, separately from open/closed: the owner (the
 * caller of open, or the scope or lazy resource it was handed to) holds one
 * reference, and code that looks at resources it does not own takes more.
 * That is what makes a scope-owned resource safe to close early: the
 * memory lives until the scope drops its reference.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "resource-internal.h"

const char *wd_outcome_name(wd_outcome how) {
  switch (how) {
  case WD_OUTCOME_OK:
    return "ok";
  case WD_OUTCOME_ERROR:
    return "error";
  case WD_OUTCOME_CANCEL:
    return "cancel";
  }
  return "?";
}

const char *wd_resource_state_name(wd_resource_state s) {
  switch (s) {
  case WD_RESOURCE_OPENING:
    return "opening";
  case WD_RESOURCE_READY:
    return "ready";
  case WD_RESOURCE_CLOSING:
    return "closing";
  case WD_RESOURCE_CLOSED:
    return "closed";
  case WD_RESOURCE_FAILED:
    return "failed";
  }
  return "?";
}

void wd__name_copy(char *dst, size_t n, const char *name,
                   const char *fallback) {
  if (!name || !*name) name = fallback ? fallback : "";
  size_t len = strlen(name);
  if (len >= n) len = n - 1;
  memcpy(dst, name, len);
  dst[len] = '\0';
}

int wd__fail_about_(wd_task *self, const char *file, int line, int rc,
                    const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const wd_error *cur = self ? wd_task_error(self) : wd_last_error();
  if (cur && cur->code == rc)
    return wd_error_wrap_(self, file, line, rc, "%s", msg);
  return wd_error_set_(self, file, line, rc, "%s", msg);
}

int wd__resource_type_check(wd_task *self, const wd_resource_type *t,
                            const char *who) {
  if (!t) return wd_fail(self, WD_EINVAL, "%s: NULL resource type", who);
  if (!t->name || !*t->name)
    return wd_fail(self, WD_EINVAL, "%s: resource type without a name", who);
  if (t->size == 0)
    return wd_fail(self, WD_EINVAL, "%s: resource type '%s' has size 0", who,
                   t->name);
  if (t->size > SIZE_MAX / 2)
    return wd_fail(self, WD_EINVAL, "%s: resource type '%s': size %zu", who,
                   t->name, t->size);
  if (t->close_grace < 0)
    return wd_fail(self, WD_EINVAL,
                   "%s: resource type '%s': negative close_grace", who,
                   t->name);
  return 0;
}

/* ---- references --------------------------------------------------------- */

void wd_resource_ref(wd_resource *r) {
  if (r) r->refs++;
}

void wd_resource_unref(wd_resource *r) {
  if (!r || --r->refs > 0) return;
  /* The last reference of a live resource is its owner's, dropped only
   * after a close; a leak is freed by the registry, not here. */
  wd__free(r);
}

static void drop_owner(wd_resource *r) {
  if (r->owner_gone) return;
  r->owner_gone = true;
  wd_resource_unref(r);
}

/* ---- close -------------------------------------------------------------- */

typedef struct close_waiter {
  wd_wait w;
  wd_link link;
} close_waiter;

/* Wait, shielded, until another task's close of r is over.  r stays
 * allocated meanwhile (the caller holds a reference). */
static void wait_closed(wd_task *self, wd_resource *r) {
  if (!self) return; /* synchronous use cannot wait */
  wd_cancel_scope sh;
  bool shielded =
      wd_cancel_scope_enter(self, &sh, &(wd_cancel_opts){.shield = true}) == 0;
  while (r->state == WD_RESOURCE_CLOSING) {
    close_waiter cw = {.w = {.what = "resource close", .name = r->name}};
    wd__list_push_back(&r->close_waiters, &cw.link);
    int rc = wd_park(self, &cw.w);
    if (cw.link.next_) wd__list_unlink(&cw.link);
    if (rc) break; /* could not park: no shield and cancelled */
  }
  if (shielded) wd_cancel_scope_exit(self, &sh, 0);
}

/* Run the type's close in a shielded scope with the grace deadline: the
 * caller's (grace > 0) or else the type's. */
static int run_close(wd_task *self, wd_resource *r, wd_outcome how,
                     wd_time grace) {
  const wd_resource_type *t = r->type;
  if (!self) return t->close(NULL, r->data, how);
  if (!grace)
    grace = t->close_grace ? t->close_grace : WD_RESOURCE_GRACE_DEFAULT;
  wd_cancel_scope gs;
  wd_cancel_opts o = {.shield = true,
                      .timeout = grace == WD_TIME_NEVER ? 0 : grace,
                      .fail_what = "close"};
  /* Without memory for the scope's timer, close still runs, unshielded:
   * releasing matters more than the shield. */
  bool shielded = wd_cancel_scope_enter(self, &gs, &o) == 0;
  int rc = t->close(self, r->data, how);
  if (shielded) rc = wd_cancel_scope_exit(self, &gs, rc);
  return rc;
}

/* Close r once.  opened is false when undoing an open the caller was
 * cancelled during: the instance then counts as an open error. */
static int close_impl(wd_task *self, wd_resource *r, wd_outcome how,
                      bool opened, wd_time grace) {
  switch ((wd_resource_state)r->state) {
  case WD_RESOURCE_CLOSED:
  case WD_RESOURCE_FAILED:
    return 0;
  case WD_RESOURCE_OPENING: /* never: open moves it on before a close */
    return wd_fail(self, WD_EBUSY, "resource '%s' (%s): still opening", r->name,
                   r->type->name);
  case WD_RESOURCE_CLOSING:
    r->refs++;
    wait_closed(self, r);
    wd_resource_unref(r);
    return 0;
  case WD_RESOURCE_READY:
    break;
  }
  r->state = WD_RESOURCE_CLOSING;
  r->refs++; /* a waiter must not see r freed under it */
  int rc = r->type->close ? run_close(self, r, how, grace) : 0;
  if (rc > 0) rc = 0;
  r->state = opened ? WD_RESOURCE_CLOSED : WD_RESOURCE_FAILED;
  wd__registry_remove(r, opened, rc);
  wd_link *n;
  while ((n = wd__list_pop_front(&r->close_waiters)))
    wd_wake(&wd__container_of(n, close_waiter, link)->w, 0);
  if (rc)
    rc = wd__fail_about(self, rc, "resource '%s' (%s): close failed", r->name,
                        r->type->name);
  wd_resource_unref(r);
  return rc;
}

int wd__resource_close_once(wd_task *self, wd_resource *r, wd_outcome how) {
  return close_impl(self, r, how, true, 0);
}

int wd_resource_close(wd_task *self, wd_resource *r, int rc) {
  return wd_resource_close_within(self, r, rc, 0);
}

int wd_resource_close_within(wd_task *self, wd_resource *r, int rc,
                             wd_time grace) {
  if (grace < 0)
    return wd_fail(self, WD_EINVAL, "wd_resource_close_within: negative grace");
  if (!r) return rc;
  if (r->state == WD_RESOURCE_OPENING) /* only its opener holds it */
    return wd_fail(self, WD_EBUSY, "resource '%s' (%s): still opening", r->name,
                   r->type->name);
  r->refs++; /* another task's close may drop the owner's meanwhile */
  wd__keep k;
  wd__keep_init(&k, rc);
  wd__keep_before(&k, self);
  wd__keep_after(&k, self, close_impl(self, r, wd_outcome_of(rc), true, grace));
  if (!r->scoped) drop_owner(r);
  wd_resource_unref(r);
  int kept = wd__keep_finish(&k, self);
  return kept < 0 ? kept : rc;
}

/* ---- open --------------------------------------------------------------- */

int wd_resource_open_(wd_task *self, const wd_resource_type *t,
                      const void *config, const char *name, wd_resource **out,
                      const char *file, int line) {
  if (!out) return wd_fail(self, WD_EINVAL, "wd_resource_open: NULL out");
  *out = NULL;
  int rc = wd__resource_type_check(self, t, "wd_resource_open");
  if (rc) return rc;
  rc = wd_cancel_status(self);
  if (rc) return rc;
  wd_runtime *rt = self ? wd_task_runtime(self) : wd_runtime_current();
  wd__registry *reg = NULL;
  wd__rtype *ty = NULL;
  if (rt) {
    reg = wd__registry_get(rt);
    ty = reg ? wd__registry_type(reg, t) : NULL;
    if (!ty)
      return wd_fail(self, WD_ENOMEM,
                     "resource '%s' (%s): no memory for the registry",
                     name ? name : t->name, t->name);
  }
  wd_resource *r = wd__calloc(1, sizeof *r + t->size);
  if (!r)
    return wd_fail(self, WD_ENOMEM, "resource '%s' (%s): no memory (%zu bytes)",
                   name ? name : t->name, t->name, sizeof *r + t->size);
  r->type = t;
  r->file = file;
  r->line = line;
  r->refs = 1;
  r->state = WD_RESOURCE_OPENING;
  wd__list_init(&r->close_waiters);
  wd__name_copy(r->name, sizeof r->name, name, t->name);
  if (reg) wd__registry_add(reg, ty, r);

  rc = t->open ? t->open(self, r->data, config) : 0;
  if (rc > 0) rc = 0;
  if (rc == 0) {
    int crc = wd_cancel_status(self);
    if (!crc) {
      r->state = WD_RESOURCE_READY;
      *out = r;
      return 0;
    }
    /* Opened, but the caller was cancelled meanwhile: undo it. */
    r->state = WD_RESOURCE_READY;
    wd__keep k;
    wd__keep_init(&k, crc);
    wd__keep_before(&k, self);
    wd__keep_after(&k, self, close_impl(self, r, WD_OUTCOME_CANCEL, false, 0));
    rc = wd__keep_finish(&k, self);
    wd_resource_unref(r);
    return rc;
  }
  r->state = WD_RESOURCE_FAILED;
  wd__registry_remove(r, false, 0);
  if (!(wd_is_cancel(rc) && wd_cancel_status(self)))
    rc = wd__fail_about(self, rc, "resource '%s' (%s): open failed", r->name,
                        t->name);
  wd_resource_unref(r);
  return rc;
}

/* ---- health and accessors ----------------------------------------------- */

int wd_resource_health(wd_task *self, wd_resource *r) {
  if (!r) return wd_fail(self, WD_EINVAL, "wd_resource_health: NULL resource");
  if (r->state != WD_RESOURCE_READY)
    return wd_fail(self, WD_ECLOSED, "resource '%s' (%s) is %s", r->name,
                   r->type->name,
                   wd_resource_state_name((wd_resource_state)r->state));
  if (!r->type->health)
    return wd_fail(self, WD_ENOSYS, "resource type '%s' has no health check",
                   r->type->name);
  r->refs++;
  int rc = r->type->health(self, r->data);
  wd_resource_unref(r);
  return rc;
}

void *wd_resource_data(const wd_resource *r) { return (void *)r->data; }
const char *wd_resource_name(const wd_resource *r) { return r->name; }
const wd_resource_type *wd_resource_type_of(const wd_resource *r) {
  return r->type;
}
wd_resource_state wd_resource_state_of(const wd_resource *r) {
  return (wd_resource_state)r->state;
}
uint64_t wd_resource_id(const wd_resource *r) { return r->id; }
