/* fuzz_jwt.c - cd_jwt_verify over arbitrary tokens, and the permission
 * pattern matcher against a reference.
 *
 * Two key sets are built once: A holds an HMAC secret and an Ed25519 PEM
 * public key (exp required, leeway 5 s); B is a JWKS with a P-256 key (kid
 * "e"), an Ed25519 key ("d") and the same secret as an "oct" key ("h"),
 * and checks iss and aud (exp optional, leeway 0).  The low two bits of
 * the first byte pick a mode, bit 2 the key set:
 *
 *   0  the rest is a token, verified as it is;
 *   1  the rest is a payload, signed here (HS256) under a fixed header, so
 *      that the claims reader is reached past the signature check;
 *   2  the rest is "header\npayload", signed here with HS256/384/512
 *      (bits 3-4), so that header parameters meet a valid MAC;
 *   3  the rest is "pattern\0channel": cd_auth_pattern_match must agree
 *      with a dynamic-programming reference, and the DM check must not
 *      crash.
 *
 * Always: no crash, no read past the input (the token is an exact-size
 * copy), a nonzero return is a known code and sets why, a zero return
 * clears it and yields a sane claims struct.
 *
 * Build: make build/fuzz/fuzz_jwt (clang; links all of src/). */
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "conduit.h"

#define REQUIRE(cond)              \
    do {                           \
        if (!(cond))               \
            __builtin_trap();      \
    } while (0)

#define NOW 1700000000

/* 64 bytes: serves HS256, HS384 and HS512. */
static const char secret[] = "conduit-fuzz-secret-0123456789abcdef0123456789abcdef0123456789ab";

static const char ed_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                             "MCowBQYDK2VwAyEAiPQuqQI4SYHetgx38AEeNEKV49KgWvV/nVWJrwe2IR0=\n"
                             "-----END PUBLIC KEY-----\n";

/* k is base64url(secret). */
static const char jwks[] =
    "{\"keys\":["
    "{\"kty\":\"EC\",\"kid\":\"e\",\"crv\":\"P-256\",\"alg\":\"ES256\","
    "\"x\":\"IZQQbzLhc8z2oMaO73dLSadr6_amLsObdgQz1qCmHsg\","
    "\"y\":\"HjdeE5yGPiVS3VlU8S8Ep5VNDkKLVNoMbp03ICemO80\"},"
    "{\"kty\":\"OKP\",\"kid\":\"d\",\"crv\":\"Ed25519\","
    "\"x\":\"iPQuqQI4SYHetgx38AEeNEKV49KgWvV_nVWJrwe2IR0\"},"
    "{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"Y29uZHVpdC1mdXp6LXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1"
    "Njc4OWFiY2RlZjAxMjM0NTY3ODlhYg\"}]}";

static cd_jwt_keyset *ks_a, *ks_b;
static cd_jwt_claims claims;

static void setup(void)
{
    char err[256];
    cd_jwt_config cfg;

    cd_jwt_config_init(&cfg);
    cfg.secret = secret;
    cfg.key_data = ed_pem;
    cfg.key_data_len = sizeof(ed_pem) - 1;
    if (cd_jwt_keyset_load(&ks_a, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_jwt: key set A: %s\n", err);
        abort();
    }
    cd_jwt_config_init(&cfg);
    cfg.key_data = jwks;
    cfg.key_data_len = sizeof(jwks) - 1;
    cfg.issuer = "iss.example";
    cfg.audience = "conduit";
    cfg.exp_required = false;
    cfg.leeway_s = 0;
    if (cd_jwt_keyset_load(&ks_b, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_jwt: key set B: %s\n", err);
        abort();
    }
    REQUIRE(cd_jwt_keyset_count(ks_a) == 2 && cd_jwt_keyset_count(ks_b) == 3);
}

static bool known_code(int rc)
{
    switch (rc) {
#define CODE_(name, code, label, msg) case code:
        CD_JWT_ERRORS(CODE_)
#undef CODE_
        return true;
    default:
        return false;
    }
}

static void check_verify(const cd_jwt_keyset *ks, const char *tok, size_t len)
{
    char *copy = malloc(len ? len : 1);
    if (copy == NULL)
        return;
    memcpy(copy, tok, len);
    const char *why = "unset";
    int rc = cd_jwt_verify(ks, copy, len, NOW, &claims, &why);
    free(copy);
    if (rc != 0) {
        REQUIRE(known_code(rc));
        REQUIRE(why != NULL && strcmp(why, "unset") != 0);
        REQUIRE(strcmp(cd_jwt_err_label(rc), "other") != 0);
        return;
    }
    REQUIRE(why == NULL);
    size_t sl = strnlen(claims.sub, sizeof(claims.sub));
    REQUIRE(sl > 0 && sl < sizeof(claims.sub));
    REQUIRE(claims.n_channels <= CD_JWT_MAX_PATTERNS && claims.n_publish <= CD_JWT_MAX_PATTERNS);
    REQUIRE(claims.has_channels || claims.n_channels == 0);
    REQUIRE(claims.has_publish || claims.n_publish == 0);
    for (size_t i = 0; i < claims.n_channels; i++)
        REQUIRE(strnlen(claims.channels[i], CD_JWT_MAX_PATTERN + 1) <= CD_JWT_MAX_PATTERN);
    for (size_t i = 0; i < claims.n_publish; i++)
        REQUIRE(strnlen(claims.publish[i], CD_JWT_MAX_PATTERN + 1) <= CD_JWT_MAX_PATTERN);
    if (claims.has_exp && ks == ks_a)
        REQUIRE(NOW < claims.exp_s + 5);
}

static size_t b64url(const uint8_t *p, size_t n, char *out)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | p[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = tab[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = tab[(acc << (6 - bits)) & 63];
    return o;
}

/* b64(header) '.' b64(payload) '.' b64(HMAC), verified. */
static void sign_and_check(const cd_jwt_keyset *ks, const uint8_t *h, size_t hl, const uint8_t *p,
                           size_t pl, const char *md)
{
    size_t cap = (hl + pl) / 3 * 4 + 8 + 128;
    char *tok = malloc(cap);
    if (tok == NULL)
        return;
    size_t n = b64url(h, hl, tok);
    tok[n++] = '.';
    n += b64url(p, pl, tok + n);
    unsigned char mac[64];
    size_t mac_len = 0;
    if (EVP_Q_mac(NULL, "HMAC", NULL, md, NULL, secret, sizeof(secret) - 1,
                  (const unsigned char *)tok, n, mac, sizeof(mac), &mac_len) == NULL)
        abort();
    tok[n++] = '.';
    n += b64url(mac, mac_len, tok + n);
    check_verify(ks, tok, n);
    free(tok);
}

/* Reference glob: '*' matches any run; O(|p| * |s|) table. */
static bool ref_match(const char *p, size_t pl, const char *s, size_t sl)
{
    static bool row[2][65];
    bool *prev = row[0], *cur = row[1];
    prev[0] = true;
    for (size_t j = 1; j <= sl; j++)
        prev[j] = false;
    for (size_t i = 1; i <= pl; i++) {
        cur[0] = prev[0] && p[i - 1] == '*';
        for (size_t j = 1; j <= sl; j++)
            cur[j] = p[i - 1] == '*' ? (prev[j] || cur[j - 1])
                                     : (prev[j - 1] && p[i - 1] == s[j - 1]);
        bool *t = prev;
        prev = cur;
        cur = t;
    }
    return prev[sl];
}

static void check_pattern(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    if (nul == NULL)
        return;
    size_t pl = (size_t)(nul - data);
    size_t sl = size - pl - 1;
    if (pl > 64 || sl > 64)
        return;
    char pat[65];
    memcpy(pat, data, pl);
    pat[pl] = '\0';
    char *chan = malloc(sl ? sl : 1);
    if (chan == NULL)
        return;
    memcpy(chan, nul + 1, sl);
    REQUIRE(cd_auth_pattern_match(pat, chan, sl) == ref_match(pat, pl, chan, sl));
    (void)cd_auth_user_channel_allowed(pat, chan, sl);
    free(chan);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const mds[4] = {"SHA256", "SHA384", "SHA512", "SHA256"};
    if (ks_a == NULL)
        setup();
    if (size < 1)
        return 0;
    const cd_jwt_keyset *ks = (data[0] & 4) ? ks_b : ks_a;
    const uint8_t *rest = data + 1;
    size_t n = size - 1;

    switch (data[0] & 3) {
    case 0:
        check_verify(ks, (const char *)rest, n);
        break;
    case 1: {
        static const char h[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
        sign_and_check(ks, (const uint8_t *)h, sizeof(h) - 1, rest, n, "SHA256");
        break;
    }
    case 2: {
        const uint8_t *nl = memchr(rest, '\n', n);
        if (nl == NULL)
            break;
        size_t hl = (size_t)(nl - rest);
        sign_and_check(ks, rest, hl, nl + 1, n - hl - 1, mds[(data[0] >> 3) & 3]);
        break;
    }
    default:
        check_pattern(rest, n);
        break;
    }
    return 0;
}
