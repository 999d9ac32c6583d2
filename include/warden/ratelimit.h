/* warden/ratelimit.h - a rate limiter: GCRA, the exact form of a token
 * bucket.
 *
 * A limiter hands out `rate` permits per `period`, and up to `burst` of
 * them at once after a quiet spell.  It keeps one number, the theoretical
 * arrival time (TAT) of the next permit, in exact rational nanoseconds, so
 * that a limiter of 3 permits per second hands out exactly 10800 permits
 * (plus its burst) in an hour: no rounding drift, however long it runs.  It
 * reads the runtime clock (wd_now), so on the virtual clock its timings are
 * exact and its tests instant.
 *
 * Waiters are served in arrival order: an acquire of 5 permits at the head
 * of the queue is not overtaken by later acquires of 1, and a try never
 * takes permits while tasks wait.  A waiter that is cancelled takes nothing
 * and hands the head of the queue to the next one.
 *
 *   wd_ratelimit rl;
 *   wd_ratelimit_init(&rl, 100, WD_SEC,
 *                     &(wd_ratelimit_opts){.name = "api", .burst = 10});
 *   ...
 *   int rc = wd_ratelimit_acquire(self, &rl, 1);  // waits for a permit
 *   ...
 *   wd_ratelimit_deinit(&rl);
 *
 * A limiter belongs to one runtime; any task of it may use it.
 */
#ifndef WARDEN_RATELIMIT_H
#define WARDEN_RATELIMIT_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Options of wd_ratelimit_init(); NULL or all zero means the defaults. */
typedef struct wd_ratelimit_opts {
  const char *name; /* copied (31 bytes kept); default "ratelimit" */
  /* Permits that may be taken at once, and the most a single acquire may
   * ask for; also what is available at first.  0 = 1: permits strictly
   * spaced by period / rate. */
  uint32_t burst;
} wd_ratelimit_opts;

typedef struct wd_ratelimit_stats {
  uint64_t granted;    /* permits handed out */
  uint64_t acquired;   /* acquires and tries that got their permits */
  uint64_t waited;     /* of which had to wait */
  uint64_t rejected;   /* tries that returned WD_EAGAIN */
  uint64_t cancelled;  /* waiters that gave up (cancelled) */
  wd_time wait_total;  /* time spent waiting by the `waited` acquires */
  wd_time wait_max;    /* longest of those waits */
  size_t waiting;      /* tasks waiting now */
  size_t waiting_peak; /* most tasks ever waiting at once */
  uint32_t available;  /* permits a try could take now (0 while tasks wait) */
  wd_time next_permit; /* time until one more permit is available, 0 if one
                        * is available now (ignoring waiters) */
} wd_ratelimit_stats;

/* Private layout: embed, do not touch.  Times are `ns + frac/rate` ns. */
typedef struct wd_ratelimit {
  wd_link waiters_;    /* FIFO of waiting acquires */
  int64_t tat_ns_;     /* theoretical arrival time of the next */
  uint64_t tat_frac_;  /*   permit, in [0, rate) rate-ths of a ns */
  int64_t step_ns_;    /* emission interval period / rate */
  uint64_t step_frac_; /*   as whole ns and remainder */
  int64_t tol_ns_;     /* burst tolerance: burst * interval */
  uint64_t tol_frac_;
  wd_time period_;
  uint32_t rate_, burst_;
  uint64_t granted_, acquired_, waited_, rejected_, cancelled_;
  wd_time wait_total_, wait_max_;
  size_t nwaiting_, peak_;
  uint32_t magic_;
  char name_[32];
} wd_ratelimit;

/* Initialise rl to hand out `rate` permits per `period` ns (both > 0), with
 * its full burst available.  opts may be NULL.  Checkpoint: no.
 * Returns 0, or WD_EINVAL (NULL rl; rate or period not positive; a burst
 * window burst * period / rate beyond 2^60 ns, 36 years) with rl unusable. */
int wd_ratelimit_init(wd_ratelimit *rl, uint32_t rate, wd_time period,
                      const wd_ratelimit_opts *opts);

/* Release rl.  Returns 0, or WD_EBUSY with rl untouched while tasks wait on
 * it (their frames still point into it).  Deinit of NULL is a no-op. */
int wd_ratelimit_deinit(wd_ratelimit *rl);

/* Take n permits, waiting (in FIFO order behind earlier waiters) until
 * they are available.  Checkpoint: yes, also when it need not wait.
 * Returns 0 with the permits taken; WD_ECANCELED / WD_ETIMEDOUT with
 * nothing taken (the error names the limiter and how long it waited);
 * WD_EINVAL for a NULL self or rl, n of 0, or n above the burst (it could
 * never be granted); WD_ENOMEM if the timer for the wait could not be
 * reserved (nothing taken). */
int wd_ratelimit_acquire(wd_task *self, wd_ratelimit *rl, uint32_t n);

/* Take n permits if they are available now and no task waits.
 * Checkpoint: no.  Returns 0 with the permits taken, WD_EAGAIN (nothing
 * taken; no detailed error is recorded, as it is the expected answer of a
 * try), or WD_EINVAL as wd_ratelimit_acquire(). */
int wd_ratelimit_acquire_try(wd_task *self, wd_ratelimit *rl, uint32_t n);

/* Take one permit (wd_ratelimit_acquire), then return fn(self, arg): the
 * "run this call under me" form a guard stacks.  Checkpoint: yes.
 * Returns fn's result, or what the acquire returned (fn not called). */
int wd_ratelimit_call(wd_task *self, wd_ratelimit *rl, wd_task_fn fn,
                      void *arg);

/* rl's counters and its state on the current runtime's clock.
 * Checkpoint: no. */
void wd_ratelimit_stats_get(const wd_ratelimit *rl, wd_ratelimit_stats *out);

#ifdef __cplusplus
}
#endif
#endif
