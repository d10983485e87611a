/* Unit tests for proxy.c: PROXY v1/v2 whole, at every split point and one
 * byte at a time, every malformed case; CIDR lists; the client address
 * from X-Forwarded-For and Forwarded, spoofing attempts included. */
#include <arpa/inet.h>

#include "common.h"
#include "conduit.h"
#include "net.h"
#include "proxy.h"
#include "test.h"

/* ------------------------------------------------------------------ */
/* PROXY protocol. */

typedef struct expect {
    int rc;
    size_t consumed;            /* SIZE_MAX: not checked */
    int version;
    int command;
    bool has_addr;
    const char *src, *dst;      /* cd_addr_format text */
} expect;

static void check_result(const cd_proxy_parser *p, int rc, size_t used,
                         const expect *e, const char *how)
{
    if (rc != e->rc)
        printf("  # %s: rc %d, want %d (%s)\n", how, rc, e->rc,
               p->error_reason ? p->error_reason : "-");
    CHECK_EQ(rc, e->rc);
    if (e->consumed != SIZE_MAX)
        CHECK_EQ(used, e->consumed);
    if (rc == CD_PROXY_ERROR)
        CHECK(p->error_reason != NULL);
    if (rc != CD_PROXY_DONE)
        return;
    CHECK_EQ(p->version, e->version);
    CHECK_EQ(p->command, e->command);
    CHECK_EQ(p->has_addr, e->has_addr);
    if (e->has_addr && p->has_addr) {
        char s[64], d[64];
        cd_addr_format((const struct sockaddr *)&p->src.ss, s, sizeof(s));
        cd_addr_format((const struct sockaddr *)&p->dst.ss, d, sizeof(d));
        CHECK_STR(s, e->src);
        CHECK_STR(d, e->dst);
    }
}

/* Feed [d, d+len) in the given chunks; return the verdict and the total
 * consumed.  Checks the per-call contract on the way. */
static int feed_chunks(cd_proxy_parser *p, const uint8_t *d, size_t len,
                       size_t chunk, size_t *total)
{
    int rc = CD_PROXY_NEED_MORE;
    size_t at = 0;
    *total = 0;
    while (at < len && rc == CD_PROXY_NEED_MORE) {
        size_t n = CD_MIN(chunk, len - at), used = 99999;
        rc = cd_proxy_parse(p, d + at, n, &used);
        CHECK(used <= n);
        if (rc == CD_PROXY_NEED_MORE)
            CHECK_EQ(used, n);
        *total += used;
        at += n;
    }
    return rc;
}

/* Whole, split at every point into two calls, and byte by byte. */
static void run_proxy(const uint8_t *wire, size_t len, const expect *e)
{
    cd_proxy_parser p;
    size_t used;

    cd_proxy_parser_init(&p);
    int rc = cd_proxy_parse(&p, wire, len, &used);
    check_result(&p, rc, used, e, "whole");
    if (rc != CD_PROXY_NEED_MORE) {
        size_t again = 7;                      /* sticky, consumes nothing */
        CHECK_EQ(cd_proxy_parse(&p, wire, len, &again), rc);
        CHECK_EQ(again, 0);
    }
    for (size_t cut = 0; cut <= len; cut++) {
        size_t u1 = 0, u2 = 0;
        cd_proxy_parser_init(&p);
        int rc1 = cd_proxy_parse(&p, wire, cut, &u1);
        int rc2 = rc1;
        if (rc1 == CD_PROXY_NEED_MORE) {
            CHECK_EQ(u1, cut);
            rc2 = cd_proxy_parse(&p, wire + cut, len - cut, &u2);
        }
        check_result(&p, rc2, u1 + u2, e, "split");
    }
    cd_proxy_parser_init(&p);
    rc = feed_chunks(&p, wire, len, 1, &used);
    check_result(&p, rc, used, e, "bytewise");
}

static void run_text(const char *wire, const expect *e)
{
    run_proxy((const uint8_t *)wire, strlen(wire), e);
}

/* The header followed by what the client sends next. */
static void run_text2(const char *head, const char *rest, const expect *e)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s%s", head, rest);
    run_text(buf, e);
}

#define TRAILER "GET / HTTP/1.1\r\n"

TEST(v1_valid)
{
    static const char h1[] = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
    expect e1 = {CD_PROXY_DONE, sizeof(h1) - 1, 1, CD_PROXY_CMD_PROXY, true,
                 "192.0.2.1:56324", "198.51.100.2:443"};
    run_text(h1, &e1);
    run_text2(h1, TRAILER, &e1);                  /* stops at the header */

    static const char h2[] = "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
    expect e2 = {CD_PROXY_DONE, sizeof(h2) - 1, 1, CD_PROXY_CMD_PROXY, true,
                 "[2001:db8::1]:1", "[2001:db8::2]:65535"};
    run_text2(h2, TRAILER, &e2);

    static const char h3[] = "PROXY TCP6 ::ffff:192.0.2.1 ::1 0 0\r\n";
    expect e3 = {CD_PROXY_DONE, sizeof(h3) - 1, 1, CD_PROXY_CMD_PROXY, true,
                 "[::ffff:192.0.2.1]:0", "[::1]:0"};
    run_text(h3, &e3);

    static const char h4[] = "PROXY UNKNOWN\r\n";
    expect e4 = {CD_PROXY_DONE, sizeof(h4) - 1, 1, CD_PROXY_CMD_PROXY, false, NULL, NULL};
    run_text2(h4, TRAILER, &e4);

    /* The spec's worst case is exactly 107 bytes. */
    static const char h5[] = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    CHECK_EQ(sizeof(h5) - 1, 107);
    expect e5 = {CD_PROXY_DONE, 107, 1, CD_PROXY_CMD_PROXY, false, NULL, NULL};
    run_text2(h5, TRAILER, &e5);

    static const char h6[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    expect e6 = {CD_PROXY_DONE, sizeof(h6) - 1, 1, CD_PROXY_CMD_PROXY, true,
                 "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                 "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"};
    run_text(h6, &e6);

    /* Prefixes of a valid header need more and consume everything. */
    expect more = {CD_PROXY_NEED_MORE, SIZE_MAX, 0, 0, false, NULL, NULL};
    for (size_t n = 0; n < sizeof(h1) - 1; n++)
        run_proxy((const uint8_t *)h1, n, &more);
}

TEST(v1_malformed)
{
    static const char *bad[] = {
        "GET / HTTP/1.1\r\n",
        "proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
        "PROXYTCP4 192.0.2.1 198.51.100.2 1 2\r\n",
        "PROXY\r\n",
        "PROXY \r\n",
        "PROXY  TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
        "PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 1  2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\rX",
        "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\r\n",
        "PROXY TCP4\t192.0.2.1 198.51.100.2 1 2\r\n",
        "PROXY TCP5 192.0.2.1 198.51.100.2 1 2\r\n",
        "PROXY tcp4 192.0.2.1 198.51.100.2 1 2\r\n",
        "PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
        "PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
        "PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
        "PROXY TCP4 192.0.2.256 198.51.100.2 1 2\r\n",
        "PROXY TCP4 192.0.2.01 198.51.100.2 1 2\r\n",
        "PROXY TCP4 192.0.2 198.51.100.2 1 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 080 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 -1 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 +1 2\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 1 0x10\r\n",
        "PROXY TCP4 192.0.2.1 198.51.100.2 100000 2\r\n",
        "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
        "PROXY TCP6 [::1] ::1 1 2\r\n",
        "PROXY UNKNOWNX\r\n",
        "PROXY UNKNOWN\x01\r\n",
        "PROXY UNKNOWN \x7f\r\n",
        "PROXY UNKNOWN \xc3\xa9\r\n",
        "\r\nGET",                             /* v2 signature, then not */
        "",                                     /* see NUL case below */
    };
    expect e = {CD_PROXY_ERROR, SIZE_MAX, 0, 0, false, NULL, NULL};
    for (size_t i = 0; i + 1 < CD_ARRAY_LEN(bad); i++)
        run_text(bad[i], &e);
    static const uint8_t nul[] = "PROXY TCP4 192.0.2.1\0198.51.100.2 1 2\r\n";
    run_proxy(nul, sizeof(nul) - 1, &e);

    /* Errors are found at the first bad byte, however the input is cut. */
    expect at1 = {CD_PROXY_ERROR, 1, 0, 0, false, NULL, NULL};
    run_text("GET / HTTP/1.1\r\n", &at1);
    expect at2 = {CD_PROXY_ERROR, 2, 0, 0, false, NULL, NULL};
    run_text("Pxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n", &at2);
    expect at_lf = {CD_PROXY_ERROR, 42, 0, 0, false, NULL, NULL};
    run_text("PROXY TCP4 192.0.2.1 198.51.100.2 56324 1\n", &at_lf);

    /* 108 bytes is one too many; the error comes at the 106th byte,
     * before any CRLF could arrive. */
    char line[200];
    memcpy(line, "PROXY UNKNOWN ", 14);
    memset(line + 14, 'a', 91);
    memcpy(line + 105, "\r\n", 3);
    expect ok107 = {CD_PROXY_DONE, 107, 1, CD_PROXY_CMD_PROXY, false, NULL, NULL};
    run_text(line, &ok107);
    memset(line + 14, 'a', 92);
    memcpy(line + 106, "\r\n", 3);
    expect long108 = {CD_PROXY_ERROR, 106, 0, 0, false, NULL, NULL};
    run_text(line, &long108);
    memset(line + 14, 'a', 150);
    line[164] = '\0';
    run_text(line, &long108);                 /* no CRLF at all */
}

/* Build a v2 header: signature, ver_cmd, fam, then `body` (addresses and
 * TLVs); the length field says body_len unless len_override >= 0. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body,
                 size_t body_len, long len_override)
{
    static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                    0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
    size_t field = len_override >= 0 ? (size_t)len_override : body_len;
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(field >> 8);
    out[15] = (uint8_t)field;
    if (body_len)
        memcpy(out + 16, body, body_len);
    return 16 + body_len;
}

static const uint8_t inet4[12] = {192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb};
static uint8_t inet6[36];

static void init_inet6(void)
{
    inet_pton(AF_INET6, "2001:db8::1", inet6);
    inet_pton(AF_INET6, "2001:db8::2", inet6 + 16);
    inet6[32] = 0x12;
    inet6[33] = 0x34;
    inet6[34] = 0x00;
    inet6[35] = 0x50;
}

TEST(v2_valid)
{
    static uint8_t w[5000], body[4200];
    size_t n;
    init_inet6();

    n = v2(w, 0x21, 0x11, inet4, sizeof(inet4), -1);
    expect e4 = {CD_PROXY_DONE, 28, 2, CD_PROXY_CMD_PROXY, true,
                 "192.0.2.1:56324", "198.51.100.2:443"};
    run_proxy(w, n, &e4);
    memcpy(w + n, TRAILER, 16);
    run_proxy(w, n + 16, &e4);

    n = v2(w, 0x21, 0x21, inet6, sizeof(inet6), -1);
    expect e6 = {CD_PROXY_DONE, 52, 2, CD_PROXY_CMD_PROXY, true,
                 "[2001:db8::1]:4660", "[2001:db8::2]:80"};
    run_proxy(w, n, &e6);

    /* LOCAL: the proxy's own health check; block and family ignored. */
    expect local0 = {CD_PROXY_DONE, 16, 2, CD_PROXY_CMD_LOCAL, false, NULL, NULL};
    n = v2(w, 0x20, 0x00, NULL, 0, -1);
    memcpy(w + n, TRAILER, 16);
    run_proxy(w, n + 16, &local0);
    memset(body, 0xee, 10);
    n = v2(w, 0x20, 0xff, body, 10, -1);
    expect local10 = {CD_PROXY_DONE, 26, 2, CD_PROXY_CMD_LOCAL, false, NULL, NULL};
    run_proxy(w, n, &local10);

    /* PROXY with UNSPEC: skipped whole, no address. */
    expect unspec = {CD_PROXY_DONE, 16, 2, CD_PROXY_CMD_PROXY, false, NULL, NULL};
    n = v2(w, 0x21, 0x00, NULL, 0, -1);
    run_proxy(w, n, &unspec);
    n = v2(w, 0x21, 0x00, body, 5, -1);
    unspec.consumed = 21;
    run_proxy(w, n, &unspec);

    /* UDP and UNIX: accepted without an address; TLVs still checked. */
    static const uint8_t tlv_alpn[] = {0x01, 0x00, 0x02, 'h', '2'};
    memcpy(body, inet4, 12);
    memcpy(body + 12, tlv_alpn, sizeof(tlv_alpn));
    n = v2(w, 0x21, 0x12, body, 12 + sizeof(tlv_alpn), -1);
    expect udp = {CD_PROXY_DONE, n, 2, CD_PROXY_CMD_PROXY, false, NULL, NULL};
    run_proxy(w, n, &udp);
    memset(body, 'u', 216);
    n = v2(w, 0x21, 0x31, body, 216, -1);
    expect unix_s = {CD_PROXY_DONE, n, 2, CD_PROXY_CMD_PROXY, false, NULL, NULL};
    run_proxy(w, n, &unix_s);
    n = v2(w, 0x21, 0x32, body, 216, -1);
    run_proxy(w, n, &unix_s);

    /* TCP4 with TLVs: ALPN, authority, a zero-length NOOP, CRC32C. */
    static const uint8_t tlvs[] = {0x01, 0x00, 0x02, 'h', '2',
                                   0x02, 0x00, 0x0b, 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm',
                                   0x04, 0x00, 0x00,
                                   0x03, 0x00, 0x04, 1, 2, 3, 4};
    memcpy(body, inet4, 12);
    memcpy(body + 12, tlvs, sizeof(tlvs));
    n = v2(w, 0x21, 0x11, body, 12 + sizeof(tlvs), -1);
    expect withtlv = {CD_PROXY_DONE, n, 2, CD_PROXY_CMD_PROXY, true,
                      "192.0.2.1:56324", "198.51.100.2:443"};
    run_proxy(w, n, &withtlv);

    /* The cap: exactly 4096 bytes in all is accepted. */
    size_t tlv_len = CD_PROXY_V2_MAX - 16 - 12 - 3;
    memcpy(body, inet4, 12);
    body[12] = 0xe0;
    body[13] = (uint8_t)(tlv_len >> 8);
    body[14] = (uint8_t)tlv_len;
    memset(body + 15, 'x', tlv_len);
    n = v2(w, 0x21, 0x11, body, 12 + 3 + tlv_len, -1);
    CHECK_EQ(n, CD_PROXY_V2_MAX);
    expect max = {CD_PROXY_DONE, CD_PROXY_V2_MAX, 2, CD_PROXY_CMD_PROXY, true,
                  "192.0.2.1:56324", "198.51.100.2:443"};
    run_proxy(w, n, &max);

    /* Prefixes need more. */
    memcpy(body, inet4, 12);
    memcpy(body + 12, tlvs, sizeof(tlvs));
    n = v2(w, 0x21, 0x11, body, 12 + sizeof(tlvs), -1);
    expect more = {CD_PROXY_NEED_MORE, SIZE_MAX, 0, 0, false, NULL, NULL};
    for (size_t k = 0; k < n; k++)
        run_proxy(w, k, &more);
}

TEST(v2_malformed)
{
    static uint8_t w[5000], body[4200];
    size_t n;
    expect e = {CD_PROXY_ERROR, SIZE_MAX, 0, 0, false, NULL, NULL};
    init_inet6();

    /* Every signature byte, flipped: found at that byte. */
    for (size_t i = 0; i < 12; i++) {
        n = v2(w, 0x21, 0x11, inet4, sizeof(inet4), -1);
        w[i] ^= 0x40;
        expect at = {CD_PROXY_ERROR, i + 1, 0, 0, false, NULL, NULL};
        run_proxy(w, n, &at);
    }
    /* Version and command (byte 13). */
    static const uint8_t bad_vc[] = {0x11, 0x31, 0x01, 0xf1, 0x22, 0x2f, 0x23};
    for (size_t i = 0; i < sizeof(bad_vc); i++) {
        n = v2(w, bad_vc[i], 0x11, inet4, sizeof(inet4), -1);
        expect at = {CD_PROXY_ERROR, 13, 0, 0, false, NULL, NULL};
        run_proxy(w, n, &at);
    }
    /* Family bytes the spec does not define (byte 14), for PROXY. */
    static const uint8_t bad_fam[] = {0x01, 0x02, 0x10, 0x13, 0x20, 0x23, 0x30, 0x41, 0xff};
    for (size_t i = 0; i < sizeof(bad_fam); i++) {
        n = v2(w, 0x21, bad_fam[i], inet4, sizeof(inet4), -1);
        expect at = {CD_PROXY_ERROR, 14, 0, 0, false, NULL, NULL};
        run_proxy(w, n, &at);
    }
    /* Length too short for the family: found at the 16th byte. */
    expect at16 = {CD_PROXY_ERROR, 16, 0, 0, false, NULL, NULL};
    n = v2(w, 0x21, 0x11, inet4, 11, -1);
    run_proxy(w, n, &at16);
    n = v2(w, 0x21, 0x21, inet6, 35, -1);
    run_proxy(w, n, &at16);
    n = v2(w, 0x21, 0x21, inet4, 12, -1);
    run_proxy(w, n, &at16);
    memset(body, 0, 216);
    n = v2(w, 0x21, 0x31, body, 215, -1);
    run_proxy(w, n, &at16);
    /* Over the cap, announced: refused before a byte of the block. */
    n = v2(w, 0x21, 0x11, inet4, sizeof(inet4), CD_PROXY_V2_MAX - 16 + 1);
    run_proxy(w, n, &at16);
    n = v2(w, 0x20, 0x00, NULL, 0, 0xffff);
    run_proxy(w, n, &at16);
    /* TLVs that do not tile the block. */
    memcpy(body, inet4, 12);
    body[12] = 0x01;
    n = v2(w, 0x21, 0x11, body, 13, -1);      /* 1 stray byte */
    expect at28 = {CD_PROXY_ERROR, 28, 0, 0, false, NULL, NULL};
    run_proxy(w, n, &at28);
    body[13] = 0x00;
    n = v2(w, 0x21, 0x11, body, 14, -1);      /* 2 stray bytes */
    run_proxy(w, n, &at28);
    body[13] = 0x00;
    body[14] = 0x05;                          /* value longer than the rest */
    memset(body + 15, 'v', 4);
    n = v2(w, 0x21, 0x11, body, 19, -1);
    expect at31 = {CD_PROXY_ERROR, 31, 0, 0, false, NULL, NULL};
    run_proxy(w, n, &at31);
    /* A good TLV followed by a truncated one. */
    static const uint8_t t2[] = {0x04, 0x00, 0x00, 0x01, 0x00};
    memcpy(body + 12, t2, sizeof(t2));
    n = v2(w, 0x21, 0x11, body, 12 + sizeof(t2), -1);
    expect at31b = {CD_PROXY_ERROR, 31, 0, 0, false, NULL, NULL};
    run_proxy(w, n, &at31b);
    /* A v2 header that is never completed just needs more. */
    n = v2(w, 0x21, 0x11, inet4, sizeof(inet4), -1);
    expect more = {CD_PROXY_NEED_MORE, n - 1, 0, 0, false, NULL, NULL};
    run_proxy(w, n - 1, &more);
    (void)e;
}

/* ------------------------------------------------------------------ */
/* CIDR lists. */

static cd_addr A(const char *ip, int port)
{
    cd_addr a;
    memset(&a, 0, sizeof(a));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a.ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a.ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        a.len = sizeof(*v4);
    } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        a.len = sizeof(*v6);
    } else {
        printf("  # bad test address %s\n", ip);
    }
    return a;
}

static bool M(const cd_cidr_list *l, const char *ip)
{
    cd_addr a = A(ip, 1);
    return cd_cidr_list_match_addr(l, &a);
}

static int parse(cd_cidr_list *l, const char *text, char *err)
{
    err[0] = '\0';
    return cd_cidr_list_parse(l, text, err, 256);
}

TEST(cidr_parse_and_match)
{
    cd_cidr_list l;
    char err[256];
    cd_cidr_list_init(&l);
    CHECK_EQ(parse(&l, "10.0.0.0/8, 2001:db8::/32, 127.0.0.1", err), 0);
    CHECK_EQ(l.n, 3);
    CHECK(M(&l, "10.0.0.0"));
    CHECK(M(&l, "10.255.255.255"));
    CHECK(!M(&l, "11.0.0.0"));
    CHECK(!M(&l, "9.255.255.255"));
    CHECK(M(&l, "2001:db8::1"));
    CHECK(M(&l, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"));
    CHECK(!M(&l, "2001:db9::"));
    CHECK(M(&l, "127.0.0.1"));
    CHECK(!M(&l, "127.0.0.2"));
    /* IPv4-mapped IPv6 peers match IPv4 entries. */
    CHECK(M(&l, "::ffff:10.1.2.3"));
    CHECK(M(&l, "::ffff:127.0.0.1"));
    CHECK(!M(&l, "::ffff:11.1.2.3"));
    CHECK(!M(&l, "::1"));
    /* Appends; blanks and tabs around entries are fine. */
    CHECK_EQ(parse(&l, " \t::1 ,\t192.168.0.0/16 ", err), 0);
    CHECK_EQ(l.n, 5);
    CHECK(M(&l, "::1"));
    CHECK(M(&l, "192.168.200.1"));
    CHECK_EQ(parse(&l, "", err), 0);
    CHECK_EQ(parse(&l, "   ", err), 0);
    CHECK_EQ(l.n, 5);
    /* Other families never match; a NULL list matches nothing. */
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    ss.ss_family = AF_UNIX;
    CHECK(!cd_cidr_list_match(&l, (struct sockaddr *)&ss, sizeof(ss)));
    CHECK(!cd_cidr_list_match(NULL, (struct sockaddr *)&ss, sizeof(ss)));
    cd_cidr_list_fini(&l);
    CHECK_EQ(l.n, 0);
    CHECK(!M(&l, "10.0.0.1"));                 /* empty list */
    cd_cidr_list_fini(&l);                      /* twice is fine */
}

TEST(cidr_prefix_edges)
{
    cd_cidr_list l;
    char err[256];
    cd_cidr_list_init(&l);
    CHECK_EQ(parse(&l, "0.0.0.0/0", err), 0);
    CHECK(M(&l, "0.0.0.0"));
    CHECK(M(&l, "255.255.255.255"));
    CHECK(M(&l, "::ffff:8.8.8.8"));
    CHECK(!M(&l, "2001:db8::1"));              /* /0 of IPv4 is only IPv4 */
    CHECK(!M(&l, "::"));
    cd_cidr_list_fini(&l);

    CHECK_EQ(parse(&l, "::/0", err), 0);        /* everything, IPv4 included */
    CHECK(M(&l, "::1"));
    CHECK(M(&l, "ffff::"));
    CHECK(M(&l, "1.2.3.4"));
    cd_cidr_list_fini(&l);

    CHECK_EQ(parse(&l, "1.2.3.4/32, 2001:db8::7/128", err), 0);
    CHECK(M(&l, "1.2.3.4"));
    CHECK(!M(&l, "1.2.3.5"));
    CHECK(!M(&l, "1.2.3.3"));
    CHECK(M(&l, "2001:db8::7"));
    CHECK(!M(&l, "2001:db8::6"));
    CHECK(!M(&l, "2001:db8::8"));
    cd_cidr_list_fini(&l);

    CHECK_EQ(parse(&l, "128.0.0.0/1, 10.0.0.0/9, 100.64.0.0/31, 8000::/1, 2001:db8::/127", err), 0);
    CHECK(M(&l, "200.0.0.0"));
    CHECK(!M(&l, "127.255.255.255"));
    CHECK(M(&l, "10.127.255.255"));
    CHECK(!M(&l, "10.128.0.0"));
    CHECK(M(&l, "100.64.0.0"));
    CHECK(M(&l, "100.64.0.1"));
    CHECK(!M(&l, "100.64.0.2"));
    CHECK(M(&l, "8000::"));
    CHECK(!M(&l, "7fff:ffff::"));
    CHECK(M(&l, "2001:db8::1"));
    CHECK(!M(&l, "2001:db8::2"));
    cd_cidr_list_fini(&l);

    CHECK_EQ(parse(&l, "::ffff:10.0.0.0/104", err), 0);  /* mapped form */
    CHECK(M(&l, "10.9.8.7"));
    CHECK(!M(&l, "11.0.0.1"));
    cd_cidr_list_fini(&l);
}

TEST(cidr_malformed)
{
    static const char *bad[] = {
        "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8",
        "10.0.0.0/08", "10.0.0.0/8/8", "10.0.0.0 /8", "10.0.0.0/ 8", "10.0.0",
        "localhost", "[::1]", "fe80::1%eth0", "a,,b", "10.0.0.0/8,",
        ",10.0.0.0/8", "1.2.3.4/1000", "256.0.0.0/8", "10.0.0.0/8 10.0.0.1",
        "10.0.0.0/8;10.0.0.1", "/8", "010.0.0.0/8", "10.0.0.0/8x", "::/0x",
        "10.0.0.0/8, ,::1", "2001:db8::1/32", "0.0.0.1/0", "::1/0",
    };
    cd_cidr_list l;
    char err[256];
    cd_cidr_list_init(&l);
    CHECK_EQ(parse(&l, "192.0.2.0/24", err), 0);
    for (size_t i = 0; i < CD_ARRAY_LEN(bad); i++) {
        int rc = parse(&l, bad[i], err);
        if (rc != CONDUIT_EINVAL)
            printf("  # accepted \"%s\"\n", bad[i]);
        CHECK_EQ(rc, CONDUIT_EINVAL);
        CHECK(err[0] != '\0');
        CHECK_EQ(l.n, 1);                       /* all or nothing */
    }
    /* Host bits: the message suggests the network. */
    CHECK_EQ(parse(&l, "10.0.0.1/8", err), CONDUIT_EINVAL);
    CHECK(strstr(err, "10.0.0.0/8") != NULL);
    CHECK_EQ(parse(&l, "2001:db8::1/32", err), CONDUIT_EINVAL);
    CHECK(strstr(err, "2001:db8::/32") != NULL);
    /* A good entry before a bad one is not kept either. */
    CHECK_EQ(parse(&l, "10.0.0.0/8, nonsense", err), CONDUIT_EINVAL);
    CHECK(strstr(err, "nonsense") != NULL);
    CHECK_EQ(l.n, 1);
    CHECK(!M(&l, "10.0.0.1"));
    /* The entry cap. */
    static char many[CD_CIDR_MAX * 20];
    size_t at = 0;
    for (unsigned i = 0; i <= CD_CIDR_MAX; i++)
        at += (size_t)snprintf(many + at, sizeof(many) - at, "%s10.%u.%u.0/24",
                               i ? "," : "", i / 256, i % 256);
    CHECK_EQ(parse(&l, many, err), CONDUIT_EINVAL);
    CHECK_EQ(l.n, 1);
    cd_cidr_list_fini(&l);
}

/* ------------------------------------------------------------------ */
/* X-Forwarded-For and Forwarded. */

static cd_cidr_list trusted;

static void setup_trusted(void)
{
    char err[256];
    cd_cidr_list_fini(&trusted);
    CHECK_EQ(parse(&trusted, "10.0.0.0/8, 2001:db8:ffff::/48", err), 0);
}

/* Ask with the header lines in `lines` (NULL-terminated); check the
 * formatted answer and its source.  Also asks with the lines joined by
 * ", " into one: the answer must not change (RFC 9110 §5.3). */
static void ask(const char *peer_ip, int kind, const char *const *lines,
                const char *want, int want_src)
{
    cd_proxy_hdr h[8];
    size_t n = 0;
    char joined[1024] = "";
    for (; lines[n] != NULL; n++) {
        h[n].value = lines[n];
        h[n].len = strlen(lines[n]);
        if (n)
            strcat(joined, ", ");
        strcat(joined, lines[n]);
    }
    cd_addr peer = A(peer_ip, 5555), out;
    memset(&out, 0x5a, sizeof(out));
    int src = cd_proxy_client_addr(&trusted, &peer, kind, h, n, &out);
    char got[80];
    cd_addr_format((const struct sockaddr *)&out.ss, got, sizeof(got));
    if (src != want_src || strcmp(got, want) != 0)
        printf("  # %s \"%s\" from %s: got %s (%d), want %s (%d)\n",
               kind == CD_PROXY_XFF ? "XFF" : "Forwarded", joined, peer_ip,
               got, src, want, want_src);
    CHECK_EQ(src, want_src);
    CHECK_STR(got, want);
    if (n > 1) {
        cd_proxy_hdr one = {joined, strlen(joined)};
        cd_addr out2;
        CHECK_EQ(cd_proxy_client_addr(&trusted, &peer, kind, &one, 1, &out2), src);
        CHECK_MEM(&out2, &out, sizeof(out));
    }
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})
#define XFF CD_PROXY_XFF
#define FWD CD_PROXY_FORWARDED
#define PEER "10.0.0.1:5555"

TEST(xff_basic_and_spoofing)
{
    setup_trusted();
    /* An untrusted peer's header is never read: forged XFF changes nothing. */
    ask("203.0.113.9", XFF, L("1.1.1.1"), "203.0.113.9:5555", CD_CLIENT_PEER);
    ask("203.0.113.9", XFF, L("10.0.0.5"), "203.0.113.9:5555", CD_CLIENT_PEER);
    ask("203.0.113.9", FWD, L("for=1.1.1.1"), "203.0.113.9:5555", CD_CLIENT_PEER);
    ask("2001:db8::9", XFF, L("1.1.1.1"), "[2001:db8::9]:5555", CD_CLIENT_PEER);
    /* Trusted peer, no header or only empty members. */
    ask("10.0.0.1", XFF, L(NULL), PEER, CD_CLIENT_PEER);
    ask("10.0.0.1", XFF, L(""), PEER, CD_CLIENT_PEER);
    ask("10.0.0.1", XFF, L(" , ,"), PEER, CD_CLIENT_PEER);
    /* The client as the proxy saw it. */
    ask("10.0.0.1", XFF, L("1.1.1.1"), "1.1.1.1:0", CD_CLIENT_HEADER);
    /* A client that forges entries gets them ignored: the proxy appended
     * the real address to the right. */
    ask("10.0.0.1", XFF, L("6.6.6.6, 1.1.1.1"), "1.1.1.1:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", XFF, L("10.0.0.7, 1.1.1.1"), "1.1.1.1:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", XFF, L("6.6.6.6", "1.1.1.1"), "1.1.1.1:0", CD_CLIENT_HEADER);
    /* Trusted hops to the right are skipped. */
    ask("10.0.0.1", XFF, L("6.6.6.6, 1.1.1.1, 10.0.0.2, 10.9.9.9"), "1.1.1.1:0",
        CD_CLIENT_HEADER);
    ask("10.0.0.1", XFF, L("1.1.1.1", "10.0.0.2"), "1.1.1.1:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", XFF, L("1.1.1.1, 2001:db8:ffff::7"), "1.1.1.1:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", XFF, L("1.1.1.1, ::ffff:10.0.0.9"), "1.1.1.1:0", CD_CLIENT_HEADER);
    /* Every entry trusted: the leftmost. */
    ask("10.0.0.1", XFF, L("10.0.0.3, 10.0.0.2"), "10.0.0.3:0", CD_CLIENT_HEADER);
    /* Trusted peers over IPv6 and IPv4-mapped. */
    ask("2001:db8:ffff::1", XFF, L("1.1.1.1"), "1.1.1.1:0", CD_CLIENT_HEADER);
    ask("::ffff:10.0.0.1", XFF, L("1.1.1.1"), "1.1.1.1:0", CD_CLIENT_HEADER);
}

TEST(xff_forms_and_invalid)
{
    setup_trusted();
    ask("10.0.0.1", XFF, L("1.1.1.1:4711"), "1.1.1.1:4711", CD_CLIENT_HEADER);
    ask("10.0.0.1", XFF, L("2001:db8::1"), "[2001:db8::1]:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", XFF, L("[2001:db8::1]"), "[2001:db8::1]:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", XFF, L("[2001:db8::1]:4711"), "[2001:db8::1]:4711", CD_CLIENT_HEADER);
    ask("10.0.0.1", XFF, L("  1.1.1.1\t, ,, 10.0.0.2 ,"), "1.1.1.1:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", XFF, L("::ffff:1.1.1.1"), "[::ffff:1.1.1.1]:0", CD_CLIENT_HEADER);
    /* Something that is not an address stops the walk: the last trusted
     * hop before it, or the peer. */
    static const char *junk[] = {
        "garbage", "unknown", "_hidden", "1.1.1.1:", "1.1.1.1:65536", "1.1.1.1:x",
        "[2001:db8::1", "[2001:db8::1]x", "[2001:db8::1]:", "01.1.1.1", "1.1.1",
        "fe80::1%eth0", "[1.2.3.4]", "1.1.1.1 2.2.2.2", "\"1.1.1.1\"", "[]",
        "1.1.1.1:80:80", "2001:db8::1:80]",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    };
    char line[256];
    for (size_t i = 0; i < CD_ARRAY_LEN(junk); i++) {
        ask("10.0.0.1", XFF, L(junk[i]), PEER, CD_CLIENT_FALLBACK);
        snprintf(line, sizeof(line), "1.1.1.1, %s, 10.0.0.2", junk[i]);
        ask("10.0.0.1", XFF, L(line), "10.0.0.2:0", CD_CLIENT_FALLBACK);
        snprintf(line, sizeof(line), "%s, 1.1.1.1", junk[i]);
        ask("10.0.0.1", XFF, L(line), "1.1.1.1:0", CD_CLIENT_HEADER);
    }
    ask("10.0.0.1", XFF, L("1.1.1.1, garbage"), PEER, CD_CLIENT_FALLBACK);
    /* Long runs of blanks are OWS, not part of the member. */
    char wide[200];
    snprintf(wide, sizeof(wide), "%80s1.1.1.1%80s", "", "");
    ask("10.0.0.1", XFF, L(wide), "1.1.1.1:0", CD_CLIENT_HEADER);
    /* A NUL byte cannot cut a member short (the HTTP parser refuses NUL,
     * but this helper does not rely on it). */
    static const char nul[] = "1.1.1.1\0junk";
    cd_proxy_hdr h = {nul, sizeof(nul) - 1};
    cd_addr peer = A("10.0.0.1", 5555), out;
    CHECK_EQ(cd_proxy_client_addr(&trusted, &peer, XFF, &h, 1, &out), CD_CLIENT_FALLBACK);
    static const char fnul[] = "for=\"1.1.1.1\0\"";
    h = (cd_proxy_hdr){fnul, sizeof(fnul) - 1};
    CHECK_EQ(cd_proxy_client_addr(&trusted, &peer, FWD, &h, 1, &out), CD_CLIENT_FALLBACK);
    ask("10.0.0.1", XFF, L("garbage, 10.0.0.3, 10.0.0.2"), "10.0.0.3:0", CD_CLIENT_FALLBACK);
}

TEST(forwarded)
{
    setup_trusted();
    /* RFC 7239 §4 and §7.4 examples. */
    ask("10.0.0.1", FWD, L("for=192.0.2.60;proto=http;by=203.0.113.43"), "192.0.2.60:0",
        CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("for=\"[2001:db8:cafe::17]:4711\""), "[2001:db8:cafe::17]:4711",
        CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("for=192.0.2.43, for=198.51.100.17"), "198.51.100.17:0",
        CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("for=192.0.2.43", "for=198.51.100.17;by=10.0.0.1"),
        "198.51.100.17:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("for=192.0.2.43, for=10.0.0.2"), "192.0.2.43:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("for=10.0.0.3, for=10.0.0.2"), "10.0.0.3:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("for=\"192.0.2.60:8080\""), "192.0.2.60:8080", CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("For=192.0.2.60"), "192.0.2.60:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("FOR=192.0.2.60"), "192.0.2.60:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("for=\"\\[2001:db8::1\\]\""), "[2001:db8::1]:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("for=\"[2001:db8::1]:_p-1.x\""), "[2001:db8::1]:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("by=\"[2001:db8::1]\";for=1.1.1.1"), "1.1.1.1:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("for=192.0.2.60 ; proto=http"), "192.0.2.60:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L(", for=1.1.1.1 ,,"), "1.1.1.1:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("for=1.1.1.1;;proto=http;"), "1.1.1.1:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("proto=\"a,b\";for=1.1.1.1"), "1.1.1.1:0", CD_CLIENT_HEADER);
    /* Obfuscated or unknown nodes, missing or doubled for=, syntax
     * errors: not an address, the walk stops there. */
    static const char *noaddr[] = {
        "for=unknown", "for=UNKNOWN", "for=_hidden", "for=\"_SEVKISEK\"", "proto=https",
        "for=192.0.2.1;for=192.0.2.2", "for=192.0.2.60:8080", "for=2001:db8::1",
        "for=\"2001:db8::1\"", "for=\"\"", "for=", "for = 1.2.3.4", "for=1.2.3.4 junk",
        "for=\"1.2.3.4", "for=1.2.3.4\"x\"", "for=[2001:db8::1]", "=1.2.3.4",
        "for=\"[2001:db8::1]:_\"", "for=\"[2001:db8::1]:_a/b\"", "for=\"1.2.3.4:99999\"",
        "for=\"1.2.3.4\x01\"", "for=\"1.2.3.4\\\x01\"", "for=1.2.3.4;x=\"a\\",
    };
    char line[256];
    for (size_t i = 0; i < CD_ARRAY_LEN(noaddr); i++) {
        ask("10.0.0.1", FWD, L(noaddr[i]), PEER, CD_CLIENT_FALLBACK);
        snprintf(line, sizeof(line), "%s, for=10.0.0.2", noaddr[i]);
        /* An unterminated quote swallows what follows: no last hop. */
        bool swallows = strchr(noaddr[i], '"') != NULL &&
                        (strcmp(noaddr[i], "for=\"1.2.3.4") == 0 ||
                         strcmp(noaddr[i], "for=1.2.3.4;x=\"a\\") == 0);
        ask("10.0.0.1", FWD, L(line), swallows ? PEER : "10.0.0.2:0", CD_CLIENT_FALLBACK);
        snprintf(line, sizeof(line), "%s, for=1.1.1.1", noaddr[i]);
        ask("10.0.0.1", FWD, L(line), swallows ? PEER : "1.1.1.1:0",
            swallows ? CD_CLIENT_FALLBACK : CD_CLIENT_HEADER);
    }
    /* A syntax error spoils only its element. */
    ask("10.0.0.1", FWD, L("for=1.1.1.1;garbage, for=2.2.2.2"), "2.2.2.2:0", CD_CLIENT_HEADER);
    ask("10.0.0.1", FWD, L("for=2.2.2.2, for=1.1.1.1;garbage"), PEER, CD_CLIENT_FALLBACK);
}

/* The attacks: a client sends its own Forwarded/XFF through a proxy that
 * appends the real address.  Whatever the client writes, the answer is the
 * real address or a fallback to a trusted hop, never a chosen address. */
TEST(forwarded_spoofing)
{
    setup_trusted();
    static const char *forged[] = {
        "for=6.6.6.6", "for=6.6.6.6;x=\"", "for=6.6.6.6;x=\"\\", "for=\"6.6.6.6",
        "for=6.6.6.6, for=10.0.0.2", "for=6.6.6.6;", "for=6.6.6.6,", "for=\"[::6]\"",
        "x=\"", "\"", "for=6.6.6.6\\", "for=6.6.6.6;by=\"\\\"",
    };
    static const char *appended[] = {
        "for=1.1.1.1", "for=\"[2001:db8::5]:80\"", "for=1.1.1.1;proto=https",
    };
    static const char *real[] = {"1.1.1.1:0", "[2001:db8::5]:80", "1.1.1.1:0"};
    for (size_t i = 0; i < CD_ARRAY_LEN(forged); i++) {
        for (size_t j = 0; j < CD_ARRAY_LEN(appended); j++) {
            const char *const lines[] = {forged[i], appended[j], NULL};
            cd_proxy_hdr h[2] = {{lines[0], strlen(lines[0])}, {lines[1], strlen(lines[1])}};
            cd_addr peer = A("10.0.0.1", 5555), out;
            int src = cd_proxy_client_addr(&trusted, &peer, FWD, h, 2, &out);
            char got[80];
            cd_addr_format((const struct sockaddr *)&out.ss, got, sizeof(got));
            bool ok = (src == CD_CLIENT_HEADER && strcmp(got, real[j]) == 0) ||
                      (src == CD_CLIENT_FALLBACK && strcmp(got, PEER) == 0);
            if (!ok)
                printf("  # forged \"%s\" + \"%s\" -> %s (%d)\n", forged[i], appended[j],
                       got, src);
            CHECK(ok);
            CHECK(strstr(got, "6.6.6.6") == NULL && strstr(got, "::6]") == NULL);
        }
    }
    /* XFF has no quoting: the appended entry always wins. */
    static const char *xforged[] = {"6.6.6.6", "6.6.6.6,", "\"", "6.6.6.6, 10.0.0.2", "[",
                                    "6.6.6.6 ,  , "};
    for (size_t i = 0; i < CD_ARRAY_LEN(xforged); i++) {
        ask("10.0.0.1", XFF, L(xforged[i], "1.1.1.1"), "1.1.1.1:0", CD_CLIENT_HEADER);
        char line[128];
        snprintf(line, sizeof(line), "%s, 1.1.1.1", xforged[i]);
        ask("10.0.0.1", XFF, L(line), "1.1.1.1:0", CD_CLIENT_HEADER);
    }
}

int main(void)
{
    RUN(v1_valid);
    RUN(v1_malformed);
    RUN(v2_valid);
    RUN(v2_malformed);
    RUN(cidr_parse_and_match);
    RUN(cidr_prefix_edges);
    RUN(cidr_malformed);
    RUN(xff_basic_and_spoofing);
    RUN(xff_forms_and_invalid);
    RUN(forwarded);
    RUN(forwarded_spoofing);
    cd_cidr_list_fini(&trusted);
    return test_main_end();
}
