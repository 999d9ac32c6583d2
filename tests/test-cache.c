/* wd_cache: single-flight loads (1000 concurrent misses, one load), load
 * errors and negative caching, a waiter cancelled while others wait and
 * the last waiter cancelled, expiry and refresh-ahead at exact virtual
 * times, refresh failure and stale-if-error, per-entry TTLs, put /
 * invalidate / clear against loads in flight, values that outlive their
 * entry, copies, close with loads in flight, the opener cancelled, load
 * timeouts, bad arguments, and allocation failure at every point.
 * Eviction and hit rates are in test-cache-policy.c.
 *
 * A rig is the loader's log and behaviour: when each call ran, how long it
 * works, whether it fails; its values are malloc'd records counted in
 * `live`, so every test can check that each value was destroyed exactly
 * once, and when.  Everything runs on the virtual clock. */
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define MAXC 64

typedef struct val {
  long id;
  struct rig *r;
} val;

typedef struct rig {
  wd_cache *c;
  /* the loader's behaviour */
  wd_time work;  /* each call sleeps this long first */
  int fail;      /* calls from fail_from on fail with this */
  int fail_from; /* 1-based; 0 = from the first */
  int ok_from;   /* calls from this one on succeed again; 0 = never */
  wd_time ttl;   /* out->ttl */
  bool copy;     /* return a copy of the id instead of a pointer */
  /* its log */
  int calls;
  wd_time call_at[MAXC];
  int sleep_rc[MAXC];
  /* the values */
  long live, freed;
  wd_time freed_at[MAXC];
  long freed_id[MAXC];
} rig;

static void val_free(void *p, void *arg) {
  val *v = p;
  rig *r = arg;
  cr_assert_eq(v->r, r, "destroyed with its own rig");
  if (r->freed < MAXC) {
    r->freed_at[r->freed] = wd_now(NULL);
    r->freed_id[r->freed] = v->id;
  }
  r->freed++;
  r->live--;
  free(v);
}

static int loader(wd_task *self, const void *key, size_t klen, void *arg,
                  wd_cache_load *out) {
  rig *r = arg;
  int k = r->calls++;
  cr_assert_lt(k, MAXC);
  r->call_at[k] = wd_now(self);
  if (r->work) {
    int rc = wd_sleep(self, r->work);
    r->sleep_rc[k] = rc;
    if (rc) return rc;
  }
  bool failing = r->fail && k + 1 >= (r->fail_from ? r->fail_from : 1) &&
                 !(r->ok_from && k + 1 >= r->ok_from);
  if (failing)
    return wd_fail(self, r->fail, "backend says no (call %d)", k + 1);
  out->ttl = r->ttl;
  if (r->copy) {
    long id = k + 1;
    return wd_cache_load_copy(out, &id, sizeof id);
  }
  val *v = malloc(sizeof *v);
  cr_assert_not_null(v);
  v->id = k + 1;
  v->r = r;
  r->live++;
  out->value = v;
  out->size = sizeof *v;
  return 0;
}

static int rig_open(wd_task *self, rig *r, wd_cache_opts o) {
  if (!o.name) o.name = "c";
  o.loader = loader;
  o.arg = r;
  o.value_free = val_free;
  if (!o.seed) o.seed = 42;
  return wd_cache_open(self, &r->c, &o);
}

/* Get key now: the value's id (0 when the get failed), its rc in *rc. */
static long get_id(wd_task *self, rig *r, const char *key, int *rc,
                   bool *stale) {
  wd_cache_ref ref;
  int res = wd_cache_get(self, r->c, key, strlen(key), &ref);
  if (rc) *rc = res;
  if (res) {
    cr_assert_null(ref.value, "no value on failure");
    cr_assert_null(ref.box_);
    return 0;
  }
  long id = r->copy ? *(long *)ref.value : ((val *)ref.value)->id;
  if (stale) *stale = ref.stale;
  wd_cache_ref_release(&ref);
  cr_assert_null(ref.box_, "release zeroes the ref");
  return id;
}

static long get_at(wd_task *self, rig *r, wd_time t, const char *key, int *rc) {
  cr_assert_eq(wd_sleep_until(self, t), 0);
  return get_id(self, r, key, rc, NULL);
}

static const char *msg_of(wd_task *self) {
  const wd_error *e = wd_task_error(self);
  return e ? e->msg : "(none)";
}

/* A task that gets `key` after `delay`, optionally under a move_on_after
 * of `cancel_after`, and records what it got. */
typedef struct getter {
  rig *r;
  const char *key;
  wd_time delay, cancel_after;
  int rc, after_rc;
  long id;
  bool ran; /* the get was made and returned */
  wd_time done_at;
  char msg[320];
} getter;

static int getter_main(wd_task *self, void *arg) {
  getter *g = arg;
  if (g->delay && (g->rc = wd_sleep(self, g->delay))) return 0;
  wd_cancel_scope sc;
  if (g->cancel_after && (g->rc = wd_move_on_after(self, &sc, g->cancel_after)))
    return 0;
  g->id = get_id(self, g->r, g->key, &g->rc, NULL);
  g->ran = true;
  g->done_at = wd_now(self);
  if (g->rc) snprintf(g->msg, sizeof g->msg, "%s", msg_of(self));
  g->after_rc = wd_yield(self);
  if (g->cancel_after) wd_cancel_scope_exit(self, &sc, g->after_rc);
  return 0;
}

static int spawn_getters(wd_group *g, rig *r, getter *gs, int n) {
  int rc = 0;
  for (int i = 0; i < n && rc == 0; i++) {
    gs[i].r = r;
    if (!gs[i].key) gs[i].key = "k";
    rc = wd_spawn(g, getter_main, &gs[i], NULL);
  }
  return rc;
}

/* The usual shape: open, getters in a group inside the cache's block,
 * statistics, close. */
typedef struct scene {
  rig r;
  wd_cache_opts o;
  getter g[1000];
  int n;
  wd_cache_stats st;
  int close_rc;
} scene;

static int scene_main(wd_task *self, void *arg) {
  scene *sc = arg;
  int rc = rig_open(self, &sc->r, sc->o);
  if (rc) return rc;
  wd_group g;
  rc = wd_group_enter(self, &g, NULL);
  if (rc == 0)
    rc = wd_group_exit(self, &g, spawn_getters(&g, &sc->r, sc->g, sc->n));
  wd_cache_stats_get(sc->r.c, &sc->st);
  sc->close_rc = wd_cache_close(self, sc->r.c);
  return rc;
}

static void play(scene *sc) {
  cr_assert_eq(run_virtual(scene_main, sc), 0, "scene failed");
  cr_assert_eq(sc->close_rc, 0);
  cr_assert_eq(sc->r.live, 0, "%ld values not destroyed", sc->r.live);
}

/* ---- single flight ----------------------------------------------------------
 */

Test(cache, one_load_for_1000_concurrent_misses) {
  static scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r.work = WD_SEC;
  sc.n = 1000;
  play(&sc);
  cr_assert_eq(sc.r.calls, 1, "loader called %d times", sc.r.calls);
  for (int i = 0; i < 1000; i++) {
    cr_assert_eq(sc.g[i].rc, 0, "getter %d: %s", i, sc.g[i].msg);
    cr_assert_eq(sc.g[i].id, 1);
    cr_assert_eq(sc.g[i].done_at, WD_SEC);
  }
  cr_assert_eq(sc.st.misses, 1000);
  cr_assert_eq(sc.st.joined, 999);
  cr_assert_eq(sc.st.hits, 0);
  cr_assert_eq(sc.st.loads, 1);
  cr_assert_eq(sc.st.load_successes, 1);
  cr_assert_eq(sc.st.load_time, WD_SEC);
  cr_assert_eq(sc.st.load_time_max, WD_SEC);
  cr_assert_eq(sc.st.entries, 1);
  cr_assert_eq(sc.st.loading, 0);
  cr_assert_eq(sc.r.freed, 1, "destroyed once, at close");
  assert_no_leaks();
}

Test(cache, later_gets_hit_and_other_keys_load_apart) {
  static scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r.work = WD_SEC;
  sc.n = 6;
  const char *keys[] = {"a", "b", "a", "a", "b", "c"};
  wd_time delay[] = {0, 0, 500 * WD_MSEC, 2 * WD_SEC, 3 * WD_SEC, 0};
  for (int i = 0; i < 6; i++)
    sc.g[i] = (getter){.key = keys[i], .delay = delay[i]};
  play(&sc);
  cr_assert_eq(sc.r.calls, 3, "one load per key");
  cr_assert_eq(sc.g[2].id, sc.g[0].id, "joined a's load");
  cr_assert_eq(sc.g[2].done_at, WD_SEC);
  cr_assert_eq(sc.g[3].done_at, 2 * WD_SEC, "a hit does not wait");
  cr_assert_eq(sc.g[4].id, sc.g[1].id);
  cr_assert_neq(sc.g[0].id, sc.g[1].id);
  cr_assert_eq(sc.st.hits, 2);
  cr_assert_eq(sc.st.misses, 4);
  cr_assert_eq(sc.st.joined, 1);
  cr_assert_eq(sc.st.entries, 3);
  assert_no_leaks();
}

Test(cache, a_load_error_goes_to_every_waiter_and_is_not_cached) {
  static scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r.work = WD_SEC;
  sc.r.fail = -ENOENT;
  sc.n = 11;
  for (int i = 0; i < 10; i++)
    sc.g[i] = (getter){.delay = i * 10 * WD_MSEC};
  sc.g[10] = (getter){.delay = 2 * WD_SEC};
  play(&sc);
  for (int i = 0; i < 10; i++) {
    cr_assert_eq(sc.g[i].rc, -ENOENT);
    cr_assert_str_eq(sc.g[i].msg, "cache 'c': load of key 'k' failed: "
                                  "backend says no (call 1)");
    cr_assert_eq(sc.g[i].done_at, WD_SEC);
  }
  cr_assert_eq(sc.g[10].rc, -ENOENT);
  cr_assert_str_eq(sc.g[10].msg,
                   "cache 'c': load of key 'k' failed: "
                   "backend says no (call 2)",
                   "not cached: loaded again");
  cr_assert_eq(sc.r.calls, 2);
  cr_assert_eq(sc.st.load_failures, 2);
  cr_assert_eq(sc.st.entries, 0);
  assert_no_leaks();
}

static int negative(wd_task *self, void *arg) {
  rig *r = arg;
  r->fail = -ENOENT;
  r->ok_from = 3;
  cr_assert_eq(rig_open(self, r, (wd_cache_opts){.negative_ttl = 5 * WD_SEC}),
               0);
  int rc;
  cr_assert_eq(get_at(self, r, 0, "k", &rc), 0);
  cr_assert_eq(rc, -ENOENT);
  cr_assert_eq(get_at(self, r, 4999 * WD_MSEC, "k", &rc), 0);
  cr_assert_eq(rc, -ENOENT, "the cached error");
  cr_assert_str_eq(msg_of(self), "cache 'c': load of key 'k' failed: "
                                 "backend says no (call 1) (cached failure)");
  cr_assert_eq(r->calls, 1);
  wd_cache_ref ref;
  cr_assert_eq(wd_cache_get_try(r->c, "k", 1, &ref), -ENOENT);
  wd_cache_stats st;
  wd_cache_stats_get(r->c, &st);
  cr_assert_eq(st.negative_hits, 2);
  cr_assert_eq(st.entries, 1);
  cr_assert_eq(st.weight, 1);
  /* At 5 s the negative entry is gone: the next get loads again. */
  cr_assert_eq(get_at(self, r, 5 * WD_SEC, "k", &rc), 0);
  cr_assert_eq(rc, -ENOENT);
  cr_assert_eq(r->calls, 2);
  cr_assert_eq(get_at(self, r, 10 * WD_SEC, "k", &rc), 3, "call 3 succeeds");
  wd_cache_stats_get(r->c, &st);
  cr_assert_eq(st.expirations, 2);
  cr_assert_eq(st.negative_hits, 2);
  cr_assert_eq(st.entries, 1);
  return wd_cache_close(self, r->c);
}

Test(cache, negative_caching_replays_the_error_until_its_ttl) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(negative, &r), 0);
  cr_assert_eq(r.live, 0);
  assert_no_leaks();
}

/* ---- cancellation of waiters
 * --------------------------------------------------
 */

Test(cache, a_cancelled_waiter_leaves_and_the_load_goes_on) {
  static scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r.work = WD_SEC;
  sc.n = 3;
  sc.g[0] = (getter){.cancel_after = 300 * WD_MSEC};
  sc.g[1] = (getter){.delay = 100 * WD_MSEC};
  sc.g[2] = (getter){.delay = 200 * WD_MSEC, .cancel_after = 500 * WD_MSEC};
  play(&sc);
  cr_assert_eq(sc.g[0].rc, WD_ETIMEDOUT, "its own deadline");
  cr_assert_eq(sc.g[0].done_at, 300 * WD_MSEC);
  cr_assert_str_eq(sc.g[0].msg, "cache 'c': gave up waiting for the load "
                                "of key 'k' (stopped by a deadline)");
  cr_assert_eq(sc.g[2].rc, WD_ETIMEDOUT);
  cr_assert_eq(sc.g[2].done_at, 700 * WD_MSEC);
  cr_assert_eq(sc.g[1].rc, 0, "%s", sc.g[1].msg);
  cr_assert_eq(sc.g[1].id, 1);
  cr_assert_eq(sc.g[1].done_at, WD_SEC);
  cr_assert_eq(sc.r.calls, 1);
  cr_assert_eq(sc.r.sleep_rc[0], 0, "the load was not cancelled");
  cr_assert_eq(sc.st.loads_cancelled, 0);
  cr_assert_eq(sc.st.entries, 1, "and its value was kept");
  assert_no_leaks();
}

Test(cache, the_last_waiter_leaving_cancels_the_load) {
  static scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r.work = WD_SEC;
  sc.n = 3;
  sc.g[0] = (getter){.cancel_after = 300 * WD_MSEC};
  sc.g[1] = (getter){.delay = 100 * WD_MSEC, .cancel_after = 400 * WD_MSEC};
  /* After the cancelled load: a new one. */
  sc.g[2] = (getter){.delay = 2 * WD_SEC};
  play(&sc);
  cr_assert_eq(sc.g[0].rc, WD_ETIMEDOUT);
  cr_assert_eq(sc.g[1].rc, WD_ETIMEDOUT);
  cr_assert_eq(sc.g[1].done_at, 500 * WD_MSEC);
  cr_assert_eq(sc.r.calls, 2);
  cr_assert_eq(sc.r.sleep_rc[0], WD_ECANCELED, "the load saw the cancel");
  cr_assert_eq(sc.g[2].rc, 0);
  cr_assert_eq(sc.g[2].id, 2);
  cr_assert_eq(sc.g[2].done_at, 3 * WD_SEC);
  cr_assert_eq(sc.st.loads_cancelled, 1);
  cr_assert_eq(sc.st.loads, 2);
  cr_assert_eq(sc.st.load_successes, 1);
  cr_assert_eq(sc.st.load_failures, 0);
  assert_no_leaks();
}

/* A getter that arrives while the abandoned load is still unwinding
 * starts a load of its own (the doomed one cannot be joined). */
static wd_time unwind_work = 300 * WD_MSEC;

static int slow_unwind(wd_task *self, const void *key, size_t klen, void *arg,
                       wd_cache_load *out) {
  rig *r = arg;
  int k = r->calls++;
  r->call_at[k] = wd_now(self);
  int rc = wd_sleep(self, WD_SEC);
  r->sleep_rc[k] = rc;
  if (rc) {
    /* Cleanup that takes a while, shielded from the cancellation. */
    wd_cancel_scope s;
    wd_cancel_scope_enter(self, &s, &(wd_cancel_opts){.shield = true});
    wd_sleep(self, unwind_work);
    wd_cancel_scope_exit(self, &s, 0);
    return rc;
  }
  val *v = malloc(sizeof *v);
  v->id = k + 1;
  v->r = r;
  r->live++;
  out->value = v;
  return 0;
}

static int abandoned_then_new(wd_task *self, void *arg) {
  rig *r = arg;
  cr_assert_eq(wd_cache_open(self, &r->c,
                             &(wd_cache_opts){.name = "c",
                                              .loader = slow_unwind,
                                              .arg = r,
                                              .value_free = val_free}),
               0);
  wd_group g;
  static getter gs[2];
  memset(gs, 0, sizeof gs);
  gs[0] = (getter){.cancel_after = 100 * WD_MSEC};
  gs[1] = (getter){.delay = 200 * WD_MSEC};
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(spawn_getters(&g, r, gs, 2), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(gs[0].rc, WD_ETIMEDOUT);
  cr_assert_eq(gs[1].rc, 0);
  cr_assert_eq(gs[1].id, 2, "its own load");
  cr_assert_eq(gs[1].done_at, 1200 * WD_MSEC);
  cr_assert_eq(r->calls, 2);
  return wd_cache_close(self, r->c);
}

Test(cache, a_get_after_the_load_was_abandoned_starts_afresh) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(abandoned_then_new, &r), 0);
  cr_assert_eq(r.live, 0);
  assert_no_leaks();
}

static int cancelled_get(wd_task *self, void *arg) {
  rig *r = arg;
  cr_assert_eq(rig_open(self, r, (wd_cache_opts){0}), 0);
  wd_cancel_scope s;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  wd_cancel(&s);
  wd_cache_ref ref;
  cr_assert_eq(wd_cache_get(self, r->c, "k", 1, &ref), WD_ECANCELED);
  cr_assert_str_eq(msg_of(self), "cache 'c': get of key 'k' cancelled");
  wd_cancel_scope_exit(self, &s, WD_ECANCELED);
  wd_cache_stats st;
  wd_cache_stats_get(r->c, &st);
  cr_assert_eq(st.loads, 0, "a cancelled get starts nothing");
  cr_assert_eq(st.misses, 0);
  cr_assert_eq(r->calls, 0);
  return wd_cache_close(self, r->c);
}

Test(cache, a_get_by_a_cancelled_task_is_not_made) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(cancelled_get, &r), 0);
  assert_no_leaks();
}

/* ---- expiry and refresh
 * ------------------------------------------------------
 */

static int ttl_exact(wd_task *self, void *arg) {
  rig *r = arg;
  cr_assert_eq(rig_open(self, r, (wd_cache_opts){.ttl = 10 * WD_SEC}), 0);
  cr_assert_eq(get_at(self, r, WD_SEC, "k", NULL), 1);
  cr_assert_eq(get_at(self, r, 11 * WD_SEC - 1, "k", NULL), 1, "still fresh");
  cr_assert_eq(r->freed, 0);
  /* The expiry task drops it at 11 s exactly, before anyone asks. */
  cr_assert_eq(wd_sleep_until(self, 11 * WD_SEC + WD_MSEC), 0);
  cr_assert_eq(r->freed, 1);
  cr_assert_eq(r->freed_at[0], 11 * WD_SEC);
  wd_cache_ref ref;
  cr_assert_eq(wd_cache_get_try(r->c, "k", 1, &ref), WD_EAGAIN);
  cr_assert_eq(get_at(self, r, 12 * WD_SEC, "k", NULL), 2, "loaded again");
  wd_cache_stats st;
  wd_cache_stats_get(r->c, &st);
  cr_assert_eq(st.expirations, 1);
  cr_assert_eq(st.hits, 1);
  cr_assert_eq(st.misses, 3);
  return wd_cache_close(self, r->c);
}

Test(cache, an_entry_expires_exactly_at_its_ttl) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(ttl_exact, &r), 0);
  cr_assert_eq(r.live, 0);
  assert_no_leaks();
}

/* A read at the very nanosecond of expiry finds it expired even when the
 * expiry task has not run yet (reads check the time themselves). */
static int ttl_read_first(wd_task *self, void *arg) {
  rig *r = arg;
  cr_assert_eq(rig_open(self, r, (wd_cache_opts){.ttl = 10 * WD_SEC}), 0);
  cr_assert_eq(get_at(self, r, 0, "k", NULL), 1);
  cr_assert_eq(get_at(self, r, 10 * WD_SEC, "k", NULL), 2);
  cr_assert_eq(r->freed_at[0], 10 * WD_SEC);
  return wd_cache_close(self, r->c);
}

Test(cache, a_read_at_the_expiry_instant_loads_again) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(ttl_read_first, &r), 0);
  cr_assert_eq(r.live, 0);
  assert_no_leaks();
}

static int refresh_schedule(wd_task *self, void *arg) {
  rig *r = arg;
  r->work = WD_SEC;
  cr_assert_eq(rig_open(self, r,
                        (wd_cache_opts){.ttl = 10 * WD_SEC,
                                        .refresh_after = 6 * WD_SEC}),
               0);
  /* Loaded by 1 s: refresh due at 7 s, expiry at 11 s. */
  cr_assert_eq(get_at(self, r, 0, "k", NULL), 1);
  cr_assert_eq(get_at(self, r, 6500 * WD_MSEC, "k", NULL), 1);
  cr_assert_eq(r->calls, 1, "not due yet");
  /* Due: the old value is served and one refresh starts. */
  cr_assert_eq(get_at(self, r, 7 * WD_SEC, "k", NULL), 1);
  cr_assert_eq(get_at(self, r, 7500 * WD_MSEC, "k", NULL), 1);
  cr_assert_eq(r->calls, 2, "one refresh, however many reads");
  cr_assert_eq(r->call_at[1], 7 * WD_SEC);
  /* Refreshed at 8 s: the old value goes, next refresh at 14 s. */
  cr_assert_eq(get_at(self, r, 8500 * WD_MSEC, "k", NULL), 2);
  cr_assert_eq(r->freed, 1);
  cr_assert_eq(r->freed_at[0], 8 * WD_SEC);
  cr_assert_eq(get_at(self, r, 13999 * WD_MSEC, "k", NULL), 2);
  cr_assert_eq(r->calls, 2);
  cr_assert_eq(get_at(self, r, 14 * WD_SEC, "k", NULL), 2);
  cr_assert_eq(wd_yield(self), 0); /* the refresh starts */
  cr_assert_eq(r->call_at[2], 14 * WD_SEC);
  /* Nobody reads any more: the value written at 15 s expires at 25 s. */
  cr_assert_eq(wd_sleep_until(self, 30 * WD_SEC), 0);
  cr_assert_eq(r->freed, 3);
  cr_assert_eq(r->freed_at[1], 15 * WD_SEC, "value 2, replaced");
  cr_assert_eq(r->freed_at[2], 25 * WD_SEC, "value 3, expired");
  wd_cache_stats st;
  wd_cache_stats_get(r->c, &st);
  cr_assert_eq(st.refreshes, 2);
  cr_assert_eq(st.refresh_failures, 0);
  cr_assert_eq(st.loads, 3);
  cr_assert_eq(st.hits, 6);
  cr_assert_eq(st.misses, 1);
  cr_assert_eq(st.expirations, 1);
  return wd_cache_close(self, r->c);
}

Test(cache, refresh_ahead_serves_the_old_value_while_one_refresh_runs) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(refresh_schedule, &r), 0);
  cr_assert_eq(r.live, 0);
  assert_no_leaks();
}

/* The value expires while its refresh runs: a get then waits for that
 * refresh (one load) instead of starting another. */
static int expiry_during_refresh(wd_task *self, void *arg) {
  rig *r = arg;
  r->work = 6 * WD_SEC;
  cr_assert_eq(rig_open(self, r,
                        (wd_cache_opts){.ttl = 10 * WD_SEC,
                                        .refresh_after = 5 * WD_SEC}),
               0);
  /* Written at 6 s: refresh from 11 s, expiry at 16 s. */
  cr_assert_eq(get_at(self, r, 0, "k", NULL), 1);
  cr_assert_eq(wd_now(self), 6 * WD_SEC);
  cr_assert_eq(get_at(self, r, 11 * WD_SEC, "k", NULL), 1, "refresh starts");
  cr_assert_eq(get_at(self, r, 16 * WD_SEC, "k", NULL), 2, "joined it");
  cr_assert_eq(wd_now(self), 17 * WD_SEC);
  cr_assert_eq(r->calls, 2);
  cr_assert_eq(r->freed_at[0], 16 * WD_SEC, "expired at 16 s");
  wd_cache_stats st;
  wd_cache_stats_get(r->c, &st);
  cr_assert_eq(st.joined, 1);
  cr_assert_eq(st.refreshes, 1);
  return wd_cache_close(self, r->c);
}

Test(cache, a_get_after_expiry_joins_the_refresh_in_flight) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(expiry_during_refresh, &r), 0);
  cr_assert_eq(r.live, 0);
  assert_no_leaks();
}

static int refresh_failure(wd_task *self, void *arg) {
  rig *r = arg;
  r->fail = -EIO;
  r->fail_from = 2;
  cr_assert_eq(rig_open(self, r,
                        (wd_cache_opts){.ttl = 10 * WD_SEC,
                                        .refresh_after = 5 * WD_SEC,
                                        .refresh_retry = WD_SEC}),
               0);
  int rc;
  cr_assert_eq(get_at(self, r, 0, "k", NULL), 1);
  cr_assert_eq(get_at(self, r, 5 * WD_SEC, "k", NULL), 1, "refresh starts");
  cr_assert_eq(get_at(self, r, 5500 * WD_MSEC, "k", NULL), 1);
  cr_assert_eq(r->calls, 2, "it failed; the next try is from 6 s");
  cr_assert_eq(get_at(self, r, 6 * WD_SEC, "k", NULL), 1);
  cr_assert_eq(wd_yield(self), 0); /* the refresh runs (and fails) */
  cr_assert_eq(r->calls, 3);
  cr_assert_eq(r->call_at[2], 6 * WD_SEC);
  cr_assert_eq(get_at(self, r, 9999 * WD_MSEC, "k", NULL), 1, "kept");
  cr_assert_eq(wd_yield(self), 0);
  cr_assert_eq(r->freed, 0);
  cr_assert_eq(r->calls, 4);
  /* Expired at 10 s: the value goes, and a get waits for a load. */
  cr_assert_eq(get_at(self, r, 10 * WD_SEC, "k", &rc), 0);
  cr_assert_eq(rc, -EIO);
  cr_assert_eq(r->freed_at[0], 10 * WD_SEC);
  wd_cache_stats st;
  wd_cache_stats_get(r->c, &st);
  cr_assert_eq(st.refreshes, 3);
  cr_assert_eq(st.refresh_failures, 3);
  cr_assert_eq(st.load_failures, 4);
  cr_assert_eq(st.entries, 0);
  return wd_cache_close(self, r->c);
}

Test(cache, a_failed_refresh_keeps_the_old_value_until_it_expires) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(refresh_failure, &r), 0);
  cr_assert_eq(r.live, 0);
  assert_no_leaks();
}

static int stale_if_error(wd_task *self, void *arg) {
  rig *r = arg;
  r->fail = -EIO;
  r->fail_from = 2;
  r->ok_from = 4;
  cr_assert_eq(
      rig_open(self, r,
               (wd_cache_opts){.ttl = 10 * WD_SEC, .max_stale = 5 * WD_SEC}),
      0);
  int rc;
  bool stale = false;
  cr_assert_eq(get_at(self, r, 0, "k", NULL), 1);
  cr_assert_eq(wd_sleep_until(self, 12 * WD_SEC), 0);
  /* Expired: reload, which fails, so the old value is served. */
  cr_assert_eq(get_id(self, r, "k", &rc, &stale), 1);
  cr_assert_eq(rc, 0);
  cr_assert(stale, "marked stale");
  wd_cache_ref ref;
  cr_assert_eq(wd_cache_get_try(r->c, "k", 1, &ref), WD_EAGAIN,
               "an expired value is not served without a failed reload");
  cr_assert_eq(get_at(self, r, 13 * WD_SEC, "k", &rc), 1);
  cr_assert_eq(r->calls, 3);
  /* Call 4 succeeds: a fresh value. */
  stale = true;
  cr_assert_eq(wd_sleep_until(self, 14 * WD_SEC), 0);
  cr_assert_eq(get_id(self, r, "k", &rc, &stale), 4);
  cr_assert(!stale);
  cr_assert_eq(r->freed_at[0], 14 * WD_SEC);
  wd_cache_stats st;
  wd_cache_stats_get(r->c, &st);
  cr_assert_eq(st.stale_served, 2);
  /* Past max_stale nothing old is served: here it fails outright. */
  r->ok_from = 0;
  cr_assert_eq(get_at(self, r, 29 * WD_SEC, "k", &rc), 0);
  cr_assert_eq(rc, -EIO);
  cr_assert_eq(r->freed_at[1], 29 * WD_SEC, "dropped at 24 + 5 s");
  return wd_cache_close(self, r->c);
}

Test(cache, stale_if_error_serves_the_old_value_within_max_stale) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(stale_if_error, &r), 0);
  cr_assert_eq(r.live, 0);
  assert_no_leaks();
}

static int per_entry_ttl(wd_task *self, void *arg) {
  rig *r = arg;
  cr_assert_eq(rig_open(self, r, (wd_cache_opts){.ttl = 10 * WD_SEC}), 0);
  r->ttl = 2 * WD_SEC;
  cr_assert_eq(get_at(self, r, 0, "short", NULL), 1);
  r->ttl = WD_TIME_NEVER;
  cr_assert_eq(get_at(self, r, 0, "forever", NULL), 2);
  r->ttl = -1;
  cr_assert_eq(get_at(self, r, 0, "nostore", NULL), 3);
  cr_assert_eq(r->freed, 1, "given to its getter, not kept");
  r->ttl = 0;
  cr_assert_eq(get_at(self, r, 0, "default", NULL), 4);
  cr_assert_eq(wd_sleep_until(self, 100 * WD_SEC), 0);
  cr_assert_eq(r->freed, 3);
  cr_assert_eq(r->freed_at[1], 2 * WD_SEC);
  cr_assert_eq(r->freed_at[2], 10 * WD_SEC);
  cr_assert_eq(get_at(self, r, 100 * WD_SEC, "forever", NULL), 2);
  return wd_cache_close(self, r->c);
}

Test(cache, the_loader_sets_each_entrys_ttl) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(per_entry_ttl, &r), 0);
  cr_assert_eq(r.live, 0);
  assert_no_leaks();
}

/* ---- put, invalidate, clear, references
 * -----------------------------------------
 */

static val *mkval(rig *r, long id) {
  val *v = malloc(sizeof *v);
  v->id = id;
  v->r = r;
  r->live++;
  return v;
}

static int put_during_load(wd_task *self, void *arg) {
  rig *r = arg;
  r->work = WD_SEC;
  cr_assert_eq(rig_open(self, r, (wd_cache_opts){0}), 0);
  wd_group g;
  static getter gs[1];
  memset(gs, 0, sizeof gs);
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(spawn_getters(&g, r, gs, 1), 0);
  cr_assert_eq(wd_sleep(self, 500 * WD_MSEC), 0);
  cr_assert_eq(wd_cache_put(r->c, "k", 1, mkval(r, 100), 0, 0), 0);
  cr_assert_eq(get_id(self, r, "k", NULL, NULL), 100, "a hit on the put");
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(gs[0].id, 1, "the waiter gets its load's value");
  cr_assert_eq(get_id(self, r, "k", NULL, NULL), 100, "the put won");
  cr_assert_eq(r->freed, 1);
  cr_assert_eq(r->freed_id[0], 1, "the load's value was not kept");
  return wd_cache_close(self, r->c);
}

Test(cache, a_put_while_a_load_runs_wins_over_the_load) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(put_during_load, &r), 0);
  cr_assert_eq(r.live, 0);
  assert_no_leaks();
}

static int invalidate_during_load(wd_task *self, void *arg) {
  rig *r = arg;
  r->work = WD_SEC;
  cr_assert_eq(rig_open(self, r, (wd_cache_opts){0}), 0);
  wd_group g;
  static getter gs[2];
  memset(gs, 0, sizeof gs);
  gs[1].delay = 600 * WD_MSEC;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(spawn_getters(&g, r, gs, 2), 0);
  cr_assert_eq(wd_sleep(self, 500 * WD_MSEC), 0);
  cr_assert_eq(wd_cache_invalidate(r->c, "k", 1), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(gs[0].id, 1);
  cr_assert_eq(gs[0].done_at, WD_SEC);
  cr_assert_eq(gs[1].id, 2, "a load of its own after the invalidation");
  cr_assert_eq(gs[1].done_at, 1600 * WD_MSEC);
  cr_assert_eq(get_id(self, r, "k", NULL, NULL), 2);
  wd_cache_stats st;
  wd_cache_stats_get(r->c, &st);
  cr_assert_eq(st.entries, 1);
  cr_assert_eq(st.invalidations, 1);
  return wd_cache_close(self, r->c);
}

Test(cache, an_invalidation_while_a_load_runs_keeps_its_result_out) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(invalidate_during_load, &r), 0);
  cr_assert_eq(r.live, 0);
  assert_no_leaks();
}

static int refs_outlive(wd_task *self, void *arg) {
  rig *r = arg;
  cr_assert_eq(rig_open(self, r, (wd_cache_opts){.max_entries = 2}), 0);
  wd_cache_ref a, b, c2;
  cr_assert_eq(wd_cache_get(self, r->c, "a", 1, &a), 0);
  cr_assert_eq(wd_cache_get(self, r->c, "b", 1, &b), 0);
  cr_assert_eq(wd_cache_get(self, r->c, "b", 1, &c2), 0);
  cr_assert_eq(b.value, c2.value);
  cr_assert_eq(wd_cache_invalidate(r->c, "a", 1), 0);
  cr_assert_eq(wd_cache_invalidate(r->c, "zz", 2), 0, "absent is fine");
  cr_assert_eq(r->freed, 0, "a is still referenced");
  cr_assert_eq(((val *)a.value)->id, 1);
  wd_cache_ref_release(&a);
  cr_assert_eq(r->freed, 1);
  wd_cache_ref_release(&a); /* zeroed: a no-op */
  wd_cache_ref_release(NULL);
  cr_assert_eq(wd_cache_clear(r->c), 0);
  wd_cache_stats st;
  wd_cache_stats_get(r->c, &st);
  cr_assert_eq(st.entries, 0);
  cr_assert_eq(st.invalidations, 2);
  cr_assert_eq(r->freed, 1, "b is referenced twice");
  wd_cache_ref_release(&c2);
  cr_assert_eq(wd_cache_get(self, r->c, "c", 1, &c2), 0);
  cr_assert_eq(wd_cache_close(self, r->c), 0);
  cr_assert_eq(r->freed, 1, "references outlive the cache");
  cr_assert_eq(((val *)b.value)->id, 2);
  wd_cache_ref_release(&b);
  wd_cache_ref_release(&c2);
  cr_assert_eq(r->freed, 3);
  return 0;
}

Test(cache, a_value_lives_until_its_last_reference_is_released) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(refs_outlive, &r), 0);
  cr_assert_eq(r.live, 0);
  assert_no_leaks();
}

static int copies(wd_task *self, void *arg) {
  rig *r = arg;
  r->copy = true;
  cr_assert_eq(rig_open(self, r, (wd_cache_opts){.max_weight = 100}), 0);
  wd_cache_ref ref;
  cr_assert_eq(wd_cache_get(self, r->c, "k", 1, &ref), 0);
  cr_assert_eq(ref.size, sizeof(long));
  cr_assert_eq(*(long *)ref.value, 1);
  cr_assert_eq((uintptr_t)ref.value % _Alignof(max_align_t), 0, "aligned");
  wd_cache_ref_release(&ref);
  char buf[20] = "hello, cache";
  cr_assert_eq(wd_cache_put_copy(r->c, "h", 1, buf, 13, 0), 0);
  memset(buf, 'x', sizeof buf);
  cr_assert_eq(wd_cache_get_try(r->c, "h", 1, &ref), 0);
  cr_assert_str_eq(ref.value, "hello, cache");
  wd_cache_ref_release(&ref);
  cr_assert_eq(wd_cache_put_copy(r->c, "", 0, NULL, 0, 0), 0, "empty");
  cr_assert_eq(wd_cache_get_try(r->c, NULL, 0, &ref), 0);
  cr_assert_eq(ref.size, 0);
  wd_cache_ref_release(&ref);
  wd_cache_stats st;
  wd_cache_stats_get(r->c, &st);
  /* Without a weigher: key length + value size. */
  cr_assert_eq(st.weight, (1 + sizeof(long)) + (1 + 13) + 1);
  cr_assert_eq(r->freed, 0, "copies are not value_free's");
  return wd_cache_close(self, r->c);
}

Test(cache, values_can_be_byte_copies) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(copies, &r), 0);
  assert_no_leaks();
}

static int try_and_put(wd_task *self, void *arg) {
  rig *r = arg;
  r->work = WD_SEC;
  cr_assert_eq(rig_open(self, r, (wd_cache_opts){.ttl = 5 * WD_SEC}), 0);
  wd_cache_ref ref;
  cr_assert_eq(wd_cache_get_try(r->c, "k", 1, &ref), WD_EAGAIN);
  cr_assert_null(ref.value);
  wd_group g;
  static getter gs[1];
  memset(gs, 0, sizeof gs);
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(spawn_getters(&g, r, gs, 1), 0);
  cr_assert_eq(wd_sleep(self, 500 * WD_MSEC), 0);
  cr_assert_eq(wd_cache_get_try(r->c, "k", 1, &ref), WD_EAGAIN, "loading");
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_cache_get_try(r->c, "k", 1, &ref), 0);
  cr_assert_eq(((val *)ref.value)->id, 1);
  wd_cache_ref_release(&ref);
  /* A put with its own ttl, and one that is not kept. */
  cr_assert_eq(wd_cache_put(r->c, "p", 1, mkval(r, 7), 0, 20 * WD_SEC), 0);
  cr_assert_eq(wd_cache_put(r->c, "q", 1, mkval(r, 8), 0, -1), 0);
  cr_assert_eq(r->freed, 1);
  cr_assert_eq(wd_cache_get_try(r->c, "q", 1, &ref), WD_EAGAIN);
  /* Replacing a value destroys the old one. */
  cr_assert_eq(wd_cache_put(r->c, "k", 1, mkval(r, 9), 0, 0), 0);
  cr_assert_eq(r->freed, 2);
  cr_assert_eq(r->freed_id[1], 1);
  cr_assert_eq(wd_sleep_until(self, 30 * WD_SEC), 0);
  cr_assert_eq(r->freed_at[2], 6 * WD_SEC, "k: put at 1 s, ttl 5 s");
  cr_assert_eq(r->freed_at[3], 21 * WD_SEC, "p: its own 20 s");
  wd_cache_stats st;
  wd_cache_stats_get(r->c, &st);
  cr_assert_eq(st.puts, 3);
  return wd_cache_close(self, r->c);
}

Test(cache, get_try_and_put) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(try_and_put, &r), 0);
  cr_assert_eq(r.live, 0);
  assert_no_leaks();
}

/* A loader given with the get, and a cache without one of its own. */
static int other_loader(wd_task *self, const void *key, size_t klen, void *arg,
                        wd_cache_load *out) {
  long *n = arg;
  (*n)++;
  return wd_cache_load_copy(out, key, klen);
}

static int per_call_loader(wd_task *self, void *arg) {
  wd_cache *c;
  cr_assert_eq(wd_cache_open(self, &c, &(wd_cache_opts){.name = "p"}), 0);
  wd_cache_ref ref;
  cr_assert_eq(wd_cache_get(self, c, "k", 1, &ref), WD_EINVAL);
  cr_assert_str_eq(msg_of(self), "cache 'p': key 'k' is not cached and there "
                                 "is no loader");
  long n = 0;
  cr_assert_eq(
      wd_cache_get_with(self, c, "key\n\x01", 5, other_loader, &n, &ref), 0);
  cr_assert_eq(ref.size, 5);
  cr_assert_eq(memcmp(ref.value, "key\n\x01", 5), 0);
  wd_cache_ref_release(&ref);
  cr_assert_eq(wd_cache_get(self, c, "key\n\x01", 5, &ref), 0, "a hit");
  wd_cache_ref_release(&ref);
  cr_assert_eq(n, 1);
  cr_assert_eq(wd_cache_close(self, c), 0);
  return 0;
}

Test(cache, a_get_can_bring_its_own_loader) {
  cr_assert_eq(run_virtual(per_call_loader, NULL), 0);
  assert_no_leaks();
}

/* A loader that asks the cache for the key it is loading would wait for
 * itself: refused with WD_EDEADLK.  Other keys are fine. */
static int recursive_loader(wd_task *self, const void *key, size_t klen,
                            void *arg, wd_cache_load *out) {
  wd_cache *c = *(wd_cache **)arg;
  wd_cache_ref ref;
  if (klen == 1 && *(const char *)key == 'a') {
    int rc = wd_cache_get(self, c, "a", 1, &ref);
    cr_assert_eq(rc, WD_EDEADLK);
    cr_assert_str_eq(msg_of(self), "cache 'r': the loader of key 'a' asked "
                                   "for that key itself (it would wait for "
                                   "its own load)");
    rc = wd_cache_get(self, c, "b", 1, &ref);
    if (rc) return rc;
    wd_cache_ref_release(&ref);
  }
  return wd_cache_load_copy(out, key, klen);
}

static int recursive(wd_task *self, void *arg) {
  static wd_cache *c;
  cr_assert_eq(
      wd_cache_open(
          self, &c,
          &(wd_cache_opts){.name = "r", .loader = recursive_loader, .arg = &c}),
      0);
  wd_cache_ref ref;
  cr_assert_eq(wd_cache_get(self, c, "a", 1, &ref), 0);
  wd_cache_ref_release(&ref);
  wd_cache_stats st;
  wd_cache_stats_get(c, &st);
  cr_assert_eq(st.entries, 2);
  return wd_cache_close(self, c);
}

Test(cache, a_loader_asking_for_its_own_key_is_refused) {
  cr_assert_eq(run_virtual(recursive, NULL), 0);
  assert_no_leaks();
}

/* ---- timeouts, close, the opener's cancellation
 * ----------------------------------
 */

static int load_timeout(wd_task *self, void *arg) {
  rig *r = arg;
  r->work = 10 * WD_SEC;
  cr_assert_eq(rig_open(self, r,
                        (wd_cache_opts){.load_timeout = WD_SEC,
                                        .negative_ttl = 5 * WD_SEC}),
               0);
  int rc;
  cr_assert_eq(get_at(self, r, 0, "k", &rc), 0);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  cr_assert_str_eq(msg_of(self), "cache 'c': load of key 'k' failed: cache "
                                 "'c' load: timed out after 1.000 s");
  cr_assert_eq(wd_now(self), WD_SEC);
  cr_assert_eq(wd_cancel_status(self), 0, "not the getter's own deadline");
  /* A timeout says nothing about the key: not cached as a failure. */
  r->work = 0;
  cr_assert_eq(get_id(self, r, "k", &rc, NULL), 2);
  wd_cache_stats st;
  wd_cache_stats_get(r->c, &st);
  cr_assert_eq(st.load_failures, 1);
  cr_assert_eq(st.negative_hits, 0);
  return wd_cache_close(self, r->c);
}

Test(cache, a_load_timeout_bounds_each_load) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(load_timeout, &r), 0);
  assert_no_leaks();
}

typedef struct closing {
  rig r;
  getter g[4];
  int close_rc;
  wd_time closed_at;
} closing;

static int close_inflight(wd_task *self, void *arg) {
  closing *cl = arg;
  cl->r.work = 10 * WD_SEC;
  wd_group outer;
  cr_assert_eq(wd_group_enter(self, &outer, NULL), 0);
  cr_assert_eq(rig_open(self, &cl->r, (wd_cache_opts){0}), 0);
  cr_assert_eq(wd_cache_put(cl->r.c, "p", 1, mkval(&cl->r, 50), 0, 0), 0);
  cl->g[0].key = "a";
  cl->g[1].key = "a";
  cl->g[2].key = "b";
  cr_assert_eq(spawn_getters(&outer, &cl->r, cl->g, 3), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  cl->close_rc = wd_cache_close(self, cl->r.c);
  cl->closed_at = wd_now(self);
  return wd_group_exit(self, &outer, 0);
}

Test(cache, close_cancels_the_loads_and_their_waiters_get_eclosed) {
  static closing cl;
  memset(&cl, 0, sizeof cl);
  cr_assert_eq(run_virtual(close_inflight, &cl), 0);
  cr_assert_eq(cl.close_rc, 0);
  cr_assert_eq(cl.closed_at, WD_SEC, "close does not wait out the loads");
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(cl.g[i].rc, WD_ECLOSED, "getter %d", i);
    cr_assert_eq(cl.g[i].done_at, WD_SEC);
    cr_assert_eq(cl.g[i].after_rc, 0, "the getter itself is not cancelled");
  }
  cr_assert_str_eq(cl.g[0].msg, "cache 'c' was closed while loading key 'a'");
  cr_assert_str_eq(cl.g[2].msg, "cache 'c' was closed while loading key 'b'");
  cr_assert_eq(cl.r.calls, 2);
  cr_assert_eq(cl.r.sleep_rc[0], WD_ECANCELED);
  cr_assert_eq(cl.r.sleep_rc[1], WD_ECANCELED);
  cr_assert_eq(cl.r.live, 0);
  cr_assert_eq(cl.r.freed_id[0], 50);
  assert_no_leaks();
}

static int lifo(wd_task *self, void *arg) {
  rig *r = arg;
  cr_assert_eq(rig_open(self, r, (wd_cache_opts){0}), 0);
  wd_cancel_scope s;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  cr_assert_eq(wd_cache_close(self, r->c), WD_EINVAL, "a scope is open in it");
  cr_assert_eq(get_id(self, r, "k", NULL, NULL), 1, "left open and usable");
  wd_cancel_scope_exit(self, &s, 0);
  cr_assert_eq(wd_cache_close(self, r->c), 0);
  cr_assert_eq(wd_cache_close(self, NULL), 0);
  return 0;
}

Test(cache, close_out_of_order_is_refused_and_leaves_it_open) {
  static rig r;
  memset(&r, 0, sizeof r);
  cr_assert_eq(run_virtual(lifo, &r), 0);
  cr_assert_eq(r.live, 0);
  assert_no_leaks();
}

typedef struct foreign {
  wd_cache *c;
  int rc;
  char msg[160];
} foreign;

static int close_foreign(wd_task *self, void *arg) {
  foreign *f = arg;
  f->rc = wd_cache_close(self, f->c);
  snprintf(f->msg, sizeof f->msg, "%s", msg_of(self));
  return 0;
}

static int not_the_owner(wd_task *self, void *arg) {
  foreign f = {0};
  cr_assert_eq(wd_cache_open(self, &f.c, &(wd_cache_opts){.name = "o"}), 0);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, close_foreign, &f, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(f.rc, WD_EINVAL);
  cr_assert(strstr(f.msg, "cache 'o': opened by task 1, so task"), "%s", f.msg);
  cr_assert_eq(wd_cache_close(self, f.c), 0);
  return 0;
}

Test(cache, only_the_opener_closes) {
  cr_assert_eq(run_virtual(not_the_owner, NULL), 0);
  assert_no_leaks();
}

/* The opener's scope is cancelled while loads run: they fail with
 * WD_ECLOSED, later misses too, but what is cached is still served until
 * the opener, in a shielded cleanup, closes the cache. */
typedef struct shut {
  rig r;
  getter g[2];
  int hit_rc, miss_rc, close_rc;
  long hit_id;
  char miss_msg[200];
} shut;

static int shut_worker(wd_task *self, void *arg) {
  shut *s = arg;
  cr_assert_eq(rig_open(self, &s->r, (wd_cache_opts){0}), 0);
  cr_assert_eq(wd_cache_put(s->r.c, "p", 1, mkval(&s->r, 50), 0, 0), 0);
  int rc = wd_sleep(self, 100 * WD_SEC); /* until cancelled */
  cr_assert_eq(rc, WD_ECANCELED);
  wd_cancel_scope cleanup;
  cr_assert_eq(
      wd_cancel_scope_enter(self, &cleanup, &(wd_cancel_opts){.shield = true}),
      0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_cancel_scope_exit(self, &cleanup, 0);
  s->close_rc = wd_cache_close(self, s->r.c);
  return s->close_rc;
}

static int shut_main(wd_task *self, void *arg) {
  shut *s = arg;
  s->r.work = 10 * WD_SEC;
  wd_group outer;
  cr_assert_eq(wd_group_enter(self, &outer, NULL), 0);
  wd_handle h = {0};
  cr_assert_eq(wd_spawn(&outer, shut_worker, s, &(wd_spawn_opts){.handle = &h}),
               0);
  cr_assert_eq(wd_yield(self), 0); /* the worker opens the cache */
  cr_assert_eq(spawn_getters(&outer, &s->r, s->g, 2), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  wd_handle_cancel(&h); /* the opener, and with it the cache's group */
  cr_assert_eq(wd_sleep(self, 500 * WD_MSEC), 0);
  s->hit_id = get_id(self, &s->r, "p", &s->hit_rc, NULL);
  get_id(self, &s->r, "zz", &s->miss_rc, NULL);
  snprintf(s->miss_msg, sizeof s->miss_msg, "%s", msg_of(self));
  return wd_group_exit(self, &outer, 0);
}

Test(cache, when_the_opener_is_cancelled_loads_fail_with_eclosed) {
  static shut s;
  memset(&s, 0, sizeof s);
  s.g[0].key = "a";
  s.g[1].key = "a";
  cr_assert_eq(run_virtual(shut_main, &s), 0);
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(s.g[i].rc, WD_ECLOSED);
    cr_assert_eq(s.g[i].done_at, WD_SEC);
    cr_assert_str_eq(s.g[i].msg, "cache 'c' is shut down (its group was "
                                 "cancelled): key 'a' was not loaded");
  }
  cr_assert_eq(s.hit_rc, 0, "cached values are still served");
  cr_assert_eq(s.hit_id, 50);
  cr_assert_eq(s.miss_rc, WD_ECLOSED);
  cr_assert_str_eq(s.miss_msg, "cache 'c' is shut down (its group was "
                               "cancelled): load of key 'zz' refused");
  cr_assert_eq(s.close_rc, WD_ECANCELED, "close reports the cancellation");
  cr_assert_eq(s.r.calls, 1);
  cr_assert_eq(s.r.live, 0);
  assert_no_leaks();
}

/* ---- arguments
 * ----------------------------------------------------------------
 */

static void refuses(wd_task *self, const wd_cache_opts *o, const char *want) {
  wd_cache *c = (wd_cache *)(intptr_t)1;
  cr_assert_eq(wd_cache_open(self, &c, o), WD_EINVAL, "accepted: %s", want);
  cr_assert_null(c);
  const wd_error *e = self ? wd_task_error(self) : wd_last_error();
  cr_assert_str_eq(e->msg, want);
}

static int bad_args(wd_task *self, void *arg) {
  refuses(self, NULL, "cache 'cache': NULL options");
  refuses(NULL, &(wd_cache_opts){0}, "cache 'cache': NULL task");
  refuses(self,
          &(wd_cache_opts){.name = "z", .max_entries = 1, .max_weight = 1},
          "cache 'z': both max_entries and max_weight are set");
  refuses(self, &(wd_cache_opts){.ttl = -1}, "cache 'cache': negative ttl");
  refuses(self, &(wd_cache_opts){.negative_ttl = -5},
          "cache 'cache': negative negative_ttl");
  refuses(self, &(wd_cache_opts){.load_timeout = -1},
          "cache 'cache': negative load_timeout");
  refuses(self, &(wd_cache_opts){.max_stale = WD_SEC},
          "cache 'cache': max_stale needs a ttl (values never expire)");
  refuses(self, &(wd_cache_opts){.ttl = WD_SEC, .refresh_after = 2 * WD_SEC},
          "cache 'cache': refresh_after 2.000 s is not below ttl 1.000 s");
  cr_assert_eq(wd_cache_open(self, NULL, &(wd_cache_opts){0}), WD_EINVAL);
  cr_assert_str_eq(msg_of(self), "cache 'cache': NULL out pointer");

  wd_cache_ref ref = {.value = (void *)1};
  cr_assert_eq(wd_cache_get(self, NULL, "k", 1, &ref), WD_EINVAL);
  cr_assert_null(ref.value);
  cr_assert_str_eq(msg_of(self), "wd_cache_get: NULL cache");
  cr_assert_eq(wd_cache_put(NULL, "k", 1, NULL, 0, 0), WD_EINVAL);
  cr_assert_eq(wd_cache_put_copy(NULL, "k", 1, NULL, 0, 0), WD_EINVAL);
  cr_assert_eq(wd_cache_invalidate(NULL, "k", 1), WD_EINVAL);
  cr_assert_eq(wd_cache_clear(NULL), WD_EINVAL);
  cr_assert_eq(wd_cache_get_try(NULL, "k", 1, &ref), WD_EINVAL);
  cr_assert_eq(wd_cache_load_copy(NULL, "x", 1), WD_EINVAL);
  wd_cache_load ld = {0};
  cr_assert_eq(wd_cache_load_copy(&ld, NULL, 1), WD_EINVAL);

  wd_cache *c;
  long n = 0;
  cr_assert_eq(wd_cache_open(self, &c, &(wd_cache_opts){.name = "a"}), 0);
  cr_assert_eq(wd_cache_get(NULL, c, "k", 1, &ref), WD_EINVAL);
  cr_assert_eq(wd_cache_get(self, c, "k", 1, NULL), WD_EINVAL);
  cr_assert_str_eq(msg_of(self), "cache 'a': wd_cache_get: NULL out");
  cr_assert_eq(wd_cache_get(self, c, NULL, 3, &ref), WD_EINVAL);
  cr_assert_str_eq(msg_of(self),
                   "cache 'a': wd_cache_get: NULL key of 3 bytes");
  cr_assert_eq(wd_cache_get_with(self, c, NULL, 3, other_loader, &n, &ref),
               WD_EINVAL);
  cr_assert_eq(wd_cache_put(c, NULL, 2, NULL, 0, 0), WD_EINVAL);
  cr_assert_str_eq(msg_of(self),
                   "cache 'a': wd_cache_put: NULL key of 2 bytes");
  cr_assert_eq(wd_cache_put_copy(c, "k", 1, NULL, 4, 0), WD_EINVAL);
  cr_assert_eq(wd_cache_invalidate(c, NULL, 1), WD_EINVAL);
  cr_assert_eq(wd_cache_close(NULL, c), WD_EINVAL);
  cr_assert_eq(n, 0);
  cr_assert_eq(wd_cache_close(self, c), 0);
  wd_cache_stats st = {.hits = 5};
  wd_cache_stats_get(NULL, &st);
  cr_assert_eq(st.hits, 0);
  wd_cache_stats_get(NULL, NULL);
  return 0;
}

Test(cache, bad_arguments_are_refused_with_a_message) {
  cr_assert_eq(run_virtual(bad_args, NULL), 0);
  assert_no_leaks();
}

/* ---- allocation failure
 * ------------------------------------------------------------
 */

/* Every kind of work in one scene: concurrent misses that join, a hit, a
 * refresh, an expiry, a put, evictions (the bound is 3), an invalidation
 * and a clear.  Whatever allocation fails, each operation either did its
 * work or failed with WD_ENOMEM, and nothing leaks. */
typedef struct fault {
  rig r;
  getter g[8];
  int put_rc;
  int close_rc;
} fault;

static int fault_main(wd_task *self, void *arg) {
  fault *f = arg;
  f->r.work = 10 * WD_MSEC;
  int rc = rig_open(self, &f->r,
                    (wd_cache_opts){.max_entries = 3,
                                    .ttl = WD_SEC,
                                    .refresh_after = 500 * WD_MSEC,
                                    .negative_ttl = WD_SEC});
  if (rc) return rc;
  wd_group g;
  rc = wd_group_enter(self, &g, NULL);
  if (rc) {
    f->close_rc = wd_cache_close(self, f->r.c);
    return rc;
  }
  const char *keys[8] = {"a", "a", "b", "c", "d", "a", "e", "a"};
  wd_time delay[8] = {
      0, 0, 0, 0, 20 * WD_MSEC, 600 * WD_MSEC, 700 * WD_MSEC, 3 * WD_SEC};
  for (int i = 0; i < 8; i++)
    f->g[i] = (getter){.key = keys[i], .delay = delay[i]};
  rc = spawn_getters(&g, &f->r, f->g, 8);
  if (rc == 0) {
    wd_sleep(self, 50 * WD_MSEC);
    val *v = mkval(&f->r, 99);
    f->put_rc = wd_cache_put(f->r.c, "p", 1, v, 0, 0);
    if (f->put_rc) {
      cr_assert_eq(f->put_rc, WD_ENOMEM);
      val_free(v, &f->r); /* still ours */
    }
    wd_cache_invalidate(f->r.c, "b", 1);
  }
  rc = wd_group_exit(self, &g, rc);
  wd_cache_clear(f->r.c);
  f->close_rc = wd_cache_close(self, f->r.c);
  return rc;
}

Test(cache, allocation_failure_at_every_point_is_clean) {
  for (long n = 1;; n++) {
    static fault f;
    memset(&f, 0, sizeof f);
    wd_alloc_fail_after(n);
    int rc = run_virtual(fault_main, &f);
    bool fired = wd_alloc_failed();
    wd_alloc_fail_after(0);
    cr_assert(rc == 0 || rc == WD_ENOMEM, "n=%ld: rc %s", n, wd_err_name(rc));
    cr_assert_eq(f.close_rc, 0, "n=%ld", n);
    for (int i = 0; i < 8; i++) {
      getter *g = &f.g[i];
      /* WD_ECANCELED: a sibling's spawn failed, and the group with it. */
      cr_assert(g->rc == 0 || g->rc == WD_ENOMEM || g->rc == WD_ECANCELED,
                "n=%ld getter %d: %s (%s)", n, i, wd_err_name(g->rc), g->msg);
      if (g->ran && g->rc == 0) cr_assert_gt(g->id, 0, "n=%ld getter %d", n, i);
    }
    cr_assert_eq(f.r.live, 0, "n=%ld: %ld values left", n, f.r.live);
    assert_no_leaks();
    if (!fired) {
      cr_assert_eq(rc, 0);
      for (int i = 0; i < 8; i++) {
        cr_assert(f.g[i].ran);
        cr_assert_eq(f.g[i].rc, 0, "getter %d: %s", i, f.g[i].msg);
      }
      break;
    }
    cr_assert_lt(n, 2000, "the fault loop does not end");
  }
}
