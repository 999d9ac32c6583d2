/* The library's one allocator, for every layer (see warden/alloc.h): blocks
 * taken here are counted by wd_alloc_live() and can be made to fail by
 * wd_alloc_fail_after().  Layers above the core include this header, never
 * the core's internal one. */
#ifndef WD_UTIL_MEM_H
#define WD_UTIL_MEM_H

#include <stddef.h>

void *wd__malloc(size_t n);
void *wd__calloc(size_t n, size_t size);
void *wd__realloc(void *p, size_t n);
void wd__free(void *p);

#endif
