/* warden/container.h - the container: dependency injection with lifetimes
 * and resource scopes.
 *
 * Bind keys (static descriptors) to providers, each with a lifetime and
 * the keys it depends on; then get instances by key.  An instance is opened
 * on first access, after its dependencies, and closed with the scope or
 * container that owns it, in reverse order of creation:
 *
 *   static const wd_key DB = {"db"}, REPO = {"repo"};
 *
 *   wd_container *c;
 *   wd_container_open(&c, "app");
 *   wd_container_bind(c, &DB, &(wd_binding){
 *       .lifetime = WD_SINGLETON, .type = &pg_type, .config = &pg_cfg});
 *   wd_container_bind(c, &REPO, &(wd_binding){
 *       .lifetime = WD_SCOPED, .factory = repo_new, .dispose = repo_free,
 *       .deps = (const wd_key *[]){&DB, NULL}});
 *   rc = wd_container_start(self, c);         // singletons, concurrently
 *
 *   int rc = 0;
 *   WD_CONTAINER_SCOPE(self, c, NULL, sc, rc) {  // per request
 *     struct repo *repo;
 *     if ((rc = wd_container_get(self, sc, &REPO, (void **)&repo))) break;
 *     rc = handle(self, repo);
 *   }                           // repo disposed here, told rc's outcome
 *   rc = wd_container_close(self, c, rc);      // db closed here
 *
 * Lifetimes:
 *   - WD_SINGLETON: one instance per container, closed by
 *     wd_container_stop() or wd_container_close();
 *   - WD_SCOPED: one instance per container scope, closed when the scope
 *     ends.  A scope sees the instances of the scopes it is nested in: a
 *     get finds the instance of the innermost scope that has one, and opens
 *     a new one in the scope it was asked in only when none has;
 *   - WD_TRANSIENT: a new instance on every get (and for every dependent),
 *     owned by the scope it was made for.
 *
 * Providers are one of two kinds, and both are resources (resource.h): the
 * registry counts them, wd_dump() lists them, the leak report names them,
 * and they follow the resource rules (an open that fails leaves nothing to
 * close; close runs once, shielded, within a grace deadline, told how the
 * work ended).
 *   - A resource type and its config (.type, .config): the instance is the
 *     resource's state, wd_resource_data().  Counted under the type.
 *   - A plain factory function (.factory, .dispose, .arg): the instance is
 *     the pointer the factory returns; dispose releases it.  Counted under
 *     the one resource type named "factory".
 * A provider reads the instances of the keys it declared in .deps with
 * wd_container_dep(), from inside its open or factory: they are open by
 * then, and they are closed after it.
 *
 * The graph is checked before first use (wd_container_validate): every
 * dependency bound, no cycle ("dependency cycle: a -> b -> c -> a"), no
 * singleton depending on a scoped key directly or through transients (a
 * captive dependency: the singleton would keep using it after its scope
 * closed it).  After that the container is frozen: no more binds.
 *
 * A container belongs to one runtime and may be used by any of its tasks;
 * or, with self NULL, synchronously outside tasks, for providers whose
 * open and close do not block.
 */
#ifndef WARDEN_CONTAINER_H
#define WARDEN_CONTAINER_H

#include "resource.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A key: a static descriptor whose address is its identity.
 *   static const wd_key DB = {"db"};
 * The name (required, static) appears in errors and is the default name of
 * the key's instances. */
typedef struct wd_key {
  const char *name;
} wd_key;

typedef enum wd_lifetime {
  WD_SINGLETON = 0, /* one per container (the default) */
  WD_SCOPED = 1,    /* one per container scope */
  WD_TRANSIENT = 2, /* one per get */
} wd_lifetime;

/* "singleton", "scoped" or "transient". */
const char *wd_lifetime_name(wd_lifetime l);

/* A factory: make the instance and store it in *out.  Returns 0 or an
 * error after releasing what it made.  May block (self NULL in synchronous
 * use: then it must not). */
typedef int (*wd_factory_fn)(wd_task *self, void *arg, void **out);

/* Release what a factory made, told how the work around it ended.  Runs
 * once, shielded, within WD_RESOURCE_GRACE_DEFAULT.  Returns 0 or an
 * error (counted; the instance is gone either way). */
typedef int (*wd_dispose_fn)(wd_task *self, void *obj, wd_outcome how,
                             void *arg);

/* How to provide a key; all zero but the provider means the defaults.
 * Give exactly one provider: .type, or .factory. */
typedef struct wd_binding {
  wd_lifetime lifetime;
  const wd_resource_type *type; /* a resource type (static) */
  const void *config;           /* its config, borrowed: must outlive c */
  wd_factory_fn factory;        /* or a factory */
  wd_dispose_fn dispose;        /* NULL: nothing to release */
  void *arg;                    /* for factory and dispose, borrowed */
  /* The keys the provider needs, NULL-terminated (the array is copied;
   * the keys are borrowed and static).  They are opened first, before
   * this one, and closed after it. */
  const wd_key *const *deps;
  /* A key tried when this provider fails to open (not when the caller is
   * cancelled): its instance is then this key's, for the lifetime of this
   * key's slot (graceful degradation).  Checked like a dependency.  NULL:
   * none. */
  const wd_key *fallback;
  const char *name; /* of the instances (copied); NULL: the key's name */
} wd_binding;

typedef struct wd_container wd_container;

/* Make an empty container named name (copied, truncated to
 * WD_RESOURCE_NAME_MAX - 1 bytes; NULL: "container").  Opens nothing.
 * The caller owns *out until wd_container_close().  Checkpoint: no.
 * Returns 0 and stores it in *out, or WD_EINVAL (NULL out), WD_ENOMEM with
 * *out NULL. */
int wd_container_open(wd_container **out, const char *name);

/* Bind key to the provider b describes (b is read, not kept: its deps array
 * and name are copied; a compound literal is fine, as in the file comment).
 * Checks what can be checked now: the provider, a key bound twice, a key that
 * depends on itself, and a captive dependency between this key and keys already
 * bound; the rest is checked by wd_container_validate().  Checkpoint: no.
 * Returns 0, or with nothing bound: WD_EINVAL (NULL c, key, b, a key
 * without a name, none or both providers, a bad type, a bad lifetime, a
 * nameless key in deps, a self-dependency, a captive dependency),
 * WD_EBUSY (key already bound, or c frozen by its first use), WD_ENOMEM.
 * Each error names the key and the container. */
#define wd_container_bind(c, key, ...)                                         \
  wd_container_bind_((c), (key), (__VA_ARGS__), __FILE__, __LINE__)
int wd_container_bind_(wd_container *c, const wd_key *key, const wd_binding *b,
                       const char *file, int line);

/* Check the whole graph and freeze c: every dependency and fallback bound,
 * no cycle, no captive dependency.  Runs by itself at c's first use (a
 * scope entered, a start), so calling it is only a way to find errors
 * early.  Idempotent once it succeeded.  Checkpoint: no.
 * Returns 0; -ENOENT "container 'app': no binding for 'cache' (a dependency
 * of 'repo', bound at app.c:12)"; WD_EINVAL "container 'app': dependency
 * cycle: a -> b -> c -> a" or "... singleton 'a' depends on scoped 'c'
 * (a -> b -> c): a captive dependency"; WD_ENOMEM.  On error c is not
 * frozen: bind what is missing and try again. */
int wd_container_validate(wd_container *c);

/* Open every singleton now (eagerly), each in a task of its own in one
 * group, deps first: those that do not depend on each other open
 * concurrently, the others as soon as what they need is open.  Singletons
 * already open are kept.  If one fails, the others are cancelled and those
 * open are closed in reverse (all or none, unless scopes of c are entered:
 * then they stay, for wd_container_stop).  self NULL: one after the other
 * in dependency order, on the calling thread.
 * Checkpoint: yes.  Returns 0; what validate returns; WD_ECANCELED /
 * WD_ETIMEDOUT; WD_ECLOSED (c is stopping); WD_ENOMEM; or the failed
 * singleton's code - WD_EINIT for a provider that failed - with the
 * message "container 'app': start failed: 'db' did not open" and, as its
 * cause, the group's error listing every failure. */
#define wd_container_start(self, c)                                            \
  wd_container_start_((self), (c), __FILE__, __LINE__)
int wd_container_start_(wd_task *self, wd_container *c, const char *file,
                        int line);

/* Close c's singletons in reverse order of creation, each told
 * wd_outcome_of(rc) (or error once an earlier close failed), waiting for
 * opens in flight first.  Later gets open them again.
 * Checkpoint: no (closes are shielded, each within its grace).
 * Returns rc when rc < 0 (close errors attached to it as secondary), else
 * the first close error, or 0; WD_EBUSY with nothing closed when scopes of
 * c are still entered (or, with self NULL, a task is opening a singleton);
 * WD_EINVAL for a NULL c. */
int wd_container_stop(wd_task *self, wd_container *c, int rc);

/* wd_container_stop(self, c, rc), then free c.  NULL c returns rc.
 * Checkpoint: no.  Returns what stop returns; on WD_EBUSY c is left as it
 * was, still owned by the caller. */
int wd_container_close(wd_task *self, wd_container *c, int rc);

/* ---- scopes ---------------------------------------------------------------
 * A container scope: the scoped and transient instances made inside it,
 * closed in reverse order of creation when it ends, each told how it ended.
 * Lives in the caller's memory and must not be moved while entered.  The
 * task that entered it exits it; any task of the runtime may get from it
 * meanwhile (tasks spawned inside it, which must end before it does). */

#define WD_CONTAINER_SCOPE_INLINE 8

typedef struct wd_container_scope {
  void **slots_; /* an instance per scoped key, or NULL until needed */
  struct wd_container *c_;
  struct wd_container_scope *parent_;
  wd_task *owner_;
  void *top_;                 /* the newest instance it owns */
  struct wd_wait *exit_wait_; /* its exit, waiting for opens in flight */
  int *rcp_;                  /* WD_CONTAINER_SCOPE's result variable */
  uint32_t nslots_, opening_, nchildren_;
  bool entered_, closing_;
  void *inline_[WD_CONTAINER_SCOPE_INLINE];
} wd_container_scope;

/* Enter s, a scope of c nested in parent (NULL: a top-level scope; else a
 * scope of c still entered, which must not end before s).  Validates c
 * first if it was not.  Allocates nothing.  Checkpoint: no.
 * Returns 0; what wd_container_validate() returns; or WD_EINVAL (NULL c or
 * s, a parent of another container or not entered). */
int wd_container_scope_enter(wd_task *self, wd_container *c,
                             wd_container_scope *parent, wd_container_scope *s);

/* End s: wait for the opens in flight in it, then close every instance it
 * owns in reverse order of creation, each told wd_outcome_of(rc) - or
 * error once an earlier close failed - going on past failures.
 * Checkpoint: no (shielded: closes and the wait are bounded by the
 * providers' grace deadlines).
 * Returns rc when rc < 0 (close errors attached as secondary), else the
 * first close error, or 0; WD_EINVAL with nothing closed when s was not
 * entered by self or scopes nested in s are still entered. */
int wd_container_scope_exit(wd_task *self, wd_container_scope *s, int rc);

/* The instance bound to key, seen from s, opened now if needed: a
 * singleton from c, a scoped key from s or the scopes around it (opened in
 * s when none has it), a transient made anew and owned by s.  Concurrent
 * first gets share one open; a failed open is reported to each of them
 * and retried by the next get; a getter cancelled while it opens cancels
 * that attempt only - the next waiter opens again.  The instance is
 * borrowed: valid until its scope ends (its container stops, for a
 * singleton).
 * Checkpoint: yes, when it opens or waits for an open; a get of an
 * instance already open returns it without looking at cancellation.
 * self NULL: synchronous, cannot wait: WD_EAGAIN while a task opens it.
 * Returns 0 and stores the instance in *out; or, with *out NULL:
 * -ENOENT "container 'app': no binding for 'cache' (asked for by task
 * 'main' at app.c:42)"; WD_EINIT "container 'app': 'db' failed to open"
 * with the provider's error as cause (or "'repo' failed to open:
 * dependency 'db' failed" with the dependency's); WD_ECANCELED /
 * WD_ETIMEDOUT; WD_ECLOSED (s or c is ending); WD_EAGAIN; WD_ENOMEM;
 * WD_EINVAL (NULL key, out or s, s not entered). */
#define wd_container_get(self, s, key, out)                                    \
  wd_container_get_((self), (s), (key), (out), __FILE__, __LINE__)
int wd_container_get_(wd_task *self, wd_container_scope *s, const wd_key *key,
                      void **out, const char *file, int line);

/* Inside a provider's open (or factory), in the task that runs it: the
 * instance of key, one of the dependencies it declared - open by now.
 * Checkpoint: no.  Returns 0 and stores it in *out; or WD_EINVAL with *out
 * NULL: not inside a provider's open, or key not among its deps. */
int wd_container_dep(wd_task *self, const wd_key *key, void **out);

/* Counters of c. */
typedef struct wd_container_stats {
  size_t bindings;
  uint64_t opened;       /* instances opened by their provider */
  uint64_t open_errors;  /* provider opens that failed or were cancelled */
  uint64_t fallbacks;    /* failed opens replaced by a fallback */
  uint64_t closed;       /* instances closed */
  uint64_t close_errors; /* closes that reported an error */
  uint64_t live;         /* instances open now: opened - closed */
} wd_container_stats;

/* Fill *out with c's counters.  Checkpoint: no. */
void wd_container_stats_get(const wd_container *c, wd_container_stats *out);

/* ---- the block macro ------------------------------------------------------
 * WD_CONTAINER_SCOPE(self, c, parent, s, rc) { ... } declares
 * `wd_container_scope *s` for the block and ends the scope however control
 * leaves it, with the block's result read from and the scope's result
 * written back to the int variable rc (see WD_SCOPE in scope.h).  If the
 * scope cannot be entered, the block is skipped with the error in rc. */
#if defined(__GNUC__) || defined(__clang__)
#define WD_CONTAINER_SCOPE(self, c, parent, s, rc)                             \
  for (wd_container_scope s##_wd_cscope_                                       \
       __attribute__((cleanup(wd_container_scope_cleanup_))),                  \
       *s = wd_container_scope_begin_(&s##_wd_cscope_, (self), (c), (parent),  \
                                      &(rc));                                  \
       s; s = NULL)
#endif

/* The macro's machinery. */
wd_container_scope *wd_container_scope_begin_(wd_container_scope *s,
                                              wd_task *self, wd_container *c,
                                              wd_container_scope *parent,
                                              int *rcp);
void wd_container_scope_cleanup_(wd_container_scope *s);

#ifdef __cplusplus
}
#endif
#endif
