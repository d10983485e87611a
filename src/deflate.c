/* deflate.c - permessage-deflate (RFC 7692): offer negotiation and the
 * per-connection zlib streams.
 *
 * Negotiation parses the RFC 6455 §9.1 extension list and never allocates.
 * A cd_pmd owns at most one raw inflate and one raw deflate stream, each
 * created on first use and released after every message whose direction has
 * no context takeover, so an idle connection holds no zlib memory then.
 * Invariant: between messages the inflate stream (if any) sits on a DEFLATE
 * block boundary and the deflate stream has just been sync-flushed, so both
 * peers' LZ77 windows agree byte for byte.
 *
 * Memory (zlib 1.2.13, 64-bit, measured): inflate holds 7160 B of state plus
 * a window of 1 << window_bits, allocated on first output (about 7 KiB +
 * 32 KiB = 39 KiB at 15 bits); deflate holds (1 << (window_bits + 2)) +
 * (1 << (mem_level + 9)) plus 5.9 KiB (262 KiB at 15 bits and memLevel 8,
 * 135 KiB at 15 bits and memLevel 1).  Each stream also costs a 112-byte
 * z_stream, and cd_pmd itself is under 64 bytes. */
#define ZLIB_CONST
#include "deflate.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "common.h"
#include "conduit.h"

#define PMD_NAME "permessage-deflate"

/* zlib's inflate_state and deflate_state sizes, for cd_pmd_memory_bytes. */
#define INFLATE_STATE_BYTES 7160u
#define DEFLATE_STATE_BYTES 5952u

/* ---------------------------------------------------------------------
 * Negotiation
 * ------------------------------------------------------------------- */

typedef struct scan {
    const char *s;
    size_t len;
    size_t pos;
} scan;

/* A parameter value after quoted-string unescaping.  Window bits need two
 * characters, so only a short prefix is kept; len is the full length. */
typedef struct pvalue {
    bool is_present;
    bool is_token;
    size_t len;
    char text[3];
} pvalue;

/* One permessage-deflate offer as parsed. */
typedef struct offer {
    bool is_pmd;
    bool is_valid;
    bool server_nct;
    bool client_nct;
    bool has_server_bits;
    bool has_client_bits;
    uint8_t server_bits;
    uint8_t client_bits;             /* 0: client_max_window_bits had no value */
} offer;

static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool at(const scan *sc, char c)
{
    return sc->pos < sc->len && sc->s[sc->pos] == c;
}

static void skip_ows(scan *sc)
{
    while (sc->pos < sc->len && (sc->s[sc->pos] == ' ' || sc->s[sc->pos] == '\t'))
        sc->pos++;
}

/* Advance over a token; returns its length (0: no token here). */
static size_t take_token(scan *sc)
{
    size_t start = sc->pos;
    while (sc->pos < sc->len && is_tchar((unsigned char)sc->s[sc->pos]))
        sc->pos++;
    return sc->pos - start;
}

static void value_push(pvalue *v, unsigned char c)
{
    if (!is_tchar(c))
        v->is_token = false;
    if (v->len < sizeof(v->text))
        v->text[v->len] = (char)c;
    v->len++;
}

/* RFC 7230 §3.2.6 quoted-string, starting at the opening quote.  Returns
 * false on a character outside qdtext/quoted-pair or a missing close. */
static bool take_quoted(scan *sc, pvalue *v)
{
    sc->pos++;
    while (sc->pos < sc->len) {
        unsigned char c = (unsigned char)sc->s[sc->pos++];
        if (c == '"')
            return true;
        if (c == '\\') {
            if (sc->pos == sc->len)
                return false;
            c = (unsigned char)sc->s[sc->pos++];
            if (c != '\t' && (c < 0x20 || c == 0x7f))
                return false;
        } else if (c != '\t' && (c < 0x20 || c == 0x7f)) {
            return false;
        }
        value_push(v, c);
    }
    return false;
}

static bool name_is(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/* RFC 7692 §7.1.2: "a decimal integer value without leading zeroes between
 * 8 to 15, inclusive".  Returns the value, or 0 when invalid. */
static uint8_t parse_bits(const pvalue *v)
{
    if (v->len == 1 && (v->text[0] == '8' || v->text[0] == '9'))
        return (uint8_t)(v->text[0] - '0');
    if (v->len == 2 && v->text[0] == '1' && v->text[1] >= '0' && v->text[1] <= '5')
        return (uint8_t)(10 + v->text[1] - '0');
    return 0;
}

/* Record one parameter of a permessage-deflate offer.  RFC 7692 §7: an
 * offer with an unknown parameter, an invalid value or a repeated parameter
 * must be declined, so each of those clears is_valid. */
static void apply_param(offer *o, const char *name, size_t n, const pvalue *v)
{
    /* RFC 6455 §9.1: a quoted value must unescape to a token. */
    if (v->is_present && !v->is_token) {
        o->is_valid = false;
        return;
    }
    if (name_is(name, n, "server_no_context_takeover")) {
        /* RFC 7692 §7.1.1.1: this parameter has no value. */
        if (o->server_nct || v->is_present)
            o->is_valid = false;
        o->server_nct = true;
    } else if (name_is(name, n, "client_no_context_takeover")) {
        /* RFC 7692 §7.1.1.2: this parameter has no value. */
        if (o->client_nct || v->is_present)
            o->is_valid = false;
        o->client_nct = true;
    } else if (name_is(name, n, "server_max_window_bits")) {
        /* RFC 7692 §7.1.2.1: the value is required in an offer. */
        uint8_t bits = v->is_present ? parse_bits(v) : 0;
        if (o->has_server_bits || bits == 0)
            o->is_valid = false;
        o->has_server_bits = true;
        o->server_bits = bits;
    } else if (name_is(name, n, "client_max_window_bits")) {
        /* RFC 7692 §7.1.2.2: the value is optional in an offer. */
        uint8_t bits = v->is_present ? parse_bits(v) : 0;
        if (o->has_client_bits || (v->is_present && bits == 0))
            o->is_valid = false;
        o->has_client_bits = true;
        o->client_bits = bits;
    } else {
        o->is_valid = false;
    }
}

/* Parse one extension of the list (RFC 6455 §9.1):
 *   extension = extension-token *( ";" extension-param )
 *   extension-param = token [ "=" (token | quoted-string) ]
 * with optional whitespace around the separators.  On success sc->pos is
 * at the next ',' or at the end.  Returns false on a syntax error. */
static bool parse_extension(scan *sc, offer *o)
{
    const char *name = sc->s + sc->pos;
    size_t n = take_token(sc);
    if (n == 0)
        return false;
    o->is_pmd = name_is(name, n, PMD_NAME);
    for (;;) {
        skip_ows(sc);
        if (sc->pos == sc->len || at(sc, ','))
            return true;
        if (!at(sc, ';'))
            return false;
        sc->pos++;
        skip_ows(sc);
        const char *pname = sc->s + sc->pos;
        size_t pn = take_token(sc);
        if (pn == 0)
            return false;
        skip_ows(sc);
        pvalue v = {false, true, 0, {0}};
        if (at(sc, '=')) {
            sc->pos++;
            skip_ows(sc);
            v.is_present = true;
            if (at(sc, '"')) {
                if (!take_quoted(sc, &v))
                    return false;
                if (v.len == 0)
                    v.is_token = false;
            } else {
                const char *tok = sc->s + sc->pos;
                size_t tn = take_token(sc);
                if (tn == 0)
                    return false;
                for (size_t i = 0; i < tn; i++)
                    value_push(&v, (unsigned char)tok[i]);
            }
        }
        if (o->is_pmd)
            apply_param(o, pname, pn, &v);
    }
}

/* After a syntax error, resume at the next ',' outside a quoted string. */
static void skip_element(scan *sc)
{
    bool in_quotes = false;
    while (sc->pos < sc->len) {
        char c = sc->s[sc->pos];
        if (in_quotes && c == '\\') {
            sc->pos += sc->pos + 1 < sc->len ? 2 : 1;
            continue;
        }
        if (c == '"')
            in_quotes = !in_quotes;
        else if (c == ',' && !in_quotes)
            return;
        sc->pos++;
    }
}

/* Find the first valid permessage-deflate offer.  RFC 7230 §7: a list may
 * contain empty elements, which are ignored. */
static bool find_offer(const char *value, size_t len, offer *out)
{
    scan sc = {value, len, 0};
    while (sc.pos < sc.len) {
        skip_ows(&sc);
        if (sc.pos == sc.len)
            break;
        if (at(&sc, ',')) {
            sc.pos++;
            continue;
        }
        offer o = {false, true, false, false, false, false, 0, 0};
        if (!parse_extension(&sc, &o)) {
            skip_element(&sc);
            continue;
        }
        if (o.is_pmd && o.is_valid) {
            *out = o;
            return true;
        }
    }
    return false;
}

/* Append a string to the response if it fits with its NUL. */
static bool put(char *resp, size_t cap, size_t *pos, const char *s)
{
    size_t n = strlen(s);
    if (n >= cap - *pos)
        return false;
    memcpy(resp + *pos, s, n + 1);
    *pos += n;
    return true;
}

static bool put_bits(char *resp, size_t cap, size_t *pos, const char *name, uint8_t bits)
{
    char num[3] = {0};
    if (bits >= 10) {
        num[0] = '1';
        num[1] = (char)('0' + bits - 10);
    } else {
        num[0] = (char)('0' + bits);
    }
    size_t saved = *pos;
    if (put(resp, cap, pos, name) && put(resp, cap, pos, num))
        return true;
    *pos = saved;
    resp[saved] = '\0';
    return false;
}

int cd_pmd_negotiate(const char *value, size_t len, const cd_pmd_config *cfg,
                     cd_pmd_params *out, char *resp, size_t resp_cap)
{
    cd_pmd_params p = {false, false, 15, 15};
    offer o;
    size_t pos = 0;

    if (out != NULL)
        *out = p;
    if (resp != NULL && resp_cap > 0)
        resp[0] = '\0';
    if (cfg == NULL || !cfg->enabled || value == NULL || out == NULL || resp == NULL ||
        resp_cap == 0)
        return 0;
    if (!find_offer(value, len, &o))
        return 0;

    uint8_t cap = cfg->max_window_bits;
    if (cap < 8 || cap > 15)
        cap = 15;
    p.server_no_context_takeover = o.server_nct;
    p.client_no_context_takeover = o.client_nct;
    /* RFC 7692 §7.1.2.1: answer with the offered value or a smaller one; a
     * server may also limit itself when the offer did not ask. */
    bool send_server_bits = o.has_server_bits || cap < 15;
    if (o.has_server_bits)
        p.server_max_window_bits = CD_MIN(o.server_bits, cap);
    else
        p.server_max_window_bits = cap;

    if (!put(resp, resp_cap, &pos, PMD_NAME) ||
        (o.server_nct && !put(resp, resp_cap, &pos, "; server_no_context_takeover")) ||
        (o.client_nct && !put(resp, resp_cap, &pos, "; client_no_context_takeover")) ||
        (send_server_bits && !put_bits(resp, resp_cap, &pos, "; server_max_window_bits=",
                                       p.server_max_window_bits))) {
        resp[0] = '\0';
        *out = (cd_pmd_params){false, false, 15, 15};
        return 0;
    }
    /* RFC 7692 §7.1.2.2: the response may carry client_max_window_bits only
     * if the offer did; echoing the client's value lets us inflate with the
     * smaller window.  It is optional, so it is the part dropped when
     * resp_cap is short. */
    if (o.has_client_bits && o.client_bits != 0 &&
        put_bits(resp, resp_cap, &pos, "; client_max_window_bits=", o.client_bits))
        p.client_max_window_bits = o.client_bits;
    *out = p;
    return 1;
}

/* ---------------------------------------------------------------------
 * Streams
 * ------------------------------------------------------------------- */

enum {
    INF_BODY = 0,                    /* inside a message, or between messages */
    INF_ENDED,                       /* the message's DEFLATE stream hit BFINAL */
};

struct cd_pmd {
    z_stream *inf;                   /* NULL until needed, see the header */
    z_stream *def;
    size_t min_compress_bytes;
    cd_pmd_params params;
    int fail_rc;                     /* first inflate error; sticky */
    uint8_t mem_level;
    uint8_t inf_bits;
    uint8_t inf_state;
    bool has_msg_input;              /* the current message fed compressed bytes */
    bool has_end_pad;                /* the one 0x00 allowed after BFINAL was seen */
};

static const uint8_t sync_tail[4] = {0x00, 0x00, 0xff, 0xff};

static uint8_t clamp_bits(uint8_t bits)
{
    return bits < 8 ? 8 : bits > 15 ? 15 : bits;
}

cd_pmd *cd_pmd_create(const cd_pmd_params *params, const cd_pmd_config *cfg)
{
    if (params == NULL)
        return NULL;
    cd_pmd *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    d->params = *params;
    d->params.server_max_window_bits = clamp_bits(params->server_max_window_bits);
    d->params.client_max_window_bits = clamp_bits(params->client_max_window_bits);
    d->mem_level = 8;
    if (cfg != NULL) {
        d->min_compress_bytes = cfg->min_compress_bytes;
        if (cfg->mem_level >= 1 && cfg->mem_level <= 9)
            d->mem_level = cfg->mem_level;
    }
    /* A larger window decodes anything a smaller one produced.  Old zlib
     * (before 1.2.9) silently deflated with 9 bits when asked for 8, so a
     * client that promised 8 may still reach 512 bytes back. */
    d->inf_bits = CD_MAX(d->params.client_max_window_bits, 9);
    return d;
}

static void inflate_release(cd_pmd *d)
{
    if (d->inf == NULL)
        return;
    (void)inflateEnd(d->inf);        /* only fails on a stream never initialised */
    free(d->inf);
    d->inf = NULL;
}

static void deflate_release(cd_pmd *d)
{
    if (d->def == NULL)
        return;
    /* Z_DATA_ERROR here only reports that a message was cut short, which
     * is why we are dropping the stream. */
    (void)deflateEnd(d->def);
    free(d->def);
    d->def = NULL;
}

void cd_pmd_destroy(cd_pmd *d)
{
    if (d == NULL)
        return;
    inflate_release(d);
    deflate_release(d);
    free(d);
}

static int zlib_err(int zr)
{
    return zr == Z_MEM_ERROR ? CONDUIT_ENOMEM : CONDUIT_EIO;
}

static int inflate_open(cd_pmd *d)
{
    z_stream *zs = calloc(1, sizeof(*zs));
    if (zs == NULL)
        return CONDUIT_ENOMEM;
    zs->zalloc = Z_NULL;
    zs->zfree = Z_NULL;
    zs->opaque = Z_NULL;
    int zr = inflateInit2(zs, -(int)d->inf_bits);
    if (zr != Z_OK) {
        free(zs);
        return zlib_err(zr);
    }
    d->inf = zs;
    return 0;
}

/* Give `out` more capacity without letting it pass `limit` bytes, so a
 * decompression bomb never costs more memory than the message cap.  This
 * reallocates the buffer itself because cd_bytes_reserve rounds capacity up
 * to a power of two.  Precondition: out->cap < limit. */
static int grow_capped(cd_bytes *out, size_t limit)
{
    size_t want = out->cap < 4096 ? 4096 : out->cap;
    want = want > SIZE_MAX - out->cap ? SIZE_MAX : out->cap + want;
    if (want > limit)
        want = limit;
    uint8_t *p = realloc(out->data, want);
    if (p == NULL)
        return CONDUIT_ENOMEM;
    out->data = p;
    out->cap = want;
    return 0;
}

/* After BFINAL (RFC 7692 §7.2.3.4) the sender may add one 0x00 octet so
 * that the appended tail forms an empty stored block; anything else after
 * the end of the DEFLATE stream is data we could not decode. */
static int check_end_pad(cd_pmd *d, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (d->has_end_pad || p[i] != 0x00)
            return CONDUIT_EPROTO;
        d->has_end_pad = true;
    }
    return 0;
}

/* Inflate [in, in+len) into out, honouring max_out.  Stops early at the end
 * of a DEFLATE stream (BFINAL) and checks what follows it. */
static int inflate_run(cd_pmd *d, const uint8_t *in, size_t len, cd_bytes *out,
                       size_t max_out)
{
    z_stream *zs = d->inf;
    uint8_t probe;

    zs->next_in = in;
    zs->avail_in = (uInt)CD_MIN(len, (size_t)UINT_MAX);
    in += zs->avail_in;
    len -= zs->avail_in;
    for (;;) {
        size_t room = out->len < max_out ? max_out - out->len : 0;
        if (room > 0 && out->cap == out->len) {
            int rc = grow_capped(out, max_out);
            if (rc != 0)
                return rc;
        }
        /* At the cap, a one-byte probe tells "done" from "more output". */
        if (room > 0) {
            zs->next_out = out->data + out->len;
            zs->avail_out = (uInt)CD_MIN(CD_MIN(room, out->cap - out->len), (size_t)UINT_MAX);
        } else {
            zs->next_out = &probe;
            zs->avail_out = 1;
        }
        uInt avail = zs->avail_out;
        int zr = inflate(zs, Z_SYNC_FLUSH);
        size_t made = avail - zs->avail_out;
        if (made > 0 && room == 0)
            return CONDUIT_ELIMIT;
        out->len += made;
        if (zr == Z_STREAM_END) {
            d->inf_state = INF_ENDED;
            int rc = check_end_pad(d, zs->next_in, zs->avail_in);
            return rc != 0 ? rc : check_end_pad(d, in, len);
        }
        if (zr == Z_DATA_ERROR || zr == Z_NEED_DICT)
            return CONDUIT_EPROTO;
        if (zr != Z_OK && zr != Z_BUF_ERROR)
            return zlib_err(zr);
        if (zs->avail_in == 0 && len > 0) {
            zs->next_in = in;
            zs->avail_in = (uInt)CD_MIN(len, (size_t)UINT_MAX);
            in += zs->avail_in;
            len -= zs->avail_in;
            continue;
        }
        /* Input used up with output space left over: nothing is pending. */
        if (zs->avail_in == 0 && zs->avail_out > 0)
            return 0;
    }
}

/* Start a new DEFLATE stream after BFINAL while keeping the LZ77 window,
 * which RFC 7692 §7.2.2 says the next message may still refer to. */
static int inflate_restart(cd_pmd *d)
{
    uInt n = 0;
    uint8_t *win = malloc((size_t)1 << d->inf_bits);
    if (win == NULL)
        return CONDUIT_ENOMEM;
    int zr = inflateGetDictionary(d->inf, win, &n);
    if (zr == Z_OK)
        zr = inflateReset(d->inf);
    if (zr == Z_OK && n > 0)
        zr = inflateSetDictionary(d->inf, win, n);
    free(win);
    return zr == Z_OK ? 0 : zlib_err(zr);
}

/* The last frame of a message has been inflated: close the message. */
static int inflate_finish(cd_pmd *d, cd_bytes *out, size_t max_out)
{
    int rc = 0;

    if (d->inf_state == INF_BODY) {
        /* RFC 7692 §7.2.2: append 00 00 ff ff, then decompress. */
        rc = inflate_run(d, sync_tail, sizeof(sync_tail), out, max_out);
        if (rc != 0)
            return rc;
    }
    if (d->inf_state == INF_BODY) {
        /* The sender ended its message with a flush (RFC 7692 §7.2.1), so
         * with the tail the data must stop on a block boundary; anything
         * else is a truncated message that would poison the next one. */
        if ((d->inf->data_type & 128) == 0)
            return CONDUIT_EPROTO;
    } else if (!d->params.client_no_context_takeover) {
        rc = inflate_restart(d);
        if (rc != 0)
            return rc;
    }
    /* RFC 7692 §7.2.2: without context takeover the next message starts
     * with an empty window, so the stream need not outlive this message. */
    if (d->params.client_no_context_takeover)
        inflate_release(d);
    d->inf_state = INF_BODY;
    d->has_msg_input = false;
    d->has_end_pad = false;
    return 0;
}

static int inflate_chunk(cd_pmd *d, const uint8_t *in, size_t len, bool is_final,
                         cd_bytes *out, size_t max_out)
{
    if (len > 0) {
        d->has_msg_input = true;
        if (d->inf == NULL) {
            int rc = inflate_open(d);
            if (rc != 0)
                return rc;
        }
        int rc = d->inf_state == INF_ENDED ? check_end_pad(d, in, len)
                                            : inflate_run(d, in, len, out, max_out);
        if (rc != 0)
            return rc;
    }
    if (!is_final)
        return 0;
    /* A message with an empty payload leaves both windows untouched: it is
     * what a zlib sender produces when it sync-flushes twice with no input
     * in between, so it must not feed the tail into the stream. */
    if (!d->has_msg_input)
        return 0;
    return inflate_finish(d, out, max_out);
}

int cd_pmd_inflate(cd_pmd *d, const uint8_t *in, size_t len, bool is_final,
                   cd_bytes *out, size_t max_out)
{
    if (d->fail_rc != 0)
        return d->fail_rc;
    int rc = inflate_chunk(d, in, len, is_final, out, max_out);
    if (rc != 0) {
        /* The windows no longer agree, so no later message can be trusted. */
        d->fail_rc = rc;
        inflate_release(d);
    }
    return rc;
}

static int deflate_open(cd_pmd *d)
{
    z_stream *zs = calloc(1, sizeof(*zs));
    if (zs == NULL)
        return CONDUIT_ENOMEM;
    zs->zalloc = Z_NULL;
    zs->zfree = Z_NULL;
    zs->opaque = Z_NULL;
    /* zlib cannot deflate with a raw 8-bit window (it would use 9 and break
     * the peer).  Level 0 emits stored blocks only, which never refer back,
     * so the output is valid for any window the peer accepted. */
    int bits = d->params.server_max_window_bits;
    int level = bits == 8 ? 0 : Z_DEFAULT_COMPRESSION;
    int zr = deflateInit2(zs, level, Z_DEFLATED, -CD_MAX(bits, 9), d->mem_level,
                          Z_DEFAULT_STRATEGY);
    if (zr != Z_OK) {
        free(zs);
        return zlib_err(zr);
    }
    d->def = zs;
    return 0;
}

/* Deflate with Z_SYNC_FLUSH into out, which ends with 00 00 ff ff. */
static int deflate_run(z_stream *zs, const uint8_t *in, size_t len, cd_bytes *out)
{
    size_t start = out->len;
    int flush = Z_NO_FLUSH;

    zs->next_in = in;
    zs->avail_in = 0;
    for (;;) {
        if (zs->avail_in == 0 && flush == Z_NO_FLUSH) {
            zs->next_in = in;
            zs->avail_in = (uInt)CD_MIN(len, (size_t)UINT_MAX);
            in += zs->avail_in;
            len -= zs->avail_in;
            if (len == 0)
                flush = Z_SYNC_FLUSH;
        }
        if (out->cap - out->len < 64) {
            /* Grow by what has been produced so far: amortised doubling. */
            int rc = cd_bytes_reserve(out, CD_MAX(out->len - start, (size_t)1024));
            if (rc != 0)
                return rc;
        }
        zs->next_out = out->data + out->len;
        zs->avail_out = (uInt)CD_MIN(out->cap - out->len, (size_t)UINT_MAX);
        uInt avail = zs->avail_out;
        int zr = deflate(zs, flush);
        out->len += avail - zs->avail_out;
        if (zr != Z_OK && zr != Z_BUF_ERROR)
            return zlib_err(zr);
        /* zlib: the flush is complete once a call leaves output space. */
        if (flush == Z_SYNC_FLUSH && zs->avail_in == 0 && zs->avail_out > 0)
            break;
    }
    if (out->len - start < sizeof(sync_tail) ||
        memcmp(out->data + out->len - sizeof(sync_tail), sync_tail, sizeof(sync_tail)) != 0)
        return CONDUIT_EIO;
    return 0;
}

int cd_pmd_deflate(cd_pmd *d, const uint8_t *in, size_t len, cd_bytes *out)
{
    size_t start = out->len;
    int rc;

    /* RFC 7692 §7.2.3.6: a lone 00 octet (an empty stored block without
     * LEN/NLEN) is an empty message.  zlib would emit nothing for a second
     * empty sync flush, so it is written here, leaving the stream alone. */
    if (len == 0)
        return cd_bytes_append(out, sync_tail, 1);
    if (d->def == NULL && (rc = deflate_open(d)) != 0)
        return rc;
    if ((rc = deflate_run(d->def, in, len, out)) != 0)
        goto fail;
    /* RFC 7692 §7.2.1: remove the 4 octets 00 00 ff ff of the flush. */
    out->len -= sizeof(sync_tail);
    /* RFC 7692 §7.1.1.1: with server_no_context_takeover each message
     * starts from an empty window; releasing is that and frees memory. */
    if (d->params.server_no_context_takeover)
        deflate_release(d);
    return 0;

fail:
    /* Our window now holds bytes the peer never saw; a new stream is
     * always decodable by the peer, whatever its window holds. */
    out->len = start;
    deflate_release(d);
    return rc;
}

bool cd_pmd_should_compress(const cd_pmd *d, size_t len)
{
    /* RFC 7692 §6: a message may always be sent uncompressed (RSV1 = 0). */
    return d != NULL && len >= d->min_compress_bytes && d->params.server_max_window_bits > 8;
}

size_t cd_pmd_memory_bytes(const cd_pmd *d)
{
    size_t n = 0;
    if (d == NULL)
        return 0;
    if (d->inf != NULL)
        n += sizeof(z_stream) + INFLATE_STATE_BYTES + ((size_t)1 << d->inf_bits);
    if (d->def != NULL) {
        int bits = CD_MAX(d->params.server_max_window_bits, 9);
        n += sizeof(z_stream) + DEFLATE_STATE_BYTES + ((size_t)1 << (bits + 2)) +
             ((size_t)1 << (d->mem_level + 9));
    }
    return n;
}
