"""Autobahn group 7: close handling, close frame structure and close codes
(exact codes: the server echoes a valid code, answers 1002 / 1007 for a
broken close frame)."""

from __future__ import annotations

import struct

from wsclient import (
    INVALID_PAYLOAD, NORMAL, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, PROTOCOL_ERROR,
    Client, expect_events_then_close, finish_by_me, register,
)

CASES = {}


def case_7_1_1(port):
    """text message, then (after its echo) a normal close"""
    c = Client.open(port)
    c.send_frame_ab(OP_TEXT, b"Hello World!")
    expect_events_then_close(c, [("message", b"Hello World!", False)])


def case_7_1_2(port):
    """two close frames: clean close 1000, the second ignored"""
    c = Client.open(port)
    c.send_close_ab(NORMAL)
    c.send_frame_ab(OP_CLOSE, b"")
    finish_by_me(c, already_sent=True)


def case_7_1_3(port):
    """ping after close: no pong, clean close 1000"""
    c = Client.open(port)
    c.send_close_ab(NORMAL)
    c.send_frame_ab(OP_PING, b"")
    finish_by_me(c, already_sent=True)


def case_7_1_4(port):
    """text after close: no echo, clean close 1000"""
    c = Client.open(port)
    c.send_close_ab(NORMAL)
    c.send_frame_ab(OP_TEXT, b"Hello World!")
    finish_by_me(c, already_sent=True)


def case_7_1_5(port):
    """fragment 1, close, fragment 2: no message, clean close 1000"""
    c = Client.open(port)
    c.send_frame_ab(OP_TEXT, b"fragment1", fin=False)
    c.send_close_ab(NORMAL)
    c.send_frame_ab(OP_CONT, b"fragment2", fin=True)
    finish_by_me(c, already_sent=True)


def case_7_1_6(port):
    """256 KiB text, small text, close, ping: both echoes (in order), then close 1000, no pong
    (informational in Autobahn; strict here: frames are processed in order)"""
    c = Client.open(port)
    big = (b"BAsd7&jh23" * (256 * 1024 // 10 + 1))[:256 * 1024]
    c.send_frame_ab(OP_TEXT, big)
    c.send_frame_ab(OP_TEXT, b"Hello World!")
    c.send_close_ab(NORMAL)
    c.send_frame_ab(OP_PING, b"")
    got = []
    for _ in range(2):
        ev = c.next_event(5)
        assert ev is not None and ev[0] == "message", f"expected the echoes first, got {ev!r:.200}"
        got.append(ev[1])
    assert got == [big, b"Hello World!"]
    finish_by_me(c, already_sent=True)


def _close_payload(payload: bytes, codes):
    def case(port):
        c = Client.open(port)
        c.send_frame_ab(OP_CLOSE, payload)
        finish_by_me(c, close_codes=codes, already_sent=True)
    return case


CASES["7.1.1"] = case_7_1_1
CASES["7.1.2"] = case_7_1_2
CASES["7.1.3"] = case_7_1_3
CASES["7.1.4"] = case_7_1_4
CASES["7.1.5"] = case_7_1_5
CASES["7.1.6"] = case_7_1_6

CASES["7.3.1"] = _close_payload(b"", (NORMAL,))
CASES["7.3.1"].__doc__ = "close with empty payload: answered with 1000"
CASES["7.3.2"] = _close_payload(b"a", (PROTOCOL_ERROR,))
CASES["7.3.2"].__doc__ = "close with a 1-octet payload: 1002"
CASES["7.3.3"] = _close_payload(struct.pack("!H", NORMAL), (NORMAL,))
CASES["7.3.3"].__doc__ = "close 1000 without reason: 1000"
CASES["7.3.4"] = _close_payload(struct.pack("!H", NORMAL) + b"Hello World!", (NORMAL,))
CASES["7.3.4"].__doc__ = "close 1000 with a reason: 1000"
CASES["7.3.5"] = _close_payload(struct.pack("!H", NORMAL) + b"*" * 123, (NORMAL,))
CASES["7.3.5"].__doc__ = "close 1000 with a 123-octet reason (125 total): 1000"
CASES["7.3.6"] = _close_payload(struct.pack("!H", NORMAL) + b"*" * 124, (PROTOCOL_ERROR,))
CASES["7.3.6"].__doc__ = "close 1000 with a 124-octet reason (126 total): 1002"
CASES["7.5.1"] = _close_payload(struct.pack("!H", NORMAL) + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
                                b"\xed\xa0\x80\x65\x64\x69\x74\x65\x64", (INVALID_PAYLOAD,))
CASES["7.5.1"].__doc__ = "close 1000 with an invalid UTF-8 reason: 1007"

for i, code in enumerate([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999],
                         start=1):
    CASES[f"7.7.{i}"] = _close_payload(struct.pack("!H", code), (code,))
    CASES[f"7.7.{i}"].__doc__ = f"close with valid code {code}: the server echoes {code}"

for i, code in enumerate([0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999], start=1):
    CASES[f"7.9.{i}"] = _close_payload(struct.pack("!H", code), (PROTOCOL_ERROR,))
    CASES[f"7.9.{i}"].__doc__ = f"close with invalid code {code}: 1002"

CASES["7.13.1"] = _close_payload(struct.pack("!H", 5000), (PROTOCOL_ERROR,))
CASES["7.13.1"].__doc__ = "close with code 5000: 1002 (informational in Autobahn)"
CASES["7.13.2"] = _close_payload(struct.pack("!H", 65535), (PROTOCOL_ERROR,))
CASES["7.13.2"].__doc__ = "close with code 65535: 1002 (informational in Autobahn)"

register(globals(), CASES)
