/* bench.h - helpers shared by the benchmark programs in bench/.
 *
 * A monotonic clock in integer nanoseconds, the one output format every
 * program uses (`bench <name> <value> <unit>`, explanations on '#' lines),
 * a fatal check for warden calls, a watchdog, the process's resident memory
 * from /proc/self/status, and a broadcast event built the way task.h
 * invites users to build their own primitives: a list of wd_wait records,
 * each parked with wd_park() and released with wd_wake().
 *
 * Everything is static inline so that each program stays one translation
 * unit (CMake builds every .c file of bench/ as its own executable).
 */
#ifndef WD_BENCH_H
#define WD_BENCH_H

#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <warden.h>

/* ---- time and output ---------------------------------------------------- */

static inline int64_t bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* One figure, machine-readable: `bench <name> <value> <unit>`. */
static inline void bench_print(const char *name, double value, int decimals,
                               const char *unit) {
  printf("bench %s %.*f %s\n", name, decimals, value, unit);
  fflush(stdout);
}

static inline int64_t bench_min(int64_t a, int64_t b) { return a < b ? a : b; }

/* A benchmark whose work failed measures nothing: stop with the detail. */
static inline void bench_check(int rc, const char *what) {
  if (rc == 0) return;
  fprintf(stderr, "bench: %s failed: %s (%s)\n", what, wd_strerror(rc),
          wd_err_name(rc));
  const wd_error *e = wd_last_error();
  if (e) wd_error_print(stderr, e);
  exit(1);
}

/* A benchmark that hangs (a lost wakeup in the runtime, say) must fail
 * loudly rather than stall `make bench` forever. */
static inline void bench_watchdog_fire_(int sig) {
  static const char msg[] = "bench: watchdog: no progress, giving up\n";
  (void)sig;
  if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
  _exit(3);
}

static inline void bench_watchdog(unsigned seconds) {
  signal(SIGALRM, bench_watchdog_fire_);
  alarm(seconds);
}

/* ---- memory ------------------------------------------------------------- */

/* A "Key:   123 kB" field of /proc/self/status, in bytes (-1 if absent). */
static inline int64_t bench_status_field(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  size_t klen = strlen(key);
  int64_t v = -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
      v = strtoll(line + klen + 1, NULL, 10) * 1024;
      break;
    }
  }
  fclose(f);
  return v;
}

/* What the process costs in RAM: resident pages plus the page tables that
 * map them.  Page tables matter here: every task stack has its own slot of
 * at least the stack size (256 KiB by default), so a million sparse stacks
 * spread their few touched pages over many page-table pages. */
static inline int64_t bench_resident(void) {
  return bench_status_field("VmRSS") + bench_status_field("VmPTE");
}

/* ---- a broadcast event on wd_park/wd_wake -------------------------------- */

typedef struct bench_waiter {
  wd_wait w; /* first: on_cancel gets &w and casts back */
  struct bench_waiter *prev, *next;
  struct bench_event *ev;
} bench_waiter;

typedef struct bench_event {
  bench_waiter *head;
  size_t nwaiting;
  const char *name;
} bench_event;

static inline void bench_event_unlink(bench_waiter *bw) {
  bench_event *ev = bw->ev;
  if (bw->prev)
    bw->prev->next = bw->next;
  else
    ev->head = bw->next;
  if (bw->next) bw->next->prev = bw->prev;
  bw->prev = bw->next = NULL;
  bw->ev = NULL;
  ev->nwaiting--;
}

/* A cancelled waiter leaves the list, so that set() never touches a frame
 * that is gone.  Nothing cancels in these benchmarks unless one fails. */
static inline bool bench_event_on_cancel(wd_wait *w) {
  bench_event_unlink((bench_waiter *)w);
  return true;
}

/* Park self until bench_event_set(ev).  Checkpoint: yes. */
static inline int bench_event_wait(wd_task *self, bench_event *ev) {
  bench_waiter bw = {.w = {.what = "event",
                           .name = ev->name,
                           .on_cancel = bench_event_on_cancel},
                     .prev = NULL,
                     .next = ev->head,
                     .ev = ev};
  if (ev->head) ev->head->prev = &bw;
  ev->head = &bw;
  ev->nwaiting++;
  int rc = wd_park(self, &bw.w);
  if (bw.ev) bench_event_unlink(&bw); /* wd_park failed without parking */
  return rc;
}

/* Wake every waiter.  wd_wake() only makes the task ready, so the waiter's
 * frame stays valid until we have moved past it. */
static inline void bench_event_set(bench_event *ev) {
  while (ev->head) {
    bench_waiter *bw = ev->head;
    bench_event_unlink(bw);
    wd_wake(&bw->w, 0);
  }
}

#endif
