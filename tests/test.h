/* test.h - the unit-test harness: one binary per module, TAP-like output.
 *
 * TEST(name) defines a test; RUN(name) runs it in main().  CHECK* macros
 * print both operands on failure and keep going; the binary exits non-zero
 * if any check failed.  test_main_end() prints "N passed, N failed". */
#ifndef CD_TEST_H
#define CD_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_checks_failed;
static int test_current_failed;
static int tests_passed;
static int tests_failed;

#define TEST(name) static void name(void)

#define RUN(name)                                                          \
    do {                                                                   \
        test_current_failed = 0;                                           \
        name();                                                            \
        if (test_current_failed) {                                         \
            tests_failed++;                                                \
            printf("not ok - %s\n", #name);                                \
        } else {                                                           \
            tests_passed++;                                                \
            printf("ok - %s\n", #name);                                    \
        }                                                                  \
    } while (0)

#define TEST_FAIL_AT(file, line, ...)                                      \
    do {                                                                   \
        printf("  # %s:%d: ", file, line);                                 \
        printf(__VA_ARGS__);                                               \
        printf("\n");                                                      \
        test_checks_failed++;                                              \
        test_current_failed = 1;                                           \
    } while (0)

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond))                                                       \
            TEST_FAIL_AT(__FILE__, __LINE__, "CHECK(%s) failed", #cond);   \
    } while (0)

#define CHECK_EQ(a, b)                                                     \
    do {                                                                   \
        long long test_a_ = (long long)(a), test_b_ = (long long)(b);      \
        if (test_a_ != test_b_)                                            \
            TEST_FAIL_AT(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, \
                         #b, test_a_, test_b_);                            \
    } while (0)

#define CHECK_STR(a, b)                                                    \
    do {                                                                   \
        const char *test_a_ = (a), *test_b_ = (b);                         \
        if (test_a_ == NULL || test_b_ == NULL || strcmp(test_a_, test_b_)) \
            TEST_FAIL_AT(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", \
                         #a, #b, test_a_ ? test_a_ : "(null)",             \
                         test_b_ ? test_b_ : "(null)");                    \
    } while (0)

#define CHECK_MEM(a, b, n)                                                 \
    do {                                                                   \
        size_t test_n_ = (size_t)(n);                                      \
        if (memcmp((a), (b), test_n_) != 0)                                \
            TEST_FAIL_AT(__FILE__, __LINE__, "%s and %s differ in %zu bytes", \
                         #a, #b, test_n_);                                 \
    } while (0)

static inline int test_main_end(void)
{
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    return tests_failed ? 1 : 0;
}

#endif
