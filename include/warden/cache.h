/* warden/cache.h - an async cache: single-flight loads, expiry,
 * refresh-ahead, and a bounded size kept by W-TinyLFU.
 *
 * Keys are byte strings (copied).  Values are either pointers the cache
 * owns and destroys with opts.value_free, or byte copies the cache makes.
 * A miss runs the loader once however many tasks ask for the key at once;
 * the load runs in a task of the cache's own group, so a caller that is
 * cancelled never cancels it for the others.
 *
 *   static int load_user(wd_task *self, const void *key, size_t klen,
 *                        void *arg, wd_cache_load *out) {
 *     struct user *u;
 *     int rc = db_fetch_user(self, arg, key, klen, &u);
 *     if (rc) return rc;                 // every waiter gets rc
 *     out->value = u;                    // the cache owns it now
 *     return 0;
 *   }
 *
 *   wd_cache *c;
 *   rc = wd_cache_open(self, &c, &(wd_cache_opts){
 *            .name = "users", .max_entries = 10000,
 *            .ttl = 60 * WD_SEC, .refresh_after = 50 * WD_SEC,
 *            .loader = load_user, .arg = db, .value_free = user_free});
 *   ... in any task:
 *   wd_cache_ref ref;
 *   rc = wd_cache_get(task, c, "42", 2, &ref);
 *   if (rc == 0) { use(ref.value); wd_cache_ref_release(&ref); }
 *   ...
 *   wd_cache_close(self, c);            // cancels loads in flight
 *
 * ---- Values and references --------------------------------------------------
 *
 * A get hands out a reference (wd_cache_ref) to the value, which stays valid
 * until the caller releases it - also when the entry is evicted, replaced,
 * invalidated or expires meanwhile, and after the cache is closed.  The
 * value is destroyed (value_free, or the copy freed) when the cache has
 * dropped it and the last reference is released.  So a value is never
 * freed under a task that uses it, and a reference must always be
 * released (a leaked one is a leaked value: the test build reports it).
 *
 * ---- Loads (single flight) --------------------------------------------------
 *
 * On a miss, get starts one load of the key - a task of the cache's group
 * running the loader - and waits for it; later gets of that key join the
 * same load.  Every waiter gets the load's outcome: the value, or the
 * loader's error with its message.  An error is not cached, unless
 * negative caching is on (opts.negative_ttl): then gets of that key fail
 * at once with the same error until the negative entry expires (except
 * WD_ENOMEM and timeouts or cancellations, which say nothing about the
 * key: the next get loads again).
 *
 * A waiter that is cancelled (or times out) leaves the load with nothing
 * taken and the load goes on for the others; when the last waiter has
 * left, the load is cancelled (its loader sees the cancellation at its
 * checkpoints), since nobody wants its result.  A load started by
 * refresh-ahead has no waiters to lose and is never cancelled that way.
 * A waiter whose load has finished keeps what it was handed, even when it
 * is cancelled before it runs again: its next checkpoint sees the
 * cancellation.  opts.load_timeout bounds each load.
 *
 * The loader runs in the cache's task, not in the caller's: it does not see
 * the caller's task locals or scopes, and its `arg` must stay valid while
 * the cache is open (a load may outlive the get that started it).  Pass
 * what a load needs through the key.
 *
 * ---- Expiry and refresh -----------------------------------------------------
 *
 * All times are on the runtime clock (wd_now), so tests run on the virtual
 * clock.  An entry written (loaded or put) at t:
 *   - is served until t + ttl (opts.ttl, or the loader's per-entry
 *     out->ttl; 0 = never expires) and dropped then: its value is released
 *     at that time, read or not;
 *   - from t + refresh_after on, is still served, and the first such read
 *     starts one background refresh (a load with no waiters) that replaces
 *     the value when it succeeds.  A refresh that fails keeps the old value
 *     until it expires, and the next read from refresh_retry later tries
 *     again;
 *   - with opts.max_stale (stale-if-error), is kept max_stale past its
 *     expiry: a get then loads as on a miss, but if that load fails, the
 *     waiters get the old value (ref.stale is true) instead of the error.
 *
 * ---- Size and eviction
 * -------------------------------------------------------
 *
 * Bounded by entries (max_entries) or by weight (max_weight, with an
 * optional weigher); both 0 means unbounded.  Eviction follows Caffeine's
 * W-TinyLFU: new entries enter a small LRU window; entries leaving it are
 * admitted to the main space (a segmented LRU: probation and protected)
 * only if a count-min sketch of recent access frequencies says they are
 * used more often than the entry they would evict.  The sketch ages (all
 * counts halve every 10 x capacity accesses), and a hill climber resizes
 * the window to whatever gives the best hit rate for the workload.  The
 * sketch counts reads (gets, hits or misses), not puts.  A
 * sequential scan does not flush the cache, and a skewed workload keeps its
 * hot set: see docs/cache.md for hit rates against LRU.  Entries still
 * loading weigh nothing; a negative entry weighs 1.
 *
 * ---- Lifetime: the cache is a block of its opener ---------------------------
 *
 * wd_cache_open() opens a task group in the calling task - the cache's own
 * group, where its loads and its expiry task run - and wd_cache_close()
 * exits it, as for wd_batcher.  So the opener closes the cache, after
 * exiting every scope and group it opened after it (else close returns
 * WD_EINVAL and leaves it open), and a task that returns with a cache open
 * is reported and aborts, as for a group.  Any task of the runtime may use
 * the cache while it is open.
 *
 * Close refuses further calls (WD_ECLOSED), cancels the loads in flight -
 * their waiters get WD_ECLOSED: the cache went away, their own scopes were
 * not cancelled - waits for the load tasks to end, and drops every entry
 * (values with references out live until those are released).  If the
 * opener is cancelled, so is the cache's group: loads in flight and later
 * misses fail with WD_ECLOSED; cached values are still served until close.
 *
 * Values are destroyed synchronously by the call that drops them (a load
 * or a put that evicts, invalidate, clear, close, the expiry task, a
 * release): value_free must not block nor call the cache.  A cache
 * belongs to one runtime; it is not thread-safe.
 */
#ifndef WARDEN_CACHE_H
#define WARDEN_CACHE_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wd_cache wd_cache;

/* What a loader hands the cache.  Starts zeroed. */
typedef struct wd_cache_load {
  /* The value.  When the loader returns 0 the cache owns it and destroys
   * it with opts.value_free (NULL: the cache never frees values, for
   * borrowed data).  On an error return it is ignored: the loader frees
   * what it built.  Not used when wd_cache_load_copy() was called. */
  void *value;
  size_t size; /* bytes, for the weigher and readers (ref.size); optional */
  /* This entry's time to live: 0 = opts.ttl; WD_TIME_NEVER = never
   * expires; negative = give the value to the waiters but do not keep it. */
  wd_time ttl;
  void *box_; /* private: the copy made by wd_cache_load_copy() */
} wd_cache_load;

/* Load the value of key (klen bytes, owned by the cache: valid until the
 * loader returns) and fill *out.  Runs in a task of the cache's group.
 * Returns 0, or a negative code (recorded with wd_fail() for a message)
 * that every waiter gets.  May block; sees cancellation when its last
 * waiter left, at close, and at opts.load_timeout. */
typedef int (*wd_cache_loader)(wd_task *self, const void *key, size_t klen,
                               void *arg, wd_cache_load *out);

/* The weight of an entry, for a cache bounded by max_weight.  Must not
 * block.  A weight of 0 counts as 1. */
typedef size_t (*wd_cache_weigher)(const void *key, size_t klen,
                                   const void *value, size_t size, void *arg);

/* Options of wd_cache_open(); all zero is an unbounded cache without
 * expiry whose gets need a loader each (wd_cache_get_with). */
typedef struct wd_cache_opts {
  const char *name;   /* copied (31 bytes kept); default "cache" */
  size_t max_entries; /* bound by count; 0 = none (or max_weight) */
  /* Bound by weight: the sum of the entries' weights, each opts.weigher's
   * result or, without a weigher, key length + value size.  At most one
   * of max_entries and max_weight. */
  size_t max_weight;
  wd_cache_weigher weigher;
  wd_cache_loader loader; /* used by wd_cache_get; may be NULL */
  /* Destroys a value the cache owns (see wd_cache_load.value): called
   * once, when the cache dropped it and no reference is left. */
  void (*value_free)(void *value, void *arg);
  void *arg;   /* for loader, weigher and value_free: must outlive values */
  wd_time ttl; /* expire after write; 0 = never */
  /* Serve the value and refresh it in the background from this age on;
   * 0 = no refresh-ahead.  Must be below ttl when both are set. */
  wd_time refresh_after;
  /* After a failed refresh, the next read this much later tries again;
   * 0 = min(refresh_after, 1 s). */
  wd_time refresh_retry;
  /* Stale-if-error: keep an expired value this long for the case that
   * its reload fails; 0 = none.  Needs a ttl. */
  wd_time max_stale;
  /* Cache a load's error this long (negative caching); 0 = never. */
  wd_time negative_ttl;
  wd_time load_timeout; /* bound on each load (WD_ETIMEDOUT); 0 = none */
  /* Seeds the key hash and the admission's coin; 0 = a random seed.  Fix
   * it for reproducible hit rates. */
  uint64_t seed;
} wd_cache_opts;

/* A reference to a cached value, in the caller's memory.  Fields are
 * read-only; release it with wd_cache_ref_release(). */
typedef struct wd_cache_ref {
  void *value; /* the value, or the cache's copy of its bytes */
  size_t size; /* the loader's or put's size; the copy's length */
  bool stale;  /* served past its expiry: its reload failed (max_stale) */
  void *box_;  /* private */
} wd_cache_ref;

typedef struct wd_cache_stats {
  uint64_t hits;   /* gets served from the cache at once */
  uint64_t misses; /* gets that waited for a load (or found none) */
  uint64_t joined; /* of the misses, gets that joined a load */
  uint64_t loads;  /* loads started (misses and refreshes) */
  uint64_t load_successes;
  uint64_t load_failures;   /* the loader returned an error */
  uint64_t loads_cancelled; /* abandoned by their waiters, or at close */
  wd_time load_time;        /* total time loads ran, successful or not */
  wd_time load_time_p50, load_time_p99, load_time_max;
  uint64_t refreshes;        /* background refreshes started */
  uint64_t refresh_failures; /* of which failed (the old value was kept) */
  uint64_t negative_hits;    /* gets failed at once by a cached error */
  uint64_t stale_served;     /* gets given an expired value (max_stale) */
  uint64_t evictions;        /* entries dropped for size */
  uint64_t eviction_weight;
  uint64_t expirations; /* entries dropped for age */
  uint64_t puts, invalidations;
  size_t entries;  /* entries holding a value or an error */
  size_t weight;   /* their weight (= entries when bounded by count) */
  size_t capacity; /* max_entries or max_weight; 0 = unbounded */
  size_t loading;  /* loads in flight */
  size_t window;   /* the admission window's share of capacity now */
  bool closed;
} wd_cache_stats;

/* Open a cache in self: allocate it, open its group in self and start its
 * expiry task there.  It must be closed by self with wd_cache_close() (see
 * "Lifetime").  Checkpoint: no.
 * Returns 0 and stores the cache in *out; or, with *out NULL and nothing
 * held: WD_EINVAL (NULL self, out or opts; both max_entries and
 * max_weight; a negative time; refresh_after not below ttl; max_stale
 * without ttl), WD_ENOMEM. */
#define wd_cache_open(self, out, ...)                                          \
  wd_cache_open_((self), (out), (__VA_ARGS__), __FILE__, __LINE__)
int wd_cache_open_(wd_task *self, wd_cache **out, const wd_cache_opts *opts,
                   const char *file, int line);

/* Close c (see "Lifetime"): cancel its loads, wait for them, drop every
 * entry and free c.  Must be called by the task that opened c.
 * Checkpoint: yes, but it always waits for the loads to end.
 * Returns 0 (also for a NULL c), the cancellation code when self was
 * cancelled (c is closed all the same), or WD_EINVAL with c left open and
 * usable: self is not the opener, or a scope or group self opened after c
 * is still open. */
int wd_cache_close(wd_task *self, wd_cache *c);

/* The value of key (klen bytes, copied when needed; key may be NULL when
 * klen is 0), loaded with opts.loader on a miss.  Checkpoint: yes (also on
 * a hit, which does not yield).
 * Returns 0 and fills *out with a reference the caller must release; or,
 * with *out zeroed: the load's error (each waiter records it with the
 * loader's message), a cached error (negative caching), WD_ECANCELED /
 * WD_ETIMEDOUT (self was cancelled before the load delivered; the load
 * goes on for any other waiter), WD_ECLOSED (c is closing, or its group
 * was cancelled), WD_EDEADLK (a loader asked for the key it is loading),
 * WD_ENOMEM, WD_EINVAL (NULL self, c or out, NULL key with klen > 0, no
 * loader). */
int wd_cache_get(wd_task *self, wd_cache *c, const void *key, size_t klen,
                 wd_cache_ref *out);

/* wd_cache_get() with this call's loader and arg (arg must stay valid
 * while c is open).  A refresh that this get starts uses them too.
 * Checkpoint: yes.  Returns what wd_cache_get() returns. */
int wd_cache_get_with(wd_task *self, wd_cache *c, const void *key, size_t klen,
                      wd_cache_loader loader, void *arg, wd_cache_ref *out);

/* The value of key if the cache holds it now, without loading or waiting
 * (a refresh that is due starts with opts.loader, if any).
 * Checkpoint: no.  Returns 0 and fills *out (release it), or with *out
 * zeroed: WD_EAGAIN (absent, loading or expired), a cached error,
 * WD_ECLOSED, WD_EINVAL. */
int wd_cache_get_try(wd_cache *c, const void *key, size_t klen,
                     wd_cache_ref *out);

/* Store value under key, replacing what is there; ttl as for
 * wd_cache_load.ttl (0 = opts.ttl).  A load or refresh of key in flight
 * still delivers to its waiters, but does not replace this value.
 * Checkpoint: no.  Returns 0, and the cache owns value (opts.value_free
 * destroys it); or WD_ENOMEM, WD_ECLOSED, WD_EINVAL, and value stays the
 * caller's. */
int wd_cache_put(wd_cache *c, const void *key, size_t klen, void *value,
                 size_t size, wd_time ttl);

/* wd_cache_put() of a copy of size bytes at bytes (NULL when size is 0).
 * Checkpoint: no.  Returns 0, WD_ENOMEM, WD_ECLOSED, WD_EINVAL. */
int wd_cache_put_copy(wd_cache *c, const void *key, size_t klen,
                      const void *bytes, size_t size, wd_time ttl);

/* Drop key's entry, if any (a load in flight still delivers to its
 * waiters, but its result is not kept).  Checkpoint: no.
 * Returns 0 (also when absent), WD_ECLOSED, WD_EINVAL. */
int wd_cache_invalidate(wd_cache *c, const void *key, size_t klen);

/* Drop every entry, as wd_cache_invalidate() does each.  Checkpoint: no.
 * Returns 0, WD_ECLOSED, WD_EINVAL. */
int wd_cache_clear(wd_cache *c);

/* Inside a loader: make the value a copy of size bytes at bytes (aligned
 * for any type), owned by the cache; out->value and out->size then point
 * at the copy.  Returns 0 or WD_ENOMEM (out unchanged), WD_EINVAL. */
int wd_cache_load_copy(wd_cache_load *out, const void *bytes, size_t size);

/* Give a reference back; the value is destroyed if the cache dropped it
 * and this was the last reference.  Zeroes *ref; a zeroed ref or NULL is
 * a no-op.  Works after the cache was closed.  Checkpoint: no. */
void wd_cache_ref_release(wd_cache_ref *ref);

/* c's counters and size.  Checkpoint: no. */
void wd_cache_stats_get(const wd_cache *c, wd_cache_stats *out);

#ifdef __cplusplus
}
#endif
#endif
