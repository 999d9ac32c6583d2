/* wd_pool in the monitor's exports: two open pools, one of them with known
 * activity on the virtual clock - a refused create and its retry, tasks
 * waiting in line, an acquire timeout, a broken item destroyed, an item in
 * use and a task waiting at the time of the export - exported as JSON
 * (parsed back, each figure checked against the activity and against
 * wd_pool_stats_get) and as Prometheus text (checked line by line: one
 * family per figure, its # HELP and # TYPE once for both pools).  A closed
 * pool reports nothing.
 *
 * The factory is the fake backend of test-pool.h.  Everything runs on the
 * virtual clock, so every time below is exact. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "test-pool.h"

typedef struct waiter {
  wd_pool *p;
  int rc;
} waiter;

static int waiter_task(wd_task *self, void *arg) {
  waiter *w = arg;
  conn *c;
  w->rc = borrow(self, w->p, &c);
  if (w->rc == 0) give_back(self, w->p, c, WD_POOL_OK);
  return 0;
}

typedef struct activity {
  backend be, be2;
  wd_pool *pg, *redis;
  conn *held;
  waiter w[4];
  wd_group g;
  wd_time t1; /* the first acquire's wait */
} activity;

/* pg, at the export (t = t1 + 2.26 s):
 *   acquire 1: the create is refused, retried after a back-off of 50 to
 *     100 ms (equal jitter): waited t1,
 *     held 250 ms while two tasks wait in line (each waits 250 ms, holds
 *     nothing);
 *   acquire 4: at once, held 2 s while a fifth times out after 1 s, then
 *     released broken: destroyed;
 *   acquire 5: a new item, in use now, with one task waiting for it. */
static void make_activity(wd_task *self, activity *a) {
  a->be.fail_first = 1;
  cr_assert_eq(wd_pool_open(self, &a->pg,
                            &(wd_pool_opts){.name = "pg",
                                            .factory = &plain_factory,
                                            .arg = &a->be,
                                            .max_size = 1,
                                            .acquire_timeout = WD_SEC,
                                            .backoff_min = 100 * WD_MSEC,
                                            .backoff_max = 100 * WD_MSEC,
                                            .timing_sample = 1,
                                            .seed = 1}),
               0);
  cr_assert_eq(wd_pool_open(self, &a->redis,
                            &(wd_pool_opts){.name = "redis",
                                            .factory = &plain_factory,
                                            .arg = &a->be2}),
               0);
  conn *c;
  cr_assert_eq(borrow(self, a->pg, &c), 0);
  /* The retry comes after the back-off with equal jitter: 50 to 100 ms. */
  a->t1 = wd_now(self);
  cr_assert(a->t1 >= 50 * WD_MSEC && a->t1 <= 100 * WD_MSEC);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  for (int i = 0; i < 2; i++) {
    a->w[i].p = a->pg;
    cr_assert_eq(wd_spawn(&g, waiter_task, &a->w[i], NULL), 0);
  }
  cr_assert_eq(wd_sleep(self, 250 * WD_MSEC), 0);
  give_back(self, a->pg, c, WD_POOL_OK);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(a->w[0].rc, 0);
  cr_assert_eq(a->w[1].rc, 0);

  cr_assert_eq(borrow(self, a->pg, &c), 0);
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  a->w[2].p = a->pg;
  cr_assert_eq(wd_spawn(&g, waiter_task, &a->w[2], NULL), 0);
  cr_assert_eq(wd_sleep(self, 2 * WD_SEC), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(a->w[2].rc, WD_ETIMEDOUT);
  give_back(self, a->pg, c, WD_POOL_BROKEN);
  cr_assert_eq(wd_sleep(self, 10 * WD_MSEC), 0); /* the destroy runs */

  cr_assert_eq(borrow(self, a->pg, &a->held), 0);
  cr_assert_eq(wd_group_enter(self, &a->g, NULL), 0);
  a->w[3].p = a->pg;
  cr_assert_eq(wd_spawn(&a->g, waiter_task, &a->w[3], NULL), 0);
  cr_assert_eq(wd_yield(self), 0);
  cr_assert_eq(wd_now(self), a->t1 + 2260 * WD_MSEC);
}

static void end_activity(wd_task *self, activity *a) {
  give_back(self, a->pg, a->held, WD_POOL_OK);
  cr_assert_eq(wd_group_exit(self, &a->g, 0), 0);
  cr_assert_eq(a->w[3].rc, 0);
}

static double secs(wd_time t) { return (double)t / WD_SEC; }

/* |got - exact| <= exact / 16 */
static void assert_within_16th(double got, double exact, const char *what) {
  double d = got > exact ? got - exact : exact - got;
  cr_assert_leq(d * 16, exact, "%s: got %g, exact %g", what, got, exact);
}

/* ---- JSON
 * -------------------------------------------------------------------------
 */

static json_t *pool_figures(json_t *root, const char *name, uint64_t id) {
  json_t *res = json_object_get(root, "resources");
  cr_assert(json_is_array(res));
  for (size_t i = 0; i < json_array_size(res); i++) {
    json_t *o = json_array_get(res, i);
    if (strcmp(json_string_value(json_object_get(o, "type")), "pool") ||
        strcmp(json_string_value(json_object_get(o, "name")), name))
      continue;
    cr_assert_eq(json_integer_value(json_object_get(o, "id")), (json_int_t)id);
    json_t *f = json_object_get(o, "figures");
    cr_assert(json_is_object(f), "pool '%s' has no figures", name);
    return f;
  }
  cr_assert_fail("pool '%s' is not in the export", name);
  return NULL;
}

static json_int_t jint_of(json_t *f, const char *key) {
  json_t *v = json_object_get(f, key);
  cr_assert(json_is_integer(v), "'%s' is not an integer", key);
  return json_integer_value(v);
}

static double jnum_of(json_t *f, const char *key) {
  json_t *v = json_object_get(f, key);
  cr_assert(json_is_number(v), "'%s' is not a number", key);
  return json_number_value(v);
}

static void check_dist(json_t *o, const wd_pool_dist *d) {
  cr_assert(json_is_object(o));
  cr_assert_eq(json_object_size(o), 5);
  cr_assert_eq(jint_of(o, "count"), (json_int_t)d->count);
  cr_assert_eq(jnum_of(o, "sum"), secs(d->sum));
  if (!d->count) {
    cr_assert(json_is_null(json_object_get(o, "p50")));
    cr_assert(json_is_null(json_object_get(o, "p90")));
    cr_assert(json_is_null(json_object_get(o, "p99")));
    return;
  }
  cr_assert_eq(jnum_of(o, "p50"), secs(d->p50));
  cr_assert_eq(jnum_of(o, "p90"), secs(d->p90));
  cr_assert_eq(jnum_of(o, "p99"), secs(d->p99));
}

/* Every figure of f is the pool's own statistic. */
static void check_against_stats(json_t *f, const wd_pool_stats *st) {
  cr_assert_eq(json_object_size(f), 20);
  const struct {
    const char *name;
    uint64_t value;
  } plain[] = {
      {"size", st->size},
      {"idle", st->idle},
      {"in_use", st->in_use},
      {"creating", st->creating},
      {"waiting", st->waiting},
      {"max_size", st->max_size},
      {"min_idle", st->min_idle},
      {"down", st->down},
      {"acquires", st->acquires},
      {"timeouts", st->timeouts},
      {"cancelled", st->cancelled},
      {"failed_fast", st->failed_fast},
      {"creates", st->creates},
      {"create_errors", st->create_errors},
      {"destroys", st->destroys},
      {"destroy_errors", st->destroy_errors},
      {"validation_errors", st->validation_errors},
      {"leaks", st->leaks},
  };
  for (size_t i = 0; i < sizeof plain / sizeof *plain; i++)
    cr_assert_eq(jint_of(f, plain[i].name), (json_int_t)plain[i].value, "%s",
                 plain[i].name);
  check_dist(json_object_get(f, "wait_seconds"), &st->wait_time);
  check_dist(json_object_get(f, "hold_seconds"), &st->hold_time);
}

static void check_json(const char *text, const activity *a) {
  json_error_t err;
  json_t *root = json_loads(text, 0, &err);
  cr_assert_not_null(root, "not JSON: %s: %s", err.text, text);

  json_t *f = pool_figures(root, "pg", 1);
  wd_pool_stats st = stats_of(a->pg);
  check_against_stats(f, &st);
  /* ...and what the activity made them. */
  cr_assert_eq(jint_of(f, "size"), 1);
  cr_assert_eq(jint_of(f, "idle"), 0);
  cr_assert_eq(jint_of(f, "in_use"), 1);
  cr_assert_eq(jint_of(f, "waiting"), 1);
  cr_assert_eq(jint_of(f, "max_size"), 1);
  cr_assert_eq(jint_of(f, "acquires"), 5);
  cr_assert_eq(jint_of(f, "timeouts"), 1);
  cr_assert_eq(jint_of(f, "creates"), 2);
  cr_assert_eq(jint_of(f, "create_errors"), 1);
  cr_assert_eq(jint_of(f, "destroys"), 1);
  json_t *wait = json_object_get(f, "wait_seconds");
  cr_assert_eq(jint_of(wait, "count"), 5, "the lent ones: t1, 0.25 x2, 0 x2");
  cr_assert_eq(jnum_of(wait, "sum"), secs(a->t1 + 500 * WD_MSEC));
  assert_within_16th(jnum_of(wait, "p50"), secs(a->t1), "wait p50");
  assert_within_16th(jnum_of(wait, "p90"), 0.25, "wait p90");
  assert_within_16th(jnum_of(wait, "p99"), 0.25, "wait p99");
  json_t *hold = json_object_get(f, "hold_seconds");
  cr_assert_eq(jint_of(hold, "count"), 4, "0.25, 0 x2, 2; one still held");
  cr_assert_eq(jnum_of(hold, "sum"), 2.25);
  cr_assert_leq(jnum_of(hold, "p50"), 0.25 + 0.25 / 16, "hold p50");
  assert_within_16th(jnum_of(hold, "p99"), 2, "hold p99");

  f = pool_figures(root, "redis", 2);
  st = stats_of(a->redis);
  check_against_stats(f, &st);
  cr_assert_eq(jint_of(f, "max_size"), 10);
  cr_assert_eq(jint_of(f, "acquires"), 0);
  cr_assert(
      json_is_null(json_object_get(json_object_get(f, "wait_seconds"), "p50")));
  json_decref(root);
}

/* ---- Prometheus
 * -------------------------------------------------------------------
 */

/* Compare text with want[0..n), one line each, every line ending in \n. */
static void check_lines(const char *text, char want[][192], size_t n) {
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

#define PG "{name=\"pg\",id=\"1\""
#define REDIS "{name=\"redis\",id=\"2\""

static const struct {
  const char *name, *type, *help;
  const char *pg, *redis; /* values; NULL: a summary */
} families[] = {
    {"warden_pool_size", "gauge",
     "Items that exist: idle, in use, or in the pool's hands.", "1", "0"},
    {"warden_pool_idle", "gauge", "Items ready to lend.", "0", "0"},
    {"warden_pool_in_use", "gauge", "Items lent and not yet released.", "1",
     "0"},
    {"warden_pool_creating", "gauge", "Creates under way.", "0", "0"},
    {"warden_pool_waiting", "gauge", "Tasks waiting for an item.", "1", "0"},
    {"warden_pool_max_size", "gauge", "The most items the pool may hold.", "1",
     "10"},
    {"warden_pool_min_idle", "gauge", "Idle items the pool keeps ready.", "0",
     "0"},
    {"warden_pool_down", "gauge",
     "1 while creates keep failing and acquires fail fast.", "0", "0"},
    {"warden_pool_acquires_total", "counter", "Items lent.", "5", "0"},
    {"warden_pool_timeouts_total", "counter",
     "Acquires that ended by a deadline while waiting.", "1", "0"},
    {"warden_pool_cancelled_total", "counter",
     "Acquires cancelled while waiting.", "0", "0"},
    {"warden_pool_failed_fast_total", "counter",
     "Acquires failed with the create error while down.", "0", "0"},
    {"warden_pool_creates_total", "counter", "Items created.", "2", "0"},
    {"warden_pool_create_errors_total", "counter", "Creates that failed.", "1",
     "0"},
    {"warden_pool_destroys_total", "counter", "Items destroyed.", "1", "0"},
    {"warden_pool_destroy_errors_total", "counter",
     "Destroys that reported an error.", "0", "0"},
    {"warden_pool_validation_errors_total", "counter",
     "Validations that failed.", "0", "0"},
    {"warden_pool_leaks_total", "counter", "Items reported held too long.", "0",
     "0"},
    {"warden_pool_wait_seconds", "summary",
     "Time from an acquire's call to the item in hand (timed acquires only; "
     "quantiles within 1/16).",
     NULL, NULL},
    {"warden_pool_hold_seconds", "summary",
     "Time from an item's lending to its release (timed acquires only; "
     "quantiles within 1/16).",
     NULL, NULL},
};

/* Seconds as the export writes them: they must read back the same. */
static void seconds_text(char *buf, size_t n, wd_time t) {
  snprintf(buf, n, "%.15g", secs(t));
  cr_assert_eq(strtod(buf, NULL), secs(t), "%s needs more digits", buf);
}

static size_t summary_lines(char (*out)[192], const char *fam,
                            const char *labels, const wd_pool_dist *d,
                            const char *sum) {
  static const char *const q[] = {"0.5", "0.9", "0.99"};
  const wd_time v[] = {d->p50, d->p90, d->p99};
  size_t n = 0;
  for (size_t i = 0; i < 3; i++) {
    char val[32] = "NaN";
    if (d->count) seconds_text(val, sizeof val, v[i]);
    snprintf(out[n++], 192, "%s%s,quantile=\"%s\"} %s", fam, labels, q[i], val);
  }
  snprintf(out[n++], 192, "%s_sum%s} %s", fam, labels, sum);
  snprintf(out[n++], 192, "%s_count%s} %llu", fam, labels,
           (unsigned long long)d->count);
  return n;
}

static size_t expected_lines(char (*out)[192], const activity *a) {
  wd_pool_stats pg = stats_of(a->pg), redis = stats_of(a->redis);
  size_t n = 0;
  for (size_t f = 0; f < sizeof families / sizeof *families; f++) {
    snprintf(out[n++], 192, "# HELP %s %s", families[f].name, families[f].help);
    snprintf(out[n++], 192, "# TYPE %s %s", families[f].name, families[f].type);
    if (families[f].pg) {
      snprintf(out[n++], 192, "%s" PG "} %s", families[f].name, families[f].pg);
      snprintf(out[n++], 192, "%s" REDIS "} %s", families[f].name,
               families[f].redis);
      continue;
    }
    bool wait = strstr(families[f].name, "wait") != NULL;
    char sum[32];
    seconds_text(sum, sizeof sum, a->t1 + 500 * WD_MSEC);
    n += summary_lines(out + n, families[f].name, PG,
                       wait ? &pg.wait_time : &pg.hold_time,
                       wait ? sum : "2.25");
    n += summary_lines(out + n, families[f].name, REDIS,
                       wait ? &redis.wait_time : &redis.hold_time, "0");
  }
  return n;
}

static void check_prometheus(const char *text, const activity *a) {
  static char want[128][192];
  size_t n = expected_lines(want, a);
  const char *at = strstr(text, "\n# HELP warden_pool_size ");
  cr_assert_not_null(at, "%s", text);
  check_lines(at + 1, want, n);
  /* One # TYPE per family with two pools. */
  const char *t = strstr(text, "# TYPE warden_pool_in_use gauge");
  cr_assert_null(strstr(t + 1, "# TYPE warden_pool_in_use"));
}

static int export_main(wd_task *self, void *arg) {
  activity *a = arg;
  make_activity(self, a);
  char *text;
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_JSON, 0, &text), 0);
  check_json(text, a);
  wd_text_free(text);
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_PROMETHEUS, 0, &text), 0);
  check_prometheus(text, a);
  wd_text_free(text);

  end_activity(self, a);
  /* A closed pool is no longer a live resource: nothing to report. */
  cr_assert_eq(wd_pool_close(self, a->redis), 0);
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_PROMETHEUS, 0, &text), 0);
  cr_assert_null(strstr(text, "name=\"redis\""), "%s", text);
  cr_assert_not_null(strstr(text, "\nwarden_pool_in_use" PG "} 0\n"));
  cr_assert_not_null(strstr(text, "\nwarden_pool_acquires_total" PG "} 6\n"));
  wd_text_free(text);
  cr_assert_eq(wd_pool_close(self, a->pg), 0);
  return 0;
}

Test(pool_monitor, figures_in_json_and_prometheus) {
  static activity a;
  memset(&a, 0, sizeof a);
  cr_assert_eq(run_virtual(export_main, &a), 0);
  assert_backend_clean(&a.be);
  assert_backend_clean(&a.be2);
  assert_no_leaks();
}
