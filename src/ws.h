/* ws.h - RFC 6455 frame codec.  Bytes in, events out, bytes to send; no I/O.
 *
 * The parser consumes whatever bytes have arrived and yields one event at a
 * time: a complete data message (defragmented, inflated when
 * permessage-deflate is on, UTF-8 checked for text), a ping, a pong or a
 * close.  Payload bytes are unmasked in place in the caller's buffer; a
 * message that arrives whole in one buffer is delivered without a copy, and
 * anything partial is copied into the parser's own buffer, which exists only
 * while a message is incomplete.  Every limit is checked from the frame
 * header before a payload byte is buffered.  After a failure the parser
 * yields nothing more. */
#ifndef CD_WS_H
#define CD_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "utf8.h"

struct cd_pmd;

enum {
    CD_WS_OP_CONT = 0x0,
    CD_WS_OP_TEXT = 0x1,
    CD_WS_OP_BINARY = 0x2,
    CD_WS_OP_CLOSE = 0x8,
    CD_WS_OP_PING = 0x9,
    CD_WS_OP_PONG = 0xA,
};

/* Close codes used by the codec and the server (RFC 6455 §7.4.1). */
enum {
    CD_WS_CLOSE_NORMAL = 1000,
    CD_WS_CLOSE_GOING_AWAY = 1001,
    CD_WS_CLOSE_PROTOCOL = 1002,
    CD_WS_CLOSE_UNSUPPORTED = 1003,
    CD_WS_CLOSE_NO_STATUS = 1005,     /* never sent: "no code received" */
    CD_WS_CLOSE_ABNORMAL = 1006,      /* never sent */
    CD_WS_CLOSE_INVALID_DATA = 1007,
    CD_WS_CLOSE_POLICY = 1008,
    CD_WS_CLOSE_TOO_BIG = 1009,
    CD_WS_CLOSE_INTERNAL = 1011,
    CD_WS_CLOSE_TRY_AGAIN = 1013,
    CD_WS_CLOSE_SLOW_CONSUMER = 4008,
};

#define CD_WS_MAX_HEADER 14          /* 2 + 8 (length) + 4 (mask) */
#define CD_WS_MAX_CONTROL 125

typedef struct cd_ws_limits {
    uint64_t max_message_bytes;      /* whole message: wire bytes, and again
                                      * after inflation */
    uint32_t max_fragments;          /* frames in one message; 0: no limit */
} cd_ws_limits;

typedef enum cd_ws_event_type {
    CD_WS_EV_MESSAGE = 1,            /* opcode = TEXT or BINARY */
    CD_WS_EV_PING,
    CD_WS_EV_PONG,
    CD_WS_EV_CLOSE,                  /* close_code valid; data = reason */
} cd_ws_event_type;

typedef struct cd_ws_event {
    cd_ws_event_type type;
    uint8_t opcode;
    uint16_t close_code;             /* CLOSE: received code, 1005 if none */
    const uint8_t *data;             /* valid until the next cd_ws_parse */
    size_t len;
} cd_ws_event;

/* Parser state.  Public only so that it can be embedded in a connection
 * (88 bytes on LP64, no heap memory while idle); touch it through the
 * functions below.  The header is accumulated a byte at a time into
 * remain/mask, so no header buffer is needed. */
typedef struct cd_ws_parser {
    const cd_ws_limits *limits;      /* borrowed; outlives the parser */
    struct cd_pmd *pmd;              /* borrowed; NULL: no RSV1 allowed */
    cd_bytes msg;                    /* message being assembled or just
                                      * delivered; freed otherwise */
    uint8_t *ctl;                    /* partial control payload (125 B),
                                      * allocated only while one is partial */
    uint64_t remain;                 /* payload bytes of this frame to come */
    uint64_t msg_len;                /* wire payload bytes of the open message */
    uint32_t mask;                   /* masking key, wire byte order */
    uint32_t n_fragments;            /* frames of the open message */
    cd_utf8 utf8;                    /* open text message, as delivered */
    uint8_t state;
    uint8_t hdr_pos;                 /* header bytes read */
    uint8_t hdr_need;                /* header length (2 until byte 1 is read) */
    uint8_t frame_op;                /* opcode of the current frame */
    uint8_t msg_op;                  /* TEXT/BINARY while a message is open */
    uint8_t flags;                   /* fin, rsv1, compressed, client, ... */
    uint8_t mask_off;                /* key offset of the next payload byte */
    uint8_t ctl_len;                 /* payload length of a partial control */
    uint8_t fail;                    /* why it failed; 0 while healthy */
} cd_ws_parser;

enum {
    CD_WS_NEED_MORE = 0,             /* input exhausted, no event */
    CD_WS_EVENT = 1,                 /* *ev filled */
    CD_WS_FAIL = -1,                 /* connection must close: cd_ws_fail_code */
};

/* Server-side parser: client frames must be masked.  `limits` and `pmd`
 * (may be NULL) are borrowed and must outlive the parser. */
void cd_ws_parser_init(cd_ws_parser *p, const cd_ws_limits *limits,
                       struct cd_pmd *pmd);
/* Client-side parser (tools, tests): server frames must not be masked. */
void cd_ws_parser_init_client(cd_ws_parser *p, const cd_ws_limits *limits,
                              struct cd_pmd *pmd);
/* Release the partial-message buffers. */
void cd_ws_parser_fini(cd_ws_parser *p);

/* Consume bytes from [data, data+len) until one event is complete or the
 * input is exhausted; *consumed says how many were used.  `data` is written
 * to (unmasked in place).  Returns CD_WS_EVENT, CD_WS_NEED_MORE or
 * CD_WS_FAIL; after CD_WS_FAIL every further call returns CD_WS_FAIL and
 * consumes nothing.  NEED_MORE consumes everything: partial headers and
 * payloads are kept by the parser, so the caller never re-feeds bytes.
 * On EVENT, ev->data (never NULL) points into `data` when the frame was
 * whole in this call (the caller's buffer must then outlive its use of the
 * event) or into the parser's own buffers; either way it is valid until the
 * next cd_ws_parse, cd_ws_parser_trim or cd_ws_parser_fini.  A caller loops
 * while input remains, since each call yields at most one event. */
int cd_ws_parse(cd_ws_parser *p, uint8_t *data, size_t len, size_t *consumed,
                cd_ws_event *ev);

/* The close code to send after CD_WS_FAIL (1002, 1007, 1009, or 1011 when
 * memory ran out or zlib failed internally), and a short static reason for
 * logs and the close frame.  Before any failure: 0 and "". */
uint16_t cd_ws_fail_code(const cd_ws_parser *p);
const char *cd_ws_fail_reason(const cd_ws_parser *p);

/* Return the buffer of a message already delivered (its event data becomes
 * invalid).  cd_ws_parse does this itself on its next call; a connection
 * calls it when a read is fully handled, so idle connections pin nothing. */
void cd_ws_parser_trim(cd_ws_parser *p);

/* True when the parser holds no partial frame or message and no memory
 * (nothing pinned).  A failed parser that has released everything is idle. */
bool cd_ws_parser_is_idle(const cd_ws_parser *p);

/* Write an unmasked (server) frame header into out; returns 2..10. */
size_t cd_ws_header_write(uint8_t out[CD_WS_MAX_HEADER], uint8_t opcode,
                          bool fin, bool rsv1, uint64_t payload_len);
/* Write a masked (client) frame header; returns 6..14. */
size_t cd_ws_header_write_masked(uint8_t out[CD_WS_MAX_HEADER], uint8_t opcode,
                                 bool fin, bool rsv1, uint64_t payload_len,
                                 uint32_t mask);
/* XOR `len` bytes with the 4-byte key starting at key offset `off` (0..3),
 * a machine word at a time.  The key is in wire byte order. */
void cd_ws_mask(uint8_t *p, size_t len, uint32_t mask, size_t off);

/* True for a close code a client may send: 1000-1003, 1007-1011,
 * 3000-4999 (RFC 6455 §7.4; the later server-side codes 1012-1014 are
 * refused, see ws.c). */
bool cd_ws_close_code_is_valid(uint16_t code);

/* Build a close payload (code + UTF-8 reason truncated at a character
 * boundary to fit 125 bytes); returns its length.  code 0 means no payload. */
size_t cd_ws_close_payload(uint8_t out[CD_WS_MAX_CONTROL], uint16_t code,
                           const char *reason);

#endif
