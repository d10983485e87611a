"""The /echo endpoint driven by the python `websockets` client and by raw
sockets: sizes, compression, fragmentation, ping/pong, close codes, frame
rule violations, concurrency, vanishing peers, heartbeat and idle timeouts."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import threading
import time

import pytest
import websockets

from conduit_harness import (
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, ConnectionClosed,
    RawWebSocket, T, build_frame, close_payload, connect, frame_header,
    http_get, read_http_response, set_linger_reset, upgrade_request,
    wait_closed, ws_accept,
)

KiB, MiB = 1024, 1024 * 1024

_rng = random.Random(6455)
_RANDOM = _rng.randbytes(16 * MiB)
_ASCII = bytes(range(32, 127))
_TO_TEXT = bytes.maketrans(bytes(range(256)), bytes(_ASCII[i % len(_ASCII)] for i in range(256)))


def payload(size: int, text: bool):
    data = _RANDOM[:size]
    if text:
        return data.translate(_TO_TEXT).decode("ascii")
    return data


def run(coro, timeout: float):
    async def guarded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(guarded())


def ws_connect(url: str, compression: str | None = None, **kw):
    kw.setdefault("max_size", None)
    kw.setdefault("ping_interval", None)
    kw.setdefault("close_timeout", T(5))
    kw.setdefault("open_timeout", T(10))
    return websockets.connect(url, compression=compression, **kw)


# ---------------------------------------------------------------------------
# echo through the websockets client
# ---------------------------------------------------------------------------

SIZES = [0, 1, 125, 126, 65535, 65536, 1 * MiB, 16 * MiB]


@pytest.mark.parametrize("compression", [None, "deflate"], ids=["plain", "deflate"])
@pytest.mark.parametrize("kind", ["text", "binary"])
@pytest.mark.parametrize("size", SIZES, ids=[str(s) for s in SIZES])
def test_echo_sizes(echo_server, size, kind, compression):
    msg = payload(size, kind == "text")

    async def go():
        async with ws_connect(echo_server.ws_url(), compression) as ws:
            ext = ws.response_headers.get("Sec-WebSocket-Extensions")
            if compression:
                assert ext and "permessage-deflate" in ext, f"deflate not negotiated: {ext!r}"
            else:
                assert ext is None, ext
            await ws.send(msg)
            got = await ws.recv()
            assert type(got) is type(msg), f"opcode changed: sent {type(msg)}, got {type(got)}"
            assert len(got) == len(msg)
            assert got == msg
            await ws.close()
            assert ws.close_code == 1000

    run(go(), T(60 if size >= MiB else 15))


def test_echo_many_messages_one_connection(echo_server):
    async def go():
        async with ws_connect(echo_server.ws_url(), "deflate") as ws:
            for i in range(200):
                m = payload(i * 37 % 3000, i % 2 == 0)
                await ws.send(m)
                assert await ws.recv() == m
    run(go(), T(30))


def test_echo_pipelined_messages_keep_order(echo_server):
    async def go():
        async with ws_connect(echo_server.ws_url()) as ws:
            msgs = [f"msg-{i}-" + "x" * (i % 50) for i in range(500)]
            for m in msgs:
                await ws.send(m)
            for m in msgs:
                assert await ws.recv() == m
    run(go(), T(30))


@pytest.mark.parametrize("compression", [None, "deflate"], ids=["plain", "deflate"])
@pytest.mark.parametrize("kind", ["text", "binary"])
def test_echo_fragmented_message(echo_server, kind, compression):
    if kind == "text":
        frags = ["Hello-µ@ß", "öäüàá", "", "-UTF-8!!" * 100, "κόσμε"]
    else:
        frags = [b"\x00\xff" * 10, b"", os.urandom(70000), b"end"]

    async def go():
        async with ws_connect(echo_server.ws_url(), compression) as ws:
            await ws.send(frags)
            got = await ws.recv()
            assert got == frags[0][:0].join(frags)
    run(go(), T(15))


def test_ping_pong_websockets(echo_server):
    async def go():
        async with ws_connect(echo_server.ws_url()) as ws:
            for data in (b"", b"abc", os.urandom(125)):
                waiter = await ws.ping(data)
                await asyncio.wait_for(waiter, T(5))
    run(go(), T(20))


def test_client_close_code_echoed(echo_server):
    async def go(code, reason):
        async with ws_connect(echo_server.ws_url()) as ws:
            await ws.send("before close")
            assert await ws.recv() == "before close"
            await ws.close(code, reason)
            return ws.close_code
    for code, reason in [(1000, ""), (1001, "going"), (3000, "x"), (4000, "custom"), (4999, "")]:
        assert run(go(code, reason), T(10)) == code


def test_many_concurrent_clients(server):
    # 200 clients from one address: lift the per-IP caps (docs/security.md).
    srv = server("--workers", "2", "--ws-max-connections-per-ip", "0",
                 "--ws-max-pending-handshakes-per-ip", "0")
    url = srv.ws_url()
    n_clients, n_msgs = 200, 10

    async def client(i):
        async with ws_connect(url, "deflate" if i % 4 == 0 else None, open_timeout=T(30)) as ws:
            for j in range(n_msgs):
                m = payload((i * 131 + j * 17) % 4000, (i + j) % 2 == 0)
                await ws.send(m)
                got = await ws.recv()
                assert got == m, f"client {i} message {j} mismatch"
        return i

    async def go():
        done = await asyncio.gather(*(client(i) for i in range(n_clients)))
        assert sorted(done) == list(range(n_clients))

    run(go(), T(90))
    assert http_get(srv.port, "/healthz").status == 200


# ---------------------------------------------------------------------------
# raw frames
# ---------------------------------------------------------------------------

def test_frame_in_same_segment_as_upgrade(echo_server):
    req, key = upgrade_request("/echo", f"127.0.0.1:{echo_server.port}")
    frames = build_frame(OP_TEXT, b"same segment") + build_frame(OP_BINARY, b"\x01\x02")
    with connect(echo_server.port) as s:
        s.sendall(req + frames)
        r = read_http_response(s, read_body=False)
        assert r.status == 101
        assert r.header("sec-websocket-accept") == ws_accept(key)
        ws = RawWebSocket(s, r, r.rest)
        assert ws.recv_message() == (OP_TEXT, b"same segment")
        assert ws.recv_message() == (OP_BINARY, b"\x01\x02")


def test_close_in_same_segment_as_upgrade(echo_server):
    req, _ = upgrade_request("/echo", f"127.0.0.1:{echo_server.port}")
    with connect(echo_server.port) as s:
        s.sendall(req + build_frame(OP_TEXT, b"hi") + build_frame(OP_CLOSE, close_payload(1000)))
        r = read_http_response(s, read_body=False)
        assert r.status == 101
        ws = RawWebSocket(s, r, r.rest)
        assert ws.recv_message() == (OP_TEXT, b"hi")
        f = ws.expect_close(1000, reply=False)
        assert f.close_code == 1000


def test_raw_ping_gets_pong_with_same_payload(echo_server):
    with RawWebSocket.connect(echo_server.port) as ws:
        for data in (b"", b"x", b"\x00\xff" * 62 + b"z"):
            ws.send_frame(OP_PING, data)
            f = ws.recv_frame()
            assert (f.opcode, f.payload, f.fin, f.rsv) == (OP_PONG, data, True, 0)
            assert not f.masked


def test_ping_burst_each_gets_pong(echo_server):
    with RawWebSocket.connect(echo_server.port) as ws:
        burst = b"".join(build_frame(OP_PING, f"p{i}".encode()) for i in range(30))
        ws.send_raw(burst)
        pongs = [ws.recv_frame() for _ in range(30)]
        assert [f.opcode for f in pongs] == [OP_PONG] * 30
        assert [f.payload for f in pongs] == [f"p{i}".encode() for i in range(30)]


def test_unsolicited_pong_ignored(echo_server):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_frame(OP_PONG, b"unsolicited")
        ws.send_frame(OP_PONG, b"")
        ws.send_text("after pong")
        f = ws.recv_frame()
        assert (f.opcode, f.payload) == (OP_TEXT, b"after pong")
        assert ws.try_recv_frame(0.3) is None


def test_ping_between_fragments(echo_server):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_frame(OP_TEXT, b"frag1", fin=False)
        ws.send_frame(OP_PING, b"in between")
        f = ws.recv_frame()
        assert (f.opcode, f.payload) == (OP_PONG, b"in between"), f
        ws.send_frame(OP_CONT, b"frag2", fin=True)
        assert ws.recv_message() == (OP_TEXT, b"frag1frag2")


def test_pongs_when_peer_not_reading(echo_server):
    """Pings sent while the server's queue towards us is backed up: the newest
    ping is answered, no pong is invented, duplicated or reordered."""
    with RawWebSocket.connect(echo_server.port, timeout=T(10)) as ws:
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
        sender = ws.sock.dup()          # own timeout, independent of the reader
        sender.settimeout(T(30))
        big = os.urandom(8 * MiB)
        sent = [f"ping-{i:02d}".encode() for i in range(50)]
        send_errors = []

        def send_all():
            try:
                sender.sendall(build_frame(OP_BINARY, big))
                for p in sent:
                    sender.sendall(build_frame(OP_PING, p))
            except OSError as e:
                send_errors.append(repr(e))

        t = threading.Thread(target=send_all, daemon=True)
        t.start()
        time.sleep(1.0)  # let the echo back up in the server
        got_echo, pongs, parts = None, [], []
        deadline = time.monotonic() + T(30)
        while time.monotonic() < deadline:
            if got_echo is not None and pongs and pongs[-1] == sent[-1]:
                break
            f = ws.try_recv_frame(max(0.01, min(1.0, deadline - time.monotonic())))
            if f is None:
                continue
            if f.opcode == OP_PONG:
                pongs.append(f.payload)
            elif f.opcode in (OP_BINARY, OP_CONT):
                parts.append(f.payload)
                if f.fin:
                    got_echo = b"".join(parts)
            else:
                pytest.fail(f"unexpected frame {f!r}")
        t.join(T(10))
        sender.close()
        assert not send_errors, send_errors
        assert got_echo == big, "8 MiB echo incomplete or wrong"
        assert pongs, "no pong at all"
        assert all(p in sent for p in pongs), pongs
        idx = [sent.index(p) for p in pongs]
        assert idx == sorted(set(idx)), f"pongs duplicated or reordered: {pongs}"
        assert pongs[-1] == sent[-1], f"newest ping not answered: {pongs[-3:]}"


# ---------------------------------------------------------------------------
# close handshake
# ---------------------------------------------------------------------------

# 1012-1014 (registered later for servers/gateways) are left out on purpose:
# the contract does not say whether a client may send them.
@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                  3000, 3999, 4000, 4999])
def test_valid_close_code_echoed(echo_server, code):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_close(code, b"reason")
        f = ws.expect_close(code, reply=False)
        assert f.close_code == code


def test_empty_close_answered_with_1000(echo_server):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_frame(OP_CLOSE, b"")
        f = ws.recv_frame()
        assert f.opcode == OP_CLOSE
        assert f.close_code == 1000, f
        ws.assert_tcp_closed()


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999,
                                  5000, 65535])
def test_invalid_close_code_1002(echo_server, code):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_close(code)
        ws.expect_close(1002)


def test_close_one_byte_payload_1002(echo_server):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_frame(OP_CLOSE, b"\x03")
        ws.expect_close(1002)


def test_close_invalid_utf8_reason_1007(echo_server):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_frame(OP_CLOSE, close_payload(1000) + b"\xce\xba\xed\xa0\x80abc")
        ws.expect_close(1007)


def test_close_reason_max_length_ok(echo_server):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_close(1000, "*" * 123)
        ws.expect_close(1000, reply=False)


def test_no_echo_after_close(echo_server):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_raw(build_frame(OP_CLOSE, close_payload(1000)) + build_frame(OP_TEXT, b"late")
                    + build_frame(OP_PING, b"late"))
        f = ws.recv_frame()
        assert f.opcode == OP_CLOSE and f.close_code == 1000, f
        closed, extra = wait_closed(ws.sock, T(3))
        assert closed
        assert extra == b"", f"frames after the close: {extra[:40]!r}"


# ---------------------------------------------------------------------------
# frame rule violations
# ---------------------------------------------------------------------------

def test_unmasked_frame_1002(echo_server):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_frame(OP_TEXT, b"unmasked", mask=False)
        ws.expect_close(1002)


@pytest.mark.parametrize("rsv", [1, 2, 3, 4, 5, 6, 7])
def test_rsv_bits_without_extension_1002(echo_server, rsv):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_frame(OP_TEXT, b"rsv", rsv=rsv)
        ws.expect_close(1002)


def test_rsv2_with_deflate_negotiated_1002(echo_server):
    with RawWebSocket.connect(echo_server.port, extensions="permessage-deflate") as ws:
        assert "permessage-deflate" in (ws.response.header("sec-websocket-extensions") or "")
        ws.send_frame(OP_TEXT, b"rsv", rsv=2)
        ws.expect_close(1002)


def test_rsv1_on_control_frame_with_deflate_1002(echo_server):
    with RawWebSocket.connect(echo_server.port, extensions="permessage-deflate") as ws:
        ws.send_frame(OP_PING, b"", rsv=4)
        ws.expect_close(1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_reserved_opcode_1002(echo_server, opcode):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_frame(opcode, b"reserved")
        ws.expect_close(1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_control_frame_over_125_1002(echo_server, opcode):
    with RawWebSocket.connect(echo_server.port) as ws:
        pl = close_payload(1000, "*" * 124) if opcode == OP_CLOSE else b"*" * 126
        ws.send_frame(opcode, pl)
        ws.expect_close(1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_fragmented_control_frame_1002(echo_server, opcode):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_frame(opcode, b"\x03\xe8a" if opcode == OP_CLOSE else b"frag", fin=False)
        ws.expect_close(1002)


@pytest.mark.parametrize("fin", [True, False])
def test_continuation_without_start_1002(echo_server, fin):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_frame(OP_CONT, b"orphan", fin=fin)
        ws.expect_close(1002)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_new_data_frame_inside_fragmented_message_1002(echo_server, opcode):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_frame(OP_TEXT, b"start", fin=False)
        ws.send_frame(opcode, b"again", fin=True)
        ws.expect_close(1002)


def test_64bit_length_with_top_bit_set_1002(echo_server):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_raw(struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 63) + b"\x00\x00\x00\x00")
        ws.expect_close(1002)


def test_invalid_utf8_text_1007(echo_server):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_text(b"valid then \xc0\xaf invalid")
        ws.expect_close(1007)


def test_invalid_utf8_across_fragments_1007(echo_server):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_frame(OP_TEXT, b"abc\xf0\x9f", fin=False)   # valid prefix
        ws.send_frame(OP_CONT, b"\x98", fin=False)          # still a valid prefix
        assert ws.try_recv_frame(0.3) is None
        ws.send_frame(OP_CONT, b"\x28", fin=True)           # broken 4-byte sequence
        ws.expect_close(1007)


def test_truncated_utf8_at_message_end_1007(echo_server):
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_frame(OP_TEXT, b"abc\xe2\x82", fin=False)
        ws.send_frame(OP_CONT, b"", fin=True)
        ws.expect_close(1007)


def test_invalid_utf8_fail_fast_within_incomplete_frame(echo_server):
    """The close must come as soon as the bad byte arrives, even though the
    frame it is in has not been fully received."""
    with RawWebSocket.connect(echo_server.port) as ws:
        body = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5" + b"\xf4\x90\x80\x80" + b"x" * 1000
        key = os.urandom(4)
        from conduit_harness import apply_mask
        masked = apply_mask(body, key)
        ws.send_raw(frame_header(OP_TEXT, len(body), True, 0, key) + masked[:11])
        assert ws.try_recv_frame(0.5) is None, "closed on a valid prefix"
        ws.send_raw(masked[11:13])          # \xf4\x90: \x90 is the bad byte
        ws.expect_close(1007, timeout=T(2))


def test_text_valid_utf8_edge_cases_echoed(echo_server):
    samples = ["\u0000", "\u007f", "\u0080", "\u07ff", "\u0800", "\uffff", "\U00010000",
               "\U0010ffff", "\ufeff", "\ufffd" * 10, "κόσμε"]
    with RawWebSocket.connect(echo_server.port) as ws:
        for s in samples:
            ws.send_text(s.encode("utf-8"))
            assert ws.recv_message() == (OP_TEXT, s.encode("utf-8"))


# ---------------------------------------------------------------------------
# size limit (own server with a small echo limit)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_limit_server():
    from conduit_harness import ConduitServer
    s = ConduitServer(["--echo-max-message-size", "1000"])
    s.start()
    yield s
    s.stop()
    assert not s.sanitizer_reports(), s.stderr_tail(80)


def test_message_at_limit_ok(small_limit_server):
    with RawWebSocket.connect(small_limit_server.port) as ws:
        ws.send_binary(b"a" * 1000)
        assert ws.recv_message() == (OP_BINARY, b"a" * 1000)


def test_message_over_limit_1009_before_payload(small_limit_server):
    with RawWebSocket.connect(small_limit_server.port) as ws:
        ws.send_raw(frame_header(OP_BINARY, 1001, True, 0, os.urandom(4)))  # header only
        ws.expect_close(1009, timeout=T(2))


def test_message_over_limit_64bit_header_1009(small_limit_server):
    with RawWebSocket.connect(small_limit_server.port) as ws:
        ws.send_raw(frame_header(OP_BINARY, 1 << 40, True, 0, os.urandom(4)))
        ws.expect_close(1009, timeout=T(2))


def test_fragmented_message_over_limit_1009(small_limit_server):
    with RawWebSocket.connect(small_limit_server.port) as ws:
        ws.send_frame(OP_TEXT, b"a" * 600, fin=False)
        assert ws.try_recv_frame(0.3) is None
        ws.send_raw(frame_header(OP_CONT, 600, True, 0, os.urandom(4)))   # header only
        ws.expect_close(1009, timeout=T(2))


def test_compressed_message_over_limit_1009(small_limit_server):
    import zlib
    with RawWebSocket.connect(small_limit_server.port, extensions="permessage-deflate") as ws:
        assert "permessage-deflate" in (ws.response.header("sec-websocket-extensions") or "")
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = c.compress(b"a" * 100000) + c.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        ws.send_frame(OP_BINARY, data[:-4], rsv=4)
        ws.expect_close(1009, timeout=T(2))


def test_ws_max_message_size_does_not_apply_to_echo(server):
    srv = server("--ws-max-message-size", "1000")
    with RawWebSocket.connect(srv.port) as ws:
        ws.send_binary(b"z" * 50000)
        assert ws.recv_message() == (OP_BINARY, b"z" * 50000)


# ---------------------------------------------------------------------------
# peers that vanish
# ---------------------------------------------------------------------------

class EchoProbe(threading.Thread):
    """Echoes a message every 50 ms on its own connection and records
    failures and the slowest round trip."""

    def __init__(self, port: int, seconds: float):
        super().__init__(daemon=True)
        self.port, self.seconds = port, seconds
        self.errors: list[str] = []
        self.count = 0
        self.worst = 0.0

    def run(self):
        try:
            with RawWebSocket.connect(self.port, timeout=T(5)) as ws:
                end = time.monotonic() + self.seconds
                i = 0
                while time.monotonic() < end and i < 10000:
                    m = f"probe-{i}".encode()
                    t0 = time.monotonic()
                    ws.send_text(m)
                    got = ws.recv_message(timeout=T(5))
                    self.worst = max(self.worst, time.monotonic() - t0)
                    if got != (OP_TEXT, m):
                        self.errors.append(f"wrong echo {got!r}")
                        return
                    self.count += 1
                    i += 1
                    time.sleep(0.05)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(e))


def test_client_reset_during_16mib_echo(server):
    srv = server("--workers", "2")
    probe = EchoProbe(srv.port, seconds=T(6))
    probe.start()
    big = os.urandom(16 * MiB)
    for _ in range(3):
        s = connect(srv.port, timeout=T(5))
        req, _ = upgrade_request("/echo", f"127.0.0.1:{srv.port}")
        s.sendall(req)
        r = read_http_response(s, read_body=False)
        assert r.status == 101
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * KiB)
        s.settimeout(T(3))
        try:
            s.sendall(build_frame(OP_BINARY, big))
        except (socket.timeout, TimeoutError, OSError):
            pass  # the server stopped reading while we do not read: fine
        try:
            s.recv(1000)  # take a little of the echo: the server is mid-write
        except OSError:
            pass
        set_linger_reset(s)
        s.close()
        time.sleep(0.3)
    probe.join(T(20))
    assert not probe.is_alive(), "echo probe stalled"
    assert not probe.errors, probe.errors
    assert probe.count > 10, f"only {probe.count} echoes in {T(6)}s"
    assert probe.worst < T(2), f"an echo took {probe.worst:.2f}s while peers reset"
    assert http_get(srv.port, "/healthz").status == 200


def test_client_reset_mid_frame_and_mid_handshake(server):
    srv = server()
    for i in range(20):
        s = connect(srv.port)
        if i % 2:
            req, _ = upgrade_request("/echo", f"127.0.0.1:{srv.port}")
            s.sendall(req[: len(req) // 2])
        else:
            with RawWebSocket.connect(srv.port) as ws:
                ws.send_raw(frame_header(OP_BINARY, 100000, True, 0, b"abcd") + b"x" * 5000)
                set_linger_reset(ws.sock)
        set_linger_reset(s)
        s.close()
    with RawWebSocket.connect(srv.port) as ws:
        ws.send_text("alive")
        assert ws.recv_message() == (OP_TEXT, b"alive")


def test_half_closed_client(server):
    srv = server()
    probe = EchoProbe(srv.port, seconds=T(3))
    probe.start()
    ws = RawWebSocket.connect(srv.port)
    ws.send_text("then half-close")
    ws.sock.shutdown(socket.SHUT_WR)
    f = ws.try_recv_frame(T(3))
    if f is not None:
        assert f.opcode in (OP_TEXT, OP_CLOSE), f
    closed, _ = wait_closed(ws.sock, T(10))
    ws.close_socket()
    assert closed, "server never closed a connection whose peer half-closed"
    probe.join(T(15))
    assert not probe.errors, probe.errors
    assert probe.count > 5


def test_many_abrupt_disconnects_while_echoing(server):
    srv = server("--workers", "2")
    probe = EchoProbe(srv.port, seconds=T(3))
    probe.start()
    for i in range(60):
        with RawWebSocket.connect(srv.port) as ws:
            ws.send_binary(os.urandom(200000))
            if i % 3 == 0:
                set_linger_reset(ws.sock)
    probe.join(T(15))
    assert not probe.errors, probe.errors
    assert http_get(srv.port, "/healthz").status == 200


# ---------------------------------------------------------------------------
# heartbeat and idle timeout
# ---------------------------------------------------------------------------

def test_heartbeat_closes_silent_client(server):
    srv = server("--ws-heartbeat-interval", "1", "--ws-heartbeat-timeout", "2")
    with RawWebSocket.connect(srv.port, timeout=T(15)) as ws:
        t0 = time.monotonic()
        timeline = []
        ended = None
        deadline = t0 + T(12)
        for _ in range(200):          # never answers anything
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                f = ws.recv_frame(left)
            except ConnectionClosed:
                ended = time.monotonic() - t0
                break
            except (socket.timeout, TimeoutError):
                break
            timeline.append((round(time.monotonic() - t0, 2), f))
        assert ended is not None, f"connection still open after {T(12)}s; frames: {timeline}"
        pings = [t for t, f in timeline if f.opcode == OP_PING]
        assert pings, f"no heartbeat ping before the close; frames: {timeline}"
        assert pings[0] >= 0.5, f"first ping too early at {pings[0]}s"
        closes = [(t, f) for t, f in timeline if f.opcode == OP_CLOSE]
        if closes:
            t_close, c = closes[0]
            assert c.close_code == 1001, c
            assert c.close_reason == b"heartbeat timeout", c
            assert 1.5 <= t_close <= T(4.5), f"heartbeat close at {t_close}s, expected 2-3s"
        else:
            assert 1.5 <= ended <= T(4.5), f"closed at {ended:.2f}s, expected 2-3s"
        others = [f for t, f in timeline if f.opcode not in (OP_PING, OP_CLOSE)]
        assert not others, others


def test_heartbeat_keeps_ponging_client(server):
    srv = server("--ws-heartbeat-interval", "1", "--ws-heartbeat-timeout", "2")

    async def go():
        async with ws_connect(srv.ws_url()) as ws:   # answers pings by itself
            await asyncio.sleep(4.5)
            await ws.send("still open")
            assert await ws.recv() == "still open"
    run(go(), T(20))


def test_heartbeat_raw_pong_keeps_alive(server):
    srv = server("--ws-heartbeat-interval", "1", "--ws-heartbeat-timeout", "2")
    with RawWebSocket.connect(srv.port) as ws:
        end = time.monotonic() + 4.5
        pings = 0
        while time.monotonic() < end:
            f = ws.try_recv_frame(0.2)
            if f is None:
                continue
            assert f.opcode == OP_PING, f
            pings += 1
            ws.send_frame(OP_PONG, f.payload)
        assert pings >= 2
        ws.send_text("ok")
        assert ws.recv_message(auto_pong=True) == (OP_TEXT, b"ok")


def test_idle_timeout_closes_silent_client(server):
    srv = server("--ws-idle-timeout", "1")
    with RawWebSocket.connect(srv.port) as ws:
        t0 = time.monotonic()
        f = ws.expect_close(1001, timeout=T(4))
        dt = ws.close_frame_at - t0
        assert f.close_reason == b"idle timeout", f
        assert 0.8 <= dt <= T(3), f"idle close after {dt:.2f}s, expected ~1s"


def test_idle_timeout_pings_do_not_count(server):
    srv = server("--ws-idle-timeout", "1")
    with RawWebSocket.connect(srv.port) as ws:
        t0 = time.monotonic()
        close = None
        closed = False
        for _ in range(40):
            try:
                ws.send_frame(OP_PING, b"keepalive?")
            except ConnectionClosed:
                pass
            frames, closed = ws.drain(0.25)
            assert all(f.opcode in (OP_PONG, OP_CLOSE) for f in frames), frames
            close = next((f for f in frames if f.opcode == OP_CLOSE), None)
            if close is not None or closed or time.monotonic() - t0 > T(4):
                break
        assert close is not None, "pings alone kept an idle connection open (no close frame)"
        assert close.close_code == 1001, close


def test_idle_timeout_active_client_stays(server):
    srv = server("--ws-idle-timeout", "1")
    with RawWebSocket.connect(srv.port) as ws:
        for i in range(8):
            ws.send_text(f"tick {i}")
            assert ws.recv_message() == (OP_TEXT, f"tick {i}".encode())
            time.sleep(0.35)


def test_protocol_failure_closes_tcp_without_client_close(echo_server):
    """The client never answers the server's close: the server still closes
    TCP by itself, shortly after (close_timeout)."""
    with RawWebSocket.connect(echo_server.port) as ws:
        ws.send_frame(OP_TEXT, b"bad", rsv=2)
        t0 = time.monotonic()
        f = ws.recv_frame(T(2))
        assert f.opcode == OP_CLOSE and f.close_code == 1002, f
        closed, _ = wait_closed(ws.sock, T(8))
        assert closed, "server kept the connection open waiting for a close that never came"
        assert time.monotonic() - t0 <= T(7)
