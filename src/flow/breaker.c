/* Circuit breaker.
 *
 * Three states (closed, open, half-open) and a sliding window of outcomes.
 * The window is either the last N calls - a ring of N bits, 1 for a
 * failure, with running totals so that adding an outcome costs O(1) - or
 * the calls of the last T ns, split in B buckets of T / B, each holding
 * its calls and failures; buckets are emptied lazily as time moves past
 * them, so the breaker needs no timer.  For the same reason the move from
 * open to half-open happens when the breaker is next asked, once
 * open_duration has passed.
 *
 * Every state change bumps a generation number, and each permit carries
 * the generation it was issued in.  An outcome that arrives after the
 * state changed under it (a call that began while closed and ends after
 * the breaker opened, or a probe of an earlier half-open spell) describes
 * a state that is gone: it is counted in the totals but does not move the
 * state machine.
 *
 * The closed path is what every call pays, so it reads no clock for a
 * count window, allocates nothing and formats nothing: begin is a state
 * test and a counter, end a bit in the ring.  Rejections are the rare,
 * slow path: they format a message with the time until the next probe.
 */
#include <stdio.h>
#include <string.h>

#include "warden.h"

#include "../util/mem.h"

#define BREAKER_MAGIC 0x42524b52u /* "BRKR" */
#define MAX_BUCKETS 1000

const char *wd_breaker_state_name(wd_breaker_state s) {
  switch (s) {
  case WD_BREAKER_CLOSED:
    return "closed";
  case WD_BREAKER_OPEN:
    return "open";
  case WD_BREAKER_HALF_OPEN:
    return "half-open";
  }
  return "?";
}

static bool default_is_failure(int rc, const wd_error *err, void *arg) {
  return rc < 0;
}

static double secs(wd_time t) { return (double)t / (double)WD_SEC; }

int wd_breaker_init(wd_breaker *b, const wd_breaker_opts *opts) {
  wd_breaker_opts o = opts ? *opts : (wd_breaker_opts){0};
  const char *name = o.name ? o.name : "breaker";
  if (!b) return wd_fail(NULL, WD_EINVAL, "breaker '%s': NULL", name);
  memset(b, 0, sizeof *b);
  if (o.window_time < 0 || o.open_duration < 0)
    return wd_fail(NULL, WD_EINVAL, "breaker '%s': negative %s", name,
                   o.window_time < 0 ? "window_time" : "open_duration");
  if (o.window_time) {
    if (o.buckets == 0) o.buckets = 10;
    if (o.buckets > MAX_BUCKETS || o.window_time / o.buckets < 1)
      return wd_fail(NULL, WD_EINVAL,
                     "breaker '%s': %u buckets for a window of %lld ns "
                     "(at most %d, each at least 1 ns)",
                     name, o.buckets, (long long)o.window_time, MAX_BUCKETS);
    if (o.min_calls == 0) o.min_calls = 10;
  } else {
    if (o.window_size == 0) o.window_size = 100;
    if (o.min_calls == 0) o.min_calls = o.window_size < 10 ? o.window_size : 10;
    if (o.min_calls > o.window_size)
      return wd_fail(NULL, WD_EINVAL,
                     "breaker '%s': min_calls %u exceeds the window of %u "
                     "calls (it could never open)",
                     name, o.min_calls, o.window_size);
  }
  if (o.failure_ratio == 0) o.failure_ratio = 0.5;
  if (!(o.failure_ratio > 0 && o.failure_ratio <= 1))
    return wd_fail(NULL, WD_EINVAL,
                   "breaker '%s': failure_ratio %g is not in (0, 1]", name,
                   o.failure_ratio);
  if (o.open_duration == 0) o.open_duration = 30 * WD_SEC;
  if (o.half_open_probes == 0) o.half_open_probes = 1;
  if (!o.is_failure) o.is_failure = default_is_failure;
  if (o.window_time) {
    b->slots_ = wd__calloc(2 * (size_t)o.buckets, sizeof *b->slots_);
    if (!b->slots_)
      return wd_fail(NULL, WD_ENOMEM, "breaker '%s': no memory for its window",
                     name);
    b->size_ = o.buckets;
    b->width_ = o.window_time / o.buckets;
  } else {
    b->ring_ = wd__calloc(((size_t)o.window_size + 63) / 64, sizeof *b->ring_);
    if (!b->ring_)
      return wd_fail(NULL, WD_ENOMEM, "breaker '%s': no memory for its window",
                     name);
    b->size_ = o.window_size;
  }
  b->ppm_ = (uint64_t)(o.failure_ratio * 1e6 + 0.5);
  snprintf(b->name_, sizeof b->name_, "%s", name);
  o.name = b->name_;
  b->o_ = o;
  b->state_ = WD_BREAKER_CLOSED;
  b->magic_ = BREAKER_MAGIC;
  return 0;
}

void wd_breaker_deinit(wd_breaker *b) {
  if (!b) return;
  wd__free(b->ring_);
  wd__free(b->slots_);
  b->ring_ = NULL;
  b->slots_ = NULL;
  b->magic_ = 0;
}

/* ---- the window -----------------------------------------------------------
 */

static void window_clear(wd_breaker *b) {
  if (b->ring_)
    memset(b->ring_, 0, ((size_t)b->size_ + 63) / 64 * sizeof *b->ring_);
  else
    memset(b->slots_, 0, 2 * (size_t)b->size_ * sizeof *b->slots_);
  b->pos_ = b->filled_ = 0;
  b->wcalls_ = b->wfails_ = 0;
}

/* Empty the buckets a time window left behind at now. */
static void window_advance(wd_breaker *b, wd_time now) {
  int64_t step = now / b->width_;
  if (step <= b->head_) return;
  if (step - b->head_ >= b->size_) {
    memset(b->slots_, 0, 2 * (size_t)b->size_ * sizeof *b->slots_);
    b->wcalls_ = b->wfails_ = 0;
  } else {
    for (int64_t k = b->head_ + 1; k <= step; k++) {
      uint32_t *s = &b->slots_[2 * (k % b->size_)];
      b->wcalls_ -= s[0];
      b->wfails_ -= s[1];
      s[0] = s[1] = 0;
    }
  }
  b->head_ = step;
}

/* Add an outcome to a count window.  Inlined in wd_breaker_call(). */
static inline void ring_add(wd_breaker *b, bool failed) {
  uint64_t *w = &b->ring_[b->pos_ / 64];
  uint64_t bit = (uint64_t)1 << (b->pos_ % 64);
  if (b->filled_ == b->size_) {
    b->wcalls_--;
    if (*w & bit) b->wfails_--;
  } else {
    b->filled_++;
  }
  if (failed)
    *w |= bit;
  else
    *w &= ~bit;
  if (++b->pos_ == b->size_) b->pos_ = 0;
  b->wcalls_++;
  b->wfails_ += failed;
}

static void window_add(wd_breaker *b, bool failed, wd_time now) {
  if (b->ring_) {
    ring_add(b, failed);
    return;
  } else {
    window_advance(b, now);
    uint32_t *s = &b->slots_[2 * (b->head_ % b->size_)];
    s[0]++;
    s[1] += failed;
    b->wcalls_++;
    b->wfails_ += failed;
  }
}

/* The window's counts at now, without changing it. */
static void window_peek(const wd_breaker *b, wd_time now, uint32_t *calls,
                        uint32_t *fails) {
  *calls = b->wcalls_;
  *fails = b->wfails_;
  if (b->ring_) return;
  int64_t step = now / b->width_;
  if (step <= b->head_) return;
  if (step - b->head_ >= b->size_) {
    *calls = *fails = 0;
    return;
  }
  for (int64_t k = b->head_ + 1; k <= step; k++) {
    const uint32_t *s = &b->slots_[2 * (k % b->size_)];
    *calls -= s[0];
    *fails -= s[1];
  }
}

static bool window_trips(const wd_breaker *b) {
  return b->wcalls_ >= b->o_.min_calls &&
         (uint64_t)b->wfails_ * 1000000 >= b->ppm_ * b->wcalls_;
}

/* ---- the state machine ----------------------------------------------------
 */

static void move_to(wd_task *self, wd_breaker *b, wd_breaker_state to,
                    wd_time now) {
  wd_breaker_state from = b->state_;
  b->state_ = to;
  b->gen_++;
  b->probes_out_ = b->probes_ok_ = 0;
  if (to == WD_BREAKER_OPEN) {
    wd_time d = b->o_.open_duration;
    b->open_until_ = d > WD_TIME_NEVER - now ? WD_TIME_NEVER : now + d;
    b->opened_++;
    if (from == WD_BREAKER_CLOSED) {
      b->trip_calls_ = b->wcalls_;
      b->trip_fails_ = b->wfails_;
    }
  } else if (to == WD_BREAKER_CLOSED) {
    window_clear(b);
  }
  if (b->o_.on_change) b->o_.on_change(self, b, from, to, b->o_.arg);
}

static int reject(wd_task *self, wd_breaker *b, wd_time now) {
  b->rejected_++;
  if (b->state_ == WD_BREAKER_OPEN)
    return wd_fail(self, WD_ECIRCUITOPEN,
                   "circuit breaker '%s' is open: next probe in %.3f s "
                   "(opened after %u of the last %u calls failed)",
                   b->name_, secs(b->open_until_ - now), b->trip_fails_,
                   b->trip_calls_);
  return wd_fail(self, WD_ECIRCUITOPEN,
                 "circuit breaker '%s' is half-open: %u probe%s in flight; "
                 "the next probe waits for %s",
                 b->name_, b->probes_out_, b->probes_out_ == 1 ? "" : "s",
                 b->probes_out_ == 1 ? "its outcome" : "their outcomes");
}

int wd_breaker_begin(wd_task *self, wd_breaker *b, wd_breaker_permit *permit) {
  if (!b || !permit || b->magic_ != BREAKER_MAGIC)
    return wd_fail(self, WD_EINVAL, "breaker begin: %s",
                   !b        ? "NULL breaker"
                   : !permit ? "NULL permit"
                             : "breaker not initialised");
  if (b->state_ == WD_BREAKER_CLOSED) {
    permit->gen_ = b->gen_;
    permit->probe_ = false;
    b->calls_++;
    return 0;
  }
  wd_time now = wd_now(self);
  if (b->state_ == WD_BREAKER_OPEN) {
    if (now < b->open_until_) return reject(self, b, now);
    move_to(self, b, WD_BREAKER_HALF_OPEN, now);
  }
  if (b->probes_out_ + b->probes_ok_ >= b->o_.half_open_probes)
    return reject(self, b, now);
  b->probes_out_++;
  permit->gen_ = b->gen_;
  permit->probe_ = true;
  b->calls_++;
  return 0;
}

void wd_breaker_end(wd_task *self, wd_breaker *b,
                    const wd_breaker_permit *permit, int rc) {
  if (!b || !permit || b->magic_ != BREAKER_MAGIC) return;
  /* Classify: a cancellation of the caller (or one that leaked out of the
   * call) says nothing about the backend. */
  bool ignored = false, failed = false;
  if (rc < 0) {
    if (rc == WD_ECANCELED || wd_cancel_status(self)) {
      ignored = true;
    } else {
      const wd_error *e = wd_task_error(self);
      failed = b->o_.is_failure(rc, e && e->code == rc ? e : NULL, b->o_.arg);
    }
  }
  if (ignored)
    b->ignored_++;
  else if (failed)
    b->failures_++;
  else
    b->successes_++;
  if (permit->gen_ != b->gen_) return;
  if (b->state_ == WD_BREAKER_CLOSED) {
    if (ignored) return;
    wd_time now = b->ring_ ? 0 : wd_now(self);
    window_add(b, failed, now);
    if (failed && window_trips(b))
      move_to(self, b, WD_BREAKER_OPEN, b->ring_ ? wd_now(self) : now);
  } else if (b->state_ == WD_BREAKER_HALF_OPEN && permit->probe_) {
    b->probes_out_--;
    if (ignored) return;
    if (failed) {
      move_to(self, b, WD_BREAKER_OPEN, wd_now(self));
    } else if (++b->probes_ok_ >= b->o_.half_open_probes) {
      move_to(self, b, WD_BREAKER_CLOSED, 0);
    }
  }
}

int wd_breaker_call(wd_task *self, wd_breaker *b, wd_task_fn fn, void *arg) {
  if (!self || !fn)
    return wd_fail(self, WD_EINVAL, "breaker call: NULL %s",
                   !self ? "task" : "function");
  int rc = wd_cancel_status(self);
  if (rc) return rc;
  /* The common case, a success while closed with a count window, is done
   * here inline: what begin and end would do, without their checks. */
  wd_breaker_permit p;
  if (b && b->magic_ == BREAKER_MAGIC && b->state_ == WD_BREAKER_CLOSED) {
    p.gen_ = b->gen_;
    p.probe_ = false;
    b->calls_++;
  } else {
    rc = wd_breaker_begin(self, b, &p);
    if (rc) return rc;
  }
  rc = fn(self, arg);
  if (rc >= 0 && b->ring_ && b->state_ == WD_BREAKER_CLOSED &&
      p.gen_ == b->gen_) {
    b->successes_++;
    ring_add(b, false);
    return rc;
  }
  wd_breaker_end(self, b, &p, rc);
  return rc;
}

void wd_breaker_reset(wd_task *self, wd_breaker *b) {
  if (!b || b->magic_ != BREAKER_MAGIC) return;
  if (b->state_ == WD_BREAKER_CLOSED) {
    window_clear(b);
    b->gen_++;
    return;
  }
  move_to(self, b, WD_BREAKER_CLOSED, 0);
}

void wd_breaker_stats_get(const wd_breaker *b, wd_breaker_stats *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (!b || b->magic_ != BREAKER_MAGIC) return;
  wd_time now = wd_now(NULL);
  out->state = b->state_;
  out->probes_in_flight = b->probes_out_;
  if (b->state_ == WD_BREAKER_OPEN) {
    if (now >= b->open_until_) {
      out->state = WD_BREAKER_HALF_OPEN;
      out->probes_in_flight = 0;
    } else {
      out->next_probe = b->open_until_ - now;
    }
  }
  window_peek(b, now, &out->window_calls, &out->window_failures);
  out->calls = b->calls_;
  out->successes = b->successes_;
  out->failures = b->failures_;
  out->ignored = b->ignored_;
  out->rejected = b->rejected_;
  out->opened = b->opened_;
}
