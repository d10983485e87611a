"""Autobahn groups 1 (framing), 2 (pings/pongs), 3 (reserved bits) and
4 (opcodes), reproduced frame for frame. See README.md for the mapping."""

from __future__ import annotations

from wsclient import (
    OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, PROTOCOL_ERROR,
    Client, expect_events_then_close, expect_failure, finish_by_me, register,
)

CASES = {}


# -- 1.1 text / 1.2 binary messages ------------------------------------------

def _msg_case(opcode, size, chopsize=None):
    def case(port):
        c = Client.open(port)
        payload = (b"*" if opcode == OP_TEXT else b"\xfe") * size
        c.send_frame_ab(opcode, payload, chopsize=chopsize)
        expect_events_then_close(c, [("message", payload, opcode == OP_BINARY)], wait=10)
    kind = "text" if opcode == OP_TEXT else "binary"
    case.__doc__ = f"send {kind} message of {size} octets" + (f" in chops of {chopsize}" if chopsize else "")
    return case


for grp, op in (("1.1", OP_TEXT), ("1.2", OP_BINARY)):
    for i, (size, chop) in enumerate([(0, None), (125, None), (126, None), (127, None), (128, None),
                                      (65535, None), (65536, None), (65536, 997)], start=1):
        CASES[f"{grp}.{i}"] = _msg_case(op, size, chop)


# -- 2 pings and pongs ---------------------------------------------------------

def _ping_case(payload, chopsize=None):
    def case(port):
        c = Client.open(port)
        c.send_frame_ab(OP_PING, payload, chopsize=chopsize)
        expect_events_then_close(c, [("pong", payload)])
    return case


CASES["2.1"] = _ping_case(b"")
CASES["2.1"].__doc__ = "ping without payload"
CASES["2.2"] = _ping_case(b"Hello, world!")
CASES["2.2"].__doc__ = "ping with small text payload"
CASES["2.3"] = _ping_case(b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff")
CASES["2.3"].__doc__ = "ping with small binary payload"
CASES["2.4"] = _ping_case(b"\xfe" * 125)
CASES["2.4"].__doc__ = "ping with 125 octets payload"


def case_2_5(port):
    """ping with 126 octets payload: fail 1002"""
    c = Client.open(port)
    c.send_frame_ab(OP_PING, b"\xfe" * 126)
    expect_failure(c, [], (PROTOCOL_ERROR,))


CASES["2.5"] = case_2_5
CASES["2.6"] = _ping_case(b"\xfe" * 125, chopsize=1)
CASES["2.6"].__doc__ = "ping with 125 octets payload sent in 1-octet chops"


def _unsolicited_pong(payload):
    def case(port):
        c = Client.open(port)
        c.send_frame_ab(OP_PONG, payload)
        c.send_close_ab()
        finish_by_me(c, already_sent=True)
    case.__doc__ = f"unsolicited pong ({len(payload)} octets) then close: nothing in reply but the close"
    return case


CASES["2.7"] = _unsolicited_pong(b"")
CASES["2.8"] = _unsolicited_pong(b"unsolicited pong payload")


def case_2_9(port):
    """unsolicited pong, then ping: only the ping's pong comes back"""
    c = Client.open(port)
    c.send_frame_ab(OP_PONG, b"unsolicited pong payload")
    c.send_frame_ab(OP_PING, b"ping payload")
    expect_events_then_close(c, [("pong", b"ping payload")])


def _ten_pings(chopsize):
    def case(port):
        c = Client.open(port)
        expected = []
        for i in range(10):
            p = b"payload-%d" % i
            expected.append(("pong", p))
            c.send_frame_ab(OP_PING, p, chopsize=chopsize)
        expect_events_then_close(c, expected, wait=3)
    case.__doc__ = "10 pings" + (" in 1-octet chops" if chopsize else "") + ": all 10 pongs, in order"
    return case


CASES["2.9"] = case_2_9
CASES["2.10"] = _ten_pings(None)
CASES["2.11"] = _ten_pings(1)


# -- 3 reserved bits --------------------------------------------------------------

def case_3_1(port):
    """text with RSV=1: fail 1002"""
    c = Client.open(port)
    c.send_frame_ab(OP_TEXT, b"Hello, world!", rsv=1)
    expect_failure(c, [], (PROTOCOL_ERROR,))


def _rsv_after_echo(rsv, sync=False, chopsize=None):
    def case(port):
        c = Client.open(port)
        c.send_frame_ab(OP_TEXT, b"Hello, world!", sync=sync, chopsize=chopsize)
        c.send_frame_ab(OP_TEXT, b"Hello, world!", rsv=rsv, sync=sync, chopsize=chopsize)
        c.send_frame_ab(OP_PING, b"", sync=sync, chopsize=chopsize)
        expect_failure(c, [("message", b"Hello, world!", False)], (PROTOCOL_ERROR,))
    how = " (frame-wise sync)" if sync else " (1-octet chops)" if chopsize else ""
    case.__doc__ = f"text, text with RSV={rsv}, ping{how}: echo of the first, then 1002, no pong"
    return case


def case_3_5(port):
    """binary with RSV=5: fail 1002"""
    c = Client.open(port)
    c.send_frame_ab(OP_BINARY, b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff", rsv=5)
    expect_failure(c, [], (PROTOCOL_ERROR,))


def case_3_6(port):
    """ping with RSV=6: fail 1002"""
    c = Client.open(port)
    c.send_frame_ab(OP_PING, b"Hello, world!", rsv=6)
    expect_failure(c, [], (PROTOCOL_ERROR,))


def case_3_7(port):
    """close with RSV=7: fail 1002"""
    c = Client.open(port)
    c.send_frame_ab(OP_CLOSE, b"", rsv=7)
    expect_failure(c, [], (PROTOCOL_ERROR,))


CASES["3.1"] = case_3_1
CASES["3.2"] = _rsv_after_echo(2)
CASES["3.3"] = _rsv_after_echo(3, sync=True)
CASES["3.4"] = _rsv_after_echo(4, chopsize=1)
CASES["3.5"] = case_3_5
CASES["3.6"] = case_3_6
CASES["3.7"] = case_3_7


# -- 4 opcodes ---------------------------------------------------------------------

def _reserved_opcode(opcode, payload=b"", after_text=False):
    def case(port):
        c = Client.open(port)
        if after_text:
            c.send_frame_ab(OP_TEXT, b"Hello, world!")
        c.send_frame_ab(opcode, payload)
        if after_text:
            c.send_frame_ab(OP_PING, b"")
        expect_failure(c, [("message", b"Hello, world!", False)] if after_text else [], (PROTOCOL_ERROR,))
    case.__doc__ = (("text, " if after_text else "") + f"reserved opcode {opcode}"
                    + (" with payload" if payload else "") + (", ping" if after_text else "") + ": 1002")
    return case


RP = b"reserved opcode payload"
CASES["4.1.1"] = _reserved_opcode(3)
CASES["4.1.2"] = _reserved_opcode(4, RP)
CASES["4.1.3"] = _reserved_opcode(5, b"", after_text=True)
CASES["4.1.4"] = _reserved_opcode(6, RP, after_text=True)
CASES["4.1.5"] = _reserved_opcode(7, RP, after_text=True)
CASES["4.2.1"] = _reserved_opcode(11)
CASES["4.2.2"] = _reserved_opcode(12, RP)
CASES["4.2.3"] = _reserved_opcode(13, b"", after_text=True)
CASES["4.2.4"] = _reserved_opcode(14, RP, after_text=True)
CASES["4.2.5"] = _reserved_opcode(15, RP, after_text=True)

register(globals(), CASES)
