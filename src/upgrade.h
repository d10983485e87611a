/* upgrade.h - the WebSocket opening handshake (RFC 6455 §4.2).
 *
 * Checks a parsed request head against the handshake rules, negotiates the
 * subprotocol and permessage-deflate, and writes the 101 response.  Pure:
 * no sockets, no clock.  Every response other than 101 is written by
 * cd_http_write_response (http.h) with "Connection: close". */
#ifndef CD_UPGRADE_H
#define CD_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>

#include "deflate.h"
#include "http.h"

#define CD_WS_ACCEPT_LEN 28

typedef struct cd_upgrade_config {
    const char *const *subprotocols;  /* server's list, in preference order */
    size_t n_subprotocols;
    const cd_pmd_config *pmd;         /* NULL or !enabled: never negotiate */
} cd_upgrade_config;

typedef struct cd_upgrade_result {
    int status;                       /* 101, or the HTTP error status */
    const char *reason;               /* static text for logs and the body */
    const char *extra_header;         /* e.g. "Sec-WebSocket-Version: 13\r\n" or NULL */
    int subprotocol;                  /* index into config list, -1 for none */
    bool subprotocol_requested;       /* the client sent Sec-WebSocket-Protocol */
    bool has_pmd;
    cd_pmd_params pmd;
    char pmd_response[CD_PMD_RESPONSE_MAX];           /* Sec-WebSocket-Extensions value */
    char accept[CD_WS_ACCEPT_LEN + 1];
} cd_upgrade_result;

/* True when the request asks for a WebSocket upgrade at all (an Upgrade
 * header whose token list contains "websocket"); used to route a request to
 * the handshake or to the plain HTTP handlers. */
bool cd_upgrade_is_requested(const cd_http_parser *req);

/* Validate the handshake.  Fills *out; returns out->status.
 * Failures: method other than GET -> 405 (with "Allow: GET"); HTTP/1.0 ->
 * 400; missing or repeated Host -> 400; Upgrade without the websocket token
 * or Connection without the upgrade token -> 400; Sec-WebSocket-Key missing,
 * repeated or not base64 of exactly 16 bytes -> 400; Sec-WebSocket-Version
 * missing or not 13 -> 426 with "Sec-WebSocket-Version: 13"; 500 only if
 * OpenSSL cannot compute SHA-1.  The checks run in that order, so a request
 * with several faults always gets the first one's answer.  On 101, the
 * subprotocol is the first entry of the server's list that the client
 * offered (compared case-sensitively), and permessage-deflate is
 * negotiated by cd_pmd_negotiate over all Sec-WebSocket-Extensions lines
 * joined with ", ".  A key must be canonical base64 (22 characters of the
 * standard alphabet, zero pad bits, then "=="). */
int cd_upgrade_check(const cd_http_parser *req, const cd_upgrade_config *cfg,
                     cd_upgrade_result *out);

/* Sec-WebSocket-Accept for a key (base64(SHA-1(key + GUID))).  out is the
 * empty string for a key over 64 bytes (a valid one has 24) or if OpenSSL
 * fails. */
void cd_upgrade_accept_key(const char *key, size_t len,
                           char out[CD_WS_ACCEPT_LEN + 1]);

/* Write the 101 response for a successful check into out.  The
 * subprotocol string comes from the server's list, never from the request.
 * Returns the length, or 0 if cap is too small. */
size_t cd_upgrade_write_101(const cd_upgrade_result *r,
                            const cd_upgrade_config *cfg, char *out,
                            size_t cap);

#endif
