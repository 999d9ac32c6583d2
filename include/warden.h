/* warden.h - the whole public API of warden.
 *
 * warden: structured concurrency and resource lifecycles for C, on
 * stackful coroutines and libuv.  See README.md and docs/.
 */
#ifndef WARDEN_H
#define WARDEN_H

#include "warden/alloc.h"
#include "warden/app.h"
#include "warden/batcher.h"
#include "warden/blocking.h"
#include "warden/cache.h"
#include "warden/cancel.h"
#include "warden/container.h"
#include "warden/error.h"
#include "warden/flow.h"
#include "warden/group.h"
#include "warden/guard.h"
#include "warden/monitor.h"
#include "warden/pool.h"
#include "warden/ratelimit.h"
#include "warden/resource.h"
#include "warden/runtime.h"
#include "warden/scope.h"
#include "warden/sync.h"
#include "warden/task.h"
#include "warden/types.h"

#define WARDEN_VERSION_MAJOR 0
#define WARDEN_VERSION_MINOR 1
#define WARDEN_VERSION_PATCH 0
#define WARDEN_VERSION "0.1.0"

#endif
