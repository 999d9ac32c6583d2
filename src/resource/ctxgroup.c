/* Context groups: open several independent resources concurrently and
 * enter them together.
 *
 * Each open runs in a task of its own, in one group (wd_run_tasks), named
 * after its resource so that the group's error says which open failed.  A
 * group cancels its other tasks at the first failure: opens still running
 * are cancelled (and clean up after themselves), and those that finished
 * are closed here, in reverse order, told WD_OUTCOME_ERROR.  The caller
 * gets all the resources or none.  The error it gets has the failed open's
 * code - more use to a caller than WD_EGROUP - and a message naming that
 * resource, with the group's error (every failure, by task) as its cause.
 *
 * The job and argument arrays live on the stack up to a small count, so
 * opening two or three resources together costs no allocation beyond the
 * tasks and the resources themselves.
 */
#include <string.h>

#include "resource-internal.h"

#define STACK_MEMBERS 8

typedef struct member {
  wd_resource_spec *spec;
  const char *file;
  int line;
} member;

static int open_member(wd_task *self, void *arg) {
  member *m = arg;
  return wd_resource_open_(self, m->spec->type, m->spec->config, m->spec->name,
                           &m->spec->res, m->file, m->line);
}

/* The spec whose open failed first: the group lists failures in the order
 * they happened, by task id. */
static size_t first_failed(wd_task *self, const wd_job *jobs, size_t n) {
  const wd_error *e = wd_task_error(self);
  if (e && e->code == WD_EGROUP) {
    for (size_t c = 0; c < e->nchildren; c++) {
      for (size_t i = 0; i < n; i++) {
        if (jobs[i].h.id == e->children[c]->task_id) return i;
      }
    }
  }
  for (size_t i = 0; i < n; i++) {
    int st = jobs[i].h.status;
    if (st < 0 && !wd_is_cancel(st)) return i;
  }
  return n;
}

static const char *spec_name(const wd_resource_spec *sp) {
  return sp->name && *sp->name ? sp->name : sp->type->name;
}

int wd_resource_open_all_(wd_task *self, wd_resource_spec *specs, size_t n,
                          const char *file, int line) {
  if (!self) return wd_fail(NULL, WD_EINVAL, "wd_resource_open_all: NULL task");
  if (n && !specs)
    return wd_fail(self, WD_EINVAL, "wd_resource_open_all: NULL specs");
  for (size_t i = 0; i < n; i++)
    specs[i].res = NULL;
  for (size_t i = 0; i < n; i++) {
    int rc =
        wd__resource_type_check(self, specs[i].type, "wd_resource_open_all");
    if (rc) return wd_wrap(self, rc, "context group: spec %zu", i);
  }
  if (n == 0) return 0;

  wd_job stack_jobs[STACK_MEMBERS];
  member stack_members[STACK_MEMBERS];
  wd_job *jobs = stack_jobs;
  member *members = stack_members;
  if (n > STACK_MEMBERS) {
    if (n > SIZE_MAX / (sizeof *jobs + sizeof *members))
      return wd_fail(self, WD_ENOMEM, "context group: %zu resources", n);
    jobs = wd__malloc(n * (sizeof *jobs + sizeof *members));
    if (!jobs)
      return wd_fail(self, WD_ENOMEM,
                     "context group: no memory for %zu resources", n);
    members = (member *)(jobs + n);
  }
  for (size_t i = 0; i < n; i++) {
    members[i] = (member){&specs[i], file, line};
    jobs[i] = (wd_job){
        .fn = open_member, .arg = &members[i], .name = spec_name(&specs[i])};
  }
  int rc =
      wd_run_tasks(self, jobs, n, &(wd_group_opts){.name = "context group"});
  if (rc == 0) {
    if (jobs != stack_jobs) wd__free(jobs);
    return 0;
  }
  if (rc == WD_EGROUP) {
    size_t f = first_failed(self, jobs, n);
    if (f < n)
      rc = wd_wrap(self, jobs[f].h.status,
                   "context group: resource '%s' (%s) failed to open",
                   spec_name(&specs[f]), specs[f].type->name);
  }
  /* All or none: close what did open, newest spec first. */
  wd__keep k;
  wd__keep_init(&k, rc);
  for (size_t i = n; i-- > 0;) {
    wd_resource *r = specs[i].res;
    specs[i].res = NULL;
    if (!r) continue;
    wd__keep_before(&k, self);
    wd__keep_after(&k, self,
                   wd__resource_close_once(self, r, wd__keep_outcome(&k)));
    r->owner_gone = true;
    wd_resource_unref(r);
  }
  if (jobs != stack_jobs) wd__free(jobs);
  return wd__keep_finish(&k, self);
}

int wd_scope_open_all_(wd_task *self, wd_scope *s, wd_resource_spec *specs,
                       size_t n, const char *file, int line) {
  if (!s || !s->entered_ || s->owner_ != self)
    return wd_fail(self, WD_EINVAL, "wd_scope_open_all: %s",
                   !s ? "NULL scope" : "scope not entered by this task");
  int rc = wd__scope_reserve(self, s, n);
  if (rc) return rc;
  rc = wd_resource_open_all_(self, specs, n, file, line);
  if (rc) return rc;
  for (size_t i = 0; i < n; i++)
    wd__scope_push_reserved(s, specs[i].res);
  return 0;
}
