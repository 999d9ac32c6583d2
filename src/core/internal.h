/* Internal declarations of the core: the task and runtime structures and the
 * functions the core's files share.  Never installed; layers above the core
 * use only the public headers. */
#ifndef WD_CORE_INTERNAL_H
#define WD_CORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <uv.h>

#include "../util/list.h"
#include "../util/mem.h"
#include "warden.h"

#if defined(__SANITIZE_ADDRESS__)
#define WD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WD_ASAN 1
#endif
#endif

#ifndef WD_UNLIKELY
#define WD_LIKELY(x) __builtin_expect(!!(x), 1)
#define WD_UNLIKELY(x) __builtin_expect(!!(x), 0)
#endif

/* ---- allocator ---------------------------------------------------------- */

/* Counts an allocation point that is not a heap block (a stack); returns 1
 * when the fault injector says it must fail. */
int wd__alloc_fail_point_slow(void);
extern atomic_long wd__alloc_countdown, wd__alloc_attempts;
static inline int wd__alloc_fail_point(void) {
  /* A plain increment, not a locked one: the count is a statistic, and
   * this runs on every spawn. */
  atomic_store_explicit(
      &wd__alloc_attempts,
      atomic_load_explicit(&wd__alloc_attempts, memory_order_relaxed) + 1,
      memory_order_relaxed);
  if (WD_LIKELY(atomic_load_explicit(&wd__alloc_countdown,
                                     memory_order_relaxed) == 0))
    return 0;
  return wd__alloc_fail_point_slow();
}

/* ---- context switch ----------------------------------------------------- */

#if defined(WD_USE_UCONTEXT)
#include <ucontext.h>
typedef struct wd__ctx {
  ucontext_t uc;
} wd__ctx;
#else
typedef struct wd__ctx {
  void *sp;
} wd__ctx;
#endif

/* Prepare ctx to run fn(arg) on [lo, hi) the first time it is switched to. */
void wd__ctx_make(wd__ctx *ctx, void *lo, void *hi, void (*fn)(void *),
                  void *arg);
/* Save the running context in from and resume to. */
#if defined(WD_USE_UCONTEXT)
void wd__ctx_switch(wd__ctx *from, wd__ctx *to);
#elif defined(__x86_64__)
/* Inline, without call/ret: the switch pushes a resume address and rbp,
 * swaps stack pointers and jumps to the other side's resume address.  A
 * call/ret pair would make the return-stack predictor miss at nearly every
 * switch (the ret lands in another task's frame); an indirect jump to a
 * resume label is predicted from history.  Every other register is
 * declared clobbered, so the compiler saves only those live across the
 * switch.  The first 128 bytes below rsp are the red zone, left alone. */
static inline void wd__ctx_switch(wd__ctx *from, wd__ctx *to) {
  void **save = &from->sp;
  void *load = to->sp;
  __asm__ volatile("subq $128, %%rsp\n\t"
                   "leaq 1f(%%rip), %%rax\n\t"
                   "pushq %%rax\n\t"
                   "pushq %%rbp\n\t"
                   "movq %%rsp, (%%rdi)\n\t"
                   "movq %%rsi, %%rsp\n\t"
                   "popq %%rbp\n\t"
                   "popq %%rax\n\t"
                   "jmpq *%%rax\n"
                   "1:\n\t"
                   "addq $128, %%rsp\n\t"
                   : "+D"(save), "+S"(load)
                   :
                   : "rax", "rbx", "rcx", "rdx", "r8", "r9", "r10", "r11",
                     "r12", "r13", "r14", "r15", "xmm0", "xmm1", "xmm2", "xmm3",
                     "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                     "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory",
                     "cc");
}
#else
void wd__ctx_swap(void **save_sp, void *load_sp);
static inline void wd__ctx_switch(wd__ctx *from, wd__ctx *to) {
  wd__ctx_swap(&from->sp, to->sp);
}
#endif

/* ---- timers (timer.c) ------------------------------------------------- */

typedef struct wd__tent {
  wd_time when;
  uint64_t seq;
  uint32_t h; /* handle */
} wd__tent;

typedef struct wd__thnd {
  wd_timer_node *node;
  void (*fire)(wd_timer_node *node);
  uint32_t pos; /* heap position; next free handle when free */
} wd__thnd;

typedef struct wd__timers {
  wd__tent *heap;
  wd__thnd *hnd;
  uint32_t n, cap, free_head;
  uint32_t reserved;
  uint64_t seq;
} wd__timers;

/* ---- stacks -------------------------------------------------------------- */

#define WD__CANARY 0x57415244454e2121ull /* "WARDEN!!" */

typedef struct wd__stack {
  char *lo, *hi;    /* usable range; frames grow down from hi */
  uint64_t *canary; /* checked at every switch away */
  uint32_t slot;    /* its number in its size class's pool */
  uint32_t cls;     /* its size class: rt->pools[cls] */
} wd__stack;

typedef struct wd__stack_pool wd__stack_pool;

int wd__stacks_init(wd_runtime *rt);
void wd__stacks_deinit(wd_runtime *rt);
/* A stack of at least size bytes (0 = default).  WD_ENOMEM on failure. */
int wd__stack_get(wd_runtime *rt, size_t size, wd__stack *out);
void wd__stack_put(wd_runtime *rt, const wd__stack *st);
bool wd__stacks_trim(wd_runtime *rt, size_t budget);
uint64_t wd__stacks_next_trim(wd_runtime *rt);
/* Install the SIGSEGV handler and this thread's alternate signal stack. */
void wd__overflow_install(wd_runtime *rt);
void wd__overflow_uninstall(wd_runtime *rt);
_Noreturn void wd__overflow_die(wd_task *t, const char *how);

/* ---- tasks --------------------------------------------------------------- */

typedef enum wd__state {
  WD__READY = 1,
  WD__RUNNING,
  WD__BLOCKED,
  WD__DONE,
} wd__state;

typedef struct wd__local wd__local;

#define WD__TASK_MAGIC 0x7461736bu

/* The record lives at the top of the task's stack, 64-byte aligned, and is
 * laid out by when its fields are touched: with a hundred thousand tasks
 * every record line is a cache miss each time a task runs, so a switch, a
 * park, a wake, a checkpoint and a sleep touch line 0 only; a task's first
 * run and its end add line 1 (and 2 and 3 at the end); the rest is read by
 * dumps.  tests: the static asserts in task.c keep it so. */
struct wd_task {
  /* line 0 */
  wd__ctx ctx;
  wd_runtime *rt;
  wd_task *runq_next;    /* in the run queue */
  wd_wait *wait;         /* while blocked */
  uint64_t *canary;      /* stack.canary, checked at every switch away */
  uint64_t cancel_epoch; /* cancel_rc is valid while it equals rt's */
  wd_timer_node sleep;
  int cancel_rc;
  uint8_t state;
  bool is_root, is_sched;
  bool named; /* name holds a name; else it is made on demand */
  /* line 1 */
  wd_task_fn fn;
  void *arg;
  void *result;
  wd_group *group; /* NULL for the root */
  wd_handle *handle;
  wd_cancel_scope *scope; /* innermost */
  wd__local *locals;
  wd_error *err;
  /* line 2 */
  wd__stack stack;
  wd_link groups; /* groups this task owns and has not exited */
  wd_link holds;  /* wd_hold records: objects it must release */
  /* lines 3 and 4 */
  wd_cancel_scope root_scope;
  uint64_t id;
  uint64_t created_ms;
  const char *file; /* creation site, with line */
  uint32_t magic;   /* for the overflow handler: a record, not garbage */
  int line;
  /* line 5 */
  char name[WD_TASK_NAME_MAX];
#if WD_ASAN
  void *asan_fake;
  const void *asan_lo;
  size_t asan_size;
#endif
};

/* A spawn waiting for a free slot of a bounded group. */
typedef struct wd__pending {
  wd_link link;
  wd_task_fn fn;
  void *arg;
  wd_handle *handle;
  wd_group *group;
  size_t stack_size;
  const char *file;
  int line;
  wd__local *locals;
  uint64_t id; /* reserved at spawn */
  char name[WD_TASK_NAME_MAX];
} wd__pending;

typedef struct wd__post {
  struct wd__post *next;
  void (*fn)(wd_runtime *, void *);
  void *arg;
} wd__post;

struct wd_runtime {
  uv_loop_t loop;
  uv_timer_t timer;
  uv_async_t async;
  uv_prepare_t prepare; /* keeps the poll from blocking with tasks ready */
  /* The run queue: singly linked FIFO (tasks are only appended and taken
   * from the front), two stores cheaper per switch than a list. */
  wd_task *runq_head, **runq_tail;
  unsigned budget;
  wd_task *current;
  wd_task sched;   /* the thread's own stack, running the loop */
  wd_task *zombie; /* ended task whose stack awaits release */
  wd_task *root;
  int root_status;
  wd__timers timers;
  wd_clock_mode clock;
  wd_time vnow;
  uint64_t cancel_epoch;
  uint64_t next_id;
  size_t ntasks, ngroups;
  size_t nblocking, nabandoned;
  wd_link blocking; /* blocking calls in flight, for dumps */
  uint64_t switches;
  size_t default_stack;
  int default_class, min_class;
  wd_guard_mode guard;
  bool await_posts;
  unsigned expect_wakeups; /* see wd_runtime_expect_wakeup */
  int deadlocks;           /* times a deadlock was found */
  wd__stack_pool *pools;   /* one per stack size class */
  wd_runtime_ext *exts;    /* newest first */
  pthread_mutex_t post_mu;
  wd__post *post_head, *post_tail;
  bool post_closed;
  atomic_int post_pending;
  void *altstack;
  size_t altstack_size;
  bool altstack_ours;
};

/* The runtime of this thread.  initial-exec: the library is built as
 * position-independent code, and the default model would make every access
 * a call to __tls_get_addr. */
extern _Thread_local wd_runtime *wd__rt
    __attribute__((tls_model("initial-exec")));
/* The runtime of the task running on this thread, for the hot paths:
 * t->rt would do, but t comes out of a register just restored from the
 * task's stack, and a load through it would chain every switch behind the
 * last one (a yield pair measured 10% faster this way).  Only for code
 * that runs on the runtime's own thread, where the two are the same. */
#ifdef NDEBUG
#define WD__RT_OF(t) (wd__rt)
#else /* the suite's builds check the claim on every use */
#include <assert.h>
static inline wd_runtime *wd__rt_of_checked(const wd_task *t) {
  assert(t->rt == wd__rt && "a task used off its runtime's thread");
  return wd__rt;
}
#define WD__RT_OF(t) (wd__rt_of_checked(t))
#endif

/* The root scope of a task starts here. */
void wd__scope_init_root(wd_task *t, wd_cancel_scope *parent);
void wd__scope_fini_root(wd_task *t);
/* The cancellation code of t now (0 if none), cached per cancel epoch:
 * a checkpoint normally costs one comparison. */
int wd__cancel_status_slow(wd_task *t);
/* The cancellation code seen from scope s: that of the outermost cancelled
 * scope from s up to the first shield, or 0. */
int wd__scope_status(const wd_cancel_scope *s);
static inline int wd__cancel_status(wd_task *t) {
  if (WD_LIKELY(t->cancel_epoch == WD__RT_OF(t)->cancel_epoch))
    return t->cancel_rc;
  return wd__cancel_status_slow(t);
}
/* Cancel s with a reason and a code. */
void wd__cancel_with(wd_cancel_scope *s, int rc, const char *why);

static inline void wd__ready(wd_task *t) {
  wd_runtime *rt = WD__RT_OF(t);
  t->state = WD__READY;
  t->runq_next = NULL;
  *rt->runq_tail = t;
  rt->runq_tail = &t->runq_next;
}
/* Past this many tasks their records no longer stay in the caches (they
 * all sit at the same page offset, so they compete for the same sets),
 * and a switch prefetches what the next task will touch. */
#define WD__MANY_TASKS 64

/* Start loading what n will touch when it runs after the current task:
 * record line 0 for the switch, line 1 for a first run or an end, and the
 * four stack lines under the record, which hold a new task's first frames
 * and the frames an ending task returns through. */
static inline void wd__prefetch_task(wd_task *n) {
  __builtin_prefetch(n, 1);
  __builtin_prefetch((char *)n + 64, 1);
  for (int i = 1; i <= 4; i++)
    __builtin_prefetch((char *)n - 64 * i, 1);
}

static inline wd_task *wd__runq_pop(wd_runtime *rt) {
  wd_task *t = rt->runq_head;
  if (t && !(rt->runq_head = t->runq_next)) rt->runq_tail = &rt->runq_head;
  if (t && t->runq_next && WD_UNLIKELY(rt->ntasks > WD__MANY_TASKS))
    wd__prefetch_task(t->runq_next);
  return t;
}
static inline bool wd__runq_empty(const wd_runtime *rt) {
  return !rt->runq_head;
}
/* Give the CPU to the next ready task (or the scheduler); returns when self
 * runs again. */
void wd__switch_away(wd_task *self);
/* wd_park() without its cancellation check, for callers that made it and
 * must not be told "cancelled" after queueing work. */
int wd__park_now(wd_task *self, wd_wait *w);
_Noreturn void wd__task_exit(wd_task *self);

wd_time wd__now(wd_runtime *rt);
void wd__timer_arm(wd_runtime *rt, wd_timer_node *n, wd_time when,
                   void (*fire)(wd_timer_node *));
void wd__timer_disarm(wd_runtime *rt, wd_timer_node *n);
/* The deadline of an armed node. */
wd_time wd__timer_when(const wd_runtime *rt, const wd_timer_node *n);
/* Reserve room for one more armed timer (WD_ENOMEM), or give it back. */
int wd__timers_grow(wd_runtime *rt);
static inline int wd__timers_reserve(wd_runtime *rt) {
  if (WD_UNLIKELY(rt->timers.reserved == rt->timers.cap) && wd__timers_grow(rt))
    return WD_ENOMEM;
  rt->timers.reserved++;
  return 0;
}
static inline void wd__timers_unreserve(wd_runtime *rt) {
  rt->timers.reserved--;
}
void wd__timers_fini(wd_runtime *rt);
bool wd__timers_next(const wd_runtime *rt, wd_time *when);
void wd__timers_expire(wd_runtime *rt, wd_time now);

int wd__task_spawn(wd_group *g, wd_task_fn fn, void *arg, wd_handle *h,
                   size_t stack_size, const char *name, const char *file,
                   int line, wd__local *locals, uint64_t id);
void wd__group_task_done(wd_group *g, wd_task *t, int status);
int wd__group_queue(wd_group *g, wd_task_fn fn, void *arg,
                    const wd_spawn_opts *o, const char *file, int line,
                    wd__local *locals);
/* Make h a fresh handle for a spawn (id 0 until the task has one). */
static inline void wd__handle_reset(wd_handle *h, uint64_t id) {
  if (!h) return;
  h->task = NULL;
  h->id = id;
  h->status = 0;
  h->result = NULL;
  h->done = false;
  h->joiner_ = NULL;
  h->pending_ = NULL;
}
void wd__handle_finish(wd_handle *h, int status, void *result);

wd__local *wd__local_ref(wd__local *l);
void wd__local_unref(wd__local *l);

void wd__error_free(wd_error *e);
wd_error *wd__error_take(wd_task *t);
wd_error *wd__error_new(int code, const char *file, int line, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));
void wd__error_replace(wd_task *t, wd_error *e);
void wd__thread_error_free(void);

/* The runtime clock in whole ms, nearly free to read, for ages in dumps
 * and stack retention: libuv's cached loop time on the real clock, the
 * virtual clock itself on the virtual one (so ages agree with wd_now). */
static inline uint64_t wd__loop_ms(wd_runtime *rt) {
  if (WD_UNLIKELY(rt->clock == WD_CLOCK_VIRTUAL))
    return (uint64_t)(rt->vnow / WD_MSEC);
  return rt->loop.time;
}
/* The last component of a __FILE__ path, for messages. */
const char *wd__basename(const char *path);
const char *wd__state_name(int state);

#endif
