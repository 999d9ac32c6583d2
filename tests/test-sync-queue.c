/* wd_queue: FIFO order across the ring and the waiting senders, the _try
 * twins, close with waiters on both sides, cancellation at every blocking
 * point losing and duplicating nothing, allocation failure, bad arguments,
 * and what wd_dump shows. */
#include <stdint.h>

#include "sync-helpers.h"

static int basic_main(wd_task *self, void *arg) {
  wd_queue q;
  int v;
  cr_assert_eq(wd_queue_init(&q, "jobs", 2, sizeof(int)), 0);
  cr_assert_eq(wd_queue_recv_try(&q, &v), WD_EAGAIN);
  v = 1;
  cr_assert_eq(wd_queue_send(self, &q, &v), 0);
  v = 2;
  cr_assert_eq(wd_queue_send_try(&q, &v), 0);
  v = 3;
  cr_assert_eq(wd_queue_send_try(&q, &v), WD_EAGAIN);
  cr_assert_eq(wd_queue_len(&q), 2);
  cr_assert_eq(wd_queue_recv(self, &q, &v), 0);
  cr_assert_eq(v, 1);
  cr_assert_eq(wd_queue_recv_try(&q, &v), 0);
  cr_assert_eq(v, 2);
  /* Around the ring's end a few times. */
  for (int i = 0; i < 7; i++) {
    cr_assert_eq(wd_queue_send_try(&q, &i), 0);
    cr_assert_eq(wd_queue_recv_try(&q, &v), 0);
    cr_assert_eq(v, i);
  }
  wd_queue_stats st;
  wd_queue_stats_get(&q, &st);
  cr_assert_eq(st.sent, 9);
  cr_assert_eq(st.received, 9);
  cr_assert_eq(st.capacity, 2);
  /* Items dropped at deinit are the caller's business. */
  cr_assert_eq(wd_queue_send_try(&q, &v), 0);
  return wd_queue_deinit(&q);
}

Test(queue, send_recv_try_and_wrap_around) {
  cr_assert_eq(run_virtual(basic_main, NULL), 0);
  assert_no_leaks();
}

/* ---- order across the ring and waiting senders ------------------------- */

#define N_ITEMS 3000
#define N_SENDERS 5
#define N_RECEIVERS 3

/* Several receivers: the order in which they run after a receive is not
 * the order of the receives, so each one checks its own share: from each
 * sender, increasing.  Together they get every item exactly once. */
typedef struct flow {
  wd_queue q;
  bool seen[N_SENDERS][N_ITEMS / N_SENDERS];
  int last[N_RECEIVERS][N_SENDERS];
  int total;
} flow;

static int flow_sender(wd_task *self, void *arg) {
  flow *f = arg;
  int id = wd_task_name(self)[1] - '0';
  for (int i = 0; i < N_ITEMS / N_SENDERS; i++) {
    int v = id * 100000 + i;
    cr_assert_eq(wd_queue_send(self, &f->q, &v), 0);
    if ((i + id) % 5 == 0) wd_yield(self);
  }
  return 0;
}

static int flow_receiver(wd_task *self, void *arg) {
  flow *f = arg;
  int r = wd_task_name(self)[1] - '0';
  for (int s = 0; s < N_SENDERS; s++)
    f->last[r][s] = -1;
  for (;;) {
    int v;
    int rc = wd_queue_recv(self, &f->q, &v);
    if (rc == WD_ECLOSED) return 0;
    cr_assert_eq(rc, 0);
    int s = v / 100000, i = v % 100000;
    cr_assert_not(f->seen[s][i], "item %d of sender %d twice", i, s);
    f->seen[s][i] = true;
    cr_assert_gt(i, f->last[r][s], "receiver %d: sender %d out of order", r, s);
    f->last[r][s] = i;
    f->total++;
    if (v % 3 == 0) wd_yield(self);
  }
}

static int flow_main(wd_task *self, void *arg) {
  flow *f = arg;
  wd_group senders, receivers;
  static const char *snames[] = {"s0", "s1", "s2", "s3", "s4"};
  static const char *rnames[] = {"r0", "r1", "r2"};
  cr_assert_eq(wd_queue_init(&f->q, "jobs", 4, sizeof(int)), 0);
  wd_group_enter(self, &receivers, NULL);
  for (int i = 0; i < N_RECEIVERS; i++)
    wd_spawn(&receivers, flow_receiver, f, &(wd_spawn_opts){.name = rnames[i]});
  wd_group_enter(self, &senders, NULL);
  for (int i = 0; i < N_SENDERS; i++)
    wd_spawn(&senders, flow_sender, f, &(wd_spawn_opts){.name = snames[i]});
  cr_assert_eq(wd_group_exit(self, &senders, 0), 0);
  cr_assert_eq(wd_queue_close(&f->q), 0);
  cr_assert_eq(wd_group_exit(self, &receivers, 0), 0);
  return wd_queue_deinit(&f->q);
}

Test(queue, many_to_many_every_item_arrives_once_in_each_senders_order) {
  static flow f;
  cr_assert_eq(run_virtual(flow_main, &f), 0);
  cr_assert_eq(f.total, N_ITEMS);
  assert_no_leaks();
}

/* One receiver: the exact order of sends. */
typedef struct single {
  wd_queue q;
  int got[N_ITEMS], n;
} single;

static int single_sender(wd_task *self, void *arg) {
  single *f = arg;
  for (int i = 0; i < N_ITEMS; i++) {
    cr_assert_eq(wd_queue_send(self, &f->q, &i), 0);
    if (i % 7 == 0) wd_yield(self);
  }
  return wd_queue_close(&f->q);
}

static int single_main(wd_task *self, void *arg) {
  single *f = arg;
  wd_group g;
  int v;
  wd_queue_init(&f->q, "jobs", 3, sizeof(int));
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, single_sender, f, NULL);
  int rc;
  while ((rc = wd_queue_recv(self, &f->q, &v)) == 0) {
    f->got[f->n++] = v;
    if (v % 5 == 0) wd_yield(self);
  }
  cr_assert_eq(rc, WD_ECLOSED);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_queue_deinit(&f->q);
}

Test(queue, one_to_one_items_arrive_in_the_order_sent) {
  static single f;
  cr_assert_eq(run_virtual(single_main, &f), 0);
  cr_assert_eq(f.n, N_ITEMS);
  for (int i = 0; i < N_ITEMS; i++)
    cr_assert_eq(f.got[i], i);
  assert_no_leaks();
}

/* Buffered items come before waiting senders' items, and those keep their
 * order of arrival. */
typedef struct line {
  wd_queue q;
  int rc[3];
} line;

static int line_sender(wd_task *self, void *arg) {
  line *l = arg;
  int v = 10 + (int)wd_task_name(self)[0] - 'a';
  l->rc[v - 10] = wd_queue_send(self, &l->q, &v);
  return 0;
}

static int line_main(wd_task *self, void *arg) {
  line *l = arg;
  wd_group g;
  wd_queue_init(&l->q, "line", 2, sizeof(int));
  int v = 1;
  wd_queue_send(self, &l->q, &v);
  v = 2;
  wd_queue_send(self, &l->q, &v);
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, line_sender, l, &(wd_spawn_opts){.name = "a"});
  wd_spawn(&g, line_sender, l, &(wd_spawn_opts){.name = "b"});
  wd_spawn(&g, line_sender, l, &(wd_spawn_opts){.name = "c"});
  yield_until(self, l->q.nsenders_ == 3);
  int want[] = {1, 2, 10, 11, 12};
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(wd_queue_recv(self, &l->q, &v), 0);
    cr_assert_eq(v, want[i], "item %d is %d", i, v);
    cr_assert_eq(wd_queue_len(&l->q), (size_t)(i < 3 ? 2 : 4 - i),
                 "a waiting sender fills the freed slot at once");
  }
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_queue_deinit(&l->q);
}

Test(queue, waiting_senders_follow_the_buffered_items_in_order) {
  line l = {0};
  cr_assert_eq(run_virtual(line_main, &l), 0);
  for (int i = 0; i < 3; i++)
    cr_assert_eq(l.rc[i], 0);
  assert_no_leaks();
}

/* ---- close ------------------------------------------------------------- */

typedef struct closing {
  wd_queue q;
  int send_rc[2], recv_rc[3], recv_v[3];
  char send_msg[200], recv_msg[200];
} closing;

static int close_sender(wd_task *self, void *arg) {
  closing *c = arg;
  int i = wd_task_name(self)[1] - '0';
  int v = 100 + i;
  c->send_rc[i] = wd_queue_send(self, &c->q, &v);
  if (i == 0) snprintf(c->send_msg, sizeof c->send_msg, "%s", last_msg(self));
  return 0;
}

static int close_receiver(wd_task *self, void *arg) {
  closing *c = arg;
  int i = wd_task_name(self)[1] - '0';
  c->recv_v[i] = -1;
  c->recv_rc[i] = wd_queue_recv(self, &c->q, &c->recv_v[i]);
  if (i == 0) snprintf(c->recv_msg, sizeof c->recv_msg, "%s", last_msg(self));
  return 0;
}

/* Full queue, two senders waiting: close fails them (their items are not
 * taken); receivers drain the two buffered items, then get WD_ECLOSED. */
static int close_full_main(wd_task *self, void *arg) {
  closing *c = arg;
  wd_group g;
  wd_queue_init(&c->q, "jobs", 2, sizeof(int));
  int v = 1;
  wd_queue_send(self, &c->q, &v);
  v = 2;
  wd_queue_send(self, &c->q, &v);
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, close_sender, c, &(wd_spawn_opts){.name = "s0"});
  wd_spawn(&g, close_sender, c, &(wd_spawn_opts){.name = "s1"});
  yield_until(self, c->q.nsenders_ == 2);
  cr_assert_eq(wd_queue_deinit(&c->q), WD_EBUSY);
  assert_msg_has(self, "queue 'jobs' has 2 senders and 0 receivers waiting");
  cr_assert_eq(wd_queue_close(&c->q), 0);
  cr_assert_eq(wd_queue_close(&c->q), 0, "idempotent");
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_queue_send_try(&c->q, &v), WD_ECLOSED);
  cr_assert_eq(wd_queue_send(self, &c->q, &v), WD_ECLOSED);
  assert_msg_has(self, "queue 'jobs' is closed: nothing sent");
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < 3; i++) {
    static const char *names[] = {"r0", "r1", "r2"};
    wd_spawn(&g, close_receiver, c, &(wd_spawn_opts){.name = names[i]});
  }
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  cr_assert_eq(wd_queue_recv_try(&c->q, &v), WD_ECLOSED);
  return wd_queue_deinit(&c->q);
}

Test(queue, close_fails_waiting_senders_and_lets_receivers_drain) {
  closing c = {0};
  cr_assert_eq(run_virtual(close_full_main, &c), 0);
  cr_assert_eq(c.send_rc[0], WD_ECLOSED);
  cr_assert_eq(c.send_rc[1], WD_ECLOSED);
  cr_assert_not_null(strstr(c.send_msg, "queue 'jobs' is closed: closed while "
                                        "waiting, nothing sent"));
  cr_assert_eq(c.recv_rc[0], 0);
  cr_assert_eq(c.recv_v[0], 1);
  cr_assert_eq(c.recv_rc[1], 0);
  cr_assert_eq(c.recv_v[1], 2);
  cr_assert_eq(c.recv_rc[2], WD_ECLOSED);
  cr_assert_eq(c.recv_v[2], -1, "out untouched on failure");
  assert_no_leaks();
}

/* Empty queue, receivers waiting: close wakes them with WD_ECLOSED. */
static int close_empty_main(wd_task *self, void *arg) {
  closing *c = arg;
  wd_group g;
  wd_queue_init(&c->q, "jobs", 2, sizeof(int));
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < 3; i++) {
    static const char *names[] = {"r0", "r1", "r2"};
    wd_spawn(&g, close_receiver, c, &(wd_spawn_opts){.name = names[i]});
  }
  yield_until(self, c->q.nreceivers_ == 3);
  int v = 7;
  cr_assert_eq(wd_queue_send(self, &c->q, &v), 0, "straight to r0");
  cr_assert_eq(wd_queue_len(&c->q), 0);
  wd_queue_close(&c->q);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_queue_deinit(&c->q);
}

Test(queue, close_wakes_waiting_receivers_with_eclosed) {
  closing c = {0};
  cr_assert_eq(run_virtual(close_empty_main, &c), 0);
  cr_assert_eq(c.recv_rc[0], 0);
  cr_assert_eq(c.recv_v[0], 7);
  cr_assert_eq(c.recv_rc[1], WD_ECLOSED);
  cr_assert_eq(c.recv_rc[2], WD_ECLOSED);
  cr_assert_eq(c.recv_v[1], -1);
  assert_no_leaks();
}

/* Close, then deinit at once: the receivers close woke still read the
 * queue (their message) when they run, so deinit must refuse until they
 * have returned - or the caller could free the queue under them. */
static int close_deinit_main(wd_task *self, void *arg) {
  closing *c = arg;
  wd_group g;
  wd_queue_init(&c->q, "jobs", 2, sizeof(int));
  wd_group_enter(self, &g, NULL);
  for (int i = 0; i < 2; i++) {
    static const char *names[] = {"r0", "r1"};
    wd_spawn(&g, close_receiver, c, &(wd_spawn_opts){.name = names[i]});
  }
  yield_until(self, c->q.nreceivers_ == 2);
  cr_assert_eq(wd_queue_close(&c->q), 0);
  cr_assert_eq(c->q.nreceivers_, 0);
  cr_assert_eq(wd_queue_deinit(&c->q), WD_EBUSY,
               "the woken receivers have not returned yet");
  assert_msg_has(self, "queue 'jobs' has 0 senders and 0 receivers waiting, "
                       "2 returning from a wait");
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_queue_deinit(&c->q);
}

Test(queue, deinit_after_close_waits_until_the_woken_have_returned) {
  closing c = {0};
  cr_assert_eq(run_virtual(close_deinit_main, &c), 0);
  cr_assert_eq(c.recv_rc[0], WD_ECLOSED);
  cr_assert_eq(c.recv_rc[1], WD_ECLOSED);
  assert_no_leaks();
}

/* ---- cancellation at every blocking point ------------------------------ */

/* A producer sends 0..N-1 through a queue of 2 to a consumer; one of them
 * is cancelled while blocked in its k-th wait, for every k, by the other
 * one (the only task that runs while it is blocked).  Whatever was sent
 * successfully must be received exactly once or still be in the queue,
 * in order; whatever failed must appear nowhere. */
#define N_CANCEL 12

typedef struct cut {
  int k;           /* cancel in this wait */
  bool cut_sender; /* whose */
  wd_queue q;
  wd_handle hs, hr;
  int sent[N_CANCEL], nsent;
  int got[N_CANCEL], ngot;
  int waits; /* blocking calls the victim began */
  bool fired;
  int victim_rc;
} cut;

static void maybe_cut(cut *c, wd_handle *victim) {
  if (!c->fired && c->waits == c->k && victim->task &&
      wd_task_wait(victim->task)) {
    wd_handle_cancel(victim);
    c->fired = true;
  }
}

static int cut_sender(wd_task *self, void *arg) {
  cut *c = arg;
  for (int i = 0; i < N_CANCEL; i++) {
    if (!c->cut_sender) maybe_cut(c, &c->hr);
    if (c->cut_sender && wd_queue_len(&c->q) == 2) c->waits++;
    int rc = wd_queue_send(self, &c->q, &i);
    if (rc) {
      cr_assert(wd_is_cancel(rc) || rc == WD_ECLOSED, "rc %d", rc);
      if (c->cut_sender) c->victim_rc = rc;
      return 0;
    }
    c->sent[c->nsent++] = i;
    if (!c->cut_sender) wd_yield(self); /* the receiver waits often */
  }
  return 0;
}

static int cut_receiver(wd_task *self, void *arg) {
  cut *c = arg;
  for (;;) {
    if (c->cut_sender) maybe_cut(c, &c->hs);
    if (!c->cut_sender && wd_queue_len(&c->q) == 0) c->waits++;
    int v = -1;
    int rc = wd_queue_recv(self, &c->q, &v);
    if (rc) {
      cr_assert(wd_is_cancel(rc) || rc == WD_ECLOSED, "rc %d", rc);
      cr_assert_eq(v, -1);
      if (!c->cut_sender) c->victim_rc = rc;
      return 0;
    }
    c->got[c->ngot++] = v;
    if (c->cut_sender) wd_yield(self); /* the sender waits often */
  }
}

static int cut_main(wd_task *self, void *arg) {
  cut *c = arg;
  wd_group g;
  wd_queue_init(&c->q, "pipe", 2, sizeof(int));
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, cut_sender, c, &(wd_spawn_opts){.handle = &c->hs});
  wd_spawn(&g, cut_receiver, c, &(wd_spawn_opts){.handle = &c->hr});
  yield_until(self, c->hs.done || c->hr.done);
  wd_queue_close(&c->q); /* lets the survivor finish */
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  int rest[N_CANCEL], nrest = 0, v;
  while (wd_queue_recv_try(&c->q, &v) == 0)
    rest[nrest++] = v;
  /* Received then remaining: exactly what was sent, in order. */
  cr_assert_eq(c->ngot + nrest, c->nsent, "k=%d: %d got + %d left != %d sent",
               c->k, c->ngot, nrest, c->nsent);
  for (int i = 0; i < c->ngot; i++)
    cr_assert_eq(c->got[i], c->sent[i]);
  for (int i = 0; i < nrest; i++)
    cr_assert_eq(rest[i], c->sent[c->ngot + i]);
  return wd_queue_deinit(&c->q);
}

static void cut_everywhere(bool sender) {
  for (int k = 1;; k++) {
    cut c = {.k = k, .cut_sender = sender};
    cr_assert_eq(run_virtual(cut_main, &c), 0);
    assert_no_leaks();
    if (!c.fired) { /* ran clean: fewer than k waits */
      cr_assert_gt(k, 4, "only %d waits: the test lost its teeth", k - 1);
      break;
    }
    cr_assert_eq(c.victim_rc, WD_ECANCELED, "k=%d: the cancel did not cut", k);
    cr_assert_lt(k, 100);
  }
}

Test(queue, cancelling_the_receiver_at_each_wait_loses_nothing) {
  cut_everywhere(false);
}

Test(queue, cancelling_the_sender_at_each_wait_loses_nothing) {
  cut_everywhere(true);
}

/* Handed over, then cancelled before running: the transfer stands. */
typedef struct handed {
  wd_queue q;
  int rc_s, rc_r, v;
  wd_handle hs, hr;
} handed;

static int handed_sender(wd_task *self, void *arg) {
  handed *h = arg;
  int v = 42;
  h->rc_s = wd_queue_send(self, &h->q, &v);
  return 0;
}

static int handed_receiver(wd_task *self, void *arg) {
  handed *h = arg;
  h->rc_r = wd_queue_recv(self, &h->q, &h->v);
  return 0;
}

static int handed_main(wd_task *self, void *arg) {
  handed *h = arg;
  wd_group g;
  int v = 1;
  wd_queue_init(&h->q, "pipe", 1, sizeof(int));
  wd_queue_send(self, &h->q, &v); /* full */
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, handed_sender, h, &(wd_spawn_opts){.handle = &h->hs});
  yield_until(self, h->q.nsenders_ == 1);
  cr_assert_eq(wd_queue_recv(self, &h->q, &v), 0); /* moves 42 in */
  cr_assert_eq(v, 1);
  wd_handle_cancel(&h->hs);
  cr_assert_eq(wd_queue_recv(self, &h->q, &v), 0);
  cr_assert_eq(v, 42);
  wd_spawn(&g, handed_receiver, h, &(wd_spawn_opts){.handle = &h->hr});
  yield_until(self, h->q.nreceivers_ == 1);
  v = 43;
  cr_assert_eq(wd_queue_send(self, &h->q, &v), 0); /* straight to it */
  wd_handle_cancel(&h->hr);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  return wd_queue_deinit(&h->q);
}

Test(queue, a_waiter_cancelled_after_its_transfer_keeps_it) {
  handed h = {0};
  cr_assert_eq(run_virtual(handed_main, &h), 0);
  cr_assert_eq(h.rc_s, 0, "its item was taken: the send happened");
  cr_assert_eq(h.rc_r, 0, "it was handed 43");
  cr_assert_eq(h.v, 43);
  assert_no_leaks();
}

/* Already cancelled on a full (then an empty) queue: wd_park() refuses to
 * park, and the waiter record it had queued must leave with it - or the
 * next receive (send) would move an item from (to) a frame that is gone. */
static int cancelled_waits_main(wd_task *self, void *arg) {
  wd_queue q;
  wd_cancel_scope s;
  wd_queue_stats st;
  int v = 1;
  wd_queue_init(&q, "pipe", 1, sizeof(int));
  cr_assert_eq(wd_queue_send_try(&q, &v), 0); /* full */
  wd_cancel_scope_enter(self, &s, NULL);
  wd_cancel(&s);
  v = 2;
  cr_assert_eq(wd_queue_send(self, &q, &v), WD_ECANCELED);
  assert_msg_has(self, "queue 'pipe': send cancelled");
  wd_queue_stats_get(&q, &st);
  cr_assert_eq(st.senders, 0, "not left in the queue");
  cr_assert_eq(wd_queue_recv_try(&q, &v), 0);
  cr_assert_eq(v, 1);
  cr_assert_eq(wd_queue_len(&q), 0, "the cancelled item did not move in");
  cr_assert_eq(wd_queue_recv(self, &q, &v), WD_ECANCELED); /* empty */
  wd_queue_stats_get(&q, &st);
  cr_assert_eq(st.receivers, 0, "not left in the queue");
  cr_assert_eq(wd_cancel_scope_exit(self, &s, WD_ECANCELED), 0);
  v = 3;
  cr_assert_eq(wd_queue_send(self, &q, &v), 0);
  cr_assert_eq(wd_queue_len(&q), 1, "buffered, not sent to the cancelled");
  wd_queue_stats_get(&q, &st);
  cr_assert_eq(st.sent, 2);
  cr_assert_eq(st.received, 1);
  return wd_queue_deinit(&q);
}

Test(queue, a_cancelled_caller_is_not_queued_on_a_full_or_empty_queue) {
  cr_assert_eq(run_virtual(cancelled_waits_main, NULL), 0);
  assert_no_leaks();
}

/* ---- bad arguments, allocation failure, dumps -------------------------- */

static int bad_main(wd_task *self, void *arg) {
  wd_queue q, zero;
  int v = 0;
  memset(&zero, 0, sizeof zero);
  cr_assert_eq(wd_queue_init(NULL, "x", 1, 1), WD_EINVAL);
  cr_assert_eq(wd_queue_init(&q, "jobs", 0, 4), WD_EINVAL);
  assert_msg_has(self, "queue 'jobs': capacity is 0");
  cr_assert_eq(wd_queue_init(&q, "jobs", 4, 0), WD_EINVAL);
  assert_msg_has(self, "item size is 0");
  int negative = -1;
  cr_assert_eq(wd_queue_init(&q, "jobs", (size_t)negative, 8), WD_EINVAL);
  assert_msg_has(self, "too large");
  cr_assert_eq(wd_queue_init(&q, NULL, 1, sizeof v), 0);
  cr_assert_eq(wd_queue_send(NULL, &q, &v), WD_EINVAL);
  cr_assert_eq(wd_queue_send(self, NULL, &v), WD_EINVAL);
  assert_msg_has(self, "wd_queue_send: NULL queue");
  cr_assert_eq(wd_queue_send(self, &q, NULL), WD_EINVAL);
  assert_msg_has(self, "wd_queue_send: NULL item");
  cr_assert_eq(wd_queue_recv(self, &zero, &v), WD_EINVAL);
  assert_msg_has(self, "queue not initialised");
  cr_assert_eq(wd_queue_recv(self, &q, NULL), WD_EINVAL);
  cr_assert_eq(wd_queue_send_try(NULL, &v), WD_EINVAL);
  cr_assert_eq(wd_queue_recv_try(&q, NULL), WD_EINVAL);
  cr_assert_eq(wd_queue_close(&zero), WD_EINVAL);
  cr_assert_eq(wd_queue_deinit(NULL), 0);
  cr_assert_eq(wd_queue_deinit(&zero), WD_EINVAL);
  cr_assert_eq(wd_queue_len(NULL), 0);
  wd_queue_stats_get(NULL, NULL);
  cr_assert_eq(wd_queue_deinit(&q), 0);
  cr_assert_eq(wd_queue_send(self, &q, &v), WD_EINVAL, "deinitialised");
  /* A cancelled task sends and receives nothing, even with room. */
  wd_queue_init(&q, "jobs", 1, sizeof v);
  wd_cancel_scope s;
  wd_cancel_scope_enter(self, &s, NULL);
  wd_cancel(&s);
  cr_assert_eq(wd_queue_send(self, &q, &v), WD_ECANCELED);
  assert_msg_has(self, "queue 'jobs': send cancelled");
  cr_assert_eq(wd_queue_len(&q), 0);
  cr_assert_eq(wd_queue_send_try(&q, &v), 0, "not a checkpoint");
  cr_assert_eq(wd_queue_recv(self, &q, &v), WD_ECANCELED);
  cr_assert_eq(wd_queue_len(&q), 1);
  wd_cancel_scope_exit(self, &s, 0);
  return wd_queue_deinit(&q);
}

Test(queue, bad_arguments_return_einval_with_a_message) {
  cr_assert_eq(run_virtual(bad_main, NULL), 0);
  assert_no_leaks();
}

static int nomem_main(wd_task *self, void *arg) {
  wd_queue q;
  wd_alloc_fail_after(1);
  cr_assert_eq(wd_queue_init(&q, "jobs", 16, 8), WD_ENOMEM);
  assert_msg_has(self, "queue 'jobs': no memory for 16 items of 8 bytes");
  cr_assert_eq(wd_queue_init(&q, "jobs", 16, 8), 0);
  return wd_queue_deinit(&q);
}

Test(queue, init_without_memory_is_enomem) {
  cr_assert_eq(run_virtual(nomem_main, NULL), 0);
  assert_no_leaks();
}

static int dump_sender(wd_task *self, void *arg) {
  int v = 1;
  return wd_queue_send(self, arg, &v);
}

static int dump_receiver(wd_task *self, void *arg) {
  int v;
  return wd_queue_recv(self, arg, &v);
}

static int dump_main(wd_task *self, void *arg) {
  wd_queue full, empty;
  wd_group g;
  int v = 0;
  wd_queue_init(&full, "outbox", 1, sizeof v);
  wd_queue_init(&empty, "inbox", 1, sizeof v);
  wd_queue_send(self, &full, &v);
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, dump_sender, &full, NULL);
  wd_spawn(&g, dump_receiver, &empty, NULL);
  yield_until(self, full.nsenders_ == 1 && empty.nreceivers_ == 1);
  char *text = dump_text();
  cr_assert_not_null(strstr(text, " on send to queue 'outbox', created"), "%s",
                     text);
  cr_assert_not_null(strstr(text, " on receive from queue 'inbox', created"),
                     "%s", text);
  free(text);
  wd_queue_close(&full);
  wd_queue_close(&empty);
  cr_assert_eq(wd_group_exit(self, &g, 0), WD_EGROUP);
  wd_queue_deinit(&full);
  return wd_queue_deinit(&empty);
}

Test(queue, dump_shows_senders_and_receivers_by_queue_name) {
  cr_assert_eq(run_virtual(dump_main, NULL), 0);
  assert_no_leaks();
}
