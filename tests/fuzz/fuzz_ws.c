/* fuzz_ws.c - the frame parser on arbitrary bytes, whole and split.
 *
 * Input: byte 0 picks the chunking (as hiredis's fuzzer picks its chunk
 * size from the first byte), byte 1 the mode (server or client,
 * permessage-deflate, limits), the rest is the stream.  The stream is parsed
 * once whole and once in chunks; both runs must yield the same events, must
 * fail together, and after a failure nothing more may come.  Every event is
 * checked against the protocol's promises (UTF-8 text, valid close codes,
 * sizes within the limits). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deflate.h"
#include "utf8.h"
#include "ws.h"

#define MAX_EVENTS 64

typedef struct rec {
    uint8_t type;
    uint8_t opcode;
    uint16_t code;
    size_t len;
    uint32_t hash;
} rec;

typedef struct run {
    rec ev[MAX_EVENTS];
    size_t n;
    bool failed;
    uint16_t fail_code;
} run;

static uint32_t fnv(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static void check_event(const cd_ws_event *ev, const cd_ws_limits *lim)
{
    if (ev->data == NULL)
        abort();
    switch (ev->type) {
    case CD_WS_EV_MESSAGE:
        if (ev->opcode != CD_WS_OP_TEXT && ev->opcode != CD_WS_OP_BINARY)
            abort();
        if (ev->len > lim->max_message_bytes)
            abort();
        if (ev->opcode == CD_WS_OP_TEXT && !cd_utf8_valid(ev->data, ev->len))
            abort();
        break;
    case CD_WS_EV_PING:
    case CD_WS_EV_PONG:
        if (ev->len > CD_WS_MAX_CONTROL)
            abort();
        break;
    case CD_WS_EV_CLOSE:
        if (ev->len > CD_WS_MAX_CONTROL - 2)
            abort();
        if (ev->close_code == CD_WS_CLOSE_NO_STATUS) {
            if (ev->len != 0)
                abort();
        } else if (!cd_ws_close_code_is_valid(ev->close_code)) {
            abort();
        }
        if (!cd_utf8_valid(ev->data, ev->len))
            abort();
        break;
    default:
        abort();
    }
}

/* Feed [data, data+len) in one piece of a private, exact-size copy. */
static void feed(cd_ws_parser *p, const uint8_t *data, size_t len, run *r,
                 const cd_ws_limits *lim)
{
    uint8_t *buf = malloc(len ? len : 1);
    size_t off = 0;

    if (buf == NULL)
        abort();
    memcpy(buf, data, len);
    do {
        cd_ws_event ev;
        size_t used = (size_t)-1;
        int rc = cd_ws_parse(p, buf + off, len - off, &used, &ev);
        if (r->failed) {
            /* After a failure every call fails and consumes nothing. */
            if (rc != CD_WS_FAIL || used != 0)
                abort();
            break;
        }
        if (used > len - off)
            abort();
        off += used;
        if (rc == CD_WS_FAIL) {
            r->failed = true;
            r->fail_code = cd_ws_fail_code(p);
            if (r->fail_code != 1002 && r->fail_code != 1007 &&
                r->fail_code != 1009 && r->fail_code != 1011)
                abort();
            if (!cd_ws_parser_is_idle(p))
                abort();
            break;
        }
        if (rc == CD_WS_NEED_MORE) {
            if (off != len)
                abort();
            break;
        }
        if (rc != CD_WS_EVENT)
            abort();
        check_event(&ev, lim);
        if (r->n < MAX_EVENTS) {
            rec *e = &r->ev[r->n++];
            e->type = (uint8_t)ev.type;
            e->opcode = ev.opcode;
            e->code = ev.close_code;
            e->len = ev.len;
            e->hash = fnv(ev.data, ev.len);
        }
    } while (off < len);
    free(buf);
}

static bool same(const run *a, const run *b, bool codes)
{
    if (a->n != b->n || a->failed != b->failed)
        return false;
    if (codes && a->fail_code != b->fail_code)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        const rec *x = &a->ev[i], *y = &b->ev[i];
        if (x->type != y->type || x->opcode != y->opcode ||
            x->code != y->code || x->len != y->len || x->hash != y->hash)
            return false;
    }
    return true;
}

static cd_pmd *new_pmd(bool no_takeover)
{
    cd_pmd_params params = {no_takeover, no_takeover, 15, 15};
    cd_pmd_config cfg = {true, 15, 8, 0};
    return cd_pmd_create(&params, &cfg);
}

static void start(cd_ws_parser *p, uint8_t mode, const cd_ws_limits *lim,
                  cd_pmd **pmd)
{
    *pmd = (mode & 2) ? new_pmd((mode & 4) != 0) : NULL;
    if ((mode & 2) && *pmd == NULL)
        abort();
    if (mode & 1)
        cd_ws_parser_init_client(p, lim, *pmd);
    else
        cd_ws_parser_init(p, lim, *pmd);
}

static void finish(cd_ws_parser *p, cd_pmd *pmd)
{
    cd_ws_parser_trim(p);
    cd_ws_parser_fini(p);
    if (pmd)
        cd_pmd_destroy(pmd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const cd_ws_limits limits[4] = {
        {1 << 20, 0}, {64, 4}, {4096, 0}, {0, 1}};
    cd_ws_parser p;
    cd_pmd *pmd;
    run whole, split;

    if (size < 2)
        return 0;
    uint8_t chunking = data[0];
    uint8_t mode = data[1];
    const cd_ws_limits *lim = &limits[(mode >> 3) & 3];
    data += 2;
    size -= 2;

    memset(&whole, 0, sizeof(whole));
    start(&p, mode, lim, &pmd);
    feed(&p, data, size, &whole, lim);
    finish(&p, pmd);

    /* Chunk sizes: fixed from the first byte, or varied by a small PRNG
     * seeded from it, so splits land everywhere. */
    memset(&split, 0, sizeof(split));
    start(&p, mode, lim, &pmd);
    uint32_t rng = chunking | 0x9e3700u;
    size_t max_chunk = (size_t)(chunking & 0x3F) + 1;
    for (size_t off = 0; off < size;) {
        size_t n = max_chunk;
        if (chunking & 0x80) {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            n = rng % (max_chunk + 1);    /* empty reads happen too */
        }
        if (n > size - off)
            n = size - off;
        feed(&p, data + off, n, &split, lim);
        off += n;
    }
    finish(&p, pmd);

    /* Inflate may detect a bad message in another way depending on how it
     * is chunked (size versus data), so codes only compare without it. */
    if (!same(&whole, &split, (mode & 2) == 0))
        abort();
    return 0;
}
