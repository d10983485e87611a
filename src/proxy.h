/* proxy.h - who is the client when a proxy stands in front of us.
 *
 * Three pure pieces, all of them only for connections whose peer is a
 * trusted proxy (CONDUIT_TRUSTED_PROXIES); from anyone else a PROXY header
 * or an X-Forwarded-For is the client's own claim and must be ignored:
 *
 *   cd_cidr_list      the trusted list: "10.0.0.0/8, 2001:db8::/32, ::1".
 *   cd_proxy_parser   PROXY protocol v1 and v2, sans-I/O and incremental
 *                     (bytes in, possibly one at a time; verdict out).
 *   cd_proxy_client_addr
 *                     the client address from X-Forwarded-For or RFC 7239
 *                     Forwarded, walked from the right past trusted hops.
 *
 * Addresses are compared in one 128-bit space in which IPv4 a.b.c.d is
 * ::ffff:a.b.c.d (RFC 4291 §2.5.5.2), so an IPv4-mapped IPv6 peer matches
 * an IPv4 CIDR, and "::/0" matches everything, IPv4 included. */
#ifndef CD_PROXY_H
#define CD_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net.h"

/* ------------------------------------------------------------------ */
/* CIDR lists. */

/* Entries per list; more is refused as a configuration error. */
#define CD_CIDR_MAX 1024u

typedef struct cd_cidr {
    uint8_t addr[16];           /* IPv6, or IPv4 as ::ffff:a.b.c.d; host bits 0 */
    uint8_t bits;               /* prefix length in that space: IPv4 /n is 96+n */
} cd_cidr;

/* The caller provides the struct (_init / _fini); the list owns the entry
 * array.  Thread: built by one thread; once built, any number of threads
 * may call cd_cidr_list_match concurrently (it only reads).  To change it
 * (SIGHUP), build a new list and swap it in. */
typedef struct cd_cidr_list {
    cd_cidr *v;
    size_t n;
    size_t cap;
} cd_cidr_list;

/* An empty list (matches nothing).  Thread: owner. */
void cd_cidr_list_init(cd_cidr_list *l);
/* Free the entries; the list is empty and may be reused.  Thread: owner. */
void cd_cidr_list_fini(cd_cidr_list *l);

/* Append the comma-separated entries of `text` ("10.0.0.0/8, ::1"): an
 * IPv4 or IPv6 literal, optionally "/bits" (0..32 or 0..128, decimal, no
 * sign, no leading zero); without it a single address (/32, /128).
 * Spaces and tabs around entries are skipped; an empty entry ("a,,b", a
 * trailing comma) is an error, an empty or all-blank text adds nothing.
 * Host bits set ("10.0.0.1/8") are an error, not silently masked: the
 * writer meant something else.  Zone ids ("fe80::1%eth0") and brackets are
 * refused.  All or nothing: on error the list is unchanged and err gets a
 * one-line reason naming the entry.  Returns 0, CONDUIT_EINVAL or
 * CONDUIT_ENOMEM.  Thread: owner. */
int cd_cidr_list_parse(cd_cidr_list *l, const char *text, char *err,
                       size_t errlen);

/* True when the address (AF_INET or AF_INET6; anything else never
 * matches) lies in one of the entries.  O(entries).  Thread: any. */
bool cd_cidr_list_match(const cd_cidr_list *l, const struct sockaddr *sa,
                        socklen_t len);
/* The same for a cd_addr.  Thread: any. */
bool cd_cidr_list_match_addr(const cd_cidr_list *l, const cd_addr *a);

/* ------------------------------------------------------------------ */
/* PROXY protocol (haproxy.org/download/2.9/doc/proxy-protocol.txt). */

/* v1: the whole line, "PROXY" to CRLF included (spec §2.1). */
#define CD_PROXY_V1_MAX 107u
/* v2: the whole header, the 16 fixed bytes included.  The spec allows
 * 16 + 65535; real senders stay far below (addresses plus a few TLVs), and
 * a peer that announces more is broken or hostile. */
#define CD_PROXY_V2_MAX 4096u

enum {
    CD_PROXY_NEED_MORE = 0,
    CD_PROXY_DONE = 1,
    CD_PROXY_ERROR = -1,
};

enum {
    CD_PROXY_CMD_PROXY = 1,     /* v1, or v2 PROXY: relayed connection */
    CD_PROXY_CMD_LOCAL = 0,     /* v2 LOCAL: the proxy's own connection
                                 * (health check); use the socket's addresses */
};

/* One connection's parser; the caller provides the memory (about 300
 * bytes: keep it only until DONE or ERROR).  Nothing is allocated.
 * Thread: the connection's worker. */
typedef struct cd_proxy_parser {
    /* Results, valid after CD_PROXY_DONE. */
    uint8_t version;            /* 1 or 2 */
    uint8_t command;            /* CD_PROXY_CMD_* */
    bool has_addr;              /* src/dst hold the relayed TCP endpoints.
                                 * False for v1 UNKNOWN, v2 LOCAL, and v2
                                 * families other than TCP over IPv4/IPv6
                                 * (UNSPEC, UDP, UNIX): keep the socket's. */
    cd_addr src;                /* the client, as sockaddr_in/_in6 with port */
    cd_addr dst;                /* the address the client connected to */
    const char *error_reason;   /* after CD_PROXY_ERROR: static text for logs */
    /* Private state.  Every decision is taken one byte at a time, so the
     * result never depends on how the input was split. */
    uint8_t state;
    uint8_t fam;                /* v2 family/transport byte */
    uint16_t len;               /* bytes stored in buf */
    uint16_t remain;            /* v2: block bytes still to read */
    uint16_t skip;              /* v2: bytes to skip in the current state */
    uint16_t tlv_len;
    uint8_t buf[CD_PROXY_V1_MAX + 1];
} cd_proxy_parser;

/* Reset for a new connection.  Thread: the connection's worker. */
void cd_proxy_parser_init(cd_proxy_parser *p);

/* Feed bytes read from the socket (the caller reads with a bounded buffer
 * and may feed one byte at a time).  Returns CD_PROXY_DONE when the header
 * is complete (*consumed = the bytes of `data` that belonged to it; the
 * rest, the HTTP request, goes to the HTTP parser), CD_PROXY_NEED_MORE when
 * all of `data` was consumed without completing it, or CD_PROXY_ERROR
 * (close the connection; p->error_reason says why).  DONE and ERROR are
 * sticky: calling again returns the same and consumes nothing.
 *
 * The header is mandatory: input that is neither "PROXY " (v1) nor the v2
 * signature is an ERROR, as the spec requires that a receiver never guess
 * (§2: "must not try to guess whether the protocol header is present").
 * v1 is checked strictly: single spaces, TCP4 with dotted-quad IPv4, TCP6
 * with an IPv6 literal, ports 0..65535 without leading zeros, printable
 * ASCII only, CRLF, <= 107 bytes; "UNKNOWN" may be followed by anything
 * printable.  v2: signature, version 2, command LOCAL or PROXY, a family
 * byte the spec defines (\x00 \x11 \x12 \x21 \x22 \x31 \x32; any byte for
 * LOCAL, whose block is discarded as the spec says), a length that holds
 * the address block, a header <= CD_PROXY_V2_MAX, and TLVs that tile the
 * rest of the block exactly (TLV values are skipped unread; CRC32C is not
 * checked, the peer being trusted).  An UNSPEC block is skipped whole.
 * Thread: the connection's worker. */
int cd_proxy_parse(cd_proxy_parser *p, const uint8_t *data, size_t len,
                   size_t *consumed);

/* ------------------------------------------------------------------ */
/* X-Forwarded-For and Forwarded. */

/* One received header line's value (not NUL-terminated), e.g. from
 * cd_http_header_next.  Borrowed for the duration of the call. */
typedef struct cd_proxy_hdr {
    const char *value;
    size_t len;
} cd_proxy_hdr;

/* Which header carries the client address.  Exactly one must be chosen by
 * configuration, matching what the proxy writes: a proxy that appends to
 * X-Forwarded-For passes a client's forged Forwarded through untouched,
 * and the other way round, so honouring both would let a client choose its
 * own address. */
enum cd_proxy_header_kind {
    CD_PROXY_XFF = 0,           /* X-Forwarded-For (nginx, HAProxy, ELB) */
    CD_PROXY_FORWARDED = 1,     /* RFC 7239 Forwarded, its for= parameter */
};

/* Where cd_proxy_client_addr's answer came from. */
enum cd_proxy_client_source {
    CD_CLIENT_PEER = 0,         /* the peer itself: it is not a trusted proxy,
                                 * or it sent no (non-empty) header */
    CD_CLIENT_HEADER = 1,       /* the rightmost untrusted address of the
                                 * header (or, when every entry is a trusted
                                 * proxy, the leftmost) */
    CD_CLIENT_FALLBACK = 2,     /* the walk stopped at an entry that is not
                                 * an address (malformed, "unknown",
                                 * "_hidden", a Forwarded element without
                                 * for=): the answer is the last trusted hop
                                 * before it, or the peer.  Worth a warning:
                                 * a trusted proxy sent something odd, and
                                 * clients behind it now share that hop's
                                 * per-IP limits. */
};

/* The client address of a connection from `peer`, given the values of
 * every header line of the chosen kind in the order received (several
 * lines count as one value joined with ", ", RFC 9110 §5.3; n = 0: none).
 *
 * When peer is not in `trusted`, the headers are not even read: the answer
 * is the peer (a forged X-Forwarded-For from an untrusted client changes
 * nothing).  Otherwise the list is walked from the right: an entry that is
 * a trusted proxy is skipped, the first untrusted address is the client.
 * An entry that is not an address stops the walk (CD_CLIENT_FALLBACK).
 * Empty list members ("a, , b") are skipped (RFC 9110 §5.6.1).
 *
 * X-Forwarded-For entries: IPv4, IPv6, [IPv6], IPv4:port, [IPv6]:port.
 * Forwarded (RFC 7239 §4, §6): for= in any case, token or quoted-string
 * value; IPv6 only in brackets (hence quoted), optional :port or :_obfport;
 * "unknown" and "_obfuscated" nodes are not addresses; for= twice in one
 * element (§4), a syntax error, or an unterminated quoted string make
 * the element invalid (an unterminated string runs to the end of the
 * joined value, so it swallows anything appended after it).
 *
 * The walk is one left-to-right pass with O(1) state and no allocation, so
 * its cost is linear in the header bytes (bounded by the HTTP parser).
 * *out receives the answer (the header's port when it gave one, else 0).
 * Returns an enum cd_proxy_client_source.  Thread: any. */
int cd_proxy_client_addr(const cd_cidr_list *trusted, const cd_addr *peer,
                         enum cd_proxy_header_kind kind,
                         const cd_proxy_hdr *values, size_t n_values,
                         cd_addr *out);

#endif
