/* Rate limiter: the generic cell rate algorithm (GCRA).
 *
 * GCRA keeps one time, the theoretical arrival time (TAT) of the next
 * permit.  Taking n permits moves it to max(TAT, now) + n * T, where T is
 * the emission interval period / rate, and is allowed when the new TAT is
 * no further ahead of now than the burst tolerance burst * T.  That is a
 * token bucket of `burst` tokens refilled every T, without a refill loop.
 *
 * T is rarely a whole number of nanoseconds (1 s / 7000 = 142857.14 ns),
 * and rounding it would drift: rounded down to 142857 ns, a limiter of
 * 7000/s hands out one permit too many every 143 s; rounded up, one too
 * few.  So every time here is a pair (ns, frac) meaning ns + frac / rate,
 * with frac in [0, rate): exact rational arithmetic with one division per
 * operation (none when rate divides period), and the limit stays exact for
 * ever.
 *
 * Waiters queue in arrival order.  Only the head of the queue waits for
 * time: it computes when its permits will be available and parks on its own
 * wait record inside a cancel scope whose deadline is that time (the
 * public way to park with a timer, and the wait shows in wd_dump as
 * "ratelimit 'name'").  The others park without a timer until the head
 * leaves and wakes the next.  While anyone waits, new acquires queue behind
 * and tries fail, so a large acquire at the head is never overtaken.  A
 * cancelled waiter has taken nothing: it leaves the queue, and if it was
 * the head, the next waiter becomes head and recomputes its time.  Every
 * waiter leaves the queue itself, when it runs, never in on_cancel: it
 * still reads and writes the limiter then (statistics, its message), and
 * deinit refuses while the queue is not empty.
 */
#include <stdio.h>
#include <string.h>

#include "warden.h"

#include "../util/list.h"

#define RL_MAGIC 0x524c494du /* "RLIM" */

/* The burst window is capped so that now + 2 * window never overflows
 * int64 nanoseconds on a monotonic clock younger than 36 years. */
#define RL_WINDOW_MAX ((int64_t)1 << 60)

/* A time ns + frac / rate, frac in [0, rate). */
typedef struct tp {
  int64_t ns;
  uint64_t frac;
} tp;

static inline bool tp_le(tp a, tp b) {
  return a.ns < b.ns || (a.ns == b.ns && a.frac <= b.frac);
}

static inline tp tp_add(const wd_ratelimit *rl, tp a, int64_t ns,
                        uint64_t frac) {
  a.ns += ns;
  a.frac += frac;
  if (a.frac >= rl->rate_) {
    a.frac -= rl->rate_;
    a.ns++;
  }
  return a;
}

/* a + n * T.  n <= burst, so n * step_frac_ < 2^64 (both below 2^32). */
static inline tp tp_add_steps(const wd_ratelimit *rl, tp a, uint32_t n) {
  a.ns += (int64_t)n * rl->step_ns_;
  if (rl->step_frac_) {
    uint64_t f = a.frac + (uint64_t)n * rl->step_frac_;
    a.ns += (int64_t)(f / rl->rate_);
    a.frac = f % rl->rate_;
  }
  return a;
}

/* max(TAT, now), where now is a reading of a whole-ns clock.  A TAT that
 * fell inside the last nanosecond, strictly between now - 1 and now, is
 * kept: a waiter due at 1 s / 7 can only wake at the next whole ns, and if
 * that fraction of a ns were lost at every grant, a limiter kept busy by
 * acquires of its whole burst would fall behind its rate by up to 1 ns per
 * grant.  Keeping it means a grant is booked at most that fraction of a ns
 * before it happens, and the long-run count stays exactly rate * time +
 * burst. */
static inline tp base_at(const wd_ratelimit *rl, wd_time now) {
  tp t = {rl->tat_ns_, rl->tat_frac_};
  if (t.ns >= now || (t.ns == now - 1 && t.frac)) return t;
  return (tp){now, 0};
}

/* The first whole nanosecond at which n permits can be taken. */
static wd_time ready_at(const wd_ratelimit *rl, uint32_t n, wd_time now) {
  tp base = base_at(rl, now);
  tp t = tp_add_steps(rl, base, n);
  /* t - tolerance, rounded up. */
  int64_t ns = t.ns - rl->tol_ns_;
  if (t.frac < rl->tol_frac_) {
    ns--;
    t.frac += rl->rate_;
  }
  return ns + (t.frac - rl->tol_frac_ > 0);
}

/* Take n permits at now if GCRA allows it. */
static inline bool take(wd_ratelimit *rl, uint32_t n, wd_time now) {
  tp base = base_at(rl, now);
  tp t = tp_add_steps(rl, base, n);
  tp limit = tp_add(rl, (tp){now, 0}, rl->tol_ns_, rl->tol_frac_);
  if (!tp_le(t, limit)) return false;
  rl->tat_ns_ = t.ns;
  rl->tat_frac_ = t.frac;
  rl->granted_ += n;
  rl->acquired_++;
  return true;
}

static int check_args(wd_task *self, wd_ratelimit *rl, uint32_t n,
                      const char *op) {
  if (!self || !rl)
    return wd_fail(self, WD_EINVAL, "ratelimit %s: NULL %s", op,
                   !self ? "task" : "limiter");
  if (rl->magic_ != RL_MAGIC)
    return wd_fail(self, WD_EINVAL, "ratelimit %s: limiter not initialised",
                   op);
  if (n == 0)
    return wd_fail(self, WD_EINVAL, "ratelimit '%s': %s of 0 permits",
                   rl->name_, op);
  return wd_fail(self, WD_EINVAL,
                 "ratelimit '%s': %s of %u permits exceeds the burst of %u "
                 "(it could never be granted)",
                 rl->name_, op, n, rl->burst_);
}

int wd_ratelimit_init(wd_ratelimit *rl, uint32_t rate, wd_time period,
                      const wd_ratelimit_opts *opts) {
  wd_ratelimit_opts o = opts ? *opts : (wd_ratelimit_opts){0};
  const char *name = o.name ? o.name : "ratelimit";
  if (!rl) return wd_fail(NULL, WD_EINVAL, "ratelimit '%s': NULL", name);
  memset(rl, 0, sizeof *rl);
  if (rate == 0 || period <= 0)
    return wd_fail(NULL, WD_EINVAL,
                   "ratelimit '%s': rate %u per %lld ns: both must be "
                   "positive",
                   name, rate, (long long)period);
  uint32_t burst = o.burst ? o.burst : 1;
  int64_t step_ns = period / rate;
  uint64_t step_frac = (uint64_t)(period % rate);
  /* burst * T <= 2^60, checked without overflowing. */
  if (step_ns > RL_WINDOW_MAX / burst - 1)
    return wd_fail(NULL, WD_EINVAL,
                   "ratelimit '%s': a burst of %u at %u per %lld ns spans "
                   "more than 2^60 ns",
                   name, burst, rate, (long long)period);
  uint64_t tol_f = (uint64_t)burst * step_frac;
  rl->tol_ns_ = (int64_t)burst * step_ns + (int64_t)(tol_f / rate);
  rl->tol_frac_ = tol_f % rate;
  rl->step_ns_ = step_ns;
  rl->step_frac_ = step_frac;
  rl->rate_ = rate;
  rl->burst_ = burst;
  rl->period_ = period;
  /* TAT 0: the whole burst is available at the first acquire (the clock
   * starts at 0 on the virtual clock and is positive on the real one). */
  wd__list_init(&rl->waiters_);
  snprintf(rl->name_, sizeof rl->name_, "%s", name);
  rl->magic_ = RL_MAGIC;
  return 0;
}

int wd_ratelimit_deinit(wd_ratelimit *rl) {
  if (!rl) return 0;
  if (rl->magic_ == RL_MAGIC && !wd__list_empty(&rl->waiters_))
    return wd_fail(NULL, WD_EBUSY,
                   "ratelimit '%s': deinit while %zu task%s wait on it",
                   rl->name_, rl->nwaiting_, rl->nwaiting_ == 1 ? "" : "s");
  rl->magic_ = 0;
  return 0;
}

/* ---- waiting -------------------------------------------------------------
 */

typedef struct waiter {
  wd_wait w;
  wd_link link;
  wd_ratelimit *rl;
  bool queued;
} waiter;

static inline waiter *front(wd_ratelimit *rl) {
  return wd__list_empty(&rl->waiters_)
             ? NULL
             : wd__container_of(rl->waiters_.next_, waiter, link);
}

static void unqueue(waiter *me) {
  wd__list_unlink(&me->link);
  me->queued = false;
  me->rl->nwaiting_--;
}

/* A parked waiter is cancelled: it stays queued until its task runs and
 * leaves itself.  The head's wait may have been cut short by its own timer
 * scope (then it is still the head), and until it has decided, no newcomer
 * may slip in ahead of the queue.  One behind the head is not served while
 * it is queued (only the head takes permits, and the head that leaves
 * wakes the next, which then leaves in turn); keeping it queued until it
 * has returned keeps deinit from freeing the limiter under it. */
static bool on_cancel(wd_wait *w) {
  (void)w;
  return true;
}

/* The message of an acquire stopped by a cancellation after `waited`. */
static int not_acquired(wd_task *self, const wd_ratelimit *rl, uint32_t n,
                        int rc, wd_time waited) {
  return wd_fail(self, rc,
                 "ratelimit '%s': %u permit%s not acquired after %.3f s "
                 "(%zu other%s waiting)",
                 rl->name_, n, n == 1 ? "" : "s",
                 (double)waited / (double)WD_SEC, rl->nwaiting_,
                 rl->nwaiting_ == 1 ? "" : "s");
}

static int wait_slow(wd_task *self, wd_ratelimit *rl, uint32_t n) {
  waiter me = {
      .w = {.what = "ratelimit", .name = rl->name_, .on_cancel = on_cancel},
      .rl = rl,
      .queued = true};
  wd__list_push_back(&rl->waiters_, &me.link);
  if (++rl->nwaiting_ > rl->peak_) rl->peak_ = rl->nwaiting_;
  wd_time t0 = wd_now(self);
  int rc;
  for (;;) {
    rc = wd_cancel_status(self);
    if (rc) break;
    if (front(rl) != &me) {
      /* Woken with 0 when we become the head. */
      rc = wd_park(self, &me.w);
      if (rc) break;
      continue;
    }
    wd_time now = wd_now(self);
    if (take(rl, n, now)) break;
    wd_cancel_scope s;
    wd_cancel_opts so = {.deadline = ready_at(rl, n, now)};
    rc = wd_cancel_scope_enter(self, &s, &so);
    if (rc) break;
    rc = wd_park(self, &me.w);
    /* Our own deadline is swallowed (0): loop and take.  Anything else is
     * an outer cancellation. */
    rc = wd_cancel_scope_exit(self, &s, rc);
    if (rc) break;
  }
  bool was_head = me.queued && front(rl) == &me;
  if (me.queued) unqueue(&me);
  if (was_head) {
    waiter *next = front(rl);
    if (next) wd_wake(&next->w, 0);
  }
  wd_time waited = wd_now(self) - t0;
  if (rc == 0) {
    rl->waited_++;
    rl->wait_total_ += waited;
    if (waited > rl->wait_max_) rl->wait_max_ = waited;
    return 0;
  }
  if (wd_is_cancel(rc)) {
    rl->cancelled_++;
    return not_acquired(self, rl, n, rc, waited);
  }
  return rc; /* WD_ENOMEM from the scope, with its message */
}

int wd_ratelimit_acquire(wd_task *self, wd_ratelimit *rl, uint32_t n) {
  if (!self || !rl || rl->magic_ != RL_MAGIC || n == 0 || n > rl->burst_)
    return check_args(self, rl, n, "acquire");
  int rc = wd_cancel_status(self);
  if (rc) return not_acquired(self, rl, n, rc, 0);
  if (wd__list_empty(&rl->waiters_) && take(rl, n, wd_now(self))) return 0;
  return wait_slow(self, rl, n);
}

int wd_ratelimit_acquire_try(wd_task *self, wd_ratelimit *rl, uint32_t n) {
  if (!self || !rl || rl->magic_ != RL_MAGIC || n == 0 || n > rl->burst_)
    return check_args(self, rl, n, "try");
  if (wd__list_empty(&rl->waiters_) && take(rl, n, wd_now(self))) return 0;
  rl->rejected_++;
  return WD_EAGAIN;
}

int wd_ratelimit_call(wd_task *self, wd_ratelimit *rl, wd_task_fn fn,
                      void *arg) {
  if (!fn)
    return wd_fail(self, WD_EINVAL, "ratelimit '%s': call of a NULL function",
                   rl ? rl->name_ : "?");
  int rc = wd_ratelimit_acquire(self, rl, 1);
  return rc ? rc : fn(self, arg);
}

/* ---- statistics ----------------------------------------------------------
 */

/* floor((now + tolerance - max(TAT, now)) / T), capped at burst: how many
 * permits fit under the limit now. */
static uint32_t fit_now(const wd_ratelimit *rl, wd_time now) {
  tp base = base_at(rl, now);
  tp lim = tp_add(rl, (tp){now, 0}, rl->tol_ns_, rl->tol_frac_);
  if (!tp_le(base, lim)) return 0;
  int64_t dns = lim.ns - base.ns;
  uint64_t dfrac;
  if (lim.frac >= base.frac) {
    dfrac = lim.frac - base.frac;
  } else {
    dfrac = lim.frac + rl->rate_ - base.frac;
    dns--;
  }
  /* (dns + dfrac / rate) / (period / rate) = (dns * rate + dfrac) / period;
   * dns <= 2^60 and rate < 2^32, so the product needs 128 bits. */
#ifdef __SIZEOF_INT128__
  unsigned __int128 num = (unsigned __int128)dns * rl->rate_ + dfrac;
  unsigned __int128 k = num / (unsigned __int128)rl->period_;
#else
  long double k =
      ((long double)dns * rl->rate_ + dfrac) / (long double)rl->period_;
#endif
  return k > rl->burst_ ? rl->burst_ : (uint32_t)k;
}

void wd_ratelimit_stats_get(const wd_ratelimit *rl, wd_ratelimit_stats *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (!rl || rl->magic_ != RL_MAGIC) return;
  wd_time now = wd_now(NULL);
  out->granted = rl->granted_;
  out->acquired = rl->acquired_;
  out->waited = rl->waited_;
  out->rejected = rl->rejected_;
  out->cancelled = rl->cancelled_;
  out->wait_total = rl->wait_total_;
  out->wait_max = rl->wait_max_;
  out->waiting = rl->nwaiting_;
  out->waiting_peak = rl->peak_;
  uint32_t fit = fit_now(rl, now);
  out->available = wd__list_empty(&rl->waiters_) ? fit : 0;
  out->next_permit = fit ? 0 : ready_at(rl, 1, now) - now;
}
