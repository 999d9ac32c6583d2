/* warden/batcher.h - many callers' items, handled in batches.
 *
 * Callers submit one item each and wait for their own result; the batcher
 * gathers the items into batches and hands each batch to one call of the
 * batch function, which fills in a result or an error per item (one
 * round trip for many lookups, one INSERT for many rows).
 *
 *   static int load_users(wd_task *self, const wd_batch *batch, void *arg) {
 *     ... one query for batch->items[0 .. batch->n - 1] ...
 *     for (size_t i = 0; i < batch->n; i++)
 *       if (found[i]) batch->results[i] = user[i];
 *       else batch->errors[i] = -ENOENT;
 *     return 0;
 *   }
 *
 *   wd_batcher *b;
 *   rc = wd_batcher_open(self, &b, &(wd_batcher_opts){
 *            .name = "users", .fn = load_users,
 *            .max_size = 100, .max_wait = 2 * WD_MSEC});
 *   ... tasks call wd_batcher_submit(task, b, &id, &user) ...
 *   rc = wd_batcher_close(self, b);   // flushes, waits for every batch
 *
 * ---- When a batch is flushed ------------------------------------------------
 *
 * Items wait in one FIFO.  A batch is the oldest max_size items (or fewer)
 * and is flushed as soon as a batch slot is free and
 *   - max_size items are waiting, or
 *   - the oldest waiting item has waited max_wait (the max wait runs from
 *     the first item of the batch), or
 *   - the batcher is closing.
 * At most max_inflight batches run at once; while all slots are busy, items
 * keep gathering, and the next free slot takes the oldest max_size of them.
 * max_wait 0 flushes whatever is waiting as soon as a slot is free: the
 * items submitted while the batch function ran, or by tasks that ran in
 * the same turn of the scheduler, still share a batch.  WD_TIME_NEVER
 * flushes only full batches (and at close).
 *
 * ---- Results and errors ----------------------------------------------------
 *
 * The batch function gets the items in submission order, with results[i]
 * NULL and errors[i] 0.  It sets results[i], or errors[i] to a negative
 * code to fail that item alone, and returns 0; or it returns a negative
 * code to fail the whole batch: every item it gave no error of its own
 * then fails with that code, and the message of the function's detailed
 * error is copied into each caller's ("batcher 'users': batch of 12
 * failed: <message>").  A failed item's caller gets *result NULL.  The
 * function runs in one of the batcher's tasks (not in a caller's: it sees
 * none of their task locals or cancel scopes); with opts.batch_timeout it
 * runs under that timeout (WD_ETIMEDOUT for the batch).
 *
 * ---- Cancellation of a caller -----------------------------------------------
 *
 * "Cancelled means it did not happen."  A caller cancelled while its item
 * still waits takes the item back: submit returns WD_ECANCELED /
 * WD_ETIMEDOUT and the batch function never sees it.  Once its item has
 * been flushed, the item is being handled and cannot be taken back, so the
 * caller keeps waiting for that batch and gets its real result (0 or the
 * item's error); its next checkpoint sees the cancellation.  That is the
 * rule of every warden primitive (a waiter that was served keeps what it
 * was handed), and it is what makes the borrowing safe: the item and the
 * result belong to the caller, who stays until the batch function is done
 * with them, so nothing is lost (a result that owns memory is never
 * dropped on the floor) and nothing is used after its caller left.  To
 * bound that wait, set batch_timeout.
 *
 * ---- Lifetime: the batcher is a block of its opener ------------------------
 *
 * wd_batcher_open() opens a task group in the calling task - the batcher's
 * own group, in which its batch tasks run - and wd_batcher_close() exits
 * it.  So the batcher is a block of the opener, like a group: the opener
 * closes it, after exiting every scope and group it opened after it (else
 * close returns WD_EINVAL and leaves it open), and a task that returns with
 * a batcher open is reported and aborts, as for a group.  That is what
 * keeps "no task outlives its group": the batch tasks are children of the
 * opener's block and end before close returns.  Any task of the runtime
 * may submit while the batcher is open.  Close frees it: a task that may
 * still submit must have stopped using it by the time close returns (one
 * that submits while close runs gets WD_ECLOSED).
 *
 * Closing refuses new items (WD_ECLOSED), flushes the waiting ones in
 * batches as above, and waits for every batch to finish.  If the opener is
 * cancelled, so is the batcher's group: the batch running then sees the
 * cancellation at its checkpoints (its callers get what the function
 * returns for them), items not yet flushed are not flushed - their callers
 * get WD_ECLOSED, with nothing done - and later submits get WD_ECLOSED.
 *
 * A batcher belongs to one runtime; it is not thread-safe.
 */
#ifndef WARDEN_BATCHER_H
#define WARDEN_BATCHER_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wd_batcher wd_batcher;

/* One batch, as the batch function sees it. */
typedef struct wd_batch {
  size_t n;           /* items in the batch, 1 to max_size */
  void *const *items; /* the submitted item pointers, oldest first */
  void **results;     /* results[i]: item i's result, NULL to start */
  int *errors;        /* errors[i]: < 0 fails item i alone, 0 to start */
} wd_batch;

/* Handle one batch (see above).  Returns 0, or a negative code that fails
 * every item without an error of its own. */
typedef int (*wd_batch_fn)(wd_task *self, const wd_batch *batch, void *arg);

/* Options of wd_batcher_open(); fn and max_size are required. */
typedef struct wd_batcher_opts {
  const char *name; /* copied (31 bytes kept); default "batcher" */
  wd_batch_fn fn;
  void *arg;        /* for fn */
  size_t max_size;  /* items per batch, 1 to WD_BATCHER_MAX_SIZE */
  wd_time max_wait; /* from a batch's first item; 0 = none, see above;
                     * WD_TIME_NEVER = only full batches */
  /* Batches running at once; 0 = 1 (batches then reach the backend one
   * at a time, in order, as over one connection); at most
   * WD_BATCHER_MAX_INFLIGHT.  Each slot is a task and a preallocated
   * array of max_size entries. */
  size_t max_inflight;
  wd_time batch_timeout; /* bound on each call of fn; 0 = none */
} wd_batcher_opts;

#define WD_BATCHER_MAX_SIZE ((size_t)1 << 20)
#define WD_BATCHER_MAX_INFLIGHT ((size_t)1024)

typedef struct wd_batcher_stats {
  uint64_t submitted; /* items accepted */
  uint64_t completed; /* items whose batch ended (success or error) */
  uint64_t failed;    /* of which got an error */
  uint64_t withdrawn; /* items taken back by their cancelled caller */
  /* Items not flushed because the batcher's group was cancelled (their
   * callers got WD_ECLOSED). */
  uint64_t dropped;
  uint64_t refused;         /* submits refused with WD_ECLOSED */
  uint64_t batches;         /* calls of fn */
  uint64_t batches_full;    /* of which flushed at max_size */
  uint64_t batches_waited;  /* of which flushed at max_wait (or 0) */
  uint64_t batches_closing; /* of which flushed by close */
  uint64_t batches_failed;  /* of which fn returned an error */
  size_t waiting;           /* items waiting to be flushed now */
  size_t inflight;          /* batches running now */
  size_t inflight_peak;     /* most batches running at once */
  bool closed;              /* close has started */
} wd_batcher_stats;

/* Open a batcher in self: allocate it, open its group in self and start
 * its max_inflight batch tasks there.  It must be closed by self with
 * wd_batcher_close() (see "Lifetime").  Checkpoint: no.
 * Returns 0 and stores the batcher in *out; or, with *out NULL and nothing
 * held: WD_EINVAL (NULL self, out, opts or opts->fn, max_size 0 or above
 * WD_BATCHER_MAX_SIZE, max_inflight above WD_BATCHER_MAX_INFLIGHT, a
 * negative max_wait or batch_timeout), WD_ENOMEM. */
#define wd_batcher_open(self, out, ...)                                        \
  wd_batcher_open_((self), (out), (__VA_ARGS__), __FILE__, __LINE__)
int wd_batcher_open_(wd_task *self, wd_batcher **out,
                     const wd_batcher_opts *opts, const char *file, int line);

/* Submit item (borrowed until this returns) and wait for its result.
 * Checkpoint: yes.
 * Returns 0 and stores the item's result in *result (result may be NULL);
 * or, with *result NULL: the item's error, or the batch's (see "Results and
 * errors"); WD_ECANCELED / WD_ETIMEDOUT when self was cancelled before the
 * item was flushed (it was taken back, or never submitted);
 * WD_ECLOSED (the batcher is closing or shut down by cancellation; the item
 * was not handled); WD_EINVAL (NULL self or b). */
int wd_batcher_submit(wd_task *self, wd_batcher *b, void *item, void **result);

/* Close b: refuse new items, flush the waiting ones, wait for every batch
 * to end, close b's group and free b.  Must be called by the task that
 * opened b.  Checkpoint: yes, but it always waits (a cancellation of self
 * cancels the batches instead, see "Lifetime").
 * Returns 0 (also for a NULL b), the cancellation code when self was
 * cancelled (b is closed all the same), or WD_EINVAL with b left open and
 * usable: self is not the opener, or a scope or group self opened after b
 * is still open. */
int wd_batcher_close(wd_task *self, wd_batcher *b);

/* b's counters.  Checkpoint: no. */
void wd_batcher_stats_get(const wd_batcher *b, wd_batcher_stats *out);

#ifdef __cplusplus
}
#endif
#endif
