/* fuzz_http.c - the request-head parser under random splits.
 *
 * The first byte seeds the split pattern (hiredis's fuzzer picks its chunk
 * size the same way); the rest is the wire.  The input is parsed whole and
 * in pieces, and the two runs must agree on everything.  After DONE every
 * span must lie inside the stored head, and the helpers run over the
 * parsed values. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define REQUIRE(cond)              \
    do {                           \
        if (!(cond))               \
            __builtin_trap();      \
    } while (0)

static cd_http_parser whole, split;

static void check_span(const cd_http_parser *p, cd_http_span s)
{
    REQUIRE((uint32_t)s.off + s.len <= p->len);
}

static int feed_split(const uint8_t *d, size_t len, uint8_t seed,
                      size_t *consumed)
{
    uint32_t x = 0x9e3779b9u ^ seed;
    size_t at = 0;
    int rc = CD_HTTP_NEED_MORE;

    cd_http_parser_init(&split);
    *consumed = 0;
    while (rc == CD_HTTP_NEED_MORE && at < len) {
        /* xorshift32: chunk lengths 1..64, or 1 byte when seed is 0. */
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        size_t n = seed == 0 ? 1 : 1 + x % 64;
        size_t used = 0;
        if (n > len - at)
            n = len - at;
        rc = cd_http_parse(&split, d + at, n, &used);
        REQUIRE(used <= n);
        REQUIRE(rc != CD_HTTP_NEED_MORE || used == n);
        *consumed += used;
        at += n;
    }
    return rc;
}

static void exercise_helpers(const cd_http_parser *p)
{
    char out[256];

    for (size_t i = 0; i < p->n_headers; i++) {
        const cd_http_header *h = &p->headers[i];
        const char *v = cd_http_str(p, h->value);
        check_span(p, h->name);
        check_span(p, h->value);
        REQUIRE(h->name.len > 0);
        (void)cd_http_list_has_token(v, h->value.len, "upgrade");
        (void)cd_http_list_has_exact_token(v, h->value.len, "chat");
        int n = cd_http_cookie_get(v, h->value.len, "token", out, sizeof(out));
        REQUIRE(n < (int)sizeof(out) && (n < 0 || out[n] == '\0'));
    }
    (void)cd_http_header_find(p, "Host");
    (void)cd_http_header_count(p, "Cookie");
    int n = cd_http_query_get(cd_http_str(p, p->query), p->query.len,
                              "user_id", out, sizeof(out));
    REQUIRE(n < (int)sizeof(out) && (n < 0 || (size_t)n == strlen(out)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t used_whole = 0, used_split = 0;

    if (size < 1)
        return 0;
    uint8_t seed = data[0];
    data++;
    size--;

    cd_http_parser_init(&whole);
    int rc = cd_http_parse(&whole, data, size, &used_whole);
    int rc_split = feed_split(data, size, seed, &used_split);
    REQUIRE(rc == rc_split);
    REQUIRE(used_whole == used_split);
    REQUIRE(whole.error_status == split.error_status);
    REQUIRE(whole.len == split.len);
    REQUIRE(memcmp(whole.buf, split.buf, whole.len) == 0);
    REQUIRE(rc != CD_HTTP_NEED_MORE || used_whole == size);

    if (rc == CD_HTTP_NEED_MORE)
        return 0;
    /* DONE and ERROR are sticky and consume nothing more. */
    size_t again = 1;
    REQUIRE(cd_http_parse(&whole, data, size, &again) == rc);
    REQUIRE(again == 0);

    if (rc == CD_HTTP_ERROR) {
        int s = whole.error_status;
        REQUIRE(s == 400 || s == 414 || s == 431 || s == 505);
        REQUIRE(whole.error_reason != NULL);
        char resp[512];
        size_t n = cd_http_write_response(resp, sizeof(resp), s, "text/plain",
                                          NULL, whole.error_reason,
                                          strlen(whole.error_reason), true);
        REQUIRE(n > 0);
        return 0;
    }
    REQUIRE(whole.n_headers <= CD_HTTP_MAX_HEADERS);
    REQUIRE(whole.n_headers == split.n_headers);
    REQUIRE(memcmp(&whole, &split, offsetof(cd_http_parser, error_status)) == 0);
    check_span(&whole, whole.method);
    check_span(&whole, whole.target);
    check_span(&whole, whole.path);
    check_span(&whole, whole.query);
    REQUIRE(whole.method.len > 0 && whole.target.len > 0);
    REQUIRE(cd_http_str(&whole, whole.target)[0] == '/');
    REQUIRE(whole.path.off == whole.target.off);
    REQUIRE(whole.path.len <= whole.target.len);
    REQUIRE(whole.version_major == 1);
    exercise_helpers(&whole);
    return 0;
}
