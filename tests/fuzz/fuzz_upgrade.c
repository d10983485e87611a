/* fuzz_upgrade.c - the opening handshake over arbitrary request heads.
 *
 * The first byte picks the server configuration (permessage-deflate on or
 * off, which subprotocol list); the rest is parsed as a request head and,
 * when complete, checked.  A 101 must produce a well-formed response whose
 * subprotocol is one of the server's strings; any other status must be one
 * the handshake documents. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "upgrade.h"

#define REQUIRE(cond)              \
    do {                           \
        if (!(cond))               \
            __builtin_trap();      \
    } while (0)

static cd_http_parser req;

static const char *const protos_a[] = {"chat.v2", "chat", "json"};
static const char *const protos_b[] = {"proto", "bad proto"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cd_pmd_config pmd = {true, 15, 8, 64};
    cd_upgrade_config cfg = {protos_a, 3, &pmd};
    cd_upgrade_result r;
    size_t used = 0;

    if (size < 1)
        return 0;
    pmd.enabled = (data[0] & 1) != 0;
    pmd.max_window_bits = (uint8_t)(9 + (data[0] >> 1) % 7);
    if (data[0] & 0x80) {
        cfg.subprotocols = protos_b;
        cfg.n_subprotocols = 2;
    }
    if (data[0] & 0x40)
        cfg.pmd = NULL;
    data++;
    size--;

    cd_http_parser_init(&req);
    if (cd_http_parse(&req, data, size, &used) != CD_HTTP_DONE)
        return 0;
    (void)cd_upgrade_is_requested(&req);
    int status = cd_upgrade_check(&req, &cfg, &r);
    REQUIRE(status == r.status);
    REQUIRE(r.reason != NULL);
    if (status != 101) {
        REQUIRE(status == 400 || status == 405 || status == 426);
        REQUIRE(r.subprotocol == -1 && !r.has_pmd);
        char resp[512];
        size_t n = cd_http_write_response(resp, sizeof(resp), status,
                                          "text/plain", r.extra_header,
                                          r.reason, strlen(r.reason), true);
        REQUIRE(n > 0);
        return 0;
    }
    REQUIRE(strlen(r.accept) == CD_WS_ACCEPT_LEN);
    REQUIRE(r.subprotocol >= -1 && r.subprotocol < (int)cfg.n_subprotocols);
    REQUIRE(r.subprotocol == -1 || r.subprotocol_requested);
    REQUIRE(!r.has_pmd || (cfg.pmd != NULL && pmd.enabled));

    char out[1024];
    size_t n = cd_upgrade_write_101(&r, &cfg, out, sizeof(out));
    REQUIRE(n > 0 && n < sizeof(out));
    REQUIRE(memcmp(out, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
    REQUIRE(memcmp(out + n - 4, "\r\n\r\n", 4) == 0);
    /* No bare CR or LF, no NUL: the response is exactly its lines. */
    for (size_t i = 0; i < n; i++) {
        REQUIRE(out[i] != '\0');
        if (out[i] == '\r')
            REQUIRE(i + 1 < n && out[i + 1] == '\n');
        if (out[i] == '\n')
            REQUIRE(i > 0 && out[i - 1] == '\r');
    }
    out[n] = '\0';
    if (r.subprotocol >= 0) {
        char line[128];
        snprintf(line, sizeof(line), "\r\nSec-WebSocket-Protocol: %s\r\n",
                 cfg.subprotocols[r.subprotocol]);
        REQUIRE(strstr(out, line) != NULL);
    } else {
        REQUIRE(strstr(out, "Sec-WebSocket-Protocol") == NULL);
    }
    return 0;
}
