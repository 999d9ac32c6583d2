/* wd_retry: back-off schedules recorded on the virtual clock and checked
 * against the policy, the predicate, the limits (attempts, elapsed time,
 * the caller's deadline, the shared budget), cancellation, the hook and
 * the final error.
 *
 * The call under test is a "flaky" body that fails its first `fail`
 * attempts (forever when fail < 0) and records when each attempt started.
 * It takes no time itself, so the gap between two attempts is exactly the
 * back-off that was slept. */
#include <string.h>

#include "helpers.h"

#define MAXA 64

typedef struct flaky {
  int fail;      /* attempts that fail; < 0: all */
  int rc;        /* their code; default -EIO */
  bool detailed; /* record a detailed error with it */
  int rc_after;  /* code after `switch_at` attempts, if set */
  int switch_at;
  wd_time work;               /* each attempt sleeps this long first */
  wd_cancel_scope *cancel_in; /* cancel this scope during attempt cancel_at */
  int cancel_at;
  int n;            /* attempts made */
  wd_time at[MAXA]; /* when each started */
} flaky;

static int flaky_call(wd_task *self, void *arg) {
  flaky *f = arg;
  int i = f->n++;
  if (i < MAXA) f->at[i] = wd_now(self);
  if (f->cancel_in && f->cancel_at == i + 1) wd_cancel(f->cancel_in);
  if (f->work) {
    int rc = wd_sleep(self, f->work);
    if (rc) return rc;
  }
  if (f->fail >= 0 && i >= f->fail) return 0;
  int rc = f->rc ? f->rc : -EIO;
  if (f->switch_at && i + 1 >= f->switch_at) rc = f->rc_after;
  if (f->detailed)
    return wd_fail(self, rc, "backend said no (attempt %d)", i + 1);
  return rc;
}

/* One wd_retry_call() from the root task, optionally inside a scope. */
typedef struct scene {
  wd_retry_opts opts;
  flaky f;
  wd_time deadline; /* an enclosing move_on_after timeout, 0 = none */
  bool cancel_first;
  wd_time cancel_after; /* cancel the enclosing scope this late (0 = no) */
  int rc;
  wd_time at;
  char err[1024];
  wd_retry_stats stats;
} scene;

typedef struct canceller {
  wd_cancel_scope *s;
  wd_time after;
} canceller;

static int cancel_later(wd_task *self, void *arg) {
  canceller *c = arg;
  int rc = wd_sleep(self, c->after);
  if (rc == 0) wd_cancel(c->s);
  return 0;
}

static int scene_main(wd_task *self, void *arg) {
  scene *sc = arg;
  wd_retry r;
  cr_assert_eq(wd_retry_init(&r, &sc->opts), 0);
  wd_group g;
  cr_assert_eq(wd_group_enter(self, &g, NULL), 0);
  wd_cancel_scope s;
  cr_assert_eq(wd_move_on_after(self, &s, sc->deadline), 0);
  canceller c = {&s, sc->cancel_after};
  if (sc->cancel_after) {
    cr_assert_eq(wd_spawn(&g, cancel_later, &c, NULL), 0);
    /* The canceller's sleep belongs in g, not in s: it is already spawned,
     * and it lives in g's scope. */
  }
  if (sc->cancel_first) wd_cancel(&s);
  if (sc->f.cancel_at) sc->f.cancel_in = &s;
  sc->rc = wd_retry_call(self, &r, flaky_call, &sc->f);
  sc->at = wd_now(self);
  wd_error_format(wd_task_error(self), sc->err, sizeof sc->err);
  wd_cancel_scope_exit(self, &s, sc->rc);
  wd_group_cancel(&g);
  cr_assert_eq(wd_group_exit(self, &g, 0), 0);
  wd_retry_stats_get(&r, &sc->stats);
  return 0;
}

static void play(scene *sc) { cr_assert_eq(run_virtual(scene_main, sc), 0); }

/* The gap before attempt i (from 1). */
static wd_time gap(const scene *sc, int i) {
  return sc->f.at[i] - sc->f.at[i - 1];
}

/* ---- schedules --------------------------------------------------------- */

Test(retry, a_first_success_makes_one_attempt) {
  scene sc = {.f = {.fail = 0}};
  play(&sc);
  cr_assert_eq(sc.rc, 0);
  cr_assert_eq(sc.f.n, 1);
  cr_assert_eq(sc.at, 0);
  cr_assert_eq(sc.stats.calls, 1);
  cr_assert_eq(sc.stats.attempts, 1);
  cr_assert_eq(sc.stats.successes, 1);
  cr_assert_eq(sc.stats.retries, 0);
  assert_no_leaks();
}

Test(retry, no_jitter_follows_the_exponential_schedule_exactly) {
  scene sc = {.opts = {.max_attempts = 7,
                       .base_delay = 100 * WD_MSEC,
                       .max_delay = WD_SEC,
                       .multiplier = 2,
                       .jitter = WD_JITTER_NONE},
              .f = {.fail = 6}};
  play(&sc);
  cr_assert_eq(sc.rc, 0);
  cr_assert_eq(sc.f.n, 7);
  wd_time want[] = {0, 100, 300, 700, 1500, 2500, 3500};
  for (int i = 0; i < 7; i++)
    cr_assert_eq(sc.f.at[i], want[i] * WD_MSEC, "attempt %d at %lld", i + 1,
                 (long long)sc.f.at[i]);
  cr_assert_eq(sc.stats.retries, 6);
  assert_no_leaks();
}

Test(retry, defaults_are_three_attempts_from_100ms_doubling) {
  scene sc = {.opts = {.jitter = WD_JITTER_NONE}, .f = {.fail = -1}};
  play(&sc);
  cr_assert_eq(sc.rc, -EIO);
  cr_assert_eq(sc.f.n, 3);
  cr_assert_eq(gap(&sc, 1), 100 * WD_MSEC);
  cr_assert_eq(gap(&sc, 2), 200 * WD_MSEC);
  assert_no_leaks();
}

Test(retry, a_small_base_delay_still_grows_by_the_multiplier) {
  /* d_k = base * multiplier^(k-1) in whole ns: 1, 1.5, 2.25, 3.375,
   * 5.06, 7.59 ns -> 1, 1, 2, 3, 5, 7.  Truncating each step instead
   * would stay at 1 ns for ever. */
  scene sc = {.opts = {.max_attempts = 7,
                       .base_delay = 1,
                       .max_delay = WD_SEC,
                       .multiplier = 1.5,
                       .jitter = WD_JITTER_NONE},
              .f = {.fail = -1}};
  play(&sc);
  cr_assert_eq(sc.f.n, 7);
  wd_time want[] = {1, 1, 2, 3, 5, 7};
  for (int i = 1; i < 7; i++)
    cr_assert_eq(gap(&sc, i), want[i - 1], "back-off %d: %lld ns", i,
                 (long long)gap(&sc, i));
  assert_no_leaks();
}

static wd_time dmin(wd_time cap, double x) {
  return x >= (double)cap ? cap : (wd_time)x;
}

/* Run the schedule of `jitter` for many seeds and check every gap. */
static void check_jitter(wd_jitter jitter) {
  const wd_time base = 10 * WD_MSEC, cap = 500 * WD_MSEC;
  const double mult = 3;
  wd_time first_gap = -1;
  bool varied = false;
  for (uint64_t seed = 1; seed <= 40; seed++) {
    scene sc = {.opts = {.max_attempts = 10,
                         .base_delay = base,
                         .max_delay = cap,
                         .multiplier = mult,
                         .jitter = jitter,
                         .seed = seed},
                .f = {.fail = -1}};
    play(&sc);
    cr_assert_eq(sc.f.n, 10);
    wd_time dk = base, prev = base;
    for (int i = 1; i < 10; i++) {
      wd_time g = gap(&sc, i), lo, hi;
      switch (jitter) {
      case WD_JITTER_FULL:
        lo = 0, hi = dk;
        break;
      case WD_JITTER_EQUAL:
        lo = dk / 2, hi = dk;
        break;
      default: /* decorrelated */
        lo = base;
        hi = dmin(cap, (double)prev * mult);
        break;
      }
      cr_assert(g >= lo && g <= hi,
                "seed %llu, retry %d: slept %lld, not in [%lld, %lld]",
                (unsigned long long)seed, i, (long long)g, (long long)lo,
                (long long)hi);
      prev = g;
      dk = dmin(cap, (double)dk * mult);
    }
    if (first_gap < 0)
      first_gap = gap(&sc, 3);
    else if (gap(&sc, 3) != first_gap)
      varied = true;
  }
  cr_assert(varied, "the jitter is random across seeds");
}

Test(retry, full_jitter_stays_within_zero_and_the_delay) {
  check_jitter(WD_JITTER_FULL);
  assert_no_leaks();
}

Test(retry, equal_jitter_stays_within_half_and_the_delay) {
  check_jitter(WD_JITTER_EQUAL);
  assert_no_leaks();
}

Test(retry, decorrelated_jitter_stays_within_base_and_three_times_previous) {
  check_jitter(WD_JITTER_DECORRELATED);
  assert_no_leaks();
}

Test(retry, decorrelated_jitter_is_capped_after_the_draw) {
  /* min(max_delay, uniform in [base, 3 * previous]): with base 10 ms and
   * max 20 ms, every draw is from a range reaching at least 30 ms, so at
   * least half of the sleeps are exactly max_delay.  Drawing within
   * [base, max_delay] instead would almost never give max_delay, and
   * retry twice as often as the policy says once at the cap. */
  int at_cap = 0, n = 0;
  for (uint64_t seed = 1; seed <= 40; seed++) {
    scene sc = {.opts = {.max_attempts = 10,
                         .base_delay = 10 * WD_MSEC,
                         .max_delay = 20 * WD_MSEC,
                         .multiplier = 3,
                         .jitter = WD_JITTER_DECORRELATED,
                         .seed = seed},
                .f = {.fail = -1}};
    play(&sc);
    for (int i = 1; i < 10; i++, n++) {
      wd_time g = gap(&sc, i);
      cr_assert(g >= 10 * WD_MSEC && g <= 20 * WD_MSEC, "slept %lld",
                (long long)g);
      at_cap += g == 20 * WD_MSEC;
    }
  }
  cr_assert_gt(at_cap, n / 3, "%d of %d sleeps at max_delay", at_cap, n);
  assert_no_leaks();
}

Test(retry, the_same_seed_gives_the_same_schedule) {
  scene a = {.opts = {.max_attempts = 8, .seed = 42}, .f = {.fail = -1}};
  scene b = a;
  play(&a);
  play(&b);
  for (int i = 0; i < 8; i++)
    cr_assert_eq(a.f.at[i], b.f.at[i]);
  assert_no_leaks();
}

/* ---- the predicate and the final error ---------------------------------- */

static bool only_eagain(int rc, const wd_error *err, void *arg) {
  ++*(int *)arg;
  return rc == -EAGAIN;
}

Test(retry, a_non_retryable_first_error_passes_through_untouched) {
  int asked = 0;
  scene sc = {.opts = {.retryable = only_eagain, .arg = &asked},
              .f = {.fail = -1, .rc = -EIO, .detailed = true}};
  play(&sc);
  cr_assert_eq(sc.rc, -EIO);
  cr_assert_eq(sc.f.n, 1);
  cr_assert_eq(asked, 1);
  const char *want = "EIO: backend said no (attempt 1) (";
  cr_assert_eq(strncmp(sc.err, want, strlen(want)), 0, "%s", sc.err);
  cr_assert_null(strstr(sc.err, "retry '"), "%s", sc.err);
  cr_assert_eq(sc.stats.not_retryable, 1);
  assert_no_leaks();
}

Test(retry, a_non_retryable_later_error_stops_and_says_after_how_many) {
  int asked = 0;
  scene sc = {.opts = {.retryable = only_eagain,
                       .arg = &asked,
                       .max_attempts = 10,
                       .jitter = WD_JITTER_NONE},
              .f = {.fail = -1,
                    .rc = -EAGAIN,
                    .switch_at = 3,
                    .rc_after = -EIO,
                    .detailed = true}};
  play(&sc);
  cr_assert_eq(sc.rc, -EIO);
  cr_assert_eq(sc.f.n, 3);
  cr_assert_eq(sc.at, 300 * WD_MSEC);
  cr_assert(strstr(sc.err, "EIO: retry 'retry': gave up after 3 attempts "
                           "(not retryable); 0.300 s in back-off"),
            "%s", sc.err);
  cr_assert(strstr(sc.err, "caused by: EIO: backend said no (attempt 3)"), "%s",
            sc.err);
  assert_no_leaks();
}

Test(retry, by_default_einval_and_ecanceled_are_not_retried) {
  scene a = {.f = {.fail = -1, .rc = WD_EINVAL}};
  play(&a);
  cr_assert_eq(a.rc, WD_EINVAL);
  cr_assert_eq(a.f.n, 1);
  scene b = {.f = {.fail = -1, .rc = WD_ECANCELED}};
  play(&b);
  cr_assert_eq(b.rc, WD_ECANCELED);
  cr_assert_eq(b.f.n, 1);
  /* But a timeout inside the call (not the caller's) is retried. */
  scene c = {.f = {.fail = -1, .rc = WD_ETIMEDOUT}};
  play(&c);
  cr_assert_eq(c.rc, WD_ETIMEDOUT);
  cr_assert_eq(c.f.n, 3);
  assert_no_leaks();
}

Test(retry, giving_up_says_how_many_attempts_and_carries_the_last_cause) {
  scene sc = {.opts = {.name = "fetch user",
                       .max_attempts = 4,
                       .jitter = WD_JITTER_NONE},
              .f = {.fail = -1, .rc = -ECONNREFUSED, .detailed = true}};
  play(&sc);
  cr_assert_eq(sc.rc, -ECONNREFUSED, "the code is the last attempt's");
  cr_assert_eq(sc.f.n, 4);
  cr_assert_eq(sc.at, 700 * WD_MSEC);
  cr_assert(strstr(sc.err, "ECONNREFUSED: retry 'fetch user': gave up "
                           "after 4 attempts (max_attempts 4); 0.700 s in "
                           "back-off"),
            "%s", sc.err);
  cr_assert(strstr(sc.err, "\ncaused by: ECONNREFUSED: backend said no "
                           "(attempt 4)"),
            "%s", sc.err);
  cr_assert_null(strstr(sc.err, "attempt 3"), "only the last cause: %s",
                 sc.err);
  cr_assert_eq(sc.stats.gave_up, 1);
  assert_no_leaks();
}

Test(retry, a_bare_code_gets_a_cause_naming_it) {
  scene sc = {.opts = {.max_attempts = 2, .jitter = WD_JITTER_NONE},
              .f = {.fail = -1, .rc = -EIO}};
  play(&sc);
  cr_assert(strstr(sc.err, "caused by: EIO: attempt 2: i/o error"), "%s",
            sc.err);
  assert_no_leaks();
}

/* ---- limits: max_elapsed, the caller's deadline ------------------------ */

Test(retry, max_elapsed_stops_before_a_back_off_that_would_start_late) {
  /* Back-offs of 1, 2, 4 s.  Attempts at 0, 1, 3: the next would start at
   * 7 s, past max_elapsed 3 s.  An attempt exactly at the limit is fine. */
  scene sc = {.opts = {.max_attempts = 10,
                       .base_delay = WD_SEC,
                       .max_elapsed = 3 * WD_SEC,
                       .jitter = WD_JITTER_NONE},
              .f = {.fail = -1}};
  play(&sc);
  cr_assert_eq(sc.f.n, 3);
  cr_assert_eq(sc.at, 3 * WD_SEC, "gives up at once, without sleeping");
  cr_assert(strstr(sc.err, "gave up after 3 attempts (a back-off of 4.000 s "
                           "would start attempt 4 past max_elapsed 3.000 s)"),
            "%s", sc.err);
  cr_assert_eq(sc.stats.deadline, 1);
  scene one_less = sc;
  one_less.opts.max_elapsed = 3 * WD_SEC - 1;
  one_less.f = (flaky){.fail = -1};
  play(&one_less);
  cr_assert_eq(one_less.f.n, 2);
  cr_assert_eq(one_less.at, WD_SEC);
  assert_no_leaks();
}

Test(retry, max_elapsed_counts_the_attempts_own_time) {
  /* Each attempt takes 1 s, back-off 1 s: attempts start at 0, 2, 4. */
  scene sc = {.opts = {.max_attempts = 10,
                       .base_delay = WD_SEC,
                       .multiplier = 1,
                       .max_elapsed = 4 * WD_SEC,
                       .jitter = WD_JITTER_NONE},
              .f = {.fail = -1, .work = WD_SEC}};
  play(&sc);
  cr_assert_eq(sc.f.n, 3);
  cr_assert_eq(sc.f.at[2], 4 * WD_SEC);
  cr_assert_eq(sc.at, 5 * WD_SEC);
  assert_no_leaks();
}

Test(retry, a_back_off_past_the_deadline_fails_at_once_with_the_last_cause) {
  /* Back-offs of 100, 200 ms; the caller's deadline is at 250 ms.  After
   * attempt 2 (at 100 ms) the next back-off would end at 300 ms: give up
   * then, at 100 ms, not at the deadline. */
  scene sc = {
      .opts = {.name = "db", .max_attempts = 10, .jitter = WD_JITTER_NONE},
      .f = {.fail = -1, .rc = -ECONNRESET, .detailed = true},
      .deadline = 250 * WD_MSEC};
  play(&sc);
  cr_assert_eq(sc.rc, -ECONNRESET);
  cr_assert_eq(sc.f.n, 2);
  cr_assert_eq(sc.at, 100 * WD_MSEC);
  cr_assert(strstr(sc.err, "retry 'db': gave up after 2 attempts (a back-off "
                           "of 0.200 s would end past the deadline, 0.150 s "
                           "away); 0.100 s in back-off"),
            "%s", sc.err);
  cr_assert(strstr(sc.err, "caused by: ECONNRESET: backend said no "
                           "(attempt 2)"),
            "%s", sc.err);
  cr_assert_eq(sc.stats.deadline, 1);
  assert_no_leaks();
}

Test(retry, the_deadline_edge) {
  /* A back-off that would end exactly at the deadline leaves no time for
   * the attempt: give up.  One ns later, and it sleeps and tries. */
  scene at = {.opts = {.max_attempts = 3, .jitter = WD_JITTER_NONE},
              .f = {.fail = -1},
              .deadline = 300 * WD_MSEC};
  play(&at);
  cr_assert_eq(at.f.n, 2);
  cr_assert_eq(at.at, 100 * WD_MSEC);
  scene after = at;
  after.f = (flaky){.fail = -1};
  after.deadline = 300 * WD_MSEC + 1;
  play(&after);
  cr_assert_eq(after.f.n, 3);
  cr_assert_eq(after.f.at[2], 300 * WD_MSEC);
  assert_no_leaks();
}

/* ---- cancellation ------------------------------------------------------- */

Test(retry, a_cancelled_caller_is_not_called) {
  scene sc = {.f = {.fail = -1}, .cancel_first = true};
  play(&sc);
  cr_assert_eq(sc.rc, WD_ECANCELED);
  cr_assert_eq(sc.f.n, 0);
  assert_no_leaks();
}

Test(retry, no_retry_after_the_caller_is_cancelled_during_an_attempt) {
  /* Attempt 2 takes 1 s; the caller is cancelled 0.5 s into it. */
  scene sc = {.opts = {.max_attempts = 10, .jitter = WD_JITTER_NONE},
              .f = {.fail = -1, .work = WD_SEC},
              .cancel_after = WD_SEC + 100 * WD_MSEC + WD_SEC / 2};
  play(&sc);
  cr_assert_eq(sc.rc, WD_ECANCELED);
  cr_assert_eq(sc.f.n, 2);
  cr_assert_eq(sc.at, WD_SEC + 100 * WD_MSEC + WD_SEC / 2);
  cr_assert_eq(sc.stats.cancelled, 1);
  assert_no_leaks();
}

Test(retry, no_retry_when_the_call_fails_otherwise_after_a_cancel) {
  /* The caller is cancelled during attempt 1, which reaches no checkpoint
   * and fails with its own code: that is returned as it is. */
  scene sc = {.opts = {.jitter = WD_JITTER_NONE},
              .f = {.fail = -1, .rc = -EIO, .cancel_at = 1}};
  play(&sc);
  cr_assert_eq(sc.rc, -EIO);
  cr_assert_eq(sc.f.n, 1);
  assert_no_leaks();
}

Test(retry, a_cancel_during_the_back_off_stops_at_once) {
  scene sc = {.opts = {.name = "poll", .jitter = WD_JITTER_NONE},
              .f = {.fail = -1, .detailed = true},
              .cancel_after = 50 * WD_MSEC};
  play(&sc);
  cr_assert_eq(sc.rc, WD_ECANCELED);
  cr_assert_eq(sc.f.n, 1);
  cr_assert_eq(sc.at, 50 * WD_MSEC);
  cr_assert(strstr(sc.err, "WD_ECANCELED: retry 'poll': cancelled in the "
                           "back-off after 1 attempt"),
            "%s", sc.err);
  cr_assert(strstr(sc.err, "caused by: EIO: backend said no (attempt 1)"), "%s",
            sc.err);
  assert_no_leaks();
}

/* ---- the hook ----------------------------------------------------------- */

typedef struct hooked {
  int n;
  uint32_t attempt[8];
  int rc[8];
  wd_time delay[8], at[8];
  bool had_err[8];
} hooked;

static void on_retry(wd_task *self, const wd_retry_info *info, void *arg) {
  hooked *h = arg;
  cr_assert_str_eq(info->name, "hooked");
  h->attempt[h->n] = info->attempt;
  h->rc[h->n] = info->rc;
  h->delay[h->n] = info->delay;
  h->at[h->n] = wd_now(self);
  h->had_err[h->n] = info->err != NULL;
  h->n++;
}

Test(retry, the_hook_is_told_before_each_back_off) {
  hooked h = {0};
  scene sc = {.opts = {.name = "hooked",
                       .max_attempts = 4,
                       .jitter = WD_JITTER_NONE,
                       .on_retry = on_retry,
                       .arg = &h},
              .f = {.fail = 2, .rc = -EPIPE, .detailed = true}};
  play(&sc);
  cr_assert_eq(sc.rc, 0);
  cr_assert_eq(h.n, 2, "not after the success");
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(h.attempt[i], (uint32_t)i + 1);
    cr_assert_eq(h.rc[i], -EPIPE);
    cr_assert(h.had_err[i]);
    cr_assert_eq(h.at[i], sc.f.at[i], "before the back-off");
  }
  cr_assert_eq(h.delay[0], 100 * WD_MSEC);
  cr_assert_eq(h.delay[1], 200 * WD_MSEC);
  assert_no_leaks();
}

/* ---- the retry budget ---------------------------------------------------- */

typedef struct budget_scene {
  wd_retry_budget b;
  flaky ok, bad, bad2;
  int rc_bad, rc_bad2;
  wd_retry_budget_stats st;
  char err[1024];
} budget_scene;

static int budget_main(wd_task *self, void *arg) {
  budget_scene *bs = arg;
  cr_assert_eq(wd_retry_budget_init(&bs->b,
                                    &(wd_retry_budget_opts){
                                        .name = "backend",
                                        .ratio = 0.2,
                                        .min_retries = WD_RETRY_BUDGET_NO_MIN}),
               0);
  wd_retry good, flaky_r;
  cr_assert_eq(wd_retry_init(&good, &(wd_retry_opts){.budget = &bs->b}), 0);
  cr_assert_eq(
      wd_retry_init(&flaky_r, &(wd_retry_opts){.max_attempts = 10,
                                               .jitter = WD_JITTER_NONE,
                                               .budget = &bs->b}),
      0);
  /* Nine good calls and one bad one: 10 calls allow 2 retries. */
  for (int i = 0; i < 9; i++)
    cr_assert_eq(wd_retry_call(self, &good, flaky_call, &bs->ok), 0);
  bs->rc_bad = wd_retry_call(self, &flaky_r, flaky_call, &bs->bad);
  wd_error_format(wd_task_error(self), bs->err, sizeof bs->err);
  wd_retry_budget_stats_get(&bs->b, &bs->st);
  /* Ten seconds later the window is empty: a lone call allows 0.2
   * retries, so one retry (0 < 0.2) and no second. */
  cr_assert_eq(wd_sleep(self, 10 * WD_SEC), 0);
  bs->rc_bad2 = wd_retry_call(self, &flaky_r, flaky_call, &bs->bad2);
  return 0;
}

Test(retry, the_budget_stops_retries_beyond_its_fraction_of_calls) {
  budget_scene bs = {
      .ok = {.fail = 0}, .bad = {.fail = -1}, .bad2 = {.fail = -1}};
  cr_assert_eq(run_virtual(budget_main, &bs), 0);
  cr_assert_eq(bs.rc_bad, -EIO);
  cr_assert_eq(bs.bad.n, 3, "2 retries, then the budget says no");
  cr_assert(strstr(bs.err, "gave up after 3 attempts (retry budget 'backend' "
                           "exhausted: 2 retries for 10 calls in its "
                           "window)"),
            "%s", bs.err);
  cr_assert_eq(bs.st.window_calls, 10);
  cr_assert_eq(bs.st.window_retries, 2);
  cr_assert_eq(bs.st.denied, 1);
  cr_assert_eq(bs.bad2.n, 2);
  assert_no_leaks();
}

static int budget_min_main(wd_task *self, void *arg) {
  flaky *f = arg;
  wd_retry_budget b;
  cr_assert_eq(
      wd_retry_budget_init(&b, &(wd_retry_budget_opts){.min_retries = 3}), 0);
  wd_retry r;
  cr_assert_eq(
      wd_retry_init(&r, &(wd_retry_opts){.max_attempts = 100, .budget = &b}),
      0);
  cr_assert_eq(wd_retry_call(self, &r, flaky_call, f), -EIO);
  /* 1 call: 3 + 0.2 retries allowed, so 4. */
  cr_assert_eq(f->n, 5);
  wd_retry_budget_stats st;
  wd_retry_budget_stats_get(&b, &st);
  cr_assert_eq(st.calls, 1);
  cr_assert_eq(st.retries, 4);
  return 0;
}

Test(retry, the_budgets_minimum_lets_a_quiet_caller_retry) {
  flaky f = {.fail = -1};
  cr_assert_eq(run_virtual(budget_min_main, &f), 0);
  assert_no_leaks();
}

/* A retry that is not going to happen - its back-off would pass
 * max_elapsed or the caller's deadline - must not spend the budget. */
static int budget_unspent_main(wd_task *self, void *arg) {
  flaky *f = arg;
  wd_retry_budget b;
  cr_assert_eq(wd_retry_budget_init(&b, NULL), 0);
  wd_retry r;
  cr_assert_eq(wd_retry_init(&r, &(wd_retry_opts){.base_delay = WD_SEC,
                                                  .max_elapsed = WD_SEC / 2,
                                                  .jitter = WD_JITTER_NONE,
                                                  .budget = &b}),
               0);
  cr_assert_eq(wd_retry_call(self, &r, flaky_call, &f[0]), -EIO);
  cr_assert_eq(f[0].n, 1);
  cr_assert_eq(wd_retry_init(&r, &(wd_retry_opts){.base_delay = WD_SEC,
                                                  .jitter = WD_JITTER_NONE,
                                                  .budget = &b}),
               0);
  wd_cancel_scope s;
  cr_assert_eq(wd_move_on_after(self, &s, WD_SEC / 2), 0);
  cr_assert_eq(wd_retry_call(self, &r, flaky_call, &f[1]), -EIO);
  cr_assert_eq(wd_cancel_scope_exit(self, &s, 0), 0);
  cr_assert_eq(f[1].n, 1);
  wd_retry_budget_stats st;
  wd_retry_budget_stats_get(&b, &st);
  cr_assert_eq(st.calls, 2);
  cr_assert_eq(st.retries, 0, "no retry happened, none was withdrawn");
  cr_assert_eq(st.denied, 0);
  return 0;
}

Test(retry, a_retry_that_will_not_happen_does_not_spend_the_budget) {
  flaky f[2] = {{.fail = -1}, {.fail = -1}};
  cr_assert_eq(run_virtual(budget_unspent_main, f), 0);
  assert_no_leaks();
}

/* ---- arguments ----------------------------------------------------------- */

static int args_main(wd_task *self, void *arg) {
  wd_retry r;
  cr_assert_eq(wd_retry_init(NULL, NULL), WD_EINVAL);
  cr_assert_eq(wd_retry_init(&r, &(wd_retry_opts){.base_delay = -1}),
               WD_EINVAL);
  cr_assert_str_eq(wd_task_error(self)->msg, "retry 'retry': negative "
                                             "base_delay");
  cr_assert_eq(wd_retry_init(&r, &(wd_retry_opts){.name = "x",
                                                  .base_delay = WD_SEC,
                                                  .max_delay = WD_MSEC}),
               WD_EINVAL);
  cr_assert_str_eq(wd_task_error(self)->msg,
                   "retry 'x': max_delay 0.001 s is below base_delay 1.000 s");
  cr_assert_eq(wd_retry_init(&r, &(wd_retry_opts){.multiplier = 0.5}),
               WD_EINVAL);
  cr_assert_eq(wd_retry_init(&r, &(wd_retry_opts){.jitter = 9}), WD_EINVAL);
  wd_retry_budget b = {0};
  cr_assert_eq(wd_retry_init(&r, &(wd_retry_opts){.budget = &b}), WD_EINVAL);
  cr_assert_eq(wd_retry_call(self, &r, flaky_call, NULL), WD_EINVAL,
               "a failed init leaves it unusable");
  cr_assert_eq(wd_retry_budget_init(&b, &(wd_retry_budget_opts){.ratio = -1}),
               WD_EINVAL);
  cr_assert_eq(wd_retry_budget_init(&b, &(wd_retry_budget_opts){.window = 5}),
               WD_EINVAL);
  cr_assert_eq(wd_retry_init(&r, NULL), 0);
  cr_assert_eq(wd_retry_call(self, &r, NULL, NULL), WD_EINVAL);
  cr_assert_str_eq(wd_task_error(self)->msg, "retry call: NULL function");
  cr_assert_eq(wd_retry_call(self, NULL, flaky_call, NULL), WD_EINVAL);
  cr_assert_eq(wd_retry_call(NULL, &r, flaky_call, NULL), WD_EINVAL);
  return 0;
}

Test(retry, bad_arguments_are_einval_with_a_message) {
  cr_assert_eq(run_virtual(args_main, NULL), 0);
  assert_no_leaks();
}

/* Retry and timeout stack: a per-attempt timeout inside a retry. */
static int timed_attempt(wd_task *self, void *arg) {
  return wd_timeout_call(self, 100 * WD_MSEC, "attempt", flaky_call, arg);
}

static int stacked_main(wd_task *self, void *arg) {
  flaky *f = arg;
  wd_retry r;
  cr_assert_eq(wd_retry_init(&r, &(wd_retry_opts){.max_attempts = 3,
                                                  .jitter = WD_JITTER_NONE}),
               0);
  int rc = wd_retry_call(self, &r, timed_attempt, f);
  cr_assert_eq(rc, WD_ETIMEDOUT);
  char buf[1024];
  wd_error_format(wd_task_error(self), buf, sizeof buf);
  cr_assert(strstr(buf, "gave up after 3 attempts (max_attempts 3)"), "%s",
            buf);
  cr_assert(strstr(buf, "caused by: WD_ETIMEDOUT: attempt: timed out after "
                        "0.100 s"),
            "%s", buf);
  /* 3 attempts of 100 ms, back-offs 100 and 200 ms. */
  cr_assert_eq(wd_now(self), 600 * WD_MSEC);
  return 0;
}

Test(retry, per_attempt_timeouts_are_retried) {
  flaky f = {.fail = -1, .work = WD_SEC};
  cr_assert_eq(run_virtual(stacked_main, &f), 0);
  cr_assert_eq(f.n, 3);
  assert_no_leaks();
}
