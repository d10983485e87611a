/* bench_ws.c - client-side handshake and frame reader for conduit-bench.
 *
 * The reader is a byte-driven state machine over header, data payload and
 * control payload.  Data payload is looked at, never stored: the first 16
 * bytes of a message are kept (timestamps live there in echo mode) and a
 * small scanner finds "ts=" followed by 16 hex digits anywhere in a text
 * message, even split across frames and reads.  We never offer an
 * extension, so any RSV bit is a protocol error. */
#include "bench_ws.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ws.h"

enum {
    ST_HEADER,
    ST_DATA,
    ST_CONTROL,
    ST_FAILED,
};

/* Marker scanner: 0 nothing matched, 1 "t", 2 "ts", 3 "ts=", 3 + k after k
 * hex digits, SCAN_DONE once 16 digits were read (the first marker wins);
 * SCAN_OFF for messages that are not scanned (binary, or scanning off). */
enum {
    SCAN_DIGITS = 3,
    SCAN_DONE = SCAN_DIGITS + CD_BENCH_TS_HEX,
    SCAN_OFF,
};

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void cd_bench_ws_key(const uint8_t nonce[16], char out[CD_BENCH_WS_KEY_LEN + 1])
{
    size_t o = 0;

    for (size_t i = 0; i < 15; i += 3) {
        uint32_t v = (uint32_t)nonce[i] << 16 | (uint32_t)nonce[i + 1] << 8 | nonce[i + 2];
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = b64[v >> 6 & 63];
        out[o++] = b64[v & 63];
    }
    /* 16 = 5 * 3 + 1: the last byte becomes two characters and "==". */
    out[o++] = b64[nonce[15] >> 2];
    out[o++] = b64[(nonce[15] & 3) << 4];
    out[o++] = '=';
    out[o++] = '=';
    out[o] = '\0';
}

size_t cd_bench_ws_request(char *out, size_t cap, const char *host,
                           const char *path, const char *key)
{
    int n = snprintf(out, cap,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "\r\n",
                     path, host, key);

    if (n < 0 || (size_t)n >= cap)
        return 0;
    return (size_t)n;
}

/* Is [line, line+len) the header `name` with value `value` (RFC 9110 §5.5:
 * optional whitespace around the value)? */
static bool header_is(const char *line, size_t len, const char *name,
                      const char *value)
{
    size_t nlen = strlen(name);
    size_t vlen = strlen(value);
    const char *v;
    const char *end = line + len;

    if (len <= nlen || strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
        return false;
    v = line + nlen + 1;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    return (size_t)(end - v) == vlen && memcmp(v, value, vlen) == 0;
}

int cd_bench_ws_response(const char *buf, size_t len, const char *accept,
                         size_t *head_len, int *status)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    const char *line;
    bool accepted = false;

    *status = 0;
    if (end == NULL)
        return CD_BENCH_HS_MORE;
    *head_len = (size_t)(end - buf) + 4;
    /* RFC 6455 §4.1: the status line must be 101; anything else is a
     * failed handshake whatever follows. */
    if (len < 12 || memcmp(buf, "HTTP/1.1 ", 9) != 0)
        return CD_BENCH_HS_BAD;
    if (buf[9] >= '1' && buf[9] <= '5' && buf[10] >= '0' && buf[10] <= '9' &&
        buf[11] >= '0' && buf[11] <= '9')
        *status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    if (*status != 101)
        return CD_BENCH_HS_BAD;
    line = memmem(buf, (size_t)(end - buf), "\r\n", 2);
    while (line != NULL && line < end) {
        const char *next;
        line += 2;
        next = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        if (next == NULL)
            break;
        if (header_is(line, (size_t)(next - line), "Sec-WebSocket-Accept", accept))
            accepted = true;
        line = next;
    }
    return accepted ? CD_BENCH_HS_OK : CD_BENCH_HS_BAD;
}

/* Every message sent and received goes through these two, so they work a
 * byte (two digits) at a time from tables rather than a nibble at a time. */
void cd_bench_hex16(char out[CD_BENCH_TS_HEX], uint64_t v)
{
    static const char pairs[] =
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
        "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
        "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

    for (int i = CD_BENCH_TS_HEX - 2; i >= 0; i -= 2) {
        memcpy(out + i, pairs + 2 * (v & 0xFF), 2);
        v >>= 8;
    }
}

/* Digit value + 1; 0 for a byte that is not a hex digit. */
static const uint8_t hex_table[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7,
    ['7'] = 8, ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14,
    ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15,
    ['F'] = 16,
};

static int hex_value(uint8_t c)
{
    return (int)hex_table[c] - 1;
}

bool cd_bench_unhex16(const uint8_t in[CD_BENCH_TS_HEX], uint64_t *v)
{
    uint64_t r = 0;
    uint8_t bad = 0;

    /* No early exit: the digits are almost always valid, and a branch-free
     * loop is cheaper than sixteen predictable-but-taken checks. */
    for (int i = 0; i < CD_BENCH_TS_HEX; i++) {
        uint8_t d = hex_table[in[i]];
        bad |= (uint8_t)(d == 0);
        r = r << 4 | (uint64_t)(uint8_t)(d - 1);
    }
    *v = r;
    return bad == 0;
}

void cd_bench_rx_init(cd_bench_rx *rx, bool scan_text)
{
    memset(rx, 0, sizeof(*rx));
    rx->scan_text = scan_text;
    rx->hdr_need = 2;
    rx->state = ST_HEADER;
}

static int fail(cd_bench_rx *rx, const char *why)
{
    rx->state = ST_FAILED;
    rx->error = why;
    return CD_BENCH_RX_FAIL;
}

/* After a mismatch the byte itself may start a new marker. */
static uint8_t scan_restart(uint8_t b)
{
    return b == 't' ? 1 : 0;
}

static void scan(cd_bench_rx *rx, const uint8_t *p, size_t n)
{
    size_t i = 0;

    while (i < n && rx->scan != SCAN_DONE) {
        uint8_t b;
        int d;

        if (rx->scan == 0) {
            const uint8_t *t = memchr(p + i, 't', n - i);
            if (t == NULL)
                return;
            i = (size_t)(t - p) + 1;
            rx->scan = 1;
            continue;
        }
        b = p[i++];
        if (rx->scan == 1) {
            rx->scan = b == 's' ? 2 : scan_restart(b);
        } else if (rx->scan == 2) {
            rx->scan = b == '=' ? SCAN_DIGITS : scan_restart(b);
            rx->ts = 0;
        } else if ((d = hex_value(b)) < 0) {
            rx->scan = scan_restart(b);
        } else {
            rx->ts = rx->ts << 4 | (uint64_t)d;
            rx->scan++;
        }
    }
}

/* Header byte `b` at position hdr_pos; returns an error text or NULL. */
static const char *header_byte(cd_bench_rx *rx, uint8_t b)
{
    uint8_t pos = rx->hdr_pos++;
    uint8_t op;

    rx->hdr[pos] = b;
    if (pos == 0) {
        op = b & 0x0F;
        /* RFC 6455 §5.2: RSV bits need a negotiated extension; we offer none. */
        if (b & 0x70)
            return "reserved bit set";
        if (op >= CD_WS_OP_CLOSE) {
            /* RFC 6455 §5.5: control frames are never fragmented. */
            if (op > CD_WS_OP_PONG || !(b & 0x80))
                return "bad control frame";
        } else if (op == CD_WS_OP_CONT) {
            if (rx->msg_op == 0)
                return "continuation without a message";
        } else if (op > CD_WS_OP_BINARY) {
            return "reserved opcode";
        } else if (rx->msg_op != 0) {
            return "new message before the last ended";
        }
        rx->frame_op = op;
        rx->fin = (b & 0x80) != 0;
        return NULL;
    }
    if (pos == 1) {
        uint8_t len7 = b & 0x7F;
        /* RFC 6455 §5.1: a client MUST close on a masked server frame. */
        if (b & 0x80)
            return "masked server frame";
        if (rx->frame_op >= CD_WS_OP_CLOSE && len7 > 125)
            return "control frame too long";
        rx->remain = len7;
        if (len7 == 126)
            rx->hdr_need = 4;
        else if (len7 == 127)
            rx->hdr_need = 10;
        if (rx->hdr_need > 2)
            rx->remain = 0;
        return NULL;
    }
    /* RFC 6455 §5.2: the top bit of a 64-bit length MUST be 0. */
    if (pos == 2 && rx->hdr_need == 10 && (b & 0x80))
        return "frame length over 2^63";
    rx->remain = rx->remain << 8 | b;
    return NULL;
}

static void message_event(cd_bench_rx *rx, cd_bench_rx_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->type = CD_BENCH_RX_MESSAGE;
    ev->opcode = rx->msg_op;
    ev->len = rx->msg_len;
    ev->data = rx->head;
    ev->has_ts = rx->scan == SCAN_DONE;
    ev->ts = rx->ts;
    rx->msg_op = 0;
}

static int control_event(cd_bench_rx *rx, cd_bench_rx_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->len = rx->ctl_len;
    ev->data = rx->ctl;
    if (rx->frame_op == CD_WS_OP_PING) {
        ev->type = CD_BENCH_RX_PING;
        return CD_BENCH_RX_EVENT;
    }
    if (rx->frame_op == CD_WS_OP_PONG) {
        ev->type = CD_BENCH_RX_PONG;
        return CD_BENCH_RX_EVENT;
    }
    ev->type = CD_BENCH_RX_CLOSE;
    /* RFC 6455 §5.5.1: a close body starts with a two-byte code. */
    if (rx->ctl_len == 1)
        return fail(rx, "close payload of one byte");
    ev->close_code = rx->ctl_len ? (uint16_t)(rx->ctl[0] << 8 | rx->ctl[1]) : 1005;
    return CD_BENCH_RX_EVENT;
}

/* The header is complete: set up the payload state.  Returns an event for
 * frames with an empty payload, else NEED_MORE. */
static int frame_begin(cd_bench_rx *rx, cd_bench_rx_event *ev)
{
    rx->hdr_pos = 0;
    rx->hdr_need = 2;
    if (rx->frame_op >= CD_WS_OP_CLOSE) {
        rx->ctl_len = 0;
        if (rx->remain == 0)
            return control_event(rx, ev);
        rx->state = ST_CONTROL;
        return CD_BENCH_RX_NEED_MORE;
    }
    if (rx->frame_op != CD_WS_OP_CONT) {
        rx->msg_op = rx->frame_op;
        rx->msg_len = 0;
        rx->head_len = 0;
        rx->ts = 0;
        rx->scan = (rx->scan_text && rx->msg_op == CD_WS_OP_TEXT) ? 0 : SCAN_OFF;
    }
    if (rx->remain == 0 && rx->fin) {
        message_event(rx, ev);
        return CD_BENCH_RX_EVENT;
    }
    rx->state = rx->remain == 0 ? ST_HEADER : ST_DATA;
    return CD_BENCH_RX_NEED_MORE;
}

static int data_payload(cd_bench_rx *rx, const uint8_t *p, size_t n,
                        cd_bench_rx_event *ev)
{
    if (rx->head_len < CD_BENCH_WS_HEAD) {
        size_t k = CD_BENCH_WS_HEAD - rx->head_len;
        if (k > n)
            k = n;
        memcpy(rx->head + rx->head_len, p, k);
        rx->head_len = (uint8_t)(rx->head_len + k);
    }
    if (rx->scan < SCAN_DONE)
        scan(rx, p, n);
    rx->remain -= n;
    rx->msg_len += n;
    if (rx->remain != 0)
        return CD_BENCH_RX_NEED_MORE;
    rx->state = ST_HEADER;
    if (!rx->fin)
        return CD_BENCH_RX_NEED_MORE;
    message_event(rx, ev);
    return CD_BENCH_RX_EVENT;
}

int cd_bench_rx_next(cd_bench_rx *rx, const uint8_t *data, size_t len,
                     size_t *used, cd_bench_rx_event *ev)
{
    size_t pos = 0;
    int rc = CD_BENCH_RX_NEED_MORE;

    while (rc == CD_BENCH_RX_NEED_MORE) {
        size_t n;
        const char *why;

        if (rx->state == ST_FAILED) {
            rc = CD_BENCH_RX_FAIL;
            break;
        }
        if (pos == len)
            break;
        switch (rx->state) {
        case ST_HEADER:
            why = header_byte(rx, data[pos++]);
            if (why != NULL)
                rc = fail(rx, why);
            else if (rx->hdr_pos == rx->hdr_need)
                rc = frame_begin(rx, ev);
            break;
        case ST_DATA:
            n = len - pos < rx->remain ? len - pos : (size_t)rx->remain;
            rc = data_payload(rx, data + pos, n, ev);
            pos += n;
            break;
        case ST_CONTROL:
            n = len - pos < rx->remain ? len - pos : (size_t)rx->remain;
            memcpy(rx->ctl + rx->ctl_len, data + pos, n);
            rx->ctl_len = (uint8_t)(rx->ctl_len + n);
            rx->remain -= n;
            pos += n;
            if (rx->remain == 0) {
                rx->state = ST_HEADER;
                rc = control_event(rx, ev);
            }
            break;
        default:
            rc = fail(rx, "bad reader state");
            break;
        }
    }
    *used = pos;
    return rc;
}
