/* utf8.h - incremental, fail-fast UTF-8 validation (RFC 3629).
 *
 * The validator is a DFA over bytes: it rejects at the first byte after
 * which no continuation could make the input valid (overlongs, surrogates
 * U+D800..U+DFFF, code points above U+10FFFF, stray continuation bytes), so
 * a WebSocket text message split over frames fails as early as possible
 * (RFC 6455 §8.1).  State is one 32-bit word. */
#ifndef CD_UTF8_H
#define CD_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cd_utf8 {
    uint32_t state;     /* 0: on a character boundary */
} cd_utf8;

static inline void cd_utf8_init(cd_utf8 *u) { u->state = 0; }

/* Feed more bytes.  Returns false as soon as the input so far cannot be a
 * prefix of valid UTF-8; the state then stays rejected. */
bool cd_utf8_feed(cd_utf8 *u, const uint8_t *p, size_t len);

/* True when everything fed so far is valid and ends on a character
 * boundary (a message may end here). */
bool cd_utf8_is_complete(const cd_utf8 *u);

/* One-shot check of a whole buffer. */
bool cd_utf8_valid(const uint8_t *p, size_t len);

#endif
