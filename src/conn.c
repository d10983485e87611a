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
#include "hub.h"
#include "http.h"
#include "json.h"
#include "proto.h"
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
    KIND_NATIVE,  /* the native protocol (JSON) */
};

enum {
    F_FLUSH_QUEUED = 1u << 0,   /* on the worker's flush list */
    F_WANT_WRITE = 1u << 1,     /* socket full; waiting for CD_IO_WRITE */
    F_READ_PAUSED = 1u << 2,    /* backpressure: not reading */
    F_FIN_AFTER_FLUSH = 1u << 3,/* shut down the write side once drained */
    F_CLOSE_SENT = 1u << 4,     /* a close frame is queued */
    F_GOT_BYTES = 1u << 5,      /* some request bytes arrived (for 408) */
    F_PEER_EOF = 1u << 6,       /* the peer's FIN arrived; close once drained */
    F_OPENED = 1u << 7,         /* native: joined the hub, on_open ran */
};

/* Stop reading while more than this is queued for a peer that does not
 * read its echoes; resume below the low mark. */
#define QUEUE_HIGH_BYTES (1u << 20)
#define QUEUE_LOW_BYTES (256u << 10)
/* Bytes written to one connection per flush before others get a turn. */
#define WRITE_BUDGET (1u << 20)
#define MAX_IOV 64

/* What only a native-protocol connection has, allocated at its upgrade
 * so that echo connections do not carry it. */
typedef struct cd_native {
    cd_member member;                  /* member.user is the user id (owned) */
    cd_conn *conn;                     /* back from a hub member */
    cd_proto_state ps;
    void *app_user;                    /* conduit_conn_set_user */
} cd_native;

/* Every idle connection costs this struct and nothing more, so its size is
 * watched (docs/performance.md): fields never live at the same time share
 * storage, and times are 32-bit milliseconds compared modulo 2^32 (every
 * interval we measure is far below the 49 days that wraps). */
struct conduit_conn {
    cd_io io;
    union {
        cd_timer timer;                /* every deadline, while alive */
        cd_defer defer;                /* the deferred free, once destroyed */
    };
    cd_worker *w;
    cd_conn *next, *prev;              /* worker's connection list */
    cd_http_parser *http;              /* only while a request head is partial */
    cd_native *nat;                    /* native protocol only */
    cd_sendq sq;
    cd_ws_parser ws;                   /* ws.pmd: compression state, owned here */
    uint64_t id;
    uint32_t last_rx;                  /* any bytes from the peer */
    uint32_t last_data;                /* last data message from the peer */
    uint32_t last_ping;                /* last heartbeat ping we sent */
    uint32_t deadline;                 /* HTTP, CLOSING, LINGER deadline */
    uint16_t flags;
    uint16_t close_code;               /* sent or received; 1006 if none */
    uint8_t state;
    uint8_t kind;
};

static void conn_on_io(cd_io *io, uint32_t events);
static void conn_on_timer(cd_timer *t, void *arg);
static void conn_free(cd_defer *d);

static conduit_server *srv_of(const cd_conn *c) { return c->w->srv; }
static cd_logger *log_of(const cd_conn *c) { return &c->w->srv->log; }
static uint64_t now_ms(const cd_conn *c) { return cd_loop_now_ms(c->w->loop); }
static uint32_t now32(const cd_conn *c) { return (uint32_t)now_ms(c); }
/* Milliseconds since a 32-bit stamp (correct across the wrap). */
static uint32_t since(const cd_conn *c, uint32_t stamp) { return now32(c) - stamp; }
/* A 32-bit deadline back on the loop's 64-bit clock. */
static uint64_t abs_ms(const cd_conn *c, uint32_t stamp)
{
    return now_ms(c) + (uint64_t)(int64_t)(int32_t)(stamp - now32(c));
}
static bool is_past(const cd_conn *c, uint32_t stamp) { return (int32_t)(now32(c) - stamp) >= 0; }

/* ------------------------------------------------------------------ */
/* Lists and lifetime. */

static void conn_flush(cd_conn *c);

/* The worker's flush list is a vector of connections that queued bytes
 * this iteration.  A connection destroyed while on it is freed by the
 * flush pass (not by the deferred-free phase, which runs earlier), so the
 * vector never holds a dangling pointer. */
static void flush_list_add(cd_conn *c)
{
    if (c->flags & F_FLUSH_QUEUED)
        return;
    cd_worker *w = c->w;
    if (w->n_flush == w->cap_flush) {
        size_t cap = w->cap_flush ? w->cap_flush * 2 : 64;
        cd_conn **v = realloc(w->flushq, cap * sizeof(*v));
        if (v == NULL) {
            conn_flush(c); /* no room to wait: write now */
            return;
        }
        w->flushq = v;
        w->cap_flush = cap;
    }
    c->flags |= F_FLUSH_QUEUED;
    w->flushq[w->n_flush++] = c;
}

/* The native side of a close: leave the hub (offline, leave events) and
 * tell the application, exactly once. */
static void native_gone(cd_conn *c)
{
    if (!(c->flags & F_OPENED))
        return;
    c->flags &= (uint16_t)~F_OPENED;
    conduit_server *srv = c->w->srv;
    cd_hub_member_gone(srv->hub, &c->nat->member);
    if (srv->cb.on_close)
        srv->cb.on_close(c, c->close_code ? c->close_code : CD_WS_CLOSE_ABNORMAL,
                         srv->cb.user);
}

static void conn_destroy(cd_conn *c)
{
    if (c->state == ST_DEAD)
        return;
    native_gone(c);
    c->state = ST_DEAD;
    cd_idmap_del(&c->w->conns_by_id, c->id);
    atomic_fetch_sub_explicit(&c->w->srv->n_conns, 1, memory_order_relaxed);
    int fd = c->io.fd;
    cd_loop_io_stop(c->w->loop, &c->io);
    if (fd >= 0)
        close(fd);
    cd_loop_timer_stop(c->w->loop, &c->timer);
    cd_worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->n_conns--;
    cd_log(log_of(c), CD_LOG_DEBUG, "conn_close", "conn=%llu", (unsigned long long)c->id);
    /* The timer is stopped: its storage becomes the deferred free. */
    memset(&c->defer, 0, sizeof(c->defer));
    if (!(c->flags & F_FLUSH_QUEUED))
        cd_loop_defer(w->loop, &c->defer, conn_free);
}

static void conn_free(cd_defer *d)
{
    cd_conn *c = CD_CONTAINER_OF(d, cd_conn, defer);
    cd_sendq_clear(&c->sq, &c->w->sq_pool);
    cd_pmd_destroy(c->ws.pmd);
    cd_ws_parser_fini(&c->ws);
    free(c->http);
    if (c->nat) {
        free((char *)c->nat->member.user);
        free(c->nat);
    }
    free(c);
}

static void arm_timer(cd_conn *c, uint64_t deadline)
{
    if (c->state == ST_DEAD)
        return; /* the timer's storage is now the deferred free */
    cd_loop_timer_start(c->w->loop, &c->timer, deadline);
}

/* Closing (CLOSING, LINGER) lasts at most close_timeout. */
static void arm_close_deadline(cd_conn *c)
{
    c->deadline = now32(c) + srv_of(c)->opt.close_timeout_s * 1000u;
    arm_timer(c, abs_ms(c, c->deadline));
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
    int rc = cd_sendq_push(&c->sq, &c->w->sq_pool, f, is_control);
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
            cd_sendq_adjust(&c->sq, (*tail)->len, f->len);
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
    if (c->close_code == 0)
        c->close_code = code;
    if (send_control(c, CD_WS_OP_CLOSE, payload, len) != 0)
        return;
    arm_close_deadline(c);
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
    if ((c->flags & F_READ_PAUSED) && c->state == ST_WS && cd_sendq_bytes(&c->sq) <= QUEUE_LOW_BYTES) {
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
        cd_sendq_consume(&c->sq, &c->w->sq_pool, (size_t)n);
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
    /* Flushing may queue more (a close after the last bytes): loop on the
     * growing vector by index. */
    for (size_t i = 0; i < w->n_flush; i++) {
        cd_conn *c = w->flushq[i];
        c->flags &= (uint16_t)~F_FLUSH_QUEUED;
        if (c->state != ST_DEAD)
            conn_flush(c);
        if (c->state == ST_DEAD && !(c->flags & F_FLUSH_QUEUED))
            cd_loop_defer(w->loop, &c->defer, conn_free);
    }
    w->n_flush = 0;
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
    arm_close_deadline(c);
    queue_frame(c, f, false);
}

static void http_error(cd_conn *c, int status, const char *extra,
                       const char *reason)
{
    char body[320];
    const char *text = reason ? reason : cd_http_status_text(status);
    cd_jw w;
    cd_jw_init_fixed(&w, body, sizeof(body));
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "error");
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "code");
    cd_jw_cstr(&w, status == 404 ? "NotFound" : "BadRequest");
    cd_jw_key(&w, "message");
    cd_jw_cstr(&w, text);
    cd_jw_object_end(&w);
    cd_jw_object_end(&w);
    /* Reasons are short static texts; one that did not fit would get an
     * empty body rather than cut-off JSON. */
    size_t len = cd_jw_finish(&w) == 0 ? w.len : 0;
    cd_log(log_of(c), CD_LOG_INFO, "http_rejected", "conn=%llu status=%d reason=%s",
           (unsigned long long)c->id, status, reason);
    http_reply(c, status, "application/json", extra, body, len);
}

static void ws_feed(cd_conn *c, uint8_t *data, size_t len);

/* Switch to WebSocket: 101, parser, compression, heartbeat; a native
 * connection then joins the hub (and `room`, when the path named one). */
static void upgrade(cd_conn *c, const cd_endpoint *ep, cd_upgrade_result *r,
                    uint8_t kind, const char *room, size_t room_len, uint8_t *rest,
                    size_t rest_len)
{
    char resp[1024];
    size_t n = cd_upgrade_write_101(r, &ep->upgrade, resp, sizeof(resp));
    cd_frame *f = n ? cd_frame_copy(resp, n) : NULL;
    if (f == NULL) {
        conn_destroy(c);
        return;
    }
    cd_pmd *pmd = NULL;
    if (r->has_pmd && (pmd = cd_pmd_create(&r->pmd, &srv_of(c)->pmd)) == NULL) {
        cd_frame_unref(f);
        conn_destroy(c);
        return;
    }
    free(c->http);
    c->http = NULL;
    c->kind = kind;
    c->state = ST_WS;
    cd_ws_parser_init(&c->ws, &ep->limits, pmd);
    c->last_data = c->last_ping = now32(c);
    cd_loop_timer_stop(c->w->loop, &c->timer);
    if (queue_frame(c, f, true) != 0)
        return;
    conn_on_timer(&c->timer, NULL); /* arms the heartbeat */
    cd_log(log_of(c), CD_LOG_DEBUG, "ws_open", "conn=%llu user=%s deflate=%d",
           (unsigned long long)c->id, cd_conn_user(c), r->has_pmd ? 1 : 0);
    if (kind == KIND_NATIVE) {
        c->flags |= F_OPENED;
        c->nat->member.conn_id = c->id;
        c->nat->member.worker = c->w->id;
        cd_proto_json_open(c, room, room_len);
        if (c->state == ST_DEAD)
            return;
    }
    if (rest_len > 0)
        ws_feed(c, rest, rest_len);
}

/* Decide who the connection is (docs/protocol.md, "Identity").  Returns
 * 0, or an HTTP status after which the request is refused. */
static int identify(cd_conn *c, const cd_http_parser *req)
{
    conduit_server *srv = srv_of(c);
    const char *mode = srv->opt.auth_mode ? srv->opt.auth_mode : "optional";
    char user[129];
    int n = -1;
    if (strcmp(mode, "insecure") == 0)
        n = cd_http_query_get(cd_http_str(req, req->query), req->query.len, "user_id",
                              user, sizeof(user));
    if (n > 0) {
        for (int i = 0; i < n; i++)
            if ((unsigned char)user[i] < 0x20 || user[i] == 0x7f)
                return 400;
        cd_log(log_of(c), CD_LOG_WARN, "insecure_user_id", "conn=%llu user=%s",
               (unsigned long long)c->id, user);
    } else if (strcmp(mode, "required") == 0) {
        /* Token verification arrives with authentication; until a key is
         * configured nothing can be verified, so nobody is let in. */
        return 401;
    } else {
        snprintf(user, sizeof(user), "anon-%llx", (unsigned long long)c->id);
    }
    c->nat = calloc(1, sizeof(*c->nat));
    if (c->nat == NULL || (c->nat->member.user = strdup(user)) == NULL)
        return 500;
    c->nat->conn = c;
    return 0;
}

static bool path_is(const char *path, size_t len, const char *lit)
{
    return lit && len == strlen(lit) && memcmp(path, lit, len) == 0;
}

static void http_dispatch(cd_conn *c, const cd_http_parser *req, uint8_t *rest,
                          size_t rest_len)
{
    conduit_server *srv = srv_of(c);

    /* RFC 9112 §3.2: an HTTP/1.1 request without Host, or any request
     * with several, is answered 400 (the upgrade check says the same). */
    size_t n_host = cd_http_header_count(req, "host");
    if (n_host > 1 || (n_host == 0 && req->version_minor >= 1)) {
        http_error(c, 400, NULL, n_host ? "more than one Host header" : "missing Host header");
        return;
    }
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
    const char *ws_path = srv->opt.ws_path ? srv->opt.ws_path : "/ws";
    size_t ws_len = strlen(ws_path);
    char room[CD_CHANNEL_MAX_LEN + 1];
    int room_len = 0;

    if (srv->opt.echo_enabled && path_is(path, plen, srv->opt.echo_path)) {
        ep = &srv->echo;
        kind = KIND_ECHO;
    } else if (path_is(path, plen, ws_path)) {
        ep = &srv->native;
        kind = KIND_NATIVE;
    } else if (plen > ws_len + 1 && memcmp(path, ws_path, ws_len) == 0 && path[ws_len] == '/') {
        /* /ws/{room}: the room is one percent-decoded path segment. */
        char enc[CD_HTTP_MAX_REQUEST_LINE];
        size_t elen = plen - ws_len - 1;
        int n = -1;
        if (elen < sizeof(enc) - 3) {
            char q[CD_HTTP_MAX_REQUEST_LINE + 4];
            memcpy(q, "r=", 2);
            memcpy(q + 2, path + ws_len + 1, elen);
            n = cd_http_query_get(q, elen + 2, "r", room, sizeof(room));
        }
        if (n <= 0 || memchr(path + ws_len + 1, '/', elen) != NULL ||
            !cd_hub_channel_name_valid(room, (size_t)n)) {
            http_error(c, 400, NULL, "the room in the path is not a valid channel name");
            return;
        }
        room_len = n;
        ep = &srv->native;
        kind = KIND_NATIVE;
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
    if (kind == KIND_NATIVE) {
        if (r.subprotocol_requested && r.subprotocol < 0) {
            http_error(c, 400, NULL, "unsupported subprotocol: this endpoint speaks "
                                     CD_PROTO_JSON);
            return;
        }
        int status = identify(c, req);
        if (status != 0) {
            http_error(c, status, NULL,
                       status == 401 ? "a valid token is required" : "bad user_id");
            return;
        }
    }
    upgrade(c, ep, &r, kind, room, (size_t)room_len, rest, rest_len);
}

/* Most request heads arrive in one read: they are parsed with the
 * worker's parser and never cost the connection an allocation.  Only a
 * head split over reads gets a parser of its own (about 13 KiB, bounded by
 * the header limits) until it is complete. */
static void http_feed(cd_conn *c, uint8_t *data, size_t len)
{
    cd_http_parser *p = c->http;
    if (p == NULL) {
        p = c->w->http_scratch;
        cd_http_parser_init(p);
    }
    c->flags |= F_GOT_BYTES;
    size_t used = 0;
    int rc = cd_http_parse(p, data, len, &used);
    if (rc == CD_HTTP_NEED_MORE) {
        if (c->http == NULL) {
            if ((c->http = malloc(sizeof(*c->http))) == NULL) {
                conn_destroy(c);
                return;
            }
            memcpy(c->http, p, sizeof(*p));
        }
        return;
    }
    if (rc == CD_HTTP_ERROR) {
        http_error(c, p->error_status, NULL, p->error_reason);
        return;
    }
    http_dispatch(c, p, data + used, len - used);
}

/* ------------------------------------------------------------------ */
/* WebSocket. */

static void echo_message(cd_conn *c, const cd_ws_event *ev)
{
    const uint8_t *payload = ev->data;
    size_t len = ev->len;
    bool rsv1 = false;
    cd_bytes *scratch = &c->w->scratch;

    cd_pmd *pmd = c->ws.pmd;
    if (pmd && cd_pmd_should_compress(pmd, len)) {
        scratch->len = 0;
        if (cd_pmd_deflate(pmd, payload, len, scratch) != 0) {
            conn_destroy(c);
            return;
        }
        payload = scratch->data;
        len = scratch->len;
        rsv1 = true;
    }
    uint8_t hdr[CD_WS_MAX_HEADER];
    size_t hlen = cd_ws_header_write(hdr, ev->opcode, true, rsv1, len);
    int rc = cd_sendq_append(&c->sq, &c->w->sq_pool, hdr, hlen, payload, len);
    if (scratch->cap > (1u << 20))
        cd_bytes_free(scratch); /* keep the worker's scratch small */
    if (rc != 0) {
        conn_destroy(c);
        return;
    }
    if (!(c->flags & F_WANT_WRITE))
        flush_list_add(c);
    if (cd_sendq_bytes(&c->sq) > QUEUE_HIGH_BYTES && !(c->flags & F_READ_PAUSED)) {
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
    c->close_code = ev->close_code;
    send_close(c, code, NULL, true);
}

static void handle_event(cd_conn *c, const cd_ws_event *ev)
{
    switch (ev->type) {
    case CD_WS_EV_MESSAGE:
        if (c->state != ST_WS)
            return; /* after our close, data is discarded (RFC 6455 §1.4) */
        c->last_data = now32(c);
        if (c->kind == KIND_ECHO) {
            echo_message(c, ev);
        } else if (ev->opcode == CD_WS_OP_BINARY) {
            /* conduit.v1.json is text only (RFC 6455 §7.4.1: 1003). */
            send_close(c, CD_WS_CLOSE_UNSUPPORTED,
                       "binary frames are not accepted on " CD_PROTO_JSON, false);
        } else {
            cd_proto_json_message(c, ev->data, ev->len);
        }
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
        c->state = ST_LINGER;
        arm_close_deadline(c);
        set_io_mask(c);
        return;
    }
    c->last_rx = now32(c);
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

    switch (c->state) {
    case ST_HTTP:
        if (!is_past(c, c->deadline)) {
            arm_timer(c, abs_ms(c, c->deadline));
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
        if (is_past(c, c->deadline))
            conn_destroy(c);
        else
            arm_timer(c, abs_ms(c, c->deadline));
        return;
    case ST_DEAD:
        return;
    default:
        break;
    }

    uint32_t hb_timeout = o->ws_heartbeat_timeout_s * 1000u;
    uint32_t hb_interval = o->ws_heartbeat_interval_s * 1000u;
    uint32_t idle = o->ws_idle_timeout_s * 1000u;
    if (hb_timeout && since(c, c->last_rx) >= hb_timeout) {
        cd_log(log_of(c), CD_LOG_INFO, "heartbeat_timeout", "conn=%llu",
               (unsigned long long)c->id);
        send_close(c, CD_WS_CLOSE_GOING_AWAY, "heartbeat timeout", true);
        return;
    }
    if (idle && since(c, c->last_data) >= idle) {
        cd_log(log_of(c), CD_LOG_INFO, "idle_timeout", "conn=%llu",
               (unsigned long long)c->id);
        send_close(c, CD_WS_CLOSE_GOING_AWAY, "idle timeout", false);
        return;
    }
    /* Ping only a connection that has been quiet, and not again until the
     * interval has passed since the last ping. */
    uint32_t quiet = CD_MIN(since(c, c->last_rx), since(c, c->last_ping));
    if (hb_interval && quiet >= hb_interval) {
        c->last_ping = now32(c);
        if (send_control(c, CD_WS_OP_PING, NULL, 0) != 0)
            return;
        quiet = 0;
    }
    uint32_t wait = UINT32_MAX;
    if (hb_timeout)
        wait = CD_MIN(wait, hb_timeout - since(c, c->last_rx));
    if (idle)
        wait = CD_MIN(wait, idle - since(c, c->last_data));
    if (hb_interval)
        wait = CD_MIN(wait, hb_interval - quiet);
    if (wait != UINT32_MAX)
        arm_timer(c, now_ms(c) + wait);
}

/* ------------------------------------------------------------------ */
/* Worker-facing. */

uint64_t cd_conn_key(const void *conn)
{
    return ((const cd_conn *)conn)->id;
}

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
    if (cd_idmap_put(&w->conns_by_id, c) != 0) {
        cd_loop_io_stop(w->loop, &c->io);
        close(fd);
        free(c);
        return CONDUIT_ENOMEM;
    }
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->n_conns++;
    atomic_fetch_add_explicit(&w->srv->n_conns, 1, memory_order_relaxed);
    c->last_rx = now32(c);
    c->deadline = c->last_rx + w->srv->opt.handshake_timeout_s * 1000u;
    arm_timer(c, abs_ms(c, c->deadline));
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

/* ------------------------------------------------------------------ */
/* Interface for the protocol layer and the hub. */

uint64_t cd_conn_id(const cd_conn *c) { return c->id; }
const char *cd_conn_user(const cd_conn *c) { return c->nat ? c->nat->member.user : ""; }
cd_member *cd_conn_member(cd_conn *c) { return &c->nat->member; }
cd_worker *cd_conn_worker(const cd_conn *c) { return c->w; }
cd_proto_state *cd_conn_proto(cd_conn *c) { return &c->nat->ps; }
uint64_t cd_conn_now_ms(const cd_conn *c) { return now_ms(c); }
size_t cd_conn_queued_bytes(const cd_conn *c) { return cd_sendq_bytes(&c->sq); }

/* A queue over its cap belongs to a slow consumer: with the close policy
 * it gets an error and 4008 (it resumes from its last offset). */
static bool over_queue_limits(const cd_conn *c)
{
    const conduit_options *o = &srv_of(c)->opt;
    return cd_sendq_bytes(&c->sq) > o->ws_max_queue_bytes ||
           cd_sendq_count(&c->sq) > o->ws_max_queue_messages;
}

static void slow_consumer(cd_conn *c)
{
    cd_log(log_of(c), CD_LOG_WARN, "slow_consumer", "conn=%llu user=%s queued=%zu",
           (unsigned long long)c->id, cd_conn_user(c), cd_sendq_bytes(&c->sq));
    /* The error and the close jump the backlog so the client learns why. */
    cd_frame *f = cd_proto_json_error_frame(NULL, 0, "SlowConsumer",
                                            "send queue overflowed; resume from your last offset");
    cd_sendq_drop_unsent(&c->sq, &c->w->sq_pool);
    if (f)
        queue_frame(c, f, true);
    if (c->state != ST_DEAD)
        send_close(c, CD_WS_CLOSE_SLOW_CONSUMER, "slow consumer", true);
}

int cd_conn_send_frame(cd_conn *c, cd_frame *f)
{
    if (c->state != ST_WS) {
        cd_frame_unref(f);
        return CONDUIT_ECLOSED;
    }
    int rc = queue_frame(c, f, false);
    if (rc != 0)
        return rc;
    if (over_queue_limits(c)) {
        slow_consumer(c);
        return CONDUIT_ELIMIT;
    }
    return 0;
}

void cd_conn_close(cd_conn *c, uint16_t code, const char *reason)
{
    if (c->state == ST_WS)
        send_close(c, code, reason, false);
    else if (c->state == ST_HTTP)
        conn_destroy(c);
}

void cd_conn_deliver(void *ctx, cd_member *m, cd_frame *f)
{
    CD_UNUSED(ctx);
    cd_conn *c = CD_CONTAINER_OF(m, cd_native, member)->conn;
    cd_conn_send_frame(c, cd_frame_ref(f));
}

void cd_conn_deliver_all(void *ctx, unsigned worker, cd_frame *f, uint64_t exclude_conn)
{
    conduit_server *srv = ctx;
    cd_worker *w = &srv->workers[worker];
    cd_conn *next;
    for (cd_conn *c = w->conns; c; c = next) {
        next = c->next;
        if (c->kind == KIND_NATIVE && c->state == ST_WS && c->id != exclude_conn)
            cd_conn_send_frame(c, cd_frame_ref(f));
    }
}

/* A text message posted by conduit_send from another thread. */
typedef struct send_post {
    cd_post post;
    uint64_t conn_id;
    cd_frame *frame;
} send_post;

static void on_send_post(cd_post *p, cd_loop *loop)
{
    send_post *sp = CD_CONTAINER_OF(p, send_post, post);
    cd_worker *w = cd_loop_user(loop);
    cd_conn *c = cd_idmap_get(&w->conns_by_id, sp->conn_id);
    if (c != NULL)
        cd_conn_send_frame(c, sp->frame);
    else
        cd_frame_unref(sp->frame);
    free(sp);
}

CONDUIT_API int conduit_send(conduit_server *srv, uint64_t conn_id,
                             const char *text, size_t len)
{
    size_t worker = (size_t)(conn_id >> 48);
    if (!srv->is_started || srv->is_stopped || worker >= srv->n_workers)
        return CONDUIT_ENOTFOUND;
    send_post *sp = malloc(sizeof(*sp));
    cd_frame *f = cd_proto_text_frame(text, len);
    if (sp == NULL || f == NULL) {
        free(sp);
        cd_frame_unref(f);
        return CONDUIT_ENOMEM;
    }
    sp->conn_id = conn_id;
    sp->frame = f;
    sp->post.fn = on_send_post;
    cd_loop_post(srv->workers[worker].loop, &sp->post);
    return 0;
}

CONDUIT_API int conduit_conn_send_text(conduit_conn *c, const char *text, size_t len)
{
    cd_frame *f = cd_proto_text_frame(text, len);
    if (f == NULL)
        return CONDUIT_ENOMEM;
    return cd_conn_send_frame(c, f);
}

CONDUIT_API void conduit_conn_close(conduit_conn *c, int code, const char *reason)
{
    cd_conn_close(c, (uint16_t)code, reason);
}

CONDUIT_API uint64_t conduit_conn_id(const conduit_conn *c) { return c->id; }
CONDUIT_API const char *conduit_conn_user_id(const conduit_conn *c) { return cd_conn_user(c); }
CONDUIT_API void conduit_conn_set_user(conduit_conn *c, void *user)
{
    if (c->nat)
        c->nat->app_user = user;
}

CONDUIT_API void *conduit_conn_user(const conduit_conn *c)
{
    return c->nat ? c->nat->app_user : NULL;
}
