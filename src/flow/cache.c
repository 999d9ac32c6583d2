/* Cache: single-flight loads, expiry and refresh-ahead over a W-TinyLFU
 * bounded table (the policy is in cache-policy.c).
 *
 * An entry is a key (copied into it) in an open-addressing hash table
 * (linear probing, deletion by backward shift, no tombstones).  It holds
 * a value box, or a cached error (negative caching), or only a load in
 * flight - a placeholder that single-flights a miss; an entry with none
 * of the three is removed at once.  Value boxes are reference counted, so
 * that a value handed to a task survives its eviction: the cache holds one
 * reference, each wd_cache_ref another, and the last release destroys it.
 * Entries are reference counted too (the table's and a flight's), so a
 * load whose entry was invalidated or evicted can still read its key.
 *
 * A flight is one run of the loader, in a task of the cache's group.  Its
 * waiters are records in the getters' frames, linked to it; the loader's
 * outcome is written into each record (a value reference, or the code and
 * the message), so a woken getter reads only its own frame - the cache
 * may be gone by then.  A waiter that is cancelled unlinks itself; the
 * last one to leave a miss's flight abandons it: the flight is detached
 * from its entry (a later get starts afresh) and its task is cancelled.
 * Writes bump the entry's generation, and a flight stores its result only
 * if the generation is the one it started from: a put or an invalidation
 * while a load runs wins over the load.
 *
 * Everything a miss needs is allocated before its getter parks: the entry
 * and room for it in the table and in the expiry heap, the flight, the box
 * for a pointer value, the task.  So a load that succeeded can always be
 * stored, and an allocation failure is an error of the get that met it,
 * with nothing changed.  Later, only two things can lack memory: growing
 * the sketch (it then stays as it was) and the load task's own cancel
 * scope (the load then fails with WD_ENOMEM, which its waiters get and
 * which is never cached as a negative entry).
 *
 * Expiry is exact: entries that expire sit in a min-heap by the time they
 * are due to be dropped, and an expiry task in the cache's group sleeps
 * until the earliest one, so a value's resources are released when its
 * time is up, read or not (on the virtual clock, at the very nanosecond).
 * Reads check the time too, so nothing expired is served in between.  An
 * entry that never expires costs no clock read on a hit.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../util/hist.h"
#include "../util/list.h"
#include "../util/mem.h"
#include "cache-internal.h"
#include "warden.h"

#define CACHE_MAGIC 0x43414348u /* "CACH" */
#define NO_HEAP SIZE_MAX
#define MSG_MAX 256
#define KEY_SHOWN 40 /* bytes of a key shown in messages */

/* ---- records -------------------------------------------------------------
 */

typedef struct box {
  size_t refs;
  void *value;
  size_t size;
  void (*free_fn)(void *value, void *arg); /* NULL: nothing to destroy */
  void *free_arg;
  _Alignas(max_align_t) unsigned char data[]; /* a copied value */
} box;

struct flight;

/* Cold fields first; what a hit reads - the node's link and queue, the
 * check time, the value, the key - together at the end, so that a hit on
 * a short key touches one cache line of its entry (usually). */
typedef struct entry {
  struct flight *fl; /* the load in flight for this key, or NULL */
  char *neg_msg;     /* a cached error's message (negative entry) */
  int neg_rc;        /* a cached error, 0 = none */
  uint32_t refs;     /* the table's, and the flight's */
  bool in_table;
  uint64_t gen;       /* bumped by every write */
  wd_time expires;    /* served until then */
  wd_time refresh_at; /* a read from then on refreshes */
  wd_time drop_at;    /* dropped then (the expiry heap's key) */
  size_t hidx;        /* in the expiry heap, or NO_HEAP */
  wd__cnode node;     /* in the policy while it holds a value or an error */
  /* min(expires, refresh_at): before then a hit needs no more checks, and
   * when it is WD_TIME_NEVER no clock read either. */
  wd_time check_at;
  box *val;
  size_t klen;
  unsigned char key[];
} entry;

typedef struct flight {
  wd_cache *c;
  entry *e;
  wd_cancel_scope *scope; /* the load's, while its loader runs */
  wd_task *task;          /* the load's task, once it runs */
  wd_link waiters;
  size_t nwaiters;
  wd_cache_loader fn;
  void *arg;
  box *pbox; /* made in advance for a pointer value */
  uint64_t gen;
  bool refresh;   /* started by refresh-ahead: nobody waits for it */
  bool abandoned; /* its last waiter left: cancelled */
} flight;

typedef struct waiter {
  wd_wait w;
  wd_link link;
  flight *fl;
  bool done, stale;
  int rc;
  box *val;
  char msg[MSG_MAX];
} waiter;

typedef struct slot {
  uint64_t hash;
  entry *e; /* NULL: empty */
} slot;

struct wd_cache {
  wd_group group_;
  wd_task *owner_;
  uint32_t magic_;
  bool closing_, dead_;
  /* options */
  wd_cache_loader loader_;
  void *arg_;
  void (*value_free_)(void *value, void *arg);
  wd_cache_weigher weigher_;
  bool by_weight_;
  size_t capacity_;
  wd_time ttl_, refresh_after_, refresh_retry_, max_stale_, neg_ttl_;
  wd_time load_timeout_;
  uint64_t seed_;
  /* the table */
  slot *slots_;
  size_t mask_, used_;
  /* the expiry heap, with room for every entry of the table */
  entry **heap_;
  size_t nheap_, capheap_;
  /* the expiry task */
  wd_wait jw_;
  bool jparked_;
  wd_time jdue_;
  wd__cpolicy pol_;
  /* counters */
  size_t entries_, loading_;
  uint64_t hits_, misses_, joined_, loads_, load_ok_, load_failed_;
  uint64_t load_cancelled_, refreshes_, refresh_failed_, neg_hits_;
  uint64_t stale_, evictions_, evicted_weight_, expirations_, puts_;
  uint64_t invalidations_;
  wd_time load_time_;
  wd__hist load_hist_;
  char name_[32];
  char what_[64]; /* "cache '<name>' load", for the load timeout */
};

#define C_OK(c) ((c) && (c)->magic_ == CACHE_MAGIC)

static inline wd_time sat_add(wd_time a, wd_time d) {
  return a > WD_TIME_NEVER - d ? WD_TIME_NEVER : a + d;
}

static inline void retime(entry *e) {
  e->check_at = e->expires < e->refresh_at ? e->expires : e->refresh_at;
}

static inline entry *entry_of(wd__cnode *n) {
  return wd__container_of(n, entry, node);
}

/* A key as messages show it: printable bytes as they are, others as
 * \xNN, cut at KEY_SHOWN bytes with "...". */
static void key_repr(char *buf, size_t n, const unsigned char *k, size_t klen) {
  size_t o = 0, i = 0;
  for (; i < klen && i < KEY_SHOWN && o + 5 < n; i++) {
    unsigned ch = k[i];
    if (ch >= 0x20 && ch < 0x7f && ch != '\'' && ch != '\\')
      buf[o++] = (char)ch;
    else
      o += (size_t)snprintf(buf + o, n - o, "\\x%02x", ch);
  }
  if (i < klen && o + 4 < n) {
    memcpy(buf + o, "...", 3);
    o += 3;
  }
  buf[o < n ? o : n - 1] = '\0';
}

#define KEYBUF (KEY_SHOWN * 4 + 8)

/* ---- values --------------------------------------------------------------
 */

static box *box_new_ptr(wd_cache *c) {
  box *b = wd__malloc(sizeof *b);
  if (!b) return NULL;
  b->refs = 1;
  b->value = NULL;
  b->size = 0;
  b->free_fn = c->value_free_;
  b->free_arg = c->arg_;
  return b;
}

static box *box_new_copy(const void *bytes, size_t size) {
  if (size > SIZE_MAX - sizeof(box)) return NULL;
  box *b = wd__malloc(sizeof *b + size);
  if (!b) return NULL;
  b->refs = 1;
  b->value = b->data;
  b->size = size;
  b->free_fn = NULL;
  b->free_arg = NULL;
  if (size) memcpy(b->data, bytes, size);
  return b;
}

static void box_unref(box *b) {
  if (--b->refs) return;
  if (b->free_fn) b->free_fn(b->value, b->free_arg);
  wd__free(b);
}

static void fill_ref(wd_cache_ref *out, box *b, bool stale) {
  out->value = b->value;
  out->size = b->size;
  out->stale = stale;
  out->box_ = b;
}

void wd_cache_ref_release(wd_cache_ref *ref) {
  if (!ref || !ref->box_) return;
  box_unref(ref->box_);
  memset(ref, 0, sizeof *ref);
}

int wd_cache_load_copy(wd_cache_load *out, const void *bytes, size_t size) {
  if (!out || (!bytes && size))
    return wd_fail(NULL, WD_EINVAL, "wd_cache_load_copy: NULL %s",
                   !out ? "load" : "bytes");
  box *b = box_new_copy(bytes, size);
  if (!b)
    return wd_fail(NULL, WD_ENOMEM,
                   "wd_cache_load_copy: no memory for a copy of %zu bytes",
                   size);
  if (out->box_) wd__free(out->box_);
  out->box_ = b;
  out->value = b->data;
  out->size = size;
  return 0;
}

/* ---- the table -----------------------------------------------------------
 */

static inline __attribute__((always_inline)) entry *
find(const wd_cache *c, uint64_t h, const void *key, size_t klen) {
  size_t i = (size_t)h & c->mask_;
  for (;;) {
    const slot *s = &c->slots_[i];
    if (!s->e) return NULL;
    if (s->hash == h && s->e->klen == klen && wd__ckey_eq(s->e->key, key, klen))
      return s->e;
    i = (i + 1) & c->mask_;
  }
}

static void place(slot *slots, size_t mask, uint64_t h, entry *e) {
  size_t i = (size_t)h & mask;
  while (slots[i].e)
    i = (i + 1) & mask;
  slots[i].hash = h;
  slots[i].e = e;
}

/* Make room for one more entry in the table and in the expiry heap.
 * The table grows at 3/4 full; if it cannot, it fills up to 7/8. */
static int reserve(wd_cache *c) {
  size_t cap = c->mask_ + 1;
  if ((c->used_ + 1) * 4 > cap * 3) {
    slot *ns = cap <= SIZE_MAX / 2 / sizeof(slot)
                   ? wd__calloc(cap * 2, sizeof(slot))
                   : NULL;
    if (ns) {
      for (size_t i = 0; i < cap; i++)
        if (c->slots_[i].e)
          place(ns, cap * 2 - 1, c->slots_[i].hash, c->slots_[i].e);
      wd__free(c->slots_);
      c->slots_ = ns;
      c->mask_ = cap * 2 - 1;
    } else if ((c->used_ + 1) * 8 > cap * 7) {
      return WD_ENOMEM;
    }
  }
  if (c->capheap_ < c->used_ + 1) {
    size_t n = c->capheap_ ? c->capheap_ * 2 : 16;
    entry **nh = n <= SIZE_MAX / sizeof(entry *)
                     ? wd__realloc(c->heap_, n * sizeof(entry *))
                     : NULL;
    if (!nh) return WD_ENOMEM;
    c->heap_ = nh;
    c->capheap_ = n;
  }
  return 0;
}

static void table_unlink(wd_cache *c, entry *e) {
  size_t i = (size_t)e->node.hash & c->mask_;
  while (c->slots_[i].e != e)
    i = (i + 1) & c->mask_;
  c->slots_[i].e = NULL;
  /* Backward shift: pull up each following entry that may live at i. */
  size_t j = i;
  for (;;) {
    j = (j + 1) & c->mask_;
    if (!c->slots_[j].e) break;
    size_t home = (size_t)c->slots_[j].hash & c->mask_;
    bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (stays) continue;
    c->slots_[i] = c->slots_[j];
    c->slots_[j].e = NULL;
    i = j;
  }
  c->used_--;
}

static void entry_unref(entry *e) {
  if (--e->refs == 0) wd__free(e);
}

/* A new, empty entry in the table (the caller gives it a flight or a
 * value before it yields).  Returns NULL for want of memory. */
static entry *entry_new(wd_cache *c, uint64_t h, const void *key, size_t klen) {
  if (klen > SIZE_MAX - sizeof(entry)) return NULL;
  entry *e = wd__malloc(sizeof *e + klen);
  if (!e) return NULL;
  if (reserve(c)) {
    wd__free(e);
    return NULL;
  }
  memset(e, 0, sizeof *e);
  e->node.hash = h;
  e->refs = 1;
  e->in_table = true;
  e->expires = e->refresh_at = e->drop_at = e->check_at = WD_TIME_NEVER;
  e->hidx = NO_HEAP;
  e->klen = klen;
  if (klen) memcpy(e->key, key, klen);
  place(c->slots_, c->mask_, h, e);
  c->used_++;
  return e;
}

/* ---- the expiry heap -----------------------------------------------------
 */

static inline void heap_set(wd_cache *c, size_t i, entry *e) {
  c->heap_[i] = e;
  e->hidx = i;
}

static void heap_up(wd_cache *c, size_t i) {
  entry *e = c->heap_[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (c->heap_[p]->drop_at <= e->drop_at) break;
    heap_set(c, i, c->heap_[p]);
    i = p;
  }
  heap_set(c, i, e);
}

static void heap_down(wd_cache *c, size_t i) {
  entry *e = c->heap_[i];
  for (;;) {
    size_t l = 2 * i + 1;
    if (l >= c->nheap_) break;
    size_t m =
        l + 1 < c->nheap_ && c->heap_[l + 1]->drop_at < c->heap_[l]->drop_at
            ? l + 1
            : l;
    if (c->heap_[m]->drop_at >= e->drop_at) break;
    heap_set(c, i, c->heap_[m]);
    i = m;
  }
  heap_set(c, i, e);
}

static void heap_del(wd_cache *c, entry *e) {
  size_t i = e->hidx;
  if (i == NO_HEAP) return;
  e->hidx = NO_HEAP;
  entry *last = c->heap_[--c->nheap_];
  if (last == e) return;
  heap_set(c, i, last);
  heap_up(c, i);
  heap_down(c, last->hidx);
}

static void poke_janitor(wd_cache *c, wd_time due) {
  if (c->jparked_ && due < c->jdue_) {
    c->jparked_ = false;
    wd_wake(&c->jw_, 0);
  }
}

/* Put e in the heap at its drop_at (or take it out for WD_TIME_NEVER).
 * Room was reserved when e entered the table. */
static void schedule(wd_cache *c, entry *e) {
  if (e->drop_at == WD_TIME_NEVER) {
    heap_del(c, e);
    return;
  }
  if (e->hidx == NO_HEAP) {
    heap_set(c, c->nheap_++, e);
    heap_up(c, e->hidx);
  } else {
    heap_up(c, e->hidx);
    heap_down(c, e->hidx);
  }
  if (e->hidx == 0) poke_janitor(c, e->drop_at);
}

/* ---- dropping entries ----------------------------------------------------
 */

/* Release what e holds (value or error), out of the policy and the heap;
 * it stays in the table (for a flight) until settle() or the caller. */
static void empty_entry(wd_cache *c, entry *e) {
  wd__cpolicy_remove(&c->pol_, &e->node);
  heap_del(c, e);
  if (e->val || e->neg_rc) c->entries_--;
  if (e->neg_rc) {
    wd__free(e->neg_msg);
    e->neg_msg = NULL;
    e->neg_rc = 0;
  }
  e->expires = e->refresh_at = e->drop_at = e->check_at = WD_TIME_NEVER;
  if (e->val) {
    box *b = e->val;
    e->val = NULL;
    box_unref(b); /* may run value_free: e is consistent by now */
  }
}

static void remove_entry(wd_cache *c, entry *e) {
  e->gen++; /* a flight in progress must not store into it */
  if (e->in_table) {
    table_unlink(c, e);
    e->in_table = false;
  }
  empty_entry(c, e);
  entry_unref(e);
}

/* An entry with nothing in it and no load in flight has no reason to be. */
static void settle(wd_cache *c, entry *e) {
  if (e->in_table && !e->val && !e->neg_rc && !e->fl) remove_entry(c, e);
}

static void on_evict(wd__cpolicy *p, wd__cnode *n) {
  wd_cache *c = wd__container_of(p, wd_cache, pol_);
  entry *e = entry_of(n);
  c->evictions_++;
  c->evicted_weight_ += n->weight;
  remove_entry(c, e);
}

/* Time is up for e (the expiry task, or a read that got there first). */
static void expire(wd_cache *c, entry *e) {
  c->expirations_++;
  if (e->fl) {
    empty_entry(c, e); /* its load's waiters still need the key */
  } else {
    remove_entry(c, e);
  }
}

/* ---- storing -------------------------------------------------------------
 */

static size_t weigh(wd_cache *c, entry *e, box *b) {
  if (!c->by_weight_) return 1;
  size_t w =
      c->weigher_
          ? c->weigher_(e->key, e->klen, b->value, b->size, c->arg_)
          : (e->klen > SIZE_MAX - b->size ? SIZE_MAX : e->klen + b->size);
  return w ? w : 1;
}

/* Give e its place in the policy with weight w (new or not). */
static void admit_entry(wd_cache *c, entry *e, size_t w) {
  e->refs++; /* the policy may evict e itself */
  if (e->node.queue == WD__CQ_NONE)
    wd__cpolicy_add(&c->pol_, &e->node, w);
  else
    wd__cpolicy_update(&c->pol_, &e->node, w);
  entry_unref(e);
}

/* Store value box b (the caller keeps its own reference) in e, written
 * now with time to live ttl (0 = the cache's). */
static void store_value(wd_cache *c, entry *e, box *b, wd_time ttl,
                        wd_time now) {
  if (ttl < 0) { /* the loader asked not to keep it */
    remove_entry(c, e);
    return;
  }
  if (ttl == 0) ttl = c->ttl_;
  if (ttl == WD_TIME_NEVER) ttl = 0;
  box *old = e->val;
  if (e->neg_rc) {
    wd__free(e->neg_msg);
    e->neg_msg = NULL;
    e->neg_rc = 0;
  } else if (!old) {
    c->entries_++;
  }
  b->refs++;
  e->val = b;
  e->gen++;
  e->expires = ttl ? sat_add(now, ttl) : WD_TIME_NEVER;
  e->refresh_at = c->refresh_after_ && (!ttl || c->refresh_after_ < ttl)
                      ? sat_add(now, c->refresh_after_)
                      : WD_TIME_NEVER;
  e->drop_at = ttl ? sat_add(e->expires, c->max_stale_) : WD_TIME_NEVER;
  retime(e);
  schedule(c, e);
  admit_entry(c, e, weigh(c, e, b));
  if (old) box_unref(old);
}

static void store_error(wd_cache *c, entry *e, int rc, const char *msg,
                        wd_time now) {
  size_t n = strlen(msg) + 1;
  char *m = wd__malloc(n);
  if (!m) return; /* not cached: the next get loads again */
  memcpy(m, msg, n);
  e->neg_rc = rc;
  e->neg_msg = m;
  e->gen++;
  c->entries_++;
  e->expires = e->drop_at = sat_add(now, c->neg_ttl_);
  e->refresh_at = WD_TIME_NEVER;
  retime(e);
  schedule(c, e);
  admit_entry(c, e, 1);
}

/* ---- loads ---------------------------------------------------------------
 */

typedef struct load_call {
  flight *fl;
  wd_cache_load *out;
} load_call;

static int call_loader(wd_task *self, void *arg) {
  load_call *lc = arg;
  entry *e = lc->fl->e;
  return lc->fl->fn(self, e->key, e->klen, lc->fl->arg, lc->out);
}

static void deliver(flight *fl, int rc, box *b, bool stale, const char *msg) {
  wd_link *l;
  while ((l = wd__list_pop_front(&fl->waiters))) {
    waiter *wt = wd__container_of(l, waiter, link);
    fl->nwaiters--;
    wt->done = true;
    wt->rc = rc;
    if (rc == 0) {
      b->refs++;
      wt->val = b;
      wt->stale = stale;
    } else {
      snprintf(wt->msg, sizeof wt->msg, "%s", msg);
    }
    wd_wake(&wt->w, 0);
  }
}

/* The end of a flight, in its task: count it, hand the outcome to its
 * waiters, and store it if the entry is still the one it loaded for. */
static void finish(wd_task *self, flight *fl, int rc, bool outside,
                   wd_cache_load *out, wd_time took) {
  wd_cache *c = fl->c;
  entry *e = fl->e;
  wd_time now = wd_now(self);
  char key[KEYBUF], msg[MSG_MAX];
  key_repr(key, sizeof key, e->key, e->klen);
  c->loading_--;
  c->load_time_ += took;
  wd__hist_add(&c->load_hist_, took);
  bool current = e->fl == fl;
  if (current) e->fl = NULL;

  box *b = NULL;
  if (rc == 0) {
    c->load_ok_++;
    if (out->box_) {
      b = out->box_;
    } else {
      b = fl->pbox;
      fl->pbox = NULL;
      b->value = out->value;
      b->size = out->size;
    }
  } else {
    if (out->box_) wd__free(out->box_);
    if (fl->refresh) c->refresh_failed_++;
    if (outside) {
      c->load_cancelled_++;
      rc = WD_ECLOSED;
      snprintf(msg, sizeof msg,
               c->closing_ ? "cache '%s' was closed while loading key '%s'"
                           : "cache '%s' is shut down (its group was "
                             "cancelled): key '%s' was not loaded",
               c->name_, key);
    } else {
      c->load_failed_++;
      const wd_error *err = wd_task_error(self);
      snprintf(msg, sizeof msg, "cache '%s': load of key '%s' failed: %s",
               c->name_, key,
               err && err->code == rc ? err->msg : wd_strerror(rc));
    }
  }

  /* Stale-if-error: the waiters of a failed reload get the old value while
   * it is within max_stale of its expiry. */
  box *give = b;
  bool stale = false;
  int grc = rc;
  if (rc < 0 && !outside && current && e->val && now < e->drop_at &&
      now >= e->expires) {
    give = e->val;
    stale = true;
    grc = 0;
    c->stale_ += fl->nwaiters;
  }
  deliver(fl, grc, give, stale, msg);

  bool keep = current && e->in_table && !c->closing_ && e->gen == fl->gen;
  if (keep && rc == 0) {
    store_value(c, e, b, out->ttl, now);
  } else if (keep && !outside) {
    if (e->val) {
      /* A failed refresh (or reload within max_stale): keep the value,
       * try again a little later. */
      if (c->refresh_after_) {
        e->refresh_at = sat_add(now, c->refresh_retry_);
        retime(e);
      }
    } else if (c->neg_ttl_ && rc != WD_ENOMEM && !wd_is_cancel(rc)) {
      /* Not a lack of memory, nor a timeout: those say nothing about the
       * key, and the next get should try again. */
      store_error(c, e, rc, msg, now);
    }
  }
  if (e->in_table) settle(c, e);
  if (b) box_unref(b);
  if (fl->pbox) wd__free(fl->pbox);
  entry_unref(e);
  wd__free(fl);
}

static int load_main(wd_task *self, void *arg) {
  flight *fl = arg;
  wd_cache *c = fl->c;
  wd_cache_load out = {0};
  wd_time t0 = wd_now(self);
  /* The flight's own scope, so that its last waiter can cancel it (the
   * task's handle would not outlive the flight). */
  wd_cancel_scope s;
  bool outside = false;
  int rc = wd_cancel_scope_enter(self, &s, NULL);
  fl->task = self;
  if (rc == 0) {
    fl->scope = &s;
    if (fl->abandoned) wd_cancel(&s); /* before it even started */
    rc = wd_cancel_status(self);
    if (rc == 0) {
      wd_error_clear(self);
      load_call lc = {fl, &out};
      rc = c->load_timeout_ ? wd_timeout_call(self, c->load_timeout_, c->what_,
                                              call_loader, &lc)
                            : call_loader(self, &lc);
    }
    /* Cancelled from outside the loader: its last waiter left, or the
     * cache's group was cancelled (close, or the opener's scope). */
    outside = wd_is_cancel(rc) && wd_cancel_status(self);
    fl->scope = NULL;
    wd_cancel_scope_exit(self, &s, 0);
  }
  finish(self, fl, rc, outside, &out, wd_now(self) - t0);
  wd_error_clear(self); /* the loader's error went to the waiters */
  return 0;
}

/* Start a flight for e (which the caller created or found) with fn and
 * arg.  Returns 0, WD_ENOMEM or a spawn error, with nothing started. */
static int start_flight(wd_cache *c, entry *e, wd_cache_loader fn, void *arg,
                        bool refresh, flight **out) {
  flight *fl = wd__calloc(1, sizeof *fl);
  box *pb = fl ? box_new_ptr(c) : NULL;
  if (!pb) {
    wd__free(fl);
    return WD_ENOMEM;
  }
  fl->c = c;
  fl->e = e;
  fl->fn = fn;
  fl->arg = arg;
  fl->pbox = pb;
  fl->gen = e->gen;
  fl->refresh = refresh;
  wd__list_init(&fl->waiters);
  char tname[48];
  snprintf(tname, sizeof tname, "cache:%s/%s", c->name_,
           refresh ? "refresh" : "load");
  int rc = wd_spawn(&c->group_, load_main, fl, &(wd_spawn_opts){.name = tname});
  if (rc) {
    wd__free(pb);
    wd__free(fl);
    return rc;
  }
  e->fl = fl;
  e->refs++;
  c->loading_++;
  c->loads_++;
  if (refresh) c->refreshes_++;
  *out = fl;
  return 0;
}

/* A read found e due for a refresh: start one in the background.  If it
 * cannot start now, the next read tries again. */
static void start_refresh(wd_cache *c, entry *e, wd_cache_loader fn,
                          void *arg) {
  flight *fl;
  if (!fn || c->closing_ || c->dead_) return;
  (void)start_flight(c, e, fn, arg, true, &fl);
}

/* The last waiter left a miss's load: nobody wants its result. */
static void abandon(flight *fl) {
  wd_cache *c = fl->c;
  entry *e = fl->e;
  fl->abandoned = true;
  if (e->fl == fl) {
    e->fl = NULL;
    if (e->in_table) settle(c, e);
  }
  if (fl->scope) wd_cancel(fl->scope); /* else it cancels itself at start */
}

static bool waiter_cancel(wd_wait *w) {
  waiter *wt = wd__container_of(w, waiter, w);
  flight *fl = wt->fl;
  char key[KEYBUF];
  key_repr(key, sizeof key, fl->e->key, fl->e->klen);
  snprintf(wt->msg, sizeof wt->msg,
           "cache '%s': gave up waiting for the load of key '%s'", fl->c->name_,
           key);
  wd__list_unlink(&wt->link);
  if (--fl->nwaiters == 0 && !fl->refresh && !fl->abandoned) abandon(fl);
  return true;
}

/* ---- get -----------------------------------------------------------------
 */

static int bad_get(wd_task *self, const wd_cache *c, const void *key,
                   size_t klen, const wd_cache_ref *out, const char *fn) {
  if (!C_OK(c))
    return wd_fail(self, WD_EINVAL, "%s: %s", fn,
                   !c ? "NULL cache" : "not an open cache");
  if (!out)
    return wd_fail(self, WD_EINVAL, "cache '%s': %s: NULL out", c->name_, fn);
  return wd_fail(self, WD_EINVAL, "cache '%s': %s: NULL key of %zu bytes",
                 c->name_, fn, klen);
}

static int closed(wd_task *self, wd_cache *c, const void *key, size_t klen,
                  const char *what) {
  char k[KEYBUF];
  key_repr(k, sizeof k, key, klen);
  return wd_fail(
      self, WD_ECLOSED, "cache '%s' is %s: %s of key '%s' refused", c->name_,
      c->closing_ ? "closed" : "shut down (its group was cancelled)", what, k);
}

static int get_cancelled(wd_task *self, wd_cache *c, const void *key,
                         size_t klen, int rc) {
  char k[KEYBUF];
  key_repr(k, sizeof k, key, klen);
  return wd_fail(self, rc, "cache '%s': get of key '%s' %s", c->name_, k,
                 rc == WD_ETIMEDOUT ? "stopped by a deadline" : "cancelled");
}

static int get_slow(wd_task *self, wd_cache *c, const void *key, size_t klen,
                    wd_cache_loader fn, void *arg, wd_cache_ref *out, bool wait,
                    uint64_t h, entry *e);

/* The shared body of the gets (wait = false for wd_cache_get_try): the
 * plain hit here, inlined into each; everything else in get_slow(). */
static inline __attribute__((always_inline)) int
get(wd_task *self, wd_cache *c, const void *key, size_t klen,
    wd_cache_loader fn, void *arg, wd_cache_ref *out, bool wait,
    const char *fname) {
  if (out) memset(out, 0, sizeof *out);
  if (__builtin_expect(!C_OK(c) || !out || (!key && klen), 0))
    return bad_get(self, c, key, klen, out, fname);
  if (wait) {
    int rc = wd_cancel_status(self);
    if (__builtin_expect(rc != 0, 0))
      return get_cancelled(self, c, key, klen, rc);
  }
  if (__builtin_expect(c->closing_, 0))
    return closed(self, c, key, klen, "get");
  uint64_t h = wd__cache_hash(c->seed_, key, klen);
  wd__cpolicy_count(&c->pol_, h); /* every get is a read of the key */
  entry *e = find(c, h, key, klen);
  if (e && e->val) {
    wd_time now = e->check_at != WD_TIME_NEVER ? wd_now(self) : 0;
    if (now < e->check_at) {
      c->hits_++;
      wd__cpolicy_sample(&c->pol_, true);
      wd__cpolicy_hit(&c->pol_, &e->node);
      box *b = e->val;
      b->refs++;
      fill_ref(out, b, false);
      return 0;
    }
  }
  return get_slow(self, c, key, klen, fn, arg, out, wait, h, e);
}

/* A hit that is due for a refresh, a cached error, or a miss. */
static __attribute__((noinline)) int get_slow(wd_task *self, wd_cache *c,
                                              const void *key, size_t klen,
                                              wd_cache_loader fn, void *arg,
                                              wd_cache_ref *out, bool wait,
                                              uint64_t h, entry *e) {
  wd_time now = 0;
  if (e) {
    if (e->check_at != WD_TIME_NEVER) now = wd_now(self);
    if (e->val && now < e->expires) {
      c->hits_++;
      wd__cpolicy_sample(&c->pol_, true);
      wd__cpolicy_hit(&c->pol_, &e->node);
      if (now >= e->refresh_at && !e->fl)
        start_refresh(c, e, fn ? fn : c->loader_, fn ? arg : c->arg_);
      e->val->refs++;
      fill_ref(out, e->val, false);
      return 0;
    }
    if (e->neg_rc && now < e->expires) {
      c->hits_++;
      c->neg_hits_++;
      wd__cpolicy_sample(&c->pol_, true);
      wd__cpolicy_hit(&c->pol_, &e->node);
      return wd_fail(self, e->neg_rc, "%s (cached failure)", e->neg_msg);
    }
  }
  c->misses_++;
  wd__cpolicy_sample(&c->pol_, false);
  if (e && !e->fl && (e->val || e->neg_rc) && now >= e->drop_at) {
    expire(c, e); /* the expiry task has not run yet */
    e = NULL;
  }
  if (!wait) return WD_EAGAIN; /* expected: no message */
  if (!fn) {
    char k[KEYBUF];
    key_repr(k, sizeof k, key, klen);
    return wd_fail(self, WD_EINVAL,
                   "cache '%s': key '%s' is not cached and there is no "
                   "loader",
                   c->name_, k);
  }
  flight *fl = e ? e->fl : NULL;
  if (fl && fl->task == self) {
    char k[KEYBUF];
    key_repr(k, sizeof k, key, klen);
    return wd_fail(self, WD_EDEADLK,
                   "cache '%s': the loader of key '%s' asked for that key "
                   "itself (it would wait for its own load)",
                   c->name_, k);
  }
  if (fl) {
    c->joined_++;
  } else {
    if (c->dead_) return closed(self, c, key, klen, "load");
    bool fresh = !e;
    if (fresh && !(e = entry_new(c, h, key, klen))) {
      char k[KEYBUF];
      key_repr(k, sizeof k, key, klen);
      return wd_fail(self, WD_ENOMEM, "cache '%s': no memory for key '%s'",
                     c->name_, k);
    }
    int rc = start_flight(c, e, fn, arg, false, &fl);
    if (rc) {
      if (fresh) remove_entry(c, e);
      char k[KEYBUF];
      key_repr(k, sizeof k, key, klen);
      return wd_fail(self, rc, "cache '%s': cannot start the load of key '%s'",
                     c->name_, k);
    }
  }
  waiter wt;
  wt.w = (wd_wait){
      .what = "cache load", .name = c->name_, .on_cancel = waiter_cancel};
  wt.fl = fl;
  wt.done = wt.stale = false;
  wt.rc = 0;
  wt.val = NULL;
  wd__list_push_back(&fl->waiters, &wt.link);
  fl->nwaiters++;
  int rc = wd_park(self, &wt.w);
  if (!wt.done && wt.link.next_) waiter_cancel(&wt.w); /* never parked */
  /* From here on c may be gone (closed): read only wt. */
  if (wt.done) {
    if (wt.rc == 0) {
      fill_ref(out, wt.val, wt.stale);
      return 0;
    }
    return wd_fail(self, wt.rc, "%s", wt.msg);
  }
  return wd_fail(self, rc, "%s (%s)", wt.msg,
                 rc == WD_ETIMEDOUT ? "stopped by a deadline" : "cancelled");
}

int wd_cache_get(wd_task *self, wd_cache *c, const void *key, size_t klen,
                 wd_cache_ref *out) {
  if (__builtin_expect(!self, 0)) {
    if (out) memset(out, 0, sizeof *out);
    return wd_fail(NULL, WD_EINVAL, "wd_cache_get: NULL task");
  }
  return get(self, c, key, klen, C_OK(c) ? c->loader_ : NULL,
             C_OK(c) ? c->arg_ : NULL, out, true, "wd_cache_get");
}

int wd_cache_get_with(wd_task *self, wd_cache *c, const void *key, size_t klen,
                      wd_cache_loader loader, void *arg, wd_cache_ref *out) {
  if (__builtin_expect(!self, 0)) {
    if (out) memset(out, 0, sizeof *out);
    return wd_fail(NULL, WD_EINVAL, "wd_cache_get_with: NULL task");
  }
  return get(self, c, key, klen, loader, arg, out, true, "wd_cache_get_with");
}

int wd_cache_get_try(wd_cache *c, const void *key, size_t klen,
                     wd_cache_ref *out) {
  return get(wd_self(), c, key, klen, C_OK(c) ? c->loader_ : NULL,
             C_OK(c) ? c->arg_ : NULL, out, false, "wd_cache_get_try");
}

/* ---- put, invalidate, clear ----------------------------------------------
 */

static int check(wd_cache *c, const void *key, size_t klen, const char *fn) {
  if (!C_OK(c))
    return wd_fail(NULL, WD_EINVAL, "%s: %s", fn,
                   !c ? "NULL cache" : "not an open cache");
  if (!key && klen)
    return wd_fail(NULL, WD_EINVAL, "cache '%s': %s: NULL key of %zu bytes",
                   c->name_, fn, klen);
  if (c->closing_) return closed(NULL, c, key, klen, fn + 9);
  return 0;
}

static int put_box(wd_cache *c, const void *key, size_t klen, box *b,
                   wd_time ttl) {
  uint64_t h = wd__cache_hash(c->seed_, key, klen);
  entry *e = find(c, h, key, klen);
  if (!e && !(e = entry_new(c, h, key, klen))) {
    char k[KEYBUF];
    key_repr(k, sizeof k, key, klen);
    return wd_fail(NULL, WD_ENOMEM, "cache '%s': no memory for key '%s'",
                   c->name_, k);
  }
  c->puts_++; /* a write: the sketch counts reads only */
  bool timed = ttl > 0 ? ttl != WD_TIME_NEVER : ttl == 0 && c->ttl_;
  store_value(c, e, b, ttl, timed || c->refresh_after_ ? wd_now(NULL) : 0);
  box_unref(b); /* the entry holds its own reference */
  return 0;
}

int wd_cache_put(wd_cache *c, const void *key, size_t klen, void *value,
                 size_t size, wd_time ttl) {
  int rc = check(c, key, klen, "wd_cache_put");
  if (rc) return rc;
  box *b = box_new_ptr(c);
  if (!b)
    return wd_fail(NULL, WD_ENOMEM, "cache '%s': put: no memory", c->name_);
  b->value = value;
  b->size = size;
  rc = put_box(c, key, klen, b, ttl);
  if (rc) wd__free(b); /* the value stays the caller's */
  return rc;
}

int wd_cache_put_copy(wd_cache *c, const void *key, size_t klen,
                      const void *bytes, size_t size, wd_time ttl) {
  int rc = check(c, key, klen, "wd_cache_put_copy");
  if (rc) return rc;
  if (!bytes && size)
    return wd_fail(NULL, WD_EINVAL,
                   "cache '%s': wd_cache_put_copy: NULL bytes of %zu", c->name_,
                   size);
  box *b = box_new_copy(bytes, size);
  if (!b)
    return wd_fail(NULL, WD_ENOMEM,
                   "cache '%s': put: no memory for a copy of %zu bytes",
                   c->name_, size);
  rc = put_box(c, key, klen, b, ttl);
  if (rc) wd__free(b);
  return rc;
}

int wd_cache_invalidate(wd_cache *c, const void *key, size_t klen) {
  int rc = check(c, key, klen, "wd_cache_invalidate");
  if (rc) return rc;
  entry *e = find(c, wd__cache_hash(c->seed_, key, klen), key, klen);
  if (e) {
    c->invalidations_++;
    remove_entry(c, e);
  }
  return 0;
}

/* Take every entry out of the table at once (a backward shift would move
 * entries under a scan), then drop each. */
static void drop_all(wd_cache *c, bool count) {
  size_t cap = c->mask_ + 1;
  for (size_t i = 0; i < cap; i++) {
    entry *e = c->slots_[i].e;
    if (!e) continue;
    c->slots_[i].e = NULL;
    e->in_table = false;
    if (count) c->invalidations_++;
    e->gen++;
    empty_entry(c, e);
    entry_unref(e);
  }
  c->used_ = 0;
}

int wd_cache_clear(wd_cache *c) {
  int rc = check(c, NULL, 0, "wd_cache_clear");
  if (rc) return rc;
  drop_all(c, true);
  return 0;
}

/* ---- the expiry task -----------------------------------------------------
 */

static bool janitor_cancel(wd_wait *w) {
  wd_cache *c = wd__container_of(w, wd_cache, jw_);
  c->jparked_ = false;
  return true;
}

/* Park until `due` (WD_TIME_NEVER: until poked).  Returns 0 (due or
 * poked), the group's cancellation, or WD_ENOMEM (no timer). */
static int janitor_park(wd_task *self, wd_cache *c, wd_time due) {
  wd_cancel_scope s;
  bool timed = due != WD_TIME_NEVER;
  if (timed) {
    int rc =
        wd_cancel_scope_enter(self, &s, &(wd_cancel_opts){.deadline = due});
    if (rc) return rc;
  }
  c->jw_ = (wd_wait){
      .what = "cache expiry", .name = c->name_, .on_cancel = janitor_cancel};
  c->jdue_ = due;
  c->jparked_ = true;
  int rc = wd_park(self, &c->jw_);
  c->jparked_ = false;
  c->jdue_ = WD_TIME_NEVER;
  return timed ? wd_cancel_scope_exit(self, &s, rc) : rc;
}

static int janitor_main(wd_task *self, void *arg) {
  wd_cache *c = arg;
  wd_time due = WD_TIME_NEVER;
  for (;;) {
    if (c->closing_) break;
    wd_time now = wd_now(self);
    while (c->nheap_ && c->heap_[0]->drop_at <= now)
      expire(c, c->heap_[0]);
    due = c->nheap_ ? c->heap_[0]->drop_at : WD_TIME_NEVER;
    int rc = janitor_park(self, c, due);
    /* Without a timer, expired entries wait for a read to find them
     * (reads never serve them) or for the next write to poke us. */
    if (rc == WD_ENOMEM) rc = janitor_park(self, c, WD_TIME_NEVER);
    if (rc) {
      if (!c->closing_) c->dead_ = true;
      break;
    }
  }
  wd_error_clear(self);
  return 0;
}

/* ---- open and close ------------------------------------------------------
 */

static uint64_t random_seed(const void *p) {
  static uint64_t counter;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return wd__cache_hash((uint64_t)(uintptr_t)p ^ ++counter, &ts, sizeof ts);
}

static int bad_opts(wd_task *self, const wd_cache_opts *o, const char *name) {
  if (!self) return wd_fail(NULL, WD_EINVAL, "cache '%s': NULL task", name);
  if (!o) return wd_fail(self, WD_EINVAL, "cache '%s': NULL options", name);
  if (o->max_entries && o->max_weight)
    return wd_fail(self, WD_EINVAL,
                   "cache '%s': both max_entries and max_weight are set", name);
  const char *neg = o->ttl < 0             ? "ttl"
                    : o->refresh_after < 0 ? "refresh_after"
                    : o->refresh_retry < 0 ? "refresh_retry"
                    : o->max_stale < 0     ? "max_stale"
                    : o->negative_ttl < 0  ? "negative_ttl"
                    : o->load_timeout < 0  ? "load_timeout"
                                           : NULL;
  if (neg)
    return wd_fail(self, WD_EINVAL, "cache '%s': negative %s", name, neg);
  if (o->max_stale && !o->ttl)
    return wd_fail(self, WD_EINVAL,
                   "cache '%s': max_stale needs a ttl (values never expire)",
                   name);
  return wd_fail(self, WD_EINVAL,
                 "cache '%s': refresh_after %.3f s is not below ttl %.3f s",
                 name, (double)o->refresh_after / (double)WD_SEC,
                 (double)o->ttl / (double)WD_SEC);
}

int wd_cache_open_(wd_task *self, wd_cache **out, const wd_cache_opts *opts,
                   const char *file, int line) {
  if (out) *out = NULL;
  const char *name = opts && opts->name ? opts->name : "cache";
  if (!out)
    return wd_fail(self, WD_EINVAL, "cache '%s': NULL out pointer", name);
  if (!self || !opts || (opts->max_entries && opts->max_weight) ||
      opts->ttl < 0 || opts->refresh_after < 0 || opts->refresh_retry < 0 ||
      opts->max_stale < 0 || opts->negative_ttl < 0 || opts->load_timeout < 0 ||
      (opts->max_stale && !opts->ttl) ||
      (opts->ttl && opts->refresh_after >= opts->ttl))
    return bad_opts(self, opts, name);
  wd_cache *c = wd__calloc(1, sizeof *c);
  slot *slots = c ? wd__calloc(16, sizeof *slots) : NULL;
  if (!slots) {
    wd__free(c);
    return wd_fail(self, WD_ENOMEM, "cache '%s': no memory", name);
  }
  snprintf(c->name_, sizeof c->name_, "%s", name);
  snprintf(c->what_, sizeof c->what_, "cache '%s' load", c->name_);
  c->owner_ = self;
  c->slots_ = slots;
  c->mask_ = 15;
  c->loader_ = opts->loader;
  c->arg_ = opts->arg;
  c->value_free_ = opts->value_free;
  c->weigher_ = opts->weigher;
  c->by_weight_ = opts->max_weight != 0;
  c->capacity_ = opts->max_weight ? opts->max_weight : opts->max_entries;
  c->ttl_ = opts->ttl == WD_TIME_NEVER ? 0 : opts->ttl;
  c->refresh_after_ = opts->refresh_after;
  c->refresh_retry_ = opts->refresh_retry            ? opts->refresh_retry
                      : opts->refresh_after < WD_SEC ? opts->refresh_after
                                                     : WD_SEC;
  c->max_stale_ = opts->max_stale;
  c->neg_ttl_ = opts->negative_ttl;
  c->load_timeout_ = opts->load_timeout;
  c->seed_ = opts->seed ? opts->seed : random_seed(c);
  c->jdue_ = WD_TIME_NEVER;
  wd__cpolicy_init(&c->pol_, c->capacity_, !c->by_weight_, c->seed_, on_evict);
  c->magic_ = CACHE_MAGIC;

  char gname[48];
  snprintf(gname, sizeof gname, "cache:%s", c->name_);
  int rc = wd_group_enter_(self, &c->group_,
                           &(wd_group_opts){.name = gname, .supervisor = true},
                           file, line);
  if (rc) goto fail;
  char tname[64];
  snprintf(tname, sizeof tname, "%s/expiry", gname);
  rc = wd_spawn(&c->group_, janitor_main, c, &(wd_spawn_opts){.name = tname});
  if (rc) {
    c->closing_ = true;
    rc = wd_group_exit(self, &c->group_, rc);
    goto fail;
  }
  *out = c;
  return 0;
fail:
  c->magic_ = 0;
  wd__cpolicy_fini(&c->pol_);
  wd__free(c->slots_);
  wd__free(c);
  return wd_wrap(self, rc, "cache '%s': open", name);
}

int wd_cache_close(wd_task *self, wd_cache *c) {
  if (!c) return 0;
  if (!self || !C_OK(c))
    return wd_fail(self, WD_EINVAL, "wd_cache_close: %s",
                   !self ? "NULL task" : "not an open cache");
  if (c->owner_ != self)
    return wd_fail(self, WD_EINVAL,
                   "cache '%s': opened by task %llu, so task %llu cannot "
                   "close it",
                   c->name_, (unsigned long long)wd_task_id(c->owner_),
                   (unsigned long long)wd_task_id(self));
  bool was_closing = c->closing_;
  c->closing_ = true;
  /* A failure as the body's result makes the exit cancel the group (the
   * loads and the expiry task) before it waits for it. */
  int rc = wd_group_exit(self, &c->group_, WD_ECLOSED);
  if (rc == WD_EINVAL) {
    /* Not in LIFO order: nothing ran, the group is still open. */
    c->closing_ = was_closing;
    return rc;
  }
  drop_all(c, false);
  c->magic_ = 0;
  wd__cpolicy_fini(&c->pol_);
  wd__free(c->slots_);
  wd__free(c->heap_);
  wd__free(c);
  rc = wd_cancel_status(self);
  if (rc)
    return wd_fail(self, rc, "cache closed while its opener was %s",
                   rc == WD_ETIMEDOUT ? "past a deadline" : "cancelled");
  wd_error_clear(self);
  return 0;
}

void wd_cache_stats_get(const wd_cache *c, wd_cache_stats *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (!C_OK(c)) return;
  out->hits = c->hits_;
  out->misses = c->misses_;
  out->joined = c->joined_;
  out->loads = c->loads_;
  out->load_successes = c->load_ok_;
  out->load_failures = c->load_failed_;
  out->loads_cancelled = c->load_cancelled_;
  out->load_time = c->load_time_;
  out->load_time_p50 = wd__hist_quantile(&c->load_hist_, 0.5);
  out->load_time_p99 = wd__hist_quantile(&c->load_hist_, 0.99);
  out->load_time_max = c->load_hist_.count ? c->load_hist_.max : 0;
  out->refreshes = c->refreshes_;
  out->refresh_failures = c->refresh_failed_;
  out->negative_hits = c->neg_hits_;
  out->stale_served = c->stale_;
  out->evictions = c->evictions_;
  out->eviction_weight = c->evicted_weight_;
  out->expirations = c->expirations_;
  out->puts = c->puts_;
  out->invalidations = c->invalidations_;
  out->entries = c->entries_;
  out->weight = c->pol_.weight;
  out->capacity = c->capacity_;
  out->loading = c->loading_;
  out->window = c->pol_.bounded ? c->pol_.window_max : 0;
  out->closed = c->closing_;
}
