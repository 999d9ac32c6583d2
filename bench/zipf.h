/* zipf.h - deterministic random numbers and Zipf(s) sampling, shared by
 * the cache's hit-rate benchmark (bench/cache.c) and its policy test
 * (tests/test-cache-policy.c), so that both replay the same traces.
 * Header-only; seed with rnd_state. */
#ifndef WD_BENCH_ZIPF_H
#define WD_BENCH_ZIPF_H

#include <stdint.h>
#include <stdlib.h>

static uint64_t rnd_state;

static inline uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (rnd_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static inline double rnd01(void) {
  return (double)(rnd() >> 11) / 9007199254740992.0;
}

/* x^e for x >= 1, without libm (the programs do not link it): e^(e ln x),
 * with ln by the atanh series on the mantissa and exp by its Taylor series
 * after halving the argument down. */
static inline double xpow(double x, double e) {
  int k = 0;
  while (x >= 2) {
    x /= 2;
    k++;
  }
  double t = (x - 1) / (x + 1), t2 = t * t, term = t, ln = 0;
  for (int i = 1; i < 60; i += 2) {
    ln += term / i;
    term *= t2;
  }
  double y = e * (2 * ln + k * 0.69314718055994530942);
  int halvings = 0;
  while (y > 0.5) {
    y /= 2;
    halvings++;
  }
  double r = 1, f = 1;
  for (int i = 1; i < 20; i++) {
    f *= y / i;
    r += f;
  }
  while (halvings--)
    r *= r;
  return r;
}

/* Zipf(s) over n keys: the cumulative distribution, sampled by bisection. */
typedef struct zipf {
  double *cdf;
  size_t n;
} zipf;

static inline void zipf_init(zipf *z, size_t n, double s) {
  z->n = n;
  z->cdf = malloc(n * sizeof *z->cdf);
  double sum = 0;
  for (size_t i = 0; i < n; i++) {
    sum += 1.0 / xpow((double)(i + 1), s);
    z->cdf[i] = sum;
  }
  for (size_t i = 0; i < n; i++)
    z->cdf[i] /= sum;
}

static inline uint64_t zipf_next(const zipf *z) {
  double u = rnd01();
  size_t lo = 0, hi = z->n - 1;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (z->cdf[mid] < u)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

#endif
