/* common.h - tiny helpers shared by every module.
 *
 * No types of our own and no includes of other modules: anything that needs
 * more than a macro belongs in the module that owns it. */
#ifndef CD_COMMON_H
#define CD_COMMON_H

#include <stddef.h>

#define CD_LIKELY(x)   __builtin_expect(!!(x), 1)
#define CD_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define CD_UNUSED(x)   ((void)(x))
#define CD_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define CD_CONTAINER_OF(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))
#define CD_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CD_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Internal symbols that another file needs carry the cd_ prefix; public ones
 * are conduit_ and marked CONDUIT_API in conduit.h. */

#endif
