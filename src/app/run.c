/* wd_run_app: a whole program as one structured task tree, with signals.
 *
 * The root task nests everything the app owns, outermost first: a final
 * scope (shielded at the very end, so that the wait for the signal
 * handles' close callbacks cannot be cut short), the app's own group (a
 * supervisor task that forces a shutdown that outlives its time limit),
 * the app's manager (its group holds the managed tasks), and the run
 * scope around startup and main.  A shutdown request cancels the run
 * scope only: main stops, cleanup runs, then the manager cancels its
 * tasks with their grace and closes the resources in reverse order - the
 * order in which they can still use each other.
 *
 * Signals arrive as uv_signal_t callbacks on the runtime's thread,
 * between tasks, where cancelling a scope is allowed and cheap.  The
 * handles are referenced on the real clock, so that an app waiting for a
 * signal is not taken for a deadlock; on the virtual clock (tests) they
 * are not, so that virtual time can still jump.  They stay installed
 * through the whole shutdown, so that a second signal can force it, and
 * are closed, their close callbacks awaited, before the root returns.
 *
 * A forced shutdown cannot interrupt what runs shielded (a resource's
 * close, a task that ignores its cancellation), so the bound comes from
 * outside the runtime: a watchdog thread that ends the process with
 * WD_APP_EXIT_HUNG if the shutdown has not finished force_timeout after
 * it was forced.  A thread, because a task that spins without a
 * checkpoint stops the loop and every timer on it too.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "app-internal.h"

enum phase { PH_SETUP, PH_RUN, PH_CLEANUP, PH_SHUTDOWN, PH_DONE };

static const int signums[] = {SIGINT, SIGTERM, SIGQUIT, SIGUSR1};
#define NSIGNALS (sizeof signums / sizeof signums[0])

typedef struct wd__app {
  const wd_app_opts *o;
  char name[WD_MANAGER_NAME_MAX];
  FILE *log;
  bool verbose;
  wd_time cleanup_timeout, shutdown_timeout, force_timeout;
  wd_runtime *rt;
  wd_manager *m;
  wd__app_ext *ext;
  wd_cancel_scope final_scope, run_scope, cleanup_scope;
  bool expecting; /* a wake-up by signal is expected (virtual clock) */
  bool run_entered, cleanup_entered;
  wd_group sys;
  enum phase ph;
  bool shutting_down;
  const char *reason;
  int nshutdown_signals;
  bool forced;
  int force_signo;
  wd_wait *sup_wait;
  uv_signal_t sig[NSIGNALS];
  size_t nhandles, closing;
  wd_wait *close_wait;
  /* outcome */
  bool started;
  int setup_rc;
  bool main_failed;
  size_t shutdown_errors;
  int status;
  /* the watchdog */
  bool wd_started, wd_done;
  uv_thread_t wd_thread;
  uv_mutex_t wd_mu;
  uv_cond_t wd_cond;
} wd__app;

__attribute__((format(printf, 3, 4))) static void
say(const wd__app *a, bool always, const char *fmt, ...) {
  if (!always && !a->verbose) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(a->log, "app '%s': ", a->name);
  vfprintf(a->log, fmt, ap);
  fputc('\n', a->log);
  fflush(a->log);
  va_end(ap);
}

static const char *sig_name(int signo) {
  switch (signo) {
  case SIGINT:
    return "SIGINT";
  case SIGTERM:
    return "SIGTERM";
  case SIGQUIT:
    return "SIGQUIT";
  case SIGUSR1:
    return "SIGUSR1";
  }
  return "signal";
}

static const char *reason_of(int signo) {
  switch (signo) {
  case SIGINT:
    return "shutdown (SIGINT)";
  case SIGTERM:
    return "shutdown (SIGTERM)";
  }
  return "shutdown requested";
}

static const char *phase_name(enum phase ph) {
  switch (ph) {
  case PH_SETUP:
    return "starting";
  case PH_RUN:
    return "running main";
  case PH_CLEANUP:
    return "running cleanup";
  case PH_SHUTDOWN:
    return "shutting the manager down";
  case PH_DONE:
    return "done";
  }
  return "?";
}

void wd__app_dump(wd__app *a, FILE *out) {
  fprintf(out, "app '%s': %s", a->name, phase_name(a->ph));
  if (a->shutting_down) fprintf(out, ", shutting down: %s", a->reason);
  if (a->forced) fprintf(out, ", forced");
  fputc('\n', out);
}

/* ---- the watchdog ------------------------------------------------------- */

static void watchdog_main(void *arg) {
  wd__app *a = arg;
  uint64_t deadline = uv_hrtime() + (uint64_t)a->force_timeout;
  uv_mutex_lock(&a->wd_mu);
  while (!a->wd_done) {
    uint64_t now = uv_hrtime();
    if (now >= deadline) break;
    uv_cond_timedwait(&a->wd_cond, &a->wd_mu, deadline - now);
  }
  bool done = a->wd_done;
  uv_mutex_unlock(&a->wd_mu);
  if (done) return;
  fprintf(a->log,
          "app '%s': shutdown still not finished %.3f s after it was forced; "
          "exiting with status %d\n",
          a->name, wd__secs(a->force_timeout), WD_APP_EXIT_HUNG);
  fflush(a->log);
  _exit(WD_APP_EXIT_HUNG);
}

static void watchdog_start(wd__app *a) {
  if (a->wd_started || a->force_timeout == WD_TIME_NEVER) return;
  if (uv_mutex_init(&a->wd_mu)) return;
  if (uv_cond_init(&a->wd_cond)) {
    uv_mutex_destroy(&a->wd_mu);
    return;
  }
  if (uv_thread_create(&a->wd_thread, watchdog_main, a)) {
    uv_cond_destroy(&a->wd_cond);
    uv_mutex_destroy(&a->wd_mu);
    say(a, true, "cannot start the shutdown watchdog");
    return;
  }
  a->wd_started = true;
}

static void watchdog_stop(wd__app *a) {
  if (!a->wd_started) return;
  uv_mutex_lock(&a->wd_mu);
  a->wd_done = true;
  uv_cond_signal(&a->wd_cond);
  uv_mutex_unlock(&a->wd_mu);
  uv_thread_join(&a->wd_thread);
  uv_cond_destroy(&a->wd_cond);
  uv_mutex_destroy(&a->wd_mu);
  a->wd_started = false;
}

/* ---- shutdown requests -------------------------------------------------- */

/* Begin the graceful shutdown: cancel the run, start the clock of the
 * shutdown timeout.  Never blocks (signal callbacks call it). */
static void begin_shutdown(wd__app *a, const char *reason) {
  if (a->shutting_down) return;
  a->shutting_down = true;
  a->reason = reason;
  if (a->run_entered) wd_cancel_why(&a->run_scope, reason);
  if (a->sup_wait) wd_wake(a->sup_wait, 0);
}

/* Cancel everything without grace and arm the watchdog. */
static void force(wd__app *a, int signo) {
  if (a->forced || a->ph == PH_DONE) return;
  a->forced = true;
  a->force_signo = signo;
  begin_shutdown(a, reason_of(signo));
  if (a->run_entered) wd_cancel(&a->run_scope);
  if (a->cleanup_entered) wd_cancel(&a->cleanup_scope);
  wd__manager_force(a->m);
  char names[256];
  size_t n = wd__manager_task_names(a->m, names, sizeof names);
  int status = signo ? WD_APP_EXIT_SIGNAL + signo : WD_APP_EXIT_UNCLEAN;
  if (a->force_timeout == WD_TIME_NEVER)
    say(a, true, "forcing the shutdown while %s (%zu task%s left%s%s)",
        phase_name(a->ph), n, n == 1 ? "" : "s", n ? ": " : "", names);
  else
    say(a, true,
        "forcing the shutdown while %s (%zu task%s left%s%s); exit status "
        "%d, or %d if it has not ended in %.3f s",
        phase_name(a->ph), n, n == 1 ? "" : "s", n ? ": " : "", names, status,
        WD_APP_EXIT_HUNG, wd__secs(a->force_timeout));
  watchdog_start(a);
}

static void on_shutdown_signal(wd__app *a, int signo) {
  a->nshutdown_signals++;
  if (a->nshutdown_signals == 1) {
    if (a->shutting_down)
      say(a, true, "%s: already shutting down (%s); send it again to force",
          sig_name(signo), a->reason);
    else
      say(a, true, "%s: shutting down; send it again to force",
          sig_name(signo));
    begin_shutdown(a, reason_of(signo));
  } else if (!a->forced) {
    say(a, true, "%s again", sig_name(signo));
    force(a, signo);
  } else {
    say(a, true, "%s: the shutdown is forced already", sig_name(signo));
  }
}

static void on_signal(uv_signal_t *h, int signo) {
  wd__app *a = h->data;
  if (a->ph == PH_DONE) return;
  if (signo == SIGINT || signo == SIGTERM) {
    on_shutdown_signal(a, signo);
    return;
  }
  say(a, true, "%s: task and resource dump", sig_name(signo));
  wd_dump(a->log);
  fflush(a->log);
}

/* ---- signal handles ----------------------------------------------------- */

static void on_closed(uv_handle_t *h) {
  wd__app *a = h->data;
  if (--a->closing == 0 && a->close_wait) wd_wake(a->close_wait, 0);
}

static bool leave_wait(wd_wait *w) { return true; }

/* Close the handles and wait for their close callbacks: libuv touches a
 * handle until then.  Called in the final scope, shielded. */
static void signals_stop(wd_task *self, wd__app *a) {
  if (a->expecting) wd_runtime_expect_wakeup(a->rt, false);
  a->expecting = false;
  for (size_t i = 0; i < a->nhandles; i++) {
    a->closing++;
    uv_close((uv_handle_t *)&a->sig[i], on_closed);
  }
  a->nhandles = 0;
  while (a->closing) {
    wd_wait w = {.what = "signal handles' close",
                 .name = a->name,
                 .on_cancel = leave_wait};
    a->close_wait = &w;
    int rc = wd_park(self, &w);
    a->close_wait = NULL;
    if (rc) break; /* cannot happen: the final scope is shielded */
  }
}

static int signals_start(wd_task *self, wd__app *a) {
  uv_loop_t *loop = wd_runtime_loop(a->rt);
  bool virt = a->o->runtime.clock == WD_CLOCK_VIRTUAL;
  for (size_t i = 0; i < NSIGNALS; i++) {
    int rc = uv_signal_init(loop, &a->sig[i]);
    if (rc)
      return wd_fail(self, rc, "app '%s': cannot handle %s: %s", a->name,
                     sig_name(signums[i]), uv_strerror(rc));
    a->sig[i].data = a;
    a->nhandles++;
    rc = uv_signal_start(&a->sig[i], on_signal, signums[i]);
    if (rc)
      return wd_fail(self, rc, "app '%s': cannot handle %s: %s", a->name,
                     sig_name(signums[i]), uv_strerror(rc));
    if (virt) uv_unref((uv_handle_t *)&a->sig[i]);
  }
  /* Unreferenced on the virtual clock (so time still jumps), the handles
   * are still a way to be woken: waiting only for a signal is no
   * deadlock. */
  if (virt) {
    wd_runtime_expect_wakeup(a->rt, true);
    a->expecting = true;
  }
  return 0;
}

/* ---- the supervisor ----------------------------------------------------- */

/* Waits for the shutdown to begin, then for its time limit, and forces it
 * if it is still going. */
static int supervise(wd_task *self, void *arg) {
  wd__app *a = arg;
  while (!a->shutting_down) {
    wd_wait w = {
        .what = "shutdown request", .name = a->name, .on_cancel = leave_wait};
    a->sup_wait = &w;
    int rc = wd_park(self, &w);
    a->sup_wait = NULL;
    if (rc) return 0;
  }
  if (a->shutdown_timeout == WD_TIME_NEVER) return 0;
  if (wd_sleep(self, a->shutdown_timeout) == 0 && !a->forced) {
    say(a, true, "the shutdown has not ended in %.3f s",
        wd__secs(a->shutdown_timeout));
    force(a, 0);
  }
  return 0;
}

/* ---- the root task ------------------------------------------------------ */

static int wait_for_shutdown(wd_task *self, wd__app *a) {
  wd_wait w = {
      .what = "shutdown request", .name = a->name, .on_cancel = leave_wait};
  return wd_park(self, &w);
}

/* Open the manager, install the signal handlers, start the supervisor. */
static int setup(wd_task *self, wd__app *a) {
  const wd_app_opts *o = a->o;
  wd_manager_opts mo = o->manager;
  if (!mo.name) mo.name = a->name;
  if (!mo.log) mo.log = a->log;
  mo.verbose = mo.verbose || a->verbose;
  int rc = wd_manager_open(self, &mo, &a->m);
  if (rc) return rc;
  wd__manager_app_owned(a->m);
  a->ext = wd__app_ext_find(a->rt);
  a->ext->app = a;
  rc = wd_manager_set_default(self, a->m);
  if (!rc) rc = signals_start(self, a);
  if (!rc)
    rc = wd_spawn(&a->sys, supervise, a,
                  &(wd_spawn_opts){.name = "app-supervisor"});
  return rc;
}

/* startup and main, in the run scope that a shutdown request cancels. */
static int run(wd_task *self, wd__app *a) {
  const wd_app_opts *o = a->o;
  int rc = wd_cancel_scope_enter(self, &a->run_scope, NULL);
  if (rc) return rc;
  a->run_entered = true;
  if (a->shutting_down) /* a signal came early */
    wd_cancel_why(&a->run_scope, a->reason);
  say(a, false, "running");
  rc = o->startup ? o->startup(self, a->m, o->arg) : 0;
  if (rc > 0) rc = 0;
  if (rc == 0 && !wd_cancel_scope_cancelled(&a->run_scope))
    rc = o->main ? o->main(self, a->m, o->arg) : wait_for_shutdown(self, a);
  if (rc > 0) rc = 0;
  a->run_entered = false;
  /* A cancellation the run scope caused is a requested stop: 0. */
  return wd_cancel_scope_exit(self, &a->run_scope, rc);
}

static int cleanup(wd_task *self, wd__app *a, wd_outcome how) {
  const wd_app_opts *o = a->o;
  wd_time t = a->cleanup_timeout;
  wd_cancel_opts co = {.shield = true,
                       .timeout = t == WD_TIME_NEVER ? 0 : t,
                       .fail_what = "cleanup"};
  say(a, false, "cleanup (%s)", wd_outcome_name(how));
  if (wd_cancel_scope_enter(self, &a->cleanup_scope, &co)) /* no memory */
    return o->cleanup(self, a->m, o->arg, how);
  a->cleanup_entered = true;
  if (a->forced) wd_cancel(&a->cleanup_scope);
  int rc = o->cleanup(self, a->m, o->arg, how);
  if (rc > 0) rc = 0;
  a->cleanup_entered = false;
  return wd_cancel_scope_exit(self, &a->cleanup_scope, rc);
}

static int exit_status(const wd__app *a) {
  if (a->setup_rc) return WD_APP_EXIT_START;
  if (a->forced && a->force_signo) return WD_APP_EXIT_SIGNAL + a->force_signo;
  if (a->main_failed) return WD_APP_EXIT_FAILED;
  if (a->shutdown_errors || a->forced) return WD_APP_EXIT_UNCLEAN;
  return WD_APP_EXIT_OK;
}

static void report(wd_task *self, wd__app *a, int rc) {
  const wd_error *e = wd_task_error(self);
  if (a->setup_rc)
    say(a, true, "cannot start (exit status %d):", a->status);
  else if (a->main_failed)
    say(a, true, "main failed (exit status %d):", a->status);
  else if (a->shutdown_errors)
    say(a, true, "the shutdown was not clean (exit status %d):", a->status);
  else {
    say(a, a->status != 0, "stopped (exit status %d)", a->status);
    return;
  }
  if (e && e->code == rc)
    wd_error_print(a->log, e);
  else
    fprintf(a->log, "%s: %s\n", wd_err_name(rc), wd_strerror(rc));
  fflush(a->log);
}

static int app_root(wd_task *self, void *arg) {
  wd__app *a = arg;
  a->started = true;
  a->rt = wd_task_runtime(self);
  int rc = wd_cancel_scope_enter(self, &a->final_scope, NULL);
  if (rc) {
    a->setup_rc = rc;
    a->status = exit_status(a);
    report(self, a, rc);
    return rc;
  }
  rc = wd_group_enter(self, &a->sys, &(wd_group_opts){.name = "app"});
  if (rc) {
    a->setup_rc = rc;
    a->status = exit_status(a);
    report(self, a, rc);
    return wd_cancel_scope_exit(self, &a->final_scope, rc);
  }
  rc = setup(self, a);
  if (rc) {
    a->setup_rc = rc;
  } else {
    a->ph = PH_RUN;
    rc = run(self, a);
    a->main_failed = rc < 0;
  }
  begin_shutdown(a, a->setup_rc      ? "setup failed"
                    : a->main_failed ? "main failed"
                                     : "main returned");

  /* From here on, each step runs whatever happened before it, and the
   * first error stays the result. */
  wd__akeep k;
  wd__akeep_init(&k, self, rc);
  if (!a->setup_rc && a->o->cleanup) {
    a->ph = PH_CLEANUP;
    int crc = cleanup(self, a, wd_outcome_of(rc));
    if (crc < 0) {
      a->shutdown_errors++;
      say(a, true, "cleanup failed: %s", wd_err_name(crc));
    }
    wd__akeep_add(&k, self, crc);
  }
  if (a->m) {
    a->ph = PH_SHUTDOWN;
    size_t nerr = 0;
    wd__akeep_lend(&k, self);
    int mrc = wd__manager_close(self, a->m, k.rc, &nerr);
    wd__akeep_return(&k, self, mrc);
    if (mrc == WD_EINVAL || mrc == WD_EBUSY)
      nerr++; /* the manager could not even shut down */
    a->shutdown_errors += nerr;
    a->m = NULL;
  }
  wd_group_cancel(&a->sys);
  wd_group_exit(self, &a->sys, 0);
  if (a->ext) a->ext->app = NULL;
  wd_cancel_scope_set_shield(&a->final_scope, true);
  signals_stop(self, a);
  a->ph = PH_DONE;
  rc = wd__akeep_finish(&k, self);
  a->status = exit_status(a);
  report(self, a, rc);
  return wd_cancel_scope_exit(self, &a->final_scope, rc);
}

/* ---- the entry point ---------------------------------------------------- */

static int check_opts(const wd_app_opts *o, const char *name, FILE *log) {
  const char *bad = NULL;
  if (o->cleanup_timeout < 0)
    bad = "cleanup_timeout";
  else if (o->shutdown_timeout < 0)
    bad = "shutdown_timeout";
  else if (o->force_timeout < 0)
    bad = "force_timeout";
  else if (o->manager.task_grace < 0)
    bad = "manager.task_grace";
  else if (o->manager.close_timeout < 0)
    bad = "manager.close_timeout";
  if (!bad) return 0;
  fprintf(log, "app '%s': %s is negative\n", name, bad);
  fflush(log);
  return wd_fail(NULL, WD_EINVAL, "app '%s': %s is negative", name, bad);
}

int wd_run_app(const wd_app_opts *opts) {
  if (!opts) {
    fprintf(stderr, "wd_run_app: NULL options\n");
    wd_fail(NULL, WD_EINVAL, "wd_run_app: NULL options");
    return WD_APP_EXIT_USAGE;
  }
  wd__app a = {.o = opts};
  const char *name = opts->name && *opts->name ? opts->name : "app";
  snprintf(a.name, sizeof a.name, "%s", name);
  a.log = opts->log ? opts->log : stderr;
  a.verbose = opts->verbose;
  if (check_opts(opts, a.name, a.log)) return WD_APP_EXIT_USAGE;
  a.cleanup_timeout =
      opts->cleanup_timeout ? opts->cleanup_timeout : WD_APP_CLEANUP_DEFAULT;
  a.shutdown_timeout =
      opts->shutdown_timeout ? opts->shutdown_timeout : WD_APP_SHUTDOWN_DEFAULT;
  a.force_timeout =
      opts->force_timeout ? opts->force_timeout : WD_APP_FORCE_DEFAULT;
  wd_runtime_opts ro = opts->runtime;
  if (!ro.root_name) ro.root_name = a.name;
  int rc = wd_run_with(&ro, app_root, &a);
  /* Abandoned blocking calls are waited for after the root returns: the
   * watchdog stays armed until the runtime is really gone. */
  watchdog_stop(&a);
  if (!a.started) {
    fprintf(a.log, "app '%s': cannot start: %s: %s\n", a.name, wd_err_name(rc),
            wd_last_error() ? wd_last_error()->msg : wd_strerror(rc));
    fflush(a.log);
    return rc == WD_EINVAL || rc == WD_EBUSY ? WD_APP_EXIT_USAGE
                                             : WD_APP_EXIT_START;
  }
  return a.status;
}

/* ---- requests from inside ----------------------------------------------- */

static wd__app *app_of(const wd_task *self) {
  wd_runtime *rt = self ? wd_task_runtime(self) : wd_runtime_current();
  wd__app_ext *x = rt ? wd__app_ext_find(rt) : NULL;
  return x ? x->app : NULL;
}

int wd_app_shutdown(wd_task *self) {
  wd__app *a = app_of(self);
  if (!a) return wd_fail(self, WD_EINVAL, "wd_app_shutdown: not in wd_run_app");
  if (!a->shutting_down) say(a, false, "shutdown requested");
  begin_shutdown(a, "shutdown requested");
  return 0;
}

const char *wd_app_shutdown_reason(const wd_task *self) {
  wd__app *a = app_of(self);
  return a && a->shutting_down ? a->reason : NULL;
}
