/* upgrade.c - the WebSocket opening handshake (RFC 6455 §4.2).
 *
 * Validates a parsed request head in a fixed order (method, version, Host,
 * Upgrade/Connection, Sec-WebSocket-Version, Sec-WebSocket-Key) so the same
 * bad request always gets the same answer, then negotiates the subprotocol
 * and permessage-deflate and computes Sec-WebSocket-Accept.  Pure: no
 * sockets, no clock, no allocation.  Invariant: nothing from the request is
 * ever echoed into the 101 response except through the accept hash; the
 * subprotocol written is the server's own string. */
#include "upgrade.h"

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "common.h"

/* RFC 6455 §1.3: the GUID appended to the key before hashing. */
static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* A valid key is 24 bytes; anything much longer is refused by the accept
 * function rather than hashed from a heap copy. */
#define MAX_KEY_BYTES 64

static int result(cd_upgrade_result *out, int status, const char *reason,
                  const char *extra)
{
    out->status = status;
    out->reason = reason;
    out->extra_header = extra;
    return status;
}

static bool is_b64(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* RFC 6455 §4.2.1 item 5: the key is base64 of a 16-byte value, so exactly
 * 22 alphabet characters and "==".  16 bytes fill only 4 bits of the 22nd
 * character; RFC 4648 §3.5 lets decoders reject nonzero pad bits, and a
 * real client never sends them. */
static bool key_is_valid(const char *k, size_t len)
{
    if (len != 24 || k[22] != '=' || k[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++) {
        if (!is_b64(k[i]))
            return false;
    }
    return k[21] == 'A' || k[21] == 'Q' || k[21] == 'g' || k[21] == 'w';
}

/* Does any header line named `name` hold `token` in its list? */
static bool any_list_has(const cd_http_parser *req, const char *name,
                         const char *token, bool fold_case)
{
    const cd_http_header *h = NULL;

    while ((h = cd_http_header_next(req, h, name)) != NULL) {
        const char *v = cd_http_str(req, h->value);
        if (fold_case ? cd_http_list_has_token(v, h->value.len, token)
                      : cd_http_list_has_exact_token(v, h->value.len, token))
            return true;
    }
    return false;
}

bool cd_upgrade_is_requested(const cd_http_parser *req)
{
    return any_list_has(req, "Upgrade", "websocket", true);
}

/* RFC 6455 §4.2.2 step 4 (/subprotocol/): the server picks one of the
 * client's values or none; we pick by the server's preference order.
 * Entries that are not tokens could not be sent safely, so they never
 * match. */
static int pick_subprotocol(const cd_http_parser *req,
                            const cd_upgrade_config *cfg)
{
    for (size_t i = 0; i < cfg->n_subprotocols; i++) {
        const char *sp = cfg->subprotocols[i];
        if (sp == NULL || !cd_http_is_token(sp, strlen(sp)))
            continue;
        /* RFC 6455 §4.1: subprotocol names compare case-sensitively. */
        if (any_list_has(req, "Sec-WebSocket-Protocol", sp, false))
            return (int)i;
    }
    return -1;
}

/* Join every Sec-WebSocket-Extensions line with ", " (RFC 9110 §5.3) and
 * let deflate.c choose.  The joined value is never longer than the header
 * section it came from, because each header line costs at least four
 * bytes ("X:" CRLF) more than its value and the separator is two. */
static void negotiate_pmd(const cd_http_parser *req,
                          const cd_upgrade_config *cfg, cd_upgrade_result *out)
{
    const char *name = "Sec-WebSocket-Extensions";
    const cd_http_header *h = NULL;
    char joined[CD_HTTP_MAX_HEADER_BYTES];
    size_t n = 0;

    while ((h = cd_http_header_next(req, h, name)) != NULL) {
        size_t sep = n > 0 ? 2 : 0;
        if (h->value.len + sep > sizeof(joined) - n)
            return;       /* cannot happen (see above); decline to be safe */
        memcpy(joined + n, ", ", sep);
        memcpy(joined + n + sep, cd_http_str(req, h->value), h->value.len);
        n += sep + h->value.len;
    }
    if (n == 0)
        return;
    out->has_pmd = cd_pmd_negotiate(joined, n, cfg->pmd, &out->pmd,
                                    out->pmd_response,
                                    sizeof(out->pmd_response)) == 1;
    if (!out->has_pmd) {
        memset(&out->pmd, 0, sizeof(out->pmd));
        out->pmd_response[0] = '\0';
    }
}

int cd_upgrade_check(const cd_http_parser *req, const cd_upgrade_config *cfg,
                     cd_upgrade_result *out)
{
    const cd_http_header *h;

    memset(out, 0, sizeof(*out));
    out->subprotocol = -1;

    /* RFC 6455 §4.2.1 item 1: the method MUST be GET.  RFC 9110 §15.5.6:
     * a 405 carries Allow. */
    if (req->method.len != 3 || memcmp(cd_http_str(req, req->method), "GET", 3) != 0)
        return result(out, 405, "handshake method must be GET",
                      "Allow: GET\r\n");
    /* RFC 6455 §4.2.1 item 1: HTTP/1.1 or higher. */
    if (req->version_major < 1 ||
        (req->version_major == 1 && req->version_minor < 1))
        return result(out, 400, "handshake needs HTTP/1.1", NULL);
    /* RFC 9112 §3.2: 400 for a missing or repeated Host. */
    if (cd_http_header_count(req, "Host") != 1)
        return result(out, 400, "Host header missing or repeated", NULL);
    /* RFC 6455 §4.2.1 items 3 and 4: both tokens, in any case, possibly
     * among others ("Connection: keep-alive, Upgrade"). */
    if (!any_list_has(req, "Upgrade", "websocket", true))
        return result(out, 400, "Upgrade header lacks websocket", NULL);
    if (!any_list_has(req, "Connection", "upgrade", true))
        return result(out, 400, "Connection header lacks upgrade", NULL);
    /* RFC 6455 §4.2.2 item 4 and §4.4: a version we do not speak gets 426
     * and the versions we do. */
    h = cd_http_header_find(req, "Sec-WebSocket-Version");
    if (cd_http_header_count(req, "Sec-WebSocket-Version") != 1 ||
        h->value.len != 2 || memcmp(cd_http_str(req, h->value), "13", 2) != 0)
        return result(out, 426, "Sec-WebSocket-Version must be 13",
                      "Sec-WebSocket-Version: 13\r\n");
    h = cd_http_header_find(req, "Sec-WebSocket-Key");
    if (cd_http_header_count(req, "Sec-WebSocket-Key") != 1 ||
        !key_is_valid(cd_http_str(req, h->value), h->value.len))
        return result(out, 400, "Sec-WebSocket-Key missing or invalid", NULL);

    cd_upgrade_accept_key(cd_http_str(req, h->value), h->value.len,
                          out->accept);
    if (out->accept[0] == '\0')
        return result(out, 500, "SHA-1 unavailable", NULL);
    out->subprotocol_requested =
        cd_http_header_count(req, "Sec-WebSocket-Protocol") > 0;
    if (out->subprotocol_requested)
        out->subprotocol = pick_subprotocol(req, cfg);
    if (cfg->pmd != NULL && cfg->pmd->enabled)
        negotiate_pmd(req, cfg, out);
    return result(out, 101, "switching protocols", NULL);
}

void cd_upgrade_accept_key(const char *key, size_t len,
                           char out[CD_WS_ACCEPT_LEN + 1])
{
    unsigned char in[MAX_KEY_BYTES + sizeof(ws_guid)];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;

    out[0] = '\0';
    if (len > MAX_KEY_BYTES)
        return;
    memcpy(in, key, len);
    memcpy(in + len, ws_guid, sizeof(ws_guid) - 1);
    /* RFC 6455 §4.2.2 item 5.4: base64(SHA-1(key + GUID)). */
    if (EVP_Digest(in, len + sizeof(ws_guid) - 1, md, &md_len, EVP_sha1(),
                   NULL) != 1 ||
        md_len != 20)
        return;
    /* 20 bytes encode to exactly 28 characters plus the NUL. */
    if (EVP_EncodeBlock((unsigned char *)out, md, 20) != CD_WS_ACCEPT_LEN)
        out[0] = '\0';
}

size_t cd_upgrade_write_101(const cd_upgrade_result *r,
                            const cd_upgrade_config *cfg, char *out,
                            size_t cap)
{
    const char *proto = NULL;
    size_t ext_len = strnlen(r->pmd_response, sizeof(r->pmd_response));
    bool has_ext = r->has_pmd && ext_len > 0 &&
                   ext_len < sizeof(r->pmd_response);
    int n;

    if (r->status != 101 ||
        strnlen(r->accept, sizeof(r->accept)) != CD_WS_ACCEPT_LEN)
        return 0;
    if (r->subprotocol >= 0) {
        if ((size_t)r->subprotocol >= cfg->n_subprotocols)
            return 0;
        proto = cfg->subprotocols[r->subprotocol];
        if (proto == NULL || !cd_http_is_token(proto, strlen(proto)))
            return 0;
    }
    /* RFC 6455 §4.2.2 item 5: status line, Upgrade, Connection, Accept,
     * then the negotiated subprotocol and extensions. */
    n = snprintf(out, cap,
                 "HTTP/1.1 101 Switching Protocols\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n"
                 "%s%s%s"
                 "%s%s%s"
                 "\r\n",
                 r->accept,
                 proto ? "Sec-WebSocket-Protocol: " : "", proto ? proto : "",
                 proto ? "\r\n" : "",
                 has_ext ? "Sec-WebSocket-Extensions: " : "",
                 has_ext ? r->pmd_response : "", has_ext ? "\r\n" : "");
    if (n < 0 || (size_t)n >= cap)
        return 0;
    return (size_t)n;
}
