/* Retry with back-off, jitter and a shared retry budget.
 *
 * A wd_retry is a policy, not a call: it holds the options, a jitter
 * generator and counters, and any number of tasks may run calls under it
 * at once.  The state of one call (attempt number, previous sleep, start
 * time) lives on the caller's stack in wd_retry_call().
 *
 * The loop is written so that the happy path costs a cancel check, one
 * error clear and the call: the clock is read at entry only when something
 * needs it (max_elapsed, a budget), and everything else happens after a
 * failure.  After a failed attempt the checks run from the cheapest and
 * most final to the one with a side effect: the caller's cancellation (then
 * nothing more happens: "cancelled" must stay cancelled), the predicate,
 * max_attempts, then the back-off is drawn and checked against max_elapsed
 * and the caller's deadline, and only then is a retry withdrawn from the
 * budget - a retry that is not going to happen must not spend it.
 *
 * The generator is splitmix64: one add and three multiply-xorshifts, good
 * enough for jitter and seedable for tests.
 *
 * The budget counts calls and retries in WD_RETRY_BUDGET_SLOTS time slots,
 * a ring that is advanced lazily to the current slot whenever it is used,
 * so it needs no timer and no allocation.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "warden.h"

#define RETRY_MAGIC 0x52545259u  /* "RTRY" */
#define BUDGET_MAGIC 0x42444754u /* "BDGT" */

/* ---- retry budget ---------------------------------------------------------
 */

int wd_retry_budget_init(wd_retry_budget *b, const wd_retry_budget_opts *opts) {
  wd_retry_budget_opts o = opts ? *opts : (wd_retry_budget_opts){0};
  const char *name = o.name ? o.name : "retry budget";
  if (!b) return wd_fail(NULL, WD_EINVAL, "retry budget '%s': NULL", name);
  memset(b, 0, sizeof *b);
  double ratio = o.ratio == 0 ? 0.2 : o.ratio;
  wd_time window = o.window == 0 ? 10 * WD_SEC : o.window;
  if (!(ratio > 0 && ratio <= 1000))
    return wd_fail(NULL, WD_EINVAL,
                   "retry budget '%s': ratio %g is not in (0, 1000]", name,
                   ratio);
  if (window < WD_RETRY_BUDGET_SLOTS)
    return wd_fail(NULL, WD_EINVAL,
                   "retry budget '%s': window of %lld ns is shorter than "
                   "its %d slots",
                   name, (long long)window, WD_RETRY_BUDGET_SLOTS);
  b->width_ = window / WD_RETRY_BUDGET_SLOTS;
  b->ppm_ = (uint64_t)(ratio * 1e6 + 0.5);
  b->min_ = o.min_retries == 0                        ? 10
            : o.min_retries == WD_RETRY_BUDGET_NO_MIN ? 0
                                                      : o.min_retries;
  b->head_ = 0;
  snprintf(b->name_, sizeof b->name_, "%s", name);
  b->magic_ = BUDGET_MAGIC;
  return 0;
}

/* Drop the slots that fell out of the window at now. */
static void budget_advance(wd_retry_budget *b, wd_time now) {
  int64_t step = now / b->width_;
  if (step <= b->head_) return;
  if (step - b->head_ >= WD_RETRY_BUDGET_SLOTS) {
    memset(b->calls_, 0, sizeof b->calls_);
    memset(b->retries_, 0, sizeof b->retries_);
    b->wcalls_ = b->wretries_ = 0;
  } else {
    for (int64_t k = b->head_ + 1; k <= step; k++) {
      int i = (int)(k % WD_RETRY_BUDGET_SLOTS);
      b->wcalls_ -= b->calls_[i];
      b->wretries_ -= b->retries_[i];
      b->calls_[i] = b->retries_[i] = 0;
    }
  }
  b->head_ = step;
}

static void budget_deposit(wd_retry_budget *b, wd_time now) {
  budget_advance(b, now);
  b->calls_[b->head_ % WD_RETRY_BUDGET_SLOTS]++;
  b->wcalls_++;
  b->calls_total_++;
}

static bool budget_withdraw(wd_retry_budget *b, wd_time now) {
  budget_advance(b, now);
  /* retries < min + ratio * calls, in millionths. */
  if (b->wretries_ * 1000000 >=
      b->min_ * (uint64_t)1000000 + b->ppm_ * b->wcalls_) {
    b->denied_++;
    return false;
  }
  b->retries_[b->head_ % WD_RETRY_BUDGET_SLOTS]++;
  b->wretries_++;
  b->retries_total_++;
  return true;
}

void wd_retry_budget_stats_get(const wd_retry_budget *b,
                               wd_retry_budget_stats *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (!b || b->magic_ != BUDGET_MAGIC) return;
  /* Age a copy, so that a reader does not change what it reads. */
  wd_retry_budget c = *b;
  budget_advance(&c, wd_now(NULL));
  out->window_calls = c.wcalls_;
  out->window_retries = c.wretries_;
  out->calls = c.calls_total_;
  out->retries = c.retries_total_;
  out->denied = c.denied_;
}

/* ---- jitter ---------------------------------------------------------------
 */

static inline uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

/* Uniform in [lo, hi] (lo <= hi, both >= 0).  The modulo's bias is below
 * (hi - lo) / 2^64: nothing for delays in nanoseconds. */
static wd_time uniform(wd_retry *r, wd_time lo, wd_time hi) {
  uint64_t span = (uint64_t)(hi - lo) + 1;
  uint64_t x = splitmix64(&r->rng_);
  return lo + (wd_time)(span ? x % span : x);
}

static wd_time mul_capped(wd_time d, double m, wd_time cap) {
  double x = (double)d * m;
  return x >= (double)cap ? cap : (wd_time)x;
}

/* The sleep before retry k, given the un-jittered delay dk and the
 * previous sleep (for decorrelated jitter). */
static wd_time jittered(wd_retry *r, wd_time dk, wd_time prev) {
  switch (r->o_.jitter) {
  case WD_JITTER_NONE:
    return dk;
  case WD_JITTER_EQUAL:
    return dk / 2 + uniform(r, 0, dk - dk / 2);
  case WD_JITTER_DECORRELATED: {
    /* Capped after the draw, as the header and AWS's formula say: capping
     * the range instead would spread the sleeps at the cap over [base,
     * max_delay] and retry about twice as often there. */
    wd_time hi = mul_capped(prev, r->o_.multiplier, WD_TIME_NEVER);
    wd_time lo = r->o_.base_delay;
    wd_time d = hi <= lo ? lo : uniform(r, lo, hi);
    return d < r->o_.max_delay ? d : r->o_.max_delay;
  }
  case WD_JITTER_FULL:
  default:
    return uniform(r, 0, dk);
  }
}

/* ---- retry ----------------------------------------------------------------
 */

static bool default_retryable(int rc, const wd_error *err, void *arg) {
  return rc != WD_ECANCELED && rc != WD_EINVAL;
}

int wd_retry_init(wd_retry *r, const wd_retry_opts *opts) {
  wd_retry_opts o = opts ? *opts : (wd_retry_opts){0};
  const char *name = o.name ? o.name : "retry";
  if (!r) return wd_fail(NULL, WD_EINVAL, "retry '%s': NULL", name);
  memset(r, 0, sizeof *r);
  if (o.max_attempts == 0) o.max_attempts = 3;
  if (o.base_delay == 0) o.base_delay = 100 * WD_MSEC;
  if (o.max_delay == 0)
    o.max_delay = o.base_delay > 10 * WD_SEC ? o.base_delay : 10 * WD_SEC;
  if (o.multiplier == 0) o.multiplier = 2.0;
  if (o.base_delay < 0 || o.max_delay < 0 || o.max_elapsed < 0)
    return wd_fail(NULL, WD_EINVAL, "retry '%s': negative %s", name,
                   o.base_delay < 0  ? "base_delay"
                   : o.max_delay < 0 ? "max_delay"
                                     : "max_elapsed");
  if (o.max_delay < o.base_delay)
    return wd_fail(NULL, WD_EINVAL,
                   "retry '%s': max_delay %.3f s is below base_delay %.3f s",
                   name, (double)o.max_delay / WD_SEC,
                   (double)o.base_delay / WD_SEC);
  if (!(o.multiplier >= 1.0 && o.multiplier <= 1e6))
    return wd_fail(NULL, WD_EINVAL,
                   "retry '%s': multiplier %g is not in [1, 1e6]", name,
                   o.multiplier);
  if ((unsigned)o.jitter > WD_JITTER_DECORRELATED)
    return wd_fail(NULL, WD_EINVAL, "retry '%s': unknown jitter mode %d", name,
                   (int)o.jitter);
  if (o.budget && o.budget->magic_ != BUDGET_MAGIC)
    return wd_fail(NULL, WD_EINVAL, "retry '%s': its budget is not initialised",
                   name);
  if (!o.retryable) o.retryable = default_retryable;
  if (o.seed == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    o.seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
             (uint64_t)(uintptr_t)r;
  }
  r->rng_ = o.seed;
  snprintf(r->name_, sizeof r->name_, "%s", name);
  o.name = r->name_;
  r->o_ = o;
  r->magic_ = RETRY_MAGIC;
  return 0;
}

/* The attempt's detailed error if it recorded one for rc, else NULL. */
static const wd_error *own_error(wd_task *self, int rc) {
  const wd_error *e = wd_task_error(self);
  return e && e->code == rc ? e : NULL;
}

static double secs(wd_time t) { return (double)t / (double)WD_SEC; }

/* Give up after `attempts` with the last attempt's code rc: make sure that
 * attempt has a detailed error, and wrap it in one saying why. */
static int give_up(wd_task *self, wd_retry *r, int rc, uint32_t attempts,
                   wd_time slept, const char *why) {
  if (!own_error(self, rc))
    wd_fail(self, rc, "attempt %u: %s", attempts, wd_strerror(rc));
  return wd_wrap(self, rc,
                 "retry '%s': gave up after %u attempt%s (%s); "
                 "%.3f s in back-off",
                 r->name_, attempts, attempts == 1 ? "" : "s", why,
                 secs(slept));
}

/* The slow path: the first attempt failed with rc. */
static int retry_after_failure(wd_task *self, wd_retry *r, wd_task_fn fn,
                               void *arg, int rc, wd_time start) {
  const wd_retry_opts *o = &r->o_;
  wd_time dk = o->base_delay;   /* un-jittered delay of the next retry */
  wd_time prev = o->base_delay; /* previous sleep, for decorrelated */
  /* dk unrounded: rounding each step down would stall a small delay (1 ns
   * times 1.5 stays 1 ns for ever) instead of following the formula. */
  double dkf = (double)o->base_delay;
  wd_time slept = 0;
  char why[128];
  for (uint32_t attempt = 1;; attempt++) {
    /* rc < 0: attempt number `attempt` failed. */
    if (wd_cancel_status(self)) {
      r->st_.cancelled++;
      return rc;
    }
    const wd_error *err = own_error(self, rc);
    if (!o->retryable(rc, err, o->arg)) {
      r->st_.not_retryable++;
      if (attempt == 1) return rc;
      return give_up(self, r, rc, attempt, slept, "not retryable");
    }
    if (attempt >= o->max_attempts) {
      r->st_.gave_up++;
      snprintf(why, sizeof why, "max_attempts %u", o->max_attempts);
      return give_up(self, r, rc, attempt, slept, why);
    }
    wd_time delay = jittered(r, dk, prev);
    wd_time now = wd_now(self);
    wd_time wake = delay > WD_TIME_NEVER - now ? WD_TIME_NEVER : now + delay;
    if (o->max_elapsed && wake - start > o->max_elapsed) {
      r->st_.gave_up++;
      r->st_.deadline++;
      snprintf(why, sizeof why,
               "a back-off of %.3f s would start attempt %u past "
               "max_elapsed %.3f s",
               secs(delay), attempt + 1, secs(o->max_elapsed));
      return give_up(self, r, rc, attempt, slept, why);
    }
    wd_time deadline = wd_task_deadline(self);
    if (deadline != WD_TIME_NEVER && wake >= deadline) {
      r->st_.gave_up++;
      r->st_.deadline++;
      snprintf(why, sizeof why,
               "a back-off of %.3f s would end past the deadline, "
               "%.3f s away",
               secs(delay), secs(deadline - now));
      return give_up(self, r, rc, attempt, slept, why);
    }
    if (o->budget && !budget_withdraw(o->budget, now)) {
      r->st_.gave_up++;
      r->st_.budget_denied++;
      snprintf(why, sizeof why,
               "retry budget '%s' exhausted: %llu retries for %llu calls "
               "in its window",
               o->budget->name_, (unsigned long long)o->budget->wretries_,
               (unsigned long long)o->budget->wcalls_);
      return give_up(self, r, rc, attempt, slept, why);
    }
    r->st_.retries++;
    if (o->on_retry) {
      wd_retry_info info = {r->name_, attempt, rc, err, delay};
      o->on_retry(self, &info, o->arg);
    }
    int src = wd_sleep_until(self, wake);
    slept += wd_now(self) - now;
    if (src) {
      r->st_.cancelled++;
      if (!own_error(self, rc))
        wd_fail(self, rc, "attempt %u: %s", attempt, wd_strerror(rc));
      return wd_wrap(self, src,
                     "retry '%s': cancelled in the back-off after %u "
                     "attempt%s",
                     r->name_, attempt, attempt == 1 ? "" : "s");
    }
    prev = delay;
    dkf *= o->multiplier;
    if (dkf >= (double)o->max_delay) {
      dkf = (double)o->max_delay;
      dk = o->max_delay;
    } else {
      dk = (wd_time)dkf;
    }
    wd_error_clear(self);
    r->st_.attempts++;
    rc = fn(self, arg);
    if (rc >= 0) {
      r->st_.successes++;
      return rc;
    }
  }
}

int wd_retry_call(wd_task *self, wd_retry *r, wd_task_fn fn, void *arg) {
  if (!self || !r || !fn || r->magic_ != RETRY_MAGIC)
    return wd_fail(self, WD_EINVAL, "retry call: %s",
                   !self ? "NULL task"
                   : !r  ? "NULL retry"
                   : !fn ? "NULL function"
                         : "retry not initialised");
  int rc = wd_cancel_status(self);
  if (rc) return rc;
  r->st_.calls++;
  wd_time start = 0;
  if (r->o_.max_elapsed || r->o_.budget) {
    start = wd_now(self);
    if (r->o_.budget) budget_deposit(r->o_.budget, start);
  }
  /* Clearing costs more than looking, and there is usually nothing. */
  if (wd_task_error(self)) wd_error_clear(self);
  r->st_.attempts++;
  rc = fn(self, arg);
  if (rc >= 0) {
    r->st_.successes++;
    return rc;
  }
  return retry_after_failure(self, r, fn, arg, rc, start);
}

void wd_retry_stats_get(const wd_retry *r, wd_retry_stats *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (r && r->magic_ == RETRY_MAGIC) *out = r->st_;
}
