/* Shared by the files of src/resource/: the resource record, the
 * per-runtime registry, and the error keeper that lets a cleanup fail
 * without hiding the error that caused it.  Built on the public API only
 * (plus the library's allocator and intrusive lists). */
#ifndef WD_RESOURCE_INTERNAL_H
#define WD_RESOURCE_INTERNAL_H

#include <stdalign.h>
#include <stddef.h>

#include "../util/hist.h"
#include "../util/list.h"
#include "../util/mem.h"
#include "warden.h"

/* ---- the registry (registry.c) ------------------------------------------ */

/* Counters of one type in one runtime. */
typedef struct wd__rtype {
  const wd_resource_type *type;
  wd_resource_stats st;
  wd__hist lifetime; /* open to close (ns) of each instance opened and closed */
  struct wd__rtype *next; /* first-use order */
} wd__rtype;

typedef struct wd__registry {
  wd_runtime_ext ext; /* first: the extension's address is the registry's */
  wd_runtime *rt;
  wd_link live; /* live resources, oldest first */
  size_t nlive;
  wd__rtype *types, **types_tail;
  wd__rtype *last; /* the type found last: most opens repeat it */
  uint64_t next_id;
} wd__registry;

/* The registry of rt, or NULL when rt has opened no resource. */
wd__registry *wd__registry_find(wd_runtime *rt);
/* The registry of rt, created on first use (NULL: no memory). */
wd__registry *wd__registry_get(wd_runtime *rt);
/* The counters of t in reg, created on first use (NULL: no memory). */
wd__rtype *wd__registry_type(wd__registry *reg, const wd_resource_type *t);
/* Give r an id and a creation time, list it as live and count it. */
void wd__registry_add(wd__registry *reg, wd__rtype *ty, struct wd_resource *r);
/* r is no longer live: it was opened and closed (opened) or its open failed;
 * close_rc < 0 counts a close error. */
void wd__registry_remove(struct wd_resource *r, bool opened, int close_rc);

/* ---- resources (resource.c) -------------------------------------------- */

struct wd_resource {
  const wd_resource_type *type;
  wd__registry *reg; /* NULL in synchronous use outside any runtime */
  wd__rtype *counters;
  wd_link link;          /* in reg->live while live */
  wd_link close_waiters; /* tasks waiting for another task's close */
  uint64_t id;
  wd_time created;
  const char *file;
  int line;
  unsigned refs; /* the owner's reference and wd_resource_ref()s */
  unsigned char state;
  bool scoped;     /* owned by a scope, which drops the owner's reference */
  bool owner_gone; /* the owner's reference was dropped */
  char name[WD_RESOURCE_NAME_MAX];
  alignas(max_align_t) unsigned char data[];
};

/* Close r once (see wd_resource_close), without dropping a reference.
 * Returns close's error (recorded) or 0, also when r was closed already. */
int wd__resource_close_once(wd_task *self, wd_resource *r, wd_outcome how);

/* Copy name (or fallback when NULL/empty) into a fixed buffer. */
void wd__name_copy(char *dst, size_t n, const char *name, const char *fallback);

/* Record rc on self, wrapping the detailed error already recorded when
 * that one is about rc (same code), else as a fresh error: a cause is only
 * chained when it is the cause.  Returns rc. */
#define wd__fail_about(self, rc, ...)                                          \
  wd__fail_about_((self), __FILE__, __LINE__, (rc), __VA_ARGS__)
int wd__fail_about_(wd_task *self, const char *file, int line, int rc,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* WD_EINVAL with a message naming `who` unless t is a usable type. */
int wd__resource_type_check(wd_task *self, const wd_resource_type *t,
                            const char *who);

/* ---- keeping the first error (errkeep.c) --------------------------------
 * Cleanups record their errors with wd_fail() like any code, and recording
 * replaces (frees) the task's current error.  The keeper holds the first
 * error aside while later cleanups run, collects their errors as
 * secondary, and puts it back with the secondaries attached:
 *
 *   wd__keep k;
 *   wd__keep_init(&k, rc);
 *   for each cleanup {
 *     wd__keep_before(&k, self);
 *     wd__keep_after(&k, self, cleanup(self, wd__keep_outcome(&k)));
 *   }
 *   return wd__keep_finish(&k, self);
 */
typedef struct wd__keep {
  int rc;         /* the first error so far, 0 = none */
  bool tried;     /* the first error's detail was looked for */
  wd_error *held; /* its detail, detached from the task, or NULL */
  wd_error **sec; /* details of the secondary errors */
  size_t nsec, capsec;
  size_t count; /* secondary errors, including those whose detail was lost */
} wd__keep;

static inline void wd__keep_init(wd__keep *k, int rc) {
  *k = (wd__keep){.rc = rc < 0 ? rc : 0};
}
static inline wd_outcome wd__keep_outcome(const wd__keep *k) {
  return wd_outcome_of(k->rc);
}
void wd__keep_before_(wd__keep *k, wd_task *self);
void wd__keep_after_(wd__keep *k, wd_task *self, int crc);
int wd__keep_finish_(wd__keep *k, wd_task *self);

/* The checks inline, the work out of line: a release in which nothing
 * fails costs three predictable branches. */
static inline void wd__keep_before(wd__keep *k, wd_task *self) {
  if (k->rc && !k->tried) wd__keep_before_(k, self);
}
static inline void wd__keep_after(wd__keep *k, wd_task *self, int crc) {
  if (crc < 0) wd__keep_after_(k, self, crc);
}
static inline int wd__keep_finish(wd__keep *k, wd_task *self) {
  if (k->held || k->count || k->sec) return wd__keep_finish_(k, self);
  return k->rc;
}

/* ---- scopes (scope.c) --------------------------------------------------- */

/* Make room for n more entries on s.  Returns 0 or WD_ENOMEM. */
int wd__scope_reserve(wd_task *self, wd_scope *s, size_t n);
/* Hand r to s, in room made by wd__scope_reserve(). */
void wd__scope_push_reserved(wd_scope *s, struct wd_resource *r);

#endif
