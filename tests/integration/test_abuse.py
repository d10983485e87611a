"""Abuse protection against the real server (docs/security.md): the checks
before the upgrade (memory, global, origin, connection rate, per IP, per
user, pending handshakes, slow-loris), the client address behind a proxy
(X-Forwarded-For, Forwarded, PROXY protocol v1/v2), and the limits on
messages (rate with the close and throttle policies, size).

Different client addresses are real source addresses: a socket bound to
127.0.0.2 before it connects is another IPv4 client.  Addresses that are not
local (203.0.113.9, 2001:db8::1) only ever appear inside a proxy header or a
PROXY protocol header sent from 127.0.0.1.

Every socket a test opens is registered with the `net` fixture and closed at
teardown; every wait has a deadline scaled by T(); timing is only ever
asserted from below.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import socket
import struct
import time

import pytest

from conduit_harness import (
    OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, ConnectionClosed, HttpResponse,
    RawWebSocket, T, build_frame, frame_header, http_get, ipv6_available,
    read_http_response, upgrade_request, wait_closed, ws_accept,
)

JWT_SECRET = "conduit-abuse-test-secret-0123456789abcdef"  # 42 bytes: HS256


# ---------------------------------------------------------------------------
# Sockets, upgrades and refusals
# ---------------------------------------------------------------------------


def port_for(srv, host: str) -> int:
    """The port srv listens on for host's address family."""
    v6 = ":" in host
    for h, p in srv.addrs:
        if (":" in h) == v6:
            return p
    raise AssertionError(f"the server does not listen on an {'IPv6' if v6 else 'IPv4'} address: {srv.addrs}")


def host_header(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe(path: str, kw: dict) -> str:
    bits = [path]
    if kw.get("src"):
        bits.append(f"from {kw['src']}")
    if kw.get("host"):
        bits.append(f"to {kw['host']}")
    if kw.get("headers"):
        bits.append("headers " + ", ".join(f"{k}: {v}" for k, v in kw["headers"]))
    if kw.get("prefix"):
        bits.append(f"after {kw['prefix'][:60]!r}")
    return " ".join(bits)


def show(resp: HttpResponse) -> str:
    return f"{resp.raw_head.decode('latin-1')!r} body {resp.body[:300]!r}"


class Net:
    """Opens sockets (optionally from a chosen source address) and keeps
    them all, to close at teardown."""

    def __init__(self):
        self.socks: list[socket.socket] = []

    def sock(self, port: int, host: str = "127.0.0.1", src: str | None = None,
             timeout: float | None = None) -> socket.socket:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        self.socks.append(s)
        s.settimeout(timeout if timeout is not None else T(5))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if src is not None:
            s.bind((src, 0))
        s.connect((host, port))
        return s

    def attempt(self, srv, path: str = "/echo", *, src: str | None = None,
                host: str | None = None, headers=(), prefix: bytes = b"",
                hosthdr: str | None = None) -> tuple[HttpResponse, RawWebSocket | None]:
        """One upgrade request. A 101 gives (response, RawWebSocket); any
        other answer is read with its body, the server must then close the
        connection, and it gives (response, None)."""
        host = host or srv.host
        port = port_for(srv, host)
        s = self.sock(port, host, src)
        req, key = upgrade_request(path, hosthdr or host_header(host, port), extra=list(headers))
        s.sendall(prefix + req)
        resp = read_http_response(s, T(5))
        what = describe(path, dict(src=src, headers=headers, prefix=prefix))
        if resp.status == 101:
            assert resp.header("sec-websocket-accept") == ws_accept(key), f"{what}: {show(resp)}"
            return resp, RawWebSocket(s, resp, resp.rest)
        closed, _ = wait_closed(s, T(5))
        s.close()
        assert closed, f"{what}: the connection stayed open after {resp.status}"
        return resp, None

    def ok(self, srv, path: str = "/echo", **kw) -> RawWebSocket:
        resp, ws = self.attempt(srv, path, **kw)
        assert ws is not None, f"{describe(path, kw)}: expected 101, got {show(resp)}"
        return ws

    def refused(self, srv, status: int, code: str, path: str = "/echo",
                retry_after=None, **kw) -> HttpResponse:
        resp, ws = self.attempt(srv, path, **kw)
        if ws is not None:
            ws.close_socket()
        check_refusal(resp, status, code, retry_after, describe(path, kw))
        return resp

    def poll_ok(self, srv, path: str = "/echo", timeout: float | None = None,
                refusal: int = 429, **kw) -> RawWebSocket:
        """Upgrade again and again until one succeeds (a slot was freed);
        every refusal meanwhile must be `refusal`."""
        deadline = time.monotonic() + (timeout if timeout is not None else T(5))
        for _ in range(100000):
            resp, ws = self.attempt(srv, path, **kw)
            if ws is not None:
                return ws
            assert resp.status == refusal, f"{describe(path, kw)}: {show(resp)}"
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise AssertionError(f"{describe(path, kw)}: still refused ({resp.status}) after the slot was freed")

    def close_all(self):
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.socks.clear()


@pytest.fixture
def net():
    n = Net()
    yield n
    n.close_all()


def check_refusal(resp: HttpResponse, status: int, code: str | None, retry_after=None,
                  what: str = "") -> None:
    """status, JSON body {"error":{"code":code,"message":...}} and
    Retry-After: an int (exact value), "any" (an integer >= 1), None (not
    checked)."""
    assert resp.status == status, f"{what}: expected {status} {code}, got {show(resp)}"
    try:
        body = json.loads(resp.body.decode("utf-8"))
    except ValueError:
        raise AssertionError(f"{what}: {status} body is not JSON: {resp.body[:300]!r}")
    err = body.get("error") if isinstance(body, dict) else None
    assert isinstance(err, dict) and isinstance(err.get("code"), str), f"{what}: body {body}"
    if code is not None:
        assert err["code"] == code, f"{what}: expected code {code}, got {body}"
    assert isinstance(err.get("message"), str) and err["message"], f"{what}: body {body}"
    ra = resp.header("retry-after")
    if retry_after == "any":
        assert ra is not None and ra.strip().isdigit() and int(ra) >= 1, (
            f"{what}: expected a Retry-After of at least 1 s, got {ra!r}: {show(resp)}")
    elif retry_after is not None:
        assert ra is not None and ra.strip() == str(retry_after), (
            f"{what}: expected Retry-After: {retry_after}, got {ra!r}")


def expect_event(srv, name: str, value=None, **fields) -> dict:
    """A log line with event `name`, the given fields, and (when value is
    given) some field equal to value (an address, say)."""
    def match(e):
        return (e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
                and (value is None or value in e.values()))
    ev = srv.wait_for_event(match, T(5))
    assert ev is not None, (
        f"no log event {name} {fields}{' with ' + repr(value) if value else ''}; lines with that "
        f"event: {[e for e in srv.events if e.get('event') == name][-5:]}; last lines:\n"
        + srv.stderr_tail(15))
    return ev


def echo_ok(ws: RawWebSocket, text: str) -> None:
    """A round trip on /echo."""
    ws.send_text(text)
    f = ws.recv_frame(T(5))
    assert f.opcode == OP_TEXT and f.payload == text.encode(), f


def bye(ws: RawWebSocket) -> None:
    """Orderly close, waiting for the server to end TCP."""
    try:
        ws.send_close(1000)
        ws.expect_close(None, timeout=T(5), allow_data=True, reply=False)
    finally:
        ws.close_socket()


def read_until_close(ws: RawWebSocket, timeout: float | None = None) -> tuple[list[dict], list, object]:
    """Frames up to the server's close frame: (JSON messages, other
    frames, the close frame).  The close is not answered (the caller may
    have left a frame half sent); the socket is closed afterwards."""
    deadline = time.monotonic() + (timeout if timeout is not None else T(5))
    msgs, others = [], []
    try:
        for _ in range(100000):
            left = deadline - time.monotonic()
            try:
                f = ws.recv_frame(max(0.001, left))
            except (socket.timeout, TimeoutError):
                raise AssertionError(f"no close frame in time; got {msgs[-5:]} {others[-5:]}")
            except ConnectionClosed as e:
                raise AssertionError(f"TCP closed ({'reset' if e.reset else 'EOF'}) without a close "
                                     f"frame; got {msgs[-5:]} {others[-5:]}")
            if f.opcode == OP_CLOSE:
                return msgs, others, f
            if f.opcode == OP_TEXT:
                msgs.append(json.loads(f.payload.decode("utf-8")))
            else:
                others.append(f)
        raise AssertionError("too many frames")
    finally:
        ws.close_socket()


_ids = itertools.count(1)


class Native:
    """The native protocol over a RawWebSocket: request() returns the reply
    carrying the request's id; everything else waits in `inbox`."""

    def __init__(self, ws: RawWebSocket):
        self.ws = ws
        self.inbox: list[dict] = []

    def request(self, obj: dict, timeout: float | None = None) -> dict:
        obj = dict(obj)
        obj.setdefault("id", next(_ids))
        self.ws.send_json(obj)
        return self.reply_to(obj["id"], timeout)

    def reply_to(self, rid, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout if timeout is not None else T(5))
        for _ in range(100000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                m = self.ws.recv_json(max(0.001, left))
            except (socket.timeout, TimeoutError):
                break
            if m.get("id") == rid and m.get("type") != "warning":
                return m
            self.inbox.append(m)
        raise AssertionError(f"no reply with id {rid!r}; inbox {self.inbox[-5:]}")

    def next(self, pred, timeout: float | None = None) -> dict:
        for i, m in enumerate(self.inbox):
            if pred(m):
                return self.inbox.pop(i)
        deadline = time.monotonic() + (timeout if timeout is not None else T(5))
        for _ in range(100000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                m = self.ws.recv_json(max(0.001, left))
            except (socket.timeout, TimeoutError):
                break
            if pred(m):
                return m
            self.inbox.append(m)
        raise AssertionError(f"no matching message; inbox {self.inbox[-5:]}")

    def ping(self) -> None:
        r = self.request({"type": "ping"})
        assert r["type"] == "pong", r

    def echo(self, data, rid=None) -> dict:
        req = {"type": "echo", "data": data}
        if rid is not None:
            req["id"] = rid
        r = self.request(req)
        assert r["type"] == "echo_response" and r["data"] == data, r
        return r

    def user(self) -> str:
        r = self.request({"type": "status"})
        assert r["type"] == "status_response", r
        return r["connection"]["user"]


def is_warning(m: dict, code: str = "RateLimitWarning") -> bool:
    return m.get("type") == "warning" and m.get("code") == code


def is_error(m: dict, code: str) -> bool:
    return m.get("type") == "error" and (m.get("error") or {}).get("code") == code


# ---------------------------------------------------------------------------
# Tokens and proxy headers
# ---------------------------------------------------------------------------


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def hs256(claims: dict, secret: str = JWT_SECRET) -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def token_for(user: str) -> str:
    now = int(time.time())
    return hs256({"sub": user, "iat": now, "exp": now + 600})


def xff(value: str) -> list[tuple[str, str]]:
    return [("X-Forwarded-For", value)]


def fwd(value: str) -> list[tuple[str, str]]:
    return [("Forwarded", value)]


PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(src: str, dst: str, sport: int = 5555, dport: int = 80) -> bytes:
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode("ascii")


def proxy_v2(src: str, dst: str, sport: int = 5555, dport: int = 80) -> bytes:
    """A PROXY protocol v2 header, command PROXY, over TCP."""
    if ":" in src:
        fam = 0x21  # AF_INET6, STREAM
        addrs = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam = 0x11  # AF_INET, STREAM
        addrs = socket.inet_aton(src) + socket.inet_aton(dst)
    addrs += struct.pack("!HH", sport, dport)
    return PROXY_V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(addrs)) + addrs


def second_ipv6_address() -> str | None:
    """A global IPv6 address of this host (not ::1, outside ::/64) that can
    reach ::1, or None."""
    try:
        with open("/proc/net/if_inet6") as f:
            rows = [l.split() for l in f]
    except OSError:
        return None
    for row in rows:
        if len(row) < 6 or row[3] != "00":  # scope: global only
            continue
        raw = bytes.fromhex(row[0])
        if raw[:8] == bytes(8):
            continue  # ::1 and anything else in ::/64
        addr = socket.inet_ntop(socket.AF_INET6, raw)
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as l, \
                    socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as c:
                l.bind(("::1", 0))
                l.listen(1)
                c.settimeout(2)
                c.bind((addr, 0))
                c.connect(l.getsockname()[:2])
            return addr
        except OSError:
            continue
    return None


# ---------------------------------------------------------------------------
# Per IP
# ---------------------------------------------------------------------------


def test_per_ip_cap_default_50(server, net):
    srv = server()
    conns = [net.ok(srv, "/echo") for _ in range(50)]
    net.refused(srv, 429, "Overloaded", "/echo")
    net.refused(srv, 429, "Overloaded", "/ws")  # every WebSocket endpoint counts
    expect_event(srv, "connection_limit", kind="ip")
    for i, ws in enumerate(conns):
        echo_ok(ws, f"still here {i}")
    # another address is another client
    other = net.ok(srv, "/echo", src="127.0.0.2")
    echo_ok(other, "from 127.0.0.2")
    # closing one frees a slot
    bye(conns.pop(0))
    again = net.poll_ok(srv, "/echo")
    echo_ok(again, "in the freed slot")
    net.refused(srv, 429, "Overloaded", "/echo")
    assert http_get(srv.port).status == 200


def test_per_ip_cap_option_across_workers(server, net):
    srv = server("--workers", "2", "--ws-max-connections-per-ip", "3")
    held = [net.ok(srv, "/echo"), net.ok(srv, "/ws"), net.ok(srv, "/ws/lobby")]
    for path in ("/ws", "/echo", "/ws/lobby"):
        net.refused(srv, 429, "Overloaded", path)
    ev = expect_event(srv, "connection_limit", kind="ip")
    assert "127.0.0.1" in ev.values(), ev
    echo_ok(held[0], "a")
    Native(held[1]).ping()
    Native(held[2]).ping()
    b = [net.ok(srv, "/ws", src="127.0.0.2") for _ in range(3)]
    net.refused(srv, 429, "Overloaded", "/ws", src="127.0.0.2")
    net.ok(srv, "/ws", src="127.0.0.3")
    bye(held.pop(1))
    Native(net.poll_ok(srv, "/ws")).ping()
    net.refused(srv, 429, "Overloaded", "/ws")
    for ws in b:
        Native(ws).ping()


def test_per_ip_cap_zero_is_unlimited(server, net):
    srv = server("--ws-max-connections-per-ip", "0")
    conns = [net.ok(srv, "/echo") for _ in range(55)]
    for i, ws in enumerate(conns):
        echo_ok(ws, str(i))


def test_ipv6_loopback_is_counted(server, net):
    if not ipv6_available():
        pytest.skip("no IPv6 loopback")
    srv = server("--ws-max-connections-per-ip", "2", listen=["127.0.0.1:0", "[::1]:0"])
    a = net.ok(srv, "/echo", host="::1")
    b = net.ok(srv, "/ws", host="::1")
    net.refused(srv, 429, "Overloaded", "/echo", host="::1")
    net.refused(srv, 429, "Overloaded", "/ws", host="::1")
    expect_event(srv, "connection_limit", kind="ip")
    echo_ok(a, "v6")
    Native(b).ping()
    # IPv4 127.0.0.1 is another client than ::1
    net.ok(srv, "/echo", host="127.0.0.1")
    net.ok(srv, "/echo", host="127.0.0.1")
    net.refused(srv, 429, "Overloaded", "/echo", host="127.0.0.1")
    bye(a)
    echo_ok(net.poll_ok(srv, "/echo", host="::1"), "freed")


def test_ipv6_other_prefix_is_another_client(server, net):
    if not ipv6_available():
        pytest.skip("no IPv6 loopback")
    other = second_ipv6_address()
    if other is None:
        pytest.skip("this host has no second IPv6 address (outside ::/64) that reaches ::1")
    srv = server("--ws-max-connections-per-ip", "1", listen=["[::1]:0"])
    net.ok(srv, "/echo", host="::1", src="::1")
    net.refused(srv, 429, "Overloaded", "/echo", host="::1", src="::1")
    echo_ok(net.ok(srv, "/echo", host="::1", src=other), f"from {other}")
    net.refused(srv, 429, "Overloaded", "/echo", host="::1", src=other)


def test_ipv6_per_64_and_ipv4_mapped_via_trusted_proxy(server, net):
    """The server's IPv6 sockets are IPV6_V6ONLY, so a mapped address cannot
    arrive as a real peer here; a trusted proxy names the clients instead."""
    srv = server("--trusted-proxies", "127.0.0.1/32", "--ws-max-connections-per-ip", "1")
    # one /64 is one client
    net.ok(srv, "/echo", headers=xff("2001:db8:1:2::1"))
    net.refused(srv, 429, "Overloaded", headers=xff("2001:db8:1:2::ffff"))
    net.refused(srv, 429, "Overloaded", headers=xff("2001:db8:1:2:ffff:ffff:ffff:ffff"))
    net.ok(srv, "/echo", headers=xff("2001:db8:1:3::1"))
    net.ok(srv, "/echo", headers=xff("2001:db9:1:2::1"))
    # an IPv4-mapped address is the IPv4 address, counted alone (not per /64)
    net.ok(srv, "/echo", headers=xff("::ffff:198.51.100.9"))
    net.refused(srv, 429, "Overloaded", headers=xff("198.51.100.9"))
    net.ok(srv, "/echo", headers=xff("198.51.100.10"))
    net.refused(srv, 429, "Overloaded", headers=xff("::ffff:198.51.100.10"))
    net.ok(srv, "/echo", headers=xff("::ffff:198.51.100.11"))


# ---------------------------------------------------------------------------
# Global, per user, memory
# ---------------------------------------------------------------------------


def test_global_cap(server, net):
    srv = server("--workers", "2", "--ws-max-connections", "2")
    a = net.ok(srv, "/echo")
    b = Native(net.ok(srv, "/ws", src="127.0.0.2"))
    net.refused(srv, 503, "Overloaded", "/echo", retry_after=5)
    net.refused(srv, 503, "Overloaded", "/ws", retry_after=5, src="127.0.0.3")
    expect_event(srv, "connection_limit", kind="global")
    h = http_get(srv.port)
    assert h.status == 200, show(h)
    echo_ok(a, "still served")
    b.ping()
    b.echo({"k": [1, 2]})
    bye(a)
    echo_ok(net.poll_ok(srv, "/echo", refusal=503, src="127.0.0.4"), "freed")
    net.refused(srv, 503, "Overloaded", "/echo", retry_after=5)


def test_per_user_cap(server, net):
    srv = server("--auth-mode", "insecure", "--ws-max-connections-per-user", "2")
    a1 = Native(net.ok(srv, "/ws?user_id=alice"))
    a2 = Native(net.ok(srv, "/ws/lobby?user_id=alice", src="127.0.0.2"))
    assert a1.user() == "alice" and a2.user() == "alice"
    net.refused(srv, 429, "Overloaded", "/ws?user_id=alice")
    net.refused(srv, 429, "Overloaded", "/ws/lobby?user_id=alice", src="127.0.0.3")
    expect_event(srv, "connection_limit", kind="user")
    bob = Native(net.ok(srv, "/ws?user_id=bob"))
    assert bob.user() == "bob"
    Native(net.ok(srv, "/ws")).ping()  # anonymous: a user of its own
    a1.ping()
    a2.ping()
    bye(a1.ws)
    a3 = Native(net.poll_ok(srv, "/ws?user_id=alice"))
    assert a3.user() == "alice"
    net.refused(srv, 429, "Overloaded", "/ws?user_id=alice")


def test_per_user_cap_with_tokens_and_in_band_auth(server, net):
    srv = server("--auth-mode", "optional", "--jwt-secret", JWT_SECRET,
                 "--ws-max-connections-per-user", "1")
    tok = token_for("alice")
    a = Native(net.ok(srv, "/ws", headers=[("Authorization", f"Bearer {tok}")]))
    assert a.user() == "alice"
    net.refused(srv, 429, "Overloaded", "/ws", headers=[("Authorization", f"Bearer {tok}")])
    net.refused(srv, 429, "Overloaded", f"/ws?token={tok}", src="127.0.0.2")
    # in band past the cap: an Overloaded error, then close 1008
    anon = Native(net.ok(srv, "/ws"))
    anon.ws.send_json({"type": "auth", "id": 1, "token": tok})
    msgs, _, close = read_until_close(anon.ws)
    assert any(is_error(m, "Overloaded") for m in msgs), msgs
    assert close.close_code == 1008, close
    a.ping()


def test_memory_shedding(server, net):
    srv = server("--ws-shed-memory", "1")
    net.refused(srv, 503, "Overloaded", "/echo", retry_after=5)
    net.refused(srv, 503, "Overloaded", "/ws", retry_after=5)
    expect_event(srv, "connection_limit", kind="memory")
    h = http_get(srv.port)
    assert h.status == 200, show(h)


# ---------------------------------------------------------------------------
# Before the head is complete
# ---------------------------------------------------------------------------


def test_pending_handshakes_per_ip(server, net):
    srv = server("--workers", "1", "--ws-max-pending-handshakes-per-ip", "3")
    reqs, partial = [], []
    for _ in range(3):
        req, key = upgrade_request("/echo", f"127.0.0.1:{srv.port}")
        s = net.sock(srv.port)
        s.sendall(req[:20])  # "GET /echo HTTP/1.1\r\n" and no more
        reqs.append((req, key))
        partial.append(s)
    time.sleep(0.2)  # let the server take them in (not a bound on anything)
    fourth = net.sock(srv.port)
    try:
        resp = read_http_response(fourth, T(5))
    except (socket.timeout, TimeoutError):
        raise AssertionError("a 4th connection from an IP with 3 pending handshakes got no answer")
    check_refusal(resp, 429, None, None, "4th pending handshake from 127.0.0.1")
    closed, _ = wait_closed(fourth, T(5))
    assert closed, "the 4th connection stayed open after its 429"
    expect_event(srv, "connection_limit", kind="pending")
    # another IP is served meanwhile
    echo_ok(net.ok(srv, "/echo", src="127.0.0.2"), "served")
    # the three waiting ones are still served when their heads complete
    for s, (req, key) in zip(partial, reqs):
        s.sendall(req[20:])
        r = read_http_response(s, T(5))
        assert r.status == 101 and r.header("sec-websocket-accept") == ws_accept(key), show(r)
        ws = RawWebSocket(s, r, r.rest)
        echo_ok(ws, "completed late")
    # and nothing is pending from 127.0.0.1 any more
    echo_ok(net.ok(srv, "/echo"), "after")


def test_slow_loris_gets_408(server, net):
    srv = server("--handshake-timeout", "1")
    s = net.sock(srv.port, timeout=T(10))
    t0 = time.monotonic()
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
    resp = read_http_response(s, T(10))
    elapsed = time.monotonic() - t0
    assert resp.status == 408, show(resp)
    assert elapsed >= 0.8, f"408 after {elapsed:.2f}s with handshake_timeout 1"
    closed, _ = wait_closed(s, T(5))
    assert closed
    # a connection that sends nothing is closed without an answer
    quiet = net.sock(srv.port, timeout=T(10))
    closed, got = wait_closed(quiet, T(10))
    assert closed and (got == b"" or got.startswith(b"HTTP/1.1 408")), got[:200]
    echo_ok(net.ok(srv, "/echo"), "others are served")


# ---------------------------------------------------------------------------
# Connection rate
# ---------------------------------------------------------------------------


def test_connection_rate_per_ip(server, net):
    srv = server("--ws-connection-rate-limit", "3", "--ws-connection-rate-window-ms", "60000")
    for i in range(3):
        ws = net.ok(srv, "/echo")
        echo_ok(ws, str(i))
        bye(ws)
    resp = net.refused(srv, 429, "RateLimitExceeded", "/echo", retry_after="any")
    assert int(resp.header("retry-after")) <= 60, show(resp)
    net.refused(srv, 429, "RateLimitExceeded", "/ws", retry_after="any")
    expect_event(srv, "connection_limit", kind="rate")
    echo_ok(net.ok(srv, "/echo", src="127.0.0.2"), "another IP")
    Native(net.ok(srv, "/ws", src="127.0.0.2")).ping()


# ---------------------------------------------------------------------------
# Origin
# ---------------------------------------------------------------------------


def origin(value: str) -> list[tuple[str, str]]:
    return [("Origin", value)]


def test_allowed_origins(server, net):
    srv = server("--allowed-origins", "https://app.example.com, https://*.example.org")
    for o in ("https://app.example.com", "HTTPS://App.Example.COM", "https://x.example.org"):
        echo_ok(net.ok(srv, "/echo", headers=origin(o)), o)
    echo_ok(net.ok(srv, "/echo"), "no Origin")
    Native(net.ok(srv, "/ws", headers=origin("https://app.example.com"))).ping()
    for o in ("https://evil.example.com", "http://app.example.com", "https://app.example.com:8443",
              "https://app.example.com.evil.net", "http://x.example.org",
              "https://x.example.org:8443", "null"):
        net.refused(srv, 403, "Forbidden", "/echo", headers=origin(o))
    net.refused(srv, 403, "Forbidden", "/ws", headers=origin("https://evil.example.com"))
    expect_event(srv, "origin_rejected")


def test_cookie_token_requires_same_origin(server, net):
    srv = server("--auth-mode", "optional", "--jwt-secret", JWT_SECRET)
    tok = token_for("alice")
    same = f"http://127.0.0.1:{srv.port}"
    cookie = [("Cookie", f"theme=dark; token={tok}")]
    a = Native(net.ok(srv, "/ws", headers=cookie + origin(same)))
    assert a.user() == "alice"
    net.refused(srv, 403, "Forbidden", "/ws", headers=cookie + origin("https://evil.example.com"))
    net.refused(srv, 403, "Forbidden", "/ws",
                headers=cookie + origin(f"http://127.0.0.1:{srv.port + 1 if srv.port < 65535 else 1}"))
    net.refused(srv, 403, "Forbidden", "/ws", headers=cookie + origin(f"http://127.0.0.2:{srv.port}"))
    expect_event(srv, "origin_rejected")
    # no Origin: not a browser, not checked
    assert Native(net.ok(srv, "/ws", headers=cookie)).user() == "alice"
    # a Bearer token is not sent by a browser on its own: any origin
    bearer = [("Authorization", f"Bearer {tok}")]
    assert Native(net.ok(srv, "/ws", headers=bearer + origin("https://evil.example.com"))).user() == "alice"
    # the Bearer header is looked at first, so the cookie is not used at all
    assert Native(net.ok(srv, "/ws", headers=bearer + cookie
                         + origin("https://evil.example.com"))).user() == "alice"
    # no token, no list: any origin
    Native(net.ok(srv, "/ws", headers=origin("https://evil.example.com"))).ping()


# ---------------------------------------------------------------------------
# The order of the checks
# ---------------------------------------------------------------------------


def test_check_order(server, net):
    evil = origin("https://evil.example.com")
    bad_token = [("Authorization", "Bearer not.a.token")]
    # memory before origin
    srv = server("--ws-shed-memory", "1", "--allowed-origins", "https://app.example.com")
    net.refused(srv, 503, "Overloaded", headers=evil, retry_after=5)
    # global before origin
    srv = server("--ws-max-connections", "1", "--allowed-origins", "https://app.example.com")
    net.ok(srv, "/echo")
    net.refused(srv, 503, "Overloaded", headers=evil, retry_after=5)
    # origin before rate, rate before per IP and token
    srv = server("--allowed-origins", "https://app.example.com", "--jwt-secret", JWT_SECRET,
                 "--ws-connection-rate-limit", "1", "--ws-connection-rate-window-ms", "60000",
                 "--ws-max-connections-per-ip", "1")
    net.ok(srv, "/ws")
    net.refused(srv, 403, "Forbidden", "/ws", headers=evil + bad_token)
    net.refused(srv, 429, "RateLimitExceeded", "/ws", retry_after="any",
                headers=origin("https://app.example.com") + bad_token)
    # per IP before token, token before per user
    srv = server("--jwt-secret", JWT_SECRET, "--ws-max-connections-per-ip", "1",
                 "--ws-max-connections-per-user", "1")
    alice = [("Authorization", f"Bearer {token_for('alice')}")]
    net.ok(srv, "/ws", headers=alice)
    net.refused(srv, 429, "Overloaded", "/ws", headers=bad_token)
    r = net.refused(srv, 401, "Unauthorized", "/ws", headers=bad_token, src="127.0.0.2")
    www = r.header("www-authenticate") or ""
    assert www.startswith("Bearer") and 'error="invalid_token"' in www, show(r)
    net.refused(srv, 429, "Overloaded", "/ws", headers=alice, src="127.0.0.2")


# ---------------------------------------------------------------------------
# Behind a proxy
# ---------------------------------------------------------------------------


def test_forwarded_headers_ignored_without_trusted_proxies(server, net):
    srv = server("--ws-max-connections-per-ip", "1")
    echo_ok(net.ok(srv, "/echo", headers=xff("203.0.113.9")), "x")
    net.refused(srv, 429, "Overloaded", headers=xff("203.0.113.10"))
    net.refused(srv, 429, "Overloaded", headers=fwd("for=203.0.113.11"))
    ev = expect_event(srv, "connection_limit", kind="ip")
    assert "203.0.113.10" not in ev.values(), ev


def test_x_forwarded_for_from_trusted_proxy(server, net):
    srv = server("--trusted-proxies", "127.0.0.1/32", "--ws-max-connections-per-ip", "1")
    a = net.ok(srv, "/echo", headers=xff("203.0.113.9"))
    b = Native(net.ok(srv, "/ws", headers=xff("203.0.113.10")))
    net.refused(srv, 429, "Overloaded", "/ws", headers=xff("203.0.113.9"))
    expect_event(srv, "connection_limit", "203.0.113.9", kind="ip")
    echo_ok(a, "via proxy")
    b.ping()
    # from an untrusted peer the header is ignored: counted as 127.0.0.2
    net.ok(srv, "/echo", src="127.0.0.2", headers=xff("203.0.113.11"))
    net.refused(srv, 429, "Overloaded", src="127.0.0.2", headers=xff("203.0.113.12"))
    # walked from the right: the first untrusted address is the client
    net.ok(srv, "/echo", headers=xff("198.51.100.1, 203.0.113.20"))
    net.refused(srv, 429, "Overloaded", headers=xff("203.0.113.20"))
    net.ok(srv, "/echo", headers=xff("203.0.113.21, 127.0.0.1"))
    net.refused(srv, 429, "Overloaded", headers=xff("203.0.113.21"))
    # a client cannot pick someone else's address by prepending it
    net.ok(srv, "/echo", headers=xff("203.0.113.9, 203.0.113.22"))
    net.refused(srv, 429, "Overloaded", headers=xff("198.51.100.99, 203.0.113.22"))


def test_forwarded_header_from_trusted_proxy(server, net):
    srv = server("--trusted-proxies", "127.0.0.1/32", "--trusted-proxy-header", "forwarded",
                 "--ws-max-connections-per-ip", "1")
    a = net.ok(srv, "/echo", headers=fwd('for="[2001:db8::1]"'))
    echo_ok(a, "v6 client")
    net.refused(srv, 429, "Overloaded", headers=fwd('for="[2001:db8::2]:4711"'))  # same /64
    expect_event(srv, "connection_limit", kind="ip")
    net.ok(srv, "/echo", headers=fwd('for="[2001:db8:0:1::1]"'))
    net.ok(srv, "/echo", headers=fwd("for=198.51.100.7;proto=https"))
    net.refused(srv, 429, "Overloaded", headers=fwd('for="198.51.100.7:1234"'))
    net.ok(srv, "/echo", headers=fwd("for=192.0.2.43, for=198.51.100.8"))
    net.refused(srv, 429, "Overloaded", headers=fwd("for=198.51.100.8"))
    # with this header chosen, X-Forwarded-For is nobody's word: 127.0.0.1
    net.ok(srv, "/echo", headers=xff("203.0.113.50"))
    net.refused(srv, 429, "Overloaded", headers=xff("203.0.113.51"))


def expect_dropped(net: Net, srv, data: bytes, what: str, src: str | None = None) -> bytes:
    """Send data; the server must close the connection without a 101 (or
    any success)."""
    s = net.sock(srv.port, src=src)
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    closed, got = wait_closed(s, T(5))
    s.close()
    assert closed, f"{what}: connection still open; got {got[:200]!r}"
    assert not got.startswith(b"HTTP/1.1 101") and not got.startswith(b"HTTP/1.1 200"), (
        f"{what}: served: {got[:200]!r}")
    return got


def test_proxy_protocol(server, net):
    srv = server("--proxy-protocol", "true", "--trusted-proxies", "127.0.0.1/32",
                 "--ws-max-connections-per-ip", "1")
    # v1
    a = net.ok(srv, "/echo", prefix=proxy_v1("198.51.100.7", "10.0.0.1", 5555, 80))
    echo_ok(a, "behind haproxy")
    net.refused(srv, 429, "Overloaded", prefix=proxy_v1("198.51.100.7", "10.0.0.1", 5556, 80))
    expect_event(srv, "connection_limit", "198.51.100.7", kind="ip")
    Native(net.ok(srv, "/ws", prefix=proxy_v1("198.51.100.8", "10.0.0.1"))).ping()
    net.ok(srv, "/echo", prefix=proxy_v1("2001:db8:5::1", "2001:db8::2"))
    net.refused(srv, 429, "Overloaded", prefix=proxy_v1("2001:db8:5::2", "2001:db8::2"))
    # v2
    b = net.ok(srv, "/echo", prefix=proxy_v2("198.51.100.20", "10.0.0.1", 40000, 443))
    echo_ok(b, "v2")
    net.refused(srv, 429, "Overloaded", prefix=proxy_v2("198.51.100.20", "10.0.0.1", 40001, 443))
    net.ok(srv, "/echo", prefix=proxy_v2("2001:db8::7", "2001:db8::1"))
    net.refused(srv, 429, "Overloaded", prefix=proxy_v2("2001:db8::8", "2001:db8::1"))  # same /64
    net.ok(srv, "/echo", prefix=proxy_v2("::ffff:198.51.100.30", "::ffff:10.0.0.1"))
    net.refused(srv, 429, "Overloaded", prefix=proxy_v1("198.51.100.30", "10.0.0.1"))  # mapped
    # a trusted peer must send the header
    req, _ = upgrade_request("/echo", f"127.0.0.1:{srv.port}")
    expect_dropped(net, srv, req, "upgrade from a trusted peer without a PROXY header")
    expect_dropped(net, srv, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                   "GET /healthz from a trusted peer without a PROXY header")
    expect_dropped(net, srv, b"PROXY TCP4 999.1.1.1 10.0.0.1 5555 80\r\n" + req,
                   "malformed PROXY v1 header")
    expect_dropped(net, srv, PROXY_V2_SIG + b"\x21\x11\x00\x04\x01\x02\x03\x04" + req,
                   "PROXY v2 header too short for its family")
    expect_event(srv, "proxy_header_invalid")
    # an untrusted peer is a direct client: a PROXY line is a bad request
    net.refused(srv, 400, "BadRequest", src="127.0.0.2",
                prefix=proxy_v1("198.51.100.40", "10.0.0.1"))
    echo_ok(net.ok(srv, "/echo", src="127.0.0.2"), "direct")
    net.refused(srv, 429, "Overloaded", src="127.0.0.2")
    echo_ok(a, "still here")
    echo_ok(b, "still here")


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------

RATE10 = ("--ws-message-rate-limit", "10", "--ws-rate-window-ms", "60000")


def test_message_rate_close_policy(server, net):
    srv = server(*RATE10)
    c = Native(net.ok(srv, "/ws"))
    for i in range(1, 8):
        c.echo(i, rid=i)
    assert not any(is_warning(m) for m in c.inbox), f"warned before 80 %: {c.inbox}"
    c.echo(8, rid=8)
    w = c.next(is_warning, T(3))
    assert isinstance(w.get("message"), str), w
    c.echo(9, rid=9)
    c.echo(10, rid=10)
    c.ws.send_json({"type": "echo", "id": 11, "data": 11})
    msgs, _, close = read_until_close(c.ws)
    msgs = c.inbox + msgs
    errors = [m for m in msgs if is_error(m, "RateLimitExceeded")]
    assert errors, f"no RateLimitExceeded error before the close: {msgs}"
    assert not any(m.get("type") == "echo_response" and m.get("id") == 11 for m in msgs), msgs
    assert close.close_code == 1008, close
    expect_event(srv, "rate_limited", policy="close")
    # the others are not affected
    Native(net.ok(srv, "/ws")).ping()


def test_message_rate_counts_control_frames(server, net):
    srv = server(*RATE10)
    # pings
    ws = net.ok(srv, "/ws")
    texts = []
    for i in range(10):
        ws.send_frame(OP_PING, f"p{i}".encode())
        for _ in range(10):
            f = ws.recv_frame(T(5))
            if f.opcode == OP_TEXT:
                texts.append(json.loads(f.payload))
                continue
            assert f.opcode == OP_PONG and f.payload == f"p{i}".encode(), f
            break
    assert any(is_warning(m) for m in texts), texts
    ws.send_frame(OP_PING, b"p10")
    msgs, others, close = read_until_close(ws)
    assert any(is_error(m, "RateLimitExceeded") for m in msgs), msgs
    assert not any(f.opcode == OP_PONG and f.payload == b"p10" for f in others), others
    assert close.close_code == 1008, close
    # unsolicited pongs
    ws = net.ok(srv, "/ws")
    ws.send_raw(b"".join(build_frame(OP_PONG, f"q{i}".encode()) for i in range(11)))
    msgs, _, close = read_until_close(ws)
    assert any(is_warning(m) for m in msgs), msgs
    assert any(is_error(m, "RateLimitExceeded") for m in msgs), msgs
    assert close.close_code == 1008, close


def test_message_rate_throttle_policy(server, net):
    srv = server("--ws-rate-limit-policy", "throttle", "--ws-message-rate-limit", "5",
                 "--ws-rate-window-ms", "1000")
    c = Native(net.ok(srv, "/ws"))
    reqs = []
    for i in range(1, 11):
        reqs.append({"type": "echo", "id": i, "data": i} if i % 2 else {"type": "ping", "id": i})
    t0 = time.monotonic()
    c.ws.send_raw(b"".join(build_frame(OP_TEXT, json.dumps(r).encode()) for r in reqs))
    replies = []
    deadline = time.monotonic() + T(15)
    while len(replies) < 10:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(replies)} of 10 replies: {replies} (others {c.inbox})"
        m = c.ws.recv_json(left)
        assert m.get("type") != "error", f"throttle answered with an error: {m}"
        if "id" in m:
            replies.append(m)
        else:
            c.inbox.append(m)
    elapsed = time.monotonic() - t0
    assert [m["id"] for m in replies] == list(range(1, 11)), replies
    for r, m in zip(reqs, replies):
        assert m["type"] == ("pong" if r["type"] == "ping" else "echo_response"), (r, m)
    assert elapsed >= 0.5, f"10 messages at 5 per second all answered in {elapsed:.2f}s"
    c.ping()  # still open
    expect_event(srv, "rate_limited", policy="throttle")


def test_message_too_large_decided_from_the_header(server, net):
    srv = server("--ws-max-message-size", "1024")
    c = Native(net.ok(srv, "/ws"))
    # exactly at the limit is fine
    base = json.dumps({"type": "echo", "id": "big", "data": ""}, separators=(",", ":"))
    msg = json.dumps({"type": "echo", "id": "big", "data": "x" * (1024 - len(base))},
                     separators=(",", ":"))
    assert len(msg) == 1024
    c.ws.send_text(msg)
    r = c.reply_to("big")
    assert r["type"] == "echo_response" and len(r["data"]) == 1024 - len(base), r
    # a header announcing 2000 bytes, and nothing after it
    c.ws.send_raw(frame_header(OP_TEXT, 2000, mask_key=os.urandom(4)))
    msgs, _, close = read_until_close(c.ws)
    assert any(is_error(m, "MessageTooLarge") for m in msgs), msgs
    assert close.close_code == 1009, close
    # one byte over, header only, 64-bit length form
    d = net.ok(srv, "/ws")
    d.send_raw(frame_header(OP_TEXT, 1025, mask_key=os.urandom(4), length_form="64"))
    msgs, _, close = read_until_close(d)
    assert any(is_error(m, "MessageTooLarge") for m in msgs), msgs
    assert close.close_code == 1009, close
    # the server keeps serving
    other = Native(net.ok(srv, "/ws"))
    other.ping()
    other.echo("fine")


def test_echo_endpoint_is_not_rate_limited(server, net):
    srv = server(*RATE10)
    e = net.ok(srv, "/echo")
    for i in range(50):
        echo_ok(e, f"message {i}")
    e.send_raw(b"".join(build_frame(OP_PING, f"p{i}".encode()) for i in range(20)))
    # a pong still waiting may be replaced by a newer one (RFC 6455 5.5.3),
    # but the last ping is answered and the connection stays
    pongs = []
    while b"p19" not in pongs:
        assert len(pongs) < 20, pongs
        f = e.recv_frame(T(5))
        assert f.opcode == OP_PONG, f
        pongs.append(f.payload)
    echo_ok(e, "still open")
    # the option is in force on the native endpoint of the same server
    ws = net.ok(srv, "/ws")
    ws.send_raw(b"".join(build_frame(OP_TEXT, json.dumps({"type": "ping", "id": i}).encode())
                         for i in range(11)))
    msgs, _, close = read_until_close(ws)
    assert any(is_error(m, "RateLimitExceeded") for m in msgs), msgs
    assert close.close_code == 1008, close
