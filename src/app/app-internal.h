/* Shared by the files of src/app/: the app layer's runtime extension (the
 * runtime's managers, its default manager, the running app), the hooks
 * wd_run_app needs into the manager, and an error keeper built on the
 * public detach/restore/add_secondary functions.  Public API only (plus
 * the library's allocator and intrusive lists). */
#ifndef WD_APP_INTERNAL_H
#define WD_APP_INTERNAL_H

#include <stdio.h>

#include "../util/list.h"
#include "../util/mem.h"
#include "warden.h"

struct wd__app;

/* The app layer's state in one runtime: a runtime extension, created with
 * the first manager.  It must be attached after the resource registry
 * (whose at_exit reports leaks): extensions end newest first, and this
 * one's at_exit closes the default manager's resources, which must happen
 * before the registry looks for leaks.  The first manager's own resource
 * (see manager.c) creates the registry first. */
typedef struct wd__app_ext {
  wd_runtime_ext ext; /* first: the extension's address is this one's */
  wd_runtime *rt;
  wd_link managers;    /* every open manager, oldest first */
  wd_manager *dflt;    /* the default manager, or NULL */
  bool dflt_lazy;      /* made by wd_manager_default: closed at the end */
  struct wd__app *app; /* wd_run_app's state while it runs, or NULL */
} wd__app_ext;

/* The extension of rt, or NULL when rt has no manager yet. */
wd__app_ext *wd__app_ext_find(wd_runtime *rt);

/* One line about the running app, for wd_dump() (run.c). */
void wd__app_dump(struct wd__app *a, FILE *out);

/* ---- manager hooks (manager.c) ------------------------------------------ */

/* wd_manager_close(), counting in *nerrors the errors of the shutdown
 * itself (rc's aside). */
int wd__manager_close(wd_task *self, wd_manager *m, int rc, size_t *nerrors);

/* Make m closable by wd__manager_close only (wd_run_app's manager: user
 * code runs inside its group, where closing it cannot work). */
void wd__manager_app_owned(wd_manager *m);

/* Stop being patient: cancel the managed tasks now and end the wait for
 * their grace.  Not blocking: may run in a signal callback. */
void wd__manager_force(wd_manager *m);

/* The names of the managed tasks still alive, quoted and separated by
 * commas, into buf (truncated to n).  Returns how many there are. */
size_t wd__manager_task_names(const wd_manager *m, char *buf, size_t n);

/* ---- keeping the first error ---------------------------------------------
 * A shutdown runs step after step past failures, and each step records its
 * failure with wd_fail(), which would replace (free) the error that stands.
 * The keeper takes each error out of the task as it happens: the first is
 * kept, every later one becomes its secondary error.  A step that itself
 * keeps an error it is given (wd_resource_close(self, r, rc) with rc < 0)
 * is lent the first error for the call:
 *
 *   wd__akeep k;
 *   wd__akeep_init(&k, self, rc);          // takes rc's detail
 *   wd__akeep_add(&k, self, step(self));   // a step with its own error
 *   wd__akeep_lend(&k, self);              // a step that attaches to rc
 *   wd__akeep_return(&k, self, wd_resource_close(self, r, k.rc));
 *   return wd__akeep_finish(&k, self);     // the first error, restored
 */
typedef struct wd__akeep {
  int rc;          /* the first error, 0 = none */
  wd_error *first; /* its detail, out of the task; NULL while lent/lost */
  size_t count;    /* errors added after init */
  size_t lent_sec; /* first's secondary count when it was lent */
} wd__akeep;

void wd__akeep_init(wd__akeep *k, wd_task *self, int rc);
/* Take crc's error (if crc < 0) out of self: the first, or a secondary.
 * Returns its detail (borrowed from the keeper) or NULL. */
const wd_error *wd__akeep_add(wd__akeep *k, wd_task *self, int crc);
void wd__akeep_lend(wd__akeep *k, wd_task *self);
/* The lent step returned crc: take the first error back (with what the
 * step attached to it), or, if there was none, add crc.  Returns the
 * detail of the error the step added, or NULL. */
const wd_error *wd__akeep_return(wd__akeep *k, wd_task *self, int crc);
/* Put the first error back on self; returns it (0 when none). */
int wd__akeep_finish(wd__akeep *k, wd_task *self);

/* Seconds, for messages. */
static inline double wd__secs(wd_time t) { return (double)t / (double)WD_SEC; }

#endif
