/* warden/types.h - basic types shared by every warden module.
 *
 * Objects that live in the caller's memory (cancel scopes, groups, handles,
 * waits) have their layout here so they can be embedded; fields whose name
 * ends in an underscore are private to warden.
 */
#ifndef WARDEN_TYPES_H
#define WARDEN_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Monotonic time in nanoseconds (see wd_now()). */
typedef int64_t wd_time;

#define WD_NSEC ((wd_time)1)
#define WD_USEC ((wd_time)1000)
#define WD_MSEC ((wd_time)1000000)
#define WD_SEC ((wd_time)1000000000)
#define WD_TIME_NEVER INT64_MAX

typedef struct wd_task wd_task;
typedef struct wd_runtime wd_runtime;

/* A task's body.  Returns 0 or a negative error code; the value becomes the
 * task's status. */
typedef int (*wd_task_fn)(wd_task *self, void *arg);

/* Intrusive doubly linked list node (private layout). */
typedef struct wd_link {
  struct wd_link *next_, *prev_;
} wd_link;

/* A deadline in the runtime's timer queue (private).  Small on purpose:
 * the deadline and the callback live in the queue, so a node embedded in
 * a task's record adds no cache line to it. */
typedef struct wd_timer_node {
  uint32_t hidx_;
  bool armed_;
} wd_timer_node;

#ifdef __cplusplus
}
#endif
#endif
