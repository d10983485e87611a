"""Fan-out at scale: 10,000 connections in one room (node's `ws` client,
one process: node/fanout_10k.mjs), one publish, every member gets it
exactly once.

The figures (connect time, publish-to-first/last delivery, deliveries per
second) are printed (run with -s to see them) but not asserted: the machine
is shared, only correctness is.

File descriptors: the server and node each hold ~10,000 sockets, in two
processes, and RLIMIT_NOFILE is per process, so each needs a soft limit a
little above 10,000.  The test raises its own soft limit to the hard limit
for the duration (the server started by the harness and node inherit it)
and skips, saying why, when the hard limit (`ulimit -Hn`) is too low.

The room is in a namespace with presence off: with presence on, each of the
10,000 joins would send a join and an online event to every member already
there (about 10^8 events), which measures presence, not fan-out.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest

from conduit_harness import T

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE = shutil.which("node") or "/usr/bin/node"
N = 10_000
# per process: N sockets plus listeners, epoll, eventfds, pipes, node's own
FDS_PER_PROCESS = N + 500
ROOM = "fanout:room"

pytestmark = pytest.mark.skipif(
    not (NODE_DIR / "node_modules" / "ws").is_dir() or not os.path.exists(NODE),
    reason="node or tests/integration/node/node_modules missing (scripts/run-integration.sh installs them)")


def hard_nofile() -> int:
    """`ulimit -Hn` as the shell reports it (the same as getrlimit here)."""
    out = subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True,
                         timeout=10).stdout.strip()
    if out == "unlimited":
        return 1 << 30
    try:
        return int(out)
    except ValueError:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        return hard if hard != resource.RLIM_INFINITY else 1 << 30


@pytest.fixture
def many_fds():
    hard = hard_nofile()
    if hard < FDS_PER_PROCESS:
        pytest.skip(f"hard RLIMIT_NOFILE (ulimit -Hn) is {hard}; the server and the node "
                    f"client each need {FDS_PER_PROCESS} descriptors for {N} connections")
    soft, cur_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = cur_hard if cur_hard != resource.RLIM_INFINITY else max(soft, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, cur_hard))
    try:
        yield want
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, cur_hard))


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                    else max(soft, 65536), hard))


def test_fanout_10k_connections_one_room(server, many_fds):
    srv = server("--workers", "2", f"--ns-{ROOM.split(':')[0]}-presence", "false",
                 "--ws-max-connections-per-ip", "0", "--ws-max-pending-handshakes-per-ip", "0",
                 "--ws-max-queue-messages", "100000")
    # the server process inherited the raised soft limit
    with open(f"/proc/{srv.proc.pid}/limits") as f:
        line = next(l for l in f if l.startswith("Max open files"))
    assert int(line.split()[3]) >= FDS_PER_PROCESS, line

    timeout = T(100)
    spec = {"base": f"ws://{srv.url_host}:{srv.port}", "room": ROOM, "clients": N,
            "concurrency": 500, "timeout_ms": int(timeout * 1000), "grace_ms": 500}
    try:
        p = subprocess.run([NODE, str(NODE_DIR / "fanout_10k.mjs"), json.dumps(spec)],
                           cwd=NODE_DIR, capture_output=True, text=True,
                           timeout=timeout + 15, stdin=subprocess.DEVNULL,
                           preexec_fn=_raise_nofile)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"node fan-out client hung: stdout={e.stdout!r} stderr={e.stderr!r}")
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert lines, f"no JSON from node (exit {p.returncode}): {p.stdout!r} {p.stderr[-2000:]!r}"
    out = json.loads(lines[-1])

    print(f"\nfan-out {N} connections, 2 workers: connected in {out['connect_ms']} ms; "
          f"publish -> reply {out['publish_to_reply_ms']} ms, first delivery "
          f"{out['publish_to_first_ms']} ms, p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms, "
          f"last {out['publish_to_last_ms']} ms; {out['deliveries_per_s']} deliveries/s")
    print("fan-out result:", json.dumps(out))

    assert out["connected"] == N, out
    assert out["connect_errors"] == 0, out
    assert out["subscribers"] == N, out
    assert out["offset"] == 1, out
    assert out["received"] == N and out["missing"] == 0, out
    assert out["duplicates"] == 0, out
    assert out["other"] == 0, out
    assert out["closed_early"] == 0, out
    assert out["ok"] and p.returncode == 0, (out, p.stderr[-2000:])
    assert srv.alive()
    # nothing logged above info about the connections (no slow consumers)
    assert not [e for e in srv.events if e.get("event") == "slow_consumer"]
