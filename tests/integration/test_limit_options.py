"""Options that bound or shape what the server does, each crossed through
the real server: frames per message, and the compression window and
threshold.  (The send queue's caps are crossed in test_hub.py.)"""

import zlib

from conduit_harness import OP_CONT, OP_TEXT, T, raw_ws


def send_fragments(ws, n: int, piece: bytes = b"ab"):
    for i in range(n):
        ws.send_frame(OP_TEXT if i == 0 else OP_CONT, piece, fin=(i == n - 1))


def test_max_fragments_at_and_over(server):
    srv = server("--ws-max-fragments", "4")
    ws = raw_ws(srv.port)
    send_fragments(ws, 4)
    f = ws.recv_frame(T(5))
    assert f.opcode == OP_TEXT and f.payload == b"ab" * 4
    send_fragments(ws, 5)
    ws.expect_close(1009)
    assert srv.wait_for_event(lambda e: e.get("event") == "ws_protocol_error"
                              and e.get("code") == 1009, T(5))
    # the server keeps serving everyone else
    other = raw_ws(srv.port)
    other.send_text("still here")
    assert other.recv_frame(T(5)).payload == b"still here"


def test_compression_window_bits_bound_the_server(server):
    srv = server("--ws-compression-window-bits", "10")
    ws = raw_ws(srv.port, extensions="permessage-deflate")
    ext = ws.response.header("sec-websocket-extensions")
    assert ext and "server_max_window_bits=10" in ext, ext
    text = b"conduit " * 500
    ws.send_text(text)
    f = ws.recv_frame(T(5))
    assert f.rsv == 4, f  # RSV1: compressed
    # a decoder with a 2^10-byte window can read it
    assert zlib.decompressobj(-10).decompress(f.payload + b"\x00\x00\xff\xff") == text


def test_compression_min_size(server):
    srv = server("--ws-compression-min-size", "100")
    ws = raw_ws(srv.port, extensions="permessage-deflate")
    assert "permessage-deflate" in ws.response.header("sec-websocket-extensions")
    ws.send_text(b"x" * 99)  # clients may send uncompressed frames (RFC 7692 §6)
    small = ws.recv_frame(T(5))
    assert small.rsv == 0 and small.payload == b"x" * 99
    ws.send_text(b"y" * 100)
    big = ws.recv_frame(T(5))
    assert big.rsv == 4
    assert zlib.decompressobj(-15).decompress(big.payload + b"\x00\x00\xff\xff") == b"y" * 100
