/* Task locals (context variables).
 *
 * A task's locals are an immutable, reference-counted list of (key, value)
 * nodes, newest first.  A spawned task shares its spawner's list (one
 * reference count), so inheritance costs nothing; wd_local_set() prepends a
 * node, so what a child sets is invisible to its parent and siblings.  When
 * every node from the head to the key's node is owned by the task alone,
 * the value is updated in place instead, which keeps a loop that sets the
 * same key from growing the list.
 */
#include "internal.h"

struct wd__local {
  wd__local *next;
  const wd_local_key *key;
  void *value;
  unsigned refs;
};

wd__local *wd__local_ref(wd__local *l) {
  if (l) l->refs++;
  return l;
}

void wd__local_unref(wd__local *l) {
  while (l && --l->refs == 0) {
    wd__local *next = l->next;
    wd__free(l);
    l = next;
  }
}

void *wd_local_get(const wd_task *self, const wd_local_key *key) {
  if (!self || !key) return NULL;
  for (const wd__local *l = self->locals; l; l = l->next)
    if (l->key == key) return l->value;
  return NULL;
}

int wd_local_set(wd_task *self, const wd_local_key *key, void *value) {
  if (!self || !key)
    return wd_fail(self, WD_EINVAL, "wd_local_set: NULL %s",
                   !self ? "task" : "key");
  for (wd__local *l = self->locals; l && l->refs == 1; l = l->next) {
    if (l->key == key) {
      l->value = value;
      return 0;
    }
  }
  wd__local *n = wd__malloc(sizeof *n);
  if (!n)
    return wd_fail(self, WD_ENOMEM, "wd_local_set: no memory for '%s'",
                   key->name ? key->name : "?");
  n->next = self->locals; /* the task's reference moves to the new node */
  n->key = key;
  n->value = value;
  n->refs = 1;
  self->locals = n;
  return 0;
}
