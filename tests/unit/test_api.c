/* Unit tests for api.c: replies to plain HTTP requests. */
#include "api.h"
#include "test.h"

static void ask(conduit_server *srv, const char *request, cd_http_reply *rep)
{
    static cd_http_parser p;
    size_t used = 0;
    cd_http_parser_init(&p);
    CHECK_EQ(cd_http_parse(&p, (const uint8_t *)request, strlen(request), &used), CD_HTTP_DONE);
    cd_api_handle(srv, &p, rep);
}

TEST(routes)
{
    static conduit_server srv;
    conduit_options_init(&srv.opt);
    cd_http_reply rep;
    ask(&srv, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &rep);
    CHECK_EQ(rep.status, 200);
    CHECK_STR(rep.body, "{\"status\":\"ok\"}");
    ask(&srv, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &rep);
    CHECK_EQ(rep.status, 200);
    ask(&srv, "POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &rep);
    CHECK_EQ(rep.status, 405);
    CHECK(strstr(rep.extra_headers, "Allow:") != NULL);
    ask(&srv, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", &rep);
    CHECK_EQ(rep.status, 426);
    CHECK_STR(rep.extra_headers, "Upgrade: websocket\r\n");
    ask(&srv, "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", &rep);
    CHECK_EQ(rep.status, 404);
    CHECK(strstr(rep.body, "NotFound") != NULL);
    srv.opt.echo_enabled = false;
    ask(&srv, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", &rep);
    CHECK_EQ(rep.status, 404);
    conduit_options_fini(&srv.opt);
}

int main(void)
{
    RUN(routes);
    return test_main_end();
}
