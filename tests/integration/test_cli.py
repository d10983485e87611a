"""Command line, environment and process behaviour of build/conduit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from conduit_harness import (
    RawWebSocket, T, conduit_bin, http_get, ipv6_available,
    parse_addr,
)


def run_conduit(*args, env: dict | None = None, timeout: float | None = None):
    """Run the binary to completion (for flags that make it exit)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    e.update(env or {})
    try:
        return subprocess.run([conduit_bin(), *args], env=e, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout or T(10))
    except subprocess.TimeoutExpired as ex:
        pytest.fail(f"conduit {args} did not exit within {ex.timeout}s "
                    f"(stdout={ex.stdout!r}, stderr={ex.stderr!r})")


def nonempty_lines(text: str) -> list[str]:
    # sanitizer builds may print nothing else; ignore blank lines only
    return [l for l in text.splitlines() if l.strip()]


def test_help_prints_usage_and_exits_0():
    r = run_conduit("--help")
    assert r.returncode == 0, r.stderr
    assert "--listen" in r.stdout, r.stdout
    assert "usage" in r.stdout.lower(), r.stdout
    for flag in ("--workers", "--config", "--version"):
        assert flag in r.stdout, f"{flag} missing from --help"
    assert r.stderr.strip() == "", r.stderr


def test_version_prints_name_and_version():
    r = run_conduit("--version")
    assert r.returncode == 0, r.stderr
    first = r.stdout.strip().splitlines()[0] if r.stdout.strip() else ""
    assert re.match(r"^conduit \d+\.\d+\.\d+", first), repr(r.stdout)


BAD_FLAGS = [
    (["--no-such-flag"], "--no-such-flag"),
    (["--workers", "abc"], "--workers"),
    (["--workers=abc"], "--workers"),
    (["--workers", "1025"], "--workers"),
    (["--workers", "-1"], "--workers"),
    (["--workers"], "--workers"),                      # missing value
    (["--listen", "nonsense"], "--listen"),
    (["--listen", "127.0.0.1:99999"], "--listen"),
    (["--listen", "127.0.0.1"], "--listen"),
    (["--listen"], "--listen"),
    (["--handshake-timeout", "abc"], "--handshake-timeout"),
    (["--ws-heartbeat-interval", "-5"], "--ws-heartbeat-interval"),
    (["--ws-heartbeat-timeout", "x"], "--ws-heartbeat-timeout"),
    (["--ws-idle-timeout", "soon"], "--ws-idle-timeout"),
    (["--ws-max-message-size", "abc"], "--ws-max-message-size"),
    (["--echo-max-message-size", "-1"], "--echo-max-message-size"),
    (["--echo-enabled", "maybe"], "--echo-enabled"),
    (["--ws-compression=perhaps"], "--ws-compression"),
    (["--log-level", "loud"], "--log-level"),
    (["--config", "/nonexistent/conduit-test.yaml"], ("--config", "conduit-test.yaml")),
]


@pytest.mark.parametrize("args,name", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_exits_2_with_one_line(args, name):
    r = run_conduit("--listen", "127.0.0.1:0", *args) if args[0] != "--listen" else run_conduit(*args)
    assert r.returncode == 2, f"exit {r.returncode}, stderr={r.stderr!r}"
    lines = nonempty_lines(r.stderr)
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    names = name if isinstance(name, tuple) else (name,)
    assert any(n in lines[0] for n in names), f"{names!r} not named in {lines[0]!r}"
    assert lines[0].startswith("conduit:"), lines[0]


BAD_ENV = [
    ({"CONDUIT_WORKERS": "abc"}, ("CONDUIT_WORKERS", "--workers")),
    ({"CONDUIT_LOG_LEVEL": "loud"}, ("CONDUIT_LOG_LEVEL", "--log-level")),
    ({"CONDUIT_HANDSHAKE_TIMEOUT": "x"}, ("CONDUIT_HANDSHAKE_TIMEOUT", "--handshake-timeout")),
    ({"CONDUIT_ECHO_ENABLED": "maybe"}, ("CONDUIT_ECHO_ENABLED", "--echo-enabled")),
    ({"CONDUIT_LISTEN": "nonsense"}, ("CONDUIT_LISTEN", "--listen")),
    ({"CONDUIT_WS_MAX_MESSAGE_SIZE": "huge"}, ("CONDUIT_WS_MAX_MESSAGE_SIZE", "--ws-max-message-size")),
]


@pytest.mark.parametrize("env,names", BAD_ENV, ids=[next(iter(e)) for e, _ in BAD_ENV])
def test_bad_env_exits_2_with_one_line(env, names):
    if "CONDUIT_LISTEN" not in env:
        env = dict(env, CONDUIT_LISTEN="127.0.0.1:0")
    r = run_conduit(env=env)
    assert r.returncode == 2, f"exit {r.returncode}, stderr={r.stderr!r}"
    lines = nonempty_lines(r.stderr)
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert any(n in lines[0] for n in names), f"none of {names} named in {lines[0]!r}"


def test_equals_form_and_env_form_start(server):
    srv = server("--workers=1", "--ws-compression=false", env={"CONDUIT_HANDSHAKE_TIMEOUT": "5"})
    assert http_get(srv.port).status == 200


def test_env_listen_is_used(server):
    srv = server(listen=(), env={"CONDUIT_LISTEN": "127.0.0.1:0"})
    assert srv.host == "127.0.0.1"
    assert http_get(srv.port).status == 200


def test_env_listen_comma_separated(server):
    srv = server(listen=(), env={"CONDUIT_LISTEN": "127.0.0.1:0,127.0.0.1:0"}, wait=False)
    addrs = srv.wait_listening(2)
    assert len({a[1] for a in addrs}) == 2
    for host, port in addrs:
        assert http_get(port, host=host).status == 200


def test_logs_are_json_lines(server):
    srv = server()
    assert http_get(srv.port).status == 200
    time.sleep(0.2)
    assert srv.lines, "no log lines at all"
    for line in srv.lines:
        if not line.strip():
            continue
        assert line.startswith("{"), f"non-JSON log line {line!r}"
    for ev in srv.events:
        for k in ("ts", "level", "event"):
            assert k in ev, f"log record without {k!r}: {ev}"
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", ev["ts"]), ev["ts"]
        assert ev["level"] in ("debug", "info", "warn", "error"), ev


def test_one_listening_line_per_address_with_actual_port(server):
    srv = server("--workers", "2")
    evs = srv.listening_events()
    assert len(evs) == 1, f"expected one 'listening' line for one --listen, got {evs}"
    host, port = parse_addr(evs[0]["addr"])
    assert host == "127.0.0.1" and port > 0


def test_port_0_is_shared_by_all_workers(server):
    srv = server("--workers", "2")
    # many connections on the one reported port all get answered
    for _ in range(20):
        assert http_get(srv.port).status == 200


def test_two_listen_addresses(server):
    srv = server(listen=("127.0.0.1:0", "127.0.0.1:0"))
    assert len(srv.addrs) == 2
    ports = {p for _, p in srv.addrs}
    assert len(ports) == 2, srv.addrs
    for host, port in srv.addrs:
        assert http_get(port, host=host).status == 200
        with RawWebSocket.connect(port, host=host) as ws:
            ws.send_text("hi")
            assert ws.recv_message() == (1, b"hi")


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback on this machine")
def test_ipv6_listen(server):
    srv = server(listen=("[::1]:0",))
    assert srv.host == "::1", srv.addrs
    r = http_get(srv.port, host="::1")
    assert r.status == 200
    with RawWebSocket.connect(srv.port, host="::1") as ws:
        ws.send_binary(b"\x00\x01")
        assert ws.recv_message() == (2, b"\x00\x01")


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback on this machine")
def test_ipv4_and_ipv6_together(server):
    srv = server(listen=("127.0.0.1:0", "[::1]:0"))
    hosts = {h for h, _ in srv.addrs}
    assert hosts == {"127.0.0.1", "::1"}, srv.addrs
    for host, port in srv.addrs:
        assert http_get(port, host=host).status == 200


def test_sigterm_exits_0_promptly(server):
    srv = server()
    assert http_get(srv.port).status == 200
    t0 = time.monotonic()
    rc = srv.stop(signal.SIGTERM, timeout=T(5))
    assert rc == 0, f"exit code {rc} after SIGTERM:\n{srv.stderr_tail()}"
    assert time.monotonic() - t0 < T(5)


def test_sigterm_exits_0_with_open_websockets(server):
    srv = server("--workers", "2")
    conns = [RawWebSocket.connect(srv.port) for _ in range(10)]
    try:
        conns[0].send_text("x")
        assert conns[0].recv_message() == (1, b"x")
        t0 = time.monotonic()
        rc = srv.stop(signal.SIGTERM, timeout=T(8))
        assert rc == 0, f"exit code {rc} after SIGTERM with open connections:\n{srv.stderr_tail()}"
        assert time.monotonic() - t0 < T(8)
    finally:
        for c in conns:
            c.close_socket()


def test_echo_disabled(server):
    srv = server("--echo-enabled", "false")
    with pytest.raises(AssertionError):
        RawWebSocket.connect(srv.port, path="/echo")
    r = http_get(srv.port, "/echo", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                             "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                             "Sec-WebSocket-Version": "13"})
    assert r.status == 404


def test_compression_disabled(server):
    srv = server("--ws-compression", "false")
    with RawWebSocket.connect(srv.port, extensions="permessage-deflate; client_max_window_bits") as ws:
        assert ws.response.header("sec-websocket-extensions") is None
        ws.send_text("abc")
        assert ws.recv_message() == (1, b"abc")


# ---------------------------------------------------------------------------
# every flag is also an environment variable (and a config file key)
# ---------------------------------------------------------------------------

def _upgrade_status(port: int) -> int:
    try:
        with RawWebSocket.connect(port, expect_status=None) as ws:
            return ws.response.status
    except AssertionError:
        return -1


def test_env_echo_enabled_false(server):
    srv = server(env={"CONDUIT_ECHO_ENABLED": "false"})
    assert _upgrade_status(srv.port) == 404


def test_flag_overrides_env(server):
    srv = server("--echo-enabled", "true", env={"CONDUIT_ECHO_ENABLED": "false"})
    assert _upgrade_status(srv.port) == 101


def test_env_ws_compression_false(server):
    srv = server(env={"CONDUIT_WS_COMPRESSION": "false"})
    with RawWebSocket.connect(srv.port, extensions="permessage-deflate") as ws:
        assert ws.response.header("sec-websocket-extensions") is None


def test_env_echo_max_message_size(server):
    srv = server(env={"CONDUIT_ECHO_MAX_MESSAGE_SIZE": "1000"})
    with RawWebSocket.connect(srv.port) as ws:
        ws.send_binary(b"x" * 1001)
        ws.expect_close(1009)


def test_env_ws_idle_timeout(server):
    srv = server(env={"CONDUIT_WS_IDLE_TIMEOUT": "1"})
    with RawWebSocket.connect(srv.port) as ws:
        ws.expect_close(1001, timeout=T(4))


def test_env_workers_and_log_level(server):
    srv = server(env={"CONDUIT_WORKERS": "1", "CONDUIT_LOG_LEVEL": "debug"})
    assert http_get(srv.port).status == 200


def test_config_file(server, tmp_path):
    cfg = tmp_path / "conduit.yaml"
    cfg.write_text("echo_max_message_size: 1000\nws_compression: false\n")
    srv = server("--config", str(cfg))
    with RawWebSocket.connect(srv.port, extensions="permessage-deflate") as ws:
        assert ws.response.header("sec-websocket-extensions") is None
        ws.send_binary(b"x" * 1001)
        ws.expect_close(1009)


def test_config_file_bad_value_exits_2(tmp_path):
    cfg = tmp_path / "conduit.yaml"
    cfg.write_text("workers: abc\n")
    r = run_conduit("--listen", "127.0.0.1:0", "--config", str(cfg))
    assert r.returncode == 2, f"exit {r.returncode}, stderr={r.stderr!r}"
    lines = nonempty_lines(r.stderr)
    assert len(lines) == 1 and "workers" in lines[0], lines
