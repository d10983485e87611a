"""Synthetic stand-ins for Autobahn's compression test files (12.x, 13.x).

Autobahn ships five files (a JSON document, a 512x512 bitmap, Goethe's
Faust as text, an HTML page and a PDF). They are not available here, so
each is replaced by deterministic generated data of the same size and of a
similar kind (similar compressibility). Text data sets are pure ASCII, so
any slice of them is valid UTF-8, as Autobahn's slices of its ASCII files
are.
"""

from __future__ import annotations

import functools
import json
import random
import struct

WORDS_DE = ("der die das und ist nicht ein eine ich du er sie es wir ihr mit auf fuer "
            "Faust Mephistopheles Gretchen Wagner Geist Teufel Himmel Erde Welt Herz Seele "
            "Nacht Tag Liebe Wissen Gott Mensch schoen ueber Zeit Augenblick verweile doch "
            "du bist so habe nun ach Philosophie Juristerei Medizin leider auch Theologie "
            "durchaus studiert mit heissem Bemuehn da steh ich nun armer Tor und bin so klug "
            "als wie zuvor").split()
WORDS_EN = ("the of and to in is it for on with as was at by an be this that from which "
            "server client message channel websocket frame payload compression window "
            "context takeover deflate inflate stream buffer socket latency throughput").split()


def _json_data(size: int, rng: random.Random) -> bytes:
    out = bytearray(b"[")
    i = 0
    while len(out) < size:
        rec = {"id": i, "name": " ".join(rng.choice(WORDS_EN) for _ in range(3)),
               "active": rng.random() < 0.5, "score": round(rng.uniform(0, 1000), 3),
               "tags": [rng.choice(WORDS_EN) for _ in range(rng.randint(0, 4))],
               "geo": {"lat": round(rng.uniform(-90, 90), 5), "lon": round(rng.uniform(-180, 180), 5)}}
        out += json.dumps(rec).encode() + b",\n"
        i += 1
    return bytes(out[:size])


def _bitmap(size: int, rng: random.Random) -> bytes:
    w = h = 512
    header = b"BM" + struct.pack("<IHHI", size, 0, 0, 1078) + struct.pack(
        "<IiiHHIIiiII", 40, w, h, 1, 8, 0, w * h, 2835, 2835, 256, 0)
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    px = bytearray(w * h)
    for y in range(h):
        for x in range(w):
            v = (x * 3 + y * 2 + ((x * y) >> 7)) & 0xFF
            px[y * w + x] = (v + rng.randint(-3, 3)) & 0xFF
    data = header + palette + bytes(px)
    return (data + bytes(size))[:size]


def _text_de(size: int, rng: random.Random) -> bytes:
    out = bytearray()
    line = 0
    while len(out) < size:
        words = [rng.choice(WORDS_DE) for _ in range(rng.randint(4, 11))]
        who = rng.choice(["FAUST.", "MEPHISTOPHELES.", "WAGNER.", "GRETCHEN.", ""])
        if line % 7 == 0 and who:
            out += b"\r\n" + who.encode() + b"\r\n"
        out += (" ".join(words).capitalize() + rng.choice([",", ".", "!", "?", ";"]) + "\r\n").encode()
        line += 1
    return bytes(out[:size])


def _html(size: int, rng: random.Random) -> bytes:
    out = bytearray(b"<!DOCTYPE html>\n<html><head><title>data1</title></head><body>\n")
    while len(out) < size:
        tag = rng.choice(["p", "div", "li", "span", "td"])
        cls = rng.choice(["row", "cell", "item", "note", "x"])
        text = " ".join(rng.choice(WORDS_EN) for _ in range(rng.randint(3, 15)))
        out += f'<{tag} class="{cls}" id="e{rng.randint(0, 99999)}">{text}</{tag}>\n'.encode()
    return bytes(out[:size])


def _pdf(size: int, rng: random.Random) -> bytes:
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    obj = 1
    while len(out) < size:
        out += f"{obj} 0 obj\n<< /Type /Page /Length {rng.randint(100, 9999)} >>\nstream\n".encode()
        if rng.random() < 0.5:
            out += rng.randbytes(rng.randint(2000, 12000))          # compressed streams
        else:
            out += " ".join(rng.choice(WORDS_EN) for _ in range(rng.randint(200, 1500))).encode()
        out += b"\nendstream\nendobj\n"
        obj += 1
    return bytes(out[:size])


# (key, description, binary, size, generator) in Autobahn's 12.x order
DATASETS = [
    ("json_data1", "Large JSON data file", False, 194237, _json_data),
    ("lena512", "Lena Picture, Bitmap 512x512 bw", True, 263222, _bitmap),
    ("gutenberg_faust", "Human readable text, Goethe's Faust I (German)", True, 222218, _text_de),
    ("html_data1", "Large HTML file", False, 83711, _html),
    ("ooms", "A larger PDF", True, 1042328, _pdf),
]


@functools.lru_cache(maxsize=None)
def dataset(key: str) -> bytes:
    for k, _, _, size, gen in DATASETS:
        if k == key:
            data = gen(size, random.Random(k))
            assert len(data) == size
            return data
    raise KeyError(key)


def is_binary(key: str) -> bool:
    return next(d[2] for d in DATASETS if d[0] == key)
