/* auth.h - JWT verification (RFC 7519, compact JWS of RFC 7515) and the
 * channel permission checks that use its claims.
 *
 * A key set is built once from configuration (an HMAC secret, a PEM public
 * key or a JWKS file), is immutable afterwards, and is reference-counted so
 * that a reload can swap in a new set while workers still verify with the
 * old one.  Each key serves a fixed set of algorithms decided when the key
 * is loaded, never by a token (RFC 8725 §3.1):
 *
 *   HMAC secret (config or JWKS "oct")  HS256, HS384, HS512, each only when
 *                                       the secret is at least as long as
 *                                       the hash (RFC 7518 §3.2); a JWKS
 *                                       "alg" pins one
 *   RSA >= 2048 bits (RFC 7518 §3.3)    RS256, RS384, RS512; a JWKS "alg"
 *                                       pins one
 *   EC P-256 / P-384                    ES256 / ES384 only
 *   Ed25519                             EdDSA only
 *
 * Verification is pure: no clock, no I/O, no allocation other than
 * OpenSSL's per-call contexts; the caller passes the time.  Loading reads
 * the key file and allocates.
 *
 * Thread: a built key set may be used by any number of threads at once
 * (cd_jwt_verify only reads it; OpenSSL objects that are not modified are
 * safe to share, openssl-threads(7)); cd_jwt_keyset_ref/unref are atomic.
 * Everything else here is a pure function. */
#ifndef CD_AUTH_H
#define CD_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ */
/* Limits. */

#define CD_JWT_MAX_TOKEN_LEN 16384   /* bytes of compact serialization */
#define CD_JWT_MAX_SUB 255           /* bytes of "sub", the user id */
#define CD_JWT_MAX_PATTERNS 32       /* per permission claim */
#define CD_JWT_MAX_PATTERN 255       /* bytes per pattern */
#define CD_JWT_MAX_KEYS 32           /* keys per key set */
#define CD_JWT_MAX_KID 255           /* bytes of a key id */
#define CD_JWT_MAX_KEY_FILE (1u << 20) /* bytes of a PEM or JWKS file */

/* ------------------------------------------------------------------ */
/* Verification results.  Negative like the CONDUIT_E* codes but outside
 * their range (and outside json.h's -100..), so a caller can pass either
 * kind upward.  Every one of them means "not authenticated" (HTTP 401 in
 * the handshake, an Unauthorized error in band); the label is a short
 * stable name for a metrics counter.  cd_jwt_verify may also return
 * CONDUIT_EINVAL (NULL arguments) or CONDUIT_ENOMEM (OpenSSL could not
 * allocate a context). */
#define CD_JWT_ERRORS(X)                                                      \
    X(EMALFORMED, -200, "malformed", "malformed token")                       \
    X(ETOOLARGE, -201, "too_large", "token or one of its claims too large")   \
    X(EALG, -202, "alg", "alg not allowed")                                   \
    X(EHEADER, -203, "header", "forbidden header parameter")                  \
    X(EKID, -204, "kid", "unknown kid")                                       \
    X(EBADSIG, -205, "signature", "bad signature")                            \
    X(EEXPIRED, -206, "expired", "token expired")                             \
    X(ENOTYET, -207, "not_yet_valid", "token not yet valid")                  \
    X(EISSUER, -208, "issuer", "wrong issuer")                                \
    X(EAUDIENCE, -209, "audience", "wrong audience")                          \
    X(ECLAIMS, -210, "claims", "missing or invalid claim")                    \
    X(EINTERNAL, -211, "internal", "crypto library error")

enum cd_jwt_err {
#define CD_JWT_ERR_ENUM_(name, code, label, msg) CD_JWT_##name = (code),
    CD_JWT_ERRORS(CD_JWT_ERR_ENUM_)
#undef CD_JWT_ERR_ENUM_
};

/* A static message for a CD_JWT_E* code ("token expired"), or
 * conduit_strerror's for anything else.  Thread: any. */
const char *cd_jwt_strerror(int rc);
/* A static metrics label ("expired", "signature"); "ok" for 0, "other"
 * for codes that are not CD_JWT_E*.  Thread: any. */
const char *cd_jwt_err_label(int rc);

/* ------------------------------------------------------------------ */
/* Key sets. */

/* What a key set is built from.  The struct and its strings stay the
 * caller's: cd_jwt_keyset_load copies what it keeps. */
typedef struct cd_jwt_config {
    const char *secret;        /* HMAC secret, its bytes as given (not
                                * base64); NULL or "": none.  At least 32
                                * bytes (RFC 7518 §3.2).  Has no kid. */
    const char *key_file;      /* path of a PEM public key or a JWKS file;
                                * which one is detected from the content */
    const char *key_data;      /* the same content in memory instead of a
                                * file (key_data_len bytes); at most one of
                                * key_file and key_data may be set */
    size_t key_data_len;
    const char *issuer;        /* expected "iss"; NULL: not checked */
    const char *audience;      /* expected in "aud"; NULL: not checked */
    uint32_t leeway_s;         /* clock skew allowed on exp and nbf */
    bool exp_required;         /* a token without "exp" is refused */
} cd_jwt_config;

/* Defaults: no keys, no issuer or audience, leeway 5 s, exp required.
 * The caller owns *cfg.  Thread: any. */
void cd_jwt_config_init(cd_jwt_config *cfg);

typedef struct cd_jwt_keyset cd_jwt_keyset;   /* opaque, immutable */

/* Build a key set from the secret and/or the key file (or key_data).
 *
 * A key file is a PEM file holding exactly one public key ("PUBLIC KEY",
 * or PKCS#1 "RSA PUBLIC KEY"; private keys and certificates are refused
 * with a hint), or a JWK Set ({"keys": [...]}, RFC 7517 §5) or a single
 * JWK.  JWKS keys may carry "kid" (several keys for rotation) and "alg"
 * (must agree with the key type).  As RFC 7517 §5 asks, a JWKS key is
 * skipped (not an error) when its "kty", "crv" or "alg" is one this module
 * does not implement (e.g. PS256, P-521, X25519), or when "use" is not
 * "sig", or "key_ops" lacks "verify"; a supported key that is malformed,
 * too weak, or holds private material ("d") is an error, as is a set with
 * no usable key.  PEM keys and the secret have no kid.
 *
 * On success *out holds one reference (release it with
 * cd_jwt_keyset_unref).  On failure *out is NULL and err[0..errlen) gets a
 * one-line message naming the file ("jwt key file /etc/k.pem: ...").
 * Returns 0, CONDUIT_EINVAL (no key configured, bad content), CONDUIT_EIO
 * (the file cannot be read) or CONDUIT_ENOMEM.
 * Reads the file; allocates.  Thread: any (typically the main thread on
 * start and SIGHUP). */
int cd_jwt_keyset_load(cd_jwt_keyset **out, const cd_jwt_config *cfg, char *err,
                       size_t errlen);

/* Take one more reference; returns ks.  Thread: any (atomic). */
cd_jwt_keyset *cd_jwt_keyset_ref(cd_jwt_keyset *ks);
/* Drop one reference; the last frees the set.  NULL is ignored.
 * Thread: any (atomic); the set must not be used through this reference
 * afterwards. */
void cd_jwt_keyset_unref(cd_jwt_keyset *ks);
/* Number of keys in the set (the secret counts as one), for a log line on
 * load.  Thread: any. */
size_t cd_jwt_keyset_count(const cd_jwt_keyset *ks);

/* ------------------------------------------------------------------ */
/* Verification. */

/* What a verified token says.  Fixed size (about 16 KiB, because of the
 * patterns): meant as a temporary on the stack; a connection should keep
 * only what it needs (sub, exp, the patterns actually present).
 * Strings are NUL-terminated. */
typedef struct cd_jwt_claims {
    char sub[CD_JWT_MAX_SUB + 1];      /* the user id; never empty */
    int64_t exp_s;                     /* NumericDate, seconds; 0 when absent */
    int64_t nbf_s;
    int64_t iat_s;
    bool has_exp, has_nbf, has_iat;
    /* Permission claims: arrays of patterns for cd_auth_pattern_match.
     * has_channels false: the claim is absent (the server's default
     * applies); true with n_channels 0: the token grants nothing. */
    bool has_channels, has_publish;
    uint8_t n_channels, n_publish;
    char channels[CD_JWT_MAX_PATTERNS][CD_JWT_MAX_PATTERN + 1];  /* subscribe */
    char publish[CD_JWT_MAX_PATTERNS][CD_JWT_MAX_PATTERN + 1];
} cd_jwt_claims;

/* Verify token[0..len), a compact JWS (RFC 7515 §7.1: three strict
 * base64url parts, no padding, non-canonical trailing bits refused), at
 * time now_s (seconds since the epoch; the loop's cached clock).
 *
 * Header: a JSON object (validated strictly, duplicate names refused);
 * "alg" any case of "none" is refused; an alg must be one the chosen key
 * serves; "crit" (RFC 7515 §4.1.11: we understand no extension) and the
 * embedded-key parameters "jwk", "jku", "x5u", "x5c" are refused.
 * Key choice: with a "kid", only the keys with that kid are tried (none:
 * CD_JWT_EKID, even when kid-less keys exist); without one, every key
 * that serves the alg is tried, in load order, and the first that
 * verifies wins.  The signature is checked before the payload is parsed.
 * Claims: "sub" required (1..255 bytes, no control characters); "exp"
 * required when configured, valid while now_s < exp + leeway; "nbf"
 * valid once now_s + leeway >= nbf; NumericDates may have a fraction
 * (RFC 7519 §2); "iat" is copied, not checked; "iss" must equal the
 * configured issuer and "aud" (a string or an array of strings) must
 * contain the configured audience, each only when configured (an "aud"
 * in a token is ignored when no audience is configured, although RFC 7519
 * §4.1.3 would refuse it: configure one); "typ" and "cty" are not checked;
 * "channels" and "publish", when present, must be arrays of strings, at most
 * CD_JWT_MAX_PATTERNS of at most CD_JWT_MAX_PATTERN bytes each, else
 * CD_JWT_ETOOLARGE (refused whole rather than truncated, so that a token
 * never silently grants less or more than it says).
 *
 * Returns 0 with *out filled, or a CD_JWT_E* code (or CONDUIT_EINVAL /
 * CONDUIT_ENOMEM) with *out unspecified.  *why (may be NULL) is set to a
 * short static reason for a log line ("expired", "alg none refused") on
 * failure and to NULL on success.  Reads token[0..len) only.
 * Thread: any; ks is only read. */
int cd_jwt_verify(const cd_jwt_keyset *ks, const char *token, size_t len, int64_t now_s,
                  cd_jwt_claims *out, const char **why);

/* ------------------------------------------------------------------ */
/* Channel permissions. */

/* Does channel[0..len) match pattern (NUL-terminated)?  '*' matches any
 * run of bytes, including ':' and the empty run; every other byte matches
 * itself (case-sensitive; there is no escape, so a '*' in a channel name
 * is matched by '*' or by itself).  Time O(strlen(pattern) + len): literal
 * pieces are found greedily left to right with memmem (linear Two-Way), so
 * a pattern such as "*a*a*a*b" cannot backtrack.  Pure. */
bool cd_auth_pattern_match(const char *pattern, const char *channel, size_t len);

/* User-limited channels: a channel in namespace "dm" (ASCII case-
 * insensitive, as namespaces are, hub.c) named "dm:alice,bob" is open only
 * to the users in its comma-separated list, compared byte for byte with
 * user (NUL-terminated; NULL or "" for an anonymous connection, which is
 * never in the list).  Every other channel: true.  This is a restriction
 * on top of the claims: a "channels": ["*"] grant does not open other
 * people's DMs.  Pure. */
bool cd_auth_user_channel_allowed(const char *user, const char *channel, size_t len);

#endif
