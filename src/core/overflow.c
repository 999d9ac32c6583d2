/* Stack overflow detection: the guard-page fault handler and the canary
 * verdict.
 *
 * A task that runs off the end of a guarded stack faults in the guard page.
 * The SIGSEGV handler runs on an alternate signal stack (the faulting stack
 * has no room left), recognises the address as a guard page of one of the
 * arenas in the lock-free table, names the task whose record sits at the top
 * of that slot, and lets the fault kill the process.  Faults elsewhere go to
 * whatever handler was installed before ours.  Everything in the handler is
 * async-signal-safe: a stack of bytes formatted by hand and one write(2).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stack.h"

static pthread_mutex_t install_mu = PTHREAD_MUTEX_INITIALIZER;
static int install_count;
static struct sigaction old_segv, old_bus;

typedef struct msgbuf {
  char b[256];
  size_t n;
} msgbuf;

static void put(msgbuf *m, const char *s) {
  while (*s && m->n < sizeof m->b - 1)
    m->b[m->n++] = *s++;
}

static void put_u(msgbuf *m, unsigned long long v) {
  char d[24];
  int i = 0;
  do
    d[i++] = (char)('0' + v % 10);
  while ((v /= 10) && i < 24);
  while (i && m->n < sizeof m->b - 1)
    m->b[m->n++] = d[--i];
}

static void put_task(msgbuf *m, const wd_task *t, size_t stack_bytes) {
  put(m, "warden: stack overflow in task ");
  if (t && t->magic == WD__TASK_MAGIC && t->state != WD__DONE) {
    put_u(m, t->id);
    put(m, " '");
    char name[WD_TASK_NAME_MAX] = "";
    if (t->named) memcpy(name, t->name, sizeof name);
    name[sizeof name - 1] = '\0';
    put(m, name);
    put(m, "'");
  } else {
    put(m, "(unknown)");
  }
  put(m, " (stack ");
  put_u(m, stack_bytes / 1024);
  put(m, " KiB)");
}

static void write_all(const char *b, size_t n) {
  while (n) {
    ssize_t w = write(2, b, n);
    if (w <= 0) return;
    b += w;
    n -= (size_t)w;
  }
}

static void chain(int sig, siginfo_t *si, void *uc) {
  struct sigaction *old = sig == SIGBUS ? &old_bus : &old_segv;
  if ((old->sa_flags & SA_SIGINFO) && old->sa_sigaction) {
    old->sa_sigaction(sig, si, uc);
    return;
  }
  if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
    old->sa_handler(sig);
    return;
  }
  /* Returning re-runs the faulting instruction, which now kills us. */
  signal(sig, SIG_DFL);
}

static void on_fault(int sig, siginfo_t *si, void *uc) {
  char *addr = si->si_addr;
  for (int i = 0; i < WD__ARENA_TAB; i++) {
    char *base =
        atomic_load_explicit(&wd__arena_tab[i].base, memory_order_acquire);
    if (!base || base == (char *)1) continue;
    size_t len = wd__arena_tab[i].len, slot = wd__arena_tab[i].slot;
    if (addr < base || addr >= base + len) continue;
    char *slot_lo = base + (size_t)(addr - base) / slot * slot;
    if (addr >= slot_lo + wd__page) break; /* inside a stack: not ours */
    msgbuf m = {.n = 0};
    put_task(&m, wd__task_at(slot_lo + slot), slot - wd__page);
    put(&m, ": guard page hit; give it a larger wd_spawn_opts.stack_size\n");
    write_all(m.b, m.n);
    signal(sig, SIG_DFL);
    return;
  }
  chain(sig, si, uc);
}

_Noreturn void wd__overflow_die(wd_task *t, const char *how) {
  msgbuf m = {.n = 0};
  put_task(&m, t, (size_t)(t->stack.hi - t->stack.lo));
  put(&m, ": ");
  put(&m, how);
  put(&m, "; give it a larger wd_spawn_opts.stack_size\n");
  write_all(m.b, m.n);
  abort();
}

void wd__overflow_install(wd_runtime *rt) {
  stack_t cur;
  if (sigaltstack(NULL, &cur) == 0 && (cur.ss_flags & SS_DISABLE)) {
    size_t size = 64 * 1024;
    void *mem = wd__malloc(size);
    if (mem) {
      stack_t ss = {.ss_sp = mem, .ss_size = size, .ss_flags = 0};
      if (sigaltstack(&ss, NULL) == 0) {
        rt->altstack = mem;
        rt->altstack_size = size;
        rt->altstack_ours = true;
      } else {
        wd__free(mem);
      }
    }
  }
  pthread_mutex_lock(&install_mu);
  if (install_count++ == 0) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
  }
  pthread_mutex_unlock(&install_mu);
}

void wd__overflow_uninstall(wd_runtime *rt) {
  pthread_mutex_lock(&install_mu);
  if (--install_count == 0) {
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
  }
  pthread_mutex_unlock(&install_mu);
  if (rt->altstack_ours) {
    stack_t ss = {.ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE};
    sigaltstack(&ss, NULL);
    wd__free(rt->altstack);
    rt->altstack = NULL;
    rt->altstack_ours = false;
  }
}
