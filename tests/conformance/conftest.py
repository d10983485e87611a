"""Fixtures for the Autobahn-style conformance suite.

Each test module gets one conduit process (default flags, 2 workers,
listening on 127.0.0.1:0); every case opens its own connection to /echo.
A case fails if the server died while it ran; the module fails at teardown
if a sanitizer reported anything.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conduit_harness import ConduitServer, ServerStartError  # noqa: E402


@pytest.fixture(scope="module")
def conduit_server():
    s = ConduitServer(["--workers", "2"])
    try:
        s.start()
    except ServerStartError as e:
        pytest.fail(str(e))
    yield s
    died = not s.alive()
    rc = s.stop()
    problems = []
    if died:
        problems.append(f"conduit died during the module (exit {rc}):\n{s.stderr_tail()}")
    if s.sanitizer_reports():
        problems.append("sanitizer report:\n" + s.stderr_tail(80))
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def port(conduit_server):
    if not conduit_server.alive():
        pytest.fail("conduit is not running (died in an earlier case):\n" + conduit_server.stderr_tail())
    yield conduit_server.port
    if not conduit_server.alive():
        pytest.fail("conduit died during this case:\n" + conduit_server.stderr_tail())
