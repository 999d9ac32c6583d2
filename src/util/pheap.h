/* An intrusive pairing heap of wd_timer_node, ordered by (when, seq).
 *
 * Pairing heaps insert in O(1) and remove in amortised O(log n), need no
 * memory of their own (a sleeping task costs no allocation) and are short to
 * write.  The sequence number makes equal deadlines fire in arming order.
 * Nodes hold child/next/prev links where prev points to the left sibling or,
 * for a first child, to the parent.
 */
#ifndef WD_UTIL_PHEAP_H
#define WD_UTIL_PHEAP_H

#include <stddef.h>

#include "warden/types.h"

typedef struct wd__pheap {
  wd_timer_node *root;
  size_t count;
} wd__pheap;

static inline int wd__pheap_less(const wd_timer_node *a,
                                 const wd_timer_node *b) {
  return a->when_ < b->when_ || (a->when_ == b->when_ && a->seq_ < b->seq_);
}

/* Link two roots; the smaller becomes the parent. */
static inline wd_timer_node *wd__pheap_meld(wd_timer_node *a,
                                            wd_timer_node *b) {
  if (!a) return b;
  if (!b) return a;
  if (wd__pheap_less(b, a)) {
    wd_timer_node *t = a;
    a = b;
    b = t;
  }
  b->prev_ = a;
  b->next_ = a->child_;
  if (a->child_) a->child_->prev_ = b;
  a->child_ = b;
  a->next_ = a->prev_ = NULL;
  return a;
}

/* Two-pass merge of a sibling list into one tree. */
static inline wd_timer_node *wd__pheap_merge_pairs(wd_timer_node *first) {
  wd_timer_node *acc = NULL, *n = first;
  wd_timer_node *pairs = NULL; /* stack of melded pairs via next_ */
  while (n) {
    wd_timer_node *a = n, *b = n->next_;
    n = b ? b->next_ : NULL;
    a->next_ = a->prev_ = NULL;
    if (b) b->next_ = b->prev_ = NULL;
    wd_timer_node *m = wd__pheap_meld(a, b);
    m->next_ = pairs;
    pairs = m;
  }
  while (pairs) {
    wd_timer_node *next = pairs->next_;
    pairs->next_ = NULL;
    acc = wd__pheap_meld(acc, pairs);
    pairs = next;
  }
  return acc;
}

static inline void wd__pheap_insert(wd__pheap *h, wd_timer_node *n) {
  n->child_ = n->next_ = n->prev_ = NULL;
  h->root = wd__pheap_meld(h->root, n);
  h->count++;
}

static inline wd_timer_node *wd__pheap_min(const wd__pheap *h) {
  return h->root;
}

static inline void wd__pheap_remove(wd__pheap *h, wd_timer_node *n) {
  if (n == h->root) {
    h->root = wd__pheap_merge_pairs(n->child_);
  } else {
    /* Detach n from its sibling list, then meld its subtree back. */
    if (n->prev_->child_ == n)
      n->prev_->child_ = n->next_;
    else
      n->prev_->next_ = n->next_;
    if (n->next_) n->next_->prev_ = n->prev_;
    n->next_ = n->prev_ = NULL;
    h->root = wd__pheap_meld(h->root, wd__pheap_merge_pairs(n->child_));
  }
  if (h->root) h->root->prev_ = NULL;
  n->child_ = n->next_ = n->prev_ = NULL;
  h->count--;
}

#endif
