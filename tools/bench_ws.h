/* bench_ws.h - the client side of RFC 6455 as conduit-bench needs it.
 *
 * The opening handshake (request writer, 101 response checker) and a lean
 * incremental reader for server frames.  The reader keeps no message: it
 * reports each message's opcode and length, its first 16 bytes (where echo
 * mode puts the send timestamp) and, for text messages when asked, the value
 * after the first "ts=" marker (fan-out deliveries).  That keeps the
 * receive path free of copies and allocation whatever the message size, at
 * the price of not validating UTF-8, which a load generator does not need.
 * Sans-I/O like src/ws.c: bytes in, events out. */
#ifndef CD_BENCH_WS_H
#define CD_BENCH_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CD_BENCH_WS_KEY_LEN 24       /* base64 of 16 bytes */
#define CD_BENCH_WS_HEAD 16          /* message bytes kept for the caller */
#define CD_BENCH_TS_HEX 16           /* timestamp: 16 hex digits */

/* Base64 of the 16 bytes in `nonce`, NUL-terminated. */
void cd_bench_ws_key(const uint8_t nonce[16], char out[CD_BENCH_WS_KEY_LEN + 1]);

/* Write the upgrade request; returns its length, 0 if cap is too small. */
size_t cd_bench_ws_request(char *out, size_t cap, const char *host,
                           const char *path, const char *key);

enum {
    CD_BENCH_HS_MORE = 0,            /* head incomplete */
    CD_BENCH_HS_OK = 1,              /* 101 with the right accept key */
    CD_BENCH_HS_BAD = -1,            /* anything else */
};

/* Check a response head accumulated in [buf, buf+len).  On CD_BENCH_HS_OK,
 * *head_len is the length of the head (bytes after it are frames); on
 * CD_BENCH_HS_BAD, *status is the HTTP status (0 if unparsable). */
int cd_bench_ws_response(const char *buf, size_t len, const char *accept,
                         size_t *head_len, int *status);

/* Lower-case hex of v, 16 digits, no NUL. */
void cd_bench_hex16(char out[CD_BENCH_TS_HEX], uint64_t v);
/* Parse 16 hex digits; false if any is not a hex digit. */
bool cd_bench_unhex16(const uint8_t in[CD_BENCH_TS_HEX], uint64_t *v);

typedef enum cd_bench_rx_type {
    CD_BENCH_RX_MESSAGE = 1,
    CD_BENCH_RX_PING,
    CD_BENCH_RX_PONG,
    CD_BENCH_RX_CLOSE,
} cd_bench_rx_type;

typedef struct cd_bench_rx_event {
    cd_bench_rx_type type;
    uint8_t opcode;                  /* MESSAGE: TEXT or BINARY */
    uint16_t close_code;             /* CLOSE: 1005 when absent */
    bool has_ts;                     /* MESSAGE: a "ts=" marker was found */
    uint64_t ts;
    uint64_t len;                    /* message or control payload length */
    const uint8_t *data;             /* first min(len, 16) message bytes, or
                                      * the whole control payload */
} cd_bench_rx_event;

typedef struct cd_bench_rx {
    uint64_t remain;                 /* payload bytes left in this frame */
    uint64_t msg_len;                /* bytes of the open message so far */
    uint64_t ts;                     /* marker scan accumulator */
    bool scan_text;                  /* look for "ts=" in text messages */
    uint8_t state;
    uint8_t hdr_pos;
    uint8_t hdr_need;
    uint8_t frame_op;
    uint8_t msg_op;                  /* TEXT/BINARY while a message is open */
    bool fin;
    uint8_t scan;                    /* marker scan state, see bench_ws.c */
    uint8_t head_len;
    uint8_t ctl_len;
    uint8_t hdr[10];
    uint8_t head[CD_BENCH_WS_HEAD];
    uint8_t ctl[125];
    const char *error;               /* why it failed, for the log */
} cd_bench_rx;

enum {
    CD_BENCH_RX_NEED_MORE = 0,
    CD_BENCH_RX_EVENT = 1,
    CD_BENCH_RX_FAIL = -1,
};

void cd_bench_rx_init(cd_bench_rx *rx, bool scan_text);
/* Consume bytes until one event is complete or the input is exhausted;
 * *used says how many were taken.  ev->data stays valid until the next
 * call.  After CD_BENCH_RX_FAIL (rx->error says why) it fails forever. */
int cd_bench_rx_next(cd_bench_rx *rx, const uint8_t *data, size_t len,
                     size_t *used, cd_bench_rx_event *ev);

#endif
