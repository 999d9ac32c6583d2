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

typedef struct queue_waiter {
  wd_wait w;
  wd_link link;
  wd_queue *q;
  const void *src; /* a sender's item */
  void *dst;       /* a receiver's output */
  bool queued;
} queue_waiter;

#define QUEUE_OK(q) ((q) && (q)->magic_ == WD__QUEUE_MAGIC)

static const char *label_of(char *buf, const wd_queue *q) {
  return wd__sync_label(buf, "queue", q->name_);
}

__attribute__((cold)) static int bad_args(wd_task *self, const wd_queue *q,
                                          const void *item, const char *fn) {
  if (!QUEUE_OK(q)) return wd__sync_bad(self, q, "queue", fn);
  return wd_fail(self, WD_EINVAL, "%s: NULL item", fn);
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
  out->received = q->received_;
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

static inline void ring_push(wd_queue *q, const void *item) {
  size_t i = q->head_ + q->len_;
  if (i >= q->capacity_) i -= q->capacity_;
  copy_item(q->buf_ + i * q->item_size_, item, q->item_size_);
  q->len_++;
}

static inline void ring_pop(wd_queue *q, void *out) {
  copy_item(out, q->buf_ + q->head_ * q->item_size_, q->item_size_);
  if (++q->head_ == q->capacity_) q->head_ = 0;
  q->len_--;
}

static inline queue_waiter *first(wd_link *list, size_t *count) {
  wd_link *l = wd__list_pop_front(list);
  if (!l) return NULL;
  queue_waiter *qw = wd__container_of(l, queue_waiter, link);
  qw->queued = false;
  (*count)--;
  return qw;
}

/* Send without waiting: to a waiting receiver, else into the ring.
 * Returns 0 or WD_EAGAIN (full).  The caller checked `closed_`. */
static inline int put_now(wd_queue *q, const void *item) {
  if (SYNC_UNLIKELY(q->nreceivers_)) { /* then the ring is empty */
    queue_waiter *r = first(&q->receivers_, &q->nreceivers_);
    copy_item(r->dst, item, q->item_size_);
    q->sent_++;
    q->received_++;
    wd_wake(&r->w, 0);
    return 0;
  }
  if (SYNC_UNLIKELY(q->len_ == q->capacity_)) return WD_EAGAIN;
  ring_push(q, item);
  q->sent_++;
  return 0;
}

/* Receive without waiting; the slot freed goes to the first waiting
 * sender.  Returns 0, WD_EAGAIN (empty) or WD_ECLOSED (closed, drained). */
static inline int take_now(wd_queue *q, void *out) {
  if (SYNC_UNLIKELY(!q->len_)) return q->closed_ ? WD_ECLOSED : WD_EAGAIN;
  ring_pop(q, out);
  q->received_++;
  if (SYNC_UNLIKELY(q->nsenders_)) {
    queue_waiter *s = first(&q->senders_, &q->nsenders_);
    ring_push(q, s->src);
    q->sent_++;
    wd_wake(&s->w, 0);
  }
  return 0;
}

/* ---- waiting ------------------------------------------------------------ */

static bool waiter_cancel(wd_wait *w) {
  queue_waiter *qw = wd__container_of(w, queue_waiter, w);
  wd__list_unlink(&qw->link);
  qw->queued = false;
  if (qw->src)
    qw->q->nsenders_--;
  else
    qw->q->nreceivers_--;
  return true;
}

/* Park self as a sender (src set) or a receiver (dst set) until the
 * transfer was made (0), the queue closed (WD_ECLOSED) or self was
 * cancelled. */
static int wait_transfer(wd_task *self, wd_queue *q, const void *src,
                         void *dst) {
  queue_waiter qw = {.w = {.what = src ? send_what : recv_what,
                           .name = wd__sync_wait_name(q->name_),
                           .on_cancel = waiter_cancel},
                     .q = q,
                     .src = src,
                     .dst = dst,
                     .queued = true};
  if (src) {
    wd__list_push_back(&q->senders_, &qw.link);
    q->nsenders_++;
  } else {
    wd__list_push_back(&q->receivers_, &qw.link);
    q->nreceivers_++;
  }
  int rc = wd_park(self, &qw.w);
  if (qw.queued) waiter_cancel(&qw.w); /* wd_park refused to park */
  return rc;
}

static int closed_error(wd_task *self, wd_queue *q, const char *what) {
  char label[WD__LABEL_MAX];
  return wd_fail(self, WD_ECLOSED, "%s is closed: %s", label_of(label, q),
                 what);
}

int wd_queue_send(wd_task *self, wd_queue *q, const void *item) {
  if (SYNC_UNLIKELY(!self || !QUEUE_OK(q) || !item))
    return self ? bad_args(self, q, item, "wd_queue_send")
                : wd_fail(NULL, WD_EINVAL, "wd_queue_send: NULL task");
  /* A checkpoint on every call; when it has to wait, wd_park() checks. */
  int rc;
  if (SYNC_LIKELY(!q->closed_ && (q->len_ < q->capacity_ || q->nreceivers_))) {
    rc = wd_cancel_status(self);
    if (SYNC_UNLIKELY(rc))
      return wd__sync_cancelled(self, rc, "queue", q->name_, "send");
    put_now(q, item);
    return 0;
  }
  if (q->closed_) {
    rc = wd_cancel_status(self);
    if (rc) return wd__sync_cancelled(self, rc, "queue", q->name_, "send");
    return closed_error(self, q, "nothing sent");
  }
  q->ninside_++;
  rc = wait_transfer(self, q, item, NULL);
  if (rc == WD_ECLOSED)
    rc = closed_error(self, q, "closed while waiting, nothing sent");
  else if (rc)
    rc = wd__sync_cancelled(self, rc, "queue", q->name_, "send");
  q->ninside_--; /* the last time this call reads q */
  return rc;
}

int wd_queue_recv(wd_task *self, wd_queue *q, void *out) {
  if (SYNC_UNLIKELY(!self || !QUEUE_OK(q) || !out))
    return self ? bad_args(self, q, out, "wd_queue_recv")
                : wd_fail(NULL, WD_EINVAL, "wd_queue_recv: NULL task");
  /* A checkpoint on every call; when it has to wait, wd_park() checks. */
  int rc;
  if (SYNC_LIKELY(q->len_) || q->closed_) {
    rc = wd_cancel_status(self);
    if (SYNC_UNLIKELY(rc))
      return wd__sync_cancelled(self, rc, "queue", q->name_, "receive");
    rc = take_now(q, out); /* 0, or WD_ECLOSED when closed and drained */
    return rc ? closed_error(self, q, "no more items") : 0;
  }
  q->ninside_++;
  rc = wait_transfer(self, q, NULL, out);
  if (rc == WD_ECLOSED)
    rc = closed_error(self, q, "no more items");
  else if (rc)
    rc = wd__sync_cancelled(self, rc, "queue", q->name_, "receive");
  q->ninside_--; /* the last time this call reads q */
  return rc;
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
