/* warden/guard.h - one object that stacks the flow-control policies around
 * a call: timeout, retry, rate limit, concurrency limit, circuit breaker.
 *
 * The C form of stacking the Python decorators users know:
 *
 *   @cancellable                      every warden call is a checkpoint, so
 *                                     "cancellable" is the rule, not a layer
 *   @breaker(...)                     opts.breaker
 *   @retry(max_attempts=3)            opts.retry
 *   @rate_limited(100, per=1.0)       opts.ratelimit
 *   @concurrent_limited(8)            opts.limiter
 *   @timeout_handler(5.0)             opts.timeout (per attempt)
 *   async def fetch(): ...
 *
 *   wd_guard g;
 *   wd_guard_init(&g, &(wd_guard_opts){.name = "fetch",
 *                                      .timeout = 2 * WD_SEC,
 *                                      .retry = &retry,
 *                                      .ratelimit = &api_quota,
 *                                      .limiter = &db_slots,
 *                                      .breaker = &db_breaker});
 *   int rc = wd_guard_call(self, &g, fetch, &req);
 *
 * A guard borrows the policy objects (they may be shared with other guards
 * and other code: a breaker for one backend, a limiter for its connection
 * slots) and adds no policy of its own: each layer is the policy's own
 * "run this call under me" function (flow.h, ratelimit.h) or, for the
 * limiter, an acquire and release around the inner layers.  Codes and
 * messages pass through exactly as those functions return them.
 *
 * ---- Layers and their order ----------------------------------------------
 *
 * Each layer is optional: a NULL object or a zero timeout leaves it out.
 * The order, from outermost to innermost, is explicit: opts.order lists the
 * layer kinds, ending at the first WD_GUARD_NONE.  All zero means the
 * default, every configured layer in this order:
 *
 *   total_timeout                 (always outermost; not part of the order)
 *     WD_GUARD_BREAKER            one outcome per call, after the retries:
 *                                 an open breaker refuses the whole call at
 *                                 once, with no attempt and no back-off
 *       WD_GUARD_RETRY            repeats everything inside it
 *         WD_GUARD_RATELIMIT      each attempt pays one permit: the quota
 *                                 counts requests the backend sees, and a
 *                                 retry is one
 *           WD_GUARD_LIMITER      a concurrency permit held only around the
 *                                 attempt: not through a back-off sleep, not
 *                                 while waiting for the rate
 *             WD_GUARD_TIMEOUT    per attempt, around the call alone: it
 *                                 bounds how long the backend may take; the
 *                                 time queued for a permit is bounded by
 *                                 total_timeout or the caller's deadline
 *               fn(self, arg)
 *
 * An order is rejected by wd_guard_init() with WD_EINVAL and a message
 * naming the problem when:
 *   1. it holds a value that is not a layer kind;
 *   2. it lists a layer twice;
 *   3. it lists a layer that is not configured (a NULL object, a zero
 *      timeout): a forgotten option would otherwise go unnoticed;
 *   4. a configured layer is missing from it: it would be silently ignored;
 *   5. WD_GUARD_LIMITER is outside WD_GUARD_RETRY: the permit would be held
 *      through the back-off sleeps, idle capacity that other callers wait
 *      for;
 *   6. WD_GUARD_LIMITER is outside WD_GUARD_RATELIMIT: the permit would be
 *      held while waiting for the rate, for the same reason;
 *   7. WD_GUARD_TIMEOUT is outside WD_GUARD_RETRY: it would bound all the
 *      attempts together, which is a total timeout - use total_timeout.
 * Everything else is allowed.  Notably the breaker may go inside the retry
 * (it then counts every attempt, as resilience4j's default does); its
 * WD_ECIRCUITOPEN is then retried unless the retry's predicate declines it.
 *
 * ---- Capacity is never returned early -------------------------------------
 *
 * The call runs in the caller's task, so when a timeout (per attempt or
 * total) or the caller's own deadline fires, the call is not abandoned: its
 * next checkpoint fails, and the guard's layers unwind only once fn has
 * returned - including any cleanup fn does in a shielded scope.  The
 * limiter's permit is released then, and not before: while an attempt
 * that timed out is still cleaning up, its permit still counts.
 *
 * Work that truly outlives the attempt - handed to another task, to a
 * thread of the caller's, to a request that stays in flight - must keep
 * the permit until it has really finished: wd_guard_keep_permit() hands
 * the current attempt's permit over, and whoever finishes the work releases
 * it with wd_limiter_release() (any task, or a wd_runtime_post() callback).
 * For thread-pool work, wd_blocking(WD_BLOCKING_WAIT) keeps the attempt,
 * and so the permit, until the thread is done; WD_BLOCKING_ABANDON does not
 * say when the abandoned thread ends, so do not use it under a guard's
 * limiter.
 *
 * A guard lives in the caller's memory, belongs to one runtime, and may be
 * used by any number of its tasks at once.
 */
#ifndef WARDEN_GUARD_H
#define WARDEN_GUARD_H

#include "flow.h"
#include "ratelimit.h"
#include "sync.h"
#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The kinds of layer, as listed in wd_guard_opts.order. */
typedef enum wd_guard_layer {
  WD_GUARD_NONE = 0, /* ends the order; all NONE = the default order */
  WD_GUARD_BREAKER = 1,
  WD_GUARD_RETRY = 2,
  WD_GUARD_RATELIMIT = 3,
  WD_GUARD_LIMITER = 4,
  WD_GUARD_TIMEOUT = 5,
} wd_guard_layer;

#define WD_GUARD_LAYERS 5

typedef struct wd_guard_opts {
  const char *name; /* copied (31 bytes kept); default "guard" */
  /* Per-attempt timeout in ns (wd_timeout_call, message "guard '<name>'
   * attempt: timed out after 2.000 s"); 0 = none. */
  wd_time timeout;
  /* A bound on the whole call, every layer included (message "guard
   * '<name>': timed out after 5.000 s"); 0 = none. */
  wd_time total_timeout;
  /* The policies, borrowed: they must outlive the guard.  NULL = none. */
  wd_retry *retry;
  wd_ratelimit *ratelimit; /* one permit per pass through the layer */
  wd_limiter *limiter;
  wd_breaker *breaker;
  /* Outermost first, up to the first WD_GUARD_NONE; all zero = the default
   * order above. */
  wd_guard_layer order[WD_GUARD_LAYERS];
} wd_guard_opts;

typedef struct wd_guard_stats {
  uint64_t calls;        /* wd_guard_call()s that got past their arguments */
  uint64_t successes;    /* of which returned 0 or more */
  uint64_t failures;     /* of which returned an error, not the caller's
                          * cancellation */
  uint64_t cancelled;    /* of which ended with the caller cancelled */
  uint64_t permits_kept; /* permits handed over by wd_guard_keep_permit() */
  size_t in_flight;      /* calls running now */
} wd_guard_stats;

/* Private layout: embed, do not touch. */
typedef struct wd_guard {
  wd_time timeout_, total_;
  wd_retry *retry_;
  wd_ratelimit *ratelimit_;
  wd_limiter *limiter_;
  wd_breaker *breaker_;
  wd_link holders_; /* attempts holding a limiter permit, newest last */
  size_t in_flight_;
  uint64_t calls_, successes_, failures_, cancelled_, kept_;
  uint32_t magic_;
  uint8_t order_[WD_GUARD_LAYERS];
  uint8_t nlayers_;
  char name_[32];
  char total_what_[48];   /* "guard '<name>'" */
  char attempt_what_[56]; /* "guard '<name>' attempt" */
} wd_guard;

/* Initialise g with the layers and order of opts (see above).  opts may be
 * NULL: a guard with no layer, whose call is a checkpoint and fn.  A guard
 * owns no memory.  Checkpoint: no.
 * Returns 0, or WD_EINVAL with a message naming the problem (NULL g, a
 * negative timeout, an order broken by one of the rules above) and g
 * unusable. */
int wd_guard_init(wd_guard *g, const wd_guard_opts *opts);

/* Forget g.  Checkpoint: no.  Returns 0 (also for NULL), WD_EBUSY while
 * calls run under it (g stays usable), WD_EINVAL if g is not initialised.
 * Permits handed over with wd_guard_keep_permit() belong to the limiter,
 * not to g: they do not keep g busy. */
int wd_guard_deinit(wd_guard *g);

/* Run fn(self, arg) in self under g's layers.  Checkpoint: yes (at entry,
 * then each layer's waits, and whatever fn does).
 * Returns fn's result when it got to run and its result stood; otherwise
 * what the layer that stopped the call returned, with its message:
 * WD_ECIRCUITOPEN (the breaker refused), WD_ETIMEDOUT (the per-attempt or
 * total timeout), the last attempt's code (retry gave up, its message
 * saying why, the attempt's error as its cause), the caller's own
 * WD_ECANCELED / WD_ETIMEDOUT (fn not called if it was cancelled at entry),
 * WD_ENOMEM (a timeout's timer could not be reserved), WD_EINVAL (NULL
 * self or fn, g not initialised; fn not called). */
int wd_guard_call(wd_task *self, wd_guard *g, wd_task_fn fn, void *arg);

/* From inside fn: hand the limiter permit that self's current attempt
 * under g holds to work that will outlive the attempt.  The guard then
 * does not release it when the attempt returns; whoever finishes the work
 * must call wd_limiter_release() on g's limiter exactly once (from any
 * task of the runtime, or from a wd_runtime_post() callback).
 * Checkpoint: no.
 * Returns 0, or WD_EINVAL (NULL self or g; g has no limiter layer; self is
 * not inside an attempt under g that holds a permit, or already handed it
 * over). */
int wd_guard_keep_permit(wd_task *self, wd_guard *g);

/* The layers of g, outermost first, into out; returns how many (0 to
 * WD_GUARD_LAYERS).  total_timeout, not being a layer, is not listed.
 * Checkpoint: no. */
size_t wd_guard_layers(const wd_guard *g, wd_guard_layer out[WD_GUARD_LAYERS]);

/* "breaker", "retry", "ratelimit", "limiter", "timeout"; "none" for
 * WD_GUARD_NONE and "unknown" for any other value. */
const char *wd_guard_layer_name(wd_guard_layer layer);

/* g's counters.  Checkpoint: no. */
void wd_guard_stats_get(const wd_guard *g, wd_guard_stats *out);

#ifdef __cplusplus
}
#endif
#endif
