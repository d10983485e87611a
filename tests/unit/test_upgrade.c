/* test_upgrade.c - the opening handshake: every refusal with its status and
 * extra header, the check order, subprotocol choice, permessage-deflate
 * hand-off, Sec-WebSocket-Accept and the exact 101 bytes. */
#include <string.h>

#include "common.h"
#include "test.h"
#include "upgrade.h"

static cd_http_parser req;

/* Parse a complete request head into `req`; false if it does not parse. */
static bool parse(const char *head)
{
    size_t used = 0;

    cd_http_parser_init(&req);
    return cd_http_parse(&req, (const uint8_t *)head, strlen(head), &used) ==
               CD_HTTP_DONE &&
           used == strlen(head);
}

#define GOOD_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define GOOD_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static const char *const protos[] = {"chat.v2", "chat", "bad proto", "json"};
static const cd_upgrade_config no_ext = {protos, 4, NULL};

/* Run the check on a head made of the request line and header lines. */
static int check(const char *head, const cd_upgrade_config *cfg,
                 cd_upgrade_result *r)
{
    if (!parse(head))
        return -1;
    return cd_upgrade_check(&req, cfg, r);
}

#define BASE_HEADERS                                \
    "Host: example.com\r\n"                         \
    "Upgrade: websocket\r\n"                        \
    "Connection: Upgrade\r\n"                       \
    "Sec-WebSocket-Version: 13\r\n"

#define GET "GET /chat HTTP/1.1\r\n"

TEST(test_accept_key_rfc_example)
{
    char out[CD_WS_ACCEPT_LEN + 1];

    /* RFC 6455 §1.3. */
    cd_upgrade_accept_key(GOOD_KEY, strlen(GOOD_KEY), out);
    CHECK_STR(out, GOOD_ACCEPT);
    cd_upgrade_accept_key("", 0, out);
    CHECK_EQ(strlen(out), CD_WS_ACCEPT_LEN);
    char big[65];
    memset(big, 'A', sizeof(big));
    cd_upgrade_accept_key(big, 64, out);
    CHECK_EQ(strlen(out), CD_WS_ACCEPT_LEN);
    cd_upgrade_accept_key(big, 65, out);
    CHECK_STR(out, "");
}

TEST(test_success_and_101_bytes)
{
    cd_upgrade_result r;
    char out[512];

    CHECK_EQ(check(GET BASE_HEADERS "Sec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                   &no_ext, &r),
             101);
    CHECK_STR(r.accept, GOOD_ACCEPT);
    CHECK_EQ(r.subprotocol, -1);
    CHECK(!r.subprotocol_requested);
    CHECK(!r.has_pmd);
    CHECK(r.extra_header == NULL);
    CHECK(cd_upgrade_is_requested(&req));

    const char *want = "HTTP/1.1 101 Switching Protocols\r\n"
                       "Upgrade: websocket\r\n"
                       "Connection: Upgrade\r\n"
                       "Sec-WebSocket-Accept: " GOOD_ACCEPT "\r\n"
                       "\r\n";
    size_t n = cd_upgrade_write_101(&r, &no_ext, out, sizeof(out));
    CHECK_EQ(n, strlen(want));
    CHECK_MEM(out, want, strlen(want));
    int short_ok = 0;
    for (size_t cap = 0; cap < strlen(want); cap++)
        short_ok += cd_upgrade_write_101(&r, &no_ext, out, cap) != 0;
    CHECK_EQ(short_ok, 0);
}

TEST(test_token_lists_and_case)
{
    cd_upgrade_result r;

    CHECK_EQ(check("GET / HTTP/1.1\r\nhost: a\r\nUPGRADE: WebSocket\r\n"
                   "connection: keep-alive, Upgrade\r\n"
                   "sec-websocket-version: 13\r\n"
                   "SEC-WEBSOCKET-KEY: " GOOD_KEY "\r\n\r\n",
                   &no_ext, &r),
             101);
    /* Tokens spread over several lines of the same field. */
    CHECK_EQ(check("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n"
                   "Upgrade: foo, websocket\r\nConnection: keep-alive\r\n"
                   "Connection: upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                   &no_ext, &r),
             101);
    /* A later HTTP/1.x minor version is fine. */
    CHECK_EQ(check("GET / HTTP/1.2\r\n" BASE_HEADERS
                   "Sec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                   &no_ext, &r),
             101);
}

TEST(test_method_405)
{
    cd_upgrade_result r;

    CHECK_EQ(check("POST / HTTP/1.1\r\n" BASE_HEADERS
                   "Sec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                   &no_ext, &r),
             405);
    CHECK_EQ(r.status, 405);
    CHECK_STR(r.extra_header, "Allow: GET\r\n");
    CHECK(r.reason != NULL);
    CHECK_EQ(r.subprotocol, -1);
    /* Methods are case-sensitive (RFC 9110 §9.1). */
    CHECK_EQ(check("get / HTTP/1.1\r\n" BASE_HEADERS
                   "Sec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                   &no_ext, &r),
             405);
    CHECK_EQ(check("GETX / HTTP/1.1\r\n" BASE_HEADERS
                   "Sec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                   &no_ext, &r),
             405);
    /* The method is checked first. */
    CHECK_EQ(check("PUT / HTTP/1.0\r\n\r\n", &no_ext, &r), 405);
}

TEST(test_version_host_upgrade_connection_400)
{
    cd_upgrade_result r;

    CHECK_EQ(check("GET / HTTP/1.0\r\n" BASE_HEADERS
                   "Sec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                   &no_ext, &r),
             400);
    CHECK_STR(r.reason, "handshake needs HTTP/1.1");
    CHECK(r.extra_header == NULL);

    CHECK_EQ(check(GET "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                   &no_ext, &r),
             400);
    CHECK_STR(r.reason, "Host header missing or repeated");
    CHECK_EQ(check(GET "Host: b\r\n" BASE_HEADERS
                   "Sec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                   &no_ext, &r),
             400);
    CHECK_STR(r.reason, "Host header missing or repeated");

    const char *bad_upgrade[] = {
        "",
        "Upgrade: h2c\r\n",
        "Upgrade: websocket/13\r\n",
        "Upgrade: web socket\r\n",
        "Upgrade:\r\n",
    };
    for (size_t i = 0; i < CD_ARRAY_LEN(bad_upgrade); i++) {
        char head[512];
        snprintf(head, sizeof(head),
                 GET "Host: a\r\n%sConnection: Upgrade\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                 bad_upgrade[i]);
        CHECK_EQ(check(head, &no_ext, &r), 400);
        CHECK_STR(r.reason, "Upgrade header lacks websocket");
    }
    const char *bad_connection[] = {
        "",
        "Connection: keep-alive\r\n",
        "Connection: upgrade-please\r\n",
        "Connection: close\r\nConnection: keep-alive\r\n",
    };
    for (size_t i = 0; i < CD_ARRAY_LEN(bad_connection); i++) {
        char head[512];
        snprintf(head, sizeof(head),
                 GET "Host: a\r\nUpgrade: websocket\r\n%s"
                     "Sec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                 bad_connection[i]);
        CHECK_EQ(check(head, &no_ext, &r), 400);
        CHECK_STR(r.reason, "Connection header lacks upgrade");
    }
}

TEST(test_ws_version_426)
{
    cd_upgrade_result r;
    const char *bad[] = {
        "",
        "Sec-WebSocket-Version: 8\r\n",
        "Sec-WebSocket-Version: 13, 8\r\n",
        "Sec-WebSocket-Version: 013\r\n",
        "Sec-WebSocket-Version:\r\n",
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n",
    };

    for (size_t i = 0; i < CD_ARRAY_LEN(bad); i++) {
        char head[512];
        snprintf(head, sizeof(head),
                 GET "Host: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "%sSec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                 bad[i]);
        CHECK_EQ(check(head, &no_ext, &r), 426);
        CHECK_STR(r.extra_header, "Sec-WebSocket-Version: 13\r\n");
    }
    /* Surrounding whitespace is not part of the value. */
    CHECK_EQ(check(GET "Host: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Version:   13 \r\n"
                   "Sec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                   &no_ext, &r),
             101);
    /* The version is checked before the key. */
    CHECK_EQ(check(GET "Host: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "\r\n",
                   &no_ext, &r),
             426);
}

TEST(test_key_400)
{
    cd_upgrade_result r;
    const char *bad[] = {
        "",                                              /* missing */
        "Sec-WebSocket-Key: " GOOD_KEY "\r\n",           /* repeated */
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n",  /* no padding */
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\n", /* short pad */
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ===\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ===\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=A\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n", /* pad bits */
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j-_==\r\n", /* base64url */
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub2 jZQ==\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQdGhl\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZXM=\r\n", /* 17 bytes */
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n",
        "Sec-WebSocket-Key:\r\n",
    };

    for (size_t i = 0; i < CD_ARRAY_LEN(bad); i++) {
        char head[512];
        snprintf(head, sizeof(head),
                 GET BASE_HEADERS "%s%s\r\n", bad[i],
                 i == 1 ? "Sec-WebSocket-Key: " GOOD_KEY "\r\n" : "");
        CHECK_EQ(check(head, &no_ext, &r), 400);
        CHECK_STR(r.reason, "Sec-WebSocket-Key missing or invalid");
    }
    /* Every canonical final character and the full alphabet are accepted. */
    const char *good[] = {"AAAAAAAAAAAAAAAAAAAAAA==", "+/+/+/+/+/+/+/+/+/+/+Q==",
                          "abcdefghijklmnopqrstug==", "0123456789ABCDEFGHIJKw=="};
    for (size_t i = 0; i < CD_ARRAY_LEN(good); i++) {
        char head[512];
        snprintf(head, sizeof(head), GET BASE_HEADERS "Sec-WebSocket-Key: %s\r\n\r\n",
                 good[i]);
        CHECK_EQ(check(head, &no_ext, &r), 101);
    }
}

TEST(test_subprotocol_choice)
{
    cd_upgrade_result r;
    char out[512];

    /* The server's order wins over the client's. */
    CHECK_EQ(check(GET BASE_HEADERS "Sec-WebSocket-Key: " GOOD_KEY "\r\n"
                   "Sec-WebSocket-Protocol: chat, chat.v2\r\n\r\n",
                   &no_ext, &r),
             101);
    CHECK(r.subprotocol_requested);
    CHECK_EQ(r.subprotocol, 0);
    size_t n = cd_upgrade_write_101(&r, &no_ext, out, sizeof(out));
    const char *want = "HTTP/1.1 101 Switching Protocols\r\n"
                       "Upgrade: websocket\r\n"
                       "Connection: Upgrade\r\n"
                       "Sec-WebSocket-Accept: " GOOD_ACCEPT "\r\n"
                       "Sec-WebSocket-Protocol: chat.v2\r\n"
                       "\r\n";
    CHECK_EQ(n, strlen(want));
    CHECK_MEM(out, want, strlen(want));

    /* Case-sensitive; several lines; none acceptable. */
    CHECK_EQ(check(GET BASE_HEADERS "Sec-WebSocket-Key: " GOOD_KEY "\r\n"
                   "Sec-WebSocket-Protocol: CHAT\r\n"
                   "Sec-WebSocket-Protocol: x, json\r\n\r\n",
                   &no_ext, &r),
             101);
    CHECK_EQ(r.subprotocol, 3);
    CHECK_EQ(check(GET BASE_HEADERS "Sec-WebSocket-Key: " GOOD_KEY "\r\n"
                   "Sec-WebSocket-Protocol: Chat, CHAT.V2\r\n\r\n",
                   &no_ext, &r),
             101);
    CHECK(r.subprotocol_requested);
    CHECK_EQ(r.subprotocol, -1);
    n = cd_upgrade_write_101(&r, &no_ext, out, sizeof(out));
    out[n] = '\0';
    CHECK(strstr(out, "Sec-WebSocket-Protocol") == NULL);

    /* A server entry that is not a token never matches, even verbatim. */
    CHECK_EQ(check(GET BASE_HEADERS "Sec-WebSocket-Key: " GOOD_KEY "\r\n"
                   "Sec-WebSocket-Protocol: bad proto\r\n\r\n",
                   &no_ext, &r),
             101);
    CHECK_EQ(r.subprotocol, -1);

    /* An empty server list never chooses. */
    cd_upgrade_config none = {NULL, 0, NULL};
    CHECK_EQ(check(GET BASE_HEADERS "Sec-WebSocket-Key: " GOOD_KEY "\r\n"
                   "Sec-WebSocket-Protocol: chat\r\n\r\n",
                   &none, &r),
             101);
    CHECK_EQ(r.subprotocol, -1);
    CHECK(r.subprotocol_requested);
}

TEST(test_write_101_refuses_bad_input)
{
    cd_upgrade_result r;
    char out[512];

    CHECK_EQ(check(GET BASE_HEADERS "Sec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                   &no_ext, &r),
             101);
    cd_upgrade_result bad = r;
    bad.status = 400;
    CHECK_EQ(cd_upgrade_write_101(&bad, &no_ext, out, sizeof(out)), 0);
    bad = r;
    bad.subprotocol = 4;
    CHECK_EQ(cd_upgrade_write_101(&bad, &no_ext, out, sizeof(out)), 0);
    bad.subprotocol = 2;                  /* "bad proto": not a token */
    CHECK_EQ(cd_upgrade_write_101(&bad, &no_ext, out, sizeof(out)), 0);
    bad = r;
    bad.accept[0] = '\0';
    CHECK_EQ(cd_upgrade_write_101(&bad, &no_ext, out, sizeof(out)), 0);
}

TEST(test_is_requested)
{
    CHECK(parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"));
    CHECK(cd_upgrade_is_requested(&req));
    CHECK(parse("GET / HTTP/1.1\r\nupgrade: foo, WEBSOCKET\r\n\r\n"));
    CHECK(cd_upgrade_is_requested(&req));
    CHECK(parse("GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"));
    CHECK(!cd_upgrade_is_requested(&req));
    CHECK(parse("GET /stats HTTP/1.1\r\nHost: a\r\n\r\n"));
    CHECK(!cd_upgrade_is_requested(&req));
}

/* permessage-deflate: cd_upgrade_check must hand every extension line to
 * cd_pmd_negotiate joined with ", ", and only when it is enabled. */
TEST(test_permessage_deflate)
{
    cd_pmd_config on = {true, 15, 8, 64}, off = {false, 15, 8, 64};
    cd_upgrade_config with_pmd = {protos, 4, &on};
    cd_upgrade_config pmd_off = {protos, 4, &off};
    cd_upgrade_result r;
    char out[512];

    const char *head = GET BASE_HEADERS "Sec-WebSocket-Key: " GOOD_KEY "\r\n"
                       "Sec-WebSocket-Extensions: x-unknown; a=1\r\n"
                       "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                       "Sec-WebSocket-Protocol: json\r\n\r\n";
    CHECK_EQ(check(head, &with_pmd, &r), 101);
    CHECK(r.has_pmd);
    CHECK(strncmp(r.pmd_response, "permessage-deflate", 18) == 0);
    size_t n = cd_upgrade_write_101(&r, &with_pmd, out, sizeof(out));
    CHECK(n > 0);
    out[n] = '\0';
    char want[256];
    snprintf(want, sizeof(want),
             "Sec-WebSocket-Accept: " GOOD_ACCEPT "\r\n"
             "Sec-WebSocket-Protocol: json\r\n"
             "Sec-WebSocket-Extensions: %s\r\n\r\n",
             r.pmd_response);
    CHECK(strstr(out, want) != NULL);

    CHECK_EQ(check(head, &pmd_off, &r), 101);
    CHECK(!r.has_pmd);
    CHECK_EQ(check(head, &no_ext, &r), 101);
    CHECK(!r.has_pmd);
    n = cd_upgrade_write_101(&r, &no_ext, out, sizeof(out));
    out[n] = '\0';
    CHECK(strstr(out, "Extensions") == NULL);

    CHECK_EQ(check(GET BASE_HEADERS "Sec-WebSocket-Key: " GOOD_KEY "\r\n"
                   "Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n\r\n",
                   &with_pmd, &r),
             101);
    CHECK(!r.has_pmd);
    CHECK_EQ(check(GET BASE_HEADERS "Sec-WebSocket-Key: " GOOD_KEY "\r\n\r\n",
                   &with_pmd, &r),
             101);
    CHECK(!r.has_pmd);
    /* A failed handshake negotiates nothing. */
    CHECK_EQ(check("POST / HTTP/1.1\r\n" BASE_HEADERS
                   "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                   &with_pmd, &r),
             405);
    CHECK(!r.has_pmd);
}

int main(void)
{
    RUN(test_accept_key_rfc_example);
    RUN(test_success_and_101_bytes);
    RUN(test_token_lists_and_case);
    RUN(test_method_405);
    RUN(test_version_host_upgrade_connection_400);
    RUN(test_ws_version_426);
    RUN(test_key_400);
    RUN(test_subprotocol_choice);
    RUN(test_write_101_refuses_bad_input);
    RUN(test_is_requested);
    RUN(test_permessage_deflate);
    return test_main_end();
}
