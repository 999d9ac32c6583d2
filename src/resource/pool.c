/* Pool: items made by a factory, lent to tasks, destroyed exactly once.
 *
 * Each item lives in a slot, one allocation holding the pool's record of
 * it and then the item's bytes, so that an item pointer leads back to its
 * record in constant time and release needs no lookup.  A slot is always
 * in exactly one place: the idle list, the lent list, the worker queue, or
 * a worker's hands while a job runs on it.  The idle list is kept in order
 * of return (newest at the back): LIFO lends from the back, FIFO from the
 * front.
 *
 * The one rule that makes the pool safe under cancellation: a caller never
 * runs a factory function.  Creates, validations, resets and destroys run
 * in the pool's worker tasks, shielded from the callers' cancellation and
 * bounded by their own timeouts; a caller's only blocking point is its
 * place in the waiter FIFO.  Whatever becomes available - a released item,
 * a new one, one that passed validation - goes through give(), which hands
 * it straight to the first waiter, making the hand-off and the wake one
 * step (as a lock does): a queued waiter is always still parked, so its
 * on_cancel can always take it out, and one that was handed an item keeps
 * it.  Whoever ends a wait - give(), a failed create, close - writes the
 * whole outcome into the waiter's record, and the caller reads only its own
 * frame once woken.  So fresh idle items never coexist with waiters: a new
 * caller either takes a fresh idle item at once or queues.
 *
 * Supply is demand-driven.  replenish() compares the waiters with what is
 * already coming (creates and validations under way) and sends stale idle
 * items to validation first, then asks workers to create while the pool is
 * below max_size; min_idle adds to the demand.  After a failed create, one
 * attempt at a time is made, after a growing back-off; fail_after failures
 * in a row with no item left make the pool "down": its waiters get the
 * create's error at once, and the attempts go on in the background until
 * one succeeds.
 *
 * The fast paths read no clock: on this kind of machine a clock read costs
 * more than the rest of an acquire and a release together.  They use the
 * pool's own clock, now_, which the maintenance task refreshes every tick
 * while the pool is in use and which the first call after a quiet spell
 * (a tick without calls) reads afresh, waking the maintenance task.  Only
 * a random sample of acquires (timing_sample) reads the real clock, at the
 * lend and at the release, for the wait and hold distributions.
 *
 * The maintenance task sleeps until the earliest of: the next tick while
 * busy, an idle item's expiry or idle timeout or keepalive, a lent item's
 * expiry (marked for destruction at release) or leak threshold, and the
 * next create attempt after a back-off.  At close it becomes the closer:
 * it fails the waiters, destroys the idle items, cancels the jobs under
 * way, waits up to drain_timeout for the lent items, reports the rest, and
 * lets the workers finish.  Its tasks and the workers live in a supervisor
 * group the opener enters in open and exits in close.
 *
 * Items still lent when close gives up become orphans: the pool's memory
 * stays (a "zombie") until the last of them is released, and each is
 * destroyed by the release that returns it, in the releaser's task.
 */
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../util/hist.h"
#include "../util/list.h"
#include "../util/mem.h"
#include "warden.h"

#define POOL_MAGIC 0x504f4f4cu   /* "POOL" */
#define ZOMBIE_MAGIC 0x5a4f4d42u /* "ZOMB": closed, items still out */
#define SLOT_MAGIC 0x534c4f54u   /* "SLOT" */

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* The em dash of the messages, as bytes: the source stays ASCII. */
#define DASH "\xe2\x80\x94"

enum { S_IDLE = 1, S_LENT, S_JOB, S_DEAD };
enum { J_NONE = 0, J_VALIDATE, J_KEEPALIVE, J_RESET, J_DESTROY };
/* Why an item is destroyed, for the counters. */
enum { W_BROKEN, W_EXPIRED, W_IDLE, W_WORN, W_CLOSING };

typedef struct slot {
  wd_link link; /* in idle_, lent_ or work_ */
  wd_pool *pool;
  uint32_t magic;
  uint8_t state, job;
  bool retire; /* expired while lent: destroy at release */
  bool broken; /* wd_pool_mark_broken() */
  bool scoped; /* released by a scope */
  bool timed;  /* this lend is in the timing sample */
  bool leak_reported;
  bool orphan; /* lent when the pool closed */
  uint64_t id, uses;
  wd_time created, expires;
  wd_time idle_since; /* when it last went idle */
  wd_time checked_at; /* when it was last known good (returned, validated) */
  wd_time lent_at;
  const char *file; /* where it was acquired */
  int line;
  uint64_t task_id;
  char task_name[WD_TASK_NAME_MAX]; /* kept when leaks are watched */
  alignas(max_align_t) unsigned char data[];
} slot;

typedef struct waiter {
  wd_wait w;
  wd_link link; /* in waiters_ while queued */
  wd_pool *pool;
  slot *got; /* the item handed over */
  int rc;    /* or the failure handed over (closed, down) */
  bool queued, timed;
  wd_time since;
  const char *file;
  int line;
  /* What the pool looked like when the wait was cancelled. */
  size_t in_use, max, waiting, creating;
  int last_code;
  wd_time timeout;             /* the acquire timeout it waited under */
  char name[WD_POOL_NAME_MAX]; /* the pool's, which may go while it wakes */
  char msg[640]; /* the failure's message, or the last create error */
} waiter;

typedef struct worker {
  wd_wait w;
  wd_link link; /* in idle_workers_ while parked */
  bool queued;
  wd_pool *pool;
  wd_cancel_scope *job; /* the scope of a create, validation or reset */
} worker;

typedef struct pool_reg pool_reg;

struct wd_pool {
  uint32_t magic_;
  char name_[WD_POOL_NAME_MAX];
  const wd_pool_factory *f_;
  void *arg_;
  size_t item_size_;
  size_t max_, min_idle_;
  wd_time acquire_timeout_, idle_timeout_, lifetime_, jitter_;
  wd_time validate_after_, keepalive_, leak_;
  wd_time create_timeout_, validate_timeout_, reset_timeout_;
  wd_time destroy_grace_, drain_timeout_, backoff_min_, backoff_max_;
  wd_time tick_;
  void (*on_leak_)(const wd_pool_leak *leak, void *arg);
  void *on_leak_arg_;
  uint64_t max_uses_;
  unsigned nworkers_, fail_after_;
  bool fifo_, sample_all_;
  uint64_t sample_below_, rng_;

  wd_link idle_, lent_, work_, waiters_, idle_workers_;
  size_t size_, nidle_, nlent_, ncreating_, nrecycling_, nwaiting_;
  size_t peak_lent_, peak_waiting_;
  wd_time now_; /* the pool's clock: see the file comment */
  bool quiet_;
  uint64_t ops_, last_ops_;

  unsigned failures_; /* create failures in a row */
  wd_time retry_at_;
  int last_code_;
  wd_time last_at_;
  char last_msg_[160];

  wd_group group_;
  wd_task *owner_;
  worker *workers_;
  wd_wait *maint_wait_;  /* the maintenance task, while parked */
  wd_wait *opener_wait_; /* open, waiting for the start or the warm-up */
  wd_wait *drain_wait_;  /* the closer, waiting for lent items */
  unsigned started_;
  int start_rc_;
  bool maint_alive_, warming_, closing_, finishing_;
  int warm_rc_;
  size_t norphans_;

  uint64_t acquires_, waited_, timeouts_, cancelled_, failed_fast_, refused_;
  uint64_t releases_, broken_, creates_, create_errors_, destroys_;
  uint64_t destroy_errors_, validations_, validation_errors_, resets_;
  uint64_t reset_errors_, expired_, idle_evicted_, worn_out_, leaks_;
  uint64_t next_id_;
  wd__hist wait_, hold_;

  pool_reg *reg_;
  wd_link reg_link_;
  wd_resource *res_;
  const char *file_;
  int line_;
  char what_create_[WD_POOL_NAME_MAX + 16];
  char what_validate_[WD_POOL_NAME_MAX + 16];
  char what_reset_[WD_POOL_NAME_MAX + 16];
  char what_destroy_[WD_POOL_NAME_MAX + 16];
};

#define POOL_OK(p) ((p) && (p)->magic_ == POOL_MAGIC)

static inline slot *slot_of(void *item) {
  return wd__container_of(item, slot, data);
}

static inline wd_time min_t(wd_time a, wd_time b) { return a < b ? a : b; }

static inline wd_time add_t(wd_time a, wd_time d) {
  return d >= WD_TIME_NEVER - a ? WD_TIME_NEVER : a + d;
}

static inline double secs(wd_time t) { return (double)t / (double)WD_SEC; }

static uint64_t next_rand(wd_pool *p) { /* xorshift64* */
  uint64_t x = p->rng_;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  p->rng_ = x;
  return x * 0x2545f4914f6cdd1dull;
}

static inline bool sample(wd_pool *p) {
  return p->sample_all_ || next_rand(p) < p->sample_below_;
}

/* ---- waking the pool's tasks --------------------------------------------- */

static void wake_maint(wd_pool *p) {
  if (p->maint_wait_) wd_wake(p->maint_wait_, 0);
}

static void wake_opener(wd_pool *p) {
  if (p->opener_wait_) wd_wake(p->opener_wait_, 0);
}

static bool wake_worker(wd_pool *p) {
  wd_link *l = wd__list_pop_front(&p->idle_workers_);
  if (!l) return false;
  worker *wk = wd__container_of(l, worker, link);
  wk->queued = false;
  wd_wake(&wk->w, 0);
  return true;
}

static void wake_workers(wd_pool *p) {
  while (wake_worker(p)) {
  }
}

/* The first call after a quiet spell: the pool's clock is old.  Read the
 * real one and wake the maintenance task, which ticks while calls come. */
__attribute__((noinline, cold)) static void wake_clock(wd_task *self,
                                                       wd_pool *p) {
  p->now_ = wd_now(self);
  p->quiet_ = false;
  wake_maint(p);
}

/* ---- lending ---------------------------------------------------------------
 */

static void lend(wd_pool *p, slot *s, wd_task *task, const char *file,
                 int line) {
  s->state = S_LENT;
  wd__list_push_back(&p->lent_, &s->link);
  if (++p->nlent_ > p->peak_lent_) p->peak_lent_ = p->nlent_;
  s->uses++;
  s->file = file;
  s->line = line;
  s->task_id = wd_task_id(task);
  s->leak_reported = false;
  if (UNLIKELY(p->leak_)) {
    const char *n = task ? wd_task_name(task) : "";
    size_t len = strnlen(n, sizeof s->task_name - 1);
    memcpy(s->task_name, n, len);
    s->task_name[len] = '\0';
  }
  p->acquires_++;
  p->ops_++;
}

/* Lend s to a caller that did not wait. */
static inline void lend_now(wd_task *self, wd_pool *p, slot *s,
                            const char *file, int line) {
  if (UNLIKELY(sample(p))) {
    wd_time now = wd_now(self);
    p->now_ = now;
    s->lent_at = now;
    s->timed = true;
    wd__hist_add(&p->wait_, 0);
  } else {
    s->lent_at = p->now_;
  }
  lend(p, s, self, file, line);
}

/* Hand s to the first waiter, and wake it: it owns s from now on. */
static void hand(wd_pool *p, slot *s) {
  waiter *w = wd__container_of(wd__list_pop_front(&p->waiters_), waiter, link);
  w->queued = false;
  p->nwaiting_--;
  if (w->timed) {
    wd_time now = wd_now(w->w.task);
    p->now_ = now;
    s->lent_at = now;
    s->timed = true;
    wd__hist_add(&p->wait_, now - w->since);
  } else {
    s->lent_at = p->now_;
  }
  lend(p, s, w->w.task, w->file, w->line);
  p->waited_++;
  w->got = s;
  wd_wake(&w->w, 0);
}

static inline bool expired(const wd_pool *p, const slot *s) {
  return s->expires <= p->now_;
}

/* Must s be validated before it is lent? */
static inline bool stale(const wd_pool *p, const slot *s) {
  return p->validate_after_ != WD_TIME_NEVER &&
         p->now_ - s->checked_at >= p->validate_after_;
}

static inline slot *peek_idle(wd_pool *p) {
  wd_link *l = p->fifo_ ? p->idle_.next_ : p->idle_.prev_;
  return wd__container_of(l, slot, link);
}

static inline void unidle(wd_pool *p, slot *s) {
  wd__list_unlink(&s->link);
  p->nidle_--;
}

static void retire(wd_pool *p, slot *s, int why);

/* Take the idle item to lend, if one is fresh: the most recently returned
 * (LIFO) or the least recently returned fresh one (FIFO); expired items
 * met on the way are retired.  The idle list is in order of return, which
 * is also the order of checked_at, so that staleness only grows from the
 * back to the front: in LIFO order, a stale item means the rest are too. */
static slot *take_fresh(wd_pool *p) {
  wd_link *l = p->fifo_ ? p->idle_.next_ : p->idle_.prev_;
  while (l != &p->idle_) {
    slot *s = wd__container_of(l, slot, link);
    l = p->fifo_ ? l->next_ : l->prev_;
    if (expired(p, s)) {
      unidle(p, s);
      retire(p, s, W_EXPIRED);
      continue;
    }
    if (!stale(p, s)) {
      unidle(p, s);
      return s;
    }
    if (!p->fifo_) break;
  }
  return NULL;
}

/* ---- jobs for the workers -------------------------------------------------
 */

static void queue_job(wd_pool *p, slot *s, int job) {
  s->state = S_JOB;
  s->job = (uint8_t)job;
  wd__list_push_back(&p->work_, &s->link);
  if (job != J_DESTROY) p->nrecycling_++;
  wake_worker(p);
}

/* s leaves service: destroy it (a worker does). */
static void retire(wd_pool *p, slot *s, int why) {
  switch (why) {
  case W_EXPIRED:
    p->expired_++;
    break;
  case W_IDLE:
    p->idle_evicted_++;
    break;
  case W_WORN:
    p->worn_out_++;
    break;
  default:
    break;
  }
  queue_job(p, s, J_DESTROY);
}

static void give(wd_pool *p, slot *s);

/* ---- supply ------------------------------------------------------------- */

static inline bool is_down(const wd_pool *p) {
  return p->failures_ >= p->fail_after_ && p->size_ == 0;
}

/* How many creates would serve a need now (0 when none may start). */
static size_t creates_wanted(const wd_pool *p) {
  if (p->closing_) return 0;
  size_t total = p->size_ + p->ncreating_;
  if (total >= p->max_) return 0;
  if (p->failures_ && (p->ncreating_ || p->now_ < p->retry_at_)) return 0;
  size_t supply = p->ncreating_ + p->nrecycling_, need = 0;
  if (p->nwaiting_ > supply) need = p->nwaiting_ - supply;
  if (p->nidle_ + supply < p->min_idle_) {
    size_t n = p->min_idle_ - p->nidle_ - supply;
    if (n > need) need = n;
  }
  if (!need && is_down(p) && !p->ncreating_) need = 1; /* probe: recover */
  if (need > p->max_ - total) need = p->max_ - total;
  if (p->failures_ && need > 1) need = 1; /* one attempt at a time */
  return need;
}

/* Demand changed: route stale idle items to validation for the waiters
 * that nothing else serves, then wake workers for the creates needed. */
static void replenish(wd_pool *p) {
  if (p->closing_) return;
  while (p->nidle_ && p->nwaiting_ > p->ncreating_ + p->nrecycling_) {
    slot *s = peek_idle(p);
    if (!expired(p, s) && !stale(p, s))
      break; /* cannot happen (see the file comment); never hand here */
    unidle(p, s);
    if (expired(p, s))
      retire(p, s, W_EXPIRED);
    else
      queue_job(p, s, J_VALIDATE);
  }
  for (size_t n = creates_wanted(p); n > 0; n--)
    if (!wake_worker(p)) break;
}

static void fail_waiters(wd_pool *p, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail_waiters(wd_pool *p, int code, const char *fmt, ...) {
  wd_link *l;
  while ((l = wd__list_pop_front(&p->waiters_))) {
    waiter *w = wd__container_of(l, waiter, link);
    w->queued = false;
    p->nwaiting_--;
    w->rc = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->msg, sizeof w->msg, fmt, ap);
    va_end(ap);
    wd_wake(&w->w, code);
  }
}

/* The pool is down and nothing will come before the next attempt: fail
 * every waiter with the create's error now rather than at its timeout. */
static int down_error(wd_pool *p, char *buf, size_t n) {
  wd_time wait = p->retry_at_ - p->now_;
  return snprintf(buf, n,
                  "pool '%s': cannot create an item " DASH
                  " %u attempts failed in a row, last: %s; next attempt in "
                  "%.3f s",
                  p->name_, p->failures_, p->last_msg_,
                  secs(wait > 0 ? wait : 0));
}

static void check_down(wd_pool *p) {
  if (!p->nwaiting_ || !is_down(p) || p->ncreating_ || p->nrecycling_ ||
      creates_wanted(p))
    return;
  char msg[640];
  down_error(p, msg, sizeof msg);
  p->failed_fast_ += p->nwaiting_;
  fail_waiters(p, p->last_code_, "%s", msg);
}

/* Where an item that is good to use goes: the first waiter, or idle. */
static void give(wd_pool *p, slot *s) {
  if (UNLIKELY(p->closing_)) {
    retire(p, s, W_CLOSING);
  } else if (UNLIKELY(s->retire || expired(p, s))) {
    retire(p, s, W_EXPIRED);
  } else if (!wd__list_empty(&p->waiters_)) {
    hand(p, s);
  } else {
    s->state = S_IDLE;
    s->idle_since = p->now_;
    wd__list_push_back(&p->idle_, &s->link);
    p->nidle_++;
  }
}

/* ---- factory calls, in the pool's tasks ------------------------------------
 */

/* The message of self's error for rc, or rc's description. */
static const char *err_msg(wd_task *self, int rc) {
  const wd_error *e = self ? wd_task_error(self) : wd_last_error();
  return e && e->code == rc ? e->msg : wd_strerror(rc);
}

/* Run fn on s under a cancel scope with timeout (that close may cancel),
 * as a worker's job. */
static int call_job(wd_task *self, wd_pool *p, worker *wk, slot *s,
                    int (*fn)(wd_task *, void *, void *), wd_time timeout,
                    const char *what) {
  wd_cancel_scope js;
  wd_cancel_opts o = {.timeout = timeout == WD_TIME_NEVER ? 0 : timeout,
                      .fail_what = what};
  int rc = wd_cancel_scope_enter(self, &js, &o);
  if (rc) return rc;
  wk->job = &js;
  wd_error_clear(self);
  rc = fn(self, s->data, p->arg_);
  if (rc > 0) rc = 0;
  wk->job = NULL;
  /* A cancellation by close is swallowed by the scope's exit, but the job
   * still failed. */
  int xrc = wd_cancel_scope_exit(self, &js, rc);
  return rc && !xrc ? rc : xrc;
}

/* Destroy s, in self (a worker, the closer, or a releaser: self may be
 * NULL), shielded within destroy_grace, and free it.  The task's current
 * error survives: a destroy's failure is only counted. */
static void destroy_now(wd_task *self, wd_pool *p, slot *s) {
  s->state = S_DEAD;
  if (p->f_->destroy) {
    wd_error *keep = wd_error_detach(self);
    int rc;
    if (self) {
      wd_cancel_scope gs;
      wd_cancel_opts o = {
          .shield = true,
          .timeout = p->destroy_grace_ == WD_TIME_NEVER ? 0 : p->destroy_grace_,
          .fail_what = p->what_destroy_};
      /* Without room for the grace timer, destroy still runs: releasing
       * matters more than the bound. */
      bool scoped = wd_cancel_scope_enter(self, &gs, &o) == 0;
      rc = p->f_->destroy(self, s->data, p->arg_);
      if (scoped) rc = wd_cancel_scope_exit(self, &gs, rc);
    } else {
      rc = p->f_->destroy(NULL, s->data, p->arg_);
    }
    if (rc < 0) p->destroy_errors_++;
    wd_error_restore(self, keep);
  }
  p->destroys_++;
  p->size_--;
  s->magic = 0;
  wd__free(s);
}

static wd_time backoff(wd_pool *p) {
  wd_time d = p->backoff_min_;
  for (unsigned i = 1; i < p->failures_ && d < p->backoff_max_; i++)
    d = d > p->backoff_max_ / 2 ? p->backoff_max_ : 2 * d;
  if (d > p->backoff_max_) d = p->backoff_max_;
  /* Equal jitter: half fixed, half random, so that pools that failed
   * together do not retry together. */
  wd_time half = d / 2;
  return d - half + (half ? (wd_time)(next_rand(p) % (uint64_t)(half + 1)) : 0);
}

static void create_one(wd_task *self, wd_pool *p, worker *wk) {
  p->ncreating_++;
  slot *s = wd__calloc(1, sizeof *s + p->item_size_);
  int rc;
  if (!s) {
    rc =
        wd_fail(self, WD_ENOMEM, "pool '%s': no memory for an item (%zu bytes)",
                p->name_, sizeof *s + p->item_size_);
  } else {
    rc = call_job(self, p, wk, s, p->f_->create, p->create_timeout_,
                  p->what_create_);
  }
  p->ncreating_--;
  wd_time now = wd_now(self);
  p->now_ = now;
  if (rc == 0) {
    s->magic = SLOT_MAGIC;
    s->pool = p;
    s->id = ++p->next_id_;
    s->created = s->checked_at = now;
    s->expires = WD_TIME_NEVER;
    if (p->lifetime_ != WD_TIME_NEVER) {
      wd_time cut =
          p->jitter_ ? (wd_time)(next_rand(p) % (uint64_t)(p->jitter_ + 1)) : 0;
      s->expires = add_t(now, p->lifetime_ - cut);
    }
    p->size_++;
    p->creates_++;
    p->failures_ = 0;
    give(p, s);
    if (p->warming_) wake_opener(p);
    wake_maint(p); /* its lifetime and idle deadlines are new */
    return;
  }
  wd__free(s);
  if (wd_is_cancel(rc) && p->closing_) return; /* close cancelled it */
  p->create_errors_++;
  p->failures_++;
  p->last_code_ = rc;
  p->last_at_ = now;
  snprintf(p->last_msg_, sizeof p->last_msg_, "%s", err_msg(self, rc));
  p->retry_at_ = add_t(now, backoff(p));
  if (p->warming_) {
    p->warm_rc_ = rc;
    wake_opener(p);
  }
  check_down(p);
  wake_maint(p); /* it sleeps until the next attempt */
}

static void run_job(wd_task *self, wd_pool *p, worker *wk, slot *s) {
  int job = s->job;
  s->job = J_NONE;
  if (job == J_DESTROY) {
    destroy_now(self, p, s);
  } else {
    bool keep = job == J_KEEPALIVE;
    int rc;
    if (job == J_RESET) {
      rc = call_job(self, p, wk, s, p->f_->reset, p->reset_timeout_,
                    p->what_reset_);
      p->resets_++;
      if (rc) p->reset_errors_++;
    } else {
      rc = call_job(self, p, wk, s, p->f_->validate, p->validate_timeout_,
                    p->what_validate_);
      p->validations_++;
      if (rc) p->validation_errors_++;
    }
    p->nrecycling_--;
    p->now_ = wd_now(self);
    if (rc) {
      destroy_now(self, p, s);
    } else {
      wd_time idle_since = s->idle_since;
      s->checked_at = p->now_;
      give(p, s);
      /* A keepalive is not a use: the idle timeout still runs. */
      if (keep && s->state == S_IDLE) s->idle_since = idle_since;
      if (s->state == S_IDLE) wake_maint(p); /* new deadlines */
    }
  }
  replenish(p);
  check_down(p);
  if (p->closing_) wake_maint(p);
}

/* ---- the worker tasks ------------------------------------------------------
 */

static bool worker_cancel(wd_wait *w) {
  worker *wk = wd__container_of(w, worker, w);
  if (wk->queued) {
    wd__list_unlink(&wk->link);
    wk->queued = false;
  }
  return true;
}

/* A pool task starts: shield it from the opener's cancellation (the pool
 * ends by close, not by cancellation) and tell open. */
static int task_start(wd_task *self, wd_pool *p, wd_cancel_scope *shield) {
  int rc =
      wd_cancel_scope_enter(self, shield, &(wd_cancel_opts){.shield = true});
  if (rc && !p->start_rc_) p->start_rc_ = rc;
  p->started_++;
  wake_opener(p);
  return rc;
}

static int worker_main(wd_task *self, void *arg) {
  worker *wk = arg;
  wd_pool *p = wk->pool;
  wd_cancel_scope shield;
  if (task_start(self, p, &shield)) return 0;
  for (;;) {
    wd_link *l = wd__list_pop_front(&p->work_);
    if (l) {
      run_job(self, p, wk, wd__container_of(l, slot, link));
      continue;
    }
    if (p->finishing_) break;
    if (creates_wanted(p)) {
      create_one(self, p, wk);
      continue;
    }
    wk->w = (wd_wait){.what = "pool (idle worker)",
                      .name = p->name_,
                      .on_cancel = worker_cancel};
    wd__list_push_back(&p->idle_workers_, &wk->link);
    wk->queued = true;
    wd_park(self, &wk->w);
    if (wk->queued) worker_cancel(&wk->w);
  }
  wd_cancel_scope_exit(self, &shield, 0);
  wd_error_clear(self); /* nothing of a job's error is the task's own */
  return 0;
}

/* ---- the maintenance task ---------------------------------------------------
 */

static bool maint_cancel(wd_wait *w) {
  (void)w;
  return true;
}

/* Park until deadline or a wake_maint(). */
static void maint_park(wd_task *self, wd_pool *p, wd_time deadline) {
  wd_wait w = {.what = "pool (maintenance)",
               .name = p->name_,
               .on_cancel = maint_cancel};
  wd_cancel_scope ds;
  bool timed = deadline != WD_TIME_NEVER;
  if (timed && wd_cancel_scope_enter(self, &ds,
                                     &(wd_cancel_opts){.deadline = deadline})) {
    /* No room for the deadline: look again in a moment. */
    wd_sleep(self, WD_MSEC);
    return;
  }
  p->maint_wait_ = &w;
  wd_park(self, &w);
  p->maint_wait_ = NULL;
  if (timed) wd_cancel_scope_exit(self, &ds, 0);
}

/* How early s->lent_at may be: nothing when it was read from the clock
 * (a timed lend), else up to a tick of the pool's clock. */
static inline wd_time margin(const wd_pool *p, const slot *s) {
  return s->timed ? 0 : p->tick_;
}

static void report_leak(wd_pool *p, slot *s, wd_time now) {
  s->leak_reported = true;
  p->leaks_++;
  wd_pool_leak lk = {.pool = p->name_,
                     .item = s->data,
                     .held = now - s->lent_at - margin(p, s),
                     .threshold = p->leak_,
                     .file = s->file,
                     .line = s->line,
                     .task_id = s->task_id,
                     .task_name = s->task_name};
  if (p->on_leak_) {
    p->on_leak_(&lk, p->on_leak_arg_);
    return;
  }
  fprintf(stderr,
          "warden: pool '%s': item held for %.3f s (leak threshold %.3f s), "
          "acquired at %s:%d by task %llu '%s' (reported once)\n",
          p->name_, secs(lk.held), secs(lk.threshold), s->file ? s->file : "?",
          s->line, (unsigned long long)s->task_id, s->task_name);
  fflush(stderr);
}

/* One round of housekeeping at `now`; returns when the next is due. */
static wd_time housekeep(wd_pool *p, wd_time now) {
  bool active = p->ops_ != p->last_ops_;
  p->last_ops_ = p->ops_;
  p->quiet_ = !active;
  wd_time next = active ? add_t(now, p->tick_) : WD_TIME_NEVER;

  for (wd_link *l = p->idle_.next_, *nx; l != &p->idle_; l = nx) {
    nx = l->next_;
    slot *s = wd__container_of(l, slot, link);
    if (s->expires <= now) {
      unidle(p, s);
      retire(p, s, W_EXPIRED);
      continue;
    }
    next = min_t(next, s->expires);
    if (p->idle_timeout_ != WD_TIME_NEVER && p->nidle_ > p->min_idle_) {
      /* idle_since is on the pool's clock, up to a tick early. */
      wd_time due = add_t(s->idle_since, add_t(p->idle_timeout_, p->tick_));
      if (due <= now) {
        unidle(p, s);
        retire(p, s, W_IDLE);
        continue;
      }
      next = min_t(next, due);
    }
    if (p->keepalive_) {
      wd_time due = add_t(s->checked_at, p->keepalive_);
      if (due <= now) {
        unidle(p, s);
        queue_job(p, s, J_KEEPALIVE);
        continue;
      }
      next = min_t(next, due);
    }
  }
  wd__list_each(l, &p->lent_) {
    slot *s = wd__container_of(l, slot, link);
    if (!s->retire) {
      if (s->expires <= now)
        s->retire = true; /* never closed under its user: at release */
      else
        next = min_t(next, s->expires);
    }
    if (p->leak_ && !s->leak_reported) {
      wd_time due = add_t(s->lent_at, add_t(p->leak_, margin(p, s)));
      if (due <= now)
        report_leak(p, s, now);
      else
        next = min_t(next, due);
    }
  }
  replenish(p);
  check_down(p);
  if (p->failures_ && p->retry_at_ > now && !p->ncreating_ &&
      (p->nwaiting_ || p->nidle_ + p->nrecycling_ < p->min_idle_ || is_down(p)))
    next = min_t(next, p->retry_at_);
  return next;
}

static bool drain_cancel(wd_wait *w) {
  (void)w;
  return true;
}

/* Wait up to drain_timeout for the lent items to come back. */
static void drain(wd_task *self, wd_pool *p) {
  if (!p->nlent_) return;
  wd_time deadline = p->drain_timeout_ == WD_TIME_NEVER
                         ? WD_TIME_NEVER
                         : add_t(wd_now(self), p->drain_timeout_);
  wd_cancel_scope ds;
  wd_cancel_opts o = {.deadline = deadline == WD_TIME_NEVER ? 0 : deadline};
  bool scoped = wd_cancel_scope_enter(self, &ds, &o) == 0;
  while (p->nlent_) {
    if (!scoped) { /* no room for the deadline: look every millisecond */
      wd_time now = wd_now(self);
      if (now >= deadline) break;
      wd_sleep(self, min_t(WD_MSEC, deadline - now));
      continue;
    }
    wd_wait w = {
        .what = "pool (drain)", .name = p->name_, .on_cancel = drain_cancel};
    p->drain_wait_ = &w;
    int rc = wd_park(self, &w);
    p->drain_wait_ = NULL;
    if (rc) break; /* the drain timeout */
  }
  if (scoped) wd_cancel_scope_exit(self, &ds, 0);
}

/* The pool is closing: the maintenance task is the closer. */
static void close_down(wd_task *self, wd_pool *p) {
  p->refused_ += p->nwaiting_;
  fail_waiters(p, WD_ECLOSED, "pool '%s': closed while waiting for an item",
               p->name_);
  /* Checks and resets under way are cancelled (their items are then
   * destroyed), and those not started become destroys. */
  for (unsigned i = 0; i < p->nworkers_; i++)
    if (p->workers_[i].job) wd_cancel(p->workers_[i].job);
  wd__list_each(l, &p->work_) {
    slot *s = wd__container_of(l, slot, link);
    if (s->job != J_DESTROY) {
      s->job = J_DESTROY;
      p->nrecycling_--;
    }
  }
  while (p->nidle_) {
    slot *s = peek_idle(p);
    unidle(p, s);
    retire(p, s, W_CLOSING);
  }
  drain(self, p);
  if (p->nlent_) {
    wd_time now = wd_now(self);
    fprintf(stderr,
            "warden: pool '%s': closed with %zu item%s still in use after "
            "the %.3f s drain timeout; each is destroyed when it is "
            "released:\n",
            p->name_, p->nlent_, p->nlent_ == 1 ? "" : "s",
            secs(p->drain_timeout_));
    wd__list_each(l, &p->lent_) {
      slot *s = wd__container_of(l, slot, link);
      s->orphan = true;
      fprintf(stderr,
              "  item acquired at %s:%d by task %llu, held %.3f s so far\n",
              s->file ? s->file : "?", s->line, (unsigned long long)s->task_id,
              secs(now - s->lent_at));
    }
    fflush(stderr);
    p->norphans_ = p->nlent_;
  }
  p->finishing_ = true;
  wake_workers(p);
}

static int maint_main(wd_task *self, void *arg) {
  wd_pool *p = arg;
  wd_cancel_scope shield;
  if (task_start(self, p, &shield)) return 0;
  p->maint_alive_ = true;
  while (!p->closing_) {
    wd_time now = wd_now(self);
    p->now_ = now;
    wd_time next = housekeep(p, now);
    if (!p->closing_) maint_park(self, p, next);
  }
  close_down(self, p);
  p->maint_alive_ = false;
  wd_cancel_scope_exit(self, &shield, 0);
  wd_error_clear(self);
  return 0;
}

/* ---- the runtime's pools ----------------------------------------------------
 */

struct pool_reg {
  wd_runtime_ext ext; /* first: the extension's address is the record's */
  wd_link pools;      /* open pools, and closed ones with items still out */
};

static const char reg_key = 'p'; /* its address is the key */

static void print_pool(FILE *out, const wd_pool *p, wd_time now) {
  if (p->magic_ == ZOMBIE_MAGIC) {
    fprintf(out, "  pool '%s': closed, %zu item%s still out\n", p->name_,
            p->norphans_, p->norphans_ == 1 ? "" : "s");
    return;
  }
  fprintf(out,
          "  pool '%s': %zu item%s (%zu idle, %zu in use), max %zu, %zu "
          "being created, %zu waiting%s",
          p->name_, p->size_, p->size_ == 1 ? "" : "s", p->nidle_, p->nlent_,
          p->max_, p->ncreating_, p->nwaiting_, p->closing_ ? ", closing" : "");
  if (is_down(p))
    fprintf(out, "; down: %u creates failed in a row, last: %s", p->failures_,
            p->last_msg_);
  fprintf(out, "\n");
  wd__list_each(l, &p->lent_) {
    const slot *s = wd__container_of(l, slot, link);
    fprintf(out, "    item %llu lent at %s:%d to task %llu, %.3f s ago\n",
            (unsigned long long)s->id, s->file ? s->file : "?", s->line,
            (unsigned long long)s->task_id, secs(now - s->lent_at));
  }
}

static void reg_dump(wd_runtime_ext *e, FILE *out) {
  pool_reg *reg = (pool_reg *)e;
  wd_time now = wd_now(NULL);
  size_t n = 0;
  wd__list_each(l, &reg->pools) n++;
  fprintf(out, "pools: %zu\n", n);
  wd__list_each(l, &reg->pools) {
    print_pool(out, wd__container_of(l, wd_pool, reg_link_), now);
  }
}

static void free_pool(wd_pool *p) {
  p->magic_ = 0;
  wd__free(p);
}

/* The runtime ends: a closed pool whose items never came back leaks them.
 * Report each with where it was acquired; free the records (what the items
 * held is the leak the report names: nothing can run to destroy them). */
static void reg_exit(wd_runtime_ext *e, wd_runtime *rt) {
  (void)rt;
  pool_reg *reg = (pool_reg *)e;
  wd_time now = wd_now(NULL);
  wd_link *l;
  while ((l = wd__list_pop_front(&reg->pools))) {
    wd_pool *p = wd__container_of(l, wd_pool, reg_link_);
    fprintf(stderr,
            "warden: leak: pool '%s' (opened at %s:%d) ended the runtime "
            "with %zu item%s never released:\n",
            p->name_, p->file_ ? p->file_ : "?", p->line_, p->nlent_,
            p->nlent_ == 1 ? "" : "s");
    wd_link *sl;
    while ((sl = wd__list_pop_front(&p->lent_))) {
      slot *s = wd__container_of(sl, slot, link);
      fprintf(stderr, "  item acquired at %s:%d by task %llu, held %.3f s\n",
              s->file ? s->file : "?", s->line, (unsigned long long)s->task_id,
              secs(now - s->lent_at));
      s->magic = 0;
      wd__free(s);
    }
    free_pool(p);
  }
  fflush(stderr);
  wd__free(reg);
}

static pool_reg *reg_get(wd_runtime *rt) {
  pool_reg *reg = (pool_reg *)wd_runtime_ext_get(rt, &reg_key);
  if (reg || !rt) return reg;
  reg = wd__calloc(1, sizeof *reg);
  if (!reg) return NULL;
  reg->ext.key = &reg_key;
  reg->ext.dump = reg_dump;
  reg->ext.at_exit = reg_exit;
  wd__list_init(&reg->pools);
  if (wd_runtime_ext_add(rt, &reg->ext)) {
    wd__free(reg);
    return NULL;
  }
  return reg;
}

size_t wd_pool_each(wd_runtime *rt, int (*fn)(wd_pool *pool, void *arg),
                    void *arg) {
  if (!fn) return 0;
  if (!rt) rt = wd_runtime_current();
  pool_reg *reg = rt ? (pool_reg *)wd_runtime_ext_get(rt, &reg_key) : NULL;
  if (!reg) return 0;
  size_t n = 0;
  wd__list_each(l, &reg->pools) {
    wd_pool *p = wd__container_of(l, wd_pool, reg_link_);
    if (p->magic_ != POOL_MAGIC) continue;
    n++;
    if (fn(p, arg)) break;
  }
  return n;
}

/* ---- the pool as a resource -------------------------------------------------
 */

static int pres_open(wd_task *self, void *data, const void *config) {
  (void)self;
  *(wd_pool **)data = (wd_pool *)config;
  return 0;
}

static int pres_health(wd_task *self, void *data) {
  wd_pool *p = *(wd_pool **)data;
  if (!p) return wd_fail(self, WD_ECLOSED, "pool: closed");
  return wd_pool_health(self, p);
}

/* The pool's figures for the monitor's exports: wd_pool_stats_get()'s
 * sizes, counters and distributions (seconds), none once the pool has
 * closed.  No block, no allocation: the stats are copied on the stack. */
static size_t pres_figures(void *data, wd_figure *out, size_t cap) {
  const wd_pool *p = *(wd_pool **)data;
  if (!POOL_OK(p)) return 0;
  wd_pool_stats st;
  if (wd_pool_stats_get(p, &st)) return 0;
#define GAUGE(n, v, h)                                                         \
  { .name = (n), .help = (h), .kind = WD_FIGURE_GAUGE, .value = (double)(v) }
#define COUNTER(n, v, h)                                                       \
  { .name = (n), .help = (h), .kind = WD_FIGURE_COUNTER, .value = (double)(v) }
#define SUMMARY(n, d, h)                                                       \
  {                                                                            \
    .name = (n), .help = (h), .kind = WD_FIGURE_SUMMARY, .count = (d).count,   \
    .sum = (double)(d).sum / WD_SEC, .p50 = (double)(d).p50 / WD_SEC,          \
    .p90 = (double)(d).p90 / WD_SEC, .p99 = (double)(d).p99 / WD_SEC           \
  }
  const wd_figure all[] = {
      GAUGE("size", st.size,
            "Items that exist: idle, in use, or in the pool's hands."),
      GAUGE("idle", st.idle, "Items ready to lend."),
      GAUGE("in_use", st.in_use, "Items lent and not yet released."),
      GAUGE("creating", st.creating, "Creates under way."),
      GAUGE("waiting", st.waiting, "Tasks waiting for an item."),
      GAUGE("max_size", st.max_size, "The most items the pool may hold."),
      GAUGE("min_idle", st.min_idle, "Idle items the pool keeps ready."),
      GAUGE("down", st.down ? 1 : 0,
            "1 while creates keep failing and acquires fail fast."),
      COUNTER("acquires", st.acquires, "Items lent."),
      COUNTER("timeouts", st.timeouts,
              "Acquires that ended by a deadline while waiting."),
      COUNTER("cancelled", st.cancelled, "Acquires cancelled while waiting."),
      COUNTER("failed_fast", st.failed_fast,
              "Acquires failed with the create error while down."),
      COUNTER("creates", st.creates, "Items created."),
      COUNTER("create_errors", st.create_errors, "Creates that failed."),
      COUNTER("destroys", st.destroys, "Items destroyed."),
      COUNTER("destroy_errors", st.destroy_errors,
              "Destroys that reported an error."),
      COUNTER("validation_errors", st.validation_errors,
              "Validations that failed."),
      COUNTER("leaks", st.leaks, "Items reported held too long."),
      SUMMARY("wait_seconds", st.wait_time,
              "Time from an acquire's call to the item in hand (timed "
              "acquires only; quantiles within 1/16)."),
      SUMMARY("hold_seconds", st.hold_time,
              "Time from an item's lending to its release (timed acquires "
              "only; quantiles within 1/16)."),
  };
#undef GAUGE
#undef COUNTER
#undef SUMMARY
  size_t n = sizeof all / sizeof *all;
  if (n > cap) n = cap;
  memcpy(out, all, n * sizeof *out);
  return n;
}

const wd_resource_type wd_pool_resource_type = {.name = "pool",
                                                .size = sizeof(wd_pool *),
                                                .open = pres_open,
                                                .health = pres_health,
                                                .figures = pres_figures};

wd_pool *wd_pool_of_resource(const wd_resource *r) {
  if (!r || wd_resource_type_of(r) != &wd_pool_resource_type) return NULL;
  return *(wd_pool **)wd_resource_data(r);
}

/* The pool is done (or its open failed): take it out of the registry.
 * self may be NULL (the last orphan's release from a callback). */
static void finish(wd_task *self, wd_pool *p) {
  if (p->res_) {
    *(wd_pool **)wd_resource_data(p->res_) = NULL;
    wd_error *keep = wd_error_detach(self);
    wd_resource_close(self, p->res_, 0);
    wd_resource_unref(p->res_);
    wd_error_restore(self, keep);
    p->res_ = NULL;
  }
  if (p->reg_link_.next_) wd__list_unlink(&p->reg_link_);
  free_pool(p);
}

/* ---- open and close
 * ----------------------------------------------------------
 */

static bool opener_cancel(wd_wait *w) {
  (void)w;
  return true;
}

/* Park the opener until cond(p) holds.  Returns 0 or its cancellation. */
static int opener_wait(wd_task *self, wd_pool *p, bool (*cond)(wd_pool *),
                       const char *what) {
  while (!cond(p)) {
    wd_wait w = {.what = what, .name = p->name_, .on_cancel = opener_cancel};
    p->opener_wait_ = &w;
    int rc = wd_park(self, &w);
    p->opener_wait_ = NULL;
    if (rc) return rc;
  }
  return 0;
}

static bool all_started(wd_pool *p) {
  return p->started_ == p->nworkers_ + 1 || p->start_rc_;
}

static bool warmed(wd_pool *p) {
  return p->nidle_ >= p->min_idle_ || p->warm_rc_;
}

/* Stop the pool's tasks and wait for them: the maintenance task closes
 * down (or, if it never started, we do its part here).  Returns what
 * wd_group_exit returns. */
static int stop_tasks(wd_task *self, wd_pool *p) {
  p->closing_ = true;
  if (p->maint_alive_) {
    wake_maint(p);
  } else {
    fail_waiters(p, WD_ECLOSED, "pool '%s': closed while waiting for an item",
                 p->name_);
    p->finishing_ = true;
    wake_workers(p);
  }
  return wd_group_exit(self, &p->group_, 0);
}

/* After the pool's tasks ended: destroy whatever they left (only when some
 * could not start), then finish or, with orphans, become a zombie. */
static void after_tasks(wd_task *self, wd_pool *p) {
  wd_link *l;
  while ((l = wd__list_pop_front(&p->idle_))) {
    p->nidle_--;
    destroy_now(self, p, wd__container_of(l, slot, link));
  }
  while ((l = wd__list_pop_front(&p->work_))) {
    slot *s = wd__container_of(l, slot, link);
    if (s->job != J_DESTROY) p->nrecycling_--;
    destroy_now(self, p, s);
  }
  if (p->nlent_) { /* possible only when the closer never started */
    wd__list_each(it, &p->lent_) {
      wd__container_of(it, slot, link)->orphan = true;
    }
    p->norphans_ = p->nlent_;
  }
  if (p->norphans_) {
    p->magic_ = ZOMBIE_MAGIC;
    return;
  }
  finish(self, p);
}

static int bad_opts(wd_task *self, const wd_pool_opts *o, const char *name) {
  if (!self) return wd_fail(NULL, WD_EINVAL, "pool '%s': NULL task", name);
  if (!o) return wd_fail(self, WD_EINVAL, "pool '%s': NULL options", name);
  if (!o->factory)
    return wd_fail(self, WD_EINVAL, "pool '%s': no factory", name);
  if (!o->factory->create)
    return wd_fail(self, WD_EINVAL, "pool '%s': the factory has no create",
                   name);
  if (o->factory->item_size > SIZE_MAX / 4)
    return wd_fail(self, WD_EINVAL, "pool '%s': item_size %zu is too large",
                   name, o->factory->item_size);
  size_t max = o->max_size ? o->max_size : 10;
  if (max > WD_POOL_MAX_SIZE)
    return wd_fail(self, WD_EINVAL, "pool '%s': max_size %zu is above %zu",
                   name, o->max_size, WD_POOL_MAX_SIZE);
  if (o->min_idle > max)
    return wd_fail(self, WD_EINVAL,
                   "pool '%s': min_idle %zu is above max_size %zu", name,
                   o->min_idle, max);
  if (o->workers > WD_POOL_MAX_WORKERS)
    return wd_fail(self, WD_EINVAL, "pool '%s': workers %u is above %u", name,
                   o->workers, WD_POOL_MAX_WORKERS);
  struct {
    const char *what;
    wd_time v;
  } t[] = {{"acquire_timeout", o->acquire_timeout},
           {"idle_timeout", o->idle_timeout},
           {"max_lifetime", o->max_lifetime},
           {"keepalive", o->keepalive},
           {"leak_threshold", o->leak_threshold},
           {"create_timeout", o->create_timeout},
           {"validate_timeout", o->validate_timeout},
           {"reset_timeout", o->reset_timeout},
           {"destroy_grace", o->destroy_grace},
           {"drain_timeout", o->drain_timeout},
           {"backoff_min", o->backoff_min},
           {"backoff_max", o->backoff_max}};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (t[i].v < 0)
      return wd_fail(self, WD_EINVAL, "pool '%s': negative %s (%lld ns)", name,
                     t[i].what, (long long)t[i].v);
  if (o->validate_after < 0 && o->validate_after != WD_POOL_EVERY_BORROW)
    return wd_fail(self, WD_EINVAL,
                   "pool '%s': negative validate_after (%lld ns)", name,
                   (long long)o->validate_after);
  if (o->lifetime_jitter < 0 && o->lifetime_jitter != WD_POOL_NO_JITTER)
    return wd_fail(self, WD_EINVAL,
                   "pool '%s': negative lifetime_jitter (%lld ns)", name,
                   (long long)o->lifetime_jitter);
  wd_time life = o->max_lifetime ? o->max_lifetime : 30 * 60 * WD_SEC;
  if (o->lifetime_jitter > 0 && life != WD_TIME_NEVER &&
      o->lifetime_jitter >= life)
    return wd_fail(self, WD_EINVAL,
                   "pool '%s': lifetime_jitter %.3f s is not below "
                   "max_lifetime %.3f s",
                   name, secs(o->lifetime_jitter), secs(life));
  wd_time bmin = o->backoff_min ? o->backoff_min : 50 * WD_MSEC;
  wd_time bmax = o->backoff_max ? o->backoff_max : 10 * WD_SEC;
  return wd_fail(self, WD_EINVAL,
                 "pool '%s': backoff_max %.3f s is below backoff_min %.3f s",
                 name, secs(bmax), secs(bmin));
}

static bool opts_ok(const wd_pool_opts *o) {
  if (!o || !o->factory || !o->factory->create ||
      o->factory->item_size > SIZE_MAX / 4)
    return false;
  size_t max = o->max_size ? o->max_size : 10;
  if (max > WD_POOL_MAX_SIZE || o->min_idle > max ||
      o->workers > WD_POOL_MAX_WORKERS)
    return false;
  if (o->acquire_timeout < 0 || o->idle_timeout < 0 || o->max_lifetime < 0 ||
      o->keepalive < 0 || o->leak_threshold < 0 || o->create_timeout < 0 ||
      o->validate_timeout < 0 || o->reset_timeout < 0 || o->destroy_grace < 0 ||
      o->drain_timeout < 0 || o->backoff_min < 0 || o->backoff_max < 0)
    return false;
  if (o->validate_after < 0 && o->validate_after != WD_POOL_EVERY_BORROW)
    return false;
  if (o->lifetime_jitter < 0 && o->lifetime_jitter != WD_POOL_NO_JITTER)
    return false;
  wd_time life = o->max_lifetime ? o->max_lifetime : 30 * 60 * WD_SEC;
  if (o->lifetime_jitter > 0 && life != WD_TIME_NEVER &&
      o->lifetime_jitter >= life)
    return false;
  wd_time bmin = o->backoff_min ? o->backoff_min : 50 * WD_MSEC;
  wd_time bmax = o->backoff_max ? o->backoff_max : 10 * WD_SEC;
  return bmax >= bmin;
}

static inline wd_time or_default(wd_time v, wd_time def) { return v ? v : def; }

static unsigned workers_of(const wd_pool_opts *o) {
  size_t max = o->max_size ? o->max_size : 10;
  return o->workers ? o->workers : max < 4 ? (unsigned)max : 4;
}

static void configure(wd_pool *p, const wd_pool_opts *o, wd_time now) {
  snprintf(p->name_, sizeof p->name_, "%s", o->name ? o->name : "pool");
  p->f_ = o->factory;
  p->arg_ = o->arg;
  p->item_size_ =
      o->factory->item_size ? o->factory->item_size : sizeof(void *);
  p->max_ = o->max_size ? o->max_size : 10;
  p->min_idle_ = o->min_idle;
  p->acquire_timeout_ = or_default(o->acquire_timeout, 30 * WD_SEC);
  p->idle_timeout_ = or_default(o->idle_timeout, 10 * 60 * WD_SEC);
  p->lifetime_ = or_default(o->max_lifetime, 30 * 60 * WD_SEC);
  p->jitter_ = 0;
  if (p->lifetime_ != WD_TIME_NEVER && o->lifetime_jitter != WD_POOL_NO_JITTER)
    p->jitter_ = or_default(o->lifetime_jitter, p->lifetime_ / 40);
  if (!o->factory->validate)
    p->validate_after_ = WD_TIME_NEVER;
  else if (o->validate_after == WD_POOL_EVERY_BORROW)
    p->validate_after_ = 0;
  else
    p->validate_after_ = or_default(o->validate_after, 500 * WD_MSEC);
  p->keepalive_ =
      o->factory->validate && o->keepalive != WD_TIME_NEVER ? o->keepalive : 0;
  p->leak_ = o->leak_threshold == WD_TIME_NEVER ? 0 : o->leak_threshold;
  p->on_leak_ = o->on_leak;
  p->on_leak_arg_ = o->on_leak_arg;
  p->max_uses_ = o->max_uses;
  p->fifo_ = o->fifo;
  p->nworkers_ = workers_of(o);
  p->fail_after_ = o->fail_after ? o->fail_after : 3;
  p->create_timeout_ = or_default(o->create_timeout, 30 * WD_SEC);
  p->validate_timeout_ = or_default(o->validate_timeout, 5 * WD_SEC);
  p->reset_timeout_ = or_default(o->reset_timeout, 5 * WD_SEC);
  p->destroy_grace_ = or_default(o->destroy_grace, WD_RESOURCE_GRACE_DEFAULT);
  p->drain_timeout_ = or_default(o->drain_timeout, 5 * WD_SEC);
  p->backoff_min_ = or_default(o->backoff_min, 50 * WD_MSEC);
  p->backoff_max_ = or_default(o->backoff_max, 10 * WD_SEC);
  unsigned n = o->timing_sample ? o->timing_sample : 16;
  p->sample_all_ = n == 1;
  p->sample_below_ = UINT64_MAX / n;
  p->rng_ =
      o->seed ? o->seed
              : (uint64_t)now ^ (uint64_t)(uintptr_t)p ^ 0x9e3779b97f4a7c15ull;
  if (!p->rng_) p->rng_ = 1;
  /* The tick: how stale the pool's clock may get while it is busy, a
   * fraction of the shortest time that matters to the fast paths. */
  wd_time shortest = WD_SEC * 8;
  if (p->validate_after_ && p->validate_after_ != WD_TIME_NEVER)
    shortest = min_t(shortest, p->validate_after_);
  if (p->keepalive_) shortest = min_t(shortest, p->keepalive_);
  if (p->leak_) shortest = min_t(shortest, p->leak_);
  if (p->idle_timeout_ != WD_TIME_NEVER)
    shortest = min_t(shortest, p->idle_timeout_);
  p->tick_ = shortest / 8;
  if (p->tick_ < WD_MSEC) p->tick_ = WD_MSEC;
  p->now_ = now;
  p->quiet_ = true;
  wd__list_init(&p->idle_);
  wd__list_init(&p->lent_);
  wd__list_init(&p->work_);
  wd__list_init(&p->waiters_);
  wd__list_init(&p->idle_workers_);
  snprintf(p->what_create_, sizeof p->what_create_, "pool '%s' create",
           p->name_);
  snprintf(p->what_validate_, sizeof p->what_validate_, "pool '%s' validate",
           p->name_);
  snprintf(p->what_reset_, sizeof p->what_reset_, "pool '%s' reset", p->name_);
  snprintf(p->what_destroy_, sizeof p->what_destroy_, "pool '%s' destroy",
           p->name_);
}

int wd_pool_open_(wd_task *self, wd_pool **out, const wd_pool_opts *opts,
                  const char *file, int line) {
  if (out) *out = NULL;
  const char *name = opts && opts->name ? opts->name : "pool";
  if (!out)
    return wd_fail(self, WD_EINVAL, "pool '%s': NULL out pointer", name);
  if (!self || !opts_ok(opts)) return bad_opts(self, opts, name);
  int rc = wd_cancel_status(self);
  if (rc)
    return wd_fail(self, rc, "pool '%s': open %s", name,
                   rc == WD_ETIMEDOUT ? "stopped by a deadline" : "cancelled");
  size_t nw = workers_of(opts);
  wd_pool *p = wd__calloc(1, sizeof *p + nw * sizeof(worker));
  if (!p)
    return wd_fail(self, WD_ENOMEM, "pool '%s': no memory for the pool", name);
  configure(p, opts, wd_now(self));
  p->workers_ = (worker *)(p + 1);
  p->owner_ = self;
  p->file_ = file;
  p->line_ = line;
  p->reg_ = reg_get(wd_task_runtime(self));
  if (!p->reg_) {
    wd__free(p);
    return wd_fail(self, WD_ENOMEM, "pool '%s': no memory for the registry",
                   name);
  }
  rc = wd_resource_open_(self, &wd_pool_resource_type, p, p->name_, &p->res_,
                         file, line);
  if (rc) {
    wd__free(p);
    return wd_wrap(self, rc, "pool '%s': open", name);
  }
  wd_resource_ref(p->res_);
  p->magic_ = POOL_MAGIC;
  wd__list_push_back(&p->reg_->pools, &p->reg_link_);

  char gname[48], tname[72];
  snprintf(gname, sizeof gname, "pool:%s", p->name_);
  rc = wd_group_enter_(self, &p->group_,
                       &(wd_group_opts){.name = gname, .supervisor = true},
                       file, line);
  if (rc) {
    finish(self, p);
    return wd_wrap(self, rc, "pool '%s': open", name);
  }
  snprintf(tname, sizeof tname, "%s/maintenance", gname);
  rc = wd_spawn(&p->group_, maint_main, p, &(wd_spawn_opts){.name = tname});
  for (unsigned i = 0; i < p->nworkers_ && rc == 0; i++) {
    worker *wk = &p->workers_[i];
    wk->pool = p;
    snprintf(tname, sizeof tname, "%s/worker-%u", gname, i + 1);
    rc = wd_spawn(&p->group_, worker_main, wk, &(wd_spawn_opts){.name = tname});
    if (rc) p->nworkers_ = i; /* the ones that exist */
  }
  if (rc == 0) rc = opener_wait(self, p, all_started, "pool (start)");
  if (rc == 0 && p->start_rc_) rc = p->start_rc_;
  if (rc == 0 && !opts->lazy && p->min_idle_) {
    p->warming_ = true;
    replenish(p);
    rc = opener_wait(self, p, warmed, "pool (warm-up)");
    p->warming_ = false;
  }
  if (rc == 0 && p->warm_rc_) {
    /* Recorded now, before the teardown, with the create's message. */
    rc = wd_fail(self, p->warm_rc_,
                 "pool '%s': warm-up: create failed (%zu of %zu made): %s",
                 p->name_, p->nidle_, p->min_idle_, p->last_msg_);
  } else if (wd_is_cancel(rc)) {
    rc = wd_fail(self, rc, "pool '%s': open %s", name,
                 rc == WD_ETIMEDOUT ? "stopped by a deadline" : "cancelled");
  } else if (rc) {
    rc = wd_fail(self, rc, "pool '%s': open: %s", name,
                 rc == WD_ENOMEM ? "no memory for its tasks" : wd_strerror(rc));
  }
  if (rc) {
    /* Undo it all: the group's tasks end, what was made is destroyed, and
     * the error recorded above stays the task's. */
    wd_error *keep = wd_error_detach(self);
    stop_tasks(self, p);
    after_tasks(self, p);
    wd_error_restore(self, keep);
    return rc;
  }
  *out = p;
  return 0;
}

int wd_pool_close(wd_task *self, wd_pool *p) {
  if (!p) return 0;
  if (!self || !POOL_OK(p))
    return wd_fail(self, WD_EINVAL, "wd_pool_close: %s",
                   !self ? "NULL task" : "not an open pool");
  if (p->owner_ != self)
    return wd_fail(self, WD_EINVAL,
                   "pool '%s': opened by task %llu, so task %llu cannot "
                   "close it",
                   p->name_, (unsigned long long)wd_task_id(p->owner_),
                   (unsigned long long)wd_task_id(self));
  if (p->closing_)
    return wd_fail(self, WD_EINVAL, "pool '%s': already closing", p->name_);
  int rc = stop_tasks(self, p);
  if (rc == WD_EINVAL) {
    /* The pool's tasks never fail, so this is the exit refusing to close
     * the group out of LIFO order: it is still open and nothing ran since
     * closing_ was set (the exit returned without waiting), so undo it;
     * the maintenance task just woken finds nothing changed. */
    p->closing_ = false;
    return wd_wrap(self, rc, "pool '%s': close", p->name_);
  }
  size_t orphans = p->norphans_;
  wd_time drain = p->drain_timeout_;
  char name[WD_POOL_NAME_MAX];
  memcpy(name, p->name_, sizeof name);
  after_tasks(self, p); /* p may be gone from here */
  if (orphans)
    return wd_fail(self, WD_EBUSY,
                   "pool '%s': closed with %zu item%s still in use after the "
                   "%.3f s drain timeout (each is destroyed when released)",
                   name, orphans, orphans == 1 ? "" : "s", secs(drain));
  return rc;
}

/* ---- acquire --------------------------------------------------------------
 */

__attribute__((cold)) static int bad_call(wd_task *self, const wd_pool *p,
                                          const void *out, const char *fn) {
  if (!self) return wd_fail(NULL, WD_EINVAL, "%s: NULL task", fn);
  if (!out) return wd_fail(self, WD_EINVAL, "%s: NULL out pointer", fn);
  if (!p) return wd_fail(self, WD_EINVAL, "%s: NULL pool", fn);
  return wd_fail(self, WD_EINVAL, "%s: not an open pool", fn);
}

__attribute__((cold)) static int cancelled(wd_task *self, const wd_pool *p,
                                           int rc) {
  return wd_fail(self, rc, "pool '%s': acquire %s", p->name_,
                 rc == WD_ETIMEDOUT ? "stopped by a deadline" : "cancelled");
}

__attribute__((cold)) static int refused(wd_task *self, wd_pool *p) {
  p->refused_++;
  return wd_fail(self, WD_ECLOSED, "pool '%s' is closing: acquire refused",
                 p->name_);
}

/* What the pool looked like when w stopped waiting. */
static void snapshot(wd_pool *p, waiter *w) {
  w->in_use = p->nlent_;
  w->max = p->max_;
  w->waiting = p->nwaiting_ + 1;
  w->creating = p->ncreating_;
  w->last_code = p->last_code_;
  if (p->last_code_)
    snprintf(w->msg, sizeof w->msg, "%s", p->last_msg_);
  else
    w->msg[0] = '\0';
}

static void leave(waiter *w) {
  wd_pool *p = w->pool;
  wd__list_unlink(&w->link);
  w->queued = false;
  p->nwaiting_--;
  snapshot(p, w);
}

/* The waiter's task was cancelled (a deadline, its scopes, the acquire
 * timeout): it leaves the queue with nothing taken. */
static bool waiter_cancel(wd_wait *ww) {
  waiter *w = wd__container_of(ww, waiter, w);
  wd_pool *p = w->pool;
  if (wd_cancel_status(w->w.task) == WD_ETIMEDOUT)
    p->timeouts_++;
  else
    p->cancelled_++;
  leave(w);
  /* What was coming for it now serves the next waiter, or goes idle. */
  return true;
}

static int timed_out(wd_task *self, const waiter *w) {
  char more[400] = "";
  size_t n = 0;
  if (w->creating)
    n += (size_t)snprintf(more + n, sizeof more - n, ", %zu being created",
                          w->creating);
  if (w->last_code && n < sizeof more)
    snprintf(more + n, sizeof more - n, ", last create error: %.300s", w->msg);
  return wd_fail(
      self, WD_ETIMEDOUT,
      "pool '%s': no item within %.3f s " DASH " %zu/%zu in use, %zu waiting%s",
      w->name, secs(w->timeout), w->in_use, w->max, w->waiting, more);
}

static int acquire_wait(wd_task *self, wd_pool *p, void **out, const char *file,
                        int line) {
  wd_cancel_scope ts;
  bool timed = p->acquire_timeout_ != WD_TIME_NEVER;
  if (timed) {
    int rc = wd_cancel_scope_enter(
        self, &ts, &(wd_cancel_opts){.timeout = p->acquire_timeout_});
    if (rc)
      return wd_wrap(self, rc, "pool '%s': acquire: no room for the timeout",
                     p->name_);
  }
  /* Field by field: msg is written only when a failure is handed over. */
  waiter w;
  w.w = (wd_wait){.what = "pool", .name = w.name, .on_cancel = waiter_cancel};
  w.pool = p;
  w.got = NULL;
  w.rc = 0;
  w.queued = true;
  w.timed = sample(p);
  w.since = w.timed ? wd_now(self) : 0;
  w.file = file;
  w.line = line;
  w.timeout = p->acquire_timeout_;
  w.last_code = 0;
  memcpy(w.name, p->name_, sizeof w.name);
  wd__list_push_back(&p->waiters_, &w.link);
  if (++p->nwaiting_ > p->peak_waiting_) p->peak_waiting_ = p->nwaiting_;
  replenish(p);
  int rc = wd_park(self, &w.w);
  if (w.queued) { /* wd_park refused to park: self was cancelled */
    if (rc == WD_ETIMEDOUT)
      p->timeouts_++;
    else
      p->cancelled_++;
    leave(&w);
    replenish(p);
  }
  /* From here on, p may be gone (closed): read only w. */
  bool fired = false;
  if (timed) {
    int xrc = wd_cancel_scope_exit(self, &ts, rc);
    fired = rc && !xrc;
    rc = xrc;
  }
  if (w.got) {
    *out = w.got->data;
    return 0;
  }
  if (w.rc) return wd_fail(self, w.rc, "%s", w.msg);
  if (fired) return timed_out(self, &w);
  return wd_fail(self, rc, "pool '%s': acquire %s", w.name,
                 rc == WD_ETIMEDOUT ? "stopped by a deadline" : "cancelled");
}

__attribute__((noinline)) static int acquire_slow(wd_task *self, wd_pool *p,
                                                  void **out, const char *file,
                                                  int line) {
  if (p->closing_) return refused(self, p);
  /* The clock is read only where a decision needs it: a waiter behind
   * others decides nothing (the contended path reads none). */
  if (!p->nwaiting_ && p->nidle_) {
    p->now_ = wd_now(self);
    slot *s = take_fresh(p);
    if (s) {
      lend_now(self, p, s, file, line);
      *out = s->data;
      return 0;
    }
    if (p->nidle_) { /* all stale: check one, for us (or the next) */
      s = peek_idle(p);
      unidle(p, s);
      queue_job(p, s, J_VALIDATE);
    }
  }
  if (UNLIKELY(is_down(p)) && !p->ncreating_ && !p->nrecycling_) {
    p->now_ = wd_now(self);
    if (p->now_ < p->retry_at_) {
      char msg[640];
      down_error(p, msg, sizeof msg);
      p->failed_fast_++;
      return wd_fail(self, p->last_code_, "%s", msg);
    }
  }
  return acquire_wait(self, p, out, file, line);
}

int wd_pool_acquire_(wd_task *self, wd_pool *p, void **out, const char *file,
                     int line) {
  if (UNLIKELY(!self || !out || !POOL_OK(p)))
    return bad_call(self, p, out, "wd_pool_acquire");
  *out = NULL;
  int rc = wd_cancel_status(self);
  if (UNLIKELY(rc)) return cancelled(self, p, rc);
  if (UNLIKELY(p->quiet_)) wake_clock(self, p);
  if (LIKELY(p->nidle_ && !p->nwaiting_)) {
    slot *s = peek_idle(p);
    if (LIKELY(!expired(p, s) && !stale(p, s))) {
      unidle(p, s);
      lend_now(self, p, s, file, line);
      *out = s->data;
      return 0;
    }
  }
  return acquire_slow(self, p, out, file, line);
}

int wd_pool_acquire_try_(wd_task *self, wd_pool *p, void **out,
                         const char *file, int line) {
  if (!self || !out || !POOL_OK(p))
    return bad_call(self, p, out, "wd_pool_acquire_try");
  *out = NULL;
  if (p->closing_) return refused(self, p);
  if (p->quiet_) wake_clock(self, p);
  if (p->nidle_ && !p->nwaiting_) {
    slot *s = take_fresh(p);
    if (s) {
      lend_now(self, p, s, file, line);
      *out = s->data;
      return 0;
    }
    if (p->nidle_) { /* all stale: checked in the background for later */
      s = peek_idle(p);
      unidle(p, s);
      queue_job(p, s, J_VALIDATE);
    }
  }
  replenish(p);
  return WD_EAGAIN; /* the expected answer of a try: no message */
}

/* ---- release ------------------------------------------------------------- */

static int bad_release(wd_task *self, const wd_pool *p, void *item,
                       const char *fn) {
  if (!p) return wd_fail(self, WD_EINVAL, "%s: NULL pool", fn);
  if (!item) return wd_fail(self, WD_EINVAL, "%s: NULL item", fn);
  if (p->magic_ != POOL_MAGIC && p->magic_ != ZOMBIE_MAGIC)
    return wd_fail(self, WD_EINVAL, "%s: not a pool", fn);
  slot *s = slot_of(item);
  if (s->magic != SLOT_MAGIC || s->pool != p)
    return wd_fail(self, WD_EINVAL, "%s: pool '%s': not one of its items", fn,
                   p->name_);
  if (s->state != S_LENT)
    return wd_fail(self, WD_EINVAL, "%s: pool '%s': item %llu is not lent", fn,
                   p->name_, (unsigned long long)s->id);
  return wd_fail(self, WD_EINVAL,
                 "%s: pool '%s': item %llu is released by the scope it was "
                 "acquired on",
                 fn, p->name_, (unsigned long long)s->id);
}

static inline bool lent_by(const wd_pool *p, void *item) {
  if (!p || !item) return false;
  if (p->magic_ != POOL_MAGIC && p->magic_ != ZOMBIE_MAGIC) return false;
  const slot *s = slot_of(item);
  return s->magic == SLOT_MAGIC && s->pool == p && s->state == S_LENT;
}

/* An item that came back after its pool closed: destroy it here. */
__attribute__((noinline, cold)) static void
release_orphan(wd_task *self, wd_pool *p, slot *s) {
  destroy_now(self, p, s);
  if (--p->norphans_ == 0) finish(self, p);
}

static int release_slot(wd_task *self, wd_pool *p, slot *s, wd_pool_status st) {
  wd__list_unlink(&s->link);
  p->nlent_--;
  p->releases_++;
  p->ops_++;
  if (UNLIKELY(s->timed)) {
    s->timed = false;
    wd_time now = wd_now(self);
    p->now_ = now;
    wd__hist_add(&p->hold_, now - s->lent_at);
  }
  if (UNLIKELY(s->orphan)) {
    release_orphan(self, p, s);
    return 0;
  }
  if (UNLIKELY(p->quiet_)) wake_clock(self, p);
  if (UNLIKELY(st != WD_POOL_OK || s->broken)) {
    p->broken_++;
    s->broken = false;
    retire(p, s, W_BROKEN);
  } else if (UNLIKELY(p->closing_)) {
    retire(p, s, W_CLOSING);
  } else if (UNLIKELY(s->retire || expired(p, s))) {
    retire(p, s, W_EXPIRED);
  } else if (UNLIKELY(p->max_uses_ && s->uses >= p->max_uses_)) {
    retire(p, s, W_WORN);
  } else {
    s->checked_at = p->now_;
    if (p->f_->reset)
      queue_job(p, s, J_RESET);
    else
      give(p, s);
    return 0;
  }
  if (UNLIKELY(p->closing_ && !p->nlent_ && p->drain_wait_))
    wd_wake(p->drain_wait_, 0);
  return 0;
}

int wd_pool_release(wd_task *self, wd_pool *p, void *item,
                    wd_pool_status status) {
  if (UNLIKELY(!lent_by(p, item) || slot_of(item)->scoped))
    return bad_release(self, p, item, "wd_pool_release");
  if (UNLIKELY(status != WD_POOL_OK && status != WD_POOL_BROKEN))
    return wd_fail(self, WD_EINVAL,
                   "wd_pool_release: pool '%s': unknown status %d", p->name_,
                   (int)status);
  return release_slot(self, p, slot_of(item), status);
}

int wd_pool_mark_broken(wd_pool *p, void *item) {
  if (!lent_by(p, item))
    return bad_release(NULL, p, item, "wd_pool_mark_broken");
  slot_of(item)->broken = true;
  return 0;
}

/* ---- the scope helper ------------------------------------------------------
 */

static int scoped_release(wd_task *self, void *arg, wd_outcome how) {
  (void)how;
  slot *s = arg;
  s->scoped = false;
  return release_slot(self, s->pool, s, WD_POOL_OK);
}

int wd_pool_acquire_scoped_(wd_task *self, wd_scope *sc, wd_pool *p, void **out,
                            const char *file, int line) {
  if (out) *out = NULL;
  if (!sc)
    return wd_fail(self, WD_EINVAL, "wd_pool_acquire_scoped: NULL scope");
  int rc = wd_pool_acquire_(self, p, out, file, line);
  if (rc) return rc;
  slot *s = slot_of(*out);
  s->scoped = true;
  rc = wd_scope_defer(self, sc, scoped_release, s);
  if (rc) {
    /* WD_ENOMEM has run the release already; anything else has not. */
    if (rc != WD_ENOMEM) {
      wd_error *keep = wd_error_detach(self);
      scoped_release(self, s, WD_OUTCOME_ERROR);
      wd_error_restore(self, keep);
    }
    *out = NULL;
    return rc;
  }
  return 0;
}

/* ---- health and statistics -------------------------------------------------
 */

int wd_pool_health(wd_task *self, wd_pool *p) {
  if (!self || !p || (p->magic_ != POOL_MAGIC && p->magic_ != ZOMBIE_MAGIC))
    return wd_fail(self, WD_EINVAL, "wd_pool_health: %s",
                   !self ? "NULL task"
                   : !p  ? "NULL pool"
                         : "not a pool");
  if (p->magic_ != POOL_MAGIC || p->closing_)
    return wd_fail(self, WD_ECLOSED, "pool '%s' is %s", p->name_,
                   p->magic_ == POOL_MAGIC ? "closing" : "closed");
  int rc = wd_cancel_status(self);
  if (rc) return cancelled(self, p, rc);
  p->now_ = wd_now(self);
  if (is_down(p) && !p->ncreating_) {
    char msg[640];
    down_error(p, msg, sizeof msg);
    return wd_fail(self, p->last_code_, "%s", msg);
  }
  slot *s = NULL;
  if (p->nidle_) {
    /* The one idle longest: the likeliest to have gone bad. */
    s = wd__container_of(p->idle_.next_, slot, link);
    unidle(p, s);
    s->lent_at = p->now_;
    lend(p, s, self, __FILE__, __LINE__);
  } else if (p->nlent_ || p->nrecycling_) {
    return 0; /* items exist and are in use */
  } else {
    void *item;
    rc = wd_pool_acquire_(self, p, &item, __FILE__, __LINE__);
    if (rc) return rc;
    s = slot_of(item);
  }
  if (!p->f_->validate) {
    release_slot(self, p, s, WD_POOL_OK);
    return 0;
  }
  wd_cancel_scope vs;
  wd_cancel_opts o = {.timeout = p->validate_timeout_ == WD_TIME_NEVER
                                     ? 0
                                     : p->validate_timeout_,
                      .fail_what = p->what_validate_};
  rc = wd_cancel_scope_enter(self, &vs, &o);
  if (rc == 0) {
    wd_error_clear(self);
    rc = p->f_->validate(self, s->data, p->arg_);
    if (rc > 0) rc = 0;
    rc = wd_cancel_scope_exit(self, &vs, rc);
  }
  if (p->magic_ == POOL_MAGIC) {
    p->validations_++;
    if (rc) p->validation_errors_++;
  }
  if (rc == 0) s->checked_at = wd_now(self);
  /* A validation that failed or was cut short leaves the item in an
   * unknown state: it is destroyed. */
  char name[WD_POOL_NAME_MAX];
  memcpy(name, p->name_, sizeof name);
  wd_error *keep = rc ? wd_error_detach(self) : NULL;
  release_slot(self, p, s, rc ? WD_POOL_BROKEN : WD_POOL_OK);
  if (rc) {
    wd_error_restore(self, keep);
    if (wd_is_cancel(rc) && wd_cancel_status(self)) return rc;
    return wd_wrap(self, rc, "pool '%s': health: an item failed validation",
                   name);
  }
  return 0;
}

static void dist_of(const wd__hist *h, wd_pool_dist *d) {
  wd__hist_summary sm;
  wd__hist_summarize(h, &sm);
  d->count = sm.count;
  d->sum = h->sum;
  d->mean = sm.mean;
  d->min = sm.min;
  d->p50 = sm.p50;
  d->p90 = sm.p90;
  d->p99 = sm.p99;
  d->max = sm.max;
}

int wd_pool_stats_get(const wd_pool *p, wd_pool_stats *out) {
  if (!out) return wd_fail(NULL, WD_EINVAL, "wd_pool_stats_get: NULL out");
  memset(out, 0, sizeof *out);
  if (!POOL_OK(p))
    return wd_fail(NULL, WD_EINVAL, "wd_pool_stats_get: %s",
                   p ? "not an open pool" : "NULL pool");
  memcpy(out->name, p->name_, sizeof out->name);
  out->max_size = p->max_;
  out->min_idle = p->min_idle_;
  out->size = p->size_;
  out->idle = p->nidle_;
  out->in_use = p->nlent_;
  out->creating = p->ncreating_;
  out->waiting = p->nwaiting_;
  out->peak_in_use = p->peak_lent_;
  out->peak_waiting = p->peak_waiting_;
  out->acquires = p->acquires_;
  out->waited = p->waited_;
  out->timeouts = p->timeouts_;
  out->cancelled = p->cancelled_;
  out->failed_fast = p->failed_fast_;
  out->refused = p->refused_;
  out->releases = p->releases_;
  out->broken = p->broken_;
  out->creates = p->creates_;
  out->create_errors = p->create_errors_;
  out->destroys = p->destroys_;
  out->destroy_errors = p->destroy_errors_;
  out->validations = p->validations_;
  out->validation_errors = p->validation_errors_;
  out->resets = p->resets_;
  out->reset_errors = p->reset_errors_;
  out->expired = p->expired_;
  out->idle_evicted = p->idle_evicted_;
  out->worn_out = p->worn_out_;
  out->leaks = p->leaks_;
  out->closing = p->closing_;
  out->down = is_down(p);
  out->create_failures = p->failures_;
  out->last_create_code = p->last_code_;
  out->last_create_at = p->last_at_;
  memcpy(out->last_create_error, p->last_msg_, sizeof out->last_create_error);
  dist_of(&p->wait_, &out->wait_time);
  dist_of(&p->hold_, &out->hold_time);
  return 0;
}

const char *wd_pool_name(const wd_pool *p) {
  return p && (p->magic_ == POOL_MAGIC || p->magic_ == ZOMBIE_MAGIC) ? p->name_
                                                                     : "";
}
