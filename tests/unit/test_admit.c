/* Unit tests for admit.c: origin rules, address storage and keys, and the
 * caps with their exact verdicts.  Everything server-independent: the
 * integration tests (test_abuse.py) cross each limit through the binary. */
#include <arpa/inet.h>
#include <string.h>

#include "admit.h"
#include "common.h"
#include "conduit.h"
#include "test.h"

static void options(conduit_options *o)
{
    conduit_options_init(o);
}

static cd_addr addr_of(const char *text)
{
    cd_addr a;
    char err[64];
    CHECK_EQ(cd_addr_parse(text, &a, err, sizeof(err)), 0);
    return a;
}

TEST(origin_list_exact_and_wildcard)
{
    conduit_options o;
    options(&o);
    char err[128];
    CHECK_EQ(conduit_options_set(&o, "allowed_origins",
                                 "https://app.example.com, https://*.example.org", err,
                                 sizeof(err)), 0);
    cd_admit a;
    CHECK_EQ(cd_admit_init(&a, &o, err, sizeof(err)), 0);
    cd_admit_verdict v;
    static const struct {
        const char *origin;
        int status;
    } cases[] = {
        {"https://app.example.com", 0},  {"HTTPS://APP.EXAMPLE.COM", 0},
        {"https://x.example.org", 0},    {"http://app.example.com", 403},
        {"https://app.example.com:8443", 403}, {"https://evil.example.com", 403},
        {"null", 403},
    };
    for (size_t i = 0; i < CD_ARRAY_LEN(cases); i++) {
        cd_admit_origin(&a, cases[i].origin, strlen(cases[i].origin), "h", 1, false, &v);
        CHECK_EQ(v.status, cases[i].status);
    }
    cd_admit_origin(&a, NULL, 0, "h", 1, false, &v);  /* not a browser */
    CHECK_EQ(v.status, 0);
    cd_admit_fini(&a);
    conduit_options_fini(&o);
}

TEST(origin_same_origin_only_for_cookie_tokens)
{
    conduit_options o;
    options(&o);
    char err[128];
    cd_admit a;
    CHECK_EQ(cd_admit_init(&a, &o, err, sizeof(err)), 0);
    cd_admit_verdict v;
    const char *host = "chat.example.com:8080";
    cd_admit_origin(&a, "https://evil.example", 20, host, strlen(host), false, &v);
    CHECK_EQ(v.status, 0);
    cd_admit_origin(&a, "https://evil.example", 20, host, strlen(host), true, &v);
    CHECK_EQ(v.status, 403);
    CHECK_STR(v.code, "Forbidden");
    const char *same = "http://chat.example.com:8080";
    cd_admit_origin(&a, same, strlen(same), host, strlen(host), true, &v);
    CHECK_EQ(v.status, 0);
    cd_admit_fini(&a);
    conduit_options_fini(&o);
}

TEST(bad_origin_and_cidr_options_are_refused)
{
    conduit_options o;
    options(&o);
    char err[200];
    CHECK_EQ(conduit_options_set(&o, "allowed_origins", "app.example.com", err, sizeof(err)),
             0);
    cd_admit a;
    CHECK_EQ(cd_admit_init(&a, &o, err, sizeof(err)), CONDUIT_EINVAL);
    CHECK(strstr(err, "allowed_origins") != NULL);
    cd_admit_fini(&a);
    CHECK(conduit_options_set(&o, "trusted_proxies", "10.0.0.1/8", err, sizeof(err)) != 0);
    conduit_options_fini(&o);
}

TEST(addresses_are_stored_and_keyed)
{
    uint8_t ip[16], mapped[16];
    cd_addr v4 = addr_of("203.0.113.7:80");
    cd_addr v4m = addr_of("[::ffff:203.0.113.7]:80");
    CHECK(cd_admit_ip16_from_addr(ip, &v4));
    CHECK(cd_admit_ip16_from_addr(mapped, &v4m));
    CHECK(memcmp(ip, mapped, 16) == 0);
    char text[64];
    cd_admit_ip_format(ip, text, sizeof(text));
    CHECK_STR(text, "203.0.113.7");
    cd_addr a1 = addr_of("[2001:db8:1:2::1]:1"), a2 = addr_of("[2001:db8:1:2:ffff::9]:1");
    uint8_t i1[16], i2[16];
    CHECK(cd_admit_ip16_from_addr(i1, &a1));
    CHECK(cd_admit_ip16_from_addr(i2, &a2));
    cd_ip_key k1 = cd_admit_ip_key(i1), k2 = cd_admit_ip_key(i2);
    CHECK(memcmp(k1.b, k2.b, 16) == 0);  /* one /64 */
    cd_admit_ip_format(i2, text, sizeof(text));
    CHECK_STR(text, "2001:db8:1:2:ffff::9"); /* logs keep the whole address */
}

TEST(caps_hold_and_release)
{
    conduit_options o;
    options(&o);
    char err[128];
    CHECK_EQ(conduit_options_set(&o, "ws_max_connections", "2", err, sizeof(err)), 0);
    CHECK_EQ(conduit_options_set(&o, "ws_max_connections_per_ip", "1", err, sizeof(err)), 0);
    CHECK_EQ(conduit_options_set(&o, "ws_max_connections_per_user", "1", err, sizeof(err)), 0);
    CHECK_EQ(conduit_options_set(&o, "ws_max_pending_handshakes_per_ip", "1", err,
                                 sizeof(err)), 0);
    cd_admit a;
    CHECK_EQ(cd_admit_init(&a, &o, err, sizeof(err)), 0);
    cd_admit_verdict v;
    cd_admit_capacity(&a, 1000, &v);
    CHECK_EQ(v.status, 0);
    cd_admit_capacity(&a, 1000, &v);
    CHECK_EQ(v.status, 0);
    cd_admit_capacity(&a, 1000, &v);
    CHECK_EQ(v.status, 503);
    CHECK_STR(v.kind, "global");
    CHECK(v.retry_after_s > 0);
    cd_admit_ws_release(&a);
    cd_admit_capacity(&a, 1000, &v);
    CHECK_EQ(v.status, 0);

    uint8_t ip[16];
    cd_addr peer = addr_of("198.51.100.1:5");
    CHECK(cd_admit_ip16_from_addr(ip, &peer));
    CHECK(cd_admit_pending_take(&a, ip));
    CHECK(!cd_admit_pending_take(&a, ip));
    cd_admit_pending_release(&a, ip);
    CHECK(cd_admit_pending_take(&a, ip));

    cd_admit_ip(&a, ip, 1000, &v);
    CHECK_EQ(v.status, 0);
    cd_admit_ip(&a, ip, 1000, &v);
    CHECK_EQ(v.status, 429);
    CHECK_STR(v.kind, "ip");
    CHECK_STR(v.code, "Overloaded");
    cd_admit_ip_release(&a, ip);
    cd_admit_ip(&a, ip, 1000, &v);
    CHECK_EQ(v.status, 0);

    cd_admit_user(&a, "alice", &v);
    CHECK_EQ(v.status, 0);
    cd_admit_user(&a, "alice", &v);
    CHECK_EQ(v.status, 429);
    CHECK_STR(v.kind, "user");
    cd_admit_user(&a, "bob", &v);
    CHECK_EQ(v.status, 0);
    cd_admit_user_release(&a, "alice");
    cd_admit_user(&a, "alice", &v);
    CHECK_EQ(v.status, 0);
    cd_admit_fini(&a);
    conduit_options_fini(&o);
}

TEST(connection_rate_has_retry_after)
{
    conduit_options o;
    options(&o);
    char err[128];
    CHECK_EQ(conduit_options_set(&o, "ws_connection_rate_limit", "2", err, sizeof(err)), 0);
    CHECK_EQ(conduit_options_set(&o, "ws_connection_rate_window_ms", "10000", err,
                                 sizeof(err)), 0);
    CHECK_EQ(conduit_options_set(&o, "ws_max_connections_per_ip", "0", err, sizeof(err)), 0);
    cd_admit a;
    CHECK_EQ(cd_admit_init(&a, &o, err, sizeof(err)), 0);
    uint8_t ip[16];
    cd_addr peer = addr_of("198.51.100.2:5");
    CHECK(cd_admit_ip16_from_addr(ip, &peer));
    cd_admit_verdict v;
    cd_admit_ip(&a, ip, 1000, &v);
    CHECK_EQ(v.status, 0);
    cd_admit_ip(&a, ip, 1000, &v);
    CHECK_EQ(v.status, 0);
    cd_admit_ip(&a, ip, 1000, &v);
    CHECK_EQ(v.status, 429);
    CHECK_STR(v.code, "RateLimitExceeded");
    CHECK_EQ(v.retry_after_s, 5u);           /* one token per 5 s */
    cd_admit_ip(&a, ip, 6000, &v);
    CHECK_EQ(v.status, 0);
    cd_admit_fini(&a);
    conduit_options_fini(&o);
}

int main(void)
{
    RUN(origin_list_exact_and_wildcard);
    RUN(origin_same_origin_only_for_cookie_tokens);
    RUN(bad_origin_and_cidr_options_are_refused);
    RUN(addresses_are_stored_and_keyed);
    RUN(caps_hold_and_release);
    RUN(connection_rate_has_retry_after);
    return test_main_end();
}
