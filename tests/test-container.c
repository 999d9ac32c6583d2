/* The container: lifetimes, nested scopes, single flight under a crowd of
 * getters, the graph checks (cycles named, missing bindings named with who
 * asked, captive dependencies), provider failures as WD_EINIT with their
 * cause, fallbacks, the eager start (order and parallelism) and its
 * undoing, reverse disposal with outcomes, cancellation during a get,
 * factories and wd_container_dep, the block macro, synchronous use, bad
 * arguments and every allocation failure point.
 *
 * Providers append to one log ("o:db" when an open starts, "c:db:error"
 * when a close runs), so a test reads order and outcomes at a glance.
 * Time runs on the virtual clock. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* ---- a log and a probe provider ------------------------------------------ */

static char logbuf[2048];

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...) {
  size_t n = strlen(logbuf);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(logbuf + n, sizeof logbuf - n, fmt, ap);
  va_end(ap);
}

typedef struct pcfg {
  const char *name;
  wd_time open_sleep;
  int open_fail;  /* returned by failing opens */
  int fail_opens; /* how many opens fail; 0 with open_fail: all */
  int close_fail;
  int calls, opened, closed; /* counted by the probe */
  wd_outcome how;            /* the last close's */
  wd_time opened_at;
} pcfg;

typedef struct probe {
  pcfg *cfg;
  int serial;
} probe;

static int serial;

static int probe_open(wd_task *self, void *data, const void *config) {
  pcfg *c = (pcfg *)config;
  c->calls++;
  say("o:%s ", c->name);
  if (c->open_sleep) {
    int rc = wd_sleep(self, c->open_sleep);
    if (rc) return rc;
  }
  if (c->open_fail && (c->fail_opens == 0 || c->calls <= c->fail_opens))
    return wd_fail(self, c->open_fail, "%s: backend down", c->name);
  probe *p = data;
  p->cfg = c;
  p->serial = ++serial;
  c->opened++;
  c->opened_at = self ? wd_now(self) : 0;
  return 0;
}

static int probe_close(wd_task *self, void *data, wd_outcome how) {
  probe *p = data;
  p->cfg->closed++;
  p->cfg->how = how;
  say("c:%s:%s ", p->cfg->name, wd_outcome_name(how));
  if (p->cfg->close_fail)
    return wd_fail(self, p->cfg->close_fail, "%s: close broke", p->cfg->name);
  return 0;
}

static const wd_resource_type probe_type = {.name = "probe",
                                            .size = sizeof(probe),
                                            .open = probe_open,
                                            .close = probe_close};

static void reset(void) {
  logbuf[0] = '\0';
  serial = 0;
}

static const wd_key KA = {"a"}, KB = {"b"}, KC = {"c"}, KD = {"d"};
static const wd_key DB = {"db"}, REPO = {"repo"}, CACHE = {"cache"},
                    LOCAL = {"local"}, TX = {"tx"}, NOPE = {"nope"};

static int bind_probe(wd_container *c, const wd_key *k, wd_lifetime l,
                      pcfg *cfg, const wd_key *const *deps,
                      const wd_key *fallback) {
  return wd_container_bind(c, k,
                           &(wd_binding){.lifetime = l,
                                         .type = &probe_type,
                                         .config = cfg,
                                         .deps = deps,
                                         .fallback = fallback});
}

static const char *last_msg(void) {
  const wd_error *e = wd_last_error();
  return e ? e->msg : "";
}

static int get_probe(wd_task *self, wd_container_scope *s, const wd_key *k,
                     probe **out) {
  return wd_container_get(self, s, k, (void **)out);
}

/* ---- lifetimes ----------------------------------------------------------- */

typedef struct lifetimes {
  pcfg s, sc, t;
  int rc_b, rc_close;
} lifetimes;

static int lifetimes_main(wd_task *self, void *arg) {
  lifetimes *L = arg;
  wd_container *c;
  cr_assert_eq(wd_container_open(&c, "app"), 0);
  cr_assert_eq(bind_probe(c, &KA, WD_SINGLETON, &L->s, NULL, NULL), 0);
  cr_assert_eq(bind_probe(c, &KB, WD_SCOPED, &L->sc, NULL, NULL), 0);
  cr_assert_eq(bind_probe(c, &KC, WD_TRANSIENT, &L->t, NULL, NULL), 0);

  wd_container_scope a, b;
  probe *s1, *s2, *sc1, *sc2, *t1, *t2;
  cr_assert_eq(wd_container_scope_enter(self, c, NULL, &a), 0);
  cr_assert_eq(get_probe(self, &a, &KA, &s1), 0);
  cr_assert_eq(get_probe(self, &a, &KA, &s2), 0);
  cr_assert_eq(s1, s2, "a singleton is one instance");
  cr_assert_eq(get_probe(self, &a, &KB, &sc1), 0);
  cr_assert_eq(get_probe(self, &a, &KB, &sc2), 0);
  cr_assert_eq(sc1, sc2, "a scoped key is one instance per scope");
  cr_assert_eq(get_probe(self, &a, &KC, &t1), 0);
  cr_assert_eq(get_probe(self, &a, &KC, &t2), 0);
  cr_assert_neq(t1->serial, t2->serial, "a transient is new on every get");
  int sc_serial = sc1->serial, s_serial = s1->serial;
  cr_assert_eq(wd_container_scope_exit(self, &a, 0), 0);

  cr_assert_eq(wd_container_scope_enter(self, c, NULL, &b), 0);
  cr_assert_eq(get_probe(self, &b, &KA, &s2), 0);
  cr_assert_eq(s2->serial, s_serial, "the singleton outlives the scope");
  cr_assert_eq(get_probe(self, &b, &KB, &sc2), 0);
  cr_assert_neq(sc2->serial, sc_serial, "another scope, another instance");
  L->rc_b = wd_container_scope_exit(self, &b, WD_EPERM);
  wd_container_stats st;
  wd_container_stats_get(c, &st);
  cr_assert_eq(st.bindings, 3);
  cr_assert_eq(st.opened, 5);
  cr_assert_eq(st.closed, 4);
  cr_assert_eq(st.live, 1, "the singleton");
  L->rc_close = wd_container_close(self, c, 0);
  return 0;
}

Test(container, singleton_scoped_and_transient_lifetimes) {
  reset();
  lifetimes L = {.s = {.name = "s"}, .sc = {.name = "sc"}, .t = {.name = "t"}};
  cr_assert_eq(run_virtual(lifetimes_main, &L), 0);
  cr_assert_str_eq(logbuf, "o:s o:sc o:t o:t c:t:ok c:t:ok c:sc:ok "
                           "o:sc c:sc:error c:s:ok ");
  cr_assert_eq(L.rc_b, WD_EPERM);
  cr_assert_eq(L.rc_close, 0);
  cr_assert_eq(L.s.opened, 1);
  cr_assert_eq(L.sc.opened, 2);
  cr_assert_eq(L.t.opened, 2);
  assert_no_leaks();
}

/* ---- nested scopes ------------------------------------------------------- */

typedef struct nested {
  pcfg db, tx, repo;
} nested;

static int nested_main(wd_task *self, void *arg) {
  nested *N = arg;
  wd_container *c;
  wd_container_open(&c, "app");
  bind_probe(c, &DB, WD_SCOPED, &N->db, NULL, NULL);
  bind_probe(c, &TX, WD_SCOPED, &N->tx, NULL, NULL);
  bind_probe(c, &REPO, WD_SCOPED, &N->repo, (const wd_key *[]){&DB, NULL},
             NULL);
  wd_container_scope outer, inner;
  probe *db, *db_in, *tx_in, *repo_in, *tx;
  cr_assert_eq(wd_container_scope_enter(self, c, NULL, &outer), 0);
  cr_assert_eq(get_probe(self, &outer, &DB, &db), 0);
  cr_assert_eq(wd_container_scope_enter(self, c, &outer, &inner), 0);
  cr_assert_eq(get_probe(self, &inner, &DB, &db_in), 0);
  cr_assert_eq(db_in, db, "the inner scope sees the outer's instance");
  cr_assert_eq(get_probe(self, &inner, &DB, &db_in), 0);
  cr_assert_eq(db_in, db);
  cr_assert_eq(get_probe(self, &inner, &TX, &tx_in), 0);
  cr_assert_eq(get_probe(self, &inner, &REPO, &repo_in), 0);
  cr_assert_eq(N->db.opened, 1, "repo's db is the outer's too");
  say("| ");
  cr_assert_eq(wd_container_scope_exit(self, &outer, 0), WD_EINVAL,
               "the outer scope cannot end first");
  cr_assert_str_eq(last_msg(),
                   "container 'app': scope exit: 1 nested scope still entered");
  cr_assert_eq(wd_container_scope_exit(self, &inner, 0), 0);
  say("| ");
  cr_assert_eq(get_probe(self, &outer, &DB, &db_in), 0);
  cr_assert_eq(db_in, db, "the outer's instance is still there");
  cr_assert_eq(get_probe(self, &outer, &TX, &tx), 0);
  cr_assert_eq(N->tx.opened, 2, "the inner tx went with the inner scope");
  cr_assert_eq(wd_container_scope_exit(self, &outer, 0), 0);
  return wd_container_close(self, c, 0);
}

Test(container, nested_scopes_see_the_outer_instances) {
  reset();
  nested N = {
      .db = {.name = "db"}, .tx = {.name = "tx"}, .repo = {.name = "repo"}};
  cr_assert_eq(run_virtual(nested_main, &N), 0);
  cr_assert_str_eq(logbuf, "o:db o:tx o:repo | c:repo:ok c:tx:ok | o:tx "
                           "c:tx:ok c:db:ok ");
  assert_no_leaks();
}

/* ---- single flight ------------------------------------------------------- */

#define CROWD 100

typedef struct getter {
  wd_container_scope *s;
  const wd_key *key;
  wd_time delay;
  int rc;
  probe *p;
  wd_time at;
  char msg[512];
  wd_handle h;
} getter;

static int getter_task(wd_task *self, void *arg) {
  getter *g = arg;
  if (g->delay) wd_sleep(self, g->delay);
  g->rc = get_probe(self, g->s, g->key, &g->p);
  g->at = wd_now(self);
  const wd_error *e = wd_task_error(self);
  if (g->rc && e) snprintf(g->msg, sizeof g->msg, "%s", e->msg);
  return 0;
}

static void spawn_getters(wd_group *g, getter *gs, size_t n,
                          wd_container_scope *s, const wd_key *key) {
  for (size_t i = 0; i < n; i++) {
    gs[i].s = s;
    gs[i].key = key;
    cr_assert_eq(
        wd_spawn(g, getter_task, &gs[i], &(wd_spawn_opts){.handle = &gs[i].h}),
        0);
  }
}

typedef struct crowd {
  pcfg db, one;
  getter scoped[CROWD], single[CROWD];
} crowd;

static int crowd_main(wd_task *self, void *arg) {
  crowd *C = arg;
  wd_container *c;
  wd_container_open(&c, "app");
  bind_probe(c, &DB, WD_SCOPED, &C->db, NULL, NULL);
  bind_probe(c, &KA, WD_SINGLETON, &C->one, NULL, NULL);
  int rc = 0;
  WD_CONTAINER_SCOPE(self, c, NULL, sc, rc) {
    wd_group g;
    wd_group_enter(self, &g, NULL);
    spawn_getters(&g, C->scoped, CROWD, sc, &DB);
    spawn_getters(&g, C->single, CROWD, sc, &KA);
    rc = wd_group_exit(self, &g, 0);
  }
  cr_assert_eq(rc, 0);
  return wd_container_close(self, c, 0);
}

Test(container, a_hundred_concurrent_first_gets_share_one_open) {
  reset();
  crowd *C = calloc(1, sizeof *C);
  C->db = (pcfg){.name = "db", .open_sleep = WD_SEC};
  C->one = (pcfg){.name = "one", .open_sleep = 2 * WD_SEC};
  cr_assert_eq(run_virtual(crowd_main, C), 0);
  cr_assert_eq(C->db.calls, 1);
  cr_assert_eq(C->one.calls, 1);
  for (int i = 0; i < CROWD; i++) {
    cr_assert_eq(C->scoped[i].rc, 0, "getter %d: %s", i, C->scoped[i].msg);
    cr_assert_eq(C->scoped[i].p, C->scoped[0].p);
    cr_assert_eq(C->scoped[i].at, WD_SEC);
    cr_assert_eq(C->single[i].rc, 0, "getter %d: %s", i, C->single[i].msg);
    cr_assert_eq(C->single[i].p, C->single[0].p);
    cr_assert_eq(C->single[i].at, 2 * WD_SEC);
  }
  cr_assert_eq(C->db.closed, 1);
  cr_assert_eq(C->one.closed, 1);
  free(C);
  assert_no_leaks();
}

/* ---- cancellation during a get ------------------------------------------- */

typedef struct cancelling {
  pcfg db;
  getter g[4];
} cancelling;

static int cancelling_main(wd_task *self, void *arg) {
  cancelling *K = arg;
  wd_container *c;
  wd_container_open(&c, "app");
  bind_probe(c, &DB, WD_SCOPED, &K->db, NULL, NULL);
  int rc = 0;
  WD_CONTAINER_SCOPE(self, c, NULL, sc, rc) {
    wd_group g;
    wd_group_enter(self, &g, NULL);
    spawn_getters(&g, K->g, 4, sc, &DB);
    wd_sleep(self, WD_SEC / 4);
    wd_handle_cancel(&K->g[2].h); /* a waiter */
    wd_sleep(self, WD_SEC / 4);
    wd_handle_cancel(&K->g[0].h); /* the opener, halfway */
    rc = wd_group_exit(self, &g, 0);
  }
  cr_assert_eq(rc, 0);
  return wd_container_close(self, c, 0);
}

Test(container, a_cancelled_get_does_not_lose_the_open_for_the_others) {
  reset();
  cancelling K = {.db = {.name = "db", .open_sleep = WD_SEC}};
  cr_assert_eq(run_virtual(cancelling_main, &K), 0);
  cr_assert_eq(K.g[0].rc, WD_ECANCELED);
  cr_assert_eq(K.g[0].at, WD_SEC / 2);
  cr_assert_eq(K.g[2].rc, WD_ECANCELED);
  cr_assert_eq(K.g[2].at, WD_SEC / 4);
  for (int i = 1; i < 4; i += 2) {
    cr_assert_eq(K.g[i].rc, 0, "getter %d: %s", i, K.g[i].msg);
    cr_assert_eq(K.g[i].at, WD_SEC / 2 + WD_SEC, "getter %d", i);
    cr_assert_eq(K.g[i].p, K.g[1].p);
  }
  cr_assert_eq(K.db.calls, 2, "the first attempt was cancelled");
  cr_assert_eq(K.db.opened, 1);
  cr_assert_eq(K.db.closed, 1);
  assert_no_leaks();
}

/* ---- an exit while another task opens ------------------------------------ */

typedef struct inflight {
  pcfg db;
  getter g;
  int sync_rc, exit_rc;
  wd_time exit_at;
} inflight;

static int inflight_main(wd_task *self, void *arg) {
  inflight *I = arg;
  wd_container *c;
  wd_container_open(&c, "app");
  bind_probe(c, &DB, WD_SCOPED, &I->db, NULL, NULL);
  /* The group outlives the scope: a misuse the exit must survive. */
  wd_group g;
  wd_group_enter(self, &g, NULL);
  wd_container_scope s;
  wd_container_scope_enter(self, c, NULL, &s);
  spawn_getters(&g, &I->g, 1, &s, &DB);
  wd_sleep(self, WD_SEC / 2);
  void *p;
  I->sync_rc = wd_container_get(NULL, &s, &DB, &p); /* cannot wait */
  I->exit_rc = wd_container_scope_exit(self, &s, 0);
  I->exit_at = wd_now(self);
  wd_group_exit(self, &g, 0);
  return wd_container_close(self, c, 0);
}

Test(container, an_exit_waits_for_an_open_in_flight) {
  reset();
  inflight I = {.db = {.name = "db", .open_sleep = WD_SEC}};
  cr_assert_eq(run_virtual(inflight_main, &I), 0);
  cr_assert_eq(I.sync_rc, WD_EAGAIN);
  cr_assert_eq(I.exit_rc, 0);
  cr_assert_eq(I.exit_at, WD_SEC, "the exit waited for the open");
  cr_assert_eq(I.g.rc, 0);
  cr_assert_eq(I.db.closed, 1, "and closed what it opened");
  assert_no_leaks();
}

/* ---- more scoped keys than a scope holds inline -------------------------- */

#define MANY 20

static wd_key many_keys[MANY];
static char many_names[MANY][16];

static int many_main(wd_task *self, void *arg) {
  pcfg *cfg = arg;
  wd_container *c;
  wd_container_open(&c, "many");
  for (int i = 0; i < MANY; i++) {
    snprintf(many_names[i], sizeof many_names[i], "k%d", i);
    many_keys[i].name = many_names[i];
    const wd_key *dep[] = {i ? &many_keys[i - 1] : NULL, NULL};
    cr_assert_eq(bind_probe(c, &many_keys[i], i % 2 ? WD_SCOPED : WD_SINGLETON,
                            cfg, i % 2 ? dep : NULL, NULL),
                 0);
  }
  int rc = 0;
  WD_CONTAINER_SCOPE(self, c, NULL, outer, rc) {
    probe *p[MANY], *q;
    for (int i = 0; i < MANY; i++)
      cr_assert_eq(get_probe(self, outer, &many_keys[i], &p[i]), 0);
    cr_assert_eq(cfg->opened, MANY);
    WD_CONTAINER_SCOPE(self, c, outer, inner, rc) {
      for (int i = 0; i < MANY; i++) {
        cr_assert_eq(get_probe(self, inner, &many_keys[i], &q), 0);
        cr_assert_eq(q, p[i], "key %d", i);
        cr_assert_eq(get_probe(self, inner, &many_keys[i], &q), 0);
        cr_assert_eq(q, p[i], "key %d, from the inner slot", i);
      }
    }
    cr_assert_eq(cfg->opened, MANY);
    cr_assert_eq(cfg->closed, 0);
  }
  cr_assert_eq(cfg->closed, MANY / 2, "the scoped ones");
  return wd_container_close(self, c, rc);
}

Test(container, more_scoped_keys_than_the_inline_slots) {
  reset();
  pcfg cfg = {.name = "m"};
  cr_assert_eq(run_virtual(many_main, &cfg), 0);
  cr_assert_eq(cfg.closed, MANY);
  assert_no_leaks();
}

/* ---- the graph checks ---------------------------------------------------- */

static int cycle_main(wd_task *self, void *arg) {
  pcfg cfg = {.name = "x"};
  wd_container *c;
  wd_container_open(&c, "app");
  cr_assert_eq(
      bind_probe(c, &KA, WD_SCOPED, &cfg, (const wd_key *[]){&KB, NULL}, NULL),
      0);
  cr_assert_eq(
      bind_probe(c, &KB, WD_SCOPED, &cfg, (const wd_key *[]){&KC, NULL}, NULL),
      0);
  cr_assert_eq(bind_probe(c, &KC, WD_SCOPED, &cfg,
                          (const wd_key *[]){&KD, &KA, NULL}, NULL),
               0);
  cr_assert_eq(bind_probe(c, &KD, WD_SCOPED, &cfg, NULL, NULL), 0);
  cr_assert_eq(wd_container_validate(c), WD_EINVAL);
  cr_assert_str_eq(last_msg(), "container 'app': dependency cycle: a -> b -> c "
                               "-> a");
  wd_container_scope s;
  cr_assert_eq(wd_container_scope_enter(self, c, NULL, &s), WD_EINVAL,
               "a scope cannot use it either");
  cr_assert_str_eq(last_msg(), "container 'app': dependency cycle: a -> b -> c "
                               "-> a");
  cr_assert_eq(wd_container_start(self, c), WD_EINVAL);
  cr_assert_eq(wd_container_close(self, c, 0), 0);

  /* A key depending on itself is refused at once, as a fallback too. */
  wd_container_open(&c, "app");
  cr_assert_eq(
      bind_probe(c, &KA, WD_SCOPED, &cfg, (const wd_key *[]){&KA, NULL}, NULL),
      WD_EINVAL);
  cr_assert_str_eq(last_msg(), "container 'app': dependency cycle: a -> a");
  cr_assert_eq(bind_probe(c, &KA, WD_SCOPED, &cfg, NULL, &KA), WD_EINVAL);
  /* A cycle through a fallback. */
  cr_assert_eq(bind_probe(c, &KA, WD_SCOPED, &cfg, NULL, &KB), 0);
  cr_assert_eq(
      bind_probe(c, &KB, WD_SCOPED, &cfg, (const wd_key *[]){&KA, NULL}, NULL),
      0);
  cr_assert_eq(wd_container_validate(c), WD_EINVAL);
  cr_assert_str_eq(last_msg(),
                   "container 'app': dependency cycle: a -> b -> a");
  return wd_container_close(self, c, 0);
}

Test(container, a_dependency_cycle_is_an_error_naming_it) {
  cr_assert_eq(run_virtual(cycle_main, NULL), 0);
  assert_no_leaks();
}

static int missing_main(wd_task *self, void *arg) {
  pcfg cfg = {.name = "x"};
  wd_container *c;
  wd_container_open(&c, "app");
  cr_assert_eq(bind_probe(c, &REPO, WD_SCOPED, &cfg,
                          (const wd_key *[]){&DB, &CACHE, NULL}, NULL),
               0);
  cr_assert_eq(bind_probe(c, &DB, WD_SINGLETON, &cfg, NULL, NULL), 0);
  cr_assert_eq(wd_container_validate(c), -ENOENT);
  cr_assert_not_null(strstr(last_msg(), "container 'app': no binding for "
                                        "'cache' (a dependency of 'repo', "
                                        "bound at "),
                     "%s", last_msg());
  cr_assert_not_null(strstr(last_msg(), "test-container.c:"), "%s", last_msg());
  /* Not frozen by the failure: bind what is missing and go on. */
  cr_assert_eq(bind_probe(c, &CACHE, WD_SCOPED, &cfg, NULL, &LOCAL), 0);
  cr_assert_eq(wd_container_validate(c), -ENOENT);
  cr_assert_not_null(strstr(last_msg(), "no binding for 'local' (the fallback "
                                        "of 'cache'"),
                     "%s", last_msg());
  cr_assert_eq(bind_probe(c, &LOCAL, WD_SCOPED, &cfg, NULL, NULL), 0);
  cr_assert_eq(wd_container_validate(c), 0);
  cr_assert_eq(wd_container_validate(c), 0, "idempotent");

  int rc = 0;
  WD_CONTAINER_SCOPE(self, c, NULL, sc, rc) {
    void *p = (void *)1;
    cr_assert_eq(wd_container_get(self, sc, &NOPE, &p), -ENOENT);
    cr_assert_null(p);
    cr_assert_not_null(strstr(last_msg(), "container 'app': no binding for "
                                          "'nope' (asked for by task 'main' "
                                          "at "),
                       "%s", last_msg());
    cr_assert_not_null(strstr(last_msg(), "test-container.c:"), "%s",
                       last_msg());
  }
  return wd_container_close(self, c, rc);
}

Test(container, a_missing_binding_names_the_key_and_who_asked) {
  cr_assert_eq(run_virtual(missing_main, NULL), 0);
  assert_no_leaks();
}

static int captive_main(wd_task *self, void *arg) {
  pcfg cfg = {.name = "x"};
  wd_container *c;
  wd_container_open(&c, "app");
  cr_assert_eq(bind_probe(c, &TX, WD_SCOPED, &cfg, NULL, NULL), 0);
  /* A singleton on a scoped key bound before it. */
  cr_assert_eq(bind_probe(c, &KA, WD_SINGLETON, &cfg,
                          (const wd_key *[]){&TX, NULL}, NULL),
               WD_EINVAL);
  cr_assert_str_eq(last_msg(),
                   "container 'app': singleton 'a' depends on scoped 'tx': a "
                   "captive dependency (the singleton would outlive it)");
  /* A scoped key bound after a singleton that depends on it. */
  cr_assert_eq(bind_probe(c, &KB, WD_SINGLETON, &cfg,
                          (const wd_key *[]){&DB, NULL}, NULL),
               0);
  cr_assert_eq(bind_probe(c, &DB, WD_SCOPED, &cfg, NULL, NULL), WD_EINVAL);
  cr_assert_str_eq(last_msg(),
                   "container 'app': singleton 'b' depends on scoped 'db': a "
                   "captive dependency (the singleton would outlive it)");
  cr_assert_eq(bind_probe(c, &DB, WD_SINGLETON, &cfg, NULL, NULL), 0);
  /* Through a transient: found when the graph is checked. */
  cr_assert_eq(bind_probe(c, &KC, WD_TRANSIENT, &cfg,
                          (const wd_key *[]){&DB, &TX, NULL}, NULL),
               0);
  cr_assert_eq(bind_probe(c, &KD, WD_SINGLETON, &cfg,
                          (const wd_key *[]){&KC, NULL}, NULL),
               0);
  cr_assert_eq(wd_container_validate(c), WD_EINVAL);
  cr_assert_str_eq(last_msg(),
                   "container 'app': singleton 'd' depends on scoped 'tx' (d "
                   "-> c -> tx): a captive dependency (the singleton would "
                   "outlive it)");
  return wd_container_close(self, c, 0);
}

Test(container, a_singleton_depending_on_a_scoped_key_is_rejected) {
  cr_assert_eq(run_virtual(captive_main, NULL), 0);
  assert_no_leaks();
}

/* ---- provider failures --------------------------------------------------- */

typedef struct failing {
  pcfg db, repo;
  getter g[3];
  int rc_db, rc_repo, rc_retry;
  char db_text[2048], repo_text[2048];
} failing;

static int failing_main(wd_task *self, void *arg) {
  failing *F = arg;
  wd_container *c;
  wd_container_open(&c, "app");
  bind_probe(c, &DB, WD_SCOPED, &F->db, NULL, NULL);
  bind_probe(c, &REPO, WD_SCOPED, &F->repo, (const wd_key *[]){&DB, NULL},
             NULL);
  int rc = 0;
  WD_CONTAINER_SCOPE(self, c, NULL, sc, rc) {
    probe *p;
    /* Three concurrent getters of one failing open: each gets it. */
    wd_group g;
    wd_group_enter(self, &g, NULL);
    spawn_getters(&g, F->g, 3, sc, &DB);
    wd_group_exit(self, &g, 0);

    F->rc_db = get_probe(self, sc, &DB, &p);
    cr_assert_null(p);
    wd_error_format(wd_task_error(self), F->db_text, sizeof F->db_text);
    F->rc_repo = get_probe(self, sc, &REPO, &p);
    wd_error_format(wd_task_error(self), F->repo_text, sizeof F->repo_text);
    const wd_error *e = wd_task_error(self);
    cr_assert_eq(e->code, WD_EINIT);
    cr_assert_str_eq(e->msg, "container 'app': 'repo' failed to open: "
                             "dependency 'db' failed");
    cr_assert_not_null(e->cause);
    cr_assert_eq(e->cause->code, WD_EINIT);
    cr_assert_str_eq(e->cause->msg, "container 'app': 'db' failed to open");
    /* The third open works: the next get retries. */
    F->rc_retry = get_probe(self, sc, &REPO, &p);
  }
  cr_assert_eq(rc, 0);
  return wd_container_close(self, c, 0);
}

Test(container, a_failing_provider_is_einit_with_its_cause_and_retried) {
  reset();
  failing F = {.db = {.name = "db",
                      .open_sleep = WD_SEC,
                      .open_fail = -ECONNREFUSED,
                      .fail_opens = 3},
               .repo = {.name = "repo"}};
  cr_assert_eq(run_virtual(failing_main, &F), 0);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(F.g[i].rc, WD_EINIT, "getter %d: %s", i,
                 wd_err_name(F.g[i].rc));
    cr_assert_eq(F.g[i].at, WD_SEC, "one open for the three");
  }
  cr_assert_str_eq(F.g[0].msg, "container 'app': 'db' failed to open");
  cr_assert_str_eq(F.g[1].msg,
                   "container 'app': 'db' failed to open: resource 'db' "
                   "(probe): open failed: db: backend down",
                   "a waiter gets the whole chain: %s", F.g[1].msg);
  cr_assert_eq(F.rc_db, WD_EINIT);
  cr_assert_not_null(strstr(F.db_text, "WD_EINIT: container 'app': 'db' failed "
                                       "to open"),
                     "%s", F.db_text);
  cr_assert_not_null(strstr(F.db_text, "resource 'db' (probe): open failed"),
                     "%s", F.db_text);
  cr_assert_not_null(strstr(F.db_text, "ECONNREFUSED: db: backend down"), "%s",
                     F.db_text);
  cr_assert_eq(F.rc_repo, WD_EINIT);
  cr_assert_not_null(strstr(F.repo_text, "db: backend down"), "%s",
                     F.repo_text);
  cr_assert_eq(F.rc_retry, 0);
  cr_assert_eq(F.db.calls, 4);
  cr_assert_eq(F.repo.calls, 1, "repo never opened on a failed db");
  cr_assert_eq(F.db.closed, 1);
  cr_assert_eq(F.repo.closed, 1);
  assert_no_leaks();
}

/* ---- fallbacks ----------------------------------------------------------- */

typedef struct degrade {
  pcfg cache, local;
  int rc;
  char text[2048];
  wd_container_stats st;
} degrade;

static int degrade_main(wd_task *self, void *arg) {
  degrade *D = arg;
  wd_container *c;
  wd_container_open(&c, "app");
  bind_probe(c, &CACHE, WD_SCOPED, &D->cache, NULL, &LOCAL);
  bind_probe(c, &LOCAL, WD_SCOPED, &D->local, NULL, NULL);
  int rc = 0;
  WD_CONTAINER_SCOPE(self, c, NULL, sc, rc) {
    probe *p = NULL, *q = NULL, *l = NULL;
    D->rc = get_probe(self, sc, &CACHE, &p);
    if (D->rc) {
      wd_error_format(wd_task_error(self), D->text, sizeof D->text);
      break;
    }
    cr_assert_eq(p->cfg, &D->local, "the fallback's instance");
    cr_assert_eq(get_probe(self, sc, &CACHE, &q), 0);
    cr_assert_eq(q, p, "degraded for the rest of the scope");
    cr_assert_eq(get_probe(self, sc, &LOCAL, &l), 0);
    cr_assert_eq(l, p, "one instance of local");
  }
  wd_container_stats_get(c, &D->st);
  return wd_container_close(self, c, 0);
}

Test(container, a_fallback_replaces_a_failing_provider) {
  reset();
  degrade D = {.cache = {.name = "cache", .open_fail = -ECONNREFUSED},
               .local = {.name = "local"}};
  cr_assert_eq(run_virtual(degrade_main, &D), 0);
  cr_assert_eq(D.rc, 0);
  cr_assert_str_eq(logbuf, "o:cache o:local c:local:ok ");
  cr_assert_eq(D.st.fallbacks, 1);
  cr_assert_eq(D.st.open_errors, 1);
  cr_assert_eq(D.cache.calls, 1, "not retried while degraded");
  assert_no_leaks();
}

Test(container, when_the_fallback_fails_too_the_first_error_stays) {
  reset();
  degrade D = {.cache = {.name = "cache", .open_fail = -ECONNREFUSED},
               .local = {.name = "local", .open_fail = WD_EPERM}};
  cr_assert_eq(run_virtual(degrade_main, &D), 0);
  cr_assert_eq(D.rc, WD_EINIT);
  cr_assert_not_null(strstr(D.text, "WD_EINIT: container 'app': 'cache' "
                                    "failed to open"),
                     "%s", D.text);
  cr_assert_not_null(strstr(D.text, "(+1 cleanup error)"), "%s", D.text);
  cr_assert_not_null(strstr(D.text, "fallback 'local' of 'cache'"), "%s",
                     D.text);
  cr_assert_eq(D.st.fallbacks, 0);
  assert_no_leaks();
}

/* ---- eager start --------------------------------------------------------- */

typedef struct starting {
  pcfg p[4];
  bool chain; /* a -> b -> c, and d alone */
  int rc, stop_rc;
  wd_time at;
  char text[2048];
  wd_container_stats st;
} starting;

static int start_main(wd_task *self, void *arg) {
  starting *S = arg;
  const wd_key *keys[] = {&KA, &KB, &KC, &KD};
  wd_container *c;
  wd_container_open(&c, "app");
  for (int i = 0; i < 4; i++) {
    const wd_key *dep[] = {i < 2 && S->chain ? keys[i + 1] : NULL, NULL};
    if (S->p[i].name)
      cr_assert_eq(bind_probe(c, keys[i], WD_SINGLETON, &S->p[i], dep, NULL),
                   0);
  }
  S->rc = wd_container_start(self, c);
  S->at = wd_now(self);
  if (S->rc) wd_error_format(wd_task_error(self), S->text, sizeof S->text);
  wd_container_stats_get(c, &S->st);
  say("| ");
  S->stop_rc = wd_container_stop(self, c, 0);
  return wd_container_close(self, c, 0);
}

Test(container, start_opens_independent_singletons_concurrently) {
  reset();
  starting S = {.p = {{.name = "a", .open_sleep = WD_SEC},
                      {.name = "b", .open_sleep = WD_SEC},
                      {.name = "c", .open_sleep = WD_SEC}}};
  cr_assert_eq(run_virtual(start_main, &S), 0);
  cr_assert_eq(S.rc, 0, "%s", S.text);
  cr_assert_eq(S.at, WD_SEC, "three 1 s opens in 1 s");
  cr_assert_eq(S.st.live, 3);
  cr_assert_str_eq(logbuf, "o:a o:b o:c | c:c:ok c:b:ok c:a:ok ");
  assert_no_leaks();
}

Test(container, start_follows_dependencies_and_stop_closes_in_reverse) {
  reset();
  starting S = {.p = {{.name = "a", .open_sleep = WD_SEC},
                      {.name = "b", .open_sleep = WD_SEC},
                      {.name = "c", .open_sleep = WD_SEC},
                      {.name = "d", .open_sleep = WD_SEC / 2}},
                .chain = true};
  cr_assert_eq(run_virtual(start_main, &S), 0);
  cr_assert_eq(S.rc, 0, "%s", S.text);
  cr_assert_eq(S.at, 3 * WD_SEC, "the chain one after the other");
  cr_assert_eq(S.p[3].opened_at, WD_SEC / 2, "d alongside the chain");
  cr_assert_eq(S.p[2].opened_at, WD_SEC);
  cr_assert_eq(S.p[1].opened_at, 2 * WD_SEC);
  cr_assert_str_eq(logbuf, "o:c o:d o:b o:a | c:a:ok c:b:ok c:c:ok c:d:ok ");
  assert_no_leaks();
}

Test(container, a_failed_start_closes_what_opened_and_names_the_failure) {
  reset();
  starting S = {
      .p = {{.name = "a", .open_sleep = WD_SEC / 5},
            {.name = "b", .open_sleep = WD_SEC / 2, .open_fail = -ECONNREFUSED},
            {.name = "c", .open_sleep = WD_SEC}}};
  cr_assert_eq(run_virtual(start_main, &S), 0);
  cr_assert_eq(S.rc, WD_EINIT, "%s", wd_err_name(S.rc));
  cr_assert_eq(S.at, WD_SEC / 2, "c's open was cancelled");
  cr_assert_not_null(strstr(S.text, "WD_EINIT: container 'app': start failed: "
                                    "'b' did not open"),
                     "%s", S.text);
  cr_assert_not_null(strstr(S.text, "b: backend down"), "%s", S.text);
  cr_assert_eq(S.st.live, 0, "all or none");
  cr_assert_str_eq(logbuf, "o:a o:b o:c c:a:error | ");
  cr_assert_eq(S.p[2].opened, 0);
  assert_no_leaks();
}

/* ---- disposal ------------------------------------------------------------ */

typedef struct disposal {
  pcfg x, y, z;
  int body_rc;
  bool cancel; /* the scope's task is cancelled while it works */
  int rc;
  const wd_error *err;
  size_t nsecondary;
} disposal;

static int disposal_main(wd_task *self, void *arg) {
  disposal *P = arg;
  wd_container *c;
  wd_container_open(&c, "app");
  bind_probe(c, &KA, WD_SCOPED, &P->x, NULL, NULL);
  bind_probe(c, &KB, WD_TRANSIENT, &P->y, NULL, NULL);
  bind_probe(c, &KC, WD_SCOPED, &P->z, (const wd_key *[]){&KA, &KB, NULL},
             NULL);
  wd_cancel_scope cs;
  wd_cancel_scope_enter(self, &cs, NULL);
  int rc = 0;
  WD_CONTAINER_SCOPE(self, c, NULL, sc, rc) {
    probe *p;
    if ((rc = get_probe(self, sc, &KC, &p))) break; /* a, b, then c */
    if (P->cancel) {
      wd_cancel(&cs);
      rc = wd_sleep(self, WD_SEC);
      break;
    }
    if (P->body_rc) rc = wd_fail(self, P->body_rc, "the body fails");
  }
  P->rc = rc;
  const wd_error *e = wd_task_error(self);
  P->nsecondary = rc && e ? e->nsecondary : 0;
  wd_cancel_scope_exit(self, &cs, rc);
  return wd_container_close(self, c, 0);
}

Test(container, disposal_is_in_reverse_creation_order_told_the_outcome) {
  reset();
  disposal P = {.x = {.name = "x"}, .y = {.name = "y"}, .z = {.name = "z"}};
  cr_assert_eq(run_virtual(disposal_main, &P), 0);
  cr_assert_eq(P.rc, 0);
  cr_assert_str_eq(logbuf, "o:x o:y o:z c:z:ok c:y:ok c:x:ok ");

  reset();
  P = (disposal){.x = {.name = "x"},
                 .y = {.name = "y"},
                 .z = {.name = "z"},
                 .body_rc = WD_EPERM};
  cr_assert_eq(run_virtual(disposal_main, &P), 0);
  cr_assert_eq(P.rc, WD_EPERM);
  cr_assert_str_eq(logbuf, "o:x o:y o:z c:z:error c:y:error c:x:error ",
                   "a transaction rolls back");

  reset();
  P = (disposal){
      .x = {.name = "x"}, .y = {.name = "y"}, .z = {.name = "z"}, .cancel = 1};
  cr_assert_eq(run_virtual(disposal_main, &P), 0);
  cr_assert_eq(P.rc, WD_ECANCELED);
  cr_assert_str_eq(logbuf, "o:x o:y o:z c:z:cancel c:y:cancel c:x:cancel ");
  assert_no_leaks();
}

Test(container, a_failing_close_is_the_result_and_the_rest_still_close) {
  reset();
  disposal P = {.x = {.name = "x", .close_fail = -EIO},
                .y = {.name = "y", .close_fail = WD_EBUSY},
                .z = {.name = "z"}};
  cr_assert_eq(run_virtual(disposal_main, &P), 0);
  cr_assert_eq(P.rc, WD_EBUSY, "the first failing close");
  cr_assert_eq(P.nsecondary, 1, "x's close is secondary");
  cr_assert_str_eq(logbuf, "o:x o:y o:z c:z:ok c:y:ok c:x:error ");
  assert_no_leaks();
}

/* ---- factories and wd_container_dep -------------------------------------- */

typedef struct repo {
  probe *db;
  int dep_rc, undeclared_rc;
  char undeclared_msg[256];
} repo;

static int repos_made, repos_disposed;
static wd_outcome repo_how;

static int repo_new(wd_task *self, void *arg, void **out) {
  repo *r = calloc(1, sizeof *r);
  if (!r) return wd_fail(self, WD_ENOMEM, "repo: no memory");
  r->dep_rc = wd_container_dep(self, &DB, (void **)&r->db);
  void *x;
  r->undeclared_rc = wd_container_dep(self, &CACHE, &x);
  snprintf(r->undeclared_msg, sizeof r->undeclared_msg, "%s", last_msg());
  if (r->dep_rc) {
    int rc = r->dep_rc;
    free(r);
    return rc;
  }
  repos_made++;
  say("o:repo(%d) ", r->db->serial);
  *out = r;
  return 0;
}

static int repo_free(wd_task *self, void *obj, wd_outcome how, void *arg) {
  repo *r = obj;
  repos_disposed++;
  repo_how = how;
  say("c:repo:%s ", wd_outcome_name(how));
  free(r);
  return 0;
}

static int factory_main(wd_task *self, void *arg) {
  pcfg *db = arg;
  wd_container *c;
  wd_container_open(&c, "app");
  bind_probe(c, &DB, WD_SINGLETON, db, NULL, NULL);
  cr_assert_eq(
      wd_container_bind(c, &REPO,
                        &(wd_binding){.lifetime = WD_SCOPED,
                                      .factory = repo_new,
                                      .dispose = repo_free,
                                      .deps = (const wd_key *[]){&DB, NULL}}),
      0);
  void *x;
  cr_assert_eq(wd_container_dep(self, &DB, &x), WD_EINVAL);
  cr_assert_str_eq(last_msg(), "wd_container_dep: 'db' asked for outside a "
                               "provider's open");
  int rc = 0;
  WD_CONTAINER_SCOPE(self, c, NULL, sc, rc) {
    repo *r;
    probe *d;
    if ((rc = wd_container_get(self, sc, &REPO, (void **)&r))) break;
    cr_assert_eq(r->dep_rc, 0);
    cr_assert_eq(get_probe(self, sc, &DB, &d), 0);
    cr_assert_eq(r->db, d, "the factory got the singleton");
    cr_assert_eq(r->undeclared_rc, WD_EINVAL);
    cr_assert_str_eq(r->undeclared_msg,
                     "container 'app': 'repo' asked for 'cache', which it "
                     "did not declare among its deps");
    wd_resource_stats st;
    wd_resource_stats_get(NULL, NULL, &st);
    cr_assert_eq(st.active, 2, "both are resources in the registry");
    rc = WD_EPERM;
  }
  cr_assert_eq(rc, WD_EPERM);
  return wd_container_close(self, c, 0);
}

Test(container, a_factory_provider_reads_its_dependencies) {
  reset();
  repos_made = repos_disposed = 0;
  pcfg db = {.name = "db"};
  cr_assert_eq(run_virtual(factory_main, &db), 0);
  cr_assert_str_eq(logbuf, "o:db o:repo(1) c:repo:error c:db:ok ");
  cr_assert_eq(repos_made, 1);
  cr_assert_eq(repos_disposed, 1);
  cr_assert_eq(repo_how, WD_OUTCOME_ERROR);
  assert_no_leaks();
}

/* ---- the block macro, stop and restart ----------------------------------- */

static int macro_main(wd_task *self, void *arg) {
  pcfg *cfg = arg;
  wd_container *c;
  wd_container_open(&c, "app");
  bind_probe(c, &KA, WD_SCOPED, cfg, (const wd_key *[]){&KB, NULL}, NULL);
  int rc = 0;
  bool ran = false;
  WD_CONTAINER_SCOPE(self, c, NULL, sc, rc) { ran = true; }
  cr_assert(!ran, "an invalid container skips the block");
  cr_assert_eq(rc, -ENOENT);
  cr_assert_eq(bind_probe(c, &KB, WD_SINGLETON, cfg, NULL, NULL), 0);
  rc = 0;
  for (int i = 0; i < 3; i++) {
    WD_CONTAINER_SCOPE(self, c, NULL, sc, rc) {
      probe *p;
      if ((rc = get_probe(self, sc, &KA, &p))) break;
      if (i == 1) continue; /* leaves the scope too */
      rc = i == 2 ? WD_EPERM : 0;
    }
  }
  cr_assert_eq(rc, WD_EPERM, "the scope's result is written back");
  cr_assert_eq(wd_container_bind(c, &KC, &(wd_binding){.type = &probe_type}),
               WD_EBUSY, "frozen");
  cr_assert_str_eq(last_msg(), "container 'app': bind 'c': the container is "
                               "frozen by its first use");
  say("| ");
  cr_assert_eq(wd_container_stop(self, c, 0), 0);
  cr_assert_eq(wd_container_stop(self, c, 0), 0, "nothing left to stop");
  WD_CONTAINER_SCOPE(self, c, NULL, sc, rc) {
    probe *p;
    rc = get_probe(self, sc, &KB, &p); /* opened again */
  }
  return wd_container_close(self, c, rc);
}

Test(container, the_block_macro_and_a_restart_after_stop) {
  reset();
  pcfg cfg = {.name = "p"};
  cr_assert_eq(run_virtual(macro_main, &cfg), 0);
  cr_assert_str_eq(logbuf, "o:p o:p c:p:ok o:p c:p:ok o:p c:p:error | c:p:ok "
                           "o:p c:p:ok ");
  assert_no_leaks();
}

/* ---- synchronous use ----------------------------------------------------- */

Test(container, synchronous_use_outside_a_runtime) {
  reset();
  repos_made = repos_disposed = 0;
  pcfg db = {.name = "db"}, tx = {.name = "tx"};
  wd_container *c;
  cr_assert_eq(wd_container_open(&c, "sync"), 0);
  cr_assert_eq(bind_probe(c, &DB, WD_SINGLETON, &db, NULL, NULL), 0);
  cr_assert_eq(bind_probe(c, &TX, WD_SCOPED, &tx, NULL, NULL), 0);
  cr_assert_eq(
      wd_container_bind(c, &REPO,
                        &(wd_binding){.lifetime = WD_TRANSIENT,
                                      .factory = repo_new,
                                      .dispose = repo_free,
                                      .deps = (const wd_key *[]){&DB, NULL}}),
      0);
  cr_assert_eq(wd_container_start(NULL, c), 0);
  wd_container_scope s;
  cr_assert_eq(wd_container_scope_enter(NULL, c, NULL, &s), 0);
  probe *p;
  repo *r;
  cr_assert_eq(get_probe(NULL, &s, &TX, &p), 0);
  cr_assert_eq(wd_container_get(NULL, &s, &REPO, (void **)&r), 0);
  cr_assert_eq(r->db->cfg, &db);
  cr_assert_eq(wd_container_scope_exit(NULL, &s, 0), 0);
  cr_assert_eq(wd_container_close(NULL, c, 0), 0);
  cr_assert_str_eq(logbuf, "o:db o:tx o:repo(1) c:repo:ok c:tx:ok c:db:ok ");
  assert_no_leaks();
}

/* ---- bad arguments ------------------------------------------------------- */

static int other_exit(wd_task *self, void *arg) {
  return wd_container_scope_exit(self, arg, 0);
}

static int bad_args_main(wd_task *self, void *arg) {
  pcfg cfg = {.name = "x"};
  static const wd_key nameless = {NULL};
  static const wd_resource_type sizeless = {.name = "sizeless"};
  wd_container *c, *c2;
  cr_assert_eq(wd_container_open(NULL, "x"), WD_EINVAL);
  cr_assert_eq(wd_container_open(&c, NULL), 0);
  cr_assert_eq(wd_container_close(self, c, 0), 0);
  cr_assert_eq(wd_container_close(self, NULL, WD_EPERM), WD_EPERM);
  cr_assert_eq(wd_container_open(&c, "app"), 0);
  cr_assert_eq(wd_container_open(&c2, "other"), 0);

  wd_binding ok = {.type = &probe_type, .config = &cfg};
  cr_assert_eq(wd_container_bind(NULL, &KA, &ok), WD_EINVAL);
  cr_assert_eq(wd_container_bind(c, NULL, &ok), WD_EINVAL);
  cr_assert_str_eq(last_msg(), "container 'app': bind: NULL key");
  cr_assert_eq(wd_container_bind(c, &nameless, &ok), WD_EINVAL);
  cr_assert_str_eq(last_msg(), "container 'app': bind: key without a name");
  cr_assert_eq(wd_container_bind(c, &KA, NULL), WD_EINVAL);
  cr_assert_eq(wd_container_bind(c, &KA, &(wd_binding){0}), WD_EINVAL);
  cr_assert_str_eq(last_msg(), "container 'app': bind 'a': give a resource "
                               "type or a factory, none given");
  cr_assert_eq(
      wd_container_bind(
          c, &KA, &(wd_binding){.type = &probe_type, .factory = repo_new}),
      WD_EINVAL);
  cr_assert_eq(wd_container_bind(c, &KA,
                                 &(wd_binding){.type = &probe_type,
                                               .lifetime = (wd_lifetime)7}),
               WD_EINVAL);
  cr_assert_eq(wd_container_bind(c, &KA, &(wd_binding){.type = &sizeless}),
               WD_EINVAL);
  cr_assert_str_eq(last_msg(), "container 'app': bind 'a': resource type "
                               "'sizeless' has size 0");
  cr_assert_eq(
      wd_container_bind(
          c, &KA, &(wd_binding){.type = &probe_type, .dispose = repo_free}),
      WD_EINVAL);
  cr_assert_eq(wd_container_bind(
                   c, &KA,
                   &(wd_binding){.type = &probe_type,
                                 .deps = (const wd_key *[]){&nameless, NULL}}),
               WD_EINVAL);
  cr_assert_eq(
      wd_container_bind(
          c, &KA, &(wd_binding){.type = &probe_type, .fallback = &nameless}),
      WD_EINVAL);
  cr_assert_eq(wd_container_bind(c, &KA, &ok), 0);
  cr_assert_eq(wd_container_bind(c, &KA, &ok), WD_EBUSY);
  cr_assert_not_null(strstr(last_msg(), "container 'app': 'a' is already "
                                        "bound (at "),
                     "%s", last_msg());
  cr_assert_eq(wd_container_bind(c, &KB,
                                 &(wd_binding){.lifetime = WD_SCOPED,
                                               .type = &probe_type,
                                               .config = &cfg}),
               0);
  cr_assert_eq(wd_container_validate(NULL), WD_EINVAL);

  wd_container_scope s, inner, other;
  void *p = (void *)1;
  cr_assert_eq(wd_container_scope_enter(self, NULL, NULL, &s), WD_EINVAL);
  cr_assert_eq(wd_container_scope_enter(self, c, NULL, NULL), WD_EINVAL);
  cr_assert_eq(wd_container_scope_enter(self, c, NULL, &s), 0);
  cr_assert_eq(wd_container_scope_enter(self, c2, &s, &other), WD_EINVAL);
  cr_assert_str_eq(last_msg(), "container 'other': scope enter: the parent is "
                               "a scope of another container");
  cr_assert_eq(wd_container_get(self, &s, &KA, NULL), WD_EINVAL);
  cr_assert_eq(wd_container_get(self, NULL, &KA, &p), WD_EINVAL);
  cr_assert_null(p);
  cr_assert_eq(wd_container_get(self, &s, NULL, &p), WD_EINVAL);
  cr_assert_eq(wd_container_get(self, &s, &nameless, &p), WD_EINVAL);
  cr_assert_eq(wd_container_dep(self, &KA, NULL), WD_EINVAL);
  cr_assert_eq(wd_container_dep(self, NULL, &p), WD_EINVAL);
  cr_assert_eq(wd_container_get(self, &s, &KB, &p), 0);

  /* Another task cannot end the scope; nor can stop or close while it is
   * entered. */
  wd_job job = {.fn = other_exit, .arg = &s};
  wd_run_tasks(self, &job, 1, NULL);
  cr_assert_eq(job.h.status, WD_EINVAL);
  cr_assert_eq(wd_container_stop(self, c, 0), WD_EBUSY);
  cr_assert_str_eq(last_msg(), "container 'app': stop: 1 scope still entered");
  cr_assert_eq(wd_container_close(self, c, 0), WD_EBUSY);
  cr_assert_eq(wd_container_stop(self, NULL, 0), WD_EINVAL);
  cr_assert_eq(wd_container_start(self, NULL), WD_EINVAL);

  cr_assert_eq(wd_container_scope_enter(self, c, &s, &inner), 0);
  cr_assert_eq(wd_container_scope_exit(self, &s, 0), WD_EINVAL);
  cr_assert_eq(wd_container_scope_exit(self, &inner, 0), 0);
  cr_assert_eq(wd_container_scope_exit(self, &inner, 0), WD_EINVAL,
               "not entered any more");
  cr_assert_eq(wd_container_scope_exit(self, &s, 0), 0);
  cr_assert_eq(wd_container_get(self, &s, &KB, &p), WD_EINVAL);
  cr_assert_eq(wd_container_scope_exit(self, NULL, 0), WD_EINVAL);
  cr_assert_str_eq(wd_lifetime_name(WD_SCOPED), "scoped");
  cr_assert_str_eq(wd_lifetime_name((wd_lifetime)9), "?");
  wd_container_stats st;
  wd_container_stats_get(NULL, &st);
  cr_assert_eq(st.bindings, 0);
  wd_container_close(self, c2, 0);
  return wd_container_close(self, c, 0);
}

Test(container, bad_arguments_are_einval_with_a_message) {
  reset();
  cr_assert_eq(run_virtual(bad_args_main, NULL), 0);
  assert_no_leaks();
}

/* ---- every allocation failure point -------------------------------------- */

typedef struct busy {
  pcfg db, cache, local, tx, t, m;
} busy;

/* Bind many_keys[0..n) as scoped, so that scopes need heap slots. */
static int bind_many(wd_container *c, pcfg *cfg, int n) {
  int rc = 0;
  for (int i = 0; i < n && !rc; i++) {
    snprintf(many_names[i], sizeof many_names[i], "k%d", i);
    many_keys[i].name = many_names[i];
    rc = bind_probe(c, &many_keys[i], WD_SCOPED, cfg, NULL, NULL);
  }
  return rc;
}

static int busy_main(wd_task *self, void *arg) {
  busy *B = arg;
  wd_container *c;
  int rc = wd_container_open(&c, "app");
  if (rc) return rc;
  if ((rc = bind_probe(c, &DB, WD_SINGLETON, &B->db, NULL, NULL)) ||
      (rc = bind_probe(c, &CACHE, WD_SINGLETON, &B->cache, NULL, &LOCAL)) ||
      (rc = bind_probe(c, &LOCAL, WD_SINGLETON, &B->local, NULL, NULL)) ||
      (rc = bind_probe(c, &TX, WD_SCOPED, &B->tx,
                       (const wd_key *[]){&DB, &KC, NULL}, NULL)) ||
      (rc = bind_probe(c, &KC, WD_TRANSIENT, &B->t, NULL, NULL)) ||
      (rc = wd_container_bind(
           c, &REPO,
           &(wd_binding){.lifetime = WD_SCOPED,
                         .factory = repo_new,
                         .dispose = repo_free,
                         .deps = (const wd_key *[]){&DB, NULL}})) ||
      (rc = bind_many(c, &B->m, WD_CONTAINER_SCOPE_INLINE + 1)) ||
      (rc = wd_container_start(self, c)))
    return wd_container_close(self, c, rc);
  WD_CONTAINER_SCOPE(self, c, NULL, outer, rc) {
    void *p;
    if ((rc = wd_container_get(self, outer, &TX, &p))) break;
    if ((rc = wd_container_get(self, outer, &many_keys[3], &p))) break;
    WD_CONTAINER_SCOPE(self, c, outer, inner, rc) {
      if ((rc = wd_container_get(self, inner, &TX, &p))) break;
      if ((rc = wd_container_get(self, inner, &many_keys[3], &p))) break;
      if ((rc = wd_container_get(self, inner, &REPO, &p))) break;
      if ((rc = wd_container_get(self, inner, &CACHE, &p))) break;
    }
    if (rc) break;
    rc = wd_fail(self, WD_EPERM, "the body fails");
  }
  return wd_container_close(self, c, rc);
}

/* Whether code is anywhere in e: its causes, group children, secondaries
 * (a failed provider open is WD_EINIT whatever made it fail). */
static bool has_code(const wd_error *e, int code) {
  if (!e) return false;
  if (e->code == code || has_code(e->cause, code)) return true;
  for (size_t i = 0; i < e->nchildren; i++) {
    if (has_code(e->children[i], code)) return true;
  }
  for (size_t i = 0; i < e->nsecondary_kept; i++) {
    if (has_code(e->secondary[i], code)) return true;
  }
  return false;
}

Test(container, allocation_failure_at_every_point_is_clean) {
  for (long n = 1;; n++) {
    reset();
    repos_made = repos_disposed = 0;
    busy B = {.db = {.name = "db", .open_sleep = WD_MSEC},
              .cache = {.name = "cache", .open_fail = -ECONNREFUSED},
              .local = {.name = "local"},
              .tx = {.name = "tx"},
              .t = {.name = "t"},
              .m = {.name = "m"}};
    wd_alloc_fail_after(n);
    int rc = run_virtual(busy_main, &B);
    bool fired = wd_alloc_failed();
    wd_alloc_fail_after(0);
    const wd_error *e = wd_last_error();
    if (rc == WD_EINIT && !has_code(e, WD_ENOMEM)) wd_error_print(stderr, e);
    cr_assert(rc == WD_EPERM || rc == WD_ENOMEM ||
                  (rc == WD_EINIT && has_code(e, WD_ENOMEM)),
              "n=%ld: rc %s", n, wd_err_name(rc));
    pcfg *all[] = {&B.db, &B.cache, &B.local, &B.tx, &B.t, &B.m};
    for (int i = 0; i < 6; i++)
      cr_assert_eq(all[i]->opened, all[i]->closed,
                   "n=%ld: %s: %d opened, %d "
                   "closed",
                   n, all[i]->name, all[i]->opened, all[i]->closed);
    cr_assert_eq(repos_made, repos_disposed, "n=%ld", n);
    cr_assert_eq(wd_resource_leaks(), 0, "n=%ld", n);
    if (!fired) {
      cr_assert_eq(rc, WD_EPERM);
      cr_assert_str_eq(e->msg, "the body fails");
      cr_assert_eq(B.tx.opened, 1, "the inner scope used the outer's tx");
      cr_assert_eq(B.local.opened, 1);
      cr_assert_eq(B.m.opened, 1, "the inner scope used the outer's k3");
      cr_assert_eq(repos_made, 1);
      assert_no_leaks();
      break;
    }
    assert_no_leaks();
    cr_assert_lt(n, 5000, "the fault loop does not end");
  }
}
