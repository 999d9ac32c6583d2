/* Resource types: the lifecycle and its states, open failures that leave
 * nothing to close, cancellation during open, use and close, the close's
 * grace deadline, close once across paths and tasks, health checks, the
 * registry (counters, iterator, dump), the leak report (in a child
 * process), blocking resources on the thread pool and the type macros,
 * synchronous use, bad arguments, and every allocation failure point.
 *
 * The `probe` type counts its opens and closes and remembers how it was
 * closed; its config says where to sleep and what to fail.  Time runs on
 * the virtual clock. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

typedef struct probe_cfg {
  wd_time open_sleep;
  int open_fail; /* after the sleep */
  wd_time close_sleep;
  int close_fail;
  wd_cancel_scope *cancel_in_open; /* cancelled by open, which succeeds */
} probe_cfg;

typedef struct probe {
  const probe_cfg *cfg;
  int magic;
} probe;

static int opens, open_calls, closes, checks;
static wd_outcome last_how;
static int close_slept;
static wd_time close_at;

static void reset(void) {
  opens = open_calls = closes = checks = 0;
  last_how = (wd_outcome)-1;
  close_slept = 1;
  close_at = -1;
}

static int probe_open(wd_task *self, void *data, const void *config) {
  const probe_cfg *c = config;
  probe *p = data;
  open_calls++;
  cr_assert_eq(p->magic, 0, "state starts zeroed");
  if (c && c->open_sleep) {
    int rc = wd_sleep(self, c->open_sleep);
    if (rc) return rc; /* nothing built yet: nothing to release */
  }
  if (c && c->open_fail) return wd_fail(self, c->open_fail, "probe refused");
  if (c && c->cancel_in_open) wd_cancel(c->cancel_in_open);
  p->cfg = c;
  p->magic = 42;
  opens++;
  return 0;
}

static int probe_close(wd_task *self, void *data, wd_outcome how) {
  probe *p = data;
  cr_assert_eq(p->magic, 42, "close only sees what open built");
  closes++;
  last_how = how;
  if (p->cfg && p->cfg->close_sleep)
    close_slept = wd_sleep(self, p->cfg->close_sleep);
  close_at = wd_now(self);
  if (p->cfg && p->cfg->close_fail)
    return wd_fail(self, p->cfg->close_fail, "probe close broke");
  return close_slept == 1 ? 0 : close_slept;
}

static int probe_health(wd_task *self, void *data) {
  checks++;
  return ((probe *)data)->magic == 42 ? 0 : WD_EINVAL;
}

static const wd_resource_type probe_type = {.name = "probe",
                                            .size = sizeof(probe),
                                            .open = probe_open,
                                            .close = probe_close,
                                            .health = probe_health};

static const wd_resource_type graceful_type = {.name = "graceful",
                                               .size = sizeof(probe),
                                               .open = probe_open,
                                               .close = probe_close,
                                               .close_grace = WD_SEC};

static const char *last_msg(void) {
  const wd_error *e = wd_last_error();
  return e ? e->msg : "(none)";
}

/* ---- the lifecycle ------------------------------------------------------ */

static int lifecycle_main(wd_task *self, void *arg) {
  probe_cfg cfg = {0};
  wd_resource *r;
  cr_assert_eq(wd_resource_open(self, &probe_type, &cfg, "primary", &r), 0);
  cr_assert_eq(wd_resource_state_of(r), WD_RESOURCE_READY);
  cr_assert_str_eq(wd_resource_name(r), "primary");
  cr_assert_eq(wd_resource_type_of(r), &probe_type);
  cr_assert_eq(((probe *)wd_resource_data(r))->cfg, &cfg);
  cr_assert_eq(wd_resource_id(r), 1);
  cr_assert_eq(wd_resource_health(self, r), 0);
  cr_assert_eq(checks, 1);
  wd_resource_stats st;
  wd_resource_stats_get(NULL, &probe_type, &st);
  cr_assert_eq(st.created, 1);
  cr_assert_eq(st.active, 1);
  cr_assert_eq(wd_resource_close(self, r, 0), 0);
  cr_assert_eq(closes, 1);
  cr_assert_eq(last_how, WD_OUTCOME_OK);
  wd_resource_stats_get(NULL, &probe_type, &st);
  cr_assert_eq(st.created, 1);
  cr_assert_eq(st.closed, 1);
  cr_assert_eq(st.active, 0);
  cr_assert_eq(st.open_errors + st.close_errors, 0);
  /* Unnamed: the type's name. */
  cr_assert_eq(wd_resource_open(self, &probe_type, NULL, NULL, &r), 0);
  cr_assert_str_eq(wd_resource_name(r), "probe");
  cr_assert_eq(wd_resource_close(self, r, WD_EPERM), WD_EPERM,
               "the result passes through");
  cr_assert_eq(last_how, WD_OUTCOME_ERROR);
  return 0;
}

Test(resource, open_use_close) {
  reset();
  cr_assert_eq(run_virtual(lifecycle_main, NULL), 0);
  assert_no_leaks();
}

static int open_fails_main(wd_task *self, void *arg) {
  probe_cfg cfg = {.open_fail = -ECONNREFUSED};
  wd_resource *r = (wd_resource *)&cfg;
  int rc = wd_resource_open(self, &probe_type, &cfg, "db", &r);
  cr_assert_eq(rc, -ECONNREFUSED);
  cr_assert_null(r);
  const wd_error *e = wd_task_error(self);
  cr_assert_str_eq(e->msg, "resource 'db' (probe): open failed");
  cr_assert_not_null(e->cause);
  cr_assert_str_eq(e->cause->msg, "probe refused");
  wd_resource_stats st;
  wd_resource_stats_get(NULL, NULL, &st);
  cr_assert_eq(st.created, 1);
  cr_assert_eq(st.open_errors, 1);
  cr_assert_eq(st.active + st.closed, 0);
  return 0;
}

Test(resource, an_open_that_fails_leaves_nothing_to_close) {
  reset();
  cr_assert_eq(run_virtual(open_fails_main, NULL), 0);
  cr_assert_eq(open_calls, 1);
  cr_assert_eq(closes, 0);
  assert_no_leaks();
}

/* ---- cancellation -------------------------------------------------------- */

static int cancel_open_main(wd_task *self, void *arg) {
  probe_cfg cfg = {.open_sleep = 10 * WD_SEC};
  wd_cancel_scope cs;
  wd_move_on_after(self, &cs, WD_SEC);
  wd_resource *r;
  int rc = wd_resource_open(self, &probe_type, &cfg, "slow", &r);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  cr_assert_null(r);
  cr_assert_eq(wd_now(self), WD_SEC);
  cr_assert_eq(wd_cancel_scope_exit(self, &cs, rc), 0);
  /* A cancelled task does not even start an open. */
  wd_move_on_after(self, &cs, WD_SEC);
  wd_cancel(&cs);
  cr_assert_eq(wd_resource_open(self, &probe_type, &cfg, "never", &r),
               WD_ECANCELED);
  wd_cancel_scope_exit(self, &cs, WD_ECANCELED);
  wd_resource_stats st;
  wd_resource_stats_get(NULL, &probe_type, &st);
  cr_assert_eq(st.created, 1);
  cr_assert_eq(st.open_errors, 1);
  return 0;
}

Test(resource, cancellation_during_open_leaves_nothing) {
  reset();
  cr_assert_eq(run_virtual(cancel_open_main, NULL), 0);
  cr_assert_eq(open_calls, 1);
  cr_assert_eq(opens + closes, 0);
  assert_no_leaks();
}

static int undo_main(wd_task *self, void *arg) {
  wd_cancel_scope cs;
  wd_move_on_after(self, &cs, 10 * WD_SEC);
  probe_cfg cfg = {.cancel_in_open = &cs};
  wd_resource *r;
  int rc = wd_resource_open(self, &probe_type, &cfg, "undone", &r);
  cr_assert_eq(rc, WD_ECANCELED);
  cr_assert_null(r);
  cr_assert_eq(wd_cancel_scope_exit(self, &cs, rc), 0);
  wd_resource_stats st;
  wd_resource_stats_get(NULL, &probe_type, &st);
  cr_assert_eq(st.open_errors, 1, "a cancelled open counts as failed");
  cr_assert_eq(st.closed + st.active, 0);
  return 0;
}

Test(resource, an_open_completed_after_cancellation_is_closed_again) {
  reset();
  cr_assert_eq(run_virtual(undo_main, NULL), 0);
  cr_assert_eq(opens, 1);
  cr_assert_eq(closes, 1);
  cr_assert_eq(last_how, WD_OUTCOME_CANCEL);
  assert_no_leaks();
}

static int cancel_close_main(wd_task *self, void *arg) {
  probe_cfg cfg = {.close_sleep = 2 * WD_SEC};
  wd_resource *r;
  cr_assert_eq(wd_resource_open(self, &probe_type, &cfg, "r", &r), 0);
  wd_cancel_scope cs;
  wd_move_on_after(self, &cs, WD_SEC);
  int rc = wd_sleep(self, 10 * WD_SEC); /* cancelled during use */
  cr_assert_eq(rc, WD_ETIMEDOUT);
  rc = wd_resource_close(self, r, rc);
  cr_assert_eq(rc, WD_ETIMEDOUT, "the cancellation stays the result");
  cr_assert_eq(close_slept, 0, "the close was shielded");
  cr_assert_eq(close_at, 3 * WD_SEC);
  return wd_cancel_scope_exit(self, &cs, rc);
}

Test(resource, a_close_runs_shielded_from_the_callers_cancellation) {
  reset();
  cr_assert_eq(run_virtual(cancel_close_main, NULL), 0);
  cr_assert_eq(closes, 1);
  cr_assert_eq(last_how, WD_OUTCOME_CANCEL);
  assert_no_leaks();
}

typedef struct grace {
  int rc_in;      /* the result the close is given */
  wd_time within; /* the caller's grace, 0 = the type's */
  int rc;
  wd_time at;
} grace;

static int grace_main(wd_task *self, void *arg) {
  grace *g = arg;
  probe_cfg cfg = {.close_sleep = 10 * WD_SEC};
  wd_resource *r;
  cr_assert_eq(wd_resource_open(self, &graceful_type, &cfg, "stuck", &r), 0);
  int rc = g->rc_in ? wd_fail(self, g->rc_in, "work failed") : 0;
  if (g->within) {
    /* A negative grace is refused before anything happens to r. */
    cr_assert_eq(wd_resource_close_within(self, r, 0, -1), WD_EINVAL);
    g->rc = wd_resource_close_within(self, r, rc, g->within);
  } else {
    g->rc = wd_resource_close(self, r, rc);
  }
  g->at = wd_now(self);
  wd_resource_stats st;
  wd_resource_stats_get(NULL, &graceful_type, &st);
  cr_assert_eq(st.closed, 1, "closed, even though late");
  cr_assert_eq(st.close_errors, 1);
  cr_assert_eq(st.active, 0);
  return 0;
}

Test(resource, the_grace_deadline_cuts_a_hanging_close_short) {
  reset();
  grace g = {0};
  cr_assert_eq(run_virtual(grace_main, &g), 0);
  cr_assert_eq(g.at, WD_SEC, "close_grace of the type");
  cr_assert_eq(close_slept, WD_ETIMEDOUT);
  cr_assert_eq(g.rc, WD_ETIMEDOUT);
  const wd_error *e = wd_last_error();
  cr_assert_str_eq(e->msg, "resource 'stuck' (graceful): close failed");
  cr_assert_not_null(e->cause);
  cr_assert_str_eq(e->cause->msg, "close: timed out after 1.000 s");
  assert_no_leaks();
}

Test(resource, close_within_replaces_the_types_grace) {
  reset();
  grace g = {.within = 300 * WD_MSEC};
  cr_assert_eq(run_virtual(grace_main, &g), 0);
  cr_assert_eq(g.at, 300 * WD_MSEC, "the caller's grace, not the type's 1 s");
  cr_assert_eq(g.rc, WD_ETIMEDOUT);
  const wd_error *e = wd_last_error();
  cr_assert_str_eq(e->cause->msg, "close: timed out after 0.300 s");
  assert_no_leaks();
}

Test(resource, a_failing_close_never_hides_the_error_that_caused_it) {
  reset();
  grace g = {.rc_in = WD_EPERM};
  cr_assert_eq(run_virtual(grace_main, &g), 0);
  cr_assert_eq(g.rc, WD_EPERM);
  const wd_error *e = wd_last_error();
  cr_assert_str_eq(e->msg, "work failed");
  cr_assert_eq(e->nsecondary, 1);
  cr_assert_eq(e->nsecondary_kept, 1);
  cr_assert_eq(e->secondary[0]->code, WD_ETIMEDOUT);
  cr_assert_str_eq(e->secondary[0]->msg,
                   "resource 'stuck' (graceful): close failed");
  assert_no_leaks();
}

/* Two tasks close one resource: the close runs once, the second waits. */
typedef struct twice {
  wd_resource *r;
  int rc;
  wd_time at;
} twice;

static int second_closer(wd_task *self, void *arg) {
  twice *t = arg;
  t->rc = wd_resource_close(self, t->r, 0);
  t->at = wd_now(self);
  return 0;
}

static int twice_main(wd_task *self, void *arg) {
  twice *t = arg;
  probe_cfg cfg = {.close_sleep = WD_SEC};
  wd_scope sc;
  wd_scope_enter(self, &sc);
  cr_assert_eq(wd_scope_open(self, &sc, &probe_type, &cfg, "shared", &t->r), 0);
  wd_group g;
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, second_closer, t, NULL);
  cr_assert_eq(wd_yield(self), 0); /* let it start its close */
  int rc = wd_scope_exit(self, &sc, 0);
  cr_assert_eq(rc, 0);
  cr_assert_eq(wd_now(self), WD_SEC, "the scope found it closing and waited");
  return wd_group_exit(self, &g, 0);
}

Test(resource, close_runs_once_when_two_tasks_close) {
  reset();
  twice t = {0};
  cr_assert_eq(run_virtual(twice_main, &t), 0);
  cr_assert_eq(closes, 1);
  cr_assert_eq(t.rc, 0);
  cr_assert_eq(t.at, WD_SEC);
  assert_no_leaks();
}

/* ---- the registry ---------------------------------------------------------
 */

static int collect(const wd_resource_info *info, void *arg) {
  char *buf = arg;
  size_t n = strlen(buf);
  snprintf(buf + n, 512 - n, "%s/%s/%s/%d/%.1f ", info->name, info->type->name,
           wd_resource_state_name(info->state), info->line,
           (double)info->age / (double)WD_SEC);
  return 0;
}

static int count_types(const wd_resource_type *t, const wd_resource_stats *st,
                       void *arg) {
  char *buf = arg;
  size_t n = strlen(buf);
  snprintf(buf + n, 256 - n, "%s:%llu/%llu ", t->name,
           (unsigned long long)st->created, (unsigned long long)st->active);
  return 0;
}

static int registry_main(wd_task *self, void *arg) {
  wd_resource *a, *b, *c;
  int line_a = __LINE__ + 1;
  cr_assert_eq(wd_resource_open(self, &probe_type, NULL, "a", &a), 0);
  wd_sleep(self, WD_SEC);
  cr_assert_eq(wd_resource_open(self, &graceful_type, NULL, "b", &b), 0);
  cr_assert_eq(wd_resource_open(self, &probe_type, NULL, "c", &c), 0);
  wd_sleep(self, WD_SEC);
  wd_resource_close(self, c, 0);

  char buf[512] = "";
  cr_assert_eq(wd_resource_each(NULL, collect, buf), 2);
  char want[512];
  snprintf(want, sizeof want, "a/probe/ready/%d/2.0 b/graceful/ready/%d/1.0 ",
           line_a, line_a + 2);
  cr_assert_str_eq(buf, want);

  char types[256] = "";
  cr_assert_eq(wd_resource_types_each(NULL, count_types, types), 2);
  cr_assert_str_eq(types, "probe:2/1 graceful:1/1 ");
  wd_resource_stats all;
  wd_resource_stats_get(wd_task_runtime(self), NULL, &all);
  cr_assert_eq(all.created, 3);
  cr_assert_eq(all.active, 2);
  cr_assert_eq(all.closed, 1);

  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  wd_dump(f);
  fclose(f);
  cr_assert_not_null(strstr(text, "resources: 2 live"), "%s", text);
  cr_assert_not_null(strstr(text, "type 'probe': 1 active, 2 created, 1 "
                                  "closed, 0 open errors, 0 close errors"),
                     "%s", text);
  snprintf(want, sizeof want,
           "resource 1 'a' (probe): ready, created test-resource.c:%d, age "
           "2.000 s",
           line_a);
  cr_assert_not_null(strstr(text, want), "%s", text);
  free(text);
  wd_resource_close(self, b, 0);
  wd_resource_close(self, a, 0);
  return 0;
}

Test(resource, the_registry_counts_lists_and_dumps_live_resources) {
  reset();
  cr_assert_eq(run_virtual(registry_main, NULL), 0);
  assert_no_leaks();
  cr_assert_eq(wd_resource_leaks(), 0);
}

/* The leak report: a child process leaks a resource on purpose. */
static int leaky_main(wd_task *self, void *arg) {
  wd_resource *r;
  cr_assert_eq(wd_resource_open(self, &probe_type, NULL, "leaky", &r), 0);
  return wd_sleep(self, 1500 * WD_MSEC);
}

/* Run leaky_main in a child; returns its wait status and what it wrote on
 * stderr. */
static int run_leaky_child(wd_leak_policy policy, char *err, size_t n) {
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 2);
    wd_resource_set_leak_policy(policy);
    int rc = run_virtual(leaky_main, NULL);
    wd_error_clear(NULL);
    /* The exit code says what the process-wide counter reads. */
    _exit(rc == 0 ? (int)wd_resource_leaks() : 100);
  }
  close(fds[1]);
  size_t got = 0;
  ssize_t k;
  while (got + 1 < n && (k = read(fds[0], err + got, n - 1 - got)) > 0)
    got += (size_t)k;
  err[got] = '\0';
  close(fds[0]);
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  return status;
}

Test(resource, the_leak_report_names_a_leaked_resource) {
  char err[2048];
  int status = run_leaky_child(WD_LEAK_REPORT, err, sizeof err);
  cr_assert(WIFEXITED(status), "%s", err);
  cr_assert_eq(WEXITSTATUS(status), 1, "one leak counted: %s", err);
  cr_assert_not_null(strstr(err, "warden: leak: 1 resource still open at the "
                                 "end of the runtime:"),
                     "%s", err);
  cr_assert_not_null(strstr(err, "resource 1 'leaky' (probe): ready, created "
                                 "test-resource.c:"),
                     "%s", err);
  cr_assert_not_null(strstr(err, "age 1.500 s"), "%s", err);
  assert_no_leaks();
}

Test(resource, the_leak_policy_can_make_a_leak_fatal) {
  char err[2048];
  int status = run_leaky_child(WD_LEAK_ABORT, err, sizeof err);
  cr_assert(WIFSIGNALED(status), "%s", err);
  cr_assert_eq(WTERMSIG(status), SIGABRT);
  cr_assert_not_null(strstr(err, "'leaky'"), "%s", err);
  assert_no_leaks();
}

/* ---- health ---------------------------------------------------------------
 */

static const wd_resource_type unchecked_type = {.name = "unchecked", .size = 1};

static int health_main(wd_task *self, void *arg) {
  wd_scope sc;
  wd_scope_enter(self, &sc);
  wd_resource *r, *u;
  wd_scope_open(self, &sc, &probe_type, NULL, "p", &r);
  wd_scope_open(self, &sc, &unchecked_type, NULL, "u", &u);
  cr_assert_eq(wd_resource_health(self, r), 0);
  cr_assert_eq(wd_resource_health(self, u), WD_ENOSYS);
  cr_assert_str_eq(last_msg(), "resource type 'unchecked' has no health check");
  wd_resource_close(self, r, 0);
  cr_assert_eq(wd_resource_health(self, r), WD_ECLOSED);
  cr_assert_str_eq(last_msg(), "resource 'p' (probe) is closed");
  cr_assert_eq(wd_resource_health(self, NULL), WD_EINVAL);
  return wd_scope_exit(self, &sc, 0);
}

Test(resource, health_checks) {
  reset();
  cr_assert_eq(run_virtual(health_main, NULL), 0);
  cr_assert_eq(checks, 1);
  assert_no_leaks();
}

/* ---- blocking resources ---------------------------------------------------
 */

typedef struct file_res {
  pthread_t opened_on, closed_on;
  int fd;
  wd_outcome how;
} file_res;

static pthread_t closed_on;
static int sync_closes;

static int file_open(file_res *f, const void *config) {
  f->opened_on = pthread_self();
  if (config) return *(const int *)config;
  f->fd = 7;
  return 0;
}

static int file_close(file_res *f, wd_outcome how) {
  closed_on = pthread_self();
  sync_closes++;
  f->how = how;
  return f->fd == 7 ? 0 : -EBADF;
}

WD_BLOCKING_RESOURCE_TYPE(file_type, "file", file_res, file_open, file_close);

static int blocking_main(wd_task *self, void *arg) {
  pthread_t me = pthread_self();
  wd_resource *r;
  cr_assert_eq(wd_resource_open(self, &file_type, NULL, "log", &r), 0);
  file_res *f = wd_resource_data(r);
  cr_assert_eq(f->fd, 7);
  cr_assert_not(pthread_equal(f->opened_on, me), "opened on the pool");
  cr_assert_eq(wd_resource_close(self, r, 0), 0);
  cr_assert_not(pthread_equal(closed_on, me), "closed on the pool");
  cr_assert_eq(sync_closes, 1);
  /* A synchronous failure is described and named. */
  int err = -EACCES;
  cr_assert_eq(wd_resource_open(self, &file_type, &err, "locked", &r), -EACCES);
  const wd_error *e = wd_task_error(self);
  cr_assert_str_eq(e->msg, "resource 'locked' (file): open failed");
  cr_assert_not_null(e->cause);
  cr_assert_str_eq(e->cause->msg, "blocking open: permission denied");
  cr_assert_eq(sync_closes, 1, "a failed open is not closed");
  return 0;
}

Test(resource, a_blocking_resource_opens_and_closes_on_the_thread_pool) {
  sync_closes = 0;
  cr_assert_eq(run_virtual(blocking_main, NULL), 0);
  assert_no_leaks();
}

/* A blocking open that completes after its caller was cancelled: the
 * thread says it started on one pipe and waits for the other. */
static int started[2], gate[2];

static int gated_open(file_res *f, const void *config) {
  char c = 's';
  if (write(started[1], &c, 1) != 1) return -EIO;
  if (read(gate[0], &c, 1) != 1) return -EIO;
  f->fd = 7;
  return 0;
}

WD_BLOCKING_RESOURCE_TYPE(gated_type, "gated", file_res, gated_open,
                          file_close);

typedef struct gated {
  wd_cancel_scope cs;
  int rc;
} gated;

static int opener_task(wd_task *self, void *arg) {
  gated *g = arg;
  wd_cancel_scope_enter(self, &g->cs, NULL);
  wd_resource *r;
  g->rc = wd_resource_open(self, &gated_type, NULL, "gated", &r);
  cr_assert_null(r);
  return wd_cancel_scope_exit(self, &g->cs, g->rc);
}

static int gated_main(wd_task *self, void *arg) {
  gated g = {.rc = 1};
  wd_group grp;
  wd_group_enter(self, &grp, NULL);
  wd_spawn(&grp, opener_task, &g, NULL);
  wd_yield(self); /* the opener is now waiting for its thread */
  char c;
  cr_assert_eq(read(started[0], &c, 1), 1); /* which has started */
  wd_cancel(&g.cs);
  cr_assert_eq(write(gate[1], "x", 1), 1); /* let the thread finish */
  cr_assert_eq(wd_group_exit(self, &grp, 0), 0);
  cr_assert_eq(g.rc, WD_ECANCELED);
  return 0;
}

Test(resource, a_cancelled_blocking_open_is_closed_on_the_pool) {
  sync_closes = 0;
  cr_assert_eq(pipe(gate), 0);
  cr_assert_eq(pipe(started), 0);
  cr_assert_eq(run_virtual(gated_main, NULL), 0);
  cr_assert_eq(sync_closes, 1, "what the thread built was closed");
  assert_no_leaks();
}

/* The one-line type macro from warden-style functions. */
typedef struct counter {
  int n;
} counter;

static int counter_open(wd_task *self, counter *c, const void *config) {
  c->n = config ? *(const int *)config : 1;
  return wd_yield(self);
}

static int counter_close(wd_task *self, counter *c, wd_outcome how) {
  return c->n == 3 ? 0 : WD_EINVAL;
}

WD_RESOURCE_TYPE(counter_type, "counter", counter, counter_open, counter_close);

static int macro_main(wd_task *self, void *arg) {
  int three = 3;
  wd_resource *r;
  cr_assert_eq(wd_resource_open(self, &counter_type, &three, NULL, &r), 0);
  cr_assert_str_eq(wd_resource_name(r), "counter");
  cr_assert_eq(((counter *)wd_resource_data(r))->n, 3);
  return wd_resource_close(self, r, 0);
}

Test(resource, the_type_macro_defines_a_type_in_one_line) {
  cr_assert_eq(counter_type.size, sizeof(counter));
  cr_assert_eq(run_virtual(macro_main, NULL), 0);
  assert_no_leaks();
}

/* ---- synchronous use and bad arguments ------------------------------------
 */

Test(resource, synchronous_use_outside_a_runtime) {
  reset();
  wd_resource *r;
  cr_assert_eq(wd_resource_open(NULL, &probe_type, NULL, "sync", &r), 0);
  cr_assert_eq(wd_resource_close(NULL, r, 0), 0);
  cr_assert_eq(closes, 1);
  sync_closes = 0;
  cr_assert_eq(wd_resource_open(NULL, &file_type, NULL, NULL, &r), 0);
  cr_assert(pthread_equal(((file_res *)wd_resource_data(r))->opened_on,
                          pthread_self()),
            "on the calling thread");
  cr_assert_eq(wd_resource_close(NULL, r, 0), 0);
  cr_assert_eq(sync_closes, 1);
  assert_no_leaks();
}

static int bad_args_main(wd_task *self, void *arg) {
  wd_resource *r;
  static const wd_resource_type nameless = {.size = 4};
  static const wd_resource_type empty = {.name = "empty", .size = 0};
  static const wd_resource_type negative = {
      .name = "neg", .size = 4, .close_grace = -1};
  cr_assert_eq(wd_resource_open(self, NULL, NULL, "x", &r), WD_EINVAL);
  cr_assert_null(r);
  cr_assert_str_eq(last_msg(), "wd_resource_open: NULL resource type");
  cr_assert_eq(wd_resource_open(self, &probe_type, NULL, "x", NULL), WD_EINVAL);
  cr_assert_str_eq(last_msg(), "wd_resource_open: NULL out");
  cr_assert_eq(wd_resource_open(self, &nameless, NULL, "x", &r), WD_EINVAL);
  cr_assert_str_eq(last_msg(),
                   "wd_resource_open: resource type without a name");
  cr_assert_eq(wd_resource_open(self, &empty, NULL, "x", &r), WD_EINVAL);
  cr_assert_str_eq(last_msg(),
                   "wd_resource_open: resource type 'empty' has size 0");
  cr_assert_eq(wd_resource_open(self, &negative, NULL, "x", &r), WD_EINVAL);
  cr_assert_eq(wd_resource_close(self, NULL, WD_EPERM), WD_EPERM);
  cr_assert_eq(wd_resource_close(self, NULL, 0), 0);
  cr_assert_eq(wd_resource_open_blocking(self, NULL, NULL, NULL), WD_EINVAL);
  cr_assert_eq(wd_resource_close_blocking(self, NULL, NULL, 0), WD_EINVAL);
  wd_resource_stats st;
  wd_resource_stats_get(NULL, NULL, &st);
  cr_assert_eq(st.created, 0, "nothing was counted");
  return 0;
}

Test(resource, bad_arguments_are_einval_with_a_message) {
  cr_assert_eq(run_virtual(bad_args_main, NULL), 0);
  assert_no_leaks();
}

/* ---- every allocation failure point ------------------------------------- */

static int faults_main(wd_task *self, void *arg) {
  probe_cfg slow = {.open_sleep = WD_MSEC, .close_sleep = WD_MSEC};
  probe_cfg broken = {.close_fail = -EIO};
  wd_resource *a, *b, *c;
  int rc = wd_resource_open(self, &probe_type, &slow, "a", &a);
  if (rc) return rc;
  rc = wd_resource_open(self, &graceful_type, &broken, "b", &b);
  if (rc) return wd_resource_close(self, a, rc);
  rc = wd_resource_open(self, &file_type, NULL, "c", &c);
  if (rc == 0) rc = wd_fail(self, WD_EPERM, "the work fails");
  rc = wd_resource_close(self, c, rc);
  rc = wd_resource_close(self, b, rc);
  return wd_resource_close(self, a, rc);
}

Test(resource, allocation_failure_at_every_point_is_clean) {
  for (long n = 1;; n++) {
    reset();
    sync_closes = 0;
    wd_alloc_fail_after(n);
    int rc = run_virtual(faults_main, NULL);
    bool fired = wd_alloc_failed();
    wd_alloc_fail_after(0);
    cr_assert(rc == WD_EPERM || rc == WD_ENOMEM, "n=%ld: rc %s", n,
              wd_err_name(rc));
    cr_assert_eq(opens, closes, "n=%ld: %d opened, %d closed", n, opens,
                 closes);
    cr_assert_eq(wd_resource_leaks(), 0, "n=%ld", n);
    if (!fired) {
      cr_assert_eq(rc, WD_EPERM);
      cr_assert_eq(sync_closes, 1);
      const wd_error *e = wd_last_error();
      cr_assert_str_eq(e->msg, "the work fails");
      cr_assert_eq(e->nsecondary, 1, "b's close failed");
      assert_no_leaks();
      break;
    }
    assert_no_leaks();
    cr_assert_lt(n, 2000, "the fault loop does not end");
  }
}
