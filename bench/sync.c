/* sync.c - the cost of the synchronisation primitives (warden/sync.h).
 *
 * Uncontended paths, one task, N_FAST times each (ns per pair of calls):
 *   sync.lock.uncontended  wd_lock_acquire + wd_lock_release of a free lock
 *                          (also printed as sync.lock, the name)
 *   sync.lock.pthread      pthread_mutex_lock + unlock, the baseline;
 *                          sync.lock.vs_pthread is warden's cost over it
 *   sync.sem.uncontended   wd_sem_acquire + wd_sem_release with permits free
 *   sync.limiter.uncontended  wd_limiter_acquire + wd_limiter_release
 *   sync.queue             wd_queue_send + wd_queue_recv of an int by one
 *                          task, no waiting
 *
 * Hand-offs between two tasks, N_HAND times per task (ns per hand-off,
 * which includes the switch to the task handed to):
 *   sync.lock.handoff      a contended lock passed back and forth: each
 *                          release hands it to the other task, whose
 *                          acquire then blocks until it comes back
 *   sync.sem.handoff       two semaphores used as a ping-pong
 *   sync.queue.pingpong    per item, two tasks bouncing an int through two
 *                          queues of capacity 1
 *   core.switch (here sync.switch)  a bare wd_yield ping-pong, the floor;
 *   sync.handoff.vs_switch is the semaphore hand-off over it, and
 *   sync.lock.handoff.vs_switch the lock's.
 *
 * Both tasks of a timed pair run one function, as in the wd_yield floor.
 * When they run two different functions, every switch returns into a
 * caller other than the one the CPU's return-stack predictor expects (the
 * other task's), which costs a mispredicted return per switch (~9 ns here)
 * that is no part of the primitive: a ratio of a two-function hand-off to
 * a one-function floor would mostly measure that.  The two-function shape
 * is printed too, against a two-function wd_yield pair:
 *   sync.sem.handoff.2fn   the ping-pong as a pinger and a ponger
 *   sync.switch.2fn        wd_yield ping-pong by two different functions
 *   sync.handoff.2fn.vs_switch  the first over the second
 *
 * Each figure is the best of REPS runs, the variants interleaved.
 */
#include <pthread.h>

#include "bench.h"

#define N_FAST 20000000L
#define N_HAND 5000000L
#define REPS 5

typedef struct results {
  int64_t lock, pthread, sem, limiter, queue;
  int64_t lock_hand, sem_hand, queue_pp, yield;
  int64_t sem_hand2, yield2;
} results;

/* ---- uncontended --------------------------------------------------------- */

static int64_t time_lock(wd_task *self) {
  wd_lock l;
  int rc = 0;
  bench_check(wd_lock_init(&l, "bench"), "wd_lock_init");
  int64_t t0 = bench_now();
  for (long i = 0; i < N_FAST; i++) {
    rc |= wd_lock_acquire(self, &l);
    rc |= wd_lock_release(self, &l);
  }
  int64_t t1 = bench_now();
  bench_check(rc, "lock acquire/release");
  bench_check(wd_lock_deinit(&l), "wd_lock_deinit");
  return t1 - t0;
}

static int64_t time_pthread(void) {
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  int rc = 0;
  int64_t t0 = bench_now();
  for (long i = 0; i < N_FAST; i++) {
    rc |= pthread_mutex_lock(&mu);
    rc |= pthread_mutex_unlock(&mu);
  }
  int64_t t1 = bench_now();
  if (rc) bench_check(WD_EINVAL, "pthread_mutex");
  pthread_mutex_destroy(&mu);
  return t1 - t0;
}

static int64_t time_sem(wd_task *self) {
  wd_sem s;
  int rc = 0;
  bench_check(wd_sem_init(&s, "bench", 1), "wd_sem_init");
  int64_t t0 = bench_now();
  for (long i = 0; i < N_FAST; i++) {
    rc |= wd_sem_acquire(self, &s);
    rc |= wd_sem_release(&s);
  }
  int64_t t1 = bench_now();
  bench_check(rc, "sem acquire/release");
  bench_check(wd_sem_deinit(&s), "wd_sem_deinit");
  return t1 - t0;
}

static int64_t time_limiter(wd_task *self) {
  wd_limiter lim;
  int rc = 0;
  bench_check(wd_limiter_init(&lim, "bench", 4), "wd_limiter_init");
  int64_t t0 = bench_now();
  for (long i = 0; i < N_FAST; i++) {
    rc |= wd_limiter_acquire(self, &lim);
    rc |= wd_limiter_release(&lim);
  }
  int64_t t1 = bench_now();
  bench_check(rc, "limiter acquire/release");
  bench_check(wd_limiter_deinit(&lim), "wd_limiter_deinit");
  return t1 - t0;
}

static int64_t time_queue(wd_task *self) {
  wd_queue q;
  int rc = 0, v = 0;
  bench_check(wd_queue_init(&q, "bench", 64, sizeof v), "wd_queue_init");
  int64_t t0 = bench_now();
  for (long i = 0; i < N_FAST; i++) {
    v = (int)i;
    rc |= wd_queue_send(self, &q, &v);
    rc |= wd_queue_recv(self, &q, &v);
  }
  int64_t t1 = bench_now();
  bench_check(rc, "queue send/recv");
  if (v != (int)(N_FAST - 1)) bench_check(WD_EINVAL, "queue item");
  bench_check(wd_queue_deinit(&q), "wd_queue_deinit");
  return t1 - t0;
}

/* ---- hand-offs between two tasks ----------------------------------------- */

typedef struct pair {
  wd_lock lock;
  wd_sem ping, pong;
  wd_queue there, back;
  int started;
} pair;

/* One side of a semaphore ping-pong run by one function: wait on mine,
 * signal other.  The side that serves first signals once before its
 * loop, and skips its last signal so that both finish with no permit
 * left. */
typedef struct side {
  wd_sem *mine, *other;
  bool serves_first;
} side;

/* Each task takes the lock once and, the first time, yields so that the
 * other queues behind it; from then on every release hands the lock over
 * and every acquire blocks until it comes back. */
static int lock_passer(wd_task *self, void *arg) {
  pair *p = arg;
  int rc = wd_lock_acquire(self, &p->lock);
  if (p->started++ == 0 && !rc) rc = wd_yield(self);
  for (long i = 0; i < N_HAND && !rc; i++) {
    rc = wd_lock_release(self, &p->lock);
    if (!rc) rc = wd_lock_acquire(self, &p->lock);
  }
  return rc ? rc : wd_lock_release(self, &p->lock);
}

static int sem_passer(wd_task *self, void *arg) {
  side *s = arg;
  int rc = s->serves_first ? wd_sem_release(s->other) : 0;
  for (long i = 0; i < N_HAND && !rc; i++) {
    rc = wd_sem_acquire(self, s->mine);
    if (!rc && (i < N_HAND - 1 || !s->serves_first))
      rc = wd_sem_release(s->other);
  }
  return rc;
}

static int sem_pinger(wd_task *self, void *arg) {
  pair *p = arg;
  int rc = 0;
  for (long i = 0; i < N_HAND && !rc; i++) {
    rc = wd_sem_release(&p->ping);
    if (!rc) rc = wd_sem_acquire(self, &p->pong);
  }
  return rc;
}

static int sem_ponger(wd_task *self, void *arg) {
  pair *p = arg;
  int rc = 0;
  for (long i = 0; i < N_HAND && !rc; i++) {
    rc = wd_sem_acquire(self, &p->ping);
    if (!rc) rc = wd_sem_release(&p->pong);
  }
  return rc;
}

static int queue_pinger(wd_task *self, void *arg) {
  pair *p = arg;
  int rc = 0;
  for (int i = 0; i < N_HAND && !rc; i++) {
    int v = i;
    rc = wd_queue_send(self, &p->there, &v);
    if (!rc) rc = wd_queue_recv(self, &p->back, &v);
    if (!rc && v != i + 1) rc = WD_EINVAL;
  }
  return rc;
}

static int queue_ponger(wd_task *self, void *arg) {
  pair *p = arg;
  int rc = 0;
  for (long i = 0; i < N_HAND && !rc; i++) {
    int v;
    rc = wd_queue_recv(self, &p->there, &v);
    v++;
    if (!rc) rc = wd_queue_send(self, &p->back, &v);
  }
  return rc;
}

static int yielder(wd_task *self, void *arg) {
  int rc = 0;
  for (long i = 0; i < N_HAND && !rc; i++)
    rc = wd_yield(self);
  return rc;
}

/* yielder's twin, a function of its own (the barrier keeps the compiler
 * from merging the two). */
static int yielder2(wd_task *self, void *arg) {
  int rc = 0;
  for (long i = 0; i < N_HAND && !rc; i++) {
    rc = wd_yield(self);
    __asm__ volatile("" ::: "memory");
  }
  return rc;
}

/* ns for the two tasks a(pa) and b(pb) to finish, timed from the group's
 * exit. */
static int64_t duo_with(wd_task *self, wd_task_fn a, void *pa, wd_task_fn b,
                        void *pb, const char *what) {
  wd_group g;
  bench_check(wd_group_enter(self, &g, &(wd_group_opts){.name = what}),
              "wd_group_enter");
  bench_check(wd_spawn(&g, a, pa, NULL), "wd_spawn");
  bench_check(wd_spawn(&g, b, pb, NULL), "wd_spawn");
  int64_t t0 = bench_now();
  bench_check(wd_group_exit(self, &g, 0), what);
  return bench_now() - t0;
}

static int64_t duo(wd_task *self, wd_task_fn a, wd_task_fn b, pair *p,
                   const char *what) {
  return duo_with(self, a, p, b, p, what);
}

static int bench_main(wd_task *self, void *arg) {
  results *r = arg;
  pair p = {0};
  r->lock = time_lock(self);
  r->sem = time_sem(self);
  r->limiter = time_limiter(self);
  r->queue = time_queue(self);

  bench_check(wd_lock_init(&p.lock, "passed"), "wd_lock_init");
  bench_check(wd_sem_init(&p.ping, "ping", 0), "wd_sem_init");
  bench_check(wd_sem_init(&p.pong, "pong", 0), "wd_sem_init");
  bench_check(wd_queue_init(&p.there, "there", 1, sizeof(int)), "queue");
  bench_check(wd_queue_init(&p.back, "back", 1, sizeof(int)), "queue");
  side a = {&p.pong, &p.ping, true}, b = {&p.ping, &p.pong, false};
  r->lock_hand = duo(self, lock_passer, lock_passer, &p, "lock hand-off");
  r->sem_hand = duo_with(self, sem_passer, &a, sem_passer, &b, "sem hand-off");
  r->queue_pp = duo(self, queue_pinger, queue_ponger, &p, "queue ping-pong");
  r->yield = duo(self, yielder, yielder, &p, "yield ping-pong");
  r->sem_hand2 = duo(self, sem_pinger, sem_ponger, &p, "sem ping-pong");
  r->yield2 = duo(self, yielder, yielder2, &p, "2-function yield");
  if (wd_sem_value(&p.ping) || wd_sem_value(&p.pong))
    bench_check(WD_EINVAL, "a permit was left over");
  wd_lock_stats st;
  wd_lock_stats_get(&p.lock, &st);
  if (st.contended < 2 * (uint64_t)N_HAND - 2)
    bench_check(WD_EINVAL, "lock hand-off was not contended");
  bench_check(wd_lock_deinit(&p.lock), "wd_lock_deinit");
  bench_check(wd_sem_deinit(&p.ping), "wd_sem_deinit");
  bench_check(wd_sem_deinit(&p.pong), "wd_sem_deinit");
  bench_check(wd_queue_deinit(&p.there), "wd_queue_deinit");
  bench_check(wd_queue_deinit(&p.back), "wd_queue_deinit");
  return 0;
}

static void keep_best(results *best, const results *r) {
  best->lock = bench_min(best->lock, r->lock);
  best->pthread = bench_min(best->pthread, r->pthread);
  best->sem = bench_min(best->sem, r->sem);
  best->limiter = bench_min(best->limiter, r->limiter);
  best->queue = bench_min(best->queue, r->queue);
  best->lock_hand = bench_min(best->lock_hand, r->lock_hand);
  best->sem_hand = bench_min(best->sem_hand, r->sem_hand);
  best->queue_pp = bench_min(best->queue_pp, r->queue_pp);
  best->yield = bench_min(best->yield, r->yield);
  best->sem_hand2 = bench_min(best->sem_hand2, r->sem_hand2);
  best->yield2 = bench_min(best->yield2, r->yield2);
}

int main(void) {
  bench_watchdog(120);
  results best = {INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX,
                  INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX,
                  INT64_MAX, INT64_MAX, INT64_MAX};
  for (int rep = 0; rep < REPS; rep++) {
    results r;
    bench_check(wd_run(bench_main, &r), "wd_run");
    r.pthread = time_pthread();
    keep_best(&best, &r);
  }
  double fast = (double)N_FAST, hand = 2.0 * N_HAND;
  printf("# uncontended: %ld pairs of calls by one task; hand-offs: %ld per "
         "task, 2 tasks; best of %d\n",
         N_FAST, N_HAND, REPS);
  double lock = (double)best.lock / fast;
  double pth = (double)best.pthread / fast;
  bench_print("sync.lock.uncontended", lock, 2, "ns");
  bench_print("sync.lock", lock, 2, "ns");
  bench_print("sync.lock.pthread", pth, 2, "ns");
  bench_print("sync.lock.vs_pthread", lock / pth, 2, "ratio");
  bench_print("sync.sem.uncontended", (double)best.sem / fast, 2, "ns");
  bench_print("sync.limiter.uncontended", (double)best.limiter / fast, 2, "ns");
  bench_print("sync.queue", (double)best.queue / fast, 2, "ns");
  double sw = (double)best.yield / hand;
  double lh = (double)best.lock_hand / hand;
  double sh = (double)best.sem_hand / hand;
  bench_print("sync.lock.handoff", lh, 2, "ns");
  bench_print("sync.sem.handoff", sh, 2, "ns");
  bench_print("sync.queue.pingpong", (double)best.queue_pp / hand, 2, "ns");
  bench_print("sync.switch", sw, 2, "ns");
  bench_print("sync.handoff.vs_switch", sh / sw, 2, "ratio");
  bench_print("sync.lock.handoff.vs_switch", lh / sw, 2, "ratio");
  double sh2 = (double)best.sem_hand2 / hand, sw2 = (double)best.yield2 / hand;
  bench_print("sync.sem.handoff.2fn", sh2, 2, "ns");
  bench_print("sync.switch.2fn", sw2, 2, "ns");
  bench_print("sync.handoff.2fn.vs_switch", sh2 / sw2, 2, "ratio");
  return 0;
}
