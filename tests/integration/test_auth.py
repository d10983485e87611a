"""Authentication and permissions (docs/security.md) against the real server.

Covered: where a token is looked for and that only the first place holding
one is used; JWT verification before the upgrade (401, `WWW-Authenticate:
Bearer error="invalid_token"`, a JSON body naming the reason); HS256/384/512
from a secret, RS*/ES*/EdDSA from a PEM key file or a JWKS with several
kids; `auth_mode` required (in-band `auth` / `hello`, `auth_timeout`),
optional and insecure; token refresh, the TokenExpiring warning and expiry
(close 1008); the `channels` / `publish` claims, user-limited `dm:`
channels and the namespace rules `anonymous` and `publish_requires_subscribe`;
SIGHUP re-reading the keys and the JWT options.

Tokens are signed here (HS* with hmac, RS*/ES*/EdDSA with `cryptography`);
keys are generated once per module and written to tmp_path as PEM or JWKS
files.  The native protocol is spoken over the harness's RawWebSocket, as in
test_hub.py (Debian's python3-websockets 10.4 has no synchronous client), so
that every status line, header, body, frame and close code is checked
byte for byte.

Time: tokens carry whole-second NumericDates and the server checks them
against its own (cached, whole-second) clock, so every time-based check
leaves at least a second of slack on the side where the server is allowed
to be late, and never asserts an upper bound tighter than T(...).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import signal
import socket
import time
import urllib.parse
from collections import deque

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conduit_harness import (
    OP_TEXT, RawWebSocket, T, connect, read_http_response, upgrade_request,
    wait_closed, ws_accept,
)

# 64 bytes: long enough for HS256, HS384 and HS512 (docs/security.md, "JWT").
SECRET = "conduit-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEF"
assert len(SECRET) == 64
OTHER_SECRET = "another-secret-that-is-at-least-64-bytes-long-0123456789abcdefgh"
REQUIRED = ("--auth-mode", "required")
OPTIONAL = ("--auth-mode", "optional")
INSECURE = ("--auth-mode", "insecure")
ISS = "https://issuer.example"
AUD = "conduit-tests"

# ---------------------------------------------------------------------------
# Signing tokens
# ---------------------------------------------------------------------------


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_json(obj) -> str:
    return b64u(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


_SHA = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_HMAC = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}


def raw_signature(alg: str, key, data: bytes) -> bytes:
    a = alg.upper()
    if a == "NONE":
        return b""
    if a.startswith("HS"):
        k = key.encode("utf-8") if isinstance(key, str) else key
        return hmac.new(k, data, _HMAC[a[2:]]).digest()
    if a.startswith("RS"):
        return key.sign(data, padding.PKCS1v15(), _SHA[a[2:]]())
    if a.startswith("ES"):
        # JWS wants the raw r || s (RFC 7518 §3.4), not DER
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_SHA[a[2:]]())))
        n = (key.curve.key_size + 7) // 8
        return r.to_bytes(n, "big") + s.to_bytes(n, "big")
    if a == "EDDSA":
        return key.sign(data)
    raise ValueError(alg)


def sign_jwt(claims: dict, key, alg: str = "HS256", sig_alg: str | None = None,
             **header) -> str:
    """A compact JWS.  `header` adds (or, with None, removes) header members;
    sig_alg signs with another algorithm than the one the header names."""
    hdr = {"alg": alg, "typ": "JWT"}
    hdr.update(header)
    hdr = {k: v for k, v in hdr.items() if v is not None}
    signing_input = (b64u_json(hdr) + "." + b64u_json(claims)).encode("ascii")
    sig = raw_signature(sig_alg or alg, key, signing_input)
    return signing_input.decode("ascii") + "." + b64u(sig)


def claims(sub: str, ttl: int = 3600, **extra) -> dict:
    """sub, iat, exp = now + ttl, plus extra (a None value drops the claim)."""
    now = int(time.time())
    c = {"sub": sub, "iat": now, "exp": now + ttl}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def hs(sub: str = "alice", ttl: int = 3600, secret=SECRET, alg: str = "HS256",
       header: dict | None = None, **extra) -> str:
    """A token signed with the shared secret."""
    return sign_jwt(claims(sub, ttl, **extra), secret, alg, **(header or {}))


_keys: dict = {}


def key(kind: str, n: int = 0):
    """A private key, generated once per module: rsa, p256, p384, ed25519."""
    k = (kind, n)
    if k not in _keys:
        if kind == "rsa":
            _keys[k] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif kind == "p256":
            _keys[k] = ec.generate_private_key(ec.SECP256R1())
        elif kind == "p384":
            _keys[k] = ec.generate_private_key(ec.SECP384R1())
        elif kind == "ed25519":
            _keys[k] = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(kind)
    return _keys[k]


def pem_public(priv) -> bytes:
    return priv.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def _uint(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def jwk_public(priv, kid: str | None = None) -> dict:
    pub = priv.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        d = {"kty": "RSA", "n": b64u(_uint(nums.n)), "e": b64u(_uint(nums.e))}
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        nums = pub.public_numbers()
        size = (pub.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[pub.curve.name]
        d = {"kty": "EC", "crv": crv, "x": b64u(nums.x.to_bytes(size, "big")),
             "y": b64u(nums.y.to_bytes(size, "big"))}
    elif isinstance(pub, ed25519.Ed25519PublicKey):
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        d = {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw)}
    else:
        raise ValueError(type(pub))
    d["use"] = "sig"
    if kid is not None:
        d["kid"] = kid
    return d


def write_file(path, data: bytes | str) -> str:
    """Write atomically (the server may read the file at any moment)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return str(path)


def write_jwks(path, entries) -> str:
    """entries: [(private key, kid), ...] -> the public JWKS at path."""
    return write_file(path, json.dumps({"keys": [jwk_public(k, kid) for k, kid in entries]}))


# ---------------------------------------------------------------------------
# Handshakes
# ---------------------------------------------------------------------------


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def cookie(value: str) -> list[tuple[str, str]]:
    return [("Cookie", value)]


def handshake(srv, path: str = "/ws", headers=()):
    """Send one upgrade request; returns (socket, key, response).  A refusal's
    body is read by its Content-Length."""
    sock = connect(srv.port, timeout=T(5))
    try:
        req, k = upgrade_request(path, f"127.0.0.1:{srv.port}", extra=list(headers))
        sock.sendall(req)
        resp = read_http_response(sock, T(5))
    except BaseException:
        sock.close()
        raise
    return sock, k, resp


def open_ws(srv, path: str = "/ws", headers=(), label: str = "") -> "Client":
    sock, k, resp = handshake(srv, path, headers)
    if resp.status != 101:
        sock.close()
        raise AssertionError(f"GET {path} {list(headers)!r:.200}: expected 101, got "
                             f"{resp.status} {resp.body[:300]!r}")
    assert resp.header("sec-websocket-accept") == ws_accept(k)
    return Client(RawWebSocket(sock, resp, resp.rest), label or path)


def refused(srv, path: str = "/ws", headers=(), status: int = 401):
    """The upgrade is answered `status` and the connection closed after it."""
    sock, _, resp = handshake(srv, path, headers)
    try:
        assert resp.status == status, (
            f"GET {path} {list(headers)!r:.200}: expected {status}, got {resp.status} "
            f"{resp.raw_head[:200]!r} {resp.body[:300]!r}")
        closed, _ = wait_closed(sock, T(3))
        assert closed, f"GET {path}: the connection stayed open after {status}"
    finally:
        sock.close()
    return resp


def assert_401(resp, message: str | None = None, invalid_token: bool = True):
    """401, WWW-Authenticate: Bearer [error="invalid_token"], and the body
    {"error":{"code":"Unauthorized","message":message}}."""
    assert resp.status == 401, resp.status
    www = resp.header("www-authenticate")
    assert www is not None, f"401 without WWW-Authenticate: {resp.raw_head!r}"
    assert www == "Bearer" or www.startswith("Bearer "), www
    if invalid_token:
        assert 'error="invalid_token"' in www, www
    body = resp.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == "Unauthorized", body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    if message is not None:
        assert body["error"]["message"] == message, body
    return body


def unauthorized(srv, path: str = "/ws", headers=(), message: str | None = None):
    return assert_401(refused(srv, path, headers, 401), message)


# ---------------------------------------------------------------------------
# Log events
# ---------------------------------------------------------------------------


def events_named(srv, name: str, pred=None) -> list[dict]:
    return [e for e in list(srv.events)
            if e.get("event") == name and (pred is None or pred(e))]


def wait_events(srv, name: str, count: int, pred=None, timeout: float | None = None) -> list[dict]:
    """Wait until at least `count` log records named `name` (matching pred)."""
    deadline = time.monotonic() + (timeout if timeout is not None else T(5))
    while True:
        evs = events_named(srv, name, pred)
        if len(evs) >= count:
            return evs
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} '{name}' log events, got {len(evs)}:\n"
                                 + srv.stderr_tail(20))
        time.sleep(0.02)


def mentions_ip(e: dict, ip: str = "127.0.0.1") -> bool:
    return any(ip in str(v) for v in e.values())


# ---------------------------------------------------------------------------
# A native-protocol client (as in test_hub.py)
# ---------------------------------------------------------------------------

_ids = itertools.count(1)


class Client:
    def __init__(self, ws: RawWebSocket, label: str = ""):
        self.ws = ws
        self.label = label
        self.inbox: deque[dict] = deque()

    def send(self, obj) -> None:
        self.ws.send_json(obj)

    def _recv(self, timeout: float) -> dict:
        op, data = self.ws.recv_message(max(0.001, timeout), auto_pong=True)
        assert op == OP_TEXT, f"{self.label}: expected a text message, got opcode {op}"
        return json.loads(data.decode("utf-8"))

    def request(self, obj: dict, timeout: float | None = None) -> dict:
        obj = dict(obj)
        obj.setdefault("id", f"r{next(_ids)}")
        self.send(obj)
        rid = obj["id"]
        deadline = time.monotonic() + (timeout if timeout is not None else T(5))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                m = self._recv(left)
            except (socket.timeout, TimeoutError):
                break
            if m.get("id") == rid and type(m.get("id")) is type(rid):
                return m
            self.inbox.append(m)
        raise AssertionError(f"{self.label}: no reply to {obj!r:.200}; inbox {list(self.inbox)[-5:]}")

    def expect_error(self, obj: dict, code: str) -> dict:
        r = self.request(obj)
        assert r.get("type") == "error", f"{self.label}: {obj!r:.200} -> {r}"
        assert r["error"]["code"] == code, f"{self.label}: {obj!r:.200} -> {r}"
        assert isinstance(r["error"]["message"], str) and r["error"]["message"], r
        return r

    def expect_forbidden(self, obj: dict, channel: str) -> dict:
        r = self.expect_error(obj, "Forbidden")
        assert channel in r["error"]["message"], f"the error does not name {channel}: {r}"
        return r

    def ok(self, obj: dict) -> dict:
        r = self.request(obj)
        want = "pong" if obj["type"] == "ping" else obj["type"].lower() + "_response"
        assert r.get("type") == want, f"{self.label}: {obj!r:.200} -> {r}"
        return r

    def status(self) -> dict:
        return self.ok({"type": "status"})["connection"]

    def user(self) -> str:
        return self.status()["user"]

    def subscribe(self, *channels: str) -> dict:
        return self.ok({"type": "subscribe", "channels": list(channels)})

    def publish(self, channel: str, data) -> dict:
        return self.ok({"type": "publish", "channel": channel, "data": data})

    def alive(self) -> bool:
        return self.request({"type": "ping"}).get("type") == "pong"

    def next(self, pred, timeout: float | None = None) -> dict:
        for i, m in enumerate(self.inbox):
            if pred(m):
                del self.inbox[i]
                return m
        deadline = time.monotonic() + (timeout if timeout is not None else T(5))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                m = self._recv(left)
            except (socket.timeout, TimeoutError):
                break
            if pred(m):
                return m
            self.inbox.append(m)
        raise AssertionError(f"{self.label}: no matching message; inbox {list(self.inbox)[-5:]}")

    def until(self, pred, timeout: float | None = None) -> list[dict]:
        """Everything (inbox first) up to and including the first message
        satisfying pred."""
        out = []
        while self.inbox:
            m = self.inbox.popleft()
            out.append(m)
            if pred(m):
                return out
        deadline = time.monotonic() + (timeout if timeout is not None else T(5))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                m = self._recv(left)
            except (socket.timeout, TimeoutError):
                break
            out.append(m)
            if pred(m):
                return out
        raise AssertionError(f"{self.label}: nothing matched; got {out[-5:]}")

    def close(self):
        self.ws.close_socket()


def is_error(code: str):
    return lambda m: m.get("type") == "error" and m.get("error", {}).get("code") == code


def anon_user(conn_id: str) -> str:
    return "anon-%x" % int(conn_id, 16)


_subs = itertools.count(1)


def uniq(prefix: str) -> str:
    """A fresh user id (every user may hold at most ws_max_connections_per_user)."""
    return f"{prefix}-{next(_subs)}"


# ---------------------------------------------------------------------------
# 1. Where the token is looked for
# ---------------------------------------------------------------------------


def test_token_sources(server):
    srv = server(*REQUIRED, "--jwt-secret", SECRET)
    cases = [
        ("/ws", bearer(hs("via-bearer")), "via-bearer"),
        ("/ws?token=" + hs("via-token"), [], "via-token"),
        ("/ws?auth_token=" + hs("via-auth-token"), [], "via-auth-token"),
        ("/ws?x=1&auth_token=" + hs("via-auth-token-2") + "&y=2", [], "via-auth-token-2"),
        ("/ws", cookie("token=" + hs("via-cookie")), "via-cookie"),
        ("/ws", cookie("a=1; token=" + hs("via-cookie-2") + "; b=2"), "via-cookie-2"),
    ]
    for path, headers, user in cases:
        c = open_ws(srv, path, headers, label=user)
        assert c.user() == user, (path, headers)
        r = c.request({"type": "hello", "version": "1"})
        assert r["type"] == "hello_response" and r["user"] == user, r
        c.close()
    # a token on /ws/{room}: the room is joined as the token's user
    c = open_ws(srv, "/ws/lobby?token=" + hs("via-room"))
    st = c.status()
    assert st["user"] == "via-room" and st["channels"] == ["lobby"], st
    c.close()


def test_token_first_place_wins(server):
    srv = server(*REQUIRED, "--jwt-secret", SECRET)
    garbage = "not-a-jwt"
    # the first place that has a token is the only one used: a good token
    # there wins over garbage further down ...
    accepted = [
        ("/ws?token=" + garbage, bearer(hs("b-over-q")), "b-over-q"),
        ("/ws?auth_token=" + garbage, bearer(hs("b-over-aq")), "b-over-aq"),
        ("/ws", bearer(hs("b-over-c")) + cookie("token=" + garbage), "b-over-c"),
        ("/ws?token=" + hs("q-over-aq") + "&auth_token=" + garbage, [], "q-over-aq"),
        ("/ws?auth_token=" + garbage + "&token=" + hs("q-over-aq-2"), [], "q-over-aq-2"),
        ("/ws?token=" + hs("q-over-c"), cookie("token=" + garbage), "q-over-c"),
        ("/ws?auth_token=" + hs("aq-over-c"), cookie("token=" + garbage), "aq-over-c"),
    ]
    for path, headers, user in accepted:
        c = open_ws(srv, path, headers, label=user)
        assert c.user() == user, (path, headers)
        c.close()
    # ... and garbage there is refused even with a good token further down
    refusals = [
        ("/ws?token=" + hs("q"), bearer(garbage)),
        ("/ws?auth_token=" + hs("aq"), bearer(garbage)),
        ("/ws", bearer(garbage) + cookie("token=" + hs("c"))),
        ("/ws?token=" + garbage + "&auth_token=" + hs("aq"), []),
        ("/ws?token=" + garbage, cookie("token=" + hs("c"))),
        ("/ws?auth_token=" + garbage, cookie("token=" + hs("c"))),
    ]
    for path, headers in refusals:
        unauthorized(srv, path, headers, "malformed token")
    # a well-formed but badly signed Bearer token is not rescued by the query
    unauthorized(srv, "/ws?token=" + hs("q"), bearer(hs("b", secret=OTHER_SECRET)),
                 "bad signature")


def test_custom_cookie_name(server):
    srv = server(*REQUIRED, "--jwt-secret", SECRET, "--jwt-cookie-name", "sess")
    c = open_ws(srv, "/ws", cookie("theme=dark; sess=" + hs("cookie-sess")))
    assert c.user() == "cookie-sess"
    c.close()
    # the default name is no longer a token: the upgrade succeeds (required
    # mode) and the connection is not authenticated, garbage or not
    for value in ("token=" + hs("not-me"), "token=garbage"):
        c = open_ws(srv, "/ws", cookie(value))
        c.expect_error({"type": "status"}, "Unauthorized")
        assert c.alive()
        c.close()


def test_cookie_token_needs_same_origin(server):
    srv = server(*OPTIONAL, "--jwt-secret", SECRET)
    tok = hs("cookie-origin")
    same = f"http://127.0.0.1:{srv.port}"
    c = open_ws(srv, "/ws", cookie("token=" + tok) + [("Origin", same)])
    assert c.user() == "cookie-origin"
    c.close()
    resp = refused(srv, "/ws", cookie("token=" + tok) + [("Origin", "http://evil.example")], 403)
    assert resp.json()["error"]["code"] == "Forbidden", resp.body
    wait_events(srv, "origin_rejected", 1)
    # the same token in a header: any origin (no allowed_origins configured)
    c = open_ws(srv, "/ws", bearer(tok) + [("Origin", "http://evil.example")])
    assert c.user() == "cookie-origin"
    c.close()


def test_environment_forms(server, tmp_path):
    srv = server(env={"CONDUIT_AUTH_MODE": "required", "CONDUIT_JWT_SECRET": SECRET,
                      "CONDUIT_JWT_ISSUER": ISS, "CONDUIT_JWT_AUDIENCE": AUD,
                      "CONDUIT_JWT_COOKIE_NAME": "envcookie"})
    c = open_ws(srv, "/ws", bearer(hs("env-user", iss=ISS, aud=AUD)))
    assert c.user() == "env-user"
    c.close()
    c = open_ws(srv, "/ws", cookie("envcookie=" + hs("env-cookie", iss=ISS, aud=AUD)))
    assert c.user() == "env-cookie"
    c.close()
    unauthorized(srv, "/ws", bearer(hs("x", iss="https://other.example", aud=AUD)), "wrong issuer")
    unauthorized(srv, "/ws", bearer(hs("x", iss=ISS, aud="other")), "wrong audience")
    # required mode without a token: upgraded, not authenticated
    c = open_ws(srv, "/ws")
    c.expect_error({"type": "subscribe", "channel": "x"}, "Unauthorized")
    c.close()
    # the key file from the environment
    path = tmp_path / "ed.pem"
    write_file(path, pem_public(key("ed25519")))
    srv2 = server(env={"CONDUIT_AUTH_MODE": "required", "CONDUIT_JWT_KEY_FILE": str(path)})
    c = open_ws(srv2, "/ws", bearer(sign_jwt(claims("env-ed"), key("ed25519"), "EdDSA")))
    assert c.user() == "env-ed"
    c.close()


# ---------------------------------------------------------------------------
# 2. Refused before the upgrade
# ---------------------------------------------------------------------------

_GOOD = {"iss": ISS, "aud": AUD}


def _good_claims(sub="refused", **kw):
    return claims(sub, **{**_GOOD, **kw})


def _swap_payload(tok: str) -> str:
    """A good token's signature over another payload."""
    h, _, s = tok.split(".")
    return f"{h}.{b64u_json(_good_claims('mallory'))}.{s}"


_EMBEDDED_JWK = {"kty": "oct", "k": b64u(SECRET.encode())}

BAD_TOKENS = [
    # (id, token factory, message from docs/security.md or None: 401 only)
    ("alg-none", lambda: sign_jwt(_good_claims(), None, "none"), "alg not allowed"),
    ("alg-NoNe", lambda: sign_jwt(_good_claims(), None, "NoNe"), "alg not allowed"),
    ("alg-NONE", lambda: sign_jwt(_good_claims(), None, "NONE"), "alg not allowed"),
    ("alg-none-with-hs256-signature",
     lambda: sign_jwt(_good_claims(), SECRET, "none", sig_alg="HS256"), "alg not allowed"),
    ("alg-unknown", lambda: sign_jwt(_good_claims(), SECRET, "HS257", sig_alg="HS256"),
     "alg not allowed"),
    ("alg-rs256-on-secret", lambda: sign_jwt(_good_claims(), key("rsa"), "RS256"),
     "alg not allowed"),
    ("expired", lambda: hs("refused", ttl=-120, **_GOOD), "token expired"),
    ("expired-long-ago", lambda: hs("refused", ttl=-86400, **_GOOD), "token expired"),
    ("nbf-future", lambda: hs("refused", nbf=int(time.time()) + 120, **_GOOD),
     "token not yet valid"),
    ("wrong-iss", lambda: hs("refused", iss="https://evil.example", aud=AUD), "wrong issuer"),
    ("missing-iss", lambda: hs("refused", aud=AUD), None),
    ("wrong-aud", lambda: hs("refused", iss=ISS, aud="someone-else"), "wrong audience"),
    ("wrong-aud-array", lambda: hs("refused", iss=ISS, aud=["a", "b"]), "wrong audience"),
    ("missing-aud", lambda: hs("refused", iss=ISS), None),
    ("bad-signature", lambda: hs("refused", secret=OTHER_SECRET, **_GOOD), "bad signature"),
    ("tampered-payload", lambda: _swap_payload(hs("refused", **_GOOD)), "bad signature"),
    ("truncated-signature", lambda: hs("refused", **_GOOD)[:-4], None),
    ("header-jwk", lambda: hs("refused", header={"jwk": _EMBEDDED_JWK}, **_GOOD),
     "forbidden header parameter"),
    ("header-jku", lambda: hs("refused", header={"jku": "https://evil.example/jwks"}, **_GOOD),
     "forbidden header parameter"),
    ("header-x5u", lambda: hs("refused", header={"x5u": "https://evil.example/cert"}, **_GOOD),
     "forbidden header parameter"),
    ("header-x5c", lambda: hs("refused", header={"x5c": ["MIIB"]}, **_GOOD),
     "forbidden header parameter"),
    ("header-crit", lambda: hs("refused", header={"crit": ["exp"]}, **_GOOD),
     "forbidden header parameter"),
    ("missing-exp", lambda: hs("refused", exp=None, **_GOOD), None),
    ("malformed-garbage", lambda: "garbage", "malformed token"),
    ("malformed-two-parts", lambda: ".".join(hs("refused", **_GOOD).split(".")[:2]),
     "malformed token"),
    ("malformed-four-parts", lambda: hs("refused", **_GOOD) + ".AAAA", "malformed token"),
    ("malformed-empty-parts", lambda: "..", "malformed token"),
    ("malformed-padding", lambda: _padded_token(), "malformed token"),
    ("malformed-header-not-json", lambda: _raw_token(b"not json", _good_claims()),
     "malformed token"),
    ("malformed-payload-not-json", lambda: _raw_token(b'{"alg":"HS256"}', b"not json"),
     "malformed token"),
]


def _padded_token() -> str:
    """Correctly signed, but the header keeps its base64 padding ("==")."""
    h = base64.urlsafe_b64encode(b'{"alg":"HS256","x":12}').decode("ascii")
    assert h.endswith("==")
    si = (h + "." + b64u_json(_good_claims())).encode("ascii")
    return si.decode("ascii") + "." + b64u(hmac.new(SECRET.encode(), si, hashlib.sha256).digest())


def _raw_token(header: bytes, payload) -> str:
    """Signed with SECRET (HS256) over arbitrary header / payload bytes."""
    if not isinstance(payload, bytes):
        payload = json.dumps(payload).encode()
    si = (b64u(header) + "." + b64u(payload)).encode()
    return si.decode() + "." + b64u(hmac.new(SECRET.encode(), si, hashlib.sha256).digest())


@pytest.mark.parametrize("case", BAD_TOKENS, ids=[c[0] for c in BAD_TOKENS])
def test_bad_token_refused_before_upgrade(server, case):
    _, make, message = case
    srv = server(*REQUIRED, "--jwt-secret", SECRET, "--jwt-issuer", ISS,
                 "--jwt-audience", AUD, "--jwt-leeway", "30")
    tok = make()
    unauthorized(srv, "/ws", bearer(tok), message)
    ev = wait_events(srv, "auth_failed", 1)[0]
    assert ev.get("reason"), f"auth_failed without a reason: {ev}"
    assert mentions_ip(ev), f"auth_failed does not name the IP: {ev}"
    # the same token in the query string, and on /ws/{room}
    unauthorized(srv, "/ws/lobby?token=" + urllib.parse.quote(tok, safe=""), [], message)
    # the server is fine: a good token still gets in
    c = open_ws(srv, "/ws", bearer(hs("after", **_GOOD)))
    assert c.user() == "after"
    c.close()


def test_bad_token_refused_in_optional_mode(server):
    """A bad token is refused even where no token is needed."""
    srv = server(*OPTIONAL, "--jwt-secret", SECRET)
    unauthorized(srv, "/ws", bearer(hs("x", ttl=-3600)), "token expired")
    unauthorized(srv, "/ws?token=garbage", [], "malformed token")
    unauthorized(srv, "/ws", bearer(sign_jwt(claims("x"), None, "none")), "alg not allowed")
    c = open_ws(srv, "/ws")
    st = c.status()
    assert st["user"] == anon_user(st["id"])
    c.close()


def test_bad_token_refused_on_echo(server):
    """docs/security.md "Before the upgrade": every WebSocket upgrade, the
    echo endpoint included."""
    srv = server(*OPTIONAL, "--jwt-secret", SECRET)
    unauthorized(srv, "/echo", bearer(hs("x", secret=OTHER_SECRET)), "bad signature")


def test_leeway_and_claims_accepted(server):
    srv = server(*REQUIRED, "--jwt-secret", SECRET, "--jwt-issuer", ISS,
                 "--jwt-audience", AUD, "--jwt-leeway", "30")
    now = int(time.time())
    good = [
        ("exp-within-leeway", hs("in-leeway", ttl=-10, **_GOOD)),
        ("nbf-within-leeway", hs("nbf-leeway", nbf=now + 10, **_GOOD)),
        ("nbf-past", hs("nbf-past", nbf=now - 10, **_GOOD)),
        ("aud-array", hs("aud-array", iss=ISS, aud=["other", AUD])),
        ("hs384", hs("hs384", alg="HS384", **_GOOD)),
        ("hs512", hs("hs512", alg="HS512", **_GOOD)),
        ("fractional-exp", sign_jwt(dict(_good_claims("frac"), exp=now + 3600.5), SECRET)),
        ("extra-claims", hs("extra", foo={"bar": [1, 2]}, **_GOOD)),
    ]
    for name, tok in good:
        c = open_ws(srv, "/ws", bearer(tok), label=name)
        r = c.request({"type": "status"})
        assert r["type"] == "status_response", (name, r)
        c.close()
    # the leeway is 30 s, not more
    unauthorized(srv, "/ws", bearer(hs("x", ttl=-60, **_GOOD)), "token expired")
    unauthorized(srv, "/ws", bearer(hs("x", nbf=now + 60, **_GOOD)), "token not yet valid")


def test_default_leeway_is_5s(server):
    srv = server(*REQUIRED, "--jwt-secret", SECRET)
    c = open_ws(srv, "/ws", bearer(hs("in-default-leeway", ttl=-1)))
    assert c.user() == "in-default-leeway"
    c.close()
    unauthorized(srv, "/ws", bearer(hs("x", ttl=-20)), "token expired")


def test_short_secret_serves_only_hs256(server):
    short = "s" * 32
    srv = server(*REQUIRED, "--jwt-secret", short)
    c = open_ws(srv, "/ws", bearer(hs("hs256-short", secret=short)))
    assert c.user() == "hs256-short"
    c.close()
    unauthorized(srv, "/ws", bearer(hs("x", secret=short, alg="HS384")), "alg not allowed")
    unauthorized(srv, "/ws", bearer(hs("x", secret=short, alg="HS512")), "alg not allowed")


def test_key_confusion_refused(server, tmp_path):
    """HS256 signed with the RSA public key (the PEM bytes) as the HMAC
    secret, against a server that holds that RSA key."""
    pem = pem_public(key("rsa"))
    srv = server(*REQUIRED, "--jwt-key-file", write_file(tmp_path / "rsa.pem", pem))
    c = open_ws(srv, "/ws", bearer(sign_jwt(claims("rsa-user"), key("rsa"), "RS256")))
    assert c.user() == "rsa-user"
    c.close()
    for secret in (pem, pem.strip(), pem.decode().replace("\n", "\r\n").encode()):
        for alg in ("HS256", "HS384", "HS512"):
            unauthorized(srv, "/ws", bearer(sign_jwt(claims("x"), secret, alg)), "alg not allowed")
    unauthorized(srv, "/ws", bearer(sign_jwt(claims("x"), None, "none")), "alg not allowed")
    # the same with the key in a JWKS
    srv2 = server(*REQUIRED, "--jwt-key-file",
                  write_jwks(tmp_path / "rsa.jwks", [(key("rsa"), "k1")]))
    unauthorized(srv2, "/ws", bearer(sign_jwt(claims("x"), pem, "HS256", kid="k1")),
                 "alg not allowed")


# ---------------------------------------------------------------------------
# 3. RS256, ES256, EdDSA: PEM and JWKS
# ---------------------------------------------------------------------------

ASYM = [
    # (alg, key kind, an algorithm of another family the key does not serve)
    ("RS256", "rsa", "ES256"),
    ("RS384", "rsa", "EdDSA"),
    ("RS512", "rsa", "ES256"),
    ("ES256", "p256", "RS256"),
    ("ES384", "p384", "ES256"),
    ("EdDSA", "ed25519", "RS256"),
]


def _other_family_key(alg: str):
    return {"RS": key("rsa"), "ES": key("p384") if alg == "ES384" else key("p256"),
            "Ed": key("ed25519")}[alg[:2]]


@pytest.mark.parametrize("alg,kind,wrong_alg", ASYM, ids=[a[0] for a in ASYM])
def test_pem_key(server, tmp_path, alg, kind, wrong_alg):
    path = write_file(tmp_path / f"{kind}.pem", pem_public(key(kind)))
    srv = server(*REQUIRED, "--jwt-key-file", path)
    sub = f"pem-{alg.lower()}"
    c = open_ws(srv, "/ws", bearer(sign_jwt(claims(sub), key(kind), alg)))
    assert c.user() == sub
    c.close()
    # another key of the same kind
    unauthorized(srv, "/ws", bearer(sign_jwt(claims("x"), key(kind, 1), alg)), "bad signature")
    # an algorithm the key does not serve
    unauthorized(srv, "/ws", bearer(sign_jwt(claims("x"), _other_family_key(wrong_alg), wrong_alg)),
                 "alg not allowed")
    unauthorized(srv, "/ws", bearer(sign_jwt(claims("x"), pem_public(key(kind)), "HS256")),
                 "alg not allowed")


ROTATION = [("RS256", "rsa"), ("ES256", "p256"), ("EdDSA", "ed25519")]


@pytest.mark.parametrize("alg,kind", ROTATION, ids=[a[0] for a in ROTATION])
def test_jwks_two_kids(server, tmp_path, alg, kind):
    k1, k2 = key(kind, 0), key(kind, 1)
    path = write_jwks(tmp_path / "keys.jwks", [(k1, "k1"), (k2, "k2")])
    srv = server(*REQUIRED, "--jwt-key-file", path)
    for k, kid in ((k1, "k1"), (k2, "k2")):
        sub = f"jwks-{alg.lower()}-{kid}"
        c = open_ws(srv, "/ws", bearer(sign_jwt(claims(sub), k, alg, kid=kid)))
        assert c.user() == sub
        c.close()
    unauthorized(srv, "/ws", bearer(sign_jwt(claims("x"), k1, alg, kid="k3")), "unknown kid")
    # a kid names the one key to use: k2's signature under kid k1 is bad
    unauthorized(srv, "/ws", bearer(sign_jwt(claims("x"), k2, alg, kid="k1")), "bad signature")
    # a key not in the set
    unauthorized(srv, "/ws", bearer(sign_jwt(claims("x"), key(kind, 2), alg, kid="k1")),
                 "bad signature")


def test_jwks_and_secret_together(server, tmp_path):
    """Several keys active at once: a JWKS and a secret."""
    path = write_jwks(tmp_path / "keys.jwks", [(key("ed25519"), "ed"), (key("p256"), "ec")])
    srv = server(*REQUIRED, "--jwt-key-file", path, "--jwt-secret", SECRET)
    for tok, sub in ((sign_jwt(claims("mix-ed"), key("ed25519"), "EdDSA", kid="ed"), "mix-ed"),
                     (sign_jwt(claims("mix-ec"), key("p256"), "ES256", kid="ec"), "mix-ec"),
                     (hs("mix-hs"), "mix-hs")):
        c = open_ws(srv, "/ws", bearer(tok))
        assert c.user() == sub
        c.close()


# ---------------------------------------------------------------------------
# 4, 5. auth_mode required
# ---------------------------------------------------------------------------


def test_required_in_band_auth(server):
    srv = server(*REQUIRED, "--jwt-secret", SECRET, "--auth-timeout", "60")
    c = open_ws(srv, "/ws")
    # ping is answered; everything else is Unauthorized and the connection stays
    assert c.alive()
    r = c.expect_error({"type": "subscribe", "channel": "room", "id": 41}, "Unauthorized")
    assert r["id"] == 41
    c.expect_error({"type": "publish", "channel": "room", "data": 1}, "Unauthorized")
    c.expect_error({"type": "status"}, "Unauthorized")
    c.expect_error({"type": "presence", "channel": "room"}, "Unauthorized")
    assert c.alive()
    # a bad token in band: Unauthorized, still open, still unauthenticated
    n_failed = len(events_named(srv, "auth_failed"))
    c.expect_error({"type": "auth", "token": hs("alice", ttl=-3600)}, "Unauthorized")
    c.expect_error({"type": "auth", "token": "garbage"}, "Unauthorized")
    wait_events(srv, "auth_failed", n_failed + 2)
    c.expect_error({"type": "subscribe", "channel": "room"}, "Unauthorized")
    # a good token
    exp = int(time.time()) + 3600
    tok = sign_jwt({"sub": "alice", "exp": exp}, SECRET)
    r = c.request({"type": "auth", "token": tok, "id": "a1"})
    assert r["type"] == "auth_response", r
    assert r["id"] == "a1" and r["user"] == "alice" and r["expires_at"] == exp, r
    assert c.subscribe("room")["channels"] == ["room"]
    st = c.status()
    assert st["user"] == "alice" and st["channels"] == ["room"]
    assert c.publish("room", "hi")["type"] == "publish_response"
    m = c.next(lambda m: m.get("type") == "message")
    assert m["channel"] == "room" and m["data"] == "hi" and m["from"] == "alice"
    c.close()


def test_required_hello_with_token(server):
    srv = server(*REQUIRED, "--jwt-secret", SECRET, "--auth-timeout", "60")
    c = open_ws(srv, "/ws")
    c.expect_error({"type": "subscribe", "channel": "room"}, "Unauthorized")
    c.expect_error({"type": "hello", "version": "1", "token": "garbage"}, "Unauthorized")
    c.expect_error({"type": "subscribe", "channel": "room"}, "Unauthorized")
    r = c.request({"type": "hello", "version": "1", "token": hs("hello-user"), "id": 7})
    assert r["type"] == "hello_response" and r["id"] == 7, r
    assert r["user"] == "hello-user"
    c.subscribe("room")
    assert c.user() == "hello-user"
    c.close()


def test_required_auth_timeout(server):
    srv = server(*REQUIRED, "--jwt-secret", SECRET, "--auth-timeout", "1")
    slow = open_ws(srv, "/ws", label="slow")
    quick = open_ws(srv, "/ws", label="quick")
    by_hello = open_ws(srv, "/ws", label="by-hello")
    by_header = open_ws(srv, "/ws", bearer(hs("by-header")), label="by-header")
    assert quick.ok({"type": "auth", "token": hs("quick")})["user"] == "quick"
    assert by_hello.ok({"type": "hello", "version": "1", "token": hs("by-hello")})["user"] == "by-hello"
    t0 = time.monotonic()
    # pings do not count as authenticating
    assert slow.alive()
    err = slow.next(lambda m: m.get("type") == "error", timeout=T(6))
    assert err["error"]["code"] == "Unauthorized", err
    assert "id" not in err, err
    slow.ws.expect_close(1008, timeout=T(5))
    slow.close()
    wait_events(srv, "auth_timeout", 1)
    # the authenticated ones outlive the deadline
    while time.monotonic() - t0 < 1.5:
        time.sleep(0.1)
    for c, user in ((quick, "quick"), (by_hello, "by-hello"), (by_header, "by-header")):
        assert c.user() == user
        assert not [m for m in c.inbox if m.get("type") == "error"], list(c.inbox)
        c.close()
    assert len(events_named(srv, "auth_timeout")) == 1


def test_required_without_verifier_refuses_everything(server):
    srv = server(*REQUIRED)
    for path, headers in (("/ws", []), ("/ws/lobby", []), ("/ws?user_id=alice", []),
                          ("/ws", bearer(hs("alice"))), ("/ws?token=" + hs("alice"), []),
                          ("/ws", cookie("token=" + hs("alice")))):
        body = assert_401(refused(srv, path, headers), invalid_token=False)
        assert body["error"]["message"] == "no token verifier configured", body


def test_optional_without_verifier_ignores_tokens(server):
    srv = server(*OPTIONAL)
    for path, headers in (("/ws", bearer(hs("alice"))), ("/ws?token=garbage", []),
                          ("/ws", cookie("token=" + hs("alice")))):
        c = open_ws(srv, path, headers)
        st = c.status()
        assert st["user"] == anon_user(st["id"]), (path, st)
        c.close()


# ---------------------------------------------------------------------------
# 6. insecure and optional modes
# ---------------------------------------------------------------------------


def test_insecure_user_id(server):
    srv = server(*INSECURE)
    c = open_ws(srv, "/ws?user_id=alice")
    assert c.user() == "alice"
    ev = wait_events(srv, "insecure_user_id", 1)[0]
    assert ev.get("level") == "warn" and ev.get("user") == "alice", ev
    c2 = open_ws(srv, "/ws/lobby?user_id=bob")
    st = c2.status()
    assert st["user"] == "bob" and st["channels"] == ["lobby"]
    wait_events(srv, "insecure_user_id", 2)
    # without user_id: anonymous, as optional
    c3 = open_ws(srv, "/ws")
    st = c3.status()
    assert st["user"] == anon_user(st["id"])
    for x in (c, c2, c3):
        x.close()
    assert len(events_named(srv, "insecure_user_id")) == 2


def test_optional_ignores_user_id(server):
    srv = server(*OPTIONAL, "--jwt-secret", SECRET)
    c = open_ws(srv, "/ws?user_id=alice")
    st = c.status()
    assert st["user"] == anon_user(st["id"]) and st["user"].startswith("anon-"), st
    c.close()
    # a token wins over user_id
    c = open_ws(srv, "/ws?user_id=mallory", bearer(hs("alice")))
    assert c.user() == "alice"
    c.close()
    assert not events_named(srv, "insecure_user_id")


# ---------------------------------------------------------------------------
# 7. What the connection may do
# ---------------------------------------------------------------------------


def test_channels_and_publish_claims(server):
    srv = server(*REQUIRED, "--jwt-secret", SECRET)
    c = open_ws(srv, "/ws", bearer(hs("perm-user", channels=["chat:*"], publish=["chat:general"])))
    assert c.subscribe("chat:x")["channels"] == ["chat:x"]
    assert c.subscribe("chat:general")["channels"] == ["chat:general"]
    n = len(events_named(srv, "permission_denied"))
    c.expect_forbidden({"type": "subscribe", "channel": "news:x"}, "news:x")
    ev = wait_events(srv, "permission_denied", n + 1)[-1]
    assert ev.get("user") == "perm-user" and ev.get("channel") == "news:x", ev
    assert ev.get("action"), ev
    # the connection stays and the next request works
    assert c.alive()
    assert c.subscribe("chat:y")["channels"] == ["chat:y"]
    # several channels, one forbidden: refused, and news:y is not joined
    c.expect_forbidden({"type": "subscribe", "channels": ["chat:z", "news:y"]}, "news:y")
    assert "news:y" not in c.status()["channels"]
    # "chat" alone and "chatter:x" are not "chat:*"
    c.expect_forbidden({"type": "subscribe", "channel": "chatter:x"}, "chatter:x")
    c.expect_forbidden({"type": "subscribe", "channel": "chat"}, "chat")
    # publish
    assert c.publish("chat:general", "hello")["type"] == "publish_response"
    n = len(events_named(srv, "permission_denied"))
    c.expect_forbidden({"type": "publish", "channel": "chat:other", "data": 1}, "chat:other")
    ev = wait_events(srv, "permission_denied", n + 1)[-1]
    assert ev.get("channel") == "chat:other" and ev.get("user") == "perm-user", ev
    c.expect_forbidden({"type": "publish", "channel": "news:x", "data": 1}, "news:x")
    c.expect_forbidden({"type": "publish", "channels": ["chat:general", "chat:x"], "data": 1},
                       "chat:x")
    # presence follows the channels claim
    assert c.ok({"type": "presence", "channel": "chat:x"})["channel"] == "chat:x"
    c.expect_forbidden({"type": "presence", "channel": "news:x"}, "news:x")
    assert c.alive()
    c.close()


def test_empty_claims_grant_nothing(server):
    srv = server(*REQUIRED, "--jwt-secret", SECRET)
    c = open_ws(srv, "/ws", bearer(hs("empty-claims", channels=[], publish=[])))
    for ch in ("x", "chat:x", "dm:empty-claims,bob"):
        c.expect_forbidden({"type": "subscribe", "channel": ch}, ch)
        c.expect_forbidden({"type": "publish", "channel": ch, "data": 1}, ch)
        c.expect_forbidden({"type": "presence", "channel": ch}, ch)
    assert c.status()["channels"] == []
    c.close()
    # channels [] and no publish claim: publishing is left to the namespace rules
    c = open_ws(srv, "/ws", bearer(hs("sub-nothing", channels=[])))
    c.expect_forbidden({"type": "subscribe", "channel": "x"}, "x")
    assert c.publish("x", 1)["type"] == "publish_response"
    c.close()
    # publish [] and no channels claim: subscribing is allowed, publishing not
    c = open_ws(srv, "/ws", bearer(hs("pub-nothing", publish=[])))
    c.subscribe("x")
    c.expect_forbidden({"type": "publish", "channel": "x", "data": 1}, "x")
    c.close()


def test_no_claims_allowed_by_default(server):
    srv = server(*REQUIRED, "--jwt-secret", SECRET)
    c = open_ws(srv, "/ws", bearer(hs("no-claims")))
    c.subscribe("x", "chat:x", "news:x")
    for ch in ("x", "chat:x", "news:x", "other:y"):
        assert c.publish(ch, "ok")["type"] == "publish_response"
    assert c.ok({"type": "presence", "channel": "news:x"})["type"] == "presence_response"
    c.close()


def test_star_patterns(server):
    srv = server(*REQUIRED, "--jwt-secret", SECRET)
    c = open_ws(srv, "/ws", bearer(hs("patterns", channels=["news:sport:*", "a*b", "exact"],
                                      publish=["*"])))
    for ch in ("news:sport:", "news:sport:x", "news:sport:a:b", "ab", "a:x:b", "exact"):
        c.subscribe(ch)
    for ch in ("news:sports", "news:x", "ba", "abc", "exact2", "xexact"):
        c.expect_forbidden({"type": "subscribe", "channel": ch}, ch)
    assert c.publish("anything:at:all", 1)["type"] == "publish_response"
    c.close()


def test_dm_channels(server):
    srv = server(*OPTIONAL, "--jwt-secret", SECRET)
    dm = "dm:alice,bob"
    alice = open_ws(srv, "/ws", bearer(hs("alice", channels=["*"], publish=["*"])))
    bob = open_ws(srv, "/ws", bearer(hs("bob")))
    carol = open_ws(srv, "/ws", bearer(hs("carol", channels=["*"], publish=["*"])))
    carol2 = open_ws(srv, "/ws", bearer(hs("carol")))
    anon = open_ws(srv, "/ws")
    alice.subscribe(dm)
    bob.subscribe(dm)
    for c in (carol, carol2, anon):
        c.expect_forbidden({"type": "subscribe", "channel": dm}, dm)
        c.expect_forbidden({"type": "publish", "channel": dm, "data": "psst"}, dm)
        c.expect_forbidden({"type": "presence", "channel": dm}, dm)
        assert c.alive()
    # near misses are other channels, open to nobody but their own users
    carol.expect_forbidden({"type": "subscribe", "channel": "dm:alice,bobby"}, "dm:alice,bobby")
    carol.subscribe("dm:alice,carol")
    carol.subscribe("dm:carol")
    assert alice.publish(dm, "hi bob")["type"] == "publish_response"
    m = bob.next(lambda m: m.get("type") == "message")
    assert m["channel"] == dm and m["data"] == "hi bob" and m["from"] == "alice"
    members = {x["user"] for x in alice.ok({"type": "presence", "channel": dm})["members"]}
    assert members == {"alice", "bob"}
    for c in (alice, bob, carol, carol2, anon):
        c.close()


def test_namespace_anonymous_false(server):
    srv = server(*OPTIONAL, "--jwt-secret", SECRET, "--ns-news-anonymous", "false")
    anon = open_ws(srv, "/ws")
    anon.expect_forbidden({"type": "subscribe", "channel": "news:x"}, "news:x")
    anon.expect_forbidden({"type": "publish", "channel": "news:x", "data": 1}, "news:x")
    assert anon.alive()
    anon.subscribe("other:x", "plain")
    assert anon.publish("plain", 1)["type"] == "publish_response"
    user = open_ws(srv, "/ws", bearer(hs("news-reader")))
    user.subscribe("news:x")
    assert user.publish("news:x", 1)["type"] == "publish_response"
    anon.close()
    user.close()


def test_global_allow_anonymous_false(server):
    srv = server(*OPTIONAL, "--jwt-secret", SECRET, "--ws-allow-anonymous", "false",
                 "--ns-lobby-anonymous", "true")
    anon = open_ws(srv, "/ws")
    for ch in ("x", "chat:x"):
        anon.expect_forbidden({"type": "subscribe", "channel": ch}, ch)
        anon.expect_forbidden({"type": "publish", "channel": ch, "data": 1}, ch)
    # a namespace may open itself again
    anon.subscribe("lobby:x")
    user = open_ws(srv, "/ws", bearer(hs("member")))
    user.subscribe("x", "chat:x")
    anon.close()
    user.close()


def test_publish_requires_subscribe(server):
    srv = server(*OPTIONAL, "--jwt-secret", SECRET, "--ws-publish-requires-subscribe", "true")
    c = open_ws(srv, "/ws", bearer(hs("publisher")))
    c.expect_forbidden({"type": "publish", "channel": "room", "data": 1}, "room")
    c.subscribe("room")
    assert c.publish("room", 1)["type"] == "publish_response"
    anon = open_ws(srv, "/ws")
    anon.expect_forbidden({"type": "publish", "channel": "room", "data": 1}, "room")
    c.ok({"type": "unsubscribe", "channel": "room"})
    c.expect_forbidden({"type": "publish", "channel": "room", "data": 1}, "room")
    c.close()
    anon.close()


def test_namespace_publish_requires_subscribe(server):
    srv = server(*OPTIONAL, "--ns-strict-publish-requires-subscribe", "true")
    c = open_ws(srv, "/ws")
    c.expect_forbidden({"type": "publish", "channel": "strict:a", "data": 1}, "strict:a")
    assert c.publish("loose:a", 1)["type"] == "publish_response"
    assert c.publish("plain", 1)["type"] == "publish_response"
    c.subscribe("strict:a")
    assert c.publish("strict:a", 1)["type"] == "publish_response"
    c.close()


# ---------------------------------------------------------------------------
# 8. Token lifetime
# ---------------------------------------------------------------------------


def _sleep_until(wall: float, limit: float):
    """Sleep until time.time() >= wall, at most `limit` seconds."""
    end = time.monotonic() + limit
    while time.time() < wall and time.monotonic() < end:
        time.sleep(0.05)
    assert time.time() >= wall


def test_refresh_in_band(server):
    srv = server(*OPTIONAL, "--jwt-secret", SECRET, "--jwt-leeway", "0",
                 "--token-expiring-warning", "0")
    old_exp = int(time.time()) + 4
    c = open_ws(srv, "/ws", bearer(sign_jwt({"sub": "alice", "exp": old_exp}, SECRET)))
    assert c.user() == "alice"
    new_exp = int(time.time()) + 3600
    r = c.request({"type": "auth", "id": 5,
                   "token": sign_jwt({"sub": "alice", "exp": new_exp}, SECRET)})
    assert r["type"] == "auth_response", r
    assert r["id"] == 5 and r["user"] == "alice" and r["expires_at"] == new_exp, r
    # another sub: Forbidden, the connection stays alice
    c.expect_error({"type": "auth", "token": hs("bob")}, "Forbidden")
    # a bad token: Unauthorized, the connection stays
    c.expect_error({"type": "auth", "token": hs("alice", ttl=-3600)}, "Unauthorized")
    c.expect_error({"type": "auth", "token": "garbage"}, "Unauthorized")
    assert c.user() == "alice"
    # past the old exp the connection is still open and still alice
    _sleep_until(old_exp + 2, T(10))
    assert c.user() == "alice"
    bad = [m for m in c.inbox if m.get("type") in ("error", "warning")]
    assert not bad, bad
    assert not events_named(srv, "token_expired")
    c.close()


def test_token_expiring_then_expired(server):
    srv = server(*OPTIONAL, "--jwt-secret", SECRET, "--jwt-leeway", "2",
                 "--token-expiring-warning", "2")
    exp = int(time.time()) + 4
    c = open_ws(srv, "/ws", bearer(sign_jwt({"sub": "short", "exp": exp}, SECRET)))
    c.subscribe("room")
    # neither another user's token nor a bad one replaces the short one
    c.expect_error({"type": "auth", "token": hs("bob")}, "Forbidden")
    c.expect_error({"type": "auth", "token": hs("short", secret=OTHER_SECRET)}, "Unauthorized")
    got = c.until(lambda m: m.get("type") == "error", timeout=T(12))
    err_at = time.time()
    warnings = [m for m in got if m.get("type") == "warning"]
    assert len(warnings) == 1, got
    w = warnings[0]
    assert w["code"] == "TokenExpiring" and w["expires_at"] == exp, w
    assert isinstance(w["message"], str) and w["message"], w
    err = got[-1]
    assert err["error"] == {"code": "Unauthorized", "message": "token expired"}, err
    # not before exp + leeway (whole-second clocks: one second of slack)
    assert err_at >= exp + 2 - 1, (err_at, exp)
    f = c.ws.expect_close(1008, timeout=T(5))
    assert f.close_reason == b"token expired", f
    c.close()
    wait_events(srv, "token_expired", 1)


def test_token_expiring_at_once(server):
    srv = server(*OPTIONAL, "--jwt-secret", SECRET)  # warning 60 s by default
    exp = int(time.time()) + 30
    c = open_ws(srv, "/ws", bearer(sign_jwt({"sub": "soon", "exp": exp}, SECRET)))
    w = c.next(lambda m: m.get("type") == "warning", timeout=T(3))
    assert w["code"] == "TokenExpiring" and w["expires_at"] == exp, w
    # after a refresh with a long token: no warning for the new one
    new_exp = int(time.time()) + 3600
    r = c.ok({"type": "auth", "token": sign_jwt({"sub": "soon", "exp": new_exp}, SECRET)})
    assert r["expires_at"] == new_exp
    assert c.alive()
    assert not [m for m in c.inbox if m.get("type") == "warning"], list(c.inbox)
    c.close()
    # in band too
    srv2 = server(*REQUIRED, "--jwt-secret", SECRET)
    c = open_ws(srv2, "/ws")
    exp = int(time.time()) + 30
    r = c.ok({"type": "auth", "token": sign_jwt({"sub": "soon2", "exp": exp}, SECRET)})
    assert r["expires_at"] == exp
    w = c.next(lambda m: m.get("type") == "warning", timeout=T(3))
    assert w["code"] == "TokenExpiring" and w["expires_at"] == exp, w
    c.close()


def test_in_band_token_expires(server):
    srv = server(*REQUIRED, "--jwt-secret", SECRET, "--jwt-leeway", "0",
                 "--token-expiring-warning", "0", "--auth-timeout", "60")
    c = open_ws(srv, "/ws")
    exp = int(time.time()) + 3
    assert c.ok({"type": "auth", "token": sign_jwt({"sub": "ib", "exp": exp}, SECRET)})["user"] == "ib"
    err = c.next(lambda m: m.get("type") == "error", timeout=T(10))
    assert err["error"] == {"code": "Unauthorized", "message": "token expired"}, err
    assert time.time() >= exp - 1
    f = c.ws.expect_close(1008, timeout=T(5))
    assert f.close_reason == b"token expired", f
    c.close()


# ---------------------------------------------------------------------------
# 9. optional mode: anonymous, then authenticated
# ---------------------------------------------------------------------------


def test_anonymous_then_auth(server):
    srv = server(*OPTIONAL, "--jwt-secret", SECRET)
    c = open_ws(srv, "/ws", label="upgraded")
    obs = open_ws(srv, "/ws", label="observer")
    st = c.status()
    anon = anon_user(st["id"])
    assert st["user"] == anon
    c.subscribe("r")
    obs.subscribe("r")
    r = c.request({"type": "auth", "token": hs("alice"), "id": "up"})
    assert r["type"] == "auth_response" and r["user"] == "alice", r
    st = c.status()
    assert st["user"] == "alice" and st["channels"] == ["r"], st
    h = c.ok({"type": "hello", "version": "1"})
    assert h["user"] == "alice"
    # presence: leave as the anonymous user, then join as alice
    seen = obs.until(lambda m: m.get("type") == "presence" and m.get("user") == "alice"
                     and m.get("state") == "join", timeout=T(5))
    states = [(m["user"], m["state"]) for m in seen
              if m.get("type") == "presence" and m.get("channel") == "r"
              and m.get("state") in ("join", "leave")]
    assert (anon, "leave") in states, seen
    assert states.index((anon, "leave")) < states.index(("alice", "join")), states
    members = {m["user"] for m in obs.ok({"type": "presence", "channel": "r"})["members"]}
    assert "alice" in members and anon not in members, members
    # still subscribed: a publish to r reaches it
    obs.publish("r", {"n": 1})
    m = c.next(lambda m: m.get("type") == "message" and m.get("data") == {"n": 1})
    assert m["channel"] == "r"
    c.publish("r", {"n": 2})
    m = obs.next(lambda m: m.get("type") == "message" and m.get("data") == {"n": 2})
    assert m["from"] == "alice"
    c.close()
    obs.close()


# ---------------------------------------------------------------------------
# 10. SIGHUP
# ---------------------------------------------------------------------------


def test_sighup_reloads_keys(server, tmp_path):
    k1, k2 = key("ed25519", 0), key("ed25519", 1)
    path = tmp_path / "keys.jwks"
    write_jwks(path, [(k1, "k1")])
    srv = server(*REQUIRED, "--jwt-key-file", str(path))

    def tok(k, kid, sub):
        return sign_jwt(claims(sub), k, "EdDSA", kid=kid)

    def reload(event: str):
        n = len(events_named(srv, event))
        srv.proc.send_signal(signal.SIGHUP)
        return wait_events(srv, event, n + 1, timeout=T(5))[-1]

    c = open_ws(srv, "/ws", bearer(tok(k1, "k1", "one")))
    assert c.user() == "one"
    c.close()
    unauthorized(srv, "/ws", bearer(tok(k2, "k2", "two")), "unknown kid")

    write_jwks(path, [(k1, "k1"), (k2, "k2")])
    reload("jwt_keys_loaded")
    c1 = open_ws(srv, "/ws", bearer(tok(k1, "k1", "one")))
    c2 = open_ws(srv, "/ws", bearer(tok(k2, "k2", "two")))
    assert c1.user() == "one" and c2.user() == "two"

    # a broken file: the old keys stay
    write_file(path, '{"keys": [ {"kty": "OKP", broken')
    reload("jwt_reload_failed")
    for k, kid, sub in ((k1, "k1", "one-b"), (k2, "k2", "two-b")):
        c = open_ws(srv, "/ws", bearer(tok(k, kid, sub)))
        assert c.user() == sub
        c.close()
    # a missing file: the same
    os.unlink(path)
    reload("jwt_reload_failed")
    c = open_ws(srv, "/ws", bearer(tok(k2, "k2", "two-c")))
    assert c.user() == "two-c"
    c.close()

    # k2 retired: new k2 tokens are refused, open connections keep their identity
    write_jwks(path, [(k1, "k1")])
    reload("jwt_keys_loaded")
    unauthorized(srv, "/ws", bearer(tok(k2, "k2", "two")), "unknown kid")
    assert c2.user() == "two" and c2.subscribe("still")["channels"] == ["still"]
    assert c1.user() == "one"
    # and an in-band auth with a k2 token is refused now
    c2.expect_error({"type": "auth", "token": tok(k2, "k2", "two")}, "Unauthorized")
    assert c2.user() == "two"
    c1.close()
    c2.close()


def test_sighup_rereads_jwt_options(server, tmp_path):
    cfg = tmp_path / "conduit.yaml"
    write_file(cfg, f'auth_mode: required\njwt_secret: "{SECRET}"\njwt_issuer: "iss-a"\n')
    srv = server("--config", str(cfg))
    c = open_ws(srv, "/ws", bearer(hs("a-user", iss="iss-a")))
    assert c.user() == "a-user"
    unauthorized(srv, "/ws", bearer(hs("b-user", iss="iss-b")), "wrong issuer")
    write_file(cfg, f'auth_mode: required\njwt_secret: "{OTHER_SECRET}"\njwt_issuer: "iss-b"\n')
    n = len(events_named(srv, "jwt_keys_loaded"))
    srv.proc.send_signal(signal.SIGHUP)
    wait_events(srv, "jwt_keys_loaded", n + 1)
    c2 = open_ws(srv, "/ws", bearer(hs("b-user", iss="iss-b", secret=OTHER_SECRET)))
    assert c2.user() == "b-user"
    unauthorized(srv, "/ws", bearer(hs("a-user", iss="iss-a")), "bad signature")
    unauthorized(srv, "/ws", bearer(hs("a-user", iss="iss-a", secret=OTHER_SECRET)), "wrong issuer")
    # the connection opened under the old options keeps its identity
    assert c.user() == "a-user"
    c.close()
    c2.close()
