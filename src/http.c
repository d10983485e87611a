/* http.c - strict, incremental HTTP/1.1 request-head parser and helpers.
 *
 * cd_http_parse runs one byte at a time through a flat state machine, so
 * every input byte is examined exactly once whatever the split, and no call
 * rescans what an earlier call saw.  Each byte of the head (leading empty
 * lines aside) is copied into p->buf and results are spans into it.
 * Invariants: a byte is counted against its limit before it is stored, so
 * buf can never overflow (see the _Static_assert below); the header being
 * parsed always lives in headers[n_headers], which exists because the
 * 65th header is refused at its first byte.  The helpers below the parser
 * are pure string functions over caller-provided memory. */
#include "http.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

/* RFC 9112 §2.2 asks servers to ignore "at least one" empty line before the
 * request line; a few cover every real client, more is garbage. */
#define MAX_EMPTY_LINES 4

/* Worst case stored: the counted request line, its CR and LF, the counted
 * header lines, and the final empty line's CR and LF. */
_Static_assert(sizeof(((cd_http_parser *)0)->buf) >=
                   CD_HTTP_MAX_REQUEST_LINE + CD_HTTP_MAX_HEADER_BYTES + 4,
               "cd_http_parser.buf cannot hold a head at the limits");
_Static_assert(sizeof(((cd_http_parser *)0)->buf) <= UINT16_MAX,
               "cd_http_span offsets are 16-bit");

enum {
    /* Request-line states: every byte but the terminating CRLF counts
     * against CD_HTTP_MAX_REQUEST_LINE. */
    S_START,        /* before the method; leading empty lines skipped */
    S_EMPTY_LF,     /* CR of a leading empty line seen */
    S_METHOD,
    S_TARGET_START, /* after the SP following the method */
    S_TARGET,
    S_V_NAME,       /* matching "HTTP/" */
    S_V_MAJOR,
    S_V_DOT,
    S_V_MINOR,
    S_RL_CR,        /* version complete, CR expected */
    S_RL_LF,        /* request line's CR seen */
    /* Header states: every byte but the final empty line counts against
     * CD_HTTP_MAX_HEADER_BYTES. */
    S_H_LINE,       /* at the start of a header line or the empty line */
    S_H_NAME,
    S_H_OWS,        /* after ':', skipping leading whitespace */
    S_H_VALUE,
    S_H_LF,         /* header line's CR seen */
    S_END_LF,       /* CR of the empty line seen */
    S_DONE,
    S_ERROR,
};

enum {
    C_TCHAR = 1,  /* RFC 9110 §5.6.2 token character */
    C_TARGET = 2, /* visible ASCII 0x21-0x7E, what origin-form may hold */
    C_VALUE = 4,  /* RFC 9110 §5.5 field-vchar: VCHAR or obs-text */
};

static const uint8_t char_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 10 */
    0, 7, 6, 7, 7, 7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6, /* 20  !"#$%&'()*+,-./ */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6, /* 30 0-9:;<=>? */
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, /* 40 @A-O */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7, /* 50 P-Z[\]^_ */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, /* 60 `a-o */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0, /* 70 p-z{|}~ DEL */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* 80 obs-text */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* 90 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* a0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* b0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* c0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* d0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* e0 */
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, /* f0 */
};

#define IS(cls, c) ((char_class[(uint8_t)(c)] & (cls)) != 0)

void cd_http_parser_init(cd_http_parser *p)
{
    /* buf is only read below len, so clearing it would be 12 KiB of waste
     * per handshake. */
    memset(p, 0, offsetof(cd_http_parser, buf));
    p->state = S_START;
}

static int fail(cd_http_parser *p, int status, const char *reason)
{
    p->state = S_ERROR;
    p->error_status = status;
    p->error_reason = reason;
    return CD_HTTP_ERROR;
}

/* 400 for a byte the current state does not accept; control characters get
 * a reason of their own so logs say what actually arrived. */
static int bad_byte(cd_http_parser *p, uint8_t c, const char *reason)
{
    if (c == 0)
        return fail(p, 400, "NUL byte");
    if (c == '\n')
        return fail(p, 400, "bare LF");
    if ((c < 0x20 && c != '\r' && c != '\t') || c == 0x7f)
        return fail(p, 400, "control character");
    return fail(p, 400, reason);
}

static cd_http_span span(uint32_t from, uint32_t to)
{
    cd_http_span s = {(uint16_t)from, (uint16_t)(to - from)};
    return s;
}

/* Charge c to its limit.  Returns CD_HTTP_NEED_MORE or CD_HTTP_ERROR. */
static int count_byte(cd_http_parser *p, uint8_t c)
{
    uint32_t st = p->state;

    if (st <= S_RL_CR) {
        if (st == S_RL_CR && c == '\r')
            return CD_HTTP_NEED_MORE;
        /* RFC 9112 §3: a server that receives a request-target longer than
         * it wishes to parse MUST respond with 414; we do so at the first
         * byte past the limit instead of waiting for the line to end. */
        if (++p->line_bytes > CD_HTTP_MAX_REQUEST_LINE)
            return fail(p, 414, "request line too long");
        return CD_HTTP_NEED_MORE;
    }
    if (st == S_RL_LF || st == S_END_LF || (st == S_H_LINE && c == '\r'))
        return CD_HTTP_NEED_MORE;
    /* RFC 6585 §5: 431 when the header fields are too large. */
    if (++p->header_bytes > CD_HTTP_MAX_HEADER_BYTES)
        return fail(p, 431, "header section too large");
    return CD_HTTP_NEED_MORE;
}

static int step_request_line(cd_http_parser *p, uint8_t c, uint32_t off)
{
    switch (p->state) {
    case S_METHOD:
        if (c == ' ') {
            p->method = span(p->mark, off);
            p->state = S_TARGET_START;
            return CD_HTTP_NEED_MORE;
        }
        if (!IS(C_TCHAR, c))
            return bad_byte(p, c, "malformed method");
        return CD_HTTP_NEED_MORE;
    case S_TARGET_START:
        /* RFC 9112 §3.2.1: origin-form is an absolute path; the other
         * forms are for proxies (absolute, authority) or OPTIONS (*). */
        if (c != '/')
            return bad_byte(p, c, "request-target is not origin-form");
        p->mark = (uint16_t)off;
        p->path.off = (uint16_t)off;
        p->state = S_TARGET;
        return CD_HTTP_NEED_MORE;
    case S_TARGET:
        if (c == ' ') {
            p->target = span(p->mark, off);
            if (p->query.off == 0)
                p->path = span(p->mark, off);
            else
                p->query = span(p->query.off, off);
            p->mark = (uint16_t)off + 1;
            p->state = S_V_NAME;
            return CD_HTTP_NEED_MORE;
        }
        if (!IS(C_TARGET, c))
            return bad_byte(p, c, "invalid character in request-target");
        /* The query starts after the first '?' (RFC 3986 §3.4); a later
         * '?' is part of it.  query.off != 0 marks "seen", since offset 0
         * is always the method. */
        if (c == '?' && p->query.off == 0) {
            p->path = span(p->mark, off);
            p->query.off = (uint16_t)off + 1;
        }
        return CD_HTTP_NEED_MORE;
    case S_V_NAME:
        /* RFC 9112 §2.3: HTTP-name is "HTTP", case-sensitive. */
        if (c != (uint8_t)"HTTP/"[off - p->mark])
            return bad_byte(p, c, "malformed HTTP version");
        if (off - p->mark == 4)
            p->state = S_V_MAJOR;
        return CD_HTTP_NEED_MORE;
    case S_V_MAJOR:
    case S_V_MINOR:
        if (c < '0' || c > '9')
            return bad_byte(p, c, "malformed HTTP version");
        if (p->state == S_V_MAJOR)
            p->version_major = (uint8_t)(c - '0');
        else
            p->version_minor = (uint8_t)(c - '0');
        p->state = p->state == S_V_MAJOR ? S_V_DOT : S_RL_CR;
        return CD_HTTP_NEED_MORE;
    case S_V_DOT:
        if (c != '.')
            return bad_byte(p, c, "malformed HTTP version");
        p->state = S_V_MINOR;
        return CD_HTTP_NEED_MORE;
    case S_RL_CR:
        if (c != '\r')
            return bad_byte(p, c, "malformed HTTP version");
        p->state = S_RL_LF;
        return CD_HTTP_NEED_MORE;
    case S_RL_LF:
        /* RFC 9112 §2.2: a bare CR is invalid. */
        if (c != '\n')
            return bad_byte(p, c, "bare CR");
        /* RFC 9110 §15.6.6: 505 for a major version we do not support. */
        if (p->version_major != 1)
            return fail(p, 505, "HTTP version not supported");
        p->state = S_H_LINE;
        return CD_HTTP_NEED_MORE;
    default:
        return fail(p, 400, "internal parser state");
    }
}

static int header_line_start(cd_http_parser *p, uint8_t c, uint32_t off)
{
    if (c == '\r') {
        p->state = S_END_LF;
        return CD_HTTP_NEED_MORE;
    }
    /* RFC 9112 §5.2: obsolete line folding may be rejected with 400; before
     * the first field, RFC 9112 §2.2 says the same of whitespace. */
    if (c == ' ' || c == '\t')
        return fail(p, 400, "obsolete line folding");
    if (c == ':')
        return fail(p, 400, "empty header name");
    if (!IS(C_TCHAR, c))
        return bad_byte(p, c, "invalid character in header name");
    if (p->n_headers == CD_HTTP_MAX_HEADERS)
        return fail(p, 431, "too many header fields");
    p->headers[p->n_headers].name.off = (uint16_t)off;
    p->state = S_H_NAME;
    return CD_HTTP_NEED_MORE;
}

static int step_header(cd_http_parser *p, uint8_t c, uint32_t off)
{
    cd_http_header *h = &p->headers[p->n_headers];

    switch (p->state) {
    case S_H_LINE:
        return header_line_start(p, c, off);
    case S_H_NAME:
        if (c == ':') {
            h->name = span(h->name.off, off);
            p->state = S_H_OWS;
            return CD_HTTP_NEED_MORE;
        }
        /* RFC 9112 §5.1: whitespace between the field name and the colon
         * MUST be rejected with 400 (it enables request smuggling). */
        if (c == ' ' || c == '\t')
            return fail(p, 400, "whitespace before colon");
        if (!IS(C_TCHAR, c))
            return bad_byte(p, c, "invalid character in header name");
        return CD_HTTP_NEED_MORE;
    case S_H_OWS:
        if (c == ' ' || c == '\t')
            return CD_HTTP_NEED_MORE;
        if (c == '\r') {
            h->value = span(off, off);
            p->state = S_H_LF;
            return CD_HTTP_NEED_MORE;
        }
        if (!IS(C_VALUE, c))
            return bad_byte(p, c, "invalid character in header value");
        p->mark = (uint16_t)off;
        p->value_end = (uint16_t)off + 1;
        p->state = S_H_VALUE;
        return CD_HTTP_NEED_MORE;
    case S_H_VALUE:
        /* RFC 9112 §5: OWS after the value is not part of it, so only a
         * field-vchar moves value_end. */
        if (c == ' ' || c == '\t')
            return CD_HTTP_NEED_MORE;
        if (c == '\r') {
            h->value = span(p->mark, p->value_end);
            p->state = S_H_LF;
            return CD_HTTP_NEED_MORE;
        }
        /* RFC 9110 §5.5: CR, LF and NUL in a value are invalid; we refuse
         * every other control character too. */
        if (!IS(C_VALUE, c))
            return bad_byte(p, c, "invalid character in header value");
        p->value_end = (uint16_t)off + 1;
        return CD_HTTP_NEED_MORE;
    case S_H_LF:
        if (c != '\n')
            return bad_byte(p, c, "bare CR");
        p->n_headers++;
        p->state = S_H_LINE;
        return CD_HTTP_NEED_MORE;
    case S_END_LF:
        if (c != '\n')
            return bad_byte(p, c, "bare CR");
        p->state = S_DONE;
        return CD_HTTP_DONE;
    default:
        return fail(p, 400, "internal parser state");
    }
}

/* Leading empty lines are neither stored nor part of the request line
 * proper, but count against its limit (done by count_byte). */
static int step_start(cd_http_parser *p, uint8_t c)
{
    if (p->state == S_EMPTY_LF) {
        if (c != '\n')
            return bad_byte(p, c, "bare CR");
        p->state = S_START;
        return CD_HTTP_NEED_MORE;
    }
    if (c == '\r') {
        if (++p->n_empty_lines > MAX_EMPTY_LINES)
            return fail(p, 400, "too many empty lines before request");
        p->state = S_EMPTY_LF;
        return CD_HTTP_NEED_MORE;
    }
    if (!IS(C_TCHAR, c))
        return bad_byte(p, c, "malformed method");
    p->mark = (uint16_t)p->len;
    p->buf[p->len++] = (char)c;
    p->state = S_METHOD;
    return CD_HTTP_NEED_MORE;
}

static int step(cd_http_parser *p, uint8_t c)
{
    int rc = count_byte(p, c);

    if (rc != CD_HTTP_NEED_MORE)
        return rc;
    if (p->state <= S_EMPTY_LF)
        return step_start(p, c);
    uint32_t off = p->len;
    p->buf[p->len++] = (char)c;
    if (p->state <= S_RL_LF)
        return step_request_line(p, c, off);
    return step_header(p, c, off);
}

int cd_http_parse(cd_http_parser *p, const uint8_t *data, size_t len,
                  size_t *consumed)
{
    size_t i = 0;
    int rc = CD_HTTP_NEED_MORE;

    if (p->state == S_DONE || p->state == S_ERROR) {
        rc = p->state == S_DONE ? CD_HTTP_DONE : CD_HTTP_ERROR;
    } else {
        while (i < len && rc == CD_HTTP_NEED_MORE)
            rc = step(p, data[i++]);
    }
    if (consumed != NULL)
        *consumed = i;
    return rc;
}

/* ---- Helpers over parsed heads and header values. ---- */

static uint8_t lower(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? (uint8_t)(c + ('a' - 'A')) : c;
}

/* ASCII case-insensitive equality; locale-independent on purpose. */
static bool ieq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        if (lower((uint8_t)a[i]) != lower((uint8_t)b[i]))
            return false;
    }
    return true;
}

const cd_http_header *cd_http_header_next(const cd_http_parser *p,
                                          const cd_http_header *after,
                                          const char *name)
{
    size_t n = strlen(name);
    size_t i = after == NULL ? 0 : (size_t)(after - p->headers) + 1;

    for (; i < p->n_headers; i++) {
        const cd_http_header *h = &p->headers[i];
        if (ieq(cd_http_str(p, h->name), h->name.len, name, n))
            return h;
    }
    return NULL;
}

const cd_http_header *cd_http_header_find(const cd_http_parser *p,
                                          const char *name)
{
    return cd_http_header_next(p, NULL, name);
}

size_t cd_http_header_count(const cd_http_parser *p, const char *name)
{
    size_t n = strlen(name), count = 0;

    for (size_t i = 0; i < p->n_headers; i++) {
        const cd_http_header *h = &p->headers[i];
        if (ieq(cd_http_str(p, h->name), h->name.len, name, n))
            count++;
    }
    return count;
}

bool cd_http_is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!IS(C_TCHAR, s[i]))
            return false;
    }
    return true;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool list_has(const char *value, size_t len, const char *token,
                     bool fold_case)
{
    size_t tlen = strlen(token), i = 0;

    if (tlen == 0)
        return false;
    while (i < len) {
        size_t start = i;
        while (i < len && value[i] != ',')
            i++;
        size_t end = i++;     /* skip the comma (or step past len) */
        while (start < end && is_ows(value[start]))
            start++;
        while (end > start && is_ows(value[end - 1]))
            end--;
        if (end - start != tlen)
            continue;
        if (fold_case ? ieq(value + start, tlen, token, tlen)
                      : memcmp(value + start, token, tlen) == 0)
            return true;
    }
    return false;
}

bool cd_http_list_has_token(const char *value, size_t len, const char *token)
{
    return list_has(value, len, token, true);
}

bool cd_http_list_has_exact_token(const char *value, size_t len,
                                  const char *token)
{
    return list_has(value, len, token, false);
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)lower((uint8_t)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decode the %-escape at s[i] (s[i] == '%') within [s, s+end).
 * Returns the byte, or -1 for a truncated or non-hex escape. */
static int pct_byte(const char *s, size_t i, size_t end)
{
    if (end - i < 3)
        return -1;
    int hi = hex_val(s[i + 1]), lo = hex_val(s[i + 2]);
    if (hi < 0 || lo < 0)
        return -1;
    return hi << 4 | lo;
}

/* Does the %-decoded [s, s+len) equal name?  A malformed key never does. */
static bool key_matches(const char *s, size_t len, const char *name)
{
    size_t i = 0, j = 0;

    while (i < len) {
        int c = (uint8_t)s[i];
        if (c == '%') {
            if ((c = pct_byte(s, i, len)) < 0)
                return false;
            i += 3;
        } else {
            i++;
        }
        if (name[j] == '\0' || (uint8_t)name[j] != c)
            return false;
        j++;
    }
    return name[j] == '\0';
}

static int decode_value(const char *s, size_t len, char *out, size_t cap)
{
    size_t i = 0, n = 0;

    while (i < len) {
        int c = (uint8_t)s[i];
        if (c == '%') {
            if ((c = pct_byte(s, i, len)) <= 0)
                return -1;        /* malformed, or %00 */
            i += 3;
        } else {
            i++;
        }
        if (n + 1 >= cap)
            return -1;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return (int)n;
}

int cd_http_query_get(const char *query, size_t len, const char *name,
                      char *out, size_t cap)
{
    size_t i = 0;

    if (name[0] == '\0' || cap == 0 || len > INT_MAX)
        return -1;
    while (i < len) {
        size_t start = i, eq = SIZE_MAX;
        while (i < len && query[i] != '&') {
            if (query[i] == '=' && eq == SIZE_MAX)
                eq = i;
            i++;
        }
        size_t end = i++;
        size_t key_end = eq == SIZE_MAX ? end : eq;
        if (!key_matches(query + start, key_end - start, name))
            continue;
        if (eq == SIZE_MAX) {
            out[0] = '\0';
            return 0;
        }
        return decode_value(query + eq + 1, end - eq - 1, out, cap);
    }
    return -1;
}

/* RFC 6265 §4.1.1: cookie-octet excludes CTLs, whitespace, DQUOTE, comma,
 * semicolon and backslash. */
static bool is_cookie_octet(uint8_t c)
{
    return c >= 0x21 && c <= 0x7e && c != '"' && c != ',' && c != ';' &&
           c != '\\';
}

static int copy_cookie(const char *v, size_t len, char *out, size_t cap)
{
    if (len >= 2 && v[0] == '"' && v[len - 1] == '"') {
        v++;
        len -= 2;
    }
    if (len >= cap || len > INT_MAX)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (!is_cookie_octet((uint8_t)v[i]))
            return -1;
        out[i] = v[i];
    }
    out[len] = '\0';
    return (int)len;
}

int cd_http_cookie_get(const char *value, size_t len, const char *name,
                       char *out, size_t cap)
{
    size_t nlen = strlen(name), i = 0;

    if (nlen == 0 || cap == 0)
        return -1;
    while (i < len) {
        size_t start = i;
        while (i < len && value[i] != ';')
            i++;
        size_t end = i++;
        while (start < end && is_ows(value[start]))
            start++;
        while (end > start && is_ows(value[end - 1]))
            end--;
        const char *eq = memchr(value + start, '=', end - start);
        if (eq == NULL)
            continue;
        size_t klen = (size_t)(eq - (value + start));
        while (klen > 0 && is_ows(value[start + klen - 1]))
            klen--;
        if (klen != nlen || memcmp(value + start, name, nlen) != 0)
            continue;
        size_t vstart = (size_t)(eq - value) + 1;
        while (vstart < end && is_ows(value[vstart]))
            vstart++;
        return copy_cookie(value + vstart, end - vstart, out, cap);
    }
    return -1;
}

const char *cd_http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

size_t cd_http_write_response(char *out, size_t cap, int status,
                              const char *content_type, const char *extra,
                              const char *body, size_t body_len, bool close)
{
    /* RFC 9110 §8.6: no Content-Length in 1xx and 204 responses, which
     * cannot have a body either. */
    bool bodyless = status < 200 || status == 204;
    bool has_ct = content_type != NULL;
    char clen[48] = "";
    int n;

    if (status < 100 || status > 999 || (bodyless && body_len != 0))
        return 0;
    if (!bodyless) {
        n = snprintf(clen, sizeof(clen), "Content-Length: %zu\r\n", body_len);
        if (n < 0 || (size_t)n >= sizeof(clen))
            return 0;
    }
    n = snprintf(out, cap, "HTTP/1.1 %d %s\r\n%s%s%s%s%s%s\r\n", status,
                 cd_http_status_text(status), has_ct ? "Content-Type: " : "",
                 has_ct ? content_type : "", has_ct ? "\r\n" : "", clen,
                 close ? "Connection: close\r\n" : "",
                 extra != NULL ? extra : "");
    if (n < 0 || (size_t)n >= cap || body_len > cap - (size_t)n)
        return 0;
    if (body_len > 0)
        memcpy(out + n, body, body_len);
    return (size_t)n + body_len;
}
