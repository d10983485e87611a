/* loop_epoll.c - the Linux readiness backend: level-triggered epoll.
 *
 * Owns one epoll fd (close-on-exec) and the kernel event array for one
 * batch.  Translates CD_IO_* masks to epoll bits on the way in and back on
 * the way out; no other file sees an epoll constant. */
#include "loop_backend.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loop.h"

struct cd_backend {
    int epfd;
    struct epoll_event evs[CD_BACKEND_MAX_EVENTS];
};

cd_backend *cd_backend_create(void)
{
    cd_backend *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (b->epfd < 0) {
        int saved = errno;
        free(b);
        errno = saved;
        return NULL;
    }
    return b;
}

void cd_backend_destroy(cd_backend *b)
{
    if (b == NULL)
        return;
    /* close() on an epoll fd can only fail with EBADF, which would be our
     * own bug; there is nothing to recover either way. */
    (void)close(b->epfd);
    free(b);
}

/* EPOLLRDHUP counts as readable: the reader finds the EOF with read(). */
static uint32_t to_epoll(uint32_t mask)
{
    uint32_t ev = 0;
    if (mask & CD_IO_READ)
        ev |= EPOLLIN | EPOLLRDHUP;
    if (mask & CD_IO_WRITE)
        ev |= EPOLLOUT;
    return ev;
}

static uint32_t from_epoll(uint32_t ev)
{
    uint32_t mask = 0;
    if (ev & (EPOLLIN | EPOLLRDHUP))
        mask |= CD_IO_READ;
    if (ev & EPOLLOUT)
        mask |= CD_IO_WRITE;
    if (ev & (EPOLLERR | EPOLLHUP))
        mask |= CD_IO_ERROR;
    return mask;
}

int cd_backend_set(cd_backend *b, int fd, void *data, uint32_t old_mask,
                   uint32_t new_mask)
{
    old_mask &= CD_IO_READ | CD_IO_WRITE;
    new_mask &= CD_IO_READ | CD_IO_WRITE;
    if (old_mask == new_mask)
        return 0;

    int op = old_mask == 0 ? EPOLL_CTL_ADD
             : new_mask == 0 ? EPOLL_CTL_DEL
                             : EPOLL_CTL_MOD;
    /* Level-triggered on purpose: no EPOLLET (see loop_backend.h). */
    struct epoll_event ev = {.events = to_epoll(new_mask), .data.ptr = data};
    if (epoll_ctl(b->epfd, op, fd, &ev) < 0)
        return -errno;
    return 0;
}

int cd_backend_poll(cd_backend *b, cd_backend_event *evs, int max,
                    int timeout_ms)
{
    if (max > CD_BACKEND_MAX_EVENTS)
        max = CD_BACKEND_MAX_EVENTS;
    if (max <= 0)
        return 0;

    int n = epoll_wait(b->epfd, b->evs, max, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        evs[i].data = b->evs[i].data.ptr;
        evs[i].events = from_epoll(b->evs[i].events);
    }
    return n;
}
