/* test_utf8.c - the UTF-8 validator against Markus Kuhn's stress-test
 * vectors (the ones Autobahn group 6 sends), exhaustive short sequences, and
 * an independent reference that also predicts the exact fail-fast byte. */
#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "test.h"
#include "utf8.h"

/* Reference: is s[0..n) a prefix of some valid UTF-8 string?  Decodes by
 * arithmetic on code points, not by byte ranges, so it shares nothing with
 * the automaton.  *complete says whether it ends on a boundary. */
static bool ref_prefix_ok(const uint8_t *s, size_t n, bool *complete)
{
    size_t i = 0;

    while (i < n) {
        uint8_t b = s[i++];
        size_t need, have = 0;
        uint32_t cp, min, max;

        if (b < 0x80)
            continue;
        if ((b & 0xE0) == 0xC0) {
            need = 1, cp = b & 0x1F, min = 0x80, max = 0x7FF;
        } else if ((b & 0xF0) == 0xE0) {
            need = 2, cp = b & 0x0F, min = 0x800, max = 0xFFFF;
        } else if ((b & 0xF8) == 0xF0) {
            need = 3, cp = b & 0x07, min = 0x10000, max = 0x10FFFF;
        } else {
            return false;
        }
        for (; have < need && i < n; have++, i++) {
            if ((s[i] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i] & 0x3F);
        }
        /* Completions fill the missing six-bit groups freely: [lo, hi]. */
        uint32_t lo = cp, hi = cp;
        for (size_t k = have; k < need; k++) {
            lo = lo << 6;
            hi = hi << 6 | 0x3F;
        }
        uint32_t a = lo > min ? lo : min, z = hi < max ? hi : max;
        if (a > z)
            return false;
        if (a >= 0xD800 && z <= 0xDFFF)
            return false;
        if (have < need) {
            *complete = false;
            return true;
        }
    }
    *complete = true;
    return true;
}

static bool ref_valid(const uint8_t *s, size_t n)
{
    bool complete;
    return ref_prefix_ok(s, n, &complete) && complete;
}

/* Index of the first byte after which no completion is valid, or -1. */
static long ref_fail_at(const uint8_t *s, size_t n)
{
    bool complete;
    for (size_t i = 1; i <= n; i++)
        if (!ref_prefix_ok(s, i, &complete))
            return (long)i - 1;
    return -1;
}

/* Index of the byte at which a byte-at-a-time feed first fails, or -1. */
static long feed_fail_at(const uint8_t *s, size_t n)
{
    cd_utf8 u;
    cd_utf8_init(&u);
    for (size_t i = 0; i < n; i++) {
        if (!cd_utf8_feed(&u, s + i, 1)) {
            /* Rejection is sticky. */
            if (cd_utf8_feed(&u, (const uint8_t *)"a", 1))
                return -2;
            return (long)i;
        }
    }
    return -1;
}

/* Every check for one input: one-shot, every two-way split, bytewise with
 * the fail position, all against the reference. */
static void check_all(const uint8_t *s, size_t n, int expect_valid)
{
    bool want = ref_valid(s, n);

    if (expect_valid >= 0 && want != (expect_valid != 0)) {
        TEST_FAIL_AT(__FILE__, __LINE__, "reference disagrees with vector");
        return;
    }
    CHECK_EQ(cd_utf8_valid(s, n), want);
    for (size_t cut = 0; cut <= n; cut++) {
        cd_utf8 u;
        cd_utf8_init(&u);
        bool ok = cd_utf8_feed(&u, s, cut);
        ok = ok && cd_utf8_feed(&u, s + cut, n - cut);
        ok = ok && cd_utf8_is_complete(&u);
        if (ok != want) {
            TEST_FAIL_AT(__FILE__, __LINE__, "split at %zu of %zu: %d != %d",
                         cut, n, ok, want);
            return;
        }
    }
    CHECK_EQ(feed_fail_at(s, n), ref_fail_at(s, n));
}

#define V(valid, str) {valid, sizeof(str) - 1, (const uint8_t *)str}

typedef struct vec {
    int valid;
    size_t len;
    const uint8_t *s;
} vec;

/* Markus Kuhn's UTF-8 decoder capability and stress test, by section. */
static const vec kuhn[] = {
    /* 1: correct text ("kosme" in Greek) and friends */
    V(1, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"),
    V(1, "hello\x24world"),
    V(1, "hello\xc2\xa2world"),
    V(1, "hello\xe2\x82\xacworld"),
    V(1, "hello\xf0\xa4\xad\xa2world"),
    /* 2.1 first sequence of each length */
    V(1, "\x00"),
    V(1, "\xc2\x80"),
    V(1, "\xe0\xa0\x80"),
    V(1, "\xf0\x90\x80\x80"),
    V(0, "\xf8\x88\x80\x80\x80"),
    V(0, "\xfc\x84\x80\x80\x80\x80"),
    /* 2.2 last sequence of each length */
    V(1, "\x7f"),
    V(1, "\xdf\xbf"),
    V(1, "\xef\xbf\xbf"),
    V(1, "\xf4\x8f\xbf\xbf"),
    V(0, "\xf7\xbf\xbf\xbf"),
    V(0, "\xfb\xbf\xbf\xbf\xbf"),
    V(0, "\xfd\xbf\xbf\xbf\xbf\xbf"),
    /* 2.3 other boundaries */
    V(1, "\xed\x9f\xbf"),
    V(1, "\xee\x80\x80"),
    V(1, "\xef\xbf\xbd"),
    V(0, "\xf4\x90\x80\x80"),
    /* 3.1 unexpected continuation bytes */
    V(0, "\x80"),
    V(0, "\xbf"),
    V(0, "\x80\xbf"),
    V(0, "\x80\xbf\x80"),
    V(0, "\x80\xbf\x80\xbf"),
    V(0, "\x80\xbf\x80\xbf\x80"),
    V(0, "\x80\xbf\x80\xbf\x80\xbf"),
    /* 3.3 last continuation byte missing */
    V(0, "\xc0"),
    V(0, "\xe0\x80"),
    V(0, "\xf0\x80\x80"),
    V(0, "\xf8\x80\x80\x80"),
    V(0, "\xfc\x80\x80\x80\x80"),
    V(0, "\xdf"),
    V(0, "\xef\xbf"),
    V(0, "\xf7\xbf\xbf"),
    V(0, "\xfb\xbf\xbf\xbf"),
    V(0, "\xfd\xbf\xbf\xbf\xbf"),
    /* 3.4 concatenated incomplete sequences */
    V(0, "\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80\xfc\x80\x80\x80\x80"
         "\xdf\xef\xbf\xf7\xbf\xbf\xfb\xbf\xbf\xbf\xfd\xbf\xbf\xbf\xbf"),
    /* 3.5 impossible bytes */
    V(0, "\xfe"),
    V(0, "\xff"),
    V(0, "\xfe\xfe\xff\xff"),
    /* 4.1 overlong ASCII */
    V(0, "\xc0\xaf"),
    V(0, "\xe0\x80\xaf"),
    V(0, "\xf0\x80\x80\xaf"),
    V(0, "\xf8\x80\x80\x80\xaf"),
    V(0, "\xfc\x80\x80\x80\x80\xaf"),
    /* 4.2 maximum overlongs */
    V(0, "\xc1\xbf"),
    V(0, "\xe0\x9f\xbf"),
    V(0, "\xf0\x8f\xbf\xbf"),
    V(0, "\xf8\x87\xbf\xbf\xbf"),
    V(0, "\xfc\x83\xbf\xbf\xbf\xbf"),
    /* 4.3 overlong NUL */
    V(0, "\xc0\x80"),
    V(0, "\xe0\x80\x80"),
    V(0, "\xf0\x80\x80\x80"),
    V(0, "\xf8\x80\x80\x80\x80"),
    V(0, "\xfc\x80\x80\x80\x80\x80"),
    /* 5.1 single surrogates */
    V(0, "\xed\xa0\x80"),
    V(0, "\xed\xad\xbf"),
    V(0, "\xed\xae\x80"),
    V(0, "\xed\xaf\xbf"),
    V(0, "\xed\xb0\x80"),
    V(0, "\xed\xbe\x80"),
    V(0, "\xed\xbf\xbf"),
    /* 5.2 paired surrogates */
    V(0, "\xed\xa0\x80\xed\xb0\x80"),
    V(0, "\xed\xa0\x80\xed\xbf\xbf"),
    V(0, "\xed\xad\xbf\xed\xb0\x80"),
    V(0, "\xed\xad\xbf\xed\xbf\xbf"),
    V(0, "\xed\xae\x80\xed\xb0\x80"),
    V(0, "\xed\xae\x80\xed\xbf\xbf"),
    V(0, "\xed\xaf\xbf\xed\xb0\x80"),
    V(0, "\xed\xaf\xbf\xed\xbf\xbf"),
    /* 5.3 noncharacters and specials are valid UTF-8 (RFC 3629) */
    V(1, "\xef\xbf\xbe"),
    V(1, "\xef\xbf\xbf"),
    V(1, "\xf0\x9f\xbf\xbe"),
    V(1, "\xf3\xbf\xbf\xbf"),
    V(1, "\xf4\x8f\xbf\xbe"),
    V(1, "\xef\xbf\xb9"),
    V(1, "\xef\xbf\xbc"),
};

TEST(test_kuhn_vectors)
{
    for (size_t i = 0; i < CD_ARRAY_LEN(kuhn); i++)
        check_all(kuhn[i].s, kuhn[i].len, kuhn[i].valid);
}

TEST(test_kuhn_ranges)
{
    uint8_t s[200];
    size_t n = 0;

    /* 3.1: all 64 continuation bytes in a row. */
    for (int b = 0x80; b <= 0xbf; b++)
        s[n++] = (uint8_t)b;
    check_all(s, n, 0);
    /* 3.2: lonely start bytes, each followed by a space. */
    static const int groups[][2] = {
        {0xc0, 0xdf}, {0xe0, 0xef}, {0xf0, 0xf7}, {0xf8, 0xfb}, {0xfc, 0xfd}};
    for (size_t g = 0; g < 5; g++) {
        n = 0;
        for (int b = groups[g][0]; b <= groups[g][1]; b++) {
            s[n++] = (uint8_t)b;
            s[n++] = ' ';
        }
        check_all(s, n, 0);
    }
    /* All prefixes of the Greek word: valid exactly on boundaries. */
    const uint8_t *kosme = kuhn[0].s;
    for (size_t i = 1; i <= kuhn[0].len; i++)
        check_all(kosme, i, -1);
}

/* The fail-fast positions Autobahn 6.4.x depends on. */
TEST(test_fail_fast_positions)
{
    static const struct {
        const char *s;
        size_t len;
        long at;
    } cases[] = {
        {"\xe0\x80", 2, 1},               /* overlong: at the 2nd byte */
        {"\xed\xa0", 2, 1},               /* surrogate */
        {"\xf4\x90", 2, 1},               /* above U+10FFFF */
        {"\xf5", 1, 0},
        {"\xc0", 1, 0},
        {"\xc1", 1, 0},
        {"\xff", 1, 0},
        {"\x80", 1, 0},
        {"ab\xc2" "A", 4, 3},             /* lead cut short by ASCII */
        {"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80", 15, 12},
        {"\x65\x64\x69\x74\x65\x64\xed\xa0\x80", 9, 7},
        {"\xf0\x8f", 2, 1},
        {"\xe0\x9f", 2, 1},
        {"\xf4\x8f\xbf\xbf", 4, -1},
        {"\xf4\x8f\xbf", 3, -1},          /* incomplete, but not invalid yet */
    };
    for (size_t i = 0; i < CD_ARRAY_LEN(cases); i++) {
        const uint8_t *s = (const uint8_t *)cases[i].s;
        CHECK_EQ(feed_fail_at(s, cases[i].len), cases[i].at);
        CHECK_EQ(ref_fail_at(s, cases[i].len), cases[i].at);
    }
}

static size_t encode(uint32_t cp, uint8_t *out, size_t len)
{
    /* len forces an encoding length, so overlongs can be built too. */
    switch (len) {
    case 1:
        out[0] = (uint8_t)cp;
        return 1;
    case 2:
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    case 3:
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    default:
        out[0] = (uint8_t)(0xF0 | cp >> 18);
        out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[3] = (uint8_t)(0x80 | (cp & 0x3F));
        return 4;
    }
}

/* Every code point in its shortest form is valid except the surrogates;
 * every overlong form is invalid. */
TEST(test_all_code_points)
{
    uint8_t b[4];
    long bad = 0;

    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        size_t len = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
        size_t n = encode(cp, b, len);
        bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
        if (cd_utf8_valid(b, n) == surrogate)
            bad++;
        if (surrogate && feed_fail_at(b, n) != 1)
            bad++;
        for (size_t longer = len + 1; longer <= 4; longer++) {
            if (longer == 4 && cp >= 0x10000)
                break;
            n = encode(cp, b, longer);
            if (cd_utf8_valid(b, n))
                bad++;
        }
    }
    CHECK_EQ(bad, 0);
    /* Just past the top: F4 90 80 80 (U+110000) fails at its 2nd byte. */
    CHECK_EQ(feed_fail_at((const uint8_t *)"\xf4\x90\x80\x80", 4), 1);
}

/* All sequences of up to three bytes, with the interesting leads. */
TEST(test_exhaustive_short)
{
    uint8_t s[3];
    long bad = 0;

    for (int a = 0; a < 256; a++) {
        s[0] = (uint8_t)a;
        if (cd_utf8_valid(s, 1) != ref_valid(s, 1))
            bad++;
        for (int b = 0; b < 256; b++) {
            s[1] = (uint8_t)b;
            if (cd_utf8_valid(s, 2) != ref_valid(s, 2))
                bad++;
            if (feed_fail_at(s, 2) != ref_fail_at(s, 2))
                bad++;
            if (a < 0xE0 || a > 0xF4)
                continue;
            for (int c = 0; c < 256; c++) {
                s[2] = (uint8_t)c;
                if (feed_fail_at(s, 3) != ref_fail_at(s, 3))
                    bad++;
            }
        }
    }
    CHECK_EQ(bad, 0);
}

/* The eight-byte ASCII path: a bad or multibyte character at every position
 * and alignment must be seen exactly where it is. */
TEST(test_ascii_fast_path)
{
    static const char *inserts[] = {"\x80", "\xc3\xa9", "\xe2\x82\xac",
                                    "\xf0\x9f\x98\x80", "\xed\xa0\x80", "\xc3"};
    uint8_t buf[80];

    for (size_t k = 0; k < CD_ARRAY_LEN(inserts); k++) {
        size_t ilen = strlen(inserts[k]);
        for (size_t align = 0; align < 8; align++) {
            for (size_t at = 0; at <= 40; at++) {
                uint8_t *s = buf + align;
                size_t n = 0;
                for (size_t i = 0; i < at; i++)
                    s[n++] = (uint8_t)('a' + i % 26);
                memcpy(s + n, inserts[k], ilen);
                n += ilen;
                for (size_t i = 0; i < 17; i++)
                    s[n++] = 'z';
                check_all(s, n, -1);
            }
        }
    }
    /* Pure ASCII of every length. */
    memset(buf, 'x', sizeof(buf));
    for (size_t n = 0; n <= sizeof(buf); n++)
        CHECK(cd_utf8_valid(buf, n));
    /* DEL and NUL are ASCII. */
    CHECK(cd_utf8_valid((const uint8_t *)"\x7f\x00\x7f\x00\x7f\x00\x7f\x00\x7f", 9));
}

/* Incremental use as Autobahn's own validator test does it. */
TEST(test_incremental_state)
{
    cd_utf8 u;

    cd_utf8_init(&u);
    CHECK(cd_utf8_is_complete(&u));
    CHECK(cd_utf8_feed(&u, (const uint8_t *)"\x65\x64\x69\x74\x65\x64\xed", 7));
    CHECK(!cd_utf8_is_complete(&u));
    CHECK(!cd_utf8_feed(&u, (const uint8_t *)"\xa0\x80", 2));
    CHECK(!cd_utf8_is_complete(&u));
    /* Sticky: nothing brings it back. */
    CHECK(!cd_utf8_feed(&u, (const uint8_t *)"abc", 3));
    CHECK(!cd_utf8_feed(&u, NULL, 0));

    cd_utf8_init(&u);
    CHECK(cd_utf8_feed(&u, (const uint8_t *)"\xf0", 1));
    CHECK(cd_utf8_feed(&u, (const uint8_t *)"\x9f", 1));
    CHECK(cd_utf8_feed(&u, NULL, 0));
    CHECK(cd_utf8_feed(&u, (const uint8_t *)"\x98", 1));
    CHECK(!cd_utf8_is_complete(&u));
    CHECK(cd_utf8_feed(&u, (const uint8_t *)"\x80", 1));
    CHECK(cd_utf8_is_complete(&u));
    CHECK(cd_utf8_valid(NULL, 0));
}

int main(void)
{
    RUN(test_kuhn_vectors);
    RUN(test_kuhn_ranges);
    RUN(test_fail_fast_positions);
    RUN(test_all_code_points);
    RUN(test_exhaustive_short);
    RUN(test_ascii_fast_path);
    RUN(test_incremental_state);
    return test_main_end();
}
