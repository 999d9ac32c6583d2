/* Bounded FIFO queues of fixed-size items.
 *
 * A ring buffer of capacity * item_size bytes (allocated at init through
 * the library's allocator), and two FIFO lists of waiter records in the
 * waiting tasks' frames: senders waiting for room, each pointing at its
 * item, and receivers waiting for an item, each pointing at its output.
 * Receivers wait only while the ring is empty and senders only while it
 * is full, so at most one list is non-empty.  Every transfer completes in
 * the task that makes it possible: a send to a waiting receiver copies the
 * item straight into the receiver's output; a receive from a full ring
 * moves the first waiting sender's item into the slot it freed.  So an
 * item is never in flight: it is either in the sender's hands, in the
 * ring, or in a receiver's output, and FIFO order holds across the ring and
 * the waiting senders.  Copy and wake are one step, so a queued waiter is
 * always still blocked and on_cancel always unlinks it with nothing moved;
 * a waiter whose transfer was done keeps it even if cancelled before it
 * runs.  Nothing is lost, nothing is delivered twice.
 *
 * The ring wraps with a compare, not a modulo, and common item sizes are
 * copied inline: a division or a call to memcpy would cost more than the
 * rest of an uncontended send.
 */
#include "sync-internal.h"

static const char send_what[] = "send to queue";
static const char recv_what[] = "receive from queue";

/* A waiting sender (w.what == send_what) or receiver. */
typedef struct queue_waiter {
  wd_wait w;
  wd_link link; /* in senders_ or receivers_ while queued; NULLs once out */
  wd_queue *q;
  void *item; /* a sender's item (read only), a receiver's output */
} queue_waiter;

#define QUEUE_OK(q) ((q) && (q)->magic_ == WD__QUEUE_MAGIC)

static const char *label_of(char *buf, const wd_queue *q) {
  return wd__sync_label(buf, "queue", q->name_);
}

/* The error paths are out of line and never inlined (SYNC_COLD), so that
 * the hot functions keep small frames. */
SYNC_COLD static int bad_args(wd_task *self, const wd_queue *q,
                              const void *item, const char *fn) {
  if (!QUEUE_OK(q)) return wd__sync_bad(self, q, "queue", fn);
  return wd_fail(self, WD_EINVAL, "%s: NULL item", fn);
}

SYNC_COLD static int bad_call(wd_task *self, const wd_queue *q,
                              const void *item, const char *fn) {
  if (!self) return wd_fail(NULL, WD_EINVAL, "%s: NULL task", fn);
  return bad_args(self, q, item, fn);
}

int wd_queue_init(wd_queue *q, const char *name, size_t capacity,
                  size_t item_size) {
  if (!q) return wd_fail(NULL, WD_EINVAL, "wd_queue_init: NULL queue");
  if (!capacity || !item_size)
    return wd_fail(NULL, WD_EINVAL, "wd_queue_init: queue '%s': %s is 0",
                   name ? name : "", !capacity ? "capacity" : "item size");
  if (capacity > (size_t)PTRDIFF_MAX / item_size)
    return wd_fail(NULL, WD_EINVAL,
                   "wd_queue_init: queue '%s': capacity %zu of %zu-byte "
                   "items is too large (a negative number converted?)",
                   name ? name : "", capacity, item_size);
  unsigned char *buf = wd__malloc(capacity * item_size);
  if (!buf)
    return wd_fail(NULL, WD_ENOMEM,
                   "wd_queue_init: queue '%s': no memory for %zu items of "
                   "%zu bytes",
                   name ? name : "", capacity, item_size);
  memset(q, 0, sizeof *q);
  q->buf_ = buf;
  q->capacity_ = capacity;
  q->item_size_ = item_size;
  wd__list_init(&q->senders_);
  wd__list_init(&q->receivers_);
  q->magic_ = WD__QUEUE_MAGIC;
  wd__sync_name(q->name_, name);
  return 0;
}

int wd_queue_deinit(wd_queue *q) {
  if (!q) return 0;
  if (!QUEUE_OK(q)) return wd__sync_bad(NULL, q, "queue", "wd_queue_deinit");
  if (q->nsenders_ || q->nreceivers_ || q->ninside_) {
    char label[WD__LABEL_MAX], back[48];
    return wd_fail(NULL, WD_EBUSY,
                   "wd_queue_deinit: %s has %zu senders and %zu receivers "
                   "waiting%s",
                   label_of(label, q), q->nsenders_, q->nreceivers_,
                   wd__sync_returning(back, sizeof back, q->ninside_,
                                      q->nsenders_ + q->nreceivers_));
  }
  wd__free(q->buf_);
  q->buf_ = NULL;
  q->magic_ = 0;
  return 0;
}

size_t wd_queue_len(const wd_queue *q) { return q ? q->len_ : 0; }

void wd_queue_stats_get(const wd_queue *q, wd_queue_stats *out) {
  if (!out) return;
  *out = (wd_queue_stats){0};
  if (!q) return;
  out->capacity = q->capacity_;
  out->len = q->len_;
  out->senders = q->nsenders_;
  out->receivers = q->nreceivers_;
  out->sent = q->sent_;
  out->received = q->sent_ - q->len_;
  out->closed = q->closed_;
}

/* ---- the ring ----------------------------------------------------------- */

/* A memcpy whose size is known only at run time is a call into libc that
 * costs as much as the rest of a send: the common item sizes get copies
 * the compiler inlines. */
static inline void copy_item(void *dst, const void *src, size_t n) {
  switch (n) {
  case sizeof(int):
    memcpy(dst, src, sizeof(int));
    return;
  case sizeof(void *):
    memcpy(dst, src, sizeof(void *));
    return;
  case 2 * sizeof(void *):
    memcpy(dst, src, 2 * sizeof(void *));
    return;
  default:
    memcpy(dst, src, n);
  }
}

/* Every item pushed is one sent (from a sender's call or a waiting
 * sender's record); `received` is derived from `sent`, see stats.  Both
 * update the ring first and copy last, so that nothing of q is read after
 * the copy: when it is a call to memcpy, q need not be kept in a register
 * saved across it. */
static inline void ring_push(wd_queue *q, const void *item) {
  size_t i = q->head_ + q->len_, n = q->item_size_;
  if (i >= q->capacity_) i -= q->capacity_;
  q->len_++;
  q->sent_++;
  copy_item(q->buf_ + i * n, item, n);
}

static inline void ring_pop(wd_queue *q, void *out) {
  size_t n = q->item_size_;
  const unsigned char *slot = q->buf_ + q->head_ * n;
  if (++q->head_ == q->capacity_) q->head_ = 0;
  q->len_--;
  copy_item(out, slot, n);
}

static inline queue_waiter *first(wd_link *list, size_t *count) {
  wd_link *l = wd__list_pop_front(list);
  if (!l) return NULL;
  (*count)--;
  return wd__container_of(l, queue_waiter, link);
}

/* Send without waiting: to a waiting receiver, else into the ring.
 * Returns 0 or WD_EAGAIN (full).  The caller checked `closed_`. */
static inline int put_now(wd_queue *q, const void *item) {
  if (SYNC_UNLIKELY(q->nreceivers_)) { /* then the ring is empty */
    queue_waiter *r = first(&q->receivers_, &q->nreceivers_);
    copy_item(r->item, item, q->item_size_);
    q->sent_++;
    wd_wake(&r->w, 0);
    return 0;
  }
  if (SYNC_UNLIKELY(q->len_ == q->capacity_)) return WD_EAGAIN;
  ring_push(q, item);
  return 0;
}

/* Receive without waiting; the slot freed goes to the first waiting
 * sender.  Returns 0, WD_EAGAIN (empty) or WD_ECLOSED (closed, drained). */
static inline int take_now(wd_queue *q, void *out) {
  if (SYNC_UNLIKELY(!q->len_)) return q->closed_ ? WD_ECLOSED : WD_EAGAIN;
  ring_pop(q, out);
  if (SYNC_UNLIKELY(q->nsenders_)) {
    queue_waiter *s = first(&q->senders_, &q->nsenders_);
    ring_push(q, s->item);
    wd_wake(&s->w, 0);
  }
  return 0;
}

/* ---- waiting ------------------------------------------------------------ */

static bool waiter_cancel(wd_wait *w) {
  queue_waiter *qw = wd__container_of(w, queue_waiter, w);
  wd__list_unlink(&qw->link);
  if (w->what == send_what)
    qw->q->nsenders_--;
  else
    qw->q->nreceivers_--;
  return true;
}

/* Park self as a sender of *item or a receiver into *item, queued on
 * list, until the transfer was made (0), the queue closed (WD_ECLOSED) or
 * self was cancelled; then self is out of the queue.  The record gets only
 * the fields wd_park() reads (task.h: what, name, on_cancel) and ours. */
static inline int wait_transfer(wd_task *self, wd_queue *q, const char *what,
                                wd_link *list, size_t *count, void *item) {
  queue_waiter qw;
  qw.w.what = what;
  qw.w.name = wd__sync_wait_name(q->name_);
  qw.w.on_cancel = waiter_cancel;
  qw.q = q;
  qw.item = item;
  wd__list_push_back(list, &qw.link);
  (*count)++;
  int rc = wd_park(self, &qw.w);
  /* A transfer or a close unlinks before it wakes, and so does a
   * cancellation; only a wd_park() that refused to park leaves the record
   * queued. */
  if (SYNC_UNLIKELY(rc) && qw.link.next_) waiter_cancel(&qw.w);
  return rc;
}

SYNC_COLD static int closed_error(wd_task *self, wd_queue *q,
                                  const char *what) {
  char label[WD__LABEL_MAX];
  return wd_fail(self, WD_ECLOSED, "%s is closed: %s", label_of(label, q),
                 what);
}

SYNC_COLD static int op_cancelled(wd_task *self, const wd_queue *q, int rc,
                                  const char *op) {
  return wd__sync_cancelled(self, rc, "queue", q->name_, op);
}

/* A send that cannot complete now: the queue is closed or full. */
SYNC_NOINLINE static int send_wait(wd_task *self, wd_queue *q,
                                   const void *item) {
  int rc;
  if (q->closed_) {
    rc = wd_cancel_status(self);
    if (rc) return op_cancelled(self, q, rc, "send");
    return closed_error(self, q, "nothing sent");
  }
  q->ninside_++;
  /* wd_park() checks for cancellation. */
  rc = wait_transfer(self, q, send_what, &q->senders_, &q->nsenders_,
                     (void *)item);
  if (SYNC_UNLIKELY(rc))
    rc = rc == WD_ECLOSED
             ? closed_error(self, q, "closed while waiting, nothing sent")
             : op_cancelled(self, q, rc, "send");
  q->ninside_--; /* the last time this call reads q */
  return rc;
}

int wd_queue_send(wd_task *self, wd_queue *q, const void *item) {
  if (SYNC_UNLIKELY(!self || !QUEUE_OK(q) || !item))
    return bad_call(self, q, item, "wd_queue_send");
  /* A checkpoint on every call; when it has to wait, wd_park() checks. */
  if (SYNC_UNLIKELY(q->closed_ || (q->len_ == q->capacity_ && !q->nreceivers_)))
    return send_wait(self, q, item);
  int rc = wd_cancel_status(self);
  if (SYNC_UNLIKELY(rc)) return op_cancelled(self, q, rc, "send");
  put_now(q, item);
  return 0;
}

/* A receive that cannot complete now: the queue is empty (and open). */
SYNC_NOINLINE static int recv_wait(wd_task *self, wd_queue *q, void *out) {
  q->ninside_++;
  /* wd_park() checks for cancellation. */
  int rc =
      wait_transfer(self, q, recv_what, &q->receivers_, &q->nreceivers_, out);
  if (SYNC_UNLIKELY(rc))
    rc = rc == WD_ECLOSED ? closed_error(self, q, "no more items")
                          : op_cancelled(self, q, rc, "receive");
  q->ninside_--; /* the last time this call reads q */
  return rc;
}

int wd_queue_recv(wd_task *self, wd_queue *q, void *out) {
  if (SYNC_UNLIKELY(!self || !QUEUE_OK(q) || !out))
    return bad_call(self, q, out, "wd_queue_recv");
  /* A checkpoint on every call; when it has to wait, wd_park() checks. */
  if (SYNC_UNLIKELY(!q->len_ && !q->closed_)) return recv_wait(self, q, out);
  int rc = wd_cancel_status(self);
  if (SYNC_UNLIKELY(rc)) return op_cancelled(self, q, rc, "receive");
  rc = take_now(q, out); /* 0, or WD_ECLOSED when closed and drained */
  return SYNC_LIKELY(!rc) ? 0 : closed_error(self, q, "no more items");
}

int wd_queue_send_try(wd_queue *q, const void *item) {
  if (!QUEUE_OK(q) || !item)
    return bad_args(NULL, q, item, "wd_queue_send_try");
  if (q->closed_) return closed_error(NULL, q, "nothing sent");
  return put_now(q, item); /* WD_EAGAIN is expected: no message */
}

int wd_queue_recv_try(wd_queue *q, void *out) {
  if (!QUEUE_OK(q) || !out) return bad_args(NULL, q, out, "wd_queue_recv_try");
  int rc = take_now(q, out);
  if (rc == WD_ECLOSED) return closed_error(NULL, q, "no more items");
  return rc;
}

int wd_queue_close(wd_queue *q) {
  if (!QUEUE_OK(q)) return wd__sync_bad(NULL, q, "queue", "wd_queue_close");
  if (q->closed_) return 0;
  q->closed_ = true;
  /* Senders waiting had a full ring: their items are not taken.
   * Receivers waiting had an empty one: there is nothing to drain. */
  queue_waiter *qw;
  while ((qw = first(&q->senders_, &q->nsenders_)))
    wd_wake(&qw->w, WD_ECLOSED);
  while ((qw = first(&q->receivers_, &q->nreceivers_)))
    wd_wake(&qw->w, WD_ECLOSED);
  return 0;
}
