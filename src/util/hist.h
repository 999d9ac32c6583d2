/* A log-bucket histogram of durations (or any non-negative integers):
 * fixed size, no allocation, O(1) to add, and quantiles within 1/16 of the
 * true value (HdrHistogram's idea at small scale).  Used wherever warden
 * reports a distribution - resource lifetimes, pool wait and hold times -
 * instead of keeping every sample.
 *
 * Values below 16 have a bucket each; above, each power of two is split
 * into 16 equal sub-buckets, so a bucket is at most 1/16 of its values
 * wide.  The last bucket catches everything from 2^47 up (39 hours in ns);
 * min, max and the exact sum are kept beside the buckets. */
#ifndef WD_UTIL_HIST_H
#define WD_UTIL_HIST_H

#include <stdint.h>

#define WD__HIST_SUB 16 /* sub-buckets per power of two */
#define WD__HIST_TOP 47 /* values >= 2^47 share the last bucket */
#define WD__HIST_BUCKETS ((WD__HIST_TOP - 3) * WD__HIST_SUB)

typedef struct wd__hist {
  uint64_t count;
  int64_t sum, min, max; /* sum saturates; min/max valid when count > 0 */
  uint32_t bucket[WD__HIST_BUCKETS];
} wd__hist;

/* A summary for reports: what users read off a distribution. */
typedef struct wd__hist_summary {
  uint64_t count;
  double mean;
  int64_t min, p50, p90, p99, max;
} wd__hist_summary;

void wd__hist_add(wd__hist *h, int64_t v); /* negative values count as 0 */
/* The value at quantile q in [0, 1] (the bucket's midpoint, clamped to
 * [min, max]); 0 when empty. */
int64_t wd__hist_quantile(const wd__hist *h, double q);
void wd__hist_summarize(const wd__hist *h, wd__hist_summary *out);
/* Add every sample of src to dst. */
void wd__hist_merge(wd__hist *dst, const wd__hist *src);

#endif
