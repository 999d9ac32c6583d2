/* The log-bucket histogram behind every reported distribution: quantiles
 * within a sixteenth of the truth, exact count/sum/min/max, merging. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "util/hist.h"

Test(hist, empty_reports_zeros) {
  wd__hist h = {0};
  wd__hist_summary s;
  wd__hist_summarize(&h, &s);
  cr_assert_eq(s.count, 0);
  cr_assert_eq(s.p50, 0);
  cr_assert_eq(s.max, 0);
  cr_assert_eq(wd__hist_quantile(&h, 0.5), 0);
}

Test(hist, small_values_are_exact) {
  wd__hist h = {0};
  for (int v = 0; v < 16; v++)
    wd__hist_add(&h, v);
  cr_assert_eq(wd__hist_quantile(&h, 0.5), 7, "8th of 16 samples");
  cr_assert_eq(wd__hist_quantile(&h, 0.0), 0);
  cr_assert_eq(wd__hist_quantile(&h, 1.0), 15);
  cr_assert_eq(h.sum, 120);
}

/* Every quantile of a uniform and a heavy-tailed sample is within 1/16 of
 * the exact order statistic. */
static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static void check_quantiles(int64_t *v, int n) {
  wd__hist h = {0};
  for (int i = 0; i < n; i++)
    wd__hist_add(&h, v[i]);
  qsort(v, (size_t)n, sizeof *v, cmp64);
  const double qs[] = {0.01, 0.1, 0.5, 0.9, 0.99, 0.999};
  for (size_t k = 0; k < sizeof qs / sizeof *qs; k++) {
    int rank = (int)(qs[k] * n + 0.999999);
    int64_t exact = v[rank - 1], got = wd__hist_quantile(&h, qs[k]);
    double err = exact ? (double)llabs(got - exact) / (double)exact : 0;
    cr_assert_leq(err, 1.0 / 16, "q%.3f: got %lld, exact %lld", qs[k],
                  (long long)got, (long long)exact);
  }
  cr_assert_eq(h.min, v[0]);
  cr_assert_eq(h.max, v[n - 1]);
  cr_assert_eq(h.count, (uint64_t)n);
}

Test(hist, quantiles_within_a_sixteenth_uniform) {
  enum { N = 100000 };
  static int64_t v[N];
  uint64_t x = 42;
  for (int i = 0; i < N; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    v[i] = (int64_t)((x >> 20) % 5000000000ull); /* 0-5 s in ns */
  }
  check_quantiles(v, N);
}

Test(hist, quantiles_within_a_sixteenth_heavy_tail) {
  enum { N = 100000 };
  static int64_t v[N];
  uint64_t x = 7;
  for (int i = 0; i < N; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    int shift = (int)((x >> 59) % 40); /* magnitudes from 1 ns to 18 min */
    v[i] = (int64_t)(((x >> 16) & 0xffff) << shift) + 1;
  }
  check_quantiles(v, N);
}

Test(hist, huge_and_negative_values_are_clamped_not_lost) {
  wd__hist h = {0};
  wd__hist_add(&h, -5);
  wd__hist_add(&h, INT64_MAX);
  wd__hist_add(&h, INT64_MAX);
  cr_assert_eq(h.count, 3);
  cr_assert_eq(h.min, 0);
  cr_assert_eq(h.max, INT64_MAX);
  cr_assert_eq(h.sum, INT64_MAX, "the sum saturates");
  cr_assert_eq(wd__hist_quantile(&h, 0.9), INT64_MAX);
}

Test(hist, merge_equals_adding_everything_to_one) {
  wd__hist a = {0}, b = {0}, all = {0};
  for (int i = 1; i <= 1000; i++) {
    wd__hist_add(i % 3 ? &a : &b, i * 1000);
    wd__hist_add(&all, i * 1000);
  }
  wd__hist_merge(&a, &b);
  cr_assert_eq(a.count, all.count);
  cr_assert_eq(a.sum, all.sum);
  cr_assert_eq(a.min, all.min);
  cr_assert_eq(a.max, all.max);
  cr_assert_eq(wd__hist_quantile(&a, 0.99), wd__hist_quantile(&all, 0.99));
  wd__hist_summary s;
  wd__hist_summarize(&a, &s);
  cr_assert_float_eq(s.mean, 500500.0, 1e-6);
}
