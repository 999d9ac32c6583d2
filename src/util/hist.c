/* The log-bucket histogram (see hist.h).  Bucket index: for v < 16 it is v;
 * otherwise with e = floor(log2 v) >= 4, the top four bits after the
 * leading one pick the sub-bucket: index = (e - 3) * 16 + ((v >> (e - 4))
 * & 15).  This is continuous with the linear part (v = 16 lands on index
 * 16) and needs one count-leading-zeros per sample. */
#include "hist.h"

#include <string.h>

static int index_of(uint64_t v) {
  if (v < WD__HIST_SUB) return (int)v;
  int e = 63 - __builtin_clzll(v);
  if (e >= WD__HIST_TOP) return WD__HIST_BUCKETS - 1;
  return (e - 3) * WD__HIST_SUB + (int)((v >> (e - 4)) & (WD__HIST_SUB - 1));
}

/* The smallest value of bucket i, and its width. */
static void bucket_range(int i, uint64_t *lo, uint64_t *width) {
  if (i < WD__HIST_SUB) {
    *lo = (uint64_t)i;
    *width = 1;
    return;
  }
  int e = i / WD__HIST_SUB + 3;
  uint64_t sub = (uint64_t)(i % WD__HIST_SUB);
  *width = (uint64_t)1 << (e - 4);
  *lo = ((uint64_t)1 << e) + sub * *width;
}

void wd__hist_add(wd__hist *h, int64_t v) {
  if (v < 0) v = 0;
  if (h->count == 0 || v < h->min) h->min = v;
  if (h->count == 0 || v > h->max) h->max = v;
  h->count++;
  h->sum = v > INT64_MAX - h->sum ? INT64_MAX : h->sum + v;
  h->bucket[index_of((uint64_t)v)]++;
}

int64_t wd__hist_quantile(const wd__hist *h, double q) {
  if (!h->count) return 0;
  if (q <= 0) return h->min;
  if (q >= 1) return h->max;
  /* The rank of the wanted sample, 1-based: the smallest value with at
   * least q of the samples at or below it. */
  uint64_t rank = (uint64_t)(q * (double)h->count);
  if ((double)rank < q * (double)h->count) rank++;
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (int i = 0; i < WD__HIST_BUCKETS; i++) {
    seen += h->bucket[i];
    if (seen < rank) continue;
    uint64_t lo, width;
    bucket_range(i, &lo, &width);
    int64_t mid = (int64_t)(lo + width / 2);
    if (i == WD__HIST_BUCKETS - 1 || mid > h->max) mid = h->max;
    return mid < h->min ? h->min : mid;
  }
  return h->max;
}

void wd__hist_summarize(const wd__hist *h, wd__hist_summary *out) {
  memset(out, 0, sizeof *out);
  out->count = h->count;
  if (!h->count) return;
  out->mean = (double)h->sum / (double)h->count;
  out->min = h->min;
  out->max = h->max;
  out->p50 = wd__hist_quantile(h, 0.50);
  out->p90 = wd__hist_quantile(h, 0.90);
  out->p99 = wd__hist_quantile(h, 0.99);
}

void wd__hist_merge(wd__hist *dst, const wd__hist *src) {
  if (!src->count) return;
  if (!dst->count || src->min < dst->min) dst->min = src->min;
  if (!dst->count || src->max > dst->max) dst->max = src->max;
  dst->count += src->count;
  dst->sum = src->sum > INT64_MAX - dst->sum ? INT64_MAX : dst->sum + src->sum;
  for (int i = 0; i < WD__HIST_BUCKETS; i++)
    dst->bucket[i] += src->bucket[i];
}
