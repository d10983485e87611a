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
#include <time.h>
#include <unistd.h>

#include "admit.h"
#include "api.h"
#include "auth.h"
#include "proxy.h"
#include "common.h"
#include "hub.h"
#include "http.h"
#include "json.h"
#include "proto.h"
#include "sendq.h"
#include "upgrade.h"
#include "ws.h"

enum conn_state {
    ST_PROXY,     /* reading a trusted proxy's PROXY protocol header */
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
    F_PENDING_HELD = 1u << 8,   /* holds a pending-handshake slot (admit.h) */
    F_IP_HELD = 1u << 9,        /* holds a per-IP connection slot */
    F_USER_HELD = 1u << 10,     /* holds a per-user slot (nat->member.user) */
    F_WS_HELD = 1u << 11,       /* holds a global WebSocket slot */
    F_THROTTLED = 1u << 12,     /* over the message rate: not reading */
};

/* Stop reading while more than this is queued for a peer that does not
 * read its echoes; resume below the low mark. */
#define QUEUE_HIGH_BYTES (1u << 20)
#define QUEUE_LOW_BYTES (256u << 10)
/* Bytes written to one connection per flush before others get a turn. */
#define WRITE_BUDGET (1u << 20)
#define MAX_IOV 64

/* The permission claims of a token, in one allocation: has_* false means
 * the claim was absent (the namespace rules decide). */
typedef struct cd_grants {
    bool has_channels, has_publish;
    uint8_t n_channels, n_publish;
    char *pat[];                       /* channels first, then publish */
} cd_grants;

static cd_grants *grants_from_claims(const cd_jwt_claims *cl)
{
    if (!cl->has_channels && !cl->has_publish)
        return NULL;
    size_t n = (size_t)cl->n_channels + cl->n_publish, bytes = 0;
    for (size_t i = 0; i < cl->n_channels; i++)
        bytes += strlen(cl->channels[i]) + 1;
    for (size_t i = 0; i < cl->n_publish; i++)
        bytes += strlen(cl->publish[i]) + 1;
    cd_grants *g = malloc(sizeof(*g) + n * sizeof(char *) + bytes);
    if (g == NULL)
        return NULL;
    g->has_channels = cl->has_channels;
    g->has_publish = cl->has_publish;
    g->n_channels = cl->n_channels;
    g->n_publish = cl->n_publish;
    char *p = (char *)(g->pat + n);
    for (size_t i = 0; i < n; i++) {
        const char *src = i < cl->n_channels ? cl->channels[i] : cl->publish[i - cl->n_channels];
        size_t len = strlen(src) + 1;
        memcpy(p, src, len);
        g->pat[i] = p;
        p += len;
    }
    return g;
}

static bool grants_match(char *const *pat, size_t n, const char *channel, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (cd_auth_pattern_match(pat[i], channel, len))
            return true;
    return false;
}

/* What only a native-protocol connection has, allocated at its upgrade
 * so that echo connections do not carry it. */
typedef struct cd_native {
    cd_member member;                  /* member.user is the user id (owned) */
    cd_conn *conn;                     /* back from a hub member */
    cd_proto_state ps;
    void *app_user;                    /* conduit_conn_set_user */
    bool is_anonymous;                 /* no token: user is anon-<id> */
    bool is_auth_pending;              /* required mode: waiting for auth/hello */
    bool is_expiry_warned;             /* TokenExpiring sent for this token */
    bool has_exp;
    cd_grants *grants;                 /* the token's permission claims, or NULL */
    char *pending_room;                /* /ws/{room} of a pending connection */
    int64_t exp_s;                     /* the token's exp (wall clock, seconds) */
    uint32_t auth_deadline;            /* pending: close 1008 after this */
    cd_bucket rate;                    /* frames from the client */
    cd_bytes held;                     /* input read while throttled */
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
    union {
        cd_http_parser *http;          /* only while a request head is partial */
        cd_proxy_parser *proxy;        /* only in ST_PROXY */
    };
    cd_native *nat;                    /* native protocol only */
    cd_sendq sq;
    cd_ws_parser ws;                   /* ws.pmd: compression state, owned here */
    uint64_t id;
    uint8_t ip[16];                    /* the client (IPv4 as ::ffff:a.b.c.d) */
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

/* Give back every admission slot the connection holds, once. */
static void release_slots(cd_conn *c)
{
    cd_admit *a = &c->w->srv->admit;
    if (c->flags & F_PENDING_HELD)
        cd_admit_pending_release(a, c->ip);
    if (c->flags & F_IP_HELD)
        cd_admit_ip_release(a, c->ip);
    if (c->flags & F_USER_HELD)
        cd_admit_user_release(a, c->nat->member.user);
    if (c->flags & F_WS_HELD)
        cd_admit_ws_release(a);
    c->flags &= (uint16_t)~(F_PENDING_HELD | F_IP_HELD | F_USER_HELD | F_WS_HELD);
}

static void conn_destroy(cd_conn *c)
{
    if (c->state == ST_DEAD)
        return;
    native_gone(c);
    release_slots(c);
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
        cd_bytes_free(&c->nat->held);
        free(c->nat->pending_room);
        free(c->nat->grants);
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

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An error frame the client reads first, then a close (policy: 1008). */
static void error_close(cd_conn *c, const char *code, const char *message, uint16_t close_code,
                        const char *reason)
{
    cd_frame *f = cd_proto_json_error_frame(NULL, 0, code, message);
    if (f == NULL || queue_frame(c, f, false) != 0)
        return;
    send_close(c, close_code, reason, false);
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
    /* A throttled connection reads again only when its rate allows. */
    if ((c->flags & F_READ_PAUSED) && !(c->flags & F_THROTTLED) && c->state == ST_WS &&
        cd_sendq_bytes(&c->sq) <= QUEUE_LOW_BYTES) {
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

/* A refusal: status, a JSON body with a stable code, and a log line. */
static void http_refuse(cd_conn *c, int status, const char *code, const char *extra,
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
    cd_jw_cstr(&w, code);
    cd_jw_key(&w, "message");
    cd_jw_cstr(&w, text);
    cd_jw_object_end(&w);
    cd_jw_object_end(&w);
    /* Reasons are short static texts; one that did not fit would get an
     * empty body rather than cut-off JSON. */
    size_t len = cd_jw_finish(&w) == 0 ? w.len : 0;
    char ip[64];
    cd_admit_ip_format(c->ip, ip, sizeof(ip));
    cd_log(log_of(c), CD_LOG_INFO, "http_rejected", "conn=%llu status=%d ip=%s reason=%s",
           (unsigned long long)c->id, status, ip, text);
    http_reply(c, status, "application/json", extra, body, len);
}

static void http_error(cd_conn *c, int status, const char *extra, const char *reason)
{
    http_refuse(c, status, status == 404 ? "NotFound" : "BadRequest", extra, reason);
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
        c->nat->member.conn_id = c->id;
        c->nat->member.worker = c->w->id;
        if (c->nat->is_auth_pending) {
            /* Opened once authenticated (cd_conn_authenticate). */
            if (room_len > 0 && (c->nat->pending_room = strndup(room, room_len)) == NULL) {
                conn_destroy(c);
                return;
            }
        } else {
            c->flags |= F_OPENED;
            cd_proto_json_open(c, room, room_len);
            if (c->state == ST_DEAD)
                return;
        }
    }
    if (rest_len > 0)
        ws_feed(c, rest, rest_len);
}

/* An admission refusal: the answer of the verdict, and a log line. */
static void refuse_admission(cd_conn *c, const cd_admit_verdict *v)
{
    char extra[64] = "";
    if (v->retry_after_s)
        snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", (unsigned)v->retry_after_s);
    if (v->kind) {
        char ip[64];
        cd_admit_ip_format(c->ip, ip, sizeof(ip));
        cd_log(log_of(c), CD_LOG_WARN, "connection_limit", "conn=%llu kind=%s ip=%s",
               (unsigned long long)c->id, v->kind, ip);
    } else if (v->status == 403) {
        char ip[64];
        cd_admit_ip_format(c->ip, ip, sizeof(ip));
        cd_log(log_of(c), CD_LOG_WARN, "origin_rejected", "conn=%llu ip=%s",
               (unsigned long long)c->id, ip);
    }
    http_refuse(c, v->status, v->code, extra[0] ? extra : NULL, v->reason);
}

/* The handshake's token from the first place that has one (docs/
 * security.md): Authorization: Bearer, query token, query auth_token,
 * the cookie.  Returns its length (0: none); *from_cookie says where. */
static size_t find_token(const conduit_server *srv, const cd_http_parser *req, char *out,
                         size_t cap, bool *from_cookie)
{
    *from_cookie = false;
    const cd_http_header *h = cd_http_header_find(req, "authorization");
    if (h && h->value.len > 7 && strncasecmp(cd_http_str(req, h->value), "bearer ", 7) == 0) {
        const char *v = cd_http_str(req, h->value) + 7;
        size_t n = h->value.len - 7;
        while (n > 0 && *v == ' ') {
            v++;
            n--;
        }
        if (n > 0 && n < cap) {
            memcpy(out, v, n);
            out[n] = '\0';
            return n;
        }
        if (n >= cap) {
            out[0] = '\0';
            return cap; /* too long: verify_token refuses it unread */
        }
    }
    const char *q = cd_http_str(req, req->query);
    static const char *const params[] = {"token", "auth_token"};
    for (size_t i = 0; i < CD_ARRAY_LEN(params); i++) {
        int n = cd_http_query_get(q, req->query.len, params[i], out, cap);
        if (n > 0)
            return (size_t)n;
    }
    const char *cookie = srv->opt.jwt_cookie_name;
    for (h = cd_http_header_next(req, NULL, "cookie"); h && cookie && cookie[0];
         h = cd_http_header_next(req, h, "cookie")) {
        int n = cd_http_cookie_get(cd_http_str(req, h->value), h->value.len, cookie, out, cap);
        if (n > 0) {
            *from_cookie = true;
            return (size_t)n;
        }
    }
    return 0;
}

/* Verify a token with the JWT keys and/or the application's hook.  On
 * success user[] gets the user id.  Returns 0, or a negative code with
 * *why set to a short reason. */
static int verify_token(cd_conn *c, const char *token, size_t len, char *user,
                        size_t cap, cd_grants **grants, int64_t *exp_s, const char **why)
{
    conduit_server *srv = srv_of(c);
    *why = NULL;
    *grants = NULL;
    *exp_s = 0;
    const cd_jwt_keyset *keys = c->w->keys;
    if (keys == NULL && srv->cb.authenticate == NULL) {
        *why = "no token verifier configured";
        return CONDUIT_EDENIED;
    }
    if (len > CD_JWT_MAX_TOKEN_LEN) {
        *why = cd_jwt_strerror(CD_JWT_ETOOLARGE); /* find_token kept none of it */
        return CD_JWT_ETOOLARGE;
    }
    const char *jwt_user = NULL;
    cd_jwt_claims *claims = NULL;
    if (keys) {
        if ((claims = malloc(sizeof(*claims))) == NULL) {
            *why = "out of memory";
            return CONDUIT_ENOMEM;
        }
        int64_t now_s = (int64_t)time(NULL);
        int rc = cd_jwt_verify(keys, token, len, now_s, claims, why);
        if (rc != 0) {
            *why = cd_jwt_strerror(rc);
            free(claims);
            return rc;
        }
        jwt_user = claims->sub;
        snprintf(user, cap, "%s", claims->sub);
        *exp_s = claims->has_exp ? claims->exp_s : 0;
        if ((claims->has_channels || claims->has_publish) &&
            (*grants = grants_from_claims(claims)) == NULL) {
            *why = "out of memory";
            free(claims);
            return CONDUIT_ENOMEM;
        }
    }
    if (srv->cb.authenticate) {
        char hooked[CD_JWT_MAX_SUB + 1] = "";
        int rc = srv->cb.authenticate(token, len, jwt_user, hooked, sizeof(hooked),
                                      srv->cb.user);
        if (rc != 0 || (hooked[0] == '\0' && jwt_user == NULL)) {
            *why = "refused by the application";
            free(*grants);
            *grants = NULL;
            free(claims);
            return CONDUIT_EDENIED;
        }
        if (hooked[0])
            snprintf(user, cap, "%s", hooked);
    }
    free(claims);
    return 0;
}

static const char *const www_auth_invalid =
    "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n";

/* Decide who the connection is (docs/security.md).  Returns true when the
 * handshake may go on; false after an answer was sent. */
static bool identify(cd_conn *c, const cd_http_parser *req, uint8_t kind, bool has_token,
                     const char *token, size_t token_len)
{
    conduit_server *srv = srv_of(c);
    const char *mode = srv->opt.auth_mode;
    char user[CD_JWT_MAX_SUB + 1] = "";
    bool verifier = c->w->keys != NULL || srv->cb.authenticate != NULL;
    cd_grants *grants = NULL;
    int64_t exp_s = 0;
    bool pending = false;

    if (has_token && verifier) {
        const char *why = NULL;
        if (verify_token(c, token, token_len, user, sizeof(user), &grants, &exp_s, &why) != 0) {
            char ip[64];
            cd_admit_ip_format(c->ip, ip, sizeof(ip));
            cd_log(log_of(c), CD_LOG_INFO, "auth_failed", "conn=%llu ip=%s reason=%s",
                   (unsigned long long)c->id, ip, why);
            http_refuse(c, 401, "Unauthorized", www_auth_invalid, why);
            return false;
        }
    } else if (strcmp(mode, "required") == 0 && (!verifier || kind != KIND_NATIVE)) {
        http_refuse(c, 401, "Unauthorized", www_auth_invalid,
                    verifier ? "a valid token is required" : "no token verifier configured");
        return false;
    } else if (strcmp(mode, "required") == 0) {
        pending = true; /* the token may come in the first messages */
    } else if (strcmp(mode, "insecure") == 0 && kind == KIND_NATIVE) {
        int n = cd_http_query_get(cd_http_str(req, req->query), req->query.len, "user_id",
                                  user, sizeof(user));
        for (int i = 0; i < n; i++) {
            if ((unsigned char)user[i] < 0x20 || user[i] == 0x7f) {
                http_error(c, 400, NULL, "bad user_id");
                return false;
            }
        }
        if (n > 0)
            cd_log(log_of(c), CD_LOG_WARN, "insecure_user_id", "conn=%llu user=%s",
                   (unsigned long long)c->id, user);
        else
            user[0] = '\0';
    }
    if (kind != KIND_NATIVE) {
        free(grants);
        return true;
    }
    bool is_anonymous = user[0] == '\0';
    if (is_anonymous)
        snprintf(user, sizeof(user), "anon-%llx", (unsigned long long)c->id);
    c->nat = calloc(1, sizeof(*c->nat));
    if (c->nat == NULL || (c->nat->member.user = strdup(user)) == NULL) {
        free(grants);
        http_refuse(c, 500, "Internal", NULL, "out of memory");
        return false;
    }
    c->nat->conn = c;
    c->nat->is_anonymous = is_anonymous;
    c->nat->is_auth_pending = pending;
    c->nat->grants = grants;
    (void)cd_bucket_init(&c->nat->rate, srv->opt.ws_message_rate_limit,
                         srv->opt.ws_rate_window_ms, now_ms(c)); /* bounds: config table */
    c->nat->has_exp = exp_s != 0;
    c->nat->exp_s = exp_s;
    if (pending)
        c->nat->auth_deadline = now32(c) + srv->opt.auth_timeout_s * 1000u;
    if (!is_anonymous) {
        cd_admit_verdict v;
        cd_admit_user(&srv->admit, user, &v);
        if (v.status) {
            refuse_admission(c, &v);
            return false;
        }
        c->flags |= F_USER_HELD;
    }
    return true;
}

/* Behind a trusted proxy the client is named by its forwarding header. */
static void resolve_client(cd_conn *c, const cd_http_parser *req)
{
    cd_admit *a = &srv_of(c)->admit;
    if (!cd_admit_is_trusted(a, c->ip))
        return;
    const char *name = a->proxy_header == CD_PROXY_FORWARDED ? "forwarded" : "x-forwarded-for";
    cd_proxy_hdr vals[16];
    size_t n = 0;
    for (const cd_http_header *h = cd_http_header_next(req, NULL, name);
         h && n < CD_ARRAY_LEN(vals); h = cd_http_header_next(req, h, name)) {
        vals[n].value = cd_http_str(req, h->value);
        vals[n].len = h->value.len;
        n++;
    }
    if (n == 0)
        return;
    cd_addr peer, client;
    cd_admit_addr_from_ip16(&peer, c->ip);
    int src = cd_proxy_client_addr(&a->trusted, &peer, a->proxy_header, vals, n, &client);
    if (src == CD_CLIENT_FALLBACK)
        cd_log(log_of(c), CD_LOG_WARN, "proxy_header_invalid", "conn=%llu header=%s",
               (unsigned long long)c->id, name);
    uint8_t ip[16];
    if (cd_admit_ip16_from_addr(ip, &client))
        memcpy(c->ip, ip, sizeof(ip));
}

/* Admission before the upgrade, in the order of docs/security.md:
 * capacity, origin, per-IP rate and cap, token, per-user cap.  Every slot
 * taken is held in a flag and given back by release_slots.  Returns true
 * when the upgrade may go on. */
static bool admit(cd_conn *c, const cd_http_parser *req, uint8_t kind)
{
    conduit_server *srv = srv_of(c);
    cd_admit *a = &srv->admit;
    cd_admit_verdict v;
    resolve_client(c, req);
    cd_admit_capacity(a, now_ms(c), &v);
    if (v.status) {
        refuse_admission(c, &v);
        return false;
    }
    c->flags |= F_WS_HELD;

    char *token = c->w->token_scratch;
    bool from_cookie = false;
    size_t token_len = find_token(srv, req, token, CD_JWT_MAX_TOKEN_LEN + 1, &from_cookie);
    const cd_http_header *origin = cd_http_header_find(req, "origin");
    const cd_http_header *host = cd_http_header_find(req, "host");
    cd_admit_origin(a, origin ? cd_http_str(req, origin->value) : NULL,
                    origin ? origin->value.len : 0, host ? cd_http_str(req, host->value) : NULL,
                    host ? host->value.len : 0, from_cookie && token_len > 0, &v);
    if (v.status) {
        refuse_admission(c, &v);
        return false;
    }
    cd_admit_ip(a, c->ip, now_ms(c), &v);
    if (v.status) {
        refuse_admission(c, &v);
        return false;
    }
    if (a->max_per_ip)
        c->flags |= F_IP_HELD;
    return identify(c, req, kind, token_len > 0, token, token_len);
}

static bool path_is(const char *path, size_t len, const char *lit)
{
    return lit && len == strlen(lit) && memcmp(path, lit, len) == 0;
}

static void http_dispatch(cd_conn *c, const cd_http_parser *req, uint8_t *rest,
                          size_t rest_len)
{
    conduit_server *srv = srv_of(c);
    if (c->flags & F_PENDING_HELD) {
        cd_admit_pending_release(&srv->admit, c->ip);
        c->flags &= (uint16_t)~F_PENDING_HELD;
    }

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
    }
    if (!admit(c, req, kind))
        return;
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

static bool is_throttling(const cd_conn *c)
{
    return c->kind == KIND_NATIVE && c->nat->rate.limit > 0 &&
           strcmp(srv_of(c)->opt.ws_rate_limit_policy, "throttle") == 0;
}

/* The message rate of a native connection: every frame from the client
 * takes a token.  Returns false when the frame must not be handled (the
 * connection is closing). */
static bool rate_take(cd_conn *c)
{
    cd_native *n = c->nat;
    int verdict = cd_bucket_take_warn(&n->rate, now_ms(c), 1);
    if (verdict == CD_BUCKET_ALLOWED)
        return true;
    const conduit_options *o = &srv_of(c)->opt;
    if (verdict == CD_BUCKET_WARN) {
        cd_frame *f = cd_proto_json_warning_frame("RateLimitWarning",
                                                  "80% of the message rate limit used",
                                                  "limit", o->ws_message_rate_limit);
        return f != NULL && cd_conn_send_frame(c, f) == 0;
    }
    /* Throttling stops before a frame is parsed (throttle_begin); only a
     * frame that was already partly buffered can get here: handle it. */
    if (is_throttling(c))
        return true;
    cd_log(log_of(c), CD_LOG_WARN, "rate_limited", "conn=%llu user=%s policy=%s",
           (unsigned long long)c->id, n->member.user, "close");
    error_close(c, "RateLimitExceeded", "message rate limit exceeded", CD_WS_CLOSE_POLICY,
                "rate limit exceeded");
    return false;
}

/* Throttle policy, before each frame is parsed: with no token left, keep
 * the unparsed input and stop reading until a token is back
 * (conn_on_timer).  Returns true when it stopped. */
static bool throttle_begin(cd_conn *c, const uint8_t *data, size_t len)
{
    cd_native *n = c->nat;
    uint64_t now = now_ms(c);
    if (cd_bucket_tokens_milli(&n->rate, now) >= 1000)
        return false;
    if (!(c->flags & F_THROTTLED))
        cd_log(log_of(c), CD_LOG_WARN, "rate_limited", "conn=%llu user=%s policy=%s",
               (unsigned long long)c->id, n->member.user, "throttle");
    if (cd_bytes_append(&n->held, data, len) != 0) {
        conn_destroy(c);
        return true;
    }
    c->flags |= F_THROTTLED | F_READ_PAUSED;
    set_io_mask(c);
    if (c->state != ST_DEAD)
        arm_timer(c, now + cd_bucket_next_ms(&n->rate, now, 1));
    return true;
}

static void handle_event(cd_conn *c, const cd_ws_event *ev)
{
    if (c->kind == KIND_NATIVE && c->state == ST_WS && ev->type != CD_WS_EV_CLOSE &&
        !rate_take(c))
        return;
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
    if (code == CD_WS_CLOSE_TOO_BIG && c->kind == KIND_NATIVE && !(c->flags & F_CLOSE_SENT)) {
        /* The protocol promises the reason as an error frame first. */
        cd_frame *f = cd_proto_json_error_frame(NULL, 0, "MessageTooLarge", reason);
        if (f == NULL || queue_frame(c, f, false) != 0)
            return;
    }
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
    bool throttling = c->state == ST_WS && is_throttling(c);
    while (c->state == ST_WS || c->state == ST_CLOSING) {
        if (throttling && len > 0 && c->state == ST_WS && throttle_begin(c, data, len))
            break;
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

/* Tokens are back: handle what was held, then read again. */
static void throttle_resume(cd_conn *c)
{
    cd_bytes held = c->nat->held;
    c->nat->held = (cd_bytes)CD_BYTES_INIT;
    if (held.len > 0)
        ws_feed(c, held.data, held.len);
    cd_bytes_free(&held);
    if (c->state == ST_DEAD || c->nat->held.len > 0)
        return; /* throttled again: throttle_begin re-armed the timer */
    c->flags &= (uint16_t)~F_THROTTLED;
    if (c->state == ST_WS &&
        cd_sendq_bytes(&c->sq) <= QUEUE_LOW_BYTES) {
        c->flags &= (uint16_t)~F_READ_PAUSED;
        set_io_mask(c);
    }
}

/* Count a direct client's request head in progress (slow-loris cap); a
 * trusted proxy carries many clients' handshakes and is not counted.
 * Returns false after refusing the connection. */
static bool take_pending(cd_conn *c)
{
    cd_admit *a = &srv_of(c)->admit;
    if (cd_admit_is_trusted(a, c->ip))
        return true;
    if (!cd_admit_pending_take(a, c->ip)) {
        cd_admit_verdict v = {.status = 429, .code = "Overloaded", .kind = "pending",
                              .reason = "too many handshakes in progress from this address"};
        refuse_admission(c, &v);
        return false;
    }
    c->flags |= F_PENDING_HELD;
    return true;
}

/* The PROXY header of a trusted proxy: it names the client; the rest of
 * the input is the HTTP request. */
static void proxy_feed(cd_conn *c, uint8_t *data, size_t len)
{
    size_t used = 0;
    int rc = cd_proxy_parse(c->proxy, data, len, &used);
    if (rc == CD_PROXY_NEED_MORE)
        return;
    if (rc == CD_PROXY_ERROR) {
        char ip[64];
        cd_admit_ip_format(c->ip, ip, sizeof(ip));
        cd_log(log_of(c), CD_LOG_WARN, "proxy_header_invalid", "conn=%llu ip=%s reason=%s",
               (unsigned long long)c->id, ip, c->proxy->error_reason);
        conn_destroy(c);
        return;
    }
    uint8_t ip[16];
    if (c->proxy->has_addr && cd_admit_ip16_from_addr(ip, &c->proxy->src))
        memcpy(c->ip, ip, sizeof(ip));
    free(c->proxy);
    c->proxy = NULL;
    c->state = ST_HTTP;
    if (take_pending(c) && len > used)
        http_feed(c, data + used, len - used);
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
    case ST_PROXY:
        proxy_feed(c, w->rbuf, (size_t)n);
        break;
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

/* The authentication deadlines of a native connection: the in-band auth
 * deadline (required mode), the TokenExpiring warning and the token's
 * expiry.  Returns the milliseconds until the next one (UINT32_MAX: none),
 * or 0 after closing the connection. */
static uint32_t auth_deadlines(cd_conn *c)
{
    cd_native *n = c->nat;
    if (c->kind != KIND_NATIVE || n == NULL)
        return UINT32_MAX;
    if (n->is_auth_pending) {
        if (!is_past(c, n->auth_deadline))
            return n->auth_deadline - now32(c);
        cd_log(log_of(c), CD_LOG_INFO, "auth_timeout", "conn=%llu", (unsigned long long)c->id);
        error_close(c, "Unauthorized", "no token within auth_timeout", CD_WS_CLOSE_POLICY,
                    "authentication timeout");
        return 0;
    }
    if (!n->has_exp)
        return UINT32_MAX;
    const conduit_options *o = &srv_of(c)->opt;
    int64_t now = wall_ms();
    int64_t exp_ms = (n->exp_s + (int64_t)o->jwt_leeway_s) * 1000;
    if (now >= exp_ms) {
        cd_log(log_of(c), CD_LOG_INFO, "token_expired", "conn=%llu user=%s",
               (unsigned long long)c->id, n->member.user);
        error_close(c, "Unauthorized", "token expired", CD_WS_CLOSE_POLICY, "token expired");
        return 0;
    }
    int64_t wait = exp_ms - now;
    if (!n->is_expiry_warned && o->token_expiring_warning_s > 0) {
        int64_t warn_ms = n->exp_s * 1000 - (int64_t)o->token_expiring_warning_s * 1000;
        if (now >= warn_ms) {
            n->is_expiry_warned = true;
            cd_frame *f = cd_proto_json_warning_frame(
                "TokenExpiring", "the token expires soon; send auth with a new one",
                "expires_at", (uint64_t)n->exp_s);
            if (f == NULL || cd_conn_send_frame(c, f) != 0)
                return 0;
        } else {
            wait = CD_MIN(wait, warn_ms - now);
        }
    }
    return (uint32_t)CD_MIN(CD_MAX(wait, 1), INT64_C(1) << 30);
}

/* One timer per connection covers every deadline of its current state. */
static void conn_on_timer(cd_timer *t, void *arg)
{
    CD_UNUSED(arg);
    cd_conn *c = CD_CONTAINER_OF(t, cd_conn, timer);
    const conduit_options *o = &srv_of(c)->opt;

    switch (c->state) {
    case ST_PROXY:
    case ST_HTTP:
        if (!is_past(c, c->deadline)) {
            arm_timer(c, abs_ms(c, c->deadline));
        } else if ((c->flags & F_GOT_BYTES) && c->state == ST_HTTP) {
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

    if (c->flags & F_THROTTLED) {
        uint64_t next = cd_bucket_next_ms(&c->nat->rate, now_ms(c), 1);
        if (next > 0) {
            arm_timer(c, now_ms(c) + next);
            return;
        }
        throttle_resume(c);
        if (c->state != ST_WS || (c->flags & F_THROTTLED))
            return;
    }
    uint32_t auth_wait = auth_deadlines(c);
    if (auth_wait == 0 || c->state != ST_WS)
        return;
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
    uint32_t wait = auth_wait;
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
    /* A proxy carries many clients' handshakes: only direct peers are
     * capped on request heads in progress (slow-loris). */
    cd_admit *a = &w->srv->admit;
    if (!cd_admit_ip16_from_addr(c->ip, peer))
        return 0; /* not an IP peer: nothing to count */
    if (w->srv->opt.proxy_protocol && cd_admit_is_trusted(a, c->ip)) {
        if ((c->proxy = malloc(sizeof(*c->proxy))) == NULL) {
            conn_destroy(c);
            return CONDUIT_ENOMEM;
        }
        cd_proxy_parser_init(c->proxy);
        c->state = ST_PROXY;
        return 0;
    }
    take_pending(c);
    return 0;
}

void cd_conn_close_all(cd_worker *w, uint16_t code, const char *reason)
{
    cd_conn *next;
    for (cd_conn *c = w->conns; c; c = next) {
        next = c->next;
        if (c->state == ST_WS)
            send_close(c, code, reason, true);
        else if (c->state == ST_HTTP || c->state == ST_PROXY)
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

const char *cd_conn_may(cd_conn *c, const char *channel, size_t len, conduit_action action,
                        const cd_ns_options *ns)
{
    const cd_native *n = c->nat;
    const char *why = NULL;
    if (n->is_anonymous && !ns->anonymous)
        why = "anonymous connections may not use this namespace";
    else if (!cd_auth_user_channel_allowed(n->is_anonymous ? NULL : n->member.user, channel, len))
        why = "this channel is limited to the users it names";
    else if (action == CONDUIT_ACTION_SUBSCRIBE && n->grants && n->grants->has_channels &&
             !grants_match(n->grants->pat, n->grants->n_channels, channel, len))
        why = "the token does not grant this channel";
    else if (action == CONDUIT_ACTION_PUBLISH && n->grants && n->grants->has_publish &&
             !grants_match(n->grants->pat + n->grants->n_channels, n->grants->n_publish,
                           channel, len))
        why = "the token does not grant publishing to this channel";
    else if (action == CONDUIT_ACTION_PUBLISH && ns->publish_requires_subscribe &&
             !cd_hub_is_subscribed(&n->member, channel, len))
        why = "only subscribers may publish to this channel";
    const conduit_callbacks *cb = &srv_of(c)->cb;
    if (why == NULL && cb->check_permission &&
        cb->check_permission(c, n->member.user, channel, len, action, cb->user) != 0)
        why = "refused by the application";
    if (why) {
        char name[CD_CHANNEL_MAX_LEN + 1];
        size_t k = CD_MIN(len, sizeof(name) - 1);
        memcpy(name, channel, k);
        name[k] = '\0';
        cd_log(log_of(c), CD_LOG_INFO, "permission_denied",
               "conn=%llu user=%s channel=%s action=%s reason=%s", (unsigned long long)c->id,
               n->member.user, name, action == CONDUIT_ACTION_PUBLISH ? "publish" : "subscribe",
               why);
    }
    return why;
}

bool cd_conn_is_auth_pending(const cd_conn *c) { return c->nat && c->nat->is_auth_pending; }
int64_t cd_conn_token_exp(const cd_conn *c) { return c->nat && c->nat->has_exp ? c->nat->exp_s : 0; }

/* An anonymous connection that was already open becomes `user`: it
 * leaves as the old user and joins its channels again as the new one. */
static int reidentify(cd_conn *c, char *user)
{
    cd_native *n = c->nat;
    conduit_server *srv = srv_of(c);
    size_t k = 0, cap = n->member.n_subs;
    char **names = cap ? calloc(cap, sizeof(char *)) : NULL;
    if (cap && names == NULL)
        return CONDUIT_ENOMEM;
    for (const cd_sub *s = cd_hub_member_first(&n->member); s && k < cap;
         s = cd_hub_member_next(s)) {
        size_t len;
        const char *name = cd_hub_sub_channel(s, &len);
        if ((names[k] = strndup(name, len)) == NULL)
            break;
        k++;
    }
    cd_hub_member_gone(srv->hub, &n->member);
    free((char *)n->member.user);
    n->member.user = user;
    cd_hub_member_online(srv->hub, &n->member);
    for (size_t i = 0; i < k; i++) {
        bool was = false;
        (void)cd_hub_subscribe(srv->hub, &n->member, names[i], strlen(names[i]), &was);
        free(names[i]);
    }
    free(names);
    return 0;
}

int cd_conn_authenticate(cd_conn *c, const char *token, size_t len, const char **code,
                         const char **msg)
{
    cd_native *n = c->nat;
    conduit_server *srv = srv_of(c);
    char user[CD_JWT_MAX_SUB + 1] = "";
    cd_grants *g = NULL;
    int64_t exp_s = 0;
    const char *why = NULL;
    *code = "Unauthorized";
    if (verify_token(c, token, len, user, sizeof(user), &g, &exp_s, &why) != 0) {
        char ip[64];
        cd_admit_ip_format(c->ip, ip, sizeof(ip));
        cd_log(log_of(c), CD_LOG_INFO, "auth_failed", "conn=%llu ip=%s reason=%s",
               (unsigned long long)c->id, ip, why);
        *msg = why;
        return CONDUIT_EDENIED;
    }
    if (!n->is_anonymous && strcmp(user, n->member.user) != 0) {
        free(g);
        *code = "Forbidden";
        *msg = "the token is for another user than this connection's";
        return CONDUIT_EDENIED;
    }
    if (n->is_anonymous) {
        cd_admit_verdict v;
        cd_admit_user(&srv->admit, user, &v);
        char *u = v.status ? NULL : strdup(user);
        if (u == NULL) {
            free(g);
            if (!v.status) {
                *code = "Internal";
                *msg = "out of memory";
                return CONDUIT_ENOMEM;
            }
            cd_log(log_of(c), CD_LOG_WARN, "connection_limit", "conn=%llu kind=user user=%s",
                   (unsigned long long)c->id, user);
            error_close(c, "Overloaded", v.reason, CD_WS_CLOSE_POLICY, "too many connections");
            *code = NULL;
            return CONDUIT_ELIMIT;
        }
        if (c->flags & F_OPENED) {
            if (reidentify(c, u) != 0) {
                free(u);
                free(g);
                cd_admit_user_release(&srv->admit, user);
                *code = "Internal";
                *msg = "out of memory";
                return CONDUIT_ENOMEM;
            }
        } else {
            free((char *)n->member.user);
            n->member.user = u;
        }
        c->flags |= F_USER_HELD;
        n->is_anonymous = false;
    }
    free(n->grants);
    n->grants = g;
    n->exp_s = exp_s;
    n->has_exp = exp_s != 0;
    n->is_expiry_warned = false;
    if (n->is_auth_pending) {
        n->is_auth_pending = false;
        c->flags |= F_OPENED;
        char *room = n->pending_room;
        n->pending_room = NULL;
        cd_proto_json_open(c, room, room ? strlen(room) : 0);
        free(room);
        if (c->state != ST_WS)
            return 0;
    }
    conn_on_timer(&c->timer, NULL); /* re-arm for the new token's deadlines */
    return 0;
}

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
    else if (c->state == ST_HTTP || c->state == ST_PROXY)
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
