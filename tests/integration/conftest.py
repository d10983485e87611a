"""pytest fixtures for driving the real build/conduit binary.

    def test_something(server):
        srv = server("--workers", "2", env={"CONDUIT_LOG_LEVEL": "debug"})
        srv.host, srv.port, srv.lines, srv.events, srv.proc

`server` is a factory: each call starts one process listening on
127.0.0.1:0 (pass listen=[...] to change that) and waits for its
"listening" log event. Every server a test started is stopped at teardown
with SIGTERM (SIGKILL after a deadline); the test then fails if the server
died on its own during the test or if a sanitizer reported anything.

The raw socket and frame helpers live in conduit_harness.py (importable
from every test module in this directory and from tests/conformance) and
are re-exported here.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conduit_harness import (  # noqa: E402  (re-exported helpers)
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
    ConduitServer, ConnectionClosed, Frame, HttpResponse, RawWebSocket,
    ServerStartError, T, apply_mask, build_frame, close_payload, connect,
    conduit_bin, frame_header, http_get, http_request, ipv6_available, raw_exchange, raw_ws,
    read_http_response, sanitize_mode, set_linger_reset, upgrade_request,
    wait_closed, ws_accept, ws_key,
)


__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "ConduitServer",
    "ConnectionClosed",
    "Frame",
    "HttpResponse",
    "RawWebSocket",
    "ServerStartError",
    "T",
    "apply_mask",
    "build_frame",
    "close_payload",
    "connect",
    "conduit_bin",
    "frame_header",
    "http_get",
    "http_request",
    "ipv6_available",
    "raw_exchange",
    "raw_ws",
    "read_http_response",
    "sanitize_mode",
    "set_linger_reset",
    "upgrade_request",
    "wait_closed",
    "ws_accept",
    "ws_key",
    "server", "shared_server", "echo_server",
]


def _finish(servers: list[ConduitServer]) -> list[str]:
    problems = []
    for s in servers:
        was_alive = s.alive()
        rc = s.stop()
        if not was_alive and not s.stopped_by_us and s.proc is not None:
            problems.append(f"conduit {s.command()} died during the test (exit {rc}):\n{s.stderr_tail()}")
        reports = s.sanitizer_reports()
        if reports:
            problems.append(f"sanitizer report ({', '.join(reports)}) from {s.command()}:\n"
                            + s.stderr_tail(80))
    return problems


@pytest.fixture
def server():
    """Factory: server(*flags, env=None, listen=("127.0.0.1:0",), wait=True)."""
    started: list[ConduitServer] = []

    def start(*flags, env: dict | None = None, listen=("127.0.0.1:0",),
              wait: bool = True, timeout: float | None = None) -> ConduitServer:
        s = ConduitServer(flags, env=env, listen=listen)
        started.append(s)
        try:
            s.start(wait_listening=wait, timeout=timeout)
        except ServerStartError as e:
            pytest.fail(str(e))
        return s

    yield start
    problems = _finish(started)
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture(scope="module")
def shared_server():
    """One default server per test module, for tests that only need /echo."""
    s = ConduitServer(())
    try:
        s.start()
    except ServerStartError as e:
        pytest.fail(str(e))
    yield s
    problems = _finish([s])
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture
def echo_server(shared_server):
    """The module's shared server, checked alive before and after each test."""
    if not shared_server.alive():
        pytest.fail("shared conduit server is not running:\n" + shared_server.stderr_tail())
    yield shared_server
    if not shared_server.alive():
        pytest.fail("conduit died during this test:\n" + shared_server.stderr_tail())
