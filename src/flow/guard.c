/* Guard: the flow-control policies stacked around one call.
 *
 * A guard adds no policy of its own.  wd_guard_init() checks the order
 * once and stores it as an array of layer kinds; wd_guard_call() then runs
 * the layers by recursion through one trampoline, layer(), which each
 * policy's "run this call under me" function calls back as its wd_task_fn.
 * The trampoline must know which layer it is at, also when a retry calls
 * it again for the next attempt, and the policies pass it a single void *.
 * So the call's frame holds an array of level numbers lvl[i] = i, and level
 * i is handed &lvl[i]: the pointer gives the level (its value) and the
 * frame (the array's address minus that value).  A call thus costs one
 * frame on the caller's stack and no allocation, whatever the layers.
 *
 * The limiter is the one layer without a "call" function in its module,
 * because of what must happen to its permit: it is released when the inner
 * layers return - in the caller's task, so never before the work done
 * there has unwound - unless the attempt handed it over with
 * wd_guard_keep_permit().  To find "the attempt of this task" from inside
 * fn, every attempt holding a permit links a record on its stack into the
 * guard's list of holders for the duration of the inner call; the list is
 * short (one entry per attempt running now) and is searched only by
 * wd_guard_keep_permit(), from the newest entry, so that nested calls of
 * the same guard by one task find their own attempt.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "../util/list.h"
#include "warden.h"

#define GUARD_MAGIC 0x47524444u /* "GRDD" */

static const char *const layer_names[] = {
    [WD_GUARD_NONE] = "none",       [WD_GUARD_BREAKER] = "breaker",
    [WD_GUARD_RETRY] = "retry",     [WD_GUARD_RATELIMIT] = "ratelimit",
    [WD_GUARD_LIMITER] = "limiter", [WD_GUARD_TIMEOUT] = "timeout",
};

const char *wd_guard_layer_name(wd_guard_layer layer) {
  if ((unsigned)layer > WD_GUARD_TIMEOUT) return "unknown";
  return layer_names[layer];
}

/* ---- init: the order and its rules ----------------------------------------
 */

/* Is a layer of this kind configured in o? */
static bool configured(const wd_guard_opts *o, wd_guard_layer k) {
  switch (k) {
  case WD_GUARD_BREAKER:
    return o->breaker != NULL;
  case WD_GUARD_RETRY:
    return o->retry != NULL;
  case WD_GUARD_RATELIMIT:
    return o->ratelimit != NULL;
  case WD_GUARD_LIMITER:
    return o->limiter != NULL;
  case WD_GUARD_TIMEOUT:
    return o->timeout != 0;
  default:
    return false;
  }
}

/* How opts names what a layer needs, for messages. */
static const char *option_of(wd_guard_layer k) {
  switch (k) {
  case WD_GUARD_BREAKER:
    return "opts.breaker is NULL";
  case WD_GUARD_RETRY:
    return "opts.retry is NULL";
  case WD_GUARD_RATELIMIT:
    return "opts.ratelimit is NULL";
  case WD_GUARD_LIMITER:
    return "opts.limiter is NULL";
  default:
    return "opts.timeout is 0";
  }
}

static const wd_guard_layer default_order[WD_GUARD_LAYERS] = {
    WD_GUARD_BREAKER, WD_GUARD_RETRY, WD_GUARD_RATELIMIT, WD_GUARD_LIMITER,
    WD_GUARD_TIMEOUT};

/* Check o's order against the rules of guard.h and store it in g.  pos[k]
 * is the level of layer k, -1 when absent. */
static int set_order(wd_guard *g, const wd_guard_opts *o) {
  const char *name = g->name_;
  int pos[WD_GUARD_LAYERS + 1];
  for (int k = 0; k <= WD_GUARD_LAYERS; k++)
    pos[k] = -1;
  bool given = o->order[0] != WD_GUARD_NONE;
  int n = 0;
  if (!given) {
    for (int i = 0; i < WD_GUARD_LAYERS; i++)
      if (configured(o, default_order[i]))
        g->order_[n++] = (uint8_t)default_order[i];
    g->nlayers_ = (uint8_t)n;
    return 0; /* the default order obeys every rule */
  }
  for (int i = 0; i < WD_GUARD_LAYERS && o->order[i] != WD_GUARD_NONE; i++) {
    wd_guard_layer k = o->order[i];
    if ((unsigned)k > WD_GUARD_TIMEOUT)
      return wd_fail(NULL, WD_EINVAL,
                     "guard '%s': order[%d] is %d, not a layer kind", name, i,
                     (int)k);
    if (pos[k] >= 0)
      return wd_fail(NULL, WD_EINVAL,
                     "guard '%s': the order lists '%s' twice (order[%d] and "
                     "order[%d])",
                     name, layer_names[k], pos[k], i);
    if (!configured(o, k))
      return wd_fail(NULL, WD_EINVAL, "guard '%s': the order lists '%s' but %s",
                     name, layer_names[k], option_of(k));
    pos[k] = i;
    g->order_[n++] = (uint8_t)k;
  }
  for (int k = WD_GUARD_BREAKER; k <= WD_GUARD_TIMEOUT; k++)
    if (configured(o, (wd_guard_layer)k) && pos[k] < 0)
      return wd_fail(NULL, WD_EINVAL,
                     "guard '%s': '%s' is configured but missing from the "
                     "order (it would be ignored)",
                     name, layer_names[k]);
  int retry = pos[WD_GUARD_RETRY], lim = pos[WD_GUARD_LIMITER];
  int rate = pos[WD_GUARD_RATELIMIT], tmo = pos[WD_GUARD_TIMEOUT];
  if (lim >= 0 && retry > lim)
    return wd_fail(NULL, WD_EINVAL,
                   "guard '%s': 'limiter' outside 'retry' would hold its "
                   "permit through the back-off sleeps; list it after 'retry'",
                   name);
  if (lim >= 0 && rate > lim)
    return wd_fail(NULL, WD_EINVAL,
                   "guard '%s': 'limiter' outside 'ratelimit' would hold its "
                   "permit while waiting for the rate; list it after "
                   "'ratelimit'",
                   name);
  if (tmo >= 0 && retry > tmo)
    return wd_fail(NULL, WD_EINVAL,
                   "guard '%s': a per-attempt 'timeout' outside 'retry' would "
                   "bound all the attempts together; list it after 'retry', "
                   "or use total_timeout for a bound on the whole call",
                   name);
  g->nlayers_ = (uint8_t)n;
  return 0;
}

int wd_guard_init(wd_guard *g, const wd_guard_opts *opts) {
  wd_guard_opts o = opts ? *opts : (wd_guard_opts){0};
  const char *name = o.name ? o.name : "guard";
  if (!g) return wd_fail(NULL, WD_EINVAL, "guard '%s': NULL guard", name);
  memset(g, 0, sizeof *g);
  snprintf(g->name_, sizeof g->name_, "%s", name);
  if (o.timeout < 0 || o.total_timeout < 0)
    return wd_fail(NULL, WD_EINVAL, "guard '%s': negative %s", g->name_,
                   o.timeout < 0 ? "timeout" : "total_timeout");
  int rc = set_order(g, &o);
  if (rc) return rc;
  g->timeout_ = o.timeout;
  g->total_ = o.total_timeout;
  g->retry_ = o.retry;
  g->ratelimit_ = o.ratelimit;
  g->limiter_ = o.limiter;
  g->breaker_ = o.breaker;
  wd__list_init(&g->holders_);
  snprintf(g->total_what_, sizeof g->total_what_, "guard '%s'", g->name_);
  snprintf(g->attempt_what_, sizeof g->attempt_what_, "guard '%s' attempt",
           g->name_);
  g->magic_ = GUARD_MAGIC;
  return 0;
}

int wd_guard_deinit(wd_guard *g) {
  if (!g) return 0;
  if (g->magic_ != GUARD_MAGIC)
    return wd_fail(NULL, WD_EINVAL, "wd_guard_deinit: guard not initialised");
  if (g->in_flight_)
    return wd_fail(NULL, WD_EBUSY, "guard '%s': %zu call%s still running",
                   g->name_, g->in_flight_, g->in_flight_ == 1 ? "" : "s");
  g->magic_ = 0;
  return 0;
}

/* ---- the call
 * ----------------------------------------------------------------
 */

typedef struct frame {
  wd_guard *g;
  wd_task_fn fn;
  void *arg;
  uint8_t lvl[WD_GUARD_LAYERS + 1]; /* lvl[i] == i, see the top */
} frame;

/* An attempt holding a permit of the guard's limiter. */
typedef struct holder {
  wd_link link; /* in g->holders_ */
  wd_task *task;
  bool kept; /* handed over by wd_guard_keep_permit() */
} holder;

static int layer(wd_task *self, void *p);

static inline frame *frame_of(uint8_t *lv) {
  return (frame *)(void *)((char *)(lv - *lv) - offsetof(frame, lvl));
}

static int limited(wd_task *self, wd_guard *g, uint8_t *next) {
  int rc = wd_limiter_acquire(self, g->limiter_);
  if (rc) return rc;
  holder h = {.task = self, .kept = false};
  wd__list_push_back(&g->holders_, &h.link);
  rc = layer(self, next);
  /* fn has returned: whatever ran in this task under the permit is over.
   * Work it handed elsewhere took the permit with it (kept). */
  wd__list_unlink(&h.link);
  if (!h.kept) wd_limiter_release(g->limiter_);
  return rc;
}

static int layer(wd_task *self, void *p) {
  uint8_t *lv = p;
  frame *f = frame_of(lv);
  wd_guard *g = f->g;
  if (*lv == g->nlayers_) return f->fn(self, f->arg);
  uint8_t *next = lv + 1;
  switch ((wd_guard_layer)g->order_[*lv]) {
  case WD_GUARD_BREAKER:
    return wd_breaker_call(self, g->breaker_, layer, next);
  case WD_GUARD_RETRY:
    return wd_retry_call(self, g->retry_, layer, next);
  case WD_GUARD_RATELIMIT:
    return wd_ratelimit_call(self, g->ratelimit_, layer, next);
  case WD_GUARD_LIMITER:
    return limited(self, g, next);
  case WD_GUARD_TIMEOUT:
    return wd_timeout_call(self, g->timeout_, g->attempt_what_, layer, next);
  default:
    break;
  }
  /* The order was checked at init; only memory corruption gets here. */
  return wd_fail(self, WD_EINVAL, "guard '%s': corrupt layer %u", g->name_,
                 (unsigned)g->order_[*lv]);
}

int wd_guard_call(wd_task *self, wd_guard *g, wd_task_fn fn, void *arg) {
  if (__builtin_expect(!self || !g || !fn || g->magic_ != GUARD_MAGIC, 0))
    return wd_fail(self, WD_EINVAL, "wd_guard_call: %s",
                   !self ? "NULL task"
                   : !g  ? "NULL guard"
                   : !fn ? "NULL function"
                         : "guard not initialised");
  g->calls_++;
  int rc;
  /* Every layer (and the total timeout) is a checkpoint at its entry, so
   * only a guard without any needs a check of its own. */
  if (g->nlayers_ == 0 && !g->total_ && (rc = wd_cancel_status(self))) {
    g->cancelled_++;
    return rc;
  }
  frame f = {g, fn, arg, {0, 1, 2, 3, 4, 5}};
  g->in_flight_++;
  if (g->total_)
    rc = wd_timeout_call(self, g->total_, g->total_what_, layer, &f.lvl[0]);
  else
    rc = layer(self, &f.lvl[0]);
  g->in_flight_--;
  if (rc >= 0)
    g->successes_++;
  else if (wd_cancel_status(self))
    g->cancelled_++;
  else
    g->failures_++;
  return rc;
}

int wd_guard_keep_permit(wd_task *self, wd_guard *g) {
  if (!self || !g || g->magic_ != GUARD_MAGIC)
    return wd_fail(self, WD_EINVAL, "wd_guard_keep_permit: %s",
                   !self ? "NULL task"
                   : !g  ? "NULL guard"
                         : "guard not initialised");
  if (!g->limiter_)
    return wd_fail(self, WD_EINVAL,
                   "guard '%s': no limiter layer, so no permit to keep",
                   g->name_);
  for (wd_link *it = g->holders_.prev_; it != &g->holders_; it = it->prev_) {
    holder *h = wd__container_of(it, holder, link);
    if (h->task != self) continue;
    if (h->kept)
      return wd_fail(self, WD_EINVAL,
                     "guard '%s': this attempt's permit was already handed "
                     "over",
                     g->name_);
    h->kept = true;
    g->kept_++;
    return 0;
  }
  return wd_fail(self, WD_EINVAL,
                 "guard '%s': task %llu holds no permit of it here (call this "
                 "from inside the guarded call)",
                 g->name_, (unsigned long long)wd_task_id(self));
}

size_t wd_guard_layers(const wd_guard *g, wd_guard_layer out[WD_GUARD_LAYERS]) {
  if (!g || g->magic_ != GUARD_MAGIC) return 0;
  for (size_t i = 0; out && i < g->nlayers_; i++)
    out[i] = (wd_guard_layer)g->order_[i];
  return g->nlayers_;
}

void wd_guard_stats_get(const wd_guard *g, wd_guard_stats *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (!g || g->magic_ != GUARD_MAGIC) return;
  out->calls = g->calls_;
  out->successes = g->successes_;
  out->failures = g->failures_;
  out->cancelled = g->cancelled_;
  out->permits_kept = g->kept_;
  out->in_flight = g->in_flight_;
}
