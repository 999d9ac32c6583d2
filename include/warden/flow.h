/* warden/flow.h - flow control around a call: timeout, retry, circuit
 * breaker.
 *
 * Each policy has a "run this call under me" function that takes the call
 * as `int fn(wd_task *self, void *arg)` (a wd_task_fn, run in the caller's
 * task) and returns its result, so policies stack by nesting: a retry whose
 * call is a timeout around the real call, all inside a breaker.  The
 * breaker also has begin/end calls for code that cannot be put in a
 * callback.  The rate limiter (ratelimit.h) has the same form,
 * wd_ratelimit_call().
 *
 *   wd_timeout_call(self, 2 * WD_SEC, "fetch user 42", fetch, &req);
 *   wd_retry_call(self, &retry, fetch, &req);
 *   wd_breaker_call(self, &breaker, fetch, &req);
 *
 * Codes pass through: a policy returns the call's own result unless it
 * refused the call (WD_ECIRCUITOPEN), timed it out (WD_ETIMEDOUT) or gave
 * up retrying (the last attempt's code, with a message saying why it gave
 * up and the attempt's error as its cause).  None of them turns a
 * cancellation of the caller into anything else.
 *
 * The objects live in the caller's memory, belong to one runtime, and may
 * be shared by any number of its tasks.
 */
#ifndef WARDEN_FLOW_H
#define WARDEN_FLOW_H

#include "error.h"
#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== timeout ============================================================
 */

/* Run fn(self, arg) with a deadline `timeout` ns from now (Trio's
 * fail_after around one call).  When the deadline fires, the call's next
 * checkpoint fails, and if the call returns that cancellation, this
 * returns WD_ETIMEDOUT with the message "<what>: timed out after 2.000 s"
 * (what is borrowed; NULL = "operation").  A call that finishes despite the
 * deadline (it reached no checkpoint) keeps its result.  A timeout of 0
 * fails at once without calling fn; WD_TIME_NEVER means no deadline.
 * Checkpoint: yes (at entry, and whatever fn does).
 * Returns fn's result, WD_ETIMEDOUT as above, the caller's own
 * WD_ECANCELED / WD_ETIMEDOUT (fn not called if it was already cancelled),
 * WD_EINVAL (NULL self or fn, negative timeout) or WD_ENOMEM (no room for
 * the deadline's timer; fn not called). */
int wd_timeout_call(wd_task *self, wd_time timeout, const char *what,
                    wd_task_fn fn, void *arg);

/* ==== retry budget =======================================================
 *
 * A budget shared by many callers (usually all the retries towards one
 * backend) that allows retries only as a fraction of recent calls, so that
 * a failing backend sees at most (1 + ratio) times its normal load instead
 * of max_attempts times.  Every wd_retry_call() that uses it deposits one
 * call; every retry withdraws one.  A retry is allowed while
 *     retries in the window < min_retries + ratio * calls in the window.
 * The window slides in WD_RETRY_BUDGET_SLOTS steps: a call or retry counts
 * from when it happened until between window * (slots - 1) / slots and
 * window later.
 */

#define WD_RETRY_BUDGET_SLOTS 10
/* min_retries value meaning "none" (0 selects the default). */
#define WD_RETRY_BUDGET_NO_MIN UINT32_MAX

typedef struct wd_retry_budget_opts {
  const char *name;     /* copied; default "retry budget" */
  double ratio;         /* retries per call, in (0, 1000]; 0 = 0.2 */
  wd_time window;       /* 0 = 10 s; at least WD_RETRY_BUDGET_SLOTS ns */
  uint32_t min_retries; /* allowed per window whatever the traffic, so that
                         * a quiet service can still retry; 0 = 10,
                         * WD_RETRY_BUDGET_NO_MIN = none */
} wd_retry_budget_opts;

typedef struct wd_retry_budget_stats {
  uint64_t window_calls;   /* calls deposited in the current window */
  uint64_t window_retries; /* retries withdrawn in the current window */
  uint64_t calls, retries; /* since init */
  uint64_t denied;         /* retries refused */
} wd_retry_budget_stats;

/* Private layout. */
typedef struct wd_retry_budget {
  wd_time width_;
  int64_t head_; /* index of the newest slot's time step */
  uint32_t calls_[WD_RETRY_BUDGET_SLOTS], retries_[WD_RETRY_BUDGET_SLOTS];
  uint64_t wcalls_, wretries_;
  uint64_t calls_total_, retries_total_, denied_;
  uint64_t ppm_; /* ratio in millionths */
  uint32_t min_;
  uint32_t magic_;
  char name_[32];
} wd_retry_budget;

/* Initialise b.  opts may be NULL.  A budget owns no memory: there is
 * nothing to deinit.  Checkpoint: no.  Returns 0 or WD_EINVAL (NULL b, a
 * ratio out of range, a window too short). */
int wd_retry_budget_init(wd_retry_budget *b, const wd_retry_budget_opts *opts);

/* b's counters on the current runtime's clock.  Checkpoint: no. */
void wd_retry_budget_stats_get(const wd_retry_budget *b,
                               wd_retry_budget_stats *out);

/* ==== retry ==============================================================
 *
 * Call fn; while it fails with an error the predicate calls retryable, wait
 * a back-off and call it again.  The back-off before retry k (k = 1 after
 * the first failure) grows from base_delay by multiplier up to max_delay:
 *     d_k = min(max_delay, base_delay * multiplier^(k-1))
 * and the jitter mode turns d_k into the actual sleep:
 *     WD_JITTER_FULL          uniform in [0, d_k]       (the default)
 *     WD_JITTER_NONE          d_k
 *     WD_JITTER_EQUAL         d_k / 2 + uniform in [0, d_k / 2]
 *     WD_JITTER_DECORRELATED  min(max_delay, uniform in [base_delay,
 *                             previous sleep * multiplier]); the first
 *                             previous sleep is base_delay (AWS's
 *                             "decorrelated jitter" uses multiplier 3)
 * It stops, returning the last attempt's code, when:
 *   - the caller is cancelled: the code is returned as it is, with no
 *     retry and no wrapping; a cancellation during a back-off returns the
 *     cancellation code, its message naming the retry and carrying the
 *     last attempt's error as its cause;
 *   - the error is not retryable (passed through untouched if it was the
 *     first attempt);
 *   - max_attempts attempts were made;
 *   - the next attempt would start later than max_elapsed after the first
 *     one started (attempts are not cut short: that is a timeout's job);
 *   - the back-off would end at or past the caller's deadline
 *     (wd_task_deadline): there would be no time left to try, so it fails
 *     at once instead of sleeping into the deadline;
 *   - the retry budget refuses.
 * When it gives up, the error says so ("retry 'fetch': gave up after 3
 * attempts (max_attempts 3); 0.300 s in back-off") and its cause is the
 * last attempt's error (or one naming the bare code, if the attempt
 * recorded none).  Each attempt starts with the task's last error cleared,
 * so that the cause is the attempt's own.
 */

typedef enum wd_jitter {
  WD_JITTER_FULL = 0, /* the default: the AWS recommendation */
  WD_JITTER_NONE = 1,
  WD_JITTER_EQUAL = 2,
  WD_JITTER_DECORRELATED = 3,
} wd_jitter;

/* max_attempts value for "no limit" (bound it with max_elapsed, a
 * deadline or a budget). */
#define WD_RETRY_FOREVER UINT32_MAX

/* What the on_retry hook is told, before each back-off. */
typedef struct wd_retry_info {
  const char *name;    /* the retry's name */
  uint32_t attempt;    /* the attempt that just failed, from 1 */
  int rc;              /* its code */
  const wd_error *err; /* its detailed error, or NULL (borrowed) */
  wd_time delay;       /* the back-off about to start */
} wd_retry_info;

typedef struct wd_retry_opts {
  const char *name;      /* copied; default "retry" */
  uint32_t max_attempts; /* including the first; 0 = 3 */
  wd_time max_elapsed;   /* 0 = no limit */
  wd_time base_delay;    /* 0 = 100 ms (for immediate retries, 1 ns) */
  wd_time max_delay;     /* 0 = 10 s; at least base_delay */
  double multiplier;     /* 0 = 2.0; at least 1.0 */
  wd_jitter jitter;
  uint64_t seed; /* of the jitter's generator; 0 = from the clock and the
                  * object's address.  Set it for reproducible tests. */
  /* Which failures to retry.  NULL: every failure but WD_ECANCELED (some
   * cancellation leaked out of the call) and WD_EINVAL (the call is wrong
   * and will stay wrong).  err is the attempt's detailed error when it
   * recorded one with this code, else NULL. */
  bool (*retryable)(int rc, const wd_error *err, void *arg);
  /* Called before each back-off, for logging.  It runs in the caller's
   * task; time it spends counts against the back-off. */
  void (*on_retry)(wd_task *self, const wd_retry_info *info, void *arg);
  void *arg;               /* for retryable and on_retry */
  wd_retry_budget *budget; /* borrowed, shared; NULL = no budget */
} wd_retry_opts;

typedef struct wd_retry_stats {
  uint64_t calls;         /* wd_retry_call()s */
  uint64_t attempts;      /* calls of fn */
  uint64_t successes;     /* calls that returned 0 */
  uint64_t retries;       /* back-offs started */
  uint64_t gave_up;       /* calls that ended on a retryable error */
  uint64_t not_retryable; /* calls that ended on a non-retryable error */
  uint64_t cancelled;     /* calls that ended by the caller's cancellation */
  uint64_t budget_denied; /* of gave_up: refused by the budget */
  uint64_t deadline;      /* of gave_up: the back-off would pass the
                           * caller's deadline or max_elapsed */
} wd_retry_stats;

/* Private layout. */
typedef struct wd_retry {
  wd_retry_opts o_;
  uint64_t rng_;
  wd_retry_stats st_;
  uint32_t magic_;
  char name_[32];
} wd_retry;

/* Initialise r.  opts may be NULL.  A retry owns no memory: there is
 * nothing to deinit.  Checkpoint: no.  Returns 0 or WD_EINVAL (NULL r,
 * negative delays, max_delay below base_delay, multiplier below 1, an
 * unknown jitter mode). */
int wd_retry_init(wd_retry *r, const wd_retry_opts *opts);

/* Call fn(self, arg) under r's policy (see above).  Checkpoint: yes (at
 * entry, in every back-off, and whatever fn does).
 * Returns the result of the attempt that succeeded (0, or whatever
 * non-negative value fn returns); the last attempt's code when it
 * gave up or the error was not retryable; the cancellation code when the
 * caller was cancelled; WD_EINVAL for NULL arguments or an uninitialised
 * r (fn not called). */
int wd_retry_call(wd_task *self, wd_retry *r, wd_task_fn fn, void *arg);

/* r's counters.  Checkpoint: no. */
void wd_retry_stats_get(const wd_retry *r, wd_retry_stats *out);

/* ==== circuit breaker ====================================================
 *
 * A breaker watches the outcomes of calls to one backend and stops calling
 * it while it fails, so that the backend can recover and callers fail fast.
 *
 *   CLOSED     calls go through; each outcome lands in a sliding window -
 *              the last window_size calls, or the calls of the last
 *              window_time.  When the window holds at least min_calls
 *              outcomes and failures / calls >= failure_ratio, it opens.
 *   OPEN       calls are rejected with WD_ECIRCUITOPEN ("circuit breaker
 *              'db' is open: next probe in 12.500 s ...") for
 *              open_duration; then it is half-open.
 *   HALF_OPEN  up to half_open_probes calls go through as probes, the rest
 *              are rejected.  A probe that fails opens the breaker again
 *              (for a fresh open_duration); when all the probes succeed, it
 *              closes with an empty window.
 *
 * Outcomes: 0 or more is a success.  A negative result is ignored
 * (neither success nor failure; a probe's slot is given back) when the
 * caller was cancelled or the result is WD_ECANCELED, because that says
 * nothing about the backend; any other is a failure unless the is_failure
 * predicate says otherwise.  The breaker opens only on a failure that
 * brings the window to the threshold.  An outcome of a call that began before
 * the breaker last changed state is counted in the totals but not in the
 * window: it says nothing about the new state.  The OPEN -> HALF_OPEN move
 * happens when the breaker is next used after open_duration.
 *
 * Time windows are split in `buckets` steps of window_time / buckets: an
 * outcome counts from when it happened until between window_time *
 * (buckets - 1) / buckets and window_time later.
 */

typedef enum wd_breaker_state {
  WD_BREAKER_CLOSED = 0,
  WD_BREAKER_OPEN = 1,
  WD_BREAKER_HALF_OPEN = 2,
} wd_breaker_state;

typedef struct wd_breaker wd_breaker;

typedef struct wd_breaker_opts {
  const char *name; /* copied; default "breaker" */
  /* The window: the last window_size calls (0 = 100), or, when window_time
   * is set, the calls of the last window_time ns in `buckets` steps (0 =
   * 10, at most 1000; window_time / buckets must be at least 1 ns). */
  uint32_t window_size;
  wd_time window_time;
  uint32_t buckets;
  /* Outcomes the window must hold before it can open the breaker; 0 = 10
   * (or window_size if smaller).  At most window_size for a count
   * window. */
  uint32_t min_calls;
  double failure_ratio;      /* in (0, 1]; 0 = 0.5 */
  wd_time open_duration;     /* 0 = 30 s */
  uint32_t half_open_probes; /* 0 = 1 */
  /* Which negative results (other than the ignored ones) are failures;
   * NULL = all of them.  err as for wd_retry_opts.retryable. */
  bool (*is_failure)(int rc, const wd_error *err, void *arg);
  /* Called on every state change (must not block).  self is the task
   * whose call caused it. */
  void (*on_change)(wd_task *self, wd_breaker *b, wd_breaker_state from,
                    wd_breaker_state to, void *arg);
  void *arg; /* for is_failure and on_change */
} wd_breaker_opts;

typedef struct wd_breaker_stats {
  wd_breaker_state state;   /* now, on the runtime clock */
  uint32_t window_calls;    /* outcomes in the window */
  uint32_t window_failures; /* of which failures */
  uint32_t probes_in_flight;
  uint64_t calls;     /* calls let through */
  uint64_t successes; /* outcomes counted as success */
  uint64_t failures;  /* outcomes counted as failure */
  uint64_t ignored;   /* outcomes ignored (the caller was cancelled) */
  uint64_t rejected;  /* calls refused with WD_ECIRCUITOPEN */
  uint64_t opened;    /* times it opened */
  wd_time next_probe; /* when open: time until it lets a probe through */
} wd_breaker_stats;

/* What wd_breaker_begin() hands to wd_breaker_end() (private). */
typedef struct wd_breaker_permit {
  uint64_t gen_;
  bool probe_;
} wd_breaker_permit;

/* Private layout. */
struct wd_breaker {
  wd_breaker_opts o_;
  uint64_t *ring_;  /* count window: one bit per call, 1 = failure */
  uint32_t *slots_; /* time window: calls and failures per bucket */
  uint32_t size_, pos_, filled_;
  uint32_t wcalls_, wfails_;
  wd_time width_;
  int64_t head_;
  uint64_t ppm_;
  wd_breaker_state state_;
  uint64_t gen_;
  wd_time open_until_;
  uint32_t probes_out_, probes_ok_;
  uint32_t trip_calls_, trip_fails_; /* the window that last opened it */
  uint64_t calls_, successes_, failures_, ignored_, rejected_, opened_;
  uint32_t magic_;
  char name_[32];
};

/* Initialise b, closed.  opts may be NULL.  Allocates the window.
 * Checkpoint: no.  Returns 0, WD_EINVAL (NULL b, values out of range) or
 * WD_ENOMEM; on failure nothing is held. */
int wd_breaker_init(wd_breaker *b, const wd_breaker_opts *opts);

/* Release b's window.  Calls still between begin and end must not end
 * after this.  Deinit of NULL is a no-op. */
void wd_breaker_deinit(wd_breaker *b);

/* Ask b to let one call through.  Checkpoint: no.
 * Returns 0 and fills *permit: the caller must make the call and then
 * call wd_breaker_end() exactly once with it; or WD_ECIRCUITOPEN (open,
 * or half-open with every probe taken), with a message naming the breaker
 * and the time until the next probe; or WD_EINVAL (NULL arguments). */
int wd_breaker_begin(wd_task *self, wd_breaker *b, wd_breaker_permit *permit);

/* Report the outcome rc of a call let through by wd_breaker_begin().  The
 * detailed error, if self recorded one with code rc, is handed to the
 * is_failure predicate.  Checkpoint: no. */
void wd_breaker_end(wd_task *self, wd_breaker *b,
                    const wd_breaker_permit *permit, int rc);

/* begin, fn(self, arg), end.  Checkpoint: yes (at entry, and whatever fn
 * does).  Returns fn's result, or WD_ECIRCUITOPEN (fn not called), or the
 * caller's cancellation code (fn not called, nothing recorded), or
 * WD_EINVAL. */
int wd_breaker_call(wd_task *self, wd_breaker *b, wd_task_fn fn, void *arg);

/* Close b and empty its window (an operator's override).  Checkpoint: no. */
void wd_breaker_reset(wd_task *self, wd_breaker *b);

/* b's state and counters on the current runtime's clock.  Checkpoint: no. */
void wd_breaker_stats_get(const wd_breaker *b, wd_breaker_stats *out);

/* "closed", "open", "half-open". */
const char *wd_breaker_state_name(wd_breaker_state s);

#ifdef __cplusplus
}
#endif
#endif
