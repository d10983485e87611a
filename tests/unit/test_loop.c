/* test_loop.c - the event loop with real fds, real time and real threads.
 *
 * Covers: readiness delivery and masks, the Rule 7 stale-event case (a
 * handler stops another io whose event is already in the batch), deferred
 * work after the batch, the before-sleep hook once per iteration and after
 * everything that can queue writes, timers, cross-thread posts (4 threads,
 * each post exactly once, no lost wake-up while the loop sleeps with no
 * timeout), and the cached clock.  alarm() bounds the whole binary: a lost
 * wake-up shows up as a hang, so no test that checks wake-ups arms a timer
 * that would wake the loop by itself. */
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "test.h"

static int make_pair(int sv[2])
{
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv);
}

static void close_pair(int sv[2])
{
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    sv[0] = sv[1] = -1;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A timer that stops the loop so a broken test fails instead of hanging.
 * Only for tests that do not check wake-ups. */
typedef struct guard {
    cd_timer t;
    cd_loop *loop;
    int fired;
} guard;

static void on_guard(cd_timer *t, void *user)
{
    guard *g = CD_CONTAINER_OF(t, guard, t);
    CD_UNUSED(user);
    g->fired = 1;
    cd_loop_stop(g->loop);
}

static void guard_start(guard *g, cd_loop *l, uint64_t ms)
{
    g->loop = l;
    g->fired = 0;
    cd_timer_init(&g->t, on_guard);
    cd_loop_timer_start(l, &g->t, cd_loop_now_ms(l) + ms);
}

/* ---- readiness ------------------------------------------------------ */

typedef struct watcher {
    cd_io io;
    cd_loop *loop;
    int n_calls;
    uint32_t events;
    int rc_nested;
    uint32_t set_mask;               /* io_set to this on the first call */
    int stop_loop;
    uint64_t now_ms;                 /* the loop's clock in the last call */
} watcher;

static void on_watch(cd_io *io, uint32_t events)
{
    watcher *w = CD_CONTAINER_OF(io, watcher, io);
    char buf[64];

    w->n_calls++;
    w->events |= events;
    w->now_ms = cd_loop_now_ms(w->loop);
    if (events & CD_IO_READ) {
        /* Drain; EOF or EAGAIN both end it, and neither is an error here. */
        while (read(io->fd, buf, sizeof(buf)) > 0) {
        }
    }
    w->rc_nested = cd_loop_run(w->loop);
    if (w->set_mask != 0) {
        CHECK_EQ(cd_loop_io_set(w->loop, io, w->set_mask & ~CD_IO_ERROR), 0);
        w->set_mask = 0;
    }
    if (w->stop_loop)
        cd_loop_stop(w->loop);
}

TEST(io_read_fires)
{
    cd_loop *l = cd_loop_create(10, NULL);
    int sv[2] = {-1, -1};
    watcher w = {0};
    guard g;

    CHECK(l != NULL);
    if (l == NULL)
        return;
    CHECK_EQ(make_pair(sv), 0);
    w.loop = l;
    w.stop_loop = 1;
    CHECK_EQ(cd_loop_io_start(l, &w.io, sv[0], CD_IO_READ, on_watch), 0);
    CHECK_EQ(w.io.fd, sv[0]);
    CHECK_EQ(w.io.mask, CD_IO_READ);
    CHECK_EQ(write(sv[1], "hello", 5), 5);
    guard_start(&g, l, 2000);
    CHECK_EQ(cd_loop_run(l), 0);
    CHECK_EQ(g.fired, 0);
    CHECK_EQ(w.n_calls, 1);
    CHECK_EQ(w.events, CD_IO_READ);
    CHECK_EQ(w.rc_nested, -EBUSY);   /* no re-entrant run */

    /* The loop runs again after a stop, and the drained socket is quiet. */
    w.n_calls = 0;
    cd_loop_timer_stop(l, &g.t);
    guard_start(&g, l, 30);
    CHECK_EQ(cd_loop_run(l), 0);
    CHECK_EQ(g.fired, 1);
    CHECK_EQ(w.n_calls, 0);

    cd_loop_io_stop(l, &w.io);
    CHECK_EQ(w.io.fd, -1);
    cd_loop_io_stop(l, &w.io);       /* idempotent */
    close_pair(sv);
    cd_loop_destroy(l);
}

TEST(io_write_then_mask_change)
{
    cd_loop *l = cd_loop_create(10, NULL);
    int sv[2] = {-1, -1};
    watcher w = {0};
    guard g;

    CHECK(l != NULL);
    if (l == NULL)
        return;
    CHECK_EQ(make_pair(sv), 0);
    w.loop = l;
    w.set_mask = CD_IO_READ;         /* writable once, then only reads */
    CHECK_EQ(cd_loop_io_start(l, &w.io, sv[0], CD_IO_READ | CD_IO_WRITE, on_watch), 0);
    guard_start(&g, l, 50);
    CHECK_EQ(cd_loop_run(l), 0);
    CHECK_EQ(g.fired, 1);
    CHECK_EQ(w.n_calls, 1);
    CHECK_EQ(w.events, CD_IO_WRITE);

    /* Mask 0 pauses the io without stopping it; it hears nothing. */
    CHECK_EQ(cd_loop_io_set(l, &w.io, 0), 0);
    CHECK_EQ(w.io.fd, sv[0]);
    CHECK_EQ(write(sv[1], "x", 1), 1);
    w.n_calls = 0;
    guard_start(&g, l, 30);
    CHECK_EQ(cd_loop_run(l), 0);
    CHECK_EQ(w.n_calls, 0);

    /* And resumes with the data still there (level-triggered). */
    CHECK_EQ(cd_loop_io_set(l, &w.io, CD_IO_READ), 0);
    w.stop_loop = 1;
    w.events = 0;
    guard_start(&g, l, 2000);
    CHECK_EQ(cd_loop_run(l), 0);
    CHECK_EQ(g.fired, 0);
    CHECK_EQ(w.n_calls, 1);
    CHECK_EQ(w.events, CD_IO_READ);
    cd_loop_timer_stop(l, &g.t);

    cd_loop_io_stop(l, &w.io);
    CHECK_EQ(cd_loop_io_set(l, &w.io, CD_IO_READ), -EBADF);
    close_pair(sv);
    cd_loop_destroy(l);
}

TEST(io_mask_filters_and_errors)
{
    cd_loop *l = cd_loop_create(10, NULL);
    int sv[2] = {-1, -1};
    watcher w = {0};
    guard g;

    CHECK(l != NULL);
    if (l == NULL)
        return;
    CHECK_EQ(make_pair(sv), 0);
    w.loop = l;

    /* Writable but not readable: a READ watcher hears nothing. */
    CHECK_EQ(cd_loop_io_start(l, &w.io, sv[0], CD_IO_READ, on_watch), 0);
    guard_start(&g, l, 30);
    CHECK_EQ(cd_loop_run(l), 0);
    CHECK_EQ(w.n_calls, 0);
    cd_loop_io_stop(l, &w.io);

    /* Peer gone: a WRITE-only watcher gets the hang-up as CD_IO_ERROR and
     * never a READ. */
    close(sv[1]);
    sv[1] = -1;
    w.stop_loop = 1;
    CHECK_EQ(cd_loop_io_start(l, &w.io, sv[0], CD_IO_WRITE, on_watch), 0);
    guard_start(&g, l, 2000);
    CHECK_EQ(cd_loop_run(l), 0);
    CHECK_EQ(g.fired, 0);
    CHECK_EQ(w.n_calls, 1);
    CHECK(w.events & CD_IO_ERROR);
    CHECK(!(w.events & CD_IO_READ));
    cd_loop_timer_stop(l, &g.t);

    /* Stopping after the owner closed the fd is harmless. */
    close(sv[0]);
    sv[0] = -1;
    cd_loop_io_stop(l, &w.io);
    CHECK_EQ(w.io.fd, -1);

    CHECK_EQ(cd_loop_io_start(l, &w.io, -1, CD_IO_READ, on_watch), -EBADF);
    CHECK_EQ(w.io.fd, -1);
    close_pair(sv);
    cd_loop_destroy(l);
}

/* ---- Rule 7: stale events are dropped ------------------------------- */

typedef struct conn {
    cd_io io;
    cd_defer defer;
    cd_loop *loop;
    struct conn *peer;               /* the other connection in the test */
    int *n_calls;
    int *n_freed;
    int restart_fd;                  /* see on_conn; -1 for none */
} conn;

static void conn_free(cd_defer *d)
{
    conn *c = CD_CONTAINER_OF(d, conn, defer);
    (*c->n_freed)++;
    free(c);
}

/* Handler A closes connection B whose event is still pending: B's memory is
 * released after the batch, and B's handler must never run.  With
 * `restart_fd`, A instead reuses B at once for a new, idle fd (as an accept
 * into a recycled object would): the event fetched for B's old fd must not
 * reach the new one either. */
static void on_conn(cd_io *io, uint32_t events)
{
    conn *c = CD_CONTAINER_OF(io, conn, io);

    CD_UNUSED(events);
    (*c->n_calls)++;
    if (c->peer != NULL) {
        conn *b = c->peer;
        b->peer = NULL;
        c->peer = NULL;
        cd_loop_io_stop(c->loop, &b->io);
        if (b->restart_fd >= 0)
            CHECK_EQ(cd_loop_io_start(c->loop, &b->io, b->restart_fd, CD_IO_READ, on_conn), 0);
        else
            cd_loop_defer(c->loop, &b->defer, conn_free);
    }
    cd_loop_stop(c->loop);
}

static int stale_event_rounds(int restart)
{
    enum { N_ROUNDS = 20 };
    int n_bad = 0;

    /* Many rounds, because the kernel picks which of the two comes first. */
    for (int round = 0; round < N_ROUNDS; round++) {
        cd_loop *l = cd_loop_create(10, NULL);
        int sa[2] = {-1, -1}, sb[2] = {-1, -1}, sc[2] = {-1, -1};
        int n_calls = 0, n_freed = 0;
        conn *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
        guard g;

        CHECK(l != NULL && a != NULL && b != NULL);
        if (l == NULL || a == NULL || b == NULL) {
            free(a);
            free(b);
            cd_loop_destroy(l);
            return 1;
        }
        CHECK_EQ(make_pair(sa), 0);
        CHECK_EQ(make_pair(sb), 0);
        CHECK_EQ(make_pair(sc), 0);
        *a = (conn){.loop = l, .peer = b, .n_calls = &n_calls, .n_freed = &n_freed,
                    .restart_fd = restart ? sc[0] : -1};
        *b = (conn){.loop = l, .peer = a, .n_calls = &n_calls, .n_freed = &n_freed,
                    .restart_fd = restart ? sc[0] : -1};
        CHECK_EQ(cd_loop_io_start(l, &a->io, sa[0], CD_IO_READ, on_conn), 0);
        CHECK_EQ(cd_loop_io_start(l, &b->io, sb[0], CD_IO_READ, on_conn), 0);
        /* Both readable before the first poll: one batch holds both. */
        CHECK_EQ(write(sa[1], "a", 1), 1);
        CHECK_EQ(write(sb[1], "b", 1), 1);
        guard_start(&g, l, 2000);
        CHECK_EQ(cd_loop_run(l), 0);
        CHECK_EQ(g.fired, 0);
        n_bad += n_calls != 1 || n_freed != (restart ? 0 : 1);

        /* What is left is stopped and freed by the test. */
        if (restart) {
            cd_loop_io_stop(l, &a->io);
            cd_loop_io_stop(l, &b->io);
            free(a);
            free(b);
        } else {
            conn *alive = a->io.fd >= 0 ? a : b;
            CHECK(alive->io.fd >= 0);
            cd_loop_io_stop(l, &alive->io);
            free(alive);
        }
        close_pair(sa);
        close_pair(sb);
        close_pair(sc);
        cd_loop_destroy(l);
    }
    return n_bad;
}

TEST(stop_other_io_in_same_batch)
{
    CHECK_EQ(stale_event_rounds(0), 0);
}

TEST(restart_other_io_in_same_batch)
{
    CHECK_EQ(stale_event_rounds(1), 0);
}

/* Handler A shrinks B's mask to READ while B's READ|WRITE event is already
 * fetched: B hears only READ. */
typedef struct shrink {
    cd_io io;
    struct shrink *other;
    cd_loop *loop;
    int *n_calls;
    uint32_t events;
} shrink;

static void on_shrink(cd_io *io, uint32_t events)
{
    shrink *s = CD_CONTAINER_OF(io, shrink, io);
    char buf[16];

    s->events = events;
    while (read(io->fd, buf, sizeof(buf)) > 0) {
    }
    if ((*s->n_calls)++ == 0)
        CHECK_EQ(cd_loop_io_set(s->loop, &s->other->io, CD_IO_READ), 0);
    else
        cd_loop_stop(s->loop);
}

TEST(mask_shrunk_in_same_batch)
{
    cd_loop *l = cd_loop_create(10, NULL);
    int sa[2] = {-1, -1}, sb[2] = {-1, -1};
    int n_calls = 0;
    shrink a = {0}, b = {0};
    guard g;

    CHECK(l != NULL);
    if (l == NULL)
        return;
    CHECK_EQ(make_pair(sa), 0);
    CHECK_EQ(make_pair(sb), 0);
    a = (shrink){.other = &b, .loop = l, .n_calls = &n_calls};
    b = (shrink){.other = &a, .loop = l, .n_calls = &n_calls};
    CHECK_EQ(write(sa[1], "a", 1), 1);
    CHECK_EQ(write(sb[1], "b", 1), 1);
    CHECK_EQ(cd_loop_io_start(l, &a.io, sa[0], CD_IO_READ | CD_IO_WRITE, on_shrink), 0);
    CHECK_EQ(cd_loop_io_start(l, &b.io, sb[0], CD_IO_READ | CD_IO_WRITE, on_shrink), 0);
    guard_start(&g, l, 2000);
    CHECK_EQ(cd_loop_run(l), 0);
    CHECK_EQ(g.fired, 0);
    CHECK_EQ(n_calls, 2);
    /* One heard both, the other only what its new mask allows. */
    CHECK((a.events == (CD_IO_READ | CD_IO_WRITE) && b.events == CD_IO_READ) ||
          (b.events == (CD_IO_READ | CD_IO_WRITE) && a.events == CD_IO_READ));
    cd_loop_io_stop(l, &a.io);
    cd_loop_io_stop(l, &b.io);
    close_pair(sa);
    close_pair(sb);
    cd_loop_destroy(l);
}


/* ---- deferred work and the before-sleep hook ------------------------ */

typedef struct order order;

typedef struct order_io {
    cd_io io;
    order *o;
    int sv[2];
} order_io;

struct order {
    cd_loop *loop;
    order_io ios[3];
    int n_io;
    cd_defer d1, d2;
    int d1_runs, d2_runs;
    int n_io_at_d1;                  /* handlers run when d1 ran */
    int n_sleep_at_d2;               /* hooks run when d2 ran */
    int n_sleep;
    int deferred_before_sleep;
};

static void on_d2(cd_defer *d)
{
    order *o = CD_CONTAINER_OF(d, order, d2);
    o->d2_runs++;
    o->n_sleep_at_d2 = o->n_sleep;
}

static void on_d1(cd_defer *d)
{
    order *o = CD_CONTAINER_OF(d, order, d1);
    o->d1_runs++;
    o->n_io_at_d1 = o->n_io;
    /* Deferred from deferred work: runs in the same drain. */
    cd_loop_defer(o->loop, &o->d2, on_d2);
}

static void on_order_io(cd_io *io, uint32_t events)
{
    order_io *oi = CD_CONTAINER_OF(io, order_io, io);
    order *o = oi->o;
    char buf[16];

    CD_UNUSED(events);
    while (read(io->fd, buf, sizeof(buf)) > 0) {
    }
    o->n_io++;
    /* Every handler defers the same item; it is queued once. */
    cd_loop_defer(o->loop, &o->d1, on_d1);
}

static void order_before_sleep(cd_loop *l, void *arg)
{
    order *o = arg;
    o->n_sleep++;
    o->deferred_before_sleep = o->d1_runs == 1 && o->d2_runs == 1;
    cd_loop_stop(l);
}

TEST(deferred_runs_after_batch)
{
    order o;
    guard g;

    memset(&o, 0, sizeof(o));
    o.loop = cd_loop_create(10, NULL);
    CHECK(o.loop != NULL);
    if (o.loop == NULL)
        return;
    for (int i = 0; i < 3; i++) {
        o.ios[i].o = &o;
        CHECK_EQ(make_pair(o.ios[i].sv), 0);
        CHECK_EQ(cd_loop_io_start(o.loop, &o.ios[i].io, o.ios[i].sv[0], CD_IO_READ,
                                  on_order_io), 0);
        CHECK_EQ(write(o.ios[i].sv[1], "x", 1), 1);
    }
    cd_loop_set_before_sleep(o.loop, order_before_sleep, &o);
    guard_start(&g, o.loop, 2000);
    CHECK_EQ(cd_loop_run(o.loop), 0);
    CHECK_EQ(g.fired, 0);
    CHECK_EQ(o.n_io, 3);
    CHECK_EQ(o.d1_runs, 1);
    CHECK_EQ(o.n_io_at_d1, 3);       /* after the whole batch */
    CHECK_EQ(o.d2_runs, 1);
    CHECK_EQ(o.n_sleep_at_d2, 0);    /* same drain, before the hook */
    CHECK_EQ(o.n_sleep, 1);
    CHECK(o.deferred_before_sleep);
    CHECK(!o.d1.is_queued && !o.d2.is_queued);
    for (int i = 0; i < 3; i++) {
        cd_loop_io_stop(o.loop, &o.ios[i].io);
        close_pair(o.ios[i].sv);
    }
    cd_loop_destroy(o.loop);
}

typedef struct iter {
    cd_loop *loop;
    cd_io io;
    int pipe_fd[2];
    cd_defer d;
    cd_timer t;
    cd_post p;
    int n_io, n_defer, n_timer, n_post, n_sleep;
    int n_mismatch;
} iter;

static void iter_defer(cd_defer *d)
{
    CD_CONTAINER_OF(d, iter, d)->n_defer++;
}

static void iter_timer(cd_timer *t, void *user)
{
    iter *it = user;
    CHECK(t == &it->t);
    it->n_timer++;
}

static void iter_post(cd_post *p, cd_loop *l)
{
    iter *it = CD_CONTAINER_OF(p, iter, p);
    CHECK(l == it->loop);
    it->n_post++;
}

/* Never reads: the pipe stays readable and level-triggered epoll reports
 * it on every iteration.  Each call queues one of every kind of work that
 * may queue writes. */
static void iter_io(cd_io *io, uint32_t events)
{
    iter *it = CD_CONTAINER_OF(io, iter, io);

    CD_UNUSED(events);
    it->n_io++;
    cd_loop_defer(it->loop, &it->d, iter_defer);
    cd_loop_timer_start(it->loop, &it->t, 0);     /* already due */
    it->p.fn = iter_post;
    cd_loop_post(it->loop, &it->p);               /* from the loop thread */
}

static void iter_before_sleep(cd_loop *l, void *arg)
{
    iter *it = arg;
    it->n_sleep++;
    if (it->n_sleep != it->n_io || it->n_defer != it->n_io ||
        it->n_timer != it->n_io || it->n_post != it->n_io)
        it->n_mismatch++;
    if (it->n_io == 5)
        cd_loop_stop(l);
}

TEST(before_sleep_once_per_iteration)
{
    iter it;

    memset(&it, 0, sizeof(it));
    it.loop = cd_loop_create(10, &it);
    CHECK(it.loop != NULL);
    if (it.loop == NULL)
        return;
    CHECK_EQ(pipe2(it.pipe_fd, O_CLOEXEC | O_NONBLOCK), 0);
    CHECK_EQ(write(it.pipe_fd[1], "x", 1), 1);
    cd_timer_init(&it.t, iter_timer);
    CHECK_EQ(cd_loop_io_start(it.loop, &it.io, it.pipe_fd[0], CD_IO_READ, iter_io), 0);
    cd_loop_set_before_sleep(it.loop, iter_before_sleep, &it);
    CHECK_EQ(cd_loop_run(it.loop), 0);
    CHECK_EQ(it.n_io, 5);
    CHECK_EQ(it.n_sleep, 5);
    CHECK_EQ(it.n_mismatch, 0);
    cd_loop_io_stop(it.loop, &it.io);
    close_pair(it.pipe_fd);
    cd_loop_destroy(it.loop);
}

/* ---- timers --------------------------------------------------------- */

typedef struct tm_test {
    cd_loop *loop;
    cd_timer t1, t2, t3;
    uint64_t fired1, fired2;
    int n3;
    int bad_user;
} tm_test;

static void on_t1(cd_timer *t, void *user)
{
    tm_test *x = user;
    x->bad_user += t != &x->t1;
    x->fired1 = cd_loop_now_ms(x->loop);
    cd_loop_timer_stop(x->loop, &x->t3);   /* another armed timer */
}

static void on_t2(cd_timer *t, void *user)
{
    tm_test *x = user;
    x->bad_user += t != &x->t2;
    x->fired2 = cd_loop_now_ms(x->loop);
    cd_loop_stop(x->loop);
}

static void on_t3(cd_timer *t, void *user)
{
    tm_test *x = user;
    CD_UNUSED(t);
    x->n3++;
}

TEST(timers_fire_via_loop)
{
    tm_test x;

    memset(&x, 0, sizeof(x));
    x.loop = cd_loop_create(10, &x);
    CHECK(x.loop != NULL);
    if (x.loop == NULL)
        return;
    CHECK(cd_loop_user(x.loop) == &x);
    uint64_t now = cd_loop_now_ms(x.loop);
    cd_timer_init(&x.t1, on_t1);
    cd_timer_init(&x.t2, on_t2);
    cd_timer_init(&x.t3, on_t3);
    cd_loop_timer_start(x.loop, &x.t1, now + 30);
    cd_loop_timer_start(x.loop, &x.t2, now + 60);
    cd_loop_timer_start(x.loop, &x.t3, now + 45);
    CHECK_EQ(cd_loop_run(x.loop), 0);
    CHECK_EQ(x.bad_user, 0);
    CHECK(x.fired1 >= now + 30);
    CHECK(x.fired2 >= now + 60);
    CHECK(x.fired1 < x.fired2);
    /* One tick late at most, plus generous slack for a loaded machine. */
    CHECK(x.fired2 <= now + 60 + 10 + 500);
    CHECK_EQ(x.n3, 0);
    CHECK(!cd_timer_is_armed(&x.t3));
    cd_loop_destroy(x.loop);
}

/* ---- cross-thread posts --------------------------------------------- */

enum { N_THREADS = 4, N_POSTS = 50000 };

typedef struct pitem {
    cd_post post;
    int n_ran;
} pitem;

typedef struct pctx {
    cd_loop *loop;
    pthread_t loop_thread;
    pitem *items;                    /* N_THREADS * N_POSTS */
    long total;
    int n_wrong_thread;
    cd_post stop;
    long total_at_stop;
    int n_stop;
    int n_iter;
} pctx;

typedef struct producer_arg {
    pctx *c;
    int id;
    pthread_t thread;
} producer_arg;

static void on_item(cd_post *p, cd_loop *l)
{
    pctx *c = cd_loop_user(l);
    pitem *it = CD_CONTAINER_OF(p, pitem, post);

    it->n_ran++;
    c->total++;
    if (!pthread_equal(pthread_self(), c->loop_thread))
        c->n_wrong_thread++;
}

static void on_stop_post(cd_post *p, cd_loop *l)
{
    pctx *c = cd_loop_user(l);

    CD_UNUSED(p);
    c->n_stop++;
    c->total_at_stop = c->total;
    cd_loop_stop(l);
}

static void *post_producer(void *arg)
{
    producer_arg *a = arg;
    pitem *items = a->c->items + (size_t)a->id * N_POSTS;

    for (int i = 0; i < N_POSTS; i++) {
        items[i].post.fn = on_item;
        cd_loop_post(a->c->loop, &items[i].post);
        /* Pause now and then so the loop drains, sleeps in a poll with no
         * timeout, and must be woken again. */
        if (i % 5000 == 4999)
            sleep_ms(1);
    }
    return NULL;
}

static void *post_coordinator(void *arg)
{
    pctx *c = arg;
    producer_arg pa[N_THREADS];
    int n_started = 0;

    for (int i = 0; i < N_THREADS; i++) {
        pa[i].c = c;
        pa[i].id = i;
        if (pthread_create(&pa[i].thread, NULL, post_producer, &pa[i]) != 0)
            break;
        n_started++;
    }
    for (int i = 0; i < n_started; i++)
        pthread_join(pa[i].thread, NULL);
    /* Every item push happens-before this one, so it is popped last. */
    c->stop.fn = on_stop_post;
    cd_loop_post(c->loop, &c->stop);
    return NULL;
}

static void count_iter(cd_loop *l, void *arg)
{
    CD_UNUSED(l);
    ((pctx *)arg)->n_iter++;
}

TEST(posts_from_four_threads)
{
    pctx c;
    pthread_t coord;

    memset(&c, 0, sizeof(c));
    c.items = calloc((size_t)N_THREADS * N_POSTS, sizeof(pitem));
    c.loop = cd_loop_create(10, &c);
    c.loop_thread = pthread_self();
    CHECK(c.items != NULL && c.loop != NULL);
    if (c.items == NULL || c.loop == NULL) {
        free(c.items);
        cd_loop_destroy(c.loop);
        return;
    }
    cd_loop_set_before_sleep(c.loop, count_iter, &c);
    CHECK_EQ(pthread_create(&coord, NULL, post_coordinator, &c), 0);
    /* No timer is armed: the loop sleeps with no timeout, so a lost
     * wake-up hangs here until alarm() ends the binary. */
    CHECK_EQ(cd_loop_run(c.loop), 0);
    CHECK_EQ(pthread_join(coord, NULL), 0);

    int n_bad = 0;
    for (size_t i = 0; i < (size_t)N_THREADS * N_POSTS; i++)
        n_bad += c.items[i].n_ran != 1;
    CHECK_EQ(n_bad, 0);
    CHECK_EQ(c.total, (long)N_THREADS * N_POSTS);
    CHECK_EQ(c.total_at_stop, (long)N_THREADS * N_POSTS);
    CHECK_EQ(c.n_stop, 1);
    CHECK_EQ(c.n_wrong_thread, 0);
    printf("  # %d posts ran in %d loop iterations\n", N_THREADS * N_POSTS, c.n_iter);
    cd_loop_destroy(c.loop);
    free(c.items);
}

/* One producer in lock-step with the loop: post, wait until it ran, post
 * again.  Each post lands while the loop is finishing the previous drain,
 * the narrowest window for a lost wake-up; one would stall a round. */
enum { N_PING = 20000 };

typedef struct ping {
    cd_loop *loop;
    cd_post post;
    cd_post stop;
    atomic_int n_done;
    int n_stalls;
} ping;

static void on_ping(cd_post *p, cd_loop *l)
{
    ping *x = CD_CONTAINER_OF(p, ping, post);
    CD_UNUSED(l);
    atomic_fetch_add_explicit(&x->n_done, 1, memory_order_release);
}

static void on_ping_stop(cd_post *p, cd_loop *l)
{
    CD_UNUSED(p);
    cd_loop_stop(l);
}

static void *ping_thread(void *arg)
{
    ping *x = arg;
    struct timespec t0, t1;

    for (int i = 0; i < N_PING; i++) {
        x->post.fn = on_ping;
        cd_loop_post(x->loop, &x->post);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (atomic_load_explicit(&x->n_done, memory_order_acquire) <= i) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if (t1.tv_sec - t0.tv_sec >= 2) {
                x->n_stalls++;       /* a lost wake-up; the stop rescues it */
                break;
            }
            sched_yield();
        }
        if (x->n_stalls)
            break;
    }
    x->stop.fn = on_ping_stop;
    cd_loop_post(x->loop, &x->stop);
    return NULL;
}

TEST(post_lock_step_no_lost_wakeup)
{
    ping x;
    pthread_t th;

    memset(&x, 0, sizeof(x));
    atomic_init(&x.n_done, 0);
    x.loop = cd_loop_create(10, NULL);
    CHECK(x.loop != NULL);
    if (x.loop == NULL)
        return;
    CHECK_EQ(pthread_create(&th, NULL, ping_thread, &x), 0);
    CHECK_EQ(cd_loop_run(x.loop), 0);
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_EQ(x.n_stalls, 0);
    CHECK_EQ(atomic_load(&x.n_done), N_PING);
    cd_loop_destroy(x.loop);
}

typedef struct stopper {
    cd_loop *loop;
    cd_post post;
    long delay_ms;
} stopper;

static void on_stopper(cd_post *p, cd_loop *l)
{
    CD_UNUSED(p);
    cd_loop_stop(l);
}

static void *stopper_thread(void *arg)
{
    stopper *s = arg;
    sleep_ms(s->delay_ms);
    s->post.fn = on_stopper;
    cd_loop_post(s->loop, &s->post);
    return NULL;
}

TEST(stop_from_other_thread)
{
    stopper s = {0};
    pthread_t th;

    s.loop = cd_loop_create(10, NULL);
    s.delay_ms = 30;
    CHECK(s.loop != NULL);
    if (s.loop == NULL)
        return;
    uint64_t t0 = cd_loop_now_ms(s.loop);
    CHECK_EQ(pthread_create(&th, NULL, stopper_thread, &s), 0);
    CHECK_EQ(cd_loop_run(s.loop), 0);   /* idle: sleeps until the post */
    CHECK_EQ(pthread_join(th, NULL), 0);
    cd_loop_update_time(s.loop);
    CHECK(cd_loop_now_ms(s.loop) >= t0 + 30);
    cd_loop_destroy(s.loop);
}

static int n_never;
static void never_run(cd_post *p, cd_loop *l)
{
    CD_UNUSED(p);
    CD_UNUSED(l);
    n_never++;
}

static int n_destroy_deferred;
static void on_destroy_deferred(cd_defer *d)
{
    n_destroy_deferred++;
    free(d);                         /* the owner's memory, freed late */
}

TEST(destroy_skips_posts_runs_deferred)
{
    cd_loop *l = cd_loop_create(10, NULL);
    cd_post p = {.fn = never_run};
    cd_defer *d = calloc(1, sizeof(*d));

    CHECK(l != NULL && d != NULL);
    if (l == NULL || d == NULL) {
        free(d);
        cd_loop_destroy(l);
        return;
    }
    cd_loop_post(l, &p);
    cd_loop_defer(l, d, on_destroy_deferred);
    cd_loop_destroy(l);
    CHECK_EQ(n_never, 0);
    CHECK_EQ(n_destroy_deferred, 1);  /* and ASan sees no leak */
}

/* ---- the cached clock ----------------------------------------------- */

typedef struct clk clk;

typedef struct clk_io {
    cd_io io;
    clk *k;
    int sv[2];
} clk_io;

struct clk {
    cd_loop *loop;
    clk_io ios[2];
    int n_calls;
    uint64_t now_first, now_second, now_refreshed;
};

/* The first handler takes 5 ms; the second must still see the clock the
 * batch started with, until it asks for a refresh. */
static void on_clk(cd_io *io, uint32_t events)
{
    clk *k = CD_CONTAINER_OF(io, clk_io, io)->k;
    char buf[16];

    CD_UNUSED(events);
    while (read(io->fd, buf, sizeof(buf)) > 0) {
    }
    if (++k->n_calls == 1) {
        k->now_first = cd_loop_now_ns(k->loop);
        sleep_ms(5);
        return;
    }
    k->now_second = cd_loop_now_ns(k->loop);
    cd_loop_update_time(k->loop);
    k->now_refreshed = cd_loop_now_ns(k->loop);
    cd_loop_stop(k->loop);
}

TEST(clock_fixed_within_dispatch)
{
    clk k;
    guard g;

    memset(&k, 0, sizeof(k));
    k.loop = cd_loop_create(10, NULL);
    CHECK(k.loop != NULL);
    if (k.loop == NULL)
        return;
    for (int i = 0; i < 2; i++) {
        k.ios[i].k = &k;
        CHECK_EQ(make_pair(k.ios[i].sv), 0);
        CHECK_EQ(cd_loop_io_start(k.loop, &k.ios[i].io, k.ios[i].sv[0], CD_IO_READ, on_clk),
                 0);
        CHECK_EQ(write(k.ios[i].sv[1], "x", 1), 1);
    }
    guard_start(&g, k.loop, 2000);
    CHECK_EQ(cd_loop_run(k.loop), 0);
    CHECK_EQ(g.fired, 0);
    CHECK_EQ(k.n_calls, 2);
    CHECK_EQ(k.now_second, k.now_first);
    CHECK(k.now_refreshed >= k.now_first + 5000000u);
    CHECK_EQ(cd_loop_now_ms(k.loop), k.now_refreshed / 1000000u);
    for (int i = 0; i < 2; i++) {
        cd_loop_io_stop(k.loop, &k.ios[i].io);
        close_pair(k.ios[i].sv);
    }
    cd_loop_destroy(k.loop);
}

typedef struct late_writer {
    int fd;
    long delay_ms;
} late_writer;

static void *write_later(void *arg)
{
    late_writer *w = arg;
    sleep_ms(w->delay_ms);
    if (write(w->fd, "x", 1) != 1)
        perror("write_later");
    return NULL;
}

/* A handler woken after a long poll sees the time it was woken at, not the
 * time the loop went to sleep. */
TEST(clock_fresh_after_poll)
{
    cd_loop *l = cd_loop_create(10, NULL);
    int sv[2] = {-1, -1};
    watcher w = {0};
    pthread_t th;
    late_writer lw;

    CHECK(l != NULL);
    if (l == NULL)
        return;
    CHECK_EQ(make_pair(sv), 0);
    w.loop = l;
    w.stop_loop = 1;
    CHECK_EQ(cd_loop_io_start(l, &w.io, sv[0], CD_IO_READ, on_watch), 0);
    lw.fd = sv[1];
    lw.delay_ms = 50;
    cd_loop_update_time(l);
    uint64_t t0 = cd_loop_now_ms(l);
    CHECK_EQ(pthread_create(&th, NULL, write_later, &lw), 0);
    CHECK_EQ(cd_loop_run(l), 0);     /* no timers: sleeps until the write */
    CHECK_EQ(pthread_join(th, NULL), 0);
    CHECK_EQ(w.n_calls, 1);
    CHECK(w.now_ms >= t0 + 50);
    cd_loop_io_stop(l, &w.io);
    close_pair(sv);
    cd_loop_destroy(l);
}

int main(void)
{
    /* Bounds the binary: a lost wake-up is a hang, and this turns it into
     * a failure. */
    alarm(60);
    RUN(io_read_fires);
    RUN(io_write_then_mask_change);
    RUN(io_mask_filters_and_errors);
    RUN(stop_other_io_in_same_batch);
    RUN(restart_other_io_in_same_batch);
    RUN(mask_shrunk_in_same_batch);
    RUN(deferred_runs_after_batch);
    RUN(before_sleep_once_per_iteration);
    RUN(timers_fire_via_loop);
    RUN(posts_from_four_threads);
    RUN(post_lock_step_no_lost_wakeup);
    RUN(stop_from_other_thread);
    RUN(destroy_skips_posts_runs_deferred);
    RUN(clock_fixed_within_dispatch);
    RUN(clock_fresh_after_poll);
    return test_main_end();
}
