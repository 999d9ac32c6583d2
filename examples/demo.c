/* demo: a group of tasks under a deadline, and what happens when one fails.
 *
 * Round 1 runs five "fetches" of different lengths under a 250 ms deadline:
 * the fast ones finish, the slow ones are cancelled when the deadline fires,
 * and the group still waits for every task before it returns.
 * Round 2 makes two fetches fail: the first failure cancels the siblings,
 * and the group returns WD_EGROUP with both failures listed.
 * Round 3 shows wd_blocking() and the task tree that wd_dump() prints.
 */
#include <stdio.h>
#include <unistd.h>

#include <warden.h>

typedef struct fetch {
  const char *name;
  wd_time takes;
  int fails_with; /* 0: succeeds */
} fetch;

static int do_fetch(wd_task *self, void *arg) {
  fetch *f = arg;
  wd_time start = wd_now(self);
  int rc = wd_sleep(self, f->takes);
  if (rc) {
    printf("  %-8s cancelled after %3lld ms (%s)\n", f->name,
           (long long)((wd_now(self) - start) / WD_MSEC), wd_err_name(rc));
    return rc;
  }
  if (f->fails_with)
    return wd_fail(self, f->fails_with, "fetching %s: server said no", f->name);
  printf("  %-8s done in %3lld ms\n", f->name, (long long)(f->takes / WD_MSEC));
  return 0;
}

static int run_round(wd_task *self, fetch *fs, int n, wd_time deadline) {
  wd_cancel_scope scope;
  wd_group g;
  wd_move_on_after(self, &scope, deadline);
  wd_group_enter(self, &g, &(wd_group_opts){.name = "fetchers"});
  for (int i = 0; i < n; i++)
    wd_spawn(&g, do_fetch, &fs[i], &(wd_spawn_opts){.name = fs[i].name});
  int rc = wd_group_exit(self, &g, 0);
  return wd_cancel_scope_exit(self, &scope, rc);
}

static int slow_syscall(void *arg) {
  (void)arg;
  usleep(20 * 1000); /* a synchronous call, on a pool thread */
  return 0;
}

static int dumper(wd_task *self, void *arg) {
  (void)arg;
  wd_yield(self); /* let the others block first */
  wd_dump(stdout);
  return 0;
}

static int blocking_task(wd_task *self, void *arg) {
  (void)arg;
  return wd_blocking(self, slow_syscall, NULL, WD_BLOCKING_WAIT);
}

static int demo(wd_task *self, void *arg) {
  (void)arg;
  fetch round1[] = {{"users", 50 * WD_MSEC, 0},
                    {"orders", 120 * WD_MSEC, 0},
                    {"stock", 200 * WD_MSEC, 0},
                    {"reports", 900 * WD_MSEC, 0},
                    {"archive", 2 * WD_SEC, 0}};
  printf("round 1: five fetches, deadline 250 ms\n");
  int rc = run_round(self, round1, 5, 250 * WD_MSEC);
  printf("  -> %s: the deadline was swallowed by move_on_after\n\n",
         wd_err_name(rc));

  fetch round2[] = {{"users", 30 * WD_MSEC, WD_EPERM},
                    {"orders", 30 * WD_MSEC, WD_EAGAIN},
                    {"stock", 500 * WD_MSEC, 0}};
  printf("round 2: two fetches fail\n");
  rc = run_round(self, round2, 3, WD_SEC);
  printf("  -> %s, and the error says:\n", wd_err_name(rc));
  wd_error_print(stdout, wd_task_error(self));
  wd_error_clear(self);

  printf("\nround 3: the task tree while work is in flight\n");
  wd_group g;
  wd_group_enter(self, &g, &(wd_group_opts){.name = "round3"});
  wd_spawn(&g, blocking_task, NULL, &(wd_spawn_opts){.name = "offload"});
  wd_spawn(&g, do_fetch, &round1[0], &(wd_spawn_opts){.name = "sleeper"});
  wd_spawn(&g, dumper, NULL, &(wd_spawn_opts){.name = "dumper"});
  return wd_group_exit(self, &g, 0);
}

int main(void) {
  int rc = wd_run(demo, NULL);
  printf("\nwd_run returned %s\n", wd_err_name(rc));
  return rc == 0 ? 0 : 1;
}
