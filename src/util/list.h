/* Intrusive circular doubly linked lists on wd_link.
 *
 * A list head is a wd_link whose next_/prev_ point to itself when empty.
 * Header-only: every operation is a few pointer writes and is inlined.
 */
#ifndef WD_UTIL_LIST_H
#define WD_UTIL_LIST_H

#include <stddef.h>

#include "warden/types.h"

#define wd__container_of(ptr, type, field)                                     \
  ((type *)((char *)(ptr)-offsetof(type, field)))

static inline void wd__list_init(wd_link *h) { h->next_ = h->prev_ = h; }

static inline int wd__list_empty(const wd_link *h) { return h->next_ == h; }

static inline void wd__list_push_back(wd_link *h, wd_link *n) {
  n->prev_ = h->prev_;
  n->next_ = h;
  h->prev_->next_ = n;
  h->prev_ = n;
}

static inline void wd__list_unlink(wd_link *n) {
  n->prev_->next_ = n->next_;
  n->next_->prev_ = n->prev_;
  n->next_ = n->prev_ = NULL;
}

static inline wd_link *wd__list_pop_front(wd_link *h) {
  wd_link *n = h->next_;
  if (n == h) return NULL;
  wd__list_unlink(n);
  return n;
}

#define wd__list_each(it, head)                                                \
  for (wd_link *it = (head)->next_; it != (head); it = it->next_)

#endif
