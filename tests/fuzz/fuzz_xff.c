/* fuzz_xff.c - the client address from X-Forwarded-For and Forwarded.
 *
 * Byte 0 picks the header kind (bit 0) and the peer (bits 1-2); the rest
 * is split at '\n' into up to 8 header lines.  The trusted list is fixed.
 * Checked on every input:
 *  - an untrusted peer gets itself back, whatever the header says;
 *  - the lines and the same lines joined with ", " give the same answer;
 *  - the answer is an IP address; PEER means the peer; FALLBACK is the
 *    peer or a trusted hop;
 *  - for X-Forwarded-For, the answer equals that of a naive reference that
 *    splits the joined value at commas and walks it from the right. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

#define REQUIRE(cond)              \
    do {                           \
        if (!(cond))               \
            __builtin_trap();      \
    } while (0)

#define MAX_LINES 8

static cd_cidr_list trusted;
static cd_addr peers[4];
static bool peer_trusted[4] = {true, false, true, true};

static void make_addr(cd_addr *a, const char *ip, int port)
{
    memset(a, 0, sizeof(*a));
    struct sockaddr_in *v4 = (struct sockaddr_in *)(void *)&a->ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)(void *)&a->ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        a->len = sizeof(*v4);
    } else {
        REQUIRE(inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1);
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        a->len = sizeof(*v6);
    }
}

static void setup(void)
{
    static bool done;
    char err[128];
    if (done)
        return;
    done = true;
    cd_cidr_list_init(&trusted);
    REQUIRE(cd_cidr_list_parse(&trusted, "10.0.0.0/8, 2001:db8:ffff::/48, 192.0.2.0/24",
                               err, sizeof(err)) == 0);
    make_addr(&peers[0], "10.0.0.1", 5555);
    make_addr(&peers[1], "203.0.113.9", 5555);
    make_addr(&peers[2], "2001:db8:ffff::1", 5555);
    make_addr(&peers[3], "::ffff:10.0.0.1", 5555);
}

/* ---- the reference: independent, quadratic, obviously right ---- */

static bool ref_digits_port(const char *s, size_t n, uint16_t *port)
{
    uint32_t v = 0;
    if (n < 1 || n > 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    *port = (uint16_t)v;
    return v <= 65535;
}

static bool ref_ip(const char *s, size_t n, int af, cd_addr *a)
{
    char tmp[64];
    if (n == 0 || n >= sizeof(tmp))
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (strlen(tmp) != n)
        return false;
    memset(a, 0, sizeof(*a));
    if (af == AF_INET) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)(void *)&a->ss;
        if (inet_pton(AF_INET, tmp, &v4->sin_addr) != 1)
            return false;
        v4->sin_family = AF_INET;
        a->len = sizeof(*v4);
    } else {
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)(void *)&a->ss;
        if (inet_pton(AF_INET6, tmp, &v6->sin6_addr) != 1)
            return false;
        v6->sin6_family = AF_INET6;
        a->len = sizeof(*v6);
    }
    return true;
}

static bool ref_member(const char *s, size_t n, cd_addr *a)
{
    uint16_t port = 0;
    size_t colons = 0;
    for (size_t i = 0; i < n; i++)
        colons += s[i] == ':';
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL || !ref_ip(s + 1, (size_t)(close - s - 1), AF_INET6, a))
            return false;
        size_t rest = n - (size_t)(close - s) - 1;
        if (rest > 0 && (close[1] != ':' || !ref_digits_port(close + 2, rest - 1, &port)))
            return false;
    } else if (colons == 0) {
        if (!ref_ip(s, n, AF_INET, a))
            return false;
    } else if (colons == 1) {
        const char *colon = memchr(s, ':', n);
        if (!ref_ip(s, (size_t)(colon - s), AF_INET, a) ||
            !ref_digits_port(colon + 1, n - (size_t)(colon - s) - 1, &port))
            return false;
    } else if (!ref_ip(s, n, AF_INET6, a)) {
        return false;
    }
    if (a->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)(void *)&a->ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)(void *)&a->ss)->sin6_port = htons(port);
    return true;
}

static int ref_xff(const char *joined, size_t len, const cd_addr *peer, cd_addr *out)
{
    *out = *peer;
    if (!cd_cidr_list_match_addr(&trusted, peer))
        return CD_CLIENT_PEER;
    /* Members, right to left: find each one's bounds by scanning back. */
    size_t end = len;
    bool any = false;
    cd_addr cur = *peer;
    for (;;) {
        size_t start = end;
        while (start > 0 && joined[start - 1] != ',')
            start--;
        size_t b = start, e = end;
        while (b < e && (joined[b] == ' ' || joined[b] == '\t'))
            b++;
        while (e > b && (joined[e - 1] == ' ' || joined[e - 1] == '\t'))
            e--;
        if (e > b) {
            cd_addr a;
            any = true;
            if (!ref_member(joined + b, e - b, &a)) {
                *out = cur;
                return CD_CLIENT_FALLBACK;
            }
            if (!cd_cidr_list_match_addr(&trusted, &a)) {
                *out = a;
                return CD_CLIENT_HEADER;
            }
            cur = a;
        }
        if (start == 0)
            break;
        end = start - 1;
    }
    *out = cur;
    return any ? CD_CLIENT_HEADER : CD_CLIENT_PEER;
}

/* ---- the target ---- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char joined[1 << 17];
    cd_proxy_hdr h[MAX_LINES];
    size_t n = 0;

    setup();
    if (size < 1 || size > 8192)
        return 0;
    int kind = data[0] & 1 ? CD_PROXY_FORWARDED : CD_PROXY_XFF;
    unsigned pi = (data[0] >> 1) & 3;
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    while (p <= end && n < MAX_LINES) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL || n == MAX_LINES - 1)
            nl = end;
        h[n].value = p;
        h[n].len = (size_t)(nl - p);
        n++;
        p = nl + 1;
    }
    size_t jl = 0;
    for (size_t i = 0; i < n; i++) {
        if (i) {
            joined[jl++] = ',';
            joined[jl++] = ' ';
        }
        memcpy(joined + jl, h[i].value, h[i].len);
        jl += h[i].len;
    }
    cd_proxy_hdr one = {joined, jl};

    const cd_addr *peer = &peers[pi];
    cd_addr out, out1;
    int src = cd_proxy_client_addr(&trusted, peer, (enum cd_proxy_header_kind)kind, h, n, &out);
    int src1 = cd_proxy_client_addr(&trusted, peer, (enum cd_proxy_header_kind)kind, &one, 1,
                                    &out1);
    REQUIRE(src == src1);
    REQUIRE(memcmp(&out, &out1, sizeof(out)) == 0);
    REQUIRE(src == CD_CLIENT_PEER || src == CD_CLIENT_HEADER || src == CD_CLIENT_FALLBACK);
    REQUIRE(out.ss.ss_family == AF_INET || out.ss.ss_family == AF_INET6);
    if (!peer_trusted[pi]) {
        REQUIRE(!cd_cidr_list_match_addr(&trusted, peer));
        REQUIRE(src == CD_CLIENT_PEER);
    }
    if (src == CD_CLIENT_PEER)
        REQUIRE(memcmp(&out, peer, sizeof(out)) == 0);
    if (src == CD_CLIENT_FALLBACK)
        REQUIRE(memcmp(&out, peer, sizeof(out)) == 0 ||
                cd_cidr_list_match_addr(&trusted, &out));
    if (kind == CD_PROXY_XFF) {
        cd_addr ref;
        int rsrc = ref_xff(joined, jl, peer, &ref);
        REQUIRE(rsrc == src);
        REQUIRE(memcmp(&ref, &out, sizeof(out)) == 0);
    }
    return 0;
}
