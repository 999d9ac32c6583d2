/* wd_sem: counting, FIFO hand-off under 1000 contending tasks, timed
 * acquisition at its deadline edge, cancellation that loses no permit,
 * release from outside any task, bad arguments, what wd_dump shows. */
#include <stdint.h>

#include "sync-helpers.h"

static int count_main(wd_task *self, void *arg) {
  wd_sem s;
  cr_assert_eq(wd_sem_init(&s, "slots", 2), 0);
  cr_assert_eq(wd_sem_value(&s), 2);
  cr_assert_eq(wd_sem_acquire(self, &s), 0);
  cr_assert_eq(wd_sem_acquire_try(&s), 0);
  cr_assert_eq(wd_sem_value(&s), 0);
  cr_assert_eq(wd_sem_acquire_try(&s), WD_EAGAIN);
  cr_assert_eq(wd_sem_acquire_for(self, &s, 0), WD_ETIMEDOUT);
  assert_msg_has(self, "semaphore 'slots': no permit within 0.000 s");
  cr_assert_eq(wd_sem_release(&s), 0);
  cr_assert_eq(wd_sem_release(&s), 0);
  cr_assert_eq(wd_sem_release(&s), 0, "a semaphore may count up freely");
  cr_assert_eq(wd_sem_value(&s), 3);
  cr_assert_eq(wd_sem_acquire_for(self, &s, 0), 0);
  cr_assert_eq(wd_sem_waiting(&s), 0);
  return wd_sem_deinit(&s);
}

Test(sem, counts_permits) {
  cr_assert_eq(run_virtual(count_main, NULL), 0);
  assert_no_leaks();
}

/* ---- fairness ---------------------------------------------------------- */

#define N_FAIR 1000
#define PERMITS 3

typedef struct fair {
  wd_sem sem;
  int arrival[N_FAIR], acquired[N_FAIR];
  int narrived, nacquired, inside, most;
} fair;

static fair *the_fair;

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

static int fair_task(wd_task *self, void *arg) {
  fair *f = the_fair;
  int id = (int)(intptr_t)arg;
  uint64_t r = mix((uint64_t)id * 7 + 3);
  cr_assert_eq(wd_sleep(self, (wd_time)(r % 40) * WD_MSEC), 0);
  f->arrival[f->narrived++] = id;
  cr_assert_eq(wd_sem_acquire(self, &f->sem), 0);
  f->acquired[f->nacquired++] = id;
  if (++f->inside > f->most) f->most = f->inside;
  if (r & 0x100)
    cr_assert_eq(wd_yield(self), 0);
  else
    cr_assert_eq(wd_sleep(self, (wd_time)((r >> 12) % 3) * WD_MSEC), 0);
  f->inside--;
  return wd_sem_release(&f->sem);
}

static int fair_main(wd_task *self, void *arg) {
  fair *f = the_fair;
  wd_group g;
  wd_sem_init(&f->sem, "fair", PERMITS);
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < N_FAIR; i++)
    cr_assert_eq(wd_spawn(&g, fair_task, (void *)(intptr_t)i, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_sem_value(&f->sem), PERMITS);
  return wd_sem_deinit(&f->sem);
}

Test(sem, thousand_contenders_acquire_in_arrival_order) {
  static fair f;
  the_fair = &f;
  cr_assert_eq(run_virtual(fair_main, NULL), 0);
  cr_assert_eq(f.nacquired, N_FAIR);
  cr_assert_eq(f.most, PERMITS, "the cap was reached and never passed");
  for (int i = 0; i < N_FAIR; i++)
    cr_assert_eq(f.acquired[i], f.arrival[i],
                 "permit %d went to task %d, but task %d came first", i,
                 f.acquired[i], f.arrival[i]);
  assert_no_leaks();
}

/* ---- cancellation ------------------------------------------------------ */

typedef struct waiter {
  wd_sem *sem;
  int rc, next_rc;
  wd_handle h;
  char msg[200];
} waiter;

static int sem_waiter(wd_task *self, void *arg) {
  waiter *w = arg;
  w->rc = wd_sem_acquire(self, w->sem);
  snprintf(w->msg, sizeof w->msg, "%s", last_msg(self));
  if (w->rc == 0) w->next_rc = wd_yield(self);
  return 0; /* keeps its permit: the test counts them */
}

typedef struct cast {
  wd_sem sem;
  waiter w[3];
} cast;

static void spawn_waiters(wd_task *self, wd_group *g, cast *c) {
  for (int i = 0; i < 3; i++) {
    c->w[i] = (waiter){.sem = &c->sem, .rc = 1, .next_rc = 1};
    wd_spawn(g, sem_waiter, &c->w[i], &(wd_spawn_opts){.handle = &c->w[i].h});
  }
  yield_until(self, wd_sem_waiting(&c->sem) == 3);
}

static int cancel_queued_main(wd_task *self, void *arg) {
  cast *c = arg;
  wd_group g;
  wd_sem_init(&c->sem, "slots", 0);
  wd_group_enter(self, &g, NULL);
  spawn_waiters(self, &g, c);
  cr_assert_eq(wd_sem_deinit(&c->sem), WD_EBUSY);
  assert_msg_has(self, "semaphore 'slots' has 3 waiting");
  wd_handle_cancel(&c->w[0].h);
  cr_assert_eq(wd_sem_waiting(&c->sem), 2);
  wd_sem_release(&c->sem);
  wd_sem_release(&c->sem);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_sem_value(&c->sem), 0, "both permits went to waiters");
  return wd_sem_deinit(&c->sem);
}

Test(sem, a_cancelled_waiter_takes_nothing_and_the_next_gets_the_permit) {
  cast c = {0};
  cr_assert_eq(run_virtual(cancel_queued_main, &c), 0);
  cr_assert_eq(c.w[0].rc, WD_ECANCELED);
  cr_assert_not_null(
      strstr(c.w[0].msg, "semaphore 'slots': acquire cancelled"));
  cr_assert_eq(c.w[1].rc, 0);
  cr_assert_eq(c.w[2].rc, 0);
  assert_no_leaks();
}

static int cancel_handed_main(wd_task *self, void *arg) {
  cast *c = arg;
  wd_group g;
  wd_sem_init(&c->sem, "slots", 0);
  wd_group_enter(self, &g, NULL);
  spawn_waiters(self, &g, c);
  wd_sem_release(&c->sem); /* handed to w[0] */
  wd_handle_cancel(&c->w[0].h);
  wd_handle_cancel(&c->w[1].h);
  wd_sem_release(&c->sem); /* w[1] left: w[2] gets it */
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_sem_value(&c->sem), 0);
  return wd_sem_deinit(&c->sem);
}

Test(sem, a_waiter_cancelled_after_the_hand_off_keeps_its_permit) {
  cast c = {0};
  cr_assert_eq(run_virtual(cancel_handed_main, &c), 0);
  cr_assert_eq(c.w[0].rc, 0, "it was handed the permit");
  cr_assert_eq(c.w[0].next_rc, WD_ECANCELED);
  cr_assert_eq(c.w[1].rc, WD_ECANCELED);
  cr_assert_eq(c.w[2].rc, 0);
  assert_no_leaks();
}

/* Cancelled waiters - a plain one and a timed one - leave the queue at
 * once but still read the semaphore (their message) when they run: until
 * both have returned, deinit must refuse, or the caller could free the
 * semaphore under them. */
typedef struct gone {
  wd_sem sem;
  int rc[2];
  wd_handle h[2];
} gone;

static int gone_plain(wd_task *self, void *arg) {
  gone *g = arg;
  g->rc[0] = wd_sem_acquire(self, &g->sem);
  return 0;
}

static int gone_timed(wd_task *self, void *arg) {
  gone *g = arg;
  g->rc[1] = wd_sem_acquire_for(self, &g->sem, WD_SEC);
  return 0;
}

static int deinit_gone_main(wd_task *self, void *arg) {
  gone *c = arg;
  wd_group g;
  wd_sem_init(&c->sem, "slots", 0);
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, gone_plain, c, &(wd_spawn_opts){.handle = &c->h[0]});
  wd_spawn(&g, gone_timed, c, &(wd_spawn_opts){.handle = &c->h[1]});
  yield_until(self, wd_sem_waiting(&c->sem) == 2);
  wd_handle_cancel(&c->h[0]);
  wd_handle_cancel(&c->h[1]);
  cr_assert_eq(wd_sem_waiting(&c->sem), 0);
  cr_assert_eq(wd_sem_deinit(&c->sem), WD_EBUSY,
               "the cancelled waiters have not returned yet");
  assert_msg_has(self, "semaphore 'slots' has 0 waiting, 2 returning from a "
                       "wait");
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_sem_deinit(&c->sem);
}

Test(sem, deinit_waits_until_cancelled_waiters_have_returned) {
  gone c = {.rc = {1, 1}};
  cr_assert_eq(run_virtual(deinit_gone_main, &c), 0);
  cr_assert_eq(c.rc[0], WD_ECANCELED);
  cr_assert_eq(c.rc[1], WD_ECANCELED);
  assert_no_leaks();
}

/* Already cancelled and no permit free: wd_park() refuses to park, and the
 * waiter record it had queued must leave with it - or the next release
 * would hand its permit to a record in a frame that is gone. */
static int cancelled_empty_main(wd_task *self, void *arg) {
  wd_sem s;
  wd_cancel_scope cs;
  wd_sem_init(&s, "slots", 0);
  wd_cancel_scope_enter(self, &cs, NULL);
  wd_cancel(&cs);
  cr_assert_eq(wd_sem_acquire(self, &s), WD_ECANCELED);
  assert_msg_has(self, "semaphore 'slots': acquire cancelled");
  cr_assert_eq(wd_sem_waiting(&s), 0, "not left in the queue");
  cr_assert_eq(wd_cancel_scope_exit(self, &cs, WD_ECANCELED), 0);
  cr_assert_eq(wd_sem_release(&s), 0);
  cr_assert_eq(wd_sem_value(&s), 1, "the permit was not handed to it");
  return wd_sem_deinit(&s);
}

Test(sem, a_cancelled_caller_is_not_queued_when_no_permit_is_free) {
  cr_assert_eq(run_virtual(cancelled_empty_main, NULL), 0);
  assert_no_leaks();
}

/* ---- timed acquisition at its deadline edge ---------------------------- */

typedef struct edge {
  wd_sem sem;
  wd_time timeout;
  int rc;
  wd_time at;
} edge;

static int edge_releaser(wd_task *self, void *arg) {
  edge *e = arg;
  cr_assert_eq(wd_sleep_until(self, WD_SEC), 0);
  return wd_sem_release(&e->sem);
}

static int edge_main(wd_task *self, void *arg) {
  edge *e = arg;
  wd_group g;
  wd_sem_init(&e->sem, "slots", 0);
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, edge_releaser, e, NULL);
  e->rc = wd_sem_acquire_for(self, &e->sem, e->timeout);
  e->at = wd_now(self);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_sem_value(&e->sem), e->rc == 0 ? 0 : 1, "no permit lost");
  return wd_sem_deinit(&e->sem);
}

static edge run_edge(wd_time timeout) {
  edge e = {.timeout = timeout, .rc = 1};
  cr_assert_eq(run_virtual(edge_main, &e), 0);
  assert_no_leaks();
  return e;
}

Test(sem, timed_acquire_just_before_the_release_times_out) {
  edge e = run_edge(WD_SEC - 1);
  cr_assert_eq(e.rc, WD_ETIMEDOUT);
  cr_assert_eq(e.at, WD_SEC - 1);
}

Test(sem, timed_acquire_expiring_exactly_at_the_release_times_out) {
  edge e = run_edge(WD_SEC);
  cr_assert_eq(e.rc, WD_ETIMEDOUT);
  cr_assert_eq(e.at, WD_SEC);
}

Test(sem, timed_acquire_just_after_the_release_gets_the_permit) {
  edge e = run_edge(WD_SEC + 1);
  cr_assert_eq(e.rc, 0);
  cr_assert_eq(e.at, WD_SEC);
}

/* ---- a release from outside any task ----------------------------------- */

static void post_release(wd_runtime *rt, void *arg) {
  cr_assert_null(wd_self());
  cr_assert_eq(wd_sem_release(arg), 0);
}

static int posted_main(wd_task *self, void *arg) {
  wd_sem s;
  wd_sem_init(&s, "signal", 0);
  cr_assert_eq(wd_runtime_post(wd_task_runtime(self), post_release, &s), 0);
  cr_assert_eq(wd_sem_acquire(self, &s), 0);
  return wd_sem_deinit(&s);
}

Test(sem, a_posted_callback_can_release) {
  cr_assert_eq(run_virtual(posted_main, NULL), 0);
  assert_no_leaks();
}

/* ---- bad arguments and dumps ------------------------------------------- */

static int bad_main(wd_task *self, void *arg) {
  wd_sem s, zero;
  memset(&zero, 0, sizeof zero);
  cr_assert_eq(wd_sem_init(NULL, "x", 1), WD_EINVAL);
  wd_sem_init(&s, NULL, 0);
  cr_assert_eq(wd_sem_acquire(NULL, &s), WD_EINVAL);
  cr_assert_eq(wd_sem_acquire(self, NULL), WD_EINVAL);
  assert_msg_has(self, "wd_sem_acquire: NULL semaphore");
  cr_assert_eq(wd_sem_acquire(self, &zero), WD_EINVAL);
  assert_msg_has(self, "semaphore not initialised");
  cr_assert_eq(wd_sem_acquire_for(self, &s, -5), WD_EINVAL);
  assert_msg_has(self, "negative timeout -5 ns");
  cr_assert_eq(wd_sem_acquire_for(NULL, &s, 1), WD_EINVAL);
  cr_assert_eq(wd_sem_acquire_try(NULL), WD_EINVAL);
  cr_assert_eq(wd_sem_release(NULL), WD_EINVAL);
  cr_assert_eq(wd_sem_release(&zero), WD_EINVAL);
  cr_assert_eq(wd_sem_deinit(NULL), 0);
  cr_assert_eq(wd_sem_deinit(&zero), WD_EINVAL);
  s.value_ = SIZE_MAX;
  cr_assert_eq(wd_sem_release(&s), WD_EINVAL);
  assert_msg_has(self, "would overflow");
  cr_assert_eq(wd_sem_deinit(&s), 0);
  cr_assert_eq(wd_sem_release(&s), WD_EINVAL, "deinitialised");
  cr_assert_eq(wd_sem_value(NULL), 0);
  return 0;
}

Test(sem, bad_arguments_return_einval_with_a_message) {
  cr_assert_eq(run_virtual(bad_main, NULL), 0);
  assert_no_leaks();
}

static int dump_waiter(wd_task *self, void *arg) {
  return wd_sem_acquire(self, arg);
}

static int dump_main(wd_task *self, void *arg) {
  char **out = arg;
  wd_sem s;
  wd_group g;
  wd_sem_init(&s, "slots", 0);
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, dump_waiter, &s, &(wd_spawn_opts){.name = "worker"});
  yield_until(self, wd_sem_waiting(&s) == 1);
  *out = dump_text();
  wd_sem_release(&s);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_sem_deinit(&s);
}

Test(sem, dump_shows_a_task_waiting_on_the_semaphore_by_name) {
  char *text = NULL;
  cr_assert_eq(run_virtual(dump_main, &text), 0);
  cr_assert_not_null(strstr(text, " on semaphore 'slots', created"), "%s",
                     text);
  free(text);
  assert_no_leaks();
}
