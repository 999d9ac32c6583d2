/* Health checks of every live resource: healthy, unhealthy with the check's
 * message and causes, unknown (no check, or not ready), and a hanging check
 * cut off at the per-check timeout on the virtual clock while the others
 * finish on their own time; a check's own timeout is a failure, not a time
 * out; the default and infinite timeouts, the concurrency bound, the type
 * filter, resources closing or closed during the run; cancellation of
 * wd_health_check_all itself (by a deadline, by another task, before it
 * starts); the report as JSON parsed back field by field and as Prometheus
 * text line by line; bad arguments; every allocation failure point.
 *
 * The `svc` type's config says how its check behaves; `plain` has none.
 * Time runs on the virtual clock. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

enum mode { OK, SLOW, SICK, HANG, OWN_TIMEOUT };

typedef struct hcfg {
  enum mode mode;
  wd_time sleep; /* SLOW: how long the check takes */
} hcfg;

typedef struct svc {
  const hcfg *cfg;
  char name[WD_RESOURCE_NAME_MAX];
} svc;

static int checks, check_cancels;

static int svc_open(wd_task *self, void *data, const void *config) {
  ((svc *)data)->cfg = config;
  return 0;
}

static bool hang_cancel(wd_wait *w) { return true; }

static int svc_health(wd_task *self, void *data) {
  const hcfg *c = ((svc *)data)->cfg;
  checks++;
  int rc = 0;
  switch (c->mode) {
  case OK:
    return 0;
  case SLOW:
    rc = wd_sleep(self, c->sleep);
    break;
  case SICK:
    wd_fail(self, -ECONNRESET, "socket closed by peer");
    return wd_wrap(self, -ECONNRESET, "ping failed");
  case HANG: {
    wd_wait w = {.what = "hang", .on_cancel = hang_cancel};
    rc = wd_park(self, &w);
    break;
  }
  case OWN_TIMEOUT: {
    wd_cancel_scope sc;
    wd_fail_after(self, &sc, 100 * WD_MSEC, "ping");
    rc = wd_sleep(self, WD_SEC);
    return wd_cancel_scope_exit(self, &sc, rc);
  }
  }
  if (wd_is_cancel(rc)) check_cancels++;
  return rc;
}

static int slow_close(wd_task *self, void *data, wd_outcome how) {
  return wd_sleep(self, WD_SEC);
}

static const wd_resource_type svc_type = {.name = "svc",
                                          .size = sizeof(svc),
                                          .open = svc_open,
                                          .close = slow_close,
                                          .health = svc_health};
static const wd_resource_type plain_type = {.name = "plain", .size = 8};

static const hcfg c_ok = {.mode = OK}, c_slow = {.mode = SLOW, .sleep = WD_SEC},
                  c_sick = {.mode = SICK}, c_hang = {.mode = HANG},
                  c_own = {.mode = OWN_TIMEOUT};

static void reset(void) { checks = check_cancels = 0; }

/* ---- a set of resources -----------------------------------------------------
 */

#define MAXR 8

typedef struct set {
  wd_resource *r[MAXR];
  size_t n;
} set;

static wd_resource *add(wd_task *self, set *s, const wd_resource_type *t,
                        const hcfg *c, const char *name) {
  wd_resource *r;
  cr_assert_eq(wd_resource_open(self, t, c, name, &r), 0);
  s->r[s->n++] = r;
  return r;
}

static void close_all(wd_task *self, set *s) {
  for (size_t i = 0; i < s->n; i++)
    if (s->r[i]) cr_assert_eq(wd_resource_close(self, s->r[i], 0), 0);
  s->n = 0;
}

static const wd_health_result *result(const wd_health_report *rep,
                                      const char *name) {
  for (size_t i = 0; i < rep->n; i++)
    if (strcmp(rep->results[i].name, name) == 0) return &rep->results[i];
  cr_assert_fail("no result for '%s'", name);
  return NULL;
}

/* ---- one of each
 * ---------------------------------------------------------------
 */

static void mixed(wd_task *self, set *s) {
  add(self, s, &svc_type, &c_ok, "ok1");
  add(self, s, &svc_type, &c_slow, "slow");
  add(self, s, &svc_type, &c_sick, "sick");
  add(self, s, &svc_type, &c_hang, "hang");
  add(self, s, &plain_type, NULL, "plain");
  add(self, s, &svc_type, &c_ok, "ok2");
}

static int mixed_main(wd_task *self, void *arg) {
  reset();
  set s = {0};
  mixed(self, &s);
  wd_time t0 = wd_now(self);
  wd_health_report *rep = NULL;
  int rc =
      wd_health_check_all(self, &(wd_health_opts){.timeout = 2 * WD_SEC}, &rep);
  cr_assert_eq(rc, 0, "%s", wd_err_name(rc));
  cr_assert_not_null(rep);
  cr_assert_eq(wd_now(self) - t0, 2 * WD_SEC, "the hanging check's timeout");
  cr_assert_eq(rep->started, t0);
  cr_assert_eq(rep->duration, 2 * WD_SEC);
  cr_assert_eq(rep->timeout, 2 * WD_SEC);
  cr_assert_eq(rep->n, 6);
  cr_assert_eq(rep->healthy, 3);
  cr_assert_eq(rep->unhealthy, 1);
  cr_assert_eq(rep->unknown, 1);
  cr_assert_eq(rep->timed_out, 1);
  cr_assert(!wd_health_report_ok(rep));
  cr_assert_eq(checks, 5, "one check each; plain has none");
  cr_assert_eq(check_cancels, 1, "only the hanging one was cancelled");

  static const char *order[] = {"ok1", "slow", "sick", "hang", "plain", "ok2"};
  for (size_t i = 0; i < 6; i++) {
    cr_assert_str_eq(rep->results[i].name, order[i], "oldest first");
    cr_assert_eq(rep->results[i].id, wd_resource_id(s.r[i]));
    cr_assert_eq(rep->results[i].type, wd_resource_type_of(s.r[i]));
  }
  const wd_health_result *r = result(rep, "ok1");
  cr_assert_eq(r->status, WD_HEALTH_HEALTHY);
  cr_assert_eq(r->code, 0);
  cr_assert_str_eq(r->message, "");
  cr_assert_eq(r->duration, 0);
  r = result(rep, "slow");
  cr_assert_eq(r->status, WD_HEALTH_HEALTHY, "slow but within the timeout");
  cr_assert_eq(r->duration, WD_SEC, "finished on its own time");
  r = result(rep, "sick");
  cr_assert_eq(r->status, WD_HEALTH_UNHEALTHY);
  cr_assert_eq(r->code, -ECONNRESET);
  cr_assert_str_eq(r->message, "ping failed: socket closed by peer");
  r = result(rep, "hang");
  cr_assert_eq(r->status, WD_HEALTH_TIMED_OUT);
  cr_assert_eq(r->code, WD_ETIMEDOUT);
  cr_assert_str_eq(r->message, "health check timed out after 2.000 s");
  cr_assert_eq(r->duration, 2 * WD_SEC);
  r = result(rep, "plain");
  cr_assert_eq(r->status, WD_HEALTH_UNKNOWN);
  cr_assert_eq(r->code, WD_ENOSYS);
  cr_assert_str_eq(r->message, "resource type 'plain' has no health check");
  r = result(rep, "ok2");
  cr_assert_eq(r->status, WD_HEALTH_HEALTHY, "unaffected by the others");
  cr_assert_eq(r->duration, 0);
  wd_health_report_free(rep);
  wd_health_report_free(NULL);

  /* Nothing was closed or cancelled on the caller's side. */
  cr_assert_null(wd_task_error(self), "the checks' errors stay theirs");
  for (size_t i = 0; i < s.n; i++)
    cr_assert_eq(wd_resource_state_of(s.r[i]), WD_RESOURCE_READY);
  close_all(self, &s);
  return 0;
}

Test(health, one_hanging_check_times_out_the_others_are_reported) {
  cr_assert_eq(run_virtual(mixed_main, NULL), 0);
  assert_no_leaks();
}

/* ---- timeouts
 * --------------------------------------------------------------------
 */

static int own_timeout_main(wd_task *self, void *arg) {
  set s = {0};
  add(self, &s, &svc_type, &c_own, "own");
  wd_health_report *rep;
  cr_assert_eq(wd_health_check_all(self, NULL, &rep), 0);
  const wd_health_result *r = result(rep, "own");
  cr_assert_eq(r->status, WD_HEALTH_UNHEALTHY,
               "a timeout of the check's own is a failure");
  cr_assert_eq(r->code, WD_ETIMEDOUT);
  cr_assert_str_eq(r->message, "ping: timed out after 0.100 s");
  cr_assert_eq(r->duration, 100 * WD_MSEC);
  wd_health_report_free(rep);
  close_all(self, &s);
  return 0;
}

Test(health, a_checks_own_timeout_is_unhealthy_not_timed_out) {
  cr_assert_eq(run_virtual(own_timeout_main, NULL), 0);
  assert_no_leaks();
}

static int default_timeout_main(wd_task *self, void *arg) {
  set s = {0};
  add(self, &s, &svc_type, &c_hang, "hang");
  wd_health_report *rep;
  cr_assert_eq(wd_health_check_all(self, NULL, &rep), 0);
  cr_assert_eq(rep->timeout, WD_HEALTH_TIMEOUT_DEFAULT);
  cr_assert_eq(rep->results[0].status, WD_HEALTH_TIMED_OUT);
  cr_assert_eq(rep->results[0].duration, 5 * WD_SEC);
  cr_assert_str_eq(rep->results[0].message,
                   "health check timed out after 5.000 s");
  wd_health_report_free(rep);
  close_all(self, &s);
  return 0;
}

Test(health, the_default_timeout_is_five_seconds) {
  cr_assert_eq(run_virtual(default_timeout_main, NULL), 0);
  assert_no_leaks();
}

static const hcfg c_minute = {.mode = SLOW, .sleep = 60 * WD_SEC};

static int no_timeout_main(wd_task *self, void *arg) {
  set s = {0};
  add(self, &s, &svc_type, &c_minute, "minute");
  wd_health_report *rep;
  cr_assert_eq(wd_health_check_all(
                   self, &(wd_health_opts){.timeout = WD_TIME_NEVER}, &rep),
               0);
  cr_assert_eq(rep->timeout, WD_TIME_NEVER);
  cr_assert_eq(rep->results[0].status, WD_HEALTH_HEALTHY);
  cr_assert_eq(rep->results[0].duration, 60 * WD_SEC);
  char *text;
  cr_assert_eq(wd_health_report_export(rep, WD_EXPORT_JSON, 0, &text), 0);
  json_t *root = json_loads(text, 0, NULL);
  cr_assert(json_is_null(json_object_get(root, "timeout_ns")));
  json_decref(root);
  wd_text_free(text);
  wd_health_report_free(rep);
  close_all(self, &s);
  return 0;
}

Test(health, without_a_timeout_a_slow_check_finishes) {
  cr_assert_eq(run_virtual(no_timeout_main, NULL), 0);
  assert_no_leaks();
}

/* ---- concurrency, filter, empty
 * ----------------------------------------------
 */

static int bounded_main(wd_task *self, void *arg) {
  set s = {0};
  for (int i = 0; i < 4; i++)
    add(self, &s, &svc_type, &c_slow, NULL);
  wd_health_report *rep;
  wd_time t0 = wd_now(self);
  cr_assert_eq(
      wd_health_check_all(self, &(wd_health_opts){.max_concurrent = 2}, &rep),
      0);
  cr_assert_eq(wd_now(self) - t0, 2 * WD_SEC, "two at a time, 1 s each");
  cr_assert_eq(rep->healthy, 4);
  for (size_t i = 0; i < 4; i++)
    cr_assert_eq(rep->results[i].duration, WD_SEC, "timed from its start");
  wd_health_report_free(rep);
  /* All at once. */
  t0 = wd_now(self);
  cr_assert_eq(wd_health_check_all(self, NULL, &rep), 0);
  cr_assert_eq(wd_now(self) - t0, WD_SEC);
  wd_health_report_free(rep);
  close_all(self, &s);
  return 0;
}

Test(health, checks_run_concurrently_up_to_the_bound) {
  cr_assert_eq(run_virtual(bounded_main, NULL), 0);
  assert_no_leaks();
}

static int filter_main(wd_task *self, void *arg) {
  reset();
  set s = {0};
  add(self, &s, &svc_type, &c_ok, "a");
  add(self, &s, &plain_type, NULL, "p");
  add(self, &s, &svc_type, &c_sick, "b");
  wd_health_report *rep;
  cr_assert_eq(
      wd_health_check_all(self, &(wd_health_opts){.type = &plain_type}, &rep),
      0);
  cr_assert_eq(rep->n, 1);
  cr_assert_str_eq(rep->results[0].name, "p");
  cr_assert_eq(checks, 0);
  wd_health_report_free(rep);
  close_all(self, &s);

  /* Nothing live: an empty report, which is ok. */
  cr_assert_eq(wd_health_check_all(self, NULL, &rep), 0);
  cr_assert_eq(rep->n, 0);
  cr_assert(wd_health_report_ok(rep));
  cr_assert_eq(rep->duration, 0);
  wd_health_report_free(rep);
  return 0;
}

Test(health, a_type_filter_and_an_empty_registry) {
  cr_assert_eq(run_virtual(filter_main, NULL), 0);
  assert_no_leaks();
}

/* ---- resources that are not ready
 * ---------------------------------------------
 */

static int closer(wd_task *self, void *arg) {
  return wd_resource_close(self, arg, 0);
}

static int closing_main(wd_task *self, void *arg) {
  reset();
  wd_resource *r;
  cr_assert_eq(wd_resource_open(self, &svc_type, &c_ok, "going", &r), 0);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, closer, r, NULL), 0);
  cr_assert_eq(wd_yield(self), 0); /* the closer is in its 1 s close */
  cr_assert_eq(wd_resource_state_of(r), WD_RESOURCE_CLOSING);
  wd_health_report *rep;
  cr_assert_eq(wd_health_check_all(self, NULL, &rep), 0);
  cr_assert_eq(rep->n, 1);
  cr_assert_eq(rep->results[0].status, WD_HEALTH_UNKNOWN);
  cr_assert_eq(rep->results[0].code, WD_ECLOSED);
  cr_assert_str_eq(rep->results[0].message, "resource is closing");
  cr_assert_eq(checks, 0);
  wd_health_report_free(rep);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return 0;
}

Test(health, a_closing_resource_is_unknown) {
  cr_assert_eq(run_virtual(closing_main, NULL), 0);
  assert_no_leaks();
}

static int close_later(wd_task *self, void *arg) {
  int rc = wd_sleep(self, WD_SEC / 2);
  if (rc) return rc;
  return wd_resource_close(self, arg, 0);
}

/* One check at a time: b's turn comes after b was closed and given up by
 * its owner; the run's reference keeps it readable (ASan checks it). */
static int closed_meanwhile_main(wd_task *self, void *arg) {
  reset();
  wd_resource *a, *b;
  cr_assert_eq(wd_resource_open(self, &svc_type, &c_slow, "a", &a), 0);
  cr_assert_eq(wd_resource_open(self, &plain_type, NULL, "b", &b), 0);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, close_later, b, NULL), 0);
  wd_health_report *rep;
  cr_assert_eq(
      wd_health_check_all(self, &(wd_health_opts){.max_concurrent = 1}, &rep),
      0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(rep->results[0].status, WD_HEALTH_HEALTHY);
  cr_assert_eq(rep->results[1].status, WD_HEALTH_UNKNOWN);
  cr_assert_eq(rep->results[1].code, WD_ECLOSED);
  cr_assert_str_eq(rep->results[1].message, "resource is closed");
  wd_health_report_free(rep);
  cr_assert_eq(wd_resource_close(self, a, 0), 0);
  return 0;
}

Test(health, a_resource_closed_during_the_run_is_unknown_and_safe) {
  cr_assert_eq(run_virtual(closed_meanwhile_main, NULL), 0);
  assert_no_leaks();
}

/* ---- cancellation of the run itself
 * -----------------------------------------------
 */

static int deadline_main(wd_task *self, void *arg) {
  reset();
  set s = {0};
  add(self, &s, &svc_type, &c_hang, "h1");
  add(self, &s, &svc_type, &c_ok, "ok");
  add(self, &s, &svc_type, &c_hang, "h2");
  wd_cancel_scope sc;
  cr_assert_eq(wd_move_on_after(self, &sc, WD_SEC), 0);
  wd_health_report *rep = (wd_health_report *)&s; /* overwritten */
  int rc = wd_health_check_all(self, &(wd_health_opts){.timeout = 10 * WD_SEC},
                               &rep);
  cr_assert_eq(rc, WD_ETIMEDOUT, "%s", wd_err_name(rc));
  cr_assert_null(rep, "no report: the run did not happen");
  cr_assert_eq(wd_cancel_scope_exit(self, &sc, rc), 0);
  cr_assert_eq(wd_now(self), WD_SEC, "at the caller's deadline, not 10 s");
  cr_assert_eq(checks, 3);
  cr_assert_eq(check_cancels, 2, "both hanging checks were cancelled");
  for (size_t i = 0; i < s.n; i++)
    cr_assert_eq(wd_resource_state_of(s.r[i]), WD_RESOURCE_READY,
                 "the resources are untouched");
  close_all(self, &s);
  return 0;
}

Test(health, the_callers_deadline_cancels_the_run) {
  cr_assert_eq(run_virtual(deadline_main, NULL), 0);
  assert_no_leaks();
}

typedef struct cancel_arg {
  wd_cancel_scope *sc;
} cancel_arg;

static int canceller(wd_task *self, void *arg) {
  cancel_arg *c = arg;
  int rc = wd_sleep(self, 300 * WD_MSEC);
  if (rc) return rc;
  wd_cancel(c->sc);
  return 0;
}

static int checker(wd_task *self, void *arg) {
  cancel_arg *c = arg;
  wd_cancel_scope sc;
  cr_assert_eq(wd_cancel_scope_enter(self, &sc, NULL), 0);
  c->sc = &sc;
  wd_health_report *rep;
  int rc = wd_health_check_all(self, NULL, &rep);
  cr_assert_eq(rc, WD_ECANCELED, "%s", wd_err_name(rc));
  cr_assert_null(rep);
  cr_assert_eq(wd_now(self), 300 * WD_MSEC);
  return wd_cancel_scope_exit(self, &sc, rc);
}

static int cancelled_main(wd_task *self, void *arg) {
  reset();
  set s = {0};
  add(self, &s, &svc_type, &c_hang, "h");
  add(self, &s, &svc_type, &c_slow, "slow");
  cancel_arg c = {0};
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, checker, &c, NULL), 0);
  cr_assert_eq(wd_spawn(&g, canceller, &c, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(check_cancels, 2);
  close_all(self, &s);

  /* Already cancelled: returns at once, no check runs. */
  reset();
  add(self, &s, &svc_type, &c_ok, "ok");
  wd_cancel_scope sc;
  cr_assert_eq(wd_cancel_scope_enter(self, &sc, NULL), 0);
  wd_cancel(&sc);
  wd_health_report *rep;
  cr_assert_eq(wd_health_check_all(self, NULL, &rep), WD_ECANCELED);
  cr_assert_null(rep);
  cr_assert_eq(checks, 0);
  cr_assert_eq(wd_cancel_scope_exit(self, &sc, WD_ECANCELED), 0);
  close_all(self, &s);
  return 0;
}

Test(health, another_task_cancels_the_run) {
  cr_assert_eq(run_virtual(cancelled_main, NULL), 0);
  assert_no_leaks();
}

/* ---- the report as JSON and as Prometheus text
 * -------------------------------------
 */

static json_int_t jint(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  cr_assert(json_is_integer(v), "'%s' is not an integer", key);
  return json_integer_value(v);
}

static const char *jstr(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  cr_assert(json_is_string(v), "'%s' is not a string", key);
  return json_string_value(v);
}

static int json_main(wd_task *self, void *arg) {
  set s = {0};
  mixed(self, &s);
  wd_health_report *rep;
  cr_assert_eq(
      wd_health_check_all(self, &(wd_health_opts){.timeout = 2 * WD_SEC}, &rep),
      0);
  for (unsigned flags = 0; flags <= WD_EXPORT_INDENT; flags++) {
    char *text;
    cr_assert_eq(wd_health_report_export(rep, WD_EXPORT_JSON, flags, &text), 0);
    json_error_t err;
    json_t *root = json_loads(text, 0, &err);
    cr_assert_not_null(root, "%s: %s", err.text, text);
    cr_assert_eq(json_object_size(root), 6);
    cr_assert(json_is_false(json_object_get(root, "ok")));
    cr_assert_eq(jint(root, "started_ns"), rep->started);
    cr_assert_eq(jint(root, "duration_ns"), 2 * WD_SEC);
    cr_assert_eq(jint(root, "timeout_ns"), 2 * WD_SEC);
    json_t *counts = json_object_get(root, "counts");
    cr_assert_eq(json_object_size(counts), 5);
    cr_assert_eq(jint(counts, "total"), 6);
    cr_assert_eq(jint(counts, "healthy"), 3);
    cr_assert_eq(jint(counts, "unhealthy"), 1);
    cr_assert_eq(jint(counts, "unknown"), 1);
    cr_assert_eq(jint(counts, "timed_out"), 1);
    json_t *checks_ = json_object_get(root, "checks");
    cr_assert_eq(json_array_size(checks_), 6);
    for (size_t i = 0; i < 6; i++) {
      const wd_health_result *r = &rep->results[i];
      json_t *o = json_array_get(checks_, i);
      cr_assert_eq(json_object_size(o), 8);
      cr_assert_eq(jint(o, "id"), (json_int_t)r->id);
      cr_assert_str_eq(jstr(o, "type"), r->type->name);
      cr_assert_str_eq(jstr(o, "name"), r->name);
      cr_assert_str_eq(jstr(o, "status"), wd_health_status_name(r->status));
      cr_assert_eq(jint(o, "code"), r->code);
      cr_assert_eq(jint(o, "duration_ns"), r->duration);
      if (r->status == WD_HEALTH_HEALTHY) {
        cr_assert(json_is_null(json_object_get(o, "error")));
        cr_assert(json_is_null(json_object_get(o, "message")));
      } else {
        cr_assert_str_eq(jstr(o, "error"), wd_err_name(r->code));
        cr_assert_str_eq(jstr(o, "message"), r->message);
      }
    }
    cr_assert_str_eq(jstr(json_array_get(checks_, 3), "status"), "timed_out");
    cr_assert_str_eq(jstr(json_array_get(checks_, 3), "error"), "WD_ETIMEDOUT");
    json_decref(root);
    wd_text_free(text);
  }
  /* Without the checks: the summary only. */
  char *text;
  cr_assert_eq(wd_health_report_export(rep, WD_EXPORT_JSON,
                                       WD_EXPORT_NO_INSTANCES, &text),
               0);
  json_t *root = json_loads(text, 0, NULL);
  cr_assert_null(json_object_get(root, "checks"));
  cr_assert_eq(json_object_size(root), 5);
  json_decref(root);
  wd_text_free(text);
  wd_health_report_free(rep);
  close_all(self, &s);
  return 0;
}

Test(health, report_as_json_field_by_field) {
  cr_assert_eq(run_virtual(json_main, NULL), 0);
  assert_no_leaks();
}

#define NAME "a\\\"b\\\\c\\nd" /* a"b\c<newline>d as a label value */

static const char *const prom_expected[] = {
    "# HELP warden_health_ok 1 when no health check was unhealthy or timed "
    "out.",
    "# TYPE warden_health_ok gauge",
    "warden_health_ok 0",
    "# HELP warden_health_resources Resources in the health report, by "
    "status.",
    "# TYPE warden_health_resources gauge",
    "warden_health_resources{status=\"healthy\"} 1",
    "warden_health_resources{status=\"unhealthy\"} 0",
    "warden_health_resources{status=\"unknown\"} 1",
    "warden_health_resources{status=\"timed_out\"} 1",
    "# HELP warden_health_duration_seconds How long the whole health check "
    "took.",
    "# TYPE warden_health_duration_seconds gauge",
    "warden_health_duration_seconds 2",
    "# HELP warden_health_status Health of each live resource: 1 for its "
    "status, 0 for the others.",
    "# TYPE warden_health_status gauge",
    "warden_health_status{type=\"svc\",name=\"" NAME
    "\",id=\"1\",status=\"healthy\"} 1",
    "warden_health_status{type=\"svc\",name=\"" NAME
    "\",id=\"1\",status=\"unhealthy\"} 0",
    "warden_health_status{type=\"svc\",name=\"" NAME
    "\",id=\"1\",status=\"unknown\"} 0",
    "warden_health_status{type=\"svc\",name=\"" NAME
    "\",id=\"1\",status=\"timed_out\"} 0",
    "warden_health_status{type=\"svc\",name=\"hang\",id=\"2\",status="
    "\"healthy\"} 0",
    "warden_health_status{type=\"svc\",name=\"hang\",id=\"2\",status="
    "\"unhealthy\"} 0",
    "warden_health_status{type=\"svc\",name=\"hang\",id=\"2\",status="
    "\"unknown\"} 0",
    "warden_health_status{type=\"svc\",name=\"hang\",id=\"2\",status="
    "\"timed_out\"} 1",
    "warden_health_status{type=\"plain\",name=\"plain\",id=\"3\",status="
    "\"healthy\"} 0",
    "warden_health_status{type=\"plain\",name=\"plain\",id=\"3\",status="
    "\"unhealthy\"} 0",
    "warden_health_status{type=\"plain\",name=\"plain\",id=\"3\",status="
    "\"unknown\"} 1",
    "warden_health_status{type=\"plain\",name=\"plain\",id=\"3\",status="
    "\"timed_out\"} 0",
    "# HELP warden_health_check_duration_seconds How long each resource's "
    "health check ran.",
    "# TYPE warden_health_check_duration_seconds gauge",
    "warden_health_check_duration_seconds{type=\"svc\",name=\"" NAME
    "\",id=\"1\"} 0",
    "warden_health_check_duration_seconds{type=\"svc\",name=\"hang\",id="
    "\"2\"} 2",
    "warden_health_check_duration_seconds{type=\"plain\",name=\"plain\",id="
    "\"3\"} 0",
};

static void check_lines(const char *text, const char *const *want, size_t n) {
  const char *p = text;
  for (size_t i = 0; i < n; i++) {
    const char *nl = strchr(p, '\n');
    cr_assert_not_null(nl, "line %zu missing; want: %s", i + 1, want[i]);
    size_t len = (size_t)(nl - p);
    cr_assert(len == strlen(want[i]) && memcmp(p, want[i], len) == 0,
              "line %zu:\n got: %.*s\nwant: %s", i + 1, (int)len, p, want[i]);
    p = nl + 1;
  }
  cr_assert_str_eq(p, "", "extra lines: %s", p);
}

static int prom_main(wd_task *self, void *arg) {
  set s = {0};
  add(self, &s, &svc_type, &c_ok, "a\"b\\c\nd");
  add(self, &s, &svc_type, &c_hang, "hang");
  add(self, &s, &plain_type, NULL, "plain");
  wd_health_report *rep;
  cr_assert_eq(
      wd_health_check_all(self, &(wd_health_opts){.timeout = 2 * WD_SEC}, &rep),
      0);
  char *text;
  cr_assert_eq(wd_health_report_export(rep, WD_EXPORT_PROMETHEUS, 0, &text), 0);
  size_t n = sizeof prom_expected / sizeof *prom_expected;
  check_lines(text, prom_expected, n);
  /* The stream gets the same. */
  char *mem = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&mem, &len);
  cr_assert_eq(wd_health_report_fprint(rep, WD_EXPORT_PROMETHEUS, 0, f), 0);
  fclose(f);
  cr_assert_str_eq(mem, text);
  free(mem);
  wd_text_free(text);
  cr_assert_eq(wd_health_report_export(rep, WD_EXPORT_PROMETHEUS,
                                       WD_EXPORT_NO_INSTANCES, &text),
               0);
  check_lines(text, prom_expected, 12);
  wd_text_free(text);
  wd_health_report_free(rep);
  close_all(self, &s);
  return 0;
}

Test(health, report_as_prometheus_text_line_by_line) {
  cr_assert_eq(run_virtual(prom_main, NULL), 0);
  assert_no_leaks();
}

/* ---- bad arguments
 * ---------------------------------------------------------------
 */

static int bad_args_main(wd_task *self, void *arg) {
  wd_health_report *rep = (wd_health_report *)&rep;
  cr_assert_eq(wd_health_check_all(self, NULL, NULL), WD_EINVAL);
  cr_assert_str_eq(wd_task_error(self)->msg, "wd_health_check_all: NULL out");
  cr_assert_eq(
      wd_health_check_all(self, &(wd_health_opts){.timeout = -1}, &rep),
      WD_EINVAL);
  cr_assert_null(rep);
  cr_assert_str_eq(wd_task_error(self)->msg,
                   "wd_health_check_all: negative timeout");
  cr_assert_eq(wd_health_report_export(NULL, WD_EXPORT_JSON, 0, NULL),
               WD_EINVAL);
  return 0;
}

Test(health, bad_arguments) {
  cr_assert_eq(run_virtual(bad_args_main, NULL), 0);
  wd_health_report *rep = (wd_health_report *)&rep;
  cr_assert_eq(wd_health_check_all(NULL, NULL, &rep), WD_EINVAL);
  cr_assert_null(rep);
  cr_assert_str_eq(wd_last_error()->msg,
                   "wd_health_check_all: NULL task (checks run in tasks)");
  assert_no_leaks();
}

/* ---- allocation failures
 * -------------------------------------------------------------
 */

static int fault_main(wd_task *self, void *arg) {
  set s = {0};
  mixed(self, &s);
  wd_health_opts o = {.timeout = 2 * WD_SEC};
  for (long n = 1;; n++) {
    reset();
    wd_health_report *rep = (wd_health_report *)&s;
    wd_error_clear(self);
    long live = wd_alloc_live();
    wd_alloc_fail_after(n);
    int rc = wd_health_check_all(self, &o, &rep);
    bool fired = wd_alloc_failed();
    wd_alloc_fail_after(0);
    if (rc == 0) {
      /* Complete, even if a check lost its message's detail. */
      cr_assert_eq(rep->n, 6, "n=%ld", n);
      cr_assert_eq(rep->healthy, 3, "n=%ld", n);
      cr_assert_eq(rep->unhealthy, 1, "n=%ld", n);
      cr_assert_eq(rep->unknown, 1, "n=%ld", n);
      cr_assert_eq(rep->timed_out, 1, "n=%ld", n);
      wd_health_report_free(rep);
      if (!fired) {
        cr_assert_gt(n, 6, "each of the six spawns is a failure point");
        break;
      }
    } else {
      cr_assert(fired, "n=%ld: %s without a fault", n, wd_err_name(rc));
      cr_assert_eq(rc, WD_ENOMEM, "n=%ld: %s", n, wd_err_name(rc));
      cr_assert_null(rep, "n=%ld", n);
    }
    wd_error_clear(self);
    cr_assert_eq(wd_alloc_live(), live, "n=%ld: leaked", n);
    for (size_t i = 0; i < s.n; i++)
      cr_assert_eq(wd_resource_state_of(s.r[i]), WD_RESOURCE_READY);
    cr_assert_lt(n, 1000, "the fault loop does not end");
  }
  close_all(self, &s);
  return 0;
}

Test(health, allocation_failures) {
  cr_assert_eq(run_virtual(fault_main, NULL), 0);
  assert_no_leaks();
}
