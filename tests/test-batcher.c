/* wd_batcher: concurrent submitters, flushes at max_size and at max_wait
 * (at exact virtual times), per-item and whole-batch failures, a caller
 * cancelled before and after its item was flushed, close with items
 * waiting, bounded batches in flight, the batcher's group cancelled, bad
 * arguments, and allocation failure at every point.
 *
 * A rig holds the batch function's log (when each batch ran, its size and
 * items) and its behaviour (work time, failures); each submitter is a task
 * that waits `delay`, submits `item` - optionally under a move_on_after of
 * `cancel_after` - and records what it got, when, and what its next
 * checkpoint returned.  Everything runs on the virtual clock. */
#include <string.h>

#include "helpers.h"

#define MAXB 64

typedef struct rig {
  wd_batcher *b;
  const char *name;
  size_t max_size, max_inflight;
  wd_time max_wait, batch_timeout;
  /* the batch function's behaviour */
  wd_time work;  /* each batch sleeps this long first */
  bool fail_odd; /* odd items fail alone with -ENOENT */
  int fail_all;  /* then the batch fails with this code */
  /* its log */
  int nbatches, running, most_running;
  size_t size[MAXB];
  wd_time at[MAXB];
  intptr_t items[MAXB][8];
} rig;

static int rig_fn(wd_task *self, const wd_batch *bt, void *arg) {
  rig *r = arg;
  int k = r->nbatches++;
  cr_assert_lt(k, MAXB);
  r->size[k] = bt->n;
  r->at[k] = wd_now(self);
  for (size_t i = 0; i < bt->n && i < 8; i++)
    r->items[k][i] = (intptr_t)bt->items[i];
  for (size_t i = 0; i < bt->n; i++) {
    cr_assert_null(bt->results[i]);
    cr_assert_eq(bt->errors[i], 0);
  }
  if (++r->running > r->most_running) r->most_running = r->running;
  int rc = r->work ? wd_sleep(self, r->work) : 0;
  r->running--;
  if (rc) return rc;
  for (size_t i = 0; i < bt->n; i++) {
    intptr_t item = (intptr_t)bt->items[i];
    if (r->fail_odd && item % 2)
      bt->errors[i] = -ENOENT;
    else
      bt->results[i] = (void *)(item * 10);
  }
  if (r->fail_all)
    return wd_fail(self, r->fail_all, "backend down (batch %d)", k + 1);
  return 0;
}

static int rig_open(wd_task *self, rig *r) {
  return wd_batcher_open(self, &r->b,
                         &(wd_batcher_opts){.name = r->name ? r->name : "b",
                                            .fn = rig_fn,
                                            .arg = r,
                                            .max_size = r->max_size,
                                            .max_wait = r->max_wait,
                                            .max_inflight = r->max_inflight,
                                            .batch_timeout = r->batch_timeout});
}

typedef struct sub {
  rig *r;
  intptr_t item;
  wd_time delay;        /* before submitting */
  wd_time cancel_after; /* a move_on_after around the submit; 0 = none */
  int rc;
  intptr_t result;
  wd_time done_at;
  int after_rc; /* the next checkpoint's */
  char msg[320];
} sub;

static int submitter(wd_task *self, void *arg) {
  sub *s = arg;
  /* Both fail only in the fault loop (a sibling's spawn failed). */
  if (s->delay && (s->rc = wd_sleep(self, s->delay))) return 0;
  wd_cancel_scope sc;
  if (s->cancel_after && (s->rc = wd_move_on_after(self, &sc, s->cancel_after)))
    return 0;
  void *res = (void *)(intptr_t)-1;
  s->rc = wd_batcher_submit(self, s->r->b, (void *)s->item, &res);
  s->result = (intptr_t)res;
  s->done_at = wd_now(self);
  if (s->rc) {
    const wd_error *e = wd_task_error(self);
    snprintf(s->msg, sizeof s->msg, "%s", e ? e->msg : "(none)");
    cr_assert_null(res, "no result on failure");
  }
  s->after_rc = wd_yield(self);
  if (s->cancel_after) wd_cancel_scope_exit(self, &sc, s->after_rc);
  return 0;
}

static int spawn_subs(wd_group *g, rig *r, sub *s, int n) {
  int rc = 0;
  for (int i = 0; i < n && rc == 0; i++) {
    s[i].r = r;
    rc = wd_spawn(g, submitter, &s[i], NULL);
  }
  return rc;
}

/* The usual shape: open, submitters in a group inside the batcher's block,
 * then close.  Statistics are read just before close. */
typedef struct scene {
  rig r;
  sub s[64];
  int n;
  wd_batcher_stats st;
  int close_rc;
  wd_time closed_at;
} scene;

static int scene_main(wd_task *self, void *arg) {
  scene *sc = arg;
  int rc = rig_open(self, &sc->r);
  if (rc) return rc;
  wd_group g;
  rc = wd_group_enter(self, &g, NULL);
  if (rc == 0)
    rc = wd_group_exit(self, &g, spawn_subs(&g, &sc->r, sc->s, sc->n));
  wd_batcher_stats_get(sc->r.b, &sc->st);
  sc->close_rc = wd_batcher_close(self, sc->r.b);
  sc->closed_at = wd_now(self);
  return rc;
}

static void play(scene *sc) {
  cr_assert_eq(run_virtual(scene_main, sc), 0, "%s", "scene failed");
  cr_assert_eq(sc->close_rc, 0);
}

/* ---- flushing ------------------------------------------------------------ */

Test(batcher, concurrent_submitters_get_their_own_results) {
  static scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.max_size = 8, .max_wait = 10 * WD_MSEC};
  sc.n = 50;
  for (int i = 0; i < 50; i++)
    sc.s[i].item = i + 1;
  play(&sc);
  for (int i = 0; i < 50; i++) {
    cr_assert_eq(sc.s[i].rc, 0);
    cr_assert_eq(sc.s[i].result, (i + 1) * 10, "caller %d got %ld", i,
                 (long)sc.s[i].result);
  }
  /* Six full batches at once, in submission order; the last two wait
   * out max_wait. */
  cr_assert_eq(sc.r.nbatches, 7);
  for (int k = 0; k < 6; k++) {
    cr_assert_eq(sc.r.size[k], 8);
    cr_assert_eq(sc.r.at[k], 0);
    for (int i = 0; i < 8; i++)
      cr_assert_eq(sc.r.items[k][i], 8 * k + i + 1);
  }
  cr_assert_eq(sc.r.size[6], 2);
  cr_assert_eq(sc.r.at[6], 10 * WD_MSEC);
  cr_assert_eq(sc.st.submitted, 50);
  cr_assert_eq(sc.st.completed, 50);
  cr_assert_eq(sc.st.batches, 7);
  cr_assert_eq(sc.st.batches_full, 6);
  cr_assert_eq(sc.st.batches_waited, 1);
  cr_assert_eq(sc.st.failed, 0);
  cr_assert_eq(sc.st.waiting, 0);
  assert_no_leaks();
}

Test(batcher, a_batch_is_flushed_when_it_reaches_max_size) {
  scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.max_size = 4, .max_wait = WD_SEC};
  sc.n = 5;
  wd_time delay[] = {0, WD_MSEC, 2 * WD_MSEC, 3 * WD_MSEC, 5 * WD_MSEC};
  for (int i = 0; i < 5; i++)
    sc.s[i] = (sub){.item = i + 1, .delay = delay[i]};
  play(&sc);
  cr_assert_eq(sc.r.nbatches, 2);
  cr_assert_eq(sc.r.size[0], 4);
  cr_assert_eq(sc.r.at[0], 3 * WD_MSEC, "flushed by the 4th item");
  for (int i = 0; i < 4; i++)
    cr_assert_eq(sc.s[i].done_at, 3 * WD_MSEC);
  cr_assert_eq(sc.r.size[1], 1);
  cr_assert_eq(sc.r.at[1], WD_SEC + 5 * WD_MSEC, "max_wait after the 5th");
  cr_assert_eq(sc.st.batches_full, 1);
  cr_assert_eq(sc.st.batches_waited, 1);
  assert_no_leaks();
}

Test(batcher, a_batch_is_flushed_max_wait_after_its_first_item) {
  scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.max_size = 100, .max_wait = 10 * WD_MSEC};
  wd_time delay[] = {0, 3, 12, 15, 25};
  sc.n = 5;
  for (int i = 0; i < 5; i++)
    sc.s[i] = (sub){.item = i + 1, .delay = delay[i] * WD_MSEC};
  play(&sc);
  cr_assert_eq(sc.r.nbatches, 3);
  wd_time at[] = {10, 22, 35};
  size_t size[] = {2, 2, 1};
  for (int k = 0; k < 3; k++) {
    cr_assert_eq(sc.r.at[k], at[k] * WD_MSEC, "batch %d at %lld", k,
                 (long long)sc.r.at[k]);
    cr_assert_eq(sc.r.size[k], size[k]);
  }
  wd_time done[] = {10, 10, 22, 22, 35};
  for (int i = 0; i < 5; i++)
    cr_assert_eq(sc.s[i].done_at, done[i] * WD_MSEC);
  assert_no_leaks();
}

Test(batcher, items_gathered_while_the_slot_is_busy_go_as_soon_as_it_frees) {
  /* One slot, batches of 2 that take 30 ms.  Items 1-3 at 0: {1, 2} runs
   * 0-30; item 3 is due at 10 but waits for the slot: {3} at 30.  Item 4
   * at 35 is due at 45, the slot frees at 60: {4} at 60. */
  scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.max_size = 2, .max_wait = 10 * WD_MSEC, .work = 30 * WD_MSEC};
  sc.n = 4;
  wd_time delay[] = {0, 0, 0, 35};
  for (int i = 0; i < 4; i++)
    sc.s[i] = (sub){.item = i + 1, .delay = delay[i] * WD_MSEC};
  play(&sc);
  cr_assert_eq(sc.r.nbatches, 3);
  wd_time at[] = {0, 30, 60};
  size_t size[] = {2, 1, 1};
  for (int k = 0; k < 3; k++) {
    cr_assert_eq(sc.r.at[k], at[k] * WD_MSEC, "batch %d at %lld", k,
                 (long long)sc.r.at[k]);
    cr_assert_eq(sc.r.size[k], size[k]);
  }
  cr_assert_eq(sc.s[3].done_at, 90 * WD_MSEC);
  assert_no_leaks();
}

Test(batcher, max_wait_0_batches_what_arrives_in_the_same_turn) {
  scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.max_size = 100, .max_wait = 0};
  sc.n = 6;
  for (int i = 0; i < 6; i++)
    sc.s[i] = (sub){.item = i + 1, .delay = i == 5 ? WD_MSEC : 0};
  play(&sc);
  cr_assert_eq(sc.r.nbatches, 2);
  cr_assert_eq(sc.r.size[0], 5);
  cr_assert_eq(sc.r.at[0], 0);
  cr_assert_eq(sc.r.size[1], 1);
  cr_assert_eq(sc.r.at[1], WD_MSEC);
  assert_no_leaks();
}

/* ---- bounded in flight --------------------------------------------------- */

Test(batcher, at_most_max_inflight_batches_run_at_once) {
  scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.max_size = 1, .max_inflight = 2, .work = 10 * WD_MSEC};
  sc.n = 6;
  for (int i = 0; i < 6; i++)
    sc.s[i] = (sub){.item = i + 1};
  play(&sc);
  cr_assert_eq(sc.r.nbatches, 6);
  cr_assert_eq(sc.r.most_running, 2);
  wd_time at[] = {0, 0, 10, 10, 20, 20};
  for (int k = 0; k < 6; k++)
    cr_assert_eq(sc.r.at[k], at[k] * WD_MSEC, "batch %d at %lld", k,
                 (long long)sc.r.at[k]);
  cr_assert_eq(sc.st.inflight_peak, 2);
  cr_assert_eq(sc.closed_at, 30 * WD_MSEC);
  assert_no_leaks();
}

Test(batcher, one_batch_at_a_time_by_default) {
  scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.max_size = 2, .work = 10 * WD_MSEC};
  sc.n = 6;
  for (int i = 0; i < 6; i++)
    sc.s[i] = (sub){.item = i + 1};
  play(&sc);
  cr_assert_eq(sc.r.most_running, 1);
  cr_assert_eq(sc.r.nbatches, 3);
  cr_assert_eq(sc.closed_at, 30 * WD_MSEC);
  assert_no_leaks();
}

/* ---- failures ------------------------------------------------------------ */

Test(batcher, items_fail_alone) {
  scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.name = "users", .max_size = 6, .fail_odd = true};
  sc.n = 6;
  for (int i = 0; i < 6; i++)
    sc.s[i] = (sub){.item = i + 1};
  play(&sc);
  cr_assert_eq(sc.r.nbatches, 1);
  for (int i = 0; i < 6; i++) {
    if ((i + 1) % 2) {
      cr_assert_eq(sc.s[i].rc, -ENOENT);
      cr_assert_eq(sc.s[i].result, 0);
      char want[128];
      snprintf(want, sizeof want,
               "batcher 'users': item %d of a batch of 6 failed: %s", i + 1,
               wd_strerror(-ENOENT));
      cr_assert_str_eq(sc.s[i].msg, want);
    } else {
      cr_assert_eq(sc.s[i].rc, 0);
      cr_assert_eq(sc.s[i].result, (i + 1) * 10);
    }
  }
  cr_assert_eq(sc.st.failed, 3);
  cr_assert_eq(sc.st.completed, 6);
  cr_assert_eq(sc.st.batches_failed, 0);
  assert_no_leaks();
}

Test(batcher, a_failed_batch_fails_the_items_without_an_error_of_their_own) {
  scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.name = "x", .max_size = 4, .fail_odd = true, .fail_all = -EIO};
  sc.n = 4;
  for (int i = 0; i < 4; i++)
    sc.s[i] = (sub){.item = i + 1};
  play(&sc);
  for (int i = 0; i < 4; i++) {
    cr_assert_eq(sc.s[i].result, 0);
    if ((i + 1) % 2) {
      cr_assert_eq(sc.s[i].rc, -ENOENT, "its own error stands");
    } else {
      cr_assert_eq(sc.s[i].rc, -EIO);
      cr_assert_str_eq(sc.s[i].msg,
                       "batcher 'x': batch of 4 failed: backend down (batch "
                       "1)");
    }
  }
  cr_assert_eq(sc.st.failed, 4);
  cr_assert_eq(sc.st.batches_failed, 1);
  assert_no_leaks();
}

Test(batcher, batch_timeout_bounds_each_batch) {
  scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){
      .name = "t", .max_size = 2, .work = 10 * WD_SEC, .batch_timeout = WD_SEC};
  sc.n = 2;
  sc.s[0].item = 1;
  sc.s[1].item = 2;
  play(&sc);
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(sc.s[i].rc, WD_ETIMEDOUT);
    cr_assert_eq(sc.s[i].done_at, WD_SEC);
    cr_assert_str_eq(sc.s[i].msg,
                     "batcher 't': batch of 2 failed: batcher 't' batch: "
                     "timed out after 1.000 s");
  }
  assert_no_leaks();
}

/* ---- cancellation of a caller -------------------------------------------- */

Test(batcher, a_caller_cancelled_before_the_flush_takes_its_item_back) {
  /* Item 1 (at 0) is withdrawn at 5 ms by its caller's deadline; item 2
   * (at 2 ms) is then the first of the batch: flushed at 12 ms, alone. */
  scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.name = "c", .max_size = 10, .max_wait = 10 * WD_MSEC};
  sc.n = 2;
  sc.s[0] = (sub){.item = 1, .cancel_after = 5 * WD_MSEC};
  sc.s[1] = (sub){.item = 2, .delay = 2 * WD_MSEC};
  play(&sc);
  cr_assert_eq(sc.s[0].rc, WD_ETIMEDOUT);
  cr_assert_eq(sc.s[0].done_at, 5 * WD_MSEC);
  cr_assert_str_eq(sc.s[0].msg,
                   "batcher 'c': item taken back before it was flushed "
                   "(stopped by a deadline)");
  cr_assert_eq(sc.r.nbatches, 1);
  cr_assert_eq(sc.r.size[0], 1);
  cr_assert_eq(sc.r.items[0][0], 2, "the batch never saw item 1");
  cr_assert_eq(sc.r.at[0], 12 * WD_MSEC);
  cr_assert_eq(sc.s[1].rc, 0);
  cr_assert_eq(sc.st.withdrawn, 1);
  cr_assert_eq(sc.st.submitted, 2);
  cr_assert_eq(sc.st.completed, 1);
  assert_no_leaks();
}

Test(batcher, a_caller_cancelled_after_the_flush_gets_its_result) {
  /* The batch runs 10-20 ms; item 1's caller is cancelled at 15 ms.  It
   * keeps waiting, gets its real result at 20 ms, and its next checkpoint
   * sees the cancellation. */
  scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.max_size = 10, .max_wait = 10 * WD_MSEC, .work = 10 * WD_MSEC};
  sc.n = 2;
  sc.s[0] = (sub){.item = 1, .cancel_after = 15 * WD_MSEC};
  sc.s[1] = (sub){.item = 2};
  play(&sc);
  cr_assert_eq(sc.r.nbatches, 1);
  cr_assert_eq(sc.r.size[0], 2);
  cr_assert_eq(sc.s[0].rc, 0);
  cr_assert_eq(sc.s[0].result, 10);
  cr_assert_eq(sc.s[0].done_at, 20 * WD_MSEC);
  cr_assert_eq(sc.s[0].after_rc, WD_ETIMEDOUT);
  cr_assert_eq(sc.s[1].after_rc, 0);
  cr_assert_eq(sc.st.withdrawn, 0);
  assert_no_leaks();
}

/* ---- close ------------------------------------------------------------ */

/* Submitters in a group outside the batcher's block, so that the opener
 * can close it while they wait. */
typedef struct outer_scene {
  rig r;
  sub s[8];
  int n;         /* submitted before close */
  sub late;      /* submits `late.delay` after the start, during close */
  bool cancel;   /* run the whole block under a 1 s deadline */
  wd_time idle;  /* the opener sleeps this long before closing */
  wd_time grace; /* then this long more, shielded */
  int close_rc;
  wd_time closed_at;
  wd_batcher_stats st;
} outer_scene;

static int outer_main(wd_task *self, void *arg) {
  outer_scene *sc = arg;
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  wd_cancel_scope deadline;
  if (sc->cancel) cr_assert_eq(wd_move_on_after(self, &deadline, WD_SEC), 0);
  cr_assert_eq(rig_open(self, &sc->r), 0);
  cr_assert_eq(spawn_subs(&g, &sc->r, sc->s, sc->n), 0);
  if (sc->late.item) cr_assert_eq(spawn_subs(&g, &sc->r, &sc->late, 1), 0);
  wd_batcher_stats st;
  do { /* until every early submitter waits */
    cr_assert_eq(wd_yield(self), 0);
    wd_batcher_stats_get(sc->r.b, &st);
  } while (st.submitted < (uint64_t)sc->n);
  int rc = sc->idle ? wd_sleep(self, sc->idle) : 0;
  if (sc->grace) {
    wd_cancel_scope sh;
    cr_assert_eq(
        wd_cancel_scope_enter(self, &sh, &(wd_cancel_opts){.shield = true}), 0);
    cr_assert_eq(wd_sleep(self, sc->grace), 0);
    wd_cancel_scope_exit(self, &sh, 0);
  }
  wd_batcher_stats_get(sc->r.b, &sc->st);
  sc->close_rc = wd_batcher_close(self, sc->r.b);
  sc->closed_at = wd_now(self);
  if (sc->cancel) wd_cancel_scope_exit(self, &deadline, rc);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return 0;
}

Test(batcher, close_flushes_the_waiting_items_and_refuses_new_ones) {
  /* Batches only when full (max_wait NEVER): five items wait an hour,
   * then close flushes them; a sixth caller arrives during the close. */
  outer_scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.name = "c",
               .max_size = 100,
               .max_wait = WD_TIME_NEVER,
               .work = 10 * WD_MSEC};
  sc.n = 5;
  for (int i = 0; i < 5; i++)
    sc.s[i].item = i + 1;
  sc.idle = 3600 * WD_SEC;
  sc.late = (sub){.item = 99, .delay = 3600 * WD_SEC + 5 * WD_MSEC};
  cr_assert_eq(run_virtual(outer_main, &sc), 0);
  cr_assert_eq(sc.st.waiting, 5, "nothing flushed in an hour");
  cr_assert_eq(sc.close_rc, 0);
  cr_assert_eq(sc.r.nbatches, 1);
  cr_assert_eq(sc.r.size[0], 5);
  cr_assert_eq(sc.r.at[0], 3600 * WD_SEC);
  cr_assert_eq(sc.closed_at, 3600 * WD_SEC + 10 * WD_MSEC,
               "close waited for the batch");
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(sc.s[i].rc, 0);
    cr_assert_eq(sc.s[i].result, (i + 1) * 10);
  }
  cr_assert_eq(sc.late.rc, WD_ECLOSED);
  cr_assert_str_eq(sc.late.msg, "batcher 'c' is closing: item not submitted");
  cr_assert_eq(sc.late.result, 0);
  assert_no_leaks();
}

Test(batcher, close_flushes_in_batches_of_max_size) {
  outer_scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.max_size = 3, .max_wait = WD_TIME_NEVER, .max_inflight = 2};
  sc.n = 8; /* 6 flushed full at once, 2 left for close */
  for (int i = 0; i < 8; i++)
    sc.s[i].item = i + 1;
  sc.idle = WD_SEC;
  cr_assert_eq(run_virtual(outer_main, &sc), 0);
  cr_assert_eq(sc.r.nbatches, 3);
  cr_assert_eq(sc.r.size[2], 2);
  cr_assert_eq(sc.r.at[2], WD_SEC);
  for (int i = 0; i < 8; i++)
    cr_assert_eq(sc.s[i].result, (i + 1) * 10);
  assert_no_leaks();
}

Test(batcher, cancelling_the_opener_cancels_batches_and_drops_waiting_items) {
  /* Batches of 2 that would take 10 s.  {1, 2} runs from 0; item 3 waits.
   * At 1 s the opener's deadline fires: the batch is cancelled (its items
   * get what it returned), item 3 is handed back unhandled. */
  outer_scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.name = "d",
               .max_size = 2,
               .max_wait = WD_TIME_NEVER,
               .work = 10 * WD_SEC};
  sc.n = 3;
  for (int i = 0; i < 3; i++)
    sc.s[i].item = i + 1;
  sc.cancel = true;
  sc.idle = 5 * WD_SEC;
  cr_assert_eq(run_virtual(outer_main, &sc), 0);
  cr_assert_eq(sc.close_rc, WD_ETIMEDOUT, "close reports the cancellation");
  cr_assert_eq(sc.closed_at, WD_SEC);
  cr_assert_eq(sc.r.nbatches, 1);
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(sc.s[i].rc, WD_ETIMEDOUT);
    cr_assert(strstr(sc.s[i].msg, "batcher 'd': batch of 2 failed"), "%s",
              sc.s[i].msg);
  }
  cr_assert_eq(sc.s[2].rc, WD_ECLOSED);
  cr_assert_str_eq(sc.s[2].msg,
                   "batcher 'd' was shut down (its group was cancelled) "
                   "before the item was flushed; it was not handled");
  for (int i = 0; i < 3; i++)
    cr_assert_eq(sc.s[i].done_at, WD_SEC);
  assert_no_leaks();
}

Test(batcher, a_batcher_shut_down_by_cancellation_refuses_items) {
  /* The opener's deadline fires at 1 s; it then lingers, shielded, until
   * 2 s before closing.  A caller arriving at 1.5 s is refused. */
  outer_scene sc;
  memset(&sc, 0, sizeof sc);
  sc.r = (rig){.name = "d", .max_size = 2, .max_wait = WD_TIME_NEVER};
  sc.n = 1;
  sc.s[0].item = 1;
  sc.cancel = true;
  sc.idle = 5 * WD_SEC;
  sc.grace = WD_SEC;
  sc.late = (sub){.item = 7, .delay = 1500 * WD_MSEC};
  cr_assert_eq(run_virtual(outer_main, &sc), 0);
  cr_assert_eq(sc.s[0].rc, WD_ECLOSED);
  cr_assert_eq(sc.late.rc, WD_ECLOSED);
  cr_assert_str_eq(sc.late.msg, "batcher 'd' is shut down (its group was "
                                "cancelled): item not submitted");
  cr_assert_eq(sc.st.dropped, 1);
  cr_assert_eq(sc.st.refused, 1);
  cr_assert_eq(sc.r.nbatches, 0);
  cr_assert_eq(sc.closed_at, 2 * WD_SEC);
  assert_no_leaks();
}

static int lifo(wd_task *self, void *arg) {
  wd_batcher *b;
  cr_assert_eq(wd_batcher_open(self, &b,
                               &(wd_batcher_opts){
                                   .name = "l", .fn = rig_fn, .max_size = 1}),
               0);
  wd_cancel_scope s;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  cr_assert_eq(wd_batcher_close(self, b), WD_EINVAL, "a scope is open in it");
  wd_batcher_stats st;
  wd_batcher_stats_get(b, &st);
  cr_assert(!st.closed, "left open and usable");
  wd_cancel_scope_exit(self, &s, 0);
  cr_assert_eq(wd_batcher_close(self, b), 0);
  cr_assert_eq(wd_batcher_close(self, NULL), 0);
  return 0;
}

Test(batcher, close_out_of_order_is_refused_and_leaves_it_open) {
  cr_assert_eq(run_virtual(lifo, NULL), 0);
  assert_no_leaks();
}

typedef struct foreign {
  wd_batcher *b;
  int rc;
  char msg[160];
} foreign;

static int close_foreign(wd_task *self, void *arg) {
  foreign *f = arg;
  f->rc = wd_batcher_close(self, f->b);
  snprintf(f->msg, sizeof f->msg, "%s", wd_task_error(self)->msg);
  return 0;
}

static int not_the_owner(wd_task *self, void *arg) {
  foreign f = {0};
  cr_assert_eq(wd_batcher_open(self, &f.b,
                               &(wd_batcher_opts){
                                   .name = "o", .fn = rig_fn, .max_size = 1}),
               0);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(wd_spawn(&g, close_foreign, &f, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(f.rc, WD_EINVAL);
  cr_assert(strstr(f.msg, "batcher 'o': opened by task 1, so task"), "%s",
            f.msg);
  cr_assert_eq(wd_batcher_close(self, f.b), 0);
  return 0;
}

Test(batcher, only_the_opener_closes) {
  cr_assert_eq(run_virtual(not_the_owner, NULL), 0);
  assert_no_leaks();
}

/* ---- arguments ------------------------------------------------------------
 */

static int noop_batch(wd_task *self, const wd_batch *bt, void *arg) {
  return 0;
}

/* Open with o must fail with WD_EINVAL, *out NULL, and this message. */
static void refuses(wd_task *self, const wd_batcher_opts *o, const char *want) {
  wd_batcher *b = (wd_batcher *)(intptr_t)1;
  cr_assert_eq(wd_batcher_open(self, &b, o), WD_EINVAL, "accepted: %s", want);
  cr_assert_null(b);
  const wd_error *e = self ? wd_task_error(self) : wd_last_error();
  cr_assert_str_eq(e->msg, want);
}

static int bad_args(wd_task *self, void *arg) {
  refuses(self, &(wd_batcher_opts){.name = "z", .fn = noop_batch},
          "batcher 'z': max_size 0 is not in [1, 1048576]");
  refuses(self, &(wd_batcher_opts){.name = "z", .max_size = 2},
          "batcher 'z': no batch function (fn)");
  refuses(self, NULL, "batcher 'batcher': NULL options");
  refuses(
      self,
      &(wd_batcher_opts){.fn = noop_batch, .max_size = 1, .max_inflight = 5000},
      "batcher 'batcher': max_inflight 5000 is above 1024");
  refuses(self,
          &(wd_batcher_opts){.fn = noop_batch, .max_size = 1, .max_wait = -1},
          "batcher 'batcher': negative max_wait");
  refuses(
      self,
      &(wd_batcher_opts){.fn = noop_batch, .max_size = 1, .batch_timeout = -1},
      "batcher 'batcher': negative batch_timeout");
  refuses(NULL, &(wd_batcher_opts){.fn = noop_batch, .max_size = 1},
          "batcher 'batcher': NULL task");
  cr_assert_eq(
      wd_batcher_open(self, NULL,
                      &(wd_batcher_opts){.fn = noop_batch, .max_size = 1}),
      WD_EINVAL);
  cr_assert_str_eq(wd_task_error(self)->msg,
                   "batcher 'batcher': NULL out pointer");
  void *res = (void *)(intptr_t)1;
  cr_assert_eq(wd_batcher_submit(self, NULL, NULL, &res), WD_EINVAL);
  cr_assert_null(res);
  cr_assert_str_eq(wd_task_error(self)->msg, "wd_batcher_submit: NULL batcher");
  wd_batcher *b;
  cr_assert_eq(
      wd_batcher_open(self, &b,
                      &(wd_batcher_opts){.fn = noop_batch, .max_size = 1}),
      0);
  cr_assert_eq(wd_batcher_submit(NULL, b, NULL, NULL), WD_EINVAL);
  cr_assert_eq(wd_batcher_close(NULL, b), WD_EINVAL);
  /* A NULL result pointer is allowed: the caller wants no result. */
  cr_assert_eq(wd_batcher_submit(self, b, NULL, NULL), 0);
  cr_assert_eq(wd_batcher_close(self, b), 0);
  wd_batcher_stats st;
  wd_batcher_stats_get(NULL, &st);
  cr_assert_eq(st.submitted, 0);
  return 0;
}

Test(batcher, bad_arguments_are_refused_with_a_message) {
  cr_assert_eq(run_virtual(bad_args, NULL), 0);
  assert_no_leaks();
}

static int cancelled_submit(wd_task *self, void *arg) {
  rig r = {.max_size = 4, .max_wait = WD_MSEC};
  cr_assert_eq(rig_open(self, &r), 0);
  wd_cancel_scope s;
  cr_assert_eq(wd_cancel_scope_enter(self, &s, NULL), 0);
  wd_cancel(&s);
  void *res;
  cr_assert_eq(wd_batcher_submit(self, r.b, (void *)1, &res), WD_ECANCELED);
  cr_assert_str_eq(wd_task_error(self)->msg, "batcher 'b': submit cancelled");
  wd_cancel_scope_exit(self, &s, WD_ECANCELED);
  wd_batcher_stats st;
  wd_batcher_stats_get(r.b, &st);
  cr_assert_eq(st.submitted, 0, "a cancelled submit is not made");
  cr_assert_eq(wd_batcher_close(self, r.b), 0);
  cr_assert_eq(r.nbatches, 0);
  return 0;
}

Test(batcher, a_submit_by_a_cancelled_caller_is_not_made) {
  cr_assert_eq(run_virtual(cancelled_submit, NULL), 0);
  assert_no_leaks();
}

/* ---- allocation failure ------------------------------------------------- */

Test(batcher, allocation_failure_at_every_point_is_clean) {
  for (long n = 1;; n++) {
    static scene sc;
    memset(&sc, 0, sizeof sc);
    sc.r = (rig){.max_size = 4, .max_wait = WD_MSEC, .max_inflight = 2};
    sc.n = 10;
    for (int i = 0; i < 10; i++)
      sc.s[i] = (sub){.item = i + 1, .delay = (i % 3) * WD_MSEC};
    wd_alloc_fail_after(n);
    int rc = run_virtual(scene_main, &sc);
    bool fired = wd_alloc_failed();
    wd_alloc_fail_after(0);
    cr_assert(rc == 0 || rc == WD_ENOMEM, "n=%ld: rc %s", n, wd_err_name(rc));
    if (rc == 0) {
      /* Whatever failed (a max-wait timer: flushed early), every caller
       * got its own result. */
      for (int i = 0; i < 10; i++) {
        cr_assert_eq(sc.s[i].rc, 0, "n=%ld: caller %d: %s", n, i, sc.s[i].msg);
        cr_assert_eq(sc.s[i].result, (i + 1) * 10);
      }
    }
    assert_no_leaks();
    if (!fired) {
      cr_assert_eq(rc, 0);
      break;
    }
    cr_assert_lt(n, 1000, "the fault loop does not end");
  }
}

/* The worker that arms the max-wait timer enters a cancel scope, which may
 * have to grow the runtime's timer queue.  With N callers waiting and the
 * next allocation made to fail, some N makes that growth fail: the worker
 * then flushes at once rather than risk stranding the items.  Whatever N,
 * every caller gets its result. */
typedef struct sweep {
  scene sc;
  bool fired;
} sweep;

static int sweep_main(wd_task *self, void *arg) {
  sweep *w = arg;
  scene *sc = &w->sc;
  cr_assert_eq(rig_open(self, &sc->r), 0);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  cr_assert_eq(spawn_subs(&g, &sc->r, sc->s, sc->n), 0);
  wd_alloc_fail_after(1);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  w->fired = wd_alloc_failed();
  wd_alloc_fail_after(0);
  cr_assert_eq(wd_batcher_close(self, sc->r.b), 0);
  return 0;
}

Test(batcher, without_memory_for_the_max_wait_timer_it_flushes_at_once) {
  int early = 0;
  for (int n = 1; n <= 64; n++) {
    static sweep w;
    memset(&w, 0, sizeof w);
    w.sc.r = (rig){.max_size = 1000, .max_wait = WD_SEC};
    w.sc.n = n;
    for (int i = 0; i < n; i++)
      w.sc.s[i].item = i + 1;
    cr_assert_eq(run_virtual(sweep_main, &w), 0);
    cr_assert_eq(w.sc.r.nbatches, 1);
    cr_assert_eq(w.sc.r.size[0], (size_t)n);
    for (int i = 0; i < n; i++)
      cr_assert_eq(w.sc.s[i].result, (i + 1) * 10, "n=%d caller %d", n, i);
    if (w.fired) {
      cr_assert_eq(w.sc.r.at[0], 0, "n=%d: flushed at once", n);
      early++;
    } else {
      cr_assert_eq(w.sc.r.at[0], WD_SEC, "n=%d", n);
    }
    assert_no_leaks();
  }
  cr_assert_gt(early, 0, "no N reached the timer's allocation");
}
