/* app: a small service run by wd_run_app, to watch it shut down in order.
 *
 *   ./app          runs for 4 seconds, then stops by itself
 *   ./app 0        runs until you stop it
 *   ./app 30       runs for 30 seconds
 *
 * While it runs:
 *   Ctrl-C         graceful shutdown: main stops, cleanup runs, the
 *                  background tasks are cancelled, then the resources
 *                  close in reverse order of opening (cache, db, config)
 *   Ctrl-C again   forces it (exit status 130)
 *   Ctrl-\         prints every task and resource (SIGQUIT), and goes on;
 *                  so does `kill -USR1 <pid>`
 *
 * Startup opens three resources and registers them with the app's
 * manager, and starts two background tasks.  Main takes "orders" through
 * the database.  Every open and close says so, and the manager reports
 * each step of the shutdown (verbose).  The exit status is printed last:
 * 0 for a clean stop, see WD_APP_EXIT_* in warden/app.h for the others.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <warden.h>

/* ---- three resource types that say what they do ------------------------- */

typedef struct svc_cfg {
  const char *what;
  wd_time open_takes, close_takes;
} svc_cfg;

typedef struct svc {
  const svc_cfg *cfg;
  unsigned uses;
} svc;

static int svc_open(wd_task *self, svc *s, const void *config) {
  s->cfg = config;
  printf("  open   %-6s (%s)...\n", s->cfg->what, "takes a moment");
  int rc = wd_sleep(self, s->cfg->open_takes);
  if (rc) return rc;
  printf("  open   %-6s done\n", s->cfg->what);
  return 0;
}

static int svc_close(wd_task *self, svc *s, wd_outcome how) {
  printf("  close  %-6s (work ended: %s; %u uses)...\n", s->cfg->what,
         wd_outcome_name(how), s->uses);
  /* A close may wait (flush, say goodbye): it runs shielded, within the
   * type's grace. */
  int rc = wd_sleep(self, s->cfg->close_takes);
  printf("  close  %-6s %s\n", s->cfg->what, rc ? "cut short" : "done");
  return rc;
}

WD_RESOURCE_TYPE(svc_type, "service", svc, svc_open, svc_close);

static const svc_cfg config_cfg = {"config", 10 * WD_MSEC, 10 * WD_MSEC};
static const svc_cfg db_cfg = {"db", 150 * WD_MSEC, 300 * WD_MSEC};
static const svc_cfg cache_cfg = {"cache", 50 * WD_MSEC, 100 * WD_MSEC};

/* ---- background tasks --------------------------------------------------- */

static int ticker(wd_task *self, void *arg) {
  for (int i = 1;; i++) {
    int rc = wd_sleep(self, 700 * WD_MSEC);
    if (rc) {
      printf("  ticker: cancelled after %d ticks\n", i - 1);
      return rc;
    }
    printf("  ticker: tick %d\n", i);
  }
}

static int indexer(wd_task *self, void *arg) {
  svc *cache = arg;
  for (;;) {
    int rc = wd_sleep(self, 400 * WD_MSEC);
    if (rc) {
      /* Cancelled: finish the batch in hand (shielded, briefly), then go. */
      wd_cancel_scope s;
      wd_cancel_scope_enter(self, &s, &(wd_cancel_opts){.shield = true});
      printf("  indexer: cancelled, saving the batch in hand...\n");
      wd_sleep(self, 100 * WD_MSEC);
      printf("  indexer: saved\n");
      wd_cancel_scope_exit(self, &s, 0);
      return rc;
    }
    cache->uses++;
  }
}

/* ---- the app ------------------------------------------------------------ */

typedef struct shop {
  wd_time run_for; /* 0: until stopped */
  svc *db;
} shop;

static int startup(wd_task *self, wd_manager *m, void *arg) {
  shop *sh = arg;
  wd_resource *config, *db, *cache;
  printf("startup:\n");
  int rc = wd_manager_open_resource(self, m, &svc_type, &config_cfg, "config",
                                    0, &config);
  if (!rc)
    rc = wd_manager_open_resource(self, m, &svc_type, &db_cfg, "db", 2 * WD_SEC,
                                  &db);
  if (!rc)
    rc = wd_manager_open_resource(self, m, &svc_type, &cache_cfg, "cache", 0,
                                  &cache);
  if (rc) return rc; /* whatever opened is closed by the manager */
  sh->db = wd_resource_data(db);
  rc = wd_manager_spawn(m, "ticker", ticker, NULL);
  if (!rc)
    rc = wd_manager_spawn(m, "indexer", indexer, wd_resource_data(cache));
  return rc;
}

static int serve(wd_task *self, wd_manager *m, void *arg) {
  shop *sh = arg;
  printf("main: taking orders%s (pid %d: Ctrl-C to stop, Ctrl-\\ to dump)\n",
         sh->run_for ? "" : " until stopped", (int)getpid());
  wd_time start = wd_now(self);
  for (int n = 1;; n++) {
    int rc = wd_sleep(self, 500 * WD_MSEC);
    if (rc) {
      printf("main: stopping (%s)\n", wd_app_shutdown_reason(self));
      return rc; /* the shutdown's cancellation: a clean stop */
    }
    sh->db->uses++;
    printf("main: order %d through the db\n", n);
    if (sh->run_for && wd_now(self) - start >= sh->run_for) {
      printf("main: done after %.1f s\n",
             (double)(wd_now(self) - start) / WD_SEC);
      return 0;
    }
  }
}

static int cleanup(wd_task *self, wd_manager *m, void *arg, wd_outcome how) {
  printf("cleanup: main ended with outcome '%s'; %zu tasks and %zu "
         "resources left to the manager\n",
         wd_outcome_name(how), wd_manager_tasks(m), wd_manager_resources(m));
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0); /* one stream, in order, even piped */
  shop sh = {.run_for = 4 * WD_SEC};
  if (argc > 1) sh.run_for = (wd_time)(atof(argv[1]) * (double)WD_SEC);
  int status = wd_run_app(&(wd_app_opts){
      .name = "shop",
      .startup = startup,
      .main = serve,
      .cleanup = cleanup,
      .arg = &sh,
      .manager = {.task_grace = 1 * WD_SEC},
      .log = stdout,
      .verbose = true,
  });
  printf("exit status %d\n", status);
  return status;
}
