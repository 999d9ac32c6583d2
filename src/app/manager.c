/* The application manager: named resources closed in reverse order at
 * shutdown, managed background tasks, and the default manager of a
 * runtime.
 *
 * A manager is a heap object with a task group inside it, entered in the
 * task that opens it: the group is what makes its background tasks
 * structured (none outlives the manager), and it is why a manager with
 * tasks is closed by the task that opened it.  The group supervises: a
 * task that fails is reported on the log at once and its error kept for
 * shutdown, but the others keep running, as asyncio's create_task does.
 * Each task runs behind a small trampoline that keeps it on the manager's
 * list by name, so that shutdown can say which task overstays its grace
 * and can wake when the last one is gone.
 *
 * Shutdown is a sequence of steps that goes on past every failure (the
 * keeper at the end of this file holds the first error and collects the
 * others as its secondaries): cancel the tasks and wait for them, up to
 * the grace, in a shielded scope; report the ones still running; wait for
 * them anyway in wd_group_exit, since no task may outlive its group; then
 * close the resources in reverse order of registration, each told how
 * things ended so far.  Each close runs with the registration's close
 * timeout as its grace (wd_resource_close_within), so a close that
 * outruns it is cut and reported, and shutdown stays bounded.
 * Never closing an earlier resource while a
 * later one is still closing keeps the order a dependency needs.
 *
 * Every manager also holds one resource of type "manager": it makes the
 * manager visible in the registry and the monitor (its health check fails
 * once a task has failed), names a manager that was never closed in the
 * leak report, and - the reason it exists before the app layer's runtime
 * extension does - guarantees that the resource registry is attached
 * before that extension, so that at the runtime's end the default
 * manager's resources are closed before the registry looks for leaks.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "app-internal.h"

typedef struct reg {
  wd_resource *r; /* NULL once closed */
  wd_time timeout;
  char name[WD_RESOURCE_NAME_MAX];
} reg;

typedef struct mtask {
  wd_link link; /* in m->tasks while alive */
  wd_manager *m;
  wd_task_fn fn;
  void *arg;
  wd_task *task; /* once started */
  char name[WD_TASK_NAME_MAX];
} mtask;

enum { M_OPEN, M_CLOSING };

struct wd_manager {
  wd_link link; /* in the extension's list */
  wd__app_ext *ext;
  wd_runtime *rt;
  wd_task *owner; /* the task its group belongs to; NULL: no group */
  wd_resource *anchor;
  reg *regs;
  size_t nregs, capregs;
  wd_link tasks;
  size_t ntasks;
  uint64_t spawned, failed;
  wd_wait *tasks_wait;         /* shutdown, waiting for the last task */
  wd_cancel_scope *wait_scope; /* the shutdown's grace wait */
  wd_time grace, close_timeout;
  FILE *log;
  int state;
  bool verbose, forced, group_open, app_owned;
  char name[WD_MANAGER_NAME_MAX];
  char last_failed[WD_TASK_NAME_MAX];
  wd_group group;
};

/* ---- logging ------------------------------------------------------------ */

__attribute__((format(printf, 3, 4))) static void
say(const wd_manager *m, bool always, const char *fmt, ...) {
  if (!always && !m->verbose) return;
  FILE *f = m->log ? m->log : stderr;
  va_list ap;
  va_start(ap, fmt);
  fprintf(f, "manager '%s': ", m->name);
  vfprintf(f, fmt, ap);
  fputc('\n', f);
  fflush(f);
  va_end(ap);
}

static const char *msg_of(const wd_error *e, int code) {
  return e && e->code == code ? e->msg : wd_strerror(code);
}

static wd_time now_of(wd_task *self) { return wd_now(self); }

/* ---- the runtime extension ---------------------------------------------- */

static const char ext_key = 'm'; /* its address is the key */

wd__app_ext *wd__app_ext_find(wd_runtime *rt) {
  return (wd__app_ext *)wd_runtime_ext_get(rt, &ext_key);
}

static const char *state_name(const wd_manager *m) {
  if (m->state == M_OPEN) return "running";
  return m->forced ? "shutting down (forced)" : "shutting down";
}

static void dump_manager(const wd_manager *m, FILE *out) {
  const wd__app_ext *x = m->ext;
  fprintf(out, "  manager '%s'%s: %s, %zu task%s, %zu resource%s", m->name,
          x && x->dflt == m ? " (default)" : "", state_name(m), m->ntasks,
          m->ntasks == 1 ? "" : "s", wd_manager_resources(m),
          wd_manager_resources(m) == 1 ? "" : "s");
  if (m->failed)
    fprintf(out, ", %llu task%s failed", (unsigned long long)m->failed,
            m->failed == 1 ? "" : "s");
  fputc('\n', out);
  wd__list_each(it, &m->tasks) {
    const mtask *t = wd__container_of(it, mtask, link);
    fprintf(out, "    task '%s': %s\n", t->name,
            t->task ? "running" : "not started");
  }
  for (size_t i = 0; i < m->nregs; i++) {
    const reg *g = &m->regs[i];
    if (!g->r) continue;
    fprintf(out, "    resource '%s' (%s): %s", g->name,
            wd_resource_type_of(g->r)->name,
            wd_resource_state_name(wd_resource_state_of(g->r)));
    wd_time to = g->timeout ? g->timeout : m->close_timeout;
    if (to > 0 && to != WD_TIME_NEVER)
      fprintf(out, ", close timeout %.3f s", wd__secs(to));
    fputc('\n', out);
  }
}

static void ext_dump(wd_runtime_ext *e, FILE *out) {
  wd__app_ext *x = (wd__app_ext *)e;
  if (x->app) wd__app_dump(x->app, out);
  size_t n = 0;
  wd__list_each(it, &x->managers) n++;
  fprintf(out, "managers: %zu open\n", n);
  wd__list_each(it, &x->managers) {
    dump_manager(wd__container_of(it, wd_manager, link), out);
  }
}

static int close_impl(wd_task *self, wd_manager *m, int rc, size_t *nerrors);

/* The runtime ends, every task has: close what is left (the default
 * manager made by wd_manager_default), synchronously.  The thread's error
 * is the root task's, which wd_run's caller reads: keep it. */
static void ext_exit(wd_runtime_ext *e, wd_runtime *rt) {
  wd__app_ext *x = (wd__app_ext *)e;
  wd_error *root_err = wd_error_detach(NULL);
  while (!wd__list_empty(&x->managers)) {
    wd_manager *m = wd__container_of(x->managers.next_, wd_manager, link);
    if (m->group_open) {
      /* Cannot happen: its owner would have returned with the group
       * open, which the core reports and aborts on. */
      wd__list_unlink(&m->link);
      continue;
    }
    say(m, false, "closing at the end of the runtime");
    size_t nerr = 0;
    int rc = close_impl(NULL, m, 0, &nerr);
    if (rc < 0) {
      FILE *f = m->log ? m->log : stderr;
      wd_error_print(f, wd_last_error());
      fflush(f);
    }
    wd_error_clear(NULL);
  }
  wd_error_restore(NULL, root_err);
  wd__free(x);
}

static wd__app_ext *ext_get(wd_task *self, wd_runtime *rt) {
  wd__app_ext *x = wd__app_ext_find(rt);
  if (x) return x;
  x = wd__calloc(1, sizeof *x);
  if (!x) return NULL;
  x->ext.key = &ext_key;
  x->ext.dump = ext_dump;
  x->ext.at_exit = ext_exit;
  x->rt = rt;
  wd__list_init(&x->managers);
  if (wd_runtime_ext_add(rt, &x->ext)) {
    wd__free(x);
    return NULL;
  }
  return x;
}

/* ---- the manager's own resource ----------------------------------------- */

typedef struct anchor {
  wd_manager *m;
} anchor;

static int anchor_health(wd_task *self, void *data) {
  const wd_manager *m = ((anchor *)data)->m;
  if (!m) return 0;
  if (m->state != M_OPEN)
    return wd_fail(self, WD_ECLOSED, "manager '%s' is shutting down", m->name);
  if (m->failed)
    return wd_fail(self, WD_EGROUP,
                   "manager '%s': %llu managed task%s failed (last: '%s')",
                   m->name, (unsigned long long)m->failed,
                   m->failed == 1 ? "" : "s", m->last_failed);
  return 0;
}

static const wd_resource_type anchor_type = {
    .name = "manager", .size = sizeof(anchor), .health = anchor_health};

/* ---- open --------------------------------------------------------------- */

static int check_opts(wd_task *self, const wd_manager_opts *o) {
  if (o->task_grace < 0)
    return wd_fail(self, WD_EINVAL, "manager '%s': negative task_grace",
                   o->name ? o->name : "manager");
  if (o->close_timeout < 0)
    return wd_fail(self, WD_EINVAL, "manager '%s': negative close_timeout",
                   o->name ? o->name : "manager");
  return 0;
}

static void name_copy(char *dst, size_t n, const char *name,
                      const char *fallback) {
  if (!name || !*name) name = fallback;
  size_t len = strlen(name);
  if (len >= n) len = n - 1;
  memcpy(dst, name, len);
  dst[len] = '\0';
}

/* Make a manager in rt; with a group entered in self when with_group. */
static int manager_new(wd_task *self, wd_runtime *rt, const wd_manager_opts *o,
                       bool with_group, wd_manager **out, const char *file,
                       int line) {
  wd_manager *m = wd__calloc(1, sizeof *m);
  if (!m)
    return wd_fail(self, WD_ENOMEM, "manager '%s': no memory",
                   o->name ? o->name : "manager");
  name_copy(m->name, sizeof m->name, o->name, "manager");
  m->rt = rt;
  m->grace = o->task_grace ? o->task_grace : WD_MANAGER_GRACE_DEFAULT;
  m->close_timeout = o->close_timeout;
  m->log = o->log;
  m->verbose = o->verbose;
  wd__list_init(&m->tasks);
  /* Making a manager is not a checkpoint: open its resource shielded. */
  wd_cancel_scope sh;
  bool shielded =
      self &&
      wd_cancel_scope_enter(self, &sh, &(wd_cancel_opts){.shield = true}) == 0;
  int rc = wd_resource_open_(self, &anchor_type, NULL, m->name, &m->anchor,
                             file, line);
  if (shielded) wd_cancel_scope_exit(self, &sh, 0);
  if (rc) {
    wd__free(m);
    return rc;
  }
  ((anchor *)wd_resource_data(m->anchor))->m = m;
  /* After the resource: the registry is attached first (see app-internal.h). */
  m->ext = ext_get(self, rt);
  if (!m->ext) {
    rc = wd_fail(self, WD_ENOMEM, "manager '%s': no memory", m->name);
    wd_resource_close(self, m->anchor, rc);
    wd__free(m);
    return rc;
  }
  if (with_group) {
    rc = wd_group_enter_(self, &m->group,
                         &(wd_group_opts){.name = m->name, .supervisor = true},
                         file, line);
    if (rc) {
      wd_resource_close(self, m->anchor, rc);
      wd__free(m);
      return rc;
    }
    m->owner = self;
    m->group_open = true;
  }
  wd__list_push_back(&m->ext->managers, &m->link);
  *out = m;
  return 0;
}

int wd_manager_open_(wd_task *self, const wd_manager_opts *opts,
                     wd_manager **out, const char *file, int line) {
  if (out) *out = NULL;
  if (!self || !out)
    return wd_fail(self, WD_EINVAL, "wd_manager_open: NULL %s",
                   !self ? "task" : "out");
  wd_manager_opts o = opts ? *opts : (wd_manager_opts){0};
  int rc = check_opts(self, &o);
  if (rc) return rc;
  return manager_new(self, wd_task_runtime(self), &o, true, out, file, line);
}

/* ---- the default manager ------------------------------------------------ */

wd_manager *wd_manager_default(wd_task *self) {
  wd_runtime *rt = self ? wd_task_runtime(self) : wd_runtime_current();
  if (!rt) {
    wd_fail(self, WD_EINVAL, "wd_manager_default: no runtime");
    return NULL;
  }
  wd__app_ext *x = wd__app_ext_find(rt);
  if (x && x->dflt) return x->dflt;
  wd_manager *m;
  if (manager_new(self, rt, &(wd_manager_opts){.name = "default"}, false, &m,
                  __FILE__, __LINE__))
    return NULL;
  m->ext->dflt = m;
  m->ext->dflt_lazy = true;
  return m;
}

int wd_manager_set_default(wd_task *self, wd_manager *m) {
  wd_runtime *rt = self ? wd_task_runtime(self) : wd_runtime_current();
  if (!m)
    return wd_fail(self, WD_EINVAL, "wd_manager_set_default: NULL manager");
  if (!rt || m->rt != rt)
    return wd_fail(self, WD_EINVAL,
                   "wd_manager_set_default: manager '%s' belongs to another "
                   "runtime",
                   m->name);
  if (m->state != M_OPEN)
    return wd_fail(self, WD_EINVAL,
                   "wd_manager_set_default: manager '%s' is shutting down",
                   m->name);
  if (m->ext->dflt && m->ext->dflt != m)
    return wd_fail(self, WD_EBUSY,
                   "wd_manager_set_default: the runtime's default manager is "
                   "'%s' already",
                   m->ext->dflt->name);
  m->ext->dflt = m;
  m->ext->dflt_lazy = false;
  return 0;
}

/* ---- resources ---------------------------------------------------------- */

static reg *find_reg(const wd_manager *m, const char *name) {
  for (size_t i = 0; i < m->nregs; i++)
    if (m->regs[i].r && strcmp(m->regs[i].name, name) == 0) return &m->regs[i];
  return NULL;
}

/* Why m cannot take a resource named name now, or 0. */
static int refuse(wd_task *self, const wd_manager *m, const char *name,
                  wd_time timeout) {
  if (timeout < 0)
    return wd_fail(self, WD_EINVAL,
                   "manager '%s': negative close timeout for resource '%s'",
                   m->name, name);
  if (m->state != M_OPEN)
    return wd_fail(self, WD_ECLOSED,
                   "manager '%s' is shutting down: resource '%s' not "
                   "registered",
                   m->name, name);
  if (find_reg(m, name))
    return wd_fail(self, WD_EBUSY,
                   "manager '%s': a resource named '%s' is registered "
                   "already",
                   m->name, name);
  return 0;
}

static int reserve(wd_task *self, wd_manager *m, const char *name) {
  if (m->nregs < m->capregs) return 0;
  size_t cap = m->capregs ? 2 * m->capregs : 8;
  reg *a = wd__realloc(m->regs, cap * sizeof *a);
  if (!a)
    return wd_fail(self, WD_ENOMEM,
                   "manager '%s': no memory to register resource '%s'", m->name,
                   name);
  m->regs = a;
  m->capregs = cap;
  return 0;
}

int wd_manager_register(wd_task *self, wd_manager *m, const char *name,
                        wd_resource *r, wd_time close_timeout) {
  if (!r) return wd_fail(self, WD_EINVAL, "wd_manager_register: NULL resource");
  char nm[WD_RESOURCE_NAME_MAX];
  name_copy(nm, sizeof nm, name, wd_resource_name(r));
  int rc;
  if (!m)
    rc = wd_fail(self, WD_EINVAL, "wd_manager_register: NULL manager for '%s'",
                 nm);
  else if (wd_resource_state_of(r) != WD_RESOURCE_READY)
    rc =
        wd_fail(self, WD_EINVAL, "manager '%s': resource '%s' is %s, not ready",
                m->name, nm, wd_resource_state_name(wd_resource_state_of(r)));
  else if (!(rc = refuse(self, m, nm, close_timeout)))
    rc = reserve(self, m, nm);
  if (rc) /* what was handed over is released, not lost */
    return wd_resource_close(self, r, rc);
  reg *g = &m->regs[m->nregs++];
  g->r = r;
  g->timeout = close_timeout;
  memcpy(g->name, nm, sizeof nm);
  say(m, false, "registered resource '%s' (%s)", g->name,
      wd_resource_type_of(r)->name);
  return 0;
}

int wd_manager_open_resource_(wd_task *self, wd_manager *m,
                              const wd_resource_type *t, const void *config,
                              const char *name, wd_time close_timeout,
                              wd_resource **out, const char *file, int line) {
  if (!out)
    return wd_fail(self, WD_EINVAL, "wd_manager_open_resource: NULL out");
  *out = NULL;
  if (!m || !t)
    return wd_fail(self, WD_EINVAL, "wd_manager_open_resource: NULL %s",
                   !m ? "manager" : "resource type");
  char nm[WD_RESOURCE_NAME_MAX];
  name_copy(nm, sizeof nm, name, t->name ? t->name : "?");
  /* Refuse before opening what could not be kept. */
  int rc = refuse(self, m, nm, close_timeout);
  if (!rc) rc = reserve(self, m, nm);
  if (rc) return rc;
  wd_resource *r;
  rc = wd_resource_open_(self, t, config, name, &r, file, line);
  if (rc) return rc;
  /* The open may have blocked: register re-checks, and closes r if the
   * manager began shutting down or the name was taken meanwhile. */
  rc = wd_manager_register(self, m, nm, r, close_timeout);
  if (rc) return rc;
  *out = r;
  return 0;
}

wd_resource *wd_manager_find(const wd_manager *m, const char *name) {
  if (!m || !name) return NULL;
  reg *g = find_reg(m, name);
  return g ? g->r : NULL;
}

/* ---- managed tasks ------------------------------------------------------ */

static int mtask_main(wd_task *self, void *arg) {
  mtask *t = arg;
  wd_manager *m = t->m;
  t->task = self;
  if (!t->name[0]) name_copy(t->name, sizeof t->name, wd_task_name(self), "?");
  int rc = t->fn(self, t->arg);
  if (rc > 0) rc = 0;
  if (rc < 0 && !(wd_is_cancel(rc) && wd_cancel_status(self))) {
    m->failed++;
    memcpy(m->last_failed, t->name, sizeof t->name);
    say(m, true, "task '%s' failed: %s: %s", t->name, wd_err_name(rc),
        msg_of(wd_task_error(self), rc));
  } else if (rc < 0) {
    say(m, false, "task '%s' cancelled", t->name);
  } else {
    say(m, false, "task '%s' ended", t->name);
  }
  wd__list_unlink(&t->link);
  m->ntasks--;
  if (m->ntasks == 0 && m->tasks_wait) wd_wake(m->tasks_wait, 0);
  wd__free(t);
  return rc;
}

int wd_manager_spawn_(wd_manager *m, const char *name, wd_task_fn fn, void *arg,
                      const char *file, int line) {
  wd_task *self = wd_self();
  if (!m || !fn)
    return wd_fail(self, WD_EINVAL, "wd_manager_spawn: NULL %s",
                   !m ? "manager" : "fn");
  const char *nm = name ? name : "(unnamed)";
  if (!m->group_open)
    return wd_fail(self, WD_ENOSYS,
                   "manager '%s' has no task group: task '%s' not started "
                   "(open a manager with wd_manager_open, or run under "
                   "wd_run_app)",
                   m->name, nm);
  if (m->state != M_OPEN)
    return wd_fail(self, WD_ECLOSED,
                   "manager '%s' is shutting down: task '%s' not started",
                   m->name, nm);
  mtask *t = wd__calloc(1, sizeof *t);
  if (!t)
    return wd_fail(self, WD_ENOMEM, "manager '%s': no memory for task '%s'",
                   m->name, nm);
  t->m = m;
  t->fn = fn;
  t->arg = arg;
  if (name) name_copy(t->name, sizeof t->name, name, "");
  wd__list_push_back(&m->tasks, &t->link);
  m->ntasks++;
  int rc = wd_spawn_(&m->group, mtask_main, t, &(wd_spawn_opts){.name = name},
                     file, line);
  if (rc) {
    wd__list_unlink(&t->link);
    m->ntasks--;
    wd__free(t);
    return rc;
  }
  m->spawned++;
  return 0;
}

size_t wd__manager_task_names(const wd_manager *m, char *buf, size_t n) {
  size_t len = 0, count = 0;
  if (n) buf[0] = '\0';
  if (!m) return 0;
  wd__list_each(it, &m->tasks) {
    const mtask *t = wd__container_of(it, mtask, link);
    if (len < n) {
      int k = snprintf(buf + len, n - len, "%s'%s'", count ? ", " : "",
                       t->name[0] ? t->name : "?");
      if (k > 0) len += (size_t)k;
    }
    count++;
  }
  return count;
}

/* ---- shutdown ----------------------------------------------------------- */

static bool leave_wait(wd_wait *w) { return true; }

/* The tasks are not cancelled here: their group's scope is also the
 * owner's, and cancelling it before the shutdown reaches the tasks would
 * cancel the owner's own work inside it (an app's cleanup).  A forced
 * shutdown cancels them without grace when it gets to them. */
void wd__manager_force(wd_manager *m) {
  if (!m || m->forced) return;
  m->forced = true;
  if (m->wait_scope) wd_cancel(m->wait_scope);
}

/* Cancel the managed tasks, wait up to the grace for them, and report
 * each one still running. */
static void stop_tasks(wd_task *self, wd_manager *m, wd__akeep *k) {
  if (!m->ntasks) return;
  if (m->grace == WD_TIME_NEVER)
    say(m, false, "cancelling %zu task%s (no grace limit)", m->ntasks,
        m->ntasks == 1 ? "" : "s");
  else
    say(m, false, "cancelling %zu task%s (grace %.3f s)", m->ntasks,
        m->ntasks == 1 ? "" : "s", wd__secs(m->grace));
  wd_time t0 = now_of(self);
  wd_group_cancel(&m->group);
  wd_cancel_scope s;
  wd_cancel_opts o = {.shield = true,
                      .timeout = m->grace == WD_TIME_NEVER ? 0 : m->grace};
  /* Forced, or without memory for the scope's timer: no grace, and no
   * report (nobody waited); the group's exit waits for them all the same. */
  if (m->forced || wd_cancel_scope_enter(self, &s, &o) != 0) return;
  {
    m->wait_scope = &s;
    while (m->ntasks && !m->forced) {
      wd_wait w = {
          .what = "managed tasks", .name = m->name, .on_cancel = leave_wait};
      m->tasks_wait = &w;
      int rc = wd_park(self, &w);
      m->tasks_wait = NULL;
      if (rc) break;
    }
    m->wait_scope = NULL;
    wd_cancel_scope_exit(self, &s, 0);
  }
  if (!m->ntasks) return;
  wd_time waited = now_of(self) - t0;
  wd__list_each(it, &m->tasks) {
    mtask *t = wd__container_of(it, mtask, link);
    say(m, true,
        "task '%s' is still running %.3f s after it was cancelled%s; "
        "waiting for it",
        t->name, wd__secs(waited), m->forced ? " (shutdown forced)" : "");
    wd__akeep_add(k, self,
                  wd_fail(self, WD_ETIMEDOUT,
                          "manager '%s': task '%s' ignored its cancellation "
                          "for %.3f s",
                          m->name, t->name, wd__secs(waited)));
  }
}

/* Close one registration within its own timeout: the close runs with that
 * as its grace, so a close that outruns it is cut and fails with
 * WD_ETIMEDOUT, and the next resource's close starts on time. */
static void close_reg(wd_task *self, wd_manager *m, reg *g, wd__akeep *k) {
  wd_resource *r = g->r;
  const char *type = wd_resource_type_of(r)->name;
  wd_time timeout = g->timeout ? g->timeout : m->close_timeout;
  say(m, false, "closing resource '%s' (%s)", g->name, type);
  wd_time t0 = self ? now_of(self) : 0;
  wd__akeep_lend(k, self);
  const wd_error *e = wd__akeep_return(
      k, self,
      wd_resource_close_within(self, r, k->rc,
                               timeout == WD_TIME_NEVER ? 0 : timeout));
  g->r = NULL;
  wd_time took = self ? now_of(self) - t0 : 0;
  if (e) {
    /* The innermost cause says why ("disk full"); the outer layers only
     * say which resource, which the line says already. */
    const wd_error *why = e;
    while (why->cause)
      why = why->cause;
    say(m, true, "resource '%s' (%s) failed to close after %.3f s: %s: %s",
        g->name, type, wd__secs(took), wd_err_name(e->code), why->msg);
  } else {
    say(m, false, "closed resource '%s' (%s) in %.3f s", g->name, type,
        wd__secs(took));
  }
}

static int close_impl(wd_task *self, wd_manager *m, int rc, size_t *nerrors) {
  m->state = M_CLOSING;
  wd_time t0 = self ? now_of(self) : 0;
  wd__akeep k;
  wd__akeep_init(&k, self, rc);
  say(m, false, "shutting down: %zu task%s, %zu resource%s", m->ntasks,
      m->ntasks == 1 ? "" : "s", wd_manager_resources(m),
      wd_manager_resources(m) == 1 ? "" : "s");
  if (m->group_open) {
    stop_tasks(self, m, &k);
    int grc = wd_group_exit(self, &m->group, 0);
    if (grc == WD_EINVAL) {
      /* A scope or group entered after the manager is still open: the
       * tasks are cancelled but nothing can be waited for or closed. */
      wd__akeep_finish(&k, self);
      return wd_fail(self, WD_EINVAL,
                     "manager '%s': a cancel scope or group entered after "
                     "the manager is still open (exit it first); nothing "
                     "closed",
                     m->name);
    }
    m->group_open = false;
    if (grc < 0 && !(wd_is_cancel(grc) && wd_cancel_status(self)))
      wd__akeep_add(&k, self, grc);
  }
  for (size_t i = m->nregs; i-- > 0;)
    if (m->regs[i].r) close_reg(self, m, &m->regs[i], &k);
  wd_resource_close(self, m->anchor, 0); /* no close function: cannot fail */
  wd__list_unlink(&m->link);
  if (m->ext->dflt == m) m->ext->dflt = NULL;
  if (k.count)
    say(m, true, "shut down with %zu error%s in %.3f s", k.count,
        k.count == 1 ? "" : "s", self ? wd__secs(now_of(self) - t0) : 0.0);
  else
    say(m, false, "shut down in %.3f s",
        self ? wd__secs(now_of(self) - t0) : 0.0);
  if (nerrors) *nerrors = k.count;
  wd__free(m->regs);
  wd__free(m);
  return wd__akeep_finish(&k, self);
}

int wd__manager_close(wd_task *self, wd_manager *m, int rc, size_t *nerrors) {
  if (nerrors) *nerrors = 0;
  if (!m) return rc;
  if (m->group_open && self != m->owner)
    return wd_fail(self, WD_EINVAL,
                   "manager '%s': only task '%s', whose group holds its "
                   "tasks, may close it",
                   m->name, wd_task_name(m->owner));
  if (m->state != M_OPEN)
    return wd_fail(self, WD_EBUSY, "manager '%s' is already shutting down",
                   m->name);
  return close_impl(self, m, rc, nerrors);
}

int wd_manager_close(wd_task *self, wd_manager *m, int rc) {
  if (m && m->app_owned)
    return wd_fail(self, WD_EPERM,
                   "manager '%s' belongs to wd_run_app, which closes it",
                   m->name);
  return wd__manager_close(self, m, rc, NULL);
}

void wd__manager_app_owned(wd_manager *m) { m->app_owned = true; }

/* ---- accessors ---------------------------------------------------------- */

const char *wd_manager_name(const wd_manager *m) { return m->name; }

size_t wd_manager_tasks(const wd_manager *m) { return m->ntasks; }

size_t wd_manager_resources(const wd_manager *m) {
  size_t n = 0;
  for (size_t i = 0; i < m->nregs; i++)
    if (m->regs[i].r) n++;
  return n;
}

/* ---- the keeper --------------------------------------------------------- */

static const wd_error *current(wd_task *self) {
  return self ? wd_task_error(self) : wd_last_error();
}

/* The detail of code: the task's current error if it is about code, else
 * a record made now.  Out of the task either way (may be NULL). */
static wd_error *take(wd_task *self, int code) {
  const wd_error *cur = current(self);
  if (!cur || cur->code != code) wd_fail(self, code, "%s", wd_strerror(code));
  return wd_error_detach(self);
}

void wd__akeep_init(wd__akeep *k, wd_task *self, int rc) {
  *k = (wd__akeep){0};
  if (rc >= 0) return;
  k->rc = rc;
  const wd_error *cur = current(self);
  if (cur && cur->code == rc) k->first = wd_error_detach(self);
}

const wd_error *wd__akeep_add(wd__akeep *k, wd_task *self, int crc) {
  if (crc >= 0) return NULL;
  k->count++;
  wd_error *d = take(self, crc);
  if (!k->rc) {
    k->rc = crc;
    k->first = d;
    return d;
  }
  if (!k->first) k->first = take(self, k->rc);
  if (!k->first || !d) {
    if (k->first) wd_error_add_secondary(k->first, NULL); /* counted */
    wd_error_free(d);
    return NULL;
  }
  return wd_error_add_secondary(k->first, d) == 0 ? d : NULL;
}

void wd__akeep_lend(wd__akeep *k, wd_task *self) {
  k->lent_sec = k->first ? k->first->nsecondary : 0;
  /* With no error to lend, the slot is cleared all the same: a stale error
   * of the same code must not pass for the step's cause. */
  wd_error_restore(self, k->first);
  k->first = NULL;
}

const wd_error *wd__akeep_return(wd__akeep *k, wd_task *self, int crc) {
  if (!k->rc) return wd__akeep_add(k, self, crc);
  const wd_error *cur = current(self);
  k->first = cur && cur->code == k->rc ? wd_error_detach(self) : NULL;
  size_t n = k->first ? k->first->nsecondary : 0;
  if (n <= k->lent_sec) return NULL;
  k->count += n - k->lent_sec;
  size_t kept = k->first->nsecondary_kept;
  return kept ? k->first->secondary[kept - 1] : NULL;
}

int wd__akeep_finish(wd__akeep *k, wd_task *self) {
  if (k->rc) wd_error_restore(self, k->first);
  k->first = NULL;
  return k->rc;
}
