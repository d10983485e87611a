/* test_auth.c - JWT verification and channel permissions (auth.c).
 *
 * Keys are generated here with OpenSSL (RSA 2048, EC P-256 and P-384,
 * Ed25519), written as PEM and JWKS files under /tmp, and tokens are signed
 * here with a small EVP_DigestSign signer (ECDSA DER converted to R || S),
 * so every accepted token is one a real issuer could produce.  Then the
 * attacks: alg none in any case, HS256 keyed with an RSA public key's PEM
 * text, alg/kid mismatches, unknown kids, embedded-key and crit headers,
 * time claims around the leeway, issuer and audience, bad claims, bad
 * base64url and structure, wrong signature lengths; rotation through a
 * JWKS; load errors that name the file; and the pattern matcher (also its
 * worst case) and DM channels.  Every token is verified from an exact-size
 * heap copy, so a read past its end is an ASan error. */
#include <limits.h> /* <openssl/err.h> of 3.0 uses INT_MAX without it */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "common.h"
#include "conduit.h"
#include "test.h"

#define NOW 1700000000LL

/* ------------------------------------------------------------------ */
/* Keys and files. */

static EVP_PKEY *rsa_key, *rsa2_key, *p256_key, *p384_key, *ed_key, *rsa1024_key;
static const char hs_secret[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static char tmp_paths[64][64];
static size_t n_tmp;

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* Write text to a fresh /tmp file; the path lives until cleanup(). */
static const char *write_tmp(const char *text, size_t len)
{
    if (n_tmp == 64)
        exit(2);
    char *path = tmp_paths[n_tmp++];
    snprintf(path, 64, "/tmp/conduit_test_auth_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    close(fd);
    return path;
}

static void cleanup(void)
{
    for (size_t i = 0; i < n_tmp; i++)
        unlink(tmp_paths[i]);
}

/* The PEM text of a public key (SubjectPublicKeyInfo, or the structure
 * asked for: "type-specific" gives PKCS#1 "RSA PUBLIC KEY"); free it. */
static char *pem_of(EVP_PKEY *pk, const char *structure, bool priv)
{
    OSSL_ENCODER_CTX *ec = OSSL_ENCODER_CTX_new_for_pkey(
        pk, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, "PEM", structure, NULL);
    unsigned char *data = NULL;
    size_t len = 0;
    if (ec == NULL || OSSL_ENCODER_to_data(ec, &data, &len) != 1) {
        fprintf(stderr, "cannot encode key\n");
        exit(2);
    }
    OSSL_ENCODER_CTX_free(ec);
    char *s = xmalloc(len + 1);
    memcpy(s, data, len);
    s[len] = '\0';
    OPENSSL_free(data);
    return s;
}

static const char *pem_file(EVP_PKEY *pk)
{
    char *pem = pem_of(pk, "SubjectPublicKeyInfo", false);
    const char *path = write_tmp(pem, strlen(pem));
    free(pem);
    return path;
}

static void b64url(const unsigned char *p, size_t n, char *out)
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
    out[o] = '\0';
}

static void bn_b64(const BIGNUM *bn, size_t pad_to, char *out)
{
    unsigned char buf[1024];
    size_t n = pad_to ? pad_to : (size_t)BN_num_bytes(bn);
    BN_bn2binpad(bn, buf, (int)n);
    b64url(buf, n, out);
}

/* snprintf that must fit. */
#define FMT(buf, cap, ...)                                        \
    do {                                                          \
        if (snprintf((buf), (cap), __VA_ARGS__) >= (int)(cap)) {  \
            fprintf(stderr, "%s:%d: buffer too small\n", __FILE__, __LINE__); \
            exit(2);                                              \
        }                                                         \
    } while (0)

/* One JWK (as JSON text) for a public key; extra is spliced in
 * (",\"alg\":\"RS256\""). */
static void jwk_of(EVP_PKEY *pk, const char *kid, const char *extra, char *out, size_t cap)
{
    char a[1400], b[1400];
    if (EVP_PKEY_is_a(pk, "RSA")) {
        BIGNUM *n = NULL, *e = NULL;
        EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &n);
        EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &e);
        bn_b64(n, 0, a);
        bn_b64(e, 0, b);
        FMT(out, cap, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"%s}", kid, a,
                 b, extra);
        BN_free(n);
        BN_free(e);
    } else if (EVP_PKEY_is_a(pk, "EC")) {
        BIGNUM *x = NULL, *y = NULL;
        size_t size = EVP_PKEY_get_bits(pk) == 256 ? 32 : 48;
        EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_X, &x);
        EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_Y, &y);
        bn_b64(x, size, a);
        bn_b64(y, size, b);
        FMT(out, cap, "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"%s}",
                 kid, size == 32 ? "P-256" : "P-384", a, b, extra);
        BN_free(x);
        BN_free(y);
    } else {
        unsigned char raw[32];
        size_t rl = sizeof(raw);
        EVP_PKEY_get_raw_public_key(pk, raw, &rl);
        b64url(raw, rl, a);
        FMT(out, cap, "{\"kty\":\"OKP\",\"kid\":\"%s\",\"crv\":\"Ed25519\",\"x\":\"%s\"%s}",
                 kid, a, extra);
    }
}

/* ------------------------------------------------------------------ */
/* Signing. */

typedef struct signer {
    const char *alg;             /* the JWS alg used to sign */
    EVP_PKEY *pk;                /* private key, or NULL for HMAC */
    const unsigned char *secret; /* HMAC key */
    size_t secret_len;
} signer;

static const char *md_of(const char *alg)
{
    if (strcmp(alg + 2, "256") == 0)
        return "SHA256";
    if (strcmp(alg + 2, "384") == 0)
        return "SHA384";
    if (strcmp(alg + 2, "512") == 0)
        return "SHA512";
    return NULL;
}

/* The raw signature of msg; returns its length. */
static size_t sign_raw(const signer *s, const char *msg, size_t len, unsigned char *sig)
{
    const char *md = md_of(s->alg);
    if (s->alg[0] == 'H') {
        size_t out = 0;
        if (EVP_Q_mac(NULL, "HMAC", NULL, md, NULL, s->secret, s->secret_len,
                      (const unsigned char *)msg, len, sig, 64, &out) == NULL)
            exit(2);
        return out;
    }
    unsigned char der[1024];
    size_t der_len = sizeof(der);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL ||
        EVP_DigestSignInit_ex(ctx, NULL, strcmp(s->alg, "EdDSA") == 0 ? NULL : md, NULL, NULL,
                              s->pk, NULL) != 1 ||
        EVP_DigestSign(ctx, der, &der_len, (const unsigned char *)msg, len) != 1) {
        fprintf(stderr, "cannot sign with %s\n", s->alg);
        exit(2);
    }
    EVP_MD_CTX_free(ctx);
    if (s->alg[0] != 'E' || s->alg[1] != 'S') {
        memcpy(sig, der, der_len);
        return der_len;
    }
    /* RFC 7518 §3.4: R || S, each left-padded to the curve size. */
    size_t size = strcmp(s->alg, "ES256") == 0 ? 32 : 48;
    const unsigned char *dp = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &dp, (long)der_len);
    if (es == NULL)
        exit(2);
    BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, (int)size);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + size, (int)size);
    ECDSA_SIG_free(es);
    return 2 * size;
}

/* header.payload.signature; sig_override (raw bytes) replaces the real
 * signature when sig_len_override > 0.  Returns a malloc'd string. */
static char *make_token_sig(const char *header, const char *payload, const signer *s,
                            const unsigned char *sig_override, size_t sig_len_override)
{
    size_t hl = strlen(header), pl = strlen(payload);
    char *tok = xmalloc((hl + pl) * 2 + 2048);
    b64url((const unsigned char *)header, hl, tok);
    size_t n = strlen(tok);
    tok[n++] = '.';
    b64url((const unsigned char *)payload, pl, tok + n);
    n += strlen(tok + n);
    unsigned char sig[1024];
    size_t sl;
    if (sig_len_override > 0) {
        memcpy(sig, sig_override, sig_len_override);
        sl = sig_len_override;
    } else if (s == NULL) {
        sl = 0;
    } else {
        sl = sign_raw(s, tok, n, sig);
    }
    tok[n++] = '.';
    b64url(sig, sl, tok + n);
    return tok;
}

static char *make_token(const char *header, const char *payload, const signer *s)
{
    return make_token_sig(header, payload, s, NULL, 0);
}

/* A standard header for an alg, with an optional kid. */
static char *hdr(const char *alg, const char *kid)
{
    static char buf[256];
    if (kid != NULL)
        snprintf(buf, sizeof(buf), "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, kid);
    else
        snprintf(buf, sizeof(buf), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    return buf;
}

static const char *payload_ok(void)
{
    static char buf[256];
    snprintf(buf, sizeof(buf), "{\"sub\":\"alice\",\"exp\":%lld,\"iat\":%lld}", NOW + 600,
             NOW - 10);
    return buf;
}

/* ------------------------------------------------------------------ */
/* Verifying. */

static cd_jwt_claims claims;

/* Verify from an exact-size heap copy; check that a failure sets why. */
static int verify_at(const cd_jwt_keyset *ks, const char *tok, size_t len, int64_t now,
                     const char **why)
{
    char *copy = xmalloc(len);
    memcpy(copy, tok, len);
    const char *w = "unset";
    int rc = cd_jwt_verify(ks, copy, len, now, &claims, &w);
    free(copy);
    if (rc != 0)
        CHECK(w != NULL && strcmp(w, "unset") != 0);
    else
        CHECK(w == NULL);
    if (why != NULL)
        *why = w;
    return rc;
}

static int verify(const cd_jwt_keyset *ks, const char *tok, const char **why)
{
    return verify_at(ks, tok, strlen(tok), NOW, why);
}

/* Sign header/payload with s, verify, compare code and (when given) why,
 * and free the token. */
#define EXPECT(ks, header, payload, s, want_rc, want_why)                     \
    do {                                                                      \
        char *tok_ = make_token((header), (payload), (s));                    \
        const char *why_ = NULL;                                              \
        CHECK_EQ(verify((ks), tok_, &why_), (want_rc));                       \
        if ((want_why) != NULL)                                               \
            CHECK_STR(why_, (const char *)(want_why));                        \
        free(tok_);                                                           \
    } while (0)

static cd_jwt_keyset *load(const cd_jwt_config *cfg)
{
    cd_jwt_keyset *ks = NULL;
    char err[512];
    int rc = cd_jwt_keyset_load(&ks, cfg, err, sizeof(err));
    if (rc != 0)
        printf("  # load failed: %s\n", err);
    CHECK_EQ(rc, 0);
    return ks;
}

static cd_jwt_keyset *load_file(const char *path, const char *secret)
{
    cd_jwt_config cfg;
    cd_jwt_config_init(&cfg);
    cfg.key_file = path;
    cfg.secret = secret;
    return load(&cfg);
}

static const char *pem_rsa, *pem_p256, *pem_p384, *pem_ed;

/* ------------------------------------------------------------------ */
/* Tests: algorithms. */

TEST(every_algorithm_accepted)
{
    cd_jwt_config cfg;
    cd_jwt_config_init(&cfg);
    cfg.secret = hs_secret;
    cd_jwt_keyset *hs = load(&cfg);
    const char *hs_algs[] = {"HS256", "HS384", "HS512"};
    for (size_t i = 0; i < 3; i++) {
        signer s = {hs_algs[i], NULL, (const unsigned char *)hs_secret, strlen(hs_secret)};
        EXPECT(hs, hdr(hs_algs[i], NULL), payload_ok(), &s, 0, NULL);
        CHECK_STR(claims.sub, "alice");
        CHECK(claims.has_exp && claims.exp_s == NOW + 600);
        CHECK(claims.has_iat && claims.iat_s == NOW - 10);
        CHECK(!claims.has_nbf && !claims.has_channels && !claims.has_publish);
    }
    CHECK_EQ(cd_jwt_keyset_count(hs), 1);
    cd_jwt_keyset_unref(hs);

    cd_jwt_keyset *rsa = load_file(pem_rsa, NULL);
    const char *rs_algs[] = {"RS256", "RS384", "RS512"};
    for (size_t i = 0; i < 3; i++) {
        signer s = {rs_algs[i], rsa_key, NULL, 0};
        EXPECT(rsa, hdr(rs_algs[i], NULL), payload_ok(), &s, 0, NULL);
    }
    /* An RSA key never serves ES or EdDSA. */
    signer es = {"ES256", p256_key, NULL, 0};
    EXPECT(rsa, hdr("ES256", NULL), payload_ok(), &es, CD_JWT_EALG,
           "alg not allowed for this key");
    cd_jwt_keyset_unref(rsa);

    cd_jwt_keyset *p256 = load_file(pem_p256, NULL);
    EXPECT(p256, hdr("ES256", NULL), payload_ok(), &es, 0, NULL);
    signer es384_on_256 = {"ES384", p256_key, NULL, 0};
    EXPECT(p256, hdr("ES384", NULL), payload_ok(), &es384_on_256, CD_JWT_EALG, NULL);
    cd_jwt_keyset_unref(p256);

    cd_jwt_keyset *p384 = load_file(pem_p384, NULL);
    signer es384 = {"ES384", p384_key, NULL, 0};
    EXPECT(p384, hdr("ES384", NULL), payload_ok(), &es384, 0, NULL);
    signer es256_on_384 = {"ES256", p384_key, NULL, 0};
    EXPECT(p384, hdr("ES256", NULL), payload_ok(), &es256_on_384, CD_JWT_EALG, NULL);
    cd_jwt_keyset_unref(p384);

    cd_jwt_keyset *ed = load_file(pem_ed, NULL);
    signer eds = {"EdDSA", ed_key, NULL, 0};
    EXPECT(ed, hdr("EdDSA", NULL), payload_ok(), &eds, 0, NULL);
    CHECK_STR(claims.sub, "alice");
    cd_jwt_keyset_unref(ed);
}

TEST(short_secret_serves_fewer_algs)
{
    /* 40 bytes: HS256 only (RFC 7518 §3.2: key at least the hash size). */
    static const char s40[] = "0123456789012345678901234567890123456789";
    cd_jwt_config cfg;
    cd_jwt_config_init(&cfg);
    cfg.secret = s40;
    cd_jwt_keyset *ks = load(&cfg);
    signer s256 = {"HS256", NULL, (const unsigned char *)s40, 40};
    signer s384 = {"HS384", NULL, (const unsigned char *)s40, 40};
    EXPECT(ks, hdr("HS256", NULL), payload_ok(), &s256, 0, NULL);
    EXPECT(ks, hdr("HS384", NULL), payload_ok(), &s384, CD_JWT_EALG, NULL);
    cd_jwt_keyset_unref(ks);
}

TEST(wrong_key_or_tampering_is_bad_signature)
{
    cd_jwt_keyset *rsa = load_file(pem_rsa, NULL);
    signer other = {"RS256", rsa2_key, NULL, 0};
    EXPECT(rsa, hdr("RS256", NULL), payload_ok(), &other, CD_JWT_EBADSIG, "bad signature");

    signer good = {"RS256", rsa_key, NULL, 0};
    char *tok = make_token(hdr("RS256", NULL), payload_ok(), &good);
    /* Flip one payload character: still base64url, no longer signed. */
    char *dot = strchr(tok, '.');
    char saved = dot[3];
    dot[3] = saved == 'A' ? 'B' : 'A';
    CHECK_EQ(verify(rsa, tok, NULL), CD_JWT_EBADSIG);
    dot[3] = saved;
    CHECK_EQ(verify(rsa, tok, NULL), 0);
    /* Flip a signature character. */
    char *last = strrchr(tok, '.');
    last[5] = last[5] == 'A' ? 'B' : 'A';
    CHECK_EQ(verify(rsa, tok, NULL), CD_JWT_EBADSIG);
    free(tok);
    cd_jwt_keyset_unref(rsa);

    cd_jwt_config cfg;
    cd_jwt_config_init(&cfg);
    cfg.secret = hs_secret;
    cd_jwt_keyset *hs = load(&cfg);
    static const char other_secret[] = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    signer wrong = {"HS256", NULL, (const unsigned char *)other_secret, 64};
    EXPECT(hs, hdr("HS256", NULL), payload_ok(), &wrong, CD_JWT_EBADSIG, "bad signature");
    cd_jwt_keyset_unref(hs);
}

TEST(alg_none_refused)
{
    cd_jwt_config cfg;
    cd_jwt_config_init(&cfg);
    cfg.secret = hs_secret;
    cd_jwt_keyset *ks = load(&cfg);
    const char *spellings[] = {"none", "None", "NONE", "nOnE"};
    for (size_t i = 0; i < 4; i++) {
        char h[64];
        snprintf(h, sizeof(h), "{\"alg\":\"%s\"}", spellings[i]);
        char *tok = make_token(h, payload_ok(), NULL); /* empty signature */
        const char *why = NULL;
        CHECK_EQ(verify(ks, tok, &why), CD_JWT_EALG);
        CHECK_STR(why, "alg none refused");
        free(tok);
        /* And with a signature that is a real HS256 MAC. */
        signer s = {"HS256", NULL, (const unsigned char *)hs_secret, strlen(hs_secret)};
        EXPECT(ks, h, payload_ok(), &s, CD_JWT_EALG, "alg none refused");
    }
    /* "\u006eone" is "none" too. */
    EXPECT(ks, "{\"alg\":\"\\u006eone\"}", payload_ok(), NULL, CD_JWT_EALG, "alg none refused");
    /* alg is case-sensitive (RFC 7515 §4.1.1): "hs256" is not HS256. */
    signer s = {"HS256", NULL, (const unsigned char *)hs_secret, strlen(hs_secret)};
    EXPECT(ks, "{\"alg\":\"hs256\"}", payload_ok(), &s, CD_JWT_EALG, "unsupported alg");
    EXPECT(ks, "{\"alg\":\"PS256\"}", payload_ok(), &s, CD_JWT_EALG, "unsupported alg");
    EXPECT(ks, "{\"typ\":\"JWT\"}", payload_ok(), &s, CD_JWT_EMALFORMED, "missing alg");
    EXPECT(ks, "{\"alg\":256}", payload_ok(), &s, CD_JWT_EMALFORMED, "alg is not a string");
    EXPECT(ks, "{\"alg\":null}", payload_ok(), &s, CD_JWT_EMALFORMED, "alg is not a string");
    cd_jwt_keyset_unref(ks);
}

TEST(hs256_keyed_with_rsa_public_pem_refused)
{
    /* The classic key confusion: a verifier that let the token pick HMAC
     * would use the (public) PEM text as the secret. */
    char *pem = pem_of(rsa_key, "SubjectPublicKeyInfo", false);
    signer forged = {"HS256", NULL, (const unsigned char *)pem, strlen(pem)};
    cd_jwt_keyset *rsa = load_file(pem_rsa, NULL);
    EXPECT(rsa, hdr("HS256", NULL), payload_ok(), &forged, CD_JWT_EALG,
           "alg not allowed for this key");
    signer forged512 = {"HS512", NULL, (const unsigned char *)pem, strlen(pem)};
    EXPECT(rsa, hdr("HS512", NULL), payload_ok(), &forged512, CD_JWT_EALG, NULL);
    cd_jwt_keyset_unref(rsa);

    /* Same file given as in-memory key data, plus an unrelated secret:
     * HS256 is served by the secret only, so the forgery is a bad MAC. */
    cd_jwt_config cfg;
    cd_jwt_config_init(&cfg);
    cfg.key_data = pem;
    cfg.key_data_len = strlen(pem);
    cfg.secret = hs_secret;
    cd_jwt_keyset *both = load(&cfg);
    CHECK_EQ(cd_jwt_keyset_count(both), 2);
    EXPECT(both, hdr("HS256", NULL), payload_ok(), &forged, CD_JWT_EBADSIG, NULL);
    signer rs = {"RS256", rsa_key, NULL, 0};
    EXPECT(both, hdr("RS256", NULL), payload_ok(), &rs, 0, NULL);
    cd_jwt_keyset_unref(both);

    /* Also through a JWKS RSA key with kid. */
    char jwk[2048], jwks[2200];
    jwk_of(rsa_key, "r1", "", jwk, sizeof(jwk));
    snprintf(jwks, sizeof(jwks), "{\"keys\":[%s]}", jwk);
    cd_jwt_keyset *js = load_file(write_tmp(jwks, strlen(jwks)), NULL);
    EXPECT(js, hdr("HS256", "r1"), payload_ok(), &forged, CD_JWT_EALG, NULL);
    cd_jwt_keyset_unref(js);
    free(pem);
}

/* A JWKS with an RSA key pinned to RS256 ("a"), a P-256 key ("b"), an
 * Ed25519 key ("c") and an HMAC key ("h"). */
static const char *rotation_jwks(void)
{
    static const char *path;
    if (path != NULL)
        return path;
    char a[2048], b[512], c[256], doc[4096];
    jwk_of(rsa_key, "a", ",\"alg\":\"RS256\",\"use\":\"sig\"", a, sizeof(a));
    jwk_of(p256_key, "b", ",\"key_ops\":[\"verify\"]", b, sizeof(b));
    jwk_of(ed_key, "c", ",\"alg\":\"EdDSA\"", c, sizeof(c));
    char k[128];
    b64url((const unsigned char *)hs_secret, 64, k);
    snprintf(doc, sizeof(doc),
             "{\"keys\":[%s,\n %s,\n %s,\n {\"kty\":\"oct\",\"kid\":\"h\",\"alg\":\"HS512\",\"k\":\"%s\"}]}",
             a, b, c, k);
    path = write_tmp(doc, strlen(doc));
    return path;
}

TEST(jwks_rotation)
{
    cd_jwt_keyset *ks = load_file(rotation_jwks(), NULL);
    CHECK_EQ(cd_jwt_keyset_count(ks), 4);
    signer rs = {"RS256", rsa_key, NULL, 0};
    signer es = {"ES256", p256_key, NULL, 0};
    signer ed = {"EdDSA", ed_key, NULL, 0};
    signer hs = {"HS512", NULL, (const unsigned char *)hs_secret, 64};
    EXPECT(ks, hdr("RS256", "a"), payload_ok(), &rs, 0, NULL);
    EXPECT(ks, hdr("ES256", "b"), payload_ok(), &es, 0, NULL);
    EXPECT(ks, hdr("EdDSA", "c"), payload_ok(), &ed, 0, NULL);
    EXPECT(ks, hdr("HS512", "h"), payload_ok(), &hs, 0, NULL);
    /* No kid: every key that serves the alg is tried. */
    EXPECT(ks, hdr("ES256", NULL), payload_ok(), &es, 0, NULL);
    EXPECT(ks, hdr("RS256", NULL), payload_ok(), &rs, 0, NULL);
    /* A key signed with b but labelled a: a serves RS256 only. */
    EXPECT(ks, hdr("ES256", "a"), payload_ok(), &es, CD_JWT_EALG,
           "alg not allowed for this key");
    /* "a" is pinned to RS256 by its JWK "alg": RS384 is refused even
     * though the RSA key could do it. */
    signer rs384 = {"RS384", rsa_key, NULL, 0};
    EXPECT(ks, hdr("RS384", "a"), payload_ok(), &rs384, CD_JWT_EALG, NULL);
    /* "h" is pinned to HS512. */
    signer hs256 = {"HS256", NULL, (const unsigned char *)hs_secret, 64};
    EXPECT(ks, hdr("HS256", "h"), payload_ok(), &hs256, CD_JWT_EALG, NULL);
    /* Right alg, right kid, wrong key. */
    signer rs2 = {"RS256", rsa2_key, NULL, 0};
    EXPECT(ks, hdr("RS256", "a"), payload_ok(), &rs2, CD_JWT_EBADSIG, NULL);
    cd_jwt_keyset_unref(ks);
}

TEST(unknown_kid)
{
    cd_jwt_keyset *ks = load_file(rotation_jwks(), NULL);
    signer rs = {"RS256", rsa_key, NULL, 0};
    EXPECT(ks, hdr("RS256", "zz"), payload_ok(), &rs, CD_JWT_EKID, "unknown kid");
    EXPECT(ks, hdr("RS256", ""), payload_ok(), &rs, CD_JWT_EKID, NULL);
    /* A kid prefix is not the kid. */
    EXPECT(ks, hdr("RS256", "a\\u0000"), payload_ok(), &rs, CD_JWT_EKID, NULL);
    /* kid must be a string. */
    EXPECT(ks, "{\"alg\":\"RS256\",\"kid\":1}", payload_ok(), &rs, CD_JWT_EMALFORMED,
           "kid is not a string");
    cd_jwt_keyset_unref(ks);

    /* Kid-less keys (a PEM file, the secret) do not answer to a kid. */
    cd_jwt_keyset *pem = load_file(pem_rsa, hs_secret);
    EXPECT(pem, hdr("RS256", "a"), payload_ok(), &rs, CD_JWT_EKID, NULL);
    EXPECT(pem, hdr("RS256", NULL), payload_ok(), &rs, 0, NULL);
    cd_jwt_keyset_unref(pem);

    /* The \u-escaped kid is the kid. */
    cd_jwt_keyset *js = load_file(rotation_jwks(), NULL);
    EXPECT(js, hdr("RS256", "\\u0061"), payload_ok(), &rs, 0, NULL);
    cd_jwt_keyset_unref(js);
}

TEST(forbidden_headers)
{
    cd_jwt_config cfg;
    cd_jwt_config_init(&cfg);
    cfg.secret = hs_secret;
    cd_jwt_keyset *ks = load(&cfg);
    signer s = {"HS256", NULL, (const unsigned char *)hs_secret, strlen(hs_secret)};
    static const struct {
        const char *header, *why;
    } cases[] = {
        {"{\"alg\":\"HS256\",\"jwk\":{\"kty\":\"oct\",\"k\":\"AAAA\"}}", "jwk header refused"},
        {"{\"alg\":\"HS256\",\"jku\":\"https://evil.example/jwks\"}", "jku header refused"},
        {"{\"alg\":\"HS256\",\"x5u\":\"https://evil.example/cert\"}", "x5u header refused"},
        {"{\"alg\":\"HS256\",\"x5c\":[\"MIIB\"]}", "x5c header refused"},
        {"{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", "crit header not supported"},
        {"{\"alg\":\"HS256\",\"jwk\":null}", "jwk header refused"},
        {"{\"alg\":\"HS256\",\"\\u0063rit\":[]}", "crit header not supported"},
    };
    for (size_t i = 0; i < CD_ARRAY_LEN(cases); i++)
        EXPECT(ks, cases[i].header, payload_ok(), &s, CD_JWT_EHEADER, cases[i].why);
    /* Refused before any key is looked at: the same with alg none. */
    EXPECT(ks, "{\"alg\":\"none\",\"jku\":\"x\"}", payload_ok(), NULL, CD_JWT_EHEADER, NULL);
    /* Duplicate "alg": refused, not "last wins". */
    EXPECT(ks, "{\"alg\":\"HS256\",\"alg\":\"none\"}", payload_ok(), &s, CD_JWT_EMALFORMED,
           "duplicate header parameter");
    /* Harmless extra parameters pass. */
    EXPECT(ks, "{\"alg\":\"HS256\",\"typ\":\"at+jwt\",\"cty\":\"x\",\"x5t\":\"abc\"}",
           payload_ok(), &s, 0, NULL);
    cd_jwt_keyset_unref(ks);
}

/* ------------------------------------------------------------------ */
/* Tests: claims. */

static cd_jwt_keyset *hs_set(const char *iss, const char *aud, uint32_t leeway, bool exp_req)
{
    cd_jwt_config cfg;
    cd_jwt_config_init(&cfg);
    cfg.secret = hs_secret;
    cfg.issuer = iss;
    cfg.audience = aud;
    cfg.leeway_s = leeway;
    cfg.exp_required = exp_req;
    return load(&cfg);
}

static const signer hs256 = {"HS256", NULL, (const unsigned char *)hs_secret, 64};

static void expect_payload(cd_jwt_keyset *ks, const char *payload, int rc, const char *why)
{
    EXPECT(ks, "{\"alg\":\"HS256\"}", payload, &hs256, rc, why);
}

TEST(exp_and_nbf_with_leeway)
{
    cd_jwt_keyset *ks = hs_set(NULL, NULL, 5, true);
    char p[256];
    /* RFC 7519 §4.1.4: valid while now < exp + leeway. */
    snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld}", NOW - 100);
    expect_payload(ks, p, CD_JWT_EEXPIRED, "expired");
    snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld}", NOW - 5);
    expect_payload(ks, p, CD_JWT_EEXPIRED, "expired");
    snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld}", NOW - 4);
    expect_payload(ks, p, 0, NULL);
    snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld}", NOW);
    expect_payload(ks, p, 0, NULL);
    /* A NumericDate may have a fraction (RFC 7519 §2); exp rounds down. */
    snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld.9}", NOW - 5);
    expect_payload(ks, p, CD_JWT_EEXPIRED, NULL);
    snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld.5}", NOW + 60);
    expect_payload(ks, p, 0, NULL);
    CHECK_EQ(claims.exp_s, NOW + 60);
    expect_payload(ks, "{\"sub\":\"u\",\"exp\":1.7e9}", 0, NULL);
    CHECK_EQ(claims.exp_s, 1700000000);
    expect_payload(ks, "{\"sub\":\"u\",\"exp\":1e300}", CD_JWT_EMALFORMED, NULL);
    expect_payload(ks, "{\"sub\":\"u\",\"exp\":\"tomorrow\"}", CD_JWT_EMALFORMED,
                   "exp is not a NumericDate");
    expect_payload(ks, "{\"sub\":\"u\",\"exp\":99999999999999999999}", CD_JWT_EMALFORMED, NULL);
    expect_payload(ks, "{\"sub\":\"u\",\"exp\":9223372036854775807}", 0, NULL);
    expect_payload(ks, "{\"sub\":\"u\",\"exp\":-9223372036854775808}", CD_JWT_EEXPIRED, NULL);
    expect_payload(ks, "{\"sub\":\"u\"}", CD_JWT_ECLAIMS, "missing exp");

    /* RFC 7519 §4.1.5: valid once now + leeway >= nbf. */
    snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":%lld}", NOW + 600, NOW + 100);
    expect_payload(ks, p, CD_JWT_ENOTYET, "not yet valid");
    snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":%lld}", NOW + 600, NOW + 6);
    expect_payload(ks, p, CD_JWT_ENOTYET, NULL);
    snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":%lld}", NOW + 600, NOW + 5);
    expect_payload(ks, p, 0, NULL);
    CHECK(claims.has_nbf && claims.nbf_s == NOW + 5);
    snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":%lld.1}", NOW + 600, NOW + 5);
    expect_payload(ks, p, CD_JWT_ENOTYET, NULL);
    snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld,\"nbf\":-9223372036854775808}",
             NOW + 600);
    expect_payload(ks, p, 0, NULL);
    snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld,\"iat\":\"x\"}", NOW + 600);
    expect_payload(ks, p, CD_JWT_EMALFORMED, "iat is not a NumericDate");
    cd_jwt_keyset_unref(ks);

    /* exp optional by configuration; leeway 0. */
    cd_jwt_keyset *opt = hs_set(NULL, NULL, 0, false);
    expect_payload(opt, "{\"sub\":\"u\"}", 0, NULL);
    CHECK(!claims.has_exp);
    snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld}", NOW);
    expect_payload(opt, p, CD_JWT_EEXPIRED, NULL);
    snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld}", NOW + 1);
    expect_payload(opt, p, 0, NULL);
    cd_jwt_keyset_unref(opt);

    /* The time is an argument: the same token at two times. */
    cd_jwt_keyset *k2 = hs_set(NULL, NULL, 0, true);
    char *tok = make_token("{\"alg\":\"HS256\"}", "{\"sub\":\"u\",\"exp\":1000,\"nbf\":500}",
                           &hs256);
    CHECK_EQ(verify_at(k2, tok, strlen(tok), 999, NULL), 0);
    CHECK_EQ(verify_at(k2, tok, strlen(tok), 1000, NULL), CD_JWT_EEXPIRED);
    CHECK_EQ(verify_at(k2, tok, strlen(tok), 499, NULL), CD_JWT_ENOTYET);
    CHECK_EQ(verify_at(k2, tok, strlen(tok), INT64_MIN, NULL), CD_JWT_ENOTYET);
    CHECK_EQ(verify_at(k2, tok, strlen(tok), INT64_MAX, NULL), CD_JWT_EEXPIRED);
    free(tok);
    cd_jwt_keyset_unref(k2);
}

TEST(issuer_and_audience)
{
    cd_jwt_keyset *ks = hs_set("https://issuer.example", "conduit", 5, true);
    char p[512];
#define PAY(extra) (snprintf(p, sizeof(p), "{\"sub\":\"u\",\"exp\":%lld%s}", NOW + 60, extra), p)
    expect_payload(ks, PAY(",\"iss\":\"https://issuer.example\",\"aud\":\"conduit\""), 0, NULL);
    expect_payload(ks, PAY(",\"iss\":\"https://evil.example\",\"aud\":\"conduit\""),
                   CD_JWT_EISSUER, "wrong issuer");
    expect_payload(ks, PAY(",\"aud\":\"conduit\""), CD_JWT_EISSUER, "missing iss");
    expect_payload(ks, PAY(",\"iss\":\"https://issuer.example/\",\"aud\":\"conduit\""),
                   CD_JWT_EISSUER, NULL);
    expect_payload(ks, PAY(",\"iss\":[\"https://issuer.example\"],\"aud\":\"conduit\""),
                   CD_JWT_EISSUER, NULL);
    expect_payload(ks, PAY(",\"iss\":\"https://issuer.example\",\"aud\":\"other\""),
                   CD_JWT_EAUDIENCE, "wrong audience");
    expect_payload(ks, PAY(",\"iss\":\"https://issuer.example\""), CD_JWT_EAUDIENCE,
                   "missing aud");
    expect_payload(ks, PAY(",\"iss\":\"https://issuer.example\",\"aud\":[\"a\",\"conduit\"]"), 0,
                   NULL);
    expect_payload(ks, PAY(",\"iss\":\"https://issuer.example\",\"aud\":[\"a\",\"b\"]"),
                   CD_JWT_EAUDIENCE, NULL);
    expect_payload(ks, PAY(",\"iss\":\"https://issuer.example\",\"aud\":[]"), CD_JWT_EAUDIENCE,
                   NULL);
    expect_payload(ks, PAY(",\"iss\":\"https://issuer.example\",\"aud\":[\"conduit\",7]"),
                   CD_JWT_EMALFORMED, NULL);
    expect_payload(ks, PAY(",\"iss\":\"https://issuer.example\",\"aud\":7"), CD_JWT_EMALFORMED,
                   NULL);
    expect_payload(ks, PAY(",\"iss\":\"https://issuer.example\",\"aud\":\"CONDUIT\""),
                   CD_JWT_EAUDIENCE, NULL);
    /* A NUL inside does not make a prefix equal. */
    expect_payload(ks, PAY(",\"iss\":\"https://issuer.example\",\"aud\":\"conduit\\u0000x\""),
                   CD_JWT_EAUDIENCE, NULL);
    cd_jwt_keyset_unref(ks);

    /* Not configured: not checked. */
    cd_jwt_keyset *open = hs_set(NULL, NULL, 5, true);
    expect_payload(open, PAY(",\"iss\":\"anyone\",\"aud\":[1,2]"), 0, NULL);
    cd_jwt_keyset_unref(open);
#undef PAY
}

TEST(subject)
{
    cd_jwt_keyset *ks = hs_set(NULL, NULL, 5, false);
    expect_payload(ks, "{}", CD_JWT_ECLAIMS, "missing sub");
    expect_payload(ks, "{\"sub\":42}", CD_JWT_ECLAIMS, "missing sub");
    expect_payload(ks, "{\"sub\":null}", CD_JWT_ECLAIMS, NULL);
    expect_payload(ks, "{\"sub\":\"\"}", CD_JWT_ECLAIMS, NULL);
    expect_payload(ks, "{\"sub\":\"a\\nb\"}", CD_JWT_ECLAIMS, NULL);
    expect_payload(ks, "{\"sub\":\"a\\u007fb\"}", CD_JWT_ECLAIMS, NULL);
    expect_payload(ks, "{\"sub\":\"a\\u0085b\"}", CD_JWT_ECLAIMS, NULL);
    expect_payload(ks, "{\"sub\":\"a\\u0000b\"}", CD_JWT_ECLAIMS, NULL);
    expect_payload(ks, "{\"sub\":\"\\u00e9l\\u00e8ve \\ud83d\\ude00\"}", 0, NULL);
    CHECK_STR(claims.sub, "\xc3\xa9l\xc3\xa8ve \xf0\x9f\x98\x80");
    char p[400], name[300];
    memset(name, 'x', 255);
    name[255] = '\0';
    snprintf(p, sizeof(p), "{\"sub\":\"%s\"}", name);
    expect_payload(ks, p, 0, NULL);
    CHECK_EQ(strlen(claims.sub), 255);
    name[255] = 'x';
    name[256] = '\0';
    snprintf(p, sizeof(p), "{\"sub\":\"%s\"}", name);
    expect_payload(ks, p, CD_JWT_ECLAIMS, "sub longer than 255 bytes");
    expect_payload(ks, "{\"sub\":\"a\",\"sub\":\"b\"}", CD_JWT_EMALFORMED, "duplicate claim");
    cd_jwt_keyset_unref(ks);
}

TEST(permission_claims)
{
    cd_jwt_keyset *ks = hs_set(NULL, NULL, 5, false);
    expect_payload(ks, "{\"sub\":\"u\",\"channels\":[\"chat:*\",\"news\"],\"publish\":[]}", 0,
                   NULL);
    CHECK(claims.has_channels && claims.has_publish);
    CHECK_EQ(claims.n_channels, 2);
    CHECK_EQ(claims.n_publish, 0);
    CHECK_STR(claims.channels[0], "chat:*");
    CHECK_STR(claims.channels[1], "news");
    expect_payload(ks, "{\"sub\":\"u\",\"channels\":\"chat:*\"}", CD_JWT_EMALFORMED,
                   "permission claim is not an array of strings");
    expect_payload(ks, "{\"sub\":\"u\",\"publish\":[1]}", CD_JWT_EMALFORMED, NULL);
    expect_payload(ks, "{\"sub\":\"u\",\"publish\":[\"a\\u0000\"]}", CD_JWT_EMALFORMED, NULL);

    /* 32 patterns of 255 bytes each fit; one more of either is refused. */
    char *p = xmalloc(20000);
    char pat[300];
    memset(pat, 'p', 255);
    pat[255] = '\0';
    for (int extra_count = 0; extra_count < 2; extra_count++) {
        size_t n = (size_t)sprintf(p, "{\"sub\":\"u\",\"publish\":[");
        for (int i = 0; i < 32 + extra_count; i++)
            n += (size_t)sprintf(p + n, "%s\"%s\"", i ? "," : "", pat);
        sprintf(p + n, "]}");
        expect_payload(ks, p, extra_count ? CD_JWT_ETOOLARGE : 0,
                       extra_count ? "too many permission patterns" : NULL);
        if (!extra_count) {
            CHECK_EQ(claims.n_publish, 32);
            CHECK_EQ(strlen(claims.publish[31]), 255);
            CHECK(!claims.has_channels);
        }
    }
    pat[255] = 'p';
    pat[256] = '\0';
    sprintf(p, "{\"sub\":\"u\",\"channels\":[\"%s\"]}", pat);
    expect_payload(ks, p, CD_JWT_ETOOLARGE, "permission pattern too long");
    free(p);
    cd_jwt_keyset_unref(ks);
}

/* ------------------------------------------------------------------ */
/* Tests: structure. */

TEST(malformed_tokens)
{
    cd_jwt_keyset *ks = hs_set(NULL, NULL, 5, false);
    char *good = make_token("{\"alg\":\"HS256\"}", "{\"sub\":\"u\"}", &hs256);
    CHECK_EQ(verify(ks, good, NULL), 0);
    size_t n = strlen(good);
    char *t = xmalloc(n + 64);
    const char *why = NULL;

    CHECK_EQ(verify(ks, "", &why), CD_JWT_EMALFORMED);
    CHECK_STR(why, "not three dot-separated parts");
    CHECK_EQ(verify(ks, "..", &why), CD_JWT_EMALFORMED);
    CHECK_EQ(verify(ks, "a.b", NULL), CD_JWT_EMALFORMED);
    CHECK_EQ(verify(ks, "abc", NULL), CD_JWT_EMALFORMED);
    /* Trailing dot, extra part, trailing garbage. */
    snprintf(t, n + 64, "%s.", good);
    CHECK_EQ(verify(ks, t, &why), CD_JWT_EMALFORMED);
    CHECK_STR(why, "not three dot-separated parts");
    snprintf(t, n + 64, "%s.AAAA", good);
    CHECK_EQ(verify(ks, t, NULL), CD_JWT_EMALFORMED);
    snprintf(t, n + 64, "%s ", good);
    CHECK_EQ(verify(ks, t, &why), CD_JWT_EMALFORMED);
    CHECK_STR(why, "signature is not base64url");
    snprintf(t, n + 64, "%s\n", good);
    CHECK_EQ(verify(ks, t, NULL), CD_JWT_EMALFORMED);
    snprintf(t, n + 64, "%sAA", good); /* 45 characters: 1 mod 4 */
    CHECK_EQ(verify(ks, t, NULL), CD_JWT_EMALFORMED);
    snprintf(t, n + 64, "%sAAAA", good);
    CHECK_EQ(verify(ks, t, &why), CD_JWT_EBADSIG);
    CHECK_STR(why, "signature has the wrong length");
    /* A NUL inside is a byte like any other: not base64url. */
    memcpy(t, good, n + 1);
    CHECK_EQ(verify_at(ks, t, n + 1, NOW, NULL), CD_JWT_EMALFORMED);
    CHECK(verify_at(ks, t, n - 1, NOW, NULL) != 0);

    /* Padding, '+', '/': standard base64 is not base64url (RFC 7515 §2). */
    char *sig = strrchr(good, '.') + 1;
    size_t pre = (size_t)(sig - good);
    snprintf(t, n + 64, "%s=", good);
    CHECK_EQ(verify(ks, t, NULL), CD_JWT_EMALFORMED);
    memcpy(t, good, n + 1);
    for (size_t i = pre; i < n; i++)
        if (t[i] == '-' || t[i] == '_') {
            t[i] = t[i] == '-' ? '+' : '/';
            CHECK_EQ(verify(ks, t, NULL), CD_JWT_EMALFORMED);
            break;
        }
    memcpy(t, good, n + 1);
    t[pre + 3] = '+';
    CHECK_EQ(verify(ks, t, NULL), CD_JWT_EMALFORMED);
    t[pre + 3] = '/';
    CHECK_EQ(verify(ks, t, NULL), CD_JWT_EMALFORMED);
    /* A padded header. */
    char *h = make_token("{\"alg\":\"HS256\",\"x\":1}", "{\"sub\":\"u\"}", &hs256);
    char *d1 = strchr(h, '.');
    size_t hl = (size_t)(d1 - h);
    if (hl % 4 != 0) {
        snprintf(t, n + 64, "%.*s%.*s%s", (int)hl, h, (int)(4 - hl % 4), "===", d1);
        CHECK_EQ(verify(ks, t, &why), CD_JWT_EMALFORMED);
        CHECK_STR(why, "header is not base64url");
    }
    free(h);
    /* Non-canonical encoding: the last character's unused bits set
     * (RFC 4648 §3.5).  A 32-byte MAC is 43 characters, 2 spare bits. */
    memcpy(t, good, n + 1);
    size_t last = n - 1;
    CHECK_EQ((n - pre) % 4, 3);
    const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int v = (int)(strchr(alpha, t[last]) - alpha);
    t[last] = alpha[v | 1];
    if (v != (v | 1))
        CHECK_EQ(verify(ks, t, &why), CD_JWT_EMALFORMED);
    t[last] = alpha[(v & ~3) | 2];
    if (v != ((v & ~3) | 2))
        CHECK_EQ(verify(ks, t, NULL), CD_JWT_EMALFORMED);
    /* Length 1 mod 4 is never base64. */
    snprintf(t, n + 64, "A.%s", strchr(good, '.') + 1);
    CHECK_EQ(verify(ks, t, &why), CD_JWT_EMALFORMED);
    CHECK_STR(why, "header is not base64url");

    /* Header or payload not a JSON object. */
    EXPECT(ks, "[\"alg\",\"HS256\"]", "{\"sub\":\"u\"}", &hs256, CD_JWT_EMALFORMED,
           "header is not a JSON object");
    EXPECT(ks, "alg=HS256", "{\"sub\":\"u\"}", &hs256, CD_JWT_EMALFORMED, NULL);
    EXPECT(ks, "", "{\"sub\":\"u\"}", &hs256, CD_JWT_EMALFORMED, NULL);
    EXPECT(ks, "{\"alg\":\"HS256\",}", "{\"sub\":\"u\"}", &hs256, CD_JWT_EMALFORMED, NULL);
    EXPECT(ks, "{\"alg\":\"HS256\"} x", "{\"sub\":\"u\"}", &hs256, CD_JWT_EMALFORMED, NULL);
    EXPECT(ks, "\xef\xbb\xbf{\"alg\":\"HS256\"}", "{\"sub\":\"u\"}", &hs256, CD_JWT_EMALFORMED,
           NULL);
    EXPECT(ks, "{\"alg\":\"HS256\",\"x\":\"\xff\"}", "{\"sub\":\"u\"}", &hs256,
           CD_JWT_EMALFORMED, NULL);
    EXPECT(ks, "{\"alg\":\"HS256\"}", "[{\"sub\":\"u\"}]", &hs256, CD_JWT_EMALFORMED,
           "payload is not a JSON object");
    EXPECT(ks, "{\"alg\":\"HS256\"}", "", &hs256, CD_JWT_EMALFORMED, NULL);
    EXPECT(ks, "{\"alg\":\"HS256\"}", "{\"sub\":\"u\"", &hs256, CD_JWT_EMALFORMED, NULL);
    EXPECT(ks, "{\"alg\":\"HS256\"}", "\"u\"", &hs256, CD_JWT_EMALFORMED, NULL);
    /* Deep nesting in the header stops at the reader's limit. */
    char deep[200];
    snprintf(deep, sizeof(deep), "{\"alg\":\"HS256\",\"x\":%s1%s}", "[[[[[[[[[[[[",
             "]]]]]]]]]]]]");
    EXPECT(ks, deep, "{\"sub\":\"u\"}", &hs256, CD_JWT_EMALFORMED, NULL);

    /* Every proper prefix fails cleanly. */
    for (size_t i = 0; i < n; i++)
        CHECK(verify_at(ks, good, i, NOW, NULL) != 0);
    free(t);
    free(good);
    cd_jwt_keyset_unref(ks);
}

TEST(huge_tokens)
{
    cd_jwt_keyset *ks = hs_set(NULL, NULL, 5, false);
    size_t big = CD_JWT_MAX_TOKEN_LEN + 1;
    char *t = xmalloc(big + 1);
    memset(t, 'A', big);
    t[10] = '.';
    t[20] = '.';
    t[big] = '\0';
    const char *why = NULL;
    CHECK_EQ(verify(ks, t, &why), CD_JWT_ETOOLARGE);
    CHECK_STR(why, "token too large");
    free(t);
    /* A token just under the cap: a big payload, valid and signed. */
    char *p = xmalloc(CD_JWT_MAX_TOKEN_LEN);
    int pl = snprintf(p, CD_JWT_MAX_TOKEN_LEN, "{\"sub\":\"u\",\"pad\":\"");
    memset(p + pl, 'z', 11000);
    strcpy(p + pl + 11000, "\"}");
    char *tok = make_token("{\"alg\":\"HS256\"}", p, &hs256);
    CHECK(strlen(tok) <= CD_JWT_MAX_TOKEN_LEN);
    CHECK_EQ(verify(ks, tok, NULL), 0);
    free(tok);
    memset(p + pl, 'z', 13000);
    strcpy(p + pl + 13000, "\"}");
    tok = make_token("{\"alg\":\"HS256\"}", p, &hs256);
    CHECK_EQ(verify(ks, tok, NULL), CD_JWT_ETOOLARGE);
    free(tok);
    free(p);
    cd_jwt_keyset_unref(ks);
}

TEST(signature_lengths)
{
    cd_jwt_keyset *ks = load_file(pem_p256, NULL);
    const char *pay = payload_ok();
    unsigned char sig[200];
    memset(sig, 0x11, sizeof(sig));
    size_t bad[] = {1, 32, 63, 65, 70, 72, 96, 128};
    for (size_t i = 0; i < CD_ARRAY_LEN(bad); i++) {
        char *tok = make_token_sig(hdr("ES256", NULL), pay, NULL, sig, bad[i]);
        const char *why = NULL;
        CHECK_EQ(verify(ks, tok, &why), CD_JWT_EBADSIG);
        CHECK_STR(why, "signature has the wrong length");
        free(tok);
    }
    /* 64 bytes of garbage, of zeros, and r = s = n - 1: well-formed, wrong. */
    char *tok = make_token_sig(hdr("ES256", NULL), pay, NULL, sig, 64);
    CHECK_EQ(verify(ks, tok, NULL), CD_JWT_EBADSIG);
    free(tok);
    memset(sig, 0, 64);
    sig[31] = 0; /* r = 0 is outside [1, n-1] */
    tok = make_token_sig(hdr("ES256", NULL), pay, NULL, sig, 64);
    CHECK_EQ(verify(ks, tok, NULL), CD_JWT_EBADSIG);
    free(tok);
    memset(sig, 0xff, 64);
    tok = make_token_sig(hdr("ES256", NULL), pay, NULL, sig, 64);
    CHECK_EQ(verify(ks, tok, NULL), CD_JWT_EBADSIG);
    free(tok);
    /* The real R || S verifies. */
    signer es = {"ES256", p256_key, NULL, 0};
    char *good = make_token(hdr("ES256", NULL), pay, &es);
    CHECK_EQ(verify(ks, good, NULL), 0);
    free(good);
    cd_jwt_keyset_unref(ks);

    cd_jwt_keyset *p384 = load_file(pem_p384, NULL);
    memset(sig, 0x22, sizeof(sig));
    tok = make_token_sig(hdr("ES384", NULL), pay, NULL, sig, 64);
    CHECK_EQ(verify(p384, tok, NULL), CD_JWT_EBADSIG);
    free(tok);
    tok = make_token_sig(hdr("ES384", NULL), pay, NULL, sig, 96);
    CHECK_EQ(verify(p384, tok, NULL), CD_JWT_EBADSIG);
    free(tok);
    cd_jwt_keyset_unref(p384);

    cd_jwt_keyset *rsa = load_file(pem_rsa, NULL);
    tok = make_token_sig(hdr("RS256", NULL), pay, NULL, sig, 128);
    const char *why = NULL;
    CHECK_EQ(verify(rsa, tok, &why), CD_JWT_EBADSIG);
    CHECK_STR(why, "signature has the wrong length");
    free(tok);
    cd_jwt_keyset_unref(rsa);

    cd_jwt_keyset *ed = load_file(pem_ed, NULL);
    tok = make_token_sig(hdr("EdDSA", NULL), pay, NULL, sig, 63);
    CHECK_EQ(verify(ed, tok, NULL), CD_JWT_EBADSIG);
    free(tok);
    tok = make_token_sig(hdr("EdDSA", NULL), pay, NULL, sig, 64);
    CHECK_EQ(verify(ed, tok, NULL), CD_JWT_EBADSIG);
    free(tok);
    /* An empty signature. */
    tok = make_token(hdr("EdDSA", NULL), pay, NULL);
    CHECK_EQ(verify(ed, tok, NULL), CD_JWT_EBADSIG);
    free(tok);
    cd_jwt_keyset_unref(ed);
}

/* ------------------------------------------------------------------ */
/* Tests: loading. */

/* Load must fail with rc, and the message must contain each of the
 * given fragments (NULL-terminated list). */
static void expect_load_error(const cd_jwt_config *cfg, int rc, const char *frag1,
                              const char *frag2)
{
    cd_jwt_keyset *ks = (cd_jwt_keyset *)1;
    char err[512];
    CHECK_EQ(cd_jwt_keyset_load(&ks, cfg, err, sizeof(err)), rc);
    CHECK(ks == NULL);
    if (frag1 != NULL && strstr(err, frag1) == NULL)
        TEST_FAIL_AT(__FILE__, __LINE__, "\"%s\" lacks \"%s\"", err, frag1);
    if (frag2 != NULL && strstr(err, frag2) == NULL)
        TEST_FAIL_AT(__FILE__, __LINE__, "\"%s\" lacks \"%s\"", err, frag2);
}

static void expect_file_error(const char *text, const char *frag)
{
    cd_jwt_config cfg;
    cd_jwt_config_init(&cfg);
    cfg.key_file = write_tmp(text, strlen(text));
    expect_load_error(&cfg, CONDUIT_EINVAL, cfg.key_file, frag);
}

TEST(load_errors_name_the_file)
{
    cd_jwt_config cfg;
    cd_jwt_config_init(&cfg);
    expect_load_error(&cfg, CONDUIT_EINVAL, "no key configured", NULL);
    cfg.secret = "";
    expect_load_error(&cfg, CONDUIT_EINVAL, "no key configured", NULL);
    cfg.secret = "short";
    expect_load_error(&cfg, CONDUIT_EINVAL, "jwt secret", "too short for HS256");
    cfg.secret = NULL;
    cfg.key_file = "/nonexistent/conduit/key.pem";
    expect_load_error(&cfg, CONDUIT_EIO, "/nonexistent/conduit/key.pem", "cannot open");
    cfg.key_file = "/tmp";
    expect_load_error(&cfg, CONDUIT_EIO, "/tmp", "not a regular file");
    cfg.key_data = "x";
    cfg.key_data_len = 1;
    expect_load_error(&cfg, CONDUIT_EINVAL, "both", NULL);

    expect_file_error("", "is empty");
    expect_file_error("  \n", "is empty");
    expect_file_error("hello", "neither a PEM public key");
    expect_file_error("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                      "cannot be decoded");
    expect_file_error("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                      "openssl x509 -pubkey");
    char *priv = pem_of(p256_key, "PrivateKeyInfo", true);
    expect_file_error(priv, "private key");
    free(priv);
    char *two = xmalloc(8192);
    char *a = pem_of(rsa_key, "SubjectPublicKeyInfo", false);
    char *b = pem_of(p256_key, "SubjectPublicKeyInfo", false);
    snprintf(two, 8192, "%s%s", a, b);
    expect_file_error(two, "2 PEM blocks");
    free(a);
    free(b);
    free(two);
    char *weak = pem_of(rsa1024_key, "SubjectPublicKeyInfo", false);
    expect_file_error(weak, "RSA key of 1024 bits");
    free(weak);

    expect_file_error("{\"keys\":[", "not valid JSON");
    expect_file_error("{\"keys\":{}}", "\"keys\" is not an array");
    expect_file_error("{\"keys\":[]}", "no keys");
    expect_file_error("{\"foo\":1}", "neither a JWK Set");
    expect_file_error("{\"keys\":[1]}", "key 0 is not a JSON object");
    expect_file_error("{\"keys\":[{\"kid\":\"x\"}]}", "\"kty\" is missing");
    expect_file_error("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r\",\"e\":\"AQAB\"}]}",
                      "key 0 (kid \"r\"): \"n\" is missing");
    expect_file_error("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"a+b\",\"e\":\"AQAB\"}]}",
                      "\"n\" is not base64url");
    expect_file_error("{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2hvcnQ\"}]}", "too short for HS256");
    expect_file_error("{\"keys\":[{\"kty\":\"oct\",\"alg\":\"RS256\",\"k\":\"c2hvcnQ\"}]}",
                      "alg RS256 does not fit an HMAC key");
    expect_file_error("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}",
                      "must be 32 bytes each");
    expect_file_error("{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AAAA\"}]}",
                      "must be 32 bytes");
    expect_file_error("{\"keys\":[{\"kty\":\"EC\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}",
                      "\"crv\" is missing");

    /* alg that disagrees with the key type. */
    char jwk[2048], doc[2200];
    jwk_of(rsa_key, "r", ",\"alg\":\"ES256\"", jwk, sizeof(jwk));
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", jwk);
    expect_file_error(doc, "alg ES256 does not fit a RSA key");
    jwk_of(p256_key, "e", ",\"alg\":\"ES384\"", jwk, sizeof(jwk));
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", jwk);
    expect_file_error(doc, "alg ES384 does not fit a EC P-256 key");
    jwk_of(ed_key, "d", ",\"alg\":\"HS256\"", jwk, sizeof(jwk));
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", jwk);
    expect_file_error(doc, "does not fit");
    /* Private material. */
    jwk_of(ed_key, "d", ",\"d\":\"AAAA\"", jwk, sizeof(jwk));
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", jwk);
    expect_file_error(doc, "private key (\"d\")");
    /* A point not on the curve. */
    char xy[64];
    unsigned char one[32] = {0};
    one[31] = 1;
    b64url(one, 32, xy);
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}]}", xy, xy);
    expect_file_error(doc, "key 0");
    /* A weak RSA key in a JWKS. */
    jwk_of(rsa1024_key, "w", "", jwk, sizeof(jwk));
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", jwk);
    expect_file_error(doc, "key 0 (kid \"w\"): RSA key of 1024 bits");
    /* Only keys we do not implement: "no usable key". */
    expect_file_error("{\"keys\":[{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"},"
                      "{\"kty\":\"EC\",\"crv\":\"P-521\",\"x\":\"AA\",\"y\":\"AA\"}]}",
                      "no usable key (2 skipped");
    /* More keys than the set holds. */
    char *many = xmalloc(40000);
    size_t n = (size_t)sprintf(many, "{\"keys\":[");
    char k[128];
    b64url((const unsigned char *)hs_secret, 64, k);
    for (int i = 0; i <= CD_JWT_MAX_KEYS; i++)
        n += (size_t)sprintf(many + n, "%s{\"kty\":\"oct\",\"kid\":\"k%d\",\"k\":\"%s\"}",
                             i ? "," : "", i, k);
    sprintf(many + n, "]}");
    expect_file_error(many, "more than 32 keys");
    free(many);
}

TEST(load_variants)
{
    /* PKCS#1 "RSA PUBLIC KEY" PEM, with explanatory text before it. */
    char *pk1 = pem_of(rsa_key, "type-specific", false);
    CHECK(strstr(pk1, "BEGIN RSA PUBLIC KEY") != NULL);
    char *text = xmalloc(strlen(pk1) + 64);
    sprintf(text, "Issuer key, rotated 2024\n%s", pk1);
    cd_jwt_keyset *ks = load_file(write_tmp(text, strlen(text)), NULL);
    signer rs = {"RS512", rsa_key, NULL, 0};
    if (ks != NULL)
        EXPECT(ks, hdr("RS512", NULL), payload_ok(), &rs, 0, NULL);
    cd_jwt_keyset_unref(ks);
    free(text);
    free(pk1);

    /* A single JWK (not a set), and skipped keys next to a usable one. */
    char jwk[512], doc[2048];
    jwk_of(ed_key, "solo", "", jwk, sizeof(jwk));
    ks = load_file(write_tmp(jwk, strlen(jwk)), NULL);
    signer ed = {"EdDSA", ed_key, NULL, 0};
    EXPECT(ks, hdr("EdDSA", "solo"), payload_ok(), &ed, 0, NULL);
    cd_jwt_keyset_unref(ks);
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"RSA\",\"alg\":\"PS256\",\"n\":\"AQAB\",\"e\":\"AQAB\"},"
             "{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"AA\"},"
             "{\"kty\":\"EC\",\"crv\":\"P-256\",\"use\":\"enc\",\"x\":\"AA\",\"y\":\"AA\"},"
             "{\"kty\":\"oct\",\"key_ops\":[\"sign\"],\"k\":\"AA\"},"
             "{\"kty\":\"XYZ\"},%s],\"extra\":true}",
             jwk);
    ks = load_file(write_tmp(doc, strlen(doc)), NULL);
    CHECK_EQ(cd_jwt_keyset_count(ks), 1);
    cd_jwt_keyset_unref(ks);

    /* In-memory key data, and reference counting: a second holder keeps
     * the set alive after the first lets go. */
    char *pem = pem_of(p384_key, "SubjectPublicKeyInfo", false);
    cd_jwt_config cfg;
    cd_jwt_config_init(&cfg);
    cfg.key_data = pem;
    cfg.key_data_len = strlen(pem);
    ks = load(&cfg);
    free(pem);
    cd_jwt_keyset *held = cd_jwt_keyset_ref(ks);
    CHECK(held == ks);
    cd_jwt_keyset_unref(ks);
    signer es = {"ES384", p384_key, NULL, 0};
    EXPECT(held, hdr("ES384", NULL), payload_ok(), &es, 0, NULL);
    cd_jwt_keyset_unref(held);
    cd_jwt_keyset_unref(NULL);

    /* Arguments. */
    const char *why = NULL;
    CHECK_EQ(cd_jwt_verify(NULL, "a.b.c", 5, NOW, &claims, &why), CONDUIT_EINVAL);
    CHECK(why != NULL);
}

/* A failed verification or load leaves OpenSSL's thread-local error
 * queue as it was: the worker's next SSL_get_error must not see our
 * failures as a TLS error. */
static bool queue_is_sentinel(void)
{
    unsigned long e = ERR_peek_last_error();
    return ERR_GET_LIB(e) == ERR_LIB_USER && ERR_GET_REASON(e) == 77 && ERR_peek_error() == e;
}

TEST(openssl_error_queue_untouched)
{
    cd_jwt_keyset *ks = load_file(pem_p256, NULL);
    unsigned char sig[64];
    memset(sig, 0, sizeof(sig));
    char *tok = make_token_sig(hdr("ES256", NULL), payload_ok(), NULL, sig, 64);
    ERR_clear_error();
    ERR_raise(ERR_LIB_USER, 77);
    CHECK_EQ(verify(ks, tok, NULL), CD_JWT_EBADSIG);
    CHECK(queue_is_sentinel());
    free(tok);
    cd_jwt_keyset_unref(ks);

    cd_jwt_config cfg;
    cd_jwt_config_init(&cfg);
    cfg.key_data = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    cfg.key_data_len = strlen(cfg.key_data);
    cd_jwt_keyset *bad = NULL;
    char err[256];
    CHECK_EQ(cd_jwt_keyset_load(&bad, &cfg, err, sizeof(err)), CONDUIT_EINVAL);
    CHECK(queue_is_sentinel());
    cfg.key_data = NULL;
    cfg.key_file = pem_rsa;
    CHECK_EQ(cd_jwt_keyset_load(&bad, &cfg, err, sizeof(err)), 0);
    CHECK(queue_is_sentinel());
    cd_jwt_keyset_unref(bad);
    ERR_clear_error();
}

TEST(error_names)
{
    CHECK_STR(cd_jwt_err_label(0), "ok");
    CHECK_STR(cd_jwt_err_label(CD_JWT_EEXPIRED), "expired");
    CHECK_STR(cd_jwt_err_label(CD_JWT_EBADSIG), "signature");
    CHECK_STR(cd_jwt_err_label(CONDUIT_ENOMEM), "other");
    CHECK_STR(cd_jwt_strerror(CD_JWT_EKID), "unknown kid");
    CHECK_STR(cd_jwt_strerror(CONDUIT_ENOMEM), "out of memory");
    /* Distinct codes, outside the CONDUIT_E* and CD_JSON_* ranges. */
    int codes[] = {
#define CODE_(name, code, label, msg) code,
        CD_JWT_ERRORS(CODE_)
#undef CODE_
    };
    for (size_t i = 0; i < CD_ARRAY_LEN(codes); i++) {
        CHECK(codes[i] <= -200);
        for (size_t j = 0; j < i; j++)
            CHECK(codes[i] != codes[j]);
    }
}

/* ------------------------------------------------------------------ */
/* Tests: permissions. */

static bool m(const char *pattern, const char *channel)
{
    return cd_auth_pattern_match(pattern, channel, strlen(channel));
}

TEST(pattern_match)
{
    CHECK(m("news", "news"));
    CHECK(!m("news", "new"));
    CHECK(!m("news", "newss"));
    CHECK(!m("News", "news"));
    CHECK(m("*", "anything:at:all"));
    CHECK(m("*", ""));
    CHECK(m("chat:*", "chat:"));
    CHECK(m("chat:*", "chat:room1"));
    CHECK(m("chat:*", "chat:a:b"));
    CHECK(!m("chat:*", "chat"));
    CHECK(!m("chat:*", "chatx:1"));
    CHECK(m("*:lobby", "chat:lobby"));
    CHECK(m("*:lobby", ":lobby"));
    CHECK(!m("*:lobby", "chat:lobby2"));
    CHECK(m("user:*:inbox", "user:alice:inbox"));
    CHECK(m("user:*:inbox", "user::inbox"));
    CHECK(m("user:*:inbox", "user:a:b:inbox"));
    CHECK(!m("user:*:inbox", "user:alice:inbo"));
    CHECK(m("a*b*c", "abc"));
    CHECK(m("a*b*c", "aXbYc"));
    CHECK(m("a*b*c", "abbbcbc"));
    CHECK(!m("a*b*c", "acb"));
    CHECK(m("**", "x"));
    CHECK(m("a**b", "ab"));
    CHECK(m("*ab", "aab"));
    CHECK(m("*aab", "aaab"));
    CHECK(!m("ab*ba", "aba"));   /* prefix and suffix must not overlap */
    CHECK(m("ab*ba", "abba"));
    CHECK(m("*a*", "ba"));
    CHECK(!m("*a*", "bbb"));
    CHECK(m("x*", "x*"));        /* '*' in a channel is an ordinary byte */
    CHECK(m("x\\*", "x\\yz"));   /* no escapes */
    CHECK(!m("", "x"));
    CHECK(m("", ""));
    /* len is honoured: the channel need not be NUL-terminated. */
    CHECK(cd_auth_pattern_match("chat:*", "chat:abcdef", 5));
    CHECK(!cd_auth_pattern_match("chat:a", "chat:abcdef", 5));
    CHECK(!cd_auth_pattern_match("*f", "chat:abcdef", 7));
}

TEST(pattern_match_worst_case)
{
    /* A backtracking matcher takes exponential (recursive) or quadratic
     * time here; the linear one takes microseconds. */
    size_t n = 1u << 20;
    char *s = xmalloc(n + 1);
    memset(s, 'a', n);
    s[n] = '\0';
    char pat[600];
    size_t pl = 0;
    for (int i = 0; i < 100; i++) {
        pat[pl++] = '*';
        pat[pl++] = 'a';
    }
    pat[pl++] = '*';
    pat[pl++] = 'b';
    pat[pl] = '\0';
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 10; i++) {
        CHECK(!cd_auth_pattern_match("*a*a*a*a*b", s, n));
        CHECK(!cd_auth_pattern_match(pat, s, n));
        CHECK(!cd_auth_pattern_match("*aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab*", s, n));
        CHECK(cd_auth_pattern_match("*a*a*a*a*a", s, n));
    }
    s[n - 1] = 'b';
    CHECK(cd_auth_pattern_match("*a*a*a*a*b", s, n));
    CHECK(cd_auth_pattern_match(pat, s, n));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    printf("  # 42 matches against 1 MiB: %.1f ms\n", ms);
    CHECK(ms < 2000);
    free(s);
}

static bool dm(const char *user, const char *channel)
{
    return cd_auth_user_channel_allowed(user, channel, strlen(channel));
}

TEST(dm_channels)
{
    CHECK(dm("alice", "dm:alice,bob"));
    CHECK(dm("bob", "dm:alice,bob"));
    CHECK(!dm("carol", "dm:alice,bob"));
    CHECK(!dm("ali", "dm:alice,bob"));
    CHECK(!dm("alice,bob", "dm:alice,bob"));
    CHECK(!dm("bo", "dm:alice,bob"));
    CHECK(!dm("bobby", "dm:alice,bob"));
    CHECK(dm("alice", "dm:alice"));
    CHECK(dm("c", "dm:a,b,c"));
    CHECK(dm("b", "dm:a,b,c"));
    CHECK(!dm("", "dm:alice,,bob"));
    CHECK(!dm(NULL, "dm:alice,bob"));
    CHECK(!dm("alice", "dm:"));
    CHECK(!dm("alice", "DM:bob"));       /* namespaces are case-insensitive */
    CHECK(dm("alice", "Dm:alice"));
    CHECK(!dm("Alice", "dm:alice"));     /* users are not */
    CHECK(dm("anyone", "chat:alice,bob"));
    CHECK(dm("anyone", "dmx:alice"));
    CHECK(dm("anyone", "dm"));
    CHECK(dm("anyone", "news"));
    CHECK(dm(NULL, "news"));
    /* len is honoured. */
    CHECK(!cd_auth_user_channel_allowed("bob", "dm:alice,bob", 9));
    CHECK(cd_auth_user_channel_allowed("alice", "dm:alice,bob", 8));
}

int main(void)
{
    rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    rsa2_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    rsa1024_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    p256_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    p384_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    ed_key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!rsa_key || !rsa2_key || !rsa1024_key || !p256_key || !p384_key || !ed_key) {
        fprintf(stderr, "key generation failed\n");
        return 2;
    }
    pem_rsa = pem_file(rsa_key);
    pem_p256 = pem_file(p256_key);
    pem_p384 = pem_file(p384_key);
    pem_ed = pem_file(ed_key);

    RUN(every_algorithm_accepted);
    RUN(short_secret_serves_fewer_algs);
    RUN(wrong_key_or_tampering_is_bad_signature);
    RUN(alg_none_refused);
    RUN(hs256_keyed_with_rsa_public_pem_refused);
    RUN(jwks_rotation);
    RUN(unknown_kid);
    RUN(forbidden_headers);
    RUN(exp_and_nbf_with_leeway);
    RUN(issuer_and_audience);
    RUN(subject);
    RUN(permission_claims);
    RUN(malformed_tokens);
    RUN(huge_tokens);
    RUN(signature_lengths);
    RUN(load_errors_name_the_file);
    RUN(load_variants);
    RUN(openssl_error_queue_untouched);
    RUN(error_names);
    RUN(pattern_match);
    RUN(pattern_match_worst_case);
    RUN(dm_channels);

    cleanup();
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(rsa2_key);
    EVP_PKEY_free(rsa1024_key);
    EVP_PKEY_free(p256_key);
    EVP_PKEY_free(p384_key);
    EVP_PKEY_free(ed_key);
    return test_main_end();
}
