/* conn.c - one connection's state machine and send path (see conn.h).
 *
 * Owns: the socket, the HTTP parser (only while the request head is being
 * read), the WebSocket parser, the compression state and the send queue.
 * Invariants: only the worker thread that accepted the connection touches
 * it; a connection is on the worker's flush list iff it queued bytes since
 * the last flush; after cd_conn_destroy nothing but the deferred free
 * touches it. */
#include "conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api.h"
#include "common.h"
#include "http.h"
#include "sendq.h"
#include "upgrade.h"
#include "ws.h"

enum conn_state {
    ST_HTTP,      /* reading the request head */
    ST_WS,        /* open */
    ST_CLOSING,   /* our close frame is queued or sent; waiting for the peer's */
    ST_LINGER,    /* FIN sent or due after the flush; input is discarded */
    ST_DEAD,      /* destroyed; freed after the current batch */
};

enum conn_kind {
    KIND_NONE,
    KIND_ECHO,    /* raw echo endpoint */
};

enum {
    F_FLUSH_QUEUED = 1u << 0,   /* on the worker's flush list */
    F_WANT_WRITE = 1u << 1,     /* socket full; waiting for CD_IO_WRITE */
    F_READ_PAUSED = 1u << 2,    /* backpressure: not reading */
    F_FIN_AFTER_FLUSH = 1u << 3,/* shut down the write side once drained */
    F_CLOSE_SENT = 1u << 4,     /* a close frame is queued */
    F_GOT_BYTES = 1u << 5,      /* some request bytes arrived (for 408) */
    F_PEER_EOF = 1u << 6,       /* the peer's FIN arrived; close once drained */
};

/* Stop reading while more than this is queued for a peer that does not
 * read its echoes; resume below the low mark. */
#define QUEUE_HIGH_BYTES (1u << 20)
#define QUEUE_LOW_BYTES (256u << 10)
/* Bytes written to one connection per flush before others get a turn. */
#define WRITE_BUDGET (1u << 20)
#define MAX_IOV 64

struct cd_conn {
    cd_io io;
    cd_timer timer;
    cd_defer defer;
    cd_worker *w;
    cd_conn *next, *prev;              /* worker's connection list */
    cd_conn *flush_next, *flush_prev;  /* worker's flush list */
    cd_http_parser *http;              /* only in ST_HTTP */
    const cd_endpoint *ep;             /* endpoint limits once upgraded */
    cd_pmd *pmd;
    cd_ws_parser ws;
    cd_sendq sq;
    uint64_t id;
    uint64_t last_rx_ms;               /* any bytes from the peer */
    uint64_t last_data_ms;             /* last data message from the peer */
    uint64_t last_ping_ms;             /* last heartbeat ping we sent */
    uint64_t deadline_ms;              /* HTTP, CLOSING, LINGER deadline */
    uint16_t flags;
    uint8_t state;
    uint8_t kind;
};

static void conn_on_io(cd_io *io, uint32_t events);
static void conn_on_timer(cd_timer *t, void *arg);
static void conn_free(cd_defer *d);

static conduit_server *srv_of(const cd_conn *c) { return c->w->srv; }
static cd_logger *log_of(const cd_conn *c) { return &c->w->srv->log; }
static uint64_t now_ms(const cd_conn *c) { return cd_loop_now_ms(c->w->loop); }

/* ------------------------------------------------------------------ */
/* Lists and lifetime. */

static void flush_list_add(cd_conn *c)
{
    if (c->flags & F_FLUSH_QUEUED)
        return;
    cd_worker *w = c->w;
    c->flags |= F_FLUSH_QUEUED;
    c->flush_prev = NULL;
    c->flush_next = w->flush_head;
    if (w->flush_head)
        w->flush_head->flush_prev = c;
    w->flush_head = c;
}

static void flush_list_remove(cd_conn *c)
{
    if (!(c->flags & F_FLUSH_QUEUED))
        return;
    if (c->flush_prev)
        c->flush_prev->flush_next = c->flush_next;
    else
        c->w->flush_head = c->flush_next;
    if (c->flush_next)
        c->flush_next->flush_prev = c->flush_prev;
    c->flush_next = c->flush_prev = NULL;
    c->flags &= (uint16_t)~F_FLUSH_QUEUED;
}

static void conn_destroy(cd_conn *c)
{
    if (c->state == ST_DEAD)
        return;
    c->state = ST_DEAD;
    int fd = c->io.fd;
    cd_loop_io_stop(c->w->loop, &c->io);
    if (fd >= 0)
        close(fd);
    cd_loop_timer_stop(c->w->loop, &c->timer);
    flush_list_remove(c);
    cd_worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->n_conns--;
    cd_log(log_of(c), CD_LOG_DEBUG, "conn_close", "conn=%llu", (unsigned long long)c->id);
    cd_loop_defer(w->loop, &c->defer, conn_free);
}

static void conn_free(cd_defer *d)
{
    cd_conn *c = CD_CONTAINER_OF(d, cd_conn, defer);
    cd_sendq_clear(&c->sq);
    cd_ws_parser_fini(&c->ws);
    cd_pmd_destroy(c->pmd);
    free(c->http);
    free(c);
}

static void arm_timer(cd_conn *c, uint64_t deadline)
{
    cd_loop_timer_start(c->w->loop, &c->timer, deadline);
}

static void set_io_mask(cd_conn *c)
{
    uint32_t mask = 0;
    if (!(c->flags & F_READ_PAUSED))
        mask |= CD_IO_READ;
    if (c->flags & F_WANT_WRITE)
        mask |= CD_IO_WRITE;
    if (mask != c->io.mask && cd_loop_io_set(c->w->loop, &c->io, mask) != 0)
        conn_destroy(c);
}

/* ------------------------------------------------------------------ */
/* Sending. */

static int queue_frame(cd_conn *c, cd_frame *f, bool is_control)
{
    int rc = cd_sendq_push(&c->sq, f, is_control);
    if (rc != 0) {
        conn_destroy(c);
        return rc;
    }
    if (!(c->flags & F_WANT_WRITE))
        flush_list_add(c);
    return 0;
}

/* Frame `len` payload bytes once into a new shared buffer. */
static cd_frame *build_frame(uint8_t opcode, bool rsv1, const uint8_t *payload,
                             size_t len)
{
    uint8_t hdr[CD_WS_MAX_HEADER];
    size_t hlen = cd_ws_header_write(hdr, opcode, true, rsv1, len);
    cd_frame *f = cd_frame_alloc(hlen + len);
    if (f == NULL)
        return NULL;
    memcpy(f->data, hdr, hlen);
    if (len > 0)
        memcpy(f->data + hlen, payload, len);
    f->len = (uint32_t)(hlen + len);
    return f;
}

/* Pings and pongs jump ahead of queued data; a close goes after it, since
 * it must be the last frame the peer receives (RFC 6455 §5.5.1). */
static int send_control(cd_conn *c, uint8_t opcode, const uint8_t *payload,
                        size_t len)
{
    cd_frame *f = build_frame(opcode, false, payload, len);
    if (f == NULL) {
        conn_destroy(c);
        return CONDUIT_ENOMEM;
    }
    return queue_frame(c, f, opcode != CD_WS_OP_CLOSE);
}

/* RFC 6455 §5.5.3: while an earlier pong is still unsent, answering only
 * the newest ping is allowed; that bounds what a ping flood can queue for
 * a peer that does not read. */
static int send_pong(cd_conn *c, const uint8_t *payload, size_t len)
{
    if (c->flags & F_WANT_WRITE) {
        cd_frame **tail = cd_sendq_unsent_ctl_tail(&c->sq);
        if (tail && (*tail)->len >= 2 && ((*tail)->data[0] & 0x0f) == CD_WS_OP_PONG) {
            cd_frame *f = build_frame(CD_WS_OP_PONG, false, payload, len);
            if (f == NULL) {
                conn_destroy(c);
                return CONDUIT_ENOMEM;
            }
            c->sq.bytes = c->sq.bytes - (*tail)->len + f->len;
            cd_frame_unref(*tail);
            *tail = f;
            return 0;
        }
    }
    return send_control(c, CD_WS_OP_PONG, payload, len);
}

/* Queue a close frame and stop accepting data; with fin, the write side is
 * shut down as soon as it is flushed (we do not wait for the peer). */
static void send_close(cd_conn *c, uint16_t code, const char *reason, bool fin)
{
    if (c->flags & F_CLOSE_SENT)
        return;
    uint8_t payload[CD_WS_MAX_CONTROL];
    size_t len = cd_ws_close_payload(payload, code, reason);
    c->flags |= F_CLOSE_SENT;
    if (send_control(c, CD_WS_OP_CLOSE, payload, len) != 0)
        return;
    c->deadline_ms = now_ms(c) + srv_of(c)->opt.close_timeout_s * 1000ull;
    arm_timer(c, c->deadline_ms);
    if (fin) {
        c->flags |= F_FIN_AFTER_FLUSH;
        c->state = ST_LINGER;
    } else {
        c->state = ST_CLOSING;
    }
}

/* Everything queued is written: finish a close or resume reading. */
static void on_drained(cd_conn *c)
{
    if ((c->flags & F_PEER_EOF) && cd_sendq_is_empty(&c->sq)) {
        conn_destroy(c);
        return;
    }
    if ((c->flags & F_FIN_AFTER_FLUSH) && cd_sendq_is_empty(&c->sq)) {
        c->flags &= (uint16_t)~F_FIN_AFTER_FLUSH;
        /* A FIN instead of close(): the peer still reads our last frame
         * and its pending input does not turn into a reset that could
         * destroy that frame in flight (lingering close). */
        if (shutdown(c->io.fd, SHUT_WR) != 0) {
            conn_destroy(c);
            return;
        }
        c->state = ST_LINGER;
        if (c->flags & F_READ_PAUSED) {
            c->flags &= (uint16_t)~F_READ_PAUSED;
            set_io_mask(c);
        }
        return;
    }
    if ((c->flags & F_READ_PAUSED) && c->state == ST_WS && c->sq.bytes <= QUEUE_LOW_BYTES) {
        c->flags &= (uint16_t)~F_READ_PAUSED;
        set_io_mask(c);
    }
}

static void conn_flush(cd_conn *c)
{
    struct iovec iov[MAX_IOV];
    size_t budget = WRITE_BUDGET;

    while (!cd_sendq_is_empty(&c->sq)) {
        int n_iov = cd_sendq_iov(&c->sq, iov, MAX_IOV);
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n_iov};
        ssize_t n = sendmsg(c->io.fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->flags |= F_WANT_WRITE;
                set_io_mask(c);
                return;
            }
            /* EPIPE, ECONNRESET: the peer is gone; nothing to flush to. */
            conn_destroy(c);
            return;
        }
        cd_sendq_consume(&c->sq, (size_t)n);
        if ((size_t)n >= budget && !cd_sendq_is_empty(&c->sq)) {
            /* Fairness: let other connections write; the level-triggered
             * write event brings us back next iteration. */
            c->flags |= F_WANT_WRITE;
            set_io_mask(c);
            return;
        }
        budget -= (size_t)n;
    }
    if (c->flags & F_WANT_WRITE) {
        c->flags &= (uint16_t)~F_WANT_WRITE;
        set_io_mask(c);
        if (c->state == ST_DEAD)
            return;
    }
    on_drained(c);
}

void cd_conn_flush_all(cd_worker *w)
{
    while (w->flush_head) {
        cd_conn *c = w->flush_head;
        flush_list_remove(c);
        if (c->state != ST_DEAD)
            conn_flush(c);
    }
}

/* ------------------------------------------------------------------ */
/* HTTP: request head, plain replies and the upgrade. */

static void http_reply(cd_conn *c, int status, const char *content_type,
                       const char *extra, const char *body, size_t body_len)
{
    char head[512];
    size_t cap = sizeof(head) + body_len;
    cd_frame *f = cd_frame_alloc(cap);
    if (f == NULL) {
        conn_destroy(c);
        return;
    }
    size_t n = cd_http_write_response((char *)f->data, cap, status, content_type,
                                      extra, body, body_len, true);
    if (n == 0) {
        cd_frame_unref(f);
        conn_destroy(c);
        return;
    }
    f->len = (uint32_t)n;
    free(c->http);
    c->http = NULL;
    c->flags |= F_FIN_AFTER_FLUSH;
    c->state = ST_LINGER;
    c->deadline_ms = now_ms(c) + srv_of(c)->opt.close_timeout_s * 1000ull;
    arm_timer(c, c->deadline_ms);
    queue_frame(c, f, false);
}

static void http_error(cd_conn *c, int status, const char *extra,
                       const char *reason)
{
    char body[320];
    const char *text = reason ? reason : cd_http_status_text(status);
    size_t len = (size_t)snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"",
                                  status == 404 ? "NotFound" : "BadRequest");
    cd_json_escape(body, sizeof(body) - 4, &len, text, strlen(text));
    memcpy(body + len, "\"}}", 4);
    len += 3;
    cd_log(log_of(c), CD_LOG_INFO, "http_rejected", "conn=%llu status=%d reason=%s",
           (unsigned long long)c->id, status, reason);
    http_reply(c, status, "application/json", extra, body, len);
}

static void ws_feed(cd_conn *c, uint8_t *data, size_t len);

/* Switch to WebSocket: 101, parser, compression, heartbeat. */
static void upgrade(cd_conn *c, const cd_endpoint *ep, cd_upgrade_result *r,
                    uint8_t kind, uint8_t *rest, size_t rest_len)
{
    char resp[1024];
    size_t n = cd_upgrade_write_101(r, &ep->upgrade, resp, sizeof(resp));
    cd_frame *f = n ? cd_frame_copy(resp, n) : NULL;
    if (f == NULL) {
        conn_destroy(c);
        return;
    }
    if (r->has_pmd) {
        c->pmd = cd_pmd_create(&r->pmd, &srv_of(c)->pmd);
        if (c->pmd == NULL) {
            cd_frame_unref(f);
            conn_destroy(c);
            return;
        }
    }
    free(c->http);
    c->http = NULL;
    c->ep = ep;
    c->kind = kind;
    c->state = ST_WS;
    cd_ws_parser_init(&c->ws, &ep->limits, c->pmd);
    c->last_data_ms = c->last_ping_ms = now_ms(c);
    cd_loop_timer_stop(c->w->loop, &c->timer);
    if (queue_frame(c, f, true) != 0)
        return;
    conn_on_timer(&c->timer, NULL); /* arms the heartbeat */
    cd_log(log_of(c), CD_LOG_DEBUG, "ws_open", "conn=%llu deflate=%d",
           (unsigned long long)c->id, r->has_pmd ? 1 : 0);
    if (rest_len > 0)
        ws_feed(c, rest, rest_len);
}

static void http_dispatch(cd_conn *c, uint8_t *rest, size_t rest_len)
{
    conduit_server *srv = srv_of(c);
    cd_http_parser *req = c->http;

    if (!cd_upgrade_is_requested(req)) {
        cd_http_reply rep;
        cd_api_handle(srv, req, &rep);
        http_reply(c, rep.status, rep.content_type, rep.extra_headers, rep.body,
                   rep.body_len);
        return;
    }
    const cd_endpoint *ep = NULL;
    uint8_t kind = KIND_NONE;
    size_t plen = req->path.len;
    const char *path = cd_http_str(req, req->path);
    if (srv->opt.echo_enabled && plen == strlen(srv->opt.echo_path) &&
        memcmp(path, srv->opt.echo_path, plen) == 0) {
        ep = &srv->echo;
        kind = KIND_ECHO;
    }
    if (ep == NULL) {
        http_error(c, 404, NULL, "no WebSocket endpoint at this path");
        return;
    }
    cd_upgrade_result r;
    if (cd_upgrade_check(req, &ep->upgrade, &r) != 101) {
        http_error(c, r.status, r.extra_header, r.reason);
        return;
    }
    upgrade(c, ep, &r, kind, rest, rest_len);
}

static void http_feed(cd_conn *c, uint8_t *data, size_t len)
{
    if (c->http == NULL) {
        c->http = malloc(sizeof(*c->http));
        if (c->http == NULL) {
            conn_destroy(c);
            return;
        }
        cd_http_parser_init(c->http);
    }
    c->flags |= F_GOT_BYTES;
    size_t used = 0;
    int rc = cd_http_parse(c->http, data, len, &used);
    if (rc == CD_HTTP_NEED_MORE)
        return;
    if (rc == CD_HTTP_ERROR) {
        http_error(c, c->http->error_status, NULL, c->http->error_reason);
        return;
    }
    http_dispatch(c, data + used, len - used);
}

/* ------------------------------------------------------------------ */
/* WebSocket. */

static void echo_message(cd_conn *c, const cd_ws_event *ev)
{
    const uint8_t *payload = ev->data;
    size_t len = ev->len;
    bool rsv1 = false;
    cd_bytes *scratch = &c->w->scratch;

    if (c->pmd && cd_pmd_should_compress(c->pmd, len)) {
        scratch->len = 0;
        if (cd_pmd_deflate(c->pmd, payload, len, scratch) != 0) {
            conn_destroy(c);
            return;
        }
        payload = scratch->data;
        len = scratch->len;
        rsv1 = true;
    }
    cd_frame *f = build_frame(ev->opcode, rsv1, payload, len);
    if (scratch->cap > (1u << 20))
        cd_bytes_free(scratch); /* keep the worker's scratch small */
    if (f == NULL) {
        conn_destroy(c);
        return;
    }
    if (queue_frame(c, f, false) != 0)
        return;
    if (c->sq.bytes > QUEUE_HIGH_BYTES && !(c->flags & F_READ_PAUSED)) {
        c->flags |= F_READ_PAUSED;
        set_io_mask(c);
    }
}

static void on_peer_close(cd_conn *c, const cd_ws_event *ev)
{
    if (c->flags & F_CLOSE_SENT) {
        /* Our close was answered: the handshake is complete (RFC 6455
         * §7.1.1: the server closes the TCP connection first). */
        c->flags |= F_FIN_AFTER_FLUSH;
        c->state = ST_LINGER;
        on_drained(c);
        return;
    }
    /* RFC 6455 §5.5.1: reply with a close, echoing the status code; an
     * empty close is answered with 1000. */
    uint16_t code = ev->close_code == CD_WS_CLOSE_NO_STATUS ? CD_WS_CLOSE_NORMAL
                                                            : ev->close_code;
    send_close(c, code, NULL, true);
}

static void handle_event(cd_conn *c, const cd_ws_event *ev)
{
    switch (ev->type) {
    case CD_WS_EV_MESSAGE:
        if (c->state != ST_WS)
            return; /* after our close, data is discarded (RFC 6455 §1.4) */
        c->last_data_ms = now_ms(c);
        if (c->kind == KIND_ECHO)
            echo_message(c, ev);
        return;
    case CD_WS_EV_PING:
        if (c->state == ST_WS)
            send_pong(c, ev->data, ev->len);
        return;
    case CD_WS_EV_PONG:
        return;
    case CD_WS_EV_CLOSE:
        on_peer_close(c, ev);
        return;
    }
}

static void ws_fail(cd_conn *c)
{
    uint16_t code = cd_ws_fail_code(&c->ws);
    const char *reason = cd_ws_fail_reason(&c->ws);
    cd_log(log_of(c), CD_LOG_INFO, "ws_protocol_error", "conn=%llu code=%u reason=%s",
           (unsigned long long)c->id, (unsigned)code, reason);
    if (!(c->flags & F_CLOSE_SENT)) {
        send_close(c, code, reason, true);
        return;
    }
    /* Our close is already on its way: just stop waiting for the peer's. */
    c->flags |= F_FIN_AFTER_FLUSH;
    c->state = ST_LINGER;
    if (cd_sendq_is_empty(&c->sq))
        on_drained(c);
}

static void ws_feed(cd_conn *c, uint8_t *data, size_t len)
{
    while (c->state == ST_WS || c->state == ST_CLOSING) {
        cd_ws_event ev;
        size_t used = 0;
        int rc = cd_ws_parse(&c->ws, data, len, &used, &ev);
        data += used;
        len -= used;
        if (rc == CD_WS_NEED_MORE)
            break;
        if (rc == CD_WS_FAIL) {
            ws_fail(c);
            break;
        }
        handle_event(c, &ev);
    }
    if (c->state != ST_DEAD)
        cd_ws_parser_trim(&c->ws);
}

/* ------------------------------------------------------------------ */
/* Events. */

static void on_readable(cd_conn *c)
{
    cd_worker *w = c->w;
    ssize_t n;
    do
        n = recv(c->io.fd, w->rbuf, w->rbuf_cap, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            conn_destroy(c);
        return;
    }
    if (n == 0) {
        /* The peer's FIN.  In LINGER it completes the close.  Elsewhere
         * the peer only half-closed: what is already queued for it (an
         * echo, an HTTP answer) is still delivered, then we close. */
        if (c->state == ST_LINGER || cd_sendq_is_empty(&c->sq)) {
            conn_destroy(c);
            return;
        }
        c->flags |= F_PEER_EOF | F_READ_PAUSED;
        c->deadline_ms = now_ms(c) + srv_of(c)->opt.close_timeout_s * 1000ull;
        c->state = ST_LINGER;
        arm_timer(c, c->deadline_ms);
        set_io_mask(c);
        return;
    }
    c->last_rx_ms = now_ms(c);
    switch (c->state) {
    case ST_HTTP:
        http_feed(c, w->rbuf, (size_t)n);
        break;
    case ST_WS:
    case ST_CLOSING:
        ws_feed(c, w->rbuf, (size_t)n);
        break;
    default:
        break; /* ST_LINGER: discard until the peer's FIN */
    }
}

static void conn_on_io(cd_io *io, uint32_t events)
{
    cd_conn *c = CD_CONTAINER_OF(io, cd_conn, io);
    if (events & CD_IO_WRITE) {
        conn_flush(c);
        if (c->state == ST_DEAD)
            return;
    }
    if (events & (CD_IO_READ | CD_IO_ERROR))
        on_readable(c);
}

/* One timer per connection covers every deadline of its current state. */
static void conn_on_timer(cd_timer *t, void *arg)
{
    CD_UNUSED(arg);
    cd_conn *c = CD_CONTAINER_OF(t, cd_conn, timer);
    const conduit_options *o = &srv_of(c)->opt;
    uint64_t now = now_ms(c);

    switch (c->state) {
    case ST_HTTP:
        if (now < c->deadline_ms) {
            arm_timer(c, c->deadline_ms);
        } else if (c->flags & F_GOT_BYTES) {
            http_error(c, 408, NULL, "request head not received in time");
        } else {
            cd_log(log_of(c), CD_LOG_DEBUG, "handshake_timeout", "conn=%llu",
                   (unsigned long long)c->id);
            conn_destroy(c);
        }
        return;
    case ST_CLOSING:
    case ST_LINGER:
        if (now >= c->deadline_ms)
            conn_destroy(c);
        else
            arm_timer(c, c->deadline_ms);
        return;
    case ST_DEAD:
        return;
    default:
        break;
    }

    uint64_t hb_timeout = o->ws_heartbeat_timeout_s * 1000ull;
    uint64_t hb_interval = o->ws_heartbeat_interval_s * 1000ull;
    uint64_t idle = o->ws_idle_timeout_s * 1000ull;
    if (hb_timeout && now - c->last_rx_ms >= hb_timeout) {
        cd_log(log_of(c), CD_LOG_INFO, "heartbeat_timeout", "conn=%llu",
               (unsigned long long)c->id);
        send_close(c, CD_WS_CLOSE_GOING_AWAY, "heartbeat timeout", true);
        return;
    }
    if (idle && now - c->last_data_ms >= idle) {
        cd_log(log_of(c), CD_LOG_INFO, "idle_timeout", "conn=%llu",
               (unsigned long long)c->id);
        send_close(c, CD_WS_CLOSE_GOING_AWAY, "idle timeout", false);
        return;
    }
    uint64_t quiet_since = CD_MAX(c->last_rx_ms, c->last_ping_ms);
    if (hb_interval && now - quiet_since >= hb_interval) {
        c->last_ping_ms = now;
        if (send_control(c, CD_WS_OP_PING, NULL, 0) != 0)
            return;
        quiet_since = now;
    }
    uint64_t next = UINT64_MAX;
    if (hb_timeout)
        next = CD_MIN(next, c->last_rx_ms + hb_timeout);
    if (idle)
        next = CD_MIN(next, c->last_data_ms + idle);
    if (hb_interval)
        next = CD_MIN(next, quiet_since + hb_interval);
    if (next != UINT64_MAX)
        arm_timer(c, next);
}

/* ------------------------------------------------------------------ */
/* Worker-facing. */

int cd_conn_accept(cd_worker *w, int fd, const cd_addr *peer)
{
    CD_UNUSED(peer);
    cd_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return CONDUIT_ENOMEM;
    }
    c->w = w;
    c->id = w->next_conn_id++;
    c->state = ST_HTTP;
    c->io.fd = -1;
    cd_timer_init(&c->timer, conn_on_timer);
    cd_net_tune_accepted(fd);
    int rc = cd_loop_io_start(w->loop, &c->io, fd, CD_IO_READ, conn_on_io);
    if (rc != 0) {
        close(fd);
        free(c);
        return CONDUIT_EIO;
    }
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    c->last_rx_ms = now_ms(c);
    c->deadline_ms = c->last_rx_ms + w->srv->opt.handshake_timeout_s * 1000ull;
    arm_timer(c, c->deadline_ms);
    return 0;
}

void cd_conn_close_all(cd_worker *w, uint16_t code, const char *reason)
{
    cd_conn *next;
    for (cd_conn *c = w->conns; c; c = next) {
        next = c->next;
        if (c->state == ST_WS)
            send_close(c, code, reason, true);
        else if (c->state == ST_HTTP)
            conn_destroy(c);
    }
}

void cd_conn_destroy_all(cd_worker *w)
{
    while (w->conns)
        conn_destroy(w->conns);
}
