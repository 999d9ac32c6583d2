/* warden/alloc.h - allocation accounting and fault injection.
 *
 * All of warden's memory - heap blocks and task stacks - is taken through
 * one internal allocator, so tests can count what is live and make the Nth
 * allocation fail (SQLite's discipline: loop N until the operation succeeds,
 * checking the error contract and the leak count each time).
 */
#ifndef WARDEN_ALLOC_H
#define WARDEN_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Make the nth allocation from now fail (1 = the next one); 0 disables.
 * One-shot: after it fired, allocations succeed again. */
void wd_alloc_fail_after(long n);

/* True if the armed failure has fired since the last wd_alloc_fail_after. */
int wd_alloc_failed(void);

/* Heap blocks currently allocated by warden (stacks are not blocks). */
long wd_alloc_live(void);

/* Allocations attempted so far (blocks and stack acquisitions). */
long wd_alloc_count(void);

#ifdef __cplusplus
}
#endif
#endif
