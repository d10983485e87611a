/* fuzz_inflate.c - cd_pmd_inflate on arbitrary compressed messages.
 *
 * Input: byte 0 picks the parameters (bit 0: client_no_context_takeover,
 * bits 1-3: client window 8 + n, bits 4-7: the message cap).  The rest is a
 * list of chunks, each a length byte (low 7 bits: length, high bit: this
 * chunk ends the message) and that many bytes.  Invariants: out never passes
 * the cap, in length or in capacity; after an error every call repeats it;
 * each message that inflates survives a deflate/inflate round trip. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "conduit.h"
#include "deflate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const size_t caps[16] = {0,   1,    2,    5,     16,    100,     255,     1000,
                                4096, 4097, 16384, 65535, 65536, 100000, 1u << 20, 4u << 20};

/* Compress and decompress `msg` with a fresh pair of streams. */
static void check_round_trip(cd_pmd *srv, cd_pmd *cli, const cd_bytes *msg)
{
    cd_bytes wire = CD_BYTES_INIT, back = CD_BYTES_INIT;
    if (cd_pmd_deflate(srv, msg->data, msg->len, &wire) != 0)
        goto done;                   /* only ENOMEM is possible */
    int rc = cd_pmd_inflate(cli, wire.data, wire.len, true, &back, msg->len);
    if (rc == CONDUIT_ENOMEM)
        goto done;
    if (rc != 0 || back.len != msg->len ||
        (msg->len > 0 && memcmp(back.data, msg->data, msg->len) != 0))
        abort();
done:
    cd_bytes_free(&wire);
    cd_bytes_free(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t sel = data[0];
    cd_pmd_params p = {sel & 1, sel & 1, (uint8_t)(8 + ((sel >> 1) & 7)),
                       (uint8_t)(8 + ((sel >> 1) & 7))};
    cd_pmd_params mirror = {p.client_no_context_takeover, p.server_no_context_takeover,
                            p.client_max_window_bits, p.server_max_window_bits};
    size_t cap = caps[sel >> 4];
    cd_pmd_config cfg = {true, 15, 1, 0};
    cd_pmd *d = cd_pmd_create(&p, &cfg);
    cd_pmd *srv = cd_pmd_create(&mirror, &cfg);
    cd_pmd *cli = cd_pmd_create(&p, &cfg);
    cd_bytes out = CD_BYTES_INIT;
    int sticky = 0;

    if (d == NULL || srv == NULL || cli == NULL)
        goto done;
    for (size_t i = 1; i < size;) {
        bool is_final = (data[i] & 0x80) != 0;
        size_t n = data[i] & 0x7f;
        i++;
        if (n > size - i)
            n = size - i;
        int rc = cd_pmd_inflate(d, data + i, n, is_final, &out, cap);
        i += n;
        if (out.len > cap || out.cap > cap)
            abort();
        if (sticky != 0 && rc != sticky)
            abort();
        if (rc != 0) {
            if (rc != CONDUIT_EPROTO && rc != CONDUIT_ELIMIT && rc != CONDUIT_ENOMEM)
                abort();
            sticky = rc;
            continue;
        }
        if (is_final) {
            if (out.len <= 65536)
                check_round_trip(srv, cli, &out);
            out.len = 0;
        }
    }
done:
    cd_bytes_free(&out);
    cd_pmd_destroy(d);
    cd_pmd_destroy(srv);
    cd_pmd_destroy(cli);
    return 0;
}
