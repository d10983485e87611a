/* ws.c - RFC 6455 frame codec: incremental parser and frame writers.
 *
 * The parser is a byte-driven state machine (header, data payload, control
 * payload, failed).  It owns two buffers and holds them only while needed:
 * `msg` while a message is partial or was just delivered from it, and `ctl`
 * while a control frame is partial or was just delivered from it; both are
 * freed on the next call or by cd_ws_parser_trim.  Invariants: every limit
 * is checked from the header before a payload byte is kept; msg_len never
 * exceeds limits->max_message_bytes; once `fail` is set the state is
 * ST_FAILED, both buffers are freed and nothing more is yielded.  The codec
 * does no I/O and never reads the clock. */
#include "ws.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "conduit.h"
#include "deflate.h"

enum {
    ST_HEADER,
    ST_DATA,          /* payload of a TEXT/BINARY/CONT frame */
    ST_CONTROL,       /* payload of a control frame, copied into ctl */
    ST_FAILED,
};

enum {
    FL_FIN = 1 << 0,          /* current frame has FIN */
    FL_RSV1 = 1 << 1,         /* current frame has RSV1 */
    FL_COMPRESSED = 1 << 2,   /* open message is compressed (RFC 7692 §6) */
    FL_CLIENT = 1 << 3,       /* we are the client: frames come unmasked */
    FL_DELIVERED = 1 << 4,    /* msg holds a message already handed out */
};

/* Why a parser failed; indexes fail_table. */
enum {
    FAIL_NONE,
    FAIL_RSV,
    FAIL_RSV1,
    FAIL_OPCODE,
    FAIL_CTL_FRAGMENTED,
    FAIL_CTL_TOO_LONG,
    FAIL_NO_MESSAGE,
    FAIL_MESSAGE_OPEN,
    FAIL_UNMASKED,
    FAIL_MASKED,
    FAIL_LEN64,
    FAIL_CLOSE_LEN,
    FAIL_CLOSE_CODE,
    FAIL_CLOSE_UTF8,
    FAIL_UTF8,
    FAIL_INFLATE,
    FAIL_TOO_BIG,
    FAIL_FRAGMENTS,
    FAIL_NOMEM,
    FAIL_INTERNAL,
};

static const struct {
    uint16_t code;
    const char *reason;
} fail_table[] = {
    [FAIL_NONE] = {0, ""},
    [FAIL_RSV] = {CD_WS_CLOSE_PROTOCOL, "reserved bit set"},
    [FAIL_RSV1] = {CD_WS_CLOSE_PROTOCOL, "unexpected RSV1"},
    [FAIL_OPCODE] = {CD_WS_CLOSE_PROTOCOL, "reserved opcode"},
    [FAIL_CTL_FRAGMENTED] = {CD_WS_CLOSE_PROTOCOL, "fragmented control frame"},
    [FAIL_CTL_TOO_LONG] = {CD_WS_CLOSE_PROTOCOL, "control frame too long"},
    [FAIL_NO_MESSAGE] = {CD_WS_CLOSE_PROTOCOL, "continuation without a message"},
    [FAIL_MESSAGE_OPEN] = {CD_WS_CLOSE_PROTOCOL, "new message before the last ended"},
    [FAIL_UNMASKED] = {CD_WS_CLOSE_PROTOCOL, "unmasked client frame"},
    [FAIL_MASKED] = {CD_WS_CLOSE_PROTOCOL, "masked server frame"},
    [FAIL_LEN64] = {CD_WS_CLOSE_PROTOCOL, "frame length over 2^63"},
    [FAIL_CLOSE_LEN] = {CD_WS_CLOSE_PROTOCOL, "close payload of one byte"},
    [FAIL_CLOSE_CODE] = {CD_WS_CLOSE_PROTOCOL, "invalid close code"},
    [FAIL_CLOSE_UTF8] = {CD_WS_CLOSE_INVALID_DATA, "close reason is not UTF-8"},
    [FAIL_UTF8] = {CD_WS_CLOSE_INVALID_DATA, "text is not UTF-8"},
    [FAIL_INFLATE] = {CD_WS_CLOSE_INVALID_DATA, "corrupt compressed data"},
    [FAIL_TOO_BIG] = {CD_WS_CLOSE_TOO_BIG, "message too big"},
    [FAIL_FRAGMENTS] = {CD_WS_CLOSE_TOO_BIG, "too many fragments"},
    [FAIL_NOMEM] = {CD_WS_CLOSE_INTERNAL, "out of memory"},
    [FAIL_INTERNAL] = {CD_WS_CLOSE_INTERNAL, "decompression failed"},
};

/* Event data for empty payloads, so ev->data is never NULL. */
static const uint8_t empty_payload[1];

static void init_common(cd_ws_parser *p, const cd_ws_limits *limits,
                        struct cd_pmd *pmd, uint8_t flags)
{
    memset(p, 0, sizeof(*p));
    p->limits = limits;
    p->pmd = pmd;
    p->flags = flags;
    p->hdr_need = 2;
    p->state = ST_HEADER;
}

void cd_ws_parser_init(cd_ws_parser *p, const cd_ws_limits *limits,
                       struct cd_pmd *pmd)
{
    init_common(p, limits, pmd, 0);
}

void cd_ws_parser_init_client(cd_ws_parser *p, const cd_ws_limits *limits,
                              struct cd_pmd *pmd)
{
    init_common(p, limits, pmd, FL_CLIENT);
}

static void free_ctl(cd_ws_parser *p)
{
    free(p->ctl);
    p->ctl = NULL;
}

void cd_ws_parser_fini(cd_ws_parser *p)
{
    cd_bytes_free(&p->msg);
    free_ctl(p);
    p->flags &= (uint8_t)~FL_DELIVERED;
}

void cd_ws_parser_trim(cd_ws_parser *p)
{
    if (p->flags & FL_DELIVERED) {
        cd_bytes_free(&p->msg);
        p->flags &= (uint8_t)~FL_DELIVERED;
    }
    if (p->ctl != NULL && p->state != ST_CONTROL)
        free_ctl(p);
}

bool cd_ws_parser_is_idle(const cd_ws_parser *p)
{
    if (p->msg.data != NULL || p->ctl != NULL)
        return false;
    if (p->state == ST_FAILED)
        return true;
    return p->state == ST_HEADER && p->hdr_pos == 0 && p->msg_op == 0;
}

uint16_t cd_ws_fail_code(const cd_ws_parser *p)
{
    return fail_table[p->fail].code;
}

const char *cd_ws_fail_reason(const cd_ws_parser *p)
{
    return fail_table[p->fail].reason;
}

static int fail(cd_ws_parser *p, uint8_t why)
{
    p->state = ST_FAILED;
    p->fail = why;
    cd_ws_parser_fini(p);
    return CD_WS_FAIL;
}

static bool is_control(uint8_t op)
{
    return op >= CD_WS_OP_CLOSE;
}

static bool is_client(const cd_ws_parser *p)
{
    return (p->flags & FL_CLIENT) != 0;
}

static void end_message(cd_ws_parser *p)
{
    p->msg_op = 0;
    p->msg_len = 0;
    p->n_fragments = 0;
    p->flags &= (uint8_t)~FL_COMPRESSED;
}

/* First header byte: everything about the opcode and reserved bits is
 * decided here, before the length arrives. */
static uint8_t header_byte0(cd_ws_parser *p, uint8_t b)
{
    uint8_t op = b & 0x0F;
    bool fin = (b & 0x80) != 0;
    bool rsv1 = (b & 0x40) != 0;

    /* RFC 6455 §5.2: RSV2 and RSV3 MUST be 0; no extension we negotiate
     * defines them. */
    if (b & 0x30)
        return FAIL_RSV;
    if (is_control(op)) {
        /* RFC 6455 §5.2: opcodes 0xB-0xF are reserved. */
        if (op > CD_WS_OP_PONG)
            return FAIL_OPCODE;
        /* RFC 6455 §5.5: control frames MUST NOT be fragmented. */
        if (!fin)
            return FAIL_CTL_FRAGMENTED;
        /* RFC 7692 §6: RSV1 is set only on the first frame of a data message. */
        if (rsv1)
            return FAIL_RSV1;
    } else if (op == CD_WS_OP_CONT) {
        /* RFC 6455 §5.4: a continuation needs an open fragmented message. */
        if (p->msg_op == 0)
            return FAIL_NO_MESSAGE;
        /* RFC 7692 §6.1: RSV1 is never set on a continuation frame. */
        if (rsv1)
            return FAIL_RSV1;
    } else {
        /* RFC 6455 §5.2: opcodes 0x3-0x7 are reserved. */
        if (op > CD_WS_OP_BINARY)
            return FAIL_OPCODE;
        /* RFC 6455 §5.4: fragments of different messages MUST NOT interleave. */
        if (p->msg_op != 0)
            return FAIL_MESSAGE_OPEN;
        /* RFC 6455 §5.2: RSV1 needs a negotiated extension (RFC 7692). */
        if (rsv1 && p->pmd == NULL)
            return FAIL_RSV1;
    }
    p->frame_op = op;
    p->flags &= (uint8_t)~(FL_FIN | FL_RSV1);
    p->flags |= (fin ? FL_FIN : 0) | (rsv1 ? FL_RSV1 : 0);
    return FAIL_NONE;
}

static uint8_t header_byte1(cd_ws_parser *p, uint8_t b)
{
    bool masked = (b & 0x80) != 0;
    uint8_t len7 = b & 0x7F;
    uint8_t ext = len7 == 127 ? 8 : len7 == 126 ? 2 : 0;

    /* RFC 6455 §5.1: a server MUST fail an unmasked client frame, and a
     * client MUST fail a masked server frame. */
    if (is_client(p) && masked)
        return FAIL_MASKED;
    if (!is_client(p) && !masked)
        return FAIL_UNMASKED;
    /* RFC 6455 §5.5: control frames MUST have a payload of at most 125. */
    if (is_control(p->frame_op) && len7 > CD_WS_MAX_CONTROL)
        return FAIL_CTL_TOO_LONG;
    p->remain = ext ? 0 : len7;
    p->mask = 0;
    p->hdr_need = (uint8_t)(2 + ext + (masked ? 4 : 0));
    return FAIL_NONE;
}

/* The payload length is known: check it against the limits before any of
 * the payload is read. */
static uint8_t length_known(cd_ws_parser *p)
{
    const cd_ws_limits *lim = p->limits;

    if (is_control(p->frame_op)) {
        /* RFC 6455 §5.5.1: a close body starts with a two-byte code. */
        if (p->frame_op == CD_WS_OP_CLOSE && p->remain == 1)
            return FAIL_CLOSE_LEN;
        return FAIL_NONE;
    }
    /* A compressed message may be larger on the wire than the message it
     * carries: incompressible data goes out in stored blocks, and a sender
     * with a small memLevel makes many small ones.  Allow zlib's bound for
     * any settings (deflateBound: n + n/8 + n/64 + 5, plus the flush tail).
     * Compressed bytes are inflated as they arrive, never kept, and the
     * inflated size is capped exactly by the inflater. */
    uint64_t cap = lim->max_message_bytes;
    if (p->flags & (FL_RSV1 | FL_COMPRESSED))
        cap += ((cap + 7) >> 3) + ((cap + 63) >> 6) + 16;
    /* msg_len <= cap holds, so the subtraction cannot wrap. */
    if (p->remain > cap - p->msg_len)
        return FAIL_TOO_BIG;
    if (lim->max_fragments != 0 && p->n_fragments >= lim->max_fragments)
        return FAIL_FRAGMENTS;
    p->n_fragments++;
    return FAIL_NONE;
}

static uint8_t header_byte(cd_ws_parser *p, uint8_t b)
{
    uint8_t pos = p->hdr_pos++;
    uint8_t ext;
    uint8_t why;

    if (pos == 0)
        return header_byte0(p, b);
    if (pos == 1) {
        why = header_byte1(p, b);
        /* A 7-bit length is the whole length: check it now. */
        if (why == FAIL_NONE && (b & 0x7F) < 126)
            why = length_known(p);
        return why;
    }
    ext = (uint8_t)(p->hdr_need - 2 - (is_client(p) ? 0 : 4));
    if (pos < 2 + ext) {
        /* RFC 6455 §5.2: the most significant bit of a 64-bit length MUST
         * be 0. */
        if (ext == 8 && pos == 2 && (b & 0x80))
            return FAIL_LEN64;
        p->remain = (p->remain << 8) | b;
        return pos + 1 == 2 + ext ? length_known(p) : FAIL_NONE;
    }
    ((uint8_t *)&p->mask)[pos - 2 - ext] = b;
    return FAIL_NONE;
}

static void set_data(cd_ws_event *ev, const uint8_t *data, size_t len)
{
    ev->data = len ? data : empty_payload;
    ev->len = len;
}

/* A whole control payload (already unmasked) becomes an event. */
static uint8_t control_event(cd_ws_parser *p, const uint8_t *pl, size_t len,
                             cd_ws_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->opcode = p->frame_op;
    if (p->frame_op == CD_WS_OP_PING) {
        ev->type = CD_WS_EV_PING;
        set_data(ev, pl, len);
        return FAIL_NONE;
    }
    if (p->frame_op == CD_WS_OP_PONG) {
        ev->type = CD_WS_EV_PONG;
        set_data(ev, pl, len);
        return FAIL_NONE;
    }
    ev->type = CD_WS_EV_CLOSE;
    if (len == 0) {
        /* RFC 6455 §7.1.5: no code in the frame reads as 1005. */
        ev->close_code = CD_WS_CLOSE_NO_STATUS;
        set_data(ev, pl, 0);
        return FAIL_NONE;
    }
    ev->close_code = (uint16_t)(pl[0] << 8 | pl[1]);
    /* RFC 6455 §7.4.1, §7.4.2: codes that must not appear on the wire. */
    if (!cd_ws_close_code_is_valid(ev->close_code))
        return FAIL_CLOSE_CODE;
    /* RFC 6455 §5.5.1: the reason is UTF-8; §8.1 says fail on bad data. */
    if (!cd_utf8_valid(pl + 2, len - 2))
        return FAIL_CLOSE_UTF8;
    set_data(ev, pl + 2, len - 2);
    return FAIL_NONE;
}

static void unmask(cd_ws_parser *p, uint8_t *data, size_t n)
{
    if (is_client(p))
        return;
    cd_ws_mask(data, n, p->mask, p->mask_off);
    p->mask_off = (uint8_t)((p->mask_off + n) & 3);
}

/* Validate and keep one chunk of an uncompressed fragment. */
static uint8_t take_plain(cd_ws_parser *p, const uint8_t *chunk, size_t n)
{
    /* RFC 6455 §8.1: fail as soon as the text cannot be UTF-8, even in the
     * middle of a frame. */
    if (p->msg_op == CD_WS_OP_TEXT && !cd_utf8_feed(&p->utf8, chunk, n))
        return FAIL_UTF8;
    if (cd_bytes_append(&p->msg, chunk, n) != 0)
        return FAIL_NOMEM;
    return FAIL_NONE;
}

/* Inflate one chunk of a compressed fragment into msg. */
static uint8_t take_compressed(cd_ws_parser *p, const uint8_t *chunk,
                               size_t n, bool is_final)
{
    uint64_t max = p->limits->max_message_bytes;
    size_t max_out = max > SIZE_MAX ? SIZE_MAX : (size_t)max;
    size_t before = p->msg.len;
    int rc;

    if (n == 0 && !is_final)
        return FAIL_NONE;
    rc = cd_pmd_inflate(p->pmd, chunk, n, is_final, &p->msg, max_out);
    if (rc == CONDUIT_ELIMIT)
        return FAIL_TOO_BIG;
    if (rc == CONDUIT_ENOMEM)
        return FAIL_NOMEM;
    if (rc == CONDUIT_EPROTO)
        return FAIL_INFLATE;
    /* Anything else is zlib failing us, not the peer sending bad data. */
    if (rc != 0)
        return FAIL_INTERNAL;
    /* RFC 7692 §6.2 with RFC 6455 §8.1: validate the inflated text as it
     * appears, so a bad byte fails before the rest arrives. */
    if (p->msg_op == CD_WS_OP_TEXT &&
        !cd_utf8_feed(&p->utf8, p->msg.data + before, p->msg.len - before))
        return FAIL_UTF8;
    return FAIL_NONE;
}

static uint8_t deliver_message(cd_ws_parser *p, cd_ws_event *ev)
{
    /* RFC 6455 §8.1: the whole message must end on a character boundary. */
    if (p->msg_op == CD_WS_OP_TEXT && !cd_utf8_is_complete(&p->utf8))
        return FAIL_UTF8;
    memset(ev, 0, sizeof(*ev));
    ev->type = CD_WS_EV_MESSAGE;
    ev->opcode = p->msg_op;
    set_data(ev, p->msg.data, p->msg.len);
    p->flags |= FL_DELIVERED;
    end_message(p);
    return FAIL_NONE;
}

/* The header is complete and `avail` bytes follow it in the caller's
 * buffer.  Takes the zero-copy path when the whole payload is there, else
 * sets up the payload state.  Returns an event, NEED_MORE or FAIL; *used
 * says how many payload bytes were taken. */
static int frame_begin(cd_ws_parser *p, uint8_t *data, size_t avail,
                       size_t *used, cd_ws_event *ev)
{
    uint8_t op = p->frame_op;
    uint8_t why;

    *used = 0;
    p->mask_off = 0;
    if (is_control(op)) {
        if (p->remain <= avail) {
            size_t n = (size_t)p->remain;
            unmask(p, data, n);
            *used = n;
            why = control_event(p, data, n, ev);
            return why ? fail(p, why) : CD_WS_EVENT;
        }
        /* Only control frames that straddle reads are copied. */
        if (p->ctl == NULL && (p->ctl = malloc(CD_WS_MAX_CONTROL)) == NULL)
            return fail(p, FAIL_NOMEM);
        p->ctl_len = (uint8_t)p->remain;
        p->state = ST_CONTROL;
        return CD_WS_NEED_MORE;
    }
    if (op != CD_WS_OP_CONT) {
        p->msg_op = op;
        cd_utf8_init(&p->utf8);
        if (p->flags & FL_RSV1)
            p->flags |= FL_COMPRESSED;
        if ((p->flags & (FL_FIN | FL_RSV1)) == FL_FIN && p->remain <= avail) {
            size_t n = (size_t)p->remain;
            unmask(p, data, n);
            *used = n;
            if (op == CD_WS_OP_TEXT && !cd_utf8_valid(data, n))
                return fail(p, FAIL_UTF8);
            memset(ev, 0, sizeof(*ev));
            ev->type = CD_WS_EV_MESSAGE;
            ev->opcode = op;
            set_data(ev, data, n);
            end_message(p);
            return CD_WS_EVENT;
        }
    }
    p->state = ST_DATA;
    return CD_WS_NEED_MORE;
}

/* Consume payload of a data frame from the caller's buffer. */
static int data_payload(cd_ws_parser *p, uint8_t *data, size_t avail,
                        size_t *used, cd_ws_event *ev)
{
    size_t n = (size_t)CD_MIN((uint64_t)avail, p->remain);
    bool fin = (p->flags & FL_FIN) != 0;
    bool last;
    uint8_t why;

    unmask(p, data, n);
    *used = n;
    p->remain -= n;
    p->msg_len += n;
    last = p->remain == 0;
    if (p->flags & FL_COMPRESSED)
        why = take_compressed(p, data, n, last && fin);
    else
        why = take_plain(p, data, n);
    if (why)
        return fail(p, why);
    if (!last)
        return CD_WS_NEED_MORE;
    p->state = ST_HEADER;
    if (!fin)
        return CD_WS_NEED_MORE;
    why = deliver_message(p, ev);
    return why ? fail(p, why) : CD_WS_EVENT;
}

/* Copy payload of a control frame that straddles reads into ctl. */
static int control_payload(cd_ws_parser *p, uint8_t *data, size_t avail,
                           size_t *used, cd_ws_event *ev)
{
    size_t n = (size_t)CD_MIN((uint64_t)avail, p->remain);
    size_t at = p->ctl_len - (size_t)p->remain;
    uint8_t why;

    unmask(p, data, n);
    memcpy(p->ctl + at, data, n);
    *used = n;
    p->remain -= n;
    if (p->remain != 0)
        return CD_WS_NEED_MORE;
    p->state = ST_HEADER;
    why = control_event(p, p->ctl, p->ctl_len, ev);
    return why ? fail(p, why) : CD_WS_EVENT;
}

int cd_ws_parse(cd_ws_parser *p, uint8_t *data, size_t len, size_t *consumed,
                cd_ws_event *ev)
{
    size_t pos = 0;
    size_t used;
    int rc = CD_WS_NEED_MORE;
    uint8_t why;

    *consumed = 0;
    if (p->state == ST_FAILED)
        return CD_WS_FAIL;
    cd_ws_parser_trim(p);
    while (rc == CD_WS_NEED_MORE) {
        switch (p->state) {
        case ST_HEADER:
            if (pos == len)
                goto out;
            why = header_byte(p, data[pos++]);
            if (why) {
                rc = fail(p, why);
                break;
            }
            if (p->hdr_pos < p->hdr_need)
                break;
            p->hdr_pos = 0;
            p->hdr_need = 2;
            rc = frame_begin(p, data + pos, len - pos, &used, ev);
            pos += used;
            break;
        case ST_DATA:
            /* An empty frame still ends here, possibly ending the message. */
            if (pos == len && p->remain != 0)
                goto out;
            rc = data_payload(p, data + pos, len - pos, &used, ev);
            pos += used;
            break;
        case ST_CONTROL:
            if (pos == len)
                goto out;
            rc = control_payload(p, data + pos, len - pos, &used, ev);
            pos += used;
            break;
        default:
            rc = CD_WS_FAIL;
            break;
        }
    }
out:
    *consumed = pos;
    return rc;
}

static size_t header_common(uint8_t *out, uint8_t opcode, bool fin, bool rsv1,
                            uint64_t len, uint8_t mask_bit)
{
    size_t n = 2;

    out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0F));
    /* RFC 6455 §5.2: the shortest of the three length encodings. */
    if (len < 126) {
        out[1] = (uint8_t)(mask_bit | len);
    } else if (len <= 0xFFFF) {
        out[1] = (uint8_t)(mask_bit | 126);
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        n = 4;
    } else {
        out[1] = (uint8_t)(mask_bit | 127);
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        n = 10;
    }
    return n;
}

size_t cd_ws_header_write(uint8_t out[CD_WS_MAX_HEADER], uint8_t opcode,
                          bool fin, bool rsv1, uint64_t payload_len)
{
    return header_common(out, opcode, fin, rsv1, payload_len, 0);
}

size_t cd_ws_header_write_masked(uint8_t out[CD_WS_MAX_HEADER], uint8_t opcode,
                                 bool fin, bool rsv1, uint64_t payload_len,
                                 uint32_t mask)
{
    size_t n = header_common(out, opcode, fin, rsv1, payload_len, 0x80);

    memcpy(out + n, &mask, 4);
    return n + 4;
}

void cd_ws_mask(uint8_t *p, size_t len, uint32_t mask, size_t off)
{
    uint8_t key[4];
    uint8_t rot[8];
    uint64_t key8;
    size_t i = 0;

    memcpy(key, &mask, sizeof(key));
    for (size_t j = 0; j < sizeof(rot); j++)
        rot[j] = key[(off + j) & 3];
    memcpy(&key8, rot, sizeof(key8));
    /* Eight bytes keep the key phase (a multiple of four), so one rotated
     * word serves the whole run; memcpy makes unaligned access safe. */
    for (; len - i >= 32; i += 32) {
        uint64_t w[4];
        memcpy(w, p + i, sizeof(w));
        w[0] ^= key8;
        w[1] ^= key8;
        w[2] ^= key8;
        w[3] ^= key8;
        memcpy(p + i, w, sizeof(w));
    }
    for (; len - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, sizeof(w));
        w ^= key8;
        memcpy(p + i, &w, sizeof(w));
    }
    for (; i < len; i++)
        p[i] ^= rot[i & 3];
}

bool cd_ws_close_code_is_valid(uint16_t code)
{
    /* RFC 6455 §7.4.1: 1004-1006 and 1015 are never sent, 1016-2999 are
     * unassigned, 3000-4999 belong to applications.  1012-1014 were
     * registered later for servers and gateways; a client has no reason to
     * send them, and strict conformance suites (Autobahn 7.9.x in its
     * widely deployed image) expect them to be refused. */
    if (code >= 1000 && code <= 1003)
        return true;
    if (code >= 1007 && code <= 1011)
        return true;
    return code >= 3000 && code <= 4999;
}

size_t cd_ws_close_payload(uint8_t out[CD_WS_MAX_CONTROL], uint16_t code,
                           const char *reason)
{
    size_t n;

    if (code == 0)
        return 0;
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    if (reason == NULL)
        return 2;
    n = strlen(reason);
    if (n > CD_WS_MAX_CONTROL - 2) {
        /* Cut before the character that would straddle the limit. */
        n = CD_WS_MAX_CONTROL - 2;
        while (n > 0 && ((uint8_t)reason[n] & 0xC0) == 0x80)
            n--;
    }
    /* RFC 6455 §5.5.1: the reason MUST be UTF-8, or the peer fails us. */
    if (!cd_utf8_valid((const uint8_t *)reason, n))
        n = 0;
    memcpy(out + 2, reason, n);
    return 2 + n;
}
