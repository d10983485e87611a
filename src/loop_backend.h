/* loop_backend.h - the readiness backend behind loop.c.
 *
 * Four functions; loop_epoll.c implements them on Linux.  A kqueue backend
 * would implement the same set.  `data` is returned with each event and is
 * the loop's cd_io pointer.  Readiness is level-triggered: an fd that is
 * still readable or writable is reported again on the next poll, which the
 * connection code relies on when it stops reading early for fairness.
 * Errors and hang-ups are reported whatever the mask. */
#ifndef CD_LOOP_BACKEND_H
#define CD_LOOP_BACKEND_H

#include <stdint.h>

typedef struct cd_backend cd_backend;

/* The most events one cd_backend_poll returns; larger `max` is clamped. */
#define CD_BACKEND_MAX_EVENTS 256

typedef struct cd_backend_event {
    void *data;
    uint32_t events;                 /* CD_IO_READ | CD_IO_WRITE | CD_IO_ERROR */
} cd_backend_event;

/* Returns NULL on failure (errno set). */
cd_backend *cd_backend_create(void);
void cd_backend_destroy(cd_backend *b);
/* Register, change or remove interest in fd.  Return 0 or -errno. */
int cd_backend_set(cd_backend *b, int fd, void *data, uint32_t old_mask,
                   uint32_t new_mask);
/* Wait up to timeout_ms (-1: forever) and fill at most max events.
 * Returns the number filled (0 on timeout or EINTR), or -errno. */
int cd_backend_poll(cd_backend *b, cd_backend_event *evs, int max,
                    int timeout_ms);

#endif
