/* json.c - a one-pass JSON reader that builds no tree, and a JSON writer.
 *
 * The reader is an explicit state machine (value, key, after-value) over
 * the input with a bit stack of open containers, so depth costs no
 * recursion and no allocation.  Strings are skipped eight bytes at a time
 * while no byte needs a look; UTF-8, escapes and the number grammar are
 * checked inline (RFC 8259).  Every value it hands out is a span of the
 * input.  The iterators and accessors work on spans the reader produced:
 * they re-scan them without re-validating, and every loop is bounded by
 * the span's end, so a bad span gives a wrong answer, never a bad read.
 *
 * The writer appends to a cd_bytes or to a fixed buffer; its only state is
 * a 32-level bit stack, and its first error is sticky. */
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "conduit.h"

/* ------------------------------------------------------------------ */
/* Byte classes. */

enum {
    PL = 1,     /* may appear raw in a string with no further look */
    WS = 2,     /* insignificant whitespace, RFC 8259 §2 */
};

static const uint8_t cls[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  WS, WS, 0,  0,  WS, 0,  0,   /* 00..0F */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,   /* 10..1F */
    PL | WS, PL, 0, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, /* 20..2F */
    PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL,  /* 30..3F */
    PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL,  /* 40..4F */
    PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, 0,  PL, PL, PL,  /* 50..5F */
    PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL,  /* 60..6F */
    PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL, PL,  /* 70..7F */
    /* 80..FF: 0, UTF-8 is checked sequence by sequence */
};

static const unsigned char *skip_ws(const unsigned char *s, const unsigned char *end)
{
    while (s < end && (cls[*s] & WS))
        s++;
    return s;
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* True when some byte of x is below 0x20, above 0x7F, '"' or '\\'.  Each
 * test is the "has a zero byte" trick; a borrow can only flag bytes above
 * a byte that really matches, so "some byte" is exact. */
static bool word_has_special(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
    uint64_t low = (x - ones * 0x20) & ~x;
    uint64_t quote = (q - ones) & ~q;
    uint64_t bslash = (b - ones) & ~b;
    return ((low | quote | bslash | x) & highs) != 0;
}

/* The well-formed UTF-8 sequence at s[0..n) (Unicode Table 3-7: no
 * overlongs, no surrogates, nothing above U+10FFFF): returns its length, or
 * 0 with *bad = the length of its maximal ill-formed subpart (>= 1). */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t need;

    *bad = 1;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < 2 || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i <= need; i++) {
        if (i >= n || (s[i] & 0xC0) != 0x80) {
            *bad = i;
            return 0;
        }
    }
    return need + 1;
}

static size_t utf8_encode(uint32_t cp, unsigned char u[4])
{
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        u[0] = (unsigned char)(0xC0 | cp >> 6);
        u[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        u[0] = (unsigned char)(0xE0 | cp >> 12);
        u[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    u[0] = (unsigned char)(0xF0 | cp >> 18);
    u[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    u[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    u[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Four hex digits at s (bounded by end) into *cp. */
static bool hex4(const unsigned char *s, const unsigned char *end, uint32_t *cp)
{
    uint32_t v = 0;

    if (end - s < 4)
        return false;
    for (int i = 0; i < 4; i++) {
        unsigned char c = s[i];
        if (c >= '0' && c <= '9')
            v = v << 4 | (uint32_t)(c - '0');
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            v = v << 4 | (uint32_t)((c | 0x20) - 'a' + 10);
        else
            return false;
    }
    *cp = v;
    return true;
}

/* The escape at s (s[0] == '\\') as a code point; returns the byte after
 * it, or NULL when it is not a valid RFC 8259 §7 escape.  A \u escape of a
 * surrogate is valid only as a high one followed by a low one: alone it
 * names no character and cannot be written as UTF-8. */
static const unsigned char *escape_cp(const unsigned char *s, const unsigned char *end,
                                      uint32_t *cp)
{
    if (end - s < 2)
        return NULL;
    switch (s[1]) {
    case '"':
    case '\\':
    case '/':
        *cp = s[1];
        return s + 2;
    case 'b':
        *cp = '\b';
        return s + 2;
    case 'f':
        *cp = '\f';
        return s + 2;
    case 'n':
        *cp = '\n';
        return s + 2;
    case 'r':
        *cp = '\r';
        return s + 2;
    case 't':
        *cp = '\t';
        return s + 2;
    case 'u':
        break;
    default:
        return NULL;
    }
    uint32_t hi, lo;
    if (!hex4(s + 2, end, &hi))
        return NULL;
    s += 6;
    if (hi < 0xD800 || hi > 0xDFFF) {
        *cp = hi;
        return s;
    }
    if (hi > 0xDBFF || end - s < 6 || s[0] != '\\' || s[1] != 'u' || !hex4(s + 2, end, &lo))
        return NULL;
    if (lo < 0xDC00 || lo > 0xDFFF)
        return NULL;
    *cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
    return s + 6;
}

/* ------------------------------------------------------------------ */
/* Validation. */

typedef struct reader {
    const unsigned char *start;
    const unsigned char *end;
    const char *reason;         /* set on failure */
    const unsigned char *at;    /* where it failed */
} reader;

static const unsigned char *fail(reader *r, const unsigned char *at, const char *reason)
{
    r->reason = reason;
    r->at = at;
    return NULL;
}

static int invalid(reader *r, const unsigned char *at, const char *reason)
{
    fail(r, at, reason);
    return CD_JSON_INVALID;
}

/* Why the escape at s failed. */
static const unsigned char *bad_escape(reader *r, const unsigned char *s)
{
    uint32_t cp;

    if (r->end - s < 2)
        return fail(r, r->end, "unterminated string");
    if (s[1] != 'u')
        return fail(r, s, "invalid escape");
    if (hex4(s + 2, r->end, &cp) && cp >= 0xD800 && cp <= 0xDFFF)
        return fail(r, s, "unpaired surrogate escape");
    return fail(r, s, "invalid \\u escape");
}

/* The string whose first content byte is at s.  Returns its closing quote,
 * or NULL.  *has_escape tells whether a backslash was seen. */
static const unsigned char *scan_string(reader *r, const unsigned char *s, bool *has_escape)
{
    const unsigned char *end = r->end;

    for (;;) {
        while (end - s >= 8) {
            uint64_t x;
            memcpy(&x, s, 8);
            if (word_has_special(x))
                break;
            s += 8;
        }
        while (s < end && (cls[*s] & PL))
            s++;
        if (s >= end)
            return fail(r, s, "unterminated string");
        unsigned char c = *s;
        if (c == '"')
            return s;
        if (c == '\\') {
            uint32_t cp;
            const unsigned char *next = escape_cp(s, end, &cp);
            if (next == NULL)
                return bad_escape(r, s);
            *has_escape = true;
            s = next;
            continue;
        }
        /* RFC 8259 §7: control characters must be escaped. */
        if (c < 0x20)
            return fail(r, s, "control character in string");
        size_t bad, n = utf8_seq(s, (size_t)(end - s), &bad);
        if (n == 0)
            return fail(r, s, "invalid UTF-8");
        s += n;
    }
}

/* RFC 8259 §6: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static const unsigned char *scan_number(reader *r, const unsigned char *s)
{
    const unsigned char *end = r->end;

    if (*s == '-')
        s++;
    if (s >= end || !is_digit(*s))
        return fail(r, s, "invalid number");
    if (*s++ != '0') {
        while (s < end && is_digit(*s))
            s++;
    }
    if (s < end && *s == '.') {
        s++;
        if (s >= end || !is_digit(*s))
            return fail(r, s, "invalid number");
        while (s < end && is_digit(*s))
            s++;
    }
    if (s < end && (*s | 0x20) == 'e') {
        s++;
        if (s < end && (*s == '+' || *s == '-'))
            s++;
        if (s >= end || !is_digit(*s))
            return fail(r, s, "invalid number");
        while (s < end && is_digit(*s))
            s++;
    }
    return s;
}

static cd_json_type type_of(unsigned char c)
{
    switch (c) {
    case '{':
        return CD_JSON_OBJECT;
    case '[':
        return CD_JSON_ARRAY;
    case '"':
        return CD_JSON_STRING;
    case 't':
        return CD_JSON_TRUE;
    case 'f':
        return CD_JSON_FALSE;
    case 'n':
        return CD_JSON_NULL;
    default:
        return c == '-' || is_digit(c) ? CD_JSON_NUMBER : CD_JSON_NONE;
    }
}

static bool name_eq(const char *name, const unsigned char *s, const unsigned char *end,
                    bool has_escape, bool fold);

/* The requested field a top-level key names, or -1.  A name seen before
 * sets *dup and is not matched again. */
static ptrdiff_t match_field(cd_json_field *fields, size_t n_fields, const unsigned char *k,
                             const unsigned char *kend, bool has_escape, bool *dup)
{
    for (size_t i = 0; i < n_fields; i++) {
        if (!name_eq(fields[i].name, k, kend, has_escape, false))
            continue;
        if (fields[i].value.type != CD_JSON_NONE) {
            *dup = true;
            return -1;
        }
        return (ptrdiff_t)i;
    }
    return -1;
}

static const unsigned char *scan_literal(reader *r, const unsigned char *s, const char *lit,
                                         size_t n)
{
    if ((size_t)(r->end - s) < n || memcmp(s, lit, n) != 0)
        return fail(r, s, "invalid literal");
    return s + n;
}

static bool bit_get(const uint64_t *bits, unsigned i)
{
    return bits[i / 64] >> i % 64 & 1;
}

static void bit_put(uint64_t *bits, unsigned i, bool v)
{
    if (v)
        bits[i / 64] |= 1ull << i % 64;
    else
        bits[i / 64] &= ~(1ull << i % 64);
}

/* One JSON text.  Fills fields (depth-1 members) when the top level is an
 * object.  Returns CD_JSON_OK or CD_JSON_INVALID. */
static int parse(reader *r, unsigned max_depth, cd_json_field *fields, size_t n_fields,
                 bool *dup, cd_json_value *top)
{
    const unsigned char *s, *end = r->end, *top_start, *member = NULL;
    uint64_t is_object[CD_JSON_MAX_DEPTH / 64] = {0};  /* bit d: container at depth d+1 */
    unsigned depth = 0;
    ptrdiff_t pending = -1;     /* field whose value comes next at depth 1 */

    if (max_depth > CD_JSON_MAX_DEPTH)
        max_depth = CD_JSON_MAX_DEPTH;
    s = top_start = skip_ws(r->start, end);

value:
    if (s >= end)
        goto eof;
    if (depth == 1)
        member = s;
    switch (*s) {
    case '{':
    case '[':
        if (depth >= max_depth)
            return invalid(r, s, "nesting too deep");
        bit_put(is_object, depth, *s == '{');
        depth++;
        s = skip_ws(s + 1, end);
        if (s < end && *s == (bit_get(is_object, depth - 1) ? '}' : ']')) {
            s++;
            depth--;
            goto after;
        }
        if (bit_get(is_object, depth - 1))
            goto key;
        goto value;
    case '"': {
        bool esc = false;
        const unsigned char *q = scan_string(r, s + 1, &esc);
        if (q == NULL)
            return CD_JSON_INVALID;
        s = q + 1;
        goto after;
    }
    case 't':
        s = scan_literal(r, s, "true", 4);
        break;
    case 'f':
        s = scan_literal(r, s, "false", 5);
        break;
    case 'n':
        s = scan_literal(r, s, "null", 4);
        break;
    default:
        if (*s != '-' && !is_digit(*s))
            return invalid(r, s, "unexpected character");
        s = scan_number(r, s);
        break;
    }
    if (s == NULL)
        return CD_JSON_INVALID;
    goto after;

key:
    if (s >= end)
        goto eof;
    if (*s != '"')
        return invalid(r, s, "expected a string key");
    {
        bool esc = false;
        const unsigned char *q = scan_string(r, s + 1, &esc);
        if (q == NULL)
            return CD_JSON_INVALID;
        if (depth == 1 && n_fields > 0)
            pending = match_field(fields, n_fields, s + 1, q, esc, dup);
        s = skip_ws(q + 1, end);
    }
    if (s >= end)
        goto eof;
    if (*s != ':')
        return invalid(r, s, "expected ':'");
    s = skip_ws(s + 1, end);
    goto value;

after:
    /* A value ended just before s.  Back at depth 1 it is a top-level
     * member's, which began at `member` (anything nested in it ran at depth
     * 2 or more and did not move `member`). */
    if (depth == 1 && pending >= 0) {
        fields[pending].value = (cd_json_value){type_of(*member), (const char *)member,
                                                (size_t)(s - member)};
        pending = -1;
    }
    if (depth == 0)
        goto done;
    s = skip_ws(s, end);
    if (s >= end)
        goto eof;
    {
        bool in_object = bit_get(is_object, depth - 1);
        if (*s == ',') {
            s = skip_ws(s + 1, end);
            if (in_object)
                goto key;
            goto value;
        }
        if (*s == (in_object ? '}' : ']')) {
            s++;
            depth--;
            goto after;
        }
        return invalid(r, s, in_object ? "expected ',' or '}'" : "expected ',' or ']'");
    }

done:
    *top = (cd_json_value){type_of(*top_start), (const char *)top_start,
                           (size_t)(s - top_start)};
    s = skip_ws(s, end);
    if (s != end)
        return invalid(r, s, "unexpected data after the value");
    return CD_JSON_OK;

eof:
    return invalid(r, end, "unexpected end of input");
}

static void clear_fields(cd_json_field *fields, size_t n_fields)
{
    for (size_t i = 0; i < n_fields; i++)
        fields[i].value = (cd_json_value){CD_JSON_NONE, NULL, 0};
}

static int run(const char *p, size_t len, unsigned max_depth, cd_json_field *fields,
               size_t n_fields, bool *dup, cd_json_value *top, cd_json_error *err)
{
    if (p == NULL) {
        p = "";
        len = 0;
    }
    reader r = {(const unsigned char *)p, (const unsigned char *)p + len, NULL, NULL};

    *top = (cd_json_value){CD_JSON_NONE, NULL, 0};
    if (err != NULL)
        *err = (cd_json_error){NULL, 0};
    int rc = parse(&r, max_depth, fields, n_fields, dup, top);
    if (rc != CD_JSON_OK && err != NULL)
        *err = (cd_json_error){r.reason, (size_t)(r.at - r.start)};
    return rc;
}

int cd_json_object_fields(const char *p, size_t len, cd_json_field *fields, size_t n_fields,
                          unsigned max_depth, cd_json_error *err)
{
    cd_json_value top;
    bool dup = false;

    clear_fields(fields, n_fields);
    int rc = run(p, len, max_depth, fields, n_fields, &dup, &top, err);
    if (rc == CD_JSON_OK && top.type != CD_JSON_OBJECT)
        rc = CD_JSON_NOT_OBJECT;
    else if (rc == CD_JSON_OK && dup)
        rc = CD_JSON_DUPLICATE;
    if (rc != CD_JSON_OK)
        clear_fields(fields, n_fields);
    return rc;
}

int cd_json_validate(const char *p, size_t len, unsigned max_depth, cd_json_value *out,
                     cd_json_error *err)
{
    bool dup = false;
    cd_json_value top;

    int rc = run(p, len, max_depth, NULL, 0, &dup, &top, err);
    if (out != NULL)
        *out = rc == CD_JSON_OK ? top : (cd_json_value){CD_JSON_NONE, NULL, 0};
    return rc;
}

/* ------------------------------------------------------------------ */
/* Reading validated values. */

/* The content of a STRING value, between its quotes. */
static bool string_content(const cd_json_value *v, const unsigned char **s,
                           const unsigned char **e)
{
    if (v == NULL || v->type != CD_JSON_STRING || v->raw == NULL || v->len < 2 ||
        v->raw[0] != '"' || v->raw[v->len - 1] != '"')
        return false;
    *s = (const unsigned char *)v->raw + 1;
    *e = (const unsigned char *)v->raw + v->len - 1;
    return true;
}

/* Decode one unit of string content at *ps (a raw byte, or one escape)
 * into u; returns its byte count, or 0 for a malformed escape. */
static size_t decode_unit(const unsigned char **ps, const unsigned char *end, unsigned char u[4])
{
    const unsigned char *s = *ps;
    uint32_t cp;

    if (*s != '\\') {
        u[0] = *s;
        *ps = s + 1;
        return 1;
    }
    const unsigned char *next = escape_cp(s, end, &cp);
    if (next == NULL)
        return 0;
    *ps = next;
    return utf8_encode(cp, u);
}

static unsigned char ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

/* Does the string content s[0..end) decode to `name`?  Escapes are decoded
 * a unit at a time, so nothing is allocated.  A decoded NUL never matches:
 * `name` ends at its first NUL. */
static bool name_eq(const char *name, const unsigned char *s, const unsigned char *end,
                    bool has_escape, bool fold)
{
    const unsigned char *n = (const unsigned char *)name;

    if (name == NULL)
        return false;
    if (!has_escape && !fold) {
        for (; s < end; s++, n++) {
            if (*n == '\0' || *n != *s)
                return false;
        }
        return *n == '\0';
    }
    while (s < end) {
        unsigned char u[4];
        size_t k = decode_unit(&s, end, u);
        if (k == 0)
            return false;
        for (size_t i = 0; i < k; i++, n++) {
            if (*n == '\0')
                return false;
            if (fold ? ascii_lower(u[i]) != ascii_lower(*n) : u[i] != *n)
                return false;
        }
    }
    return *n == '\0';
}

bool cd_json_str_eq(const cd_json_value *v, const char *lit)
{
    const unsigned char *s, *e;

    if (!string_content(v, &s, &e))
        return false;
    return name_eq(lit, s, e, memchr(s, '\\', (size_t)(e - s)) != NULL, false);
}

bool cd_json_str_eq_ci(const cd_json_value *v, const char *lit)
{
    const unsigned char *s, *e;

    if (!string_content(v, &s, &e))
        return false;
    return name_eq(lit, s, e, true, true);
}

static int decode_string(const cd_json_value *v, char *out, size_t cap, size_t *out_len,
                         bool refuse_nul)
{
    const unsigned char *s, *e;
    size_t j = 0;

    if (out_len != NULL)
        *out_len = 0;
    if (cap > 0)
        out[0] = '\0';
    if (!string_content(v, &s, &e))
        return CONDUIT_EINVAL;
    if (cap == 0)
        return CONDUIT_ELIMIT;
    /* Invariant: j < cap, so out[j] can take the NUL. */
    while (s < e) {
        /* Copy the run up to the next escape in one go. */
        const unsigned char *bs = memchr(s, '\\', (size_t)(e - s));
        size_t run = (size_t)((bs != NULL ? bs : e) - s);
        if (refuse_nul && memchr(s, '\0', run) != NULL)
            goto invalid;
        if (run >= cap - j)
            goto too_long;
        memcpy(out + j, s, run);
        j += run;
        s += run;
        if (s == e)
            break;
        unsigned char u[4];
        size_t k = decode_unit(&s, e, u);
        if (k == 0 || (refuse_nul && u[0] == '\0'))
            goto invalid;
        if (k >= cap - j)
            goto too_long;
        memcpy(out + j, u, k);
        j += k;
    }
    out[j] = '\0';
    if (out_len != NULL)
        *out_len = j;
    return 0;

invalid:
    out[0] = '\0';
    return CONDUIT_EINVAL;
too_long:
    out[0] = '\0';
    return CONDUIT_ELIMIT;
}

int cd_json_string(const cd_json_value *v, char *out, size_t cap, size_t *out_len)
{
    return decode_string(v, out, cap, out_len, false);
}

int cd_json_name(const cd_json_value *v, char *out, size_t cap, size_t *out_len)
{
    return decode_string(v, out, cap, out_len, true);
}

/* Sign and magnitude of an integer NUMBER. */
static int integer_parts(const cd_json_value *v, bool *neg, uint64_t *mag)
{
    if (v == NULL || v->type != CD_JSON_NUMBER || v->raw == NULL || v->len == 0)
        return CONDUIT_EINVAL;
    const unsigned char *s = (const unsigned char *)v->raw, *e = s + v->len;
    *neg = *s == '-';
    if (*neg)
        s++;
    if (s == e || (*s == '0' && e - s > 1))
        return CONDUIT_EINVAL;
    /* Check the whole text first: "1e400" is not an integer at all, which
     * matters more than its size. */
    for (const unsigned char *t = s; t < e; t++) {
        if (!is_digit(*t))
            return CONDUIT_EINVAL;
    }
    uint64_t m = 0;
    for (; s < e; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (m > (UINT64_MAX - d) / 10)
            return CONDUIT_ELIMIT;
        m = m * 10 + d;
    }
    *mag = m;
    return 0;
}

int cd_json_int64(const cd_json_value *v, int64_t *out)
{
    bool neg;
    uint64_t m;
    int rc = integer_parts(v, &neg, &m);

    if (rc != 0)
        return rc;
    if (neg) {
        if (m > (uint64_t)INT64_MAX + 1)
            return CONDUIT_ELIMIT;
        /* -(2^63) has no positive counterpart: negate in unsigned. */
        *out = m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m;
        return 0;
    }
    if (m > (uint64_t)INT64_MAX)
        return CONDUIT_ELIMIT;
    *out = (int64_t)m;
    return 0;
}

int cd_json_uint64(const cd_json_value *v, uint64_t *out)
{
    bool neg;
    uint64_t m;
    int rc = integer_parts(v, &neg, &m);

    if (rc != 0)
        return rc;
    if (neg && m != 0)
        return CONDUIT_ELIMIT;
    *out = m;
    return 0;
}

/* The closing quote's successor for the string opening at s, or end. */
static const unsigned char *skip_string(const unsigned char *s, const unsigned char *end)
{
    const unsigned char *content = s + 1;

    s = content;
    while (s < end) {
        const unsigned char *q = memchr(s, '"', (size_t)(end - s));
        if (q == NULL)
            return end;
        /* The quote is escaped when an odd run of backslashes precedes it. */
        size_t n_bs = 0;
        while (q - n_bs > content && q[-1 - (ptrdiff_t)n_bs] == '\\')
            n_bs++;
        if (n_bs % 2 == 0)
            return q + 1;
        s = q + 1;
    }
    return end;
}

/* The end of the value starting at s, for a validated span; never past
 * end.  Containers are skipped by counting brackets outside strings. */
static const unsigned char *skip_value(const unsigned char *s, const unsigned char *end)
{
    size_t depth = 0;

    if (s >= end)
        return end;
    if (*s == '"')
        return skip_string(s, end);
    if (*s != '{' && *s != '[') {
        while (s < end && !(cls[*s] & WS) && *s != ',' && *s != ']' && *s != '}' && *s != ':')
            s++;
        return s;
    }
    while (s < end) {
        unsigned char c = *s;
        if (c == '"') {
            s = skip_string(s, end);
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth == 0)
                return s + 1;
        }
        s++;
    }
    return end;
}

/* The next element (or member) of a container span at *pos; opens at the
 * container's first byte when *pos is 0.  Returns where it starts, or NULL
 * at the end. */
static const unsigned char *next_item(const cd_json_value *v, cd_json_type type, size_t *pos)
{
    unsigned char close = type == CD_JSON_ARRAY ? ']' : '}';

    if (v == NULL || v->type != type || v->raw == NULL || v->len < 2)
        return NULL;
    const unsigned char *base = (const unsigned char *)v->raw, *end = base + v->len;
    size_t i = *pos == 0 ? 1 : *pos;
    if (i >= v->len)
        return NULL;
    const unsigned char *s = skip_ws(base + i, end);
    if (s < end && *s == ',')
        s = skip_ws(s + 1, end);
    if (s >= end || *s == close) {
        *pos = v->len;
        return NULL;
    }
    return s;
}

bool cd_json_array_next(const cd_json_value *arr, size_t *pos, cd_json_value *elem)
{
    const unsigned char *s = next_item(arr, CD_JSON_ARRAY, pos);

    if (s == NULL)
        return false;
    const unsigned char *base = (const unsigned char *)arr->raw, *end = base + arr->len;
    cd_json_type t = type_of(*s);
    if (t == CD_JSON_NONE) {
        *pos = arr->len;
        return false;
    }
    const unsigned char *e = skip_value(s, end);
    *elem = (cd_json_value){t, (const char *)s, (size_t)(e - s)};
    *pos = (size_t)(e - base);
    return true;
}

bool cd_json_object_next(const cd_json_value *obj, size_t *pos, cd_json_value *key,
                         cd_json_value *val)
{
    const unsigned char *s = next_item(obj, CD_JSON_OBJECT, pos);

    if (s == NULL)
        return false;
    const unsigned char *base = (const unsigned char *)obj->raw, *end = base + obj->len;
    if (*s != '"') {
        *pos = obj->len;
        return false;
    }
    const unsigned char *k = s, *ke = skip_string(s, end);
    s = skip_ws(ke, end);
    if (s >= end || *s != ':') {
        *pos = obj->len;
        return false;
    }
    s = skip_ws(s + 1, end);
    cd_json_type t = s < end ? type_of(*s) : CD_JSON_NONE;
    if (t == CD_JSON_NONE) {
        *pos = obj->len;
        return false;
    }
    const unsigned char *e = skip_value(s, end);
    *key = (cd_json_value){CD_JSON_STRING, (const char *)k, (size_t)(ke - k)};
    *val = (cd_json_value){t, (const char *)s, (size_t)(e - s)};
    *pos = (size_t)(e - base);
    return true;
}

int cd_json_get_fields(const cd_json_value *obj, cd_json_field *fields, size_t n_fields)
{
    cd_json_value key, val;
    size_t pos = 0;

    clear_fields(fields, n_fields);
    if (obj == NULL || obj->type != CD_JSON_OBJECT)
        return CD_JSON_NOT_OBJECT;
    while (cd_json_object_next(obj, &pos, &key, &val)) {
        const unsigned char *s, *e;
        if (!string_content(&key, &s, &e))
            continue;
        bool esc = memchr(s, '\\', (size_t)(e - s)) != NULL, dup = false;
        ptrdiff_t i = match_field(fields, n_fields, s, e, esc, &dup);
        if (dup) {
            clear_fields(fields, n_fields);
            return CD_JSON_DUPLICATE;
        }
        if (i >= 0)
            fields[i].value = val;
    }
    return CD_JSON_OK;
}

int cd_json_object_get(const cd_json_value *obj, const char *name, cd_json_value *out)
{
    cd_json_field f = {name, {CD_JSON_NONE, NULL, 0}};
    int rc = cd_json_get_fields(obj, &f, 1);

    *out = f.value;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Writer. */

void cd_jw_init(cd_jw *w, cd_bytes *out)
{
    memset(w, 0, sizeof(*w));
    w->out = out;
}

void cd_jw_init_fixed(cd_jw *w, char *buf, size_t cap)
{
    memset(w, 0, sizeof(*w));
    w->buf = buf;
    w->cap = buf != NULL ? cap : 0;
}

static void jw_fail(cd_jw *w, int err)
{
    if (w->err == 0)
        w->err = err;
}

static void put(cd_jw *w, const void *p, size_t n)
{
    if (w->err != 0 || n == 0)
        return;
    if (w->out != NULL) {
        if (cd_bytes_append(w->out, p, n) != 0) {
            jw_fail(w, CONDUIT_ENOMEM);
            return;
        }
    } else {
        /* Keep one byte for the NUL that cd_jw_finish writes. */
        if (n >= w->cap - w->len) {
            jw_fail(w, CONDUIT_ELIMIT);
            return;
        }
        memcpy(w->buf + w->len, p, n);
    }
    w->len += n;
}

static bool in_object(const cd_jw *w)
{
    return w->depth > 0 && (w->is_object >> (w->depth - 1) & 1);
}

/* Place the separator a value needs and check that one may come here. */
static bool begin_value(cd_jw *w)
{
    if (w->err != 0)
        return false;
    if (w->is_done || (in_object(w) && !w->want_value)) {
        jw_fail(w, CONDUIT_EINVAL);
        return false;
    }
    if (w->depth > 0) {
        uint32_t bit = 1u << (w->depth - 1);
        if (in_object(w))
            w->want_value = false;
        else if (w->has_items & bit)
            put(w, ",", 1);
        w->has_items |= bit;
    }
    return w->err == 0;
}

static void end_value(cd_jw *w)
{
    if (w->depth == 0 && w->err == 0)
        w->is_done = true;
}

static void container_begin(cd_jw *w, bool is_object, char open)
{
    if (w->err == 0 && w->depth >= CD_JW_MAX_DEPTH) {
        jw_fail(w, CONDUIT_ELIMIT);
        return;
    }
    if (!begin_value(w))
        return;
    put(w, &open, 1);
    uint32_t bit = 1u << w->depth;
    w->has_items &= ~bit;
    if (is_object)
        w->is_object |= bit;
    else
        w->is_object &= ~bit;
    w->depth++;
}

static void container_end(cd_jw *w, bool is_object, char close)
{
    if (w->err != 0)
        return;
    if (w->depth == 0 || in_object(w) != is_object || w->want_value) {
        jw_fail(w, CONDUIT_EINVAL);
        return;
    }
    put(w, &close, 1);
    w->depth--;
    end_value(w);
}

void cd_jw_object_begin(cd_jw *w)
{
    container_begin(w, true, '{');
}

void cd_jw_object_end(cd_jw *w)
{
    container_end(w, true, '}');
}

void cd_jw_array_begin(cd_jw *w)
{
    container_begin(w, false, '[');
}

void cd_jw_array_end(cd_jw *w)
{
    container_end(w, false, ']');
}

/* s[0..n) as a JSON string, quotes included.  RFC 8259 §7 requires only
 * '"', '\\' and U+0000..U+001F to be escaped; everything else that is
 * valid UTF-8 goes through as is, in runs. */
static void put_string(cd_jw *w, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    if (n == 0) {
        put(w, "\"\"", 2);
        return;
    }
    const unsigned char *e = s + n, *run = s;

    put(w, "\"", 1);
    while (s < e) {
        unsigned char c = *s;
        if (CD_LIKELY(cls[c] & PL)) {
            s++;
            continue;
        }
        if (c >= 0x80) {
            size_t bad, k = utf8_seq(s, (size_t)(e - s), &bad);
            if (k > 0) {
                s += k;
                continue;
            }
            put(w, run, (size_t)(s - run));
            put(w, "\xEF\xBF\xBD", 3);
            s += bad;
            run = s;
            continue;
        }
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t esc_len = 2;
        switch (c) {
        case '"':
        case '\\':
            esc[1] = (char)c;
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            esc_len = 6;
            break;
        }
        put(w, run, (size_t)(s - run));
        put(w, esc, esc_len);
        s++;
        run = s;
    }
    put(w, run, (size_t)(s - run));
    put(w, "\"", 1);
}

void cd_jw_key_n(cd_jw *w, const char *s, size_t len)
{
    if (w->err != 0)
        return;
    if (!in_object(w) || w->want_value || (s == NULL && len > 0)) {
        jw_fail(w, CONDUIT_EINVAL);
        return;
    }
    uint32_t bit = 1u << (w->depth - 1);
    if (w->has_items & bit)
        put(w, ",", 1);
    w->has_items |= bit;
    put_string(w, (const unsigned char *)s, len);
    put(w, ":", 1);
    w->want_value = true;
}

void cd_jw_key(cd_jw *w, const char *name)
{
    if (name == NULL) {
        jw_fail(w, CONDUIT_EINVAL);
        return;
    }
    cd_jw_key_n(w, name, strlen(name));
}

void cd_jw_string(cd_jw *w, const char *s, size_t len)
{
    if (s == NULL && len > 0) {
        jw_fail(w, CONDUIT_EINVAL);
        return;
    }
    if (!begin_value(w))
        return;
    put_string(w, (const unsigned char *)s, len);
    end_value(w);
}

void cd_jw_cstr(cd_jw *w, const char *s)
{
    if (s == NULL) {
        cd_jw_null(w);
        return;
    }
    cd_jw_string(w, s, strlen(s));
}

static void put_raw_value(cd_jw *w, const char *p, size_t n)
{
    if (!begin_value(w))
        return;
    put(w, p, n);
    end_value(w);
}

void cd_jw_uint(cd_jw *w, uint64_t v)
{
    char buf[20];
    size_t i = sizeof(buf);

    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put_raw_value(w, buf + i, sizeof(buf) - i);
}

void cd_jw_int(cd_jw *w, int64_t v)
{
    char buf[21];
    size_t i = sizeof(buf);
    /* Negate in unsigned so INT64_MIN has a magnitude too. */
    uint64_t m = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;

    do {
        buf[--i] = (char)('0' + m % 10);
        m /= 10;
    } while (m != 0);
    if (v < 0)
        buf[--i] = '-';
    put_raw_value(w, buf + i, sizeof(buf) - i);
}

void cd_jw_bool(cd_jw *w, bool v)
{
    if (v)
        put_raw_value(w, "true", 4);
    else
        put_raw_value(w, "false", 5);
}

void cd_jw_null(cd_jw *w)
{
    put_raw_value(w, "null", 4);
}

void cd_jw_double(cd_jw *w, double v)
{
    char tmp[40], out[40];
    size_t n = 0;

    if (w->err != 0)
        return;
    if (!isfinite(v)) {
        jw_fail(w, CONDUIT_EINVAL);
        return;
    }
    /* The fewest significant digits that read back as v.  snprintf and
     * strtod share the thread's locale, so the check is sound even where
     * the decimal separator is not '.'. */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (prec == 17 || strtod(tmp, NULL) == v)
            break;
    }
    /* JSON wants '.': whatever run of bytes the locale used for the
     * separator becomes one '.'. */
    for (const char *p = tmp; *p != '\0' && n < sizeof(out); p++) {
        if (is_digit((unsigned char)*p) || *p == '-' || *p == '+' || *p == 'e') {
            out[n++] = *p;
        } else if (n == 0 || out[n - 1] != '.') {
            out[n++] = '.';
        }
    }
    put_raw_value(w, out, n);
}

void cd_jw_raw(cd_jw *w, const char *raw, size_t len)
{
    if (raw == NULL || len == 0) {
        jw_fail(w, CONDUIT_EINVAL);
        return;
    }
    put_raw_value(w, raw, len);
}

void cd_jw_value(cd_jw *w, const cd_json_value *v)
{
    if (v == NULL || v->type == CD_JSON_NONE) {
        jw_fail(w, CONDUIT_EINVAL);
        return;
    }
    cd_jw_raw(w, v->raw, v->len);
}

int cd_jw_finish(cd_jw *w)
{
    if (!w->is_done)
        jw_fail(w, CONDUIT_EINVAL);
    if (w->out == NULL && w->cap > 0)
        w->buf[w->len] = '\0';
    return w->err;
}

int cd_json_put_string(char *out, size_t cap, size_t *len, const char *s,
                       size_t slen)
{
    if (*len >= cap)
        return CONDUIT_ELIMIT;
    cd_jw w;
    cd_jw_init_fixed(&w, out + *len, cap - *len);
    cd_jw_string(&w, s, slen);
    int rc = cd_jw_finish(&w);
    if (rc == 0)
        *len += w.len;
    else
        out[*len] = '\0';
    return rc;
}
