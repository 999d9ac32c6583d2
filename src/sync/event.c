/* Events: a flag that tasks wait for.
 *
 * A flag and a list of waiter records in the waiting tasks' frames.  Set
 * empties the list, waking every waiter with 0; a wake-up, once given, is
 * kept even when the event is cleared or the waiter is cancelled before it
 * runs (wd_park returns the wake result).  A waiter cancelled while still
 * listed unlinks itself.  Waiting on a set event is still a checkpoint, so
 * that a loop around wd_event_wait() cannot spin past a cancellation.
 */
#include "sync-internal.h"

static const char event_what[] = "event";

typedef struct event_waiter {
  wd_wait w;
  wd_link link; /* in ev->waiters_ while queued; NULLs once unlinked */
  wd_event *ev;
} event_waiter;

#define EVENT_OK(e) ((e) && (e)->magic_ == WD__EVENT_MAGIC)

SYNC_COLD static int bad_args(wd_task *self, const wd_event *ev,
                              const char *fn) {
  return wd__sync_bad(self, ev, "event", fn);
}

int wd_event_init(wd_event *ev, const char *name) {
  if (!ev) return wd_fail(NULL, WD_EINVAL, "wd_event_init: NULL event");
  memset(ev, 0, sizeof *ev);
  wd__list_init(&ev->waiters_);
  ev->magic_ = WD__EVENT_MAGIC;
  wd__sync_name(ev->name_, name);
  return 0;
}

int wd_event_deinit(wd_event *ev) {
  if (!ev) return 0;
  if (!EVENT_OK(ev)) return bad_args(NULL, ev, "wd_event_deinit");
  if (ev->nwaiting_ || ev->ninside_) {
    char label[WD__LABEL_MAX], back[48];
    return wd_fail(
        NULL, WD_EBUSY, "wd_event_deinit: %s has %zu waiting%s",
        wd__sync_label(label, "event", ev->name_), ev->nwaiting_,
        wd__sync_returning(back, sizeof back, ev->ninside_, ev->nwaiting_));
  }
  ev->magic_ = 0;
  return 0;
}

bool wd_event_is_set(const wd_event *ev) { return ev && ev->set_; }

int wd_event_set(wd_event *ev) {
  if (!EVENT_OK(ev)) return bad_args(NULL, ev, "wd_event_set");
  ev->set_ = true;
  wd_link *l;
  /* wd_wake() only makes the task ready: each record stays valid until we
   * have moved past it. */
  while ((l = wd__list_pop_front(&ev->waiters_))) {
    event_waiter *ew = wd__container_of(l, event_waiter, link);
    ev->nwaiting_--;
    wd_wake(&ew->w, 0);
  }
  return 0;
}

int wd_event_clear(wd_event *ev) {
  if (!EVENT_OK(ev)) return bad_args(NULL, ev, "wd_event_clear");
  ev->set_ = false;
  return 0;
}

static bool waiter_cancel(wd_wait *w) {
  event_waiter *ew = wd__container_of(w, event_waiter, w);
  wd__list_unlink(&ew->link);
  ew->ev->nwaiting_--;
  return true;
}

/* The record gets only the fields wd_park() reads (task.h: what, name,
 * on_cancel) and ours. */
static int wait_set(wd_task *self, void *obj) {
  wd_event *ev = obj;
  event_waiter ew;
  ew.w.what = event_what;
  ew.w.name = wd__sync_wait_name(ev->name_);
  ew.w.on_cancel = waiter_cancel;
  ew.ev = ev;
  wd__list_push_back(&ev->waiters_, &ew.link);
  ev->nwaiting_++;
  int rc = wd_park(self, &ew.w);
  /* Set unlinks before it wakes, and so does a cancellation; only a
   * wd_park() that refused to park leaves the record queued. */
  if (SYNC_UNLIKELY(rc) && ew.link.next_) waiter_cancel(&ew.w);
  return rc;
}

int wd_event_wait(wd_task *self, wd_event *ev) {
  if (!self || !EVENT_OK(ev))
    return self ? bad_args(self, ev, "wd_event_wait")
                : wd_fail(NULL, WD_EINVAL, "wd_event_wait: NULL task");
  if (ev->set_) {
    int rc = wd_cancel_status(self);
    if (rc) return wd__sync_cancelled(self, rc, "event", ev->name_, "wait");
    return 0;
  }
  ev->ninside_++;
  int rc = wait_set(self, ev); /* wd_park() checks for cancellation */
  if (rc) rc = wd__sync_cancelled(self, rc, "event", ev->name_, "wait");
  ev->ninside_--; /* the last time this call reads the event */
  return rc;
}

int wd_event_wait_for(wd_task *self, wd_event *ev, wd_time timeout) {
  if (!self || !EVENT_OK(ev))
    return self ? bad_args(self, ev, "wd_event_wait_for")
                : wd_fail(NULL, WD_EINVAL, "wd_event_wait_for: NULL task");
  if (timeout < 0) return wd__sync_negative(self, "wd_event_wait_for", timeout);
  int rc = wd_cancel_status(self);
  if (rc) return wd__sync_cancelled(self, rc, "event", ev->name_, "wait");
  if (ev->set_) return 0;
  bool fired = true; /* a timeout of 0 has expired already */
  ev->ninside_++;
  if (timeout > 0) rc = wd__sync_timed(self, timeout, wait_set, ev, &fired);
  if (fired) {
    char label[WD__LABEL_MAX];
    rc = wd_fail(self, WD_ETIMEDOUT, "%s: not set within %.3f s",
                 wd__sync_label(label, "event", ev->name_), wd__secs(timeout));
  } else if (wd_is_cancel(rc)) {
    rc = wd__sync_cancelled(self, rc, "event", ev->name_, "wait");
  }
  ev->ninside_--; /* the last time this call reads the event */
  return rc;
}
