/* conn.h - one client connection: socket <-> HTTP <-> WebSocket codec.
 *
 * A connection belongs to the worker that accepted it and is touched only
 * on that worker's thread.  It moves through HTTP (reading the request
 * head) -> WS (open) -> CLOSING (our close frame sent, waiting for the
 * peer's) -> LINGER (our FIN sent, discarding input until the peer's FIN or
 * a timeout).  Memory is released by a deferred free after the current
 * batch of events, so a pointer held in a fetched event is never dangling. */
#ifndef CD_CONN_H
#define CD_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "hub.h"
#include "net.h"
#include "proto.h"
#include "server.h"

/* Take over an accepted socket.  Returns 0, or an error after closing it. */
int cd_conn_accept(cd_worker *w, int fd, const cd_addr *peer);
/* Write what every connection queued this iteration (one writev each,
 * bounded); the worker's before-sleep hook. */
void cd_conn_flush_all(cd_worker *w);
/* Close every connection: open WebSockets get `code` (1001 on shutdown),
 * connections still in HTTP are dropped. */
void cd_conn_close_all(cd_worker *w, uint16_t code, const char *reason);
/* Drop every connection now (the worker is about to exit). */
void cd_conn_destroy_all(cd_worker *w);

/* The id of a connection, for the worker's id map. */
uint64_t cd_conn_key(const void *conn);

/* For the protocol layer (the connection's worker thread only). */
uint64_t cd_conn_id(const cd_conn *c);
const char *cd_conn_user(const cd_conn *c);
cd_member *cd_conn_member(cd_conn *c);
cd_worker *cd_conn_worker(const cd_conn *c);
cd_proto_state *cd_conn_proto(cd_conn *c);
uint64_t cd_conn_now_ms(const cd_conn *c);
size_t cd_conn_queued_bytes(const cd_conn *c);
/* In-band authentication (auth, or hello with a token): verify, become
 * the token's user (an anonymous connection), refresh the permissions and
 * expiry, open a connection that was waiting for it.  Returns 0; or an
 * error with *code / *msg for the error reply (*code NULL: the connection
 * was closed with its own error).  docs/security.md. */
int cd_conn_authenticate(cd_conn *c, const char *token, size_t len, const char **code,
                         const char **msg);
bool cd_conn_is_auth_pending(const cd_conn *c);
/* The token's exp (seconds since the epoch), 0 when none. */
int64_t cd_conn_token_exp(const cd_conn *c);
/* May this native connection do `action` on channel[0..len) (namespace
 * options ns)?  NULL when allowed, else a static reason for a Forbidden
 * error (logged as permission_denied).  docs/security.md. */
const char *cd_conn_may(cd_conn *c, const char *channel, size_t len, conduit_action action,
                        const cd_ns_options *ns);
/* Queue a data frame, taking over the reference.  Returns 0,
 * CONDUIT_ECLOSED (not open: the frame is dropped) or CONDUIT_ELIMIT (the
 * queue overflowed: the connection is closed with 4008). */
int cd_conn_send_frame(cd_conn *c, cd_frame *f);
/* Start a close handshake with `code`. */
void cd_conn_close(cd_conn *c, uint16_t code, const char *reason);

/* Hub callbacks (ctx is the server). */
void cd_conn_deliver(void *ctx, cd_member *m, cd_frame *f);
void cd_conn_deliver_all(void *ctx, unsigned worker, cd_frame *f, uint64_t exclude_conn);

#endif
