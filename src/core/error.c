/* Error codes and detailed errors.
 *
 * Codes come from the X-macro table in warden/error.h; anything else is
 * handed to libuv, whose codes are -errno on Unix.  A detailed error is a
 * heap object owned by the task that recorded it (or by the thread, outside
 * tasks).  Recording an error must not fail: when its message cannot be
 * allocated, the static description of the code stands in for it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Thread_local wd_error *thread_err;
/* Stands in for an error that could not be allocated, so that recording an
 * error never fails.  It never leaves its slot: wd__error_take() copies it
 * to the heap (or gives NULL), and wd__error_free() ignores it. */
static _Thread_local wd_error fallback;

const char *wd__basename(const char *path) {
  if (!path) return "?";
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

const char *wd_strerror(int code) {
  switch (code) {
  case 0:
    return "success";
#define WD_ERR_STR_(name, value, msg)                                          \
  case value:                                                                  \
    return msg;
    WD_ERRNO_MAP(WD_ERR_STR_)
#undef WD_ERR_STR_
  }
  /* uv_strerror() allocates (and leaks) for codes it does not know; the
   * _r variant writes into our buffer instead. */
  static _Thread_local char buf[96];
  uv_err_name_r(code, buf, sizeof buf);
  if (strncmp(buf, "Unknown", 7) != 0)
    return uv_strerror_r(code, buf, sizeof buf);
  if (code < 0 && code > -4096) return strerror_r(-code, buf, sizeof buf);
  snprintf(buf, sizeof buf, "unknown error %d", code);
  return buf;
}

const char *wd_err_name(int code) {
  switch (code) {
  case 0:
    return "OK";
#define WD_ERR_NAME_(name, value, msg)                                         \
  case value:                                                                  \
    return "WD_" #name;
    WD_ERRNO_MAP(WD_ERR_NAME_)
#undef WD_ERR_NAME_
  }
  static _Thread_local char buf[64];
  return uv_err_name_r(code, buf, sizeof buf);
}

void wd__error_free(wd_error *e) {
  while (e && e != &fallback) {
    wd_error *cause = e->cause;
    for (size_t i = 0; i < e->nchildren; i++)
      wd__error_free(e->children[i]);
    wd__free(e->children);
    for (size_t i = 0; i < e->nsecondary_kept; i++)
      wd__error_free(e->secondary[i]);
    wd__free(e->secondary);
    wd__free(e->owned_msg_);
    wd__free(e);
    e = cause;
  }
}

static wd_error *error_vnew(int code, const char *file, int line,
                            const char *fmt, va_list ap) {
  wd_error *e = wd__calloc(1, sizeof *e);
  if (!e) return NULL;
  e->code = code;
  e->file = file;
  e->line = line;
  e->msg = wd_strerror(code);
  if (fmt) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n >= 0) {
      char *m = wd__malloc((size_t)n + 1);
      if (m) {
        vsnprintf(m, (size_t)n + 1, fmt, ap);
        e->owned_msg_ = m;
        e->msg = m;
      }
    }
  }
  return e;
}

wd_error *wd__error_new(int code, const char *file, int line, const char *fmt,
                        ...) {
  va_list ap;
  va_start(ap, fmt);
  wd_error *e = error_vnew(code, file, line, fmt, ap);
  va_end(ap);
  return e;
}

static wd_error **slot_of(wd_task *self) {
  if (!self) self = wd__rt ? wd__rt->current : NULL;
  if (self && !self->is_sched) return &self->err;
  return &thread_err;
}

void wd__error_replace(wd_task *t, wd_error *e) {
  wd_error **slot = slot_of(t);
  wd__error_free(*slot);
  *slot = e;
}

static wd_error *use_fallback(int code, const char *file, int line) {
  fallback = (wd_error){.code = code, .file = file, .line = line};
  fallback.msg = wd_strerror(code);
  return &fallback;
}

wd_error *wd__error_take(wd_task *t) {
  wd_error **slot = slot_of(t);
  wd_error *e = *slot;
  *slot = NULL;
  if (e == &fallback) {
    e = wd__calloc(1, sizeof *e);
    if (e) *e = fallback;
  }
  return e;
}

int wd_error_set_(wd_task *self, const char *file, int line, int code,
                  const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  wd_error *e = error_vnew(code, file, line, fmt, ap);
  va_end(ap);
  wd__error_replace(self, e ? e : use_fallback(code, file, line));
  return code;
}

int wd_error_wrap_(wd_task *self, const char *file, int line, int code,
                   const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  wd_error *e = error_vnew(code, file, line, fmt, ap);
  va_end(ap);
  wd_error **slot = slot_of(self);
  if (e && *slot != &fallback) {
    e->cause = *slot;
    *slot = e;
  } else {
    wd__error_replace(self, e ? e : use_fallback(code, file, line));
  }
  return code;
}

wd_error *wd_error_detach(wd_task *self) { return wd__error_take(self); }

void wd_error_restore(wd_task *self, wd_error *e) {
  wd__error_replace(self, e);
}

void wd_error_free(wd_error *e) { wd__error_free(e); }

int wd_error_add_secondary(wd_error *e, wd_error *sec) {
  if (!e) {
    wd__error_free(sec);
    return WD_EINVAL;
  }
  e->nsecondary++;
  if (!sec) return 0;
  wd_error **a =
      wd__realloc(e->secondary, (e->nsecondary_kept + 1) * sizeof *a);
  if (!a) {
    wd__error_free(sec);
    return WD_ENOMEM;
  }
  a[e->nsecondary_kept++] = sec;
  e->secondary = a;
  return 0;
}

const wd_error *wd_task_error(const wd_task *task) {
  return task ? task->err : NULL;
}

const wd_error *wd_last_error(void) { return *slot_of(NULL); }

void wd_error_clear(wd_task *self) { wd__error_replace(self, NULL); }

void wd__thread_error_free(void) {
  wd__error_free(thread_err);
  thread_err = NULL;
}

/* A bounded appender: counts what the whole text needs, writes what fits. */
typedef struct sbuf {
  char *buf;
  size_t cap, len;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t room = b->len < b->cap ? b->cap - b->len : 0;
  int n = vsnprintf(room ? b->buf + b->len : NULL, room, fmt, ap);
  va_end(ap);
  if (n > 0) b->len += (size_t)n;
}

static void format_one(sbuf *b, const wd_error *e, int depth,
                       const char *lead) {
  for (; e; e = e->cause, lead = "caused by: ") {
    sb_printf(b, "%*s%s%s: %s", depth * 2, "", lead, wd_err_name(e->code),
              e->msg);
    if (e->task_id)
      sb_printf(b, " [task %llu '%s']", (unsigned long long)e->task_id,
                e->task_name);
    if (e->file) sb_printf(b, " (%s:%d)", wd__basename(e->file), e->line);
    if (e->nsecondary)
      sb_printf(b, " (+%zu cleanup error%s)", e->nsecondary,
                e->nsecondary == 1 ? "" : "s");
    sb_printf(b, "\n");
    for (size_t i = 0; i < e->nchildren; i++)
      format_one(b, e->children[i], depth + 1, "- ");
    for (size_t i = 0; i < e->nsecondary_kept; i++)
      format_one(b, e->secondary[i], depth + 1, "cleanup: ");
  }
}

size_t wd_error_format(const wd_error *err, char *buf, size_t n) {
  sbuf b = {buf, n, 0};
  if (n) buf[0] = '\0';
  if (!err) {
    sb_printf(&b, "no error\n");
    return b.len;
  }
  format_one(&b, err, 0, "");
  if (n && b.len >= n) buf[n - 1] = '\0';
  return b.len;
}

void wd_error_print(FILE *out, const wd_error *err) {
  char small[1024];
  size_t need = wd_error_format(err, small, sizeof small);
  if (need < sizeof small) {
    fputs(small, out);
    return;
  }
  char *big = wd__malloc(need + 1);
  if (!big) {
    fputs(small, out);
    return;
  }
  wd_error_format(err, big, need + 1);
  fputs(big, out);
  wd__free(big);
}
