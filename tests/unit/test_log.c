/* Unit tests for log.c: JSON escaping and line format. */
#include <unistd.h>

#include "conduit.h"
#include "json.h"
#include "log.h"
#include "test.h"

TEST(escape)
{
    /* Values go through json.c's one escaper, quotes included. */
    char out[64];
    size_t len = 0;
    CHECK_EQ(cd_json_put_string(out, sizeof(out), &len, "a\"b\\c\n\x01", 7), 0);
    CHECK_STR(out, "\"a\\\"b\\\\c\\n\\u0001\"");
    len = 0;
    CHECK_EQ(cd_json_put_string(out, 8, &len, "0123456789", 10), CONDUIT_ELIMIT);
    CHECK_EQ(len, 0);
    len = 0;
    CHECK_EQ(cd_json_put_string(out, sizeof(out), &len, "a\xc3\xa9" "b\xff\xe2\x82", 7), 0);
    /* Each maximal invalid subpart becomes one U+FFFD (Unicode §3.9). */
    CHECK_STR(out, "\"a\xc3\xa9" "b\xef\xbf\xbd\xef\xbf\xbd\"");
}

TEST(line_format)
{
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    cd_logger lg;
    cd_logger_init(&lg, CD_LOG_INFO, fds[1]);
    cd_log(&lg, CD_LOG_DEBUG, "hidden", "x=%d", 1);
    const char *volatile none = NULL; /* the logger prints NULL strings as null */
    cd_log(&lg, CD_LOG_WARN, "ev\"1", "s=%s n=%d big=%llu z=%zu nul=%s", "q\"t", -5,
           18446744073709551615ull, (size_t)7, none);
    close(fds[1]);
    char buf[512] = "";
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
    close(fds[0]);
    CHECK(n > 0);
    CHECK(strstr(buf, "hidden") == NULL);
    CHECK(strstr(buf, "\"level\":\"warn\",\"event\":\"ev\\\"1\",\"s\":\"q\\\"t\",\"n\":-5,"
                      "\"big\":18446744073709551615,\"z\":7,\"nul\":null}\n") != NULL);
    CHECK_EQ(cd_log_level_parse("warning"), CD_LOG_WARN);
    CHECK_EQ(cd_log_level_parse("nope"), -1);
}

int main(void)
{
    RUN(escape);
    RUN(line_format);
    return test_main_end();
}
