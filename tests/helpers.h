/* Shared test helpers: run a body as a root task and check that nothing
 * leaked - no task, no heap block - when the runtime is gone. */
#ifndef WD_TEST_HELPERS_H
#define WD_TEST_HELPERS_H

#include <criterion/criterion.h>
#include <warden.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define WD_TEST_LSAN 1
#endif

/* Run fn on a runtime with the virtual clock; returns the root's status. */
static inline int run_virtual(wd_task_fn fn, void *arg) {
  wd_runtime_opts o = {.clock = WD_CLOCK_VIRTUAL};
  return wd_run_with(&o, fn, arg);
}

/* Every test ends here: the runtime is gone and so is every block and
 * every resource. */
static inline void assert_no_leaks(void) {
  wd_error_clear(NULL);
  cr_assert_eq(wd_alloc_live(), 0, "%ld warden blocks leaked", wd_alloc_live());
  cr_assert_eq(wd_resource_leaks(), 0, "%llu resources left open",
               (unsigned long long)wd_resource_leaks());
#if WD_TEST_LSAN
  cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,
               "LeakSanitizer found leaks (report above)");
#endif
}

#endif
