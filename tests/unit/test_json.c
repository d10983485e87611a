/* test_json.c - the JSON reader and writer.
 *
 * Accept/reject cases in the manner of JSONTestSuite (y_: must parse, n_:
 * must not), each run on an exact-size heap copy so that any read past the
 * input is an ASan error; every prefix of a valid object; nesting at and
 * past the limit; member extraction with escaped and duplicate keys; exact
 * spans; iterators, also over spans that are not valid JSON; string and
 * integer accessors; the writer's escaping, separators, errors and fixed
 * buffers; and round trips from the writer back through the reader. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "common.h"
#include "conduit.h"
#include "json.h"
#include "test.h"
#include "utf8.h"

typedef struct text {
    const char *s;
    size_t n;
} text;

/* A literal with its exact length, embedded NULs included. */
#define T(lit) {lit, sizeof(lit) - 1}

/* cd_json_validate on an exact-size heap copy of p[0..n), freed before
 * returning: callers look only at the status. */
static int validate_exact(const char *p, size_t n, unsigned depth, cd_json_error *err)
{
    char *copy = malloc(n ? n : 1);
    if (copy == NULL)
        abort();
    memcpy(copy, p, n);
    cd_json_value v;
    int rc = cd_json_validate(copy, n, depth, &v, err);
    free(copy);
    return rc;
}

static int fields_exact(const char *p, size_t n, cd_json_field *f, size_t nf)
{
    char *copy = malloc(n ? n : 1);
    if (copy == NULL)
        abort();
    memcpy(copy, p, n);
    int rc = cd_json_object_fields(copy, n, f, nf, 64, NULL);
    free(copy);
    return rc;
}

static const text y_cases[] = {
    T("{}"), T("[]"), T("0"), T("-0"), T("1e10"), T("-1.5E+3"), T("1E-2"), T("0.0"),
    T("-0.0e-0"), T("123456789012345678901234567890"), T("1e400"), T("1e-400"),
    T("true"), T("false"), T("null"), T("\"\""), T("\"\\u00e9\""), T("\"\\u00E9\""),
    T("\"\\ud83d\\ude00\""), T("\"\\uD83D\\uDE00\""), T("\"\\uDBFF\\uDFFF\""),
    T("\"\\u0000\""), T("\"\\uFFFF\""), T("\"\\u007f\""), T("\"\x7f\""),
    T("\"\xc3\xa9\""), T("\"\xf0\x9f\x98\x80\""), T("\"\xef\xbf\xbf\""),
    T("\"\xf4\x8f\xbf\xbf\""), T("\"\xed\x9f\xbf\""), T("\"\xee\x80\x80\""),
    T("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""), T(" \t\r\n{} \t\r\n"), T("[1,[2,{\"a\":[]}]]"),
    T("{\"a\":1,\"a\":2}"), T("{\"\":0}"), T("[\"a\\\"]\"]"), T("{\"a\":{\"b\":{}}}"),
    T("[-1,0.5,1e+2,1E-2,-0.0]"), T("\"/\""), T("\"a long string with no escapes at all\""),
    T("\"tab\\tin the middle of a long run of plain text\""),
};

static const text n_cases[] = {
    T(""), T(" "), T("\r\n"), T("01"), T("-01"), T("00"), T("1."), T(".1"), T("+1"), T("-"),
    T("1e"), T("1e+"), T("1E-"), T("1.e5"), T("0x10"), T("Infinity"), T("-Infinity"), T("NaN"),
    T("1ee2"), T("--1"), T("1-"), T("[1e1.0]"), T("2.3e"), T("-a"), T("[.5]"), T("[1.]"),
    T("\"\\ud800\""), T("\"\\udc00\""), T("\"\\ud800\\u0041\""), T("\"\\ud800x\""),
    T("\"\\ud83d\""), T("\"\\ude00\\ud83d\""), T("\"\\ud800\\ud800\""), T("\"\\ud800\\\""),
    T("\"\\x\""), T("\"\\u12\""), T("\"\\u12G4\""), T("\"\\'\""), T("\"\\U00e9\""),
    T("\"\\"), T("\"\\u"), T("\"a"), T("\""), T("\"\t\""), T("\"\x01\""), T("\"\n\""),
    T("\"\x00\""), T("\"\x1f\""), T("[1,]"), T("{\"a\":1,}"), T("[,1]"), T("{,}"), T("[,]"),
    T("{\"a\" 1}"), T("{\"a\":}"), T("{a:1}"), T("{'a':1}"), T("{\"a\":1 \"b\":2}"),
    T("{\"a\"}"), T("{1:1}"), T("[1 2]"), T("{} {}"), T("{}x"), T("[]]"), T("[[]"), T("["),
    T("{"), T("]"), T("}"), T("[}"), T("{]"), T("tru"), T("truE"), T("True"), T("nul"),
    T("null1"), T("nulL"), T("fals"), T("\xef\xbb\xbf{}"), T("\x00"), T("{}\x00"),
    T("\f{}"), T("\v{}"), T("\xc2\xa0{}"), T("{}\xc2\xa0"), T("\"\xc0\x80\""),
    T("\"\xc1\xbf\""), T("\"\xed\xa0\x80\""), T("\"\xed\xbf\xbf\""), T("\"\xf4\x90\x80\x80\""),
    T("\"\x80\""), T("\"\xbf\""), T("\"\xe2\x82\""), T("\"\xe2\x82\xac"), T("\"\xff\""),
    T("\"\xfe\""), T("\"\xf5\x80\x80\x80\""), T("\"\xe0\x9f\xbf\""), T("\"\xf0\x8f\xbf\xbf\""),
    T("\"\xc3\""), T("[\xc3\xa9]"), T("[1]x"), T("\"abc\"def"), T("[\"a\",]"),
    T("{\"a\":1}}"), T("/* c */ {}"), T("{\"a\":1 // c\n}"), T("'a'"), T("[True]"),
    T("[1,,2]"), T("{\"a\"::1}"), T("{:1}"), T("\"a\"\"b\""), T("\"\xe0\xa0\"x"),
};

TEST(test_y_cases)
{
    for (size_t i = 0; i < CD_ARRAY_LEN(y_cases); i++) {
        cd_json_error err;
        int rc = validate_exact(y_cases[i].s, y_cases[i].n, 64, &err);
        if (rc != CD_JSON_OK)
            printf("  # y_%zu <%s>: %s at %zu\n", i, y_cases[i].s, err.reason, err.offset);
        CHECK_EQ(rc, CD_JSON_OK);
    }
}

TEST(test_n_cases)
{
    for (size_t i = 0; i < CD_ARRAY_LEN(n_cases); i++) {
        cd_json_error err = {NULL, 0};
        int rc = validate_exact(n_cases[i].s, n_cases[i].n, 64, &err);
        if (rc != CD_JSON_INVALID)
            printf("  # n_%zu <%s> was accepted\n", i, n_cases[i].s);
        CHECK_EQ(rc, CD_JSON_INVALID);
        CHECK(err.reason != NULL);
        CHECK(err.offset <= n_cases[i].n);
        /* The fields path agrees. */
        cd_json_field f[] = {{"a", {0}}};
        CHECK_EQ(fields_exact(n_cases[i].s, n_cases[i].n, f, 1), CD_JSON_INVALID);
        CHECK_EQ(f[0].value.type, CD_JSON_NONE);
    }
}

static void check_error(const char *s, const char *reason, size_t offset)
{
    cd_json_error err = {NULL, 0};
    CHECK_EQ(cd_json_validate(s, strlen(s), 64, NULL, &err), CD_JSON_INVALID);
    CHECK_STR(err.reason, reason);
    CHECK_EQ(err.offset, offset);
}

TEST(test_error_reasons)
{
    check_error("[1,]", "unexpected character", 3);
    check_error("{\"a\":1", "unexpected end of input", 6);
    check_error("\"\\x\"", "invalid escape", 1);
    check_error("\"ab\\u12x4\"", "invalid \\u escape", 3);
    check_error("\"\\ud800\"", "unpaired surrogate escape", 1);
    check_error("\"ab\\udc00\\ud800\"", "unpaired surrogate escape", 3);
    check_error("\"\\ud800\\u0041\"", "unpaired surrogate escape", 1);
    check_error("\"\\", "unterminated string", 2);
    check_error("\"a\x01\"", "control character in string", 2);
    check_error("\"a\xff\"", "invalid UTF-8", 2);
    check_error("01", "unexpected data after the value", 1);
    check_error("1.x", "invalid number", 2);
    check_error("{} x", "unexpected data after the value", 3);
    check_error("{\"a\" 1}", "expected ':'", 5);
    check_error("{1:1}", "expected a string key", 1);
    check_error("[1 2]", "expected ',' or ']'", 3);
    check_error("{\"a\":1 2}", "expected ',' or '}'", 7);
    check_error("tru", "invalid literal", 0);
    check_error("\"abc", "unterminated string", 4);
    check_error("", "unexpected end of input", 0);
    check_error("[[[", "unexpected end of input", 3);
}

/* Every proper prefix of a valid object is invalid, and reading it stays
 * inside the (exact-size) buffer. */
TEST(test_every_prefix_invalid)
{
    static const char doc[] =
        "{\"type\":\"publish\", \"id\": -12.5e+3, \"channel\":\"caf\\u00e9\","
        " \"data\": {\"a\": [true, false, null, \"\\ud83d\\ude00\", \"\xc3\xa9\"],"
        " \"b\": {}, \"c\": [], \"d\": \"x\\\"y\\\\z\"}, \"since\": {\"offset\": 0,"
        " \"epoch\": \"e\"} }";
    size_t n = sizeof(doc) - 1;

    CHECK_EQ(validate_exact(doc, n, 64, NULL), CD_JSON_OK);
    for (size_t cut = 0; cut < n; cut++) {
        cd_json_error err = {NULL, 0};
        CHECK_EQ(validate_exact(doc, cut, 64, &err), CD_JSON_INVALID);
        CHECK(err.offset <= cut);
        cd_json_field f[] = {{"type", {0}}, {"data", {0}}};
        CHECK_EQ(fields_exact(doc, cut, f, 2), CD_JSON_INVALID);
    }
}

static char *nested(unsigned depth, bool objects)
{
    size_t n = depth * (objects ? 6 : 2) + 2;
    char *s = malloc(n);
    if (s == NULL)
        abort();
    size_t j = 0;
    for (unsigned i = 0; i < depth; i++) {
        if (objects) {
            memcpy(s + j, "{\"a\":", 5);
            j += 5;
        } else {
            s[j++] = '[';
        }
    }
    s[j++] = '1';
    for (unsigned i = 0; i < depth; i++)
        s[j++] = objects ? '}' : ']';
    s[j] = '\0';
    return s;
}

TEST(test_depth)
{
    for (int objects = 0; objects <= 1; objects++) {
        for (unsigned d = 1; d <= 70; d += 23) {
            char *s = nested(d, objects);
            cd_json_error err;
            CHECK_EQ(validate_exact(s, strlen(s), d, &err), CD_JSON_OK);
            CHECK_EQ(validate_exact(s, strlen(s), d - 1, &err), CD_JSON_INVALID);
            CHECK_STR(err.reason, "nesting too deep");
            CHECK_EQ(err.offset, (d - 1) * (objects ? 5 : 1));
            free(s);
        }
    }
    /* A max_depth above the bit stack is clamped to it. */
    char *s = nested(CD_JSON_MAX_DEPTH, false);
    CHECK_EQ(validate_exact(s, strlen(s), UINT32_MAX, NULL), CD_JSON_OK);
    free(s);
    s = nested(CD_JSON_MAX_DEPTH + 1, true);
    CHECK_EQ(validate_exact(s, strlen(s), UINT32_MAX, NULL), CD_JSON_INVALID);
    free(s);
    /* max_depth 0: scalars only. */
    CHECK_EQ(validate_exact("1", 1, 0, NULL), CD_JSON_OK);
    CHECK_EQ(validate_exact("[]", 2, 0, NULL), CD_JSON_INVALID);
    /* Depth is nesting, not the number of containers. */
    CHECK_EQ(validate_exact("[[],[],{},[[]]]", 15, 3, NULL), CD_JSON_OK);
    CHECK_EQ(validate_exact("[[],[],{},[[[]]]]", 17, 3, NULL), CD_JSON_INVALID);
}

static bool span_is(const cd_json_value *v, cd_json_type type, const char *raw)
{
    return v->type == type && v->len == strlen(raw) && memcmp(v->raw, raw, v->len) == 0;
}

TEST(test_fields_basic)
{
    static const char doc[] = " { \"type\" : \"publish\" , \"channel\":\"news\","
                              "\"data\" : {\"x\": [1, 2] , \"type\":\"no\"} ,\"id\":7,"
                              "\"exclude_self\":false, \"n\":null, \"t\":true } ";
    cd_json_field f[] = {{"type", {0}}, {"channel", {0}}, {"data", {0}}, {"id", {0}},
                         {"since", {0}}, {"exclude_self", {0}}, {"n", {0}}, {"t", {0}}};
    cd_json_error err;

    CHECK_EQ(cd_json_object_fields(doc, sizeof(doc) - 1, f, CD_ARRAY_LEN(f), 8, &err),
             CD_JSON_OK);
    CHECK(span_is(&f[0].value, CD_JSON_STRING, "\"publish\""));
    CHECK(span_is(&f[1].value, CD_JSON_STRING, "\"news\""));
    CHECK(span_is(&f[2].value, CD_JSON_OBJECT, "{\"x\": [1, 2] , \"type\":\"no\"}"));
    CHECK(span_is(&f[3].value, CD_JSON_NUMBER, "7"));
    CHECK_EQ(f[4].value.type, CD_JSON_NONE);
    CHECK(f[4].value.raw == NULL);
    CHECK(span_is(&f[5].value, CD_JSON_FALSE, "false"));
    CHECK(span_is(&f[6].value, CD_JSON_NULL, "null"));
    CHECK(span_is(&f[7].value, CD_JSON_TRUE, "true"));
    /* Spans point into the input, for forwarding without a copy. */
    CHECK(f[2].value.raw > doc && f[2].value.raw < doc + sizeof(doc));
    CHECK_EQ(fields_exact(doc, sizeof(doc) - 1, f, CD_ARRAY_LEN(f)), CD_JSON_OK);

    /* The whole text's span, without the whitespace around it. */
    cd_json_value top;
    CHECK_EQ(cd_json_validate(doc, sizeof(doc) - 1, 8, &top, NULL), CD_JSON_OK);
    CHECK_EQ(top.type, CD_JSON_OBJECT);
    CHECK(top.raw == doc + 1);
    CHECK_EQ(top.len, sizeof(doc) - 3);
}

TEST(test_fields_absent_nested)
{
    cd_json_field f[] = {{"type", {0}}, {"id", {0}}};

    CHECK_EQ(cd_json_object_fields("{\"a\":{\"type\":\"x\"},\"b\":[{\"id\":1}]}", 33, f, 2, 8,
                                   NULL),
             CD_JSON_OK);
    CHECK_EQ(f[0].value.type, CD_JSON_NONE);
    CHECK_EQ(f[1].value.type, CD_JSON_NONE);
    /* A nested member of the same name does not count against the top one. */
    static const char d2[] = "{\"d\":{\"type\":1},\"type\":2,\"e\":[{\"type\":3}]}";
    CHECK_EQ(cd_json_object_fields(d2, sizeof(d2) - 1, f, 2, 8, NULL), CD_JSON_OK);
    CHECK(span_is(&f[0].value, CD_JSON_NUMBER, "2"));
    CHECK_EQ(cd_json_object_fields("{}", 2, f, 2, 8, NULL), CD_JSON_OK);
    CHECK_EQ(f[0].value.type, CD_JSON_NONE);
    /* No fields asked: plain validation of an object. */
    CHECK_EQ(cd_json_object_fields("{\"a\":1}", 7, NULL, 0, 8, NULL), CD_JSON_OK);
    /* The value right before the closing brace, a nested container last. */
    static const char d3[] = "{\"x\":1,\"type\":[{\"a\":[]},[\"}\"]]}";
    CHECK_EQ(cd_json_object_fields(d3, sizeof(d3) - 1, f, 2, 8, NULL), CD_JSON_OK);
    CHECK(span_is(&f[0].value, CD_JSON_ARRAY, "[{\"a\":[]},[\"}\"]]"));
}

TEST(test_fields_not_object)
{
    static const text cases[] = {T("[1]"), T("\"type\""), T("1"), T("null"), T(" [ ] "),
                                 T("[{\"type\":1}]")};
    for (size_t i = 0; i < CD_ARRAY_LEN(cases); i++) {
        cd_json_field f[] = {{"type", {0}}};
        CHECK_EQ(fields_exact(cases[i].s, cases[i].n, f, 1), CD_JSON_NOT_OBJECT);
        CHECK_EQ(f[0].value.type, CD_JSON_NONE);
    }
}

TEST(test_fields_duplicates)
{
    cd_json_field f[] = {{"type", {0}}, {"data", {0}}};

    CHECK_EQ(fields_exact("{\"type\":\"a\",\"type\":\"b\"}", 23, f, 2), CD_JSON_DUPLICATE);
    CHECK_EQ(f[0].value.type, CD_JSON_NONE);
    CHECK_EQ(f[1].value.type, CD_JSON_NONE);
    /* The same name spelled with an escape is the same name. */
    static const char esc[] = "{\"type\":\"a\",\"data\":1,\"\\u0074ype\":\"b\"}";
    CHECK_EQ(fields_exact(esc, sizeof(esc) - 1, f, 2), CD_JSON_DUPLICATE);
    /* Unrequested keys may repeat. */
    static const char other[] = "{\"x\":1,\"x\":2,\"type\":\"t\",\"x\":{}}";
    CHECK_EQ(fields_exact(other, sizeof(other) - 1, f, 2), CD_JSON_OK);
    CHECK_EQ(cd_json_object_fields(other, sizeof(other) - 1, f, 2, 4, NULL), CD_JSON_OK);
    CHECK(span_is(&f[0].value, CD_JSON_STRING, "\"t\""));
    /* Validity comes first: a duplicate in an invalid text is INVALID. */
    CHECK_EQ(fields_exact("{\"type\":1,\"type\":2,", 19, f, 2), CD_JSON_INVALID);
    /* A duplicate that is not an object member at the top does not count. */
    static const char deep[] = "{\"type\":1,\"data\":{\"type\":2,\"type\":3}}";
    CHECK_EQ(fields_exact(deep, sizeof(deep) - 1, f, 2), CD_JSON_OK);
    /* Duplicates in a non-object: NOT_OBJECT. */
    CHECK_EQ(fields_exact("[{\"type\":1,\"type\":2}]", 21, f, 2), CD_JSON_NOT_OBJECT);
}

TEST(test_fields_escaped_keys)
{
    cd_json_field f[] = {{"type", {0}}, {"caf\xc3\xa9", {0}}, {"a\"b", {0}}, {"", {0}},
                         {"\xf0\x9f\x98\x80", {0}}, {"x/y", {0}}};
    static const char doc[] = "{\"\\u0074\\u0079pe\":1,\"caf\\u00e9\":2,\"a\\\"b\":3,\"\":4,"
                              "\"\\ud83d\\ude00\":5,\"x\\/y\":6}";

    CHECK_EQ(fields_exact(doc, sizeof(doc) - 1, f, CD_ARRAY_LEN(f)), CD_JSON_OK);
    CHECK_EQ(cd_json_object_fields(doc, sizeof(doc) - 1, f, CD_ARRAY_LEN(f), 4, NULL),
             CD_JSON_OK);
    for (size_t i = 0; i < CD_ARRAY_LEN(f); i++) {
        int64_t v = 0;
        CHECK_EQ(cd_json_int64(&f[i].value, &v), 0);
        CHECK_EQ(v, (int64_t)i + 1);
    }
    /* Near misses: a NUL, a prefix, a longer key, case. */
    static const char miss[] = "{\"type\\u0000\":1,\"typ\":2,\"types\":3,\"Type\":4,"
                               "\"caf\\u00c9\":5,\"\\u0000\":6}";
    CHECK_EQ(fields_exact(miss, sizeof(miss) - 1, f, 2), CD_JSON_OK);
    CHECK_EQ(f[0].value.type, CD_JSON_NONE);
    CHECK_EQ(f[1].value.type, CD_JSON_NONE);
    cd_json_field empty[] = {{"", {0}}};
    CHECK_EQ(fields_exact(miss, sizeof(miss) - 1, empty, 1), CD_JSON_OK);
    CHECK_EQ(empty[0].value.type, CD_JSON_NONE);
}

TEST(test_array_iterator)
{
    static const char doc[] = "[1, \"a\\\"]\" ,{\"b\":[2,\"]\"]}, [], null,true,false,-1.5e3 ,"
                              "\"\\\\\" ]";
    cd_json_value arr, e;
    size_t pos = 0, n = 0;
    static const struct {
        cd_json_type type;
        const char *raw;
    } want[] = {
        {CD_JSON_NUMBER, "1"},
        {CD_JSON_STRING, "\"a\\\"]\""},
        {CD_JSON_OBJECT, "{\"b\":[2,\"]\"]}"},
        {CD_JSON_ARRAY, "[]"},
        {CD_JSON_NULL, "null"},
        {CD_JSON_TRUE, "true"},
        {CD_JSON_FALSE, "false"},
        {CD_JSON_NUMBER, "-1.5e3"},
        {CD_JSON_STRING, "\"\\\\\""},
    };

    CHECK_EQ(cd_json_validate(doc, sizeof(doc) - 1, 8, &arr, NULL), CD_JSON_OK);
    while (cd_json_array_next(&arr, &pos, &e)) {
        if (n < CD_ARRAY_LEN(want))
            CHECK(span_is(&e, want[n].type, want[n].raw));
        n++;
    }
    CHECK_EQ(n, CD_ARRAY_LEN(want));
    CHECK(!cd_json_array_next(&arr, &pos, &e));     /* stays at the end */

    cd_json_value empty = {CD_JSON_ARRAY, "[ ]", 3};
    pos = 0;
    CHECK(!cd_json_array_next(&empty, &pos, &e));
    /* The wrong type iterates over nothing. */
    cd_json_value obj = {CD_JSON_OBJECT, "{}", 2};
    pos = 0;
    CHECK(!cd_json_array_next(&obj, &pos, &e));
    CHECK(!cd_json_array_next(NULL, &pos, &e));
}

TEST(test_object_iterator)
{
    static const char doc[] = "{ \"a\\\"b\" : 1, \"c\":[{\"}\":\"]\"}] ,\"\":{} ,"
                              "\"a\\\"b\":\"dup\"}";
    cd_json_value obj, k, v;
    size_t pos = 0, n = 0;
    static const char *const keys[] = {"a\"b", "c", "", "a\"b"};
    static const char *const vals[] = {"1", "[{\"}\":\"]\"}]", "{}", "\"dup\""};

    CHECK_EQ(cd_json_validate(doc, sizeof(doc) - 1, 8, &obj, NULL), CD_JSON_OK);
    while (cd_json_object_next(&obj, &pos, &k, &v)) {
        CHECK_EQ(k.type, CD_JSON_STRING);
        if (n < 4) {
            CHECK(cd_json_str_eq(&k, keys[n]));
            CHECK(v.len == strlen(vals[n]) && memcmp(v.raw, vals[n], v.len) == 0);
        }
        n++;
    }
    CHECK_EQ(n, 4);
    /* The nested lookup sees the duplicate. */
    cd_json_value out;
    CHECK_EQ(cd_json_object_get(&obj, "a\"b", &out), CD_JSON_DUPLICATE);
    CHECK_EQ(out.type, CD_JSON_NONE);
    CHECK_EQ(cd_json_object_get(&obj, "c", &out), CD_JSON_OK);
    CHECK_EQ(out.type, CD_JSON_ARRAY);
    CHECK_EQ(cd_json_object_get(&obj, "zz", &out), CD_JSON_OK);
    CHECK_EQ(out.type, CD_JSON_NONE);
    cd_json_value arr = {CD_JSON_ARRAY, "[]", 2};
    CHECK_EQ(cd_json_object_get(&arr, "c", &out), CD_JSON_NOT_OBJECT);
}

TEST(test_nested_since)
{
    static const char doc[] = "{\"type\":\"subscribe\",\"channel\":\"c\","
                              "\"since\":{\"offset\":41,\"\\u0065poch\":\"e-7\"}}";
    cd_json_field f[] = {{"type", {0}}, {"since", {0}}};

    CHECK_EQ(cd_json_object_fields(doc, sizeof(doc) - 1, f, 2, 8, NULL), CD_JSON_OK);
    cd_json_field s[] = {{"offset", {0}}, {"epoch", {0}}, {"other", {0}}};
    CHECK_EQ(cd_json_get_fields(&f[1].value, s, 3), CD_JSON_OK);
    uint64_t off = 0;
    CHECK_EQ(cd_json_uint64(&s[0].value, &off), 0);
    CHECK_EQ(off, 41);
    char epoch[8];
    size_t len;
    CHECK_EQ(cd_json_name(&s[1].value, epoch, sizeof(epoch), &len), 0);
    CHECK_STR(epoch, "e-7");
    CHECK_EQ(len, 3);
    CHECK_EQ(s[2].value.type, CD_JSON_NONE);
    CHECK_EQ(cd_json_get_fields(&f[0].value, s, 3), CD_JSON_NOT_OBJECT);
}

/* Iterators and accessors on spans that are not valid JSON: any answer,
 * but no read outside the (exact-size) span and no endless loop. */
TEST(test_iterators_on_garbage)
{
    static const text bad[] = {
        T("[1,"), T("[\"\\"), T("[\"a"), T("[[[["), T("[}"), T("[:"), T("[,,,"), T("["),
        T("{\"a"), T("{\"a\":"), T("{\"a\" 1"), T("{1:2}"), T("{\"a\":[}"), T("{"), T("{,"),
        T("{\"\\\\\\\""), T("[\"\\\\\"]"), T("[ ]]]]"), T("{\"a\":1,,}"), T("[x]"),
    };
    for (size_t i = 0; i < CD_ARRAY_LEN(bad); i++) {
        char *copy = malloc(bad[i].n);
        if (copy == NULL)
            abort();
        memcpy(copy, bad[i].s, bad[i].n);
        cd_json_value a = {CD_JSON_ARRAY, copy, bad[i].n}, o = {CD_JSON_OBJECT, copy, bad[i].n};
        cd_json_value e, k, v;
        size_t pos = 0;
        int steps = 0;
        while (cd_json_array_next(&a, &pos, &e) && steps < 100) {
            CHECK(e.raw >= copy && e.raw + e.len <= copy + bad[i].n);
            steps++;
        }
        CHECK(steps < 100);
        pos = 0;
        steps = 0;
        while (cd_json_object_next(&o, &pos, &k, &v) && steps < 100) {
            CHECK(v.raw >= copy && v.raw + v.len <= copy + bad[i].n);
            char buf[16];
            (void)cd_json_string(&k, buf, sizeof(buf), NULL);
            (void)cd_json_str_eq(&k, "a");
            steps++;
        }
        CHECK(steps < 100);
        cd_json_field f[] = {{"a", {0}}};
        (void)cd_json_get_fields(&o, f, 1);
        /* A "string" whose escapes run off the end. */
        cd_json_value s = {CD_JSON_STRING, copy, bad[i].n};
        char buf[16];
        (void)cd_json_string(&s, buf, sizeof(buf), NULL);
        (void)cd_json_str_eq_ci(&s, "a");
        free(copy);
    }
    cd_json_value cut = {CD_JSON_STRING, "\"\\u12\"", 6};
    char buf[8];
    CHECK_EQ(cd_json_string(&cut, buf, sizeof(buf), NULL), CONDUIT_EINVAL);
    cd_json_value lone = {CD_JSON_STRING, "\"\\ud800\"", 8};
    CHECK_EQ(cd_json_string(&lone, buf, sizeof(buf), NULL), CONDUIT_EINVAL);
    CHECK(!cd_json_str_eq(&lone, "x"));
}

/* Decode the single JSON text `json` (a string) and compare with want. */
static void check_decode(const char *json, const char *want, size_t want_len)
{
    cd_json_value v;
    char out[64];
    size_t len = 99;

    CHECK_EQ(cd_json_validate(json, strlen(json), 1, &v, NULL), CD_JSON_OK);
    CHECK_EQ(cd_json_string(&v, out, sizeof(out), &len), 0);
    CHECK_EQ(len, want_len);
    if (len == want_len)
        CHECK_MEM(out, want, want_len);
    CHECK_EQ(out[len], '\0');
    CHECK(len <= v.len - 2);
}

TEST(test_string_decode)
{
    check_decode("\"plain\"", "plain", 5);
    check_decode("\"\"", "", 0);
    check_decode("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"", "a\"b\\c/d\b\f\n\r\t", 12);
    check_decode("\"\\u00e9\"", "\xc3\xa9", 2);
    check_decode("\"\\u20AC\"", "\xe2\x82\xac", 3);
    check_decode("\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80", 4);
    check_decode("\"\\uD83D\\uDE00!\"", "\xf0\x9f\x98\x80!", 5);
    check_decode("\"\\uDBFF\\uDFFF\"", "\xf4\x8f\xbf\xbf", 4);
    check_decode("\"\\u0041\\u007F\\u0080\\u07ff\\u0800\\uffff\"",
                 "A\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf", 12);
    check_decode("\"x\\u0000y\"", "x\0y", 3);
    check_decode("\"caf\xc3\xa9 \\u00e9\"", "caf\xc3\xa9 \xc3\xa9", 8);

    /* Names refuse a NUL. */
    cd_json_value v = {CD_JSON_STRING, "\"x\\u0000y\"", 10};
    char out[16];
    size_t len = 7;
    CHECK_EQ(cd_json_name(&v, out, sizeof(out), &len), CONDUIT_EINVAL);
    CHECK_STR(out, "");
    CHECK_EQ(len, 0);
    v = (cd_json_value){CD_JSON_STRING, "\"chat:\\u00e9\"", 13};
    CHECK_EQ(cd_json_name(&v, out, sizeof(out), &len), 0);
    CHECK_STR(out, "chat:\xc3\xa9");

    /* Capacity counts the NUL. */
    v = (cd_json_value){CD_JSON_STRING, "\"abc\"", 5};
    CHECK_EQ(cd_json_string(&v, out, 4, &len), 0);
    CHECK_STR(out, "abc");
    CHECK_EQ(cd_json_string(&v, out, 3, &len), CONDUIT_ELIMIT);
    CHECK_STR(out, "");
    CHECK_EQ(cd_json_string(&v, out, 0, NULL), CONDUIT_ELIMIT);
    v = (cd_json_value){CD_JSON_STRING, "\"\\u00e9\"", 8};
    CHECK_EQ(cd_json_string(&v, out, 3, &len), 0);
    CHECK_EQ(len, 2);
    CHECK_EQ(cd_json_string(&v, out, 2, &len), CONDUIT_ELIMIT);
    v = (cd_json_value){CD_JSON_STRING, "\"ab\\n\"", 6};
    CHECK_EQ(cd_json_string(&v, out, 3, &len), CONDUIT_ELIMIT);
    CHECK_EQ(cd_json_string(&v, out, 4, &len), 0);
    /* Not a string. */
    v = (cd_json_value){CD_JSON_NUMBER, "1", 1};
    CHECK_EQ(cd_json_string(&v, out, sizeof(out), &len), CONDUIT_EINVAL);
    CHECK_EQ(cd_json_string(NULL, out, sizeof(out), &len), CONDUIT_EINVAL);
    v = (cd_json_value){CD_JSON_NONE, NULL, 0};
    CHECK_EQ(cd_json_name(&v, out, sizeof(out), &len), CONDUIT_EINVAL);
}

static cd_json_value num(const char *s)
{
    return (cd_json_value){CD_JSON_NUMBER, s, strlen(s)};
}

static int i64(const char *s, int64_t *out)
{
    cd_json_value v = num(s);
    return cd_json_int64(&v, out);
}

static int u64(const char *s, uint64_t *out)
{
    cd_json_value v = num(s);
    return cd_json_uint64(&v, out);
}

TEST(test_integers)
{
    int64_t i = 5;
    uint64_t u = 5;

    CHECK_EQ(i64("0", &i), 0);
    CHECK_EQ(i, 0);
    CHECK_EQ(i64("-0", &i), 0);
    CHECK_EQ(i, 0);
    CHECK_EQ(i64("123", &i), 0);
    CHECK_EQ(i, 123);
    CHECK_EQ(i64("-123", &i), 0);
    CHECK_EQ(i, -123);
    CHECK_EQ(i64("9223372036854775807", &i), 0);
    CHECK(i == INT64_MAX);
    CHECK_EQ(i64("-9223372036854775808", &i), 0);
    CHECK(i == INT64_MIN);
    CHECK_EQ(i64("9223372036854775808", &i), CONDUIT_ELIMIT);
    CHECK_EQ(i64("-9223372036854775809", &i), CONDUIT_ELIMIT);
    CHECK_EQ(i64("99999999999999999999999", &i), CONDUIT_ELIMIT);
    CHECK_EQ(i64("1.0", &i), CONDUIT_EINVAL);
    CHECK_EQ(i64("1e3", &i), CONDUIT_EINVAL);
    CHECK_EQ(i64("1E3", &i), CONDUIT_EINVAL);
    CHECK_EQ(i64("99999999999999999999999.5", &i), CONDUIT_EINVAL);
    CHECK_EQ(i64("-", &i), CONDUIT_EINVAL);
    CHECK_EQ(i64("01", &i), CONDUIT_EINVAL);
    CHECK(i == INT64_MIN);      /* untouched on error */

    CHECK_EQ(u64("18446744073709551615", &u), 0);
    CHECK(u == UINT64_MAX);
    CHECK_EQ(u64("18446744073709551616", &u), CONDUIT_ELIMIT);
    CHECK_EQ(u64("9223372036854775808", &u), 0);
    CHECK(u == 9223372036854775808ull);
    CHECK_EQ(u64("-1", &u), CONDUIT_ELIMIT);
    CHECK_EQ(u64("-0", &u), 0);
    CHECK_EQ(u, 0);
    CHECK_EQ(u64("0.5", &u), CONDUIT_EINVAL);

    cd_json_value s = {CD_JSON_STRING, "\"1\"", 3};
    CHECK_EQ(cd_json_int64(&s, &i), CONDUIT_EINVAL);
    CHECK_EQ(cd_json_uint64(&s, &u), CONDUIT_EINVAL);
    CHECK_EQ(cd_json_int64(NULL, &i), CONDUIT_EINVAL);

    /* From a parsed message. */
    static const char doc[] = "{\"a\":-42,\"b\":4.2,\"c\":\"7\"}";
    cd_json_field f[] = {{"a", {0}}, {"b", {0}}, {"c", {0}}};
    CHECK_EQ(cd_json_object_fields(doc, sizeof(doc) - 1, f, 3, 4, NULL), CD_JSON_OK);
    CHECK_EQ(cd_json_int64(&f[0].value, &i), 0);
    CHECK_EQ(i, -42);
    CHECK_EQ(cd_json_int64(&f[1].value, &i), CONDUIT_EINVAL);
    CHECK_EQ(cd_json_int64(&f[2].value, &i), CONDUIT_EINVAL);
}

static cd_json_value str(const char *s)
{
    return (cd_json_value){CD_JSON_STRING, s, strlen(s)};
}

TEST(test_str_eq)
{
    cd_json_value v = str("\"ping\"");
    CHECK(cd_json_str_eq(&v, "ping"));
    CHECK(!cd_json_str_eq(&v, "pin"));
    CHECK(!cd_json_str_eq(&v, "pingg"));
    CHECK(!cd_json_str_eq(&v, ""));
    CHECK(!cd_json_str_eq(&v, NULL));
    CHECK(cd_json_str_eq_ci(&v, "PING"));

    v = str("\"\\u0070ing\"");
    CHECK(cd_json_str_eq(&v, "ping"));
    CHECK(cd_json_str_eq_ci(&v, "Ping"));
    v = str("\"PING\"");
    CHECK(!cd_json_str_eq(&v, "ping"));
    CHECK(cd_json_str_eq_ci(&v, "ping"));
    v = str("\"P\\u0049nG\"");
    CHECK(cd_json_str_eq_ci(&v, "ping"));
    CHECK(cd_json_str_eq_ci(&v, "PING"));
    CHECK(!cd_json_str_eq_ci(&v, "pink"));
    v = str("\"JOIN_ROOM\"");
    CHECK(cd_json_str_eq_ci(&v, "join_room"));
    CHECK(!cd_json_str_eq_ci(&v, "join-room"));
    /* A NUL in the value ends nothing: "pi\0ng" is not "pi". */
    v = str("\"pi\\u0000ng\"");
    CHECK(!cd_json_str_eq(&v, "pi"));
    CHECK(!cd_json_str_eq_ci(&v, "pi"));
    /* Folding is ASCII only. */
    v = str("\"\xc3\xa9\"");
    CHECK(cd_json_str_eq_ci(&v, "\xc3\xa9"));
    CHECK(!cd_json_str_eq_ci(&v, "\xc3\x89"));
    v = str("\"\"");
    CHECK(cd_json_str_eq(&v, ""));
    CHECK(cd_json_str_eq_ci(&v, ""));
    /* '@' and '[' sit beside the letters: they must not fold. */
    v = str("\"@[\"");
    CHECK(!cd_json_str_eq_ci(&v, "`{"));
    v = num("1");
    CHECK(!cd_json_str_eq(&v, "1"));
    CHECK(!cd_json_str_eq_ci(&v, "1"));
    CHECK(!cd_json_str_eq(NULL, "1"));
}

/* ------------------------------------------------------------------ */
/* Writer. */

static void check_out(cd_bytes *b, const char *want)
{
    size_t n = strlen(want);
    CHECK_EQ(b->len, n);
    if (b->len == n)
        CHECK_MEM(b->data, want, n);
    else
        printf("  # got <%.*s>\n", (int)b->len, (const char *)b->data);
}

TEST(test_writer_basic)
{
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;

    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "type");
    cd_jw_cstr(&w, "pong");
    cd_jw_key(&w, "id");
    cd_jw_int(&w, 7);
    cd_jw_key(&w, "ok");
    cd_jw_bool(&w, true);
    cd_jw_key(&w, "no");
    cd_jw_bool(&w, false);
    cd_jw_key(&w, "n");
    cd_jw_null(&w);
    cd_jw_key(&w, "arr");
    cd_jw_array_begin(&w);
    cd_jw_int(&w, 1);
    cd_jw_int(&w, -2);
    cd_jw_string(&w, "x", 1);
    cd_jw_array_begin(&w);
    cd_jw_array_end(&w);
    cd_jw_object_begin(&w);
    cd_jw_object_end(&w);
    cd_jw_cstr(&w, NULL);
    cd_jw_array_end(&w);
    cd_jw_key(&w, "o");
    cd_jw_object_begin(&w);
    cd_jw_key_n(&w, "k\"", 2);
    cd_jw_uint(&w, UINT64_MAX);
    cd_jw_object_end(&w);
    cd_jw_object_end(&w);
    CHECK_EQ(cd_jw_finish(&w), 0);
    check_out(&b, "{\"type\":\"pong\",\"id\":7,\"ok\":true,\"no\":false,\"n\":null,"
                  "\"arr\":[1,-2,\"x\",[],{},null],\"o\":{\"k\\\"\":18446744073709551615}}");
    CHECK_EQ(w.len, b.len);

    /* A top-level scalar, appended after what the buffer held. */
    size_t before = b.len;
    cd_jw_init(&w, &b);
    cd_jw_int(&w, INT64_MIN);
    CHECK_EQ(cd_jw_finish(&w), 0);
    CHECK_EQ(b.len - before, 20);
    CHECK_MEM(b.data + before, "-9223372036854775808", 20);
    cd_bytes_free(&b);

    cd_jw_init(&w, &b);
    cd_jw_array_begin(&w);
    cd_jw_int(&w, INT64_MAX);
    cd_jw_int(&w, 0);
    cd_jw_uint(&w, 0);
    cd_jw_int(&w, -1);
    cd_jw_array_end(&w);
    CHECK_EQ(cd_jw_finish(&w), 0);
    check_out(&b, "[9223372036854775807,0,0,-1]");
    cd_bytes_free(&b);
}

static void check_string_out(const char *s, size_t n, const char *want)
{
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;

    cd_jw_init(&w, &b);
    cd_jw_string(&w, s, n);
    CHECK_EQ(cd_jw_finish(&w), 0);
    check_out(&b, want);
    CHECK_EQ(cd_json_validate((const char *)b.data, b.len, 1, NULL, NULL), CD_JSON_OK);
    cd_bytes_free(&b);
}

TEST(test_writer_escaping)
{
    check_string_out("", 0, "\"\"");
    check_string_out(NULL, 0, "\"\"");
    check_string_out("\"\\\b\f\n\r\t\x01\x1f/\x7f", 11,
                     "\"\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f/\x7f\"");
    check_string_out("a\0b", 3, "\"a\\u0000b\"");
    check_string_out("caf\xc3\xa9 \xf0\x9f\x98\x80 \xef\xbf\xbf", 14,
                     "\"caf\xc3\xa9 \xf0\x9f\x98\x80 \xef\xbf\xbf\"");
    /* Invalid UTF-8: one U+FFFD per maximal ill-formed subpart. */
    check_string_out("\xff", 1, "\"\xef\xbf\xbd\"");
    check_string_out("a\xc3", 2, "\"a\xef\xbf\xbd\"");
    check_string_out("\xe2\x82", 2, "\"\xef\xbf\xbd\"");
    check_string_out("\xe2\x82x", 3, "\"\xef\xbf\xbdx\"");
    check_string_out("\xe0\x80", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\"");
    check_string_out("\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    check_string_out("\xf0\x9f\x98", 3, "\"\xef\xbf\xbd\"");
    check_string_out("\xc0\xaf", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\"");
    check_string_out("\xf4\x90\x80\x80", 4,
                     "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    check_string_out("ok\x80\"", 4, "\"ok\xef\xbf\xbd\\\"\"");
    /* Keys are escaped the same way. */
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;
    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_key_n(&w, "a\n\xff", 3);
    cd_jw_null(&w);
    cd_jw_object_end(&w);
    CHECK_EQ(cd_jw_finish(&w), 0);
    check_out(&b, "{\"a\\n\xef\xbf\xbd\":null}");
    cd_bytes_free(&b);
}

TEST(test_writer_double)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0.1, "0.1"}, {1.5, "1.5"}, {-2.0, "-2"}, {0.0, "0"}, {-0.0, "-0"}, {1e300, "1e+300"},
        {1e-7, "1e-07"}, {123456789.0, "123456789"}, {5e-324, "4.94065645841247e-324"},
    };
    for (size_t i = 0; i < CD_ARRAY_LEN(cases); i++) {
        cd_bytes b = CD_BYTES_INIT;
        cd_jw w;
        cd_jw_init(&w, &b);
        cd_jw_double(&w, cases[i].v);
        CHECK_EQ(cd_jw_finish(&w), 0);
        check_out(&b, cases[i].want);
        cd_bytes_free(&b);
    }
    /* Values that need 17 digits still read back exactly. */
    double hard[] = {1.0 / 3.0, 0.1 + 0.2, 2.0 / 3.0 * 1e-300, 1.7976931348623157e308};
    for (size_t i = 0; i < CD_ARRAY_LEN(hard); i++) {
        char buf[64];
        cd_jw w;
        cd_jw_init_fixed(&w, buf, sizeof(buf));
        cd_jw_double(&w, hard[i]);
        CHECK_EQ(cd_jw_finish(&w), 0);
        CHECK(strtod(buf, NULL) == hard[i]);
        CHECK_EQ(cd_json_validate(buf, w.len, 1, NULL, NULL), CD_JSON_OK);
    }
    double bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < CD_ARRAY_LEN(bad); i++) {
        cd_bytes b = CD_BYTES_INIT;
        cd_jw w;
        cd_jw_init(&w, &b);
        cd_jw_double(&w, bad[i]);
        CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);
        CHECK_EQ(b.len, 0);
        cd_bytes_free(&b);
    }
}

TEST(test_writer_raw_forwarding)
{
    static const char msg[] = "{\"type\":\"publish\",\"id\":\"r-1\",\"channel\":\"c\","
                              "\"data\":{ \"x\" : [1, \"\\u00e9\"] }}";
    cd_json_field f[] = {{"id", {0}}, {"data", {0}}};
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;

    CHECK_EQ(cd_json_object_fields(msg, sizeof(msg) - 1, f, 2, 16, NULL), CD_JSON_OK);
    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "type");
    cd_jw_cstr(&w, "message");
    cd_jw_key(&w, "id");
    cd_jw_value(&w, &f[0].value);
    cd_jw_key(&w, "data");
    cd_jw_raw(&w, f[1].value.raw, f[1].value.len);
    cd_jw_object_end(&w);
    CHECK_EQ(cd_jw_finish(&w), 0);
    check_out(&b, "{\"type\":\"message\",\"id\":\"r-1\",\"data\":{ \"x\" : [1, \"\\u00e9\"] }}");
    cd_bytes_free(&b);

    /* NONE and empty raw values are refused. */
    cd_json_value none = {CD_JSON_NONE, NULL, 0};
    cd_jw_init(&w, &b);
    cd_jw_value(&w, &none);
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);
    cd_jw_init(&w, &b);
    cd_jw_raw(&w, "", 0);
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);
    CHECK_EQ(b.len, 0);
    cd_bytes_free(&b);
}

/* Each misuse fails with CONDUIT_EINVAL, and nothing after it is written. */
TEST(test_writer_misuse)
{
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;

    /* A value where a key belongs. */
    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_int(&w, 1);
    size_t len = b.len;
    cd_jw_key(&w, "a");
    cd_jw_int(&w, 2);
    cd_jw_object_end(&w);
    CHECK_EQ(b.len, len);
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);
    b.len = 0;

    /* A key in an array, at the top, or twice in a row. */
    cd_jw_init(&w, &b);
    cd_jw_array_begin(&w);
    cd_jw_key(&w, "a");
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);
    b.len = 0;
    cd_jw_init(&w, &b);
    cd_jw_key(&w, "a");
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);
    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "a");
    cd_jw_key(&w, "b");
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);
    b.len = 0;
    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_key(&w, NULL);
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);
    b.len = 0;

    /* Ends that do not match, or end a pending key. */
    cd_jw_init(&w, &b);
    cd_jw_array_begin(&w);
    cd_jw_object_end(&w);
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);
    b.len = 0;
    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "a");
    cd_jw_object_end(&w);
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);
    b.len = 0;
    cd_jw_init(&w, &b);
    cd_jw_array_end(&w);
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);

    /* Two top-level values; containers left open; nothing at all. */
    cd_jw_init(&w, &b);
    cd_jw_int(&w, 1);
    cd_jw_int(&w, 2);
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);
    CHECK_EQ(b.len, 1);
    b.len = 0;
    cd_jw_init(&w, &b);
    cd_jw_array_begin(&w);
    cd_jw_object_begin(&w);
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);
    b.len = 0;
    cd_jw_init(&w, &b);
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);
    cd_jw_init(&w, &b);
    cd_jw_string(&w, NULL, 3);
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_EINVAL);
    cd_bytes_free(&b);
}

TEST(test_writer_depth)
{
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;

    cd_jw_init(&w, &b);
    for (int i = 0; i < CD_JW_MAX_DEPTH; i++) {
        if (i % 2) {
            cd_jw_object_begin(&w);
            cd_jw_key(&w, "k");
        } else {
            cd_jw_array_begin(&w);
        }
    }
    cd_jw_int(&w, 0);
    for (int i = CD_JW_MAX_DEPTH - 1; i >= 0; i--) {
        if (i % 2)
            cd_jw_object_end(&w);
        else
            cd_jw_array_end(&w);
    }
    CHECK_EQ(cd_jw_finish(&w), 0);
    CHECK_EQ(cd_json_validate((const char *)b.data, b.len, CD_JW_MAX_DEPTH, NULL, NULL),
             CD_JSON_OK);
    cd_bytes_free(&b);

    cd_jw_init(&w, &b);
    for (int i = 0; i <= CD_JW_MAX_DEPTH; i++)
        cd_jw_array_begin(&w);
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_ELIMIT);
    CHECK_EQ(b.len, CD_JW_MAX_DEPTH);
    cd_bytes_free(&b);
}

TEST(test_writer_fixed)
{
    char buf[16];
    cd_jw w;

    /* {"a":[1,2]} is 11 bytes: fits in 12 with the NUL, not in 11. */
    for (size_t cap = 0; cap <= 13; cap++) {
        memset(buf, 'X', sizeof(buf));
        cd_jw_init_fixed(&w, buf, cap);
        cd_jw_object_begin(&w);
        cd_jw_key(&w, "a");
        cd_jw_array_begin(&w);
        cd_jw_int(&w, 1);
        cd_jw_int(&w, 2);
        cd_jw_array_end(&w);
        cd_jw_object_end(&w);
        int rc = cd_jw_finish(&w);
        if (cap >= 12) {
            CHECK_EQ(rc, 0);
            CHECK_STR(buf, "{\"a\":[1,2]}");
            CHECK_EQ(w.len, 11);
        } else {
            CHECK_EQ(rc, CONDUIT_ELIMIT);
            CHECK(cap == 0 || strlen(buf) == w.len);
            CHECK(w.len < cap || cap == 0);
        }
        /* Nothing is written at or past cap. */
        for (size_t i = cap; i < sizeof(buf); i++)
            CHECK_EQ(buf[i], 'X');
    }
    cd_jw_init_fixed(&w, NULL, 10);
    cd_jw_null(&w);
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_ELIMIT);
}

TEST(test_writer_enomem)
{
    /* A buffer that cannot grow: cd_bytes_reserve refuses before it ever
     * touches the (absent) memory. */
    cd_bytes b = {NULL, SIZE_MAX / 2, SIZE_MAX / 2};
    cd_jw w;

    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_key(&w, "a");
    cd_jw_int(&w, 1);
    cd_jw_object_end(&w);
    CHECK_EQ(cd_jw_finish(&w), CONDUIT_ENOMEM);
    CHECK_EQ(w.len, 0);
    CHECK(b.len == SIZE_MAX / 2);
}

static uint32_t rng_state = 12345;

static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* Write s as a string member, read the message back, decode: same bytes. */
static void round_trip(const char *s, size_t n)
{
    cd_bytes b = CD_BYTES_INIT;
    cd_jw w;

    cd_jw_init(&w, &b);
    cd_jw_object_begin(&w);
    cd_jw_key_n(&w, s, n);
    cd_jw_string(&w, s, n);
    cd_jw_object_end(&w);
    CHECK_EQ(cd_jw_finish(&w), 0);

    cd_json_value top, k, v;
    CHECK_EQ(cd_json_validate((const char *)b.data, b.len, 2, &top, NULL), CD_JSON_OK);
    size_t pos = 0;
    CHECK(cd_json_object_next(&top, &pos, &k, &v));
    char *out = malloc(v.len);
    if (out == NULL)
        abort();
    size_t len = 0;
    CHECK_EQ(cd_json_string(&v, out, v.len, &len), 0);
    CHECK_EQ(len, n);
    if (len == n)
        CHECK_MEM(out, s, n);
    CHECK_EQ(cd_json_string(&k, out, v.len, &len), 0);
    CHECK_EQ(len, n);
    /* The key matches itself as a field name when it has no NUL. */
    if (memchr(s, '\0', n) == NULL) {
        char *name = malloc(n + 1);
        if (name == NULL)
            abort();
        memcpy(name, s, n);
        name[n] = '\0';
        cd_json_field f[] = {{name, {0}}};
        CHECK_EQ(cd_json_object_fields((const char *)b.data, b.len, f, 1, 2, NULL), CD_JSON_OK);
        CHECK_EQ(f[0].value.type, CD_JSON_STRING);
        CHECK(cd_json_str_eq(&f[0].value, name));
        free(name);
    }
    free(out);
    cd_bytes_free(&b);
}

TEST(test_round_trip)
{
    char s[256];

    /* Every single code point class: each byte alone. */
    for (int c = 0; c < 0x80; c++) {
        s[0] = (char)c;
        round_trip(s, 1);
    }
    /* Random valid UTF-8 mixing controls, quotes, backslashes, 2-4 byte
     * sequences. */
    for (int iter = 0; iter < 2000; iter++) {
        size_t n = 0;
        size_t want = rng() % 40;
        while (n + 4 < sizeof(s) && want-- > 0) {
            uint32_t r = rng(), cp;
            switch (r % 6) {
            case 0:
                cp = r >> 8 & 0x1F;
                break;
            case 1:
                cp = "\"\\/"[(r >> 8) % 3];
                break;
            case 2:
                cp = 0x20 + (r >> 8) % 0x60;
                break;
            case 3:
                cp = 0x80 + (r >> 8) % 0x780;
                break;
            case 4:
                cp = 0x800 + (r >> 8) % 0xF800;
                if (cp >= 0xD800 && cp <= 0xDFFF)
                    cp = 0xFFFD;
                break;
            default:
                cp = 0x10000 + (r >> 8) % 0x100000;
                break;
            }
            if (cp < 0x80) {
                s[n++] = (char)cp;
            } else if (cp < 0x800) {
                s[n++] = (char)(0xC0 | cp >> 6);
                s[n++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                s[n++] = (char)(0xE0 | cp >> 12);
                s[n++] = (char)(0x80 | (cp >> 6 & 0x3F));
                s[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                s[n++] = (char)(0xF0 | cp >> 18);
                s[n++] = (char)(0x80 | (cp >> 12 & 0x3F));
                s[n++] = (char)(0x80 | (cp >> 6 & 0x3F));
                s[n++] = (char)(0x80 | (cp & 0x3F));
            }
        }
        CHECK(cd_utf8_valid((const uint8_t *)s, n));
        round_trip(s, n);
    }
}

/* Arbitrary bytes through the writer always make valid JSON whose decoded
 * text is valid UTF-8 and equals the input wherever the input was. */
TEST(test_writer_arbitrary_bytes)
{
    char s[64];

    for (int iter = 0; iter < 5000; iter++) {
        size_t n = rng() % sizeof(s);
        for (size_t i = 0; i < n; i++)
            s[i] = (char)(rng() % 4 ? 0x80 + rng() % 0x80 : rng() % 0x80);
        cd_bytes b = CD_BYTES_INIT;
        cd_jw w;
        cd_jw_init(&w, &b);
        cd_jw_string(&w, s, n);
        CHECK_EQ(cd_jw_finish(&w), 0);
        cd_json_value v;
        CHECK_EQ(cd_json_validate((const char *)b.data, b.len, 1, &v, NULL), CD_JSON_OK);
        char out[64 * 6 + 1];
        size_t len;
        CHECK_EQ(cd_json_string(&v, out, sizeof(out), &len), 0);
        CHECK(cd_utf8_valid((const uint8_t *)out, len));
        if (cd_utf8_valid((const uint8_t *)s, n)) {
            CHECK_EQ(len, n);
            CHECK_MEM(out, s, n);
        }
        cd_bytes_free(&b);
    }
}

int main(void)
{
    RUN(test_y_cases);
    RUN(test_n_cases);
    RUN(test_error_reasons);
    RUN(test_every_prefix_invalid);
    RUN(test_depth);
    RUN(test_fields_basic);
    RUN(test_fields_absent_nested);
    RUN(test_fields_not_object);
    RUN(test_fields_duplicates);
    RUN(test_fields_escaped_keys);
    RUN(test_array_iterator);
    RUN(test_object_iterator);
    RUN(test_nested_since);
    RUN(test_iterators_on_garbage);
    RUN(test_string_decode);
    RUN(test_integers);
    RUN(test_str_eq);
    RUN(test_writer_basic);
    RUN(test_writer_escaping);
    RUN(test_writer_double);
    RUN(test_writer_raw_forwarding);
    RUN(test_writer_misuse);
    RUN(test_writer_depth);
    RUN(test_writer_fixed);
    RUN(test_writer_enomem);
    RUN(test_round_trip);
    RUN(test_writer_arbitrary_bytes);
    return test_main_end();
}
