"""Autobahn-style WebSocket test client for the conformance suite.

Builds on tests/integration/conduit_harness.py (frames, sockets) and adds:

* Autobahn's sending primitives: sendFrame with payload_len / chopsize /
  sync, sendMessage with fragmentation, one frame sent in timed chops;
* an event reader that turns the server's frames into Autobahn's event list
  (("message", payload, binary), ("ping", p), ("pong", p)) while checking
  that the server itself follows RFC 6455 / RFC 7692 (unmasked frames, no
  reserved bits or opcodes, valid UTF-8, valid close frames...);
* a permessage-deflate implementation on zlib (offers, response parsing,
  both directions compressed, window bits and no_context_takeover honoured
  and *checked*: a server that promised server_no_context_takeover must
  produce messages a fresh inflater can read, and one that accepted
  server_max_window_bits=N is inflated with an N-bit window);
* run_case(): Autobahn's pass criteria, strict: the events must equal the
  expected list exactly, the close code must be one of the expected ones
  and must come in a close frame, and the server must be the one that
  closes the TCP connection.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from conduit_harness import (  # noqa: E402
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, ConnectionClosed,
    Frame, RawWebSocket, T, apply_mask, connect, frame_header,
    read_http_response, upgrade_request, wait_closed, ws_accept,
)

NORMAL, GOING_AWAY, PROTOCOL_ERROR, INVALID_PAYLOAD, TOO_BIG = 1000, 1001, 1002, 1007, 1009
VALID_CLOSE_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}


class ServerViolation(AssertionError):
    """The server sent something RFC 6455 / 7692 forbids."""


# --------------------------------------------------------------------------
# permessage-deflate (RFC 7692)
# --------------------------------------------------------------------------

def deflate_offer(accept_no_context_takeover: bool = True, accept_max_window_bits: bool = True,
                  request_no_context_takeover: bool = False, request_max_window_bits: int = 0) -> str:
    """An offer string built the way Autobahn's PerMessageDeflateOffer does."""
    s = "permessage-deflate"
    if accept_no_context_takeover:
        s += "; client_no_context_takeover"
    if accept_max_window_bits:
        s += "; client_max_window_bits"
    if request_no_context_takeover:
        s += "; server_no_context_takeover"
    if request_max_window_bits:
        s += f"; server_max_window_bits={request_max_window_bits}"
    return s


def parse_extensions(header: str | None) -> list[tuple[str, dict]]:
    out = []
    if not header:
        return out
    for element in header.split(","):
        parts = [p.strip() for p in element.split(";")]
        if not parts[0]:
            raise ServerViolation(f"empty extension element in {header!r}")
        params: dict = {}
        for p in parts[1:]:
            if not p:
                continue
            k, eq, v = p.partition("=")
            k = k.strip()
            if k in params:
                raise ServerViolation(f"duplicate extension parameter {k!r} in {header!r}")
            params[k] = v.strip().strip('"') if eq else True
        out.append((parts[0].lower(), params))
    return out


def parse_offer(offer: str) -> dict:
    exts = parse_extensions(offer)
    assert len(exts) == 1 and exts[0][0] == "permessage-deflate"
    return exts[0][1]


class PerMessageDeflate:
    """Negotiated permessage-deflate state for a client."""

    def __init__(self, response_params: dict, offers: list[str]):
        p = response_params
        allowed = {"server_no_context_takeover", "client_no_context_takeover",
                   "server_max_window_bits", "client_max_window_bits"}
        for k in p:
            if k not in allowed:
                raise ServerViolation(f"unknown permessage-deflate parameter {k!r} in response")
        for k in ("server_no_context_takeover", "client_no_context_takeover"):
            if k in p and p[k] is not True:
                raise ServerViolation(f"{k} must not have a value")
        offered = [parse_offer(o) for o in offers]

        def bits(name):
            if name not in p:
                return None
            v = p[name]
            if v is True or not str(v).isdigit() or str(v).startswith("0") or not 8 <= int(v) <= 15:
                raise ServerViolation(f"{name}={v!r}: must be a decimal 8..15 in a response")
            return int(v)

        self.server_max_window_bits = bits("server_max_window_bits")
        self.client_max_window_bits = bits("client_max_window_bits")
        self.server_no_context_takeover = "server_no_context_takeover" in p
        self.client_no_context_takeover = "client_no_context_takeover" in p

        # The response must correspond to one of the offers (RFC 7692 5, 7.1).
        def fits(o: dict) -> bool:
            if self.client_max_window_bits is not None and "client_max_window_bits" not in o:
                return False
            if "server_no_context_takeover" in o and not self.server_no_context_takeover:
                return False
            if "server_max_window_bits" in o:
                if self.server_max_window_bits is None:
                    return False
                if self.server_max_window_bits > int(o["server_max_window_bits"]):
                    return False
            return True

        self.matching_offers = [o for o in offered if fits(o)]
        if not self.matching_offers:
            raise ServerViolation(f"response {p} does not accept any offer {offers}")

        # zlib's raw deflate cannot use an 8-bit window; 9 is what
        # zlib >= 1.2.9 uses for "8" as well.
        self.c_bits = max(9, self.client_max_window_bits or 15)
        self.d_bits = max(9, self.server_max_window_bits or 15)
        self._comp = None
        self._decomp = None
        self.messages_inflated = 0
        self.messages_compressed_by_server = 0

    def compress(self, data: bytes) -> bytes:
        if self._comp is None or self.client_no_context_takeover:
            self._comp = zlib.compressobj(6, zlib.DEFLATED, -self.c_bits)
        out = self._comp.compress(data) + self._comp.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]

    def decompress(self, data: bytes, max_size: int = 1 << 26) -> bytes:
        if self._decomp is None or self.server_no_context_takeover:
            self._decomp = zlib.decompressobj(-self.d_bits)
        try:
            out = self._decomp.decompress(data + b"\x00\x00\xff\xff", max_size)
        except zlib.error as e:
            hint = ""
            if self.server_no_context_takeover:
                hint = " (server promised server_no_context_takeover: message must inflate alone)"
            elif self.server_max_window_bits:
                hint = f" (server promised a {self.server_max_window_bits}-bit window)"
            raise ServerViolation(f"cannot inflate server message: {e}{hint}") from e
        if self._decomp.unconsumed_tail:
            raise ServerViolation("server message inflates beyond 64 MiB")
        self.messages_inflated += 1
        return out


# --------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------

Event = tuple


class Client(RawWebSocket):
    """One Autobahn-style test connection to the server."""

    pmd: PerMessageDeflate | None = None

    @classmethod
    def open(cls, port: int, host: str = "127.0.0.1", path: str = "/echo",
             offers: list[str] | None = None, timeout: float | None = None) -> "Client":
        sock = connect(port, host, timeout if timeout is not None else T(10))
        req, key = upgrade_request(path, f"{host}:{port}",
                                   extensions=", ".join(offers) if offers else None)
        sock.sendall(req)
        resp = read_http_response(sock, timeout, read_body=False)
        if resp.status != 101:
            sock.close()
            raise AssertionError(f"handshake failed: HTTP {resp.status} {resp.raw_head!r}")
        if resp.header("sec-websocket-accept") != ws_accept(key):
            sock.close()
            raise ServerViolation("wrong Sec-WebSocket-Accept")
        c = cls(sock, resp, resp.rest)
        c.pmd = None
        c.events: list[Event] = []
        c.frames_in: list[Frame] = []
        c.frames_out = {"data": 0, "cont": 0}
        c._msg_parts: list[bytes] = []
        c._msg_opcode: int | None = None
        c._msg_compressed = False
        c.close_received: Frame | None = None
        c.close_sent = False
        exts = parse_extensions(resp.header("sec-websocket-extensions"))
        if exts:
            if not offers:
                raise ServerViolation(f"extension {exts} in the response but none offered")
            if len(exts) != 1 or exts[0][0] != "permessage-deflate":
                raise ServerViolation(f"unexpected extensions in response: {exts}")
            c.pmd = PerMessageDeflate(exts[0][1], offers)
        return c

    # -- sending (Autobahn's primitives) ----------------------------------

    def send_frame_ab(self, opcode: int, payload: bytes | str = b"", fin: bool = True,
                      rsv: int = 0, payload_len: int | None = None,
                      chopsize: int | None = None, sync: bool = False, mask: bool = True):
        """Autobahn's sendFrame: payload repeated to payload_len, the frame's
        octets written in chops of chopsize, sync = flushed on its own."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if payload_len is not None and payload_len != len(payload):
            if payload:
                payload = (payload * (payload_len // len(payload) + 1))[:payload_len]
            else:
                payload = b"\x00" * payload_len
        key = os.urandom(4) if mask else None
        data = frame_header(opcode, len(payload), fin, rsv, key) + (apply_mask(payload, key) if mask else payload)
        delay = 0.0
        if chopsize:
            n_chops = (len(data) + chopsize - 1) // chopsize
            delay = 0.001 if n_chops <= 300 else 0.0
        self.send_raw(data, chopsize, delay)
        if opcode in (OP_TEXT, OP_BINARY):
            self.frames_out["data"] += 1
        elif opcode == OP_CONT:
            self.frames_out["cont"] += 1
        if opcode == OP_CLOSE:
            self.close_sent = True
        if sync:
            time.sleep(0.01)

    def send_message(self, payload: bytes | str, binary: bool = False,
                     frag_size: int | None = None, compress: bool | None = None,
                     chopsize: int | None = None):
        """Autobahn's sendMessage: one message, optionally compressed (when
        permessage-deflate was negotiated) and split into frames of frag_size
        payload octets (of the compressed data, as Autobahn's auto-fragment
        does)."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        opcode = OP_BINARY if binary else OP_TEXT
        if compress is None:
            compress = self.pmd is not None
        rsv = 0
        if compress:
            assert self.pmd is not None, "compression not negotiated"
            payload = self.pmd.compress(payload)
            rsv = 4
        if not frag_size or len(payload) <= frag_size:
            self.send_frame_ab(opcode, payload, True, rsv, chopsize=chopsize)
            return
        chunks = [payload[i:i + frag_size] for i in range(0, len(payload), frag_size)]
        frames = []
        for i, ch in enumerate(chunks):
            key = os.urandom(4)
            frames.append(frame_header(opcode if i == 0 else OP_CONT, len(ch), i == len(chunks) - 1,
                                       rsv if i == 0 else 0, key) + apply_mask(ch, key))
        self.frames_out["data"] += 1
        self.frames_out["cont"] += len(chunks) - 1
        self.send_raw(b"".join(frames), chopsize)

    def send_close_ab(self, code: int | None = NORMAL, reason: bytes | str = b""):
        if isinstance(reason, str):
            reason = reason.encode("utf-8")
        payload = b"" if code is None else struct.pack("!H", code) + reason
        self.send_frame_ab(OP_CLOSE, payload)

    def begin_frame(self, opcode: int, length: int, fin: bool = True) -> "FrameWriter":
        """Start one frame and send its payload later in pieces (6.4.3)."""
        return FrameWriter(self, opcode, length, fin)

    # -- receiving ---------------------------------------------------------

    def _check_frame(self, f: Frame):
        if f.masked:
            raise ServerViolation(f"server sent a masked frame {f!r}")
        if f.opcode in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
            raise ServerViolation(f"server used reserved opcode {f.opcode}")
        allowed_rsv = 4 if self.pmd is not None else 0
        if f.rsv & ~allowed_rsv:
            raise ServerViolation(f"server set RSV bits {f.rsv:#b} {f!r}")
        if f.opcode >= 8:
            if not f.fin:
                raise ServerViolation(f"server fragmented a control frame {f!r}")
            if len(f.payload) > 125:
                raise ServerViolation(f"server control frame over 125 bytes {f!r}")
            if f.rsv:
                raise ServerViolation(f"server set RSV on a control frame {f!r}")
        elif f.opcode == OP_CONT:
            if self._msg_opcode is None:
                raise ServerViolation("server continuation frame without a message")
            if f.rsv:
                raise ServerViolation("server set RSV1 on a continuation frame")
        else:
            if self._msg_opcode is not None:
                raise ServerViolation("server started a new message inside a fragmented one")

    def next_event(self, timeout: float) -> Event | None:
        """The next Autobahn event, or None when nothing complete arrived in
        time. A close frame gives ("close", code, reason)."""
        deadline = time.monotonic() + timeout
        for _ in range(2_000_000):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                f = self.recv_frame(left)
            except (socket.timeout, TimeoutError):
                return None
            self.frames_in.append(Frame(f.fin, f.rsv, f.opcode, b"", f.masked))
            self._check_frame(f)
            if f.opcode == OP_PING:
                ev = ("ping", f.payload)
                self.events.append(ev)
                if not self.close_sent:
                    try:
                        self.send_frame_ab(OP_PONG, f.payload)
                    except ConnectionClosed:
                        pass
                return ev
            if f.opcode == OP_PONG:
                ev = ("pong", f.payload)
                self.events.append(ev)
                return ev
            if f.opcode == OP_CLOSE:
                if self.close_received is not None:
                    raise ServerViolation("server sent two close frames")
                self.close_received = f
                pl = f.payload
                if len(pl) == 1:
                    raise ServerViolation("server close frame with a 1-byte payload")
                if len(pl) >= 2:
                    code = f.close_code
                    if not (code in VALID_CLOSE_CODES or 3000 <= code <= 4999):
                        raise ServerViolation(f"server sent invalid close code {code}")
                    try:
                        pl[2:].decode("utf-8")
                    except UnicodeDecodeError:
                        raise ServerViolation("server close reason is not UTF-8")
                return ("close", f.close_code, f.close_reason)
            # data frames
            if f.opcode in (OP_TEXT, OP_BINARY):
                self._msg_opcode = f.opcode
                self._msg_parts = [f.payload]
                self._msg_compressed = bool(f.rsv & 4)
            else:
                self._msg_parts.append(f.payload)
            if not f.fin:
                continue
            data = b"".join(self._msg_parts)
            if self._msg_compressed:
                assert self.pmd is not None
                self.pmd.messages_compressed_by_server += 1
                data = self.pmd.decompress(data)
            binary = self._msg_opcode == OP_BINARY
            if not binary:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ServerViolation(f"server text message is not UTF-8: {e}")
            self._msg_opcode, self._msg_parts = None, []
            ev = ("message", data, binary)
            self.events.append(ev)
            return ev
        raise AssertionError("frame loop bound exceeded")


class FrameWriter:
    """A frame whose payload is sent in several writes (one masking key)."""

    def __init__(self, client: Client, opcode: int, length: int, fin: bool):
        self.client, self.length, self.sent = client, length, 0
        self.key = os.urandom(4)
        client.send_raw(frame_header(opcode, length, fin, 0, self.key))

    def send(self, data: bytes):
        # the mask continues from the current offset
        off = self.sent % 4
        key = self.key[off:] + self.key[:off]
        self.client.send_raw(apply_mask(data, key))
        self.sent += len(data)


# --------------------------------------------------------------------------
# Case evaluation
# --------------------------------------------------------------------------

def fmt_events(evs) -> str:
    out = []
    for e in evs:
        if e[0] == "message":
            p = e[1]
            out.append(("message", p if len(p) <= 32 else p[:32] + b"...(%d)" % len(p), e[2]))
        else:
            out.append(e)
    return repr(out)


def finish_by_me(c: Client, close_codes=(NORMAL,), code: int = NORMAL, reason: bytes = b"",
                 already_sent: bool = False, timeout: float | None = None):
    """We start (or have started) the closing handshake: the next thing from
    the server must be its close frame with an expected code, then the
    server must close TCP."""
    if not already_sent:
        try:
            c.send_close_ab(code, reason)
        except ConnectionClosed:
            raise AssertionError("connection already dropped when we wanted to close")
    t = timeout if timeout is not None else T(3)
    ev = None
    try:
        ev = c.next_event(t)
    except ConnectionClosed as e:
        raise AssertionError(f"server dropped TCP without answering our close ({'reset' if e.reset else 'EOF'})")
    if ev is None:
        raise AssertionError(f"no close frame within {t:.1f}s after our close")
    if ev[0] != "close":
        raise AssertionError(f"expected the server's close, got {fmt_events([ev])} (data after close)")
    assert ev[1] in close_codes, f"server close code {ev[1]} reason {ev[2]!r}; expected one of {close_codes}"
    closed, extra = wait_closed(c.sock, T(3))
    assert closed, "server did not close the TCP connection after the closing handshake"
    assert extra == b"", f"bytes after the close frame: {extra[:40]!r}"


def expect_failure(c: Client, expected_events: list, close_codes, timeout: float | None = None):
    """The server must fail the connection: exactly `expected_events`, then a
    close frame with one of `close_codes`, then it closes TCP (after our
    echoed close)."""
    t = timeout if timeout is not None else T(2)
    deadline = time.monotonic() + t
    got = []
    for _ in range(100000):
        left = deadline - time.monotonic()
        try:
            ev = c.next_event(max(left, 0.001)) if left > 0 else None
        except ConnectionClosed as e:
            raise AssertionError(
                f"TCP {'reset' if e.reset else 'closed'} without a close frame; events {fmt_events(got)}")
        if ev is None:
            raise AssertionError(f"connection not failed within {t:.1f}s; events so far {fmt_events(got)}")
        if ev[0] == "close":
            assert got == expected_events, f"events before close {fmt_events(got)} != expected {fmt_events(expected_events)}"
            assert ev[1] in close_codes, f"close code {ev[1]} reason {ev[2]!r}; expected {close_codes}"
            try:
                c.send_frame_ab(OP_CLOSE, struct.pack("!H", ev[1]))
            except ConnectionClosed:
                pass
            closed, _ = wait_closed(c.sock, T(3))
            assert closed, "server did not close TCP after failing the connection"
            return
        got.append(ev)
    raise AssertionError("event loop bound exceeded")


def expect_events_then_close(c: Client, expected_events: list, wait: float = 1.0,
                             close_codes=(NORMAL,)):
    """Valid-case pattern: collect events until they equal the expected list
    (Autobahn's finishWhenDone) or `wait` seconds pass (closeAfter/killAfter),
    then close normally."""
    deadline = time.monotonic() + (T(wait) if expected_events else wait)
    got = c.events
    for _ in range(100000):
        if expected_events and got == expected_events:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            ev = c.next_event(left)
        except ConnectionClosed as e:
            raise AssertionError(f"connection dropped ({'reset' if e.reset else 'EOF'}); events {fmt_events(got)}")
        if ev is None:
            break
        if ev[0] == "close":
            raise AssertionError(f"server closed ({ev[1]} {ev[2]!r}) after events {fmt_events(got)}; "
                                 f"expected {fmt_events(expected_events)}")
        if len(got) > len(expected_events):
            break
    assert got == expected_events, f"events {fmt_events(got)} != expected {fmt_events(expected_events)}"
    finish_by_me(c, close_codes)


@dataclass
class ServerRef:
    host: str
    port: int


def register(namespace: dict, cases: dict):
    """Turn {"5.19": fn(port)} into module-level tests named test_case_5_19."""
    for cid, fn in cases.items():
        name = "test_case_" + cid.replace(".", "_")

        def test(port, _fn=fn):
            _fn(port)

        test.__name__ = test.__qualname__ = name
        test.__doc__ = f"Autobahn case {cid}: {fn.__doc__ or ''}".strip()
        test.autobahn_case = cid
        namespace[name] = test
