"""The authentication and permission hooks of conduit.h, through the
embedding example examples/gatekeeper.c (docs/security.md): the
application decides who a token is and which channels a user may use."""

import os

import pytest

from conduit_harness import ConduitServer, RawWebSocket, T, connect, read_http_response, \
    upgrade_request

EXAMPLES = os.environ.get(
    "CONDUIT_EXAMPLES",
    os.path.join(os.path.dirname(__file__), "..", "..", "build", "examples"))


@pytest.fixture
def gatekeeper():
    binary = os.path.join(EXAMPLES, "gatekeeper")
    if not os.path.exists(binary):
        pytest.fail(f"{binary} not built (make examples)")
    s = ConduitServer((), binary=binary)
    s.start()
    yield s
    s.stop()
    assert not s.sanitizer_reports(), s.stderr_tail(80)


def handshake(srv, path):
    sock = connect(srv.port)
    sock.sendall(upgrade_request(path)[0])
    resp = read_http_response(sock, T(5))
    return sock, resp


def test_authenticate_hook_decides_who(gatekeeper):
    for path in ("/ws?token=nope", "/ws?token=ticket-banned"):
        sock, resp = handshake(gatekeeper, path)
        sock.close()
        assert resp.status == 401, (path, resp.status)
        assert (resp.header("WWW-Authenticate") or "").startswith("Bearer"), path
        assert b'"Unauthorized"' in resp.body, (path, resp.body)
    sock, resp = handshake(gatekeeper, "/ws?token=ticket-alice")
    assert resp.status == 101, resp.status
    ws = RawWebSocket(sock, resp, resp.rest)
    ws.send_json({"type": "hello", "version": "1", "id": 1})
    reply = ws.recv_json(T(5))
    assert reply["type"] == "hello_response" and reply["user"] == "alice", reply
    ws.close_socket()
    # required mode: without a token the upgrade succeeds, and auth decides
    sock, resp = handshake(gatekeeper, "/ws")
    assert resp.status == 101, resp.status
    ws = RawWebSocket(sock, resp, resp.rest)
    ws.send_json({"type": "auth", "id": 1, "token": "ticket-banned"})
    err = ws.recv_json(T(5))
    assert err["type"] == "error" and err["error"]["code"] == "Unauthorized", err
    ws.send_json({"type": "auth", "id": 2, "token": "ticket-carol"})
    reply = ws.recv_json(T(5))
    assert reply["type"] == "auth_response" and reply["user"] == "carol", reply
    assert reply["expires_at"] is None, reply
    ws.close_socket()


def test_check_permission_hook_denies_after_builtin_rules(gatekeeper):
    sock, resp = handshake(gatekeeper, "/ws?token=ticket-alice")
    assert resp.status == 101
    alice = RawWebSocket(sock, resp, resp.rest)
    alice.send_json({"type": "subscribe", "id": 1, "channel": "staff:room"})
    err = alice.recv_json(T(5))
    assert err["type"] == "error" and err["id"] == 1, err
    assert err["error"]["code"] == "Forbidden", err
    # the connection stays, and other channels are allowed
    alice.send_json({"type": "subscribe", "id": 2, "channel": "chat:room"})
    ok = alice.recv_json(T(5))
    assert ok["type"] == "subscribe_response" and ok["id"] == 2, ok
    alice.send_json({"type": "publish", "id": 3, "channel": "staff:room", "data": 1})
    err = alice.recv_json(T(5))
    assert err["error"]["code"] == "Forbidden", err
    alice.close_socket()

    sock, resp = handshake(gatekeeper, "/ws?token=ticket-staff-bob")
    assert resp.status == 101
    bob = RawWebSocket(sock, resp, resp.rest)
    bob.send_json({"type": "subscribe", "id": 1, "channel": "staff:room"})
    ok = bob.recv_json(T(5))
    assert ok["type"] == "subscribe_response", ok
    bob.close_socket()
    assert gatekeeper.wait_for_event(
        lambda e: e.get("event") == "permission_denied" and e.get("user") == "alice",
        T(5)) is not None
