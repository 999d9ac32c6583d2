/* Offloading synchronous calls to libuv's thread pool.
 *
 * The work record is on the heap, not on the caller's stack, because with
 * WD_BLOCKING_ABANDON the caller may leave before the thread is done: the
 * record then becomes an orphan that the after-work callback frees.  A call
 * cancelled before a thread picked it up is withdrawn with uv_cancel() in
 * either policy, so "cancelled" still means "did not happen".  Every record
 * in flight is on the runtime's list for wd_dump(), and the runtime does not
 * end until the last one has come back.
 */
#include <string.h>

#include "internal.h"

typedef struct wd__work {
  uv_work_t req;
  wd_wait wait;
  wd_link link;
  int (*fn)(void *);
  void *arg;
  int rc;
  wd_blocking_policy policy;
  void (*on_done)(void *, int);
  void *done_arg;
  bool orphan, abandoned;
  uint64_t task_id;
  uint64_t started_ms;
  char task_name[WD_TASK_NAME_MAX];
} wd__work;

static void work_cb(uv_work_t *req) {
  wd__work *w = wd__container_of(req, wd__work, req);
  w->rc = w->fn(w->arg);
}

static void after_cb(uv_work_t *req, int status) {
  wd__work *w = wd__container_of(req, wd__work, req);
  wd_runtime *rt = req->loop->data;
  wd__list_unlink(&w->link);
  rt->nblocking--;
  if (w->abandoned) rt->nabandoned--;
  if (w->orphan) {
    if (w->abandoned && w->on_done) w->on_done(w->done_arg, w->rc);
    wd__free(w);
    return;
  }
  wd_wake(&w->wait, status == UV_ECANCELED ? WD_ECANCELED : w->rc);
}

static bool work_cancel(wd_wait *wt) {
  wd__work *w = wd__container_of(wt, wd__work, wait);
  if (uv_cancel((uv_req_t *)&w->req) == 0) {
    w->orphan = true; /* withdrawn; after_cb frees it */
    return true;
  }
  if (w->policy == WD_BLOCKING_ABANDON) {
    w->orphan = true;
    w->abandoned = true;
    wt->task->rt->nabandoned++;
    return true;
  }
  return false; /* WD_BLOCKING_WAIT: the result is awaited */
}

int wd_blocking(wd_task *self, int (*fn)(void *arg), void *arg,
                wd_blocking_policy policy) {
  wd_blocking_opts o = {.policy = policy};
  return wd_blocking_with(self, fn, arg, &o);
}

int wd_blocking_with(wd_task *self, int (*fn)(void *arg), void *arg,
                     const wd_blocking_opts *opts) {
  wd_blocking_opts o = opts ? *opts : (wd_blocking_opts){0};
  wd_blocking_policy policy = o.policy;
  if (!self || !fn)
    return wd_fail(self, WD_EINVAL, "wd_blocking: NULL %s",
                   !self ? "task" : "fn");
  if (policy != WD_BLOCKING_WAIT && policy != WD_BLOCKING_ABANDON)
    return wd_fail(self, WD_EINVAL, "wd_blocking: unknown policy %d",
                   (int)policy);
  int rc = wd__cancel_status(self);
  if (rc) return rc;
  wd_runtime *rt = self->rt;
  wd__work *w = wd__calloc(1, sizeof *w);
  if (!w) return wd_fail(self, WD_ENOMEM, "wd_blocking: no memory");
  w->fn = fn;
  w->arg = arg;
  w->policy = policy;
  w->on_done = o.on_abandoned_done;
  w->done_arg = o.done_arg;
  w->task_id = self->id;
  w->started_ms = wd__loop_ms(rt);
  memcpy(w->task_name, wd_task_name(self), sizeof w->task_name);
  rc = uv_queue_work(&rt->loop, &w->req, work_cb, after_cb);
  if (rc) {
    wd__free(w);
    return wd_fail(self, rc, "wd_blocking: uv_queue_work: %s", wd_strerror(rc));
  }
  wd__list_push_back(&rt->blocking, &w->link);
  rt->nblocking++;
  w->wait.what = "blocking call";
  w->wait.on_cancel = work_cancel;
  /* Cancellation was checked above; from here the record is either woken
   * by after_cb or orphaned by work_cancel, never left queued and freed. */
  rc = wd__park_now(self, &w->wait);
  if (!w->orphan) wd__free(w);
  return rc;
}

/* For wd_dump(): describe the calls in flight. */
void wd__blocking_dump(wd_runtime *rt, FILE *out) {
  uint64_t now = wd__loop_ms(rt);
  wd__list_each(it, &rt->blocking) {
    wd__work *w = wd__container_of(it, wd__work, link);
    fprintf(out, "  blocking call for task %llu '%s', running %.3f s%s\n",
            (unsigned long long)w->task_id, w->task_name,
            (double)(now - w->started_ms) / 1000.0,
            w->abandoned ? " (abandoned: result will be discarded)"
            : w->orphan  ? " (withdrawn)"
                         : "");
  }
}
