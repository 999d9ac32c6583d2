/* warden/group.h - task groups (Trio's nurseries).
 *
 * Every task is spawned into a group, and a group's owner cannot leave it
 * before all of its tasks have ended: no task outlives its group.  When a
 * task fails, the group cancels its siblings and collects every failure
 * (WD_EGROUP, with one child error per failed task); in supervisor mode the
 * siblings keep running and failures are only collected.  The group has its
 * own cancel scope, entered by wd_group_enter() around the owner's body, so
 * cancelling the owner's scopes cancels the group's tasks too.
 *
 *   wd_group g;
 *   wd_group_enter(self, &g, &(wd_group_opts){ .name = "fetchers" });
 *   for (int i = 0; i < n; i++) wd_spawn(&g, fetch, &urls[i], NULL);
 *   int rc = wd_group_exit(self, &g, 0);  // waits for all of them
 */
#ifndef WARDEN_GROUP_H
#define WARDEN_GROUP_H

#include "cancel.h"
#include "task.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wd_group_opts {
  const char *name;     /* copied; shown in dumps and errors */
  bool supervisor;      /* failures do not cancel siblings */
  unsigned max_running; /* at most this many tasks run at once; 0 = no cap.
                         * Tasks spawned beyond it wait, unstarted, in FIFO
                         * order. */
} wd_group_opts;

typedef struct wd_group {
  wd_cancel_scope scope; /* cancel it to cancel the whole group */
  wd_task *owner_;
  wd_link pending_; /* spawned beyond max_running, not started */
  wd_link link_;    /* in the owner's list of open groups */
  struct wd_error **errors_;
  size_t nerrors_, caperrors_;
  size_t nlive_, nrunning_, npending_;
  size_t nspawned_, nfailed_, ncancelled_;
  unsigned max_running_;
  uint64_t id_;
  const char *file_;
  int line_;
  wd_time created_;
  struct wd_wait *exit_wait_;
  char name_[32];
  bool supervisor_, closed_;
} wd_group;

/* Open g in self: g's scope becomes self's innermost cancel scope.  Leave it
 * with wd_group_exit() (in reverse order with other scopes).  A task that
 * returns with a group (or a cancel scope) still open is a bug that warden
 * reports, naming the task and the group's creation site, and aborts on:
 * the group's memory went with the returning frame.
 * Checkpoint: no.  Returns 0, WD_EINVAL (NULL self or g) or WD_ENOMEM. */
#define wd_group_enter(self, g, ...)                                           \
  wd_group_enter_((self), (g), (__VA_ARGS__), __FILE__, __LINE__)
int wd_group_enter_(wd_task *self, wd_group *g, const wd_group_opts *opts,
                    const char *file, int line);

/* Options of one spawn; NULL means defaults. */
typedef struct wd_spawn_opts {
  const char *name;  /* copied */
  size_t stack_size; /* 0 = the runtime's default */
  wd_handle *handle; /* where to publish the outcome, or NULL */
} wd_spawn_opts;

/* Start fn(task, arg) as a new task of g; it runs once the spawner next
 * blocks or yields.  May be called by any task of g's runtime, or by a
 * posted callback.  A task spawned into a cancelled group starts cancelled
 * (its first checkpoint fails).  Checkpoint: no.
 * Tasks of g may spawn siblings while the owner waits in wd_group_exit().
 * Returns 0, WD_EINVAL (NULL g or fn, stack size out of range), WD_ECLOSED
 * (g was exited), WD_ENOMEM (nothing was started). */
#define wd_spawn(g, fn, arg, ...)                                              \
  wd_spawn_((g), (fn), (arg), (__VA_ARGS__), __FILE__, __LINE__)
int wd_spawn_(wd_group *g, wd_task_fn fn, void *arg, const wd_spawn_opts *opts,
              const char *file, int line);

/* Cancel every task of g and the owner's body inside it. */
static inline void wd_group_cancel(wd_group *g) { wd_cancel(&g->scope); }

/* End the group block: if rc (the result of the owner's body) is a failure,
 * cancel the group first; then wait for every task, also when self is
 * cancelled (the tasks are cancelled with it and the wait is bounded by
 * their cleanup).  Checkpoint: yes, but it always waits.
 * Returns:
 *   WD_EGROUP when any task failed: self's error lists each failure
 *     (and the body's, if rc was one), see wd_group_error();
 *   else rc when it was a failure;
 *   else the code of a cancelled enclosing scope, if any (the exit is a
 *     checkpoint: work may have been skipped);
 *   else 0 (a cancellation of g itself is swallowed, like Trio's).
 * A task's result counts as a failure when it is negative and is not the
 * cancellation of that task. */
int wd_group_exit(wd_task *self, wd_group *g, int rc);

/* Number of tasks of g alive now (running, blocked or pending). */
size_t wd_group_size(const wd_group *g);

/* One job of wd_run_tasks(): the outcome is in h after the call. */
typedef struct wd_job {
  wd_task_fn fn;
  void *arg;
  const char *name;
  wd_handle h;
} wd_job;

/* Run n jobs concurrently in a new group and wait for all of them; each
 * job's status and result land in jobs[i].h.  opts may be NULL.
 * Checkpoint: yes.  Returns what wd_group_exit() returns, WD_EINVAL for a
 * NULL jobs with n > 0 or a job without fn (nothing run), or WD_ENOMEM
 * (the jobs already started are cancelled and awaited). */
int wd_run_tasks(wd_task *self, wd_job *jobs, size_t n,
                 const wd_group_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
