/* The monitor: per-type and per-instance figures after 10 000 open/close
 * cycles (exact counts, lifetime quantiles within the histogram's 1/16 on
 * the virtual clock), the live-resource snapshot, the JSON export parsed
 * back with jansson field by field, the Prometheus text checked line by
 * line (label escaping of a quote, a backslash and a newline), types that
 * share a name, names that are not UTF-8, writing to streams, bad
 * arguments, and every allocation failure point - jansson's included: the
 * fault loops route its allocator through warden's.
 *
 * The `cyc` type fails its open or close when its config says so; time
 * runs on the virtual clock, so every lifetime is exactly the sleep between
 * open and close. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "util/mem.h"

typedef struct cfg {
  int open_fail;
  int close_fail;
} cfg;

typedef struct cyc {
  const cfg *cfg;
} cyc;

static int cyc_open(wd_task *self, void *data, const void *config) {
  const cfg *c = config;
  if (c && c->open_fail) return wd_fail(self, c->open_fail, "open refused");
  ((cyc *)data)->cfg = c;
  return 0;
}

static int cyc_close(wd_task *self, void *data, wd_outcome how) {
  const cfg *c = ((cyc *)data)->cfg;
  if (c && c->close_fail) return wd_fail(self, c->close_fail, "close broke");
  return 0;
}

static const wd_resource_type cyc_type = {
    .name = "cyc", .size = sizeof(cyc), .open = cyc_open, .close = cyc_close};
static const wd_resource_type aux_type = {
    .name = "aux", .size = sizeof(cyc), .open = cyc_open, .close = cyc_close};

static const cfg ok_cfg = {0};
static const cfg bad_open = {.open_fail = -ECONNREFUSED};
static const cfg bad_close = {.close_fail = -EIO};

/* |got - exact| <= exact / 16 */
static void assert_within_16th(wd_time got, wd_time exact, const char *what) {
  wd_time d = got > exact ? got - exact : exact - got;
  cr_assert_leq(d * 16, exact, "%s: got %lld, exact %lld", what, (long long)got,
                (long long)exact);
}

/* ---- 10 000 cycles
 * -----------------------------------------------------------
 */

#define CYCLES 10000
#define FAILED_OPENS 37

typedef struct cycles {
  wd_resource *live[3];
  int live_line;
} cycles;

/* Resource i lives (i % 100 + 1) ms: each of 1..100 ms 100 times.  Every
 * 25th close fails; 37 opens fail; 5 `aux` resources live 2 s each; three
 * `cyc` stay open, aged 2.5, 1.5 and 0.5 s. */
static int run_cycles(wd_task *self, cycles *c) {
  for (int i = 0; i < CYCLES; i++) {
    wd_resource *r;
    int rc = wd_resource_open(self, &cyc_type, i % 25 ? &ok_cfg : &bad_close,
                              NULL, &r);
    cr_assert_eq(rc, 0);
    cr_assert_eq(wd_sleep(self, (i % 100 + 1) * WD_MSEC), 0);
    rc = wd_resource_close(self, r, 0);
    cr_assert_eq(rc, i % 25 ? 0 : -EIO, "cycle %d: %s", i, wd_err_name(rc));
  }
  for (int i = 0; i < FAILED_OPENS; i++) {
    wd_resource *r;
    cr_assert_eq(wd_resource_open(self, &cyc_type, &bad_open, "nope", &r),
                 -ECONNREFUSED);
    cr_assert_null(r);
  }
  for (int i = 0; i < 5; i++) {
    wd_resource *r;
    cr_assert_eq(wd_resource_open(self, &aux_type, &ok_cfg, NULL, &r), 0);
    cr_assert_eq(wd_sleep(self, 2 * WD_SEC), 0);
    cr_assert_eq(wd_resource_close(self, r, 0), 0);
  }
  static const char *names[] = {"first", "second", "third"};
  for (int i = 0; i < 3; i++) {
    c->live_line = __LINE__ + 1;
    int rc = wd_resource_open(self, &cyc_type, &ok_cfg, names[i], &c->live[i]);
    cr_assert_eq(rc, 0);
    cr_assert_eq(wd_sleep(self, i < 2 ? WD_SEC : WD_SEC / 2), 0);
  }
  return 0;
}

static void close_live(wd_task *self, cycles *c) {
  for (int i = 0; i < 3; i++)
    cr_assert_eq(wd_resource_close(self, c->live[i], 0), 0);
}

static const wd_time ages[3] = {2500 * WD_MSEC, 1500 * WD_MSEC, 500 * WD_MSEC};

static int figures_main(wd_task *self, void *arg) {
  cycles c;
  run_cycles(self, &c);

  wd_monitor_stats st;
  cr_assert_eq(wd_monitor_stats_get(NULL, &cyc_type, &st), 0);
  cr_assert_eq(st.counts.created, CYCLES + FAILED_OPENS + 3);
  cr_assert_eq(st.counts.closed, CYCLES);
  cr_assert_eq(st.counts.active, 3);
  cr_assert_eq(st.counts.open_errors, FAILED_OPENS);
  cr_assert_eq(st.counts.close_errors, CYCLES / 25);
  const wd_lifetime_stats *l = &st.lifetime;
  cr_assert_eq(l->count, CYCLES, "only opened-and-closed resources count");
  cr_assert_eq(l->sum, 505000 * WD_MSEC, "100 x (1 + ... + 100) ms");
  cr_assert_float_eq(l->mean, 50.5 * (double)WD_MSEC, 1.0);
  cr_assert_eq(l->min, 1 * WD_MSEC);
  cr_assert_eq(l->max, 100 * WD_MSEC);
  assert_within_16th(l->p50, 50 * WD_MSEC, "median");
  assert_within_16th(l->p90, 90 * WD_MSEC, "p90");
  assert_within_16th(l->p99, 99 * WD_MSEC, "p99");

  /* The same counters as the registry's own. */
  wd_resource_stats rs;
  wd_resource_stats_get(NULL, &cyc_type, &rs);
  cr_assert_eq(memcmp(&rs, &st.counts, sizeof rs), 0);

  wd_monitor_stats aux;
  cr_assert_eq(wd_monitor_stats_get(NULL, &aux_type, &aux), 0);
  cr_assert_eq(aux.counts.created, 5);
  cr_assert_eq(aux.counts.closed, 5);
  cr_assert_eq(aux.lifetime.count, 5);
  cr_assert_eq(aux.lifetime.min, 2 * WD_SEC);
  cr_assert_eq(aux.lifetime.p50, 2 * WD_SEC, "one value: exact");
  cr_assert_eq(aux.lifetime.p99, 2 * WD_SEC);

  wd_monitor_stats all;
  cr_assert_eq(wd_monitor_stats_get(NULL, NULL, &all), 0);
  cr_assert_eq(all.counts.created, CYCLES + FAILED_OPENS + 3 + 5);
  cr_assert_eq(all.counts.closed, CYCLES + 5);
  cr_assert_eq(all.counts.active, 3);
  cr_assert_eq(all.lifetime.count, CYCLES + 5);
  cr_assert_eq(all.lifetime.sum, 505000 * WD_MSEC + 10 * WD_SEC);
  cr_assert_eq(all.lifetime.max, 2 * WD_SEC);

  /* Per instance: the three live ones, oldest first, with their ages. */
  wd_resource_list list;
  cr_assert_eq(wd_resource_get_all(NULL, &list), 0);
  cr_assert_eq(list.n, 3);
  for (size_t i = 0; i < 3; i++)
    cr_assert_eq(list.items[i], c.live[i]);
  wd_resource_list_free(&list);
  cr_assert_eq(list.n, 0);
  cr_assert_null(list.items);

  wd_monitor_stats none;
  static const wd_resource_type unused = {.name = "unused", .size = 1};
  cr_assert_eq(wd_monitor_stats_get(NULL, &unused, &none), 0);
  cr_assert_eq(none.counts.created, 0);
  cr_assert_eq(none.lifetime.count, 0);
  cr_assert_eq(none.lifetime.p99, 0);

  close_live(self, &c);
  return 0;
}

Test(monitor, figures_after_ten_thousand_cycles) {
  cr_assert_eq(run_virtual(figures_main, NULL), 0);
  assert_no_leaks();
}

/* ---- JSON, field by field
 * ------------------------------------------------------
 */

static json_t *parse(const char *text) {
  json_error_t err;
  json_t *j = json_loads(text, 0, &err);
  cr_assert_not_null(j, "not JSON: %s (line %d): %s", err.text, err.line, text);
  return j;
}

static json_int_t jget_int(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  cr_assert(json_is_integer(v), "'%s' is not an integer", key);
  return json_integer_value(v);
}

static const char *jget_str(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  cr_assert(json_is_string(v), "'%s' is not a string", key);
  return json_string_value(v);
}

static void check_counts(json_t *o, const wd_resource_stats *st) {
  cr_assert_eq(jget_int(o, "created"), (json_int_t)st->created);
  cr_assert_eq(jget_int(o, "closed"), (json_int_t)st->closed);
  cr_assert_eq(jget_int(o, "active"), (json_int_t)st->active);
  cr_assert_eq(jget_int(o, "open_errors"), (json_int_t)st->open_errors);
  cr_assert_eq(jget_int(o, "close_errors"), (json_int_t)st->close_errors);
}

static void check_lifetime(json_t *o, const wd_lifetime_stats *l) {
  cr_assert(json_is_object(o));
  cr_assert_eq(json_object_size(o), 8);
  cr_assert_eq(jget_int(o, "count"), (json_int_t)l->count);
  cr_assert_eq(jget_int(o, "sum_ns"), l->sum);
  json_t *mean = json_object_get(o, "mean_ns");
  cr_assert(json_is_number(mean));
  cr_assert_float_eq(json_number_value(mean), l->mean, 1e-6);
  cr_assert_eq(jget_int(o, "min_ns"), l->min);
  cr_assert_eq(jget_int(o, "p50_ns"), l->p50);
  cr_assert_eq(jget_int(o, "p90_ns"), l->p90);
  cr_assert_eq(jget_int(o, "p99_ns"), l->p99);
  cr_assert_eq(jget_int(o, "max_ns"), l->max);
}

static void check_metrics_json(const char *text, const cycles *c,
                               bool instances) {
  json_t *root = parse(text);
  cr_assert(json_is_object(root));
  cr_assert_eq(jget_int(root, "now_ns"), wd_now(NULL));
  cr_assert_eq(jget_int(root, "live"), 3);

  wd_monitor_stats all, cs, as;
  wd_monitor_stats_get(NULL, NULL, &all);
  wd_monitor_stats_get(NULL, &cyc_type, &cs);
  wd_monitor_stats_get(NULL, &aux_type, &as);
  json_t *totals = json_object_get(root, "totals");
  check_counts(totals, &all.counts);
  check_lifetime(json_object_get(totals, "lifetime"), &all.lifetime);

  json_t *types = json_object_get(root, "types");
  cr_assert(json_is_array(types));
  cr_assert_eq(json_array_size(types), 2);
  json_t *t0 = json_array_get(types, 0), *t1 = json_array_get(types, 1);
  cr_assert_str_eq(jget_str(t0, "type"), "cyc", "first-use order");
  check_counts(t0, &cs.counts);
  check_lifetime(json_object_get(t0, "lifetime"), &cs.lifetime);
  cr_assert_str_eq(jget_str(t1, "type"), "aux");
  check_counts(t1, &as.counts);
  check_lifetime(json_object_get(t1, "lifetime"), &as.lifetime);

  json_t *res = json_object_get(root, "resources");
  if (!instances) {
    cr_assert_null(res);
    cr_assert_eq(json_object_size(root), 4);
    json_decref(root);
    return;
  }
  cr_assert_eq(json_object_size(root), 5);
  cr_assert(json_is_array(res));
  cr_assert_eq(json_array_size(res), 3);
  static const char *names[] = {"first", "second", "third"};
  for (size_t i = 0; i < 3; i++) {
    json_t *o = json_array_get(res, i);
    cr_assert_eq(json_object_size(o), 8);
    cr_assert_eq(jget_int(o, "id"), (json_int_t)wd_resource_id(c->live[i]));
    cr_assert_str_eq(jget_str(o, "type"), "cyc");
    cr_assert_str_eq(jget_str(o, "name"), names[i]);
    cr_assert_str_eq(jget_str(o, "state"), "ready");
    cr_assert_str_eq(jget_str(o, "file"), __FILE__);
    cr_assert_eq(jget_int(o, "line"), c->live_line);
    cr_assert_eq(jget_int(o, "age_ns"), ages[i]);
    cr_assert_eq(jget_int(o, "created_ns"), wd_now(NULL) - ages[i]);
  }
  json_decref(root);
}

static int json_main(wd_task *self, void *arg) {
  cycles c;
  run_cycles(self, &c);
  char *text;
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_JSON, 0, &text), 0);
  cr_assert_not_null(text);
  const char *nl = strchr(text, '\n');
  cr_assert(nl && nl[1] == '\0', "compact: one line, ending in a newline");
  check_metrics_json(text, &c, true);
  wd_text_free(text);

  cr_assert_eq(wd_monitor_export(wd_task_runtime(self), WD_EXPORT_JSON,
                                 WD_EXPORT_INDENT, &text),
               0);
  cr_assert_not_null(strstr(text, "\n  \"totals\": {"), "indented: %s", text);
  check_metrics_json(text, &c, true);
  wd_text_free(text);

  cr_assert_eq(
      wd_monitor_export(NULL, WD_EXPORT_JSON, WD_EXPORT_NO_INSTANCES, &text),
      0);
  check_metrics_json(text, &c, false);
  wd_text_free(text);

  close_live(self, &c);
  return 0;
}

Test(monitor, json_parsed_back_field_by_field) {
  cr_assert_eq(run_virtual(json_main, NULL), 0);
  assert_no_leaks();
}

/* ---- Prometheus, line by line
 * ------------------------------------------------------
 */

/* A type name and a resource name with a quote, a backslash and a
 * newline. */
static const wd_resource_type odd_type = {.name = "we\"ird\\ty\npe",
                                          .size = sizeof(cyc),
                                          .open = cyc_open,
                                          .close = cyc_close};
static const wd_resource_type db_type = {
    .name = "db", .size = sizeof(cyc), .open = cyc_open, .close = cyc_close};

typedef struct small {
  wd_resource *weird, *other;
} small;

/* db: 1.5 s lifetime (id 1), a failed open (2), `a"b\c<newline>d` live
 * 0.25 s (3); the odd type: one live 0.25 s (4). */
static void run_small(wd_task *self, small *s) {
  wd_resource *r;
  cr_assert_eq(wd_resource_open(self, &db_type, &ok_cfg, "first", &r), 0);
  cr_assert_eq(wd_sleep(self, 1500 * WD_MSEC), 0);
  cr_assert_eq(wd_resource_close(self, r, 0), 0);
  cr_assert_eq(wd_resource_open(self, &db_type, &bad_open, NULL, &r),
               -ECONNREFUSED);
  cr_assert_eq(
      wd_resource_open(self, &db_type, &ok_cfg, "a\"b\\c\nd", &s->weird), 0);
  cr_assert_eq(wd_resource_open(self, &odd_type, &ok_cfg, "other", &s->other),
               0);
  cr_assert_eq(wd_sleep(self, 250 * WD_MSEC), 0);
}

static void close_small(wd_task *self, small *s) {
  cr_assert_eq(wd_resource_close(self, s->weird, 0), 0);
  cr_assert_eq(wd_resource_close(self, s->other, 0), 0);
}

#define ODD "we\\\"ird\\\\ty\\npe" /* as a label value */

static const char *const prom_expected[] = {
    "# HELP warden_resources_created_total Resources whose open was started, "
    "by type.",
    "# TYPE warden_resources_created_total counter",
    "warden_resources_created_total{type=\"db\"} 3",
    "warden_resources_created_total{type=\"" ODD "\"} 1",
    "# HELP warden_resources_closed_total Resources opened and then closed, by "
    "type.",
    "# TYPE warden_resources_closed_total counter",
    "warden_resources_closed_total{type=\"db\"} 1",
    "warden_resources_closed_total{type=\"" ODD "\"} 0",
    "# HELP warden_resource_open_errors_total Opens that failed or were "
    "cancelled, by type.",
    "# TYPE warden_resource_open_errors_total counter",
    "warden_resource_open_errors_total{type=\"db\"} 1",
    "warden_resource_open_errors_total{type=\"" ODD "\"} 0",
    "# HELP warden_resource_close_errors_total Closes that reported an error, "
    "by type.",
    "# TYPE warden_resource_close_errors_total counter",
    "warden_resource_close_errors_total{type=\"db\"} 0",
    "warden_resource_close_errors_total{type=\"" ODD "\"} 0",
    "# HELP warden_resources_active Live resources (opening, ready or "
    "closing), by type.",
    "# TYPE warden_resources_active gauge",
    "warden_resources_active{type=\"db\"} 1",
    "warden_resources_active{type=\"" ODD "\"} 1",
    "# HELP warden_resource_lifetime_seconds Time from the start of the open "
    "to the end of the close of closed resources, by type (quantiles within "
    "1/16).",
    "# TYPE warden_resource_lifetime_seconds summary",
    "warden_resource_lifetime_seconds{type=\"db\",quantile=\"0.5\"} 1.5",
    "warden_resource_lifetime_seconds{type=\"db\",quantile=\"0.9\"} 1.5",
    "warden_resource_lifetime_seconds{type=\"db\",quantile=\"0.99\"} 1.5",
    "warden_resource_lifetime_seconds_sum{type=\"db\"} 1.5",
    "warden_resource_lifetime_seconds_count{type=\"db\"} 1",
    "warden_resource_lifetime_seconds{type=\"" ODD "\",quantile=\"0.5\"} NaN",
    "warden_resource_lifetime_seconds{type=\"" ODD "\",quantile=\"0.9\"} NaN",
    "warden_resource_lifetime_seconds{type=\"" ODD "\",quantile=\"0.99\"} NaN",
    "warden_resource_lifetime_seconds_sum{type=\"" ODD "\"} 0",
    "warden_resource_lifetime_seconds_count{type=\"" ODD "\"} 0",
    "# HELP warden_resource_age_seconds Age of each live resource, with its "
    "state.",
    "# TYPE warden_resource_age_seconds gauge",
    "warden_resource_age_seconds{type=\"db\",name=\"a\\\"b\\\\c\\nd\",id=\"3\","
    "state=\"ready\"} 0.25",
    "warden_resource_age_seconds{type=\"" ODD "\",name=\"other\",id=\"4\","
    "state=\"ready\"} 0.25",
};

/* Compare text with want[0..n), one line each, every line ending in \n. */
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
  small s;
  run_small(self, &s);
  char *text;
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_PROMETHEUS, 0, &text), 0);
  check_lines(text, prom_expected,
              sizeof prom_expected / sizeof *prom_expected);
  wd_text_free(text);

  /* Without instances: the same up to the age gauge. */
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_PROMETHEUS,
                                 WD_EXPORT_NO_INSTANCES, &text),
               0);
  check_lines(text, prom_expected,
              sizeof prom_expected / sizeof *prom_expected - 4);
  wd_text_free(text);

  /* The JSON of the same names round-trips them unchanged. */
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_JSON, 0, &text), 0);
  json_t *root = parse(text);
  json_t *types = json_object_get(root, "types");
  cr_assert_str_eq(jget_str(json_array_get(types, 1), "type"), odd_type.name);
  json_t *res = json_object_get(root, "resources");
  cr_assert_str_eq(jget_str(json_array_get(res, 0), "name"), "a\"b\\c\nd");
  json_decref(root);
  wd_text_free(text);

  close_small(self, &s);
  return 0;
}

Test(monitor, prometheus_text_line_by_line_with_escaping) {
  cr_assert_eq(run_virtual(prom_main, NULL), 0);
  assert_no_leaks();
}

/* ---- streams
 * ---------------------------------------------------------------------
 */

static int fprint_main(wd_task *self, void *arg) {
  small s;
  run_small(self, &s);
  for (int fmt = 0; fmt < 2; fmt++) {
    char *text;
    cr_assert_eq(wd_monitor_export(NULL, (wd_export_format)fmt, 0, &text), 0);
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    cr_assert_eq(wd_monitor_fprint(NULL, (wd_export_format)fmt, 0, f), 0);
    fclose(f);
    cr_assert_str_eq(mem, text, "the stream gets the same text");
    free(mem);
    wd_text_free(text);
  }
  /* A stream that cannot be written: the error is the stream's. */
  FILE *full = fopen("/dev/full", "w");
  cr_assert_not_null(full);
  setvbuf(full, NULL, _IONBF, 0);
  int rc = wd_monitor_fprint(NULL, WD_EXPORT_PROMETHEUS, 0, full);
  cr_assert_eq(rc, -ENOSPC, "%s", wd_err_name(rc));
  cr_assert_not_null(strstr(wd_task_error(self)->msg, "writing failed"));
  fclose(full);
  close_small(self, &s);
  return 0;
}

Test(monitor, fprint_writes_the_same_text_and_reports_write_errors) {
  cr_assert_eq(run_virtual(fprint_main, NULL), 0);
  assert_no_leaks();
}

/* ---- types sharing a name, names that are not UTF-8
 * ----------------------------
 */

static const wd_resource_type db_twin = {
    .name = "db", .size = sizeof(cyc), .open = cyc_open, .close = cyc_close};

static int twins_main(wd_task *self, void *arg) {
  wd_resource *a, *b;
  cr_assert_eq(wd_resource_open(self, &db_type, &ok_cfg, NULL, &a), 0);
  cr_assert_eq(wd_resource_open(self, &db_twin, &ok_cfg, NULL, &b), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  cr_assert_eq(wd_resource_close(self, a, 0), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  cr_assert_eq(wd_resource_close(self, b, 0), 0);
  /* Apart by vtable... */
  wd_monitor_stats st;
  wd_monitor_stats_get(NULL, &db_twin, &st);
  cr_assert_eq(st.counts.created, 1);
  cr_assert_eq(st.lifetime.max, 2 * WD_SEC);
  /* ...together by name. */
  char *text;
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_PROMETHEUS, 0, &text), 0);
  cr_assert_not_null(
      strstr(text, "\nwarden_resources_created_total{type=\"db\"} 2\n"));
  cr_assert_not_null(
      strstr(text, "\nwarden_resource_lifetime_seconds_sum{type=\"db\"} 3\n"));
  cr_assert_not_null(strstr(
      text, "\nwarden_resource_lifetime_seconds_count{type=\"db\"} 2\n"));
  const char *first = strstr(text, "created_total{type=\"db\"}");
  cr_assert_null(strstr(first + 1, "created_total{type=\"db\"}"),
                 "one series per name");
  wd_text_free(text);
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_JSON, 0, &text), 0);
  json_t *root = parse(text);
  json_t *types = json_object_get(root, "types");
  cr_assert_eq(json_array_size(types), 1);
  json_t *t = json_array_get(types, 0);
  cr_assert_eq(jget_int(t, "created"), 2);
  json_t *l = json_object_get(t, "lifetime");
  cr_assert_eq(jget_int(l, "min_ns"), WD_SEC);
  cr_assert_eq(jget_int(l, "max_ns"), 2 * WD_SEC);
  json_decref(root);
  wd_text_free(text);
  return 0;
}

Test(monitor, types_sharing_a_name_are_exported_together) {
  cr_assert_eq(run_virtual(twins_main, NULL), 0);
  assert_no_leaks();
}

static int utf8_main(wd_task *self, void *arg) {
  wd_resource *bad, *cut;
  /* A stray byte; and a name whose 31-byte cut splits a 3-byte "€". */
  cr_assert_eq(wd_resource_open(self, &db_type, &ok_cfg, "x\xffy", &bad), 0);
  char longname[64] = "";
  for (int i = 0; i < 10; i++)
    strcat(longname, "\xe2\x82\xac"); /* 30 bytes */
  strcat(longname, "\xe2\x82\xac");   /* the cut falls inside this one */
  cr_assert_eq(wd_resource_open(self, &db_type, &ok_cfg, longname, &cut), 0);
  cr_assert_eq(strlen(wd_resource_name(cut)), WD_RESOURCE_NAME_MAX - 1);

  char *text;
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_JSON, 0, &text), 0);
  json_t *root = parse(text);
  json_t *res = json_object_get(root, "resources");
  cr_assert_str_eq(jget_str(json_array_get(res, 0), "name"), "x\xef\xbf\xbdy");
  char want[64];
  memcpy(want, longname, 30);
  strcpy(want + 30, "\xef\xbf\xbd"); /* the lone lead byte replaced */
  cr_assert_str_eq(jget_str(json_array_get(res, 1), "name"), want);
  json_decref(root);
  wd_text_free(text);

  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_PROMETHEUS, 0, &text), 0);
  cr_assert_not_null(strstr(text, "name=\"x\xef\xbf\xbdy\""));
  cr_assert_null(strstr(text, "\xff"));
  wd_text_free(text);
  cr_assert_eq(wd_resource_close(self, bad, 0), 0);
  cr_assert_eq(wd_resource_close(self, cut, 0), 0);
  return 0;
}

Test(monitor, names_that_are_not_utf8_are_repaired) {
  cr_assert_eq(run_virtual(utf8_main, NULL), 0);
  assert_no_leaks();
}

/* ---- the snapshot
 * --------------------------------------------------------------
 */

static int snapshot_main(wd_task *self, void *arg) {
  wd_resource *a, *b;
  cr_assert_eq(wd_resource_open(self, &db_type, &ok_cfg, "a", &a), 0);
  cr_assert_eq(wd_resource_open(self, &db_type, &ok_cfg, "b", &b), 0);
  wd_resource_list l;
  cr_assert_eq(wd_resource_get_all(wd_task_runtime(self), &l), 0);
  cr_assert_eq(l.n, 2);
  /* Closed (and given up by its owner) while listed: still readable. */
  cr_assert_eq(wd_resource_close(self, a, 0), 0);
  cr_assert_eq(wd_resource_state_of(l.items[0]), WD_RESOURCE_CLOSED);
  cr_assert_str_eq(wd_resource_name(l.items[0]), "a");
  cr_assert_eq(wd_resource_state_of(l.items[1]), WD_RESOURCE_READY);
  wd_resource_list_free(&l);
  wd_resource_list_free(&l); /* empty: a no-op */
  wd_resource_list_free(NULL);
  cr_assert_eq(wd_resource_close(self, b, 0), 0);
  cr_assert_eq(wd_resource_get_all(NULL, &l), 0);
  cr_assert_eq(l.n, 0, "nothing live");
  cr_assert_null(l.items);
  return 0;
}

Test(monitor, snapshot_holds_resources_closed_meanwhile) {
  cr_assert_eq(run_virtual(snapshot_main, NULL), 0);
  assert_no_leaks();
}

Test(monitor, outside_any_runtime_everything_is_empty) {
  wd_monitor_stats st;
  cr_assert_eq(wd_monitor_stats_get(NULL, NULL, &st), 0);
  cr_assert_eq(st.counts.created, 0);
  wd_resource_list l;
  cr_assert_eq(wd_resource_get_all(NULL, &l), 0);
  cr_assert_eq(l.n, 0);
  char *text;
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_JSON, 0, &text), 0);
  json_t *root = parse(text);
  cr_assert_eq(jget_int(root, "live"), 0);
  cr_assert_eq(json_array_size(json_object_get(root, "types")), 0);
  cr_assert_eq(json_array_size(json_object_get(root, "resources")), 0);
  json_decref(root);
  wd_text_free(text);
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_PROMETHEUS, 0, &text), 0);
  /* Every family is announced, with no samples. */
  cr_assert_not_null(strstr(text,
                            "# TYPE warden_resources_created_total counter\n"
                            "# HELP warden_resources_closed_total"));
  wd_text_free(text);
  assert_no_leaks();
}

/* ---- bad arguments
 * ----------------------------------------------------------------
 */

static const char *last_msg(void) { return wd_last_error()->msg; }

static int bad_args_main(wd_task *self, void *arg) {
  char *text = (char *)"untouched";
  cr_assert_eq(wd_monitor_stats_get(NULL, NULL, NULL), WD_EINVAL);
  cr_assert_str_eq(last_msg(), "wd_monitor_stats_get: NULL out");
  cr_assert_eq(wd_resource_get_all(NULL, NULL), WD_EINVAL);
  cr_assert_str_eq(last_msg(), "wd_resource_get_all: NULL out");
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_JSON, 0, NULL), WD_EINVAL);
  cr_assert_str_eq(last_msg(), "wd_monitor_export: NULL out");
  cr_assert_eq(wd_monitor_export(NULL, (wd_export_format)7, 0, &text),
               WD_EINVAL);
  cr_assert_null(text, "*out is NULL on failure");
  cr_assert_str_eq(last_msg(), "wd_monitor_export: unknown format 7");
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_JSON, 0x80, &text), WD_EINVAL);
  cr_assert_str_eq(last_msg(), "wd_monitor_export: unknown flags 0x80");
  cr_assert_eq(wd_monitor_fprint(NULL, WD_EXPORT_JSON, 0, NULL), WD_EINVAL);
  cr_assert_str_eq(last_msg(), "wd_monitor_fprint: NULL stream");
  cr_assert_eq(wd_monitor_fprint(NULL, (wd_export_format)-1, 0, stderr),
               WD_EINVAL);
  cr_assert_eq(wd_health_report_export(NULL, WD_EXPORT_JSON, 0, &text),
               WD_EINVAL);
  cr_assert_str_eq(last_msg(), "wd_health_report_export: NULL report");
  cr_assert_eq(wd_health_report_fprint(NULL, WD_EXPORT_JSON, 0, stderr),
               WD_EINVAL);
  cr_assert_str_eq(last_msg(), "wd_health_report_fprint: NULL report");
  wd_text_free(NULL);
  return 0;
}

Test(monitor, bad_arguments) {
  cr_assert_eq(run_virtual(bad_args_main, NULL), 0);
  assert_no_leaks();
}

/* ---- figures of the instances
 * ------------------------------------------------------ The `gad-get` type
 * reports figures of its own: gauges, counters and summaries, a figure
 * with a name that is not an identifier, one without a name, a duplicate,
 * one with an unknown kind, and one that two instances report with
 * different kinds.  Its open sleeps when the config says so, to be caught
 * while opening. */

typedef struct gadget {
  int which;
} gadget;

static int gadget_open(wd_task *self, void *data, const void *config) {
  int which = *(const int *)config;
  if (which == 3) {
    int rc = wd_sleep(self, WD_SEC);
    if (rc) return rc;
  }
  ((gadget *)data)->which = which;
  return 0;
}

static size_t gadget_figures(void *data, wd_figure *out, size_t cap) {
  const gadget *g = data;
  cr_assert(g->which == 1 || g->which == 2, "asked while not ready");
  if (g->which == 1) {
    const wd_figure f[] = {
        {.name = "level",
         .help = "Level \\ of\nthe gadget.",
         .kind = WD_FIGURE_GAUGE,
         .value = 3},
        {.name = "hits",
         .help = "Hits.",
         .kind = WD_FIGURE_COUNTER,
         .value = 1000000000000001.0},
        {.name = "lat_seconds",
         .help = "Latency.",
         .kind = WD_FIGURE_SUMMARY,
         .count = 4,
         .sum = 1.5,
         .p50 = 0.25,
         .p90 = 0.5,
         .p99 = 0.5},
        {.name = "bad-name", .kind = WD_FIGURE_GAUGE, .value = 1},
        {.name = NULL, .kind = WD_FIGURE_GAUGE, .value = 1},
        {.name = "9lives", .kind = WD_FIGURE_GAUGE, .value = 1},
        {.name = "level", .kind = WD_FIGURE_GAUGE, .value = 99},
        {.name = "strange", .kind = (wd_figure_kind)7, .value = 1},
        {.name = "temp",
         .help = "Temperature.",
         .kind = WD_FIGURE_GAUGE,
         .value = NAN},
    };
    size_t n = sizeof f / sizeof *f;
    cr_assert_geq(cap, n);
    memcpy(out, f, sizeof f);
    return n;
  }
  const wd_figure f[] = {
      {.name = "level",
       .help = "Other help.",
       .kind = WD_FIGURE_GAUGE,
       .value = 0.25},
      {.name = "hits", .kind = WD_FIGURE_COUNTER, .value = 7},
      /* Quantiles of an empty summary are not shown. */
      {.name = "lat_seconds", .kind = WD_FIGURE_SUMMARY, .p50 = 1, .p99 = 1},
      {.name = "temp", .kind = WD_FIGURE_COUNTER, .value = 5},
      {.name = "extra",
       .help = "Extra.",
       .kind = WD_FIGURE_GAUGE,
       .value = 0.1},
  };
  memcpy(out, f, sizeof f);
  return sizeof f / sizeof *f;
}

static const wd_resource_type gadget_type = {.name = "gad-get",
                                             .size = sizeof(gadget),
                                             .open = gadget_open,
                                             .figures = gadget_figures};

typedef struct gadgets {
  wd_resource *plain, *g1, *g2, *g3;
  wd_group g;
} gadgets;

static const int one = 1, two = 2, three = 3;

static int open_slow_gadget(wd_task *self, void *arg) {
  gadgets *gs = arg;
  cr_assert_eq(wd_resource_open(self, &gadget_type, &three, "slow", &gs->g3),
               0);
  return 0;
}

/* plain `cyc` (id 1), g1 named `a"b\c<newline>d` (2), g2 (3), and a third
 * gadget opening in its own task (4). */
static void open_gadgets(wd_task *self, gadgets *gs) {
  cr_assert_eq(wd_resource_open(self, &cyc_type, &ok_cfg, "plain", &gs->plain),
               0);
  cr_assert_eq(
      wd_resource_open(self, &gadget_type, &one, "a\"b\\c\nd", &gs->g1), 0);
  cr_assert_eq(wd_resource_open(self, &gadget_type, &two, "g2", &gs->g2), 0);
  cr_assert_eq(wd_group_enter(self, &gs->g, NULL), 0);
  cr_assert_eq(wd_spawn(&gs->g, open_slow_gadget, gs, NULL), 0);
  cr_assert_eq(wd_yield(self), 0); /* its open has started: it sleeps */
}

static void close_gadgets(wd_task *self, gadgets *gs) {
  cr_assert_eq(wd_group_exit(self, &gs->g, 0), 0);
  cr_assert_eq(wd_resource_close(self, gs->g3, 0), 0);
  cr_assert_eq(wd_resource_close(self, gs->g2, 0), 0);
  cr_assert_eq(wd_resource_close(self, gs->g1, 0), 0);
  cr_assert_eq(wd_resource_close(self, gs->plain, 0), 0);
}

static double jget_num(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  cr_assert(json_is_number(v), "'%s' is not a number", key);
  return json_number_value(v);
}

static void check_lat(json_t *o, json_int_t count, double sum, double p50,
                      double p90, double p99) {
  cr_assert(json_is_object(o));
  cr_assert_eq(json_object_size(o), 5);
  cr_assert_eq(jget_int(o, "count"), count);
  cr_assert_eq(jget_num(o, "sum"), sum);
  if (!count) {
    cr_assert(json_is_null(json_object_get(o, "p50")));
    cr_assert(json_is_null(json_object_get(o, "p90")));
    cr_assert(json_is_null(json_object_get(o, "p99")));
    return;
  }
  cr_assert_eq(jget_num(o, "p50"), p50);
  cr_assert_eq(jget_num(o, "p90"), p90);
  cr_assert_eq(jget_num(o, "p99"), p99);
}

static void check_gadgets_json(const char *text) {
  json_t *root = parse(text);
  json_t *res = json_object_get(root, "resources");
  cr_assert_eq(json_array_size(res), 4);
  /* A type without figures: no "figures" at all. */
  json_t *plain = json_array_get(res, 0);
  cr_assert_eq(json_object_size(plain), 8);
  cr_assert_null(json_object_get(plain, "figures"));

  json_t *g1 = json_array_get(res, 1);
  cr_assert_eq(json_object_size(g1), 9);
  cr_assert_str_eq(jget_str(g1, "name"), "a\"b\\c\nd");
  json_t *f = json_object_get(g1, "figures");
  cr_assert(json_is_object(f));
  cr_assert_eq(json_object_size(f), 4, "the first of each name, valid ones");
  cr_assert_eq(jget_int(f, "level"), 3, "an integral value is an integer");
  cr_assert_eq(jget_int(f, "hits"), 1000000000000001);
  check_lat(json_object_get(f, "lat_seconds"), 4, 1.5, 0.25, 0.5, 0.5);
  cr_assert(json_is_null(json_object_get(f, "temp")), "NaN is null");

  json_t *g2 = json_array_get(res, 2);
  f = json_object_get(g2, "figures");
  cr_assert_eq(json_object_size(f), 5);
  json_t *lv = json_object_get(f, "level");
  cr_assert(json_is_real(lv));
  cr_assert_eq(json_real_value(lv), 0.25);
  cr_assert_eq(jget_int(f, "hits"), 7);
  check_lat(json_object_get(f, "lat_seconds"), 0, 0, 0, 0, 0);
  cr_assert_eq(jget_int(f, "temp"), 5);
  cr_assert_eq(jget_num(f, "extra"), 0.1);

  /* Not ready: an empty object, and the type was not asked. */
  json_t *g3 = json_array_get(res, 3);
  cr_assert_str_eq(jget_str(g3, "state"), "opening");
  f = json_object_get(g3, "figures");
  cr_assert(json_is_object(f));
  cr_assert_eq(json_object_size(f), 0);
  json_decref(root);
}

#define G1 "{name=\"a\\\"b\\\\c\\nd\",id=\"2\""
#define G2 "{name=\"g2\",id=\"3\""

static const char *const gadget_prom[] = {
    "# HELP warden_gad_get_level Level \\\\ of\\nthe gadget.",
    "# TYPE warden_gad_get_level gauge",
    "warden_gad_get_level" G1 "} 3",
    "warden_gad_get_level" G2 "} 0.25",
    "# HELP warden_gad_get_hits_total Hits.",
    "# TYPE warden_gad_get_hits_total counter",
    "warden_gad_get_hits_total" G1 "} 1000000000000001",
    "warden_gad_get_hits_total" G2 "} 7",
    "# HELP warden_gad_get_lat_seconds Latency.",
    "# TYPE warden_gad_get_lat_seconds summary",
    "warden_gad_get_lat_seconds" G1 ",quantile=\"0.5\"} 0.25",
    "warden_gad_get_lat_seconds" G1 ",quantile=\"0.9\"} 0.5",
    "warden_gad_get_lat_seconds" G1 ",quantile=\"0.99\"} 0.5",
    "warden_gad_get_lat_seconds_sum" G1 "} 1.5",
    "warden_gad_get_lat_seconds_count" G1 "} 4",
    "warden_gad_get_lat_seconds" G2 ",quantile=\"0.5\"} NaN",
    "warden_gad_get_lat_seconds" G2 ",quantile=\"0.9\"} NaN",
    "warden_gad_get_lat_seconds" G2 ",quantile=\"0.99\"} NaN",
    "warden_gad_get_lat_seconds_sum" G2 "} 0",
    "warden_gad_get_lat_seconds_count" G2 "} 0",
    /* g2's `temp` is a counter: not in g1's gauge family. */
    "# HELP warden_gad_get_temp Temperature.",
    "# TYPE warden_gad_get_temp gauge",
    "warden_gad_get_temp" G1 "} NaN",
    "# HELP warden_gad_get_extra Extra.",
    "# TYPE warden_gad_get_extra gauge",
    "warden_gad_get_extra" G2 "} 0.1",
};

static int gadgets_main(wd_task *self, void *arg) {
  static gadgets gs;
  open_gadgets(self, &gs);
  char *text;
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_JSON, 0, &text), 0);
  check_gadgets_json(text);
  wd_text_free(text);
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_JSON, WD_EXPORT_INDENT, &text),
               0);
  check_gadgets_json(text);
  wd_text_free(text);

  /* Prometheus: the figures come last, after the age gauge. */
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_PROMETHEUS, 0, &text), 0);
  const char *at = strstr(text, "\n# HELP warden_gad_get_");
  cr_assert_not_null(at, "%s", text);
  cr_assert_not_null(strstr(text,
                            "warden_resource_age_seconds{type=\"gad-get\","
                            "name=\"slow\",id=\"4\",state=\"opening\"}"));
  check_lines(at + 1, gadget_prom, sizeof gadget_prom / sizeof *gadget_prom);
  wd_text_free(text);

  /* Per instance: left out with the instances. */
  cr_assert_eq(wd_monitor_export(NULL, WD_EXPORT_PROMETHEUS,
                                 WD_EXPORT_NO_INSTANCES, &text),
               0);
  cr_assert_null(strstr(text, "warden_gad_get"), "%s", text);
  wd_text_free(text);
  cr_assert_eq(
      wd_monitor_export(NULL, WD_EXPORT_JSON, WD_EXPORT_NO_INSTANCES, &text),
      0);
  cr_assert_null(strstr(text, "figures"), "%s", text);
  wd_text_free(text);

  close_gadgets(self, &gs);
  return 0;
}

Test(monitor, figures_of_the_instances_in_json_and_prometheus) {
  cr_assert_eq(run_virtual(gadgets_main, NULL), 0);
  assert_no_leaks();
}

/* ---- allocation failures
 * ------------------------------------------------------------ jansson
 * allocates through warden's allocator here, so that its failures are injected
 * too. */

static void *j_malloc(size_t n) { return wd__malloc(n); }
static void j_free(void *p) { wd__free(p); }

typedef struct fault {
  wd_export_format fmt;
  unsigned flags;
  bool gadgets; /* also instances with figures */
} fault;

static int fault_main(wd_task *self, void *arg) {
  const fault *f = arg;
  small s;
  run_small(self, &s);
  static gadgets gs;
  if (f->gadgets) open_gadgets(self, &gs);
  char *want;
  cr_assert_eq(wd_monitor_export(NULL, f->fmt, f->flags, &want), 0);
  for (long n = 1;; n++) {
    char *text = (char *)"untouched";
    wd_error_clear(self); /* a recorded error is a block too */
    long live = wd_alloc_live();
    wd_alloc_fail_after(n);
    int rc = wd_monitor_export(NULL, f->fmt, f->flags, &text);
    bool fired = wd_alloc_failed();
    wd_alloc_fail_after(0);
    if (!fired) {
      cr_assert_eq(rc, 0);
      cr_assert_str_eq(text, want);
      wd_text_free(text);
      /* jansson allocates every value: many points; the text alone: few. */
      cr_assert_gt(n, f->fmt == WD_EXPORT_JSON ? 50 : 1, "n=%ld", n);
      break;
    }
    cr_assert_eq(rc, WD_ENOMEM, "n=%ld: %s", n, wd_err_name(rc));
    cr_assert_null(text, "n=%ld", n);
    cr_assert_not_null(strstr(last_msg(), "no memory"), "n=%ld: %s", n,
                       last_msg());
    wd_error_clear(self);
    cr_assert_eq(wd_alloc_live(), live, "n=%ld: leaked", n);
    cr_assert_lt(n, 10000, "the fault loop does not end");
  }
  wd_text_free(want);

  for (long n = 1;; n++) {
    wd_resource_list l;
    wd_alloc_fail_after(n);
    int rc = wd_resource_get_all(NULL, &l);
    bool fired = wd_alloc_failed();
    wd_alloc_fail_after(0);
    if (!fired) {
      cr_assert_eq(rc, 0);
      cr_assert_eq(l.n, f->gadgets ? 6 : 2);
      wd_resource_list_free(&l);
      break;
    }
    cr_assert_eq(rc, WD_ENOMEM);
    cr_assert_eq(l.n, 0);
    cr_assert_null(l.items);
  }
  if (f->gadgets) close_gadgets(self, &gs);
  close_small(self, &s);
  return 0;
}

static void fault_loop_with(wd_export_format fmt, unsigned flags,
                            bool with_figures) {
  json_set_alloc_funcs(j_malloc, j_free);
  fault f = {fmt, flags, with_figures};
  cr_assert_eq(run_virtual(fault_main, &f), 0);
  assert_no_leaks();
}

static void fault_loop(wd_export_format fmt, unsigned flags) {
  fault_loop_with(fmt, flags, false);
}

Test(monitor, allocation_failures_json) { fault_loop(WD_EXPORT_JSON, 0); }

Test(monitor, allocation_failures_json_indented) {
  fault_loop(WD_EXPORT_JSON, WD_EXPORT_INDENT);
}

Test(monitor, allocation_failures_prometheus) {
  fault_loop(WD_EXPORT_PROMETHEUS, 0);
}

Test(monitor, allocation_failures_with_figures_json) {
  fault_loop_with(WD_EXPORT_JSON, 0, true);
}

Test(monitor, allocation_failures_with_figures_prometheus) {
  fault_loop_with(WD_EXPORT_PROMETHEUS, 0, true);
}
