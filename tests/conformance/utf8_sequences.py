"""The UTF-8 test sequences behind Autobahn cases 6.5.x - 6.23.x.

Same order and numbering as Autobahn's createUtf8TestSequences(), which
follows Markus Kuhn's UTF-8 decoder stress test: group i (starting at 6.5)
is one list of (valid, payload bytes), case 6.i.j is its j-th entry.
"""

from __future__ import annotations


def _valid(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def utf8_test_sequences() -> list[tuple[str, list[tuple[bool, bytes]]]]:
    seqs = []
    vss = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"

    seqs.append(("Some valid UTF-8 sequences", [
        (True, b"hello\x24world"),
        (True, b"hello\xc2\xa2world"),
        (True, b"hello\xe2\x82\xacworld"),
        (True, b"hello\xf0\xa4\xad\xa2world"),
        (True, vss),
    ]))
    seqs.append(("All prefixes of a valid UTF-8 string that contains multi-byte code points",
                 [(_valid(vss[:i]), vss[:i]) for i in range(1, len(vss) + 1)]))
    seqs.append(("First possible sequence of a certain length", [
        (True, b"\x00"), (True, b"\xc2\x80"), (True, b"\xe0\xa0\x80"), (True, b"\xf0\x90\x80\x80")]))
    seqs.append(("First possible sequence length 5/6 (invalid codepoints)", [
        (False, b"\xf8\x88\x80\x80\x80"), (False, b"\xfc\x84\x80\x80\x80\x80")]))
    seqs.append(("Last possible sequence of a certain length", [
        (True, b"\x7f"), (True, b"\xdf\xbf"), (True, b"\xef\xbf\xbf"), (True, b"\xf4\x8f\xbf\xbf")]))
    seqs.append(("Last possible sequence length 4/5/6 (invalid codepoints)", [
        (False, b"\xf7\xbf\xbf\xbf"), (False, b"\xfb\xbf\xbf\xbf\xbf"), (False, b"\xfd\xbf\xbf\xbf\xbf\xbf")]))
    seqs.append(("Other boundary conditions", [
        (True, b"\xed\x9f\xbf"), (True, b"\xee\x80\x80"), (True, b"\xef\xbf\xbd"),
        (True, b"\xf4\x8f\xbf\xbf"), (False, b"\xf4\x90\x80\x80")]))
    seqs.append(("Unexpected continuation bytes", [
        (False, b"\x80"), (False, b"\xbf"), (False, b"\x80\xbf"), (False, b"\x80\xbf\x80"),
        (False, b"\x80\xbf\x80\xbf"), (False, b"\x80\xbf\x80\xbf\x80"),
        (False, b"\x80\xbf\x80\xbf\x80\xbf"), (False, bytes(range(0x80, 0xbf)))]))
    lonely = []
    for lo, hi in [(0xc0, 0xdf), (0xe0, 0xef), (0xf0, 0xf7), (0xf8, 0xfb), (0xfc, 0xfd)]:
        lonely.append((False, b"".join(bytes([i, 0x20]) for i in range(lo, hi))))
    seqs.append(("Lonely start characters", lonely))
    k = [b"\xc0", b"\xe0\x80", b"\xf0\x80\x80", b"\xf8\x80\x80\x80", b"\xfc\x80\x80\x80\x80",
         b"\xdf", b"\xef\xbf", b"\xf7\xbf\xbf", b"\xfb\xbf\xbf\xbf", b"\xfd\xbf\xbf\xbf\xbf"]
    seqs.append(("Sequences with last continuation byte missing", [(False, x) for x in k]))
    seqs.append(("Concatenation of incomplete sequences", [(False, b"".join(k))]))
    seqs.append(("Impossible bytes", [(False, b"\xfe"), (False, b"\xff"), (False, b"\xfe\xfe\xff\xff")]))
    seqs.append(("Examples of an overlong ASCII character", [
        (False, b"\xc0\xaf"), (False, b"\xe0\x80\xaf"), (False, b"\xf0\x80\x80\xaf"),
        (False, b"\xf8\x80\x80\x80\xaf"), (False, b"\xfc\x80\x80\x80\x80\xaf")]))
    seqs.append(("Maximum overlong sequences", [
        (False, b"\xc1\xbf"), (False, b"\xe0\x9f\xbf"), (False, b"\xf0\x8f\xbf\xbf"),
        (False, b"\xf8\x87\xbf\xbf\xbf"), (False, b"\xfc\x83\xbf\xbf\xbf\xbf")]))
    seqs.append(("Overlong representation of the NUL character", [
        (False, b"\xc0\x80"), (False, b"\xe0\x80\x80"), (False, b"\xf0\x80\x80\x80"),
        (False, b"\xf8\x80\x80\x80\x80"), (False, b"\xfc\x80\x80\x80\x80\x80")]))
    seqs.append(("Single UTF-16 surrogates", [(False, x) for x in (
        b"\xed\xa0\x80", b"\xed\xad\xbf", b"\xed\xae\x80", b"\xed\xaf\xbf",
        b"\xed\xb0\x80", b"\xed\xbe\x80", b"\xed\xbf\xbf")]))
    seqs.append(("Paired UTF-16 surrogates", [(False, x) for x in (
        b"\xed\xa0\x80\xed\xb0\x80", b"\xed\xa0\x80\xed\xbf\xbf", b"\xed\xad\xbf\xed\xb0\x80",
        b"\xed\xad\xbf\xed\xbf\xbf", b"\xed\xae\x80\xed\xb0\x80", b"\xed\xae\x80\xed\xbf\xbf",
        b"\xed\xaf\xbf\xed\xb0\x80", b"\xed\xaf\xbf\xed\xbf\xbf")]))
    nonchars = [(True, b"\xef\xbf\xbe"), (True, b"\xef\xbf\xbf")]
    for z1 in (0xf0, 0xf1, 0xf2, 0xf3, 0xf4):
        for z2 in (0x8f, 0x9f, 0xaf, 0xbf):
            if z1 == 0xf4 and z2 != 0x8f:
                continue
            for z3 in (0xbe, 0xbf):
                zz = bytes([z1, z2, 0xbf, z3])
                if zz not in (b"\xf0\x8f\xbf\xbe", b"\xf0\x8f\xbf\xbf"):
                    nonchars.append((True, zz))
    seqs.append(("Non-character code points (valid UTF-8)", nonchars))
    seqs.append(("Unicode specials (i.e. replacement char)", [(True, bytes([0xef, 0xbf, b])) for b in
                                                              (0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf)]))
    for _, items in seqs:
        for valid, b in items:
            assert valid == _valid(b), (valid, b)
    return seqs
