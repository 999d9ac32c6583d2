/* The monitor: figures of the registry, snapshots of the live resources,
 * and the export of figures and health reports as JSON and Prometheus text.
 *
 * The figures are the registry's own (registry.c counts every open and
 * close and adds each closed resource's lifetime to its type's histogram),
 * so reading them costs nothing while the program runs: no list of samples
 * grows, and a summary is computed when asked for.  Types are told apart by
 * their vtable's address, but an export groups them by name: a Prometheus
 * scraper rejects two series with the same labels, and a reader of the JSON
 * means the name.  Merging histograms keeps the quantiles exact to the
 * bucket, which merging summaries would not.
 *
 * JSON is built as a jansson tree and dumped through a callback into a
 * sink: a growing buffer taken from warden's allocator (so the text is
 * counted and fault-injectable like any warden block, and freed with
 * wd_text_free()) or a stream.  jansson's own allocations go through
 * jansson's allocator.  Prometheus text is written straight into the same
 * sink.  Strings from users (resource and type names, health messages) may
 * not be UTF-8 - a name truncated to WD_RESOURCE_NAME_MAX bytes can end in
 * the middle of a character - and both formats require it, so invalid
 * bytes are replaced by U+FFFD before jansson or the label escaper sees
 * them.
 *
 * A type may also report figures of its own per instance (resource.h's
 * `figures`: a pool's items in use, its wait times).  The monitor knows
 * nothing of them but their kind: it asks each ready instance while it
 * exports, into a buffer on its own stack, and writes them in the
 * instance's JSON object, or as Prometheus families named after the type
 * and the figure.  Prometheus wants each family's samples together under
 * one # HELP and # TYPE, so the figures of every instance are gathered
 * into one table first and written family by family, in the order they
 * first appear; JSON needs no such grouping.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "resource-internal.h"

/* ---- figures ------------------------------------------------------------- */

static void lifetime_of(const wd__hist *h, wd_lifetime_stats *out) {
  wd__hist_summary s;
  wd__hist_summarize(h, &s);
  *out = (wd_lifetime_stats){.count = s.count,
                             .sum = h->count ? h->sum : 0,
                             .mean = s.mean,
                             .min = s.min,
                             .p50 = s.p50,
                             .p90 = s.p90,
                             .p99 = s.p99,
                             .max = s.max};
}

static void counts_add(wd_resource_stats *dst, const wd_resource_stats *src) {
  dst->created += src->created;
  dst->closed += src->closed;
  dst->active += src->active;
  dst->open_errors += src->open_errors;
  dst->close_errors += src->close_errors;
}

int wd_monitor_stats_get(wd_runtime *rt, const wd_resource_type *t,
                         wd_monitor_stats *out) {
  if (!out) return wd_fail(NULL, WD_EINVAL, "wd_monitor_stats_get: NULL out");
  *out = (wd_monitor_stats){0};
  wd__registry *reg = wd__registry_find(rt ? rt : wd_runtime_current());
  if (!reg) return 0;
  if (t) {
    for (wd__rtype *ty = reg->types; ty; ty = ty->next) {
      if (ty->type != t) continue;
      out->counts = ty->st;
      lifetime_of(&ty->lifetime, &out->lifetime);
    }
    return 0;
  }
  wd__hist all;
  memset(&all, 0, sizeof all);
  for (wd__rtype *ty = reg->types; ty; ty = ty->next) {
    counts_add(&out->counts, &ty->st);
    wd__hist_merge(&all, &ty->lifetime);
  }
  lifetime_of(&all, &out->lifetime);
  return 0;
}

/* ---- snapshots ------------------------------------------------------------
 */

int wd_resource_get_all(wd_runtime *rt, wd_resource_list *out) {
  if (!out) return wd_fail(NULL, WD_EINVAL, "wd_resource_get_all: NULL out");
  *out = (wd_resource_list){0};
  wd__registry *reg = wd__registry_find(rt ? rt : wd_runtime_current());
  if (!reg || !reg->nlive) return 0;
  wd_resource **items = wd__malloc(reg->nlive * sizeof *items);
  if (!items)
    return wd_fail(NULL, WD_ENOMEM,
                   "wd_resource_get_all: no memory for %zu resources",
                   reg->nlive);
  size_t n = 0;
  wd__list_each(it, &reg->live) {
    wd_resource *r = wd__container_of(it, wd_resource, link);
    wd_resource_ref(r);
    items[n++] = r;
  }
  *out = (wd_resource_list){.n = n, .items = items};
  return 0;
}

void wd_resource_list_free(wd_resource_list *l) {
  if (!l) return;
  for (size_t i = 0; i < l->n; i++)
    wd_resource_unref(l->items[i]);
  wd__free(l->items);
  *l = (wd_resource_list){0};
}

/* ---- a sink: a growing buffer or a stream ---------------------------------
 */

typedef struct sink {
  FILE *f;   /* NULL: the buffer */
  char *buf; /* warden's allocator, NUL-terminated while len > 0 */
  size_t len, cap;
  int err; /* the first failure: WD_ENOMEM or -errno; then nothing more */
} sink;

static bool sink_reserve(sink *s, size_t more) {
  if (s->len + more + 1 <= s->cap) return true;
  size_t cap = s->cap ? s->cap : 4096;
  while (cap < s->len + more + 1)
    cap *= 2;
  char *p = wd__realloc(s->buf, cap);
  if (!p) {
    s->err = WD_ENOMEM;
    return false;
  }
  s->buf = p;
  s->cap = cap;
  return true;
}

static void stream_failed(sink *s) { s->err = errno > 0 ? -errno : -EIO; }

static void sink_write(sink *s, const char *p, size_t n) {
  if (s->err || n == 0) return;
  if (s->f) {
    errno = 0;
    if (fwrite(p, 1, n, s->f) != n) stream_failed(s);
    return;
  }
  if (!sink_reserve(s, n)) return;
  memcpy(s->buf + s->len, p, n);
  s->len += n;
  s->buf[s->len] = '\0';
}

static void sink_puts(sink *s, const char *str) {
  sink_write(s, str, strlen(str));
}

__attribute__((format(printf, 2, 3))) static void
sink_printf(sink *s, const char *fmt, ...) {
  char small[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) {
    if (!s->err) s->err = -EIO;
    return;
  }
  if ((size_t)n < sizeof small) {
    sink_write(s, small, (size_t)n);
    return;
  }
  /* Longer than any line this file writes; kept for safety. */
  if (s->err) return;
  va_start(ap, fmt);
  if (s->f) {
    errno = 0;
    if (vfprintf(s->f, fmt, ap) < 0) stream_failed(s);
  } else if (sink_reserve(s, (size_t)n)) {
    vsnprintf(s->buf + s->len, s->cap - s->len, fmt, ap);
    s->len += (size_t)n;
  }
  va_end(ap);
}

/* Hand the text over (out) or flush the stream; report the first failure
 * under `what`. */
static int sink_finish(sink *s, char **out, const char *what) {
  if (!s->err && s->f) {
    errno = 0;
    if (fflush(s->f) != 0 || ferror(s->f)) stream_failed(s);
  }
  if (!s->err && !s->f && !s->buf && sink_reserve(s, 0)) s->buf[0] = '\0';
  if (s->err) {
    wd__free(s->buf);
    int rc = s->err;
    if (rc == WD_ENOMEM)
      return wd_fail(NULL, rc, "%s: no memory for the text", what);
    return wd_fail(NULL, rc, "%s: writing failed: %s", what, wd_strerror(rc));
  }
  if (out) *out = s->buf;
  return 0;
}

void wd_text_free(char *text) { wd__free(text); }

/* ---- UTF-8 ------------------------------------------------------------------
 * Both formats carry UTF-8 only.  utf8_len() is as strict as jansson:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */

static size_t utf8_len(const unsigned char *p, size_t left) {
  unsigned c = p[0];
  if (c < 0x80) return 1;
  size_t n;
  unsigned lo = 0x80, hi = 0xBF; /* the second byte's range */
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else
    return 0;
  if (left < n || p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if ((p[i] & 0xC0) != 0x80) return 0;
  return n;
}

static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* Call put(s, piece, len) for str's bytes, invalid ones replaced. */
static void utf8_each(const char *str,
                      void (*put)(void *, const char *, size_t), void *arg) {
  const unsigned char *p = (const unsigned char *)str;
  size_t left = strlen(str), run = 0;
  while (run < left) {
    size_t n = utf8_len(p + run, left - run);
    if (n) {
      run += n;
      continue;
    }
    put(arg, (const char *)p, run);
    put(arg, replacement, sizeof replacement - 1);
    p += run + 1;
    left -= run + 1;
    run = 0;
  }
  put(arg, (const char *)p, run);
}

static bool utf8_valid(const char *str) {
  const unsigned char *p = (const unsigned char *)str;
  size_t left = strlen(str);
  while (left) {
    size_t n = utf8_len(p, left);
    if (!n) return false;
    p += n;
    left -= n;
  }
  return true;
}

/* ---- JSON ------------------------------------------------------------------
 * Every setter steals its value, also on failure, and fails on a NULL
 * value: a whole object is built with `bad |= set(...)` and checked once. */

typedef struct strbuf {
  char *p;
  size_t len;
} strbuf;

static void strbuf_put(void *arg, const char *piece, size_t n) {
  strbuf *b = arg;
  memcpy(b->p + b->len, piece, n);
  b->len += n;
}

/* A JSON string of str (NULL: null), invalid UTF-8 replaced. */
static json_t *jstr(const char *str) {
  if (!str) return json_null();
  if (utf8_valid(str)) return json_string_nocheck(str);
  size_t len = strlen(str);
  strbuf b = {wd__malloc(3 * len + 1), 0}; /* each byte may become 3 */
  if (!b.p) return NULL;
  utf8_each(str, strbuf_put, &b);
  json_t *j = json_stringn_nocheck(b.p, b.len);
  wd__free(b.p);
  return j;
}

static json_t *jint(uint64_t v) {
  return json_integer(v > (uint64_t)LLONG_MAX ? LLONG_MAX : (json_int_t)v);
}

static json_t *jtime(wd_time t) { return json_integer((json_int_t)t); }

static int jset(json_t *o, const char *key, json_t *v) {
  return json_object_set_new_nocheck(o, key, v);
}

static json_t *json_counts(json_t *o, const wd_resource_stats *st) {
  if (!o) return NULL;
  int bad = jset(o, "created", jint(st->created));
  bad |= jset(o, "closed", jint(st->closed));
  bad |= jset(o, "active", jint(st->active));
  bad |= jset(o, "open_errors", jint(st->open_errors));
  bad |= jset(o, "close_errors", jint(st->close_errors));
  if (!bad) return o;
  json_decref(o);
  return NULL;
}

static json_t *json_lifetime(const wd_lifetime_stats *l) {
  json_t *o = json_object();
  if (!o) return NULL;
  int bad = jset(o, "count", jint(l->count));
  bad |= jset(o, "sum_ns", jtime(l->sum));
  bad |= jset(o, "mean_ns", json_real(l->mean));
  bad |= jset(o, "min_ns", jtime(l->min));
  bad |= jset(o, "p50_ns", jtime(l->p50));
  bad |= jset(o, "p90_ns", jtime(l->p90));
  bad |= jset(o, "p99_ns", jtime(l->p99));
  bad |= jset(o, "max_ns", jtime(l->max));
  if (!bad) return o;
  json_decref(o);
  return NULL;
}

static int json_put(const char *buffer, size_t size, void *data) {
  sink *s = data;
  sink_write(s, buffer, size);
  return s->err ? -1 : 0;
}

/* Dump root (stolen) into s, followed by a newline. */
static void json_emit(sink *s, json_t *root, unsigned flags) {
  if (!root) {
    if (!s->err) s->err = WD_ENOMEM;
    return;
  }
  size_t jf = (flags & WD_EXPORT_INDENT) ? JSON_INDENT(2) : JSON_COMPACT;
  if (json_dump_callback(root, json_put, s, jf) != 0 && !s->err)
    s->err = WD_ENOMEM; /* jansson's own allocation failed */
  json_decref(root);
  sink_puts(s, "\n");
}

/* ---- types, grouped by name ------------------------------------------------
 */

/* True when an earlier type of reg has ty's name: ty was reported with it. */
static bool seen_before(const wd__registry *reg, const wd__rtype *ty) {
  for (const wd__rtype *o = reg->types; o != ty; o = o->next)
    if (strcmp(o->type->name, ty->type->name) == 0) return true;
  return false;
}

/* The figures of every type named like first (which is not seen_before):
 * counts, and the lifetimes when h is not NULL. */
static void group_of(const wd__rtype *first, wd_resource_stats *st,
                     wd__hist *h) {
  *st = (wd_resource_stats){0};
  if (h) memset(h, 0, sizeof *h);
  for (const wd__rtype *o = first; o; o = o->next) {
    if (o != first && strcmp(o->type->name, first->type->name) != 0) continue;
    counts_add(st, &o->st);
    if (h) wd__hist_merge(h, &o->lifetime);
  }
}

#define each_group(ty, reg)                                                    \
  for (const wd__rtype *ty = (reg) ? (reg)->types : NULL; ty; ty = ty->next)   \
    if (!seen_before((reg), ty))

/* ---- metrics as JSON -------------------------------------------------------
 */

/* ---- figures of the instances --------------------------------------------
 */

static bool ident_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         (!first && c >= '0' && c <= '9');
}

static bool figure_ok(const wd_figure *f) {
  if (!f->name || !ident_char(f->name[0], true)) return false;
  for (const char *c = f->name + 1; *c; c++)
    if (!ident_char(*c, false)) return false;
  return f->kind == WD_FIGURE_GAUGE || f->kind == WD_FIGURE_COUNTER ||
         f->kind == WD_FIGURE_SUMMARY;
}

/* The figures of a ready instance whose type has some, in buf
 * (WD_FIGURES_MAX): those figure_ok() and not named like an earlier one
 * are moved to the front; returns how many. */
static size_t figures_of(const wd_resource_info *info, wd_figure *buf) {
  if (!info->type->figures || info->state != WD_RESOURCE_READY) return 0;
  size_t n = info->type->figures(wd_resource_data(info->resource), buf,
                                 WD_FIGURES_MAX);
  if (n > WD_FIGURES_MAX) n = WD_FIGURES_MAX;
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) {
    if (!figure_ok(&buf[i])) continue;
    bool dup = false;
    for (size_t k = 0; k < kept && !dup; k++)
      dup = strcmp(buf[k].name, buf[i].name) == 0;
    if (!dup) buf[kept++] = buf[i];
  }
  return kept;
}

/* A number: an integer when it is one (counts stay counts), null for NaN
 * and infinities, which JSON cannot carry. */
static json_t *jnum(double v) {
  if (isnan(v) || isinf(v)) return json_null();
  if (v >= -9007199254740992.0 && v <= 9007199254740992.0 &&
      (double)(json_int_t)v == v)
    return json_integer((json_int_t)v);
  return json_real(v);
}

static json_t *json_figure(const wd_figure *f) {
  if (f->kind != WD_FIGURE_SUMMARY) return jnum(f->value);
  json_t *o = json_object();
  if (!o) return NULL;
  int bad = jset(o, "count", jint(f->count));
  bad |= jset(o, "sum", jnum(f->count ? f->sum : 0));
  bad |= jset(o, "p50", f->count ? jnum(f->p50) : json_null());
  bad |= jset(o, "p90", f->count ? jnum(f->p90) : json_null());
  bad |= jset(o, "p99", f->count ? jnum(f->p99) : json_null());
  if (!bad) return o;
  json_decref(o);
  return NULL;
}

/* The instance's "figures" object: empty while it is not ready. */
static json_t *json_figures(const wd_resource_info *info) {
  wd_figure buf[WD_FIGURES_MAX];
  size_t n = figures_of(info, buf);
  json_t *o = json_object();
  if (!o) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (jset(o, buf[i].name, json_figure(&buf[i]))) {
      json_decref(o);
      return NULL;
    }
  }
  return o;
}

static int json_instance(const wd_resource_info *info, void *arg) {
  json_t *arr = arg;
  json_t *o = json_object();
  if (!o) return 1; /* the caller sees the short array */
  int bad = jset(o, "id", jint(info->id));
  bad |= jset(o, "type", jstr(info->type->name));
  bad |= jset(o, "name", jstr(info->name));
  bad |= jset(o, "state",
              json_string_nocheck(wd_resource_state_name(info->state)));
  bad |= jset(o, "file", jstr(info->file));
  bad |= jset(o, "line", json_integer(info->line));
  bad |= jset(o, "created_ns", jtime(info->created));
  bad |= jset(o, "age_ns", jtime(info->age));
  if (info->type->figures) bad |= jset(o, "figures", json_figures(info));
  if (bad) {
    json_decref(o);
    o = NULL;
  }
  /* A failure stops the walk; the caller sees the short array. */
  return json_array_append_new(arr, o) != 0;
}

static json_t *metrics_json(wd_runtime *rt, unsigned flags) {
  wd__registry *reg = wd__registry_find(rt);
  json_t *root = json_object();
  if (!root) return NULL;
  wd_monitor_stats all;
  wd_monitor_stats_get(rt, NULL, &all);
  json_t *totals = json_counts(json_object(), &all.counts);
  if (totals) {
    if (jset(totals, "lifetime", json_lifetime(&all.lifetime))) {
      json_decref(totals);
      totals = NULL;
    }
  }
  int bad = jset(root, "now_ns", jtime(wd_now(NULL)));
  bad |= jset(root, "live", jint(reg ? reg->nlive : 0));
  bad |= jset(root, "totals", totals);
  json_t *types = json_array();
  bad |= jset(root, "types", types);
  if (bad) goto fail;
  wd__hist h;
  each_group(ty, reg) {
    wd_resource_stats st;
    group_of(ty, &st, &h);
    wd_lifetime_stats l;
    lifetime_of(&h, &l);
    json_t *o = json_object();
    if (!o || jset(o, "type", jstr(ty->type->name))) goto fail_o;
    if (!json_counts(o, &st)) goto fail;
    if (jset(o, "lifetime", json_lifetime(&l))) goto fail_o;
    if (json_array_append_new(types, o)) goto fail;
    continue;
  fail_o:
    json_decref(o);
    goto fail;
  }
  if (!(flags & WD_EXPORT_NO_INSTANCES)) {
    json_t *res = json_array();
    if (jset(root, "resources", res)) goto fail;
    size_t want = reg ? reg->nlive : 0;
    wd_resource_each(rt, json_instance, res);
    if (json_array_size(res) != want) goto fail;
  }
  return root;
fail:
  json_decref(root);
  return NULL;
}

/* ---- Prometheus text
 * --------------------------------------------------------- Version 0.0.4: a
 * family is a # HELP line (backslash and newline escaped), a # TYPE line, then
 * its samples; label values escape backslash, double quote and newline.  Times
 * are in seconds, written exactly from ns. */

static void prom_escape_put(void *arg, const char *p, size_t n) {
  sink *s = arg;
  size_t from = 0;
  for (size_t i = 0; i < n; i++) {
    const char *esc = p[i] == '\\'   ? "\\\\"
                      : p[i] == '"'  ? "\\\""
                      : p[i] == '\n' ? "\\n"
                                     : NULL;
    if (!esc) continue;
    sink_write(s, p + from, i - from);
    sink_puts(s, esc);
    from = i + 1;
  }
  sink_write(s, p + from, n - from);
}

/* A label value, quoted. */
static void prom_label(sink *s, const char *key, const char *value,
                       bool first) {
  sink_printf(s, "%s%s=\"", first ? "" : ",", key);
  utf8_each(value ? value : "", prom_escape_put, s);
  sink_puts(s, "\"");
}

static void prom_family(sink *s, const char *name, const char *type,
                        const char *help) {
  /* Our help texts hold no backslash or newline: nothing to escape. */
  sink_printf(s, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* ns as seconds, exactly: 1500000000 -> "1.5". */
static void prom_seconds(sink *s, wd_time ns) {
  const char *sign = "";
  uint64_t u = (uint64_t)ns;
  if (ns < 0) {
    sign = "-";
    u = (uint64_t)0 - u;
  }
  char frac[16];
  snprintf(frac, sizeof frac, "%09llu",
           (unsigned long long)(u % (uint64_t)WD_SEC));
  size_t n = strlen(frac);
  while (n > 0 && frac[n - 1] == '0')
    frac[--n] = '\0';
  sink_printf(s, "%s%llu%s%s", sign, (unsigned long long)(u / WD_SEC),
              n ? "." : "", frac);
}

typedef enum count_field {
  F_CREATED,
  F_CLOSED,
  F_OPEN_ERRORS,
  F_CLOSE_ERRORS,
  F_ACTIVE
} count_field;

static uint64_t field_of(const wd_resource_stats *st, count_field f) {
  switch (f) {
  case F_CREATED:
    return st->created;
  case F_CLOSED:
    return st->closed;
  case F_OPEN_ERRORS:
    return st->open_errors;
  case F_CLOSE_ERRORS:
    return st->close_errors;
  case F_ACTIVE:
    return st->active;
  }
  return 0;
}

static const struct {
  const char *name, *type, *help;
} count_families[] = {
    [F_CREATED] = {"warden_resources_created_total", "counter",
                   "Resources whose open was started, by type."},
    [F_CLOSED] = {"warden_resources_closed_total", "counter",
                  "Resources opened and then closed, by type."},
    [F_OPEN_ERRORS] = {"warden_resource_open_errors_total", "counter",
                       "Opens that failed or were cancelled, by type."},
    [F_CLOSE_ERRORS] = {"warden_resource_close_errors_total", "counter",
                        "Closes that reported an error, by type."},
    [F_ACTIVE] = {"warden_resources_active", "gauge",
                  "Live resources (opening, ready or closing), by type."},
};

static int prom_instance(const wd_resource_info *info, void *arg) {
  sink *s = arg;
  sink_puts(s, "warden_resource_age_seconds{");
  prom_label(s, "type", info->type->name, true);
  prom_label(s, "name", info->name, false);
  sink_printf(s, ",id=\"%llu\",state=\"%s\"} ", (unsigned long long)info->id,
              wd_resource_state_name(info->state));
  prom_seconds(s, info->age);
  sink_puts(s, "\n");
  return s->err != 0;
}

/* The figures of every ready instance, gathered for grouping. */
typedef struct fig_row {
  wd_resource *r;
  wd_figure f;
  bool done; /* written, or left out */
} fig_row;

typedef struct fig_table {
  sink *s; /* its err is set when the table cannot grow */
  fig_row *rows;
  size_t n, cap;
} fig_table;

static int gather_figures(const wd_resource_info *info, void *arg) {
  fig_table *t = arg;
  wd_figure buf[WD_FIGURES_MAX];
  size_t n = figures_of(info, buf);
  if (t->n + n > t->cap) {
    size_t cap = t->cap ? t->cap : 32;
    while (cap < t->n + n)
      cap *= 2;
    fig_row *rows = wd__realloc(t->rows, cap * sizeof *rows);
    if (!rows) {
      if (!t->s->err) t->s->err = WD_ENOMEM;
      return 1;
    }
    t->rows = rows;
    t->cap = cap;
  }
  for (size_t i = 0; i < n; i++)
    t->rows[t->n++] = (fig_row){.r = info->resource, .f = buf[i]};
  return 0;
}

/* A type name's byte as it goes into a metric name. */
static char metric_char(char c) { return ident_char(c, false) ? c : '_'; }

static bool same_metric_part(const char *a, const char *b) {
  for (; *a && *b; a++, b++)
    if (metric_char(*a) != metric_char(*b)) return false;
  return *a == *b;
}

/* Two rows of one family: the same type name once made a metric name, and
 * the same figure name. */
static bool same_family(const fig_row *a, const fig_row *b) {
  return strcmp(a->f.name, b->f.name) == 0 &&
         same_metric_part(wd_resource_type_of(a->r)->name,
                          wd_resource_type_of(b->r)->name);
}

/* warden_<type>_<figure>[suffix]. */
static void prom_figure_name(sink *s, const fig_row *row, const char *suffix) {
  char buf[64];
  size_t n = 0;
  sink_puts(s, "warden_");
  for (const char *c = wd_resource_type_of(row->r)->name; *c; c++) {
    buf[n++] = metric_char(*c);
    if (n == sizeof buf) {
      sink_write(s, buf, n);
      n = 0;
    }
  }
  sink_write(s, buf, n);
  sink_printf(s, "_%s%s", row->f.name, suffix);
}

/* A number as Prometheus reads it: the shortest of 15 or 17 digits that
 * reads back the same, with a '.' whatever the locale says. */
static void prom_double(sink *s, double v) {
  if (isnan(v)) {
    sink_puts(s, "NaN");
    return;
  }
  if (isinf(v)) {
    sink_puts(s, v > 0 ? "+Inf" : "-Inf");
    return;
  }
  char buf[48];
  snprintf(buf, sizeof buf, "%.15g", v);
  if (strtod(buf, NULL) != v) snprintf(buf, sizeof buf, "%.17g", v);
  for (char *c = buf; *c; c++)
    if (!(*c >= '0' && *c <= '9') && *c != '-' && *c != '+' && *c != 'e')
      *c = '.';
  sink_puts(s, buf);
}

static void help_escape_put(void *arg, const char *p, size_t n) {
  sink *s = arg;
  size_t from = 0;
  for (size_t i = 0; i < n; i++) {
    const char *esc = p[i] == '\\' ? "\\\\" : p[i] == '\n' ? "\\n" : NULL;
    if (!esc) continue;
    sink_write(s, p + from, i - from);
    sink_puts(s, esc);
    from = i + 1;
  }
  sink_write(s, p + from, n - from);
}

static void prom_figure_labels(sink *s, const fig_row *row) {
  prom_label(s, "name", wd_resource_name(row->r), true);
  sink_printf(s, ",id=\"%llu\"", (unsigned long long)wd_resource_id(row->r));
}

static void prom_figure_sample(sink *s, const fig_row *row) {
  const wd_figure *f = &row->f;
  if (f->kind != WD_FIGURE_SUMMARY) {
    prom_figure_name(s, row, f->kind == WD_FIGURE_COUNTER ? "_total" : "");
    sink_puts(s, "{");
    prom_figure_labels(s, row);
    sink_puts(s, "} ");
    prom_double(s, f->value);
    sink_puts(s, "\n");
    return;
  }
  static const char *const q[] = {"0.5", "0.9", "0.99"};
  const double v[] = {f->p50, f->p90, f->p99};
  for (size_t i = 0; i < 3; i++) {
    prom_figure_name(s, row, "");
    sink_puts(s, "{");
    prom_figure_labels(s, row);
    sink_printf(s, ",quantile=\"%s\"} ", q[i]);
    prom_double(s, f->count ? v[i] : NAN);
    sink_puts(s, "\n");
  }
  prom_figure_name(s, row, "_sum");
  sink_puts(s, "{");
  prom_figure_labels(s, row);
  sink_puts(s, "} ");
  prom_double(s, f->count ? f->sum : 0);
  sink_puts(s, "\n");
  prom_figure_name(s, row, "_count");
  sink_puts(s, "{");
  prom_figure_labels(s, row);
  sink_printf(s, "} %llu\n", (unsigned long long)f->count);
}

/* Every instance's figures, family by family in order of first
 * appearance: one # HELP and # TYPE each (the first instance's help), then
 * the samples of every instance that has it.  A figure whose kind differs
 * from its family's first is left out: a family has one type. */
static void prom_figures(sink *s, wd_runtime *rt) {
  fig_table t = {.s = s};
  wd_resource_each(rt, gather_figures, &t);
  static const char *const kinds[] = {"gauge", "counter", "summary"};
  for (size_t i = 0; i < t.n && !s->err; i++) {
    fig_row *first = &t.rows[i];
    if (first->done) continue;
    const char *suffix = first->f.kind == WD_FIGURE_COUNTER ? "_total" : "";
    sink_puts(s, "# HELP ");
    prom_figure_name(s, first, suffix);
    sink_puts(s, " ");
    utf8_each(first->f.help ? first->f.help : "", help_escape_put, s);
    sink_puts(s, "\n# TYPE ");
    prom_figure_name(s, first, suffix);
    sink_printf(s, " %s\n", kinds[first->f.kind]);
    for (size_t k = i; k < t.n; k++) {
      fig_row *row = &t.rows[k];
      if (row->done || !same_family(first, row)) continue;
      row->done = true;
      if (row->f.kind == first->f.kind) prom_figure_sample(s, row);
    }
  }
  wd__free(t.rows);
}

static void metrics_prometheus(sink *s, wd_runtime *rt, unsigned flags) {
  wd__registry *reg = wd__registry_find(rt);
  for (size_t f = 0; f < sizeof count_families / sizeof *count_families; f++) {
    prom_family(s, count_families[f].name, count_families[f].type,
                count_families[f].help);
    each_group(ty, reg) {
      wd_resource_stats st;
      group_of(ty, &st, NULL);
      sink_printf(s, "%s{", count_families[f].name);
      prom_label(s, "type", ty->type->name, true);
      sink_printf(s, "} %llu\n",
                  (unsigned long long)field_of(&st, (count_field)f));
    }
  }
  prom_family(s, "warden_resource_lifetime_seconds", "summary",
              "Time from the start of the open to the end of the close of "
              "closed resources, by type (quantiles within 1/16).");
  static const struct {
    const char *label;
    double q;
  } quantiles[] = {{"0.5", 0.5}, {"0.9", 0.9}, {"0.99", 0.99}};
  wd__hist h;
  each_group(ty, reg) {
    wd_resource_stats st;
    group_of(ty, &st, &h);
    for (size_t i = 0; i < sizeof quantiles / sizeof *quantiles; i++) {
      sink_puts(s, "warden_resource_lifetime_seconds{");
      prom_label(s, "type", ty->type->name, true);
      sink_printf(s, ",quantile=\"%s\"} ", quantiles[i].label);
      if (h.count)
        prom_seconds(s, wd__hist_quantile(&h, quantiles[i].q));
      else
        sink_puts(s, "NaN");
      sink_puts(s, "\n");
    }
    sink_puts(s, "warden_resource_lifetime_seconds_sum{");
    prom_label(s, "type", ty->type->name, true);
    sink_puts(s, "} ");
    prom_seconds(s, h.count ? h.sum : 0);
    sink_puts(s, "\nwarden_resource_lifetime_seconds_count{");
    prom_label(s, "type", ty->type->name, true);
    sink_printf(s, "} %llu\n", (unsigned long long)h.count);
  }
  if (flags & WD_EXPORT_NO_INSTANCES) return;
  prom_family(s, "warden_resource_age_seconds", "gauge",
              "Age of each live resource, with its state.");
  wd_resource_each(rt, prom_instance, s);
  prom_figures(s, rt);
}

/* ---- health reports
 * ----------------------------------------------------------
 */

static json_t *health_json(const wd_health_report *r, unsigned flags) {
  json_t *root = json_object();
  if (!root) return NULL;
  json_t *counts = json_object();
  if (counts) {
    int cbad = jset(counts, "total", jint(r->n));
    cbad |= jset(counts, "healthy", jint(r->healthy));
    cbad |= jset(counts, "unhealthy", jint(r->unhealthy));
    cbad |= jset(counts, "unknown", jint(r->unknown));
    cbad |= jset(counts, "timed_out", jint(r->timed_out));
    if (cbad) {
      json_decref(counts);
      counts = NULL;
    }
  }
  int bad = jset(root, "ok", json_boolean(wd_health_report_ok(r)));
  bad |= jset(root, "started_ns", jtime(r->started));
  bad |= jset(root, "duration_ns", jtime(r->duration));
  bad |= jset(root, "timeout_ns",
              r->timeout == WD_TIME_NEVER ? json_null() : jtime(r->timeout));
  bad |= jset(root, "counts", counts);
  if (bad) goto fail;
  if (flags & WD_EXPORT_NO_INSTANCES) return root;
  json_t *checks = json_array();
  if (jset(root, "checks", checks)) goto fail;
  for (size_t i = 0; i < r->n; i++) {
    const wd_health_result *c = &r->results[i];
    json_t *o = json_object();
    if (!o) goto fail;
    int obad = jset(o, "id", jint(c->id));
    obad |= jset(o, "type", jstr(c->type ? c->type->name : NULL));
    obad |= jset(o, "name", jstr(c->name));
    obad |= jset(o, "status",
                 json_string_nocheck(wd_health_status_name(c->status)));
    obad |= jset(o, "code", json_integer(c->code));
    obad |=
        jset(o, "error",
             c->code ? json_string_nocheck(wd_err_name(c->code)) : json_null());
    obad |= jset(o, "message", c->message[0] ? jstr(c->message) : json_null());
    obad |= jset(o, "duration_ns", jtime(c->duration));
    if (obad) {
      json_decref(o);
      goto fail;
    }
    if (json_array_append_new(checks, o)) goto fail;
  }
  return root;
fail:
  json_decref(root);
  return NULL;
}

static void health_prometheus(sink *s, const wd_health_report *r,
                              unsigned flags) {
  static const wd_health_status all[] = {WD_HEALTH_HEALTHY, WD_HEALTH_UNHEALTHY,
                                         WD_HEALTH_UNKNOWN,
                                         WD_HEALTH_TIMED_OUT};
  const size_t by_status[] = {r->healthy, r->unhealthy, r->unknown,
                              r->timed_out};
  prom_family(s, "warden_health_ok", "gauge",
              "1 when no health check was unhealthy or timed out.");
  sink_printf(s, "warden_health_ok %d\n", wd_health_report_ok(r) ? 1 : 0);
  prom_family(s, "warden_health_resources", "gauge",
              "Resources in the health report, by status.");
  for (size_t i = 0; i < 4; i++)
    sink_printf(s, "warden_health_resources{status=\"%s\"} %zu\n",
                wd_health_status_name(all[i]), by_status[i]);
  prom_family(s, "warden_health_duration_seconds", "gauge",
              "How long the whole health check took.");
  sink_puts(s, "warden_health_duration_seconds ");
  prom_seconds(s, r->duration);
  sink_puts(s, "\n");
  if (flags & WD_EXPORT_NO_INSTANCES) return;
  prom_family(s, "warden_health_status", "gauge",
              "Health of each live resource: 1 for its status, 0 for the "
              "others.");
  for (size_t i = 0; i < r->n; i++) {
    const wd_health_result *c = &r->results[i];
    for (size_t k = 0; k < 4; k++) {
      sink_puts(s, "warden_health_status{");
      prom_label(s, "type", c->type ? c->type->name : "", true);
      prom_label(s, "name", c->name, false);
      sink_printf(s, ",id=\"%llu\",status=\"%s\"} %d\n",
                  (unsigned long long)c->id, wd_health_status_name(all[k]),
                  c->status == all[k] ? 1 : 0);
    }
  }
  prom_family(s, "warden_health_check_duration_seconds", "gauge",
              "How long each resource's health check ran.");
  for (size_t i = 0; i < r->n; i++) {
    const wd_health_result *c = &r->results[i];
    sink_puts(s, "warden_health_check_duration_seconds{");
    prom_label(s, "type", c->type ? c->type->name : "", true);
    prom_label(s, "name", c->name, false);
    sink_printf(s, ",id=\"%llu\"} ", (unsigned long long)c->id);
    prom_seconds(s, c->duration);
    sink_puts(s, "\n");
  }
}

/* ---- the entry points
 * ---------------------------------------------------------
 */

#define FLAGS_KNOWN (WD_EXPORT_INDENT | WD_EXPORT_NO_INSTANCES)

static int check_format(const char *who, wd_export_format fmt, unsigned flags) {
  if (fmt != WD_EXPORT_JSON && fmt != WD_EXPORT_PROMETHEUS)
    return wd_fail(NULL, WD_EINVAL, "%s: unknown format %d", who, (int)fmt);
  if (flags & ~FLAGS_KNOWN)
    return wd_fail(NULL, WD_EINVAL, "%s: unknown flags 0x%x", who,
                   flags & ~FLAGS_KNOWN);
  return 0;
}

static int monitor_to(sink *s, char **out, wd_runtime *rt, wd_export_format fmt,
                      unsigned flags) {
  if (!rt) rt = wd_runtime_current();
  if (fmt == WD_EXPORT_JSON)
    json_emit(s, metrics_json(rt, flags), flags);
  else
    metrics_prometheus(s, rt, flags);
  return sink_finish(s, out, "monitor export");
}

int wd_monitor_export(wd_runtime *rt, wd_export_format fmt, unsigned flags,
                      char **out) {
  if (!out) return wd_fail(NULL, WD_EINVAL, "wd_monitor_export: NULL out");
  *out = NULL;
  int rc = check_format("wd_monitor_export", fmt, flags);
  if (rc) return rc;
  sink s = {0};
  return monitor_to(&s, out, rt, fmt, flags);
}

int wd_monitor_fprint(wd_runtime *rt, wd_export_format fmt, unsigned flags,
                      FILE *f) {
  if (!f) return wd_fail(NULL, WD_EINVAL, "wd_monitor_fprint: NULL stream");
  int rc = check_format("wd_monitor_fprint", fmt, flags);
  if (rc) return rc;
  sink s = {.f = f};
  return monitor_to(&s, NULL, rt, fmt, flags);
}

static int health_to(sink *s, char **out, const wd_health_report *r,
                     wd_export_format fmt, unsigned flags) {
  if (fmt == WD_EXPORT_JSON)
    json_emit(s, health_json(r, flags), flags);
  else
    health_prometheus(s, r, flags);
  return sink_finish(s, out, "health report export");
}

int wd_health_report_export(const wd_health_report *r, wd_export_format fmt,
                            unsigned flags, char **out) {
  if (!out)
    return wd_fail(NULL, WD_EINVAL, "wd_health_report_export: NULL out");
  *out = NULL;
  if (!r)
    return wd_fail(NULL, WD_EINVAL, "wd_health_report_export: NULL report");
  int rc = check_format("wd_health_report_export", fmt, flags);
  if (rc) return rc;
  sink s = {0};
  return health_to(&s, out, r, fmt, flags);
}

int wd_health_report_fprint(const wd_health_report *r, wd_export_format fmt,
                            unsigned flags, FILE *f) {
  if (!r)
    return wd_fail(NULL, WD_EINVAL, "wd_health_report_fprint: NULL report");
  if (!f)
    return wd_fail(NULL, WD_EINVAL, "wd_health_report_fprint: NULL stream");
  int rc = check_format("wd_health_report_fprint", fmt, flags);
  if (rc) return rc;
  sink s = {.f = f};
  return health_to(&s, NULL, r, fmt, flags);
}
