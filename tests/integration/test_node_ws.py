"""The /echo endpoint driven by node's `ws` client (tests/integration/node)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conduit_harness import T

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE = shutil.which("node") or "/usr/bin/node"

pytestmark = pytest.mark.skipif(
    not (NODE_DIR / "node_modules" / "ws").is_dir() or not os.path.exists(NODE),
    reason="node or tests/integration/node/node_modules missing (scripts/run-integration.sh installs them)")

KiB, MiB = 1024, 1024 * 1024


def node_client(spec: dict, timeout: float = 60) -> dict:
    spec = dict(spec, timeout_ms=int(T(timeout) * 1000))
    try:
        p = subprocess.run([NODE, str(NODE_DIR / "client.mjs"), json.dumps(spec)],
                           cwd=NODE_DIR, capture_output=True, text=True, timeout=T(timeout) + 10,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"node client hung: {spec['mode']} stdout={e.stdout!r} stderr={e.stderr!r}")
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert lines, f"no JSON from node (exit {p.returncode}): stdout={p.stdout!r} stderr={p.stderr[-2000:]!r}"
    out = json.loads(lines[-1])
    out["_exit"] = p.returncode
    out["_stderr"] = p.stderr[-2000:]
    return out


SIZES = [0, 1, 125, 126, 65535, 65536, 1 * MiB, 16 * MiB]


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_node_echo_sizes(echo_server, binary, deflate):
    out = node_client({"mode": "echo", "url": echo_server.ws_url(), "sizes": SIZES,
                       "binary": binary, "deflate": deflate}, timeout=120)
    assert out["ok"], out
    if deflate:
        assert "permessage-deflate" in out["extensions"], out["extensions"]
    else:
        assert out["extensions"] == "", out["extensions"]
    assert out["close"]["code"] == 1000, out["close"]


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_node_fragmented(echo_server, binary, deflate):
    out = node_client({"mode": "fragment", "url": echo_server.ws_url(),
                       "fragments": [1, 0, 125, 126, 4000, 65536, 7, 300000],
                       "binary": binary, "deflate": deflate})
    assert out["ok"], out
    assert out["frames"] == 8


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
def test_node_fragmented_utf8_split_code_points(echo_server, deflate):
    out = node_client({"mode": "fragment", "url": echo_server.ws_url(), "utf8": True,
                       "fragments": [1, 2, 3, 5, 7, 11], "repeat": 40, "binary": False,
                       "deflate": deflate})
    assert out["ok"], out


@pytest.mark.parametrize("code,reason", [(1000, ""), (1001, "bye"), (3000, "app"),
                                         (4000, "custom"), (4999, "x" * 100)])
def test_node_close_code_echoed(echo_server, code, reason):
    out = node_client({"mode": "close", "url": echo_server.ws_url(), "code": code, "reason": reason})
    assert out["ok"], out
    assert out["close"]["code"] == code, out["close"]


def test_node_close_without_code(echo_server):
    out = node_client({"mode": "close", "url": echo_server.ws_url()})
    assert out["ok"], out
    # ws sends an empty close frame; the server answers 1000 (ws reports 1005
    # for an empty close frame, 1000 when it carried 1000)
    assert out["close"]["code"] == 1000, out["close"]


def test_node_ping_pong(echo_server):
    payloads = ["", "00", "68656c6c6f", "ff" * 125]
    out = node_client({"mode": "ping", "url": echo_server.ws_url(), "payloads": payloads})
    assert out["ok"], out


def test_node_many_clients(server):
    srv = server("--workers", "2", "--ws-max-connections-per-ip", "0",
                 "--ws-max-pending-handshakes-per-ip", "0")
    out = node_client({"mode": "many", "url": srv.ws_url(), "clients": 100, "messages": 10,
                       "deflate": True}, timeout=90)
    assert out["ok"], out
    assert out["clients"] == 100
