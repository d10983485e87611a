"""The hub and the native JSON protocol (/ws, /ws/{room}) against the real
server, always with two workers.

Two connections land on different workers only by chance (the kernel's
SO_REUSEPORT hash of the 4-tuple), so `open_on_worker` probes: it opens a
bare /ws connection, reads its worker from the status response (connection
ids are 16 hex digits, the top 16 bits are the worker), and when it is the
wanted one, drops the probe with a RST (no TIME_WAIT) and connects again
from the same source port, which the kernel hashes to the same worker.  The
real connection then opens its own path (/ws/{room}, a user) exactly once,
so a test sees no stray join/online/offline events from the probing.

"Nothing else arrived" is checked with markers rather than sleeps: a
channel's messages and presence events reach every subscriber in the
channel's order, so after publishing a marker to the channel, whatever a
subscriber receives before the marker is all it was sent before it.  A
publish without a channel (to everyone) is the marker for connections in
no channel.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
import urllib.parse
from collections import deque

import pytest

from conduit_harness import (
    OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, ConnectionClosed,
    RawWebSocket, T, read_http_response, set_linger_reset, upgrade_request,
    wait_closed, ws_accept,
)

W2 = ("--workers", "2")
INSECURE = ("--auth-mode", "insecure")

# ---------------------------------------------------------------------------
# A native-protocol client
# ---------------------------------------------------------------------------


class Msg(dict):
    """A received JSON object; .raw holds the exact bytes of the message."""
    raw: bytes = b""


_ids = itertools.count(1)


class Client:
    """A RawWebSocket speaking the native protocol.

    request() sends with an id and returns the one reply carrying that id;
    everything else that arrives meanwhile waits in the inbox for next() /
    until_marker() / drain_quiet().  Every read has a deadline."""

    def __init__(self, ws: RawWebSocket, label: str = ""):
        self.ws = ws
        self.label = label
        self.inbox: deque[Msg] = deque()
        self.conn_id: str | None = None
        self.user: str | None = None

    # -- low level --------------------------------------------------------

    def send(self, obj) -> None:
        self.ws.send_json(obj)

    def send_text(self, text: str | bytes) -> None:
        self.ws.send_text(text)

    def _recv(self, timeout: float) -> Msg:
        op, data = self.ws.recv_message(max(0.001, timeout), auto_pong=True)
        assert op == OP_TEXT, f"{self.label}: expected a text message, got opcode {op}"
        m = Msg(json.loads(data.decode("utf-8")))
        m.raw = data
        return m

    # -- requests -----------------------------------------------------------

    def request(self, obj: dict, timeout: float | None = None) -> Msg:
        obj = dict(obj)
        obj.setdefault("id", f"r{next(_ids)}")
        self.send(obj)
        return self.reply_to(obj["id"], timeout)

    def reply_to(self, rid, timeout: float | None = None) -> Msg:
        """The reply carrying id `rid` (same value and JSON type)."""
        deadline = time.monotonic() + (timeout if timeout is not None else T(5))
        for _ in range(100000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                m = self._recv(left)
            except (socket.timeout, TimeoutError):
                break
            if "id" in m and m["id"] == rid and type(m["id"]) is type(rid):
                return m
            self.inbox.append(m)
        raise AssertionError(f"{self.label}: no reply with id {rid!r}; inbox: {list(self.inbox)[-5:]}")

    def expect_error(self, obj: dict, code: str) -> Msg:
        r = self.request(obj)
        assert r["type"] == "error", f"{obj} -> {r}"
        assert r["error"]["code"] == code, f"{obj} -> {r}"
        assert isinstance(r["error"]["message"], str) and r["error"]["message"]
        return r

    def status(self) -> Msg:
        r = self.request({"type": "status"})
        assert r["type"] == "status_response", r
        self.conn_id = r["connection"]["id"]
        self.user = r["connection"]["user"]
        return r

    @property
    def worker(self) -> int:
        if self.conn_id is None:
            self.status()
        return worker_of(self.conn_id)

    def channels(self) -> list[str]:
        return sorted(self.status()["connection"]["channels"])

    def subscribe(self, *channels: str, kind: str = "subscribe") -> Msg:
        r = self.request({"type": kind, "channels": list(channels)})
        assert r["type"] == f"{kind}_response", r
        return r

    def publish(self, channel: str | None, data, **extra) -> Msg:
        req = {"type": "publish", "data": data, **extra}
        if channel is not None:
            req["channel"] = channel
        r = self.request(req)
        assert r["type"] == "publish_response", r
        return r

    # -- events ---------------------------------------------------------------

    def next(self, pred=None, timeout: float | None = None) -> Msg:
        """The first message (inbox first) that satisfies pred; the others
        stay in the inbox."""
        pred = pred or (lambda m: True)
        for i, m in enumerate(self.inbox):
            if pred(m):
                del self.inbox[i]
                return m
        deadline = time.monotonic() + (timeout if timeout is not None else T(5))
        for _ in range(1000000):
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
        raise AssertionError(f"{self.label}: no matching message; inbox: {list(self.inbox)[-5:]}")

    def until(self, pred, timeout: float | None = None, limit: int = 100000) -> list[Msg]:
        """Everything up to and including the first message satisfying pred
        (inbox first); the inbox is consumed."""
        out: list[Msg] = []
        while self.inbox:
            m = self.inbox.popleft()
            out.append(m)
            if pred(m):
                return out
        deadline = time.monotonic() + (timeout if timeout is not None else T(5))
        while len(out) < limit:
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
        raise AssertionError(f"{self.label}: marker never arrived; got {out[-5:]} ({len(out)} messages)")

    def until_marker(self, token: str, timeout: float | None = None) -> list[Msg]:
        """Messages received before the marker `token` (the marker excluded)."""
        got = self.until(lambda m: is_marker(m, token), timeout)
        return got[:-1]

    def drain_quiet(self, seconds: float) -> list[Msg]:
        """Inbox plus whatever arrives within `seconds`."""
        out = list(self.inbox)
        self.inbox.clear()
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                out.append(self._recv(left))
            except (socket.timeout, TimeoutError):
                return out

    # -- closing --------------------------------------------------------------

    def close(self, code: int = 1000) -> None:
        """Orderly close: send close, read (discarding data) until the
        server's close, require TCP to end."""
        try:
            self.ws.send_close(code)
            self.ws.expect_close(None, timeout=T(5), allow_data=True, reply=False)
        finally:
            self.ws.close_socket()

    def abort(self) -> None:
        """Vanish: RST, no close frame."""
        try:
            set_linger_reset(self.ws.sock)
        except OSError:
            pass
        self.ws.close_socket()

    def alive(self) -> bool:
        r = self.request({"type": "ping"})
        return r["type"] == "pong"


def worker_of(conn_id: str) -> int:
    assert len(conn_id) == 16, conn_id
    return int(conn_id, 16) >> 48


def is_marker(m: dict, token: str) -> bool:
    return m.get("type") == "message" and m.get("data") == {"marker": token}


def messages(msgs: list[Msg]) -> list[Msg]:
    return [m for m in msgs if m.get("type") == "message"]


def presence_events(msgs: list[Msg]) -> list[tuple[str, str, str]]:
    return [(m["channel"], m["user"], m["state"]) for m in msgs if m.get("type") == "presence"]


_markers = itertools.count(1)


def publish_marker(via: Client, channel: str | None) -> str:
    """Publish a marker to `channel` (None: to everyone); returns its token."""
    token = f"m{next(_markers)}"
    via.publish(channel, {"marker": token})
    return token


def sync_channel(via: Client, channel: str, members: list[Client]) -> list[list[Msg]]:
    """Publish a marker to `channel` from `via`; return, per member, what
    it received before the marker."""
    token = publish_marker(via, channel)
    return [c.until_marker(token) for c in members]


def sync_everyone(via: Client, clients: list[Client]) -> list[list[Msg]]:
    token = publish_marker(via, None)
    return [c.until_marker(token) for c in clients]


# ---------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------


def with_user(path: str, user: str | None) -> str:
    if user is None:
        return path
    return path + ("&" if "?" in path else "?") + "user_id=" + urllib.parse.quote(user, safe="")


def raw_connect(srv, path: str, src_port: int = 0, rcvbuf: int | None = None,
                protocols: str | None = None, expect_status: int = 101) -> RawWebSocket:
    """RawWebSocket.connect, plus a chosen source port and receive buffer."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(T(5))
        s.bind(("127.0.0.1", src_port))
        s.connect((srv.host, srv.port))
        req, key = upgrade_request(path, f"{srv.host}:{srv.port}", protocols=protocols)
        s.sendall(req)
        resp = read_http_response(s, T(5), read_body=False)
    except BaseException:
        s.close()
        raise
    if resp.status != expect_status:
        s.close()
        raise AssertionError(f"{path}: expected HTTP {expect_status}, got {resp.raw_head!r}")
    if resp.status == 101:
        assert resp.header("sec-websocket-accept") == ws_accept(key)
    return RawWebSocket(s, resp, resp.rest)


def open_client(srv, path: str = "/ws", user: str | None = None, label: str = "",
                **kw) -> Client:
    c = Client(raw_connect(srv, with_user(path, user), **kw), label or user or path)
    return c


def open_on_worker(srv, worker: int, path: str = "/ws", user: str | None = None,
                   label: str = "", rcvbuf: int | None = None) -> Client:
    """A connection opened on `worker` (see the module docstring)."""
    for attempt in range(64):
        probe = Client(raw_connect(srv, "/ws"), "probe")
        w = probe.worker
        port = probe.ws.sock.getsockname()[1]
        probe.abort()
        if w != worker:
            continue
        try:
            ws = raw_connect(srv, with_user(path, user), src_port=port, rcvbuf=rcvbuf)
        except OSError:
            continue  # the port was taken meanwhile: probe again
        c = Client(ws, label or f"{user or path}@w{worker}")
        assert c.worker == worker, (
            f"source port {port} reached worker {c.worker} after the probe reached "
            f"{worker}: SO_REUSEPORT selection is not a function of the 4-tuple here")
        return c
    raise AssertionError(f"no connection reached worker {worker} in 64 attempts")


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------------------
# Endpoints, subprotocol, identity
# ---------------------------------------------------------------------------


def test_subprotocol_negotiation(server):
    srv = server(*W2)
    ws = raw_connect(srv, "/ws")
    assert ws.response.header("sec-websocket-protocol") is None
    Client(ws).alive()
    ws.close_socket()
    for offer in ("conduit.v1.json", "x.other, conduit.v1.json", "conduit.v1.json, x.other"):
        ws = raw_connect(srv, "/ws", protocols=offer)
        assert ws.response.header("sec-websocket-protocol") == "conduit.v1.json", offer
        Client(ws).alive()
        ws.close_socket()
    for offer in ("x.other", "conduit.v1.protobuf-nope, chat"):
        ws = raw_connect(srv, "/ws", protocols=offer, expect_status=400)
        ws.close_socket()
    # the same on /ws/{room}
    ws = raw_connect(srv, "/ws/lobby", protocols="conduit.v1.json")
    assert ws.response.header("sec-websocket-protocol") == "conduit.v1.json"
    ws.close_socket()
    raw_connect(srv, "/ws/lobby", protocols="nope", expect_status=400).close_socket()


def test_room_path(server):
    srv = server(*W2)
    c = open_client(srv, "/ws/lobby")
    assert c.channels() == ["lobby"]
    # one percent-decoded path segment
    c2 = open_client(srv, "/ws/team%3Ablue")
    assert c2.channels() == ["team:blue"]
    c3 = open_client(srv, "/ws/a%2Fb")
    assert c3.channels() == ["a/b"]
    c4 = open_client(srv, "/ws/" + "r" * 255)
    assert c4.channels() == ["r" * 255]
    # a message to the decoded room reaches the path-joined member
    c2.publish("team:blue", "hi")
    m = c2.next(lambda m: m.get("type") == "message")
    assert m["channel"] == "team:blue" and m["data"] == "hi"
    for bad in ("/ws/a%20b", "/ws/caf%C3%A9", "/ws/" + "r" * 256, "/ws/a/b", "/ws/a%22b",
                "/ws/a%00b", "/ws/%"):
        raw_connect(srv, bad, expect_status=400).close_socket()
    for c_ in (c, c2, c3, c4):
        c_.close()


def test_auth_optional_ignores_user_id(server):
    srv = server(*W2)
    c = open_client(srv, "/ws?user_id=mallory")
    st = c.status()
    cid = st["connection"]["id"]
    assert st["connection"]["user"] == "anon-%x" % int(cid, 16)
    hello = c.request({"type": "hello", "version": "1"})
    assert hello["user"] == st["connection"]["user"]
    other = open_client(srv, "/ws")
    assert other.status()["connection"]["user"] != st["connection"]["user"]
    assert not any(e.get("event") in ("insecure_auth_mode", "insecure_user_id") for e in srv.events)


def test_auth_insecure_takes_user_id_and_warns(server):
    srv = server(*W2, *INSECURE)
    ev = srv.wait_for_event(lambda e: e.get("event") == "insecure_auth_mode", T(3))
    assert ev is not None and ev.get("level") == "warn", srv.stderr_tail()
    c = open_client(srv, "/ws", user="alice smith")
    assert c.status()["connection"]["user"] == "alice smith"
    ev = srv.wait_for_event(lambda e: e.get("event") == "insecure_user_id"
                            and e.get("user") == "alice smith", T(3))
    assert ev is not None and ev.get("level") == "warn"
    r = open_client(srv, "/ws/lobby", user="bob")
    assert r.status()["connection"]["user"] == "bob"
    assert srv.wait_for_event(lambda e: e.get("event") == "insecure_user_id"
                              and e.get("user") == "bob", T(3))


def test_auth_required_refuses_every_upgrade(server):
    srv = server(*W2, "--auth-mode", "required")
    for path in ("/ws", "/ws/lobby", "/ws?user_id=alice"):
        raw_connect(srv, path, expect_status=401).close_socket()


# ---------------------------------------------------------------------------
# hello, ping, echo, status
# ---------------------------------------------------------------------------


def test_hello(server):
    srv = server(*W2, "--ws-max-subscriptions-per-connection", "17",
                 "--ws-typing-rate-limit", "4", "--ws-typing-rate-window-ms", "2500")
    c = open_client(srv)
    r = c.request({"type": "hello", "version": "1", "id": 1})
    assert r["type"] == "hello_response" and r["id"] == 1
    st = c.status()
    assert r["session"] and isinstance(r["session"], str)
    assert r["user"] == st["connection"]["user"]
    assert r["protocol"] == "conduit.v1.json"
    assert r["version"] == "1"
    assert isinstance(r["heartbeat_ms"], int) and r["heartbeat_ms"] > 0
    lim = r["limits"]
    assert set(lim) >= {"max_message_size", "max_subscriptions", "typing_rate_limit",
                        "typing_rate_window_ms"}
    assert lim["max_subscriptions"] == 17
    assert lim["typing_rate_limit"] == 4
    assert lim["typing_rate_window_ms"] == 2500
    assert isinstance(lim["max_message_size"], int) and lim["max_message_size"] > 0
    for v in ("2", "0", "1.0", "", "v1"):
        c.expect_error({"type": "hello", "version": v}, "UnsupportedVersion")
    assert c.alive()


def test_ping_and_echo(server):
    srv = server(*W2)
    c = open_client(srv)
    before = int(time.time() * 1000)
    r = c.request({"type": "ping", "id": 9})
    after = int(time.time() * 1000)
    assert r["type"] == "pong" and r["id"] == 9
    assert before - 2000 <= r["ts"] <= after + 2000
    # echo: the data comes back as the bytes that were sent
    for data in ('1.50', '{"a":[1.50,1e3,-0.0,"\\u00e9\\n"],"b":{}}', '"x"', 'null',
                 'true', '[ 1 , 2 ]', '12345678901234567890123'):
        c.send_text('{"type":"echo","id":"e","data":%s}' % data)
        r = c.reply_to("e")
        assert r["type"] == "echo_response"
        assert b'"data":' + data.encode() in r.raw, (data, r.raw)
        assert r["data"] == json.loads(data)


def test_status(server):
    srv = server(*W2, *INSECURE)
    a = open_on_worker(srv, 0, "/ws/lobby", user="alice")
    b = open_on_worker(srv, 1, "/ws", user="bob")
    b.subscribe("x", "y")
    r = a.request({"type": "status", "id": "s1"})
    assert r["type"] == "status_response" and r["id"] == "s1"
    conn = r["connection"]
    assert set(conn) == {"id", "user", "channels", "credit", "queued"}
    assert len(conn["id"]) == 16 and worker_of(conn["id"]) == 0
    assert conn["user"] == "alice"
    assert conn["channels"] == ["lobby"]
    assert conn["credit"] is None
    assert isinstance(conn["queued"], int) and conn["queued"] >= 0
    srv_ = r["server"]
    assert set(srv_) >= {"connections", "channels", "uptime_s", "workers", "version"}
    wait_for(lambda: a.status()["server"]["connections"] == 2, T(5), "probes gone")
    assert srv_["channels"] == 3
    assert srv_["workers"] == 2
    assert isinstance(srv_["uptime_s"], int) and 0 <= srv_["uptime_s"] < 600
    assert isinstance(srv_["version"], str) and srv_["version"]
    rb = b.status()
    assert worker_of(rb["connection"]["id"]) == 1
    assert sorted(rb["connection"]["channels"]) == ["x", "y"]
    assert rb["connection"]["id"] != conn["id"]
    b.close()
    wait_for(lambda: a.status()["server"]["connections"] == 1, T(5), "connections == 1")
    assert a.status()["server"]["channels"] == 1


# ---------------------------------------------------------------------------
# Join and leave
# ---------------------------------------------------------------------------


def test_join_and_leave(server):
    srv = server(*W2, *INSECURE)
    a = open_on_worker(srv, 0, user="alice")
    b = open_on_worker(srv, 1, user="bob")
    assert a.channels() == []
    r = a.request({"type": "subscribe", "channel": "one", "id": 1})
    assert r == {"type": "subscribe_response", "id": 1, "channels": ["one"]}
    r = a.request({"type": "subscribe", "channels": ["two", "three"], "id": 2})
    assert r["type"] == "subscribe_response" and sorted(r["channels"]) == ["three", "two"]
    r = a.request({"type": "join_room", "room": "four", "id": 3})
    assert r == {"type": "join_room_response", "id": 3, "channels": ["four"]}
    assert a.channels() == ["four", "one", "three", "two"]
    # idempotent: subscribing again is fine and changes nothing
    r = a.request({"type": "subscribe", "channel": "one"})
    assert r["type"] == "subscribe_response" and r["channels"] == ["one"]
    r = a.request({"type": "join_room", "room": "four"})
    assert r["type"] == "join_room_response"
    assert a.channels() == ["four", "one", "three", "two"]
    p = a.request({"type": "presence", "channel": "one"})
    assert p["members"] == [{"user": "alice", "connections": 1}]
    assert a.status()["server"]["channels"] == 4

    # b joins "one" too (other worker); a leaves it; b still gets messages there
    b.subscribe("one")
    r = a.request({"type": "unsubscribe", "channel": "one", "id": 4})
    assert r == {"type": "unsubscribe_response", "id": 4, "channels": ["one"]}
    r = a.request({"type": "leave_room", "room": "four", "id": 5})
    assert r == {"type": "leave_room_response", "id": 5, "channels": ["four"]}
    assert a.channels() == ["three", "two"]
    b.publish("one", "after a left")
    got = b.next(lambda m: m.get("type") == "message")
    assert got["data"] == "after a left"
    assert messages(sync_everyone(b, [a])[0]) == []  # a did not get it

    # one of several not subscribed: NotSubscribed, and nothing is left
    r = a.expect_error({"type": "unsubscribe", "channels": ["two", "one", "three"], "id": 6},
                       "NotSubscribed")
    assert r["id"] == 6
    assert a.channels() == ["three", "two"]
    r = a.request({"type": "unsubscribe", "channels": ["two", "three"]})
    assert sorted(r["channels"]) == ["three", "two"]
    assert a.channels() == []
    # leaving again: NotSubscribed
    for req in ({"type": "unsubscribe", "channel": "one"}, {"type": "leave_room", "room": "four"},
                {"type": "unsubscribe", "channel": "never"}):
        a.expect_error(req, "NotSubscribed")
    b.request({"type": "leave_room", "room": "one"})
    st = b.status()
    assert st["server"]["channels"] == 0
    assert a.alive() and b.alive()


# ---------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------


def test_room_broadcast_reaches_each_member_once_and_nobody_else(server):
    srv = server(*W2, *INSECURE)
    m0 = open_on_worker(srv, 0, "/ws/room", user="m0")
    m1 = open_on_worker(srv, 1, "/ws/room", user="m1")
    m2 = open_on_worker(srv, 1, user="m2")
    m2.subscribe("room", kind="join_room")
    m3 = open_on_worker(srv, 0, user="m3")
    m3.subscribe("room", "side")  # in the room and another channel
    out0 = open_on_worker(srv, 0, user="out0")
    out0.subscribe("other")
    out1 = open_on_worker(srv, 1, "/ws/other", user="out1")
    bare = open_on_worker(srv, 1, user="bare")
    pub = open_on_worker(srv, 0, user="pub")  # not a member
    members = [m0, m1, m2, m3]
    everyone = members + [out0, out1, bare, pub]
    sync_everyone(pub, everyone)  # settle: presence events of the set-up are done

    before = int(time.time() * 1000)
    pub.send_text('{"type":"broadcast","room":"room","id":1,"data":{"n":1.50,"s":"\\u00e9"}}')
    r1 = pub.reply_to(1)
    assert r1["type"] == "broadcast_response"
    assert r1["channels"] == {"room": {"offset": 1, "subscribers": 4}}
    assert r1["offset"] == 1 and isinstance(r1["epoch"], str) and r1["epoch"]
    r2 = m1.publish("room", ["from", "m1"])  # a member publishing
    assert r2["channels"] == {"room": {"offset": 2, "subscribers": 4}}
    assert r2["offset"] == 2 and r2["epoch"] == r1["epoch"]
    after = int(time.time() * 1000)

    got = sync_everyone(pub, everyone)
    for c, msgs in zip(everyone, got):
        ms = messages(msgs)
        if c in members:
            assert [m["offset"] for m in ms] == [1, 2], (c.label, msgs)
            first, second = ms
            assert set(first) == {"type", "channel", "data", "offset", "epoch", "from", "ts"}
            assert first["channel"] == "room" and first["from"] == "pub"
            assert first["epoch"] == r1["epoch"]
            assert b'"data":{"n":1.50,"s":"\\u00e9"}' in first.raw, first.raw
            assert before - 2000 <= first["ts"] <= after + 2000
            assert second["data"] == ["from", "m1"] and second["from"] == "m1"
            assert second["epoch"] == r1["epoch"]
        else:
            assert ms == [], (c.label, msgs)

    # several channels at once: each subscriber gets each channel's copy
    r = pub.request({"type": "publish", "channels": ["room", "other", "empty"], "data": 3})
    assert r["type"] == "publish_response"
    assert r["channels"] == {"room": {"offset": 3, "subscribers": 4},
                             "other": {"offset": 1, "subscribers": 2},
                             "empty": {"offset": 0, "subscribers": 0}}
    assert "offset" not in r and "epoch" not in r
    got = sync_everyone(pub, everyone)
    for c, msgs in zip(everyone, got):
        chans = sorted(m["channel"] for m in messages(msgs))
        expect = ["room"] if c in members else ["other"] if c in (out0, out1) else []
        assert chans == expect, (c.label, msgs)
    # nobody subscribed: offset 0, no epoch
    r = pub.publish("nobody-here", 1)
    assert r["channels"] == {"nobody-here": {"offset": 0, "subscribers": 0}}
    assert r["offset"] == 0
    assert pub.status()["server"]["channels"] == 3  # publishing created nothing


def test_exclude_self(server):
    srv = server(*W2, *INSECURE)
    a = open_on_worker(srv, 0, "/ws/room", user="a")
    b = open_on_worker(srv, 1, "/ws/room", user="b")
    sync_channel(a, "room", [a, b])
    r = a.publish("room", "not to me", exclude_self=True)
    assert r["channels"]["room"] == {"offset": 2, "subscribers": 2}
    r = a.publish("room", "to me too", exclude_self=False)
    assert r["offset"] == 3
    got_a = a.until(lambda m: m.get("type") == "message" and m["data"] == "to me too")
    assert [m["data"] for m in messages(got_a)] == ["to me too"]
    got_b = b.until(lambda m: m.get("type") == "message" and m["data"] == "to me too")
    assert [(m["data"], m["offset"]) for m in messages(got_b)] == [("not to me", 2), ("to me too", 3)]
    # a second connection of the same user is not "self"
    a2 = open_on_worker(srv, 1, "/ws/room", user="a")
    a.publish("room", "x", exclude_self=True)
    assert a2.next(lambda m: m.get("type") == "message")["data"] == "x"
    for bad in ("yes", 1, None, [], {}):
        a.expect_error({"type": "publish", "channel": "room", "data": 1, "exclude_self": bad},
                       "BadRequest")
    assert messages(sync_channel(b, "room", [a])[0]) == []


def test_publish_to_everyone(server):
    srv = server(*W2, *INSECURE)
    c0 = open_on_worker(srv, 0, user="c0")
    c1 = open_on_worker(srv, 1, "/ws/lobby", user="c1")
    c2 = open_on_worker(srv, 1, user="c2")
    c3 = open_on_worker(srv, 0, "/ws/elsewhere", user="c3")
    echo = raw_connect(srv, "/echo")
    clients = [c0, c1, c2, c3]
    sync_everyone(c0, clients)

    r = c0.request({"type": "publish", "data": {"hello": "all"}, "id": 5})
    assert r == {"type": "publish_response", "id": 5, "everyone": True}
    for c in clients:
        m = c.next(lambda m: m.get("type") == "message")
        assert set(m) == {"type", "data", "from", "ts"}, m
        assert m["data"] == {"hello": "all"} and m["from"] == "c0"
    # exclude_self: everyone but the sender
    r = c2.request({"type": "broadcast", "data": "no echo", "exclude_self": True})
    assert r["type"] == "broadcast_response" and r["everyone"] is True
    got = sync_everyone(c1, clients)
    for c, msgs in zip(clients, got):
        expect = [] if c is c2 else ["no echo"]
        assert [m["data"] for m in messages(msgs)] == expect, (c.label, msgs)
    # /echo connections are not native: they get none of it
    echo.send_text("ping?")
    assert echo.recv_message(T(5)) == (OP_TEXT, b"ping?")
    echo.close_socket()


def test_publish_to_everyone_forbidden(server):
    srv = server(*W2, "--ws-allow-broadcast-all", "false")
    a = open_client(srv, "/ws/room")
    b = open_client(srv, "/ws/room")
    r = a.expect_error({"type": "publish", "data": 1, "id": 3}, "Forbidden")
    assert r["id"] == 3
    a.expect_error({"type": "broadcast", "data": 1, "exclude_self": True}, "Forbidden")
    # channels still work
    a.publish("room", "ok")
    assert [m["data"] for m in messages(sync_channel(a, "room", [b])[0])] == ["ok"]


# ---------------------------------------------------------------------------
# Presence
# ---------------------------------------------------------------------------


def members_of(c: Client, channel: str) -> dict[str, int]:
    r = c.request({"type": "presence", "channel": channel})
    assert r["type"] == "presence_response" and r["channel"] == channel, r
    return {e["user"]: e["connections"] for e in r["members"]}


def test_presence_one_user_two_workers(server):
    srv = server(*W2, *INSECURE)
    obs = open_on_worker(srv, 0, "/ws/lobby", user="obs")
    assert members_of(obs, "lobby") == {"obs": 1}
    assert obs.drain_quiet(0) == []

    # u's first connection opens in the room: join then online, once
    u1 = open_on_worker(srv, 0, "/ws/lobby", user="u")
    before = sync_channel(obs, "lobby", [obs])[0]
    assert presence_events(before) == [("lobby", "u", "join"), ("lobby", "u", "online")], before
    assert set(before[0]) == {"type", "channel", "user", "state"}
    assert members_of(obs, "lobby") == {"obs": 1, "u": 1}

    # the second connection, on the other worker: nothing
    u2 = open_on_worker(srv, 1, "/ws/lobby", user="u")
    assert u1.worker != u2.worker
    tok = publish_marker(obs, "lobby")
    assert presence_events(obs.until_marker(tok)) == []
    assert members_of(obs, "lobby") == {"obs": 1, "u": 2}
    # u's connections heard nothing about their own user (obs joined
    # before they came)
    for u in (u1, u2):
        assert presence_events(u.until_marker(tok)) == [], u.label

    # the first one leaves (closes): nothing, u is still there on worker 1
    u1.close()
    wait_for(lambda: members_of(obs, "lobby") == {"obs": 1, "u": 1}, T(5), "u down to 1 connection")
    assert presence_events(sync_channel(obs, "lobby", [obs])[0]) == []

    # the last one leaves: offline, then leave
    u2.close()
    evs = obs.until(lambda m: m.get("type") == "presence" and m["state"] == "leave", T(5))
    assert presence_events(evs) == [("lobby", "u", "offline"), ("lobby", "u", "leave")], evs
    assert presence_events(sync_channel(obs, "lobby", [obs])[0]) == []
    assert members_of(obs, "lobby") == {"obs": 1}


def test_presence_join_leave_by_subscription(server):
    srv = server(*W2, *INSECURE)
    obs = open_on_worker(srv, 1, "/ws/room", user="obs")
    # two connections of u, opened in no channel (their online reaches nobody)
    u1 = open_on_worker(srv, 0, user="u")
    u2 = open_on_worker(srv, 1, user="u")
    assert presence_events(sync_channel(obs, "room", [obs])[0]) == []
    u1.subscribe("room", kind="join_room")
    assert presence_events(sync_channel(obs, "room", [obs])[0]) == [("room", "u", "join")]
    u2.subscribe("room")
    tok = publish_marker(obs, "room")
    assert presence_events(obs.until_marker(tok)) == []
    # u2 joining is not news to u1: same user
    assert presence_events(u1.until_marker(tok)) == []
    u1.request({"type": "leave_room", "room": "room"})
    assert presence_events(sync_channel(obs, "room", [obs])[0]) == []
    u2.request({"type": "unsubscribe", "channel": "room"})
    assert presence_events(sync_channel(obs, "room", [obs])[0]) == [("room", "u", "leave")]
    # u is still online (both connections open, in no channel): closing
    # them tells the room nothing
    u1.close()
    u2.close()
    wait_for(lambda: obs.status()["server"]["connections"] == 1, T(5), "u's connections gone")
    assert presence_events(sync_channel(obs, "room", [obs])[0]) == []
    # a member of the room sees another user's events; presence of an
    # unknown channel is empty
    assert members_of(obs, "room") == {"obs": 1}
    assert members_of(obs, "no-such-channel") == {}
    assert obs.request({"type": "presence", "channel": "no-such-channel"})["members"] == []


def test_presence_online_offline_in_every_channel(server):
    srv = server(*W2, *INSECURE, "--ns-quiet-join-leave", "false",
                 "--ns-hidden-presence", "false")
    obs = open_on_worker(srv, 0, user="obs")
    obs.subscribe("plain", "quiet:x", "hidden:y")
    chans = ["plain", "quiet:x", "hidden:y"]

    def collect() -> list:
        out = []
        for ch in chans:
            out += presence_events(sync_channel(obs, ch, [obs])[0])
        return sorted(out)

    assert collect() == []
    u = open_on_worker(srv, 1, "/ws/quiet%3Ax", user="u")
    u.subscribe("plain", "hidden:y")
    # /ws/quiet:x announced online there (no join: join/leave are off in
    # "quiet"); "plain" got a join (u was already online); "hidden" nothing
    assert collect() == [("plain", "u", "join"), ("quiet:x", "u", "online")]
    u.close()
    evs = obs.until(lambda m: m.get("type") == "presence" and m["channel"] == "plain"
                    and m["state"] == "leave")
    evs += obs.drain_quiet(0)
    got = collect() + presence_events(evs)
    assert sorted(got) == sorted([("plain", "u", "offline"), ("plain", "u", "leave"),
                                  ("quiet:x", "u", "offline")]), got
    plain = [e for e in presence_events(evs) if e[0] == "plain"]
    assert plain == [("plain", "u", "offline"), ("plain", "u", "leave")]
    # presence requests
    assert members_of(obs, "quiet:x") == {"obs": 1}
    r = obs.expect_error({"type": "presence", "channel": "hidden:y", "id": 11}, "Forbidden")
    assert r["id"] == 11


# ---------------------------------------------------------------------------
# Typing
# ---------------------------------------------------------------------------


def test_typing_and_rate_limit(server):
    srv = server(*W2, *INSECURE)
    a = open_on_worker(srv, 0, "/ws/chat", user="a")
    b = open_on_worker(srv, 1, "/ws/chat", user="b")
    c = open_on_worker(srv, 0, "/ws/chat", user="c")
    outsider = open_on_worker(srv, 1, "/ws/other", user="o")
    sync_channel(a, "chat", [a, b, c])

    r = a.request({"type": "typing", "channel": "chat", "id": 1})
    assert r == {"type": "typing_response", "id": 1}
    got = sync_channel(a, "chat", [a, b, c])
    assert [m for m in got[0] if m.get("type") == "typing"] == []  # not to the typist
    for msgs in got[1:]:
        typing = [m for m in msgs if m.get("type") == "typing"]
        assert typing == [{"type": "typing", "channel": "chat", "user": "a"}], msgs
    assert sync_channel(outsider, "other", [outsider])[0] == []

    # must be subscribed
    outsider.expect_error({"type": "typing", "channel": "chat"}, "NotSubscribed")
    # the limit: 10 per window per connection (a has used 1)
    for i in range(9):
        r = a.request({"type": "TYPING", "room": "chat"})
        assert r["type"] == "typing_response", (i, r)
    r = a.expect_error({"type": "typing", "channel": "chat", "id": "t11"}, "RateLimitExceeded")
    assert r["id"] == "t11"
    assert a.alive()
    got = sync_channel(c, "chat", [b])[0]
    assert len([m for m in got if m.get("type") == "typing"]) == 9
    # another connection has its own budget
    r = b.request({"type": "typing", "channel": "chat"})
    assert r["type"] == "typing_response"


def test_typing_rate_window_and_forbidden(server):
    srv = server(*W2, "--ws-typing-rate-limit", "2", "--ws-typing-rate-window-ms", "300",
                 "--ns-silent-typing", "false")
    a = open_client(srv, "/ws/chat")
    b = open_client(srv, "/ws/chat")
    for _ in range(2):
        assert a.request({"type": "typing", "channel": "chat"})["type"] == "typing_response"
    a.expect_error({"type": "typing", "channel": "chat"}, "RateLimitExceeded")
    time.sleep(0.4)
    assert a.request({"type": "typing", "channel": "chat"})["type"] == "typing_response"
    typing = [m for m in sync_channel(a, "chat", [b])[0] if m.get("type") == "typing"]
    assert len(typing) == 3
    a.subscribe("silent:x")
    r = a.expect_error({"type": "typing", "channel": "silent:x", "id": 4}, "Forbidden")
    assert r["id"] == 4
    assert a.alive()


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

LONG = "c" * 256

BAD_REQUESTS = [
    # not JSON / not an object
    'not json', '{"type":"ping"', '{"type":"ping"}}', '[1,2]', '"ping"', '42', 'null', '',
    # envelope
    '{}', '{"type":5}', '{"type":null}', '{"type":["ping"]}', '{"id":1}',
    '{"type":"ping","type":"ping"}', '{"type":"ping","TYPE":"x","type":"echo"}',
    '{"type":"ping","id":1,"id":2}',
    '{"type":"publish","channel":"a","data":1,"data":2}',
    '{"type":"subscribe","channel":"a","channel":"b"}',
    # channel arguments
    '{"type":"subscribe"}', '{"type":"subscribe","channel":""}',
    '{"type":"subscribe","channel":"%s"}' % LONG, '{"type":"subscribe","channel":"a b"}',
    '{"type":"subscribe","channel":"caf\\u00e9"}', '{"type":"subscribe","channel":"a\\u0000b"}',
    '{"type":"subscribe","channel":"a?b"}', '{"type":"subscribe","channel":5}',
    '{"type":"subscribe","channels":"a"}', '{"type":"subscribe","channels":[1]}',
    '{"type":"subscribe","channels":["ok","bad name"]}', '{"type":"join_room","room":""}',
    '{"type":"unsubscribe"}', '{"type":"unsubscribe","channel":"a b"}',
    '{"type":"publish","channel":"a"}', '{"type":"publish"}',
    '{"type":"publish","channel":"a b","data":1}', '{"type":"publish","channels":[""],"data":1}',
    '{"type":"presence"}', '{"type":"presence","channel":"a b"}',
    '{"type":"typing"}', '{"type":"typing","channel":""}',
]


def test_bad_requests(server):
    srv = server(*W2)
    c = open_client(srv, "/ws")
    for text in BAD_REQUESTS:
        c.send_text(text)
        m = c.next(timeout=T(5))
        assert m["type"] == "error", (text, m)
        assert m["error"]["code"] == "BadRequest", (text, m)
        assert isinstance(m["error"]["message"], str) and m["error"]["message"], (text, m)
        assert set(m) <= {"type", "id", "error"}, (text, m)
    # the connection survived all of them, and none of the partial
    # subscriptions happened
    assert c.alive()
    assert c.channels() == []


@pytest.mark.parametrize("bad_id", ["true", "false", "null", "[1]", '{"a":1}'])
def test_id_of_wrong_type_is_bad_request(server, bad_id):
    srv = server(*W2)
    c = open_client(srv)
    c.send_text('{"type":"ping","id":%s}' % bad_id)
    m = c.next()
    assert m["type"] == "error" and m["error"]["code"] == "BadRequest", m
    assert "id" not in m, m
    assert c.alive()


def test_errors_carry_the_id(server):
    srv = server(*W2)
    c = open_client(srv)
    cases = [
        ({"type": "nope"}, "UnknownType"),
        ({"type": "publish", "channel": "a"}, "BadRequest"),
        ({"type": "subscribe", "channel": "a b"}, "BadRequest"),
        ({"type": "unsubscribe", "channel": "never"}, "NotSubscribed"),
        ({"type": "hello", "version": "9"}, "UnsupportedVersion"),
        ({"type": "typing", "channel": "x"}, "NotSubscribed"),
    ]
    for req, code in cases:
        for rid in (7, "7", "abc", 0, -3, 2.5, ""):
            r = c.expect_error(dict(req, id=rid), code)
            assert r["id"] == rid and type(r["id"]) is type(rid), (req, rid, r)
    # a number id keeps its spelling in an error too
    c.send_text('{"type":"nope","id":1.50}')
    m = c.next()
    assert b'"id":1.50' in m.raw, m.raw


def test_unknown_type(server):
    srv = server(*W2)
    c = open_client(srv)
    for t in ("nope", "", "message_sendx", "x" * 100, "PUBLISH_", "ping ", "hello_response"):
        r = c.expect_error({"type": t, "id": 1}, "UnknownType")
        assert r["id"] == 1
    c.send_text('{"type":"nope"}')
    m = c.next()
    assert m["type"] == "error" and m["error"]["code"] == "UnknownType" and "id" not in m
    assert c.alive()


def test_binary_frame_closes_1003(server):
    srv = server(*W2)
    c = open_client(srv)
    c.ws.send_binary(b'{"type":"ping"}')
    f = c.ws.expect_close(1003, timeout=T(5))
    assert f.close_code == 1003


def test_case_insensitive_types(server):
    srv = server(*W2)
    c = open_client(srv)
    b = open_client(srv, "/ws/room")
    r = c.request({"type": "PING"})
    assert r["type"] == "pong"
    assert c.request({"type": "Hello", "version": "1"})["type"] == "hello_response"
    assert c.request({"type": "StAtUs"})["type"] == "status_response"
    assert c.request({"type": "ECHO", "data": 1})["type"] == "echo_response"
    r = c.request({"type": "JOIN_ROOM", "room": "room"})
    assert r["type"] == "join_room_response" and r["channels"] == ["room"]
    r = c.request({"type": "Subscribe", "channel": "other"})
    assert r["type"] == "subscribe_response"
    r = c.request({"type": "PUBLISH", "channel": "room", "data": "x"})
    assert r["type"] == "publish_response" and r["offset"] == 1
    r = c.request({"type": "BroadCast", "room": "room", "data": "y"})
    assert r["type"] == "broadcast_response" and r["offset"] == 2
    r = c.request({"type": "PRESENCE", "channel": "room"})
    assert r["type"] == "presence_response" and len(r["members"]) == 2
    assert c.request({"type": "Typing", "channel": "room"})["type"] == "typing_response"
    r = c.request({"type": "LEAVE_ROOM", "room": "room"})
    assert r["type"] == "leave_room_response"
    r = c.request({"type": "UNSUBSCRIBE", "channel": "other"})
    assert r["type"] == "unsubscribe_response"
    r = c.expect_error({"type": "UNSUBSCRIBE", "channel": "other"}, "NotSubscribed")
    # escaped spelling of the type
    c.send_text('{"type":"\\u0070ing","id":"u"}')
    assert c.reply_to("u")["type"] == "pong"
    got = [m["data"] for m in messages(sync_channel(b, "room", [b])[0])]
    assert got == ["x", "y"]


def test_correlation_ids(server):
    srv = server(*W2)
    c = open_client(srv, "/ws/room")
    reqs = [
        ({"type": "ping"}, "pong"),
        ({"type": "echo", "data": 1}, "echo_response"),
        ({"type": "hello", "version": "1"}, "hello_response"),
        ({"type": "status"}, "status_response"),
        ({"type": "subscribe", "channel": "x"}, "subscribe_response"),
        ({"type": "publish", "channel": "x", "data": 1}, "publish_response"),
        ({"type": "presence", "channel": "x"}, "presence_response"),
        ({"type": "typing", "channel": "room"}, "typing_response"),
        ({"type": "unsubscribe", "channel": "x"}, "unsubscribe_response"),
    ]
    for i in range(7):
        for req, rtype in reqs:
            rid = (i, f"s{i}", str(i), 10 ** 6 + i, -i - 1, i + 0.25, "é" * (i + 1))[i]
            r = c.request(dict(req, id=rid))
            assert r["type"] == rtype, (req, rid, r)
            assert r["id"] == rid and type(r["id"]) is type(rid), (req, rid, r)
            c.inbox.clear()
    # no id: the reply has none
    c.send({"type": "ping"})
    m = c.next(lambda m: m.get("type") == "pong")
    assert "id" not in m
    # the number keeps its JSON spelling
    c.send_text('{"type":"ping","id":1.50}')
    m = c.next(lambda m: m.get("type") == "pong")
    assert b'"id":1.50' in m.raw, m.raw
    c.send_text('{"type":"echo","data":0,"id":1e2}')
    m = c.next(lambda m: m.get("type") == "echo_response")
    assert b'"id":1e2' in m.raw, m.raw


def test_subscription_limit(server):
    srv = server(*W2, "--ws-max-subscriptions-per-connection", "3")
    c = open_client(srv, "/ws/room")  # the path's room counts
    c.subscribe("a")
    r = c.expect_error({"type": "subscribe", "channels": ["b", "c"], "id": 1},
                       "SubscriptionLimitExceeded")
    assert r["id"] == 1
    assert c.channels() == ["a", "room"]  # all or nothing: b was not kept
    c.subscribe("b")
    c.expect_error({"type": "join_room", "room": "c"}, "SubscriptionLimitExceeded")
    r = c.subscribe("a", "b")  # already in: fine at the limit
    assert sorted(r["channels"]) == ["a", "b"]
    c.expect_error({"type": "subscribe", "channels": ["a", "d"]}, "SubscriptionLimitExceeded")
    assert c.channels() == ["a", "b", "room"]  # a stays (it was there before)
    c.request({"type": "unsubscribe", "channel": "room"})
    c.subscribe("d")
    assert c.channels() == ["a", "b", "d"]
    # the limit is per connection
    o = open_client(srv)
    o.subscribe("a", "b", "c")
    assert o.status()["server"]["channels"] == 4


def test_channel_full(server):
    srv = server(*W2, *INSECURE, "--ws-max-subscribers-per-channel", "2",
                 "--ns-tiny-max-subscribers", "1")
    a = open_on_worker(srv, 0, user="a")
    b = open_on_worker(srv, 1, user="a")  # same user: still a second subscriber
    c = open_on_worker(srv, 1, user="c")
    a.subscribe("room")
    b.subscribe("room")
    r = c.expect_error({"type": "join_room", "room": "room", "id": "f"}, "ChannelFull")
    assert r["id"] == "f"
    assert c.channels() == []
    a.subscribe("room")  # already a member: fine
    # all or nothing across several channels
    c.expect_error({"type": "subscribe", "channels": ["free", "room"]}, "ChannelFull")
    assert c.channels() == []
    # a path join that finds the room full: error frame, connection stays, no room
    d = open_client(srv, "/ws/room", user="d")
    m = d.next(lambda m: m.get("type") == "error")
    assert m["error"]["code"] == "ChannelFull"
    assert d.channels() == []
    b.request({"type": "leave_room", "room": "room"})
    c.subscribe("room")
    assert sorted(members_of(a, "room")) == ["a", "c"]
    # a namespace's own cap
    a.subscribe("tiny:x")
    c.expect_error({"type": "subscribe", "channel": "tiny:x"}, "ChannelFull")


def test_namespace_forbidden(server):
    srv = server(*W2, "--ns-news-client-publish", "false", "--ns-news-typing", "false",
                 "--ns-news-presence", "false")
    a = open_client(srv, "/ws/news:today")
    b = open_client(srv, "/ws/open")
    r = a.expect_error({"type": "publish", "channel": "news:today", "data": 1, "id": 8},
                       "Forbidden")
    assert r["id"] == 8
    a.expect_error({"type": "broadcast", "room": "news:other", "data": 1}, "Forbidden")
    # several channels with one forbidden: nothing is published anywhere
    a.expect_error({"type": "publish", "channels": ["open", "news:today"], "data": "no"},
                   "Forbidden")
    a.expect_error({"type": "typing", "channel": "news:today"}, "Forbidden")
    a.expect_error({"type": "presence", "channel": "news:today"}, "Forbidden")
    # not in the namespace: allowed
    assert a.publish("newsroom", 1)["offset"] == 0
    assert a.publish("open", "yes")["offset"] == 1
    got = messages(sync_channel(a, "open", [b])[0])
    assert [m["data"] for m in got] == ["yes"]
    # subscribing to a channel of the namespace is fine
    a.subscribe("news:later")
    assert a.alive()


# ---------------------------------------------------------------------------
# Ordering, slow consumers, vanishing subscribers
# ---------------------------------------------------------------------------


def _read_messages(c: Client, n: int, timeout: float, out: list, stop_after: int | None = None):
    """Thread body: collect n 'message's (or stop_after of them)."""
    deadline = time.monotonic() + timeout
    want = n if stop_after is None else stop_after
    try:
        while len(out) < want:
            m = c.next(lambda m: m.get("type") == "message",
                       timeout=max(0.01, deadline - time.monotonic()))
            out.append(m)
    except Exception as e:  # reported by the caller via the count
        out.append(e)


def test_per_channel_order_across_workers(server):
    srv = server(*W2, *INSECURE)
    subs = [open_on_worker(srv, 0, "/ws/order", user="s0"),
            open_on_worker(srv, 1, "/ws/order", user="s1")]
    pubs = [open_on_worker(srv, 0, user="p0"), open_on_worker(srv, 1, user="p1")]
    N = 200
    sync_channel(pubs[0], "order", subs)
    received: list[list] = [[], []]
    readers = [threading.Thread(target=_read_messages, args=(s, 2 * N, T(30), out), daemon=True)
               for s, out in zip(subs, received)]
    for t in readers:
        t.start()
    barrier = threading.Barrier(2, timeout=T(10))
    offsets: list[dict] = [{}, {}]
    errors: list = []

    def publisher(k: int):
        p = pubs[k]
        try:
            barrier.wait()
            for base in range(0, N, 10):  # small pipelined batches interleave well
                for i in range(base, base + 10):
                    p.send({"type": "publish", "channel": "order", "id": i,
                            "data": {"p": k, "i": i}})
                for i in range(base, base + 10):
                    r = p.reply_to(i, T(20))
                    offsets[k][i] = r["offset"]
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=publisher, args=(k,), daemon=True) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads + readers:
        t.join(T(40))
    assert not errors, errors
    for out in received:
        assert len(out) == 2 * N and not any(isinstance(x, Exception) for x in out), out[-3:]
    seqs = [[(m["data"]["p"], m["data"]["i"]) for m in out] for out in received]
    assert seqs[0] == seqs[1], "the two subscribers saw different orders"
    assert [m["offset"] for m in received[0]] == list(range(2, 2 * N + 2))  # 1 was the marker
    for k in (0, 1):
        mine = [i for p, i in seqs[0] if p == k]
        assert mine == list(range(N)), f"publisher {k}'s messages out of its own order"
    # the offsets in the replies are the ones delivered
    by_seq = {(m["data"]["p"], m["data"]["i"]): m["offset"] for m in received[0]}
    for k in (0, 1):
        for i in range(N):
            assert offsets[k][i] == by_seq[(k, i)]
    switches = sum(1 for x, y in zip(seqs[0], seqs[0][1:]) if x[0] != y[0])
    print(f"order test: {switches} alternations between the two publishers")
    assert all(pubs[k].alive() for k in (0, 1))


@pytest.mark.parametrize("cap", [("--ws-max-queue-messages", "64"),
                                 ("--ws-max-queue-bytes", "1m")],
                         ids=["messages", "bytes"])
def test_slow_consumer_4008(server, cap):
    srv = server(*W2, *INSECURE, *cap)
    slow = open_on_worker(srv, 0, user="slow", rcvbuf=4096)
    fast = open_on_worker(srv, 1, user="fast")
    pub = open_on_worker(srv, 0, user="pub")
    slow.subscribe("flood")
    fast.subscribe("flood")
    fast_got: list = []
    payload = "x" * 8000
    sent = 0
    kicked = None
    # the slow subscriber stops reading now; its kernel buffers fill, then
    # its server queue passes its cap (64 messages, or 1 MiB: above one
    # batch of 40 x 8 kB, so the subscriber that does read never trips it)
    for batch in range(100):  # at most 100 * 40 * 8 kB = 32 MB
        for _ in range(40):
            sent += 1
            r = pub.publish("flood", {"n": sent, "pad": payload})
            assert r["offset"] == sent
        while True:
            m = fast.next(lambda m: m.get("type") == "message", timeout=T(5))
            fast_got.append(m["data"]["n"])
            if m["data"]["n"] == sent:
                break
        kicked = srv.wait_for_event(lambda e: e.get("event") == "slow_consumer", 0)
        if kicked:
            break
    assert kicked, "the subscriber that never reads was not treated as a slow consumer"
    assert fast_got == list(range(1, sent + 1))
    assert kicked.get("user") == "slow", kicked

    # what the slow one finally reads: complete messages in order, then the
    # error, then close 4008
    data = []
    deadline = time.monotonic() + T(15)
    close = None
    while time.monotonic() < deadline:
        f = slow.ws.recv_frame(max(0.01, deadline - time.monotonic()))
        if f.opcode == OP_CLOSE:
            close = f
            break
        if f.opcode in (OP_PING, OP_PONG):
            continue
        assert f.opcode == OP_TEXT and f.fin
        data.append(json.loads(f.payload))
    assert close is not None, "no close frame"
    assert close.close_code == 4008, (close.close_code, close.close_reason)
    assert data, "not even the error frame"
    err = data[-1]
    assert err["type"] == "error" and err["error"]["code"] == "SlowConsumer", err
    # (before the flood it also heard fast's and pub's presence events)
    assert all(m["type"] in ("message", "presence") for m in data[:-1]), data[:-1]
    got = [m["data"]["n"] for m in data[:-1] if m["type"] == "message"]
    assert got == list(range(1, len(got) + 1)), "the slow consumer's messages are not a prefix"
    assert len(got) < sent
    print(f"slow consumer: kicked after {sent} publishes, it had received {len(got)}")
    try:
        slow.ws.send_close(4008)
    except ConnectionClosed:
        pass
    closed, _ = wait_closed(slow.ws.sock, T(5))
    assert closed
    slow.ws.close_socket()

    # everyone else is fine; the server is healthy
    wait_for(lambda: pub.status()["server"]["connections"] == 2, T(5), "slow connection gone")
    assert sorted(u for u in members_of(pub, "flood")) == ["fast"]
    r = pub.publish("flood", {"n": sent + 1})
    assert r["channels"]["flood"]["subscribers"] == 1
    assert fast.next(lambda m: m.get("type") == "message")["data"]["n"] == sent + 1
    newcomer = open_client(srv, "/ws/flood", user="new")
    pub.publish("flood", {"n": sent + 2})
    assert newcomer.next(lambda m: m.get("type") == "message")["data"]["n"] == sent + 2


def test_subscriber_vanishes_mid_burst(server):
    srv = server(*W2, *INSECURE)
    keep = [open_on_worker(srv, 0, "/ws/burst", user="k0"),
            open_on_worker(srv, 1, "/ws/burst", user="k1")]
    quitters = [open_on_worker(srv, 0, "/ws/burst", user="q0"),   # RST mid-stream
                open_on_worker(srv, 1, "/ws/burst", user="q1"),   # close frame, then gone
                open_on_worker(srv, 1, "/ws/burst", user="q2")]   # never reads, RST
    pub = open_on_worker(srv, 0, user="pub")
    everyone = keep + quitters[:2]
    sync_channel(pub, "burst", everyone)
    N = 500
    received: list[list] = [[], []]
    readers = [threading.Thread(target=_read_messages, args=(c, N, T(30), out), daemon=True)
               for c, out in zip(keep, received)]
    partial: list[list] = [[], []]
    readers += [threading.Thread(target=_read_messages, args=(q, N, T(30), out),
                                 kwargs={"stop_after": stop}, daemon=True)
                for q, out, stop in zip(quitters[:2], partial, (50, 120))]
    for t in readers:
        t.start()
    replies: list = []

    def publish_all():
        try:
            for base in range(0, N, 50):
                for i in range(base, base + 50):
                    pub.send({"type": "publish", "channel": "burst", "id": i,
                              "data": {"i": i, "pad": "p" * 200}})
                for i in range(base, base + 50):
                    replies.append(pub.reply_to(i, T(20)))
        except Exception as e:
            replies.append(e)

    pt = threading.Thread(target=publish_all, daemon=True)
    pt.start()
    for t in readers[2:]:
        t.join(T(30))
    quitters[0].abort()
    try:
        quitters[1].ws.send_close(1001)
    except ConnectionClosed:
        pass
    quitters[1].ws.close_socket()
    quitters[2].abort()
    pt.join(T(40))
    for t in readers[:2]:
        t.join(T(40))
    assert len(replies) == N and all(isinstance(r, dict) for r in replies), replies[-3:]
    assert [r["offset"] for r in replies] == list(range(2, N + 2))
    for out in received:
        assert len(out) == N and not any(isinstance(x, Exception) for x in out), out[-3:]
        assert [m["data"]["i"] for m in out] == list(range(N))
        assert [m["offset"] for m in out] == list(range(2, N + 2))
    for out, stop in zip(partial, (50, 120)):
        assert [m["data"]["i"] for m in out] == list(range(stop))
    # the server is healthy and has forgotten the quitters
    wait_for(lambda: pub.status()["server"]["connections"] == 3, T(5), "quitters gone")
    assert sorted(members_of(pub, "burst")) == ["k0", "k1"]
    r = pub.publish("burst", "after")
    assert r["channels"]["burst"]["subscribers"] == 2
    for c in keep:
        assert c.next(lambda m: m.get("type") == "message")["data"] == "after"
    fresh = open_client(srv, "/ws/burst", user="fresh")
    assert fresh.alive()
    assert srv.alive()
