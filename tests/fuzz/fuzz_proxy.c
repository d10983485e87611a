/* fuzz_proxy.c - the PROXY protocol parser under random splits, and the
 * CIDR list parser on the same bytes.
 *
 * The first byte seeds the split pattern (0: one byte per call); the rest
 * is the wire.  The input is parsed whole and in pieces, and the two runs
 * must agree on the verdict, the bytes consumed, the reason and every
 * result field.  A header is always decided within its size limit, and
 * DONE/ERROR are sticky.  The bytes are then read as a CIDR list: a list
 * that parses must parse again the same way and match deterministically. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

#define REQUIRE(cond)              \
    do {                           \
        if (!(cond))               \
            __builtin_trap();      \
    } while (0)

static int feed_split(cd_proxy_parser *p, const uint8_t *d, size_t len,
                      uint8_t seed, size_t *consumed)
{
    uint32_t x = 0x9e3779b9u ^ seed;
    size_t at = 0;
    int rc = CD_PROXY_NEED_MORE;

    cd_proxy_parser_init(p);
    *consumed = 0;
    while (rc == CD_PROXY_NEED_MORE && at < len) {
        /* xorshift32: chunk lengths 1..64, or 1 byte when seed is 0. */
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        size_t n = seed == 0 ? 1 : 1 + x % 64;
        size_t used = 0;
        if (n > len - at)
            n = len - at;
        rc = cd_proxy_parse(p, d + at, n, &used);
        REQUIRE(used <= n);
        REQUIRE(rc != CD_PROXY_NEED_MORE || used == n);
        *consumed += used;
        at += n;
    }
    return rc;
}

static void check_addr(const cd_addr *a)
{
    REQUIRE(a->ss.ss_family == AF_INET || a->ss.ss_family == AF_INET6);
    REQUIRE(a->len == (a->ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                  : sizeof(struct sockaddr_in6)));
}

static void fuzz_cidr(const uint8_t *d, size_t len)
{
    char text[512];
    char err[128];
    cd_cidr_list l;

    if (len >= sizeof(text))
        len = sizeof(text) - 1;
    memcpy(text, d, len);
    text[len] = '\0';
    cd_cidr_list_init(&l);
    int rc = cd_cidr_list_parse(&l, text, err, sizeof(err));
    REQUIRE(rc == 0 || rc < 0);
    if (rc != 0) {
        REQUIRE(l.n == 0);                  /* all or nothing */
        REQUIRE(memchr(err, '\0', sizeof(err)) != NULL);
        cd_cidr_list_fini(&l);
        return;
    }
    size_t n = l.n;
    for (size_t i = 0; i < n; i++) {
        REQUIRE(l.v[i].bits <= 128);
        /* The network address itself always matches its entry. */
        cd_addr a;
        memset(&a, 0, sizeof(a));
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)(void *)&a.ss;
        v6->sin6_family = AF_INET6;
        memcpy(&v6->sin6_addr, l.v[i].addr, 16);
        a.len = sizeof(*v6);
        REQUIRE(cd_cidr_list_match_addr(&l, &a));
    }
    REQUIRE(cd_cidr_list_parse(&l, text, err, sizeof(err)) == 0);
    REQUIRE(l.n == 2 * n);
    REQUIRE(memcmp(l.v, l.v + n, n * sizeof(*l.v)) == 0);
    cd_cidr_list_fini(&l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static cd_proxy_parser whole, split;
    size_t used_whole = 0, used_split = 0;

    if (size < 1)
        return 0;
    uint8_t seed = data[0];
    data++;
    size--;

    cd_proxy_parser_init(&whole);
    int rc = cd_proxy_parse(&whole, data, size, &used_whole);
    int rc_split = feed_split(&split, data, size, seed, &used_split);
    REQUIRE(rc == CD_PROXY_NEED_MORE || rc == CD_PROXY_DONE || rc == CD_PROXY_ERROR);
    REQUIRE(rc == rc_split);
    REQUIRE(used_whole == used_split);
    REQUIRE(used_whole <= size);
    REQUIRE(rc != CD_PROXY_NEED_MORE || used_whole == size);
    /* A header is decided within its limit. */
    REQUIRE(rc != CD_PROXY_NEED_MORE || size < CD_PROXY_V2_MAX);
    REQUIRE(rc == CD_PROXY_NEED_MORE || used_whole >= 1);

    if (rc != CD_PROXY_NEED_MORE) {
        size_t again = 1;
        REQUIRE(cd_proxy_parse(&whole, data, size, &again) == rc);
        REQUIRE(again == 0);
    }
    if (rc == CD_PROXY_ERROR) {
        REQUIRE(whole.error_reason != NULL && split.error_reason != NULL);
        REQUIRE(strcmp(whole.error_reason, split.error_reason) == 0);
        REQUIRE(!whole.has_addr);
    }
    if (rc == CD_PROXY_DONE) {
        REQUIRE(whole.version == split.version);
        REQUIRE(whole.command == split.command);
        REQUIRE(whole.has_addr == split.has_addr);
        REQUIRE(whole.version == 1 || whole.version == 2);
        if (whole.version == 1)
            REQUIRE(used_whole <= CD_PROXY_V1_MAX && data[used_whole - 1] == '\n');
        else
            REQUIRE(used_whole >= 16 && used_whole <= CD_PROXY_V2_MAX);
        if (whole.command == CD_PROXY_CMD_LOCAL)
            REQUIRE(!whole.has_addr);
        if (whole.has_addr) {
            check_addr(&whole.src);
            check_addr(&whole.dst);
            REQUIRE(whole.src.ss.ss_family == whole.dst.ss.ss_family);
            REQUIRE(memcmp(&whole.src, &split.src, sizeof(whole.src)) == 0);
            REQUIRE(memcmp(&whole.dst, &split.dst, sizeof(whole.dst)) == 0);
        }
    }
    fuzz_cidr(data, size);
    return 0;
}
