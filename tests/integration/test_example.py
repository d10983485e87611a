"""The embedding example (examples/shout.c) built against libconduit and
driven over real sockets: an application message type, per-connection
user data, and conduit_publish from the application's own thread."""

import asyncio
import json
import os

import pytest
import websockets

from conduit_harness import T

EXAMPLES = os.environ.get(
    "CONDUIT_EXAMPLES",
    os.path.join(os.path.dirname(__file__), "..", "..", "build", "examples"))


@pytest.fixture
def shout():
    binary = os.path.join(EXAMPLES, "shout")
    if not os.path.exists(binary):
        pytest.fail(f"{binary} not built (make examples)")
    from conduit_harness import ConduitServer
    s = ConduitServer((), binary=binary)
    s.start()
    yield s
    s.stop()
    assert not s.sanitizer_reports(), s.stderr_tail(80)


async def recv_json(ws, timeout=None):
    return json.loads(await asyncio.wait_for(ws.recv(), T(timeout or 3)))


async def recv_until(ws, pred, timeout=None):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + T(timeout or 3)
    while True:
        msg = await recv_json(ws, max(0.01, deadline - loop.time()))
        if pred(msg):
            return msg


def test_application_type_publishes_and_replies(shout):
    async def main():
        url = f"ws://127.0.0.1:{shout.port}"
        async with websockets.connect(url + "/ws/lobby") as a, \
                websockets.connect(url + "/ws/lobby") as b:
            await a.send(json.dumps({"type": "SHOUT", "id": 7,
                                     "data": {"channel": "lobby", "text": "hello é"}}))
            reply = await recv_until(a, lambda m: m.get("type") == "shout_response")
            assert reply["id"] == 7
            assert reply["data"]["shouts"] == 1 and reply["data"]["ok"] is True
            assert reply["data"]["offset"] >= 1
            got = await recv_until(b, lambda m: m.get("type") == "message")
            assert got["channel"] == "lobby"
            assert got["data"]["text"] == "HELLO é"
            # the per-connection counter lives in conduit_conn_set_user data
            await a.send(json.dumps({"type": "shout", "id": "x",
                                     "data": {"channel": "lobby", "text": "again"}}))
            reply = await recv_until(a, lambda m: m.get("type") == "shout_response")
            assert reply["id"] == "x" and reply["data"]["shouts"] == 2
            # bad arguments get the application's own answer
            await a.send(json.dumps({"type": "shout", "id": 9, "data": {}}))
            reply = await recv_until(a, lambda m: m.get("type") == "shout_response")
            assert reply["data"] == {"error": "need channel and text"}
            # types nobody handles: UnknownType, and the connection stays
            await a.send(json.dumps({"type": "whisper", "id": 10}))
            err = await recv_until(a, lambda m: m.get("type") == "error")
            assert err["id"] == 10 and err["error"]["code"] == "UnknownType"
            await a.send(json.dumps({"type": "ping", "id": 11}))
            pong = await recv_until(a, lambda m: m.get("type") == "pong")
            assert pong["id"] == 11
    asyncio.run(main())


def test_publish_from_an_application_thread(shout):
    async def main():
        async with websockets.connect(f"ws://127.0.0.1:{shout.port}/ws/clock") as ws:
            first = await recv_until(ws, lambda m: m.get("type") == "message", timeout=5)
            second = await recv_until(ws, lambda m: m.get("type") == "message", timeout=5)
            assert first["channel"] == "clock" and "unix" in first["data"]
            assert second["offset"] == first["offset"] + 1
            assert "from" not in first  # published by the server itself
    asyncio.run(main())
