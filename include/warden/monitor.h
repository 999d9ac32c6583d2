/* warden/monitor.h - resource figures, health checks, and their export as
 * JSON and Prometheus text.
 *
 * Every runtime's registry (resource.h) counts, per resource type, the
 * resources created, closed, still active, failed to open and failed to
 * close, and keeps the distribution of their lifetimes (open to close) in
 * a log-bucket histogram: fixed size, quantiles within 1/16.  The monitor
 * reads those figures, lists the live resources with their age, runs every
 * live resource's health check concurrently with a per-check timeout, and
 * writes figures and health reports as JSON or as Prometheus text.
 *
 *   wd_health_report *rep;
 *   int rc = wd_health_check_all(self, &(wd_health_opts){
 *                                    .timeout = 2 * WD_SEC}, &rep);
 *   if (rc) return rc;
 *   if (!wd_health_report_ok(rep)) alert(rep);
 *   char *text;
 *   if (wd_health_report_export(rep, WD_EXPORT_JSON, 0, &text) == 0) {
 *     serve(text);
 *     wd_text_free(text);
 *   }
 *   wd_health_report_free(rep);
 *
 *   wd_monitor_fprint(NULL, WD_EXPORT_PROMETHEUS, 0, stdout);  // metrics
 *
 * Everything here belongs to the runtime it is called in, from its thread.
 * See docs/monitor.md for the JSON layout and the Prometheus metrics.
 */
#ifndef WARDEN_MONITOR_H
#define WARDEN_MONITOR_H

#include <stdio.h>

#include "resource.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- figures ------------------------------------------------------------- */

/* The distribution of the lifetimes of closed resources: from the start of
 * each one's open to the end of its close, on the runtime clock, in ns.
 * Quantiles come from a log-bucket histogram and are within 1/16 of the
 * true value; count, sum, min and max are exact (sum saturates at
 * INT64_MAX).  All zero when no resource was closed. */
typedef struct wd_lifetime_stats {
  uint64_t count; /* resources opened and then closed */
  wd_time sum;
  double mean;
  wd_time min, p50, p90, p99, max;
} wd_lifetime_stats;

/* The figures of one resource type (or of all of them) in one runtime. */
typedef struct wd_monitor_stats {
  wd_resource_stats counts; /* created, closed, active, open/close errors */
  wd_lifetime_stats lifetime;
} wd_monitor_stats;

/* Fill *out with the figures of type t (NULL: every type together) in rt
 * (NULL: the current runtime).  Zeros when rt opened no such resource.
 * Checkpoint: no.  Returns 0 or WD_EINVAL (NULL out). */
int wd_monitor_stats_get(wd_runtime *rt, const wd_resource_type *t,
                         wd_monitor_stats *out);

/* ---- introspection --------------------------------------------------------
 * wd_resource_each() (resource.h) visits the live resources without
 * blocking.  For code that must block while it looks at them (a health
 * check, a report sent over the network), take a snapshot: */

typedef struct wd_resource_list {
  size_t n;
  wd_resource **items; /* oldest first; NULL when n is 0 */
} wd_resource_list;

/* Fill *out with every live resource of rt (NULL: the current runtime),
 * each one held by a wd_resource_ref() so that its memory stays valid
 * until wd_resource_list_free(), even if it is closed meanwhile (look at
 * its state).  Free the list before the runtime ends.
 * Checkpoint: no.  Returns 0; WD_EINVAL (NULL out) or WD_ENOMEM, with
 * *out empty. */
int wd_resource_get_all(wd_runtime *rt, wd_resource_list *out);

/* Drop the list's references and free it; *l is left empty.  An empty or
 * NULL list is a no-op.  Checkpoint: no. */
void wd_resource_list_free(wd_resource_list *l);

/* ---- health checks --------------------------------------------------------
 */

typedef enum wd_health_status {
  WD_HEALTH_HEALTHY = 0,   /* the check returned 0 */
  WD_HEALTH_UNHEALTHY = 1, /* it returned an error: `message` says which */
  WD_HEALTH_UNKNOWN = 2,   /* no check: the type has none, or the resource
                            * was not ready (opening, closing) */
  WD_HEALTH_TIMED_OUT = 3, /* it did not finish within the timeout */
} wd_health_status;

/* "healthy", "unhealthy", "unknown" or "timed_out". */
const char *wd_health_status_name(wd_health_status s);

/* The per-check timeout when wd_health_opts gives none. */
#define WD_HEALTH_TIMEOUT_DEFAULT (5 * WD_SEC)

/* Options of wd_health_check_all(); all zero means the defaults. */
typedef struct wd_health_opts {
  /* Each check's own deadline, from its start: 0 = the default,
   * WD_TIME_NEVER = none. */
  wd_time timeout;
  /* At most this many checks run at once; 0 = all of them. */
  unsigned max_concurrent;
  /* Only resources of this type; NULL = every type. */
  const wd_resource_type *type;
} wd_health_opts;

#define WD_HEALTH_MESSAGE_MAX 256

/* One resource's check. */
typedef struct wd_health_result {
  uint64_t id;                  /* wd_resource_id() */
  const wd_resource_type *type; /* borrowed: types are static */
  char name[WD_RESOURCE_NAME_MAX];
  wd_health_status status;
  /* 0 when healthy; the check's error when unhealthy; WD_ETIMEDOUT when
   * timed out; WD_ENOSYS (no check) or WD_ECLOSED (not ready) when
   * unknown. */
  int code;
  /* Empty when healthy, else what went wrong: the check's recorded error
   * with its causes ("ping: connection reset: ..."), truncated to
   * WD_HEALTH_MESSAGE_MAX - 1 bytes. */
  char message[WD_HEALTH_MESSAGE_MAX];
  wd_time duration; /* how long the check ran */
} wd_health_result;

/* What wd_health_check_all() found; allocated by it, freed with
 * wd_health_report_free(). */
typedef struct wd_health_report {
  wd_time started;  /* on the runtime clock */
  wd_time duration; /* of the whole run */
  wd_time timeout;  /* the per-check timeout used (WD_TIME_NEVER: none) */
  size_t healthy, unhealthy, unknown, timed_out;
  size_t n;
  wd_health_result *results; /* n entries, oldest resource first */
} wd_health_report;

/* Run the health check of every live resource of self's runtime (those of
 * opts->type only, if set) concurrently, each in its own task of one group
 * and inside its own cancel scope with the per-check timeout, and report
 * each one's result: healthy, unhealthy (with the check's message), unknown
 * (no check, or the resource was not ready when its turn came), or timed
 * out.  One check failing or hanging does not affect the others.  The
 * resources are held (wd_resource_ref) while they are checked, so a
 * resource closed meanwhile is safe to check: it reports unknown.  A check
 * must honour cancellation for its timeout to end it: one that blocks on
 * the thread pool delays the report until it returns.
 * opts may be NULL.  The caller owns *out.
 * Checkpoint: yes.  Returns 0 and stores the report in *out; or, with *out
 * NULL and every check task ended: WD_EINVAL (NULL self or out, negative
 * timeout), WD_ENOMEM, WD_ECANCELED / WD_ETIMEDOUT (self was cancelled:
 * the checks running are cancelled with it). */
int wd_health_check_all(wd_task *self, const wd_health_opts *opts,
                        wd_health_report **out);

/* True when no check was unhealthy or timed out (unknown ones are not
 * failures: a type without a check has nothing to say).  r must be valid. */
static inline bool wd_health_report_ok(const wd_health_report *r) {
  return r->unhealthy == 0 && r->timed_out == 0;
}

/* Free a report.  NULL is a no-op. */
void wd_health_report_free(wd_health_report *r);

/* ---- export ---------------------------------------------------------------
 * JSON (written by jansson) or the Prometheus text exposition format,
 * version 0.0.4 (`Content-Type: text/plain; version=0.0.4`): # HELP and
 * # TYPE lines, counters named *_total, label values escaped, lifetimes as
 * a summary in seconds; the figures of resource types as their own
 * families.  Text comes back allocated by warden: free it with
 * wd_text_free().  docs/monitor.md shows both formats. */

typedef enum wd_export_format {
  WD_EXPORT_JSON = 0,
  WD_EXPORT_PROMETHEUS = 1,
} wd_export_format;

/* Flags of the export functions. */
#define WD_EXPORT_INDENT 1u /* JSON: indented, one field a line */
/* Leave out the per-resource part, whose size grows with the live
 * resources: the metrics' "resources", age gauge and resource figures, a
 * health report's "checks" and per-resource gauges. */
#define WD_EXPORT_NO_INSTANCES 2u

/* The figures of rt (NULL: the current runtime) as text in *out: per type
 * the counters and the lifetime distribution, then each live resource with
 * its state, creation site and age, and the figures of each ready resource
 * whose type has a `figures` function (resource.h): in JSON a "figures"
 * object in the resource's, in Prometheus a family per figure named
 * warden_<type>_<figure> (counters with _total) with `name` and `id`
 * labels, # HELP and # TYPE once per family.  Types that share a name are
 * reported together.  Checkpoint: no.  Returns 0 and stores NUL-terminated text
 * in *out (the caller frees it with wd_text_free()); or, with *out NULL:
 * WD_EINVAL (NULL out, unknown format or flags), WD_ENOMEM. */
int wd_monitor_export(wd_runtime *rt, wd_export_format fmt, unsigned flags,
                      char **out);

/* The same written to f.  Checkpoint: no.  Returns 0, WD_EINVAL (NULL f,
 * unknown format or flags), WD_ENOMEM, or -errno when writing failed
 * (-EIO when the stream gives no errno; the text may be partly written). */
int wd_monitor_fprint(wd_runtime *rt, wd_export_format fmt, unsigned flags,
                      FILE *f);

/* A health report as text in *out: the summary, then each resource's
 * result (left out with WD_EXPORT_NO_INSTANCES).  Same returns as
 * wd_monitor_export(), also WD_EINVAL for a NULL r. */
int wd_health_report_export(const wd_health_report *r, wd_export_format fmt,
                            unsigned flags, char **out);

/* The same written to f.  Same returns as wd_monitor_fprint(). */
int wd_health_report_fprint(const wd_health_report *r, wd_export_format fmt,
                            unsigned flags, FILE *f);

/* Free text returned by an export.  NULL is a no-op. */
void wd_text_free(char *text);

#ifdef __cplusplus
}
#endif
#endif
