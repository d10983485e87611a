/* fuzz_json.c - the JSON reader against jansson, and the writer against
 * both.
 *
 * The input is one JSON text.  cd_json_object_fields and cd_json_validate
 * must agree with each other and with jansson (JSON_DECODE_ANY |
 * JSON_ALLOW_NUL) on validity and on object-or-not; cd_json_get_fields
 * (the iterator path) must find the same members as the one-pass reader;
 * and when both parse, every value our iterators reach must equal
 * jansson's: strings decoded byte for byte, integers exactly, reals through
 * strtod, arrays element by element, objects key by key.
 *
 * Documented disagreements are skipped: jansson refuses numbers that
 * overflow a double or a long long (json_error_numeric_overflow) and keys
 * holding U+0000 (json_error_null_byte_in_key); it accepts, and drops, a
 * NUL byte right after a number or a literal ("8\0", "[true\0]"); we refuse
 * nesting past DEPTH, jansson past 2048.  Duplicate keys: jansson with
 * JSON_REJECT_DUPLICATES refuses any, at any depth, so our DUPLICATE (a
 * requested name twice at the top) requires that refusal.
 *
 * Then the writer rebuilds the whole text from the iterators, which must
 * read back (ours and jansson's) as an equal value; every decoded string is
 * re-encoded and re-read; and the raw input written as a string must come
 * out as valid JSON and valid UTF-8, unchanged when it was valid UTF-8.
 *
 * Build (needs libjansson-dev):
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
 *     -Iinclude -Isrc tests/fuzz/fuzz_json.c src/json.c src/buf.c src/utf8.c \
 *     src/errors.c -DCONDUIT_VERSION='"0"' -ljansson -lm -o build/fuzz/fuzz_json */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "conduit.h"
#include "json.h"
#include "utf8.h"

#define DEPTH 64

/* Short names, so that mutations hit them: "\u00e9", "\u0001" and "a\"b"
 * need escapes to spell. */
static const char *const names[] = {"type", "id", "data", "a", "b", "", "\xc3\xa9", "\x01",
                                    "a\"b"};
#define N_NAMES (sizeof(names) / sizeof(names[0]))

static void fail(const char *what, const uint8_t *data, size_t size)
{
    fprintf(stderr, "fuzz_json: %s\ninput (%zu bytes): ", what, size);
    fwrite(data, 1, size, stderr);
    fprintf(stderr, "\n");
    abort();
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        abort();
    return p;
}

/* Decode a STRING into a fresh buffer; *len gets its length. */
static char *decode(const cd_json_value *v, size_t *len)
{
    char *out = xmalloc(v->len);
    if (cd_json_string(v, out, v->len, len) != 0)
        abort();
    return out;
}

/* s[0..n) through the writer as a string, read back and decoded: the
 * same bytes (s is valid UTF-8 here). */
static void rewrite_string(const char *s, size_t n)
{
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;

    cd_jw_init(&w, &b);
    cd_jw_string(&w, s, n);
    if (cd_jw_finish(&w) != 0)
        abort();
    cd_json_value v;
    if (cd_json_validate((const char *)b.data, b.len, 1, &v, NULL) != CD_JSON_OK)
        abort();
    size_t len;
    char *back = decode(&v, &len);
    if (len != n || memcmp(back, s, n) != 0)
        abort();
    free(back);
    cd_bytes_free(&b);
}

static void same(const cd_json_value *v, json_t *j, bool has_dups);

static void check_string(const cd_json_value *v, json_t *j)
{
    size_t len;
    char *s = decode(v, &len);

    if (!json_is_string(j) || json_string_length(j) != len ||
        memcmp(json_string_value(j), s, len) != 0)
        abort();
    if (!cd_utf8_valid((const uint8_t *)s, len))
        abort();
    bool has_nul = memchr(s, '\0', len) != NULL;
    char *name = xmalloc(v->len);
    if ((cd_json_name(v, name, v->len, NULL) == 0) == has_nul)
        abort();
    if (!has_nul) {
        if (!cd_json_str_eq(v, s) || !cd_json_str_eq_ci(v, s))
            abort();
        for (size_t i = 0; i < len; i++) {
            if (s[i] >= 'a' && s[i] <= 'z')
                s[i] = (char)(s[i] - 'a' + 'A');
        }
        if (!cd_json_str_eq_ci(v, s))
            abort();
        if (len > 0 && cd_json_str_eq(v, s + 1))
            abort();
    }
    rewrite_string(s, len);
    free(name);
    free(s);
}

static void check_number(const cd_json_value *v, json_t *j)
{
    int64_t i;
    uint64_t u;
    int rc = cd_json_int64(v, &i), urc = cd_json_uint64(v, &u);

    if (json_is_integer(j)) {
        if (rc != 0 || i != json_integer_value(j))
            abort();
        if ((i >= 0) != (urc == 0) || (urc == 0 && u != (uint64_t)i))
            abort();
        return;
    }
    if (!json_is_real(j) || rc != CONDUIT_EINVAL || urc != CONDUIT_EINVAL)
        abort();
    char *text = xmalloc(v->len + 1);
    memcpy(text, v->raw, v->len);
    text[v->len] = '\0';
    if (strtod(text, NULL) != json_real_value(j))
        abort();
    free(text);
}

static bool later_key(const cd_json_value *obj, size_t pos, const char *k, size_t klen)
{
    cd_json_value key, val;

    while (cd_json_object_next(obj, &pos, &key, &val)) {
        size_t len;
        char *s = decode(&key, &len);
        bool eq = len == klen && memcmp(s, k, len) == 0;
        free(s);
        if (eq)
            return true;
    }
    return false;
}

static void check_object(const cd_json_value *v, json_t *j, bool has_dups)
{
    cd_json_value key, val;
    size_t pos = 0, n = 0;

    if (!json_is_object(j))
        abort();
    while (cd_json_object_next(v, &pos, &key, &val)) {
        size_t klen;
        char *k = decode(&key, &klen);
        json_t *jv = json_object_getn(j, k, klen);
        if (jv == NULL)
            abort();
        /* With duplicates jansson kept the last value of each key. */
        if (!has_dups || !later_key(v, pos, k, klen))
            same(&val, jv, has_dups);
        free(k);
        n++;
    }
    if (has_dups ? n < json_object_size(j) : n != json_object_size(j))
        abort();
}

static void same(const cd_json_value *v, json_t *j, bool has_dups)
{
    cd_json_value e;
    size_t pos = 0, i = 0;

    switch (v->type) {
    case CD_JSON_NULL:
        if (!json_is_null(j))
            abort();
        return;
    case CD_JSON_TRUE:
        if (!json_is_true(j))
            abort();
        return;
    case CD_JSON_FALSE:
        if (!json_is_false(j))
            abort();
        return;
    case CD_JSON_STRING:
        check_string(v, j);
        return;
    case CD_JSON_NUMBER:
        check_number(v, j);
        return;
    case CD_JSON_ARRAY:
        if (!json_is_array(j))
            abort();
        while (cd_json_array_next(v, &pos, &e)) {
            json_t *je = json_array_get(j, i++);
            if (je == NULL)
                abort();
            same(&e, je, has_dups);
        }
        if (i != json_array_size(j))
            abort();
        return;
    case CD_JSON_OBJECT:
        check_object(v, j, has_dups);
        return;
    default:
        abort();
    }
}

/* Re-emit v through the writer from what the iterators give.  Returns the
 * nesting it needed. */
static unsigned rebuild(cd_jw *w, const cd_json_value *v)
{
    cd_json_value k, e;
    size_t pos = 0, len;
    unsigned deepest = 0, d;
    char *s;

    switch (v->type) {
    case CD_JSON_STRING:
        s = decode(v, &len);
        cd_jw_string(w, s, len);
        free(s);
        return 0;
    case CD_JSON_ARRAY:
        cd_jw_array_begin(w);
        while (cd_json_array_next(v, &pos, &e)) {
            if ((d = rebuild(w, &e)) > deepest)
                deepest = d;
        }
        cd_jw_array_end(w);
        return deepest + 1;
    case CD_JSON_OBJECT:
        cd_jw_object_begin(w);
        while (cd_json_object_next(v, &pos, &k, &e)) {
            s = decode(&k, &len);
            cd_jw_key_n(w, s, len);
            free(s);
            if ((d = rebuild(w, &e)) > deepest)
                deepest = d;
        }
        cd_jw_object_end(w);
        return deepest + 1;
    default:
        cd_jw_value(w, v);
        return 0;
    }
}

static void check_rebuild(const cd_json_value *top, json_t *j)
{
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;

    cd_jw_init(&w, &b);
    unsigned depth = rebuild(&w, top);
    int rc = cd_jw_finish(&w);
    if (depth > CD_JW_MAX_DEPTH) {
        if (rc != CONDUIT_ELIMIT)
            abort();
        cd_bytes_free(&b);
        return;
    }
    if (rc != 0)
        abort();
    cd_json_value again;
    if (cd_json_validate((const char *)b.data, b.len, DEPTH, &again, NULL) != CD_JSON_OK)
        abort();
    json_error_t jerr;
    json_t *j2 = json_loadb((const char *)b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (j2 == NULL || !json_equal(j, j2))
        abort();
    json_decref(j2);
    cd_bytes_free(&b);
}

/* Any bytes written as a string: valid JSON that jansson reads as the
 * same text ours decodes, valid UTF-8, and the input itself when it was. */
static void check_write_bytes(const char *p, size_t n)
{
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;

    cd_jw_init(&w, &b);
    cd_jw_string(&w, p, n);
    if (cd_jw_finish(&w) != 0)
        abort();
    cd_json_value v;
    if (cd_json_validate((const char *)b.data, b.len, 1, &v, NULL) != CD_JSON_OK)
        abort();
    size_t len;
    char *s = decode(&v, &len);
    if (!cd_utf8_valid((const uint8_t *)s, len))
        abort();
    if (cd_utf8_valid((const uint8_t *)p, n) && (len != n || memcmp(s, p, n) != 0))
        abort();
    json_error_t jerr;
    json_t *j = json_loadb((const char *)b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (j == NULL || json_string_length(j) != len || memcmp(json_string_value(j), s, len) != 0)
        abort();
    json_decref(j);
    free(s);
    cd_bytes_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy so any read past the end is caught. */
    char *p = xmalloc(size);
    memcpy(p, data, size);

    cd_json_field f[N_NAMES], g[N_NAMES];
    for (size_t i = 0; i < N_NAMES; i++)
        f[i].name = g[i].name = names[i];
    cd_json_error err, verr;
    cd_json_value top;
    int rc = cd_json_object_fields(p, size, f, N_NAMES, DEPTH, &err);
    int vrc = cd_json_validate(p, size, DEPTH, &top, &verr);

    /* The two entry points agree. */
    if ((vrc == CD_JSON_OK) != (rc != CD_JSON_INVALID))
        fail("fields and validate disagree on validity", data, size);
    if (rc == CD_JSON_INVALID &&
        (err.reason != verr.reason || err.offset != verr.offset || err.offset > size))
        fail("fields and validate disagree on the error", data, size);
    if (vrc == CD_JSON_OK && (top.type == CD_JSON_OBJECT) != (rc != CD_JSON_NOT_OBJECT))
        fail("object or not", data, size);

    json_error_t jerr, dup_err;
    json_t *j = json_loadb(p, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    json_t *jd = json_loadb(p, size, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES,
                            &dup_err);

    if (j == NULL && rc != CD_JSON_INVALID) {
        enum json_error_code code = json_error_code(&jerr);
        if (code != json_error_numeric_overflow && code != json_error_null_byte_in_key)
            fail("valid for us, not for jansson", data, size);
        goto out;
    }
    if (j != NULL && rc == CD_JSON_INVALID) {
        /* jansson drops a NUL byte right after a number or a literal
         * ("8\0", "[true\0]"), which end in a digit or a letter. */
        char last = err.offset > 0 ? p[err.offset - 1] : '\0';
        bool nul_after_token = err.offset < size && p[err.offset] == '\0' &&
                               ((last >= '0' && last <= '9') || (last >= 'a' && last <= 'z'));
        if (!nul_after_token &&
            cd_json_validate(p, size, CD_JSON_MAX_DEPTH, NULL, NULL) != CD_JSON_OK)
            fail("valid for jansson, not for us", data, size);
        goto out;
    }
    if (j == NULL)
        goto out;

    if (json_is_object(j) != (rc != CD_JSON_NOT_OBJECT))
        fail("object or not, against jansson", data, size);
    if (jd == NULL && json_error_code(&dup_err) != json_error_duplicate_key)
        fail("jansson's two loads disagree", data, size);
    if (rc == CD_JSON_DUPLICATE && jd != NULL)
        fail("DUPLICATE where there is none", data, size);

    /* The iterator path finds the same members. */
    int grc = cd_json_get_fields(&top, g, N_NAMES);
    if (grc != rc)
        fail("get_fields disagrees with object_fields", data, size);
    for (size_t i = 0; i < N_NAMES; i++) {
        if (f[i].value.type != g[i].value.type || f[i].value.raw != g[i].value.raw ||
            f[i].value.len != g[i].value.len)
            fail("get_fields spans differ", data, size);
    }
    if (rc == CD_JSON_OK) {
        for (size_t i = 0; i < N_NAMES; i++) {
            json_t *jv = json_object_get(j, names[i]);
            if ((jv != NULL) != (f[i].value.type != CD_JSON_NONE))
                fail("member presence", data, size);
            if (jv != NULL)
                same(&f[i].value, jv, jd == NULL);
        }
    }
    same(&top, j, jd == NULL);
    check_rebuild(&top, j);

out:
    json_decref(j);
    json_decref(jd);
    check_write_bytes(p, size);
    free(p);
    return 0;
}
