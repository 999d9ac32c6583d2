/* Allocation accounting and fault injection.
 *
 * The main test is SQLite's discipline: run the same small program once for
 * every allocation it makes, failing that allocation, and check each time
 * that the failure comes back as a clean error and that nothing leaked. */
#include <stdint.h>
#include <string.h>

#include "helpers.h"

/* No Criterion .timeout on these tests: Criterion 2.4.1's runner leaks a
 * block per timed test when tests run in parallel, and LeakSanitizer then
 * fails the whole binary.  A hang is bounded by ctest's TIMEOUT instead. */

static const wd_local_key ROOT_KEY = {"root"};
static const wd_local_key WORKER_KEY = {"worker"};

static int one(void *arg) { return 1; }

/* Worker i: a local (a node of its own), a sleep on the virtual clock and,
 * for worker 0, a blocking call. */
static int worker(wd_task *self, void *arg) {
  intptr_t i = (intptr_t)arg;
  int rc = wd_local_set(self, &WORKER_KEY, arg);
  if (rc) return rc;
  rc = wd_sleep(self, (wd_time)(i + 1) * WD_MSEC);
  if (rc) return rc;
  if (i == 0) {
    rc = wd_blocking(self, one, NULL, WD_BLOCKING_WAIT);
    if (rc < 0) return rc;
  }
  return 0;
}

typedef struct fault_run {
  int final_rc;   /* what the root returned */
  bool bad_error; /* the root's error was not made of WD_ENOMEM */
  char why[160];
} fault_run;

/* A clean error: WD_ENOMEM, or WD_EGROUP whose children are (recursively)
 * clean.  A group whose error could not be allocated has no detail. */
static bool clean_error(const wd_error *e, char *why, size_t n) {
  if (e->code == WD_ENOMEM) return true;
  if (e->code != WD_EGROUP) {
    snprintf(why, n, "%s: %s", wd_err_name(e->code), e->msg);
    return false;
  }
  for (size_t i = 0; i < e->nchildren; i++)
    if (!clean_error(e->children[i], why, n)) return false;
  return true;
}

static int fault_main(wd_task *self, void *arg) {
  fault_run *r = arg;
  int rc = wd_local_set(self, &ROOT_KEY, r);
  if (rc) return rc;
  wd_group outer, bounded;
  wd_group_enter(self, &outer, &(wd_group_opts){.name = "outer"});
  for (intptr_t i = 0; i < 2 && rc == 0; i++)
    rc = wd_spawn(&outer, worker, (void *)i, NULL);
  if (rc == 0) {
    /* Two run, one waits in a pending record. */
    wd_group_enter(self, &bounded,
                   &(wd_group_opts){.name = "bounded", .max_running = 2});
    for (intptr_t i = 2; i < 5 && rc == 0; i++)
      rc = wd_spawn(&bounded, worker, (void *)i, NULL);
    rc = wd_group_exit(self, &bounded, rc);
  }
  rc = wd_group_exit(self, &outer, rc);
  const wd_error *e = wd_task_error(self);
  if (rc == WD_EGROUP && e && !clean_error(e, r->why, sizeof r->why))
    r->bad_error = true;
  r->final_rc = rc;
  return rc;
}

Test(alloc, every_allocation_failure_is_a_clean_error_without_leaks) {
  long n;
  int rc = -1;
  for (n = 1; n < 10000; n++) {
    fault_run r = {.final_rc = 1};
    wd_alloc_fail_after(n);
    rc = run_virtual(fault_main, &r);
    int fired = wd_alloc_failed();
    cr_assert(rc == 0 || rc == WD_ENOMEM || rc == WD_EGROUP,
              "n=%ld: wd_run returned %d (%s)", n, rc, wd_err_name(rc));
    cr_assert(rc == 0 || fired, "n=%ld: failed with %s but no fault fired", n,
              wd_err_name(rc));
    cr_assert_not(r.bad_error, "n=%ld: group error is not WD_ENOMEM: %s", n,
                  r.why);
    if (r.final_rc != 1)
      cr_assert_eq(r.final_rc, rc,
                   "n=%ld: wd_run did not return the root's "
                   "status",
                   n);
    wd_error_clear(NULL);
    cr_assert_eq(wd_alloc_live(), 0, "n=%ld: %ld blocks leaked", n,
                 wd_alloc_live());
    if (!fired) break;
  }
  wd_alloc_fail_after(0);
  cr_assert_eq(rc, 0, "the run past the last allocation must succeed");
  cr_assert_geq(n - 1, 10, "only %ld allocation points were covered", n - 1);
  assert_no_leaks();
}

/* ---- the injector's contract -------------------------------------------- */

static const wd_local_key K1 = {"k1"}, K2 = {"k2"}, K3 = {"k3"};
static int v1, v2, v3;

static int one_shot_main(wd_task *self, void *arg) {
  /* Nothing else allocates on this thread meanwhile, so the next
   * allocations are exactly these sets. */
  wd_alloc_fail_after(2);
  cr_assert_eq(wd_local_set(self, &K1, &v1), 0);
  cr_assert_not(wd_alloc_failed(), "fired early");
  cr_assert_eq(wd_local_set(self, &K2, &v2), WD_ENOMEM);
  cr_assert(wd_alloc_failed());
  cr_assert_null(wd_local_get(self, &K2), "a failed set changed the value");
  cr_assert_eq(wd_task_error(self)->code, WD_ENOMEM);
  /* One-shot: allocations succeed again. */
  cr_assert_eq(wd_local_set(self, &K3, &v3), 0);
  cr_assert_eq(wd_local_set(self, &K2, &v2), 0);
  cr_assert_eq(wd_local_get(self, &K2), &v2);
  cr_assert(wd_alloc_failed(), "the flag stays until the next arming");

  wd_alloc_fail_after(1);
  cr_assert_not(wd_alloc_failed(), "arming clears the flag");
  wd_alloc_fail_after(0); /* disarmed before it fired */
  static const wd_local_key keys[100];
  for (int i = 0; i < 100; i++)
    cr_assert_eq(wd_local_set(self, &keys[i], &v1), 0);
  cr_assert_not(wd_alloc_failed());
  return 0;
}

Test(alloc, fail_after_is_one_shot_and_zero_disarms) {
  cr_assert_eq(wd_run(one_shot_main, NULL), 0);
  assert_no_leaks();
}

static int noop(wd_task *self, void *arg) { return 0; }

static int count_main(wd_task *self, void *arg) {
  wd_group g;
  wd_group_enter(self, &g, NULL);
  cr_assert_eq(wd_spawn(&g, noop, NULL, NULL), 0);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  /* The next spawn takes the stack just freed from the cache: still an
   * allocation attempt. */
  long before = wd_alloc_count();
  wd_group_enter(self, &g, NULL);
  cr_assert_eq(wd_spawn(&g, noop, NULL, NULL), 0);
  cr_assert_gt(wd_alloc_count(), before, "a cached stack was not counted");
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);

  before = wd_alloc_count();
  long live = wd_alloc_live();
  cr_assert_eq(wd_local_set(self, &K1, &v1), 0);
  cr_assert_eq(wd_alloc_count(), before + 1);
  cr_assert_eq(wd_alloc_live(), live + 1, "a local node is a heap block");
  return 0;
}

Test(alloc, count_increases_with_blocks_and_stacks) {
  long before = wd_alloc_count();
  cr_assert_eq(wd_run(count_main, NULL), 0);
  cr_assert_gt(wd_alloc_count(), before + 3, "count went %ld -> %ld", before,
               wd_alloc_count());
  assert_no_leaks();
}
