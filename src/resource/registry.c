/* The registry of live resources: one per runtime, a runtime extension.
 *
 * It is created by the first resource opened in a runtime and ends with
 * it.  It holds every live resource (opening, ready or closing) on one
 * list in creation order, so that an open and a close cost two pointer
 * writes each, and one record of counters per resource type (with the
 * histogram of its instances' lifetimes, for the monitor), found by the
 * type's address: a list in first-use order with the last type found
 * checked first, since a program has few types and opens the same one many
 * times in a row.  Per-instance records are the resources themselves.
 *
 * The extension adds a section to wd_dump() (the counters of each type,
 * then each live resource with its creation site and age) and, when the
 * runtime ends, writes the leak report: every resource still open, with
 * its creation site and age, on stderr.  Leaked resources are counted
 * process-wide (wd_resource_leaks()) so that a test harness can fail on
 * any, and WD_LEAK_ABORT makes the runtime abort instead.  Their memory is
 * freed: the registry goes with its runtime, and what a leaked resource
 * held is the leak the report names.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "resource-internal.h"

static const char registry_key = 'r'; /* its address is the key */
static atomic_int leak_policy;
static atomic_uint_least64_t leaks;

void wd_resource_set_leak_policy(wd_leak_policy p) {
  atomic_store(&leak_policy, (int)p);
}

uint64_t wd_resource_leaks(void) { return atomic_load(&leaks); }

static const char *basename_of(const char *path) {
  if (!path) return "?";
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

static double secs(wd_time t) { return (double)t / (double)WD_SEC; }

static void print_resource(FILE *out, const wd_resource *r, wd_time now) {
  fprintf(out, "  resource %llu '%s' (%s): %s, created %s:%d, age %.3f s\n",
          (unsigned long long)r->id, r->name, r->type->name,
          wd_resource_state_name((wd_resource_state)r->state),
          basename_of(r->file), r->line, secs(now - r->created));
}

static void registry_dump(wd_runtime_ext *e, FILE *out) {
  wd__registry *reg = (wd__registry *)e;
  wd_time now = wd_now(NULL);
  fprintf(out, "resources: %zu live\n", reg->nlive);
  for (wd__rtype *ty = reg->types; ty; ty = ty->next) {
    const wd_resource_stats *st = &ty->st;
    fprintf(
        out,
        "  type '%s': %llu active, %llu created, %llu closed, "
        "%llu open error%s, %llu close error%s\n",
        ty->type->name, (unsigned long long)st->active,
        (unsigned long long)st->created, (unsigned long long)st->closed,
        (unsigned long long)st->open_errors, st->open_errors == 1 ? "" : "s",
        (unsigned long long)st->close_errors, st->close_errors == 1 ? "" : "s");
  }
  wd__list_each(it, &reg->live) {
    print_resource(out, wd__container_of(it, wd_resource, link), now);
  }
}

/* The runtime ends: every task has, so whatever is still live leaked. */
static void registry_exit(wd_runtime_ext *e, wd_runtime *rt) {
  wd__registry *reg = (wd__registry *)e;
  if (reg->nlive) {
    wd_time now = wd_now(NULL);
    fprintf(stderr,
            "warden: leak: %zu resource%s still open at the end of the "
            "runtime:\n",
            reg->nlive, reg->nlive == 1 ? "" : "s");
    wd__list_each(it, &reg->live) {
      print_resource(stderr, wd__container_of(it, wd_resource, link), now);
    }
    fflush(stderr);
    atomic_fetch_add(&leaks, reg->nlive);
    if (atomic_load(&leak_policy) == WD_LEAK_ABORT) abort();
    wd_link *n;
    while ((n = wd__list_pop_front(&reg->live))) {
      wd_resource *r = wd__container_of(n, wd_resource, link);
      wd__free(r);
    }
  }
  while (reg->types) {
    wd__rtype *ty = reg->types;
    reg->types = ty->next;
    wd__free(ty);
  }
  wd__free(reg);
}

wd__registry *wd__registry_find(wd_runtime *rt) {
  return (wd__registry *)wd_runtime_ext_get(rt, &registry_key);
}

wd__registry *wd__registry_get(wd_runtime *rt) {
  wd__registry *reg = wd__registry_find(rt);
  if (reg || !rt) return reg;
  reg = wd__calloc(1, sizeof *reg);
  if (!reg) return NULL;
  reg->ext.key = &registry_key;
  reg->ext.dump = registry_dump;
  reg->ext.at_exit = registry_exit;
  reg->rt = rt;
  wd__list_init(&reg->live);
  reg->types_tail = &reg->types;
  if (wd_runtime_ext_add(rt, &reg->ext)) {
    wd__free(reg);
    return NULL;
  }
  return reg;
}

wd__rtype *wd__registry_type(wd__registry *reg, const wd_resource_type *t) {
  if (reg->last && reg->last->type == t) return reg->last;
  for (wd__rtype *ty = reg->types; ty; ty = ty->next) {
    if (ty->type == t) return reg->last = ty;
  }
  wd__rtype *ty = wd__calloc(1, sizeof *ty);
  if (!ty) return NULL;
  ty->type = t;
  *reg->types_tail = ty;
  reg->types_tail = &ty->next;
  return reg->last = ty;
}

void wd__registry_add(wd__registry *reg, wd__rtype *ty, wd_resource *r) {
  r->reg = reg;
  r->counters = ty;
  r->id = ++reg->next_id;
  r->created = wd_now(NULL);
  wd__list_push_back(&reg->live, &r->link);
  reg->nlive++;
  ty->st.created++;
  ty->st.active++;
}

void wd__registry_remove(wd_resource *r, bool opened, int close_rc) {
  wd__registry *reg = r->reg;
  if (!reg) return;
  wd__list_unlink(&r->link);
  reg->nlive--;
  wd_resource_stats *st = &r->counters->st;
  st->active--;
  if (opened) {
    st->closed++;
    wd__hist_add(&r->counters->lifetime, wd_now(NULL) - r->created);
  } else {
    st->open_errors++;
  }
  if (close_rc < 0) st->close_errors++;
  r->reg = NULL;
}

void wd_resource_stats_get(wd_runtime *rt, const wd_resource_type *t,
                           wd_resource_stats *out) {
  if (!out) return;
  *out = (wd_resource_stats){0};
  wd__registry *reg = wd__registry_find(rt ? rt : wd_runtime_current());
  if (!reg) return;
  for (wd__rtype *ty = reg->types; ty; ty = ty->next) {
    if (t && ty->type != t) continue;
    out->created += ty->st.created;
    out->closed += ty->st.closed;
    out->active += ty->st.active;
    out->open_errors += ty->st.open_errors;
    out->close_errors += ty->st.close_errors;
  }
}

size_t wd_resource_each(wd_runtime *rt,
                        int (*fn)(const wd_resource_info *info, void *arg),
                        void *arg) {
  wd__registry *reg = wd__registry_find(rt ? rt : wd_runtime_current());
  if (!reg || !fn) return 0;
  wd_time now = wd_now(NULL);
  size_t calls = 0;
  wd__list_each(it, &reg->live) {
    wd_resource *r = wd__container_of(it, wd_resource, link);
    wd_resource_info info = {.resource = r,
                             .type = r->type,
                             .name = r->name,
                             .state = (wd_resource_state)r->state,
                             .id = r->id,
                             .file = r->file,
                             .line = r->line,
                             .created = r->created,
                             .age = now - r->created};
    calls++;
    if (fn(&info, arg)) break;
  }
  return calls;
}

size_t wd_resource_types_each(wd_runtime *rt,
                              int (*fn)(const wd_resource_type *t,
                                        const wd_resource_stats *st, void *arg),
                              void *arg) {
  wd__registry *reg = wd__registry_find(rt ? rt : wd_runtime_current());
  if (!reg || !fn) return 0;
  size_t calls = 0;
  for (wd__rtype *ty = reg->types; ty; ty = ty->next) {
    calls++;
    if (fn(ty->type, &ty->st, arg)) break;
  }
  return calls;
}
