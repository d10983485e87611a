/* Unit tests for net.c: address parsing and formatting, port-0 listen. */
#include <unistd.h>

#include "net.h"
#include "test.h"

static void roundtrip(const char *in, const char *want)
{
    cd_addr a;
    char err[128], out[64];
    CHECK_EQ(cd_addr_parse(in, &a, err, sizeof(err)), 0);
    cd_addr_format((struct sockaddr *)&a.ss, out, sizeof(out));
    CHECK_STR(out, want);
}

TEST(parse)
{
    roundtrip("127.0.0.1:8080", "127.0.0.1:8080");
    roundtrip("[::1]:9", "[::1]:9");
    roundtrip("localhost:1", "127.0.0.1:1");
    roundtrip(":80", "0.0.0.0:80");
    cd_addr a;
    char err[128];
    CHECK(cd_addr_parse("127.0.0.1", &a, err, sizeof(err)) < 0);
    CHECK(cd_addr_parse("127.0.0.1:65536", &a, err, sizeof(err)) < 0);
    CHECK(cd_addr_parse("127.0.0.1:x", &a, err, sizeof(err)) < 0);
    CHECK(cd_addr_parse("[::1:80", &a, err, sizeof(err)) < 0);
    CHECK(cd_addr_parse("example.com:80", &a, err, sizeof(err)) < 0);
    CHECK(strstr(err, "example.com") != NULL);
}

TEST(listen_port_zero_shared)
{
    cd_addr a;
    char err[128];
    CHECK_EQ(cd_addr_parse("127.0.0.1:0", &a, err, sizeof(err)), 0);
    int fd1 = cd_net_listen(&a, 16);
    CHECK(fd1 >= 0);
    CHECK_EQ(cd_net_local_addr(fd1, &a), 0);
    CHECK(cd_addr_port(&a) > 0);
    int fd2 = cd_net_listen(&a, 16); /* SO_REUSEPORT: same port again */
    CHECK(fd2 >= 0);
    close(fd1);
    close(fd2);
}

int main(void)
{
    RUN(parse);
    RUN(listen_port_zero_shared);
    return test_main_end();
}
