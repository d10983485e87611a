/* bench_worker.c - one conduit-bench worker: an epoll loop over its share
 * of the connections.
 *
 * Sockets are non-blocking and edge-triggered.  Reads go into one buffer
 * per worker and are parsed in place (bench_ws.c); writes are appended to a
 * per-connection buffer and flushed once per loop turn, so every frame
 * queued while handling a batch of events leaves in one send().  A frame is
 * built by copying a precomputed body, stamping the timestamp and masking
 * it with a fresh xorshift key: no allocation per message.
 *
 * Slots: echo, idle and fan-out connections connect once (at most
 * `concurrency` attempts in flight while setting up) and count a failure if
 * they die; connect and churn slots reconnect until the run ends.  A slot is
 * identified in epoll by (index, generation), so an event fetched for a
 * socket that was closed earlier in the same batch is dropped. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_core.h"
#include "bench_ws.h"
#include "upgrade.h"
#include "ws.h"

#define NS_PER_S 1000000000ull
#define NS_PER_MS 1000000ull
#define RBUF_SIZE (256 * 1024)
#define HS_CAP 4096                  /* biggest 101 response head we accept */
#define MAX_EVENTS 512
#define CLOSE_WAIT_NS (1 * NS_PER_S) /* for the server's close and FIN */
#define FANOUT_DRAIN_NS (500 * NS_PER_MS)
#define SWEEP_NS (100 * NS_PER_MS)
#define STALL_NS (1 * NS_PER_S)      /* no delivery for this long: write off */
#define PUB_MAX_PENDING (1u << 20)   /* bytes queued at a publisher */
#define PUB_BATCH 256                /* publishes per loop turn */
#define MAX_LOGGED 5                 /* error lines per worker */

enum {
    C_IDLE,                          /* waiting to (re)connect */
    C_CONNECTING,
    C_HANDSHAKE,
    C_OPEN,
    C_CLOSING,                       /* our close sent; waiting for the FIN */
    C_DONE,
};

enum {
    R_ECHO,
    R_SUB,
    R_PUB,
    R_CONNECT,
    R_IDLE,
    R_CHURN,
};

enum {
    E_CONNECT,
    E_HANDSHAKE,
    E_TIMEOUT,
    E_PROTOCOL,
    E_IO,
    E_EOF,
};

typedef struct conn {
    int fd;
    uint32_t gen;
    uint32_t index;                  /* global: room, source address */
    uint32_t room;
    uint32_t cycles;
    uint32_t inflight;
    uint8_t state;
    uint8_t role;
    bool is_dirty;                   /* in the worker's dirty list */
    bool is_blocked;                 /* send hit EAGAIN: wait for EPOLLOUT */
    bool is_setup;                   /* counts towards readiness */
    uint16_t hs_len;
    uint64_t t_start_ns;
    uint64_t deadline_ns;
    char *hs;                        /* response head while handshaking */
    uint8_t *obuf;
    size_t olen;
    size_t ooff;
    size_t ocap;
    char accept[CD_WS_ACCEPT_LEN + 1];
    cd_bench_rx rx;
} conn;

typedef struct worker {
    const cd_bench_opts *o;
    cd_bench_shared *sh;
    cd_bench_live *live;
    cd_bench_result *res;
    uint32_t id;
    int ep;
    conn *conns;
    uint32_t n_conns;
    uint32_t n_setup_left;           /* set-up slots not yet open or failed */
    uint32_t next_setup;             /* next set-up slot to start */
    uint32_t attempts;               /* set-up attempts in flight */
    uint32_t max_attempts;
    uint32_t *dirty;
    uint32_t n_dirty;
    uint32_t *restart;
    uint32_t n_restart;
    uint32_t n_active;               /* slots with a socket */
    uint32_t n_logged;
    uint8_t *rbuf;
    uint64_t rng;
    uint64_t now;
    uint64_t t_ready;
    uint64_t t_pub;
    uint64_t t_measure;
    uint64_t t_end;
    bool is_ready;
    bool is_stopping;
    uint64_t stop_deadline;
    uint64_t events_total;
    uint64_t count_share;            /* connect --count: this worker's part */
    uint64_t count_started;
    uint64_t count_done;
    uint32_t pub_first;              /* first publisher slot */
    uint32_t n_pubs;
    uint64_t *room_subs;             /* subscribers per room */
    uint64_t pub_seq;
    uint64_t flow_written_off;
    uint64_t flow_last_delivered;
    uint64_t flow_last_progress;
} worker;

uint64_t cd_bench_now_ns(void)
{
    struct timespec ts;

    /* CLOCK_MONOTONIC cannot fail with a valid pointer; it is also the
     * clock every process of the run shares for timestamps. */
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: masking keys only need to be unpredictable to proxies on
 * the path (RFC 6455 §10.3), not cryptographic, and this costs a few ns. */
static uint64_t rnd(worker *w)
{
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return w->rng * 0x2545F4914F6CDD1Dull;
}

static void log_error(worker *w, const conn *c, const char *what, const char *detail)
{
    if (w->n_logged >= MAX_LOGGED)
        return;
    fprintf(stderr, "conduit-bench: connection %u: %s%s%s\n", c->index, what,
            detail ? ": " : "", detail ? detail : "");
    if (++w->n_logged == MAX_LOGGED)
        fprintf(stderr, "conduit-bench: worker %u: further errors not shown\n", w->id);
}

static bool in_window(const worker *w)
{
    return w->t_measure != 0 && w->now >= w->t_measure && w->now < w->t_end;
}

static void mark_dirty(worker *w, conn *c)
{
    if (c->is_dirty)
        return;
    c->is_dirty = true;
    w->dirty[w->n_dirty++] = (uint32_t)(c - w->conns);
}

/* Room at the end of the output buffer for n bytes; NULL when out of
 * memory.  Written bytes are committed by advancing olen. */
static uint8_t *reserve(conn *c, size_t n)
{
    if (c->ocap - c->olen >= n)
        return c->obuf + c->olen;
    if (c->ooff > 0) {
        memmove(c->obuf, c->obuf + c->ooff, c->olen - c->ooff);
        c->olen -= c->ooff;
        c->ooff = 0;
    }
    if (c->ocap - c->olen < n) {
        size_t cap = c->ocap ? c->ocap * 2 : 512;
        uint8_t *p;
        while (cap < c->olen + n)
            cap *= 2;
        if ((p = realloc(c->obuf, cap)) == NULL)
            return NULL;
        c->obuf = p;
        c->ocap = cap;
    }
    return c->obuf + c->olen;
}

/* Queue one masked frame whose body is `pl` with timestamp `ts` stamped in. */
static bool queue_payload(worker *w, conn *c, uint8_t op, const cd_bench_payload *pl,
                          uint64_t ts)
{
    uint32_t mask = (uint32_t)(rnd(w) >> 32);
    uint8_t *p = reserve(c, CD_WS_MAX_HEADER + pl->len);
    uint8_t *body;
    size_t h;

    if (p == NULL)
        return false;
    h = cd_ws_header_write_masked(p, op, true, false, pl->len, mask);
    body = p + h;
    memcpy(body, pl->data, pl->len);
    if (pl->ts_binary)
        memcpy(body, &ts, sizeof(ts));
    for (size_t i = 0; i < pl->n_ts; i++)
        cd_bench_hex16((char *)body + pl->ts_off[i], ts);
    cd_ws_mask(body, pl->len, mask, 0);
    c->olen += h + pl->len;
    mark_dirty(w, c);
    return true;
}

static bool queue_control(worker *w, conn *c, uint8_t op, const uint8_t *data, size_t len)
{
    cd_bench_payload pl = {.data = (uint8_t *)data, .len = len};

    return queue_payload(w, c, op, &pl, 0);
}

static void update_live(worker *w)
{
    atomic_store_explicit(&w->live->events, w->events_total, memory_order_relaxed);
    atomic_store_explicit(&w->live->published, w->res->published, memory_order_relaxed);
    atomic_store_explicit(&w->live->expected, w->res->expected, memory_order_relaxed);
    atomic_store_explicit(&w->live->errors, cd_bench_result_errors(w->res),
                          memory_order_relaxed);
}

static void set_open(worker *w, bool is_open)
{
    uint32_t n = atomic_load_explicit(&w->live->open, memory_order_relaxed);

    atomic_store_explicit(&w->live->open, is_open ? n + 1 : n - 1, memory_order_relaxed);
}

/* A set-up slot stopped trying (open or failed): maybe the worker is ready. */
static void setup_settled(worker *w, conn *c)
{
    if (!c->is_setup)
        return;
    c->is_setup = false;
    w->attempts--;
    w->n_setup_left--;
}

static void queue_restart(worker *w, conn *c)
{
    c->state = C_IDLE;
    w->restart[w->n_restart++] = (uint32_t)(c - w->conns);
}

/* Close the socket (with an RST if asked) and retire or recycle the slot. */
static void finish(worker *w, conn *c, bool rst)
{
    if (c->fd >= 0) {
        if (rst) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            /* Without the linger the close is an orderly FIN; the RST is
             * an optimisation, so a failure here changes nothing else. */
            (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        /* Linux releases the descriptor even when close reports an error,
         * and there is nothing left to flush: the result is moot. */
        (void)close(c->fd);
        w->n_active--;
    }
    if (c->state == C_OPEN || c->state == C_CLOSING)
        set_open(w, false);
    if (c->state == C_CONNECTING || c->state == C_HANDSHAKE)
        setup_settled(w, c);
    c->fd = -1;
    c->gen++;
    c->olen = c->ooff = 0;
    c->hs_len = 0;
    c->inflight = 0;
    c->is_blocked = false;
    if ((c->role == R_CONNECT || c->role == R_CHURN) && !w->is_stopping) {
        if (c->role == R_CONNECT && w->o->count != 0)
            w->count_done++;
        queue_restart(w, c);
        return;
    }
    c->state = C_DONE;
}

static void fail(worker *w, conn *c, int kind, const char *detail)
{
    static const char *const names[] = {
        [E_CONNECT] = "connect failed", [E_HANDSHAKE] = "handshake failed",
        [E_TIMEOUT] = "handshake timed out", [E_PROTOCOL] = "protocol error",
        [E_IO] = "socket error", [E_EOF] = "connection closed by server",
    };
    cd_bench_result *r = w->res;

    /* Once we are shutting down, a server that hangs up early is normal. */
    if (w->is_stopping && kind != E_PROTOCOL) {
        finish(w, c, true);
        return;
    }
    r->failures++;
    switch (kind) {
    case E_CONNECT: r->err_connect++; break;
    case E_HANDSHAKE: r->err_handshake++; break;
    case E_TIMEOUT: r->err_timeout++; break;
    case E_PROTOCOL: r->err_protocol++; break;
    case E_IO: r->err_io++; break;
    case E_EOF: r->err_eof++; break;
    default: break;
    }
    log_error(w, c, names[kind], detail);
    finish(w, c, true);
}

static const char *path_of(const worker *w, const conn *c)
{
    const cd_bench_opts *o = w->o;

    if (c->role == R_SUB)
        return o->sub_paths[c->room];
    if (c->role == R_PUB)
        return o->pub_paths[c->index - o->connections];
    return o->path;
}

static void start_conn(worker *w, conn *c)
{
    const cd_bench_opts *o = w->o;
    int one = 1;
    int fd;
    struct epoll_event ev;

    c->t_start_ns = w->now;
    c->deadline_ns = w->now + (uint64_t)(o->timeout_s * (double)NS_PER_S);
    c->state = C_CONNECTING;
    cd_bench_rx_init(&c->rx, c->role == R_SUB);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail(w, c, E_CONNECT, strerror(errno));
        return;
    }
    c->fd = fd;
    w->n_active++;
    /* The bench batches its own writes; Nagle would only add delay. */
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
        fail(w, c, E_CONNECT, strerror(errno));
        return;
    }
    if (o->source_ips > 0) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        uint32_t host = 1 + (c->index + c->cycles) % o->source_ips;
        src.sin_addr.s_addr = htonl(0x7F000000u | host);
        /* Choose the port at connect time, per 4-tuple, instead of
         * reserving one per address at bind time. */
        if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) != 0 ||
            bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
            fail(w, c, E_CONNECT, strerror(errno));
            return;
        }
    }
    c->cycles++;
    if (connect(fd, (const struct sockaddr *)&o->addr, sizeof(o->addr)) != 0 &&
        errno != EINPROGRESS) {
        fail(w, c, E_CONNECT, strerror(errno));
        return;
    }
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = (uint64_t)c->gen << 32 | (uint32_t)(c - w->conns);
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        fail(w, c, E_CONNECT, strerror(errno));
}

static void on_connected(worker *w, conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    uint8_t nonce[16];
    char key[CD_BENCH_WS_KEY_LEN + 1];
    uint64_t a = rnd(w);
    uint64_t b = rnd(w);
    const char *path = path_of(w, c);
    /* The request line and headers around the path and host. */
    size_t cap = strlen(path) + strlen(w->o->host) + 192;
    uint8_t *p;
    size_t n;

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        fail(w, c, E_CONNECT, strerror(err));
        return;
    }
    memcpy(nonce, &a, 8);
    memcpy(nonce + 8, &b, 8);
    cd_bench_ws_key(nonce, key);
    cd_upgrade_accept_key(key, CD_BENCH_WS_KEY_LEN, c->accept);
    if ((p = reserve(c, cap)) == NULL) {
        fail(w, c, E_CONNECT, "out of memory");
        return;
    }
    n = cd_bench_ws_request((char *)p, cap, w->o->host, path, key);
    if (n == 0 || c->accept[0] == '\0') {
        fail(w, c, E_HANDSHAKE, "request does not fit");
        return;
    }
    c->olen += n;
    c->state = C_HANDSHAKE;
    mark_dirty(w, c);
}

static void start_close(worker *w, conn *c)
{
    /* 1000, normal closure (RFC 6455 §7.4.1). */
    static const uint8_t normal[2] = {0x03, 0xE8};

    if (w->o->reset) {
        finish(w, c, true);
        return;
    }
    if (!queue_control(w, c, CD_WS_OP_CLOSE, normal, sizeof(normal))) {
        finish(w, c, true);
        return;
    }
    c->state = C_CLOSING;
    c->deadline_ns = w->now + CLOSE_WAIT_NS;
}

static void send_echo(worker *w, conn *c)
{
    const cd_bench_opts *o = w->o;
    uint8_t op = o->binary ? CD_WS_OP_BINARY : CD_WS_OP_TEXT;

    if (!queue_payload(w, c, op, &o->echo, w->now)) {
        fail(w, c, E_IO, "out of memory");
        return;
    }
    c->inflight++;
    w->res->sent++;
}

static void on_open(worker *w, conn *c)
{
    const cd_bench_opts *o = w->o;
    cd_bench_result *r = w->res;
    uint64_t took = w->now - c->t_start_ns;

    c->state = C_OPEN;
    set_open(w, true);
    setup_settled(w, c);
    r->opened++;
    if (r->t_first_open_ns == 0)
        r->t_first_open_ns = w->now;
    r->t_last_open_ns = w->now;
    switch (c->role) {
    case R_ECHO:
        for (uint32_t i = 0; i < o->inflight && c->state == C_OPEN; i++)
            send_echo(w, c);
        break;
    case R_SUB:
        if (o->sub_msgs[c->room].len > 0 &&
            !queue_payload(w, c, CD_WS_OP_TEXT, &o->sub_msgs[c->room], 0))
            fail(w, c, E_IO, "out of memory");
        break;
    case R_IDLE:
        cd_bench_hist_record(&r->hist, took);
        w->events_total++;
        break;
    case R_CONNECT:
        w->events_total++;
        if (in_window(w)) {
            r->events++;
            cd_bench_hist_record(&r->hist, took);
        }
        start_close(w, c);
        break;
    case R_CHURN:
        send_echo(w, c);
        break;
    default:
        break;
    }
}

/* Echo and churn: the message must be ours, whole, with its timestamp. */
static bool echo_timestamp(worker *w, const cd_bench_rx_event *ev, uint64_t *ts)
{
    const cd_bench_opts *o = w->o;
    uint8_t op = o->binary ? CD_WS_OP_BINARY : CD_WS_OP_TEXT;

    if (ev->opcode != op || ev->len != o->size)
        return false;
    if (o->binary)
        memcpy(ts, ev->data, sizeof(*ts));
    else if (!cd_bench_unhex16(ev->data, ts))
        return false;
    return *ts <= w->now && w->now - *ts < 3600 * NS_PER_S;
}

static void on_message(worker *w, conn *c, const cd_bench_rx_event *ev)
{
    cd_bench_result *r = w->res;
    uint64_t ts = 0;

    switch (c->role) {
    case R_ECHO:
    case R_CHURN:
        if (!echo_timestamp(w, ev, &ts)) {
            r->err_payload++;
            log_error(w, c, "echo does not match what was sent", NULL);
            return;
        }
        c->inflight--;
        w->events_total++;
        if (in_window(w)) {
            r->events++;
            r->bytes += ev->len;
            cd_bench_hist_record(&r->hist, c->role == R_ECHO ? w->now - ts
                                                              : w->now - c->t_start_ns);
        }
        if (c->role == R_CHURN)
            start_close(w, c);
        else if (!w->is_stopping)
            send_echo(w, c);
        break;
    case R_SUB:
        if (!ev->has_ts || ev->ts > w->now) {
            r->other_messages++;
            return;
        }
        w->events_total++;
        if (in_window(w)) {
            r->events++;
            r->bytes += ev->len;
            cd_bench_hist_record(&r->hist, w->now - ev->ts);
        }
        break;
    default:
        r->other_messages++;
        break;
    }
}

static void on_server_close(worker *w, conn *c, const cd_bench_rx_event *ev)
{
    uint8_t reply[2];
    char detail[32];

    if (c->state == C_CLOSING)
        return;                      /* our close answered; the FIN follows */
    if (!w->is_stopping) {
        w->res->closed_by_server++;
        w->res->failures++;
        snprintf(detail, sizeof(detail), "code %u", ev->close_code);
        log_error(w, c, "close frame from server", detail);
    }
    /* RFC 6455 §5.5.1: answer with a close, echoing the code (an empty
     * close is answered with 1000). */
    uint16_t code = ev->close_code == 1005 ? 1000 : ev->close_code;
    reply[0] = (uint8_t)(code >> 8);
    reply[1] = (uint8_t)code;
    if (!queue_control(w, c, CD_WS_OP_CLOSE, reply, sizeof(reply))) {
        finish(w, c, true);
        return;
    }
    c->state = C_CLOSING;
    c->deadline_ns = w->now + CLOSE_WAIT_NS;
}

static void on_event(worker *w, conn *c, const cd_bench_rx_event *ev)
{
    switch (ev->type) {
    case CD_BENCH_RX_PING:
        /* RFC 6455 §5.5.3: a pong carries the ping's payload. */
        if (c->state == C_OPEN && !queue_control(w, c, CD_WS_OP_PONG, ev->data, ev->len))
            fail(w, c, E_IO, "out of memory");
        break;
    case CD_BENCH_RX_CLOSE:
        on_server_close(w, c, ev);
        break;
    case CD_BENCH_RX_MESSAGE:
        if (c->state == C_OPEN)
            on_message(w, c, ev);
        break;
    default:
        break;
    }
}

static void feed_frames(worker *w, conn *c, const uint8_t *data, size_t len)
{
    uint32_t gen = c->gen;

    while (len > 0) {
        cd_bench_rx_event ev;
        size_t used;
        int rc = cd_bench_rx_next(&c->rx, data, len, &used, &ev);

        data += used;
        len -= used;
        if (rc == CD_BENCH_RX_NEED_MORE)
            return;
        if (rc == CD_BENCH_RX_FAIL) {
            fail(w, c, E_PROTOCOL, c->rx.error);
            return;
        }
        on_event(w, c, &ev);
        if (c->gen != gen)
            return;
    }
}

static void feed_handshake(worker *w, conn *c, const uint8_t *data, size_t len)
{
    size_t head_len = 0;
    int status = 0;
    int rc;
    char detail[48];

    if (c->hs == NULL && (c->hs = malloc(HS_CAP)) == NULL) {
        fail(w, c, E_HANDSHAKE, "out of memory");
        return;
    }
    if (len > (size_t)HS_CAP - c->hs_len) {
        fail(w, c, E_HANDSHAKE, "response head too long");
        return;
    }
    memcpy(c->hs + c->hs_len, data, len);
    c->hs_len = (uint16_t)(c->hs_len + len);
    rc = cd_bench_ws_response(c->hs, c->hs_len, c->accept, &head_len, &status);
    if (rc == CD_BENCH_HS_MORE)
        return;
    if (rc == CD_BENCH_HS_BAD) {
        snprintf(detail, sizeof(detail), status ? "HTTP %d" : "not HTTP/1.1", status);
        fail(w, c, E_HANDSHAKE, status == 101 ? "bad Sec-WebSocket-Accept" : detail);
        return;
    }
    uint32_t gen = c->gen;
    on_open(w, c);
    /* Frames may follow the head in the same segment. */
    if (c->gen == gen && head_len < c->hs_len)
        feed_frames(w, c, (const uint8_t *)c->hs + head_len, c->hs_len - head_len);
    if (c->role != R_CONNECT && c->role != R_CHURN) {
        /* This slot never reconnects: give the head buffer back. */
        free(c->hs);
        c->hs = NULL;
    }
}

static void on_readable(worker *w, conn *c, uint32_t events)
{
    /* A short read means the socket is drained, and edge triggering will
     * report new data; but when the FIN already arrived no new edge will
     * come, so read on until read() says 0. */
    bool read_to_end = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    uint32_t gen = c->gen;

    for (;;) {
        ssize_t n = read(c->fd, w->rbuf, RBUF_SIZE);

        if (n > 0) {
            w->now = cd_bench_now_ns();
            if (c->state == C_HANDSHAKE)
                feed_handshake(w, c, w->rbuf, (size_t)n);
            else
                feed_frames(w, c, w->rbuf, (size_t)n);
            if (c->gen != gen)
                return;
            if ((size_t)n < RBUF_SIZE && !read_to_end)
                return;
            continue;
        }
        if (n == 0) {
            if (c->state == C_CLOSING)
                finish(w, c, false);
            else
                fail(w, c, c->state == C_HANDSHAKE ? E_HANDSHAKE : E_EOF,
                     c->state == C_HANDSHAKE ? "connection closed" : NULL);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (c->state == C_CLOSING)
            finish(w, c, true);
        else
            fail(w, c, E_IO, strerror(errno));
        return;
    }
}

/* Write what is queued.  Returns false if the connection was failed. */
static bool flush(worker *w, conn *c)
{
    while (c->ooff < c->olen) {
        ssize_t n = send(c->fd, c->obuf + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
        if (n >= 0) {
            c->ooff += (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->is_blocked = true;
            return true;
        }
        if (c->state == C_CLOSING)
            finish(w, c, true);
        else
            fail(w, c, E_IO, strerror(errno));
        return false;
    }
    c->olen = c->ooff = 0;
    return true;
}

static void flush_dirty(worker *w)
{
    for (uint32_t i = 0; i < w->n_dirty; i++) {
        conn *c = &w->conns[w->dirty[i]];
        c->is_dirty = false;
        if (c->fd >= 0 && !c->is_blocked && c->state != C_CONNECTING)
            (void)flush(w, c);       /* a failure already retired the slot */
    }
    w->n_dirty = 0;
}

static void on_epoll_event(worker *w, const struct epoll_event *ev)
{
    conn *c = &w->conns[(uint32_t)ev->data.u64];

    if (c->gen != (uint32_t)(ev->data.u64 >> 32) || c->fd < 0)
        return;                      /* stale: the slot moved on */
    if (c->state == C_CONNECTING) {
        if (!(ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        on_connected(w, c);
        /* A server that accepts and hangs up at once (a connection cap)
         * reports it in this same edge; no other edge will follow. */
        if (c->state == C_HANDSHAKE && (ev->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)))
            on_readable(w, c, ev->events);
        return;
    }
    if ((ev->events & EPOLLOUT) && c->is_blocked) {
        c->is_blocked = false;
        if (!flush(w, c))
            return;
    }
    if (ev->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        on_readable(w, c, ev->events);
}

static void sweep_deadlines(worker *w)
{
    for (uint32_t i = 0; i < w->n_conns; i++) {
        conn *c = &w->conns[i];
        if (c->fd < 0 || w->now < c->deadline_ns)
            continue;
        if (c->state == C_CONNECTING || c->state == C_HANDSHAKE) {
            fail(w, c, E_TIMEOUT, NULL);
        } else if (c->state == C_CLOSING) {
            w->res->close_timeouts++;
            finish(w, c, true);
        }
    }
}

static void begin_stop(worker *w)
{
    w->is_stopping = true;
    w->stop_deadline = w->now + CLOSE_WAIT_NS;
    if (w->res->t_stop_ns == 0)
        w->res->t_stop_ns = w->now < w->t_end ? w->now : w->t_end;
    w->n_restart = 0;
    for (uint32_t i = 0; i < w->n_conns; i++) {
        conn *c = &w->conns[i];
        if (c->state == C_CONNECTING || c->state == C_HANDSHAKE)
            finish(w, c, true);
        else if (c->state == C_OPEN)
            start_close(w, c);
        else if (c->state == C_IDLE)
            c->state = C_DONE;
    }
}

static void read_phases(worker *w)
{
    cd_bench_shared *sh = w->sh;

    if (w->t_ready == 0) {
        w->t_ready = atomic_load_explicit(&sh->t_ready_ns, memory_order_acquire);
        if (w->t_ready != 0) {
            w->t_pub = atomic_load_explicit(&sh->t_pub_ns, memory_order_relaxed);
            w->t_measure = atomic_load_explicit(&sh->t_measure_ns, memory_order_relaxed);
            w->t_end = atomic_load_explicit(&sh->t_end_ns, memory_order_relaxed);
        }
    }
    if (w->is_stopping)
        return;
    uint64_t end = w->t_end;
    if (w->o->mode == CD_BENCH_FANOUT && end != 0 && end != UINT64_MAX)
        end += FANOUT_DRAIN_NS;      /* deliveries still in flight count */
    if (atomic_load_explicit(&sh->stop, memory_order_relaxed) || (end != 0 && w->now >= end)) {
        begin_stop(w);
        return;
    }
    if (w->o->mode == CD_BENCH_CONNECT && w->o->count != 0 && w->count_done >= w->count_share) {
        w->res->t_stop_ns = w->now;
        begin_stop(w);
    }
}

static void start_connections(worker *w)
{
    const cd_bench_opts *o = w->o;

    while (w->next_setup < w->n_conns && w->conns[w->next_setup].is_setup &&
           w->attempts < w->max_attempts && !w->is_stopping) {
        w->attempts++;
        start_conn(w, &w->conns[w->next_setup++]);
    }
    if (w->t_ready == 0 || w->now < w->t_ready || w->is_stopping)
        return;
    /* The queue is refilled in place while it is walked: a slot that fails
     * at once is queued again, but after i entries are taken at most i + 1
     * have been re-queued (at 0..i), so entry i + 1 is still unread. */
    uint32_t n = w->n_restart;
    w->n_restart = 0;
    for (uint32_t i = 0; i < n; i++) {
        conn *c = &w->conns[w->restart[i]];
        if (o->mode == CD_BENCH_CONNECT && o->count != 0) {
            if (w->count_started >= w->count_share) {
                c->state = C_DONE;
                continue;
            }
            w->count_started++;
        }
        start_conn(w, c);
    }
}

static uint64_t deliveries_so_far(const worker *w)
{
    uint64_t sum = 0;

    for (uint32_t i = 0; i < w->o->n_workers; i++)
        sum += atomic_load_explicit(&w->sh->live[i].events, memory_order_relaxed);
    return sum;
}

/* One publish to the next room, round robin.  False when its publisher
 * cannot take more now. */
static bool publish_one(worker *w, uint64_t ts)
{
    const cd_bench_opts *o = w->o;
    uint32_t room = (uint32_t)(w->pub_seq % o->rooms);
    conn *c = &w->conns[w->pub_first + (w->n_pubs > 1 ? room : 0)];

    if (c->state != C_OPEN || c->olen - c->ooff > PUB_MAX_PENDING)
        return false;
    if (!queue_payload(w, c, CD_WS_OP_TEXT, &o->pub_msgs[room], ts)) {
        fail(w, c, E_IO, "out of memory");
        return false;
    }
    w->pub_seq++;
    w->res->published++;
    w->res->sent++;
    w->res->expected += w->room_subs[room];
    if (in_window(w))
        w->res->published_window++;
    return true;
}

static void publish(worker *w)
{
    const cd_bench_opts *o = w->o;

    if (w->n_pubs == 0 || w->is_stopping || w->t_pub == 0 || w->now < w->t_pub ||
        w->now >= w->t_end)
        return;
    if (o->rate > 0) {
        /* Open loop: message k is due at t_pub + k/rate and carries that
         * time, so a server that falls behind shows up as latency instead
         * of being hidden by a slower send rate (coordinated omission). */
        double period = (double)NS_PER_S / o->rate;
        uint64_t due = (uint64_t)((double)(w->now - w->t_pub) / period) + 1;
        for (uint32_t i = 0; i < PUB_BATCH && w->pub_seq < due; i++) {
            if (!publish_one(w, w->t_pub + (uint64_t)((double)w->pub_seq * period)))
                break;
        }
        return;
    }
    /* Closed loop: at most `inflight` publishes' worth of deliveries
     * outstanding.  Deliveries lost for good (a server dropping for a slow
     * consumer) would stall it, so after STALL_NS without progress the
     * missing ones are written off. */
    uint64_t per_msg = o->connections / o->rooms ? o->connections / o->rooms : 1;
    uint64_t limit = (uint64_t)o->inflight * per_msg;
    uint64_t delivered = deliveries_so_far(w);
    for (uint32_t i = 0; i < PUB_BATCH; i++) {
        uint64_t owed = w->res->expected - w->flow_written_off;
        if (owed > delivered && owed - delivered >= limit)
            break;
        if (!publish_one(w, w->now))
            break;
    }
    if (delivered != w->flow_last_delivered) {
        w->flow_last_delivered = delivered;
        w->flow_last_progress = w->now;
    } else if (w->now - w->flow_last_progress > STALL_NS) {
        w->flow_written_off = w->res->expected - delivered;
        w->flow_last_progress = w->now;
    }
}

/* Lay out this worker's slots: global connection i belongs to worker
 * i % n_workers; worker 0 also owns the fan-out publishers. */
static int setup(worker *w)
{
    const cd_bench_opts *o = w->o;
    uint32_t W = o->n_workers;
    uint32_t total = o->mode == CD_BENCH_CONNECT ? o->concurrency : o->connections;
    uint32_t mine = total / W + (w->id < total % W ? 1 : 0);
    uint32_t role = o->mode == CD_BENCH_ECHO      ? R_ECHO
                    : o->mode == CD_BENCH_FANOUT  ? R_SUB
                    : o->mode == CD_BENCH_CONNECT ? R_CONNECT
                    : o->mode == CD_BENCH_IDLE    ? R_IDLE
                                                  : R_CHURN;

    w->n_pubs = (o->mode == CD_BENCH_FANOUT && w->id == 0) ? o->n_publishers : 0;
    w->n_conns = mine + w->n_pubs;
    w->pub_first = mine;
    if ((w->ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        return -1;
    w->conns = calloc(w->n_conns ? w->n_conns : 1, sizeof(*w->conns));
    w->dirty = calloc(w->n_conns ? w->n_conns : 1, sizeof(*w->dirty));
    w->restart = calloc(w->n_conns ? w->n_conns : 1, sizeof(*w->restart));
    w->rbuf = malloc(RBUF_SIZE);
    if (w->conns == NULL || w->dirty == NULL || w->restart == NULL || w->rbuf == NULL)
        return -1;
    for (uint32_t i = 0; i < w->n_conns; i++) {
        conn *c = &w->conns[i];
        bool is_pub = i >= mine;
        c->fd = -1;
        c->index = is_pub ? o->connections + (i - mine) : w->id + i * W;
        c->role = (uint8_t)(is_pub ? R_PUB : role);
        c->room = is_pub ? i - mine : c->index % (o->rooms ? o->rooms : 1);
        c->is_setup = c->role != R_CONNECT && c->role != R_CHURN;
        if (c->is_setup)
            w->n_setup_left++;
        else
            queue_restart(w, c);
    }
    if (w->n_pubs > 0) {
        if ((w->room_subs = calloc(o->rooms, sizeof(*w->room_subs))) == NULL)
            return -1;
        for (uint32_t r = 0; r < o->rooms; r++)
            w->room_subs[r] = o->connections / o->rooms + (r < o->connections % o->rooms);
    }
    if (o->mode == CD_BENCH_CONNECT && o->count != 0)
        w->count_share = o->count / W + (w->id < o->count % W ? 1 : 0);
    w->max_attempts = o->concurrency / W ? o->concurrency / W : 1;
    return 0;
}

static void teardown(worker *w)
{
    for (uint32_t i = 0; i < w->n_conns; i++) {
        conn *c = &w->conns[i];
        if (c->fd >= 0)
            (void)close(c->fd);      /* end of run: nothing to report */
        free(c->hs);
        free(c->obuf);
    }
    if (w->ep >= 0)
        (void)close(w->ep);
    free(w->conns);
    free(w->dirty);
    free(w->restart);
    free(w->rbuf);
    free(w->room_subs);
}

static int loop_timeout_ms(const worker *w)
{
    if (w->n_pubs > 0 && !w->is_stopping && w->t_ready != 0)
        return 1;                    /* publisher pacing */
    if (w->t_ready == 0)
        return 5;                    /* waiting for the go */
    return 20;
}

static void run(worker *w)
{
    struct epoll_event evs[MAX_EVENTS];
    uint64_t last_sweep = 0;

    for (;;) {
        w->now = cd_bench_now_ns();
        read_phases(w);
        if (w->is_stopping && (w->n_active == 0 || w->now >= w->stop_deadline))
            break;
        start_connections(w);
        publish(w);
        flush_dirty(w);
        if (!w->is_ready && w->n_setup_left == 0) {
            w->is_ready = true;
            atomic_store_explicit(&w->live->ready, 1, memory_order_release);
        }
        update_live(w);
        int n = epoll_wait(w->ep, evs, MAX_EVENTS, loop_timeout_ms(w));
        if (n < 0 && errno != EINTR) {
            perror("conduit-bench: epoll_wait");
            w->res->err_io++;
            break;
        }
        w->now = cd_bench_now_ns();
        for (int i = 0; i < n; i++)
            on_epoll_event(w, &evs[i]);
        flush_dirty(w);
        if (w->now - last_sweep >= SWEEP_NS) {
            last_sweep = w->now;
            sweep_deadlines(w);
        }
    }
}

int cd_bench_worker_run(const cd_bench_opts *o, cd_bench_shared *sh, uint32_t id,
                        cd_bench_result *res)
{
    worker w;
    int rc = 0;

    memset(&w, 0, sizeof(w));
    memset(res, 0, sizeof(*res));
    cd_bench_hist_init(&res->hist);
    w.o = o;
    w.sh = sh;
    w.id = id;
    w.res = res;
    w.live = &sh->live[id];
    w.ep = -1;
    w.rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)id << 32) ^ cd_bench_now_ns() ^
            (uint64_t)getpid() << 16;
    if (setup(&w) != 0) {
        fprintf(stderr, "conduit-bench: worker %u: %s\n", id, strerror(errno));
        res->err_io++;
        rc = -1;
    } else {
        run(&w);
    }
    if (res->t_stop_ns == 0)
        res->t_stop_ns = w.now;
    res->events_total = w.events_total;
    update_live(&w);
    teardown(&w);
    atomic_store_explicit(&w.live->open, 0, memory_order_relaxed);
    atomic_store_explicit(&w.live->ready, 1, memory_order_release);
    atomic_store_explicit(&w.live->done, 1, memory_order_release);
    return rc;
}

/* Every field before t_first_open_ns is a uint64_t counter that merges by
 * addition; the fields after it merge by min or max. */
_Static_assert(offsetof(cd_bench_result, t_first_open_ns) % sizeof(uint64_t) == 0,
               "counters are whole uint64_t words");

uint64_t cd_bench_result_errors(const cd_bench_result *r)
{
    return r->failures + r->err_payload;
}

void cd_bench_result_merge(cd_bench_result *into, const cd_bench_result *from)
{
    const uint64_t *src = (const uint64_t *)from;
    uint64_t *dst = (uint64_t *)into;
    size_t n_counters = offsetof(cd_bench_result, t_first_open_ns) / sizeof(uint64_t);

    for (size_t i = 0; i < n_counters; i++)
        dst[i] += src[i];
    if (from->t_first_open_ns != 0 &&
        (into->t_first_open_ns == 0 || from->t_first_open_ns < into->t_first_open_ns))
        into->t_first_open_ns = from->t_first_open_ns;
    if (from->t_last_open_ns > into->t_last_open_ns)
        into->t_last_open_ns = from->t_last_open_ns;
    if (from->t_stop_ns > into->t_stop_ns)
        into->t_stop_ns = from->t_stop_ns;
    cd_bench_hist_merge(&into->hist, &from->hist);
}
