/* loop.h - one event loop per worker thread.
 *
 * Owns: the readiness backend, a timer wheel, a cached monotonic clock
 * (refreshed by the loop each iteration; nothing on a worker calls
 * clock_gettime itself), a deferred-work list that runs after each batch of
 * events, a before-sleep hook (where send queues are flushed, once per
 * iteration), and the one thread-safe entry point, cd_loop_post (an MPSC
 * queue plus an eventfd).
 *
 * One iteration: poll (level-triggered, up to CD_BACKEND_MAX_EVENTS
 * events), dispatch the batch, run posts, fire due timers, run deferred
 * work, call the before-sleep hook.  The clock is refreshed before the
 * poll, after it (handlers see the time they were woken at, and it does not
 * move while a batch is dispatched) and before the timers.
 *
 * Threads: cd_loop_post is the only function any thread may call.  Every
 * other function, and every callback, runs on the thread inside
 * cd_loop_run (create and destroy on the thread that owns the loop while
 * it is not running).  Callbacks may call any function here, except
 * cd_loop_run and cd_loop_destroy.
 *
 * Stale events: cd_loop_io_stop on an fd whose event is already fetched in
 * the current batch makes that event disappear, and a mask narrowed by
 * cd_loop_io_set filters it; owners free their memory via cd_loop_defer,
 * which runs after the batch, so a pointer in a fetched event is always
 * valid. */
#ifndef CD_LOOP_H
#define CD_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "mpsc.h"
#include "wheel.h"

enum {
    CD_IO_READ = 1u,
    CD_IO_WRITE = 2u,
    CD_IO_ERROR = 4u,                /* hang-up or error: reported to both */
};

typedef struct cd_loop cd_loop;
struct cd_io;
typedef void (*cd_io_fn)(struct cd_io *io, uint32_t events);

/* Embedded in the owner (a listener, a connection); intrusive.  Needs no
 * initialisation before cd_loop_io_start. */
typedef struct cd_io {
    int fd;                          /* -1 when stopped */
    uint32_t mask;                   /* CD_IO_READ | CD_IO_WRITE */
    cd_io_fn fn;
} cd_io;

/* Deferred work: embedded in the owner, runs once after the current batch.
 * Zero it before first use (is_queued must start false). */
typedef struct cd_defer {
    struct cd_defer *next;
    void (*fn)(struct cd_defer *d);
    bool is_queued;
} cd_defer;

/* Cross-thread work item; embedded in the message posted.  Set fn before
 * posting. */
typedef struct cd_post {
    cd_mpsc_node node;
    void (*fn)(struct cd_post *p, cd_loop *loop);
} cd_post;

/* Create a loop (epoll fd, eventfd, wheel at tick_ms).  Returns NULL on
 * failure.  `user` is the owner (the worker), see cd_loop_user. */
cd_loop *cd_loop_create(uint32_t tick_ms, void *user);
/* Run every post still queued (and the deferred work they cause), on the
 * calling thread.  Only after the loop has stopped and no thread posts to
 * it any more: the server uses it at shutdown so that messages still in
 * flight release what they hold. */
void cd_loop_drain_posts(cd_loop *l);
/* Destroy; the loop must not be running.  Deferred work still queued runs
 * first (it is where owners free what they closed); pending posts are not
 * run, and their memory stays the posters'.  ios and timers still started
 * are forgotten with the loop. */
void cd_loop_destroy(cd_loop *l);
void *cd_loop_user(const cd_loop *l);

/* Run until cd_loop_stop; returns 0, -EBUSY if already running, or -errno
 * on a fatal backend error.  May be called again after it returns. */
int cd_loop_run(cd_loop *l);
/* Loop thread: make cd_loop_run return after the current iteration (the
 * rest of it, deferred work and the before-sleep hook included, still
 * runs).  Another thread stops the loop by posting a call to this. */
void cd_loop_stop(cd_loop *l);

/* The cached monotonic clock, milliseconds (and the same in ns). */
uint64_t cd_loop_now_ms(const cd_loop *l);
uint64_t cd_loop_now_ns(const cd_loop *l);
/* Refresh the cached clock now (after a long piece of work). */
void cd_loop_update_time(cd_loop *l);

/* Start watching `fd` for `mask` (CD_IO_READ | CD_IO_WRITE; 0 registers
 * nothing until cd_loop_io_set), calling fn(io, events) with the ready
 * events within io->mask, plus CD_IO_ERROR on error or hang-up.  `io` must
 * be stopped or never started; cd_loop_io_set changes the mask later.
 * Returns 0 or -errno (io->fd is then -1). */
int cd_loop_io_start(cd_loop *l, cd_io *io, int fd, uint32_t mask,
                     cd_io_fn fn);
/* Change the mask; 0 pauses the io (it hears nothing, errors included)
 * without stopping it.  Returns 0, -EBADF on a stopped io, or -errno. */
int cd_loop_io_set(cd_loop *l, cd_io *io, uint32_t mask);
/* Stop watching (does not close the fd: stop first, then close); events
 * already fetched for it in this batch are dropped.  Sets io->fd to -1;
 * idempotent. */
void cd_loop_io_stop(cd_loop *l, cd_io *io);

/* Timers on the loop's wheel (t initialised with cd_timer_init).  Callbacks
 * get the loop's `user`.  A timer fires at or after deadline_ms (loop
 * clock), no more than one tick late.  Start re-arms an armed timer; stop
 * is idempotent. */
void cd_loop_timer_start(cd_loop *l, cd_timer *t, uint64_t deadline_ms);
void cd_loop_timer_stop(cd_loop *l, cd_timer *t);

/* Run fn(d) after the current batch of events, posts and timers, in FIFO
 * order; work deferred by deferred work runs in the same drain.  While d is
 * queued, further calls do nothing (the first fn stays).  d is unlinked
 * before fn runs, so fn may free it. */
void cd_loop_defer(cd_loop *l, cd_defer *d, void (*fn)(cd_defer *d));

/* Called every iteration after events, posts, timers and deferred work,
 * just before the loop sleeps, so it sees everything queued in the
 * iteration.  Work it defers runs in the next iteration, which then does
 * not sleep.  One hook per loop; NULL removes it. */
void cd_loop_set_before_sleep(cd_loop *l, void (*fn)(cd_loop *l, void *arg),
                              void *arg);

/* Any thread: queue p to run p->fn(p, loop) on the loop thread, and wake
 * the loop.  The caller keeps ownership of p until p->fn runs, and must not
 * post p again before that.  Posts from one thread run in the order posted.
 * Never fails. */
void cd_loop_post(cd_loop *l, cd_post *p);

#endif
