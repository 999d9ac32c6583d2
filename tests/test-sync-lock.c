/* wd_lock: FIFO hand-off, owners, re-entry and foreign release, tasks that
 * end holding a lock, deadlock cycles, timed acquisition at its deadline
 * edge, cancellation of waiters, bad arguments, and what wd_dump shows.
 * Everything time-based runs on the virtual clock. */
#include <stdint.h>

#include "sync-helpers.h"

static size_t waiting(const wd_lock *l) {
  wd_lock_stats st;
  wd_lock_stats_get(l, &st);
  return st.waiting;
}

/* ---- the uncontended path ---------------------------------------------- */

static int basic_main(wd_task *self, void *arg) {
  wd_lock l;
  cr_assert_eq(wd_lock_init(&l, "accounts"), 0);
  cr_assert_null(wd_lock_owner(&l));
  cr_assert_eq(wd_lock_acquire(self, &l), 0);
  cr_assert_eq(wd_lock_owner(&l), self);
  cr_assert_eq(wd_lock_release(self, &l), 0);
  cr_assert_eq(wd_lock_acquire_try(self, &l), 0);
  cr_assert_eq(wd_lock_release(self, &l), 0);
  cr_assert_eq(wd_lock_acquire_for(self, &l, 0), 0, "free: no wait needed");
  cr_assert_eq(wd_lock_release(self, &l), 0);
  wd_lock_stats st;
  wd_lock_stats_get(&l, &st);
  cr_assert_eq(st.acquired, 3);
  cr_assert_eq(st.contended, 0);
  cr_assert_eq(st.owner_id, 0);
  cr_assert_eq(wd_lock_deinit(&l), 0);
  return 0;
}

Test(lock, acquire_release_try_and_stats) {
  cr_assert_eq(run_virtual(basic_main, NULL), 0);
  assert_no_leaks();
}

/* ---- fairness ---------------------------------------------------------- */

#define N_FAIR 1000

typedef struct fair {
  wd_lock lock;
  int arrival[N_FAIR], acquired[N_FAIR];
  int narrived, nacquired, inside;
} fair;

static fair *the_fair;

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

/* Each task arrives after a pseudo-random delay and holds the lock for a
 * pseudo-random while (some yields, some sleeps), so arrivals happen while
 * the lock is free, held, and just handed on but not yet taken. */
static int fair_task(wd_task *self, void *arg) {
  fair *f = the_fair;
  int id = (int)(intptr_t)arg;
  uint64_t r = mix((uint64_t)id + 1);
  cr_assert_eq(wd_sleep(self, (wd_time)(r % 50) * WD_MSEC), 0);
  f->arrival[f->narrived++] = id;
  cr_assert_eq(wd_lock_acquire(self, &f->lock), 0);
  f->acquired[f->nacquired++] = id;
  cr_assert_eq(f->inside++, 0, "two owners at once");
  if (r & 0x100)
    for (int i = 0; i < (int)((r >> 12) % 4); i++)
      cr_assert_eq(wd_yield(self), 0);
  else
    cr_assert_eq(wd_sleep(self, (wd_time)((r >> 12) % 3) * WD_MSEC), 0);
  f->inside--;
  return wd_lock_release(self, &f->lock);
}

static int fair_main(wd_task *self, void *arg) {
  fair *f = the_fair;
  wd_group g;
  wd_lock_init(&f->lock, "fair");
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < N_FAIR; i++)
    cr_assert_eq(wd_spawn(&g, fair_task, (void *)(intptr_t)i, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  wd_lock_stats st;
  wd_lock_stats_get(&f->lock, &st);
  cr_assert_eq(st.acquired, N_FAIR);
  cr_assert_gt(st.contended, N_FAIR / 2, "the test must contend");
  return wd_lock_deinit(&f->lock);
}

Test(lock, thousand_contenders_acquire_in_arrival_order) {
  static fair f;
  the_fair = &f;
  cr_assert_eq(run_virtual(fair_main, NULL), 0);
  cr_assert_eq(f.nacquired, N_FAIR);
  for (int i = 0; i < N_FAIR; i++)
    cr_assert_eq(f.acquired[i], f.arrival[i],
                 "acquisition %d went to task %d, but task %d came first", i,
                 f.acquired[i], f.arrival[i]);
  assert_no_leaks();
}

/* A task that arrives between a release and the new owner's first run
 * queues behind: the lock was handed on, not freed. */
typedef struct barge {
  wd_lock lock;
  char order[8];
  int n;
} barge;

static int barge_waiter(wd_task *self, void *arg) {
  barge *b = arg;
  cr_assert_eq(wd_lock_acquire(self, &b->lock), 0);
  b->order[b->n++] = wd_task_name(self)[0];
  return wd_lock_release(self, &b->lock);
}

static int barge_main(wd_task *self, void *arg) {
  barge *b = arg;
  wd_group g;
  wd_lock_init(&b->lock, "handoff");
  wd_lock_acquire(self, &b->lock);
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, barge_waiter, b, &(wd_spawn_opts){.name = "w"});
  yield_until(self, waiting(&b->lock) == 1);
  cr_assert_eq(wd_lock_release(self, &b->lock), 0);
  cr_assert_neq(wd_lock_owner(&b->lock), self);
  cr_assert_not_null(wd_lock_owner(&b->lock), "handed on, not freed");
  cr_assert_eq(wd_lock_acquire_try(self, &b->lock), WD_EAGAIN);
  cr_assert_eq(wd_lock_acquire(self, &b->lock), 0); /* queues behind w */
  b->order[b->n++] = 'm';
  wd_lock_release(self, &b->lock);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_lock_deinit(&b->lock);
}

Test(lock, a_newcomer_cannot_barge_past_the_waiter_it_was_handed_to) {
  barge b = {0};
  cr_assert_eq(run_virtual(barge_main, &b), 0);
  cr_assert_str_eq(b.order, "wm");
  assert_no_leaks();
}

/* ---- owner errors ------------------------------------------------------ */

typedef struct shared {
  wd_lock lock;
  int rc;
  char msg[512];
} shared;

static int foreign_release(wd_task *self, void *arg) {
  shared *s = arg;
  s->rc = wd_lock_release(self, &s->lock);
  snprintf(s->msg, sizeof s->msg, "%s", last_msg(self));
  return 0;
}

static int owner_errors_main(wd_task *self, void *arg) {
  shared *s = arg;
  wd_lock_init(&s->lock, "accounts");
  cr_assert_eq(wd_lock_release(self, &s->lock), WD_EPERM);
  assert_msg_has(self, "lock 'accounts': released by task 1 'main', but it "
                       "is not held");
  cr_assert_eq(wd_lock_acquire(self, &s->lock), 0);
  cr_assert_eq(wd_lock_acquire(self, &s->lock), WD_EDEADLK);
  assert_msg_has(self, "lock 'accounts': already held by this task (task 1 "
                       "'main'); locks are not recursive");
  cr_assert_eq(wd_lock_acquire_for(self, &s->lock, WD_SEC), WD_EDEADLK);
  cr_assert_eq(wd_lock_acquire_try(self, &s->lock), WD_EDEADLK);
  cr_assert_eq(wd_lock_owner(&s->lock), self, "still held once");

  wd_group g;
  wd_handle h;
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, foreign_release, s,
           &(wd_spawn_opts){.name = "intruder", .handle = &h});
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(s->rc, WD_EPERM);
  char want[128];
  snprintf(want, sizeof want,
           "lock 'accounts': released by task %llu 'intruder', but held by "
           "task 1 'main'",
           (unsigned long long)h.id);
  cr_assert_not_null(strstr(s->msg, want), "got \"%s\"", s->msg);
  cr_assert_eq(wd_lock_owner(&s->lock), self,
               "a foreign release changes "
               "nothing");
  cr_assert_eq(wd_lock_deinit(&s->lock), WD_EBUSY);
  assert_msg_has(self, "lock 'accounts' is held by task 1 'main'");
  cr_assert_eq(wd_lock_release(self, &s->lock), 0);
  return wd_lock_deinit(&s->lock);
}

Test(lock, reentry_is_edeadlk_and_foreign_release_is_eperm) {
  shared s = {0};
  cr_assert_eq(run_virtual(owner_errors_main, &s), 0);
  assert_no_leaks();
}

static int bad_args_main(wd_task *self, void *arg) {
  wd_lock l, zero;
  memset(&zero, 0, sizeof zero);
  cr_assert_eq(wd_lock_init(NULL, "x"), WD_EINVAL);
  cr_assert_eq(wd_lock_init(&l, NULL), 0, "a name is optional");
  cr_assert_eq(wd_lock_acquire(NULL, &l), WD_EINVAL);
  cr_assert_eq(wd_lock_acquire(self, NULL), WD_EINVAL);
  assert_msg_has(self, "wd_lock_acquire: NULL lock");
  cr_assert_eq(wd_lock_acquire(self, &zero), WD_EINVAL);
  assert_msg_has(self, "lock not initialised");
  cr_assert_eq(wd_lock_acquire_for(self, &l, -1), WD_EINVAL);
  assert_msg_has(self, "negative timeout");
  cr_assert_eq(wd_lock_acquire_try(NULL, &l), WD_EINVAL);
  cr_assert_eq(wd_lock_release(self, NULL), WD_EINVAL);
  cr_assert_eq(wd_lock_release(NULL, &l), WD_EINVAL);
  cr_assert_eq(wd_lock_release(self, &zero), WD_EINVAL);
  cr_assert_eq(wd_lock_deinit(NULL), 0);
  cr_assert_eq(wd_lock_deinit(&zero), WD_EINVAL);
  cr_assert_null(wd_lock_owner(NULL));
  wd_lock_stats st = {.acquired = 9};
  wd_lock_stats_get(NULL, &st);
  cr_assert_eq(st.acquired, 0);
  wd_lock_stats_get(&l, NULL); /* no crash */
  wd_lock_set_deadlock_check(NULL, false);
  /* An unnamed lock is called just "lock" in messages. */
  cr_assert_eq(wd_lock_release(self, &l), WD_EPERM);
  assert_msg_has(self, "lock: released by task 1");
  cr_assert_eq(wd_lock_deinit(&l), 0);
  cr_assert_eq(wd_lock_acquire(self, &l), WD_EINVAL, "deinitialised");
  cr_assert_eq(wd_lock_deinit(&l), WD_EINVAL, "twice");
  return 0;
}

Test(lock, bad_arguments_return_einval_with_a_message) {
  cr_assert_eq(run_virtual(bad_args_main, NULL), 0);
  cr_assert_eq(wd_lock_init(NULL, NULL), WD_EINVAL, "also outside a task");
  assert_no_leaks();
}

/* ---- waiters: cancellation and deinit ---------------------------------- */

typedef struct waiter {
  wd_lock *lock;
  int rc, next_rc;
  bool owned;
  wd_handle h;
  char msg[256];
  int *order, *n, id;
} waiter;

static int lock_waiter_task(wd_task *self, void *arg) {
  waiter *w = arg;
  w->rc = wd_lock_acquire(self, w->lock);
  snprintf(w->msg, sizeof w->msg, "%s", last_msg(self));
  if (w->rc) return 0;
  w->owned = wd_lock_owner(w->lock) == self;
  w->order[(*w->n)++] = w->id;
  w->next_rc = wd_yield(self); /* a checkpoint while holding it */
  return wd_lock_release(self, w->lock);
}

typedef struct cast {
  wd_lock lock;
  waiter w[3];
  int order[3], n;
} cast;

static void spawn_waiters(wd_group *g, cast *c, int n) {
  static const char *names[] = {"w0", "w1", "w2"};
  for (int i = 0; i < n; i++) {
    c->w[i] = (waiter){
        .lock = &c->lock, .rc = 1, .order = c->order, .n = &c->n, .id = i};
    wd_spawn(g, lock_waiter_task, &c->w[i],
             &(wd_spawn_opts){.name = names[i], .handle = &c->w[i].h});
  }
}

static int cancel_queued_main(wd_task *self, void *arg) {
  cast *c = arg;
  wd_group g;
  wd_lock_init(&c->lock, "accounts");
  wd_lock_acquire(self, &c->lock);
  wd_group_enter(self, &g, NULL);
  spawn_waiters(&g, c, 3);
  yield_until(self, waiting(&c->lock) == 3);
  cr_assert_eq(wd_lock_deinit(&c->lock), WD_EBUSY);
  assert_msg_has(self, "(3 waiting)");
  wd_handle_cancel(&c->w[1].h);
  cr_assert_eq(waiting(&c->lock), 2, "a cancelled waiter leaves at once");
  cr_assert_eq(wd_lock_release(self, &c->lock), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_lock_deinit(&c->lock);
}

Test(lock, a_cancelled_waiter_leaves_and_the_next_one_gets_the_lock) {
  cast c = {0};
  cr_assert_eq(run_virtual(cancel_queued_main, &c), 0);
  cr_assert_eq(c.w[1].rc, WD_ECANCELED);
  cr_assert_not_null(strstr(c.w[1].msg, "lock 'accounts': acquire cancelled"),
                     "%s", c.w[1].msg);
  cr_assert_eq(c.n, 2);
  cr_assert_eq(c.order[0], 0);
  cr_assert_eq(c.order[1], 2);
  cr_assert(c.w[0].owned && c.w[2].owned);
  assert_no_leaks();
}

/* A cancelled waiter leaves the queue at once, but it still reads the lock
 * (for its message) when it runs: until then the lock must not be
 * deinitialised, or the caller may free it under the waiter. */
static int deinit_cancelled_main(wd_task *self, void *arg) {
  cast *c = arg;
  wd_group g;
  wd_lock_init(&c->lock, "accounts");
  wd_lock_acquire(self, &c->lock);
  wd_group_enter(self, &g, NULL);
  spawn_waiters(&g, c, 1);
  yield_until(self, waiting(&c->lock) == 1);
  wd_handle_cancel(&c->w[0].h);
  cr_assert_eq(wd_lock_release(self, &c->lock), 0);
  cr_assert_eq(waiting(&c->lock), 0);
  cr_assert_eq(wd_lock_deinit(&c->lock), WD_EBUSY,
               "the cancelled waiter has not returned yet");
  assert_msg_has(self, "1 returning from a wait");
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_lock_deinit(&c->lock);
}

Test(lock, deinit_waits_until_a_cancelled_waiter_has_returned) {
  cast c = {0};
  cr_assert_eq(run_virtual(deinit_cancelled_main, &c), 0);
  cr_assert_eq(c.w[0].rc, WD_ECANCELED);
  cr_assert_not_null(strstr(c.w[0].msg, "lock 'accounts': acquire cancelled"),
                     "%s", c.w[0].msg);
  assert_no_leaks();
}

/* Cancelled after it was handed the lock but before it ran: it keeps the
 * lock (the acquisition happened), and its next checkpoint fails. */
static int cancel_handed_main(wd_task *self, void *arg) {
  cast *c = arg;
  wd_group g;
  wd_lock_init(&c->lock, "accounts");
  wd_lock_acquire(self, &c->lock);
  wd_group_enter(self, &g, NULL);
  spawn_waiters(&g, c, 2);
  yield_until(self, waiting(&c->lock) == 2);
  cr_assert_eq(wd_lock_release(self, &c->lock), 0);
  cr_assert_eq(wd_lock_owner(&c->lock), c->w[0].h.task);
  wd_handle_cancel(&c->w[0].h);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_lock_deinit(&c->lock);
}

Test(lock, a_waiter_cancelled_after_the_hand_off_keeps_the_lock) {
  cast c = {0};
  cr_assert_eq(run_virtual(cancel_handed_main, &c), 0);
  cr_assert_eq(c.w[0].rc, 0);
  cr_assert(c.w[0].owned);
  cr_assert_eq(c.w[0].next_rc, WD_ECANCELED, "its next checkpoint fails");
  cr_assert_eq(c.w[1].rc, 0, "and the next waiter is not stranded");
  cr_assert_eq(c.n, 2);
  assert_no_leaks();
}

/* Already cancelled: fails at once even on a free lock (a checkpoint on
 * every call), and takes nothing. */
static int cancelled_main(wd_task *self, void *arg) {
  wd_lock l;
  wd_cancel_scope s;
  wd_lock_init(&l, "accounts");
  wd_cancel_scope_enter(self, &s, NULL);
  wd_cancel(&s);
  cr_assert_eq(wd_lock_acquire(self, &l), WD_ECANCELED);
  assert_msg_has(self, "lock 'accounts': acquire cancelled");
  cr_assert_eq(wd_lock_acquire_for(self, &l, WD_SEC), WD_ECANCELED);
  cr_assert_null(wd_lock_owner(&l));
  cr_assert_eq(wd_lock_acquire_try(self, &l), 0, "not a checkpoint");
  cr_assert_eq(wd_lock_release(self, &l), 0, "not a checkpoint");
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ECANCELED), 0);
  return wd_lock_deinit(&l);
}

Test(lock, acquire_is_a_checkpoint_even_when_free) {
  cr_assert_eq(run_virtual(cancelled_main, NULL), 0);
  assert_no_leaks();
}

/* Already cancelled and the lock is held: wd_park() refuses to park, and
 * the waiter record it had queued must leave with it - or the lock would
 * later be handed to a record in a frame that is gone. */
static int holder_1s(wd_task *self, void *arg) {
  wd_lock *l = arg;
  cr_assert_eq(wd_lock_acquire(self, l), 0);
  cr_assert_eq(wd_sleep(self, WD_SEC), 0);
  return wd_lock_release(self, l);
}

static int cancelled_held_main(wd_task *self, void *arg) {
  wd_lock l;
  wd_group g;
  wd_cancel_scope s;
  wd_lock_init(&l, "accounts");
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, holder_1s, &l, NULL);
  yield_until(self, wd_lock_owner(&l) != NULL);
  wd_cancel_scope_enter(self, &s, NULL);
  wd_cancel(&s);
  cr_assert_eq(wd_lock_acquire(self, &l), WD_ECANCELED);
  assert_msg_has(self, "lock 'accounts': acquire cancelled");
  cr_assert_eq(waiting(&l), 0, "not left in the queue");
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ECANCELED), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_null(wd_lock_owner(&l), "not handed to the cancelled caller");
  return wd_lock_deinit(&l);
}

Test(lock, a_cancelled_caller_is_not_queued_on_a_held_lock) {
  cr_assert_eq(run_virtual(cancelled_held_main, NULL), 0);
  assert_no_leaks();
}

/* ---- timed acquisition at its deadline edge ---------------------------- */

typedef struct edge {
  wd_lock lock;
  wd_time hold;    /* the holder releases at this time */
  wd_time timeout; /* the waiter's */
  int rc;
  wd_time at;
  char msg[256];
} edge;

static int edge_holder(wd_task *self, void *arg) {
  edge *e = arg;
  cr_assert_eq(wd_lock_acquire(self, &e->lock), 0);
  cr_assert_eq(wd_sleep_until(self, e->hold), 0);
  return wd_lock_release(self, &e->lock);
}

static int edge_waiter(wd_task *self, void *arg) {
  edge *e = arg;
  e->rc = wd_lock_acquire_for(self, &e->lock, e->timeout);
  e->at = wd_now(self);
  snprintf(e->msg, sizeof e->msg, "%s", last_msg(self));
  if (e->rc == 0) wd_lock_release(self, &e->lock);
  return 0;
}

static int edge_main(wd_task *self, void *arg) {
  edge *e = arg;
  wd_group g;
  wd_lock_init(&e->lock, "accounts");
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, edge_holder, e, &(wd_spawn_opts){.name = "writer"});
  wd_spawn(&g, edge_waiter, e, &(wd_spawn_opts){.name = "reader"});
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_null(wd_lock_owner(&e->lock));
  return wd_lock_deinit(&e->lock);
}

static edge run_edge(wd_time hold, wd_time timeout) {
  edge e = {.hold = hold, .timeout = timeout, .rc = 1};
  cr_assert_eq(run_virtual(edge_main, &e), 0);
  assert_no_leaks();
  return e;
}

Test(lock, timed_acquire_just_before_the_release_times_out) {
  edge e = run_edge(WD_SEC, WD_SEC - 1);
  cr_assert_eq(e.rc, WD_ETIMEDOUT);
  cr_assert_eq(e.at, WD_SEC - 1);
  cr_assert_not_null(strstr(e.msg, "lock 'accounts' not acquired within "
                                   "1.000 s; held by task "),
                     "%s", e.msg);
  cr_assert_not_null(strstr(e.msg, " 'writer' for at least 1.000 s"), "%s",
                     e.msg);
}

Test(lock, timed_acquire_expiring_exactly_at_the_release_times_out) {
  edge e = run_edge(WD_SEC, WD_SEC);
  cr_assert_eq(e.rc, WD_ETIMEDOUT, "due timers fire before tasks run");
  cr_assert_eq(e.at, WD_SEC);
}

Test(lock, timed_acquire_just_after_the_release_gets_the_lock) {
  edge e = run_edge(WD_SEC, WD_SEC + 1);
  cr_assert_eq(e.rc, 0);
  cr_assert_eq(e.at, WD_SEC, "handed over at the release, not later");
}

Test(lock, timed_acquire_with_zero_timeout_fails_at_once_on_a_held_lock) {
  edge e = run_edge(WD_SEC, 0);
  cr_assert_eq(e.rc, WD_ETIMEDOUT);
  cr_assert_eq(e.at, 0);
  cr_assert_not_null(strstr(e.msg, "not acquired within 0.000 s"));
}

/* The message names the owner and how long it has held the lock: exactly
 * when the owner was handed it while a timed waiter waited. */
typedef struct msgcase {
  wd_lock lock;
  int rc;
  char msg[256];
  uint64_t writer_id;
} msgcase;

static int hold_until_2s(wd_task *self, void *arg) {
  msgcase *m = arg;
  cr_assert_eq(wd_lock_acquire(self, &m->lock), 0);
  cr_assert_eq(wd_sleep_until(self, 2 * WD_SEC), 0);
  return wd_lock_release(self, &m->lock);
}

static int writer_holds_10s(wd_task *self, void *arg) {
  msgcase *m = arg;
  cr_assert_eq(wd_lock_acquire(self, &m->lock), 0); /* queued first */
  cr_assert_eq(wd_sleep(self, 10 * WD_SEC), 0);
  return wd_lock_release(self, &m->lock);
}

static int timed_reader(wd_task *self, void *arg) {
  msgcase *m = arg;
  cr_assert_eq(wd_sleep_until(self, WD_SEC / 10), 0);
  m->rc = wd_lock_acquire_for(self, &m->lock, 5 * WD_SEC);
  snprintf(m->msg, sizeof m->msg, "%s", last_msg(self));
  return 0;
}

static int msg_main(wd_task *self, void *arg) {
  msgcase *m = arg;
  wd_group g;
  wd_handle h;
  wd_lock_init(&m->lock, "accounts");
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, hold_until_2s, m, &(wd_spawn_opts){.name = "first"});
  wd_spawn(&g, writer_holds_10s, m,
           &(wd_spawn_opts){.name = "writer", .handle = &h});
  wd_spawn(&g, timed_reader, m, &(wd_spawn_opts){.name = "reader"});
  m->writer_id = h.id;
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_lock_deinit(&m->lock);
}

Test(lock, timeout_message_names_the_owner_and_how_long_it_held_the_lock) {
  msgcase m = {0};
  cr_assert_eq(run_virtual(msg_main, &m), 0);
  cr_assert_eq(m.rc, WD_ETIMEDOUT);
  char want[200];
  /* The writer got it at 2 s; the reader gave up at 5.1 s. */
  snprintf(want, sizeof want,
           "lock 'accounts' not acquired within 5.000 s; held by task %llu "
           "'writer' for 3.100 s",
           (unsigned long long)m.writer_id);
  cr_assert_str_eq(m.msg, want);
  assert_no_leaks();
}

/* A timed waiter that is handed the lock stops counting as timed: the
 * hand-off after it, with no timed waiter left, reads no clock, so a later
 * timeout can only say "for at least".  (Were it still counted, that
 * hand-off would have noted an exact time: "for 2.000 s".) */
typedef struct handed {
  wd_lock lock;
  int timed_rc, late_rc;
  char msg[256];
  uint64_t plain_id;
} handed;

static int handed_first(wd_task *self, void *arg) {
  handed *h = arg;
  cr_assert_eq(wd_lock_acquire(self, &h->lock), 0);
  cr_assert_eq(wd_sleep_until(self, WD_SEC), 0);
  return wd_lock_release(self, &h->lock);
}

static int handed_timed(wd_task *self, void *arg) {
  handed *h = arg;
  cr_assert_eq(wd_sleep_until(self, WD_SEC / 10), 0);
  h->timed_rc = wd_lock_acquire_for(self, &h->lock, 10 * WD_SEC);
  cr_assert_eq(h->timed_rc, 0);
  cr_assert_eq(wd_now(self), WD_SEC, "handed over at the release");
  cr_assert_eq(wd_sleep_until(self, 2 * WD_SEC), 0);
  return wd_lock_release(self, &h->lock);
}

static int handed_plain(wd_task *self, void *arg) {
  handed *h = arg;
  cr_assert_eq(wd_sleep_until(self, WD_SEC / 5), 0);
  cr_assert_eq(wd_lock_acquire(self, &h->lock), 0);
  cr_assert_eq(wd_now(self), 2 * WD_SEC);
  cr_assert_eq(wd_sleep_until(self, 10 * WD_SEC), 0);
  return wd_lock_release(self, &h->lock);
}

static int handed_late(wd_task *self, void *arg) {
  handed *h = arg;
  cr_assert_eq(wd_sleep_until(self, 3 * WD_SEC), 0);
  h->late_rc = wd_lock_acquire_for(self, &h->lock, WD_SEC);
  snprintf(h->msg, sizeof h->msg, "%s", last_msg(self));
  return 0;
}

static int handed_main(wd_task *self, void *arg) {
  handed *h = arg;
  wd_group g;
  wd_handle ph;
  wd_lock_init(&h->lock, "accounts");
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, handed_first, h, NULL);
  wd_spawn(&g, handed_timed, h, NULL);
  wd_spawn(&g, handed_plain, h,
           &(wd_spawn_opts){.name = "plain", .handle = &ph});
  wd_spawn(&g, handed_late, h, NULL);
  h->plain_id = ph.id;
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  wd_lock_stats st;
  wd_lock_stats_get(&h->lock, &st);
  cr_assert_eq(st.acquired, 3, "first, then timed and plain by hand-off");
  cr_assert_eq(st.contended, 2);
  cr_assert_eq(st.waiting, 0);
  return wd_lock_deinit(&h->lock);
}

Test(lock, a_timed_waiter_handed_the_lock_no_longer_counts_as_timed) {
  handed h = {0};
  cr_assert_eq(run_virtual(handed_main, &h), 0);
  cr_assert_eq(h.late_rc, WD_ETIMEDOUT);
  char want[200];
  snprintf(want, sizeof want,
           "lock 'accounts' not acquired within 1.000 s; held by task %llu "
           "'plain' for at least 1.000 s",
           (unsigned long long)h.plain_id);
  cr_assert_str_eq(h.msg, want);
  assert_no_leaks();
}

/* The timed path's one allocation is its scope's timer slot, made only
 * when the runtime's timer table is full.  The waiter pads the table with
 * p scopes first, so that for one p the slot must grow, and makes the next
 * allocation fail: the call then returns WD_ENOMEM with nothing taken and
 * nothing waited; for every other p it gets the lock. */
typedef struct padded {
  edge e;
  int pad;
} padded;

static int padded_waiter(wd_task *self, void *arg) {
  padded *p = arg;
  wd_cancel_scope s[80];
  for (int i = 0; i < p->pad; i++)
    cr_assert_eq(wd_cancel_scope_enter(self, &s[i], NULL), 0);
  wd_alloc_fail_after(1);
  p->e.rc = wd_lock_acquire_for(self, &p->e.lock, 2 * WD_SEC);
  wd_alloc_fail_after(0);
  p->e.at = wd_now(self);
  if (p->e.rc == 0) wd_lock_release(self, &p->e.lock);
  for (int i = p->pad; i-- > 0;)
    wd_cancel_scope_exit(self, &s[i], 0);
  return 0;
}

static int padded_main(wd_task *self, void *arg) {
  padded *p = arg;
  wd_group g;
  wd_lock_init(&p->e.lock, "accounts");
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, edge_holder, &p->e, NULL);
  wd_spawn(&g, padded_waiter, p, NULL);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_null(wd_lock_owner(&p->e.lock));
  return wd_lock_deinit(&p->e.lock);
}

Test(lock, timed_acquire_without_memory_for_its_timer_takes_nothing) {
  int enomem = 0;
  for (int pad = 0; pad < 80; pad++) {
    padded p = {.e = {.hold = WD_SEC, .rc = 1}, .pad = pad};
    cr_assert_eq(run_virtual(padded_main, &p), 0);
    if (p.e.rc == WD_ENOMEM) {
      cr_assert_eq(p.e.at, 0, "failed before waiting");
      enomem++;
    } else {
      cr_assert_eq(p.e.rc, 0, "pad %d: rc %d", pad, p.e.rc);
      cr_assert_eq(p.e.at, WD_SEC);
    }
    assert_no_leaks();
  }
  cr_assert_eq(enomem, 1, "the timer table grew once in the padding range");
}

/* ---- a task that ends holding a lock ----------------------------------- */

typedef struct quit {
  wd_lock lock;
  int got;
} quit;

static int quitter(wd_task *self, void *arg) {
  quit *q = arg;
  cr_assert_eq(wd_lock_acquire(self, &q->lock), 0);
  yield_until(self, waiting(&q->lock) == 1);
  return 0; /* forgets to release */
}

static int heir(wd_task *self, void *arg) {
  quit *q = arg;
  cr_assert_eq(wd_lock_acquire(self, &q->lock), 0);
  cr_assert_eq(wd_lock_owner(&q->lock), self);
  q->got++;
  return wd_lock_release(self, &q->lock);
}

static int quit_main(wd_task *self, void *arg) {
  quit *q = arg;
  wd_lock_init(&q->lock, "accounts");
  for (int round = 0; round < 2; round++) {
    wd_group g;
    wd_group_enter(self, &g, NULL);
    wd_spawn(&g, quitter, q, &(wd_spawn_opts){.name = "quitter"});
    wd_spawn(&g, heir, q, &(wd_spawn_opts){.name = "heir"});
    cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  }
  wd_lock_stats st;
  wd_lock_stats_get(&q->lock, &st);
  cr_assert_eq(st.abandoned, 2);
  cr_assert_null(wd_lock_owner(&q->lock));
  return wd_lock_deinit(&q->lock);
}

Test(lock, a_task_ending_with_the_lock_is_reported_and_the_lock_handed_on) {
  quit q = {0};
  capture c;
  capture_begin(&c);
  int rc = run_virtual(quit_main, &q);
  char *err = capture_end(&c);
  cr_assert_eq(rc, 0);
  cr_assert_eq(q.got, 2, "each heir got the lock");
  const char *hit = strstr(err, "'quitter' ended holding lock 'accounts'");
  cr_assert_not_null(hit, "stderr: %s", err);
  cr_assert_null(
      strstr(hit + strlen("'quitter' ended holding"), "ended holding"),
      "reported once: %s", err);
  free(err);
  assert_no_leaks();
}

/* A task that ends holding a free lock (nobody waits): freed. */
static int lone_quitter(wd_task *self, void *arg) {
  return wd_lock_acquire(self, arg);
}

static int lone_main(wd_task *self, void *arg) {
  wd_lock l;
  wd_group g;
  wd_lock_init(&l, NULL);
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, lone_quitter, &l, NULL);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_null(wd_lock_owner(&l));
  cr_assert_eq(wd_lock_acquire(self, &l), 0);
  cr_assert_eq(wd_lock_release(self, &l), 0);
  return wd_lock_deinit(&l);
}

Test(lock, a_lock_left_by_an_ended_task_with_no_waiter_is_freed) {
  capture c;
  capture_begin(&c);
  int rc = run_virtual(lone_main, NULL);
  char *err = capture_end(&c);
  cr_assert_eq(rc, 0);
  cr_assert_not_null(strstr(err, "ended holding lock;"), "%s", err);
  free(err);
  assert_no_leaks();
}

/* ---- deadlock cycles --------------------------------------------------- */

#define MAX_RING 3

typedef struct ring {
  int n;
  wd_lock locks[MAX_RING];
  int holding, waiting;
  int rc[MAX_RING];
  wd_handle h[MAX_RING];
  char msg[640];
} ring;

static ring *the_ring;

/* Task i holds lock i, then wants lock i+1 (mod n), in turn: the last one
 * would close the cycle. */
static int ring_task(wd_task *self, void *arg) {
  ring *r = the_ring;
  int i = (int)(intptr_t)arg;
  cr_assert_eq(wd_lock_acquire(self, &r->locks[i]), 0);
  r->holding++;
  yield_until(self, r->holding == r->n && r->waiting == i);
  if (i < r->n - 1) r->waiting++;
  r->rc[i] = wd_lock_acquire(self, &r->locks[(i + 1) % r->n]);
  if (i == r->n - 1) snprintf(r->msg, sizeof r->msg, "%s", last_msg(self));
  if (r->rc[i] == 0) wd_lock_release(self, &r->locks[(i + 1) % r->n]);
  return wd_lock_release(self, &r->locks[i]);
}

static int ring_main(wd_task *self, void *arg) {
  ring *r = the_ring;
  static const char *lock_names[] = {"a", "b", "c"};
  static const char *task_names[] = {"t0", "t1", "t2"};
  wd_group g;
  for (int i = 0; i < r->n; i++)
    wd_lock_init(&r->locks[i], lock_names[i]);
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < r->n; i++)
    wd_spawn(&g, ring_task, (void *)(intptr_t)i,
             &(wd_spawn_opts){.name = task_names[i], .handle = &r->h[i]});
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  for (int i = 0; i < r->n; i++)
    cr_assert_eq(wd_lock_deinit(&r->locks[i]), 0);
  return 0;
}

static void check_ring(int n, const char *want_fmt) {
  static ring r;
  memset(&r, 0, sizeof r);
  r.n = n;
  the_ring = &r;
  cr_assert_eq(run_virtual(ring_main, NULL), 0);
  for (int i = 0; i < n - 1; i++)
    cr_assert_eq(r.rc[i], 0, "task %d got its second lock in the end", i);
  cr_assert_eq(r.rc[n - 1], WD_EDEADLK);
  char want[640];
  unsigned long long id[MAX_RING];
  for (int i = 0; i < n; i++)
    id[i] = (unsigned long long)r.h[i].id;
  if (n == 2)
    snprintf(want, sizeof want, want_fmt, id[1], id[0], id[1]);
  else
    snprintf(want, sizeof want, want_fmt, id[2], id[0], id[1], id[2]);
  cr_assert_str_eq(r.msg, want);
  assert_no_leaks();
}

Test(lock, a_cycle_of_two_tasks_is_refused_and_named) {
  check_ring(2, "lock 'a': deadlock: task %llu 't1' waits for lock 'a' held "
                "by task %llu 't0', which waits for lock 'b' held by task "
                "%llu 't1'");
}

Test(lock, a_cycle_of_three_tasks_is_refused_and_named) {
  check_ring(3, "lock 'a': deadlock: task %llu 't2' waits for lock 'a' held "
                "by task %llu 't0', which waits for lock 'b' held by task "
                "%llu 't1', which waits for lock 'c' held by task %llu 't2'");
}

/* Two tasks deadlocked on locks without the check (they time out), and a
 * third that waits for one of them: the walk ends without blaming it. */
typedef struct knot {
  wd_lock a, b, c;
  int held, rc_x, rc_y, rc_z;
} knot;

static int knot_x(wd_task *self, void *arg) {
  knot *k = arg;
  wd_lock_acquire(self, &k->a);
  wd_lock_acquire(self, &k->c);
  k->held++;
  yield_until(self, k->held == 2);
  k->rc_x = wd_lock_acquire_for(self, &k->b, 2 * WD_SEC);
  if (k->rc_x == 0) wd_lock_release(self, &k->b);
  wd_lock_release(self, &k->c);
  return wd_lock_release(self, &k->a);
}

static int knot_y(wd_task *self, void *arg) {
  knot *k = arg;
  wd_lock_acquire(self, &k->b);
  k->held++;
  yield_until(self, k->held == 2 && waiting(&k->b) == 1);
  k->rc_y = wd_lock_acquire_for(self, &k->a, WD_SEC);
  return wd_lock_release(self, &k->b);
}

static int knot_z(wd_task *self, void *arg) {
  knot *k = arg;
  yield_until(self, waiting(&k->a) == 1 && waiting(&k->b) == 1);
  k->rc_z = wd_lock_acquire_for(self, &k->c, WD_SEC / 2);
  return 0;
}

static int knot_main(wd_task *self, void *arg) {
  knot *k = arg;
  wd_group g;
  wd_lock_init(&k->a, "a");
  wd_lock_init(&k->b, "b");
  wd_lock_init(&k->c, "c");
  wd_lock_set_deadlock_check(&k->a, false);
  wd_lock_set_deadlock_check(&k->b, false);
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, knot_x, k, NULL);
  wd_spawn(&g, knot_y, k, NULL);
  wd_spawn(&g, knot_z, k, NULL);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  wd_lock_deinit(&k->a);
  wd_lock_deinit(&k->b);
  return wd_lock_deinit(&k->c);
}

Test(lock, a_cycle_among_other_tasks_is_not_blamed_on_the_newcomer) {
  knot k = {0};
  cr_assert_eq(run_virtual(knot_main, &k), 0);
  cr_assert_eq(k.rc_z, WD_ETIMEDOUT, "waited, was not told EDEADLK");
  cr_assert_eq(k.rc_y, WD_ETIMEDOUT, "check off: y waited until its timeout");
  cr_assert_eq(k.rc_x, 0, "x got b once y gave up and released it");
  assert_no_leaks();
}

/* ---- what wd_dump shows ------------------------------------------------ */

static int dump_waiter(wd_task *self, void *arg) {
  cr_assert_eq(wd_lock_acquire(self, arg), 0);
  return wd_lock_release(self, arg);
}

static int dump_main(wd_task *self, void *arg) {
  char **out = arg;
  wd_lock l;
  wd_group g;
  wd_lock_init(&l, "accounts");
  wd_lock_acquire(self, &l);
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, dump_waiter, &l, &(wd_spawn_opts){.name = "clerk"});
  yield_until(self, waiting(&l) == 1);
  *out = dump_text();
  wd_lock_release(self, &l);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_lock_deinit(&l);
}

Test(lock, dump_shows_a_task_waiting_on_the_lock_by_name) {
  char *text = NULL;
  cr_assert_eq(run_virtual(dump_main, &text), 0);
  const char *line = strstr(text, "'clerk': blocked ");
  cr_assert_not_null(line, "%s", text);
  const char *on = strstr(line, " on lock 'accounts', created");
  cr_assert_not_null(on, "%s", text);
  cr_assert_null(memchr(line, '\n', (size_t)(on - line)), "%s", text);
  free(text);
  assert_no_leaks();
}
