/* test_ws.c - the RFC 6455 frame codec.
 *
 * Every scenario is fed whole, at every two-way split and one byte per call
 * (STYLE.md rule 15), each piece in its own exact-size heap buffer so that
 * AddressSanitizer sees any read past the input, and each run on a fresh
 * copy because the parser unmasks in place.  Failures are also pinned to the
 * exact byte at which they must be detected. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <zlib.h>

#include "buf.h"
#include "common.h"
#include "conduit.h"
#include "deflate.h"
#include "test.h"
#include "utf8.h"
#include "ws.h"

#define FIN 0x80
#define RSV1 0x40
#define RSV2 0x20
#define RSV3 0x10

static const uint8_t test_key[4] = {0x37, 0xfa, 0x21, 0x3d};
static cd_ws_limits test_limits = {1 << 20, 1000};

/* ---- building wire bytes (independent of the codec's writers) ---------- */

enum { LEN_AUTO, LEN_16, LEN_64 };

/* Append one frame: b0 holds FIN/RSV/opcode; masked with test_key unless
 * `unmasked`. */
static void frame_ex(cd_bytes *w, uint8_t b0, const void *payload, size_t n,
                     int form, bool unmasked)
{
    uint8_t h[14];
    size_t hl = 2;
    uint8_t mbit = unmasked ? 0 : 0x80;

    h[0] = b0;
    if (form == LEN_AUTO && n < 126) {
        h[1] = (uint8_t)(mbit | n);
    } else if (form == LEN_16 || (form == LEN_AUTO && n <= 0xFFFF)) {
        h[1] = mbit | 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        hl = 4;
    } else {
        h[1] = mbit | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    if (!unmasked) {
        memcpy(h + hl, test_key, 4);
        hl += 4;
    }
    CHECK_EQ(cd_bytes_append(w, h, hl), 0);
    for (size_t i = 0; i < n; i++) {
        uint8_t b = ((const uint8_t *)payload)[i];
        if (!unmasked)
            b ^= test_key[i & 3];
        CHECK_EQ(cd_bytes_append(w, &b, 1), 0);
    }
}

static void frame(cd_bytes *w, uint8_t b0, const char *payload, size_t n)
{
    frame_ex(w, b0, payload, n, LEN_AUTO, false);
}

static void frame_s(cd_bytes *w, uint8_t b0, const char *s)
{
    frame(w, b0, s, strlen(s));
}

static void raw(cd_bytes *w, const void *bytes, size_t n)
{
    CHECK_EQ(cd_bytes_append(w, bytes, n), 0);
}

/* Compress like a permessage-deflate sender: raw deflate, sync flush, the
 * trailing 00 00 ff ff removed (RFC 7692 §7.2.1). */
static size_t compress_pmd(const void *in, size_t n, uint8_t *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return 0;
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_SYNC_FLUSH);
    size_t len = cap - z.avail_out;
    deflateEnd(&z);
    if (rc != Z_OK || len < 4)
        return 0;
    return len - 4;
}

/* ---- recording and checking events -------------------------------------- */

typedef struct ev_rec {
    int type;
    int opcode;
    int code;
    size_t len;
    uint8_t *data;
} ev_rec;

#define MAX_EVENTS 16

typedef struct run_rec {
    ev_rec ev[MAX_EVENTS];
    size_t n;
    bool failed;
    int fail_code;
} run_rec;

static void rec_free(run_rec *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->ev[i].data);
    memset(r, 0, sizeof(*r));
}

typedef struct exp_ev {
    int type;
    int opcode;
    int code;
    const char *data;
    size_t len;          /* SIZE_MAX: strlen(data) */
} exp_ev;

typedef struct expect {
    const exp_ev *ev;
    size_t n;
    int fail_code;       /* 0: must not fail */
    bool client;         /* client-mode parser */
    bool pmd;            /* negotiate permessage-deflate */
    const cd_ws_limits *limits;
} expect;

#define MSG(op, s) {CD_WS_EV_MESSAGE, op, 0, s, SIZE_MAX}
#define MSGN(op, s, n) {CD_WS_EV_MESSAGE, op, 0, s, n}
#define PING(s) {CD_WS_EV_PING, CD_WS_OP_PING, 0, s, SIZE_MAX}
#define PONG(s) {CD_WS_EV_PONG, CD_WS_OP_PONG, 0, s, SIZE_MAX}
#define CLOSE(c, s) {CD_WS_EV_CLOSE, CD_WS_OP_CLOSE, c, s, SIZE_MAX}

/* Feed one piece, as a connection would: loop until it is used up. */
static void feed_piece(cd_ws_parser *p, const uint8_t *bytes, size_t len,
                       run_rec *r)
{
    uint8_t *buf = malloc(len ? len : 1);
    size_t off = 0;

    if (buf == NULL) {
        TEST_FAIL_AT(__FILE__, __LINE__, "malloc");
        return;
    }
    memcpy(buf, bytes, len);
    do {
        cd_ws_event ev;
        size_t used = 99;
        int rc = cd_ws_parse(p, buf + off, len - off, &used, &ev);
        if (r->failed) {
            /* After a failure nothing more may come. */
            if (rc != CD_WS_FAIL || used != 0)
                TEST_FAIL_AT(__FILE__, __LINE__, "event after failure");
            break;
        }
        if (used > len - off) {
            TEST_FAIL_AT(__FILE__, __LINE__, "consumed past the input");
            break;
        }
        off += used;
        if (rc == CD_WS_FAIL) {
            r->failed = true;
            r->fail_code = cd_ws_fail_code(p);
            CHECK(cd_ws_fail_reason(p)[0] != '\0');
            size_t again = 99;
            CHECK_EQ(cd_ws_parse(p, buf, len, &again, &ev), CD_WS_FAIL);
            CHECK_EQ(again, 0);
            break;
        }
        if (rc == CD_WS_NEED_MORE) {
            if (off != len)
                TEST_FAIL_AT(__FILE__, __LINE__, "NEED_MORE with input left");
            break;
        }
        CHECK_EQ(rc, CD_WS_EVENT);
        if (r->n == MAX_EVENTS) {
            TEST_FAIL_AT(__FILE__, __LINE__, "too many events");
            break;
        }
        ev_rec *e = &r->ev[r->n++];
        e->type = ev.type;
        e->opcode = ev.opcode;
        e->code = ev.close_code;
        e->len = ev.len;
        CHECK(ev.data != NULL);
        e->data = malloc(ev.len ? ev.len : 1);
        if (e->data && ev.len)
            memcpy(e->data, ev.data, ev.len);
    } while (off < len);
    free(buf);
}

static bool rec_matches(const run_rec *r, const expect *x, const char *how,
                        size_t cut, int line)
{
    bool ok = r->n == x->n && r->failed == (x->fail_code != 0) &&
              (!r->failed || r->fail_code == x->fail_code);

    for (size_t i = 0; ok && i < x->n; i++) {
        const exp_ev *e = &x->ev[i];
        size_t len = e->len == SIZE_MAX ? strlen(e->data) : e->len;
        const ev_rec *g = &r->ev[i];
        ok = g->type == e->type && g->opcode == e->opcode &&
             g->code == e->code && g->len == len &&
             (len == 0 || memcmp(g->data, e->data, len) == 0);
    }
    if (!ok)
        TEST_FAIL_AT(__FILE__, line,
                     "%s (cut %zu): %zu events (want %zu), failed %d/%d "
                     "(want %d)",
                     how, cut, r->n, x->n, r->failed, r->fail_code,
                     x->fail_code);
    return ok;
}

static cd_pmd *make_pmd(void)
{
    cd_pmd_params params = {false, false, 15, 15};
    cd_pmd_config cfg = {true, 15, 8, 0};
    return cd_pmd_create(&params, &cfg);
}

static void parser_start(cd_ws_parser *p, const expect *x, cd_pmd **pmd)
{
    const cd_ws_limits *lim = x->limits ? x->limits : &test_limits;

    *pmd = x->pmd ? make_pmd() : NULL;
    if (x->pmd && *pmd == NULL)
        TEST_FAIL_AT(__FILE__, __LINE__, "cd_pmd_create");
    if (x->client)
        cd_ws_parser_init_client(p, lim, *pmd);
    else
        cd_ws_parser_init(p, lim, *pmd);
}

static void parser_end(cd_ws_parser *p, cd_pmd *pmd, const expect *x,
                       const run_rec *r)
{
    /* A stream that ended on a frame boundary leaves nothing behind. */
    cd_ws_parser_trim(p);
    if (!x->fail_code && !r->failed)
        CHECK(cd_ws_parser_is_idle(p));
    if (r->failed)
        CHECK(cd_ws_parser_is_idle(p));
    cd_ws_parser_fini(p);
    if (pmd)
        cd_pmd_destroy(pmd);
}

/* Whole, at every two-way split, and one byte per call. */
static void feed_every_split_at(const cd_bytes *w, const expect *x, int line)
{
    for (size_t cut = 0; cut <= w->len; cut++) {
        cd_ws_parser p;
        cd_pmd *pmd;
        run_rec r;
        memset(&r, 0, sizeof(r));
        parser_start(&p, x, &pmd);
        feed_piece(&p, w->data, cut, &r);
        feed_piece(&p, w->data + cut, w->len - cut, &r);
        bool ok = rec_matches(&r, x, "split", cut, line);
        parser_end(&p, pmd, x, &r);
        rec_free(&r);
        if (!ok)
            return;
    }
    {
        cd_ws_parser p;
        cd_pmd *pmd;
        run_rec r;
        memset(&r, 0, sizeof(r));
        parser_start(&p, x, &pmd);
        for (size_t i = 0; i < w->len; i++)
            feed_piece(&p, w->data + i, 1, &r);
        rec_matches(&r, x, "bytewise", 0, line);
        parser_end(&p, pmd, x, &r);
        rec_free(&r);
    }
}

#define feed_every_split(w, ...) feed_every_split_at(w, __VA_ARGS__, __LINE__)

/* Index of the byte whose call fails when fed one byte at a time; -1 if
 * it never fails. */
static long fail_at(const cd_bytes *w, const expect *x)
{
    cd_ws_parser p;
    cd_pmd *pmd;
    run_rec r;
    long at = -1;

    memset(&r, 0, sizeof(r));
    parser_start(&p, x, &pmd);
    for (size_t i = 0; i < w->len && at < 0; i++) {
        feed_piece(&p, w->data + i, 1, &r);
        if (r.failed)
            at = (long)i;
    }
    parser_end(&p, pmd, x, &r);
    rec_free(&r);
    return at;
}

#define EXPECT(...) ((const exp_ev[]){__VA_ARGS__})
#define N_EXP(...) (sizeof((const exp_ev[]){__VA_ARGS__}) / sizeof(exp_ev))

/* ---- writers and helpers ----------------------------------------------- */

TEST(test_header_write)
{
    uint8_t h[CD_WS_MAX_HEADER];

    CHECK_EQ(cd_ws_header_write(h, CD_WS_OP_TEXT, true, false, 0), 2);
    CHECK_MEM(h, "\x81\x00", 2);
    CHECK_EQ(cd_ws_header_write(h, CD_WS_OP_BINARY, false, true, 125), 2);
    CHECK_MEM(h, "\x42\x7d", 2);
    CHECK_EQ(cd_ws_header_write(h, CD_WS_OP_CONT, true, false, 126), 4);
    CHECK_MEM(h, "\x80\x7e\x00\x7e", 4);
    CHECK_EQ(cd_ws_header_write(h, CD_WS_OP_TEXT, true, false, 65535), 4);
    CHECK_MEM(h, "\x81\x7e\xff\xff", 4);
    CHECK_EQ(cd_ws_header_write(h, CD_WS_OP_TEXT, true, false, 65536), 10);
    CHECK_MEM(h, "\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
    CHECK_EQ(cd_ws_header_write(h, CD_WS_OP_PING, true, false, 0x123456789aULL), 10);
    CHECK_MEM(h, "\x89\x7f\x00\x00\x00\x12\x34\x56\x78\x9a", 10);

    uint32_t key;
    memcpy(&key, test_key, 4);
    CHECK_EQ(cd_ws_header_write_masked(h, CD_WS_OP_CLOSE, true, false, 2, key), 6);
    CHECK_MEM(h, "\x88\x82\x37\xfa\x21\x3d", 6);
    CHECK_EQ(cd_ws_header_write_masked(h, CD_WS_OP_TEXT, true, true, 300, key), 8);
    CHECK_MEM(h, "\xc1\xfe\x01\x2c\x37\xfa\x21\x3d", 8);
    CHECK_EQ(cd_ws_header_write_masked(h, CD_WS_OP_BINARY, true, false, 1 << 20, key), 14);
    CHECK_MEM(h, "\x82\xff\x00\x00\x00\x00\x00\x10\x00\x00\x37\xfa\x21\x3d", 14);
}

/* What the writers produce, the parser reads back (both directions). */
TEST(test_writers_round_trip)
{
    static const size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 70000};
    uint32_t key = 0xa1b2c3d4u;

    for (size_t i = 0; i < CD_ARRAY_LEN(lens); i++) {
        size_t n = lens[i];
        uint8_t *buf = malloc(CD_WS_MAX_HEADER + n);
        uint8_t *pl = malloc(n + 1);
        for (size_t k = 0; k < n; k++)
            pl[k] = (uint8_t)(k * 7 + 3);
        for (int client = 0; client <= 1; client++) {
            size_t hl = client
                ? cd_ws_header_write(buf, CD_WS_OP_BINARY, true, false, n)
                : cd_ws_header_write_masked(buf, CD_WS_OP_BINARY, true, false, n, key);
            memcpy(buf + hl, pl, n);
            if (!client)
                cd_ws_mask(buf + hl, n, key, 0);
            cd_ws_parser p;
            cd_ws_event ev;
            size_t used;
            if (client)
                cd_ws_parser_init_client(&p, &test_limits, NULL);
            else
                cd_ws_parser_init(&p, &test_limits, NULL);
            CHECK_EQ(cd_ws_parse(&p, buf, hl + n, &used, &ev), CD_WS_EVENT);
            CHECK_EQ(used, hl + n);
            CHECK_EQ(ev.type, CD_WS_EV_MESSAGE);
            CHECK_EQ(ev.opcode, CD_WS_OP_BINARY);
            CHECK_EQ(ev.len, n);
            CHECK_MEM(ev.data, pl, n);
            cd_ws_parser_fini(&p);
        }
        free(buf);
        free(pl);
    }
}

TEST(test_mask_against_reference)
{
    uint8_t key[4] = {0x01, 0x80, 0xfe, 0x5a};
    uint32_t mask;
    uint8_t base[64], got[64 + 8], want[64];

    memcpy(&mask, key, 4);
    for (size_t i = 0; i < sizeof(base); i++)
        base[i] = (uint8_t)(i * 37 + 11);
    for (size_t off = 0; off < 4; off++) {
        for (size_t len = 0; len <= 40; len++) {
            for (size_t align = 0; align < 8; align++) {
                memcpy(got + align, base, len);
                got[align + len] = 0xEE;    /* must stay untouched */
                for (size_t i = 0; i < len; i++)
                    want[i] = base[i] ^ key[(off + i) & 3];
                cd_ws_mask(got + align, len, mask, off);
                CHECK_MEM(got + align, want, len);
                CHECK_EQ(got[align + len], 0xEE);
            }
        }
    }
    /* Masking in pieces with carried offsets equals masking at once. */
    uint8_t whole[40], pieces[40];
    memcpy(whole, base, 40);
    memcpy(pieces, base, 40);
    cd_ws_mask(whole, 40, mask, 0);
    size_t at = 0;
    for (size_t step = 1; at < 40; step += 2) {
        size_t n = CD_MIN(step, 40 - at);
        cd_ws_mask(pieces + at, n, mask, at & 3);
        at += n;
    }
    CHECK_MEM(whole, pieces, 40);
}

TEST(test_close_code_validity)
{
    static const uint16_t valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                     1010, 1011, 3000, 3999, 4000, 4999};
    static const uint16_t invalid[] = {0, 1, 999, 1004, 1005, 1006, 1012, 1013,
                                       1014, 1015, 1016, 1100, 2000, 2999, 5000,
                                       65535};
    for (size_t i = 0; i < CD_ARRAY_LEN(valid); i++)
        CHECK(cd_ws_close_code_is_valid(valid[i]));
    for (size_t i = 0; i < CD_ARRAY_LEN(invalid); i++)
        CHECK(!cd_ws_close_code_is_valid(invalid[i]));
}

TEST(test_close_payload)
{
    uint8_t out[CD_WS_MAX_CONTROL];
    char reason[200];

    CHECK_EQ(cd_ws_close_payload(out, 0, "ignored"), 0);
    CHECK_EQ(cd_ws_close_payload(out, 1000, NULL), 2);
    CHECK_MEM(out, "\x03\xe8", 2);
    CHECK_EQ(cd_ws_close_payload(out, 4008, "slow"), 6);
    CHECK_MEM(out, "\x0f\xa8slow", 6);
    /* Exactly 123 bytes of reason fit. */
    memset(reason, 'r', 123);
    reason[123] = '\0';
    CHECK_EQ(cd_ws_close_payload(out, 1001, reason), 125);
    /* 124 are cut to 123. */
    memset(reason, 'r', 124);
    reason[124] = '\0';
    CHECK_EQ(cd_ws_close_payload(out, 1001, reason), 125);
    CHECK_EQ(out[124], 'r');
    /* A two-byte character across the limit goes whole. */
    memset(reason, 'a', 122);
    strcpy(reason + 122, "\xc3\xa9");
    CHECK_EQ(cd_ws_close_payload(out, 1000, reason), 124);
    CHECK(cd_utf8_valid(out + 2, 122));
    /* A three-byte one ending exactly at 123 stays; one byte later it goes. */
    memset(reason, 'a', 120);
    strcpy(reason + 120, "\xe2\x82\xac");
    CHECK_EQ(cd_ws_close_payload(out, 1000, reason), 125);
    memset(reason, 'a', 121);
    strcpy(reason + 121, "\xe2\x82\xac");
    CHECK_EQ(cd_ws_close_payload(out, 1000, reason), 123);
    /* A four-byte one straddling the limit. */
    memset(reason, 'a', 121);
    strcpy(reason + 121, "\xf0\x9f\x98\x80zz");
    CHECK_EQ(cd_ws_close_payload(out, 1000, reason), 123);
    /* A reason that is not UTF-8 is dropped rather than sent. */
    CHECK_EQ(cd_ws_close_payload(out, 1011, "bad \xff"), 2);
}

/* ---- single frames of every kind --------------------------------------- */

TEST(test_single_frames)
{
    cd_bytes w = CD_BYTES_INIT;

    frame_s(&w, FIN | CD_WS_OP_TEXT, "Hello, world");
    feed_every_split(&w, &(expect){EXPECT(MSG(CD_WS_OP_TEXT, "Hello, world")), 1});
    cd_bytes_free(&w);

    frame(&w, FIN | CD_WS_OP_BINARY, "\x00\xff\x80\x01", 4);
    feed_every_split(&w, &(expect){EXPECT(MSGN(CD_WS_OP_BINARY, "\x00\xff\x80\x01", 4)), 1});
    cd_bytes_free(&w);

    frame(&w, FIN | CD_WS_OP_TEXT, "", 0);
    feed_every_split(&w, &(expect){EXPECT(MSG(CD_WS_OP_TEXT, "")), 1});
    cd_bytes_free(&w);

    frame_s(&w, FIN | CD_WS_OP_PING, "ping!");
    feed_every_split(&w, &(expect){EXPECT(PING("ping!")), 1});
    cd_bytes_free(&w);

    frame(&w, FIN | CD_WS_OP_PING, "", 0);
    feed_every_split(&w, &(expect){EXPECT(PING("")), 1});
    cd_bytes_free(&w);

    frame_s(&w, FIN | CD_WS_OP_PONG, "unsolicited");
    feed_every_split(&w, &(expect){EXPECT(PONG("unsolicited")), 1});
    cd_bytes_free(&w);

    /* RFC 6455 §7.1.5: an empty close reads as 1005. */
    frame(&w, FIN | CD_WS_OP_CLOSE, "", 0);
    feed_every_split(&w, &(expect){EXPECT(CLOSE(1005, "")), 1});
    cd_bytes_free(&w);

    frame(&w, FIN | CD_WS_OP_CLOSE, "\x03\xe8", 2);
    feed_every_split(&w, &(expect){EXPECT(CLOSE(1000, "")), 1});
    cd_bytes_free(&w);

    frame(&w, FIN | CD_WS_OP_CLOSE, "\x0b\xb8gone \xce\xba", 9);
    feed_every_split(&w, &(expect){EXPECT(CLOSE(3000, "gone \xce\xba")), 1});
    cd_bytes_free(&w);
}

TEST(test_length_encodings)
{
    cd_bytes w = CD_BYTES_INIT;
    char big[70000];

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    /* Largest control payload. */
    frame(&w, FIN | CD_WS_OP_PING, big, 125);
    {
        exp_ev e = {CD_WS_EV_PING, CD_WS_OP_PING, 0, big, 125};
        feed_every_split(&w, &(expect){&e, 1});
    }
    cd_bytes_free(&w);
    /* 16-bit and 64-bit lengths, minimal and not (RFC 6455 §5.2 says
     * minimal, but rejecting the others gains nothing). */
    static const struct { size_t n; int form; } cases[] = {
        {126, LEN_AUTO}, {65535, LEN_AUTO}, {65536, LEN_AUTO},
        {5, LEN_16}, {5, LEN_64}, {300, LEN_64}, {0, LEN_64}};
    for (size_t i = 0; i < CD_ARRAY_LEN(cases); i++) {
        exp_ev e = {CD_WS_EV_MESSAGE, CD_WS_OP_TEXT, 0, big, cases[i].n};
        frame_ex(&w, FIN | CD_WS_OP_TEXT, big, cases[i].n, cases[i].form, false);
        if (cases[i].n <= 300) {
            feed_every_split(&w, &(expect){&e, 1});
        } else {
            /* Big frames: whole and a few splits, bytewise is too slow. */
            expect x = {&e, 1};
            for (size_t cut = 0; cut < 16; cut++) {
                cd_ws_parser p;
                run_rec r;
                memset(&r, 0, sizeof(r));
                cd_ws_parser_init(&p, &test_limits, NULL);
                size_t c = cut < 15 ? cut : w.len / 2;
                feed_piece(&p, w.data, c, &r);
                feed_piece(&p, w.data + c, w.len - c, &r);
                rec_matches(&r, &x, "big", c, __LINE__);
                cd_ws_parser_fini(&p);
                rec_free(&r);
            }
        }
        cd_bytes_free(&w);
    }
}

/* ---- streams of frames -------------------------------------------------- */

TEST(test_fragmentation_with_control_frames)
{
    cd_bytes w = CD_BYTES_INIT;

    /* RFC 6455 §5.4: control frames may be injected between fragments. */
    frame_s(&w, CD_WS_OP_TEXT, "Hel");
    frame_s(&w, FIN | CD_WS_OP_PING, "p1");
    frame_s(&w, CD_WS_OP_CONT, "lo ");
    frame(&w, FIN | CD_WS_OP_PONG, "", 0);
    frame(&w, CD_WS_OP_CONT, "", 0);
    frame_s(&w, FIN | CD_WS_OP_PING, "p2");
    frame_s(&w, FIN | CD_WS_OP_CONT, "w\xc3\xb6rld");
    frame_s(&w, FIN | CD_WS_OP_BINARY, "next");
    frame(&w, FIN | CD_WS_OP_CLOSE, "\x03\xe9", 2);
    feed_every_split(&w, &(expect){EXPECT(PING("p1"), PONG(""), PING("p2"),
                                          MSG(CD_WS_OP_TEXT, "Hello w\xc3\xb6rld"),
                                          MSG(CD_WS_OP_BINARY, "next"),
                                          CLOSE(1001, "")), 6});
    cd_bytes_free(&w);

    /* A character split across fragments is fine (RFC 6455 §8.1 validates
     * the message, not each frame). */
    frame(&w, CD_WS_OP_TEXT, "\xe2", 1);
    frame(&w, CD_WS_OP_CONT, "\x82", 1);
    frame_s(&w, FIN | CD_WS_OP_PING, "");
    frame(&w, FIN | CD_WS_OP_CONT, "\xac", 1);
    feed_every_split(&w, &(expect){EXPECT(PING(""), MSG(CD_WS_OP_TEXT, "\xe2\x82\xac")), 2});
    cd_bytes_free(&w);

    /* All fragments empty. */
    frame(&w, CD_WS_OP_BINARY, "", 0);
    frame(&w, CD_WS_OP_CONT, "", 0);
    frame(&w, FIN | CD_WS_OP_CONT, "", 0);
    feed_every_split(&w, &(expect){EXPECT(MSG(CD_WS_OP_BINARY, "")), 1});
    cd_bytes_free(&w);
}

TEST(test_client_mode)
{
    cd_bytes w = CD_BYTES_INIT;

    frame_ex(&w, CD_WS_OP_TEXT, "ab", 2, LEN_AUTO, true);
    frame_ex(&w, FIN | CD_WS_OP_PING, "x", 1, LEN_AUTO, true);
    frame_ex(&w, FIN | CD_WS_OP_CONT, "cd", 2, LEN_AUTO, true);
    frame_ex(&w, FIN | CD_WS_OP_CLOSE, "\x03\xe8ok", 4, LEN_AUTO, true);
    feed_every_split(&w, &(expect){EXPECT(PING("x"), MSG(CD_WS_OP_TEXT, "abcd"),
                                          CLOSE(1000, "ok")),
                                   3, 0, true});
    cd_bytes_free(&w);

    /* RFC 6455 §5.1: a client fails a masked frame. */
    frame_s(&w, FIN | CD_WS_OP_TEXT, "masked");
    expect x = {NULL, 0, 1002, true};
    feed_every_split(&w, &x);
    CHECK_EQ(fail_at(&w, &x), 1);
    cd_bytes_free(&w);
}

/* ---- zero copy and buffer ownership ------------------------------------- */

static bool points_into(const uint8_t *ptr, size_t n, const uint8_t *buf,
                        size_t len)
{
    return ptr >= buf && ptr + n <= buf + len;
}

TEST(test_zero_copy)
{
    cd_bytes w = CD_BYTES_INIT;
    cd_ws_parser p;
    cd_ws_event ev;
    size_t used, off = 0;

    frame_s(&w, FIN | CD_WS_OP_TEXT, "zero copy");
    frame_s(&w, FIN | CD_WS_OP_PING, "pong me");
    frame_s(&w, CD_WS_OP_BINARY, "frag");
    frame_s(&w, FIN | CD_WS_OP_CONT, "mented");
    cd_ws_parser_init(&p, &test_limits, NULL);

    CHECK_EQ(cd_ws_parse(&p, w.data, w.len, &used, &ev), CD_WS_EVENT);
    CHECK(points_into(ev.data, ev.len, w.data, w.len));
    CHECK_MEM(ev.data, "zero copy", 9);
    CHECK(p.msg.data == NULL && p.ctl == NULL);
    off += used;
    CHECK_EQ(cd_ws_parse(&p, w.data + off, w.len - off, &used, &ev), CD_WS_EVENT);
    CHECK_EQ(ev.type, CD_WS_EV_PING);
    CHECK(points_into(ev.data, ev.len, w.data, w.len));
    off += used;
    /* A fragmented message is assembled in the parser's own buffer. */
    CHECK_EQ(cd_ws_parse(&p, w.data + off, w.len - off, &used, &ev), CD_WS_EVENT);
    CHECK(!points_into(ev.data, ev.len, w.data, w.len));
    CHECK(ev.data == p.msg.data);
    CHECK_MEM(ev.data, "fragmented", 10);
    off += used;
    CHECK_EQ(off, w.len);
    CHECK(!cd_ws_parser_is_idle(&p));
    /* The next call releases it, even with no input. */
    CHECK_EQ(cd_ws_parse(&p, NULL, 0, &used, &ev), CD_WS_NEED_MORE);
    CHECK(p.msg.data == NULL);
    CHECK(cd_ws_parser_is_idle(&p));
    cd_ws_parser_fini(&p);
    cd_bytes_free(&w);

    /* A frame whose payload arrives in the same read as the end of its
     * header still goes zero-copy. */
    frame_s(&w, FIN | CD_WS_OP_BINARY, "late");
    cd_ws_parser_init(&p, &test_limits, NULL);
    CHECK_EQ(cd_ws_parse(&p, w.data, 3, &used, &ev), CD_WS_NEED_MORE);
    CHECK_EQ(used, 3);
    CHECK_EQ(cd_ws_parse(&p, w.data + 3, w.len - 3, &used, &ev), CD_WS_EVENT);
    CHECK(points_into(ev.data, ev.len, w.data, w.len));
    CHECK(p.msg.data == NULL);
    cd_ws_parser_fini(&p);
    cd_bytes_free(&w);
}

TEST(test_buffers_are_released)
{
    cd_bytes w = CD_BYTES_INIT;
    cd_ws_parser p;
    cd_ws_event ev;
    size_t used;

    /* A partial data frame is copied and the copy freed after delivery. */
    frame_s(&w, FIN | CD_WS_OP_TEXT, "partial message");
    cd_ws_parser_init(&p, &test_limits, NULL);
    CHECK(cd_ws_parser_is_idle(&p));
    CHECK_EQ(cd_ws_parse(&p, w.data, w.len - 3, &used, &ev), CD_WS_NEED_MORE);
    CHECK(p.msg.data != NULL);
    CHECK(!cd_ws_parser_is_idle(&p));
    cd_ws_parser_trim(&p);                /* must not drop a partial message */
    CHECK(p.msg.data != NULL);
    CHECK_EQ(cd_ws_parse(&p, w.data + w.len - 3, 3, &used, &ev), CD_WS_EVENT);
    CHECK_MEM(ev.data, "partial message", 15);
    cd_ws_parser_trim(&p);
    CHECK(p.msg.data == NULL && p.msg.cap == 0);
    CHECK(cd_ws_parser_is_idle(&p));
    cd_ws_parser_fini(&p);
    cd_bytes_free(&w);

    /* A partial control frame is kept in ctl, freed after delivery. */
    frame_s(&w, FIN | CD_WS_OP_PING, "slow ping");
    cd_ws_parser_init(&p, &test_limits, NULL);
    CHECK_EQ(cd_ws_parse(&p, w.data, 8, &used, &ev), CD_WS_NEED_MORE);
    CHECK(p.ctl != NULL);
    cd_ws_parser_trim(&p);
    CHECK(p.ctl != NULL);
    CHECK_EQ(cd_ws_parse(&p, w.data + 8, w.len - 8, &used, &ev), CD_WS_EVENT);
    CHECK_MEM(ev.data, "slow ping", 9);
    CHECK(ev.data == p.ctl);
    CHECK_EQ(cd_ws_parse(&p, NULL, 0, &used, &ev), CD_WS_NEED_MORE);
    CHECK(p.ctl == NULL);
    CHECK(cd_ws_parser_is_idle(&p));
    cd_ws_parser_fini(&p);
    cd_bytes_free(&w);

    /* A header alone holds no memory; a failure frees everything. */
    frame_s(&w, CD_WS_OP_TEXT, "open");
    frame_s(&w, FIN | CD_WS_OP_TEXT, "again");
    cd_ws_parser_init(&p, &test_limits, NULL);
    CHECK_EQ(cd_ws_parse(&p, w.data, 4, &used, &ev), CD_WS_NEED_MORE);
    CHECK(p.msg.data == NULL && p.ctl == NULL);
    CHECK(!cd_ws_parser_is_idle(&p));
    CHECK_EQ(cd_ws_parse(&p, w.data + 4, w.len - 4, &used, &ev), CD_WS_FAIL);
    CHECK(p.msg.data == NULL && p.ctl == NULL);
    CHECK_EQ(cd_ws_fail_code(&p), 1002);
    cd_ws_parser_fini(&p);
    cd_bytes_free(&w);

    /* The struct stays small: it is embedded in every connection. */
    CHECK(sizeof(cd_ws_parser) <= 96);
}

/* ---- protocol errors ----------------------------------------------------- */

/* One failing stream: events before the failure, the code, and the byte at
 * which the failure must be detected. */
static void check_fail_at(const cd_bytes *w, const exp_ev *ev, size_t n,
                          int code, long at, const cd_ws_limits *lim, bool pmd,
                          int line)
{
    expect x = {ev, n, code, false, pmd, lim};

    feed_every_split_at(w, &x, line);
    long got = fail_at(w, &x);
    /* at < -1: the position depends on zlib's buffering; only the code
     * matters. */
    if (at >= -1 && got != at)
        TEST_FAIL_AT(__FILE__, line, "failed at byte %ld, want %ld", got, at);
}

#define check_fail(w, code, at) check_fail_at(w, NULL, 0, code, at, NULL, false, __LINE__)

TEST(test_masking_required)
{
    cd_bytes w = CD_BYTES_INIT;

    /* RFC 6455 §5.1: a server fails an unmasked frame. */
    frame_ex(&w, FIN | CD_WS_OP_TEXT, "plain", 5, LEN_AUTO, true);
    check_fail(&w, 1002, 1);
    cd_bytes_free(&w);
    frame_ex(&w, FIN | CD_WS_OP_PING, "", 0, LEN_AUTO, true);
    check_fail(&w, 1002, 1);
    cd_bytes_free(&w);
}

TEST(test_reserved_bits)
{
    cd_bytes w = CD_BYTES_INIT;
    static const uint8_t bits[] = {RSV2, RSV3, RSV2 | RSV3, RSV1 | RSV2};

    for (size_t i = 0; i < CD_ARRAY_LEN(bits); i++) {
        frame_s(&w, FIN | bits[i] | CD_WS_OP_TEXT, "x");
        check_fail(&w, 1002, 0);
        cd_bytes_free(&w);
        frame_s(&w, FIN | bits[i] | CD_WS_OP_PING, "x");
        check_fail(&w, 1002, 0);
        cd_bytes_free(&w);
    }
    /* RSV1 without permessage-deflate. */
    frame_s(&w, FIN | RSV1 | CD_WS_OP_TEXT, "x");
    check_fail(&w, 1002, 0);
    cd_bytes_free(&w);
    /* After a valid message, the bad frame fails and the first still came. */
    frame_s(&w, FIN | CD_WS_OP_TEXT, "ok");
    frame_s(&w, FIN | RSV3 | CD_WS_OP_BINARY, "x");
    check_fail_at(&w, EXPECT(MSG(CD_WS_OP_TEXT, "ok")), 1, 1002, 8, NULL, false,
                  __LINE__);
    cd_bytes_free(&w);
}

TEST(test_reserved_opcodes)
{
    cd_bytes w = CD_BYTES_INIT;
    static const uint8_t ops[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};

    for (size_t i = 0; i < CD_ARRAY_LEN(ops); i++) {
        frame_s(&w, FIN | ops[i], "");
        check_fail(&w, 1002, 0);
        cd_bytes_free(&w);
        /* Also inside a fragmented message, and without FIN. */
        frame_s(&w, CD_WS_OP_TEXT, "a");
        frame_s(&w, ops[i], "payload");
        check_fail(&w, 1002, 7);
        cd_bytes_free(&w);
    }
}

TEST(test_fragmentation_errors)
{
    cd_bytes w = CD_BYTES_INIT;

    /* RFC 6455 §5.4: continuation with nothing to continue. */
    frame_s(&w, FIN | CD_WS_OP_CONT, "orphan");
    check_fail(&w, 1002, 0);
    cd_bytes_free(&w);
    frame_s(&w, FIN | CD_WS_OP_TEXT, "done");
    frame_s(&w, CD_WS_OP_CONT, "orphan");
    check_fail_at(&w, EXPECT(MSG(CD_WS_OP_TEXT, "done")), 1, 1002, 10, NULL,
                  false, __LINE__);
    cd_bytes_free(&w);
    /* A new message while one is open. */
    frame_s(&w, CD_WS_OP_TEXT, "one");
    frame_s(&w, FIN | CD_WS_OP_TEXT, "two");
    check_fail(&w, 1002, 9);
    cd_bytes_free(&w);
    frame_s(&w, CD_WS_OP_BINARY, "one");
    frame_s(&w, FIN | CD_WS_OP_PING, "ok");
    frame_s(&w, CD_WS_OP_BINARY, "two");
    check_fail_at(&w, EXPECT(PING("ok")), 1, 1002, 17, NULL, false, __LINE__);
    cd_bytes_free(&w);
}

TEST(test_control_frame_rules)
{
    cd_bytes w = CD_BYTES_INIT;
    char big[126];

    memset(big, 'p', sizeof(big));
    /* RFC 6455 §5.5: control frames are not fragmented... */
    frame_s(&w, CD_WS_OP_PING, "frag");
    check_fail(&w, 1002, 0);
    cd_bytes_free(&w);
    frame_s(&w, CD_WS_OP_CLOSE, "");
    check_fail(&w, 1002, 0);
    cd_bytes_free(&w);
    /* ...and carry at most 125 bytes, decided from the length byte. */
    frame(&w, FIN | CD_WS_OP_PING, big, 126);
    check_fail(&w, 1002, 1);
    cd_bytes_free(&w);
    frame_ex(&w, FIN | CD_WS_OP_PONG, big, 5, LEN_16, false);
    check_fail(&w, 1002, 1);
    cd_bytes_free(&w);
    /* RSV1 on a control frame, even with deflate negotiated. */
    frame_s(&w, FIN | RSV1 | CD_WS_OP_PING, "x");
    check_fail_at(&w, NULL, 0, 1002, 0, NULL, true, __LINE__);
    cd_bytes_free(&w);
}

TEST(test_close_frames)
{
    cd_bytes w = CD_BYTES_INIT;
    uint8_t pl[8];

    /* RFC 6455 §5.5.1: one byte is not a code; decided from the header. */
    frame(&w, FIN | CD_WS_OP_CLOSE, "\x03", 1);
    check_fail(&w, 1002, 1);
    cd_bytes_free(&w);
    /* Every code: accepted exactly when valid (Autobahn 7.7, 7.9, 7.13). */
    long wrong = 0;
    for (uint32_t code = 0; code <= 0xFFFF; code++) {
        pl[0] = (uint8_t)(code >> 8);
        pl[1] = (uint8_t)code;
        frame(&w, FIN | CD_WS_OP_CLOSE, (const char *)pl, 2);
        cd_ws_parser p;
        cd_ws_event ev;
        size_t used;
        cd_ws_parser_init(&p, &test_limits, NULL);
        int rc = cd_ws_parse(&p, w.data, w.len, &used, &ev);
        if (cd_ws_close_code_is_valid((uint16_t)code))
            wrong += rc != CD_WS_EVENT || ev.close_code != code || ev.len != 0;
        else
            wrong += rc != CD_WS_FAIL || cd_ws_fail_code(&p) != 1002;
        cd_ws_parser_fini(&p);
        cd_bytes_free(&w);
    }
    CHECK_EQ(wrong, 0);
    /* Invalid code with every split. */
    frame(&w, FIN | CD_WS_OP_CLOSE, "\x03\xed", 2);   /* 1005 */
    check_fail(&w, 1002, 7);
    cd_bytes_free(&w);
    /* A reason that is not UTF-8: 1007 (Autobahn 7.5.1). */
    frame(&w, FIN | CD_WS_OP_CLOSE,
          "\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
          "\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
          22);
    check_fail(&w, 1007, 27);
    cd_bytes_free(&w);
    /* Longest reason (Autobahn 7.3.5). */
    char reason[126];
    reason[0] = 0x03;
    reason[1] = (char)0xe8;
    memset(reason + 2, '*', 123);
    reason[125] = '\0';
    frame(&w, FIN | CD_WS_OP_CLOSE, reason, 125);
    feed_every_split(&w, &(expect){EXPECT(CLOSE(1000, reason + 2)), 1});
    cd_bytes_free(&w);
    /* A close between fragments is delivered like any control frame. */
    frame_s(&w, CD_WS_OP_TEXT, "half");
    frame(&w, FIN | CD_WS_OP_CLOSE, "\x03\xe8", 2);
    expect x = {EXPECT(CLOSE(1000, "")), 1};
    for (size_t cut = 0; cut <= w.len; cut++) {
        cd_ws_parser p;
        run_rec r;
        memset(&r, 0, sizeof(r));
        cd_ws_parser_init(&p, &test_limits, NULL);
        feed_piece(&p, w.data, cut, &r);
        feed_piece(&p, w.data + cut, w.len - cut, &r);
        rec_matches(&r, &x, "close mid-message", cut, __LINE__);
        cd_ws_parser_fini(&p);
        rec_free(&r);
    }
    cd_bytes_free(&w);
}

TEST(test_length_msb)
{
    cd_bytes w = CD_BYTES_INIT;
    /* RFC 6455 §5.2: fails at the first length byte, before the rest. */
    static const uint8_t hdr[] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1,
                                  0x37, 0xfa, 0x21, 0x3d, 'x'};
    raw(&w, hdr, sizeof(hdr));
    check_fail(&w, 1002, 2);
    cd_bytes_free(&w);
    /* 2^63 - 1 is a legal length; the size limit rejects it (1009). */
    static const uint8_t big[] = {0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0x37, 0xfa, 0x21, 0x3d};
    raw(&w, big, sizeof(big));
    check_fail(&w, 1009, 9);
    cd_bytes_free(&w);
}

/* ---- UTF-8 in text messages --------------------------------------------- */

TEST(test_text_utf8)
{
    cd_bytes w = CD_BYTES_INIT;

    /* Whole frame, invalid: 1007. */
    frame(&w, FIN | CD_WS_OP_TEXT, "ok\xc0\xafok", 6);
    check_fail(&w, 1007, 6 + 2);
    cd_bytes_free(&w);
    /* Binary is not checked. */
    frame(&w, FIN | CD_WS_OP_BINARY, "ok\xc0\xafok", 6);
    feed_every_split(&w, &(expect){EXPECT(MSGN(CD_WS_OP_BINARY, "ok\xc0\xafok", 6)), 1});
    cd_bytes_free(&w);
    /* Autobahn 6.4.1: the bad fragment fails at its bad byte, before the
     * third fragment arrives. */
    frame(&w, CD_WS_OP_TEXT, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 11);
    frame(&w, CD_WS_OP_CONT, "\xf4\x90\x80\x80", 4);
    frame(&w, FIN | CD_WS_OP_CONT, "edited", 6);
    check_fail(&w, 1007, 17 + 6 + 1);
    cd_bytes_free(&w);
    /* Autobahn 6.4.2: the lead byte alone is fine, its follower is not. */
    frame(&w, CD_WS_OP_TEXT, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 11);
    frame(&w, CD_WS_OP_CONT, "\xf4", 1);
    frame(&w, FIN | CD_WS_OP_CONT, "\x90\x80\x80" "edited", 9);
    check_fail(&w, 1007, 17 + 7 + 6);
    cd_bytes_free(&w);
    /* Autobahn 6.4.3/6.4.4: one frame, bad byte mid-payload, fails there
     * even though the frame's remaining bytes have not arrived. */
    frame(&w, FIN | CD_WS_OP_TEXT,
          "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64",
          21);
    check_fail(&w, 1007, 6 + 12);
    cd_bytes_free(&w);
    /* Incomplete at the end of the message: fails at the last byte. */
    frame(&w, CD_WS_OP_TEXT, "abc\xe2\x82", 5);
    frame(&w, FIN | CD_WS_OP_CONT, "", 0);
    check_fail(&w, 1007, 11 + 5);
    cd_bytes_free(&w);
    frame(&w, FIN | CD_WS_OP_TEXT, "abc\xe2\x82", 5);
    check_fail(&w, 1007, 10);
    cd_bytes_free(&w);
    /* Text split into many one-byte fragments with pings between. */
    const char *s = "\xf0\x9f\x98\x80\xce\xba!";
    frame(&w, CD_WS_OP_TEXT, s, 1);
    for (size_t i = 1; i < 7; i++) {
        frame_s(&w, FIN | CD_WS_OP_PING, "");
        frame(&w, i == 6 ? FIN : CD_WS_OP_CONT, s + i, 1);
    }
    {
        exp_ev e[7];
        for (size_t i = 0; i < 6; i++)
            e[i] = (exp_ev)PING("");
        e[6] = (exp_ev)MSG(CD_WS_OP_TEXT, s);
        feed_every_split(&w, &(expect){e, 7});
    }
    cd_bytes_free(&w);
}

/* ---- limits -------------------------------------------------------------- */

TEST(test_message_size_limit)
{
    static const cd_ws_limits lim = {100, 0};
    cd_bytes w = CD_BYTES_INIT;
    char buf[200];

    memset(buf, 'm', sizeof(buf));
    /* Exactly at the limit: fine. */
    frame(&w, FIN | CD_WS_OP_BINARY, buf, 100);
    {
        exp_ev e = MSGN(CD_WS_OP_BINARY, buf, 100);
        feed_every_split(&w, &(expect){&e, 1, 0, false, false, &lim});
    }
    cd_bytes_free(&w);
    /* One over: 1009, decided at the last length byte, before the mask. */
    frame(&w, FIN | CD_WS_OP_BINARY, buf, 101);
    check_fail_at(&w, NULL, 0, 1009, 1, &lim, false, __LINE__);
    cd_bytes_free(&w);
    frame_ex(&w, FIN | CD_WS_OP_BINARY, buf, 101, LEN_16, false);
    check_fail_at(&w, NULL, 0, 1009, 3, &lim, false, __LINE__);
    cd_bytes_free(&w);
    /* Fragments add up: 60 + 40 fits, 60 + 41 does not. */
    frame(&w, CD_WS_OP_TEXT, buf, 60);
    frame_s(&w, FIN | CD_WS_OP_PING, "");
    frame(&w, FIN | CD_WS_OP_CONT, buf, 40);
    {
        exp_ev e[2] = {PING(""), MSGN(CD_WS_OP_TEXT, buf, 100)};
        feed_every_split(&w, &(expect){e, 2, 0, false, false, &lim});
    }
    cd_bytes_free(&w);
    frame(&w, CD_WS_OP_TEXT, buf, 60);
    frame(&w, FIN | CD_WS_OP_CONT, buf, 41);
    check_fail_at(&w, NULL, 0, 1009, 66 + 1, &lim, false, __LINE__);
    cd_bytes_free(&w);
    /* A huge declared length with a small limit allocates nothing. */
    static const uint8_t huge[] = {0x82, 0xff, 0x00, 0x00, 0x10, 0, 0, 0, 0, 0};
    raw(&w, huge, sizeof(huge));
    check_fail_at(&w, NULL, 0, 1009, 9, &lim, false, __LINE__);
    cd_bytes_free(&w);
    /* Control frames do not count towards the message. */
    frame(&w, CD_WS_OP_TEXT, buf, 100);
    frame(&w, FIN | CD_WS_OP_PING, buf, 125);
    frame(&w, FIN | CD_WS_OP_CONT, "", 0);
    {
        exp_ev e[2] = {{CD_WS_EV_PING, CD_WS_OP_PING, 0, buf, 125},
                       MSGN(CD_WS_OP_TEXT, buf, 100)};
        feed_every_split(&w, &(expect){e, 2, 0, false, false, &lim});
    }
    cd_bytes_free(&w);
}

TEST(test_fragment_limit)
{
    static const cd_ws_limits lim = {1000, 3};
    cd_bytes w = CD_BYTES_INIT;

    frame_s(&w, CD_WS_OP_TEXT, "a");
    frame_s(&w, CD_WS_OP_CONT, "b");
    frame_s(&w, FIN | CD_WS_OP_CONT, "c");
    frame_s(&w, CD_WS_OP_TEXT, "d");     /* the count restarts per message */
    frame_s(&w, CD_WS_OP_CONT, "e");
    frame_s(&w, FIN | CD_WS_OP_CONT, "f");
    feed_every_split(&w, &(expect){EXPECT(MSG(CD_WS_OP_TEXT, "abc"),
                                          MSG(CD_WS_OP_TEXT, "def")),
                                   2, 0, false, false, &lim});
    cd_bytes_free(&w);
    frame_s(&w, CD_WS_OP_TEXT, "a");
    frame_s(&w, CD_WS_OP_CONT, "b");
    frame_s(&w, FIN | CD_WS_OP_PING, "");  /* pings are not fragments */
    frame_s(&w, CD_WS_OP_CONT, "c");
    frame_s(&w, FIN | CD_WS_OP_CONT, "d");
    check_fail_at(&w, EXPECT(PING("")), 1, 1009, 7 * 2 + 6 + 7 + 1, &lim, false,
                  __LINE__);
    cd_bytes_free(&w);
    /* 0 means no limit. */
    static const cd_ws_limits unlimited = {1000, 0};
    for (int i = 0; i < 200; i++)
        frame_s(&w, i == 0 ? CD_WS_OP_BINARY : CD_WS_OP_CONT, "z");
    frame(&w, FIN | CD_WS_OP_CONT, "", 0);
    {
        char zs[201];
        memset(zs, 'z', 200);
        zs[200] = '\0';
        exp_ev e = MSG(CD_WS_OP_BINARY, zs);
        expect x = {&e, 1, 0, false, false, &unlimited};
        cd_ws_parser p;
        run_rec r;
        memset(&r, 0, sizeof(r));
        cd_ws_parser_init(&p, &unlimited, NULL);
        feed_piece(&p, w.data, w.len, &r);
        rec_matches(&r, &x, "unlimited", 0, __LINE__);
        cd_ws_parser_fini(&p);
        rec_free(&r);
    }
    cd_bytes_free(&w);
}

/* ---- permessage-deflate -------------------------------------------------- */

TEST(test_compressed_messages)
{
    cd_bytes w = CD_BYTES_INIT;
    uint8_t z[512];
    const char *text = "Hello, compressed world! Hello, compressed world! \xce\xba\xe1\xbd\xb9";
    size_t zn = compress_pmd(text, strlen(text), z, sizeof(z));

    CHECK(zn > 0);
    /* RFC 7692 §6: RSV1 on the first frame marks the message compressed. */
    frame(&w, FIN | RSV1 | CD_WS_OP_TEXT, (const char *)z, zn);
    feed_every_split(&w, &(expect){EXPECT(MSG(CD_WS_OP_TEXT, text)), 1, 0, false, true});
    cd_bytes_free(&w);
    /* Fragmented, with a ping between, and an empty final fragment. */
    frame(&w, RSV1 | CD_WS_OP_TEXT, (const char *)z, 5);
    frame_s(&w, FIN | CD_WS_OP_PING, "zz");
    frame(&w, CD_WS_OP_CONT, (const char *)z + 5, zn - 5);
    frame(&w, FIN | CD_WS_OP_CONT, "", 0);
    feed_every_split(&w, &(expect){EXPECT(PING("zz"), MSG(CD_WS_OP_TEXT, text)),
                                   2, 0, false, true});
    cd_bytes_free(&w);
    /* An empty first fragment still marks the message compressed. */
    frame(&w, RSV1 | CD_WS_OP_TEXT, "", 0);
    frame(&w, CD_WS_OP_CONT, (const char *)z, zn);
    frame(&w, FIN | CD_WS_OP_CONT, "", 0);
    feed_every_split(&w, &(expect){EXPECT(MSG(CD_WS_OP_TEXT, text)), 1, 0, false, true});
    cd_bytes_free(&w);
    /* A compressed message followed by a plain one (same connection). */
    frame(&w, FIN | RSV1 | CD_WS_OP_BINARY, (const char *)z, zn);
    frame_s(&w, FIN | CD_WS_OP_BINARY, "plain");
    feed_every_split(&w, &(expect){EXPECT(MSG(CD_WS_OP_BINARY, text),
                                          MSG(CD_WS_OP_BINARY, "plain")),
                                   2, 0, false, true});
    cd_bytes_free(&w);
    /* An empty compressed message: one 00 byte (RFC 7692 §7.2.3.6). */
    frame(&w, FIN | RSV1 | CD_WS_OP_TEXT, "\x00", 1);
    feed_every_split(&w, &(expect){EXPECT(MSG(CD_WS_OP_TEXT, "")), 1, 0, false, true});
    cd_bytes_free(&w);
}

TEST(test_compressed_errors)
{
    cd_bytes w = CD_BYTES_INIT;
    uint8_t z[4096];
    char big[3000];

    memset(big, 'A', sizeof(big));
    /* RFC 7692 §6.1: RSV1 on a continuation frame. */
    frame(&w, RSV1 | CD_WS_OP_TEXT, "\x00", 1);
    frame(&w, FIN | RSV1 | CD_WS_OP_CONT, "\x00", 1);
    check_fail_at(&w, NULL, 0, 1002, 7, NULL, true, __LINE__);
    cd_bytes_free(&w);
    /* Corrupt deflate data: 1007. */
    frame(&w, FIN | RSV1 | CD_WS_OP_BINARY, "\xff\xff\xff\xff", 4);
    {
        expect x = {NULL, 0, 1007, false, true};
        feed_every_split(&w, &x);
    }
    cd_bytes_free(&w);
    /* Inflates past the limit: 1009, though the wire bytes are few. */
    static const cd_ws_limits lim = {1000, 0};
    size_t zn = compress_pmd(big, sizeof(big), z, sizeof(z));
    CHECK(zn > 0 && zn < 100);
    frame(&w, FIN | RSV1 | CD_WS_OP_BINARY, (const char *)z, zn);
    check_fail_at(&w, NULL, 0, 1009, -2, &lim, true, __LINE__);
    cd_bytes_free(&w);
    /* Exactly at the limit inflated is fine. */
    zn = compress_pmd(big, 1000, z, sizeof(z));
    frame(&w, FIN | RSV1 | CD_WS_OP_BINARY, (const char *)z, zn);
    {
        exp_ev e = MSGN(CD_WS_OP_BINARY, big, 1000);
        feed_every_split(&w, &(expect){&e, 1, 0, false, true, &lim});
    }
    cd_bytes_free(&w);
    /* Compressed bytes count against the limit too, from the header, with
     * zlib's worst-case growth allowed: 3 + 1 + 1 + 16 = 21 bytes. */
    static const cd_ws_limits tiny = {3, 0};
    frame(&w, FIN | RSV1 | CD_WS_OP_BINARY, "0123456789012345678901", 22);
    check_fail_at(&w, NULL, 0, 1009, 1, &tiny, true, __LINE__);
    cd_bytes_free(&w);
    /* A message cut short inside a deflate block: only the final frame's
     * is_final tells the inflater, which then finds no block boundary. */
    zn = compress_pmd(big, 500, z, sizeof(z));
    frame(&w, RSV1 | CD_WS_OP_BINARY, (const char *)z, zn - 1);
    frame(&w, FIN | CD_WS_OP_CONT, "", 0);
    {
        expect x = {NULL, 0, 1007, false, true};
        feed_every_split(&w, &x);
    }
    cd_bytes_free(&w);
    /* Inflated text that is not UTF-8: 1007. */
    zn = compress_pmd("abc\xed\xa0\x80xyz", 9, z, sizeof(z));
    frame(&w, FIN | RSV1 | CD_WS_OP_TEXT, (const char *)z, zn);
    {
        expect x = {NULL, 0, 1007, false, true};
        feed_every_split(&w, &x);
    }
    cd_bytes_free(&w);
}

int main(void)
{
    RUN(test_header_write);
    RUN(test_writers_round_trip);
    RUN(test_mask_against_reference);
    RUN(test_close_code_validity);
    RUN(test_close_payload);
    RUN(test_single_frames);
    RUN(test_length_encodings);
    RUN(test_fragmentation_with_control_frames);
    RUN(test_client_mode);
    RUN(test_zero_copy);
    RUN(test_buffers_are_released);
    RUN(test_masking_required);
    RUN(test_reserved_bits);
    RUN(test_reserved_opcodes);
    RUN(test_fragmentation_errors);
    RUN(test_control_frame_rules);
    RUN(test_close_frames);
    RUN(test_length_msb);
    RUN(test_text_utf8);
    RUN(test_message_size_limit);
    RUN(test_fragment_limit);
    RUN(test_compressed_messages);
    RUN(test_compressed_errors);
    return test_main_end();
}
