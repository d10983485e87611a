"""Autobahn group 6: UTF-8 handling, including fail-fast (6.4.x) and the
generated decoder stress cases 6.5.x - 6.23.x."""

from __future__ import annotations

from wsclient import (
    INVALID_PAYLOAD, OP_CONT, OP_TEXT, Client, T, expect_events_then_close,
    expect_failure, fmt_events, register,
)
from utf8_sequences import utf8_test_sequences

CASES = {}


def case_6_1_1(port):
    """text message of length 0"""
    c = Client.open(port)
    c.send_frame_ab(OP_TEXT, b"")
    expect_events_then_close(c, [("message", b"", False)])


def case_6_1_2(port):
    """text message in 3 empty fragments"""
    c = Client.open(port)
    c.send_frame_ab(OP_TEXT, b"", fin=False)
    c.send_frame_ab(OP_CONT, b"", fin=False)
    c.send_frame_ab(OP_CONT, b"", fin=True)
    expect_events_then_close(c, [("message", b"", False)])


def case_6_1_3(port):
    """text in 3 fragments, first and last empty"""
    c = Client.open(port)
    c.send_frame_ab(OP_TEXT, b"", fin=False)
    c.send_frame_ab(OP_CONT, b"middle frame payload", fin=False)
    c.send_frame_ab(OP_CONT, b"", fin=True)
    expect_events_then_close(c, [("message", b"middle frame payload", False)])


HELLO1 = "Hello-µ@ßöä".encode()
HELLO2 = "üàá-UTF-8!!".encode()
KOSME = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"


def case_6_2_1(port):
    """valid UTF-8 text in one fragment"""
    c = Client.open(port)
    c.send_message(HELLO1 + HELLO2)
    expect_events_then_close(c, [("message", HELLO1 + HELLO2, False)])


def case_6_2_2(port):
    """valid UTF-8 text in two fragments split on a code point boundary"""
    c = Client.open(port)
    c.send_frame_ab(OP_TEXT, HELLO1, fin=False)
    c.send_frame_ab(OP_CONT, HELLO2, fin=True)
    expect_events_then_close(c, [("message", HELLO1 + HELLO2, False)])


def case_6_2_3(port):
    """valid UTF-8 text in 1-octet fragments (frames end inside code points)"""
    c = Client.open(port)
    c.send_message(HELLO1 + HELLO2, frag_size=1)
    expect_events_then_close(c, [("message", HELLO1 + HELLO2, False)])


def case_6_2_4(port):
    """valid UTF-8 text (kosme) in 1-octet fragments"""
    c = Client.open(port)
    c.send_message(KOSME, frag_size=1)
    expect_events_then_close(c, [("message", KOSME, False)])


BAD = KOSME + b"\xed\xa0\x80" + b"\x65\x64\x69\x74\x65\x64"


def case_6_3_1(port):
    """invalid UTF-8 text in one frame: 1007"""
    c = Client.open(port)
    c.send_message(BAD)
    expect_failure(c, [], (INVALID_PAYLOAD,))


def case_6_3_2(port):
    """invalid UTF-8 text in 1-octet fragments: 1007"""
    c = Client.open(port)
    c.send_message(BAD, frag_size=1)
    expect_failure(c, [], (INVALID_PAYLOAD,))


# 6.4.x: fail fast. PART1 valid; PART2 makes it invalid; PART3 the rest.
P1 = KOSME
P2 = b"\xf4\x90\x80\x80"          # 0x110000: invalid on its 2nd octet (\x90)
P3 = b"\x65\x64\x69\x74\x65\x64"
PAYLOAD = P1 + P2 + P3


def _fail_fast(parts, one_frame: bool):
    def case(port):
        c = Client.open(port)
        writer = None
        if one_frame:
            writer = c.begin_frame(OP_TEXT, len(PAYLOAD))
            writer.send(parts[0])
        else:
            c.send_frame_ab(OP_TEXT, parts[0], fin=False)
        # wait A: the valid prefix must not be rejected
        ev = c.next_event(1.0)
        assert ev is None, f"connection failed on a valid prefix: {fmt_events([ev])}"
        if one_frame:
            writer.send(parts[1])
        else:
            c.send_frame_ab(OP_CONT, parts[1], fin=False)
        # strict: the close must arrive before we send PART3 (Autobahn's
        # "timeout B" is only NON-STRICT)
        expect_failure(c, [], (INVALID_PAYLOAD,), timeout=T(1))
    return case


CASES["6.1.1"] = case_6_1_1
CASES["6.1.2"] = case_6_1_2
CASES["6.1.3"] = case_6_1_3
CASES["6.2.1"] = case_6_2_1
CASES["6.2.2"] = case_6_2_2
CASES["6.2.3"] = case_6_2_3
CASES["6.2.4"] = case_6_2_4
CASES["6.3.1"] = case_6_3_1
CASES["6.3.2"] = case_6_3_2
CASES["6.4.1"] = _fail_fast([P1, P2, P3], one_frame=False)
CASES["6.4.1"].__doc__ = "invalid text in 3 frames; the 2nd frame makes it invalid: 1007 before the 3rd is sent"
CASES["6.4.2"] = _fail_fast([PAYLOAD[:12], PAYLOAD[12:13], PAYLOAD[13:]], one_frame=False)
CASES["6.4.2"].__doc__ = "as 6.4.1, the 2nd frame is only the octet that makes it invalid"
CASES["6.4.3"] = _fail_fast([P1, P2, P3], one_frame=True)
CASES["6.4.3"].__doc__ = "as 6.4.1, but 3 chops of one frame: 1007 before the frame is complete"
CASES["6.4.4"] = _fail_fast([PAYLOAD[:12], PAYLOAD[12:13], PAYLOAD[13:]], one_frame=True)
CASES["6.4.4"].__doc__ = "as 6.4.2, in 3 chops of one frame"


def _utf8_case(valid: bool, payload: bytes):
    def case(port):
        c = Client.open(port)
        c.send_message(payload)
        if valid:
            expect_events_then_close(c, [("message", payload, False)], wait=0.5)
        else:
            expect_failure(c, [], (INVALID_PAYLOAD,))
    case.__doc__ = f"{'valid' if valid else 'invalid'} UTF-8 text 0x{payload.hex()}"
    return case


for gi, (title, items) in enumerate(utf8_test_sequences(), start=5):
    for ji, (valid, payload) in enumerate(items, start=1):
        CASES[f"6.{gi}.{ji}"] = _utf8_case(valid, payload)

register(globals(), CASES)
