/* Batcher: callers' items gathered into batches for one function.
 *
 * Three kinds of record meet here.  A submitter's record (struct rec) lives
 * in its frame while it waits: it holds the item, receives the result and
 * is linked into the batcher's FIFO of waiting items.  Each of the
 * max_inflight batch tasks ("workers") owns a slot of preallocated arrays
 * (items, results, errors, and the records they came from) big enough for
 * one batch, so that flushing never allocates: every allocation happens in
 * wd_batcher_open(), and a submit costs a clock read, a list append and
 * the park.  The batcher itself is on the heap, opaque.
 *
 * Batches are cut from the head of the FIFO when they are due (full, the
 * oldest item waited max_wait, or closing), by whichever worker is free.
 * Free workers park in an idle list; at most one of them - the "timer" -
 * parks with a deadline, the moment the oldest item's max wait ends, in a
 * cancel scope (the public way to sleep with a wake-up).  Submit pokes a
 * worker only on the two changes that matter: the first waiting item (the
 * timer must be armed) and a full batch (it is due now).  A worker that
 * cuts a batch and leaves items behind pokes the next one, so several due
 * batches fan out to several free workers.  When the timer's scope cannot
 * be entered for want of memory, the worker flushes at once instead:
 * a batch flushed early is harmless, an item stranded is not.
 *
 * A submitter cancelled while its item waits takes it back (on_cancel
 * unlinks it).  Once flushed, the item is in a batch and on_cancel refuses:
 * the submitter stays parked until its result is delivered, so the item
 * and the result, which the caller owns, are never touched after it left.
 * Whoever ends a wait (a worker delivering, on_cancel, a shutdown) writes
 * the full outcome and message into the record, so that the submitter,
 * once woken, reads only its own frame: by then close may have freed the
 * batcher.
 *
 * The workers live in a supervisor group the opener enters in open and
 * exits in close, so they are children of the opener's block.  If that
 * group is cancelled, the first worker to notice shuts the batcher down:
 * the items still waiting are handed back unhandled (WD_ECLOSED), and no
 * further batch starts.
 */
#include <stdio.h>
#include <string.h>

#include "../util/list.h"
#include "../util/mem.h"
#include "warden.h"

#define BATCHER_MAGIC 0x42544348u /* "BTCH" */

enum { R_PENDING, R_FLUSHED, R_DONE, R_WITHDRAWN };

typedef struct rec {
  wd_wait w;
  wd_link link; /* in b->pending_ while R_PENDING */
  wd_batcher *b;
  void *item, *result;
  wd_time t; /* when it was submitted */
  int rc;
  int state;
  char msg[256]; /* the outcome's message, when rc < 0 */
} rec;

typedef struct worker {
  wd_wait w;
  wd_link idle; /* in b->idle_ while queued */
  bool queued;
  wd_batcher *b;
  void **items, **results;
  int *errors;
  rec **recs;
} worker;

struct wd_batcher {
  wd_group group_;
  wd_task *owner_;
  wd_batch_fn fn_;
  void *arg_;
  size_t max_size_, max_inflight_;
  wd_time max_wait_, batch_timeout_;
  wd_link pending_; /* FIFO of rec */
  size_t npending_;
  wd_link idle_;    /* FIFO of idle workers */
  worker *timer_;   /* the worker parked until the oldest item is due */
  worker *workers_; /* max_inflight_ of them, and their arrays */
  bool closing_, dead_;
  size_t inflight_, peak_;
  uint64_t submitted_, completed_, failed_, withdrawn_, dropped_, refused_;
  uint64_t batches_, full_, waited_, closing_batches_, batch_failed_;
  uint32_t magic_;
  char name_[32];
  char what_[48]; /* "batcher '<name>' batch", for the batch timeout */
};

#define B_OK(b) ((b) && (b)->magic_ == BATCHER_MAGIC)

static inline rec *head(wd_batcher *b) {
  return wd__container_of(b->pending_.next_, rec, link);
}

static inline wd_time sat_add(wd_time a, wd_time d) {
  return a > WD_TIME_NEVER - d ? WD_TIME_NEVER : a + d;
}

/* ---- waking workers ---------------------------------------------------------
 */

static void wake_idle(wd_batcher *b) {
  wd_link *l = wd__list_pop_front(&b->idle_);
  if (!l) return;
  worker *wk = wd__container_of(l, worker, idle);
  wk->queued = false;
  wd_wake(&wk->w, 0);
}

/* Something changed that a free worker must act on: the first item waits
 * (arm the timer), a batch became due, or the batcher is closing. */
static void poke(wd_batcher *b) {
  bool due = b->npending_ >= b->max_size_ || b->closing_ || b->max_wait_ == 0;
  if (b->timer_) {
    if (due) wd_wake(&b->timer_->w, 0);
    return;
  }
  /* Not due yet: a free worker must arm the timer, unless nothing but a
   * full batch (or close) will flush. */
  if (due || (b->npending_ && b->max_wait_ != WD_TIME_NEVER)) wake_idle(b);
}

static void wake_all(wd_batcher *b) {
  if (b->timer_) wd_wake(&b->timer_->w, 0);
  while (!wd__list_empty(&b->idle_))
    wake_idle(b);
}

/* ---- ending a submitter's wait ----------------------------------------------
 */

static void finish(rec *r, int rc, void *result) {
  r->rc = rc;
  r->result = rc ? NULL : result;
  r->state = R_DONE;
  wd_wake(&r->w, rc);
}

/* The group was cancelled: no batch starts any more; hand every waiting
 * item back unhandled, and let the other workers go. */
static void shut_down(wd_batcher *b) {
  if (b->dead_) return;
  b->dead_ = true;
  wd_link *l;
  while ((l = wd__list_pop_front(&b->pending_))) {
    rec *r = wd__container_of(l, rec, link);
    b->npending_--;
    b->dropped_++;
    snprintf(r->msg, sizeof r->msg,
             "batcher '%s' was shut down (its group was cancelled) before "
             "the item was flushed; it was not handled",
             b->name_);
    finish(r, WD_ECLOSED, NULL);
  }
  wake_all(b);
}

static bool rec_cancel(wd_wait *w) {
  rec *r = wd__container_of(w, rec, w);
  if (r->state != R_PENDING) return false; /* flushed: wait for the result */
  wd_batcher *b = r->b;
  wd__list_unlink(&r->link);
  b->npending_--;
  b->withdrawn_++;
  r->state = R_WITHDRAWN;
  snprintf(r->msg, sizeof r->msg,
           "batcher '%s': item taken back before it was flushed", b->name_);
  return true;
}

/* ---- workers ---------------------------------------------------------------
 */

static bool worker_cancel(wd_wait *w) {
  worker *wk = wd__container_of(w, worker, w);
  if (wk->queued) {
    wd__list_unlink(&wk->idle);
    wk->queued = false;
  }
  return true;
}

static int park_idle(wd_task *self, wd_batcher *b, worker *wk) {
  wk->w = (wd_wait){
      .what = "batcher (idle)", .name = b->name_, .on_cancel = worker_cancel};
  wd__list_push_back(&b->idle_, &wk->idle);
  wk->queued = true;
  int rc = wd_park(self, &wk->w);
  if (wk->queued) worker_cancel(&wk->w); /* wd_park refused to park */
  return rc;
}

/* Park until `due` or a poke.  Returns 0 (either), the group's
 * cancellation, or WD_ENOMEM (no timer: the caller flushes now). */
static int park_timer(wd_task *self, wd_batcher *b, worker *wk, wd_time due) {
  wd_cancel_scope s;
  int rc = wd_cancel_scope_enter(self, &s, &(wd_cancel_opts){.deadline = due});
  if (rc) return rc;
  wk->w = (wd_wait){.what = "batcher (max wait)",
                    .name = b->name_,
                    .on_cancel = worker_cancel};
  b->timer_ = wk;
  rc = wd_park(self, &wk->w);
  if (b->timer_ == wk) b->timer_ = NULL;
  return wd_cancel_scope_exit(self, &s, rc); /* its own deadline: 0 */
}

/* Wait until a batch is due.  Returns 1 (cut one), 0 (nothing more will
 * come: closing and empty, or shut down), or the group's cancellation. */
static int wait_due(wd_task *self, wd_batcher *b, worker *wk) {
  for (;;) {
    if (b->dead_) return 0;
    int rc = wd_cancel_status(self);
    if (rc) return rc;
    if (b->npending_) {
      if (b->npending_ >= b->max_size_ || b->closing_ || b->max_wait_ == 0)
        return 1;
      if (b->max_wait_ != WD_TIME_NEVER && !b->timer_) {
        wd_time due = sat_add(head(b)->t, b->max_wait_);
        if (wd_now(self) >= due) return 1;
        rc = park_timer(self, b, wk, due);
        if (rc == WD_ENOMEM) return 1;
        if (rc) return rc;
        continue;
      }
    } else if (b->closing_) {
      return 0;
    }
    rc = park_idle(self, b, wk);
    if (rc) return rc;
  }
}

typedef struct batch_call {
  wd_batcher *b;
  const wd_batch *batch;
} batch_call;

static int call_fn(wd_task *self, void *arg) {
  batch_call *c = arg;
  return c->b->fn_(self, c->batch, c->b->arg_);
}

static void run_batch(wd_task *self, wd_batcher *b, worker *wk) {
  size_t n = b->npending_ < b->max_size_ ? b->npending_ : b->max_size_;
  if (n == b->max_size_)
    b->full_++;
  else if (b->closing_)
    b->closing_batches_++;
  else
    b->waited_++;
  for (size_t i = 0; i < n; i++) {
    rec *r = wd__container_of(wd__list_pop_front(&b->pending_), rec, link);
    r->state = R_FLUSHED;
    wk->items[i] = r->item;
    wk->results[i] = NULL;
    wk->errors[i] = 0;
    wk->recs[i] = r;
  }
  b->npending_ -= n;
  if (b->npending_) poke(b); /* more may be due: the next free worker */
  b->batches_++;
  if (++b->inflight_ > b->peak_) b->peak_ = b->inflight_;

  wd_batch batch = {n, wk->items, wk->results, wk->errors};
  wd_error_clear(self);
  int rc;
  if (b->batch_timeout_) {
    batch_call c = {b, &batch};
    rc = wd_timeout_call(self, b->batch_timeout_, b->what_, call_fn, &c);
  } else {
    rc = b->fn_(self, &batch, b->arg_);
  }
  b->inflight_--;
  const char *why = NULL;
  if (rc < 0) {
    b->batch_failed_++;
    const wd_error *e = wd_task_error(self);
    why = e && e->code == rc ? e->msg : wd_strerror(rc);
  }
  for (size_t i = 0; i < n; i++) {
    rec *r = wk->recs[i];
    int e = wk->errors[i] < 0 ? wk->errors[i] : rc < 0 ? rc : 0;
    b->completed_++;
    if (e) {
      b->failed_++;
      if (wk->errors[i] < 0)
        snprintf(r->msg, sizeof r->msg,
                 "batcher '%s': item %zu of a batch of %zu failed: %s",
                 b->name_, i + 1, n, wd_strerror(e));
      else
        snprintf(r->msg, sizeof r->msg, "batcher '%s': batch of %zu failed: %s",
                 b->name_, n, why);
    }
    finish(r, e, wk->results[i]);
  }
}

static int worker_main(wd_task *self, void *arg) {
  worker *wk = arg;
  wd_batcher *b = wk->b;
  for (;;) {
    int rc = wait_due(self, b, wk);
    if (rc == 0) break;
    if (rc < 0) {
      shut_down(b);
      break;
    }
    run_batch(self, b, wk);
  }
  wd_error_clear(self); /* nothing of a batch's error is the task's own */
  return 0;
}

/* ---- open and close -------------------------------------------------------
 */

static int bad_opts(wd_task *self, const wd_batcher_opts *o, const char *name) {
  if (!self) return wd_fail(NULL, WD_EINVAL, "batcher '%s': NULL task", name);
  if (!o) return wd_fail(self, WD_EINVAL, "batcher '%s': NULL options", name);
  if (!o->fn)
    return wd_fail(self, WD_EINVAL, "batcher '%s': no batch function (fn)",
                   name);
  if (o->max_size == 0 || o->max_size > WD_BATCHER_MAX_SIZE)
    return wd_fail(self, WD_EINVAL,
                   "batcher '%s': max_size %zu is not in [1, %zu]", name,
                   o->max_size, WD_BATCHER_MAX_SIZE);
  if (o->max_inflight > WD_BATCHER_MAX_INFLIGHT)
    return wd_fail(self, WD_EINVAL,
                   "batcher '%s': max_inflight %zu is above %zu", name,
                   o->max_inflight, WD_BATCHER_MAX_INFLIGHT);
  return wd_fail(self, WD_EINVAL, "batcher '%s': negative %s", name,
                 o->max_wait < 0 ? "max_wait" : "batch_timeout");
}

int wd_batcher_open_(wd_task *self, wd_batcher **out,
                     const wd_batcher_opts *opts, const char *file, int line) {
  if (out) *out = NULL;
  const char *name = opts && opts->name ? opts->name : "batcher";
  if (!out)
    return wd_fail(self, WD_EINVAL, "batcher '%s': NULL out pointer", name);
  if (!self || !opts || !opts->fn || opts->max_size == 0 ||
      opts->max_size > WD_BATCHER_MAX_SIZE ||
      opts->max_inflight > WD_BATCHER_MAX_INFLIGHT || opts->max_wait < 0 ||
      opts->batch_timeout < 0)
    return bad_opts(self, opts, name);
  size_t nw = opts->max_inflight ? opts->max_inflight : 1;
  size_t ns = opts->max_size;
  wd_batcher *b = wd__calloc(1, sizeof *b);
  /* One block: the workers, then their arrays of pointers, then of ints. */
  size_t slots = nw * ns;
  void *block = b ? wd__malloc(nw * sizeof(worker) +
                               slots * (3 * sizeof(void *) + sizeof(int)))
                  : NULL;
  if (!block) {
    wd__free(b);
    return wd_fail(self, WD_ENOMEM,
                   "batcher '%s': no memory for %zu batch slots of %zu", name,
                   nw, ns);
  }
  snprintf(b->name_, sizeof b->name_, "%s", name);
  snprintf(b->what_, sizeof b->what_, "batcher '%s' batch", b->name_);
  b->owner_ = self;
  b->fn_ = opts->fn;
  b->arg_ = opts->arg;
  b->max_size_ = ns;
  b->max_inflight_ = nw;
  b->max_wait_ = opts->max_wait;
  b->batch_timeout_ = opts->batch_timeout;
  wd__list_init(&b->pending_);
  wd__list_init(&b->idle_);
  b->workers_ = block;
  void **ptrs = (void **)(b->workers_ + nw);
  int *ints = (int *)(ptrs + 3 * slots);
  for (size_t i = 0; i < nw; i++) {
    worker *wk = &b->workers_[i];
    memset(wk, 0, sizeof *wk);
    wk->b = b;
    wk->items = ptrs + i * ns;
    wk->results = ptrs + slots + i * ns;
    wk->recs = (rec **)(ptrs + 2 * slots + i * ns);
    wk->errors = ints + i * ns;
  }
  b->magic_ = BATCHER_MAGIC;

  char gname[48], tname[72]; /* room for gname, "/" and any index */
  snprintf(gname, sizeof gname, "batcher:%s", b->name_);
  int rc = wd_group_enter_(self, &b->group_,
                           &(wd_group_opts){.name = gname, .supervisor = true},
                           file, line);
  if (rc) goto fail;
  for (size_t i = 0; i < nw && rc == 0; i++) {
    snprintf(tname, sizeof tname, "%s/%zu", gname, i + 1);
    rc = wd_spawn(&b->group_, worker_main, &b->workers_[i],
                  &(wd_spawn_opts){.name = tname});
  }
  if (rc) {
    /* The workers started so far find the batcher closing and empty (or
     * their group cancelled) and end at once. */
    b->closing_ = true;
    rc = wd_group_exit(self, &b->group_, rc);
    goto fail;
  }
  *out = b;
  return 0;
fail:
  b->magic_ = 0;
  wd__free(b->workers_);
  wd__free(b);
  return wd_wrap(self, rc, "batcher '%s': open", name);
}

int wd_batcher_close(wd_task *self, wd_batcher *b) {
  if (!b) return 0;
  if (!self || !B_OK(b))
    return wd_fail(self, WD_EINVAL, "wd_batcher_close: %s",
                   !self ? "NULL task" : "not an open batcher");
  if (b->owner_ != self)
    return wd_fail(self, WD_EINVAL,
                   "batcher '%s': opened by task %llu, so task %llu cannot "
                   "close it",
                   b->name_, (unsigned long long)wd_task_id(b->owner_),
                   (unsigned long long)wd_task_id(self));
  bool was_closing = b->closing_;
  b->closing_ = true;
  wake_all(b);
  int rc = wd_group_exit(self, &b->group_, 0);
  if (rc == WD_EINVAL) {
    /* Not in LIFO order: the group is still open and nothing ran since
     * closing_ was set (exit returned without waiting), so undo it; the
     * workers just woken find nothing changed and park again. */
    b->closing_ = was_closing;
    return rc;
  }
  b->magic_ = 0;
  wd__free(b->workers_);
  wd__free(b);
  return rc;
}

/* ---- submit
 * ------------------------------------------------------------------
 */

int wd_batcher_submit(wd_task *self, wd_batcher *b, void *item, void **result) {
  if (result) *result = NULL;
  if (__builtin_expect(!self || !B_OK(b), 0))
    return wd_fail(self, WD_EINVAL, "wd_batcher_submit: %s",
                   !self ? "NULL task"
                   : !b  ? "NULL batcher"
                         : "not an open batcher");
  int rc = wd_cancel_status(self);
  if (rc)
    return wd_fail(self, rc, "batcher '%s': submit %s", b->name_,
                   rc == WD_ETIMEDOUT ? "stopped by a deadline" : "cancelled");
  if (b->closing_ || b->dead_) {
    b->refused_++;
    return wd_fail(
        self, WD_ECLOSED, "batcher '%s' is %s: item not submitted", b->name_,
        b->closing_ ? "closing" : "shut down (its group was cancelled)");
  }
  rec r;
  r.w = (wd_wait){.what = "batcher", .name = b->name_, .on_cancel = rec_cancel};
  r.b = b;
  r.item = item;
  r.result = NULL;
  r.t = wd_now(self);
  r.rc = 0;
  r.state = R_PENDING;
  wd__list_push_back(&b->pending_, &r.link);
  b->submitted_++;
  if (++b->npending_ == 1 || b->npending_ == b->max_size_) poke(b);
  rc = wd_park(self, &r.w);
  if (r.state == R_PENDING) rec_cancel(&r.w); /* wd_park refused to park */
  /* From here on b may be gone (closed): read only r. */
  if (r.state == R_DONE) {
    if (r.rc == 0) {
      if (result) *result = r.result;
      return 0;
    }
    return wd_fail(self, r.rc, "%s", r.msg);
  }
  return wd_fail(self, rc, "%s (%s)", r.msg,
                 rc == WD_ETIMEDOUT ? "stopped by a deadline" : "cancelled");
}

void wd_batcher_stats_get(const wd_batcher *b, wd_batcher_stats *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (!B_OK(b)) return;
  out->submitted = b->submitted_;
  out->completed = b->completed_;
  out->failed = b->failed_;
  out->withdrawn = b->withdrawn_;
  out->dropped = b->dropped_;
  out->refused = b->refused_;
  out->batches = b->batches_;
  out->batches_full = b->full_;
  out->batches_waited = b->waited_;
  out->batches_closing = b->closing_batches_;
  out->batches_failed = b->batch_failed_;
  out->waiting = b->npending_;
  out->inflight = b->inflight_;
  out->inflight_peak = b->peak_;
  out->closed = b->closing_;
}
