"""Shared test harness for the Conduit integration and conformance suites.

Everything here is plain Python (no pytest): starting and stopping the real
server binary, raw HTTP over sockets, and a raw WebSocket client that can
build any frame, valid or not.  tests/integration/conftest.py turns it into
fixtures; tests/conformance/ builds the Autobahn-style client on top of it.

Every socket operation has a deadline, every loop is bounded.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

REPO_ROOT = Path(__file__).resolve().parents[2]
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer")


def sanitize_mode() -> bool:
    return bool(os.environ.get("CONDUIT_SANITIZE", "").strip())


def slow_factor() -> float:
    """Multiplier for every deadline: sanitizer builds are several times slower."""
    try:
        f = float(os.environ.get("CONDUIT_TEST_SLOWDOWN", "0"))
    except ValueError:
        f = 0.0
    if f > 0:
        return f
    return 3.0 if sanitize_mode() else 1.0


def T(seconds: float) -> float:
    """A deadline scaled for the current build."""
    return seconds * slow_factor()


def conduit_bin() -> str:
    b = os.environ.get("CONDUIT_BIN")
    if b:
        return b
    return str(REPO_ROOT / "build" / "conduit")


# --------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------

class ServerStartError(Exception):
    pass


def parse_addr(addr: str) -> tuple[str, int]:
    """'127.0.0.1:43117' or '[::1]:43117' -> (host, port)."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    return host, int(port)


class ConduitServer:
    """One running build/conduit process.

    stderr is drained by a background thread into `lines` (raw text) and
    `events` (parsed JSON log records); nothing is ever left unread, so the
    server can never block on a full pipe.
    """

    def __init__(self, args: Iterable[str] = (), env: dict | None = None,
                 listen: Iterable[str] | None = ("127.0.0.1:0",),
                 binary: str | None = None, cwd: str | None = None):
        self.binary = binary or conduit_bin()
        self.listen = list(listen) if listen is not None else []
        self.args = [str(a) for a in args]
        self.extra_env = dict(env or {})
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.events: list[dict] = []
        self.stdout_text = ""
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.addrs: list[tuple[str, int]] = []
        self.returncode: int | None = None
        self.died_early = False
        self.stopped_by_us = False

    # -- lifecycle ---------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [self.binary]
        for l in self.listen:
            cmd += ["--listen", l]
        return cmd + self.args

    def environment(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
        # keep the harness knobs out of the server's environment but let
        # sanitizer settings through
        env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        env.update(self.extra_env)
        return env

    def start(self, wait_listening: bool = True, timeout: float | None = None):
        if not os.path.exists(self.binary):
            raise ServerStartError(f"conduit binary not found at {self.binary} "
                                   "(set CONDUIT_BIN or run `make all`)")
        self.proc = subprocess.Popen(
            self.command(), env=self.environment(), cwd=self.cwd or str(REPO_ROOT),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        t1 = threading.Thread(target=self._drain_stderr, daemon=True)
        t2 = threading.Thread(target=self._drain_stdout, daemon=True)
        t1.start()
        t2.start()
        self._threads = [t1, t2]
        if wait_listening:
            self.wait_listening(len(self.listen) or 1, timeout=timeout)
        return self

    def _drain_stderr(self):
        assert self.proc and self.proc.stderr
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            rec = None
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = None
            with self._cond:
                self.lines.append(line)
                if isinstance(rec, dict):
                    self.events.append(rec)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _drain_stdout(self):
        assert self.proc and self.proc.stdout
        chunks = []
        for raw in iter(lambda: self.proc.stdout.read(4096), b""):
            chunks.append(raw)
        self.stdout_text = b"".join(chunks).decode("utf-8", "replace")

    def listening_events(self) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e.get("event") == "listening"]

    def wait_listening(self, count: int = 1, timeout: float | None = None):
        """Wait until `count` distinct addresses have been reported listening."""
        deadline = time.monotonic() + (timeout if timeout is not None else T(10))
        with self._cond:
            while True:
                addrs = []
                for e in self.events:
                    if e.get("event") == "listening" and "addr" in e:
                        a = parse_addr(str(e["addr"]))
                        if a not in addrs:
                            addrs.append(a)
                if len(addrs) >= count:
                    self.addrs = addrs
                    return addrs
                if self.proc.poll() is not None:
                    # give the drain thread a moment to collect the last lines
                    self._cond.wait(0.2)
                    raise ServerStartError(
                        f"conduit exited with {self.proc.returncode} before listening:\n"
                        + self.stderr_tail())
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerStartError(
                        f"no 'listening' event after {timeout or T(10):.0f}s:\n"
                        + self.stderr_tail())
                self._cond.wait(min(left, 0.2))

    def wait_for_event(self, predicate, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for e in self.events[seen:]:
                    if predicate(e):
                        return e
                seen = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.2))

    @property
    def host(self) -> str:
        return self.addrs[0][0]

    @property
    def port(self) -> int:
        return self.addrs[0][1]

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def ws_url(self, path: str = "/echo") -> str:
        return f"ws://{self.url_host}:{self.port}{path}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float | None = None) -> int | None:
        """SIGTERM, wait, SIGKILL after the deadline. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            if not self.stopped_by_us:
                self.died_early = True
        else:
            self.stopped_by_us = True
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout if timeout is not None else T(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.returncode = self.proc.returncode
        for t in self._threads:
            t.join(timeout=5)
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except Exception:
                pass
        return self.returncode

    def stderr_text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def stderr_tail(self, n: int = 40) -> str:
        with self._cond:
            return "\n".join(self.lines[-n:])

    def sanitizer_reports(self) -> list[str]:
        text = self.stderr_text()
        return [m for m in SANITIZER_MARKERS if m in text]


# --------------------------------------------------------------------------
# Sockets and raw HTTP
# --------------------------------------------------------------------------

def connect(port: int, host: str = "127.0.0.1", timeout: float | None = None,
            nodelay: bool = True) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout if timeout is not None else T(5))
    if nodelay:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect((host, port))
    return s


def set_linger_reset(sock: socket.socket):
    """Make close() send a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class PeerClosed(Exception):
    pass


def recv_some(sock: socket.socket, deadline: float, n: int = 65536) -> bytes:
    """One recv() bounded by an absolute monotonic deadline.

    Returns b"" on orderly EOF, raises PeerClosed on reset, socket.timeout
    when the deadline passes.
    """
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("deadline passed")
    sock.settimeout(left)
    try:
        return sock.recv(n)
    except (ConnectionResetError, BrokenPipeError) as e:
        raise PeerClosed(str(e)) from e


def wait_closed(sock: socket.socket, timeout: float, max_bytes: int = 1 << 20) -> tuple[bool, bytes]:
    """Read until the peer closes. Returns (closed, bytes read meanwhile).

    closed is False when the deadline passed with the connection still open.
    A reset counts as closed.
    """
    deadline = time.monotonic() + timeout
    got = bytearray()
    while len(got) <= max_bytes:
        try:
            b = recv_some(sock, deadline)
        except PeerClosed:
            return True, bytes(got)
        except (socket.timeout, TimeoutError):
            return False, bytes(got)
        except OSError as e:
            if e.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                return True, bytes(got)
            raise
        if not b:
            return True, bytes(got)
        got += b
    return False, bytes(got)


@dataclass
class HttpResponse:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes
    rest: bytes = b""  # bytes read after the body (e.g. WebSocket frames)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def header_tokens(self, name: str) -> list[str]:
        toks = []
        for v in self.header_all(name):
            toks += [t.strip().lower() for t in v.split(",") if t.strip()]
        return toks

    def json(self):
        return json.loads(self.body.decode("utf-8"))


def read_http_response(sock: socket.socket, timeout: float | None = None,
                       buf: bytes = b"", read_body: bool = True,
                       max_head: int = 65536) -> HttpResponse:
    """Read one HTTP/1.x response head (and its Content-Length body)."""
    deadline = time.monotonic() + (timeout if timeout is not None else T(5))
    data = bytearray(buf)
    while b"\r\n\r\n" not in data:
        if len(data) > max_head:
            raise AssertionError(f"response head larger than {max_head} bytes")
        try:
            b = recv_some(sock, deadline)
        except PeerClosed:
            b = b""
        if not b:
            raise AssertionError(
                f"connection closed before a complete response head; got {bytes(data)[:300]!r}")
        data += b
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
    if not m:
        raise AssertionError(f"malformed status line {lines[0]!r}")
    headers = []
    for l in lines[1:]:
        k, sep, v = l.partition(":")
        if not sep:
            raise AssertionError(f"malformed response header line {l!r}")
        headers.append((k.strip(), v.strip()))
    resp = HttpResponse(int(m.group(2)), m.group(3) or "", m.group(1), headers, b"", head)
    if read_body and resp.status != 101:
        cl = resp.header("content-length")
        if cl is not None:
            n = int(cl)
            body = bytearray(rest)
            while len(body) < n:
                try:
                    b = recv_some(sock, deadline)
                except PeerClosed:
                    b = b""
                if not b:
                    break
                body += b
            resp.body = bytes(body[:n])
            resp.rest = bytes(body[n:])
        else:
            resp.body = rest
    else:
        resp.rest = rest
    return resp


def http_get(port: int, path: str = "/healthz", host: str = "127.0.0.1",
             headers: dict | None = None, timeout: float | None = None) -> HttpResponse:
    hdrs = {"Host": f"{host}:{port}"}
    hdrs.update(headers or {})
    req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    with connect(port, host, timeout) as s:
        s.sendall(req.encode("latin-1"))
        return read_http_response(s, timeout)


def http_request(port: int, method: str = "GET", path: str = "/healthz",
                 headers: dict | None = None, body: bytes | str | None = None,
                 host: str = "127.0.0.1", timeout: float | None = None) -> HttpResponse:
    """One HTTP/1.1 request on a fresh connection (for the HTTP API, metrics...)."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    hdrs = {"Host": f"{host}:{port}"}
    if body is not None:
        hdrs["Content-Length"] = str(len(body))
    hdrs.update(headers or {})
    req = (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
           + "\r\n").encode("latin-1") + (body or b"")
    with connect(port, host, timeout) as s:
        s.sendall(req)
        return read_http_response(s, timeout)


def raw_exchange(port: int, request: bytes, host: str = "127.0.0.1",
                 timeout: float | None = None) -> tuple[HttpResponse, bool, bytes]:
    """Send raw bytes, read one response, then check the server closes.

    Returns (response, closed_within_timeout, bytes_after_response).
    """
    t = timeout if timeout is not None else T(5)
    with connect(port, host, t) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = read_http_response(s, t)
        closed, extra = wait_closed(s, t)
        return resp, closed, resp.rest + extra


def ws_key(raw: bytes | None = None) -> str:
    return base64.b64encode(raw if raw is not None else os.urandom(16)).decode()


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def upgrade_request(path: str = "/echo", host: str = "127.0.0.1:8080",
                    key: str | None = None, version: str | None = "13",
                    extensions: str | None = None, protocols: str | None = None,
                    extra: list[tuple[str, str]] | None = None,
                    omit: Iterable[str] = (), method: str = "GET",
                    http_version: str = "HTTP/1.1") -> tuple[bytes, str]:
    """Build a WebSocket upgrade request. Returns (bytes, key)."""
    key = key if key is not None else ws_key()
    omit = {o.lower() for o in omit}
    hdrs: list[tuple[str, str]] = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
    ]
    if version is not None:
        hdrs.append(("Sec-WebSocket-Version", version))
    if extensions:
        hdrs.append(("Sec-WebSocket-Extensions", extensions))
    if protocols:
        hdrs.append(("Sec-WebSocket-Protocol", protocols))
    hdrs = [(k, v) for k, v in hdrs if k.lower() not in omit]
    hdrs += list(extra or [])
    req = f"{method} {path} {http_version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
    return req.encode("latin-1"), key


# --------------------------------------------------------------------------
# WebSocket frames
# --------------------------------------------------------------------------

def apply_mask(data: bytes, key: bytes) -> bytes:
    """XOR with the 4-byte masking key; linear-time even for 16 MiB."""
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def frame_header(opcode: int, length: int, fin: bool = True, rsv: int = 0,
                 mask_key: bytes | None = None, length_form: str | None = None) -> bytes:
    """Header bytes only. length_form forces '7', '16' or '64' bit encoding."""
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask_key is not None else 0
    form = length_form or ("7" if length < 126 else "16" if length < 65536 else "64")
    if form == "7":
        h = struct.pack("!BB", b0, mbit | length)
    elif form == "16":
        h = struct.pack("!BBH", b0, mbit | 126, length)
    else:
        h = struct.pack("!BBQ", b0, mbit | 127, length)
    if mask_key is not None:
        h += mask_key
    return h


def build_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0,
                mask: bool = True, mask_key: bytes | None = None,
                length_form: str | None = None) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    if mask:
        mask_key = mask_key if mask_key is not None else os.urandom(4)
        return frame_header(opcode, len(payload), fin, rsv, mask_key, length_form) + apply_mask(payload, mask_key)
    return frame_header(opcode, len(payload), fin, rsv, None, length_form) + payload


def close_payload(code: int | None = None, reason: bytes | str = b"") -> bytes:
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes
    masked: bool = False

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return struct.unpack("!H", self.payload[:2])[0]

    @property
    def close_reason(self) -> bytes:
        return self.payload[2:] if self.opcode == OP_CLOSE else b""

    def __repr__(self):
        p = self.payload if len(self.payload) <= 40 else self.payload[:40] + b"..."
        return (f"Frame(op={self.opcode:#x}, fin={self.fin}, rsv={self.rsv}, "
                f"len={len(self.payload)}, payload={p!r})")


class ConnectionClosed(Exception):
    """The TCP connection ended (EOF or reset) while a frame was expected."""

    def __init__(self, msg: str, reset: bool = False, partial: bytes = b""):
        super().__init__(msg)
        self.reset = reset
        self.partial = partial


class RawWebSocket:
    """A byte-exact WebSocket client over one socket.

    It sends whatever frames you build and reads the server's frames one by
    one, with a deadline for each read. It never answers anything by itself.
    """

    def __init__(self, sock: socket.socket, response: HttpResponse | None = None,
                 buffered: bytes = b""):
        self.sock = sock
        self.response = response
        self.buf = bytearray(buffered)
        self.eof = False
        self.reset = False
        self.close_frame_at: float | None = None

    # -- connecting --------------------------------------------------------

    @classmethod
    def connect(cls, port: int, path: str = "/echo", host: str = "127.0.0.1",
                extensions: str | None = None, protocols: str | None = None,
                extra: list[tuple[str, str]] | None = None, timeout: float | None = None,
                first_bytes: bytes = b"", expect_status: int | None = 101) -> "RawWebSocket":
        sock = connect(port, host, timeout)
        hosthdr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        req, key = upgrade_request(path, hosthdr, extensions=extensions,
                                   protocols=protocols, extra=extra)
        sock.sendall(req + first_bytes)
        resp = read_http_response(sock, timeout, read_body=False)
        if expect_status is not None and resp.status != expect_status:
            sock.close()
            raise AssertionError(f"expected HTTP {expect_status}, got {resp.status}: {resp.raw_head!r}")
        if resp.status == 101:
            acc = resp.header("sec-websocket-accept")
            if acc != ws_accept(key):
                sock.close()
                raise AssertionError(f"bad Sec-WebSocket-Accept {acc!r} for key {key!r}")
        return cls(sock, resp, resp.rest)

    def close_socket(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close_socket()

    # -- sending -----------------------------------------------------------

    def send_raw(self, data: bytes, chopsize: int | None = None, chop_delay: float = 0.0):
        try:
            if not chopsize:
                self.sock.sendall(data)
                return
            for i in range(0, len(data), chopsize):
                self.sock.sendall(data[i:i + chopsize])
                if chop_delay:
                    time.sleep(chop_delay)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ConnectionClosed(f"send failed: {e}", reset=True) from e

    def send_frame(self, opcode: int, payload: bytes | str = b"", fin: bool = True,
                   rsv: int = 0, mask: bool = True, chopsize: int | None = None,
                   chop_delay: float = 0.0, length_form: str | None = None):
        self.send_raw(build_frame(opcode, payload, fin, rsv, mask, length_form=length_form),
                      chopsize, chop_delay)

    def send_text(self, text: str | bytes, **kw):
        self.send_frame(OP_TEXT, text, **kw)

    def send_binary(self, data: bytes, **kw):
        self.send_frame(OP_BINARY, data, **kw)

    def send_close(self, code: int | None = 1000, reason: bytes | str = b"", **kw):
        self.send_frame(OP_CLOSE, close_payload(code, reason), **kw)

    def send_json(self, obj, **kw):
        """One text message holding `obj` as JSON (native protocol tests)."""
        self.send_frame(OP_TEXT, json.dumps(obj, separators=(",", ":")).encode("utf-8"), **kw)

    # -- receiving ---------------------------------------------------------

    def _fill(self, need: int, deadline: float):
        while len(self.buf) < need:
            if self.eof:
                raise ConnectionClosed("connection closed", reset=self.reset, partial=bytes(self.buf))
            try:
                b = recv_some(self.sock, deadline, max(65536, min(need - len(self.buf), 1 << 22)))
            except PeerClosed:
                self.eof = True
                self.reset = True
                continue
            except OSError as e:
                if isinstance(e, (socket.timeout, TimeoutError)):
                    raise
                if e.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                    self.eof = True
                    self.reset = True
                    continue
                raise
            if not b:
                self.eof = True
                continue
            self.buf += b

    def recv_frame(self, timeout: float | None = None) -> Frame:
        """Read one frame. Raises socket.timeout or ConnectionClosed."""
        deadline = time.monotonic() + (timeout if timeout is not None else T(5))
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        ln = b1 & 0x7F
        pos = 2
        if ln == 126:
            self._fill(4, deadline)
            ln = struct.unpack("!H", self.buf[2:4])[0]
            pos = 4
        elif ln == 127:
            self._fill(10, deadline)
            ln = struct.unpack("!Q", self.buf[2:10])[0]
            pos = 10
        masked = bool(b1 & 0x80)
        key = b""
        if masked:
            self._fill(pos + 4, deadline)
            key = bytes(self.buf[pos:pos + 4])
            pos += 4
        if ln > (1 << 31):
            raise AssertionError(f"server announced an absurd frame length {ln}")
        self._fill(pos + ln, deadline)
        payload = bytes(self.buf[pos:pos + ln])
        del self.buf[:pos + ln]
        if masked:
            payload = apply_mask(payload, key)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, payload, masked)

    def try_recv_frame(self, timeout: float) -> Frame | None:
        """A frame, or None if nothing complete arrives within timeout."""
        try:
            return self.recv_frame(timeout)
        except (socket.timeout, TimeoutError):
            return None

    def recv_message(self, timeout: float | None = None, auto_pong: bool = False,
                     max_frames: int = 1_000_000) -> tuple[int, bytes]:
        """Reassemble one data message (control frames in between are skipped,
        pings answered when auto_pong). Returns (opcode, payload)."""
        deadline = time.monotonic() + (timeout if timeout is not None else T(10))
        parts = []
        opcode = None
        for _ in range(max_frames):
            f = self.recv_frame(max(0.001, deadline - time.monotonic()))
            if f.opcode == OP_PING:
                if auto_pong:
                    self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                continue
            if f.opcode == OP_CLOSE:
                raise AssertionError(f"got close {f.close_code} {f.close_reason!r} while expecting a message")
            if opcode is None:
                if f.opcode == OP_CONT:
                    raise AssertionError("server sent a continuation frame with no message started")
                opcode = f.opcode
            elif f.opcode != OP_CONT:
                raise AssertionError(f"server interleaved a new data frame (op {f.opcode}) in a fragmented message")
            parts.append(f.payload)
            if f.fin:
                return opcode, b"".join(parts)
        raise AssertionError("too many frames")

    def recv_json(self, timeout: float | None = None, auto_pong: bool = True):
        """The next data message, parsed as JSON (must be a text message)."""
        op, data = self.recv_message(timeout, auto_pong=auto_pong)
        assert op == OP_TEXT, f"expected a text message, got opcode {op}"
        return json.loads(data.decode("utf-8"))

    def expect_close(self, code: int | None, timeout: float | None = None,
                     allow_data: bool = False, reply: bool = True,
                     close_timeout: float | None = None) -> Frame:
        """Wait for the server's close frame (with `code`, unless None), echo
        a close back (reply=True), then require the server to close TCP."""
        deadline = time.monotonic() + (timeout if timeout is not None else T(5))
        seen = []
        for _ in range(100000):
            try:
                f = self.recv_frame(max(0.001, deadline - time.monotonic()))
            except (socket.timeout, TimeoutError):
                raise AssertionError(f"no close frame within the deadline; frames before: {seen[:5]}")
            except ConnectionClosed as e:
                raise AssertionError(
                    f"TCP closed ({'reset' if e.reset else 'EOF'}) without a close frame; frames before: {seen[:5]}")
            if f.opcode == OP_CLOSE:
                self.close_frame_at = time.monotonic()
                if code is not None:
                    assert f.close_code == code, (
                        f"expected close code {code}, got {f.close_code} reason {f.close_reason!r}")
                if reply:
                    try:
                        self.send_frame(OP_CLOSE, f.payload[:2])
                    except ConnectionClosed:
                        pass
                closed, extra = wait_closed(self.sock, close_timeout if close_timeout is not None else T(3))
                assert closed, "server sent close but did not close the TCP connection"
                return f
            if not allow_data and f.opcode not in (OP_PING, OP_PONG):
                raise AssertionError(f"expected close {code}, got {f!r}")
            seen.append(f)
        raise AssertionError("too many frames while waiting for close")

    def drain(self, seconds: float, max_frames: int = 100000) -> tuple[list[Frame], bool]:
        """Collect frames for `seconds` (or until EOF). Returns (frames, closed)."""
        deadline = time.monotonic() + seconds
        frames: list[Frame] = []
        for _ in range(max_frames):
            left = deadline - time.monotonic()
            if left <= 0:
                return frames, False
            try:
                frames.append(self.recv_frame(left))
            except (socket.timeout, TimeoutError):
                return frames, False
            except ConnectionClosed:
                return frames, True
        return frames, False

    def assert_tcp_closed(self, timeout: float | None = None):
        closed, _ = wait_closed(self.sock, timeout if timeout is not None else T(3))
        assert closed, "TCP connection still open"


def raw_ws(port: int, **kw) -> RawWebSocket:
    return RawWebSocket.connect(port, **kw)


def ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def wait_until(pred, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


def poll_readable(sock: socket.socket, timeout: float) -> bool:
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)
