/* utf8.c - incremental, fail-fast UTF-8 validation (RFC 3629 §4).
 *
 * A deterministic automaton over byte classes.  Each state says exactly which
 * continuation bytes may come next, so the first byte that no valid sequence
 * could contain moves the automaton to REJECT, which is sticky: overlongs
 * (C0, C1, E0 80..9F, F0 80..8F), surrogates (ED A0..BF), code points above
 * U+10FFFF (F4 90..BF, F5..FF) and stray continuation bytes all fail at that
 * byte.  ASCII, the common case, is skipped eight bytes at a time while the
 * automaton is on a character boundary. */
#include "utf8.h"

#include <string.h>

/* Byte classes: which lead or continuation range a byte belongs to. */
enum {
    AS,  /* 00..7F ASCII */
    LO,  /* 80..8F continuation */
    MI,  /* 90..9F continuation */
    HI,  /* A0..BF continuation */
    L2,  /* C2..DF lead of two */
    E0,  /* E0: second byte A0..BF, else overlong */
    L3,  /* E1..EC, EE..EF lead of three */
    ED,  /* ED: second byte 80..9F, else a surrogate */
    F0,  /* F0: second byte 90..BF, else overlong */
    L4,  /* F1..F3 lead of four */
    F4,  /* F4: second byte 80..8F, else above U+10FFFF */
    XX,  /* C0, C1, F5..FF: in no valid sequence */
    N_CLASSES
};

/* States: ACCEPT is a character boundary; REJECT is final. */
enum {
    S_ACCEPT,
    S_REJECT,
    S_NEED1,     /* one more continuation, any 80..BF */
    S_NEED2,     /* two more, any */
    S_NEED3,     /* three more, any */
    S_E0,        /* after E0 */
    S_ED,        /* after ED */
    S_F0,        /* after F0 */
    S_F4,        /* after F4 */
    N_STATES
};

static const uint8_t byte_class[256] = {
    AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS,  /* 00..0F */
    AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS,  /* 10..1F */
    AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS,  /* 20..2F */
    AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS,  /* 30..3F */
    AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS,  /* 40..4F */
    AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS,  /* 50..5F */
    AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS,  /* 60..6F */
    AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS,  /* 70..7F */
    LO, LO, LO, LO, LO, LO, LO, LO, LO, LO, LO, LO, LO, LO, LO, LO,  /* 80..8F */
    MI, MI, MI, MI, MI, MI, MI, MI, MI, MI, MI, MI, MI, MI, MI, MI,  /* 90..9F */
    HI, HI, HI, HI, HI, HI, HI, HI, HI, HI, HI, HI, HI, HI, HI, HI,  /* A0..AF */
    HI, HI, HI, HI, HI, HI, HI, HI, HI, HI, HI, HI, HI, HI, HI, HI,  /* B0..BF */
    XX, XX, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2,  /* C0..CF */
    L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2,  /* D0..DF */
    E0, L3, L3, L3, L3, L3, L3, L3, L3, L3, L3, L3, L3, ED, L3, L3,  /* E0..EF */
    F0, L4, L4, L4, F4, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,  /* F0..FF */
};

/* RFC 3629 §4 syntax, one row per state: the class of the next byte picks
 * the next state.  Rows list classes in enum order (AS LO MI HI L2 E0 L3 ED
 * F0 L4 F4 XX). */
#define R S_REJECT
#define A S_ACCEPT
static const uint8_t transition[N_STATES][N_CLASSES] = {
    [S_ACCEPT] = {A, R, R, R, S_NEED1, S_E0, S_NEED2, S_ED, S_F0, S_NEED3, S_F4, R},
    [S_REJECT] = {R, R, R, R, R, R, R, R, R, R, R, R},
    [S_NEED1] = {R, A, A, A, R, R, R, R, R, R, R, R},
    [S_NEED2] = {R, S_NEED1, S_NEED1, S_NEED1, R, R, R, R, R, R, R, R},
    [S_NEED3] = {R, S_NEED2, S_NEED2, S_NEED2, R, R, R, R, R, R, R, R},
    [S_E0] = {R, R, R, S_NEED1, R, R, R, R, R, R, R, R},
    [S_ED] = {R, S_NEED1, S_NEED1, R, R, R, R, R, R, R, R, R},
    [S_F0] = {R, R, S_NEED2, S_NEED2, R, R, R, R, R, R, R, R},
    [S_F4] = {R, S_NEED2, R, R, R, R, R, R, R, R, R, R},
};
#undef A
#undef R

#define HIGH_BITS 0x8080808080808080ull

bool cd_utf8_feed(cd_utf8 *u, const uint8_t *p, size_t len)
{
    uint32_t s = u->state;
    size_t i = 0;

    if (s == S_REJECT)
        return false;
    while (i < len) {
        if (s == S_ACCEPT) {
            /* On a boundary, a word with no high bit set is eight ASCII
             * characters and needs no automaton step; four words at a time
             * cost one branch per 32 bytes of ASCII text. */
            while (len - i >= 32) {
                uint64_t w[4];
                memcpy(w, p + i, sizeof(w));
                if ((w[0] | w[1] | w[2] | w[3]) & HIGH_BITS)
                    break;
                i += 32;
            }
            while (len - i >= 8) {
                uint64_t w;
                memcpy(&w, p + i, sizeof(w));
                if (w & HIGH_BITS)
                    break;
                i += 8;
            }
            while (i < len && p[i] < 0x80)
                i++;
            if (i == len)
                break;
        }
        s = transition[s][byte_class[p[i]]];
        if (s == S_REJECT) {
            u->state = s;
            return false;
        }
        i++;
    }
    u->state = s;
    return true;
}

bool cd_utf8_is_complete(const cd_utf8 *u)
{
    return u->state == S_ACCEPT;
}

bool cd_utf8_valid(const uint8_t *p, size_t len)
{
    cd_utf8 u;

    cd_utf8_init(&u);
    return cd_utf8_feed(&u, p, len) && cd_utf8_is_complete(&u);
}
