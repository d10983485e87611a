"""Autobahn groups 9 (limits / performance) and 10 (auto-fragmentation).

Sizes and counts are Autobahn's own (up to 16 MiB messages, 1000-message
round-trip series); every echo is compared byte for byte (Autobahn only
checks lengths). Each case has a deadline; the whole group takes well
under a minute on 2 cores.
"""

from __future__ import annotations

import time

from wsclient import (
    OP_BINARY, OP_TEXT, Client, T, expect_events_then_close, finish_by_me,
    register,
)

CASES = {}
KiB, MiB = 1024, 1024 * 1024
PAT_TEXT, PAT_BIN = b"BAsd7&jh23", b"\xfe"


def _payload(n, binary):
    pat = PAT_BIN if binary else PAT_TEXT
    return (pat * (n // len(pat) + 1))[:n]


def _receive_one(c: Client, expected: bytes, binary: bool, deadline_s: float):
    ev = c.next_event(T(deadline_s))
    assert ev is not None, f"no echo within {T(deadline_s):.0f}s"
    assert ev[0] == "message", f"got {ev[0]} instead of the echo"
    assert ev[2] == binary, "echo has the wrong opcode"
    assert len(ev[1]) == len(expected), f"echo length {len(ev[1])} != {len(expected)}"
    assert ev[1] == expected, "echo content differs"


def _big(size, binary, frag=None, chop=None, deadline_s=30):
    def case(port):
        c = Client.open(port, timeout=T(30))
        p = _payload(size, binary)
        op = OP_BINARY if binary else OP_TEXT
        if frag:
            c.send_message(p, binary, frag_size=frag)
        else:
            c.send_frame_ab(op, p, chopsize=chop)
        _receive_one(c, p, binary, deadline_s)
        finish_by_me(c)
    kind = "binary" if binary else "text"
    case.__doc__ = (f"{kind} message of {size} octets"
                    + (f" in fragments of {frag}" if frag else "") + (f" sent in chops of {chop}" if chop else ""))
    return case


SIZES_9_1 = [64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB, 8 * MiB, 16 * MiB]
FRAGS_9_3 = [64, 256, 1 * KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB]
CHOPS_9_5 = [64, 128, 256, 512, 1024, 2048]

for i, n in enumerate(SIZES_9_1, start=1):
    CASES[f"9.1.{i}"] = _big(n, False)
for i, n in enumerate(SIZES_9_1, start=1):
    CASES[f"9.2.{i}"] = _big(n, True)
for i, f in enumerate(FRAGS_9_3, start=1):
    CASES[f"9.3.{i}"] = _big(4 * MiB, False, frag=f)
for i, f in enumerate(FRAGS_9_3, start=1):
    CASES[f"9.4.{i}"] = _big(4 * MiB, True, frag=f)
for i, ch in enumerate(CHOPS_9_5, start=1):
    CASES[f"9.5.{i}"] = _big(1 * MiB, False, chop=ch)
for i, ch in enumerate(CHOPS_9_5, start=1):
    CASES[f"9.6.{i}"] = _big(1 * MiB, True, chop=ch)


def _rtt(size, binary, count=1000, deadline_s=60):
    def case(port):
        c = Client.open(port)
        p = _payload(size, binary)
        op = OP_BINARY if binary else OP_TEXT
        end = time.monotonic() + T(deadline_s)
        for k in range(count):
            c.send_frame_ab(op, p)
            ev = c.next_event(max(0.01, end - time.monotonic()))
            assert ev is not None, f"timed out after {k} of {count} round trips"
            assert ev == ("message", p, binary), f"round trip {k}: wrong echo"
        finish_by_me(c)
    case.__doc__ = f"{count} sequential round trips of {size}-octet {'binary' if binary else 'text'} messages"
    return case


for i, n in enumerate([0, 16, 64, 256, 1024, 4096], start=1):
    CASES[f"9.7.{i}"] = _rtt(n, False)
    CASES[f"9.8.{i}"] = _rtt(n, True)


def case_10_1_1(port):
    """65536-octet text auto-fragmented into 1300-octet frames"""
    c = Client.open(port)
    p = b"*" * 65536
    c.send_message(p, False, frag_size=1300)
    assert c.frames_out == {"data": 1, "cont": 65536 // 1300}
    expect_events_then_close(c, [("message", p, False)], wait=10)


CASES["10.1.1"] = case_10_1_1

register(globals(), CASES)
