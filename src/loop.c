/* loop.c - one event loop per worker thread.
 *
 * An iteration: refresh the cached clock, poll (level-triggered) for at most
 * CD_BACKEND_MAX_EVENTS events, refresh the clock again and dispatch the
 * batch, run the cross-thread posts, advance the timer wheel, run deferred
 * work, then call the before-sleep hook.  The hook runs last because
 * everything before it (events, posts, timers, deferred closes) may queue
 * writes, and it is where send queues are flushed once per iteration.
 *
 * Invariants: while a batch is dispatched, evs[next_ev..n_evs) are the
 * events not yet delivered, and cd_loop_io_stop clears the ones that belong
 * to the stopped io, so a handler never sees an io stopped earlier in the
 * batch.  Only cd_loop_post touches the loop from other threads, through the
 * MPSC queue, `wake_pending` and the eventfd. */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "loop_backend.h"

/* At most this many posts run per iteration, so a producer that never
 * pauses cannot keep the loop away from its sockets; the rest run in the
 * next iteration, which then polls without sleeping. */
#define POST_BUDGET 4096

#define IO_MASK (CD_IO_READ | CD_IO_WRITE)

struct cd_loop {
    cd_backend *backend;
    void *user;
    uint64_t now_ns;                 /* cached CLOCK_MONOTONIC */
    cd_wheel wheel;

    cd_backend_event evs[CD_BACKEND_MAX_EVENTS];
    int n_evs;                       /* events in the batch being dispatched */
    int next_ev;                     /* first event not yet dispatched */

    cd_defer *defer_head;
    cd_defer **defer_tail;

    void (*before_sleep)(cd_loop *l, void *arg);
    void *before_sleep_arg;

    bool is_running;
    bool is_stopping;
    bool has_more_posts;             /* the last drain stopped at its budget */
    int fatal;                       /* -errno that ends cd_loop_run, or 0 */

    int wake_fd;                     /* eventfd, watched by wake_io */
    cd_io wake_io;

    /* Shared with producer threads; see cd_loop_post. */
    cd_mpsc posts;
    atomic_bool wake_pending;
};

void cd_loop_update_time(cd_loop *l)
{
    struct timespec ts;

    /* CLOCK_MONOTONIC with a valid pointer cannot fail on Linux; if it ever
     * did, keeping the previous value keeps the clock monotonic. */
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return;
    uint64_t ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    if (ns > l->now_ns)
        l->now_ns = ns;
}

uint64_t cd_loop_now_ns(const cd_loop *l)
{
    return l->now_ns;
}

uint64_t cd_loop_now_ms(const cd_loop *l)
{
    return l->now_ns / 1000000u;
}

void *cd_loop_user(const cd_loop *l)
{
    return l->user;
}

static void run_deferred(cd_loop *l);

/* The eventfd only interrupts the poll; the posts themselves are drained
 * every iteration.  One read resets the counter, so level-triggered epoll
 * stops reporting it until the next write. */
static void on_wake(cd_io *io, uint32_t events)
{
    cd_loop *l = CD_CONTAINER_OF(io, cd_loop, wake_io);
    uint64_t count;

    CD_UNUSED(events);
    for (;;) {
        ssize_t r = read(l->wake_fd, &count, sizeof(count));
        if (r == (ssize_t)sizeof(count))
            return;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        /* Anything else would leave the eventfd readable forever and
         * spin the loop, so give up and report it from cd_loop_run. */
        l->fatal = r < 0 ? -errno : -EIO;
        l->is_stopping = true;
        return;
    }
}

cd_loop *cd_loop_create(uint32_t tick_ms, void *user)
{
    int saved_errno = ENOMEM;
    cd_loop *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return NULL;
    l->user = user;
    l->wake_fd = -1;
    l->wake_io.fd = -1;
    l->defer_tail = &l->defer_head;
    cd_mpsc_init(&l->posts);
    atomic_init(&l->wake_pending, false);
    cd_loop_update_time(l);
    cd_wheel_init(&l->wheel, cd_loop_now_ms(l), tick_ms, user);

    if ((l->backend = cd_backend_create()) == NULL) {
        saved_errno = errno;
        goto fail;
    }
    if ((l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        saved_errno = errno;
        goto fail;
    }
    int rc = cd_loop_io_start(l, &l->wake_io, l->wake_fd, CD_IO_READ, on_wake);
    if (rc != 0) {
        saved_errno = -rc;
        goto fail;
    }
    return l;

fail:
    cd_loop_destroy(l);
    errno = saved_errno;
    return NULL;
}

void cd_loop_destroy(cd_loop *l)
{
    if (l == NULL)
        return;
    /* Deferred work is where owners free what they closed; dropping it
     * here would leak whatever was closed after the last iteration. */
    run_deferred(l);
    if (l->backend != NULL)
        cd_loop_io_stop(l, &l->wake_io);
    /* close() of an eventfd can only fail with EBADF, our own bug; there is
     * nothing to recover on the way out. */
    if (l->wake_fd >= 0)
        (void)close(l->wake_fd);
    cd_backend_destroy(l->backend);
    free(l);
}

void cd_loop_stop(cd_loop *l)
{
    l->is_stopping = true;
}

/* ---- fd watchers ---------------------------------------------------- */

int cd_loop_io_start(cd_loop *l, cd_io *io, int fd, uint32_t mask,
                     cd_io_fn fn)
{
    io->fd = -1;
    io->mask = 0;
    io->fn = fn;
    if (fd < 0)
        return -EBADF;
    mask &= IO_MASK;
    int rc = cd_backend_set(l->backend, fd, io, 0, mask);
    if (rc != 0)
        return rc;
    io->fd = fd;
    io->mask = mask;
    return 0;
}

int cd_loop_io_set(cd_loop *l, cd_io *io, uint32_t mask)
{
    if (io->fd < 0)
        return -EBADF;
    mask &= IO_MASK;
    int rc = cd_backend_set(l->backend, io->fd, io, io->mask, mask);
    if (rc != 0)
        return rc;
    io->mask = mask;
    return 0;
}

/* The libuv uv__platform_invalidate_fd idea: a batch holds at most
 * CD_BACKEND_MAX_EVENTS entries, so a scan of the undelivered ones is cheap
 * and saves every handler from checking whether its object is still live. */
static void invalidate_fetched(cd_loop *l, const cd_io *io)
{
    for (int i = l->next_ev; i < l->n_evs; i++)
        if (l->evs[i].data == io)
            l->evs[i].data = NULL;
}

void cd_loop_io_stop(cd_loop *l, cd_io *io)
{
    if (io->fd < 0)
        return;
    /* The only failures are EBADF or ENOENT when the owner closed the fd
     * first; the kernel has then dropped the registration itself, so
     * nothing is left to undo. */
    if (io->mask != 0)
        (void)cd_backend_set(l->backend, io->fd, io, io->mask, 0);
    invalidate_fetched(l, io);
    io->fd = -1;
    io->mask = 0;
}

static void dispatch(cd_loop *l, int n)
{
    l->n_evs = n;
    for (l->next_ev = 0; l->next_ev < l->n_evs;) {
        const cd_backend_event *e = &l->evs[l->next_ev++];
        cd_io *io = e->data;
        if (io == NULL)
            continue;                /* stopped earlier in this batch */
        /* The mask may have shrunk since the poll; a paused io (mask 0)
         * is out of the backend and hears nothing, errors included. */
        uint32_t events = e->events & (io->mask | CD_IO_ERROR);
        if (io->mask == 0 || events == 0)
            continue;
        io->fn(io, events);
    }
    l->n_evs = 0;
    l->next_ev = 0;
}

/* ---- timers, deferred work, hooks ----------------------------------- */

void cd_loop_timer_start(cd_loop *l, cd_timer *t, uint64_t deadline_ms)
{
    cd_wheel_add(&l->wheel, t, deadline_ms);
}

void cd_loop_timer_stop(cd_loop *l, cd_timer *t)
{
    cd_wheel_remove(&l->wheel, t);
}

void cd_loop_defer(cd_loop *l, cd_defer *d, void (*fn)(cd_defer *d))
{
    if (d->is_queued)
        return;
    d->fn = fn;
    d->next = NULL;
    d->is_queued = true;
    *l->defer_tail = d;
    l->defer_tail = &d->next;
}

/* FIFO until empty, including items deferred by the items being run.  The
 * entry is unlinked before its fn runs, because fn may free it. */
static void run_deferred(cd_loop *l)
{
    cd_defer *d;

    while ((d = l->defer_head) != NULL) {
        l->defer_head = d->next;
        if (l->defer_head == NULL)
            l->defer_tail = &l->defer_head;
        d->next = NULL;
        d->is_queued = false;
        d->fn(d);
    }
}

void cd_loop_set_before_sleep(cd_loop *l, void (*fn)(cd_loop *l, void *arg),
                              void *arg)
{
    l->before_sleep = fn;
    l->before_sleep_arg = arg;
}

/* ---- cross-thread posts --------------------------------------------- */

/* Why no wake-up is lost.  A producer pushes (its node is fully linked
 * when cd_mpsc_push returns), then swaps wake_pending to true, and writes
 * the eventfd only if it saw false.  Each iteration the loop reads the
 * eventfd (dispatch), then swaps wake_pending to false, then drains.  All
 * writes to wake_pending are acq_rel exchanges, so each continues the
 * release sequence of the ones before it.  Take a producer P that saw true
 * and did not write:
 *  - if P's swap precedes the loop's clearing swap in wake_pending's
 *    modification order, the clear (an acquire) synchronises with it, so
 *    P's node is visible to the drain.  The drain reaches it, or stops at
 *    the budget (the next poll then does not sleep), or stops at a producer
 *    Q still between its two push steps; Q swaps only after linking, so
 *    after the clear (had it swapped before, its link would be visible),
 *    which is the next case, for Q;
 *  - if P's swap follows the clear, the true it saw was stored after the
 *    clear by a producer that saw false and so writes the eventfd.
 * Unless the drain reached the node, an eventfd write happens after this
 * iteration's read of it, so the next poll returns and the next drain
 * repeats the argument. */
void cd_loop_post(cd_loop *l, cd_post *p)
{
    cd_mpsc_push(&l->posts, &p->node);
    if (atomic_exchange_explicit(&l->wake_pending, true, memory_order_acq_rel))
        return;                      /* a wake-up is already on its way */

    uint64_t one = 1;
    ssize_t r;
    do {
        r = write(l->wake_fd, &one, sizeof(one));
    } while (r < 0 && errno == EINTR);
    /* The only other failure of a non-blocking eventfd write is EAGAIN, when
     * the counter is near 2^64: it is then non-zero and the loop wakes
     * anyway.  So the result needs no further handling and post never
     * fails. */
    CD_UNUSED(r);
}

static void run_posts(cd_loop *l)
{
    (void)atomic_exchange_explicit(&l->wake_pending, false, memory_order_acq_rel);
    l->has_more_posts = false;
    for (int i = 0; i < POST_BUDGET; i++) {
        cd_mpsc_node *n = cd_mpsc_pop(&l->posts);
        if (n == NULL)
            return;
        cd_post *p = CD_CONTAINER_OF(n, cd_post, node);
        p->fn(p, l);
    }
    l->has_more_posts = true;
}

void cd_loop_drain_posts(cd_loop *l)
{
    /* Called once no thread can post any more: a push in progress has
     * completed, so an empty pop really means empty. */
    cd_mpsc_node *n;
    while ((n = cd_mpsc_pop(&l->posts)) != NULL) {
        cd_post *p = CD_CONTAINER_OF(n, cd_post, node);
        p->fn(p, l);
    }
    run_deferred(l);
}

/* ---- the loop ------------------------------------------------------- */

/* Do not sleep while work is already queued; otherwise sleep until the next
 * tick that may fire a timer, or forever when none is armed. */
static int poll_timeout(const cd_loop *l)
{
    if (l->defer_head != NULL || l->has_more_posts)
        return 0;
    if (atomic_load_explicit(&l->wake_pending, memory_order_relaxed))
        return 0;
    return cd_wheel_timeout_ms(&l->wheel, cd_loop_now_ms(l));
}

int cd_loop_run(cd_loop *l)
{
    int rc = 0;

    if (l->is_running)
        return -EBUSY;
    l->is_running = true;
    while (!l->is_stopping) {
        cd_loop_update_time(l);
        int n = cd_backend_poll(l->backend, l->evs, CD_BACKEND_MAX_EVENTS,
                                poll_timeout(l));
        if (n < 0) {
            rc = n;
            break;
        }
        /* The poll may have slept for seconds: handlers must see the time
         * they were woken at, not the time the loop went to sleep. */
        cd_loop_update_time(l);
        dispatch(l, n);
        if (l->fatal != 0) {
            rc = l->fatal;
            break;
        }
        run_posts(l);
        cd_loop_update_time(l);
        cd_wheel_advance(&l->wheel, cd_loop_now_ms(l));
        run_deferred(l);
        if (l->before_sleep != NULL)
            l->before_sleep(l, l->before_sleep_arg);
    }
    l->is_running = false;
    l->is_stopping = false;
    l->fatal = 0;
    return rc;
}
