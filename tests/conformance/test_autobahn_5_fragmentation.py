"""Autobahn group 5: fragmentation, with control frames interleaved."""

from __future__ import annotations

import time

from wsclient import (
    OP_CONT, OP_PING, OP_PONG, OP_TEXT, PROTOCOL_ERROR, Client,
    expect_events_then_close, expect_failure, fmt_events, register,
)

CASES = {}


def _fragmented_control(opcode):
    def case(port):
        c = Client.open(port)
        c.send_frame_ab(opcode, b"fragment1", fin=False)
        c.send_frame_ab(OP_CONT, b"fragment2", fin=True)
        expect_failure(c, [], (PROTOCOL_ERROR,))
    case.__doc__ = f"{'ping' if opcode == OP_PING else 'pong'} fragmented into 2 frames: 1002"
    return case


CASES["5.1"] = _fragmented_control(OP_PING)
CASES["5.2"] = _fragmented_control(OP_PONG)


def _two_fragments(sync=False, chopsize=None):
    def case(port):
        c = Client.open(port)
        c.send_frame_ab(OP_TEXT, b"fragment1", fin=False, sync=sync, chopsize=chopsize)
        c.send_frame_ab(OP_CONT, b"fragment2", fin=True, sync=sync, chopsize=chopsize)
        expect_events_then_close(c, [("message", b"fragment1fragment2", False)])
    case.__doc__ = "text in 2 fragments" + (", frame-wise sync" if sync else ", 1-octet chops" if chopsize else "")
    return case


CASES["5.3"] = _two_fragments()
CASES["5.4"] = _two_fragments(sync=True)
CASES["5.5"] = _two_fragments(chopsize=1)


def _ping_between(sync=False, chopsize=None):
    def case(port):
        c = Client.open(port)
        c.send_frame_ab(OP_TEXT, b"fragment1", fin=False, sync=sync, chopsize=chopsize)
        c.send_frame_ab(OP_PING, b"ping payload", fin=True, sync=sync, chopsize=chopsize)
        c.send_frame_ab(OP_CONT, b"fragment2", fin=True, sync=sync, chopsize=chopsize)
        expect_events_then_close(c, [("pong", b"ping payload"), ("message", b"fragment1fragment2", False)])
    case.__doc__ = ("text in 2 fragments with a ping between: pong, then the message"
                    + (", frame-wise sync" if sync else ", 1-octet chops" if chopsize else ""))
    return case


CASES["5.6"] = _ping_between()
CASES["5.7"] = _ping_between(sync=True)
CASES["5.8"] = _ping_between(chopsize=1)


def _nothing_to_continue(fin, sync=False, chopsize=None):
    def case(port):
        c = Client.open(port)
        c.send_frame_ab(OP_CONT, b"non-continuation payload", fin=fin, sync=sync, chopsize=chopsize)
        c.send_frame_ab(OP_TEXT, b"Hello, world!", fin=True, sync=sync, chopsize=chopsize)
        expect_failure(c, [], (PROTOCOL_ERROR,))
    case.__doc__ = (f"continuation (FIN={fin}) with nothing to continue, then text: 1002"
                    + (", frame-wise sync" if sync else ", 1-octet chops" if chopsize else ""))
    return case


CASES["5.9"] = _nothing_to_continue(True)
CASES["5.10"] = _nothing_to_continue(True, sync=True)
CASES["5.11"] = _nothing_to_continue(True, chopsize=1)
CASES["5.12"] = _nothing_to_continue(False)
CASES["5.13"] = _nothing_to_continue(False, sync=True)
CASES["5.14"] = _nothing_to_continue(False, chopsize=1)


def case_5_15(port):
    """text in 2 fragments, then continuation FIN=false with nothing to continue, then text: echo, then 1002"""
    c = Client.open(port)
    c.send_frame_ab(OP_TEXT, b"fragment1", fin=False)
    c.send_frame_ab(OP_CONT, b"fragment2", fin=True)
    c.send_frame_ab(OP_CONT, b"fragment3", fin=False)
    c.send_frame_ab(OP_TEXT, b"fragment4", fin=True)
    expect_failure(c, [("message", b"fragment1fragment2", False)], (PROTOCOL_ERROR,))


def _repeated_orphans(first_fin):
    def case(port):
        c = Client.open(port)
        for _ in range(2):
            c.send_frame_ab(OP_CONT, b"fragment1", fin=first_fin)
            c.send_frame_ab(OP_TEXT, b"fragment2", fin=False)
            c.send_frame_ab(OP_CONT, b"fragment3", fin=True)
        expect_failure(c, [], (PROTOCOL_ERROR,))
    case.__doc__ = f"2x: continuation FIN={first_fin} with nothing to continue, then 2-fragment text: 1002"
    return case


def case_5_18(port):
    """text in 2 fragments, both with opcode text: 1002"""
    c = Client.open(port)
    c.send_frame_ab(OP_TEXT, b"fragment1", fin=False)
    c.send_frame_ab(OP_TEXT, b"fragment2", fin=True)
    expect_failure(c, [], (PROTOCOL_ERROR,))


def _five_fragments_two_pings(sync):
    def case(port):
        c = Client.open(port)
        frags = [b"fragment%d" % i for i in range(1, 6)]
        pings = [b"pongme 1!", b"pongme 2!"]
        c.send_frame_ab(OP_TEXT, frags[0], fin=False, sync=sync)
        c.send_frame_ab(OP_CONT, frags[1], fin=False, sync=sync)
        c.send_frame_ab(OP_PING, pings[0], sync=sync)
        # strict: the first pong arrives while the message is still open
        t0 = time.monotonic()
        ev = c.next_event(1.0)
        time.sleep(max(0.0, t0 + 1.0 - time.monotonic()))
        assert ev == ("pong", pings[0]), f"first ping not answered within 1s mid-message: {fmt_events([ev] if ev else [])}"
        c.send_frame_ab(OP_CONT, frags[2], fin=False, sync=sync)
        c.send_frame_ab(OP_CONT, frags[3], fin=False, sync=sync)
        c.send_frame_ab(OP_PING, pings[1], sync=sync)
        c.send_frame_ab(OP_CONT, frags[4], fin=True, sync=sync)
        expect_events_then_close(c, [("pong", pings[0]), ("pong", pings[1]),
                                     ("message", b"".join(frags), False)])
    case.__doc__ = ("text in 5 fragments, a ping after the 2nd (answered at once), 1s pause, "
                    "another ping before the last" + (", frame-wise sync" if sync else ""))
    return case


CASES["5.15"] = case_5_15
CASES["5.16"] = _repeated_orphans(False)
CASES["5.17"] = _repeated_orphans(True)
CASES["5.18"] = case_5_18
CASES["5.19"] = _five_fragments_two_pings(False)
CASES["5.20"] = _five_fragments_two_pings(True)

register(globals(), CASES)
