/* fuzz_pmd_negotiate.c - cd_pmd_negotiate on arbitrary header values.
 *
 * Input: byte 0 picks the configuration (bit 0: enabled, bits 1-3: window
 * cap 8 + n, bits 4-5: the response buffer size); the rest is the
 * Sec-WebSocket-Extensions value.  Invariants: a declined value leaves an
 * empty response and default parameters; an accepted one has agreed
 * parameters within the RFC 7692 ranges and our cap, and its response is
 * itself a valid offer that negotiates to the very same result. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deflate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const size_t resp_caps[4] = {CD_PMD_RESPONSE_MAX, CD_PMD_RESPONSE_MAX - 1, 64, 19};

static bool is_default(const cd_pmd_params *p)
{
    return !p->server_no_context_takeover && !p->client_no_context_takeover &&
           p->server_max_window_bits == 15 && p->client_max_window_bits == 15;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t sel = data[0];
    cd_pmd_config cfg = {(sel & 1) != 0, (uint8_t)(8 + ((sel >> 1) & 7)), 8, 0};
    size_t resp_cap = resp_caps[(sel >> 4) & 3];
    const char *value = (const char *)data + 1;
    size_t len = size - 1;
    char resp[CD_PMD_RESPONSE_MAX + 1];
    char again[CD_PMD_RESPONSE_MAX + 1];
    cd_pmd_params p, q;

    memset(resp, 'x', sizeof(resp));
    int rc = cd_pmd_negotiate(value, len, &cfg, &p, resp, resp_cap);
    if (resp[resp_cap] != 'x' || memchr(resp, '\0', resp_cap) == NULL)
        abort();
    if (rc == 0) {
        if (resp[0] != '\0' || !is_default(&p))
            abort();
        return 0;
    }
    if (rc != 1 || !cfg.enabled || strncmp(resp, "permessage-deflate", 18) != 0)
        abort();
    if (p.server_max_window_bits < 8 || p.server_max_window_bits > cfg.max_window_bits ||
        p.client_max_window_bits < 8 || p.client_max_window_bits > 15)
        abort();

    /* The response read back as an offer: accepted, unchanged. */
    if (cd_pmd_negotiate(resp, strlen(resp), &cfg, &q, again, sizeof(again)) != 1)
        abort();
    if (strcmp(resp, again) != 0 || memcmp(&p, &q, sizeof(p)) != 0)
        abort();

    cd_pmd *d = cd_pmd_create(&p, &cfg);
    if (d != NULL && cd_pmd_should_compress(d, 1) != (p.server_max_window_bits > 8))
        abort();
    cd_pmd_destroy(d);
    return 0;
}
