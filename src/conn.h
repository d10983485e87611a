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

#include "net.h"
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

#endif
