/* Stack overflow detection.
 *
 * An overflow kills the process, so each case runs in a forked child whose
 * stderr goes into a pipe; the parent reads the report and checks how the
 * child died.  A task with a small stack recurses with 1 KiB frames: with a
 * guard page the recursion faults in it, and the SIGSEGV handler names the
 * task; with canaries (WD_GUARD_NEVER) the recursion goes just past the end
 * of the usable stack, over the canary, and the scheduler notices at the
 * task's next switch and aborts. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/internal.h"
#include "helpers.h"

/* No Criterion .timeout on these tests: Criterion 2.4.1's runner leaks a
 * block per timed test when tests run in parallel, and LeakSanitizer then
 * fails the whole binary.  A hang is bounded by ctest's TIMEOUT instead. */

#define TASK_NAME "deep-diver"
#define SMALL_STACK ((size_t)64 * 1024)

typedef struct outcome {
  int status; /* from waitpid */
  char text[8192];
} outcome;

/* ---- the overflowing task ----------------------------------------------- */

static volatile int keep_diving = 1;

/* Each level owns a 1 KiB array that it writes whole, so every page on the
 * way down is touched in order; the use of buf after the call keeps the
 * call from being a tail call. */
__attribute__((noinline)) static int dive(int depth) {
  volatile char buf[1024];
  for (size_t i = 0; i < sizeof buf; i++)
    buf[i] = (char)depth;
  if (keep_diving) return dive(depth + 1) + buf[depth % sizeof buf];
  return buf[0];
}

static int guard_diver(wd_task *self, void *arg) {
  dive(0);
  return 0; /* not reached: the guard page stops the dive */
}

/* The last frame: an array reaching from here to 128 bytes below lo, which
 * covers the canary in the 64 bytes just under the stack.  The diver is
 * alone in its size class, so it has slot 0 of its arena and what lies
 * below lo is the arena's spare canary page: mapped, so this write itself
 * does not fault, and no other task's record is in the way. */
__attribute__((noinline)) static int smash(const char *lo) {
  const char *here = __builtin_frame_address(0);
  size_t n = (size_t)(here - lo) + 128;
  volatile char vla[n];
  for (size_t i = 0; i < n; i++)
    vla[i] = 0x5a;
  return vla[0];
}

/* 1 KiB frames down to a few KiB above the end of the stack, then smash().
 * The frame address, not buf's, measures the depth: under ASan's fake
 * stacks buf may not be on this stack at all. */
__attribute__((noinline)) static int approach(const char *lo, int depth) {
  volatile char buf[1024];
  for (size_t i = 0; i < sizeof buf; i++)
    buf[i] = (char)depth;
  const char *here = __builtin_frame_address(0);
  if (here - lo > 4096) return approach(lo, depth + 1) + buf[0];
  return smash(lo) + buf[0];
}

static int canary_diver(wd_task *self, void *arg) {
  /* The usable stack is larger than asked for (a size class, minus the
   * task record), so the end comes from the task itself. */
  approach(self->stack.lo, 0);
  /* The switch to the bystander checks the canary. */
  wd_yield(self);
  return 0;
}

/* Overflows and ends at once: the check happens on its very last switch. */
static int canary_diver_returns(wd_task *self, void *arg) {
  approach(self->stack.lo, 0);
  return 0;
}

/* Ready when the diver yields, so that the yield really switches away
 * (with nothing else ready it would just continue). */
static int bystander(wd_task *self, void *arg) { return 0; }

typedef struct diver {
  wd_task_fn fn;
  bool bystander;
} diver;

static int overflow_main(wd_task *self, void *arg) {
  const diver *d = arg;
  wd_group g;
  wd_group_enter(self, &g, NULL);
  wd_spawn(&g, d->fn, NULL,
           &(wd_spawn_opts){.name = TASK_NAME, .stack_size = SMALL_STACK});
  if (d->bystander) wd_spawn(&g, bystander, NULL, NULL);
  return wd_group_exit(self, &g, 0);
}

/* ---- the child process -------------------------------------------------- */

/* Never returns: the child must not go back into Criterion. */
static _Noreturn void child(int wfd, wd_guard_mode guard, const diver *d) {
  dup2(wfd, STDERR_FILENO);
  close(wfd);
  wd_runtime_opts o = {.guard = guard};
  int rc = wd_run_with(&o, overflow_main, (void *)d);
  dprintf(STDERR_FILENO, "child: wd_run returned %d\n", rc);
  _exit(3);
}

static void run_in_child(wd_guard_mode guard, const diver *d, outcome *out) {
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  fflush(NULL); /* nothing buffered may be written twice */
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    close(fds[0]);
    child(fds[1], guard, d);
  }
  close(fds[1]);
  size_t len = 0;
  ssize_t r;
  while ((r = read(fds[0], out->text + len, sizeof out->text - 1 - len)) > 0)
    len += (size_t)r;
  out->text[len] = '\0';
  close(fds[0]);
  cr_assert_eq(waitpid(pid, &out->status, 0), pid);
}

/* Under AddressSanitizer the handler warden installs replaces ASan's own
 * SIGSEGV handler (allow_user_segv_handler defaults to 1 in GCC's libasan),
 * so warden sees the guard-page fault first, with or without ASan's
 * alternate signal stack (use_sigaltstack) and fake stacks
 * (detect_stack_use_after_return).  Only allow_user_segv_handler=0 makes
 * ASan keep the signal and report "stack-overflow" itself: then there is
 * nothing of warden's to test. */
static bool asan_keeps_segv(void) {
  const char *o = getenv("ASAN_OPTIONS");
  return o && strstr(o, "allow_user_segv_handler=0");
}

Test(overflow, guard_page_hit_names_the_task_and_kills_by_signal) {
  if (asan_keeps_segv())
    cr_skip_test("ASAN_OPTIONS has allow_user_segv_handler=0");
  outcome o;
  run_in_child(WD_GUARD_AUTO, &(diver){guard_diver, false}, &o);
  cr_assert(WIFSIGNALED(o.status),
            "the child did not die by a signal "
            "(status %#x); stderr:\n%s",
            o.status, o.text);
  int sig = WTERMSIG(o.status);
  cr_assert(sig == SIGSEGV || sig == SIGBUS, "died by signal %d; stderr:\n%s",
            sig, o.text);
  cr_assert_not_null(strstr(o.text, "stack overflow in task"), "%s", o.text);
  cr_assert_not_null(strstr(o.text, "'" TASK_NAME "'"), "%s", o.text);
  cr_assert_not_null(strstr(o.text, "guard page"), "%s", o.text);
}

static void expect_canary_abort(const outcome *o) {
  cr_assert(WIFSIGNALED(o->status),
            "the child did not die by a signal "
            "(status %#x); stderr:\n%s",
            o->status, o->text);
  cr_assert_eq(WTERMSIG(o->status), SIGABRT, "died by signal %d; stderr:\n%s",
               WTERMSIG(o->status), o->text);
  cr_assert_not_null(strstr(o->text, "stack overflow in task"), "%s", o->text);
  cr_assert_not_null(strstr(o->text, "canary"), "%s", o->text);
  cr_assert_not_null(strstr(o->text, "'" TASK_NAME "'"), "%s", o->text);
}

Test(overflow, overwritten_canary_names_the_task_and_aborts) {
  outcome o;
  run_in_child(WD_GUARD_NEVER, &(diver){canary_diver, true}, &o);
  expect_canary_abort(&o);
}

/* A task that smashes its canary and returns at once is still named. */
Test(overflow, canary_of_a_task_that_ends_at_once_still_names_it) {
  outcome o;
  run_in_child(WD_GUARD_NEVER, &(diver){canary_diver_returns, false}, &o);
  expect_canary_abort(&o);
}
