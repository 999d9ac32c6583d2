/* warden/pool.h - a pool of reusable items (connections, sessions,
 * handles), made by a factory and lent to tasks.
 *
 * The pool creates items with the factory's create, lends them with
 * wd_pool_acquire(), takes them back with wd_pool_release(), and destroys
 * each one exactly once: when it breaks, expires, idles too long, after
 * max_uses, or at close.
 *
 *   static const wd_pool_factory pg_factory = {
 *       .item_size = sizeof(struct conn),
 *       .create = conn_create, .destroy = conn_destroy,
 *       .validate = conn_ping, .reset = conn_rollback};
 *
 *   wd_pool *pg;
 *   rc = wd_pool_open(self, &pg, &(wd_pool_opts){
 *            .name = "pg", .factory = &pg_factory, .arg = &cfg,
 *            .max_size = 8, .min_idle = 2});
 *   ...
 *   struct conn *c;
 *   if ((rc = wd_pool_acquire(self, pg, (void **)&c)) == 0) {
 *     rc = query(self, c);
 *     wd_pool_release(self, pg, c, rc == -EPIPE ? WD_POOL_BROKEN : WD_POOL_OK);
 *   }
 *   ...
 *   rc = wd_pool_close(self, pg);
 *
 * or, so that no path (error, cancellation, early return) can keep it:
 *
 *   WD_SCOPE(self, sc, rc) {
 *     if ((rc = wd_pool_acquire_scoped(self, sc, pg, (void **)&c))) break;
 *     rc = query(self, c);               // c goes back when the scope ends
 *   }
 *
 * ---- Lending -------------------------------------------------------------
 *
 * A free item is lent at once (no clock read, no allocation).  Otherwise
 * the caller waits in one FIFO queue, and whatever becomes available - a
 * released item, a new one, one that passed validation - is handed
 * directly to the longest waiter: a task that arrives later never takes it
 * first, and no waiter starves.  Idle items are reused most recently
 * released first (warm, LIFO), or least recently first with `fifo`.
 *
 * The wait is bounded by the acquire timeout, a cancel scope around it,
 * and by the caller's own scopes.  When the timeout fires, the error says
 * what the pool looked like:
 *   "pool 'pg': no item within 5.000 s — 8/8 in use, 12 waiting, last
 *    create error: connection refused"
 *
 * ---- Cancellation never loses anything ------------------------------------
 *
 * Every call that blocks on an item (create, validate, reset, destroy)
 * runs in the pool's own tasks, never in a caller's, so cancelling a
 * caller cannot interrupt one half-way (the bb8, sqlx and asyncpg pools
 * lost slots and connections exactly there).  A caller's only blocking
 * point is its place in the queue:
 *   - cancelled (or timed out) while waiting: it leaves the queue with
 *     nothing taken, and what would have been handed to it goes to the
 *     next waiter;
 *   - handed an item, then cancelled before it ran again: the call
 *     returns 0 with the item (cancelled means "did not happen"; this did),
 *     and the caller's next checkpoint sees the cancellation - so release
 *     it on every path, which wd_pool_acquire_scoped() does for you.
 * wd_pool_release() never blocks and cannot be cancelled.
 *
 * ---- Creation, fail fast, recovery ---------------------------------------
 *
 * Items are created by the pool's workers when a waiter has nothing else
 * coming (no create or validation under way that would serve it) and
 * fewer than max_size exist, and to keep min_idle items idle.  When a
 * create fails, it is retried after a back-off (backoff_min doubling to
 * backoff_max, with jitter), one attempt at a time.  After fail_after
 * failures in a row with no item left, the pool is "down": its waiters get
 * the create's error at once, instead of waiting out their timeout, and so
 * does every acquire until the next attempt; the attempts go on in the
 * background, and the first that succeeds brings the pool back up.
 *
 * ---- Keeping items healthy ------------------------------------------------
 *
 *   - validate_after: an item idle longer than this is validated before it
 *     is lent (HikariCP's alive-bypass window); one that fails is
 *     destroyed and replaced, and the waiter gets the next item.
 *   - keepalive: idle items are validated in the background this often.
 *   - max_lifetime: an item is destroyed at the end of its lifetime, less
 *     a random jitter so that items created together do not all expire
 *     together; an item in use then is never closed under its user: it is
 *     destroyed when released.  The pool then tops up to min_idle again.
 *   - idle_timeout: idle items beyond min_idle are destroyed after that
 *     long unused.
 *   - max_uses: an item is destroyed after being lent that many times.
 *   - leak_threshold: an item held longer is reported once, with the site
 *     that acquired it and the task (on_leak, or a line on stderr).
 *   - release with WD_POOL_BROKEN destroys the item (and replaces it up to
 *     min_idle); with WD_POOL_OK it is reset (the factory's reset, in a
 *     worker) and lent again - or destroyed if the reset fails.
 * Times the fast paths use come from the pool's own clock, refreshed by
 * its maintenance task a few times per validate_after while the pool is
 * busy and read afresh on the first use after a quiet spell: lending and
 * releasing read the real clock only for the sample of acquires that are
 * timed (timing_sample).
 *
 * ---- Lifetime: the pool is a block of its opener -------------------------
 *
 * wd_pool_open() opens a task group in the calling task - the pool's own,
 * where its maintenance task and workers run - and wd_pool_close() exits
 * it, as for a wd_batcher: the opener closes the pool, after every scope
 * and group it opened later, and a task that returns with a pool open is
 * reported and aborts.  Any task of the runtime may acquire and release.
 * The pool's tasks are shielded: cancelling the opener does not stop the
 * pool, closing it does.
 *
 * Close refuses new acquires (WD_ECLOSED), wakes the waiters with
 * WD_ECLOSED, destroys the idle items, cancels the creates under way, and
 * waits up to drain_timeout for the items in use to come back (each is
 * destroyed as it does).  Items still out then are reported, and each is
 * destroyed by the release that eventually returns it: the pool's memory
 * stays until then.  Every item is destroyed exactly once.
 *
 * ---- Statistics and the monitor -------------------------------------------
 *
 * wd_pool_stats_get() gives sizes, counters and the wait-time and
 * hold-time distributions.  Every open pool is also a resource of type
 * wd_pool_resource_type ("pool") in its runtime's registry (resource.h):
 * it shows in wd_dump(), in the monitor's resource lists with its
 * figures (sizes, counters, wait and hold times: docs/pool.md), and
 * wd_health_check_all() checks it with wd_pool_health().  wd_pool_each()
 * visits the open pools of a runtime, for exporters.
 *
 * A pool belongs to one runtime; it is not thread-safe.
 */
#ifndef WARDEN_POOL_H
#define WARDEN_POOL_H

#include "resource.h"
#include "scope.h"
#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wd_pool wd_pool;

#define WD_POOL_NAME_MAX 32
#define WD_POOL_MAX_SIZE ((size_t)1 << 20)
#define WD_POOL_MAX_WORKERS 64u

/* How the items of a pool are made and unmade.  Usually a static const.
 * Each function gets the task it runs in, the item (item_size bytes the
 * pool allocated for it, zeroed before create) and the pool's opts.arg.
 * They run in the pool's worker tasks (validate also in wd_pool_health's
 * caller), never in a task that acquires. */
typedef struct wd_pool_factory {
  size_t item_size; /* bytes per item; 0 = sizeof(void *) */
  /* Build the item.  Returns 0, or an error after releasing whatever it
   * built (the item is then freed without a destroy).  Runs under
   * create_timeout.  Required. */
  int (*create)(wd_task *self, void *item, void *arg);
  /* Release what create built.  Runs once per item created, shielded,
   * within destroy_grace: it must release what it can even when its
   * checkpoints fail.  Its error is counted.  NULL: nothing to release. */
  int (*destroy)(wd_task *self, void *item, void *arg);
  /* Check that an idle item still works: 0, or an error and the item is
   * destroyed.  Runs under validate_timeout.  NULL: items are never
   * validated. */
  int (*validate)(wd_task *self, void *item, void *arg);
  /* Make a released item ready for its next user (roll back, discard
   * session state): 0, or an error and the item is destroyed.  Runs under
   * reset_timeout, after every release with WD_POOL_OK.  NULL: nothing to
   * reset, and a released item goes straight to the next user. */
  int (*reset)(wd_task *self, void *item, void *arg);
} wd_pool_factory;

/* What a leak report says (see leak_threshold).  Borrowed: valid during
 * the on_leak call only. */
typedef struct wd_pool_leak {
  const char *pool; /* the pool's name */
  void *item;
  wd_time held; /* held for at least this long */
  wd_time threshold;
  const char *file; /* where it was acquired */
  int line;
  uint64_t task_id; /* the task that acquired it */
  const char *task_name;
} wd_pool_leak;

/* validate_after value: validate every item that was idle, however
 * briefly, before lending it (one handed from its reset straight to a
 * waiter is not validated again). */
#define WD_POOL_EVERY_BORROW ((wd_time)-1)
/* lifetime_jitter value: no jitter. */
#define WD_POOL_NO_JITTER ((wd_time)-1)

/* Options of wd_pool_open(); factory is required, all else zero means the
 * default.  Times are in ns; WD_TIME_NEVER means "no limit" where said. */
typedef struct wd_pool_opts {
  const char *name;               /* copied (31 bytes kept); default "pool" */
  const wd_pool_factory *factory; /* borrowed: must outlive the pool */
  void *arg;                      /* for the factory's functions */
  size_t max_size; /* items at most, counting those being created or
                    * destroyed; 0 = 10; at most WD_POOL_MAX_SIZE */
  size_t min_idle; /* idle items kept ready; 0 = none; <= max_size */
  /* How long an acquire waits for an item: 0 = 30 s; WD_TIME_NEVER =
   * until the caller's own scopes stop it. */
  wd_time acquire_timeout;
  /* Idle items beyond min_idle are destroyed after this long unused:
   * 0 = 10 min; WD_TIME_NEVER = never. */
  wd_time idle_timeout;
  /* Items are destroyed this long after their creation: 0 = 30 min;
   * WD_TIME_NEVER = never. */
  wd_time max_lifetime;
  /* Up to this much, uniformly at random, is taken off each item's
   * lifetime: 0 = max_lifetime / 40 (HikariCP's 2.5 %);
   * WD_POOL_NO_JITTER = none; less than max_lifetime. */
  wd_time lifetime_jitter;
  /* An item idle for longer is validated before it is lent (with a
   * validate function): 0 = 500 ms; WD_POOL_EVERY_BORROW = always;
   * WD_TIME_NEVER = never. */
  wd_time validate_after;
  /* Idle items are validated in the background this often: 0 = never. */
  wd_time keepalive;
  /* An item held longer is reported once: 0 = never. */
  wd_time leak_threshold;
  /* Called for each leak report, in the pool's maintenance task (it must
   * not block); NULL = a line on stderr. */
  void (*on_leak)(const wd_pool_leak *leak, void *arg);
  void *on_leak_arg;
  uint64_t max_uses; /* lends per item before it is destroyed; 0 = no cap */
  bool fifo;         /* lend the least recently released idle item first */
  bool lazy;         /* open does not wait for min_idle items (warm-up) */
  /* Worker tasks: how many creates, validations, resets and destroys run
   * at once (warm-up included); 0 = min(max_size, 4); at most
   * WD_POOL_MAX_WORKERS. */
  unsigned workers;
  /* Create failures in a row, with no item left, that make the pool
   * "down" (fail fast); 0 = 3. */
  unsigned fail_after;
  wd_time create_timeout;   /* 0 = 30 s; WD_TIME_NEVER = none */
  wd_time validate_timeout; /* 0 = 5 s; WD_TIME_NEVER = none */
  wd_time reset_timeout;    /* 0 = 5 s; WD_TIME_NEVER = none */
  wd_time destroy_grace;    /* 0 = 5 s; WD_TIME_NEVER = none */
  /* How long close waits for the items in use: 0 = 5 s; WD_TIME_NEVER =
   * until they all come back. */
  wd_time drain_timeout;
  wd_time backoff_min; /* first retry after a failed create; 0 = 50 ms */
  wd_time backoff_max; /* 0 = 10 s; at least backoff_min */
  /* 1 in this many acquires, at random, is timed (wait and hold time, two
   * clock reads); 0 = 16; 1 = every acquire. */
  unsigned timing_sample;
  uint64_t seed; /* of the jitter and sampling; 0 = from the clock */
} wd_pool_opts;

/* How a released item is returned. */
typedef enum wd_pool_status {
  WD_POOL_OK = 0,     /* reset it and lend it again */
  WD_POOL_BROKEN = 1, /* destroy it (and replace it up to min_idle) */
} wd_pool_status;

/* A distribution of times (ns): count, sum, min and max exact, quantiles
 * within 1/16.  Zeros when empty. */
typedef struct wd_pool_dist {
  uint64_t count;
  wd_time sum;
  double mean;
  wd_time min, p50, p90, p99, max;
} wd_pool_dist;

/* What wd_pool_stats_get() reports. */
typedef struct wd_pool_stats {
  char name[WD_POOL_NAME_MAX];
  size_t max_size, min_idle;
  /* Items that exist (idle + in_use + those in the pool's own hands:
   * being validated, reset or destroyed); creating are not yet items. */
  size_t size;
  size_t idle, in_use, creating, waiting;
  size_t peak_in_use, peak_waiting;
  uint64_t acquires;    /* items lent */
  uint64_t waited;      /* of which after waiting */
  uint64_t timeouts;    /* acquires that ended by a deadline while waiting */
  uint64_t cancelled;   /* acquires cancelled while waiting */
  uint64_t failed_fast; /* acquires failed with the create error (down) */
  uint64_t refused;     /* acquires refused because the pool is closing */
  uint64_t releases;    /* releases, of which: */
  uint64_t broken;      /*   with WD_POOL_BROKEN */
  uint64_t creates, create_errors;
  uint64_t destroys, destroy_errors;
  uint64_t validations, validation_errors;
  uint64_t resets, reset_errors;
  uint64_t expired;      /* destroyed at the end of their lifetime */
  uint64_t idle_evicted; /* destroyed after idle_timeout */
  uint64_t worn_out;     /* destroyed after max_uses */
  uint64_t leaks;        /* leak reports */
  bool closing;
  bool down;                /* failing fast (see "Creation") */
  unsigned create_failures; /* in a row, now */
  int last_create_code;     /* 0 when no create ever failed */
  wd_time last_create_at;   /* when (runtime clock) */
  char last_create_error[160];
  /* Timed acquires only (see timing_sample): from the call to the item in
   * hand (0 for an item lent at once), and from then to its release. */
  wd_pool_dist wait_time, hold_time;
} wd_pool_stats;

/* Open a pool in self: validate opts, open the pool's group in self and
 * start its tasks, register it in the runtime's registry, and - unless
 * opts->lazy - create min_idle items (up to `workers` at a time) before
 * returning.  If one of those creates fails, the open fails.  Close it with
 * wd_pool_close() from self (see "Lifetime").  The caller's file:line is
 * the pool's creation site.
 * Checkpoint: yes (the warm-up waits).  Returns 0 and stores the pool in
 * *out; or, with *out NULL and nothing left: WD_EINVAL (NULL self or out,
 * no opts, factory or create, a size or time out of range: the message
 * names it), WD_ENOMEM, WD_ECANCELED / WD_ETIMEDOUT, or the failed
 * create's code ("pool 'pg': warm-up: create failed: ..."). */
#define wd_pool_open(self, out, ...)                                           \
  wd_pool_open_((self), (out), (__VA_ARGS__), __FILE__, __LINE__)
int wd_pool_open_(wd_task *self, wd_pool **out, const wd_pool_opts *opts,
                  const char *file, int line);

/* Close pool (see "Lifetime"), from the task that opened it.
 * Checkpoint: no: it waits for the pool's tasks, at most drain_timeout
 * plus the destroys' grace, whatever happens to self.
 * Returns 0 (also for a NULL pool); WD_EBUSY when items were still in use
 * at the end of drain_timeout (they are reported, and destroyed when
 * released: the pool is closed all the same); the code of a cancelled
 * scope of self; or WD_EINVAL with the pool left open and usable: self is
 * not the opener, or a scope or group self opened after the pool is still
 * open. */
int wd_pool_close(wd_task *self, wd_pool *pool);

/* Borrow an item, waiting in FIFO order while none is free (see
 * "Lending").  The caller's file:line is recorded for leak reports.
 * Checkpoint: yes.  Returns 0 and stores the item in *out; the caller owns
 * it until wd_pool_release().  Or, with *out NULL and nothing taken:
 * WD_ECANCELED / WD_ETIMEDOUT (self was cancelled; or WD_ETIMEDOUT when
 * the acquire timeout fired, with the pool's state in the message),
 * WD_ECLOSED (the pool is closing), the create's error (the pool is down,
 * see "Creation"), WD_ENOMEM (no room for the timeout's timer), WD_EINVAL
 * (NULL self, pool or out). */
#define wd_pool_acquire(self, pool, out)                                       \
  wd_pool_acquire_((self), (pool), (out), __FILE__, __LINE__)
int wd_pool_acquire_(wd_task *self, wd_pool *pool, void **out, const char *file,
                     int line);

/* Borrow an idle item if one can be lent at once (an idle item that needs
 * validation is sent to it, for a later call).  Checkpoint: no.
 * Returns 0 and the item in *out, or with *out NULL: WD_EAGAIN (nothing
 * to lend at once, or tasks wait; no message is recorded), WD_ECLOSED,
 * WD_EINVAL. */
#define wd_pool_acquire_try(self, pool, out)                                   \
  wd_pool_acquire_try_((self), (pool), (out), __FILE__, __LINE__)
int wd_pool_acquire_try_(wd_task *self, wd_pool *pool, void **out,
                         const char *file, int line);

/* wd_pool_acquire() whose item s releases when it ends - normally, by an
 * error, by cancellation, by an early return - with WD_POOL_OK, or
 * WD_POOL_BROKEN if wd_pool_mark_broken() was called on it.  Do not
 * release it yourself (WD_EINVAL).  Checkpoint: yes.
 * Returns what wd_pool_acquire() returns, WD_EINVAL for a scope self did
 * not enter, or WD_ENOMEM when s had no room: the item was then released
 * and *out is NULL. */
#define wd_pool_acquire_scoped(self, s, pool, out)                             \
  wd_pool_acquire_scoped_((self), (s), (pool), (out), __FILE__, __LINE__)
int wd_pool_acquire_scoped_(wd_task *self, wd_scope *s, wd_pool *pool,
                            void **out, const char *file, int line);

/* Give item back (see "Keeping items healthy").  Any task may release an
 * item, not only the one that acquired it; self may be NULL (a posted
 * callback).  Checkpoint: no.  It never blocks - except for an item that
 * comes back after its pool was closed, which it destroys there and then
 * (shielded, within destroy_grace).
 * Returns 0, or WD_EINVAL with nothing changed: NULL pool or item, item
 * not lent by this pool (or released already), owned by a scope, or an
 * unknown status. */
int wd_pool_release(wd_task *self, wd_pool *pool, void *item,
                    wd_pool_status status);

/* Mark a lent item broken: whoever releases it (a scope, say) destroys
 * it.  Checkpoint: no.  Returns 0 or WD_EINVAL (as for release). */
int wd_pool_mark_broken(wd_pool *pool, void *item);

/* The pool's health: WD_ECLOSED when it is closing; the last create's
 * error when it is down; else one item checked: an idle one is taken (not
 * waiting) and validated in self's task (under validate_timeout and self's
 * scopes), and destroyed if that fails; with none idle, items in use mean
 * a healthy pool; with no item at all, one is acquired (waiting as an
 * acquire does) and validated.  Checkpoint: yes.  Returns 0 (healthy) or
 * the error found, with a message naming the pool. */
int wd_pool_health(wd_task *self, wd_pool *pool);

/* Fill *out with pool's figures.  Checkpoint: no.
 * Returns 0 or WD_EINVAL (NULL out, pool not open: *out zeroed). */
int wd_pool_stats_get(const wd_pool *pool, wd_pool_stats *out);

/* The pool's name ("" for NULL). */
const char *wd_pool_name(const wd_pool *pool);

/* Call fn for every open pool of rt (NULL: the current runtime), oldest
 * first, until it returns nonzero.  fn must not block, open or close
 * pools.  Returns the number of calls.  Checkpoint: no. */
size_t wd_pool_each(wd_runtime *rt, int (*fn)(wd_pool *pool, void *arg),
                    void *arg);

/* The resource type under which pools appear in the registry (name
 * "pool"; its health check is wd_pool_health), and the pool behind such a
 * resource (NULL for any other, or once the pool has closed). */
extern const wd_resource_type wd_pool_resource_type;
wd_pool *wd_pool_of_resource(const wd_resource *r);

#ifdef __cplusplus
}
#endif
#endif
