"""HTTP/1.1 request handling: /healthz, 404s, the upgrade handshake and every
rejection with its exact status, Connection: close and the socket closed."""

from __future__ import annotations

import base64
import time

import pytest

from conduit_harness import (
    RawWebSocket, T, connect, http_get, poll_readable, raw_exchange, read_http_response,
    upgrade_request, wait_closed, ws_accept, ws_key,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@pytest.fixture(scope="module")
def srv(shared_server):
    return shared_server


@pytest.fixture(autouse=True)
def _alive(shared_server):
    assert shared_server.alive(), shared_server.stderr_tail()
    yield
    assert shared_server.alive(), "conduit died during this test:\n" + shared_server.stderr_tail()


def req(lines: list[str], body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def upgrade_lines(path="/echo", method="GET", version="HTTP/1.1", host="localhost",
                  drop=(), extra=()):
    hdrs = [("Host", host), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", KEY), ("Sec-WebSocket-Version", "13")]
    hdrs = [(k, v) for k, v in hdrs if k not in drop] + list(extra)
    return [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in hdrs]


def assert_rejected(srv, request: bytes, status: int, *, connection_close: bool = True):
    resp, closed, after = raw_exchange(srv.port, request)
    assert resp.status == status, f"expected {status}, got {resp.status}: {resp.raw_head!r}"
    if connection_close:
        assert "close" in resp.header_tokens("connection"), \
            f"{status} response without Connection: close: {resp.raw_head!r}"
    assert closed, f"socket left open after {status}"
    assert b"HTTP/1." not in after, f"more than one response: {after[:200]!r}"
    return resp


# ---------------------------------------------------------------------------
# plain HTTP
# ---------------------------------------------------------------------------

def test_healthz(srv):
    r = http_get(srv.port, "/healthz")
    assert r.status == 200
    assert r.json() == {"status": "ok"}
    ct = (r.header("content-type") or "").lower()
    assert ct.startswith("application/json"), ct


def test_healthz_closes_connection_after_response(srv):
    resp, closed, after = raw_exchange(srv.port, req(["GET /healthz HTTP/1.1", "Host: x"]))
    assert resp.status == 200
    assert closed
    assert after == b""


@pytest.mark.parametrize("path", ["/", "/nope", "/echo/x", "/healthz/x", "/ECHO"])
def test_unknown_path_plain_get_404(srv, path):
    resp, closed, _ = raw_exchange(srv.port, req([f"GET {path} HTTP/1.1", "Host: x"]))
    if path == "/" and resp.status == 200:
        pytest.skip("/ serves a page in this build")
    assert resp.status == 404, resp.raw_head
    assert closed


@pytest.mark.parametrize("path", ["/nope", "/echox", "/ws-nope", "/healthz"])
def test_unknown_path_upgrade_404(srv, path):
    assert_rejected(srv, req(upgrade_lines(path=path)), 404)


def test_echo_without_upgrade_header_426(srv):
    r = assert_rejected(srv, req(["GET /echo HTTP/1.1", "Host: x"]), 426)
    assert "websocket" in r.header_tokens("upgrade"), r.raw_head


def test_pipelined_request_after_404_never_answered(srv):
    two = req(["GET /nope HTTP/1.1", "Host: x"]) + req(["GET /healthz HTTP/1.1", "Host: x"])
    resp, closed, after = raw_exchange(srv.port, two)
    assert resp.status == 404
    assert closed
    assert b"HTTP/1." not in after, after


def test_pipelined_request_after_healthz_never_answered(srv):
    two = req(["GET /healthz HTTP/1.1", "Host: x"]) + req(["GET /healthz HTTP/1.1", "Host: x"])
    resp, closed, after = raw_exchange(srv.port, two)
    assert resp.status == 200
    assert closed
    assert b"HTTP/1." not in after, after


def test_pipelined_request_after_rejected_upgrade_never_answered(srv):
    two = req(upgrade_lines(drop=("Sec-WebSocket-Key",))) + req(["GET /healthz HTTP/1.1", "Host: x"])
    resp, closed, after = raw_exchange(srv.port, two)
    assert resp.status == 400
    assert closed
    assert b"HTTP/1." not in after, after


# ---------------------------------------------------------------------------
# limits
# ---------------------------------------------------------------------------

def test_request_line_over_4096_is_414(srv):
    assert_rejected(srv, req(["GET /" + "a" * 5000 + " HTTP/1.1", "Host: x"]), 414)


def test_request_line_just_under_limit_is_not_414(srv):
    line = "GET /" + "a" * (4096 - len("GET / HTTP/1.1") - 10) + " HTTP/1.1"
    assert len(line) < 4096
    resp, closed, _ = raw_exchange(srv.port, req([line, "Host: x"]))
    assert resp.status == 404


def test_header_section_over_8192_is_431(srv):
    assert_rejected(srv, req(["GET /healthz HTTP/1.1", "Host: x", "X-Big: " + "b" * 9000]), 431)


def test_header_section_over_8192_in_many_headers_is_431(srv):
    hdrs = [f"X-H{i}: " + "v" * 300 for i in range(30)]
    assert_rejected(srv, req(["GET /healthz HTTP/1.1", "Host: x"] + hdrs), 431)


def test_more_than_64_headers_is_431(srv):
    hdrs = [f"X-H{i}: v" for i in range(64)]  # + Host = 65 headers
    assert_rejected(srv, req(["GET /healthz HTTP/1.1", "Host: x"] + hdrs), 431)


def test_exactly_64_headers_is_accepted(srv):
    hdrs = [f"X-H{i}: v" for i in range(63)]  # + Host = 64 headers
    resp, _, _ = raw_exchange(srv.port, req(["GET /healthz HTTP/1.1", "Host: x"] + hdrs))
    assert resp.status == 200


def test_upgrade_with_64_headers_is_accepted(srv):
    hdrs = [f"X-H{i}: v" for i in range(59)]
    lines = upgrade_lines(host=f"127.0.0.1:{srv.port}") + hdrs
    assert len(lines) - 1 == 64
    with connect(srv.port) as s:
        s.sendall(req(lines))
        r = read_http_response(s, read_body=False)
        assert r.status == 101, r.raw_head


# ---------------------------------------------------------------------------
# malformed requests -> 400
# ---------------------------------------------------------------------------

BAD_400 = {
    "nul_in_header_value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "nul_in_request_line": b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n",
    "bare_cr_in_header_value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "bare_cr_line_end": b"GET /healthz HTTP/1.1\rHost: x\r\n\r\n",
    "bare_lf_line_ends": b"GET /healthz HTTP/1.1\nHost: x\n\n",
    "bare_lf_in_headers": b"GET /healthz HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
    "control_char_in_value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "del_char_in_value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n",
    "control_char_in_name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX\x02A: b\r\n\r\n",
    "obs_fold": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\n\r\n",
    "obs_fold_tab": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
    "space_before_colon": b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
    "tab_before_colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A\t: b\r\n\r\n",
    "empty_header_name": b"GET /healthz HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n",
    "header_without_colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "space_in_header_name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n",
    "request_line_two_spaces": b"GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "request_line_missing_version": b"GET /healthz\r\nHost: x\r\n\r\n",
    "request_line_extra_token": b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    "request_line_garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "request_line_lowercase_version": b"GET /healthz http/1.1\r\nHost: x\r\n\r\n",
    "request_line_bad_version": b"GET /healthz HTTP/x.y\r\nHost: x\r\n\r\n",
    "request_line_leading_space": b" GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "request_target_not_origin_form": b"GET healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "method_with_bad_char": b"G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "missing_host": b"GET /healthz HTTP/1.1\r\n\r\n",
    "duplicate_host": b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
}


@pytest.mark.parametrize("name", list(BAD_400))
def test_malformed_request_400(srv, name):
    assert_rejected(srv, BAD_400[name], 400)


def test_http2_request_line_505(srv):
    assert_rejected(srv, b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505)


def test_http2_upgrade_request_line_505(srv):
    assert_rejected(srv, req(upgrade_lines(version="HTTP/2.0")), 505)


def test_tab_inside_header_value_is_fine(srv):
    resp, _, _ = raw_exchange(srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\tb\r\n\r\n")
    assert resp.status == 200


# ---------------------------------------------------------------------------
# the upgrade handshake
# ---------------------------------------------------------------------------

def test_upgrade_ok_and_accept_key(srv):
    with connect(srv.port) as s:
        s.sendall(req(upgrade_lines(host=f"127.0.0.1:{srv.port}")))
        r = read_http_response(s, read_body=False)
        assert r.status == 101, r.raw_head
        assert r.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert "websocket" in r.header_tokens("upgrade")
        assert "upgrade" in r.header_tokens("connection")
        assert r.header("sec-websocket-protocol") is None
        assert r.header("sec-websocket-extensions") is None


@pytest.mark.parametrize("method", ["POST", "PUT", "HEAD", "DELETE", "OPTIONS"])
def test_upgrade_with_non_get_method_405(srv, method):
    assert_rejected(srv, req(upgrade_lines(method=method)), 405)


def test_upgrade_http10_400(srv):
    assert_rejected(srv, req(upgrade_lines(version="HTTP/1.0")), 400)


def test_upgrade_missing_host_400(srv):
    assert_rejected(srv, req(upgrade_lines(drop=("Host",))), 400)


def test_upgrade_duplicate_host_400(srv):
    assert_rejected(srv, req(upgrade_lines(extra=[("Host", "other")])), 400)


@pytest.mark.parametrize("value", ["keep-alive", "close", "keep-alive, close", "upgradex", "x-upgrade"])
def test_upgrade_connection_without_upgrade_token_400(srv, value):
    lines = upgrade_lines(drop=("Connection",), extra=[("Connection", value)])
    assert_rejected(srv, req(lines), 400)


def test_upgrade_without_connection_header_400(srv):
    assert_rejected(srv, req(upgrade_lines(drop=("Connection",))), 400)


def test_upgrade_wrong_upgrade_token(srv):
    lines = upgrade_lines(drop=("Upgrade",), extra=[("Upgrade", "h2c")])
    resp, closed, _ = raw_exchange(srv.port, req(lines))
    assert resp.status in (400, 426), resp.raw_head
    assert "close" in resp.header_tokens("connection")
    assert closed


def test_upgrade_missing_key_400(srv):
    assert_rejected(srv, req(upgrade_lines(drop=("Sec-WebSocket-Key",))), 400)


@pytest.mark.parametrize("key", [
    "not base64 !!",
    base64.b64encode(b"x" * 15).decode(),
    base64.b64encode(b"x" * 17).decode(),
    base64.b64encode(b"x" * 32).decode(),
    "dGhlIHNhbXBsZSBub25jZQ",      # missing padding
    "dGhlIHNhbXBsZSBub25jZQ=x",
    "",
])
def test_upgrade_bad_key_400(srv, key):
    lines = upgrade_lines(drop=("Sec-WebSocket-Key",), extra=[("Sec-WebSocket-Key", key)])
    assert_rejected(srv, req(lines), 400)


def test_upgrade_duplicate_key_400(srv):
    lines = upgrade_lines(extra=[("Sec-WebSocket-Key", ws_key())])
    assert_rejected(srv, req(lines), 400)


def test_upgrade_missing_version_426(srv):
    r = assert_rejected(srv, req(upgrade_lines(drop=("Sec-WebSocket-Version",))), 426)
    assert r.header("sec-websocket-version") == "13", r.raw_head


@pytest.mark.parametrize("version", ["8", "12", "14", "abc", "13, 8"])
def test_upgrade_wrong_version_426(srv, version):
    lines = upgrade_lines(drop=("Sec-WebSocket-Version",), extra=[("Sec-WebSocket-Version", version)])
    r = assert_rejected(srv, req(lines), 426)
    assert r.header("sec-websocket-version") == "13", r.raw_head


@pytest.mark.parametrize("conn,upg", [
    ("keep-alive, Upgrade", "websocket"),
    ("Upgrade, keep-alive", "websocket"),
    ("UPGRADE", "WebSocket"),
    ("upgrade", "WEBSOCKET"),
    ("keep-alive,upgrade", "websocket"),
])
def test_upgrade_token_lists_case_insensitive(srv, conn, upg):
    lines = upgrade_lines(host=f"127.0.0.1:{srv.port}", drop=("Connection", "Upgrade"),
                          extra=[("Connection", conn), ("Upgrade", upg)])
    with connect(srv.port) as s:
        s.sendall(req(lines))
        r = read_http_response(s, read_body=False)
        assert r.status == 101, r.raw_head
        assert r.header("sec-websocket-accept") == ws_accept(KEY)


def test_upgrade_lowercase_header_names(srv):
    lines = ["GET /echo HTTP/1.1", f"host: 127.0.0.1:{srv.port}", "upgrade: WebSocket",
             "connection: Upgrade", f"sec-websocket-key: {KEY}", "sec-websocket-version: 13"]
    with connect(srv.port) as s:
        s.sendall(req(lines))
        r = read_http_response(s, read_body=False)
        assert r.status == 101, r.raw_head


def test_upgrade_with_query_string(srv):
    with RawWebSocket.connect(srv.port, path="/echo?x=1&y=2") as ws:
        ws.send_text("q")
        assert ws.recv_message() == (1, b"q")


def test_subprotocol_offer_gets_101_without_protocol(srv):
    with RawWebSocket.connect(srv.port, protocols="chat, superchat") as ws:
        assert ws.response.header("sec-websocket-protocol") is None, ws.response.raw_head
        ws.send_text("p")
        assert ws.recv_message() == (1, b"p")


def test_upgrade_request_split_in_small_pieces(srv):
    data, key = upgrade_request("/echo", f"127.0.0.1:{srv.port}")
    with connect(srv.port) as s:
        for i in range(0, len(data), 7):
            s.sendall(data[i:i + 7])
            time.sleep(0.002)
        r = read_http_response(s, read_body=False)
        assert r.status == 101
        assert r.header("sec-websocket-accept") == ws_accept(key)


def test_request_with_body_to_echo_is_not_upgraded(srv):
    lines = upgrade_lines(method="POST", extra=[("Content-Length", "5")])
    assert_rejected(srv, req(lines, b"hello"), 405)


# ---------------------------------------------------------------------------
# handshake timeout (own server with --handshake-timeout 1)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slow_srv():
    from conduit_harness import ConduitServer
    s = ConduitServer(["--handshake-timeout", "1"])
    s.start()
    yield s
    s.stop()
    assert not s.sanitizer_reports(), s.stderr_tail(80)


def test_handshake_timeout_slow_loris_408(slow_srv):
    request = req(upgrade_lines(host="x"))
    with connect(slow_srv.port, timeout=T(6)) as s:
        t0 = time.monotonic()
        cut_at = None
        # one byte every 200 ms: the whole request would take ~30 s
        for i in range(min(len(request), 40)):
            try:
                s.sendall(request[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                cut_at = time.monotonic() - t0
                break
            if poll_readable(s, 0.2):
                cut_at = time.monotonic() - t0
                break
        assert cut_at is not None, "slow-loris client never cut off"
        closed, got = wait_closed(s, T(3))
        assert closed, "no close after the 408"
        assert 0.7 <= cut_at <= T(2.5), f"cut off after {cut_at:.2f}s, expected ~1s"
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
        head = got.split(b"\r\n\r\n")[0].lower()
        assert b"connection: close" in head, head


def test_handshake_timeout_silent_client_closed(slow_srv):
    with connect(slow_srv.port, timeout=T(6)) as s:
        t0 = time.monotonic()
        closed, got = wait_closed(s, T(4))
        dt = time.monotonic() - t0
        assert closed, "silent connection not closed"
        assert 0.7 <= dt <= T(2.5), f"closed after {dt:.2f}s"
        assert got == b"" or got.startswith(b"HTTP/1.1 408"), got[:200]


def test_handshake_timeout_partial_request_408(slow_srv):
    with connect(slow_srv.port, timeout=T(6)) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        closed, got = wait_closed(s, T(4))
        dt = time.monotonic() - t0
        assert closed
        assert 0.7 <= dt <= T(2.5), f"closed after {dt:.2f}s"
        assert got.startswith(b"HTTP/1.1 408"), got[:200]


def test_handshake_timeout_does_not_hit_open_websocket(slow_srv):
    with RawWebSocket.connect(slow_srv.port) as ws:
        time.sleep(1.6)
        ws.send_text("still here")
        assert ws.recv_message() == (1, b"still here")


def test_server_still_serves_after_http_abuse(srv):
    assert http_get(srv.port, "/healthz").status == 200
