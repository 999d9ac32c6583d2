/* Keeping the first error while cleanups run.
 *
 * A scope's release, a resource closed because of an error and a context
 * group unwinding all run cleanups after something failed, and every
 * cleanup records its own failure with wd_fail() - which replaces, and
 * frees, the task's current error: the one that caused the cleanup.  The
 * keeper prevents that.  Before the first cleanup runs while an error
 * stands, it detaches that error from the task (wd_error_detach), so that
 * nothing a cleanup records can free it.  Each failing cleanup's error is
 * detached the same way and collected.  At the end the first error is put
 * back as the task's error (wd_error_restore) with the others attached as
 * its secondary errors: counted in nsecondary, listed in secondary.  Under
 * memory pressure a detail may be lost, never a code: the result is always
 * the first error's code.
 */
#include <string.h>

#include "resource-internal.h"

static const wd_error *current(wd_task *self) {
  return self ? wd_task_error(self) : wd_last_error();
}

/* A record for an error nobody described, made the public way: record it
 * on the task, then take it back out. */
static wd_error *bare(wd_task *self, int code, const char *msg) {
  wd_fail(self, code, "%s", msg);
  wd_error *e = wd_error_detach(self);
  if (e && e->code != code) { /* cannot happen: wd_fail records code */
    wd_error_free(e);
    e = NULL;
  }
  return e;
}

void wd__keep_before_(wd__keep *k, wd_task *self) {
  k->tried = true;
  const wd_error *cur = current(self);
  if (cur && cur->code == k->rc) k->held = wd_error_detach(self);
}

void wd__keep_after_(wd__keep *k, wd_task *self, int crc) {
  if (!k->rc) {
    /* The first error: its detail is the task's now. */
    k->rc = crc;
    k->tried = false;
    return;
  }
  k->count++;
  const wd_error *cur = current(self);
  wd_error *d = cur && cur->code == crc ? wd_error_detach(self) : NULL;
  if (!d) d = bare(self, crc, "cleanup failed");
  if (!d) return;
  if (k->nsec == k->capsec) {
    size_t cap = k->capsec ? 2 * k->capsec : 4;
    wd_error **a = wd__malloc(cap * sizeof *a);
    if (!a) {
      wd_error_free(d); /* counted, detail lost */
      return;
    }
    if (k->nsec) memcpy(a, k->sec, k->nsec * sizeof *a);
    wd__free(k->sec);
    k->sec = a;
    k->capsec = cap;
  }
  k->sec[k->nsec++] = d;
}

int wd__keep_finish_(wd__keep *k, wd_task *self) {
  wd_error *d = k->held;
  k->held = NULL;
  /* The first error had no detail to keep (a bare code, or no memory):
   * give it one, so that the secondaries have somewhere to go. */
  if (!d && k->count) d = bare(self, k->rc, wd_strerror(k->rc));
  size_t lost = k->count - k->nsec; /* counted, detail gone */
  for (size_t i = 0; i < k->nsec; i++) {
    if (d)
      wd_error_add_secondary(d, k->sec[i]);
    else
      wd_error_free(k->sec[i]);
  }
  for (size_t i = 0; d && i < lost; i++)
    wd_error_add_secondary(d, NULL);
  if (d) wd_error_restore(self, d);
  wd__free(k->sec);
  k->sec = NULL;
  k->nsec = k->capsec = 0;
  return k->rc;
}
