/* test_http.c - the request-head parser fed whole, split at every byte
 * boundary and one byte per call (results must be identical), its limits
 * exactly at and one past the edge, and the string helpers. */
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "test.h"

typedef struct outcome {
    int rc;
    size_t consumed;       /* bytes of the input that were consumed in all */
    int status;
} outcome;

/* Feed d in pieces whose ends are listed in cuts (ascending, the last one
 * is the input length); stop at DONE or ERROR like a real caller would. */
static outcome feed_cuts(cd_http_parser *p, const uint8_t *d,
                         const size_t *cuts, size_t n_cuts)
{
    outcome o = {CD_HTTP_NEED_MORE, 0, 0};
    size_t from = 0;

    cd_http_parser_init(p);
    for (size_t i = 0; i < n_cuts && o.rc == CD_HTTP_NEED_MORE; i++) {
        size_t used = 0;
        o.rc = cd_http_parse(p, d + from, cuts[i] - from, &used);
        if (o.rc == CD_HTTP_NEED_MORE && used != cuts[i] - from)
            o.rc = 99;     /* NEED_MORE must consume everything */
        o.consumed += used;
        from = cuts[i];
    }
    o.status = p->error_status;
    return o;
}

static outcome feed_split(cd_http_parser *p, const uint8_t *d, size_t len,
                          size_t cut)
{
    size_t cuts[2] = {cut, len};
    return feed_cuts(p, d, cuts, 2);
}

static outcome feed_bytewise(cd_http_parser *p, const uint8_t *d, size_t len)
{
    outcome o = {CD_HTTP_NEED_MORE, 0, 0};

    cd_http_parser_init(p);
    for (size_t i = 0; i < len && o.rc == CD_HTTP_NEED_MORE; i++) {
        size_t used = 0;
        o.rc = cd_http_parse(p, d + i, 1, &used);
        if (used != 1)
            o.rc = 98;     /* every byte must be examined and consumed */
        o.consumed += used;
    }
    o.status = p->error_status;
    return o;
}

static bool span_eq(cd_http_span a, cd_http_span b)
{
    return a.off == b.off && a.len == b.len;
}

/* Two parsers that reached DONE agree on every result. */
static bool same_result(const cd_http_parser *a, const cd_http_parser *b)
{
    if (!span_eq(a->method, b->method) || !span_eq(a->target, b->target) ||
        !span_eq(a->path, b->path) || !span_eq(a->query, b->query) ||
        a->version_major != b->version_major ||
        a->version_minor != b->version_minor || a->n_headers != b->n_headers ||
        a->len != b->len || memcmp(a->buf, b->buf, a->len) != 0)
        return false;
    for (size_t i = 0; i < a->n_headers; i++) {
        if (!span_eq(a->headers[i].name, b->headers[i].name) ||
            !span_eq(a->headers[i].value, b->headers[i].value))
            return false;
    }
    return true;
}

static bool same_outcome(outcome a, outcome b)
{
    return a.rc == b.rc && a.consumed == b.consumed && a.status == b.status;
}

/* The reference parse of the last check_req call, for span checks. */
static cd_http_parser ref;
static cd_http_parser other;

/* Parse whole, at every split and bytewise; all must agree with the whole
 * parse, which must give want_rc (and want_status on error).  Returns the
 * whole parse's consumed count. */
static size_t check_req_n(const char *req, size_t len, int want_rc,
                          int want_status, int line)
{
    const uint8_t *d = (const uint8_t *)req;
    size_t all = len;
    outcome w = feed_cuts(&ref, d, &all, 1);
    int bad_splits = 0;

    if (w.rc != want_rc || (want_rc == CD_HTTP_ERROR && w.status != want_status))
        TEST_FAIL_AT(__FILE__, line, "rc %d status %d (%s), want %d/%d", w.rc,
                     w.status, ref.error_reason ? ref.error_reason : "-",
                     want_rc, want_status);
    for (size_t cut = 1; cut < len; cut++) {
        outcome s = feed_split(&other, d, len, cut);
        if (!same_outcome(s, w) || (w.rc == CD_HTTP_DONE && !same_result(&ref, &other)))
            bad_splits++;
    }
    outcome b = feed_bytewise(&other, d, len);
    if (!same_outcome(b, w) || (w.rc == CD_HTTP_DONE && !same_result(&ref, &other)))
        bad_splits++;
    if (bad_splits)
        TEST_FAIL_AT(__FILE__, line, "%d splits disagree with the whole parse",
                     bad_splits);
    return w.consumed;
}

#define CHECK_REQ(req, rc, status) \
    check_req_n((req), strlen(req), (rc), (status), __LINE__)
#define CHECK_OK(req) CHECK_REQ((req), CD_HTTP_DONE, 0)
#define CHECK_400(req) CHECK_REQ((req), CD_HTTP_ERROR, 400)

static bool span_is(const cd_http_parser *p, cd_http_span s, const char *want)
{
    return s.len == strlen(want) && memcmp(cd_http_str(p, s), want, s.len) == 0;
}

/* n copies of c, NUL-terminated, on the heap. */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    if (s == NULL)
        abort();
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

TEST(test_simple_request)
{
    const char *req = "GET /chat?room=a&x=%20 HTTP/1.1\r\n"
                      "Host: example.com\r\n"
                      "Upgrade:websocket\r\n"
                      "X-Pad: \t  padded value \t \r\n"
                      "X-Empty:\r\n"
                      "X-Blank:    \r\n"
                      "\r\n";
    size_t n = CHECK_OK(req);

    CHECK_EQ(n, strlen(req));
    CHECK(span_is(&ref, ref.method, "GET"));
    CHECK(span_is(&ref, ref.target, "/chat?room=a&x=%20"));
    CHECK(span_is(&ref, ref.path, "/chat"));
    CHECK(span_is(&ref, ref.query, "room=a&x=%20"));
    CHECK_EQ(ref.version_major, 1);
    CHECK_EQ(ref.version_minor, 1);
    CHECK_EQ(ref.n_headers, 5);
    CHECK(span_is(&ref, ref.headers[0].name, "Host"));
    CHECK(span_is(&ref, ref.headers[0].value, "example.com"));
    CHECK(span_is(&ref, ref.headers[1].value, "websocket"));
    CHECK(span_is(&ref, ref.headers[2].value, "padded value"));
    CHECK(span_is(&ref, ref.headers[3].name, "X-Empty"));
    CHECK_EQ(ref.headers[3].value.len, 0);
    CHECK_EQ(ref.headers[4].value.len, 0);
}

TEST(test_path_and_query_forms)
{
    CHECK_OK("GET / HTTP/1.1\r\n\r\n");
    CHECK(span_is(&ref, ref.path, "/"));
    CHECK_EQ(ref.query.len, 0);
    CHECK_EQ(ref.n_headers, 0);

    CHECK_OK("GET /a? HTTP/1.1\r\n\r\n");
    CHECK(span_is(&ref, ref.path, "/a"));
    CHECK_EQ(ref.query.len, 0);

    CHECK_OK("GET /a?b?c=d HTTP/1.1\r\n\r\n");
    CHECK(span_is(&ref, ref.path, "/a"));
    CHECK(span_is(&ref, ref.query, "b?c=d"));

    CHECK_OK("OPTIONS /?x HTTP/1.0\r\n\r\n");
    CHECK(span_is(&ref, ref.method, "OPTIONS"));
    CHECK(span_is(&ref, ref.query, "x"));
    CHECK_EQ(ref.version_minor, 0);

    CHECK_OK("M-SEARCH~ /~!$&'()*+,;=:@[]{}|^`\"<> HTTP/1.9\r\n\r\n");
    CHECK_EQ(ref.version_minor, 9);
}

TEST(test_leftover_bytes)
{
    const char head[] = "GET /ws HTTP/1.1\r\nHost: a\r\n\r\n";
    const char wire[] = "GET /ws HTTP/1.1\r\nHost: a\r\n\r\n\x81\x05hello\r\n\r\n";
    size_t hl = sizeof(head) - 1;

    CHECK_EQ(check_req_n(wire, sizeof(wire) - 1, CD_HTTP_DONE, 0, __LINE__), hl);
    /* A split after the head: the second call sees only frame bytes. */
    size_t used = 7;
    cd_http_parser_init(&ref);
    CHECK_EQ(cd_http_parse(&ref, (const uint8_t *)wire, hl - 1, &used),
             CD_HTTP_NEED_MORE);
    CHECK_EQ(used, hl - 1);
    CHECK_EQ(cd_http_parse(&ref, (const uint8_t *)wire + hl - 1, 5, &used),
             CD_HTTP_DONE);
    CHECK_EQ(used, 1);
}

TEST(test_repeat_after_done_and_error)
{
    const uint8_t ok[] = "GET / HTTP/1.1\r\n\r\nxyz";
    const uint8_t bad[] = "GET / HTTP/1.1\r\nA : b\r\n\r\n";
    size_t used = 99;

    cd_http_parser_init(&ref);
    CHECK_EQ(cd_http_parse(&ref, ok, sizeof(ok) - 1, &used), CD_HTTP_DONE);
    CHECK_EQ(used, sizeof(ok) - 4);
    CHECK_EQ(cd_http_parse(&ref, ok, sizeof(ok) - 1, &used), CD_HTTP_DONE);
    CHECK_EQ(used, 0);
    CHECK_EQ(cd_http_parse(&ref, NULL, 0, &used), CD_HTTP_DONE);

    cd_http_parser_init(&ref);
    CHECK_EQ(cd_http_parse(&ref, bad, sizeof(bad) - 1, &used), CD_HTTP_ERROR);
    CHECK_EQ(used, 18);                  /* up to and including the SP */
    CHECK_EQ(ref.error_status, 400);
    CHECK_STR(ref.error_reason, "whitespace before colon");
    CHECK_EQ(cd_http_parse(&ref, ok, sizeof(ok) - 1, &used), CD_HTTP_ERROR);
    CHECK_EQ(used, 0);
    CHECK_EQ(ref.error_status, 400);

    /* Empty input is fine before the end. */
    cd_http_parser_init(&ref);
    CHECK_EQ(cd_http_parse(&ref, ok, 0, &used), CD_HTTP_NEED_MORE);
    CHECK_EQ(used, 0);
}

TEST(test_leading_empty_lines)
{
    CHECK_OK("\r\nGET / HTTP/1.1\r\n\r\n");
    CHECK(span_is(&ref, ref.method, "GET"));
    CHECK_EQ(ref.method.off, 0);
    CHECK_OK("\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    CHECK_400("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    CHECK_400("\nGET / HTTP/1.1\r\n\r\n");
    CHECK_400("\rGET / HTTP/1.1\r\n\r\n");
    CHECK_400(" GET / HTTP/1.1\r\n\r\n");
}

TEST(test_request_line_errors)
{
    CHECK_400("G@T / HTTP/1.1\r\n\r\n");
    CHECK_400("GET  / HTTP/1.1\r\n\r\n");
    CHECK_400("GET / HTTP/1.1 \r\n\r\n");
    CHECK_400("GET /  HTTP/1.1\r\n\r\n");
    CHECK_400("GET http://a/ HTTP/1.1\r\n\r\n");
    CHECK_400("OPTIONS * HTTP/1.1\r\n\r\n");
    CHECK_400("CONNECT a:443 HTTP/1.1\r\n\r\n");
    CHECK_400("GET /\r\n\r\n");
    CHECK_400("GET / \r\n\r\n");
    CHECK_400("GET / http/1.1\r\n\r\n");
    CHECK_400("GET / HTTP/1.10\r\n\r\n");
    CHECK_400("GET / HTTP/11.1\r\n\r\n");
    CHECK_400("GET / HTTP/1.\r\n\r\n");
    CHECK_400("GET / HTTP/1\r\n\r\n");
    CHECK_400("GET / HTTP1.1\r\n\r\n");
    CHECK_400("GET / HTTP/a.1\r\n\r\n");
    CHECK_400("GET / HTTP/1.1\n\r\n");
    CHECK_400("GET / HTTP/1.1\rX\n\r\n");
    CHECK_400("GET /a\tb HTTP/1.1\r\n\r\n");
    CHECK_400("GET /a\x7f HTTP/1.1\r\n\r\n");
    CHECK_400("GET /a\x80 HTTP/1.1\r\n\r\n");
    CHECK_400("GET /a\xff HTTP/1.1\r\n\r\n");
    CHECK_400("GET\t/ HTTP/1.1\r\n\r\n");
    check_req_n("GET /\0 HTTP/1.1\r\n\r\n", 20, CD_HTTP_ERROR, 400, __LINE__);
    CHECK_STR(ref.error_reason, "NUL byte");
    check_req_n("\0", 1, CD_HTTP_ERROR, 400, __LINE__);
}

TEST(test_version_505)
{
    CHECK_REQ("GET / HTTP/2.0\r\n\r\n", CD_HTTP_ERROR, 505);
    CHECK_REQ("GET / HTTP/0.9\r\nHost: a\r\n\r\n", CD_HTTP_ERROR, 505);
    CHECK_REQ("GET / HTTP/3.0\r\n", CD_HTTP_ERROR, 505);
    /* Syntax is checked before the version number. */
    CHECK_400("GET / HTTP/2.0x\r\n\r\n");
    CHECK_OK("GET / HTTP/1.0\r\n\r\n");
    CHECK_EQ(ref.version_minor, 0);
}

TEST(test_header_errors)
{
    CHECK_400("GET / HTTP/1.1\r\nHost : a\r\n\r\n");
    CHECK_STR(ref.error_reason, "whitespace before colon");
    CHECK_400("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n");
    CHECK_400("GET / HTTP/1.1\r\n: a\r\n\r\n");
    CHECK_STR(ref.error_reason, "empty header name");
    CHECK_400("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n");
    CHECK_STR(ref.error_reason, "obsolete line folding");
    CHECK_400("GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n");
    CHECK_400("GET / HTTP/1.1\r\n Host: a\r\n\r\n");
    CHECK_400("GET / HTTP/1.1\r\nA(b: c\r\n\r\n");
    CHECK_400("GET / HTTP/1.1\r\nA\r\n\r\n");
    CHECK_400("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n");
    CHECK_STR(ref.error_reason, "bare CR");
    CHECK_400("GET / HTTP/1.1\r\nA: b\nc\r\n\r\n");
    CHECK_STR(ref.error_reason, "bare LF");
    CHECK_400("GET / HTTP/1.1\r\nA: b\n\r\n");
    CHECK_400("GET / HTTP/1.1\r\nA: b\r\n\n");
    CHECK_400("GET / HTTP/1.1\r\nA: b\r\n\rx");
    CHECK_400("GET / HTTP/1.1\r\nA: b\x01\r\n\r\n");
    CHECK_STR(ref.error_reason, "control character");
    CHECK_400("GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n");
    CHECK_400("GET / HTTP/1.1\r\nA: \x1b\r\n\r\n");
    CHECK_400("GET / HTTP/1.1\r\nA\x01: b\r\n\r\n");
    CHECK_400("GET / HTTP/1.1\r\nA\x80: b\r\n\r\n");
    check_req_n("GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", 26, CD_HTTP_ERROR, 400,
                __LINE__);
    CHECK_STR(ref.error_reason, "NUL byte");
    check_req_n("GET / HTTP/1.1\r\nA\0: b\r\n\r\n", 25, CD_HTTP_ERROR, 400,
                __LINE__);
}

TEST(test_header_value_bytes)
{
    CHECK_OK("GET / HTTP/1.1\r\nA: x\ty z\r\nB: \xc3\xa9\x80\xff\r\n"
             "C: \"q\" (c) :;,\r\n\r\n");
    CHECK(span_is(&ref, ref.headers[0].value, "x\ty z"));
    CHECK(span_is(&ref, ref.headers[1].value, "\xc3\xa9\x80\xff"));
    CHECK(span_is(&ref, ref.headers[2].value, "\"q\" (c) :;,"));
    CHECK_OK("GET / HTTP/1.1\r\nA:::\r\n\r\n");
    CHECK(span_is(&ref, ref.headers[0].value, "::"));
}

TEST(test_header_lookup)
{
    CHECK_OK("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nX-AB: 3\r\n\r\n");
    const cd_http_header *h = cd_http_header_find(&ref, "x-A");
    CHECK(h != NULL);
    CHECK(h != NULL && span_is(&ref, h->value, "1"));
    CHECK_EQ(cd_http_header_count(&ref, "X-A"), 2);
    CHECK_EQ(cd_http_header_count(&ref, "x-ab"), 1);
    CHECK_EQ(cd_http_header_count(&ref, "X"), 0);
    CHECK(cd_http_header_find(&ref, "HOST") != NULL);
    CHECK(cd_http_header_find(&ref, "Hos") == NULL);
    CHECK(cd_http_header_find(&ref, "") == NULL);
}

/* "GET /aaa…a HTTP/1.1" with a request line of exactly `line` bytes. */
static char *request_with_line(size_t line, const char *prefix)
{
    const char *head = "GET /", *tail = " HTTP/1.1";
    size_t pl = strlen(prefix);
    char *s = repeat('a', pl + line + 4);

    memcpy(s, prefix, pl);
    memcpy(s + pl, head, strlen(head));
    memcpy(s + pl + line - strlen(tail), tail, strlen(tail));
    memcpy(s + pl + line, "\r\n\r\n", 4);
    return s;
}

/* Whole, a few splits and bytewise: the big inputs skip the every-split
 * sweep, which is quadratic and adds nothing the small tests lack. */
static outcome check_big(const char *s, size_t len, size_t line)
{
    const uint8_t *d = (const uint8_t *)s;
    size_t all = len, cuts[4] = {1, len / 2, len - 1, len};
    outcome w = feed_cuts(&ref, d, &all, 1);
    outcome c = feed_cuts(&other, d, cuts, 4);
    outcome b = feed_bytewise(&other, d, len);

    if (!same_outcome(w, c) || !same_outcome(w, b))
        TEST_FAIL_AT(__FILE__, (int)line, "splits disagree: %d/%zu %d/%zu %d/%zu",
                     w.rc, w.consumed, c.rc, c.consumed, b.rc, b.consumed);
    return w;
}

TEST(test_request_line_limit)
{
    char *s = request_with_line(CD_HTTP_MAX_REQUEST_LINE, "");
    outcome o = check_big(s, strlen(s), __LINE__);
    CHECK_EQ(o.rc, CD_HTTP_DONE);
    CHECK_EQ(ref.target.len, CD_HTTP_MAX_REQUEST_LINE - 4 - 9);
    free(s);

    s = request_with_line(CD_HTTP_MAX_REQUEST_LINE + 1, "");
    o = check_big(s, strlen(s), __LINE__);
    CHECK_EQ(o.rc, CD_HTTP_ERROR);
    CHECK_EQ(o.status, 414);
    /* Refused at the first byte past the limit, not at the end of line. */
    CHECK_EQ(o.consumed, CD_HTTP_MAX_REQUEST_LINE + 1);
    free(s);

    /* Leading empty lines count against the limit. */
    s = request_with_line(CD_HTTP_MAX_REQUEST_LINE - 4, "\r\n\r\n");
    o = check_big(s, strlen(s), __LINE__);
    CHECK_EQ(o.rc, CD_HTTP_DONE);
    free(s);
    s = request_with_line(CD_HTTP_MAX_REQUEST_LINE - 3, "\r\n\r\n");
    o = check_big(s, strlen(s), __LINE__);
    CHECK_EQ(o.status, 414);
    free(s);

    /* A line that never ends fails as soon as it is too long. */
    s = repeat('a', 10000);
    memcpy(s, "GET /", 5);
    o = check_big(s, strlen(s), __LINE__);
    CHECK_EQ(o.status, 414);
    CHECK_EQ(o.consumed, CD_HTTP_MAX_REQUEST_LINE + 1);
    memcpy(s, "GETGETGET", 9);  /* a long method: the same limit */
    o = check_big(s, strlen(s), __LINE__);
    CHECK_EQ(o.status, 414);
    free(s);
}

/* Request line + header lines totalling `hbytes` (CRLFs included) + end. */
static char *request_with_headers(size_t hbytes, size_t *len)
{
    const char *rl = "GET / HTTP/1.1\r\n";
    size_t rll = strlen(rl), n = rll + hbytes + 2;
    char *s = repeat('v', n);
    size_t at = rll, left = hbytes;

    memcpy(s, rl, rll);
    while (left > 0) {
        /* Lines of up to 1000 bytes: "X:" value CRLF, at least 5 bytes. */
        size_t l = left > 1000 ? 1000 : left;
        if (left - l != 0 && left - l < 5)
            l -= 5;
        memcpy(s + at, "X:", 2);
        memcpy(s + at + l - 2, "\r\n", 2);
        at += l;
        left -= l;
    }
    memcpy(s + at, "\r\n", 2);
    *len = n;
    return s;
}

TEST(test_header_section_limit)
{
    size_t len;
    char *s = request_with_headers(CD_HTTP_MAX_HEADER_BYTES, &len);
    outcome o = check_big(s, len, __LINE__);
    CHECK_EQ(o.rc, CD_HTTP_DONE);
    CHECK_EQ(o.consumed, len);
    CHECK_EQ(ref.n_headers, 9);
    free(s);

    s = request_with_headers(CD_HTTP_MAX_HEADER_BYTES + 1, &len);
    o = check_big(s, len, __LINE__);
    CHECK_EQ(o.rc, CD_HTTP_ERROR);
    CHECK_EQ(o.status, 431);
    CHECK_EQ(o.consumed, 16 + CD_HTTP_MAX_HEADER_BYTES + 1);
    free(s);

    /* One endless header value fails as soon as it crosses the limit. */
    s = repeat(' ', 20000);
    memcpy(s, "GET / HTTP/1.1\r\nX:", 18);
    o = check_big(s, 20000, __LINE__);
    CHECK_EQ(o.status, 431);
    CHECK_EQ(o.consumed, 16 + CD_HTTP_MAX_HEADER_BYTES + 1);
    free(s);
}

TEST(test_header_count_limit)
{
    char s[2048];
    size_t n = (size_t)sprintf(s, "GET / HTTP/1.1\r\n");

    for (int i = 0; i < CD_HTTP_MAX_HEADERS; i++)
        n += (size_t)sprintf(s + n, "H%d: %d\r\n", i, i);
    memcpy(s + n, "\r\n", 3);
    CHECK_EQ(check_req_n(s, n + 2, CD_HTTP_DONE, 0, __LINE__), n + 2);
    CHECK_EQ(ref.n_headers, CD_HTTP_MAX_HEADERS);
    CHECK(span_is(&ref, ref.headers[63].name, "H63"));
    CHECK(span_is(&ref, ref.headers[63].value, "63"));

    memcpy(s + n, "H64: 64\r\n\r\n", 12);
    CHECK_EQ(check_req_n(s, n + 11, CD_HTTP_ERROR, 431, __LINE__), n + 1);
    CHECK_STR(ref.error_reason, "too many header fields");
}

/* O(n) by construction: one switch per byte and no rescans.  These feed the
 * worst shapes one byte per call; each call must consume exactly its byte
 * (feed_bytewise checks that) and the results must be right. */
TEST(test_linear_pathological)
{
    size_t len;
    char *s = request_with_headers(8000, &len);
    outcome o = feed_bytewise(&ref, (const uint8_t *)s, len);
    CHECK_EQ(o.rc, CD_HTTP_DONE);
    CHECK_EQ(o.consumed, len);
    free(s);

    /* 4000 spaces of OWS, then 4000 colons of value. */
    s = repeat(' ', 8100);
    memcpy(s, "GET / HTTP/1.1\r\nX:", 18);
    memset(s + 4018, ':', 4000);
    memcpy(s + 8018, "\r\n\r\n", 4);
    o = feed_bytewise(&ref, (const uint8_t *)s, 8022);
    CHECK_EQ(o.rc, CD_HTTP_DONE);
    CHECK_EQ(ref.headers[0].value.len, 4000);
    CHECK_EQ(ref.headers[0].value.off, 4018);
    free(s);

    /* 4000 '?' in the target: only the first one splits. */
    s = repeat('?', 4020);
    memcpy(s, "GET /", 5);
    memcpy(s + 4000, " HTTP/1.1\r\n\r\n", 13);
    o = feed_bytewise(&ref, (const uint8_t *)s, 4013);
    CHECK_EQ(o.rc, CD_HTTP_DONE);
    CHECK_EQ(ref.path.len, 1);
    CHECK_EQ(ref.query.len, 4000 - 6);
    free(s);
}

TEST(test_list_has_token)
{
    const char *v = "keep-alive, Upgrade";
    CHECK(cd_http_list_has_token(v, strlen(v), "upgrade"));
    CHECK(cd_http_list_has_token(v, strlen(v), "KEEP-ALIVE"));
    CHECK(!cd_http_list_has_token(v, strlen(v), "keep"));
    CHECK(!cd_http_list_has_token(v, strlen(v), "alive, Upgrade"));
    CHECK(!cd_http_list_has_token(v, strlen(v), ""));
    v = " ,\t, upgrade\t ,";
    CHECK(cd_http_list_has_token(v, strlen(v), "Upgrade"));
    v = "upgradex";
    CHECK(!cd_http_list_has_token(v, strlen(v), "upgrade"));
    v = "x-upgrade, upgrade2";
    CHECK(!cd_http_list_has_token(v, strlen(v), "upgrade"));
    v = "up grade";
    CHECK(!cd_http_list_has_token(v, strlen(v), "up"));
    CHECK(!cd_http_list_has_token("", 0, "a"));
    CHECK(!cd_http_list_has_token(",,,", 3, "a"));
    /* Only len bytes are read. */
    CHECK(!cd_http_list_has_token("upgrade", 6, "upgrade"));
    CHECK(cd_http_list_has_token("a,upgrade,b", 9, "upgrade"));
    CHECK(cd_http_is_token("chat.v2", 7));
    CHECK(cd_http_is_token("!#$%&'*+-.^_`|~09azAZ", 21));
    CHECK(!cd_http_is_token("", 0));
    CHECK(!cd_http_is_token("a b", 3));
    CHECK(!cd_http_is_token("a/b", 3));
    CHECK(!cd_http_is_token("a\x80", 2));
    v = "chat, Chat.v2";
    CHECK(cd_http_list_has_exact_token(v, strlen(v), "Chat.v2"));
    CHECK(!cd_http_list_has_exact_token(v, strlen(v), "chat.v2"));
    CHECK(!cd_http_list_has_exact_token(v, strlen(v), "Chat"));
}

static int qget(const char *q, const char *name, char *out, size_t cap)
{
    return cd_http_query_get(q, strlen(q), name, out, cap);
}

TEST(test_query_get)
{
    char out[16];
    const char *q = "a=1&user_id=b%20c&plus=x+y&empty=&flag&a=2&%61b=3";

    CHECK_EQ(qget(q, "a", out, sizeof(out)), 1);
    CHECK_STR(out, "1");
    CHECK_EQ(qget(q, "user_id", out, sizeof(out)), 3);
    CHECK_STR(out, "b c");
    CHECK_EQ(qget(q, "plus", out, sizeof(out)), 3);
    CHECK_STR(out, "x+y");
    CHECK_EQ(qget(q, "empty", out, sizeof(out)), 0);
    CHECK_STR(out, "");
    CHECK_EQ(qget(q, "flag", out, sizeof(out)), 0);
    CHECK_EQ(qget(q, "ab", out, sizeof(out)), 1);
    CHECK_STR(out, "3");
    CHECK_EQ(qget(q, "user", out, sizeof(out)), -1);
    CHECK_EQ(qget(q, "missing", out, sizeof(out)), -1);
    CHECK_EQ(qget(q, "", out, sizeof(out)), -1);
    CHECK_EQ(qget("", "a", out, sizeof(out)), -1);
    CHECK_EQ(qget("&&a=%7e%7E&", "a", out, sizeof(out)), 2);
    CHECK_STR(out, "~~");
    CHECK_EQ(qget("a=x=y", "a", out, sizeof(out)), 3);
    CHECK_STR(out, "x=y");
    CHECK_EQ(qget("a=%e2%82%ac", "a", out, sizeof(out)), 3);
    CHECK_STR(out, "\xe2\x82\xac");

    /* Bad escapes in the wanted value. */
    CHECK_EQ(qget("a=%", "a", out, sizeof(out)), -1);
    CHECK_EQ(qget("a=%4", "a", out, sizeof(out)), -1);
    CHECK_EQ(qget("a=%4&b=1", "a", out, sizeof(out)), -1);
    CHECK_EQ(qget("a=%G1", "a", out, sizeof(out)), -1);
    CHECK_EQ(qget("a=%1G", "a", out, sizeof(out)), -1);
    CHECK_EQ(qget("a=x%00y", "a", out, sizeof(out)), -1);
    /* A bad escape elsewhere does not matter; in a key it never matches. */
    CHECK_EQ(qget("b=%zz&a=1", "a", out, sizeof(out)), 1);
    CHECK_EQ(qget("%zz=1&a=2", "a", out, sizeof(out)), 1);
    CHECK_STR(out, "2");
    CHECK_EQ(qget("a%=1", "a", out, sizeof(out)), -1);
    /* Only len bytes are read. */
    CHECK_EQ(cd_http_query_get("a=12345", 4, "a", out, sizeof(out)), 2);
    CHECK_STR(out, "12");
    CHECK_EQ(cd_http_query_get("a=%41", 4, "a", out, sizeof(out)), -1);

    /* Capacity: the value and its NUL must fit. */
    CHECK_EQ(qget("a=1234", "a", out, 5), 4);
    CHECK_STR(out, "1234");
    CHECK_EQ(qget("a=12345", "a", out, 5), -1);
    CHECK_EQ(qget("a=%31%32%33%34", "a", out, 5), 4);
    CHECK_EQ(qget("a=", "a", out, 1), 0);
    CHECK_EQ(qget("a=1", "a", out, 0), -1);
}

static int cget(const char *v, const char *name, char *out, size_t cap)
{
    return cd_http_cookie_get(v, strlen(v), name, out, cap);
}

TEST(test_cookie_get)
{
    char out[16];
    const char *v = "a=b; token=abc.def-_; q=\"quoted\"; e=; Token=X";

    CHECK_EQ(cget(v, "a", out, sizeof(out)), 1);
    CHECK_STR(out, "b");
    CHECK_EQ(cget(v, "token", out, sizeof(out)), 9);
    CHECK_STR(out, "abc.def-_");
    CHECK_EQ(cget(v, "Token", out, sizeof(out)), 1);
    CHECK_STR(out, "X");
    CHECK_EQ(cget(v, "q", out, sizeof(out)), 6);
    CHECK_STR(out, "quoted");
    CHECK_EQ(cget(v, "e", out, sizeof(out)), 0);
    CHECK_EQ(cget(v, "b", out, sizeof(out)), -1);
    CHECK_EQ(cget(v, "tok", out, sizeof(out)), -1);
    CHECK_EQ(cget(v, "", out, sizeof(out)), -1);
    CHECK_EQ(cget("", "a", out, sizeof(out)), -1);
    CHECK_EQ(cget("a", "a", out, sizeof(out)), -1);
    CHECK_EQ(cget("a; a=1", "a", out, sizeof(out)), 1);
    CHECK_EQ(cget(";;a=1;", "a", out, sizeof(out)), 1);
    CHECK_EQ(cget("a=1;a=2", "a", out, sizeof(out)), 1);
    CHECK_STR(out, "1");
    CHECK_EQ(cget("x=%41=b", "x", out, sizeof(out)), 5);
    CHECK_STR(out, "%41=b");
    /* Not cookie-octets: whitespace, comma, backslash, stray quotes. */
    CHECK_EQ(cget("a=b c", "a", out, sizeof(out)), -1);
    CHECK_EQ(cget("a=b,c", "a", out, sizeof(out)), -1);
    CHECK_EQ(cget("a=b\\c", "a", out, sizeof(out)), -1);
    CHECK_EQ(cget("a=\"b", "a", out, sizeof(out)), -1);
    CHECK_EQ(cget("a=\"", "a", out, sizeof(out)), -1);
    CHECK_EQ(cget("a=\"\"", "a", out, sizeof(out)), 0);
    CHECK_EQ(cget("a=\x80", "a", out, sizeof(out)), -1);
    /* Capacity. */
    CHECK_EQ(cget("a=1234", "a", out, 5), 4);
    CHECK_EQ(cget("a=12345", "a", out, 5), -1);
    CHECK_EQ(cget("a=1", "a", out, 0), -1);
}

TEST(test_status_text)
{
    CHECK_STR(cd_http_status_text(101), "Switching Protocols");
    CHECK_STR(cd_http_status_text(200), "OK");
    CHECK_STR(cd_http_status_text(400), "Bad Request");
    CHECK_STR(cd_http_status_text(404), "Not Found");
    CHECK_STR(cd_http_status_text(405), "Method Not Allowed");
    CHECK_STR(cd_http_status_text(414), "URI Too Long");
    CHECK_STR(cd_http_status_text(426), "Upgrade Required");
    CHECK_STR(cd_http_status_text(431), "Request Header Fields Too Large");
    CHECK_STR(cd_http_status_text(505), "HTTP Version Not Supported");
    CHECK_STR(cd_http_status_text(299), "Unknown");
}

TEST(test_write_response)
{
    char out[256];
    const char *want = "HTTP/1.1 426 Upgrade Required\r\n"
                       "Content-Type: text/plain\r\n"
                       "Content-Length: 5\r\n"
                       "Connection: close\r\n"
                       "Sec-WebSocket-Version: 13\r\n"
                       "\r\n"
                       "hello";
    size_t wl = strlen(want);
    size_t n = cd_http_write_response(out, sizeof(out), 426, "text/plain",
                                      "Sec-WebSocket-Version: 13\r\n",
                                      "hello", 5, true);
    CHECK_EQ(n, wl);
    CHECK_MEM(out, want, wl);

    /* Every capacity short of the whole response is refused. */
    int short_ok = 0;
    for (size_t cap = 0; cap < wl; cap++) {
        if (cd_http_write_response(out, cap, 426, "text/plain",
                                   "Sec-WebSocket-Version: 13\r\n", "hello",
                                   5, true) != 0)
            short_ok++;
    }
    CHECK_EQ(short_ok, 0);

    n = cd_http_write_response(out, sizeof(out), 200, NULL, NULL, NULL, 0,
                               false);
    const char *w2 = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    CHECK_EQ(n, strlen(w2));
    CHECK_MEM(out, w2, strlen(w2));

    n = cd_http_write_response(out, sizeof(out), 204, "text/plain", NULL,
                               NULL, 0, true);
    const char *w3 = "HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\n"
                     "Connection: close\r\n\r\n";
    CHECK_EQ(n, strlen(w3));
    CHECK_MEM(out, w3, strlen(w3));
    CHECK_EQ(cd_http_write_response(out, sizeof(out), 204, NULL, NULL, "x", 1,
                                    false), 0);
    char ct[200];
    memset(ct, 'x', sizeof(ct) - 1);
    ct[sizeof(ct) - 1] = '\0';
    n = cd_http_write_response(out, sizeof(out), 200, ct, NULL, "b", 1, false);
    CHECK_EQ(n, 17 + 14 + 199 + 2 + 19 + 2 + 1);
    CHECK_MEM(out + n - 3, "\r\nb", 3);
    CHECK_EQ(cd_http_write_response(out, sizeof(out), 99, NULL, NULL, NULL, 0,
                                    false), 0);
    CHECK_EQ(cd_http_write_response(out, sizeof(out), 1000, NULL, NULL, NULL,
                                    0, false), 0);
}

int main(void)
{
    RUN(test_simple_request);
    RUN(test_path_and_query_forms);
    RUN(test_leftover_bytes);
    RUN(test_repeat_after_done_and_error);
    RUN(test_leading_empty_lines);
    RUN(test_request_line_errors);
    RUN(test_version_505);
    RUN(test_header_errors);
    RUN(test_header_value_bytes);
    RUN(test_header_lookup);
    RUN(test_request_line_limit);
    RUN(test_header_section_limit);
    RUN(test_header_count_limit);
    RUN(test_linear_pathological);
    RUN(test_list_has_token);
    RUN(test_query_get);
    RUN(test_cookie_get);
    RUN(test_status_text);
    RUN(test_write_response);
    return test_main_end();
}
