/* wd_dump(): the runtime's task tree as text.
 *
 * The registry is the structure the runtime keeps anyway: the root task,
 * each task's list of open groups, each group's list of tasks and pending
 * spawns, and the list of blocking calls in flight.  Walking it needs no
 * extra bookkeeping on the hot paths.
 */
#include <stdio.h>

#include "internal.h"

void wd__blocking_dump(wd_runtime *rt, FILE *out);

static double secs_ms(uint64_t ms) { return (double)ms / 1000.0; }

static void dump_task(wd_runtime *rt, FILE *out, wd_task *t, int depth);

static void dump_group(wd_runtime *rt, FILE *out, wd_group *g, int depth) {
  uint64_t now = wd__loop_ms(rt);
  fprintf(out, "%*sgroup %llu '%s': %zu task%s", depth * 2, "",
          (unsigned long long)g->id_, g->name_, g->nlive_,
          g->nlive_ == 1 ? "" : "s");
  if (g->npending_) fprintf(out, " (%zu pending)", g->npending_);
  if (g->supervisor_) fprintf(out, ", supervisor");
  if (g->max_running_) fprintf(out, ", max %u running", g->max_running_);
  if (g->scope.cancel_rc_) fprintf(out, ", cancelled (%s)", g->scope.why_);
  if (g->nfailed_) fprintf(out, ", %zu failed", g->nfailed_);
  fprintf(out, ", created %s:%d, age %.3f s\n", wd__basename(g->file_),
          g->line_, secs_ms(now - (uint64_t)g->created_));
  /* The group's tasks are the children of its scope that are task root
   * scopes (the others are scopes the owner entered inside the group). */
  wd__list_each(it, &g->scope.children_) {
    wd_cancel_scope *c = wd__container_of(it, wd_cancel_scope, sibling_);
    if (c->owner_ && c == &c->owner_->root_scope)
      dump_task(rt, out, c->owner_, depth + 1);
  }
  wd__list_each(it, &g->pending_) {
    wd__pending *p = wd__container_of(it, wd__pending, link);
    fprintf(out, "%*stask %llu '%s': pending (not started), created %s:%d\n",
            depth * 2 + 2, "", (unsigned long long)p->id,
            p->name[0] ? p->name : "-", wd__basename(p->file), p->line);
  }
}

static void dump_wait(wd_runtime *rt, FILE *out, wd_task *t) {
  wd_wait *w = t->wait;
  uint64_t now = wd__loop_ms(rt);
  if (!w) {
    fprintf(out, "blocked");
    return;
  }
  fprintf(out, "blocked %.3f s", secs_ms(now - w->since_ms_));
  fprintf(out, " on %s", w->what ? w->what : "?");
  if (w->name) fprintf(out, " '%s'", w->name);
  if (t->sleep.armed_ && w->what && w->what[0] == 's')
    fprintf(out, " (%.3f s left)",
            (double)(wd__timer_when(rt, &t->sleep) - wd__now(rt)) /
                (double)WD_SEC);
}

static void dump_task(wd_runtime *rt, FILE *out, wd_task *t, int depth) {
  uint64_t now = wd__loop_ms(rt);
  fprintf(out, "%*stask %llu '%s': ", depth * 2, "", (unsigned long long)t->id,
          wd_task_name(t));
  if (t->state == WD__BLOCKED)
    dump_wait(rt, out, t);
  else
    fputs(wd__state_name(t->state), out);
  int crc = wd__cancel_status(t);
  if (crc)
    fprintf(out, ", %s", crc == WD_ETIMEDOUT ? "timed out" : "cancelled");
  if (t->is_root)
    fprintf(out, ", root, age %.3f s\n", secs_ms(now - t->created_ms));
  else
    fprintf(out, ", created %s:%d, age %.3f s\n", wd__basename(t->file),
            t->line, secs_ms(now - t->created_ms));
  wd__list_each(it, &t->groups)
      dump_group(rt, out, wd__container_of(it, wd_group, link_), depth + 1);
}

void wd_dump(FILE *out) {
  wd_runtime *rt = wd__rt;
  if (!out) out = stderr;
  if (!rt) {
    fprintf(out, "warden: no runtime on this thread\n");
    return;
  }
  uv_update_time(&rt->loop);
  fprintf(out,
          "warden runtime: %zu task%s, %zu group%s, %zu blocking call%s "
          "(%zu abandoned), %s clock at %.3f s\n",
          rt->ntasks, rt->ntasks == 1 ? "" : "s", rt->ngroups,
          rt->ngroups == 1 ? "" : "s", rt->nblocking,
          rt->nblocking == 1 ? "" : "s", rt->nabandoned,
          rt->clock == WD_CLOCK_VIRTUAL ? "virtual" : "real",
          (double)wd__now(rt) / (double)WD_SEC);
  if (rt->root && rt->root->state != WD__DONE) dump_task(rt, out, rt->root, 0);
  wd__blocking_dump(rt, out);
  for (wd_runtime_ext *e = rt->exts; e; e = e->next_)
    if (e->dump) e->dump(e, out);
}
