/* warden/app.h - the application manager and wd_run_app().
 *
 * A manager (the reference docs' AsyncManager) owns what a program keeps
 * for its whole life: named resources, closed in reverse order of
 * registration at shutdown, each within its own timeout, and background
 * tasks, run in the manager's own task group and cancelled at shutdown
 * with a grace period.  Shutdown goes on past every failure; the first
 * error is the result and the others are its secondary errors (error.h).
 *
 *   wd_manager *m;
 *   int rc = wd_manager_open(self, &(wd_manager_opts){.name = "shop"}, &m);
 *   if (rc) return rc;
 *   wd_resource *db;
 *   rc = wd_manager_open_resource(self, m, &pg_type, &cfg, "db", 0, &db);
 *   if (!rc) rc = wd_manager_spawn(m, "flusher", flush_loop, db);
 *   if (!rc) rc = serve(self, db);
 *   return wd_manager_close(self, m, rc);  // tasks, then db; first error
 *
 * wd_run_app() runs a whole program on a new runtime: startup, main and
 * cleanup, with the app's manager as the runtime's default manager, and
 * SIGINT/SIGTERM wired to a graceful shutdown (a second one forces it),
 * SIGQUIT/SIGUSR1 to a dump of every task and resource.  It returns the
 * process's exit status.  See docs/app.md.
 */
#ifndef WARDEN_APP_H
#define WARDEN_APP_H

#include <stdio.h>

#include "resource.h"
#include "runtime.h"
#include "task.h"
#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wd_manager wd_manager;

/* How long managed tasks get to end after they are cancelled at shutdown,
 * when the options give no grace. */
#define WD_MANAGER_GRACE_DEFAULT (5 * WD_SEC)

#define WD_MANAGER_NAME_MAX 32

/* Options of wd_manager_open(); all zero means the defaults. */
typedef struct wd_manager_opts {
  const char *name; /* copied (truncated to WD_MANAGER_NAME_MAX - 1 bytes);
                     * NULL: "manager" */
  /* At shutdown, how long cancelled tasks get to end before each one still
   * running is reported by name (and counted as a shutdown error); the
   * manager then goes on waiting for them, since no task outlives its
   * group.  0 = WD_MANAGER_GRACE_DEFAULT; WD_TIME_NEVER = wait, never
   * report. */
  wd_time task_grace;
  /* The close timeout of resources registered with 0: 0 = the type's
   * close_grace (see wd_manager_register). */
  wd_time close_timeout;
  FILE *log;    /* shutdown reports; NULL: stderr */
  bool verbose; /* log every step of the shutdown, not only problems */
} wd_manager_opts;

/* Open a manager in self: its task group is entered in self (like
 * wd_group_enter), so close it with wd_manager_close() from self, in
 * reverse order with the scopes and groups self enters meanwhile.  Its
 * tasks run under self's cancel scopes: cancelling self cancels them.
 * The manager is listed in wd_dump() and is itself a live resource of
 * type "manager" in the registry (its health check fails once a managed
 * task has failed).  Checkpoint: no.
 * Returns 0 and stores the manager in *out; or, with *out NULL and nothing
 * left open: WD_EINVAL (NULL self or out, a negative timeout), WD_ENOMEM. */
/* (A variadic macro, so that a compound literal's commas pass through.) */
#define wd_manager_open(self, ...)                                             \
  wd_manager_open_((self), __VA_ARGS__, __FILE__, __LINE__)
int wd_manager_open_(wd_task *self, const wd_manager_opts *opts,
                     wd_manager **out, const char *file, int line);

/* Shut m down and free it, at the end of work whose result is rc:
 *   1. refuse new registrations and tasks (WD_ECLOSED);
 *   2. cancel the managed tasks and wait up to the task grace for them;
 *      report each one still running by name, then wait for it anyway;
 *   3. close the resources in reverse order of registration, each told
 *      how things ended so far (wd_outcome_of(rc), or an error once a
 *      step failed) and each within its close timeout.
 * Every step runs whatever happened before it and whatever happens to
 * self meanwhile (the waits are shielded).  A manager with tasks must be
 * closed by the task that opened it; the default manager made by
 * wd_manager_default() may be closed by any task, or self NULL outside
 * tasks (then closes must not block).  m NULL is a no-op that returns rc.
 * Checkpoint: no (it always runs to its end; bounded by the grace, the
 * timeouts and the tasks' own cleanup).
 * Returns the first error: rc when rc < 0; else the first step's that
 * failed: a task's failure (WD_EGROUP, listing each), a task that ignored
 * its cancellation past the grace or a resource that outran its close
 * timeout (WD_ETIMEDOUT naming it), a close's error; else 0.  Every later
 * error is a secondary error of the first.  WD_EINVAL when self may not
 * close m (it was not opened by self), WD_EPERM for wd_run_app's manager
 * (the app closes it) and WD_EBUSY when m is already closing: then
 * nothing was done. */
int wd_manager_close(wd_task *self, wd_manager *m, int rc);

/* Register r, a ready resource, under name (copied; NULL: r's own name):
 * m now owns r, closes it at shutdown and frees it.  Registration order
 * is closing order, reversed.  close_timeout bounds r's close at
 * shutdown: it is the close's grace (wd_resource_close_within), so a close
 * that outruns it is cut and reported as WD_ETIMEDOUT; 0 means the
 * manager's default, WD_TIME_NEVER (or no default) the type's close_grace.
 * Checkpoint: no.  Returns 0; or, having closed and freed r (told
 * WD_OUTCOME_ERROR) so that it does not leak: WD_EINVAL (NULL m, r not
 * ready, a negative timeout), WD_EBUSY (the name is registered already),
 * WD_ECLOSED (m is shutting down), WD_ENOMEM.  r NULL is WD_EINVAL. */
int wd_manager_register(wd_task *self, wd_manager *m, const char *name,
                        wd_resource *r, wd_time close_timeout);

/* wd_resource_open() and wd_manager_register() in one call: open a
 * resource of type t with config (borrowed: must outlive the resource)
 * named name, owned by m.  *out is borrowed until m closes it.
 * Checkpoint: yes.  Returns 0; or, with *out NULL and nothing left open,
 * what wd_resource_open() and wd_manager_register() return. */
#define wd_manager_open_resource(self, ...)                                    \
  wd_manager_open_resource_((self), __VA_ARGS__, __FILE__, __LINE__)
int wd_manager_open_resource_(wd_task *self, wd_manager *m,
                              const wd_resource_type *t, const void *config,
                              const char *name, wd_time close_timeout,
                              wd_resource **out, const char *file, int line);

/* The resource registered under name, or NULL (also once shutdown has
 * closed it).  Borrowed.  Checkpoint: no. */
wd_resource *wd_manager_find(const wd_manager *m, const char *name);

/* Start fn(task, arg) as a managed background task named name (copied;
 * NULL: "task-<id>") in m's group.  It runs until it returns or shutdown
 * cancels it.  A task that fails is reported at once on m's log and its
 * error collected for shutdown: it does not cancel the others.  May be
 * called by any task of m's runtime.  Checkpoint: no.
 * Returns 0, WD_EINVAL (NULL m or fn), WD_ECLOSED (m is shutting down),
 * WD_ENOSYS (m has no group: the default manager made by
 * wd_manager_default() outside wd_run_app has no task of its own to own
 * one) or WD_ENOMEM. */
#define wd_manager_spawn(m, ...)                                               \
  wd_manager_spawn_((m), __VA_ARGS__, __FILE__, __LINE__)
int wd_manager_spawn_(wd_manager *m, const char *name, wd_task_fn fn, void *arg,
                      const char *file, int line);

/* The default manager of self's runtime (of the current runtime when self
 * is NULL): the one wd_run_app() or wd_manager_set_default() installed,
 * else one created now, named "default", without a task group.  A created
 * one is closed when the runtime ends, after the last task, in synchronous
 * mode: its resources' closes get a NULL task and must not block.  Close
 * it yourself (wd_manager_close) before main returns if they need to.
 * Checkpoint: no.  Returns NULL (error recorded) outside any runtime or
 * for want of memory. */
wd_manager *wd_manager_default(wd_task *self);

/* Make m, opened in self's runtime, that runtime's default manager until
 * m is closed.  Checkpoint: no.  Returns 0, WD_EINVAL (NULL m, another
 * runtime's m, m shutting down) or WD_EBUSY (the runtime has a default
 * manager already). */
int wd_manager_set_default(wd_task *self, wd_manager *m);

/* Accessors; m must be valid.  Checkpoint: no. */
const char *wd_manager_name(const wd_manager *m);
size_t wd_manager_tasks(const wd_manager *m);     /* managed tasks alive */
size_t wd_manager_resources(const wd_manager *m); /* registered, open */

/* ---- wd_run_app ----------------------------------------------------------
 * The exit status wd_run_app() returns, for `return wd_run_app(&app);`
 * in a program's main.  The most serious outcome wins, in this order. */
enum {
  WD_APP_EXIT_OK = 0,      /* main returned 0 or was stopped by a shutdown
                            * request; cleanup and shutdown were clean */
  WD_APP_EXIT_FAILED = 1,  /* startup or main failed */
  WD_APP_EXIT_UNCLEAN = 2, /* main was fine, but cleanup failed, a task
                            * failed or overstayed its grace, a resource
                            * failed to close or outran its timeout, or
                            * the shutdown had to be forced by its timeout */
  WD_APP_EXIT_HUNG = 3,    /* a forced shutdown still had not finished
                            * force_timeout later: the process exited
                            * without finishing it (from a watchdog) */
  WD_APP_EXIT_USAGE = 64,  /* bad options: nothing ran (EX_USAGE) */
  WD_APP_EXIT_START = 70,  /* the runtime, the manager or the signal
                            * handlers could not be set up (EX_SOFTWARE) */
  /* 128 + N: a second SIGINT/SIGTERM (signal N) forced the shutdown, which
   * then finished: 130 for SIGINT, 143 for SIGTERM, as a shell reports a
   * process killed by that signal. */
  WD_APP_EXIT_SIGNAL = 128,
};

/* Defaults of the app's time limits. */
#define WD_APP_CLEANUP_DEFAULT (10 * WD_SEC)
#define WD_APP_SHUTDOWN_DEFAULT (30 * WD_SEC)
#define WD_APP_FORCE_DEFAULT (5 * WD_SEC)

/* What wd_run_app() runs; all zero but what you need means the defaults. */
typedef struct wd_app_opts {
  const char *name; /* in logs, dumps and the root task; NULL: "app" */
  /* Open resources and start tasks (register them with m).  An error
   * skips main; cleanup and shutdown still run.  NULL: nothing. */
  int (*startup)(wd_task *self, wd_manager *m, void *arg);
  /* The program.  A shutdown request cancels it (its checkpoints fail
   * with WD_ECANCELED; returning that is a clean stop).  NULL: wait for a
   * shutdown request (a signal or wd_app_shutdown()). */
  int (*main)(wd_task *self, wd_manager *m, void *arg);
  /* Runs after main (or a failed startup), told how it ended, shielded
   * within cleanup_timeout, before the manager shuts down.  NULL: none. */
  int (*cleanup)(wd_task *self, wd_manager *m, void *arg, wd_outcome how);
  void *arg;
  wd_time cleanup_timeout; /* 0 = WD_APP_CLEANUP_DEFAULT; WD_TIME_NEVER */
  /* From the moment shutdown begins (a signal, wd_app_shutdown(), or main
   * returning), how long until it is forced as by a second signal (on the
   * runtime clock).  0 = WD_APP_SHUTDOWN_DEFAULT; WD_TIME_NEVER = never. */
  wd_time shutdown_timeout;
  /* Once forced, how long the shutdown may still take before the process
   * exits with WD_APP_EXIT_HUNG (wall-clock time, measured by a thread).
   * 0 = WD_APP_FORCE_DEFAULT; WD_TIME_NEVER = never. */
  wd_time force_timeout;
  /* The app's manager.  name NULL: the app's name; log NULL: the app's;
   * verbose: also when the app is verbose. */
  wd_manager_opts manager;
  wd_runtime_opts runtime; /* the runtime's; root_name NULL: the app's */
  FILE *log;               /* signals, problems, the dump; NULL: stderr */
  bool verbose;            /* log every phase, not only problems */
} wd_app_opts;

/* Run the app on a new runtime on this thread:
 *   1. open the app's manager and make it the default manager; handle
 *      SIGINT and SIGTERM (shutdown) and SIGQUIT and SIGUSR1 (dump);
 *   2. startup(), then main() - together "the run", in one cancel scope;
 *   3. cleanup(), told how the run ended;
 *   4. close the manager: tasks cancelled with their grace, resources
 *      closed in reverse order;
 *   5. close the signal handlers and return the exit status.
 * The first SIGINT/SIGTERM cancels the run (shutdown reason "shutdown
 * (SIGTERM)"), or, once shutdown has begun, only says so.  The second
 * forces the shutdown: the run and the cleanup are cancelled, the
 * managed tasks get no grace (a grace wait in progress ends), and a
 * watchdog thread ends the process with WD_APP_EXIT_HUNG if it still has
 * not finished force_timeout later.  SIGQUIT and SIGUSR1 write
 * wd_dump() (every task, resource and manager) to the log and carry on.
 * Problems, signals and the first error (with its secondary errors) are
 * written to the log; after it returns, wd_last_error() on this thread
 * holds the first error.  Returns a WD_APP_EXIT_* status (see above). */
int wd_run_app(const wd_app_opts *opts);

/* Begin the graceful shutdown of the app self runs in, as a first SIGTERM
 * would, with the reason "shutdown requested".  Idempotent.
 * Checkpoint: no.  Returns 0, or WD_EINVAL outside wd_run_app. */
int wd_app_shutdown(wd_task *self);

/* Why the app self runs in is shutting down ("shutdown (SIGINT)",
 * "shutdown (SIGTERM)", "shutdown requested", "main returned", "main
 * failed", "setup failed"), or NULL while it is not (or outside
 * wd_run_app).  Static.  Checkpoint: no. */
const char *wd_app_shutdown_reason(const wd_task *self);

#ifdef __cplusplus
}
#endif
#endif
