/* wd_cond: producer/consumer, FIFO signal and broadcast, the lock held
 * again on every return (also when cancelled or timed out), signals that
 * are neither lost nor swallowed by cancellation, timed waits at their
 * deadline edge, allocation failure, bad arguments, wd_dump. */
#include "sync-helpers.h"

/* ---- producer / consumer ----------------------------------------------- */

#define N_ITEMS 200

typedef struct box {
  wd_lock mu;
  wd_cond nonempty, nonfull;
  int items[4], n;
  int got[N_ITEMS], ngot;
} box;

static int producer(wd_task *self, void *arg) {
  box *b = arg;
  for (int i = 0; i < N_ITEMS; i++) {
    cr_assert_eq(wd_lock_acquire(self, &b->mu), 0);
    while (b->n == 4)
      cr_assert_eq(wd_cond_wait(self, &b->nonfull), 0);
    b->items[b->n++] = i;
    wd_cond_signal(&b->nonempty);
    cr_assert_eq(wd_lock_release(self, &b->mu), 0);
    if (i % 7 == 0) wd_yield(self);
  }
  return 0;
}

static int consumer(wd_task *self, void *arg) {
  box *b = arg;
  for (;;) {
    cr_assert_eq(wd_lock_acquire(self, &b->mu), 0);
    while (b->n == 0 && b->ngot < N_ITEMS)
      cr_assert_eq(wd_cond_wait(self, &b->nonempty), 0);
    cr_assert_eq(wd_lock_owner(&b->mu), self, "held again after the wait");
    if (b->n == 0) { /* all consumed: let the other consumer see it too */
      wd_cond_broadcast(&b->nonempty);
      return wd_lock_release(self, &b->mu);
    }
    int v = b->items[0];
    memmove(b->items, b->items + 1, (size_t)--b->n * sizeof b->items[0]);
    b->got[b->ngot++] = v;
    wd_cond_signal(&b->nonfull);
    cr_assert_eq(wd_lock_release(self, &b->mu), 0);
  }
}

static int pc_main(wd_task *self, void *arg) {
  box *b = arg;
  wd_group g;
  wd_lock_init(&b->mu, "box");
  cr_assert_eq(wd_cond_init(&b->nonempty, "nonempty", &b->mu), 0);
  cr_assert_eq(wd_cond_init(&b->nonfull, "nonfull", &b->mu), 0);
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, consumer, b, NULL);
  wd_spawn(&g, consumer, b, NULL);
  wd_spawn(&g, producer, b, NULL);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_cond_deinit(&b->nonempty), 0);
  cr_assert_eq(wd_cond_deinit(&b->nonfull), 0);
  return wd_lock_deinit(&b->mu);
}

Test(cond, producer_and_consumers_pass_every_item_in_order) {
  static box b;
  cr_assert_eq(run_virtual(pc_main, &b), 0);
  cr_assert_eq(b.ngot, N_ITEMS);
  for (int i = 0; i < N_ITEMS; i++)
    cr_assert_eq(b.got[i], i);
  assert_no_leaks();
}

/* ---- signal, broadcast, cancellation ----------------------------------- */

typedef struct waiter {
  wd_lock *mu;
  wd_cond *cv;
  wd_time timeout; /* < 0: untimed */
  int rc, id;
  bool held;
  wd_time at;
  wd_handle h;
  int *order, *n;
  char msg[200];
} waiter;

static int cond_waiter(wd_task *self, void *arg) {
  waiter *w = arg;
  cr_assert_eq(wd_lock_acquire(self, w->mu), 0);
  w->rc = w->timeout < 0 ? wd_cond_wait(self, w->cv)
                         : wd_cond_wait_for(self, w->cv, w->timeout);
  snprintf(w->msg, sizeof w->msg, "%s", last_msg(self));
  w->at = wd_now(self);
  w->held = wd_lock_owner(w->mu) == self;
  w->order[(*w->n)++] = w->id;
  return wd_lock_release(self, w->mu);
}

typedef struct cast {
  wd_lock mu;
  wd_cond cv;
  waiter w[3];
  int order[3], n;
} cast;

static void setup(wd_task *self, wd_group *g, cast *c, int n, wd_time t) {
  wd_lock_init(&c->mu, "mu");
  wd_cond_init(&c->cv, "changed", &c->mu);
  wd_group_enter(self, g, NULL);
  for (int i = 0; i < n; i++) {
    c->w[i] = (waiter){.mu = &c->mu,
                       .cv = &c->cv,
                       .timeout = t,
                       .rc = 1,
                       .id = i,
                       .order = c->order,
                       .n = &c->n};
    wd_spawn(g, cond_waiter, &c->w[i], &(wd_spawn_opts){.handle = &c->w[i].h});
  }
  yield_until(self, c->cv.nwaiting_ == (size_t)n);
}

static int teardown(wd_task *self, wd_group *g, cast *c) {
  cr_assert_eq(wd_group_exit(self, g, 0), 0);
  cr_assert_eq(wd_cond_deinit(&c->cv), 0);
  return wd_lock_deinit(&c->mu);
}

static int signal_main(wd_task *self, void *arg) {
  cast *c = arg;
  wd_group g;
  setup(self, &g, c, 3, -1);
  cr_assert_eq(wd_cond_deinit(&c->cv), WD_EBUSY);
  assert_msg_has(self, "condition 'changed' has 3 waiting");
  cr_assert_eq(wd_cond_signal(&c->cv), 0);
  cr_assert_eq(c->cv.nwaiting_, 2);
  cr_assert_eq(wd_cond_broadcast(&c->cv), 0);
  cr_assert_eq(c->cv.nwaiting_, 0);
  cr_assert_eq(wd_cond_signal(&c->cv), 0, "no waiter: nothing happens");
  return teardown(self, &g, c);
}

Test(cond, signal_wakes_the_first_waiter_and_broadcast_the_rest) {
  cast c = {0};
  cr_assert_eq(run_virtual(signal_main, &c), 0);
  cr_assert_eq(c.n, 3);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(c.w[i].rc, 0);
    cr_assert(c.w[i].held);
    cr_assert_eq(c.order[i], i, "woken and re-locked in FIFO order");
  }
  assert_no_leaks();
}

/* Cancelled while another task holds the lock: the wait returns only once
 * it has the lock back. */
static int cancel_relock_main(wd_task *self, void *arg) {
  cast *c = arg;
  wd_group g;
  setup(self, &g, c, 1, -1);
  cr_assert_eq(wd_lock_acquire(self, &c->mu), 0);
  wd_handle_cancel(&c->w[0].h);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0); /* holding the lock */
  cr_assert_eq(c->n, 0, "the waiter is still waiting for the lock");
  cr_assert_eq(wd_lock_release(self, &c->mu), 0);
  return teardown(self, &g, c);
}

Test(cond, a_cancelled_wait_returns_with_the_lock_held_again) {
  cast c = {0};
  cr_assert_eq(run_virtual(cancel_relock_main, &c), 0);
  cr_assert_eq(c.w[0].rc, WD_ECANCELED);
  cr_assert(c.w[0].held);
  cr_assert_eq(c.w[0].at, WD_SEC, "not before the lock was free");
  cr_assert_not_null(strstr(c.w[0].msg, "condition 'changed': wait cancelled"));
  assert_no_leaks();
}

static int cancel_signal_main(wd_task *self, void *arg) {
  cast *c = arg;
  wd_group g;
  setup(self, &g, c, 3, -1);
  wd_handle_cancel(&c->w[0].h);            /* leaves before the signal... */
  cr_assert_eq(wd_cond_signal(&c->cv), 0); /* ...which goes to w[1] */
  wd_handle_cancel(&c->w[1].h);            /* too late: it keeps it */
  cr_assert_eq(c->cv.nwaiting_, 1);
  cr_assert_eq(wd_cond_signal(&c->cv), 0);
  return teardown(self, &g, c);
}

Test(cond, cancellation_neither_loses_nor_swallows_a_signal) {
  cast c = {0};
  cr_assert_eq(run_virtual(cancel_signal_main, &c), 0);
  cr_assert_eq(c.w[0].rc, WD_ECANCELED);
  cr_assert_eq(c.w[1].rc, 0, "signalled, then cancelled: keeps the signal");
  cr_assert_eq(c.w[2].rc, 0);
  for (int i = 0; i < 3; i++)
    cr_assert(c.w[i].held);
  assert_no_leaks();
}

/* A waiter that left the condition (signalled or cancelled) still has to
 * take the lock back and may read the condition for its message: until it
 * has returned, deinit must refuse.  (The lock must outlive the condition,
 * so this also keeps the lock alive for the re-acquisition.) */
static int deinit_leaving_main(wd_task *self, void *arg) {
  cast *c = arg;
  wd_group g;
  setup(self, &g, c, 2, -1);
  cr_assert_eq(wd_lock_acquire(self, &c->mu), 0);
  wd_handle_cancel(&c->w[0].h);
  cr_assert_eq(wd_cond_signal(&c->cv), 0);
  cr_assert_eq(c->cv.nwaiting_, 0);
  cr_assert_eq(wd_cond_deinit(&c->cv), WD_EBUSY,
               "both waiters still have to re-acquire the lock");
  assert_msg_has(self, "condition 'changed' has 0 waiting, 2 returning");
  cr_assert_eq(wd_lock_release(self, &c->mu), 0);
  return teardown(self, &g, c);
}

Test(cond, deinit_waits_until_woken_waiters_have_returned) {
  cast c = {0};
  cr_assert_eq(run_virtual(deinit_leaving_main, &c), 0);
  cr_assert_eq(c.w[0].rc, WD_ECANCELED);
  cr_assert_eq(c.w[1].rc, 0);
  cr_assert(c.w[0].held && c.w[1].held);
  assert_no_leaks();
}

/* ---- timed waits at their deadline edge -------------------------------- */

static int edge_main(wd_task *self, void *arg) {
  cast *c = arg;
  wd_group g;
  setup(self, &g, c, 1, c->w[0].timeout);
  cr_assert_eq(wd_sleep_until(self, WD_SEC), 0);
  wd_cond_signal(&c->cv);
  return teardown(self, &g, c);
}

static waiter run_edge(wd_time timeout) {
  cast c = {.w[0].timeout = timeout};
  cr_assert_eq(run_virtual(edge_main, &c), 0);
  cr_assert(c.w[0].held);
  assert_no_leaks();
  return c.w[0];
}

Test(cond, timed_wait_just_before_the_signal_times_out) {
  waiter w = run_edge(WD_SEC - 1);
  cr_assert_eq(w.rc, WD_ETIMEDOUT);
  cr_assert_eq(w.at, WD_SEC - 1);
  cr_assert_str_eq(w.msg, "condition 'changed': not signalled within 1.000 s");
}

Test(cond, timed_wait_expiring_exactly_at_the_signal_times_out) {
  waiter w = run_edge(WD_SEC);
  cr_assert_eq(w.rc, WD_ETIMEDOUT);
  cr_assert_eq(w.at, WD_SEC);
}

Test(cond, timed_wait_just_after_the_signal_returns_0) {
  waiter w = run_edge(WD_SEC + 1);
  cr_assert_eq(w.rc, 0);
  cr_assert_eq(w.at, WD_SEC);
}

/* ---- allocation failure ------------------------------------------------ */

/* The wait's guard scope needs a timer slot, allocated only when the
 * runtime's table is full: pad it with p scopes so that for one p it must
 * grow, and fail that allocation.  The wait must return WD_ENOMEM with the
 * lock still held and nothing else done. */
static int nomem_main(wd_task *self, void *arg) {
  int *pad = arg;
  wd_lock mu;
  wd_cond cv;
  wd_cancel_scope s[80];
  wd_lock_init(&mu, "mu");
  wd_cond_init(&cv, "changed", &mu);
  for (int i = 0; i < *pad; i++)
    wd_cancel_scope_enter(self, &s[i], NULL);
  wd_lock_acquire(self, &mu);
  wd_alloc_fail_after(1);
  int rc = wd_cond_wait_for(self, &cv, WD_SEC);
  wd_alloc_fail_after(0);
  cr_assert_eq(wd_lock_owner(&mu), self);
  wd_lock_release(self, &mu);
  for (int i = *pad; i-- > 0;)
    wd_cancel_scope_exit(self, &s[i], 0);
  wd_cond_deinit(&cv);
  wd_lock_deinit(&mu);
  *pad = rc;
  return 0;
}

Test(cond, a_wait_without_memory_for_its_scope_changes_nothing) {
  int enomem = 0;
  for (int pad = 0; pad < 80; pad++) {
    int rc = pad;
    cr_assert_eq(run_virtual(nomem_main, &rc), 0);
    cr_assert(rc == WD_ETIMEDOUT || rc == WD_ENOMEM, "pad %d: rc %d", pad, rc);
    if (rc == WD_ENOMEM) enomem++;
    assert_no_leaks();
  }
  cr_assert_geq(enomem, 1);
}

/* ---- bad arguments and dumps ------------------------------------------- */

static int bad_main(wd_task *self, void *arg) {
  wd_lock mu, zlock;
  wd_cond cv, zero;
  memset(&zero, 0, sizeof zero);
  memset(&zlock, 0, sizeof zlock);
  wd_lock_init(&mu, "mu");
  cr_assert_eq(wd_cond_init(NULL, "x", &mu), WD_EINVAL);
  cr_assert_eq(wd_cond_init(&cv, "x", NULL), WD_EINVAL);
  assert_msg_has(self, "wd_cond_init: NULL lock");
  cr_assert_eq(wd_cond_init(&cv, "x", &zlock), WD_EINVAL);
  assert_msg_has(self, "lock not initialised");
  cr_assert_eq(wd_cond_init(&cv, "changed", &mu), 0);
  cr_assert_eq(wd_cond_wait(self, &cv), WD_EPERM);
  assert_msg_has(self, "condition 'changed' waited on by task 1 'main', "
                       "which does not hold lock 'mu'");
  cr_assert_eq(wd_cond_wait(NULL, &cv), WD_EINVAL);
  cr_assert_eq(wd_cond_wait(self, &zero), WD_EINVAL);
  cr_assert_eq(wd_cond_wait(self, NULL), WD_EINVAL);
  cr_assert_eq(wd_cond_wait_for(self, &cv, -1), WD_EINVAL);
  assert_msg_has(self, "negative timeout");
  cr_assert_eq(wd_cond_signal(NULL), WD_EINVAL);
  cr_assert_eq(wd_cond_broadcast(&zero), WD_EINVAL);
  /* Holding the lock: a zero timeout fails at once, lock untouched. */
  wd_lock_acquire(self, &mu);
  cr_assert_eq(wd_cond_wait_for(self, &cv, 0), WD_ETIMEDOUT);
  cr_assert_eq(wd_lock_owner(&mu), self);
  wd_cancel_scope s;
  wd_cancel_scope_enter(self, &s, NULL);
  wd_cancel(&s);
  cr_assert_eq(wd_cond_wait(self, &cv), WD_ECANCELED);
  cr_assert_eq(wd_lock_owner(&mu), self);
  wd_cancel_scope_exit(self, &s, 0);
  wd_lock_release(self, &mu);
  cr_assert_eq(wd_cond_deinit(NULL), 0);
  cr_assert_eq(wd_cond_deinit(&cv), 0);
  cr_assert_eq(wd_cond_signal(&cv), WD_EINVAL, "deinitialised");
  return wd_lock_deinit(&mu);
}

Test(cond, bad_arguments_return_clear_codes_with_a_message) {
  cr_assert_eq(run_virtual(bad_main, NULL), 0);
  assert_no_leaks();
}

static int dump_main(wd_task *self, void *arg) {
  cast *c = arg;
  wd_group g;
  setup(self, &g, c, 1, -1);
  char *text = dump_text();
  cr_assert_not_null(strstr(text, " on condition 'changed', created"), "%s",
                     text);
  free(text);
  wd_cond_signal(&c->cv);
  return teardown(self, &g, c);
}

Test(cond, dump_shows_a_task_waiting_on_the_condition_by_name) {
  cast c = {0};
  cr_assert_eq(run_virtual(dump_main, &c), 0);
  assert_no_leaks();
}
