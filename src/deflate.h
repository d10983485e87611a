/* deflate.h - permessage-deflate (RFC 7692) negotiation and per-connection
 * compression state, on top of zlib.
 *
 * Negotiation is pure string work.  The per-connection state (cd_pmd) holds
 * at most one inflate and one deflate stream, created lazily on first use;
 * with *_no_context_takeover the matching stream is released after every
 * message, so an idle connection keeps only the streams it must keep.
 * Memory per stream is bounded by the negotiated window bits and a fixed
 * memLevel (the numbers are at the top of deflate.c; docs/architecture.md,
 * "Compression memory"). */
#ifndef CD_DEFLATE_H
#define CD_DEFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* What the server is willing to do; filled from configuration. */
typedef struct cd_pmd_config {
    bool enabled;
    uint8_t max_window_bits;      /* 9..15: cap for server_max_window_bits */
    uint8_t mem_level;            /* 1..9: zlib memLevel for deflate */
    size_t min_compress_bytes;    /* smaller outgoing messages go uncompressed */
} cd_pmd_config;

/* The agreed parameters of one connection. */
typedef struct cd_pmd_params {
    bool server_no_context_takeover;
    bool client_no_context_takeover;
    uint8_t server_max_window_bits;   /* 8..15, 15 when not negotiated */
    uint8_t client_max_window_bits;   /* 8..15, 15 when not negotiated */
} cd_pmd_params;

/* Longest response cd_pmd_negotiate can write, NUL included: all four
 * parameters with two-digit values.  A smaller resp_cap still works: the
 * optional client_max_window_bits is then left out of the response. */
#define CD_PMD_RESPONSE_MAX 129

/* Choose the first acceptable permessage-deflate offer in a
 * Sec-WebSocket-Extensions value (all header lines joined with ", ").
 * Offers with unknown parameters, duplicate parameters or invalid values are
 * skipped (declined), never an error; so are list elements that do not
 * parse.  On success writes the response extension value (e.g.
 * "permessage-deflate; server_no_context_takeover") into resp
 * (NUL-terminated) and the agreed parameters into *out, and returns 1;
 * returns 0 when nothing is accepted, cfg is NULL or cfg->enabled is false
 * (*out then holds "not negotiated" values, resp is "").  Pure; any thread. */
int cd_pmd_negotiate(const char *value, size_t len, const cd_pmd_config *cfg,
                     cd_pmd_params *out, char *resp, size_t resp_cap);

typedef struct cd_pmd cd_pmd;

/* Allocate the per-connection state (streams are created lazily).  Copies
 * what it needs from params and cfg (cfg may be NULL: zlib defaults).
 * Returns NULL on allocation failure.  Thread: the owning loop only, like
 * every function below. */
cd_pmd *cd_pmd_create(const cd_pmd_params *params, const cd_pmd_config *cfg);
/* Free the state and both streams.  NULL is ignored. */
void cd_pmd_destroy(cd_pmd *d);

/* Inflate part of an incoming compressed message, appending the output to
 * `out`.  Pass is_final=true with the last frame's payload: the RFC 7692
 * §7.2.2 tail 00 00 ff ff is then fed, the message must end on a DEFLATE
 * block boundary, and the context is released when the client does not keep
 * it.  A message whose payload is empty in every frame inflates to nothing.
 * The total output of the message (out->len, including what `out` held on
 * entry) may not exceed max_out: when more output exists, returns
 * CONDUIT_ELIMIT (close 1009) with out->len <= max_out, and neither writes
 * nor allocates past max_out.  Returns 0, CONDUIT_EPROTO for corrupt data
 * (the codec closes with 1007: invalid message data), CONDUIT_ENOMEM, or
 * CONDUIT_EIO if zlib rejects its own parameters.  After any error the
 * inflate context is gone and every later call returns the same error. */
int cd_pmd_inflate(cd_pmd *d, const uint8_t *in, size_t len, bool is_final,
                   cd_bytes *out, size_t max_out);

/* Compress one whole outgoing message into `out` (appended), without the
 * trailing 00 00 ff ff (RFC 7692 §7.2.1); an empty message becomes the one
 * octet 00.  The result is valid for the agreed server window even when
 * cd_pmd_should_compress is false (8 bits: stored blocks only).  Returns 0,
 * CONDUIT_ENOMEM or CONDUIT_EIO; on error `out` is as it was and the
 * deflate context is dropped (a fresh context is always decodable). */
int cd_pmd_deflate(cd_pmd *d, const uint8_t *in, size_t len, cd_bytes *out);

/* True when an outgoing message of `len` bytes should be compressed
 * (compression is negotiated and possible with the agreed window). */
bool cd_pmd_should_compress(const cd_pmd *d, size_t len);

/* Bytes of zlib state this connection holds now (an estimate from zlib's
 * documented formulas, 0 when both streams are released); for metrics. */
size_t cd_pmd_memory_bytes(const cd_pmd *d);

#endif
