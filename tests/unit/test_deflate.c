/* test_deflate.c - permessage-deflate: negotiation table, round trips against
 * zlib itself, chunking, the output cap, context takeover and lazy streams. */
#define ZLIB_CONST
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "conduit.h"
#include "deflate.h"
#include "test.h"

#define KIB 1024u
#define MIB (1024u * 1024u)

static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};

static cd_pmd_config config(uint8_t bits)
{
    cd_pmd_config c = {true, bits, 8, 0};
    return c;
}

static int negotiate(const char *offer, const cd_pmd_config *cfg, cd_pmd_params *p,
                     char *resp)
{
    return cd_pmd_negotiate(offer, strlen(offer), cfg, p, resp, CD_PMD_RESPONSE_MAX);
}

/* ---------------------------------------------------------------- negotiation */

typedef struct neg_case {
    const char *offer;
    uint8_t cfg_bits;
    int accepted;
    const char *resp;
    bool snct;
    bool cnct;
    uint8_t sbits;
    uint8_t cbits;
} neg_case;

static const neg_case neg_cases[] = {
    /* plain offer and each parameter alone */
    {"permessage-deflate", 15, 1, "permessage-deflate", false, false, 15, 15},
    {"permessage-deflate; server_no_context_takeover", 15, 1,
     "permessage-deflate; server_no_context_takeover", true, false, 15, 15},
    {"permessage-deflate; client_no_context_takeover", 15, 1,
     "permessage-deflate; client_no_context_takeover", false, true, 15, 15},
    {"permessage-deflate; server_max_window_bits=10", 15, 1,
     "permessage-deflate; server_max_window_bits=10", false, false, 10, 15},
    {"permessage-deflate; client_max_window_bits", 15, 1, "permessage-deflate", false, false,
     15, 15},
    {"permessage-deflate; client_max_window_bits=10", 15, 1,
     "permessage-deflate; client_max_window_bits=10", false, false, 15, 10},
    {"permessage-deflate; server_no_context_takeover; client_max_window_bits=10", 15, 1,
     "permessage-deflate; server_no_context_takeover; client_max_window_bits=10", true, false,
     15, 10},
    /* the server window: the client's value, lowered to ours, never raised */
    {"permessage-deflate; server_max_window_bits=12", 10, 1,
     "permessage-deflate; server_max_window_bits=10", false, false, 10, 15},
    {"permessage-deflate; server_max_window_bits=9", 12, 1,
     "permessage-deflate; server_max_window_bits=9", false, false, 9, 15},
    {"permessage-deflate", 12, 1, "permessage-deflate; server_max_window_bits=12", false,
     false, 12, 15},
    {"permessage-deflate; server_max_window_bits=8", 15, 1,
     "permessage-deflate; server_max_window_bits=8", false, false, 8, 15},
    {"permessage-deflate; server_max_window_bits=15", 15, 1,
     "permessage-deflate; server_max_window_bits=15", false, false, 15, 15},
    {"permessage-deflate; client_max_window_bits=8", 15, 1,
     "permessage-deflate; client_max_window_bits=8", false, false, 15, 8},
    /* quoted values (RFC 6455 §9.1: must unescape to a token) */
    {"permessage-deflate; server_max_window_bits=\"10\"", 15, 1,
     "permessage-deflate; server_max_window_bits=10", false, false, 10, 15},
    {"permessage-deflate; client_max_window_bits=\"1\\1\"", 15, 1,
     "permessage-deflate; client_max_window_bits=11", false, false, 15, 11},
    {"permessage-deflate; client_max_window_bits=\"\"", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; client_max_window_bits=\"1 0\"", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; server_max_window_bits=\"10", 15, 0, "", false, false, 15, 15},
    /* invalid values */
    {"permessage-deflate; server_max_window_bits=7", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; server_max_window_bits=16", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; server_max_window_bits=abc", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; server_max_window_bits=010", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; server_max_window_bits=08", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; server_max_window_bits=+9", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; server_max_window_bits", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; server_max_window_bits=", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; client_max_window_bits=7", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; client_max_window_bits=16", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; client_max_window_bits=abc", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; server_no_context_takeover=1", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; client_no_context_takeover=\"x\"", 15, 0, "", false, false, 15, 15},
    /* duplicates */
    {"permessage-deflate; server_no_context_takeover; server_no_context_takeover", 15, 0, "",
     false, false, 15, 15},
    {"permessage-deflate; client_no_context_takeover; client_no_context_takeover", 15, 0, "",
     false, false, 15, 15},
    {"permessage-deflate; server_max_window_bits=10; server_max_window_bits=10", 15, 0, "",
     false, false, 15, 15},
    {"permessage-deflate; client_max_window_bits; client_max_window_bits=9", 15, 0, "", false,
     false, 15, 15},
    /* unknown parameters */
    {"permessage-deflate; foo", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; max_window_bits=10", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; client_max_window_bits; x=\"y\"", 15, 0, "", false, false, 15, 15},
    /* several offers: the first valid one wins */
    {"permessage-deflate; server_max_window_bits=16, permessage-deflate; "
     "client_no_context_takeover",
     15, 1, "permessage-deflate; client_no_context_takeover", false, true, 15, 15},
    {"permessage-deflate; foo, permessage-deflate; bar, permessage-deflate", 15, 1,
     "permessage-deflate", false, false, 15, 15},
    {"permessage-deflate; server_no_context_takeover, permessage-deflate", 15, 1,
     "permessage-deflate; server_no_context_takeover", true, false, 15, 15},
    /* other extensions are ignored */
    {"x-webkit-deflate-frame", 15, 0, "", false, false, 15, 15},
    {"x-webkit-deflate-frame; max_window_bits=10, permessage-deflate; client_max_window_bits",
     15, 1, "permessage-deflate", false, false, 15, 15},
    {"deflate-frame, foo; bar=\"a, b; c\", permessage-deflate; server_no_context_takeover", 15,
     1, "permessage-deflate; server_no_context_takeover", true, false, 15, 15},
    {"permessage-deflate-x, xpermessage-deflate", 15, 0, "", false, false, 15, 15},
    /* list syntax: OWS, empty elements, case, and elements that do not parse */
    {" \tpermessage-deflate \t; \tserver_no_context_takeover \t, ", 15, 1,
     "permessage-deflate; server_no_context_takeover", true, false, 15, 15},
    {", ,permessage-deflate;client_max_window_bits = 9,,", 15, 1,
     "permessage-deflate; client_max_window_bits=9", false, false, 15, 9},
    {"PerMessage-Deflate; Server_No_Context_Takeover", 15, 1,
     "permessage-deflate; server_no_context_takeover", true, false, 15, 15},
    {"permessage-deflate;", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate;; server_no_context_takeover", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate server_no_context_takeover", 15, 0, "", false, false, 15, 15},
    {"permessage-deflate; a b, permessage-deflate; client_no_context_takeover", 15, 1,
     "permessage-deflate; client_no_context_takeover", false, true, 15, 15},
    {"permessage-deflate\r\n", 15, 0, "", false, false, 15, 15},
    {"=permessage-deflate", 15, 0, "", false, false, 15, 15},
    {"\"permessage-deflate\"", 15, 0, "", false, false, 15, 15},
    {"", 15, 0, "", false, false, 15, 15},
};

TEST(negotiate_table)
{
    for (size_t i = 0; i < sizeof(neg_cases) / sizeof(neg_cases[0]); i++) {
        const neg_case *c = &neg_cases[i];
        cd_pmd_config cfg = config(c->cfg_bits);
        cd_pmd_params p;
        char resp[CD_PMD_RESPONSE_MAX];
        int rc = negotiate(c->offer, &cfg, &p, resp);
        if (rc != c->accepted || strcmp(resp, c->resp) != 0 ||
            p.server_no_context_takeover != c->snct ||
            p.client_no_context_takeover != c->cnct || p.server_max_window_bits != c->sbits ||
            p.client_max_window_bits != c->cbits)
            TEST_FAIL_AT(__FILE__, __LINE__,
                         "offer '%s': got %d '%s' snct=%d cnct=%d s=%u c=%u", c->offer, rc,
                         resp, p.server_no_context_takeover, p.client_no_context_takeover,
                         p.server_max_window_bits, p.client_max_window_bits);
    }
}

/* A header value with a NUL inside is judged by its length, not by C rules. */
TEST(negotiate_embedded_nul)
{
    static const char hdr[] = "permessage-deflate; server_no_context_takeover\0, "
                              "permessage-deflate";
    cd_pmd_config cfg = config(15);
    cd_pmd_params p;
    char resp[CD_PMD_RESPONSE_MAX];
    CHECK_EQ(cd_pmd_negotiate(hdr, sizeof(hdr) - 1, &cfg, &p, resp, sizeof(resp)), 1);
    CHECK_STR(resp, "permessage-deflate");
    CHECK_EQ(cd_pmd_negotiate(hdr, 18, &cfg, &p, resp, sizeof(resp)), 1);
    CHECK_STR(resp, "permessage-deflate");
}

TEST(negotiate_disabled)
{
    cd_pmd_config cfg = config(15);
    cd_pmd_params p;
    char resp[CD_PMD_RESPONSE_MAX] = "junk";
    cfg.enabled = false;
    CHECK_EQ(negotiate("permessage-deflate", &cfg, &p, resp), 0);
    CHECK_STR(resp, "");
    CHECK(!p.server_no_context_takeover && !p.client_no_context_takeover);
    CHECK_EQ(p.server_max_window_bits, 15);
    CHECK_EQ(negotiate("permessage-deflate", NULL, &p, resp), 0);
    cfg.enabled = true;
    CHECK_EQ(cd_pmd_negotiate("permessage-deflate", 18, &cfg, &p, resp, 0), 0);
}

/* The longest response needs CD_PMD_RESPONSE_MAX bytes; one byte less drops
 * the optional client_max_window_bits, and a tiny buffer declines. */
TEST(negotiate_response_size)
{
    static const char *full = "permessage-deflate; server_no_context_takeover; "
                              "client_no_context_takeover; server_max_window_bits=14; "
                              "client_max_window_bits=13";
    cd_pmd_config cfg = config(15);
    cd_pmd_params p;
    char resp[CD_PMD_RESPONSE_MAX + 8];
    size_t n = strlen(full);

    CHECK_EQ(n + 1, CD_PMD_RESPONSE_MAX);
    CHECK_EQ(cd_pmd_negotiate(full, n, &cfg, &p, resp, CD_PMD_RESPONSE_MAX), 1);
    CHECK_STR(resp, full);
    CHECK_EQ(p.client_max_window_bits, 13);
    CHECK_EQ(cd_pmd_negotiate(full, n, &cfg, &p, resp, CD_PMD_RESPONSE_MAX - 1), 1);
    CHECK_STR(resp, "permessage-deflate; server_no_context_takeover; "
                    "client_no_context_takeover; server_max_window_bits=14");
    CHECK_EQ(p.client_max_window_bits, 15);
    CHECK_EQ(p.server_max_window_bits, 14);
    CHECK_EQ(cd_pmd_negotiate(full, n, &cfg, &p, resp, 30), 0);
    CHECK_STR(resp, "");
    CHECK_EQ(p.server_max_window_bits, 15);
    CHECK(!p.server_no_context_takeover);
    CHECK_EQ(cd_pmd_negotiate("permessage-deflate", 18, &cfg, &p, resp, 19), 1);
    CHECK_EQ(cd_pmd_negotiate("permessage-deflate", 18, &cfg, &p, resp, 18), 0);
}

/* The offers Autobahn 12.x/13.x make (autobahn-python's
 * PerMessageDeflateOffer with its defaults), and what we agree to. */
TEST(negotiate_autobahn_offers)
{
    static const struct {
        const char *offer;
        bool snct;
        uint8_t sbits;
    } cases[] = {
        {"permessage-deflate; client_no_context_takeover; client_max_window_bits", false, 15},
        {"permessage-deflate; client_no_context_takeover; client_max_window_bits; "
         "server_no_context_takeover",
         true, 15},
        {"permessage-deflate; client_no_context_takeover; client_max_window_bits; "
         "server_max_window_bits=8",
         false, 8},
        {"permessage-deflate; client_no_context_takeover; client_max_window_bits; "
         "server_max_window_bits=15",
         false, 15},
        {"permessage-deflate; client_no_context_takeover; client_max_window_bits; "
         "server_no_context_takeover; server_max_window_bits=8, permessage-deflate; "
         "client_no_context_takeover; client_max_window_bits; server_no_context_takeover, "
         "permessage-deflate; client_no_context_takeover; client_max_window_bits",
         true, 8},
    };
    cd_pmd_config cfg = config(15);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cd_pmd_params p;
        char resp[CD_PMD_RESPONSE_MAX];
        CHECK_EQ(negotiate(cases[i].offer, &cfg, &p, resp), 1);
        CHECK_EQ(p.server_no_context_takeover, cases[i].snct);
        CHECK_EQ(p.server_max_window_bits, cases[i].sbits);
        CHECK(p.client_no_context_takeover);
        CHECK_EQ(p.client_max_window_bits, 15);
        cd_pmd *d = cd_pmd_create(&p, &cfg);
        CHECK(d != NULL);
        CHECK_EQ(cd_pmd_should_compress(d, 1000), cases[i].sbits != 8);
        cd_pmd_destroy(d);
    }
}

/* A response is itself a valid offer that negotiates to the same result. */
TEST(negotiate_response_is_fixed_point)
{
    static const char *offers[] = {
        "permessage-deflate",
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=9",
        "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits",
    };
    for (uint8_t bits = 8; bits <= 15; bits++) {
        cd_pmd_config cfg = config(bits);
        for (size_t i = 0; i < sizeof(offers) / sizeof(offers[0]); i++) {
            cd_pmd_params p1, p2;
            char r1[CD_PMD_RESPONSE_MAX], r2[CD_PMD_RESPONSE_MAX];
            CHECK_EQ(negotiate(offers[i], &cfg, &p1, r1), 1);
            CHECK_EQ(negotiate(r1, &cfg, &p2, r2), 1);
            CHECK_STR(r1, r2);
            CHECK(memcmp(&p1, &p2, sizeof(p1)) == 0);
        }
    }
}

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint8_t *make_data(size_t len, bool is_random)
{
    static const char phrase[] = "{\"channel\":\"chat\",\"user\":\"u-0000\",\"text\":\"hello\"}";
    uint8_t *p = malloc(len + 1);
    if (p == NULL)
        abort();
    for (size_t i = 0; i < len; i++) {
        if (is_random)
            p[i] = (uint8_t)rng();
        else
            p[i] = (uint8_t)phrase[i % (sizeof(phrase) - 1)] + (uint8_t)(i / 4096 % 3);
    }
    return p;
}

static cd_pmd_params mirror(const cd_pmd_params *p)
{
    cd_pmd_params m = {p->client_no_context_takeover, p->server_no_context_takeover,
                       p->client_max_window_bits, p->server_max_window_bits};
    return m;
}

/* What a peer's zlib does with our payload (RFC 7692 §7.2.2). */
static bool zlib_inflate_msg(z_stream *zs, const uint8_t *p, size_t n, cd_bytes *out)
{
    uint8_t buf[16384];
    for (int part = 0; part < 2; part++) {
        zs->next_in = part == 0 ? p : tail;
        zs->avail_in = (uInt)(part == 0 ? n : sizeof(tail));
        do {
            zs->next_out = buf;
            zs->avail_out = sizeof(buf);
            int zr = inflate(zs, Z_SYNC_FLUSH);
            if (zr != Z_OK && zr != Z_BUF_ERROR)
                return false;
            if (cd_bytes_append(out, buf, sizeof(buf) - zs->avail_out) != 0)
                return false;
        } while (zs->avail_in > 0 || zs->avail_out == 0);
    }
    return true;
}

/* What a peer's zlib sends: sync flush, 4 octets removed (RFC 7692 §7.2.1). */
static bool zlib_deflate_msg(z_stream *zs, const uint8_t *p, size_t n, cd_bytes *out)
{
    uint8_t buf[16384];
    zs->next_in = p;
    zs->avail_in = (uInt)n;
    do {
        zs->next_out = buf;
        zs->avail_out = sizeof(buf);
        int zr = deflate(zs, Z_SYNC_FLUSH);
        if (zr != Z_OK && zr != Z_BUF_ERROR)
            return false;
        if (cd_bytes_append(out, buf, sizeof(buf) - zs->avail_out) != 0)
            return false;
    } while (zs->avail_in > 0 || zs->avail_out == 0);
    if (out->len >= 4 && memcmp(out->data + out->len - 4, tail, 4) == 0)
        out->len -= 4;
    return true;
}

/* In place: zlib's state points back at its z_stream, so it cannot move. */
static void zlib_open(z_stream *zs, bool is_deflate, int bits)
{
    memset(zs, 0, sizeof(*zs));
    int zr = is_deflate ? deflateInit2(zs, 6, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY)
                        : inflateInit2(zs, -bits);
    if (zr != Z_OK)
        abort();
}

/* ---------------------------------------------------------------- round trips */

static int round_trip_failures;

/* Two messages each way: ours -> ours, ours -> zlib, zlib -> ours. */
static void round_trip(const uint8_t *msg, size_t len, bool snct, bool cnct, uint8_t bits)
{
    cd_pmd_params sp = {snct, cnct, bits, bits};
    cd_pmd_params cp = mirror(&sp);
    cd_pmd_config cfg = config(15);
    cd_pmd *srv = cd_pmd_create(&sp, &cfg);
    cd_pmd *cli = cd_pmd_create(&cp, &cfg);
    z_stream zin, zde;
    zlib_open(&zin, false, bits);
    zlib_open(&zde, true, bits);
    int bad = 0;

    for (int round = 0; round < 2; round++) {
        cd_bytes wire = CD_BYTES_INIT, a = CD_BYTES_INIT, b = CD_BYTES_INIT;
        cd_bytes zwire = CD_BYTES_INIT, c = CD_BYTES_INIT;

        bad += cd_pmd_deflate(srv, msg, len, &wire) != 0;
        bad += cd_pmd_inflate(cli, wire.data, wire.len, true, &a, len) != 0;
        bad += a.len != len || (len > 0 && memcmp(a.data, msg, len) != 0);
        if (snct)
            bad += inflateReset(&zin) != Z_OK;
        bad += !zlib_inflate_msg(&zin, wire.data, wire.len, &b);
        bad += b.len != len || (len > 0 && memcmp(b.data, msg, len) != 0);
        if (cnct)
            bad += deflateReset(&zde) != Z_OK;
        bad += !zlib_deflate_msg(&zde, msg, len, &zwire);
        bad += cd_pmd_inflate(srv, zwire.data, zwire.len, true, &c, len) != 0;
        bad += c.len != len || (len > 0 && memcmp(c.data, msg, len) != 0);
        cd_bytes_free(&wire);
        cd_bytes_free(&a);
        cd_bytes_free(&b);
        cd_bytes_free(&zwire);
        cd_bytes_free(&c);
    }
    /* Lazy streams: a direction without context takeover holds nothing. */
    if (snct && cnct)
        bad += cd_pmd_memory_bytes(srv) != 0 || cd_pmd_memory_bytes(cli) != 0;
    if (bad) {
        round_trip_failures++;
        TEST_FAIL_AT(__FILE__, __LINE__, "round trip len=%zu snct=%d cnct=%d bits=%u: %d bad",
                     len, snct, cnct, bits, bad);
    }
    inflateEnd(&zin);
    deflateEnd(&zde);
    cd_pmd_destroy(srv);
    cd_pmd_destroy(cli);
}

TEST(round_trip_matrix)
{
    static const size_t sizes[] = {0, 1, 100, 64 * KIB, 1 * MIB};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        for (int kind = 0; kind < 2; kind++) {
            uint8_t *msg = make_data(sizes[s], kind == 0);
            for (uint8_t bits = 9; bits <= 15; bits++)
                for (int ct = 0; ct < 4; ct++)
                    round_trip(msg, sizes[s], ct & 1, ct & 2, bits);
            free(msg);
        }
    }
    CHECK_EQ(round_trip_failures, 0);
}

/* Server window 8: never compress, but a forced deflate still emits stored
 * blocks that an 8-bit inflater accepts. */
TEST(server_window_8)
{
    cd_pmd_params sp = {false, false, 8, 15};
    cd_pmd_config cfg = config(15);
    cd_pmd *srv = cd_pmd_create(&sp, &cfg);
    uint8_t *msg = make_data(20000, false);
    z_stream zin;
    zlib_open(&zin, false, 8);

    CHECK(!cd_pmd_should_compress(srv, 20000));
    for (int round = 0; round < 2; round++) {
        cd_bytes wire = CD_BYTES_INIT, out = CD_BYTES_INIT;
        CHECK_EQ(cd_pmd_deflate(srv, msg, 20000, &wire), 0);
        CHECK(zlib_inflate_msg(&zin, wire.data, wire.len, &out));
        CHECK_EQ(out.len, 20000);
        CHECK_MEM(out.data, msg, 20000);
        cd_bytes_free(&wire);
        cd_bytes_free(&out);
    }
    inflateEnd(&zin);
    free(msg);
    cd_pmd_destroy(srv);
}

TEST(should_compress)
{
    cd_pmd_params p = {false, false, 15, 15};
    cd_pmd_config cfg = config(15);
    cfg.min_compress_bytes = 64;
    cd_pmd *d = cd_pmd_create(&p, &cfg);
    CHECK(!cd_pmd_should_compress(d, 0));
    CHECK(!cd_pmd_should_compress(d, 63));
    CHECK(cd_pmd_should_compress(d, 64));
    CHECK(!cd_pmd_should_compress(NULL, 1000));
    cd_pmd_destroy(d);
}

/* ---------------------------------------------------------------- inflate */

static cd_pmd *plain_pmd(bool cnct)
{
    cd_pmd_params p = {false, cnct, 15, 15};
    cd_pmd_config cfg = config(15);
    return cd_pmd_create(&p, &cfg);
}

static int inflate_hex_msg(cd_pmd *d, const uint8_t *p, size_t n, cd_bytes *out)
{
    out->len = 0;
    return cd_pmd_inflate(d, p, n, true, out, 1000);
}

/* The examples of RFC 7692 §7.2.3. */
TEST(rfc7692_examples)
{
    static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    static const uint8_t hello_again[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    static const uint8_t stored[] = {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48,
                                     0x65, 0x6c, 0x6c, 0x6f, 0x00};
    static const uint8_t bfinal[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00};
    static const uint8_t two_blocks[] = {0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff,
                                         0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00};
    cd_pmd *d = plain_pmd(false);
    cd_bytes out = CD_BYTES_INIT;

    CHECK_EQ(inflate_hex_msg(d, hello, sizeof(hello), &out), 0);
    CHECK_EQ(out.len, 5);
    CHECK_MEM(out.data, "Hello", 5);
    /* §7.2.3.2: the second message refers back into the first. */
    CHECK_EQ(inflate_hex_msg(d, hello_again, sizeof(hello_again), &out), 0);
    CHECK_EQ(out.len, 5);
    CHECK_MEM(out.data, "Hello", 5);
    CHECK_EQ(inflate_hex_msg(d, stored, sizeof(stored), &out), 0);
    CHECK_EQ(out.len, 5);
    CHECK_MEM(out.data, "Hello", 5);
    CHECK_EQ(inflate_hex_msg(d, bfinal, sizeof(bfinal), &out), 0);
    CHECK_EQ(out.len, 5);
    CHECK_MEM(out.data, "Hello", 5);
    /* The window survives BFINAL. */
    CHECK_EQ(inflate_hex_msg(d, hello_again, sizeof(hello_again), &out), 0);
    CHECK_EQ(out.len, 5);
    CHECK_MEM(out.data, "Hello", 5);
    /* BFINAL without the padding octet is accepted too. */
    CHECK_EQ(inflate_hex_msg(d, bfinal, sizeof(bfinal) - 1, &out), 0);
    CHECK_EQ(out.len, 5);
    CHECK_EQ(inflate_hex_msg(d, two_blocks, sizeof(two_blocks), &out), 0);
    CHECK_EQ(out.len, 5);
    CHECK_MEM(out.data, "Hello", 5);
    cd_bytes_free(&out);
    cd_pmd_destroy(d);

    /* Without context takeover the back reference has nothing to point at. */
    d = plain_pmd(true);
    CHECK_EQ(inflate_hex_msg(d, hello, sizeof(hello), &out), 0);
    CHECK_EQ(cd_pmd_memory_bytes(d), 0);
    CHECK_EQ(inflate_hex_msg(d, hello_again, sizeof(hello_again), &out), CONDUIT_EPROTO);
    cd_bytes_free(&out);
    cd_pmd_destroy(d);
}

/* A fragmented message whose frames were each sync-flushed by the sender
 * ("Hello World!"), fed frame by frame. */
TEST(inflate_fragments)
{
    static const uint8_t f1[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x57,
                                 0x00, 0x00, 0x00, 0x00, 0xff, 0xff};
    static const uint8_t f2[] = {0x0a, 0xcf, 0x2f, 0xca, 0x49, 0x01, 0x00, 0x00, 0x00, 0xff, 0xff};
    static const uint8_t f3[] = {0x52, 0x04, 0x00};
    cd_pmd *d = plain_pmd(false);
    cd_bytes out = CD_BYTES_INIT;
    CHECK_EQ(cd_pmd_inflate(d, f1, sizeof(f1), false, &out, 100), 0);
    CHECK_EQ(cd_pmd_inflate(d, f2, sizeof(f2), false, &out, 100), 0);
    CHECK_EQ(cd_pmd_inflate(d, f3, sizeof(f3), false, &out, 100), 0);
    CHECK_EQ(cd_pmd_inflate(d, NULL, 0, true, &out, 100), 0);
    CHECK_EQ(out.len, 12);
    CHECK_MEM(out.data, "Hello World!", 12);
    cd_bytes_free(&out);
    cd_pmd_destroy(d);
}

TEST(inflate_corrupt)
{
    static const uint8_t bad_type[] = {0xff, 0xff, 0xff};
    static const uint8_t truncated[] = {0xf2, 0x48, 0xcd};
    static const uint8_t bad_stored[] = {0x00, 0x05, 0x00, 0x00, 0x00, 'H'};
    static const uint8_t junk_after_end[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x01};
    static const uint8_t two_pads[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00};
    static const uint8_t tail_sent[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07,
                                        0x00, 0x00, 0x00, 0xff, 0xff};
    static const struct {
        const uint8_t *p;
        size_t n;
    } cases[] = {
        {bad_type, sizeof(bad_type)},
        {truncated, sizeof(truncated)},
        {bad_stored, sizeof(bad_stored)},
        {junk_after_end, sizeof(junk_after_end)},
        {two_pads, sizeof(two_pads)},
        {tail_sent, sizeof(tail_sent)},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cd_pmd *d = plain_pmd(false);
        cd_bytes out = CD_BYTES_INIT;
        int rc = cd_pmd_inflate(d, cases[i].p, cases[i].n, true, &out, 1000);
        if (rc != CONDUIT_EPROTO)
            TEST_FAIL_AT(__FILE__, __LINE__, "corrupt case %zu: rc %d", i, rc);
        /* The error is sticky and the stream is gone. */
        CHECK_EQ(cd_pmd_inflate(d, cases[i].p, 1, true, &out, 1000), CONDUIT_EPROTO);
        CHECK_EQ(cd_pmd_memory_bytes(d), 0);
        cd_bytes_free(&out);
        cd_pmd_destroy(d);
    }
}

/* Empty messages: "00" is an empty stored block; an empty payload leaves the
 * stream alone (a zlib sender's second empty sync flush is empty). */
TEST(inflate_empty)
{
    static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    static const uint8_t hello_again[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    static const uint8_t zero = 0x00;
    cd_pmd *d = plain_pmd(false);
    cd_bytes out = CD_BYTES_INIT;

    CHECK_EQ(cd_pmd_inflate(d, NULL, 0, true, &out, 10), 0);
    CHECK_EQ(out.len, 0);
    CHECK_EQ(cd_pmd_memory_bytes(d), 0);
    CHECK_EQ(cd_pmd_inflate(d, &zero, 1, true, &out, 10), 0);
    CHECK_EQ(out.len, 0);
    CHECK_EQ(cd_pmd_inflate(d, &zero, 1, true, &out, 0), 0);
    CHECK_EQ(inflate_hex_msg(d, hello, sizeof(hello), &out), 0);
    out.len = 0;
    CHECK_EQ(cd_pmd_inflate(d, NULL, 0, false, &out, 10), 0);
    CHECK_EQ(cd_pmd_inflate(d, NULL, 0, true, &out, 10), 0);
    CHECK_EQ(out.len, 0);
    CHECK_EQ(inflate_hex_msg(d, hello_again, sizeof(hello_again), &out), 0);
    CHECK_EQ(out.len, 5);
    CHECK_MEM(out.data, "Hello", 5);
    cd_bytes_free(&out);
    cd_pmd_destroy(d);
}

/* Our empty message is one 00 octet, and a peer inflates it to nothing even
 * after earlier messages in the same context. */
TEST(deflate_empty)
{
    cd_pmd_params sp = {false, false, 15, 15};
    cd_pmd_params cp = mirror(&sp);
    cd_pmd_config cfg = config(15);
    cd_pmd *srv = cd_pmd_create(&sp, &cfg);
    cd_pmd *cli = cd_pmd_create(&cp, &cfg);
    z_stream zin;
    zlib_open(&zin, false, 15);
    static const char *msgs[] = {"", "hello hello hello", "", "", "hello hello hello"};

    for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
        size_t n = strlen(msgs[i]);
        cd_bytes wire = CD_BYTES_INIT, a = CD_BYTES_INIT, b = CD_BYTES_INIT;
        CHECK_EQ(cd_pmd_deflate(srv, (const uint8_t *)msgs[i], n, &wire), 0);
        if (n == 0) {
            CHECK_EQ(wire.len, 1);
            CHECK_EQ(wire.data[0], 0);
        }
        CHECK_EQ(cd_pmd_inflate(cli, wire.data, wire.len, true, &a, 100), 0);
        CHECK(zlib_inflate_msg(&zin, wire.data, wire.len, &b));
        CHECK_EQ(a.len, n);
        CHECK_EQ(b.len, n);
        if (n > 0) {
            CHECK_MEM(a.data, msgs[i], n);
            CHECK_MEM(b.data, msgs[i], n);
        }
        cd_bytes_free(&wire);
        cd_bytes_free(&a);
        cd_bytes_free(&b);
    }
    inflateEnd(&zin);
    cd_pmd_destroy(srv);
    cd_pmd_destroy(cli);
}

static void compress_with_zlib(const uint8_t *msg, size_t len, int bits, cd_bytes *wire)
{
    z_stream zs;
    zlib_open(&zs, true, bits);
    if (!zlib_deflate_msg(&zs, msg, len, wire))
        abort();
    deflateEnd(&zs);
}

/* One byte per call, the way a trickling peer delivers it, then a final
 * call with no bytes. */
TEST(inflate_bytewise)
{
    for (int kind = 0; kind < 2; kind++) {
        size_t len = 20000;
        uint8_t *msg = make_data(len, kind == 0);
        cd_bytes wire = CD_BYTES_INIT, out = CD_BYTES_INIT;
        compress_with_zlib(msg, len, 15, &wire);
        cd_pmd *d = plain_pmd(false);
        for (int round = 0; round < 2; round++) {
            int rc = 0;
            out.len = 0;
            for (size_t i = 0; i < wire.len && rc == 0; i++)
                rc = cd_pmd_inflate(d, wire.data + i, 1, false, &out, len);
            if (rc == 0)
                rc = cd_pmd_inflate(d, NULL, 0, true, &out, len);
            CHECK_EQ(rc, 0);
            CHECK_EQ(out.len, len);
            CHECK_MEM(out.data, msg, len);
            /* The second round ends the message on its last byte instead. */
            if (round == 0) {
                cd_pmd_destroy(d);
                d = plain_pmd(true);
            }
        }
        out.len = 0;
        int rc = 0;
        for (size_t i = 0; i < wire.len && rc == 0; i++)
            rc = cd_pmd_inflate(d, wire.data + i, 1, i + 1 == wire.len, &out, len);
        CHECK_EQ(rc, 0);
        CHECK_EQ(out.len, len);
        cd_pmd_destroy(d);
        cd_bytes_free(&wire);
        cd_bytes_free(&out);
        free(msg);
    }
}

/* The cap is on the whole message: exactly its size passes, one byte less
 * fails with ELIMIT, and nothing is written or allocated past it. */
TEST(inflate_cap)
{
    size_t len = 100000;
    uint8_t *msg = make_data(len, false);
    cd_bytes wire = CD_BYTES_INIT;
    compress_with_zlib(msg, len, 15, &wire);

    for (int split = 0; split < 2; split++) {
        cd_pmd *d = plain_pmd(false);
        cd_bytes out = CD_BYTES_INIT;
        size_t half = split ? wire.len / 2 : wire.len;
        CHECK_EQ(cd_pmd_inflate(d, wire.data, half, !split, &out, len), 0);
        if (split)
            CHECK_EQ(cd_pmd_inflate(d, wire.data + half, wire.len - half, true, &out, len), 0);
        CHECK_EQ(out.len, len);
        CHECK(out.cap <= len);
        CHECK_MEM(out.data, msg, len);
        cd_bytes_free(&out);
        cd_pmd_destroy(d);

        d = plain_pmd(false);
        int rc = cd_pmd_inflate(d, wire.data, half, !split, &out, len - 1);
        if (split && rc == 0)
            rc = cd_pmd_inflate(d, wire.data + half, wire.len - half, true, &out, len - 1);
        CHECK_EQ(rc, CONDUIT_ELIMIT);
        CHECK(out.len <= len - 1);
        CHECK(out.cap <= len - 1);
        CHECK_MEM(out.data, msg, out.len);
        CHECK_EQ(cd_pmd_inflate(d, wire.data, 1, true, &out, len), CONDUIT_ELIMIT);
        cd_bytes_free(&out);
        cd_pmd_destroy(d);
    }

    /* Bytes already in `out` count toward the cap. */
    cd_pmd *d = plain_pmd(false);
    cd_bytes out = CD_BYTES_INIT;
    CHECK_EQ(cd_bytes_append(&out, "xyz", 3), 0);
    CHECK_EQ(cd_pmd_inflate(d, wire.data, wire.len, true, &out, len + 2), CONDUIT_ELIMIT);
    CHECK(out.len <= len + 2);
    cd_bytes_free(&out);
    cd_pmd_destroy(d);

    cd_bytes_free(&wire);
    free(msg);
}

/* 10 MiB of zeros compress to about 10 KiB; capped at 1 MiB it stops there. */
TEST(inflate_zip_bomb)
{
    size_t len = 10 * MIB;
    uint8_t *zeros = calloc(1, len);
    cd_bytes wire = CD_BYTES_INIT, out = CD_BYTES_INIT;
    CHECK(zeros != NULL);
    compress_with_zlib(zeros, len, 15, &wire);
    CHECK(wire.len < 20 * KIB);
    free(zeros);

    cd_pmd *d = plain_pmd(false);
    CHECK_EQ(cd_pmd_inflate(d, wire.data, wire.len, true, &out, 1 * MIB), CONDUIT_ELIMIT);
    CHECK(out.len <= 1 * MIB);
    CHECK(out.cap <= 1 * MIB);
    cd_pmd_destroy(d);
    cd_bytes_free(&out);
    cd_bytes_free(&wire);
}

/* ---------------------------------------------------------------- deflate */

/* With context takeover the second copy of a message refers to the first;
 * without it both copies are the same bytes. */
TEST(context_takeover)
{
    uint8_t *msg = make_data(2000, true);
    for (int snct = 0; snct < 2; snct++) {
        cd_pmd_params sp = {snct, false, 15, 15};
        cd_pmd_params cp = mirror(&sp);
        cd_pmd_config cfg = config(15);
        cd_pmd *srv = cd_pmd_create(&sp, &cfg);
        cd_pmd *cli = cd_pmd_create(&cp, &cfg);
        cd_bytes w1 = CD_BYTES_INIT, w2 = CD_BYTES_INIT, out = CD_BYTES_INIT;
        CHECK_EQ(cd_pmd_deflate(srv, msg, 2000, &w1), 0);
        CHECK_EQ(cd_pmd_deflate(srv, msg, 2000, &w2), 0);
        if (snct) {
            CHECK_EQ(w1.len, w2.len);
            CHECK_MEM(w1.data, w2.data, w1.len);
            CHECK_EQ(cd_pmd_memory_bytes(srv), 0);
        } else {
            CHECK(w2.len < w1.len / 10);
            CHECK(cd_pmd_memory_bytes(srv) > 0);
        }
        CHECK_EQ(cd_pmd_inflate(cli, w1.data, w1.len, true, &out, 2000), 0);
        out.len = 0;
        CHECK_EQ(cd_pmd_inflate(cli, w2.data, w2.len, true, &out, 2000), 0);
        CHECK_EQ(out.len, 2000);
        CHECK_MEM(out.data, msg, 2000);
        cd_bytes_free(&w1);
        cd_bytes_free(&w2);
        cd_bytes_free(&out);
        cd_pmd_destroy(srv);
        cd_pmd_destroy(cli);
    }
    free(msg);
}

/* Streams exist only while they must: none after create, none between
 * messages without context takeover, and the estimate follows the formula. */
TEST(lazy_streams)
{
    static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    cd_pmd_params p = {false, false, 15, 15};
    cd_pmd_config cfg = config(15);
    cd_bytes out = CD_BYTES_INIT;
    cd_pmd *d = cd_pmd_create(&p, &cfg);

    CHECK_EQ(cd_pmd_memory_bytes(d), 0);
    CHECK_EQ(cd_pmd_inflate(d, hello, sizeof(hello), true, &out, 100), 0);
    size_t inf = cd_pmd_memory_bytes(d);
    CHECK(inf >= 7160 + 32768);
    CHECK_EQ(cd_pmd_deflate(d, (const uint8_t *)"abc", 3, &out), 0);
    CHECK(cd_pmd_memory_bytes(d) - inf >= (1u << 17) + (1u << 17));
    cd_pmd_destroy(d);

    cfg.mem_level = 1;
    p.server_max_window_bits = 9;
    p.client_max_window_bits = 10;
    d = cd_pmd_create(&p, &cfg);
    CHECK_EQ(cd_pmd_inflate(d, hello, sizeof(hello), true, &out, 100), 0);
    CHECK_EQ(cd_pmd_deflate(d, (const uint8_t *)"abc", 3, &out), 0);
    CHECK(cd_pmd_memory_bytes(d) < 7160 + 1024 + 5952 + 2048 + 1024 + 2 * 112 + 64);
    cd_pmd_destroy(d);
    cd_pmd_destroy(NULL);
    CHECK(cd_pmd_create(NULL, &cfg) == NULL);
    cd_bytes_free(&out);
}

int main(void)
{
    RUN(negotiate_table);
    RUN(negotiate_embedded_nul);
    RUN(negotiate_disabled);
    RUN(negotiate_response_size);
    RUN(negotiate_autobahn_offers);
    RUN(negotiate_response_is_fixed_point);
    RUN(round_trip_matrix);
    RUN(server_window_8);
    RUN(should_compress);
    RUN(rfc7692_examples);
    RUN(inflate_fragments);
    RUN(inflate_corrupt);
    RUN(inflate_empty);
    RUN(deflate_empty);
    RUN(inflate_bytewise);
    RUN(inflate_cap);
    RUN(inflate_zip_bomb);
    RUN(context_takeover);
    RUN(lazy_streams);
    return test_main_end();
}
