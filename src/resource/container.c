/* The container: keys bound to providers, instances by lifetime.
 *
 * Bindings live in one array in bind order, and a small open-addressing
 * table maps a key's address to its binding, so that finding a key costs a
 * multiply and a probe or two, whatever the number of bindings.  The graph
 * is checked once, when the container is first used (validate): edges
 * resolved to bindings, cycles named by walking the DFS stack back to the
 * key seen twice, captive dependencies found by carrying "reaches a scoped
 * key through transients" along a topological order.  After that it is
 * frozen, which is what lets each binding keep a fixed slot index.
 *
 * Each scope (and the container's own root scope, which holds the
 * singletons) has an array of slots indexed by that index: a get of an
 * open instance is a table probe, one load from the slot and a state test
 * - no allocation, no list.  A scope that finds a key in an outer scope
 * copies the pointer into its own slot (borrowed: only the owner closes),
 * so the next get is as cheap.  A scope's slots are inline for a few
 * scoped keys and allocated on first need for more.
 *
 * An instance record sits in its slot from the moment its open starts, in
 * state opening, with a list of waiters: that is the single flight.  The
 * opener resolves the dependencies first (through the same path, so they
 * are shared or waited for the same way), then opens the provider with
 * wd_resource_open - a factory is wrapped in a resource type of our own -
 * while a thread-local list of frames says which instance the running task
 * is opening, for wd_container_dep().  Success pushes the record on its
 * owner scope's stack (creation order) and wakes the waiters; failure
 * records the message for them and empties the slot, so the next get
 * retries.  An opener cancelled meanwhile did not open anything: the slot
 * is emptied and every waiter looks again, the first one opening in its
 * own task (as in lazy.c, and for the same reason: there is no group the
 * open could outlive its callers in).
 *
 * A scope's end closes its stack from the top with the error keeper, so a
 * failing close never hides the error the scope ended with, and each close
 * is told the outcome so far.  Dependencies are always created before
 * their dependents in the same scope or an outer one, so reverse creation
 * order closes dependents first.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "resource-internal.h"

/* ---- records ------------------------------------------------------------- */

typedef struct cbind cbind;
typedef struct cinst cinst;

struct cbind {
  wd_container *c;
  const wd_key *key;
  wd_lifetime life;
  const wd_resource_type *type;
  const void *config;
  wd_factory_fn factory;
  wd_dispose_fn dispose;
  void *arg;
  const wd_key *fallback;
  cbind *fb;    /* the fallback's binding, once validated */
  uint32_t idx; /* slot index among the keys of its lifetime */
  uint32_t pos; /* bind order */
  size_t ndeps;
  const wd_key **deps; /* ndeps keys, after the record */
  cbind **depb;        /* their bindings, once validated */
  const char *file;
  int line;
  char name[WD_RESOURCE_NAME_MAX];
};

enum { I_OPENING, I_READY };

struct cinst {
  cbind *b;
  cinst *below;   /* the next older instance of its owner scope */
  wd_resource *r; /* NULL for a fallback's alias */
  void *value;
  wd_link waiters; /* while opening */
  unsigned char state;
  cinst *deps[]; /* b->ndeps, borrowed: they outlive this one */
};

/* A key's entry carries what a get of an open instance needs - its
 * lifetime and slot index, copied from the binding at validate - so that
 * the fast path does not load the binding too. */
typedef struct tab_entry {
  const wd_key *key; /* NULL: empty */
  cbind *b;
  uint32_t idx;
  uint32_t life;
} tab_entry;

struct wd_container {
  tab_entry *tab; /* power-of-two size, at most half full */
  size_t tabmask;
  cbind **binds;
  size_t nbinds, capbinds;
  uint32_t *order; /* every binding, dependencies first (once frozen) */
  size_t nsingle, nscoped;
  size_t nscopes; /* user scopes entered */
  bool frozen;
  wd_container_scope root; /* the singletons */
  wd_container_stats st;
  char name[WD_RESOURCE_NAME_MAX];
};

/* Where a get was asked, for messages and as the creation site. */
typedef struct req {
  const char *file;
  int line;
} req;

const char *wd_lifetime_name(wd_lifetime l) {
  switch (l) {
  case WD_SINGLETON:
    return "singleton";
  case WD_SCOPED:
    return "scoped";
  case WD_TRANSIENT:
    return "transient";
  }
  return "?";
}

/* ---- the key table ------------------------------------------------------- */

static inline size_t key_hash(const wd_key *k, size_t mask) {
  return (size_t)(((uint64_t)(uintptr_t)k * 0x9E3779B97F4A7C15ull) >> 32) &
         mask;
}

static inline const tab_entry *find_entry(const wd_container *c,
                                          const wd_key *k) {
  size_t mask = c->tabmask;
  for (size_t i = key_hash(k, mask);; i = (i + 1) & mask) {
    const tab_entry *e = &c->tab[i];
    if (e->key == k || !e->key) return e;
  }
}

static inline cbind *find(const wd_container *c, const wd_key *k) {
  return find_entry(c, k)->b;
}

static void tab_put(tab_entry *tab, size_t mask, const wd_key *k, cbind *b) {
  size_t i = key_hash(k, mask);
  while (tab[i].key)
    i = (i + 1) & mask;
  tab[i] = (tab_entry){k, b, 0, 0};
}

/* Room for one more key, the table staying at most half full. */
static int tab_grow(wd_container *c) {
  size_t cap = c->tabmask + 1;
  if (2 * (c->nbinds + 1) <= cap) return 0;
  size_t ncap = 2 * cap;
  tab_entry *t = wd__calloc(ncap, sizeof *t);
  if (!t)
    return wd_fail(NULL, WD_ENOMEM, "container '%s': no memory for %zu keys",
                   c->name, c->nbinds + 1);
  for (size_t i = 0; i < cap; i++) {
    if (c->tab[i].key) tab_put(t, ncap - 1, c->tab[i].key, c->tab[i].b);
  }
  wd__free(c->tab);
  c->tab = t;
  c->tabmask = ncap - 1;
  return 0;
}

/* ---- open, bind ---------------------------------------------------------- */

#define TAB_INITIAL 16

int wd_container_open(wd_container **out, const char *name) {
  if (!out) return wd_fail(NULL, WD_EINVAL, "wd_container_open: NULL out");
  *out = NULL;
  wd_container *c = wd__calloc(1, sizeof *c);
  if (c) c->tab = wd__calloc(TAB_INITIAL, sizeof *c->tab);
  if (!c || !c->tab) {
    wd__free(c);
    return wd_fail(NULL, WD_ENOMEM, "container '%s': no memory",
                   name && *name ? name : "container");
  }
  c->tabmask = TAB_INITIAL - 1;
  wd__name_copy(c->name, sizeof c->name, name, "container");
  c->root.c_ = c;
  c->root.entered_ = true;
  *out = c;
  return 0;
}

static bool edge_to(const cbind *b, const wd_key *k) {
  if (b->fallback == k) return true;
  for (size_t i = 0; i < b->ndeps; i++) {
    if (b->deps[i] == k) return true;
  }
  return false;
}

static int captive(const wd_container *c, const wd_key *single,
                   const wd_key *scoped) {
  return wd_fail(NULL, WD_EINVAL,
                 "container '%s': singleton '%s' depends on scoped '%s': a "
                 "captive dependency (the singleton would outlive it)",
                 c->name, single->name, scoped->name);
}

/* The checks that need only b and the keys bound so far. */
static int bind_check(wd_container *c, const wd_key *key, const wd_binding *b,
                      size_t *ndeps) {
  const char *kn = key->name;
  if ((unsigned)b->lifetime > WD_TRANSIENT)
    return wd_fail(NULL, WD_EINVAL, "container '%s': bind '%s': lifetime %d",
                   c->name, kn, (int)b->lifetime);
  if (!b->type == !b->factory)
    return wd_fail(NULL, WD_EINVAL,
                   "container '%s': bind '%s': give a resource type or a "
                   "factory, %s",
                   c->name, kn, b->type ? "not both" : "none given");
  if (b->type) {
    char who[WD_RESOURCE_NAME_MAX * 2 + 32];
    snprintf(who, sizeof who, "container '%s': bind '%s'", c->name, kn);
    int rc = wd__resource_type_check(NULL, b->type, who);
    if (rc) return rc;
    if (b->dispose)
      return wd_fail(NULL, WD_EINVAL,
                     "container '%s': bind '%s': dispose is for factories "
                     "(a resource type closes its own)",
                     c->name, kn);
  }
  cbind *old = find(c, key);
  if (old)
    return wd_fail(NULL, WD_EBUSY,
                   "container '%s': '%s' is already bound (at %s:%d)", c->name,
                   kn, old->file ? old->file : "?", old->line);
  size_t n = 0;
  for (; b->deps && b->deps[n]; n++) {
    const wd_key *d = b->deps[n];
    if (!d->name || !*d->name)
      return wd_fail(NULL, WD_EINVAL,
                     "container '%s': bind '%s': dependency %zu has no name",
                     c->name, kn, n);
    if (d == key)
      return wd_fail(NULL, WD_EINVAL,
                     "container '%s': dependency cycle: %s -> %s", c->name, kn,
                     kn);
  }
  if (b->fallback) {
    if (!b->fallback->name || !*b->fallback->name)
      return wd_fail(NULL, WD_EINVAL,
                     "container '%s': bind '%s': the fallback has no name",
                     c->name, kn);
    if (b->fallback == key)
      return wd_fail(NULL, WD_EINVAL,
                     "container '%s': dependency cycle: %s -> %s", c->name, kn,
                     kn);
  }
  /* Captive dependencies between this key and those bound already; the
   * ones through transients wait for validate. */
  if (b->lifetime == WD_SINGLETON) {
    for (size_t i = 0; i <= n; i++) {
      const wd_key *d = i < n ? b->deps[i] : b->fallback;
      cbind *db = d ? find(c, d) : NULL;
      if (db && db->life == WD_SCOPED) return captive(c, key, d);
    }
  } else if (b->lifetime == WD_SCOPED) {
    for (size_t i = 0; i < c->nbinds; i++) {
      cbind *o = c->binds[i];
      if (o->life == WD_SINGLETON && edge_to(o, key))
        return captive(c, o->key, key);
    }
  }
  *ndeps = n;
  return 0;
}

int wd_container_bind_(wd_container *c, const wd_key *key, const wd_binding *b,
                       const char *file, int line) {
  if (!c) return wd_fail(NULL, WD_EINVAL, "wd_container_bind: NULL container");
  if (!key || !key->name || !*key->name)
    return wd_fail(NULL, WD_EINVAL, "container '%s': bind: %s", c->name,
                   !key ? "NULL key" : "key without a name");
  if (!b)
    return wd_fail(NULL, WD_EINVAL, "container '%s': bind '%s': NULL binding",
                   c->name, key->name);
  if (c->frozen)
    return wd_fail(NULL, WD_EBUSY,
                   "container '%s': bind '%s': the container is frozen by its "
                   "first use",
                   c->name, key->name);
  size_t n = 0;
  int rc = bind_check(c, key, b, &n);
  if (rc) return rc;
  if (n > (SIZE_MAX - sizeof(cbind)) / (2 * sizeof(void *)))
    return wd_fail(NULL, WD_EINVAL, "container '%s': bind '%s': %zu deps",
                   c->name, key->name, n);
  if ((rc = tab_grow(c))) return rc;
  if (c->nbinds == c->capbinds) {
    size_t cap = c->capbinds ? 2 * c->capbinds : 8;
    cbind **a = wd__realloc(c->binds, cap * sizeof *a);
    if (!a)
      return wd_fail(NULL, WD_ENOMEM, "container '%s': bind '%s': no memory",
                     c->name, key->name);
    c->binds = a;
    c->capbinds = cap;
  }
  cbind *nb = wd__calloc(1, sizeof *nb + n * 2 * sizeof(void *));
  if (!nb)
    return wd_fail(NULL, WD_ENOMEM, "container '%s': bind '%s': no memory",
                   c->name, key->name);
  nb->c = c;
  nb->key = key;
  nb->life = b->lifetime;
  nb->type = b->type;
  nb->config = b->config;
  nb->factory = b->factory;
  nb->dispose = b->dispose;
  nb->arg = b->arg;
  nb->fallback = b->fallback;
  nb->ndeps = n;
  nb->deps = (const wd_key **)(nb + 1);
  nb->depb = (cbind **)(nb->deps + n);
  for (size_t i = 0; i < n; i++)
    nb->deps[i] = b->deps[i];
  nb->pos = (uint32_t)c->nbinds;
  nb->file = file;
  nb->line = line;
  wd__name_copy(nb->name, sizeof nb->name, b->name, key->name);
  c->binds[c->nbinds++] = nb;
  tab_put(c->tab, c->tabmask, key, nb);
  return 0;
}

/* ---- validate ------------------------------------------------------------ */

static size_t nedges(const cbind *b) { return b->ndeps + (b->fb ? 1 : 0); }

static cbind *edge(const cbind *b, size_t i) {
  return i < b->ndeps ? b->depb[i] : b->fb;
}

/* Append " -> name" (or the first name) to buf, marking a cut with "...". */
static void path_add(char *buf, size_t n, size_t *len, const char *name) {
  if (*len >= n - 1) return;
  int w = snprintf(buf + *len, n - *len, "%s%s", *len ? " -> " : "", name);
  if (w < 0 || (size_t)w >= n - *len) {
    *len = n - 1;
    memcpy(buf + n - 4, "...", 4);
    return;
  }
  *len += (size_t)w;
}

static int missing(const wd_container *c, const cbind *b, const wd_key *k,
                   const char *what) {
  return wd_fail(NULL, -ENOENT,
                 "container '%s': no binding for '%s' (%s '%s', bound at "
                 "%s:%d)",
                 c->name, k->name, what, b->key->name, b->file ? b->file : "?",
                 b->line);
}

/* Every edge to a bound key. */
static int resolve_edges(wd_container *c) {
  for (size_t i = 0; i < c->nbinds; i++) {
    cbind *b = c->binds[i];
    for (size_t j = 0; j < b->ndeps; j++) {
      b->depb[j] = find(c, b->deps[j]);
      if (!b->depb[j]) return missing(c, b, b->deps[j], "a dependency of");
    }
    b->fb = NULL;
    if (b->fallback && !(b->fb = find(c, b->fallback)))
      return missing(c, b, b->fallback, "the fallback of");
  }
  return 0;
}

enum { WHITE, GREY, BLACK };

/* Depth-first over every binding, iteratively (a long chain must not run a
 * task's stack out): a grey key met again closes a cycle, named from the
 * stack; a key turns black after everything it needs, which is the
 * topological order stored in c->order. */
static int order_graph(wd_container *c, uint32_t *order) {
  size_t n = c->nbinds;
  /* One block: the stack and its edge cursors, then the colours. */
  uint32_t *stk = wd__calloc(n ? n : 1, 2 * sizeof(uint32_t) + 1);
  if (!stk)
    return wd_fail(NULL, WD_ENOMEM, "container '%s': no memory to validate",
                   c->name);
  uint32_t *next = stk + n;
  unsigned char *color = (unsigned char *)(next + n);
  size_t norder = 0, depth = 0;
  int rc = 0;
  for (size_t r = 0; r < n && !rc; r++) {
    if (color[r] != WHITE) continue;
    color[r] = GREY;
    stk[0] = (uint32_t)r;
    next[0] = 0;
    depth = 1;
    while (depth && !rc) {
      cbind *v = c->binds[stk[depth - 1]];
      if (next[depth - 1] == nedges(v)) {
        color[v->pos] = BLACK;
        order[norder++] = v->pos;
        depth--;
        continue;
      }
      cbind *w = edge(v, next[depth - 1]++);
      if (color[w->pos] == WHITE) {
        color[w->pos] = GREY;
        stk[depth] = w->pos;
        next[depth] = 0;
        depth++;
      } else if (color[w->pos] == GREY) {
        char path[512];
        size_t len = 0;
        path[0] = '\0';
        size_t from = 0;
        while (stk[from] != w->pos)
          from++;
        for (size_t i = from; i < depth; i++)
          path_add(path, sizeof path, &len, c->binds[stk[i]]->key->name);
        path_add(path, sizeof path, &len, w->key->name);
        rc = wd_fail(NULL, WD_EINVAL, "container '%s': dependency cycle: %s",
                     c->name, path);
      }
    }
  }
  wd__free(stk);
  return rc;
}

/* A singleton must not need a scoped key, directly or through transients
 * (which live as long as what they were made for).  In topological order,
 * via[t] is the edge by which transient t reaches a scoped key, if any. */
static int check_captives(wd_container *c, const uint32_t *order) {
  size_t n = c->nbinds;
  cbind **via = wd__calloc(n ? n : 1, sizeof *via);
  if (!via)
    return wd_fail(NULL, WD_ENOMEM, "container '%s': no memory to validate",
                   c->name);
  int rc = 0;
  for (size_t k = 0; k < n && !rc; k++) {
    cbind *b = c->binds[order[k]];
    if (b->life == WD_SCOPED) continue;
    for (size_t i = 0; i < nedges(b); i++) {
      cbind *d = edge(b, i);
      if (d->life == WD_SCOPED || (d->life == WD_TRANSIENT && via[d->pos])) {
        via[b->pos] = d;
        break;
      }
    }
    if (b->life != WD_SINGLETON || !via[b->pos]) continue;
    char path[512];
    size_t len = 0;
    path[0] = '\0';
    const cbind *p = b;
    for (; p->life != WD_SCOPED; p = via[p->pos])
      path_add(path, sizeof path, &len, p->key->name);
    path_add(path, sizeof path, &len, p->key->name);
    rc = wd_fail(NULL, WD_EINVAL,
                 "container '%s': singleton '%s' depends on scoped '%s' "
                 "(%s): a captive dependency (the singleton would outlive it)",
                 c->name, b->key->name, p->key->name, path);
  }
  wd__free(via);
  return rc;
}

int wd_container_validate(wd_container *c) {
  if (!c)
    return wd_fail(NULL, WD_EINVAL, "wd_container_validate: NULL container");
  if (c->frozen) return 0;
  int rc = resolve_edges(c);
  if (rc) return rc;
  uint32_t *order = wd__malloc((c->nbinds ? c->nbinds : 1) * sizeof *order);
  if (!order)
    return wd_fail(NULL, WD_ENOMEM, "container '%s': no memory to validate",
                   c->name);
  if ((rc = order_graph(c, order)) || (rc = check_captives(c, order))) {
    wd__free(order);
    return rc;
  }
  c->order = order;
  c->nsingle = c->nscoped = 0;
  for (size_t i = 0; i < c->nbinds; i++) {
    cbind *b = c->binds[i];
    if (b->life == WD_SINGLETON) b->idx = (uint32_t)c->nsingle++;
    if (b->life == WD_SCOPED) b->idx = (uint32_t)c->nscoped++;
  }
  wd_container_scope *root = &c->root;
  root->nslots_ = (uint32_t)c->nsingle;
  if (c->nsingle <= WD_CONTAINER_SCOPE_INLINE) {
    memset(root->inline_, 0, sizeof root->inline_);
    root->slots_ = root->inline_;
  }
  for (size_t i = 0; i <= c->tabmask; i++) {
    tab_entry *e = &c->tab[i];
    if (!e->key) continue;
    e->idx = e->b->idx;
    e->life = (uint32_t)e->b->life;
  }
  c->frozen = true;
  return 0;
}

/* ---- dependency frames ------------------------------------------------------
 * Which instance each task is opening right now, for wd_container_dep().
 * A runtime is one thread, so one thread-local list holds the frames of
 * all its tasks (and of synchronous callers, task NULL); a frame lives on
 * the opener's stack for the duration of the provider's open. */

typedef struct frame {
  wd_task *task;
  cinst *in;
  struct frame *prev, *next;
} frame;

static _Thread_local frame *frames;

static void frame_push(frame *f) {
  f->prev = NULL;
  f->next = frames;
  if (frames) frames->prev = f;
  frames = f;
}

static void frame_pop(frame *f) {
  if (f->prev)
    f->prev->next = f->next;
  else
    frames = f->next;
  if (f->next) f->next->prev = f->prev;
}

int wd_container_dep(wd_task *self, const wd_key *key, void **out) {
  if (!out) return wd_fail(self, WD_EINVAL, "wd_container_dep: NULL out");
  *out = NULL;
  if (!key || !key->name)
    return wd_fail(self, WD_EINVAL, "wd_container_dep: %s",
                   !key ? "NULL key" : "key without a name");
  frame *f = frames;
  while (f && f->task != self)
    f = f->next;
  if (!f)
    return wd_fail(self, WD_EINVAL,
                   "wd_container_dep: '%s' asked for outside a provider's "
                   "open",
                   key->name);
  const cbind *b = f->in->b;
  for (size_t i = 0; i < b->ndeps; i++) {
    if (b->deps[i] == key) {
      *out = f->in->deps[i]->value;
      return 0;
    }
  }
  return wd_fail(self, WD_EINVAL,
                 "container '%s': '%s' asked for '%s', which it did not "
                 "declare among its deps",
                 b->c->name, b->key->name, key->name);
}

/* ---- factories as resources ---------------------------------------------- */

typedef struct fstate {
  const cbind *b;
  void *obj;
} fstate;

static int factory_open(wd_task *self, void *data, const void *config) {
  fstate *fs = data;
  fs->b = config;
  return fs->b->factory(self, fs->b->arg, &fs->obj);
}

static int factory_close(wd_task *self, void *data, wd_outcome how) {
  fstate *fs = data;
  return fs->b->dispose ? fs->b->dispose(self, fs->obj, how, fs->b->arg) : 0;
}

static const wd_resource_type factory_type = {.name = "factory",
                                              .size = sizeof(fstate),
                                              .open = factory_open,
                                              .close = factory_close};

/* ---- single flight ------------------------------------------------------- */

enum { W_WAITING, W_DONE, W_RETRY, W_FAILED };

typedef struct waiter {
  wd_wait w;
  wd_link link;
  int outcome; /* W_* */
  int rc;      /* for W_FAILED */
  char msg[256];
} waiter;

static bool waiter_cancel(wd_wait *w) {
  waiter *wt = wd__container_of(w, waiter, w);
  wd__list_unlink(&wt->link);
  return true;
}

static void wake_all(cinst *in, int outcome, int rc, const char *msg) {
  wd_link *n;
  while ((n = wd__list_pop_front(&in->waiters))) {
    waiter *wt = wd__container_of(n, waiter, link);
    wt->outcome = outcome;
    wt->rc = rc;
    if (msg) snprintf(wt->msg, sizeof wt->msg, "%s", msg);
    wd_wake(&wt->w, 0);
  }
}

/* The failure as one line for the waiters: the error and its causes. */
static void chain_message(wd_task *self, int rc, char *buf, size_t n) {
  const wd_error *e = self ? wd_task_error(self) : wd_last_error();
  if (!e || e->code != rc) {
    snprintf(buf, n, "%s", wd_strerror(rc));
    return;
  }
  size_t len = 0;
  buf[0] = '\0';
  for (; e; e = e->cause) {
    int w = snprintf(buf + len, n - len, "%s%s", len ? ": " : "", e->msg);
    if (w < 0 || (size_t)w >= n - len) break;
    len += (size_t)w;
  }
}

static bool our_cancel(wd_task *self, int rc) {
  return wd_is_cancel(rc) && wd_cancel_status(self);
}

/* Park until the open of in ends.  Returns 0 to look again, or an error
 * with nothing got. */
static int wait_open(wd_task *self, cinst *in) {
  const cbind *b = in->b;
  if (!self)
    return wd_fail(NULL, WD_EAGAIN,
                   "container '%s': '%s' is being opened by a "
                   "task",
                   b->c->name, b->key->name);
  waiter wt = {.w = {.what = "container open",
                     .name = b->key->name,
                     .on_cancel = waiter_cancel},
               .outcome = W_WAITING};
  wd__list_push_back(&in->waiters, &wt.link);
  int rc = wd_park(self, &wt.w);
  if (wt.outcome == W_WAITING) {
    /* Cancelled: on_cancel unlinked us, or wd_park never parked. */
    if (wt.link.next_) wd__list_unlink(&wt.link);
    return rc;
  }
  if (wt.outcome == W_FAILED) return wd_fail(self, wt.rc, "%s", wt.msg);
  return 0; /* W_DONE: take it; W_RETRY: open it */
}

/* ---- resolving ----------------------------------------------------------- */

static int resolve(wd_task *self, wd_container_scope *s, cbind *b,
                   const req *rq, cinst **out);

static void opening_done(wd_container_scope *s) {
  if (--s->opening_ == 0 && s->exit_wait_) wd_wake(s->exit_wait_, 0);
}

/* The scope in which a dependency d of an instance of scope s lives or is
 * made: the root for a singleton, else s (or one around it). */
static wd_container_scope *dep_scope(wd_container_scope *s, const cbind *d) {
  return d->life == WD_SINGLETON ? &d->c->root : s;
}

/* Open the provider of in, with a frame for wd_container_dep(). */
static int provide(wd_task *self, cinst *in, const req *rq) {
  cbind *b = in->b;
  frame fr = {.task = self, .in = in};
  frame_push(&fr);
  wd_resource *r;
  int rc = b->type ? wd_resource_open_(self, b->type, b->config, b->name, &r,
                                       rq->file, rq->line)
                   : wd_resource_open_(self, &factory_type, b, b->name, &r,
                                       rq->file, rq->line);
  frame_pop(&fr);
  if (rc) {
    b->c->st.open_errors++;
    return rc;
  }
  r->scoped = true; /* the container holds the owner's reference */
  in->r = r;
  in->value =
      b->type ? wd_resource_data(r) : ((fstate *)wd_resource_data(r))->obj;
  b->c->st.opened++;
  return 0;
}

/* After a failure rc of in's own provider or dependency: try the
 * fallback.  Returns 0 with in an alias of the fallback's instance, or the
 * result: rc with the fallback's failure as secondary, or a cancellation. */
static int try_fallback(wd_task *self, wd_container_scope *s, cinst *in,
                        const req *rq, int rc) {
  cbind *b = in->b;
  wd__keep k;
  wd__keep_init(&k, rc);
  wd__keep_before(&k, self);
  cinst *f;
  int frc = resolve(self, dep_scope(s, b->fb), b->fb, rq, &f);
  if (frc == 0 || our_cancel(self, frc)) {
    /* Degraded, or cancelled: the primary's failure is no longer the
     * result. */
    wd_error_free(k.held);
    k.held = NULL;
    if (frc) return frc;
    in->value = f->value;
    b->c->st.fallbacks++;
    return 0;
  }
  frc = wd_wrap(self, frc, "container '%s': fallback '%s' of '%s'", b->c->name,
                b->fb->key->name, b->key->name);
  wd__keep_after(&k, self, frc);
  return wd__keep_finish(&k, self);
}

static void unslot(wd_container_scope *s, cinst *in) {
  const cbind *b = in->b;
  if (b->life != WD_TRANSIENT && s->slots_[b->idx] == in)
    s->slots_[b->idx] = NULL;
}

/* Open in (in state opening, in s's slot unless transient): dependencies,
 * then the provider, then maybe the fallback.  Every outcome wakes the
 * waiters and leaves in either ready on s's stack or freed. */
static int open_inst(wd_task *self, wd_container_scope *s, cinst *in,
                     const req *rq, cinst **out) {
  cbind *b = in->b;
  wd_container *c = b->c;
  s->opening_++;
  int rc = 0;
  for (size_t i = 0; i < b->ndeps && !rc; i++) {
    cbind *d = b->depb[i];
    rc = resolve(self, dep_scope(s, d), d, rq, &in->deps[i]);
    if (rc && !our_cancel(self, rc))
      rc = wd_wrap(self, rc,
                   "container '%s': '%s' failed to open: dependency '%s' "
                   "failed",
                   c->name, b->key->name, d->key->name);
  }
  if (!rc) {
    rc = provide(self, in, rq);
    if (rc && !our_cancel(self, rc))
      rc = wd_wrap(self, WD_EINIT, "container '%s': '%s' failed to open",
                   c->name, b->key->name);
  }
  if (rc && !our_cancel(self, rc) && b->fb)
    rc = try_fallback(self, s, in, rq, rc);
  if (rc) {
    unslot(s, in);
    if (our_cancel(self, rc)) {
      wake_all(in, W_RETRY, 0, NULL); /* the first of them opens again */
    } else {
      char msg[256];
      chain_message(self, rc, msg, sizeof msg);
      wake_all(in, W_FAILED, rc, msg);
    }
    wd__free(in);
    opening_done(s);
    return rc;
  }
  in->state = I_READY;
  in->below = s->top_;
  s->top_ = in;
  wake_all(in, W_DONE, 0, NULL);
  opening_done(s);
  *out = in;
  return 0;
}

/* s's slot array, allocated on first need when it is not inline. */
static bool have_slots(wd_container_scope *s) {
  if (!s->slots_) s->slots_ = wd__calloc(s->nslots_, sizeof *s->slots_);
  return s->slots_ != NULL;
}

static int ensure_slots(wd_container_scope *s) {
  if (have_slots(s)) return 0;
  return wd_fail(NULL, WD_ENOMEM, "container '%s': no memory for %u slots",
                 s->c_->name, s->nslots_);
}

static int closing(wd_task *self, const wd_container_scope *s, const cbind *b) {
  return wd_fail(self, WD_ECLOSED, "container '%s': get '%s': %s", s->c_->name,
                 b->key->name,
                 s == &s->c_->root ? "the container is stopping"
                                   : "the scope is ending");
}

static cinst *new_inst(wd_task *self, const cbind *b) {
  cinst *in = wd__calloc(1, sizeof *in + b->ndeps * sizeof(cinst *));
  if (!in) {
    wd_fail(self, WD_ENOMEM, "container '%s': '%s': no memory", b->c->name,
            b->key->name);
    return NULL;
  }
  in->b = (cbind *)b;
  in->state = I_OPENING;
  wd__list_init(&in->waiters);
  return in;
}

/* The instance of b seen from s (the root for a singleton), opened if
 * needed: see wd_container_get. */
static int resolve(wd_task *self, wd_container_scope *s, cbind *b,
                   const req *rq, cinst **out) {
  if (b->life == WD_TRANSIENT) {
    if (s->closing_) return closing(self, s, b);
    int rc = wd_cancel_status(self);
    if (rc) return rc;
    cinst *in = new_inst(self, b);
    if (!in) return WD_ENOMEM;
    return open_inst(self, s, in, rq, out);
  }
  if (b->life == WD_SCOPED && s == &b->c->root) /* validate prevents it */
    return wd_fail(self, WD_EINVAL, "container '%s': scoped '%s' in the root",
                   b->c->name, b->key->name);
  for (;;) {
    cinst *in = NULL;
    wd_container_scope *t = s;
    for (; t; t = t->parent_) {
      if (t->slots_ && (in = t->slots_[b->idx])) break;
    }
    if (in && in->state == I_READY) {
      /* Borrowed from an outer scope: kept in s's slot so that the next
       * get takes the fast path (without memory, it just is not). */
      if (t != s && have_slots(s)) s->slots_[b->idx] = in;
      *out = in;
      return 0;
    }
    int rc;
    if (in) {
      if ((rc = wait_open(self, in))) return rc;
      continue;
    }
    if (s->closing_) return closing(self, s, b);
    if ((rc = wd_cancel_status(self))) return rc;
    if ((rc = ensure_slots(s))) return rc;
    if (!(in = new_inst(self, b))) return WD_ENOMEM;
    s->slots_[b->idx] = in;
    return open_inst(self, s, in, rq, out);
  }
}

/* ---- get ----------------------------------------------------------------- */

__attribute__((noinline)) static int get_slow(wd_task *self,
                                              wd_container_scope *s,
                                              const wd_key *key, void **out,
                                              const char *file, int line) {
  if (!out) return wd_fail(self, WD_EINVAL, "wd_container_get: NULL out");
  *out = NULL;
  if (!s || !s->entered_ || !s->c_ || s == &s->c_->root)
    return wd_fail(self, WD_EINVAL, "wd_container_get: %s",
                   !s ? "NULL scope" : "scope not entered");
  wd_container *c = s->c_;
  if (!key || !key->name)
    return wd_fail(self, WD_EINVAL, "container '%s': get: %s", c->name,
                   !key ? "NULL key" : "key without a name");
  cbind *b = find(c, key);
  if (!b)
    return wd_fail(self, -ENOENT,
                   "container '%s': no binding for '%s' (asked for by %s%s%s "
                   "at %s:%d)",
                   c->name, key->name, self ? "task '" : "a synchronous caller",
                   self ? wd_task_name(self) : "", self ? "'" : "",
                   file ? file : "?", line);
  req rq = {file, line};
  cinst *in;
  int rc = resolve(self, b->life == WD_SINGLETON ? &c->root : s, b, &rq, &in);
  if (rc) return rc;
  *out = in->value;
  return 0;
}

int wd_container_get_(wd_task *self, wd_container_scope *s, const wd_key *key,
                      void **out, const char *file, int line) {
  /* The instance already open in s's slot (or the root's): a probe, a
   * load and a test. */
  if (__builtin_expect(out && key && s && s->entered_, 1)) {
    const wd_container *c = s->c_;
    const tab_entry *e = find_entry(c, key);
    if (__builtin_expect(e->life != WD_TRANSIENT && e->key, 1)) {
      void **slots = e->life == WD_SCOPED ? s->slots_ : c->root.slots_;
      const cinst *in = slots ? slots[e->idx] : NULL;
      if (in && in->state == I_READY) {
        *out = in->value;
        return 0;
      }
    }
  }
  return get_slow(self, s, key, out, file, line);
}

/* ---- scopes -------------------------------------------------------------- */

int wd_container_scope_enter(wd_task *self, wd_container *c,
                             wd_container_scope *parent,
                             wd_container_scope *s) {
  if (!s)
    return wd_fail(self, WD_EINVAL, "wd_container_scope_enter: NULL scope");
  s->entered_ = false;
  if (!c)
    return wd_fail(self, WD_EINVAL, "wd_container_scope_enter: NULL container");
  if (parent && (parent->c_ != c || !parent->entered_ || parent->closing_ ||
                 parent == &c->root))
    return wd_fail(self, WD_EINVAL,
                   "container '%s': scope enter: the parent is %s", c->name,
                   parent->c_ != c ? "a scope of another container"
                                   : "not entered");
  int rc = wd_container_validate(c);
  if (rc) return rc;
  *s = (wd_container_scope){.c_ = c,
                            .parent_ = parent,
                            .owner_ = self,
                            .nslots_ = (uint32_t)c->nscoped,
                            .entered_ = true};
  if (c->nscoped <= WD_CONTAINER_SCOPE_INLINE) s->slots_ = s->inline_;
  if (parent) parent->nchildren_++;
  c->nscopes++;
  return 0;
}

/* Wait, shielded, until nothing opens in s any more. */
static int wait_openings(wd_task *self, wd_container_scope *s) {
  if (!s->opening_) return 0;
  if (!self)
    return wd_fail(NULL, WD_EBUSY,
                   "container '%s': %u open%s in flight in a task", s->c_->name,
                   s->opening_, s->opening_ == 1 ? "" : "s");
  wd_cancel_scope sh;
  bool shielded =
      wd_cancel_scope_enter(self, &sh, &(wd_cancel_opts){.shield = true}) == 0;
  while (s->opening_) {
    wd_wait w = {.what = "container opens", .name = s->c_->name};
    s->exit_wait_ = &w;
    int rc = wd_park(self, &w);
    s->exit_wait_ = NULL;
    if (rc) break; /* could not park: no shield and cancelled */
  }
  if (shielded) wd_cancel_scope_exit(self, &sh, 0);
  return 0;
}

/* Close what s owns, newest first. */
static int release(wd_task *self, wd_container_scope *s, int rc) {
  wd_container *c = s->c_;
  wd__keep k;
  wd__keep_init(&k, rc);
  cinst *in;
  while ((in = s->top_)) {
    s->top_ = in->below;
    if (in->b->life != WD_TRANSIENT && s->slots_[in->b->idx] == in)
      s->slots_[in->b->idx] = NULL;
    wd_resource *r = in->r;
    wd__free(in);
    if (!r) continue; /* a fallback's alias */
    wd__keep_before(&k, self);
    int crc = wd__resource_close_once(self, r, wd__keep_outcome(&k));
    c->st.closed++;
    if (crc < 0) c->st.close_errors++;
    wd__keep_after(&k, self, crc);
    r->owner_gone = true;
    wd_resource_unref(r);
  }
  return wd__keep_finish(&k, self);
}

int wd_container_scope_exit(wd_task *self, wd_container_scope *s, int rc) {
  if (!s || !s->entered_ || s->owner_ != self || !s->c_ || s == &s->c_->root)
    return wd_fail(self, WD_EINVAL, "wd_container_scope_exit: %s",
                   !s ? "NULL scope" : "scope not entered by this task");
  wd_container *c = s->c_;
  if (s->nchildren_)
    return wd_fail(self, WD_EINVAL,
                   "container '%s': scope exit: %u nested scope%s still "
                   "entered",
                   c->name, s->nchildren_, s->nchildren_ == 1 ? "" : "s");
  s->closing_ = true;
  int wrc = wait_openings(self, s);
  if (wrc) {
    s->closing_ = false;
    return wrc;
  }
  int res = release(self, s, rc);
  if (s->slots_ != s->inline_) wd__free(s->slots_);
  s->slots_ = NULL;
  s->entered_ = false;
  s->closing_ = false;
  if (s->parent_) s->parent_->nchildren_--;
  c->nscopes--;
  return res ? res : rc;
}

wd_container_scope *wd_container_scope_begin_(wd_container_scope *s,
                                              wd_task *self, wd_container *c,
                                              wd_container_scope *parent,
                                              int *rcp) {
  int rc = wd_container_scope_enter(self, c, parent, s);
  if (rc) {
    *rcp = rc;
    return NULL;
  }
  s->rcp_ = rcp;
  return s;
}

void wd_container_scope_cleanup_(wd_container_scope *s) {
  if (!s->entered_) return;
  int *rcp = s->rcp_;
  int rc = wd_container_scope_exit(s->owner_, s, rcp ? *rcp : 0);
  if (rcp) *rcp = rc;
}

/* ---- start, stop, close -------------------------------------------------- */

/* Close the singletons.  *refused: nothing was done (scopes entered, or
 * opens in flight that a synchronous caller cannot wait for). */
static int stop_root(wd_task *self, wd_container *c, int rc, bool *refused) {
  wd_container_scope *root = &c->root;
  *refused = false;
  root->closing_ = true;
  int wrc = wait_openings(self, root);
  if (wrc) {
    root->closing_ = false;
    *refused = true;
    return wrc;
  }
  int res = release(self, root, rc);
  if (root->slots_) memset(root->slots_, 0, root->nslots_ * sizeof(void *));
  root->closing_ = false;
  return res ? res : rc;
}

int wd_container_stop(wd_task *self, wd_container *c, int rc) {
  if (!c) return wd_fail(self, WD_EINVAL, "wd_container_stop: NULL container");
  if (c->nscopes)
    return wd_fail(self, WD_EBUSY,
                   "container '%s': stop: %zu scope%s still entered", c->name,
                   c->nscopes, c->nscopes == 1 ? "" : "s");
  bool refused;
  return stop_root(self, c, rc, &refused);
}

int wd_container_close(wd_task *self, wd_container *c, int rc) {
  if (!c) return rc;
  if (c->nscopes)
    return wd_fail(self, WD_EBUSY,
                   "container '%s': close: %zu scope%s still entered", c->name,
                   c->nscopes, c->nscopes == 1 ? "" : "s");
  bool refused;
  int res = stop_root(self, c, rc, &refused);
  if (refused) return res;
  for (size_t i = 0; i < c->nbinds; i++)
    wd__free(c->binds[i]);
  wd__free(c->binds);
  wd__free(c->tab);
  wd__free(c->order);
  if (c->root.slots_ != c->root.inline_) wd__free(c->root.slots_);
  wd__free(c);
  return res;
}

typedef struct start_arg {
  cbind *b;
  const req *rq;
} start_arg;

static int start_one(wd_task *self, void *arg) {
  start_arg *a = arg;
  cinst *in;
  return resolve(self, &a->b->c->root, a->b, a->rq, &in);
}

/* The job whose failure came first: the group lists failures in the order
 * they happened, by task id. */
static size_t first_failed(wd_task *self, const wd_job *jobs, size_t n) {
  const wd_error *e = wd_task_error(self);
  if (e && e->code == WD_EGROUP) {
    for (size_t k = 0; k < e->nchildren; k++) {
      for (size_t i = 0; i < n; i++) {
        if (jobs[i].h.id == e->children[k]->task_id) return i;
      }
    }
  }
  for (size_t i = 0; i < n; i++) {
    int st = jobs[i].h.status;
    if (st < 0 && !wd_is_cancel(st)) return i;
  }
  return n;
}

/* A start failed: all or none, unless scopes already use the singletons
 * (then they stay, for wd_container_stop). */
static int start_undo(wd_task *self, wd_container *c, int rc) {
  if (c->nscopes) return rc;
  bool refused;
  return stop_root(self, c, rc, &refused);
}

static int start_sync(wd_container *c, const req *rq) {
  for (size_t k = 0; k < c->nbinds; k++) {
    cbind *b = c->binds[c->order[k]];
    if (b->life != WD_SINGLETON) continue;
    cinst *in;
    int rc = resolve(NULL, &c->root, b, rq, &in);
    if (rc) {
      rc = wd_wrap(NULL, rc, "container '%s': start failed: '%s' did not open",
                   c->name, b->key->name);
      return start_undo(NULL, c, rc);
    }
  }
  return 0;
}

int wd_container_start_(wd_task *self, wd_container *c, const char *file,
                        int line) {
  if (!c) return wd_fail(self, WD_EINVAL, "wd_container_start: NULL container");
  int rc = wd_container_validate(c);
  if (rc) return rc;
  if (c->root.closing_)
    return wd_fail(self, WD_ECLOSED, "container '%s': start while stopping",
                   c->name);
  req rq = {file, line};
  if (!self) return start_sync(c, &rq);
  size_t n = c->nsingle;
  if (n == 0) return 0;
  wd_job *jobs = wd__malloc(n * (sizeof *jobs + sizeof(start_arg)));
  if (!jobs)
    return wd_fail(self, WD_ENOMEM,
                   "container '%s': start: no memory for %zu singletons",
                   c->name, n);
  start_arg *args = (start_arg *)(jobs + n);
  size_t j = 0;
  for (size_t k = 0; k < c->nbinds; k++) {
    cbind *b = c->binds[c->order[k]];
    if (b->life != WD_SINGLETON) continue;
    args[j] = (start_arg){b, &rq};
    jobs[j] = (wd_job){.fn = start_one, .arg = &args[j], .name = b->name};
    j++;
  }
  rc = wd_run_tasks(self, jobs, n, &(wd_group_opts){.name = "container start"});
  if (rc == WD_EGROUP) {
    size_t f = first_failed(self, jobs, n);
    if (f < n)
      rc = wd_wrap(self, jobs[f].h.status,
                   "container '%s': start failed: '%s' did not open", c->name,
                   args[f].b->key->name);
  }
  wd__free(jobs);
  return rc ? start_undo(self, c, rc) : 0;
}

void wd_container_stats_get(const wd_container *c, wd_container_stats *out) {
  if (!out) return;
  if (!c) {
    *out = (wd_container_stats){0};
    return;
  }
  *out = c->st;
  out->bindings = c->nbinds;
  out->live = c->st.opened - c->st.closed;
}
