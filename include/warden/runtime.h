/* warden/runtime.h - the runtime: one libuv loop, its tasks and its clock.
 *
 * A runtime belongs to one thread.  wd_run() creates one, runs main as the
 * root task, drives the loop until the root task and all its descendants are
 * done, and returns the root's status.  Ready tasks run from a FIFO queue;
 * libuv is polled between batches of them, never between two ready tasks.
 *
 *   static int main_task(wd_task *self, void *arg) {
 *     return wd_sleep(self, 10 * WD_MSEC);
 *   }
 *   int main(void) { return wd_run(main_task, NULL) == 0 ? 0 : 1; }
 */
#ifndef WARDEN_RUNTIME_H
#define WARDEN_RUNTIME_H

#include <stdio.h>

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum wd_clock_mode {
  WD_CLOCK_REAL = 0, /* CLOCK_MONOTONIC */
  /* Time stands still while any task can run, and jumps to the next deadline
   * when every task is blocked and libuv has nothing in flight: time-based
   * tests become instant and deterministic.  Starts at 0. */
  WD_CLOCK_VIRTUAL = 1,
} wd_clock_mode;

typedef enum wd_guard_mode {
  /* Guard pages while the process's mapping budget allows, then canaries
   * (the default: see docs/core.md, "Stacks"). */
  WD_GUARD_AUTO = 0,
  WD_GUARD_NEVER = 1, /* always canaries: for tests of the canary path */
} wd_guard_mode;

/* Options for wd_run_with(); all zero means the defaults. */
typedef struct wd_runtime_opts {
  wd_clock_mode clock;
  size_t stack_size;     /* default task stack; 0 = WD_STACK_DEFAULT */
  wd_guard_mode guard;   /* how stacks are protected against overflow */
  const char *root_name; /* name of the root task; default "main" */
  /* Tasks may wait for wd_runtime_post() from other threads: a runtime in
   * which every task is blocked, with no timer armed and no libuv work in
   * flight, then waits for a post.  Without it, that state is a deadlock:
   * warden prints it with the task tree to stderr and cancels every task
   * (wd_run then returns WD_ECANCELED unless the root swallowed it); if
   * they still cannot move, it aborts. */
  bool await_posts;
} wd_runtime_opts;

/* Stack sizes name the address space a task reserves; memory is committed
 * only for the pages it touches (a parked task usually touches one).  A
 * page (guard or canary) and the task's record (about 0.5 KiB) come out of
 * it.  Sizes are rounded up to a power of two. */
#define WD_STACK_DEFAULT ((size_t)256 * 1024)
#define WD_STACK_MIN ((size_t)32 * 1024)
#define WD_STACK_MAX ((size_t)64 * 1024 * 1024)

/* Run main(root, arg) as the root task of a new runtime on this thread and
 * return when it and every task it started have ended.  Returns main's
 * status, or WD_ENOMEM / a libuv error if the runtime could not start, or
 * WD_EBUSY if this thread already runs a runtime. */
int wd_run(wd_task_fn main, void *arg);

/* wd_run() with options (opts may be NULL).  Returns WD_EINVAL for a NULL
 * main or an out-of-range option. */
int wd_run_with(const wd_runtime_opts *opts, wd_task_fn main, void *arg);

/* The runtime running on this thread, or NULL. */
wd_runtime *wd_runtime_current(void);

/* The libuv loop under rt, for layers and programs that drive libuv
 * handles of their own (signals, sockets): their callbacks run on rt's
 * thread between tasks and may wd_wake() a parked task.  Close every handle
 * you open, and wait for its close callback, before the task whose memory
 * holds it ends (libuv touches the handle until then) and before the root
 * task returns (an open handle keeps wd_run() from closing the loop).
 * NULL for a NULL rt. */
struct uv_loop_s *wd_runtime_loop(wd_runtime *rt);

/* Say that a wake-up may come from outside the runtime's sight (a signal
 * handle kept unreferenced so that the virtual clock still jumps): while
 * at least one expectation is on, tasks all blocked with nothing in
 * flight are not a deadlock, and the runtime waits for the loop instead.
 * Calls nest: each on needs an off.  Checkpoint: no. */
void wd_runtime_expect_wakeup(wd_runtime *rt, bool on);

/* The current time of task's runtime clock, in ns.  Checkpoint: no. */
wd_time wd_now(const wd_task *self);

/* Run fn(rt, arg) on rt's thread, outside any task, as soon as its loop
 * polls.  The one function any thread may call.  fn must not block; it may
 * wake tasks (wd_wake) or spawn into a group.  Posts still queued when the
 * runtime ends are run before wd_run() returns.  rt must still be running:
 * posting after wd_run() returned is undefined.  Tasks that wait for posts
 * need wd_runtime_opts.await_posts, or their runtime reports a deadlock.
 * WD_ECLOSED does not make a post racing the end of wd_run() safe: the
 * runtime's memory goes when wd_run() returns, so make the posting threads
 * stop (join them) before the root task returns.
 * Returns 0, WD_EINVAL (NULL rt or fn), WD_ENOMEM, or WD_ECLOSED when the
 * runtime has already drained its last posts. */
int wd_runtime_post(wd_runtime *rt, void (*fn)(wd_runtime *rt, void *arg),
                    void *arg);

/* A runtime extension: per-runtime state of a layer above the core (the
 * registry of live resources, the default manager), found by its key and
 * told when the runtime ends.  Lives in the caller's memory, which must
 * stay valid until its at_exit has run (there is no detaching): a static
 * or a block that at_exit frees. */
typedef struct wd_runtime_ext {
  const void *key; /* identity: the address of a static object */
  /* Adds lines to wd_dump() after the task tree; may be NULL. */
  void (*dump)(struct wd_runtime_ext *e, FILE *out);
  /* Runs once after every task ended, newest extension first, before
   * wd_run() returns: report leaks, free the state.  wd_runtime_current()
   * is still rt; it must not block or spawn.  May be NULL. */
  void (*at_exit)(struct wd_runtime_ext *e, wd_runtime *rt);
  struct wd_runtime_ext *next_;
} wd_runtime_ext;

/* Attach e to rt.  Returns 0, WD_EINVAL (NULL rt, e or key) or WD_EBUSY
 * (an extension with that key is attached).  Checkpoint: no. */
int wd_runtime_ext_add(wd_runtime *rt, wd_runtime_ext *e);

/* The extension of rt with that key, or NULL.  Checkpoint: no. */
wd_runtime_ext *wd_runtime_ext_get(const wd_runtime *rt, const void *key);

/* Counters of a runtime, for tests and monitoring. */
typedef struct wd_runtime_stats {
  size_t tasks;           /* live tasks, including the root */
  size_t groups;          /* open groups */
  size_t blocking;        /* blocking calls in flight */
  size_t abandoned;       /* of which abandoned by their caller */
  size_t stacks_mapped;   /* stack slots carved so far */
  size_t stacks_guarded;  /* of which protected by a guard page */
  size_t stacks_cached;   /* free stacks kept for reuse */
  size_t stacks_returned; /* of which gave their pages back (unused 2 s) */
  uint64_t switches;      /* context switches so far */
} wd_runtime_stats;

void wd_runtime_stats_get(const wd_runtime *rt, wd_runtime_stats *out);

/* Print the task tree of the current runtime: every task and group with id,
 * name, state, creation site and age, and what each blocked task waits on;
 * then blocking calls in flight.  Call it from the runtime's thread.
 * Checkpoint: no. */
void wd_dump(FILE *out);

#ifdef __cplusplus
}
#endif
#endif
