"""The output formats, byte for byte as nanocat's (and nngcat's) source writes them; the
interop tests (tests/interop/test_cat.py) compare them with the real tools' output."""

from __future__ import annotations

import pytest

from scaproust.cli.formats import FORMATS, formatter

BODY = b'a"\\\n\r\t\x00\x7f\xff ~'


def test_ascii_replaces_every_unprintable_byte_with_a_dot():
    assert formatter("ascii")(BODY) == b'a"\\...... ~\n'
    assert formatter("ascii", nngcat=True)(BODY) == b'a"\\...... ~'  # nngcat: no newline
    assert formatter("ascii")(bytes(range(256))) == (
        b"." * 32 + bytes(range(32, 127)) + b"." * 129 + b"\n")


def test_quoted_escapes_as_c_does():
    assert formatter("quoted")(BODY) == b'"a\\"\\\\\\n\\r\\x09\\x00\\x7f\\xff ~"\n'
    assert formatter("quoted", nngcat=True)(BODY) == b'"a\\"\\\\\\n\\r\\t\\x00\\x7f\\xff ~"\n'
    assert formatter("quoted")(b"") == b'""\n'


def test_hex_writes_every_byte_as_an_escape():
    assert formatter("hex")(b"\x00a\xff") == b'"\\x00\\x61\\xff"\n'
    assert formatter("hex")(b"") == b'""\n'


@pytest.mark.parametrize("size, head", [
    (0, b"\xc4\x00"), (255, b"\xc4\xff"), (256, b"\xc5\x01\x00"), (65535, b"\xc5\xff\xff"),
    (65536, b"\xc6\x00\x01\x00\x00"), (4 << 20, b"\xc6\x00\x40\x00\x00"),
])
def test_msgpack_writes_a_bin_header_of_the_smallest_width(size, head):
    body = bytes(size)
    assert formatter("msgpack")(body) == head + body


def test_raw_and_no():
    assert formatter("raw")(BODY) is BODY
    assert formatter("no")(BODY) == b""
    assert set(FORMATS) == {"no", "raw", "ascii", "quoted", "msgpack", "hex"}
    with pytest.raises(ValueError, match="unknown format 'yaml'"):
        formatter("yaml")
