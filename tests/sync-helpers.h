/* Helpers shared by the tests of the synchronisation primitives: the text
 * of the last error, wd_dump() and stderr captured as strings, and a way
 * to let other tasks run until a condition holds. */
#ifndef WD_TEST_SYNC_HELPERS_H
#define WD_TEST_SYNC_HELPERS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

/* The message of self's last error ("" when none). */
static inline const char *last_msg(const wd_task *self) {
  const wd_error *e = self ? wd_task_error(self) : wd_last_error();
  return e ? e->msg : "";
}

#define assert_msg_has(self, needle)                                           \
  cr_assert_not_null(strstr(last_msg(self), (needle)),                         \
                     "message \"%s\" lacks \"%s\"", last_msg(self), (needle))

/* Yield until cond holds; fail after many rounds rather than hang. */
#define yield_until(self, cond)                                                \
  do {                                                                         \
    int n_ = 0;                                                                \
    while (!(cond)) {                                                          \
      cr_assert_eq(wd_yield(self), 0);                                         \
      cr_assert_lt(++n_, 100000, "never: %s", #cond);                          \
    }                                                                          \
  } while (0)

/* wd_dump() of the current runtime, as a string to free. */
static inline char *dump_text(void) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  cr_assert_not_null(f);
  wd_dump(f);
  fclose(f);
  return text;
}

/* stderr into a temporary file, between capture_begin and capture_end,
 * which returns what was written (to free). */
typedef struct capture {
  FILE *tmp;
  int saved;
} capture;

static inline void capture_begin(capture *c) {
  fflush(stderr);
  c->tmp = tmpfile();
  cr_assert_not_null(c->tmp);
  c->saved = dup(2);
  dup2(fileno(c->tmp), 2);
}

static inline char *capture_end(capture *c) {
  fflush(stderr);
  dup2(c->saved, 2);
  close(c->saved);
  fseek(c->tmp, 0, SEEK_END);
  long n = ftell(c->tmp);
  rewind(c->tmp);
  char *text = calloc(1, (size_t)n + 1);
  cr_assert_not_null(text);
  if (n > 0) cr_assert_eq(fread(text, 1, (size_t)n, c->tmp), (size_t)n);
  fclose(c->tmp);
  return text;
}

#endif
