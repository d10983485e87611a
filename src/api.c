/* api.c - plain HTTP endpoints (see api.h). */
#include "api.h"

#include <string.h>

static bool span_is(const cd_http_parser *req, cd_http_span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(cd_http_str(req, s), lit, n) == 0;
}

static void reply(cd_http_reply *out, int status, const char *extra,
                  const char *body)
{
    out->status = status;
    out->content_type = "application/json";
    out->extra_headers = extra;
    out->body = body;
    out->body_len = strlen(body);
}

void cd_api_handle(conduit_server *srv, const cd_http_parser *req,
                   cd_http_reply *out)
{
    bool is_get = span_is(req, req->method, "GET") || span_is(req, req->method, "HEAD");

    if (span_is(req, req->path, "/healthz")) {
        if (!is_get)
            reply(out, 405, "Allow: GET, HEAD\r\n",
                  "{\"error\":{\"code\":\"BadRequest\",\"message\":\"use GET\"}}");
        else
            reply(out, 200, NULL, "{\"status\":\"ok\"}");
        return;
    }
    if (srv->opt.echo_enabled && span_is(req, req->path, srv->opt.echo_path)) {
        /* RFC 9110 §15.5.22: say which protocol the resource needs. */
        reply(out, 426, "Upgrade: websocket\r\n",
              "{\"error\":{\"code\":\"BadRequest\",\"message\":\"this endpoint "
              "speaks WebSocket only\"}}");
        return;
    }
    reply(out, 404, NULL,
          "{\"error\":{\"code\":\"NotFound\",\"message\":\"no such endpoint\"}}");
}
