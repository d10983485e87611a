/* server.h - the server and its workers (internal).
 *
 * A conduit_server owns N workers; each worker is one thread with one
 * event loop, one listening socket per listen address (SO_REUSEPORT), one
 * shared read buffer and every connection it accepted.  Nothing here is
 * shared between workers except the read-only configuration. */
#ifndef CD_SERVER_H
#define CD_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "admit.h"
#include "auth.h"
#include "buf.h"
#include "conduit.h"
#include "deflate.h"
#include "hub.h"
#include "idmap.h"
#include "log.h"
#include "loop.h"
#include "net.h"
#include "sendq.h"
#include "upgrade.h"
#include "ws.h"

typedef struct conduit_conn cd_conn;
typedef struct cd_worker cd_worker;

/* Per-endpoint WebSocket settings, derived once from the options. */
typedef struct cd_endpoint {
    cd_ws_limits limits;
    cd_upgrade_config upgrade;
} cd_endpoint;

typedef struct cd_listener {
    cd_io io;
    cd_timer pause_timer;        /* re-enables accept after EMFILE */
    cd_worker *w;
    int index;                   /* into the server's listen addresses */
} cd_listener;

struct cd_worker {
    conduit_server *srv;
    cd_loop *loop;
    pthread_t thread;
    unsigned id;
    bool is_running;
    cd_listener listeners[CONDUIT_MAX_LISTEN];
    size_t n_listeners;
    uint8_t *rbuf;               /* shared by every connection of the worker */
    cd_http_parser *http_scratch; /* parses request heads that arrive whole */
    char *token_scratch;         /* a handshake's token (CD_JWT_MAX_TOKEN_LEN + 1) */
    cd_jwt_keyset *keys;         /* this worker's reference; swapped on reload */
    size_t rbuf_cap;
    cd_bytes scratch;            /* compression output, reused */
    cd_idmap conns_by_id;        /* for conduit_send from other threads */
    cd_sendq_pool sq_pool;       /* send-queue states, reused */
    cd_conn *conns;              /* every live connection */
    cd_conn **flushq;            /* connections that queued bytes this iteration */
    size_t n_flush, cap_flush;
    size_t n_conns;
    uint64_t next_conn_id;
    cd_post stop_post;
};

struct conduit_server {
    conduit_options opt;
    conduit_callbacks cb;
    cd_logger log;
    cd_pmd_config pmd;
    cd_endpoint echo;
    cd_endpoint native;
    cd_hub *hub;
    cd_admit admit;                      /* connection limits, origins, proxies */
    cd_jwt_keyset *keys;                 /* NULL: no JWT key configured; the
                                          * workers hold their own references */
    atomic_size_t n_conns;               /* open connections, all workers */
    uint64_t start_ms;                   /* monotonic, for uptime */
    size_t n_addrs;
    cd_addr addrs[CONDUIT_MAX_LISTEN];   /* bound addresses after start */
    size_t n_workers;
    cd_worker *workers;
    bool is_started;
    atomic_bool is_stopped;              /* read by conduit_publish on any thread */
};

#endif
