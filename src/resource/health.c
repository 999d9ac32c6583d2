/* Health checks of every live resource, run concurrently.
 *
 * wd_health_check_all() takes a snapshot of the live resources (each held
 * by a reference, so that a resource closed during the run stays readable),
 * allocates the report with one result per resource, and runs each check
 * in its own task of one group.  Each task enters its own cancel scope with
 * the per-check timeout, so a hanging check is cut off at its deadline and
 * the others neither wait for it nor see its cancellation; the tasks always
 * return 0 and write their verdict into their result, so one check's
 * failure is a finding, not a reason to cancel its siblings.
 *
 * What the caller's cancellation means: the group's tasks are cancelled
 * with it (the group lives in the caller's scopes), the run did not happen,
 * and the report is freed: Trio's rule, and a half-filled report would read
 * as "timed out" for checks that were merely interrupted.
 *
 * A timed-out check is told apart from one that failed with a timeout of
 * its own by its scope: only the check's deadline cancels that scope.
 */
#include <string.h>

#include "resource-internal.h"

const char *wd_health_status_name(wd_health_status s) {
  switch (s) {
  case WD_HEALTH_HEALTHY:
    return "healthy";
  case WD_HEALTH_UNHEALTHY:
    return "unhealthy";
  case WD_HEALTH_UNKNOWN:
    return "unknown";
  case WD_HEALTH_TIMED_OUT:
    return "timed_out";
  }
  return "?";
}

/* The report and its results: one block. */
typedef struct report_block {
  wd_health_report rep;
  wd_health_result results[];
} report_block;

typedef struct run {
  wd_time timeout;      /* WD_TIME_NEVER: none */
  const char *no_timer; /* set when a check could not arm its timeout */
} run;

typedef struct job {
  wd_resource *r; /* referenced */
  wd_health_result *res;
  run *run;
} job;

/* The check's error and its causes, "msg: cause: cause", or the code's
 * description when the check recorded nothing about rc. */
static void describe(wd_task *self, int rc, char *buf, size_t n) {
  const wd_error *e = wd_task_error(self);
  if (!e || e->code != rc) {
    snprintf(buf, n, "%s", wd_strerror(rc));
    return;
  }
  size_t len = 0;
  for (; e && len + 1 < n; e = e->cause) {
    int w = snprintf(buf + len, n - len, "%s%s", len ? ": " : "", e->msg);
    if (w < 0) break;
    len += (size_t)w;
  }
}

static int check_task(wd_task *self, void *arg) {
  job *j = arg;
  wd_health_result *res = j->res;
  const wd_resource_type *t = wd_resource_type_of(j->r);
  wd_time t0 = wd_now(self);
  wd_resource_state st = wd_resource_state_of(j->r);
  if (st != WD_RESOURCE_READY) {
    res->status = WD_HEALTH_UNKNOWN;
    res->code = WD_ECLOSED;
    snprintf(res->message, sizeof res->message, "resource is %s",
             wd_resource_state_name(st));
    return 0;
  }
  if (!t->health) {
    res->status = WD_HEALTH_UNKNOWN;
    res->code = WD_ENOSYS;
    snprintf(res->message, sizeof res->message,
             "resource type '%s' has no health check", t->name);
    return 0;
  }
  wd_cancel_scope sc;
  bool timed = j->run->timeout != WD_TIME_NEVER;
  if (timed) {
    int rc = wd_cancel_scope_enter(
        self, &sc, &(wd_cancel_opts){.timeout = j->run->timeout});
    if (rc) {
      /* The caller fails the whole run: a check without its timeout could
       * hang it. */
      j->run->no_timer = res->name;
      return 0;
    }
  }
  int rc = wd_resource_health(self, j->r);
  bool fired = timed && wd_cancel_scope_cancelled(&sc);
  if (rc < 0 && !fired) describe(self, rc, res->message, sizeof res->message);
  if (timed) wd_cancel_scope_exit(self, &sc, rc);
  res->duration = wd_now(self) - t0;
  if (rc > 0) rc = 0;
  if (rc == 0) {
    res->status = WD_HEALTH_HEALTHY;
    res->message[0] = '\0';
  } else if (fired) {
    res->status = WD_HEALTH_TIMED_OUT;
    res->code = WD_ETIMEDOUT;
    snprintf(res->message, sizeof res->message,
             "health check timed out after %.3f s",
             (double)j->run->timeout / (double)WD_SEC);
  } else {
    /* Also the caller's cancellation: then the report is dropped. */
    res->status = WD_HEALTH_UNHEALTHY;
    res->code = rc;
  }
  return 0;
}

/* ---- the snapshot ----------------------------------------------------------
 */

typedef struct snap {
  const wd_resource_type *only;
  job *jobs;
  wd_health_result *results;
  size_t n, cap;
} snap;

static int count_one(const wd_resource_info *info, void *arg) {
  snap *s = arg;
  if (!s->only || info->type == s->only) s->cap++;
  return 0;
}

static int take_one(const wd_resource_info *info, void *arg) {
  snap *s = arg;
  if (s->only && info->type != s->only) return 0;
  if (s->n == s->cap) return 1; /* never: nothing opens meanwhile */
  wd_resource_ref(info->resource);
  wd_health_result *res = &s->results[s->n];
  res->id = info->id;
  res->type = info->type;
  wd__name_copy(res->name, sizeof res->name, info->name, NULL);
  s->jobs[s->n].r = info->resource;
  s->jobs[s->n].res = res;
  s->n++;
  return 0;
}

static void release_all(snap *s) {
  for (size_t i = 0; i < s->n; i++)
    wd_resource_unref(s->jobs[i].r);
  wd__free(s->jobs);
}

/* ---- the run ----------------------------------------------------------------
 */

static int spawn_all(wd_task *self, wd_group *g, snap *s, run *ru) {
  for (size_t i = 0; i < s->n; i++) {
    job *j = &s->jobs[i];
    j->run = ru;
    /* Named like the resource, truncated by the spawn. */
    char name[WD_RESOURCE_NAME_MAX + 8];
    snprintf(name, sizeof name, "health %s", j->res->name);
    int rc = wd_spawn(g, check_task, j, &(wd_spawn_opts){.name = name});
    if (rc)
      return wd_fail(self, rc,
                     "health checks: cannot start the check of resource "
                     "'%s' (%s)",
                     j->res->name, j->res->type->name);
  }
  return 0;
}

int wd_health_check_all(wd_task *self, const wd_health_opts *opts,
                        wd_health_report **out) {
  if (!out) return wd_fail(self, WD_EINVAL, "wd_health_check_all: NULL out");
  *out = NULL;
  if (!self)
    return wd_fail(NULL, WD_EINVAL,
                   "wd_health_check_all: NULL task (checks run in tasks)");
  wd_health_opts o = opts ? *opts : (wd_health_opts){0};
  if (o.timeout < 0)
    return wd_fail(self, WD_EINVAL, "wd_health_check_all: negative timeout");
  run ru = {.timeout = o.timeout ? o.timeout : WD_HEALTH_TIMEOUT_DEFAULT};
  int rc = wd_cancel_status(self);
  if (rc) return rc;

  wd_runtime *rt = wd_task_runtime(self);
  snap s = {.only = o.type};
  wd_resource_each(rt, count_one, &s);
  report_block *b = wd__calloc(1, sizeof *b + s.cap * sizeof *b->results);
  if (s.cap && b) s.jobs = wd__calloc(s.cap, sizeof *s.jobs);
  if (!b || (s.cap && !s.jobs)) {
    wd__free(b);
    return wd_fail(self, WD_ENOMEM,
                   "health checks: no memory for %zu resources", s.cap);
  }
  s.results = b->results;
  wd_resource_each(rt, take_one, &s);
  wd_health_report *rep = &b->rep;
  rep->results = b->results;
  rep->n = s.n;
  rep->timeout = ru.timeout;
  rep->started = wd_now(self);

  if (s.n) {
    wd_group g;
    rc = wd_group_enter(self, &g,
                        &(wd_group_opts){.name = "health checks",
                                         .max_running = o.max_concurrent});
    if (rc == 0) {
      rc = spawn_all(self, &g, &s, &ru);
      rc = wd_group_exit(self, &g, rc);
    }
    if (rc == 0 && ru.no_timer)
      rc = wd_fail(self, WD_ENOMEM,
                   "health checks: no memory for the timeout of resource "
                   "'%s'",
                   ru.no_timer);
  }
  release_all(&s);
  if (rc) {
    wd__free(b);
    return rc;
  }
  rep->duration = wd_now(self) - rep->started;
  for (size_t i = 0; i < rep->n; i++) {
    switch (rep->results[i].status) {
    case WD_HEALTH_HEALTHY:
      rep->healthy++;
      break;
    case WD_HEALTH_UNHEALTHY:
      rep->unhealthy++;
      break;
    case WD_HEALTH_UNKNOWN:
      rep->unknown++;
      break;
    case WD_HEALTH_TIMED_OUT:
      rep->timed_out++;
      break;
    }
  }
  *out = rep;
  return 0;
}

void wd_health_report_free(wd_health_report *r) {
  /* The report is the first member of its block. */
  wd__free(r);
}
