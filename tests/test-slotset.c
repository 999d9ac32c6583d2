/* The slot set behind the stack cache (src/core/slotset.h), against a plain
 * array of flags: lowest and highest member, the look-ahead, growth across
 * tree levels with members present, and a failed growth that changes
 * nothing. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "core/slotset.h"
#include "warden.h"

static size_t ref_first(const bool *in, size_t cap) {
  for (size_t i = 0; i < cap; i++)
    if (in[i]) return i;
  return SIZE_MAX;
}

static size_t ref_last(const bool *in, size_t cap) {
  for (size_t i = cap; i-- > 0;)
    if (in[i]) return i;
  return SIZE_MAX;
}

static void check_ends(wd__slotset *s, const bool *in, size_t cap) {
  size_t lo = ref_first(in, cap), hi = ref_last(in, cap);
  cr_assert_eq(wd__slotset_empty(s), lo == SIZE_MAX);
  if (lo == SIZE_MAX) return;
  cr_assert_eq(wd__slotset_last(s), hi, "last %zu, expected %zu",
               wd__slotset_last(s), hi);
  cr_assert_eq(wd__slotset_first(s), lo, "first %zu, expected %zu",
               wd__slotset_first(s), lo);
}

/* Random adds and removes over [0, cap), checked after each step. */
static void churn(wd__slotset *s, bool *in, size_t cap, int steps,
                  unsigned *x) {
  for (int k = 0; k < steps; k++) {
    *x = *x * 1103515245u + 12345u;
    /* Mostly near one end, so that words fill and empty completely. */
    size_t i = (*x >> 8) % (k & 1 ? cap : 200 < cap ? 200 : cap);
    if (in[i])
      wd__slotset_del(s, i);
    else
      wd__slotset_add(s, i);
    in[i] = !in[i];
    check_ends(s, in, cap);
  }
}

Test(slotset, matches_a_plain_array_while_growing_through_four_levels) {
  wd__slotset s = {0};
  size_t caps[] = {64, 100, 4096, 5000, 300000};
  bool *in = calloc(300000, sizeof *in);
  unsigned x = 7;
  for (size_t c = 0; c < sizeof caps / sizeof *caps; c++) {
    cr_assert_eq(wd__slotset_grow(&s, caps[c]), 0);
    check_ends(&s, in, caps[c]); /* members survive the growth */
    churn(&s, in, caps[c], 3000, &x);
  }
  cr_assert_eq(s.depth, 4, "300000 slots need 4 levels");
  /* Empty it from the top down. */
  for (size_t i = 300000; i-- > 0;) {
    if (!in[i]) continue;
    cr_assert_eq(wd__slotset_last(&s), i);
    wd__slotset_del(&s, i);
  }
  cr_assert(wd__slotset_empty(&s));
  wd__slotset_free(&s);
  free(in);
}

Test(slotset, near_next_finds_later_members_of_the_same_word_only) {
  wd__slotset s = {0};
  cr_assert_eq(wd__slotset_grow(&s, 256), 0);
  wd__slotset_add(&s, 3);
  wd__slotset_add(&s, 5);
  wd__slotset_add(&s, 9);
  wd__slotset_add(&s, 70);
  cr_assert_eq(wd__slotset_near_next(&s, 3, 1), 5);
  cr_assert_eq(wd__slotset_near_next(&s, 3, 2), 9);
  cr_assert_eq(wd__slotset_near_next(&s, 3, 3), SIZE_MAX, "70: next word");
  cr_assert_eq(wd__slotset_near_next(&s, 9, 1), SIZE_MAX);
  cr_assert_eq(wd__slotset_near_next(&s, 0, 1), 3, "0 itself not a member");
  wd__slotset_free(&s);
}

Test(slotset, a_growth_that_runs_out_of_memory_changes_nothing) {
  wd__slotset s = {0};
  cr_assert_eq(wd__slotset_grow(&s, 64), 0);
  wd__slotset_add(&s, 10);
  wd__slotset_add(&s, 63);
  for (long n = 1; n <= 3; n++) { /* each of the three new levels */
    wd_alloc_fail_after(n);
    cr_assert_eq(wd__slotset_grow(&s, 100000), WD_ENOMEM);
    wd_alloc_fail_after(0);
    cr_assert_eq(s.cap, 64);
    cr_assert_eq(s.depth, 1);
    cr_assert_eq(wd__slotset_first(&s), 10);
    cr_assert_eq(wd__slotset_last(&s), 63);
  }
  cr_assert_eq(wd__slotset_grow(&s, 100000), 0);
  cr_assert_eq(wd__slotset_first(&s), 10);
  cr_assert_eq(wd__slotset_last(&s), 63);
  wd__slotset_add(&s, 99999);
  cr_assert_eq(wd__slotset_last(&s), 99999);
  wd__slotset_free(&s);
}

Test(slotset, refuses_more_slots_than_four_levels_hold) {
  wd__slotset s = {0};
  cr_assert_eq(wd__slotset_grow(&s, ((size_t)1 << 24) + 1), WD_ENOMEM);
  cr_assert_eq(s.cap, 0);
}
