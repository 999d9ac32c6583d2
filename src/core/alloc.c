/* The one allocator of warden.
 *
 * Every heap block warden takes goes through wd__malloc and friends, and
 * every stack acquisition through wd__alloc_fail_point, so that tests can
 * count live blocks and make the Nth allocation fail.  The counters are
 * atomic because wd_runtime_post() allocates on foreign threads.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "internal.h"

atomic_long wd__alloc_countdown;
atomic_long wd__alloc_attempts;
static atomic_int fail_fired;
static atomic_long live_blocks;

void wd_alloc_fail_after(long n) {
  atomic_store(&fail_fired, 0);
  atomic_store(&wd__alloc_countdown, n > 0 ? n : 0);
}

int wd_alloc_failed(void) { return atomic_load(&fail_fired); }
long wd_alloc_live(void) { return atomic_load(&live_blocks); }
long wd_alloc_count(void) { return atomic_load(&wd__alloc_attempts); }

int wd__alloc_fail_point_slow(void) {
  if (atomic_fetch_sub(&wd__alloc_countdown, 1) == 1) {
    atomic_store(&fail_fired, 1);
    return 1;
  }
  return 0;
}

void *wd__malloc(size_t n) {
  if (wd__alloc_fail_point()) return NULL;
  void *p = malloc(n ? n : 1);
  if (p) atomic_fetch_add_explicit(&live_blocks, 1, memory_order_relaxed);
  return p;
}

void *wd__calloc(size_t n, size_t size) {
  if (wd__alloc_fail_point()) return NULL;
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (p) atomic_fetch_add_explicit(&live_blocks, 1, memory_order_relaxed);
  return p;
}

void *wd__realloc(void *p, size_t n) {
  if (!p) return wd__malloc(n);
  if (wd__alloc_fail_point()) return NULL;
  return realloc(p, n ? n : 1);
}

void wd__free(void *p) {
  if (!p) return;
  atomic_fetch_sub_explicit(&live_blocks, 1, memory_order_relaxed);
  free(p);
}
