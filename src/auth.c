/* auth.c - JWT verification and channel permissions (auth.h).
 *
 * Owns: key sets.  A set holds up to CD_JWT_MAX_KEYS keys, each with the
 * fixed mask of algorithms it serves (RFC 8725 §3.1: the key decides, the
 * token's "alg" only has to be one of them), the expected issuer and
 * audience, and the digests and MAC it uses, fetched once.  Invariants: a
 * set is never written after cd_jwt_keyset_load returns, so workers share
 * it without locks; it is freed by the last unref.  Verification decodes
 * into one stack buffer, checks the signature before it parses a single
 * claim, and leaves OpenSSL's thread-local error queue as it found it
 * (ERR_set_mark / ERR_pop_to_mark): a failed verification must not leave
 * an entry that the next SSL_get_error on the worker's thread would read
 * as a TLS failure.  Loading is the only part that reads files or
 * allocates. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <limits.h> /* <openssl/err.h> of 3.0 uses INT_MAX without it */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include "common.h"
#include "conduit.h"
#include "json.h"

/* ------------------------------------------------------------------ */
/* Algorithms (RFC 7518 §3.1). */

enum {
    ALG_HS256,
    ALG_HS384,
    ALG_HS512,
    ALG_RS256,
    ALG_RS384,
    ALG_RS512,
    ALG_ES256,
    ALG_ES384,
    ALG_EDDSA,
    N_ALGS
};

#define BIT(a) ((uint16_t)(1u << (a)))
#define MASK_HS (BIT(ALG_HS256) | BIT(ALG_HS384) | BIT(ALG_HS512))
#define MASK_RS (BIT(ALG_RS256) | BIT(ALG_RS384) | BIT(ALG_RS512))

enum { FAM_HMAC, FAM_RSA, FAM_EC, FAM_ED };

/* md: index into keyset.md (0 SHA-256, 1 SHA-384, 2 SHA-512), -1 none.
 * size: the HMAC output, or the length of R and of S for ECDSA. */
static const struct alg_info {
    const char *name;
    int family;
    int md;
    size_t size;
} alg_table[N_ALGS] = {
    [ALG_HS256] = {"HS256", FAM_HMAC, 0, 32},
    [ALG_HS384] = {"HS384", FAM_HMAC, 1, 48},
    [ALG_HS512] = {"HS512", FAM_HMAC, 2, 64},
    [ALG_RS256] = {"RS256", FAM_RSA, 0, 0},
    [ALG_RS384] = {"RS384", FAM_RSA, 1, 0},
    [ALG_RS512] = {"RS512", FAM_RSA, 2, 0},
    [ALG_ES256] = {"ES256", FAM_EC, 0, 32},
    [ALG_ES384] = {"ES384", FAM_EC, 1, 48},
    [ALG_EDDSA] = {"EdDSA", FAM_ED, -1, 0},
};

static const char *const md_names[3] = {"SHA256", "SHA384", "SHA512"};

/* ------------------------------------------------------------------ */
/* Key sets. */

typedef struct jwt_key {
    char kid[CD_JWT_MAX_KID + 1];
    bool has_kid;
    uint16_t alg_mask;          /* BIT(ALG_*) this key serves */
    EVP_PKEY *pkey;             /* public key; NULL for an HMAC key */
    unsigned char *secret;      /* HMAC key; NULL otherwise */
    size_t secret_len;
} jwt_key;

struct cd_jwt_keyset {
    atomic_uint refs;
    size_t n_keys;
    char *issuer;               /* NULL: not checked */
    char *audience;             /* NULL: not checked */
    int64_t leeway_s;
    bool exp_required;
    EVP_MAC *hmac;
    EVP_MD *md[3];
    jwt_key keys[CD_JWT_MAX_KEYS];
};

void cd_jwt_config_init(cd_jwt_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->leeway_s = 5;
    cfg->exp_required = true;
}

static void keyset_free(cd_jwt_keyset *ks)
{
    for (size_t i = 0; i < ks->n_keys; i++) {
        EVP_PKEY_free(ks->keys[i].pkey);
        if (ks->keys[i].secret != NULL) {
            OPENSSL_cleanse(ks->keys[i].secret, ks->keys[i].secret_len);
            free(ks->keys[i].secret);
        }
    }
    free(ks->issuer);
    free(ks->audience);
    EVP_MAC_free(ks->hmac);
    for (size_t i = 0; i < CD_ARRAY_LEN(ks->md); i++)
        EVP_MD_free(ks->md[i]);
    free(ks);
}

cd_jwt_keyset *cd_jwt_keyset_ref(cd_jwt_keyset *ks)
{
    /* Relaxed: a new reference is taken from one the caller already holds,
     * so the set cannot be freed meanwhile. */
    atomic_fetch_add_explicit(&ks->refs, 1, memory_order_relaxed);
    return ks;
}

void cd_jwt_keyset_unref(cd_jwt_keyset *ks)
{
    if (ks == NULL)
        return;
    /* Release orders this holder's reads before the decrement; acquire on
     * the last one orders every holder's reads before the free. */
    if (atomic_fetch_sub_explicit(&ks->refs, 1, memory_order_acq_rel) == 1)
        keyset_free(ks);
}

size_t cd_jwt_keyset_count(const cd_jwt_keyset *ks)
{
    return ks->n_keys;
}

/* ------------------------------------------------------------------ */
/* Error names. */

const char *cd_jwt_strerror(int rc)
{
    switch (rc) {
#define CD_JWT_ERR_TEXT_(name, code, label, msg) \
    case CD_JWT_##name:                          \
        return msg;
        CD_JWT_ERRORS(CD_JWT_ERR_TEXT_)
#undef CD_JWT_ERR_TEXT_
    default:
        return conduit_strerror(rc);
    }
}

const char *cd_jwt_err_label(int rc)
{
    switch (rc) {
    case 0:
        return "ok";
#define CD_JWT_ERR_LABEL_(name, code, label, msg) \
    case CD_JWT_##name:                           \
        return label;
        CD_JWT_ERRORS(CD_JWT_ERR_LABEL_)
#undef CD_JWT_ERR_LABEL_
    default:
        return "other";
    }
}

/* ------------------------------------------------------------------ */
/* base64url (RFC 4648 §5), strict as RFC 7515 §2 asks: no padding, no
 * whitespace, and the unused low bits of the last character zero
 * (RFC 4648 §3.5), so that each byte string has exactly one encoding and
 * a token cannot be altered without changing its signed text. */

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decode s[0..n) into out[0..cap).  False when s is not strict base64url
 * or the result does not fit. */
static bool b64url_decode(const char *s, size_t n, unsigned char *out, size_t cap,
                          size_t *out_len)
{
    if (n % 4 == 1)
        return false;
    size_t need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (need > cap)
        return false;
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)s[i]);
        if (v < 0)
            return false;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return false;
    *out_len = o;
    return true;
}

/* ------------------------------------------------------------------ */
/* Loading. */

typedef struct loader {
    cd_jwt_keyset *ks;
    const char *origin;         /* "jwt key file /path", "jwt secret" */
    char *err;
    size_t errlen;
    size_t n_skipped;           /* JWKS keys skipped as unsupported */
    const char *skip_reason;    /* the last one's reason */
} loader;

__attribute__((format(printf, 3, 4))) static int lfail(loader *ld, int rc, const char *fmt, ...)
{
    if (ld->err == NULL || ld->errlen == 0)
        return rc;
    int n = snprintf(ld->err, ld->errlen, "%s: ", ld->origin);
    if (n < 0 || (size_t)n >= ld->errlen)
        return rc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return rc;
}

/* "key 2 (kid \"a\")" for messages about a JWKS key. */
static const char *key_desc(char *buf, size_t cap, size_t index, const char *kid)
{
    if (kid != NULL && index != SIZE_MAX)
        snprintf(buf, cap, "key %zu (kid \"%.64s\")", index, kid);
    else if (kid != NULL)
        snprintf(buf, cap, "key (kid \"%.64s\")", kid);
    else if (index != SIZE_MAX)
        snprintf(buf, cap, "key %zu", index);
    else
        snprintf(buf, cap, "key");
    return buf;
}

static int new_key(loader *ld, const char *kid, jwt_key **out)
{
    cd_jwt_keyset *ks = ld->ks;
    if (ks->n_keys == CD_JWT_MAX_KEYS)
        return lfail(ld, CONDUIT_EINVAL, "more than %d keys", CD_JWT_MAX_KEYS);
    jwt_key *k = &ks->keys[ks->n_keys];
    memset(k, 0, sizeof(*k));
    if (kid != NULL) {
        /* Callers checked the length against CD_JWT_MAX_KID. */
        snprintf(k->kid, sizeof(k->kid), "%s", kid);
        k->has_kid = true;
    }
    *out = k;
    return 0;
}

/* An HMAC key.  pin: the one alg a JWKS "alg" names, or -1.  Each HS alg
 * is served only when the key is at least as long as its hash (RFC 7518
 * §3.2: "A key of the same size as the hash output ... or larger MUST be
 * used"). */
static int add_hmac(loader *ld, const unsigned char *secret, size_t len, const char *kid, int pin,
                    const char *desc)
{
    /* desc NULL: the configured secret, which the origin already names. */
    const char *sep = desc != NULL ? ": " : "";
    if (desc == NULL)
        desc = "";
    uint16_t mask = 0;
    for (int a = ALG_HS256; a <= ALG_HS512; a++)
        if (len >= alg_table[a].size)
            mask |= BIT(a);
    if (pin >= 0) {
        if (!(BIT(pin) & MASK_HS))
            return lfail(ld, CONDUIT_EINVAL, "%s%salg %s does not fit an HMAC key", desc, sep,
                         alg_table[pin].name);
        if (!(mask & BIT(pin)))
            return lfail(ld, CONDUIT_EINVAL,
                         "%s%s%zu bytes is too short for %s (at least %zu, RFC 7518 §3.2)", desc,
                         sep, len, alg_table[pin].name, alg_table[pin].size);
        mask = BIT(pin);
    }
    if (mask == 0)
        return lfail(ld, CONDUIT_EINVAL,
                     "%s%s%zu bytes is too short for HS256 (at least 32, RFC 7518 §3.2)", desc,
                     sep, len);
    jwt_key *k;
    int rc = new_key(ld, kid, &k);
    if (rc != 0)
        return rc;
    if ((k->secret = malloc(len)) == NULL)
        return lfail(ld, CONDUIT_ENOMEM, "out of memory");
    memcpy(k->secret, secret, len);
    k->secret_len = len;
    k->alg_mask = mask;
    ld->ks->n_keys++;
    return 0;
}

/* A public key; takes ownership of pk (freed on failure too).  The key's
 * type decides its algorithms; pin (a JWKS "alg", or -1) must be one of
 * them and then is the only one. */
static int add_pkey(loader *ld, EVP_PKEY *pk, const char *kid, int pin, const char *desc)
{
    uint16_t mask = 0;
    const char *what = EVP_PKEY_get0_type_name(pk);
    int rc = CONDUIT_EINVAL;

    if (EVP_PKEY_is_a(pk, "RSA")) {
        int bits = EVP_PKEY_get_bits(pk);
        /* RFC 7518 §3.3: "A key of size 2048 bits or larger MUST be used". */
        if (bits < 2048) {
            rc = lfail(ld, CONDUIT_EINVAL,
                       "%s: RSA key of %d bits; at least 2048 (RFC 7518 §3.3)", desc, bits);
            goto fail;
        }
        mask = MASK_RS;
        what = "RSA";
    } else if (EVP_PKEY_is_a(pk, "EC")) {
        char group[64];
        size_t glen = 0;
        if (EVP_PKEY_get_group_name(pk, group, sizeof(group), &glen) != 1) {
            rc = lfail(ld, CONDUIT_EINVAL, "%s: EC key without a named curve", desc);
            goto fail;
        }
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
            mask = BIT(ALG_ES256);
            what = "EC P-256";
        } else if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
            mask = BIT(ALG_ES384);
            what = "EC P-384";
        } else {
            rc = lfail(ld, CONDUIT_EINVAL,
                       "%s: EC curve %s is not supported (P-256 for ES256, P-384 for ES384)",
                       desc, group);
            goto fail;
        }
    } else if (EVP_PKEY_is_a(pk, "ED25519")) {
        mask = BIT(ALG_EDDSA);
        what = "Ed25519";
    } else {
        rc = lfail(ld, CONDUIT_EINVAL,
                   "%s: key type %s is not supported (RSA, EC P-256/P-384, Ed25519)", desc,
                   what != NULL ? what : "?");
        goto fail;
    }
    if (pin >= 0) {
        if (!(mask & BIT(pin))) {
            rc = lfail(ld, CONDUIT_EINVAL, "%s: alg %s does not fit a %s key", desc,
                       alg_table[pin].name, what);
            goto fail;
        }
        mask = BIT(pin);
    }

    /* Sanity of the public values (RSA modulus, EC point on the curve)
     * before the key is trusted; -2 means the type has no such check. */
    EVP_PKEY_CTX *cctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    if (cctx == NULL) {
        rc = lfail(ld, CONDUIT_ENOMEM, "out of memory");
        goto fail;
    }
    int chk = EVP_PKEY_public_check(cctx);
    EVP_PKEY_CTX_free(cctx);
    if (chk != 1 && chk != -2) {
        rc = lfail(ld, CONDUIT_EINVAL, "%s: the %s public key fails OpenSSL's check", desc, what);
        goto fail;
    }

    jwt_key *k;
    if ((rc = new_key(ld, kid, &k)) != 0)
        goto fail;
    k->pkey = pk;
    k->alg_mask = mask;
    ld->ks->n_keys++;
    return 0;

fail:
    EVP_PKEY_free(pk);
    return rc;
}

/* The label of the first PEM block: p points just past "-----BEGIN ". */
static size_t pem_label(const char *p, const char *end)
{
    const char *dash = memmem(p, (size_t)(end - p), "-----", 5);
    if (dash == NULL || dash - p > 64)
        return 0;
    return (size_t)(dash - p);
}

static int load_pem(loader *ld, const char *p, size_t n)
{
    static const char begin[] = "-----BEGIN ";
    const char *end = p + n;
    const char *first = memmem(p, n, begin, sizeof(begin) - 1);
    const char *lab = first + sizeof(begin) - 1;
    size_t blocks = 0;
    for (const char *q = first; q != NULL;
         q = memmem(q + 1, (size_t)(end - q - 1), begin, sizeof(begin) - 1))
        blocks++;
    if (blocks != 1)
        return lfail(ld, CONDUIT_EINVAL,
                     "holds %zu PEM blocks; give one public key, or several keys in a JWKS file",
                     blocks);

    /* RFC 7468 §13 "PUBLIC KEY" (SubjectPublicKeyInfo), or PKCS#1's "RSA
     * PUBLIC KEY"; the common mistakes get a hint. */
    size_t llen = pem_label(lab, end);
    bool is_public = (llen == 10 && memcmp(lab, "PUBLIC KEY", 10) == 0) ||
                     (llen == 14 && memcmp(lab, "RSA PUBLIC KEY", 14) == 0);
    if (!is_public && llen >= 11 && memcmp(lab + llen - 11, "PRIVATE KEY", 11) == 0)
        return lfail(ld, CONDUIT_EINVAL,
                     "holds a private key; give its public key (openssl pkey -pubout)");
    if (!is_public && llen == 11 && memcmp(lab, "CERTIFICATE", 11) == 0)
        return lfail(ld, CONDUIT_EINVAL,
                     "holds a certificate; give its public key (openssl x509 -pubkey -noout)");
    if (!is_public)
        return lfail(ld, CONDUIT_EINVAL, "PEM block \"%.*s\" is not a public key", (int)llen,
                     lab);

    EVP_PKEY *pk = NULL;
    OSSL_DECODER_CTX *dctx =
        OSSL_DECODER_CTX_new_for_pkey(&pk, "PEM", NULL, NULL, EVP_PKEY_PUBLIC_KEY, NULL, NULL);
    if (dctx == NULL)
        return lfail(ld, CONDUIT_ENOMEM, "out of memory");
    const unsigned char *dp = (const unsigned char *)p;
    size_t dl = n;
    int ok = OSSL_DECODER_from_data(dctx, &dp, &dl);
    OSSL_DECODER_CTX_free(dctx);
    if (ok != 1 || pk == NULL) {
        EVP_PKEY_free(pk);
        return lfail(ld, CONDUIT_EINVAL, "the PEM public key cannot be decoded");
    }
    return add_pkey(ld, pk, NULL, -1, "PEM key");
}

/* JWKS members of one key. */
enum {
    J_KTY,
    J_KID,
    J_ALG,
    J_USE,
    J_KEY_OPS,
    J_CRV,
    J_N,
    J_E,
    J_X,
    J_Y,
    J_K,
    J_D,
    N_J
};

/* Decode a JWK member holding base64url (RFC 7518 §6) into a new buffer. */
static int jwk_bytes(loader *ld, const cd_json_value *v, const char *member, const char *desc,
                     unsigned char **out, size_t *out_len)
{
    *out = NULL;
    if (v->type != CD_JSON_STRING)
        return lfail(ld, CONDUIT_EINVAL, "%s: \"%s\" is missing or not a string", desc, member);
    /* A JSON string decodes to at most v->len - 2 bytes (json.h), and
     * base64 to three quarters of that. */
    char *text = malloc(v->len);
    unsigned char *bin = malloc(v->len);
    if (text == NULL || bin == NULL) {
        free(text);
        free(bin);
        return lfail(ld, CONDUIT_ENOMEM, "out of memory");
    }
    size_t tlen = 0;
    bool ok = cd_json_string(v, text, v->len, &tlen) == 0 &&
              b64url_decode(text, tlen, bin, v->len, out_len) && *out_len > 0;
    free(text);
    if (!ok) {
        free(bin);
        return lfail(ld, CONDUIT_EINVAL, "%s: \"%s\" is not base64url", desc, member);
    }
    *out = bin;
    return 0;
}

static int pkey_fromdata(loader *ld, const char *type, OSSL_PARAM *params, EVP_PKEY **out,
                         const char *desc)
{
    *out = NULL;
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (pctx == NULL)
        return lfail(ld, CONDUIT_ENOMEM, "out of memory");
    int ok = EVP_PKEY_fromdata_init(pctx) == 1 &&
             EVP_PKEY_fromdata(pctx, out, EVP_PKEY_PUBLIC_KEY, params) == 1;
    EVP_PKEY_CTX_free(pctx);
    if (!ok || *out == NULL)
        return lfail(ld, CONDUIT_EINVAL, "%s: OpenSSL refuses the %s key", desc, type);
    return 0;
}

static int jwk_rsa(loader *ld, const cd_json_field *f, const char *kid, int pin, const char *desc)
{
    unsigned char *n = NULL, *e = NULL;
    size_t nlen = 0, elen = 0;
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY *pk = NULL;
    int rc;

    if ((rc = jwk_bytes(ld, &f[J_N].value, "n", desc, &n, &nlen)) != 0 ||
        (rc = jwk_bytes(ld, &f[J_E].value, "e", desc, &e, &elen)) != 0)
        goto done;
    rc = CONDUIT_ENOMEM;
    if ((bn_n = BN_bin2bn(n, (int)nlen, NULL)) == NULL ||
        (bn_e = BN_bin2bn(e, (int)elen, NULL)) == NULL || (bld = OSSL_PARAM_BLD_new()) == NULL ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) != 1 ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL) {
        rc = lfail(ld, CONDUIT_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = pkey_fromdata(ld, "RSA", params, &pk, desc)) != 0)
        goto done;
    rc = add_pkey(ld, pk, kid, pin, desc);

done:
    free(n);
    free(e);
    BN_free(bn_n);
    BN_free(bn_e);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return rc;
}

static int jwk_ec(loader *ld, const cd_json_field *f, const char *kid, int pin, const char *desc,
                  const char *group, size_t size)
{
    unsigned char *x = NULL, *y = NULL;
    size_t xlen = 0, ylen = 0;
    unsigned char point[1 + 2 * 48];
    EVP_PKEY *pk = NULL;
    int rc;

    if ((rc = jwk_bytes(ld, &f[J_X].value, "x", desc, &x, &xlen)) != 0 ||
        (rc = jwk_bytes(ld, &f[J_Y].value, "y", desc, &y, &ylen)) != 0)
        goto done;
    /* RFC 7518 §6.2.1.2-3: x and y MUST be the full coordinate size. */
    if (xlen != size || ylen != size) {
        rc = lfail(ld, CONDUIT_EINVAL, "%s: \"x\" and \"y\" must be %zu bytes each", desc, size);
        goto done;
    }
    point[0] = 0x04; /* SEC 1 §2.3.3: uncompressed point */
    memcpy(point + 1, x, size);
    memcpy(point + 1 + size, y, size);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * size),
        OSSL_PARAM_construct_end(),
    };
    if ((rc = pkey_fromdata(ld, "EC", params, &pk, desc)) != 0)
        goto done;
    rc = add_pkey(ld, pk, kid, pin, desc);

done:
    free(x);
    free(y);
    return rc;
}

static int jwk_ed25519(loader *ld, const cd_json_field *f, const char *kid, int pin,
                       const char *desc)
{
    unsigned char *x = NULL;
    size_t xlen = 0;
    int rc = jwk_bytes(ld, &f[J_X].value, "x", desc, &x, &xlen);
    if (rc != 0)
        return rc;
    /* RFC 8037 §2: "x" is the 32-byte public key. */
    if (xlen != 32) {
        free(x);
        return lfail(ld, CONDUIT_EINVAL, "%s: Ed25519 \"x\" must be 32 bytes", desc);
    }
    EVP_PKEY *pk = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, x, xlen);
    free(x);
    if (pk == NULL)
        return lfail(ld, CONDUIT_EINVAL, "%s: OpenSSL refuses the Ed25519 key", desc);
    return add_pkey(ld, pk, kid, pin, desc);
}

static int jwk_oct(loader *ld, const cd_json_field *f, const char *kid, int pin, const char *desc)
{
    unsigned char *k = NULL;
    size_t klen = 0;
    int rc = jwk_bytes(ld, &f[J_K].value, "k", desc, &k, &klen);
    if (rc != 0)
        return rc;
    rc = add_hmac(ld, k, klen, kid, pin, desc);
    OPENSSL_cleanse(k, klen);
    free(k);
    return rc;
}

static int skip_key(loader *ld, const char *reason)
{
    ld->n_skipped++;
    ld->skip_reason = reason;
    return 0;
}

/* Does "key_ops" allow verification?  RFC 7517 §4.3. */
static bool ops_allow_verify(const cd_json_value *ops)
{
    size_t pos = 0;
    cd_json_value op;
    while (cd_json_array_next(ops, &pos, &op))
        if (cd_json_str_eq(&op, "verify"))
            return true;
    return false;
}

static int alg_by_name(const cd_json_value *v)
{
    for (int a = 0; a < N_ALGS; a++)
        if (cd_json_str_eq(v, alg_table[a].name))
            return a;
    return -1;
}

static int load_jwk(loader *ld, const cd_json_value *obj, size_t index)
{
    cd_json_field f[N_J] = {
        [J_KTY] = {"kty"}, [J_KID] = {"kid"}, [J_ALG] = {"alg"}, [J_USE] = {"use"},
        [J_KEY_OPS] = {"key_ops"}, [J_CRV] = {"crv"}, [J_N] = {"n"}, [J_E] = {"e"},
        [J_X] = {"x"}, [J_Y] = {"y"}, [J_K] = {"k"}, [J_D] = {"d"},
    };
    char kid[CD_JWT_MAX_KID + 1];
    char desc[128];
    bool has_kid = false;

    key_desc(desc, sizeof(desc), index, NULL);
    if (obj->type != CD_JSON_OBJECT)
        return lfail(ld, CONDUIT_EINVAL, "%s is not a JSON object", desc);
    if (cd_json_get_fields(obj, f, N_J) != CD_JSON_OK)
        return lfail(ld, CONDUIT_EINVAL, "%s names a member twice", desc);
    if (f[J_KID].value.type != CD_JSON_NONE) {
        int rc = cd_json_name(&f[J_KID].value, kid, sizeof(kid), NULL);
        if (rc != 0)
            return lfail(ld, CONDUIT_EINVAL, "%s: \"kid\" is not a string of at most %d bytes",
                         desc, CD_JWT_MAX_KID);
        has_kid = true;
        key_desc(desc, sizeof(desc), index, kid);
    }
    if (f[J_KTY].value.type != CD_JSON_STRING)
        return lfail(ld, CONDUIT_EINVAL, "%s: \"kty\" is missing or not a string", desc);

    /* RFC 7517 §5: keys this implementation does not understand are
     * ignored, so an issuer's JWKS with encryption keys or newer algorithms
     * still loads. */
    const cd_json_value *use = &f[J_USE].value;
    if (use->type != CD_JSON_NONE && !cd_json_str_eq(use, "sig"))
        return skip_key(ld, "\"use\" is not \"sig\"");
    const cd_json_value *ops = &f[J_KEY_OPS].value;
    if (ops->type != CD_JSON_NONE && !ops_allow_verify(ops))
        return skip_key(ld, "\"key_ops\" lacks \"verify\"");
    int pin = -1;
    if (f[J_ALG].value.type != CD_JSON_NONE && (pin = alg_by_name(&f[J_ALG].value)) < 0)
        return skip_key(ld, "unsupported \"alg\"");

    const char *kidp = has_kid ? kid : NULL;
    const cd_json_value *kty = &f[J_KTY].value;
    const cd_json_value *crv = &f[J_CRV].value;
    if (cd_json_str_eq(kty, "oct"))
        return jwk_oct(ld, f, kidp, pin, desc);
    /* A verifier needs public keys only; a private one here means a
     * secret was published by mistake. */
    if (f[J_D].value.type != CD_JSON_NONE)
        return lfail(ld, CONDUIT_EINVAL,
                     "%s holds a private key (\"d\"); give only public keys", desc);
    if (cd_json_str_eq(kty, "RSA"))
        return jwk_rsa(ld, f, kidp, pin, desc);
    if (cd_json_str_eq(kty, "EC")) {
        if (cd_json_str_eq(crv, "P-256"))
            return jwk_ec(ld, f, kidp, pin, desc, "prime256v1", 32);
        if (cd_json_str_eq(crv, "P-384"))
            return jwk_ec(ld, f, kidp, pin, desc, "secp384r1", 48);
        if (crv->type != CD_JSON_STRING)
            return lfail(ld, CONDUIT_EINVAL, "%s: \"crv\" is missing or not a string", desc);
        return skip_key(ld, "unsupported EC \"crv\"");
    }
    if (cd_json_str_eq(kty, "OKP")) {
        if (cd_json_str_eq(crv, "Ed25519"))
            return jwk_ed25519(ld, f, kidp, pin, desc);
        if (crv->type != CD_JSON_STRING)
            return lfail(ld, CONDUIT_EINVAL, "%s: \"crv\" is missing or not a string", desc);
        return skip_key(ld, "unsupported OKP \"crv\"");
    }
    return skip_key(ld, "unsupported \"kty\"");
}

/* A JWK Set (RFC 7517 §5) or a single JWK (§4). */
static int load_jwks(loader *ld, const char *p, size_t n)
{
    cd_json_value doc;
    cd_json_error jerr = {NULL, 0};
    if (cd_json_validate(p, n, 16, &doc, &jerr) != CD_JSON_OK)
        return lfail(ld, CONDUIT_EINVAL, "not valid JSON (%s at byte %zu)",
                     jerr.reason ? jerr.reason : "invalid", jerr.offset);
    cd_json_field f[2] = {{"keys"}, {"kty"}};
    if (cd_json_get_fields(&doc, f, 2) != CD_JSON_OK)
        return lfail(ld, CONDUIT_EINVAL, "not a JWKS object, or \"keys\" appears twice");

    size_t before = ld->ks->n_keys;
    int rc;
    if (f[0].value.type == CD_JSON_NONE) {
        if (f[1].value.type == CD_JSON_NONE)
            return lfail(ld, CONDUIT_EINVAL,
                         "neither a JWK Set ({\"keys\": [...]}) nor a JWK (\"kty\")");
        if ((rc = load_jwk(ld, &doc, SIZE_MAX)) != 0)
            return rc;
    } else {
        if (f[0].value.type != CD_JSON_ARRAY)
            return lfail(ld, CONDUIT_EINVAL, "\"keys\" is not an array");
        size_t pos = 0, index = 0;
        cd_json_value elem;
        while (cd_json_array_next(&f[0].value, &pos, &elem))
            if ((rc = load_jwk(ld, &elem, index++)) != 0)
                return rc;
    }
    if (ld->ks->n_keys == before) {
        if (ld->n_skipped > 0)
            return lfail(ld, CONDUIT_EINVAL, "no usable key (%zu skipped; last: %s)",
                         ld->n_skipped, ld->skip_reason);
        return lfail(ld, CONDUIT_EINVAL, "no keys");
    }
    return 0;
}

/* The whole of a regular file, at most CD_JWT_MAX_KEY_FILE bytes. */
static int read_file(loader *ld, const char *path, char **out, size_t *out_len)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lfail(ld, CONDUIT_EIO, "cannot open: %s", strerror(errno));
    struct stat st;
    int rc = 0;
    char *buf = NULL;
    size_t got = 0;
    if (fstat(fd, &st) != 0) {
        rc = lfail(ld, CONDUIT_EIO, "cannot stat: %s", strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = lfail(ld, CONDUIT_EIO, "not a regular file");
        goto done;
    }
    if (st.st_size > (off_t)CD_JWT_MAX_KEY_FILE) {
        rc = lfail(ld, CONDUIT_EINVAL, "larger than %u bytes", CD_JWT_MAX_KEY_FILE);
        goto done;
    }
    size_t cap = (size_t)st.st_size;
    if ((buf = malloc(cap + 1)) == NULL) {
        rc = lfail(ld, CONDUIT_ENOMEM, "out of memory");
        goto done;
    }
    while (got < cap) {
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = lfail(ld, CONDUIT_EIO, "cannot read: %s", strerror(errno));
            goto done;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    *out = buf;
    *out_len = got;
    buf = NULL;

done:
    free(buf);
    close(fd);
    return rc;
}

/* PEM or JWKS, told apart by the first non-blank byte. */
static int load_key_text(loader *ld, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    if (i == n)
        return lfail(ld, CONDUIT_EINVAL, "is empty");
    if (p[i] == '{')
        return load_jwks(ld, p, n);
    if (memmem(p, n, "-----BEGIN ", 11) != NULL)
        return load_pem(ld, p, n);
    return lfail(ld, CONDUIT_EINVAL, "neither a PEM public key (-----BEGIN) nor a JWKS (JSON)");
}

static int dup_str(loader *ld, const char *s, char **out)
{
    *out = NULL;
    if (s == NULL)
        return 0;
    if ((*out = strdup(s)) == NULL)
        return lfail(ld, CONDUIT_ENOMEM, "out of memory");
    return 0;
}

static int keyset_load(cd_jwt_keyset **out, const cd_jwt_config *cfg, char *err, size_t errlen)
{
    loader ld = {.origin = "jwt", .err = err, .errlen = errlen};
    char origin[320];
    char *text = NULL;
    size_t text_len = 0;
    int rc;

    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (cfg->key_file != NULL && cfg->key_data != NULL)
        return lfail(&ld, CONDUIT_EINVAL, "key_file and key_data are both set");
    if ((ld.ks = calloc(1, sizeof(*ld.ks))) == NULL)
        return lfail(&ld, CONDUIT_ENOMEM, "out of memory");
    atomic_init(&ld.ks->refs, 1);
    ld.ks->leeway_s = cfg->leeway_s;
    ld.ks->exp_required = cfg->exp_required;
    if ((rc = dup_str(&ld, cfg->issuer, &ld.ks->issuer)) != 0 ||
        (rc = dup_str(&ld, cfg->audience, &ld.ks->audience)) != 0)
        goto fail;
    /* Fetched once here rather than by name on every verification. */
    ld.ks->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    for (size_t i = 0; i < CD_ARRAY_LEN(md_names); i++)
        ld.ks->md[i] = EVP_MD_fetch(NULL, md_names[i], NULL);
    if (ld.ks->hmac == NULL || ld.ks->md[0] == NULL || ld.ks->md[1] == NULL ||
        ld.ks->md[2] == NULL) {
        rc = lfail(&ld, CONDUIT_EINVAL, "OpenSSL provides no HMAC or SHA-2");
        goto fail;
    }

    if (cfg->secret != NULL && cfg->secret[0] != '\0') {
        ld.origin = "jwt secret";
        if ((rc = add_hmac(&ld, (const unsigned char *)cfg->secret, strlen(cfg->secret), NULL,
                           -1, NULL)) != 0)
            goto fail;
    }
    if (cfg->key_file != NULL) {
        snprintf(origin, sizeof(origin), "jwt key file %s", cfg->key_file);
        ld.origin = origin;
        if ((rc = read_file(&ld, cfg->key_file, &text, &text_len)) != 0 ||
            (rc = load_key_text(&ld, text, text_len)) != 0)
            goto fail;
    } else if (cfg->key_data != NULL) {
        ld.origin = "jwt key data";
        if ((rc = load_key_text(&ld, cfg->key_data, cfg->key_data_len)) != 0)
            goto fail;
    }
    if (ld.ks->n_keys == 0) {
        ld.origin = "jwt";
        rc = lfail(&ld, CONDUIT_EINVAL, "no key configured (a secret, a key file or key data)");
        goto fail;
    }
    free(text);
    *out = ld.ks;
    return 0;

fail:
    free(text);
    keyset_free(ld.ks);
    return rc;
}

int cd_jwt_keyset_load(cd_jwt_keyset **out, const cd_jwt_config *cfg, char *err, size_t errlen)
{
    /* The messages say what failed; OpenSSL's queue entries (decoders
     * leave some even on success) are dropped. */
    ERR_set_mark();
    int rc = keyset_load(out, cfg, err, errlen);
    ERR_pop_to_mark();
    return rc;
}

/* ------------------------------------------------------------------ */
/* Signatures. */

static int refuse(const char **why, int rc, const char *reason)
{
    *why = reason;
    return rc;
}

/* A DER INTEGER (X.690 §8.3) from an unsigned big-endian value: minimal
 * length, with a 0x00 in front when the top bit is set. */
static size_t der_uint(unsigned char *out, const unsigned char *v, size_t n)
{
    while (n > 1 && v[0] == 0) {
        v++;
        n--;
    }
    size_t pad = (v[0] & 0x80) ? 1 : 0;
    out[0] = 0x02;
    out[1] = (unsigned char)(n + pad);
    out[2] = 0x00;
    memcpy(out + 2 + pad, v, n);
    return 2 + pad + n;
}

/* RFC 7518 §3.4: a JWS ECDSA signature is R || S, each the size of the
 * curve order; OpenSSL verifies the DER ECDSA-Sig-Value of RFC 3279
 * §2.2.3, SEQUENCE { r INTEGER, s INTEGER }.  At most 2 + 2 * 51 bytes,
 * so every length fits the short form. */
static size_t ecdsa_raw_to_der(unsigned char *der, const unsigned char *sig, size_t size)
{
    size_t len = 2;
    len += der_uint(der + len, sig, size);
    len += der_uint(der + len, sig + size, size);
    der[0] = 0x30;
    der[1] = (unsigned char)(len - 2);
    return len;
}

static int hmac_verify(const cd_jwt_keyset *ks, const jwt_key *k, int alg,
                       const unsigned char *msg, size_t msg_len, const unsigned char *sig,
                       size_t sig_len, const char **why)
{
    size_t want = alg_table[alg].size;
    if (sig_len != want)
        return refuse(why, CD_JWT_EBADSIG, "signature has the wrong length");
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t mac_len = 0;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(ks->hmac);
    if (ctx == NULL)
        return refuse(why, CONDUIT_ENOMEM, "out of memory");
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                         (char *)md_names[alg_table[alg].md], 0),
        OSSL_PARAM_construct_end(),
    };
    int ok = EVP_MAC_init(ctx, k->secret, k->secret_len, params) == 1 &&
             EVP_MAC_update(ctx, msg, msg_len) == 1 &&
             EVP_MAC_final(ctx, mac, &mac_len, sizeof(mac)) == 1 && mac_len == want;
    EVP_MAC_CTX_free(ctx);
    if (!ok)
        return refuse(why, CD_JWT_EINTERNAL, "crypto library error");
    /* Constant time, so that timing does not reveal how many leading bytes
     * of a forged MAC were right. */
    int diff = CRYPTO_memcmp(mac, sig, want);
    OPENSSL_cleanse(mac, sizeof(mac));
    return diff == 0 ? 0 : refuse(why, CD_JWT_EBADSIG, "bad signature");
}

static int pkey_verify(const cd_jwt_keyset *ks, const jwt_key *k, int alg,
                       const unsigned char *msg, size_t msg_len, const unsigned char *sig,
                       size_t sig_len, const char **why)
{
    const struct alg_info *ai = &alg_table[alg];
    unsigned char der[2 + 2 * (3 + 48)];

    switch (ai->family) {
    case FAM_RSA:
        /* RFC 8017 §8.2.2 step 1: the signature is exactly k octets. */
        if (sig_len != (size_t)EVP_PKEY_get_size(k->pkey))
            return refuse(why, CD_JWT_EBADSIG, "signature has the wrong length");
        break;
    case FAM_EC:
        if (sig_len != 2 * ai->size)
            return refuse(why, CD_JWT_EBADSIG, "signature has the wrong length");
        sig_len = ecdsa_raw_to_der(der, sig, ai->size);
        sig = der;
        break;
    default:
        /* RFC 8032 §5.1.6: an Ed25519 signature is 64 octets. */
        if (sig_len != 64)
            return refuse(why, CD_JWT_EBADSIG, "signature has the wrong length");
        break;
    }

    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        return refuse(why, CONDUIT_ENOMEM, "out of memory");
    EVP_PKEY_CTX *pctx = NULL;
    const EVP_MD *md = ai->md >= 0 ? ks->md[ai->md] : NULL;
    int rc = 0;
    if (EVP_DigestVerifyInit(ctx, &pctx, md, NULL, k->pkey) != 1 ||
        (ai->family == FAM_RSA && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0)) {
        rc = refuse(why, CD_JWT_EINTERNAL, "crypto library error");
    } else if (EVP_DigestVerify(ctx, sig, sig_len, msg, msg_len) != 1) {
        /* 0 is a mismatch; a negative value is a signature OpenSSL could
         * not even parse.  Both are a bad signature. */
        rc = refuse(why, CD_JWT_EBADSIG, "bad signature");
    }
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Claims (RFC 7519 §4.1). */

/* RFC 7519 §2: a NumericDate is a JSON number of seconds, possibly with a
 * fraction.  round_up picks the stricter side of a fraction for nbf.
 * strtod reads the "C" locale's '.', which is what the server runs in. */
static bool numeric_date(const cd_json_value *v, bool round_up, int64_t *out)
{
    if (v->type != CD_JSON_NUMBER)
        return false;
    int rc = cd_json_int64(v, out);
    if (rc == 0)
        return true;
    if (rc != CONDUIT_EINVAL || v->len >= 64)
        return false;
    char tmp[64];
    memcpy(tmp, v->raw, v->len);
    tmp[v->len] = '\0';
    char *end = NULL;
    double d = strtod(tmp, &end);
    if (end != tmp + v->len || !isfinite(d) || d <= -9.2e18 || d >= 9.2e18)
        return false;
    *out = (int64_t)(round_up ? ceil(d) : floor(d));
    return true;
}

/* No C0 control, DEL or C1 control (U+0080..U+009F, UTF-8 C2 80..C2 9F):
 * the user id ends up in logs, presence events and DM channel names. */
static bool has_control(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return true;
        if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] <= 0x9f)
            return true;
    }
    return false;
}

static int check_aud(const cd_json_value *aud, const char *want, const char **why)
{
    /* RFC 7519 §4.1.3: a string or an array of strings. */
    if (aud->type == CD_JSON_NONE)
        return refuse(why, CD_JWT_EAUDIENCE, "missing aud");
    if (aud->type == CD_JSON_STRING)
        return cd_json_str_eq(aud, want) ? 0 : refuse(why, CD_JWT_EAUDIENCE, "wrong audience");
    if (aud->type != CD_JSON_ARRAY)
        return refuse(why, CD_JWT_EMALFORMED, "aud is not a string or an array of strings");
    size_t pos = 0;
    cd_json_value elem;
    bool found = false;
    while (cd_json_array_next(aud, &pos, &elem)) {
        if (elem.type != CD_JSON_STRING)
            return refuse(why, CD_JWT_EMALFORMED, "aud is not a string or an array of strings");
        found = found || cd_json_str_eq(&elem, want);
    }
    return found ? 0 : refuse(why, CD_JWT_EAUDIENCE, "wrong audience");
}

static int copy_patterns(const cd_json_value *v, char (*dst)[CD_JWT_MAX_PATTERN + 1],
                         uint8_t *n, bool *has, const char **why)
{
    *n = 0;
    *has = false;
    if (v->type == CD_JSON_NONE)
        return 0;
    if (v->type != CD_JSON_ARRAY)
        return refuse(why, CD_JWT_EMALFORMED, "permission claim is not an array of strings");
    *has = true;
    size_t pos = 0;
    cd_json_value elem;
    while (cd_json_array_next(v, &pos, &elem)) {
        if (elem.type != CD_JSON_STRING)
            return refuse(why, CD_JWT_EMALFORMED, "permission claim is not an array of strings");
        if (*n == CD_JWT_MAX_PATTERNS)
            return refuse(why, CD_JWT_ETOOLARGE, "too many permission patterns");
        int rc = cd_json_name(&elem, dst[*n], CD_JWT_MAX_PATTERN + 1, NULL);
        if (rc == CONDUIT_ELIMIT)
            return refuse(why, CD_JWT_ETOOLARGE, "permission pattern too long");
        if (rc != 0)
            return refuse(why, CD_JWT_EMALFORMED, "permission pattern holds U+0000");
        (*n)++;
    }
    return 0;
}

enum { C_SUB, C_EXP, C_NBF, C_IAT, C_ISS, C_AUD, C_CHANNELS, C_PUBLISH, N_C };

static int check_times(const cd_jwt_keyset *ks, const cd_json_field *f, int64_t now,
                       cd_jwt_claims *out, const char **why)
{
    int64_t leeway = ks->leeway_s;

    if (f[C_EXP].value.type == CD_JSON_NONE) {
        if (ks->exp_required)
            return refuse(why, CD_JWT_ECLAIMS, "missing exp");
    } else {
        if (!numeric_date(&f[C_EXP].value, false, &out->exp_s))
            return refuse(why, CD_JWT_EMALFORMED, "exp is not a NumericDate");
        out->has_exp = true;
        /* RFC 7519 §4.1.4: the current time MUST be before exp. */
        if (out->exp_s <= INT64_MAX - leeway && now >= out->exp_s + leeway)
            return refuse(why, CD_JWT_EEXPIRED, "expired");
    }
    if (f[C_NBF].value.type != CD_JSON_NONE) {
        if (!numeric_date(&f[C_NBF].value, true, &out->nbf_s))
            return refuse(why, CD_JWT_EMALFORMED, "nbf is not a NumericDate");
        out->has_nbf = true;
        /* RFC 7519 §4.1.5: the current time MUST be after or equal to nbf. */
        if (out->nbf_s >= INT64_MIN + leeway && now < out->nbf_s - leeway)
            return refuse(why, CD_JWT_ENOTYET, "not yet valid");
    }
    if (f[C_IAT].value.type != CD_JSON_NONE) {
        if (!numeric_date(&f[C_IAT].value, false, &out->iat_s))
            return refuse(why, CD_JWT_EMALFORMED, "iat is not a NumericDate");
        out->has_iat = true;
    }
    return 0;
}

static int parse_claims(const cd_jwt_keyset *ks, const char *p, size_t n, int64_t now,
                        cd_jwt_claims *out, const char **why)
{
    cd_json_field f[N_C] = {
        [C_SUB] = {"sub"}, [C_EXP] = {"exp"}, [C_NBF] = {"nbf"},
        [C_IAT] = {"iat"}, [C_ISS] = {"iss"}, [C_AUD] = {"aud"},
        [C_CHANNELS] = {"channels"}, [C_PUBLISH] = {"publish"},
    };
    int rc = cd_json_object_fields(p, n, f, N_C, 32, NULL);
    if (rc == CD_JSON_DUPLICATE)
        return refuse(why, CD_JWT_EMALFORMED, "duplicate claim");
    if (rc != CD_JSON_OK)
        return refuse(why, CD_JWT_EMALFORMED, "payload is not a JSON object");

    memset(out, 0, offsetof(cd_jwt_claims, channels));
    size_t sub_len = 0;
    if (f[C_SUB].value.type != CD_JSON_STRING)
        return refuse(why, CD_JWT_ECLAIMS, "missing sub");
    rc = cd_json_name(&f[C_SUB].value, out->sub, sizeof(out->sub), &sub_len);
    if (rc == CONDUIT_ELIMIT)
        return refuse(why, CD_JWT_ECLAIMS, "sub longer than 255 bytes");
    if (rc != 0 || sub_len == 0 || has_control(out->sub, sub_len))
        return refuse(why, CD_JWT_ECLAIMS, "sub is empty or holds a control character");

    if ((rc = check_times(ks, f, now, out, why)) != 0)
        return rc;
    if (ks->issuer != NULL && !cd_json_str_eq(&f[C_ISS].value, ks->issuer))
        return refuse(why, CD_JWT_EISSUER,
                      f[C_ISS].value.type == CD_JSON_NONE ? "missing iss" : "wrong issuer");
    if (ks->audience != NULL && (rc = check_aud(&f[C_AUD].value, ks->audience, why)) != 0)
        return rc;
    if ((rc = copy_patterns(&f[C_CHANNELS].value, out->channels, &out->n_channels,
                            &out->has_channels, why)) != 0)
        return rc;
    return copy_patterns(&f[C_PUBLISH].value, out->publish, &out->n_publish, &out->has_publish,
                         why);
}

/* ------------------------------------------------------------------ */
/* Verification. */

enum { H_ALG, H_KID, H_CRIT, H_JWK, H_JKU, H_X5U, H_X5C, N_H };

/* Header parameters refused outright.  crit: RFC 7515 §4.1.11, we
 * understand no extension.  jwk, jku, x5u, x5c: a token must not bring or
 * point to its own key (RFC 8725 §3.10); the keys are the configured ones. */
static const char *const forbidden_why[N_H] = {
    [H_CRIT] = "crit header not supported",
    [H_JWK] = "jwk header refused",
    [H_JKU] = "jku header refused",
    [H_X5U] = "x5u header refused",
    [H_X5C] = "x5c header refused",
};

/* The header: returns the alg; *kid is the "kid" value (NONE if absent). */
static int parse_header(const char *p, size_t n, int *alg, cd_json_value *kid, const char **why)
{
    cd_json_field f[N_H] = {
        [H_ALG] = {"alg"}, [H_KID] = {"kid"}, [H_CRIT] = {"crit"}, [H_JWK] = {"jwk"},
        [H_JKU] = {"jku"}, [H_X5U] = {"x5u"}, [H_X5C] = {"x5c"},
    };
    int rc = cd_json_object_fields(p, n, f, N_H, 8, NULL);
    /* RFC 7515 §5.2 step 4 allows rejecting duplicate names; we do, so a
     * second "alg" cannot mean something else to another reader. */
    if (rc == CD_JSON_DUPLICATE)
        return refuse(why, CD_JWT_EMALFORMED, "duplicate header parameter");
    if (rc != CD_JSON_OK)
        return refuse(why, CD_JWT_EMALFORMED, "header is not a JSON object");
    for (int i = H_CRIT; i < N_H; i++)
        if (f[i].value.type != CD_JSON_NONE)
            return refuse(why, CD_JWT_EHEADER, forbidden_why[i]);

    const cd_json_value *a = &f[H_ALG].value;
    if (a->type == CD_JSON_NONE)
        return refuse(why, CD_JWT_EMALFORMED, "missing alg");
    if (a->type != CD_JSON_STRING)
        return refuse(why, CD_JWT_EMALFORMED, "alg is not a string");
    /* RFC 8725 §3.1 and §2.1: an unsecured JWT is never accepted, whatever
     * the case of its "none" (alg is case-sensitive, RFC 7515 §4.1.1, but
     * some libraries were not). */
    if (cd_json_str_eq_ci(a, "none"))
        return refuse(why, CD_JWT_EALG, "alg none refused");
    if ((*alg = alg_by_name(a)) < 0)
        return refuse(why, CD_JWT_EALG, "unsupported alg");
    *kid = f[H_KID].value;
    if (kid->type != CD_JSON_NONE && kid->type != CD_JSON_STRING)
        return refuse(why, CD_JWT_EMALFORMED, "kid is not a string");
    return 0;
}

/* Try the keys that may verify this token; 0 when one does. */
static int check_signature(const cd_jwt_keyset *ks, int alg, const cd_json_value *kid,
                           const unsigned char *msg, size_t msg_len, const unsigned char *sig,
                           size_t sig_len, const char **why)
{
    bool has_kid = kid->type == CD_JSON_STRING;
    size_t n_kid = 0, n_tried = 0;
    int rc = CD_JWT_EBADSIG;

    for (size_t i = 0; i < ks->n_keys; i++) {
        const jwt_key *k = &ks->keys[i];
        if (has_kid) {
            if (!k->has_kid || !cd_json_str_eq(kid, k->kid))
                continue;
            n_kid++;
        }
        /* RFC 8725 §3.1: the key's algorithms, not the token's claim. */
        if (!(k->alg_mask & BIT(alg)))
            continue;
        n_tried++;
        if (alg_table[alg].family == FAM_HMAC)
            rc = hmac_verify(ks, k, alg, msg, msg_len, sig, sig_len, why);
        else
            rc = pkey_verify(ks, k, alg, msg, msg_len, sig, sig_len, why);
        if (rc != CD_JWT_EBADSIG)
            return rc;
    }
    if (has_kid && n_kid == 0)
        return refuse(why, CD_JWT_EKID, "unknown kid");
    if (n_tried == 0)
        return refuse(why, CD_JWT_EALG, "alg not allowed for this key");
    return rc;
}

static int verify(const cd_jwt_keyset *ks, const char *token, size_t len, int64_t now,
                  cd_jwt_claims *out, const char **why)
{
    /* Every decoded part fits: base64url yields 3 bytes per 4 characters. */
    unsigned char buf[CD_JWT_MAX_TOKEN_LEN / 4 * 3];
    size_t hdr_len, sig_len, pay_len;

    if (ks == NULL || token == NULL || out == NULL)
        return refuse(why, CONDUIT_EINVAL, "no key set or no token");
    if (len > CD_JWT_MAX_TOKEN_LEN)
        return refuse(why, CD_JWT_ETOOLARGE, "token too large");

    /* RFC 7515 §7.1: BASE64URL(header) '.' BASE64URL(payload) '.'
     * BASE64URL(signature), exactly two dots. */
    const char *end = token + len;
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(end - d1 - 1)) : NULL;
    if (d2 == NULL || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)) != NULL)
        return refuse(why, CD_JWT_EMALFORMED, "not three dot-separated parts");

    unsigned char *hdr = buf;
    if (!b64url_decode(token, (size_t)(d1 - token), hdr, sizeof(buf), &hdr_len))
        return refuse(why, CD_JWT_EMALFORMED, "header is not base64url");
    int alg = -1;
    cd_json_value kid;
    int rc = parse_header((const char *)hdr, hdr_len, &alg, &kid, why);
    if (rc != 0)
        return rc;

    unsigned char *sig = hdr + hdr_len;
    if (!b64url_decode(d2 + 1, (size_t)(end - d2 - 1), sig, sizeof(buf) - hdr_len, &sig_len))
        return refuse(why, CD_JWT_EMALFORMED, "signature is not base64url");
    /* The payload's base64url must be strict too, though it is signed as
     * text: checked before the (costlier) signature. */
    unsigned char *pay = sig + sig_len;
    if (!b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), pay, sizeof(buf) - hdr_len - sig_len,
                       &pay_len))
        return refuse(why, CD_JWT_EMALFORMED, "payload is not base64url");

    /* RFC 7515 §5.2 step 8: the signing input is the encoded header and
     * payload as they appear in the token.  Claims are read only once the
     * signature holds (RFC 8725 §3.1). */
    rc = check_signature(ks, alg, &kid, (const unsigned char *)token, (size_t)(d2 - token), sig,
                         sig_len, why);
    if (rc != 0)
        return rc;
    return parse_claims(ks, (const char *)pay, pay_len, now, out, why);
}

int cd_jwt_verify(const cd_jwt_keyset *ks, const char *token, size_t len, int64_t now_s,
                  cd_jwt_claims *out, const char **why)
{
    const char *reason = NULL;
    ERR_set_mark();
    int rc = verify(ks, token, len, now_s, out, &reason);
    ERR_pop_to_mark();
    if (why != NULL)
        *why = rc != 0 ? reason : NULL;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Channel permissions. */

bool cd_auth_pattern_match(const char *pattern, const char *channel, size_t len)
{
    /* A '*'-only glob is matched by its literal pieces: the first must be
     * a prefix, the last a suffix, and each one between is taken at its
     * leftmost place after the previous one.  Leftmost is always safe,
     * because it leaves the most room for what follows; so this gives the
     * two-pointer glob's answer without its backtracking, and memmem's
     * Two-Way search keeps each step linear. */
    const char *star = strchr(pattern, '*');
    if (star == NULL)
        return strlen(pattern) == len && memcmp(pattern, channel, len) == 0;
    size_t n = (size_t)(star - pattern);
    if (n > len || memcmp(pattern, channel, n) != 0)
        return false;
    const char *s = channel + n;
    size_t rest = len - n;
    const char *p = star + 1;
    for (;;) {
        while (*p == '*')
            p++;
        star = strchr(p, '*');
        if (star == NULL) {
            n = strlen(p);
            return n <= rest && memcmp(p, s + rest - n, n) == 0;
        }
        n = (size_t)(star - p);
        const char *hit = memmem(s, rest, p, n);
        if (hit == NULL)
            return false;
        rest -= (size_t)(hit - s) + n;
        s = hit + n;
        p = star;
    }
}

bool cd_auth_user_channel_allowed(const char *user, const char *channel, size_t len)
{
    if (len < 3 || strncasecmp(channel, "dm:", 3) != 0)
        return true;
    size_t ulen = user != NULL ? strlen(user) : 0;
    if (ulen == 0)
        return false;
    size_t i = 3;
    for (;;) {
        const char *comma = memchr(channel + i, ',', len - i);
        size_t j = comma != NULL ? (size_t)(comma - channel) : len;
        if (j - i == ulen && memcmp(channel + i, user, ulen) == 0)
            return true;
        if (comma == NULL)
            return false;
        i = j + 1;
    }
}
