/* api.h - answers to plain HTTP requests (no upgrade): health, and later
 * stats, metrics and the HTTP API.  Pure: request in, reply out. */
#ifndef CD_API_H
#define CD_API_H

#include <stdbool.h>
#include <stddef.h>

#include "http.h"
#include "server.h"

typedef struct cd_http_reply {
    int status;
    const char *content_type;
    const char *extra_headers;   /* lines ending in CRLF, or NULL */
    const char *body;            /* static text */
    size_t body_len;
} cd_http_reply;

/* Decide the reply to a request that did not ask for an upgrade. */
void cd_api_handle(conduit_server *srv, const cd_http_parser *req,
                   cd_http_reply *out);

#endif
