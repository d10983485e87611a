/* http.h - strict, incremental HTTP/1.1 request-head parser.
 *
 * A state machine that looks at every input byte exactly once, so parsing is
 * linear in the input however it is split (one byte per call included).  The
 * request head is copied into the parser's own bounded storage and described
 * by offsets into it; nothing else is allocated.  The parser stops at the
 * end of the head: what follows (a WebSocket frame sent in the same segment,
 * or a request body) is left to the caller.
 *
 * Limits (RFC 9112 gives none; these are ours): request line over 4 KiB ->
 * 414; header section over 8 KiB or more than 64 header fields -> 431; NUL,
 * bare CR, bare LF, other control characters, obsolete line folding, or a
 * malformed line -> 400; a version other than HTTP/1.x -> 505. */
#ifndef CD_HTTP_H
#define CD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CD_HTTP_MAX_REQUEST_LINE 4096
#define CD_HTTP_MAX_HEADER_BYTES 8192
#define CD_HTTP_MAX_HEADERS 64

typedef struct cd_http_span {
    uint16_t off;       /* into cd_http_parser.buf */
    uint16_t len;
} cd_http_span;

typedef struct cd_http_header {
    cd_http_span name;  /* as received; compare case-insensitively */
    cd_http_span value; /* leading and trailing whitespace removed */
} cd_http_header;

typedef struct cd_http_parser {
    /* Results, valid once cd_http_parse returned CD_HTTP_DONE. */
    cd_http_span method;
    cd_http_span target;         /* request-target as sent: path?query */
    cd_http_span path;           /* target up to '?' */
    cd_http_span query;          /* after '?', without it; len 0 if none */
    uint8_t version_major;
    uint8_t version_minor;
    uint16_t n_headers;
    cd_http_header headers[CD_HTTP_MAX_HEADERS];
    int error_status;            /* after CD_HTTP_ERROR: 400, 414, 431, 505 */
    const char *error_reason;    /* short static text for logs */
    /* Private state.  Every field above buf is reset by
     * cd_http_parser_init; buf is only ever read up to len. */
    uint32_t state;
    uint32_t line_bytes;         /* request-line bytes so far, leading empty
                                  * lines included, its CRLF excluded */
    uint32_t header_bytes;       /* header-line bytes so far, CRLFs included,
                                  * the final empty line excluded */
    uint32_t len;                /* bytes used in buf */
    uint16_t mark;               /* offset where the current element began */
    uint16_t value_end;          /* offset past the last non-OWS value byte */
    uint8_t n_empty_lines;       /* leading empty lines skipped so far */
    /* The head as received, minus leading empty lines; see the size
     * argument next to the _Static_assert in http.c. */
    char buf[CD_HTTP_MAX_REQUEST_LINE + CD_HTTP_MAX_HEADER_BYTES + 64];
} cd_http_parser;

enum {
    CD_HTTP_NEED_MORE = 0,
    CD_HTTP_DONE = 1,
    CD_HTTP_ERROR = -1,
};

void cd_http_parser_init(cd_http_parser *p);

/* Feed bytes.  Returns CD_HTTP_DONE when the head is complete (*consumed is
 * the number of bytes of `data` that belonged to it), CD_HTTP_NEED_MORE when
 * all of `data` was consumed without completing it, or CD_HTTP_ERROR with
 * p->error_status set.  Calling again after DONE or ERROR returns the same. */
int cd_http_parse(cd_http_parser *p, const uint8_t *data, size_t len,
                  size_t *consumed);

/* Pointer to the bytes of a span (not NUL-terminated). */
static inline const char *cd_http_str(const cd_http_parser *p, cd_http_span s)
{
    return p->buf + s.off;
}

/* First header named `name` (case-insensitive), or NULL. */
const cd_http_header *cd_http_header_find(const cd_http_parser *p,
                                          const char *name);
/* The next header named `name` after `after` (NULL: from the first), or
 * NULL; walks every line of a field sent on several lines. */
const cd_http_header *cd_http_header_next(const cd_http_parser *p,
                                          const cd_http_header *after,
                                          const char *name);
/* Number of header fields named `name`. */
size_t cd_http_header_count(const cd_http_parser *p, const char *name);

/* True when the comma-separated token list in `value` contains `token`,
 * compared case-insensitively (e.g. Connection: keep-alive, Upgrade).
 * Whitespace around items and empty items ("a, ,b") are ignored
 * (RFC 9110 §5.6.1); an item matches only as a whole. */
bool cd_http_list_has_token(const char *value, size_t len, const char *token);

/* The same, but compared case-sensitively, as Sec-WebSocket-Protocol
 * values are (RFC 6455 §4.1). */
bool cd_http_list_has_exact_token(const char *value, size_t len,
                                  const char *token);

/* True when [s, s+len) is a non-empty RFC 9110 §5.6.2 token. */
bool cd_http_is_token(const char *s, size_t len);

/* Find query parameter `name` in a query string ("a=1&b=2", without the
 * '?'); percent-decode its value into out (NUL-terminated).  Keys are
 * compared after percent-decoding, and the first match wins; a key with no
 * '=' has the empty value.  '+' is kept as a literal '+' (it means a space
 * only in HTML form bodies, not in RFC 3986 query strings).  Returns the
 * decoded length, or -1 when the parameter is absent, its value has a bad
 * %-escape or decodes to a NUL byte (which would truncate it for C string
 * users), or it does not fit in cap (the NUL included). */
int cd_http_query_get(const char *query, size_t len, const char *name,
                      char *out, size_t cap);

/* Find cookie `name` in a Cookie header value (RFC 6265 §4.2.1
 * cookie-string "a=b; c=d"); copy its value into out (NUL-terminated),
 * without the optional surrounding DQUOTEs.  Names are case-sensitive and
 * the first match wins; pairs without '=' are skipped (RFC 6265 §5.2).
 * Returns the value length, or -1 when absent, when the value holds a byte
 * that is not a cookie-octet, or when it does not fit in cap. */
int cd_http_cookie_get(const char *value, size_t len, const char *name,
                       char *out, size_t cap);

/* Standard reason phrase for a status code ("Not Found"), "Unknown" else. */
const char *cd_http_status_text(int status);

/* Write a complete HTTP/1.1 response: status line, Content-Type (omitted
 * when content_type is NULL), Content-Length, "Connection: close" when
 * close is true, the optional extra header lines (each ending in CRLF; NULL
 * for none), and the body.  1xx and 204 responses get no Content-Length and
 * must have no body (RFC 9110 §8.6).  Returns the length, or 0 if cap is
 * too small or status is not a 3-digit code. */
size_t cd_http_write_response(char *out, size_t cap, int status,
                              const char *content_type, const char *extra,
                              const char *body, size_t body_len, bool close);

#endif
