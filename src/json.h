/* json.h - JSON on the message path: a reader that builds no tree, and a
 * writer.
 *
 * Reading.  cd_json_object_fields() makes one strict RFC 8259 pass over a
 * whole message and, on the way, picks out the top-level members the caller
 * asked for.  Nothing is allocated and nothing is copied: every value is a
 * span of the input (cd_json_value), so a payload such as "data" can be
 * forwarded byte for byte with cd_jw_raw().  Nested values are read later
 * with the iterators and accessors below, which trust that their value came
 * out of a successful validation: they never read outside the span, but on
 * a span that is not valid JSON they give unspecified (safe) answers.
 *
 * Writing.  cd_jw builds one JSON value into a cd_bytes (growable) or into
 * a caller's fixed buffer (log lines, small replies).  Commas and colons are
 * placed automatically; the first error (no memory, buffer full, a call out
 * of order) is remembered and every later call does nothing, so a caller
 * checks once, at cd_jw_finish().  Output is always valid JSON and valid
 * UTF-8: strings are escaped, and invalid UTF-8 is replaced by U+FFFD.
 *
 * Thread: none of this has shared state; a value or a writer belongs to the
 * thread using it. */
#ifndef CD_JSON_H
#define CD_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* ------------------------------------------------------------------ */
/* Reader. */

typedef enum cd_json_type {
    CD_JSON_NONE = 0,       /* absent: a requested member that is not there */
    CD_JSON_NULL,
    CD_JSON_FALSE,
    CD_JSON_TRUE,
    CD_JSON_NUMBER,
    CD_JSON_STRING,
    CD_JSON_ARRAY,
    CD_JSON_OBJECT,
} cd_json_type;

/* A value is a span of the input: raw[0..len) is the value's exact text
 * with no surrounding whitespace (a STRING includes its quotes, an OBJECT
 * its braces).  raw borrows the input buffer; NONE has raw NULL, len 0. */
typedef struct cd_json_value {
    cd_json_type type;
    const char *raw;
    size_t len;
} cd_json_value;

/* A member the caller wants from an object.  `name` (in) is NUL-terminated
 * and compared with the decoded key, byte for byte, so "\u0074ype" matches
 * "type" and a key holding \u0000 matches no name.  `value` (out) is the
 * member's value, or type NONE when the object has no such member. */
typedef struct cd_json_field {
    const char *name;
    cd_json_value value;
} cd_json_field;

/* Statuses of the reader.  Negative like the CONDUIT_E* codes but outside
 * their range, so a protocol handler can pass either kind upward. */
enum {
    CD_JSON_OK = 0,
    CD_JSON_INVALID = -100,      /* not JSON (RFC 8259), or nested too deep */
    CD_JSON_NOT_OBJECT = -101,   /* valid JSON, but not an object */
    CD_JSON_DUPLICATE = -102,    /* a valid object naming a requested member
                                  * twice (other keys may repeat) */
};

/* Nesting is counted in open arrays and objects ("{}" is depth 1).  A
 * max_depth above this is treated as this. */
#define CD_JSON_MAX_DEPTH 1024

/* Why a text is INVALID: a static reason ("invalid escape") and the byte
 * offset at which the reader gave up. */
typedef struct cd_json_error {
    const char *reason;
    size_t offset;
} cd_json_error;

/* Validate p[0..len) as exactly one JSON text (RFC 8259 §2: whitespace is
 * SP, HTAB, CR, LF only; no BOM) whose top-level value is an object, and
 * fill fields[i].value for each requested member.  Strict: the number
 * grammar of §6, only the escapes of §7, \u surrogates only in valid pairs,
 * no raw byte below 0x20 in a string, raw bytes valid UTF-8 (§8.1), no
 * trailing commas, nothing but whitespace after the value, at most
 * max_depth levels of nesting.  Duplicate keys are allowed (§4 says SHOULD
 * be unique) except a requested name: naming it twice is refused so that a
 * second "type" cannot smuggle a different meaning past a check that read
 * the first.  Field names should be distinct from each other.
 * Returns CD_JSON_OK, CD_JSON_NOT_OBJECT or CD_JSON_DUPLICATE (both mean
 * the text is valid JSON), or CD_JSON_INVALID with *err filled (err may be
 * NULL); INVALID wins over DUPLICATE.  Unless OK, every field is NONE.
 * Never allocates; reads p[0..len) only. */
int cd_json_object_fields(const char *p, size_t len, cd_json_field *fields,
                          size_t n_fields, unsigned max_depth,
                          cd_json_error *err);

/* Validate p[0..len) as one JSON text of any type, as strictly as
 * cd_json_object_fields, and return its value (without the surrounding
 * whitespace) in *out.  Returns CD_JSON_OK or CD_JSON_INVALID. */
int cd_json_validate(const char *p, size_t len, unsigned max_depth,
                     cd_json_value *out, cd_json_error *err);

/* Iterate over the elements of an ARRAY.  Start with *pos = 0; each call
 * stores the next element in *elem and returns true, or returns false after
 * the last (or when arr is not an array). */
bool cd_json_array_next(const cd_json_value *arr, size_t *pos,
                        cd_json_value *elem);

/* Iterate over the members of an OBJECT, in input order, duplicates
 * included.  *key is the key as a STRING value (decode it with
 * cd_json_string or compare it with cd_json_str_eq). */
bool cd_json_object_next(const cd_json_value *obj, size_t *pos,
                         cd_json_value *key, cd_json_value *val);

/* cd_json_object_fields for a nested, already validated object (no
 * validation pass).  Returns CD_JSON_OK, CD_JSON_NOT_OBJECT when obj is
 * not an OBJECT, or CD_JSON_DUPLICATE; fields are NONE unless OK. */
int cd_json_get_fields(const cd_json_value *obj, cd_json_field *fields,
                       size_t n_fields);

/* One member of a nested object ("since" -> "offset").  *out is NONE when
 * absent.  Returns as cd_json_get_fields. */
int cd_json_object_get(const cd_json_value *obj, const char *name,
                       cd_json_value *out);

/* Decode a STRING into out[0..cap): escapes resolved, \u escapes (and
 * surrogate pairs) written as UTF-8, NUL-terminated; the length without
 * the NUL goes to *out_len (may be NULL).  The decoded text is never
 * longer than v->len - 2, so a buffer of v->len bytes always suffices.
 * Returns 0, CONDUIT_EINVAL (not a STRING), or CONDUIT_ELIMIT (does not fit
 * with its NUL; out then holds an empty string when cap > 0). */
int cd_json_string(const cd_json_value *v, char *out, size_t cap,
                   size_t *out_len);

/* cd_json_string for names (channels, users, tokens) that end up in C
 * strings: a decoded U+0000 would silently cut the name short, so it is
 * refused with CONDUIT_EINVAL. */
int cd_json_name(const cd_json_value *v, char *out, size_t cap,
                 size_t *out_len);

/* A NUMBER that is an integer (RFC 8259 §6 int: no fraction, no exponent;
 * "-0" is 0).  Returns 0, CONDUIT_EINVAL (not a NUMBER, or "1.0", "1e3"),
 * or CONDUIT_ELIMIT (outside the type's range; "-1" for the unsigned one). */
int cd_json_int64(const cd_json_value *v, int64_t *out);
int cd_json_uint64(const cd_json_value *v, uint64_t *out);

/* Does a STRING decode to exactly `lit`?  Escapes are decoded on the fly,
 * without allocating, so "\u0070ing" equals "ping".  False for any other
 * type. */
bool cd_json_str_eq(const cd_json_value *v, const char *lit);

/* As cd_json_str_eq, ignoring ASCII case ("PING", "\u0050ing" and "ping"
 * all equal "ping"); bytes above 0x7F must match exactly.  For type names,
 * which the protocol matches case-insensitively. */
bool cd_json_str_eq_ci(const cd_json_value *v, const char *lit);

/* ------------------------------------------------------------------ */
/* Writer. */

#define CD_JW_MAX_DEPTH 32

/* Writer state; fields are private except `len`.  Lives on the caller's
 * stack; holds no memory of its own. */
typedef struct cd_jw {
    cd_bytes *out;          /* growable mode: appended to; NULL when fixed */
    char *buf;              /* fixed mode: the caller's buffer */
    size_t cap;             /* fixed mode: its size, the NUL included */
    size_t len;             /* bytes this writer has produced so far */
    int err;                /* first error; sticky */
    uint32_t is_object;     /* bit d: the container at depth d+1 is an object */
    uint32_t has_items;     /* bit d: it has an element or member already */
    uint8_t depth;          /* open containers */
    bool want_value;        /* a key was written; its value comes next */
    bool is_done;           /* the top-level value is complete */
} cd_jw;

/* Write into *out, after whatever it already holds.  The buffer stays the
 * caller's; on error it may hold a partial value (truncate it to its old
 * length, or free it). */
void cd_jw_init(cd_jw *w, cd_bytes *out);

/* Write into buf[0..cap).  cd_jw_finish NUL-terminates; text that does not
 * fit with its NUL makes the writer fail with CONDUIT_ELIMIT. */
void cd_jw_init_fixed(cd_jw *w, char *buf, size_t cap);

void cd_jw_object_begin(cd_jw *w);
void cd_jw_object_end(cd_jw *w);
void cd_jw_array_begin(cd_jw *w);
void cd_jw_array_end(cd_jw *w);

/* A member name; the next call writes its value. */
void cd_jw_key(cd_jw *w, const char *name);
void cd_jw_key_n(cd_jw *w, const char *s, size_t len);

/* A string value: '"', '\\' and bytes below 0x20 escaped, valid UTF-8
 * passed through, each maximal invalid UTF-8 subpart replaced by U+FFFD
 * (Unicode §3.9), so output is always valid JSON. */
void cd_jw_string(cd_jw *w, const char *s, size_t len);
void cd_jw_cstr(cd_jw *w, const char *s);     /* NUL-terminated; NULL: null */

void cd_jw_int(cd_jw *w, int64_t v);
void cd_jw_uint(cd_jw *w, uint64_t v);
void cd_jw_bool(cd_jw *w, bool v);
void cd_jw_null(cd_jw *w);

/* A finite double in the shortest "%.*g" form (15 to 17 digits) that reads
 * back as the same value; NaN and infinities fail with CONDUIT_EINVAL. */
void cd_jw_double(cd_jw *w, double v);

/* Insert raw[0..len), which must be one valid JSON value, verbatim: a
 * forwarded payload, a client's "id".  Not checked (it usually comes from
 * the reader); an empty one fails with CONDUIT_EINVAL. */
void cd_jw_raw(cd_jw *w, const char *raw, size_t len);
/* The same for a reader value; NONE fails with CONDUIT_EINVAL. */
void cd_jw_value(cd_jw *w, const cd_json_value *v);

/* Returns 0 when exactly one complete value was written, else the first
 * error: CONDUIT_ENOMEM, CONDUIT_ELIMIT (fixed buffer full, or nesting
 * deeper than CD_JW_MAX_DEPTH) or CONDUIT_EINVAL (calls out of order,
 * containers left open, nothing written).  In fixed mode the text is then
 * NUL-terminated at buf[len]. */
int cd_jw_finish(cd_jw *w);

/* Append s[0..slen) as one JSON string value, quotes included, escaped as
 * cd_jw_string does, to out[*len..cap) and NUL-terminate; *len grows by the
 * bytes written.  For text assembled by hand (log lines).  Returns 0, or
 * CONDUIT_ELIMIT when it does not fit (out is then unchanged up to *len). */
int cd_json_put_string(char *out, size_t cap, size_t *len, const char *s,
                       size_t slen);

#endif
