/* fuzz_utf8.c - the UTF-8 validator against a slow reference decoder.
 *
 * Input: byte 0 seeds the split points, the rest is the text.  Checks that
 * cd_utf8_valid agrees with the reference, that feeding the text in random
 * pieces gives the same answer, and that a failing feed fails in exactly the
 * piece holding the first byte after which no valid continuation exists
 * (fail-fast, RFC 6455 §8.1). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

/* Is s[0..n), which holds at most one sequence, a prefix of a valid one?
 * Decodes by arithmetic on code points: the completions of a partial
 * sequence span [lo, hi], which must meet the shortest-form range for its
 * length without lying wholly among the surrogates. */
static bool seq_prefix_ok(const uint8_t *s, size_t n)
{
    uint8_t b = s[0];
    size_t need;
    uint32_t cp, min, max;

    if (b < 0x80)
        return true;
    if ((b & 0xE0) == 0xC0)
        need = 1, cp = b & 0x1F, min = 0x80, max = 0x7FF;
    else if ((b & 0xF0) == 0xE0)
        need = 2, cp = b & 0x0F, min = 0x800, max = 0xFFFF;
    else if ((b & 0xF8) == 0xF0)
        need = 3, cp = b & 0x07, min = 0x10000, max = 0x10FFFF;
    else
        return false;
    size_t have = 0;
    for (size_t i = 1; i < n; i++, have++) {
        if ((s[i] & 0xC0) != 0x80)
            return false;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    uint32_t lo = cp, hi = cp;
    for (size_t k = have; k < need; k++) {
        lo <<= 6;
        hi = hi << 6 | 0x3F;
    }
    uint32_t a = lo > min ? lo : min, z = hi < max ? hi : max;
    return a <= z && !(a >= 0xD800 && z <= 0xDFFF);
}

static size_t seq_len(uint8_t b)
{
    if (b >= 0xF0 && b <= 0xF7)
        return 4;
    if (b >= 0xE0 && b <= 0xEF)
        return 3;
    if (b >= 0xC0 && b <= 0xDF)
        return 2;
    return 1;
}

/* Index of the first byte that makes the text invalid, or -1; *complete
 * tells whether a valid text ends on a character boundary. */
static long ref_fail_pos(const uint8_t *s, size_t n, bool *complete)
{
    size_t i = 0;

    while (i < n) {
        size_t len = seq_len(s[i]);
        for (size_t j = 1; j <= len && i + j <= n; j++)
            if (!seq_prefix_ok(s + i, j))
                return (long)(i + j - 1);
        if (i + len > n) {
            *complete = false;
            return -1;
        }
        i += len;
    }
    *complete = true;
    return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t rng = data[0] | 0x5a5a00u;
    data++;
    size--;

    /* An exact-size copy so any read past the end is caught. */
    uint8_t *s = malloc(size ? size : 1);
    if (s == NULL)
        abort();
    memcpy(s, data, size);

    bool complete = false;
    long bad = ref_fail_pos(s, size, &complete);
    bool want = bad < 0 && complete;
    if (cd_utf8_valid(s, size) != want)
        abort();

    cd_utf8 u;
    cd_utf8_init(&u);
    bool ok = true;
    for (size_t off = 0; off < size;) {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        size_t n = rng % 24;
        if (n > size - off)
            n = size - off;
        bool fed = cd_utf8_feed(&u, s + off, n);
        if (ok && !fed) {
            /* The first failing piece holds the first bad byte. */
            if (bad < 0 || (size_t)bad < off || (size_t)bad >= off + n)
                abort();
            ok = false;
        } else if (!ok && fed) {
            abort();    /* rejection is sticky */
        }
        off += n;
    }
    if (ok && bad >= 0)
        abort();
    if ((ok && cd_utf8_is_complete(&u)) != want)
        abort();
    free(s);
    return 0;
}
