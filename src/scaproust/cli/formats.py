"""How ``scaproust-cat`` prints a received message, byte for byte as nanocat does.

The facts (docs/CLI.md, "Output formats"): ``raw`` writes the body as is; ``ascii`` writes
every byte from 0x20 to 0x7e as itself and any other as ``.``, then a newline (nngcat
writes none); ``quoted`` writes the body between double quotes with ``\\n``, ``\\r``,
``\\\\`` and ``\\"`` escaped, other printable bytes as themselves and the rest as
``\\xNN`` (nngcat also writes a tab as ``\\t``), then a newline; ``hex`` writes every byte
as ``\\xNN`` between double quotes, then a newline; ``msgpack`` writes a MessagePack
``bin`` header (``c4`` and a one-byte size below 256 bytes, ``c5`` and two bytes below
65,536, ``c6`` and four bytes above) then the body; ``no`` prints nothing.
"""

from __future__ import annotations

from collections.abc import Callable

FORMATS = ("no", "raw", "ascii", "quoted", "msgpack", "hex")

Formatter = Callable[[bytes], bytes]


def _printable(byte: int) -> bool:
    return 0x20 <= byte <= 0x7E


_ASCII = bytes(b if _printable(b) else ord(".") for b in range(256))
_HEX = [b"\\x%02x" % b for b in range(256)]


def _quoted_table(tab_escape: bool) -> list[bytes]:
    table = [bytes([b]) if _printable(b) else b"\\x%02x" % b for b in range(256)]
    table[ord("\n")] = b"\\n"
    table[ord("\r")] = b"\\r"
    table[ord("\\")] = b"\\\\"
    table[ord('"')] = b'\\"'
    if tab_escape:
        table[ord("\t")] = b"\\t"
    return table


_QUOTED = {False: _quoted_table(False), True: _quoted_table(True)}


def _raw(body: bytes) -> bytes:
    return body


def _nothing(body: bytes) -> bytes:
    return b""


def _hex(body: bytes) -> bytes:
    return b'"' + b"".join(map(_HEX.__getitem__, body)) + b'"\n'


def _msgpack(body: bytes) -> bytes:
    size = len(body)
    if size < 0x100:
        head = b"\xc4" + size.to_bytes(1, "big")
    elif size < 0x10000:
        head = b"\xc5" + size.to_bytes(2, "big")
    else:  # nanocat writes the low 32 bits of larger sizes, as here
        head = b"\xc6" + (size & 0xFFFFFFFF).to_bytes(4, "big")
    return head + body


def formatter(name: str, *, nngcat: bool = False) -> Formatter:
    """The function turning a message body into what ``--format name`` prints.

    ``nngcat`` selects nngcat's variants: ``ascii`` without the newline, ``quoted`` with
    ``\\t`` for a tab.
    """
    if name == "ascii":
        newline = b"" if nngcat else b"\n"
        return lambda body: body.translate(_ASCII) + newline
    if name == "quoted":
        table = _QUOTED[nngcat]
        return lambda body: b'"' + b"".join(map(table.__getitem__, body)) + b'"\n'
    simple: dict[str, Formatter] = {"no": _nothing, "raw": _raw, "hex": _hex,
                                    "msgpack": _msgpack}
    if name not in simple:
        raise ValueError(f"unknown format {name!r}: one of {', '.join(FORMATS)}")
    return simple[name]
